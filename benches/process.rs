//! `Process` start methods next to their floors and next to CPython, in one run.
//!
//! Each case starts a child that does nothing, joins it, and repeats; the figure is starts +
//! joins per second. Three implementations run interleaved (floor, ours, python, repeat) so
//! machine noise hits them alike; each figure is the median of the repetitions:
//!
//! - **floor**: the bare mechanism with none of `Process`'s bookkeeping.
//! - **ours**: `multiproc::Process`: create, `start`, `join`.
//! - **python**: CPython running `benches/python/process.py`, driven over its stdin so that
//!   its runs interleave with ours. Without `python3` the python fields are `null` (a loud
//!   message says so; `MULTIPROC_REQUIRE_PYTHON=1` makes it an error).
//!
//! | case | ours | floor | python |
//! |---|---|---|---|
//! | `fork_join` | `Process::fork(\|\| {})` | `bench_support::raw_fork_wait()`: `fork`, `_exit(0)`, `waitid` | `get_context("fork").Process(target=noop)` |
//! | `spawn_join` | `Process::spawn(noop_entry, ())` | this executable run by `std::process::Command::status()` (`posix_spawn`) with [`FLOOR_ENV`] set, which makes `main` exit at once | `get_context("spawn").Process(target=noop)` |
//! | `command_join` | `Process::command(Command::new("/bin/true"))` | `std::process::Command::new("/bin/true").status()` | `subprocess.run(["/bin/true"])`: `multiprocessing` has no command start method |
//!
//! Every child is joined (reaped) before the next starts, and the bench checks at the end
//! that it has no child left, zombie or not.
//!
//! `ratio` is ours against the floor and `vs_python` ours against CPython, both oriented so
//! that above 1 means ours is better.
//!
//! Run: `cargo bench --bench process` (85-100 s here) or `BENCH_QUICK=1 cargo bench
//! --bench process` (about 12 s here). Extra arguments are case-name filters.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use multiproc::Process;
use multiproc::bench_support::raw_fork_wait;

// This bench uses only part of what the benches share (no socket helpers).
#[allow(dead_code)]
mod common;
use common::{Python, Row, RunOptions, Unit, children_left, print_json, print_rows, print_totals};

type Res<T> = Result<T, Box<dyn Error>>;

/// Set in the environment of the `spawn_join` floor's child: `main` exits with 0 when it
/// sees it, before anything else, as a spawned child that has nothing to do.
const FLOOR_ENV: &str = "MULTIPROC_BENCH_PROCESS_EXIT";

/// The program of the `command_join` case.
const TRUE: &str = "/bin/true";

/// The spawned child's entry in `spawn_join`.
fn noop_entry(_: ()) {}

#[derive(Clone, Copy)]
enum Kind {
    Fork,
    Spawn,
    Command,
}

struct Case {
    name: &'static str,
    kind: Kind,
    /// Untimed starts + joins before the timed ones, for floor and ours.
    warmup: usize,
    /// Timed starts + joins, for floor and ours.
    n: usize,
    /// The same for CPython, whose spawn is ~50 times slower than ours here.
    py_warmup: usize,
    py_n: usize,
    /// Minimum `ratio` and `vs_python`, from the issue; `None`: no target.
    target_ratio: Option<f64>,
    target_vs_python: Option<f64>,
}

fn cases(quick: bool) -> Vec<Case> {
    // Sized so that each run takes ~1-2 s here (floor, ours and CPython alike; about 100 s
    // for the whole bench); quick mode runs a fifth of that, except where noted.
    let scale = |n: usize| if quick { (n / 5).max(1) } else { n };
    vec![
        Case {
            name: "fork_join",
            kind: Kind::Fork,
            // Kept in quick mode: a fork takes ~0.3 ms, and a run of a fifth of these
            // (~0.15 s) moved the quick ratio by 0.1 between runs here.
            warmup: 300,
            n: 3_000,
            py_warmup: scale(30),
            py_n: scale(300),
            target_ratio: Some(0.7),
            target_vs_python: None,
        },
        Case {
            name: "spawn_join",
            kind: Kind::Spawn,
            warmup: scale(100),
            n: scale(1_000),
            // The first also starts CPython's resource tracker process.
            py_warmup: 1,
            py_n: scale(15),
            target_ratio: Some(0.5),
            target_vs_python: Some(10.0),
        },
        Case {
            name: "command_join",
            kind: Kind::Command,
            warmup: scale(100),
            n: scale(1_000),
            py_warmup: scale(100),
            py_n: scale(1_000),
            target_ratio: None,
            target_vs_python: None,
        },
    ]
}

// ---------------------------------------------------------------------------------------
// The six loops.

/// Starts + joins per second of `once`: `warmup` untimed calls, then `n` timed ones.
fn rate(warmup: usize, n: usize, mut once: impl FnMut() -> Res<()>) -> Res<f64> {
    for _ in 0..warmup {
        once()?;
    }
    let start = Instant::now();
    for _ in 0..n {
        once()?;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn check(what: &str, code: i32) -> Res<()> {
    match code {
        0 => Ok(()),
        code => Err(format!("{what} child exited with {code}").into()),
    }
}

fn check_status(what: &str, status: std::process::ExitStatus) -> Res<()> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} child exited with {status}").into())
    }
}

fn join_ours(mut p: Process, what: &str) -> Res<()> {
    p.start()?;
    check(what, p.join()?)
}

fn fork_floor() -> Res<()> {
    check("raw fork", raw_fork_wait()?)
}

fn fork_ours() -> Res<()> {
    join_ours(Process::fork(|| {}), "forked")
}

fn spawn_floor(exe: &Path) -> Res<()> {
    let status = Command::new(exe).env(FLOOR_ENV, "1").status()?;
    check_status("re-executed", status)
}

fn spawn_ours() -> Res<()> {
    join_ours(Process::spawn(noop_entry, ()), "spawned")
}

fn command_floor() -> Res<()> {
    check_status(TRUE, Command::new(TRUE).status()?)
}

fn command_ours() -> Res<()> {
    join_ours(Process::command(multiproc::Command::new(TRUE)), TRUE)
}

// ---------------------------------------------------------------------------------------
// CPython, kept running between requests so that its runs interleave with ours.

// ---------------------------------------------------------------------------------------
// Running, summarising, printing.

fn run_case(case: &Case, reps: usize, exe: &Path, mut py: Option<&mut Python>) -> Res<Row> {
    let mut row = Row {
        bench: "process",
        case: case.name.to_string(),
        unit: Unit::StartsPerSec,
        floor: Vec::new(),
        ours: Vec::new(),
        python: py.as_ref().map(|_| Vec::new()),
        target_ratio: case.target_ratio,
        target_vs_python: case.target_vs_python,
    };
    let (warmup, n) = (case.warmup, case.n);
    for _ in 0..reps {
        let (floor, ours) = match case.kind {
            Kind::Fork => (rate(warmup, n, fork_floor)?, rate(warmup, n, fork_ours)?),
            Kind::Spawn => (
                rate(warmup, n, || spawn_floor(exe))?,
                rate(warmup, n, spawn_ours)?,
            ),
            Kind::Command => (
                rate(warmup, n, command_floor)?,
                rate(warmup, n, command_ours)?,
            ),
        };
        row.floor.push(floor);
        row.ours.push(ours);
        if let (Some(py), Some(results)) = (py.as_deref_mut(), row.python.as_mut()) {
            results.push(py.run(case.name, case.py_warmup, case.py_n)?);
        }
    }
    Ok(row)
}

fn main() -> Res<()> {
    // The `spawn_join` floor's child: leave at once, before `init` or anything else.
    if std::env::var_os(FLOOR_ENV).is_some() {
        std::process::exit(0);
    }
    // In a child of `Process::spawn` this runs `noop_entry` and exits.
    multiproc::init();

    let opts = RunOptions::from_env();
    let (quick, reps) = (opts.quick, opts.reps);
    let all = cases(quick);
    let exe: PathBuf = std::env::current_exe()?;

    let mut python = Python::start("process.py")?;
    opts.print_header("process", python.as_ref());
    println!(
        "unit: child processes started and joined per second; command_join's python is \
         subprocess.run([\"{TRUE}\"])"
    );

    let started = Instant::now();
    let mut rows = Vec::new();
    for case in all.iter().filter(|c| opts.selects(c.name)) {
        rows.push(run_case(case, reps, &exe, python.as_mut())?);
        eprintln!(
            "  {:<13} done after {:.1}s",
            case.name,
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(py) = python.take() {
        py.finish()?;
    }
    match children_left() {
        Some(left) if !left.is_empty() => {
            return Err(format!("children left behind (zombies or running): {left:?}").into());
        }
        Some(_) => println!("children left: none"),
        None => println!("children left: not checked (no /proc/<pid>/task/<tid>/children)"),
    }

    println!();
    let (met, missed, unchecked) = print_rows(&rows);
    print_totals(reps, (met, missed, unchecked));
    print_json(&rows, started);
    Ok(())
}
