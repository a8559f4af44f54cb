//! `wait()` and the `Waitable` trait: one readiness poll over connections, raw fds, queues,
//! listeners and process sentinels. Python: `multiprocessing.connection.wait`.
//!
//! Readiness is level-triggered and means "the next receive would not block": a whole
//! message buffered in user space counts even when the fd has nothing more, an incomplete
//! message on the fd does not, and end of file does (the receive fails at once with `Eof`).
//! Python's `wait` looks only at the fd, so it misses buffered messages (it has none) and
//! reports a half-arrived one.
//!
//! The free function rebuilds a `poll(2)` set on every call, O(n) like Python's; for many
//! objects waited on repeatedly, use a [`WaitSet`](crate::WaitSet), which keeps them
//! registered and costs O(ready) per wait.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// Something [`wait`] and [`WaitSet`](crate::WaitSet) can wait on: an fd that turns
/// readable when there may be progress, and a non-blocking check of whether there is.
///
/// Implemented for [`Connection`], [`Sentinel`](crate::Sentinel), [`Listener`](crate::Listener),
/// the queues ([`Queue`](crate::Queue), [`SimpleQueue`](crate::SimpleQueue),
/// [`JoinableQueue`](crate::JoinableQueue)), raw fds ([`BorrowedFd`]), and for `Box` and
/// `&mut` of any `Waitable`, so a slice may mix kinds as `&mut dyn Waitable`.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Pipe, Waitable};
/// let (mut a, mut b) = Pipe::new()?;
/// assert!(!b.is_ready());
/// a.send_bytes(b"x")?;
/// assert!(b.is_ready());
/// # Ok(()) }
/// ```
pub trait Waitable {
    /// The fd whose readability means there may be progress.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::os::fd::AsRawFd;
    /// use multiproc::{Pipe, Waitable};
    /// let (_a, mut b) = Pipe::new()?;
    /// // A connection waits on its own fd.
    /// assert_eq!(b.wait_fd()?.as_raw_fd(), b.as_raw_fd());
    /// b.close();
    /// assert!(b.wait_fd().unwrap_err().is_closed());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed` if the object was closed.
    fn wait_fd(&self) -> Result<BorrowedFd<'_>>;

    /// Whether the next receive would return without blocking, found out without blocking
    /// (a connection reads what is on its fd into its buffer to tell).
    ///
    /// # Examples
    /// End of file counts as ready: the receive fails at once.
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Pipe, Waitable};
    /// let (a, mut b) = Pipe::new()?;
    /// assert!(!b.is_ready());
    /// drop(a);
    /// assert!(b.is_ready());
    /// assert!(b.recv_bytes().unwrap_err().is_eof());
    /// # Ok(()) }
    /// ```
    fn is_ready(&mut self) -> bool;

    /// Whether the object is ready from what it holds in user space alone, with no syscall.
    /// The default says no.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::os::fd::AsFd;
    /// use multiproc::{Pipe, Waitable};
    /// let (mut a, mut b) = Pipe::new()?;
    /// a.send_bytes(b"x")?;
    /// assert!(!b.is_ready_buffered()); // the message is still on the fd
    /// assert!(b.is_ready()); // reads it into b's buffer
    /// assert!(b.is_ready_buffered());
    /// // A raw fd holds nothing in user space: the default.
    /// assert!(!b.as_fd().is_ready_buffered());
    /// # Ok(()) }
    /// ```
    fn is_ready_buffered(&self) -> bool {
        false
    }
}

impl Waitable for Connection {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        if self.is_closed() {
            return Err(Error::new(ErrorKind::Closed));
        }
        Ok(self.as_fd())
    }

    fn is_ready(&mut self) -> bool {
        self.ready_now()
    }

    fn is_ready_buffered(&self) -> bool {
        self.ready_buffered()
    }
}

impl Waitable for BorrowedFd<'_> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.as_fd())
    }

    /// A raw fd is ready when `poll(2)` says it is readable (or hung up).
    fn is_ready(&mut self) -> bool {
        sys::fd::poll_now(*self, PollFlags::IN).unwrap_or(true)
    }
}

impl<T: Waitable + ?Sized> Waitable for Box<T> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        (**self).wait_fd()
    }

    fn is_ready(&mut self) -> bool {
        (**self).is_ready()
    }

    fn is_ready_buffered(&self) -> bool {
        (**self).is_ready_buffered()
    }
}

impl<T: Waitable + ?Sized> Waitable for &mut T {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        (**self).wait_fd()
    }

    fn is_ready(&mut self) -> bool {
        (**self).is_ready()
    }

    fn is_ready_buffered(&self) -> bool {
        (**self).is_ready_buffered()
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes, and returns the
/// indices of the ready ones in order. Python: `multiprocessing.connection.wait(objects,
/// timeout)`, which returns the objects themselves.
///
/// `None` waits as long as it takes; `Some(Duration::ZERO)` just checks. An empty result
/// means the timeout passed.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use multiproc::{Pipe, wait};
///
/// let (mut a1, b1) = Pipe::new()?;
/// let (mut a2, b2) = Pipe::new()?;
/// let mut readers = [b1, b2];
/// assert!(wait(&mut readers, Some(Duration::ZERO))?.is_empty());
/// a2.send_bytes(b"second")?;
/// assert_eq!(wait(&mut readers, None)?, [1]);
/// a1.send_bytes(b"first")?;
/// assert_eq!(wait(&mut readers, None)?, [0, 1]);
/// # Ok(()) }
/// ```
///
/// Mixing kinds:
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::os::fd::AsFd;
/// use std::time::Duration;
/// use multiproc::{Pipe, Waitable, wait};
///
/// let (mut a, mut b) = Pipe::new()?;
/// let (r, mut w) = Pipe::half_duplex()?;
/// w.send_bytes(b"x")?;
/// let mut raw = r.as_fd();
/// let ready = wait(&mut [&mut b as &mut dyn Waitable, &mut raw], Some(Duration::from_secs(5)))?;
/// assert_eq!(ready, [1]);
/// # let _ = &mut a;
/// # Ok(()) }
/// ```
///
/// # Errors
/// `Closed` if an object was closed; `Io` if `poll(2)` fails; `InvalidInput` for no objects
/// and no timeout (`None`, or one too large to reach), a wait that could never end (Python's
/// blocks forever).
pub fn wait<W: Waitable>(objects: &mut [W], timeout: Option<Duration>) -> Result<Vec<usize>> {
    // A timeout too large for an Instant is as good as none.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    if objects.is_empty() && deadline.is_none() {
        return Err(waits_forever());
    }
    let mut ready: Vec<usize> = (0..objects.len())
        .filter(|&i| objects[i].is_ready_buffered())
        .collect();
    loop {
        // Already something to report: just collect what else is ready now.
        let until = if ready.is_empty() {
            deadline
        } else {
            Some(Instant::now())
        };
        let fired: Vec<usize> = {
            let mut fds = Vec::with_capacity(objects.len());
            for o in objects.iter() {
                fds.push(PollFd::from_borrowed_fd(o.wait_fd()?, PollFlags::IN));
            }
            sys::fd::poll_until(&mut fds, until)?;
            fds.iter()
                .enumerate()
                .filter(|(_, fd)| !fd.revents().is_empty())
                .map(|(i, _)| i)
                .collect()
        };
        for i in fired {
            if !ready.contains(&i) && objects[i].is_ready() {
                ready.push(i);
            }
        }
        if !ready.is_empty() || until.is_some_and(|d| d <= Instant::now()) {
            ready.sort_unstable();
            return Ok(ready);
        }
    }
}

/// The error for a wait on nothing without a deadline: nothing could ever end it.
pub(crate) fn waits_forever() -> crate::Error {
    crate::Error::with_message(
        crate::ErrorKind::InvalidInput,
        "a wait on no objects without a timeout would never return",
    )
}

/// The error for registering an fd that an epoll set holds already (`EEXIST`): two handles
/// of one object (clones of a queue) share their readiness fd.
pub(crate) fn registered_twice(e: std::io::Error) -> crate::Error {
    if e.raw_os_error() == Some(rustix::io::Errno::EXIST.raw_os_error()) {
        crate::Error::with_message(
            crate::ErrorKind::InvalidInput,
            "this object's fd is registered here already (clones of a queue share one fd)",
        )
    } else {
        e.into()
    }
}
