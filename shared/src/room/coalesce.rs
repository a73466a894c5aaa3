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
//! - with sweeps ([`Coalescer::with_sweep`], the room's default) a flush with a prompt text in it goes out a
//!   step of connections at a time in connection order (churn alone is flushed whole: it is lazy anyway,
//!   and a class arriving was measured slower with it swept). The window's end writes the first step, and
//!   every later call of [`Coalescer::flush_due`] the next one (it is due at once while the sweep lasts: the
//!   adapter calls it when it has written the previous step, and every event the room handles calls it
//!   too), with everything queued for those connections so far. A text queued mid-sweep thus reaches the
//!   connections not written yet in this flush, the others in the next: the longest wait is about one
//!   window instead of a window plus the time it takes to write a flush to everyone (a lecture of 1,000:
//!   40 ms instead of 40 + 16–20 ms);
//! - membership churn is lazy ([`Urgency::Lazy`]: joins, leaves, presence, read marks): a queue that holds
//!   nothing else is not flushed at the window's end but held, window after window, for as long as the
//!   lazier budget allows (`lazy_frames_per_sec`: 2,000 frames/s holds it 250 ms at 500 connections). A
//!   class arriving is then a flush every quarter second instead of one every window — a fifth of the sends —
//!   while a chat message still flushes at the end of its window, taking the waiting churn with it.
//!
//! Invariants: texts leave in the order they were queued, per connection; a room's flushes cost at most
//! `frames_per_sec` frames per second plus the credit; a window is open whenever anything is queued, and it
//! never ends later than one (stretched) window from now, so whoever waits for
//! [`Coalescer::window_end`] is never late for a prompt frame queued meanwhile. A connection the server
//! closes gets what is queued for it first ([`Coalescer::flush_conn`]: that connection's texts only), so
//! nothing queued for it is lost or reordered after its close; one the client closed can no longer be
//! written, and its queue is dropped ([`Coalescer::forget`]).

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

/// A flush going out step by step, in connection order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sweep {
    /// The first connection not written yet.
    next: ConnId,
    /// When the sweep started (a sweep in progress is always due).
    started: Timestamp,
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
    /// Queued texts in order, each with the connections it still has to reach (sorted, no duplicates).
    pending: Vec<(Vec<ConnId>, Arc<str>)>,
    /// How many connections one step of a sweep writes (0: a flush writes everyone at once).
    sweep_conns: usize,
    /// The sweep in progress, if any: the connections below `next` have been written.
    sweep: Option<Sweep>,
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
            sweep_conns: 0,
            sweep: None,
            queued_since: None,
            prompt_queued: false,
        }
    }

    /// Flushes in sweeps of `conns` connections a step ([module docs](self)); 0 writes a flush at once.
    pub(crate) fn with_sweep(mut self, conns: usize) -> Self {
        self.sweep_conns = conns;
        self
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
        let floor = self.configured_frames_per_sec;
        self.frames_per_sec = per_sec.clamp(floor, MAX_MEASURED_BUDGET.max(floor));
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
        } else if let Some(sweep) = self.sweep {
            Some(sweep.started)
        } else {
            self.window_until
        }
    }

    /// Whether a sweep is in progress: [`Self::flush_due`] writes its next step whenever it is called.
    pub(crate) fn sweeping(&self) -> bool {
        self.sweep.is_some()
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
            let mut to = to;
            if !to.is_sorted_by(|a, b| a < b) {
                to.sort_unstable();
                to.dedup();
            }
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
    /// no later than the lazy deadline. With sweeps ([`Self::with_sweep`]) a flush writes its first step
    /// here and each later call (due at once: [`Self::next_flush`]) the next one, taking every text queued
    /// meanwhile for the connections not written yet.
    pub(crate) fn flush_due(
        &mut self,
        outbox: &mut VecDeque<Output>,
        batch: impl Fn(ConnId) -> bool,
        room_conns: usize,
        now: Timestamp,
    ) {
        if self.sweep.is_some() {
            self.sweep_step(outbox, &batch);
            return;
        }
        let Some(until) = self.window_until else { return };
        if now < until {
            return;
        }
        let hold_lazy = !self.prompt_queued && self.lazy_frames_per_sec > 0;
        if let Some(since) = self.queued_since.filter(|_| hold_lazy) {
            let lazy_due = since.plus_ms(self.lazy_len(room_conns));
            if now < lazy_due {
                self.window_until = Some(now.plus_ms(self.window_len(room_conns)).min(lazy_due));
                return;
            }
        }
        // Only a flush with conversation in it is swept: membership churn alone waits anyway (it is lazy),
        // and a class arriving was measured slower with its churn swept (see `docs/benchmarks.md`).
        if self.sweep_conns == 0 || !self.prompt_queued {
            let frames = self.flush_all(outbox, batch);
            self.window_until = (frames > 0).then(|| self.charge(frames, room_conns, now));
            return;
        }
        // The sweep will write about one frame per connection that has something queued.
        let mut reached: Vec<ConnId> = self.pending.iter().flat_map(|(to, _)| to.iter().copied()).collect();
        reached.sort_unstable();
        reached.dedup();
        if reached.is_empty() {
            self.window_until = None;
            return;
        }
        self.window_until = Some(self.charge(reached.len(), room_conns, now));
        self.queued_since = None;
        self.prompt_queued = false;
        self.sweep = Some(Sweep { next: ConnId(0), started: now });
        self.sweep_step(outbox, &batch);
    }

    /// Writes the next step of the sweep: everything queued for the next [`Self::with_sweep`] connections
    /// from the sweep's position on; ends the sweep when no connection beyond it has anything queued.
    fn sweep_step(&mut self, outbox: &mut VecDeque<Output>, batch: &impl Fn(ConnId) -> bool) {
        let Some(sweep) = self.sweep else { return };
        let step = self.sweep_conns.max(1);
        // The step's connections are the first `step` at or beyond `next` over every queued text; each text
        // contributes at most its first `step` of them.
        let mut ahead: Vec<ConnId> = Vec::new();
        for (to, _) in &self.pending {
            let from = to.partition_point(|c| *c < sweep.next);
            ahead.extend(to.iter().skip(from).take(step));
        }
        ahead.sort_unstable();
        ahead.dedup();
        let Some(last) = ahead.get(..step).unwrap_or(&ahead).last().copied() else {
            self.end_sweep();
            return;
        };
        let mut picked: Vec<(Vec<ConnId>, Arc<str>)> = Vec::new();
        for (to, text) in &mut self.pending {
            let from = to.partition_point(|c| *c < sweep.next);
            let until = to.partition_point(|c| *c <= last);
            if from < until {
                picked.push((to.drain(from..until).collect(), text.clone()));
            }
        }
        self.pending.retain(|(to, _)| !to.is_empty());
        write_frames(picked, outbox, batch);
        let more = self.pending.iter().any(|(to, _)| to.last().is_some_and(|c| *c > last));
        if more {
            self.sweep = Some(Sweep { next: ConnId(last.0.saturating_add(1)), ..sweep });
        } else {
            self.end_sweep();
        }
    }

    fn end_sweep(&mut self) {
        self.sweep = None;
        if self.pending.is_empty() {
            self.queued_since = None;
            self.prompt_queued = false;
        }
    }

    /// Flushes everything queued now (before a close, or when the room shrinks); returns the number of
    /// frames written.
    pub(crate) fn flush_all(&mut self, outbox: &mut VecDeque<Output>, batch: impl Fn(ConnId) -> bool) -> usize {
        self.queued_since = None;
        self.prompt_queued = false;
        self.sweep = None;
        if self.pending.is_empty() {
            return 0;
        }
        write_frames(std::mem::take(&mut self.pending), outbox, &batch)
    }

    /// Writes now everything queued for `conn` alone (before the server closes it: nothing queued for it is
    /// lost or reordered after its close), leaving the other connections' queue, the window and any sweep as
    /// they are; returns the number of frames written. Closing many connections in one event (a lesson's
    /// tokens expiring together) thus costs a frame each, not a flush to everyone per close.
    pub(crate) fn flush_conn(
        &mut self,
        outbox: &mut VecDeque<Output>,
        conn: ConnId,
        batch: impl Fn(ConnId) -> bool,
    ) -> usize {
        let picked = self.take_conn(conn);
        if picked.is_empty() {
            return 0;
        }
        write_frames(picked, outbox, &batch)
    }

    /// Drops what is queued for a connection that went away.
    pub(crate) fn forget(&mut self, conn: ConnId) {
        self.take_conn(conn);
    }

    /// Takes `conn` out of every queued text; returns the texts it was in, in order.
    fn take_conn(&mut self, conn: ConnId) -> Vec<(Vec<ConnId>, Arc<str>)> {
        let mut taken = Vec::new();
        for (to, text) in &mut self.pending {
            // `to` is sorted (see `pending`).
            if let Ok(at) = to.binary_search(&conn) {
                to.remove(at);
                taken.push((vec![conn], text.clone()));
            }
        }
        if !taken.is_empty() {
            self.pending.retain(|(to, _)| !to.is_empty());
        }
        if self.pending.is_empty() {
            self.sweep = None;
            self.queued_since = None;
            self.prompt_queued = false;
        }
        taken
    }

    /// Forgets everything (the room was cleared and every connection closed).
    pub(crate) fn reset(&mut self) {
        self.pending.clear();
        self.queued_since = None;
        self.prompt_queued = false;
        self.window_until = None;
        self.sweep = None;
    }
}

/// Writes queued texts to the outbox: each connection gets its texts in order, as one frame (a JSON array)
/// if it asked for batches and there are several, one frame each otherwise; connections that get the same
/// texts share one output. Returns the number of frames written.
fn write_frames(
    pending: Vec<(Vec<ConnId>, Arc<str>)>,
    outbox: &mut VecDeque<Output>,
    batch: &impl Fn(ConnId) -> bool,
) -> usize {
    let mut frames = 0;
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
    fn closing_one_connection_writes_its_queue_alone_and_leaves_the_window() {
        // A server-side close (kick, token expiry) must not flush the whole room: when a lesson's tokens
        // expire together, a flush to everyone per close would write n²/2 frames.
        let mut c = Coalescer::new(20, 2, 0, 0).with_sweep(16);
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..100).map(ConnId).collect();
        c.emit(&mut out, all.clone(), Arc::from("{\"a\":1}"), Urgency::Prompt, 100, |_| true, Timestamp(0));
        c.emit(&mut out, all.clone(), Arc::from("{\"b\":2}"), Urgency::Prompt, 100, |_| true, Timestamp(5));
        c.emit(&mut out, vec![ConnId(5)], Arc::from("{\"c\":3}"), Urgency::Prompt, 100, |_| true, Timestamp(6));
        out.clear();
        assert_eq!(c.flush_conn(&mut out, ConnId(5), |_| true), 1);
        assert_eq!(texts(&out), [(vec![5], "[{\"b\":2},{\"c\":3}]".to_owned())], "its texts, in order, as one frame");
        assert_eq!(c.next_flush(), Some(Timestamp(20)), "the others still wait for the window");
        assert_eq!(c.flush_conn(&mut out, ConnId(5), |_| true), 0, "nothing is written twice");
        // The rest goes out at the window's end, without connection 5.
        out.clear();
        for t in 20..40 {
            c.flush_due(&mut out, |_| true, 100, Timestamp(t));
        }
        let sent = texts(&out);
        let reached: Vec<u64> = sent.iter().flat_map(|(to, _)| to.iter().copied()).collect();
        assert_eq!(reached.len(), 99);
        assert!(!reached.contains(&5));
        assert!(sent.iter().all(|(_, text)| text == "{\"b\":2}"));
    }

    #[test]
    fn a_close_mid_sweep_writes_the_closed_connection_once_and_the_sweep_goes_on() {
        let mut c = Coalescer::new(20, 2, 0, 0).with_sweep(10);
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..50).map(ConnId).collect();
        c.emit(&mut out, all.clone(), Arc::from("1"), Urgency::Prompt, 50, |_| true, Timestamp(0));
        c.emit(&mut out, all.clone(), Arc::from("2"), Urgency::Prompt, 50, |_| true, Timestamp(1));
        c.flush_due(&mut out, |_| true, 50, Timestamp(20));
        assert!(c.sweeping(), "the first step of ten is written");
        c.flush_conn(&mut out, ConnId(3), |_| true);
        c.flush_conn(&mut out, ConnId(42), |_| true);
        while c.sweeping() {
            c.flush_due(&mut out, |_| true, 50, Timestamp(21));
        }
        let mut per_conn = vec![Vec::new(); 50];
        for (to, text) in texts(&out) {
            for conn in to {
                if let Some(got) = per_conn.get_mut(conn as usize) {
                    got.push(text.clone());
                }
            }
        }
        for (conn, got) in per_conn.iter().enumerate() {
            assert_eq!(got, &["1".to_owned(), "2".to_owned()], "connection {conn}: each text once, in order");
        }
    }

    #[test]
    fn a_lazy_budget_of_zero_makes_churn_prompt() {
        // `COALESCE_LAZY_FRAMES_PER_SEC=0`: membership churn is flushed at the end of its window like the rest.
        let mut c = Coalescer::new(20, 2, 0, 0);
        let mut out = VecDeque::new();
        let all = vec![ConnId(1), ConnId(2)];
        c.emit(&mut out, all.clone(), Arc::from("{\"j\":1}"), Urgency::Lazy, 2, |_| true, Timestamp(0));
        c.emit(&mut out, all, Arc::from("{\"j\":2}"), Urgency::Lazy, 2, |_| true, Timestamp(15));
        c.flush_due(&mut out, |_| true, 2, Timestamp(20));
        assert_eq!(texts(&out).len(), 2, "the queued join went out at the window's end");
    }

    #[test]
    fn a_measured_budget_never_falls_below_a_configured_one_above_the_measured_cap() {
        let mut c = Coalescer::new(20, 50, 100_000, 0).with_measured_budget(50);
        c.observe_flush(1000, 20);
        assert_eq!(c.frames_per_sec(), 100_000);
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
    fn a_sweep_takes_what_was_queued_meanwhile_for_the_connections_it_has_not_reached() {
        let mut c = Coalescer::new(20, 2, 0, 0).with_sweep(64);
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..200).map(ConnId).collect();
        let text = |s: &str| Arc::from(format!("{{\"m\":\"{s}\"}}"));
        c.emit(&mut out, all.clone(), text("a"), Urgency::Prompt, 200, |_| true, Timestamp(0));
        c.emit(&mut out, all.clone(), text("b"), Urgency::Prompt, 200, |_| true, Timestamp(5));
        // A text to a few connections, out of order and twice over: queued sorted, once each.
        c.emit(
            &mut out,
            vec![ConnId(150), ConnId(3), ConnId(150)],
            text("x"),
            Urgency::Prompt,
            200,
            |_| true,
            Timestamp(6),
        );
        c.flush_due(&mut out, |_| true, 200, Timestamp(20));
        assert!(c.sweeping());
        assert_eq!(c.next_flush(), Some(Timestamp(20)), "a sweep in progress is due");
        let first = texts(&out);
        let mut reached: Vec<u64> = first[1..].iter().flat_map(|(to, _)| to.clone()).collect();
        reached.sort_unstable();
        assert_eq!(reached, (0..64).collect::<Vec<_>>(), "the first step writes 64 connections");
        // Queued while the sweep is under way: the connections not reached yet get it in this sweep.
        c.emit(&mut out, all.clone(), text("c"), Urgency::Prompt, 200, |_| true, Timestamp(21));
        let mut steps = 1;
        while c.sweeping() {
            c.flush_due(&mut out, |_| true, 200, Timestamp(22));
            steps += 1;
        }
        assert_eq!(steps, 4, "200 connections: four steps of 64 or fewer");
        assert_eq!(c.next_flush(), Some(Timestamp(40)), "what the first step's connections missed waits a window");
        c.flush_due(&mut out, |_| true, 200, Timestamp(40));
        while c.sweeping() {
            c.flush_due(&mut out, |_| true, 200, Timestamp(40));
        }
        assert_eq!(c.next_flush(), None);
        // Every connection saw every text meant for it exactly once, in order.
        for conn in 0..200u64 {
            let seen: Vec<String> =
                texts(&out).into_iter().filter(|(to, _)| to.contains(&conn)).map(|(_, t)| t).collect();
            let extra = if conn == 3 || conn == 150 { ",{\"m\":\"x\"}" } else { "" };
            let want: Vec<String> = if conn < 64 {
                let b = if extra.is_empty() { text("b").to_string() } else { format!("[{}{extra}]", text("b")) };
                vec![text("a").to_string(), b, text("c").to_string()]
            } else {
                vec![text("a").to_string(), format!("[{}{extra},{}]", text("b"), text("c"))]
            };
            assert_eq!(seen, want, "connection {conn}");
        }
    }

    #[test]
    fn membership_churn_alone_is_flushed_whole_even_with_sweeps() {
        let mut c = Coalescer::new(20, 2, 0, 2_000).with_sweep(64);
        let mut out = VecDeque::new();
        let all: Vec<ConnId> = (0..200).map(ConnId).collect();
        c.emit(&mut out, all.clone(), Arc::from("{\"j\":0}"), Urgency::Lazy, 200, |_| true, Timestamp(0));
        c.emit(&mut out, all.clone(), Arc::from("{\"j\":1}"), Urgency::Lazy, 200, |_| true, Timestamp(5));
        // Held within the lazy budget (200 connections at 2,000 frames/s: 100 ms), then written at once.
        let due = c.lazy_len(200);
        c.flush_due(&mut out, |_| true, 200, Timestamp(5 + due));
        assert!(!c.sweeping());
        let reached: usize = texts(&out)[1..].iter().map(|(to, _)| to.len()).sum();
        assert_eq!(reached, 200, "everyone in one flush");
        // A chat message among the churn makes the flush a sweep.
        c.emit(&mut out, all.clone(), Arc::from("{\"j\":2}"), Urgency::Lazy, 200, |_| true, Timestamp(110));
        c.emit(&mut out, all, Arc::from("{\"chat\":1}"), Urgency::Prompt, 200, |_| true, Timestamp(111));
        let end = c.window_end().expect("a window is open");
        c.flush_due(&mut out, |_| true, 200, end);
        assert!(c.sweeping());
    }

    /// A lecture of 1,000 at 200 messages a second with 40 ms windows (25,000 frames/s), where the adapter
    /// writes 64 sockets per millisecond and calls for a sweep's next step once it has written the last one,
    /// as the edge does. Returns the longest any member waited for any message (ms).
    fn slowest_delivery(sweep_conns: usize) -> u64 {
        let mut c = Coalescer::new(20, 50, 25_000, 0).with_sweep(sweep_conns);
        let mut core_out = VecDeque::new();
        let all: Vec<ConnId> = (0..1000).map(ConnId).collect();
        let mut sockets: VecDeque<(ConnId, Arc<str>)> = VecDeque::new();
        let mut sent_at: Vec<u64> = Vec::new();
        let mut worst = 0;
        for ms in 0..3_000u64 {
            let now = Timestamp(ms);
            // The room runs its due flush before it handles an event, as `Room::run_timers` does.
            if c.window_end().is_some_and(|end| end <= now) {
                c.flush_due(&mut core_out, |_| true, 1000, now);
            }
            if ms % 5 == 0 {
                let n = sent_at.len();
                sent_at.push(ms);
                c.emit(&mut core_out, all.clone(), Arc::from(format!("{n}")), Urgency::Prompt, 1000, |_| true, now);
            }
            // The adapter: a sweep's next step once the previous one is written, then this millisecond's sockets.
            if sockets.is_empty() && core_out.is_empty() && c.sweeping() {
                c.flush_due(&mut core_out, |_| true, 1000, now);
            }
            while let Some(output) = core_out.pop_front() {
                if let Output::Send { to, text } = output {
                    sockets.extend(to.into_iter().map(|conn| (conn, text.clone())));
                }
            }
            for (_, text) in sockets.drain(..sockets.len().min(64)) {
                for n in text.trim_matches(|c| c == '[' || c == ']').split(',') {
                    let sent = n.parse::<usize>().ok().and_then(|n| sent_at.get(n).copied()).unwrap_or(ms);
                    // After the first second: the steady state, not the room's first windows of credit.
                    if sent >= 1_000 {
                        worst = worst.max(ms - sent);
                    }
                }
            }
        }
        worst
    }

    #[test]
    fn a_sweep_delivers_within_one_window_where_a_whole_flush_adds_its_own_length() {
        // Writing 1,000 sockets takes 16 ms here. A flush planned whole at the window's end reaches its last
        // member up to a window and a flush after a message; a sweep, up to a window and one step.
        let whole = slowest_delivery(0);
        let swept = slowest_delivery(64);
        assert!(whole >= 50, "a whole flush: {whole} ms");
        assert!(swept <= 43, "a sweep: {swept} ms (a whole flush: {whole} ms)");
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
