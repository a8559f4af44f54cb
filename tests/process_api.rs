//! `Process` from a user's point of view: the lifecycle across threads (one thread joins
//! while another terminates), a start the system refuses (the `Process` can be started
//! again, its target intact), errors that say which program could not run, and sentinels
//! after the child was killed or joined.

mod util;

use std::error::Error as StdError;
use std::os::fd::OwnedFd;
use std::sync::mpsc;
use std::time::Duration;

use multiproc::{Command, Connection, ErrorKind, Pipe, Process, WaitSet, active_children, wait};
use util::TestResult;

type Res<T> = Result<T, Box<dyn StdError>>;

/// Generous: only a hang should ever reach it.
const HANG: Duration = Duration::from_secs(20);

/// Returns once a message (or end of file) arrives, or after [`HANG`].
fn blocks_on(mut conn: Connection) {
    let _ = conn.recv_bytes_timeout(HANG);
}

/// Sends back what arrives, once.
fn echoes(mut conn: Connection) {
    if let Ok(message) = conn.recv_bytes() {
        let _ = conn.send_bytes(&message);
    }
}

// ---------------------------------------------------------------------------------------------
// Threads

/// Python lets one thread sit in `p.join()` while another calls `p.terminate()` (a watchdog,
/// a signal handler's thread). That needs `join`, `terminate` and `kill` through a shared
/// reference, and `Process: Sync`.
fn one_thread_joins_while_another_terminates() -> TestResult {
    let (_keep, end) = Pipe::new()?;
    let mut p = Process::fork(move || blocks_on(end));
    p.start()?;
    let p = &p;
    let (joining, about_to_join) = mpsc::channel();
    let code = std::thread::scope(|s| {
        let joiner = s.spawn(move || {
            joining.send(()).unwrap();
            p.join()
        });
        let second = s.spawn(|| p.join_timeout(HANG));
        about_to_join.recv().unwrap();
        p.terminate().unwrap();
        let first = joiner.join().unwrap();
        let second = second.join().unwrap();
        (first, second)
    });
    assert_eq!(code.0?, -libc::SIGTERM);
    assert_eq!(code.1?, -libc::SIGTERM);
    assert_eq!(p.join()?, -libc::SIGTERM);
    assert!(!p.is_alive());
    // Killing a reaped child from any thread is a no-op.
    std::thread::scope(|s| s.spawn(|| p.kill()).join().unwrap())?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A start the system refuses

/// Runs `f` as an unprivileged user whose process limit is reached, so `fork` fails with
/// EAGAIN (Python: `BlockingIOError: [Errno 11]`); root again afterwards. `None` if this
/// test process cannot switch users (not root).
fn at_process_limit<T>(f: impl FnOnce() -> T) -> Res<Option<T>> {
    use rustix::process::{Resource, Rlimit, Uid, getrlimit, setrlimit};
    use rustix::thread::set_thread_res_uid;
    if !rustix::process::getuid().is_root() {
        return Ok(None);
    }
    let nobody = Uid::from_raw(65534);
    let saved = getrlimit(Resource::Nproc);
    setrlimit(
        Resource::Nproc,
        Rlimit {
            current: Some(0),
            maximum: saved.maximum,
        },
    )?;
    // The saved uid stays root, so the switch can be undone. This test process runs one
    // thread, so the per-thread call changes the whole process.
    if set_thread_res_uid(nobody, nobody, Uid::ROOT).is_err() {
        setrlimit(Resource::Nproc, saved)?;
        return Ok(None);
    }
    let out = f();
    set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT)?;
    setrlimit(Resource::Nproc, saved)?;
    Ok(Some(out))
}

/// A fork the system refuses (EAGAIN at a process limit) is an `Io` error that leaves the
/// `Process` as it was: its closure (and the connection end it holds) intact, startable
/// again once the limit allows, as Python's `start` may be retried after `os.fork` raised.
/// So do a spawn and a command.
fn a_start_the_system_refuses_can_be_retried() -> TestResult {
    let (mut forked_end, end) = Pipe::new()?;
    let mut forked = Process::fork(move || echoes(end));
    let (mut spawned_end, end) = Pipe::new()?;
    let mut spawned = Process::spawn(echoes, end);
    let (mut command_end, end) = Pipe::new()?;
    let mut cmd = Command::new("cat");
    cmd.stdout(std::process::Stdio::from(rustix::io::dup(&end)?))
        .stdin(std::process::Stdio::from(OwnedFd::from(end)));
    let mut commanded = Process::command(cmd);
    let refused = at_process_limit(|| {
        [&mut forked, &mut spawned, &mut commanded]
            .map(|p| p.start().map_err(|e| (e.kind(), e.raw_os_error())))
    })?;
    let Some(refused) = refused else {
        return util::skip("switching to an unprivileged user needs root");
    };
    for (i, outcome) in refused.into_iter().enumerate() {
        if outcome != Err((ErrorKind::Io, Some(libc::EAGAIN))) {
            fail!("start #{i} at the process limit: {outcome:?}");
        }
    }
    assert!(active_children().is_empty());
    for p in [&forked, &spawned, &commanded] {
        assert_eq!(p.pid(), None);
        assert!(!p.is_alive());
    }
    // The parent's ends see no EOF: the targets still hold the other ends.
    for conn in [&mut forked_end, &mut spawned_end, &mut command_end] {
        if conn.poll(Some(Duration::ZERO))? {
            fail!("a refused start dropped its target: the child's end of the pipe is closed");
        }
    }
    for (p, conn) in [
        (&mut forked, &mut forked_end),
        (&mut spawned, &mut spawned_end),
    ] {
        p.start()?;
        conn.send_bytes(b"again")?;
        assert_eq!(conn.recv_bytes()?, b"again");
        assert_eq!(p.join()?, 0);
    }
    commanded.start()?;
    command_end.send_bytes(b"again")?;
    assert_eq!(command_end.recv_bytes()?, b"again");
    drop(command_end);
    assert_eq!(commanded.join()?, 0);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Errors of a command that cannot run

/// A program that is missing, or not executable: an `Io` error naming the program, with the
/// OS error as its source (Python: `FileNotFoundError: [Errno 2] No such file or directory:
/// 'prog'`), and no child left behind.
fn a_command_that_cannot_run_is_named_in_the_error() -> TestResult {
    let dir = std::env::temp_dir().join(format!("multiproc-api-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let not_executable = dir.join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n")?;
    let missing = dir.join("missing");
    let cases = [
        (missing.clone().into_os_string(), libc::ENOENT),
        ("multiproc-no-such-program-on-path".into(), libc::ENOENT),
        (not_executable.clone().into_os_string(), libc::EACCES),
        (dir.clone().into_os_string(), libc::EACCES),
    ];
    let mut outcome = Ok(());
    for (program, errno) in cases {
        let (_ours, theirs) = Pipe::new()?;
        let mut cmd = Command::new(&program);
        cmd.pass(theirs)?;
        let mut p = Process::command(cmd);
        let err = p.start().unwrap_err();
        let named = err.to_string().contains(&*program.to_string_lossy());
        if err.kind() != ErrorKind::Io || err.raw_os_error() != Some(errno) || !named {
            outcome = Err(format!("{program:?}: {:?}, {err}", err.kind()));
            break;
        }
        assert_eq!(p.pid(), None);
    }
    std::fs::remove_dir_all(&dir)?;
    assert!(active_children().is_empty());
    Ok(outcome?)
}

// ---------------------------------------------------------------------------------------------
// Sentinels

/// A sentinel taken before the child is killed turns ready; one taken after `join` is ready
/// at once, in `wait` and in a `WaitSet`, and the join still returns the code.
fn sentinels_of_killed_and_joined_children_are_ready() -> TestResult {
    let (_keep, end) = Pipe::new()?;
    let mut p = Process::fork(move || blocks_on(end));
    p.start()?;
    let mut before = p.sentinel()?;
    assert!(wait(&mut [&mut before], Some(Duration::ZERO))?.is_empty());
    p.kill()?;
    assert_eq!(wait(&mut [&mut before], Some(HANG))?, [0]);
    assert_eq!(p.join()?, -libc::SIGKILL);
    let mut after = p.sentinel()?;
    assert_eq!(wait(&mut [&mut after], Some(Duration::ZERO))?, [0]);
    let mut set = WaitSet::new()?;
    let key = set.insert(p.sentinel()?)?;
    assert_eq!(set.wait(Some(HANG))?, [key]);
    assert_eq!(p.join_timeout(Duration::ZERO)?, -libc::SIGKILL);
    Ok(())
}

tests_main!(
    threads_join_signal_and_poll_one_child_together,
    threads_on_one_child_without_pidfds,
    a_fork_target_runs_once_and_the_parents_copy_writes_nothing,
    one_thread_joins_while_another_terminates,
    a_start_the_system_refuses_can_be_retried,
    a_command_that_cannot_run_is_named_in_the_error,
    sentinels_of_killed_and_joined_children_are_ready,
);

// ---------------------------------------------------------------------------------------------
// Review r2a probes

/// Several threads at once on one child: two join, one terminates, one kills, one polls
/// `is_alive`, `exit_code`, `pid` and `sentinel` until it is gone. Every joiner and every
/// later look sees the one exit code; nothing errs (a double reap would be `ECHILD`).
fn threads_join_signal_and_poll_one_child_together() -> TestResult {
    for round in 0..8 {
        let (_keep, end) = Pipe::new()?;
        let mut p = Process::fork(move || blocks_on(end));
        p.start()?;
        let p = &p;
        let barrier = std::sync::Barrier::new(5);
        let barrier = &barrier;
        let (a, b, polled) = std::thread::scope(|s| {
            let a = s.spawn(move || {
                barrier.wait();
                p.join()
            });
            let b = s.spawn(move || {
                barrier.wait();
                p.join_timeout(HANG)
            });
            let polled = s.spawn(move || -> multiproc::Result<Option<i32>> {
                barrier.wait();
                while p.is_alive() {
                    let _ = p.exit_code();
                    assert!(p.pid().is_some());
                    drop(p.sentinel()?);
                }
                Ok(p.exit_code())
            });
            let t = s.spawn(move || {
                barrier.wait();
                p.terminate()
            });
            let k = s.spawn(move || {
                barrier.wait();
                if round % 2 == 0 {
                    p.kill()
                } else {
                    p.terminate()
                }
            });
            t.join().unwrap().unwrap();
            k.join().unwrap().unwrap();
            (a.join().unwrap(), b.join().unwrap(), polled.join().unwrap())
        });
        let a = a?;
        assert!(a == -libc::SIGTERM || a == -libc::SIGKILL, "code {a}");
        assert_eq!(b?, a, "round {round}");
        assert_eq!(polled?, Some(a));
        assert_eq!(p.exit_code(), Some(a));
        assert_eq!(p.join()?, a);
        p.terminate()?;
        p.kill()?;
        assert!(!p.is_alive());
    }
    Ok(())
}

/// The same without pidfds, in a fresh run of this binary (the choice is made once per
/// process).
fn threads_on_one_child_without_pidfds() -> TestResult {
    let names = ["threads_join_signal_and_poll_one_child_together"];
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--exact")
        .args(names)
        .env("MULTIPROC_NO_PIDFD", "1")
        .stdin(std::process::Stdio::null())
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

/// The fork closure runs once, in the child; the parent's copy of what it holds (a
/// connection with sends still queued) goes without writing them a second time.
fn a_fork_target_runs_once_and_the_parents_copy_writes_nothing() -> TestResult {
    let (mut reader, mut writer) = Pipe::new()?;
    let chunk = vec![3u8; 64 * 1024];
    let mut queued = 0;
    while writer.pending_send_len() == 0 {
        writer.try_send_bytes(&chunk)?;
        queued += 1;
    }
    let mut p = Process::fork(move || {
        writer.send_bytes(b"ran").unwrap();
        drop(writer);
    });
    p.start()?;
    let mut got = 0;
    loop {
        match reader.recv_bytes() {
            Ok(m) if m == chunk => got += 1,
            Ok(m) => {
                assert_eq!(m, b"ran");
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(got, queued, "the queued sends once each");
    assert!(
        reader.recv_bytes().unwrap_err().is_eof(),
        "anything after the child's last message was written by the parent's copy"
    );
    assert_eq!(p.join()?, 0);
    Ok(())
}
