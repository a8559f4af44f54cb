//! Processes: `fork`, the forked child's exit, pidfds, `waitid` and signals.
//!
//! A child is tracked by pid and, on Linux 5.3+, by a pidfd opened right after `fork`. The
//! pid cannot be reused before we reap it (we are its parent and have not waited), so opening
//! the pidfd from the pid is race-free; afterwards every wait and signal goes through the
//! pidfd. Without pidfds (old kernels, other Unixes) the same calls use the pid.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// Which side of a `fork` we are on.
#[derive(Debug)]
pub(crate) enum Forked {
    Child,
    Parent(Pid),
}

/// How many threads this process has, or `None` where the system cannot say.
pub(crate) fn thread_count() -> Option<usize> {
    std::fs::read_dir("/proc/self/task").ok().map(|d| d.count())
}

/// `fork(2)`. The caller must have checked that this process runs one thread: in the child
/// only the calling thread exists, and any lock another thread held stays locked forever.
/// glibc's `fork` resets its malloc locks, so allocation in the child is safe when the parent
/// was single-threaded. [man7: fork.2]
pub(crate) fn fork() -> io::Result<Forked> {
    // SAFETY: `fork` has no memory-safety preconditions of its own; the hazard is locks held
    // by other threads, which the caller rules out by checking `thread_count() == Some(1)`
    // (or accepting the risk where it cannot be known).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        // `fork` returned a positive pid.
        pid => Ok(Forked::Parent(
            Pid::from_raw(pid).expect("fork returned a positive pid"),
        )),
    }
}

/// Ends a forked child at once with `code`, without running the parent's `atexit` handlers
/// or destructors a second time (the caller flushes stdout and stderr first). [man7: _exit.2]
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and always sound to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// A pidfd for our unreaped child `pid`, or `None` where the kernel has no `pidfd_open`.
/// [man7: pidfd_open.2]
pub(crate) fn pidfd_open(pid: Pid) -> io::Result<Option<OwnedFd>> {
    #[cfg(target_os = "linux")]
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => return Ok(Some(fd)),
        Err(Errno::NOSYS) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    #[allow(unreachable_code)]
    Ok(None)
}

/// Reaps the child if it has exited (blocking until it does when `block`), returning its
/// exit code in Python's convention: the status it exited with, or minus the signal that
/// killed it. [man7: waitid.2]
pub(crate) fn reap(
    pid: Pid,
    pidfd: Option<BorrowedFd<'_>>,
    block: bool,
) -> io::Result<Option<i32>> {
    let mut options = WaitIdOptions::EXITED;
    if !block {
        options |= WaitIdOptions::NOHANG;
    }
    loop {
        let id = match pidfd {
            #[cfg(target_os = "linux")]
            Some(fd) => WaitId::PidFd(fd),
            _ => WaitId::Pid(pid),
        };
        match rustix::process::waitid(id, options) {
            Ok(None) => return Ok(None),
            Ok(Some(status)) => {
                if let Some(code) = status.exit_status() {
                    return Ok(Some(code));
                }
                if let Some(sig) = status.terminating_signal() {
                    return Ok(Some(-sig));
                }
                // Stopped or continued reports are not exits; only EXITED was asked for.
                if !block {
                    return Ok(None);
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits until the child exits or `deadline` passes; true if it exited. Needs a pidfd; the
/// caller falls back to blocking `reap` without one.
pub(crate) fn wait_exit(pidfd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    super::fd::wait_readable(pidfd, deadline)
}

/// Sends `signal` to our unreaped child. [man7: pidfd_send_signal.2, kill.2]
pub(crate) fn signal(pid: Pid, pidfd: Option<&OwnedFd>, signal: Signal) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    if let Some(fd) = pidfd {
        return Ok(rustix::process::pidfd_send_signal(fd.as_fd(), signal)?);
    }
    let _ = pidfd;
    Ok(rustix::process::kill_process(pid, signal)?)
}
