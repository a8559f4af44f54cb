//! Who this process is: its name, whether it is a daemon, its parent, and the names its own
//! children get. Python: `current_process()`, `parent_process()`, `Process.name`.

use std::sync::{Mutex, MutexGuard};

use rustix::process::Pid;
use serde::{Deserialize, Serialize};

use super::Sentinel;
use crate::error::{Error, ErrorKind, Result};

/// This process's identity as a child, handed down by its parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) name: String,
    /// Python's `_identity`: the path of child numbers from the main process.
    pub(crate) path: Vec<u32>,
    pub(crate) daemon: bool,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
}

struct State {
    /// `None` in the main process.
    identity: Option<Identity>,
    /// Children created so far (numbers their default names).
    created: u32,
}

static STATE: Mutex<State> = Mutex::new(State {
    identity: None,
    created: 0,
});

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Takes on the identity `parent` gave this child.
pub(crate) fn become_child(identity: Identity) {
    let mut state = state();
    state.identity = Some(identity);
    state.created = 0;
}

/// The next child's default name and identity path: `Process-N`, or `Process-1:N` in a
/// child, as in Python.
pub(crate) fn next_child() -> (String, Vec<u32>) {
    let mut state = state();
    state.created += 1;
    let mut path = state
        .identity
        .as_ref()
        .map(|i| i.path.clone())
        .unwrap_or_default();
    path.push(state.created);
    let numbers: Vec<String> = path.iter().map(u32::to_string).collect();
    (format!("Process-{}", numbers.join(":")), path)
}

/// This process's name: `MainProcess`, or the name its parent gave it.
pub(crate) fn own_name() -> String {
    state()
        .identity
        .as_ref()
        .map_or_else(|| "MainProcess".to_owned(), |i| i.name.clone())
}

/// What [`current_process`] returns: this process's pid, name and daemon flag.
///
/// # Examples
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// assert!(!me.daemon());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentProcess {
    pid: u32,
    name: String,
    daemon: bool,
}

impl CurrentProcess {
    /// This process's id. Python: `current_process().pid` (and `.ident`, the same number).
    ///
    /// # Examples
    /// ```
    /// assert_eq!(multiproc::current_process().pid(), std::process::id());
    /// ```
    #[doc(alias = "ident")]
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `MainProcess` in a program's first process; in a child started by multiproc, the
    /// name of its [`Process`](crate::Process). Python: `current_process().name`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut here, mut there) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::fork(move || {
    ///     there.send(multiproc::current_process().name()).unwrap();
    /// });
    /// p.set_name("worker");
    /// p.start()?;
    /// assert_eq!(here.recv::<String>()?, "worker");
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this process is a daemon child. Python: `current_process().daemon`.
    ///
    /// # Examples
    /// ```
    /// assert!(!multiproc::current_process().daemon());
    /// ```
    pub fn daemon(&self) -> bool {
        self.daemon
    }
}

/// This process. Python: `multiprocessing.current_process()`.
///
/// # Examples
/// ```
/// assert_eq!(multiproc::current_process().name(), "MainProcess");
/// ```
pub fn current_process() -> CurrentProcess {
    let state = state();
    CurrentProcess {
        pid: std::process::id(),
        name: state
            .identity
            .as_ref()
            .map_or_else(|| "MainProcess".to_owned(), |i| i.name.clone()),
        daemon: state.identity.as_ref().is_some_and(|i| i.daemon),
    }
}

/// The process that started this one, when multiproc started it. Python:
/// `multiprocessing.parent_process()`.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// assert!(multiproc::parent_process().is_none()); // the main process has none
/// let (mut here, mut there) = multiproc::Pipe::new()?;
/// let mut p = multiproc::Process::fork(move || {
///     let parent = multiproc::parent_process().unwrap();
///     there.send(&(parent.pid(), parent.name().to_owned())).unwrap();
/// });
/// p.start()?;
/// assert_eq!(here.recv::<(u32, String)>()?, (std::process::id(), "MainProcess".to_owned()));
/// p.join()?;
/// # Ok(()) }
/// ```
pub fn parent_process() -> Option<ParentProcess> {
    let state = state();
    let identity = state.identity.as_ref()?;
    Some(ParentProcess {
        pid: identity.parent_pid,
        name: identity.parent_name.clone(),
    })
}

/// The parent of this child process: see [`parent_process`].
///
/// # Examples
/// ```
/// assert!(multiproc::parent_process().is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentProcess {
    pid: u32,
    name: String,
}

impl ParentProcess {
    /// The parent's process id.
    ///
    /// # Examples
    /// ```
    /// if let Some(parent) = multiproc::parent_process() {
    ///     assert!(parent.pid() > 0);
    /// }
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The parent's name (`MainProcess` for a program's first process).
    ///
    /// # Examples
    /// ```
    /// if let Some(parent) = multiproc::parent_process() {
    ///     assert!(!parent.name().is_empty());
    /// }
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle that becomes ready when the parent exits. Python:
    /// `parent_process().sentinel`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut here, mut there) = multiproc::Pipe::new()?;
    /// let mut p = multiproc::Process::fork(move || {
    ///     let mut sentinel = multiproc::parent_process().unwrap().sentinel().unwrap();
    ///     let ready = multiproc::wait(&mut [&mut sentinel], Some(std::time::Duration::ZERO));
    ///     there.send(&ready.unwrap().is_empty()).unwrap(); // the parent still runs
    /// });
    /// p.start()?;
    /// assert!(here.recv::<bool>()?);
    /// p.join()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Unsupported` without pidfds (Linux before 5.3, other systems); `Eof` if the parent
    /// has already exited; `Io` if the pidfd cannot be opened.
    pub fn sentinel(&self) -> Result<Sentinel> {
        let pid = i32::try_from(self.pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput))?;
        let gone = || Error::with_message(ErrorKind::Eof, "the parent process has exited");
        if crate::sys::process::parent_pid() != Some(pid) {
            return Err(gone());
        }
        let fd = crate::sys::process::pidfd_open(pid)
            .map_err(|e| match e.raw_os_error() {
                Some(code) if code == rustix::io::Errno::SRCH.raw_os_error() => gone(),
                _ => e.into(),
            })?
            .ok_or_else(|| {
                Error::with_message(
                    ErrorKind::Unsupported,
                    "a parent sentinel needs pidfds (Linux 5.3 or later)",
                )
            })?;
        // Opened while `pid` was still our parent: had it died and its pid been reused in
        // between, we would have been reparented, so check again.
        if crate::sys::process::parent_pid() != Some(pid) {
            return Err(gone());
        }
        Ok(Sentinel::new(fd))
    }
}
