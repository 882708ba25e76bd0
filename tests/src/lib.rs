//! Shared helpers for Vigil's end-to-end tests.
//!
//! Every test runs a real `vigil` gateway in-process on port 0 and talks to
//! it over real HTTP and real WebRTC (webrtc-rs peers on 127.0.0.1 UDP), then
//! asserts on the RTP that actually arrived. ICE on both sides is pinned to
//! 127.0.0.1.

pub mod browser;
pub mod cluster;
pub mod conformance;
pub mod control;
pub mod http_client;
pub mod loss;
pub mod media;
pub mod netns;
pub mod otlp;
pub mod peers;
pub mod process;
pub mod redis;
pub mod replay;
pub mod rtsp;
pub mod script;
pub mod simulcast;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vigil_gateway::{Config, Vigil};

/// Installs a log subscriber once (`RUST_LOG=debug cargo test` to see it).
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A configuration for tests: HTTP, gRPC and media on ephemeral loopback
/// ports (two media shards, so sessions spread over both), nothing persisted, no authentication, and short ICE
/// timeouts so reaping is observable quickly.
pub fn test_config() -> Config {
    Config {
        http_listen: "127.0.0.1:0".parse().expect("literal address"),
        grpc_listen: "127.0.0.1:0".parse().expect("literal address"),
        // Each shard an ephemeral port: tests run servers side by side.
        media_listen: "127.0.0.1:0".parse().expect("literal address"),
        data_dir: None,
        // Media tests run open; the control-plane tests turn tokens on.
        insecure_no_auth: true,
        // The server is ICE-lite: only the clients' checks keep a session
        // alive, and some send them every 5 s (RFC 7675's average), so
        // 8 s in all (production: 30 s, RFC 7675's consent expiry).
        ice_disconnected_timeout: Duration::from_secs(4),
        ice_failed_timeout: Duration::from_secs(4),
        connect_timeout: Duration::from_secs(10),
        media_threads: 2,
        // Every test client comes from 127.0.0.1, and several tests open
        // dozens of sessions at once: the per-address limits would be
        // what they measure. `admission_burst.rs` tests the defaults on
        // the real binary.
        limits: vigil_gateway::admission::Limits::unlimited(),
        ..Config::default()
    }
}

/// Starts a gateway with [`test_config`] changed by `tweak`.
pub async fn start_server(tweak: impl FnOnce(&mut Config)) -> Vigil {
    init_logging();
    let mut config = test_config();
    tweak(&mut config);
    Vigil::start(config).await.expect("start vigil")
}

/// `http://127.0.0.1:PORT`
pub fn base_url(vigil: &Vigil) -> String {
    format!("http://{}", vigil.http_addr)
}

/// Polls `check` every 50 ms until it returns `Some`, or panics with `what`
/// after `limit`. Readiness is awaited, never slept for.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    poll_until(limit, check)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `limit`;
/// `None` if it never did (for callers that fail with their own context).
pub async fn poll_until<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A fresh directory under the system temp dir (a server's data directory
/// that outlives one start), removed when dropped, also when the test fails.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `{temp}/vigil-{what}-{pid}-{nanos}-{random}`, not created yet: the
    /// server creates it with its own permissions.
    pub fn new(what: &str) -> TempDir {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let path = std::env::temp_dir().join(format!(
            "vigil-{what}-{}-{nanos:x}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        assert!(!path.exists(), "{} already exists", path.display());
        TempDir(path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temp dir is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
