//! The producer's own tail and its look at the head, on legitimate states only: a log whose
//! item count and byte position are about to wrap (as a log is after 2^24 items and 8 TiB,
//! set up by writing the same word to a free log's head and tail before anyone claims it),
//! reclaimed by another process once drained, and a log at its item limit, each with
//! consumer processes taking while the producer re-reads the head. Nothing may be lost,
//! duplicated, torn or reordered: a head consumers leave is never "impossible".

mod util;

use std::error::Error as StdError;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use multiproc::{Connection, ErrorKind, Pipe, Process, Queue};
use serde_bytes::ByteBuf;
use util::{TestResult, queue_file, read64};

type Res<T> = Result<T, Box<dyn StdError>>;

const HANG: Duration = Duration::from_secs(60);

// Layout (src/queue/layout.rs).
const L_OWNER: u64 = 0;
const L_HEAD: u64 = 64;
const L_TAIL: u64 = 128;
const CHUNK: u64 = 64 * 1024;
const COUNT_MASK: u64 = (1 << 24) - 1;
const POS_MASK: u64 = (1 << 40) - 1;
const MAX_ITEMS_PER_LOG: u64 = COUNT_MASK - 1;

fn entry(log: u64) -> u64 {
    4096 + log * 256
}

fn pack(count: u64, pos: u64) -> u64 {
    ((count & COUNT_MASK) << 40) | ((pos / 8) & POS_MASK)
}

fn child<F: FnOnce() + Send + 'static>(f: F) -> Res<Process> {
    let mut p = Process::fork(f);
    p.set_daemon(true)?;
    p.start()?;
    Ok(p)
}

fn finish(p: &mut Process) -> TestResult {
    match p.join_timeout(HANG) {
        Ok(0) => Ok(()),
        Ok(code) => fail!("child {} exited with {code}", p.name()),
        Err(e) if e.is_timeout() => {
            let _ = p.kill();
            let _ = p.join();
            fail!("child {} hung; killed", p.name())
        }
        Err(e) => Err(e.into()),
    }
}

/// Item `seq`: its number, then bytes that are a function of it; mostly small, every 97th
/// up to ~100 KiB (frames across chunk boundaries, fresh chunks due).
fn item(seq: u64) -> Vec<u8> {
    let len = if seq % 97 == 0 {
        (seq * 7919 % 100_000) as usize
    } else {
        (seq * 31 % 600) as usize
    };
    let mut out = seq.to_le_bytes().to_vec();
    out.extend((0..len).map(|i| (seq as usize).wrapping_mul(131).wrapping_add(i) as u8));
    out
}

/// Takes until shut down and drained, checking every item whole; sends the numbers taken.
fn consume(q: Queue<ByteBuf>, mut out: Connection) {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    loop {
        match q.get_bytes_into(&mut buf) {
            Ok(_) => {
                let seq = u64::from_le_bytes(buf[..8].try_into().unwrap());
                assert!(buf == item(seq), "item {seq} torn ({} bytes)", buf.len());
                got.push(seq);
            }
            Err(e) if e.kind() == ErrorKind::ShutDown => break,
            Err(e) => panic!("get: {e}"),
        }
    }
    out.send(&got).unwrap();
}

/// Every number below `n` exactly once over `lists`, each list increasing.
fn check(lists: &[Vec<u64>], n: u64) -> TestResult {
    for (i, list) in lists.iter().enumerate() {
        if let Some(w) = list.windows(2).find(|w| w[0] >= w[1]) {
            fail!("consumer {i}: {} after {}", w[1], w[0]);
        }
    }
    let mut all: Vec<u64> = lists.iter().flatten().copied().collect();
    all.sort_unstable();
    let dups = all.windows(2).filter(|w| w[0] == w[1]).count();
    all.dedup();
    if all.len() as u64 != n || all.last().is_some_and(|&l| l >= n) {
        fail!("{} distinct items of {n} ({dups} duplicated)", all.len());
    }
    if dups > 0 {
        fail!("{dups} items duplicated");
    }
    Ok(())
}

fn consumers(q: &Queue<ByteBuf>, n: usize) -> Res<Vec<(Process, Connection)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let (ours, theirs) = Pipe::new()?;
        let q = q.clone();
        out.push((child(move || consume(q, theirs))?, ours));
    }
    Ok(out)
}

fn collect(q: &Queue<ByteBuf>, taking: Vec<(Process, Connection)>, n: u64) -> TestResult {
    q.shutdown(false);
    let mut lists = Vec::new();
    for (mut p, mut conn) in taking {
        lists.push(conn.recv_timeout::<Vec<u64>>(HANG)?);
        finish(&mut p)?;
    }
    check(&lists, n)
}

/// Log 0 is set (free, drained) at 3,000 items short of the count's wrap and 40 chunks
/// short of the position's. A producer process puts 40,000 items through it while two
/// consumer processes take (unbounded: before they start), and lets go of it; once it is freed a second producer claims
/// it again (at the tail the first left) and puts 40,000 more. Everything arrives once,
/// whole, in order; the head ends on the tail with the count wrapped.
fn wrapping_counts_and_positions_through_two_claims(bounded: bool) -> TestResult {
    const N: u64 = 40_000;
    let q = if bounded {
        Queue::<ByteBuf>::bounded(64)?
    } else {
        Queue::<ByteBuf>::new()?
    };
    let file = queue_file();
    let start_count = (1 << 24) - 3_000;
    let start = pack(start_count, (1 << 43) - 40 * CHUNK + 24);
    file.write_all_at(&start.to_le_bytes(), entry(0) + L_HEAD)?;
    file.write_all_at(&start.to_le_bytes(), entry(0) + L_TAIL)?;
    // Unbounded, the first producer puts all its items before anyone takes, so that its
    // looks at the head find it behind the wrap while the tail is past it.
    let mut taking = if bounded {
        Some(consumers(&q, 2)?)
    } else {
        None
    };
    for round in 0..2 {
        let producer = q.clone();
        let mut p = child(move || {
            let file = queue_file();
            for seq in round * N..(round + 1) * N {
                producer.put_bytes(&item(seq)).unwrap();
                if seq == round * N {
                    let owner = read64(&file, entry(0) + L_OWNER);
                    assert_eq!(owner & 0xffff_ffff, u64::from(std::process::id()), "log 0");
                }
            }
            producer.close();
        })?;
        finish(&mut p)?;
        if taking.is_none() {
            assert_eq!(q.qsize() as u64, N);
            taking = Some(consumers(&q, 2)?);
        }
        // Freed by the consumer that takes its last item: wait for that before the next
        // claim (a bounded wait on a word, no sleep).
        let deadline = Instant::now() + HANG;
        while read64(&file, entry(0) + L_OWNER) != 0 {
            if Instant::now() > deadline {
                fail!("log 0 not freed after its producer let go and it was drained");
            }
            std::thread::yield_now();
        }
    }
    collect(&q, taking.expect("consumers"), 2 * N)?;
    let (head, tail) = (
        read64(&file, entry(0) + L_HEAD),
        read64(&file, entry(0) + L_TAIL),
    );
    assert_eq!(head, tail);
    assert_eq!(head >> 40, (start_count + 2 * N) & COUNT_MASK);
    Ok(())
}

fn wrapping_counts_and_positions_unbounded() -> TestResult {
    wrapping_counts_and_positions_through_two_claims(false)
}

fn wrapping_counts_and_positions_bounded() -> TestResult {
    wrapping_counts_and_positions_through_two_claims(true)
}

/// A log filled to its item limit (2^24 - 2 empty items, no consumer) fails the next put
/// `Full`; then two consumer processes take everything while this process goes on putting
/// at the limit, each put re-reading a head the consumers are moving. Exactly the items
/// whose put succeeded arrive, each once.
fn a_log_at_its_item_limit_with_consumers_racing() -> TestResult {
    let q = Queue::<ByteBuf>::new()?;
    let mut n = 0u64;
    loop {
        match q.put_bytes(&[]) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == ErrorKind::Full => break,
            Err(e) => return Err(e.into()),
        }
    }
    assert_eq!(n, MAX_ITEMS_PER_LOG);
    assert_eq!(q.qsize() as u64, n);
    let mut counting = Vec::new();
    for _ in 0..2 {
        let (ours, mut theirs) = Pipe::new()?;
        let q = q.clone();
        counting.push((
            child(move || {
                let mut buf = Vec::new();
                let mut got = 0u64;
                loop {
                    match q.get_bytes_into(&mut buf) {
                        Ok(0) => got += 1,
                        Ok(len) => panic!("an item of {len} bytes"),
                        Err(e) if e.kind() == ErrorKind::ShutDown => break,
                        Err(e) => panic!("get: {e}"),
                    }
                }
                theirs.send(&got).unwrap();
            })?,
            ours,
        ));
    }
    // At the limit while the consumers start taking: some puts fail Full, the rest go in.
    let mut full = 0u64;
    for _ in 0..200_000 {
        match q.put_bytes(&[]) {
            Ok(()) => n += 1,
            Err(e) if e.kind() == ErrorKind::Full => full += 1,
            Err(e) => return Err(e.into()),
        }
    }
    eprintln!("  {full} puts at the limit were Full");
    q.shutdown(false);
    let mut got = 0;
    for (mut p, mut conn) in counting {
        got += conn.recv_timeout::<u64>(Duration::from_secs(600))?;
        finish(&mut p)?;
    }
    assert_eq!(got, n);
    Ok(())
}

fn main() {
    multiproc::init();
    util::run(&[
        util::Test::new(
            "wrapping_counts_and_positions_unbounded",
            wrapping_counts_and_positions_unbounded,
        ),
        util::Test::new(
            "wrapping_counts_and_positions_bounded",
            wrapping_counts_and_positions_bounded,
        ),
        // 2^24 puts and gets: about 20 s in a debug build.
        util::Test::new(
            "a_log_at_its_item_limit_with_consumers_racing",
            a_log_at_its_item_limit_with_consumers_racing,
        )
        .timeout(Duration::from_secs(300)),
    ]);
}
