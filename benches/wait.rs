//! `WaitSet`, `wait()` and the `Reactor` next to their floors and next to CPython, in one run.
//!
//! Three implementations do the same work, interleaved (floor, ours, python, repeat) so machine
//! noise hits them alike; each figure is the median of the repetitions:
//!
//! - **floor**: bare syscalls through rustix, no library: a level-triggered `epoll` with
//!   persistent registrations, `poll(2)` over a prebuilt `pollfd` array, or a bare socketpair
//!   whose reader parses the 4-byte big-endian length prefix out of one buffer.
//! - **ours**: `multiproc::WaitSet`, `multiproc::wait`, `multiproc::Reactor`, `Connection`.
//! - **python**: CPython's `multiprocessing.connection.wait` and `Connection` running
//!   `benches/python/wait.py`, driven over its stdin so that its runs interleave with ours.
//!   Without `python3` the python fields are `null` (a loud message says so;
//!   `MULTIPROC_REQUIRE_PYTHON=1` makes it an error).
//!
//! Cases (`docs/benchmarks.md` has the details and a recorded run):
//!
//! | case | what | unit |
//! |---|---|---|
//! | `waitset_N` | `WaitSet::wait` over N connections, one ready (N = 10, 100, 1000, 4000) | us per call |
//! | `wait_N` | the free function `wait` over N connections, one ready | us per call |
//! | `fanin_64` | 64 child processes stream 64-byte messages into one `WaitSet` loop | msg/s |
//! | `fanin_64_reactor` | the same into a `Reactor` | msg/s |
//! | `reactor_oneway_64` | a child's `Reactor` streams 64-byte messages, 512 queued per round | msg/s |
//!
//! The `wait_N` and `waitset_N` cases run in this process over socketpairs; ours and the
//! floor share the very same fds. The ready connection has a whole message in ours' user-space
//! buffer (the first `wait` read it there) and a second, unread one on its fd, which keeps the
//! fd readable for the floor's level-triggered `epoll` and `poll(2)`: nobody ever reads it, so
//! every call finds exactly one object ready. CPython makes its own N `Pipe()`s.
//!
//! A second table, `wait_backends`, compares one-shot readiness backends for the free
//! `wait()` (a fresh set each call, as `wait()` has to): `poll(2)`, a fresh `mio::Poll`, and a
//! fresh `polling::Poller` (`docs/design.md` discusses it).
//!
//! `ratio` is ours against the floor and `vs_python` ours against CPython, both oriented so
//! that above 1 means ours is better.
//!
//! Run: `cargo bench --bench wait` (about a minute here) or `BENCH_QUICK=1 cargo bench --bench
//! wait` (about 11 s here). Extra arguments are case-name filters.

use std::cell::Cell;
use std::error::Error;
use std::hint::black_box;
use std::io::{self};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use multiproc::{Connection, Context, Handler, Key, Pipe, Process, Reactor, TimerId, WaitSet};
use rustix::event::{PollFd, PollFlags, Timespec, epoll};
use rustix::io::Errno;
use rustix::process::{
    Pid, Resource, Rlimit, Signal, getpid, getppid, getrlimit, set_parent_process_death_signal,
    setrlimit,
};

mod common;
use common::{
    Python, Row, RunOptions, Unit, median, print_json, print_rows, print_totals, read_exact,
    socketpair, spread, write_all,
};

type Res<T> = Result<T, Box<dyn Error>>;

/// Connection counts of the `wait_N` / `waitset_N` cases.
const SIZES: [usize; 4] = [10, 100, 1000, 4000];
/// Connection counts of the backend comparison.
const BACKEND_SIZES: [usize; 3] = [10, 100, 1000];
/// Child processes of the fan-in cases.
const FANIN: usize = 64;
/// Messages the streaming child queues per reactor round (and the floor writes per `write`).
const BATCH: usize = 512;
/// Payload size of every message.
const MSG: usize = 64;
/// Only catches hangs: nothing in a working run waits this long.
const HANG: Duration = Duration::from_secs(20);
/// The floors' timeout in the `wait_N` / `waitset_N` cases: the call ours ends up making
/// (ours knows from its buffer that something is ready, so it only polls for more), and
/// the cheapest that gives the answer. With a blocking timeout, `poll(2)` also hangs a wait
/// queue entry on every fd it scans before the ready one, which made that "floor" up to 2x
/// slower than ours.
const ZERO: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: 0,
};

#[derive(Clone, Copy)]
enum Kind {
    /// `WaitSet::wait` over N connections, one ready.
    WaitSet(usize),
    /// `multiproc::wait` over N connections, one ready.
    Wait(usize),
    /// 64 children stream into one parent loop; `reactor`: the loop is a `Reactor`.
    Fanin { reactor: bool },
    /// One child's `Reactor` streams to the parent.
    ReactorOneway,
}

struct Case {
    name: String,
    kind: Kind,
    unit: Unit,
    /// Untimed calls (or messages) before the timed ones, for floor and ours.
    warmup: usize,
    /// Timed calls or messages (per child for the fan-in cases), for floor and ours.
    n: usize,
    /// The same for CPython, whose calls are 20 to 40 000 times slower here: sized so that
    /// each of its runs takes a few tenths of a second.
    py_warmup: usize,
    py_n: usize,
    /// Minimum `ratio` and `vs_python`, from the issue; `None`: no target.
    target_ratio: Option<f64>,
    target_vs_python: Option<f64>,
}

fn cases(quick: bool) -> Vec<Case> {
    // Full-run counts take ~0.1-0.5 s per implementation and repetition here; quick mode runs
    // a fifth of the messages and of CPython's calls. Ours' and the floors' calls in the
    // `wait_N` / `waitset_N` cases are cheap (20-80 ms a run) and stay as they are: a run of
    // a few milliseconds is skewed by a single preemption on this shared machine.
    let scale = |n: usize| if quick { (n / 5).max(1) } else { n };
    let mut out = Vec::new();
    for n_objs in SIZES {
        // Calls per run: 200 000 for the WaitSet (~0.2 us each, whatever N); poll(2) and
        // CPython cost O(N) per call, so their counts shrink with N.
        let linear = (20_000_000 / (n_objs * 50 + 500)).max(50);
        let py = (1_000_000 / (n_objs * 15 + 100)).max(20);
        out.push(Case {
            name: format!("waitset_{n_objs}"),
            kind: Kind::WaitSet(n_objs),
            unit: Unit::Us,
            warmup: 20_000,
            n: 200_000,
            py_warmup: scale(py / 10).max(2),
            py_n: scale(py),
            target_ratio: Some(0.75),
            target_vs_python: None,
        });
        out.push(Case {
            name: format!("wait_{n_objs}"),
            kind: Kind::Wait(n_objs),
            unit: Unit::Us,
            warmup: linear / 10,
            n: linear,
            py_warmup: scale(py / 10).max(2),
            py_n: scale(py),
            target_ratio: Some(0.65),
            target_vs_python: None,
        });
    }
    for (name, reactor) in [("fanin_64", false), ("fanin_64_reactor", true)] {
        out.push(Case {
            name: name.to_string(),
            kind: Kind::Fanin { reactor },
            unit: Unit::MsgPerSec,
            warmup: scale(400),
            n: scale(4_000),
            py_warmup: scale(100),
            py_n: scale(1_000),
            target_ratio: None,
            target_vs_python: Some(5.0),
        });
    }
    out.push(Case {
        name: "reactor_oneway_64".to_string(),
        kind: Kind::ReactorOneway,
        unit: Unit::MsgPerSec,
        warmup: scale(200_000),
        n: scale(2_000_000),
        py_warmup: scale(10_000),
        py_n: scale(100_000),
        target_ratio: None,
        target_vs_python: Some(10.0),
    });
    out
}

// ---------------------------------------------------------------------------------------
// Bare fds.

/// `epoll_wait` into `events` (cleared first), retrying `EINTR`: epoll_wait is never
/// restarted, even without a signal handler (a ptrace stop under strace or perf does it).
fn epoll_wait(
    epoll: &OwnedFd,
    events: &mut Vec<epoll::Event>,
    timeout: &Timespec,
) -> io::Result<()> {
    loop {
        events.clear();
        match epoll::wait(epoll, rustix::buffer::spare_capacity(events), Some(timeout)) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// `poll(2)`, retrying `EINTR`.
fn poll(fds: &mut [PollFd<'_>], timeout: &Timespec) -> io::Result<usize> {
    loop {
        match rustix::event::poll(fds, Some(timeout)) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Called first thing in every forked child: SIGKILL when the bench process dies. Each
/// child inherits the receive ends made before it, so after an error in the parent,
/// senders blocked on a full socket would otherwise wait for each other forever.
fn die_with_parent(parent: Pid) {
    set_parent_process_death_signal(Some(Signal::KILL)).expect("PR_SET_PDEATHSIG");
    if getppid() != Some(parent) {
        std::process::exit(1);
    }
}

fn timespec(d: Duration) -> Timespec {
    Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// `count` frames of [`MSG`] bytes each, back to back, as CPython frames them.
fn frames(count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * (4 + MSG));
    for _ in 0..count {
        out.extend_from_slice(&(MSG as i32).to_be_bytes());
        out.extend_from_slice(&[b'x'; MSG]);
    }
    out
}

/// The floor's receiver: one `read` of whatever is there into a 64 KiB buffer, then the
/// length prefixes parsed in place; a partial frame stays for the next read. The minimum a
/// framed stream reader needs, and the same read-ahead size as `Connection`.
struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    fn new() -> FrameReader {
        FrameReader {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    /// One `read`; the number of whole [`MSG`]-byte frames it completed, `None` at EOF.
    fn read(&mut self, fd: BorrowedFd<'_>) -> io::Result<Option<usize>> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.buf.len() - self.end < 4 + MSG {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        let n = loop {
            match rustix::io::read(fd, &mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            return Ok(None);
        }
        self.end += n;
        let mut count = 0;
        while self.end - self.start >= 4 {
            let header: [u8; 4] = self.buf[self.start..self.start + 4].try_into().unwrap();
            let len = i32::from_be_bytes(header);
            if len != MSG as i32 {
                return Err(io::Error::other(format!("unexpected frame length {len}")));
            }
            if self.end - self.start < 4 + MSG {
                break;
            }
            black_box(&self.buf[self.start + 4..self.start + 4 + MSG]);
            self.start += 4 + MSG;
            count += 1;
        }
        Ok(Some(count))
    }
}

/// `len` bytes starting on a 64-byte boundary, for ours to send (the floor's frames start
/// wherever; small messages are not sensitive to it).
fn aligned_payload(len: usize) -> (Vec<u8>, usize) {
    let mut v = vec![b'x'; 64 + len];
    let at = (64 - v.as_ptr() as usize % 64) % 64;
    v.truncate(at + len);
    (v, at)
}

fn wait_go(fd: BorrowedFd<'_>) -> io::Result<()> {
    read_exact(fd, &mut [0u8])
}

fn join(p: Process, what: &str) -> Res<()> {
    match p.join()? {
        0 => Ok(()),
        code => Err(format!("{what} child exited with {code}").into()),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit when it is below `need`.
fn raise_nofile(need: u64) -> Res<()> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_some_and(|c| c < need) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )?;
    }
    let now = getrlimit(Resource::Nofile).current;
    if now.is_some_and(|c| c < need) {
        return Err(
            format!("RLIMIT_NOFILE is {now:?} (hard limit), the bench needs {need}").into(),
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// wait_N and waitset_N: N connections in this process, exactly one ready.

/// N socketpairs: `(senders, receivers)`. The senders stay open for the whole case, so no
/// receiver sees EOF.
fn pairs(n_objs: usize) -> Res<(Vec<Connection>, Vec<Connection>)> {
    let (mut senders, mut receivers) = (Vec::new(), Vec::new());
    for _ in 0..n_objs {
        let (tx, rx) = Pipe::new()?;
        senders.push(tx);
        receivers.push(rx);
    }
    Ok((senders, receivers))
}

struct WaitSetBench {
    set: WaitSet<Connection>,
    keys: Vec<Key>,
    /// A level-triggered epoll with the same fds registered, for the floor.
    epoll: OwnedFd,
    /// Kept open: a closed sender would make its receiver ready (EOF).
    _senders: Vec<Connection>,
    /// Index of the ready receiver.
    ready: usize,
}

impl WaitSetBench {
    fn new(n_objs: usize) -> Res<WaitSetBench> {
        let (mut senders, receivers) = pairs(n_objs)?;
        let mut set = WaitSet::new()?;
        let keys = receivers
            .into_iter()
            .map(|rx| set.insert(rx))
            .collect::<Result<Vec<Key>, _>>()?;
        let ready = n_objs / 2;
        // The first wait moves the first message into the connection's buffer; the second
        // stays on the fd for good (see the module docs).
        senders[ready].send_bytes(&[b'x'; MSG])?;
        let got = set.wait(Some(HANG))?;
        if got != [keys[ready]] {
            return Err(format!("first wait returned {got:?}").into());
        }
        senders[ready].send_bytes(&[b'x'; MSG])?;
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        for (i, &key) in keys.iter().enumerate() {
            let conn = set.get(key).expect("inserted");
            epoll::add(
                &epoll,
                conn.as_fd(),
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN,
            )?;
        }
        Ok(WaitSetBench {
            set,
            keys,
            epoll,
            _senders: senders,
            ready,
        })
    }

    fn ours(&mut self, warmup: usize, n: usize) -> Res<f64> {
        let want = self.keys[self.ready];
        let mut secs = 0.0;
        for count in [warmup, n] {
            let start = Instant::now();
            for _ in 0..count {
                let ready = black_box(self.set.wait(None)?);
                if ready.len() != 1 || ready[0] != want {
                    return Err(format!("WaitSet::wait returned {ready:?}").into());
                }
            }
            secs = start.elapsed().as_secs_f64();
        }
        Ok(secs / n as f64 * 1e6)
    }

    fn floor(&mut self, warmup: usize, n: usize) -> Res<f64> {
        let want = self.ready as u64;
        let mut events: Vec<epoll::Event> = Vec::with_capacity(64);
        let mut secs = 0.0;
        for count in [warmup, n] {
            let start = Instant::now();
            for _ in 0..count {
                epoll_wait(&self.epoll, &mut events, &ZERO)?;
                if events.len() != 1 || events[0].data.u64() != want {
                    return Err(format!("epoll_wait returned {} events", events.len()).into());
                }
            }
            secs = start.elapsed().as_secs_f64();
        }
        Ok(secs / n as f64 * 1e6)
    }
}

struct WaitBench {
    conns: Vec<Connection>,
    _senders: Vec<Connection>,
    ready: usize,
}

impl WaitBench {
    fn new(n_objs: usize) -> Res<WaitBench> {
        let (mut senders, mut conns) = pairs(n_objs)?;
        let ready = n_objs / 2;
        senders[ready].send_bytes(&[b'x'; MSG])?;
        let got = multiproc::wait(&mut conns, Some(HANG))?;
        if got != [ready] {
            return Err(format!("first wait returned {got:?}").into());
        }
        senders[ready].send_bytes(&[b'x'; MSG])?;
        Ok(WaitBench {
            conns,
            _senders: senders,
            ready,
        })
    }

    fn ours(&mut self, warmup: usize, n: usize) -> Res<f64> {
        let want = self.ready;
        let mut secs = 0.0;
        for count in [warmup, n] {
            let start = Instant::now();
            for _ in 0..count {
                let ready = black_box(multiproc::wait(&mut self.conns, None)?);
                if ready.len() != 1 || ready[0] != want {
                    return Err(format!("wait returned {ready:?}").into());
                }
            }
            secs = start.elapsed().as_secs_f64();
        }
        Ok(secs / n as f64 * 1e6)
    }

    fn floor(&mut self, warmup: usize, n: usize) -> Res<f64> {
        let want = self.ready;
        let mut fds: Vec<PollFd<'_>> = self
            .conns
            .iter()
            .map(|c| PollFd::new(c, PollFlags::IN))
            .collect();
        let mut secs = 0.0;
        for count in [warmup, n] {
            let start = Instant::now();
            for _ in 0..count {
                let ready = poll(&mut fds, &ZERO)?;
                if ready != 1 || fds[want].revents().is_empty() {
                    return Err(format!("poll returned {ready}").into());
                }
            }
            secs = start.elapsed().as_secs_f64();
        }
        Ok(secs / n as f64 * 1e6)
    }

    /// One-shot readiness over the same fds with a fresh set each call, the way the free
    /// `wait()` has to: `Backend::Poll` builds a `pollfd` array, `Backend::Mio` a `mio::Poll`
    /// with every fd registered, `Backend::Polling` a `polling::Poller` likewise.
    fn oneshot(&mut self, backend: Backend, warmup: usize, n: usize) -> Res<f64> {
        let want = self.ready;
        let n_objs = self.conns.len();
        let raw: Vec<i32> = self.conns.iter().map(|c| c.as_raw_fd()).collect();
        let timeout = Some(HANG);
        let ts = timespec(HANG);
        let mut secs = 0.0;
        for count in [warmup, n] {
            let start = Instant::now();
            for _ in 0..count {
                let ready = match backend {
                    Backend::Poll => {
                        let mut fds: Vec<PollFd<'_>> = self
                            .conns
                            .iter()
                            .map(|c| PollFd::new(c, PollFlags::IN))
                            .collect();
                        poll(&mut fds, &ts)?;
                        fds.iter().position(|f| !f.revents().is_empty())
                    }
                    Backend::Mio => {
                        let mut poll = mio::Poll::new()?;
                        let mut events = mio::Events::with_capacity(n_objs);
                        for (i, fd) in raw.iter().enumerate() {
                            poll.registry().register(
                                &mut mio::unix::SourceFd(fd),
                                mio::Token(i),
                                mio::Interest::READABLE,
                            )?;
                        }
                        while let Err(e) = poll.poll(&mut events, timeout) {
                            if e.kind() != io::ErrorKind::Interrupted {
                                return Err(e.into());
                            }
                        }
                        events.iter().next().map(|e| e.token().0)
                    }
                    Backend::Polling => {
                        let poller = polling::Poller::new()?;
                        for (i, &fd) in raw.iter().enumerate() {
                            poller.add(fd, polling::Event::readable(i))?;
                        }
                        let mut events = Vec::with_capacity(n_objs);
                        while let Err(e) = poller.wait(&mut events, timeout) {
                            if e.kind() != io::ErrorKind::Interrupted {
                                return Err(e.into());
                            }
                        }
                        events.first().map(|e| e.key)
                    }
                };
                if ready != Some(want) {
                    return Err(format!("{} returned {ready:?}", backend.name()).into());
                }
            }
            secs = start.elapsed().as_secs_f64();
        }
        Ok(secs / n as f64 * 1e6)
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Poll,
    Mio,
    Polling,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Poll => "poll",
            Backend::Mio => "mio",
            Backend::Polling => "polling",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fan-in: FANIN children each send `warmup` then `n` messages, each round after a "go" on
// its own control socketpair; the parent times the second round from its first "go" until
// it holds the last message. A child exits after its last message, so its connection turns
// ready at EOF while others still send: the loops drop it then.

/// Forks the senders. `sender(data, ctl)` runs in each child; returns the parent's ends of
/// the data and control socketpairs, and the children.
fn fork_senders<D: Send + 'static>(
    make: impl Fn() -> Res<(D, D)>,
    sender: impl Fn(D, OwnedFd) + Clone + Send + 'static,
) -> Res<(Vec<D>, Vec<OwnedFd>, Vec<Process>)> {
    let (mut data, mut ctls, mut children) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..FANIN {
        let (here, there) = make()?;
        let (ctl, ctl_child) = socketpair()?;
        let sender = sender.clone();
        let parent = getpid();
        let mut child = Process::fork(move || {
            die_with_parent(parent);
            sender(there, ctl_child)
        });
        child.start()?;
        data.push(here);
        ctls.push(ctl);
        children.push(child);
    }
    Ok((data, ctls, children))
}

fn go_all(ctls: &[OwnedFd]) -> io::Result<()> {
    for ctl in ctls {
        write_all(ctl.as_fd(), b"g")?;
    }
    Ok(())
}

fn join_all(children: Vec<Process>) -> Res<()> {
    for child in children {
        join(child, "fan-in sender")?;
    }
    Ok(())
}

fn fanin_floor(warmup: usize, n: usize) -> Res<f64> {
    let (data, ctls, children) = fork_senders(
        || Ok(socketpair()?),
        move |tx: OwnedFd, ctl: OwnedFd| {
            let frame = frames(1);
            for count in [warmup, n] {
                wait_go(ctl.as_fd()).expect("go");
                for _ in 0..count {
                    write_all(tx.as_fd(), &frame).expect("floor send");
                }
            }
        },
    )?;
    let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, fd) in data.iter().enumerate() {
        epoll::add(
            &epoll,
            fd,
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN,
        )?;
    }
    let mut readers: Vec<FrameReader> = (0..FANIN).map(|_| FrameReader::new()).collect();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(FANIN);
    let hang = timespec(HANG);
    let mut secs = 0.0;
    for count in [warmup, n] {
        let total = count * FANIN;
        let mut got = 0;
        let start = Instant::now();
        go_all(&ctls)?;
        while got < total {
            epoll_wait(&epoll, &mut events, &hang)?;
            if events.is_empty() {
                return Err("floor fan-in: timed out".into());
            }
            for event in &events {
                let i = event.data.u64() as usize;
                match readers[i].read(data[i].as_fd())? {
                    Some(frames) => got += frames,
                    None => epoll::delete(&epoll, &data[i])?,
                }
            }
        }
        secs = start.elapsed().as_secs_f64();
    }
    join_all(children)?;
    Ok((n * FANIN) as f64 / secs)
}

/// The senders of ours: `Connection::send_bytes` of 64 bytes, one call per message.
fn fork_conn_senders(
    warmup: usize,
    n: usize,
) -> Res<(Vec<Connection>, Vec<OwnedFd>, Vec<Process>)> {
    fork_senders(
        || Ok(Pipe::new()?),
        move |mut tx: Connection, ctl: OwnedFd| {
            let (bytes, at) = aligned_payload(MSG);
            for count in [warmup, n] {
                wait_go(ctl.as_fd()).expect("go");
                for _ in 0..count {
                    tx.send_bytes(&bytes[at..]).expect("send_bytes");
                }
            }
        },
    )
}

/// The Python loop translated: `for key in set.wait(): recv one message`, dropping a
/// connection at EOF.
fn fanin_waitset(warmup: usize, n: usize) -> Res<f64> {
    let (data, ctls, children) = fork_conn_senders(warmup, n)?;
    let mut set = WaitSet::new()?;
    for conn in data {
        set.insert(conn)?;
    }
    let mut ready = Vec::new();
    let mut buf = Vec::new();
    let mut secs = 0.0;
    for count in [warmup, n] {
        let total = count * FANIN;
        let mut got = 0;
        let start = Instant::now();
        go_all(&ctls)?;
        while got < total {
            set.wait_into(&mut ready, Some(HANG))?;
            if ready.is_empty() {
                return Err("WaitSet fan-in: timed out".into());
            }
            for &key in &ready {
                let conn = set.get_mut(key).expect("ready keys are live");
                match conn.recv_bytes_into(&mut buf) {
                    Ok(len) if len == MSG => got += 1,
                    Ok(len) => return Err(format!("got {len} bytes").into()),
                    Err(e) if e.is_eof() => {
                        set.remove(key);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        secs = start.elapsed().as_secs_f64();
    }
    join_all(children)?;
    Ok((n * FANIN) as f64 / secs)
}

/// Counts messages across all fan-in connections.
struct Count(Rc<Cell<usize>>);

impl Handler for Count {
    fn on_message(&mut self, _: &mut Context<'_>, message: &[u8]) {
        assert_eq!(message.len(), MSG, "fan-in message length");
        self.0.set(self.0.get() + 1);
    }

    fn on_error(&mut self, _: &mut Context<'_>, error: multiproc::Error) {
        panic!("fan-in connection failed: {error}");
    }
}

fn fanin_reactor(warmup: usize, n: usize) -> Res<f64> {
    let (data, ctls, children) = fork_conn_senders(warmup, n)?;
    let got = Rc::new(Cell::new(0));
    let mut reactor = Reactor::new()?;
    for conn in data {
        reactor.register(conn, Count(Rc::clone(&got)))?;
    }
    let mut secs = 0.0;
    let mut target = 0;
    for count in [warmup, n] {
        target += count * FANIN;
        let start = Instant::now();
        go_all(&ctls)?;
        // One round at a time rather than `run()`, to catch a hang.
        while got.get() < target {
            reactor.run_once(Some(HANG))?;
            if start.elapsed() > HANG {
                return Err("Reactor fan-in: timed out".into());
            }
        }
        secs = start.elapsed().as_secs_f64();
    }
    drop(reactor);
    join_all(children)?;
    Ok((n * FANIN) as f64 / secs)
}

// ---------------------------------------------------------------------------------------
// reactor_oneway_64: one child streams `warmup` then `n` messages, each round after a "go";
// the parent receives and times the second round.

/// Queues [`BATCH`] messages per round from a zero timer, then from each `on_drained`, and
/// stops the reactor once the last batch is written.
struct Stream {
    left: usize,
    payload: Vec<u8>,
    at: usize,
}

impl Stream {
    fn batch(&mut self, ctx: &mut Context<'_>) {
        if self.left == 0 {
            ctx.stop();
            return;
        }
        let k = self.left.min(BATCH);
        for _ in 0..k {
            ctx.send_bytes(&self.payload[self.at..]).expect("queue");
        }
        self.left -= k;
    }
}

impl Handler for Stream {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}

    fn on_timer(&mut self, ctx: &mut Context<'_>, _: TimerId) {
        self.batch(ctx);
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>) {
        self.batch(ctx);
    }

    fn on_error(&mut self, _: &mut Context<'_>, error: multiproc::Error) {
        panic!("stream failed: {error}");
    }
}

fn oneway_floor(warmup: usize, n: usize) -> Res<f64> {
    let (rx, tx) = socketpair()?;
    let (ctl, ctl_child) = socketpair()?;
    let parent = getpid();
    let mut child = Process::fork(move || {
        die_with_parent(parent);
        let batch = frames(BATCH);
        for count in [warmup, n] {
            wait_go(ctl_child.as_fd()).expect("go");
            let mut left = count;
            while left > 0 {
                let k = left.min(BATCH);
                write_all(tx.as_fd(), &batch[..k * (4 + MSG)]).expect("floor send");
                left -= k;
            }
        }
    });
    child.start()?;
    let mut reader = FrameReader::new();
    let mut secs = 0.0;
    for count in [warmup, n] {
        let mut got = 0;
        let start = Instant::now();
        write_all(ctl.as_fd(), b"g")?;
        while got < count {
            got += reader.read(rx.as_fd())?.ok_or("floor: early EOF")?;
        }
        secs = start.elapsed().as_secs_f64();
    }
    join(child, "floor streamer")?;
    Ok(n as f64 / secs)
}

fn oneway_ours(warmup: usize, n: usize) -> Res<f64> {
    let (mut rx, tx) = Pipe::new()?;
    let (ctl, ctl_child) = socketpair()?;
    let parent = getpid();
    let mut child = Process::fork(move || {
        die_with_parent(parent);
        let mut reactor = Reactor::new().expect("reactor");
        let mut tx = Some(tx);
        for count in [warmup, n] {
            wait_go(ctl_child.as_fd()).expect("go");
            let (payload, at) = aligned_payload(MSG);
            let stream = Stream {
                left: count,
                payload,
                at,
            };
            let token = reactor
                .register(tx.take().expect("connection"), stream)
                .expect("register");
            reactor.set_timer(token, Duration::ZERO).expect("timer");
            reactor.run().expect("run");
            tx = Some(reactor.deregister(token).expect("still registered"));
        }
    });
    child.start()?;
    let mut buf = Vec::new();
    let mut secs = 0.0;
    for count in [warmup, n] {
        let start = Instant::now();
        write_all(ctl.as_fd(), b"g")?;
        for _ in 0..count {
            let len = rx.recv_bytes_into(&mut buf)?;
            if len != MSG {
                return Err(format!("got {len} bytes").into());
            }
        }
        secs = start.elapsed().as_secs_f64();
    }
    join(child, "reactor streamer")?;
    Ok(n as f64 / secs)
}

// ---------------------------------------------------------------------------------------
// CPython, kept running between requests so that its runs interleave with ours.

// ---------------------------------------------------------------------------------------
// Running, summarising, printing.

/// One row of the backend comparison: microseconds per one-shot wait over `n_objs` fds.
struct BackendRow {
    n_objs: usize,
    /// Indexed like [`BACKENDS`].
    figures: [Vec<f64>; 3],
}

const BACKENDS: [Backend; 3] = [Backend::Poll, Backend::Mio, Backend::Polling];

fn run_case(case: &Case, reps: usize, mut py: Option<&mut Python>) -> Res<Row> {
    let mut row = Row {
        bench: "wait",
        case: case.name.clone(),
        unit: case.unit,
        floor: Vec::new(),
        ours: Vec::new(),
        python: py.as_ref().map(|_| Vec::new()),
        target_ratio: case.target_ratio,
        target_vs_python: case.target_vs_python,
    };
    let (warmup, n) = (case.warmup, case.n);
    let mut waitset = None;
    let mut wait = None;
    match case.kind {
        Kind::WaitSet(n_objs) => waitset = Some(WaitSetBench::new(n_objs)?),
        Kind::Wait(n_objs) => wait = Some(WaitBench::new(n_objs)?),
        _ => {}
    }
    for _ in 0..reps {
        let (floor, ours) = match case.kind {
            Kind::WaitSet(_) => {
                let b = waitset.as_mut().expect("made above");
                (b.floor(warmup, n)?, b.ours(warmup, n)?)
            }
            Kind::Wait(_) => {
                let b = wait.as_mut().expect("made above");
                (b.floor(warmup, n)?, b.ours(warmup, n)?)
            }
            Kind::Fanin { reactor } => (
                fanin_floor(warmup, n)?,
                if reactor {
                    fanin_reactor(warmup, n)?
                } else {
                    fanin_waitset(warmup, n)?
                },
            ),
            Kind::ReactorOneway => (oneway_floor(warmup, n)?, oneway_ours(warmup, n)?),
        };
        row.floor.push(floor);
        row.ours.push(ours);
        if let (Some(py), Some(results)) = (py.as_deref_mut(), row.python.as_mut()) {
            results.push(py.run(&case.name, case.py_warmup, case.py_n)?);
        }
    }
    Ok(row)
}

fn run_backends(n_objs: usize, reps: usize, quick: bool) -> Res<BackendRow> {
    let mut bench = WaitBench::new(n_objs)?;
    // poll(2) at ~0.05 us per fd, mio and polling at ~0.5 us per fd (one epoll_ctl each).
    let calls = |backend: Backend| {
        let per_fd = match backend {
            Backend::Poll => 50,
            Backend::Mio | Backend::Polling => 500,
        };
        let n = (50_000_000 / (n_objs * per_fd + 2_000)).max(50);
        if quick { (n / 5).max(10) } else { n }
    };
    let mut figures: [Vec<f64>; 3] = Default::default();
    for _ in 0..reps {
        for (i, backend) in BACKENDS.into_iter().enumerate() {
            let n = calls(backend);
            figures[i].push(bench.oneshot(backend, n / 10, n)?);
        }
    }
    Ok(BackendRow { n_objs, figures })
}

fn main() -> Res<()> {
    let opts = RunOptions::from_env();
    let (quick, reps) = (opts.quick, opts.reps);
    let all = cases(quick);

    // 2 fds per connection of the largest case, plus the fan-in's and some slack. Raised
    // before Python starts, so that it inherits the limit too.
    let max_objs = *SIZES.iter().max().expect("sizes") as u64;
    raise_nofile(2 * max_objs + 4 * FANIN as u64 + 64)?;

    let mut python = Python::start("wait.py")?;
    opts.print_header("wait", python.as_ref());

    let started = Instant::now();
    let mut rows = Vec::new();
    for case in all.iter().filter(|c| opts.selects(&c.name)) {
        rows.push(run_case(case, reps, python.as_mut())?);
        eprintln!(
            "  {:<18} done after {:.1}s",
            case.name,
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(py) = python.take() {
        py.finish()?;
    }
    let mut backends = Vec::new();
    for n_objs in BACKEND_SIZES {
        if opts.selects(&format!("oneshot_{n_objs}")) {
            backends.push(run_backends(n_objs, reps, quick)?);
            eprintln!(
                "  {:<18} done after {:.1}s",
                format!("oneshot_{n_objs}"),
                started.elapsed().as_secs_f64()
            );
        }
    }

    println!();
    let (mut met, mut missed, unchecked) = print_rows(&rows);
    // The WaitSet's cost must not grow with the number of idle connections.
    let ours_of = |name: &str| {
        rows.iter()
            .find(|r| r.case == name)
            .map(|r| median(&r.ours))
    };
    if let (Some(small), Some(large)) = (ours_of("waitset_10"), ours_of("waitset_4000")) {
        let ok = large <= 2.0 * small;
        println!(
            "scaling: waitset_4000 / waitset_10 = {:.2} (target <= 2): {}",
            large / small,
            if ok { "met" } else { "MISSED" }
        );
        if ok {
            met += 1;
        } else {
            missed += 1;
        }
    }
    print_totals(reps, (met, missed, unchecked));

    if !backends.is_empty() {
        println!(
            "\none-shot readiness backends for wait(): us per call, a fresh set each call, one \
             of N ready"
        );
        println!(
            "{:<14} {:>10} {:>10} {:>10} {:>10} {:>12}  spread %",
            "case", "poll(2)", "mio", "polling", "mio/poll", "polling/poll"
        );
        for b in &backends {
            let m: Vec<f64> = b.figures.iter().map(|f| median(f)).collect();
            let spreads: Vec<String> = b
                .figures
                .iter()
                .map(|f| format!("{:.0}", spread(f)))
                .collect();
            println!(
                "{:<14} {:>10.3} {:>10.3} {:>10.3} {:>10.2} {:>12.2}  {}",
                format!("oneshot_{}", b.n_objs),
                m[0],
                m[1],
                m[2],
                m[1] / m[0],
                m[2] / m[0],
                spreads.join("/")
            );
        }
    }
    print_json(&rows, started);
    for b in &backends {
        let m: Vec<f64> = b.figures.iter().map(|f| median(f)).collect();
        println!(
            "{{\"bench\":\"wait_backends\",\"case\":\"oneshot_{}\",\"unit\":\"us\",\
             \"poll\":{:.3},\"mio\":{:.3},\"polling\":{:.3}}}",
            b.n_objs, m[0], m[1], m[2]
        );
    }
    Ok(())
}
