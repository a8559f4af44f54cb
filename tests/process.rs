//! The minimal fork `Process`: exit codes in Python's convention, signals, joins with
//! timeouts, flushing, fd hygiene, and the refusal to fork a multi-threaded process.

mod util;

use std::io::Read;
use std::os::fd::AsFd;
use std::time::Duration;

use multiproc::{ErrorKind, Pipe, Process};
use util::{TestResult, open_fds};

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

tests_main!(
    exit_codes_follow_python,
    terminate_and_kill_report_minus_signal,
    join_timeout_times_out_then_succeeds,
    misuse_is_a_typed_error,
    fork_is_refused_while_other_threads_run,
    child_stdout_is_flushed_before_exit,
    start_and_join_leak_no_fds,
    child_sees_only_inherited_fds,
    dropped_running_process_is_reaped_later,
);
