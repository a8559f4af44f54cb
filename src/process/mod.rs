//! `Process`: start a child (spawn, fork or any command), join it, signal it, and watch its
//! exit through a pollable [`Sentinel`].
//!
//! Three start methods, as in Python:
//!
//! - **spawn** ([`Process::spawn`], the default to reach for): re-executes this executable
//!   and calls an entry function `fn(A)` with serde arguments. Safe from threaded programs;
//!   [`Connection`](crate::Connection)s inside the arguments are passed to the child, and
//!   no other fd is. The program's `main` must call [`init`] first (see there for libtest
//!   tests).
//! - **fork** ([`Process::fork`]): runs a closure in a forked copy of this process. Fast, and
//!   the closure captures what it likes, but only from a single-threaded process: in a forked
//!   child only the forking thread exists, and any lock another thread held at that moment
//!   (stdout's, the allocator's on some libcs, the program's own) would stay locked forever.
//!   Python 3.12 warns in that case; `start` refuses with [`ErrorKind::Unsupported`]. The
//!   child also holds copies of every fd the parent had, not only what the closure captured:
//!   a child holding a copy of some other pipe's write end keeps that pipe from reaching EOF.
//! - **command** ([`Process::command`]): any executable, with connections passed as
//!   inherited fds at numbers it is told ([`Command::pass`]), e.g. a Python child.
//!
//! Exit codes follow Python: 0 for a clean return, 1 for a panic (its message is on stderr),
//! N for `std::process::exit(N)`, and minus the signal number for a child killed by a signal.
//! A child flushes stdout and stderr before it exits.
//!
//! Children are reaped through a pidfd on Linux, so a wait or a signal can never hit a
//! recycled pid. A `Process` dropped while its child still runs neither waits nor kills: the
//! child is reaped by a later `start` or [`active_children`], so no zombie accumulates.
//! Daemon children ([`Process::set_daemon`]) are killed when this process dies (Linux
//! `PR_SET_PDEATHSIG`) and sent SIGTERM when it exits normally.

mod child;
mod command;
mod current;
pub(crate) mod passing;
mod sentinel;
mod spawn;

use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, ErrorKind, Result};
use crate::sys::entry::EntryPoint;
use crate::sys::process::{self as sys, Forked};
use child::{ChildRecord, ExitSignal};

pub use child::{ActiveChild, active_children};
pub use command::Command;
pub use current::{CurrentProcess, ParentProcess, current_process, parent_process};
pub use sentinel::Sentinel;
pub use spawn::init;

pub(crate) use passing::decode_args;

/// The arguments a spawned entry function takes: any serde type that can move to another
/// thread. [`Connection`](crate::Connection)s inside it are passed to the child as fds.
///
/// Arguments travel as CBOR, in which serde writes a `Vec<u8>` as an array of integers, one
/// element at a time: for large byte buffers use `serde_bytes::ByteBuf` (or
/// `#[serde(with = "serde_bytes")]`), a single byte string (64 MiB: 0.4 s against 25 s in a
/// debug build).
///
/// # Examples
/// ```
/// fn takes<A: multiproc::SpawnArgs>(_: A) {}
/// takes((1u32, String::from("two"), vec![3.0f64]));
/// ```
pub trait SpawnArgs: Serialize + DeserializeOwned + Send + 'static {}

impl<A: Serialize + DeserializeOwned + Send + 'static> SpawnArgs for A {}

enum Target {
    Fork(Box<dyn FnOnce() + Send + 'static>),
    Spawn(spawn::SpawnTarget),
    Command(Command),
    /// A spawn that cannot work; `start` returns the error.
    Refused(Option<Error>),
}

/// A child process. Python: `multiprocessing.Process`.
///
/// Create it with [`Process::spawn`], [`Process::fork`] or [`Process::command`], optionally
/// name it or make it a daemon, then [`start`](Process::start) it. Whatever the target
/// holds (a [`Connection`](crate::Connection) end, say) is dropped in the parent once the
/// child has started, so the parent does not keep the child's end of a pipe open by
/// accident, the trap behind many a Python hang at EOF.
///
/// Once started, a `Process` can be shared between threads: one may block in
/// [`join`](Process::join) while another calls [`terminate`](Process::terminate) or
/// [`kill`](Process::kill), as in Python (see the second example).
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::Process;
/// let mut ok = Process::fork(|| println!("hello from the child"));
/// let mut exits = Process::fork(|| std::process::exit(3));
/// let mut panics = Process::fork(|| panic!("boom"));
/// for p in [&mut ok, &mut exits, &mut panics] {
///     p.start()?;
/// }
/// assert_eq!(ok.join()?, 0);
/// assert_eq!(exits.join()?, 3);
/// assert_eq!(panics.join()?, 1);
/// # Ok(()) }
/// ```
///
/// One thread joins while another terminates the child:
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let (_keep, mut end) = multiproc::Pipe::new()?;
/// let mut p = multiproc::Process::fork(move || { let _ = end.recv_bytes(); });
/// p.start()?;
/// let p = &p;
/// let code = std::thread::scope(|s| {
///     let joiner = s.spawn(|| p.join());
///     p.terminate()?;
///     joiner.join().unwrap()
/// })?;
/// assert_eq!(code, -15);
/// # Ok(()) }
/// ```
pub struct Process {
    /// Behind a mutex only so that `Process` is `Sync` (one thread may `join` while another
    /// `terminate`s): it is only ever reached through `&mut self`, with `get_mut`.
    target: Mutex<Option<Target>>,
    name: String,
    path: Vec<u32>,
    daemon: bool,
    child: Option<Arc<ChildRecord>>,
}

impl Process {
    fn with_target(target: Target) -> Process {
        let (name, path) = current::next_child();
        Process {
            target: Mutex::new(Some(target)),
            name,
            path,
            daemon: false,
            child: None,
        }
    }

    /// A child that will run `entry(args)` in a fresh copy of this executable. Python:
    /// `Process(target=entry, args=args)` with the spawn start method.
    ///
    /// `entry` is a plain function (or a closure capturing nothing). `args` are serialised
    /// at `start`; [`Connection`](crate::Connection)s in them arrive in the child usable,
    /// and the parent's copies are closed. The program's `main` must begin with
    /// [`crate::init`].
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Connection, Pipe, Process};
    ///
    /// fn double(mut conn: Connection) {
    ///     let n: u64 = conn.recv().unwrap();
    ///     conn.send(&(n * 2)).unwrap();
    /// }
    ///
    /// fn main() -> multiproc::Result<()> {
    ///     multiproc::init();
    ///     let (mut parent, child) = Pipe::new()?;
    ///     let mut p = Process::spawn(double, child);
    ///     p.start()?;
    ///     parent.send(&21u64)?;
    ///     assert_eq!(parent.recv::<u64>()?, 42);
    ///     assert_eq!(p.join()?, 0);
    ///     Ok(())
    /// }
    /// ```
    pub fn spawn<A: SpawnArgs>(entry: fn(A), args: A) -> Process {
        Process::with_target(match EntryPoint::of(entry) {
            Ok(entry) => Target::Spawn(spawn::SpawnTarget {
                entry,
                args: Box::new(args),
            }),
            Err(e) => Target::Refused(Some(e)),
        })
    }

    /// A child that will run `target` in a forked copy of this process. Python:
    /// `Process(target=f)` with the fork start method. See the module docs for why this
    /// process must be single-threaded at `start`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut parent, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::fork(move || {
    ///     let n: u64 = child.recv().unwrap();
    ///     child.send(&(n + 1)).unwrap();
    /// });
    /// p.start()?;
    /// parent.send(&41u64)?;
    /// assert_eq!(parent.recv::<u64>()?, 42);
    /// assert_eq!(p.join()?, 0);
    /// # Ok(()) }
    /// ```
    pub fn fork<F>(target: F) -> Process
    where
        F: FnOnce() + Send + 'static,
    {
        Process::with_target(Target::Fork(Box::new(target)))
    }

    /// A child running `command`, with the connections passed to it. Its exit code is the
    /// program's exit status, or minus the signal that killed it.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut cmd = multiproc::Command::new("sh");
    /// cmd.args(["-c", "exit 4"]);
    /// let mut p = multiproc::Process::command(cmd);
    /// p.start()?;
    /// assert_eq!(p.join()?, 4);
    /// # Ok(()) }
    /// ```
    pub fn command(command: Command) -> Process {
        Process::with_target(Target::Command(command))
    }

    /// The process's name: `Process-N` unless set (in a child, `Process-1:N`, and so on).
    /// Python: `Process.name`.
    ///
    /// # Examples
    /// ```
    /// let p = multiproc::Process::fork(|| {});
    /// assert!(p.name().starts_with("Process-"));
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Renames the process; a spawned or forked child sees the name in
    /// [`crate::current_process`].
    ///
    /// # Examples
    /// ```
    /// let mut p = multiproc::Process::fork(|| {});
    /// p.set_name("worker-1");
    /// assert_eq!(p.name(), "worker-1");
    /// ```
    pub fn set_name(&mut self, name: impl Into<String>) {
        self.name = name.into();
    }

    /// Whether the child is a daemon. Python: `Process.daemon`.
    ///
    /// # Examples
    /// ```
    /// assert!(!multiproc::Process::fork(|| {}).daemon());
    /// ```
    pub fn daemon(&self) -> bool {
        self.daemon
    }

    /// Makes the child a daemon (before `start`): it is killed (SIGKILL) when this process
    /// dies, however it dies (Linux `PR_SET_PDEATHSIG`), and sent SIGTERM, then SIGKILL a
    /// second later, when this process exits normally. Python: `Process.daemon = True`.
    ///
    /// The kernel sends the death signal when the *thread* that started the child exits:
    /// start daemon children from a thread that lives as long as they should.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::fork(|| {});
    /// p.set_daemon(true)?;
    /// assert!(p.daemon());
    /// p.start()?;
    /// assert!(p.set_daemon(false).is_err());
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` once started.
    pub fn set_daemon(&mut self, daemon: bool) -> Result<()> {
        if self.child.is_some() || self.target_mut().is_none() {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "process already started",
            ));
        }
        self.daemon = daemon;
        Ok(())
    }

    /// Starts the child. Python: `Process.start`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::fork(|| {});
    /// p.start()?;
    /// assert!(p.pid().is_some());
    /// assert_eq!(p.start().unwrap_err().kind(), multiproc::ErrorKind::InvalidInput);
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if already started, or for a spawn when [`crate::init`] was
    /// never called; `Unsupported` for a fork while this process runs more than one thread,
    /// or a spawn entry living in a dynamic library; `Encode` if spawn arguments refuse to
    /// serialise (a `Connection` with unread bytes, say); `Io` if the system refuses (the
    /// program of a command cannot run, or a process limit is reached). When the system
    /// refuses to create the child, or spawn arguments refuse to serialise, nothing was
    /// started and the target is kept: `start` may be called again.
    pub fn start(&mut self) -> Result<()> {
        if self.target_mut().is_none() {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "cannot start a process twice",
            ));
        }
        match self.target_mut().as_mut().expect("checked above") {
            Target::Fork(_) => check_fork_allowed()?,
            Target::Spawn(_) => spawn::check_ready()?,
            Target::Command(_) => {}
            Target::Refused(e) => {
                let e = e
                    .take()
                    .unwrap_or_else(|| Error::new(ErrorKind::Unsupported));
                return Err(e);
            }
        }
        child::reap_orphans();
        let identity = current::Identity {
            name: self.name.clone(),
            path: self.path.clone(),
            daemon: self.daemon,
            parent_pid: std::process::id(),
            parent_name: current::own_name(),
        };
        let fallback = if pidfds_supported() {
            None
        } else {
            Some(crate::sys::fd::pipe()?)
        };
        let keep: Vec<_> = fallback.iter().map(|(_, w)| w.as_raw_fd()).collect();
        // A fork target, once the child has it: the parent's copies go after the child is
        // recorded (their drop may panic; the child must be tracked by then).
        let mut handed = None;
        let daemon = self.daemon;
        let slot = self.target_mut();
        let pid = match slot.as_mut().expect("checked above") {
            Target::Fork(_) => {
                // Whatever sits in this process's stdio buffers would be written twice.
                let _ = std::io::stdout().flush();
                let _ = std::io::stderr().flush();
                // The closure stays in place until the fork succeeded: a fork refused
                // (EAGAIN at a process limit) leaves the `Process` to be started again.
                let forked = sys::fork()?;
                let Some(Target::Fork(f)) = slot.take() else {
                    unreachable!("matched above");
                };
                match forked {
                    Forked::Child => run_forked(f, identity),
                    Forked::Parent(pid) => {
                        handed = Some(f);
                        pid
                    }
                }
            }
            Target::Spawn(target) => {
                let child = spawn::start(target, identity, &keep)?;
                *slot = None;
                pid_of(&child)?
            }
            Target::Command(command) => {
                let child = command.spawn(&keep, daemon)?;
                *slot = None;
                pid_of(&child)?
            }
            Target::Refused(_) => unreachable!("returned above"),
        };
        let exit = match fallback {
            Some((read, write)) => {
                drop(write);
                ExitSignal::Pipe(read)
            }
            None => match sys::pidfd_open(pid) {
                Ok(Some(fd)) => ExitSignal::PidFd(fd),
                Err(e) if rustix::io::Errno::from_io_error(&e) == Some(rustix::io::Errno::SRCH) => {
                    // The child ran and was reaped already, by the system (SIGCHLD
                    // ignored) or other code: started, and gone. Its sentinel is a pipe
                    // nobody writes to, ready at once; `join` reports what `waitid` says
                    // (ECHILD). Never signalled: its pid may be another process's now.
                    let (read, write) = crate::sys::fd::pipe()?;
                    drop(write);
                    ExitSignal::ReapedElsewhere(read)
                }
                failed => {
                    // No sentinel, so no record: the child must not outlive the error as
                    // an untracked zombie. Unreaped, its pid is still its own to signal.
                    let _ = sys::signal(pid, None, Signal::KILL);
                    let _ = sys::reap(pid, None, true);
                    return Err(match failed {
                        Err(e) => Error::with_source(
                            ErrorKind::Io,
                            "no exit sentinel for the new child (it was killed)",
                            e,
                        ),
                        _ => Error::with_message(
                            ErrorKind::Unsupported,
                            "pidfd_open vanished after it was probed (the new child was killed)",
                        ),
                    });
                }
            },
        };
        self.child = Some(ChildRecord::register(
            pid,
            exit,
            self.name.clone(),
            self.daemon,
        ));
        if let Some(f) = handed {
            // What the closure holds is the child's now; the parent's copies go.
            handing_to_child(|| drop(f));
        }
        Ok(())
    }

    /// The target, until `start` hands it to a child.
    fn target_mut(&mut self) -> &mut Option<Target> {
        self.target
            .get_mut()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn started(&self) -> Result<&ChildRecord> {
        self.child.as_deref().ok_or_else(child::not_started)
    }

    /// Waits for the child to exit and returns its exit code. Python: `Process.join()`
    /// followed by `exitcode`. Joining again returns the same code at once.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::fork(|| std::process::exit(7));
    /// p.start()?;
    /// assert_eq!(p.join()?, 7);
    /// assert_eq!(p.join()?, 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if never started; `Io` if waiting fails, among others with `ECHILD`
    /// when other code in this process reaped the child first (a `waitpid(-1)`, or
    /// `SIGCHLD` ignored): its exit code is lost then, and, as in Python, `is_alive` stays
    /// true and `exit_code` `None`.
    pub fn join(&self) -> Result<i32> {
        self.started()?
            .wait(None)?
            .ok_or_else(|| Error::new(ErrorKind::Io))
    }

    /// Waits at most `timeout` for the child to exit. Python: `Process.join(timeout)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (mut parent, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::fork(move || {
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
    pub fn join_timeout(&self, timeout: Duration) -> Result<i32> {
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
    /// let mut p = multiproc::Process::fork(|| {});
    /// p.start()?;
    /// assert_eq!(p.join_deadline(Instant::now() + Duration::from_secs(10))?, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`join_timeout`](Self::join_timeout).
    pub fn join_deadline(&self, deadline: Instant) -> Result<i32> {
        self.started()?
            .wait(Some(deadline))?
            .ok_or_else(|| Error::new(ErrorKind::Timeout))
    }

    /// The exit code if the child has exited (reaping it), else `None` (also before
    /// `start`). Python: `Process.exitcode`: 0, N for `exit(N)`, 1 for a panic, `-signal`
    /// when killed.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::fork(|| {});
    /// assert_eq!(p.exit_code(), None);
    /// p.start()?;
    /// p.join()?;
    /// assert_eq!(p.exit_code(), Some(0));
    /// # Ok(()) }
    /// ```
    #[doc(alias = "exitcode")]
    pub fn exit_code(&self) -> Option<i32> {
        self.child.as_ref()?.poll().ok()?
    }

    /// Whether the child has started and not yet exited. Python: `Process.is_alive`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::fork(|| {});
    /// assert!(!p.is_alive());
    /// p.start()?;
    /// p.join()?;
    /// assert!(!p.is_alive());
    /// # Ok(()) }
    /// ```
    pub fn is_alive(&self) -> bool {
        self.child.is_some() && self.exit_code().is_none()
    }

    /// The child's process id, once started. Python: `Process.pid` (and `Process.ident`,
    /// the same number).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::fork(|| {});
    /// p.start()?;
    /// assert!(p.pid().unwrap() != std::process::id());
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    #[doc(alias = "ident")]
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.pid_u32())
    }

    /// Sends SIGTERM to the child. Python: `Process.terminate`. Does nothing once the child
    /// has been reaped.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_keep, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::fork(move || { let _ = child.recv_bytes(); });
    /// p.start()?;
    /// p.terminate()?;
    /// assert_eq!(p.join()?, -15);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if never started; `Io` if the signal cannot be sent.
    pub fn terminate(&self) -> Result<()> {
        self.started()?.signal(Signal::TERM)
    }

    /// Sends SIGINT to the child, as Ctrl-C would. Python 3.14: `Process.interrupt`.
    /// Does nothing once the child has been reaped.
    ///
    /// A Python `multiprocessing` child turns SIGINT into `KeyboardInterrupt` and, unless it
    /// catches that, exits with code 1 (a Python script run by [`command`](Self::command)
    /// dies of the signal after its traceback: -2). A Rust child has no such default: it
    /// dies of the signal (exit code -2), unless it handles SIGINT itself (with
    /// `signal-hook`, say, as below) to clean up and exit with a code of its choosing.
    ///
    /// A child that ignores SIGINT is not interrupted, in Python either. Ignoring is
    /// inherited through fork and exec, and a shell script's background jobs (`cmd &`) start
    /// with SIGINT ignored: a program run that way, and every child it starts, ignores this
    /// unless it installs a handler.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::io::Read;
    /// let (mut parent, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::fork(move || {
    ///     let (mut interrupted, on_sigint) = std::os::unix::net::UnixStream::pair().unwrap();
    ///     signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, on_sigint).unwrap();
    ///     child.send_bytes(b"ready").unwrap();
    ///     interrupted.read_exact(&mut [0]).unwrap();
    ///     std::process::exit(1); // cleaned up, as after Python's KeyboardInterrupt
    /// });
    /// p.start()?;
    /// assert_eq!(parent.recv_bytes()?, b"ready"); // the handler is in place
    /// p.interrupt()?;
    /// assert_eq!(p.join()?, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn interrupt(&self) -> Result<()> {
        self.started()?.signal(Signal::INT)
    }

    /// Sends SIGKILL to the child. Python: `Process.kill`. Does nothing once the child has
    /// been reaped.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_keep, mut child) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::fork(move || { let _ = child.recv_bytes(); });
    /// p.start()?;
    /// p.kill()?;
    /// assert_eq!(p.join()?, -9);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    pub fn kill(&self) -> Result<()> {
        self.started()?.signal(Signal::KILL)
    }

    /// A handle that becomes ready when the child exits; see [`Sentinel`]. Each call
    /// returns a new handle (a duplicate of the same fd).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut p = multiproc::Process::fork(|| {});
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
    /// `InvalidInput` if never started; `Io` if the fd cannot be duplicated.
    pub fn sentinel(&self) -> Result<Sentinel> {
        let child = self.started()?;
        let fd: OwnedFd = rustix::io::fcntl_dupfd_cloexec(child.exit.fd(), 0)?;
        Ok(Sentinel::new(fd))
    }
}

fn pid_of(child: &std::process::Child) -> Result<Pid> {
    i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| Error::with_message(ErrorKind::Io, "the system returned an invalid pid"))
}

/// Bumped in every forked child: per-process state (a queue's producer slot) notices it was
/// inherited rather than made here.
static FORK_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many forks separate this process from the one that set up its per-process state.
///
/// Every fork counts, not only [`Process::fork`]: the first call registers a handler that
/// runs in the child of any `fork(2)` made through the C library (`libc::fork`, another
/// crate's, an embedding interpreter's `os.fork`). A queue handle used in such a child
/// then claims a log of its own instead of writing into its parent's. Forks that skip the C
/// library's handlers are not seen: a raw `clone` or `syscall(SYS_fork)`, glibc's `_Fork`,
/// `vfork`.
pub(crate) fn fork_generation() -> u64 {
    static WATCHING: std::sync::Once = std::sync::Once::new();
    // If the C library refuses (out of memory), only `Process::fork` children are seen, as
    // before the handler existed.
    WATCHING.call_once(|| drop(sys::on_fork_in_child(count_fork)));
    FORK_GENERATION.load(std::sync::atomic::Ordering::Relaxed)
}

/// The fork handler: an atomic add, which is async-signal-safe.
extern "C" fn count_fork() {
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Refuses to fork a multi-threaded process (see the module docs).
fn check_fork_allowed() -> Result<()> {
    if let Some(threads @ 2..) = sys::thread_count() {
        return Err(Error::with_message(
            ErrorKind::Unsupported,
            format!(
                "refusing to fork: this process runs {threads} threads, and a forked child \
                 could hang on a lock another thread holds; use Process::spawn, or start \
                 forked children before starting threads"
            ),
        ));
    }
    Ok(())
}

/// Whether exit sentinels are pidfds here. `MULTIPROC_NO_PIDFD=1` in the environment turns
/// them off, so the pipe fallback of older kernels and other systems can be tested.
fn pidfds_supported() -> bool {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    if let Some(&known) = SUPPORTED.get() {
        return known;
    }
    if std::env::var_os("MULTIPROC_NO_PIDFD").is_some_and(|v| v == "1") {
        return *SUPPORTED.get_or_init(|| false);
    }
    match sys::pidfd_open(rustix::process::getpid()) {
        Ok(Some(_)) => *SUPPORTED.get_or_init(|| true),
        // Out of fds or memory: no answer, so nothing is remembered. Assume pidfds (the
        // next `pidfd_open` will tell), rather than fall back to signalling by pid for good.
        Err(e) if is_resource_shortage(&e) => true,
        // No such call, or refused (a seccomp filter answering EPERM): the pipe fallback.
        Ok(None) | Err(_) => *SUPPORTED.get_or_init(|| false),
    }
}

/// Whether `e` says the system was short of fds or memory, which passes.
fn is_resource_shortage(e: &std::io::Error) -> bool {
    matches!(
        rustix::io::Errno::from_io_error(e),
        Some(rustix::io::Errno::MFILE | rustix::io::Errno::NFILE | rustix::io::Errno::NOMEM)
    )
}

thread_local! {
    /// Set while the parent drops a fork target it handed to the child.
    static HANDING_TO_CHILD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` (the parent's drop of a fork target just handed to the child) so that
/// [`handed_to_child`] says so: objects in the closure then let go of their copies without
/// undoing what the child goes on using (a listener's socket file).
fn handing_to_child(f: impl FnOnce()) {
    /// Puts the flag back as it was however `f` ends (a drop may panic, or start another
    /// fork, which sets and restores it in turn).
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            HANDING_TO_CHILD.with(|h| h.set(self.0));
        }
    }
    let _restore = Restore(HANDING_TO_CHILD.with(|h| h.replace(true)));
    f();
}

/// Whether the object being dropped is the parent's copy of something a forked child was
/// just handed (it was moved into the fork's closure).
pub(crate) fn handed_to_child() -> bool {
    HANDING_TO_CHILD.with(|h| h.get())
}

/// The child side of a fork: take on the identity, run the target, flush, and leave without
/// returning into the parent's code.
fn run_forked(target: Box<dyn FnOnce() + Send>, identity: current::Identity) -> ! {
    FORK_GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Forked while the parent was dropping another fork's target: not ours to keep here.
    HANDING_TO_CHILD.with(|h| h.set(false));
    child::forget_all_in_forked_child();
    if identity.daemon {
        if let Some(parent) = i32::try_from(identity.parent_pid)
            .ok()
            .and_then(Pid::from_raw)
        {
            if !sys::die_with_parent(parent) {
                exit_forked(1);
            }
        }
    }
    current::become_child(identity);
    let code = match catch_unwind(AssertUnwindSafe(target)) {
        Ok(()) => 0,
        // The panic hook has already printed the message to stderr.
        Err(payload) => {
            forget_panic(payload);
            1
        }
    };
    exit_forked(code)
}

/// Lets go of a caught panic's payload without dropping it: a payload whose `Drop` panics
/// would unwind past the child's exit, into the code that started it (the parent's, after
/// a fork). The child is about to exit, so nothing is lost.
pub(crate) fn forget_panic(payload: Box<dyn std::any::Any + Send>) {
    std::mem::forget(payload);
}

/// Leaves a forked child: flush stdio, then `_exit` (the parent's `atexit` handlers and
/// destructors are not ours to run).
fn exit_forked(code: i32) -> ! {
    child::stop_daemons();
    #[cfg(any(target_os = "linux", target_os = "android"))]
    crate::queue::release_logs_at_exit();
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    sys::exit_child(code)
}

/// Leaves a spawned child: flush stdio, then a normal `exit` (its own `atexit` handlers,
/// such as daemon cleanup, run).
fn exit_now(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

impl fmt::Debug for Process {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .finish_non_exhaustive()
    }
}

impl Drop for Process {
    /// Never blocks and never kills: a child still running is reaped later (see the module
    /// docs), and a daemon child still dies with this process.
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = child.poll();
        }
    }
}

/// Measurement support for `benches/process.rs`; not part of the API.
#[doc(hidden)]
pub mod bench_support {
    /// The floor of the fork start method: `fork`, `_exit(0)` in the child, `waitid` in the
    /// parent, with none of `Process`'s bookkeeping. Returns the exit code.
    ///
    /// # Errors
    /// `Unsupported` if this process runs more than one thread; `Io` if the system refuses.
    pub fn raw_fork_wait() -> crate::Result<i32> {
        super::check_fork_allowed()?;
        match super::sys::fork()? {
            super::Forked::Child => super::sys::exit_child(0),
            super::Forked::Parent(pid) => super::sys::reap(pid, None, true)?
                .ok_or_else(|| crate::Error::new(crate::ErrorKind::Io)),
        }
    }

    /// A child made by a `fork(2)` such as another library makes: none of `Process`'s
    /// bookkeeping. For tests of what a child forked behind our back does to shared state.
    #[derive(Debug)]
    pub struct ForeignChild {
        pid: Option<rustix::process::Pid>,
    }

    /// Forks as another library would (the C library's `fork`, nothing of `Process`) and
    /// runs `f` in the child, which then ends with `_exit`: code 0, or 101 if `f` panicked.
    /// The parent goes on at once; [`ForeignChild::wait`] reaps the child.
    ///
    /// # Errors
    /// `Unsupported` if this process runs more than one thread; `Io` if the system refuses.
    pub fn foreign_fork(f: impl FnOnce()) -> crate::Result<ForeignChild> {
        super::check_fork_allowed()?;
        match super::sys::fork()? {
            super::Forked::Child => {
                let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    Ok(()) => 0,
                    Err(payload) => {
                        super::forget_panic(payload);
                        101
                    }
                };
                super::sys::exit_child(code)
            }
            super::Forked::Parent(pid) => Ok(ForeignChild { pid: Some(pid) }),
        }
    }

    impl ForeignChild {
        /// Waits for the child to end; its exit code (minus the signal that killed it).
        ///
        /// # Errors
        /// `Io` if the system refuses.
        pub fn wait(mut self) -> crate::Result<i32> {
            let pid = self.pid.take().expect("waited once");
            super::sys::reap(pid, None, true)?
                .ok_or_else(|| crate::Error::new(crate::ErrorKind::Io))
        }
    }

    impl Drop for ForeignChild {
        /// Not waited for: killed and reaped, so no test leaves it behind.
        fn drop(&mut self) {
            if let Some(pid) = self.pid.take() {
                let _ = super::sys::signal(pid, None, rustix::process::Signal::KILL);
                let _ = super::sys::reap(pid, None, true);
            }
        }
    }

    /// Shared memory for the floor of `benches/queue.rs` (a plain ring with no crash
    /// safety): a `MAP_SHARED` anonymous file, inherited by forked children, with atomics
    /// and byte copies that are safe to call.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[derive(Debug)]
    pub struct SharedRegion {
        map: crate::sys::shm::SharedMap,
        _file: std::os::fd::OwnedFd,
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    impl SharedRegion {
        /// `len` bytes of zeroed shared memory.
        ///
        /// # Errors
        /// `Io` if the system refuses.
        pub fn new(len: usize) -> crate::Result<SharedRegion> {
            let (file, map) = crate::sys::shm::SharedMap::create("multiproc-bench", len)?;
            Ok(SharedRegion { map, _file: file })
        }

        /// The `AtomicU64` at `offset` (8-aligned; panics out of bounds).
        pub fn u64_at(&self, offset: usize) -> &std::sync::atomic::AtomicU64 {
            self.map.u64_at(offset)
        }

        /// The `AtomicU32` at `offset` (4-aligned; panics out of bounds).
        pub fn u32_at(&self, offset: usize) -> &std::sync::atomic::AtomicU32 {
            self.map.u32_at(offset)
        }

        /// Copies bytes out of the region.
        pub fn read(&self, offset: usize, buf: &mut [u8]) {
            self.map.read(offset, buf);
        }

        /// Copies bytes into the region.
        pub fn write(&self, offset: usize, data: &[u8]) {
            self.map.write(offset, data);
        }

        /// Sleeps while `word` holds `expected` (at most `timeout`).
        pub fn futex_wait(
            word: &std::sync::atomic::AtomicU32,
            expected: u32,
            timeout: Option<std::time::Duration>,
        ) {
            crate::sys::shm::futex_wait(word, expected, timeout);
        }

        /// Wakes every sleeper on `word`.
        pub fn futex_wake(word: &std::sync::atomic::AtomicU32) {
            crate::sys::shm::futex_wake_all(word);
        }

        /// Wakes one sleeper on `word`, if any.
        pub fn futex_wake_one(word: &std::sync::atomic::AtomicU32) {
            crate::sys::shm::futex_wake_one(word);
        }
    }
}
