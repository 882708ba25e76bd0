//! TLS served by Vigil itself (issue 14): WHIP and WHEP over `https://`
//! with real peers, the control API over gRPC with TLS, the certificate
//! replaced while serving (SIGHUP's path and the file watcher), and the
//! HTTP→HTTPS redirect port.
//!
//! Every client here trusts only the CA the test was given (Vigil's own
//! self-signed CA, or certificates the test made), so a passing handshake
//! means the chain really verified for `127.0.0.1`.

use std::path::Path;
use std::time::Duration;

use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use vigil_gateway::tls::{self, TlsSource};
use vigil_proto::v1 as pb;
use vigil_proto::v1::room_service_client::RoomServiceClient;
use vigil_tests::http_client::{self, request, try_request};
use vigil_tests::peers::{Publisher, Viewer, assert_continuous_from_keyframe};
use vigil_tests::{TempDir, eventually, start_server};

/// A gRPC channel over TLS trusting `ca_pem`.
async fn tls_channel(addr: std::net::SocketAddr, ca_pem: &[u8]) -> Channel {
    Channel::from_shared(format!("https://{addr}"))
        .expect("gRPC URI")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)))
        .expect("TLS config")
        .connect()
        .await
        .expect("connect to gRPC over TLS")
}

/// The leaf certificate the server presents to a new connection, and the
/// ALPN protocol it picked.
async fn presented(addr: std::net::SocketAddr, alpn: &[&[u8]]) -> (String, Option<Vec<u8>>) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The test client's trust: every CA given to `trust`.
    let config = http_client::tls_client_config(alpn);
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tls = connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS handshake with a trusted chain");
    let session = tls.get_ref().1;
    let leaf = session.peer_certificates().expect("a certificate")[0].clone();
    (
        tls::fingerprint(&leaf),
        session.alpn_protocol().map(<[u8]>::to_vec),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_whep_and_grpc_over_tls_with_the_self_signed_ca() {
    let data = TempDir::new("tls-self-signed");
    let vigil = start_server(|config| {
        config.data_dir = Some(data.path().to_owned());
        config.tls = Some(TlsSource::SelfSigned { names: Vec::new() });
        config.http_redirect_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let setup = vigil.tls.clone().expect("TLS is on");
    let made = setup.self_signed.clone().expect("self-signed");
    assert!(
        made.names.iter().any(|n| n == "127.0.0.1"),
        "{:?}",
        made.names
    );
    http_client::trust(&made.ca_der);
    let base = format!("https://{}", vigil.http_addr);

    // Media over a WHIP/WHEP exchange that went through TLS.
    let mut publisher = Publisher::connect(&base, "site-1", "cam-1").await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "site-1", "cam-1")
        .await
        .expect("WHEP 201 over https");
    viewer.peer.wait_connected().await;
    viewer.wait_keyframes(2).await;
    eventually(Duration::from_secs(10), "100 video packets", || async {
        (viewer.video().len() >= 100).then_some(())
    })
    .await;
    publisher.stop_media();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = publisher.sent.lock().unwrap().video.clone();
    let compared = assert_continuous_from_keyframe(&viewer.video(), &sent);
    assert!(compared > 50, "compared only {compared} packets");

    // The HTTP port speaks HTTP/1.1 over TLS, and nothing in the clear: a
    // plain request gets no HTTP answer, and disturbs nothing.
    let (fingerprint, alpn) = presented(vigil.http_addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(fingerprint, setup.certificates.fingerprint());
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let plain = try_request(
        "GET",
        &format!("http://{}/healthz", vigil.http_addr),
        &[],
        "",
    )
    .await;
    assert!(
        plain.as_ref().map_or(true, |r| r.status != 200),
        "plain HTTP on the TLS port: {plain:?}"
    );
    assert_eq!(
        request("GET", &format!("{base}/healthz"), &[], "")
            .await
            .status,
        200
    );

    // Devices fetch the CA to install it.
    let ca = request("GET", &format!("{base}/ca.crt"), &[], "").await;
    assert_eq!(ca.status, 200);
    assert_eq!(
        ca.header("content-type"),
        Some("application/x-x509-ca-cert")
    );
    let ca_bytes = http_client::request_bytes(&format!("{base}/ca.crt")).await;
    assert_eq!(ca_bytes, made.ca_der);

    // gRPC over TLS (h2 by ALPN), trusting the CA file the server printed.
    let (_, alpn) = presented(vigil.grpc_addr, &[b"h2", b"http/1.1"]).await;
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let ca_pem = std::fs::read(&made.ca).expect("ca.pem");
    let mut rooms = RoomServiceClient::new(tls_channel(vigil.grpc_addr, &ca_pem).await);
    let listed = rooms
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .expect("ListRooms over TLS")
        .into_inner();
    assert!(
        listed.rooms.iter().any(|room| room.name == "site-1"),
        "{listed:?}"
    );
    // Plaintext gRPC to the TLS port fails.
    let plaintext = Channel::from_shared(format!("http://{}", vigil.grpc_addr))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let refused = RoomServiceClient::new(channel)
            .list_rooms(pb::ListRoomsRequest::default())
            .await;
        assert!(refused.is_err(), "plaintext gRPC on the TLS port answered");
    }

    // The redirect port points at the same path over https.
    let redirect = vigil.redirect_addr.expect("redirect port");
    let moved = request(
        "POST",
        &format!("http://{redirect}/whip/site-1/cam-2?x=1"),
        &[],
        "",
    )
    .await;
    assert_eq!(moved.status, 308);
    assert_eq!(
        moved.header("location"),
        Some(
            format!(
                "https://127.0.0.1:{}/whip/site-1/cam-2?x=1",
                vigil.http_addr.port()
            )
            .as_str()
        )
    );

    // Restarting keeps the CA (devices trust it once) and the certificate.
    vigil.shutdown().await;
    let again = vigil_gateway::tls::self_signed::ensure(data.path(), &made.names).unwrap();
    assert_eq!(again.ca_fingerprint, made.ca_fingerprint);
    assert_eq!(again.made, vigil_gateway::tls::self_signed::Made::Nothing);
}

/// Writes a fresh CA-signed certificate for 127.0.0.1 to `cert`/`key`
/// (by making one in a scratch data directory), trusts its CA, and
/// returns the leaf's fingerprint.
fn issue_to(scratch: &Path, cert: &Path, key: &Path) -> String {
    let made = vigil_gateway::tls::self_signed::ensure(scratch, &["127.0.0.1".to_owned()]).unwrap();
    http_client::trust(&made.ca_der);
    // Key first: a watcher that looks in between sees a mismatch, keeps the
    // old pair, and takes the new one at its next look.
    std::fs::copy(&made.key, key).unwrap();
    std::fs::copy(&made.cert, cert).unwrap();
    tls::Certificates::load(cert, key).unwrap().fingerprint()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_is_served_without_a_restart() {
    let dir = TempDir::new("tls-files");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let first = issue_to(&dir.path().join("one"), &cert, &key);
    let vigil = start_server(|config| {
        config.tls = Some(TlsSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        });
    })
    .await;
    assert_eq!(presented(vigil.http_addr, &[]).await.0, first);
    let base = format!("https://{}", vigil.http_addr);
    let viewer_before = request("GET", &format!("{base}/healthz"), &[], "").await;
    assert_eq!(viewer_before.status, 200);

    // SIGHUP's path: reload now.
    let second = issue_to(&dir.path().join("two"), &cert, &key);
    assert_ne!(first, second);
    vigil.reload_tls().expect("TLS on").expect("reload");
    assert_eq!(presented(vigil.http_addr, &[]).await.0, second);
    assert_eq!(presented(vigil.grpc_addr, &[b"h2"]).await.0, second);

    // A broken file is refused and the served certificate stays.
    std::fs::write(
        &cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(vigil.reload_tls().expect("TLS on").is_err());
    assert_eq!(presented(vigil.http_addr, &[]).await.0, second);

    // The watcher: files replaced in place (certbot, cert-manager) are
    // picked up without a signal.
    let third = issue_to(&dir.path().join("three"), &cert, &key);
    let limit = tls::WATCH_INTERVAL * 3;
    eventually(limit, "the watcher serves the new certificate", || async {
        (presented(vigil.http_addr, &[]).await.0 == third).then_some(())
    })
    .await;
    vigil.shutdown().await;
}
