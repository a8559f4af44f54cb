//! Queues where the kernel refuses `membarrier` to some processes (a seccomp filter, as a
//! container's profile may install): puts in registered producers publish with a plain
//! store until a refused consumer sets `FLAG_FENCED`, and the producer lock's waiters in a
//! refused process nap instead of sleeping until woken (docs/design.md, "The producer
//! publishes without a locked instruction"). Nothing may be lost or hang: every item put
//! `Ok` is taken, a shutdown racing puts strands none, and contended puts in a refused
//! process finish.
//!
//! Here, not under `tests/`, because installing the filter takes `unsafe`. The filter is
//! installed only in a spawned child, by the child itself: never in the test process (a
//! filter cannot be taken back, and every later thread and child would inherit it).
//! Children are spawned, not forked: this libtest binary runs its tests on threads, so
//! `Process::fork` refuses. Producers are spawned by the unfiltered test process, so they
//! register for the barrier at their first put and publish plainly. Every wait is bounded
//! (a hang fails the test) and a failing test kills the children it started.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;

use super::shm;
use crate::{Connection, ErrorKind, JoinableQueue, Pipe, Process, Queue, SpawnArgs};

/// The longest any one wait of these tests may take before the test fails.
const HANG: Duration = Duration::from_secs(20);

/// What a refused child reports first: `Err` if it could not install the filter.
type Refused = std::result::Result<(), String>;

/// Says `line` on stderr past libtest's capture, so a skip is seen.
fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "\n{line}\n");
}

/// Whether the kernel grants this (unfiltered) test process `membarrier(GLOBAL_EXPEDITED)`.
/// If it does not (before Linux 4.16, a filter around the test run), the queue fences every
/// put and there is no plain publication to test: says so loudly.
fn granted_here(test: &str) -> bool {
    if shm::barrier_everywhere() {
        return true;
    }
    loud(&format!(
        "*** SKIPPED {test}: membarrier(GLOBAL_EXPEDITED) is refused to the test process \
         already, so puts never publish plainly ***"
    ));
    false
}

/// Installs, in the calling thread (and the threads it starts from now on), a seccomp
/// filter under which every `membarrier` call fails with `EPERM`, and checks that the
/// queue's three uses of it are now refused. `Err` if the filter could not be installed
/// (no seccomp here): the caller reports it, and the test skips.
fn refuse_membarrier() -> Refused {
    // The BPF opcodes the filter uses (`linux/bpf_common.h`; the `libc` crate has them for
    // Linux, not for Android).
    const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
    const JMP_JEQ_K: u16 = 0x15; // BPF_JMP (5) | BPF_JEQ (0x10) | BPF_K (0)
    const RET_K: u16 = 0x06; // BPF_RET (6) | BPF_K (0)
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let filter = [
        // The syscall number: offset 0 of `struct seccomp_data`. (The architecture is not
        // checked: this process makes native calls only.)
        op(LD_W_ABS, 0, 0, 0),
        op(JMP_JEQ_K, 0, 1, libc::SYS_membarrier as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        op(RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    // Lets an unprivileged process install a filter.
    rustix::thread::set_no_new_privs(true).map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    // `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)`; the mode is passed as the
    // `unsigned long` the kernel reads. The filter only makes `membarrier` fail, which
    // every caller in this crate handles.
    // SAFETY: the call reads the `sock_fprog` and the `len` instructions it points to,
    // both alive for the call (the kernel copies the program).
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(format!(
            "PR_SET_SECCOMP: {}",
            std::io::Error::last_os_error()
        ));
    }
    // The filter is in: a membarrier still granted is a broken filter, a failure (the
    // child panics before its report), not a skip.
    assert!(
        !shm::barrier_everywhere() && !shm::register_for_barriers() && !shm::barrier_own_threads(),
        "membarrier still granted under the seccomp filter"
    );
    Ok(())
}

/// Reads a refused child's first report: `false` (after saying SKIPPED loudly) if it
/// could not install the filter.
fn filter_installed(from_child: &mut Connection, test: &str) -> bool {
    let refused: Refused = from_child
        .recv_timeout(HANG)
        .unwrap_or_else(|e| panic!("no word from the refused child in {HANG:?}: {e}"));
    match refused {
        Ok(()) => true,
        Err(why) => {
            loud(&format!(
                "*** SKIPPED {test}: cannot refuse membarrier with a seccomp filter here \
                 ({why}) ***"
            ));
            false
        }
    }
}

/// A test's spawned children: those still running when it is dropped (the test failed or
/// panicked) are killed and reaped, so none outlives its test.
#[derive(Default)]
struct Children(Vec<Process>);

impl Children {
    /// Spawns `entry(args)` as a daemon child (killed if the test process dies).
    fn spawn<A: SpawnArgs>(&mut self, entry: fn(A), args: A) {
        let mut p = Process::spawn(entry, args);
        p.set_daemon(true).expect("set_daemon before start");
        p.start()
            .unwrap_or_else(|e| panic!("could not spawn a child: {e}"));
        self.0.push(p);
    }

    /// Joins every child; panics unless each exited 0 by `deadline`.
    fn finish(mut self, deadline: Instant) {
        while let Some(p) = self.0.first() {
            match p.join_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(0) => drop(self.0.remove(0)),
                Ok(code) => panic!("child {} exited with {code}", p.name()),
                Err(e) => panic!("could not join child {} ({e}); killed", p.name()),
            }
        }
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = p.kill();
            let _ = p.join_timeout(Duration::from_secs(5));
        }
    }
}

// -------------------------------------------------------------------------------------------
// A refused consumer takes every item

/// Items each producer of [`a_refused_consumer_takes_every_item`] puts.
const EACH: u32 = 3_000;

/// Puts `0..count`, pausing now and then so that the consumer goes to sleep.
fn pausing_producer((q, count): (Queue<u32>, u32)) {
    for i in 0..count {
        q.put(&i).unwrap();
        if i % 97 == 0 {
            std::thread::sleep(Duration::from_millis(3));
        }
    }
}

/// Refuses itself the barrier, says so, then takes two producers' items with blocking
/// gets, `try_get` and `get_timeout` in turn, and sends them back sorted.
fn refused_consumer((q, mut parent): (Queue<u32>, Connection)) {
    let refused = refuse_membarrier();
    parent.send(&refused).unwrap();
    if refused.is_err() {
        return;
    }
    let all = 2 * EACH as usize;
    let deadline = Instant::now() + HANG;
    let mut got = Vec::with_capacity(all);
    while got.len() < all && Instant::now() < deadline {
        let item = match got.len() % 3 {
            0 => q.get(),
            1 => q.try_get(),
            _ => q.get_timeout(Duration::from_millis(50)),
        };
        match item {
            Ok(i) => got.push(i),
            Err(e) if e.kind() == ErrorKind::Empty => {}
            Err(e) => panic!("get failed: {e}"),
        }
    }
    got.sort_unstable();
    parent.send(&got).unwrap();
}

/// A consumer refused the barrier takes every item of two producers that registered for it
/// (so they publish plainly until they see `FLAG_FENCED`), with blocking gets (it sleeps
/// between bursts), `try_get` and `get_timeout`; and it sets `FLAG_FENCED`.
///
/// Fails if an item is missing or doubled (the sorted lists differ), if the consumer hangs
/// (no report within [`HANG`]: the message says how many items were left in the queue, so
/// a missed wake-up shows as items left), or if `FLAG_FENCED` is clear at the end (producers
/// were never told to fence). Skips, loudly, where membarrier is refused to the test process
/// or seccomp is unavailable.
#[test]
fn a_refused_consumer_takes_every_item() {
    crate::init();
    const TEST: &str = "a_refused_consumer_takes_every_item";
    if !granted_here(TEST) {
        return;
    }
    let q = Queue::<u32>::new().unwrap();
    let (mut from_consumer, to_parent) = Pipe::new().unwrap();
    let mut children = Children::default();
    // The consumer first, as in tests/queue.rs: it is waiting when the items come.
    children.spawn(refused_consumer, (q.clone(), to_parent));
    if !filter_installed(&mut from_consumer, TEST) {
        return;
    }
    for _ in 0..2 {
        children.spawn(pausing_producer, (q.clone(), EACH));
    }
    let got: Vec<u32> = from_consumer.recv_timeout(HANG).unwrap_or_else(|e| {
        panic!(
            "the refused consumer reported nothing in {HANG:?} ({e}); {} items left in the \
             queue",
            q.qsize()
        )
    });
    children.finish(Instant::now() + HANG);
    let mut want: Vec<u32> = (0..EACH).chain(0..EACH).collect();
    want.sort_unstable();
    assert!(
        got == want,
        "the refused consumer took {} items of {}",
        got.len(),
        want.len()
    );
    assert!(
        q.puts_fenced(),
        "a consumer was refused the barrier but FLAG_FENCED is clear"
    );
}

// -------------------------------------------------------------------------------------------
// Shutdown racing plain puts

/// Rounds whose queues a set of children is spawned with (queues travel only in spawn
/// arguments, and spawning per round would take most of the time budget).
const ROUNDS_PER_BATCH: usize = 16;
/// At least this many batches run (32 rounds); more until [`ENOUGH_TIME`] has passed, at
/// most [`MAX_BATCHES`] (208 rounds, about tests/queue.rs's 200; ~140 rounds take 4 s in a
/// debug build on 2 CPUs).
const MIN_BATCHES: usize = 2;
const MAX_BATCHES: usize = 13;
const ENOUGH_TIME: Duration = Duration::from_secs(6);
const PRODUCERS: usize = 3;
/// Items the consumer takes before it shuts the queue down.
const BEFORE_SHUTDOWN: u32 = 50;

/// For each round's queue, on the parent's word: puts `0, 1, 2...` until a put fails, then
/// reports how many returned `Ok` and the error.
fn racing_producer((queues, mut parent): (Vec<JoinableQueue<u32>>, Connection)) {
    for q in queues {
        let Ok(()) = parent.recv::<()>() else {
            return; // the test is over (failed)
        };
        let mut ok = 0u32;
        let error = loop {
            match q.put(&ok) {
                Ok(()) => ok += 1,
                Err(e) => break e.kind(),
            }
        };
        parent.send(&(ok, format!("{error:?}"))).unwrap();
    }
}

/// Refuses itself the barrier and says so; then for each round's queue, on the parent's
/// word (whether the shutdown is immediate): takes [`BEFORE_SHUTDOWN`] items, shuts the
/// queue down, takes (and marks done) what is left until `ShutDown`, and reports how many
/// items it took and whether `FLAG_FENCED` was still clear at the shutdown (puts were
/// publishing plainly).
fn refused_shutdown_consumer((queues, mut parent): (Vec<JoinableQueue<u32>>, Connection)) {
    let refused = refuse_membarrier();
    parent.send(&refused).unwrap();
    if refused.is_err() {
        return;
    }
    for q in queues {
        let Ok(immediate) = parent.recv::<bool>() else {
            return;
        };
        let mut got = 0u32;
        while got < BEFORE_SHUTDOWN {
            q.get().unwrap();
            q.task_done().unwrap();
            got += 1;
        }
        let plain = !q.puts_fenced();
        q.shutdown(immediate);
        loop {
            match q.get() {
                Ok(_) => {
                    q.task_done().unwrap();
                    got += 1;
                }
                Err(e) if e.kind() == ErrorKind::ShutDown => break,
                Err(e) => panic!("get failed: {e}"),
            }
        }
        parent.send(&(got, plain)).unwrap();
    }
}

/// `shutdown_racing_puts_strands_no_item` (tests/queue.rs) with the consumer and the
/// shutdown in a process refused the barrier, racing three producers that publish plainly
/// (the consumer is told to start only once the queue holds enough items that it never goes
/// to sleep, which would set `FLAG_FENCED` before the shutdown). Every put that returned
/// `Ok` is drained; after an immediate shutdown, `join` returns. Rounds alternate the two.
///
/// Fails if an item put `Ok` is not drained (the counts differ, or the queue is not empty),
/// if `join` does not return within [`HANG`] after an immediate shutdown (an item left
/// counted unfinished), if a producer's put fails with anything but `ShutDown`, if
/// `FLAG_FENCED` is clear after the refused shutdown, if `FLAG_FENCED` was already set at
/// the shutdown in some round (the race was not with plain puts: the test would show
/// nothing), or if anything hangs. The race is narrow (a put's store still in its store
/// buffer while the shutdown's nap runs): a regression there is caught only by chance.
/// Skips, loudly, as [`a_refused_consumer_takes_every_item`].
#[test]
fn shutdown_racing_plain_puts_with_a_refused_consumer() {
    crate::init();
    const TEST: &str = "shutdown_racing_plain_puts_with_a_refused_consumer";
    if !granted_here(TEST) {
        return;
    }
    let start = Instant::now();
    let mut round = 0;
    for batch in 0..MAX_BATCHES {
        if batch >= MIN_BATCHES && start.elapsed() > ENOUGH_TIME {
            break;
        }
        let queues: Vec<JoinableQueue<u32>> = (0..ROUNDS_PER_BATCH)
            .map(|_| JoinableQueue::new().unwrap())
            .collect();
        let mut children = Children::default();
        let (mut consumer, to_parent) = Pipe::new().unwrap();
        children.spawn(refused_shutdown_consumer, (queues.clone(), to_parent));
        if !filter_installed(&mut consumer, TEST) {
            return;
        }
        let mut producers = Vec::new();
        for _ in 0..PRODUCERS {
            let (ours, theirs) = Pipe::new().unwrap();
            children.spawn(racing_producer, (queues.clone(), theirs));
            producers.push(ours);
        }
        for q in queues {
            let immediate = round % 2 == 1;
            for p in &mut producers {
                p.send(&()).unwrap();
            }
            let deadline = Instant::now() + HANG;
            while q.qsize() < BEFORE_SHUTDOWN as usize {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: {} items put in {HANG:?}",
                    q.qsize()
                );
                std::thread::sleep(Duration::from_micros(200));
            }
            consumer.send(&immediate).unwrap();
            let (got, plain): (u32, bool) = consumer
                .recv_timeout(HANG)
                .unwrap_or_else(|e| panic!("round {round}: no report from the consumer: {e}"));
            let mut put_ok = 0;
            for p in &mut producers {
                let (ok, error): (u32, String) = p
                    .recv_timeout(HANG)
                    .unwrap_or_else(|e| panic!("round {round}: no report from a producer: {e}"));
                assert_eq!(error, "ShutDown", "round {round}: a put failed otherwise");
                put_ok += ok;
            }
            assert!(
                plain,
                "round {round}: FLAG_FENCED was set before the shutdown, so the shutdown did \
                 not race plain puts"
            );
            assert!(
                q.puts_fenced(),
                "round {round}: the refused shutdown left FLAG_FENCED clear"
            );
            if immediate {
                if let Err(e) = q.join_timeout(HANG) {
                    panic!("round {round}: join after shutdown(true): {e}");
                }
            } else {
                assert_eq!(got, put_ok, "round {round}: items put Ok but not drained");
                assert!(q.empty(), "round {round}: items left after the drain");
            }
            round += 1;
        }
        children.finish(Instant::now() + HANG);
    }
}

// -------------------------------------------------------------------------------------------
// Contended puts in a refused process

const THREADS: u32 = 4;
const PER_THREAD: u32 = 400;

/// Refuses itself the barrier and says so; then puts from [`THREADS`] threads at once, big
/// items, so that the producer lock's holder maps chunks and its waiters go to sleep.
fn contending_producers((q, mut parent): (Queue<ByteBuf>, Connection)) {
    let refused = refuse_membarrier();
    parent.send(&refused).unwrap();
    if refused.is_err() {
        return;
    }
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let q = &q;
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let item = vec![(t ^ i) as u8; 16 * 1024 + (i as usize % 7) * 4096];
                    q.put(&ByteBuf::from(item)).unwrap();
                }
            });
        }
    });
}

/// Threads of a process refused the barrier contend for the producer lock (big items, so
/// that holders map chunks and waiters go to sleep): the waiters' naps stand in for the
/// wake-ups they may miss (the unlock is a plain store, and the barrier that would order it
/// against a sleeper's flag is refused), and every put finishes. Runs even where membarrier
/// is refused to the test process: the lock's fallback is tested all the same.
///
/// Fails if the test process has not taken every item within [`HANG`] (a waiter asleep for
/// good, or items lost), or if the producer does not exit 0. Skips, loudly, where seccomp is
/// unavailable.
#[test]
fn contended_puts_in_a_refused_process_finish() {
    crate::init();
    let q = Queue::<ByteBuf>::new().unwrap();
    let (mut from_producer, to_parent) = Pipe::new().unwrap();
    let mut children = Children::default();
    children.spawn(contending_producers, (q.clone(), to_parent));
    if !filter_installed(
        &mut from_producer,
        "contended_puts_in_a_refused_process_finish",
    ) {
        return;
    }
    let deadline = Instant::now() + HANG;
    let mut n = 0;
    while n < THREADS * PER_THREAD {
        assert!(
            Instant::now() < deadline,
            "took {n} items of {} in {HANG:?}",
            THREADS * PER_THREAD
        );
        match q.get_timeout(Duration::from_millis(100)) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::Empty => {}
            Err(e) => panic!("get failed: {e}"),
        }
    }
    children.finish(Instant::now() + HANG);
}
