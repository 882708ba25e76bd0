//! gRPC calls into the metrics: the control plane's call observer
//! ([`vigil_control::grpc::observe`]) reports to [`Telemetry`].

use std::time::Duration;

use vigil_control::grpc::observe::CallMetrics;

use super::Telemetry;

impl CallMetrics for Telemetry {
    fn call_ended(&self, method: &str, code: tonic::Code, took: Duration) {
        self.instruments
            .grpc_request(method, code_label(code), took);
    }
}

/// A status code as gRPC's documentation spells it (`NOT_FOUND`).
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
