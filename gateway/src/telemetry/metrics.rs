//! Vigil's metrics: one OpenTelemetry meter provider, read by the
//! Prometheus exporter (`GET /metrics`) and, with `--otlp-endpoint`, by a
//! periodic OTLP exporter. The same instruments feed both.
//!
//! Nothing here runs per packet. The media shards count forwarded packets,
//! repairs and drops as plain numbers and publish them once a turn
//! ([`crate::engine::io::IoStats`]); the room owner keeps session totals.
//! Observable instruments read both when a reader collects (a scrape, an
//! export). Requests (HTTP, gRPC) and alarms are counted as they happen.
//!
//! Names follow Prometheus' conventions (`vigil_` prefix, base units in the
//! name, `_total` added to counters by the exporter); labels are bounded
//! sets (roles, reasons, routes, gRPC methods and codes, alarm kinds),
//! never a room, stream or session. docs/operations.md lists them all.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter, MeterProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;

use crate::engine::io::IoStats;
use crate::sfu::registry::CloseReason;
use crate::sfu::{ROLES, Sfu, Stats, Totals};

/// How often the room owner's counts are sampled for the observable
/// instruments (a scrape of `/metrics` samples them first as well).
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Buckets for request durations, in seconds: WHIP/WHEP answers take
/// milliseconds, a long-poll or an event stream much longer.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// An instrument's name, description and how to read it.
type Described<F> = (&'static str, &'static str, F);
/// Reads a count of the room owner's.
type FromStats = fn(&Stats) -> usize;
/// Reads a count of a media shard's.
type FromShard = fn(&IoStats) -> u64;

/// The latest sample of the room owner's counts.
type Sample = Arc<Mutex<(Stats, Totals)>>;

/// The instruments recorded as things happen.
pub struct Instruments {
    http_duration: Histogram<f64>,
    grpc_duration: Histogram<f64>,
    alarms_raised: Counter<u64>,
}

impl Instruments {
    /// An HTTP request on `route` answered with `status`.
    pub fn http_request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        self.http_duration.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("route", route),
                KeyValue::new("method", method_label(method)),
                KeyValue::new("status", i64::from(status)),
            ],
        );
    }

    /// A gRPC (or gRPC-web) call to `method` that ended with `code`.
    pub fn grpc_request(&self, method: &str, code: &'static str, took: Duration) {
        self.grpc_duration.record(
            took.as_secs_f64(),
            &[
                KeyValue::new("method", method.to_owned()),
                KeyValue::new("code", code),
            ],
        );
    }

    /// An alarm of `kind` was raised.
    pub fn alarm_raised(&self, kind: &'static str) {
        self.alarms_raised.add(1, &[KeyValue::new("kind", kind)]);
    }
}

/// HTTP methods as a bounded label: the ones Vigil serves, else `other`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "PUT" => "PUT",
        _ => "other",
    }
}

/// Registers every instrument on `provider`'s `vigil` meter. The
/// observable ones read `sample` (the owner's counts) and `sfu`'s shards.
pub(super) fn register(provider: &SdkMeterProvider, sfu: &Sfu, sample: &Sample) -> Instruments {
    let meter = provider.meter("vigil");
    register_sessions(&meter, sample);
    register_media(&meter, sfu);
    Instruments {
        http_duration: meter
            .f64_histogram("vigil_http_request_duration_seconds")
            .with_description(
                "HTTP requests (WHIP, WHEP, sessions, console, health, metrics) by route, method and status, and how long each took to answer",
            )
            .with_unit("s")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build(),
        grpc_duration: meter
            .f64_histogram("vigil_grpc_request_duration_seconds")
            .with_description(
                "gRPC and gRPC-web calls by method and status code, and how long each took (a stream: until it ended)",
            )
            .with_unit("s")
            .with_boundaries(DURATION_BUCKETS.to_vec())
            .build(),
        alarms_raised: meter
            .u64_counter("vigil_alarms_raised")
            .with_description("Alarms raised, by kind")
            .build(),
    }
}

fn register_sessions(meter: &Meter, sample: &Sample) {
    let gauges: [Described<FromStats>; 4] = [
        ("vigil_rooms", "Rooms with at least one stream", |s| s.rooms),
        (
            "vigil_streams",
            "Streams with a publisher or viewers",
            |s| s.streams,
        ),
        (
            "vigil_forwarded_tracks",
            "Published tracks being forwarded",
            |s| s.forwarders,
        ),
        (
            "vigil_subscriptions",
            "Viewer tracks subscribed to a published track",
            |s| s.viewer_writers,
        ),
    ];
    for (name, description, read) in gauges {
        let sample = sample.clone();
        meter
            .u64_observable_gauge(name)
            .with_description(description)
            .with_callback(move |gauge| {
                let (stats, _) = *lock(&sample);
                gauge.observe(read(&stats) as u64, &[]);
            })
            .build();
    }
    let sessions = sample.clone();
    meter
        .u64_observable_gauge("vigil_sessions")
        .with_description("Sessions open now (negotiating or connected), by role")
        .with_callback(move |gauge| {
            let (stats, _) = *lock(&sessions);
            gauge.observe(stats.publishers as u64, &[role(0)]);
            gauge.observe(stats.viewers as u64, &[role(1)]);
        })
        .build();
    let started = sample.clone();
    meter
        .u64_observable_counter("vigil_sessions_started")
        .with_description("Sessions created (WHIP or WHEP answered with 201), by role")
        .with_callback(move |counter| {
            let totals = lock(&started).1.started;
            for (index, count) in totals.into_iter().enumerate() {
                counter.observe(count, &[role(index)]);
            }
        })
        .build();
    let closed = sample.clone();
    meter
        .u64_observable_counter("vigil_sessions_closed")
        .with_description(
            "Sessions ended, by role and reason; ICE and DTLS failures are the reasons ice_failed (a connection that was up, or consent expired) and connect_timeout (ICE or DTLS never came up)",
        )
        .with_callback(move |counter| {
            let totals = lock(&closed).1.closed;
            for (index, by_reason) in totals.iter().enumerate() {
                for (reason, count) in CloseReason::ALL.iter().zip(by_reason) {
                    if *count > 0 {
                        counter.observe(
                            *count,
                            &[role(index), KeyValue::new("reason", reason.label())],
                        );
                    }
                }
            }
        })
        .build();
}

fn register_media(meter: &Meter, sfu: &Sfu) {
    let counters: [Described<FromShard>; 9] = [
        (
            "vigil_forwarded_packets",
            "RTP packets sent to viewers, retransmissions included",
            |s| s.forwarded_packets.load(Relaxed),
        ),
        (
            "vigil_forwarded_bytes",
            "RTP payload bytes sent to viewers",
            |s| s.forwarded_bytes.load(Relaxed),
        ),
        (
            "vigil_relayed_packets",
            "RTP packets handed from a publisher's media thread to another that has viewers of the stream",
            |s| s.relayed.load(Relaxed),
        ),
        (
            "vigil_nacks_received",
            "NACK messages (RTCP generic NACK) received from viewers",
            |s| s.nacks_received.load(Relaxed),
        ),
        (
            "vigil_retransmitted_packets",
            "Packets resent to viewers for their NACKs (on RTX when negotiated)",
            |s| s.retransmitted.load(Relaxed),
        ),
        (
            "vigil_plis_sent",
            "Keyframe requests (PLI) sent to publishers, after coalescing",
            |s| s.plis_sent.load(Relaxed),
        ),
        (
            "vigil_media_datagrams_received",
            "Datagrams received on the media ports (UDP) and frames over ICE-TCP",
            |s| s.datagrams_in.load(Relaxed) + s.tcp_frames_in.load(Relaxed),
        ),
        (
            "vigil_media_datagrams_sent",
            "Datagrams sent on the media ports (UDP) and frames queued over ICE-TCP",
            |s| s.datagrams_out.load(Relaxed) + s.tcp_frames_out.load(Relaxed),
        ),
        (
            "vigil_ice_tcp_connections",
            "ICE-TCP connections accepted",
            |s| s.tcp_accepted.load(Relaxed),
        ),
    ];
    for (name, description, read) in counters {
        let sfu = sfu.clone();
        meter
            .u64_observable_counter(name)
            .with_description(description)
            .with_callback(move |counter| {
                counter.observe(sfu.io_stats().map(read).sum(), &[]);
            })
            .build();
    }
    let sfu = sfu.clone();
    meter
        .u64_observable_counter("vigil_dropped_packets")
        .with_description(
            "Packets for viewers that were lost before the network: queue_full, an ICE-TCP viewer's send queue was full (a slow viewer); send_error, the kernel refused the datagram",
        )
        .with_callback(move |counter| {
            let (full, errors) = sfu.io_stats().fold((0, 0), |(full, errors), s| {
                (
                    full + s.tcp_dropped.load(Relaxed),
                    errors + s.send_errors.load(Relaxed),
                )
            });
            counter.observe(full, &[KeyValue::new("reason", "queue_full")]);
            counter.observe(errors, &[KeyValue::new("reason", "send_error")]);
        })
        .build();
}

fn role(index: usize) -> KeyValue {
    KeyValue::new("role", ROLES[index])
}

fn lock(sample: &Sample) -> std::sync::MutexGuard<'_, (Stats, Totals)> {
    sample.lock().unwrap_or_else(|e| e.into_inner())
}
