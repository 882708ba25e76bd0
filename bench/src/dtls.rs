//! str0m's crypto with one DTLS configuration shared by every peer.
//!
//! str0m's aws-lc-rs provider builds a fresh `dimpl::Config` for each peer,
//! and building one validates the crypto provider by running two key
//! exchanges on each of X25519, P-256 and P-384. That is most of this
//! tool's CPU per viewer while 200 viewers join at once (measured with
//! `perf`: the P-384 and P-256 ladders and X25519 ahead of everything
//! else), so the tool, not the server, set the pace of the join. Here the
//! configuration is built once per MTU and shared; each peer still gets a
//! DTLS instance, keys and handshake of its own.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use str0m::config::{CryptoProvider, DtlsCert, DtlsVersion};
use str0m::crypto::CryptoError;
use str0m::crypto::dtls::{DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, ProtocolVersion};

/// The crypto every peer of this tool uses: str0m's default (aws-lc-rs)
/// with [`SharedConfigDtls`] in place of its DTLS provider.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            let default = str0m::crypto::from_feature_flags();
            static DTLS: SharedConfigDtls = SharedConfigDtls {
                configs: Mutex::new(Vec::new()),
            };
            Arc::new(CryptoProvider {
                dtls_provider: &DTLS,
                ..default
            })
        })
        .clone()
}

/// A DTLS provider that builds each distinct configuration once.
#[derive(Debug)]
pub struct SharedConfigDtls {
    /// By MTU (`None`: dimpl's default); a run sees one or two.
    configs: Mutex<Vec<(Option<usize>, Arc<dimpl::Config>)>>,
}

impl SharedConfigDtls {
    fn config(&self, mtu: Option<usize>) -> Result<Arc<dimpl::Config>, CryptoError> {
        let mut configs = self.configs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, config)) = configs.iter().find(|(m, _)| *m == mtu) {
            return Ok(config.clone());
        }
        // As str0m's own provider configures it: ICE has already checked
        // the peer's address, so no server cookie.
        let mut builder = dimpl::Config::builder().use_server_cookie(false);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        let config = Arc::new(
            builder
                .build()
                .map_err(|e| CryptoError::Other(format!("DTLS configuration: {e}")))?,
        );
        configs.push((mtu, config.clone()));
        Ok(config)
    }
}

impl DtlsProvider for SharedConfigDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        dimpl::certificate::generate_self_signed_certificate().ok()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        now: Instant,
        dtls_version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        let config = self.config(mtu)?;
        let dtls = match dtls_version {
            DtlsVersion::Dtls12 => dimpl::Dtls::new_12(config, cert.clone(), now),
            DtlsVersion::Dtls13 => dimpl::Dtls::new_13(config, cert.clone(), now),
            DtlsVersion::Auto => dimpl::Dtls::new_auto(config, cert.clone(), now),
            other => {
                return Err(CryptoError::Other(format!(
                    "unsupported DTLS version {other}"
                )));
            }
        };
        Ok(Box::new(Instance(dtls)))
    }
}

/// One peer's DTLS, passed straight through to dimpl.
struct Instance(dimpl::Dtls);

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Instance")
    }
}

impl DtlsInstance for Instance {
    fn set_active(&mut self, active: bool) {
        self.0.set_active(active);
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        self.0.handle_packet(packet)
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        self.0.poll_output(buf)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        self.0.handle_timeout(now)
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        self.0.send_application_data(data)
    }

    fn is_active(&self) -> bool {
        self.0.is_active()
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.0.protocol_version()
    }

    fn is_closing(&self) -> bool {
        self.0.is_closing()
    }

    fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        self.0.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_share_one_configuration_per_mtu() {
        let dtls = SharedConfigDtls {
            configs: Mutex::new(Vec::new()),
        };
        let cert = dtls.generate_certificate().expect("a certificate");
        let now = Instant::now();
        for _ in 0..3 {
            dtls.new_dtls(&cert, now, DtlsVersion::Auto, None).unwrap();
        }
        dtls.new_dtls(&cert, now, DtlsVersion::Dtls12, Some(1200))
            .unwrap();
        assert_eq!(dtls.configs.lock().unwrap().len(), 2);
    }
}
