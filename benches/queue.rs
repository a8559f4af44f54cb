//! `Queue` next to a plain shared-memory ring (the floor) and next to CPython, in one run.
//!
//! Three implementations move the same items between processes, interleaved (floor, ours,
//! python, repeat) so machine noise hits them alike; each figure is the median of the
//! repetitions:
//!
//! - **floor**: a plain ring in shared memory (`bench_support::SharedRegion`) with **no crash
//!   safety**: fixed-size slots, Lamport's single-producer single-consumer ring (head and tail
//!   counters) for the 1 -> 1 cases, Vyukov's bounded multi-producer multi-consumer ring (a
//!   sequence number per slot) for 4 -> 4. Both spin, then sleep on a futex word when empty
//!   or full, as ours does. Items are raw records copied in and out of a slot.
//! - **ours**: `multiproc::Queue<serde_bytes::ByteBuf>` (unbounded, as `Queue::new()`):
//!   `put(&item)` and `get()`, so each item is CBOR-encoded and decoded; in the `_bytes`
//!   cases `put_bytes(&item)` and `get_bytes_into(&mut buf)`, the raw items themselves.
//! - **python**: CPython's `multiprocessing.Queue` (fork context) running
//!   `benches/python/queue.py`, driven over its stdin so that its runs interleave with ours.
//!   Without `python3` the python fields are `null` (a loud message says so;
//!   `MULTIPROC_REQUIRE_PYTHON=1` makes it an error).
//!
//! | case | what | unit |
//! |---|---|---|
//! | `q_1x1_64` | 64-byte items, 1 producer process -> 1 consumer process | msg/s |
//! | `q_4x4_64` | 64-byte items, 4 producer processes -> 4 consumer processes | msg/s |
//! | `q_1x1_1m` | 1 MiB items, 1 -> 1 | MB/s (10^6 bytes of items per second) |
//! | `q_1x1_64_bytes`, `q_4x4_64_bytes`, `q_1x1_1m_bytes` | the same with ours moving raw bytes; the floor and CPython do the same work as in the case without `_bytes` | as above |
//! | `qsize_100k` | `qsize()` with 100 000 items queued; the floor is the plain ring's size, `tail - head` | us per call |
//! | `q_idle_16` | 16 consumer processes blocked in `get` on an empty queue, 1 producer process putting a 64-byte item and sleeping 200 us, again and again: the CPU time of all consumers per item (each measures its own over the round); the floor's consumers sleep on a futex semaphore (one wake per item, no spinning) | us of CPU per item |
//!
//! Every item carries its index in its first 8 bytes (little-endian); a producer's last item
//! has index `u64::MAX`, and a consumer stops at the first such item it takes, so that each
//! consumer takes exactly one (a producer's items stay in order in all three queues). Every
//! consumer reports how many items it took and the sum of their indices, and the parent
//! checks both against what was put: a queue that loses or repeats items fails the bench
//! rather than look fast.
//!
//! All processes are forked per repetition (`Process::fork`; Python forks its own), run an
//! untimed warm-up round (a tenth of the items), then the timed round. Each round starts at
//! a barrier: every child says "ready" on its own control socket, then the parent starts the
//! clock and says "go" to all; the clock stops when the parent holds every consumer's report.
//!
//! `ratio` is ours against the floor and `vs_python` ours against CPython, both oriented so
//! that above 1 means ours is better.
//!
//! Run: `cargo bench --bench queue` (80-100 s here) or `BENCH_QUICK=1 cargo bench --bench
//! queue` (about 10 s here). Extra arguments are case-name filters; `BENCH_VERBOSE=1` also
//! prints each repetition's floor and ours figures to stderr (the machine's phases show
//! there: a floor or ours several times slower for a few repetitions in a row).
//! `docs/benchmarks.md` has the details and a recorded run.

use std::error::Error;
use std::hint::black_box;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use multiproc::bench_support::SharedRegion;
use multiproc::{Process, Queue};
use rustix::net::sockopt::{Timeout, set_socket_timeout};
use serde_bytes::ByteBuf;

mod common;
use common::{
    Python, Row, RunOptions, Unit, children_left, median, print_json, print_rows, print_totals,
    read_exact, socketpair, write_all,
};

type Res<T> = Result<T, Box<dyn Error>>;

const SMALL: usize = 64;
const MIB: usize = 1 << 20;

/// The index of a producer's last item of a round.
const STOP: u64 = u64::MAX;

/// How long the parent waits for a child's "ready" or report before calling the run hung
/// (a lost item leaves a consumer waiting forever).
const HANG: Duration = Duration::from_secs(120);

/// Spins of a floor putter or getter before it sleeps: ours' figure (`src/queue/shared.rs`;
/// ours' getters spin up to this many times, fewer after long waits).
const SPINS: u32 = 200;

#[derive(Clone, Copy)]
enum Kind {
    /// `producers` processes put `item`-byte items, `consumers` processes take them.
    Flow {
        producers: usize,
        consumers: usize,
        item: usize,
        /// Ours moves raw bytes (`put_bytes` / `get_bytes_into`) instead of `ByteBuf`s.
        bytes: bool,
    },
    /// `qsize()` with `items` 64-byte items queued.
    Qsize { items: usize },
    /// `consumers` processes blocked on an empty queue, one producer putting an item every
    /// [`IDLE_GAP`]: the consumers' CPU time per item.
    Idle { consumers: usize },
}

/// The producer's pause after each item of an idle case.
const IDLE_GAP: Duration = Duration::from_micros(200);

struct Case {
    name: &'static str,
    /// The CPython driver's case: the same work (it has no raw-bytes variant).
    py_name: &'static str,
    kind: Kind,
    unit: Unit,
    /// Untimed items (or calls) before the timed ones, for floor and ours.
    warmup: usize,
    n: usize,
    /// The same for CPython, which is far slower per item.
    py_warmup: usize,
    py_n: usize,
    /// Minimum `ratio` and `vs_python`, from the issue; `None`: no target.
    target_ratio: Option<f64>,
    target_vs_python: Option<f64>,
}

/// A flow case's shape: its name, its raw-bytes twin's name, producer and consumer
/// processes, item size, unit, items for ours and the floor, items for CPython, and the
/// vs_python target.
type FlowShape = (
    &'static str,
    &'static str,
    usize,
    usize,
    usize,
    Unit,
    usize,
    usize,
    Option<f64>,
);

fn cases(quick: bool) -> Vec<Case> {
    // Sized so that ours' and CPython's runs take ~0.5-2 s here (the floor's far less);
    // quick mode runs a fifth of that, except for ours' and the floor's 64-byte items: half,
    // since a fifth is a floor run of a few milliseconds.
    let scale = |n: usize| if quick { n / 5 } else { n };
    // Each flow shape twice: ours moving `ByteBuf`s, then raw bytes (the `_bytes` name);
    // the floor and CPython do the same work in both.
    #[rustfmt::skip]
    let shapes: [FlowShape; 3] = [
        ("q_1x1_64", "q_1x1_64_bytes", 1, 1, SMALL, Unit::MsgPerSec, 2_000_000, 100_000, Some(5.0)),
        ("q_4x4_64", "q_4x4_64_bytes", 4, 4, SMALL, Unit::MsgPerSec, 2_000_000, 100_000, Some(5.0)),
        ("q_1x1_1m", "q_1x1_1m_bytes", 1, 1, MIB, Unit::MBPerSec, 1_000, 500, None),
    ];
    let flow = |bytes: bool, shape: &FlowShape| {
        let (name, bytes_name, producers, consumers, item, unit, n, py_n, vs_python) = *shape;
        let n = match (quick, item) {
            (true, SMALL) => n / 2,
            _ => scale(n),
        };
        Case {
            name: if bytes { bytes_name } else { name },
            py_name: name,
            kind: Kind::Flow {
                producers,
                consumers,
                item,
                bytes,
            },
            unit,
            warmup: n / 10,
            n,
            py_warmup: scale(py_n / 10),
            py_n: scale(py_n),
            target_ratio: Some(0.7),
            target_vs_python: vs_python,
        }
    };
    let flows = [false, true]
        .into_iter()
        .flat_map(|bytes| shapes.iter().map(move |shape| flow(bytes, shape)));
    flows
        .chain([Case {
            name: "qsize_100k",
            py_name: "qsize_100k",
            kind: Kind::Qsize { items: 100_000 },
            unit: Unit::Us,
            // Calls of a few nanoseconds: the counts stay in quick mode.
            warmup: 1_000_000,
            n: 10_000_000,
            py_warmup: scale(10_000),
            py_n: scale(100_000),
            target_ratio: None,
            target_vs_python: None,
        }])
        .chain([Case {
            name: "q_idle_16",
            py_name: "q_idle_16",
            kind: Kind::Idle { consumers: 16 },
            unit: Unit::Us,
            // Items come every ~250 us: 1 000 take a quarter of a second.
            warmup: scale(100).max(50),
            n: scale(1_000).max(300),
            py_warmup: scale(100).max(50),
            py_n: scale(1_000).max(300),
            target_ratio: None,
            target_vs_python: None,
        }])
        .collect()
}

// ---------------------------------------------------------------------------------------
// Items: `len` bytes, the index in the first 8.

fn item(len: usize) -> Vec<u8> {
    vec![b'x'; len]
}

fn set_index(item: &mut [u8], index: u64) {
    item[..8].copy_from_slice(&index.to_le_bytes());
}

fn index_of(item: &[u8]) -> u64 {
    u64::from_le_bytes(item[..8].try_into().expect("items have 8 bytes and more"))
}

/// The producing end of an implementation, in one producer process. Errors panic: the child
/// exits with 1 and the parent reports it.
trait Put: Send + 'static {
    fn put(&mut self, index: u64);
}

/// The consuming end: takes one item, returns its length and index.
trait Get: Send + 'static {
    fn get(&mut self) -> (usize, u64);
}

// ---------------------------------------------------------------------------------------
// The floor: plain rings in shared memory, no crash safety. Layout of a ring's region:

/// SPSC: the tail (items ever put); MPMC: the enqueue position.
const R_PUT: usize = 0;
/// SPSC: the head (items ever taken); MPMC: the dequeue position.
const R_GET: usize = 64;
/// Bumped to wake getters sleeping on an empty ring; the flag says someone sleeps.
const R_ITEMS_SEQ: usize = 128;
const R_GET_FLAG: usize = 132;
/// Bumped to wake putters sleeping on a full ring.
const R_SPACE_SEQ: usize = 192;
const R_PUT_FLAG: usize = 196;
/// The slots.
const R_SLOTS: usize = 4096;

/// Spins until `ready()`, then sleeps on the futex word at `seq` until woken and `ready()`.
/// The sleeper raises the flag at `flag` before its last look; see [`wake`].
fn wait_until(region: &SharedRegion, seq: usize, flag: usize, mut ready: impl FnMut() -> bool) {
    let mut spins = 0;
    loop {
        if ready() {
            return;
        }
        spins += 1;
        if spins < SPINS {
            std::hint::spin_loop();
            continue;
        }
        let seen = region.u32_at(seq).load(Ordering::SeqCst);
        region.u32_at(flag).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if ready() {
            return;
        }
        SharedRegion::futex_wait(region.u32_at(seq), seen, None);
    }
}

/// After a put (or get): wakes the getters (putters) if one said it sleeps. The fence
/// orders the caller's publishing store before the flag's load, against the sleeper's flag
/// store before its last look: one of the two sees the other.
fn wake(region: &SharedRegion, seq: usize, flag: usize) {
    fence(Ordering::SeqCst);
    let raised = region.u32_at(flag);
    if raised.load(Ordering::Relaxed) != 0 && raised.swap(0, Ordering::SeqCst) != 0 {
        region.u32_at(seq).fetch_add(1, Ordering::SeqCst);
        SharedRegion::futex_wake(region.u32_at(seq));
    }
}

/// Lamport's single-producer single-consumer ring: `slots` slots of `slot` bytes; the
/// producer owns the tail, the consumer the head, each caches the other's.
#[derive(Clone)]
struct Spsc {
    region: Arc<SharedRegion>,
    slots: u64,
    slot: usize,
}

impl Spsc {
    fn new(slots: u64, slot: usize) -> Res<Spsc> {
        let region = SharedRegion::new(R_SLOTS + slots as usize * slot)?;
        Ok(Spsc {
            region: Arc::new(region),
            slots,
            slot,
        })
    }

    fn offset(&self, pos: u64) -> usize {
        R_SLOTS + (pos % self.slots) as usize * self.slot
    }

    fn len(&self) -> u64 {
        let tail = self.region.u64_at(R_PUT).load(Ordering::Acquire);
        let head = self.region.u64_at(R_GET).load(Ordering::Acquire);
        tail.wrapping_sub(head)
    }

    fn putter(&self) -> SpscPut {
        SpscPut {
            ring: self.clone(),
            tail: 0,
            head: 0,
            item: item(self.slot),
        }
    }

    fn getter(&self) -> SpscGet {
        SpscGet {
            ring: self.clone(),
            head: 0,
            tail: 0,
            buf: item(self.slot),
        }
    }
}

struct SpscPut {
    ring: Spsc,
    tail: u64,
    /// The head as last read.
    head: u64,
    item: Vec<u8>,
}

impl Put for SpscPut {
    fn put(&mut self, index: u64) {
        set_index(&mut self.item, index);
        let (ring, tail, head) = (&self.ring, self.tail, &mut self.head);
        wait_until(&ring.region, R_SPACE_SEQ, R_PUT_FLAG, || {
            if tail - *head < ring.slots {
                return true;
            }
            *head = ring.region.u64_at(R_GET).load(Ordering::Acquire);
            tail - *head < ring.slots
        });
        ring.region.write(ring.offset(tail), &self.item);
        ring.region.u64_at(R_PUT).store(tail + 1, Ordering::Release);
        self.tail = tail + 1;
        wake(&ring.region, R_ITEMS_SEQ, R_GET_FLAG);
    }
}

struct SpscGet {
    ring: Spsc,
    head: u64,
    /// The tail as last read.
    tail: u64,
    buf: Vec<u8>,
}

impl Get for SpscGet {
    fn get(&mut self) -> (usize, u64) {
        let (ring, head, tail) = (&self.ring, self.head, &mut self.tail);
        wait_until(&ring.region, R_ITEMS_SEQ, R_GET_FLAG, || {
            if *tail > head {
                return true;
            }
            *tail = ring.region.u64_at(R_PUT).load(Ordering::Acquire);
            *tail > head
        });
        ring.region.read(ring.offset(head), &mut self.buf);
        ring.region.u64_at(R_GET).store(head + 1, Ordering::Release);
        self.head = head + 1;
        wake(&ring.region, R_SPACE_SEQ, R_PUT_FLAG);
        (self.buf.len(), index_of(&self.buf))
    }
}

/// Vyukov's bounded multi-producer multi-consumer ring: each cell holds a sequence number
/// (8 bytes) and then the item; cells are `stride` bytes, whole cache lines.
/// [1024cores.net: "Bounded MPMC queue"]
#[derive(Clone)]
struct Mpmc {
    region: Arc<SharedRegion>,
    cells: u64,
    stride: usize,
    item: usize,
}

impl Mpmc {
    fn new(cells: u64, item: usize) -> Res<Mpmc> {
        let stride = (8 + item).next_multiple_of(64);
        let region = SharedRegion::new(R_SLOTS + cells as usize * stride)?;
        let ring = Mpmc {
            region: Arc::new(region),
            cells,
            stride,
            item,
        };
        for pos in 0..cells {
            ring.seq(pos).store(pos, Ordering::Relaxed);
        }
        Ok(ring)
    }

    fn cell(&self, pos: u64) -> usize {
        R_SLOTS + (pos % self.cells) as usize * self.stride
    }

    fn seq(&self, pos: u64) -> &std::sync::atomic::AtomicU64 {
        self.region.u64_at(self.cell(pos))
    }

    /// Claims the cell at the enqueue position and fills it; false if the ring is full.
    fn try_put(&self, item: &[u8]) -> bool {
        let at = self.region.u64_at(R_PUT);
        let mut pos = at.load(Ordering::Relaxed);
        loop {
            let seq = self.seq(pos).load(Ordering::Acquire);
            match (seq.wrapping_sub(pos) as i64).signum() {
                0 => match at.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => pos = now,
                },
                -1 => return false,
                _ => pos = at.load(Ordering::Relaxed),
            }
        }
        self.region.write(self.cell(pos) + 8, item);
        self.seq(pos).store(pos + 1, Ordering::Release);
        true
    }

    /// Claims the cell at the dequeue position and empties it; false if the ring is empty.
    fn try_get(&self, buf: &mut [u8]) -> bool {
        let at = self.region.u64_at(R_GET);
        let mut pos = at.load(Ordering::Relaxed);
        loop {
            let seq = self.seq(pos).load(Ordering::Acquire);
            match (seq.wrapping_sub(pos + 1) as i64).signum() {
                0 => match at.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => pos = now,
                },
                -1 => return false,
                _ => pos = at.load(Ordering::Relaxed),
            }
        }
        self.region.read(self.cell(pos) + 8, buf);
        self.seq(pos).store(pos + self.cells, Ordering::Release);
        true
    }
}

struct MpmcPut {
    ring: Mpmc,
    item: Vec<u8>,
}

impl Put for MpmcPut {
    fn put(&mut self, index: u64) {
        set_index(&mut self.item, index);
        let (ring, item) = (&self.ring, &self.item);
        wait_until(&ring.region, R_SPACE_SEQ, R_PUT_FLAG, || ring.try_put(item));
        wake(&ring.region, R_ITEMS_SEQ, R_GET_FLAG);
    }
}

struct MpmcGet {
    ring: Mpmc,
    buf: Vec<u8>,
}

impl Get for MpmcGet {
    fn get(&mut self) -> (usize, u64) {
        let (ring, buf) = (&self.ring, &mut self.buf);
        wait_until(&ring.region, R_ITEMS_SEQ, R_GET_FLAG, || ring.try_get(buf));
        wake(&ring.region, R_SPACE_SEQ, R_PUT_FLAG);
        (buf.len(), index_of(buf))
    }
}

/// The idle case's floor: a semaphore word counting the items in an [`Mpmc`] ring. A put
/// stores its item, counts it and wakes one sleeper; a get takes a count (sleeping on the
/// word while it is 0, no spinning) and then the item. One wake call per item, and only
/// the consumer that will take it wakes.
#[derive(Clone)]
struct Semaphored {
    ring: Mpmc,
    item: Vec<u8>,
}

/// The semaphore word, in the ring's header page.
const R_SEM: usize = 256;

impl Put for Semaphored {
    fn put(&mut self, index: u64) {
        set_index(&mut self.item, index);
        while !self.ring.try_put(&self.item) {
            std::hint::spin_loop(); // never full: items come one at a time
        }
        let sem = self.ring.region.u32_at(R_SEM);
        sem.fetch_add(1, Ordering::SeqCst);
        SharedRegion::futex_wake_one(sem);
    }
}

impl Get for Semaphored {
    fn get(&mut self) -> (usize, u64) {
        let sem = self.ring.region.u32_at(R_SEM);
        loop {
            let count = sem.load(Ordering::SeqCst);
            if count == 0 {
                SharedRegion::futex_wait(sem, 0, None);
            } else if sem
                .compare_exchange(count, count - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                break;
            }
        }
        // Counted after it was stored: it is there.
        while !self.ring.try_get(&mut self.item) {
            std::hint::spin_loop();
        }
        (self.item.len(), index_of(&self.item))
    }
}

/// The ends of one implementation: one per producer process, one per consumer process.
type Ends<P, G> = (Vec<P>, Vec<G>);

/// The floor's ends for `producers` x `consumers` of `item`-byte items.
fn floor_ends(
    producers: usize,
    consumers: usize,
    item: usize,
) -> Res<Ends<Box<dyn Put>, Box<dyn Get>>> {
    if producers == 1 && consumers == 1 {
        // 8192 slots of 64 bytes (512 KiB), or 8 of 1 MiB.
        let slots = if item >= MIB { 8 } else { 8192 };
        let ring = Spsc::new(slots, item)?;
        return Ok((vec![Box::new(ring.putter())], vec![Box::new(ring.getter())]));
    }
    let ring = Mpmc::new(8192, item)?;
    let puts = (0..producers)
        .map(|_| {
            Box::new(MpmcPut {
                ring: ring.clone(),
                item: crate::item(ring.item),
            }) as Box<dyn Put>
        })
        .collect();
    let gets = (0..consumers)
        .map(|_| {
            Box::new(MpmcGet {
                ring: ring.clone(),
                buf: crate::item(ring.item),
            }) as Box<dyn Get>
        })
        .collect();
    Ok((puts, gets))
}

impl Put for Box<dyn Put> {
    fn put(&mut self, index: u64) {
        (**self).put(index);
    }
}

impl Get for Box<dyn Get> {
    fn get(&mut self) -> (usize, u64) {
        (**self).get()
    }
}

// ---------------------------------------------------------------------------------------
// Ours: `Queue<ByteBuf>`, as a user would write it.

struct OursPut {
    queue: Queue<ByteBuf>,
    item: ByteBuf,
    bytes: bool,
}

impl Put for OursPut {
    fn put(&mut self, index: u64) {
        set_index(&mut self.item, index);
        if self.bytes {
            self.queue.put_bytes(&self.item).expect("Queue::put_bytes");
        } else {
            self.queue.put(&self.item).expect("Queue::put");
        }
    }
}

struct OursGet {
    queue: Queue<ByteBuf>,
    /// For raw bytes: the buffer `get_bytes_into` reuses.
    buf: Option<Vec<u8>>,
}

impl Get for OursGet {
    fn get(&mut self) -> (usize, u64) {
        match &mut self.buf {
            Some(buf) => {
                let len = self
                    .queue
                    .get_bytes_into(buf)
                    .expect("Queue::get_bytes_into");
                (len, index_of(buf))
            }
            None => {
                let got = self.queue.get().expect("Queue::get");
                (got.len(), index_of(&got))
            }
        }
    }
}

fn ours_ends(
    producers: usize,
    consumers: usize,
    item: usize,
    bytes: bool,
) -> Res<Ends<OursPut, OursGet>> {
    let queue: Queue<ByteBuf> = Queue::new()?;
    let puts = (0..producers)
        .map(|_| OursPut {
            queue: queue.clone(),
            item: ByteBuf::from(crate::item(item)),
            bytes,
        })
        .collect();
    let gets = (0..consumers)
        .map(|_| OursGet {
            queue: queue.clone(),
            buf: bytes.then(Vec::new),
        })
        .collect();
    Ok((puts, gets))
}

// ---------------------------------------------------------------------------------------
// Process plumbing shared by floor and ours.

/// A child's side of a round's barrier: "ready", then wait for "go".
fn ready_then_go(ctl: BorrowedFd<'_>) {
    write_all(ctl, b"r").expect("ready");
    let mut go = [0u8];
    read_exact(ctl, &mut go).expect("go");
}

/// Reads exactly `buf.len()` bytes from a child, naming the child and a hang in errors.
fn from_child(ctl: BorrowedFd<'_>, buf: &mut [u8], what: &str) -> Res<()> {
    read_exact(ctl, buf).map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            format!("{what}: nothing for {HANG:?}, hung (an item lost?)").into()
        }
        io::ErrorKind::UnexpectedEof => format!("{what}: child died (see its stderr)").into(),
        _ => Box::<dyn Error>::from(format!("{what}: {e}")),
    })
}

fn fork_child(body: impl FnOnce() + Send + 'static) -> Res<Process> {
    let mut child = Process::fork(body);
    // Killed with the bench (PR_SET_PDEATHSIG), so that an error in the parent leaves no
    // child waiting on the queue forever.
    child.set_daemon(true)?;
    child.start()?;
    Ok(child)
}

/// A consumer's round: takes items until a stop item, checking each one's length;
/// returns how many it took and the sum of their indices.
fn take_until_stop(get: &mut impl Get, item: usize) -> (u64, u64) {
    let (mut count, mut sum) = (0u64, 0u64);
    loop {
        let (len, index) = get.get();
        assert_eq!(len, item, "item length");
        if index == STOP {
            return (count, sum);
        }
        count += 1;
        sum = sum.wrapping_add(index);
    }
}

/// Joins a run's children: an error if one exited other than 0.
fn join_all(children: Vec<Process>) -> Res<()> {
    for child in children {
        match child.join()? {
            0 => {}
            code => return Err(format!("queue bench child exited with {code}").into()),
        }
    }
    Ok(())
}

/// Runs `puts.len()` producer and `gets.len()` consumer processes for two rounds of
/// `per_producer[r]` items per producer; returns the seconds of the second round.
fn flow<P: Put, G: Get>(
    puts: Vec<P>,
    gets: Vec<G>,
    item: usize,
    per_producer: [usize; 2],
) -> Res<f64> {
    let producers = puts.len();
    let (mut put_ctls, mut get_ctls, mut children) = (Vec::new(), Vec::new(), Vec::new());
    // Consumers first: they are waiting by the time producers start.
    for mut get in gets {
        let (ctl, ctl_child) = socketpair()?;
        set_socket_timeout(&ctl, Timeout::Recv, Some(HANG))?;
        children.push(fork_child(move || {
            for _ in per_producer {
                ready_then_go(ctl_child.as_fd());
                let (count, sum) = take_until_stop(&mut get, item);
                let mut report = [0u8; 16];
                report[..8].copy_from_slice(&count.to_le_bytes());
                report[8..].copy_from_slice(&sum.to_le_bytes());
                write_all(ctl_child.as_fd(), &report).expect("report");
            }
        })?);
        get_ctls.push(ctl);
    }
    for (p, mut put) in puts.into_iter().enumerate() {
        let (ctl, ctl_child) = socketpair()?;
        set_socket_timeout(&ctl, Timeout::Recv, Some(HANG))?;
        children.push(fork_child(move || {
            for per in per_producer {
                ready_then_go(ctl_child.as_fd());
                let base = (p * per) as u64;
                for i in 0..per as u64 {
                    put.put(base + i);
                }
                put.put(STOP);
            }
        })?);
        put_ctls.push(ctl);
    }
    let mut secs = 0.0;
    for per in per_producer {
        for ctl in get_ctls.iter().chain(&put_ctls) {
            let mut ready = [0u8];
            from_child(ctl.as_fd(), &mut ready, "ready")?;
        }
        let start = Instant::now();
        for ctl in get_ctls.iter().chain(&put_ctls) {
            write_all(ctl.as_fd(), b"g")?;
        }
        let (mut count, mut sum) = (0u64, 0u64);
        for ctl in &get_ctls {
            let mut report = [0u8; 16];
            from_child(ctl.as_fd(), &mut report, "consumer report")?;
            count += index_of(&report);
            sum = sum.wrapping_add(index_of(&report[8..]));
        }
        secs = start.elapsed().as_secs_f64();
        let total = (producers * per) as u64;
        let want = (0..total).fold(0u64, |s, i| s.wrapping_add(i));
        if count != total || sum != want {
            return Err(format!(
                "consumers took {count} items (index sum {sum}), {total} were put (sum {want})"
            )
            .into());
        }
    }
    join_all(children)?;
    Ok(secs)
}

fn flow_floor(producers: usize, consumers: usize, item: usize, per: [usize; 2]) -> Res<f64> {
    let (puts, gets) = floor_ends(producers, consumers, item)?;
    flow(puts, gets, item, per)
}

fn flow_ours(
    producers: usize,
    consumers: usize,
    item: usize,
    bytes: bool,
    per: [usize; 2],
) -> Res<f64> {
    let (puts, gets) = ours_ends(producers, consumers, item, bytes)?;
    flow(puts, gets, item, per)
}

/// Runs one producer putting an item every [`IDLE_GAP`] and `gets.len()` consumer
/// processes for two rounds of `per[r]` items; returns the microseconds of CPU the
/// consumers spent per item in the second round, all together. Each consumer measures its
/// own (`CLOCK_PROCESS_CPUTIME_ID`) from "go" to the stop item it takes.
fn idle<P: Put, G: Get>(mut put: P, gets: Vec<G>, per: [usize; 2]) -> Res<f64> {
    let consumers = gets.len();
    let cpu_now = || {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
    };
    let (mut get_ctls, mut children) = (Vec::new(), Vec::new());
    for mut get in gets {
        let (ctl, ctl_child) = socketpair()?;
        set_socket_timeout(&ctl, Timeout::Recv, Some(HANG))?;
        children.push(fork_child(move || {
            for _ in per {
                ready_then_go(ctl_child.as_fd());
                let start = cpu_now();
                let (count, sum) = take_until_stop(&mut get, SMALL);
                let mut report = [0u8; 24];
                report[..8].copy_from_slice(&count.to_le_bytes());
                report[8..16].copy_from_slice(&sum.to_le_bytes());
                report[16..].copy_from_slice(&(cpu_now() - start).to_le_bytes());
                write_all(ctl_child.as_fd(), &report).expect("report");
            }
        })?);
        get_ctls.push(ctl);
    }
    let (put_ctl, ctl_child) = socketpair()?;
    set_socket_timeout(&put_ctl, Timeout::Recv, Some(HANG))?;
    children.push(fork_child(move || {
        for n in per {
            ready_then_go(ctl_child.as_fd());
            for i in 0..n as u64 {
                put.put(i);
                std::thread::sleep(IDLE_GAP);
            }
            for _ in 0..consumers {
                put.put(STOP);
            }
        }
    })?);
    let mut cpu_ns = 0;
    for n in per {
        for ctl in get_ctls.iter().chain([&put_ctl]) {
            let mut ready = [0u8];
            from_child(ctl.as_fd(), &mut ready, "ready")?;
        }
        for ctl in get_ctls.iter().chain([&put_ctl]) {
            write_all(ctl.as_fd(), b"g")?;
        }
        let (mut count, mut sum) = (0u64, 0u64);
        cpu_ns = 0;
        for ctl in &get_ctls {
            let mut report = [0u8; 24];
            from_child(ctl.as_fd(), &mut report, "consumer report")?;
            count += index_of(&report);
            sum = sum.wrapping_add(index_of(&report[8..]));
            cpu_ns += index_of(&report[16..]);
        }
        let want = (0..n as u64).fold(0u64, |s, i| s.wrapping_add(i));
        if count != n as u64 || sum != want {
            return Err(format!(
                "consumers took {count} items (index sum {sum}), {n} were put (sum {want})"
            )
            .into());
        }
    }
    join_all(children)?;
    Ok(cpu_ns as f64 / per[1] as f64 / 1e3)
}

fn idle_floor(consumers: usize, per: [usize; 2]) -> Res<f64> {
    let ring = Semaphored {
        ring: Mpmc::new(8192, SMALL)?,
        item: item(SMALL),
    };
    idle(ring.clone(), vec![ring; consumers], per)
}

fn idle_ours(consumers: usize, per: [usize; 2]) -> Res<f64> {
    let (mut puts, gets) = ours_ends(1, consumers, SMALL, false)?;
    idle(puts.remove(0), gets, per)
}

// ---------------------------------------------------------------------------------------
// qsize

/// Microseconds per `size()` call: `warmup` untimed calls, then `n` timed ones; each must
/// say `items`.
fn per_call(items: usize, warmup: usize, n: usize, size: impl Fn() -> usize) -> Res<f64> {
    for _ in 0..warmup {
        black_box(size());
    }
    let start = Instant::now();
    for _ in 0..n {
        black_box(size());
    }
    let secs = start.elapsed().as_secs_f64();
    match size() {
        got if got == items => Ok(secs / n as f64 * 1e6),
        got => Err(format!("size {got}, {items} were queued").into()),
    }
}

/// Items queued for the qsize cases, held for all repetitions: the floor's ring and ours.
struct Filled {
    floor: Spsc,
    ours: Queue<ByteBuf>,
}

impl Filled {
    fn new(items: usize) -> Res<Filled> {
        let floor = Spsc::new((items as u64).next_power_of_two(), SMALL)?;
        let mut put = floor.putter();
        let ours: Queue<ByteBuf> = Queue::new()?;
        let mut buf = ByteBuf::from(item(SMALL));
        for i in 0..items as u64 {
            put.put(i);
            set_index(&mut buf, i);
            ours.put(&buf)?;
        }
        Ok(Filled { floor, ours })
    }
}

// ---------------------------------------------------------------------------------------
// CPython, kept running between requests so that its runs interleave with ours.

// ---------------------------------------------------------------------------------------
// Running, summarising, printing.

/// A flow's figure in the case's unit from the seconds of its timed round.
fn flow_rate(unit: Unit, items: usize, item: usize, secs: f64) -> f64 {
    match unit {
        Unit::MBPerSec => (items * item) as f64 / secs / 1e6,
        _ => items as f64 / secs,
    }
}

fn run_case(case: &Case, reps: usize, mut py: Option<&mut Python>) -> Res<Row> {
    let mut row = Row {
        bench: "queue",
        case: case.name.to_string(),
        unit: case.unit,
        floor: Vec::new(),
        ours: Vec::new(),
        python: py.as_ref().map(|_| Vec::new()),
        target_ratio: case.target_ratio,
        target_vs_python: case.target_vs_python,
    };
    let filled = match case.kind {
        Kind::Qsize { items } => Some(Filled::new(items)?),
        Kind::Flow { .. } | Kind::Idle { .. } => None,
    };
    for _ in 0..reps {
        match (case.kind, &filled) {
            (
                Kind::Flow {
                    producers,
                    consumers,
                    item,
                    bytes,
                },
                _,
            ) => {
                let per = [case.warmup / producers, case.n / producers];
                let items = per[1] * producers;
                let floor = flow_floor(producers, consumers, item, per)?;
                row.floor.push(flow_rate(case.unit, items, item, floor));
                let ours = flow_ours(producers, consumers, item, bytes, per)?;
                row.ours.push(flow_rate(case.unit, items, item, ours));
            }
            (Kind::Qsize { items }, Some(filled)) => {
                row.floor.push(per_call(items, case.warmup, case.n, || {
                    filled.floor.len() as usize
                })?);
                row.ours.push(per_call(items, case.warmup, case.n, || {
                    filled.ours.qsize()
                })?);
            }
            (Kind::Qsize { .. }, None) => unreachable!("qsize cases fill their queues"),
            (Kind::Idle { consumers }, _) => {
                let per = [case.warmup, case.n];
                row.floor.push(idle_floor(consumers, per)?);
                row.ours.push(idle_ours(consumers, per)?);
            }
        }
        if let (Some(py), Some(results)) = (py.as_deref_mut(), row.python.as_mut()) {
            results.push(py.run(case.py_name, case.py_warmup, case.py_n)?);
        }
        if std::env::var_os("BENCH_VERBOSE").is_some() {
            eprintln!(
                "  {} repetition {}: floor {:.0} ours {:.0}",
                case.name,
                row.ours.len(),
                row.floor.last().copied().unwrap_or(f64::NAN),
                row.ours.last().copied().unwrap_or(f64::NAN),
            );
        }
    }
    Ok(row)
}

/// Ours' `qsize()` at 1 000 items queued, against the case's 100 000: the cost must not
/// grow with the items. `(us at 1k, us at 100k)`, medians of `reps`.
fn qsize_scaling(reps: usize) -> Res<(f64, f64)> {
    let (small, large) = (Filled::new(1_000)?, Filled::new(100_000)?);
    let (mut at_small, mut at_large) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        at_small.push(per_call(1_000, 1_000_000, 10_000_000, || {
            small.ours.qsize()
        })?);
        at_large.push(per_call(100_000, 1_000_000, 10_000_000, || {
            large.ours.qsize()
        })?);
    }
    Ok((median(&at_small), median(&at_large)))
}

fn main() -> Res<()> {
    multiproc::init();

    let opts = RunOptions::from_env();
    let (quick, reps) = (opts.quick, opts.reps);
    let all = cases(quick);

    let mut python = Python::start("queue.py")?;
    opts.print_header("queue", python.as_ref());
    println!(
        "items: ours Queue<ByteBuf> (unbounded; put_bytes/get_bytes_into in the _bytes cases), \
         floor raw records in a plain shared ring (8192 slots; 8 for 1 MiB), python \
         multiprocessing.Queue of bytes; MB = 10^6 bytes"
    );

    let started = Instant::now();
    let mut rows = Vec::new();
    for case in all.iter().filter(|c| opts.selects(c.name)) {
        rows.push(run_case(case, reps, python.as_mut())?);
        eprintln!(
            "  {:<11} done after {:.1}s",
            case.name,
            started.elapsed().as_secs_f64()
        );
    }
    let scaling = if opts.selects("qsize_100k") {
        Some(qsize_scaling(reps)?)
    } else {
        None
    };
    if let Some(py) = python.take() {
        py.finish()?;
    }
    match children_left() {
        Some(left) if !left.is_empty() => {
            return Err(format!("children left behind (zombies or running): {left:?}").into());
        }
        Some(_) => println!("children left: none"),
        None => println!("children left: not checked (no /proc/<pid>/task/<tid>/children)"),
    }

    println!();
    let (met, missed, unchecked) = print_rows(&rows);
    if let Some((small, large)) = scaling {
        println!(
            "qsize scaling (ours): {small:.4} us at 1 000 items, {large:.4} us at 100 000: x{:.2}",
            large / small
        );
    }
    print_totals(reps, (met, missed, unchecked));
    print_json(&rows, started);
    Ok(())
}
