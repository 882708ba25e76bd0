//! DELETE, GET and HEAD on endpoints and sessions, and OPTIONS: CORS
//! preflights and the ICE servers listed as one `Link` header each.

use bytes::Bytes;
use vigil_tests::conformance::{
    SDP, assert_2xx, assert_ice_server_links, assert_problem, lists, obs_offer, publisher_offer,
    two_ice_servers,
};
use vigil_tests::http_client::{post_sdp, request};
use vigil_tests::peers::Publisher;
use vigil_tests::{base_url, start_server};

// ---------------------------------------------------------------------------
// DELETE, GET, HEAD
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ends_the_session_once() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let response = request("DELETE", &publisher.session.url, &[], Bytes::new()).await;
    assert_eq!(
        response.status, 200,
        "DELETE a live session: {}",
        response.body
    );
    let response = request("DELETE", &publisher.session.url, &[], Bytes::new()).await;
    assert_problem(&response, 404, "second DELETE");
    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_problem(&response, 404, "GET a deleted session");
    // The stream is free again.
    let response = post_sdp(&format!("{base}/whip/room/cam"), &obs_offer()).await;
    assert_eq!(
        response.status, 201,
        "publish again after DELETE: {}",
        response.body
    );
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_ignores_if_match() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    let response = request(
        "DELETE",
        &publisher.session.url,
        &[("if-match", "\"whatever\"")],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        response.status, 200,
        "DELETE with a non-matching If-Match: {}",
        response.body
    );
    let response = request("GET", &publisher.session.url, &[], Bytes::new()).await;
    assert_problem(&response, 404, "GET after DELETE with If-Match");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_on_endpoints_are_2xx_without_content() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    for path in ["/whip/r/s", "/whep/r/s"] {
        for method in ["GET", "HEAD"] {
            let response = request(method, &format!("{base}{path}"), &[], Bytes::new()).await;
            assert_2xx(&response, &format!("{method} {path}"));
            assert!(
                response.body.is_empty(),
                "{method} {path} has no content: {:?}",
                response.body
            );
        }
    }
    let response = request("GET", &format!("{base}/healthz"), &[], Bytes::new()).await;
    assert_eq!(response.status, 200, "GET /healthz");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_head_on_a_live_session_are_2xx() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let publisher = Publisher::connect(&base, "room", "cam").await;
    for method in ["GET", "HEAD"] {
        let response = request(method, &publisher.session.url, &[], Bytes::new()).await;
        assert_2xx(&response, &format!("{method} a live session"));
        assert!(
            response.body.is_empty(),
            "{method} a live session has no content"
        );
    }
    vigil.shutdown().await;
}

// ---------------------------------------------------------------------------
// OPTIONS, CORS and ICE servers
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_allows_whip_and_has_no_link() {
    let vigil = start_server(|c| c.ice_servers = two_ice_servers()).await;
    let base = base_url(&vigil);
    for path in ["/whip/r/s", "/whep/r/s"] {
        let response = request(
            "OPTIONS",
            &format!("{base}{path}"),
            &[
                ("origin", "http://example.com"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization, content-type",
                ),
            ],
            Bytes::new(),
        )
        .await;
        let step = format!("preflight OPTIONS {path}");
        assert_eq!(response.status, 200, "{step}: {}", response.body);
        assert!(
            response.header("access-control-allow-origin").is_some(),
            "{step}: Access-Control-Allow-Origin"
        );
        let methods = response.header("access-control-allow-methods");
        assert!(
            lists(methods, "POST"),
            "{step}: Access-Control-Allow-Methods {methods:?} lists POST"
        );
        let headers = response.header("access-control-allow-headers");
        for name in ["Authorization", "Content-Type", "If-Match"] {
            assert!(
                lists(headers, name),
                "{step}: Access-Control-Allow-Headers {headers:?} lists {name}"
            );
        }
        assert_eq!(
            response.header("accept-post"),
            Some(SDP),
            "{step}: Accept-Post"
        );
        assert!(
            response.header_all("link").is_empty(),
            "{step}: no Link on a preflight: {:?}",
            response.header_all("link")
        );
    }
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_options_lists_ice_servers_one_link_each() {
    let vigil = start_server(|c| c.ice_servers = two_ice_servers()).await;
    let base = base_url(&vigil);
    let response = request("OPTIONS", &format!("{base}/whip/r/s"), &[], Bytes::new()).await;
    assert_eq!(response.status, 200, "plain OPTIONS: {}", response.body);
    assert_eq!(
        response.header("accept-post"),
        Some(SDP),
        "plain OPTIONS Accept-Post"
    );
    assert_ice_server_links(&response, "plain OPTIONS");
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_201_lists_ice_servers_one_link_each() {
    let vigil = start_server(|c| c.ice_servers = two_ice_servers()).await;
    let base = base_url(&vigil);
    let (peer, offer) = publisher_offer().await;
    let response = post_sdp(&format!("{base}/whip/room/cam"), &offer).await;
    assert_eq!(response.status, 201, "WHIP POST: {}", response.body);
    assert_ice_server_links(&response, "WHIP 201");
    let _ = peer.pc.close().await;
    vigil.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_link_headers_without_ice_servers() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let response = request("OPTIONS", &format!("{base}/whip/r/s"), &[], Bytes::new()).await;
    assert_eq!(response.status, 200, "plain OPTIONS: {}", response.body);
    assert!(
        response.header_all("link").is_empty(),
        "no ICE servers configured, no Link: {:?}",
        response.header_all("link")
    );
    vigil.shutdown().await;
}
