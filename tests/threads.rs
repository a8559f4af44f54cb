//! Threads and process-global state: many threads at once starting, joining and dropping
//! spawned children, making and dropping queues, binding listeners and connecting; forks
//! refused (typed) while other threads run, and allowed once they are gone; children the
//! library did not start left for their owner to reap.
//!
//! Spawned children re-execute this test binary; its `main` (from `tests_main!`) calls
//! `multiproc::init()` first, which turns the new process into the child.

mod util;

use std::sync::Barrier;
use std::time::Duration;

use multiproc::{Client, ErrorKind, Listener, Process, Queue, active_children};
use util::TestResult;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(30);

const THREADS: usize = 8;

fn exits_with(code: i32) {
    std::process::exit(code)
}

/// The children of this process that are zombies (exited, never reaped).
fn zombies() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) && state == Some("Z") {
            found.push(pid);
        }
    }
    found
}

/// The last other thread was joined: the process is single-threaded again, so a fork must
/// be allowed at once. (The kernel lists a joined thread in `/proc/self/task` for a moment
/// after `pthread_join` returns: its tid is cleared, and the join woken, before it is gone.)
fn fork_right_after_joining_the_last_thread_is_allowed() -> TestResult {
    for round in 0..2000 {
        std::thread::spawn(|| {}).join().expect("thread");
        let mut p = Process::fork(|| {});
        if let Err(e) = p.start() {
            return Err(format!("round {round}: {e}").into());
        }
        assert_eq!(p.join_timeout(HANG)?, 0);
    }
    Ok(())
}

/// While another thread runs, even one that only waits, a fork is refused, with
/// `Unsupported`, every time, from the main thread and from the other one; the `Process` is
/// left unstarted.
fn fork_is_refused_while_another_thread_runs() -> TestResult {
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        let mut p = Process::fork(|| {});
        let refused = p.start().unwrap_err().kind();
        ready_tx.send(()).unwrap();
        let _ = release_rx.recv();
        (refused, p.pid())
    });
    ready_rx.recv()?;
    for _ in 0..200 {
        let mut p = Process::fork(|| {});
        let e = p.start().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert_eq!(p.pid(), None);
    }
    release_tx.send(())?;
    let (refused, pid) = other.join().expect("thread");
    assert_eq!(refused, ErrorKind::Unsupported);
    assert_eq!(pid, None);
    Ok(())
}

/// Eight threads start, join and drop spawned children at once: every join gets its own
/// child's exit code, children whose `Process` was dropped are reaped by a later start or
/// `active_children`, and no zombie or registry entry is left.
fn spawn_join_and_drop_from_many_threads() -> TestResult {
    const EACH: usize = 12;
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|s| -> TestResult {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || -> Result<(), String> {
                    barrier.wait();
                    for i in 0..EACH {
                        let code = (t * EACH + i) as i32 % 200 + 1;
                        let mut p = Process::spawn(exits_with, code);
                        p.start().map_err(|e| format!("start: {e}"))?;
                        if i % 3 == 2 {
                            drop(p); // left running: reaped later
                            continue;
                        }
                        let got = p.join_timeout(HANG).map_err(|e| format!("join: {e}"))?;
                        if got != code {
                            return Err(format!("thread {t} child {i}: {got} != {code}"));
                        }
                        if i % 4 == 0 {
                            let _ = active_children();
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for w in workers {
            w.join().expect("worker panicked")?;
        }
        Ok(())
    })?;
    // The dropped ones: `active_children` reaps each as it exits.
    let deadline = std::time::Instant::now() + HANG;
    while !active_children().is_empty() {
        assert!(std::time::Instant::now() < deadline, "children never left");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(zombies(), Vec::<u32>::new());
    Ok(())
}

/// A `std::process::Command` child of the program's own, running beside many of ours: the
/// library never reaps it (its `wait` gets the real status), whatever its threads do.
fn children_the_library_did_not_start_are_left_alone() -> TestResult {
    let mut theirs: Vec<_> = (0..THREADS)
        .map(|i| {
            std::process::Command::new("sh")
                .args(["-c", &format!("exit {}", i + 10)])
                .spawn()
        })
        .collect::<Result<_, _>>()?;
    std::thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for i in 0..4 {
                    let mut p = Process::spawn(exits_with, i);
                    p.start().unwrap();
                    if i % 2 == 0 {
                        assert_eq!(p.join_timeout(HANG).unwrap(), i);
                    }
                    let _ = active_children();
                }
            });
        }
    });
    for (i, child) in theirs.iter_mut().enumerate() {
        assert_eq!(child.wait()?.code(), Some(i as i32 + 10));
    }
    Ok(())
}

/// Another thread reaps every child (`waitpid(-1)`), the library's included: a join reports
/// the lost exit code as an error, it does not hang, and the registry forgets the child.
fn a_child_reaped_by_other_code_is_reported_lost_not_waited_for() -> TestResult {
    for _ in 0..4 {
        let mut p = Process::spawn(exits_with, 7);
        p.start()?;
        // Reaped behind the library's back once it exits.
        let status = rustix::process::waitpid(None, rustix::process::WaitOptions::empty())?;
        assert!(status.is_some());
        let e = p.join_timeout(HANG).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        assert_eq!(p.exit_code(), None);
        assert!(active_children().iter().all(|c| Some(c.pid()) != p.pid()));
        p.terminate()?; // never signals a pid that may be another process's now
    }
    Ok(())
}

/// Eight threads make, use and drop queues at once, and share one queue; nothing deadlocks
/// or is lost.
fn queues_made_and_dropped_by_many_threads() -> TestResult {
    const EACH: usize = 150;
    let shared: Queue<u64> = Queue::new()?;
    std::thread::scope(|s| {
        for t in 0..THREADS as u64 {
            let shared = &shared;
            s.spawn(move || {
                for i in 0..EACH as u64 {
                    let own: Queue<u64> = Queue::new().unwrap();
                    own.put(&i).unwrap();
                    assert_eq!(own.get_timeout(HANG).unwrap(), i);
                    shared.put(&(t * 1000 + i)).unwrap();
                    drop(own);
                    let _ = shared.get_timeout(HANG).unwrap();
                }
            });
        }
    });
    assert!(shared.empty());
    Ok(())
}

/// Eight threads bind listeners in one directory, connect to them and drop them, at once.
fn listeners_bound_and_connected_from_many_threads() -> TestResult {
    const EACH: usize = 60;
    let dir = std::env::temp_dir().join(format!("multiproc-threads-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let dir = &dir;
            s.spawn(move || {
                for i in 0..EACH {
                    let path = dir.join(format!("l-{t}-{}", i % 3));
                    let mut listener = Listener::bind(path.as_path(), None).unwrap();
                    let mut client = Client::connect(path.as_path(), None).unwrap();
                    let mut server = listener.accept_timeout(HANG).unwrap();
                    client.send(&(t, i)).unwrap();
                    assert_eq!(server.recv::<(usize, usize)>().unwrap(), (t, i));
                    drop(listener);
                    assert!(!path.exists(), "a dropped listener leaves its file");
                }
            });
        }
    });
    assert_eq!(std::fs::read_dir(&dir)?.count(), 0);
    std::fs::remove_dir(&dir)?;
    Ok(())
}

/// Arguments whose `Serialize` panics (a user's impl).
#[derive(serde::Deserialize)]
struct PanicsWhenEncoded;

impl serde::Serialize for PanicsWhenEncoded {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("deliberate panic while encoding spawn arguments")
    }
}

fn takes_panicky(_: PanicsWhenEncoded) {}

/// A spawn whose arguments panic while they are encoded leaves this thread as it was: a
/// `Connection` sent as a message is still refused (`Encode`) afterwards, rather than
/// written as the number of an fd the peer would never get.
fn a_panic_while_encoding_spawn_arguments_leaves_no_state_behind() -> TestResult {
    let mut p = Process::spawn(takes_panicky, PanicsWhenEncoded);
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.start()));
    assert!(started.is_err(), "the panic reaches the caller");
    let (mut a, mut b) = multiproc::Pipe::new()?;
    let (c, _d) = multiproc::Pipe::new()?;
    assert_eq!(a.send(&c).unwrap_err().kind(), ErrorKind::Encode);
    assert!(
        !b.poll(Some(Duration::ZERO))?,
        "a refused send wrote nothing"
    );
    Ok(())
}

/// A thread alive under a name with `)` and spaces in it (which `/proc/.../stat` shows
/// inside the parentheses of field 2, unescaped): still counted, so a fork is refused.
fn a_thread_named_like_stat_fields_still_refuses_a_fork() -> TestResult {
    for name in ["a) X 1 1 1 4 4", ") R 0 0 0 0 4", "x)\n)4 4 4 4 4"] {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let other = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                ready_tx.send(()).unwrap();
                let _ = release_rx.recv();
            })?;
        ready_rx.recv()?;
        let mut p = Process::fork(|| {});
        let refused = p.start().map(|()| p.join_timeout(HANG));
        release_tx.send(())?;
        other.join().expect("thread");
        let e = refused.expect_err("forked while a thread ran");
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{name:?}: {e}");
    }
    Ok(())
}

/// Blocks in its destructor until told to go on: a thread running it is past its closure
/// but still runs code of this process (and could hold any lock).
struct BlocksInDrop(Option<(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>)>);

impl Drop for BlocksInDrop {
    fn drop(&mut self) {
        if let Some((in_drop, go_on)) = self.0.take() {
            in_drop.send(()).unwrap();
            let _ = go_on.recv();
        }
    }
}

thread_local! {
    static LAST_WORDS: std::cell::RefCell<BlocksInDrop> =
        const { std::cell::RefCell::new(BlocksInDrop(None)) };
}

/// A thread on its way out but still running its thread-local destructors (not yet
/// `PF_EXITING`: the kernel sets that only once the thread made its exit call) counts.
fn a_thread_running_its_tls_destructors_still_refuses_a_fork() -> TestResult {
    let (in_drop_tx, in_drop_rx) = std::sync::mpsc::channel::<()>();
    let (go_on_tx, go_on_rx) = std::sync::mpsc::channel::<()>();
    let other = std::thread::spawn(move || {
        LAST_WORDS.with(|w| w.borrow_mut().0 = Some((in_drop_tx, go_on_rx)));
    });
    in_drop_rx.recv()?;
    let mut p = Process::fork(|| {});
    let refused = p.start().map(|()| p.join_timeout(HANG));
    go_on_tx.send(())?;
    other.join().expect("thread");
    let e = refused.expect_err("forked while a thread ran its TLS destructors");
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    Ok(())
}

/// Spawn arguments whose `Serialize` starts another spawn, with a connection of its own,
/// between the two connections of the outer one: each child gets its own connections.
struct Nest {
    before: multiproc::Connection,
    inner: std::cell::RefCell<Option<(multiproc::Connection, Option<Process>)>>,
    after: multiproc::Connection,
}

impl serde::Serialize for Nest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeTuple};
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&self.before)?;
        let mut inner = self.inner.borrow_mut();
        if let Some((conn, process)) = inner.as_mut() {
            let conn = std::mem::replace(conn, multiproc::Pipe::new().unwrap().0);
            let mut p = Process::spawn(says_inner, conn);
            p.start().map_err(S::Error::custom)?;
            *process = Some(p);
        }
        t.serialize_element(&self.after)?;
        t.end()
    }
}

impl<'de> serde::Deserialize<'de> for Nest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (before, after) = serde::Deserialize::deserialize(d)?;
        Ok(Nest {
            before,
            inner: std::cell::RefCell::new(None),
            after,
        })
    }
}

fn says_inner(mut conn: multiproc::Connection) {
    conn.send("inner").unwrap();
}

fn says_outer(mut nest: Nest) {
    nest.before.send("before").unwrap();
    nest.after.send("after").unwrap();
}

fn a_spawn_inside_spawn_arguments_gives_each_child_its_own_connections() -> TestResult {
    let (mut before, before_end) = multiproc::Pipe::new()?;
    let (mut inner, inner_end) = multiproc::Pipe::new()?;
    let (mut after, after_end) = multiproc::Pipe::new()?;
    let nest = Nest {
        before: before_end,
        inner: std::cell::RefCell::new(Some((inner_end, None))),
        after: after_end,
    };
    let mut outer = Process::spawn(says_outer, nest);
    outer.start()?;
    assert_eq!(before.recv::<String>()?, "before");
    assert_eq!(after.recv::<String>()?, "after");
    assert_eq!(inner.recv::<String>()?, "inner");
    assert_eq!(outer.join_timeout(HANG)?, 0);
    Ok(())
}

/// A connection that sends from a thread-local's destructor, as its thread exits, after the
/// library's own thread-locals (the spare send buffers) are gone: the sends go out (they
/// panicked on the destroyed spares, and a panic there aborts the process). Thread-locals
/// are destroyed in the reverse order of their first use, or in that order: one holder is
/// set up before the spares are first used, one after, so one outlives them either way.
fn sends_from_a_thread_local_destructor_go_out() -> TestResult {
    struct Bye(multiproc::Connection);
    impl Drop for Bye {
        fn drop(&mut self) {
            // Writes the large queue first (then empty, its buffer would be a spare), then
            // encodes a value (into a spare, if there is one).
            self.0.send_bytes(b"bye").unwrap();
            self.0.send(&(1u8, "bye")).unwrap();
        }
    }
    thread_local! {
        static FIRST: std::cell::RefCell<Option<Bye>> = const { std::cell::RefCell::new(None) };
        static LAST: std::cell::RefCell<Option<Bye>> = const { std::cell::RefCell::new(None) };
    }
    const BIG: usize = 3 << 20;
    let mut p = util::child(|| {
        let mut readers = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..2 {
            let (mut r, w) = multiproc::Pipe::new().unwrap();
            ends.push(w);
            readers.push(std::thread::spawn(move || {
                let mut lens = Vec::new();
                loop {
                    match r.recv_bytes() {
                        Ok(m) => lens.push(m.len()),
                        Err(e) if e.is_eof() => return lens,
                        Err(e) => panic!("{e}"),
                    }
                }
            }));
        }
        let last = ends.pop().unwrap();
        let first = ends.pop().unwrap();
        std::thread::spawn(move || {
            let big = vec![7u8; BIG];
            FIRST.set(Some(Bye(first)));
            FIRST.with_borrow_mut(|b| {
                let conn = &mut b.as_mut().unwrap().0;
                conn.send(&(1u8, serde_bytes::Bytes::new(&big))).unwrap();
                conn.try_send_bytes(&big).unwrap();
                assert!(conn.pending_send_len() > 1 << 20);
            });
            LAST.set(Some(Bye(last)));
            LAST.with_borrow_mut(|b| {
                let conn = &mut b.as_mut().unwrap().0;
                conn.try_send_bytes(&big).unwrap();
                assert!(conn.pending_send_len() > 1 << 20);
            });
        })
        .join()
        .unwrap();
        let got: Vec<Vec<usize>> = readers.into_iter().map(|r| r.join().unwrap()).collect();
        assert_eq!(got[0].len(), 4, "{got:?}");
        assert_eq!(got[0][1..3], [BIG, 3], "{got:?}");
        assert_eq!(got[1][..2], [BIG, 3], "{got:?}");
        assert_eq!(got[1].len(), 3, "{got:?}");
    })?;
    util::finish(&mut p)
}

tests_main!(
    sends_from_a_thread_local_destructor_go_out,
    a_thread_named_like_stat_fields_still_refuses_a_fork,
    a_thread_running_its_tls_destructors_still_refuses_a_fork,
    a_spawn_inside_spawn_arguments_gives_each_child_its_own_connections,
    fork_right_after_joining_the_last_thread_is_allowed,
    fork_is_refused_while_another_thread_runs,
    spawn_join_and_drop_from_many_threads,
    children_the_library_did_not_start_are_left_alone,
    a_child_reaped_by_other_code_is_reported_lost_not_waited_for,
    queues_made_and_dropped_by_many_threads,
    listeners_bound_and_connected_from_many_threads,
    a_panic_while_encoding_spawn_arguments_leaves_no_state_behind,
);
