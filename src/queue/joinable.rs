//! `JoinableQueue`: a queue whose producers can wait until every item was processed.
//! Python: `multiprocessing.JoinableQueue`.

use std::ops::Deref;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};

use super::{Queue, deadline_after};
use crate::error::{Error, ErrorKind, Result};

/// A [`Queue`] that also counts unfinished items: every `put` adds one, every
/// [`task_done`](Self::task_done) takes one off, and [`join`](Self::join) waits for zero.
/// Python: `multiprocessing.JoinableQueue`. Every `Queue` method is available through
/// `Deref`. Every item put counts, however it is put: `put`, `put_timeout`, `try_put`,
/// [`put_bytes`](Queue::put_bytes) and [`put_bytes_timeout`](Queue::put_bytes_timeout), here
/// or through the `&Queue` this derefs to (a function taking `&Queue` may be handed a
/// `&JoinableQueue`), in any process. A put that fails counts nothing.
///
/// A consumer killed after taking an item, before its `task_done`, leaves the item counted
/// for ever, as in Python: `join` then waits until someone calls `task_done` for it. So does
/// a `get` that failed with `Decode` (the item was taken): call `task_done` for it too.
///
/// A producer killed between counting an item and publishing it leaves the count one too
/// high, so `join` would wait for an item that never comes: give `join_timeout` a deadline
/// where producers may be killed.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{JoinableQueue, Process};
/// let q = JoinableQueue::new()?;
/// for job in 0..3u32 {
///     q.put(&job)?;
/// }
/// let worker = q.clone();
/// let mut p = Process::fork(move || {
///     for _ in 0..3 {
///         let _job: u32 = worker.get().unwrap();
///         worker.task_done().unwrap();
///     }
/// });
/// p.start()?;
/// q.join()?; // returns once the worker marked all three done
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct JoinableQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;

    fn deref(&self) -> &Queue<T> {
        &self.inner
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// An unbounded joinable queue.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// q.join()?; // nothing put: returns at once
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn new() -> Result<JoinableQueue<T>> {
        JoinableQueue::bounded(0)
    }

    /// A joinable queue of at most `maxsize` items (0: unbounded).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::bounded(4)?;
    /// assert_eq!(q.maxsize(), Some(4));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn bounded(maxsize: usize) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            inner: Queue::with_maxsize(maxsize as u64, true)?,
        })
    }

    /// Puts `item` and counts it unfinished. See [`Queue::put`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(&1)?;
    /// assert_eq!(q.get()?, 1);
    /// q.task_done()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::put`].
    pub fn put(&self, item: &T) -> Result<()> {
        self.inner.put(item)
    }

    /// Puts `item`, waiting at most `timeout` for room; counts it. See
    /// [`Queue::put_timeout`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::bounded(1)?;
    /// q.put_timeout(&1, std::time::Duration::from_millis(1))?;
    /// assert!(q.put_timeout(&2, std::time::Duration::from_millis(1)).is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::put_timeout`].
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        self.inner.put_timeout(item, timeout)
    }

    /// Puts `item` if there is room now; counts it. See [`Queue::try_put`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::bounded(1)?;
    /// q.try_put(&1)?;
    /// assert!(q.try_put(&2).is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::try_put`].
    pub fn try_put(&self, item: &T) -> Result<()> {
        self.inner.try_put(item)
    }

    /// Marks one item taken with `get` as processed. Python: `task_done()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::<u8>::new()?;
    /// let err = q.task_done().unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::InvalidInput);
    /// assert_eq!(err.to_string(), "task_done() called too many times"); // CPython's words
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if called more times than items were put (Python's `ValueError`).
    pub fn task_done(&self) -> Result<()> {
        self.inner.shared.task_done()
    }

    /// Waits until every item put has been marked done. Python: `join()`. As with Python
    /// 3.13's `queue.Queue`, items discarded by [`shutdown(true)`](Queue::shutdown) count
    /// as done; a plain shutdown changes nothing here.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(&1)?;
    /// q.get()?;
    /// q.task_done()?;
    /// q.join()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// None today; the `Result` leaves room for failures of the wait itself.
    pub fn join(&self) -> Result<()> {
        self.inner.shared.join(None);
        Ok(())
    }

    /// Waits at most `timeout` for every item put to be marked done.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(&1)?;
    /// let err = q.join_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert!(err.is_timeout());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Timeout` if items are still unfinished at the deadline.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        if self.inner.shared.join(deadline_after(timeout)) {
            Ok(())
        } else {
            Err(Error::new(ErrorKind::Timeout))
        }
    }
}

impl<T> crate::wait::Waitable for JoinableQueue<T> {
    fn wait_fd(&self) -> Result<std::os::fd::BorrowedFd<'_>> {
        self.inner.wait_fd()
    }

    fn is_ready(&mut self) -> bool {
        self.inner.is_ready()
    }

    fn is_ready_buffered(&self) -> bool {
        self.inner.is_ready_buffered()
    }
}

/// Registers the queue's readiness fd in a user's own mio `Poll`, as [`Queue`]'s impl does:
/// an event means items may be there. Take them until the queue says it is empty (`Empty`
/// from a non-blocking get, which also re-arms the fd). Clones share the fd: register one.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use mio::{Events, Interest, Poll, Token};
/// let mut q = multiproc::JoinableQueue::<u8>::new()?;
/// let mut poll = Poll::new()?;
/// poll.registry().register(&mut q, Token(1), Interest::READABLE)?;
/// let mut events = Events::with_capacity(4);
/// for round in 0..2 {
///     q.put(&round)?;
///     poll.poll(&mut events, Some(Duration::from_secs(5)))?;
///     assert_eq!(events.iter().next().unwrap().token(), Token(1));
///     assert_eq!(q.try_get()?, round);
///     assert_eq!(q.try_get().unwrap_err().kind(), multiproc::ErrorKind::Empty);
///     q.task_done()?;
/// }
/// # Ok(()) }
/// ```
impl<T> mio::event::Source for JoinableQueue<T> {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        self.inner.register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        self.inner.reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        self.inner.deregister(registry)
    }
}

impl<T> Serialize for JoinableQueue<T> {
    /// As [`Queue`]'s: only in spawn arguments.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for JoinableQueue<T> {
    /// Only in a spawned child, from its arguments; a plain `Queue` or `SimpleQueue` passed
    /// there is refused (it counts nothing for `join`).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let inner = Queue::deserialize(deserializer)?;
        if !inner.shared.is_joinable() {
            return Err(serde::de::Error::custom(
                "a Queue or SimpleQueue was passed where a JoinableQueue is expected",
            ));
        }
        Ok(JoinableQueue { inner })
    }
}
