//! `Process` from libtest's own threaded harness (`cargo test` with the default harness): spawn
//! and command children work from any test thread; fork is refused, since other threads run.
//!
//! Every test that spawns calls `multiproc::init()` first: its spawned children re-run this
//! binary with just that test selected, and `init()` turns that run into the child.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;

use multiproc::{
    Command, Connection, ErrorKind, Pipe, Process, Waitable, current_process, parent_process, wait,
};

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);

fn double(mut conn: Connection) {
    let n: u64 = conn.recv().unwrap();
    println!("child output line");
    conn.send(&(n * 2)).unwrap();
}

#[test]
fn spawn_from_libtest() {
    multiproc::init();
    let (mut parent, child) = Pipe::new().unwrap();
    let mut p = Process::spawn(double, child);
    p.start().unwrap();
    parent.send(&21u64).unwrap();
    assert_eq!(parent.recv::<u64>().unwrap(), 42);
    assert_eq!(p.join().unwrap(), 0);
}

#[test]
fn another() {
    multiproc::init();
    let mut p = Process::spawn(|x: i32| std::process::exit(x), 9);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 9);
}

fn returns(_: ()) {}

fn panics(_: ()) {
    panic!("deliberate panic in a child spawned from libtest")
}

fn aborts(_: ()) {
    std::process::abort()
}

fn waits_for_word(mut conn: Connection) {
    let _ = conn.recv_bytes();
}

/// libtest runs each test on a thread of its own beside the main thread: forking would risk
/// a child hanging on a lock another thread held, so `start` refuses and says why.
#[test]
fn fork_is_refused_from_libtest_threads() {
    let err = Process::fork(|| {}).start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported);
    assert!(err.to_string().contains("threads"), "{err}");
}

/// Exit codes, signals and join timeouts of spawned children, from a test thread.
#[test]
fn spawn_exit_codes_and_signals_from_libtest() {
    multiproc::init();
    let (_hold_term, term_end) = Pipe::new().unwrap();
    let (_hold_kill, kill_end) = Pipe::new().unwrap();
    let mut clean = Process::spawn(returns, ());
    let mut exits = Process::spawn(|code: i32| std::process::exit(code), 42);
    let mut panics = Process::spawn(panics, ());
    let mut aborts = Process::spawn(aborts, ());
    let mut term = Process::spawn(waits_for_word, term_end);
    let mut kill = Process::spawn(waits_for_word, kill_end);
    for p in [
        &mut clean,
        &mut exits,
        &mut panics,
        &mut aborts,
        &mut term,
        &mut kill,
    ] {
        p.start().unwrap();
    }
    let timed_out = term.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(timed_out.kind(), ErrorKind::Timeout);
    term.terminate().unwrap();
    kill.kill().unwrap();
    assert_eq!(clean.join().unwrap(), 0);
    assert_eq!(exits.join().unwrap(), 42);
    assert_eq!(panics.join().unwrap(), 1);
    assert_eq!(aborts.join().unwrap(), -libc::SIGABRT);
    assert_eq!(term.join_timeout(HANG).unwrap(), -libc::SIGTERM);
    assert_eq!(kill.join_timeout(HANG).unwrap(), -libc::SIGKILL);
}

/// Command children from a test thread: a connection as the program's stdout, which it
/// writes one CPython frame to; a connection passed at the fd number `pass` returned (and
/// named in `MULTIPROC_FDS`); exit statuses and signals as for any child.
#[test]
fn command_from_libtest() {
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", r"printf '\000\000\000\002hi'; exit 5"])
        .stdout(Stdio::from(OwnedFd::from(theirs)));
    let mut p = Process::command(cmd);
    p.start().unwrap();
    assert_eq!(ours.recv_bytes().unwrap(), b"hi");
    assert_eq!(p.join().unwrap(), 5);

    // Checked rather than used: dash's `>&N` takes one digit only, and the fd numbers of a
    // process whose other threads open fds too can be anything.
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut cmd = Command::new("sh");
    let fd = cmd.pass(theirs).unwrap();
    cmd.args([
        "-c",
        r#"[ "$MULTIPROC_FDS" = "$1" ] && [ -S "/proc/$$/fd/$1" ]"#,
        "sh",
        &fd.to_string(),
    ]);
    let mut p = Process::command(cmd);
    p.start().unwrap();
    assert_eq!(p.join().unwrap(), 0, "fd {fd} not passed as promised");
    // The child held the only other copy, and it has exited.
    assert_eq!(ours.recv_bytes().unwrap_err().kind(), ErrorKind::Eof);

    let (_hold, theirs) = Pipe::new().unwrap();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "exec head -c 5 >/dev/null"])
        .stdin(Stdio::from(OwnedFd::from(theirs)));
    let mut p = Process::command(cmd);
    p.start().unwrap();
    assert_eq!(
        p.join_timeout(Duration::from_millis(50))
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    p.kill().unwrap();
    assert_eq!(p.join_timeout(HANG).unwrap(), -libc::SIGKILL);
}

/// A spawned child's sentinel, in `wait` with its connection, from a test thread: not ready
/// while the child waits for us, ready once it has exited.
#[test]
fn spawned_sentinel_in_wait_from_libtest() {
    multiproc::init();
    let (mut ours, theirs) = Pipe::new().unwrap();
    let mut p = Process::spawn(waits_for_word, theirs);
    p.start().unwrap();
    let mut sentinel = p.sentinel().unwrap();
    let mut both = |conn: &mut Connection, timeout| {
        wait(
            &mut [conn as &mut dyn Waitable, &mut sentinel],
            Some(timeout),
        )
        .unwrap()
    };
    assert!(both(&mut ours, Duration::ZERO).is_empty());
    ours.send_bytes(b"go").unwrap();
    let deadline = std::time::Instant::now() + HANG;
    while !both(&mut ours, HANG).contains(&1) {
        assert!(std::time::Instant::now() < deadline, "never ready");
    }
    assert_eq!(p.join_timeout(Duration::ZERO).unwrap(), 0);
}

/// `(own name, parent pid and name, and a grandchild's name and its parent's name)`.
type Names = (String, Option<(u32, String)>, Option<(String, String)>);

fn names_as_seen(nested: bool) -> Names {
    let parent = parent_process().map(|p| (p.pid(), p.name().to_owned()));
    let grandchild = nested.then(|| {
        let (mut ours, theirs) = Pipe::new().unwrap();
        let mut p = Process::spawn(reports_names, (theirs, false));
        p.start().unwrap();
        let (name, parent, _): Names = ours.recv().unwrap();
        assert_eq!(p.join().unwrap(), 0);
        (name, parent.unwrap().1)
    });
    (current_process().name().to_owned(), parent, grandchild)
}

fn reports_names((mut conn, nested): (Connection, bool)) {
    conn.send(&names_as_seen(nested)).unwrap();
}

/// In the main process of a libtest binary, children are `Process-N` (no parent path), see
/// their name (default or set) and `MainProcess` as their parent, and can spawn children of
/// their own, named by path.
#[test]
fn names_from_libtest() {
    multiproc::init();
    assert_eq!(current_process().name(), "MainProcess");
    for set in [None, Some("libtest worker")] {
        let (mut ours, theirs) = Pipe::new().unwrap();
        let mut p = Process::spawn(reports_names, (theirs, true));
        let number = p.name().strip_prefix("Process-").unwrap().to_owned();
        assert!(number.parse::<u32>().is_ok(), "{}", p.name());
        if let Some(name) = set {
            p.set_name(name);
        }
        let name = p.name().to_owned();
        p.start().unwrap();
        let (seen, parent, grandchild): Names = ours.recv().unwrap();
        assert_eq!(seen, name);
        assert_eq!(parent, Some((std::process::id(), "MainProcess".to_owned())));
        assert_eq!(grandchild, Some((format!("Process-{number}:1"), name)));
        assert_eq!(p.join().unwrap(), 0);
    }
}
