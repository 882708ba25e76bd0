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

use crate::config::LogFormat;
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

/// Installs the log subscriber (once, at start): log lines to stderr as
/// `format` says, and, with `tracer` (`--otlp-endpoint`), spans to OTLP.
/// Colours only when stderr is a terminal and `NO_COLOR` is unset: a log
/// file or journal gets plain text.
pub fn init(
    level: LevelFilter,
    format: LogFormat,
    tracer: Option<&opentelemetry_sdk::trace::SdkTracerProvider>,
) {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::filter::FilterExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let lines = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour)
            .boxed(),
        // One object a line; a session's lines carry its span's fields
        // (room, stream, session, participant, role, trace_id).
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    // Vigil's spans at info whatever the log level: `--log-level warn`
    // quiets the log, not the traces. A session's info lines (ICE
    // connected, DTLS up, ...) become events of its span.
    let spans = tracer.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("vigil"))
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("vigil", tracing::Level::INFO),
            )
    });
    let limit = RepeatLimit::new(REPEAT_WINDOW, REPEATS_PER_WINDOW);
    tracing_subscriber::registry()
        .with(lines.with_filter(filter(level).and(limit)))
        .with(spans)
        .init();
}

/// How many warnings or errors one line of code may log per window before
/// the rest of the window's are counted instead of written.
pub const REPEATS_PER_WINDOW: u32 = 10;
/// The window of [`REPEATS_PER_WINDOW`].
pub const REPEAT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps one line of code from flooding the log: a peer that sends garbage
/// many times a second, or a fault that repeats for every packet, would
/// otherwise write a warning each time (issue 14 saw 21 MB from 200
/// sessions). Warnings and errors are counted by where they come from (the
/// file and line, for webrtc-rs's `log` records too); past
/// [`REPEATS_PER_WINDOW`] in a [`REPEAT_WINDOW`] the rest are dropped, and
/// the next one after the window says how many were.
pub struct RepeatLimit {
    window: std::time::Duration,
    per_window: u32,
    seen: std::sync::Mutex<std::collections::HashMap<(String, u32), Repeats>>,
}

struct Repeats {
    since: std::time::Instant,
    written: u32,
    dropped: u64,
}

impl RepeatLimit {
    /// At most `per_window` events per source per `window`.
    pub fn new(window: std::time::Duration, per_window: u32) -> RepeatLimit {
        RepeatLimit {
            window,
            per_window,
            seen: std::sync::Mutex::default(),
        }
    }

    /// Whether an event from `source` at `now` is written; with the count
    /// dropped in the window that just ended, when it is the first after one.
    fn admit(&self, source: (String, u32), now: std::time::Instant) -> (bool, u64) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, r| now.saturating_duration_since(r.since) < window);
        }
        let repeats = seen.entry(source).or_insert(Repeats {
            since: now,
            written: 0,
            dropped: 0,
        });
        let mut dropped_before = 0;
        if now.saturating_duration_since(repeats.since) >= self.window {
            dropped_before = std::mem::take(&mut repeats.dropped);
            repeats.since = now;
            repeats.written = 0;
        }
        if repeats.written < self.per_window {
            repeats.written += 1;
            (true, dropped_before)
        } else {
            repeats.dropped += 1;
            (false, dropped_before)
        }
    }
}

/// A filter of the log lines' layer (after the level filter, so what that
/// leaves out is never counted).
impl<S: tracing::Subscriber> tracing_subscriber::layer::Filter<S> for RepeatLimit {
    fn enabled(
        &self,
        _meta: &tracing::Metadata<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        true
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        _cx: &tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        use tracing_log::NormalizeEvent as _;
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if *meta.level() > tracing::Level::WARN {
            return true;
        }
        let source = (
            format!("{}:{}", meta.target(), meta.file().unwrap_or("?")),
            meta.line().unwrap_or(0),
        );
        let (write, dropped) = self.admit(source, std::time::Instant::now());
        if dropped > 0 {
            // Not through `tracing`: this runs inside its dispatch.
            eprintln!(
                "{} vigil: {dropped} more like the next line ({}, {}:{}) were not logged in the last {} s",
                meta.level(),
                meta.target(),
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0),
                self.window.as_secs()
            );
        }
        write
    }
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
    fn a_repeated_warning_is_written_a_few_times_per_window() {
        let limit = RepeatLimit::new(std::time::Duration::from_secs(10), 3);
        let t0 = std::time::Instant::now();
        let here = || ("rtc_ice:agent.rs".to_owned(), 42);
        let written: Vec<bool> = (0..100).map(|_| limit.admit(here(), t0).0).collect();
        assert_eq!(written.iter().filter(|w| **w).count(), 3);
        // Another source has its own budget.
        assert!(limit.admit(("x".into(), 1), t0).0);
        // Past the window: written again, and told how many were dropped.
        let later = t0 + std::time::Duration::from_secs(11);
        assert_eq!(limit.admit(here(), later), (true, 97));
        assert_eq!(limit.admit(here(), later), (true, 0));
    }

    #[test]
    fn the_limit_applies_to_log_records_and_spares_info() {
        use tracing_subscriber::Layer as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_filter(RepeatLimit::new(std::time::Duration::from_secs(60), 2)),
        );
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..50 {
                tracing::warn!(target: "rtc::peer_connection::handler", "refused-datagram");
                tracing::info!(target: "vigil_gateway::sfu", "own-info");
            }
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("refused-datagram").count(), 2);
        assert_eq!(text.matches("own-info").count(), 50);
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
