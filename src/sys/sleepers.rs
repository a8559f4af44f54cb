//! Sleeping on a futex word behind a "sleepers" flag, and waking one sleeper: the protocol
//! the queue's getters and putters (`src/queue/shared.rs`) and its producer lock
//! ([`LightMutex`](super::light_mutex::LightMutex)) share.
//!
//! A sleeper reads the word, [`raise`]s the flag, makes the order its waker needs (the
//! fence here, and a barrier in the waker's threads where the waker does not fence),
//! looks once more, and sleeps on the word from the value it read. A waker that finds the
//! flag raised calls [`wake_one`]. The flag word holds, in bit 0, "raised", and above it
//! a generation each raise bumps and a lowering keeps: so a waker lowers it only if
//! nobody raised it since it read it. (A bare count restarted at 1 after each lowering: a
//! waker that had read 1 before another lowered the flag could then lower a new raise,
//! also 1, and leave its sleeper asleep with the flag down. A producer-lock test hung so
//! in a loaded CI run.)
//!
//! Waking one, not all: one item, one slot or one unlocked lock calls for one taker, and
//! waking every sleeper cost each that lost the race a wake-up, a spin and a barrier
//! before it slept again (with 16 idle consumer processes, six times the CPU per item;
//! docs/design.md, "Sleeping").

use std::sync::atomic::{AtomicU32, Ordering, fence};

use super::shm;

/// The flag's "raised" bit; the bits above it are the generation.
const RAISED: u32 = 1;

/// Raises `sleepers` for a sleeper about to make its last look: the bit set and the
/// generation bumped, so that the word never again holds a value a waker read before
/// (short of 2^31 raises while it waits), then a full fence (against the waker's fence
/// between its change and its look at the flag).
pub(crate) fn raise(sleepers: &AtomicU32) {
    let _ = sleepers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some(v.wrapping_add(2) | RAISED)
    });
    fence(Ordering::SeqCst);
}

/// Whether a value read from a sleepers word says a sleeper raised it.
#[inline]
pub(crate) fn is_raised(word: u32) -> bool {
    word & RAISED != 0
}

/// Lowers `sleepers`, keeping its generation; whether it was raised.
fn lower(sleepers: &AtomicU32) -> bool {
    is_raised(sleepers.fetch_and(!RAISED, Ordering::SeqCst))
}

/// Bumps `word` and, if a sleeper raised `sleepers`, lowers it and wakes every sleeper on
/// `word`: for a change every sleeper waits for (a `JoinableQueue`'s last task done), one
/// wake call per sleep however many changes come while they wake up.
pub(crate) fn wake_all(word: &AtomicU32, sleepers: &AtomicU32) {
    word.fetch_add(1, Ordering::SeqCst);
    if is_raised(sleepers.load(Ordering::SeqCst)) && lower(sleepers) {
        shm::futex_wake_all(word);
    }
}

/// Bumps `word` and wakes one sleeper on it, for a waker that found `sleepers` at
/// `raised` ([`is_raised`]). The flag stays raised while the kernel may hold other
/// sleepers; it is lowered (unless raised again since it read `raised`) only when the wake
/// found nobody asleep. Whoever was on the way to sleep then read `word` before raising
/// the flag, so before this bump, and its wait fails at once: no sleeper is left asleep
/// with the flag down.
#[cold]
pub(crate) fn wake_one(word: &AtomicU32, sleepers: &AtomicU32, raised: u32) {
    word.fetch_add(1, Ordering::SeqCst);
    if shm::futex_wake_one(word) == 0 {
        let _ = sleepers.compare_exchange(
            raised,
            raised & !RAISED,
            Ordering::SeqCst,
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A waker that read the flag, then lost the processor before lowering it, must not
    /// lower a raise made after another waker lowered it: that sleeper would sleep with the
    /// flag down, and the producer lock's sleepers have no timeout. The interleaving, step
    /// by step (nobody is asleep in the kernel, so each wake finds no one): a sleeper
    /// raises; waker A reads the flag; waker B reads it and lowers it; a second sleeper
    /// raises; A, still holding its old value, now tries to lower. With a bare count
    /// (restarting at 1 after a lowering) A's old 1 matched the new raise and lowered it.
    #[test]
    fn a_stale_waker_does_not_lower_a_later_raise() {
        let (word, sleepers) = (AtomicU32::new(0), AtomicU32::new(0));
        raise(&sleepers);
        let read_by_a = sleepers.load(Ordering::SeqCst);
        let read_by_b = sleepers.load(Ordering::SeqCst);
        wake_one(&word, &sleepers, read_by_b);
        assert!(
            !is_raised(sleepers.load(Ordering::SeqCst)),
            "B found nobody: lowered"
        );
        raise(&sleepers);
        wake_one(&word, &sleepers, read_by_a);
        assert!(
            is_raised(sleepers.load(Ordering::SeqCst)),
            "A's stale value lowered the second sleeper's raise"
        );
        // A raise after many lowerings still differs from every value read before.
        for _ in 0..1000 {
            let seen = sleepers.load(Ordering::SeqCst);
            wake_one(&word, &sleepers, seen);
            raise(&sleepers);
            assert_ne!(sleepers.load(Ordering::SeqCst), seen);
        }
    }
}
