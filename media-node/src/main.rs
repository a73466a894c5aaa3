//! `homeroom-media-node`: runs one media node. Flags and `HOMEROOM_*` environment variables; the secret comes
//! from `NODE_SECRET`. Prints `homeroom-media-node listening http=<addr> udp=<addr>` once bound, drains on
//! SIGTERM or ctrl-c.

use anyhow::Context;
use clap::Parser;
use homeroom_media_node::{listening_line, Config, NodeSecret};
use homeroom_shared::{NodeId, Region};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A Homeroom media node (WebRTC SFU).
#[derive(Debug, Parser)]
#[command(name = "homeroom-media-node", version, about)]
struct Args {
    /// Address of the HTTP API.
    #[arg(long, env = "HOMEROOM_HTTP_ADDR", default_value = "127.0.0.1:7000")]
    http_addr: SocketAddr,
    /// Address of the media UDP socket (port 0 picks one).
    #[arg(long, env = "HOMEROOM_UDP_ADDR", default_value = "127.0.0.1:0")]
    udp_addr: SocketAddr,
    /// IP announced to clients in ICE candidates (default: the UDP bind IP; required when binding 0.0.0.0).
    #[arg(long, env = "HOMEROOM_ANNOUNCE_IP")]
    announce_ip: Option<IpAddr>,
    /// This node's id (1-64 of A-Z a-z 0-9 _ -), as the edge knows it.
    #[arg(long, env = "HOMEROOM_NODE_ID", default_value = "media-1")]
    node_id: String,
    /// Region the node serves (e.g. eu-west).
    #[arg(long, env = "HOMEROOM_REGION", default_value = "local")]
    region: String,
    /// Most participant sessions at once.
    #[arg(long, env = "HOMEROOM_CAPACITY", default_value_t = 500)]
    capacity: u32,
    /// Base URL of the HTTP API as clients reach it (default http://<http addr>).
    #[arg(long, env = "HOMEROOM_PUBLIC_URL")]
    public_url: Option<String>,
    /// Base URL of the edge (e.g. http://127.0.0.1:8787); enables heartbeats.
    #[arg(long, env = "HOMEROOM_EDGE_URL")]
    edge_url: Option<String>,
    /// Heartbeat period in milliseconds (shortened to a third of the edge's lease if that is shorter).
    #[arg(long, env = "HOMEROOM_HEARTBEAT_MS", default_value_t = 5000)]
    heartbeat_ms: u64,
    /// Seconds to wait for sessions to end after SIGTERM/ctrl-c before closing them.
    #[arg(long, env = "HOMEROOM_DRAIN_TIMEOUT_SECS", default_value_t = 30)]
    drain_timeout_secs: u64,
    /// Seconds without packets after which a session is closed.
    #[arg(long, env = "HOMEROOM_IDLE_TIMEOUT_SECS", default_value_t = 15)]
    idle_timeout_secs: u64,
    /// Initial bandwidth estimate towards subscribers in kbit/s; 0 turns bandwidth estimation off.
    #[arg(long, env = "HOMEROOM_BWE_KBPS", default_value_t = 2000)]
    bwe_kbps: u32,
    /// Send runs of datagrams to one peer as one UDP GSO call (Linux); false sends one datagram per call.
    #[arg(long, env = "HOMEROOM_UDP_GSO", default_value_t = true, action = clap::ArgAction::Set)]
    udp_gso: bool,
    /// Log filter (tracing EnvFilter syntax), e.g. info or homeroom_media_node=debug.
    #[arg(long, env = "HOMEROOM_LOG", default_value = "info")]
    log: String,
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        let node_id = NodeId::parse(&self.node_id).context("--node-id / HOMEROOM_NODE_ID")?;
        let region = Region::parse(&self.region).context("--region / HOMEROOM_REGION")?;
        // The secret comes from the environment only: a flag would show it in `ps` and in clap's errors.
        let secret = std::env::var("NODE_SECRET")
            .context("NODE_SECRET is not set: export the secret shared with the edge (never pass it as a flag)")?;
        let mut config = Config::new(node_id, region, NodeSecret::new(secret));
        config.http_addr = self.http_addr;
        config.udp_addr = self.udp_addr;
        config.announce_ip = self.announce_ip;
        config.capacity = self.capacity;
        config.public_url = self.public_url.clone();
        config.edge_url = self.edge_url.clone();
        config.heartbeat_interval = Duration::from_millis(self.heartbeat_ms);
        config.drain_timeout = Duration::from_secs(self.drain_timeout_secs);
        config.idle_timeout = Duration::from_secs(self.idle_timeout_secs);
        config.bwe_initial_kbps = (self.bwe_kbps > 0).then_some(self.bwe_kbps);
        config.udp_gso = self.udp_gso;
        config.validate()?;
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log).context("--log / HOMEROOM_LOG")?;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let config = args.config()?;
    let node = homeroom_media_node::start(config).await?;
    println!("{}", listening_line(node.http_addr(), node.udp_addr()));
    let shutdown = async {
        shutdown_signal().await;
        // A second SIGTERM/ctrl-c during the drain means "now".
        tokio::spawn(async {
            shutdown_signal().await;
            tracing::warn!("second shutdown signal: exiting without finishing the drain");
            std::process::exit(130);
        });
    };
    node.run_until(shutdown).await?;
    Ok(())
}

/// Completes on SIGTERM or ctrl-c (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only ctrl-c stops the node");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
