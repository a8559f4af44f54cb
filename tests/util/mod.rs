//! Shared test support: a small test runner that forks each test into its own process, a
//! watchdog, and finding real CPython interpreters.
//!
//! Why a runner of our own: libtest runs every test on a thread of its own, so a test binary
//! is always multi-threaded, and `Process::start` (fork) rightly refuses to fork a
//! multi-threaded process. This runner keeps the main thread alone, forks each test into a
//! fresh single-threaded child with our own `Process` (so a test may start children of its
//! own), kills a test that outlives its timeout, and prints libtest's lines, including the
//! `test result:` summary. It understands the arguments `cargo test` and `cargo nextest`
//! pass: name filters, `--exact`, `--ignored`, `--include-ignored`, `--list`.
#![allow(dead_code, unreachable_pub)]

use std::error::Error as StdError;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use multiproc::Process;

/// What a test returns; `?` works on any error.
pub type TestResult = Result<(), Box<dyn StdError>>;

/// One test: its name, body, and whether it only runs with `--ignored`.
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> TestResult,
    pub ignored: bool,
    pub timeout: Duration,
}

impl Test {
    pub const fn new(name: &'static str, run: fn() -> TestResult) -> Test {
        Test {
            name,
            run,
            ignored: false,
            timeout: Duration::from_secs(60),
        }
    }

    pub const fn ignored(mut self) -> Test {
        self.ignored = true;
        self
    }

    pub const fn timeout(mut self, timeout: Duration) -> Test {
        self.timeout = timeout;
        self
    }
}

/// Declares `main` for a `harness = false` test file:
/// `tests_main!(a, b, c; ignored: big_one)`.
#[macro_export]
macro_rules! tests_main {
    ($($name:ident),* $(,)? $(; ignored: $($ign:ident),* $(,)?)?) => {
        fn main() {
            // A test may spawn children: this test binary re-executed runs them from here.
            multiproc::init();
            util::run(&[
                $(util::Test::new(stringify!($name), $name),)*
                $($(util::Test::new(stringify!($ign), $ign).ignored(),)*)?
            ]);
        }
    };
}

/// Runs the tests selected by the command line, each in its own forked process, and exits
/// 0 if all passed, 101 otherwise (as libtest does).
pub fn run(tests: &[Test]) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let (mut exact, mut list, mut only_ignored, mut include_ignored) = (false, false, false, false);
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--ignored" => only_ignored = true,
            "--include-ignored" => include_ignored = true,
            "--test-threads" | "--format" | "--color" | "--skip" | "--logfile" => i += 1,
            a if a.starts_with('-') => {}
            a => filters.push(a.to_string()),
        }
        i += 1;
    }
    let matches = |t: &Test| {
        filters.is_empty()
            || filters.iter().any(|f| {
                if exact {
                    t.name == f
                } else {
                    t.name.contains(f.as_str())
                }
            })
    };
    let selected: Vec<&Test> = tests.iter().filter(|t| matches(t)).collect();
    if list {
        for t in &selected {
            println!("{}: test", t.name);
        }
        return;
    }
    let filtered_out = tests.len() - selected.len();
    println!("\nrunning {} tests", selected.len());
    let start = Instant::now();
    let (mut passed, mut failed, mut ignored) = (0, 0, 0);
    let mut failures = Vec::new();
    for t in selected {
        let skip = if only_ignored {
            !t.ignored
        } else {
            t.ignored && !include_ignored
        };
        if skip {
            println!("test {} ... ignored", t.name);
            ignored += 1;
            continue;
        }
        match run_one(t) {
            Ok(()) => {
                println!("test {} ... ok", t.name);
                passed += 1;
            }
            Err(why) => {
                println!("test {} ... FAILED ({why})", t.name);
                failures.push(t.name);
                failed += 1;
            }
        }
    }
    if !failures.is_empty() {
        println!("\nfailures:");
        for name in &failures {
            println!("    {name}");
        }
    }
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; {ignored} ignored; 0 \
         measured; {filtered_out} filtered out; finished in {:.2}s\n",
        start.elapsed().as_secs_f64()
    );
    std::process::exit(if failed == 0 { 0 } else { 101 });
}

fn run_one(t: &Test) -> Result<(), String> {
    let run = t.run;
    let name = t.name;
    let mut child = Process::fork(move || {
        // Its own process group, so a timeout kills the test's children too (one left
        // holding our stdout would hang `cargo test`).
        let _ = rustix::process::setpgid(None, None);
        if let Err(e) = run() {
            eprintln!("---- {name} ----\nError: {e}");
            std::process::exit(101);
        }
    });
    child.start().map_err(|e| format!("could not start: {e}"))?;
    let pgid = child
        .pid()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32));
    // Whatever the test left running in its group (a child of a failed test blocked on a
    // pipe, say) is killed, so it cannot hold our stdout and hang `cargo test`.
    let kill_group = || {
        if let Some(pgid) = pgid {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    };
    match child.join_timeout(t.timeout) {
        Ok(0) => {
            kill_group();
            Ok(())
        }
        Ok(code) => {
            kill_group();
            Err(format!("exit code {code}"))
        }
        Err(e) if e.is_timeout() => {
            kill_group();
            let _ = child.kill();
            let _ = child.join();
            Err(format!("timed out after {:?}; killed", t.timeout))
        }
        Err(e) => Err(format!("join failed: {e}")),
    }
}

/// Fails the test with a message.
#[macro_export]
macro_rules! fail {
    ($($arg:tt)*) => { return Err(format!($($arg)*).into()) };
}

/// Skips a test whose tool is missing, saying so loudly on stderr. With
/// `MULTIPROC_REQUIRE_PYTHON=1` a missing interpreter is a failure instead.
pub fn skip(reason: &str) -> TestResult {
    if std::env::var_os("MULTIPROC_REQUIRE_PYTHON").is_some_and(|v| v == "1") {
        return Err(format!("required tool missing: {reason}").into());
    }
    eprintln!("\n*** SKIPPED: {reason} ***\n");
    Ok(())
}

/// A CPython interpreter found on this machine.
#[derive(Debug, Clone)]
pub struct Python {
    pub path: PathBuf,
    /// `(major, minor)`.
    pub version: (u32, u32),
}

impl Python {
    /// A `Command` running this interpreter with unbuffered output.
    pub fn command(&self) -> Command {
        let mut c = Command::new(&self.path);
        c.arg("-u");
        c
    }
}

fn probe(path: PathBuf) -> Option<Python> {
    let out = Command::new(&path)
        .args(["-c", "import sys; print('%d %d' % sys.version_info[:2])"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut it = text.split_whitespace().map(|s| s.parse::<u32>());
    let version = (it.next()?.ok()?, it.next()?.ok()?);
    Some(Python { path, version })
}

/// `python3` from PATH.
pub fn python3() -> Option<Python> {
    probe(PathBuf::from("python3"))
}

/// Every distinct CPython found: `python3` on PATH, then each version under `pyenv root`
/// (`$PYENV_ROOT`, or `~/.pyenv`). Found at run time, since CI machines are fresh.
pub fn pythons() -> Vec<Python> {
    let mut found: Vec<Python> = python3().into_iter().collect();
    let root = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| {
            let out = Command::new("pyenv").arg("root").output().ok()?;
            out.status
                .success()
                .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")));
    if let Some(Ok(entries)) = root.map(|r| std::fs::read_dir(r.join("versions"))) {
        let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        for dir in dirs {
            let bin = ["python3", "python"]
                .iter()
                .map(|n| dir.join("bin").join(n))
                .find(|p| p.exists());
            if let Some(py) = bin.and_then(probe) {
                if !found.iter().any(|f| f.version == py.version) {
                    found.push(py);
                }
            }
        }
    }
    found
}

/// The open fds of this process, from `/proc/self/fd` (excluding the one used to list them).
pub fn open_fds() -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    fds.sort();
    // The directory listing itself used an fd that is closed again now.
    fds.retain(|fd| std::fs::metadata(format!("/proc/self/fd/{fd}")).is_ok());
    fds
}

/// How long a test's child may take before it counts as hung (see [`finish`]).
pub const CHILD_HANG: Duration = Duration::from_secs(20);

/// Starts `f` in a forked daemon child (it dies with the test if the test fails first).
pub fn child<F: FnOnce() + Send + 'static>(f: F) -> Result<Process, Box<dyn StdError>> {
    let mut p = Process::fork(f);
    p.set_daemon(true)?;
    p.start()?;
    Ok(p)
}

/// Starts `entry(args)` in a spawned daemon child.
pub fn spawned<A: multiproc::SpawnArgs>(
    entry: fn(A),
    args: A,
) -> Result<Process, Box<dyn StdError>> {
    let mut p = Process::spawn(entry, args);
    p.set_daemon(true)?;
    p.start()?;
    Ok(p)
}

/// Joins `p`, which must exit 0 within [`CHILD_HANG`]; a hung child is killed and reported.
pub fn finish(p: &mut Process) -> TestResult {
    match p.join_timeout(CHILD_HANG) {
        Ok(0) => Ok(()),
        Ok(code) => Err(format!("child {} exited with {code}", p.name()).into()),
        Err(e) if e.is_timeout() => {
            let _ = p.kill();
            let _ = p.join();
            Err(format!("child {} hung for {CHILD_HANG:?}; killed", p.name()).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// The queue file this process has open, reopened read-write through `/proc/self/fd`.
pub fn queue_file() -> std::fs::File {
    let mut found = None;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target
            .to_string_lossy()
            .starts_with("/memfd:multiproc-queue")
        {
            found = Some(entry.path());
        }
    }
    let path = found.expect("a queue memfd");
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// The little-endian `u64` at `offset` of `file`.
pub fn read64(file: &std::fs::File, offset: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut b = [0u8; 8];
    file.read_exact_at(&mut b, offset).unwrap();
    u64::from_le_bytes(b)
}

/// Runs `reactor`'s rounds, each waiting at most `wait`, until nothing is registered in it
/// or `rounds` rounds ran (the caller asserts what it expects then).
pub fn run_until_empty(
    reactor: &mut multiproc::Reactor,
    rounds: usize,
    wait: Duration,
) -> TestResult {
    for _ in 0..rounds {
        if reactor.is_empty() {
            break;
        }
        reactor.run_once(Some(wait))?;
    }
    Ok(())
}
