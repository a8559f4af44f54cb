//! `Queue`, `JoinableQueue` and `SimpleQueue` between real processes: per-producer FIFO,
//! exactly-once delivery under many producers and consumers, bounded blocking and timeouts,
//! exact sizes, shutdown, `join`, big items and a ring that wraps, a million items waiting,
//! encode and decode errors, readiness in `wait`, `WaitSet` and mio, queues handed to
//! spawned and forked children and shared by threads, `close`, the producer-log table, and
//! room held by a producer SIGKILLed at a chosen moment (between reserving and publishing).
//!
//! Crash safety under random SIGKILLs is `tests/queue_chaos.rs`.
//!
//! FIFO holds per producer process only: items of different producers may come out in any
//! order, even when one was put after the other was taken (a consumer takes one producer's
//! items in runs of up to 64 KiB, then the next producer's), so checks across producers
//! compare sorted items.
//!
//! Every child is a daemon, so a test that fails half-way leaves no process behind (they die
//! with it); every wait has a generous deadline that only a hang reaches.

mod util;

use std::collections::HashMap;
use std::error::Error as StdError;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use multiproc::{
    Connection, ErrorKind, JoinableQueue, Pipe, Process, Queue, Sentinel, SimpleQueue, WaitSet,
    Waitable, wait,
};
use serde::de::Error as _;
use serde::ser::{Error as _, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_bytes::ByteBuf;
use util::{TestResult, child, finish, spawned};

type Res<T> = Result<T, Box<dyn StdError>>;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

/// The most memory a drained queue whose producers are gone may keep, for the tests that
/// use at most two logs: the header pages, and for each log ever claimed its chunk map and
/// chunk states (64 KiB each).
const DRAINED_KEEPS: u64 = 2 * 128 * 1024 + 64 * 1024;

/// An item tagged with who put it and its place in that producer's sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Tagged {
    producer: u32,
    seq: u32,
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// The scheduler state of process `pid` (`R`, `S`, ...), from `/proc/<pid>/stat`.
fn state_of(pid: u32) -> Res<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (_, rest) = stat.rsplit_once(')').ok_or("unreadable stat")?;
    Ok(rest.trim_start().chars().next().ok_or("no state")?)
}

/// Waits until `p` sleeps in the kernel (state `S`): it is blocked, not spinning.
fn wait_until_asleep(p: &Process) -> TestResult {
    let pid = p.pid().ok_or("not started")?;
    let deadline = Instant::now() + HANG;
    while state_of(pid)? != 'S' {
        if Instant::now() > deadline {
            fail!("{} never went to sleep (busy-waiting?)", p.name());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Bytes of memory backing the queue files this process has open (memfds named
/// `multiproc-queue`), from their `st_blocks`.
fn queue_memory() -> Res<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc/self/fd")?.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target
            .to_string_lossy()
            .starts_with("/memfd:multiproc-queue")
        {
            let meta = std::fs::metadata(entry.path())?;
            total += std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
        }
    }
    Ok(total)
}

/// A fixed block of pseudo-random bytes, of a prime length so that repeating it never lines
/// up with sizes or pages.
fn block() -> &'static [u8] {
    static BLOCK: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BLOCK.get_or_init(|| {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..65_521)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    })
}

/// `len` bytes of [`block`] repeated from an offset chosen by `salt`: cheap (copies only,
/// fast in debug builds too) and different for every salt below 65,521.
fn pattern(len: usize, salt: u64) -> Vec<u8> {
    let block = block();
    let start = (salt % block.len() as u64) as usize;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&block[start..(start + len).min(block.len())]);
    while out.len() < len {
        let n = (len - out.len()).min(block.len());
        out.extend_from_slice(&block[..n]);
    }
    out
}

/// Whether `bytes` are exactly [`pattern`]`(len, salt)`, compared in place.
fn is_pattern(bytes: &[u8], len: usize, salt: u64) -> bool {
    let block = block();
    let mut at = (salt % block.len() as u64) as usize;
    let mut rest = bytes;
    if bytes.len() != len {
        return false;
    }
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

/// Drains `q` without blocking.
fn drain<T: Serialize + serde::de::DeserializeOwned>(q: &Queue<T>) -> Res<Vec<T>> {
    let mut out = Vec::new();
    loop {
        match q.try_get() {
            Ok(item) => out.push(item),
            Err(e) if e.kind() == ErrorKind::Empty => return Ok(out),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Gets until the queue is shut down and drained, then sends what it got over `out`.
fn consume_until_shutdown(q: Queue<Tagged>, mut out: Connection) {
    let mut got = Vec::new();
    loop {
        match q.get() {
            Ok(t) => got.push(t),
            Err(e) if e.kind() == ErrorKind::ShutDown => break,
            Err(e) => panic!("get: {e}"),
        }
    }
    out.send(&got).unwrap();
}

/// Each consumer's items, per producer, come in increasing `seq` order.
fn check_fifo_per_producer(consumer: usize, got: &[Tagged]) -> TestResult {
    let mut last: HashMap<u32, u32> = HashMap::new();
    for t in got {
        if let Some(&prev) = last.get(&t.producer) {
            if t.seq <= prev {
                fail!(
                    "consumer {consumer}: producer {} seq {} after {prev}",
                    t.producer,
                    t.seq
                );
            }
        }
        last.insert(t.producer, t.seq);
    }
    Ok(())
}

/// The union of `lists` is every `(producer, seq)` with `seq < per_producer`, each once.
fn check_exactly_once(lists: &[Vec<Tagged>], producers: u32, per_producer: u32) -> TestResult {
    let mut all: Vec<Tagged> = lists.iter().flatten().copied().collect();
    all.sort();
    let expected: Vec<Tagged> = (0..producers)
        .flat_map(|producer| (0..per_producer).map(move |seq| Tagged { producer, seq }))
        .collect();
    if all != expected {
        let mut seen = HashMap::new();
        for t in &all {
            *seen.entry(*t).or_insert(0) += 1;
        }
        let dups = seen.values().filter(|&&n| n > 1).count();
        let missing = expected.iter().filter(|t| !seen.contains_key(t)).count();
        let invented = seen
            .keys()
            .filter(|t| t.producer >= producers || t.seq >= per_producer)
            .count();
        fail!(
            "got {} items for {} expected: {dups} duplicated, {missing} missing, {invented} \
             invented",
            all.len(),
            expected.len()
        );
    }
    Ok(())
}

/// Puts `count` tagged items as `producer`.
fn produce(q: &Queue<Tagged>, producer: u32, count: u32) {
    for seq in 0..count {
        q.put(&Tagged { producer, seq }).unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Ordering and delivery

/// Four producer processes put 5,000 tagged items each. One consumer sees each producer's
/// items exactly in the order put (0, 1, 2, ... with no gap); three consumer processes over
/// a bounded queue each see every producer's items in increasing order, and together all.
fn fifo_per_producer_across_processes() -> TestResult {
    const PRODUCERS: u32 = 4;
    const EACH: u32 = 5_000;
    let q = Queue::new()?;
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let q = q.clone();
        producers.push(child(move || produce(&q, producer, EACH))?);
    }
    let mut next = [0u32; PRODUCERS as usize];
    for _ in 0..PRODUCERS * EACH {
        let t: Tagged = q.get_timeout(HANG)?;
        let expected = &mut next[t.producer as usize];
        if t.seq != *expected {
            fail!(
                "producer {}: got seq {}, expected {expected}",
                t.producer,
                t.seq
            );
        }
        *expected += 1;
    }
    for p in &mut producers {
        finish(p)?;
    }
    assert!(q.empty());
    assert_eq!(next, [EACH; PRODUCERS as usize]);

    // Several consumers, and producers that block on a small bound.
    let q = Queue::bounded(16)?;
    let lists = producers_to_consumers(&q, 3, 3, EACH)?;
    check_exactly_once(&lists, 3, EACH)
}

/// A consumer takes one producer's waiting items in runs of at most 64 KiB of frames (the
/// documented bound), then turns to another producer's: with two producers' 3,000 items of
/// 64 bytes waiting (72-byte frames: 910 to a run), no run of one producer's items is
/// longer than 911 while the other still has items.
fn a_consumer_turns_to_other_producers_within_64_kib() -> TestResult {
    const EACH: usize = 3_000;
    const LONGEST: usize = (64 * 1024usize).div_ceil(72);
    let q = Queue::<()>::new()?;
    for producer in 0..2u8 {
        let q = q.clone();
        let mut p = child(move || {
            for i in 0..EACH {
                let mut item = [producer; 64];
                item[1..9].copy_from_slice(&(i as u64).to_le_bytes());
                q.put_bytes(&item).unwrap();
            }
        })?;
        finish(&mut p)?;
    }
    let mut left = [EACH; 2];
    let (mut run_of, mut run) = (u8::MAX, 0);
    let mut buf = Vec::new();
    while left != [0, 0] {
        if q.get_bytes_into(&mut buf)? != 64 {
            fail!("an item of {} bytes", buf.len());
        }
        let producer = buf[0];
        let seq = u64::from_le_bytes(buf[1..9].try_into()?) as usize;
        if producer > 1 || seq != EACH - left[usize::from(producer)] {
            fail!("producer {producer}'s item {seq} out of order");
        }
        left[usize::from(producer)] -= 1;
        run = if producer == run_of { run + 1 } else { 1 };
        run_of = producer;
        if run > LONGEST && left[usize::from(1 - producer)] > 0 {
            fail!("{run} items of producer {producer} in a row while the other's waited");
        }
    }
    Ok(())
}

/// A producer far ahead of a consumer that drains as it goes (300,000 items of 64 bytes,
/// 21 MiB: more than the memory a producer keeps, so it looks for chunks the consumer
/// freed, yielding the CPU, before it populates new ones): every item arrives, in order,
/// and the memory goes back as the backlog drains.
fn a_producer_far_ahead_of_a_draining_consumer_loses_nothing() -> TestResult {
    const N: u64 = 300_000;
    let q = Queue::<()>::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        for i in 0..N {
            let mut item = [7u8; 64];
            item[..8].copy_from_slice(&i.to_le_bytes());
            producer.put_bytes(&item).unwrap();
        }
    })?;
    let mut buf = Vec::new();
    for i in 0..N {
        let n = q.get_bytes_timeout(&mut buf, HANG)?;
        if n != 64 || buf[..8] != i.to_le_bytes() || buf[8..].iter().any(|&b| b != 7) {
            fail!("item {i} came out wrong ({n} bytes)");
        }
    }
    finish(&mut p)?;
    assert!(q.empty());
    let left = queue_memory()?;
    assert!(left < MIB as u64, "{left} bytes still held after the drain");
    Ok(())
}

/// Runs `consumers` consumer processes (blocking in `get` until the queue is shut down) and
/// `producers` producer processes putting `each` items into `q`, then shuts it down: what
/// each consumer took, each list checked to keep every producer's order.
fn producers_to_consumers(
    q: &Queue<Tagged>,
    producers: u32,
    consumers: usize,
    each: u32,
) -> Res<Vec<Vec<Tagged>>> {
    let mut taking = Vec::new();
    for _ in 0..consumers {
        let (ours, theirs) = Pipe::new()?;
        let q = q.clone();
        taking.push((child(move || consume_until_shutdown(q, theirs))?, ours));
    }
    let mut putting = Vec::new();
    for producer in 0..producers {
        let q = q.clone();
        putting.push(child(move || produce(&q, producer, each))?);
    }
    for p in &mut putting {
        finish(p)?;
    }
    q.shutdown(false);
    let mut lists = Vec::new();
    for (i, (p, conn)) in taking.iter_mut().enumerate() {
        let got: Vec<Tagged> = conn.recv_timeout(HANG)?;
        check_fifo_per_producer(i, &got)?;
        lists.push(got);
        finish(p)?;
    }
    Ok(lists)
}

/// 4 producer processes x 25,000 items, 4 consumer processes blocking in `get` until the
/// queue is shut down: every item is received exactly once, none is invented, and each
/// consumer sees each producer's items in order.
fn exactly_once_4_producers_4_consumers_100k_items() -> TestResult {
    const EACH: u32 = 25_000;
    let q = Queue::new()?;
    let lists = producers_to_consumers(&q, 4, 4, EACH)?;
    let total: usize = lists.iter().map(Vec::len).sum();
    assert_eq!(total, 100_000);
    check_exactly_once(&lists, 4, EACH)?;
    assert_eq!(q.qsize(), 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Bounded queues: blocking, timeouts, sizes

/// A `put` on a full queue sleeps (no busy wait) until a consumer in another process gets;
/// then it completes, and the queue holds `maxsize` items again.
fn put_blocks_when_full_until_another_process_gets() -> TestResult {
    let q = Queue::bounded(2)?;
    q.put(&1u32)?;
    q.put(&2)?;
    let (mut ours, mut theirs) = Pipe::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        theirs.send(&"putting").unwrap();
        producer.put(&3).unwrap();
        theirs.send(&"put").unwrap();
    })?;
    assert_eq!(ours.recv_timeout::<String>(HANG)?, "putting");
    wait_until_asleep(&p)?;
    assert!(
        !ours.poll(Some(Duration::ZERO))?,
        "put returned on a full queue"
    );
    assert_eq!((q.qsize(), q.full(), q.empty()), (2, true, false));
    assert_eq!(q.get()?, 1);
    assert_eq!(ours.recv_timeout::<String>(HANG)?, "put");
    finish(&mut p)?;
    assert_eq!((q.qsize(), q.full()), (2, true));
    // FIFO is per producer: the child's 3 may come before our 2.
    let mut left = [q.get()?, q.get()?];
    left.sort_unstable();
    assert_eq!(left, [2, 3]);
    assert_eq!((q.qsize(), q.full(), q.empty()), (0, false, true));
    Ok(())
}

/// A `get` on an empty queue sleeps until a producer in another process puts.
fn get_blocks_when_empty_until_another_process_puts() -> TestResult {
    let q = Queue::<u32>::new()?;
    let (mut ours, mut theirs) = Pipe::new()?;
    let consumer = q.clone();
    let mut p = child(move || {
        theirs.send(&0u32).unwrap();
        let got = consumer.get().unwrap();
        theirs.send(&got).unwrap();
    })?;
    assert_eq!(ours.recv_timeout::<u32>(HANG)?, 0);
    wait_until_asleep(&p)?;
    assert!(
        !ours.poll(Some(Duration::ZERO))?,
        "get returned on an empty queue"
    );
    q.put(&42)?;
    assert_eq!(ours.recv_timeout::<u32>(HANG)?, 42);
    finish(&mut p)?;
    assert!(q.empty());
    Ok(())
}

/// `try_put`/`put_timeout` on a full queue say `Full` (the latter after its timeout), and
/// `try_get`/`get_timeout` on an empty one say `Empty`; nothing changes. An unbounded queue
/// is never full.
fn timeouts_and_try_variants_report_full_and_empty() -> TestResult {
    let q = Queue::bounded(2)?;
    assert_eq!(q.maxsize(), Some(2));
    q.try_put(&10u32)?;
    q.put_timeout(&11, Duration::from_millis(1))?;
    assert_eq!(q.try_put(&12).unwrap_err().kind(), ErrorKind::Full);
    let t = Instant::now();
    let err = q.put_timeout(&12, Duration::from_millis(150)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Full);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((q.qsize(), q.full(), q.empty()), (2, true, false));

    assert_eq!(q.try_get()?, 10);
    assert_eq!(q.get_timeout(Duration::from_millis(1))?, 11);
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::Empty);
    let t = Instant::now();
    let err = q.get_timeout(Duration::from_millis(150)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Empty);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    assert_eq!((q.qsize(), q.full(), q.empty()), (0, false, true));

    let unbounded = Queue::new()?;
    assert_eq!(unbounded.maxsize(), None);
    for i in 0..1000u32 {
        unbounded.try_put(&i)?;
    }
    assert!(!unbounded.full());
    assert_eq!(unbounded.qsize(), 1000);
    // Bound 0 is Python's "unbounded".
    assert_eq!(Queue::<u8>::bounded(0)?.maxsize(), None);
    Ok(())
}

/// With the queue at capacity, `qsize`, `full` and `empty` are exact, in this process and
/// in another; one get frees exactly one place.
fn sizes_are_exact_at_capacity_in_every_process() -> TestResult {
    let q = Queue::bounded(5)?;
    let producer = q.clone();
    let mut p = child(move || {
        for i in 0..5u32 {
            producer.try_put(&i).unwrap();
        }
        assert_eq!(producer.try_put(&5).unwrap_err().kind(), ErrorKind::Full);
    })?;
    finish(&mut p)?;
    assert_eq!((q.qsize(), q.full(), q.empty()), (5, true, false));
    let (mut ours, mut theirs) = Pipe::new()?;
    let observer = q.clone();
    let mut p = child(move || {
        let seen = (observer.qsize(), observer.full(), observer.empty());
        theirs.send(&seen).unwrap();
        let _: () = theirs.recv().unwrap();
        let seen = (observer.qsize(), observer.full(), observer.empty());
        theirs.send(&seen).unwrap();
    })?;
    assert_eq!(
        ours.recv_timeout::<(usize, bool, bool)>(HANG)?,
        (5, true, false)
    );
    assert_eq!(q.get()?, 0);
    assert_eq!((q.qsize(), q.full()), (4, false));
    ours.send(&())?;
    assert_eq!(
        ours.recv_timeout::<(usize, bool, bool)>(HANG)?,
        (4, false, false)
    );
    finish(&mut p)?;
    q.try_put(&5)?;
    assert_eq!(q.try_put(&6).unwrap_err().kind(), ErrorKind::Full);
    // FIFO holds per producer, not across them: sort.
    let mut left = drain(&q)?;
    left.sort_unstable();
    assert_eq!(left, [1, 2, 3, 4, 5]);
    Ok(())
}

/// Four producer processes race for the last places of a queue of 3 (with `put`,
/// `try_put` and `put_timeout`) while this process takes one to three items at a time:
/// between its takes, `qsize()` never exceeds 3 (and is 3 whenever every producer waits),
/// and all 8,000 items arrive once.
///
/// Only this process takes, and it looks between its takes: `qsize` sums the producers'
/// logs one after the other, so a look concurrent with gets from other processes may add
/// an item counted before it was taken to one put in its place after (a transient reading
/// above `maxsize` that the queue never held).
fn qsize_never_exceeds_maxsize_while_producers_race() -> TestResult {
    const MAX: usize = 3;
    const EACH: u32 = 2_000;
    let q = Queue::bounded(MAX)?;
    let mut producers = Vec::new();
    for producer in 0..4u32 {
        let q = q.clone();
        producers.push(child(move || {
            for seq in 0..EACH {
                let item = Tagged { producer, seq };
                match producer {
                    1 => loop {
                        match q.try_put(&item) {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::Full => std::thread::yield_now(),
                            Err(e) => panic!("{e}"),
                        }
                    },
                    2 => loop {
                        match q.put_timeout(&item, Duration::from_millis(1)) {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::Full => {}
                            Err(e) => panic!("{e}"),
                        }
                    },
                    _ => q.put(&item).unwrap(),
                }
            }
        })?);
    }
    // With nobody taking, the producers fill it to exactly MAX and wait.
    let deadline = Instant::now() + HANG;
    while q.qsize() < MAX {
        if Instant::now() > deadline {
            fail!("the producers never filled the queue: qsize {}", q.qsize());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!((q.qsize(), q.full()), (MAX, true));
    let mut got = Vec::new();
    let mut looks = 0;
    while got.len() < 4 * EACH as usize {
        let n = q.qsize();
        looks += 1;
        if n > MAX {
            fail!("qsize {n} over maxsize {MAX} after {} items", got.len());
        }
        for _ in 0..1 + looks % 3 {
            match q.try_get() {
                Ok(t) => got.push(t),
                Err(e) if e.kind() == ErrorKind::Empty => break,
                Err(e) => return Err(e.into()),
            }
        }
        if Instant::now() > deadline {
            fail!("only {} items arrived", got.len());
        }
    }
    for p in &mut producers {
        finish(p)?;
    }
    assert!(q.empty());
    check_fifo_per_producer(0, &got)?;
    check_exactly_once(&[got], 4, EACH)
}

/// Sends `signal` to `p`.
fn signal(p: &Process, signal: rustix::process::Signal) -> TestResult {
    let pid = p.pid().ok_or("not started")?;
    let pid = rustix::process::Pid::from_raw(pid as i32).ok_or("pid 0")?;
    rustix::process::kill_process(pid, signal)?;
    Ok(())
}

/// Starts a producer that puts 16 MiB raw items into `q` (bounded to 1) for ever, and stops
/// it (SIGSTOP) at a moment it holds the queue's only place reserved but has not published
/// its item yet: `full()` with `qsize() == 0`. Found by stopping it at random moments after
/// a get let it in, until one is such a moment. (Raw items: the get frees the place the
/// moment it returns, and the producer's copy of 16 MiB into the queue, the window to hit,
/// lasts a millisecond or more.)
fn stopped_while_holding_the_only_place(q: &Queue<ByteBuf>) -> Res<Process> {
    const ITEM: usize = 16 * MIB;
    assert_eq!(q.maxsize(), Some(1));
    let producer = q.clone();
    let p = child(move || {
        let item = pattern(ITEM, 7);
        loop {
            producer.put_bytes(&item).unwrap();
        }
    })?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(std::process::id());
    let mut buf = Vec::new();
    let deadline = Instant::now() + HANG;
    for attempt in 0.. {
        if Instant::now() > deadline {
            fail!("never caught the producer holding the place ({attempt} attempts)");
        }
        assert_eq!(q.get_bytes_timeout(&mut buf, HANG)?, ITEM);
        // The get woke the producer: it reserves, then copies 16 MiB. Stop it somewhere.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let spin = Instant::now() + Duration::from_micros(x % 3_000);
        while Instant::now() < spin {
            std::hint::spin_loop();
        }
        signal(&p, rustix::process::Signal::STOP)?;
        let pid = p.pid().ok_or("no pid")?;
        while !matches!(state_of(pid)?, 'T' | 't') {
            std::thread::yield_now();
        }
        if q.full() && q.qsize() == 0 {
            eprintln!("caught the producer holding the place after {attempt} attempts");
            return Ok(p);
        }
        signal(&p, rustix::process::Signal::CONT)?;
    }
    unreachable!()
}

/// A producer SIGKILLed between reserving the only place of a bounded queue and publishing
/// its item leaves the place counted (`full()`, `qsize()` 0) until a putter finds the
/// queue full, sees the owner dead and takes the place: a `put` in this process gets it.
fn room_held_by_a_killed_producer_comes_back_to_the_next_putter() -> TestResult {
    let q = Queue::<ByteBuf>::bounded(1)?;
    let holder = stopped_while_holding_the_only_place(&q)?;
    holder.kill()?;
    assert_eq!(holder.join_timeout(HANG)?, -libc::SIGKILL);
    assert_eq!((q.full(), q.qsize()), (true, 0));
    q.put_timeout(&ByteBuf::from(vec![42]), HANG)?;
    assert_eq!((q.full(), q.qsize()), (true, 1));
    assert_eq!(q.get()?.as_slice(), [42]);
    assert_eq!((q.full(), q.qsize(), q.empty()), (false, 0, true));
    Ok(())
}

/// As above, with `try_put`: it finds the place free once it sees the holder dead (room
/// released that way is looked at again before the deadline is checked).
fn try_put_takes_room_a_killed_producer_held() -> TestResult {
    let q = Queue::<ByteBuf>::bounded(1)?;
    let holder = stopped_while_holding_the_only_place(&q)?;
    holder.kill()?;
    assert_eq!(holder.join_timeout(HANG)?, -libc::SIGKILL);
    assert_eq!((q.full(), q.qsize()), (true, 0));
    q.try_put(&ByteBuf::from(vec![42]))?;
    assert_eq!((q.full(), q.qsize()), (true, 1));
    Ok(())
}

/// A `put` already waiting for room when the producer holding it is SIGKILLed gets the
/// room: `reserve` looks for dead reservations before every nap, not only on first finding
/// the queue full ("a process killed inside put or get blocks no one").
fn waiting_put_takes_room_when_its_holder_is_killed() -> TestResult {
    let q = Queue::<ByteBuf>::bounded(1)?;
    let holder = stopped_while_holding_the_only_place(&q)?;
    let (mut ours, mut theirs) = Pipe::new()?;
    let waiter_q = q.clone();
    let mut waiter = child(move || {
        theirs.send(&"putting").unwrap();
        waiter_q.put(&ByteBuf::from(vec![42])).unwrap();
        theirs.send(&"put").unwrap();
    })?;
    assert_eq!(ours.recv_timeout::<String>(HANG)?, "putting");
    wait_until_asleep(&waiter)?;
    holder.kill()?;
    assert_eq!(holder.join_timeout(HANG)?, -libc::SIGKILL);
    assert_eq!(ours.recv_timeout::<String>(HANG)?, "put");
    finish(&mut waiter)?;
    assert_eq!((q.full(), q.qsize()), (true, 1));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shutdown

/// `shutdown(false)`: puts fail with `ShutDown` (in every process), gets return what is
/// left in order, then fail with `ShutDown`, blocking or not.
fn shutdown_lets_gets_drain_then_fails_them() -> TestResult {
    let q = Queue::bounded(10)?;
    for i in 0..3u32 {
        q.put(&i)?;
    }
    assert!(!q.is_shut_down());
    q.shutdown(false);
    assert!(q.is_shut_down());
    for err in [
        q.put(&9).unwrap_err(),
        q.try_put(&9).unwrap_err(),
        q.put_timeout(&9, Duration::from_millis(1)).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::ShutDown);
    }
    assert_eq!(q.qsize(), 3);
    let (mut ours, mut theirs) = Pipe::new()?;
    let other = q.clone();
    let mut p = child(move || {
        let put = other.put(&9).unwrap_err().kind();
        let first: u32 = other.get().unwrap();
        theirs
            .send(&(other.is_shut_down(), format!("{put:?}"), first))
            .unwrap();
    })?;
    let (shut, put, first): (bool, String, u32) = ours.recv_timeout(HANG)?;
    finish(&mut p)?;
    assert_eq!((shut, put.as_str(), first), (true, "ShutDown", 0));
    assert_eq!(q.get()?, 1);
    assert_eq!(q.try_get()?, 2);
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(
        q.get_timeout(Duration::from_secs(5)).unwrap_err().kind(),
        ErrorKind::ShutDown
    );
    assert_eq!(q.qsize(), 0);
    Ok(())
}

/// Producers in other processes put as fast as they can while this process shuts the queue
/// down: every put that returned `Ok` is drained before gets fail (a put that was writing
/// when the shutdown came either delivers its item or fails with `ShutDown`, never strands
/// it past a consumer that gave up), and after an immediate shutdown `join` returns (no `Ok`
/// put is left counted unfinished). Many rounds, since the shutdown must land inside a put;
/// without the take-back this failed within a few hundred rounds (at rounds 1-27 in six runs
/// of six). On a loaded machine a round takes up to 45 ms: past `ENOUGH_TIME`, at least
/// `ENOUGH_ROUNDS` rounds are enough, so the test stays far from the runner's 60 s.
fn shutdown_racing_puts_strands_no_item() -> TestResult {
    const ROUNDS: usize = 1_000;
    const ENOUGH_ROUNDS: usize = 300;
    const ENOUGH_TIME: Duration = Duration::from_secs(20);
    const PRODUCERS: usize = 3;
    let start = std::time::Instant::now();
    for round in 0..ROUNDS {
        if round >= ENOUGH_ROUNDS && start.elapsed() > ENOUGH_TIME {
            break;
        }
        let immediate = round % 2 == 1;
        let q = JoinableQueue::<u32>::new()?;
        let mut producers = Vec::new();
        for _ in 0..PRODUCERS {
            let (ours, mut theirs) = Pipe::new()?;
            let producer = q.clone();
            let p = child(move || {
                let mut ok = 0u32;
                let error = loop {
                    match producer.put(&ok) {
                        Ok(()) => ok += 1,
                        Err(e) => break e.kind(),
                    }
                };
                theirs.send(&(ok, format!("{error:?}"))).unwrap();
            })?;
            producers.push((p, ours));
        }
        let mut got = 0u32;
        while got < 50 {
            q.get_timeout(HANG)?;
            q.task_done()?;
            got += 1;
        }
        q.shutdown(immediate);
        loop {
            match q.get() {
                Ok(_) => {
                    q.task_done()?;
                    got += 1;
                }
                Err(e) if e.kind() == ErrorKind::ShutDown => break,
                Err(e) => return Err(e.into()),
            }
        }
        let mut put_ok = 0;
        for (mut p, mut ours) in producers {
            let (ok, error): (u32, String) = ours.recv_timeout(HANG)?;
            finish(&mut p)?;
            assert_eq!(error, "ShutDown", "round {round}");
            put_ok += ok;
        }
        if immediate {
            q.join_timeout(HANG)
                .map_err(|e| format!("round {round}: join after shutdown(true): {e}"))?;
        } else {
            assert_eq!(got, put_ok, "round {round}: items put Ok but not drained");
            assert!(q.empty(), "round {round}");
        }
    }
    Ok(())
}

/// `shutdown(true)`: what is left is discarded (`qsize` 0) and gets fail at once.
fn immediate_shutdown_discards_and_fails_gets_at_once() -> TestResult {
    let q = Queue::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        for i in 0..100u32 {
            producer.put(&i).unwrap();
        }
    })?;
    finish(&mut p)?;
    assert_eq!(q.qsize(), 100);
    q.shutdown(true);
    assert_eq!((q.qsize(), q.empty()), (0, true));
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::ShutDown);
    assert_eq!(q.put(&1).unwrap_err().kind(), ErrorKind::ShutDown);
    Ok(())
}

/// A `get` blocked on an empty queue in another process, and a `put` blocked on a full one,
/// wake with `ShutDown` when this process shuts the queue down (each, immediate or not).
fn shutdown_wakes_blocked_gets_and_puts_in_other_processes() -> TestResult {
    for immediate in [false, true] {
        let empty = Queue::<u32>::new()?;
        let full = Queue::<u32>::bounded(1)?;
        full.put(&0)?;
        let mut blocked = Vec::new();
        for role in ["get", "put"] {
            let (ours, mut theirs) = Pipe::new()?;
            let q = if role == "get" {
                empty.clone()
            } else {
                full.clone()
            };
            let p = child(move || {
                theirs.send(&"blocking").unwrap();
                let result = if role == "get" {
                    q.get().map(|_| ())
                } else {
                    q.put(&1)
                };
                let kind = result.map_err(|e| format!("{:?}", e.kind()));
                theirs.send(&kind).unwrap();
            })?;
            blocked.push((role, p, ours));
        }
        for (_, p, conn) in &mut blocked {
            assert_eq!(conn.recv_timeout::<String>(HANG)?, "blocking");
            wait_until_asleep(p)?;
        }
        for (role, _, conn) in &mut blocked {
            assert!(!conn.poll(Some(Duration::ZERO))?, "{role} returned early");
        }
        empty.shutdown(immediate);
        full.shutdown(immediate);
        for (role, p, conn) in &mut blocked {
            let result: Result<(), String> = conn.recv_timeout(HANG)?;
            assert_eq!(
                result,
                Err("ShutDown".to_owned()),
                "{role}, immediate {immediate}"
            );
            finish(p)?;
        }
    }
    Ok(())
}

/// The voluntary context switches of process `pid` so far, from `/proc/<pid>/status`: one
/// more each time it goes to sleep.
fn voluntary_switches(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let count = status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .ok_or("no voluntary_ctxt_switches in status")?;
    Ok(count.trim().parse()?)
}

/// Starts `n` children that each block in `block` (a get on an empty queue, a put on a
/// full one), runs `act` once they all sleep, and returns how many of the children that
/// `act` did not let through were woken: their voluntary context switches moved between
/// `act` and their next sleep. One that slept on moves only if its periodic look (every
/// 100 ms, against wake-ups lost to a killed waker) fell in that window of a few ms. Then
/// `release` lets the others through, and all are finished.
fn woken_besides_the_one(
    n: usize,
    block: impl Fn() -> multiproc::Result<()> + Clone + Send + 'static,
    act: impl FnOnce() -> TestResult,
    release: impl FnOnce() -> TestResult,
) -> Res<usize> {
    let mut blocked = Vec::new();
    for _ in 0..n {
        let (ours, mut theirs) = Pipe::new()?;
        let block = block.clone();
        let p = child(move || {
            block().unwrap();
            theirs.send(&"through").unwrap();
        })?;
        blocked.push((p, ours));
    }
    let mut before = Vec::new();
    for (p, _) in &blocked {
        wait_until_asleep(p)?;
        before.push(voluntary_switches(p.pid().ok_or("not started")?)?);
    }
    act()?;
    let mut conns: Vec<&mut Connection> = blocked.iter_mut().map(|(_, c)| c).collect();
    let through = wait(&mut conns, Some(HANG))?;
    assert_eq!(through.len(), 1, "one item or slot let {through:?} through");
    let through = through[0];
    assert_eq!(blocked[through].1.recv_timeout::<String>(HANG)?, "through");
    finish(&mut blocked[through].0)?;
    let mut woken = 0;
    for (i, (p, _)) in blocked.iter().enumerate().filter(|&(i, _)| i != through) {
        wait_until_asleep(p)?;
        if voluntary_switches(p.pid().ok_or("not started")?)? != before[i] {
            woken += 1;
        }
    }
    release()?;
    for (i, (p, conn)) in blocked.iter_mut().enumerate() {
        if i != through {
            assert_eq!(conn.recv_timeout::<String>(HANG)?, "through");
            finish(p)?;
        }
    }
    Ok(woken)
}

/// One put wakes one of the getters asleep on an empty queue, not all of them: a getter
/// woken for an item another took spins and runs a barrier in every producer before it
/// sleeps again, which cost a pool of idle consumers that much per item.
fn a_put_wakes_one_sleeping_getter_not_all() -> TestResult {
    const GETTERS: usize = 8;
    let q = Queue::<u32>::new()?;
    let getter = q.clone();
    let woken = woken_besides_the_one(
        GETTERS,
        move || getter.get().map(|_| ()),
        || Ok(q.put(&1)?),
        || {
            for i in 1..GETTERS as u32 {
                q.put(&i)?;
            }
            Ok(())
        },
    )?;
    // Waking all would wake all 7 others; a periodic look lands in the window ~3% of the
    // time per getter.
    assert!(
        woken <= (GETTERS - 1) / 2,
        "a put woke {woken} getters besides the one"
    );
    assert!(q.empty());
    Ok(())
}

/// One get from a full bounded queue wakes one of the putters asleep on it, not all.
fn a_get_wakes_one_sleeping_putter_not_all() -> TestResult {
    const PUTTERS: usize = 8;
    let q = Queue::<u32>::bounded(1)?;
    q.put(&0)?;
    let putter = q.clone();
    let woken = woken_besides_the_one(
        PUTTERS,
        move || putter.put(&1),
        || Ok(q.get().map(|_| ())?),
        || {
            for _ in 1..PUTTERS {
                q.get()?;
            }
            Ok(())
        },
    )?;
    assert!(
        woken <= (PUTTERS - 1) / 2,
        "a get woke {woken} putters besides the one"
    );
    assert_eq!(q.qsize(), 1);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JoinableQueue

/// Workers in three processes get and `task_done` 300 items, each recording it in a results
/// queue *before* marking it done; `join` in this process returns only once all are done:
/// the results queue then holds exactly 300 (put is final when it returns).
fn joinable_join_returns_after_every_task_done() -> TestResult {
    const N: u32 = 300;
    let jobs = JoinableQueue::new()?;
    let results = Queue::new()?;
    for i in 0..N {
        jobs.put(&i)?;
    }
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (jobs, results) = (jobs.clone(), results.clone());
        workers.push(child(move || {
            loop {
                match jobs.get() {
                    Ok(job) => {
                        results.put(&job).unwrap();
                        jobs.task_done().unwrap();
                    }
                    Err(e) if e.kind() == ErrorKind::ShutDown => break,
                    Err(e) => panic!("{e}"),
                }
            }
        })?);
    }
    jobs.join_timeout(HANG)?;
    assert_eq!(
        results.qsize(),
        N as usize,
        "join returned before all were done"
    );
    assert_eq!(jobs.qsize(), 0);
    let mut done: Vec<u32> = drain(&results)?;
    done.sort_unstable();
    assert_eq!(done, (0..N).collect::<Vec<_>>());
    jobs.shutdown(false);
    for p in &mut workers {
        finish(p)?;
    }
    // Nothing unfinished: join returns at once.
    jobs.join_timeout(Duration::ZERO)?;
    Ok(())
}

/// As Python 3.13: `shutdown(immediate)` counts the items it discards as done, so `join`
/// waits only for those taken before; a plain `shutdown` leaves `join` waiting for every
/// `task_done` (a joiner in another process is released by the last one).
fn joinable_shutdown_counts_discarded_items_done() -> TestResult {
    let q = JoinableQueue::new()?;
    for i in 0..3u32 {
        q.put(&i)?;
    }
    assert_eq!(q.get()?, 0);
    q.shutdown(false);
    let err = q.join_timeout(Duration::from_millis(20)).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Timeout,
        "3 unfinished after a plain shutdown"
    );
    q.shutdown(true); // discards items 1 and 2: done
    let err = q.join_timeout(Duration::from_millis(20)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "item 0 is taken, not done");
    let joiner = q.clone();
    let mut p = child(move || joiner.join().unwrap())?;
    wait_until_asleep(&p)?;
    q.task_done()?;
    finish(&mut p)?;
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

/// While one item is taken but not done, `join_timeout` gives `Timeout` here and a `join` in
/// another process stays blocked; `task_done` (from a third process) releases both.
fn joinable_join_timeout_times_out_while_a_task_is_open() -> TestResult {
    let q = JoinableQueue::new()?;
    q.put(&"job".to_owned())?;
    let (mut worker_conn, mut theirs) = Pipe::new()?;
    let worker_q = q.clone();
    let mut worker = child(move || {
        let job: String = worker_q.get().unwrap();
        theirs.send(&job).unwrap();
        let _: () = theirs.recv().unwrap();
        worker_q.task_done().unwrap();
    })?;
    let (mut joiner_conn, mut theirs) = Pipe::new()?;
    let joiner_q = q.clone();
    let mut joiner = child(move || {
        joiner_q.join().unwrap();
        theirs.send(&"joined").unwrap();
    })?;
    assert_eq!(worker_conn.recv_timeout::<String>(HANG)?, "job");
    let t = Instant::now();
    let err = q.join_timeout(Duration::from_millis(200)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(t.elapsed() >= Duration::from_millis(200));
    wait_until_asleep(&joiner)?;
    assert!(
        !joiner_conn.poll(Some(Duration::ZERO))?,
        "join returned early"
    );
    worker_conn.send(&())?;
    q.join_timeout(HANG)?;
    assert_eq!(joiner_conn.recv_timeout::<String>(HANG)?, "joined");
    finish(&mut worker)?;
    finish(&mut joiner)?;
    Ok(())
}

/// `task_done` once more than items were put is `InvalidInput` (Python's ValueError), in any
/// process, and leaves the count intact; a failed put does not count.
fn joinable_task_done_too_often_is_invalid_input() -> TestResult {
    let q = JoinableQueue::<u32>::bounded(2)?;
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidInput);
    q.put(&1)?;
    q.put(&2)?;
    // Full: the failed puts are not counted.
    assert_eq!(q.try_put(&3).unwrap_err().kind(), ErrorKind::Full);
    assert_eq!(
        q.put_timeout(&3, Duration::from_millis(1))
            .unwrap_err()
            .kind(),
        ErrorKind::Full
    );
    assert_eq!(q.get()?, 1);
    assert_eq!(q.get()?, 2);
    let other = q.clone();
    let mut p = child(move || {
        other.task_done().unwrap();
        other.task_done().unwrap();
        assert_eq!(
            other.task_done().unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
    })?;
    finish(&mut p)?;
    q.join_timeout(Duration::ZERO)?;
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidInput);
    // Still counting right after the errors.
    q.put(&4)?;
    assert!(q.join_timeout(Duration::from_millis(1)).is_err());
    assert_eq!(q.get()?, 4);
    q.task_done()?;
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Items big and many

/// Items of 0 bytes, 1 MiB and 100 MiB cross in both directions with every byte intact.
fn items_of_0_bytes_1_mib_and_100_mib_arrive_intact() -> TestResult {
    let sizes = [0, 1, MIB, 100 * MIB, 3];
    let q = Queue::<ByteBuf>::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        for (i, &len) in sizes.iter().enumerate() {
            producer
                .put(&ByteBuf::from(pattern(len, i as u64)))
                .unwrap();
        }
    })?;
    for (i, &len) in sizes.iter().enumerate() {
        let got = q.get_timeout(HANG)?;
        if !is_pattern(&got, len, i as u64) {
            fail!(
                "item {i} of {len} bytes came back as {} other bytes",
                got.len()
            );
        }
    }
    finish(&mut p)?;
    // And from here to a child, which checks them.
    let back = Queue::<bool>::new()?;
    let (consumer_q, consumer_back) = (q.clone(), back.clone());
    for (i, &len) in sizes.iter().enumerate() {
        q.put(&ByteBuf::from(pattern(len, 100 + i as u64)))?;
    }
    let mut p = child(move || {
        for (i, &len) in sizes.iter().enumerate() {
            let got = consumer_q.get().unwrap();
            consumer_back
                .put(&is_pattern(&got, len, 100 + i as u64))
                .unwrap();
        }
    })?;
    for i in 0..sizes.len() {
        assert!(
            back.get_timeout(HANG)?,
            "item {i} corrupted on the way to the child"
        );
    }
    finish(&mut p)?;
    assert!(q.empty());
    Ok(())
}

/// Items on both sides of the size from which a frame pads its payload (1 KiB) and of the
/// CBOR header's growth from 3 to 5 bytes (64 KiB), typed (`ByteBuf`, `String`) and raw,
/// come out of a child's puts intact: their frames start at both 8-byte positions modulo 16,
/// and many of them run across a chunk's end.
fn items_around_the_padding_sizes_arrive_intact() -> TestResult {
    let sizes: Vec<usize> = (1000..1060).chain(65_520..65_550).collect();
    let bytes = Queue::<ByteBuf>::new()?;
    let text = Queue::<String>::new()?;
    let (bytes_p, text_p, sizes_p) = (bytes.clone(), text.clone(), sizes.clone());
    let mut p = child(move || {
        for (i, &len) in sizes_p.iter().enumerate() {
            let salt = i as u64;
            bytes_p.put(&ByteBuf::from(pattern(len, salt))).unwrap();
            bytes_p.put_bytes(&pattern(len, salt + 1_000)).unwrap();
            text_p.put(&"x".repeat(len)).unwrap();
        }
    })?;
    for (i, &len) in sizes.iter().enumerate() {
        let salt = i as u64;
        let typed = bytes.get_timeout(HANG)?;
        if !is_pattern(&typed, len, salt) {
            fail!(
                "typed item {i} of {len} bytes came back as {} other bytes",
                typed.len()
            );
        }
        let mut raw = Vec::new();
        bytes.get_bytes_timeout(&mut raw, HANG)?;
        if !is_pattern(&raw, len, salt + 1_000) {
            fail!(
                "raw item {i} of {len} bytes came back as {} other bytes",
                raw.len()
            );
        }
        let string = text.get_timeout(HANG)?;
        if string.len() != len || string.bytes().any(|b| b != b'x') {
            fail!(
                "string {i} of {len} bytes came back as {} other bytes",
                string.len()
            );
        }
    }
    finish(&mut p)?;
    Ok(())
}

/// Reads a byte string as a sequence of bytes (as `Vec<u8>` does), which only ciborium
/// gives it: what a queue's fast path for strings must hand on, header and all.
#[derive(Debug, PartialEq, Deserialize)]
struct AsSeq(Vec<u8>);

impl Serialize for AsSeq {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

/// Lone byte and text strings, which a put stores without their CBOR header, come back
/// through `get_bytes` as exactly what ciborium writes for them, at every header size and
/// on both sides of the padding size, and through `get` as themselves; where the item type
/// wants something else of a string, ciborium's answer stands.
fn lone_strings_come_back_as_ciborium_encodes_them() -> TestResult {
    let sizes = [0, 23, 24, 255, 256, 1023, 1024, 65_535, 65_536, 300_000];
    let text = |len: usize| -> String {
        (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    };
    let bytes = Queue::<ByteBuf>::new()?;
    let texts = Queue::<String>::new()?;
    let seq = Queue::<AsSeq>::new()?;
    let (bytes_p, texts_p, seq_p) = (bytes.clone(), texts.clone(), seq.clone());
    let mut p = child(move || {
        for _ in 0..2 {
            for (i, &len) in sizes.iter().enumerate() {
                bytes_p.put(&ByteBuf::from(pattern(len, i as u64))).unwrap();
                texts_p.put(&text(len)).unwrap();
            }
        }
        seq_p.put(&AsSeq(vec![1, 2, 3])).unwrap();
    })?;
    let mut got = Vec::new();
    let mut expected = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        expected.clear();
        ciborium::into_writer(&ByteBuf::from(pattern(len, i as u64)), &mut expected)?;
        bytes.get_bytes_timeout(&mut got, HANG)?;
        if got != expected {
            fail!(
                "bytes of {len} came back as {} bytes unlike ciborium's",
                got.len()
            );
        }
        expected.clear();
        ciborium::into_writer(&text(len), &mut expected)?;
        texts.get_bytes_timeout(&mut got, HANG)?;
        if got != expected {
            fail!(
                "text of {len} came back as {} bytes unlike ciborium's",
                got.len()
            );
        }
    }
    for (i, &len) in sizes.iter().enumerate() {
        if !is_pattern(&bytes.get_timeout(HANG)?, len, i as u64) {
            fail!("bytes of {len} came back changed");
        }
        if texts.get_timeout(HANG)? != text(len) {
            fail!("text of {len} came back changed");
        }
    }
    assert_eq!(seq.get_timeout(HANG)?, AsSeq(vec![1, 2, 3]));
    finish(&mut p)?;
    Ok(())
}

/// Over 1 GiB of ~1 MiB items (odd sizes) streams through a queue of 4 from a producer
/// process: positions pass 1 GiB, so every entry of the producer's chunk map is reused, and
/// frames are split across chunks. Every item arrives intact and in order, memory stays
/// within a few items' worth as chunks go round (and all of it is given back once the
/// drained log is freed).
fn ring_wraps_with_frames_split_across_its_end() -> TestResult {
    const ITEMS: u64 = 1_100;
    let len_of = |i: u64| MIB + (i as usize % 7) * 1_013 + 5;
    let q = Queue::<ByteBuf>::bounded(4)?;
    let producer = q.clone();
    let mut p = child(move || {
        for i in 0..ITEMS {
            producer.put(&ByteBuf::from(pattern(len_of(i), i))).unwrap();
        }
        // Lets go of its log, to be freed once drained. (A forked child leaves without
        // dropping the handles it inherited, so without `close` the log would stay held:
        // see `forked_producer_lets_go_of_its_log_at_exit`.)
        producer.close();
    })?;
    let mut streamed = 0u64;
    let mut peak = 0;
    for i in 0..ITEMS {
        let got = q.get_timeout(HANG)?;
        if !is_pattern(&got, len_of(i), i) {
            fail!(
                "item {i} ({} bytes, after {streamed} bytes streamed) is corrupt",
                got.len()
            );
        }
        streamed += got.len() as u64;
        if i % 50 == 0 {
            peak = peak.max(queue_memory()?);
        }
    }
    finish(&mut p)?;
    assert!(streamed > 1 << 30, "only {streamed} bytes streamed");
    // At most 4 items queued plus one being written, in 64 KiB chunks: far below what went by.
    assert!(peak < 32 * MIB as u64, "memory peaked at {peak} bytes");
    assert!(q.empty());
    let left = queue_memory()?;
    assert!(left < MIB as u64, "{left} bytes still held after the drain");
    Ok(())
}

/// A producer process puts 1,000,000 small items with no consumer and exits: they are all
/// there (`qsize` exact), then come out in order, and the queue is empty and its memory
/// given back.
fn a_million_items_wait_without_consumer_then_drain_in_order() -> TestResult {
    const N: u32 = 1_000_000;
    let q = Queue::<u32>::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        for i in 0..N {
            producer.put(&i).unwrap();
        }
        producer.close();
    })?;
    finish(&mut p)?;
    assert_eq!(q.qsize(), N as usize);
    assert!(!q.empty());
    for i in 0..N {
        let got = q.try_get()?;
        if got != i {
            fail!("item {i} came out as {got}");
        }
    }
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::Empty);
    assert_eq!((q.qsize(), q.empty()), (0, true));
    let left = queue_memory()?;
    assert!(left < MIB as u64, "{left} bytes still held after the drain");
    Ok(())
}

/// A producer process may have at most 1 GiB waiting: the put past it is `Full` (nothing
/// added; small items still fit), and fits once a consumer took an item.
fn a_producers_backlog_over_1_gib_is_full() -> TestResult {
    const BIG: usize = 300 * MIB;
    let q = Queue::<ByteBuf>::new()?;
    let producer = q.clone();
    let (mut ours, mut theirs) = Pipe::new()?;
    let mut p = child(move || {
        let big = ByteBuf::from(vec![0xa5; BIG]);
        for _ in 0..3 {
            producer.put(&big).unwrap();
        }
        let err = producer.put(&big).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Full, "{err}");
        assert_eq!(producer.qsize(), 3);
        producer.put(&ByteBuf::from(vec![1, 2, 3])).unwrap();
        theirs.send(&()).unwrap();
        let _: () = theirs.recv().unwrap();
        producer.put(&big).unwrap();
    })?;
    ours.recv_timeout::<()>(HANG)?;
    assert_eq!(q.qsize(), 4);
    let first = q.get()?;
    assert!(first.as_slice() == vec![0xa5; BIG].as_slice(), "corrupt");
    drop(first);
    ours.send(&())?;
    finish(&mut p)?;
    assert_eq!(q.qsize(), 4);
    Ok(())
}

/// An item over 512 MiB is refused with `InvalidInput`; nothing is put.
fn an_item_over_512_mib_is_invalid_input() -> TestResult {
    let q = Queue::<ByteBuf>::new()?;
    q.put(&ByteBuf::from(vec![1]))?;
    let err = q.put(&ByteBuf::from(vec![0; 512 * MIB + 1])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get()?.as_slice(), [1]);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Serialises as a sequence of `.0` numbers, then fails at the end when `.0 >= 1000`: the
/// encoder has written bytes by then.
#[derive(Debug, PartialEq, Deserialize)]
struct FailsLate(u32);

impl Serialize for FailsLate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 < 1000 {
            return s.serialize_newtype_struct("FailsLate", &self.0);
        }
        let mut seq = s.serialize_seq(None)?;
        for i in 0..self.0 {
            seq.serialize_element(&i)?;
        }
        Err(S::Error::custom("deliberate encode failure"))
    }
}

/// An encode failure reaches the caller of every put flavour (`Encode`, with the message),
/// and nothing is put: `qsize` is unchanged, the next item is intact, and a `JoinableQueue`
/// does not count it.
fn encode_errors_reach_put_and_put_nothing() -> TestResult {
    let q = Queue::bounded(4)?;
    q.put(&FailsLate(1))?;
    for err in [
        q.put(&FailsLate(5000)).unwrap_err(),
        q.try_put(&FailsLate(5000)).unwrap_err(),
        q.put_timeout(&FailsLate(5000), Duration::from_millis(1))
            .unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Encode);
        assert!(err.to_string().contains("deliberate"), "{err}");
    }
    assert_eq!(q.qsize(), 1);
    q.put(&FailsLate(2))?;
    assert_eq!(drain(&q)?, [FailsLate(1), FailsLate(2)]);

    let jq = JoinableQueue::new()?;
    assert_eq!(
        jq.put(&FailsLate(1000)).unwrap_err().kind(),
        ErrorKind::Encode
    );
    assert_eq!(jq.qsize(), 0);
    jq.join_timeout(Duration::ZERO)?;
    Ok(())
}

/// Deserialises like a `u32` but refuses 13.
#[derive(Debug, PartialEq, Serialize)]
struct NotThirteen(u32);

impl<'de> Deserialize<'de> for NotThirteen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u32::deserialize(d)? {
            13 => Err(D::Error::custom("13 refused")),
            n => Ok(NotThirteen(n)),
        }
    }
}

/// An item that does not decode is taken anyway (`Decode`); the next one is unaffected.
fn decode_errors_take_the_item() -> TestResult {
    let q = Queue::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        producer.put(&NotThirteen(13)).unwrap();
        producer.put(&NotThirteen(14)).unwrap();
    })?;
    finish(&mut p)?;
    let err = q.get().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get()?, NotThirteen(14));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Readiness

/// In `wait`: not ready while empty, ready once another process put, not ready again after
/// `try_get` took the last item; ready after shutdown (the get fails at once).
fn queue_in_wait_is_ready_exactly_while_items_are_there() -> TestResult {
    let mut q = Queue::<u32>::new()?;
    let none: [usize; 0] = [];
    assert_eq!(wait(&mut [&mut q], Some(Duration::ZERO))?, none);
    let (mut ours, mut theirs) = Pipe::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        // Not until end of file: the child holds a copy of our end too (fork).
        loop {
            let n: u32 = theirs.recv().unwrap();
            if n == u32::MAX {
                break;
            }
            for i in 0..n {
                producer.put(&i).unwrap();
            }
            theirs.send(&()).unwrap();
        }
    })?;
    for n in [1, 3] {
        ours.send(&n)?;
        assert_eq!(wait(&mut [&mut q], Some(HANG))?, [0]);
        ours.recv_timeout::<()>(HANG)?;
        for i in 0..n {
            assert_eq!(wait(&mut [&mut q], Some(Duration::ZERO))?, [0]);
            assert_eq!(q.try_get()?, i);
        }
        assert_eq!(wait(&mut [&mut q], Some(Duration::ZERO))?, none);
        assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::Empty);
        assert_eq!(wait(&mut [&mut q], Some(Duration::ZERO))?, none);
    }
    ours.send(&u32::MAX)?;
    finish(&mut p)?;
    q.shutdown(false);
    assert_eq!(wait(&mut [&mut q], Some(HANG))?, [0]);
    assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::ShutDown);
    Ok(())
}

/// A queue and two connections in one `wait`: each is reported exactly when it has
/// something, alone or together.
fn queue_and_connections_in_one_wait() -> TestResult {
    let mut q = Queue::<String>::new()?;
    let (mut a, mut a_child) = Pipe::new()?;
    let (mut b, mut b_child) = Pipe::new()?;
    let (mut control, mut control_child) = Pipe::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        loop {
            let what: String = control_child.recv().unwrap();
            if what == "exit" {
                break;
            }
            for c in what.chars() {
                match c {
                    'a' => a_child.send(&"to a").unwrap(),
                    'b' => b_child.send(&"to b").unwrap(),
                    _ => producer.put(&"to q".to_owned()).unwrap(),
                }
            }
            control_child.send(&()).unwrap();
        }
    })?;
    let mut check = |what: &str, expected: &[usize]| -> TestResult {
        control.send(&what)?;
        control.recv_timeout::<()>(HANG)?;
        let mut set = [&mut a as &mut dyn Waitable, &mut q, &mut b];
        assert_eq!(wait(&mut set, Some(HANG))?, expected, "after {what}");
        if expected.contains(&0) {
            assert_eq!(a.recv::<String>()?, "to a");
        }
        if expected.contains(&1) {
            assert_eq!(q.try_get()?, "to q");
        }
        if expected.contains(&2) {
            assert_eq!(b.recv::<String>()?, "to b");
        }
        let mut set = [&mut a as &mut dyn Waitable, &mut q, &mut b];
        assert!(
            wait(&mut set, Some(Duration::ZERO))?.is_empty(),
            "after {what}"
        );
        Ok(())
    };
    check("q", &[1])?;
    check("b", &[2])?;
    check("a", &[0])?;
    check("aq", &[0, 1])?;
    check("qb", &[1, 2])?;
    check("bqa", &[0, 1, 2])?;
    control.send(&"exit")?;
    finish(&mut p)
}

/// What the `WaitSet` below holds: the queue and the producer's exit sentinel.
enum Watched {
    Items(Queue<u32>),
    Exit(Sentinel),
}

impl Waitable for Watched {
    fn wait_fd(&self) -> multiproc::Result<BorrowedFd<'_>> {
        match self {
            Watched::Items(q) => q.wait_fd(),
            Watched::Exit(s) => s.wait_fd(),
        }
    }

    fn is_ready(&mut self) -> bool {
        match self {
            Watched::Items(q) => q.is_ready(),
            Watched::Exit(s) => s.is_ready(),
        }
    }

    fn is_ready_buffered(&self) -> bool {
        match self {
            Watched::Items(q) => q.is_ready_buffered(),
            Watched::Exit(s) => s.is_ready_buffered(),
        }
    }
}

/// A consumer loop on a `WaitSet` (queue + the producer's sentinel), draining with
/// `try_get` on each wake-up, gets every item a producer process puts in bursts over time,
/// in order, and sees the producer exit; no wake-up is lost.
fn wait_set_consumer_loop_gets_every_item_put_over_time() -> TestResult {
    const N: u32 = 2_000;
    let q = Queue::<u32>::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        for i in 0..N {
            producer.put(&i).unwrap();
            if i % 97 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })?;
    let mut set = WaitSet::new()?;
    let items = set.insert(Watched::Items(q))?;
    let exit = set.insert(Watched::Exit(p.sentinel()?))?;
    let mut next = 0;
    let mut exited = false;
    let mut wakeups = 0;
    while next < N || !exited {
        let ready = set.wait(Some(HANG))?;
        if ready.is_empty() {
            fail!("nothing ready for {HANG:?}: got {next} of {N} items, exited: {exited}");
        }
        wakeups += 1;
        if ready.contains(&items) {
            let Some(Watched::Items(q)) = set.get_mut(items) else {
                fail!("lost the queue");
            };
            for got in drain(q)? {
                if got != next {
                    fail!("got {got}, expected {next}");
                }
                next += 1;
            }
        }
        if ready.contains(&exit) {
            exited = true;
            set.remove(exit);
        }
    }
    finish(&mut p)?;
    eprintln!("{N} items in {wakeups} wake-ups");
    Ok(())
}

/// Registered in a user's own mio `Poll`: every burst from another process produces an
/// event, and draining with `try_get` until `Empty` re-arms it.
fn queue_in_a_mio_poll_wakes_for_each_burst() -> TestResult {
    let mut q = Queue::<u32>::new()?;
    let mut poll = mio::Poll::new()?;
    let mut events = mio::Events::with_capacity(8);
    poll.registry()
        .register(&mut q, mio::Token(7), mio::Interest::READABLE)?;
    let (mut ours, mut theirs) = Pipe::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        let mut next = 0;
        loop {
            let n: u32 = theirs.recv().unwrap();
            if n == 0 {
                break;
            }
            for _ in 0..n {
                producer.put(&next).unwrap();
                next += 1;
            }
            theirs.send(&()).unwrap();
        }
    })?;
    let mut next = 0;
    for burst in [1, 5, 1, 50] {
        ours.send(&burst)?;
        let target = next + burst;
        let deadline = Instant::now() + HANG;
        while next < target {
            poll.poll(&mut events, Some(HANG))?;
            if Instant::now() > deadline {
                fail!("burst of {burst}: got {} of it", next + burst - target);
            }
            for event in &events {
                assert_eq!(event.token(), mio::Token(7));
            }
            for got in drain(&q)? {
                assert_eq!(got, next);
                next += 1;
            }
        }
        // Once the burst's puts have all returned, and `try_get` said `Empty`, no event is
        // left. (Before that, an event may announce an item an earlier drain already took.)
        ours.recv_timeout::<()>(HANG)?;
        assert!(drain(&q)?.is_empty());
        poll.poll(&mut events, Some(Duration::ZERO))?;
        assert!(events.is_empty(), "an event with nothing to take");
    }
    poll.registry().deregister(&mut q)?;
    ours.send(&0u32)?;
    finish(&mut p)
}

// ---------------------------------------------------------------------------------------------
// Handing queues to children; threads

/// What a spawned worker gets: queues of each kind and a connection, in one struct.
#[derive(Serialize, Deserialize)]
struct WorkerArgs {
    jobs: JoinableQueue<u32>,
    results: Queue<(u32, u64)>,
    log: SimpleQueue<String>,
    report: Connection,
}

fn spawned_worker(mut args: WorkerArgs) {
    let pid = std::process::id();
    args.report
        .send(&(args.jobs.maxsize(), args.results.maxsize()))
        .unwrap();
    loop {
        match args.jobs.get() {
            Ok(job) => {
                args.results
                    .put(&(job, u64::from(job) * u64::from(job)))
                    .unwrap();
                args.jobs.task_done().unwrap();
            }
            Err(e) if e.kind() == ErrorKind::ShutDown => break,
            Err(e) => panic!("{e}"),
        }
    }
    args.log.put(&format!("worker {pid} done")).unwrap();
}

/// Spawned children receive a `JoinableQueue`, a bounded `Queue` and a `SimpleQueue` inside
/// their argument struct and work on the very same queues; a queue sent as a message
/// anywhere else is refused.
fn queues_in_spawn_args_are_the_same_queues() -> TestResult {
    let jobs = JoinableQueue::bounded(8)?;
    let results = Queue::bounded(1000)?;
    let log = SimpleQueue::new()?;
    let mut workers = Vec::new();
    for _ in 0..2 {
        let (mut ours, report) = Pipe::new()?;
        let args = WorkerArgs {
            jobs: jobs.clone(),
            results: results.clone(),
            log: log.clone(),
            report,
        };
        let p = spawned(spawned_worker, args)?;
        let seen: (Option<usize>, Option<usize>) = ours.recv_timeout(HANG)?;
        assert_eq!(seen, (Some(8), Some(1000)));
        workers.push(p);
    }
    for job in 0..200u32 {
        jobs.put_timeout(&job, HANG)?;
    }
    jobs.join_timeout(HANG)?;
    assert_eq!(results.qsize(), 200);
    let mut got = drain(&results)?;
    got.sort_unstable();
    let expected: Vec<(u32, u64)> = (0..200u32).map(|j| (j, u64::from(j).pow(2))).collect();
    assert_eq!(got, expected);
    jobs.shutdown(false);
    let mut lines = Vec::new();
    for p in &mut workers {
        finish(p)?;
        lines.push(log.get()?);
    }
    lines.sort();
    let mut expected: Vec<String> = workers
        .iter()
        .map(|p| format!("worker {} done", p.pid().unwrap()))
        .collect();
    expected.sort();
    assert_eq!(lines, expected);
    assert!(log.empty());

    let (mut a, _b) = Pipe::new()?;
    assert!(a.send(&results).is_err(), "a queue sent as a message");
    Ok(())
}

/// A forked child captures a clone; what it puts stays in the queue after it exits, even
/// when it is SIGKILLed right after its puts returned; a grandchild works as well.
fn forked_children_share_the_queue_and_their_items_outlive_them() -> TestResult {
    let q = Queue::<u32>::new()?;
    let (mut ours, mut theirs) = Pipe::new()?;
    let producer = q.clone();
    let p = child(move || {
        for i in 0..3 {
            producer.put(&i).unwrap();
        }
        let grandchild_q = producer.clone();
        let mut g = Process::fork(move || grandchild_q.put(&3).unwrap());
        g.start().unwrap();
        assert_eq!(g.join().unwrap(), 0);
        theirs.send(&()).unwrap();
        let _ = theirs.recv_bytes();
    })?;
    ours.recv_timeout::<()>(HANG)?;
    p.kill()?;
    assert_eq!(p.join_timeout(HANG)?, -libc::SIGKILL);
    assert_eq!(q.qsize(), 4);
    let mut got = drain(&q)?;
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3]);
    Ok(())
}

/// A child forked behind our back (`fork(2)` as another library calls it, not
/// `Process::fork`) after this process put: its puts go to a log of its own, so the two
/// processes putting at once never write over each other's items.
fn a_child_forked_by_another_library_puts_without_harm() -> TestResult {
    const LEN: usize = 100;
    const EACH: u32 = 20_000;
    const THEIRS: u32 = 1 << 30;
    let q = Queue::<(u32, ByteBuf)>::new()?;
    let item = |id: u32| (id, ByteBuf::from(pattern(LEN, u64::from(id))));
    q.put(&item(0))?; // this process now owns a log
    let child_q = q.clone();
    let child = multiproc::bench_support::foreign_fork(move || {
        for id in THEIRS..THEIRS + EACH {
            child_q.put(&item(id)).unwrap();
        }
    })?;
    for id in 1..EACH {
        q.put(&item(id))?;
    }
    assert_eq!(child.wait()?, 0, "the foreign child failed");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..2 * EACH {
        let (id, bytes) = q.get_timeout(HANG)?;
        assert!(
            is_pattern(&bytes, LEN, u64::from(id)),
            "item {id} is corrupt"
        );
        if id >= THEIRS {
            theirs.push(id);
        } else {
            ours.push(id);
        }
    }
    assert_eq!(ours, (0..EACH).collect::<Vec<_>>(), "this process's items");
    assert_eq!(
        theirs,
        (THEIRS..THEIRS + EACH).collect::<Vec<_>>(),
        "the child's items"
    );
    assert!(q.empty());
    Ok(())
}

/// Four threads put and three take through clones of one queue (a spawned child consumes
/// beside them, started while the threads run): every item once, each consumer seeing each
/// producer thread's items in order.
fn threads_and_a_spawned_child_share_a_queue() -> TestResult {
    const EACH: u32 = 5_000;
    let q = Queue::<Tagged>::bounded(64)?;
    let producers: Vec<_> = (0..4)
        .map(|producer| {
            let q = q.clone();
            std::thread::spawn(move || produce(&q, producer, EACH))
        })
        .collect();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let q = q.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(t) = q.get() {
                    got.push(t);
                }
                got
            })
        })
        .collect();
    let (mut ours, theirs) = Pipe::new()?;
    let mut remote = spawned(
        |(q, out): (Queue<Tagged>, Connection)| consume_until_shutdown(q, out),
        (q.clone(), theirs),
    )?;
    for t in producers {
        t.join().map_err(|_| "producer thread panicked")?;
    }
    q.shutdown(false);
    let mut lists = Vec::new();
    for t in consumers {
        lists.push(t.join().map_err(|_| "consumer thread panicked")?);
    }
    lists.push(ours.recv_timeout(HANG)?);
    finish(&mut remote)?;
    for (i, got) in lists.iter().enumerate() {
        check_fifo_per_producer(i, got)?;
    }
    eprintln!(
        "taken by the two threads and the child: {:?}",
        lists.iter().map(Vec::len).collect::<Vec<_>>()
    );
    check_exactly_once(&lists, 4, EACH)
}

// ---------------------------------------------------------------------------------------------
// close, SimpleQueue, the log table

/// After `close`, this process (every clone here, and a child forked later, as in Python)
/// can put no more (`Closed`), while what it put is still delivered and gets still work; a
/// spawned child has a fresh handle and puts. Memory is given back once the closed
/// producer's items are drained.
fn close_stops_this_process_putting_only() -> TestResult {
    let q = Queue::<ByteBuf>::new()?;
    for i in 0..2_000u64 {
        q.put(&ByteBuf::from(pattern(1000, i)))?;
    }
    let clone = q.clone();
    q.close();
    q.close(); // twice is fine
    let one = ByteBuf::from(vec![1]);
    for err in [
        q.put(&one).unwrap_err(),
        q.try_put(&one).unwrap_err(),
        q.put_timeout(&one, Duration::from_millis(1)).unwrap_err(),
        clone.put(&one).unwrap_err(),
    ] {
        assert_eq!(err.kind(), ErrorKind::Closed);
    }
    assert_eq!(q.qsize(), 2_000);
    assert!(queue_memory()? > MIB as u64);
    let inherited = q.clone();
    let mut forked = child(move || {
        assert_eq!(inherited.put(&one).unwrap_err().kind(), ErrorKind::Closed);
        // Getting works in the child as well.
        assert_eq!(
            inherited.get().unwrap().as_slice(),
            pattern(1000, 0).as_slice()
        );
    })?;
    finish(&mut forked)?;
    let mut fresh = spawned(
        |q: Queue<ByteBuf>| {
            q.put(&ByteBuf::from(b"from a spawned child".to_vec()))
                .unwrap()
        },
        q.clone(),
    )?;
    finish(&mut fresh)?;
    let mut got = drain(&q)?;
    assert_eq!(got.len(), 2_000);
    // Ours in order; the child's anywhere among them (FIFO is per producer).
    let spawned_at = got
        .iter()
        .position(|item| item.as_slice() == b"from a spawned child")
        .ok_or("the spawned child's item is missing")?;
    got.remove(spawned_at);
    for (i, item) in got.iter().enumerate() {
        assert_eq!(item.as_slice(), pattern(1000, i as u64 + 1).as_slice());
    }
    assert!(q.empty());
    let left = queue_memory()?;
    assert!(
        left < DRAINED_KEEPS,
        "{left} bytes still held after the drain"
    );
    Ok(())
}

/// Puts 2,000 items of 1 KiB (2 MiB in all) and returns without `close`.
fn puts_2000_items(q: Queue<ByteBuf>) {
    for i in 0..2_000u64 {
        q.put(&ByteBuf::from(pattern(1000, i))).unwrap();
    }
}

/// Whether the memory of a producer's items comes back once they are drained after it
/// exited (without calling `close`).
fn drained_items_of_an_exited_producer_give_memory_back(mut producer: Process) -> TestResult {
    finish(&mut producer)?;
    assert!(queue_memory()? > MIB as u64);
    Ok(())
}

/// A spawned producer that returns without `close` drops its handle, which lets go of its
/// log: the memory of its items is given back once a consumer drained them.
fn spawned_producer_lets_go_of_its_log_at_exit() -> TestResult {
    let q = Queue::<ByteBuf>::new()?;
    drained_items_of_an_exited_producer_give_memory_back(spawned(puts_2000_items, q.clone())?)?;
    assert_eq!(drain(&q)?.len(), 2_000);
    let left = queue_memory()?;
    assert!(
        left < DRAINED_KEEPS,
        "{left} bytes still held after the drain"
    );
    Ok(())
}

/// The same for a forked producer. A forked child exits with `_exit`, which drops none of
/// the handles it inherited, so it lets go of the logs it claimed explicitly on its way out.
fn forked_producer_lets_go_of_its_log_at_exit() -> TestResult {
    let q = Queue::<ByteBuf>::new()?;
    let producer = q.clone();
    drained_items_of_an_exited_producer_give_memory_back(child(move || {
        puts_2000_items(producer)
    })?)?;
    assert_eq!(drain(&q)?.len(), 2_000);
    let left = queue_memory()?;
    assert!(
        left < DRAINED_KEEPS,
        "{left} bytes still held after the drain"
    );
    Ok(())
}

/// `SimpleQueue` between processes: put, get, empty, close.
fn simple_queue_between_processes() -> TestResult {
    let q = SimpleQueue::<(u8, String)>::new()?;
    assert!(q.empty());
    let producer = q.clone();
    let mut p = child(move || {
        for i in 0..10 {
            producer.put(&(i, i.to_string())).unwrap();
        }
        producer.close();
        assert_eq!(
            producer.put(&(0, String::new())).unwrap_err().kind(),
            ErrorKind::Closed
        );
    })?;
    finish(&mut p)?;
    assert!(!q.empty());
    for i in 0..10 {
        assert_eq!(q.get()?, (i, i.to_string()));
    }
    assert!(q.empty());
    q.put(&(99, "mine".to_owned()))?;
    assert_eq!(q.get()?, (99, "mine".to_owned()));
    Ok(())
}

/// 128 producer processes may put at once; the 129th is refused (`Unsupported`) while they
/// all live. A log whose owner was SIGKILLed is reclaimed once drained, and only then.
fn producer_table_holds_128_and_reclaims_logs_of_killed_producers() -> TestResult {
    let q = Queue::<u32>::new()?;
    let mut producers = Vec::new();
    for i in 0..128u32 {
        let (mut ours, mut theirs) = Pipe::new()?;
        let producer = q.clone();
        let p = child(move || {
            producer.put(&i).unwrap();
            theirs.send(&()).unwrap();
            let _ = theirs.recv_bytes();
        })?;
        ours.recv_timeout::<()>(HANG)?;
        producers.push((p, ours));
    }
    assert_eq!(q.qsize(), 128);
    let try_one_more = |value: u32| -> Res<String> {
        let producer = q.clone();
        let (mut ours, mut theirs) = Pipe::new()?;
        let mut p = child(move || {
            let kind = producer.put(&value).map_err(|e| format!("{:?}", e.kind()));
            theirs.send(&kind).unwrap();
        })?;
        let result: Result<(), String> = ours.recv_timeout(HANG)?;
        finish(&mut p)?;
        Ok(result.err().unwrap_or_else(|| "Ok".to_owned()))
    };
    assert_eq!(try_one_more(1000)?, "Unsupported");
    let (victim, _) = producers.remove(0);
    victim.kill()?;
    assert_eq!(victim.join_timeout(HANG)?, -libc::SIGKILL);
    // Its item still holds its log.
    assert_eq!(try_one_more(1001)?, "Unsupported");
    let mut got = drain(&q)?;
    got.sort_unstable();
    assert_eq!(got, (0..128).collect::<Vec<_>>());
    assert_eq!(try_one_more(1002)?, "Ok");
    assert_eq!(drain(&q)?, [1002]);
    for (p, conn) in &mut producers {
        conn.send_bytes(b"exit")?;
        finish(p)?;
    }
    // Every log is free again (released by exiting owners, drained): 128 more fit.
    let mut again = Vec::new();
    for i in 0..128u32 {
        let producer = q.clone();
        again.push(child(move || producer.put(&i).unwrap())?);
    }
    for p in &mut again {
        finish(p)?;
    }
    assert_eq!(q.qsize(), 128);
    Ok(())
}

/// A producer whose `/proc` entry another producer cannot see is alive all the same: a
/// root master producing next to workers that run as another user, with `/proc` mounted
/// `hidepid=2` (systemd's `ProtectProc=invisible`). A worker's first put frees the drained
/// logs of dead producers; it must not take the master for dead and free its log, which
/// it would then claim: the two would write over each other's items in one log.
fn a_producer_hidden_by_hidepid_keeps_its_log() -> TestResult {
    const NOBODY: u32 = 65534;
    if !rustix::process::geteuid().is_root() {
        return util::skip("needs root: a child mounts /proc with hidepid=2 and becomes nobody");
    }
    let q = Queue::<u32>::new()?;
    // Our log: claimed, drained, its owner alive.
    q.put(&1)?;
    assert_eq!(q.get_timeout(HANG)?, 1);
    let master = std::process::id();
    let (mut ours, mut theirs) = Pipe::new()?;
    let worker = q.clone();
    let mut p = child(move || {
        let hidden = || -> Result<(), String> {
            use rustix::thread::{UnshareFlags, set_thread_gid, set_thread_groups, set_thread_uid};
            // Only the mount namespace, of this single-threaded child: no fd table shared.
            #[allow(deprecated)]
            rustix::thread::unshare(UnshareFlags::NEWNS).map_err(|e| format!("unshare: {e}"))?;
            for args in [
                &["--make-rprivate", "/"][..],
                &["-t", "proc", "-o", "hidepid=2", "proc", "/proc"],
            ] {
                let status = std::process::Command::new("mount").args(args).status();
                if !status.as_ref().is_ok_and(|s| s.success()) {
                    return Err(format!("mount {args:?}: {status:?}"));
                }
            }
            set_thread_groups(&[]).map_err(|e| e.to_string())?;
            set_thread_gid(rustix::process::Gid::from_raw(NOBODY)).map_err(|e| e.to_string())?;
            set_thread_uid(rustix::process::Uid::from_raw(NOBODY)).map_err(|e| e.to_string())?;
            if std::path::Path::new(&format!("/proc/{master}")).exists() {
                return Err("hidepid=2 hides nothing here".into());
            }
            Ok(())
        };
        let setup = hidden();
        theirs.send(&setup).unwrap();
        if setup.is_err() {
            return;
        }
        worker.put(&2).unwrap();
        theirs.send_bytes(b"put").unwrap();
        assert_eq!(theirs.recv_bytes().unwrap(), b"go");
        worker.put(&4).unwrap();
    })?;
    if let Err(reason) = ours.recv_timeout::<Result<(), String>>(HANG)? {
        finish(&mut p)?;
        return util::skip(&format!("cannot hide /proc entries here: {reason}"));
    }
    assert_eq!(ours.recv_bytes_timeout(HANG)?, b"put");
    q.put(&3)?;
    ours.send_bytes(b"go")?;
    finish(&mut p)?;
    let mut got = drain(&q)?;
    got.sort_unstable();
    assert_eq!(
        got,
        [2, 3, 4],
        "items lost: two producers wrote into one log"
    );
    Ok(())
}

/// Raw items between processes: `put_bytes` in a child, `get_bytes` / `get_bytes_into` in
/// the parent, every size from 0 to 300 bytes and one of 3 MiB, in order and intact; a raw
/// item that is not a `T` is a `Decode` error for a typed `get` (and is taken); a typed item
/// reads as its CBOR bytes.
fn raw_bytes_between_processes_and_mixed_with_typed_items() -> TestResult {
    let q = Queue::<u32>::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        for len in 0..=300usize {
            producer.put_bytes(&pattern(len, len as u64)).unwrap();
        }
        producer.put_bytes(&pattern(3 * MIB, 7)).unwrap();
    })?;
    finish(&mut p)?;
    let mut buf = Vec::with_capacity(8);
    for len in 0..=300usize {
        let n = if len % 2 == 0 {
            q.get_bytes_into(&mut buf)?
        } else {
            buf = q.get_bytes()?;
            buf.len()
        };
        if n != len || !is_pattern(&buf, len, len as u64) {
            fail!("raw item {len} came out as {n} bytes, or corrupt");
        }
    }
    let big = q.get_bytes()?;
    assert!(
        is_pattern(&big, 3 * MIB, 7),
        "the 3 MiB raw item is corrupt"
    );
    q.put_bytes(&[0xff])?; // a CBOR "break": no u32
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Decode);
    assert!(q.empty(), "a failed decode still takes the item");
    q.put(&24)?;
    assert_eq!(q.get_bytes()?, [0x18, 24]);
    Ok(())
}

/// The raw calls' limits and timeouts: `put_bytes_timeout` on a full bounded queue is
/// `Full`, `get_bytes_timeout` on an empty one `Empty` (and leaves the queue not ready in
/// `wait`), an item over 512 MiB is `InvalidInput`, and after `shutdown` both fail.
fn raw_bytes_timeouts_limits_and_shutdown() -> TestResult {
    let q = Queue::<()>::bounded(1)?;
    q.put_bytes_timeout(b"one", Duration::from_millis(1))?;
    let err = q
        .put_bytes_timeout(b"two", Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Full, "{err}");
    let mut buf = vec![9; 3];
    assert_eq!(q.get_bytes_timeout(&mut buf, Duration::from_millis(1))?, 3);
    assert_eq!(buf, b"one");
    let err = q
        .get_bytes_timeout(&mut buf, Duration::from_millis(20))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Empty, "{err}");
    let mut queues = [q.clone()];
    assert!(wait(&mut queues, Some(Duration::ZERO))?.is_empty());
    let err = q.put_bytes(&vec![0; 512 * MIB + 1]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    q.put_bytes(b"last")?;
    q.shutdown(false);
    assert_eq!(
        q.put_bytes(b"late").unwrap_err().kind(),
        ErrorKind::ShutDown
    );
    assert_eq!(q.get_bytes()?, b"last");
    assert_eq!(q.get_bytes().unwrap_err().kind(), ErrorKind::ShutDown);
    Ok(())
}

/// Memory follows the backlog down while the producer lives: 62.5 MiB queued by a producer
/// process, drained by the parent, then 16 more puts give all but the kept chunks back
/// (at most 4 MiB plus the chunks in use). While a consumer keeps up (the producer waits for
/// its acknowledgements), a 200 MiB stream reuses the same few chunks: memory stays within
/// 10 MiB all along.
fn memory_follows_the_backlog_while_the_producer_lives() -> TestResult {
    // 1008-byte frames: the tail ends mid-chunk, so the puts after the drain need no new
    // chunk (which would look at the head anyway).
    const BACKLOG: usize = 64 * 1024 - 3;
    let q = Queue::<()>::new()?;
    let producer = q.clone();
    let (mut ours, mut theirs) = Pipe::new()?;
    let mut p = child(move || {
        let item = pattern(1000, 1);
        for _ in 0..BACKLOG {
            producer.put_bytes(&item).unwrap();
        }
        theirs.send(&()).unwrap();
        let _: () = theirs.recv().unwrap();
        // Puts after the drain look at the head again (every 16th, with this much
        // memory in use) and free the chunks behind it.
        for _ in 0..16 {
            producer.put_bytes(b"after").unwrap();
        }
        theirs.send(&()).unwrap();
        let _: () = theirs.recv().unwrap();
        // A stream a consumer keeps up with: 200 MiB through a few chunks. Paced by the
        // consumer's acknowledgements, so that at most 3 MiB are ever waiting.
        for batch in 0..200u64 {
            if batch >= 2 {
                let _: () = theirs.recv().unwrap();
            }
            for i in batch * 1024..(batch + 1) * 1024 {
                producer.put_bytes(&pattern(1024, i)).unwrap();
            }
        }
    })?;
    ours.recv_timeout::<()>(HANG)?;
    let full = queue_memory()?;
    assert!(full >= 62 * MIB as u64, "62.5 MiB queued in {full} bytes");
    let mut buf = Vec::new();
    for _ in 0..BACKLOG {
        q.get_bytes_into(&mut buf)?;
    }
    ours.send(&())?;
    ours.recv_timeout::<()>(HANG)?;
    let kept = queue_memory()?;
    assert!(
        kept <= 5 * MIB as u64,
        "{kept} bytes held after the drain and 16 more puts"
    );
    for _ in 0..16 {
        assert_eq!(q.get_bytes()?, b"after");
    }
    ours.send(&())?;
    let mut peak = 0;
    for batch in 0..200u64 {
        for i in batch * 1024..(batch + 1) * 1024 {
            q.get_bytes_into(&mut buf)?;
            if !is_pattern(&buf, 1024, i) {
                fail!("streamed item {i} is corrupt");
            }
        }
        peak = peak.max(queue_memory()?);
        // The producer waits for the acknowledgements of batches 0 to 197 only.
        if batch < 198 {
            ours.send(&())?;
        }
    }
    finish(&mut p)?;
    // At most 3 MiB waiting plus the 4 MiB kept: nowhere near the 200 MiB that went by.
    assert!(peak <= 10 * MIB as u64, "memory peaked at {peak} bytes");
    Ok(())
}

/// The queue memory this process sees once it held at most 5 MiB (what a producer keeps
/// for reuse, and a chunk in use), or after `looks` calls of `look`: a consumer finding the
/// queue empty, which gives back at most 16 MiB each time.
fn memory_after_empty_looks(looks: usize, mut look: impl FnMut()) -> Res<u64> {
    let mut left = queue_memory()?;
    for _ in 0..looks {
        if left <= 5 * MIB as u64 {
            break;
        }
        look();
        left = queue_memory()?;
    }
    Ok(left)
}

/// A producer that put a large backlog and then stopped putting, alive and idle, does not
/// keep the memory of its peak: consumers that find the queue empty give it back, 16 MiB
/// per look, by `try_get` and by a `get` about to sleep alike. The producer then puts again into chunks
/// it had kept and a consumer gave back, and every item arrives intact.
fn memory_of_an_idle_producer_comes_back_when_the_queue_is_found_empty() -> TestResult {
    const BURST: u64 = 64 * 1024 - 3; // 1008-byte frames: 62.5 MiB
    let q = Queue::<()>::new()?;
    let producer = q.clone();
    let (mut ours, mut theirs) = Pipe::new()?;
    let mut p = child(move || {
        for round in 0..3u64 {
            for i in 0..BURST {
                producer.put_bytes(&pattern(1000, round << 32 | i)).unwrap();
            }
            theirs.send(&()).unwrap();
            // Idle until the consumer has drained the burst and looked once more.
            let _: () = theirs.recv().unwrap();
        }
    })?;
    let mut buf = Vec::new();
    for round in 0..3u64 {
        ours.recv_timeout::<()>(HANG)?;
        let full = queue_memory()?;
        assert!(full >= 62 * MIB as u64, "62.5 MiB queued in {full} bytes");
        for i in 0..BURST {
            q.get_bytes_into(&mut buf)?;
            if !is_pattern(&buf, 1000, round << 32 | i) {
                fail!("item {i} of burst {round} is corrupt");
            }
        }
        // Found empty: by `try_get` in one round, by a `get` that times out in the next.
        // Each look gives back at most 16 MiB.
        let left = memory_after_empty_looks(16, || {
            let err = if round % 2 == 0 {
                q.try_get().unwrap_err()
            } else {
                q.get_bytes_timeout(&mut buf, Duration::from_millis(5))
                    .unwrap_err()
            };
            assert_eq!(err.kind(), ErrorKind::Empty, "{err}");
        })?;
        // What the producer keeps for reuse (4 MiB) and the chunk in use stay.
        assert!(
            left <= 5 * MIB as u64,
            "{left} bytes held by an idle producer after burst {round} was drained"
        );
        ours.send(&())?;
    }
    finish(&mut p)?;
    Ok(())
}

/// A consumer killed while it gives memory back (most of a look is spent inside the punch)
/// holds the trim lock and leaves chunks marked as being punched. The producer, putting
/// again, must take such chunks back only once that consumer is gone, and its items must
/// arrive intact; the next consumer to find the queue empty takes the lock over and gives
/// the rest of the memory back.
fn a_consumer_killed_while_trimming_leaves_the_queue_whole() -> TestResult {
    const BURST: u64 = 128 * 1024 - 3; // 1008-byte frames: 125 MiB
    let q = Queue::<()>::new()?;
    let producer = q.clone();
    let (mut ours, mut theirs) = Pipe::new()?;
    let mut p = child(move || {
        for i in 0..BURST {
            producer.put_bytes(&pattern(1000, i)).unwrap();
        }
        theirs.send(&()).unwrap();
        let _: () = theirs.recv().unwrap();
        for i in 0..BURST {
            producer.put_bytes(&pattern(1000, 1 << 40 | i)).unwrap();
        }
        theirs.send(&()).unwrap();
        let _: () = theirs.recv().unwrap();
    })?;
    ours.recv_timeout::<()>(HANG)?;
    let mut buf = Vec::new();
    for _ in 0..BURST {
        q.get_bytes_into(&mut buf)?;
    }
    // A consumer that finds the queue empty again and again: each look gives back 16 MiB.
    let trimmer_queue = q.clone();
    let (mut to_trimmer, mut from_parent) = Pipe::new()?;
    let trimmer = child(move || {
        let look = || {
            let err = trimmer_queue.try_get().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Empty);
        };
        // One look done: the kill lands in one of the next, which take ~5 ms each.
        look();
        from_parent.send(&()).unwrap();
        loop {
            look();
        }
    })?;
    to_trimmer.recv_timeout::<()>(HANG)?;
    trimmer.kill()?;
    trimmer.join_timeout(HANG)?;
    // The producer puts the same again, into chunks the dead consumer may have been
    // giving back; every item arrives intact.
    ours.send(&())?;
    ours.recv_timeout::<()>(HANG)?;
    for i in 0..BURST {
        q.get_bytes_into(&mut buf)?;
        if !is_pattern(&buf, 1000, 1 << 40 | i) {
            fail!("item {i} put after the trimmer died is corrupt");
        }
    }
    // And the memory comes back through the next consumer to find the queue empty.
    let left = memory_after_empty_looks(32, || {
        assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::Empty);
    })?;
    assert!(
        left <= 5 * MIB as u64,
        "{left} bytes held after the trimmer died"
    );
    ours.send(&())?;
    finish(&mut p)?;
    Ok(())
}

/// A consumer remembers how far a producer's items go, to skip looking at the tail: once
/// another process took them all, and more, that memory must not make it take one again.
/// A thread of the parent takes 1 of 10 items, puts 5 more, a child process takes the other
/// 14, and the thread then finds the queue empty (promptly: no spinning on an item that is
/// not there), and gets exactly the next item put after.
fn items_taken_elsewhere_are_not_taken_again() -> TestResult {
    let q = Queue::<u32>::new()?;
    // The child first: no forking once the parent runs a second thread.
    let (mut go, mut wait_go) = Pipe::new()?;
    let consumer = q.clone();
    let mut p = child(move || {
        let _: () = wait_go.recv().unwrap();
        for i in 1..15 {
            assert_eq!(consumer.get_timeout(HANG).unwrap(), i);
        }
    })?;
    let (to_thread, from_main) = std::sync::mpsc::channel::<()>();
    let (to_main, from_thread) = std::sync::mpsc::channel();
    let ours = q.clone();
    // One thread does all of the parent's gets: what it remembers is per thread.
    std::thread::spawn(move || {
        let first = (|| {
            for i in 0..10 {
                ours.put(&i)?;
            }
            let got = ours.get()?;
            for i in 10..15 {
                ours.put(&i)?;
            }
            Ok::<_, multiproc::Error>(got)
        })();
        let _ = to_main.send(first.map_err(|e| e.kind()));
        if from_main.recv().is_err() {
            return;
        }
        let _ = to_main.send(ours.try_get().map_err(|e| e.kind()));
        let _ = to_main.send(
            ours.put(&15)
                .and_then(|()| ours.get())
                .map_err(|e| e.kind()),
        );
        let _ = to_main.send(ours.try_get().map_err(|e| e.kind()));
    });
    assert_eq!(from_thread.recv_timeout(HANG)?, Ok(0));
    go.send(&())?;
    finish(&mut p)?;
    to_thread.send(())?;
    let Ok(after) = from_thread.recv_timeout(HANG) else {
        fail!("try_get on a drained queue did not return");
    };
    assert_eq!(after, Err(ErrorKind::Empty));
    assert_eq!(from_thread.recv_timeout(HANG)?, Ok(15));
    assert_eq!(from_thread.recv_timeout(HANG)?, Err(ErrorKind::Empty));
    assert_eq!((q.qsize(), q.empty()), (0, true));
    Ok(())
}

/// Large byte strings are decoded where they lie in the queue (other items after a copy):
/// typed items on both sides of that line (64 KiB) and across chunk boundaries arrive intact
/// from another process, and a large raw item that is not CBOR, a byte string shorter than
/// its header says, or a `T` followed by more bytes, is a `Decode` error that takes the item,
/// with the queue fine afterwards.
fn large_typed_items_decode_and_fail_cleanly() -> TestResult {
    let sizes = [
        64 * 1024 - 100,
        64 * 1024 - 3,
        64 * 1024,
        64 * 1024 + 1,
        200_001,
        3 * MIB,
    ];
    let q = Queue::<ByteBuf>::new()?;
    let producer = q.clone();
    let mut p = child(move || {
        for (i, len) in sizes.into_iter().enumerate() {
            producer
                .put(&ByteBuf::from(pattern(len, i as u64)))
                .unwrap();
        }
    })?;
    finish(&mut p)?;
    for (i, len) in sizes.into_iter().enumerate() {
        let got = q.get()?;
        if !is_pattern(&got, len, i as u64) {
            fail!(
                "item of {len} bytes came out as {} bytes, or corrupt",
                got.len()
            );
        }
    }
    // Not CBOR at all: a "break" byte where a value starts, then 128 KiB.
    let mut not_cbor = vec![0xff];
    not_cbor.extend(std::iter::repeat_n(1u8, 128 * 1024));
    q.put_bytes(&not_cbor)?;
    let Err(err) = q.get() else {
        fail!("a 128 KiB item that is not CBOR decoded");
    };
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    // A byte string that claims 4 GiB and has 128 KiB.
    let mut short = vec![0x5a, 0xff, 0xff, 0xff, 0xff];
    short.extend(std::iter::repeat_n(2u8, 128 * 1024));
    q.put_bytes(&short)?;
    let Err(err) = q.get() else {
        fail!("a byte string shorter than its header says decoded");
    };
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    // Strings claiming u64::MAX bytes, decoded from a copy and where they lie.
    for tail in [0, 128 * 1024] {
        let mut claim = vec![0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        claim.extend(std::iter::repeat_n(3u8, tail));
        q.put_bytes(&claim)?;
        let Err(err) = q.get() else {
            fail!("a byte string claiming u64::MAX bytes decoded");
        };
        assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    }
    // A valid byte string with 70 000 bytes after it.
    let mut trailing = vec![0x43, 1, 2, 3];
    trailing.extend(std::iter::repeat_n(0u8, 70_000));
    q.put_bytes(&trailing)?;
    let Err(err) = q.get() else {
        fail!("an item with 70 000 bytes after its value decoded");
    };
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    assert!(
        err.to_string().contains("70000 bytes after the value"),
        "{err}"
    );
    assert!(q.empty(), "failed decodes still take their items");
    q.put(&ByteBuf::from(pattern(100_000, 9)))?;
    assert!(is_pattern(&q.get()?, 100_000, 9));
    Ok(())
}

/// Strings and byte strings, the values that skip ciborium on both sides, arrive whole from
/// another process at every CBOR header size; and where the target type wants something
/// else from a string, the answer is ciborium's, error or value.
fn lone_strings_arrive_whole_and_other_targets_get_ciboriums_answer() -> TestResult {
    let sizes = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 200_001, 3 * MIB];
    let texts = Queue::<Option<String>>::new()?;
    let bytes = Queue::<ByteBuf>::new()?;
    let (t, b) = (texts.clone(), bytes.clone());
    let mut p = child(move || {
        for (i, len) in sizes.into_iter().enumerate() {
            let text: String = (0..len)
                .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
                .collect();
            t.put(&Some(text)).unwrap();
            b.put(&ByteBuf::from(pattern(len, i as u64))).unwrap();
        }
        t.put(&None).unwrap();
    })?;
    finish(&mut p)?;
    for (i, len) in sizes.into_iter().enumerate() {
        let text = texts.get()?.ok_or("a None before the last string")?;
        let expected: String = (0..len)
            .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
            .collect();
        if text != expected {
            fail!(
                "a string of {len} bytes came out as {} bytes, or changed",
                text.len()
            );
        }
        let got = bytes.get()?;
        if !is_pattern(&got, len, i as u64) {
            fail!("bytes of {len} came out as {} bytes, or corrupt", got.len());
        }
    }
    assert_eq!(texts.get()?, None);

    // A byte string taken as a plain `Vec<u8>`: ciborium makes it a sequence.
    let plain = Queue::<Vec<u8>>::new()?;
    let mut encoded = Vec::new();
    ciborium::into_writer(&ByteBuf::from(vec![1u8, 2, 3]), &mut encoded)?;
    plain.put_bytes(&encoded)?;
    assert_eq!(plain.get()?, [1, 2, 3]);
    // A byte string taken as a `String`, text as bytes, text that is not UTF-8: errors.
    let strings = Queue::<String>::new()?;
    strings.put_bytes(&encoded)?;
    assert_eq!(strings.get().unwrap_err().kind(), ErrorKind::Decode);
    let mut text = Vec::new();
    ciborium::into_writer(&"abc", &mut text)?;
    bytes.put_bytes(&text)?;
    assert_eq!(bytes.get().unwrap_err().kind(), ErrorKind::Decode);
    strings.put_bytes(&[0x62, 0xff, 0xfe])?;
    assert_eq!(strings.get().unwrap_err().kind(), ErrorKind::Decode);
    // The failed decodes took their items; the queues still work.
    assert!(strings.empty() && bytes.empty());
    strings.put(&"after".to_owned())?;
    assert_eq!(strings.get()?, "after");
    Ok(())
}

tests_main!(
    fifo_per_producer_across_processes,
    a_consumer_turns_to_other_producers_within_64_kib,
    a_producer_far_ahead_of_a_draining_consumer_loses_nothing,
    exactly_once_4_producers_4_consumers_100k_items,
    put_blocks_when_full_until_another_process_gets,
    get_blocks_when_empty_until_another_process_puts,
    timeouts_and_try_variants_report_full_and_empty,
    sizes_are_exact_at_capacity_in_every_process,
    qsize_never_exceeds_maxsize_while_producers_race,
    room_held_by_a_killed_producer_comes_back_to_the_next_putter,
    shutdown_lets_gets_drain_then_fails_them,
    immediate_shutdown_discards_and_fails_gets_at_once,
    shutdown_racing_puts_strands_no_item,
    shutdown_wakes_blocked_gets_and_puts_in_other_processes,
    a_put_wakes_one_sleeping_getter_not_all,
    a_get_wakes_one_sleeping_putter_not_all,
    joinable_join_returns_after_every_task_done,
    joinable_shutdown_counts_discarded_items_done,
    joinable_join_timeout_times_out_while_a_task_is_open,
    joinable_task_done_too_often_is_invalid_input,
    items_of_0_bytes_1_mib_and_100_mib_arrive_intact,
    items_around_the_padding_sizes_arrive_intact,
    lone_strings_come_back_as_ciborium_encodes_them,
    ring_wraps_with_frames_split_across_its_end,
    a_million_items_wait_without_consumer_then_drain_in_order,
    a_producers_backlog_over_1_gib_is_full,
    an_item_over_512_mib_is_invalid_input,
    encode_errors_reach_put_and_put_nothing,
    decode_errors_take_the_item,
    queue_in_wait_is_ready_exactly_while_items_are_there,
    queue_and_connections_in_one_wait,
    wait_set_consumer_loop_gets_every_item_put_over_time,
    queue_in_a_mio_poll_wakes_for_each_burst,
    queues_in_spawn_args_are_the_same_queues,
    forked_children_share_the_queue_and_their_items_outlive_them,
    a_child_forked_by_another_library_puts_without_harm,
    threads_and_a_spawned_child_share_a_queue,
    close_stops_this_process_putting_only,
    simple_queue_between_processes,
    spawned_producer_lets_go_of_its_log_at_exit,
    producer_table_holds_128_and_reclaims_logs_of_killed_producers,
    a_producer_hidden_by_hidepid_keeps_its_log,
    forked_producer_lets_go_of_its_log_at_exit,
    try_put_takes_room_a_killed_producer_held,
    waiting_put_takes_room_when_its_holder_is_killed,
    raw_bytes_between_processes_and_mixed_with_typed_items,
    raw_bytes_timeouts_limits_and_shutdown,
    memory_follows_the_backlog_while_the_producer_lives,
    memory_of_an_idle_producer_comes_back_when_the_queue_is_found_empty,
    a_consumer_killed_while_trimming_leaves_the_queue_whole,
    items_taken_elsewhere_are_not_taken_again,
    large_typed_items_decode_and_fail_cleanly,
    lone_strings_arrive_whole_and_other_targets_get_ciboriums_answer,
);
