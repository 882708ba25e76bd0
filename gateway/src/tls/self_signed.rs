//! `--tls-self-signed`: a certificate for a LAN, where phones must reach
//! the join page over `https://` (browsers give the camera to secure
//! contexts only) and no public CA will sign for `10.0.0.5`.
//!
//! It is made the way mkcert makes one: a local CA, kept, and a server
//! certificate it signs for every name and address this machine answers
//! to. A device that trusts the CA once (installs `ca.crt`, or accepts
//! the browser's warning) keeps trusting Vigil when the server
//! certificate is reissued (new addresses, near expiry): only the CA's
//! fingerprint matters, and it stays.
//!
//! Files, in `DATA_DIR/tls/` (keys 0600):
//!
//! | file | what |
//! |---|---|
//! | `ca.pem`, `ca.key` | the CA (10 years; `CN=Vigil local CA`) |
//! | `cert.pem`, `key.pem` | the server certificate (1 year) and the CA, and its key |
//! | `names` | the names the server certificate covers, and when it expires |
//!
//! The server certificate is reissued at start when the names differ or
//! fewer than 30 days are left. Removing the directory starts over with a
//! new CA.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};

use super::{TlsError, fingerprint, io_error};

/// How long the CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long a server certificate is valid (Apple devices refuse more than
/// 825 days even from a CA the user installed).
const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 86_400);
/// A server certificate with less left is reissued at start.
const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);
/// Clocks of phones run a little behind.
const BACKDATE: Duration = Duration::from_secs(86_400);

/// What [`ensure`] found or made.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// The server certificate, then the CA (`--tls-cert`).
    pub cert: PathBuf,
    /// Its key (`--tls-key`).
    pub key: PathBuf,
    /// The CA certificate devices trust (PEM).
    pub ca: PathBuf,
    /// The CA certificate (DER), served at `/ca.crt` for devices to install.
    pub ca_der: Vec<u8>,
    /// SHA-256 of the CA certificate, `AB:CD:...`.
    pub ca_fingerprint: String,
    /// Base64 of the SHA-256 of the CA's public key (SubjectPublicKeyInfo),
    /// the form of Chromium's `--ignore-certificate-errors-spki-list`.
    pub ca_spki_sha256: String,
    /// The names the server certificate covers.
    pub names: Vec<String>,
    /// What this start created.
    pub made: Made,
}

/// What [`ensure`] had to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Made {
    /// Both were there and fit.
    Nothing,
    /// A new server certificate (new names, or close to expiry).
    Certificate,
    /// A new CA (first start) and its server certificate.
    CaAndCertificate,
}

/// The CA's fixed identity: a reissued server certificate names the CA
/// by this and by its key, so rebuilding it from code finds the same CA.
fn ca_params(now: SystemTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Vigil local CA");
    dn.push(DnType::OrganizationName, "Vigil");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = at(now - BACKDATE);
    params.not_after = at(now + CA_VALIDITY);
    params
}

fn at(time: SystemTime) -> time::OffsetDateTime {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// The CA and server certificate in `data_dir/tls`, made or reissued as
/// needed for `names`.
pub fn ensure(data_dir: &Path, names: &[String]) -> Result<SelfSigned, TlsError> {
    ensure_at(data_dir, names, SystemTime::now())
}

fn ensure_at(data_dir: &Path, names: &[String], now: SystemTime) -> Result<SelfSigned, TlsError> {
    let dir = data_dir.join("tls");
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&dir)
        .map_err(io_error(&dir))?;
    let paths = Paths::in_dir(&dir);
    let names: Vec<String> = names
        .iter()
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if names.is_empty() {
        return Err(TlsError::Generate("no names to issue for".into()));
    }

    let mut made = Made::Nothing;
    let ca_key = match (paths.ca.exists(), read_key(&paths.ca_key)) {
        (true, Ok(Some(key))) => key,
        _ => {
            let key = KeyPair::generate().map_err(generate)?;
            let ca = ca_params(now).self_signed(&key).map_err(generate)?;
            write_private(&paths.ca_key, &key.serialize_pem())?;
            write_public(&paths.ca, &ca.pem())?;
            // Whatever the old CA signed is worthless now.
            let _ = std::fs::remove_file(&paths.names);
            made = Made::CaAndCertificate;
            key
        }
    };
    let ca_pem = std::fs::read_to_string(&paths.ca).map_err(io_error(&paths.ca))?;
    let ca_der = pem_der(&ca_pem).ok_or_else(|| TlsError::Pem {
        path: paths.ca.clone(),
        reason: "no CERTIFICATE block".into(),
    })?;

    let fresh = std::fs::read_to_string(&paths.names)
        .ok()
        .and_then(|text| Issued::parse(&text))
        .is_some_and(|issued| {
            issued.names == names
                && issued.not_after > now + RENEW_BEFORE
                && paths.cert.exists()
                && paths.key.exists()
        });
    if !fresh {
        let key = KeyPair::generate().map_err(generate)?;
        let mut params = CertificateParams::new(names.clone()).map_err(generate)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, names[0].clone());
        dn.push(DnType::OrganizationName, "Vigil");
        params.distinguished_name = dn;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = at(now - BACKDATE);
        let not_after = now + LEAF_VALIDITY;
        params.not_after = at(not_after);
        let issuer = Issuer::new(ca_params(now), &ca_key);
        let leaf = params.signed_by(&key, &issuer).map_err(generate)?;
        write_private(&paths.key, &key.serialize_pem())?;
        write_public(&paths.cert, &format!("{}{}", leaf.pem(), ca_pem))?;
        write_public(
            &paths.names,
            &Issued {
                names: names.clone(),
                not_after,
            }
            .render(),
        )?;
        if made == Made::Nothing {
            made = Made::Certificate;
        }
    }

    let spki = ring::digest::digest(&ring::digest::SHA256, &ca_key.subject_public_key_info());
    Ok(SelfSigned {
        cert: paths.cert,
        key: paths.key,
        ca: paths.ca,
        ca_fingerprint: fingerprint(&ca_der),
        ca_der,
        ca_spki_sha256: base64::engine::general_purpose::STANDARD.encode(spki.as_ref()),
        names,
        made,
    })
}

fn generate(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

struct Paths {
    ca: PathBuf,
    ca_key: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    names: PathBuf,
}

impl Paths {
    fn in_dir(dir: &Path) -> Paths {
        Paths {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            names: dir.join("names"),
        }
    }
}

/// `Ok(None)`: no file (or one that holds no key), so make a new one.
fn read_key(path: &Path) -> Result<Option<KeyPair>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(pem) => Ok(KeyPair::from_pem(&pem).ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|der| der.to_vec())
}

/// Written whole or not at all: a temporary file renamed over the old one.
fn write_with_mode(path: &Path, text: &str, mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&temp)
        .map_err(io_error(&temp))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temp))?;
    std::fs::rename(&temp, path).map_err(io_error(path))
}

fn write_private(path: &Path, text: &str) -> Result<(), TlsError> {
    write_with_mode(path, text, 0o600)
}

fn write_public(path: &Path, text: &str) -> Result<(), TlsError> {
    write_with_mode(path, text, 0o644)
}

/// The `names` file: what the server certificate was issued for.
struct Issued {
    names: Vec<String>,
    not_after: SystemTime,
}

impl Issued {
    fn render(&self) -> String {
        let secs = self
            .not_after
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let mut text = format!("not_after {secs}\n");
        for name in &self.names {
            text.push_str(&format!("name {name}\n"));
        }
        text
    }

    fn parse(text: &str) -> Option<Issued> {
        let mut names = Vec::new();
        let mut not_after = None;
        for line in text.lines() {
            match line.split_once(' ')? {
                ("not_after", secs) => {
                    not_after = Some(UNIX_EPOCH + Duration::from_secs(secs.parse().ok()?));
                }
                ("name", name) => names.push(name.to_owned()),
                _ => return None,
            }
        }
        Some(Issued {
            names,
            not_after: not_after?,
        })
    }
}

/// The names a self-signed certificate covers: `localhost` and loopback,
/// the machine's name, `listen` when it is a specific address or every
/// address of the machine's interfaces when it is unspecified (so
/// `https://10.0.0.5:8443` works from a phone on the LAN), the public
/// URL's host, the advertised ICE addresses, and `extra` (`--tls-name`).
pub fn names(
    listen: IpAddr,
    machine_name: Option<&str>,
    public_host: Option<&str>,
    advertised: &[IpAddr],
    extra: &[String],
) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    names.extend(machine_name.map(str::to_owned));
    if listen.is_unspecified() {
        names.extend(interface_addresses().iter().map(IpAddr::to_string));
    } else {
        names.push(listen.to_string());
    }
    names.extend(public_host.map(|h| h.trim_matches(['[', ']']).to_owned()));
    names.extend(advertised.iter().map(IpAddr::to_string));
    names.extend(extra.iter().cloned());
    names
}

/// This machine's unicast addresses (link-local IPv6 left out: a URL
/// cannot use one without a zone).
fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list we free below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return found;
    }
    let mut cursor = list;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, and
        // `ifa_addr`, when not null, points to a sockaddr of the family
        // it names.
        unsafe {
            let entry = &*cursor;
            if !entry.ifa_addr.is_null() {
                match i32::from((*entry.ifa_addr).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        found.push(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                        if !ip.is_unicast_link_local() {
                            found.push(IpAddr::V6(ip));
                        }
                    }
                    _ => {}
                }
            }
            cursor = entry.ifa_next;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::Certificates;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vigil-selfsigned-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn strings(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn made_once_kept_and_reissued_under_the_same_ca() {
        let dir = temp_dir("cycle");
        let now = SystemTime::now();
        let first = ensure_at(&dir, &strings(&["localhost", "10.0.0.5"]), now).unwrap();
        assert_eq!(first.made, Made::CaAndCertificate);
        assert_eq!(first.names, strings(&["10.0.0.5", "localhost"]));
        assert_eq!(first.ca_spki_sha256.len(), 44, "{}", first.ca_spki_sha256);
        let served = Certificates::load(&first.cert, &first.key).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&first.key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // The same names: nothing new.
        let again = ensure_at(&dir, &strings(&["10.0.0.5", "LOCALHOST"]), now).unwrap();
        assert_eq!(again.made, Made::Nothing);
        assert_eq!(
            Certificates::load(&again.cert, &again.key)
                .unwrap()
                .fingerprint(),
            served.fingerprint()
        );

        // A new address: a new server certificate from the same CA.
        let moved = ensure_at(&dir, &strings(&["localhost", "10.0.0.6"]), now).unwrap();
        assert_eq!(moved.made, Made::Certificate);
        assert_eq!(moved.ca_fingerprint, first.ca_fingerprint);
        assert_eq!(moved.ca_spki_sha256, first.ca_spki_sha256);
        assert_ne!(
            Certificates::load(&moved.cert, &moved.key)
                .unwrap()
                .fingerprint(),
            served.fingerprint()
        );

        // Close to expiry: reissued.
        let later = now + LEAF_VALIDITY - RENEW_BEFORE + Duration::from_secs(60);
        let renewed = ensure_at(&dir, &strings(&["localhost", "10.0.0.6"]), later).unwrap();
        assert_eq!(renewed.made, Made::Certificate);
        assert_eq!(renewed.ca_fingerprint, first.ca_fingerprint);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_chain_verifies_against_the_ca() {
        use tokio_rustls::rustls::client::WebPkiServerVerifier;
        use tokio_rustls::rustls::client::danger::ServerCertVerifier as _;
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        use tokio_rustls::rustls::{self, RootCertStore};

        let dir = temp_dir("verify");
        let made = ensure(&dir, &strings(&["desk-7.lan", "10.0.0.5"])).unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(made.ca_der.clone()))
            .unwrap();
        let verifier = WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        let chain: Vec<_> = CertificateDer::pem_file_iter(&made.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let now = UnixTime::now();
        for name in ["desk-7.lan", "10.0.0.5"] {
            let server = ServerName::try_from(name).unwrap();
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &server, &[], now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let other = ServerName::try_from("10.0.0.9").unwrap();
        assert!(
            verifier
                .verify_server_cert(&chain[0], &chain[1..], &other, &[], now)
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn names_cover_the_machine() {
        let listen: IpAddr = "0.0.0.0".parse().unwrap();
        let names = names(
            listen,
            Some("desk-7"),
            Some("[2001:db8::7]"),
            &["192.0.2.7".parse().unwrap()],
            &strings(&["vigil.lan"]),
        );
        for expected in [
            "localhost",
            "127.0.0.1",
            "desk-7",
            "2001:db8::7",
            "192.0.2.7",
            "vigil.lan",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        let only = super::names("10.0.0.5".parse().unwrap(), None, None, &[], &[]);
        assert!(only.contains(&"10.0.0.5".to_owned()));
    }
}
