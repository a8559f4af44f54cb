//! Every blocking or timed call of the public API under a storm of signals: one every 2 ms,
//! aimed at the calling thread only, with a handler installed without `SA_RESTART` (so every
//! blocking syscall fails with `EINTR`). Python's rule (PEP 475) is the bar: the call carries
//! on, loses nothing, and its timeout counts from the call's start (a wait that restarted its
//! timeout at each signal would never end); nor may a signal make it spin.
//!
//! SIGUSR2 is used by no other test in this crate, and only the thread under test is ever
//! signalled. Here, not under `tests/`, because installing the handler and aiming signals at
//! a thread take `unsafe`.

use std::cell::Cell;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::thread_cpu;
use crate::{
    Client, Command, Connection, ErrorKind, Handler, JoinableQueue, Listener, Pipe, Process, Queue,
    Reactor, Result, SimpleQueue, WaitSet, Waitable, wait,
};

const SIGNAL: libc::c_int = libc::SIGUSR2;
/// Between two signals.
const EVERY: Duration = Duration::from_millis(2);
/// The timeout the timed calls are given.
const TIMEOUT: Duration = Duration::from_millis(300);
/// A timed call returning later than this restarted its timeout (or hung until the storm
/// stopped): generous, for a noisy 2-CPU machine.
const LATE: Duration = Duration::from_secs(3);
/// The storm stops after this long even if the call has not returned, so that a call that
/// restarts its timeout at each signal returns (too late) instead of hanging the suite.
const STORM_LIMIT: Duration = Duration::from_secs(5);
/// CPU time the waiting thread may use in a 300 ms wait: a loop that spins on `EINTR` uses
/// about all of it; ~150 signals and their handlers take well under a millisecond.
const BUSY: Duration = Duration::from_millis(100);

extern "C" fn ignore_signal(_: libc::c_int) {}

/// Installs a handler that does nothing for [`SIGNAL`], without `SA_RESTART`.
fn install_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid starting value; every field used is set.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = ignore_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = 0; // no SA_RESTART: blocking syscalls fail with EINTR
        // SAFETY: `sa_mask` is a valid sigset to initialise.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: valid signal number and action; the handler does nothing, which is
        // async-signal-safe. No other test in this crate uses SIGUSR2.
        let rc = unsafe { libc::sigaction(SIGNAL, &action, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaction failed");
    });
}

/// What a call did under the storm.
struct Stormed<R> {
    result: R,
    elapsed: Duration,
    cpu: Duration,
    /// Signals aimed at the calling thread while the call ran.
    sent: usize,
}

/// Runs `call` while another thread signals the calling thread every [`EVERY`]; after
/// `after` signals, that thread runs `action` (what ends a blocking call: a message sent,
/// an item put, a child's stdin closed) and goes on signalling until `call` returns.
fn storm_then<R>(
    after: usize,
    action: impl FnOnce() + Send,
    call: impl FnOnce() -> R,
) -> Stormed<R> {
    install_handler();
    // SAFETY: `pthread_self` is always safe to call.
    let target = unsafe { libc::pthread_self() };
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let stop = &stop;
        let signaller = s.spawn(move || {
            let start = Instant::now();
            let mut action = Some(action);
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) && start.elapsed() < STORM_LIMIT {
                // SAFETY: the target thread is the one running this scope: it stays alive
                // until this thread has been joined (at the latest when the scope ends, even
                // if it panics), so `target` names a live thread.
                let rc = unsafe { libc::pthread_kill(target, SIGNAL) };
                assert_eq!(rc, 0);
                sent += 1;
                if sent == after {
                    if let Some(action) = action.take() {
                        action();
                    }
                }
                std::thread::sleep(EVERY);
            }
            sent
        });
        /// Stops the storm however `call` ends, so a panicking test does not wait out
        /// the storm's limit.
        struct StopOnDrop<'a>(&'a AtomicBool);
        impl Drop for StopOnDrop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let guard = StopOnDrop(stop);
        let (cpu_before, start) = (thread_cpu(), Instant::now());
        let result = call();
        let (elapsed, cpu) = (start.elapsed(), thread_cpu() - cpu_before);
        drop(guard);
        let sent = signaller.join().expect("signaller panicked");
        Stormed {
            result,
            elapsed,
            cpu,
            sent,
        }
    })
}

/// Runs `call` under the storm, with nothing else happening.
fn storm<R>(call: impl FnOnce() -> R) -> Stormed<R> {
    storm_then(usize::MAX, || {}, call)
}

/// The result of a call that waited out its [`TIMEOUT`] under the storm; panics unless it
/// waited neither less nor much more (restarted), and did not spin.
fn on_time<R>(what: &str, s: Stormed<R>) -> R {
    assert!(
        s.elapsed >= TIMEOUT,
        "{what}: returned after {:?}, before its {TIMEOUT:?} timeout",
        s.elapsed
    );
    assert!(
        s.elapsed < LATE,
        "{what}: returned after {:?} for a {TIMEOUT:?} timeout (restarted at each signal?)",
        s.elapsed
    );
    quietly(what, s)
}

/// The result of a call that was really signalled; panics if it spun.
fn quietly<R>(what: &str, s: Stormed<R>) -> R {
    assert!(s.sent >= 10, "{what}: only {} signals sent", s.sent);
    assert!(
        s.cpu < BUSY,
        "{what}: used {:?} of CPU in {:?}: it spins on EINTR",
        s.cpu,
        s.elapsed
    );
    s.result
}

/// Signals sent before a blocking call is ended by the storm's action: ~100 ms of them.
const BEFORE_ACTION: usize = 50;

/// An abstract socket name no other test or process uses.
fn unique_address(what: &str) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    format!(
        "@multiproc-signal-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// -------------------------------------------------------------------------------------------
// wait() and WaitSet

#[test]
fn wait_times_out_on_time_under_signals() -> Result<()> {
    let (_tx, rx) = Pipe::new()?;
    let mut objects = [rx];
    let s = storm(|| wait(&mut objects, Some(TIMEOUT)));
    assert_eq!(on_time("wait", s)?, Vec::<usize>::new());
    Ok(())
}

#[test]
fn wait_without_timeout_carries_on_through_signals() -> Result<()> {
    let (mut tx, rx) = Pipe::new()?;
    let (_idle_tx, idle) = Pipe::new()?;
    let mut objects = [idle, rx];
    let s = storm_then(
        BEFORE_ACTION,
        || tx.send_bytes(b"late").unwrap(),
        || wait(&mut objects, None),
    );
    assert_eq!(quietly("wait", s)?, [1]);
    assert_eq!(objects[1].recv_bytes()?, b"late");
    Ok(())
}

#[test]
fn wait_set_times_out_on_time_and_carries_on_under_signals() -> Result<()> {
    let (mut tx, rx) = Pipe::new()?;
    let mut set = WaitSet::new()?;
    let key = set.insert(rx)?;
    let s = storm(|| set.wait(Some(TIMEOUT)));
    assert!(on_time("WaitSet::wait", s)?.is_empty());
    let s = storm_then(
        BEFORE_ACTION,
        || tx.send_bytes(b"late").unwrap(),
        || set.wait(None),
    );
    assert_eq!(quietly("WaitSet::wait", s)?, [key]);
    assert_eq!(set.get_mut(key).unwrap().recv_bytes()?, b"late");
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Connection

#[test]
fn connection_poll_and_recv_timeout_keep_their_deadline_under_signals() -> Result<()> {
    let (tx, mut rx) = Pipe::new()?;
    let s = storm(|| rx.poll(Some(TIMEOUT)));
    assert!(!on_time("Connection::poll", s)?);
    let s = storm(|| rx.recv_timeout::<u32>(TIMEOUT));
    assert_eq!(
        on_time("Connection::recv_timeout", s).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    // Half a message: the wait for the rest keeps the deadline, and nothing is lost.
    // (CPython's header: the length as a big-endian i32.)
    rustix::io::write(&tx, &[&5u32.to_be_bytes()[..], b"ab"].concat())?;
    let s = storm(|| rx.recv_bytes_timeout(TIMEOUT));
    assert_eq!(
        on_time("Connection::recv_bytes_timeout", s)
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    let s = storm_then(
        BEFORE_ACTION,
        || assert_eq!(rustix::io::write(&tx, b"cde"), Ok(3)),
        || rx.recv_bytes_timeout(LATE),
    );
    assert_eq!(quietly("Connection::recv_bytes_timeout", s)?, b"abcde");
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Queues (futex sleeps)

#[test]
fn queue_get_and_put_keep_their_deadline_and_carry_on_under_signals() -> Result<()> {
    let q = Queue::<u32>::bounded(1)?;
    let s = storm(|| q.get_timeout(TIMEOUT));
    assert_eq!(
        on_time("Queue::get_timeout", s).unwrap_err().kind(),
        ErrorKind::Empty
    );
    let s = storm_then(BEFORE_ACTION, || q.put(&1).unwrap(), || q.get());
    assert_eq!(quietly("Queue::get", s)?, 1);
    q.put(&2)?;
    let s = storm(|| q.put_timeout(&3, TIMEOUT));
    assert_eq!(
        on_time("Queue::put_timeout", s).unwrap_err().kind(),
        ErrorKind::Full
    );
    let taken = Mutex::new(None);
    let s = storm_then(
        BEFORE_ACTION,
        || *taken.lock().unwrap() = Some(q.get().unwrap()),
        || q.put(&4),
    );
    quietly("Queue::put", s)?;
    assert_eq!(*taken.lock().unwrap(), Some(2));
    assert_eq!(q.try_get()?, 4);
    Ok(())
}

#[test]
fn simple_queue_get_carries_on_under_signals() -> Result<()> {
    let q = SimpleQueue::<String>::new()?;
    let s = storm_then(BEFORE_ACTION, || q.put(&"late".into()).unwrap(), || q.get());
    assert_eq!(quietly("SimpleQueue::get", s)?, "late");
    Ok(())
}

#[test]
fn joinable_queue_join_keeps_its_deadline_and_carries_on_under_signals() -> Result<()> {
    let q = JoinableQueue::<u32>::new()?;
    q.put(&1)?;
    assert_eq!(q.get()?, 1);
    let s = storm(|| q.join_timeout(TIMEOUT));
    assert_eq!(
        on_time("JoinableQueue::join_timeout", s)
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );
    let s = storm_then(BEFORE_ACTION, || q.task_done().unwrap(), || q.join());
    quietly("JoinableQueue::join", s)?;
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Processes

/// A started `cat` that runs until the returned write end of its stdin is dropped.
fn cat() -> Result<(Process, OwnedFd)> {
    let (read, write) = crate::sys::fd::pipe()?;
    let mut command = Command::new("cat");
    command.stdin(read).stdout(std::process::Stdio::null());
    let mut p = Process::command(command);
    p.start()?;
    Ok((p, write))
}

#[test]
fn process_join_and_sentinel_keep_their_deadline_and_carry_on_under_signals() -> Result<()> {
    let (p, stdin) = cat()?;
    let s = storm(|| p.join_timeout(TIMEOUT));
    assert_eq!(
        on_time("Process::join_timeout", s).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    let mut sentinel = [p.sentinel()?];
    let s = storm(|| wait(&mut sentinel, Some(TIMEOUT)));
    assert!(on_time("wait on a sentinel", s)?.is_empty());
    let s = storm_then(BEFORE_ACTION, || drop(stdin), || p.join());
    assert_eq!(quietly("Process::join", s)?, 0);
    assert!(sentinel[0].is_ready());
    Ok(())
}

/// A spawned child's entry: answers the number it is sent with the next one.
fn answers((mut from_parent, mut to_parent): (Connection, Connection)) {
    let n: u32 = from_parent.recv().unwrap();
    to_parent.send(&(n + 1)).unwrap();
}

#[test]
fn process_start_carries_on_under_signals() -> Result<()> {
    crate::init();
    let (mut from_child, to_parent) = Pipe::half_duplex()?;
    let (from_parent, mut to_child) = Pipe::half_duplex()?;
    let s = storm_then(
        BEFORE_ACTION,
        move || to_child.send(&41u32).unwrap(),
        || -> Result<(Vec<i32>, u32, i32)> {
            // Several commands: each `start` waits for its child to exec (or fail to), the
            // window in which a signal must find it.
            let mut commands = Vec::new();
            for _ in 0..10 {
                let mut p = Process::command(Command::new("true"));
                p.start()?;
                commands.push(p);
            }
            let mut spawned = Process::spawn(answers, (from_parent, to_parent));
            spawned.start()?;
            let answer = from_child.recv()?;
            let codes = commands.iter().map(Process::join).collect::<Result<_>>()?;
            Ok((codes, answer, spawned.join()?))
        },
    );
    // Not `quietly`: starting processes takes CPU of its own.
    assert_eq!(s.result?, (vec![0; 10], 42, 0));
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Listener and Client

#[test]
fn accept_keeps_its_deadline_and_carries_on_under_signals() -> Result<()> {
    let address = unique_address("accept");
    let mut listener = Listener::bind(address.as_str(), Some(b"key"))?;
    let s = storm(|| listener.accept_timeout(TIMEOUT));
    assert_eq!(
        on_time("Listener::accept_timeout", s).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    // A client that connects while the accepting thread is being signalled.
    let client: Mutex<Option<JoinHandle<Result<Connection>>>> = Mutex::new(None);
    let s = storm_then(
        BEFORE_ACTION,
        || {
            let address = address.clone();
            *client.lock().unwrap() = Some(std::thread::spawn(move || {
                Client::connect(address.as_str(), Some(b"key"))
            }));
        },
        || listener.accept(),
    );
    let mut server = quietly("Listener::accept", s)?;
    let handle = client.lock().unwrap().take().expect("the client started");
    let mut client = handle.join().expect("client panicked")?;
    client.send_bytes(b"hello")?;
    assert_eq!(server.recv_bytes()?, b"hello");
    Ok(())
}

#[test]
fn connect_and_its_handshake_carry_on_under_signals() -> Result<()> {
    for bind_to in [unique_address("connect"), "127.0.0.1:0".to_owned()] {
        let mut listener = Listener::bind(bind_to.as_str(), Some(b"key"))?;
        let address = listener.local_addr().clone();
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|scope| {
            // The server accepts only once the client has been signalled a while: until
            // then the client waits for its challenge.
            let server = scope.spawn(move || -> Result<()> {
                go_rx.recv().expect("the storm said go");
                let mut conn = listener.accept()?;
                let got = conn.recv_bytes()?;
                conn.send_bytes(&got)
            });
            let s = storm_then(
                BEFORE_ACTION,
                || go.send(()).unwrap(),
                || -> Result<Vec<u8>> {
                    let mut conn = Client::new(&address).authkey(b"key").timeout(LATE).open()?;
                    conn.send_bytes(b"echo")?;
                    conn.recv_bytes()
                },
            );
            assert_eq!(quietly("Client::open", s)?, b"echo", "over {address}");
            server.join().expect("server panicked")
        })?;
    }
    Ok(())
}

/// A Unix listening socket at a fresh abstract name whose accept queue is full, so a
/// connect to it blocks; and the sockets that fill it.
fn full_unix_listener() -> Result<(String, OwnedFd, Vec<OwnedFd>)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let address = unique_address("full");
    let name = address.trim_start_matches('@');
    let unix = rustix::net::SocketAddrUnix::new_abstract_name(name.as_bytes())?;
    let listening = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&listening, &unix)?;
    rustix::net::listen(&listening, 0)?;
    let mut queued = Vec::new();
    loop {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        match rustix::net::connect(&fd, &unix) {
            Ok(()) => queued.push(fd),
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => return Err(e.into()),
        }
        assert!(queued.len() < 100, "the accept queue never filled");
    }
    Ok((address, listening, queued))
}

#[test]
fn connect_to_a_full_listener_keeps_its_deadline_under_signals() -> Result<()> {
    let (address, _listening, _queued) = full_unix_listener()?;
    let s = storm(|| Client::new(address.as_str()).timeout(TIMEOUT).open());
    assert_eq!(
        on_time("Client::open", s).unwrap_err().kind(),
        ErrorKind::Timeout
    );
    Ok(())
}

/// One signal late in a connect's wait for room in a full accept queue: the connect that
/// follows it waits only for what is left of the timeout. (It used to wait the whole
/// timeout again: Linux bounds that wait by the send timeout set on the socket, which was
/// set once, before the first try.)
#[test]
fn a_signal_late_in_a_connect_does_not_restart_its_timeout() -> Result<()> {
    const TIMEOUT: Duration = Duration::from_millis(1500);
    let (address, _listening, _queued) = full_unix_listener()?;
    install_handler();
    // SAFETY: `pthread_self` is always safe to call.
    let target = unsafe { libc::pthread_self() };
    let start = Instant::now();
    let result = std::thread::scope(|s| {
        s.spawn(move || {
            // The stimulus, not a synchronisation: a signal at nine tenths of the timeout.
            std::thread::sleep((TIMEOUT * 9 / 10).saturating_sub(start.elapsed()));
            // SAFETY: the target thread runs this scope, so it is alive until this thread
            // has been joined.
            let rc = unsafe { libc::pthread_kill(target, SIGNAL) };
            assert_eq!(rc, 0);
        });
        Client::new(address.as_str()).timeout(TIMEOUT).open()
    });
    let elapsed = start.elapsed();
    assert_eq!(result.unwrap_err().kind(), ErrorKind::Timeout);
    assert!(
        elapsed >= TIMEOUT,
        "returned after {elapsed:?}, before {TIMEOUT:?}"
    );
    // Restarted, it would take 1.9 times the timeout.
    assert!(
        elapsed < TIMEOUT * 8 / 5,
        "returned after {elapsed:?} for a {TIMEOUT:?} timeout: the signal restarted it"
    );
    Ok(())
}

// -------------------------------------------------------------------------------------------
// Reactor

/// Records its timers; stops the reactor at the first when asked to.
struct Timers {
    fired: Rc<Cell<usize>>,
    stop: bool,
}

impl Timers {
    fn new(fired: &Rc<Cell<usize>>, stop: bool) -> Timers {
        Timers {
            fired: Rc::clone(fired),
            stop,
        }
    }
}

impl Handler for Timers {
    fn on_message(&mut self, _: &mut crate::Context<'_>, _: &[u8]) {}

    fn on_timer(&mut self, ctx: &mut crate::Context<'_>, _: crate::TimerId) {
        self.fired.set(self.fired.get() + 1);
        if self.stop {
            ctx.stop();
        }
    }
}

/// A reactor with one idle connection whose handler is `handler`, past the round that the
/// new connection's first event (writable) makes on its own.
fn idle_reactor(handler: Timers) -> Result<(Reactor, crate::Token, Connection)> {
    let (peer, conn) = Pipe::new()?;
    let mut reactor = Reactor::new()?;
    let token = reactor.register(conn, handler)?;
    reactor.run_once(Some(Duration::ZERO))?;
    Ok((reactor, token, peer))
}

#[test]
fn reactor_run_once_keeps_its_timeout_under_signals() -> Result<()> {
    let fired = Rc::new(Cell::new(0));
    let (mut reactor, _, _peer) = idle_reactor(Timers::new(&fired, false))?;
    let s = storm(|| reactor.run_once(Some(TIMEOUT)));
    on_time("Reactor::run_once", s)?;
    Ok(())
}

#[test]
fn reactor_timers_fire_on_time_under_signals() -> Result<()> {
    let fired = Rc::new(Cell::new(0));
    // One round without a timeout ends with the timer, not with the first signal.
    let (mut reactor, token, _peer) = idle_reactor(Timers::new(&fired, false))?;
    let s = storm(|| {
        // Set in the call, so that its timeout counts from where the call's does.
        reactor.set_timer(token, TIMEOUT)?;
        reactor.run_once(None)
    });
    on_time("Reactor::run_once(None)", s)?;
    assert_eq!(
        fired.get(),
        1,
        "run_once(None) returned before its timer fired"
    );
    // And `run` until a timer's handler stops it.
    let (mut reactor, token, _peer) = idle_reactor(Timers::new(&fired, true))?;
    let s = storm(|| {
        reactor.set_timer(token, TIMEOUT)?;
        reactor.run()
    });
    on_time("Reactor::run", s)?;
    assert_eq!(fired.get(), 2);
    Ok(())
}
