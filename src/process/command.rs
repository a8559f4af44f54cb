//! The command start method: any executable, with Connections passed as inherited fds.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};

/// The environment variable listing the passed fd numbers, comma-separated, in the order
/// they were passed.
pub(crate) const FDS_ENV: &str = "MULTIPROC_FDS";

/// A program to run as a child [`Process`](crate::Process), with connections passed to it.
/// The builder methods are `std::process::Command`'s; [`pass`](Command::pass) adds a
/// connection, which the child finds open at the fd number `pass` returns (also listed in
/// its `MULTIPROC_FDS` environment variable). Every other fd but stdin, stdout and stderr is
/// closed in the child.
///
/// A Python child wraps the fd with `multiprocessing.connection.Connection(fd)` and speaks
/// to us with `send_bytes`/`recv_bytes`.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Command, Pipe, Process};
///
/// let (mut ours, theirs) = Pipe::new()?;
/// let mut cmd = Command::new("sh");
/// let fd = cmd.pass(theirs)?;
/// // The child writes a 4-byte big-endian length and the payload: one CPython frame.
/// // (`>&N` works for N up to 9 in dash; bash and Python take any fd number.)
/// cmd.arg("-c").arg(format!("printf '\\000\\000\\000\\002hi' >&{fd}"));
/// let mut p = Process::command(cmd);
/// p.start()?;
/// assert_eq!(ours.recv_bytes()?, b"hi");
/// assert_eq!(p.join()?, 0);
/// # Ok(()) }
/// ```
pub struct Command {
    pub(crate) inner: std::process::Command,
    pub(crate) passed: Vec<OwnedFd>,
}

impl Command {
    /// A command running `program` (looked up in `PATH` if it has no slash).
    ///
    /// # Examples
    /// ```
    /// let cmd = multiproc::Command::new("true");
    /// assert_eq!(cmd.get_program(), "true");
    /// ```
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            inner: std::process::Command::new(program),
            passed: Vec::new(),
        }
    }

    /// The program this command runs.
    ///
    /// # Examples
    /// ```
    /// assert_eq!(multiproc::Command::new("python3").get_program(), "python3");
    /// ```
    pub fn get_program(&self) -> &OsStr {
        self.inner.get_program()
    }

    /// Adds an argument.
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("echo");
    /// cmd.arg("hello");
    /// ```
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Command {
        self.inner.arg(arg);
        self
    }

    /// Adds arguments.
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("echo");
    /// cmd.args(["a", "b"]);
    /// ```
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Sets an environment variable for the child.
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("env");
    /// cmd.env("PYTHONUNBUFFERED", "1");
    /// ```
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env(key, value);
        self
    }

    /// Removes an environment variable for the child.
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("env");
    /// cmd.env_remove("HOME");
    /// ```
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Command {
        self.inner.env_remove(key);
        self
    }

    /// Sets the child's working directory.
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("ls");
    /// cmd.current_dir("/");
    /// ```
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Command {
        self.inner.current_dir(dir);
        self
    }

    /// Sets the child's stdin (inherited by default). Use a file or `Stdio::null()`:
    /// with `Stdio::piped()` this process's end is closed at start, so pass a connection
    /// instead.
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("cat");
    /// cmd.stdin(std::process::Stdio::null());
    /// ```
    pub fn stdin(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdin(cfg);
        self
    }

    /// Sets the child's stdout (inherited by default); see [`stdin`](Command::stdin).
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("echo");
    /// cmd.stdout(std::process::Stdio::null());
    /// ```
    pub fn stdout(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stdout(cfg);
        self
    }

    /// Sets the child's stderr (inherited by default); see [`stdin`](Command::stdin).
    ///
    /// # Examples
    /// ```
    /// let mut cmd = multiproc::Command::new("ls");
    /// cmd.stderr(std::process::Stdio::null());
    /// ```
    pub fn stderr(&mut self, cfg: impl Into<Stdio>) -> &mut Command {
        self.inner.stderr(cfg);
        self
    }

    /// Passes `conn` to the child, which finds it open at the returned fd number. This
    /// process's copy is closed once the child has started.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_ours, theirs) = multiproc::Pipe::new()?;
    /// let mut cmd = multiproc::Command::new("true");
    /// let fd = cmd.pass(theirs)?;
    /// assert!(fd > 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed` if `conn` was closed; `InvalidInput` if it holds received bytes not yet
    /// returned or sends not yet written (they would be lost).
    pub fn pass(&mut self, conn: Connection) -> Result<RawFd> {
        if conn.is_closed() {
            return Err(Error::new(ErrorKind::Closed));
        }
        if conn.buffered_len() > 0 || conn.pending_send_len() > 0 {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "cannot pass a Connection holding unread or unsent bytes: they would be lost",
            ));
        }
        Ok(self.pass_fd(OwnedFd::from(conn)))
    }

    /// Passes any fd to the child, which finds it open at the returned number.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> std::io::Result<()> {
    /// let file = std::fs::File::open("/dev/null")?;
    /// let mut cmd = multiproc::Command::new("true");
    /// let fd = cmd.pass_fd(file);
    /// assert!(fd > 2);
    /// # Ok(()) }
    /// ```
    pub fn pass_fd(&mut self, fd: impl Into<OwnedFd>) -> RawFd {
        let fd = fd.into();
        let raw = fd.as_raw_fd();
        self.passed.push(fd);
        raw
    }

    /// Starts the child with the passed fds (plus `extra_keep`) open in it.
    pub(crate) fn spawn(
        &mut self,
        extra_keep: &[RawFd],
        daemon: bool,
    ) -> Result<std::process::Child> {
        let mut keep: Vec<RawFd> = self.passed.iter().map(AsRawFd::as_raw_fd).collect();
        let listed: Vec<String> = keep.iter().map(RawFd::to_string).collect();
        self.inner.env(FDS_ENV, listed.join(","));
        self.inner.env_remove(super::spawn::ENV);
        keep.extend_from_slice(extra_keep);
        crate::sys::process::spawn(&mut self.inner, &keep, daemon).map_err(|e| {
            // As Python's `FileNotFoundError: [Errno 2] ... 'prog'`: say which program.
            let message = format!("cannot run {:?}", self.inner.get_program());
            Error::with_source(ErrorKind::Io, message, e)
        })
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Command")
            .field("command", &self.inner)
            .field("passed", &self.passed)
            .finish()
    }
}
