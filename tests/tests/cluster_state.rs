//! Several nodes on one Redis share the control plane's state (issue 17):
//! rooms, tokens and their revocations, the secrets that sign tokens, and
//! the event feed with ids that increase across nodes and restarts; and a
//! node rides out Redis going away.

use std::time::{Duration, Instant};

use tonic::Code;
use vigil_control::RoomName;
use vigil_control::store::hex_decode;
use vigil_control::token::{Grants, TokenSigner};
use vigil_gateway::config::ClusterConfig;
use vigil_gateway::{Credentials, Vigil};
use vigil_proto::v1 as pb;
use vigil_proto::v1::event::Kind;
use vigil_tests::conformance::obs_offer;
use vigil_tests::control::{
    Clients, Watcher, clients, now_unix, publish_and_subscribe, with_bearer,
};
use vigil_tests::http_client::post_sdp_as;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::redis::RedisServer;
use vigil_tests::{base_url, eventually, start_server};

const LIMIT: Duration = Duration::from_secs(10);

/// A node of the deployment on `redis`, tokens on, its secrets Redis's.
async fn node(redis: &RedisServer, id: &str) -> Vigil {
    let url = redis.url();
    start_server(|config| {
        config.insecure_no_auth = false;
        config.secrets = None;
        config.cluster = Some(ClusterConfig {
            redis_url: url,
            node_id: id.into(),
            node_url: None,
            capacity: 0,
            relay_ip: "127.0.0.1".parse().expect("literal address"),
        });
    })
    .await
}

fn admin_key(vigil: &Vigil) -> String {
    match &vigil.credentials {
        Credentials::AdminKey { key, .. } => key.clone(),
        Credentials::None => panic!("tokens are on"),
    }
}

/// A node's clients and its admin key.
struct Admin {
    clients: Clients,
    key: String,
}

impl Admin {
    async fn of(vigil: &Vigil) -> Admin {
        Admin {
            clients: clients(vigil).await,
            key: admin_key(vigil),
        }
    }

    /// Another handle on the same channel (for polling closures).
    fn cloned(&self) -> Admin {
        Admin {
            clients: Clients {
                rooms: self.clients.rooms.clone(),
                tokens: self.clients.tokens.clone(),
                events: self.clients.events.clone(),
            },
            key: self.key.clone(),
        }
    }

    fn req<T>(&self, message: T) -> tonic::Request<T> {
        with_bearer(message, &self.key)
    }

    async fn create_room(&mut self, name: &str) -> Result<pb::Room, tonic::Status> {
        let request = self.req(pb::CreateRoomRequest {
            name: name.into(),
            ..Default::default()
        });
        self.clients
            .rooms
            .create_room(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn room(&mut self, name: &str) -> Result<pb::Room, tonic::Status> {
        let request = self.req(pb::GetRoomRequest { name: name.into() });
        self.clients
            .rooms
            .get_room(request)
            .await
            .map(|r| r.into_inner())
    }

    async fn token(&mut self, room: &str, identity: &str) -> pb::CreateTokenResponse {
        let request = self.req(pb::CreateTokenRequest {
            room: room.into(),
            identity: identity.into(),
            grants: Some(publish_and_subscribe()),
            ttl_seconds: None,
        });
        self.clients
            .tokens
            .create_token(request)
            .await
            .unwrap_or_else(|e| panic!("CreateToken {identity}: {e}"))
            .into_inner()
    }

    async fn watch(&self, vigil: &Vigil, after_id: Option<u64>) -> Watcher {
        let request = pb::WatchRequest {
            after_id,
            ..Default::default()
        };
        Watcher::start(vigil, &self.key, request).await
    }
}

fn created(event: &pb::Event) -> Option<(u64, String)> {
    matches!(event.kind, Some(Kind::RoomCreated(_))).then(|| (event.id, event.room.clone()))
}

fn left(event: &pb::Event, identity: &str) -> Option<i32> {
    match &event.kind {
        Some(Kind::ParticipantLeft(left)) if event.identity == identity => Some(left.reason),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_created_updated_and_deleted_at_one_node_are_seen_at_another() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis, "n1").await, node(&redis, "n2").await);
    assert_eq!(admin_key(&one), admin_key(&two), "one admin key everywhere");
    let (mut at_one, mut at_two) = (Admin::of(&one).await, Admin::of(&two).await);

    at_one.create_room("lobby").await.expect("CreateRoom at n1");
    let seen = eventually(LIMIT, "the room at n2", || {
        let mut at_two = at_two.cloned();
        async move { at_two.room("lobby").await.ok() }
    })
    .await;
    assert_eq!(seen.name, "lobby");
    let listed = at_two
        .clients
        .rooms
        .list_rooms(at_two.req(pb::ListRoomsRequest::default()))
        .await
        .expect("ListRooms at n2")
        .into_inner();
    assert_eq!(listed.rooms.len(), 1);

    let update = at_two.req(pb::UpdateRoomRequest {
        name: "lobby".into(),
        limits: Some(pb::RoomLimits {
            max_publishers: Some(3),
            max_viewers: Some(7),
        }),
        ..Default::default()
    });
    at_two
        .clients
        .rooms
        .update_room(update)
        .await
        .expect("UpdateRoom at n2");
    eventually(LIMIT, "n2's limits at n1", || {
        let mut at_one = at_one.cloned();
        async move {
            let room = at_one.room("lobby").await.ok()?;
            let limits = room.limits?;
            (limits.max_publishers == Some(3) && limits.max_viewers == Some(7)).then_some(())
        }
    })
    .await;

    // A publisher at n1 with a token from n2 (the same signing secret).
    let token = at_two.token("lobby", "cam-1").await;
    let mut publisher = Publisher::connect_as(&base_url(&one), "lobby", "cam-1", &token.token)
        .await
        .unwrap_or_else(|r| panic!("WHIP at n1: {} {}", r.status, r.body));
    publisher.start_media();
    let mut feed = at_one.watch(&one, None).await;

    let delete = at_two.req(pb::DeleteRoomRequest {
        name: "lobby".into(),
    });
    at_two
        .clients
        .rooms
        .delete_room(delete)
        .await
        .expect("DeleteRoom at n2");
    let reason = feed
        .wait_for(LIMIT, "cam-1 closed at n1", |e| left(e, "cam-1"))
        .await;
    assert_eq!(reason, pb::LeaveReason::RoomClosed as i32);
    let gone = at_one.room("lobby").await.expect_err("deleted at n1 too");
    assert_eq!(gone.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_one_node_admits_at_another_and_its_revocation_reaches_every_node() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let (mut at_one, mut at_two) = (Admin::of(&one).await, Admin::of(&two).await);
    at_one.create_room("site").await.expect("CreateRoom at n1");
    let issued = at_one.token("site", "cam-1").await;

    // Admitted at n2 (201), then gone again.
    let at_n2 = post_sdp_as(
        &format!("{}/whip/site/cam-2", base_url(&two)),
        &obs_offer(),
        Some(&at_one.token("site", "cam-2").await.token),
    )
    .await;
    assert_eq!(at_n2.status, 201, "{}", at_n2.body);
    let publisher = Publisher::connect_as(&base_url(&two), "site", "cam-1", &issued.token)
        .await
        .unwrap_or_else(|r| panic!("WHIP at n2 with n1's token: {} {}", r.status, r.body));
    publisher.delete().await;

    // Live at n1 with the same token; revoked at n2.
    let mut publisher = Publisher::connect_as(&base_url(&one), "site", "cam-1", &issued.token)
        .await
        .unwrap_or_else(|r| panic!("WHIP at n1: {} {}", r.status, r.body));
    publisher.start_media();
    let mut feed = at_one.watch(&one, None).await;
    let revoke = at_two.req(pb::RevokeTokenRequest {
        room: "site".into(),
        token_id: issued.token_id.clone(),
    });
    at_two
        .clients
        .tokens
        .revoke_token(revoke)
        .await
        .expect("RevokeToken at n2");
    let reason = feed
        .wait_for(LIMIT, "cam-1 hung up at n1", |e| left(e, "cam-1"))
        .await;
    assert_eq!(reason, pb::LeaveReason::HungUp as i32);
    let refused = post_sdp_as(
        &format!("{}/whip/site/cam-1", base_url(&one)),
        &obs_offer(),
        Some(&issued.token),
    )
    .await;
    assert_eq!(refused.status, 401, "{}", refused.body);
    drop(at_two);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_other_nodes_events_and_resumes_at_any_node_after_restarts() {
    let redis = RedisServer::start().await;
    let one = node(&redis, "n1").await;
    let two = node(&redis, "n2").await;
    let three = node(&redis, "n3").await;
    let mut at_one = Admin::of(&one).await;
    let at_two = Admin::of(&two).await;

    let mut feed = at_two.watch(&two, Some(0)).await;
    for room in ["a", "b", "c"] {
        at_one.create_room(room).await.expect("CreateRoom at n1");
    }
    let mut ids = Vec::new();
    for room in ["a", "b", "c"] {
        let (id, name) = feed.wait_for(LIMIT, "RoomCreated", created).await;
        assert_eq!(name, room, "in the order they were made");
        ids.push(id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let last = ids[2];
    drop(feed);

    // Missed while away, then resumed at n3: exactly those.
    at_one.create_room("d").await.expect("CreateRoom d");
    at_one.create_room("e").await.expect("CreateRoom e");
    let mut resumed = Admin::of(&three).await.watch(&three, Some(last)).await;
    let d = resumed.wait_for(LIMIT, "d", created).await;
    let e = resumed.wait_for(LIMIT, "e", created).await;
    assert_eq!((d.1.as_str(), e.1.as_str()), ("d", "e"));
    assert!(last < d.0 && d.0 < e.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        resumed.drain().iter().all(|ev| ev.id > e.0),
        "nothing repeated"
    );

    // n2 restarts; a watcher resuming there gets what it missed, and ids
    // keep increasing.
    two.shutdown().await;
    at_one.create_room("f").await.expect("CreateRoom f");
    let two = node(&redis, "n2").await;
    let mut at_two = Admin::of(&two).await;
    at_two
        .create_room("g")
        .await
        .expect("CreateRoom g at the new n2");
    let mut again = at_two.watch(&two, Some(e.0)).await;
    let f = again.wait_for(LIMIT, "f", created).await;
    let g = again.wait_for(LIMIT, "g", created).await;
    assert_eq!((f.1.as_str(), g.1.as_str()), ("f", "g"));
    assert!(e.0 < f.0 && f.0 < g.0, "{e:?} {f:?} {g:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_rides_out_redis_going_away_and_recovers_by_itself() {
    let mut redis = RedisServer::start().await;
    let one = node(&redis, "n1").await;
    let mut at_one = Admin::of(&one).await;
    at_one.create_room("site").await.expect("CreateRoom");
    let base = base_url(&one);
    let publisher_token = at_one.token("site", "cam-1").await.token;
    let viewer_token = at_one.token("site", "wall").await.token;
    let late_token = at_one.token("site", "late").await.token;
    let mut publisher = Publisher::connect_as(&base, "site", "cam-1", &publisher_token)
        .await
        .unwrap_or_else(|r| panic!("WHIP: {} {}", r.status, r.body));
    publisher.start_media();
    let viewer = Viewer::connect_as(&base, "site", "cam-1", Some(&viewer_token))
        .await
        .unwrap_or_else(|r| panic!("WHEP: {} {}", r.status, r.body));
    viewer.wait_video().await;
    let mut feed = at_one.watch(&one, Some(0)).await;
    let before = feed
        .wait_for(LIMIT, "cam-1 joined", |e| {
            matches!(e.kind, Some(Kind::ParticipantJoined(_))).then_some(e.id)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = feed.drain().last().map_or(before, |e| e.id);
    // A valid token (the deployment's secret) for a room this node has
    // not heard of: only Redis could say whether it exists.
    let secret = redis
        .cli(&["HGET", "vigil:secrets", "signing_secret"])
        .await;
    let unknown_room = TokenSigner::new(&hex_decode(&secret).expect("hex secret"))
        .issue(
            "cam-9",
            &RoomName::new("elsewhere").expect("room name"),
            Grants {
                publish: true,
                ..Default::default()
            },
            now_unix(),
            Duration::from_secs(600),
        )
        .expect("sign");

    redis.kill().await;

    // Writes fail fast with UNAVAILABLE.
    let asked = Instant::now();
    let refused = at_one
        .create_room("other")
        .await
        .expect_err("Redis is away");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    let request = at_one.req(pb::CreateTokenRequest {
        room: "site".into(),
        identity: "someone".into(),
        grants: Some(publish_and_subscribe()),
        ttl_seconds: None,
    });
    let refused = at_one
        .clients
        .tokens
        .create_token(request)
        .await
        .expect_err("a token is recorded before it is handed out");
    assert_eq!(refused.code(), Code::Unavailable, "{refused}");
    let unknown = post_sdp_as(
        &format!("{base}/whip/elsewhere/cam-9"),
        &obs_offer(),
        Some(&unknown_room),
    )
    .await;
    assert_eq!(unknown.status, 503, "{}", unknown.body);
    assert!(unknown.header("retry-after").is_some());

    // Media keeps flowing; sessions still come and go (events queued).
    let packets = viewer.video().len();
    eventually(LIMIT, "video during the outage", || async {
        (viewer.video().len() > packets + 30).then_some(())
    })
    .await;
    let late = Viewer::connect_as(&base, "site", "cam-1", Some(&late_token))
        .await
        .unwrap_or_else(|r| panic!("WHEP during the outage: {} {}", r.status, r.body));
    late.peer.wait_connected().await;
    late.delete().await;

    redis.restart().await;

    // Back by itself.
    eventually(LIMIT, "CreateRoom after Redis came back", || {
        let mut at_one = at_one.cloned();
        async move { at_one.create_room("other").await.ok() }
    })
    .await;
    // What happened meanwhile is in the feed, numbered above what came
    // before (Redis came back empty: the Lua guard), in order.
    let mut resumed = at_one.watch(&one, Some(before)).await;
    let mut seen = Vec::new();
    let joined = resumed
        .wait_for(LIMIT, "late joined", |e| {
            seen.push(e.id);
            (matches!(e.kind, Some(Kind::ParticipantJoined(_))) && e.identity == "late")
                .then_some(e.id)
        })
        .await;
    let left_at = resumed
        .wait_for(LIMIT, "late left", |e| {
            seen.push(e.id);
            left(e, "late").map(|_| e.id)
        })
        .await;
    assert!(
        before < joined && joined < left_at,
        "{before} {joined} {left_at}"
    );
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    // The room survived: it was written back.
    assert_eq!(at_one.room("site").await.expect("GetRoom").publishers, 1);
    assert!(viewer.video().len() > packets + 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_store_round_trips_rooms_tokens_alarms_and_cameras() {
    use vigil_control::alarm_log::AlarmRecord;
    use vigil_control::camera::{CameraTransport, NewCamera};
    use vigil_control::event::Alarm;
    use vigil_control::issued::IssuedToken;
    use vigil_control::room::RoomSpec;
    use vigil_control::store::{Store, StoreError};
    use vigil_control::{RoomName, StreamName};
    use vigil_gateway::cluster::store::RedisStore;

    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let store = tokio::task::spawn_blocking(move || RedisStore::connect(&url).expect("connect"))
        .await
        .expect("connect task");
    let store = std::sync::Arc::new(store);
    let room = RoomName::new("site").expect("room name");
    let spec = RoomSpec {
        name: room.clone(),
        limits: Default::default(),
        alarms: Default::default(),
        created_at_ms: 1,
        incarnation: 42,
        token_generation: 2,
        bans: [("troll".to_owned(), 99)].into_iter().collect(),
    };
    let token = IssuedToken {
        id: "t1".into(),
        room: room.clone(),
        incarnation: 42,
        identity: "cam-1".into(),
        expires_at: u64::MAX / 2,
        revoked_at_ms: Some(5),
    };
    let alarm = AlarmRecord {
        id: 17,
        room: room.clone(),
        alarm: Alarm::RoomFull,
        stream: None,
        identity: Some("wall".into()),
        detail: "full".into(),
        raised_at_ms: 3,
        cleared_at_ms: None,
        acknowledged: None,
    };
    let camera = NewCamera {
        url: "rtsp://user:pw@127.0.0.1:8554/cam".into(),
        username: String::new(),
        password: String::new(),
        transport: CameraTransport::default(),
        on_demand: true,
    }
    .into_spec(room.clone(), StreamName::new("gate").expect("name"), 7)
    .expect("camera spec");

    let (spec2, token2, alarm2, camera2) =
        (spec.clone(), token.clone(), alarm.clone(), camera.clone());
    let writer = store.clone();
    tokio::task::spawn_blocking(move || {
        writer.put_room(&spec2)?;
        writer.update_issued_tokens(&[token2], &[])?;
        writer.update_alarms(&[alarm2], &[])?;
        writer.put_camera(&camera2)
    })
    .await
    .expect("write task")
    .expect("writes");

    let reader = store.clone();
    let (rooms, tokens, by_id, alarms, cameras) = tokio::task::spawn_blocking(move || {
        Ok::<_, StoreError>((
            reader.rooms()?,
            reader.issued_tokens()?,
            reader.issued_tokens_by_id(&["t1".into(), "nope".into()])?,
            reader.alarms_by_id(&[17, 18])?,
            reader.cameras()?,
        ))
    })
    .await
    .expect("read task")
    .expect("reads");
    assert_eq!(rooms, vec![spec]);
    assert_eq!(tokens, vec![token.clone()]);
    assert_eq!(by_id, vec![token]);
    assert_eq!(alarms, vec![alarm]);
    assert_eq!(cameras, vec![camera]);

    // Redis away: a typed, retryable error, quickly.
    redis.kill().await;
    let asked = Instant::now();
    let failed = tokio::task::spawn_blocking(move || store.rooms())
        .await
        .expect("read task");
    assert!(
        matches!(failed, Err(StoreError::Unavailable(_))),
        "{failed:?}"
    );
    assert!(asked.elapsed() < Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_raised_at_one_node_is_listed_and_acknowledged_at_another() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let (mut at_one, mut at_two) = (Admin::of(&one).await, Admin::of(&two).await);
    let create = at_one.req(pb::CreateRoomRequest {
        name: "small".into(),
        limits: Some(pb::RoomLimits {
            max_publishers: Some(1),
            max_viewers: None,
        }),
        ..Default::default()
    });
    at_one
        .clients
        .rooms
        .create_room(create)
        .await
        .expect("CreateRoom");
    let whip = |stream: &str| format!("{}/whip/small/{stream}", base_url(&one));
    let first = at_one.token("small", "cam-1").await.token;
    let second = at_one.token("small", "cam-2").await.token;
    let taken = post_sdp_as(&whip("cam-1"), &obs_offer(), Some(&first)).await;
    assert_eq!(taken.status, 201, "{}", taken.body);
    let refused = post_sdp_as(&whip("cam-2"), &obs_offer(), Some(&second)).await;
    assert_eq!(refused.status, 503, "{}", refused.body);

    let list = |admin: &Admin| {
        let mut admin = admin.cloned();
        async move {
            let request = admin.req(pb::ListAlarmsRequest {
                room: "small".into(),
                recent_seconds: None,
            });
            admin
                .clients
                .rooms
                .list_alarms(request)
                .await
                .ok()
                .map(|r| r.into_inner().alarms)
        }
    };
    let alarm = eventually(LIMIT, "n1's alarm listed at n2", || async {
        list(&at_two)
            .await?
            .into_iter()
            .find(|a| a.kind == pb::AlarmKind::RoomFull as i32)
    })
    .await;
    let acknowledge = at_two.req(pb::AcknowledgeAlarmRequest {
        room: "small".into(),
        alarm_id: alarm.id,
    });
    at_two
        .clients
        .rooms
        .acknowledge_alarm(acknowledge)
        .await
        .expect("AcknowledgeAlarm at n2");
    eventually(LIMIT, "the acknowledgement at n1", || async {
        list(&at_one)
            .await?
            .into_iter()
            .find(|a| a.id == alarm.id && a.acknowledged.is_some())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_does_not_start_without_its_redis_and_says_why() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    redis.kill().await;
    let mut config = vigil_tests::test_config();
    config.insecure_no_auth = false;
    config.cluster = Some(ClusterConfig {
        redis_url: url,
        node_id: "n1".into(),
        node_url: None,
        capacity: 0,
        relay_ip: "127.0.0.1".parse().expect("literal address"),
    });
    let started = Instant::now();
    let Err(e) = Vigil::start(config).await else {
        panic!("started without Redis");
    };
    assert!(e.to_string().contains("--redis-url"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_at_one_node_hangs_up_and_keeps_out_at_another() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let (mut at_one, at_two) = (Admin::of(&one).await, Admin::of(&two).await);
    at_one.create_room("site").await.expect("CreateRoom at n1");
    let token = at_one.token("site", "cam-1").await.token;
    let mut publisher = Publisher::connect_as(&base_url(&one), "site", "cam-1", &token)
        .await
        .unwrap_or_else(|r| panic!("WHIP at n1: {} {}", r.status, r.body));
    publisher.start_media();
    let mut feed = at_one.watch(&one, None).await;

    let ban = at_two.req(pb::HangUpRequest {
        room: "site".into(),
        identity: "cam-1".into(),
        ban_seconds: 600,
    });
    at_two
        .clients
        .rooms
        .clone()
        .hang_up(ban)
        .await
        .expect("HangUp with a ban at n2");
    let reason = feed
        .wait_for(LIMIT, "cam-1 hung up at n1", |e| left(e, "cam-1"))
        .await;
    assert_eq!(reason, pb::LeaveReason::HungUp as i32);
    let fresh = at_one.token("site", "cam-1").await.token;
    let kept_out = post_sdp_as(
        &format!("{}/whip/site/cam-1", base_url(&one)),
        &obs_offer(),
        Some(&fresh),
    )
    .await;
    assert_eq!(kept_out.status, 403, "{}", kept_out.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_relayed_with_tokens_is_listed_once_at_any_node() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let (mut at_one, mut at_two) = (Admin::of(&one).await, Admin::of(&two).await);
    at_one.create_room("site").await.expect("CreateRoom at n1");
    let cam = at_one.token("site", "cam-1").await;
    let wall = at_two.token("site", "wall-1").await;
    let mut publisher = Publisher::connect_as(&base_url(&one), "site", "cam-1", &cam.token)
        .await
        .unwrap_or_else(|r| panic!("WHIP at n1: {} {}", r.status, r.body));
    publisher.start_media();
    // The heartbeats tell n2 where cam-1 is published.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A viewer at n2: n2's relay is admitted at n1 with a token n2 signs.
    let viewer = Viewer::connect_as(&base_url(&two), "site", "cam-1", Some(&wall.token))
        .await
        .unwrap_or_else(|r| panic!("WHEP at n2: {} {}", r.status, r.body));
    viewer.wait_keyframes(1).await;

    for admin in [&mut at_one, &mut at_two] {
        let request = admin.req(pb::ListParticipantsRequest {
            room: "site".into(),
            ..Default::default()
        });
        let listed = admin
            .clients
            .rooms
            .list_participants(request)
            .await
            .expect("ListParticipants")
            .into_inner()
            .participants;
        let names: Vec<&str> = listed.iter().map(|p| p.identity.as_str()).collect();
        assert_eq!(names, ["cam-1", "wall-1"], "no relay listed: {listed:?}");
        assert!(listed[0].publishing);
        assert_eq!(listed[0].viewer_count, 1, "wall-1 at n2, not n2's relay");
        assert_eq!(listed[1].watching, ["cam-1"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_rings_at_the_callees_node_and_plays_the_caller_from_another() {
    let redis = RedisServer::start().await;
    let (one, two) = (node(&redis, "n1").await, node(&redis, "n2").await);
    let mut at_one = Admin::of(&one).await;
    at_one.create_room("site").await.expect("CreateRoom");
    let desk_token = at_one.token("site", "desk").await;
    let field_token = at_one.token("site", "field-1").await;
    // The dispatcher's desk publishes at n1, the field user at n2.
    let mut desk = Publisher::connect_as(&base_url(&one), "site", "desk", &desk_token.token)
        .await
        .unwrap_or_else(|r| panic!("desk at n1: {} {}", r.status, r.body));
    desk.start_media();
    let mut field = Publisher::connect_as(&base_url(&two), "site", "field-1", &field_token.token)
        .await
        .unwrap_or_else(|r| panic!("field-1 at n2: {} {}", r.status, r.body));
    field.start_media();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut feed = at_one.watch(&one, None).await;

    let request = at_one.req(pb::CallRequest {
        room: "site".into(),
        caller: "desk".into(),
        callee: "field-1".into(),
    });
    let call = at_one
        .clients
        .rooms
        .call(request)
        .await
        .expect("Call at n1 for a callee at n2")
        .into_inner();
    assert_eq!(call.whep_path, "/whep/site/desk");
    // The callee answers at its node: n2 relays the desk from n1.
    let answer = Viewer::connect_as(&base_url(&two), "site", "desk", Some(&field_token.token))
        .await
        .unwrap_or_else(|r| panic!("the callee's WHEP at n2: {} {}", r.status, r.body));
    answer.wait_keyframes(1).await;
    feed.wait_for(LIMIT, "CallConnected", |e| match &e.kind {
        Some(Kind::CallConnected(c)) if c.call_id == call.call_id => Some(()),
        _ => None,
    })
    .await;

    let request = at_one.req(pb::EndCallRequest {
        room: "site".into(),
        callee: "field-1".into(),
    });
    let ended = at_one
        .clients
        .rooms
        .end_call(request)
        .await
        .expect("EndCall at n1")
        .into_inner();
    assert_eq!(
        ended.sessions_closed, 2,
        "the callee's playback at n2 and the desk's stream at n1"
    );
    let reason = feed
        .wait_for(LIMIT, "the desk's stream closed", |e| left(e, "desk"))
        .await;
    assert_eq!(reason, pb::LeaveReason::CallEnded as i32);
}
