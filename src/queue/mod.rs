//! `Queue`, `SimpleQueue`, `JoinableQueue`: cross-process multi-producer multi-consumer
//! queues in shared memory. Python: `multiprocessing.Queue` and friends.
//!
//! What a queue promises is documented on [`Queue`], the public face of this module.
//!
//! Linux only for now (memfd, futex, eventfd, membarrier).

mod joinable;
mod layout;
mod shared;
mod simple;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::Codec;
use crate::codec::cbor::Cbor;
use crate::codec::cbor_string;
use crate::error::{Error, ErrorKind, Result};
pub use joinable::JoinableQueue;
pub(crate) use shared::release_logs_at_exit;
use shared::{Payload, Shared};
pub use simple::SimpleQueue;

/// A multi-producer multi-consumer queue between processes. Python:
/// `multiprocessing.Queue`.
///
/// A queue lives in one anonymous shared file. Every producer process appends to a ring of
/// its own; consumers take from any ring with a compare-and-swap (docs/design.md in the
/// repository says why that is crash-safe). So, unlike Python's:
///
/// - **`put` is synchronous and final.** The item is encoded in the caller (an encode error
///   is returned to it) and is in shared memory when `put` returns: the producer may exit at
///   once and the item is still delivered. There is no feeder thread, nothing to flush or
///   join at exit, and no exit deadlock.
/// - **An unbounded queue never blocks `put`**, with or without a consumer: memory grows with
///   what is queued (up to 1 GiB or 16 million items per producer process, then `Full`) and
///   shrinks as it drains, down to 4 MiB kept per producer process for reuse (given back
///   when it exits or closes and its items are taken; for a producer that died without
///   dropping its handles, killed or ended by `exit`, once its items are taken and another
///   process starts putting). A producer that stops putting does not keep the memory of its
///   peak: a consumer that finds the queue empty gives it back, 16 MiB per look (a few
///   milliseconds of that `get`, `try_get` or readiness check). A producer more than 4 MiB
///   ahead of consumers that are taking its items gives up the CPU to them before it takes
///   fresh memory, where other tasks want the CPU: at most once per 64 KiB of items, and its
///   yields stop once they have taken 2 ms (one yield lasts as long as the scheduler runs the
///   others). It never waits for a consumer.
/// - **A process killed inside `put` or `get` blocks no one.** Items are never torn or
///   interleaved; at most the killed process's own in-flight item is lost; a bounded queue's
///   room comes back once a putter notices the dead producer. A put wakes one sleeping
///   `get` (and a get one sleeping `put`), not every one: a consumer killed between being
///   woken and taking its item leaves it to the next put's wake-up or to another sleeper's
///   periodic look, at most 100 ms later. While an item of 64 KiB or more is copied in,
///   one waiting `get` spins for it rather than sleeping; a producer killed in that copy
///   costs that `get` at most 1 ms of spinning.
/// - **`qsize`, `empty` and `full` are exact** while no process dies in the middle of an
///   operation. (Exact as of the moment each producer's share is read: `qsize` adds the
///   producers' shares one after another, so while other processes put and get it is the
///   size of a moment no longer than the call; a bounded queue never reports more than its
///   bound.) A producer killed between reserving room in a bounded queue and publishing
///   its item keeps that room counted until a putter finds the queue full and checks; a
///   consumer killed after taking an item has taken it (`qsize` counts it gone).
/// - **Memory written by something else is an error, not a hang.** Any process that can map
///   the queue's file can write it. A frame header no producer wrote makes `get` fail with
///   `BadMessageLength`, once: the items queued in that producer's ring are discarded (no
///   frame after a corrupt one can be found), counted done for `JoinableQueue::join`, and
///   the queue goes on.
/// - **A queue is waitable**: [`wait`](fn@crate::wait), [`WaitSet`](crate::WaitSet), the
///   [`Reactor`](crate::Reactor) (`when_ready`) and your own mio loop see it turn ready when
///   an item arrives. With several consumers, one may be told "ready" and then find another
///   took the item: `try_get` then says `Empty`.
///
/// Items keep their order per producer (FIFO per producer process, and per thread within
/// it); between producers there is no global order, as with several Python feeders. A
/// consumer takes one producer's waiting items in runs of up to 64 KiB (about 900 items of
/// 64 bytes; one item of 64 KiB or more) before it turns to the next producer's, so that
/// consumers working side by side keep to different producers. Between two of its runs on
/// one producer's items, a consumer takes at most one run from each other producer.
///
/// Handles are cheap to clone and usable from many threads. Pass a queue to a child by
/// capturing it ([`Process::fork`](crate::Process::fork)) or inside the arguments of
/// [`Process::spawn`](crate::Process::spawn).
///
/// Limits: items up to 512 MiB; per producer process at most 1 GiB and 16 million items
/// waiting; at most 128 producer processes with items waiting at once (a 129th process's
/// `put` is `Unsupported` until a log is drained and let go of). Each queue maps 128 GiB of
/// address space (sparse: memory is used only as items are), so a process whose virtual
/// memory is capped (`ulimit -v`) below that cannot make one. Every process using a queue
/// must be in one pid namespace: whether a producer lives is told by its pid (and
/// `/proc`), and one in another namespace can be taken for dead, its drained ring given to
/// the next process that starts putting while it still writes there (their items then
/// overwrite each other). Sharing a queue means trusting the processes it is shared with
/// not to deny service (they can fill it or shut it down), but nothing one writes into its
/// memory or does to its files makes another crash: the file is sealed against shrinking
/// and what is read from it is checked.
///
/// Items are any serde type, encoded as CBOR. A value that is one byte or text string
/// (`serde_bytes::ByteBuf`, `String`, or either inside an `Option` or a newtype) skips the
/// encoder: its bytes are copied once into the queue and once out, into the value `get`
/// returns. [`put_bytes`](Self::put_bytes) and [`get_bytes_into`](Self::get_bytes_into) move
/// raw bytes without a codec, into a buffer you reuse: the fastest way to move bytes (as
/// `send_bytes` is next to `send` on a connection).
///
/// Linux only for now (memfd, futex, eventfd, membarrier).
///
/// # Examples
/// The tutorial's producer and consumer:
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Process, Queue};
///
/// let queue: Queue<u32> = Queue::new()?;
/// let producer = queue.clone();
/// let mut p = Process::fork(move || {
///     for i in 0..5 {
///         producer.put(&i).unwrap();
///     }
/// });
/// p.start()?;
/// p.join()?;
/// let mut got = Vec::new();
/// while !queue.empty() {
///     got.push(queue.get()?);
/// }
/// assert_eq!(got, [0, 1, 2, 3, 4]);
/// # Ok(()) }
/// ```
pub struct Queue<T> {
    shared: Arc<Shared>,
    _item: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            shared: Arc::clone(&self.shared),
            _item: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("maxsize", &self.shared.maxsize())
            .field("qsize", &self.shared.len())
            .finish()
    }
}

/// The most a thread's codec buffers keep between items (each).
const KEPT: usize = 4 << 20;

/// A thread's reused codec buffers: the encoded item, and the decoder with its scratch.
/// Without them every put allocated the encoding (and grew it twice), and every get its
/// bytes.
#[derive(Default)]
struct Buffers {
    bytes: Vec<u8>,
    cbor: Cbor,
}

impl Buffers {
    /// Lets go of an item buffer grown past [`KEPT`] by a large item.
    fn trim(&mut self) {
        if self.bytes.capacity() > KEPT {
            self.bytes = Vec::new();
        }
    }
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Buffers> = std::cell::RefCell::default();
}

/// Runs `f` with this thread's buffers, or fresh ones if they are in use (a `Serialize` or
/// `Deserialize` impl that uses a queue itself) or gone (thread exit).
fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    let mut f = Some(f);
    let reused = BUFFERS.try_with(|cell| {
        cell.try_borrow_mut()
            .ok()
            .map(|mut b| (f.take().expect("called once"))(&mut b))
    });
    match reused {
        Ok(Some(r)) => r,
        _ => (f.take().expect("called once"))(&mut Buffers::default()),
    }
}

/// How long [`take_item`] waits for an item.
#[derive(Clone, Copy)]
enum Wait {
    /// Until the deadline (`None`: as long as it takes).
    Until(Option<Instant>),
    /// Not at all.
    Never,
}

/// Takes one item with `read` (see [`Shared::take`]); whether there was one in time.
/// Not generic, so that the take is compiled here, with `shared`'s small helpers inlined
/// into it, and not in each crate that gets items of its own type, where every one of them
/// was a call (about 30 ns of a 64-byte `get` in a one-thread loop).
fn take_item(shared: &Shared, wait: Wait, read: &mut dyn FnMut(Payload<'_>)) -> Result<bool> {
    let taken = match wait {
        Wait::Until(deadline) => shared.take(deadline, read)?,
        Wait::Never => shared.try_take(read)?,
    };
    Ok(taken.is_some())
}

/// If `item` is one byte or text string, its kind, with its bytes in `bytes` (empty before):
/// its bytes are copied once, into a vector of their length (the one the value is made of).
/// Puts store a lone string without its CBOR header, the frame saying which kind it is;
/// other payloads (a raw put's bytes) have their header peeked at. `item` itself is not
/// read on: if `T` will not take the string, ciborium reads it whole. Not generic, as
/// [`take_item`]; and the vector is filled in place rather than returned, which cost a
/// stalled reload of it (~10 ns).
fn read_lone_string(item: &Payload<'_>, bytes: &mut Vec<u8>) -> Option<cbor_string::StringKind> {
    // The stored string's path apart from the peeking one, though both end in the same
    // copy: merged into one (a clone, then a `match`), a 64-byte `ByteBuf` get in one
    // process took ~2 ns more (43 -> 45, 6 alternated pairs).
    if let Some(kind) = item.string() {
        *bytes = Vec::with_capacity(item.len());
        item.clone().copy_bytes_into(bytes);
        return Some(kind);
    }
    let mut prefix = [0u8; cbor_string::MAX_HEADER];
    let n = item.peek(&mut prefix);
    let (kind, used) = cbor_string::lone_string(&prefix[..n], item.len())?;
    let mut string = item.clone();
    string.skip(used);
    *bytes = Vec::with_capacity(string.len());
    string.copy_bytes_into(bytes);
    Some(kind)
}

fn deadline_after(timeout: Duration) -> Option<Instant> {
    // A timeout too far for an Instant is as good as none.
    Instant::now().checked_add(timeout)
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// An unbounded queue. Python: `Queue()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q: multiproc::Queue<String> = multiproc::Queue::new()?;
    /// assert_eq!(q.maxsize(), None);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` if the system refuses the shared memory or the eventfd.
    pub fn new() -> Result<Queue<T>> {
        Queue::with_maxsize(0, false)
    }

    /// A queue holding at most `maxsize` items; `put` waits for room. Python:
    /// `Queue(maxsize)`; as there, 0 means unbounded.
    ///
    /// The bound costs time per item: a put reserves room by counting every producer's
    /// items with its own announced (so that no crash can leak room), and publishes with a
    /// full barrier. Four producer and four consumer processes that kept a `bounded(8192)`
    /// queue full moved 40-75% of the 64-byte items per second that a [`new`](Self::new)
    /// queue moved (docs/benchmarks.md). Use it where the bound is what you need: memory
    /// held in check, producers slowed to the consumers' pace.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::bounded(1)?;
    /// q.put(&1)?;
    /// assert!(q.full());
    /// assert_eq!(q.try_put(&2).unwrap_err().kind(), multiproc::ErrorKind::Full);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn bounded(maxsize: usize) -> Result<Queue<T>> {
        Queue::with_maxsize(maxsize as u64, false)
    }

    /// A new queue; a `joinable` one counts every item put (see [`JoinableQueue`]).
    fn with_maxsize(maxsize: u64, joinable: bool) -> Result<Queue<T>> {
        Ok(Queue {
            shared: shared::registered(Shared::create(maxsize, joinable)?),
            _item: PhantomData,
        })
    }

    /// Runs `put(head, body)` on the encoding of `item`: a lone byte or text string goes as
    /// its CBOR header and its own bytes (see [`cbor_string`]), anything else is encoded in
    /// this thread's reused buffer.
    fn with_encoded(item: &T, put: impl Fn(&[u8], &[u8]) -> Result<()>) -> Result<()> {
        // An error is kept aside, so that what comes back through the serializer is only
        // whether the string went (a `Result` passed back up through it, by memory, cost a
        // few ns of a 64-byte put).
        let mut failed = None;
        let stored = cbor_string::encode(item, |head, body| {
            if let Err(e) = put(head, body) {
                failed = Some(e);
            }
        });
        if stored.is_some() {
            return failed.map_or(Ok(()), Err);
        }
        with_buffers(|b| {
            b.bytes.clear();
            let done = b
                .cbor
                .encode(item, &mut b.bytes)
                .and_then(|()| put(&[], &b.bytes));
            b.trim();
            done
        })
    }

    /// Takes an item, waiting as `wait` says, and decodes it; `None` when there was none in
    /// time. A lone byte or text string is read once, into the vector it becomes
    /// (see [`cbor_string`]); other items are copied into this thread's reused buffer and
    /// decoded there.
    fn take_decoded(&self, wait: Wait) -> Result<Option<T>> {
        // The value made of the read that was claimed: `take_item` reads again, over this,
        // when a claim fails (and a read that was not claimed may be left here when it
        // says there was no item).
        //
        // A string's value and any other item's `Result` are kept apart: stored as one
        // `Option<Result<T>>`, the value was built on the stack with 8-byte stores and
        // copied into place with 16-byte loads, which waited for those stores to retire
        // (`perf`: over half of the closure's samples on one load). Apart, a 64-byte
        // `ByteBuf` get in one process went from ~48 to ~44 ns.
        let mut string = None;
        let mut decoded = None;
        if !take_item(&self.shared, wait, &mut |item| {
            string = Self::decode_string(&item);
            if string.is_none() {
                decoded = Some(Self::decode_other(&item));
            }
        })? {
            return Ok(None);
        }
        if let Some(value) = string {
            return Ok(Some(value));
        }
        decoded.expect("a taken item was read").map(Some)
    }

    /// Decodes `item`, which is not a string `T` takes, with ciborium, where it lies.
    fn decode_other(item: &Payload<'_>) -> Result<T> {
        with_buffers(|b| {
            let Buffers { bytes, cbor } = b;
            // A scratch as long as the item lets ciborium read a byte or text string in
            // one piece: in 4 KiB pieces a 1 MiB one decodes 7x slower.
            cbor.reserve_scratch(item.len().min(KEPT));
            item.clone().copy_into(bytes);
            let value = cbor.decode(bytes);
            b.trim();
            value
        })
    }

    /// `item` decoded by [`cbor_string`], if it is one byte or text string that `T` takes
    /// as such.
    #[inline]
    fn decode_string(item: &Payload<'_>) -> Option<T> {
        let mut bytes = Vec::new();
        let kind = read_lone_string(item, &mut bytes)?;
        cbor_string::decode(kind, bytes)
    }

    /// Puts `item`, waiting for room in a bounded queue. When it returns `Ok`, the item is
    /// in the queue (see [`Queue`]). Python: `put(obj)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::new()?;
    /// q.put(&(1, "one".to_owned()))?;
    /// assert_eq!(q.get()?, (1, "one".to_owned()));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Encode` if `item` does not serialise (nothing is put); `ShutDown` after
    /// [`shutdown`](Self::shutdown); `Closed` after [`close`](Self::close); `InvalidInput`
    /// for an item over 512 MiB; `Full` if this process already has 1 GiB or 16 million items
    /// waiting in it; `Unsupported` if 128 other processes already put into this queue and
    /// have items waiting (see [`Queue`]); `Io` if memory for the item cannot be had.
    pub fn put(&self, item: &T) -> Result<()> {
        Self::with_encoded(item, |head, body| self.shared.put(head, body, None))
    }

    /// Puts `item`, waiting at most `timeout` for room. Python: `put(obj, timeout=t)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let q = multiproc::Queue::bounded(1)?;
    /// q.put_timeout(&1, Duration::from_millis(1))?;
    /// let err = q.put_timeout(&2, Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Full);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Full` if there was no room in time; otherwise as [`put`](Self::put).
    pub fn put_timeout(&self, item: &T, timeout: Duration) -> Result<()> {
        let deadline = deadline_after(timeout);
        Self::with_encoded(item, |head, body| self.shared.put(head, body, deadline))
    }

    /// Puts `item` only if there is room now. Python: `put_nowait(obj)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::bounded(2)?;
    /// q.try_put(&1)?;
    /// q.try_put(&2)?;
    /// assert!(q.try_put(&3).is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Full` if there is no room; otherwise as [`put`](Self::put).
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: &T) -> Result<()> {
        let now = Some(Instant::now());
        Self::with_encoded(item, |head, body| self.shared.put(head, body, now))
    }

    /// Takes the next item, waiting for one. Python: `get()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::new()?;
    /// q.put(&vec![1u8, 2, 3])?;
    /// assert_eq!(q.get()?, vec![1, 2, 3]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `ShutDown` once the queue is shut down and drained; `Decode` if the item is not a `T`
    /// (it was taken); `BadMessageLength` if the queue's memory was written by something
    /// other than a producer (see the type's docs).
    pub fn get(&self) -> Result<T> {
        self.take_decoded(Wait::Until(None))
            .map(|item| item.expect("a get without deadline returns an item"))
    }

    /// Takes the next item, waiting at most `timeout`. Python: `get(timeout=t)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u8>::new()?;
    /// let err = q.get_timeout(Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Empty);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Empty` if nothing came in time; otherwise as [`get`](Self::get).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.take_decoded(Wait::Until(deadline_after(timeout)))?
            .ok_or_else(|| Error::new(ErrorKind::Empty))
    }

    /// Takes the next item if there is one now. Python: `get_nowait()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::new()?;
    /// assert_eq!(q.try_get().unwrap_err().kind(), multiproc::ErrorKind::Empty);
    /// q.put(&7)?;
    /// assert_eq!(q.try_get()?, 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Empty` if there is none; otherwise as [`get`](Self::get).
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> Result<T> {
        match self.take_decoded(Wait::Never)? {
            Some(item) => Ok(item),
            None => {
                self.shared.quiesce_events();
                Err(Error::new(ErrorKind::Empty))
            }
        }
    }

    /// Puts `bytes` as one item, as they are: no codec. Like
    /// [`Connection::send_bytes`](crate::Connection::send_bytes) next to `send`, this is
    /// the fastest way to move bytes (the item is copied once, into the queue). Take such
    /// items with [`get_bytes`](Self::get_bytes) or [`get_bytes_into`](Self::get_bytes_into);
    /// a typed [`get`](Self::get) decodes them as `T` (an error, if they are not one).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<()>::new()?;
    /// q.put_bytes(b"raw")?;
    /// assert_eq!(q.get_bytes()?, b"raw");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`put`](Self::put), without `Encode`.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.shared.put(&[], bytes, None)
    }

    /// Puts `bytes` as one item, waiting at most `timeout` for room.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<()>::bounded(1)?;
    /// q.put_bytes_timeout(b"a", Duration::from_millis(1))?;
    /// let err = q.put_bytes_timeout(b"b", Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Full);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout), without `Encode`.
    pub fn put_bytes_timeout(&self, bytes: &[u8], timeout: Duration) -> Result<()> {
        self.shared.put(&[], bytes, deadline_after(timeout))
    }

    /// Takes the next item as the bytes it is stored as, waiting for one.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<()>::new()?;
    /// q.put_bytes(&[1, 2, 3])?;
    /// assert_eq!(q.get_bytes()?, [1, 2, 3]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `ShutDown` once the queue is shut down and drained.
    pub fn get_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.get_bytes_into(&mut bytes)?;
        Ok(bytes)
    }

    /// Takes the next item into `buf`, replacing its contents and reusing its capacity,
    /// waiting for one; returns the item's length. With a `buf` kept between calls, a get
    /// allocates nothing.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<()>::new()?;
    /// let mut buf = Vec::with_capacity(64);
    /// for word in ["one", "three"] {
    ///     q.put_bytes(word.as_bytes())?;
    ///     let n = q.get_bytes_into(&mut buf)?;
    ///     assert_eq!(&buf[..n], word.as_bytes());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`get_bytes`](Self::get_bytes). After an error `buf` holds no item of yours: its
    /// contents are unspecified (a copy of an item another consumer took first may be left
    /// there).
    pub fn get_bytes_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.shared.get(buf, None)?;
        Ok(buf.len())
    }

    /// Takes the next item into `buf` (as [`get_bytes_into`](Self::get_bytes_into)),
    /// waiting at most `timeout`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<()>::new()?;
    /// let mut buf = Vec::new();
    /// let err = q.get_bytes_timeout(&mut buf, Duration::from_millis(1)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Empty);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Empty` if nothing came in time; otherwise as [`get_bytes`](Self::get_bytes). After
    /// an error `buf`'s contents are unspecified, as for
    /// [`get_bytes_into`](Self::get_bytes_into).
    pub fn get_bytes_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        if self.shared.get(buf, deadline_after(timeout))? {
            Ok(buf.len())
        } else {
            Err(Error::new(ErrorKind::Empty))
        }
    }

    /// How many items are in the queue. Python: `qsize()` (which is unreliable; this is
    /// exact, see [`Queue`]). Costs the same whatever the number of items.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::new()?;
    /// q.put(&1)?;
    /// q.put(&2)?;
    /// assert_eq!(q.qsize(), 2);
    /// # Ok(()) }
    /// ```
    pub fn qsize(&self) -> usize {
        let len = self.shared.len();
        match self.shared.maxsize() {
            0 => len as usize,
            // Shares read one after another may, under concurrent gets and puts, add up to
            // more than the queue ever held at once; it never holds more than its bound.
            max => len.min(max) as usize,
        }
    }

    /// Whether the queue has no item. Python: `empty()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.empty());
    /// # Ok(()) }
    /// ```
    pub fn empty(&self) -> bool {
        self.shared.is_empty()
    }

    /// Whether a bounded queue has no room. Python: `full()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(!q.full()); // an unbounded queue is never full
    /// # Ok(()) }
    /// ```
    pub fn full(&self) -> bool {
        self.shared.is_full()
    }

    /// The bound, or `None` for an unbounded queue.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// assert_eq!(multiproc::Queue::<u8>::bounded(3)?.maxsize(), Some(3));
    /// # Ok(()) }
    /// ```
    pub fn maxsize(&self) -> Option<usize> {
        match self.shared.maxsize() {
            0 => None,
            n => Some(n as usize),
        }
    }

    /// This process will put no more items. Python: `close()`. Items already put stay in
    /// the queue; getting still works (unlike Python's, where `get` then raises
    /// `ValueError` too). Later puts from this process fail with `Closed`, through every
    /// clone of the handle; a child forked afterwards inherits the closed state (as a
    /// forked Python child does), while a spawned child's handle is open.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::new()?;
    /// q.put(&1)?;
    /// q.close();
    /// assert_eq!(q.put(&2).unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// assert_eq!(q.get()?, 1);
    /// # Ok(()) }
    /// ```
    pub fn close(&self) {
        self.shared.close_producer();
    }

    /// Shuts the queue down for every process. Python 3.13: `queue.Queue.shutdown(immediate)`
    /// (the threads' queue: `multiprocessing.Queue` has no `shutdown`, as of 3.13). Puts
    /// fail with `ShutDown` from now on; gets return what is left, then fail with
    /// `ShutDown`; with `immediate`, what is left is discarded and gets fail at once. Every
    /// blocked `put` and `get` wakes up.
    ///
    /// A `put` in another process or thread at the same moment either fails with
    /// `ShutDown`, its item not in the queue, or returns `Ok` with its item there to be
    /// drained before gets fail (and, with `immediate`, discarded and counted done for
    /// [`JoinableQueue::join`](crate::JoinableQueue::join)). An item is never left behind a
    /// get that already said `ShutDown`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::ErrorKind;
    /// let q = multiproc::Queue::new()?;
    /// q.put(&1)?;
    /// q.shutdown(false);
    /// assert_eq!(q.put(&2).unwrap_err().kind(), ErrorKind::ShutDown);
    /// assert_eq!(q.get()?, 1);
    /// assert_eq!(q.get().unwrap_err().kind(), ErrorKind::ShutDown);
    /// # Ok(()) }
    /// ```
    pub fn shutdown(&self, immediate: bool) {
        self.shared.shutdown(immediate);
    }

    /// Whether [`shutdown`](Self::shutdown) was called (by any process).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(!q.is_shut_down());
    /// # Ok(()) }
    /// ```
    pub fn is_shut_down(&self) -> bool {
        self.shared.is_shut_down()
    }
}

#[cfg(test)]
impl<T> Queue<T> {
    /// Whether `FLAG_FENCED` is set in the queue's file: a consumer was refused
    /// `membarrier` and told puts to fence (for `src/sys/membarrier_refused_tests.rs`).
    pub(crate) fn puts_fenced(&self) -> bool {
        self.shared.puts_fenced()
    }
}

impl<T> crate::wait::Waitable for Queue<T> {
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        Ok(self.shared.events())
    }

    fn is_ready(&mut self) -> bool {
        if !self.shared.is_empty() || self.shared.is_shut_down() {
            return true;
        }
        self.shared.quiesce_events();
        false
    }

    fn is_ready_buffered(&self) -> bool {
        !self.shared.is_empty()
    }
}

impl<T> mio::event::Source for Queue<T> {
    /// Registers the queue's readiness fd: an event means items may be there. Take them
    /// with `try_get` until it says `Empty` (which also re-arms the fd).
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.shared.events().as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.shared.events().as_raw_fd())
            .reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.shared.events().as_raw_fd()).deregister(registry)
    }
}

/// The serde name a passed queue travels under.
const PASSED_QUEUE: &str = "multiproc::PassedQueue";

impl<T> Serialize for Queue<T> {
    /// Only as (part of) the arguments of [`Process::spawn`](crate::Process::spawn): the
    /// child receives a handle on the same queue. Anywhere else this is an error.
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use crate::process::passing::pass_fd;
        let file = pass_fd(self.shared.file().as_raw_fd(), "a Queue").map_err(S::Error::custom)?;
        let events =
            pass_fd(self.shared.events().as_raw_fd(), "a Queue").map_err(S::Error::custom)?;
        serializer.serialize_newtype_struct(PASSED_QUEUE, &(file, events))
    }
}

impl<'de, T> Deserialize<'de> for Queue<T> {
    /// Only in a spawned child, from its arguments; see `Serialize`.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename = "multiproc::PassedQueue")]
        struct Indices((u32, u32));
        let Indices((file, events)) = Indices::deserialize(deserializer)?;
        use crate::process::passing::{shared_handle, take};
        // Clones of one queue in the arguments share one handle here too, as they did in
        // the parent: one producer log, so one thread's puts through either stay in order.
        let shared = shared_handle(file, || {
            let shared = Shared::open(take(file)?, take(events)?).map_err(|e| e.to_string())?;
            Ok(shared::registered(shared))
        })
        .map_err(D::Error::custom)?;
        Ok(Queue {
            shared,
            _item: PhantomData,
        })
    }
}
