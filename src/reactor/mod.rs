//! The `Reactor`: one thread drives many connections through non-blocking receive and send
//! state machines, with timers and a handle other threads use to post work.
//!
//! Built on mio: a `Poll`, a `slab` of entries (connection + handler), a timer heap
//! ([`timers`]), and a `mio::Waker` for [`ReactorHandle`]. Each round:
//!
//! 1. wait for events (or the next timer, or at once when work is already known);
//! 2. for each readable connection, read and hand every whole message to its handler, up to
//!    a fairness budget, then move on (the rest is picked up next round, since mio is
//!    edge-triggered and will not say again);
//! 3. fire due timers;
//! 4. flush every connection that queued output this round: sends made from handlers only
//!    append to a buffer, so a handler that sends 500 small messages costs one `sendmsg`;
//! 5. apply backpressure: a connection whose queue passes the high-water mark stops being
//!    read, and its handler is told, until the queue falls to the low-water mark (half).
//!
//! End of stream and errors are delivered exactly once (`on_eof` or `on_error`), after which
//! the connection is removed: a peer killed mid-message cannot make the loop spin. An idle
//! reactor blocks in `epoll_wait` and uses no CPU.

mod timers;
mod watch;

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Waker};
use serde::Serialize;
use serde::de::DeserializeOwned;
use slab::Slab;

use crate::connection::{Connection, Within};
use crate::error::{Error, ErrorKind, Result};

pub use timers::TimerId;
use timers::Timers;
pub use watch::WatchId;
use watch::{WATCH_BIT, Watches};

/// The mio token of the waker; connection tokens are slab indices, far below it.
const WAKER: mio::Token = mio::Token(usize::MAX);
/// Messages read from one connection before the loop moves on to others.
const READ_BUDGET: usize = 256;
/// Reads of one connection's fd per message per turn: a message still streaming in after
/// them waits for the next turn (a few MiB a turn; a socket read returns what its buffer
/// holds).
const READS_PER_TURN: usize = 16;
/// The most memory the buffer that messages are read into keeps between messages.
const KEPT_SCRATCH: usize = 1 << 20;
/// Default per-connection high-water mark of queued output, in bytes.
const DEFAULT_HIGH_WATER: usize = 1 << 20;

/// Names a connection registered in a [`Reactor`]. Like `mio::Token`, but never reused by
/// the reactor that made it: a token whose connection is gone finds nothing.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Context, Handler, Reactor};
/// struct Quiet;
/// impl Handler for Quiet {
///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
/// }
/// let mut reactor = Reactor::new()?;
/// let (_a, b) = multiproc::Pipe::new()?;
/// let token = reactor.register(b, Quiet)?;
/// assert!(reactor.deregister(token).is_some());
/// assert!(reactor.deregister(token).is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token {
    index: usize,
    generation: u64,
}

/// What a connection's owner does with its events. Every method but `on_message` has a
/// default that does nothing.
///
/// A callback that panics: its connection is removed (closed, its timers cancelled), then
/// the panic goes on out of [`Reactor::run`] or [`Reactor::run_once`]. Nothing else is
/// lost: a caller that catches the panic may run the reactor again, and events of the other
/// connections reported in that round, timers, watches and posted tasks still to come are
/// taken up by the next round.
///
/// # Examples
/// An echo server handler; the client's EOF ends it:
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Context, Handler, Pipe, Reactor};
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]) {
///         let _ = ctx.send_bytes(message);
///     }
/// }
/// let (mut client, server_end) = Pipe::new()?;
/// let mut reactor = Reactor::new()?;
/// reactor.register(server_end, Echo)?;
/// client.send_bytes(b"one")?;
/// // One thread plays both sides here: turn the loop until the echo is back.
/// while !client.poll(Some(std::time::Duration::ZERO))? {
///     reactor.run_once(Some(std::time::Duration::from_secs(5)))?;
/// }
/// assert_eq!(client.recv_bytes()?, b"one");
/// drop(client);
/// reactor.run()?; // EOF removes the connection; nothing is left, so run returns
/// # Ok(()) }
/// ```
pub trait Handler {
    /// A whole message arrived. Decode typed messages with [`Context::decode`].
    ///
    /// # Examples
    /// `message` is lent for the call; copy what you keep.
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Collect(Rc<RefCell<Vec<Vec<u8>>>>);
    /// impl Handler for Collect {
    ///     fn on_message(&mut self, _: &mut Context<'_>, message: &[u8]) {
    ///         self.0.borrow_mut().push(message.to_vec());
    ///     }
    /// }
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Collect(Rc::clone(&seen)))?;
    /// peer.send_bytes(b"one")?;
    /// peer.send_bytes(b"two")?;
    /// drop(peer);
    /// reactor.run()?; // EOF removes the connection; nothing is left, so run returns
    /// assert_eq!(*seen.borrow(), [b"one".to_vec(), b"two".to_vec()]);
    /// # Ok(()) }
    /// ```
    fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]);

    /// The peer closed the connection at a message boundary. The connection is removed
    /// after this returns.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Hangup(Rc<Cell<bool>>);
    /// impl Handler for Hangup {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    ///     fn on_eof(&mut self, _: &mut Context<'_>) {
    ///         self.0.set(true);
    ///     }
    /// }
    /// let hung_up = Rc::new(Cell::new(false));
    /// let (peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Hangup(Rc::clone(&hung_up)))?;
    /// drop(peer);
    /// reactor.run()?;
    /// assert!(hung_up.get());
    /// assert!(reactor.is_empty());
    /// # Ok(()) }
    /// ```
    fn on_eof(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// Receiving or sending failed (a truncated message, a bad length, a broken pipe). The
    /// connection is removed after this returns.
    ///
    /// # Examples
    /// A message over the connection's limit:
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// use multiproc::{Context, Error, ErrorKind, Handler, Pipe, Reactor};
    /// struct Report(Rc<Cell<Option<ErrorKind>>>);
    /// impl Handler for Report {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    ///     fn on_error(&mut self, _: &mut Context<'_>, error: Error) {
    ///         self.0.set(Some(error.kind()));
    ///     }
    /// }
    /// let failed = Rc::new(Cell::new(None));
    /// let (mut peer, mut conn) = Pipe::new()?;
    /// conn.set_max_message_len(4);
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Report(Rc::clone(&failed)))?;
    /// peer.send_bytes(b"far too long")?;
    /// reactor.run()?;
    /// assert_eq!(failed.get(), Some(ErrorKind::BadMessageLength));
    /// assert!(reactor.is_empty());
    /// # Ok(()) }
    /// ```
    fn on_error(&mut self, ctx: &mut Context<'_>, error: Error) {
        let _ = (ctx, error);
    }

    /// Output queued for this connection passed the high-water mark (`engaged`: reading
    /// from it pauses) or fell back to the low-water mark (reading resumes).
    ///
    /// # Examples
    /// A reply larger than the high-water mark engages it; the end of the round writes the
    /// reply and releases it.
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::cell::RefCell;
    /// use std::rc::Rc;
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Flow(Rc<RefCell<Vec<bool>>>);
    /// impl Handler for Flow {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         ctx.send_bytes(&[0; 100]).unwrap();
    ///     }
    ///     fn on_backpressure(&mut self, ctx: &mut Context<'_>, engaged: bool) {
    ///         self.0.borrow_mut().push(engaged);
    ///         if !engaged {
    ///             ctx.stop();
    ///         }
    ///     }
    /// }
    /// let seen = Rc::new(RefCell::new(Vec::new()));
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.set_high_water(64);
    /// reactor.register(conn, Flow(Rc::clone(&seen)))?;
    /// peer.send_bytes(b"go")?;
    /// reactor.run()?;
    /// assert_eq!(*seen.borrow(), [true, false]);
    /// assert_eq!(peer.recv_bytes()?.len(), 100);
    /// # Ok(()) }
    /// ```
    fn on_backpressure(&mut self, ctx: &mut Context<'_>, engaged: bool) {
        let _ = (ctx, engaged);
    }

    /// Everything queued for this connection has been written.
    ///
    /// # Examples
    /// A producer that queues its next message only once the last one is written, so its
    /// queue never grows:
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Producer(u32);
    /// impl Handler for Producer {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         ctx.send(&self.0).unwrap();
    ///     }
    ///     fn on_drained(&mut self, ctx: &mut Context<'_>) {
    ///         self.0 += 1;
    ///         if self.0 < 3 {
    ///             ctx.send(&self.0).unwrap();
    ///         } else {
    ///             ctx.close();
    ///         }
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Producer(0))?;
    /// peer.send_bytes(b"start")?;
    /// reactor.run()?; // returns once the closed connection is gone
    /// let got: Vec<u32> = (0..3).map(|_| peer.recv().unwrap()).collect();
    /// assert_eq!(got, [0, 1, 2]);
    /// assert!(peer.recv_bytes().unwrap_err().is_eof());
    /// # Ok(()) }
    /// ```
    fn on_drained(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// A timer this handler set fired.
    ///
    /// # Examples
    /// An idle timeout for a peer that never speaks:
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// use multiproc::{Context, Handler, Pipe, Reactor, TimerId};
    /// struct IdleTimeout;
    /// impl Handler for IdleTimeout {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
    ///         ctx.send_bytes(b"idle too long").unwrap();
    ///         ctx.close();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// let token = reactor.register(conn, IdleTimeout)?;
    /// reactor.set_timer(token, Duration::from_millis(1))?;
    /// reactor.run()?;
    /// assert_eq!(peer.recv_bytes()?, b"idle too long");
    /// assert!(peer.recv_bytes().unwrap_err().is_eof());
    /// # Ok(()) }
    /// ```
    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: TimerId) {
        let _ = (ctx, timer);
    }
}

struct Entry {
    /// `None` while the entry's own handler runs (it is lent to the `Context`).
    conn: Option<Connection>,
    handler: Option<Box<dyn Handler>>,
    /// The [`Connection::serial`] of the connection registered.
    serial: u64,
    generation: u64,
    /// What the fd is registered for now.
    interest: Interest,
    /// Backpressure engaged: not reading.
    paused: bool,
    /// `close()` was asked: stop reading, remove once the queue is written.
    closing: bool,
}

/// A notification to deliver once the current callback has returned.
#[derive(Debug, Clone, Copy)]
enum Notice {
    Backpressure(bool),
    Drained,
}

/// The reactor's state that handlers reach through their [`Context`].
struct Core {
    poll: Poll,
    entries: Slab<Entry>,
    timers: Timers<Token>,
    generation: u64,
    high_water: usize,
    stopped: bool,
    /// Entries that queued output this round.
    dirty: Vec<usize>,
    /// Entries with more to read (budget ran out, just registered, or just resumed).
    again: Vec<usize>,
    /// The entries of this round still to be read, and (below) still to be flushed. Kept
    /// here rather than on the stack so that a handler's panic, caught by the caller of
    /// `run`, loses none of them: the next round takes them up (mio will not report them
    /// again).
    reading: Vec<usize>,
    flushing: Vec<usize>,
    notices: Vec<(Token, Notice)>,
}

/// The context a handler callback runs in: its connection, sends, timers, registration and
/// stopping the loop.
///
/// # Examples
/// A handler that answers each typed request through its context, then stops the loop:
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Context, Handler, Pipe, Reactor};
/// struct Doubler;
/// impl Handler for Doubler {
///     fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]) {
///         let n: u64 = ctx.decode(message).unwrap();
///         ctx.send(&(n * 2)).unwrap();
///         ctx.stop();
///     }
/// }
/// let (mut client, server_end) = Pipe::new()?;
/// let mut reactor = Reactor::new()?;
/// reactor.register(server_end, Doubler)?;
/// client.send(&21u64)?;
/// reactor.run()?; // returns once the handler called `stop`, its answer written
/// assert_eq!(client.recv::<u64>()?, 42);
/// # Ok(()) }
/// ```
pub struct Context<'a> {
    token: Token,
    /// The handler's own connection, lent out of its entry while the callback runs.
    conn: &'a mut Connection,
    core: &'a mut Core,
}

type Task = Box<dyn FnOnce(&mut Reactor) + Send>;

/// A handle other threads use to post work into a [`Reactor`] or stop it. Cheap to clone.
/// It does not keep the reactor alive: once the reactor is dropped, what is posted is
/// dropped at once, never run. While one lives, [`run`](Reactor::run) goes on; dropping one
/// wakes the reactor for a round, so that `run` ends once the last is gone and nothing else
/// is left.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let mut reactor = multiproc::Reactor::new()?;
/// let handle = reactor.handle();
/// std::thread::spawn(move || handle.post(|r| r.stop()));
/// reactor.run()?; // returns once the posted task stops it
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReactorHandle {
    inbox: Weak<Mutex<VecDeque<Task>>>,
    /// After `inbox`, so dropped after it (fields drop in order): the reactor, woken, no
    /// longer counts this handle (`Reactor::idle`). Woken before, it could count it, then
    /// wait for ever for the last handle, gone.
    waker: WakeOnDrop,
}

/// The reactor's waker, woken once more when dropped (see [`ReactorHandle`]).
#[derive(Clone)]
struct WakeOnDrop(Weak<Waker>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        // Gone with the reactor, or failing only if its eventfd is: nothing to wake then.
        if let Some(waker) = self.0.upgrade() {
            let _ = waker.wake();
        }
    }
}

/// An event loop over connections, timers and posted tasks.
///
/// Each round waits for events (or the next timer), reads whole messages and hands them to
/// handlers, fires due timers, then flushes all output queued in the round: a handler's
/// sends only append to a buffer, so many small messages leave in one `sendmsg`. A
/// connection whose queue passes the high-water mark stops being read until it drains to
/// half of it. End of stream and errors are delivered once (`on_eof`, `on_error`) and the
/// connection is removed, so a dead peer cannot make the loop spin; an idle reactor blocks
/// and uses no CPU.
///
/// # Examples
/// A child process sends numbers; the reactor sums them until EOF.
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Context, Handler, Reactor};
/// use multiproc::{Pipe, Process};
///
/// struct Sum(u64);
/// impl Handler for Sum {
///     fn on_message(&mut self, ctx: &mut Context<'_>, message: &[u8]) {
///         self.0 += ctx.decode::<u64>(message).unwrap();
///     }
///     fn on_eof(&mut self, ctx: &mut Context<'_>) {
///         assert_eq!(self.0, 5050);
///         ctx.stop();
///     }
/// }
///
/// let (mut tx, rx) = Pipe::new()?;
/// let mut child = Process::fork(move || {
///     for i in 1..=100u64 {
///         tx.send(&i).unwrap();
///     }
/// });
/// let mut reactor = Reactor::new()?;
/// reactor.register(rx, Sum(0))?;
/// child.start()?;
/// reactor.run()?;
/// assert_eq!(child.join()?, 0);
/// # Ok(()) }
/// ```
pub struct Reactor {
    core: Core,
    events: Events,
    waker: Arc<Waker>,
    inbox: Arc<Mutex<VecDeque<Task>>>,
    /// Reused for each received message.
    scratch: Vec<u8>,
    watches: Watches,
    /// Watches of this round still to fire (see `Core::reading`).
    firing: Vec<WatchId>,
    /// Posted tasks taken out of the inbox and not yet run (see `Core::reading`).
    tasks: VecDeque<Task>,
}

impl Reactor {
    /// A reactor with nothing registered.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let reactor = multiproc::Reactor::new()?;
    /// assert_eq!(reactor.len(), 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` if the system refuses an epoll instance or an eventfd.
    pub fn new() -> Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Reactor {
            core: Core {
                poll,
                entries: Slab::new(),
                timers: Timers::new(),
                generation: 0,
                high_water: DEFAULT_HIGH_WATER,
                stopped: false,
                dirty: Vec::new(),
                again: Vec::new(),
                reading: Vec::new(),
                flushing: Vec::new(),
                notices: Vec::new(),
            },
            events: Events::with_capacity(1024),
            waker,
            inbox: Arc::new(Mutex::new(VecDeque::new())),
            scratch: Vec::new(),
            watches: Watches::default(),
            firing: Vec::new(),
            tasks: VecDeque::new(),
        })
    }

    /// Registers `conn`, driven by `handler` from now on. Messages already buffered or
    /// waiting on the fd are delivered by the next round.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler};
    /// struct Print;
    /// impl Handler for Print {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, m: &[u8]) {
    ///         assert_eq!(m, b"hi");
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut a, b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"hi")?;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// reactor.register(b, Print)?;
    /// reactor.run()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed` if `conn` was closed; `Io` if registration fails.
    pub fn register(&mut self, conn: Connection, handler: impl Handler + 'static) -> Result<Token> {
        self.core.insert(conn, Box::new(handler))
    }

    /// Removes a connection and hands it back, with anything still queued for it unsent
    /// (see [`Connection::pending_send_len`]). Its timers are cancelled.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler};
    /// struct Nop;
    /// impl Handler for Nop {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    /// let (_a, b) = multiproc::Pipe::new()?;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let token = reactor.register(b, Nop)?;
    /// let b = reactor.deregister(token).unwrap();
    /// assert!(!b.is_closed());
    /// # Ok(()) }
    /// ```
    pub fn deregister(&mut self, token: Token) -> Option<Connection> {
        self.core.remove(token)
    }

    /// Sets a one-shot timer for `token`'s handler, firing after `after`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// use multiproc::{Context, Handler, TimerId};
    /// struct StopOnTimer;
    /// impl Handler for StopOnTimer {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
    ///         ctx.stop();
    ///     }
    /// }
    /// let (_a, b) = multiproc::Pipe::new()?;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let token = reactor.register(b, StopOnTimer)?;
    /// reactor.set_timer(token, Duration::from_millis(1))?;
    /// reactor.run()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if `token` names no registered connection.
    pub fn set_timer(&mut self, token: Token, after: Duration) -> Result<TimerId> {
        self.core.set_timer(token, after, None)
    }

    /// Sets a periodic timer for `token`'s handler, first firing after `every`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// use multiproc::{Context, Handler, TimerId};
    /// struct Three(u32);
    /// impl Handler for Three {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, id: TimerId) {
    ///         self.0 += 1;
    ///         if self.0 == 3 {
    ///             ctx.cancel_timer(id);
    ///             ctx.stop();
    ///         }
    ///     }
    /// }
    /// let (_a, b) = multiproc::Pipe::new()?;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let token = reactor.register(b, Three(0))?;
    /// reactor.set_periodic(token, Duration::from_millis(1))?;
    /// reactor.run()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if `token` names no registered connection, or `every` is zero or too
    /// far in the future to represent.
    pub fn set_periodic(&mut self, token: Token, every: Duration) -> Result<TimerId> {
        self.core.set_timer(token, every, Some(every))
    }

    /// Cancels a timer; true if it had not fired (or, when periodic, was still live).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// use multiproc::{Context, Handler};
    /// struct Nop;
    /// impl Handler for Nop {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    /// let (_a, b) = multiproc::Pipe::new()?;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let token = reactor.register(b, Nop)?;
    /// let id = reactor.set_timer(token, Duration::from_secs(60))?;
    /// assert!(reactor.cancel_timer(id));
    /// assert!(!reactor.cancel_timer(id));
    /// # Ok(()) }
    /// ```
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.core.timers.cancel(id)
    }

    /// Calls `callback` once, with this reactor and `source` handed back, when `source`
    /// becomes ready; this is how a process [`Sentinel`](crate::Sentinel) joins the loop
    /// (the callback typically joins the process and starts a replacement). A pending watch
    /// keeps [`run`](Self::run) going, like a connection does.
    ///
    /// # Examples
    /// A child's exit, seen from the reactor:
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::cell::Cell;
    /// use std::rc::Rc;
    /// let mut p = multiproc::Process::fork(|| std::process::exit(3));
    /// p.start()?;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let exited = Rc::new(Cell::new(false));
    /// let seen = Rc::clone(&exited);
    /// reactor.when_ready(p.sentinel()?, move |_reactor, _sentinel| seen.set(true))?;
    /// reactor.run()?; // returns once the watch has fired and nothing else is left
    /// assert!(exited.get());
    /// assert_eq!(p.join()?, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed` if `source` has no fd; `InvalidInput` if its fd is watched already (two
    /// handles of one queue share one); `Io` if registration fails.
    pub fn when_ready<W, F>(&mut self, source: W, callback: F) -> Result<WatchId>
    where
        W: crate::wait::Waitable + 'static,
        F: FnOnce(&mut Reactor, W) + 'static,
    {
        self.watches
            .insert(self.core.poll.registry(), source, callback)
    }

    /// Cancels a watch set with [`when_ready`](Self::when_ready) (its source is dropped);
    /// true if it had not fired yet.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_peer, conn) = multiproc::Pipe::new()?;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let id = reactor.when_ready(conn, |_, _| unreachable!("nothing is ever sent"))?;
    /// assert!(reactor.cancel_watch(id));
    /// reactor.run()?; // nothing left to wait for
    /// # Ok(()) }
    /// ```
    pub fn cancel_watch(&mut self, id: WatchId) -> bool {
        self.watches.cancel(self.core.poll.registry(), id)
    }

    /// Sets the high-water mark of queued output per connection (default 1 MiB); reading
    /// resumes when the queue falls to half of it.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut reactor = multiproc::Reactor::new()?;
    /// reactor.set_high_water(64 * 1024);
    /// # Ok(()) }
    /// ```
    pub fn set_high_water(&mut self, bytes: usize) {
        self.core.high_water = bytes.max(1);
    }

    /// How many connections are registered.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// assert_eq!(multiproc::Reactor::new()?.len(), 0);
    /// # Ok(()) }
    /// ```
    pub fn len(&self) -> usize {
        self.core.entries.len()
    }

    /// Whether no connection is registered.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// assert!(multiproc::Reactor::new()?.is_empty());
    /// # Ok(()) }
    /// ```
    pub fn is_empty(&self) -> bool {
        self.core.entries.is_empty()
    }

    /// A handle for other threads: post tasks, stop the loop.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let reactor = multiproc::Reactor::new()?;
    /// let handle = reactor.handle();
    /// handle.stop();
    /// # Ok(()) }
    /// ```
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle {
            inbox: Arc::downgrade(&self.inbox),
            waker: WakeOnDrop(Arc::downgrade(&self.waker)),
        }
    }

    /// Makes [`run`](Self::run) return after the current round.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut reactor = multiproc::Reactor::new()?;
    /// reactor.stop();
    /// reactor.run()?; // returns at once
    /// # Ok(()) }
    /// ```
    pub fn stop(&mut self) {
        self.core.stopped = true;
    }

    /// Runs rounds until [`stop`](Self::stop) is called (by a handler, a posted task or
    /// this method's caller before), or until nothing is left that could wake it: no
    /// connection, no timer, no [`when_ready`](Self::when_ready) watch, no task posted and
    /// no [`ReactorHandle`] alive. Output queued by then is written as far as the fds take
    /// it without blocking; the rest stays queued in its connection (see
    /// [`deregister`](Self::deregister)).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut reactor = multiproc::Reactor::new()?;
    /// reactor.run()?; // nothing registered: returns at once
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` if `epoll_wait` fails. Errors of single connections go to their handlers.
    pub fn run(&mut self) -> Result<()> {
        while !self.core.stopped {
            if self.idle() {
                break;
            }
            self.run_once(None)?;
        }
        // What handlers queued in the last round (a reply sent just before `stop`) leaves
        // now, as far as the fds take it without blocking.
        self.flush_dirty();
        self.core.stopped = false;
        Ok(())
    }

    /// Whether nothing is left that could wake a round: no connection, no watch, no timer,
    /// no [`ReactorHandle`] and no task posted.
    fn idle(&self) -> bool {
        self.core.entries.is_empty()
            && self.watches.len() == 0
            && self.core.timers.is_empty()
            && self.tasks.is_empty()
            && Arc::weak_count(&self.inbox) == 0
            && self.inbox.lock().map_or(true, |i| i.is_empty())
    }

    /// Runs one round, waiting at most `timeout` for something to happen (`None`: as long
    /// as it takes). A signal is not something: the wait goes on after it, and still ends
    /// `timeout` after the call (Python's selectors do the same, PEP 475), as every wait of
    /// this crate does. To act on a signal, make it something readable (a pipe its handler
    /// writes, such as `signal-hook`'s, as `examples/echo_server.rs` does) and watch that
    /// with [`when_ready`](Self::when_ready).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let mut reactor = multiproc::Reactor::new()?;
    /// reactor.run_once(Some(Duration::ZERO))?;
    /// // Nothing registered: nothing could end a wait without a timeout.
    /// let err = reactor.run_once(None).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::InvalidInput);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`run`](Self::run); `InvalidInput` for no timeout (`None`) when nothing could end
    /// the wait (nothing left that could wake it, as [`run`](Self::run) checks), rather
    /// than wait forever.
    pub fn run_once(&mut self, timeout: Option<Duration>) -> Result<()> {
        if timeout.is_none() && self.idle() {
            return Err(crate::wait::waits_forever());
        }
        let now = Instant::now();
        let mut wait = timeout;
        if let Some(deadline) = self.core.timers.next_deadline() {
            let until = deadline.saturating_duration_since(now);
            wait = Some(wait.map_or(until, |w| w.min(until)));
        }
        // What a round cut short by a panic left undone comes first.
        let mut watched = std::mem::take(&mut self.firing);
        watched.append(&mut self.watches.take_due());
        let mut readable = std::mem::take(&mut self.core.reading);
        readable.append(&mut self.core.again);
        let mut leftover = std::mem::take(&mut self.core.flushing);
        leftover.retain(|i| !self.core.dirty.contains(i));
        leftover.append(&mut self.core.dirty);
        self.core.dirty = leftover;
        let tasks_left = !self.tasks.is_empty();
        if !readable.is_empty() || !self.core.dirty.is_empty() || !watched.is_empty() || tasks_left
        {
            wait = Some(Duration::ZERO);
        }
        // A signal (EINTR) ends no round: the wait goes on for what is left of its time, as
        // Python's selectors do (PEP 475). A round ended by the first signal did nothing, so
        // `run_once(None)` returned before anything happened.
        let deadline = wait.and_then(|w| now.checked_add(w));
        loop {
            match self.core.poll.poll(&mut self.events, wait) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut woken = tasks_left;
        for event in self.events.iter() {
            if event.token() == WAKER {
                // Taken now: a panic later in this round must not lose them with the wake-up.
                take_posted(&mut self.tasks, &self.inbox);
                woken = true;
                continue;
            }
            if event.token().0 & WATCH_BIT != 0 {
                watched.extend(self.watches.id_of(event.token()));
                continue;
            }
            let index = event.token().0;
            // An error too: a paused or closing entry is not read, and a pipe's writer
            // whose reader left with the pipe full hears only EPOLLERR, once. Its flush
            // fails (EPIPE) and ends it; without it, it would stay registered for good.
            if event.is_writable() || event.is_error() {
                self.core.mark_dirty(index);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                readable.push(index);
            }
        }
        readable.sort_unstable();
        readable.dedup();
        // Taken from the back: reversed, they are read in ascending order.
        readable.reverse();
        self.core.reading = readable;
        while let Some(index) = self.core.reading.pop() {
            self.read(index);
        }
        watched.reverse();
        self.firing = watched;
        while let Some(id) = self.firing.pop() {
            if let Some(fire) = self.watches.take(self.core.poll.registry(), id) {
                fire(self);
            }
        }
        let now = Instant::now();
        while let Some((token, id)) = self.core.timers.pop_due(now) {
            self.dispatch(token, |h, ctx| h.on_timer(ctx, id));
        }
        if woken {
            // Only those posted by now (a task posting another must not keep the round
            // going), one at a time: a panicking task leaves the rest for the next round.
            take_posted(&mut self.tasks, &self.inbox);
            while let Some(task) = self.tasks.pop_front() {
                task(self);
            }
        }
        self.flush_dirty();
        Ok(())
    }

    /// Reads whole messages from entry `index` and hands them to its handler.
    fn read(&mut self, index: usize) {
        let Some(token) = self.core.token_of(index) else {
            return;
        };
        for _ in 0..READ_BUDGET {
            let Some(entry) = self.core.entries.get_mut(index) else {
                return;
            };
            if entry.paused || entry.closing || entry.generation != token.generation {
                return;
            }
            let Some(conn) = entry.conn.as_mut() else {
                return;
            };
            if !conn.readable() {
                // A write-only end (a half-duplex pipe's writer) is there to send: nothing
                // to read. Its event means the reader is gone; any send would fail now.
                if conn.peer_gone() {
                    let gone = Error::with_message(
                        ErrorKind::BrokenPipe,
                        "the reading end of this write-only connection is closed",
                    );
                    self.finish(token, |h, ctx| h.on_error(ctx, gone));
                }
                return;
            }
            match conn.try_recv_bytes_into_within(&mut self.scratch, READS_PER_TURN) {
                Ok(Within::Message(_)) => self.hand_over_message(token),
                Ok(Within::Drained) => return,
                // A large message still streaming in: the others get their turn first.
                Ok(Within::Spent) => break,
                Err(e) if e.is_eof() => {
                    self.finish(token, |h, ctx| h.on_eof(ctx));
                    return;
                }
                Err(e) => {
                    self.finish(token, |h, ctx| h.on_error(ctx, e));
                    return;
                }
            }
        }
        // Budget spent: more may be buffered, and mio will not say so again.
        self.core.again.push(index);
    }

    /// Hands the message just read into the scratch buffer to `token`'s handler.
    fn hand_over_message(&mut self, token: Token) {
        let mut message = std::mem::take(&mut self.scratch);
        self.dispatch(token, |h, ctx| h.on_message(ctx, &message));
        // One large message must not keep its memory for good.
        if message.capacity() > KEPT_SCRATCH {
            message = Vec::new();
        }
        self.scratch = message;
    }

    /// Before an entry whose peer stopped reading (its flush failed) is ended: hands its
    /// handler the whole messages the peer sent before that, which a paused entry (or one
    /// whose event this round came only as writable) has not read. At most
    /// [`READ_BUDGET`] of them, and not for an entry its handler is closing. False if the
    /// entry went meanwhile (its handler ended it, or reading did).
    fn read_rest(&mut self, index: usize, token: Token) -> bool {
        for _ in 0..READ_BUDGET {
            let Some(entry) = self.core.entries.get_mut(index) else {
                return false;
            };
            if entry.generation != token.generation {
                return false;
            }
            if entry.closing {
                return true;
            }
            let Some(conn) = entry.conn.as_mut().filter(|c| c.readable()) else {
                return true;
            };
            match conn.try_recv_bytes_into_within(&mut self.scratch, READS_PER_TURN) {
                Ok(Within::Message(_)) => self.hand_over_message(token),
                // Nothing more, or what is left is not a whole message yet, or the input
                // ended too: the flush's error ends it.
                _ => return true,
            }
        }
        true
    }

    /// Runs `f` with `token`'s handler and a context lending it the connection, then
    /// delivers the notices that call produced.
    fn dispatch(&mut self, token: Token, f: impl FnOnce(&mut dyn Handler, &mut Context<'_>)) {
        self.core.dispatch(token, f);
        self.core.end_if_lost(token);
        self.deliver_notices();
    }

    /// Delivers the last callback of `token` (`on_eof` or `on_error`), then removes it.
    fn finish(&mut self, token: Token, f: impl FnOnce(&mut dyn Handler, &mut Context<'_>)) {
        self.core.dispatch(token, f);
        self.core.remove(token);
        self.deliver_notices();
    }

    /// Delivers queued notices in the order they arose (their handlers may add more).
    fn deliver_notices(&mut self) {
        while !self.core.notices.is_empty() {
            let (token, notice) = self.core.notices.remove(0);
            self.core.dispatch(token, |h, ctx| match notice {
                Notice::Backpressure(engaged) => h.on_backpressure(ctx, engaged),
                Notice::Drained => h.on_drained(ctx),
            });
            self.core.end_if_lost(token);
        }
    }

    /// Writes what every dirty connection queued; adjusts interest and backpressure.
    fn flush_dirty(&mut self) {
        // One pass: output that notices queue now (a producer refilling in `on_drained`)
        // waits for the next round, which then polls without blocking. Looping here until
        // quiet would let one producer starve every other connection, timer and `stop`.
        let mut round = std::mem::take(&mut self.core.dirty);
        round.reverse();
        self.core.flushing = round;
        while let Some(index) = self.core.flushing.pop() {
            let Some(token) = self.core.token_of(index) else {
                continue;
            };
            if let Err(e) = self.core.flush(index) {
                let peer_left = e.kind() == ErrorKind::BrokenPipe;
                if !peer_left || self.read_rest(index, token) {
                    self.finish(token, |h, ctx| h.on_error(ctx, e));
                }
                continue;
            }
            self.deliver_notices();
        }
    }
}

/// Moves the tasks posted to `inbox` to the back of `tasks`, the ones still to run.
fn take_posted(tasks: &mut VecDeque<Task>, inbox: &Mutex<VecDeque<Task>>) {
    tasks.append(&mut inbox.lock().unwrap_or_else(|p| p.into_inner()));
}

impl Core {
    /// Ends `token` with one `on_error` if its callback closed its connection or put another
    /// in its place: its fd left epoll, so no event would ever come for it again, and `run`
    /// would wait for it forever.
    fn end_if_lost(&mut self, token: Token) {
        if let Some(lost) = self.lost_connection(token) {
            self.dispatch(token, |h, ctx| h.on_error(ctx, lost));
            self.remove(token);
        }
    }

    /// Why `token`'s connection can no longer be served, if a callback closed it or put
    /// another in its place (whose fd was never registered) through `Context::connection`.
    fn lost_connection(&mut self, token: Token) -> Option<Error> {
        let entry = self.entry(token)?;
        let conn = entry.conn.as_ref()?;
        if conn.serial() != entry.serial {
            // Even on the same fd number (closed, then reconnected): never registered.
            Some(Error::with_message(
                ErrorKind::InvalidInput,
                "the connection was replaced inside a callback (register the new one instead)",
            ))
        } else if conn.is_closed() {
            Some(Error::with_message(
                ErrorKind::Closed,
                "the connection was closed by its handler",
            ))
        } else {
            None
        }
    }

    fn token_of(&self, index: usize) -> Option<Token> {
        self.entries.get(index).map(|e| Token {
            index,
            generation: e.generation,
        })
    }

    fn entry(&mut self, token: Token) -> Option<&mut Entry> {
        self.entries
            .get_mut(token.index)
            .filter(|e| e.generation == token.generation)
    }

    fn insert(&mut self, conn: Connection, handler: Box<dyn Handler>) -> Result<Token> {
        let raw =
            crate::wait::Waitable::wait_fd(&conn).map(|fd| std::os::fd::AsRawFd::as_raw_fd(&fd))?;
        let conn_serial = conn.serial();
        let entry = self.entries.vacant_entry();
        let index = entry.key();
        self.poll
            .registry()
            .register(
                &mut mio::unix::SourceFd(&raw),
                mio::Token(index),
                Interest::READABLE,
            )
            .map_err(crate::wait::registered_twice)?;
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        entry.insert(Entry {
            conn: Some(conn),
            handler: Some(handler),
            serial: conn_serial,
            generation,
            interest: Interest::READABLE,
            paused: false,
            closing: false,
        });
        // Frames may already sit in its buffer, where epoll cannot see them.
        self.again.push(index);
        Ok(Token { index, generation })
    }

    fn remove(&mut self, token: Token) -> Option<Connection> {
        self.entry(token)?;
        let mut entry = self.entries.remove(token.index);
        // Stale entries are harmless (a round skips a gone entry and rereads a reused one
        // for nothing), but a reactor that registers and removes without ever running a
        // round would grow the list for good: once they outnumber the connections, drop
        // them. Amortised, unlike a search at every removal (quadratic for mass removals).
        if self.again.len() > 2 * self.entries.len() + 64 {
            self.again.sort_unstable();
            self.again.dedup();
            let entries = &self.entries;
            self.again.retain(|&i| entries.contains(i));
        }
        self.timers.cancel_owner(token, |a, b| a == b);
        let conn = entry.conn.take()?;
        if let Ok(fd) = crate::wait::Waitable::wait_fd(&conn) {
            let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
            let _ = self
                .poll
                .registry()
                .deregister(&mut mio::unix::SourceFd(&raw));
        }
        Some(conn)
    }

    fn set_timer(
        &mut self,
        token: Token,
        after: Duration,
        period: Option<Duration>,
    ) -> Result<TimerId> {
        if self.entry(token).is_none() {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "no such reactor token",
            ));
        }
        if period.is_some_and(|p| p.is_zero()) {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "a periodic timer needs a period above zero",
            ));
        }
        let deadline = Instant::now().checked_add(after).ok_or_else(|| {
            Error::with_message(ErrorKind::InvalidInput, "timer too far in the future")
        })?;
        Ok(self.timers.set(token, deadline, period))
    }

    fn mark_dirty(&mut self, index: usize) {
        if !self.dirty.contains(&index) {
            self.dirty.push(index);
        }
    }

    fn dispatch(&mut self, token: Token, f: impl FnOnce(&mut dyn Handler, &mut Context<'_>)) {
        let Some(entry) = self.entry(token) else {
            return;
        };
        let (Some(mut conn), Some(mut handler)) = (entry.conn.take(), entry.handler.take()) else {
            return;
        };
        let outcome = {
            let mut ctx = Context {
                token,
                conn: &mut conn,
                core: self,
            };
            // Caught only to tidy up, then resumed: the panic still reaches the caller of
            // `run`, but the connection whose handler panicked is removed first (its fd out
            // of epoll and closed, its timers cancelled), so that a caller who catches it
            // can run on without a dead entry that keeps `run` waiting for ever.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                f(handler.as_mut(), &mut ctx);
            }))
        };
        if let Some(entry) = self.entry(token) {
            entry.conn = Some(conn);
            entry.handler = Some(handler);
        }
        if let Err(panic) = outcome {
            drop(self.remove(token));
            std::panic::resume_unwind(panic);
        }
    }

    /// Queued output of entry `index` was added to: mark it for flushing and check the
    /// high-water mark.
    fn queued(&mut self, token: Token, pending: usize) {
        self.mark_dirty(token.index);
        let high_water = self.high_water;
        if let Some(entry) = self.entry(token) {
            if !entry.paused && pending > high_water {
                entry.paused = true;
                self.notices.push((token, Notice::Backpressure(true)));
            }
        }
    }

    /// Writes entry `index`'s queue without blocking and updates its registration.
    fn flush(&mut self, index: usize) -> Result<()> {
        let high_water = self.high_water;
        let Some(entry) = self.entries.get_mut(index) else {
            return Ok(());
        };
        let token = Token {
            index,
            generation: entry.generation,
        };
        let Some(conn) = entry.conn.as_mut() else {
            return Ok(());
        };
        if conn.is_closed() {
            // Closed by its handler: `end_if_lost` reports that, once.
            return Ok(());
        }
        let had_pending = conn.pending_send_len() > 0;
        let drained = conn.flush()?;
        let pending = conn.pending_send_len();
        let mut resumed = false;
        if entry.paused && pending <= high_water / 2 {
            entry.paused = false;
            resumed = true;
        }
        let want = match (entry.paused || entry.closing, drained) {
            (true, true) => None,
            (true, false) => Some(Interest::WRITABLE),
            (false, true) => Some(Interest::READABLE),
            (false, false) => Some(Interest::READABLE | Interest::WRITABLE),
        };
        if entry.closing && drained {
            self.remove(token);
            return Ok(());
        }
        if let Some(want) = want {
            if want != entry.interest {
                let raw = std::os::fd::AsRawFd::as_raw_fd(conn);
                self.poll.registry().reregister(
                    &mut mio::unix::SourceFd(&raw),
                    mio::Token(index),
                    want,
                )?;
                entry.interest = want;
            }
        }
        if resumed {
            self.notices.push((token, Notice::Backpressure(false)));
            // Data may have piled up while paused; epoll will not report it again.
            self.again.push(index);
        }
        if drained && had_pending {
            self.notices.push((token, Notice::Drained));
        }
        Ok(())
    }
}

impl Context<'_> {
    /// The token of the connection this callback is about.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor, Token};
    /// struct Remember(Option<Token>);
    /// impl Handler for Remember {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         self.0 = Some(ctx.token());
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// let token = reactor.register(conn, Remember(None))?;
    /// peer.send_bytes(b"x")?;
    /// reactor.run()?;
    /// // The handler saw its own token: the one register returned.
    /// assert!(reactor.deregister(token).is_some());
    /// # Ok(()) }
    /// ```
    pub fn token(&self) -> Token {
        self.token
    }

    /// The connection this callback is about, e.g. to read its settings.
    ///
    /// Closing it here (or putting another in its place) ends it: once the callback
    /// returns, `on_error` follows (`Closed`, or `InvalidInput` for a replacement) and it is
    /// removed. To end it after its queued output is written, use [`close`](Self::close).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Check;
    /// impl Handler for Check {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         assert!(ctx.connection().writable());
    ///         assert_eq!(ctx.connection().pending_send_len(), 0);
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Check)?;
    /// peer.send_bytes(b"x")?;
    /// reactor.run()?;
    /// # Ok(()) }
    /// ```
    pub fn connection(&mut self) -> &mut Connection {
        self.conn
    }

    /// Decodes a message with the connection's codec (CBOR).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Numbers(Vec<i64>);
    /// impl Handler for Numbers {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, m: &[u8]) {
    ///         match ctx.decode::<i64>(m) {
    ///             Ok(n) => self.0.push(n),
    ///             Err(e) => assert_eq!(e.kind(), multiproc::ErrorKind::Decode),
    ///         }
    ///         if self.0.len() == 2 {
    ///             ctx.stop();
    ///         }
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Numbers(Vec::new()))?;
    /// peer.send(&1i64)?;
    /// peer.send("not a number")?; // a Decode error; the connection carries on
    /// peer.send(&2i64)?;
    /// reactor.run()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Decode` if the message is not a `T`.
    pub fn decode<T: DeserializeOwned>(&mut self, message: &[u8]) -> Result<T> {
        self.conn.decode_payload(message)
    }

    /// Queues `value` for this connection; it is written at the end of the round, together
    /// with everything else queued by then.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Ack;
    /// impl Handler for Ack {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         ctx.send(&"ack").unwrap();
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Ack)?;
    /// peer.send_bytes(b"hello")?;
    /// reactor.run()?;
    /// assert_eq!(peer.recv::<String>()?, "ack");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Encode`, `ReadOnly`. Write errors come later, to `on_error`.
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.conn.queue_value(value)?;
        let pending = self.conn.pending_send_len();
        self.core.queued(self.token, pending);
        Ok(())
    }

    /// Queues a byte message for this connection; see [`send`](Self::send).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Echo;
    /// impl Handler for Echo {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, m: &[u8]) {
    ///         ctx.send_bytes(m).unwrap();
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Echo)?;
    /// peer.send_bytes(b"ping")?;
    /// reactor.run()?;
    /// assert_eq!(peer.recv_bytes()?, b"ping");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `ReadOnly`.
    pub fn send_bytes(&mut self, message: &[u8]) -> Result<()> {
        self.conn.queue_frame(message)?;
        let pending = self.conn.pending_send_len();
        self.core.queued(self.token, pending);
        Ok(())
    }

    /// Queues a byte message for another registered connection.
    ///
    /// Memory stays bounded when that connection's peer reads slower than this one's
    /// writes: while its queue is past the high-water mark (see
    /// [`Reactor::set_high_water`]; until it falls to half), the message is refused with
    /// `Full` and nothing is queued. Its own handler hears of it in
    /// [`Handler::on_backpressure`]; the sender decides whether to drop the message, keep
    /// it, or stop reading its own peer.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor, Token};
    /// struct Forward(Token);
    /// impl Handler for Forward {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, m: &[u8]) {
    ///         ctx.send_bytes_to(self.0, m).unwrap();
    ///         ctx.stop();
    ///     }
    /// }
    /// struct Quiet;
    /// impl Handler for Quiet {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    /// let (mut left, left_end) = Pipe::new()?;
    /// let (mut right, right_end) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// let to_right = reactor.register(right_end, Quiet)?;
    /// reactor.register(left_end, Forward(to_right))?;
    /// left.send_bytes(b"across")?;
    /// reactor.run()?;
    /// assert_eq!(right.recv_bytes()?, b"across");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if `token` names no registered connection; `Full` while its queue is
    /// past the high-water mark; `ReadOnly`.
    pub fn send_bytes_to(&mut self, token: Token, message: &[u8]) -> Result<()> {
        if token == self.token {
            return self.send_bytes(message);
        }
        let Some(Entry {
            conn: Some(conn),
            paused,
            ..
        }) = self.core.entry(token)
        else {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "no such reactor token",
            ));
        };
        if *paused {
            return Err(Error::with_message(
                ErrorKind::Full,
                "the connection's send queue is past the high-water mark",
            ));
        }
        conn.queue_frame(message)?;
        let pending = conn.pending_send_len();
        self.core.queued(token, pending);
        Ok(())
    }

    /// Stops reading this connection and closes it once everything queued for it is
    /// written. No `on_eof` follows.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct Goodbye;
    /// impl Handler for Goodbye {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         ctx.send_bytes(b"bye").unwrap();
    ///         ctx.close();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Goodbye)?;
    /// peer.send_bytes(b"hi")?;
    /// reactor.run()?; // returns once the closed connection is gone: nothing is left
    /// assert_eq!(peer.recv_bytes()?, b"bye");
    /// assert!(peer.recv_bytes().unwrap_err().is_eof());
    /// # Ok(()) }
    /// ```
    pub fn close(&mut self) {
        if let Some(entry) = self.core.entry(self.token) {
            entry.closing = true;
            self.core.mark_dirty(self.token.index);
        }
    }

    /// Registers another connection with its handler (an accepted client, say).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Connection, Context, Handler, Pipe, Reactor};
    /// struct Adopt(Option<Connection>);
    /// struct Echo;
    /// impl Handler for Echo {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, m: &[u8]) {
    ///         ctx.send_bytes(m).unwrap();
    ///         ctx.stop();
    ///     }
    /// }
    /// impl Handler for Adopt {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         if let Some(conn) = self.0.take() {
    ///             ctx.register(conn, Echo).unwrap();
    ///         }
    ///     }
    /// }
    /// let (mut control, control_end) = Pipe::new()?;
    /// let (mut client, client_end) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(control_end, Adopt(Some(client_end)))?;
    /// control.send_bytes(b"adopt it")?;
    /// client.send_bytes(b"echo me")?;
    /// reactor.run()?;
    /// assert_eq!(client.recv_bytes()?, b"echo me");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`Reactor::register`].
    pub fn register(&mut self, conn: Connection, handler: impl Handler + 'static) -> Result<Token> {
        self.core.insert(conn, Box::new(handler))
    }

    /// Removes another registered connection and hands it back, as
    /// [`Reactor::deregister`] does: its handler gets no further callback, even for an
    /// event already reported in this round. `None` for a token that names nothing, and
    /// for this callback's own connection (end that one with [`close`](Self::close)).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Connection, Context, Handler, Pipe, Reactor, Token};
    /// struct Kick(Token, Option<Connection>);
    /// impl Handler for Kick {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         self.1 = ctx.deregister(self.0);
    ///         assert!(self.1.is_some());
    ///         ctx.stop();
    ///     }
    /// }
    /// struct Quiet;
    /// impl Handler for Quiet {
    ///     fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    /// }
    /// let (_other_peer, other) = Pipe::new()?;
    /// let (mut admin, admin_end) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// let other = reactor.register(other, Quiet)?;
    /// reactor.register(admin_end, Kick(other, None))?;
    /// admin.send_bytes(b"kick")?;
    /// reactor.run()?;
    /// assert_eq!(reactor.len(), 1);
    /// # Ok(()) }
    /// ```
    pub fn deregister(&mut self, token: Token) -> Option<Connection> {
        if token == self.token {
            return None;
        }
        self.core.remove(token)
    }

    /// Sets a one-shot timer for this handler.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// use multiproc::{Context, Handler, Pipe, Reactor, TimerId};
    /// struct Later(Option<TimerId>);
    /// impl Handler for Later {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         self.0 = Some(ctx.set_timer(Duration::from_millis(1)).unwrap());
    ///     }
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, id: TimerId) {
    ///         assert_eq!(Some(id), self.0);
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Later(None))?;
    /// peer.send_bytes(b"start")?;
    /// reactor.run()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` if `after` is too far in the future to represent.
    pub fn set_timer(&mut self, after: Duration) -> Result<TimerId> {
        self.core.set_timer(self.token, after, None)
    }

    /// Sets a periodic timer for this handler, first firing after `every`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// use multiproc::{Context, Handler, Pipe, Reactor, TimerId};
    /// struct Heartbeat(u32);
    /// impl Handler for Heartbeat {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         ctx.set_periodic(Duration::from_millis(1)).unwrap();
    ///     }
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, id: TimerId) {
    ///         self.0 += 1;
    ///         ctx.send(&self.0).unwrap();
    ///         if self.0 == 3 {
    ///             ctx.cancel_timer(id);
    ///             ctx.stop();
    ///         }
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Heartbeat(0))?;
    /// peer.send_bytes(b"start")?;
    /// reactor.run()?;
    /// let beats: Vec<u32> = (0..3).map(|_| peer.recv().unwrap()).collect();
    /// assert_eq!(beats, [1, 2, 3]);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`set_timer`](Self::set_timer); `InvalidInput` for a zero period too.
    pub fn set_periodic(&mut self, every: Duration) -> Result<TimerId> {
        self.core.set_timer(self.token, every, Some(every))
    }

    /// Cancels a timer; it never fires afterwards. True if it was live.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// use multiproc::{Context, Handler, Pipe, Reactor, TimerId};
    /// struct Cancel;
    /// impl Handler for Cancel {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         let never = ctx.set_timer(Duration::from_millis(1)).unwrap();
    ///         assert!(ctx.cancel_timer(never));
    ///         assert!(!ctx.cancel_timer(never));
    ///         ctx.set_timer(Duration::from_millis(5)).unwrap();
    ///     }
    ///     fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
    ///         // Only the second timer fires.
    ///         ctx.send_bytes(b"fired").unwrap();
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, Cancel)?;
    /// peer.send_bytes(b"start")?;
    /// reactor.run()?;
    /// assert_eq!(peer.recv_bytes()?, b"fired");
    /// assert!(!peer.poll(Some(Duration::ZERO))?);
    /// # Ok(()) }
    /// ```
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.core.timers.cancel(id)
    }

    /// Makes the reactor's `run` return after this round.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Context, Handler, Pipe, Reactor};
    /// struct StopOnFirst(usize);
    /// impl Handler for StopOnFirst {
    ///     fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
    ///         self.0 += 1;
    ///         ctx.stop();
    ///     }
    /// }
    /// let (mut peer, conn) = Pipe::new()?;
    /// let mut reactor = Reactor::new()?;
    /// reactor.register(conn, StopOnFirst(0))?;
    /// peer.send_bytes(b"one")?;
    /// reactor.run()?; // returns after the round that delivered "one"
    /// # Ok(()) }
    /// ```
    pub fn stop(&mut self) {
        self.core.stopped = true;
    }
}

impl ReactorHandle {
    /// Runs `task` on the reactor's thread during its next round, waking it if it sleeps.
    /// If the reactor was dropped, `task` is dropped at once instead (as are tasks it never
    /// ran when it was dropped).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let handle = reactor.handle();
    /// let worker = std::thread::spawn(move || {
    ///     handle.post(|reactor| reactor.stop());
    /// });
    /// reactor.run()?;
    /// worker.join().unwrap();
    /// # Ok(()) }
    /// ```
    pub fn post(&self, task: impl FnOnce(&mut Reactor) + Send + 'static) {
        // Held weakly: a handle kept after its reactor was dropped would otherwise keep
        // every task posted from then on (and whatever they own: fds) and run none.
        let (Some(inbox), Some(waker)) = (self.inbox.upgrade(), self.waker.0.upgrade()) else {
            return;
        };
        inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Box::new(task));
        let _ = waker.wake();
        // Should the reactor have been dropped meanwhile, the task goes with `inbox` here.
    }

    /// Stops the reactor's `run` after its next round.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut reactor = multiproc::Reactor::new()?;
    /// let handle = reactor.handle();
    /// std::thread::spawn(move || handle.stop());
    /// reactor.run()?;
    /// # Ok(()) }
    /// ```
    pub fn stop(&self) {
        self.post(|reactor| reactor.stop());
    }
}

impl fmt::Debug for Reactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reactor")
            .field("connections", &self.core.entries.len())
            .field("high_water", &self.core.high_water)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReactorHandle").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Nop;
    impl Handler for Nop {
        fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    }

    /// Registering and removing, round after round that never comes, keeps the lists the
    /// next round reads bounded (they grew by one entry per cycle).
    #[test]
    fn removing_before_any_round_keeps_its_lists_bounded() {
        let mut reactor = Reactor::new().unwrap();
        let (_peer, mut conn) = crate::Pipe::new().unwrap();
        for _ in 0..1000 {
            let token = reactor.register(conn, Nop).unwrap();
            conn = reactor.deregister(token).unwrap();
        }
        assert!(
            reactor.core.again.len() <= 65,
            "{}",
            reactor.core.again.len()
        );
        for _ in 0..1000 {
            let (mut peer, mut end) = crate::Pipe::new().unwrap();
            peer.send_bytes(b"x").unwrap();
            assert!(end.poll(Some(Duration::ZERO)).unwrap());
            assert!(crate::Waitable::is_ready_buffered(&end)); // so the watch is due at once
            let id = reactor.when_ready(end, |_, _| {}).unwrap();
            assert!(reactor.cancel_watch(id));
        }
        assert!(reactor.watches.take_due().len() <= 65);
    }
}
