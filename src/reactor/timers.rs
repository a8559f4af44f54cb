//! One-shot and periodic timers for the reactor: a min-heap of deadlines with lazy
//! cancellation. No I/O and no clock of its own: callers pass `now`, which is what lets the
//! tests below drive it with a fake clock.
//!
//! Ties fire in the order the timers were set (a sequence number breaks them), a cancelled
//! timer never fires (its heap entry is skipped when it surfaces), and a periodic timer is
//! rescheduled from its previous deadline, not from when it was handled, so it does not
//! drift; if the loop fell behind by several periods it fires once and skips the missed ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

/// Names a timer set through [`Reactor::set_timer`](crate::Reactor::set_timer) or a
/// handler's [`Context`](crate::Context); handed to [`Handler::on_timer`](crate::Handler::on_timer).
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use multiproc::{Context, Handler, Reactor, TimerId};
///
/// struct Fired(Vec<TimerId>);
/// impl Handler for Fired {
///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
///     fn on_timer(&mut self, ctx: &mut Context<'_>, id: TimerId) {
///         self.0.push(id);
///         if self.0.len() == 2 {
///             ctx.stop();
///         }
///     }
/// }
/// let (_peer, conn) = multiproc::Pipe::new()?;
/// let mut reactor = Reactor::new()?;
/// let token = reactor.register(conn, Fired(Vec::new()))?;
/// let late = reactor.set_timer(token, Duration::from_millis(2))?;
/// let early = reactor.set_timer(token, Duration::from_millis(1))?;
/// assert_ne!(early, late);
/// reactor.run()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(pub(crate) u64);

#[derive(Debug)]
struct Timer<O> {
    owner: O,
    period: Option<Duration>,
}

/// The timer set, generic over who owns each timer (a reactor token).
#[derive(Debug)]
pub(crate) struct Timers<O> {
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    live: HashMap<u64, Timer<O>>,
    next: u64,
}

impl<O: Copy> Timers<O> {
    pub(crate) fn new() -> Timers<O> {
        Timers {
            heap: BinaryHeap::new(),
            live: HashMap::new(),
            next: 0,
        }
    }

    /// A timer for `owner` firing at `deadline`, then every `period` if given.
    pub(crate) fn set(&mut self, owner: O, deadline: Instant, period: Option<Duration>) -> TimerId {
        self.next += 1;
        let id = self.next;
        self.live.insert(id, Timer { owner, period });
        self.heap.push(Reverse((deadline, id)));
        TimerId(id)
    }

    /// Cancels a timer; true if it was live. A cancelled timer never fires.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        let was_live = self.live.remove(&id.0).is_some();
        self.sweep();
        was_live
    }

    /// Cancels every timer of `owner`.
    pub(crate) fn cancel_owner(&mut self, owner: O, same: impl Fn(O, O) -> bool) {
        self.live.retain(|_, t| !same(t.owner, owner));
        self.sweep();
    }

    /// Drops the heap entries of cancelled timers once they outnumber the live ones: they
    /// are otherwise dropped only when they surface, so "cancel and set again on every
    /// message" under a later live deadline would grow the heap with the message rate.
    fn sweep(&mut self) {
        if self.heap.len() > 2 * self.live.len() + 64 {
            let live = &self.live;
            self.heap.retain(|Reverse((_, id))| live.contains_key(id));
        }
    }

    /// The earliest live deadline.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((deadline, id))) = self.heap.peek().copied() {
            if self.live.contains_key(&id) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// The next timer due at `now`, in deadline order (then set order); periodic timers are
    /// rescheduled as they are taken.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(O, TimerId)> {
        loop {
            let Reverse((deadline, id)) = *self.heap.peek()?;
            if deadline > now {
                return None;
            }
            self.heap.pop();
            let Some(timer) = self.live.get(&id) else {
                continue; // cancelled
            };
            let owner = timer.owner;
            match timer
                .period
                .and_then(|period| next_deadline(deadline, period, now))
            {
                Some(next) => self.heap.push(Reverse((next, id))),
                // One-shot, or no next deadline an `Instant` can hold: done.
                None => {
                    self.live.remove(&id);
                }
            }
            return Some((owner, TimerId(id)));
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }
}

/// The deadline after `deadline` on its grid of `period`s that is past `now`: the next one,
/// or, if the loop fell behind, the first one after `now` (the missed ones are skipped
/// rather than fired in a burst). `None` for a zero period, or past what an `Instant` holds.
fn next_deadline(deadline: Instant, period: Duration, now: Instant) -> Option<Instant> {
    if period.is_zero() {
        return None;
    }
    let next = deadline.checked_add(period)?;
    if next > now {
        return Some(next);
    }
    // `now` lies `into` past a grid point (`into < period`), so the next one is
    // `period - into` after `now`; exact in nanoseconds, with no multiplication to overflow.
    let into = now.duration_since(deadline).as_nanos() % period.as_nanos();
    let into = Duration::new(
        u64::try_from(into / 1_000_000_000).ok()?,
        (into % 1_000_000_000) as u32,
    );
    now.checked_add(period - into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(t: &mut Timers<u8>, now: Instant) -> Vec<(u8, TimerId)> {
        std::iter::from_fn(|| t.pop_due(now)).collect()
    }

    #[test]
    fn timers_fire_in_deadline_order_then_set_order() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::new();
        let c = t.set(3, t0 + ms(30), None);
        let a = t.set(1, t0 + ms(10), None);
        let b1 = t.set(2, t0 + ms(20), None);
        let b2 = t.set(4, t0 + ms(20), None);
        assert_eq!(t.next_deadline(), Some(t0 + ms(10)));
        assert!(drain(&mut t, t0 + ms(5)).is_empty());
        assert_eq!(drain(&mut t, t0 + ms(25)), vec![(1, a), (2, b1), (4, b2)]);
        assert_eq!(drain(&mut t, t0 + ms(30)), vec![(3, c)]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn a_cancelled_timer_never_fires() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        let a = t.set(1, t0, None);
        let b = t.set(2, t0, Some(Duration::from_millis(1)));
        assert!(t.cancel(a));
        assert!(!t.cancel(a));
        assert!(t.cancel(b));
        assert!(drain(&mut t, t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn periodic_timers_do_not_drift_and_skip_missed_periods() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::new();
        let p = t.set(7, t0 + ms(10), Some(ms(10)));
        assert_eq!(drain(&mut t, t0 + ms(12)), vec![(7, p)]);
        assert_eq!(t.next_deadline(), Some(t0 + ms(20)));
        // Handled late, by 35 ms: fires once, next at 60, on the original grid.
        assert_eq!(drain(&mut t, t0 + ms(55)), vec![(7, p)]);
        assert_eq!(t.next_deadline(), Some(t0 + ms(60)));
    }

    #[test]
    fn a_periodic_timer_far_behind_fires_once_then_resumes_its_grid() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        // 2^32 periods and more behind: the count of missed periods overflowed a u32.
        for (period, late) in [
            (Duration::from_nanos(1), Duration::from_secs(5)),
            (Duration::from_nanos(3), Duration::from_secs(30)),
            (Duration::from_micros(1), Duration::from_secs(5 * 3600)),
        ] {
            let p = t.set(1, t0 + period, Some(period));
            let now = t0 + late;
            assert_eq!(drain(&mut t, now), vec![(1, p)], "{period:?} late {late:?}");
            let next = t.next_deadline().unwrap();
            assert!(
                next > now && next <= now + period,
                "{period:?}: next {next:?}"
            );
            assert_eq!(
                (next - t0).as_nanos() % period.as_nanos(),
                0,
                "off the grid"
            );
            t.cancel(p);
        }
        // A period as long as a Duration holds: it fires once and is done.
        let p = t.set(1, t0, Some(Duration::MAX));
        assert_eq!(drain(&mut t, t0), vec![(1, p)]);
        assert!(t.is_empty());
    }

    #[test]
    fn cancelled_timers_do_not_pile_up_under_a_later_live_one() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.set(1, t0 + Duration::from_secs(300), None);
        let mut idle = t.set(2, t0 + Duration::from_secs(10), None);
        for _ in 0..100_000 {
            t.cancel(idle);
            idle = t.set(2, t0 + Duration::from_secs(10), None);
        }
        assert!(
            t.heap.len() <= 2 * t.live.len() + 65,
            "heap {}",
            t.heap.len()
        );
        assert_eq!(drain(&mut t, t0 + Duration::from_secs(10)), vec![(2, idle)]);
    }

    #[test]
    fn cancel_owner_removes_only_that_owners_timers() {
        let t0 = Instant::now();
        let mut t = Timers::new();
        t.set(1, t0, None);
        let keep = t.set(2, t0, None);
        t.set(1, t0, Some(Duration::from_millis(1)));
        t.cancel_owner(1, |a, b| a == b);
        assert_eq!(drain(&mut t, t0), vec![(2, keep)]);
    }
}
