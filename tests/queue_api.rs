//! The queue API from a user's point of view: what `JoinableQueue` counts whichever way an
//! item goes in, timeouts at their extremes, the 512 MiB boundary, shutdown seen through
//! `wait`, `WaitSet` and the `Reactor`, clones across threads, and `join` from several
//! processes.

mod util;

use std::error::Error as StdError;
use std::time::Duration;

use multiproc::{
    ErrorKind, JoinableQueue, Pipe, Process, Queue, Reactor, SimpleQueue, WaitSet, wait,
};
use util::{TestResult, child, finish, spawned};

type Res<T> = Result<T, Box<dyn StdError>>;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);
const MIB: usize = 1 << 20;

/// The CBOR encoding of `value`, as a typed `put` stores it.
fn cbor<T: serde::Serialize>(value: &T) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// JoinableQueue: every item counts, whichever way it went in

/// `put_bytes` and `put_bytes_timeout`, reached through `Deref`, count the item as
/// `put` does: `join` waits for it and its `task_done` is not "too many".
fn joinable_put_bytes_counts_the_item() -> TestResult {
    let q = JoinableQueue::<u32>::new()?;
    q.put(&1)?;
    q.put_bytes(&cbor(&2u32)?)?;
    q.put_bytes_timeout(&cbor(&3u32)?, Duration::ZERO)?;
    assert_eq!(q.get()?, 1);
    assert_eq!(q.get()?, 2);
    assert_eq!(q.get()?, 3);
    q.task_done()?;
    q.task_done()?;
    let err = q.join_timeout(Duration::ZERO).unwrap_err();
    assert!(err.is_timeout(), "join returned with item 3 not done");
    q.task_done()?;
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

/// A `&JoinableQueue` coerces to `&Queue` (it derefs to one): a producer written for
/// `&Queue` still counts the items it puts into a joinable queue.
fn joinable_items_put_through_a_plain_queue_reference_count() -> TestResult {
    fn produce(q: &Queue<u32>) -> multiproc::Result<()> {
        q.put(&7)?;
        q.try_put(&8)?;
        q.put_timeout(&9, Duration::ZERO)
    }
    let q = JoinableQueue::new()?;
    produce(&q)?;
    let err = q.join_timeout(Duration::ZERO).unwrap_err();
    assert!(
        err.is_timeout(),
        "join returned with three items never taken"
    );
    for want in [7, 8, 9] {
        assert_eq!(q.get()?, want);
        q.task_done()?;
    }
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

/// An immediate shutdown counts the items it discards as done; an uncounted item among
/// them must not eat the count of an item a worker took and is still working on.
fn joinable_immediate_shutdown_does_not_release_join_for_taken_items() -> TestResult {
    let q = JoinableQueue::<u32>::new()?;
    q.put(&1)?;
    assert_eq!(q.get()?, 1); // taken, being worked on
    q.put_bytes(&cbor(&2u32)?)?;
    q.shutdown(true);
    let err = q.join_timeout(Duration::from_millis(20)).unwrap_err();
    assert!(
        err.is_timeout(),
        "join released while item 1 is in progress"
    );
    q.task_done()?;
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

fn joinable_spawned_producer(q: Queue<u32>) {
    q.put(&5).unwrap();
}

/// A `JoinableQueue` handed to a spawned child that takes it as a plain `Queue` (the two
/// travel alike): its puts still count for the parent's `join`.
fn joinable_passed_as_a_plain_queue_still_counts() -> TestResult {
    let q = JoinableQueue::<u32>::new()?;
    let plain: &Queue<u32> = &q;
    let mut p = spawned(joinable_spawned_producer, plain.clone())?;
    finish(&mut p)?;
    assert_eq!(q.qsize(), 1);
    let err = q.join_timeout(Duration::ZERO).unwrap_err();
    assert!(err.is_timeout(), "the child's item is not counted");
    assert_eq!(q.get()?, 5);
    q.task_done()?;
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

/// Sent as a plain `Queue`, received as a `JoinableQueue`.
struct Mismatched(Option<Queue<u32>>);

impl serde::Serialize for Mismatched {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for Mismatched {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        JoinableQueue::<u32>::deserialize(d)?;
        Ok(Mismatched(None))
    }
}

/// A plain `Queue` received where a `JoinableQueue` is expected is refused (its puts would
/// count nothing and every `task_done` would be "too many"): the child fails to start.
fn a_plain_queue_received_as_joinable_is_refused() -> TestResult {
    let q = Queue::<u32>::new()?;
    let mut p = Process::spawn(|_: Mismatched| {}, Mismatched(Some(q.clone())));
    p.set_daemon(true)?;
    p.start()?;
    let code = p.join_timeout(HANG)?;
    assert_ne!(code, 0, "a Queue was taken for a JoinableQueue");
    Ok(())
}

/// Two joiners in two processes, and one here, are all released by the last `task_done`
/// from a fourth process.
fn joinable_join_from_several_processes() -> TestResult {
    let q = JoinableQueue::<u32>::new()?;
    q.put(&1)?;
    q.put(&2)?;
    let mut joiners = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let (mut ours, mut theirs) = Pipe::new()?;
        let jq = q.clone();
        joiners.push(child(move || {
            theirs.send(&"joining").unwrap();
            jq.join().unwrap();
            theirs.send(&"joined").unwrap();
        })?);
        assert_eq!(ours.recv_timeout::<String>(HANG)?, "joining");
        conns.push(ours);
    }
    let (mut go, mut go_child) = Pipe::new()?;
    let wq = q.clone();
    let mut worker = child(move || {
        for _ in 0..2 {
            let _: u32 = wq.get().unwrap();
        }
        wq.task_done().unwrap();
        let _: () = go_child.recv().unwrap();
        wq.task_done().unwrap();
    })?;
    let err = q.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(err.is_timeout());
    for c in &mut conns {
        assert!(!c.poll(Some(Duration::ZERO))?, "a joiner returned early");
    }
    go.send(&())?;
    q.join_timeout(HANG)?;
    for c in &mut conns {
        assert_eq!(c.recv_timeout::<String>(HANG)?, "joined");
    }
    finish(&mut worker)?;
    for p in &mut joiners {
        finish(p)?;
    }
    Ok(())
}

/// A consumer killed after taking an item never marks it done: `join` waits for it for
/// ever (as Python's does); `join_timeout` says so, and a `task_done` on its behalf
/// releases it.
fn joinable_consumer_killed_after_get_leaves_join_waiting() -> TestResult {
    let q = JoinableQueue::<u32>::new()?;
    q.put(&1)?;
    let (mut ours, mut theirs) = Pipe::new()?;
    let cq = q.clone();
    let consumer = child(move || {
        let got: u32 = cq.get().unwrap();
        theirs.send(&got).unwrap();
        loop {
            std::thread::park();
        }
    })?;
    assert_eq!(ours.recv_timeout::<u32>(HANG)?, 1);
    consumer.kill()?;
    consumer.join_timeout(HANG)?;
    assert!(q.empty());
    let err = q.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert!(err.is_timeout());
    q.task_done()?;
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

/// Deserialises like a `u32` but refuses 13.
#[derive(Debug, PartialEq, serde::Serialize)]
struct NotThirteen(u32);

impl<'de> serde::Deserialize<'de> for NotThirteen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        match u32::deserialize(d)? {
            13 => Err(D::Error::custom("13 refused")),
            n => Ok(NotThirteen(n)),
        }
    }
}

/// A decode error takes the item but leaves it counted: the consumer owes it a
/// `task_done` (as documented on `JoinableQueue`).
fn joinable_decode_error_leaves_the_item_counted() -> TestResult {
    let q = JoinableQueue::new()?;
    q.put(&NotThirteen(13))?;
    assert_eq!(q.get().unwrap_err().kind(), ErrorKind::Decode);
    assert!(q.empty());
    assert!(q.join_timeout(Duration::ZERO).is_err(), "still counted");
    q.task_done()?;
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

fn put_then_exit_at_once(q: Queue<u32>) {
    q.put(&2).unwrap();
    std::process::exit(0); // no destructor runs
}

/// A child that exits the moment its `put` returns, without running any destructor
/// (forked: `_exit`; spawned: `std::process::exit`), still delivers its item; one that
/// never touches the queue changes nothing.
fn children_that_exit_right_after_put_deliver() -> TestResult {
    let q = Queue::<u32>::new()?;
    let fq = q.clone();
    let mut forked = child(move || {
        fq.put(&1).unwrap();
        std::process::exit(0);
    })?;
    finish(&mut forked)?;
    let mut sp = spawned(put_then_exit_at_once, q.clone())?;
    finish(&mut sp)?;
    let idle = q.clone();
    let mut untouched = child(move || drop(idle))?;
    finish(&mut untouched)?;
    let mut untouched = spawned(|_: Queue<u32>| {}, q.clone())?;
    finish(&mut untouched)?;
    let mut got = vec![q.get_timeout(HANG)?, q.get_timeout(HANG)?];
    got.sort_unstable();
    assert_eq!(got, [1, 2]);
    assert!(q.empty());
    q.put(&3)?;
    assert_eq!(q.get()?, 3);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Timeouts at their extremes

/// `Duration::MAX` (a deadline no `Instant` can hold) waits as long as it takes, for an
/// item, for room and for `join`; zero and one nanosecond never wait; a zero timeout on an
/// unbounded queue puts.
fn timeouts_zero_tiny_and_beyond_any_instant() -> TestResult {
    let q = Queue::<u32>::bounded(1)?;
    q.put_timeout(&1, Duration::ZERO)?;
    assert_eq!(
        q.put_timeout(&2, Duration::from_nanos(1))
            .unwrap_err()
            .kind(),
        ErrorKind::Full
    );
    assert_eq!(q.get_timeout(Duration::ZERO)?, 1);
    assert_eq!(
        q.get_timeout(Duration::from_nanos(1)).unwrap_err().kind(),
        ErrorKind::Empty
    );
    let unbounded = Queue::<u32>::new()?;
    for i in 0..1000 {
        unbounded.put_timeout(&i, Duration::ZERO)?;
    }
    assert_eq!(unbounded.qsize(), 1000);

    // Duration::MAX: a child puts after we wait; then fills the queue and we put past it.
    let (mut ours, mut theirs) = Pipe::new()?;
    let cq = q.clone();
    let mut p = child(move || {
        let _: () = theirs.recv().unwrap();
        cq.put(&10).unwrap();
        let _: () = theirs.recv().unwrap();
        assert_eq!(cq.get().unwrap(), 11);
    })?;
    ours.send(&())?;
    assert_eq!(q.get_timeout(Duration::MAX)?, 10);
    q.put(&11)?;
    ours.send(&())?;
    q.put_timeout(&12, Duration::MAX)?; // waits for the child's get
    finish(&mut p)?;
    assert_eq!(q.get()?, 12);
    let jq = JoinableQueue::<u32>::new()?;
    jq.join_timeout(Duration::MAX)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The 512 MiB limit

/// Exactly 512 MiB goes in and comes out intact; one byte more is `InvalidInput`. A typed
/// item's limit counts its encoding: a byte string of 512 MiB less its 5-byte CBOR header
/// fits, one byte longer does not.
fn items_at_the_512_mib_boundary() -> TestResult {
    const MAX: usize = 512 * MIB;
    let q = Queue::<serde_bytes::ByteBuf>::new()?;
    let mut big = vec![0u8; MAX];
    big[0] = 1;
    big[MAX - 1] = 2;
    q.put_bytes(&big)?;
    drop(big);
    let mut out = Vec::new();
    assert_eq!(q.get_bytes_into(&mut out)?, MAX);
    assert_eq!((out[0], out[MAX - 1]), (1, 2));
    assert!(out[1..MAX - 1].iter().all(|&b| b == 0));
    drop(out);
    let over = vec![0u8; MAX + 1];
    assert_eq!(
        q.put_bytes(&over).unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    drop(over);
    let mut typed = serde_bytes::ByteBuf::from(vec![3u8; MAX - 4]);
    assert_eq!(q.put(&typed).unwrap_err().kind(), ErrorKind::InvalidInput);
    typed.pop();
    q.put(&typed)?;
    drop(typed);
    let back = q.get()?;
    assert_eq!(back.len(), MAX - 5);
    assert!(q.empty());
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Readiness and shutdown

/// A `WaitSet` and a `Reactor` watching an empty queue wake when another process shuts it
/// down (plain or immediate), and `try_get` then says `ShutDown`.
fn waiters_wake_for_a_shutdown_in_another_process() -> TestResult {
    for immediate in [false, true] {
        let q = Queue::<u32>::new()?;
        let mut set = WaitSet::new()?;
        let key = set.insert(q.clone())?;
        assert!(set.wait(Some(Duration::ZERO))?.is_empty());
        let (mut ours, mut theirs) = Pipe::new()?;
        let sq = q.clone();
        let mut p = child(move || {
            let _: () = theirs.recv().unwrap();
            sq.shutdown(immediate);
        })?;
        ours.send(&())?;
        assert_eq!(set.wait(Some(HANG))?, [key]);
        assert_eq!(q.try_get().unwrap_err().kind(), ErrorKind::ShutDown);
        // Still ready on the next wait: level, not one edge.
        assert_eq!(set.wait(Some(Duration::ZERO))?, [key]);
        finish(&mut p)?;

        let q = Queue::<u32>::new()?;
        let mut reactor = Reactor::new()?;
        let seen = std::rc::Rc::new(std::cell::Cell::new(None));
        let s = std::rc::Rc::clone(&seen);
        reactor.when_ready(q.clone(), move |_, q: Queue<u32>| {
            s.set(Some(q.try_get().unwrap_err().kind()));
        })?;
        let (mut ours, mut theirs) = Pipe::new()?;
        let sq = q.clone();
        let mut p = child(move || {
            let _: () = theirs.recv().unwrap();
            sq.shutdown(immediate);
        })?;
        ours.send(&())?;
        reactor.run()?;
        assert_eq!(seen.get(), Some(ErrorKind::ShutDown));
        finish(&mut p)?;
    }
    Ok(())
}

/// After a plain shutdown with items left, a consumer in a `wait` loop drains them and
/// then sees `ShutDown`; the loop never hangs.
fn wait_loop_drains_then_sees_shutdown() -> TestResult {
    let mut q = Queue::<u32>::new()?;
    let pq = q.clone();
    let mut p = child(move || {
        for i in 0..100 {
            pq.put(&i).unwrap();
        }
        pq.shutdown(false);
    })?;
    let mut got = Vec::new();
    loop {
        assert_eq!(wait(&mut [&mut q], Some(HANG))?, [0], "hung");
        match q.try_get() {
            Ok(i) => got.push(i),
            Err(e) if e.kind() == ErrorKind::Empty => {}
            Err(e) if e.kind() == ErrorKind::ShutDown => break,
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    finish(&mut p)
}

// ---------------------------------------------------------------------------------------------
// Clones and threads

/// A clone dropped, and another closed, while a thread is blocked in `get` on a third: the
/// getter still gets the next item (from another process). Closing is per process: every
/// clone here stops putting, a child's puts still go in.
fn clones_dropped_and_closed_while_another_thread_gets() -> TestResult {
    let q = SimpleQueue::<u32>::new()?;
    let getter = q.clone();
    let (to_getter, from_main) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        to_getter.send(()).unwrap();
        getter.get()
    });
    from_main.recv()?;
    let dropped = q.clone();
    drop(dropped);
    let closer = q.clone();
    closer.close();
    assert_eq!(q.put(&1).unwrap_err().kind(), ErrorKind::Closed);
    // A thread may not fork here (the process has two threads): another process puts via
    // a spawned child.
    let mut p = spawned(|q: SimpleQueue<u32>| q.put(&42).unwrap(), q.clone())?;
    finish(&mut p)?;
    assert_eq!(t.join().map_err(|_| "getter panicked")??, 42);
    Ok(())
}

/// Four threads put and four take on clones of one bounded queue at once: every item
/// arrives once, each thread's in order.
fn clones_in_many_threads_at_once() -> TestResult {
    const PER: u32 = 5_000;
    let q = Queue::<(u32, u32)>::bounded(64)?;
    let mut handles = Vec::new();
    for t in 0..4u32 {
        let q = q.clone();
        handles.push(std::thread::spawn(move || {
            for i in 0..PER {
                q.put(&(t, i)).unwrap();
            }
            Vec::new()
        }));
    }
    for _ in 0..4 {
        let q = q.clone();
        handles.push(std::thread::spawn(move || {
            (0..PER).map(|_| q.get().unwrap()).collect::<Vec<_>>()
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        let got = h.join().map_err(|_| "a thread panicked")?;
        let mut last = [None::<u32>; 4];
        for &(t, i) in &got {
            let prev = &mut last[t as usize];
            assert!(
                prev.is_none_or(|p| p < i),
                "thread {t}'s items out of order"
            );
            *prev = Some(i);
        }
        all.extend(got);
    }
    all.sort_unstable();
    let want: Vec<_> = (0..4).flat_map(|t| (0..PER).map(move |i| (t, i))).collect();
    assert_eq!(all, want);
    assert!(q.empty());
    Ok(())
}

/// Every put that fails counts nothing, whatever made it fail (Full, Timeout, Closed,
/// ShutDown), whether or not it waited: afterwards `join` waits for exactly the items put.
fn joinable_failed_puts_count_nothing() -> TestResult {
    let q = JoinableQueue::<u32>::bounded(1)?;
    q.put(&1)?;
    assert_eq!(q.try_put(&2).unwrap_err().kind(), ErrorKind::Full);
    let err = q.put_timeout(&3, Duration::from_millis(5)).unwrap_err();
    assert!(err.kind() == ErrorKind::Full || err.is_timeout(), "{err:?}");
    assert!(q.put_bytes_timeout(&cbor(&4u32)?, Duration::ZERO).is_err());
    assert_eq!(q.get()?, 1);
    q.task_done()?;
    q.join_timeout(Duration::ZERO)?;
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidInput);

    // A producer waiting for room when an immediate shutdown discards the item in the way:
    // that item counts done, the waiting put fails and counts nothing, so `join` returns
    // (whichever came first, the put's wait or the shutdown).
    q.put(&5)?;
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || q.put(&6))
    };
    q.shutdown(true);
    let put = producer.join().map_err(|_| "producer panicked")?;
    assert_eq!(put.unwrap_err().kind(), ErrorKind::ShutDown);
    q.join_timeout(HANG)?;
    assert_eq!(q.task_done().unwrap_err().kind(), ErrorKind::InvalidInput);

    let q = JoinableQueue::<u32>::new()?;
    q.close();
    assert_eq!(q.put(&7).unwrap_err().kind(), ErrorKind::Closed);
    assert_eq!(
        q.put_bytes(&cbor(&7u32)?).unwrap_err().kind(),
        ErrorKind::Closed
    );
    q.join_timeout(Duration::ZERO)?;
    Ok(())
}

tests_main!(
    joinable_put_bytes_counts_the_item,
    joinable_items_put_through_a_plain_queue_reference_count,
    joinable_immediate_shutdown_does_not_release_join_for_taken_items,
    joinable_passed_as_a_plain_queue_still_counts,
    a_plain_queue_received_as_joinable_is_refused,
    joinable_join_from_several_processes,
    joinable_consumer_killed_after_get_leaves_join_waiting,
    joinable_decode_error_leaves_the_item_counted,
    children_that_exit_right_after_put_deliver,
    timeouts_zero_tiny_and_beyond_any_instant,
    items_at_the_512_mib_boundary,
    waiters_wake_for_a_shutdown_in_another_process,
    wait_loop_drains_then_sees_shutdown,
    clones_dropped_and_closed_while_another_thread_gets,
    clones_in_many_threads_at_once,
    joinable_failed_puts_count_nothing,
);
