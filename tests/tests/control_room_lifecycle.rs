//! Rooms over gRPC with the generated client: create, get, list, delete;
//! admin RPCs need the admin key; health reports SERVING.

use tonic::Code;
use vigil_proto::v1 as pb;
use vigil_tests::control::{ADMIN_KEY, admin, clients, create_room, secure_server, with_bearer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_lifecycle() {
    let vigil = secure_server(|_| {}).await;
    let mut c = clients(&vigil).await;

    let created = c
        .rooms
        .create_room(admin(pb::CreateRoomRequest {
            name: "site-1".into(),
            limits: Some(pb::RoomLimits {
                max_publishers: Some(4),
                max_viewers: None,
            }),
            alarm_rules: Some(pb::AlarmRules {
                stall_after_ms: Some(1500),
                ..Default::default()
            }),
        }))
        .await
        .expect("CreateRoom")
        .into_inner();
    assert_eq!(created.name, "site-1");
    assert_eq!(created.limits.unwrap().max_publishers, Some(4));
    let rules = created.alarm_rules.unwrap();
    assert_eq!(rules.stall_after_ms, Some(1500));
    assert_eq!(
        rules.max_keyframe_interval_ms,
        Some(5_000),
        "defaults filled in (the keyframe wait)"
    );

    let duplicate = c
        .rooms
        .create_room(admin(pb::CreateRoomRequest {
            name: "site-1".into(),
            ..Default::default()
        }))
        .await
        .expect_err("duplicate");
    assert_eq!(duplicate.code(), Code::AlreadyExists);

    create_room(&mut c, "site-2").await;
    let listed = c
        .rooms
        .list_rooms(admin(pb::ListRoomsRequest::default()))
        .await
        .expect("ListRooms")
        .into_inner();
    let names: Vec<_> = listed.rooms.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["site-1", "site-2"]);

    let got = c
        .rooms
        .get_room(admin(pb::GetRoomRequest {
            name: "site-1".into(),
        }))
        .await
        .expect("GetRoom")
        .into_inner();
    assert_eq!((got.publishers, got.viewers), (0, 0));

    c.rooms
        .delete_room(admin(pb::DeleteRoomRequest {
            name: "site-1".into(),
        }))
        .await
        .expect("DeleteRoom");
    let gone = c
        .rooms
        .get_room(admin(pb::GetRoomRequest {
            name: "site-1".into(),
        }))
        .await
        .expect_err("deleted room");
    assert_eq!(gone.code(), Code::NotFound);

    let bad_name = c
        .rooms
        .create_room(admin(pb::CreateRoomRequest {
            name: "no spaces".into(),
            ..Default::default()
        }))
        .await
        .expect_err("invalid name");
    assert_eq!(bad_name.code(), Code::InvalidArgument);
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_rpcs_need_the_admin_key() {
    let vigil = secure_server(|_| {}).await;
    let mut c = clients(&vigil).await;
    let anonymous = c
        .rooms
        .list_rooms(pb::ListRoomsRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let wrong = c
        .rooms
        .list_rooms(with_bearer(pb::ListRoomsRequest::default(), "not-the-key"))
        .await
        .expect_err("wrong key");
    assert_eq!(wrong.code(), Code::Unauthenticated);
    let token = c
        .tokens
        .create_token(pb::CreateTokenRequest::default())
        .await
        .expect_err("no key");
    assert_eq!(token.code(), Code::Unauthenticated);
    c.rooms
        .list_rooms(with_bearer(pb::ListRoomsRequest::default(), ADMIN_KEY))
        .await
        .expect("right key");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_serving() {
    let vigil = secure_server(|_| {}).await;
    assert_eq!(
        vigil_tests::control::health(&vigil).await,
        [tonic_health::pb::health_check_response::ServingStatus::Serving; 4],
        "{:?}",
        vigil_tests::control::HEALTH_SERVICES
    );
    vigil.shutdown().await;
}

/// The browser console speaks gRPC-web over HTTP/1.1 to the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_serves_http1_clients() {
    let vigil = secure_server(|_| {}).await;
    let mut c = clients(&vigil).await;
    create_room(&mut c, "web-room").await;
    // An empty ListRoomsRequest in one gRPC-web data frame: flag 0, length 0.
    let frame = vec![0u8, 0, 0, 0, 0];
    let response = vigil_tests::http_client::request(
        "POST",
        &format!("http://{}/vigil.v1.RoomService/ListRooms", vigil.grpc_addr),
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("authorization", &format!("Bearer {ADMIN_KEY}")),
        ],
        frame,
    )
    .await;
    assert_eq!(response.status, 200, "{response:?}");
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/grpc-web")),
        "{response:?}"
    );
    assert!(
        response.body.contains("web-room"),
        "the room is in the reply body"
    );
    vigil.shutdown().await;
}

/// Server reflection lists the services, so grpcurl needs no proto files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let vigil = secure_server(|_| {}).await;
    let mut client = ServerReflectionClient::new(vigil_tests::control::channel(&vigil).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = client
        .server_reflection_info(tokio_stream::once(request))
        .await
        .expect("reflection")
        .into_inner();
    let reply = replies.message().await.expect("reply").expect("one reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("not a service list: {reply:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "vigil.v1.RoomService",
        "vigil.v1.TokenService",
        "vigil.v1.EventService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} in {names:?}"
        );
    }
    vigil.shutdown().await;
}

/// ListRooms a page at a time: every room once, in name order, over more
/// rooms than a page; a room created between pages does not shift the
/// pages (the token names the last room seen, not an offset); a token the
/// server did not give is INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_rooms_pages_through_more_rooms_than_a_page() {
    let vigil = secure_server(|_| {}).await;
    let mut c = clients(&vigil).await;
    let mut expected: Vec<String> = (0..25).map(|i| format!("room-{i:02}")).collect();
    for name in &expected {
        create_room(&mut c, name).await;
    }
    let mut seen = Vec::new();
    let mut page_token = String::new();
    let mut pages = Vec::new();
    loop {
        let page = c
            .rooms
            .list_rooms(admin(pb::ListRoomsRequest {
                page_size: 10,
                page_token: page_token.clone(),
            }))
            .await
            .expect("ListRooms page")
            .into_inner();
        pages.push(page.rooms.len());
        seen.extend(page.rooms.into_iter().map(|r| r.name));
        if pages.len() == 1 {
            // Sorts before every room not yet listed: not on a later page.
            create_room(&mut c, "room-00a").await;
        }
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
        assert!(pages.len() < 10, "paging does not end");
    }
    assert_eq!(pages, [10, 10, 5]);
    assert_eq!(seen, expected);

    // The default page holds them all (26 < 100), now with the new one.
    let all = c
        .rooms
        .list_rooms(admin(pb::ListRoomsRequest::default()))
        .await
        .expect("ListRooms")
        .into_inner();
    expected.insert(1, "room-00a".into());
    let names: Vec<_> = all.rooms.into_iter().map(|r| r.name).collect();
    assert_eq!(names, expected);
    assert!(all.next_page_token.is_empty());

    let bad = c
        .rooms
        .list_rooms(admin(pb::ListRoomsRequest {
            page_size: 10,
            page_token: "offset=10".into(),
        }))
        .await
        .expect_err("a forged token");
    assert_eq!(bad.code(), Code::InvalidArgument);
    vigil.shutdown().await;
}

/// A request whose string field is not UTF-8 does not decode: the caller's
/// fault, so INVALID_ARGUMENT (prost's default would be INTERNAL), and the
/// server goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_is_invalid_argument() {
    let vigil = secure_server(|_| {}).await;
    // CreateRoomRequest { name (field 1, length-delimited) = 0xff 0xfe }.
    let message = [0x0a, 0x02, 0xff, 0xfe];
    let mut frame = vec![0u8, 0, 0, 0, message.len() as u8];
    frame.extend_from_slice(&message);
    let response = vigil_tests::http_client::request(
        "POST",
        &format!("http://{}/vigil.v1.RoomService/CreateRoom", vigil.grpc_addr),
        &[
            ("content-type", "application/grpc-web+proto"),
            ("x-grpc-web", "1"),
            ("authorization", &format!("Bearer {ADMIN_KEY}")),
        ],
        frame,
    )
    .await;
    // gRPC-web carries the status in a header (trailers-only answer) or
    // in the trailer frame at the end of the body.
    let status = response
        .header("grpc-status")
        .map(str::to_owned)
        .or_else(|| {
            response.body.split("grpc-status:").nth(1).map(|rest| {
                rest.trim_start()
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect()
            })
        });
    assert_eq!(
        status.as_deref(),
        Some("3"),
        "INVALID_ARGUMENT (3): {response:?}"
    );
    // Still serving, and nothing was created.
    let mut c = clients(&vigil).await;
    let listed = c
        .rooms
        .list_rooms(admin(pb::ListRoomsRequest::default()))
        .await
        .expect("ListRooms")
        .into_inner();
    assert!(listed.rooms.is_empty(), "{listed:?}");
    vigil.shutdown().await;
}
