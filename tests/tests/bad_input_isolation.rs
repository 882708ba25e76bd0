//! A concurrent barrage of bad requests disturbs no other session: a live
//! publisher and viewer keep their sessions, entity-tags and video.

use std::time::Duration;

use bytes::Bytes;
use tokio::task::JoinSet;
use vigil_tests::conformance::{
    H263_SENDONLY, HOST_CANDIDATE, SDP, SDP_FRAG, UNKNOWN_ID, assert_2xx, hand_offer, obs_offer,
    offered_credentials, oversized_offer, patch, publisher_offer, recvonly_offer, trickle_fragment,
    two_video_offer,
};
use vigil_tests::http_client::request;
use vigil_tests::peers::{Publisher, Viewer};
use vigil_tests::{base_url, eventually, start_server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_disturbs_no_other_session() {
    let vigil = start_server(|_| {}).await;
    let base = base_url(&vigil);
    let mut publisher = Publisher::connect(&base, "room", "cam").await;
    publisher.start_media();
    let viewer = Viewer::connect(&base, "room", "cam")
        .await
        .expect("WHEP 201");
    viewer.peer.wait_connected().await;
    eventually(Duration::from_secs(10), "video at the viewer", || async {
        (!viewer.video().is_empty()).then_some(())
    })
    .await;
    let (ufrag, pwd) = offered_credentials(&viewer.peer).await;
    let (second_peer, second_offer) = publisher_offer().await;

    // (step, method, url, headers, body, expected status)
    type Bad = (
        String,
        &'static str,
        String,
        Vec<(&'static str, String)>,
        String,
        u16,
    );
    let sdp = || vec![("content-type", SDP.to_owned())];
    let frag = |if_match: Option<&str>| {
        let mut headers = vec![("content-type", SDP_FRAG.to_owned())];
        if let Some(tag) = if_match {
            headers.push(("if-match", tag.to_owned()));
        }
        headers
    };
    let whip = format!("{base}/whip/room/cam");
    let viewer_url = viewer.session.url.clone();
    let publisher_url = publisher.session.url.clone();
    let trickle = trickle_fragment(&ufrag, &pwd, &[HOST_CANDIDATE]);
    let restart = trickle_fragment("Abcd", "Efghijklmnopqrstuvwxyz12", &[HOST_CANDIDATE]);
    let bad: Vec<Bad> = vec![
        (
            "POST text/plain".into(),
            "POST",
            whip.clone(),
            vec![("content-type", "text/plain".into())],
            obs_offer(),
            415,
        ),
        (
            "POST hello".into(),
            "POST",
            whip.clone(),
            sdp(),
            "hello".into(),
            400,
        ),
        (
            "POST v=0".into(),
            "POST",
            whip.clone(),
            sdp(),
            "v=0\r\n".into(),
            400,
        ),
        (
            "POST bad name".into(),
            "POST",
            format!("{base}/whip/bad%20name/s"),
            sdp(),
            obs_offer(),
            400,
        ),
        (
            "POST 70 kB".into(),
            "POST",
            whip.clone(),
            sdp(),
            oversized_offer(),
            413,
        ),
        (
            "POST H263".into(),
            "POST",
            format!("{base}/whip/room/other"),
            sdp(),
            hand_offer(&[H263_SENDONLY]),
            422,
        ),
        (
            "POST two videos".into(),
            "POST",
            format!("{base}/whip/room/other"),
            sdp(),
            two_video_offer(),
            422,
        ),
        (
            "POST recvonly WHIP".into(),
            "POST",
            format!("{base}/whip/room/other"),
            sdp(),
            recvonly_offer(),
            422,
        ),
        (
            "second WHIP to the live stream".into(),
            "POST",
            whip.clone(),
            sdp(),
            second_offer,
            409,
        ),
        (
            "hand-written second WHIP".into(),
            "POST",
            whip.clone(),
            sdp(),
            obs_offer(),
            409,
        ),
        (
            "WHEP unpublished".into(),
            "POST",
            format!("{base}/whep/room/nobody"),
            sdp(),
            recvonly_offer(),
            409,
        ),
        (
            "WHEP sendonly offer".into(),
            "POST",
            format!("{base}/whep/room/cam"),
            sdp(),
            obs_offer(),
            422,
        ),
        (
            "PUT endpoint".into(),
            "PUT",
            whip.clone(),
            sdp(),
            obs_offer(),
            405,
        ),
        (
            "POST JSON to viewer session".into(),
            "POST",
            viewer_url.clone(),
            vec![("content-type", "application/json".into())],
            r#"{"audio":true}"#.into(),
            405,
        ),
        (
            "viewer PATCH wrong If-Match".into(),
            "PATCH",
            viewer_url.clone(),
            frag(Some("\"wrong\"")),
            trickle.clone(),
            412,
        ),
        (
            "viewer PATCH restart wrong If-Match".into(),
            "PATCH",
            viewer_url.clone(),
            frag(Some("\"wrong\"")),
            restart.clone(),
            412,
        ),
        (
            "viewer PATCH no If-Match".into(),
            "PATCH",
            viewer_url.clone(),
            frag(None),
            trickle.clone(),
            428,
        ),
        (
            "viewer PATCH application/sdp".into(),
            "PATCH",
            viewer_url.clone(),
            sdp(),
            trickle.clone(),
            415,
        ),
        (
            "viewer PATCH hello".into(),
            "PATCH",
            viewer_url.clone(),
            frag(Some(viewer.session.etag.as_str())),
            "hello".into(),
            400,
        ),
        (
            "publisher PATCH wrong If-Match".into(),
            "PATCH",
            publisher_url.clone(),
            frag(Some("\"wrong\"")),
            trickle.clone(),
            412,
        ),
        (
            "publisher PATCH hello".into(),
            "PATCH",
            publisher_url.clone(),
            frag(Some(publisher.session.etag.as_str())),
            "hello".into(),
            400,
        ),
        (
            "PATCH unknown session".into(),
            "PATCH",
            format!("{base}/sessions/{UNKNOWN_ID}"),
            frag(Some("\"x\"")),
            trickle.clone(),
            404,
        ),
        (
            "DELETE unknown session".into(),
            "DELETE",
            format!("{base}/sessions/{UNKNOWN_ID}"),
            vec![],
            String::new(),
            404,
        ),
        (
            "DELETE not-an-id".into(),
            "DELETE",
            format!("{base}/sessions/not-an-id"),
            vec![],
            String::new(),
            404,
        ),
        (
            "GET /nope".into(),
            "GET",
            format!("{base}/nope"),
            vec![],
            String::new(),
            404,
        ),
    ];
    let mut barrage = JoinSet::new();
    for round in 0..2 {
        for (step, method, url, headers, body, expected) in bad.clone() {
            barrage.spawn(async move {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                let response = request(method, &url, &headers, body).await;
                (format!("{step} (round {round})"), expected, response)
            });
        }
    }
    while let Some(joined) = barrage.join_next().await {
        let (step, expected, response) = joined.expect("bad request task");
        assert_eq!(
            response.status, expected,
            "{step}: expected {expected}, got {} with body {:?}",
            response.status, response.body
        );
    }

    // Both sessions are untouched: still there, and video keeps flowing.
    for (url, who) in [(&publisher_url, "publisher"), (&viewer_url, "viewer")] {
        let response = request("GET", url, &[], Bytes::new()).await;
        assert_2xx(
            &response,
            &format!("GET the {who} session after the barrage"),
        );
    }
    let before = viewer.video().len();
    eventually(
        Duration::from_secs(10),
        "viewer video to keep growing after the barrage",
        || async { (viewer.video().len() > before + 100).then_some(()) },
    )
    .await;
    // A trickle with the right entity-tag still works: the tag did not change.
    let response = patch(
        &viewer_url,
        &[("if-match", viewer.session.etag.as_str())],
        &trickle,
    )
    .await;
    assert_eq!(
        response.status, 204,
        "viewer trickle with its own ETag after the barrage: {}",
        response.body
    );
    let _ = second_peer.pc.close().await;
    vigil.shutdown().await;
}
