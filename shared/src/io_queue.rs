//! A room object's IO beyond its sockets (placements, control commands to its media node, releases), performed
//! one call at a time in the order the room asked for it, whichever event handler asked.
//!
//! Handlers of one Durable Object interleave at every `await`. Without a queue, a handler that waits on a slow
//! node lets the next handler send its own IO first: a teacher's mute and the unmute right after it could
//! reach the node as unmute, mute, and leave the student muted; a clear's release of the media placement
//! could follow the placement its rejoining members asked for, and split the class over two nodes. So every
//! handler pushes its IO here, and one handler at a time works the queue ([`IoQueue::worker`]) — also
//! performing what other handlers push while it waits. The worker's turn ends when it is dropped, also when
//! the runtime drops a handler mid-wait, so a lost handler never blocks the queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

/// The queue (see the module docs). Single-threaded: a Durable Object runs one event at a time.
#[derive(Debug)]
pub struct IoQueue<T> {
    queue: RefCell<VecDeque<T>>,
    working: Cell<bool>,
}

impl<T> Default for IoQueue<T> {
    fn default() -> Self {
        IoQueue { queue: RefCell::new(VecDeque::new()), working: Cell::new(false) }
    }
}

impl<T> IoQueue<T> {
    /// Adds `items` behind everything queued.
    pub fn push(&self, items: impl IntoIterator<Item = T>) {
        self.queue.borrow_mut().extend(items);
    }

    /// The right to perform the queue's IO, or `None` while another handler has it (that handler performs
    /// what was pushed, in order).
    pub fn worker(&self) -> Option<IoWorker<'_, T>> {
        if self.working.replace(true) {
            None
        } else {
            Some(IoWorker { queue: self })
        }
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
}

impl<T> IoWorker<'_, T> {
    /// The oldest item, taken off the queue. The queue is not borrowed beyond this call, so the caller may
    /// await the item's IO while other handlers push.
    pub fn next(&self) -> Option<T> {
        self.queue.queue.borrow_mut().pop_front()
    }
}

impl<T> Drop for IoWorker<'_, T> {
    fn drop(&mut self) {
        self.queue.working.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_worker_performs_everything_in_push_order_including_what_others_push_meanwhile() {
        let io = IoQueue::default();
        io.push(["mute"]);
        let first = io.worker().expect("nobody works the queue yet");
        assert_eq!(first.next(), Some("mute"));
        // While the first handler awaits the mute, a second handler pushes the unmute: it may not send it
        // itself, and the first sends it after the mute.
        io.push(["unmute"]);
        assert!(io.worker().is_none(), "one worker at a time");
        assert_eq!(first.next(), Some("unmute"));
        assert_eq!(first.next(), None);
        drop(first);
        io.push(["place"]);
        let second = io.worker().expect("the turn ended with the first worker");
        assert_eq!((second.next(), io.len()), (Some("place"), 0));
    }

    #[test]
    fn a_worker_dropped_mid_turn_frees_the_queue_and_keeps_what_it_did_not_take() {
        let io = IoQueue::default();
        io.push([1, 2, 3]);
        {
            let lost = io.worker().expect("free");
            assert_eq!(lost.next(), Some(1));
            // The runtime drops the handler while it awaits item 1.
        }
        let next = io.worker().expect("a dropped worker releases the queue");
        assert_eq!(next.next(), Some(2));
        assert_eq!(next.next(), Some(3));
        assert!(io.is_empty());
    }
}
