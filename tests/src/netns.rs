//! A private network for tests whose peers gather no loopback candidates.
//!
//! Headless Chromium, aiortc (aioice) and GStreamer (libnice) skip loopback
//! interfaces when they gather ICE candidates, so on 127.0.0.1 alone they
//! have nothing to pair. [`run`] gives such a test a network of its own: a
//! fresh network namespace with `lo` up and a veth pair whose two ends
//! ([`SERVER_IP`], [`CLIENT_IP`]) both live in it. Nothing in it can reach
//! the machine's real interfaces, so no packet leaves the namespace.
//!
//! A network namespace belongs to a thread, not to a process: the test body
//! runs on a thread of its own that calls `unshare(CLONE_NEWNET)`, and every
//! thread and child process it starts (the tokio workers, Vigil's sockets,
//! the browser or Python peer) inherits the namespace. Other tests in the
//! same binary keep the host's namespace.
//!
//! Creating a namespace needs `CAP_NET_ADMIN`: root, as in CI, or
//! `unshare -rn cargo test` for a non-root user.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;

use vigil_gateway::{Config, Vigil};

/// The veth end Vigil binds its ICE sockets to.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
/// The other veth end, where the external peer finds a usable interface.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);

/// Runs `test` to completion inside a new network namespace, on a
/// two-worker tokio runtime created in it. A panic in the test is re-raised
/// on the caller's thread, so the test fails with its own message.
pub fn run<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let thread = std::thread::Builder::new()
        .name("netns-test".into())
        .spawn(move || {
            enter_private_network();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(test());
        })
        .expect("spawn the namespace thread");
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Moves the calling thread into a new network namespace and sets up `lo`
/// and the veth pair.
fn enter_private_network() {
    // SAFETY: unshare only changes the calling thread's namespaces; it
    // touches no memory of ours.
    let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "unshare(CLONE_NEWNET) failed ({}): this test needs CAP_NET_ADMIN to \
         build a private network; run it as root or under `unshare -rn`",
        std::io::Error::last_os_error()
    );
    let server = format!("{SERVER_IP}/24");
    let client = format!("{CLIENT_IP}/24");
    for args in [
        &["link", "set", "lo", "up"][..],
        &[
            "link", "add", "vigil0", "type", "veth", "peer", "name", "vigil1",
        ],
        &["addr", "add", &server, "dev", "vigil0"],
        &["addr", "add", &client, "dev", "vigil1"],
        &["link", "set", "vigil0", "up"],
        &["link", "set", "vigil1", "up"],
        // A host has a route for multicast (its default route); without one,
        // joining the mDNS group fails with ENODEV, and webrtc-rs opens an
        // mDNS socket for every peer connection (Vigil's and the harness's).
        &["route", "add", "224.0.0.0/4", "dev", "vigil0"],
    ] {
        let status = Command::new("ip")
            .args(args)
            .status()
            .expect("run `ip` (Debian package iproute2)");
        assert!(status.success(), "`ip {}` failed", args.join(" "));
    }
}

/// Drops every UDP datagram to or from `ip` in the calling thread's
/// namespace (an nftables rule; Debian's `nftables`), as a network that
/// blocks UDP does: only TCP reaches a server there. Traffic between two
/// addresses of one namespace passes the output hook once, whatever the
/// interface, so one chain covers both directions.
pub fn block_udp(ip: Ipv4Addr) {
    require_program("nft", "install Debian's `nftables` package");
    let ip = ip.to_string();
    let chain = "{ type filter hook output priority 0; }";
    let mut commands = vec![
        vec!["add", "table", "inet", "vigil_test"],
        vec!["add", "chain", "inet", "vigil_test", "output", chain],
    ];
    for end in ["daddr", "saddr"] {
        commands.push(vec![
            "add",
            "rule",
            "inet",
            "vigil_test",
            "output",
            "ip",
            end,
            &ip,
            "meta",
            "l4proto",
            "udp",
            "drop",
        ]);
    }
    for args in commands {
        let status = Command::new("nft")
            .args(&args)
            .status()
            .expect("run `nft` (Debian package nftables)");
        assert!(status.success(), "`nft {}` failed", args.join(" "));
    }
}

/// Drops one UDP datagram in `one_in` (at random) arriving for `port` in
/// the calling thread's namespace, from any sender: an nftables rule on
/// the input hook, so senders see no error (a rule on the output hook
/// makes their `sendmsg` fail with EPERM instead). [`stop_losing_udp`]
/// removes it.
pub fn lose_udp_to(port: u16, one_in: u32) {
    require_program("nft", "install Debian's `nftables` package");
    let port = port.to_string();
    let one_in = one_in.to_string();
    let chain = "{ type filter hook input priority 0; }";
    for args in [
        &["add", "table", "inet", "vigil_loss"][..],
        &["add", "chain", "inet", "vigil_loss", "input", chain],
        &[
            "add",
            "rule",
            "inet",
            "vigil_loss",
            "input",
            "udp",
            "dport",
            &port,
            "numgen",
            "random",
            "mod",
            &one_in,
            "==",
            "0",
            "drop",
        ],
    ] {
        nft(args);
    }
}

/// Ends [`lose_udp_to`]'s loss.
pub fn stop_losing_udp() {
    nft(&["delete", "table", "inet", "vigil_loss"]);
}

fn nft(args: &[&str]) {
    let status = Command::new("nft")
        .args(args)
        .status()
        .expect("run `nft` (Debian package nftables)");
    assert!(status.success(), "`nft {}` failed", args.join(" "));
}

/// Starts Vigil for a namespace test: HTTP on 127.0.0.1 (port 0), ICE on
/// [`SERVER_IP`], otherwise [`crate::test_config`] changed by `tweak`.
pub async fn start_server(tweak: impl FnOnce(&mut Config)) -> Vigil {
    crate::start_server(|config| {
        config.media_listen = std::net::SocketAddr::new(IpAddr::V4(SERVER_IP), 0);
        tweak(config);
    })
    .await
}

/// Checks that an external program the test drives is installed, and
/// otherwise fails saying what to install (`./test.sh` installs them all).
pub fn require_program(program: &str, install_hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{program}` is not installed: {install_hint} (`./test.sh` installs it)")
        })
}

/// Checks what a headless Chromium test drives (Debian's `chromium`, Node.js
/// and playwright-core) and returns the path of `tests/browser/{script}`.
pub fn browser_driver(script: &str) -> PathBuf {
    require_program(
        "chromium",
        "install Debian's `chromium` package (never a downloaded browser)",
    );
    require_program("node", "install Node.js 20 or later");
    let browser_dir = tests_dir().join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: run ./test.sh (or `npm ci --prefix tests/browser`)"
    );
    browser_dir.join(script)
}

/// The directory of the test crate, where interop scripts live.
pub fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
