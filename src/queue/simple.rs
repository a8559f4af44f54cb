//! `SimpleQueue`: the unbounded queue with the minimal API. Python:
//! `multiprocessing.SimpleQueue`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serializer};

use super::Queue;
use crate::error::Result;

/// An unbounded queue with only `put`, `get`, `empty` and `close`. Python:
/// `multiprocessing.SimpleQueue`. Everything [`Queue`] promises holds.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Process, SimpleQueue};
/// let q = SimpleQueue::new()?;
/// let tx = q.clone();
/// let mut p = Process::fork(move || tx.put(&"done".to_owned()).unwrap());
/// p.start()?;
/// assert_eq!(q.get()?, "done");
/// p.join()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SimpleQueue<T> {
    inner: Queue<T>,
}

impl<T> Clone for SimpleQueue<T> {
    fn clone(&self) -> Self {
        SimpleQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// An empty queue.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// assert!(q.empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::new`].
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            inner: Queue::new()?,
        })
    }

    /// Puts `item`; never blocks. See [`Queue::put`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put(&1)?;
    /// assert_eq!(q.get()?, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::put`].
    pub fn put(&self, item: &T) -> Result<()> {
        self.inner.put(item)
    }

    /// Takes the next item, waiting for one. See [`Queue::get`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put(&"x".to_owned())?;
    /// assert_eq!(q.get()?, "x");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Queue::get`].
    pub fn get(&self) -> Result<T> {
        self.inner.get()
    }

    /// Whether the queue has no item (exact).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put(&1)?;
    /// assert!(!q.empty());
    /// # Ok(()) }
    /// ```
    pub fn empty(&self) -> bool {
        self.inner.empty()
    }

    /// This process will put no more. See [`Queue::close`].
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// q.close();
    /// assert!(q.put(&1).is_err());
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.inner.close();
    }
}

impl<T> crate::wait::Waitable for SimpleQueue<T> {
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
/// an event means items may be there. A `SimpleQueue` has no non-blocking get, so drain it
/// with [`Waitable::is_ready`](crate::Waitable::is_ready) and `get`: take items while
/// `is_ready` says so; its `false` re-arms the fd (mio is edge-triggered: a queue emptied
/// with `get` alone would get no new event). Clones share the fd: register one.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use mio::{Events, Interest, Poll, Token};
/// use multiproc::Waitable;
/// let mut q = multiproc::SimpleQueue::<u8>::new()?;
/// let mut poll = Poll::new()?;
/// poll.registry().register(&mut q, Token(1), Interest::READABLE)?;
/// let mut events = Events::with_capacity(4);
/// for round in 0..2 {
///     q.put(&round)?;
///     q.put(&10)?;
///     poll.poll(&mut events, Some(Duration::from_secs(5)))?;
///     assert_eq!(events.iter().next().unwrap().token(), Token(1));
///     let mut got = Vec::new();
///     while q.is_ready() {
///         got.push(q.get()?);
///     }
///     assert_eq!(got, [round, 10]);
/// }
/// # Ok(()) }
/// ```
impl<T> mio::event::Source for SimpleQueue<T> {
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

impl<T> Serialize for SimpleQueue<T> {
    /// As [`Queue`]'s: only in spawn arguments.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.serialize(serializer)
    }
}

impl<'de, T> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        Ok(SimpleQueue {
            inner: Queue::deserialize(deserializer)?,
        })
    }
}
