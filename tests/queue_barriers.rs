//! The store-load orders an unbounded queue's plain publication leaves to the other side.
//! A put publishes its frame with a plain store of the tail, then looks at shared words:
//! the readiness fd's state word, the getters' sleepers flag, the shutdown flag. The CPU
//! may make those looks before the tail store is visible to others; what keeps a wake-up
//! or an item from being lost is the other side's `membarrier` (`Shared::barrier_or_fence`)
//! between its own store and its look at the logs. Each test races one such pair, round
//! after round, with an oracle that tells a lost order from a slow process:
//!
//! - a consumer re-arming the readiness fd (`try_get` finding the queue empty, a timed
//!   get's deadline, `Waitable::is_ready`) while a put publishes: once both are done, the
//!   item is there and the fd must be readable;
//! - a getter going to sleep while a put publishes: it must be woken (a lost wake-up
//!   leaves it asleep, its flag raised, with the item in the queue, until its 100 ms nap
//!   ends);
//! - an immediate shutdown while a put publishes: the put either fails or its item is
//!   discarded, never left in the queue.
//!
//! Only in optimized builds (`cargo test --release --test queue_barriers`): unoptimized,
//! the code between a consumer's store and its look takes longer than the put's store
//! waits in the store buffer, so no run could fail, barrier or not. A debug build lists
//! them as ignored (`-- --ignored` runs them anyway). Measured on a 2-CPU KVM guest (AMD
//! EPYC) shared with other builds and tests, with `shm::barrier_everywhere` made to skip
//! the barrier: optimized, each test failed in 10 runs of 10, readiness within 3.4 s of
//! rounds (most within 0.1 s), sleep within 0.5 s, shutdown within 3.7 s; with one call
//! site's barrier skipped at a time, its test failed 10 of 10 (and the other two passed).
//! Unoptimized, none failed: readiness in about 2.8 million rounds, sleep in 520,000,
//! shutdown in 15,000. With the barriers, 10 runs of 10 passed (15 s each). A run fails
//! only while the two processes run at once: on a box whose other CPU is taken by other
//! work, rounds go by without a race.
//!
//! `try_take`'s barrier (a consumer that finds the queue shut down and empty) needs a
//! third process on a third CPU to matter (the one that shut the queue down runs its own
//! barrier) and is not raced here.

mod util;

use std::error::Error as StdError;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use multiproc::{ErrorKind, Pipe, Queue, Waitable, wait};
use serde_bytes::ByteBuf;
use util::{TestResult, child, finish};

type Res<T> = Result<T, Box<dyn StdError>>;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);
/// Rounds run for this long, unless one fails first.
const BUDGET: Duration = Duration::from_secs(5);
/// Items this big: the frame's stores, to lines the consumer read last time round the
/// ring, keep the tail store waiting behind them for longer (with 8-byte items the races
/// were won 100 to 1000 times less often).
const ITEM: usize = 2048;

// Layout (src/queue/layout.rs).
const H_ITEMS_SEQ: u64 = 64;
const H_GET_SLEEPERS: u64 = 68;
/// The sleepers flag's "raised" bit (the bits above it are a generation).
const SLEEPERS_RAISED: u32 = 1;

/// A xorshift generator: timing jitter, the same in every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Spins (never sleeps) for `ns` nanoseconds.
fn spin_for(ns: u64) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_nanos(ns) {
        std::hint::spin_loop();
    }
}

/// An item numbered `n`.
fn item(n: u32) -> ByteBuf {
    let mut bytes = vec![0u8; ITEM];
    bytes[..4].copy_from_slice(&n.to_le_bytes());
    ByteBuf::from(bytes)
}

fn number(item: &[u8]) -> u32 {
    u32::from_le_bytes(item[..4].try_into().expect("4 bytes"))
}

/// Spins until `q` holds an item, then takes it: a hand-off between two spinning processes
/// that makes no system call (and so no barrier) on the way, unless it is slow to come:
/// then it yields its CPU, which the other process may be waiting for.
fn take_spinning(q: &Queue<u32>) -> Res<u32> {
    let deadline = Instant::now() + HANG;
    let mut spins = 0u32;
    while q.empty() {
        if Instant::now() > deadline {
            return Err("nothing came".into());
        }
        spins += 1;
        if spins < 10_000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    Ok(q.try_get()?)
}

/// The item a non-blocking get took, `None` for `Empty`.
fn taken(got: multiproc::Result<ByteBuf>) -> Res<Option<ByteBuf>> {
    match got {
        Ok(item) => Ok(Some(item)),
        Err(e) if e.kind() == ErrorKind::Empty => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Whether `q`'s readiness fd is readable now (the fd alone, as `poll` sees it).
fn fd_readable(q: &Queue<ByteBuf>) -> Res<bool> {
    Ok(!wait(&mut [q.wait_fd()?], Some(Duration::ZERO))?.is_empty())
}

/// The little-endian `u32` at `offset` of `file`.
fn read32(file: &File, offset: u64) -> Res<u32> {
    let mut b = [0u8; 4];
    file.read_exact_at(&mut b, offset)?;
    Ok(u32::from_le_bytes(b))
}

/// The scheduler state of process `pid` (`R`, `S`, ...), from `/proc/<pid>/stat`.
fn state_of(pid: u32) -> Res<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').ok_or("unreadable stat")?;
    Ok(rest.trim_start().chars().next().ok_or("no state")?)
}

// ---------------------------------------------------------------------------------------------
// Readiness

/// A consumer re-arming the readiness fd while a producer process's put publishes leaves
/// the fd readable if the item is there. The put loads the fd's state word after its
/// plain tail store; the consumer clears the word, runs its barrier, and looks at the
/// logs. Without the barrier both can miss the other: the put sees the word still set
/// (by the previous item, so it does not write the fd) and the consumer sees no item (so
/// it does not either), and a consumer waiting on the fd waits for an item that is there.
///
/// Each round starts with the word set and the fd readable (the last item was taken
/// without a look that found the queue empty). The consumer tells the producer to put
/// one item and, after a delay that tracks the moment the put lands (longer when the
/// consumer found the item already, shorter when it did not), re-arms: by `try_get`,
/// `get_timeout(0)` or `is_ready`, in turn. Once the producer says its put returned, an
/// item still in the queue with its fd not readable is the failure.
fn rearming_readiness_as_a_put_lands_leaves_the_fd_readable() -> TestResult {
    let mut q = Queue::<ByteBuf>::new()?;
    let (go, done) = (Queue::<u32>::new()?, Queue::<u32>::new()?);
    let (producer, their_go, their_done) = (q.clone(), go.clone(), done.clone());
    let mut p = child(move || {
        loop {
            let n = take_spinning(&their_go).unwrap();
            if n == u32::MAX {
                break;
            }
            producer.put(&item(n)).unwrap();
            their_done.put(&n).unwrap();
        }
    })?;
    let stop = |p: &mut multiproc::Process| -> TestResult {
        go.put(&u32::MAX)?;
        finish(p)
    };
    go.put(&0)?;
    take_spinning(&done)?;
    assert_eq!(number(&q.try_get()?), 0);
    assert!(fd_readable(&q)?);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let (mut delay, mut rounds, mut rearmed_first) = (0u64, 0u32, 0u32);
    let start = Instant::now();
    while start.elapsed() < BUDGET {
        rounds += 1;
        go.put(&rounds)?;
        spin_for(delay.saturating_sub(rng.below(3000)));
        let found = match rounds % 3 {
            0 => taken(q.try_get())?,
            1 => taken(q.get_timeout(Duration::ZERO))?,
            _ if q.is_ready() => Some(q.try_get()?),
            _ => None,
        };
        let found = match found {
            Some(got) => {
                assert_eq!(number(&got), rounds);
                delay = delay.saturating_sub(50);
                true
            }
            None => {
                delay += 50;
                false
            }
        };
        assert_eq!(take_spinning(&done)?, rounds);
        if found {
            continue;
        }
        rearmed_first += 1;
        if !fd_readable(&q)? {
            let left = q.qsize();
            stop(&mut p)?;
            fail!(
                "round {rounds} ({rearmed_first} re-armed before the item was seen), {:?} \
                 in: the put returned, {left} item(s) in the queue, and the readiness fd \
                 is not readable (a lost signal)",
                start.elapsed()
            );
        }
        assert_eq!(number(&q.try_get()?), rounds);
    }
    stop(&mut p)?;
    eprintln!("{rounds} rounds, {rearmed_first} re-armed before the item was seen");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Sleeping getters

/// A getter in another process that goes to sleep while a put publishes is woken. The
/// put loads the getters' sleepers flag after its plain tail store; the getter raises the
/// flag, runs its barrier, and looks at the logs once more before sleeping. Without the
/// barrier both can miss the other: the getter sleeps until its nap ends (100 ms) with the
/// item in the queue.
///
/// Each round this process waits for the getter to report the last item, waits a delay
/// that tracks the moment the getter goes to sleep (shorter when the put found the flag
/// raised, which it shows by bumping the sequence word, longer when it did not), and puts.
/// The failure: 20 ms after a put that found no flag, the item still in the queue, the
/// flag raised (no put lowered it) and the getter asleep in the kernel. (A getter that saw
/// the item is running, not asleep, and one that was woken lowered nothing but takes the
/// item at once.)
fn a_getter_going_to_sleep_as_a_put_lands_is_woken() -> TestResult {
    let q = Queue::<ByteBuf>::new()?;
    let file = util::queue_file();
    let (mut ours, mut theirs) = Pipe::new()?;
    let getter = q.clone();
    let mut p = child(move || {
        loop {
            let n = number(&getter.get().unwrap());
            theirs.send(&n).unwrap();
            if n == u32::MAX {
                break;
            }
        }
    })?;
    let pid = p.pid().ok_or("not started")?;
    let mut rng = Rng(0x0bad_cafe_dead_beef);
    let (mut delay, mut rounds, mut flagged) = (0u64, 0u32, 0u32);
    let start = Instant::now();
    while start.elapsed() < BUDGET {
        rounds += 1;
        spin_for((delay + rng.below(2000)).saturating_sub(1000));
        let seq = read32(&file, H_ITEMS_SEQ)?;
        q.put(&item(rounds))?;
        let woke = read32(&file, H_ITEMS_SEQ)? != seq;
        let put = Instant::now();
        if woke {
            flagged += 1;
            delay = delay.saturating_sub(50);
        } else {
            delay += 50;
        }
        // Spinning, not blocking: this process must be back at once to time the next put.
        while !ours.poll(Some(Duration::ZERO))? {
            let waited = put.elapsed();
            if !woke
                && waited > Duration::from_millis(20)
                && q.qsize() == 1
                && read32(&file, H_GET_SLEEPERS)? & SLEEPERS_RAISED != 0
                && state_of(pid)? == 'S'
            {
                fail!(
                    "round {rounds} ({flagged} found the getter's flag), {:?} in: the getter \
                     is asleep {waited:?} after the put, its flag raised, with the item in \
                     the queue (a lost wake-up)",
                    start.elapsed()
                );
            }
            if waited > HANG {
                fail!("round {rounds}: the getter did not take the item in {HANG:?}");
            }
        }
        assert_eq!(ours.recv::<u32>()?, rounds);
    }
    q.put(&item(u32::MAX))?;
    assert_eq!(ours.recv_timeout::<u32>(HANG)?, u32::MAX);
    finish(&mut p)?;
    eprintln!("{rounds} rounds, {flagged} found the getter's flag");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shutdown

/// An immediate shutdown while a put in another process publishes leaves no item in the
/// queue. The put loads the shutdown flag after its plain tail store (and takes its item
/// back if the flag is set); `shutdown` sets the flag, runs its barrier, and discards what
/// the logs hold. Without the barrier both can miss the other: the put returns `Ok` and its
/// item stays after the discard, counted in `qsize` and never taken (gets fail at once).
///
/// Each round a fresh queue and producer: the producer puts until the queue is shut down,
/// pausing only for a random gap of up to 1 µs (and while 64 items wait); this process
/// takes what comes, and once it finds the queue empty after a random while, shuts it down
/// at once, so that the shutdown lands while a put is under way. Once the producer's last
/// put failed, an item in the queue is the failure.
fn immediate_shutdown_as_a_put_lands_leaves_no_item() -> TestResult {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let (mut rounds, mut put_ok) = (0u32, 0u64);
    let start = Instant::now();
    while start.elapsed() < BUDGET {
        rounds += 1;
        let q = Queue::<ByteBuf>::new()?;
        let (mut ours, mut theirs) = Pipe::new()?;
        let producer = q.clone();
        let seed = rng.below(u64::MAX) | 1;
        let mut p = child(move || {
            let mut rng = Rng(seed);
            let item = item(0);
            let mut ok = 0u32;
            let error = loop {
                match producer.put(&item) {
                    Ok(()) => ok += 1,
                    Err(e) => break e.kind(),
                }
                if ok == 1 {
                    theirs.send(&0u32).unwrap();
                }
                spin_for(rng.below(1000));
                // Never far ahead of a slower consumer (an unoptimized one is).
                while producer.qsize() >= 64 {
                    std::hint::spin_loop();
                }
            };
            assert_eq!(error, ErrorKind::ShutDown);
            theirs.send(&ok).unwrap();
        })?;
        assert_eq!(ours.recv_timeout::<u32>(HANG)?, 0);
        let until = Instant::now() + Duration::from_nanos(rng.below(20_000));
        loop {
            if !q.empty() {
                q.try_get()?;
            } else if Instant::now() > until {
                break;
            }
        }
        q.shutdown(true);
        let ok: u32 = ours.recv_timeout(HANG)?;
        finish(&mut p)?;
        put_ok += u64::from(ok);
        let left = q.qsize();
        if left != 0 {
            fail!(
                "round {rounds}, {:?} in: {left} item(s) left in the queue after an immediate \
                 shutdown, the producer's last put having failed ({ok} put Ok)",
                start.elapsed()
            );
        }
    }
    eprintln!("{rounds} rounds, {put_ok} items put");
    Ok(())
}

fn main() {
    multiproc::init();
    // Unoptimized, no run of these can fail (see the module docs): listed as ignored.
    let test = |name, run| {
        let test = util::Test::new(name, run);
        if cfg!(debug_assertions) {
            test.ignored()
        } else {
            test
        }
    };
    util::run(&[
        test(
            "rearming_readiness_as_a_put_lands_leaves_the_fd_readable",
            rearming_readiness_as_a_put_lands_leaves_the_fd_readable,
        ),
        test(
            "a_getter_going_to_sleep_as_a_put_lands_is_woken",
            a_getter_going_to_sleep_as_a_put_lands_is_woken,
        ),
        test(
            "immediate_shutdown_as_a_put_lands_leaves_no_item",
            immediate_shutdown_as_a_put_lands_leaves_no_item,
        ),
    ]);
}
