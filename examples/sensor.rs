//! A sensor-style real-time reader.
//!
//! A child process samples a "sensor" at a fixed rate and sends each reading with the
//! moment it was taken. The parent reads with a timeout: a silence longer than three
//! periods is reported as a stall, end of file as the sensor's death. At the end it prints
//! how late the readings arrived (send-to-receive latency percentiles).
//!
//! Midway the sensor stalls once (it stops sampling for a while) and at the end it dies
//! without saying goodbye, so both detections show up in a normal run.
//!
//! ```sh
//! cargo run --release --example sensor -- --rate 1000 --count 2000
//! ```

use std::time::Duration;

use multiproc::{ErrorKind, Pipe, Process};
use rustix::time::{ClockId, clock_gettime};
use serde::{Deserialize, Serialize};

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

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn main() -> multiproc::Result<()> {
    let rate = arg("--rate", 1000).max(1);
    let count = arg("--count", 2000);
    let period = Duration::from_secs(1) / rate;
    let (mut reader, mut sensor) = Pipe::new()?;

    let mut child = Process::fork(move || {
        let start = monotonic_ns();
        for seq in 0..count {
            if seq == count / 2 {
                // The stall: sampling stops for 30 periods (at least 50 ms).
                std::thread::sleep((period * 30).max(Duration::from_millis(50)));
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
    let mut latencies_us = Vec::with_capacity(count as usize);
    let mut stalls = 0;
    let mut last_seq = None;
    loop {
        match reader.recv_timeout::<Reading>(stall_after) {
            Ok(reading) => {
                latencies_us.push((monotonic_ns().saturating_sub(reading.taken_ns)) / 1000);
                if let Some(last) = last_seq {
                    assert_eq!(reading.seq, last + 1, "readings arrive in order, none lost");
                }
                last_seq = Some(reading.seq);
            }
            Err(e) if e.kind() == ErrorKind::Timeout => {
                stalls += 1;
                println!(
                    "stall: no reading for {} ms after reading #{}",
                    stall_after.as_millis(),
                    last_seq.map_or(-1, i64::from)
                );
                // Keep listening: a stall is not a death.
                reader
                    .recv_timeout::<Reading>(Duration::from_secs(10))
                    .map(|r| {
                        latencies_us.push((monotonic_ns().saturating_sub(r.taken_ns)) / 1000);
                        last_seq = Some(r.seq);
                        println!("sensor resumed at reading #{}", r.seq);
                    })?;
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

    latencies_us.sort_unstable();
    let pct = |p: f64| latencies_us[((latencies_us.len() - 1) as f64 * p).round() as usize];
    println!(
        "readings received: {} of {count}, stalls detected: {stalls}",
        latencies_us.len()
    );
    println!(
        "latency (us): p50 {}  p90 {}  p99 {}  max {}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies_us.last().copied().unwrap_or(0)
    );
    Ok(())
}
