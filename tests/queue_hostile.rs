//! A queue's shared file written by something hostile or buggy: any word of it (header,
//! log entries, chunk maps and states, frame bytes) set to arbitrary values with `pwrite`
//! on the memfd, as any process holding its fd can. Afterwards every operation of the
//! public API must return (a typed error, a lost item or a wrong `qsize` are fine) within
//! its deadline: no panic (debug overflow checks included), no crash, no hang, no runaway
//! allocation. Each case runs in a forked process of its own, under a watchdog.

mod util;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use multiproc::{JoinableQueue, Process, Queue};
use util::{TestResult, queue_file, read64};

// Layout offsets (src/queue/layout.rs).
const H_MAGIC: u64 = 0;
const H_MAXSIZE: u64 = 8;
const H_FLAGS: u64 = 16;
const H_USED_LOGS: u64 = 20;
const H_JOINABLE: u64 = 24;
const H_ITEMS_SEQ: u64 = 64;
const H_GET_SLEEPERS: u64 = 68;
const H_SPACE_SEQ: u64 = 128;
const H_PUT_SLEEPERS: u64 = 132;
const H_EFD_STATE: u64 = 192;
const H_UNFINISHED: u64 = 256;
const H_JOIN_SEQ: u64 = 264;
const H_JOIN_SLEEPERS: u64 = 268;
const L_OWNER: u64 = 0;
const L_START: u64 = 8;
const L_RELEASED: u64 = 20;
const L_CLAIMS: u64 = 24;
const L_PENDING: u64 = 32;
const L_HEAD: u64 = 64;
const L_TAIL: u64 = 128;
const L_HELD: u64 = 192;
const L_FRESH: u64 = 196;
const L_TRIMMER: u64 = 200;
const SPAN: u64 = 1 << 30;
const CHUNK: u64 = 64 * 1024;
const MAX_LOGS: u64 = 128;
const MAPS: u64 = 64 * 1024;
const MAP_LEN: u64 = (SPAN / CHUNK) * 4;
const STATES: u64 = MAPS + MAX_LOGS * MAP_LEN;
const DATA: u64 = STATES + MAX_LOGS * MAP_LEN;

fn entry(log: u64) -> u64 {
    4096 + log * 256
}

/// Slack on top of an operation's own deadline before it counts as a hang.
const SLACK: Duration = Duration::from_secs(3);
/// Each case's watchdog.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// Where a scribble goes and what it writes.
#[derive(Clone, Debug)]
enum Value {
    U32(u32),
    U64(u64),
    /// The current `u64` there, XORed with this.
    Xor64(u64),
    /// The current `u64` there, plus this (wrapping).
    Add64(u64),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
struct Case {
    #[allow(dead_code)] // shown by Debug
    what: String,
    offset: u64,
    value: Value,
    bounded: bool,
}

fn scribble(file: &File, offset: u64, value: &Value) {
    let bytes = match value {
        Value::U32(v) => v.to_le_bytes().to_vec(),
        Value::U64(v) => v.to_le_bytes().to_vec(),
        Value::Xor64(v) => (read64(file, offset) ^ v).to_le_bytes().to_vec(),
        Value::Add64(v) => read64(file, offset).wrapping_add(*v).to_le_bytes().to_vec(),
        Value::Bytes(b) => b.clone(),
    };
    file.write_all_at(&bytes, offset).unwrap();
}

/// Runs `op`, which honours `deadline` (a duration from now); panics if it overran it.
fn timed<R: std::fmt::Debug>(what: &str, deadline: Duration, op: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let r = op();
    let took = start.elapsed();
    assert!(
        took <= deadline + SLACK,
        "{what} took {took:?} (deadline {deadline:?}): {r:?}"
    );
    r
}

const T: Duration = Duration::from_millis(20);

/// One case, in its own process: items from this process (log 0) and from a forked
/// producer (log 1, let go of with items left), the scribble, then the whole API.
fn run_case(case: &Case) {
    let q: JoinableQueue<Vec<u8>> = if case.bounded {
        JoinableQueue::bounded(8).unwrap()
    } else {
        JoinableQueue::new().unwrap()
    };
    for i in 0..3u8 {
        q.put(&vec![i; 100]).unwrap();
    }
    let tx = q.clone();
    let mut producer = Process::fork(move || {
        for i in 0..3u8 {
            tx.put(&vec![10 + i; 70_000]).unwrap();
        }
    });
    producer.start().unwrap();
    assert_eq!(producer.join_timeout(Duration::from_secs(10)).unwrap(), 0);
    let file = queue_file();
    scribble(&file, case.offset, &case.value);

    let _ = timed("qsize", Duration::ZERO, || q.qsize());
    let _ = timed("empty", Duration::ZERO, || q.empty());
    let _ = timed("full", Duration::ZERO, || q.full());
    for _ in 0..4 {
        let _ = timed("try_get", Duration::ZERO, || q.try_get().map(|v| v.len()));
    }
    for _ in 0..4 {
        let _ = timed("get_timeout", T, || q.get_timeout(T).map(|v| v.len()));
    }
    let _ = timed("put_timeout", T, || q.put_timeout(&vec![7; 10], T));
    let _ = timed("try_put", Duration::ZERO, || q.try_put(&vec![7; 10]));
    let _ = timed("join_timeout", T, || q.join_timeout(T));
    let _ = timed("task_done", Duration::ZERO, || q.task_done());
    // A producer forked after the scribble: it claims a log of its own.
    let tx = q.clone();
    let mut late = Process::fork(move || {
        for _ in 0..3 {
            let _ = tx.put_timeout(&vec![9; 5000], T);
        }
    });
    late.start().unwrap();
    let code = timed("late producer", Duration::from_secs(10), || {
        late.join_timeout(Duration::from_secs(10))
    });
    assert_eq!(code.unwrap(), 0, "late producer");
    let mut set = [q.clone()];
    let _ = timed("wait", T, || multiproc::wait(&mut set, Some(T)));
    for _ in 0..12 {
        let _ = timed("get_timeout", T, || q.get_timeout(T).map(|v| v.len()));
    }
    let _ = timed("qsize", Duration::ZERO, || q.qsize());
    let _ = timed("put_timeout", T, || q.put_timeout(&vec![7; 10], T));
    let _ = timed("get_timeout", T, || q.get_timeout(T).map(|v| v.len()));
    q.close();
    timed("shutdown", Duration::ZERO, || q.shutdown(false));
    let _ = timed("get_timeout", T, || q.get_timeout(T).map(|v| v.len()));
    timed("shutdown immediate", Duration::ZERO, || q.shutdown(true));
    let _ = timed("join_timeout", T, || q.join_timeout(T));
    timed("drop", Duration::ZERO, || drop(q));
}

fn u32_values() -> Vec<Value> {
    [
        0,
        1,
        2,
        3,
        4,
        5,
        129,
        0x7fff_ffff,
        0x8000_0000,
        u32::MAX - 1,
        u32::MAX,
    ]
    .into_iter()
    .map(Value::U32)
    .collect()
}

fn u64_values() -> Vec<Value> {
    let mut v: Vec<Value> = [
        0,
        1,
        u64::MAX,
        1 << 63,
        (1 << 63) | 1,
        0xffff_ffff,
        0x1_0000_0000,
        0x8000_0000_ffff_ffff,
        0x0123_4567_89ab_cdef,
    ]
    .into_iter()
    .map(Value::U64)
    .collect();
    v.extend(
        [1 << 40, 0xff << 40, 1, 1 << 20, 1 << 27, (1 << 40) - 1]
            .into_iter()
            .map(Value::Xor64),
    );
    // A head or tail moved: one item on, 8 bytes on, one chunk on, ~1 GiB on, and back.
    v.extend(
        [
            1 << 40,
            (1 << 40) + 1,
            1,
            CHUNK / 8,
            (SPAN - 6 * CHUNK) / 8,
            (4 * SPAN) / 8,
            u64::MAX,
            (0xff_ffffu64 << 40).wrapping_add((1 << 40) - 1),
        ]
        .into_iter()
        .map(Value::Add64),
    );
    v
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |what: String, offset: u64, values: Vec<Value>| {
        for bounded in [false, true] {
            for value in &values {
                cases.push(Case {
                    what: what.clone(),
                    offset,
                    value: value.clone(),
                    bounded,
                });
            }
        }
    };
    for (name, off) in [
        ("magic", H_MAGIC),
        ("maxsize", H_MAXSIZE),
        ("unfinished", H_UNFINISHED),
    ] {
        add(name.into(), off, u64_values());
    }
    for (name, off) in [
        ("flags", H_FLAGS),
        ("used_logs", H_USED_LOGS),
        ("joinable", H_JOINABLE),
        ("items_seq", H_ITEMS_SEQ),
        ("get_sleepers", H_GET_SLEEPERS),
        ("space_seq", H_SPACE_SEQ),
        ("put_sleepers", H_PUT_SLEEPERS),
        ("efd_state", H_EFD_STATE),
        ("join_seq", H_JOIN_SEQ),
        ("join_sleepers", H_JOIN_SLEEPERS),
    ] {
        add(name.into(), off, u32_values());
    }
    for log in [0u64, 1, 127] {
        for (name, off) in [
            ("owner", L_OWNER),
            ("start", L_START),
            ("pending", L_PENDING),
            ("head", L_HEAD),
            ("tail", L_TAIL),
            ("trimmer", L_TRIMMER),
        ] {
            add(format!("log {log} {name}"), entry(log) + off, u64_values());
        }
        for (name, off) in [
            ("released", L_RELEASED),
            ("claims", L_CLAIMS),
            ("held", L_HELD),
            ("fresh", L_FRESH),
        ] {
            add(format!("log {log} {name}"), entry(log) + off, u32_values());
        }
        let map = MAPS + log * MAP_LEN;
        let states = STATES + log * MAP_LEN;
        for i in [0u64, 1, 2, 16383] {
            add(format!("log {log} map[{i}]"), map + i * 4, u32_values());
            add(
                format!("log {log} state[{i}]"),
                states + i * 4,
                u32_values(),
            );
        }
        let data = DATA + log * SPAN;
        // Frame header and payload bytes of the first items.
        for at in [0u64, 4, 8, 112, 120, 124, 70_008 + 16] {
            add(format!("log {log} data+{at}"), data + at, u32_values());
        }
        add(
            format!("log {log} data+0 bytes"),
            data,
            vec![Value::Bytes(vec![0xff; 256]), Value::Bytes(vec![0; 256])],
        );
    }
    cases
}

/// Every case of [`cases`] in a forked process; fails listing the ones that failed.
fn run_cases(filter: impl Fn(&Case) -> bool) -> TestResult {
    let mut failed = Vec::new();
    let selected: Vec<Case> = cases().into_iter().filter(|c| filter(c)).collect();
    for case in &selected {
        let c = case.clone();
        let mut p = Process::fork(move || run_case(&c));
        p.start()?;
        match p.join_timeout(CASE_LIMIT) {
            Ok(0) => {}
            Ok(code) => failed.push(format!("{case:?}: exit {code}")),
            Err(e) => {
                let _ = p.kill();
                let _ = p.join();
                failed.push(format!("{case:?}: {e} (hung)"));
            }
        }
    }
    eprintln!("{} cases, {} failed", selected.len(), failed.len());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n").into())
    }
}

fn hostile_header_words() -> TestResult {
    run_cases(|c| c.offset < 4096)
}

fn hostile_log_entries() -> TestResult {
    run_cases(|c| (4096..MAPS).contains(&c.offset))
}

fn hostile_chunk_maps_and_states() -> TestResult {
    run_cases(|c| (MAPS..DATA).contains(&c.offset))
}

fn hostile_frame_bytes() -> TestResult {
    run_cases(|c| c.offset >= DATA)
}

/// A plain `Queue` too (not joinable), with the scribble before any get.
fn hostile_plain_queue_head_and_tail() -> TestResult {
    for value in u64_values() {
        for off in [L_HEAD, L_TAIL, L_PENDING] {
            let value = value.clone();
            let mut p = Process::fork(move || {
                let q: Queue<u32> = Queue::bounded(4).unwrap();
                q.put(&1).unwrap();
                q.put(&2).unwrap();
                let file = queue_file();
                scribble(&file, entry(0) + off, &value);
                for _ in 0..6 {
                    let _ = timed("put_timeout", T, || q.put_timeout(&3, T));
                    let _ = timed("get_timeout", T, || q.get_timeout(T));
                    let _ = timed("qsize", Duration::ZERO, || q.qsize());
                }
            });
            p.start()?;
            assert_eq!(p.join_timeout(CASE_LIMIT)?, 0, "offset {off}");
        }
    }
    Ok(())
}

/// CPU time this process has used (user + system), in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let rest = stat.rsplit_once(')').unwrap().1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime), counted from field 3 here.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A flags word with bits no `shutdown` sets (or "immediately" without "shut down"): a
/// blocked `get` and a `wait` on the queue must still sleep, not spin for their whole
/// timeout.
fn unknown_flag_bits_do_not_make_waiters_spin() -> TestResult {
    for flags in [4u32, 2, 0xffff_fff8] {
        let mut p = Process::fork(move || {
            let q: Queue<u32> = Queue::new().unwrap();
            q.put(&1).unwrap();
            assert_eq!(q.get().unwrap(), 1);
            scribble(&queue_file(), H_FLAGS, &Value::U32(flags));
            let second = Duration::from_secs(1);
            let before = cpu_ticks();
            let got = timed("get_timeout", second, || q.get_timeout(second));
            let mut set = [q.clone()];
            let ready = timed("wait", second, || multiproc::wait(&mut set, Some(second)));
            let used = cpu_ticks() - before;
            assert!(
                used < 50,
                "flags {flags:#x}: {used} ticks of CPU for a 1 s get_timeout ({got:?}) and \
                 a 1 s wait ({ready:?}): spinning"
            );
        });
        p.start()?;
        assert_eq!(p.join_timeout(CASE_LIMIT)?, 0, "flags {flags:#x}");
    }
    Ok(())
}

/// A drained log whose head and tail words were made to differ in position only (the
/// counts still equal: no item): the owner's puts must not fail `Full` for good.
fn a_head_moved_off_an_empty_tail_does_not_fill_the_log_for_good() -> TestResult {
    for moved in [L_HEAD, L_TAIL] {
        for by in [1u64, (SPAN / 8) * 2, (SPAN / 8) * 3 + 5] {
            let mut p = Process::fork(move || {
                let q: Queue<u32> = Queue::new().unwrap();
                q.put(&1).unwrap();
                assert_eq!(q.get().unwrap(), 1);
                scribble(&queue_file(), entry(0) + moved, &Value::Add64(by));
                let mut results = Vec::new();
                for i in 0..20 {
                    results.push(q.put(&i).map_err(|e| e.kind()));
                    results.push(q.get_timeout(T).map(|_| ()).map_err(|e| e.kind()));
                }
                let ok = results.iter().filter(|r| r.is_ok()).count();
                assert!(ok >= 30, "moved {moved} by {by}: {results:?}");
            });
            p.start()?;
            assert_eq!(p.join_timeout(CASE_LIMIT)?, 0, "moved {moved} by {by}");
        }
    }
    Ok(())
}

/// The sweeps take minutes each (one forked process per word and value, 3,000 in all):
/// run with `--ignored`.
fn with_timeout(t: util::Test) -> util::Test {
    t.timeout(Duration::from_secs(1800)).ignored()
}

fn main() {
    multiproc::init();
    util::run(&[
        with_timeout(util::Test::new(
            "hostile_header_words",
            hostile_header_words,
        )),
        with_timeout(util::Test::new("hostile_log_entries", hostile_log_entries)),
        with_timeout(util::Test::new(
            "hostile_chunk_maps_and_states",
            hostile_chunk_maps_and_states,
        )),
        with_timeout(util::Test::new("hostile_frame_bytes", hostile_frame_bytes)),
        util::Test::new(
            "unknown_flag_bits_do_not_make_waiters_spin",
            unknown_flag_bits_do_not_make_waiters_spin,
        ),
        util::Test::new(
            "a_head_moved_off_an_empty_tail_does_not_fill_the_log_for_good",
            a_head_moved_off_an_empty_tail_does_not_fill_the_log_for_good,
        ),
        with_timeout(util::Test::new(
            "hostile_plain_queue_head_and_tail",
            hostile_plain_queue_head_and_tail,
        )),
    ]);
}
