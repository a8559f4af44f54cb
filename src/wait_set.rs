//! `WaitSet`: a persistent set of waitables on one mio `Poll`, level-triggered on top of
//! mio's edge-triggered events.
//!
//! Each object is registered once (epoll under mio on Linux), so a wait costs O(ready), not
//! O(registered) as `poll(2)` and Python's `wait` do. mio reports an edge: "this fd became
//! readable". We keep every key that had an edge on a pending list, and each `wait` asks
//! those objects [`Waitable::is_ready`]; an object that says no has drained its fd to
//! `EAGAIN`, so the next byte to arrive raises a new edge, and it leaves the list. An object
//! that stays ready stays on the list and is reported again by the next `wait`, as Python's
//! `wait` would, until it is drained or removed.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::error::Result;
use crate::wait::Waitable;

#[derive(Debug)]
struct Slot<T> {
    item: T,
    generation: u64,
    /// On the pending list (had an edge, or was added, and has not been found idle since).
    pending: bool,
}

/// Names one object in a [`WaitSet`]. Keys are never reused by the set that made them: a
/// key whose object was removed finds nothing, even after new objects take its place.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let mut set = multiproc::WaitSet::new()?;
/// let (_a, rx) = multiproc::Pipe::new()?;
/// let old = set.insert(rx)?;
/// set.remove(old);
/// let (_b, rx) = multiproc::Pipe::new()?;
/// let new = set.insert(rx)?;
/// assert_ne!(old, new);
/// assert!(set.get(old).is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    index: usize,
    generation: u64,
}

impl Key {
    /// A small number unique among the set's current objects (slots are reused, so an
    /// index alone may later name another object; the `Key` never does). Handy to index a
    /// table of your own.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut set = multiproc::WaitSet::new()?;
    /// let (_a, rx) = multiproc::Pipe::new()?;
    /// assert_eq!(set.insert(rx)?.index(), 0);
    /// # Ok(()) }
    /// ```
    pub fn index(self) -> usize {
        self.index
    }
}

/// A set of [`Waitable`]s to wait on repeatedly; each is identified by the key `insert`
/// returned. Objects can be added and removed at any time, also between handling the keys
/// one `wait` returned.
///
/// Unlike ipc-channel's `IpcReceiverSet`, removal is supported. Keys are never reused, so
/// removing the object a later key in the same batch names is harmless: `get_mut` returns
/// `None` for it, even if a new object has taken its slot.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use multiproc::{Pipe, WaitSet};
///
/// let mut set = WaitSet::new()?;
/// let mut senders = Vec::new();
/// for _ in 0..3 {
///     let (tx, rx) = Pipe::new()?;
///     set.insert(rx)?;
///     senders.push(tx);
/// }
/// senders[2].send(&"hi")?;
/// let ready = set.wait(Some(Duration::from_secs(5)))?;
/// assert_eq!(ready.len(), 1);
/// assert_eq!(ready[0].index(), 2);
/// let msg: String = set.get_mut(ready[0]).unwrap().recv()?;
/// assert_eq!(msg, "hi");
/// assert!(set.wait(Some(Duration::ZERO))?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct WaitSet<T> {
    poll: Poll,
    events: Events,
    slots: Slab<Slot<T>>,
    /// Slot indices that may be ready.
    pending: Vec<usize>,
    generation: u64,
}

impl<T: Waitable> WaitSet<T> {
    /// An empty set.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let set = multiproc::WaitSet::<multiproc::Connection>::new()?;
    /// assert!(set.is_empty());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` if the system refuses an epoll instance (out of fds).
    pub fn new() -> Result<WaitSet<T>> {
        Ok(WaitSet {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            slots: Slab::new(),
            pending: Vec::new(),
            generation: 0,
        })
    }

    /// Adds `item` and returns its key. Whatever it already holds counts: a message already
    /// buffered or on the fd is reported by the next `wait`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut tx, rx) = multiproc::Pipe::new()?;
    /// tx.send_bytes(b"before insert")?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// let key = set.insert(rx)?;
    /// assert_eq!(set.wait(None)?, [key]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed` if `item` was closed; `InvalidInput` if its fd is in the set already (two
    /// handles of one queue share one); `Io` if registration fails.
    pub fn insert(&mut self, item: T) -> Result<Key> {
        let entry = self.slots.vacant_entry();
        let index = entry.key();
        let raw = item.wait_fd()?.as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&raw), Token(index), Interest::READABLE)
            .map_err(crate::wait::registered_twice)?;
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        entry.insert(Slot {
            item,
            generation,
            pending: true,
        });
        self.pending.push(index);
        Ok(Key { index, generation })
    }

    fn slot(&self, key: Key) -> Option<&Slot<T>> {
        self.slots
            .get(key.index)
            .filter(|s| s.generation == key.generation)
    }

    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot<T>> {
        self.slots
            .get_mut(key.index)
            .filter(|s| s.generation == key.generation)
    }

    /// Removes the object under `key` and hands it back (`None` if there is none).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_tx, rx) = multiproc::Pipe::new()?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// let key = set.insert(rx)?;
    /// assert!(set.remove(key).is_some());
    /// assert!(set.remove(key).is_none());
    /// # Ok(()) }
    /// ```
    pub fn remove(&mut self, key: Key) -> Option<T> {
        self.slot(key)?;
        let slot = self.slots.remove(key.index);
        // A closed object's fd left epoll when its file was closed, unless a copy of it
        // lives on (a `dup`, a forked child's): then its registration stays until that
        // goes too, and cannot be removed by number (the number may name another file
        // now). Its events then name this slot's index; `wait` checks whatever holds the
        // slot (`is_ready`), so they cost a look, never a false report.
        if let Ok(fd) = slot.item.wait_fd() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        if slot.pending {
            // The slot may be reused at once; it must not stand on the list twice.
            self.pending.retain(|&i| i != key.index);
        }
        Some(slot.item)
    }

    /// The object under `key`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_tx, rx) = multiproc::Pipe::new()?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// let key = set.insert(rx)?;
    /// assert!(set.get(key).unwrap().readable());
    /// # Ok(()) }
    /// ```
    pub fn get(&self, key: Key) -> Option<&T> {
        self.slot(key).map(|s| &s.item)
    }

    /// The object under `key`, to receive from.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut tx, rx) = multiproc::Pipe::new()?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// let key = set.insert(rx)?;
    /// tx.send(&5)?;
    /// assert_eq!(set.get_mut(key).unwrap().recv::<i32>()?, 5);
    /// # Ok(()) }
    /// ```
    pub fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        self.slot_mut(key).map(|s| &mut s.item)
    }

    /// How many objects the set holds.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_tx, rx) = multiproc::Pipe::new()?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// set.insert(rx)?;
    /// assert_eq!(set.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the set is empty.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// assert!(multiproc::WaitSet::<multiproc::Connection>::new()?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Waits until at least one object is ready or `timeout` passes; returns the keys of the
    /// ready objects, in ascending order of [`Key::index`] (empty: timed out). `None` waits as long as it
    /// takes, `Some(Duration::ZERO)` just checks.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (tx, rx) = multiproc::Pipe::new()?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// let key = set.insert(rx)?;
    /// assert!(set.wait(Some(Duration::from_millis(1)))?.is_empty());
    /// drop(tx); // EOF makes it ready: recv fails at once
    /// assert_eq!(set.wait(None)?, [key]);
    /// assert!(set.get_mut(key).unwrap().recv_bytes().unwrap_err().is_eof());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` if `epoll_wait` fails; `InvalidInput` if the set is empty and there is no
    /// timeout (`None`, or one too large to reach): nothing could ever end that wait.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<Vec<Key>> {
        let mut ready = Vec::new();
        self.wait_into(&mut ready, timeout)?;
        Ok(ready)
    }

    /// Like [`wait`](Self::wait), filling `ready` (cleared first) to reuse its allocation.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (mut tx, rx) = multiproc::Pipe::new()?;
    /// let mut set = multiproc::WaitSet::new()?;
    /// let key = set.insert(rx)?;
    /// let mut ready = Vec::new();
    /// tx.send_bytes(b"x")?;
    /// set.wait_into(&mut ready, Some(Duration::from_secs(5)))?;
    /// assert_eq!(ready, [key]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    pub fn wait_into(&mut self, ready: &mut Vec<Key>, timeout: Option<Duration>) -> Result<()> {
        ready.clear();
        // A timeout too large for an Instant is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        if self.slots.is_empty() && deadline.is_none() {
            return Err(crate::wait::waits_forever());
        }
        loop {
            let wait_for = if self.pending.is_empty() {
                deadline.map(|d| d.saturating_duration_since(Instant::now()))
            } else {
                Some(Duration::ZERO)
            };
            match self.poll.poll(&mut self.events, wait_for) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
            for event in self.events.iter() {
                if let Some(slot) = self.slots.get_mut(event.token().0) {
                    if !slot.pending {
                        slot.pending = true;
                        self.pending.push(event.token().0);
                    }
                }
            }
            let slots = &mut self.slots;
            self.pending.retain(|&index| match slots.get_mut(index) {
                Some(slot) if slot.pending => {
                    slot.pending = slot.item.is_ready();
                    if slot.pending {
                        ready.push(Key {
                            index,
                            generation: slot.generation,
                        });
                    }
                    slot.pending
                }
                _ => false,
            });
            if !ready.is_empty() || deadline.is_some_and(|d| d <= Instant::now()) {
                ready.sort_unstable();
                return Ok(());
            }
        }
    }
}
