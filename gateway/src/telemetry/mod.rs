//! Observability: metrics (Prometheus `/metrics`, OTLP) and traces (OTLP).
//!
//! - [`Telemetry`] is one running Vigil's meter provider and its
//!   instruments ([`metrics`]). `/metrics` always works; with an OTLP
//!   endpoint the same instruments are also pushed every
//!   [`OTLP_METRICS_INTERVAL`].
//! - Spans are `tracing` spans (HTTP requests, gRPC calls, sessions; see
//!   [`spans`]). They go to OTLP only when the binary installs
//!   [`otlp_tracer`]'s layer (`--otlp-endpoint`); without it no span is
//!   exported and nothing but `tracing`'s own bookkeeping is spent.
//!
//! docs/operations.md ("Metrics and traces") lists every metric and span.

pub mod grpc;
pub mod metrics;
pub mod spans;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::sfu::Sfu;
pub use metrics::Instruments;

/// How often metrics are pushed to the OTLP endpoint.
pub const OTLP_METRICS_INTERVAL: Duration = Duration::from_secs(10);

/// Telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter refused the endpoint.
    #[error("OTLP endpoint {endpoint:?}: {reason}")]
    Otlp {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The Prometheus exporter could not be built.
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
}

impl TelemetryError {
    fn otlp(endpoint: &str, e: impl std::fmt::Display) -> TelemetryError {
        TelemetryError::Otlp {
            endpoint: endpoint.to_owned(),
            reason: e.to_string(),
        }
    }
}

/// The resource every signal carries: `service.name` (`vigil` unless
/// `OTEL_SERVICE_NAME` says otherwise), `service.version`, and what
/// `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource() -> Resource {
    let builder = Resource::builder();
    let builder = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder
    } else {
        builder.with_service_name("vigil")
    };
    builder
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build()
}

/// One running Vigil's metrics.
pub struct Telemetry {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    sample: Arc<Mutex<(crate::sfu::Stats, crate::sfu::Totals)>>,
    sfu: Sfu,
    /// What is counted as it happens (requests, alarms).
    pub instruments: Instruments,
}

impl Telemetry {
    /// Sets up the meter provider for `sfu`: the Prometheus exporter, and
    /// an OTLP one when `otlp_endpoint` is given. Must run in a Tokio
    /// runtime (the OTLP client lives there), and samples the room owner
    /// every [`metrics::SAMPLE_INTERVAL`] until the SFU stops.
    pub fn start(sfu: &Sfu, otlp_endpoint: Option<&str>) -> Result<Arc<Telemetry>, TelemetryError> {
        let registry = prometheus::Registry::new();
        let prometheus = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            // Names carry their units already (`_seconds`, `_bytes`).
            .without_units()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| TelemetryError::Prometheus(e.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_resource(resource())
            .with_reader(prometheus);
        if let Some(endpoint) = otlp_endpoint {
            let exporter = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| TelemetryError::otlp(endpoint, e))?;
            builder = builder.with_reader(
                PeriodicReader::builder(exporter)
                    .with_interval(OTLP_METRICS_INTERVAL)
                    .build(),
            );
        }
        let provider = builder.build();
        let sample = Arc::default();
        let instruments = metrics::register(&provider, sfu, &sample);
        let telemetry = Arc::new(Telemetry {
            provider,
            registry,
            sample,
            sfu: sfu.clone(),
            instruments,
        });
        let sampler = Arc::downgrade(&telemetry);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(metrics::SAMPLE_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(telemetry) = sampler.upgrade() else {
                    return;
                };
                if !telemetry.sample().await {
                    return; // the SFU has stopped
                }
            }
        });
        Ok(telemetry)
    }

    /// Samples the room owner's counts; `false` once it has stopped.
    pub async fn sample(&self) -> bool {
        match self.sfu.metrics().await {
            Ok(now) => {
                *self.sample.lock().unwrap_or_else(|e| e.into_inner()) = now;
                true
            }
            Err(_) => false,
        }
    }

    /// Every metric in Prometheus' text exposition format (0.0.4), sampled
    /// now.
    pub async fn prometheus_text(&self) -> String {
        self.sample().await;
        let families = self.registry.gather();
        let mut text = String::new();
        if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&families, &mut text) {
            tracing::warn!("encoding metrics: {e}");
        }
        text
    }

    /// Pushes what is left to the OTLP endpoint, if any, and stops.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("metrics shutdown: {e}");
        }
    }
}

/// Counts the alarms the control plane raises, from its event feed, until
/// the feed ends (shutdown).
pub fn count_alarms(telemetry: &Arc<Telemetry>, control: &vigil_control::Control) {
    use vigil_control::alarms::AlarmKind;
    use vigil_control::event::{Alarm, EventKind};
    let mut live = control.watch(None).live;
    let telemetry = Arc::downgrade(telemetry);
    tokio::spawn(async move {
        loop {
            let event = match live.recv().await {
                Ok(event) => event,
                // Counting is best effort: a burst past the feed's buffer
                // loses counts, not the alarms.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            let EventKind::AlarmRaised { alarm, .. } = event.kind else {
                continue;
            };
            let Some(telemetry) = telemetry.upgrade() else {
                return;
            };
            telemetry.instruments.alarm_raised(match alarm {
                Alarm::Stream(AlarmKind::Stalled) => "stalled",
                Alarm::Stream(AlarmKind::LowBitrate) => "low_bitrate",
                Alarm::Stream(AlarmKind::KeyframeInterval) => "keyframe_interval",
                Alarm::RoomFull => "room_full",
                Alarm::CameraOffline => "camera_offline",
            });
        }
    });
}

/// The OTLP span exporter for `endpoint`, batched; the binary hands it to
/// the log subscriber ([`crate::logging::init`]) as a `tracing` layer.
/// Must run in a Tokio runtime.
pub fn otlp_tracer(endpoint: &str) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| TelemetryError::otlp(endpoint, e))?;
    Ok(SdkTracerProvider::builder()
        .with_resource(resource())
        .with_batch_exporter(exporter)
        .build())
}
