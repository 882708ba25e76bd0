//! A test OTLP collector: the OpenTelemetry Collector's gRPC trace and
//! metrics services (from the OpenTelemetry protocol definitions), keeping
//! what they receive for a test to read. `tests/tests/otlp_export.rs` uses
//! it; `cargo run -p vigil-tests --example otlp_sink` runs it alone (the
//! benchmark's `--otlp-endpoint` target, docs/performance.md).

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use opentelemetry_proto::tonic::trace::v1::Span;

/// A metric's name and its data points' values, from one export.
pub type MetricPoints = (String, Vec<f64>);

/// What the collector received.
#[derive(Clone, Default)]
pub struct Collector {
    /// Spans, in the order they came.
    pub spans: Arc<Mutex<Vec<Span>>>,
    /// Each metric's name and its data points' values (sums and gauges).
    pub metrics: Arc<Mutex<Vec<MetricPoints>>>,
    /// Each export's resource attributes.
    pub resources: Arc<Mutex<Vec<Vec<KeyValue>>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            if let Some(r) = resource.resource {
                self.resources.lock().unwrap().push(r.attributes);
            }
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut metrics = self.metrics.lock().unwrap();
        for resource in request.into_inner().resource_metrics {
            for scope in resource.scope_metrics {
                for metric in scope.metrics {
                    let points = match &metric.data {
                        Some(Data::Sum(sum)) => sum.data_points.clone(),
                        Some(Data::Gauge(gauge)) => gauge.data_points.clone(),
                        _ => Vec::new(),
                    };
                    let values = points
                        .iter()
                        .filter_map(|p| match p.value {
                            Some(number_data_point::Value::AsInt(v)) => Some(v as f64),
                            Some(number_data_point::Value::AsDouble(v)) => Some(v),
                            None => None,
                        })
                        .collect();
                    metrics.push((metric.name.clone(), values));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

impl Collector {
    /// Serves the collector on an ephemeral loopback port.
    pub async fn start(&self) -> std::net::SocketAddr {
        self.start_on("127.0.0.1:0").await
    }

    /// Serves the collector on `addr`.
    pub async fn start_on(&self, addr: &str) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let server = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        addr
    }

    /// The spans received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }
}
