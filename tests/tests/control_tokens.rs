//! WHIP/WHEP admission by participant token against rooms created over gRPC:
//! a token opens its own room for its grants only; missing or invalid tokens
//! are 401, valid ones outside their room or grant 403, unknown rooms 404;
//! refusals never disturb a live session; participants watch only their room.

use std::time::Duration;

use tonic::Code;
use vigil_control::RoomName;
use vigil_control::token::{Grants, TokenSigner};
use vigil_proto::v1 as pb;
use vigil_tests::conformance::{assert_problem, obs_offer, recvonly_offer};
use vigil_tests::control::{
    ADMIN_KEY, Scene, Watcher, admin, create_room, mint, mint_in, now_unix, publish_and_subscribe,
    subscribe_only, token, with_bearer,
};
use vigil_tests::eventually;
use vigil_tests::http_client::{HttpResponse, post_sdp_as, request};
use vigil_tests::peers::Publisher;

const ROOM: &str = "site-1";
const OTHER_ROOM: &str = "site-2";
const UNKNOWN_ROOM: &str = "nowhere";

/// Publish-only grants.
fn publish_only() -> pb::Grants {
    pb::Grants {
        publish: true,
        ..Default::default()
    }
}

/// Domain grants for locally minted tokens.
fn all_but_admin() -> Grants {
    Grants {
        publish: true,
        subscribe: true,
        admin: false,
    }
}

/// POSTs a WHIP offer to `/whip/{room}/{stream}`; the offer is a hand-made
/// one, since every request here is expected to be refused before it is read.
async fn whip(base: &str, room: &str, stream: &str, token: Option<&str>) -> HttpResponse {
    post_sdp_as(&format!("{base}/whip/{room}/{stream}"), &obs_offer(), token).await
}

/// POSTs a WHEP offer to `/whep/{room}/{stream}`.
async fn whep(base: &str, room: &str, stream: &str, token: Option<&str>) -> HttpResponse {
    post_sdp_as(
        &format!("{base}/whep/{room}/{stream}"),
        &recvonly_offer(),
        token,
    )
    .await
}

/// The token with one character of its payload (claims) segment changed.
fn tampered(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    assert_eq!(parts.len(), 3, "a JWT has three segments: {token}");
    let payload = &mut parts[1];
    let at = payload.len() / 2;
    let flipped = if &payload[at..=at] == "A" { "B" } else { "A" };
    payload.replace_range(at..=at, flipped);
    let tampered = parts.join(".");
    assert_ne!(tampered, token);
    tampered
}

/// A well-formed, unexpired token for `room` signed with a secret the server
/// does not know.
fn signed_elsewhere(room: &str, identity: &str) -> String {
    TokenSigner::new(b"some-other-signing-secret-0123456789")
        .issue(
            identity,
            &RoomName::new(room).expect("room name"),
            all_but_admin(),
            now_unix(),
            Duration::from_secs(3600),
        )
        .expect("sign token")
}

/// A scene of `ROOM`, with `OTHER_ROOM` created over gRPC too.
async fn scene_with_rooms() -> Scene {
    let mut scene = Scene::new(ROOM).await;
    create_room(&mut scene.clients, OTHER_ROOM).await;
    scene
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_tokens_publish_and_play() {
    let mut scene = scene_with_rooms().await;

    let created = scene.issue("alice", publish_only()).await;
    assert_eq!(created.whip_path, format!("/whip/{ROOM}/alice"));
    let expected_expiry = now_unix() as i64 + 86_400;
    assert!(
        (created.expires_at_unix - expected_expiry).abs() <= 5,
        "default lifetime is a day: expires at {}, now + 1 day is {expected_expiry}",
        created.expires_at_unix
    );

    let mut publisher = Publisher::connect_as(&scene.base, ROOM, "alice", &created.token)
        .await
        .unwrap_or_else(|r| panic!("WHIP with a CreateToken token: {} {}", r.status, r.body));
    publisher.start_media();

    let _viewer = scene.viewer("alice", "watcher").await;

    // The control plane knows them by the tokens' identities.
    assert!(scene.participant("alice").await.publishing);
    assert_eq!(scene.participant("watcher").await.watching, ["alice"]);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_token_is_401() {
    let scene = scene_with_rooms().await;
    assert_problem(
        &whip(&scene.base, ROOM, "alice", None).await,
        401,
        "WHIP without a token",
    );
    assert_problem(
        &whep(&scene.base, ROOM, "alice", None).await,
        401,
        "WHEP without a token",
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_responses_carry_a_bearer_challenge() {
    let scene = scene_with_rooms().await;
    // RFC 9110 §15.5.2 / RFC 6750 §3: a 401 says how to authenticate.
    for (step, response) in [
        (
            "WHIP without a token",
            whip(&scene.base, ROOM, "alice", None).await,
        ),
        (
            "WHEP without a token",
            whep(&scene.base, ROOM, "alice", None).await,
        ),
        (
            "WHIP with a garbage token",
            whip(&scene.base, ROOM, "alice", Some("garbage")).await,
        ),
    ] {
        assert_eq!(response.status, 401, "{step}: {}", response.body);
        let challenge = response.header("www-authenticate");
        assert!(
            challenge.is_some_and(|c| c.starts_with("Bearer")),
            "{step}: 401 without a `WWW-Authenticate: Bearer ...` challenge (got {challenge:?})"
        );
    }
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_key_as_a_media_token_is_401_with_a_hint() {
    let scene = scene_with_rooms().await;
    for (step, response, command) in [
        (
            "WHIP",
            whip(&scene.base, ROOM, "cam-1", Some(ADMIN_KEY)).await,
            "vigil ctl token create site-1 cam-1 --publish",
        ),
        (
            "WHEP",
            whep(&scene.base, ROOM, "cam-1", Some(ADMIN_KEY)).await,
            "vigil ctl token create site-1 <viewer-name> --subscribe",
        ),
    ] {
        assert_problem(&response, 401, &format!("{step} with the admin key"));
        let detail = serde_json::from_str::<serde_json::Value>(&response.body)
            .expect("a problem document")["detail"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            detail.contains("this is the admin key, which is not a media token")
                && detail.contains(command),
            "{step}: {detail}"
        );
        let challenge = response.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("not a media token"),
            "{step}: {challenge:?}"
        );
    }
    // Another wrong credential gets no such hint.
    let other = whip(
        &scene.base,
        ROOM,
        "cam-1",
        Some("test-admin-key-0123456789abcdeF"),
    )
    .await;
    assert_problem(&other, 401, "WHIP with a near miss of the admin key");
    assert!(!other.body.contains("admin key"), "{}", other.body);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_tokens_are_401() {
    let mut scene = scene_with_rooms().await;
    let good = scene.token("alice", publish_and_subscribe()).await;
    // Controls: the untouched tokens pass admission (WHEP of a stream not yet
    // published is then 409), so each 401 below is down to what was changed.
    let room = scene.room_state().await;
    let fresh = mint_in(
        &room,
        "alice",
        all_but_admin(),
        now_unix(),
        Duration::from_secs(60),
    );
    for (step, control) in [("server token", &good), ("minted token", &fresh)] {
        assert_problem(
            &whep(&scene.base, ROOM, "alice", Some(control)).await,
            409,
            &format!("control: {step} passes admission"),
        );
    }

    let expired = mint(
        ROOM,
        "alice",
        all_but_admin(),
        now_unix() - 3600,
        Duration::from_secs(60),
    );
    let cases = [
        ("a garbage token", "garbage".to_owned()),
        ("a tampered token", tampered(&good)),
        ("an expired token", expired),
        (
            "a token signed with another secret",
            signed_elsewhere(ROOM, "alice"),
        ),
    ];
    for (step, bad) in &cases {
        assert_problem(
            &whip(&scene.base, ROOM, "alice", Some(bad)).await,
            401,
            &format!("WHIP with {step}"),
        );
        assert_problem(
            &whep(&scene.base, ROOM, "alice", Some(bad)).await,
            401,
            &format!("WHEP with {step}"),
        );
    }
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_another_room_is_403() {
    let mut scene = scene_with_rooms().await;
    let for_room = scene.token("alice", publish_and_subscribe()).await;
    assert_problem(
        &whip(&scene.base, OTHER_ROOM, "alice", Some(&for_room)).await,
        403,
        "WHIP in another room",
    );
    assert_problem(
        &whep(&scene.base, OTHER_ROOM, "alice", Some(&for_room)).await,
        403,
        "WHEP in another room",
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_without_the_grant_is_403() {
    let mut scene = scene_with_rooms().await;
    let subscriber = scene.token("alice", subscribe_only()).await;
    assert_problem(
        &whip(&scene.base, ROOM, "alice", Some(&subscriber)).await,
        403,
        "WHIP with a subscribe-only token",
    );
    let publisher = scene.token("alice", publish_only()).await;
    assert_problem(
        &whep(&scene.base, ROOM, "alice", Some(&publisher)).await,
        403,
        "WHEP with a publish-only token",
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_token_publishes_only_its_own_stream() {
    let mut scene = scene_with_rooms().await;
    let alice = scene.token("alice", publish_and_subscribe()).await;
    assert_problem(
        &whip(&scene.base, ROOM, "bob", Some(&alice)).await,
        403,
        "alice's token publishing stream bob",
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_an_unknown_room_is_404() {
    let scene = scene_with_rooms().await;
    let nowhere = mint(
        UNKNOWN_ROOM,
        "alice",
        all_but_admin(),
        now_unix(),
        Duration::from_secs(3600),
    );
    assert_problem(
        &whip(&scene.base, UNKNOWN_ROOM, "alice", Some(&nowhere)).await,
        404,
        "WHIP to a room that does not exist",
    );
    assert_problem(
        &whep(&scene.base, UNKNOWN_ROOM, "alice", Some(&nowhere)).await,
        404,
        "WHEP to a room that does not exist",
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_token_for_an_unknown_room_is_not_found() {
    let mut scene = scene_with_rooms().await;
    let refused = scene
        .clients
        .tokens
        .create_token(admin(pb::CreateTokenRequest {
            room: UNKNOWN_ROOM.into(),
            identity: "alice".into(),
            grants: Some(publish_and_subscribe()),
            ttl_seconds: None,
        }))
        .await
        .expect_err("CreateToken for a room that does not exist");
    assert_eq!(refused.code(), Code::NotFound, "{refused}");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_leave_a_live_session_untouched() {
    let mut scene = scene_with_rooms().await;
    let publisher = scene.publisher("alice").await;
    let viewer = scene.viewer("alice", "watcher").await;

    // Every refusal aims at alice's live stream.
    let alice = scene.token("alice", publish_only()).await;
    let both = scene.token("alice", publish_and_subscribe()).await;
    let expired = mint(
        ROOM,
        "alice",
        all_but_admin(),
        now_unix() - 3600,
        Duration::from_secs(60),
    );
    let elsewhere = signed_elsewhere(ROOM, "alice");
    let other_room = token(
        &mut scene.clients,
        OTHER_ROOM,
        "alice",
        publish_and_subscribe(),
    )
    .await;
    let subscriber = scene.token("alice", subscribe_only()).await;
    let bob = scene.token("bob", publish_and_subscribe()).await;
    let nowhere = mint(
        UNKNOWN_ROOM,
        "alice",
        all_but_admin(),
        now_unix(),
        Duration::from_secs(3600),
    );
    let tampered = tampered(&both);
    let whip_refusals: [(&str, Option<&str>, &str, u16); 9] = [
        ("no token", None, ROOM, 401),
        ("a garbage token", Some("garbage"), ROOM, 401),
        ("a tampered token", Some(&tampered), ROOM, 401),
        ("an expired token", Some(&expired), ROOM, 401),
        ("a token signed elsewhere", Some(&elsewhere), ROOM, 401),
        ("a token for another room", Some(&other_room), ROOM, 403),
        ("a subscribe-only token", Some(&subscriber), ROOM, 403),
        ("bob's publish token", Some(&bob), ROOM, 403),
        (
            "a token for an unknown room",
            Some(&nowhere),
            UNKNOWN_ROOM,
            404,
        ),
    ];
    for (step, bearer, room, status) in whip_refusals {
        let response = whip(&scene.base, room, "alice", bearer).await;
        assert_problem(&response, status, &format!("WHIP alice with {step}"));
    }
    let whep_refusals: [(&str, Option<&str>, u16); 5] = [
        ("no token", None, 401),
        ("a garbage token", Some("garbage"), 401),
        ("an expired token", Some(&expired), 401),
        ("a token for another room", Some(&other_room), 403),
        ("a publish-only token", Some(&alice), 403),
    ];
    for (step, bearer, status) in whep_refusals {
        let response = whep(&scene.base, ROOM, "alice", bearer).await;
        assert_problem(&response, status, &format!("WHEP alice with {step}"));
    }

    // Media still flows to the viewer ...
    let before = viewer.video().len();
    eventually(
        Duration::from_secs(10),
        "video still arriving after the refusals",
        || async { (viewer.video().len() >= before + 60).then_some(()) },
    )
    .await;
    // ... both sessions still exist, and nobody else joined.
    for (who, url) in [
        ("publisher", &publisher.session.url),
        ("viewer", &viewer.session.url),
    ] {
        let response = request("GET", url, &[], bytes::Bytes::new()).await;
        assert_eq!(response.status, 204, "{who} session still exists");
    }
    let room = scene.room_state().await;
    assert_eq!((room.publishers, room.viewers), (1, 1));
    let participants = scene.participants().await;
    let identities: Vec<_> = participants.iter().map(|p| p.identity.as_str()).collect();
    assert_eq!(identities, ["alice", "watcher"]);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_watch_sees_only_its_own_room() {
    let mut scene = scene_with_rooms().await;
    let alice_here = scene.token("alice", publish_only()).await;
    let alice_there = token(&mut scene.clients, OTHER_ROOM, "alice", publish_only()).await;
    let mut own = Watcher::start(&scene.vigil, &alice_here, pb::WatchRequest::default()).await;
    let mut all = Watcher::start(&scene.vigil, ADMIN_KEY, pb::WatchRequest::default()).await;

    // Things happen in the other room first, some of them about "alice".
    create_room(&mut scene.clients, "site-3").await;
    let _there = Publisher::connect_as(&scene.base, OTHER_ROOM, "alice", &alice_there)
        .await
        .unwrap_or_else(|r| panic!("WHIP alice in {OTHER_ROOM}: {} {}", r.status, r.body));
    all.wait_for(
        Duration::from_secs(10),
        "alice joining the other room (admin feed)",
        |e| {
            (e.room == OTHER_ROOM && matches!(e.kind, Some(pb::event::Kind::ParticipantJoined(_))))
                .then_some(())
        },
    )
    .await;

    // Then alice joins her token's room.
    let _here = Publisher::connect_as(&scene.base, ROOM, "alice", &alice_here)
        .await
        .unwrap_or_else(|r| panic!("WHIP alice in {ROOM}: {} {}", r.status, r.body));
    let mut seen = Vec::new();
    own.wait_for(Duration::from_secs(10), "alice joining her room", |e| {
        seen.push(e.clone());
        (e.room == ROOM
            && e.identity == "alice"
            && matches!(e.kind, Some(pb::event::Kind::ParticipantJoined(_))))
        .then_some(())
    })
    .await;
    seen.extend(own.drain());
    let foreign: Vec<_> = seen.iter().filter(|e| e.room != ROOM).collect();
    assert!(
        foreign.is_empty(),
        "a participant of {ROOM} saw events of other rooms: {foreign:?}"
    );
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_watch_of_another_room_is_permission_denied() {
    let mut scene = scene_with_rooms().await;
    let alice = scene.token("alice", publish_and_subscribe()).await;
    let refused = scene
        .clients
        .events
        .watch(with_bearer(
            pb::WatchRequest {
                room: OTHER_ROOM.into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect_err("Watch of another room with a participant token");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    // Naming its own room is fine.
    scene
        .clients
        .events
        .watch(with_bearer(
            pb::WatchRequest {
                room: ROOM.into(),
                ..Default::default()
            },
            &alice,
        ))
        .await
        .expect("Watch of its own room");
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_credential_is_unauthenticated() {
    let mut scene = scene_with_rooms().await;
    let anonymous = scene
        .clients
        .events
        .watch(pb::WatchRequest::default())
        .await
        .expect_err("Watch without a credential");
    assert_eq!(anonymous.code(), Code::Unauthenticated, "{anonymous}");
    let garbage = scene
        .clients
        .events
        .watch(with_bearer(pb::WatchRequest::default(), "garbage"))
        .await
        .expect_err("Watch with a garbage credential");
    assert_eq!(garbage.code(), Code::Unauthenticated, "{garbage}");
    scene.shutdown().await;
}
