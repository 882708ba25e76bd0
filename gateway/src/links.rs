//! The base URL of the links Vigil hands out: the WHIP/WHEP and console
//! links it prints at start, and (through the console) join and OBS links.
//!
//! A link is only worth printing if the reader can open it, so the base is
//! `--public-url` when the operator gave one, else the address the HTTP port
//! is bound to, except that an unspecified address (`0.0.0.0`, `[::]`) is a
//! listen address, never a destination: then the machine's name stands in,
//! and the operator is told to set `--public-url`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::config::PublicUrl;

/// The base URL for links, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    /// `scheme://host[:port]`, without a trailing slash.
    pub url: String,
    /// How sure Vigil is that others can open it.
    pub origin: BaseOrigin,
}

/// Where a [`Base`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseOrigin {
    /// `--public-url`: the operator said so.
    Configured,
    /// The HTTP port's own address (a loopback one reaches only this machine).
    Listen,
    /// The HTTP port listens on every address: a guess (the machine's name,
    /// or loopback without one) that others may or may not resolve.
    Guessed,
}

/// The base URL for links to the HTTP port bound at `http_addr`.
/// `machine_name` is this machine's name (see [`machine_name`]); it is used
/// only for an unspecified listen address.
pub fn base(
    public_url: Option<&PublicUrl>,
    http_addr: SocketAddr,
    machine_name: Option<&str>,
) -> Base {
    base_with("http", public_url, http_addr, machine_name)
}

/// [`base`] for a port that speaks `scheme` (`https` with TLS on).
pub fn base_with(
    scheme: &str,
    public_url: Option<&PublicUrl>,
    http_addr: SocketAddr,
    machine_name: Option<&str>,
) -> Base {
    if let Some(url) = public_url {
        return Base {
            url: url.as_str().to_owned(),
            origin: BaseOrigin::Configured,
        };
    }
    if !http_addr.ip().is_unspecified() {
        return Base {
            url: format!("{scheme}://{http_addr}"),
            origin: BaseOrigin::Listen,
        };
    }
    let port = http_addr.port();
    let url = match machine_name.filter(|name| is_host_name(name)) {
        Some(name) => format!("{scheme}://{name}:{port}"),
        // Loopback of the listen address's family: an IPv6-only socket
        // would not answer on 127.0.0.1.
        None => format!(
            "{scheme}://{}",
            SocketAddr::new(
                match http_addr.ip() {
                    IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                    IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
                },
                port
            )
        ),
    };
    Base {
        url,
        origin: BaseOrigin::Guessed,
    }
}

/// This machine's name (`gethostname`), if it has a usable one.
pub fn machine_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`,
    // which we own for the call.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let len = buf.iter().position(|&b| b == 0)?;
    let name = std::str::from_utf8(&buf[..len]).ok()?;
    is_host_name(name).then(|| name.to_owned())
}

/// A DNS name that can go in a URL as is (letters, digits, `-`, `.`).
fn is_host_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name != "localhost"
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn https_with_tls() {
        assert_eq!(
            base_with("https", None, addr("10.0.0.5:8443"), None).url,
            "https://10.0.0.5:8443"
        );
        assert_eq!(
            base_with("https", None, addr("0.0.0.0:8443"), Some("desk-7")).url,
            "https://desk-7:8443"
        );
    }

    #[test]
    fn the_public_url_wins() {
        let url: PublicUrl = "https://vigil.example.net".parse().unwrap();
        for listen in ["127.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"] {
            assert_eq!(
                base(Some(&url), addr(listen), Some("desk-7")),
                Base {
                    url: "https://vigil.example.net".into(),
                    origin: BaseOrigin::Configured
                }
            );
        }
    }

    #[test]
    fn a_specific_listen_address_is_its_own_link() {
        assert_eq!(
            base(None, addr("127.0.0.1:8080"), Some("desk-7")).url,
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base(None, addr("[::1]:8080"), None).url,
            "http://[::1]:8080"
        );
        assert_eq!(
            base(None, addr("192.0.2.7:80"), None).origin,
            BaseOrigin::Listen
        );
    }

    #[test]
    fn an_unspecified_listen_address_is_never_a_link() {
        for listen in ["0.0.0.0:8080", "[::]:8080"] {
            for name in [
                Some("desk-7"),
                Some("desk-7.lan"),
                None,
                Some(""),
                Some("bad name"),
            ] {
                let base = base(None, addr(listen), name);
                assert_eq!(base.origin, BaseOrigin::Guessed);
                assert!(
                    !base.url.contains("0.0.0.0") && !base.url.contains("[::]"),
                    "{listen} {name:?}: {}",
                    base.url
                );
                assert!(base.url.ends_with(":8080"), "{}", base.url);
            }
        }
        assert_eq!(
            base(None, addr("0.0.0.0:8080"), Some("desk-7")).url,
            "http://desk-7:8080"
        );
        assert_eq!(
            base(None, addr("0.0.0.0:8080"), None).url,
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base(None, addr("[::]:8080"), Some("bad name")).url,
            "http://[::1]:8080"
        );
    }

    #[test]
    fn host_names_that_fit_in_a_url() {
        assert!(is_host_name("desk-7.example.net"));
        for bad in ["", "localhost", "a b", "x/y", "-x", "ünï"] {
            assert!(!is_host_name(bad), "{bad:?}");
        }
    }
}
