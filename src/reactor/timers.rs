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
        self.live.remove(&id.0).is_some()
    }

    /// Cancels every timer of `owner`.
    pub(crate) fn cancel_owner(&mut self, owner: O, same: impl Fn(O, O) -> bool) {
        self.live.retain(|_, t| !same(t.owner, owner));
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
            match timer.period {
                Some(period) if !period.is_zero() => {
                    let mut next = deadline + period;
                    if next <= now {
                        // Fell behind: skip the missed periods rather than fire a burst.
                        let behind = now.duration_since(deadline).as_nanos() / period.as_nanos();
                        next = deadline + period * (behind as u32 + 1);
                    }
                    self.heap.push(Reverse((next, id)));
                }
                _ => {
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
