//! `Process` across its start methods. The fork basics: exit codes in Python's convention,
//! signals, joins with timeouts, flushing, fd hygiene, and the refusal to fork a
//! multi-threaded process. Then what every start method shares: exit sentinels in `wait` and
//! `WaitSet` (with pidfds, and again with the pipe fallback), names and parents,
//! `active_children`, reaping at scale and after a dropped `Process`, and daemon children.
//!
//! The runner forks each test into a process of its own, itself a child named `Process-N`,
//! so the children a test starts are named `Process-N:1`, `Process-N:2`, ...

mod util;

use std::error::Error as StdError;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use multiproc::{
    Command, Connection, ErrorKind, Pipe, Process, Sentinel, WaitSet, Waitable, active_children,
    current_process, parent_process, wait,
};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};
use serde::{Deserialize, Serialize};
use util::{TestResult, open_fds};

type Res<T> = Result<T, Box<dyn StdError>>;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);

fn exit_codes_follow_python() -> TestResult {
    let mut clean = Process::fork(|| {});
    let mut exits = Process::fork(|| std::process::exit(42));
    let mut panics = Process::fork(|| panic!("deliberate panic in a child"));
    let mut aborts = Process::fork(|| std::process::abort());
    for p in [&mut clean, &mut exits, &mut panics, &mut aborts] {
        p.start()?;
    }
    assert_eq!(clean.join()?, 0);
    assert_eq!(exits.join()?, 42);
    assert_eq!(panics.join()?, 1);
    assert_eq!(aborts.join()?, -libc::SIGABRT);
    Ok(())
}

fn terminate_and_kill_report_minus_signal() -> TestResult {
    let (_hold_a, a) = Pipe::new()?;
    let (_hold_b, b) = Pipe::new()?;
    let mut term = Process::fork(move || {
        let mut a = a;
        let _ = a.recv_bytes();
    });
    let mut kill = Process::fork(move || {
        let mut b = b;
        let _ = b.recv_bytes();
    });
    term.start()?;
    kill.start()?;
    assert!(term.is_alive() && kill.is_alive());
    term.terminate()?;
    kill.kill()?;
    assert_eq!(term.join()?, -libc::SIGTERM);
    assert_eq!(kill.join()?, -libc::SIGKILL);
    assert!(!term.is_alive());
    // Signalling a reaped child is a no-op, never a signal to a recycled pid.
    term.kill()?;
    Ok(())
}

/// Whether this process ignores `signal` (inherited: a background job of a non-interactive
/// shell starts with SIGINT and SIGQUIT ignored), from the `SigIgn` mask in
/// `/proc/self/status`.
fn signal_ignored(signal: i32) -> Res<bool> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .ok_or("no SigIgn in /proc/self/status")?;
    Ok(u64::from_str_radix(mask.trim(), 16)? & (1 << (signal - 1)) != 0)
}

/// Python 3.14's `Process.interrupt`: SIGINT. A child without a handler dies of it; one
/// that handles it (as Python turns it into `KeyboardInterrupt`) exits as it chooses. One
/// that inherited SIGINT ignored (this test run in the background by a script) lives on.
fn interrupt_sends_sigint() -> TestResult {
    let (_hold, a) = Pipe::new()?;
    let mut plain = Process::fork(move || {
        let mut a = a;
        let _ = a.recv_bytes();
    });
    let (mut ready, mut ready_child) = Pipe::new()?;
    let mut handled = Process::fork(move || {
        let (mut read, write) = std::os::unix::net::UnixStream::pair().unwrap();
        signal_hook::low_level::pipe::register(libc::SIGINT, write).unwrap();
        ready_child.send_bytes(b"handler set").unwrap();
        let _ = read.read(&mut [0]);
        std::process::exit(1); // what an uncaught KeyboardInterrupt gives in Python
    });
    assert_eq!(
        plain.interrupt().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    plain.start()?;
    handled.start()?;
    assert_eq!(ready.recv_bytes()?, b"handler set");
    plain.interrupt()?;
    handled.interrupt()?;
    assert_eq!(handled.join()?, 1);
    if signal_ignored(libc::SIGINT)? {
        // Ignored here, so in the fork too: it lives on until killed (had SIGINT ended it,
        // the join below would say -2).
        let err = plain.join_timeout(Duration::from_millis(50)).unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        plain.kill()?;
        assert_eq!(plain.join()?, -libc::SIGKILL);
    } else {
        assert_eq!(plain.join()?, -libc::SIGINT);
    }
    // A reaped child is not signalled again.
    plain.interrupt()?;
    Ok(())
}

fn join_timeout_times_out_then_succeeds() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let mut p = Process::fork(move || {
        child.recv_bytes().unwrap();
    });
    p.start()?;
    let err = p.join_timeout(Duration::from_millis(20)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(p.exit_code(), None);
    parent.send_bytes(b"go")?;
    assert_eq!(p.join_timeout(Duration::from_secs(20))?, 0);
    assert_eq!(p.exit_code(), Some(0));
    Ok(())
}

fn misuse_is_a_typed_error() -> TestResult {
    let mut p = Process::fork(|| {});
    assert_eq!(p.join().unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(p.terminate().unwrap_err().kind(), ErrorKind::InvalidInput);
    p.start()?;
    assert_eq!(p.start().unwrap_err().kind(), ErrorKind::InvalidInput);
    p.join()?;
    Ok(())
}

fn fork_is_refused_while_other_threads_run() -> TestResult {
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || wait.recv());
    let err = Process::fork(|| {}).start().unwrap_err();
    release.send(())?;
    thread.join().unwrap()?;
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("threads"), "{err}");
    Ok(())
}

fn child_stdout_is_flushed_before_exit() -> TestResult {
    let (reader, writer) = rustix::pipe::pipe()?;
    let mut reader = std::fs::File::from(reader);
    let saved = rustix::io::dup(std::io::stdout().as_fd())?;
    rustix::stdio::dup2_stdout(writer.as_fd())?;
    let mut p = Process::fork(|| print!("no newline, still buffered"));
    let started = p.start();
    rustix::stdio::dup2_stdout(saved.as_fd())?;
    drop(writer);
    started?;
    assert_eq!(p.join()?, 0);
    let mut out = String::new();
    reader.read_to_string(&mut out)?;
    assert_eq!(out, "no newline, still buffered");
    Ok(())
}

fn start_and_join_leak_no_fds() -> TestResult {
    let before = open_fds();
    for _ in 0..50 {
        let (mut parent, mut child) = Pipe::new()?;
        let mut p = Process::fork(move || {
            let n: u32 = child.recv().unwrap();
            child.send(&(n + 1)).unwrap();
        });
        p.start()?;
        parent.send(&1u32)?;
        assert_eq!(parent.recv::<u32>()?, 2);
        assert_eq!(p.join()?, 0);
    }
    assert_eq!(open_fds(), before);
    Ok(())
}

fn child_sees_only_inherited_fds() -> TestResult {
    // fork copies the fd table: the child has exactly the parent's fds, nothing we added.
    let (mut parent, mut child) = Pipe::new()?;
    let expected = open_fds();
    let mut p = Process::fork(move || {
        child.send(&open_fds()).unwrap();
    });
    p.start()?;
    let seen: Vec<i32> = parent.recv()?;
    assert_eq!(seen, expected);
    p.join()?;
    Ok(())
}

/// A child forked behind our back (another library's `fork`) that leaves through `exit`
/// runs the `atexit` handlers it inherited: they must not stop this process's daemon
/// children, and `active_children` there lists none of ours.
fn a_child_forked_by_another_library_leaves_our_children_alone() -> TestResult {
    let (mut keep, mut end) = Pipe::new()?;
    let mut daemon = Process::fork(move || {
        let _ = end.recv_bytes_timeout(HANG);
    });
    daemon.set_daemon(true)?;
    daemon.start()?;
    let (mut ours, mut theirs) = Pipe::new()?;
    let foreign = multiproc::bench_support::foreign_fork(move || {
        theirs
            .send(&multiproc::active_children().len())
            .expect("report");
        // As a C or Python child would leave: the inherited atexit handlers run.
        std::process::exit(0);
    })?;
    let seen: usize = ours.recv_timeout(HANG)?;
    assert_eq!(foreign.wait()?, 0);
    assert_eq!(seen, 0, "the foreign child took our children for its own");
    assert!(
        daemon.is_alive(),
        "the foreign child's exit stopped our daemon"
    );
    keep.send_bytes(b"go")?;
    assert_eq!(daemon.join_timeout(HANG)?, 0);
    Ok(())
}

/// A panic payload whose own `Drop` panics.
struct Bomb;

impl Drop for Bomb {
    fn drop(&mut self) {
        panic!("the payload's drop panics too");
    }
}

fn panics_with_a_bomb(_: ()) {
    std::panic::panic_any(Bomb)
}

/// A child whose target panics with a payload that panics again when dropped still exits
/// with 1: the second panic must not unwind out of the child's exit path into the code
/// that started it (after a fork, the parent's; after a spawn, the program's `main`).
fn a_panic_whose_payload_panics_on_drop_still_ends_the_child() -> TestResult {
    let me = std::process::id();
    let (mut rx, mut tx) = Pipe::half_duplex()?;
    let mut p = Process::fork(|| panics_with_a_bomb(()));
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.start()));
    if std::process::id() != me {
        // Only a child that escaped its exit gets here, in the parent's code.
        let _ = tx.send_bytes(b"escaped");
        std::process::exit(0);
    }
    drop(tx);
    started.map_err(|_| "start panicked in the parent")??;
    assert_eq!(p.join_timeout(HANG)?, 1, "forked child's exit code");
    match rx.recv_bytes() {
        Err(e) if e.kind() == ErrorKind::Eof => {}
        other => fail!("the forked child ran its parent's code: {other:?}"),
    }
    let mut p = Process::spawn(panics_with_a_bomb, ());
    p.start()?;
    assert_eq!(p.join_timeout(HANG)?, 1, "spawned child's exit code");
    Ok(())
}

/// What [`starts_with_no_fds_left`] saw: whether `start` failed, the children left after
/// it, and what the next child's sentinel is.
type NoFdsReport = (bool, Vec<u32>, String);

/// In a fresh process (nothing probed yet): starts a child while every fd is taken, then
/// another once fds are free again, and reports.
fn starts_with_no_fds_left(mut report: Connection) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(64),
            maximum: limit.maximum,
        },
    )
    .unwrap();
    let mut held = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        held.push(file);
    }
    let mut p = Process::fork(|| {});
    let failed = p.start().is_err();
    held.clear(); // reading /proc takes an fd
    let me = std::process::id();
    let children: Vec<u32> = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
        .unwrap()
        .split_whitespace()
        .map(|c| c.parse().unwrap())
        .collect();
    let mut next = Process::fork(|| {});
    next.start().unwrap();
    let sentinel = next.sentinel().unwrap();
    let fd = sentinel.as_fd().as_raw_fd();
    let kind = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    next.join().unwrap();
    report
        .send(&(failed, children, kind.to_string_lossy().into_owned()))
        .unwrap();
}

/// A `start` that fails after the child exists (no fd left for its pidfd) kills and reaps
/// that child rather than leave an untracked zombie, and a failed probe for pidfds is not
/// remembered as "no pidfds here".
fn a_start_without_fds_leaves_no_child_and_pidfds_stay_on() -> TestResult {
    let (mut ours, theirs) = Pipe::new()?;
    let mut p = Process::spawn(starts_with_no_fds_left, theirs);
    p.start()?;
    let (failed, children, sentinel): NoFdsReport = ours.recv_timeout(HANG)?;
    assert_eq!(p.join_timeout(HANG)?, 0);
    assert!(
        failed,
        "start succeeded with no fd left: the test proves nothing"
    );
    assert_eq!(
        children,
        Vec::<u32>::new(),
        "children left by the failed start"
    );
    if without_pidfds() {
        assert!(sentinel.starts_with("pipe:"), "sentinel {sentinel}");
    } else {
        assert!(
            sentinel.contains("pidfd"),
            "later sentinel {sentinel}: pidfds went off"
        );
    }
    Ok(())
}

/// The "bind here, serve in a child" shape: the parent's copy of a listener moved into the
/// fork's closure is dropped at `start`, and must leave the socket file to the child, which
/// removes it when it lets go of the last copy.
fn a_listener_moved_into_a_forked_child_keeps_its_file() -> TestResult {
    let path = std::env::temp_dir().join(format!("multiproc-fork-listener-{}", std::process::id()));
    let mut listener = multiproc::Listener::bind(path.as_path(), None)?;
    let mut server = Process::fork(move || {
        let mut conn = listener.accept_timeout(HANG).unwrap();
        conn.send_bytes(b"hello").unwrap();
    });
    server.start()?;
    let kept = path.exists();
    let greeting =
        multiproc::Client::connect(path.as_path(), None).and_then(|mut c| c.recv_bytes());
    let code = server.join_timeout(HANG)?;
    let left = path.exists();
    let _ = std::fs::remove_file(&path);
    assert!(kept, "the parent's copy removed the file at start");
    assert_eq!(greeting?, b"hello");
    assert_eq!(code, 0);
    assert!(!left, "the last copy left its file behind");
    Ok(())
}

/// The same with a wrapper of the user's whose `Drop` closes its listener: the parent's
/// copy, dropped at `start`, closes, and must leave the file to the child all the same.
fn a_listener_closed_by_a_drop_in_the_parents_copy_keeps_the_childs_file() -> TestResult {
    struct Server(multiproc::Listener);
    impl Drop for Server {
        fn drop(&mut self) {
            self.0.close();
        }
    }
    let path = std::env::temp_dir().join(format!("multiproc-fork-close-{}", std::process::id()));
    let server = Server(multiproc::Listener::bind(path.as_path(), None)?);
    let mut child = Process::fork(move || {
        let mut server = server;
        let mut conn = server.0.accept_timeout(HANG).unwrap();
        conn.send_bytes(b"hello").unwrap();
    });
    child.start()?;
    let kept = path.exists();
    let greeting =
        multiproc::Client::connect(path.as_path(), None).and_then(|mut c| c.recv_bytes());
    let code = child.join_timeout(HANG)?;
    let left = path.exists();
    let _ = std::fs::remove_file(&path);
    assert!(
        kept,
        "the parent's close (in a drop at start) removed the child's file"
    );
    assert_eq!(greeting?, b"hello");
    assert_eq!(code, 0);
    assert!(!left, "the child's close left its file behind");
    Ok(())
}

/// Any forked child holds a copy of a listening socket, even one that never touches the
/// listener: dropping the listener (not moved into that child) still removes its file, so
/// clients find nothing there and the path can be bound again.
fn a_listener_dropped_while_an_unrelated_child_runs_removes_its_file() -> TestResult {
    let path =
        std::env::temp_dir().join(format!("multiproc-fork-unrelated-{}", std::process::id()));
    let listener = multiproc::Listener::bind(path.as_path(), None)?;
    let (mut release, worker_end) = Pipe::new()?;
    let mut worker = Process::fork(move || blocks_on(worker_end));
    worker.start()?;
    drop(listener);
    let gone = !path.exists();
    let rebound = multiproc::Listener::bind(path.as_path(), None).map(drop);
    let _ = std::fs::remove_file(&path);
    release.send_bytes(b"done")?;
    assert_eq!(worker.join_timeout(HANG)?, 0);
    assert!(gone, "the file outlived the listener");
    rebound?;
    Ok(())
}

/// A child that closed its end of the sentinel pipe (here by `exec`: the end is
/// close-on-exec) is still running, and `terminate` still reaches it. Run again without
/// pidfds by `sentinels_work_without_pidfds`, where that pipe is the sentinel.
fn a_child_that_closed_its_sentinel_pipe_is_still_signalled() -> TestResult {
    use std::os::unix::process::CommandExt;
    let (read, write) = rustix::pipe::pipe()?;
    let mut p = Process::fork(move || {
        let e = std::process::Command::new("sh")
            .args(["-c", "echo ready; exec sleep 30"])
            .stdout(Stdio::from(write))
            .exec();
        panic!("exec: {e}");
    });
    p.start()?;
    let mut ready = [0u8; 6];
    std::fs::File::from(read).read_exact(&mut ready)?;
    assert_eq!(&ready, b"ready\n");
    p.terminate()?;
    assert_eq!(
        p.join_timeout(HANG)?,
        -15,
        "terminate did not reach the child"
    );
    Ok(())
}

/// The parent's copies of what a fork target holds go after the child is recorded: a
/// closure whose drop panics in the parent leaves a child that is still tracked; and a
/// drop that starts another process does not undo the "handed to the child" rule for the
/// rest of the closure (a listener after it keeps the child's socket file).
fn dropping_a_fork_target_in_the_parent_may_panic_or_start_another() -> TestResult {
    static PARENT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    struct PanicsInParent;
    impl Drop for PanicsInParent {
        fn drop(&mut self) {
            if std::process::id() == PARENT.load(std::sync::atomic::Ordering::Relaxed) {
                panic!("deliberate panic in the parent's drop of a fork target");
            }
        }
    }
    struct StartsAnother;
    impl Drop for StartsAnother {
        fn drop(&mut self) {
            let mut other = Process::fork(|| {});
            other.start().unwrap();
            other.join().unwrap();
        }
    }
    PARENT.store(std::process::id(), std::sync::atomic::Ordering::Relaxed);
    let guard = PanicsInParent;
    let mut p = Process::fork(move || {
        let _guard = &guard;
    });
    let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.start()));
    assert!(
        started.is_err(),
        "the drop did not panic: the test proves nothing"
    );
    assert!(p.pid().is_some(), "the child is not tracked");
    assert_eq!(p.join_timeout(HANG)?, 0);

    let path = std::env::temp_dir().join(format!("multiproc-nested-{}", std::process::id()));
    let server = (
        StartsAnother,
        multiproc::Listener::bind(path.as_path(), None)?,
    );
    let mut p = Process::fork(move || {
        let (_starter, mut listener) = server;
        let _ = listener.accept_timeout(HANG);
    });
    p.start()?;
    let kept = path.exists();
    let reached = multiproc::Client::connect(path.as_path(), None).map(drop);
    let code = p.join_timeout(HANG)?;
    let _ = std::fs::remove_file(&path);
    assert!(kept, "the parent's drop removed the child's socket file");
    reached?;
    assert_eq!(code, 0);
    Ok(())
}

/// A child that other code reaped (a `waitpid` of its own, `SIGCHLD` ignored): `join`
/// says `ECHILD`, again on a second call (never `waitid` by its pid again: that could reap
/// another child of ours), signals are not sent (its pid may be another process's), it
/// leaves `active_children`, and a dropped one leaves no fd behind. Run again without
/// pidfds by `sentinels_work_without_pidfds`.
fn a_child_reaped_by_other_code_is_lost_not_leaked() -> TestResult {
    let before = open_fds();
    for round in 0..6 {
        let (mut release, child_end) = Pipe::new()?;
        let mut p = Process::fork(move || blocks_on(child_end));
        p.start()?;
        let pid = Pid::from_raw(p.pid().ok_or("no pid")? as i32).ok_or("pid 0")?;
        release.send_bytes(b"go")?;
        // Other code reaps it.
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())?;
        // The loss is found by a signal first on odd rounds, by a join on even ones.
        if round % 2 == 1 {
            p.terminate()?;
        }
        for attempt in ["join", "join again"] {
            let err = p.join_timeout(HANG).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ECHILD), "{attempt}: {err:?}");
        }
        p.terminate()?;
        p.kill()?;
        assert!(active_children().is_empty(), "still listed");
        assert_eq!(p.exit_code(), None);
    }
    assert_eq!(
        open_fds(),
        before,
        "records of lost children kept their fds"
    );
    Ok(())
}

fn dropped_running_process_is_reaped_later() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = child.recv_bytes();
    });
    p.start()?;
    let pid = p.pid().unwrap();
    let raw = rustix::process::Pid::from_raw(pid as i32).ok_or("pid 0")?;
    let exited = rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty())?;
    drop(p); // never blocks, never kills
    parent.send_bytes(b"exit now")?;
    // A pidfd turns readable once the child has exited (and is a zombie until reaped).
    let mut fds = [rustix::event::PollFd::new(
        &exited,
        rustix::event::PollFlags::IN,
    )];
    let ten_s = rustix::time::Timespec {
        tv_sec: 10,
        tv_nsec: 0,
    };
    assert_eq!(
        rustix::event::poll(&mut fds, Some(&ten_s))?,
        1,
        "child did not exit"
    );
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    assert!(
        stat.contains(") Z "),
        "expected a zombie before the next start: {stat}"
    );
    let mut q = Process::fork(|| {});
    q.start()?;
    q.join()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        !stat.contains(") Z "),
        "child {pid} left as a zombie: {stat}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared by the tests below: children of every start method, and what they run

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Fork,
    Spawn,
    Command,
}

const METHODS: [Method; 3] = [Method::Fork, Method::Spawn, Method::Command];

/// Sends "ready", then exits once a message (or end of file) arrives.
fn says_ready_then_waits(mut conn: Connection) {
    conn.send_bytes(b"ready").unwrap();
    blocks_on(conn);
}

/// A child (not started yet) doing [`says_ready_then_waits`] over the returned connection.
/// The command child is `sh` with the connection as stdin and stdout: it writes the "ready"
/// frame, then `head` waits for the 5 bytes of a 1-byte frame (`release`).
fn ready_then_waits(method: Method) -> Res<(Process, Connection)> {
    let (ours, theirs) = Pipe::new()?;
    let p = match method {
        Method::Fork => Process::fork(move || says_ready_then_waits(theirs)),
        Method::Spawn => Process::spawn(says_ready_then_waits, theirs),
        Method::Command => {
            let fd = OwnedFd::from(theirs);
            let mut cmd = Command::new("sh");
            cmd.args([
                "-c",
                r"printf '\000\000\000\005ready'; exec head -c 5 >/dev/null",
            ])
            .stdout(Stdio::from(rustix::io::fcntl_dupfd_cloexec(&fd, 0)?))
            .stdin(Stdio::from(fd));
            Process::command(cmd)
        }
    };
    Ok((p, ours))
}

/// Lets a [`ready_then_waits`] child exit.
fn release(conn: &mut Connection) -> multiproc::Result<()> {
    conn.send_bytes(b"x")
}

fn returns(_: ()) {}

fn exits_with(code: i32) {
    std::process::exit(code)
}

/// Returns once a message (or end of file) arrives, or after [`HANG`] at the latest: a forked
/// child holds copies of all its parent's fds, the other end of its own connection included,
/// so it would never see end of file if a failing test left without releasing it.
fn blocks_on(mut conn: Connection) {
    let _ = conn.recv_bytes_timeout(HANG);
}

/// Whether this run uses the pipe fallback for sentinels (see `sentinels_work_without_pidfds`).
fn without_pidfds() -> bool {
    std::env::var_os("MULTIPROC_NO_PIDFD").is_some_and(|v| v == "1")
}

/// The sentinel is a pidfd, or a pipe under `MULTIPROC_NO_PIDFD=1`.
fn check_sentinel_kind(sentinel: &Sentinel) -> TestResult {
    let target = std::fs::read_link(format!("/proc/self/fd/{}", sentinel.as_fd().as_raw_fd()))?;
    let is_pipe = target.to_string_lossy().starts_with("pipe:");
    if is_pipe != without_pidfds() {
        fail!(
            "sentinel is {target:?} with MULTIPROC_NO_PIDFD={:?}",
            std::env::var_os("MULTIPROC_NO_PIDFD")
        );
    }
    Ok(())
}

/// This process has no child left at all, neither running nor a zombie (`waitid` without
/// reaping: ECHILD means none).
fn assert_no_children() -> TestResult {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    match rustix::process::waitid(WaitId::All, options) {
        Err(rustix::io::Errno::CHILD) => Ok(()),
        Ok(None) => fail!("a child of this process still runs"),
        Ok(Some(_)) => fail!("a child of this process was left unreaped (a zombie)"),
        Err(e) => Err(e.into()),
    }
}

/// Makes this test's process the reaper of orphaned descendants, so a grandchild whose parent
/// died becomes ours to check and reap (instead of going to whatever init this machine has).
fn adopt_orphans() -> TestResult {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))?;
    Ok(())
}

fn pidfd_of(pid: u32) -> Res<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or("bad pid")?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// Waits until `fd` (a pidfd) is readable, i.e. its process has exited; false at `timeout`.
fn exits_within(fd: &OwnedFd, timeout: Duration) -> Res<bool> {
    let mut set = [&mut fd.as_fd()];
    Ok(wait(&mut set, Some(timeout))? == [0])
}

// ---------------------------------------------------------------------------------------------
// Sentinels

fn ready_now(
    conn: &mut Connection,
    sentinel: &mut Sentinel,
    timeout: Option<Duration>,
) -> multiproc::Result<Vec<usize>> {
    let mut ready = wait(&mut [conn as &mut dyn Waitable, sentinel], timeout)?;
    ready.sort();
    Ok(ready)
}

/// In `wait`, beside the child's connection: the sentinel is not ready while the child lives
/// (a message pending on the connection or not), turns ready when it exits, and stays ready,
/// also after `join`. With pidfds, ready means reaping does not block.
fn sentinel_is_ready_in_wait_exactly_once_the_child_exits() -> TestResult {
    for method in METHODS {
        let (mut p, mut conn) = ready_then_waits(method)?;
        p.start()?;
        let mut sentinel = p.sentinel()?;
        check_sentinel_kind(&sentinel)?;
        // The child cannot exit before we release it, so only "ready" can be ready.
        assert_eq!(
            ready_now(&mut conn, &mut sentinel, Some(HANG))?,
            [0],
            "{method:?}"
        );
        assert_eq!(conn.recv_bytes()?, b"ready");
        let none: [usize; 0] = [];
        assert_eq!(
            ready_now(&mut conn, &mut sentinel, Some(Duration::ZERO))?,
            none
        );
        release(&mut conn)?;
        let deadline = Instant::now() + HANG;
        // The connection may reach end of file a moment before the exit is reported.
        while !ready_now(&mut conn, &mut sentinel, Some(HANG))?.contains(&1) {
            if Instant::now() > deadline {
                fail!("{method:?}: the sentinel never turned ready");
            }
        }
        if !without_pidfds() {
            assert!(p.exit_code().is_some(), "{method:?}: ready before exit");
        }
        assert_eq!(
            ready_now(&mut conn, &mut sentinel, Some(Duration::ZERO))?,
            [0, 1]
        );
        assert_eq!(p.join_timeout(Duration::ZERO)?, 0, "{method:?}");
        assert_eq!(
            ready_now(&mut conn, &mut sentinel, Some(Duration::ZERO))?,
            [0, 1]
        );
    }
    Ok(())
}

/// What a `WaitSet` below holds: connections and sentinels side by side.
enum Watched {
    Conn(Connection),
    Exit(Sentinel),
}

impl Waitable for Watched {
    fn wait_fd(&self) -> multiproc::Result<BorrowedFd<'_>> {
        match self {
            Watched::Conn(c) => c.wait_fd(),
            Watched::Exit(s) => s.wait_fd(),
        }
    }

    fn is_ready(&mut self) -> bool {
        match self {
            Watched::Conn(c) => c.is_ready(),
            Watched::Exit(s) => s.is_ready(),
        }
    }

    fn is_ready_buffered(&self) -> bool {
        match self {
            Watched::Conn(c) => c.is_ready_buffered(),
            Watched::Exit(s) => s.is_ready_buffered(),
        }
    }
}

/// In one `WaitSet` with three children's connections and sentinels: released one at a time,
/// each child's sentinel turns ready when it exits, stays ready, and no sentinel of a child
/// still running is ever reported.
fn sentinels_in_a_wait_set_turn_ready_one_by_one() -> TestResult {
    let mut set = WaitSet::new()?;
    let mut children = Vec::new();
    for method in METHODS {
        let (mut p, mut conn) = ready_then_waits(method)?;
        p.start()?;
        assert_eq!(conn.recv_bytes()?, b"ready");
        let sentinel = p.sentinel()?;
        check_sentinel_kind(&sentinel)?;
        let conn_key = set.insert(Watched::Conn(conn))?;
        let exit_key = set.insert(Watched::Exit(sentinel))?;
        children.push((method, p, conn_key, exit_key));
    }
    assert!(set.wait(Some(Duration::ZERO))?.is_empty());
    for k in 0..children.len() {
        let (method, _, conn_key, exit_key) = children[k];
        let Some(Watched::Conn(conn)) = set.get_mut(conn_key) else {
            fail!("lost the connection");
        };
        release(conn)?;
        let deadline = Instant::now() + HANG;
        let ready = loop {
            let ready = set.wait(Some(HANG))?;
            if ready.contains(&exit_key) {
                break ready;
            }
            if Instant::now() > deadline {
                fail!("{method:?}: the sentinel never turned ready");
            }
        };
        for (other, _, other_conn, other_exit) in &children[k + 1..] {
            assert!(
                !ready.contains(other_exit) && !ready.contains(other_conn),
                "{other:?} still runs, yet is reported ready after {method:?} exited"
            );
        }
        assert!(
            set.wait(Some(Duration::ZERO))?.contains(&exit_key),
            "stays ready"
        );
        assert_eq!(children[k].1.join_timeout(Duration::ZERO)?, 0);
        assert!(
            set.wait(Some(Duration::ZERO))?.contains(&exit_key),
            "after join"
        );
        set.remove(conn_key);
        set.remove(exit_key);
    }
    assert!(set.is_empty());
    Ok(())
}

/// The sentinel tests and the fork joins and signals again, in a fresh run of this binary
/// with `MULTIPROC_NO_PIDFD=1`: sentinels are then pipes, joins and signals go by pid. (The
/// choice is made once per process, hence a new process rather than a variable set here.)
fn sentinels_work_without_pidfds() -> TestResult {
    let names = [
        "sentinel_is_ready_in_wait_exactly_once_the_child_exits",
        "sentinels_in_a_wait_set_turn_ready_one_by_one",
        "exit_codes_follow_python",
        "terminate_and_kill_report_minus_signal",
        "a_child_that_closed_its_sentinel_pipe_is_still_signalled",
        "a_child_reaped_by_other_code_is_lost_not_leaked",
        "join_timeout_times_out_then_succeeds",
        "daemon_child_dies_when_its_parent_is_killed",
        "daemon_child_is_terminated_when_its_spawned_parent_exits",
    ];
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--exact")
        .args(names)
        .env("MULTIPROC_NO_PIDFD", "1")
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = format!("test result: ok. {} passed; 0 failed", names.len());
    if !out.status.success() || !stdout.contains(&summary) {
        fail!(
            "with MULTIPROC_NO_PIDFD=1 ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Names and parents

/// What a child knows about itself and its parent.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Seen {
    name: String,
    pid: u32,
    daemon: bool,
    /// `parent_process()`: pid and name.
    parent: Option<(u32, String)>,
    /// Whether the parent's sentinel was ready (it must not be: the parent waits for us).
    parent_sentinel_ready: Option<bool>,
}

fn seen_from_inside() -> Seen {
    let me = current_process();
    let parent = parent_process();
    let parent_sentinel_ready = parent.as_ref().map(|p| {
        let mut sentinel = p.sentinel().unwrap();
        !wait(&mut [&mut sentinel], Some(Duration::ZERO))
            .unwrap()
            .is_empty()
    });
    Seen {
        name: me.name().to_owned(),
        pid: me.pid(),
        daemon: me.daemon(),
        parent: parent.map(|p| (p.pid(), p.name().to_owned())),
        parent_sentinel_ready,
    }
}

fn reports_itself(mut conn: Connection) {
    conn.send(&seen_from_inside()).unwrap();
}

fn child_of(method: Method, conn: Connection) -> Process {
    match method {
        Method::Fork => Process::fork(move || reports_itself(conn)),
        Method::Spawn => Process::spawn(reports_itself, conn),
        Method::Command => unreachable!("a command child has no multiproc identity"),
    }
}

/// Children are named `Process-<path>` after this process's own number, counting every
/// `Process` created here, whatever its start method.
fn default_names_number_children_under_this_process() -> TestResult {
    let me = current_process().name().to_owned();
    assert!(me.starts_with("Process-"), "the runner's child: {me}");
    let a = Process::fork(|| {});
    let b = Process::spawn(returns, ());
    let c = Process::command(Command::new("true"));
    let names = [a.name(), b.name(), c.name()];
    assert_eq!(names, [1, 2, 3].map(|n| format!("{me}:{n}")));
    Ok(())
}

/// Forked and spawned children see their name (default or set), pid and daemon flag in
/// `current_process()`, this process as `parent_process()`, and its sentinel not ready.
fn children_know_their_name_and_parent() -> TestResult {
    let me = current_process();
    let cases = [
        (Method::Fork, Some("forked worker"), false),
        (Method::Spawn, Some("spawned worker"), false),
        (Method::Fork, None, true),
        (Method::Spawn, None, true),
    ];
    for (method, name, daemon) in cases {
        let (mut ours, theirs) = Pipe::new()?;
        let mut p = child_of(method, theirs);
        if let Some(name) = name {
            p.set_name(name);
        }
        p.set_daemon(daemon)?;
        p.start()?;
        let seen: Seen = ours.recv()?;
        assert_eq!(
            seen,
            Seen {
                name: p.name().to_owned(),
                pid: p.pid().ok_or("no pid")?,
                daemon,
                parent: Some((me.pid(), me.name().to_owned())),
                parent_sentinel_ready: Some(false),
            },
            "{method:?}"
        );
        assert_eq!(p.join()?, 0);
    }
    Ok(())
}

/// Starts a spawned and a forked grandchild, and reports its pid and what they saw.
fn starts_grandchildren(mut conn: Connection) {
    let mut seen = Vec::new();
    for method in [Method::Spawn, Method::Fork] {
        let (mut ours, theirs) = Pipe::new().unwrap();
        let mut p = child_of(method, theirs);
        p.start().unwrap();
        seen.push(ours.recv::<Seen>().unwrap());
        assert_eq!(p.join().unwrap(), 0);
    }
    conn.send(&(std::process::id(), seen)).unwrap();
}

/// Grandchildren are named by their path from here (`Process-N:1:2`), as in Python: by
/// number, not by the parent's name, which they see in `parent_process()`.
fn grandchildren_are_named_by_their_path() -> TestResult {
    let me = current_process().name().to_owned();
    let (mut from_spawned, end) = Pipe::new()?;
    let mut spawned = Process::spawn(starts_grandchildren, end);
    let (mut from_forked, end) = Pipe::new()?;
    let mut forked = Process::fork(move || starts_grandchildren(end));
    forked.set_name("boss");
    spawned.start()?;
    forked.start()?;
    for (conn, number, parent_name) in [
        (&mut from_spawned, 1, format!("{me}:1")),
        (&mut from_forked, 2, "boss".to_owned()),
    ] {
        let (parent_pid, seen): (u32, Vec<Seen>) = conn.recv()?;
        let names: Vec<&str> = seen.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [format!("{me}:{number}:1"), format!("{me}:{number}:2")]
        );
        for s in &seen {
            assert_eq!(s.parent, Some((parent_pid, parent_name.clone())));
        }
    }
    assert_eq!(spawned.join()?, 0);
    assert_eq!(forked.join()?, 0);
    Ok(())
}

/// Reports whether its parent's sentinel was ready at once, then whether it turned ready
/// (within a generous deadline) after the parent was told to exit.
fn watches_parent(mut conn: Connection) {
    let mut sentinel = parent_process().unwrap().sentinel().unwrap();
    let mut ready = |timeout| {
        !wait(&mut [&mut sentinel], Some(timeout))
            .unwrap()
            .is_empty()
    };
    conn.send(&ready(Duration::ZERO)).unwrap();
    conn.send(&ready(HANG)).unwrap();
}

/// A child's `parent_process().sentinel()` is not ready while its parent runs and turns
/// ready once the parent exits (leaving the child running).
fn parent_sentinel_turns_ready_when_the_parent_exits() -> TestResult {
    adopt_orphans()?;
    let (mut report, report_end) = Pipe::new()?;
    let (mut go, go_end) = Pipe::new()?;
    let mut parent = Process::fork(move || {
        let mut child = Process::spawn(watches_parent, report_end);
        child.start().unwrap();
        blocks_on(go_end);
        // Exits without joining: the child outlives it.
    });
    parent.start()?;
    assert!(!report.recv::<bool>()?, "ready while the parent runs");
    go.send_bytes(b"exit")?;
    assert_eq!(parent.join()?, 0);
    assert!(report.recv::<bool>()?, "not ready after the parent exited");
    // The orphan is ours now: reap it.
    let status = rustix::process::waitid(WaitId::All, WaitIdOptions::EXITED)?;
    assert_eq!(status.and_then(|s| s.exit_status()), Some(0));
    assert_no_children()
}

// ---------------------------------------------------------------------------------------------
// Keeping track of children

/// `active_children` lists the running children with their names and daemon flags, reaps
/// one that has exited (whose `Process` still reports its exit code) and leaves it out.
fn active_children_lists_running_children_only() -> TestResult {
    assert!(active_children().is_empty());
    let mut running = Vec::new();
    for method in METHODS {
        let (mut p, mut conn) = ready_then_waits(method)?;
        p.set_name(format!("{method:?} child"));
        p.set_daemon(method == Method::Spawn)?;
        p.start()?;
        assert_eq!(conn.recv_bytes()?, b"ready");
        running.push((p, conn));
    }
    let listed = || {
        let mut all: Vec<(u32, String, bool)> = active_children()
            .iter()
            .map(|c| (c.pid(), c.name().to_owned(), c.daemon()))
            .collect();
        all.sort();
        all
    };
    let expected = |children: &[(Process, Connection)]| {
        let mut all: Vec<(u32, String, bool)> = children
            .iter()
            .map(|(p, _)| (p.pid().unwrap(), p.name().to_owned(), p.daemon()))
            .collect();
        all.sort();
        all
    };
    assert_eq!(listed(), expected(&running));

    let (first, mut conn) = running.remove(0);
    let mut sentinel = first.sentinel()?;
    release(&mut conn)?;
    assert_eq!(wait(&mut [&mut sentinel], Some(HANG))?, [0]);
    assert_eq!(listed(), expected(&running));
    assert!(!first.is_alive());
    assert_eq!(first.join_timeout(Duration::ZERO)?, 0);

    for (_, conn) in &mut running {
        release(conn)?;
    }
    for (p, _) in &mut running {
        assert_eq!(p.join()?, 0);
    }
    assert!(active_children().is_empty());
    Ok(())
}

/// Dropping a running `Process` of any start method neither blocks nor kills; the child,
/// once exited, is a zombie only until the next `start` reaps it.
fn dropped_running_children_are_reaped_by_a_later_start() -> TestResult {
    for method in METHODS {
        let (mut p, mut conn) = ready_then_waits(method)?;
        p.start()?;
        assert_eq!(conn.recv_bytes()?, b"ready");
        let pid = p.pid().ok_or("no pid")?;
        let mut sentinel = p.sentinel()?;
        drop(p);
        release(&mut conn)?;
        assert_eq!(wait(&mut [&mut sentinel], Some(HANG))?, [0], "{method:?}");
        if !without_pidfds() {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            assert!(
                stat.contains(") Z "),
                "{method:?}: not a zombie yet: {stat}"
            );
        }
    }
    let mut later = Process::fork(|| {});
    later.start()?;
    assert_eq!(later.join()?, 0);
    assert_no_children()
}

/// 200 children, spawned and forked in turn, all running at once, joined with their exit
/// codes: none is left behind (running or zombie) and no fd stays open.
fn two_hundred_children_leave_no_zombie_and_no_fd() -> TestResult {
    let before = open_fds();
    let mut children = Vec::with_capacity(200);
    for i in 0..200 {
        let code = i % 64;
        let mut p = if i % 2 == 0 {
            Process::spawn(exits_with, code)
        } else {
            Process::fork(move || std::process::exit(code))
        };
        p.start()?;
        children.push((p, code));
    }
    for (p, code) in &mut children {
        assert_eq!(p.join()?, *code);
    }
    drop(children);
    assert_no_children()?;
    assert_eq!(open_fds(), before);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Daemons

/// Starts a daemon child (forked or spawned) that says "ready" on `daemon_end` and blocks,
/// reports its pid, and blocks until told to go (or killed).
fn starts_daemon_then_blocks((mut control, daemon_end, fork): (Connection, Connection, bool)) {
    let mut daemon = if fork {
        Process::fork(move || says_ready_then_waits(daemon_end))
    } else {
        Process::spawn(says_ready_then_waits, daemon_end)
    };
    daemon.set_daemon(true).unwrap();
    daemon.start().unwrap();
    control.send(&daemon.pid().unwrap()).unwrap();
    blocks_on(control);
}

/// A daemon child dies with its parent: with the parent SIGKILLed (no cleanup of its own
/// runs), the kernel kills the daemon. Every pairing of fork and spawn, parent and daemon.
fn daemon_child_dies_when_its_parent_is_killed() -> TestResult {
    adopt_orphans()?;
    for (parent_forks, daemon_forks) in [(false, false), (false, true), (true, false), (true, true)]
    {
        let what = format!("parent forked: {parent_forks}, daemon forked: {daemon_forks}");
        let (mut control, control_end) = Pipe::new()?;
        let (mut daemon_conn, daemon_end) = Pipe::new()?;
        let args = (control_end, daemon_end, daemon_forks);
        let mut parent = if parent_forks {
            Process::fork(move || starts_daemon_then_blocks(args))
        } else {
            Process::spawn(starts_daemon_then_blocks, args)
        };
        parent.start()?;
        let pid: u32 = control.recv()?;
        // Running its entry: past the check a daemon makes at start that its parent still
        // lives (it exits 1 if not), so only the kernel's death signal can end it now.
        assert_eq!(daemon_conn.recv_bytes()?, b"ready");
        // Race-free: the daemon blocks on `daemon_conn` and nobody reaps it before it exits.
        let daemon = pidfd_of(pid)?;
        parent.kill()?;
        assert_eq!(parent.join()?, -libc::SIGKILL);
        if !exits_within(&daemon, HANG)? {
            fail!("{what}: daemon {pid} outlived its killed parent by {HANG:?}");
        }
        // It was orphaned to us (the subreaper) and killed.
        let status = rustix::process::waitid(WaitId::PidFd(daemon.as_fd()), WaitIdOptions::EXITED)?
            .ok_or("no status")?;
        assert_eq!(
            (status.terminating_signal(), status.exit_status()),
            (Some(libc::SIGKILL), None),
            "{what}: killed by signal, or exit status"
        );
        assert_eq!(daemon_conn.recv_bytes().unwrap_err().kind(), ErrorKind::Eof);
    }
    assert_no_children()
}

/// `sh` that reports "ready" once its SIGTERM trap is set, then blocks reading; on SIGTERM it
/// reports "TERM" and exits 0. Stdin and stdout are the connection.
const TRAPS_SIGTERM: &str = r#"trap 'printf "\000\000\000\004TERM"; exit 0' TERM
printf '\000\000\000\005ready'
read line"#;

/// Starts [`TRAPS_SIGTERM`] as a daemon child, reports its pid, and returns (a normal exit)
/// once told to.
fn starts_trapping_daemon((mut control, daemon_end): (Connection, Connection)) {
    let fd = OwnedFd::from(daemon_end);
    let mut cmd = Command::new("sh");
    cmd.args(["-c", TRAPS_SIGTERM])
        .stdout(Stdio::from(
            rustix::io::fcntl_dupfd_cloexec(&fd, 0).unwrap(),
        ))
        .stdin(Stdio::from(fd));
    let mut daemon = Process::command(cmd);
    daemon.set_daemon(true).unwrap();
    daemon.start().unwrap();
    control.send(&daemon.pid().unwrap()).unwrap();
    blocks_on(control);
}

/// `parent` exits normally once told to; its daemon child must get SIGTERM and be reaped by
/// `parent` before `parent` is gone (nothing is orphaned to us).
fn daemon_is_terminated_when_parent_exits(
    mut parent: Process,
    mut control: Connection,
    mut daemon_conn: Connection,
) -> TestResult {
    parent.start()?;
    let _pid: u32 = control.recv()?;
    assert_eq!(daemon_conn.recv_bytes()?, b"ready", "the trap is set");
    control.send_bytes(b"exit now")?;
    assert_eq!(parent.join_timeout(HANG)?, 0);
    assert_eq!(daemon_conn.recv_bytes_timeout(HANG)?, b"TERM");
    assert_eq!(daemon_conn.recv_bytes().unwrap_err().kind(), ErrorKind::Eof);
    assert_no_children()
}

/// When a spawned parent exits normally, its daemon child gets SIGTERM (Python's atexit
/// hook) and is reaped.
fn daemon_child_is_terminated_when_its_spawned_parent_exits() -> TestResult {
    adopt_orphans()?;
    let (control, control_end) = Pipe::new()?;
    let (daemon_conn, daemon_end) = Pipe::new()?;
    let parent = Process::spawn(starts_trapping_daemon, (control_end, daemon_end));
    daemon_is_terminated_when_parent_exits(parent, control, daemon_conn)
}

/// The same for a forked parent returning from its closure, as Python's forked children stop
/// their daemons on the way out (`util._exit_function`). A forked child leaves by `_exit`,
/// which skips the atexit hook, so it stops them itself.
fn daemon_child_is_terminated_when_its_forked_parent_exits() -> TestResult {
    adopt_orphans()?;
    let (control, control_end) = Pipe::new()?;
    let (daemon_conn, daemon_end) = Pipe::new()?;
    let parent = Process::fork(move || starts_trapping_daemon((control_end, daemon_end)));
    daemon_is_terminated_when_parent_exits(parent, control, daemon_conn)
}

tests_main!(
    exit_codes_follow_python,
    a_child_reaped_by_other_code_is_lost_not_leaked,
    a_child_that_closed_its_sentinel_pipe_is_still_signalled,
    dropping_a_fork_target_in_the_parent_may_panic_or_start_another,
    a_listener_moved_into_a_forked_child_keeps_its_file,
    a_listener_closed_by_a_drop_in_the_parents_copy_keeps_the_childs_file,
    a_listener_dropped_while_an_unrelated_child_runs_removes_its_file,
    a_start_without_fds_leaves_no_child_and_pidfds_stay_on,
    a_panic_whose_payload_panics_on_drop_still_ends_the_child,
    terminate_and_kill_report_minus_signal,
    interrupt_sends_sigint,
    join_timeout_times_out_then_succeeds,
    misuse_is_a_typed_error,
    fork_is_refused_while_other_threads_run,
    child_stdout_is_flushed_before_exit,
    start_and_join_leak_no_fds,
    child_sees_only_inherited_fds,
    dropped_running_process_is_reaped_later,
    a_child_forked_by_another_library_leaves_our_children_alone,
    sentinel_is_ready_in_wait_exactly_once_the_child_exits,
    sentinels_in_a_wait_set_turn_ready_one_by_one,
    sentinels_work_without_pidfds,
    default_names_number_children_under_this_process,
    children_know_their_name_and_parent,
    grandchildren_are_named_by_their_path,
    parent_sentinel_turns_ready_when_the_parent_exits,
    active_children_lists_running_children_only,
    dropped_running_children_are_reaped_by_a_later_start,
    two_hundred_children_leave_no_zombie_and_no_fd,
    daemon_child_dies_when_its_parent_is_killed,
    daemon_child_is_terminated_when_its_spawned_parent_exits,
    daemon_child_is_terminated_when_its_forked_parent_exits,
);
