//! A sensor-style real-time reader.
//!
//! A child process samples a "sensor" at a fixed rate and sends each reading with the
//! moment it was taken. The parent reads with a timeout: a silence longer than three
//! periods (and at least 20 ms) is reported as a stall, end of file as the sensor's death.
//! At the end it prints
//! how late the readings arrived (send-to-receive latency percentiles).
//!
//! Midway the sensor stalls once (it stops sampling for 30 periods, at least 50 ms) and at
//! the end it dies without saying goodbye, so both detections show up in a normal run.
//!
//! ```sh
//! cargo run --release --example sensor -- --rate 1000 --count 2000
//! ```

use std::time::Duration;

use multiproc::{ErrorKind, Pipe, Process};
use rustix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

/// The highest `--rate` and `--count`: a microsecond period, and 8 MB of latencies.
const MAX_RATE: u32 = 1_000_000;
const MAX_COUNT: u32 = 1_000_000;
/// How much longer than its planned pause a stalled sensor may take to resume before the
/// reader gives up on it: only a hung sensor takes that long.
const RESUME_SLACK: Duration = Duration::from_secs(10);

const USAGE: &str = "\
usage: sensor [--rate N] [--count N]

  --rate N   readings per second, 1 to 1000000 (default 1000); the stall lasts 30 periods
  --count N  readings before the sensor dies, 1 to 1000000 (default 2000)";

#[derive(Serialize, Deserialize)]
struct Reading {
    seq: u32,
    value: f64,
    /// CLOCK_MONOTONIC at sampling, in ns: the same clock in both processes.
    taken_ns: u64,
}

fn monotonic_ns() -> u64 {
    let t = clock_gettime(ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// `--rate` and `--count`, or a usage error.
fn parse_args() -> Result<(u32, u32), String> {
    fn number(flag: &str, value: Option<String>, max: u32) -> Result<u32, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| format!("{flag}: {value:?} is not a number from 1 to {max}"))
    }
    let (mut rate, mut count) = (1000, 2000);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            "--rate" => rate = number(&flag, args.next(), MAX_RATE)?,
            "--count" => count = number(&flag, args.next(), MAX_COUNT)?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((rate, count))
}

fn main() -> multiproc::Result<()> {
    let (rate, count) = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sensor: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let period = Duration::from_secs(1) / rate;
    let stall = (period * 30).max(Duration::from_millis(50));
    let (mut reader, mut sensor) = Pipe::new()?;

    let mut child = Process::fork(move || {
        let start = monotonic_ns();
        for seq in 0..count {
            if seq == count / 2 {
                std::thread::sleep(stall); // the stall: sampling stops for a while
            }
            // Sample on a fixed grid so lateness does not accumulate.
            let due = start + u64::from(seq) * period.as_nanos() as u64;
            let now = monotonic_ns();
            if due > now {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
            let value = (f64::from(seq) / 100.0).sin();
            sensor
                .send(&Reading {
                    seq,
                    value,
                    taken_ns: monotonic_ns(),
                })
                .unwrap();
        }
        // Die without closing cleanly (SIGKILL, as an OOM kill would): the reader sees EOF.
        let me = rustix::process::getpid();
        let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    });
    child.start()?;
    println!("sensor started: {rate} readings/s, {count} readings");

    let stall_after = (period * 3).max(Duration::from_millis(20));
    // Once a stall is reported, wait out the sensor's whole pause, however slow the rate.
    let resume_within = stall + RESUME_SLACK;
    let mut latencies_us = Vec::with_capacity(count as usize);
    let mut stalls = 0;
    let mut stalled = false;
    let mut last_seq = None;
    loop {
        let timeout = if stalled { resume_within } else { stall_after };
        match reader.recv_timeout::<Reading>(timeout) {
            Ok(reading) => {
                latencies_us.push((monotonic_ns().saturating_sub(reading.taken_ns)) / 1000);
                if let Some(last) = last_seq {
                    assert_eq!(reading.seq, last + 1, "readings arrive in order, none lost");
                }
                last_seq = Some(reading.seq);
                if stalled {
                    stalled = false;
                    println!("sensor resumed at reading #{}", reading.seq);
                }
            }
            // A stall is not a death: report it once and keep listening. A timeout while
            // stalled is a hung sensor, and an error.
            Err(e) if e.kind() == ErrorKind::Timeout && !stalled => {
                stalls += 1;
                stalled = true;
                println!(
                    "stall: no reading for {} ms after reading #{}",
                    stall_after.as_millis(),
                    last_seq.map_or(-1, i64::from)
                );
            }
            Err(e) if e.is_eof() => {
                println!(
                    "sensor died (end of file) after reading #{}",
                    last_seq.map_or(-1, i64::from)
                );
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let code = child.join()?;
    println!("sensor exit code: {code}");

    println!(
        "readings received: {} of {count}, stalls detected: {stalls}",
        latencies_us.len()
    );
    latencies_us.sort_unstable();
    // None if the sensor died before its first reading.
    if let Some(&max) = latencies_us.last() {
        let pct = |p: f64| latencies_us[((latencies_us.len() - 1) as f64 * p).round() as usize];
        println!(
            "latency (us): p50 {}  p90 {}  p99 {}  max {max}",
            pct(0.50),
            pct(0.90),
            pct(0.99),
        );
    } else {
        println!("latency (us): no readings");
    }
    Ok(())
}
