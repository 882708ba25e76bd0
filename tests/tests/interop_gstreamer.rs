//! Interop with GStreamer 1.22 webrtcbin through meetecho's
//! simple-whip-client (Debian package `simple-whip-client`, binary
//! `whip-client`; ../shared/reference/whip-whep.md §2.6).
//!
//! Each test runs in a private network namespace ([`netns::run`]): libnice
//! gathers no loopback candidates, so the client finds its host candidate on
//! [`netns::CLIENT_IP`] and Vigil's ICE is bound to [`netns::SERVER_IP`].
//! The client publishes live test sources (x264 or VP8, and Opus); a
//! webrtc-rs WHEP viewer checks what actually arrives.
//!
//! The client's HTTP goes through a transparent recording proxy in front of
//! Vigil, so the tests can assert on the exchanges themselves (trickle
//! PATCHes answered 204, `If-Match` on PATCH and DELETE, the DELETE on
//! SIGINT answered 200) and not on the client's log lines, which only warn.
//! Server-side effects are asserted through `Sfu::stats` and gRPC.
//!
//! As Debian bookworm installs it, the client aborts as soon as webrtcbin
//! loads libnice (libsoup 2 and 3 in one process); the tests run it with a
//! small preloaded shim that turns off libnice's UPnP instead, see
//! [`SOUP_SHIM_SOURCE`].
//!
//! The tests run one at a time: each encodes live video on a two-core CI
//! machine, and they are timing-sensitive enough not to share it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::process::Command;
use tokio::sync::watch;
use vigil_gateway::Vigil;
use vigil_gateway::config::IceServer;
use vigil_gateway::sfu::keyframe::VideoCodec;
use vigil_proto::v1 as pb;
use vigil_tests::control::{Scene, publish_and_subscribe, subscribe_only};
use vigil_tests::http_client::request;
use vigil_tests::netns::{self, CLIENT_IP, SERVER_IP};
use vigil_tests::peers::Viewer;
use vigil_tests::{base_url, http_client::HttpResponse};

/// The Debian package's binary.
const PROGRAM: &str = "whip-client";
const INSTALL_HINT: &str = "install the Debian packages simple-whip-client gstreamer1.0-tools \
     gstreamer1.0-nice gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
     gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly";

/// H264 Constrained Baseline from x264, SPS/PPS before every IDR, a
/// keyframe every second. Small frames keep two CPU cores free enough.
const H264_VIDEO: &str = "videotestsrc is-live=true pattern=ball \
     ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue \
     ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 \
     ! video/x-h264,profile=constrained-baseline \
     ! rtph264pay config-interval=-1 pt=96 \
     ! application/x-rtp,media=video,encoding-name=H264,payload=96";
/// VP8 from libvpx in real-time mode, a keyframe every second.
const VP8_VIDEO: &str = "videotestsrc is-live=true pattern=ball \
     ! video/x-raw,width=320,height=240,framerate=30/1 ! videoconvert ! queue \
     ! vp8enc deadline=1 keyframe-max-dist=30 \
     ! rtpvp8pay pt=97 \
     ! application/x-rtp,media=video,encoding-name=VP8,payload=97";
/// Opus, 20 ms frames.
const OPUS_AUDIO: &str = "audiotestsrc is-live=true wave=sine \
     ! audioconvert ! audioresample ! queue ! opusenc \
     ! rtpopuspay pt=111 \
     ! application/x-rtp,media=audio,encoding-name=OPUS,payload=111";

/// GStreamer elements the pipelines above and the client need, with the
/// Debian package that ships each.
const ELEMENTS: &[(&str, &str)] = &[
    ("webrtcbin", "gstreamer1.0-plugins-bad"),
    ("nicesrc", "gstreamer1.0-nice"),
    ("dtlsenc", "gstreamer1.0-plugins-bad"),
    ("srtpenc", "gstreamer1.0-plugins-bad"),
    ("videotestsrc", "gstreamer1.0-plugins-base"),
    ("audiotestsrc", "gstreamer1.0-plugins-base"),
    ("opusenc", "gstreamer1.0-plugins-base"),
    ("x264enc", "gstreamer1.0-plugins-ugly"),
    ("vp8enc", "gstreamer1.0-plugins-good"),
    ("rtph264pay", "gstreamer1.0-plugins-good"),
    ("rtpvp8pay", "gstreamer1.0-plugins-good"),
    ("rtpopuspay", "gstreamer1.0-plugins-good"),
];

/// How long a client gets from start to a playable stream (GStreamer's
/// start, encoder warm-up, ICE and DTLS).
const PUBLISH_LIMIT: Duration = Duration::from_secs(30);
/// How long media checks wait once the viewer is connected.
const MEDIA_LIMIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------

/// Default mode: the offer carries no candidates, they follow in PATCHes.
/// H264 and Opus reach a viewer, the H264 it gets starts with a keyframe,
/// and every PATCH was accepted with the 201's entity-tag.
#[test]
fn trickled_h264_and_opus_reach_a_viewer() {
    isolated(|| async {
        let label = "simple-whip-client (trickle)";
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let proxy = Recorder::start(vigil.http_addr).await;
        let client = WhipClient::spawn(
            label,
            &proxy.url("/whip/gst/cam"),
            &["-V", H264_VIDEO, "-A", OPUS_AUDIO],
            &proxy,
        );

        let viewer = connect_viewer(&client, &base, "gst", "cam", None).await;
        let media = check_media(&client, &viewer, VideoCodec::H264).await;

        let post = client.post_exchange();
        assert_eq!(post.status, 201, "{}", client.context("POST not 201"));
        assert_eq!(
            post.request_header("content-type").as_deref(),
            Some("application/sdp"),
            "{}",
            client.context("POST content type")
        );
        assert!(
            !post.request_body.contains("a=candidate"),
            "{}",
            client.context("a trickling client's offer carries no candidates")
        );
        let etag = post.response_header("etag").unwrap_or_else(|| {
            panic!("{}", client.context("Vigil's 201 has no ETag"));
        });

        // Gathering ends with an `a=end-of-candidates` PATCH; wait for it.
        let patches = eventually_with(
            &client,
            MEDIA_LIMIT,
            "the end-of-candidates PATCH",
            || async {
                let patches = proxy.exchanges_of("PATCH");
                patches
                    .iter()
                    .any(|p| p.request_body.contains("a=end-of-candidates"))
                    .then_some(patches)
            },
        )
        .await;
        for patch in &patches {
            assert_eq!(
                patch.status,
                204,
                "{}",
                client.context(&format!(
                    "PATCH refused with {}: {}\nbody sent:\n{}",
                    patch.status, patch.response_body, patch.request_body
                ))
            );
            assert_eq!(
                patch.request_header("content-type").as_deref(),
                Some("application/trickle-ice-sdpfrag"),
                "{}",
                client.context("PATCH content type")
            );
            assert_eq!(
                patch.request_header("if-match").as_deref(),
                Some(etag.as_str()),
                "{}",
                client.context("PATCH If-Match is the 201's ETag")
            );
            assert_eq!(
                Some(patch.path.as_str()),
                post.response_header("location").as_deref(),
                "{}",
                client.context("PATCH goes to the Location of the 201")
            );
        }
        assert!(
            patches
                .iter()
                .any(|p| has_client_candidate(&p.request_body)),
            "{}",
            client.context(&format!(
                "no PATCH trickled a host candidate on {CLIENT_IP}"
            ))
        );

        let stats = vigil.sfu.stats().await.expect("stats");
        assert_eq!(
            (stats.publishers, stats.viewers),
            (1, 1),
            "{}",
            client.context("server sessions while streaming")
        );
        assert!(
            client.is_running(),
            "{}",
            client.context("client still publishing")
        );
        eprintln!("{label}: {media}");

        drop(client);
        vigil.shutdown().await;
    });
}

/// `-n`: all candidates in the offer, no PATCH. VP8 and Opus reach a
/// viewer; SIGTERM ends the session with a DELETE.
#[test]
fn non_trickle_vp8_and_opus_reach_a_viewer() {
    isolated(|| async {
        let label = "simple-whip-client (-n, VP8)";
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let proxy = Recorder::start(vigil.http_addr).await;
        let client = WhipClient::spawn(
            label,
            &proxy.url("/whip/gst/cam"),
            &["-n", "-V", VP8_VIDEO, "-A", OPUS_AUDIO],
            &proxy,
        );

        let viewer = connect_viewer(&client, &base, "gst", "cam", None).await;
        let media = check_media(&client, &viewer, VideoCodec::Vp8).await;

        let post = client.post_exchange();
        assert!(
            has_client_candidate(&post.request_body),
            "{}",
            client.context(&format!(
                "the -n offer carries the host candidate on {CLIENT_IP}"
            ))
        );
        assert!(
            proxy.exchanges_of("PATCH").is_empty(),
            "{}",
            client.context("-n sends no PATCH")
        );
        eprintln!("{label}: {media}");

        stop_and_check_delete(client, &proxy, &vigil, libc::SIGTERM).await;
        vigil.shutdown().await;
    });
}

/// SIGINT makes the client DELETE its session (with `If-Match`); Vigil
/// answers 200 and the publisher session is gone.
#[test]
fn sigint_deletes_the_session() {
    isolated(|| async {
        let label = "simple-whip-client (SIGINT)";
        let vigil = netns::start_server(|_| {}).await;
        let base = base_url(&vigil);
        let proxy = Recorder::start(vigil.http_addr).await;
        let client = WhipClient::spawn(
            label,
            &proxy.url("/whip/gst/cam"),
            &["-V", H264_VIDEO, "-A", OPUS_AUDIO],
            &proxy,
        );
        let viewer = connect_viewer(&client, &base, "gst", "cam", None).await;
        viewer_connected(&client, &viewer).await;
        wait_for_video(&client, &viewer).await;

        stop_and_check_delete(client, &proxy, &vigil, libc::SIGINT).await;
        vigil.shutdown().await;
    });
}

/// With tokens required: a bad token and a token without the publish grant
/// are refused before any session exists (the client gives up by itself);
/// a publisher token publishes, and a subscriber with its own token plays.
#[test]
fn bearer_tokens_are_checked() {
    isolated(|| async {
        let mut scene = Scene::with_room("gst", pb::CreateRoomRequest::default(), |config| {
            config.media_listen = std::net::SocketAddr::new(IpAddr::V4(SERVER_IP), 0);
        })
        .await;
        let proxy = Recorder::start(scene.vigil.http_addr).await;
        let url = proxy.url("/whip/gst/cam");

        let not_allowed = scene.token("cam", subscribe_only()).await;
        for (label, token, status) in [
            (
                "simple-whip-client (bad token)",
                "not-a-token".to_owned(),
                401,
            ),
            (
                "simple-whip-client (subscribe-only token)",
                not_allowed,
                403,
            ),
        ] {
            proxy.clear();
            let client = WhipClient::spawn(
                label,
                &url,
                &["-t", &token, "-V", H264_VIDEO, "-A", OPUS_AUDIO],
                &proxy,
            );
            // It quits by itself, with status 0 all the same.
            client
                .wait_exit(PUBLISH_LIMIT, "give up after the refused POST")
                .await;
            let exchanges = proxy.exchanges();
            assert_eq!(
                exchanges
                    .iter()
                    .map(|e| (e.method.as_str(), e.status))
                    .collect::<Vec<_>>(),
                [("POST", status)],
                "{}",
                client.context("one refused POST and nothing else")
            );
            assert_eq!(
                exchanges[0].request_header("authorization"),
                Some(format!("Bearer {token}")),
                "{}",
                client.context("the POST carries the token")
            );
            assert_eq!(
                vigil_publishers(&scene.vigil).await,
                0,
                "{}",
                client.context("no publisher session after a refused POST")
            );
            assert!(
                scene.participants().await.is_empty(),
                "{}",
                client.context("no participant after a refused POST")
            );
        }

        proxy.clear();
        let label = "simple-whip-client (publisher token)";
        let token = scene.token("cam", publish_and_subscribe()).await;
        let client = WhipClient::spawn(
            label,
            &url,
            &["-t", &token, "-V", H264_VIDEO, "-A", OPUS_AUDIO],
            &proxy,
        );
        let viewer_token = scene.token("guard", subscribe_only()).await;
        let viewer = connect_viewer(&client, &scene.base, "gst", "cam", Some(&viewer_token)).await;
        check_media(&client, &viewer, VideoCodec::H264).await;

        let cam = scene.participant("cam").await;
        assert!(
            cam.publishing,
            "{}",
            client.context("cam listed as publishing")
        );
        let mut codecs: Vec<String> = cam.tracks.iter().map(|t| t.codec.to_lowercase()).collect();
        codecs.sort();
        assert_eq!(
            codecs,
            ["audio/opus", "video/h264"],
            "{}",
            client.context("the server's view of cam's tracks")
        );
        let bearer = format!("Bearer {token}");
        for exchange in proxy.exchanges() {
            assert_eq!(
                exchange.request_header("authorization").as_deref(),
                Some(bearer.as_str()),
                "{}",
                client.context(&format!("{} carries the token", exchange.method))
            );
        }

        stop_and_check_delete(client, &proxy, &scene.vigil, libc::SIGINT).await;
        eventually_scene(
            &scene,
            "cam to leave the participant list",
            |participants| !participants.iter().any(|p| p.identity == "cam"),
        )
        .await;
        scene.shutdown().await;
    });
}

/// `-f`: the client first sends OPTIONS to read the ICE servers from
/// `Link`. Vigil answers 200 with one RFC 8288 link per configured server;
/// the client configures it and sends STUN Binding requests there. The
/// STUN server is a socket of the test's on the private network that only
/// notes the requests (it never answers), and publishing works as usual.
#[test]
fn follow_link_uses_the_advertised_stun_server() {
    isolated(|| async {
        let label = "simple-whip-client (-f)";
        let stun_trap = tokio::net::UdpSocket::bind((SERVER_IP, 0))
            .await
            .expect("bind the STUN trap");
        let stun_url = format!(
            "stun:{SERVER_IP}:{}",
            stun_trap.local_addr().expect("trap address").port()
        );
        let (asked, mut binding_requested) = watch::channel(false);
        tokio::spawn(async move {
            let mut datagram = [0u8; 1500];
            while let Ok((len, _)) = stun_trap.recv_from(&mut datagram).await {
                if is_stun_binding_request(&datagram[..len]) {
                    let _ = asked.send(true);
                }
            }
        });
        let vigil = netns::start_server(|config| {
            config.ice_servers = vec![IceServer {
                url: stun_url.clone(),
                username: None,
                credential: None,
            }];
        })
        .await;
        let base = base_url(&vigil);
        let proxy = Recorder::start(vigil.http_addr).await;
        let client = WhipClient::spawn(
            label,
            &proxy.url("/whip/gst/cam"),
            &["-f", "-V", H264_VIDEO, "-A", OPUS_AUDIO],
            &proxy,
        );
        let viewer = connect_viewer(&client, &base, "gst", "cam", None).await;
        check_media(&client, &viewer, VideoCodec::H264).await;

        let exchanges = proxy.exchanges();
        let methods: Vec<&str> = exchanges.iter().map(|e| e.method.as_str()).collect();
        assert_eq!(
            methods.get(..2),
            Some(&["OPTIONS", "POST"][..]),
            "{}",
            client.context("OPTIONS before the POST")
        );
        let options = &exchanges[0];
        assert!(
            matches!(options.status, 200 | 204),
            "{}",
            client.context("OPTIONS answered 200 or 204 (the client accepts only those)")
        );
        assert_eq!(
            options.response_header_all("link"),
            [format!("<{stun_url}>; rel=\"ice-server\"")],
            "{}",
            client.context("OPTIONS carries the configured ICE server")
        );
        let asked = tokio::time::timeout(MEDIA_LIMIT, binding_requested.wait_for(|asked| *asked))
            .await
            .is_ok_and(|seen| seen.is_ok());
        assert!(
            asked,
            "{}",
            client.context(&format!(
                "no STUN Binding request reached {stun_url}, the server of the Link header"
            ))
        );

        drop(client);
        vigil.shutdown().await;
    });
}

/// A STUN Binding request (RFC 8489 §5): type 0x0001 and the magic cookie.
fn is_stun_binding_request(datagram: &[u8]) -> bool {
    datagram.len() >= 20
        && datagram[..2] == [0x00, 0x01]
        && datagram[4..8] == [0x21, 0x12, 0xa4, 0x42]
}

// ---------------------------------------------------------------------
// Steps shared by the tests
// ---------------------------------------------------------------------

/// What a viewer received, for the test's output.
struct MediaSummary {
    video: usize,
    audio: usize,
    keyframes: usize,
}

impl std::fmt::Display for MediaSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "viewer got {} video packets ({} keyframes) and {} audio packets",
            self.video, self.keyframes, self.audio
        )
    }
}

/// Plays the stream, retrying while Vigil answers 409 (published but not
/// yet live), until the client's stream can be played.
async fn connect_viewer(
    client: &WhipClient,
    base: &str,
    room: &str,
    stream: &str,
    token: Option<&str>,
) -> Viewer {
    let deadline = Instant::now() + PUBLISH_LIMIT;
    let mut last: Option<HttpResponse> = None;
    loop {
        client.assert_running("publishing");
        if client.post_seen() {
            match Viewer::connect_as(base, room, stream, token).await {
                Ok(viewer) => return viewer,
                Err(response) if response.status == 409 => last = Some(response),
                Err(response) => panic!(
                    "{}",
                    client.context(&format!(
                        "WHEP viewer refused: {} {}",
                        response.status, response.body
                    ))
                ),
            }
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            client.context(&format!(
                "stream not playable after {PUBLISH_LIMIT:?} (last WHEP answer: {:?})",
                last.map(|r| (r.status, r.body))
            ))
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn viewer_connected(client: &WhipClient, viewer: &Viewer) {
    eventually_with(client, MEDIA_LIMIT, "the viewer to connect", || async {
        (*viewer.peer.state.borrow() == webrtc::peer_connection::RTCPeerConnectionState::Connected)
            .then_some(())
    })
    .await;
}

async fn wait_for_video(client: &WhipClient, viewer: &Viewer) {
    eventually_with(client, MEDIA_LIMIT, "video at the viewer", || async {
        (!viewer.video().is_empty()).then_some(())
    })
    .await;
}

/// Waits for two keyframes and a healthy amount of video and audio, then
/// checks the video is `codec` and starts with a keyframe.
async fn check_media(client: &WhipClient, viewer: &Viewer, codec: VideoCodec) -> MediaSummary {
    viewer_connected(client, viewer).await;
    let keyframes = |video: &[vigil_tests::peers::ReceivedPacket]| {
        let mut stamps: Vec<u32> = video
            .iter()
            .filter(|p| p.keyframe_start())
            .map(|p| p.header.timestamp)
            .collect();
        stamps.dedup();
        stamps.len()
    };
    // Two seconds of media: two keyframes at one per second, 100 Opus
    // frames of 20 ms, and at least a packet per video frame.
    let summary = eventually_with(
        client,
        MEDIA_LIMIT,
        "2 keyframes, 60 video and 100 audio packets at the viewer",
        || async {
            let video = viewer.video();
            let summary = MediaSummary {
                video: video.len(),
                audio: viewer.audio_count(),
                keyframes: keyframes(&video),
            };
            (summary.keyframes >= 2 && summary.video >= 60 && summary.audio >= 100)
                .then_some(summary)
        },
    )
    .await;
    let video = viewer.video();
    assert!(
        video.iter().all(|p| p.codec == Some(codec)),
        "{}",
        client.context(&format!(
            "viewer got video other than {codec:?}: {:?}",
            video
                .iter()
                .map(|p| p.codec)
                .collect::<std::collections::HashSet<_>>()
        ))
    );
    assert!(
        video[0].keyframe_start(),
        "{}",
        client.context(&format!(
            "the first {codec:?} packet at the viewer does not start a keyframe"
        ))
    );
    summary
}

/// Signals the client, and checks that it sent DELETE (with the 201's
/// entity-tag in `If-Match`) to its session, that Vigil answered 200, and
/// that the publisher session is gone.
async fn stop_and_check_delete(
    client: WhipClient,
    proxy: &Recorder,
    vigil: &Vigil,
    signal: libc::c_int,
) {
    let name = if signal == libc::SIGINT {
        "SIGINT"
    } else {
        "SIGTERM"
    };
    client.signal(signal);
    let status = client
        .wait_exit(Duration::from_secs(15), &format!("exit after {name}"))
        .await;
    assert!(
        status.success(),
        "{}",
        client.context(&format!("exit status after {name}: {status}"))
    );
    let post = client.post_exchange();
    let deletes = proxy.exchanges_of("DELETE");
    let [delete] = deletes.as_slice() else {
        panic!(
            "{}",
            client.context(&format!("one DELETE after {name}, got {}", deletes.len()))
        );
    };
    assert_eq!(
        Some(delete.path.as_str()),
        post.response_header("location").as_deref(),
        "{}",
        client.context("DELETE goes to the Location of the 201")
    );
    assert_eq!(
        delete.request_header("if-match"),
        post.response_header("etag"),
        "{}",
        client.context("DELETE carries If-Match with the 201's ETag")
    );
    assert_eq!(
        delete.status,
        200,
        "{}",
        client.context(&format!(
            "DELETE answered {} {} (the client expects 200)",
            delete.status, delete.response_body
        ))
    );
    eventually_with(
        &client,
        Duration::from_secs(5),
        "no publisher session",
        || async { (vigil_publishers(vigil).await == 0).then_some(()) },
    )
    .await;
    let gone = request("GET", &proxy.upstream_url(&delete.path), &[], Bytes::new()).await;
    assert_eq!(
        gone.status,
        404,
        "{}",
        client.context("the session URL is gone after DELETE")
    );
}

async fn vigil_publishers(vigil: &Vigil) -> usize {
    vigil.sfu.stats().await.expect("stats").publishers
}

async fn eventually_scene(
    scene: &Scene,
    what: &str,
    mut check: impl FnMut(&[pb::Participant]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let participants = scene.participants().await;
        if check(&participants) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {participants:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether an SDP or fragment has a candidate on the client's veth address.
fn has_client_candidate(sdp: &str) -> bool {
    let address = format!(" {CLIENT_IP} ");
    sdp.lines()
        .any(|l| l.starts_with("a=candidate:") && l.contains(&address))
}

/// Polls `check` every 50 ms until it gives `Some`; fails naming the client,
/// `what` it waited for, and its output.
async fn eventually_with<T, Fut>(
    client: &WhipClient,
    limit: Duration,
    what: &str,
    check: impl FnMut() -> Fut,
) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    vigil_tests::poll_until(limit, check)
        .await
        .unwrap_or_else(|| panic!("{}", client.context(&format!("no {what} within {limit:?}"))))
}

// ---------------------------------------------------------------------
// Running the client
// ---------------------------------------------------------------------

/// Runs `test` in its own network namespace, one test at a time.
fn isolated<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    prepare_gstreamer();
    netns::run(test);
}

/// Where the tests keep GStreamer's home, registry and the shim below.
fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop_gstreamer")
}

/// A writable home and plugin registry for GStreamer under the target
/// directory, so the tests depend on no user's home, and the libsoup shim.
fn gstreamer_env() -> Vec<(&'static str, PathBuf)> {
    let dir = work_dir();
    vec![
        ("HOME", dir.join("home")),
        ("XDG_CACHE_HOME", dir.join("home/.cache")),
        ("GST_REGISTRY", dir.join("gst-registry.bin")),
        ("LD_PRELOAD", dir.join(SOUP_SHIM_LIB)),
    ]
}

/// Debian bookworm's `whip-client` is linked with libsoup 2.4, while
/// bookworm's libnice links gupnp-igd, whose gupnp 1.6 and gssdp 1.6 link
/// libsoup 3. When webrtcbin loads libnice, libsoup 3's constructor finds
/// libsoup 2's `soup_uri_new` (looked up with `g_module_symbol`) and aborts
/// the process: "libsoup2 symbols detected. Using libsoup2 and libsoup3 in
/// the same process is not supported". The package cannot publish at all
/// as installed.
///
/// This preloaded shim makes it run without touching its wire behaviour:
/// - it hides that one lookup from libsoup 3's guard;
/// - it makes `gupnp_simple_igd_thread_new` fail, which libnice handles as
///   "no UPnP" (as with its `upnp` property off), so no libsoup 3 code ever
///   runs next to libsoup 2 (the two export the same symbol names, and
///   UPnP discovery through gssdp would call into the wrong one). UPnP port
///   mapping has nothing to find on the private network anyway.
const SOUP_SHIM_SOURCE: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <string.h>

typedef int gboolean;
typedef void *gpointer;

gboolean g_module_symbol(void *module, const char *name, gpointer *symbol) {
    static gboolean (*real)(void *, const char *, gpointer *);
    if (strcmp(name, "soup_uri_new") == 0) {
        if (symbol)
            *symbol = NULL;
        return 0;
    }
    if (!real)
        real = (gboolean (*)(void *, const char *, gpointer *))dlsym(RTLD_NEXT, "g_module_symbol");
    return real(module, name, symbol);
}

void *gupnp_simple_igd_thread_new(void) {
    return NULL;
}
"#;
const SOUP_SHIM_LIB: &str = "soup-guard-shim.so";

/// Builds the shim with the C compiler Rust links with.
fn build_soup_shim() {
    let dir = work_dir();
    let source = dir.join("soup-guard-shim.c");
    std::fs::write(&source, SOUP_SHIM_SOURCE).expect("write the libsoup shim");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(dir.join(SOUP_SHIM_LIB))
        .arg(&source)
        .arg("-ldl")
        .status()
        .expect("run cc (the C compiler rustc links with)");
    assert!(status.success(), "building {} failed", source.display());
}

/// Checks the client and every element its pipelines use are installed,
/// building GStreamer's registry on the way (slow only the first time).
fn prepare_gstreamer() {
    static READY: std::sync::Once = std::sync::Once::new();
    READY.call_once(|| {
        netns::require_program(PROGRAM, INSTALL_HINT);
        netns::require_program("gst-inspect-1.0", INSTALL_HINT);
        netns::require_program("cc", "install a C compiler (Debian package gcc)");
        let env = gstreamer_env();
        std::fs::create_dir_all(&env[1].1).expect("create GStreamer's home");
        build_soup_shim();
        for (element, package) in ELEMENTS {
            let status = std::process::Command::new("gst-inspect-1.0")
                // libnice's plugin is versioned 0.1.x: without a version,
                // `--exists` asks for at least GStreamer's own and fails.
                .args(["--exists", "--atleast-version=0.0", element])
                .envs(env.iter().map(|(k, v)| (k, v)))
                .status()
                .expect("run gst-inspect-1.0");
            assert!(
                status.success(),
                "GStreamer element {element} is missing: install the Debian package \
                 {package} ({INSTALL_HINT})"
            );
        }
    });
}

/// A running `whip-client`, killed when dropped, with its output kept.
struct WhipClient {
    label: String,
    pid: libc::pid_t,
    /// Set once the process has exited (a task waits for it).
    exit: watch::Receiver<Option<ExitStatus>>,
    output: Arc<Mutex<VecDeque<String>>>,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
}

/// Output lines kept for failure messages.
const OUTPUT_LINES: usize = 200;

impl WhipClient {
    /// Starts the client on `url` with `args`; `proxy` is the recorder its
    /// HTTP goes through (shown in failure messages).
    fn spawn(label: &str, url: &str, args: &[&str], proxy: &Recorder) -> WhipClient {
        let program = netns::require_program(PROGRAM, INSTALL_HINT);
        // Line-buffered stdout, so the output is there when a test fails.
        let mut command = Command::new("stdbuf");
        command
            .arg("-oL")
            .arg(program)
            .args(["-u", url, "-o"])
            .args(args)
            .envs(gstreamer_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{label}: cannot start {PROGRAM}: {e}"));
        let pid = child.id().expect("a running child has a pid") as libc::pid_t;
        let output = Arc::new(Mutex::new(VecDeque::new()));
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        tokio::spawn(keep_lines(stdout, output.clone()));
        tokio::spawn(keep_lines(stderr, output.clone()));
        let (exited, exit) = watch::channel(None);
        tokio::spawn(async move {
            if let Ok(status) = child.wait().await {
                let _ = exited.send(Some(status));
            }
        });
        WhipClient {
            label: label.to_owned(),
            pid,
            exit,
            output,
            exchanges: proxy.exchanges.clone(),
        }
    }

    fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    fn assert_running(&self, step: &str) {
        assert!(
            self.is_running(),
            "{}",
            self.context(&format!("client exited while {step}"))
        );
    }

    fn signal(&self, signal: libc::c_int) {
        self.assert_running("about to be signalled");
        // SAFETY: signals our own child process; touches no memory.
        let rc = unsafe { libc::kill(self.pid, signal) };
        assert_eq!(rc, 0, "{}", self.context("signal the client"));
    }

    async fn wait_exit(&self, limit: Duration, step: &str) -> ExitStatus {
        let mut exit = self.exit.clone();
        match tokio::time::timeout(limit, exit.wait_for(Option::is_some)).await {
            Ok(Ok(status)) => status.expect("waited for Some"),
            Ok(Err(_)) => panic!("{}", self.context("lost track of the process")),
            Err(_) => panic!(
                "{}",
                self.context(&format!("did not {step} within {limit:?}"))
            ),
        }
    }

    /// Whether the client's POST has been answered.
    fn post_seen(&self) -> bool {
        self.exchanges
            .lock()
            .expect("exchanges")
            .iter()
            .any(|e| e.method == "POST")
    }

    /// The client's (first) POST and Vigil's answer.
    fn post_exchange(&self) -> Exchange {
        self.exchanges
            .lock()
            .expect("exchanges")
            .iter()
            .find(|e| e.method == "POST")
            .cloned()
            .unwrap_or_else(|| panic!("{}", self.context("no POST recorded")))
    }

    /// A failure message: the client, the step, its HTTP exchanges and the
    /// end of its output.
    fn context(&self, step: &str) -> String {
        let exchanges: Vec<String> = self
            .exchanges
            .lock()
            .expect("exchanges")
            .iter()
            .map(Exchange::summary)
            .collect();
        let output: Vec<String> = self
            .output
            .lock()
            .expect("output")
            .iter()
            .cloned()
            .collect();
        format!(
            "{}: {step}\n--- HTTP exchanges ---\n{}\n--- client output (last {OUTPUT_LINES} lines) ---\n{}",
            self.label,
            exchanges.join("\n"),
            output.join("\n")
        )
    }
}

impl Drop for WhipClient {
    fn drop(&mut self) {
        if std::env::var_os("GST_DUMP").is_some() {
            eprintln!("{}", self.context("DUMP"));
        }
        if self.is_running() {
            // SAFETY: kills our own child process; touches no memory.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

async fn keep_lines(pipe: impl AsyncRead + Unpin, output: Arc<Mutex<VecDeque<String>>>) {
    let mut lines = BufReader::new(pipe).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut output = output.lock().expect("output");
        if output.len() == OUTPUT_LINES {
            output.pop_front();
        }
        output.push_back(line);
    }
}

// ---------------------------------------------------------------------
// The recording proxy
// ---------------------------------------------------------------------

/// One request the client sent and Vigil's answer to it.
#[derive(Debug, Clone)]
struct Exchange {
    method: String,
    /// Path and query.
    path: String,
    request_headers: HeaderMap,
    request_body: String,
    status: u16,
    response_headers: HeaderMap,
    response_body: String,
}

impl Exchange {
    fn request_header(&self, name: &str) -> Option<String> {
        header_text(&self.request_headers, name)
    }

    fn response_header(&self, name: &str) -> Option<String> {
        header_text(&self.response_headers, name)
    }

    fn response_header_all(&self, name: &str) -> Vec<String> {
        self.response_headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    fn summary(&self) -> String {
        let mut line = format!("{} {} -> {}", self.method, self.path, self.status);
        for name in ["content-type", "if-match"] {
            if let Some(value) = self.request_header(name) {
                line.push_str(&format!(" [{name}: {value}]"));
            }
        }
        if self.method == "PATCH" {
            line.push_str(&format!(
                " {:?}",
                self.request_body.lines().collect::<Vec<_>>()
            ));
        }
        if self.status >= 400 {
            line.push_str(&format!(" {}", self.response_body));
        }
        line
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A transparent HTTP proxy in front of Vigil that records every exchange.
struct Recorder {
    addr: SocketAddr,
    upstream: SocketAddr,
    exchanges: Arc<Mutex<Vec<Exchange>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    async fn start(upstream: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let exchanges: Arc<Mutex<Vec<Exchange>>> = Arc::default();
        let log = exchanges.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = service_fn(move |req| forward(req, upstream, log.clone()));
                tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
            }
        });
        Recorder {
            addr,
            upstream,
            exchanges,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn upstream_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.upstream)
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().expect("exchanges").clone()
    }

    fn exchanges_of(&self, method: &str) -> Vec<Exchange> {
        self.exchanges()
            .into_iter()
            .filter(|e| e.method == method)
            .collect()
    }

    fn clear(&self) {
        self.exchanges.lock().expect("exchanges").clear();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Headers that belong to one connection, not to the exchange.
const HOP_BY_HOP: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
];

async fn forward(
    req: Request<Incoming>,
    upstream: SocketAddr,
    log: Arc<Mutex<Vec<Exchange>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| !HOP_BY_HOP.contains(&name.as_str()))
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_owned())))
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let answer = request(
        parts.method.as_str(),
        &format!("http://{upstream}{path}"),
        &header_refs,
        body.clone(),
    )
    .await;
    let mut response = Response::new(Full::new(Bytes::from(answer.body.clone())));
    *response.status_mut() = StatusCode::from_u16(answer.status).expect("status");
    for (name, value) in &answer.headers {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            response.headers_mut().append(name, value.clone());
        }
    }
    log.lock().expect("exchanges").push(Exchange {
        method: parts.method.to_string(),
        path,
        request_headers: parts.headers,
        request_body: String::from_utf8_lossy(&body).into_owned(),
        status: answer.status,
        response_headers: answer.headers,
        response_body: answer.body,
    });
    Ok(response)
}
