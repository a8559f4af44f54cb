//! Started children: how each is waited for, reaped and signalled, and the registry of those
//! not reaped yet (for `active_children`, dropped `Process`es and daemon cleanup at exit).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

use crate::error::{Error, ErrorKind, Result};
use crate::sys::process as sys;

/// How long exit cleanup waits for daemon children to leave after SIGTERM before SIGKILL.
const DAEMON_GRACE: Duration = Duration::from_secs(1);

/// How often a wait on a pipe sentinel also asks `waitid` (systems without pidfds only).
const PIPE_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How long a wait gives a child that closed its sentinel pipe to become a zombie.
const PIPE_EXIT_GRACE: Duration = Duration::from_millis(100);

/// What makes a child's exit observable without reaping it.
#[derive(Debug)]
pub(crate) enum ExitSignal {
    /// A pidfd: readable exactly when the child has exited. Waits and signals go through it.
    PidFd(OwnedFd),
    /// The read end of a pipe whose only write end the child holds (systems without pidfds):
    /// readable once the child, and any process it passed the write end to, has exited.
    Pipe(OwnedFd),
    /// A child that was reaped by someone else before it could be watched (`SIGCHLD`
    /// ignored): the read end of a pipe nobody writes to, ready at once. Never waited for
    /// with `waitid` nor signalled: its pid may be another process's by now.
    ReapedElsewhere(OwnedFd),
}

impl ExitSignal {
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            ExitSignal::PidFd(fd) | ExitSignal::Pipe(fd) | ExitSignal::ReapedElsewhere(fd) => {
                fd.as_fd()
            }
        }
    }
}

/// The error for a child whose exit status someone else took: `ECHILD`, as `waitid` says.
fn reaped_elsewhere() -> Error {
    Error::with_source(
        ErrorKind::Io,
        "the child was reaped by other code (a waitpid(-1), or SIGCHLD ignored): its exit \
         code is lost",
        std::io::Error::from_raw_os_error(rustix::io::Errno::CHILD.raw_os_error()),
    )
}

/// One started child. Shared by its `Process` and the registry.
#[derive(Debug)]
pub(crate) struct ChildRecord {
    pub(crate) pid: Pid,
    pub(crate) exit: ExitSignal,
    pub(crate) name: String,
    pub(crate) daemon: bool,
    /// The exit code once reaped. Reaping and signalling happen under this lock, so a signal
    /// never reaches a pid the kernel has recycled.
    code: Mutex<Option<i32>>,
    /// Other code reaped the child (`ECHILD`), under the lock: its pid may be another
    /// process's now, so it is never waited for or signalled again.
    lost: AtomicBool,
}

/// Children started by this process and not yet reaped.
static CHILDREN: Mutex<Vec<Arc<ChildRecord>>> = Mutex::new(Vec::new());

/// The fork generation [`CHILDREN`] belongs to: a child forked behind our back (by another
/// library's `fork`) inherits the registry, but those are its parent's children.
static CHILDREN_GENERATION: AtomicU64 = AtomicU64::new(0);

fn children() -> MutexGuard<'static, Vec<Arc<ChildRecord>>> {
    ours(CHILDREN.lock().unwrap_or_else(|poison| poison.into_inner()))
}

/// The registry, emptied first if it is a parent's (see [`CHILDREN_GENERATION`]).
fn ours(
    mut records: MutexGuard<'static, Vec<Arc<ChildRecord>>>,
) -> MutexGuard<'static, Vec<Arc<ChildRecord>>> {
    let generation = super::fork_generation();
    if CHILDREN_GENERATION.swap(generation, Ordering::Relaxed) != generation {
        records.clear();
    }
    records
}

impl ChildRecord {
    /// Records a just-started child in the registry.
    pub(crate) fn register(
        pid: Pid,
        exit: ExitSignal,
        name: String,
        daemon: bool,
    ) -> Arc<ChildRecord> {
        let record = Arc::new(ChildRecord {
            pid,
            exit,
            name,
            daemon,
            code: Mutex::new(None),
            lost: AtomicBool::new(false),
        });
        children().push(Arc::clone(&record));
        if daemon {
            static AT_EXIT: Once = Once::new();
            AT_EXIT.call_once(|| sys::at_exit(stop_daemons_at_exit));
        }
        record
    }

    fn lock(&self) -> MutexGuard<'_, Option<i32>> {
        self.code
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub(crate) fn pid_u32(&self) -> u32 {
        self.pid.as_raw_nonzero().get().unsigned_abs()
    }

    /// The exit code if the child has exited (reaping it), without blocking.
    pub(crate) fn poll(&self) -> Result<Option<i32>> {
        self.reap(false)
    }

    /// Reaps the child, blocking until it exits when `block`. A child someone else reaped
    /// leaves the registry (nothing will ever reap it here) and is an `ECHILD` error; as in
    /// Python, its `exit_code` stays `None`.
    fn reap(&self, block: bool) -> Result<Option<i32>> {
        let mut code = self.lock();
        if code.is_none() {
            if self.lost.load(Ordering::Relaxed) {
                return Err(reaped_elsewhere());
            }
            let pidfd = match &self.exit {
                ExitSignal::PidFd(fd) => Some(fd.as_fd()),
                ExitSignal::Pipe(_) => None,
                ExitSignal::ReapedElsewhere(_) => {
                    self.lose(code);
                    return Err(reaped_elsewhere());
                }
            };
            *code = match sys::reap(self.pid, pidfd, block) {
                Ok(code) => code,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CHILD.raw_os_error()) => {
                    // Never waited for again: by pid, that could reap another child of ours.
                    self.lose(code);
                    return Err(reaped_elsewhere());
                }
                Err(e) => return Err(e.into()),
            };
            if code.is_some() {
                drop(code);
                self.unregister();
                return Ok(*self.lock());
            }
        }
        Ok(*code)
    }

    /// Other code reaped the child: marks it lost (under `code`, its lock), so it is never
    /// waited for or signalled again, and, since nothing will ever reap it here, takes it
    /// out of the registry.
    fn lose(&self, code: MutexGuard<'_, Option<i32>>) {
        self.lost.store(true, Ordering::Relaxed);
        drop(code);
        self.unregister();
    }

    fn unregister(&self) {
        children().retain(|r| !std::ptr::eq(Arc::as_ptr(r), self));
    }

    /// Waits until the child exits or `deadline` passes, and reaps it. `Ok(None)` at the
    /// deadline.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<Option<i32>> {
        if let Some(code) = *self.lock() {
            return Ok(Some(code));
        }
        match &self.exit {
            // Wait on the fd without holding the lock, so other threads may poll or signal.
            ExitSignal::PidFd(fd) => {
                if !crate::sys::fd::wait_readable(fd.as_fd(), deadline)? {
                    return Ok(None);
                }
                // Readable: the child is a zombie now, so this does not block.
                self.reap(true)
            }
            ExitSignal::ReapedElsewhere(_) => self.reap(false),
            // The pipe closes only when every process holding its write end has exited: the
            // child, but also whatever it handed the end on to (a command's own children, a
            // forked grandchild), which may outlive it. So it can end the wait early but not
            // be relied on: between short waits on it, ask waitid.
            ExitSignal::Pipe(fd) => {
                // Once the child closed its end it is exiting: it turns into a zombie within
                // moments, so even a zero timeout gives it this long.
                let mut grace: Option<Instant> = None;
                loop {
                    if let Some(code) = self.poll()? {
                        return Ok(Some(code));
                    }
                    let now = Instant::now();
                    let closed = grace.is_some()
                        || crate::sys::fd::poll_now(fd.as_fd(), rustix::event::PollFlags::IN)
                            .unwrap_or(false);
                    if closed && grace.is_none() {
                        grace = Some(now + PIPE_EXIT_GRACE);
                    }
                    let late = deadline.is_some_and(|d| now >= d);
                    if late && grace.is_none_or(|g| now >= g) {
                        return Ok(None);
                    }
                    if closed {
                        std::thread::sleep(Duration::from_millis(1));
                    } else {
                        let slice = now + PIPE_POLL_INTERVAL;
                        let until = deadline.map_or(slice, |d| d.min(slice));
                        crate::sys::fd::wait_readable(fd.as_fd(), Some(until))?;
                    }
                }
            }
        }
    }

    /// Sends `signal` unless the child has been reaped (then there is no one to signal).
    pub(crate) fn signal(&self, signal: Signal) -> Result<()> {
        let code = self.lock();
        if code.is_some() || self.lost.load(Ordering::Relaxed) {
            return Ok(());
        }
        let pidfd = match &self.exit {
            ExitSignal::PidFd(fd) => Some(fd),
            ExitSignal::Pipe(_) => {
                // By pid: only while it is still our child, unreaped (ours hold this lock).
                match sys::child_exited(self.pid)? {
                    Some(false) => None,
                    // A zombie: a signal would do nothing.
                    Some(true) => return Ok(()),
                    // Reaped by other code: its pid may be another process's now.
                    None => {
                        self.lose(code);
                        return Ok(());
                    }
                }
            }
            // Its pid may be another process's now: nothing to send.
            ExitSignal::ReapedElsewhere(_) => return Ok(()),
        };
        match sys::signal(self.pid, pidfd, signal) {
            Ok(()) => Ok(()),
            // Exited but not reaped: a signal to a zombie is no error, as in Python.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether only the registry still refers to this child (its `Process` was dropped).
    fn orphaned(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1
    }
}

/// Reaps children whose `Process` was dropped while they ran and that have exited since.
pub(crate) fn reap_orphans() {
    let orphans: Vec<_> = children()
        .iter()
        .filter(|r| r.orphaned())
        .cloned()
        .collect();
    for orphan in orphans {
        let _ = orphan.poll();
    }
}

/// Forgets every child record, in a forked child: they are its parent's children.
pub(crate) fn forget_all_in_forked_child() {
    children().clear();
}

/// A child that is still running: what [`active_children`] returns.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let (_keep, mut end) = multiproc::Pipe::new()?;
/// let mut p = multiproc::Process::fork(move || { let _ = end.recv_bytes(); });
/// p.set_name("reader");
/// p.start()?;
/// let active = multiproc::active_children();
/// let me = active.iter().find(|c| Some(c.pid()) == p.pid()).unwrap();
/// assert_eq!(me.name(), "reader");
/// assert!(!me.daemon());
/// p.kill()?;
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveChild {
    pid: u32,
    name: String,
    daemon: bool,
}

impl ActiveChild {
    /// The child's process id.
    ///
    /// # Examples
    /// ```
    /// for child in multiproc::active_children() {
    ///     assert!(child.pid() > 0);
    /// }
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name its `Process` had when started.
    ///
    /// # Examples
    /// ```
    /// for child in multiproc::active_children() {
    ///     assert!(!child.name().is_empty());
    /// }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it is a daemon child (dies with this process).
    ///
    /// # Examples
    /// ```
    /// let daemons = multiproc::active_children().iter().filter(|c| c.daemon()).count();
    /// assert_eq!(daemons, 0);
    /// ```
    pub fn daemon(&self) -> bool {
        self.daemon
    }
}

/// The children this process started that are still running, including those whose
/// [`Process`](crate::Process) was dropped. Python: `multiprocessing.active_children()`,
/// which likewise reaps every child that has exited.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let mut p = multiproc::Process::fork(|| {});
/// p.start()?;
/// p.join()?;
/// assert!(multiproc::active_children().iter().all(|c| Some(c.pid()) != p.pid()));
/// # Ok(()) }
/// ```
pub fn active_children() -> Vec<ActiveChild> {
    let records: Vec<_> = children().clone();
    records
        .iter()
        .filter(|r| matches!(r.poll(), Ok(None)))
        .map(|r| ActiveChild {
            pid: r.pid_u32(),
            name: r.name.clone(),
            daemon: r.daemon,
        })
        .collect()
}

/// At normal exit (end of `main`, `std::process::exit`): SIGTERM to every daemon child
/// still running, then SIGKILL to those still there after a grace period, and reap them.
/// Python's `atexit` hook does the first half; SIGKILL makes sure exit never hangs.
extern "C" fn stop_daemons_at_exit() {
    stop_daemons();
}

/// What [`stop_daemons_at_exit`] does; a forked child calls it on its way out too, since it
/// leaves through `_exit`, which skips `atexit` handlers (Python: `util._exit_function`).
pub(crate) fn stop_daemons() {
    // Another thread may hold the lock while the process exits; then skip rather than hang.
    let Ok(records) = CHILDREN.try_lock().map(|c| ours(c).clone()) else {
        return;
    };
    let daemons: Vec<_> = records.into_iter().filter(|r| r.daemon).collect();
    for d in &daemons {
        let _ = d.signal(Signal::TERM);
    }
    let deadline = Instant::now() + DAEMON_GRACE;
    for d in &daemons {
        if !matches!(d.wait(Some(deadline)), Ok(Some(_))) {
            let _ = d.signal(Signal::KILL);
            let _ = d.wait(None);
        }
    }
}

/// The error for methods that need a started child.
pub(crate) fn not_started() -> Error {
    Error::with_message(
        ErrorKind::InvalidInput,
        "process not started: call start first",
    )
}
