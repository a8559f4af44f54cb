//! The examples run and print what the Python originals print.
//!
//! `cargo test` builds the examples next to this test binary (`target/<profile>/examples`),
//! so these tests run the real executables as a user would.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    dir.join("examples").join(name)
}

/// `path` if it exists, else an error saying how to build it.
fn built(path: &std::path::Path) -> Result<PathBuf, Box<dyn std::error::Error>> {
    if !path.exists() {
        return Err(format!(
            "{} is not built: plain `cargo test` builds the examples; after `cargo test --test \
             examples` alone, run `cargo build --examples` first",
            path.display()
        )
        .into());
    }
    Ok(path.to_owned())
}

fn run(name: &str) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    run_with(name, &[])
}

/// Runs example `name` with `args`, asserts it succeeds, and returns its stdout's lines.
fn run_with(name: &str, args: &[&str]) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let path = built(&example(name))?;
    let out = Command::new(path).args(args).output()?;
    let stdout = String::from_utf8(out.stdout)?;
    assert!(
        out.status.success(),
        "{name} failed: {:?}\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout.lines().map(str::to_owned).collect())
}

fn position(lines: &[String], line: &str) -> usize {
    lines
        .iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("missing {line:?} in {lines:?}"))
}

#[test]
fn full_duplex_prints_the_tutorial_lines() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("full_duplex")?;
    let expected = [
        "[Child] Waiting for a message from parent...",
        "[Child] Received: Hello from Parent!",
        "[Parent] Sending a message to child...",
        "[Child] Response sent!",
        "[Parent] Received: Hello from Child!",
        "Communication complete!",
    ];
    let mut sorted_got = lines.clone();
    let mut sorted_expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    sorted_got.sort();
    sorted_expected.sort();
    assert_eq!(sorted_got, sorted_expected, "the same six lines as Python");
    // The order causality fixes (the parent's and child's first lines race, as in Python).
    let at = |l: &str| position(&lines, l);
    assert!(at(expected[0]) < at(expected[1]));
    assert!(at(expected[2]) < at(expected[1]));
    assert!(at(expected[1]) < at(expected[4]));
    assert_eq!(
        lines.last().map(String::as_str),
        Some("Communication complete!")
    );
    Ok(())
}

#[test]
fn half_duplex_prints_the_tutorial_line() -> Result<(), Box<dyn std::error::Error>> {
    assert_eq!(run("half_duplex")?, ["Received: Hello from sender!"]);
    Ok(())
}

#[test]
fn select_loop_forwards_every_reading_over_tcp() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("select_loop")?;
    let forwarded: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("[tcp client] worker"))
        .collect();
    assert_eq!(forwarded.len(), 15, "{lines:?}");
    for worker in 0..3 {
        for seq in 0..5 {
            let value = worker * 100 + seq;
            let want = format!("[tcp client] worker {worker} reading {seq}: {value}.0");
            assert!(lines.contains(&want), "missing {want:?} in {lines:?}");
        }
    }
    assert_eq!(
        lines.last().map(String::as_str),
        Some("done: 15 readings forwarded from 3 workers over TCP")
    );
    Ok(())
}

#[test]
fn sensor_detects_the_stall_and_the_death() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("sensor")?;
    let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
    assert!(has("stall: no reading for"), "{lines:?}");
    assert!(
        has("sensor died (end of file) after reading #1999"),
        "{lines:?}"
    );
    assert!(has("sensor exit code: -9"), "{lines:?}");
    assert!(has("readings received: 2000 of 2000"), "{lines:?}");
    assert!(has("latency (us): p50 "), "{lines:?}");
    Ok(())
}

/// The supervisor's summary value after `label` (`  restarts    1 (...)` -> "1").
fn summary_field<'a>(lines: &'a [String], label: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no {label:?} line in {lines:?}"))
}

/// The rows of the supervisor's per-worker table: (worker, tasks done).
fn worker_rows(lines: &[String]) -> Vec<(usize, u32)> {
    let header = position(lines, "  worker  tasks  heartbeats  restarts  exit codes");
    lines[header + 1..]
        .iter()
        .map_while(|l| {
            let mut cols = l.split_whitespace();
            let worker = cols.next()?.parse().ok()?;
            let tasks = cols.next()?.parse().ok()?;
            Some((worker, tasks))
        })
        .collect()
}

#[test]
fn supervisor_replaces_a_crashed_worker_and_loses_no_task() -> Result<(), Box<dyn std::error::Error>>
{
    let lines = run_with(
        "supervisor",
        &[
            "--workers",
            "3",
            "--tasks",
            "40",
            "--rounds",
            "300",
            "--verify-every",
            "1",
        ],
    )?;
    // Not a terminal: plain lines, no status line rewritten in place.
    assert!(lines.iter().all(|l| !l.contains('\r')), "{lines:?}");
    for id in 0..3 {
        let started = format!("worker {id} started (pid ");
        assert!(lines.iter().any(|l| l.starts_with(&started)), "{lines:?}");
    }
    // The one injected crash: SIGKILL mid-task, noticed, re-queued, replaced.
    assert!(
        lines.iter().any(|l| l.contains(" died during task ")
            && l.contains("-9 (SIGKILL)")
            && l.ends_with("re-queued")),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(" restarted (pid ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("progress: 40/40 tasks (100%)")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"  tasks       40 of 40 done, each exactly once".to_owned()),
        "{lines:?}"
    );
    let restarts: u32 = summary_field(&lines, "restarts").parse()?;
    assert!(restarts >= 1, "{lines:?}");
    assert!(
        lines.contains(
            &"  verified    40 digests recomputed by the supervisor: all match".to_owned()
        ),
        "{lines:?}"
    );
    let rows = worker_rows(&lines);
    assert_eq!(
        rows.iter().map(|&(w, _)| w).collect::<Vec<_>>(),
        [0, 1, 2],
        "{lines:?}"
    );
    assert_eq!(rows.iter().map(|&(_, n)| n).sum::<u32>(), 40, "{lines:?}");
    Ok(())
}

#[test]
fn supervisor_kills_and_replaces_a_hung_worker() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run_with(
        "supervisor",
        &[
            "--workers",
            "2",
            "--tasks",
            "12",
            "--rounds",
            "300",
            "--crashes",
            "0",
            "--hangs",
            "1",
            "--stall-ms",
            "1000",
            "--verify-every",
            "1",
        ],
    )?;
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" stalled: no heartbeat for ") && l.ends_with("killing it")),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"  tasks       12 of 12 done, each exactly once".to_owned()),
        "{lines:?}"
    );
    let restarts: u32 = summary_field(&lines, "restarts").parse()?;
    assert!(restarts >= 1, "{lines:?}");
    Ok(())
}

#[test]
fn supervisor_stops_every_worker_on_sigint() -> Result<(), Box<dyn std::error::Error>> {
    supervisor_interrupted(rustix::process::Signal::INT, "SIGINT", 130)
}

#[test]
fn supervisor_stops_every_worker_on_sigterm() -> Result<(), Box<dyn std::error::Error>> {
    supervisor_interrupted(rustix::process::Signal::TERM, "SIGTERM", 143)
}

/// Kills the child on drop, so a failing test leaves no supervisor behind.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a long supervisor run, signals it once it reports progress, and checks that it
/// exits with `code` and that none of its workers still runs.
fn supervisor_interrupted(
    signal: rustix::process::Signal,
    name: &str,
    code: i32,
) -> Result<(), Box<dyn std::error::Error>> {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let path = built(&example("supervisor"))?;
    let mut child = KillOnDrop(
        Command::new(&path)
            .args(["--workers", "3", "--tasks", "1000000"])
            .stdout(std::process::Stdio::piped())
            .spawn()?,
    );
    let stdout = child.0.stdout.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !lines.iter().any(|l: &String| l.starts_with("progress: ")) {
        let left = deadline.saturating_duration_since(Instant::now());
        lines.push(
            rx.recv_timeout(left)
                .map_err(|e| format!("no progress line ({e}): {lines:?}"))??,
        );
    }
    rustix::process::kill_process(rustix::process::Pid::from_child(&child.0), signal)?;
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 30 s after {name}: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    // The supervisor has exited; its stdout ends once no worker holds it either.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line?),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("stdout still open 10 s after the supervisor exited: {lines:?}")
            }
        }
    }
    assert_eq!(status.code(), Some(code), "{status:?}: {lines:?}");
    let interrupted = format!("interrupted by {name}: stopping 3 workers");
    assert!(
        lines.iter().any(|l| l.starts_with(&interrupted)),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with("all 3 workers stopped, none left running")),
        "{lines:?}"
    );
    let pids: Vec<u32> = lines
        .iter()
        .filter(|l| l.contains(" started (pid ") || l.contains(" restarted (pid "))
        .filter_map(|l| l.rsplit("(pid ").next()?.strip_suffix(')')?.parse().ok())
        .collect();
    assert!(pids.len() >= 3, "{lines:?}");
    let exe = std::fs::canonicalize(&path)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for pid in pids {
        while worker_running(pid, &exe) {
            assert!(
                Instant::now() < deadline,
                "worker {pid} still runs after the supervisor exited: {lines:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Whether `pid` is a live (not zombie) process running `exe`; a pid reused by an unrelated
/// program does not count.
fn worker_running(pid: u32, exe: &std::path::Path) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may hold anything.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    if matches!(state, Some('Z' | 'X') | None) {
        return false;
    }
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p == exe)
}

#[test]
fn queue_prints_the_tutorial_lines_and_gets_all_five() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("queue")?;
    let mut expected: Vec<String> = (0..5)
        .map(|i| format!("Producer: Adding {i} to queue"))
        .collect();
    // With an exact empty() and a final put, the seed's `while not queue.empty()` loop
    // always gets all five, in order.
    expected.extend((0..5).map(|i| format!("Consumer: Retrieved {i} from queue")));
    assert_eq!(lines, expected);
    Ok(())
}

#[test]
fn work_queue_processes_every_job_exactly_once() -> Result<(), Box<dyn std::error::Error>> {
    let lines = run("work_queue")?;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("1000 received, each job exactly once, 0 wrong")),
        "no clean summary in {lines:?}"
    );
    // Four consumer rows whose counts add up to every job.
    let rows: Vec<u32> = lines
        .iter()
        .skip_while(|l| !l.contains("consumer  jobs"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(rows.len(), 4, "{lines:?}");
    assert_eq!(rows.iter().sum::<u32>(), 1000);
    Ok(())
}
