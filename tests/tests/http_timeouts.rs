//! HTTP timeouts over raw TCP against a real gateway: connections that
//! send their request head too slowly (slowloris), idle keep-alive
//! connections and slow bodies are ended, and a normal request is answered
//! meanwhile.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_tests::http_client::request;
use vigil_tests::{base_url, start_server};

/// What the server is configured with in these tests.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Far more than the timeout: how long a test waits for the server to act.
const PATIENCE: Duration = Duration::from_secs(15);

/// Reads until the server closes the connection (EOF or reset); what it
/// sent before, as text. Panics if it is still open after `PATIENCE`.
async fn until_closed(stream: &mut TcpStream, what: &str) -> String {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {PATIENCE:?}"),
            Ok(Ok(0) | Err(_)) => return String::from_utf8_lossy(&received).into_owned(),
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Whether the server has neither sent anything nor closed within `wait`.
async fn still_silent(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1];
    tokio::time::timeout(wait, stream.read(&mut buf))
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_closed_and_others_are_served_meanwhile() {
    let vigil = start_server(|c| c.http_header_timeout = TIMEOUT).await;
    let base = base_url(&vigil);
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(vigil.http_addr).await.expect("connect");
        // A head that never ends.
        stream
            .write_all(b"POST /whip/room/cam HTTP/1.1\r\nHost: vigil\r\n")
            .await
            .expect("partial head");
        slow.push(stream);
    }
    let healthz = request("GET", &format!("{base}/healthz"), &[], Vec::new()).await;
    assert_eq!(healthz.status, 200, "served while 300 heads dawdle");
    let mut fresh = TcpStream::connect(vigil.http_addr).await.expect("connect");
    fresh
        .write_all(b"GET /healthz HTTP/1.1\r\n")
        .await
        .expect("partial head");
    assert!(
        still_silent(&mut fresh, TIMEOUT / 4).await,
        "a slow head is not cut off before its timeout"
    );
    slow.push(fresh);
    for (i, stream) in slow.iter_mut().enumerate() {
        let said = until_closed(stream, &format!("slow connection {i}")).await;
        // hyper closes without a response, or with a 408: never a 2xx.
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 408"),
            "slow connection {i} was answered {said:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let vigil = start_server(|c| c.http_header_timeout = TIMEOUT).await;
    let mut stream = TcpStream::connect(vigil.http_addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: vigil\r\n\r\n")
        .await
        .expect("request");
    let said = until_closed(&mut stream, "idle keep-alive connection").await;
    assert!(
        said.starts_with("HTTP/1.1 200"),
        "answered before the idle close: {said:?}"
    );
    assert!(
        !said.to_ascii_lowercase().contains("connection: close"),
        "kept alive at first, closed only once idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_gets_408() {
    let vigil = start_server(|c| c.http_body_timeout = TIMEOUT).await;
    let mut stream = TcpStream::connect(vigil.http_addr).await.expect("connect");
    stream
        .write_all(
            b"POST /whip/room/cam HTTP/1.1\r\nHost: vigil\r\n\
              Content-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv=0\r\n",
        )
        .await
        .expect("head and the start of a body");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("an answer before the test's patience ends")
        .expect("read");
    let said = String::from_utf8_lossy(&buf[..n]);
    assert!(said.starts_with("HTTP/1.1 408"), "got {said:?}");
    assert!(
        said.contains("application/problem+json"),
        "a problem body: {said:?}"
    );
}

/// The per-address connection cap: past it, a new connection from that
/// address is closed at once, while another address is served; a slot
/// comes back when one of the address's connections closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_per_address_cap_are_closed_at_once() {
    let vigil = start_server(|c| {
        c.http_header_timeout = PATIENCE;
        c.limits.max_connections_per_address = 20;
    })
    .await;
    let from = |last: u8| async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket
            .bind(std::net::SocketAddr::from(([127, 0, 0, last], 0)))
            .unwrap();
        socket.connect(vigil.http_addr).await.expect("connect")
    };
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut stream = from(3).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(stream);
    }
    // The 21st from 127.0.0.3: closed without an answer, long before any timeout.
    let mut over = from(3).await;
    let _ = over
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: v\r\n\r\n")
        .await;
    let started = std::time::Instant::now();
    let said = until_closed(&mut over, "the connection over the cap").await;
    assert!(said.is_empty(), "answered {said:?}");
    assert!(started.elapsed() < TIMEOUT, "closed at once");
    // Another address is served meanwhile.
    let mut other = from(2).await;
    other
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    assert!(
        until_closed(&mut other, "127.0.0.2")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // One closed: the address may connect again.
    drop(held.pop());
    let served = vigil_tests::eventually(PATIENCE, "a slot back", || async {
        let mut again = from(3).await;
        again
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: v\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let said = until_closed(&mut again, "127.0.0.3 again").await;
        said.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    let () = served;
    vigil.shutdown().await;
}
