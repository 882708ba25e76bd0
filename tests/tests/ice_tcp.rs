//! ICE over TCP (RFC 6544, RFC 4571 framing): peers without any UDP
//! socket, as on a network that blocks UDP, publish and play through the
//! media shards' TCP listeners. Every candidate is on 127.0.0.1.

use std::time::Duration;

use vigil_tests::http_client::HttpResponse;
use vigil_tests::peers::{ClientNetwork, viewer_peer_on};
use vigil_tests::peers::{
    Publisher, Viewer, assert_continuous_from_keyframe, tcp_passive_candidates,
};
use vigil_tests::{base_url, start_server};

/// `candidate:` lines of `sdp` for component 1 (RTP; rtc repeats each
/// for component 2) whose transport is `transport`.
fn candidates<'a>(sdp: &'a str, transport: &str) -> Vec<&'a str> {
    sdp.lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .filter(|l| l.split(' ').nth(1) == Some("1"))
        .filter(|l| {
            l.split(' ')
                .nth(2)
                .is_some_and(|t| t.eq_ignore_ascii_case(transport))
        })
        .collect()
}

/// A candidate line's (priority, address, port).
fn priority_and_address(line: &str) -> (u32, String, u16) {
    let fields: Vec<&str> = line.split(' ').collect();
    (
        fields[3].parse().expect("priority"),
        fields[4].to_owned(),
        fields[5].trim().parse().expect("port"),
    )
}

/// Waits for `viewer` to connect and get two keyframes and 100 packets,
/// stops `publisher`, and checks that every packet from the viewer's
/// first keyframe on arrived in order; returns how many were compared.
async fn plays_from_a_keyframe(publisher: &mut Publisher, viewer: &Viewer) -> usize {
    viewer.peer.wait_connected().await;
    viewer.wait_keyframes(2).await;
    vigil_tests::eventually(Duration::from_secs(10), "100 video packets", || async {
        (viewer.video().len() >= 100).then_some(())
    })
    .await;
    publisher.stop_media();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = publisher.sent.lock().expect("sent").video.clone();
    let compared = assert_continuous_from_keyframe(&viewer.video(), &sent);
    assert!(compared > 80, "compared only {compared} packets");
    compared
}

/// A WHEP viewer with no UDP socket playing `room`/`stream`, and the 201.
async fn tcp_only_viewer(base: &str, room: &str, stream: &str) -> (Viewer, HttpResponse) {
    let peer = viewer_peer_on(ClientNetwork::TcpOnly).await;
    let url = format!("{base}/whep/{room}/{stream}");
    Viewer::play(
        base,
        &url,
        peer,
        &[("content-type", "application/sdp")],
        |o| o,
    )
    .await
    .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_can_only_use_tcp_plays() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "site-1", "gate").await;
    publisher.start_media();

    let (viewer, response) = tcp_only_viewer(&base, "site-1", "gate").await;
    let offer = viewer.peer.pc.local_description().await.expect("offer").sdp;
    assert!(
        candidates(&offer, "udp").is_empty(),
        "no UDP at the viewer: {offer}"
    );
    assert!(
        !candidates(&offer, "tcp").is_empty(),
        "TCP at the viewer: {offer}"
    );

    // The answer offers the TCP candidate beside the UDP one: same address
    // and port, lower priority (RFC 6544 §4.2).
    let udp = candidates(&response.body, "udp");
    let tcp = candidates(&response.body, "tcp");
    assert_eq!(
        tcp_passive_candidates(&response.body).len(),
        2,
        "passive, both components"
    );
    assert_eq!((udp.len(), tcp.len()), (1, 1), "{}", response.body);
    let (udp_priority, udp_ip, udp_port) = priority_and_address(udp[0]);
    let (tcp_priority, tcp_ip, tcp_port) = priority_and_address(tcp[0]);
    assert_eq!((tcp_ip, tcp_port), (udp_ip, udp_port));
    assert!(
        tcp_priority < udp_priority,
        "{tcp_priority} < {udp_priority}"
    );

    let compared = plays_from_a_keyframe(&mut publisher, &viewer).await;
    assert!(viewer.audio_count() > 20, "audio: {}", viewer.audio_count());
    let (frames_in, frames_out) = vigil.sfu.ice_tcp_frames();
    assert!(
        frames_out as usize > compared && frames_in > 0,
        "the media went over TCP: {frames_in} frames in, {frames_out} out"
    );
    assert_eq!(
        vigil.sfu.ice_tcp_connections(),
        1,
        "one connection per session"
    );
    // Ending the session releases its TCP connection.
    assert_eq!(viewer.delete().await, 200);
    vigil_tests::eventually(
        Duration::from_secs(5),
        "the TCP connection closed",
        || async { (vigil.sfu.ice_tcp_connections() == 0).then_some(()) },
    )
    .await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_can_only_use_tcp_reaches_udp_viewers() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect_over_tcp(&base, "site-1", "van").await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "site-1", "van")
        .await
        .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
    let compared = plays_from_a_keyframe(&mut publisher, &viewer).await;
    let (frames_in, _) = vigil.sfu.ice_tcp_frames();
    assert!(
        frames_in as usize > compared,
        "{frames_in} frames in over TCP"
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ice_tcp_the_answer_offers_udp_only_and_tcp_peers_fail() {
    let vigil = start_server(|config| config.ice_tcp = false).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "site-1", "gate").await;
    publisher.start_media();
    let (viewer, response) = tcp_only_viewer(&base, "site-1", "gate").await;
    assert!(
        candidates(&response.body, "tcp").is_empty(),
        "{}",
        response.body
    );
    assert_eq!(candidates(&response.body, "udp").len(), 1);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(viewer.video().is_empty(), "no path, no media");
    assert_eq!(vigil.sfu.ice_tcp_frames(), (0, 0));
    vigil.shutdown().await;
}

/// Reads from `stream` until it is closed; panics if that takes `limit`.
async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1500];
    tokio::time::timeout(limit, async {
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await
    .expect("the server closes the connection");
}

/// An RFC 4571 frame holding a Binding request for the server ufrag
/// `server_ufrag`.
fn framed_check(server_ufrag: &str) -> Vec<u8> {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
    use rtc::stun::textattrs::TextAttribute;
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(TextAttribute::new(
            ATTR_USERNAME,
            format!("{server_ufrag}:client"),
        )),
    ];
    m.build(&setters).expect("request");
    let mut frame = (m.raw.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&m.raw);
    frame
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_connection_that_serves_no_session_is_closed_and_others_play_on() {
    use tokio::io::AsyncWriteExt;
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "site-1", "gate").await;
    publisher.start_media();
    let (viewer, _) = tcp_only_viewer(&base, "site-1", "gate").await;
    viewer.peer.wait_connected().await;
    viewer.wait_video().await;

    for media in vigil.sfu.media_addrs() {
        // A check for a ufrag no session has.
        let mut stray = tokio::net::TcpStream::connect(media)
            .await
            .expect("connect");
        stray
            .write_all(&framed_check("nosuchsession"))
            .await
            .expect("write");
        closed_within(&mut stray, Duration::from_secs(2)).await;
        // Media-looking bytes before any check.
        let mut early = tokio::net::TcpStream::connect(media)
            .await
            .expect("connect");
        early
            .write_all(&[0, 4, 0x80, 0x60, 0, 1])
            .await
            .expect("write");
        closed_within(&mut early, Duration::from_secs(2)).await;
    }

    let before = viewer.video().len();
    vigil_tests::eventually(Duration::from_secs(5), "more video over TCP", || async {
        (viewer.video().len() > before + 30).then_some(())
    })
    .await;
    vigil.shutdown().await;
}
