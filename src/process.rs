//! `Process`: run a closure in a forked child, then join it and read its exit code.
//!
//! This is the minimal start method (fork) that the tutorial's examples need; the spawn and
//! command start methods and the pollable exit sentinel come later. Exit codes follow Python:
//! 0 for a clean return, 1 for a panic (its message is on stderr), N for
//! `std::process::exit(N)`, and minus the signal number for a child killed by a signal.
//!
//! Fork is refused while the parent runs more than one thread: the child would hold only the
//! forking thread, and any lock another thread held at that moment (stdout's, the allocator's
//! on some libcs, the program's own) would stay locked in the child forever. Python 3.12
//! warns in that case; we return [`ErrorKind::Unsupported`] instead of risking a hang.
//!
//! A forked child holds copies of every fd the parent had at that moment, not only what its
//! closure captured (as with Python's fork start method). A child holding a copy of some
//! other pipe's write end keeps that pipe from ever reaching EOF; end such exchanges with a
//! message, or create the pipe after starting the child. The spawn start method will pass
//! only what the child is given.
//!
//! Children are reaped through a pidfd on Linux, so a wait can never hit a recycled pid. A
//! `Process` dropped while its child still runs neither waits nor kills: the child is kept on
//! a list and reaped by a later `start`, so no zombie accumulates.

use std::fmt;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::process::{self as sys, Forked};

type Target = Box<dyn FnOnce() + Send + 'static>;

/// A started child: its pid and, where the kernel has them, a pidfd.
#[derive(Debug)]
struct Child {
    pid: Pid,
    pidfd: Option<OwnedFd>,
}

impl Child {
    fn reap(&self, block: bool) -> Result<Option<i32>> {
        Ok(sys::reap(
            self.pid,
            self.pidfd.as_ref().map(|fd| fd.as_fd()),
            block,
        )?)
    }
}

/// Children whose `Process` was dropped before they exited; reaped by later `start`s.
static ORPHANS: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn reap_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|poison| poison.into_inner());
    orphans.retain(|child| matches!(child.reap(false), Ok(None)));
}

/// A child process running a Rust closure. Python: `multiprocessing.Process(target=...)`.
///
/// Create it with [`Process::new`], then [`start`](Process::start) it; the closure runs in a
/// forked copy of this process. Anything the closure captured (a [`Connection`] end, say) is
/// dropped in the parent once the child has started, so the parent does not keep the
/// child's end of a pipe open by accident, the trap behind many a Python hang at EOF.
///
/// [`Connection`]: crate::Connection
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::Process;
/// let mut ok = Process::new(|| println!("hello from the child"));
/// let mut exits = Process::new(|| std::process::exit(3));
/// let mut panics = Process::new(|| panic!("boom"));
/// for p in [&mut ok, &mut exits, &mut panics] {
///     p.start()?;
/// }
/// assert_eq!(ok.join()?, 0);
/// assert_eq!(exits.join()?, 3);
/// assert_eq!(panics.join()?, 1);
/// # Ok(()) }
/// ```
pub struct Process {
    target: Option<Target>,
    child: Option<Child>,
    exit_code: Option<i32>,
}

impl Process {
    /// A process that will run `target` once started. Python: `Process(target=f)`.
    ///
    /// # Examples
    /// ```
    /// let p = multiproc::Process::new(|| {});
    /// assert_eq!(p.pid(), None); // not started yet
    /// ```
    pub fn new<F>(target: F) -> Process
    where
        F: FnOnce() + Send + 'static,
    {
        Process {
            target: Some(Box::new(target)),
            child: None,
            exit_code: None,
        }
    }

    /// Forks the child, which runs the target and exits: 0 when it returns, 1 when it
    /// panics (after the panic message is printed to stderr). Stdout and stderr are flushed
    /// before the child exits. Python: `Process.start`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::new(|| {});
    /// p.start()?;
    /// assert!(p.pid().is_some());
    /// assert_eq!(p.start().unwrap_err().kind(), multiproc::ErrorKind::InvalidInput);
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if already started; `Unsupported` if this process runs more than one
    /// thread (see the module docs); `Io` if `fork` fails.
    pub fn start(&mut self) -> Result<()> {
        if self.target.is_none() {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "cannot start a process twice",
            ));
        }
        if let Some(threads @ 2..) = sys::thread_count() {
            return Err(Error::with_message(
                ErrorKind::Unsupported,
                format!(
                    "refusing to fork: this process runs {threads} threads, and a forked child \
                     could hang on a lock another thread holds; start children before starting \
                     threads"
                ),
            ));
        }
        reap_orphans();
        let target = self.target.take().expect("checked above");
        match sys::fork()? {
            Forked::Child => run_child(target),
            Forked::Parent(pid) => {
                // Dropping the target here closes the parent's copies of whatever the child
                // was given.
                drop(target);
                let pidfd = sys::pidfd_open(pid)?;
                self.child = Some(Child { pid, pidfd });
                Ok(())
            }
        }
    }

    fn started(&self) -> Result<&Child> {
        self.child.as_ref().ok_or_else(|| {
            Error::with_message(
                ErrorKind::InvalidInput,
                "process not started: call start first",
            )
        })
    }

    /// Waits for the child to exit and returns its exit code. Python: `Process.join()`
    /// followed by `exitcode`. Joining again returns the same code at once.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::new(|| std::process::exit(7));
    /// p.start()?;
    /// assert_eq!(p.join()?, 7);
    /// assert_eq!(p.join()?, 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if never started; `Io` if waiting fails.
    pub fn join(&mut self) -> Result<i32> {
        if let Some(code) = self.exit_code {
            return Ok(code);
        }
        let code = self
            .started()?
            .reap(true)?
            .ok_or_else(|| Error::new(ErrorKind::Io))?;
        self.exit_code = Some(code);
        Ok(code)
    }

    /// Waits at most `timeout` for the child to exit. Python: `Process.join(timeout)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (mut parent, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::new(move || {
    ///     let _ = child.recv_bytes(); // runs until the parent says so
    /// });
    /// p.start()?;
    /// let err = p.join_timeout(Duration::from_millis(10)).unwrap_err();
    /// assert!(err.is_timeout());
    /// parent.send_bytes(b"stop")?;
    /// assert_eq!(p.join_timeout(Duration::from_secs(10))?, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Timeout` if the child is still running at the deadline; otherwise as
    /// [`join`](Self::join).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<i32> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.join_deadline(deadline),
            None => self.join(),
        }
    }

    /// Waits until `deadline` at most for the child to exit.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::{Duration, Instant};
    /// let mut p = multiproc::Process::new(|| {});
    /// p.start()?;
    /// assert_eq!(p.join_deadline(Instant::now() + Duration::from_secs(10))?, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`join_timeout`](Self::join_timeout).
    pub fn join_deadline(&mut self, deadline: Instant) -> Result<i32> {
        if let Some(code) = self.exit_code {
            return Ok(code);
        }
        let child = self.started()?;
        let Some(pidfd) = &child.pidfd else {
            // No pidfd on this system: poll at a coarse interval until the deadline.
            loop {
                if let Some(code) = self.exit_code() {
                    return Ok(code);
                }
                if Instant::now() >= deadline {
                    return Err(Error::new(ErrorKind::Timeout));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        if sys::wait_exit(pidfd.as_fd(), Some(deadline))? {
            self.join()
        } else {
            Err(Error::new(ErrorKind::Timeout))
        }
    }

    /// The exit code if the child has exited, else `None` (also before `start`). Python:
    /// `Process.exitcode`: 0, N for `exit(N)`, 1 for a panic, `-signal` when killed.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::new(|| {});
    /// assert_eq!(p.exit_code(), None);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exit_code(), Some(0));
    /// # Ok(()) }
    /// ```
    #[doc(alias = "exitcode")]
    pub fn exit_code(&mut self) -> Option<i32> {
        if self.exit_code.is_none() {
            self.exit_code = self.child.as_ref()?.reap(false).ok()?;
        }
        self.exit_code
    }

    /// Whether the child has started and not yet exited. Python: `Process.is_alive`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::new(|| {});
    /// assert!(!p.is_alive());
    /// p.start()?;
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok(()) }
    /// ```
    pub fn is_alive(&mut self) -> bool {
        self.child.is_some() && self.exit_code().is_none()
    }

    /// The child's process id, once started. Python: `Process.pid`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::new(|| {});
    /// p.start()?;
    /// assert!(p.pid().unwrap() != std::process::id());
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child
            .as_ref()
            .map(|c| c.pid.as_raw_nonzero().get() as u32)
    }

    /// Sends SIGTERM to the child. Python: `Process.terminate`. Does nothing once the child
    /// has been reaped.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_keep, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::new(move || { let _ = child.recv_bytes(); });
    /// p.start()?;
    /// p.terminate()?;
    /// assert_eq!(p.join()?, -15);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if never started; `Io` if the signal cannot be sent.
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(Signal::TERM)
    }

    /// Sends SIGKILL to the child. Python: `Process.kill`. Does nothing once the child has
    /// been reaped.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_keep, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::new(move || { let _ = child.recv_bytes(); });
    /// p.start()?;
    /// p.kill()?;
    /// assert_eq!(p.join()?, -9);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn kill(&mut self) -> Result<()> {
        self.signal(Signal::KILL)
    }

    fn signal(&mut self, signal: Signal) -> Result<()> {
        let child = self.started()?;
        if self.exit_code.is_some() {
            return Ok(());
        }
        Ok(sys::signal(child.pid, child.pidfd.as_ref(), signal)?)
    }
}

/// Becomes ready (readable) when its process exits, and stays ready. Python:
/// `Process.sentinel`. Works in [`wait`](crate::wait), a [`WaitSet`](crate::WaitSet) and a
/// user's own `poll`/mio loop, mixed with connections.
///
/// On Linux it is a pidfd, so it can never report another process that reused the pid.
/// Waiting on it does not reap the child: call [`Process::join`] (which then returns at
/// once) to collect the exit code.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use multiproc::{Pipe, Process, Waitable, wait};
///
/// let (mut conn, mut child_end) = Pipe::new()?;
/// let mut p = Process::new(move || child_end.send_bytes(b"bye").unwrap());
/// p.start()?;
/// let mut sentinel = p.sentinel()?;
/// let mut message = None;
/// loop {
///     let ready = wait(&mut [&mut conn as &mut dyn Waitable, &mut sentinel], None)?;
///     // Once the message is taken, the connection stays ready at EOF: read it once.
///     if ready.contains(&0) && message.is_none() {
///         message = Some(conn.recv_bytes()?);
///     }
///     if ready.contains(&1) {
///         break;
///     }
/// }
/// assert_eq!(message.as_deref(), Some(&b"bye"[..]));
/// assert_eq!(p.join_timeout(Duration::ZERO)?, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Sentinel {
    fd: OwnedFd,
}

impl AsFd for Sentinel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl crate::wait::Waitable for Sentinel {
    fn wait_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        Ok(self.fd.as_fd())
    }

    fn is_ready(&mut self) -> bool {
        crate::sys::fd::poll_now(self.fd.as_fd(), rustix::event::PollFlags::IN).unwrap_or(true)
    }
}

impl Process {
    /// A handle that becomes ready when the child exits; see [`Sentinel`]. Each call
    /// returns a new handle (a duplicate of the same pidfd).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::new(|| {});
    /// assert!(p.sentinel().is_err()); // not started
    /// p.start()?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// let key = set.insert(p.sentinel()?)?;
    /// assert_eq!(set.wait(None)?, [key]);
    /// assert_eq!(p.join()?, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if never started; `Unsupported` where the kernel has no pidfds (Linux
    /// before 5.3); `Io` if the fd cannot be duplicated.
    pub fn sentinel(&self) -> Result<Sentinel> {
        let child = self.started()?;
        let pidfd = child.pidfd.as_ref().ok_or_else(|| {
            Error::with_message(
                ErrorKind::Unsupported,
                "process sentinels need pidfds (Linux 5.3 or later)",
            )
        })?;
        let fd = rustix::io::fcntl_dupfd_cloexec(pidfd, 0)?;
        Ok(Sentinel { fd })
    }
}

/// The child side of `start`: run the target, flush, and leave without returning into the
/// parent's code.
fn run_child(target: Target) -> ! {
    let code = match catch_unwind(AssertUnwindSafe(target)) {
        Ok(()) => 0,
        // The panic hook has already printed the message to stderr.
        Err(_) => 1,
    };
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::exit_child(code)
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("pid", &self.pid())
            .field("exit_code", &self.exit_code)
            .finish_non_exhaustive()
    }
}

impl Drop for Process {
    /// Never blocks and never kills: a child still running is reaped later (see the module
    /// docs).
    fn drop(&mut self) {
        if let (Some(child), None) = (self.child.take(), self.exit_code) {
            if let Ok(None) = child.reap(false) {
                let mut orphans = ORPHANS.lock().unwrap_or_else(|poison| poison.into_inner());
                orphans.push(child);
            }
        }
    }
}
