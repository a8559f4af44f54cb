//! `Sentinel`: a handle that becomes ready when a process exits.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::Result;

/// Becomes ready (readable) when its process exits, and stays ready. Python:
/// `Process.sentinel`. Works in [`wait`](fn@crate::wait), a [`WaitSet`](crate::WaitSet), a
/// [`Reactor`](crate::Reactor) (see `Reactor::when_ready`) and a user's own `poll`/mio loop,
/// mixed with connections.
///
/// On Linux it is a pidfd, so it can never report another process that reused the pid.
/// Where the kernel has no pidfds, it is the read end of a pipe whose write end only the
/// child holds: it then becomes ready when the child and every process the child handed that
/// end on to (its own forked children) have exited. A spawned child holds it close-on-exec,
/// so that programs it runs (with std's `Command`, which passes on every other fd) cannot
/// keep it from turning ready after the child's death; the price is that a spawned child
/// that replaces itself with another program (`exec`) makes it ready at that exec, while
/// the process goes on (`join` still waits for the real exit). Waiting on it does not reap the child:
/// call [`Process::join`](crate::Process::join) (which then returns at once) to collect the
/// exit code.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use multiproc::{Pipe, Process, Waitable, wait};
///
/// let (mut conn, mut child_end) = Pipe::new()?;
/// let mut p = Process::fork(move || child_end.send_bytes(b"bye").unwrap());
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

impl Sentinel {
    pub(crate) fn new(fd: OwnedFd) -> Sentinel {
        Sentinel { fd }
    }
}

impl AsFd for Sentinel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<Sentinel> for OwnedFd {
    /// The underlying fd (a pidfd on Linux).
    fn from(sentinel: Sentinel) -> OwnedFd {
        sentinel.fd
    }
}

impl crate::wait::Waitable for Sentinel {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.fd.as_fd())
    }

    fn is_ready(&mut self) -> bool {
        crate::sys::fd::poll_now(self.fd.as_fd(), rustix::event::PollFlags::IN).unwrap_or(true)
    }
}

impl mio::event::Source for Sentinel {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        mio::unix::SourceFd(&self.fd.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        mio::unix::SourceFd(&self.fd.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        mio::unix::SourceFd(&self.fd.as_raw_fd()).deregister(registry)
    }
}
