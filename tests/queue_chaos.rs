//! Crash safety of `Queue` under fire: producer and consumer processes (forked and spawned)
//! are SIGKILLed at random moments while the others keep going, and replaced. Afterwards
//! the queue is drained here and everything is accounted for:
//!
//! - no item is torn: each carries a checksum of its payload, and payloads (0 B to 160 KiB,
//!   a function of producer and sequence number) are compared byte for byte;
//! - no item is invented or duplicated;
//! - every item whose `put` returned `Ok` (the producer acknowledges each over a pipe right
//!   after) arrives, except at most one per killed consumer (taken by it, not yet reported);
//!   of a killed producer, at most the one item it was putting may arrive unacknowledged;
//! - each consumer sees each producer's items in order;
//! - nothing hangs (every wait has a deadline; a stall fails the test);
//! - a bounded queue's capacity comes back: a fresh producer fills it to exactly `maxsize`.
//!
//! Run both with an unbounded queue and with `maxsize` 8 (producers block, and get killed
//! holding a reservation). `MULTIPROC_CHAOS_SECS` sets the time under fire per variant
//! (default 5), `MULTIPROC_CHAOS_SEED` the seed (default: from the clock; printed either
//! way, to replay a run).

mod util;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::time::{Duration, Instant};

use multiproc::{Connection, ErrorKind, Key, Pipe, Process, Queue, WaitSet, wait};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use util::TestResult;

type Res<T> = Result<T, Box<dyn StdError>>;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);
/// No item arriving for this long while producers run is a stall.
const STALL: Duration = Duration::from_secs(10);
const PRODUCERS: usize = 3;
const CONSUMERS: usize = 3;
/// Items up to 160 KiB: those up to 4 KiB are copied out of the queue before they are
/// decoded, larger ones are read where they lie, so both ways of reading are under fire.
const MAX_PAYLOAD: u64 = 160 * 1024;
/// Mean time between kills.
const KILL_EVERY_MS: u64 = 15;
/// Unbounded runs: producers hold back while this many items wait, to bound memory, except
/// in a burst (see [`is_burst`]).
const THROTTLE: usize = 128;
/// The producer id of the items that tell a consumer to stop.
const STOP: u32 = u32::MAX;

// ---------------------------------------------------------------------------------------------
// Items

/// An item travels as one CBOR byte string (producer, sequence number and checksum, then
/// the payload), so that large ones are read where they lie in the queue and small ones
/// after a copy: both ways of reading are under fire.
struct Item {
    producer: u32,
    seq: u32,
    /// [`checksum`] of `payload`.
    checksum: u64,
    payload: ByteBuf,
}

impl Serialize for Item {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut bytes = Vec::with_capacity(16 + self.payload.len());
        bytes.extend_from_slice(&self.producer.to_le_bytes());
        bytes.extend_from_slice(&self.seq.to_le_bytes());
        bytes.extend_from_slice(&self.checksum.to_le_bytes());
        bytes.extend_from_slice(&self.payload);
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = ByteBuf::deserialize(d)?.into_vec();
        if bytes.len() < 16 {
            return Err(serde::de::Error::custom("an item of under 16 bytes"));
        }
        let word = |at: usize, n: usize| {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(&bytes[at..at + n]);
            u64::from_le_bytes(b)
        };
        Ok(Item {
            producer: word(0, 4) as u32,
            seq: word(4, 4) as u32,
            checksum: word(8, 8),
            payload: ByteBuf::from(bytes[16..].to_vec()),
        })
    }
}

/// SplitMix64's finaliser: a well-mixed hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A seeded generator for delays and choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = mix(self.0);
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A fixed block of pseudo-random bytes (prime length); payloads are slices of it.
fn block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut rng = Rng(7);
        (0..65_521).map(|_| rng.next() as u8).collect()
    })
}

/// The length of item `(producer, seq)` and where in [`block`] its payload starts: empty,
/// tiny, small and up to 160 KiB, so frames of every size cross chunk boundaries, and
/// about half of the large ones are decoded where they lie in the queue.
fn shape(seed: u64, producer: u32, seq: u32) -> (usize, usize) {
    let h = mix(seed ^ (u64::from(producer) << 32 | u64::from(seq)));
    let len = match h % 8 {
        _ if is_burst(producer, seq) => MAX_PAYLOAD - (h >> 8) % 4096,
        0 => 0,
        1 | 2 => (h >> 8) % 64,
        3 | 4 => (h >> 8) % 4096,
        _ => (h >> 8) % (MAX_PAYLOAD + 1),
    };
    (len as usize, ((h >> 40) % block().len() as u64) as usize)
}

/// Whether item `seq` of `producer` belongs to a burst. Every third producer starts with a
/// burst of 128 items near the largest size (20 MiB) put without holding back, then waits
/// for the queue to be empty before it goes on: so consumers find the queue empty while a
/// producer (alive, or killed by then) holds far more memory than it keeps, and give that
/// memory back (trim) while processes are killed around them.
fn is_burst(producer: u32, seq: u32) -> bool {
    producer % 3 == 0 && seq < 128
}

/// `len` bytes of the block repeated from `start`.
fn payload(len: usize, start: usize) -> Vec<u8> {
    let block = block();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&block[start..(start + len).min(block.len())]);
    while out.len() < len {
        let n = (len - out.len()).min(block.len());
        out.extend_from_slice(&block[..n]);
    }
    out
}

/// Whether `bytes` are exactly [`payload`]`(len, start)`.
fn is_payload(bytes: &[u8], len: usize, start: usize) -> bool {
    if bytes.len() != len {
        return false;
    }
    let block = block();
    let mut at = start;
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rest.len().min(block.len() - at);
        if rest[..n] != block[at..at + n] {
            return false;
        }
        rest = &rest[n..];
        at = 0;
    }
    true
}

/// A checksum of 8-byte words (fast in debug builds too).
fn checksum(bytes: &[u8]) -> u64 {
    let mut h = bytes.len() as u64;
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = mix(h ^ u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    for &b in words.remainder() {
        h = mix(h ^ u64::from(b));
    }
    h
}

fn make_item(seed: u64, producer: u32, seq: u32) -> Item {
    let (len, start) = shape(seed, producer, seq);
    let bytes = payload(len, start);
    Item {
        producer,
        seq,
        checksum: checksum(&bytes),
        payload: ByteBuf::from(bytes),
    }
}

/// What children tell the test, each over its own pipe.
#[derive(Debug, Serialize, Deserialize)]
enum Report {
    /// Producer: the put of this seq returned `Ok`.
    Acked(u32),
    /// Consumer: took this item; whether its payload and checksum were intact.
    Got {
        producer: u32,
        seq: u32,
        len: u32,
        intact: bool,
    },
    /// Producer: refused a log (128 producers at once, dead ones not yet drained).
    NoLog,
}

// ---------------------------------------------------------------------------------------------
// The children

#[derive(Serialize, Deserialize)]
struct ProducerArgs {
    id: u32,
    seed: u64,
    bounded: bool,
    queue: Queue<Item>,
    conn: Connection,
}

/// Puts its items in sequence, acknowledging each right after its put returned `Ok`, with
/// `put`, `put_timeout` and `try_put` in turn, until told to stop.
fn producer(mut a: ProducerArgs) {
    let mut rng = Rng(a.seed ^ mix(u64::from(a.id)));
    let stop = |conn: &mut Connection| conn.poll(Some(Duration::ZERO)).unwrap_or(true);
    for seq in 0.. {
        if stop(&mut a.conn) {
            return;
        }
        let limit = match seq {
            _ if is_burst(a.id, seq) => usize::MAX,
            128 if is_burst(a.id, 0) => 0,
            _ => THROTTLE,
        };
        while !a.bounded && a.queue.qsize() > limit {
            if stop(&mut a.conn) {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let item = make_item(a.seed, a.id, seq);
        loop {
            let result = match rng.below(4) {
                0 => a
                    .queue
                    .put_timeout(&item, Duration::from_micros(rng.below(2_000))),
                1 => a.queue.try_put(&item),
                _ => a.queue.put(&item),
            };
            match result {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::Full => {
                    if stop(&mut a.conn) {
                        return;
                    }
                    std::thread::yield_now();
                }
                Err(e) if e.kind() == ErrorKind::Unsupported => {
                    a.conn.send(&Report::NoLog).unwrap();
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("producer {}: put of seq {seq}: {e}", a.id),
            }
        }
        a.conn.send(&Report::Acked(seq)).unwrap();
    }
}

#[derive(Serialize, Deserialize)]
struct ConsumerArgs {
    id: u32,
    seed: u64,
    queue: Queue<Item>,
    conn: Connection,
}

/// Takes items with `get`, `get_timeout`, or `try_get` after a `wait` on the queue, checks
/// each and reports it at once, until it takes a stop item.
fn consumer(mut a: ConsumerArgs) {
    let mut rng = Rng(a.seed ^ mix(u64::from(a.id) + 1_000_000));
    loop {
        let result = match rng.below(3) {
            0 => a.queue.get(),
            1 => a.queue.get_timeout(Duration::from_micros(rng.below(5_000))),
            _ => {
                let _ = wait(&mut [&mut a.queue], Some(Duration::from_millis(20))).unwrap();
                a.queue.try_get()
            }
        };
        let item = match result {
            Ok(item) => item,
            Err(e) if e.kind() == ErrorKind::Empty => continue,
            Err(e) => panic!("consumer {}: {e}", a.id),
        };
        if item.producer == STOP {
            return;
        }
        let (len, start) = shape(a.seed, item.producer, item.seq);
        let intact =
            is_payload(&item.payload, len, start) && checksum(&item.payload) == item.checksum;
        a.conn
            .send(&Report::Got {
                producer: item.producer,
                seq: item.seq,
                len: item.payload.len() as u32,
                intact,
            })
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// The test's side

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Producer,
    Consumer,
}

struct Child {
    role: Role,
    id: u32,
    process: Process,
    /// Its pipe in the wait set, until end of file.
    key: Option<Key>,
    killed: bool,
    spawned: bool,
}

#[derive(Default)]
struct Tally {
    kills: [usize; 2],
    spawned: usize,
    forked: usize,
    acked: usize,
    received: usize,
    torn_reports: usize,
    no_log: usize,
}

struct Chaos {
    seed: u64,
    maxsize: Option<usize>,
    queue: Queue<Item>,
    rng: Rng,
    set: WaitSet<Connection>,
    children: Vec<Child>,
    /// Per producer id: the last acknowledged seq, and whether it was killed.
    acked: Vec<Option<u32>>,
    producer_killed: Vec<bool>,
    /// How many times each (producer, seq) arrived.
    received: HashMap<(u32, u32), u32>,
    /// Per (consumer id, producer): the last seq it reported.
    last_seen: HashMap<(u32, u32), u32>,
    next_consumer: u32,
    /// Killed, not yet reaped.
    dying: Vec<usize>,
    tally: Tally,
    last_progress: Instant,
}

impl Chaos {
    fn new(seed: u64, maxsize: Option<usize>) -> Res<Chaos> {
        let queue = match maxsize {
            Some(n) => Queue::bounded(n)?,
            None => Queue::new()?,
        };
        Ok(Chaos {
            seed,
            maxsize,
            queue,
            rng: Rng(seed),
            set: WaitSet::new()?,
            children: Vec::new(),
            acked: Vec::new(),
            producer_killed: Vec::new(),
            received: HashMap::new(),
            last_seen: HashMap::new(),
            next_consumer: 0,
            dying: Vec::new(),
            tally: Tally::default(),
            last_progress: Instant::now(),
        })
    }

    /// Starts a producer or consumer, forked or (one in four) spawned.
    fn start(&mut self, role: Role) -> TestResult {
        let (ours, conn) = Pipe::new()?;
        let spawned = self.rng.below(4) == 0;
        let queue = self.queue.clone();
        let (seed, bounded) = (self.seed, self.maxsize.is_some());
        let (id, mut process) = match role {
            Role::Producer => {
                let id = self.acked.len() as u32;
                self.acked.push(None);
                self.producer_killed.push(false);
                let args = ProducerArgs {
                    id,
                    seed,
                    bounded,
                    queue,
                    conn,
                };
                let p = if spawned {
                    Process::spawn(producer, args)
                } else {
                    Process::fork(move || producer(args))
                };
                (id, p)
            }
            Role::Consumer => {
                let id = self.next_consumer;
                self.next_consumer += 1;
                let args = ConsumerArgs {
                    id,
                    seed,
                    queue,
                    conn,
                };
                let p = if spawned {
                    Process::spawn(consumer, args)
                } else {
                    Process::fork(move || consumer(args))
                };
                (id, p)
            }
        };
        process.set_daemon(true)?;
        process.start()?;
        if spawned {
            self.tally.spawned += 1;
        } else {
            self.tally.forked += 1;
        }
        let key = self.set.insert(ours)?;
        self.children.push(Child {
            role,
            id,
            process,
            key: Some(key),
            killed: false,
            spawned,
        });
        Ok(())
    }

    fn live(&self, role: Role) -> Vec<usize> {
        (0..self.children.len())
            .filter(|&i| {
                let c = &self.children[i];
                c.role == role && !c.killed && c.process.exit_code().is_none()
            })
            .collect()
    }

    /// SIGKILLs a random producer or consumer and starts another in its place. The victim
    /// is reaped later ([`reap`](Self::reap)): dying can take a while on a loaded machine,
    /// and the fire goes on meanwhile.
    fn kill_one(&mut self) -> TestResult {
        // Two in three are producers: over 128 of them then run in a default run, so
        // logs of dead producers must be reclaimed for new ones.
        let role = if self.rng.below(3) < 2 {
            Role::Producer
        } else {
            Role::Consumer
        };
        let live = self.live(role);
        let i = live[self.rng.below(live.len() as u64) as usize];
        let child = &mut self.children[i];
        child.process.kill()?;
        child.killed = true;
        self.tally.kills[role as usize] += 1;
        if role == Role::Producer {
            self.producer_killed[child.id as usize] = true;
        }
        self.dying.push(i);
        self.start(role)
    }

    /// Reaps killed children that have died, waiting up to `timeout` for each.
    fn reap(&mut self, timeout: Duration) -> TestResult {
        let mut still = Vec::new();
        for &i in &self.dying {
            let child = &mut self.children[i];
            match child.process.join_timeout(timeout) {
                Ok(code) if code == -libc::SIGKILL => {}
                Ok(code) => fail!(
                    "{:?} {} (spawned: {}) exited with {code} before it was killed",
                    child.role,
                    child.id,
                    child.spawned
                ),
                Err(e) if e.is_timeout() => still.push(i),
                Err(e) => return Err(e.into()),
            }
        }
        if !still.is_empty() && !timeout.is_zero() {
            fail!(
                "{} killed children still not dead after {timeout:?}",
                still.len()
            );
        }
        self.dying = still;
        Ok(())
    }

    /// Reads every report waiting on the pipes that `wait` found ready.
    fn read_reports(&mut self, timeout: Duration) -> TestResult {
        let ready = self.set.wait(Some(timeout))?;
        for key in ready {
            let i = self
                .children
                .iter()
                .position(|c| c.key == Some(key))
                .ok_or("a report from no child")?;
            loop {
                let conn = self.set.get_mut(key).ok_or("lost a pipe")?;
                match conn.try_recv::<Report>() {
                    Ok(Some(report)) => self.take_report(i, report)?,
                    Ok(None) => break,
                    Err(e) if e.is_eof() || e.kind() == ErrorKind::TruncatedMessage => {
                        let child = &mut self.children[i];
                        if e.kind() == ErrorKind::TruncatedMessage {
                            // Killed in the middle of writing a report.
                            if !child.killed {
                                fail!(
                                    "a torn report from {:?} {}, not killed",
                                    child.role,
                                    child.id
                                );
                            }
                            self.tally.torn_reports += 1;
                        }
                        self.set.remove(key);
                        child.key = None;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(())
    }

    fn take_report(&mut self, child: usize, report: Report) -> TestResult {
        let from = (self.children[child].role, self.children[child].id);
        match report {
            Report::Acked(seq) => {
                let last = &mut self.acked[from.1 as usize];
                let expected = last.map_or(0, |s| s + 1);
                if seq != expected {
                    fail!(
                        "producer {} acknowledged {seq}, expected {expected}",
                        from.1
                    );
                }
                *last = Some(seq);
                self.tally.acked += 1;
                self.last_progress = Instant::now();
            }
            Report::Got {
                producer,
                seq,
                len,
                intact,
            } => self.take_item(from.1, producer, seq, len as usize, intact)?,
            Report::NoLog => self.tally.no_log += 1,
        }
        Ok(())
    }

    /// Accounts for one item taken by `consumer`.
    fn take_item(
        &mut self,
        consumer: u32,
        producer: u32,
        seq: u32,
        len: usize,
        intact: bool,
    ) -> TestResult {
        if producer as usize >= self.acked.len() {
            fail!("consumer {consumer} got an item of producer {producer}, who never ran");
        }
        if !intact || len != shape(self.seed, producer, seq).0 {
            fail!(
                "consumer {consumer} got a torn item: producer {producer} seq {seq}, {len} bytes, \
                 intact: {intact}"
            );
        }
        if let Some(&last) = self.last_seen.get(&(consumer, producer)) {
            if seq <= last {
                fail!("consumer {consumer}: producer {producer}'s seq {seq} after {last}");
            }
        }
        self.last_seen.insert((consumer, producer), seq);
        let n = self.received.entry((producer, seq)).or_insert(0);
        *n += 1;
        if *n > 1 {
            fail!("producer {producer}'s seq {seq} arrived {n} times");
        }
        self.tally.received += 1;
        self.last_progress = Instant::now();
        Ok(())
    }

    fn check_progress(&self) -> TestResult {
        if self.last_progress.elapsed() > STALL {
            fail!(
                "stalled: nothing put or taken for {STALL:?}; qsize {}, full {}, {} producers \
                 and {} consumers alive",
                self.queue.qsize(),
                self.queue.full(),
                self.live(Role::Producer).len(),
                self.live(Role::Consumer).len()
            );
        }
        Ok(())
    }

    /// Reads reports until every child of `role` has closed its pipe, then joins them.
    fn wait_out(&mut self, role: Role) -> TestResult {
        let deadline = Instant::now() + HANG;
        while self
            .children
            .iter()
            .any(|c| c.role == role && c.key.is_some())
        {
            if Instant::now() > deadline {
                fail!(
                    "{role:?}s did not finish within {HANG:?}: qsize {}, full {}",
                    self.queue.qsize(),
                    self.queue.full()
                );
            }
            self.read_reports(Duration::from_millis(100))?;
        }
        for child in self
            .children
            .iter_mut()
            .filter(|c| c.role == role && !c.killed)
        {
            let code = child.process.join_timeout(HANG)?;
            if code != 0 {
                fail!("{role:?} {} exited with {code}", child.id);
            }
        }
        Ok(())
    }

    fn run(&mut self, under_fire: Duration) -> TestResult {
        for _ in 0..PRODUCERS {
            self.start(Role::Producer)?;
        }
        for _ in 0..CONSUMERS {
            self.start(Role::Consumer)?;
        }
        let end = Instant::now() + under_fire;
        let mut next_kill =
            Instant::now() + Duration::from_millis(self.rng.below(2 * KILL_EVERY_MS));
        self.last_progress = Instant::now();
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now >= next_kill {
                self.kill_one()?;
                next_kill =
                    Instant::now() + Duration::from_millis(self.rng.below(2 * KILL_EVERY_MS));
                continue;
            }
            self.read_reports(next_kill.min(end) - now)?;
            self.reap(Duration::ZERO)?;
            self.check_progress()?;
        }
        self.reap(HANG)?;

        // Cease fire: producers stop (and are waited for), then each consumer takes a stop
        // item, then the rest is drained here.
        for child in self
            .children
            .iter()
            .filter(|c| c.role == Role::Producer && c.key.is_some())
        {
            let key = child.key.expect("checked");
            if !child.killed {
                self.set.get_mut(key).ok_or("lost a pipe")?.send(&())?;
            }
        }
        self.wait_out(Role::Producer)?;
        let stops = self.live(Role::Consumer).len();
        let stop = Item {
            producer: STOP,
            seq: 0,
            checksum: 0,
            payload: ByteBuf::new(),
        };
        for _ in 0..stops {
            self.queue.put_timeout(&stop, HANG)?;
        }
        self.wait_out(Role::Consumer)?;
        loop {
            match self.queue.try_get() {
                Ok(item) => {
                    if item.producer == STOP {
                        fail!("a stop item was left over");
                    }
                    let (len, start) = shape(self.seed, item.producer, item.seq);
                    let intact = is_payload(&item.payload, len, start)
                        && checksum(&item.payload) == item.checksum;
                    self.take_item(
                        u32::MAX,
                        item.producer,
                        item.seq,
                        item.payload.len(),
                        intact,
                    )?;
                }
                Err(e) if e.kind() == ErrorKind::Empty => break,
                Err(e) => return Err(e.into()),
            }
        }
        assert_eq!((self.queue.qsize(), self.queue.empty()), (0, true));
        self.account()?;
        if let Some(maxsize) = self.maxsize {
            self.check_capacity(maxsize)?;
        }
        Ok(())
    }

    /// Every acknowledged item arrived but for at most one per killed consumer; unacknowledged
    /// arrivals are only the one in flight of a killed producer.
    fn account(&self) -> TestResult {
        let mut lost = 0;
        let mut in_flight_arrived = 0;
        for (producer, acked) in self.acked.iter().enumerate() {
            let producer = producer as u32;
            let killed = self.producer_killed[producer as usize];
            let acked_to = acked.map_or(0, |s| s + 1); // seqs below this were acknowledged
            let limit = acked_to + u32::from(killed);
            for seq in 0..acked_to {
                if !self.received.contains_key(&(producer, seq)) {
                    lost += 1;
                }
            }
            for &(p, seq) in self.received.keys() {
                if p == producer && seq >= acked_to {
                    if seq >= limit {
                        fail!(
                            "producer {producer} (killed: {killed}) acknowledged up to {acked:?}, \
                             yet its seq {seq} arrived"
                        );
                    }
                    in_flight_arrived += 1;
                }
            }
        }
        let t = &self.tally;
        eprintln!(
            "seed {}, maxsize {:?}: {} producers and {} consumers ran ({} forked, {} spawned); \
             kills: {} producers, {} consumers; items acknowledged {}, received {} ({} of them \
             in flight when their producer was killed); lost {} (allowed: up to {} consumer \
             kills); torn reports {}; producers refused a log {} times",
            self.seed,
            self.maxsize,
            self.acked.len(),
            self.next_consumer,
            t.forked,
            t.spawned,
            t.kills[0],
            t.kills[1],
            t.acked,
            t.received,
            in_flight_arrived,
            lost,
            t.kills[1],
            t.torn_reports,
            t.no_log,
        );
        if lost > t.kills[1] {
            fail!(
                "{lost} acknowledged items never arrived, more than the {} killed consumers \
                 can have taken",
                t.kills[1]
            );
        }
        if t.acked < 100 || t.received < 100 {
            fail!(
                "too little traffic to mean anything: {} acked, {} received",
                t.acked,
                t.received
            );
        }
        Ok(())
    }

    /// A fresh producer process fills the drained queue to exactly `maxsize`, whatever
    /// reservations killed producers left.
    fn check_capacity(&self, maxsize: usize) -> TestResult {
        let before = (self.queue.full(), self.queue.qsize());
        let (mut ours, mut theirs) = Pipe::new()?;
        let queue = self.queue.clone();
        let mut fresh = Process::fork(move || {
            let item = Item {
                producer: STOP,
                seq: 0,
                checksum: 0,
                payload: ByteBuf::new(),
            };
            let mut by_try_put = 0;
            while queue.try_put(&item).is_ok() {
                by_try_put += 1;
            }
            // A try_put that found the queue full and cleared a dead producer's reservation
            // says Full all the same (see tests/queue.rs,
            // try_put_takes_room_a_killed_producer_held): fill the rest with put_timeout.
            let mut by_put_timeout = 0;
            while queue.put_timeout(&item, Duration::from_millis(200)).is_ok() {
                by_put_timeout += 1;
            }
            theirs
                .send(&(by_try_put, by_put_timeout, queue.qsize(), queue.full()))
                .unwrap();
        });
        fresh.set_daemon(true)?;
        fresh.start()?;
        let (by_try_put, by_put_timeout, qsize, full): (usize, usize, usize, bool) =
            ours.recv_timeout(HANG)?;
        assert_eq!(fresh.join_timeout(HANG)?, 0);
        eprintln!(
            "capacity: before the fill full {} qsize {}; filled {by_try_put} by try_put, \
             {by_put_timeout} more by put_timeout",
            before.0, before.1
        );
        assert_eq!(by_try_put + by_put_timeout, maxsize);
        assert_eq!((qsize, full), (maxsize, true));
        assert_eq!((self.queue.qsize(), self.queue.full()), (maxsize, true));
        Ok(())
    }
}

fn under_fire() -> Duration {
    let secs = std::env::var("MULTIPROC_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(5.0);
    Duration::from_secs_f64(secs)
}

fn seed() -> u64 {
    std::env::var("MULTIPROC_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            mix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
        })
}

fn chaos(maxsize: Option<usize>) -> TestResult {
    let seed = seed();
    eprintln!(
        "chaos with maxsize {maxsize:?}: seed {seed} (MULTIPROC_CHAOS_SEED={seed} replays the choices)"
    );
    Chaos::new(seed, maxsize)?.run(under_fire())
}

/// An unbounded queue under fire.
fn chaos_unbounded() -> TestResult {
    chaos(None)
}

/// A queue of 8 under fire: producers block on it and are killed holding reservations.
fn chaos_bounded() -> TestResult {
    chaos(Some(8))
}

fn main() {
    multiproc::init();
    let timeout = under_fire() + Duration::from_secs(90);
    util::run(&[
        util::Test::new("chaos_unbounded", chaos_unbounded).timeout(timeout),
        util::Test::new("chaos_bounded", chaos_bounded).timeout(timeout),
    ]);
}
