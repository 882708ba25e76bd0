//! Typed configuration, parsed once from flags, environment and an optional
//! TOML file (in that order of precedence) and passed down as values.
//!
//! Defaults are loopback-only: a fresh `vigil` serves HTTP and ICE on
//! 127.0.0.1 and nothing else. Binding a routable address is an explicit
//! choice (`--http-listen`, `--ice-bind`, `--advertise-ip`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// An ICE server advertised to clients in `Link: <...>; rel="ice-server"`
/// headers (RFC 9725 §4.6).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp` or `turns:...`.
    pub url: String,
    /// TURN user name.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

impl std::str::FromStr for IceServer {
    type Err = String;

    /// `URL` or `URL,USERNAME,CREDENTIAL` (the command-line form).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut parts = s.splitn(3, ',');
        let url = parts.next().unwrap_or_default().trim().to_owned();
        if !["stun:", "turn:", "turns:"]
            .iter()
            .any(|scheme| url.starts_with(scheme))
        {
            return Err(format!(
                "ICE server {url:?} must start with stun:, turn: or turns:"
            ));
        }
        Ok(IceServer {
            url,
            username: parts.next().map(str::to_owned),
            credential: parts.next().map(str::to_owned),
        })
    }
}

/// Where the data directory is unless configured: `./data`, for the server
/// and for `vigil ctl` alike (which reads the admin key there).
pub const DEFAULT_DATA_DIR: &str = "data";

/// Where gRPC is served unless configured; also where `vigil ctl` connects.
pub const DEFAULT_GRPC_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 50051);

/// Everything the gateway needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where WHIP/WHEP is served.
    pub http_listen: SocketAddr,
    /// The one UDP address all WebRTC media uses: the media engine's
    /// first shard; shard `i` listens on its port + `i` (port 0: each
    /// shard an ephemeral port).
    pub media_listen: SocketAddr,
    /// Media engine shards (threads, one UDP port each).
    pub media_threads: usize,
    /// Addresses announced in host candidates instead of `media_listen`'s
    /// (1:1 NAT, or a bind to every address).
    pub advertise_ips: Vec<IpAddr>,
    /// STUN/TURN servers announced to clients.
    pub ice_servers: Vec<IceServer>,
    /// Largest accepted request body (SDP offers and fragments).
    pub max_body_bytes: usize,
    /// How long an HTTP connection gets to send a complete request head,
    /// counted from when it opens or its previous response ended: a slow
    /// header and an idle keep-alive connection are closed after it.
    pub http_header_timeout: Duration,
    /// How long a request body gets to arrive in full (408 after).
    pub http_body_timeout: Duration,
    /// How long viewers of a stream whose publisher left wait for it to come back.
    pub republish_grace: Duration,
    /// How long a shutdown (SIGTERM, SIGINT) gets to close every session
    /// and tell watchers before the process exits anyway.
    pub drain: Duration,
    /// A session that has not connected by then is reaped.
    pub connect_timeout: Duration,
    /// ICE: no traffic for this long makes a connection `disconnected`.
    pub ice_disconnected_timeout: Duration,
    /// ICE: `disconnected` for this long makes it `failed`, and the session is reaped.
    pub ice_failed_timeout: Duration,
    /// Where the gRPC control API (and gRPC-web) is served.
    pub grpc_listen: SocketAddr,
    /// Where rooms and secrets persist; `None` keeps everything in memory.
    pub data_dir: Option<PathBuf>,
    /// No admin key, no tokens, rooms created on first use.
    pub insecure_no_auth: bool,
    /// Secrets to use instead of the data directory's (embedding, tests).
    pub secrets: Option<vigil_control::store::Secrets>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            media_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8189)),
            media_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            advertise_ips: Vec::new(),
            ice_servers: Vec::new(),
            max_body_bytes: 64 * 1024,
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(10),
            republish_grace: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            ice_disconnected_timeout: Duration::from_secs(5),
            ice_failed_timeout: Duration::from_secs(25),
            grpc_listen: DEFAULT_GRPC_LISTEN,
            data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
            insecure_no_auth: false,
            secrets: None,
        }
    }
}

/// Command line of `vigil`: without a subcommand it runs the server, with
/// the flags below. Every flag also reads a `VIGIL_*` environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "vigil",
    version,
    about = "WHIP/WHEP media server for remote monitoring",
    // `vigil --grpc-listen X ctl ...` would silently ignore the flag.
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Something other than running the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML file with any of the settings below (flags and environment win).
    #[arg(long, env = "VIGIL_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listen address for WHIP/WHEP [default: 127.0.0.1:8080].
    #[arg(long, env = "VIGIL_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// The one UDP address for all WebRTC media [default: 127.0.0.1:8189];
    /// with N media threads, ports PORT..PORT+N-1.
    #[arg(long, env = "VIGIL_MEDIA_LISTEN")]
    pub media_listen: Option<SocketAddr>,
    /// Media engine threads, one UDP port each [default: the CPU count].
    #[arg(long, env = "VIGIL_MEDIA_THREADS")]
    pub media_threads: Option<usize>,
    /// Public IP announced in ICE candidates (1:1 NAT); repeat for several.
    #[arg(
        long = "advertise-ip",
        env = "VIGIL_ADVERTISE_IPS",
        value_delimiter = ','
    )]
    pub advertise_ips: Vec<IpAddr>,
    /// STUN/TURN server for clients, `URL` or `URL,USERNAME,CREDENTIAL`; repeat for several.
    #[arg(long = "ice-server", env = "VIGIL_ICE_SERVERS", value_delimiter = ' ')]
    pub ice_servers: Vec<IceServer>,
    /// Seconds viewers wait for a publisher that left to come back [default: 30].
    #[arg(long, env = "VIGIL_REPUBLISH_GRACE_SECS")]
    pub republish_grace_secs: Option<u64>,
    /// Seconds a shutdown (SIGTERM, SIGINT) gets to close every session
    /// and tell watchers before exiting anyway [default: 10].
    #[arg(long, env = "VIGIL_DRAIN_SECS")]
    pub drain_secs: Option<u64>,
    /// gRPC control API listen address [default: 127.0.0.1:50051].
    #[arg(long, env = "VIGIL_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Directory for the room database and the generated secrets [default: data].
    #[arg(long, env = "VIGIL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Run without authentication: anyone reaching the ports may publish,
    /// play and administer. For local demos only.
    #[arg(long, env = "VIGIL_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

/// The subcommands of `vigil`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Administer a running server over its gRPC API (rooms, tokens,
    /// participants, events).
    Ctl(crate::ctl::CtlArgs),
}

/// The TOML file's shape: the same settings as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    http_listen: Option<SocketAddr>,
    media_listen: Option<SocketAddr>,
    media_threads: Option<usize>,
    #[serde(default)]
    advertise_ips: Vec<IpAddr>,
    #[serde(default)]
    ice_servers: Vec<IceServer>,
    republish_grace_secs: Option<u64>,
    drain_secs: Option<u64>,
    grpc_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    insecure_no_auth: bool,
}

/// The configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
}

/// Flags replace the file's list when any is given.
fn pick_vec<T>(flag: Vec<T>, file: Vec<T>) -> Vec<T> {
    if flag.is_empty() { file } else { flag }
}

impl Args {
    /// Merges flags over the file over the defaults.
    pub fn into_config(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let defaults = Config::default();
        Ok(Config {
            http_listen: self
                .http_listen
                .or(file.http_listen)
                .unwrap_or(defaults.http_listen),
            media_listen: self
                .media_listen
                .or(file.media_listen)
                .unwrap_or(defaults.media_listen),
            media_threads: self
                .media_threads
                .or(file.media_threads)
                .unwrap_or(defaults.media_threads)
                .max(1),
            advertise_ips: pick_vec(self.advertise_ips, file.advertise_ips),
            ice_servers: pick_vec(self.ice_servers, file.ice_servers),
            republish_grace: self
                .republish_grace_secs
                .or(file.republish_grace_secs)
                .map(Duration::from_secs)
                .unwrap_or(defaults.republish_grace),
            drain: self
                .drain_secs
                .or(file.drain_secs)
                .map(Duration::from_secs)
                .unwrap_or(defaults.drain),
            grpc_listen: self
                .grpc_listen
                .or(file.grpc_listen)
                .unwrap_or(defaults.grpc_listen),
            data_dir: self.data_dir.or(file.data_dir).or(defaults.data_dir),
            insecure_no_auth: self.insecure_no_auth || file.insecure_no_auth,
            ..defaults
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_loopback_only() {
        let config = Args::parse_from(["vigil"]).into_config().unwrap();
        assert!(config.http_listen.ip().is_loopback());
        assert!(config.media_listen.ip().is_loopback());
        assert_eq!(config.media_listen.port(), 8189);
        assert!(config.advertise_ips.is_empty());
        assert!(config.grpc_listen.ip().is_loopback());
        assert!(!config.insecure_no_auth, "secure by default");
    }

    #[test]
    fn flags_win_over_file() {
        let dir = std::env::temp_dir().join(format!("vigil-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vigil.toml");
        std::fs::write(
            &path,
            "http_listen = \"127.0.0.1:9000\"\nmedia_listen = \"127.0.0.2:7000\"\n\
             [[ice_servers]]\nurl = \"stun:stun.example.net:3478\"\n",
        )
        .unwrap();
        let config = Args::parse_from([
            "vigil",
            "--config",
            path.to_str().unwrap(),
            "--http-listen",
            "127.0.0.1:9001",
        ])
        .into_config()
        .unwrap();
        assert_eq!(config.http_listen.port(), 9001);
        assert_eq!(
            config.media_listen,
            "127.0.0.2:7000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(config.ice_servers[0].url, "stun:stun.example.net:3478");
    }

    #[test]
    fn ice_server_flag_form() {
        let s: IceServer = "turn:t.example:3478,user,secret".parse().unwrap();
        assert_eq!(s.username.as_deref(), Some("user"));
        assert_eq!(s.credential.as_deref(), Some("secret"));
        assert!("http://x".parse::<IceServer>().is_err());
    }
}
