//! Processes: `fork`, the forked child's exit, pidfds, `waitid` and signals.
//!
//! A child is tracked by pid and, on Linux 5.3+, by a pidfd opened right after `fork`. The
//! pid cannot be reused before we reap it (we are its parent and have not waited), so opening
//! the pidfd from the pid is race-free; afterwards every wait and signal goes through the
//! pidfd. Without pidfds (old kernels, other Unixes) the same calls use the pid.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};

/// Which side of a `fork` we are on.
#[derive(Debug)]
pub(crate) enum Forked {
    Child,
    Parent(Pid),
}

/// How many threads this process has, or `None` where the system cannot say. A thread
/// already on its way out (`PF_EXITING` in its `/proc` flags) is not counted: it runs no more
/// user code, and `pthread_join` returns while the kernel still lists it, for a moment, so a
/// thread just joined would otherwise still count. [man7: proc_pid_stat.5]
pub(crate) fn thread_count() -> Option<usize> {
    let tasks: Vec<_> = std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .collect();
    if tasks.len() < 2 {
        return Some(tasks.len());
    }
    let me = rustix::thread::gettid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs();
    Some(
        tasks
            .into_iter()
            .filter(|&tid| tid == me || !thread_exiting(tid))
            .count(),
    )
}

/// Whether thread `tid` of this process is exiting or gone (`PF_EXITING`, field 9 of its
/// `stat`; a task no longer there is gone). Unreadable otherwise: counted as running.
fn thread_exiting(tid: u32) -> bool {
    /// `PF_EXITING` in `include/linux/sched.h`: set first thing in `do_exit`.
    const PF_EXITING: u64 = 0x4;
    let stat = match std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")) {
        Ok(stat) => stat,
        Err(e) => {
            return e.kind() == io::ErrorKind::NotFound
                || e.raw_os_error() == Some(Errno::SRCH.raw_os_error());
        }
    };
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    // Then state (3), ppid, pgrp, session, tty_nr, tpgid (8), flags (9).
    let flags = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok());
    flags.is_some_and(|f| f & PF_EXITING != 0)
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

/// Has `child` run in the child of every `fork(2)` made through the C library from now on,
/// ours or any other library's (`pthread_atfork`). `child` runs in a process that may hold
/// locks of threads that are gone, so it must be async-signal-safe. [man7: pthread_atfork.3]
pub(crate) fn on_fork_in_child(child: extern "C" fn()) -> io::Result<()> {
    // SAFETY: `pthread_atfork` only records the handler; `child` is a function item, valid
    // for the life of the process, and takes no arguments, as the signature requires.
    let rc = unsafe { libc::pthread_atfork(None, None, Some(child)) };
    match rc {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// Ends a forked child at once with `code`, without running the parent's `atexit` handlers
/// or destructors a second time (the caller flushes stdout and stderr first). [man7: _exit.2]
pub(crate) fn exit_child(code: i32) -> ! {
    // SAFETY: `_exit` is async-signal-safe and always sound to call; it does not return.
    unsafe { libc::_exit(code) }
}

/// Whether this program was started with more privileges than its starter had (set-user-ID
/// or set-group-ID, or file capabilities): the kernel's `AT_SECURE`, which makes the C
/// library ignore `LD_PRELOAD` and the like. [man7: getauxval.3]
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) fn secure_exec() -> bool {
    // SAFETY: `getauxval` only reads the auxiliary vector the kernel gave the process; any
    // type value is allowed (an unknown one returns 0).
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

/// Elsewhere: a set-user-ID or set-group-ID program runs with effective ids other than its
/// real ones.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) fn secure_exec() -> bool {
    rustix::process::getuid() != rustix::process::geteuid()
        || rustix::process::getgid() != rustix::process::getegid()
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

/// Whether our child `pid` has exited (a zombie, not reaped: `WNOWAIT`), `Some(false)` if it
/// runs, `None` if it is no child of ours (reaped by other code: `ECHILD`).
/// [man7: waitid.2]
pub(crate) fn child_exited(pid: Pid) -> io::Result<Option<bool>> {
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    loop {
        match rustix::process::waitid(WaitId::Pid(pid), options) {
            Ok(status) => return Ok(Some(status.is_some())),
            Err(Errno::INTR) => continue,
            Err(Errno::CHILD) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
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

/// This process's parent, or `None` if it has none to report (pid 1, or reparented to
/// an init that is not in our pid namespace). [man7: getppid.2]
pub(crate) fn parent_pid() -> Option<Pid> {
    rustix::process::getppid()
}

/// Asks the kernel to SIGKILL this process when the thread that created it exits (Linux
/// `PR_SET_PDEATHSIG`); elsewhere does nothing. Returns whether the parent is still
/// `parent`: if it already died, no signal will come. [man7: PR_SET_PDEATHSIG.2const]
pub(crate) fn die_with_parent(parent: Pid) -> bool {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let _ = rustix::process::set_parent_process_death_signal(Some(Signal::KILL));
    rustix::process::getppid() == Some(parent)
}

/// Starts `command` as a child in which exactly the fds in `keep` (plus stdin, stdout and
/// stderr) stay open across `exec`, at the same numbers; every other inherited fd is marked
/// close-on-exec first. With `die_with_parent`, the child gets `PR_SET_PDEATHSIG(SIGKILL)`
/// (Linux). [man7: close_range.2, fcntl.2, execve.2]
pub(crate) fn spawn(
    command: &mut std::process::Command,
    keep: &[std::os::fd::RawFd],
    die_with_parent: bool,
) -> io::Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let keep = keep.to_vec();
    // The closure runs in the forked child before `exec`, where only async-signal-safe
    // calls are allowed.
    // SAFETY: it makes raw `close_range`, `fcntl` and `prctl` system calls and reads the
    // `keep` vector allocated before the fork; it allocates nothing, takes no lock and
    // touches no other shared state.
    unsafe {
        command.pre_exec(move || {
            cloexec_from_3();
            for &fd in &keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(io::Error::last_os_error());
                }
            }
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if die_with_parent && libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            #[cfg(not(any(target_os = "linux", target_os = "android")))]
            let _ = die_with_parent;
            Ok(())
        })
    };
    command.spawn()
}

/// Marks every fd from 3 up close-on-exec (Linux 5.11+ `close_range`; elsewhere, or on older
/// kernels, fds are left as they are, and ours are all created close-on-exec anyway).
/// Async-signal-safe.
fn cloexec_from_3() {
    #[cfg(target_os = "linux")]
    // SAFETY: `close_range` with `CLOSE_RANGE_CLOEXEC` closes nothing; it only sets a flag on
    // fds of this process, and is an async-signal-safe raw system call.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        );
    }
}

/// Runs `f` when the process exits normally (`exit`, or returning from `main`), not when it
/// is killed and not in a forked child leaving through `_exit`. [man7: atexit.3]
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: `f` is a plain function with the signature `atexit` expects; it is never
    // unregistered and code is never unloaded, so the pointer stays valid.
    unsafe {
        libc::atexit(f);
    }
}
