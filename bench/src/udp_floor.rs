//! The loopback floor of forwarding: what one core of this machine can send when forwarding costs nothing but
//! what every SFU must do per packet and per subscriber — seal it with that subscriber's SRTP key and hand it
//! to the kernel. No str0m session, no RTCP, no timers, no routing: the ceiling for any user-space SFU on this
//! box's UDP, and the reference the media node's own µs per forwarded packet is read against.
//!
//! The packet pattern is the lecture's (see [`crate::sfu`]): per subscriber, a video frame of `video_kbps`
//! split into [`VIDEO_PACKETS`] equal packets 30 times a second, and an 80-byte audio packet 50 times a
//! second. Each packet is an RTP header with a 16-byte extension (authenticated, not encrypted, as in SRTP)
//! that carries the time it was due, then the payload sealed with AES-256-GCM (str0m's aws-lc-rs provider:
//! the profile str0m peers negotiate), one cipher per subscriber.
//!
//! # How a step runs
//! 1. N receiver sockets on 127.0.0.1 are read by this tool's runtime (on the tool's CPU, like the peers of
//!    the lecture); each counts the packets due inside the window and records the latency of audio packets
//!    and of each video frame's last packet (arrival minus due time, one clock).
//! 2. One sender thread, pinned to the node's CPU, runs the schedule for a warm-up and the window: at each
//!    due time it seals the frame for every subscriber and sends it — one `sendto` per datagram, or one
//!    `sendmsg` with `UDP_SEGMENT` per frame and subscriber (the node's GSO path). It never skips: when it
//!    falls behind, the lag shows as latency.
//! 3. The sender's thread CPU (`CLOCK_THREAD_CPUTIME_ID`) over the window, per packet sent, is the floor; the
//!    busy share of its core from `/proc/stat` adds what the kernel did there outside the thread's account
//!    (the loopback delivery runs in softirq on the sending core). The seal calls are timed on their own.

use crate::procfs::{steal_ticks, CpuSnapshot};
use anyhow::Context;
use nix::sys::socket::{sendmsg, setsockopt, sockopt, ControlMessage, MsgFlags, SockaddrStorage};
use nix::time::{clock_gettime, ClockId};
use serde::Serialize;
use std::io::IoSlice;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::crypto::from_feature_flags;

/// Packets per video frame (equal sizes, as libwebrtc's VP8 packetizer makes them).
pub const VIDEO_PACKETS: usize = 6;
const VIDEO_FPS: u64 = 30;
const AUDIO_PPS: u64 = 50;
const AUDIO_PAYLOAD: usize = 80;
/// RTP header (12 bytes) and a one-byte-header extension of 16 bytes (4 + 12): the due time and the kind.
const HEADER: usize = 28;
const GCM_TAG: usize = 16;
/// Where the extension carries the due time (µs since the step's start, u64) and the packet's kind.
const STAMP_AT: usize = 16;
const KIND_AT: usize = 24;
const KIND_VIDEO: u8 = 1;
const KIND_VIDEO_LAST: u8 = 2;
const KIND_AUDIO: u8 = 3;
/// Before the window opens: sockets warm, the schedule steady.
const WARM_UP: Duration = Duration::from_secs(2);
/// After the window: what was due inside it may still arrive.
const DRAIN: Duration = Duration::from_secs(1);

/// How a floor run is shaped.
#[derive(Clone, Debug, Serialize)]
pub struct FloorConfig {
    /// Subscriber counts, in increasing order.
    pub steps: Vec<usize>,
    pub video_kbps: u32,
    pub measure: Duration,
    /// The CPU of the sender thread (the node's CPU in the lecture).
    pub sender_cpu: usize,
}

/// One step of the floor, one send mode.
#[derive(Clone, Debug, Serialize)]
pub struct FloorStep {
    pub subscribers: usize,
    /// `sendto` per datagram, or GSO (one `sendmsg` per frame and subscriber).
    pub gso: bool,
    /// Packets per second the schedule asks for.
    pub offered_pps: f64,
    /// Packets the sender handed to the kernel per second of the window.
    pub sent_pps: f64,
    /// Share of the packets due inside the window that did not arrive within a second after it.
    pub loss_pct: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Share of one core the sender thread used.
    pub sender_cpu_pct: f64,
    /// Sender thread CPU per packet sent.
    pub us_per_packet: f64,
    /// Of which the AES-256-GCM seal calls.
    pub seal_us_per_packet: f64,
    /// Busy share of the sender's core, everything on it (the thread plus the kernel's softirq work there).
    pub core_busy_pct: f64,
    /// That core's busy time per packet sent.
    pub core_us_per_packet: f64,
    /// Share of one core this tool's receivers used (this process without the sender thread).
    pub receivers_cpu_pct: f64,
    pub steal_pct: f64,
}

/// Bytes of one video packet's payload and of one frame, at `video_kbps` and 30 frames a second.
fn video_payload(video_kbps: u32) -> usize {
    let frame = (u64::from(video_kbps) * 1000 / 8 / VIDEO_FPS) as usize;
    frame.div_ceil(VIDEO_PACKETS).max(1)
}

/// What the sender thread reports at the end of a step.
#[derive(Debug, Default)]
struct SenderReport {
    /// Packets whose due time fell inside the window (what the receivers should count).
    due_in_window: u64,
    /// Packets sent while the wall clock was inside the window, and the thread CPU over that time.
    sent_in_window: u64,
    cpu_in_window: Duration,
    seal_in_window: Duration,
    /// How far behind its schedule the sender ever was.
    max_lag: Duration,
    error: Option<String>,
}

/// One subscriber as the sender sees it: where to send, and its own cipher.
struct Route {
    to: SockaddrStorage,
    addr: SocketAddr,
    cipher: Box<dyn str0m::crypto::AeadAes256GcmCipher>,
    seq: u16,
}

fn thread_cpu() -> Duration {
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map(Duration::from).unwrap_or_default()
}

fn pin_this_thread(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).with_context(|| format!("CPU {cpu} is out of range"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("pinning the sender thread")
}

/// Seals `payload` behind `header` for one route into `out` (header, ciphertext, tag).
fn seal(route: &mut Route, header: &[u8; HEADER], payload: &[u8], out: &mut [u8]) -> anyhow::Result<()> {
    let (head, body) = out.split_at_mut(HEADER);
    head.copy_from_slice(header);
    let mut iv = [0u8; 12];
    iv[10..12].copy_from_slice(&route.seq.to_be_bytes());
    route.cipher.encrypt(&iv, header, payload, body).map_err(|e| anyhow::anyhow!("seal: {e:?}"))?;
    Ok(())
}

/// The RTP header and extension of one packet.
fn header(seq: u16, due_us: u64, kind: u8) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = 0x90; // V=2, X=1
    h[1] = if kind == KIND_AUDIO { 111 } else { 96 } | if kind == KIND_VIDEO { 0 } else { 0x80 };
    h[2..4].copy_from_slice(&seq.to_be_bytes());
    h[12..14].copy_from_slice(&[0xBE, 0xDE]);
    h[14..16].copy_from_slice(&3u16.to_be_bytes());
    h[STAMP_AT..STAMP_AT + 8].copy_from_slice(&due_us.to_be_bytes());
    h[KIND_AT] = kind;
    h
}

/// The sender's schedule, run on its own pinned thread until the window and the drain are over.
fn send_schedule(
    mut routes: Vec<Route>,
    socket: StdUdpSocket,
    config: FloorConfig,
    gso: bool,
    start: Instant,
) -> SenderReport {
    let mut report = SenderReport::default();
    if let Err(e) = pin_this_thread(config.sender_cpu) {
        report.error = Some(format!("{e:#}"));
        return report;
    }
    let video_len = video_payload(config.video_kbps);
    let video_payload_bytes = vec![0x5a_u8; video_len];
    let audio_payload_bytes = vec![0xa5_u8; AUDIO_PAYLOAD];
    let video_datagram = HEADER + video_len + GCM_TAG;
    let mut frame = vec![0u8; VIDEO_PACKETS * video_datagram];
    let mut audio = vec![0u8; HEADER + AUDIO_PAYLOAD + GCM_TAG];
    let window_from = WARM_UP;
    let window_to = WARM_UP + config.measure;
    let video_every = Duration::from_micros(1_000_000 / VIDEO_FPS);
    let audio_every = Duration::from_micros(1_000_000 / AUDIO_PPS);
    let (mut next_video, mut next_audio) = (Duration::ZERO, Duration::from_micros(7_000));
    let mut cpu_at_open = None;
    let segment = video_datagram as u16;
    let fd = socket.as_raw_fd();
    let mut seal_time = Duration::ZERO;
    loop {
        let (due, is_video) = if next_video <= next_audio { (next_video, true) } else { (next_audio, false) };
        if due >= window_to {
            break;
        }
        let now = start.elapsed();
        if now < due {
            std::thread::sleep(due - now);
        } else {
            report.max_lag = report.max_lag.max(now - due);
        }
        let wall = start.elapsed();
        if cpu_at_open.is_none() && wall >= window_from {
            cpu_at_open = Some(thread_cpu());
            seal_time = Duration::ZERO;
        }
        let in_window = due >= window_from;
        let due_us = due.as_micros() as u64;
        let mut sent = 0u64;
        for route in &mut routes {
            let result = if is_video {
                let sealing = Instant::now();
                for (i, out) in frame.chunks_mut(video_datagram).enumerate() {
                    let kind = if i + 1 == VIDEO_PACKETS { KIND_VIDEO_LAST } else { KIND_VIDEO };
                    route.seq = route.seq.wrapping_add(1);
                    let h = header(route.seq, due_us, kind);
                    if let Err(e) = seal(route, &h, &video_payload_bytes, out) {
                        report.error = Some(format!("{e:#}"));
                        return report;
                    }
                }
                seal_time += sealing.elapsed();
                if gso {
                    let control = [ControlMessage::UdpGsoSegments(&segment)];
                    sendmsg(fd, &[IoSlice::new(&frame)], &control, MsgFlags::empty(), Some(&route.to))
                        .map(|_| VIDEO_PACKETS as u64)
                        .map_err(std::io::Error::from)
                } else {
                    frame
                        .chunks(video_datagram)
                        .try_fold(0u64, |n, datagram| socket.send_to(datagram, route.addr).map(|_| n + 1))
                }
            } else {
                route.seq = route.seq.wrapping_add(1);
                let h = header(route.seq, due_us, KIND_AUDIO);
                let sealing = Instant::now();
                if let Err(e) = seal(route, &h, &audio_payload_bytes, &mut audio) {
                    report.error = Some(format!("{e:#}"));
                    return report;
                }
                seal_time += sealing.elapsed();
                socket.send_to(&audio, route.addr).map(|_| 1)
            };
            match result {
                Ok(n) => sent += n,
                Err(e) => {
                    report.error = Some(format!("send to {}: {e}", route.addr));
                    return report;
                }
            }
        }
        if in_window {
            report.due_in_window += sent;
        }
        if cpu_at_open.is_some() {
            report.sent_in_window += sent;
        }
        if is_video {
            next_video += video_every;
        } else {
            next_audio += audio_every;
        }
    }
    let now = start.elapsed();
    if now < window_to {
        std::thread::sleep(window_to - now);
    }
    report.cpu_in_window = thread_cpu().saturating_sub(cpu_at_open.unwrap_or_default());
    report.seal_in_window = seal_time;
    report
}

/// What one receiver socket counted.
#[derive(Debug, Default)]
struct Tally {
    due_in_window: u64,
    latencies_us: Vec<u32>,
}

/// Reads one subscriber's socket until `stop`, counting what was due inside the window.
async fn receive(socket: tokio::net::UdpSocket, start: Instant, window: (u64, u64), stop: Arc<AtomicBool>) -> Tally {
    let mut tally = Tally::default();
    let mut buf = vec![0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // One timer per wake-up, not per datagram: a GSO frame arrives as six datagrams at once.
        if tokio::time::timeout(Duration::from_millis(100), socket.readable()).await.is_err() {
            continue;
        }
        // Until WouldBlock: then wait for the next wake-up.
        while let Ok(len) = socket.try_recv(&mut buf) {
            let packet = buf.get(..len).unwrap_or_default();
            let (Some(stamp), Some(&kind)) = (packet.get(STAMP_AT..STAMP_AT + 8), packet.get(KIND_AT)) else {
                continue;
            };
            let due_us = u64::from_be_bytes(stamp.try_into().unwrap_or([0; 8]));
            if due_us < window.0 || due_us >= window.1 {
                continue;
            }
            tally.due_in_window += 1;
            if kind != KIND_VIDEO {
                let now_us = start.elapsed().as_micros() as u64;
                tally.latencies_us.push(now_us.saturating_sub(due_us).min(u64::from(u32::MAX)) as u32);
            }
        }
    }
    tally
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted_us.len() as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, sorted_us.len()) - 1]) / 1000.0
}

/// One step: `subscribers` receivers, one send mode.
pub async fn step(config: &FloorConfig, subscribers: usize, gso: bool) -> anyhow::Result<FloorStep> {
    let provider = from_feature_flags();
    let sender = StdUdpSocket::bind("127.0.0.1:0").context("binding the sender's socket")?;
    setsockopt(&sender, sockopt::SndBuf, &(4 << 20)).context("sizing the sender's buffer")?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let window_us = (WARM_UP.as_micros() as u64, (WARM_UP + config.measure).as_micros() as u64);
    let mut routes = Vec::with_capacity(subscribers);
    let mut receivers = Vec::with_capacity(subscribers);
    for i in 0..subscribers {
        let socket = StdUdpSocket::bind("127.0.0.1:0").context("binding a receiver socket")?;
        setsockopt(&socket, sockopt::RcvBuf, &(1 << 20)).context("sizing a receiver's buffer")?;
        socket.set_nonblocking(true)?;
        let addr = socket.local_addr()?;
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_be_bytes());
        routes.push(Route {
            to: SockaddrStorage::from(addr),
            addr,
            cipher: provider.srtp_provider.aead_aes_256_gcm().create_cipher(key, true),
            seq: 0,
        });
        let socket = tokio::net::UdpSocket::from_std(socket)?;
        receivers.push(tokio::spawn(receive(socket, start, window_us, stop.clone())));
    }
    let sender_config = config.clone();
    let thread = std::thread::Builder::new()
        .name("floor-sender".into())
        .spawn(move || send_schedule(routes, sender, sender_config, gso, start))
        .context("starting the sender thread")?;
    tokio::time::sleep(WARM_UP.saturating_sub(start.elapsed())).await;
    let before = CpuSnapshot::take(&[]);
    let (steal0, total0) = steal_ticks();
    tokio::time::sleep((WARM_UP + config.measure).saturating_sub(start.elapsed())).await;
    let after = CpuSnapshot::take(&[]);
    let (steal1, total1) = steal_ticks();
    let report = tokio::task::spawn_blocking(move || thread.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?;
    if let Some(error) = &report.error {
        anyhow::bail!("the sender failed: {error}");
    }
    tokio::time::sleep(DRAIN).await;
    stop.store(true, Ordering::Relaxed);
    let mut received = 0u64;
    let mut latencies = Vec::new();
    for receiver in receivers {
        let tally = receiver.await?;
        received += tally.due_in_window;
        latencies.extend(tally.latencies_us);
    }
    latencies.sort_unstable();
    let secs = config.measure.as_secs_f64();
    let packets = report.sent_in_window.max(1) as f64;
    let per_subscriber = (VIDEO_FPS as usize * VIDEO_PACKETS) as f64 + AUDIO_PPS as f64;
    let core_busy_pct = before.core_busy_pct(&after).get(config.sender_cpu).copied().unwrap_or(0.0);
    let sender_cpu_pct = report.cpu_in_window.as_secs_f64() / secs * 100.0;
    let step = FloorStep {
        subscribers,
        gso,
        offered_pps: per_subscriber * subscribers as f64,
        sent_pps: report.sent_in_window as f64 / secs,
        loss_pct: if report.due_in_window == 0 {
            0.0
        } else {
            (1.0 - received as f64 / report.due_in_window as f64).max(0.0) * 100.0
        },
        p50_ms: percentile_ms(&latencies, 50.0),
        p99_ms: percentile_ms(&latencies, 99.0),
        sender_cpu_pct,
        us_per_packet: report.cpu_in_window.as_secs_f64() * 1e6 / packets,
        seal_us_per_packet: report.seal_in_window.as_secs_f64() * 1e6 / packets,
        core_busy_pct,
        core_us_per_packet: core_busy_pct / 100.0 * secs * 1e6 / packets,
        receivers_cpu_pct: (before.own_pct(&after) - sender_cpu_pct).max(0.0),
        steal_pct: if total1 > total0 { (steal1 - steal0) as f64 * 100.0 / (total1 - total0) as f64 } else { 0.0 },
    };
    eprintln!(
        "  floor {subscribers} subscribers, {}: {:.0} of {:.0} pkt/s sent, loss {:.2} %, p50 {:.1} / p99 {:.1} ms, \
         sender {:.0} % ({:.2} µs/pkt, seal {:.2}), core {:.0} % ({:.2} µs/pkt), max lag {:.1} ms",
        if gso { "GSO" } else { "sendto" },
        step.sent_pps,
        step.offered_pps,
        step.loss_pct,
        step.p50_ms,
        step.p99_ms,
        step.sender_cpu_pct,
        step.us_per_packet,
        step.seal_us_per_packet,
        step.core_busy_pct,
        step.core_us_per_packet,
        report.max_lag.as_secs_f64() * 1000.0,
    );
    Ok(step)
}

/// Every step, each send mode.
pub async fn run(config: &FloorConfig) -> anyhow::Result<Vec<FloorStep>> {
    let mut steps = Vec::new();
    for &n in &config.steps {
        for gso in [false, true] {
            steps.push(step(config, n, gso).await?);
        }
    }
    Ok(steps)
}

/// Markdown for a floor run.
pub fn table(steps: &[FloorStep], config: &FloorConfig) -> String {
    let mut out = format!(
        "#### Loopback floor — seal (AES-256-GCM) and send only, {} kbps video + audio per subscriber, sender on \
         CPU {}\n\n| subscribers | send | offered pkt/s | sent pkt/s | loss % | p50 ms | p99 ms | sender CPU % | \
         sender µs / pkt | of which seal µs | sender core busy % | core µs / pkt | receivers CPU % | host steal % |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
        config.video_kbps, config.sender_cpu
    );
    for s in steps {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.1} | {:.1} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.0} | {:.0} |\n",
            s.subscribers,
            if s.gso { "GSO" } else { "sendto" },
            s.offered_pps,
            s.sent_pps,
            s.loss_pct,
            s.p50_ms,
            s.p99_ms,
            s.sender_cpu_pct,
            s.us_per_packet,
            s.seal_us_per_packet,
            s.core_busy_pct,
            s.core_us_per_packet,
            s.receivers_cpu_pct,
            s.steal_pct,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_of_the_lecture_is_six_equal_packets() {
        assert_eq!(video_payload(1200), 834, "5,000 bytes a frame at 1.2 Mbit/s and 30 frames/s");
        assert_eq!(video_payload(0), 1);
    }

    #[test]
    fn the_extension_carries_the_due_time_and_the_kind() {
        let h = header(7, 123_456, KIND_VIDEO_LAST);
        assert_eq!(u64::from_be_bytes(h[STAMP_AT..STAMP_AT + 8].try_into().unwrap()), 123_456);
        assert_eq!(h[KIND_AT], KIND_VIDEO_LAST);
        assert_eq!(u16::from_be_bytes([h[2], h[3]]), 7);
        assert_eq!(h[1] & 0x80, 0x80, "the marker bit on a frame's last packet");
    }

    /// A tiny real step: every packet due in the window arrives (loopback, 2 receivers, well below any limit).
    #[tokio::test]
    async fn a_small_step_delivers_everything_it_sends() {
        let config =
            FloorConfig { steps: vec![2], video_kbps: 1200, measure: Duration::from_millis(500), sender_cpu: 0 };
        let step = step(&config, 2, true).await.unwrap();
        assert!(step.sent_pps > 0.0);
        assert_eq!(step.loss_pct, 0.0, "{step:?}");
        assert!(step.us_per_packet > 0.0 && step.seal_us_per_packet > 0.0, "{step:?}");
    }
}
