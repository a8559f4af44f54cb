//! What the benches share: statistics, machine facts for the recorded runs, and the bare
//! socket calls their floors are made of.

use std::error::Error;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use rustix::io::Errno;
use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// What a run was asked for: quick mode (`BENCH_QUICK`), case-name filters (cargo passes
/// `--bench`; every argument not starting with `-` is a filter), and the repetitions.
pub struct RunOptions {
    pub quick: bool,
    pub reps: usize,
    filters: Vec<String>,
}

impl RunOptions {
    pub fn from_env() -> RunOptions {
        let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0" && !v.is_empty());
        RunOptions {
            quick,
            reps: if quick { 3 } else { 7 },
            filters: std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect(),
        }
    }

    /// Whether the case `name` runs: no filters, or one of them is part of it.
    pub fn selects(&self, name: &str) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| name.contains(f.as_str()))
    }

    /// Prints the run's first lines: the bench, its mode and repetitions, and the machine.
    pub fn print_header(&self, bench: &str, python: Option<&Python>) {
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "{bench} bench: {} mode, {} repetitions per implementation, interleaved",
            if self.quick { "quick" } else { "full" },
            self.reps
        );
        println!(
            "machine: {nproc} CPUs, {}, kernel {}; python {}; load average {} at start",
            cpu_model(),
            kernel(),
            python.map_or("absent", |p| p.version.as_str()),
            load(),
        );
    }
}

/// The first CPU this process may run on: where the pinned cases run.
#[allow(dead_code)]
pub fn first_allowed_cpu() -> Result<usize, Box<dyn Error>> {
    let allowed = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .find(|&c| allowed.is_set(c))
        .ok_or("empty CPU affinity mask")?)
}

/// Runs `f` with this thread (and so every child forked meanwhile) pinned to `cpu`.
#[allow(dead_code)]
pub fn pinned<T>(
    cpu: Option<usize>,
    f: impl FnOnce() -> Result<T, Box<dyn Error>>,
) -> Result<T, Box<dyn Error>> {
    use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};
    let Some(cpu) = cpu else { return f() };
    let saved = sched_getaffinity(None)?;
    let mut one = CpuSet::new();
    one.set(cpu);
    sched_setaffinity(None, &one)?;
    let out = f();
    sched_setaffinity(None, &saved)?;
    out
}

pub fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// (max - min) / median, in percent: how noisy the repetitions were.
pub fn spread(xs: &[f64]) -> f64 {
    let (lo, hi) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    (hi - lo) / median(xs) * 100.0
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}

pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}

pub fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

pub fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

pub fn read_exact(fd: BorrowedFd<'_>, mut buf: &mut [u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
pub enum Unit {
    /// Microseconds per call or round trip: lower is better.
    Us,
    /// Messages per second: higher is better.
    MsgPerSec,
    /// Child processes started and joined per second: higher is better.
    // Only benches/process.rs starts processes as its measure; the other benches include
    // this module too and would warn that nothing constructs it.
    #[allow(dead_code)]
    StartsPerSec,
    /// Megabytes (10^6 bytes) of items moved per second: higher is better.
    // Only benches/queue.rs measures bytes; see `StartsPerSec`.
    #[allow(dead_code)]
    MBPerSec,
    /// Round trips per second: higher is better.
    // Only benches/listener.rs; see `StartsPerSec`.
    #[allow(dead_code)]
    RoundTripsPerSec,
    /// Connections made (and authenticated, where the case says so) per second: higher is
    /// better.
    // Only benches/listener.rs; see `StartsPerSec`.
    #[allow(dead_code)]
    ConnectsPerSec,
}

impl Unit {
    pub fn as_str(self) -> &'static str {
        match self {
            Unit::Us => "us",
            Unit::MsgPerSec => "msg/s",
            Unit::StartsPerSec => "starts/s",
            Unit::MBPerSec => "MB/s",
            Unit::RoundTripsPerSec => "rt/s",
            Unit::ConnectsPerSec => "conn/s",
        }
    }

    /// How many times better `a` is than `b`.
    pub fn better(self, a: f64, b: f64) -> f64 {
        match self {
            Unit::Us => b / a,
            Unit::MsgPerSec
            | Unit::StartsPerSec
            | Unit::MBPerSec
            | Unit::RoundTripsPerSec
            | Unit::ConnectsPerSec => a / b,
        }
    }
}

/// One case's repetitions for floor, ours and Python, and its targets.
pub struct Row {
    pub bench: &'static str,
    pub case: String,
    pub unit: Unit,
    pub floor: Vec<f64>,
    pub ours: Vec<f64>,
    pub python: Option<Vec<f64>>,
    pub target_ratio: Option<f64>,
    pub target_vs_python: Option<f64>,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        self.unit.better(median(&self.ours), median(&self.floor))
    }

    pub fn vs_python(&self) -> Option<f64> {
        let py = self.python.as_ref()?;
        Some(self.unit.better(median(&self.ours), median(py)))
    }

    pub fn fmt_value(&self, v: f64) -> String {
        match self.unit {
            Unit::Us => format!("{v:.3}"),
            Unit::MsgPerSec => format!("{v:.0}"),
            // CPython's spawn manages about ten a second: keep a decimal.
            Unit::StartsPerSec => format!("{v:.1}"),
            Unit::MBPerSec => format!("{v:.0}"),
            Unit::RoundTripsPerSec | Unit::ConnectsPerSec => format!("{v:.0}"),
        }
    }

    pub fn json(&self) -> String {
        let python = match &self.python {
            Some(p) => self.fmt_value(median(p)),
            None => "null".to_string(),
        };
        let vs_python = self
            .vs_python()
            .map_or("null".to_string(), |v| format!("{v:.3}"));
        format!(
            "{{\"bench\":\"{}\",\"case\":\"{}\",\"unit\":\"{}\",\"ours\":{},\"floor\":{},\
             \"python\":{},\"ratio\":{:.3},\"vs_python\":{}}}",
            self.bench,
            self.case,
            self.unit.as_str(),
            self.fmt_value(median(&self.ours)),
            self.fmt_value(median(&self.floor)),
            python,
            self.ratio(),
            vs_python,
        )
    }

    /// `(description, met)` for each target of this case; a missing Python figure is
    /// "not checked".
    pub fn targets(&self) -> Vec<(String, Option<bool>)> {
        let mut out = Vec::new();
        if let Some(t) = self.target_ratio {
            out.push((format!("ratio>={t}"), Some(self.ratio() >= t)));
        }
        if let Some(t) = self.target_vs_python {
            out.push((format!("vs_python>={t}"), self.vs_python().map(|v| v >= t)));
        }
        out
    }
}

/// The pids of this process's children that still exist, zombies included (Linux
/// `/proc/<pid>/task/<tid>/children`, one file per thread; the benches are single-threaded).
/// `None` where the kernel does not provide the file.
#[allow(dead_code)]
pub fn children_left() -> Option<Vec<u32>> {
    let pid = std::process::id();
    let list = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    Some(
        list.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}

/// The 1, 5 and 15 minute load averages, for the record.
#[allow(dead_code)]
pub fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_string())
}

/// Prints the human-readable table of `rows` (columns sized to their contents); returns how
/// many targets were met, missed, and not checked.
#[allow(dead_code)]
pub fn print_rows(rows: &[Row]) -> (usize, usize, usize) {
    let (mut met, mut missed, mut unchecked) = (0, 0, 0);
    let mut lines = Vec::new();
    for row in rows {
        let py = row
            .python
            .as_ref()
            .map_or("-".to_string(), |p| row.fmt_value(median(p)));
        let vs_py = row
            .vs_python()
            .map_or("-".to_string(), |v| format!("{v:.2}"));
        let spreads = format!(
            "{:.0}/{:.0}/{}",
            spread(&row.floor),
            spread(&row.ours),
            row.python
                .as_ref()
                .map_or("-".to_string(), |p| format!("{:.0}", spread(p)))
        );
        let targets: Vec<String> = row
            .targets()
            .into_iter()
            .map(|(what, ok)| match ok {
                Some(true) => {
                    met += 1;
                    format!("{what} met")
                }
                Some(false) => {
                    missed += 1;
                    format!("{what} MISSED")
                }
                None => {
                    unchecked += 1;
                    format!("{what} not checked (no python)")
                }
            })
            .collect();
        lines.push([
            row.case.to_string(),
            row.unit.as_str().to_string(),
            row.fmt_value(median(&row.floor)),
            row.fmt_value(median(&row.ours)),
            py,
            format!("{:.2}", row.ratio()),
            vs_py,
            spreads,
            if targets.is_empty() {
                "-".to_string()
            } else {
                targets.join(", ")
            },
        ]);
    }
    let header = [
        "case",
        "unit",
        "floor",
        "ours",
        "python",
        "ratio",
        "vs_python",
        "spread f/o/p %",
        "targets",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.len());
        }
    }
    let print = |cells: &[&str]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            match i {
                // case, spreads and targets to the left, numbers to the right
                0 | 7 => out.push_str(&format!("{cell:<w$} ")),
                8 => out.push_str(cell),
                _ => out.push_str(&format!("{cell:>w$} ")),
            }
        }
        println!("{}", out.trim_end());
    };
    print(&header);
    for line in &lines {
        print(&line.iter().map(String::as_str).collect::<Vec<_>>());
    }
    (met, missed, unchecked)
}

/// Prints what the table's columns mean and how many targets were `met`, `missed` and not
/// checked, after [`print_rows`] (and any lines a bench adds).
#[allow(dead_code)]
pub fn print_totals(reps: usize, (met, missed, unchecked): (usize, usize, usize)) {
    println!(
        "\nratio: ours vs floor, vs_python: ours vs CPython (above 1: ours better); medians of \
         {reps}; spread: (max-min)/median"
    );
    println!("targets: {met} met, {missed} missed, {unchecked} not checked");
}

/// Prints the run's total time, then one JSON line per row: the lines runs are recorded by.
#[allow(dead_code)]
pub fn print_json(rows: &[Row], started: std::time::Instant) {
    println!("total time {:.1}s\n", started.elapsed().as_secs_f64());
    for row in rows {
        println!("{}", row.json());
    }
}

/// A CPython driver script (`benches/python/<name>`) kept running between requests, so its
/// runs interleave with ours: one request line in (`CASE WARMUP N [CPU]`), one figure out.
pub struct Python {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// What the driver said it runs, e.g. `3.11.7`.
    pub version: String,
}

impl Python {
    /// Starts `benches/python/<script> --serve`. Without `python3`: `Ok(None)` and a loud
    /// message that the python column is skipped, or an error with
    /// `MULTIPROC_REQUIRE_PYTHON=1`. Start it before any fork: it is a plain subprocess,
    /// and no thread is involved, so forking stays allowed.
    pub fn start(script: &str) -> Result<Option<Python>, Box<dyn Error>> {
        let python = Python::spawn(script)?;
        if python.is_none() {
            if std::env::var_os("MULTIPROC_REQUIRE_PYTHON").is_some_and(|v| v == "1") {
                return Err("python3 not found and MULTIPROC_REQUIRE_PYTHON=1".into());
            }
            eprintln!(
                "\n*** python3 NOT FOUND: the PYTHON column is skipped and its JSON fields are \
                 null ***\n"
            );
        }
        Ok(python)
    }

    fn spawn(script: &str) -> Result<Option<Python>, Box<dyn Error>> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("benches/python")
            .join(script);
        let spawned = Command::new("python3")
            .arg("-u")
            .arg(&script)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let version = line
            .strip_prefix("ready ")
            .ok_or_else(|| format!("python driver did not start: {line:?}"))?
            .trim()
            .to_string();
        Ok(Some(Python {
            child,
            stdin,
            stdout,
            version,
        }))
    }

    /// Runs `case` (`warmup` untimed, then `n` timed) and returns the driver's figure.
    #[allow(dead_code)]
    pub fn run(&mut self, case: &str, warmup: usize, n: usize) -> Result<f64, Box<dyn Error>> {
        self.request(case, &format!("{case} {warmup} {n}"))
    }

    /// As [`run`](Self::run), pinned to `cpu` (`None`: not pinned) by the driver.
    #[allow(dead_code)]
    pub fn run_on(
        &mut self,
        case: &str,
        warmup: usize,
        n: usize,
        cpu: Option<usize>,
    ) -> Result<f64, Box<dyn Error>> {
        let cpu = cpu.map_or(-1, |c| c as i64);
        self.request(case, &format!("{case} {warmup} {n} {cpu}"))
    }

    fn request(&mut self, case: &str, line: &str) -> Result<f64, Box<dyn Error>> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        let mut reply = String::new();
        self.stdout.read_line(&mut reply)?;
        reply
            .trim()
            .parse()
            .map_err(|_| format!("python {case}: {:?}", reply.trim()).into())
    }

    /// Stops the driver; fails unless it exits cleanly. Returns the line it printed on the
    /// way out, if any (empty otherwise).
    pub fn finish(mut self) -> Result<String, Box<dyn Error>> {
        writeln!(self.stdin, "quit")?;
        self.stdin.flush()?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        drop(self.stdin);
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("python driver exited with {status}").into());
        }
        Ok(line.trim().to_string())
    }
}
