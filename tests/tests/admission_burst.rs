//! A flood of offers that never connect, from one client address, against
//! the real binary with its default admission limits (issue 14): the
//! flood is capped (429 with `Retry-After`), a real viewer from another
//! address joins at once and plays, the log stays small, and once the
//! connect deadline has reaped the flood's sessions the server is back
//! near its baseline (file descriptors, memory) and the flooding address
//! may open sessions again, which shows every slot was given back.
//!
//! Addresses: the server and the real peers use 127.0.0.1; the flood comes
//! from 127.0.0.3 (all of 127.0.0.0/8 is this machine), as an attacker
//! elsewhere on the network would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::process::VigilProcess;

/// An offer that negotiates fine and then never connects: its ICE
/// credentials and fingerprint belong to no peer.
const OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:1111 cname:x\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n\
a=fingerprint:sha-256 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99\r\n\
a=setup:actpass\r\na=mid:1\r\na=sendonly\r\na=rtcp-mux\r\na=rtpmap:96 H264/90000\r\n\
a=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
a=fmtp:96 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
a=ssrc:2222 cname:x\r\n";

/// Where the flood comes from.
const ATTACKER: [u8; 4] = [127, 0, 0, 3];

/// POSTs the junk offer to `path` from [`ATTACKER`]; the status code and
/// whether a `Retry-After` came with it.
async fn junk_post(server: SocketAddr, path: &str) -> (u16, bool) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((ATTACKER, 0)))
        .expect("bind 127.0.0.3");
    let mut tcp = socket.connect(server).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{OFFER}",
        OFFER.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).to_ascii_lowercase();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text.contains("\r\nretry-after:"))
}

/// `count` junk POSTs, 16 at a time; how many got each status, and how
/// many refusals lacked `Retry-After`.
async fn flood(server: SocketAddr, round: &str, count: usize) -> (Vec<(u16, usize)>, usize) {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let next = next.clone();
        let round = round.to_owned();
        workers.spawn(async move {
            let mut seen = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return seen;
                }
                seen.push(junk_post(server, &format!("/whip/{round}/s{i}")).await);
            }
        });
    }
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut without_retry_after = 0;
    while let Some(seen) = workers.join_next().await {
        for (status, retry_after) in seen.unwrap() {
            *statuses.entry(status).or_default() += 1;
            if (status == 429 || status == 503) && !retry_after {
                without_retry_after += 1;
            }
        }
    }
    (statuses.into_iter().collect(), without_retry_after)
}

fn count_of(statuses: &[(u16, usize)], status: u16) -> usize {
    statuses
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(0, |(_, n)| *n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_never_connecting_offers_is_capped_and_leaves_nothing_behind() {
    // Defaults but the deadline, so the test need not wait 10 s for it.
    let connect_timeout = Duration::from_secs(3);
    let vigil = VigilProcess::start(&["--connect-timeout-secs", "3"]).await;
    let base = vigil.base_url();
    let mut publisher = Publisher::connect(&base, "site", "cam").await;
    publisher.start_media();
    publisher.peer.wait_connected().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds_before, rss_before, log_before) =
        (vigil.open_fds(), vigil.rss_kb(), vigil.log_bytes());

    let started = Instant::now();
    let (statuses, without_retry_after) = flood(vigil.http, "flood", 1_000).await;
    let took = started.elapsed();
    let created = count_of(&statuses, 201);
    let refused = count_of(&statuses, 429) + count_of(&statuses, 503);
    eprintln!("flood of 1000 in {took:?}: {statuses:?}");
    assert_eq!(
        created + refused,
        1_000,
        "only 201, 429 or 503: {statuses:?}"
    );
    // The default pending cap (50 unconnected per address) bounds what
    // the flood holds; every refusal says when to come back.
    assert!(
        created <= 50,
        "{created} never-connecting sessions admitted"
    );
    assert!(refused >= 900, "{statuses:?}");
    assert_eq!(without_retry_after, 0, "refusals without Retry-After");

    // A real viewer, from another address, joins at once and plays.
    let joined = Instant::now();
    let viewer = Viewer::connect(&base, "site", "cam")
        .await
        .expect("the real viewer is admitted during the flood");
    viewer.peer.wait_connected().await;
    viewer.wait_keyframes(1).await;
    eprintln!("real viewer playing {:?} after the flood", joined.elapsed());

    let logged = vigil.log_bytes() - log_before;
    eprintln!("log during the flood and the join: {logged} bytes");
    // A line or two per admitted session, none per refusal.
    assert!(logged < 64 * 1024, "the flood logged {logged} bytes");

    // The deadline reaps the flood's sessions; then the attacker's slots
    // are free again: a fresh burst within the bucket is admitted in full.
    tokio::time::sleep(connect_timeout + Duration::from_secs(3)).await;
    let (fds_after, rss_after) = (vigil.open_fds(), vigil.rss_kb());
    eprintln!(
        "baseline: {fds_before} fds, {rss_before} KB; after the deadline: {fds_after} fds, {rss_after} KB"
    );
    assert!(
        fds_after <= fds_before + 8,
        "fds {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after < rss_before + 32 * 1024,
        "RSS {rss_before} KB -> {rss_after} KB"
    );
    let (again, _) = flood(vigil.http, "again", 20).await;
    assert_eq!(count_of(&again, 201), 20, "slots given back: {again:?}");

    // The real viewer played through all of it.
    let before = viewer.video().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(viewer.video().len() > before, "the viewer still receives");
    publisher.stop_media();
}
