//! TLS on the HTTP port (WHIP/WHEP, console, gRPC-web) and the gRPC port,
//! with rustls on ring (the crypto webrtc-rs's DTLS already builds).
//!
//! Both ports share one [`Certificates`]: the certificate chain and key
//! read from PEM files, swapped in place by [`Certificates::reload`]
//! (SIGHUP, or the files' modification time changing, see
//! [`watch_files`]). Handshakes in progress keep the old one; the next
//! handshake gets the new one. A reload that fails (a half-written file,
//! a key that does not match) keeps serving the old certificate and says
//! why.
//!
//! ALPN: the HTTP port speaks HTTP/1.1 only (hyper's http1 server); the
//! gRPC port offers `h2` first (gRPC clients such as grpc-go refuse a
//! server that does not negotiate it) and `http/1.1` for gRPC-web.
//!
//! `--tls-self-signed` makes the files itself: [`self_signed`].

pub mod self_signed;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::CryptoProvider;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

/// Where the certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// `--tls-cert` and `--tls-key`: PEM files the operator provides (a
    /// chain, leaf first; a PKCS#8, PKCS#1 or SEC1 key).
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// `--tls-self-signed`: a local CA and a certificate it signs for
    /// these names (and the machine's own; see [`self_signed::names`]),
    /// kept in the data directory.
    SelfSigned {
        /// Extra host names and IP addresses (`--tls-name`).
        names: Vec<String>,
    },
}

/// TLS could not be set up, or a reload failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds nothing usable.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key does not fit the certificate, or rustls refused them.
    #[error("{cert} and {key}: {reason}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why.
        reason: String,
    },
    /// Making the self-signed certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The crypto every TLS port uses: ring's, safe defaults (TLS 1.2 and 1.3).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate both ports present, replaceable while they serve.
pub struct Certificates {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times when last loaded, for [`watch_files`].
    loaded: Mutex<(Option<SystemTime>, Option<SystemTime>)>,
}

impl fmt::Debug for Certificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certificates")
            .field("cert", &self.cert_path)
            .field("key", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Reads and checks the chain and key.
    pub fn load(cert: &Path, key: &Path) -> Result<Certificates, TlsError> {
        let (certified, mtimes) = read_pair(cert, key)?;
        Ok(Certificates {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            current: RwLock::new(Arc::new(certified)),
            loaded: Mutex::new(mtimes),
        })
    }

    /// Reads the files again and serves what they hold from the next
    /// handshake on; on error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let (certified, mtimes) = read_pair(&self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(certified);
        *self.loaded.lock().unwrap_or_else(|e| e.into_inner()) = mtimes;
        Ok(())
    }

    /// Reloads when either file's modification time differs from the
    /// last load's: `None` when neither changed.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = (mtime(&self.cert_path), mtime(&self.key_path));
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if *loaded == now {
            return None;
        }
        // Remember this state even if it fails to load, so a broken file
        // is reported once, not at every poll; the next write retries.
        *loaded = now;
        drop(loaded);
        Some(self.reload())
    }

    /// SHA-256 of the certificate now served (the leaf), as browsers and
    /// `openssl x509 -fingerprint -sha256` show it.
    pub fn fingerprint(&self) -> String {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        current
            .cert
            .first()
            .map(|leaf| fingerprint(leaf))
            .unwrap_or_default()
    }

    /// The certificate file.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

type Mtimes = (Option<SystemTime>, Option<SystemTime>);

/// Reads a PEM chain and key and checks that they belong together.
fn read_pair(cert: &Path, key: &Path) -> Result<(CertifiedKey, Mtimes), TlsError> {
    // Times first: a write that lands after the read is noticed next poll.
    let mtimes = (mtime(cert), mtime(key));
    let cert_pem = std::fs::read(cert).map_err(io_error(cert))?;
    let key_pem = std::fs::read(key).map_err(io_error(key))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_owned(),
            reason: format!("not a PEM certificate chain ({e})"),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key.to_owned(),
        reason: format!("no private key (PKCS#8, PKCS#1 or SEC1 PEM) ({e})"),
    })?;
    let certified =
        CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    Ok((certified, mtimes))
}

/// `AB:CD:...`: SHA-256 of a certificate's DER.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The acceptors of both ports, over one [`Certificates`].
#[derive(Clone)]
pub struct Tls {
    /// The certificate both present.
    pub certificates: Arc<Certificates>,
    /// HTTP/1.1 (WHIP/WHEP, console, gRPC-web).
    pub http: TlsAcceptor,
    /// gRPC: `h2`, and `http/1.1` for gRPC-web.
    pub grpc: TlsAcceptor,
}

impl Tls {
    /// Acceptors presenting `certificates`.
    pub fn new(certificates: Arc<Certificates>) -> Tls {
        let acceptor = |alpn: &[&[u8]]| {
            let mut config = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
                .with_no_client_auth()
                .with_cert_resolver(certificates.clone());
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        };
        Tls {
            http: acceptor(&[b"http/1.1"]),
            grpc: acceptor(&[b"h2", b"http/1.1"]),
            certificates,
        }
    }
}

/// How often [`watch_files`] looks at the files' modification times.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// Reloads `certificates` whenever its files change (certbot, cert-manager
/// and the like replace them in place), until `stop` turns true.
pub fn watch_files(certificates: Arc<Certificates>, mut stop: tokio::sync::watch::Receiver<bool>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            match certificates.reload_if_changed() {
                None => {}
                Some(Ok(())) => tracing::info!(
                    fingerprint = %certificates.fingerprint(),
                    "TLS certificate {} changed: reloaded",
                    certificates.cert_path().display()
                ),
                Some(Err(e)) => {
                    tracing::error!(
                        "TLS certificate changed but cannot be loaded, keeping the old one: {e}"
                    )
                }
            }
        }
    });
}

/// The TLS connections of `listener`, each handed on once its handshake
/// is done (within `handshake_timeout`; a client that stalls is dropped
/// without holding up the others). The accepting stops when the stream is
/// dropped.
pub fn incoming(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<tokio::net::TcpStream>>> {
    let (ready, stream) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = ready.closed() => return,
            };
            let (tcp, peer) = match accepted {
                Ok(ok) => ok,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = acceptor.clone();
            let ready = ready.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = ready.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vigil-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, signing_key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn reload_swaps_and_a_bad_file_keeps_the_old() {
        let dir = temp_dir("reload");
        let (cert, key) = write_pair(&dir, "one.example");
        let certificates = Certificates::load(&cert, &key).unwrap();
        let first = certificates.fingerprint();
        assert_eq!(first.len(), 32 * 3 - 1, "{first}");
        assert!(
            certificates.reload_if_changed().is_none(),
            "nothing changed"
        );

        write_pair(&dir, "two.example");
        certificates.reload().unwrap();
        let second = certificates.fingerprint();
        assert_ne!(first, second);

        // A key of another certificate: refused, the served one stays.
        let other = temp_dir("reload-other");
        let (_, other_key) = write_pair(&other, "three.example");
        std::fs::copy(&other_key, &key).unwrap();
        let e = certificates.reload().unwrap_err();
        assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
        assert_eq!(certificates.fingerprint(), second);

        std::fs::write(&cert, "not pem").unwrap();
        let e = certificates.reload().unwrap_err();
        assert!(e.to_string().contains("no CERTIFICATE"), "{e}");
        assert_eq!(certificates.fingerprint(), second);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&other);
    }

    #[test]
    fn load_says_which_file_is_wrong() {
        let dir = temp_dir("load");
        let (cert, key) = write_pair(&dir, "one.example");
        std::fs::write(&key, "-----BEGIN NOTHING-----\n-----END NOTHING-----\n").unwrap();
        let e = Certificates::load(&cert, &key).unwrap_err();
        assert!(e.to_string().starts_with(&key.display().to_string()), "{e}");
        let e = Certificates::load(&dir.join("missing.pem"), &key).unwrap_err();
        assert!(matches!(e, TlsError::Io { .. }), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
