//! The lease of a room's flush pump: which event handler waits for the coalescing windows and flushes them.
//!
//! A busy room queues frames for the end of each flush window ([`crate::room::Room::window_end`]). In a
//! Durable Object the only timer that does not need a storage write is a delay awaited inside an event
//! handler, so one handler at a time "pumps": it waits for each window's end, flushes, and goes on while
//! windows keep opening. The rules this type keeps:
//! - **One pumper.** [`PumpLease::start`] grants the pump only when nobody holds it.
//! - **A pump that stopped waking is taken over.** A runtime may drop a handler mid-wait (a cancelled event,
//!   a limit hit) without running any of its code again; its lease would then block every later pump and the
//!   room's queue would never be flushed. The pumper renews the lease each time it wakes ([`PumpLease::beat`]);
//!   a lease not renewed for [`STALE_MS`] is free again, and a superseded pumper learns so at its next beat
//!   and quits without touching anything.
//! - **A pump is handed over after [`HANDOFF_MS`].** One event must not run for the whole of a long busy
//!   period (an alarm handler has a wall-clock limit, and while it runs no other alarm is delivered): the
//!   pumper stops at its next wake after that long and the adapter arms the alarm for the window's end,
//!   whose handler pumps on.

use crate::time::Timestamp;

/// A lease not renewed for this long belongs to a pumper that will not wake again. Far above a window
/// (≤ 250 ms) plus a flush, so a live pumper on a busy thread is never taken over.
pub const STALE_MS: u64 = 5_000;

/// A pumper hands the pump over (to the alarm) once it has held it this long.
pub const HANDOFF_MS: u64 = 5_000;

/// Which pumper holds the lease, as handed out by [`PumpLease::start`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pumper(u64);

/// What a pumper does after waking ([`PumpLease::beat`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// Flush and wait for the next window.
    Pump,
    /// Held long enough: flush, then stop and let the alarm take over.
    HandOff,
    /// Another pumper took over: stop at once, touching nothing.
    Superseded,
}

/// The lease (see the module docs).
#[derive(Debug, Default)]
pub struct PumpLease {
    generation: u64,
    /// The holder, when it took the lease and when it last woke.
    holder: Option<(Pumper, Timestamp, Timestamp)>,
}

impl PumpLease {
    /// Whether a live pumper holds the lease at `now` (it will flush what is queued).
    pub fn is_held(&self, now: Timestamp) -> bool {
        self.holder.is_some_and(|(_, _, beat)| now.since(beat) < STALE_MS)
    }

    /// Takes the lease if nobody live holds it.
    pub fn start(&mut self, now: Timestamp) -> Option<Pumper> {
        if self.is_held(now) {
            return None;
        }
        self.generation = self.generation.wrapping_add(1);
        let pumper = Pumper(self.generation);
        self.holder = Some((pumper, now, now));
        Some(pumper)
    }

    /// The pumper woke at `now`: renews its lease and says what to do.
    pub fn beat(&mut self, pumper: Pumper, now: Timestamp) -> Beat {
        match &mut self.holder {
            Some((holder, started, beat)) if *holder == pumper => {
                *beat = now;
                if now.since(*started) >= HANDOFF_MS {
                    Beat::HandOff
                } else {
                    Beat::Pump
                }
            }
            _ => Beat::Superseded,
        }
    }

    /// The pumper stops (the windows closed, or it hands over): the lease is free, unless another took it.
    pub fn end(&mut self, pumper: Pumper) {
        if self.holder.is_some_and(|(holder, _, _)| holder == pumper) {
            self.holder = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pumper_at_a_time_and_free_again_when_it_ends() {
        let mut lease = PumpLease::default();
        let first = lease.start(Timestamp(1_000)).expect("free at first");
        assert!(lease.is_held(Timestamp(1_010)));
        assert_eq!(lease.start(Timestamp(1_010)), None, "a second handler does not pump");
        assert_eq!(lease.beat(first, Timestamp(1_050)), Beat::Pump);
        lease.end(first);
        assert!(!lease.is_held(Timestamp(1_060)));
        assert!(lease.start(Timestamp(1_060)).is_some());
    }

    #[test]
    fn a_pumper_that_stops_waking_is_taken_over_and_then_quits() {
        let mut lease = PumpLease::default();
        let lost = lease.start(Timestamp(0)).expect("free");
        assert_eq!(lease.beat(lost, Timestamp(200)), Beat::Pump);
        // Its handler was dropped mid-wait: no beat for STALE_MS.
        assert!(lease.is_held(Timestamp(200 + STALE_MS - 1)));
        let next = lease.start(Timestamp(200 + STALE_MS)).expect("a stale lease is free");
        assert_ne!(next, lost);
        // Should the lost one ever wake, it learns it was superseded and its end frees nothing.
        assert_eq!(lease.beat(lost, Timestamp(200 + STALE_MS + 10)), Beat::Superseded);
        lease.end(lost);
        assert!(lease.is_held(Timestamp(200 + STALE_MS + 10)), "the new pumper keeps its lease");
        assert_eq!(lease.beat(next, Timestamp(200 + STALE_MS + 20)), Beat::Pump);
    }

    #[test]
    fn a_long_pump_is_handed_over() {
        let mut lease = PumpLease::default();
        let pumper = lease.start(Timestamp(0)).expect("free");
        let mut now = Timestamp(0);
        while now.0 < HANDOFF_MS - 100 {
            now = now.plus_ms(100);
            assert_eq!(lease.beat(pumper, now), Beat::Pump, "at {now:?}");
        }
        assert_eq!(lease.beat(pumper, Timestamp(HANDOFF_MS)), Beat::HandOff);
        lease.end(pumper);
        assert!(lease.start(Timestamp(HANDOFF_MS)).is_some(), "the alarm's handler pumps on");
    }
}
