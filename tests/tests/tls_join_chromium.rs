//! A phone on the LAN going live, as headless Chromium (issue 14): the
//! console's join page over `https://` on a non-loopback address, served
//! by Vigil's own TLS with `--tls-self-signed`. Browsers give the camera
//! to secure contexts only, so this is what makes field users possible
//! without a proxy.
//!
//! `tests/browser/tls_join.mjs` first opens the page trusting nothing and
//! must be refused (the certificate is Vigil's own CA's, which no browser
//! knows); then trusts only the CA's public key
//! (`--ignore-certificate-errors-spki-list`, which accepts a chain that
//! contains that key and nothing else), finds the page a secure context,
//! and goes live with its fake camera. While it is live, this test plays
//! the stream with a WHEP viewer over https and asserts on the video that
//! arrived; and it checks the `/ca.crt` the page fetched.
//!
//! Everything runs in a private network namespace (`vigil_tests::netns`):
//! Vigil's HTTP port listens on 10.231.0.1, the namespace's veth address,
//! and media on it too (Chromium gathers no loopback candidates).

use std::time::Duration;

use vigil_gateway::Credentials;
use vigil_gateway::tls::TlsSource;
use vigil_tests::browser::{BrowserDriver, assert_driver_ok, driver_args};
use vigil_tests::control::{
    ADMIN_KEY, SIGNING_SECRET, clients, create_room, publish_and_subscribe, subscribe_only, token,
};
use vigil_tests::peers::Viewer;
use vigil_tests::{TempDir, http_client, netns};

/// The whole driver run: two browser launches and a join.
const DRIVER_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn a_field_user_goes_live_from_the_https_join_page() {
    netns::run(|| async {
        let data = TempDir::new("tls-join");
        let vigil = netns::start_server(|config| {
            config.insecure_no_auth = false;
            config.secrets = Some(vigil_control::store::Secrets {
                admin_key: ADMIN_KEY.to_owned(),
                signing_secret: SIGNING_SECRET.to_vec(),
            });
            config.data_dir = Some(data.path().to_owned());
            config.tls = Some(TlsSource::SelfSigned { names: Vec::new() });
            config.http_listen = std::net::SocketAddr::from((netns::SERVER_IP, 0));
        })
        .await;
        assert!(matches!(vigil.credentials, Credentials::AdminKey { .. }));
        let made = vigil
            .tls
            .as_ref()
            .and_then(|tls| tls.self_signed.clone())
            .expect("self-signed TLS");
        let server_ip = netns::SERVER_IP.to_string();
        assert!(made.names.contains(&server_ip), "{:?}", made.names);
        http_client::trust(&made.ca_der);

        let base = format!("https://{}", vigil.http_addr);
        let mut c = clients(&vigil).await;
        create_room(&mut c, "site-1").await;
        let field = token(&mut c, "site-1", "field-1", publish_and_subscribe()).await;
        let link = format!("{base}/join/site-1#token={field}");

        let artifacts = vigil_tests::browser::artifacts_dir("tls-join");
        let mut driver = BrowserDriver::spawn(
            "tls_join.mjs",
            driver_args(
                &[
                    ("base", &base),
                    ("link", &link),
                    ("spki", &made.ca_spki_sha256),
                ],
                artifacts,
            ),
            DRIVER_LIMIT,
        );
        // Wait for the page to be live (or for the driver's failed result).
        let first = driver.next().await;
        if first["event"] != "live" {
            assert_driver_ok("tls join", &first["result"], &driver.stderr());
            panic!("the driver ended before going live: {first}");
        }

        // What the page sends reaches the server: a viewer over https plays it.
        let viewer_token = token(&mut c, "site-1", "viewer-1", subscribe_only()).await;
        let viewer = Viewer::connect_as(&base, "site-1", "field-1", Some(&viewer_token))
            .await
            .unwrap_or_else(|r| panic!("WHEP over https: {} {}", r.status, r.body));
        viewer.peer.wait_connected().await;
        viewer.wait_keyframes(1).await;
        vigil_tests::eventually(Duration::from_secs(10), "50 video packets", || async {
            (viewer.video().len() >= 50).then_some(())
        })
        .await;
        let packets = viewer.video().len();
        driver.send("done").await;
        let result = driver.result(|_, _| {}).await;
        assert_driver_ok("tls join", &result, &driver.stderr());
        let s = &result["steps"];

        let refused = s["untrusted"]["refused"].as_str().unwrap_or_default();
        assert!(
            refused.contains("ERR_CERT_AUTHORITY_INVALID"),
            "without trusting the CA the page must not load: {}",
            s["untrusted"]
        );
        assert_eq!(s["secureContext"], true, "{s}");
        assert_eq!(s["origin"], base.as_str());
        assert_eq!(s["status"]["state"], "live", "{s}");
        assert_eq!(s["statusAfter"]["state"], "live", "still live: {s}");
        assert_eq!(s["ca"]["status"], 200);
        assert_eq!(s["ca"]["type"], "application/x-x509-ca-cert");
        let hex: String = made.ca_der.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(s["ca"]["hex"], hex.as_str(), "/ca.crt is the CA");
        eprintln!(
            "https join page live on {base}; the viewer got {packets} video packets; \
             driver took {:?}",
            driver.elapsed()
        );
        vigil.shutdown().await;
    });
}
