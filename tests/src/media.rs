//! Media nodes under test: the real `homeroom-media-node` binary, registered with an [`Edge`](crate::edge::Edge)
//! by heartbeats. Killing one (SIGKILL) is a node crash.

use crate::repo_root;
use crate::tokens::dev_var;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

static BUILD: Mutex<bool> = Mutex::new(false);

/// Builds the media node binary once per process (a no-op when it is up to date) and returns its path.
pub fn media_node_binary() -> anyhow::Result<PathBuf> {
    let mut built = BUILD.lock().map_err(|_| anyhow::anyhow!("build lock poisoned"))?;
    let path = repo_root().join("target/debug/homeroom-media-node");
    if !*built {
        let status = Command::new("cargo")
            .args(["build", "-q", "-p", "homeroom-media-node", "--bin", "homeroom-media-node"])
            .current_dir(repo_root())
            .status()?;
        anyhow::ensure!(status.success(), "building homeroom-media-node failed ({status})");
        *built = true;
    }
    Ok(path)
}

/// A running media node process.
#[derive(Debug)]
pub struct MediaNode {
    pub id: String,
    pub region: String,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    pub udp: String,
    child: Option<Child>,
}

impl MediaNode {
    /// Starts a node `id` in `region` that heartbeats to `edge_http` (e.g. `http://127.0.0.1:8787`).
    pub fn start(id: &str, region: &str, edge_http: &str) -> anyhow::Result<MediaNode> {
        let binary = media_node_binary()?;
        let mut child = Command::new(binary)
            .args(["--http-addr", "127.0.0.1:0", "--udp-addr", "127.0.0.1:0"])
            .args(["--node-id", id, "--region", region, "--edge-url", edge_http])
            .args(["--heartbeat-ms", "1000", "--drain-timeout-secs", "2", "--log", "warn"])
            .env("NODE_SECRET", dev_var("NODE_SECRET")?)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        // "homeroom-media-node listening http=127.0.0.1:PORT udp=127.0.0.1:PORT"
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_owned)
                .ok_or_else(|| anyhow::anyhow!("unexpected first line from the media node: {line:?}"))
        };
        let http = field("http=")?;
        let udp = field("udp=")?;
        Ok(MediaNode {
            id: id.to_owned(),
            region: region.to_owned(),
            url: format!("http://{http}"),
            udp,
            child: Some(child),
        })
    }

    /// Kills the node (SIGKILL): no drain, no last heartbeat — a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until the node answers `/healthz`.
    pub async fn wait_healthy(&self, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/healthz", self.url)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("media node {} not healthy after {limit:?}", self.id)
    }

    /// The node's Prometheus metrics text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        Ok(reqwest::get(format!("{}/metrics", self.url)).await?.text().await?)
    }
}

impl Drop for MediaNode {
    fn drop(&mut self) {
        self.kill();
    }
}
