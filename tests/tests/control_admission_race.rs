//! A WHIP request is admitted when its head arrives and starts its session
//! once its offer has been read and answered. A token revoked, or an
//! identity banned, in between is refused all the same: the session is
//! checked again when it starts, and the request gets the error admission
//! would have given, with no session left behind.
//!
//! The test holds a request between the two: it sends the head alone, and
//! knows the request was admitted when the admission's seat fills a room
//! of one publisher (a second publisher is refused as the room is full).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vigil_proto::v1 as pb;
use vigil_tests::conformance::obs_offer;
use vigil_tests::control::{Scene, admin};
use vigil_tests::eventually;
use vigil_tests::http_client::post_sdp_as;

const ROOM: &str = "site-1";
const PATIENCE: Duration = Duration::from_secs(10);

/// A WHIP POST whose head has been sent and whose offer has not.
struct HeldRequest {
    stream: TcpStream,
    body: String,
}

impl HeldRequest {
    async fn send_head(scene: &Scene, identity: &str, token: &str) -> HeldRequest {
        let body = obs_offer();
        let mut stream = TcpStream::connect(scene.vigil.http_addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /whip/{ROOM}/{identity} HTTP/1.1\r\nHost: {}\r\n\
             Authorization: Bearer {token}\r\nContent-Type: application/sdp\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            scene.vigil.http_addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("send head");
        HeldRequest { stream, body }
    }

    /// Sends the offer; the response's status line and body.
    async fn finish(mut self) -> (String, String) {
        self.stream
            .write_all(self.body.as_bytes())
            .await
            .expect("send offer");
        let mut response = Vec::new();
        tokio::time::timeout(PATIENCE, self.stream.read_to_end(&mut response))
            .await
            .expect("a response in time")
            .expect("read the response");
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.lines().next().unwrap_or_default().to_owned();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        (status, body)
    }
}

/// Waits until the held request's admission holds the room's only
/// publisher seat: another publisher is then refused as the room is full
/// (503). The probe's offer is malformed, so a probe admitted before the
/// held request (400) never starts a session of its own.
async fn until_admitted(scene: &mut Scene) {
    let other = scene.token("other", publish_only()).await;
    let url = format!("{}/whip/{ROOM}/other", scene.base);
    eventually(PATIENCE, "the held request's admission", || {
        let (url, other) = (url.clone(), other.clone());
        async move {
            let response = post_sdp_as(&url, "not an offer", Some(&other)).await;
            match response.status {
                503 => Some(()),
                400 => None,
                status => panic!("probe: {status} {}", response.body),
            }
        }
    })
    .await;
}

fn publish_only() -> pb::Grants {
    pb::Grants {
        publish: true,
        ..Default::default()
    }
}

async fn room_of_one_publisher() -> Scene {
    let request = pb::CreateRoomRequest {
        limits: Some(pb::RoomLimits {
            max_publishers: Some(1),
            max_viewers: None,
        }),
        ..Default::default()
    };
    Scene::with_room(ROOM, request, |_| {}).await
}

async fn assert_nobody_publishes(scene: &Scene) {
    let room = scene.room_state().await;
    assert_eq!(room.publishers, 0, "{room:?}");
    assert!(scene.participants().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_while_its_request_negotiates_is_refused_at_the_start() {
    let mut scene = room_of_one_publisher().await;
    let alice = scene.issue("alice", publish_only()).await;
    let held = HeldRequest::send_head(&scene, "alice", &alice.token).await;
    until_admitted(&mut scene).await;

    scene
        .clients
        .tokens
        .revoke_token(admin(pb::RevokeTokenRequest {
            room: ROOM.into(),
            token_id: alice.token_id.clone(),
        }))
        .await
        .expect("RevokeToken");
    let (status, body) = held.finish().await;
    assert!(status.starts_with("HTTP/1.1 401"), "{status}: {body}");
    assert!(body.contains("was revoked"), "{body}");
    assert_nobody_publishes(&scene).await;
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_banned_while_its_request_negotiates_is_refused_at_the_start() {
    let mut scene = room_of_one_publisher().await;
    let token = scene.token("field-1", publish_only()).await;
    let held = HeldRequest::send_head(&scene, "field-1", &token).await;
    until_admitted(&mut scene).await;

    scene.hang_up("field-1", 600).await;
    let (status, body) = held.finish().await;
    assert!(status.starts_with("HTTP/1.1 403"), "{status}: {body}");
    assert!(body.contains("kept out of room"), "{body}");
    assert_nobody_publishes(&scene).await;
    scene.shutdown().await;
}
