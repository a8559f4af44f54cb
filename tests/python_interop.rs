//! Interop with real CPython: stock `multiprocessing.connection.Connection` (the C
//! `_multiprocessing.Connection` on 2.7) at the other end of our `Pipe`s, on every interpreter
//! `util::pythons()` finds: `python3` on PATH and each pyenv version (2.7, 3.6-3.13 here).
//!
//! The Python side is `tests/python/peer.py`, started with fds of ours the way
//! `subprocess.Popen(pass_fds=...)` passes them (see [`spawn_peer`]). It reports through stdout
//! lines and its exit code; every assertion is made here. Payloads follow a pattern both sides
//! compute (see [`period`]), so content is checked in both directions, not just lengths.
//!
//! Framing facts these tests rely on, from each interpreter's `multiprocessing/connection.py`:
//! a frame is a 4-byte big-endian signed length and the payload; 3.8+ writes payloads over
//! 0x7fffffff as -1 then an 8-byte length, and its `_recv_bytes` reads that form (`if size ==
//! -1: ... "!Q"`). 3.6 and 3.7 have no such branch (their `recv_bytes` returns `b""` for a -1
//! frame and loses its place in the stream), so the tests that need Python to *read* the long
//! form are gated on 3.8+, and `long_frame_gate_matches_interpreter_sources` checks that gate
//! against each interpreter's own source. 2.7's reader is C (`_multiprocessing.Connection`,
//! source not installed): it reads the header as an unsigned 32-bit length (a -1 header is
//! refused as longer than any `maxlength`), so it is never sent a -1 frame either.
//!
//! Without any CPython the tests say so loudly and pass, unless `MULTIPROC_REQUIRE_PYTHON=1`.

mod util;

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiproc::{Connection, ErrorKind, Pipe, Process};
use rustix::io::FdFlags;
use util::{Python, Test, TestResult};

type Res<T> = Result<T, Box<dyn StdError>>;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/peer.py");
const COMMAND_CHILD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/command_child.py");

/// The first interpreter version whose `recv_bytes` reads the -1 long-frame header.
const LONG_RECV: (u32, u32) = (3, 8);
/// Every version `util::pythons()` can report.
const ANY: (u32, u32) = (0, 0);

/// Sizes for the both-ways byte tests: empty, one byte, a frame (header included) exactly
/// filling the 64 KiB read-ahead buffer, one byte more (the large-frame path), 64 KiB, 16 MiB.
const SIZES: &[usize] = &[0, 1, 65_532, 65_533, 64 * 1024, 16 * 1024 * 1024];

// ---------------------------------------------------------------------------------------------
// Interpreters

static PYTHONS: OnceLock<Vec<Python>> = OnceLock::new();

/// Every CPython found, probed once: `main` calls this before the runner forks each test, so
/// the tests inherit the list instead of probing again.
fn interpreters() -> &'static [Python] {
    PYTHONS.get_or_init(util::pythons)
}

fn version(py: &Python) -> String {
    format!("{}.{}", py.version.0, py.version.1)
}

/// Runs `body` once per interpreter at version `min` or later, naming the interpreter in any
/// failure. With no interpreter at all, or none recent enough, skips loudly (a failure under
/// `MULTIPROC_REQUIRE_PYTHON=1`).
fn each_python(min: (u32, u32), mut body: impl FnMut(&Python) -> TestResult) -> TestResult {
    let all = interpreters();
    if all.is_empty() {
        return util::skip(
            "no CPython interpreter found (neither `python3` on PATH nor any pyenv version)",
        );
    }
    let chosen: Vec<&Python> = all.iter().filter(|py| py.version >= min).collect();
    if chosen.is_empty() {
        let found: Vec<String> = all.iter().map(version).collect();
        return util::skip(&format!(
            "this test needs CPython {}.{}+; found only {}",
            min.0,
            min.1,
            found.join(", ")
        ));
    }
    for py in &chosen {
        body(py).map_err(|e| format!("CPython {} ({}): {e}", version(py), py.path.display()))?;
    }
    let done: Vec<String> = chosen.iter().map(|py| version(py)).collect();
    eprintln!("    exercised CPython {}", done.join(" "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Spawning a Python peer

/// A running `peer.py`. [`finish`](Peer::finish) collects its report; dropping it unfinished
/// (a failed assertion) kills and reaps it.
struct Peer {
    child: Option<Child>,
    what: String,
}

/// What a finished peer said: its exit code and stdout lines.
#[derive(Debug)]
struct Report {
    what: String,
    code: Option<i32>,
    lines: Vec<String>,
}

/// Starts `python -u peer.py MODE ARGS...` with `fds` inherited at their numbers, as
/// `subprocess`'s `pass_fds` does: `FD_CLOEXEC` is cleared on each just before the spawn and
/// our copies are closed right after, so the peer holds the only ones (which is what lets
/// either side see end of file when the other exits). Clearing the flag without a race needs
/// a single-threaded process, which every test here is (the runner forks each into its own).
/// The peer's stderr is ours, so a Python traceback shows in the test output.
fn spawn_peer(py: &Python, mode: &str, args: &[String], fds: Vec<OwnedFd>) -> Res<Peer> {
    for fd in &fds {
        rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
    }
    let child = py
        .command()
        .arg(PEER)
        .arg(mode)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn();
    drop(fds);
    let what = format!("peer.py {mode} {}", args.join(" "));
    let child = child.map_err(|e| format!("could not start {}: {e}", py.path.display()))?;
    Ok(Peer {
        child: Some(child),
        what,
    })
}

/// The fd number to put on the peer's command line.
fn num(fd: &OwnedFd) -> String {
    fd.as_raw_fd().to_string()
}

impl Peer {
    /// Reads the peer's stdout to its end and reaps it.
    fn finish(mut self) -> Res<Report> {
        let mut child = self.child.take().expect("finished once");
        let mut text = String::new();
        let read = child
            .stdout
            .take()
            .expect("stdout is piped")
            .read_to_string(&mut text);
        if read.is_err() {
            let _ = child.kill();
        }
        let status = child.wait()?;
        read?;
        Ok(Report {
            what: std::mem::take(&mut self.what),
            code: status.code(),
            lines: text.lines().map(str::to_owned).collect(),
        })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Report {
    /// The peer exited 0 having printed exactly `lines`.
    fn expect(&self, lines: &[&str]) -> TestResult {
        if self.code != Some(0) || self.lines != lines {
            fail!(
                "{}: expected exit code 0 and stdout {lines:?}; got exit code {:?} and stdout \
                 {:?}",
                self.what,
                self.code,
                self.lines
            );
        }
        Ok(())
    }
}

/// `conn`'s fd, ready to pass to a peer, and its number for the command line.
fn pass(conn: Connection) -> (OwnedFd, String) {
    let fd = OwnedFd::from(conn);
    let n = num(&fd);
    (fd, n)
}

// ---------------------------------------------------------------------------------------------
// Payloads

/// One period of the payload pattern, `peer.py`'s `period(seed)`:
/// `byte[i] = ((i % 251) * 131 + ((i / 251) % 256) * 7 + seed) % 256`. The period,
/// 251 * 256 = 64256 bytes, divides no power of two, so data shifted by a header or a buffer
/// size does not match.
fn period(seed: usize) -> Vec<u8> {
    (0..PERIOD)
        .map(|i| (((i % 251) * 131 + (i / 251) * 7 + seed) % 256) as u8)
        .collect()
}

const PERIOD: usize = 251 * 256;

/// `n` bytes of the pattern for `seed`.
fn pattern(n: usize, seed: usize) -> Vec<u8> {
    let one = period(seed);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let take = (n - v.len()).min(PERIOD);
        v.extend_from_slice(&one[..take]);
    }
    v
}

/// `got` is `n` bytes of the pattern for `seed`; otherwise says where it first differs.
fn check_pattern(got: &[u8], n: usize, seed: usize, what: &str) -> TestResult {
    if got.len() != n {
        fail!("{what}: got {} bytes, expected {n}", got.len());
    }
    let one = period(seed);
    for (k, chunk) in got.chunks(PERIOD).enumerate() {
        let want = &one[..chunk.len()];
        if chunk != want {
            let i = chunk
                .iter()
                .zip(want)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            fail!(
                "{what}: {n}-byte message differs at byte {}: got {:#04x}, expected {:#04x}",
                k * PERIOD + i,
                chunk[i],
                want[i]
            );
        }
    }
    Ok(())
}

/// A hand-written long frame: the -1 marker, an 8-byte length, the payload.
fn long_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = (-1i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

fn expect_kind(res: multiproc::Result<Vec<u8>>, kind: ErrorKind, what: &str) -> TestResult {
    match res {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => fail!("{what}: expected {kind:?}, got {:?} ({e})", e.kind()),
        Ok(m) => fail!("{what}: expected {kind:?}, got a {}-byte message", m.len()),
    }
}

const SEED: usize = 11;

/// `peer.py send` arguments: fd, seed, sizes.
fn send_args(fd: String, seed: usize, sizes: &[usize]) -> Vec<String> {
    let mut args = vec![fd, seed.to_string()];
    args.extend(sizes.iter().map(ToString::to_string));
    args
}

// ---------------------------------------------------------------------------------------------
// Tests

/// The 3.8 gate for reading -1 frames agrees with each interpreter's own `_recv_bytes`
/// source, and every interpreter runs `peer.py` at the version it was probed as.
fn long_frame_gate_matches_interpreter_sources() -> TestResult {
    each_python(ANY, |py| {
        let report = spawn_peer(py, "caps", &[], vec![])?.finish()?;
        let reads_long = u8::from(py.version >= LONG_RECV);
        report.expect(&[
            &format!("version {}", version(py)),
            &format!("long_recv {reads_long}"),
        ])
    })
}

/// Rust `send_bytes` -> Python `recv_bytes`, Python `send_bytes` -> Rust `recv_bytes`, over a
/// duplex pipe: Python echoes each message and we check the content; closing our end ends
/// Python's loop with `EOFError`.
fn duplex_rust_sends_python_echoes() -> TestResult {
    let msgs: Vec<Vec<u8>> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, SEED + i))
        .collect();
    each_python(ANY, |py| {
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "echo", &[n.clone(), n], vec![fd])?;
        for (i, m) in msgs.iter().enumerate() {
            ours.send_bytes(m)?;
            let back = ours.recv_bytes()?;
            check_pattern(&back, m.len(), SEED + i, "echo")?;
        }
        drop(ours);
        peer.finish()?.expect(&[&format!("echoed {}", SIZES.len())])
    })
}

/// Python's own `send_bytes` -> our `recv_bytes` over a duplex pipe, content checked, then a
/// clean end of stream when Python exits.
fn duplex_python_sends_rust_receives() -> TestResult {
    each_python(ANY, |py| {
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "send", &send_args(n, SEED, SIZES), vec![fd])?;
        for (i, &len) in SIZES.iter().enumerate() {
            check_pattern(&ours.recv_bytes()?, len, SEED + i, "python send_bytes")?;
        }
        expect_kind(ours.recv_bytes(), ErrorKind::Eof, "after the last message")?;
        peer.finish()?.expect(&[&format!("sent {}", SIZES.len())])
    })
}

/// Half-duplex both ways: Python reads the read end of one pipe and writes the write end of
/// another, echoing; we write the first and read the second.
fn half_duplex_python_reads_and_writes() -> TestResult {
    let msgs: Vec<Vec<u8>> = SIZES
        .iter()
        .enumerate()
        .map(|(i, &n)| pattern(n, SEED + i))
        .collect();
    each_python(ANY, |py| {
        let (to_py_r, mut to_py) = Pipe::half_duplex()?;
        let (mut from_py, from_py_w) = Pipe::half_duplex()?;
        let (r, rn) = pass(to_py_r);
        let (w, wn) = pass(from_py_w);
        let peer = spawn_peer(py, "echo", &[rn, wn], vec![r, w])?;
        for (i, m) in msgs.iter().enumerate() {
            to_py.send_bytes(m)?;
            check_pattern(&from_py.recv_bytes()?, m.len(), SEED + i, "echo")?;
        }
        drop(to_py);
        expect_kind(from_py.recv_bytes(), ErrorKind::Eof, "after python's exit")?;
        peer.finish()?.expect(&[&format!("echoed {}", SIZES.len())])
    })
}

/// Python generates messages into the write end of a pipe; we read them.
fn half_duplex_python_sends_rust_receives() -> TestResult {
    each_python(ANY, |py| {
        let (mut ours, theirs) = Pipe::half_duplex()?;
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "send", &send_args(n, SEED, SIZES), vec![fd])?;
        for (i, &len) in SIZES.iter().enumerate() {
            check_pattern(&ours.recv_bytes()?, len, SEED + i, "python send_bytes")?;
        }
        expect_kind(ours.recv_bytes(), ErrorKind::Eof, "after the last message")?;
        peer.finish()?.expect(&[&format!("sent {}", SIZES.len())])
    })
}

/// Python writes hand-made -1 frames (`struct.pack('!i', -1) + struct.pack('!Q', n) +
/// payload`) with `os.write`; our `recv_bytes` returns each payload, and a short frame after
/// them proves the stream stayed aligned. Writing needs no support from Python's
/// `multiprocessing`, so every interpreter runs it.
fn long_marker_frames_python_to_rust() -> TestResult {
    // 65524 + 12 header bytes fill the read-ahead buffer exactly; 65525 takes the
    // large-frame path.
    let specs: [(&str, usize); 7] = [
        ("l", 0),
        ("l", 1),
        ("l", 65_524),
        ("l", 65_525),
        ("l", 1 << 20),
        ("s", 3),
        ("l", 7),
    ];
    each_python(ANY, |py| {
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let mut args = vec![n, SEED.to_string()];
        args.extend(specs.iter().map(|(k, len)| format!("{k}:{len}")));
        let peer = spawn_peer(py, "raw", &args, vec![fd])?;
        for (i, (kind, len)) in specs.iter().enumerate() {
            let what = format!("hand-written {kind}:{len} frame");
            check_pattern(&ours.recv_bytes()?, *len, SEED + i, &what)?;
        }
        expect_kind(ours.recv_bytes(), ErrorKind::Eof, "after the last frame")?;
        peer.finish()?.expect(&[&format!("wrote {}", specs.len())])
    })
}

/// We write hand-made -1 frames through a dup of our fd; CPython 3.8+'s `recv_bytes` reads
/// each and echoes it as a short frame; a regular frame afterwards proves alignment.
fn long_marker_frames_rust_to_python() -> TestResult {
    let sizes = [0usize, 1, 65_533, 1 << 20];
    each_python(LONG_RECV, |py| {
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let mut raw = File::from(ours.as_fd().try_clone_to_owned()?);
        let peer = spawn_peer(py, "echo", &[n.clone(), n], vec![fd])?;
        for (i, &len) in sizes.iter().enumerate() {
            raw.write_all(&long_frame(&pattern(len, SEED + i)))?;
            check_pattern(&ours.recv_bytes()?, len, SEED + i, "echo of a -1 frame")?;
        }
        ours.send_bytes(b"after the long frames")?;
        assert_eq!(ours.recv_bytes()?, b"after the long frames");
        drop(raw);
        drop(ours);
        peer.finish()?
            .expect(&[&format!("echoed {}", sizes.len() + 1)])
    })
}

/// Python exits at a frame boundary: we get every message, then `Eof`, and `Eof` again.
/// Also with no message at all, and over a half-duplex pipe.
fn python_exit_at_boundary_is_eof() -> TestResult {
    each_python(ANY, |py| {
        let cases: [(&str, &[usize]); 3] = [("duplex", &[0, 10]), ("duplex", &[]), ("pipe", &[3])];
        let mut running = Vec::new();
        for (kind, sizes) in cases {
            let (ours, theirs) = if kind == "duplex" {
                Pipe::new()?
            } else {
                Pipe::half_duplex()?
            };
            let (fd, n) = pass(theirs);
            let peer = spawn_peer(py, "send", &send_args(n, SEED, sizes), vec![fd])?;
            running.push((kind, sizes, ours, peer));
        }
        for (kind, sizes, mut ours, peer) in running {
            for (i, &len) in sizes.iter().enumerate() {
                check_pattern(&ours.recv_bytes()?, len, SEED + i, kind)?;
            }
            let what = format!("{kind} after {} messages", sizes.len());
            expect_kind(ours.recv_bytes(), ErrorKind::Eof, &what)?;
            expect_kind(ours.recv_bytes(), ErrorKind::Eof, &what)?;
            if !ours.poll(Some(Duration::ZERO))? {
                fail!("{what}: poll is false at end of stream");
            }
            peer.finish()?.expect(&[&format!("sent {}", sizes.len())])?;
        }
        Ok(())
    })
}

/// Python writes part of a frame, then exits: `TruncatedMessage`, whether the cut falls in
/// the 4-byte header, the -1 form's 12-byte header, a small payload, or a large one (the
/// large-frame read path). A header with no payload byte at all is truncated for us too
/// (CPython itself raises `EOFError` there, as its `_recv` finds zero bytes of the payload).
fn python_exit_mid_frame_is_truncated() -> TestResult {
    let cuts = [
        ("duplex", "s:10:2"),
        ("duplex", "s:10:4"),
        ("duplex", "s:10:7"),
        ("duplex", "s:1048576:524292"),
        ("duplex", "l:10:6"),
        ("duplex", "l:10:12"),
        ("duplex", "l:1048576:524300"),
        ("pipe", "s:1048576:524292"),
    ];
    each_python(ANY, |py| {
        let mut running = Vec::new();
        for (kind, spec) in cuts {
            let (ours, theirs) = if kind == "duplex" {
                Pipe::new()?
            } else {
                Pipe::half_duplex()?
            };
            let (fd, n) = pass(theirs);
            let peer = spawn_peer(py, "raw", &[n, SEED.to_string(), spec.into()], vec![fd])?;
            running.push((kind, spec, ours, peer));
        }
        for (kind, spec, mut ours, peer) in running {
            let what = format!("{kind}, frame cut as {spec}");
            expect_kind(ours.recv_bytes(), ErrorKind::TruncatedMessage, &what)?;
            expect_kind(ours.recv_bytes(), ErrorKind::TruncatedMessage, &what)?;
            peer.finish()?.expect(&["wrote 1"])?;
        }
        Ok(())
    })
}

/// We close our end: Python's `recv_bytes` raises `EOFError` after the messages we sent, over
/// a duplex pipe and as the reader of a half-duplex one.
fn rust_close_is_python_eoferror() -> TestResult {
    let sizes = [0usize, 10, 70_000];
    let msgs: Vec<Vec<u8>> = sizes.iter().map(|&n| pattern(n, SEED)).collect();
    each_python(ANY, |py| {
        for kind in ["duplex", "pipe", "duplex-silent"] {
            let (theirs, mut ours) = if kind == "pipe" {
                Pipe::half_duplex()?
            } else {
                Pipe::new()?
            };
            let (fd, n) = pass(theirs);
            let peer = spawn_peer(py, "expect_eof", &[n], vec![fd])?;
            let mut expected: Vec<String> = Vec::new();
            if kind != "duplex-silent" {
                for m in &msgs {
                    ours.send_bytes(m)?;
                    expected.push(format!("got {}", m.len()));
                }
            }
            ours.close();
            expected.push("EOFError".into());
            let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
            peer.finish()?.expect(&expected)?;
        }
        Ok(())
    })
}

/// A Python frame over our limit is `BadMessageLength` (through `recv_bytes_max` and through
/// `set_max_message_len`), a frame at the limit is fine, and the connection stays unreadable
/// after a refusal; refusing a 16 MiB frame and closing leaves Python's writer with a broken
/// pipe. The other way round, Python's `recv_bytes(maxlength)` refuses our frame.
fn over_limit_is_bad_message_length() -> TestResult {
    each_python(ANY, |py| {
        // recv_bytes_max: exactly at the limit, then one byte over.
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "send", &send_args(n, SEED, &[1000, 1000, 5]), vec![fd])?;
        check_pattern(&ours.recv_bytes_max(1000)?, 1000, SEED, "at the limit")?;
        expect_kind(
            ours.recv_bytes_max(999),
            ErrorKind::BadMessageLength,
            "over",
        )?;
        expect_kind(ours.recv_bytes(), ErrorKind::BadMessageLength, "after")?;
        if !ours.poll(Some(Duration::ZERO))? {
            fail!("poll is false after a bad message length");
        }
        peer.finish()?.expect(&["sent 3"])?;

        // set_max_message_len, over a half-duplex pipe.
        let (mut ours, theirs) = Pipe::half_duplex()?;
        ours.set_max_message_len(999);
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "send", &send_args(n, SEED, &[999, 1000]), vec![fd])?;
        check_pattern(&ours.recv_bytes()?, 999, SEED, "at the limit")?;
        expect_kind(ours.recv_bytes(), ErrorKind::BadMessageLength, "over")?;
        peer.finish()?.expect(&["sent 2"])?;

        // A 16 MiB frame against a 1 MiB limit: refused from its header; Python, still
        // writing the payload, finds its peer gone once we close.
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "send", &send_args(n, SEED, &[16 << 20]), vec![fd])?;
        expect_kind(
            ours.recv_bytes_max(1 << 20),
            ErrorKind::BadMessageLength,
            "16 MiB",
        )?;
        drop(ours);
        // 2.7's C `conn_send_string` joins the header and payload writes with `||`, which
        // turns their error into 1, taken as success: it reports no error for a message of
        // 16 KiB or more (a small one does raise `IOError(EPIPE)`).
        let gone = if py.version < (3, 0) {
            "sent 1"
        } else {
            "peer gone after 0"
        };
        peer.finish()?.expect(&[gone])?;

        // Python's recv_bytes(maxlength) on our frame.
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "recv_max", &[n, "999".into()], vec![fd])?;
        ours.send_bytes(&pattern(1000, SEED))?;
        peer.finish()?.expect(&["refused bad message length"])
    })
}

/// Whether `fd` of this process has `FD_CLOEXEC`, from `/proc/self/fdinfo` (the fd is known
/// only by number here, and borrowing a raw number would need `unsafe`).
fn is_cloexec(fd: i32) -> Res<bool> {
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let flags = info
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .ok_or("no flags line in fdinfo")?;
    let flags = u32::from_str_radix(flags.trim(), 8)?;
    Ok(flags & 0o2_000_000 != 0)
}

/// What `/proc/self/fd/N` points at (`socket:[ino]`, `pipe:[ino]`, `anon_inode:[pidfd]`...).
fn fd_target(fd: i32) -> Res<String> {
    Ok(std::fs::read_link(format!("/proc/self/fd/{fd}"))?
        .to_string_lossy()
        .into_owned())
}

/// Every fd the library creates is close-on-exec: with socketpairs, pipes and a started
/// `Process` (its pidfd) open here, a Python child has its stdio, the fds passed to it, those
/// this test process itself inherited without the flag, and nothing that is one of ours.
///
/// Fds are compared by what they point at, not by number: the interpreter opens files of its
/// own at numbers we use (2.7 keeps `/dev/urandom` open), and those are allowed as long as
/// they are not sockets, pipes or pidfds.
fn python_child_sees_only_passed_fds() -> TestResult {
    // Fds this process had before the test made any: those without FD_CLOEXEC (from whoever
    // started `cargo test`) reach any child, and are not the library's doing.
    let mut inherited = BTreeSet::new();
    for fd in util::open_fds() {
        if !is_cloexec(fd)? {
            inherited.insert(fd);
        }
    }
    let before: BTreeSet<i32> = util::open_fds().into_iter().collect();
    each_python(ANY, |py| {
        let extra = [Pipe::new()?, Pipe::half_duplex()?, Pipe::new()?];
        // A child that exits at once: until it is joined, we hold its pidfd.
        let mut process = Process::fork(|| {});
        process.start()?;
        let (mut ours, theirs) = Pipe::new()?;
        let (_pipe_r, pipe_w) = Pipe::half_duplex()?;
        for conn in extra
            .iter()
            .flat_map(|(a, b)| [a, b])
            .chain([&ours, &theirs])
        {
            if !rustix::io::fcntl_getfd(conn)?.contains(FdFlags::CLOEXEC) {
                fail!("a Connection's fd {} lacks FD_CLOEXEC", conn.as_raw_fd());
            }
        }
        let (a, an) = pass(theirs);
        let (b, bn) = pass(pipe_w);
        let passed = [a.as_raw_fd(), b.as_raw_fd()];
        let library_fds: Vec<i32> = util::open_fds()
            .into_iter()
            .filter(|fd| !before.contains(fd) && !passed.contains(fd))
            .collect();
        // 3 extra pairs, our end of the passed pair, the half-duplex read end, the pidfd.
        if library_fds.len() < 9 {
            fail!("expected at least 9 fds of the library's open here, found {library_fds:?}");
        }
        let library = library_fds
            .iter()
            .map(|&fd| fd_target(fd))
            .collect::<Res<BTreeSet<String>>>()?;
        let report = spawn_peer(py, "listfds", &[an, bn], vec![a, b])?.finish()?;
        let mut seen = BTreeSet::new();
        let mut unexpected = Vec::new();
        let mut expected: BTreeSet<i32> = [0, 1, 2].into_iter().chain(passed).collect();
        expected.extend(&inherited);
        for line in &report.lines {
            let mut words = line.splitn(3, ' ');
            let (Some("fd"), Some(Ok(fd)), Some(target)) = (
                words.next(),
                words.next().map(str::parse::<i32>),
                words.next(),
            ) else {
                fail!("unexpected line from listfds: {line:?}");
            };
            seen.insert(fd);
            let foreign = ["socket:", "pipe:", "anon_inode:"]
                .iter()
                .any(|kind| target.starts_with(kind));
            if !expected.contains(&fd) && (library.contains(target) || foreign) {
                unexpected.push(line.as_str());
            }
        }
        let missing: Vec<&i32> = expected.difference(&seen).collect();
        if report.code != Some(0) || !unexpected.is_empty() || !missing.is_empty() {
            fail!(
                "the python child should hold stdio, the passed fds {passed:?} and the fds \
                 this test inherited {inherited:?}, and none of the library's {library:?}; it \
                 holds {unexpected:?} it should not, lacks {missing:?}; exit code {:?}; \
                 listing: {:#?}",
                report.code,
                report.lines
            );
        }
        // The passed fd is the peer's end of a live connection: the child's exit closed it.
        expect_kind(ours.recv_bytes(), ErrorKind::Eof, "after listfds exited")?;
        if process.join()? != 0 {
            fail!("the helper process failed");
        }
        Ok(())
    })
}

/// A Python program as a `Process::command` child: it finds the connection we passed in
/// `MULTIPROC_FDS`, wraps it in its stock `Connection` and echoes messages of every size
/// (empty to 1 MiB) until our end closes, then exits 0 and `join` says so.
fn command_python_child_echoes_over_passed_connection() -> TestResult {
    const ECHO_SIZES: &[usize] = &[0, 1, 1000, 65_533, 1 << 20];
    each_python(ANY, |py| {
        let (mut ours, theirs) = Pipe::new()?;
        let (out, out_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let mut cmd = multiproc::Command::new(&py.path);
        let fd = cmd.pass(theirs)?;
        cmd.arg("-u")
            .arg(COMMAND_CHILD)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out_w));
        let mut child = Process::command(cmd);
        child.start()?;
        for (i, &n) in ECHO_SIZES.iter().enumerate() {
            ours.send_bytes(&pattern(n, SEED + i))?;
            check_pattern(&ours.recv_bytes()?, n, SEED + i, "python echo")?;
        }
        drop(ours);
        let code = child.join_timeout(Duration::from_secs(60))?;
        let mut text = String::new();
        File::from(out).read_to_string(&mut text)?;
        let expected = [format!("fds {fd}"), format!("echoed {}", ECHO_SIZES.len())];
        if code != 0 || text.lines().ne(expected.iter().map(String::as_str)) {
            fail!("expected exit code 0 and stdout {expected:?}; got {code} and {text:?}");
        }
        Ok(())
    })
}

/// A real message over 2 GiB (0x8000_0000 + 16 bytes), the size where CPython switches to the
/// -1 header: Python's `send_bytes` to our `recv_bytes`, then ours back to Python's
/// `recv_bytes`, content checked on both sides. Needs 3.8+ (3.6 and 3.7's `send_bytes` cannot
/// pack the length) and several GiB of memory, hence ignored by default.
fn over_2gib_message_both_ways() -> TestResult {
    const N: usize = 0x8000_0000 + 16;
    each_python(LONG_RECV, |py| {
        let start = Instant::now();
        let (mut ours, theirs) = Pipe::new()?;
        let (fd, n) = pass(theirs);
        let peer = spawn_peer(py, "big", &[n, N.to_string(), SEED.to_string()], vec![fd])?;
        let got = ours.recv_bytes()?;
        let received = start.elapsed();
        check_pattern(&got, N, SEED, "python's 2 GiB message")?;
        ours.send_bytes(&got)?;
        drop(got);
        peer.finish()?
            .expect(&[&format!("sent {N}"), &format!("received {N}")])?;
        eprintln!(
            "    CPython {}: {N} bytes python->rust in {:.1}s, round trip done in {:.1}s",
            version(py),
            received.as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

macro_rules! test {
    ($name:ident) => {
        Test::new(stringify!($name), $name).timeout(Duration::from_secs(120))
    };
}

fn main() {
    interpreters();
    util::run(&[
        test!(long_frame_gate_matches_interpreter_sources),
        test!(duplex_rust_sends_python_echoes),
        test!(duplex_python_sends_rust_receives),
        test!(half_duplex_python_reads_and_writes),
        test!(half_duplex_python_sends_rust_receives),
        test!(long_marker_frames_python_to_rust),
        test!(long_marker_frames_rust_to_python),
        test!(python_exit_at_boundary_is_eof),
        test!(python_exit_mid_frame_is_truncated),
        test!(rust_close_is_python_eoferror),
        test!(over_limit_is_bad_message_length),
        test!(python_child_sees_only_passed_fds),
        test!(command_python_child_echoes_over_passed_connection),
        test!(over_2gib_message_both_ways)
            .ignored()
            .timeout(Duration::from_secs(1800)),
    ]);
}
