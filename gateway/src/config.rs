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
use tracing::level_filters::LevelFilter;

pub use crate::tls::TlsSource;

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

/// The base URL other people and devices reach Vigil at (`--public-url`),
/// e.g. `https://vigil.example.net` behind a TLS proxy: `http` or `https`,
/// a host and maybe a port, nothing else. Join and OBS links and the
/// printed start-up links are built from it.
///
/// A path is refused rather than kept: the pages, assets and endpoints live
/// at the root of the HTTP port, so a proxy that serves Vigil under a
/// prefix would break them anyway.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PublicUrl(String);

impl PublicUrl {
    /// `scheme://host[:port]`, without a trailing slash.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PublicUrl {
    /// The host, as in the URL (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        let authority = self.0.split_once("://").map_or(&*self.0, |(_, rest)| rest);
        match authority.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or(authority, |(host, _)| host),
            None => authority.split(':').next().unwrap_or(authority),
        }
    }

    /// `https://...`.
    pub fn is_https(&self) -> bool {
        self.0.starts_with("https://")
    }
}

impl std::fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for PublicUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uri: hyper::Uri = s
            .trim()
            .parse()
            .map_err(|e| format!("public URL {s:?} is not a URL ({e})"))?;
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => "http",
            Some("https") => "https",
            _ => {
                return Err(format!(
                    "public URL {s:?} must start with http:// or https://"
                ));
            }
        };
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or_else(|| format!("public URL {s:?} has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "public URL {s:?} must not carry a user name or password"
            ));
        }
        let port = authority
            .as_str()
            .strip_prefix(authority.host())
            .unwrap_or_default();
        if !(port.is_empty()
            || port
                .strip_prefix(':')
                .is_some_and(|p| p.parse::<u16>().is_ok()))
        {
            return Err(format!("public URL {s:?} has an invalid port"));
        }
        let origin = format!("{scheme}://{}", authority.as_str().to_ascii_lowercase());
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "public URL {s:?} has a path: Vigil's pages and endpoints live at the root, \
                 so give the address without one, e.g. {origin}"
            ));
        }
        Ok(PublicUrl(origin))
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
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
    /// ICE over TCP (RFC 6544): each media shard also listens for TCP on
    /// its UDP address, and answers offer that as a lower-priority
    /// candidate, for clients whose network blocks UDP.
    pub ice_tcp: bool,
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
    /// Admission limits per client address, per token and in all.
    pub limits: crate::admission::Limits,
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
    /// The base URL others reach Vigil at, for the links it hands out;
    /// `None`: the address the HTTP port is bound to (see [`crate::links`]).
    pub public_url: Option<PublicUrl>,
    /// How much the binary logs (`RUST_LOG`, when set, wins).
    pub log_level: LevelFilter,
    /// How the binary's log lines look.
    pub log_format: LogFormat,
    /// Where `/metrics` is served instead of the HTTP port; `None`: on the
    /// HTTP port.
    pub metrics_listen: Option<SocketAddr>,
    /// The OTLP/gRPC collector traces and metrics are exported to; `None`:
    /// nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// TLS on the HTTP and gRPC ports; `None`: plain HTTP and gRPC.
    pub tls: Option<TlsSource>,
    /// With TLS, a plain-HTTP port that redirects every request to HTTPS.
    pub http_redirect_listen: Option<SocketAddr>,
    /// Several nodes sharing state over Redis (docs/cluster.md); `None`:
    /// a single node, no Redis.
    pub cluster: Option<ClusterConfig>,
    /// Where streams not published here are published (relays,
    /// docs/cluster-relay.md): no flag, set by the cluster wiring, or by an
    /// embedder or test; [`crate::relay::NoOrigins`] by default.
    pub origins: crate::relay::SharedOrigins,
}

/// How a node joins a deployment (`--redis-url` and the `--node-*` flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The Redis every node of the deployment shares (`redis://host:port/db`).
    pub redis_url: String,
    /// This node's name in the deployment, unique among its nodes.
    pub node_id: String,
    /// Where the other nodes reach this node's HTTP port (WHEP relays,
    /// redirects); `None`: the address the HTTP port is bound to.
    pub node_url: Option<String>,
    /// Sessions this node takes before it redirects new WHIP/WHEP POSTs to
    /// a less loaded node; 0: no limit.
    pub capacity: usize,
    /// The local address a relay's WebRTC client (this node playing a
    /// stream from another node) gathers candidates on.
    pub relay_ip: IpAddr,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            media_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8189)),
            media_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            advertise_ips: Vec::new(),
            ice_tcp: true,
            ice_servers: Vec::new(),
            max_body_bytes: 64 * 1024,
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(10),
            republish_grace: Duration::from_secs(30),
            drain: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            limits: crate::admission::Limits::default(),
            ice_disconnected_timeout: Duration::from_secs(5),
            ice_failed_timeout: Duration::from_secs(25),
            grpc_listen: DEFAULT_GRPC_LISTEN,
            data_dir: Some(PathBuf::from(DEFAULT_DATA_DIR)),
            insecure_no_auth: false,
            secrets: None,
            public_url: None,
            log_level: LevelFilter::INFO,
            log_format: LogFormat::Pretty,
            metrics_listen: None,
            otlp_endpoint: None,
            tls: None,
            http_redirect_listen: None,
            cluster: None,
            origins: crate::relay::SharedOrigins::default(),
        }
    }
}

/// How log lines look (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Text for people: time, level, message, fields.
    #[default]
    Pretty,
    /// One JSON object a line (time, level, message, fields, and the
    /// session's span fields), for log collectors.
    Json,
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
    /// Do not take ICE over TCP: by default each media port also listens
    /// for TCP (same address and port) for clients whose network blocks
    /// UDP.
    #[arg(long, env = "VIGIL_NO_ICE_TCP")]
    pub no_ice_tcp: bool,
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
    /// The base URL other devices reach Vigil at (e.g. https://vigil.example.net
    /// behind a proxy), used in join and OBS links [default: the HTTP listen address].
    #[arg(long, env = "VIGIL_PUBLIC_URL")]
    pub public_url: Option<PublicUrl>,
    /// Log level: error, warn, info, debug or trace; RUST_LOG, when set,
    /// wins [default: info].
    #[arg(long, env = "VIGIL_LOG_LEVEL")]
    pub log_level: Option<LevelFilter>,
    /// Log lines as text for people (pretty) or one JSON object a line
    /// (json) [default: pretty].
    #[arg(long, env = "VIGIL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Serve GET /metrics (Prometheus) on this address only, instead of
    /// on the HTTP port.
    #[arg(long, env = "VIGIL_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export traces and metrics over OTLP/gRPC to this collector, e.g.
    /// http://127.0.0.1:4317 [default: OTEL_EXPORTER_OTLP_ENDPOINT, else
    /// nothing is exported].
    #[arg(long, env = "VIGIL_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// TLS certificate chain (PEM, leaf first) for the HTTP and gRPC
    /// ports; reloaded on SIGHUP and when the file changes. Needs --tls-key.
    #[arg(long, env = "VIGIL_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, env = "VIGIL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS with a certificate from a local CA kept in the data
    /// directory, for this machine's names and addresses (a LAN with phones).
    #[arg(long, env = "VIGIL_TLS_SELF_SIGNED", conflicts_with_all = ["tls_cert", "tls_key"])]
    pub tls_self_signed: bool,
    /// A further host name or IP address the self-signed certificate
    /// covers; repeat for several.
    #[arg(
        long = "tls-name",
        env = "VIGIL_TLS_NAMES",
        value_delimiter = ',',
        requires = "tls_self_signed"
    )]
    pub tls_names: Vec<String>,
    /// With TLS, also listen for plain HTTP here and redirect every request
    /// to HTTPS (e.g. 0.0.0.0:80).
    #[arg(long, env = "VIGIL_HTTP_REDIRECT_LISTEN")]
    pub http_redirect_listen: Option<SocketAddr>,
    /// Join a deployment of nodes sharing this Redis (redis://host:port);
    /// without it the node stands alone and needs no Redis.
    #[arg(long, env = "VIGIL_REDIS_URL")]
    pub redis_url: Option<String>,
    /// This node's name in the deployment [default: the host name and HTTP
    /// port].
    #[arg(long, env = "VIGIL_NODE_ID", requires = "redis_url")]
    pub node_id: Option<String>,
    /// The URL other nodes reach this node's HTTP port at [default: the
    /// HTTP listen address].
    #[arg(long, env = "VIGIL_NODE_URL", requires = "redis_url")]
    pub node_url: Option<String>,
    /// Sessions this node serves before it redirects new POSTs to a less
    /// loaded node [default: 0, no limit].
    #[arg(long, env = "VIGIL_NODE_CAPACITY", requires = "redis_url")]
    pub node_capacity: Option<usize>,
    /// Local IP a relay's WebRTC client uses towards other nodes
    /// [default: 127.0.0.1].
    #[arg(long, env = "VIGIL_RELAY_IP", requires = "redis_url")]
    pub relay_ip: Option<IpAddr>,
    /// Seconds a new session gets to connect (ICE and DTLS) before it is
    /// closed [default: 10].
    #[arg(long, env = "VIGIL_CONNECT_TIMEOUT_SECS")]
    pub connect_timeout_secs: Option<u64>,
    #[command(flatten)]
    pub limits: LimitArgs,
}

/// Admission limits on the command line; 0 turns one off.
#[derive(Debug, Default, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitArgs {
    /// Sessions in the whole server; past it new ones get 503 [default: 5000].
    #[arg(long, env = "VIGIL_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Sessions from one client address; past it 429 [default: 500].
    #[arg(long, env = "VIGIL_MAX_SESSIONS_PER_ADDRESS")]
    pub max_sessions_per_address: Option<usize>,
    /// Sessions of one token; past it 429 [default: 100].
    #[arg(long, env = "VIGIL_MAX_SESSIONS_PER_TOKEN")]
    pub max_sessions_per_token: Option<usize>,
    /// Not yet connected sessions from one client address; past it 429 [default: 50].
    #[arg(long, env = "VIGIL_MAX_PENDING_PER_ADDRESS")]
    pub max_pending_per_address: Option<usize>,
    /// WHIP/WHEP offers per second from one client address (a token
    /// bucket); past it 429 [default: 20].
    #[arg(long, env = "VIGIL_POSTS_PER_SECOND_PER_ADDRESS")]
    pub posts_per_second_per_address: Option<f64>,
    /// Offers one client address may send at once above that rate [default: 40].
    #[arg(long, env = "VIGIL_POST_BURST")]
    pub post_burst: Option<u32>,
    /// HTTP connections open from one client address; past it new ones
    /// are closed at once [default: 256].
    #[arg(long, env = "VIGIL_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
}

impl LimitArgs {
    /// These over `file` over the defaults.
    fn merge(self, file: LimitArgs) -> crate::admission::Limits {
        let defaults = crate::admission::Limits::default();
        let default_rate = defaults.post_rate.expect("a default rate");
        let per_second = self
            .posts_per_second_per_address
            .or(file.posts_per_second_per_address)
            .unwrap_or(default_rate.per_second);
        let burst = self
            .post_burst
            .or(file.post_burst)
            .unwrap_or(default_rate.burst);
        crate::admission::Limits {
            max_sessions: self
                .max_sessions
                .or(file.max_sessions)
                .unwrap_or(defaults.max_sessions),
            max_sessions_per_address: self
                .max_sessions_per_address
                .or(file.max_sessions_per_address)
                .unwrap_or(defaults.max_sessions_per_address),
            max_sessions_per_token: self
                .max_sessions_per_token
                .or(file.max_sessions_per_token)
                .unwrap_or(defaults.max_sessions_per_token),
            max_pending_per_address: self
                .max_pending_per_address
                .or(file.max_pending_per_address)
                .unwrap_or(defaults.max_pending_per_address),
            post_rate: (per_second > 0.0).then_some(crate::admission::Rate {
                per_second,
                burst: burst.max(1),
            }),
            max_connections_per_address: self
                .max_connections_per_address
                .or(file.max_connections_per_address)
                .unwrap_or(defaults.max_connections_per_address),
        }
    }
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
    ice_tcp: Option<bool>,
    #[serde(default)]
    ice_servers: Vec<IceServer>,
    republish_grace_secs: Option<u64>,
    drain_secs: Option<u64>,
    grpc_listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    insecure_no_auth: bool,
    public_url: Option<PublicUrl>,
    log_level: Option<String>,
    log_format: Option<LogFormat>,
    metrics_listen: Option<SocketAddr>,
    otlp_endpoint: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    tls_self_signed: bool,
    #[serde(default)]
    tls_names: Vec<String>,
    http_redirect_listen: Option<SocketAddr>,
    connect_timeout_secs: Option<u64>,
    #[serde(default)]
    limits: LimitArgs,
    redis_url: Option<String>,
    node_id: Option<String>,
    node_url: Option<String>,
    node_capacity: Option<usize>,
    relay_ip: Option<IpAddr>,
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
    /// Settings that do not go together.
    #[error("{0}")]
    Conflict(String),
    /// A setting of the file has a value that means nothing.
    #[error("invalid {setting} in {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The setting.
        setting: &'static str,
        /// Why.
        reason: String,
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
        let log_level = match (self.log_level, file.log_level) {
            (Some(level), _) => level,
            (None, Some(text)) => text.parse().map_err(|e| ConfigError::Invalid {
                path: self.config.clone().unwrap_or_default(),
                setting: "log_level",
                reason: format!("{text:?}: {e}"),
            })?,
            (None, None) => defaults.log_level,
        };
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
            self.tls_self_signed || file.tls_self_signed,
        ) {
            (None, None, false) => None,
            (Some(cert), Some(key), false) => Some(TlsSource::Files { cert, key }),
            (None, None, true) => Some(TlsSource::SelfSigned {
                names: pick_vec(self.tls_names, file.tls_names),
            }),
            (_, _, true) => {
                return Err(ConfigError::Conflict(
                    "--tls-self-signed makes its own certificate: drop --tls-cert and --tls-key"
                        .into(),
                ));
            }
            _ => {
                return Err(ConfigError::Conflict(
                    "--tls-cert and --tls-key go together".into(),
                ));
            }
        };
        let public_url = self.public_url.or(file.public_url);
        if tls.is_some() && public_url.as_ref().is_some_and(|url| !url.is_https()) {
            return Err(ConfigError::Conflict(
                "with TLS on, --public-url must be an https:// URL".into(),
            ));
        }
        let http_redirect_listen = self.http_redirect_listen.or(file.http_redirect_listen);
        let http_listen = self
            .http_listen
            .or(file.http_listen)
            .unwrap_or(defaults.http_listen);
        let cluster = self
            .redis_url
            .or(file.redis_url)
            .filter(|url| !url.trim().is_empty())
            .map(|redis_url| ClusterConfig {
                redis_url,
                node_id: self.node_id.or(file.node_id).unwrap_or_else(|| {
                    let host = std::fs::read_to_string("/etc/hostname")
                        .map(|h| h.trim().to_owned())
                        .unwrap_or_default();
                    let host = if host.is_empty() {
                        "vigil".into()
                    } else {
                        host
                    };
                    match http_listen.port() {
                        // Ephemeral: nothing stable to tell nodes apart by.
                        0 => format!("{host}-{:08x}", rand::random::<u32>()),
                        port => format!("{host}-{port}"),
                    }
                }),
                node_url: self.node_url.or(file.node_url),
                capacity: self.node_capacity.or(file.node_capacity).unwrap_or(0),
                relay_ip: self
                    .relay_ip
                    .or(file.relay_ip)
                    .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            });
        if http_redirect_listen.is_some() && tls.is_none() {
            return Err(ConfigError::Conflict(
                "--http-redirect-listen redirects to HTTPS: it needs --tls-cert/--tls-key or --tls-self-signed"
                    .into(),
            ));
        }
        Ok(Config {
            http_listen,
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
            ice_tcp: !self.no_ice_tcp && file.ice_tcp.unwrap_or(defaults.ice_tcp),
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
            public_url,
            log_level,
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(defaults.log_format),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            // The standard variable as the last resort, as every
            // OpenTelemetry SDK reads it.
            otlp_endpoint: self
                .otlp_endpoint
                .or(file.otlp_endpoint)
                .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
                .filter(|endpoint| !endpoint.trim().is_empty()),
            tls,
            http_redirect_listen,
            connect_timeout: self
                .connect_timeout_secs
                .or(file.connect_timeout_secs)
                .map(Duration::from_secs)
                .unwrap_or(defaults.connect_timeout),
            limits: self.limits.merge(file.limits),
            cluster,
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
        assert_eq!(config.limits, crate::admission::Limits::default());
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn limits_from_flags_and_file() {
        let dir = std::env::temp_dir().join(format!("vigil-config-limits-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vigil.toml");
        std::fs::write(
            &path,
            "connect_timeout_secs = 5\n[limits]\nmax_sessions = 10\nmax_pending_per_address = 3\n",
        )
        .unwrap();
        let config = Args::parse_from([
            "vigil",
            "--config",
            path.to_str().unwrap(),
            "--max-sessions",
            "20",
            "--posts-per-second-per-address",
            "0",
        ])
        .into_config()
        .unwrap();
        assert_eq!(config.limits.max_sessions, 20);
        assert_eq!(config.limits.max_pending_per_address, 3);
        assert_eq!(config.limits.post_rate, None, "0 turns the rate limit off");
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
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
    fn public_url_is_an_origin() {
        let parse = |s: &str| s.parse::<PublicUrl>().map(|u| u.to_string());
        assert_eq!(
            parse("https://Vigil.Example.net/").unwrap(),
            "https://vigil.example.net"
        );
        assert_eq!(
            parse("http://192.0.2.7:8080").unwrap(),
            "http://192.0.2.7:8080"
        );
        assert_eq!(
            parse("http://[2001:db8::7]:80").unwrap(),
            "http://[2001:db8::7]:80"
        );
        for (bad, says) in [
            ("vigil.example.net", "http:// or https://"),
            ("ftp://vigil.example.net", "http:// or https://"),
            ("https://vigil.example.net/vigil", "has a path"),
            ("https://vigil.example.net/?a=b", "has a path"),
            ("https://user:pw@vigil.example.net", "user name"),
            ("https://vigil.example.net:http", "port"),
            ("", "not a URL"),
        ] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = parse("https://vigil.example.net/vigil/").unwrap_err();
        assert!(e.ends_with("e.g. https://vigil.example.net"), "{e}");
    }

    #[test]
    fn public_url_and_log_level_from_flags_or_file() {
        let config = Args::parse_from([
            "vigil",
            "--public-url",
            "https://vigil.example.net",
            "--log-level",
            "warn",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            config.public_url.as_ref().map(PublicUrl::as_str),
            Some("https://vigil.example.net")
        );
        assert_eq!(config.log_level, LevelFilter::WARN);
        assert!(Args::try_parse_from(["vigil", "--public-url", "https://x/y"]).is_err());
        assert!(Args::try_parse_from(["vigil", "--log-level", "loud"]).is_err());

        let dir = std::env::temp_dir().join(format!("vigil-config-url-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("vigil.toml");
        let from_file = |text: &str| {
            std::fs::write(&path, text).unwrap();
            Args::parse_from(["vigil", "--config", path.to_str().unwrap()]).into_config()
        };
        let config =
            from_file("public_url = \"http://desk.lan:8080\"\nlog_level = \"debug\"\n").unwrap();
        assert_eq!(config.public_url.unwrap().as_str(), "http://desk.lan:8080");
        assert_eq!(config.log_level, LevelFilter::DEBUG);
        let e = from_file("public_url = \"http://desk.lan/vigil\"\n").unwrap_err();
        assert!(e.to_string().contains("has a path"), "{e}");
        let e = from_file("log_level = \"loud\"\n").unwrap_err();
        assert!(e.to_string().contains("invalid log_level"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ice_server_flag_form() {
        let s: IceServer = "turn:t.example:3478,user,secret".parse().unwrap();
        assert_eq!(s.username.as_deref(), Some("user"));
        assert_eq!(s.credential.as_deref(), Some("secret"));
        assert!("http://x".parse::<IceServer>().is_err());
    }
}
