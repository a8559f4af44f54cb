//! Sleeping on a futex word behind a "sleepers" flag, and waking one sleeper: the protocol
//! the queue's getters and putters (`src/queue/shared.rs`) and its producer lock
//! ([`LightMutex`](super::light_mutex::LightMutex)) share.
//!
//! A sleeper reads the word, [`raise`]s the flag, makes the order its waker needs (the
//! fence here, and a barrier in the waker's threads where the waker does not fence),
//! looks once more, and sleeps on the word from the value it read. A waker that finds the
//! flag raised calls [`wake_one`]. The flag is a count each raise bumps (never 0), not a
//! bit, so that a waker lowers it only if nobody raised it since it read it.
//!
//! Waking one, not all: one item, one slot or one unlocked lock calls for one taker, and
//! waking every sleeper cost each that lost the race a wake-up, a spin and a barrier
//! before it slept again (with 16 idle consumer processes, six times the CPU per item;
//! docs/design.md, "Sleeping").

use std::sync::atomic::{AtomicU32, Ordering, fence};

use super::shm;

/// Raises `sleepers` for a sleeper about to make its last look: a new value at each
/// raise (never 0), then a full fence (against the waker's fence between its change and
/// its look at the flag).
pub(crate) fn raise(sleepers: &AtomicU32) {
    let _ = sleepers.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        Some(v.wrapping_add(1).max(1))
    });
    fence(Ordering::SeqCst);
}

/// Bumps `word` and wakes one sleeper on it, for a waker that found `sleepers` at
/// `raised` (not 0). The flag stays raised while the kernel may hold other sleepers; it is
/// lowered (unless raised again since it read `raised`) only when the wake found nobody
/// asleep. Whoever was on the way to sleep then read `word` before raising the flag, so
/// before this bump, and its wait fails at once: no sleeper is left asleep with the flag
/// down.
#[cold]
pub(crate) fn wake_one(word: &AtomicU32, sleepers: &AtomicU32, raised: u32) {
    word.fetch_add(1, Ordering::SeqCst);
    if shm::futex_wake_one(word) == 0 {
        let _ = sleepers.compare_exchange(raised, 0, Ordering::SeqCst, Ordering::Relaxed);
    }
}
