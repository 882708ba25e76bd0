//! The binary's log: to stderr, colour only on a terminal, at `--log-level`
//! (`RUST_LOG`, when set, wins), with the media stack's routine chatter
//! kept out unless the level is `debug` or finer.
//!
//! webrtc-rs (`rtc*` targets, through the `log` crate) warns about things
//! that happen on every session or are triggered by a single datagram:
//! `rtc_dtls::config` once per session about a TLS server name WebRTC never
//! uses, `rtc::peer_connection::handler` once per refused datagram (e.g.
//! "SrtpHandler.handle_read got error: packet is not large enough", 31 lines
//! in 0.4 s from one Chromium session that trickled candidates), `rtc_ice`
//! once per discarded STUN
//! message or unresolvable mDNS candidate. None of them needs an operator:
//! what a session comes to is Vigil's own `session closed ... reason=` line.
//! They show at `debug`; their `error`s always show. docs/operations.md has
//! the counts.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// Targets whose warnings are routine (see the module documentation).
const ROUTINE_WARNINGS: &[&str] = &[
    "rtc_dtls::config",
    "rtc::peer_connection::handler",
    "rtc_ice",
];

/// The filter for `--log-level level` when `RUST_LOG` is not set.
pub fn default_filter(level: LevelFilter) -> String {
    if level >= LevelFilter::TRACE {
        return level.to_string();
    }
    if level >= LevelFilter::DEBUG {
        // The routine warnings show here, but not webrtc-rs's own debug
        // output (several lines per packet).
        return format!("{level},rtc=info");
    }
    let mut filter = level.to_string();
    if level >= LevelFilter::INFO {
        // webrtc-rs's info lines are state changes Vigil logs itself.
        filter.push_str(",rtc=warn");
    }
    if level >= LevelFilter::WARN {
        for target in ROUTINE_WARNINGS {
            filter.push_str(&format!(",{target}=error"));
        }
    }
    filter
}

/// The filter to use: `RUST_LOG` if set (a broken one is reported, then
/// ignored), else [`default_filter`].
fn filter(level: LevelFilter) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => match EnvFilter::try_new(&directives) {
            Ok(filter) => return filter,
            Err(e) => eprintln!("vigil: ignoring RUST_LOG={directives:?}: {e}"),
        },
        _ => {}
    }
    EnvFilter::new(default_filter(level))
}

/// Installs the log subscriber (once, at start). Colours only when stderr
/// is a terminal and `NO_COLOR` is unset: a log file or journal gets plain
/// text.
pub fn init(level: LevelFilter) {
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer that keeps what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the default filter for `level` lets through of a fixed set of
    /// events, one word each.
    fn shown(level: LevelFilter) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(default_filter(level)))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .without_time()
            .with_level(false)
            .with_target(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(target: "vigil_gateway::sfu", "own-info");
            tracing::debug!(target: "vigil_gateway::sfu", "own-debug");
            tracing::warn!(target: "vigil_gateway::sfu", "own-warn");
            tracing::warn!(target: "rtc_dtls::config", "dtls-server-name");
            tracing::warn!(target: "rtc::peer_connection::handler", "refused-datagram");
            tracing::warn!(target: "rtc_ice::agent", "discarded-stun");
            tracing::error!(target: "rtc_ice::agent", "ice-error");
            tracing::warn!(target: "rtc::peer_connection::sdp", "sdp-warn");
            tracing::info!(target: "rtc_ice::agent", "ice-info");
            tracing::debug!(target: "rtc_srtp", "rtc-debug");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn routine_media_warnings_show_only_at_debug() {
        assert_eq!(
            shown(LevelFilter::INFO),
            "own-info own-warn ice-error sdp-warn"
        );
        assert_eq!(shown(LevelFilter::WARN), "own-warn ice-error sdp-warn");
        assert_eq!(shown(LevelFilter::ERROR), "ice-error");
        assert_eq!(
            shown(LevelFilter::DEBUG),
            "own-info own-debug own-warn dtls-server-name refused-datagram \
             discarded-stun ice-error sdp-warn ice-info"
        );
        assert!(shown(LevelFilter::TRACE).ends_with("ice-info rtc-debug"));
        assert_eq!(shown(LevelFilter::OFF), "");
    }
}
