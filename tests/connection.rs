//! `Connection` between real processes over real fds: byte and typed round trips, decode
//! errors that leave the connection usable, hostile CBOR, EOF at and inside a frame, broken
//! pipes, direction and close errors, `poll` with the read-ahead buffer, length limits,
//! `send_bytes_range`, `recv_bytes_into_slice` (Python's `BufferTooShort`), adopting fds,
//! and a long stream of small messages.
//!
//! The peer is a child started with `Process`; it synchronises with messages, never sleeps.

mod util;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use multiproc::{Connection, ErrorKind, Pipe, Process, WaitSet, wait};
use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use util::TestResult;

const READ_AHEAD: usize = 64 * 1024;

/// Starts `f` in a child process.
///
/// The child is killed if the test process dies first (a failed assertion, the runner's
/// timeout): fork gave it copies of the test's own ends, so it would otherwise wait forever
/// for an EOF that cannot come, holding the runner's stdout open.
fn spawn(f: impl FnOnce() + Send + 'static) -> multiproc::Result<Process> {
    let parent = rustix::process::getpid();
    let mut p = Process::fork(move || {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .unwrap();
        // The parent may have died before the line above.
        if rustix::process::getppid() != Some(parent) {
            std::process::exit(102);
        }
        f();
    });
    p.start()?;
    Ok(p)
}

/// Joins `p` and fails unless it exited 0 (a failed assertion in the child exits 1).
fn join_ok(p: Process) -> TestResult {
    match p.join()? {
        0 => Ok(()),
        code => fail!("child exited with {code}"),
    }
}

/// A payload whose every byte depends on its position and the seed, so a shifted, cut or
/// swapped message compares unequal.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8) ^ ((i >> 8) as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// Fails unless `result` is an error of `kind`.
fn expect_err<T: std::fmt::Debug>(
    result: multiproc::Result<T>,
    kind: ErrorKind,
    what: &str,
) -> TestResult {
    match result {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => fail!("{what}: expected {kind:?}, got {:?} ({e})", e.kind()),
        Ok(v) => fail!("{what}: expected {kind:?}, got Ok({v:?})"),
    }
}

/// `write(2)` all of `bytes` to `fd`, bypassing the framing.
fn raw_write(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        let n = rustix::io::write(fd, bytes)?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Whether the fd itself has bytes to read right now (ignoring any buffer above it).
fn fd_readable(fd: BorrowedFd<'_>) -> std::io::Result<bool> {
    let mut fds = [rustix::event::PollFd::new(
        &fd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    Ok(rustix::event::poll(&mut fds, Some(&zero))? > 0)
}

const SIZES: [usize; 4] = [0, 1, 64 * 1024, 16 * 1024 * 1024];

fn round_trip_sizes_over_duplex() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let p = spawn(move || {
        // Check each message, then echo it.
        for (i, len) in SIZES.into_iter().enumerate() {
            let got = child.recv_bytes().unwrap();
            assert!(
                got == pattern(len, i as u8),
                "message {i} of {len} bytes corrupted"
            );
            child.send_bytes(&got).unwrap();
        }
    })?;
    for (i, len) in SIZES.into_iter().enumerate() {
        let sent = pattern(len, i as u8);
        parent.send_bytes(&sent)?;
        let back = parent.recv_bytes()?;
        if back != sent {
            fail!("echo of {len} bytes differs (got {} bytes)", back.len());
        }
    }
    join_ok(p)
}

fn round_trip_sizes_over_half_duplex() -> TestResult {
    let (mut down_r, mut down_w) = Pipe::half_duplex()?;
    let (mut up_r, mut up_w) = Pipe::half_duplex()?;
    let p = spawn(move || {
        for (i, len) in SIZES.into_iter().enumerate() {
            let got = down_r.recv_bytes().unwrap();
            assert!(
                got == pattern(len, i as u8),
                "message {i} of {len} bytes corrupted"
            );
            up_w.send_bytes(&got).unwrap();
        }
    })?;
    for (i, len) in SIZES.into_iter().enumerate() {
        let sent = pattern(len, i as u8);
        down_w.send_bytes(&sent)?;
        // recv_bytes_into reuses one buffer across sizes.
        let mut back = Vec::new();
        let n = up_r.recv_bytes_into(&mut back)?;
        if n != len || back != sent {
            fail!("echo of {len} bytes differs (got {n} bytes)");
        }
    }
    join_ok(p)
}

/// Frames just under, at and over the read-ahead buffer, with 4-byte headers, sent back to
/// back so one `read(2)` sees the end of one frame and the start of the next.
fn frames_around_read_ahead_size_arrive_intact() -> TestResult {
    let sizes = [
        1,
        READ_AHEAD - 5,
        READ_AHEAD - 4,
        0,
        READ_AHEAD - 3,
        READ_AHEAD,
        2,
        READ_AHEAD + 1,
        3 * READ_AHEAD + 7,
        5,
        2 * READ_AHEAD - 4,
        0,
    ];
    for half in [false, true] {
        let (mut r, mut w) = if half {
            Pipe::half_duplex()?
        } else {
            Pipe::new()?
        };
        let p = spawn(move || {
            for (i, len) in sizes.into_iter().enumerate() {
                w.send_bytes(&pattern(len, i as u8)).unwrap();
            }
        })?;
        for (i, len) in sizes.into_iter().enumerate() {
            let got = r.recv_bytes()?;
            if got != pattern(len, i as u8) {
                fail!(
                    "half={half}: frame {i} of {len} bytes arrived as {} bytes",
                    got.len()
                );
            }
        }
        expect_err(r.recv_bytes(), ErrorKind::Eof, "after the last frame")?;
        join_ok(p)?;
    }
    Ok(())
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
enum Shape {
    Empty,
    Circle(f64),
    Point(i32, i32),
    Rect { w: u32, h: u32, label: String },
    Group(Vec<Shape>),
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Record {
    id: u64,
    name: String,
    shapes: Vec<Shape>,
    by_name: BTreeMap<String, Vec<i64>>,
    by_id: HashMap<u32, Option<String>>,
    by_pair: BTreeMap<(u8, u8), char>,
    parent: Option<Box<Record>>,
    grid: Vec<Vec<Vec<u16>>>,
    #[serde(with = "serde_bytes")]
    blob: Vec<u8>,
    extremes: (u64, i64, u128, i128, i8),
    flags: (bool, bool, ()),
}

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Marker;

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Meters(f32);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Pair(i16, String);

#[derive(Serialize, Deserialize, Debug, PartialEq, Clone)]
struct Point {
    x: i32,
    y: i32,
}

const UNICODE: &str = "héllo wörld ✓ 日本語 𝄞 🦀 \u{0} \u{10FFFF} \u{202E}rtl";

fn sample_record() -> Record {
    let child = Record {
        id: 0,
        name: String::new(),
        shapes: vec![],
        by_name: BTreeMap::new(),
        by_id: HashMap::new(),
        by_pair: BTreeMap::new(),
        parent: None,
        grid: vec![vec![], vec![vec![]]],
        blob: vec![],
        extremes: (0, 0, 0, 0, 0),
        flags: (false, false, ()),
    };
    Record {
        id: u64::MAX,
        name: UNICODE.to_string(),
        shapes: vec![
            Shape::Empty,
            Shape::Circle(1.5),
            Shape::Point(-7, i32::MAX),
            Shape::Rect {
                w: 3,
                h: 4,
                label: "ラベル".into(),
            },
            Shape::Group(vec![Shape::Empty, Shape::Group(vec![Shape::Circle(-0.25)])]),
        ],
        by_name: BTreeMap::from([
            ("".to_string(), vec![]),
            ("ключ".to_string(), vec![i64::MIN, -1, 0, 1, i64::MAX]),
        ]),
        by_id: HashMap::from([
            (1, Some("one".into())),
            (2, None),
            (u32::MAX, Some("".into())),
        ]),
        by_pair: BTreeMap::from([((0, 0), '\0'), ((1, 255), '🦀')]),
        parent: Some(Box::new(child)),
        grid: vec![vec![vec![1, 2], vec![]], vec![], vec![vec![u16::MAX; 300]]],
        blob: (0..=255).collect(),
        extremes: (u64::MAX, i64::MIN, u128::MAX, i128::MIN, i8::MIN),
        flags: (true, false, ()),
    }
}

/// In the child: receives one `T` and sends it back.
fn echo<T: Serialize + serde::de::DeserializeOwned>(conn: &mut Connection) {
    let value: T = conn.recv().unwrap();
    conn.send(&value).unwrap();
}

/// In the parent: sends `value`, receives the child's echo, compares.
fn round<T>(conn: &mut Connection, value: &T) -> TestResult
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    conn.send(value)?;
    let back: T = conn.recv()?;
    if &back != value {
        fail!("sent {value:?}, got back {back:?}");
    }
    Ok(())
}

fn typed_values_round_trip() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let p = spawn(move || {
        let c = &mut child;
        echo::<Record>(c);
        echo::<Vec<Shape>>(c);
        echo::<Marker>(c);
        echo::<Meters>(c);
        echo::<Pair>(c);
        echo::<Option<u8>>(c);
        echo::<Option<Point>>(c);
        echo::<String>(c);
        echo::<Vec<String>>(c);
        echo::<Vec<Vec<Vec<Vec<u8>>>>>(c);
        echo::<BTreeMap<String, Option<Shape>>>(c);
        echo::<serde_bytes::ByteBuf>(c);
        echo::<(char, bool, i128)>(c);
    })?;
    let c = &mut parent;
    round(c, &sample_record())?;
    round(
        c,
        &vec![
            Shape::Empty,
            Shape::Circle(f64::MAX),
            Shape::Point(i32::MIN, 0),
            Shape::Rect {
                w: 0,
                h: u32::MAX,
                label: UNICODE.into(),
            },
            Shape::Group(vec![]),
        ],
    )?;
    round(c, &Marker)?;
    round(c, &Meters(-3.25))?;
    round(c, &Pair(-1, "pair".into()))?;
    round(c, &None::<u8>)?;
    round(c, &Some(Point { x: -1, y: 1 }))?;
    round(c, &UNICODE.to_string())?;
    round(c, &vec![String::new(), UNICODE.into(), "\u{FEFF}".into()])?;
    round(
        c,
        &vec![vec![vec![vec![1u8, 2], vec![]]], vec![], vec![vec![]]],
    )?;
    round(
        c,
        &BTreeMap::from([
            ("none".to_string(), None),
            ("some".to_string(), Some(Shape::Point(1, 2))),
        ]),
    )?;
    round(c, &serde_bytes::ByteBuf::from(pattern(100_000, 7)))?;
    round(c, &('🦀', true, i128::MAX))?;
    join_ok(p)
}

fn float_specials_round_trip() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let p = spawn(move || {
        echo::<Vec<f64>>(&mut child);
        echo::<Vec<f32>>(&mut child);
    })?;
    let sub = f64::MIN_POSITIVE / 4.0;
    let sent = vec![
        f64::NAN,
        f64::INFINITY,
        f64::NEG_INFINITY,
        -0.0,
        0.0,
        sub,
        f64::MAX,
        0.1,
    ];
    parent.send(&sent)?;
    let got: Vec<f64> = parent.recv()?;
    if got.len() != sent.len() || !got[0].is_nan() {
        fail!("NaN lost: {got:?}");
    }
    // Everything but NaN must come back bit for bit (including the sign of -0.0).
    for (a, b) in sent.iter().zip(&got).skip(1) {
        if a.to_bits() != b.to_bits() {
            fail!("{a:?} came back as {b:?}");
        }
    }
    let sent32 = vec![
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        -0.0f32,
        f32::MIN_POSITIVE,
    ];
    parent.send(&sent32)?;
    let got32: Vec<f32> = parent.recv()?;
    if !got32[0].is_nan()
        || got32[1..]
            .iter()
            .zip(&sent32[1..])
            .any(|(a, b)| a.to_bits() != b.to_bits())
    {
        fail!("f32 specials came back as {got32:?}");
    }
    join_ok(p)
}

/// Byte and text strings (sent and received without ciborium) go on the wire exactly as
/// ciborium writes them, at every CBOR header size and on both sides of the small-frame
/// and read-ahead sizes; where the target type wants something else from a string, the
/// answer is ciborium's, and the connection stays usable after a decode error.
fn lone_strings_travel_as_ciborium_writes_them() -> TestResult {
    use serde_bytes::ByteBuf;
    let sizes = [
        0,
        23,
        24,
        255,
        256,
        1000,
        1100,
        65_535,
        65_536,
        READ_AHEAD + 1,
        300_000,
    ];
    let text = |len: usize| -> String {
        (0..len)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect()
    };
    let (mut parent, mut child) = Pipe::new()?;
    let p = spawn(move || {
        for _ in 0..2 {
            for (i, len) in sizes.into_iter().enumerate() {
                child.send(&ByteBuf::from(pattern(len, i as u8))).unwrap();
                child.send(&text(len)).unwrap();
            }
        }
        child.send(&ByteBuf::from(vec![1u8, 2, 3])).unwrap();
        child.send(&ByteBuf::from(vec![1u8, 2, 3])).unwrap();
        child.send(&"after".to_owned()).unwrap();
    })?;
    for (i, len) in sizes.into_iter().enumerate() {
        let mut expected = Vec::new();
        ciborium::into_writer(&ByteBuf::from(pattern(len, i as u8)), &mut expected)?;
        if parent.recv_bytes()? != expected {
            fail!("bytes of {len} differ on the wire from ciborium's encoding");
        }
        expected.clear();
        ciborium::into_writer(&text(len), &mut expected)?;
        if parent.recv_bytes()? != expected {
            fail!("text of {len} differs on the wire from ciborium's encoding");
        }
    }
    for (i, len) in sizes.into_iter().enumerate() {
        let bytes: ByteBuf = parent.recv()?;
        if bytes.as_slice() != pattern(len, i as u8).as_slice() {
            fail!(
                "bytes of {len} came back as {} bytes, or changed",
                bytes.len()
            );
        }
        if parent.recv::<String>()? != text(len) {
            fail!("text of {len} came back changed");
        }
    }
    // A plain `Vec<u8>` takes a byte string as a sequence (ciborium's answer).
    assert_eq!(parent.recv::<Vec<u8>>()?, [1, 2, 3]);
    assert_eq!(
        parent.recv::<String>().unwrap_err().kind(),
        ErrorKind::Decode
    );
    assert_eq!(parent.recv::<String>()?, "after");
    join_ok(p)
}

/// `#[serde(with = "serde_bytes")]` makes a byte field a CBOR byte string (1 byte per byte);
/// a plain `Vec<u8>` is an array of integers (up to 2 bytes per byte).
fn serde_bytes_field_is_sent_as_a_byte_string() -> TestResult {
    #[derive(Serialize)]
    struct Compact {
        #[serde(with = "serde_bytes")]
        b: Vec<u8>,
    }
    #[derive(Serialize)]
    struct Plain {
        b: Vec<u8>,
    }
    let (mut a, mut b) = Pipe::new()?;
    let bytes = vec![200u8; 1000];
    let p = spawn(move || {
        a.send(&Compact { b: bytes.clone() }).unwrap();
        a.send(&Plain { b: bytes }).unwrap();
    })?;
    let compact = b.recv_bytes()?;
    let plain = b.recv_bytes()?;
    // Map header, key "b", byte string header (3 bytes), 1000 bytes.
    if compact.len() > 1000 + 8 {
        fail!("serde_bytes field took {} bytes for 1000", compact.len());
    }
    if plain.len() < 2000 {
        fail!(
            "plain Vec<u8> took only {} bytes: the control is wrong",
            plain.len()
        );
    }
    join_ok(p)
}

/// `{"x": 1, "y": 2}`, the CBOR ciborium writes for `Point { x: 1, y: 2 }`.
const POINT_CBOR: [u8; 7] = [0xa2, 0x61, b'x', 0x01, 0x61, b'y', 0x02];

fn undecodable_frame_is_decode_error_and_next_message_arrives() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let bad: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![0xff, 0xfe, 0x00, 0x13, 0x37]),
        ("a CBOR string", vec![0x65, b'h', b'e', b'l', b'l', b'o']),
        (
            "trailing byte after a valid Point",
            [&POINT_CBOR[..], &[0x00]].concat(),
        ),
        ("a Point cut short", POINT_CBOR[..5].to_vec()),
        ("an empty frame", vec![]),
        ("a field that overflows i32", {
            let mut v = POINT_CBOR.to_vec();
            v.splice(6..7, [0x1b, 0, 0, 0, 1, 0, 0, 0, 0]);
            v
        }),
        (
            "invalid UTF-8 in a key",
            vec![0xa2, 0x61, 0xff, 0x01, 0x61, b'y', 0x02],
        ),
        (
            "garbage larger than the read-ahead buffer",
            vec![0xff; 3 * READ_AHEAD],
        ),
    ];
    let count = bad.len();
    let p = spawn(move || {
        // The control: the hand-written bytes are a valid Point.
        child.send_bytes(&POINT_CBOR).unwrap();
        for (i, (_, frame)) in bad.into_iter().enumerate() {
            child.send_bytes(&frame).unwrap();
            child.send(&Point { x: i as i32, y: -1 }).unwrap();
        }
    })?;
    if parent.recv::<Point>()? != (Point { x: 1, y: 2 }) {
        fail!("the control frame did not decode as Point {{ x: 1, y: 2 }}");
    }
    let names = [
        "garbage",
        "a CBOR string",
        "trailing byte after a valid Point",
        "a Point cut short",
        "an empty frame",
        "a field that overflows i32",
        "invalid UTF-8 in a key",
        "garbage larger than the read-ahead buffer",
    ];
    assert_eq!(names.len(), count);
    for (i, name) in names.iter().enumerate() {
        expect_err(parent.recv::<Point>(), ErrorKind::Decode, name)?;
        let next: Point = parent.recv()?;
        if next != (Point { x: i as i32, y: -1 }) {
            fail!("after {name}: got {next:?}");
        }
    }
    expect_err(parent.recv::<Point>(), ErrorKind::Eof, "at the end")?;
    join_ok(p)
}

/// Caps this (test) process's address space a little above what it uses now, so a huge
/// allocation aborts the test instead of passing unnoticed thanks to overcommit.
fn cap_address_space(headroom: u64) -> TestResult {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let vm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("no VmSize in /proc/self/status")?;
    let old = rustix::process::getrlimit(rustix::process::Resource::As);
    let want = vm_kib * 1024 + headroom;
    let current = old.current.map_or(want, |c| c.min(want));
    rustix::process::setrlimit(
        rustix::process::Resource::As,
        rustix::process::Rlimit {
            current: Some(current),
            maximum: old.maximum,
        },
    )?;
    Ok(())
}

#[derive(Deserialize, Debug)]
#[allow(dead_code)] // only ever a decode target
struct Nest(Vec<Nest>);

#[derive(Deserialize, Debug)]
#[allow(dead_code)]
enum Tree {
    Leaf(u8),
    Node(Box<Tree>),
}

fn deeply_nested_cbor_is_decode_error_without_stack_overflow() -> TestResult {
    const DEPTH: usize = 100_000;
    let mut arrays = vec![0x81u8; DEPTH];
    arrays.push(0x80);
    let mut maps = Vec::with_capacity(2 * DEPTH + 1);
    for _ in 0..DEPTH {
        maps.extend_from_slice(&[0xa1, 0x00]);
    }
    maps.push(0x00);
    let mut tags = vec![0xc6u8; DEPTH];
    tags.push(0x00);
    // {"Node": {"Node": ... }}
    let mut variants = Vec::new();
    for _ in 0..DEPTH {
        variants.extend_from_slice(&[0xa1, 0x64, b'N', b'o', b'd', b'e']);
    }
    variants.extend_from_slice(&[0xa1, 0x64, b'L', b'e', b'a', b'f', 0x00]);
    let frames = [arrays.clone(), arrays, maps, tags, variants];
    let (mut parent, mut child) = Pipe::new()?;
    let p = spawn(move || {
        // The control: shallow nesting decodes.
        child.send_bytes(&[0x81, 0x81, 0x80]).unwrap();
        for frame in frames {
            child.send_bytes(&frame).unwrap();
            child.send(&"next").unwrap();
        }
    })?;
    let control: Nest = parent.recv()?;
    if control.0.len() != 1 || control.0[0].0.len() != 1 {
        fail!("control decoded as {control:?}");
    }
    expect_err(
        parent.recv::<Nest>(),
        ErrorKind::Decode,
        "nested arrays as Nest",
    )?;
    assert_eq!(parent.recv::<String>()?, "next");
    expect_err(
        parent.recv::<IgnoredAny>(),
        ErrorKind::Decode,
        "nested arrays as IgnoredAny",
    )?;
    assert_eq!(parent.recv::<String>()?, "next");
    expect_err(
        parent.recv::<IgnoredAny>(),
        ErrorKind::Decode,
        "nested maps",
    )?;
    assert_eq!(parent.recv::<String>()?, "next");
    expect_err(
        parent.recv::<IgnoredAny>(),
        ErrorKind::Decode,
        "nested tags",
    )?;
    assert_eq!(parent.recv::<String>()?, "next");
    expect_err(
        parent.recv::<Tree>(),
        ErrorKind::Decode,
        "nested enum variants",
    )?;
    assert_eq!(parent.recv::<String>()?, "next");
    join_ok(p)
}

/// A CBOR header with an 8-byte argument: `major` type, value `n`.
fn cbor_head(major: u8, n: u64) -> Vec<u8> {
    let mut v = vec![(major << 5) | 27];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

fn huge_cbor_length_claims_are_decode_errors_without_huge_allocation() -> TestResult {
    let claims: Vec<(&'static str, Vec<u8>)> = vec![
        ("array of 2^60 as Vec<u64>", cbor_head(4, 1 << 60)),
        ("array of 2^60 as Vec<String>", cbor_head(4, 1 << 60)),
        ("array of 2^60 as IgnoredAny", cbor_head(4, 1 << 60)),
        ("map of 2^60 as HashMap", cbor_head(5, 1 << 60)),
        ("bytes of 2^62 as ByteBuf", cbor_head(2, 1 << 62)),
        ("bytes of 2^62 as Vec<u8>", cbor_head(2, 1 << 62)),
        ("text of 2^62 as String", cbor_head(3, 1 << 62)),
        ("text of u64::MAX as String", cbor_head(3, u64::MAX)),
        (
            "text of 2^62 in an array",
            [vec![0x81], cbor_head(3, 1 << 62)].concat(),
        ),
        ("indefinite array, no break", vec![0x9f, 0x01]),
    ];
    let (mut parent, mut child) = Pipe::new()?;
    let frames: Vec<Vec<u8>> = claims.iter().map(|(_, f)| f.clone()).collect();
    let p = spawn(move || {
        for frame in frames {
            child.send_bytes(&frame).unwrap();
            child.send(&7u8).unwrap();
        }
    })?;
    cap_address_space(512 << 20)?;
    let start = Instant::now();
    for (i, (name, _)) in claims.iter().enumerate() {
        let r = match i {
            0 => parent.recv::<Vec<u64>>().map(|_| ()),
            1 => parent.recv::<Vec<String>>().map(|_| ()),
            2 | 9 => parent.recv::<IgnoredAny>().map(|_| ()),
            3 => parent.recv::<HashMap<u64, u64>>().map(|_| ()),
            4 => parent.recv::<serde_bytes::ByteBuf>().map(|_| ()),
            5 => parent.recv::<Vec<u8>>().map(|_| ()),
            6 | 7 => parent.recv::<String>().map(|_| ()),
            8 => parent.recv::<Vec<String>>().map(|_| ()),
            _ => unreachable!(),
        };
        expect_err(r, ErrorKind::Decode, name)?;
        assert_eq!(parent.recv::<u8>()?, 7, "after {name}");
    }
    let took = start.elapsed();
    if took > Duration::from_secs(5) {
        fail!("rejecting the claims took {took:?}");
    }
    join_ok(p)
}

fn recv_after_peer_exit_at_boundary_is_eof() -> TestResult {
    for half in [false, true] {
        let (mut r, mut w) = if half {
            Pipe::half_duplex()?
        } else {
            Pipe::new()?
        };
        let p = spawn(move || {
            w.send_bytes(b"one").unwrap();
            w.send(&2u32).unwrap();
            w.send_bytes(&pattern(3 * READ_AHEAD, 3)).unwrap();
        })?;
        assert_eq!(r.recv_bytes()?, b"one");
        assert_eq!(r.recv::<u32>()?, 2);
        assert_eq!(r.recv_bytes()?, pattern(3 * READ_AHEAD, 3));
        // The child may still be writing the last frame until we read it; its exit closes
        // its end.
        join_ok(p)?;
        // Eof for every receive method, again and again; poll says a recv would not block.
        for _ in 0..3 {
            expect_err(r.recv_bytes(), ErrorKind::Eof, "recv_bytes")?;
            expect_err(r.recv::<u32>(), ErrorKind::Eof, "recv")?;
            expect_err(r.recv_bytes_max(10), ErrorKind::Eof, "recv_bytes_max")?;
            let mut buf = b"kept".to_vec();
            expect_err(
                r.recv_bytes_into(&mut buf),
                ErrorKind::Eof,
                "recv_bytes_into",
            )?;
            assert_eq!(buf, b"kept", "recv_bytes_into changed its buffer on error");
            assert!(r.poll(Some(Duration::ZERO))?);
            assert!(r.poll(None)?);
        }
    }
    Ok(())
}

/// A Unix socket whose peer closed with our data unread reports ECONNRESET once its queue is
/// drained; for the reader that is still a clean end of stream.
fn recv_after_peer_exits_with_our_data_unread_is_eof() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let (mut ctl_parent, mut ctl_child) = Pipe::new()?;
    let p = spawn(move || {
        ctl_child.recv_bytes().unwrap();
        // The parent's message is waiting on `child`, never read.
        child.send_bytes(b"last words").unwrap();
    })?;
    parent.send_bytes(b"never read")?;
    ctl_parent.send_bytes(b"go")?;
    assert_eq!(parent.recv_bytes()?, b"last words");
    join_ok(p)?;
    for _ in 0..2 {
        expect_err(parent.recv_bytes(), ErrorKind::Eof, "after the peer exited")?;
    }
    expect_err(
        parent.send_bytes(b"x"),
        ErrorKind::BrokenPipe,
        "send to the exited peer",
    )
}

fn recv_after_peer_exit_mid_frame_is_truncated_message() -> TestResult {
    let mut long_header = (-1i32).to_be_bytes().to_vec();
    long_header.extend_from_slice(&10u64.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("inside a 4-byte header", vec![0, 0]),
        ("inside a 12-byte header", long_header[..7].to_vec()),
        ("after a 12-byte header", long_header.clone()),
        (
            "after a header, before the payload",
            100u32.to_be_bytes().to_vec(),
        ),
        (
            "inside a small payload",
            [&100u32.to_be_bytes()[..], &[7; 50]].concat(),
        ),
        (
            "inside a large payload",
            [&(1u32 << 20).to_be_bytes()[..], &pattern(300_000, 1)].concat(),
        ),
        (
            "inside a long-form payload",
            [&long_header[..], b"abcde"].concat(),
        ),
    ];
    for half in [false, true] {
        for (name, bytes) in &cases {
            let (mut r, mut w) = if half {
                Pipe::half_duplex()?
            } else {
                Pipe::new()?
            };
            let bytes = bytes.clone();
            let p = spawn(move || {
                w.send_bytes(b"whole").unwrap();
                let fd = OwnedFd::from(w);
                raw_write(fd.as_fd(), &bytes).unwrap();
            })?;
            assert_eq!(r.recv_bytes()?, b"whole");
            for _ in 0..2 {
                expect_err(r.recv_bytes(), ErrorKind::TruncatedMessage, name)?;
                assert!(r.poll(Some(Duration::ZERO))?, "{name}: poll at EOF");
            }
            join_ok(p)?;
        }
    }
    Ok(())
}

/// Whether this process ignores SIGPIPE, from the `SigIgn` mask in `/proc/self/status`.
fn sigpipe_ignored() -> Result<bool, Box<dyn std::error::Error>> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .ok_or("no SigIgn in /proc/self/status")?;
    let mask = u64::from_str_radix(mask.trim(), 16)?;
    Ok(mask & (1 << (libc::SIGPIPE - 1)) != 0)
}

/// Writes to a peer that is gone fail with `BrokenPipe`, and the process lives on.
///
/// Limit: Rust's runtime ignores SIGPIPE before `main`, so in this binary a SIGPIPE could not
/// kill us even if the library forgot `MSG_NOSIGNAL` or its own `SIG_IGN`; setting SIGPIPE
/// back to its default would take `unsafe`, which tests may not use. What is checked is the
/// error kind, that the process survives, and that the library leaves SIGPIPE ignored.
fn send_to_exited_peer_is_broken_pipe_without_sigpipe() -> TestResult {
    assert!(sigpipe_ignored()?, "SIGPIPE not ignored at the start");
    for half in [false, true] {
        // `mine` writes; the child holds the only other end and exits at once.
        let (theirs, mut mine) = if half {
            Pipe::half_duplex()?
        } else {
            Pipe::new()?
        };
        let p = spawn(move || drop(theirs))?;
        join_ok(p)?;
        for round in 0..3 {
            for len in [0, 1, 100_000, 1 << 20] {
                let what = format!("half={half} round {round}: send_bytes of {len}");
                expect_err(mine.send_bytes(&vec![1; len]), ErrorKind::BrokenPipe, &what)?;
            }
            expect_err(mine.send(&"typed"), ErrorKind::BrokenPipe, "send")?;
        }
        // Still alive: SIGPIPE did not kill us, and the connection is still open.
        assert!(!mine.is_closed());
    }
    assert!(sigpipe_ignored()?, "SIGPIPE no longer ignored");
    Ok(())
}

/// The peer exits while we are blocked writing a message larger than the kernel buffers.
fn peer_exit_during_large_send_is_broken_pipe() -> TestResult {
    for half in [false, true] {
        let (mut theirs, mut mine) = if half {
            Pipe::half_duplex()?
        } else {
            Pipe::new()?
        };
        let p = spawn(move || {
            // Read the first message only, then exit with the big one unread.
            assert_eq!(theirs.recv_bytes().unwrap(), b"first");
        })?;
        mine.send_bytes(b"first")?;
        let big = vec![0u8; 16 << 20];
        expect_err(
            mine.send_bytes(&big),
            ErrorKind::BrokenPipe,
            "the 16 MiB send",
        )?;
        join_ok(p)?;
    }
    Ok(())
}

fn half_duplex_ends_refuse_the_wrong_direction() -> TestResult {
    let (mut reader, mut writer) = Pipe::half_duplex()?;
    assert!(reader.readable() && !reader.writable());
    assert!(writer.writable() && !writer.readable());
    expect_err(
        reader.send_bytes(b"x"),
        ErrorKind::ReadOnly,
        "reader.send_bytes",
    )?;
    expect_err(reader.send(&1u8), ErrorKind::ReadOnly, "reader.send")?;
    expect_err(
        reader.send_bytes_range(b"abc", 1, Some(1)),
        ErrorKind::ReadOnly,
        "reader.send_bytes_range",
    )?;
    expect_err(
        writer.recv_bytes(),
        ErrorKind::WriteOnly,
        "writer.recv_bytes",
    )?;
    expect_err(writer.recv::<u8>(), ErrorKind::WriteOnly, "writer.recv")?;
    expect_err(
        writer.recv_bytes_max(5),
        ErrorKind::WriteOnly,
        "writer.recv_bytes_max",
    )?;
    let mut buf = Vec::new();
    expect_err(
        writer.recv_bytes_into(&mut buf),
        ErrorKind::WriteOnly,
        "writer.recv_bytes_into",
    )?;
    expect_err(
        writer.recv_bytes_into_slice(&mut [0; 4]),
        ErrorKind::WriteOnly,
        "writer.recv_bytes_into_slice",
    )?;
    expect_err(
        writer.poll(Some(Duration::ZERO)),
        ErrorKind::WriteOnly,
        "writer.poll(0)",
    )?;
    expect_err(writer.poll(None), ErrorKind::WriteOnly, "writer.poll(None)")?;
    // The refused calls changed nothing: the right direction still works.
    let p = spawn(move || writer.send_bytes(b"still fine").unwrap())?;
    assert_eq!(reader.recv_bytes()?, b"still fine");
    join_ok(p)
}

fn every_method_after_close_is_closed() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    let (mut r, mut w) = Pipe::half_duplex()?;
    // Something buffered when closing: it is discarded.
    b.send_bytes(b"one")?;
    b.send_bytes(b"two")?;
    assert_eq!(a.recv_bytes()?, b"one");
    let poll = mio::Poll::new()?;
    for conn in [&mut a, &mut r, &mut w] {
        poll.registry()
            .register(conn, mio::Token(1), mio::Interest::READABLE)?;
        conn.close();
        // mio's calls fail (no panic: a loop that closes, then deregisters, goes on).
        for (what, result) in [
            ("deregister", poll.registry().deregister(conn)),
            (
                "register",
                poll.registry()
                    .register(conn, mio::Token(2), mio::Interest::READABLE),
            ),
            (
                "reregister",
                poll.registry()
                    .reregister(conn, mio::Token(3), mio::Interest::READABLE),
            ),
        ] {
            if result.is_ok() {
                fail!("mio {what} of a closed connection succeeded");
            }
        }
        conn.close(); // twice is fine
        assert!(conn.is_closed());
        assert_eq!(conn.buffered_len(), 0);
        expect_err(conn.send_bytes(b"x"), ErrorKind::Closed, "send_bytes")?;
        expect_err(conn.send(&1u8), ErrorKind::Closed, "send")?;
        expect_err(
            conn.send_bytes_range(b"abc", 1, None),
            ErrorKind::Closed,
            "send_bytes_range",
        )?;
        expect_err(conn.recv_bytes(), ErrorKind::Closed, "recv_bytes")?;
        expect_err(conn.recv::<u8>(), ErrorKind::Closed, "recv")?;
        expect_err(conn.recv_bytes_max(10), ErrorKind::Closed, "recv_bytes_max")?;
        let mut buf = Vec::new();
        expect_err(
            conn.recv_bytes_into(&mut buf),
            ErrorKind::Closed,
            "recv_bytes_into",
        )?;
        expect_err(
            conn.recv_bytes_into_slice(&mut [0; 4]),
            ErrorKind::Closed,
            "recv_bytes_into_slice",
        )?;
        expect_err(
            conn.poll(Some(Duration::ZERO)),
            ErrorKind::Closed,
            "poll(0)",
        )?;
        expect_err(conn.poll(None), ErrorKind::Closed, "poll(None)")?;
    }
    // The peers see the close.
    expect_err(
        b.recv_bytes(),
        ErrorKind::Eof,
        "peer of a closed duplex end",
    )?;
    Ok(())
}

/// Python checks closed and direction before the buffer arguments.
fn send_bytes_range_checks_closed_and_direction_before_bounds() -> TestResult {
    let (mut reader, _writer) = Pipe::half_duplex()?;
    expect_err(
        reader.send_bytes_range(b"abc", 10, None),
        ErrorKind::ReadOnly,
        "bad range on a read-only end",
    )?;
    let (mut a, _b) = Pipe::new()?;
    a.close();
    expect_err(
        a.send_bytes_range(b"abc", 10, None),
        ErrorKind::Closed,
        "bad range on a closed end",
    )
}

fn poll_reports_messages_buffered_frames_and_eof() -> TestResult {
    let (mut parent, mut child) = Pipe::new()?;
    let (mut ctl_parent, mut ctl_child) = Pipe::new()?;
    let p = spawn(move || {
        // 1: one message.
        ctl_child.recv_bytes().unwrap();
        child.send_bytes(b"first").unwrap();
        // 2: two messages together, then "sent" on the side channel.
        ctl_child.recv_bytes().unwrap();
        child.send_bytes(b"second").unwrap();
        child.send_bytes(b"third").unwrap();
        ctl_child.send_bytes(b"sent").unwrap();
        // 3: half a frame, then the rest when told.
        ctl_child.recv_bytes().unwrap();
        let mut frame = 10u32.to_be_bytes().to_vec();
        frame.extend_from_slice(b"0123456789");
        raw_write(child.as_fd(), &frame[..7]).unwrap();
        ctl_child.send_bytes(b"half").unwrap();
        ctl_child.recv_bytes().unwrap();
        raw_write(child.as_fd(), &frame[7..]).unwrap();
        // 4: exit, closing the connection.
    })?;

    // Nothing sent yet.
    assert!(
        !parent.poll(Some(Duration::ZERO))?,
        "poll(0) on an empty connection"
    );
    let start = Instant::now();
    assert!(!parent.poll(Some(Duration::from_millis(30)))?);
    if start.elapsed() < Duration::from_millis(25) {
        fail!("poll(30 ms) returned after {:?}", start.elapsed());
    }

    ctl_parent.send_bytes(b"go")?;
    assert!(
        parent.poll(Some(Duration::from_secs(10)))?,
        "poll after a message"
    );
    assert!(
        parent.poll(Some(Duration::ZERO))?,
        "poll(0) again: still there"
    );
    assert_eq!(parent.recv_bytes()?, b"first");

    ctl_parent.send_bytes(b"go")?;
    assert_eq!(ctl_parent.recv_bytes()?, b"sent");
    assert_eq!(parent.recv_bytes()?, b"second");
    // "third" came in with "second": the fd is drained, the buffer is not.
    assert!(
        !fd_readable(parent.as_fd())?,
        "fd still readable: the test proves nothing"
    );
    assert_eq!(parent.buffered_len(), 4 + 5);
    assert!(
        parent.poll(Some(Duration::ZERO))?,
        "poll(0) with a frame in the read-ahead buffer"
    );
    assert_eq!(parent.recv_bytes()?, b"third");
    assert!(!parent.poll(Some(Duration::ZERO))?);

    ctl_parent.send_bytes(b"go")?;
    assert_eq!(ctl_parent.recv_bytes()?, b"half");
    // Part of a frame is not a message: a true poll must never lead to a blocking recv.
    assert!(
        !parent.poll(Some(Duration::ZERO))?,
        "poll(0) with half a frame"
    );
    assert_eq!(parent.buffered_len(), 7);
    ctl_parent.send_bytes(b"go")?;
    assert!(parent.poll(None)?, "poll(None) once the frame completes");
    assert_eq!(parent.recv_bytes()?, b"0123456789");

    join_ok(p)?;
    assert!(parent.poll(Some(Duration::ZERO))?, "poll(0) at EOF");
    assert!(parent.poll(None)?, "poll(None) at EOF");
    expect_err(parent.recv_bytes(), ErrorKind::Eof, "after poll at EOF")
}

/// Messages longer than the read-ahead buffer, looked for with `poll`, `wait` or a
/// `WaitSet` before `recv`, as Python programs do (`if conn.poll(): conn.recv()`). Those
/// calls read without decoding; a frame too long for the buffer must still move to its own
/// vector as they read, or the buffer fills up and the message is lost.
fn messages_past_read_ahead_survive_poll_wait_and_wait_set() -> TestResult {
    let sizes = [
        READ_AHEAD - 4,
        READ_AHEAD - 3,
        READ_AHEAD + 1,
        200 * 1024,
        16 << 20,
    ];
    for duplex in [true, false] {
        for how in ["poll", "wait", "WaitSet"] {
            let (mut tx, rx) = if duplex {
                Pipe::new()?
            } else {
                let (r, w) = Pipe::half_duplex()?;
                (w, r)
            };
            let p = spawn(move || {
                for (i, &len) in sizes.iter().enumerate() {
                    tx.send_bytes(&pattern(len, i as u8)).unwrap();
                }
            })?;
            let mut set = WaitSet::new()?;
            let mut readers = [rx];
            for (i, &len) in sizes.iter().enumerate() {
                let ready = match how {
                    "poll" => readers[0].poll(Some(Duration::from_secs(30)))?,
                    "wait" => wait(&mut readers, Some(Duration::from_secs(30)))? == [0],
                    _ => {
                        let [rx] = readers;
                        let key = set.insert(rx)?;
                        let ready = set.wait(Some(Duration::from_secs(30)))?.contains(&key);
                        readers = [set.remove(key).expect("inserted above")];
                        ready
                    }
                };
                if !ready {
                    fail!("{how} (duplex {duplex}) did not report a {len}-byte message");
                }
                match readers[0].recv_bytes() {
                    Ok(got) if got == pattern(len, i as u8) => {}
                    Ok(got) => fail!(
                        "{how} (duplex {duplex}): {len}-byte message came back as {} bytes, \
                         or altered",
                        got.len()
                    ),
                    Err(e) => fail!("{how} (duplex {duplex}): {len}-byte message: {e}"),
                }
            }
            join_ok(p)?;
        }
    }
    Ok(())
}

/// A frame longer than the read-ahead buffer that a non-blocking receive started is still
/// held to a later, lower limit: `recv_bytes_max` refuses it (Python: "bad message length").
fn recv_bytes_max_refuses_a_large_frame_already_started() -> TestResult {
    let (mut tx, mut rx) = Pipe::new()?;
    let len = 200 * 1024;
    let (mut ctl_parent, mut ctl_child) = Pipe::new()?;
    let p = spawn(move || {
        let frame = [&(len as u32).to_be_bytes()[..], &pattern(len, 3)].concat();
        raw_write(tx.as_fd(), &frame[..READ_AHEAD]).unwrap();
        ctl_child.send_bytes(b"half").unwrap();
        ctl_child.recv_bytes().unwrap();
        raw_write(tx.as_fd(), &frame[READ_AHEAD..]).unwrap();
        tx.close();
    })?;
    assert_eq!(ctl_parent.recv_bytes()?, b"half");
    if rx.try_recv_bytes()?.is_some() {
        fail!("a frame came whole before it was sent whole");
    }
    ctl_parent.send_bytes(b"go")?;
    expect_err(
        rx.recv_bytes_max(10).map(|v| v.len()),
        ErrorKind::BadMessageLength,
        "recv_bytes_max(10)",
    )?;
    expect_err(
        rx.recv_bytes().map(|v| v.len()),
        ErrorKind::BadMessageLength,
        "recv_bytes after it",
    )?;
    join_ok(p)
}

fn recv_bytes_max_over_limit_is_bad_length_and_stays_unreadable() -> TestResult {
    for (len, limit) in [
        (10usize, 9usize),
        (1, 0),
        (3 * READ_AHEAD, 3 * READ_AHEAD - 1),
    ] {
        let (mut a, mut b) = Pipe::new()?;
        let p = spawn(move || {
            a.send_bytes(&pattern(len, 1)).unwrap();
            a.send_bytes(b"after").unwrap();
        })?;
        join_ok(p)?;
        expect_err(
            b.recv_bytes_max(limit),
            ErrorKind::BadMessageLength,
            "over the limit",
        )?;
        let buffered = b.buffered_len();
        // The payload was not consumed and nothing after it is reachable.
        expect_err(
            b.recv_bytes_max(len),
            ErrorKind::BadMessageLength,
            "then at its size",
        )?;
        expect_err(
            b.recv_bytes(),
            ErrorKind::BadMessageLength,
            "then with no limit",
        )?;
        expect_err(b.recv::<u8>(), ErrorKind::BadMessageLength, "then recv")?;
        assert_eq!(
            b.buffered_len(),
            buffered,
            "len {len}: the refused payload was consumed"
        );
        assert!(b.poll(Some(Duration::ZERO))?, "poll after a bad length");
    }
    Ok(())
}

/// A header over the connection's limit means `recv` fails at once without reading more, so
/// `poll` must say a `recv` would not block, even though the payload has not arrived.
fn poll_is_true_when_a_buffered_header_is_over_the_limit() -> TestResult {
    let (mut parent, child) = Pipe::new()?;
    let (mut ctl_parent, mut ctl_child) = Pipe::new()?;
    let p = spawn(move || {
        let mut partial = 100u32.to_be_bytes().to_vec();
        partial.extend_from_slice(&[0; 10]);
        raw_write(child.as_fd(), &partial).unwrap();
        ctl_child.send_bytes(b"written").unwrap();
        // Stay connected, sending nothing more, until told to go.
        ctl_child.recv_bytes().unwrap();
    })?;
    parent.set_max_message_len(50);
    assert_eq!(ctl_parent.recv_bytes()?, b"written");
    let ready = parent.poll(Some(Duration::ZERO))?;
    let start = Instant::now();
    expect_err(parent.recv_bytes(), ErrorKind::BadMessageLength, "recv")?;
    let took = start.elapsed();
    ctl_parent.send_bytes(b"go")?;
    join_ok(p)?;
    if !ready {
        fail!("poll(0) was false, yet recv failed at once (in {took:?}) without more bytes");
    }
    Ok(())
}

/// Python's `recv_bytes_into(buffer, offset)`: the message lands at the front of the
/// slice and the rest of it is untouched; one longer than the slice is `BufferTooShort`
/// (Python's exception) but stays in the stream, whole, for the next receive, read-ahead
/// sized or not.
fn recv_bytes_into_slice_fills_a_fixed_buffer_and_keeps_a_longer_message() -> TestResult {
    let sizes = [0usize, 5, 8, 9, 3 * READ_AHEAD];
    let (mut a, mut b) = Pipe::new()?;
    let p = spawn(move || {
        for (seed, len) in sizes.into_iter().enumerate() {
            a.send_bytes(&pattern(len, seed as u8)).unwrap();
        }
        a.send_bytes(b"after").unwrap();
    })?;
    let mut buf = [0xaa; 10];
    for (seed, len) in sizes.into_iter().enumerate() {
        let want = pattern(len, seed as u8);
        // Python: recv_bytes_into(buf, 2), into the 8 bytes from offset 2.
        match b.recv_bytes_into_slice(&mut buf[2..]) {
            Ok(n) if len <= 8 => {
                assert_eq!(n, len);
                assert_eq!(&buf[2..2 + n], &want[..]);
                assert!(buf[..2].iter().all(|&x| x == 0xaa), "before the offset");
                assert!(buf[2 + n..].iter().all(|&x| x == 0xaa), "past the message");
                buf = [0xaa; 10];
            }
            Err(e) if len > 8 && e.kind() == ErrorKind::BufferTooShort => {
                assert!(buf.iter().all(|&x| x == 0xaa), "{len}: buffer written");
                let again = b.recv_bytes_into_slice(&mut buf[2..]);
                expect_err(again, ErrorKind::BufferTooShort, "the same message again")?;
                let mut big = vec![0; len];
                assert_eq!(b.recv_bytes_into_slice(&mut big)?, len);
                assert!(
                    big == want,
                    "{len} bytes: the refused message came back changed"
                );
            }
            other => fail!("{len} bytes into 8: {other:?}"),
        }
    }
    assert_eq!(b.recv_bytes()?, b"after");
    expect_err(
        b.recv_bytes_into_slice(&mut buf),
        ErrorKind::Eof,
        "at the end",
    )?;
    join_ok(p)
}

/// A message too long for the slice is refused from its header, without waiting for its
/// payload; the payload then arrives and is received whole.
fn recv_bytes_into_slice_refuses_from_the_header_alone() -> TestResult {
    let (mut parent, child) = Pipe::new()?;
    let (mut ctl_parent, mut ctl_child) = Pipe::new()?;
    let len = 1000;
    let p = spawn(move || {
        let frame = [&(len as u32).to_be_bytes()[..], &pattern(len, 7)].concat();
        raw_write(child.as_fd(), &frame[..14]).unwrap();
        ctl_child.send_bytes(b"header written").unwrap();
        ctl_child.recv_bytes().unwrap();
        raw_write(child.as_fd(), &frame[14..]).unwrap();
    })?;
    assert_eq!(ctl_parent.recv_bytes()?, b"header written");
    // Were the payload awaited, this would block until the runner's timeout.
    expect_err(
        parent.recv_bytes_into_slice(&mut [0; 100]),
        ErrorKind::BufferTooShort,
        "100 bytes for 1000",
    )?;
    ctl_parent.send_bytes(b"go")?;
    assert!(parent.recv_bytes()? == pattern(len, 7));
    join_ok(p)
}

/// The connection's length limit comes first: over it, `BadMessageLength` (the connection is
/// unreadable after, as with every receive), even where the slice is too short as well.
fn recv_bytes_into_slice_over_the_limit_is_bad_length() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    b.set_max_message_len(4);
    a.send_bytes(b"0123456789")?;
    expect_err(
        b.recv_bytes_into_slice(&mut [0; 2]),
        ErrorKind::BadMessageLength,
        "10 bytes, limit 4, slice 2",
    )?;
    expect_err(
        b.recv_bytes_into_slice(&mut [0; 20]),
        ErrorKind::BadMessageLength,
        "then into a large slice",
    )?;
    Ok(())
}

fn recv_bytes_max_at_limit_succeeds() -> TestResult {
    let lens = [0usize, 1, 10, READ_AHEAD - 4, READ_AHEAD, 3 * READ_AHEAD];
    let (mut a, mut b) = Pipe::new()?;
    let p = spawn(move || {
        for len in lens {
            a.send_bytes(&pattern(len, 2)).unwrap();
        }
    })?;
    for len in lens {
        assert_eq!(b.recv_bytes_max(len)?, pattern(len, 2), "len {len}");
    }
    join_ok(p)
}

fn max_message_len_applies_to_every_receive() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    b.set_max_message_len(4);
    a.send(&"ok")?; // 3 bytes of CBOR
    assert_eq!(b.recv::<String>()?, "ok");
    a.send_bytes(b"1234")?;
    assert_eq!(
        b.recv_bytes_max(100)?,
        b"1234",
        "the connection limit wins when lower"
    );
    a.send(&"too long")?;
    expect_err(
        b.recv::<String>(),
        ErrorKind::BadMessageLength,
        "recv over the limit",
    )?;
    expect_err(
        b.recv_bytes(),
        ErrorKind::BadMessageLength,
        "then recv_bytes",
    )?;
    Ok(())
}

fn send_bytes_range_sends_the_slice_and_checks_bounds() -> TestResult {
    let buf = b"0123456789";
    let (mut a, mut b) = Pipe::new()?;
    let p = spawn(move || {
        a.send_bytes_range(buf, 2, Some(3)).unwrap();
        a.send_bytes_range(buf, 7, None).unwrap();
        a.send_bytes_range(buf, 0, None).unwrap();
        a.send_bytes_range(buf, 10, None).unwrap();
        a.send_bytes_range(buf, 10, Some(0)).unwrap();
        a.send_bytes_range(buf, 0, Some(10)).unwrap();
        for (offset, size) in [
            (11, None),
            (0, Some(11)),
            (5, Some(6)),
            (11, Some(0)),
            (1, Some(usize::MAX)),
        ] {
            let err = a.send_bytes_range(buf, offset, size).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidInput,
                "offset {offset} size {size:?}"
            );
        }
        a.send_bytes(b"end").unwrap();
    })?;
    let expected: [&[u8]; 7] = [b"234", b"789", buf, b"", b"", buf, b"end"];
    for want in expected {
        assert_eq!(b.recv_bytes()?, want);
    }
    // The refused calls sent nothing.
    expect_err(b.recv_bytes(), ErrorKind::Eof, "after the last message")?;
    join_ok(p)
}

fn adopted_fd_direction_follows_its_access_mode() -> TestResult {
    // A pipe: read end read-only, write end write-only.
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut r = Connection::from(r);
    let mut w = Connection::from(w);
    assert!(r.readable() && !r.writable(), "pipe read end");
    assert!(w.writable() && !w.readable(), "pipe write end");
    expect_err(
        r.send_bytes(b"x"),
        ErrorKind::ReadOnly,
        "send on an adopted read end",
    )?;
    expect_err(
        w.recv_bytes(),
        ErrorKind::WriteOnly,
        "recv on an adopted write end",
    )?;
    let p = spawn(move || w.send_bytes(b"through the pipe").unwrap())?;
    assert_eq!(r.recv_bytes()?, b"through the pipe");
    join_ok(p)?;
    expect_err(
        r.recv_bytes(),
        ErrorKind::Eof,
        "pipe after the writer exits",
    )?;

    // A socket: both ways.
    let (s1, s2) = UnixStream::pair()?;
    let mut s1 = Connection::from(OwnedFd::from(s1));
    let mut s2 = Connection::from(OwnedFd::from(s2));
    assert!(s1.readable() && s1.writable() && s2.readable() && s2.writable());
    let p = spawn(move || {
        let got = s2.recv_bytes().unwrap();
        s2.send_bytes(&[&got[..], b" and back"].concat()).unwrap();
    })?;
    s1.send_bytes(b"there")?;
    assert_eq!(s1.recv_bytes()?, b"there and back");
    join_ok(p)?;

    // A Connection's fd taken out and adopted again keeps working.
    let (a, b) = Pipe::half_duplex()?;
    let (mut a, mut b) = (
        Connection::from(OwnedFd::from(a)),
        Connection::from(OwnedFd::from(b)),
    );
    assert!(a.readable() && !a.writable() && b.writable() && !b.readable());
    b.send_bytes(b"re-adopted")?;
    assert_eq!(a.recv_bytes()?, b"re-adopted");

    // Regular files: a write-only file takes frames, a read-only one gives them back.
    let path = std::env::temp_dir().join(format!("multiproc-adopt-{}", std::process::id()));
    let written = (|| -> TestResult {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut out = Connection::from(OwnedFd::from(file));
        assert!(out.writable() && !out.readable(), "write-only file");
        out.send_bytes(b"on disk")?;
        out.send(&("typed", 3u8))?;
        out.send_bytes(&pattern(2 * READ_AHEAD, 4))?;
        drop(out);
        let mut raw = Vec::new();
        File::open(&path)?.read_to_end(&mut raw)?;
        assert_eq!(
            &raw[..11],
            b"\0\0\0\x07on disk",
            "the file holds CPython framing"
        );
        let mut input = Connection::from(OwnedFd::from(File::open(&path)?));
        assert!(input.readable() && !input.writable(), "read-only file");
        assert_eq!(input.recv_bytes()?, b"on disk");
        assert_eq!(input.recv::<(String, u8)>()?, ("typed".to_string(), 3));
        assert_eq!(input.recv_bytes()?, pattern(2 * READ_AHEAD, 4));
        expect_err(input.recv_bytes(), ErrorKind::Eof, "end of the file")?;
        // A file opened read-write is both.
        let rw = OpenOptions::new().read(true).write(true).open(&path)?;
        let rw = Connection::from(OwnedFd::from(rw));
        assert!(rw.readable() && rw.writable(), "read-write file");
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    written
}

fn hundred_thousand_small_messages_arrive_in_order() -> TestResult {
    const N: u32 = 100_000;
    let (mut parent, mut child) = Pipe::new()?;
    let p = spawn(move || {
        for i in 0..N {
            if i % 2 == 0 {
                child.send(&i).unwrap();
            } else {
                child.send_bytes(&i.to_be_bytes()).unwrap();
            }
        }
    })?;
    for i in 0..N {
        let got = if i % 2 == 0 {
            parent.recv::<u32>()?
        } else {
            let b = parent.recv_bytes()?;
            u32::from_be_bytes(b.as_slice().try_into()?)
        };
        if got != i {
            fail!("message {i} arrived as {got}");
        }
    }
    expect_err(
        parent.recv_bytes(),
        ErrorKind::Eof,
        "after the last message",
    )?;
    join_ok(p)
}

/// Whatever the child wrote with `Write` on a raw `File` over a socket still frames
/// correctly: a `Connection` needs nothing but the bytes.
fn frames_written_without_a_connection_are_received() -> TestResult {
    let (mut parent, child) = Pipe::new()?;
    let p = spawn(move || {
        let mut f = File::from(OwnedFd::from(child));
        let mut stream = Vec::new();
        for msg in [&b"a"[..], b"", b"hand framed"] {
            stream.extend_from_slice(&(msg.len() as u32).to_be_bytes());
            stream.extend_from_slice(msg);
        }
        // The long form, as CPython writes it above 2 GiB, for a short payload.
        stream.extend_from_slice(&(-1i32).to_be_bytes());
        stream.extend_from_slice(&4u64.to_be_bytes());
        stream.extend_from_slice(b"long");
        // One byte per write: the receiver sees every possible split.
        for byte in stream {
            f.write_all(&[byte]).unwrap();
        }
    })?;
    for want in [&b"a"[..], b"", b"hand framed", b"long"] {
        assert_eq!(parent.recv_bytes()?, want);
    }
    expect_err(parent.recv_bytes(), ErrorKind::Eof, "after the last frame")?;
    join_ok(p)
}

/// A socket the user made non-blocking (mio's and tokio's are) and adopted: `send_bytes`
/// of more than the socket buffer holds must wait for room, not leave half a frame on the
/// stream with an `EAGAIN` error, and `recv_bytes` must wait for the reply, not fail at once.
fn adopted_nonblocking_socket_blocks_like_any_other() -> TestResult {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_nonblocking(true)?;
    let mut ours = Connection::from(OwnedFd::from(ours));
    let mut theirs = Connection::from(OwnedFd::from(theirs));
    const ROUNDS: u8 = 20;
    let p = spawn(move || {
        for round in 0..ROUNDS {
            let got = theirs.recv_bytes().unwrap();
            assert!(got == pattern(4 << 20, round), "round {round}: damaged");
            theirs.send_bytes(&[round]).unwrap();
        }
    })?;
    for round in 0..ROUNDS {
        ours.send_bytes(&pattern(4 << 20, round))?;
        // The reply comes only once the peer has read all 4 MiB: mostly not there yet.
        assert_eq!(ours.recv_bytes()?, [round]);
    }
    join_ok(p)?;
    let flags = rustix::fs::fcntl_getfl(ours.as_fd())?;
    assert!(
        flags.contains(rustix::fs::OFlags::NONBLOCK),
        "the fd's mode is left alone"
    );
    Ok(())
}

/// The same over pipes whose both ends were made non-blocking, on both sides.
fn adopted_nonblocking_pipes_block_like_any_other() -> TestResult {
    let flags = rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK;
    let (down_r, down_w) = rustix::pipe::pipe_with(flags)?;
    let (up_r, up_w) = rustix::pipe::pipe_with(flags)?;
    let (mut down_r, mut down_w) = (Connection::from(down_r), Connection::from(down_w));
    let (mut up_r, mut up_w) = (Connection::from(up_r), Connection::from(up_w));
    const ROUNDS: u8 = 20;
    let p = spawn(move || {
        for round in 0..ROUNDS {
            assert!(down_r.poll(None).unwrap());
            let got = down_r.recv_bytes().unwrap();
            assert!(got == pattern(1 << 20, round), "round {round}: damaged");
            up_w.send_bytes(&[round]).unwrap();
        }
    })?;
    for round in 0..ROUNDS {
        down_w.send_bytes(&pattern(1 << 20, round))?;
        assert_eq!(up_r.recv_bytes()?, [round]);
    }
    join_ok(p)
}

/// Fills `a`'s socket with 1000-byte messages until `try_send` queues one (wholly or in
/// part), then queues five small ones behind it; returns the filler and how many fillers
/// were sent.
fn fill_then_queue(a: &mut Connection) -> multiproc::Result<([u8; 1000], usize)> {
    let filler = [7u8; 1000];
    let mut sent = 0;
    while a.pending_send_len() == 0 {
        a.try_send_bytes(&filler)?;
        sent += 1;
    }
    for i in 0..5u8 {
        a.try_send_bytes(&[i; 10])?;
    }
    Ok((filler, sent))
}

/// Reads the rest of what [`fill_then_queue`] sent, from filler `from` on, then the EOF.
fn read_filled_rest(b: &mut Connection, filler: &[u8], from: usize, sent: usize) -> TestResult {
    for _ in from..sent {
        assert_eq!(b.recv_bytes()?, filler);
    }
    for i in 0..5u8 {
        assert_eq!(b.recv_bytes()?, [i; 10]);
    }
    Ok(())
}

/// Messages `try_send` queued are written on `close` and on drop as far as the fd takes
/// them without blocking: here the peer has made room for all of them first, so none is
/// lost (before, they were dropped: the peer saw the last filler cut short).
fn queued_sends_are_written_on_close_and_drop_as_far_as_the_fd_takes_them() -> TestResult {
    for closing in [false, true] {
        let (mut a, mut b) = Pipe::new()?;
        let (filler, sent) = fill_then_queue(&mut a)?;
        // Every filler the socket holds whole: room for everything queued.
        for _ in 0..sent - 1 {
            assert_eq!(b.recv_bytes()?, filler);
        }
        if closing {
            a.close();
        } else {
            drop(a);
        }
        read_filled_rest(&mut b, &filler, sent - 1, sent)?;
        expect_err(b.recv_bytes(), ErrorKind::Eof, "after the queue")?;
    }
    Ok(())
}

/// A connection with queued sends moved into a fork's closure: the parent's copy, dropped
/// at `start` while the socket has room, writes nothing; the child writes the queue once.
fn queued_sends_handed_to_a_forked_child_are_written_once() -> TestResult {
    let (mut a, mut b) = Pipe::new()?;
    let (filler, sent) = fill_then_queue(&mut a)?;
    for _ in 0..sent - 1 {
        assert_eq!(b.recv_bytes()?, filler);
    }
    let p = spawn(move || a.send_bytes(b"end").unwrap())?;
    read_filled_rest(&mut b, &filler, sent - 1, sent)?;
    assert_eq!(b.recv_bytes()?, b"end");
    expect_err(b.recv_bytes(), ErrorKind::Eof, "after the child's message")?;
    join_ok(p)
}

/// Length headers no sender could honour are typed errors with a clear message, without
/// an allocation of their size, and the connection stays failed.
fn absurd_length_headers_are_typed_errors() -> TestResult {
    for (claimed, kind) in [
        (1u64 << 63, ErrorKind::BadMessageLength),
        (u64::MAX, ErrorKind::BadMessageLength),
        ((1 << 63) - 1, ErrorKind::TruncatedMessage),
    ] {
        let (ours, theirs) = UnixStream::pair()?;
        let mut ours = Connection::from(OwnedFd::from(ours));
        let mut raw = (-1i32).to_be_bytes().to_vec();
        raw.extend_from_slice(&claimed.to_be_bytes());
        raw.extend_from_slice(b"xyz");
        raw_write(theirs.as_fd(), &raw)?;
        drop(theirs);
        let err = ours.recv_bytes().unwrap_err();
        if err.kind() != kind {
            fail!("header of {claimed}: {:?} ({err})", err.kind());
        }
        if kind == ErrorKind::BadMessageLength && err.to_string().contains("limit") {
            fail!("header of {claimed}: message names a limit nobody set: {err}");
        }
        expect_err(ours.recv_bytes(), kind, "the next recv")?;
        assert!(ours.poll(Some(Duration::ZERO))?, "poll: recv fails at once");
    }
    Ok(())
}

/// Send-side headers at the 2^31 boundaries, read raw by a thread. The payloads are
/// untouched zeroed allocations (the kernel's zero page), so they cost no memory.
fn headers_at_the_length_boundaries() -> TestResult {
    for len in [(1usize << 31) - 1, 1 << 31, 1 << 32] {
        let (ours, theirs) = UnixStream::pair()?;
        let mut ours = Connection::from(OwnedFd::from(ours));
        let long = len > 0x7fff_ffff;
        let reader = std::thread::spawn(move || -> std::io::Result<(Vec<u8>, u64)> {
            let mut theirs = theirs;
            let mut head = vec![0u8; if long { 12 } else { 4 }];
            theirs.read_exact(&mut head)?;
            let total = std::io::copy(&mut theirs, &mut std::io::sink())?;
            Ok((head, total))
        });
        let payload = vec![0u8; len];
        ours.send_bytes(&payload)?;
        drop((payload, ours));
        let (head, total) = reader.join().map_err(|_| "reader panicked")??;
        let mut want = Vec::new();
        if long {
            want.extend_from_slice(&(-1i32).to_be_bytes());
            want.extend_from_slice(&(len as u64).to_be_bytes());
        } else {
            want.extend_from_slice(&(len as u32).to_be_bytes());
        }
        assert_eq!(head, want, "header for {len}");
        assert_eq!(total, len as u64, "payload for {len}");
    }
    Ok(())
}

/// A 2^31-byte frame (the shortest with CPython's long header) arrives whole, and the
/// frame after it too. Takes 2 GiB.
fn a_two_gib_frame_arrives_whole() -> TestResult {
    let (ours, theirs) = UnixStream::pair()?;
    let mut ours = Connection::from(OwnedFd::from(ours));
    let len: u64 = 1 << 31;
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut theirs = theirs;
        theirs.write_all(&(-1i32).to_be_bytes())?;
        theirs.write_all(&len.to_be_bytes())?;
        let chunk = vec![7u8; 1 << 20];
        for _ in 0..(len >> 20) {
            theirs.write_all(&chunk)?;
        }
        theirs.write_all(&[0, 0, 0, 2, b'o', b'k'])
    });
    let got = ours.recv_bytes()?;
    assert_eq!(got.len() as u64, len);
    assert!(got.iter().all(|&b| b == 7), "payload damaged");
    drop(got);
    assert_eq!(ours.recv_bytes()?, b"ok");
    writer.join().map_err(|_| "writer panicked")??;
    Ok(())
}

/// A write-only end is ready the same way to `is_ready`, `wait` and a `WaitSet` (a
/// receive fails at once with `WriteOnly`); `wait` used to block on its fd instead, until
/// the reader went away.
fn write_only_end_is_ready_alike_to_wait_and_wait_set() -> TestResult {
    let (_r, mut w) = Pipe::half_duplex()?;
    assert!(multiproc::Waitable::is_ready(&mut w));
    assert_eq!(wait(&mut [&mut w], Some(Duration::from_secs(5)))?, [0]);
    assert_eq!(wait(&mut [&mut w], None)?, [0]);
    let mut set = WaitSet::new()?;
    let key = set.insert(w)?;
    assert_eq!(set.wait(Some(Duration::from_secs(5)))?, [key]);
    let w = set.get_mut(key).ok_or("no connection")?;
    expect_err(
        w.recv_bytes(),
        ErrorKind::WriteOnly,
        "recv on the write end",
    )
}

/// Runs `f` on a thread of its own and returns what it returned; an error if it is still
/// running after `HANG` (a call that blocks for ever).
fn within_hang<R: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, Box<dyn std::error::Error>> {
    const HANG: Duration = Duration::from_secs(20);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(HANG)
        .map_err(|_| format!("{what}: still blocked after {HANG:?}").into())
}

/// A blocking socket the user gave a receive timeout (`SO_RCVTIMEO`: std's
/// `set_read_timeout`) and adopted: a receive that runs out of it fails with `EAGAIN`,
/// as the kernel says, and loses nothing (the rest of a frame begun arrives later), rather
/// than wait for ever as if the fd were non-blocking.
fn a_receive_timeout_on_an_adopted_socket_ends_a_recv() -> TestResult {
    let (ours, mut theirs) = UnixStream::pair()?;
    ours.set_read_timeout(Some(Duration::from_millis(20)))?;
    let ours = Connection::from(OwnedFd::from(ours));
    // Half a header, so the receive has begun a frame when it times out.
    theirs.write_all(&[0, 0])?;
    let (got, mut ours) = within_hang("recv_bytes past the socket's receive timeout", move || {
        let mut ours = ours;
        (ours.recv_bytes(), ours)
    })?;
    let err = got.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err:?}");
    theirs.write_all(&[0, 5])?;
    theirs.write_all(b"hello")?;
    assert_eq!(ours.recv_bytes()?, b"hello");
    Ok(())
}

/// The same for a send timeout (`SO_SNDTIMEO`: std's `set_write_timeout`): a send the peer
/// does not read fails once it runs out, rather than wait for ever.
fn a_send_timeout_on_an_adopted_socket_ends_a_send() -> TestResult {
    let (ours, theirs) = UnixStream::pair()?;
    ours.set_write_timeout(Some(Duration::from_millis(20)))?;
    let ours = Connection::from(OwnedFd::from(ours));
    let got = within_hang("send_bytes past the socket's send timeout", move || {
        let mut ours = ours;
        ours.send_bytes(&vec![7u8; 16 << 20])
    })?;
    let err = got.unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EAGAIN), "{err:?}");
    drop(theirs);
    Ok(())
}

tests_main!(
    round_trip_sizes_over_duplex,
    round_trip_sizes_over_half_duplex,
    frames_around_read_ahead_size_arrive_intact,
    typed_values_round_trip,
    float_specials_round_trip,
    serde_bytes_field_is_sent_as_a_byte_string,
    lone_strings_travel_as_ciborium_writes_them,
    undecodable_frame_is_decode_error_and_next_message_arrives,
    deeply_nested_cbor_is_decode_error_without_stack_overflow,
    huge_cbor_length_claims_are_decode_errors_without_huge_allocation,
    recv_after_peer_exit_at_boundary_is_eof,
    recv_after_peer_exits_with_our_data_unread_is_eof,
    recv_after_peer_exit_mid_frame_is_truncated_message,
    send_to_exited_peer_is_broken_pipe_without_sigpipe,
    peer_exit_during_large_send_is_broken_pipe,
    half_duplex_ends_refuse_the_wrong_direction,
    every_method_after_close_is_closed,
    send_bytes_range_checks_closed_and_direction_before_bounds,
    poll_reports_messages_buffered_frames_and_eof,
    messages_past_read_ahead_survive_poll_wait_and_wait_set,
    recv_bytes_max_refuses_a_large_frame_already_started,
    recv_bytes_max_over_limit_is_bad_length_and_stays_unreadable,
    poll_is_true_when_a_buffered_header_is_over_the_limit,
    recv_bytes_max_at_limit_succeeds,
    recv_bytes_into_slice_fills_a_fixed_buffer_and_keeps_a_longer_message,
    recv_bytes_into_slice_refuses_from_the_header_alone,
    recv_bytes_into_slice_over_the_limit_is_bad_length,
    max_message_len_applies_to_every_receive,
    send_bytes_range_sends_the_slice_and_checks_bounds,
    adopted_fd_direction_follows_its_access_mode,
    hundred_thousand_small_messages_arrive_in_order,
    frames_written_without_a_connection_are_received,
    adopted_nonblocking_socket_blocks_like_any_other,
    adopted_nonblocking_pipes_block_like_any_other,
    queued_sends_are_written_on_close_and_drop_as_far_as_the_fd_takes_them,
    queued_sends_handed_to_a_forked_child_are_written_once,
    absurd_length_headers_are_typed_errors,
    write_only_end_is_ready_alike_to_wait_and_wait_set,
    a_receive_timeout_on_an_adopted_socket_ends_a_recv,
    a_send_timeout_on_an_adopted_socket_ends_a_send;
    ignored: headers_at_the_length_boundaries,
    a_two_gib_frame_arrives_whole,
);
