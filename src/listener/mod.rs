//! `Listener` and `Client`: unrelated processes, on one machine or several, connect and
//! authenticate. Python: `multiprocessing.connection.Listener` / `Client`, with the same
//! addresses and the same handshake on the wire, so either side may be Python.
//!
//! What differs from Python, on purpose:
//!
//! - Handshakes run side by side: `accept` drives every pending handshake at once, so a
//!   client that connects and sends nothing (or a byte a second) delays no other client and
//!   never blocks `accept`. Each has a deadline ([`Listener::set_handshake_timeout`],
//!   default 10 s); past it, `accept` reports that client's failure and goes on.
//! - A handshake frame over 256 bytes is refused from its header, MACs are compared in
//!   constant time, and `Some(b"")` is a key like any other: only `None` means "no
//!   authentication" (Python treats an empty key as none).
//! - A failed handshake is an [`ErrorKind::Authentication`] error from `accept` for that
//!   client; the listener carries on.
//! - The listener is waitable ([`wait`](fn@crate::wait), [`WaitSet`](crate::WaitSet),
//!   [`Reactor::when_ready`](crate::Reactor::when_ready), mio): ready when `try_accept` may
//!   have a connection (or a failure) to hand out.

mod address;
mod auth;
mod socket_file;

use std::collections::VecDeque;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, epoll};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use slab::Slab;

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};

pub use address::{Address, ToAddress};
pub use auth::Digest;
use auth::{Progress, ServerHandshake};
use socket_file::SocketFile;

/// How long a client has to finish the handshake, unless set otherwise.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `Client::connect` waits for the connection and handshake, unless set otherwise.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pending connections the kernel queues for `accept`.
const BACKLOG: i32 = 1024;
/// Events taken per `epoll_wait`; more stay for the next turn (level-triggered).
const EVENTS: usize = 256;
/// The epoll data of the listening socket; handshakes use their slab index + 1.
const LISTENING: u64 = 0;
/// The epoll data of the timer that ends a pause in accepting.
const RESUME: u64 = u64::MAX;
/// The epoll data of the timer that wakes waiters at the first handshake deadline.
const DEADLINE: u64 = u64::MAX - 1;
/// How long accepting pauses when the process is out of file descriptors (or the kernel
/// out of memory for sockets).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// A bound, listening socket that hands out authenticated [`Connection`]s. Python:
/// `multiprocessing.connection.Listener`.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Client, Listener};
/// let mut listener = Listener::bind("127.0.0.1:0", Some(b"secret"))?;
/// let address = listener.local_addr().clone();
/// let client = std::thread::spawn(move || -> multiproc::Result<Vec<u8>> {
///     let mut conn = Client::connect(&address, Some(b"secret"))?;
///     conn.send_bytes(b"ping")?;
///     conn.recv_bytes()
/// });
/// let mut conn = listener.accept()?;
/// assert_eq!(conn.recv_bytes()?, b"ping");
/// conn.send_bytes(b"pong")?;
/// assert_eq!(client.join().unwrap()?, b"pong");
/// # Ok(()) }
/// ```
pub struct Listener {
    socket: Option<OwnedFd>,
    address: Address,
    authkey: Option<Vec<u8>>,
    digest: Digest,
    handshake_timeout: Duration,
    /// Level-triggered epoll over the listening socket and every pending handshake: its fd
    /// is what waiters wait on.
    epoll: OwnedFd,
    pending: Slab<Pending>,
    /// What `accept` hands out next, each with its client's address.
    ready: VecDeque<(Result<Connection>, Option<Address>)>,
    /// The client address of what `accept` last handed out.
    last_accepted: Option<Address>,
    /// The socket file we created, removed on drop if it is still ours.
    owned_file: Option<SocketFile>,
    /// A timerfd in `epoll`, armed while accepting pauses (see `pause_accepting`). Made at
    /// bind: when it is needed, there may be no fd left to make it.
    resume_timer: OwnedFd,
    /// The listening socket is out of `epoll` until `resume_timer` fires.
    accept_paused: bool,
    /// A timerfd in `epoll`, armed for the earliest handshake deadline, so that a client
    /// that sends nothing is dropped at its deadline even when nothing else happens (an
    /// outside waiter would otherwise not wake up to expire it).
    deadline_timer: OwnedFd,
    /// When `deadline_timer` fires, if armed. Handshake deadlines mostly come in order, so
    /// it is set again only for an earlier one, or after it fired.
    deadline_armed: Option<Instant>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("address", &self.address)
            .field("authenticated", &self.authkey.is_some())
            .field("pending", &self.pending.len())
            .field("closed", &self.socket.is_none())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Pending {
    conn: Connection,
    handshake: ServerHandshake,
    /// The client's address (`None`: an unnamed Unix socket).
    peer: Option<Address>,
}

impl Listener {
    /// Binds and listens at `address`; with `Some(authkey)`, every client must pass the
    /// handshake with that key. Python: `Listener(address, authkey=authkey)`.
    ///
    /// TCP port 0 picks a free port ([`local_addr`](Self::local_addr) tells which). A Unix
    /// path whose socket file is left over from a listener that is gone (nothing accepts
    /// there, and the file is ours) is replaced; the file is removed when the listener is
    /// dropped. A live listener there is told from a stale file without connecting to it
    /// (by the file's inode in the kernel's socket diagnostics; only one in another network
    /// namespace sees a connection attempt, which never waits), and binders of one path
    /// take turns (an `flock` on its directory, from `bind(2)` to `listen(2)`), so that one
    /// wins and the others fail with `EADDRINUSE`.
    ///
    /// A listener moved into a [`Process::fork`](crate::Process::fork) closure keeps its
    /// file: the parent's copy, dropped at `start`, leaves it to the child, whose drop
    /// removes it (a child that ends without dropping it, by `exit`, leaves it behind, to
    /// be replaced as stale by the next bind). Other forked children holding a copy of the
    /// socket do not keep the file: dropping or closing the listener removes it.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let listener = multiproc::Listener::bind("@multiproc-doc-bind", None)?;
    /// assert_eq!(listener.local_addr().to_string(), "@multiproc-doc-bind");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an address that does not parse; `Io` if binding fails (the
    /// address is in use, say). Where the kernel's socket diagnostics are refused (a
    /// sandbox), sockets are known only by name in `/proc/net/unix`, and one stale file is
    /// taken for a live one: when a socket still listens under that name though the file
    /// it was bound to was removed and made again (a copy of an old listener kept by a
    /// forked child); remove the file by hand then.
    pub fn bind(address: impl ToAddress, authkey: Option<&[u8]>) -> Result<Listener> {
        let address = address.to_address()?;
        let (socket, address, owned_file) =
            listen(&address).map_err(|e| e.context(format_args!("cannot listen at {address}")))?;
        let parts = (|| -> rustix::io::Result<_> {
            rustix::io::ioctl_fionbio(&socket, true)?;
            let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
            watch(&epoll, &socket, LISTENING)?;
            let resume_timer = new_timer()?;
            watch(&epoll, &resume_timer, RESUME)?;
            let deadline_timer = new_timer()?;
            watch(&epoll, &deadline_timer, DEADLINE)?;
            Ok((epoll, resume_timer, deadline_timer))
        })();
        // On failure no listener will own the socket file: it goes with the failed bind
        // (`owned_file` is dropped before `socket`, bindings going in reverse order).
        let (epoll, resume_timer, deadline_timer) = parts?;
        Ok(Listener {
            socket: Some(socket),
            address,
            authkey: authkey.map(<[u8]>::to_vec),
            digest: Digest::default(),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            epoll,
            pending: Slab::new(),
            ready: VecDeque::new(),
            last_accepted: None,
            owned_file,
            resume_timer,
            accept_paused: false,
            deadline_timer,
            deadline_armed: None,
        })
    }

    /// The address it listens at (with the real port when bound to port 0). Python:
    /// `Listener.address`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let listener = multiproc::Listener::bind("127.0.0.1:0", None)?;
    /// let multiproc::Address::Tcp(addr) = listener.local_addr() else { unreachable!() };
    /// assert_ne!(addr.port(), 0);
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> &Address {
        &self.address
    }

    /// The address of the client that [`accept`](Self::accept) (or `accept_timeout`,
    /// `try_accept`) last reported, whether it handed out its connection or its failed
    /// handshake. Python: `Listener.last_accepted`.
    ///
    /// `None` before the first, and for a client socket without an address of its own:
    /// every Unix-socket client that did not bind a name, multiproc's and Python's `Client`
    /// included (where Python has `''`). For TCP, the client's IP address and port.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Address, Client, Listener};
    /// let mut listener = Listener::bind("127.0.0.1:0", None)?;
    /// assert_eq!(listener.last_accepted(), None);
    /// let _client = Client::connect(listener.local_addr(), None)?;
    /// let _conn = listener.accept()?;
    /// let Some(Address::Tcp(peer)) = listener.last_accepted() else { unreachable!() };
    /// assert!(peer.ip().is_loopback());
    /// # Ok(()) }
    /// ```
    pub fn last_accepted(&self) -> Option<&Address> {
        self.last_accepted.as_ref()
    }

    /// The digest of the challenges this listener sends (default SHA-256, as Python 3.12+).
    /// Every CPython client, 2.7 included, answers any of them (3.11 and older with
    /// HMAC-MD5 over the whole challenge, which is accepted), and answers in any digest
    /// Python allows are accepted whatever this is. [`Digest::Md5`] sends the legacy
    /// 20-byte challenge, as Python 3.11 and older do, for a peer that expects exactly that.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut listener = multiproc::Listener::bind("127.0.0.1:0", Some(b"k"))?;
    /// listener.set_digest(multiproc::Digest::Sha384);
    /// # Ok(()) }
    /// ```
    pub fn set_digest(&mut self, digest: Digest) {
        self.digest = digest;
    }

    /// How long each client has to complete the handshake (default 10 s).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut listener = multiproc::Listener::bind("127.0.0.1:0", Some(b"k"))?;
    /// listener.set_handshake_timeout(std::time::Duration::from_secs(2));
    /// # Ok(()) }
    /// ```
    pub fn set_handshake_timeout(&mut self, timeout: Duration) {
        self.handshake_timeout = timeout;
    }

    /// Waits for the next authenticated connection. Python: `Listener.accept()`.
    ///
    /// # Examples
    /// A client with the wrong key fails for itself; `accept` goes on to the next client:
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Client, ErrorKind, Listener};
    /// let mut listener = Listener::bind("127.0.0.1:0", Some(b"secret"))?;
    /// let address = listener.local_addr().clone();
    /// let clients = std::thread::spawn(move || -> multiproc::Result<Vec<u8>> {
    ///     let wrong = Client::connect(&address, Some(b"guess")).unwrap_err();
    ///     assert_eq!(wrong.kind(), ErrorKind::Authentication);
    ///     let mut conn = Client::connect(&address, Some(b"secret"))?;
    ///     conn.recv_bytes()
    /// });
    /// assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::Authentication);
    /// let mut conn = listener.accept()?;
    /// conn.send_bytes(b"welcome")?;
    /// assert_eq!(clients.join().unwrap()?, b"welcome");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Authentication` when a client failed the handshake (or did not finish it in time):
    /// call `accept` again for the next one; `Closed` after [`close`](Self::close); `Io`.
    pub fn accept(&mut self) -> Result<Connection> {
        self.accept_until(None)?
            .ok_or_else(|| Error::new(ErrorKind::Timeout))
    }

    /// Waits at most `timeout` for the next authenticated connection.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut listener = multiproc::Listener::bind("127.0.0.1:0", None)?;
    /// let err = listener.accept_timeout(std::time::Duration::from_millis(10)).unwrap_err();
    /// assert!(err.is_timeout());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Timeout` if none came in time; otherwise as [`accept`](Self::accept).
    pub fn accept_timeout(&mut self, timeout: Duration) -> Result<Connection> {
        let deadline = Instant::now().checked_add(timeout);
        self.accept_until(deadline)?
            .ok_or_else(|| Error::new(ErrorKind::Timeout))
    }

    /// An authenticated connection if one is ready now, without waiting. Use it when the
    /// listener is ready in [`wait`](fn@crate::wait), a `WaitSet` or mio.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut listener = multiproc::Listener::bind("127.0.0.1:0", None)?;
    /// assert!(listener.try_accept()?.is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`accept`](Self::accept).
    pub fn try_accept(&mut self) -> Result<Option<Connection>> {
        self.accept_until(Some(Instant::now()))
    }

    fn accept_until(&mut self, deadline: Option<Instant>) -> Result<Option<Connection>> {
        if self.socket.is_none() {
            return Err(Error::with_message(ErrorKind::Closed, "listener is closed"));
        }
        loop {
            if let Some((next, peer)) = self.ready.pop_front() {
                self.last_accepted = peer;
                return next.map(Some);
            }
            // Sleep until the deadline or the first handshake deadline, whichever is first
            // (a past deadline still looks once).
            let now = Instant::now();
            let mut until = deadline;
            for (_, p) in &self.pending {
                until = Some(until.map_or(p.handshake.deadline, |u| u.min(p.handshake.deadline)));
            }
            self.turn(until.map(|u| u.saturating_duration_since(now)))?;
            if self.ready.is_empty() && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
        }
    }

    /// Waits at most `timeout` for events, then accepts new clients, advances handshakes
    /// and expires late ones.
    fn turn(&mut self, timeout: Option<Duration>) -> Result<()> {
        let timeout = timeout.map(crate::sys::timespec);
        // On the stack, not in `self`: rustix's `epoll::Event` holds a raw pointer (its data
        // is a union with one), which would make `Listener` neither `Send` nor `Sync`.
        let mut events = [const { MaybeUninit::<epoll::Event>::uninit() }; EVENTS];
        let ready: &[epoll::Event] = match epoll::wait(&self.epoll, &mut events, timeout.as_ref()) {
            Ok((ready, _)) => ready,
            Err(rustix::io::Errno::INTR) => &[],
            Err(e) => return Err(e.into()),
        };
        for event in ready {
            let token = event.data.u64();
            if token == LISTENING {
                self.accept_new()?;
            } else if token == RESUME {
                self.resume_accepting()?;
            } else if token == DEADLINE {
                let mut expirations = [0u8; 8];
                let _ = rustix::io::read(&self.deadline_timer, &mut expirations);
                self.deadline_armed = None;
            } else {
                self.advance(token as usize - 1);
            }
        }
        let now = Instant::now();
        let late: Vec<usize> = self
            .pending
            .iter()
            .filter(|(_, p)| p.handshake.deadline <= now)
            .map(|(i, _)| i)
            .collect();
        for index in late {
            self.finish(index, auth::auth_error("handshake timed out"));
        }
        // Whatever this turn did (the timer fired, handshakes started, ended or expired),
        // the timer fires by the earliest deadline left.
        if let Some(first) = self.pending.iter().map(|(_, p)| p.handshake.deadline).min() {
            self.arm_deadline_timer(first);
        }
        Ok(())
    }

    /// Accepts every connection waiting in the kernel. All of them, to `EAGAIN`, not one per
    /// turn: the listener's epoll fd may be registered edge-triggered (mio, `WaitSet`), which
    /// is told of new arrivals only, so a connection left in the queue would wait for the
    /// next one to arrive.
    fn accept_new(&mut self) -> Result<()> {
        loop {
            let Some(socket) = &self.socket else {
                return Ok(());
            };
            use rustix::io::Errno;
            let (fd, peer) = match rustix::net::acceptfrom_with(socket, SocketFlags::CLOEXEC) {
                Ok((fd, peer)) => (fd, peer.and_then(peer_address)),
                Err(Errno::AGAIN) => return Ok(()),
                // That connection failed (accept(2): network errors pending on the new
                // socket are passed on; retry).
                Err(
                    Errno::INTR
                    | Errno::CONNABORTED
                    | Errno::PROTO
                    | Errno::NETDOWN
                    | Errno::NOPROTOOPT
                    | Errno::HOSTDOWN
                    | Errno::NONET
                    | Errno::HOSTUNREACH
                    | Errno::OPNOTSUPP
                    | Errno::NETUNREACH,
                ) => continue,
                // Out of fds or socket memory: leave the rest queued in the kernel for later.
                Err(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    self.pause_accepting();
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            self.start_handshake(fd, peer)?;
        }
    }

    /// Out of fds: the listening socket stays readable, and the level-triggered epoll would
    /// report it at once, again and again (a busy loop). So it leaves the epoll for
    /// [`ACCEPT_PAUSE`], and the resume timer, which is in the epoll too (outside waiters
    /// wake for it), brings it back. If the timer cannot be armed, nothing changes.
    fn pause_accepting(&mut self) {
        let (Some(socket), false) = (&self.socket, self.accept_paused) else {
            return;
        };
        if self.arm_resume_timer(ACCEPT_PAUSE) && epoll::delete(&self.epoll, socket).is_ok() {
            self.accept_paused = true;
        }
    }

    /// The resume timer fired: the listening socket goes back into the epoll, and what
    /// waits is accepted (or the pause starts again).
    fn resume_accepting(&mut self) -> Result<()> {
        let mut expirations = [0u8; 8];
        let _ = rustix::io::read(&self.resume_timer, &mut expirations);
        let Some(socket) = self.socket.as_ref().filter(|_| self.accept_paused) else {
            return Ok(());
        };
        if let Err(e) = watch(&self.epoll, socket, LISTENING) {
            // Short of memory too (or of epoll watches): try again after another pause,
            // rather than never accept again.
            self.arm_resume_timer(ACCEPT_PAUSE);
            return Err(e.into());
        }
        self.accept_paused = false;
        self.accept_new()
    }

    /// Sets the resume timer to fire once after `after` (`Duration::ZERO`: disarms it).
    fn arm_resume_timer(&self, after: Duration) -> bool {
        set_timer(&self.resume_timer, after)
    }

    /// Makes the deadline timer fire by `deadline`, unless it fires earlier already.
    fn arm_deadline_timer(&mut self, deadline: Instant) {
        if self.deadline_armed.is_some_and(|armed| armed <= deadline) {
            return;
        }
        // At least a nanosecond: zero would disarm it.
        let after = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_nanos(1));
        if set_timer(&self.deadline_timer, after) {
            self.deadline_armed = Some(deadline);
        }
    }

    /// Takes a freshly accepted socket: ready at once without a key, else its handshake
    /// starts.
    fn start_handshake(&mut self, fd: OwnedFd, peer: Option<Address>) -> Result<()> {
        // Linux copies `TCP_NODELAY` from the listening socket (see `listen`).
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        if matches!(self.address, Address::Tcp(_)) {
            let _ = rustix::net::sockopt::set_tcp_nodelay(&fd, true);
        }
        let mut conn = Connection::from_socket(fd);
        if self.authkey.is_none() {
            self.ready.push_back((Ok(conn), peer));
            return Ok(());
        }
        // A timeout too large for an Instant is as good as none: a year.
        let now = Instant::now();
        let deadline = now
            .checked_add(self.handshake_timeout)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        let handshake = match ServerHandshake::start(&mut conn, self.digest, deadline) {
            Ok(h) => h,
            Err(e) => {
                let failed = auth::auth_error(format!("handshake failed: {e}"));
                self.ready.push_back((Err(failed), peer));
                return Ok(());
            }
        };
        let entry = self.pending.vacant_entry();
        let index = entry.key();
        watch(&self.epoll, &conn, index as u64 + 1)?;
        // No read yet: the answer to a challenge sent this instant cannot be there.
        entry.insert(Pending {
            conn,
            handshake,
            peer,
        });
        self.arm_deadline_timer(deadline);
        Ok(())
    }

    fn advance(&mut self, index: usize) {
        let Some(key) = self.authkey.as_deref() else {
            return;
        };
        let Some(pending) = self.pending.get_mut(index) else {
            return;
        };
        match pending.handshake.advance(&mut pending.conn, key) {
            Ok(Progress::Waiting) => {}
            Ok(Progress::Done) => {
                let (conn, peer) = self.take(index);
                self.ready.push_back((Ok(conn), peer));
            }
            Err(e) => self.finish(index, e),
        }
    }

    /// Takes a pending handshake's connection out, with its client's address.
    fn take(&mut self, index: usize) -> (Connection, Option<Address>) {
        let pending = self.pending.remove(index);
        let _ = epoll::delete(&self.epoll, &pending.conn);
        (pending.conn, pending.peer)
    }

    /// Ends a pending handshake with `failure`, which `accept` reports for its client.
    fn finish(&mut self, index: usize, failure: Error) {
        let (conn, peer) = self.take(index);
        drop(conn);
        self.ready.push_back((Err(failure), peer));
    }

    /// Stops listening: the socket is closed (and its file removed); pending handshakes are
    /// dropped. Python: `Listener.close()`. In the parent's copy of a listener moved into a
    /// [`Process::fork`](crate::Process::fork) closure, dropped at `start`, it only closes
    /// that copy's fds: the child goes on listening (see [`bind`](Self::bind)).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let mut listener = multiproc::Listener::bind("127.0.0.1:0", None)?;
    /// listener.close();
    /// assert_eq!(listener.accept().unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// # Ok(()) }
    /// ```
    pub fn close(&mut self) {
        // The file first, while the socket still listens: a binder that came in between
        // would take the file for stale and replace it.
        self.let_go_of_file();
        if crate::process::handed_to_child() {
            // The parent's copy of a listener moved into a fork's closure, dropped at
            // `start` (a `close` in some `Drop` of the user's): the epoll instance and the
            // timers are the child's too, shared by the fork, so only this copy's fds go.
            self.socket = None;
            self.pending.clear();
            self.ready.clear();
            return;
        }
        if let Some(socket) = self.socket.take() {
            let _ = epoll::delete(&self.epoll, &socket);
        }
        self.accept_paused = false;
        self.arm_resume_timer(Duration::ZERO);
        set_timer(&self.deadline_timer, Duration::ZERO);
        self.deadline_armed = None;
        let indices: Vec<usize> = self.pending.iter().map(|(i, _)| i).collect();
        for index in indices {
            drop(self.take(index));
        }
        self.ready.clear();
    }

    /// Removes the socket file, if it is still ours, and forgets it (a later close or drop
    /// finds none to remove). Not in the parent's copy of a listener moved into a fork's
    /// closure, dropped at `start` (whether by dropping the listener or by a `close` in
    /// some `Drop` of the user's): the child listens on the file and removes it itself.
    fn let_go_of_file(&mut self) {
        if let Some(file) = self.owned_file.take() {
            if crate::process::handed_to_child() {
                file.leave();
            }
        }
    }
}

/// An accepted client's address, as `accept(2)` gave it: `None` for an unnamed Unix socket
/// (what a client that connects without binding is).
fn peer_address(peer: rustix::net::SocketAddrAny) -> Option<Address> {
    use std::os::unix::ffi::OsStrExt;
    match peer.address_family() {
        AddressFamily::INET | AddressFamily::INET6 => {
            std::net::SocketAddr::try_from(peer).ok().map(Address::Tcp)
        }
        AddressFamily::UNIX => {
            let unix = rustix::net::SocketAddrUnix::try_from(peer).ok()?;
            // rustix 1.1 hands an unnamed peer over as the empty abstract name (one NUL
            // byte of `sun_path`), which no client binds in practice: both are no name.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            if let Some(name) = unix.abstract_name() {
                return (!name.is_empty()).then(|| Address::Abstract(name.to_vec()));
            }
            let path = unix.path_bytes().filter(|p| !p.is_empty())?;
            Some(Address::Unix(std::ffi::OsStr::from_bytes(path).into()))
        }
        _ => None,
    }
}

/// A non-blocking monotonic timerfd, disarmed.
fn new_timer() -> rustix::io::Result<OwnedFd> {
    rustix::time::timerfd_create(
        rustix::time::TimerfdClockId::Monotonic,
        rustix::time::TimerfdFlags::CLOEXEC | rustix::time::TimerfdFlags::NONBLOCK,
    )
}

/// Sets `timer` to fire once after `after` (`Duration::ZERO`: disarms it).
fn set_timer(timer: &OwnedFd, after: Duration) -> bool {
    let spec = rustix::time::Itimerspec {
        it_interval: crate::sys::timespec(Duration::ZERO),
        it_value: crate::sys::timespec(after),
    };
    rustix::time::timerfd_settime(timer, rustix::time::TimerfdTimerFlags::empty(), &spec).is_ok()
}

/// Adds `fd` to the listener's level-triggered `epoll`, readable events tagged `token`.
fn watch(epoll: &OwnedFd, fd: &impl AsFd, token: u64) -> rustix::io::Result<()> {
    epoll::add(
        epoll,
        fd,
        epoll::EventData::new_u64(token),
        epoll::EventFlags::IN,
    )
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Here, so that the file goes before the socket closes (as `socket`, a field, is
        // dropped after this).
        self.let_go_of_file();
    }
}

impl crate::wait::Waitable for Listener {
    /// An epoll fd covering the listening socket and every pending handshake.
    fn wait_fd(&self) -> Result<BorrowedFd<'_>> {
        if self.socket.is_none() {
            return Err(Error::with_message(ErrorKind::Closed, "listener is closed"));
        }
        Ok(self.epoll.as_fd())
    }

    fn is_ready(&mut self) -> bool {
        if self.ready.is_empty() && self.socket.is_some() {
            let _ = self.turn(Some(Duration::ZERO));
        }
        !self.ready.is_empty()
    }

    fn is_ready_buffered(&self) -> bool {
        !self.ready.is_empty()
    }
}

impl mio::event::Source for Listener {
    /// Registers the listener's epoll fd: an event means `try_accept` may have something.
    /// Call `try_accept` until it returns `None`.
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.epoll.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.epoll.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.epoll.as_raw_fd()).deregister(registry)
    }
}

/// A listening socket for `address`, the address it really got, and the socket file it
/// created.
fn listen(address: &Address) -> Result<(OwnedFd, Address, Option<SocketFile>)> {
    let flags = SocketFlags::CLOEXEC;
    match address {
        Address::Tcp(addr) => {
            let family = if addr.is_ipv4() {
                AddressFamily::INET
            } else {
                AddressFamily::INET6
            };
            let socket = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
            rustix::net::sockopt::set_socket_reuseaddr(&socket, true)?;
            // Accepted sockets inherit it on Linux: one `setsockopt` per connection fewer.
            #[cfg(any(target_os = "linux", target_os = "android"))]
            rustix::net::sockopt::set_tcp_nodelay(&socket, true)?;
            rustix::net::bind(&socket, addr)?;
            rustix::net::listen(&socket, BACKLOG)?;
            let local = rustix::net::getsockname(&socket)?;
            let local = std::net::SocketAddr::try_from(local).map_err(|_| {
                Error::with_message(ErrorKind::Io, "listening socket has no IP address")
            })?;
            Ok((socket, Address::Tcp(local), None))
        }
        Address::Unix(path) => {
            let unix = unix_path(path)?;
            let socket =
                rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
            // Held from before `bind(2)` to after `listen(2)`. Between the two, the file is
            // there with nothing listening on it: to another binder it looks stale (a
            // connection is refused), and without the lock it would replace it, so that
            // both binds succeed, this listener unreachable and its drop removing the
            // other's file. And two binders over one stale file must not both replace it
            // (the second would remove the first's new file).
            let lock = socket_file::lock_directory_of(path);
            match rustix::net::bind(&socket, &unix) {
                Err(rustix::io::Errno::ADDRINUSE) => {
                    if !socket_file::is_stale(path) {
                        return Err(rustix::io::Errno::ADDRINUSE.into());
                    }
                    std::fs::remove_file(path)?;
                    rustix::net::bind(&socket, &unix)?;
                }
                other => other?,
            }
            // The file exists now: identified at once, so that a failure from here on
            // removes it (and only it) rather than leave it behind, still under the lock
            // (`file` is dropped before `lock`).
            let file = SocketFile::bound_at(path)?;
            rustix::net::listen(&socket, BACKLOG)?;
            drop(lock);
            Ok((socket, address.clone(), Some(file)))
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Address::Abstract(name) => {
            let unix = abstract_name(name)?;
            let socket =
                rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)?;
            rustix::net::bind(&socket, &unix)?;
            rustix::net::listen(&socket, BACKLOG)?;
            Ok((socket, address.clone(), None))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Address::Abstract(_) => Err(abstract_unsupported()),
    }
}

/// The kernel's address for a socket path, or `InvalidInput` for a path it cannot hold:
/// empty (the kernel would read it as the abstract name `""`), with a NUL byte, or too long
/// for `sun_path` (108 bytes on Linux).
fn unix_path(path: &std::path::Path) -> Result<rustix::net::SocketAddrUnix> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(invalid_address(
            "empty socket path",
            rustix::io::Errno::INVAL,
        ));
    }
    if bytes.contains(&0) {
        return Err(invalid_address(
            "a socket path cannot contain a NUL byte",
            rustix::io::Errno::INVAL,
        ));
    }
    rustix::net::SocketAddrUnix::new(path).map_err(|errno| {
        address_error(
            errno,
            "the socket path",
            bytes.len(),
            "; use a shorter (relative, say) path or an abstract name",
        )
    })
}

/// The kernel's address for an abstract name, or `InvalidInput` for a name too long for
/// `sun_path` (107 bytes on Linux, after the leading NUL).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_name(name: &[u8]) -> Result<rustix::net::SocketAddrUnix> {
    rustix::net::SocketAddrUnix::new_abstract_name(name)
        .map_err(|errno| address_error(errno, "the abstract name", name.len(), ""))
}

/// The error for `errno` from making the socket address of `what`, `len` bytes long:
/// `ENAMETOOLONG` is `InvalidInput`, saying so and then `advice`; any other, the OS error.
fn address_error(errno: rustix::io::Errno, what: &str, len: usize, advice: &str) -> Error {
    if errno != rustix::io::Errno::NAMETOOLONG {
        return errno.into();
    }
    invalid_address(
        format!("{what} is {len} bytes, too long for a Unix socket address{advice}"),
        errno,
    )
}

/// `InvalidInput` saying `message`, with `errno` (what the kernel says) as its source.
fn invalid_address(
    message: impl Into<std::borrow::Cow<'static, str>>,
    errno: rustix::io::Errno,
) -> Error {
    Error::with_source(
        ErrorKind::InvalidInput,
        message,
        std::io::Error::from(errno),
    )
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_unsupported() -> Error {
    Error::with_message(
        ErrorKind::Unsupported,
        "abstract socket names exist on Linux only",
    )
}

/// Connects to a [`Listener`] (or a Python `Listener`). Python:
/// `multiprocessing.connection.Client`.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use multiproc::{Client, Listener};
/// let mut listener = Listener::bind("@multiproc-doc-client", Some(b"k"))?;
/// let connect = std::thread::spawn(|| {
///     Client::new("@multiproc-doc-client")
///         .authkey(b"k")
///         .timeout(Duration::from_secs(5))
///         .open()
/// });
/// let _server_side = listener.accept()?;
/// let _client_side = connect.join().unwrap()?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    /// What [`ToAddress::to_addresses`] gave, or why it failed.
    addresses: std::result::Result<Vec<Address>, String>,
    authkey: Option<Vec<u8>>,
    timeout: Duration,
    digest: Digest,
}

impl Client {
    /// Connects to `address`, authenticating with `authkey` if given. Python:
    /// `Client(address, authkey=authkey)`. Waits at most 10 s for the connection and the
    /// handshake; use [`Client::new`] to choose.
    ///
    /// A host name with several addresses ([`ToAddress::to_addresses`]: IPv4 ones first,
    /// the address Python would use) is tried one address at a time, in that order, until
    /// one connects; each try gets an equal share of the time left (the last all of it), so
    /// an address that never answers leaves time for the next. Python tries only the first
    /// IPv4 address.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::{Client, Listener};
    /// let mut listener = Listener::bind("127.0.0.1:0", None)?;
    /// let address = listener.local_addr().clone();
    /// let server = std::thread::spawn(move || -> multiproc::Result<()> {
    ///     let mut conn = listener.accept()?;
    ///     let got = conn.recv_bytes()?;
    ///     conn.send_bytes(&got)
    /// });
    /// // No key on either side: no handshake, as with Python's `authkey=None`.
    /// let mut conn = Client::connect(&address, None)?;
    /// conn.send_bytes(b"echo")?;
    /// assert_eq!(conn.recv_bytes()?, b"echo");
    /// server.join().unwrap()?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` for an address that does not parse; `Timeout` if the connection took
    /// too long; `Authentication` if the handshake failed (a wrong key, a server without
    /// one, or a slow one); `Io` (nothing listens there, say). With several addresses and
    /// none connecting, the last one's error.
    pub fn connect(address: impl ToAddress, authkey: Option<&[u8]>) -> Result<Connection> {
        let mut client = Client::new(address);
        client.authkey = authkey.map(<[u8]>::to_vec);
        client.open()
    }

    /// A client for `address`, to configure before [`open`](Self::open)ing. A host name is
    /// resolved here, once: its addresses are what every `open` tries, and the resolver's
    /// wait is not part of the [`timeout`](Self::timeout). An address that does not parse or
    /// resolve is `open`'s `InvalidInput`.
    ///
    /// # Examples
    /// ```
    /// let client = multiproc::Client::new("127.0.0.1:6000").authkey(b"secret");
    /// # let _ = client;
    /// ```
    pub fn new(address: impl ToAddress) -> Client {
        Client {
            addresses: address.to_addresses().map_err(|e| e.to_string()),
            authkey: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            digest: Digest::default(),
        }
    }

    /// Authenticate with this key.
    ///
    /// # Examples
    /// ```
    /// let client = multiproc::Client::new("@svc").authkey(b"");
    /// # let _ = client;
    /// ```
    pub fn authkey(mut self, authkey: &[u8]) -> Client {
        self.authkey = Some(authkey.to_vec());
        self
    }

    /// How long connecting plus the handshake may take (default 10 s).
    ///
    /// # Examples
    /// ```
    /// let client = multiproc::Client::new("@svc").timeout(std::time::Duration::from_secs(1));
    /// # let _ = client;
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The digest of the challenge this client sends the server (default SHA-256). Every
    /// CPython listener answers any of them (3.11 and older with HMAC-MD5 over the whole
    /// challenge, which is accepted); [`Digest::Md5`] sends the legacy 20-byte challenge, for
    /// a peer that expects exactly that.
    ///
    /// # Examples
    /// ```
    /// let client = multiproc::Client::new("@svc").digest(multiproc::Digest::Md5);
    /// # let _ = client;
    /// ```
    pub fn digest(mut self, digest: Digest) -> Client {
        self.digest = digest;
        self
    }

    /// Connects and authenticates.
    ///
    /// # Examples
    /// ```
    /// let err = multiproc::Client::new("@multiproc-nobody-listens").open().unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::Io);
    /// ```
    ///
    /// # Errors
    /// As [`Client::connect`].
    pub fn open(&self) -> Result<Connection> {
        let addresses = self
            .addresses
            .as_ref()
            .map_err(|e| Error::with_message(ErrorKind::InvalidInput, e.clone()))?;
        let deadline = Instant::now()
            .checked_add(self.timeout)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        let (fd, address, readable) = connect_any(addresses, deadline, self.authkey.is_some())?;
        let tcp = matches!(address, Address::Tcp(_));
        let mut conn = Connection::from_socket(fd);
        if let Some(key) = &self.authkey {
            auth::client_handshake(&mut conn, key, self.digest, deadline, tcp, readable)?;
        }
        Ok(conn)
    }
}

/// Connects to the first of `addresses` that takes a connection, trying them in order;
/// each try may take an equal share of the time left until `deadline`, the last all of it.
/// Returns the socket, the address it connected to and whether the server's first message
/// is already here (see [`connect_to`]); if none connects, the last address's error.
fn connect_any(
    addresses: &[Address],
    deadline: Instant,
    then_readable: bool,
) -> Result<(OwnedFd, &Address, bool)> {
    let Some((last, earlier)) = addresses.split_last() else {
        return Err(Error::with_message(
            ErrorKind::InvalidInput,
            "no address to connect to",
        ));
    };
    for (i, address) in earlier.iter().enumerate() {
        let now = Instant::now();
        let share = deadline.saturating_duration_since(now) / (addresses.len() - i) as u32;
        if let Ok((fd, readable)) = connect_to(address, now + share, then_readable) {
            return Ok((fd, address, readable));
        }
    }
    let (fd, readable) = connect_to(last, deadline, then_readable)?;
    Ok((fd, last, readable))
}

/// Connects to one address, waiting at most until `deadline`. Returns the socket and
/// whether the server's first message (its challenge) is already here (TCP with
/// `then_readable` only; see [`connect_tcp`]).
fn connect_to(
    address: &Address,
    deadline: Instant,
    then_readable: bool,
) -> Result<(OwnedFd, bool)> {
    let connected = match address {
        Address::Tcp(addr) => connect_tcp(addr, deadline, then_readable),
        Address::Unix(path) => {
            unix_path(path).and_then(|unix| Ok((connect_unix(&unix, deadline)?, false)))
        }
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Address::Abstract(name) => {
            abstract_name(name).and_then(|unix| Ok((connect_unix(&unix, deadline)?, false)))
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Address::Abstract(_) => Err(abstract_unsupported()),
    };
    connected.map_err(|e| e.context(format_args!("cannot connect to {address}")))
}

/// `connect(2)` over TCP, waiting at most until `deadline`: the socket connects without
/// blocking, then goes back to blocking mode (a `Connection` never sets `O_NONBLOCK`, which
/// the processes sharing the fd would all see), and one `poll` waits for the connection:
/// with `then_readable` (a handshake follows, which starts with the server's message) for
/// its first bytes too, so that no `poll` is spent on a connection that loopback completes
/// within `connect`. Returns the socket and whether it is readable (always false without
/// `then_readable`).
fn connect_tcp(
    addr: &std::net::SocketAddr,
    deadline: Instant,
    then_readable: bool,
) -> Result<(OwnedFd, bool)> {
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    )?;
    let connected = match rustix::net::connect(&fd, addr) {
        Ok(()) => true,
        // The connection goes on in the background either way.
        Err(rustix::io::Errno::INPROGRESS | rustix::io::Errno::INTR) => false,
        Err(e) => return Err(e.into()),
    };
    rustix::io::ioctl_fionbio(&fd, false)?;
    rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
    if connected && !then_readable {
        return Ok((fd, false));
    }
    let wanted = if then_readable {
        PollFlags::IN
    } else {
        PollFlags::OUT
    };
    let mut fds = [PollFd::new(&fd, wanted)];
    if crate::sys::fd::poll_until(&mut fds, Some(deadline))? == 0 {
        // Out of time. Connected but not readable: the handshake reports its own timeout.
        if connected || crate::sys::fd::poll_now(fd.as_fd(), PollFlags::OUT)? {
            return Ok((fd, false));
        }
        return Err(Error::with_message(
            ErrorKind::Timeout,
            "timed out connecting",
        ));
    }
    let revents = fds[0].revents();
    if revents.intersects(PollFlags::ERR | PollFlags::HUP) {
        // A failed connect (refused, unreachable) is an I/O error, as from `connect`; a
        // connection the server closed at once goes on to the handshake, which says so.
        rustix::net::sockopt::socket_error(&fd)??;
    }
    Ok((fd, then_readable && revents.contains(PollFlags::IN)))
}

/// `connect(2)` on a Unix socket, waiting at most until `deadline`. A listener whose accept
/// queue is full makes a blocking connect wait for room for ever; Linux bounds that wait by
/// the socket's send timeout (`SO_SNDTIMEO`; `unix_stream_connect` fails with EAGAIN when it
/// runs out), so set one for the connect and clear it afterwards.
///
/// The send timeout is what is left until `deadline`, set again before each try: a try cut
/// short by a signal (`EINTR`) would otherwise wait the whole timeout again.
fn connect_unix(address: &rustix::net::SocketAddrUnix, deadline: Instant) -> Result<OwnedFd> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    loop {
        // Zero would mean "no timeout".
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        rustix::net::sockopt::set_socket_timeout(
            &fd,
            rustix::net::sockopt::Timeout::Send,
            Some(left),
        )?;
        match rustix::net::connect(&fd, address) {
            Ok(()) => break,
            // EAGAIN: the send timeout ran out, which the kernel counts in clock ticks, so
            // it may run out a little before the deadline: the rest is waited too.
            Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN)
                if Instant::now() < deadline =>
            {
                continue;
            }
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => {
                return Err(Error::with_message(
                    ErrorKind::Timeout,
                    "timed out connecting: the listener's accept queue stayed full",
                ));
            }
            Err(e) => return Err(e.into()),
        }
    }
    rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Send, None)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    #[test]
    fn listener_and_client_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<super::Listener>();
        check::<super::Client>();
    }

    #[test]
    fn tcp_connections_have_nodelay_on_both_ends() {
        for key in [None, Some(&b"k"[..])] {
            let mut listener = super::Listener::bind("127.0.0.1:0", key).unwrap();
            let address = listener.local_addr().clone();
            let client = std::thread::spawn(move || super::Client::connect(&address, key));
            let server_side = listener.accept().unwrap();
            let client_side = client.join().unwrap().unwrap();
            assert!(rustix::net::sockopt::tcp_nodelay(&server_side).unwrap());
            assert!(rustix::net::sockopt::tcp_nodelay(&client_side).unwrap());
        }
    }
}
