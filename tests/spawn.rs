//! The spawn and command start methods: exit codes and signals for re-executed and foreign
//! children, their output, and what they are handed (connections inside serde arguments, fds
//! passed to a program) or refused (a connection with unread bytes, a connection sent as a
//! message).
//!
//! Spawned children re-execute this test binary; its `main` (from `tests_main!`) calls
//! `multiproc::init()` first, which turns the new process into the child.

mod util;

use std::error::Error as StdError;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::process::Stdio;
use std::time::Duration;

use multiproc::{Command, Connection, ErrorKind, Pipe, Process, active_children};
use serde::{Deserialize, Serialize};
use util::{TestResult, open_fds};

type Res<T> = Result<T, Box<dyn StdError>>;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Entry functions run by spawned children

fn returns(_: ()) {}

fn exits_with(code: i32) {
    std::process::exit(code)
}

fn panics_with(message: String) {
    panic!("{message}")
}

fn aborts(_: ()) {
    std::process::abort()
}

/// Blocks until its connection delivers a message or reaches end of file.
fn waits_for_word(mut conn: Connection) {
    let _ = conn.recv_bytes();
}

/// Prints without a newline (so it sits in stdout's buffer), then leaves by `how`.
fn prints_then_leaves(how: u8) {
    print!("[printed before leaving by {how}]");
    match how {
        0 => {}
        1 => std::process::exit(3),
        _ => panic!("deliberate panic after printing"),
    }
}

/// Reports the fds open in this child and the numbers its two connections arrived at.
fn reports_fds((mut a, b): (Connection, Connection)) {
    let seen = open_fds();
    let own = (a.as_raw_fd(), b.as_raw_fd());
    a.send(&(seen, own)).unwrap();
}

#[derive(Serialize, Deserialize)]
struct Pair {
    control: Connection,
    data: Connection,
}

/// Connections at every depth of a serde value.
#[derive(Serialize, Deserialize)]
struct Wiring {
    label: String,
    pair: Pair,
    many: Vec<Connection>,
    /// The read end of a half-duplex pipe.
    reader: Connection,
    /// The write end of another.
    writer: Connection,
    absent: Option<Connection>,
}

fn uses_wiring(mut w: Wiring) {
    let n: u32 = w.reader.recv().unwrap();
    for (i, conn) in w.many.iter_mut().enumerate() {
        conn.send(&(n + i as u32)).unwrap();
    }
    w.writer.send_bytes(w.label.as_bytes()).unwrap();
    let directions = (
        w.reader.readable(),
        w.reader.writable(),
        w.writer.readable(),
        w.writer.writable(),
    );
    w.pair.data.send(&directions).unwrap();
    w.pair
        .control
        .send(&(w.many.len(), w.absent.is_none()))
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Helpers

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Runs `start` with this process's stdout or stderr pointing into a new pipe, so the children
/// it starts inherit the pipe there; returns what `start` returned and the pipe's read end.
/// Read it once the children are joined: it reaches end of file when the last one has exited.
/// The runner gives each test a single-threaded process, so nothing else writes meanwhile.
fn capturing<T>(stream: Stream, start: impl FnOnce() -> T) -> Res<(T, File)> {
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    std::io::stdout().flush()?;
    std::io::stderr().flush()?;
    let saved = match stream {
        Stream::Stdout => rustix::io::fcntl_dupfd_cloexec(std::io::stdout().as_fd(), 3)?,
        Stream::Stderr => rustix::io::fcntl_dupfd_cloexec(std::io::stderr().as_fd(), 3)?,
    };
    let point = |fd: &OwnedFd| match stream {
        Stream::Stdout => rustix::stdio::dup2_stdout(fd),
        Stream::Stderr => rustix::stdio::dup2_stderr(fd),
    };
    point(&writer)?;
    let result = start();
    point(&saved)?;
    drop(writer);
    Ok((result, File::from(reader)))
}

fn read_all(mut file: File) -> Res<String> {
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    Ok(text)
}

/// `sh -c script`, reading `stdin` (a connection) or nothing. A connection as stdin rather
/// than at a passed number: dash's redirections (`<&N`) take single-digit fds only.
fn sh(script: &str, stdin: Option<Connection>) -> Process {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script);
    match stdin {
        Some(conn) => cmd.stdin(Stdio::from(OwnedFd::from(conn))),
        None => cmd.stdin(Stdio::null()),
    };
    Process::command(cmd)
}

/// A pipe without close-on-exec, as a library that is not careful (or an inherited fd) leaves
/// open: only the close-on-exec sweep in the child keeps it out.
fn inheritable_pipe() -> Res<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::empty())?;
    for fd in [&r, &w] {
        assert!(!rustix::io::fcntl_getfd(fd)?.contains(rustix::io::FdFlags::CLOEXEC));
    }
    Ok((r, w))
}

/// Runs the named tests of this binary again in a fresh runner with `MULTIPROC_NO_PIDFD=1`,
/// so their children's sentinels are the pipe fallback (the choice is made once per process,
/// hence a new process rather than a variable set here).
fn rerun_without_pidfds(names: &[&str]) -> TestResult {
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
// Exit codes, signals, joins

/// 0 for a return, N for `exit(N)`, 1 for a panic whose message is on the child's stderr,
/// -6 for an abort: Python's `exitcode` convention, from re-executed children.
fn spawn_exit_codes_follow_python() -> TestResult {
    let mut clean = Process::spawn(returns, ());
    let mut exits = Process::spawn(exits_with, 42);
    let mut panics = Process::spawn(panics_with, "deliberate panic in a spawned child".into());
    let mut aborts = Process::spawn(aborts, ());
    let (started, stderr) = capturing(Stream::Stderr, || {
        [&mut clean, &mut exits, &mut panics, &mut aborts]
            .into_iter()
            .try_for_each(Process::start)
    })?;
    started?;
    assert_eq!(clean.join()?, 0);
    assert_eq!(exits.join()?, 42);
    assert_eq!(panics.join()?, 1);
    assert_eq!(aborts.join()?, -libc::SIGABRT);
    let stderr = read_all(stderr)?;
    assert!(
        stderr.contains("deliberate panic in a spawned child"),
        "the panic message should be on the child's stderr: {stderr:?}"
    );
    Ok(())
}

/// `join_timeout` times out on a spawned child that runs on, `terminate` and `kill` end one
/// with -15 and -9, and signalling a reaped child does nothing.
fn spawned_child_can_be_timed_out_terminated_and_killed() -> TestResult {
    let (mut tell, runs) = Pipe::new()?;
    let (_hold_term, term_end) = Pipe::new()?;
    let (_hold_kill, kill_end) = Pipe::new()?;
    let mut runs = Process::spawn(waits_for_word, runs);
    let mut term = Process::spawn(waits_for_word, term_end);
    let mut kill = Process::spawn(waits_for_word, kill_end);
    for p in [&mut runs, &mut term, &mut kill] {
        p.start()?;
    }
    let err = runs.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(runs.is_alive());
    assert_eq!(runs.exit_code(), None);
    term.terminate()?;
    kill.kill()?;
    assert_eq!(term.join_timeout(HANG)?, -libc::SIGTERM);
    assert_eq!(kill.join_timeout(HANG)?, -libc::SIGKILL);
    tell.send_bytes(b"go")?;
    assert_eq!(runs.join_timeout(HANG)?, 0);
    for p in [&mut runs, &mut term, &mut kill] {
        p.terminate()?;
        p.kill()?;
    }
    assert_eq!(term.exit_code(), Some(-libc::SIGTERM));
    Ok(())
}

/// A program's exit status is its exit code; a program that kills itself with a signal
/// reports minus that signal.
fn command_exit_codes_follow_python() -> TestResult {
    let mut clean = sh("exit 0", None);
    let mut exits = sh("exit 42", None);
    let mut aborts = sh("kill -ABRT $$", None);
    for p in [&mut clean, &mut exits, &mut aborts] {
        p.start()?;
    }
    assert_eq!(clean.join()?, 0);
    assert_eq!(exits.join()?, 42);
    assert_eq!(aborts.join()?, -libc::SIGABRT);
    Ok(())
}

/// The same joins and signals as for spawned children, on programs blocked reading a
/// connection (which also ends them if this test dies first).
fn command_child_can_be_timed_out_terminated_and_killed() -> TestResult {
    let (mut tell, runs) = Pipe::new()?;
    let (_hold_term, term_end) = Pipe::new()?;
    let (_hold_kill, kill_end) = Pipe::new()?;
    // `exec`: the signals go to the program reading, not to a shell waiting for it.
    let block = "exec head -c 5 >/dev/null";
    let mut runs = sh(block, Some(runs));
    let mut term = sh(block, Some(term_end));
    let mut kill = sh(block, Some(kill_end));
    for p in [&mut runs, &mut term, &mut kill] {
        p.start()?;
    }
    let err = runs.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert!(runs.is_alive());
    term.terminate()?;
    kill.kill()?;
    assert_eq!(term.join_timeout(HANG)?, -libc::SIGTERM);
    assert_eq!(kill.join_timeout(HANG)?, -libc::SIGKILL);
    tell.send_bytes(b"x")?; // a 5-byte frame: what `head -c 5` waits for
    assert_eq!(runs.join_timeout(HANG)?, 0);
    Ok(())
}

/// Everything above again with `MULTIPROC_NO_PIDFD=1`: joins, timeouts and signals through
/// pids and the pipe sentinel instead of pidfds.
fn exit_codes_and_signals_without_pidfds() -> TestResult {
    rerun_without_pidfds(&[
        "spawn_exit_codes_follow_python",
        "spawned_child_can_be_timed_out_terminated_and_killed",
        "command_exit_codes_follow_python",
        "command_child_can_be_timed_out_terminated_and_killed",
    ])
}

/// `join` returns when the program exits, even though a process it started in the
/// background still runs (and holds everything the program inherited).
fn command_join_returns_when_the_program_exits() -> TestResult {
    let (_hold, theirs) = Pipe::new()?;
    // The background `head` reads our connection (moved to fd 3: a background job's stdin is
    // /dev/null) until this test ends and drops `_hold`.
    let mut p = sh("exec 3<&0; head -c 5 <&3 >/dev/null & exit 7", Some(theirs));
    p.start()?;
    assert_eq!(p.join_timeout(Duration::from_secs(10))?, 7);
    Ok(())
}

/// The same without pidfds: the pipe sentinel closes only when the background process exits
/// too, so `join` must not wait for the pipe alone.
fn command_join_returns_when_the_program_exits_without_pidfds() -> TestResult {
    rerun_without_pidfds(&["command_join_returns_when_the_program_exits"])
}

// ---------------------------------------------------------------------------------------------
// Output

/// What a spawned child printed reaches its stdout whether it returns, calls `exit` or panics,
/// even without a newline (which would have flushed a line-buffered stdout by itself).
fn spawned_child_flushes_stdout_on_every_exit_path() -> TestResult {
    let mut children: Vec<Process> = (0..3)
        .map(|how| Process::spawn(prints_then_leaves, how))
        .collect();
    let (inner, stdout) = capturing(Stream::Stdout, || {
        capturing(Stream::Stderr, || {
            children.iter_mut().try_for_each(Process::start)
        })
    })?;
    let (started, stderr) = inner?;
    started?;
    let codes = children
        .iter()
        .map(Process::join)
        .collect::<multiproc::Result<Vec<i32>>>()?;
    assert_eq!(codes, [0, 3, 1]);
    assert!(read_all(stderr)?.contains("deliberate panic after printing"));
    let stdout = read_all(stdout)?;
    for how in 0..3 {
        assert!(
            stdout.contains(&format!("[printed before leaving by {how}]")),
            "child {how}'s output is missing: {stdout:?}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Passing connections

/// A spawned child holds exactly stdin, stdout, stderr and the connections passed to it, at
/// the numbers they had here: nothing else of this process leaks into it.
fn spawned_child_holds_only_stdio_and_passed_fds() -> TestResult {
    let (mut ours, a) = Pipe::new()?;
    let (_other, b) = Pipe::half_duplex()?;
    // Unrelated fds open here that the child must not get, one of them inheritable.
    let _unrelated = ([Pipe::new()?, Pipe::half_duplex()?], inheritable_pipe()?);
    let mut p = Process::spawn(reports_fds, (a, b));
    p.start()?;
    let (seen, own): (Vec<RawFd>, (RawFd, RawFd)) = ours.recv()?;
    assert_eq!(p.join()?, 0);
    // Each connection owns a duplicate of the fd it arrived on; the inherited ones are
    // closed once the arguments are decoded.
    let mut expected = vec![0, 1, 2, own.0, own.1];
    expected.sort();
    assert_eq!(seen, expected);
    Ok(())
}

/// A program started by `Process::command` holds exactly stdio and the passed fds (plus the
/// directory `ls` opens to list them), and finds their numbers in `MULTIPROC_FDS`.
fn command_child_holds_only_stdio_and_passed_fds() -> TestResult {
    let (_ours, a) = Pipe::new()?;
    let (_reader, b) = Pipe::half_duplex()?;
    let _unrelated = ([Pipe::new()?, Pipe::half_duplex()?], inheritable_pipe()?);
    let (out, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut cmd = Command::new("sh");
    let passed = [cmd.pass(a)?, cmd.pass(b)?];
    cmd.args(["-c", "echo \"$MULTIPROC_FDS\"; ls /proc/self/fd"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(out_w));
    let mut p = Process::command(cmd);
    p.start()?;
    assert_eq!(p.join()?, 0);
    let text = read_all(File::from(out))?;
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{},{}", passed[0], passed[1]).as_str())
    );
    let listed = lines
        .map(str::parse::<RawFd>)
        .collect::<Result<Vec<_>, _>>()?;
    let expected = [0, 1, 2, passed[0], passed[1]];
    let missing: Vec<_> = expected.iter().filter(|fd| !listed.contains(fd)).collect();
    let extra: Vec<_> = listed.iter().filter(|fd| !expected.contains(fd)).collect();
    // `ls` lists the directory it is reading: one fd of its own.
    assert!(
        missing.is_empty() && extra.len() == 1,
        "expected {expected:?} and ls's own directory fd; ls listed {listed:?}"
    );
    Ok(())
}

/// Connections inside a struct, a nested struct, a `Vec` and an `Option`, and both ends of
/// half-duplex pipes, arrive in a spawned child usable and with their directions; this
/// process's copies are closed once the child has started.
fn connections_nested_in_arguments_arrive_usable() -> TestResult {
    let (mut control, control_end) = Pipe::new()?;
    let (mut data, data_end) = Pipe::new()?;
    let mut many = Vec::new();
    let mut many_ends = Vec::new();
    for _ in 0..3 {
        let (ours, theirs) = Pipe::new()?;
        many.push(ours);
        many_ends.push(theirs);
    }
    let (reader, mut to_reader) = Pipe::half_duplex()?;
    let (mut from_writer, writer) = Pipe::half_duplex()?;
    let wiring = Wiring {
        label: "wired".into(),
        pair: Pair {
            control: control_end,
            data: data_end,
        },
        many: many_ends,
        reader,
        writer,
        absent: None,
    };
    let mut p = Process::spawn(uses_wiring, wiring);
    p.start()?;
    to_reader.send(&40u32)?;
    for (i, conn) in many.iter_mut().enumerate() {
        assert_eq!(conn.recv::<u32>()?, 40 + i as u32);
    }
    assert_eq!(from_writer.recv_bytes()?, b"wired");
    assert_eq!(
        data.recv::<(bool, bool, bool, bool)>()?,
        (true, false, false, true)
    );
    assert_eq!(control.recv::<(usize, bool)>()?, (3, true));
    assert_eq!(p.join()?, 0);
    // End of file everywhere: the child held the only other copies, and it has exited.
    for conn in many
        .iter_mut()
        .chain([&mut control, &mut data, &mut from_writer])
    {
        assert_eq!(conn.recv_bytes().unwrap_err().kind(), ErrorKind::Eof);
    }
    Ok(())
}

/// Two clones of one queue and one connection referred to twice travel together: the
/// child gets each fd once; the clones share one handle there, as here, and each
/// connection owns a duplicate of its fd (two owners of one fd would close it twice, and a
/// debug build aborts on that).
fn one_fd_referred_to_twice_arrives_once_per_object() -> TestResult {
    let q = multiproc::Queue::<u32>::new()?;
    let (mut ours, theirs) = Pipe::new()?;
    let twice = Twice::Sent(theirs);
    let mut p = Process::spawn(uses_twice, ((q.clone(), q.clone()), twice));
    p.start()?;
    assert_eq!(ours.recv_bytes()?, b"first");
    assert_eq!(ours.recv_bytes()?, b"second");
    assert_eq!(p.join_timeout(HANG)?, 0);
    // One handle in the child, as in the parent: one thread's puts keep their order.
    for want in 0..5 {
        assert_eq!(q.get_timeout(HANG)?, want);
    }
    Ok(())
}

/// One connection referred to from two places: in the parent it serialises twice; the
/// child decodes two connections.
enum Twice {
    Sent(Connection),
    Received(Connection, Connection),
}

impl Serialize for Twice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Twice::Sent(conn) => (conn, conn).serialize(s),
            Twice::Received(a, b) => (a, b).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Twice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (a, b) = <(Connection, Connection)>::deserialize(d)?;
        Ok(Twice::Received(a, b))
    }
}

fn uses_twice(((a, b), twice): (QueuePair, Twice)) {
    let Twice::Received(mut first, mut second) = twice else {
        panic!("the child decodes two connections");
    };
    for (i, q) in [&a, &b, &a, &b].into_iter().enumerate() {
        q.put(&(i as u32)).unwrap();
    }
    drop(a);
    b.put(&4).unwrap();
    first.send_bytes(b"first").unwrap();
    drop(first);
    second.send_bytes(b"second").unwrap();
}

type QueuePair = (multiproc::Queue<u32>, multiproc::Queue<u32>);

/// A connection holding received bytes not yet returned would lose them in the child, so
/// `start` refuses with `Encode` before any child exists; the connection stays with the
/// `Process` (its peer sees no end of file until that is dropped), nothing leaks, and the
/// next spawn passes connections as usual.
fn connection_with_unread_bytes_is_refused_at_start() -> TestResult {
    let before = open_fds();
    let (mut tx, mut rx) = Pipe::new()?;
    tx.send_bytes(b"first")?;
    tx.send_bytes(b"second")?;
    assert_eq!(rx.recv_bytes()?, b"first");
    assert!(
        rx.buffered_len() > 0,
        "the read-ahead should hold the second message"
    );
    let mut p = Process::spawn(waits_for_word, rx);
    let err = p.start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Encode);
    assert!(err.to_string().contains("received bytes"), "{err}");
    assert_eq!(p.pid(), None);
    assert!(!p.is_alive());
    assert!(active_children().is_empty());
    assert_eq!(p.start().unwrap_err().kind(), ErrorKind::Encode);
    assert!(
        !tx.poll(Some(Duration::ZERO))?,
        "the refused end is still open"
    );
    drop(p);
    assert_eq!(tx.recv_bytes().unwrap_err().kind(), ErrorKind::Eof);
    drop(tx);
    assert_eq!(open_fds(), before);

    // Only the start of a long message, seen by `poll`: its header is read (and the frame
    // moved out of the read-ahead buffer), and it counts as received bytes too.
    let (tx, mut rx) = Pipe::new()?;
    let mut frame = (200_000u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&[7u8; 100]);
    let mut writer = File::from(OwnedFd::from(tx)); // kept open: no end of file
    writer.write_all(&frame)?;
    assert!(
        !rx.poll(Some(Duration::ZERO))?,
        "half a message is not ready"
    );
    assert_eq!(rx.buffered_len(), frame.len());
    let err = Process::spawn(waits_for_word, rx).start().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Encode, "{err}");
    drop(writer);

    let (mut ours, theirs) = Pipe::new()?;
    let mut p = Process::spawn(reports_fds, (theirs, Pipe::new()?.1));
    p.start()?;
    let _: (Vec<RawFd>, (RawFd, RawFd)) = ours.recv()?;
    assert_eq!(p.join()?, 0);
    Ok(())
}

/// Outside a spawn's arguments a `Connection` is no message: sending one is `Encode` and
/// writes nothing, and a message shaped like a passed fd does not deserialise into one
/// (which would adopt whatever fd that number names here).
fn connection_serialises_only_into_spawn_arguments() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    let (c, _d) = Pipe::new()?;
    assert_eq!(a.send(&c).unwrap_err().kind(), ErrorKind::Encode);
    assert_eq!(
        a.send(&(1u8, vec![&c])).unwrap_err().kind(),
        ErrorKind::Encode
    );
    assert!(
        !b.poll(Some(Duration::ZERO))?,
        "a refused send wrote nothing"
    );
    a.send("still usable")?;
    assert_eq!(b.recv::<String>()?, "still usable");
    a.send(&0u32)?;
    assert_eq!(
        b.recv::<Connection>().unwrap_err().kind(),
        ErrorKind::Decode
    );
    rustix::io::fcntl_getfd(std::io::stdin())?; // fd 0 was not taken over and closed
    Ok(())
}

/// `Command::pass` refuses a closed connection (`Closed`) and one holding unread bytes
/// (`InvalidInput`), before anything starts.
fn command_pass_refuses_closed_or_buffered_connection() -> TestResult {
    let mut cmd = Command::new("true");
    let (_peer, mut closed) = Pipe::new()?;
    closed.close();
    assert_eq!(cmd.pass(closed).unwrap_err().kind(), ErrorKind::Closed);
    let (mut tx, mut rx) = Pipe::new()?;
    tx.send_bytes(b"one")?;
    tx.send_bytes(b"two")?;
    rx.recv_bytes()?;
    assert!(rx.buffered_len() > 0);
    assert_eq!(cmd.pass(rx).unwrap_err().kind(), ErrorKind::InvalidInput);
    Ok(())
}

tests_main!(
    spawn_exit_codes_follow_python,
    spawned_child_can_be_timed_out_terminated_and_killed,
    command_exit_codes_follow_python,
    command_child_can_be_timed_out_terminated_and_killed,
    exit_codes_and_signals_without_pidfds,
    spawned_child_flushes_stdout_on_every_exit_path,
    spawned_child_holds_only_stdio_and_passed_fds,
    command_child_holds_only_stdio_and_passed_fds,
    connections_nested_in_arguments_arrive_usable,
    one_fd_referred_to_twice_arrives_once_per_object,
    connection_with_unread_bytes_is_refused_at_start,
    connection_serialises_only_into_spawn_arguments,
    command_pass_refuses_closed_or_buffered_connection,
    command_join_returns_when_the_program_exits,
    command_join_returns_when_the_program_exits_without_pidfds,
);
