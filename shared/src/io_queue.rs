//! A room object's IO beyond its sockets (placements, control commands to its media node, releases), performed
//! one call at a time in the order the room asked for it, whichever event handler asked.
//!
//! Handlers of one Durable Object interleave at every `await`. Without a queue, a handler that waits on a slow
//! node lets the next handler send its own IO first: a teacher's mute and the unmute right after it could
//! reach the node as unmute, mute, and leave the student muted; a clear's release of the media placement
//! could follow the placement its rejoining members asked for, and split the class over two nodes. So every
//! handler pushes its IO here, and one handler at a time works the queue ([`IoQueue::worker`]), performing
//! what other handlers push while it waits, too.
//!
//! The turn ends when the worker is dropped. A runtime may also abandon a handler mid-wait without running
//! any of its code again (see [`crate::pump`]), so a turn not renewed for [`STALE_MS`] is free for the next
//! handler, and the abandoned worker, should it ever wake, finds itself superseded and takes nothing more.

use crate::time::Timestamp;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

/// A worker that has not renewed its turn for this long was abandoned by the runtime. Well above one IO
/// call's bound (the edge gives each 3 s) plus a flush, so a live worker is never taken over.
pub const STALE_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Turn {
    generation: u64,
    renewed_at: Timestamp,
}

/// The queue (see the module docs). Single-threaded: a Durable Object runs one event at a time.
#[derive(Debug)]
pub struct IoQueue<T> {
    queue: RefCell<VecDeque<T>>,
    turn: Cell<Option<Turn>>,
    generations: Cell<u64>,
}

impl<T> Default for IoQueue<T> {
    fn default() -> Self {
        IoQueue { queue: RefCell::new(VecDeque::new()), turn: Cell::new(None), generations: Cell::new(0) }
    }
}

impl<T> IoQueue<T> {
    /// Adds `items` behind everything queued.
    pub fn push(&self, items: impl IntoIterator<Item = T>) {
        self.queue.borrow_mut().extend(items);
    }

    /// The right to perform the queue's IO, or `None` while another handler has it (that handler performs
    /// what was pushed, in order). A turn not renewed for [`STALE_MS`] is taken over.
    pub fn worker(&self, now: Timestamp) -> Option<IoWorker<'_, T>> {
        if self.turn.get().is_some_and(|turn| now.since(turn.renewed_at) < STALE_MS) {
            return None;
        }
        let generation = self.generations.get().wrapping_add(1);
        self.generations.set(generation);
        self.turn.set(Some(Turn { generation, renewed_at: now }));
        Some(IoWorker { queue: self, generation })
    }

    /// Adds `items` behind everything queued, except an item that `repeats` says does the same as the item
    /// queued last (not yet taken): performing an idempotent command twice in a row changes nothing, and a
    /// moderator repeating a mute while the node is slow would otherwise queue a call per click.
    pub fn push_collapsing(&self, items: impl IntoIterator<Item = T>, repeats: impl Fn(&T, &T) -> bool) {
        let mut queue = self.queue.borrow_mut();
        for item in items {
            if !queue.back().is_some_and(|last| repeats(last, &item)) {
                queue.push_back(item);
            }
        }
    }

    /// Drops the waiting items `keep` refuses (commands for a media node the room has lost: each would only
    /// wait out its timeout, ahead of the room's placement on the next node).
    pub fn retain(&self, keep: impl Fn(&T) -> bool) {
        self.queue.borrow_mut().retain(|item| keep(item));
    }

    /// Whether a handler has the turn at `now` (one that went stale does not count): what is pushed now is
    /// performed by it.
    pub fn is_worked(&self, now: Timestamp) -> bool {
        self.turn.get().is_some_and(|turn| now.since(turn.renewed_at) < STALE_MS)
    }

    /// How many items wait.
    pub fn len(&self) -> usize {
        self.queue.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.borrow().is_empty()
    }
}

/// A handler's turn at the queue; ends when dropped.
#[derive(Debug)]
pub struct IoWorker<'a, T> {
    queue: &'a IoQueue<T>,
    generation: u64,
}

impl<T> IoWorker<'_, T> {
    /// Whether this is still the queue's current turn (not taken over after going stale).
    fn current(&self) -> bool {
        self.queue.turn.get().is_some_and(|turn| turn.generation == self.generation)
    }

    /// Renews the turn at `now` (a worker that is about to wait on something else first, such as a drain).
    pub fn renew(&self, now: Timestamp) {
        if self.current() {
            self.queue.turn.set(Some(Turn { generation: self.generation, renewed_at: now }));
        }
    }

    /// The oldest item, taken off the queue, renewing the turn at `now`; `None` when the queue is empty or
    /// this turn was taken over. The queue is not borrowed beyond this call, so the caller may await the
    /// item's IO while other handlers push.
    pub fn next(&self, now: Timestamp) -> Option<T> {
        if !self.current() {
            return None;
        }
        self.renew(now);
        self.queue.queue.borrow_mut().pop_front()
    }
}

impl<T> IoWorker<'_, T> {
    /// Like [`IoWorker::next`], but only if the oldest item is one `wanted` accepts (to take a run of items
    /// that one call can perform together).
    pub fn next_if(&self, now: Timestamp, wanted: impl Fn(&T) -> bool) -> Option<T> {
        if !self.current() || !self.queue.queue.borrow().front().is_some_and(wanted) {
            return None;
        }
        self.next(now)
    }
}

impl<T> Drop for IoWorker<'_, T> {
    fn drop(&mut self) {
        if self.current() {
            self.queue.turn.set(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp(1_000_000);

    #[test]
    fn one_worker_performs_everything_in_push_order_including_what_others_push_meanwhile() {
        let io = IoQueue::default();
        io.push(["mute"]);
        let first = io.worker(T0).expect("nobody works the queue yet");
        assert_eq!(first.next(T0), Some("mute"));
        // While the first handler awaits the mute, a second handler pushes the unmute: it may not send it
        // itself, and the first sends it after the mute.
        io.push(["unmute"]);
        assert!(io.worker(T0.plus_ms(2_000)).is_none(), "one worker at a time");
        assert_eq!(first.next(T0.plus_ms(3_000)), Some("unmute"));
        assert_eq!(first.next(T0.plus_ms(3_000)), None);
        drop(first);
        io.push(["place"]);
        let second = io.worker(T0.plus_ms(3_000)).expect("the turn ended with the first worker");
        assert_eq!((second.next(T0.plus_ms(3_000)), io.len()), (Some("place"), 0));
    }

    #[test]
    fn a_repeat_of_the_last_queued_item_is_not_queued_again() {
        let io = IoQueue::default();
        let same = |a: &&str, b: &&str| a == b && a.starts_with("mute");
        io.push_collapsing(["mute a", "mute a", "mute a"], same);
        assert_eq!(io.len(), 1);
        io.push_collapsing(["unmute a", "mute a", "place", "place"], same);
        assert_eq!(io.len(), 5, "only a repeat of the item right before it collapses, and only when asked");
        let worker = io.worker(T0).expect("free");
        let order: Vec<_> = std::iter::from_fn(|| worker.next(T0)).collect();
        assert_eq!(order, ["mute a", "unmute a", "mute a", "place", "place"]);
        io.push_collapsing(["mute a"], same);
        assert_eq!(io.len(), 1, "one taken (in flight) is not the queue's last: the new one is queued");
    }

    #[test]
    fn items_for_a_lost_node_can_be_dropped_keeping_the_rest_in_order() {
        let io = IoQueue::default();
        io.push(["n1: mute a", "place", "n1: kick b", "n2: mute c"]);
        io.retain(|item| !item.starts_with("n1:"));
        let worker = io.worker(T0).expect("free");
        let order: Vec<_> = std::iter::from_fn(|| worker.next(T0)).collect();
        assert_eq!(order, ["place", "n2: mute c"]);
    }

    #[test]
    fn a_run_of_like_items_is_taken_together_and_stops_at_the_first_other() {
        let io = IoQueue::default();
        io.push(["place a", "place b", "release", "place c"]);
        let worker = io.worker(T0).expect("free");
        let place = |item: &&str| item.starts_with("place");
        let mut run = vec![worker.next(T0).expect("queued")];
        while let Some(item) = worker.next_if(T0, place) {
            run.push(item);
        }
        assert_eq!(run, ["place a", "place b"], "the release keeps its place before the later placement");
        assert_eq!(worker.next_if(T0, place), None);
        assert_eq!(worker.next(T0), Some("release"));
        assert_eq!(worker.next_if(T0, place), Some("place c"));
    }

    #[test]
    fn a_worker_dropped_mid_turn_frees_the_queue_and_keeps_what_it_did_not_take() {
        let io = IoQueue::default();
        io.push([1, 2, 3]);
        {
            let dropped = io.worker(T0).expect("free");
            assert_eq!(dropped.next(T0), Some(1));
            // The runtime drops the handler while it awaits item 1.
        }
        let next = io.worker(T0).expect("a dropped worker releases the queue");
        assert_eq!(next.next(T0), Some(2));
        assert_eq!(next.next(T0), Some(3));
        assert!(io.is_empty());
    }

    #[test]
    fn the_queue_says_whether_a_live_worker_will_perform_what_is_pushed() {
        let io: IoQueue<&str> = IoQueue::default();
        assert!(!io.is_worked(T0), "nobody yet: a request that pushes must get someone (the alarm) to work it");
        let worker = io.worker(T0).expect("free");
        assert!(io.is_worked(T0.plus_ms(STALE_MS - 1)));
        assert!(!io.is_worked(T0.plus_ms(STALE_MS)), "a stale turn performs nothing more");
        worker.renew(T0.plus_ms(STALE_MS - 1));
        assert!(io.is_worked(T0.plus_ms(STALE_MS)), "renewed");
        drop(worker);
        assert!(!io.is_worked(T0.plus_ms(STALE_MS)));
    }

    #[test]
    fn an_abandoned_worker_is_taken_over_once_stale_and_takes_nothing_more() {
        let io = IoQueue::default();
        io.push([1, 2, 3]);
        // The runtime abandons this handler mid-wait without dropping it: its turn is never ended.
        let abandoned = io.worker(T0).expect("free");
        assert_eq!(abandoned.next(T0), Some(1));
        abandoned.renew(T0.plus_ms(4_000));
        assert!(io.worker(T0.plus_ms(4_000 + STALE_MS - 1)).is_none(), "renewed: still live");
        let successor = io.worker(T0.plus_ms(4_000 + STALE_MS)).expect("stale: taken over");
        assert_eq!(abandoned.next(T0.plus_ms(4_000 + STALE_MS)), None, "superseded: takes nothing");
        drop(abandoned);
        assert!(io.worker(T0.plus_ms(4_000 + STALE_MS)).is_none(), "its drop does not end the successor's turn");
        assert_eq!(successor.next(T0.plus_ms(4_000 + STALE_MS)), Some(2));
        assert_eq!(successor.next(T0.plus_ms(4_000 + STALE_MS)), Some(3));
    }
}
