//! A mutex whose unlock is a plain store: the queue's producer lock.
//!
//! `std::sync::Mutex` unlocks with an atomic swap (it must see whether anyone sleeps), a
//! locked instruction and so a full barrier on x86. A put holds the producer lock around
//! writing its frame, and a full barrier right after those stores waits for every line of
//! the frame to be taken from the consumer's cache: between two processes that wait was
//! the larger part of a 64-byte put (docs/design.md). This lock unlocks with a release
//! store and a plain load of a "sleepers" flag. The store-load order that the load needs
//! against a thread going to sleep is paid by the sleeper: it raises the flag, then runs
//! [`barrier_own_threads`] (a barrier on every CPU running one of this process's threads)
//! before its last look at the lock. Either the unlocker's load sees the flag, or its
//! store is visible to that last look. Taking the lock is one compare-and-swap, as
//! `Mutex`'s.
//!
//! Sleeping and waking follow [`super::sleepers`]: an unlock that finds the flag raised
//! wakes one sleeper, not all of them.
//!
//! Where the kernel refuses the barrier, a sleeper naps at most [`NAP_WITHOUT_BARRIER`]
//! at a time instead of sleeping until woken: a wake-up can then be missed, never for
//! longer than that.
//!
//! No poisoning: a panic while the lock is held unlocks it (the queue's producer state
//! is kept consistent by its own checks, as it was under `Mutex` with the poison ignored).
//!
//! [`barrier_own_threads`]: super::shm::barrier_own_threads
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU32, Ordering, compiler_fence};
use std::time::Duration;

use super::shm;
use super::sleepers;

/// Looks at a held lock before sleeping: the queue's producer lock is held for a put's
/// length (tens of nanoseconds) unless the holder claims a log or maps chunks.
const SPINS: u32 = 200;

/// The longest sleep of a waiter whose barrier the kernel refused (a wake-up may be missed).
const NAP_WITHOUT_BARRIER: Duration = Duration::from_millis(1);

/// A mutual exclusion lock around a `T`, unlocked by a plain store (see the module docs).
pub(crate) struct LightMutex<T> {
    /// 1 while a guard exists.
    locked: AtomicU32,
    /// Raised by a waiter about to sleep (a bit and a generation, see [`sleepers`]),
    /// lowered by an unlock whose wake found nobody asleep.
    sleepers: AtomicU32,
    /// Bumped by every wake: waiters sleep on it, from the value read before raising the
    /// flag, so a wake between their raising it and sleeping is not lost.
    wakes: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through a `LightMutexGuard`, and the `locked` word
// (taken by compare-and-swap with `Acquire`, given back with a `Release` store) lets one
// guard exist at a time, so threads sharing the lock share `T` only as they would through
// `std::sync::Mutex<T>`, which is `Sync` for `T: Send`.
unsafe impl<T: Send> Sync for LightMutex<T> {}

// Without this impl the guard would be `Sync` whenever `&LightMutex<T>` is, that is for any
// `T: Send`: a `&LightMutexGuard<Cell<_>>` shared by two threads would let both reach the
// one `&Cell<_>` at once. As `std::sync::MutexGuard`, sharing the guard asks `T: Sync`.
// SAFETY: a shared guard gives out `&T` only (`deref`), which `T: Sync` lets threads share.
unsafe impl<T: Sync> Sync for LightMutexGuard<'_, T> {}

impl<T> LightMutex<T> {
    pub(crate) fn new(value: T) -> LightMutex<T> {
        LightMutex {
            locked: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            wakes: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, through an exclusive borrow of the lock (no locking needed).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Waits for the lock and takes it.
    #[inline]
    pub(crate) fn lock(&self) -> LightMutexGuard<'_, T> {
        if self
            .locked
            .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        LightMutexGuard { mutex: self }
    }

    /// [`lock`](Self::lock) once the lock was found held: spin, then sleep until woken.
    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0;
        loop {
            if self.locked.load(Ordering::Relaxed) == 0
                && self
                    .locked
                    .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            let seen = self.wakes.load(Ordering::SeqCst);
            sleepers::raise(&self.sleepers);
            // The unlock's store and its load of the flag are not ordered by the unlocking
            // thread: this barrier orders them from here (see the module docs).
            let barrier = shm::barrier_own_threads();
            if self
                .locked
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
            shm::futex_wait(&self.wakes, seen, (!barrier).then_some(NAP_WITHOUT_BARRIER));
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for LightMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LightMutex")
            .field("locked", &(self.locked.load(Ordering::Relaxed) != 0))
            .finish_non_exhaustive()
    }
}

/// The lock held: derefs to the value; dropping it unlocks.
pub(crate) struct LightMutexGuard<'a, T> {
    mutex: &'a LightMutex<T>,
}

impl<T> Deref for LightMutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: this guard is the only one (see the `Sync` impl), so no `&mut T` to the
        // value exists elsewhere while it lives.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for LightMutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only borrow through the guard.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for LightMutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.mutex.locked.store(0, Ordering::Release);
        // Keeps the compiler from loading the flag before the store; the CPU may still,
        // which the sleeper's barrier answers for.
        compiler_fence(Ordering::SeqCst);
        let raised = self.mutex.sleepers.load(Ordering::Relaxed);
        if sleepers::is_raised(raised) {
            sleepers::wake_one(&self.mutex.wakes, &self.mutex.sleepers, raised);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The scheduler state (`R`, `S`, ...) of thread `tid` of this process, from
    /// `/proc/self/task/<tid>/stat`; `None` if it cannot be read.
    fn task_state(tid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
        stat.rsplit_once(") ")?.1.chars().next()
    }

    /// Many threads add under the lock, some holding it long enough for others to sleep:
    /// no update lost (a broken exclusion loses some) and no waiter left asleep (the test
    /// would hang past its harness timeout).
    #[test]
    fn threads_exclude_each_other_and_sleepers_wake() {
        let lock = Arc::new(LightMutex::new((0u64, 0u64)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for i in 0..20_000u64 {
                        let mut guard = lock.lock();
                        // A read-modify-write split in two, so a second holder would
                        // lose updates.
                        let seen = guard.0;
                        if i % 1000 == t {
                            // Held long enough for the others to go to sleep.
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        guard.0 = seen + 1;
                        guard.1 += i;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a thread panicked");
        }
        let guard = lock.lock();
        assert_eq!(guard.0, 4 * 20_000);
        assert_eq!(guard.1, 4 * (0..20_000u64).sum::<u64>());
    }

    /// An unlock wakes one of the waiters asleep on the lock, not all of them: each other
    /// one would fail to take the lock and run a barrier before sleeping again. Six threads
    /// wait on a held lock; once all sleep, one unlock lets one through (which keeps the
    /// lock), and the voluntary context switches of the five others must not move. They
    /// sleep without a timeout, so only a wake-up moves them. Waking all failed this with
    /// all five moved.
    #[test]
    fn an_unlock_wakes_one_sleeping_waiter_not_all() {
        use std::sync::mpsc;
        use std::time::Instant;
        const WAITERS: usize = 6;
        const HANG: Duration = Duration::from_secs(30);
        if !shm::barrier_own_threads() {
            eprintln!(
                "SKIPPED an_unlock_wakes_one_sleeping_waiter_not_all: the kernel refuses \
                 membarrier, so waiters nap and wake on their own"
            );
            return;
        }
        // A thread's scheduler state and voluntary context switches.
        let look = |tid: u32| -> (char, u64) {
            let state = task_state(tid).expect("the state of a live thread");
            let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
                .expect("status of a live thread");
            let switches = status
                .lines()
                .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|count| count.trim().parse().ok())
                .expect("voluntary_ctxt_switches");
            (state, switches)
        };
        let all_asleep = |tids: &[u32]| {
            let start = Instant::now();
            while !tids.iter().all(|&tid| look(tid).0 == 'S') {
                assert!(start.elapsed() < HANG, "waiters never all went to sleep");
                std::thread::sleep(Duration::from_millis(1));
            }
        };
        let lock = Arc::new(LightMutex::new(()));
        let guard = lock.lock();
        let (got_tx, got_rx) = mpsc::channel();
        let (tid_tx, tid_rx) = mpsc::channel();
        let mut releases = Vec::new();
        let mut threads = Vec::new();
        for i in 0..WAITERS {
            let (lock, got_tx, tid_tx) = (Arc::clone(&lock), got_tx.clone(), tid_tx.clone());
            let (release_tx, release_rx) = mpsc::channel::<()>();
            releases.push(release_tx);
            threads.push(std::thread::spawn(move || {
                let tid = rustix::thread::gettid().as_raw_nonzero().get() as u32;
                tid_tx.send((i, tid)).expect("send the tid");
                let guard = lock.lock();
                got_tx.send(i).expect("say it got the lock");
                release_rx.recv().expect("told to unlock");
                drop(guard);
            }));
        }
        let mut tids = vec![0; WAITERS];
        for _ in 0..WAITERS {
            let (i, tid) = tid_rx.recv_timeout(HANG).expect("a tid");
            tids[i] = tid;
        }
        all_asleep(&tids);
        let before: Vec<u64> = tids.iter().map(|&tid| look(tid).1).collect();
        drop(guard);
        let first = got_rx.recv_timeout(HANG).expect("one waiter got the lock");
        let others: Vec<usize> = (0..WAITERS).filter(|&i| i != first).collect();
        let other_tids: Vec<u32> = others.iter().map(|&i| tids[i]).collect();
        all_asleep(&other_tids);
        let woken: Vec<usize> = others
            .iter()
            .copied()
            .filter(|&i| look(tids[i]).1 != before[i])
            .collect();
        // Let every waiter through, one unlock at a time, and end the threads.
        releases[first].send(()).expect("release");
        for _ in 1..WAITERS {
            let next = got_rx
                .recv_timeout(HANG)
                .expect("the next waiter got the lock");
            releases[next].send(()).expect("release");
        }
        for thread in threads {
            thread.join().expect("a waiter panicked");
        }
        assert!(
            woken.is_empty(),
            "one unlock woke waiters {woken:?} besides {first}"
        );
    }

    /// A guard is shared across threads only if `T` is `Sync` (as `MutexGuard`): a guard of a
    /// `Cell` shared by two threads would give both the one `&Cell`. The check is at compile
    /// time: the call below is ambiguous, and does not compile, if the guard is `Sync`.
    #[test]
    fn a_guard_of_a_type_not_sync_is_not_sync() {
        trait AmbiguousIfSync<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfSync<()> for T {}
        impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
        <LightMutexGuard<'static, std::cell::Cell<u8>> as AmbiguousIfSync<_>>::check();
        // And one of a `Sync` type still is.
        fn sync<T: Sync>() {}
        sync::<LightMutexGuard<'static, u64>>();
    }

    /// A waiter that goes to sleep just as the holder unlocks is woken. The unlock is a
    /// plain store and then a look at the sleepers' flag, which the CPU may make before the
    /// store is visible; the waiter's barrier between raising the flag and its last look at
    /// the lock (`barrier_own_threads`) makes one of the two see the other. Without it the
    /// waiter can find the lock still held, while the holder found no flag: the waiter then
    /// sleeps with no timeout and no one left to wake it.
    ///
    /// Round by round, a holder takes the lock, lets a waiter start waiting, writes lines the
    /// waiter wrote last (so that its unlock store waits in the store buffer behind them,
    /// for another CPU to give the lines up), and unlocks after a hold that tracks the
    /// moment the waiter goes to sleep: shorter when the unlock found the waiter asleep,
    /// longer when the waiter got the lock by spinning. A waiter still without the lock a
    /// second after the unlock, asleep in the kernel while the lock is free and its flag
    /// still raised, lost its wake-up: the test wakes it (so that it can end) and fails.
    /// With `barrier_own_threads` made a no-op this failed in 16 runs of 16 on a 2-CPU
    /// guest (10 alone, 6 within the whole `cargo test --lib`), each within 1.5 s, 1 s of it
    /// the wait that shows the wake-up lost; with the barrier, 13 of 13 passed.
    #[test]
    fn a_waiter_sleeping_as_the_holder_unlocks_is_woken() {
        use std::sync::atomic::{AtomicBool, AtomicU64};
        use std::time::Instant;
        const BUDGET: Duration = Duration::from_secs(4);
        const LOST_AFTER: Duration = Duration::from_secs(1);
        const HANG: Duration = Duration::from_secs(30);
        let lock = Arc::new(LightMutex::new([[0u64; 8]; 64]));
        // The round the waiter is to wait in, the last round it got the lock in, and its
        // thread id (for its scheduler state).
        let (go, got) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (tid, stop) = (
            Arc::new(AtomicU32::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let waiter = {
            let (lock, go, got) = (Arc::clone(&lock), Arc::clone(&go), Arc::clone(&got));
            let (tid, stop) = (Arc::clone(&tid), Arc::clone(&stop));
            std::thread::spawn(move || {
                tid.store(
                    rustix::thread::gettid().as_raw_nonzero().get() as u32,
                    Ordering::Release,
                );
                let (mut seen, mut spins) = (0, 0u32);
                while !stop.load(Ordering::Acquire) {
                    let round = go.load(Ordering::Acquire);
                    if round == seen {
                        spins += 1;
                        if spins < 10_000 {
                            std::hint::spin_loop();
                        } else {
                            // The holder may be waiting for this CPU.
                            std::thread::yield_now();
                        }
                        continue;
                    }
                    (seen, spins) = (round, 0);
                    let mut guard = lock.lock();
                    for line in guard.iter_mut() {
                        line[0] = line[0].wrapping_add(round);
                    }
                    drop(guard);
                    got.store(round, Ordering::Release);
                }
            })
        };
        let asleep = || task_state(tid.load(Ordering::Acquire)) == Some('S');
        let start = Instant::now();
        let (mut rounds, mut slept, mut hold) = (0u64, 0u64, 0u64);
        let mut lost = None;
        while start.elapsed() < BUDGET && lost.is_none() {
            rounds += 1;
            let mut guard = lock.lock();
            go.store(rounds, Ordering::Release);
            let held = Instant::now();
            // The tracked hold, give or take half a microsecond.
            let hold_now = Duration::from_nanos((hold + rounds * 7919 % 1000).saturating_sub(500));
            while held.elapsed() < hold_now {
                std::hint::spin_loop();
            }
            for line in guard.iter_mut() {
                line[0] = line[0].wrapping_add(1);
            }
            let wakes = lock.wakes.load(Ordering::Relaxed);
            drop(guard);
            let unlocked = Instant::now();
            while got.load(Ordering::Acquire) != rounds {
                let waited = unlocked.elapsed();
                if waited > LOST_AFTER
                    && lock.locked.load(Ordering::SeqCst) == 0
                    && sleepers::is_raised(lock.sleepers.load(Ordering::SeqCst))
                    && asleep()
                {
                    lost = Some(waited);
                    lock.wakes.fetch_add(1, Ordering::SeqCst);
                    shm::futex_wake_all(&lock.wakes);
                    break;
                }
                if waited > HANG {
                    stop.store(true, Ordering::Release);
                    panic!("round {rounds}: the waiter is stuck, its flag not raised");
                }
                if waited < Duration::from_millis(1) {
                    std::hint::spin_loop();
                } else {
                    // The waiter may be waiting for this CPU.
                    std::thread::yield_now();
                }
            }
            if lock.wakes.load(Ordering::Relaxed) != wakes {
                slept += 1;
                hold = hold.saturating_sub(100);
            } else {
                hold += 100;
            }
        }
        stop.store(true, Ordering::Release);
        go.store(u64::MAX, Ordering::Release);
        waiter.join().expect("the waiter panicked");
        if let Some(waited) = lost {
            panic!(
                "round {rounds} (of which {slept} found the waiter asleep), {:?} in: the \
                 waiter was not woken for {waited:?}, asleep with the lock free and its flag \
                 raised",
                start.elapsed()
            );
        }
    }

    #[test]
    fn a_panic_while_held_unlocks() {
        let lock = Arc::new(LightMutex::new(1u32));
        let held = Arc::clone(&lock);
        let panicked = std::thread::spawn(move || {
            let _guard = held.lock();
            panic!("while holding the lock");
        })
        .join();
        assert!(panicked.is_err());
        assert_eq!(*lock.lock(), 1);
    }
}
