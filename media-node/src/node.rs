//! Starting, running and draining a node: binds both sockets, spawns the media loop, the HTTP server and the
//! heartbeat loop, and supervises the shutdown sequence.
//!
//! Shutdown ("drain"): the phase goes [`Phase::Running`] → [`Phase::Draining`]: new sessions get 503
//! `unavailable`, heartbeats say `draining: true` (at once), existing sessions carry on. When the last session
//! ends, or after `drain_timeout`, the remaining sessions are closed (DTLS close_notify), the phase goes
//! [`Phase::Stopped`] (a last heartbeat with `load: 0`), the HTTP server finishes in-flight requests (for at
//! most a few seconds, see `http::serve`) and stops, and the media loop ends.
//!
//! A media loop that ends on its own (a panic in the core, or in str0m under it) takes every session with
//! it. The supervisor notices at once: it logs the cause, marks the node draining and stops it (a last
//! heartbeat with `draining: true`, so the edge places no more rooms here and re-places the node's rooms when
//! the lease lapses), and [`NodeHandle::run_until`] returns [`NodeError::MediaLoop`], so the binary exits
//! non-zero for its service manager to restart it.

use crate::config::{Config, ConfigError};
use crate::core::{Sfu, SfuConfig};
use crate::driver::{self, Command, Status};
use crate::heartbeat::Heartbeat;
use crate::http::{self, AppState};
use crate::metrics::Metrics;
use homeroom_shared::auth::TokenKey;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Commands queued between the HTTP API and the media loop.
const COMMAND_QUEUE: usize = 256;

/// Where a node is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    Draining,
    Stopped,
}

/// Why a node could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot bind the HTTP API to {addr}: {source}")]
    BindHttp { addr: SocketAddr, source: std::io::Error },
    #[error("cannot bind the media UDP socket to {addr}: {source}")]
    BindUdp { addr: SocketAddr, source: std::io::Error },
    #[error("a node task panicked or was cancelled: {0}")]
    Task(String),
    #[error("the media loop stopped unexpectedly ({0}); every session on the node is gone")]
    MediaLoop(String),
}

/// A running node. Dropping the handle does not stop the node; call [`NodeHandle::shutdown`].
#[derive(Debug)]
pub struct NodeHandle {
    http_addr: SocketAddr,
    udp_addr: SocketAddr,
    candidate_addr: SocketAddr,
    public_url: String,
    metrics: Metrics,
    phase: watch::Sender<Phase>,
    supervisor: JoinHandle<Result<(), NodeError>>,
}

impl NodeHandle {
    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound media UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The ICE host candidate announced to clients (announce IP, UDP port).
    pub fn candidate_addr(&self) -> SocketAddr {
        self.candidate_addr
    }

    /// The HTTP API's base URL as announced to the edge.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// `http://{http_addr}`, for local clients and tests.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Starts draining (idempotent); returns at once.
    pub fn begin_drain(&self) {
        self.phase.send_if_modified(|phase| {
            let start = *phase == Phase::Running;
            if start {
                *phase = Phase::Draining;
            }
            start
        });
    }

    /// Drains, then waits until the node has stopped.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.begin_drain();
        self.wait().await
    }

    /// Waits until the node has stopped (after someone called [`NodeHandle::begin_drain`]).
    pub async fn wait(self) -> Result<(), NodeError> {
        self.supervisor.await.map_err(|e| NodeError::Task(e.to_string()))?
    }

    /// Runs until `shutdown` completes, then drains; or until the node stops by itself (its media loop
    /// died), with that error.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
        tokio::select! {
            stopped = &mut self.supervisor => return stopped.map_err(|e| NodeError::Task(e.to_string()))?,
            () = shutdown => tracing::info!("shutdown requested; draining"),
        }
        self.shutdown().await
    }
}

/// Binds the sockets and starts the node. The returned handle knows the bound addresses.
pub async fn start(config: Config) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| NodeError::BindHttp { addr: config.http_addr, source })?;
    let http_addr = listener.local_addr().map_err(|source| NodeError::BindHttp { addr: config.http_addr, source })?;
    let socket = bind_udp(config.udp_addr, config.udp_buffer_bytes)
        .map_err(|source| NodeError::BindUdp { addr: config.udp_addr, source })?;
    let udp_addr = socket.local_addr().map_err(|source| NodeError::BindUdp { addr: config.udp_addr, source })?;
    let candidate_addr = SocketAddr::new(config.announce_ip.unwrap_or(udp_addr.ip()), udp_addr.port());
    let public_url = config.public_url.clone().unwrap_or_else(|| format!("http://{http_addr}"));

    let metrics = Metrics::new();
    let sfu_config = SfuConfig {
        local_addr: udp_addr,
        candidate_addr,
        capacity: config.capacity,
        idle_timeout: config.idle_timeout,
        keyframe_interval: config.keyframe_interval,
        bwe_initial_kbps: config.bwe_initial_kbps,
    };
    let sfu = Sfu::new(sfu_config, metrics.clone(), Instant::now());
    let status = Arc::new(Status::default());
    let (commands, command_rx) = mpsc::channel(COMMAND_QUEUE);
    let media_loop =
        tokio::spawn(driver::run(sfu, socket, command_rx, Arc::clone(&status), metrics.clone(), config.udp_gso));

    let key = TokenKey::new(config.node_secret.expose());
    let state = AppState {
        commands: commands.clone(),
        key: key.clone(),
        node_id: config.node_id.clone(),
        region: config.region.clone(),
        capacity: config.capacity,
        status: Arc::clone(&status),
        metrics: metrics.clone(),
        has_edge: config.edge_url.is_some(),
        opens: Arc::new(crate::http::OpenLimit::new(Instant::now())),
    };
    let (phase, phase_rx) = watch::channel(Phase::Running);
    let mut stopped = phase_rx.clone();
    let server = tokio::spawn(http::serve(listener, http::router(state), http::ServeLimits::default(), async move {
        let _ = stopped.wait_for(|p| *p == Phase::Stopped).await;
    }));
    let heartbeat = config.edge_url.as_deref().map(|edge| {
        let heartbeat = Heartbeat {
            endpoint: Heartbeat::endpoint_for(edge),
            node_id: config.node_id.to_string(),
            region: config.region.to_string(),
            public_url: public_url.clone(),
            capacity: config.capacity,
            interval: config.heartbeat_interval,
            key,
            metrics: metrics.clone(),
        };
        tracing::info!(endpoint = %heartbeat.endpoint, "heartbeats to the edge enabled");
        tokio::spawn(heartbeat.run(Arc::clone(&status), phase_rx.clone()))
    });
    if heartbeat.is_none() {
        tracing::warn!("no --edge-url: the node registers with no edge, so no rooms are placed on it (standalone)");
    }
    if let Some(edge) = &config.edge_url {
        for warning in reachability_warnings(edge, &public_url, candidate_addr.ip()) {
            tracing::warn!("{warning}");
        }
    }
    tracing::info!(
        node = %config.node_id, region = %config.region, http = %http_addr, udp = %udp_addr,
        candidate = %candidate_addr, public_url = %public_url, capacity = config.capacity, "media node started"
    );
    let supervisor = tokio::spawn(supervise(Supervised {
        phase: phase.clone(),
        phase_rx,
        commands,
        status,
        drain_timeout: config.drain_timeout,
        media_loop,
        server,
        heartbeat,
    }));
    Ok(NodeHandle { http_addr, udp_addr, candidate_addr, public_url, metrics, phase, supervisor })
}

/// Runs a node until `shutdown` completes, then drains it. For binaries: pass a signal future.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    start(config).await?.run_until(shutdown).await
}

struct Supervised {
    phase: watch::Sender<Phase>,
    phase_rx: watch::Receiver<Phase>,
    commands: mpsc::Sender<Command>,
    status: Arc<Status>,
    drain_timeout: Duration,
    media_loop: JoinHandle<()>,
    server: JoinHandle<()>,
    heartbeat: Option<JoinHandle<()>>,
}

async fn supervise(mut s: Supervised) -> Result<(), NodeError> {
    let died = tokio::select! {
        changed = s.phase_rx.wait_for(|p| *p != Phase::Running) => {
            if changed.is_err() {
                return Ok(());
            }
            None
        }
        ended = &mut s.media_loop => Some(ended),
    };
    if let Some(ended) = died {
        return media_loop_died(s, ended).await;
    }
    let _ = s.commands.send(Command::SetDraining(true)).await;
    s.status.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(sessions = s.status.sessions(), timeout = ?s.drain_timeout, "draining: no new sessions");
    let deadline = Instant::now() + s.drain_timeout;
    while s.status.sessions() > 0 && Instant::now() < deadline {
        // The media loop may die mid-drain too: then its sessions are gone and nothing is left to wait for.
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            ended = &mut s.media_loop => return media_loop_died(s, ended).await,
        }
    }
    let remaining = s.status.sessions();
    if remaining > 0 {
        tracing::info!(remaining, "drain timeout reached; closing the remaining sessions");
    }
    let (reply, closed) = oneshot::channel();
    if s.commands.send(Command::CloseAll { reply }).await.is_ok() {
        let _ = closed.await;
    }
    let _ = s.phase.send(Phase::Stopped);
    s.server.await.map_err(|e| NodeError::Task(e.to_string()))?;
    let _ = s.commands.send(Command::Stop).await;
    s.media_loop.await.map_err(|e| NodeError::Task(e.to_string()))?;
    if let Some(heartbeat) = s.heartbeat {
        let _ = tokio::time::timeout(Duration::from_secs(6), heartbeat).await;
    }
    tracing::info!("media node stopped");
    Ok(())
}

/// The media loop ended while the node was running: stop the node, telling the edge on the way out.
async fn media_loop_died(s: Supervised, ended: Result<(), tokio::task::JoinError>) -> Result<(), NodeError> {
    let cause = match ended {
        Ok(()) => "it returned".to_owned(),
        Err(e) if e.is_panic() => format!("it panicked: {}", panic_message(e.into_panic())),
        Err(e) => e.to_string(),
    };
    tracing::error!(
        %cause, sessions = s.status.sessions(),
        "the media loop stopped unexpectedly; stopping the node (a last heartbeat says draining) — restart it"
    );
    s.status.draining.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = s.phase.send(Phase::Stopped);
    let _ = tokio::time::timeout(Duration::from_secs(5), s.server).await;
    if let Some(heartbeat) = s.heartbeat {
        let _ = tokio::time::timeout(Duration::from_secs(6), heartbeat).await;
    }
    Err(NodeError::MediaLoop(cause))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
}

/// Whether `host` (of a URL, or an IP as text) names this machine only, or no machine (`0.0.0.0`: a
/// listening address, which a client cannot connect to).
fn is_local_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local_ip = |ip: IpAddr| ip.is_loopback() || ip.is_unspecified() || ip.to_canonical().is_loopback();
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(local_ip)
}

/// The host of an `http(s)://[user@]host[:port][/…]` URL.
fn url_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    }
}

/// What an operator should hear at start when the node registers with an edge on another machine but
/// announces addresses that only this machine can reach: the edge would place rooms on it that no client
/// can join. (With the edge on this machine too, as in development, loopback is right.)
pub(crate) fn reachability_warnings(edge_url: &str, public_url: &str, candidate_ip: IpAddr) -> Vec<String> {
    if is_local_host(url_host(edge_url)) {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    if is_local_host(url_host(public_url)) {
        warnings.push(format!(
            "the node registers with {edge_url} under the URL {public_url}, which only this machine can reach: \
             clients will fail to create sessions; set --public-url (HOMEROOM_PUBLIC_URL) to its public URL"
        ));
    }
    if candidate_ip.is_loopback() {
        warnings.push(format!(
            "the node announces the media address {candidate_ip}, which only this machine can reach: clients' \
             ICE will fail; set --announce-ip (HOMEROOM_ANNOUNCE_IP) to its public IP"
        ));
    }
    warnings
}

/// The warning for a socket buffer the kernel kept smaller than asked. `reported` is what the socket says:
/// Linux caps a request at `net.core.rmem_max` / `wmem_max` without an error, and reports double what it
/// granted (the other half is for its own bookkeeping).
fn buffer_warning(which: &str, sysctl: &str, asked: usize, reported: usize) -> Option<String> {
    let granted = if cfg!(target_os = "linux") { reported / 2 } else { reported };
    (granted < asked).then(|| {
        format!(
            "the UDP {which} buffer is {granted} bytes, not the {asked} asked for: bursts of video may be \
             dropped; raise the kernel's cap (`sysctl -w {sysctl}={asked}`) or lower --udp-buffer-bytes"
        )
    })
}

/// The media socket, with larger buffers than the OS default (bursts of video would otherwise be dropped).
fn bind_udp(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(buffer_bytes) {
        tracing::warn!(error = %e, buffer_bytes, "could not enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer_bytes) {
        tracing::warn!(error = %e, buffer_bytes, "could not enlarge the UDP send buffer");
    }
    let sizes = [
        ("receive", "net.core.rmem_max", socket.recv_buffer_size()),
        ("send", "net.core.wmem_max", socket.send_buffer_size()),
    ];
    for (which, sysctl, got) in sizes {
        if let Some(warning) = got.ok().and_then(|got| buffer_warning(which, sysctl, buffer_bytes, got)) {
            tracing::warn!("{warning}");
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_of_a_remote_edge_is_warned_about_addresses_only_it_can_reach() {
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let public: IpAddr = "203.0.113.10".parse().unwrap();
        assert!(reachability_warnings("http://127.0.0.1:8787", "http://127.0.0.1:7000", loopback).is_empty());
        assert!(reachability_warnings("http://localhost:8787/", "http://localhost:7000", loopback).is_empty());
        let both = reachability_warnings("https://homeroom.example.workers.dev", "http://127.0.0.1:7000", loopback);
        assert_eq!(both.len(), 2, "{both:?}");
        assert!(both[0].contains("--public-url") && both[1].contains("--announce-ip"), "{both:?}");
        let url_only = reachability_warnings("https://edge.example", "http://[::1]:7000", public);
        assert_eq!(url_only.len(), 1, "{url_only:?}");
        assert!(reachability_warnings("https://edge.example", "https://media.example:443", public).is_empty());
        assert!(reachability_warnings("http://u:p@127.0.0.1:8787", "http://127.0.0.1:7000", loopback).is_empty());
        let unspecified = reachability_warnings("https://edge.example", "http://0.0.0.0:7000", public);
        assert_eq!(unspecified.len(), 1, "a listening address is no URL for clients: {unspecified:?}");
        let mapped = reachability_warnings("https://edge.example", "http://[::ffff:127.0.0.1]:7000", public);
        assert_eq!(mapped.len(), 1, "{mapped:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_buffer_capped_by_the_kernel_names_the_sysctl() {
        // Linux reports double what it granted: 425,984 is the default cap of 212,992 bytes.
        let warning = buffer_warning("receive", "net.core.rmem_max", 4 << 20, 425_984).unwrap();
        assert!(warning.contains("is 212992 bytes") && warning.contains("sysctl -w net.core.rmem_max=4194304"));
        let capped_at_3_mib = buffer_warning("receive", "net.core.rmem_max", 4 << 20, 6 << 20);
        assert!(capped_at_3_mib.is_some(), "6 MiB reported is 3 MiB granted, less than the 4 asked");
        assert_eq!(buffer_warning("send", "net.core.wmem_max", 4 << 20, 8 << 20), None);
    }

    #[tokio::test]
    async fn a_media_loop_that_dies_stops_the_node_as_draining_with_its_cause() {
        let (phase, phase_rx) = watch::channel(Phase::Running);
        let (commands, _queue) = mpsc::channel(1);
        let status = Arc::new(Status::default());
        let mut stopped = phase_rx.clone();
        let server = tokio::spawn(async move {
            let _ = stopped.wait_for(|p| *p == Phase::Stopped).await;
        });
        let media_loop = tokio::spawn(async { panic!("str0m went wrong") });
        let supervised = Supervised {
            phase,
            phase_rx: phase_rx.clone(),
            commands,
            status: Arc::clone(&status),
            drain_timeout: Duration::from_secs(30),
            media_loop,
            server,
            heartbeat: None,
        };
        let result = tokio::time::timeout(Duration::from_secs(10), supervise(supervised)).await;
        let error = result.expect("the supervisor notices at once").expect_err("and reports an error");
        assert!(matches!(&error, NodeError::MediaLoop(cause) if cause.contains("str0m went wrong")), "{error}");
        assert!(status.draining(), "heartbeats say draining");
        assert_eq!(*phase_rx.borrow(), Phase::Stopped, "the server and the heartbeats were told to stop");
    }
}
