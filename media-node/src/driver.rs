//! The tokio driver of the SFU core: one task that owns the media UDP socket, the core's timer and the command
//! channel from the HTTP API. It only moves things: datagrams in, commands in, time in, datagrams out.
//!
//! Each turn of the loop waits for one of (a) a command, (b) readable datagrams (then takes up to
//! [`RECV_BATCH`] without waiting), (c) the core's next deadline; hands it to the core with `Instant::now()`
//! — the datagrams of one turn as one batch (`Sfu::handle_datagrams`), so a video frame's packets are written
//! to each subscriber first and each subscriber is drained once; then sends whatever the core queued, a run of
//! datagrams to one subscriber as one GSO `sendmsg` where the kernel can (`gso`). The time a turn spends in
//! the core is the `run_loop_seconds` histogram.

use crate::core::{CloseReason, CreateError, NewSession, SessionCreated, SessionId, SessionOwner, Sfu};
use crate::gso;
use crate::metrics::Metrics;
use homeroom_shared::media::ControlCommand;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::net::Transmit;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Datagrams taken per turn before timers and commands get a look in.
const RECV_BATCH: usize = 64;
/// The loop wakes at least this often even when the core has nothing scheduled.
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// Largest datagram read.
const RECV_BUFFER: usize = 2048;

/// What the HTTP API asks of the core.
#[derive(Debug)]
pub(crate) enum Command {
    Create {
        request: NewSession,
        reply: oneshot::Sender<Result<SessionCreated, CreateError>>,
    },
    Delete {
        id: SessionId,
        owner: SessionOwner,
        reply: oneshot::Sender<Result<(), DeleteError>>,
    },
    /// `decided_at`: the control token's `iat` (the edge's clock), if it has one.
    Control {
        command: ControlCommand,
        decided_at: Option<u64>,
        reply: oneshot::Sender<u32>,
    },
    SetDraining(bool),
    CloseAll {
        reply: oneshot::Sender<()>,
    },
    Stop,
}

/// Why a `DELETE` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeleteError {
    NotFound,
    /// The token's participant or room is not the session's.
    NotOwner,
}

/// Counters the HTTP side reads without a round trip to the core.
#[derive(Debug, Default)]
pub(crate) struct Status {
    pub(crate) sessions: AtomicU32,
    pub(crate) rooms: AtomicU32,
    pub(crate) draining: AtomicBool,
    /// Whether the edge accepted the last heartbeat (the node is registered; stays false without an edge).
    pub(crate) registered: AtomicBool,
    /// Heartbeats refused or failed in a row (0 after an accepted one).
    pub(crate) heartbeat_failures: AtomicU32,
}

impl Status {
    pub(crate) fn registered(&self) -> bool {
        self.registered.load(Ordering::Relaxed)
    }

    pub(crate) fn heartbeat_failures(&self) -> u32 {
        self.heartbeat_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn sessions(&self) -> u32 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub(crate) fn rooms(&self) -> u32 {
        self.rooms.load(Ordering::Relaxed)
    }

    pub(crate) fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Runs the media loop until [`Command::Stop`] or until every command sender is gone.
pub(crate) async fn run(
    mut sfu: Sfu,
    socket: UdpSocket,
    mut commands: mpsc::Receiver<Command>,
    status: Arc<Status>,
    metrics: Metrics,
    udp_gso: bool,
) {
    let mut batch = RecvBatch::new();
    let mut outbox: Vec<Transmit> = Vec::new();
    let udp_gso = udp_gso && {
        let supported = gso::kernel_supports(&socket);
        if !supported {
            tracing::warn!("this kernel has no UDP GSO (Linux 4.18+); sending one datagram per system call");
        }
        supported
    };
    let mut sender = Sender { gso: udp_gso, gso_health: gso::GsoHealth::default() };
    loop {
        let deadline = sfu.next_deadline().min(Instant::now() + MAX_SLEEP);
        let mut stop = false;
        tokio::select! {
            command = commands.recv() => {
                let started = Instant::now();
                match command {
                    Some(command) => stop = handle_command(&mut sfu, command, &status),
                    None => stop = true,
                }
                metrics.run_loop_seconds.observe(started.elapsed().as_secs_f64());
            }
            readable = socket.readable() => {
                let started = Instant::now();
                match readable {
                    Ok(()) => {
                        batch.fill(&socket);
                        sfu.handle_datagrams(Instant::now(), batch.datagrams());
                    }
                    Err(e) => tracing::debug!(error = %e, "UDP socket error (ignored)"),
                }
                metrics.run_loop_seconds.observe(started.elapsed().as_secs_f64());
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let started = Instant::now();
                sfu.handle_timeout(Instant::now());
                metrics.run_loop_seconds.observe(started.elapsed().as_secs_f64());
            }
        }
        sfu.drain_transmits_into(&mut outbox);
        sender.send_all(&socket, &mut outbox, &metrics).await;
        status.sessions.store(u32::try_from(sfu.session_count()).unwrap_or(u32::MAX), Ordering::Relaxed);
        status.rooms.store(u32::try_from(sfu.room_count()).unwrap_or(u32::MAX), Ordering::Relaxed);
        if stop {
            tracing::debug!("media loop stopped");
            return;
        }
    }
}

/// Up to [`RECV_BATCH`] datagrams read in one turn, in fixed buffers reused from turn to turn.
struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    received: Vec<(SocketAddr, usize)>,
}

impl RecvBatch {
    fn new() -> Self {
        RecvBatch { buffers: vec![vec![0u8; RECV_BUFFER]; RECV_BATCH], received: Vec::with_capacity(RECV_BATCH) }
    }

    /// Reads what the socket has without waiting, up to [`RECV_BATCH`] datagrams.
    fn fill(&mut self, socket: &UdpSocket) {
        self.received.clear();
        for buffer in &mut self.buffers {
            match socket.try_recv_from(buffer) {
                Ok((n, source)) => self.received.push((source, n)),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    // ICMP errors (a peer's port closed) surface here on Linux; the next datagram may be fine.
                    tracing::debug!(error = %e, "UDP receive error (ignored)");
                    break;
                }
            }
        }
    }

    fn datagrams(&self) -> impl Iterator<Item = (SocketAddr, &[u8])> {
        self.received
            .iter()
            .zip(&self.buffers)
            .filter_map(|((source, n), buffer)| buffer.get(..*n).map(|datagram| (*source, datagram)))
    }
}

/// Applies one command; returns whether the loop should stop.
fn handle_command(sfu: &mut Sfu, command: Command, status: &Status) -> bool {
    let now = Instant::now();
    match command {
        Command::Create { request, reply } => {
            // A caller that gave up (disconnected, timed out) never learns the session's id: close it at once
            // instead of letting it hold capacity and one of the participant's sessions until the idle reap.
            if let Err(Ok(orphan)) = reply.send(sfu.create_session(now, request)) {
                sfu.close_session(now, orphan.id, CloseReason::Abandoned);
            }
        }
        Command::Delete { id, owner, reply } => {
            let result = match sfu.owner(id) {
                None => Err(DeleteError::NotFound),
                Some(actual) if actual != owner => Err(DeleteError::NotOwner),
                Some(_) => {
                    sfu.close_session(now, id, CloseReason::Deleted);
                    Ok(())
                }
            };
            let _ = reply.send(result);
        }
        Command::Control { command, decided_at, reply } => {
            // The edge's clock when it has one, so that decisions and media tokens' `iat` compare on one clock.
            let at = decided_at.unwrap_or_else(|| crate::clock::now().as_secs());
            let _ = reply.send(sfu.control(now, at, &command));
        }
        Command::SetDraining(draining) => {
            sfu.set_draining(draining);
            status.draining.store(draining, Ordering::Relaxed);
        }
        Command::CloseAll { reply } => {
            sfu.close_all(now, CloseReason::Shutdown);
            let _ = reply.send(());
        }
        Command::Stop => return true,
    }
    false
}

/// The send side of the media socket.
struct Sender {
    /// Whether runs to one destination go out as one GSO send; turned off for good when the kernel refuses.
    gso: bool,
    /// Tells a route that cannot take GSO (that run falls back) from a kernel that cannot (GSO goes off).
    gso_health: gso::GsoHealth,
}

impl Sender {
    /// Sends every queued datagram, in order; a full socket buffer waits for room rather than dropping.
    async fn send_all(&mut self, socket: &UdpSocket, outbox: &mut Vec<Transmit>, metrics: &Metrics) {
        let mut rest = outbox.as_slice();
        while !rest.is_empty() {
            let n = if self.gso { gso::run_len(rest).max(1) } else { 1 };
            let (run, tail) = rest.split_at(n.min(rest.len()));
            rest = tail;
            if run.len() > 1 {
                match gso::send_run(socket, run).await {
                    Ok(bytes) => {
                        self.gso_health.succeeded();
                        metrics.datagrams_out.inc_by(run.len() as u64);
                        metrics.datagrams_out_gso.inc_by(run.len() as u64);
                        metrics.udp_bytes_out.inc_by(bytes as u64);
                        continue;
                    }
                    Err(e) if gso::is_unsupported(&e) => match self.gso_health.failed(&e) {
                        gso::Fallback::ThisRun => {
                            let peer = run.first().map(|t| t.destination);
                            tracing::debug!(error = %e, ?peer, "GSO refused on this peer's route; its run goes datagram by datagram");
                        }
                        gso::Fallback::ForGood => {
                            self.gso = false;
                            tracing::warn!(
                                error = %e,
                                "UDP GSO is not available on this kernel or interface; sending one datagram per call"
                            );
                        }
                    },
                    Err(e) => {
                        metrics.send_errors.inc_by(run.len() as u64);
                        tracing::debug!(error = %e, "UDP send failed");
                        continue;
                    }
                }
            }
            for transmit in run {
                send_one(socket, transmit, metrics).await;
            }
        }
        outbox.clear();
    }
}

/// Sends one datagram.
async fn send_one(socket: &UdpSocket, transmit: &Transmit, metrics: &Metrics) {
    let result = match socket.try_send_to(&transmit.contents, transmit.destination) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => socket.send_to(&transmit.contents, transmit.destination).await,
        other => other,
    };
    match result {
        Ok(n) => {
            metrics.datagrams_out.inc();
            metrics.udp_bytes_out.inc_by(n as u64);
        }
        Err(e) => {
            metrics.send_errors.inc();
            tracing::debug!(destination = %transmit.destination, error = %e, "UDP send failed");
        }
    }
}
