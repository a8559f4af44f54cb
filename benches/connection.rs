//! `Connection` next to its floor and next to CPython, in one run.
//!
//! Three implementations do the same exchange between two processes, interleaved (floor,
//! ours, python, repeat) so machine noise hits them alike; each figure is the median of the
//! repetitions:
//!
//! - **floor**: a bare socketpair (or pipe) through rustix, the same 4-byte big-endian length
//!   prefix, no library. The sender writes a pre-framed buffer with one `write`; the receiver
//!   reads the 4-byte header, then `read_exact`s the payload into a reused buffer.
//! - **ours**: `multiproc::Connection` (`send_bytes` / `recv_bytes_into` with a reused `Vec`,
//!   or `send` / `recv` for the object case).
//! - **python**: CPython's `multiprocessing.Pipe` running `benches/python/connection.py`,
//!   driven over its stdin so that its runs interleave with ours. Without `python3` the
//!   python fields are `null` (a loud message says so; `MULTIPROC_REQUIRE_PYTHON=1` makes it
//!   an error).
//!
//! Floor and ours fork their second process with `multiproc::Process` (this `main` is
//! single-threaded, as fork requires); Python forks its own with `multiprocessing`.
//!
//! Cases (`docs/benchmarks.md` has the details and a recorded run):
//!
//! | case | what | unit |
//! |---|---|---|
//! | `rtt_64` | 64-byte round trip, both processes pinned to one CPU | us per round trip |
//! | `rtt_64_unpinned` | the same, unpinned | us per round trip |
//! | `oneway_64` | 64-byte messages one way over a socketpair | msg/s |
//! | `oneway_64k` | 64 KiB messages one way over a socketpair | msg/s |
//! | `oneway_64k_half` | 64 KiB messages one way over a pipe (`Pipe::half_duplex`) | msg/s |
//! | `oneway_obj` | `{id: u64, v: f64, s: "abc"}` via `send`/`recv` (CBOR) vs pickled dict | msg/s |
//!
//! For `oneway_obj` the floor sends the same CBOR bytes, encoded once up front, and receives
//! them without decoding: the gap to the floor is the codec plus the library.
//!
//! Oneway timing is the receiver's: from its "go" on a separate control socket until it holds
//! the last of the N messages. `ratio` is ours against the floor and `vs_python` ours against
//! CPython, both oriented so that above 1 means ours is better.
//!
//! Run: `cargo bench --bench connection` (a few minutes) or `BENCH_QUICK=1 cargo bench --bench
//! connection` (well under 30 s). Extra arguments are case-name filters.

use std::error::Error;
use std::hint::black_box;
use std::io::{self};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use multiproc::{Connection, Pipe, Process};
use serde::{Deserialize, Serialize};

mod common;
use common::{
    Python, Row, RunOptions, Unit, first_allowed_cpu, pinned, print_json, print_rows, print_totals,
    read_exact, socketpair, write_all,
};

type Res<T> = Result<T, Box<dyn Error>>;

/// The message of `oneway_obj`; Python sends the equivalent dict.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Obj {
    id: u64,
    v: f64,
    s: String,
}

/// The object whose encoding the floor sends for `oneway_obj`. Ours sends `Obj::nth(i)` for
/// i = 0.., whose CBOR is 26 bytes for most i of a run (fewer for small ids, and when `v` is
/// a whole number, which ciborium writes as a shorter float); this one is a typical 26.
const FLOOR_OBJ_ID: u64 = 123_457;

impl Obj {
    /// The i-th object sent: `{id: i, v: i * 0.1, s: "abc"}`, as Python's dict.
    fn nth(i: u64) -> Obj {
        Obj {
            id: i,
            v: i as f64 * 0.1,
            s: "abc".to_string(),
        }
    }
}

#[derive(Clone, Copy)]
enum Payload {
    Bytes(usize),
    Obj,
}

#[derive(Clone, Copy)]
enum Kind {
    /// Round trips of 64 bytes; `pin`: both processes on one CPU.
    Rtt { pin: bool },
    /// One way, child to parent; `half`: over a pipe rather than a socketpair.
    Oneway { payload: Payload, half: bool },
}

struct Case {
    name: &'static str,
    kind: Kind,
    unit: Unit,
    /// Untimed messages (or round trips) before the timed ones, in the same processes.
    warmup: usize,
    n: usize,
    /// Minimum `ratio` and `vs_python`, from the issue; `None`: no target.
    target_ratio: Option<f64>,
    target_vs_python: Option<f64>,
}

const KIB64: usize = 64 * 1024;

fn cases(quick: bool) -> Vec<Case> {
    // Sized so that each CPython run takes ~0.3-0.6 s here (CPython is the slowest of the
    // three); quick mode runs a fifth of that.
    let scale = |n: usize| if quick { n / 5 } else { n };
    let rtt = |name, pin, target| Case {
        name,
        kind: Kind::Rtt { pin },
        unit: Unit::Us,
        warmup: scale(2_000),
        n: scale(20_000),
        target_ratio: target,
        target_vs_python: None,
    };
    let oneway = |name, payload, half, n: usize, ratio, vs_python| Case {
        name,
        kind: Kind::Oneway { payload, half },
        unit: Unit::MsgPerSec,
        warmup: scale(n / 10),
        n: scale(n),
        target_ratio: ratio,
        target_vs_python: vs_python,
    };
    vec![
        rtt("rtt_64", true, Some(0.8)),
        rtt("rtt_64_unpinned", false, None),
        oneway(
            "oneway_64",
            Payload::Bytes(64),
            false,
            200_000,
            Some(0.8),
            None,
        ),
        oneway(
            "oneway_64k",
            Payload::Bytes(KIB64),
            false,
            20_000,
            Some(0.9),
            Some(1.2),
        ),
        oneway(
            "oneway_64k_half",
            Payload::Bytes(KIB64),
            true,
            20_000,
            None,
            None,
        ),
        oneway("oneway_obj", Payload::Obj, false, 200_000, None, Some(2.0)),
    ]
}

// ---------------------------------------------------------------------------------------
// The floor: bare fds, rustix, the same framing.

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Where payloads start: on a 64-byte boundary, for floor and ours alike. The kernel's copy
/// between user memory and a socket buffer runs at about half speed when the two addresses
/// sit badly relative to each other within a cache line (measured on the AMD EPYC of
/// `docs/benchmarks.md`: a send buffer starting 36..60 bytes into a line, or a receive buffer
/// 8..24 bytes in). A naive pre-framed floor (`[header, payload]` in one `Vec`) puts the
/// payload at +4 from wherever malloc put the `Vec` and can land there by accident, so the
/// floor would not be a floor.
const ALIGN: usize = 64;

/// A buffer holding one frame, laid out so that its payload starts on an [`ALIGN`] boundary
/// with the 4-byte header just before it: the floor's sender writes `frame()` in one go, and
/// its receiver reads the header and then the payload into it, reusing it every time.
struct FloorBuf {
    v: Vec<u8>,
    /// Index of the payload in `v`.
    at: usize,
    len: usize,
}

impl FloorBuf {
    fn with_capacity(cap: usize) -> FloorBuf {
        let v = vec![0u8; 4 + ALIGN + cap];
        let at = 4 + (ALIGN - (v.as_ptr() as usize + 4) % ALIGN) % ALIGN;
        FloorBuf { v, at, len: 0 }
    }

    fn with_payload(payload: &[u8]) -> FloorBuf {
        let mut buf = FloorBuf::with_capacity(payload.len());
        let len = i32::try_from(payload.len()).expect("short frame");
        buf.v[buf.at - 4..buf.at].copy_from_slice(&len.to_be_bytes());
        buf.v[buf.at..buf.at + payload.len()].copy_from_slice(payload);
        buf.len = payload.len();
        buf
    }

    fn frame(&self) -> &[u8] {
        &self.v[self.at - 4..self.at + self.len]
    }

    /// Reads one frame: the 4-byte header, then `read_exact` of the payload. Returns the
    /// payload length.
    fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut header = [0u8; 4];
        read_exact(fd, &mut header)?;
        let len = usize::try_from(i32::from_be_bytes(header))
            .map_err(|_| io::Error::other("negative length"))?;
        if self.at + len > self.v.len() {
            *self = FloorBuf::with_capacity(len);
        }
        // Kept in front of the payload, so that an echo can send `frame()` back as is.
        self.v[self.at - 4..self.at].copy_from_slice(&header);
        read_exact(fd, &mut self.v[self.at..self.at + len])?;
        self.len = len;
        Ok(len)
    }
}

/// `len` bytes starting on an [`ALIGN`] boundary, for ours to send: the same source
/// alignment as the floor's payload.
fn aligned_payload(len: usize) -> (Vec<u8>, usize) {
    let mut v = vec![b'x'; ALIGN + len];
    let at = (ALIGN - v.as_ptr() as usize % ALIGN) % ALIGN;
    v.truncate(at + len);
    (v, at)
}

// ---------------------------------------------------------------------------------------
// Process plumbing shared by floor and ours.

/// A control socket: one byte says "go". Identical for floor and ours, outside the timed
/// loop except for the one "go" per round.
fn go(fd: BorrowedFd<'_>) -> io::Result<()> {
    write_all(fd, b"g")
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

// ---------------------------------------------------------------------------------------
// Round trips.

fn rtt_floor(warmup: usize, n: usize) -> Res<f64> {
    let (here, there) = socketpair()?;
    let mut child = Process::fork(move || {
        let mut buf = FloorBuf::with_capacity(64);
        for _ in 0..warmup + n {
            buf.recv(there.as_fd()).expect("floor echo recv");
            write_all(there.as_fd(), buf.frame()).expect("floor echo send");
        }
    });
    child.start()?;
    let out = FloorBuf::with_payload(&[b'x'; 64]);
    let mut buf = FloorBuf::with_capacity(64);
    let mut round = |count| -> Res<()> {
        for _ in 0..count {
            write_all(here.as_fd(), out.frame())?;
            let len = buf.recv(here.as_fd())?;
            assert_eq!(len, 64);
        }
        Ok(())
    };
    round(warmup)?;
    let start = Instant::now();
    round(n)?;
    let secs = start.elapsed().as_secs_f64();
    join(child, "floor echo")?;
    Ok(secs / n as f64 * 1e6)
}

fn rtt_ours(warmup: usize, n: usize) -> Res<f64> {
    let (mut here, mut there) = Pipe::new()?;
    let mut child = Process::fork(move || {
        let mut buf = Vec::new();
        for _ in 0..warmup + n {
            let len = there.recv_bytes_into(&mut buf).expect("echo recv");
            there.send_bytes(&buf[..len]).expect("echo send");
        }
    });
    child.start()?;
    let (payload, at) = aligned_payload(64);
    let payload = &payload[at..];
    let mut buf = Vec::new();
    let mut round = |count| -> Res<()> {
        for _ in 0..count {
            here.send_bytes(payload)?;
            let len = here.recv_bytes_into(&mut buf)?;
            assert_eq!(len, 64);
        }
        Ok(())
    };
    round(warmup)?;
    let start = Instant::now();
    round(n)?;
    let secs = start.elapsed().as_secs_f64();
    join(child, "echo")?;
    Ok(secs / n as f64 * 1e6)
}

// ---------------------------------------------------------------------------------------
// One way: the child sends `warmup` messages, then `n`, each round after a "go"; the parent
// receives and times the second round.

fn oneway_floor(payload: Payload, half: bool, warmup: usize, n: usize) -> Res<f64> {
    let (rx, tx) = if half { pipe()? } else { socketpair()? };
    let (ctl, ctl_child) = socketpair()?;
    let out = match payload {
        Payload::Bytes(len) => FloorBuf::with_payload(&vec![b'x'; len]),
        Payload::Obj => {
            // The same CBOR bytes ours sends, encoded once: the floor does no codec work.
            let mut cbor = Vec::new();
            ciborium::into_writer(&Obj::nth(FLOOR_OBJ_ID), &mut cbor)?;
            FloorBuf::with_payload(&cbor)
        }
    };
    let len = out.len;
    let mut child = Process::fork(move || {
        for count in [warmup, n] {
            wait_go(ctl_child.as_fd()).expect("go");
            for _ in 0..count {
                write_all(tx.as_fd(), out.frame()).expect("floor send");
            }
        }
    });
    child.start()?;
    let mut buf = FloorBuf::with_capacity(len);
    let mut secs = 0.0;
    for count in [warmup, n] {
        let start = Instant::now();
        go(ctl.as_fd())?;
        for _ in 0..count {
            let got = buf.recv(rx.as_fd())?;
            assert_eq!(got, len);
        }
        secs = start.elapsed().as_secs_f64();
    }
    join(child, "floor sender")?;
    Ok(n as f64 / secs)
}

fn oneway_ours(payload: Payload, half: bool, warmup: usize, n: usize) -> Res<f64> {
    let (mut rx, mut tx): (Connection, Connection) = if half {
        Pipe::half_duplex()?
    } else {
        Pipe::new()?
    };
    let (ctl, ctl_child) = socketpair()?;
    let mut child = Process::fork(move || {
        let (bytes, at) = match payload {
            Payload::Bytes(len) => aligned_payload(len),
            Payload::Obj => (Vec::new(), 0),
        };
        let bytes = &bytes[at..];
        let mut obj = Obj::nth(0);
        for count in [warmup, n] {
            wait_go(ctl_child.as_fd()).expect("go");
            for i in 0..count {
                match payload {
                    Payload::Bytes(_) => tx.send_bytes(bytes).expect("send_bytes"),
                    Payload::Obj => {
                        obj.id = i as u64;
                        obj.v = i as f64 * 0.1;
                        tx.send(&obj).expect("send");
                    }
                }
            }
        }
    });
    child.start()?;
    let mut buf = Vec::new();
    let mut secs = 0.0;
    for count in [warmup, n] {
        let start = Instant::now();
        go(ctl.as_fd())?;
        match payload {
            Payload::Bytes(len) => {
                for _ in 0..count {
                    let got = rx.recv_bytes_into(&mut buf)?;
                    assert_eq!(got, len);
                }
            }
            Payload::Obj => {
                let mut last = None;
                for _ in 0..count {
                    last = Some(black_box(rx.recv::<Obj>()?));
                }
                if count > 0 {
                    assert_eq!(last, Some(Obj::nth(count as u64 - 1)));
                }
            }
        }
        secs = start.elapsed().as_secs_f64();
    }
    join(child, "sender")?;
    Ok(n as f64 / secs)
}

// ---------------------------------------------------------------------------------------
// CPython, kept running between requests so that its runs interleave with ours.

// ---------------------------------------------------------------------------------------
// Running, summarising, printing.

#[derive(Clone, Copy)]
enum Imp {
    Floor,
    Ours,
    Python,
}

fn measure(case: &Case, imp: Imp, cpu: Option<usize>, py: Option<&mut Python>) -> Res<f64> {
    let (warmup, n) = (case.warmup, case.n);
    match (imp, case.kind) {
        (Imp::Python, _) => py
            .expect("python present")
            .run_on(case.name, warmup, n, cpu),
        (Imp::Floor, Kind::Rtt { .. }) => pinned(cpu, || rtt_floor(warmup, n)),
        (Imp::Ours, Kind::Rtt { .. }) => pinned(cpu, || rtt_ours(warmup, n)),
        (Imp::Floor, Kind::Oneway { payload, half }) => oneway_floor(payload, half, warmup, n),
        (Imp::Ours, Kind::Oneway { payload, half }) => oneway_ours(payload, half, warmup, n),
    }
}

fn main() -> Res<()> {
    let opts = RunOptions::from_env();
    let (quick, reps) = (opts.quick, opts.reps);
    let all = cases(quick);
    let selected: Vec<&Case> = all.iter().filter(|c| opts.selects(c.name)).collect();

    let mut python = Python::start("connection.py")?;
    let cpu = first_allowed_cpu()?;
    opts.print_header("connection", python.as_ref());
    println!("rtt_64 pinned to CPU {cpu}");

    let mut cbor = Vec::new();
    ciborium::into_writer(&Obj::nth(FLOOR_OBJ_ID), &mut cbor)?;
    println!(
        "oneway_obj: the floor sends the {} CBOR bytes of Obj::nth({FLOOR_OBJ_ID}), raw",
        cbor.len()
    );

    let started = Instant::now();
    let mut rows = Vec::new();
    for case in selected {
        let pin = matches!(case.kind, Kind::Rtt { pin: true }).then_some(cpu);
        let mut row = Row {
            bench: "connection",
            case: case.name.to_string(),
            unit: case.unit,
            floor: Vec::new(),
            ours: Vec::new(),
            python: python.as_ref().map(|_| Vec::new()),
            target_ratio: case.target_ratio,
            target_vs_python: case.target_vs_python,
        };
        for _ in 0..reps {
            row.floor.push(measure(case, Imp::Floor, pin, None)?);
            row.ours.push(measure(case, Imp::Ours, pin, None)?);
            if let (Some(py), Some(results)) = (python.as_mut(), row.python.as_mut()) {
                results.push(measure(case, Imp::Python, pin, Some(py))?);
            }
        }
        eprintln!(
            "  {:<16} done after {:.1}s",
            case.name,
            started.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    if let Some(py) = python.take() {
        py.finish()?;
    }

    println!();
    let (met, missed, unchecked) = print_rows(&rows);
    print_totals(reps, (met, missed, unchecked));
    print_json(&rows, started);
    Ok(())
}
