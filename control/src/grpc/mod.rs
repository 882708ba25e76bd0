//! The thin gRPC layer over [`Control`]: each RPC checks the credential,
//! parses the request into domain values, makes one domain call, and
//! converts the result. [`ControlError`] becomes a `tonic::Status` in
//! exactly one place (`From` below).
//!
//! One port serves gRPC, gRPC-web (for the browser console) and the
//! standard health and reflection services.

mod convert;
mod events;
pub mod observe;
mod rooms;
mod tokens;

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::service::Routes;
use tonic::transport::server::Connected;
use tonic::{Code, Request, Status};
use tonic_health::ServingStatus;
use tower::Layer;
use vigil_proto::v1::event_service_server::EventServiceServer;
use vigil_proto::v1::room_service_server::RoomServiceServer;
use vigil_proto::v1::token_service_server::TokenServiceServer;

use crate::core::{Control, ControlError};

impl From<ControlError> for Status {
    fn from(e: ControlError) -> Self {
        let code = match &e {
            ControlError::InvalidArgument(_) => Code::InvalidArgument,
            ControlError::Unauthenticated(_) => Code::Unauthenticated,
            ControlError::PermissionDenied(_) => Code::PermissionDenied,
            ControlError::NotFound(_) => Code::NotFound,
            ControlError::AlreadyExists(_) => Code::AlreadyExists,
            ControlError::RoomFull { .. } => Code::ResourceExhausted,
            ControlError::FailedPrecondition(_) => Code::FailedPrecondition,
            // Redis away: the client may retry; anything else is a fault.
            ControlError::Store(crate::store::StoreError::Unavailable(_)) => Code::Unavailable,
            ControlError::Store(_) => Code::Internal,
            ControlError::Unavailable => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

/// The bearer credential of a request (`authorization: Bearer <value>`).
fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
}

/// The control services (rooms, tokens, events) as one router: the gRPC
/// port serves it, and so does the HTTP port as gRPC-web for the console.
/// Watch streams end when `stop` turns true.
fn control_routes(control: Control, stop: watch::Receiver<bool>) -> Routes {
    Routes::new(RoomServiceServer::new(rooms::Rooms::new(control.clone())))
        .add_service(TokenServiceServer::new(tokens::Tokens::new(
            control.clone(),
        )))
        .add_service(EventServiceServer::new(events::Events::new(control, stop)))
}

/// gRPC-web (binary and text) over HTTP/1.1, for the console: the HTTP port
/// serves it under `/vigil.v1.*`, on the page's own origin, so no CORS.
pub type WebService = tonic_web::GrpcWebService<observe::Observe<Routes>>;

/// The body of a [`WebService`] response.
pub type WebBody = tonic::body::Body;

/// The control services as gRPC-web; Watch streams end when `stop` turns
/// true. Each call gets a span and goes to `observe`'s metrics.
pub fn web_service(
    control: Control,
    stop: watch::Receiver<bool>,
    observe: observe::ObserveLayer,
) -> WebService {
    tonic_web::GrpcWebLayer::new().layer(observe.layer(control_routes(control, stop).prepare()))
}

/// Serves the control API on the connections `incoming` yields (plain TCP
/// from a listener, or TLS streams the gateway accepted) until `shutdown`
/// resolves. Watch
/// streams end when it does, after the events already published. Health
/// turns NOT_SERVING (every service and the server as a whole, `""`) once
/// `draining` turns true. Each call gets a span and goes to `observe`'s
/// metrics.
pub async fn serve<I, IO, IE>(
    incoming: I,
    control: Control,
    observe: observe::ObserveLayer,
    mut draining: watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    let (health_reporter, health) = tonic_health::server::health_reporter();
    let services = [
        <RoomServiceServer<rooms::Rooms> as tonic::server::NamedService>::NAME,
        <EventServiceServer<events::Events> as tonic::server::NamedService>::NAME,
        <TokenServiceServer<tokens::Tokens> as tonic::server::NamedService>::NAME,
        "",
    ];
    for service in services {
        health_reporter
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    tokio::spawn(async move {
        // A dropped sender (the server went away) drains nothing.
        if draining.wait_for(|draining| *draining).await.is_ok() {
            for service in services {
                health_reporter
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
        }
    });
    // Both versions: grpcurl and most tools ask v1, older ones only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(vigil_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    // The descriptor sets are generated at build time: an error is a bug.
    let reflection_v1 = reflection()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");
    let routes = control_routes(control, stop_rx)
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(observe)
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            // Ends every Watch stream so the server can finish draining.
            let _ = stop_tx.send(true);
        })
        .await
}
