//! A reusable str0m-based test peer: publishes synthetic audio, video (optionally simulcast) and screen share to
//! a media node over real UDP, subscribes to the rest of its room, and counts what it receives per track.
//!
//! ```no_run
//! # async fn demo(node_url: &str, token: &str) -> Result<(), homeroom_media_node::peer::PeerError> {
//! use homeroom_media_node::peer::{PeerOptions, TestPeer};
//! use homeroom_shared::protocol::MediaKind;
//! use std::time::Duration;
//!
//! let publisher = TestPeer::connect(node_url, token, PeerOptions::publisher()).await?;
//! let stats = publisher.wait_for(Duration::from_secs(10), |s| s.connected_at.is_some()).await?;
//! # let _ = (stats, MediaKind::Audio);
//! publisher.close().await;
//! # Ok(()) }
//! ```
//!
//! The peer is driven by a tokio task that owns its UDP socket (bound on `127.0.0.1:0` unless told otherwise);
//! [`TestPeer::stats`] returns a snapshot at most [`PeerOptions::snapshot_every`] old, while
//! [`TestPeer::packets_received`] and [`TestPeer::take_arrivals`] are always current (load tools use those). The sans-IO half, [`PeerCore`], can
//! also be driven in memory (see [`crate::sim`]).

mod core;
mod gro;
pub(crate) mod media;

pub use self::core::{
    Dialect, FrameArrival, PeerCore, PeerCoreError, PeerOffer, PeerOptions, PeerStats, ReceivedTrack, SIMULCAST_LAYERS,
};
pub use self::media::stamp_us;
use homeroom_shared::media::Quality;
use homeroom_shared::protocol::ApiError;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// What the driver keeps current for the peer's owner, cheaply, after every turn of its loop.
#[derive(Debug, Default)]
struct Live {
    /// Packets received over all tracks.
    packets: AtomicU64,
    /// Packets sent over all streams.
    sent: AtomicU64,
    /// Media frames sent and received.
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    /// Frames received and send stamps of frames sent, not taken yet (only with
    /// [`PeerOptions::record_latency`]).
    arrivals: Mutex<Vec<FrameArrival>>,
    sent_stamps: Mutex<Vec<u64>>,
}

/// Why a test peer failed.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("could not bind the peer's UDP socket: {0}")]
    Bind(std::io::Error),
    #[error("could not turn on UDP GRO on the peer's socket (it needs Linux 5.0 or later): {0}")]
    Gro(std::io::Error),
    #[error("the HTTP request to the node failed: {0}")]
    Http(String),
    #[error("the node refused: HTTP {status} {code}: {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the node's reply is unusable: {0}")]
    BadReply(String),
    #[error(transparent)]
    Core(#[from] PeerCoreError),
    #[error("timed out after {waited:?}; last stats: {stats:?}")]
    Timeout { waited: Duration, stats: Box<PeerStats> },
}

impl PeerError {
    /// The HTTP status of a refusal, if this is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            PeerError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

enum Command {
    Quality(Quality, Option<String>),
    Stop,
}

/// A connected test peer. Dropping it stops its task (without telling the node); prefer [`TestPeer::close`].
#[derive(Debug)]
pub struct TestPeer {
    session_url: String,
    token: String,
    http: reqwest::Client,
    local_addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Mutex<PeerStats>>,
    live: Arc<Live>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Quality(q, mid) => write!(f, "Quality({q:?}, {mid:?})"),
            Command::Stop => f.write_str("Stop"),
        }
    }
}

impl TestPeer {
    /// Opens a session on the node at `node_url` (e.g. `http://127.0.0.1:7000`) with `media_token`, on a UDP
    /// socket bound to `127.0.0.1:0`.
    pub async fn connect(node_url: &str, media_token: &str, options: PeerOptions) -> Result<TestPeer, PeerError> {
        Self::connect_from(IpAddr::V4(Ipv4Addr::LOCALHOST), node_url, media_token, options).await
    }

    /// Like [`TestPeer::connect`], binding the peer's socket to `bind_ip`.
    pub async fn connect_from(
        bind_ip: IpAddr,
        node_url: &str,
        media_token: &str,
        options: PeerOptions,
    ) -> Result<TestPeer, PeerError> {
        Self::connect_using(reqwest::Client::new(), bind_ip, node_url, media_token, options).await
    }

    /// Like [`TestPeer::connect_from`], with an HTTP client of the caller's (load tools share one: building a
    /// client loads the platform's root certificates).
    pub async fn connect_using(
        http: reqwest::Client,
        bind_ip: IpAddr,
        node_url: &str,
        media_token: &str,
        options: PeerOptions,
    ) -> Result<TestPeer, PeerError> {
        let socket = bind(bind_ip, &options).await?;
        let local_addr = socket.local_addr().map_err(PeerError::Bind)?;
        let (mut core, offer) = PeerCore::new(&options, local_addr, Instant::now())?;

        let base = node_url.trim_end_matches('/');
        let mut url = format!("{base}/v1/sessions");
        if !offer.screen_mids.is_empty() {
            url.push_str(&format!("?screen={}", offer.screen_mids.join(",")));
        }
        let response = http
            .post(&url)
            .bearer_auth(media_token)
            .header(reqwest::header::CONTENT_TYPE, "application/sdp")
            .body(offer.sdp)
            .send()
            .await
            .map_err(|e| PeerError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let location =
            response.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.text().await.map_err(|e| PeerError::Http(e.to_string()))?;
        if status != 201 {
            let error: Option<ApiError> = serde_json::from_str(&body).ok();
            return Err(PeerError::Refused {
                status,
                code: error.as_ref().map_or_else(|| "?".to_owned(), |e| e.code.to_string()),
                message: error.map_or(body, |e| e.message),
            });
        }
        let location = location.ok_or_else(|| PeerError::BadReply("201 without a Location header".into()))?;
        core.accept_answer(&body)?;

        let session_url = format!("{base}{location}");
        Ok(Self::spawn(core, socket, session_url, media_token.to_owned(), http, local_addr, &options))
    }

    /// Packets received so far over all tracks (current, unlike [`TestPeer::stats`]).
    pub fn packets_received(&self) -> u64 {
        self.live.packets.load(Ordering::Relaxed)
    }

    /// Packets sent so far over all streams (current, unlike [`TestPeer::stats`]).
    pub fn packets_sent(&self) -> u64 {
        self.live.sent.load(Ordering::Relaxed)
    }

    /// Media frames sent so far (current).
    pub fn frames_sent(&self) -> u64 {
        self.live.frames_sent.load(Ordering::Relaxed)
    }

    /// Media frames received so far (current): audio packets and the last packet of each video frame.
    pub fn frames_received(&self) -> u64 {
        self.live.frames_received.load(Ordering::Relaxed)
    }

    /// The media frames received since the last call from peers of this process; empty unless
    /// [`PeerOptions::record_latency`].
    pub fn take_arrivals(&self) -> Vec<FrameArrival> {
        take_all(&self.live.arrivals)
    }

    /// The send stamps of the frames sent since the last call; empty unless [`PeerOptions::record_latency`].
    pub fn take_sent_stamps(&self) -> Vec<u64> {
        take_all(&self.live.sent_stamps)
    }

    /// Joins str0m's `chat` example SFU at `url` (its HTTPS endpoint, self-signed: `http` must accept that):
    /// the offer goes as str0m `SdpOffer` JSON in a POST, the answer comes back as `SdpAnswer` JSON, and later
    /// renegotiation runs over the data channel ([`Dialect::Str0mChat`]). The baseline of the SFU benchmark.
    pub async fn connect_str0m_chat(
        http: reqwest::Client,
        bind_ip: IpAddr,
        url: &str,
        options: PeerOptions,
    ) -> Result<TestPeer, PeerError> {
        let options = PeerOptions { dialect: Dialect::Str0mChat, ..options };
        let socket = bind(bind_ip, &options).await?;
        let local_addr = socket.local_addr().map_err(PeerError::Bind)?;
        let (mut core, offer) = PeerCore::new(&options, local_addr, Instant::now())?;
        let offer = str0m::change::SdpOffer::from_sdp_string(&offer.sdp)
            .map_err(|e| PeerError::BadReply(format!("our own offer does not parse: {e}")))?;
        let body = serde_json::to_string(&offer).map_err(|e| PeerError::BadReply(e.to_string()))?;
        let response = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| PeerError::Http(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response.text().await.map_err(|e| PeerError::Http(e.to_string()))?;
        if status != 200 {
            return Err(PeerError::Refused { status, code: "?".into(), message: body });
        }
        let answer: str0m::change::SdpAnswer =
            serde_json::from_str(&body).map_err(|e| PeerError::BadReply(format!("not an SdpAnswer: {e}")))?;
        core.accept_answer(&answer.to_sdp_string())?;
        Ok(Self::spawn(core, socket, url.to_owned(), String::new(), http, local_addr, &options))
    }

    fn spawn(
        core: PeerCore,
        socket: UdpSocket,
        session_url: String,
        token: String,
        http: reqwest::Client,
        local_addr: SocketAddr,
        options: &PeerOptions,
    ) -> TestPeer {
        let stats = Arc::new(Mutex::new(core.stats().clone()));
        let live = Arc::new(Live::default());
        let (commands, receiver) = mpsc::unbounded_channel();
        let shared = Shared {
            stats: Arc::clone(&stats),
            live: Arc::clone(&live),
            every: options.snapshot_every,
            gro: options.gro,
        };
        let task = tokio::spawn(drive(core, socket, receiver, shared));
        TestPeer { session_url, token, http, local_addr, commands, stats, live, task }
    }

    /// The session's URL on the node (`{node}/v1/sessions/{id}`).
    pub fn session_url(&self) -> &str {
        &self.session_url
    }

    /// The peer's UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A recent snapshot of what the peer observed.
    pub fn stats(&self) -> PeerStats {
        match self.stats.lock() {
            Ok(stats) => stats.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Asks the node for `quality` on every received track (`mid: None`) or one of them.
    pub fn set_quality(&self, quality: Quality, mid: Option<String>) {
        let _ = self.commands.send(Command::Quality(quality, mid));
    }

    /// Waits until `condition` holds for the stats, polling every 20 ms, for at most `timeout`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        condition: impl Fn(&PeerStats) -> bool,
    ) -> Result<PeerStats, PeerError> {
        let started = Instant::now();
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return Ok(stats);
            }
            if started.elapsed() >= timeout {
                return Err(PeerError::Timeout { waited: timeout, stats: Box::new(stats) });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `count` holds still for 300 ms (a stream that stopped: packets already on their way have
    /// landed) and returns the settled count; a stream at tens of packets a second never does. Fails with the
    /// last stats if it is still moving after `timeout`.
    pub async fn wait_until_still(
        &self,
        timeout: Duration,
        count: impl Fn(&PeerStats) -> u64,
    ) -> Result<u64, PeerError> {
        const QUIET: Duration = Duration::from_millis(300);
        let started = Instant::now();
        let mut last = count(&self.stats());
        loop {
            tokio::time::sleep(QUIET).await;
            let stats = self.stats();
            let now = count(&stats);
            if now == last {
                return Ok(now);
            }
            if started.elapsed() >= timeout {
                return Err(PeerError::Timeout { waited: timeout, stats: Box::new(stats) });
            }
            last = now;
        }
    }

    /// `DELETE`s the session with the peer's token; returns the HTTP status.
    pub async fn delete(&self) -> Result<u16, PeerError> {
        self.delete_with(&self.token.clone()).await
    }

    /// `DELETE`s the session with another token; returns the HTTP status.
    pub async fn delete_with(&self, token: &str) -> Result<u16, PeerError> {
        let response = self
            .http
            .delete(&self.session_url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| PeerError::Http(e.to_string()))?;
        Ok(response.status().as_u16())
    }

    /// Ends the session on the node (`DELETE`) and stops the peer.
    pub async fn close(mut self) {
        let _ = self.delete().await;
        let _ = self.commands.send(Command::Stop);
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
    }

    /// Stops the peer without telling the node (the node reaps the session when it goes silent).
    pub async fn vanish(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for TestPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the driver shares with its [`TestPeer`].
struct Shared {
    stats: Arc<Mutex<PeerStats>>,
    live: Arc<Live>,
    every: Duration,
    /// The socket has UDP GRO on: reads may hold several datagrams.
    gro: bool,
}

/// Reads per turn of the peer's loop before timers and commands get a look in.
const RECV_BATCH: usize = 64;

/// The peer's run loop: socket, timers and commands around [`PeerCore`].
async fn drive(mut core: PeerCore, socket: UdpSocket, mut commands: mpsc::UnboundedReceiver<Command>, shared: Shared) {
    let mut buf = vec![0u8; if shared.gro { gro::BUFFER_BYTES } else { 2048 }];
    let mut last_snapshot = Instant::now();
    let mut stopping = false;
    loop {
        let deadline = core.next_deadline().min(Instant::now() + Duration::from_millis(100));
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Quality(quality, mid)) => core.set_quality(quality, mid),
                Some(Command::Stop) | None => {
                    core.close();
                    stopping = true;
                }
            },
            ready = socket.readable() => {
                if ready.is_ok() {
                    receive_queued(&mut core, &socket, &mut buf, shared.gro);
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => core.handle_timeout(Instant::now()),
        }
        for transmit in core.take_transmits() {
            let _ = socket.send_to(&transmit.contents, transmit.destination).await;
        }
        shared.live.packets.store(core.stats().packets(), Ordering::Relaxed);
        shared.live.sent.store(core.stats().sent.values().sum(), Ordering::Relaxed);
        shared.live.frames_sent.store(core.stats().frames_sent, Ordering::Relaxed);
        shared.live.frames_received.store(core.stats().frames_received, Ordering::Relaxed);
        keep_all(&shared.live.arrivals, core.take_arrivals());
        keep_all(&shared.live.sent_stamps, core.take_sent_stamps());
        if stopping || last_snapshot.elapsed() >= shared.every {
            last_snapshot = Instant::now();
            if let Ok(mut stats) = shared.stats.lock() {
                *stats = core.stats().clone();
            }
        }
        if stopping {
            return;
        }
    }
}

/// Reads without waiting: hands the core what the socket has queued (a bounded number of reads, so timers
/// and commands get a look in).
fn receive_queued(core: &mut PeerCore, socket: &UdpSocket, buf: &mut [u8], gro: bool) {
    for _ in 0..RECV_BATCH {
        if gro {
            let Ok(read) = gro::try_recv(socket, buf) else { break };
            let Some(data) = buf.get(..read.len) else { break };
            let now = Instant::now();
            for datagram in gro::segments(data, read.segment) {
                core.handle_datagram(now, read.source, datagram);
            }
        } else {
            let Ok((n, source)) = socket.try_recv_from(buf) else { break };
            if let Some(datagram) = buf.get(..n) {
                core.handle_datagram(Instant::now(), source, datagram);
            }
        }
    }
}

/// Binds the peer's socket on `bind_ip` (any port), with GRO if asked for.
async fn bind(bind_ip: IpAddr, options: &PeerOptions) -> Result<UdpSocket, PeerError> {
    let socket = UdpSocket::bind(SocketAddr::new(bind_ip, 0)).await.map_err(PeerError::Bind)?;
    if options.gro {
        gro::enable(&socket).map_err(PeerError::Gro)?;
    }
    Ok(socket)
}

/// Everything in `kept`, leaving it empty.
fn take_all<T>(kept: &Mutex<Vec<T>>) -> Vec<T> {
    match kept.lock() {
        Ok(mut kept) => std::mem::take(&mut *kept),
        Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
    }
}

/// Appends `new` to `kept` (nothing to do for an empty batch).
fn keep_all<T>(kept: &Mutex<Vec<T>>, new: Vec<T>) {
    if new.is_empty() {
        return;
    }
    if let Ok(mut kept) = kept.lock() {
        kept.extend(new);
    }
}
