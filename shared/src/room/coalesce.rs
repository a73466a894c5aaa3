//! Coalescing: under load, a busy room sends each connection one frame per flush window instead of one
//! frame per event.
//!
//! A frame's cost in the runtime is mostly per send, not per byte, so a room of a thousand members that
//! relays every event as its own frame spends its time in the send path. The rule (Nagle-like, per room):
//! - a room smaller than `min_conns`, or with no window open, sends at once — and opens a window of
//!   `window_ms`, or longer in a big room whose sends have used up its frame budget: each send or flush
//!   costs the frames it wrote, and the room may spend `frames_per_sec` frames per second with
//!   [`CREDIT_FLUSHES`] flushes of credit (a generic cell rate algorithm: `Coalescer::paid_until_us`). A
//!   lecture of 1,000 at 10,000 frames/s gets its messages at once up to 10 a second; beyond that the
//!   windows stretch to 100 ms (at most [`MAX_WINDOW_MS`]), one flush per window. With a measured budget
//!   the adapter times big flushes and the budget follows the host's cost per frame, at a share of the
//!   thread (`Coalescer::observe_flush`), never below the configured one;
//! - inside an open window everything is queued (order kept per connection);
//! - at the window's end the queue is flushed: each connection gets its queued texts as one frame (a JSON
//!   array of frames, for clients that asked with `?batch=1`; one frame each otherwise). If anything was
//!   flushed a new window opens; an empty window closes, so a quiet room answers immediately again;
//! - membership churn is lazy ([`Urgency::Lazy`]: joins, leaves, presence, read marks): a queue that holds
//!   nothing else is not flushed at the window's end but held, window after window, for as long as the
//!   lazier budget allows (`lazy_frames_per_sec`: 2,000 frames/s holds it 250 ms at 500 connections). A
//!   class arriving is then a flush every quarter second instead of one every window — a fifth of the sends —
//!   while a chat message still flushes at the end of its window, taking the waiting churn with it.
//!
//! Invariants: texts leave in the order they were queued, per connection; a room's flushes cost at most
//! `frames_per_sec` frames per second plus the credit; a window is open whenever anything is queued, and it
//! never ends later than one (stretched) window from now, so whoever waits for
//! [`Coalescer::window_end`] is never late for a prompt frame queued meanwhile. Closing a connection flushes
//! first, so nothing queued for it is lost or reordered after its close.

use super::Output;
use crate::ids::ConnId;
use crate::time::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

/// The longest a window is stretched for a big room.
pub(crate) const MAX_WINDOW_MS: u64 = 250;

/// How many flushes to everyone a quiet room may write at the pace of the base window before its windows
/// stretch: the credit, which also absorbs a sender's jitter (two messages arriving close together) in a room
/// sending near its budget.
pub(crate) const CREDIT_FLUSHES: u64 = 2;

/// Flushes of fewer frames than this say nothing about the host's frame cost: they are written in one go,
/// and the runtime's clock (which moves between events) does not move while they are.
pub(crate) const MIN_MEASURED_FRAMES: u64 = 256;
/// The most a measured frame budget allows, whatever the measurements say (a burst of fast measurements must
/// not let one room take the whole thread). The least is the configured budget: measuring only ever gives a
/// fast host's rooms shorter windows (see [`Coalescer::observe_flush`]).
pub(crate) const MAX_MEASURED_BUDGET: u64 = 50_000;

/// How long a flush interval must be for one frame per connection to stay within `frames_per_sec`, at most
/// [`MAX_WINDOW_MS`] (0 frames/s: no stretching).
fn stretched(room_conns: usize, frames_per_sec: u64) -> u64 {
    if frames_per_sec == 0 {
        return 0;
    }
    (room_conns as u64).saturating_mul(1000).div_ceil(frames_per_sec).min(MAX_WINDOW_MS)
}

/// How long a queued text may wait for its flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// Conversation, moderation, replies: flushed at the end of the window it was queued in.
    Prompt,
    /// Membership churn (joined, left, presence, read marks): may wait within the lazier frame budget, and
    /// goes out sooner with the next prompt text.
    Lazy,
}

/// The queue and the window.
#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    window_ms: u64,
    min_conns: usize,
    /// Frames per second a room's flushes may cost (0: the window is always `window_ms`). With a measured
    /// budget, the configured value until the first measurement, then what the measurements allow.
    frames_per_sec: u64,
    /// The share of the room's thread (percent) its flushes may take, once a flush has been measured (0: the
    /// budget stays `frames_per_sec` as configured). See [`Coalescer::observe_flush`].
    duty_pct: u64,
    /// The budget as configured: the least a measured one allows.
    configured_frames_per_sec: u64,
    /// The host's cost of one frame, as measured (µs × 16, a moving average).
    frame_cost_x16: Option<u64>,
    /// Frames per second a room's flushes of lazy texts alone may cost (0: lazy texts are prompt).
    lazy_frames_per_sec: u64,
    window_until: Option<Timestamp>,
    /// When (µs on the room's clock) the frame budget has paid for every frame sent so far (`None`: nothing
    /// sent yet). Each send or flush adds its frames at `frames_per_sec`; it never lags `now` by more than
    /// [`CREDIT_FLUSHES`] flushes to everyone (the credit). The next window ends no sooner than this.
    paid_until_us: Option<u64>,
    pending: Vec<(Vec<ConnId>, Arc<str>)>,
    /// When the oldest queued text was queued.
    queued_since: Option<Timestamp>,
    /// Whether a prompt text is queued.
    prompt_queued: bool,
}

impl Coalescer {
    pub(crate) fn new(window_ms: u64, min_conns: usize, frames_per_sec: u64, lazy_frames_per_sec: u64) -> Self {
        Coalescer {
            window_ms,
            min_conns,
            frames_per_sec,
            configured_frames_per_sec: frames_per_sec,
            duty_pct: 0,
            frame_cost_x16: None,
            lazy_frames_per_sec,
            window_until: None,
            paid_until_us: None,
            pending: Vec::new(),
            queued_since: None,
            prompt_queued: false,
        }
    }

    /// Lets measured flushes set the frame budget: the room's flushes may take `duty_pct` percent of its
    /// thread ([`Self::observe_flush`]); the configured `frames_per_sec` is the budget until the first
    /// measurement. A configured budget of 0 (no stretching) stays 0.
    pub(crate) fn with_measured_budget(mut self, duty_pct: u64) -> Self {
        self.duty_pct = if self.frames_per_sec == 0 { 0 } else { duty_pct.min(100) };
        self
    }

    /// The frame budget in force (frames per second; 0: none).
    #[cfg(test)]
    pub(crate) fn frames_per_sec(&self) -> u64 {
        self.frames_per_sec
    }

    /// A flush wrote `frames` frames in `elapsed_ms` of the room's clock (from its first socket write to its
    /// last, with the yields to other events between its chunks). With a measured budget, the frame cost
    /// this shows (a moving average over flushes) sets the budget to what `duty_pct` of the thread can send:
    /// a host that sends a frame in 20 µs lets a lecture of 1,000 flush every 40 ms at 50 %, one that needs
    /// 40 µs every 80 ms. Small flushes are ignored ([`MIN_MEASURED_FRAMES`]). The result is never below the
    /// configured budget (a host slower than the one it was chosen for, or a measure inflated by other
    /// events, keeps today's windows: a budget that fell with the measure fed back into bigger frames, which
    /// cost more per frame, and a busy lecture drifted to its longest windows) and never above
    /// [`MAX_MEASURED_BUDGET`].
    pub(crate) fn observe_flush(&mut self, frames: u64, elapsed_ms: u64) {
        if self.duty_pct == 0 || frames < MIN_MEASURED_FRAMES || elapsed_ms == 0 {
            return;
        }
        let sample_x16 = elapsed_ms.saturating_mul(16_000) / frames;
        let cost_x16 = match self.frame_cost_x16 {
            None => sample_x16,
            Some(cost) => (cost.saturating_mul(3).saturating_add(sample_x16)) / 4,
        }
        .max(1);
        self.frame_cost_x16 = Some(cost_x16);
        // duty_pct % of 1 s, in frames of cost_x16 / 16 µs.
        let per_sec = self.duty_pct.saturating_mul(10_000).saturating_mul(16) / cost_x16;
        let floor = self.configured_frames_per_sec.min(MAX_MEASURED_BUDGET);
        self.frames_per_sec = per_sec.clamp(floor, MAX_MEASURED_BUDGET);
    }

    /// The window for a room of `room_conns` connections: `window_ms`, stretched so that one frame per
    /// connection per window stays within `frames_per_sec`, at most [`MAX_WINDOW_MS`].
    pub(crate) fn window_len(&self, room_conns: usize) -> u64 {
        self.window_ms.max(stretched(room_conns, self.frames_per_sec))
    }

    /// How long lazy texts alone may stay queued in a room of `room_conns` connections: long enough that
    /// their flushes stay within `lazy_frames_per_sec`, at most [`MAX_WINDOW_MS`], never shorter than a
    /// window.
    pub(crate) fn lazy_len(&self, room_conns: usize) -> u64 {
        self.window_len(room_conns).max(stretched(room_conns, self.lazy_frames_per_sec))
    }

    /// Charges the frame budget for `frames` written `now` and returns when the next window ends: after
    /// `window_ms`, or once the budget has paid for them if that is later, but never more than one
    /// [`Self::window_len`] from `now` (a room beyond the budget even at [`MAX_WINDOW_MS`] is not held
    /// longer; nor is its debt kept, so a room that shrinks is not punished for it).
    fn charge(&mut self, frames: usize, room_conns: usize, now: Timestamp) -> Timestamp {
        let now_us = now.0.saturating_mul(1000);
        let cost_us = |frames: usize| match self.frames_per_sec {
            0 => 0,
            per_sec => (frames as u64).saturating_mul(1_000_000) / per_sec,
        };
        let floor_us = now_us.saturating_sub(cost_us(room_conns).saturating_mul(CREDIT_FLUSHES));
        let latest_us = now.plus_ms(self.window_len(room_conns)).0.saturating_mul(1000);
        let paid_us = self.paid_until_us.unwrap_or(0).max(floor_us).saturating_add(cost_us(frames));
        let paid_us = paid_us.min(latest_us);
        self.paid_until_us = Some(paid_us);
        now.plus_ms(self.window_ms).max(Timestamp(paid_us.div_ceil(1000)))
    }

    /// When the queue must be flushed, if anything is queued.
    pub(crate) fn next_flush(&self) -> Option<Timestamp> {
        if self.pending.is_empty() {
            None
        } else {
            self.window_until
        }
    }

    /// When the current window ends, queued frames or not (`None`: no window, the next event goes out at once).
    pub(crate) fn window_end(&self) -> Option<Timestamp> {
        self.window_until
    }

    /// Whether a window is open at `now`.
    pub(crate) fn window_open(&self, now: Timestamp) -> bool {
        self.window_until.is_some_and(|until| now < until)
    }

    /// Sends or queues `text` for `to`. `room_conns` is the number of open connections; `batch` says which
    /// of them asked for batched frames (used when a late or shrunk window is flushed here first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn emit(
        &mut self,
        outbox: &mut VecDeque<Output>,
        to: Vec<ConnId>,
        text: Arc<str>,
        urgency: Urgency,
        room_conns: usize,
        batch: impl Fn(ConnId) -> bool,
        now: Timestamp,
    ) {
        if to.is_empty() {
            return;
        }
        let enabled = self.window_ms > 0 && room_conns >= self.min_conns;
        let in_window = self.window_until.is_some_and(|until| now < until);
        if enabled && in_window {
            self.pending.push((to, text));
            self.queued_since.get_or_insert(now);
            self.prompt_queued |= urgency == Urgency::Prompt;
            return;
        }
        let mut frames = to.len();
        if !self.pending.is_empty() {
            // A window ended without its flush (a late timer) or the room shrank: keep the order.
            frames += self.flush_all(outbox, batch);
        }
        outbox.push_back(Output::Send { to, text });
        self.window_until = enabled.then(|| self.charge(frames, room_conns, now));
    }

    /// Flushes the queue if its window is over; opens a new window if anything was flushed. A queue of lazy
    /// texts only, queued less than [`Self::lazy_len`] ago, is held: the window is renewed instead, ending
    /// no later than the lazy deadline.
    pub(crate) fn flush_due(
        &mut self,
        outbox: &mut VecDeque<Output>,
        batch: impl Fn(ConnId) -> bool,
        room_conns: usize,
        now: Timestamp,
    ) {
        let Some(until) = self.window_until else { return };
        if now < until {
            return;
        }
        if let Some(since) = self.queued_since.filter(|_| !self.prompt_queued) {
            let lazy_due = since.plus_ms(self.lazy_len(room_conns));
            if now < lazy_due {
                self.window_until = Some(now.plus_ms(self.window_len(room_conns)).min(lazy_due));
                return;
            }
        }
        let frames = self.flush_all(outbox, batch);
        self.window_until = (frames > 0).then(|| self.charge(frames, room_conns, now));
    }

    /// Flushes everything queued now (before a close, or when the room shrinks); returns the number of
    /// frames written.
    pub(crate) fn flush_all(&mut self, outbox: &mut VecDeque<Output>, batch: impl Fn(ConnId) -> bool) -> usize {
        self.queued_since = None;
        self.prompt_queued = false;
        if self.pending.is_empty() {
            return 0;
        }
        let mut frames = 0;
        let pending = std::mem::take(&mut self.pending);
        // Which queued texts each connection gets, in order.
        let mut per_conn: BTreeMap<ConnId, Vec<usize>> = BTreeMap::new();
        for (i, (to, _)) in pending.iter().enumerate() {
            for conn in to {
                per_conn.entry(*conn).or_default().push(i);
            }
        }
        // Connections that get the same texts share one frame.
        let mut groups: BTreeMap<(bool, Vec<usize>), Vec<ConnId>> = BTreeMap::new();
        for (conn, texts) in per_conn {
            groups.entry((batch(conn), texts)).or_default().push(conn);
        }
        for ((batched, texts), conns) in groups {
            let pick = |i: &usize| pending.get(*i).map(|(_, t)| t.clone());
            if batched && texts.len() > 1 {
                let parts: Vec<Arc<str>> = texts.iter().filter_map(pick).collect();
                let mut frame = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 2);
                frame.push('[');
                for (n, part) in parts.iter().enumerate() {
                    if n > 0 {
                        frame.push(',');
                    }
                    frame.push_str(part);
                }
                frame.push(']');
                frames += conns.len();
                outbox.push_back(Output::Send { to: conns, text: Arc::from(frame) });
            } else {
                for text in texts.iter().filter_map(pick) {
                    frames += conns.len();
                    outbox.push_back(Output::Send { to: conns.clone(), text });
                }
            }
        }
        frames
    }

    /// Drops what is queued for a connection that went away.
    pub(crate) fn forget(&mut self, conn: ConnId) {
        for (to, _) in &mut self.pending {
            to.retain(|c| *c != conn);
        }
        self.pending.retain(|(to, _)| !to.is_empty());
        if self.pending.is_empty() {
            self.queued_since = None;
            self.prompt_queued = false;
        }
    }

    /// Forgets everything (the room was cleared and every connection closed).
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.queued_since = None;
        self.prompt_queued = false;
        self.window_until = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(outbox: &VecDeque<Output>) -> Vec<(Vec<u64>, String)> {
        outbox
            .iter()
            .filter_map(|o| match o {
                Output::Send { to, text } => Some((to.iter().map(|c| c.0).collect(), text.to_string())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn quiet_rooms_send_at_once_and_busy_rooms_batch_per_window() {
        let mut c = Coalescer::new(20, 2, 0, 0);
        let mut out = VecDeque::new();
        let all = vec![ConnId(1), ConnId(2)];
        c.emit(&mut out, all.clone(), Arc::from("{\"a\":1}"), Urgency::Prompt, 2, |_| true, Timestamp(0));
        assert_eq!(texts(&out).len(), 1, "the first event goes out at once");
        c.emit(&mut out, all.clone(), Arc::from("{\"b\":2}"), Urgency::Prompt, 2, |_| true, Timestamp(5));
        c.emit(&mut out, vec![ConnId(2)], Arc::from("{\"c\":3}"), Urgency::Prompt, 2, |_| true, Timestamp(6));
        assert_eq!(texts(&out).len(), 1, "queued inside the window");
        assert_eq!(c.next_flush(), Some(Timestamp(20)));
        c.flush_due(&mut out, |conn| conn == ConnId(2), 2, Timestamp(20));
        let sent = texts(&out);
        assert_eq!(sent[1], (vec![1], "{\"b\":2}".to_owned()), "connection 1 did not ask for batches");
        assert_eq!(sent[2], (vec![2], "[{\"b\":2},{\"c\":3}]".to_owned()));
        // Something was flushed: the window stays open; an empty window then closes.
        assert_eq!(c.window_until, Some(Timestamp(40)));
        c.flush_due(&mut out, |_| true, 2, Timestamp(40));
        assert_eq!(c.window_until, None);
        c.emit(&mut out, all, Arc::from("{\"d\":4}"), Urgency::Prompt, 2, |_| true, Timestamp(41));
        assert_eq!(texts(&out).len(), 4, "a quiet room answers immediately again");
    }

    #[test]
    fn a_window_flushed_by_the_next_event_keeps_each_connections_framing() {
        // The room shrinks below `min_conns` with frames queued (a member left mid-window): the next event
        // flushes them first, and a connection that never asked for batches still gets one frame per text.
        let mut c = Coalescer::new(20, 3, 0, 0);
        let mut out = VecDeque::new();
        let all = vec![ConnId(1), ConnId(2), ConnId(3)];
        let batch = |conn: ConnId| conn == ConnId(2);
        c.emit(&mut out, all.clone(), Arc::from("{\"a\":1}"), Urgency::Prompt, 3, batch, Timestamp(0));
        c.emit(&mut out, all.clone(), Arc::from("{\"b\":2}"), Urgency::Prompt, 3, batch, Timestamp(5));
        c.emit(&mut out, all, Arc::from("{\"c\":3}"), Urgency::Prompt, 3, batch, Timestamp(6));
        assert_eq!(texts(&out).len(), 1, "two queued");
        c.emit(&mut out, vec![ConnId(1), ConnId(2)], Arc::from("{\"d\":4}"), Urgency::Prompt, 2, batch, Timestamp(7));
        let sent = texts(&out);
        for (to, text) in &sent {
            if to.contains(&1) || to.contains(&3) {
                assert!(!text.starts_with('['), "a connection without ?batch=1 got an array: {text}");
            }
        }
        let to_1: Vec<&str> = sent.iter().filter(|(to, _)| to.contains(&1)).map(|(_, t)| t.as_str()).collect();
        assert_eq!(to_1, ["{\"a\":1}", "{\"b\":2}", "{\"c\":3}", "{\"d\":4}"], "in order, one frame each");
        let to_2: Vec<&str> = sent.iter().filter(|(to, _)| to.contains(&2)).map(|(_, t)| t.as_str()).collect();
        assert_eq!(to_2, ["{\"a\":1}", "[{\"b\":2},{\"c\":3}]", "{\"d\":4}"]);
    }

    #[test]
    fn small_rooms_never_queue() {
        let mut c = Coalescer::new(20, 50, 0, 0);
        let mut out = VecDeque::new();
        for i in 0..5 {
            c.emit(&mut out, vec![ConnId(1)], Arc::from(format!("{i}")), Urgency::Prompt, 3, |_| true, Timestamp(i));
        }
        assert_eq!(texts(&out).len(), 5);
        assert_eq!(c.next_flush(), None);
    }

    #[test]
    fn big_rooms_get_longer_windows_once_their_frame_budget_is_spent() {
        let c = Coalescer::new(20, 50, 10_000, 0);
        assert_eq!(c.window_len(50), 20, "small enough for the base window");
        assert_eq!(c.window_len(200), 20);
        assert_eq!(c.window_len(500), 50);
        assert_eq!(c.window_len(1000), 100, "1,000 frames per flush, 10 flushes a second");
        assert_eq!(c.window_len(100_000), MAX_WINDOW_MS);
        assert_eq!(Coalescer::new(20, 50, 0, 0).window_len(100_000), 20, "0: no stretching");

        let mut c = Coalescer::new(20, 2, 10_000, 0);
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..1000).map(ConnId).collect();
        let text = |n: u64| Arc::from(format!("{{\"m\":{n}}}"));
        let t = |ms: u64| Timestamp(1_000 + ms);
        c.emit(&mut out, all.clone(), text(0), Urgency::Prompt, 1000, |_| true, t(0));
        assert_eq!(c.window_until, Some(t(20)), "a quiet room has credit: the base window");
        c.flush_due(&mut out, |_| true, 1000, t(20));
        assert_eq!(c.window_until, None);
        c.emit(&mut out, all.clone(), text(1), Urgency::Prompt, 1000, |_| true, t(30));
        assert_eq!(c.window_until, Some(t(50)), "still credit");
        c.emit(&mut out, all.clone(), text(2), Urgency::Prompt, 1000, |_| true, t(50));
        assert_eq!(texts(&out).len(), 3, "three sends at once: the first and two flushes of credit");
        assert_eq!(c.window_until, Some(t(100)), "then the budget: 1,000 frames per 100 ms");
        c.emit(&mut out, all, text(3), Urgency::Prompt, 1000, |_| true, t(60));
        c.flush_due(&mut out, |_| true, 1000, t(70));
        assert_eq!(texts(&out).len(), 3, "still inside the stretched window");
        c.flush_due(&mut out, |_| true, 1000, t(100));
        assert_eq!(texts(&out).len(), 4);
        assert_eq!(c.window_until, Some(t(200)));
    }

    #[test]
    fn a_measured_budget_follows_the_hosts_frame_cost() {
        let mut c = Coalescer::new(20, 50, 10_000, 0).with_measured_budget(50);
        assert_eq!((c.frames_per_sec(), c.window_len(1000)), (10_000, 100), "the configured budget at first");
        c.observe_flush(100, 5);
        assert_eq!(c.frames_per_sec(), 10_000, "a flush written in one go measures nothing");
        c.observe_flush(1000, 0);
        assert_eq!(c.frames_per_sec(), 10_000, "nor does one the clock did not see");
        // 1,000 frames in 20 ms: 20 µs a frame; half the thread sends 25,000 a second.
        c.observe_flush(1000, 20);
        assert_eq!((c.frames_per_sec(), c.window_len(1000)), (25_000, 40));
        // The host slows to 40 µs a frame: the budget follows, a quarter of the way per flush.
        c.observe_flush(1000, 40);
        assert_eq!(c.frames_per_sec(), 20_000);
        for _ in 0..20 {
            c.observe_flush(1000, 40);
        }
        assert!((12_500..12_600).contains(&c.frames_per_sec()), "settles at 12,500: {}", c.frames_per_sec());
        assert_eq!(c.window_len(1000), 80);
        // Bounds: a stalled host keeps the configured budget, an implausibly fast one gets at most the maximum.
        for _ in 0..40 {
            c.observe_flush(1000, 10_000);
        }
        assert_eq!((c.frames_per_sec(), c.window_len(1000)), (10_000, 100));
        let mut fast = Coalescer::new(20, 50, 10_000, 0).with_measured_budget(90);
        fast.observe_flush(100_000, 1);
        assert_eq!(fast.frames_per_sec(), MAX_MEASURED_BUDGET);
        // Without a measured budget, or with no budget at all, measurements change nothing.
        let mut fixed = Coalescer::new(20, 50, 10_000, 0);
        fixed.observe_flush(1000, 20);
        assert_eq!(fixed.frames_per_sec(), 10_000);
        let mut none = Coalescer::new(20, 50, 0, 0).with_measured_budget(50);
        none.observe_flush(1000, 20);
        assert_eq!((none.frames_per_sec(), none.window_len(1000)), (0, 20));
    }

    /// Drives a room of 100 connections with a budget of 1,000 frames/s and 20 ms windows (the arithmetic of
    /// 1,000 at 10,000 frames/s: a flush per 100 ms) with one message every `period_ms` (+ `jitter_ms` every
    /// other one) and its ack to the sender for `secs`, flushing at every window end as the pump does.
    /// Returns how long each message waited and how many frames were written.
    fn lecture(period_ms: u64, jitter_ms: u64, secs: u64) -> (Vec<u64>, usize) {
        let mut c = Coalescer::new(20, 50, 1_000, 0);
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..100).map(ConnId).collect();
        let mut waits = Vec::new();
        let mut queued: Vec<u64> = Vec::new();
        let count = secs * 1000 / period_ms;
        for n in 0..count {
            let at = 1_000 + n * period_ms + jitter_ms * (n % 2);
            while let Some(end) = c.window_end().filter(|end| end.0 <= at) {
                let before = out.len();
                c.flush_due(&mut out, |_| true, 100, end);
                if out.len() > before {
                    waits.extend(queued.drain(..).map(|q| end.0 - q));
                }
            }
            let before = out.len();
            c.emit(&mut out, all.clone(), Arc::from(format!("{n}")), Urgency::Prompt, 100, |_| true, Timestamp(at));
            if out.len() > before {
                waits.push(0);
            } else {
                queued.push(at);
            }
            // The sender's ack (one frame) follows every message, as in the room.
            c.emit(&mut out, vec![ConnId(0)], Arc::from("ack"), Urgency::Prompt, 100, |_| true, Timestamp(at));
        }
        while let Some(end) = c.window_end() {
            let before = out.len();
            c.flush_due(&mut out, |_| true, 100, end);
            if out.len() > before {
                waits.extend(queued.drain(..).map(|q| end.0 - q));
            }
        }
        let frames = out.iter().map(|o| if let Output::Send { to, .. } = o { to.len() } else { 0 }).sum();
        (waits, frames)
    }

    #[test]
    fn a_lecture_within_its_frame_budget_gets_every_message_at_once() {
        // 9 messages/s: 900 frames/s and the acks, within the budget of 1,000.
        let (waits, frames) = lecture(110, 5, 10);
        assert_eq!(waits.len(), 90);
        assert!(waits.iter().all(|w| *w == 0), "waits: {waits:?}");
        assert_eq!(frames, 90 * 101);
    }

    #[test]
    fn a_lecture_beyond_its_frame_budget_batches_and_stays_within_it() {
        for period in [50, 20, 5] {
            let (waits, frames) = lecture(period, 3, 10);
            // 10 s at 1,000 frames/s, plus the two flushes of credit and the last one.
            assert!(frames <= 10_400, "{period} ms apart: {frames} frames in 10 s");
            assert!(frames >= 9_500, "{period} ms apart: {frames} frames, the budget not used");
            let worst = waits.iter().max().copied().unwrap_or(0);
            assert!(worst <= 100, "{period} ms apart: a message waited {worst} ms, more than one window");
        }
    }

    #[test]
    fn membership_churn_alone_is_held_within_the_lazy_budget() {
        let t = |ms: u64| Timestamp(1_000 + ms);
        // 500 connections: a 50 ms window (10,000 frames/s), churn held up to 250 ms (2,000 frames/s).
        let mut c = Coalescer::new(20, 50, 10_000, 2_000);
        assert_eq!(c.lazy_len(500), 250);
        assert_eq!(c.lazy_len(100), 50, "100 connections: 20 flushes a second fit the lazy budget");
        assert_eq!(c.lazy_len(60), 30);
        assert_eq!(c.lazy_len(10), 20, "never shorter than the window");
        assert_eq!(Coalescer::new(20, 50, 10_000, 0).lazy_len(500), 50, "0: churn is prompt");
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..500).map(ConnId).collect();
        let joined = |n: u64| Arc::from(format!("{{\"joined\":{n}}}"));
        c.emit(&mut out, all.clone(), joined(0), Urgency::Lazy, 500, |_| true, t(0));
        assert_eq!(texts(&out).len(), 1, "the first event of a quiet room still goes out at once");
        c.emit(&mut out, all.clone(), joined(1), Urgency::Lazy, 500, |_| true, t(10));
        c.flush_due(&mut out, |_| true, 500, t(20));
        assert_eq!(texts(&out).len(), 1, "held at the end of its window");
        c.emit(&mut out, all.clone(), joined(2), Urgency::Lazy, 500, |_| true, t(40));
        // Each window end renews the window (never more than one window ahead) until 10 + 250 ms.
        let mut ends = Vec::new();
        while texts(&out).len() == 1 {
            let at = c.window_end().expect("a window stays open while churn is held");
            ends.push(at.0 - 1_000);
            c.flush_due(&mut out, |_| true, 500, at);
        }
        assert_eq!(ends, [70, 120, 170, 220, 260]);
        assert_eq!(texts(&out)[1].1, "[{\"joined\":1},{\"joined\":2}]", "one frame for the whole hold");
        assert_eq!(c.window_end(), Some(t(280)), "a flush opens the next window");
    }

    #[test]
    fn a_prompt_text_takes_the_held_churn_with_it_at_the_end_of_its_window() {
        let t = |ms: u64| Timestamp(1_000 + ms);
        let mut c = Coalescer::new(20, 50, 10_000, 2_000);
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..500).map(ConnId).collect();
        c.emit(&mut out, all.clone(), Arc::from("{\"j\":0}"), Urgency::Lazy, 500, |_| true, t(0));
        c.emit(&mut out, all.clone(), Arc::from("{\"j\":1}"), Urgency::Lazy, 500, |_| true, t(10));
        c.flush_due(&mut out, |_| true, 500, t(50));
        assert_eq!(texts(&out).len(), 1, "held");
        c.emit(&mut out, all.clone(), Arc::from("{\"chat\":1}"), Urgency::Prompt, 500, |_| true, t(70));
        assert_eq!(c.window_end(), Some(t(100)), "the held window still ends within one window");
        c.flush_due(&mut out, |_| true, 500, t(100));
        assert_eq!(texts(&out)[1].1, "[{\"j\":1},{\"chat\":1}]", "queued order, in one frame");
        assert_eq!(c.window_end(), Some(t(120)), "the budget has room: the next window is the base one");
        // Forgetting every queued text resets the hold: the next churn waits its own full budget.
        c.emit(&mut out, vec![ConnId(7)], Arc::from("{\"j\":2}"), Urgency::Lazy, 500, |_| true, t(110));
        c.forget(ConnId(7));
        c.emit(&mut out, all, Arc::from("{\"j\":3}"), Urgency::Lazy, 500, |_| true, t(115));
        let mut last = t(0);
        while texts(&out).len() == 2 {
            last = c.window_end().expect("held in an open window");
            c.flush_due(&mut out, |_| true, 500, last);
        }
        assert_eq!(last, t(365), "held from 115, not from the forgotten text at 110");
    }
}
