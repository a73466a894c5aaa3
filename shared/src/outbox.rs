//! The socket outbox of a room object: a big flush goes out in chunks, and each connection's frames stay in
//! the order the core produced them.
//!
//! A flush in a busy room is one frame to every member. A runtime with one thread per object (workerd) does
//! nothing else while it writes them — at 500 members that is tens of milliseconds in which a joiner's
//! upgrade, and the `welcome` behind it, wait. So the adapter sends a flush [`CHUNK`] sockets at a time and
//! yields to its event loop between chunks; what is not sent yet waits here. The rules this type keeps:
//! - **Per-connection order.** A frame (or a close) for a connection that still has something waiting here
//!   waits behind it; a connection with nothing waiting gets its frame at once, so a joiner's `welcome` never
//!   waits behind the flush that is going out to everyone else.
//! - **Chunks in submission order.** [`Outbox::next_chunk`] hands out the oldest waiting deliveries first; a
//!   close leaves only after every frame submitted for that connection before it.
//! - **Nothing is dropped here.** A delivery to a connection that has gone away is the adapter's to skip.
//!
//! Generic over the frame's text handle `T` (a JavaScript string in the edge, so one string is made per
//! frame rather than one per socket), so the rules are tested natively.

use crate::ids::ConnId;
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};

/// How many sockets one chunk of a flush writes before the adapter yields to its event loop: a few
/// milliseconds of workerd's send path (≈ 25–100 µs per frame on the development machine).
pub const CHUNK: usize = 64;

/// One delivery to hand to the sockets, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery<T> {
    /// Send `text` to each of `to`.
    Text { text: T, to: Vec<ConnId> },
    /// Close `conn` with `code` and `reason`.
    Close { conn: ConnId, code: u16, reason: String },
}

/// Deliveries not yet handed to the sockets ([module docs](self)).
#[derive(Debug)]
pub struct Outbox<T> {
    waiting: VecDeque<Delivery<T>>,
    /// How many entries of `waiting` name each connection (absent: none).
    pending: HashMap<ConnId, usize>,
}

impl<T> Default for Outbox<T> {
    fn default() -> Self {
        Self { waiting: VecDeque::new(), pending: HashMap::new() }
    }
}

impl<T: Clone> Outbox<T> {
    /// Submits `text` for `to`; returns the connections to send it to now: those with nothing waiting, at
    /// most `budget` of them (the budget is spent by what is returned). The others wait behind what they
    /// already have waiting, in `to`'s order.
    pub fn send(&mut self, text: &T, to: Vec<ConnId>, budget: &mut usize) -> Vec<ConnId> {
        // The common case, a quiet room: nothing waits and the budget covers everyone.
        if self.waiting.is_empty() && to.len() <= *budget {
            *budget -= to.len();
            return to;
        }
        let mut now = Vec::new();
        let mut later = Vec::new();
        for conn in to {
            if *budget > 0 && !self.pending.contains_key(&conn) {
                *budget -= 1;
                now.push(conn);
            } else {
                *self.pending.entry(conn).or_insert(0) += 1;
                later.push(conn);
            }
        }
        if !later.is_empty() {
            self.waiting.push_back(Delivery::Text { text: text.clone(), to: later });
        }
        now
    }

    /// Submits a close; returns it back if it may happen now (nothing waits for `conn`), or keeps it behind
    /// the frames waiting for that connection and returns `None`.
    pub fn close(&mut self, conn: ConnId, code: u16, reason: String) -> Option<Delivery<T>> {
        if !self.pending.contains_key(&conn) {
            return Some(Delivery::Close { conn, code, reason });
        }
        *self.pending.entry(conn).or_insert(0) += 1;
        self.waiting.push_back(Delivery::Close { conn, code, reason });
        None
    }

    /// The oldest waiting deliveries, to at most `max` sockets in all (at least one delivery if any wait, so a
    /// `max` of 0 still makes progress), removed from the outbox.
    pub fn next_chunk(&mut self, max: usize) -> Vec<Delivery<T>> {
        let mut chunk = Vec::new();
        let mut room = max.max(1);
        while room > 0 {
            let Some(front) = self.waiting.front_mut() else { break };
            let delivery = match front {
                Delivery::Text { text, to } if to.len() > room => {
                    let head: Vec<ConnId> = to.drain(..room).collect();
                    Delivery::Text { text: text.clone(), to: head }
                }
                _ => match self.waiting.pop_front() {
                    Some(whole) => whole,
                    None => break,
                },
            };
            match &delivery {
                Delivery::Text { to, .. } => {
                    room = room.saturating_sub(to.len());
                    for conn in to {
                        self.release(*conn);
                    }
                }
                Delivery::Close { conn, .. } => {
                    room -= 1;
                    self.release(*conn);
                }
            }
            chunk.push(delivery);
        }
        chunk
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// How many sockets' deliveries wait.
    pub fn waiting_sockets(&self) -> usize {
        self.pending.values().sum()
    }

    fn release(&mut self, conn: ConnId) {
        if let Some(count) = self.pending.get_mut(&conn) {
            *count -= 1;
            if *count == 0 {
                self.pending.remove(&conn);
            }
        }
    }
}

/// The right to drain an outbox, one handler at a time, held for as long as it lives: a drain that the
/// runtime drops mid-yield releases it, so the next handler drains instead. Two drainers taking turns
/// would each count the other's chunks in the clock steps of its own turns ([`clean_flush_time`]).
#[derive(Debug)]
pub struct DrainLease<'a>(&'a Cell<bool>);

impl<'a> DrainLease<'a> {
    /// Takes the lease kept in `held`, or `None` while another handler holds it.
    pub fn take(held: &'a Cell<bool>) -> Option<Self> {
        if held.replace(true) {
            None
        } else {
            Some(DrainLease(held))
        }
    }
}

impl Drop for DrainLease<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The frames and time of a chunked flush's turns without the turns other events intruded on: steps more
/// than a millisecond above twice the median step are left out (the clock moves in whole milliseconds, so a
/// chunk's step is 0–2 ms). `None` for a flush of one or two turns, which says too little.
pub fn clean_flush_time(steps: &mut [(u64, u64)]) -> Option<(u64, u64)> {
    if steps.len() < 3 {
        return None;
    }
    steps.sort_unstable();
    let median = steps.get(steps.len() / 2).map(|(ms, _)| *ms)?;
    let limit = median.saturating_mul(2).saturating_add(1);
    let clean = steps.iter().filter(|(ms, _)| *ms <= limit);
    Some(clean.fold((0, 0), |(frames, ms), (step_ms, step_frames)| (frames + step_frames, ms + step_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u64) -> ConnId {
        ConnId(n)
    }

    /// Every (connection, frame) pair in the order a socket would see it.
    fn seen(chunks: &[Delivery<&'static str>]) -> Vec<(ConnId, String)> {
        let mut out = Vec::new();
        for d in chunks {
            match d {
                Delivery::Text { text, to } => out.extend(to.iter().map(|c| (*c, (*text).to_owned()))),
                Delivery::Close { conn, .. } => out.push((*conn, "close".to_owned())),
            }
        }
        out
    }

    #[test]
    fn one_handler_drains_at_a_time_until_its_lease_is_dropped() {
        let held = Cell::new(false);
        let first = DrainLease::take(&held);
        assert!(first.is_some());
        // A refused take leaves the holder's lease alone.
        assert!(DrainLease::take(&held).is_none());
        assert!(DrainLease::take(&held).is_none());
        assert!(held.get());
        drop(first);
        assert!(!held.get());
        assert!(DrainLease::take(&held).is_some(), "a dropped lease (a drain cut short) frees the outbox");
        assert!(!held.get());
    }

    #[test]
    fn a_flush_beyond_the_budget_waits_and_leaves_in_chunks() {
        let mut outbox = Outbox::default();
        let mut budget = 3;
        let now = outbox.send(&"f", (0..10).map(c).collect(), &mut budget);
        assert_eq!(now, vec![c(0), c(1), c(2)]);
        assert_eq!(budget, 0);
        assert_eq!(outbox.waiting_sockets(), 7);
        let first = outbox.next_chunk(4);
        assert_eq!(first, vec![Delivery::Text { text: "f", to: vec![c(3), c(4), c(5), c(6)] }]);
        let second = outbox.next_chunk(4);
        assert_eq!(second, vec![Delivery::Text { text: "f", to: vec![c(7), c(8), c(9)] }]);
        assert!(outbox.is_empty());
        assert!(outbox.next_chunk(4).is_empty());
    }

    #[test]
    fn a_connection_with_nothing_waiting_is_not_held_behind_the_flush() {
        let mut outbox = Outbox::default();
        let _ = outbox.send(&"flush", (0..10).map(c).collect(), &mut 2);
        let mut unlimited = usize::MAX;
        // A joiner's welcome, submitted while the flush is still going out.
        assert_eq!(outbox.send(&"welcome", vec![c(99)], &mut unlimited), vec![c(99)]);
        // A member the flush has not reached yet waits for it first.
        assert!(outbox.send(&"ack", vec![c(5)], &mut unlimited).is_empty());
        // One the flush already reached does not.
        assert_eq!(outbox.send(&"ack", vec![c(1)], &mut unlimited), vec![c(1)]);
        let rest = outbox.next_chunk(100);
        let order: Vec<_> = seen(&rest).into_iter().filter(|(conn, _)| *conn == c(5)).collect();
        assert_eq!(order, vec![(c(5), "flush".to_owned()), (c(5), "ack".to_owned())]);
    }

    #[test]
    fn a_close_waits_for_the_frames_before_it() {
        let mut outbox = Outbox::default();
        let _ = outbox.send(&"bye", vec![c(1), c(2)], &mut 0);
        assert!(outbox.close(c(2), 4003, "kicked".into()).is_none());
        assert!(outbox.close(c(3), 4003, "kicked".into()).is_some());
        let all = seen(&outbox.next_chunk(1));
        assert_eq!(all, vec![(c(1), "bye".to_owned())]);
        let all = seen(&outbox.next_chunk(10));
        assert_eq!(all, vec![(c(2), "bye".to_owned()), (c(2), "close".to_owned())]);
        assert!(outbox.is_empty() && outbox.waiting_sockets() == 0);
    }

    /// Random submissions against the rule: each connection sees exactly its frames, in submission order.
    #[test]
    fn every_connection_sees_its_frames_in_submission_order() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        const TEXTS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
        for _ in 0..200 {
            let mut outbox = Outbox::default();
            let mut expected: HashMap<ConnId, Vec<String>> = HashMap::new();
            let mut got: HashMap<ConnId, Vec<String>> = HashMap::new();
            for step in 0..40 {
                if next(3) == 0 {
                    for (conn, text) in seen(&outbox.next_chunk(next(6) as usize)) {
                        got.entry(conn).or_default().push(text);
                    }
                    continue;
                }
                let text = TEXTS[step % TEXTS.len()];
                let to: Vec<ConnId> = (0..8).filter(|_| next(2) == 0).map(c).collect();
                for conn in &to {
                    expected.entry(*conn).or_default().push(text.to_owned());
                }
                let mut budget = next(5) as usize;
                for conn in outbox.send(&text, to, &mut budget) {
                    got.entry(conn).or_default().push(text.to_owned());
                }
            }
            while !outbox.is_empty() {
                for (conn, text) in seen(&outbox.next_chunk(3)) {
                    got.entry(conn).or_default().push(text);
                }
            }
            assert_eq!(got, expected);
            assert_eq!(outbox.waiting_sockets(), 0);
        }
    }

    #[test]
    fn a_flush_is_timed_without_the_turns_other_events_intruded_on() {
        // 15 turns of 64 frames, 1 ms each, two of them with a message's commit (9 and 12 ms) in between.
        let mut steps: Vec<(u64, u64)> = (0..15)
            .map(|i| {
                (
                    if i == 4 {
                        9
                    } else if i == 9 {
                        12
                    } else {
                        1
                    },
                    64,
                )
            })
            .collect();
        assert_eq!(clean_flush_time(&mut steps), Some((13 * 64, 13)), "20 ms per 1,000 frames minus the intrusions");
        let mut mixed = vec![(1, 64), (2, 64), (1, 64), (2, 64), (3, 64)];
        assert_eq!(clean_flush_time(&mut mixed), Some((5 * 64, 9)), "the clock's whole-millisecond steps are kept");
        assert_eq!(clean_flush_time(&mut [(1, 64), (1, 64)]), None, "two turns say too little");
    }
}
