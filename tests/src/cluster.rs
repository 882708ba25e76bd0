//! A deployment for the cluster tests (issue 17): one real `redis-server`
//! and several `vigil` processes joined to it with `--redis-url`, each on
//! loopback ports of its own, each a `--node-id` of `node1`, `node2`, ….

use std::time::{Duration, Instant};

use crate::process::VigilProcess;
use crate::redis::RedisServer;

/// Redis and its nodes.
pub struct Deployment {
    /// The shared Redis.
    pub redis: RedisServer,
    /// The nodes; `None` once killed.
    pub nodes: Vec<Option<VigilProcess>>,
}

impl Deployment {
    /// Starts Redis and `n` nodes with `extra` flags each, and waits until
    /// every node sees the others alive.
    pub async fn start(n: usize, extra: &[&str]) -> Deployment {
        Self::start_each(&vec![extra; n]).await
    }

    /// Starts Redis and a node per entry of `extra`, with those flags.
    pub async fn start_each(extra: &[&[&str]]) -> Deployment {
        let n = extra.len();
        let redis = RedisServer::start().await;
        let mut deployment = Deployment {
            redis,
            nodes: Vec::new(),
        };
        for (i, extra) in (1..=n).zip(extra) {
            let node = deployment.spawn(i, extra).await;
            deployment.nodes.push(Some(node));
        }
        deployment.wait_live(n).await;
        // Each node reads the others' heartbeats once a second.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        deployment
    }

    /// Starts node `i` (1-based) again with `extra` flags.
    pub async fn restart(&mut self, i: usize, extra: &[&str]) {
        self.nodes[i - 1] = None;
        let node = self.spawn(i, extra).await;
        self.nodes[i - 1] = Some(node);
    }

    async fn spawn(&self, i: usize, extra: &[&str]) -> VigilProcess {
        let url = self.redis.url();
        let id = format!("node{i}");
        let mut args = vec!["--redis-url", &url, "--node-id", &id];
        args.extend_from_slice(extra);
        VigilProcess::start(&args).await
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> &VigilProcess {
        self.nodes[i - 1].as_ref().expect("node is running")
    }

    /// Node `i`'s HTTP base URL.
    pub fn base(&self, i: usize) -> String {
        self.node(i).base_url()
    }

    /// SIGKILLs node `i`: no goodbye to Redis or to its peers.
    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i - 1].as_ref() {
            node.signal(libc::SIGKILL);
        }
        if let Some(mut node) = self.nodes[i - 1].take() {
            node.exit_within(Duration::from_secs(5)).await;
        }
    }

    /// Node `i`'s viewer sessions now, from its `/metrics`
    /// (`vigil_sessions{role="viewer"}`, sampled about once a second): a
    /// relay from another node counts as one.
    pub async fn viewer_sessions(&self, i: usize) -> u64 {
        let metrics =
            crate::http_client::request("GET", &format!("{}/metrics", self.base(i)), &[], "")
                .await
                .body;
        metrics
            .lines()
            .find(|l| l.starts_with("vigil_sessions{") && l.contains("role=\"viewer\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// Waits until Redis holds `n` live heartbeats (`vigil:node:*`).
    pub async fn wait_live(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live = self.live_nodes().await;
            if live.len() == n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{n} nodes should heartbeat; live: {live:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The ids of the nodes whose heartbeat is in Redis now.
    pub async fn live_nodes(&self) -> Vec<String> {
        let members = self.redis.cli(&["SMEMBERS", "vigil:nodes"]).await;
        let mut live = Vec::new();
        for id in members.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if self
                .redis
                .cli(&["EXISTS", &format!("vigil:node:{id}")])
                .await
                == "1"
            {
                live.push(id.to_owned());
            }
        }
        live.sort();
        live
    }
}
