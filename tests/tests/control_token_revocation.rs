//! Tokens can be revoked: one by the id CreateToken returned (its
//! identity's live sessions are hung up, its event feed ends), or every
//! token issued for a room so far (everyone in it is hung up). A revoked
//! token is refused with 401 / UNAUTHENTICATED saying so; tokens issued
//! afterwards work.

use std::time::Duration;

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::conformance::{assert_problem, obs_offer, recvonly_offer};
use vigil_tests::control::{Scene, admin, publish_and_subscribe, with_bearer};
use vigil_tests::http_client::{HttpResponse, post_sdp_as};
use vigil_tests::peers::Publisher;

const ROOM: &str = "site-1";
const LIMIT: Duration = Duration::from_secs(10);

async fn whip(scene: &Scene, stream: &str, token: &str) -> HttpResponse {
    let url = format!("{}/whip/{ROOM}/{stream}", scene.base);
    post_sdp_as(&url, &obs_offer(), Some(token)).await
}

/// Asserts a 401 whose detail and challenge contain `why`.
fn assert_refused(response: &HttpResponse, why: &str, step: &str) {
    assert_problem(response, 401, step);
    assert!(response.body.contains(why), "{step}: {}", response.body);
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(challenge.contains(why), "{step}: {challenge:?}");
}

/// The ParticipantLeft reason of `identity`'s session.
fn left(event: &pb::Event, identity: &str) -> Option<i32> {
    match &event.kind {
        Some(Kind::ParticipantLeft(left)) if event.identity == identity => Some(left.reason),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_is_refused_and_its_identity_hung_up() {
    let mut scene = Scene::new(ROOM).await;
    let mut room_events = scene.watch_room().await;
    let issued = scene.issue("cam-1", publish_and_subscribe()).await;
    assert_eq!(issued.token_id.len(), 32, "{issued:?}");
    let spare = scene.issue("cam-1", publish_and_subscribe()).await;
    assert_ne!(spare.token_id, issued.token_id);

    let mut publisher = Publisher::connect_as(&scene.base, ROOM, "cam-1", &issued.token)
        .await
        .unwrap_or_else(|r| panic!("WHIP: {} {}", r.status, r.body));
    publisher.start_media();
    let mut own_feed = scene
        .clients
        .events
        .watch(with_bearer(pb::WatchRequest::default(), &issued.token))
        .await
        .expect("Watch with the token")
        .into_inner();

    let revoked = scene
        .clients
        .tokens
        .revoke_token(admin(pb::RevokeTokenRequest {
            room: ROOM.into(),
            token_id: issued.token_id.clone(),
        }))
        .await
        .expect("RevokeToken")
        .into_inner();
    assert_eq!(revoked.sessions_closed, 1);
    let reason = room_events
        .wait_for(LIMIT, "cam-1 hung up", |e| left(e, "cam-1"))
        .await;
    assert_eq!(reason, pb::LeaveReason::HungUp as i32);

    // Its own feed says so, then ends.
    let ended = tokio::time::timeout(LIMIT, async {
        loop {
            match own_feed.message().await {
                Ok(Some(event)) => {
                    if let Some(Kind::TokensRevoked(r)) = &event.kind {
                        assert_eq!(r.token_id, issued.token_id);
                    }
                }
                Ok(None) => panic!("the feed ended without a status"),
                Err(status) => return status,
            }
        }
    })
    .await
    .expect("the revoked token's feed ends");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended}");
    assert!(ended.message().contains("was revoked"), "{ended}");

    // Refused from now on, everywhere.
    let why = format!("this token ({}) was revoked", issued.token_id);
    assert_refused(&whip(&scene, "cam-1", &issued.token).await, &why, "WHIP");
    let refused = scene
        .clients
        .events
        .watch(with_bearer(pb::WatchRequest::default(), &issued.token))
        .await
        .expect_err("Watch with a revoked token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");

    // Another token of the same identity still works.
    let back = Publisher::connect_as(&scene.base, ROOM, "cam-1", &spare.token)
        .await
        .unwrap_or_else(|r| panic!("WHIP with the spare token: {} {}", r.status, r.body));

    // Again: nothing to do, nobody hung up.
    let again = scene
        .clients
        .tokens
        .revoke_token(admin(pb::RevokeTokenRequest {
            room: ROOM.into(),
            token_id: issued.token_id.clone(),
        }))
        .await
        .expect("RevokeToken again")
        .into_inner();
    assert_eq!(again.sessions_closed, 0);
    assert!(scene.participant("cam-1").await.publishing);

    for (token_id, code) in [
        ("0123456789abcdef0123456789abcdef", Code::NotFound),
        ("", Code::InvalidArgument),
    ] {
        let refused = scene
            .clients
            .tokens
            .revoke_token(admin(pb::RevokeTokenRequest {
                room: ROOM.into(),
                token_id: token_id.into(),
            }))
            .await
            .expect_err("RevokeToken of no token");
        assert_eq!(refused.code(), code, "{token_id:?}: {refused}");
    }
    // A room's admin token runs the room; it does not revoke tokens.
    let dispatcher = scene
        .issue(
            "dispatcher",
            pb::Grants {
                admin: true,
                ..Default::default()
            },
        )
        .await;
    let refused = scene
        .clients
        .tokens
        .revoke_token(with_bearer(
            pb::RevokeTokenRequest {
                room: ROOM.into(),
                token_id: spare.token_id.clone(),
            },
            &dispatcher.token,
        ))
        .await
        .expect_err("RevokeToken with a room admin token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused}");
    assert_eq!(back.delete().await, 200);
    scene.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_rooms_tokens_hangs_up_everyone_and_spares_later_tokens() {
    let mut scene = Scene::new(ROOM).await;
    let mut room_events = scene.watch_room().await;
    let _publisher = scene.publisher("cam-1").await;
    let _viewer = scene.viewer("cam-1", "viewer-1").await;
    let unused = scene.issue("cam-2", publish_and_subscribe()).await;

    let revoked = scene
        .clients
        .tokens
        .revoke_room_tokens(admin(pb::RevokeRoomTokensRequest { room: ROOM.into() }))
        .await
        .expect("RevokeRoomTokens")
        .into_inner();
    assert_eq!(revoked.sessions_closed, 2);
    for identity in ["cam-1", "viewer-1"] {
        room_events
            .wait_for(LIMIT, &format!("{identity} hung up"), |e| {
                left(e, identity).filter(|r| *r == pb::LeaveReason::HungUp as i32)
            })
            .await;
    }
    let why = "this token was revoked with every token issued for room site-1";
    assert_refused(&whip(&scene, "cam-2", &unused.token).await, why, "WHIP");
    let whep = post_sdp_as(
        &format!("{}/whep/{ROOM}/cam-1", scene.base),
        &recvonly_offer(),
        Some(&unused.token),
    )
    .await;
    assert_refused(&whep, why, "WHEP");

    // Tokens issued afterwards work.
    let publisher = scene.publisher("cam-1").await;
    let _viewer = scene.viewer("cam-1", "viewer-1").await;
    assert_eq!(publisher.delete().await, 200);
    scene.shutdown().await;
}
