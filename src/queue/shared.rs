//! The queue engine on bytes: one shared file of per-producer rings (see `layout`), and the
//! put, get, size and wake-up protocols over it. `Queue<T>` wraps it with a codec.
//!
//! Crash safety comes from the shape, not from locks:
//!
//! - Each producer *process* owns one log (a ring) and is its only writer. It writes a frame
//!   past the tail, then publishes it with one atomic store of the tail. Killed before that
//!   store, it leaves nothing visible; killed after, the item is complete.
//! - A consumer copies the frame at a log's head, then claims it with a compare-and-swap of
//!   the head. A failed swap means someone else took it (or the copy went stale): the copy
//!   is dropped. Killed before the swap, it took nothing; after, only its own item is lost.
//!   No other process ever waits for it.
//! - Sizes are counts read off heads and tails, not counters a dead process could leave
//!   wrong. A bounded queue counts unpublished reservations per log; a dead producer's
//!   reservation is released when a putter finds the queue full and its owner gone.
//! - Sleepers wait on futex words that every put or get bumps; a killed sleeper leaves at
//!   most one needless wake-up.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, compiler_fence, fence};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::layout::{self as l, ChunkState, Mark};
use crate::codec::cbor_string::{self, StringKind};
use crate::error::{Error, ErrorKind, Result};
use crate::sys;
use crate::sys::light_mutex::LightMutex;
use crate::sys::shm::{self, SharedMap};
use crate::sys::sleepers::{is_raised, raise, wake_all, wake_one};

/// Set in the owner word of a log being freed, which then holds the freer's pid and (above
/// it, low 31 bits of) start time, so that a freer killed mid-way is noticed and its work
/// redone. Owner words of claims never have it (claim numbers are 31 bits).
const FREEING: u64 = 1 << 63;

fn is_freeing(owner: u64) -> bool {
    owner & FREEING != 0
}

/// The owner word of claim number `claim` by process `pid`.
fn claim_word(pid: u64, claim: u32) -> u64 {
    pid | u64::from(claim & 0x7fff_ffff) << 32
}

/// The longest a sleeper sleeps before it looks again (see `sleep_on`).
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// The longest sleep of a getter whose kernel refused the barrier that orders the puts'
/// plain publications (a wake-up may then be missed): see [`Shared::barrier_or_fence`].
const NAP_UNORDERED: Duration = Duration::from_millis(1);

/// Spins of a getter or putter before it sleeps (a getter's most; see `get_spins`).
const SPINS: u32 = 200;
/// A getter's fewest spins before it sleeps.
const MIN_GET_SPINS: u32 = 8;
/// A getter's wait longer than this, from going to sleep to taking an item, says that
/// spinning longer would not have caught the item (`get_spins`).
const LONG_WAIT: Duration = Duration::from_micros(100);

/// Frames at least this big are announced while they are written (`l::L_WRITING`): their
/// copy outlasts a getter's spins, so a getter waiting for one would otherwise sleep, and
/// be woken, once per item (and its way to sleep has a barrier in every other process).
const BIG_FRAME: u64 = l::CHUNK;

/// How long after a big frame's write began a getter may go on spinning for it. A producer
/// killed while writing leaves its announcement behind; this bounds what that costs.
const WRITE_PATIENCE_NS: u64 = 1_000_000;

/// Failed looks at one log's head frame, the head unchanged, after which a consumer takes
/// the frame for corrupt (no producer writes such a header) and discards the log's items
/// ([`Shared::discard_corrupt`]).
const BAD_HEADER_LOOKS: u32 = 1 << 16;

/// A consumer that finds the queue empty gives back the memory of producers holding more
/// chunks than this (see [`Shared::trim_idle`]).
const TRIM_ABOVE: u32 = 2 * l::KEEP_CHUNKS as u32;

/// The most chunks a consumer gives back in one go (16 MiB, about 6 ms here: giving back
/// shared memory costs the kernel 1-2 µs a page), and in one `fallocate` (4 MiB).
const TRIM_BUDGET: u32 = 256;
const TRIM_RUN: u32 = 64;

/// How many times a producer far ahead of its consumers yields the CPU to them, at most,
/// before it gives memory to a fresh chunk (see [`Shared::yield_to_consumers`]).
const YIELDS: u32 = 20;
/// A yield that came back sooner ran nothing else.
const YIELD_ALONE_NS: u64 = 5_000;
/// No more yields once they have taken this long, for one chunk: a yield lasts as long as
/// the scheduler runs the others (4-6 ms on average in a 4 -> 4 flow on 2 CPUs, where one
/// yield was nearly always enough).
const YIELDING_NS: u64 = 2_000_000;

/// Bytes of frames a consumer takes from one log in a row, at most, before it turns to the
/// next (see [`Shared::scan`]): about 900 items of 64 bytes, or one of 64 KiB and up. So
/// between two of its runs on one log, a consumer takes at most this much from each other
/// log.
const STAY_BYTES: u64 = 64 * 1024;

/// One process's view of a queue: the mapping, its fds, and its producer state.
#[derive(Debug)]
pub(crate) struct Shared {
    map: SharedMap,
    file: OwnedFd,
    events: OwnedFd,
    maxsize: u64,
    /// A `JoinableQueue`'s file (read once, at open: see `l::H_JOINABLE`).
    joinable: bool,
    producer: LightMutex<Producer>,
    /// Where this process's next scan of the logs starts: the log it took from last, until
    /// it has taken [`STAY_BYTES`] there in a row, found it empty, or met another consumer
    /// there (see [`scan`](Self::scan)).
    next_log: AtomicUsize,
    /// Bytes of frames taken in a row from `next_log`.
    stayed: AtomicU64,
    /// How many times this process's getters look at an empty queue before they sleep:
    /// halved after a get that slept longer than [`LONG_WAIT`] (items come further apart
    /// than any spin covers, and every woken getter would spin for nothing), doubled after
    /// one whose spinning found its item or whose sleep was short; between
    /// [`MIN_GET_SPINS`] and [`SPINS`]. A getter spinning for an announced big write
    /// ([`spin_for_write`](Self::spin_for_write)) goes on whatever this says.
    get_spins: AtomicU32,
    /// Tells this handle's entries in the threads' [`SEEN`] caches apart from others'.
    id: u64,
}

/// An item [`Shared::take_from`] claimed.
struct Taken<R> {
    /// What the caller's `take` made of it.
    value: R,
    /// Bytes its frame took in the log.
    size: u64,
    /// A claim lost a race on the way: another consumer is taking from this log.
    raced: bool,
}

/// This process's log, if it has claimed one, and the log's memory chunks.
#[derive(Debug, Default)]
struct Producer {
    log: Option<usize>,
    /// The owner word of this producer's claim of `log`.
    owner: u64,
    /// The fork generation the log was claimed in: a forked child claims its own.
    generation: u64,
    /// Positions have memory up to here (a chunk boundary).
    mapped: u64,
    /// The chunks holding positions not yet taken, oldest first: (first position, chunk).
    in_use: VecDeque<(u64, u32)>,
    /// Free chunks still in memory, oldest first. The oldest is reused first: the newest
    /// was just read by a consumer, and writing it again would pull every line of it back
    /// out of that consumer's cache (1 MiB items moved 1 -> 1 at 0.51 of the floor reusing
    /// the newest, at 0.62 reusing the oldest: docs/benchmarks.md, "Queue: big items").
    spare: VecDeque<u32>,
    /// Free chunks whose memory was given back.
    given_back: Vec<u32>,
    /// Chunks a trimming consumer took while they were free: ours again once it is done.
    trimmed: Vec<u32>,
    /// Chunks `fresh..CHUNKS` were never used by this producer.
    fresh: u32,
    /// The log's head word as this producer last read it.
    head_seen: u64,
    /// `head_seen` when this producer last gave memory to a chunk.
    head_when_populating: u64,
    /// The log's tail word as this producer last published it (or found it, claiming the
    /// log): only the owner writes the tail, so the shared word is never read back, and a
    /// tail written there by something else is overwritten by the next put.
    tail: u64,
    /// Puts made (wrapping): every 16th looks at the head while much memory is held.
    puts: u32,
    /// This process is registered for other processes' memory barriers (in the fork
    /// generation of the claim), so an unbounded put may publish with a plain store: see
    /// [`Shared::put_unbounded`].
    publishes_plainly: bool,
    closed: bool,
}

impl Shared {
    /// A new queue file. `maxsize` 0 is unbounded; a `joinable` queue counts every item put
    /// unfinished.
    pub(crate) fn create(maxsize: u64, joinable: bool) -> Result<Shared> {
        let (file, map) = SharedMap::create("multiproc-queue", l::FILE_LEN)?;
        let events = shm::eventfd()?;
        map.u64_at(l::H_MAXSIZE).store(maxsize, Ordering::Relaxed);
        map.u32_at(l::H_JOINABLE)
            .store(u32::from(joinable), Ordering::Relaxed);
        map.u64_at(l::H_MAGIC).store(l::MAGIC, Ordering::Release);
        Ok(Shared::from_parts(file, events, map, maxsize))
    }

    /// Opens a queue file received from another process.
    pub(crate) fn open(file: OwnedFd, events: OwnedFd) -> Result<Shared> {
        shm::adopt_eventfd(events.as_fd())?;
        let map = SharedMap::open(file.as_fd(), l::FILE_LEN)?;
        if map.u64_at(l::H_MAGIC).load(Ordering::Acquire) != l::MAGIC {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "not a multiproc queue (or another version of one)",
            ));
        }
        let maxsize = map.u64_at(l::H_MAXSIZE).load(Ordering::Relaxed);
        Ok(Shared::from_parts(file, events, map, maxsize))
    }

    fn from_parts(file: OwnedFd, events: OwnedFd, map: SharedMap, maxsize: u64) -> Shared {
        let joinable = map.u32_at(l::H_JOINABLE).load(Ordering::Relaxed) != 0;
        Shared {
            map,
            file,
            events,
            maxsize,
            joinable,
            producer: LightMutex::new(Producer::default()),
            next_log: AtomicUsize::new(std::process::id() as usize),
            stayed: AtomicU64::new(0),
            get_spins: AtomicU32::new(SPINS),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    pub(crate) fn file(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    pub(crate) fn events(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    pub(crate) fn maxsize(&self) -> u64 {
        self.maxsize
    }

    /// Whether this is a `JoinableQueue`'s file.
    pub(crate) fn is_joinable(&self) -> bool {
        self.joinable
    }

    fn h32(&self, offset: usize) -> &AtomicU32 {
        self.map.u32_at(offset)
    }

    fn head(&self, log: usize) -> &AtomicU64 {
        self.map.u64_at(l::entry(log) + l::L_HEAD)
    }

    fn tail(&self, log: usize) -> &AtomicU64 {
        self.map.u64_at(l::entry(log) + l::L_TAIL)
    }

    fn writing(&self, log: usize) -> &AtomicU64 {
        self.map.u64_at(l::entry(log) + l::L_WRITING)
    }

    fn used_logs(&self) -> usize {
        (self.h32(l::H_USED_LOGS).load(Ordering::SeqCst) as usize).min(l::MAX_LOGS)
    }

    /// `SeqCst`, as the loads of the logs a consumer makes after it: see
    /// [`withdraw_if_shut_down`](Self::withdraw_if_shut_down). (A plain load on x86 and an
    /// acquiring one on Arm, the same as `Acquire`.)
    ///
    /// Only the bits `shutdown` sets, and "immediately" only with "shut down": a word written
    /// by something else with other bits would otherwise keep every sleeper awake (they
    /// stop waiting on any flag) while gets go on finding the queue empty.
    fn flags(&self) -> u32 {
        let flags =
            self.h32(l::H_FLAGS).load(Ordering::SeqCst) & (l::FLAG_SHUTDOWN | l::FLAG_IMMEDIATE);
        if flags & l::FLAG_IMMEDIATE != 0 {
            flags | l::FLAG_SHUTDOWN
        } else {
            flags
        }
    }

    // ---------------------------------------------------------------------------------
    // Sizes

    /// Items in the queue (published and not taken). Exact while no process dies mid-put.
    pub(crate) fn len(&self) -> u64 {
        (0..self.used_logs())
            .map(|log| {
                let head = Mark::unpack(self.head(log).load(Ordering::Acquire));
                let tail = Mark::unpack(self.tail(log).load(Ordering::Acquire));
                u64::from(head.items_to(tail))
            })
            .sum()
    }

    /// Items plus unpublished reservations: what a bounded queue's capacity counts.
    fn occupied(&self) -> u64 {
        (0..self.used_logs())
            .map(|log| {
                let pending = self.pending(log).load(Ordering::SeqCst) & RESERVED;
                let head = Mark::unpack(self.head(log).load(Ordering::SeqCst));
                let tail = Mark::unpack(self.tail(log).load(Ordering::SeqCst));
                u64::from(head.items_to(tail)) + pending
            })
            .sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        (0..self.used_logs()).all(|log| {
            let head = Mark::unpack(self.head(log).load(Ordering::Acquire));
            let tail = Mark::unpack(self.tail(log).load(Ordering::Acquire));
            head.count == tail.count
        })
    }

    pub(crate) fn is_full(&self) -> bool {
        self.maxsize > 0 && self.occupied() >= self.maxsize
    }

    // ---------------------------------------------------------------------------------
    // Put

    /// Puts one item, `head` then `body` (either may be empty), waiting until `deadline` for
    /// room in a bounded queue (`None`: as long as it takes; a past deadline: not at all).
    /// A joinable queue's item is counted unfinished first (and the count taken back if the
    /// put fails), whichever handle or method put it: `put_bytes`, a `&Queue` a
    /// `JoinableQueue` derefs to, or a plain `Queue` handle received in a spawned child.
    pub(crate) fn put(&self, head: &[u8], body: &[u8], deadline: Option<Instant>) -> Result<()> {
        if !self.joinable {
            return self.put_item(head, body, deadline);
        }
        self.add_unfinished();
        self.put_item(head, body, deadline)
            .inspect_err(|_| self.undo_unfinished())
    }

    #[inline]
    fn put_item(&self, head: &[u8], body: &[u8], deadline: Option<Instant>) -> Result<()> {
        let encoded = (head.len() + body.len()) as u64;
        if encoded > l::MAX_ITEM {
            return Err(too_big(encoded));
        }
        let item = Item::new(head, body);
        self.check_open_for_put()?;
        if self.maxsize == 0 {
            self.put_unbounded(item)
        } else {
            self.put_bounded(item, deadline)
        }
    }

    /// Unbounded: nothing to reserve, so one lock for the whole put.
    ///
    /// No locked instruction after the frame's stores: the producer lock unlocks with a
    /// plain store ([`LightMutex`]), and a process registered for barriers
    /// ([`shm::register_for_barriers`]) publishes with a release store of the tail. A full
    /// barrier there waited for every line of the frame to be taken from the consumer's
    /// cache, each put. The loads after the publication that need it ordered before them
    /// (the flag `withdraw_if_shut_down` reads, the sleepers' and readiness words
    /// `after_put` reads) have that order made by the other side instead, when it needs it:
    /// a getter going to sleep, a consumer re-arming the readiness fd or finding the queue
    /// shut down and empty, and `shutdown` run [`shm::barrier_everywhere`] (docs/design.md).
    #[inline]
    fn put_unbounded(&self, item: Item<'_>) -> Result<()> {
        let mut producer = self.producer.lock();
        if producer.closed {
            return Err(closed());
        }
        let log = self.own_log(&mut producer)?;
        // Again, just before writing: a put that waited (for the lock, or claiming a log)
        // while the queue was shut down and drained would leave an item no one takes.
        let fenced = self.open_for_put_fenced()? || !producer.publishes_plainly;
        let published = self.write_frame(&mut producer, log, item, fenced)?;
        self.withdraw_if_shut_down(log, published)?;
        drop(producer);
        self.after_put();
        Ok(())
    }

    fn put_bounded(&self, item: Item<'_>, deadline: Option<Instant>) -> Result<()> {
        let (log, owner) = {
            let mut producer = self.producer.lock();
            if producer.closed {
                return Err(closed());
            }
            (self.own_log(&mut producer)?, producer.owner)
        };
        // Room is reserved without holding the producer lock, so another thread's
        // `try_put` is not stuck behind a `put` waiting for room.
        let (pending, tag) = (self.pending(log), reservation_tag(owner));
        self.reserve(log, tag, pending, deadline)?;
        let written = {
            let mut producer = self.producer.lock();
            if producer.closed || producer.log != Some(log) {
                Err(closed())
            } else {
                // Again, just before writing (see the unbounded path).
                // Fenced: the reservation's count and the sleepers of a bounded queue
                // are ordered by full barriers on both sides (see `reserve`).
                self.check_open_for_put()
                    .and_then(|()| self.write_frame(&mut producer, log, item, true))
                    .and_then(|published| self.withdraw_if_shut_down(log, published))
            }
        };
        give_back_reservation(pending, tag);
        written?;
        self.after_put();
        Ok(())
    }

    /// Whether puts must publish with a full barrier: a consumer found the kernel refusing
    /// it the barrier that plain publication relies on (see [`Shared::barrier_or_fence`]).
    #[inline]
    pub(super) fn puts_fenced(&self) -> bool {
        self.h32(l::H_FLAGS).load(Ordering::Relaxed) & l::FLAG_FENCED != 0
    }

    /// The barrier a consumer runs where it needs the puts' plain publications ordered
    /// before their loads of shared words ([`shm::barrier_everywhere`]), before a decision
    /// that cannot be taken back: giving up on a shut-down queue, an immediate shutdown's
    /// discard. Always run where the kernel grants it, `FLAG_FENCED` or not: a put that read
    /// the flag clear just before it was set still publishes plainly, once.
    ///
    /// If the kernel refuses it (a seccomp filter in this process, while producers
    /// registered), puts are told to fence from now on (`FLAG_FENCED`), and `false` says
    /// nothing was ordered: the caller naps [`NAP_UNORDERED`] and looks again. That covers a
    /// put in flight in practice (its store leaves the store buffer within nanoseconds, and a
    /// put that read the flag clear and stalled before publishing reads the shutdown flag
    /// afresh after its store), not by a guarantee of the memory model.
    fn barrier_or_fence(&self) -> bool {
        if shm::barrier_everywhere() {
            return true;
        }
        let flags = self.h32(l::H_FLAGS);
        if flags.load(Ordering::Relaxed) & l::FLAG_FENCED == 0 {
            flags.fetch_or(l::FLAG_FENCED, Ordering::SeqCst);
        }
        false
    }

    /// [`barrier_or_fence`](Self::barrier_or_fence) for a wait that a missed wake-up only
    /// lengthens (a getter's sleep, the readiness fd): where the kernel refuses the barrier
    /// and `FLAG_FENCED` was set already, the flag is trusted (`true`), so that such a process
    /// does not poll every [`NAP_UNORDERED`] or keep its readiness fd signalled for good.
    /// Known hole, in that setup only: a put that read the flag clear just before it was set
    /// publishes plainly once more, and this wait may miss it (a getter sleeps up to
    /// [`MAX_SLEEP`]; the fd stays quiet until the next put).
    fn barrier_or_trust_fenced(&self) -> bool {
        let was_fenced = self.puts_fenced();
        self.barrier_or_fence() || was_fenced
    }

    /// [`check_open_for_put`](Self::check_open_for_put) and
    /// [`puts_fenced`](Self::puts_fenced) from one load of the flags word, for the
    /// unbounded put: whether the queue takes puts, and whether they must fence.
    #[inline]
    fn open_for_put_fenced(&self) -> Result<bool> {
        let word = self.h32(l::H_FLAGS).load(Ordering::SeqCst);
        if word & (l::FLAG_SHUTDOWN | l::FLAG_IMMEDIATE) != 0 {
            return Err(Error::new(ErrorKind::ShutDown));
        }
        Ok(word & l::FLAG_FENCED != 0)
    }

    #[inline]
    fn check_open_for_put(&self) -> Result<()> {
        if self.flags() & l::FLAG_SHUTDOWN != 0 {
            return Err(Error::new(ErrorKind::ShutDown));
        }
        Ok(())
    }

    /// Called with the producer lock held, right after `write_frame` published the frame
    /// from tail word `published.0` to `published.1`. A shutdown that came while the frame
    /// was written may have let a consumer find the queue empty and give up (`ShutDown`)
    /// before the item appeared, stranding it; after an immediate shutdown's discard, it
    /// would stay counted unfinished for `join`. So if the queue is shut down now, the item
    /// is taken back while it is still at its log's head, and the put fails with `ShutDown`
    /// as if it came after the shutdown (the two overlapped). If a consumer (or the
    /// shutdown's discard) took it first, the put succeeded. If items before it are still
    /// there, no consumer can have given up after seeing the flag (it would have found
    /// them), so it stays, to be drained after them.
    ///
    /// No consumer can miss both the item and the flag. Fenced, the publication is a
    /// `SeqCst` swap and the flag is read after it, while a consumer reads the flag, then the
    /// logs (`H_USED_LOGS`, heads, tails), all `SeqCst` (see `try_take`); a new log's claim
    /// raises `H_USED_LOGS` `SeqCst` too. Published plainly, the store and the flag's load
    /// are ordered only by the barrier that `shutdown` and a consumer giving up run
    /// ([`barrier_or_fence`](Self::barrier_or_fence)): a put whose store came before that
    /// barrier's interrupt is seen by the consumer's last look, one whose load came after it
    /// sees the flag. The head read of a failed CAS must be `SeqCst` as well, for "items
    /// before it are still there" to hold in that order (a locked instruction on x86, after
    /// which the plain store is visible too).
    #[inline]
    fn withdraw_if_shut_down(&self, log: usize, published: (u64, u64)) -> Result<()> {
        if self.flags() & l::FLAG_SHUTDOWN == 0 {
            return Ok(());
        }
        self.withdraw(log, published)
    }

    /// [`withdraw_if_shut_down`](Self::withdraw_if_shut_down) once the queue is shut down.
    #[cold]
    fn withdraw(&self, log: usize, published: (u64, u64)) -> Result<()> {
        let (before, after) = published;
        let withdrawn = self
            .head(log)
            .compare_exchange(before, after, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok();
        if withdrawn {
            return Err(Error::new(ErrorKind::ShutDown));
        }
        Ok(())
    }

    /// Writes the frame past the tail and publishes it; returns the tail words before and
    /// after.
    ///
    /// `fenced`: publish with a full barrier (a `SeqCst` swap), which also orders the
    /// publication before the caller's later loads; else with a release store (see
    /// [`put_unbounded`](Self::put_unbounded)).
    ///
    /// Inlined into the puts, as [`write_frame_unannounced`](Self::write_frame_unannounced)
    /// is into it: called, each returned its `Result` of two words through memory, written
    /// with 8-byte stores and read back with one 16-byte load, which cannot be forwarded
    /// from them and waited for the stores to retire. `perf` put three quarters of
    /// `write_frame`'s samples on that load; a 64-byte `put_bytes` in one process went from
    /// 26.4 to 19.5 ns with both inlined (docs/benchmarks.md).
    #[inline(always)]
    fn write_frame(
        &self,
        producer: &mut Producer,
        log: usize,
        item: Item<'_>,
        fenced: bool,
    ) -> Result<(u64, u64)> {
        // Announced before the chunks are found, not just before the copy: a big frame
        // needs new chunks on most puts, and giving old ones back and populating new ones
        // (tens of us each) outlasted the getter's spins.
        let big = l::frame_size(item.body.len() as u64) >= BIG_FRAME;
        if big {
            let began = (sys::monotonic_ns() & !1).max(2);
            self.writing(log).store(began, Ordering::Relaxed);
        }
        let written = self.write_frame_unannounced(producer, log, item, fenced);
        if big {
            self.writing(log).store(0, Ordering::Release);
        }
        written
    }

    /// [`write_frame`](Self::write_frame) without the announcement.
    #[inline(always)]
    fn write_frame_unannounced(
        &self,
        producer: &mut Producer,
        log: usize,
        item: Item<'_>,
        fenced: bool,
    ) -> Result<(u64, u64)> {
        let Item { string, body } = item;
        let len = body.len() as u64;
        let tail = Mark::unpack(producer.tail);
        let pad = l::pad_for(tail.pos, len);
        let size = l::frame_size(pad + len);
        let end = l::forward(tail.pos, size);
        let over = |head: Mark| {
            head.items_to(tail) >= l::MAX_ITEMS_PER_LOG
                || head.bytes_to(tail) + size > l::MAX_BACKLOG
        };
        // The head as last read lags the real one, so the limits are conservative with
        // it; it is read again only when they fail or a new chunk is due (every 64 KiB of
        // items at most, so it never lags by 2^24 items): consumers write the head on every
        // get, and reading it on every put pulled their cache line across each time.
        let mut head = Mark::unpack(producer.head_seen);
        let needs_chunk = Self::is_ahead(end, producer.mapped);
        // Holding more chunks than it keeps, the producer also looks every 16th put, so
        // that memory follows a draining backlog down even while items are small.
        producer.puts = producer.puts.wrapping_add(1);
        let holding = producer.in_use.len() > l::KEEP_CHUNKS && producer.puts % 16 == 0;
        if over(head) || needs_chunk || holding {
            head = self.look_at_head(producer, log);
        }
        if over(head) {
            return Err(log_full(head, tail));
        }
        if needs_chunk {
            self.map_chunks(producer, log, end)?;
        }
        let mut header = [0u8; 8];
        let word = l::length_word(len as u32, string);
        header[..4].copy_from_slice(&word.to_le_bytes());
        header[4..].copy_from_slice(&l::check_word(word, tail.pos, pad).to_le_bytes());
        if let Some(at) = self.frame_offset(log, tail.pos, size) {
            // The whole frame in one chunk (all but one frame in a chunk's worth, for small
            // items): one look at the map, three copies side by side.
            self.map.write(at, &header);
            self.map.write(at + (l::FRAME_HEADER + pad) as usize, body);
        } else {
            self.write_at(log, tail.pos, &header);
            self.write_at(log, l::forward(tail.pos, l::FRAME_HEADER + pad), body);
        }
        let published = tail.advance(size).pack();
        if fenced {
            // A swap, not a store: its full barrier also orders the publication before
            // the look at the sleepers' flag in `after_put` (see `wake_published`), for
            // less than a store and a fence cost.
            self.tail(log).swap(published, Ordering::SeqCst);
        } else {
            self.tail(log).store(published, Ordering::Release);
            // The loads after it are ordered by the other side's barrier; the compiler
            // must not hoist them above the store either.
            compiler_fence(Ordering::SeqCst);
        }
        producer.tail = published;
        Ok((tail.pack(), published))
    }

    /// Reads `log`'s head again, for this producer, and frees the chunks wholly behind it.
    fn look_at_head(&self, producer: &mut Producer, log: usize) -> Mark {
        let tail = Mark::unpack(producer.tail);
        let mut head = Mark::unpack(self.head(log).load(Ordering::Acquire));
        if Self::impossible(head, tail) {
            // A head no consumer leaves: written by something else. Whatever it says is
            // between it and the tail cannot be found, and left there it fills the log for
            // good (consumers may see it empty): put it back on the tail. First, so that no
            // chunk is recycled behind it.
            let _ = self.head(log).compare_exchange(
                head.pack(),
                tail.pack(),
                Ordering::SeqCst,
                Ordering::Acquire,
            );
            head = Mark::unpack(self.head(log).load(Ordering::Acquire));
        }
        producer.head_seen = head.pack();
        self.recycle_behind(producer, log, head.pos);
        head
    }

    /// Whether `head` and `tail` (this producer's own) are apart as no put and take ever
    /// leave them: no item between them but not the same word, more items than a log
    /// holds, or more bytes.
    fn impossible(head: Mark, tail: Mark) -> bool {
        (head.count == tail.count && head != tail)
            || head.items_to(tail) > l::MAX_ITEMS_PER_LOG
            || head.bytes_to(tail) > l::MAX_BACKLOG
    }

    /// The file offset of the `size` bytes of a frame at position `pos` of `log`, if they
    /// lie in one chunk (read off the map once, as [`pieces`](Self::pieces) would for each
    /// piece); `None` if the frame crosses into the next chunk.
    #[inline]
    fn frame_offset(&self, log: usize, pos: u64, size: u64) -> Option<usize> {
        (pos % l::CHUNK + size <= l::CHUNK).then(|| self.offset_of(log, pos))
    }

    /// The file offset of position `pos` of `log`, good up to the end of its chunk.
    #[inline]
    fn offset_of(&self, log: usize, pos: u64) -> usize {
        let chunk = self
            .map
            .u32_at(l::map_entry(log, pos))
            .load(Ordering::Acquire);
        l::chunk_offset(log, chunk) + (pos % l::CHUNK) as usize
    }

    /// Calls `f(offset, range)` for each piece of the `len` bytes at position `pos` of
    /// `log`: `range` of those bytes is at file offset `offset`, in one chunk.
    fn pieces(&self, log: usize, pos: u64, len: usize, mut f: impl FnMut(usize, Range<usize>)) {
        let mut done = 0;
        while done < len {
            let at = l::forward(pos, done as u64);
            let n = (l::CHUNK - at % l::CHUNK).min((len - done) as u64) as usize;
            f(self.offset_of(log, at), done..done + n);
            done += n;
        }
    }

    /// Copies `data` to position `pos` of `log`.
    fn write_at(&self, log: usize, pos: u64, data: &[u8]) {
        self.pieces(log, pos, data.len(), |offset, range| {
            self.map.write(offset, &data[range]);
        });
    }

    /// Appends the `len` bytes at position `pos` of `log` to `out`.
    fn read_append(&self, log: usize, pos: u64, len: usize, out: &mut Vec<u8>) {
        out.reserve(len);
        self.pieces(log, pos, len, |offset, range| {
            self.map.read_append(offset, range.len(), out);
        });
    }

    /// Fills `buf` from position `pos` of `log`.
    fn read_into(&self, log: usize, pos: u64, buf: &mut [u8]) {
        self.pieces(log, pos, buf.len(), |offset, range| {
            self.map.read(offset, &mut buf[range]);
        });
    }

    /// Whether position `pos` is past `mark` (positions wrap; the two are never far apart).
    fn is_ahead(pos: u64, mark: u64) -> bool {
        let d = l::distance(mark, pos);
        d != 0 && d < l::SPAN * 4
    }

    /// Gives positions up to `end` memory: a chunk for each chunk of positions not mapped
    /// yet, written into the log's map before any item there is published.
    fn map_chunks(&self, producer: &mut Producer, log: usize, end: u64) -> Result<()> {
        while Self::is_ahead(end, producer.mapped) {
            let chunk = self.take_chunk(producer, log, producer.mapped)?;
            self.map
                .u32_at(l::map_entry(log, producer.mapped))
                .store(chunk, Ordering::Release);
            producer.in_use.push_back((producer.mapped, chunk));
            producer.mapped = l::forward(producer.mapped, l::CHUNK);
        }
        self.publish_held(producer, log);
        Ok(())
    }

    /// A free chunk with memory for the positions from `start`: a kept one if any, else
    /// one given memory now.
    fn take_chunk(&self, producer: &mut Producer, log: usize, start: u64) -> Result<u32> {
        if producer.spare.is_empty() && producer.in_use.len() >= l::KEEP_CHUNKS {
            self.yield_to_consumers(producer, log);
        }
        while let Some(chunk) = producer.spare.pop_front() {
            if self.move_chunk(log, chunk, ChunkState::Spare, ChunkState::Used(start)) {
                return Ok(chunk);
            }
            producer.trimmed.push(chunk); // a trimmer is giving its memory back
        }
        let mut trimmer_alive = None;
        if let Some(i) = (0..producer.trimmed.len())
            .find(|&i| self.claim_chunk(log, producer.trimmed[i], start, &mut trimmer_alive))
        {
            let chunk = producer.trimmed.swap_remove(i);
            return self.populated(producer, log, chunk);
        }
        loop {
            let chunk = match producer.given_back.pop() {
                Some(chunk) => chunk,
                None if u64::from(producer.fresh) < l::CHUNKS => {
                    producer.fresh += 1;
                    self.map
                        .u32_at(l::entry(log) + l::L_FRESH)
                        .store(producer.fresh, Ordering::Release);
                    producer.fresh - 1
                }
                None => {
                    return Err(Error::with_message(
                        ErrorKind::Full,
                        "this process's share of the queue has no memory chunk left",
                    ));
                }
            };
            if self.claim_chunk(log, chunk, start, &mut trimmer_alive) {
                return self.populated(producer, log, chunk);
            }
            producer.trimmed.push(chunk);
        }
    }

    /// Called out of kept chunks, with a backlog of more than it keeps: if consumers are
    /// taking from the log, gives them the CPU a few times ([`YIELDS`]), for a chunk they
    /// free to take instead of giving memory to a fresh one.
    ///
    /// Fresh memory is dear: a 64 KiB chunk's pages cost the kernel about as much as
    /// putting its 900 items of 64 bytes (allocated, cleared, charged, mapped; given back
    /// again once drained). A producer that runs far ahead of its consumers pays that for
    /// every chunk of its backlog, and takes CPU time from the consumers while it does: 4
    /// producers and 4 consumers on 2 CPUs moved their items ~15-25% faster yielding
    /// (docs/benchmarks.md, "Queue: consumers stay on a log"). A put still never waits for
    /// a consumer: a yield that comes back at once (no one else wanted the CPU) ends this.
    /// Where others want the CPU, a put may give it up for a round of the scheduler (once
    /// per 64 KiB of items at most, and only this far ahead), as it may lose it to
    /// preemption at any time anyway.
    fn yield_to_consumers(&self, producer: &mut Producer, log: usize) {
        if producer.head_seen == producer.head_when_populating {
            return; // no consumer took from this log since the last chunk was populated
        }
        let start = sys::monotonic_ns();
        for _ in 0..YIELDS {
            let before = sys::monotonic_ns();
            std::thread::yield_now();
            let now = sys::monotonic_ns();
            let alone = now.saturating_sub(before) < YIELD_ALONE_NS;
            self.look_at_head(producer, log);
            if alone || !producer.spare.is_empty() || now.saturating_sub(start) >= YIELDING_NS {
                return;
            }
        }
    }

    /// `chunk`, just claimed, with its memory made present (else given back, and the error).
    fn populated(&self, producer: &mut Producer, log: usize, chunk: u32) -> Result<u32> {
        producer.head_when_populating = producer.head_seen;
        if let Err(e) =
            self.map
                .populate(self.file(), l::chunk_offset(log, chunk), l::CHUNK as usize)
        {
            self.state(log, chunk)
                .store(ChunkState::Unused.pack(), Ordering::Release);
            producer.given_back.push(chunk);
            return Err(e.into());
        }
        Ok(chunk)
    }

    /// Frees the chunks wholly behind position `head`: kept for reuse, or given back
    /// beyond [`l::KEEP_CHUNKS`].
    fn recycle_behind(&self, producer: &mut Producer, log: usize, head: u64) {
        while let Some(&(start, chunk)) = producer.in_use.front() {
            if !Self::is_ahead(head, l::forward(start, l::CHUNK - 1)) {
                break;
            }
            producer.in_use.pop_front();
            if !self.move_chunk(log, chunk, ChunkState::Used(start), ChunkState::Spare) {
                producer.trimmed.push(chunk); // a trimmer got to it first
                continue;
            }
            producer.spare.push_back(chunk);
            if producer.spare.len() > l::KEEP_CHUNKS {
                // The one freed longest ago: the least likely to be in cache.
                let old = producer.spare.pop_front().expect("more than KEEP_CHUNKS");
                if self.move_chunk(log, old, ChunkState::Spare, ChunkState::Unused) {
                    let offset = l::chunk_offset(log, old) as u64;
                    // Should the punch fail, the chunk is populated again before reuse.
                    let _ = shm::release(self.file(), offset, l::CHUNK);
                    producer.given_back.push(old);
                } else {
                    producer.trimmed.push(old);
                }
            }
        }
        self.publish_held(producer, log);
    }

    /// Tells trimming consumers how many chunks this producer holds memory in.
    fn publish_held(&self, producer: &Producer, log: usize) {
        let held = (producer.in_use.len() + producer.spare.len()) as u32;
        self.map
            .u32_at(l::entry(log) + l::L_HELD)
            .store(held, Ordering::Relaxed);
    }

    fn state(&self, log: usize, chunk: u32) -> &AtomicU32 {
        self.map.u32_at(l::state_entry(log, chunk))
    }

    /// Moves `chunk` from state `from` to `to`; false if it was not in `from`.
    fn move_chunk(&self, log: usize, chunk: u32, from: ChunkState, to: ChunkState) -> bool {
        self.state(log, chunk)
            .compare_exchange(from.pack(), to.pack(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Takes `chunk`, whatever state it is in, for the positions from `start`, unless a
    /// live trimmer is giving its memory back (`trimmer_alive` caches that answer).
    fn claim_chunk(
        &self,
        log: usize,
        chunk: u32,
        start: u64,
        trimmer_alive: &mut Option<(u64, bool)>,
    ) -> bool {
        let word = self.state(log, chunk);
        loop {
            let state = word.load(Ordering::Acquire);
            let punching = ChunkState::unpack(state) == ChunkState::Punching;
            if punching && self.trimmer_alive_cached(log, trimmer_alive) {
                return false;
            }
            let used = ChunkState::Used(start).pack();
            if word
                .compare_exchange(state, used, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                if punching {
                    // A dead trimmer's chunk may or may not have been punched, and should
                    // its process have died with the punch under way in another thread,
                    // that punch may still be running. Punch it again: that waits for any
                    // punch of the file under way (it holds the file's lock), so that none
                    // lands after the chunk gets memory again, as every claimed chunk does.
                    let offset = l::chunk_offset(log, chunk) as u64;
                    let _ = shm::release(self.file(), offset, l::CHUNK);
                }
                return true;
            }
        }
    }

    /// [`trimmer_alive`](Self::trimmer_alive), asked again only when the lock word changed
    /// since `cache` was filled: a new trimmer takes the lock before it marks any chunk, so
    /// a chunk seen `Punching` is never judged by an older trimmer's verdict.
    fn trimmer_alive_cached(&self, log: usize, cache: &mut Option<(u64, bool)>) -> bool {
        let word = self
            .map
            .u64_at(l::entry(log) + l::L_TRIMMER)
            .load(Ordering::Acquire);
        match *cache {
            Some((seen, alive)) if seen == word => alive,
            _ => {
                let alive = self.trimmer_alive(word);
                *cache = Some((word, alive));
                alive
            }
        }
    }

    /// Whether the consumer of trim lock word `word` may be running (unknown counts as
    /// yes).
    fn trimmer_alive(&self, word: u64) -> bool {
        if word == 0 {
            return false;
        }
        // The word keeps the low 32 bits of the start time.
        shm::process_alive_masked(word as u32, word >> 32, 0xffff_ffff) != Some(false)
    }

    /// Takes room in a bounded queue for one item of `log`, waiting until `deadline`.
    fn reserve(
        &self,
        log: usize,
        tag: u64,
        pending: &AtomicU64,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut spins = 0;
        loop {
            self.check_open_for_put()?;
            if self.occupied() < self.maxsize {
                // Announce, then count again with every announcement in: two producers
                // racing for the last place both see each other and one backs off. Only
                // while the count is still our claim's: another thread of ours may have
                // closed the log, and it may have been freed and claimed again since.
                let ours =
                    |v: u64| (v & !RESERVED == tag && v & RESERVED < RESERVED).then_some(v + 1);
                if pending
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, ours)
                    .is_err()
                {
                    return Err(Error::with_message(ErrorKind::Closed, "queue is closed"));
                }
                if self.occupied() <= self.maxsize {
                    return Ok(());
                }
                give_back_reservation(pending, tag);
                // Lower logs retry at once, higher ones after yielding: the tie breaks.
                if log > 0 {
                    std::thread::yield_now();
                }
                continue;
            }
            // On first finding the queue full, and before every nap: a holder may have
            // died since we last looked. Room found that way is looked at again at once.
            if (spins == 0 || spins >= SPINS) && self.release_dead_reservations(log) {
                continue;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::new(ErrorKind::Full));
            }
            spins += 1;
            if spins < SPINS {
                std::hint::spin_loop();
                continue;
            }
            let seq = self.h32(l::H_SPACE_SEQ).load(Ordering::SeqCst);
            sleep_on(
                self.h32(l::H_SPACE_SEQ),
                self.h32(l::H_PUT_SLEEPERS),
                seq,
                deadline,
                // Getters wake putters after a fence (`wake_flagged`).
                || true,
                || self.occupied() < self.maxsize || self.is_shut_down(),
            );
        }
    }

    /// Clears reservations left by producers that died between reserving and publishing.
    fn release_dead_reservations(&self, own: usize) -> bool {
        let mut released = false;
        for log in (0..self.used_logs()).filter(|&log| log != own) {
            // The owner word first: the count is cleared only if it is still that claim's.
            let owner = self.owner_word(log);
            if owner == 0 {
                continue;
            }
            if is_freeing(owner) {
                // Its freer died before clearing the count (or is at it): finish the free
                // of a dead one, which clears the count and frees the slot.
                if self.freer_dead(owner) {
                    self.free_claim(log, owner);
                    released = true;
                }
                continue;
            }
            let pending = self.pending(log);
            let seen = pending.load(Ordering::SeqCst);
            if seen & RESERVED == 0 || seen & !RESERVED != reservation_tag(owner) {
                continue;
            }
            if self.owner_alive(log, owner) == Some(false)
                && pending
                    .compare_exchange(seen, seen & !RESERVED, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                released = true;
            }
        }
        released
    }

    fn pending(&self, log: usize) -> &AtomicU64 {
        self.map.u64_at(l::entry(log) + l::L_PENDING)
    }

    fn owner_word(&self, log: usize) -> u64 {
        self.map
            .u64_at(l::entry(log) + l::L_OWNER)
            .load(Ordering::Acquire)
    }

    /// Whether the process of owner word `owner` (as read from `log`) lives.
    fn owner_alive(&self, log: usize, owner: u64) -> Option<bool> {
        if owner == 0 || is_freeing(owner) {
            return Some(false);
        }
        let start = self
            .map
            .u64_at(l::entry(log) + l::L_START)
            .load(Ordering::Acquire);
        shm::process_alive(owner as u32, start)
    }

    #[inline]
    fn after_put(&self) {
        wake_published(self.h32(l::H_ITEMS_SEQ), self.h32(l::H_GET_SLEEPERS));
        signal_events(self.h32(l::H_EFD_STATE), self.events());
    }

    /// This process's log, claiming one if it has none (or inherited its parent's).
    #[inline]
    fn own_log(&self, producer: &mut Producer) -> Result<usize> {
        let generation = crate::process::fork_generation();
        match producer.log {
            Some(log) if producer.generation == generation => Ok(log),
            _ => self.claim_own_log(producer, generation),
        }
    }

    /// [`own_log`](Self::own_log) when it has none of this process's yet.
    #[cold]
    fn claim_own_log(&self, producer: &mut Producer, generation: u64) -> Result<usize> {
        // A new claim starts afresh: nothing of a log let go of, or of the parent's (forked),
        // carries over; its chunks are all to be had again.
        *producer = Producer {
            closed: producer.closed,
            ..Producer::default()
        };
        let (log, owner) = self.claim_log()?;
        // The log's chunk map and chunk states get their memory now, as chunks do before
        // they are written: out of memory is an error from `put`, never a SIGBUS on a later
        // write. (A no-op for a log used before: freeing a log leaves both.)
        let populated = self
            .map
            .populate(self.file(), l::map_start(log), l::MAP_LEN)
            .and_then(|()| {
                self.map
                    .populate(self.file(), l::states_start(log), l::MAP_LEN)
            });
        if let Err(e) = populated {
            self.free_log(log, owner);
            return Err(e.into());
        }
        let tail = Mark::unpack(self.tail(log).load(Ordering::Acquire));
        let head = Mark::unpack(self.head(log).load(Ordering::Acquire));
        producer.log = Some(log);
        producer.owner = owner;
        producer.generation = generation;
        // Once per claim (a no-op once registered: a forked child inherits its parent's
        // registration, a spawned one registers here before its first plain publication).
        producer.publishes_plainly = shm::register_for_barriers();
        // The chunk of the tail gets memory of its own at the first put; the previous
        // owner's chunks were given back when the log was freed.
        producer.mapped = l::chunk_start(tail.pos);
        producer.head_seen = head.pack();
        producer.tail = tail.pack();
        Ok(log)
    }

    /// Claims a free log: its index and our owner word.
    ///
    /// Drained logs of producers that let go or died are freed first, even while other
    /// logs are free: a producer that died without letting go (killed, or gone by `exit`
    /// with its handles never dropped) keeps its log's memory (its chunk map and states, its
    /// chunks: up to 8 MiB) until a reclaim. Reclaiming only once no log was free let 127
    /// such producers pile up their memory first: a supervisor restarting killed workers
    /// grew by megabytes per restart. The cost: a read of `/proc` per live owner, 12 µs
    /// here, so the first put with 127 other producers live takes 1.5 ms (0.15 ms with
    /// none; a `Process::fork` start and join is 0.25 ms).
    fn claim_log(&self) -> Result<(usize, u64)> {
        let pid = u64::from(std::process::id());
        let start = shm::own_start_time();
        self.reclaim_logs();
        for log in 0..l::MAX_LOGS {
            let owner = self.map.u64_at(l::entry(log) + l::L_OWNER);
            if owner.load(Ordering::Acquire) != 0 {
                continue;
            }
            // A pid is at most 22 bits and a claim number 31: the word is never 0 and
            // never has the `FREEING` bit.
            let claim = self
                .map
                .u32_at(l::entry(log) + l::L_CLAIMS)
                .fetch_add(1, Ordering::AcqRel);
            let word = claim_word(pid, claim);
            if owner
                .compare_exchange(0, word, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.map
                    .u64_at(l::entry(log) + l::L_START)
                    .store(start, Ordering::Release);
                // "Released", "held" and "fresh" were reset by the free (or never set),
                // but are reset again: in a file something else wrote, a leftover
                // "released" would have our log freed under us by the first taker.
                for word in [l::L_RELEASED, l::L_HELD, l::L_FRESH] {
                    self.map
                        .u32_at(l::entry(log) + word)
                        .store(0, Ordering::Release);
                }
                self.pending(log)
                    .store(reservation_tag(word), Ordering::SeqCst);
                // SeqCst: see `withdraw_if_shut_down`.
                self.h32(l::H_USED_LOGS)
                    .fetch_max(log as u32 + 1, Ordering::SeqCst);
                return Ok((log, word));
            }
        }
        Err(Error::with_message(
            ErrorKind::Unsupported,
            format!(
                "no producer slot free: {} processes have a slot in this queue (live ones, and \
                 gone ones whose items are not all taken yet); a slot is free again once its \
                 owner is gone or has closed the queue, and its items are taken",
                l::MAX_LOGS
            ),
        ))
    }

    /// Frees drained logs whose owner is gone or let go of them.
    fn reclaim_logs(&self) {
        for log in 0..self.used_logs() {
            // The owner word first: what is checked next is checked of this claim.
            let owner = self.owner_word(log);
            if is_freeing(owner) {
                // Its freer died half-way, or is at it: take over from a dead one.
                if self.freer_dead(owner) {
                    self.free_claim(log, owner);
                }
                continue;
            }
            let released = self
                .map
                .u32_at(l::entry(log) + l::L_RELEASED)
                .load(Ordering::SeqCst)
                != 0;
            if !released && self.owner_alive(log, owner) != Some(false) {
                continue;
            }
            // Only now the counts: an owner that let go or died puts nothing more, so a
            // drained log stays drained. (Counted first, an item put just before the owner
            // let go could be freed with the log.)
            let head = Mark::unpack(self.head(log).load(Ordering::SeqCst));
            let tail = Mark::unpack(self.tail(log).load(Ordering::SeqCst));
            if head.count == tail.count {
                self.free_log(log, owner);
            }
        }
    }

    /// Gives a drained log back, its memory then its slot, if `expected` (the owner word
    /// read before the caller found the log drained and let go of, or its owner dead) still
    /// owns it: a log freed and claimed again meanwhile belongs to its new owner. Only one
    /// process frees a claim: the one that moves its owner word to its own freeing word.
    fn free_log(&self, log: usize, expected: u64) {
        // Being freed already: by a live freer, or by a dead one whose work only
        // `reclaim_logs` redoes, once it made sure the freer is dead.
        if !is_freeing(expected) {
            self.free_claim(log, expected);
        }
    }

    /// Whether the freer of freeing word `freeing` is dead (its work is then to be redone).
    fn freer_dead(&self, freeing: u64) -> bool {
        // The freeing word keeps the low 31 bits of the freer's start time.
        let start = freeing >> 32 & 0x7fff_ffff;
        shm::process_alive_masked(freeing as u32, start, 0x7fff_ffff) == Some(false)
    }

    /// [`free_log`](Self::free_log), `expected` being an owner word or a dead freer's
    /// freeing word (whose work is redone: every step can be done twice).
    fn free_claim(&self, log: usize, expected: u64) {
        let owner = self.map.u64_at(l::entry(log) + l::L_OWNER);
        let pid = std::process::id();
        let start = shm::own_start_time();
        let freeing = FREEING | u64::from(pid) | (start & 0x7fff_ffff) << 32;
        if expected == 0
            || owner
                .compare_exchange(expected, freeing, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let _ = shm::release(self.file(), l::chunk_offset(log, 0) as u64, l::SPAN);
        // No claim's: a putter of the freed claim can neither raise nor lower it.
        self.pending(log).store(0, Ordering::SeqCst);
        // "Released", "held" and "fresh" are of this claim: gone before the next can be made.
        for word in [l::L_RELEASED, l::L_HELD, l::L_FRESH] {
            self.map
                .u32_at(l::entry(log) + word)
                .store(0, Ordering::Release);
        }
        // The start time goes before the owner word frees the log: a claimer writes its own
        // just after taking the log, and until then, one checking the new owner must see 0
        // ("any process with this pid"), not the old owner's, which would make it dead.
        self.map
            .u64_at(l::entry(log) + l::L_START)
            .store(0, Ordering::Release);
        owner.store(0, Ordering::Release);
    }

    /// This process will put no more: let go of its log (freed now if drained, else by
    /// whoever drains it).
    pub(crate) fn close_producer(&self) {
        let mut producer = self.producer.lock();
        producer.closed = true;
        self.release_log(&mut producer);
    }

    fn release_log(&self, producer: &mut Producer) {
        let Some(log) = producer.log.take() else {
            return;
        };
        if producer.generation != crate::process::fork_generation() {
            return; // the parent's log
        }
        // SeqCst, against the last taker's SeqCst claim and load of the flag (see
        // `take_from`): one of the two sees the other, so a drained log is always freed.
        self.map
            .u32_at(l::entry(log) + l::L_RELEASED)
            .store(1, Ordering::SeqCst);
        let head = Mark::unpack(self.head(log).load(Ordering::SeqCst));
        let tail = Mark::unpack(self.tail(log).load(Ordering::SeqCst));
        if head.count == tail.count {
            self.free_log(log, producer.owner);
        }
    }

    // ---------------------------------------------------------------------------------
    // Get

    /// Takes one item if there is one: `take` reads it where it lies (see [`Payload`]), and
    /// what it returns is kept only if the item was claimed (else `take` runs again, on the
    /// next item).
    ///
    /// Generic over `take` (so that [`get`](Self::get)'s copy is inlined), `?Sized` so that a
    /// `&mut dyn FnMut` serves as well.
    pub(crate) fn try_take<R, F>(&self, take: &mut F) -> Result<Option<R>>
    where
        F: FnMut(Payload<'_>) -> R + ?Sized,
    {
        let flags = self.flags();
        if flags & l::FLAG_IMMEDIATE != 0 {
            return Err(Error::new(ErrorKind::ShutDown));
        }
        if let Some(taken) = self.scan(take)? {
            return Ok(Some(taken));
        }
        if flags & l::FLAG_SHUTDOWN == 0 {
            return Ok(None);
        }
        // Shut down and found empty: a put that published plainly and read the flag
        // before it was set keeps its item (see `withdraw_if_shut_down`), so look once more
        // after a barrier (or, refused one, a nap) before giving up.
        if !self.barrier_or_fence() {
            std::thread::sleep(NAP_UNORDERED);
        }
        match self.scan(take)? {
            Some(taken) => Ok(Some(taken)),
            None => Err(Error::new(ErrorKind::ShutDown)),
        }
    }

    /// One look at every log, from where the last scan left off, for an item to take.
    ///
    /// A consumer stays on the log it took from, for up to [`STAY_BYTES`] of frames in a
    /// row, and moves on at once when its claim lost a race (another consumer takes from
    /// there too). Taking from the logs in turn, one item each, had every consumer claim on
    /// every log's head: with two consumers running, each claim pulled the head's cache
    /// line from the other CPU, and 4 consumers drained a backlog of 64-byte items at about
    /// half the rate they do this way (docs/benchmarks.md, "Queue: consumers stay on a
    /// log").
    #[inline]
    fn scan<R, F>(&self, take: &mut F) -> Result<Option<R>>
    where
        F: FnMut(Payload<'_>) -> R + ?Sized,
    {
        let logs = self.used_logs();
        if logs == 0 {
            return Ok(None);
        }
        // A hint, so plain loads and stores: threads racing here may start at one log (and
        // then move apart, their claims racing). Kept below `logs` (the first take and a
        // change of `logs` aside), so that neither this nor the scan divides.
        let mut start = self.next_log.load(Ordering::Relaxed);
        if start >= logs {
            start %= logs;
        }
        let mut log = start;
        for _ in 0..logs {
            let this = log;
            log = if log + 1 == logs { 0 } else { log + 1 };
            if let Some(taken) = self.take_from(this, take)? {
                let stayed = if this == start {
                    self.stayed.load(Ordering::Relaxed)
                } else {
                    0
                } + taken.size;
                if taken.raced || stayed >= STAY_BYTES {
                    self.next_log.store(log, Ordering::Relaxed);
                    self.stayed.store(0, Ordering::Relaxed);
                } else {
                    if this != start {
                        self.next_log.store(this, Ordering::Relaxed);
                    }
                    self.stayed.store(stayed, Ordering::Relaxed);
                }
                if self.maxsize > 0 {
                    self.after_get();
                }
                return Ok(Some(taken.value));
            }
        }
        Ok(None)
    }

    /// Reads the frame at `log`'s head with `take`, then claims it; `None` if the log is
    /// empty.
    ///
    /// # Errors
    /// `BadMessageLength` if the head frame's header is one no producer writes (shared
    /// memory scribbled on): the log's items up to its tail were discarded (see
    /// [`discard_corrupt`](Self::discard_corrupt)).
    fn take_from<R, F>(&self, log: usize, take: &mut F) -> Result<Option<Taken<R>>>
    where
        F: FnMut(Payload<'_>) -> R + ?Sized,
    {
        // Looks at a header that fails its check while the head stays the same word.
        let (mut last_head, mut bad_looks) = (None, 0u32);
        let mut raced = false;
        loop {
            let head_word = self.head(log).load(Ordering::SeqCst);
            let head = Mark::unpack(head_word);
            let tail = match seen_tail(self.id, log, head_word) {
                Some(tail) => tail,
                None => {
                    let word = self.tail(log).load(Ordering::SeqCst);
                    let tail = Mark::unpack(word);
                    if head.count == tail.count {
                        return Ok(None);
                    }
                    remember_tail(self.id, log, word, head_word);
                    tail
                }
            };
            // A header never crosses a chunk's end (positions and chunks are 8-aligned).
            let at = self.offset_of(log, head.pos);
            let mut header = [0u8; 8];
            self.map.read(at, &mut header);
            let word = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let check = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
            let unpacked = l::unpack_length_word(word);
            let (len, string) = unpacked.unwrap_or((word, None));
            let pad = l::pad_of(check);
            let size = l::frame_size(pad + u64::from(len));
            if check != l::check_word(word, head.pos, pad)
                || unpacked.is_none()
                || size > head.bytes_to(tail)
                || u64::from(len) > l::MAX_ITEM
            {
                // A stale head (someone took it while we read): look again. A header that
                // keeps failing under the same head was not written by a producer (shared
                // memory scribbled on): no frame after it can be found, so the log's items
                // are discarded rather than spun on forever.
                if last_head == Some(head_word) {
                    bad_looks += 1;
                    if bad_looks == BAD_HEADER_LOOKS {
                        self.discard_corrupt(log, head_word, len)?;
                        (last_head, bad_looks) = (None, 0); // another consumer did it first
                    }
                } else {
                    (last_head, bad_looks) = (Some(head_word), 0);
                }
                std::hint::spin_loop();
                continue;
            }
            // A payload that ends in the header's chunk is read from there, without
            // looking at the map again.
            let within = head.pos % l::CHUNK + size <= l::CHUNK;
            let taken = take(Payload {
                shared: self,
                log,
                pos: l::forward(head.pos, l::FRAME_HEADER + pad),
                left: len as usize,
                at: within.then_some(at + (l::FRAME_HEADER + pad) as usize),
                string,
            });
            if self
                .head(log)
                .compare_exchange(
                    head_word,
                    head.advance(size).pack(),
                    // SeqCst (a plain `lock cmpxchg` on x86, as AcqRel): with the owner's
                    // SeqCst store of "released" and the SeqCst loads after each, either the
                    // owner sees its log drained or the last taker sees it released.
                    Ordering::SeqCst,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                let after = head.advance(size);
                took_to(self.id, log, after.pack());
                if after.count == tail.count {
                    self.free_if_released(log);
                }
                return Ok(Some(Taken {
                    value: taken,
                    size,
                    raced,
                }));
            }
            raced = true;
        }
    }

    /// The frame at `log`'s head, `head_word`, has a header no producer writes, `len` its
    /// length field. Moves the head to the tail, discarding the items in between: without
    /// a frame's true length nothing after it can be found (the producer goes on writing
    /// whole frames from the tail). Discarded items count as done for
    /// [`join`](Self::join), as an immediate shutdown's do. `Ok` if the head had moved
    /// already (another consumer discarded or took it); otherwise the error for the
    /// consumer that discarded.
    fn discard_corrupt(&self, log: usize, head_word: u64, len: u32) -> Result<()> {
        let head = Mark::unpack(head_word);
        let tail = Mark::unpack(self.tail(log).load(Ordering::Acquire));
        if self
            .head(log)
            .compare_exchange(head_word, tail.pack(), Ordering::SeqCst, Ordering::Acquire)
            .is_err()
        {
            return Ok(());
        }
        let discarded = head.items_to(tail);
        // Not `took_to`: this thread's remembered tail may be short of the one read here,
        // and with the head past it, would pass for a tail a whole count-wrap ahead.
        remember_tail(self.id, log, tail.pack(), tail.pack());
        self.free_if_released(log);
        if discarded == 0 {
            // Not a frame of the log at all (nothing was there): nothing to report.
            return Ok(());
        }
        self.count_done(u64::from(discarded));
        self.after_get();
        Err(Error::with_message(
            ErrorKind::BadMessageLength,
            format!(
                "a frame header in the queue's shared memory that no producer wrote (length \
                 {len} at position {} of log {log}): memory written by something else; the \
                 {discarded} items that log held were discarded",
                head.pos
            ),
        ))
    }

    /// The last item of a log its owner let go of was taken: free the log.
    fn free_if_released(&self, log: usize) {
        // The owner word first: the flag and the counts read next are of this claim.
        let owner = self.owner_word(log);
        let released = self.map.u32_at(l::entry(log) + l::L_RELEASED);
        if released.load(Ordering::SeqCst) != 0 {
            let head = Mark::unpack(self.head(log).load(Ordering::Acquire));
            let tail = Mark::unpack(self.tail(log).load(Ordering::Acquire));
            if head.count == tail.count {
                self.free_log(log, owner);
            }
        }
    }

    fn after_get(&self) {
        wake_flagged(self.h32(l::H_SPACE_SEQ), self.h32(l::H_PUT_SLEEPERS));
    }

    /// Takes one item into `out`, waiting until `deadline` (`None`: as long as it takes).
    /// `Ok(false)` at the deadline.
    pub(crate) fn get(&self, out: &mut Vec<u8>, deadline: Option<Instant>) -> Result<bool> {
        Ok(self
            .take(deadline, &mut |mut item| item.copy_into(out))?
            .is_some())
    }

    /// Takes one item as [`try_take`](Self::try_take) does, waiting until `deadline`
    /// (`None`: as long as it takes). `Ok(None)` at the deadline.
    pub(crate) fn take<R, F>(&self, deadline: Option<Instant>, take: &mut F) -> Result<Option<R>>
    where
        F: FnMut(Payload<'_>) -> R + ?Sized,
    {
        let (mut spins, mut marked) = (0, 0);
        let budget = self.get_spins.load(Ordering::Relaxed);
        let mut slept_at = None;
        loop {
            if let Some(taken) = self.try_take(take)? {
                if slept_at.is_some() || (spins > 0 && budget < SPINS) {
                    self.adapt_spins(budget, slept_at);
                }
                return Ok(Some(taken));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Found empty: leave the readiness fd re-armed, as `Queue::try_get` does.
                self.quiesce_events();
                return Ok(None);
            }
            spins += 1;
            // Spinning for an announced write, the announcement is looked at every `SPINS`
            // spins, whatever the budget: each look reads the clock and every log's word.
            if spins < if marked == 0 { budget } else { SPINS } {
                std::hint::spin_loop();
                continue;
            }
            if self.spin_for_write(&mut marked) {
                spins = 0;
                continue;
            }
            marked = 0;
            slept_at.get_or_insert_with(Instant::now);
            self.trim_idle();
            // Read only on the way to sleep, before `sleep_on`'s last look: putters write
            // the word only when a sleeper raised its flag, so it stays in every cache.
            let seq = self.h32(l::H_ITEMS_SEQ).load(Ordering::SeqCst);
            sleep_on(
                self.h32(l::H_ITEMS_SEQ),
                self.h32(l::H_GET_SLEEPERS),
                seq,
                deadline,
                || self.barrier_or_trust_fenced(),
                || !self.is_empty() || self.flags() != 0,
            );
        }
    }

    /// After a get that found the queue empty and then an item: sets the getters' spins
    /// from how long it waited (see `get_spins`).
    #[cold]
    fn adapt_spins(&self, budget: u32, slept_at: Option<Instant>) {
        let next = match slept_at {
            Some(at) if at.elapsed() > LONG_WAIT => (budget / 2).max(MIN_GET_SPINS),
            _ => (budget * 2).min(SPINS),
        };
        if next != budget {
            self.get_spins.store(next, Ordering::Relaxed);
        }
    }

    /// Whether a getter that spun in vain should spin on rather than sleep: a producer is
    /// writing a big frame (announced in `l::L_WRITING`), begun less than
    /// [`WRITE_PATIENCE_NS`] ago, and this getter is the one spinning for it: the first to
    /// mark the announcement, which `marked` then holds. Other getters sleep as before, so
    /// idle consumers do not all burn a CPU while a big item is copied in.
    fn spin_for_write(&self, marked: &mut u64) -> bool {
        let now = sys::monotonic_ns();
        (0..self.used_logs()).any(|log| {
            let word = self.writing(log);
            let note = word.load(Ordering::Relaxed);
            // Wrapping: a time from the future (another time namespace, or a scribble)
            // counts as long past.
            if note == 0 || now.wrapping_sub(note & !1) >= WRITE_PATIENCE_NS {
                return false;
            }
            if note & 1 == 1 {
                return note == *marked;
            }
            let won = word
                .compare_exchange(note, note | 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
            if won {
                *marked = note | 1;
            }
            won
        })
    }

    /// Makes the readiness fd readable exactly while items may be there: called by a
    /// consumer that found the queue empty.
    pub(crate) fn quiesce_events(&self) {
        let efd = self.h32(l::H_EFD_STATE);
        // Always drain, whatever the word says: a put may have written and not yet set it,
        // and a waiter told "not ready" must find the fd at EAGAIN (edge-triggered waiters
        // get no new edge otherwise). Then clear the word in a new generation, so that such
        // a put can no longer set it (its compare-and-swap fails), and look again.
        shm::eventfd_drain(self.events());
        let before = efd
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                Some((s | 1).wrapping_add(1))
            })
            .unwrap_or_else(|s| s);
        // A put that published plainly and then found the word set (and so did not write)
        // is seen by the look below, after this barrier; without one, the fd is signalled:
        // a wake-up that may find nothing, rather than one missed. Found clear, the word
        // needs none: a put that read it clear writes the fd, a system call after its
        // publication, and either that write comes after the drain above or the look
        // below, after the drain's read of it, sees the item. So a consumer polling an
        // empty queue pays the barrier once, not on every look.
        let ordered = before & 1 == 0 || self.barrier_or_trust_fenced();
        if !ordered || !self.is_empty() || self.flags() != 0 {
            signal_events(efd, self.events());
        }
        self.trim_idle();
    }

    // ---------------------------------------------------------------------------------
    // Trimming

    /// Gives back the memory of drained chunks that producers hold on to: called by a
    /// consumer that found the queue empty. A producer recycles its chunks only when it
    /// puts, so one that put a large backlog and then stopped putting (but lives on) would
    /// keep the memory of its peak; here consumers give it back instead, once the producer
    /// holds more than [`TRIM_ABOVE`] chunks, down to the [`l::KEEP_CHUNKS`] it would keep
    /// itself. Chunks are given back only while wholly behind the head (every item in them
    /// was taken) or kept spare; see [`ChunkState`] for how the producer and a trimmer never
    /// both get a chunk.
    fn trim_idle(&self) {
        let mut budget = TRIM_BUDGET;
        for log in 0..self.used_logs() {
            if budget == 0 {
                return;
            }
            let held = self
                .map
                .u32_at(l::entry(log) + l::L_HELD)
                .load(Ordering::Relaxed);
            if held > TRIM_ABOVE {
                // As much as the producer itself keeps stays: it reuses that memory at once
                // if it puts again.
                let excess = held - l::KEEP_CHUNKS as u32;
                budget -= self.trim_log(log, budget.min(excess));
            }
        }
    }

    /// Trims `log` (see [`trim_idle`](Self::trim_idle)), giving back at most `budget`
    /// chunks; returns how many it gave back.
    fn trim_log(&self, log: usize, budget: u32) -> u32 {
        let Some(lock) = self.lock_trim(log) else {
            return 0;
        };
        let head = Mark::unpack(self.head(log).load(Ordering::Acquire));
        let fresh = self
            .map
            .u32_at(l::entry(log) + l::L_FRESH)
            .load(Ordering::Acquire)
            .min(l::CHUNKS as u32);
        let (mut done, mut held) = (0, 0);
        // A run of consecutive chunks marked `Punching`, given back in one call.
        let (mut first, mut len) = (0, 0);
        for chunk in 0..fresh {
            let word = self.state(log, chunk);
            let state = word.load(Ordering::Acquire);
            let free = match ChunkState::unpack(state) {
                ChunkState::Spare => true,
                ChunkState::Used(start) => {
                    let behind = Self::is_ahead(head.pos, l::forward(start, l::CHUNK - 1));
                    held += u32::from(!behind);
                    behind
                }
                _ => false,
            };
            if !free || done + len == budget {
                held += u32::from(free);
                continue;
            }
            let punching = ChunkState::Punching.pack();
            if word
                .compare_exchange(state, punching, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue; // the producer took it back meanwhile
            }
            if let ChunkState::Used(start) = ChunkState::unpack(state) {
                // Once ours, the chunk stays put: look at the head again, in case the
                // state we saw was a later use of the chunk for positions 8 TiB on (the
                // state word holds positions modulo 2^43), reached while this thread
                // stalled between its look and its swap.
                let head = Mark::unpack(self.head(log).load(Ordering::Acquire));
                if !Self::is_ahead(head.pos, l::forward(start, l::CHUNK - 1)) {
                    word.store(state, Ordering::Release);
                    held += 1;
                    continue;
                }
            }
            if len > 0 && (first + len != chunk || len == TRIM_RUN) {
                self.punch_run(log, first, len);
                done += len;
                len = 0;
            }
            if len == 0 {
                first = chunk;
            }
            len += 1;
        }
        if len > 0 {
            self.punch_run(log, first, len);
            done += len;
        }
        // What is left: chunks in use ahead of the head, kept ones beyond the budget. If
        // there was nothing to give back and the owner is dead, say 0, so that the next
        // consumer to find the queue empty does not look again (a dead producer's chunks
        // ahead of the head stay until its log is freed). A live owner's count stands: its
        // chunks may be behind the head by the next look.
        let owner = self.owner_word(log);
        let held = if done == 0 && self.owner_alive(log, owner) == Some(false) {
            0
        } else {
            held
        };
        self.map
            .u32_at(l::entry(log) + l::L_HELD)
            .store(held, Ordering::Relaxed);
        let _ = self
            .map
            .u64_at(l::entry(log) + l::L_TRIMMER)
            .compare_exchange(lock, 0, Ordering::AcqRel, Ordering::Acquire);
        done
    }

    /// Becomes `log`'s one trimmer, taking over from a dead one: the lock word, or `None`
    /// if another is at it.
    ///
    /// The lock word holds the trimmer's pid and (low 32 bits of) start time together, so
    /// that nobody ever sees one without the other and takes a live trimmer for dead.
    fn lock_trim(&self, log: usize) -> Option<u64> {
        let trimmer = self.map.u64_at(l::entry(log) + l::L_TRIMMER);
        let current = trimmer.load(Ordering::Acquire);
        let pid = std::process::id();
        // Another live trimmer (maybe another thread of this process) is at it.
        if current != 0 && self.trimmer_alive(current) {
            return None;
        }
        let start = shm::own_start_time();
        let word = u64::from(pid) | (start & 0xffff_ffff) << 32;
        trimmer
            .compare_exchange(current, word, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| word)
    }

    /// Gives back chunks `first..first + len` of `log`, all marked `Punching` by us.
    fn punch_run(&self, log: usize, first: u32, len: u32) {
        let offset = l::chunk_offset(log, first) as u64;
        // Should the punch fail, the memory stays; the owner populates the chunks again
        // before reuse all the same.
        let _ = shm::release(self.file(), offset, u64::from(len) * l::CHUNK);
        for chunk in first..first + len {
            self.state(log, chunk)
                .store(ChunkState::Punched.pack(), Ordering::Release);
        }
    }

    // ---------------------------------------------------------------------------------
    // Shutdown

    /// Python 3.13's `queue.Queue.shutdown`: puts fail from now on; gets drain what is left
    /// (nothing, if `immediate`: it is discarded) and then fail. Everyone waiting wakes up.
    pub(crate) fn shutdown(&self, immediate: bool) {
        let bits = l::FLAG_SHUTDOWN | if immediate { l::FLAG_IMMEDIATE } else { 0 };
        self.h32(l::H_FLAGS).fetch_or(bits, Ordering::SeqCst);
        // A put that published plainly and read the flag before it was set keeps its
        // item: make it visible to the discard below (and to getters' last looks).
        if !self.barrier_or_fence() {
            std::thread::sleep(NAP_UNORDERED);
        }
        if immediate {
            for log in 0..self.used_logs() {
                loop {
                    match self.take_from(log, &mut |_| ()) {
                        // As Python 3.13's `queue.Queue`: a discarded item counts as
                        // done, so `join` returns once the items taken before are marked
                        // done.
                        Ok(Some(_)) => self.count_done(1),
                        Ok(None) => break,
                        // A corrupt frame: `take_from` discarded the log to its tail and
                        // counted those items done. Carry on from there.
                        Err(_) => {}
                    }
                }
            }
        }
        for seq in [l::H_ITEMS_SEQ, l::H_SPACE_SEQ, l::H_JOIN_SEQ] {
            self.h32(seq).fetch_add(1, Ordering::SeqCst);
            shm::futex_wake_all(self.h32(seq));
        }
        signal_events(self.h32(l::H_EFD_STATE), self.events());
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.flags() & l::FLAG_SHUTDOWN != 0
    }

    // ---------------------------------------------------------------------------------
    // JoinableQueue

    fn unfinished(&self) -> &AtomicU64 {
        self.map.u64_at(l::H_UNFINISHED)
    }

    /// Counts `n` items done that no consumer will mark (discarded), down to 0 at most;
    /// wakes joiners when none is left.
    fn count_done(&self, n: u64) {
        let before = self
            .unfinished()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                (left > 0).then(|| left.saturating_sub(n))
            });
        if before.is_ok_and(|left| left <= n) {
            wake_all(self.h32(l::H_JOIN_SEQ), self.h32(l::H_JOIN_SLEEPERS));
        }
    }

    /// Counts one more unfinished item (before it is put).
    fn add_unfinished(&self) {
        self.unfinished().fetch_add(1, Ordering::SeqCst);
    }

    /// Takes back an unfinished count (its put failed).
    fn undo_unfinished(&self) {
        self.task_done().ok();
    }

    /// One item is done; wakes joiners when none is left.
    pub(crate) fn task_done(&self) -> Result<()> {
        let left = self
            .unfinished()
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map_err(|_| {
                Error::with_message(ErrorKind::InvalidInput, "task_done() called too many times")
            })?
            - 1;
        if left == 0 {
            wake_all(self.h32(l::H_JOIN_SEQ), self.h32(l::H_JOIN_SLEEPERS));
        }
        Ok(())
    }

    /// Waits until every item put has been marked done, or `deadline`; false at the
    /// deadline.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> bool {
        loop {
            let seq = self.h32(l::H_JOIN_SEQ).load(Ordering::SeqCst);
            if self.unfinished().load(Ordering::SeqCst) == 0 {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            sleep_on(
                self.h32(l::H_JOIN_SEQ),
                self.h32(l::H_JOIN_SLEEPERS),
                seq,
                deadline,
                // `task_done` and the discards count with locked instructions.
                || true,
                || self.unfinished().load(Ordering::SeqCst) == 0,
            );
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let mut producer = std::mem::take(self.producer.get_mut());
        self.release_log(&mut producer);
    }
}

#[cold]
fn too_big(len: u64) -> Error {
    Error::with_message(
        ErrorKind::InvalidInput,
        format!("a queue item is at most {} bytes, not {len}", l::MAX_ITEM),
    )
}

/// A producer's log holds all it may: `head` and `tail` say how much.
#[cold]
fn log_full(head: Mark, tail: Mark) -> Error {
    Error::with_message(
        ErrorKind::Full,
        format!(
            "this process's share of the queue is full ({} items, {} bytes not yet taken; at \
             most {} items and {} bytes per producer process)",
            head.items_to(tail),
            head.bytes_to(tail),
            l::MAX_ITEMS_PER_LOG,
            l::MAX_BACKLOG
        ),
    )
}

#[cold]
fn closed() -> Error {
    Error::with_message(ErrorKind::Closed, "queue is closed")
}

/// The count bits of a log's reservations word (the rest is the claim's tag).
const RESERVED: u64 = 0xffff_ffff;

/// The tag of the reservations made under the claim of owner word `owner`: its claim
/// number, with the top bit set so that no tag is 0 (a freed log's word).
fn reservation_tag(owner: u64) -> u64 {
    (owner >> 32 | 1 << 31) << 32
}

/// Gives back one reservation made under `tag`, if the count is still that claim's and not
/// 0: should the log have been freed meanwhile (this process closed it from another
/// thread, and it was drained), or claimed again, the count is not ours to lower.
fn give_back_reservation(pending: &AtomicU64, tag: u64) {
    let _ = pending.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
        (v & !RESERVED == tag && v & RESERVED > 0).then(|| v - 1)
    });
}

/// Sleeps on `seq` (expected value `seen`) after raising the `sleepers` flag, unless
/// `ready()` says the wait is over already (checked after raising it, so a waker either sees
/// the flag or the sleeper sees its change). Never longer than [`MAX_SLEEP`] at once: a
/// waker killed between lowering the flag and waking, or a sleeper woken for an item and
/// killed before taking it (puts and gets wake one sleeper, see [`wake_one`]), costs the
/// others at most that.
///
/// `barrier` runs between the two, for wakers that do not fence between their change and
/// their look at the flag (puts publishing plainly: [`Shared::barrier_or_fence`]); `false`
/// from it (no barrier was made) caps the sleep at [`NAP_UNORDERED`].
fn sleep_on(
    seq: &AtomicU32,
    sleepers: &AtomicU32,
    seen: u32,
    deadline: Option<Instant>,
    barrier: impl FnOnce() -> bool,
    ready: impl FnOnce() -> bool,
) {
    // Its fence pairs with the one in `wake_flagged`.
    raise(sleepers);
    let longest = if barrier() { MAX_SLEEP } else { NAP_UNORDERED };
    if !ready() {
        let nap = remaining(deadline).map_or(longest, |left| left.min(longest));
        shm::futex_wait(seq, seen, Some(nap));
    }
}

/// After a get: wakes one putter of a bounded queue if one raised its flag (see
/// [`wake_one`]). The fence orders the caller's store before the flag's load, against the
/// sleeper's raise before its last look in `sleep_on`: one of the two sees the other. So
/// `seq` is written only when someone sleeps, not on every item (each write pulled the
/// line from every consumer's cache).
#[inline]
fn wake_flagged(seq: &AtomicU32, sleepers: &AtomicU32) {
    fence(Ordering::SeqCst);
    let raised = sleepers.load(Ordering::Relaxed);
    if is_raised(raised) {
        wake_one(seq, sleepers, raised);
    }
}

/// After a put: wakes one getter if one raised its flag, as [`wake_flagged`] does, but
/// without its fence. A fenced put published its item with a `SeqCst` swap, which orders
/// the publication before this load against the sleeper's raise and fence in `sleep_on`; a
/// plain one leaves that order to the sleeper's barrier in every producer between its
/// raise and its last look (`take`). Either way one of the two sees the other.
#[inline]
fn wake_published(seq: &AtomicU32, sleepers: &AtomicU32) {
    let raised = sleepers.load(Ordering::SeqCst);
    if is_raised(raised) {
        wake_one(seq, sleepers, raised);
    }
}

/// Makes the readiness eventfd readable unless its state word says it was. The word is
/// a generation (upper bits) and a "written" bit (bit 0). The write comes first and the
/// bit is set only if no consumer drained in between (same generation), so a putter killed
/// in between leaves it clear (the next put writes again), and a consumer's drain between
/// the write and the set cannot leave it set with nothing written.
fn signal_events(state: &AtomicU32, events: BorrowedFd<'_>) {
    let seen = state.load(Ordering::SeqCst);
    if seen & 1 == 0 {
        shm::eventfd_signal(events);
        let _ = state.compare_exchange(seen, seen | 1, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Every queue handle made in this process (weakly), so that a forked child can let go of
/// the logs it claimed when it leaves with `_exit`, which drops none of its handles.
static HANDLES: Mutex<Vec<Weak<Shared>>> = Mutex::new(Vec::new());

/// Wraps a new `Shared` in an `Arc` and remembers it for [`release_logs_at_exit`].
pub(crate) fn registered(shared: Shared) -> Arc<Shared> {
    let shared = Arc::new(shared);
    let mut handles = HANDLES.lock().unwrap_or_else(|p| p.into_inner());
    handles.retain(|w| w.strong_count() > 0);
    handles.push(Arc::downgrade(&shared));
    shared
}

/// A forked child is leaving: let go of the logs it claimed, as dropping its handles
/// would have (freed now if drained, else by whoever drains them).
pub(crate) fn release_logs_at_exit() {
    let handles = HANDLES.lock().unwrap_or_else(|p| p.into_inner());
    for shared in handles.iter().filter_map(Weak::upgrade) {
        let mut producer = shared.producer.lock();
        // Closed too: a thread still putting on the way out must not claim a new log.
        producer.closed = true;
        shared.release_log(&mut producer);
    }
}

/// An item to put: its bytes, and for a lone string, which kind it is. Such a string is
/// stored without its CBOR header, the frame's length word saying which kind of string the
/// bytes are (a reader that wants the encoding puts the header back).
#[derive(Clone, Copy)]
struct Item<'a> {
    string: Option<StringKind>,
    body: &'a [u8],
}

impl<'a> Item<'a> {
    /// The item whose encoding is `head` then `body`. Every head is a lone string's CBOR
    /// header for exactly `body` (`Queue::with_encoded` passes one for such a value, from
    /// `cbor_string::encode`, and nothing else passes any), so its first byte says which
    /// kind of string.
    #[inline]
    fn new(head: &[u8], body: &'a [u8]) -> Item<'a> {
        debug_assert!(
            head.is_empty() || {
                let parsed = cbor_string::parse_header(head);
                parsed.is_some_and(|(_, used, len)| used == head.len() && len == body.len() as u64)
            }
        );
        let string = head.first().and_then(|first| match first >> 5 {
            2 => Some(StringKind::Bytes),
            3 => Some(StringKind::Text),
            _ => None,
        });
        Item { string, body }
    }
}

/// An item's payload where it lies in the ring, handed to the reader of
/// [`Shared::try_take`] before the item is claimed: its bytes may be changing under the read
/// (another consumer took the item and its memory was reused), in which case the claim fails
/// and whatever was made of them is dropped. Read front to back; a clone reads it again.
#[derive(Clone)]
pub(crate) struct Payload<'a> {
    shared: &'a Shared,
    log: usize,
    pos: u64,
    left: usize,
    /// The file offset of `pos` when the rest lies in one chunk (resolved once, when the
    /// header was read from there); `None`: looked up in the map piece by piece.
    at: Option<usize>,
    /// A lone string stored without its CBOR header: which kind (the payload is its bytes).
    string: Option<StringKind>,
}

impl Payload<'_> {
    /// Bytes not read yet (of a lone string stored without its header, its own bytes).
    pub(crate) fn len(&self) -> usize {
        self.left
    }

    /// The kind of lone string this is, if it was stored without its CBOR header: the
    /// payload is then the string's own bytes ([`copy_into`](Self::copy_into) puts the
    /// header back).
    pub(crate) fn string(&self) -> Option<StringKind> {
        self.string
    }

    /// Fills as much of `buf` as the payload has left, without reading it; returns how much.
    pub(crate) fn peek(&self, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.left);
        match self.at {
            Some(at) => self.shared.map.read(at, &mut buf[..n]),
            None => self.shared.read_into(self.log, self.pos, &mut buf[..n]),
        }
        n
    }

    /// Passes over the next `n` bytes (at most what is left).
    pub(crate) fn skip(&mut self, n: usize) {
        let n = n.min(self.left);
        self.pos = l::forward(self.pos, n as u64);
        self.left -= n;
        self.at = self.at.map(|at| at + n);
    }

    /// Replaces `out`'s contents with the rest of the payload's stored bytes (of a lone
    /// string stored without its header: the string's own bytes).
    #[inline]
    pub(crate) fn copy_bytes_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        self.append_to(out);
    }

    /// Replaces `out`'s contents with the rest of the payload; for a lone string stored
    /// without its header (and nothing of it read yet), its whole encoding: the header, then
    /// its bytes.
    #[inline]
    pub(crate) fn copy_into(&mut self, out: &mut Vec<u8>) {
        out.clear();
        if let Some(kind) = self.string.take() {
            Self::put_header_back(kind, self.left, out);
        }
        self.append_to(out);
    }

    /// Appends the rest of the stored bytes to `out`.
    #[inline]
    fn append_to(&mut self, out: &mut Vec<u8>) {
        match self.at {
            Some(at) => self.shared.map.read_append(at, self.left, out),
            None => self.shared.read_append(self.log, self.pos, self.left, out),
        }
        self.skip(self.left);
    }

    /// Appends the CBOR header of a `kind` string of `len` bytes to `out`. Out of line, so
    /// that the gets of items that need none stay short.
    #[inline(never)]
    fn put_header_back(kind: StringKind, len: usize, out: &mut Vec<u8>) {
        let (header, used) = cbor_string::header(kind, len as u64);
        out.reserve(used + len);
        out.extend_from_slice(&header[..used]);
    }
}

/// Numbers the handles of this process, for [`SEEN`].
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What this thread last saw of each log of one queue handle: a tail word, and the head word
/// it held right after this thread's last look or take. While the head still holds exactly
/// that word, no one else took from the log since, so every item up to that tail is still
/// there: the next take needs no look at the tail, whose cache line the producer writes on
/// every put (a consumer reading it on every get kept pulling it from the producer's CPU).
/// The head is read afresh on every take, so a stale entry is noticed, never trusted: once
/// others took past the remembered tail, the 24-bit counts alone could no longer tell
/// (they wrap), which is why the head must match exactly.
struct Seen {
    id: Cell<u64>,
    /// Bit `log`: the entries of `log` hold something seen.
    known: Cell<u128>,
    tails: [Cell<u64>; l::MAX_LOGS],
    heads: [Cell<u64>; l::MAX_LOGS],
}

thread_local! {
    // Cells, not a `RefCell`: no borrow to check and count on every take.
    static SEEN: Seen = const {
        Seen {
            id: Cell::new(0),
            known: Cell::new(0),
            tails: [const { Cell::new(0) }; l::MAX_LOGS],
            heads: [const { Cell::new(0) }; l::MAX_LOGS],
        }
    };
}

/// The tail this thread saw of `log`, if the head is still where it left it (`head_word`)
/// and items are left before that tail.
#[inline]
fn seen_tail(id: u64, log: usize, head_word: u64) -> Option<Mark> {
    SEEN.try_with(|seen| {
        if seen.id.get() != id
            || seen.known.get() & (1 << log) == 0
            || seen.heads[log].get() != head_word
        {
            return None;
        }
        let tail = Mark::unpack(seen.tails[log].get());
        let items = Mark::unpack(head_word).items_to(tail);
        (items > 0 && items < l::MAX_ITEMS_PER_LOG).then_some(tail)
    })
    .ok()
    .flatten()
}

/// Remembers the tail word just read of `log`, with the head word it was read against.
#[inline]
fn remember_tail(id: u64, log: usize, tail_word: u64, head_word: u64) {
    let _ = SEEN.try_with(|seen| {
        if seen.id.get() != id {
            seen.id.set(id);
            seen.known.set(0);
        }
        seen.known.set(seen.known.get() | 1 << log);
        seen.tails[log].set(tail_word);
        seen.heads[log].set(head_word);
    });
}

/// This thread took from `log`, leaving its head at `head_word`.
#[inline]
fn took_to(id: u64, log: usize, head_word: u64) {
    let _ = SEEN.try_with(|seen| {
        if seen.id.get() == id {
            seen.heads[log].set(head_word);
        }
    });
}

/// Time left until `deadline`; `None` for none.
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_given_back_only_to_their_own_claim() {
        let (ours, theirs) = (
            reservation_tag(claim_word(7, 1)),
            reservation_tag(claim_word(8, 2)),
        );
        assert!(ours != 0 && theirs != 0 && ours != theirs);
        let pending = AtomicU64::new(ours | 2);
        give_back_reservation(&pending, ours);
        assert_eq!(pending.load(Ordering::SeqCst), ours | 1);
        // `free_log` reset the count while a put still held a reservation...
        pending.store(0, Ordering::SeqCst);
        give_back_reservation(&pending, ours);
        assert_eq!(pending.load(Ordering::SeqCst), 0, "wrapped: full for good");
        // ...and another process claimed the log and reserved.
        pending.store(theirs | 1, Ordering::SeqCst);
        give_back_reservation(&pending, ours);
        assert_eq!(pending.load(Ordering::SeqCst), theirs | 1, "took theirs");
    }

    #[test]
    fn a_scribbled_frame_header_discards_its_log_once_and_the_queue_goes_on() -> Result<()> {
        let shared = Shared::create(0, false)?;
        let put = |item: &[u8]| {
            shared.add_unfinished();
            shared.put(b"", item, None)
        };
        for item in [&b"a"[..], b"b", b"c"] {
            put(item)?;
        }
        // One taken: this thread now remembers the tail after "c"; the puts that follow
        // leave that remembered tail behind the real one.
        assert_eq!(shared.try_take(&mut |p| p.len())?, Some(1));
        shared.task_done()?;
        for item in [&b"d"[..], b"e", b"f", b"g", b"h"] {
            put(item)?;
        }
        let log = shared.producer.lock().log.expect("a log");
        let head = Mark::unpack(shared.head(log).load(Ordering::Acquire));
        // Shared memory written by something that is not a producer: the length and check
        // word of "b".
        shared.write_at(log, head.pos, &[0xff; 8]);
        assert_eq!(shared.len(), 7);
        let error = shared
            .try_take(&mut |p| p.len())
            .expect_err("a corrupt frame taken");
        assert_eq!(error.kind(), ErrorKind::BadMessageLength, "{error}");
        assert!(error.to_string().contains("7 items"), "{error}");
        assert_eq!(shared.len(), 0, "what the log held is discarded");
        assert!(
            shared.join(Some(Instant::now())),
            "discarded items count as done"
        );
        // A frame being written past the tail, as a producer does before it publishes:
        // not there yet for anyone, including the thread that discarded.
        let tail = Mark::unpack(shared.tail(log).load(Ordering::Acquire));
        let unpublished = [
            &1u32.to_le_bytes()[..],
            &l::check_word(1, tail.pos, 0).to_le_bytes(),
        ];
        shared.write_at(log, tail.pos, &unpublished.concat());
        assert!(
            shared.try_take(&mut |p| p.len())?.is_none(),
            "reported once, and nothing taken past the tail"
        );
        assert_eq!(shared.len(), 0);
        put(b"four")?;
        let mut got = Vec::new();
        assert!(shared.get(&mut got, Some(Instant::now() + Duration::from_secs(10)))?);
        assert_eq!(got, b"four", "the producer goes on from the tail");
        shared.task_done()?;
        shared.shutdown(true);
        Ok(())
    }

    /// A queue whose log this thread's producer has claimed (one item put and taken).
    fn with_claimed_log() -> Result<(Shared, usize)> {
        let shared = Shared::create(0, false)?;
        shared.put(b"", b"claim", None)?;
        assert_eq!(shared.try_take(&mut |p| p.len())?, Some(5));
        let log = shared.producer.lock().log.expect("a log");
        Ok((shared, log))
    }

    #[test]
    fn one_getter_spins_for_a_big_write_and_only_while_it_is_recent() -> Result<()> {
        let (shared, log) = with_claimed_log()?;
        assert!(!shared.spin_for_write(&mut 0), "nothing announced");
        // The three looks must fall within the patience: a thread preempted in between
        // (a busy CI machine) tries again with a new note.
        let now = (0..1000)
            .find_map(|_| {
                let now = sys::monotonic_ns() & !1;
                shared.writing(log).store(now, Ordering::Relaxed);
                let (mut first, mut second) = (0, 0);
                let looks = [
                    shared.spin_for_write(&mut first),
                    shared.spin_for_write(&mut first),
                    shared.spin_for_write(&mut second),
                ];
                (sys::monotonic_ns() - now < WRITE_PATIENCE_NS / 2).then(|| {
                    assert_eq!(
                        looks,
                        [true, true, false],
                        "the first getter spins, goes on spinning; the second sleeps"
                    );
                    now
                })
            })
            .expect("three looks within half a millisecond, in 1 000 tries");
        let (mut first, mut second) = (0, 0);
        for (note, what) in [
            (now - 2 * WRITE_PATIENCE_NS, "begun too long ago"),
            (now + 10_000_000_000, "begun in the future"),
        ] {
            shared.writing(log).store(note, Ordering::Relaxed);
            assert!(!shared.spin_for_write(&mut first), "{what}");
            assert!(!shared.spin_for_write(&mut second), "{what}");
        }
        Ok(())
    }

    #[test]
    fn getters_spin_less_after_long_waits_and_more_after_short_ones() -> Result<()> {
        let shared = Shared::create(0, false)?;
        let spins = || shared.get_spins.load(Ordering::Relaxed);
        assert_eq!(spins(), SPINS);
        let long_ago = Instant::now()
            .checked_sub(2 * LONG_WAIT)
            .expect("a clock 200 us past its start");
        let mut halvings = 0;
        while spins() > MIN_GET_SPINS {
            shared.adapt_spins(spins(), Some(long_ago));
            halvings += 1;
        }
        assert_eq!(halvings, 5, "200, 100, 50, 25, 12, then the floor of 8");
        shared.adapt_spins(spins(), Some(long_ago));
        assert_eq!(spins(), MIN_GET_SPINS, "never below");
        // A sleep that ends now (the instant is in the future: no preemption makes it long).
        let just_now = Instant::now() + Duration::from_secs(60);
        shared.adapt_spins(spins(), Some(just_now));
        assert_eq!(spins(), 16, "a short sleep doubles");
        shared.adapt_spins(spins(), None);
        assert_eq!(spins(), 32, "spinning into the item doubles");
        for _ in 0..10 {
            shared.adapt_spins(spins(), None);
        }
        assert_eq!(spins(), SPINS, "never above");
        Ok(())
    }

    #[test]
    fn a_get_that_slept_long_halves_the_spins() -> Result<()> {
        let shared = Arc::new(Shared::create(0, false)?);
        // A try: another thread puts 20 ms after the get began waiting. A get preempted
        // through its spins for those 20 ms never sleeps, and leaves the spins alone: so
        // a few tries.
        let halved = (0..5).any(|_| {
            let putter = Arc::clone(&shared);
            let put = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                putter.put(b"", b"late", None)
            });
            let mut got = Vec::new();
            let taken = shared.get(&mut got, Some(Instant::now() + Duration::from_secs(10)));
            put.join().expect("the putter").expect("the put");
            assert!(taken.expect("the get"), "an item within 10 s");
            shared.get_spins.load(Ordering::Relaxed) == SPINS / 2
        });
        assert!(
            halved,
            "five gets that waited 20 ms left the spins at {SPINS}"
        );
        Ok(())
    }

    #[test]
    fn a_big_put_leaves_no_announcement_behind() -> Result<()> {
        let (shared, log) = with_claimed_log()?;
        let big = vec![7u8; 4 * l::CHUNK as usize];
        shared.put(b"", &big, None)?;
        assert_eq!(shared.writing(log).load(Ordering::Relaxed), 0);
        let mut got = Vec::new();
        assert!(shared.get(&mut got, Some(Instant::now()))?);
        assert!(got == big);
        Ok(())
    }

    #[test]
    fn an_announcement_left_by_a_killed_producer_costs_a_getter_at_most_its_patience() -> Result<()>
    {
        let (shared, log) = with_claimed_log()?;
        // A producer killed while writing a big frame: the announcement stays.
        shared
            .writing(log)
            .store(sys::monotonic_ns() & !1, Ordering::Relaxed);
        let (start, wall) = (sys::thread_cpu(), Instant::now());
        let mut got = Vec::new();
        let wait = Duration::from_millis(300);
        assert!(!shared.get(&mut got, Some(Instant::now() + wait))?);
        assert!(wall.elapsed() >= wait);
        // Spinning to the deadline would take the whole wait's CPU time (or what share
        // of it a busy machine gives this thread: a third still fails the bound).
        let spent = sys::thread_cpu() - start;
        assert!(
            spent < Duration::from_millis(40),
            "spun {spent:?} of a {wait:?} wait for a write that never ends"
        );
        Ok(())
    }

    #[test]
    fn freed_chunks_are_reused_oldest_first() -> Result<()> {
        let (shared, _) = with_claimed_log()?;
        let chunks = |shared: &Shared| -> Vec<u32> {
            let producer = shared.producer.lock();
            producer.in_use.iter().map(|&(_, chunk)| chunk).collect()
        };
        let item = vec![1u8; l::CHUNK as usize - 64];
        for _ in 0..4 {
            shared.put(b"", &item, None)?;
        }
        while shared.try_take(&mut |p| p.len())?.is_some() {}
        let before = chunks(&shared);
        assert!(before.len() >= 4, "{before:?}");
        // The next put needs new chunks, and frees every one wholly behind the head first
        // (all but the last), oldest first.
        shared.put(b"", &vec![2u8; 2 * l::CHUNK as usize], None)?;
        let after = chunks(&shared);
        assert_eq!(
            after,
            [before[before.len() - 1], before[0], before[1]],
            "chunks in use before: {before:?}"
        );
        Ok(())
    }

    #[test]
    fn claims_and_freeing_words_never_meet() {
        let pid = 4_194_303u64; // the largest pid Linux allows
        for claim in [0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX] {
            let word = claim_word(pid, claim);
            assert!(word != 0 && !is_freeing(word), "claim {claim}");
            assert_eq!(word as u32, pid as u32, "the pid stays in the low half");
        }
    }
}
