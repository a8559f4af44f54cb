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

/// Runs example `name` with `args` and checks that it refuses them as a usage error: exit
/// code 2, a line naming the problem and the usage text on stderr, no panic.
fn refuses(name: &str, args: &[&str]) -> Result<(), Box<dyn std::error::Error>> {
    let out = Command::new(built(&example(name))?).args(args).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{name} {args:?}: {:?}\nstderr:\n{stderr}",
        out.status
    );
    assert!(
        stderr.starts_with(&format!("{name}: ")) && stderr.contains(&format!("usage: {name}")),
        "{name} {args:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{name} {args:?}: {stderr}");
    Ok(())
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
fn select_loop_drops_a_reset_client_and_serves_the_others() -> Result<(), Box<dyn std::error::Error>>
{
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpStream;
    use std::process::Stdio;
    use std::time::Duration;

    // The workers start once three clients are in: its own, the one that resets and the
    // steady one, so the reset one is among those every reading is written to.
    let mut child = KillOnDrop(
        Command::new(built(&example("select_loop"))?)
            .args(["--clients", "3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?,
    );
    let mut stdout = BufReader::new(child.0.stdout.take().expect("piped"));
    let mut first = String::new();
    stdout.read_line(&mut first)?;
    let address = first
        .trim_end()
        .strip_prefix("serving readings on tcp://")
        .ok_or_else(|| format!("first line {first:?}"))?
        .to_owned();
    // SO_LINGER 0, then close: the connection is reset, not closed.
    let reset = TcpStream::connect(&address)?;
    rustix::net::sockopt::set_socket_linger(&reset, Some(Duration::ZERO))?;
    drop(reset);
    let steady = TcpStream::connect(&address)?;
    steady.set_read_timeout(Some(Duration::from_secs(10)))?;
    let got = BufReader::new(steady)
        .lines()
        .collect::<Result<Vec<String>, _>>()?;
    let mut rest = String::new();
    stdout.read_to_string(&mut rest)?;
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)?;
    let status = child.0.wait()?;
    assert!(status.success(), "{status:?}\n{rest}\nstderr:\n{stderr}");
    assert_eq!(got.len(), 15, "the steady client: {got:?}");
    assert!(
        rest.ends_with("done: 15 readings forwarded from 3 workers over TCP\n"),
        "{rest}"
    );
    let dropped: Vec<&str> = stderr.lines().collect();
    assert_eq!(dropped.len(), 1, "{stderr}");
    assert!(
        dropped[0].starts_with("client 127.0.0.1:") && dropped[0].contains(" dropped: "),
        "{stderr}"
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

#[test]
fn sensor_refuses_bad_arguments_without_panicking() -> Result<(), Box<dyn std::error::Error>> {
    // The first two used to panic; the rest ran (for hours, or out of memory).
    for args in [
        &["--count", "0"][..],
        &["--rate", "abc"],
        &["--rate", "0"],
        &["--rate", "1000001"],
        &["--count", "4000000000"],
        &["--rate"],
        &["--rates", "10"],
    ] {
        refuses("sensor", args)?;
    }
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
fn supervisor_refuses_bad_arguments_without_panicking() -> Result<(), Box<dyn std::error::Error>> {
    // 4,000,000,000 tasks used to abort allocating 16 GB; 0 ms stalls killed every busy
    // worker at every tick, for ever.
    for args in [
        &["--tasks", "4000000000"][..],
        &["--tasks", "1000001"],
        &["--stall-ms", "0"],
        &["--workers", "0"],
        &["--workers", "100000"],
        &["--crash-rate", "NaN"],
        &["--crash-rate", "1.5"],
        &["--tasks", "2", "--crashes", "1", "--hangs", "2"],
        &["--hangs", "-1"],
        &["--seed"],
        &["--bogus", "1"],
    ] {
        refuses("supervisor", args)?;
    }
    Ok(())
}

#[test]
fn select_loop_refuses_bad_arguments_without_panicking() -> Result<(), Box<dyn std::error::Error>> {
    for args in [
        &["--clients", "0"][..],
        &["--clients", "x"],
        &["--clients"],
        &["--bogus"],
    ] {
        refuses("select_loop", args)?;
    }
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

/// `echo_server`: many clients at once, slow and broken clients beside good ones, signals.
/// TCP on 127.0.0.1 and ::1 only; every wait is bounded by `HANG`, which only a hang reaches.
mod echo_server {
    use std::io::{self, BufRead, BufReader, Read, Write};
    use std::net::TcpStream;
    use std::os::fd::OwnedFd;
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, mpsc};
    use std::thread;
    use std::time::{Duration, Instant};

    use multiproc::{Client, Connection, Encoding, ErrorKind};
    use rustix::process::Signal;

    use super::{built, example};

    type Res<T> = Result<T, Box<dyn std::error::Error>>;

    const HANG: Duration = Duration::from_secs(30);
    const KEY: &str = "echo server test key";
    /// `pickle.dumps(C(), protocol=4)` for a class `C` in `__main__`: a class instance.
    const INSTANCE_PICKLE: &[u8] = b"\x80\x04\x95\x15\x00\x00\x00\x00\x00\x00\x00\x8c\x08__main__\x94\x8c\x01C\x94\x93\x94)\x81\x94.";

    /// A line on stderr that libtest does not capture (it captures `eprintln!` of passing
    /// tests), so a skipped case is seen in a plain `cargo test` run.
    fn loud(line: &str) {
        let _ = writeln!(io::stderr(), "\n{line}\n");
    }

    fn unique(tag: &str) -> String {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        format!(
            "multiproc-echo-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// A running echo_server; killed and reaped on drop.
    struct Server {
        child: Child,
        address: String,
        stderr: Arc<Mutex<Vec<String>>>,
        /// Set once the server's stderr reached end of file.
        stderr_done: Arc<AtomicBool>,
    }

    impl Server {
        /// Starts it and waits for its `listening on ADDR` line.
        fn start(address: &str, key: Option<&str>, codec: &str) -> Res<Server> {
            let mut command = Command::new(built(&example("echo_server"))?);
            command
                .args(["--address", address, "--codec", codec])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(key) = key {
                command
                    .args(["--authkey-env", "MULTIPROC_ECHO_TEST_KEY"])
                    .env("MULTIPROC_ECHO_TEST_KEY", key);
            }
            let mut child = command.spawn()?;
            let stdout = child.stdout.take().ok_or("no stdout")?;
            let stderr = child.stderr.take().ok_or("no stderr")?;
            let lines = Arc::new(Mutex::new(Vec::new()));
            let stderr_done = Arc::new(AtomicBool::new(false));
            let (sink, done) = (lines.clone(), stderr_done.clone());
            thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    sink.lock().expect("lock").push(line);
                }
                done.store(true, Ordering::SeqCst);
            });
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                let _ = tx.send(lines.next());
                for _ in lines {}
            });
            let mut server = Server {
                child,
                address: String::new(),
                stderr: lines,
                stderr_done,
            };
            let first = rx.recv_timeout(HANG).map_err(|_| {
                format!(
                    "no `listening on` line; stderr: {:?}",
                    server.stderr_lines()
                )
            })?;
            let first = first.ok_or("stdout closed")??;
            server.address = first
                .strip_prefix("listening on ")
                .ok_or_else(|| format!("first line {first:?}"))?
                .to_owned();
            Ok(server)
        }

        fn stderr_lines(&self) -> Vec<String> {
            self.stderr.lock().expect("lock").clone()
        }

        /// Waits until stderr has `n` lines; returns them.
        fn wait_for_stderr(&self, n: usize) -> Res<Vec<String>> {
            let deadline = Instant::now() + HANG;
            loop {
                let lines = self.stderr_lines();
                if lines.len() >= n {
                    return Ok(lines);
                }
                if Instant::now() > deadline {
                    return Err(format!("expected {n} stderr lines, have {lines:?}").into());
                }
                thread::sleep(Duration::from_millis(10));
            }
        }

        fn signal(&self, signal: Signal) -> Res<()> {
            rustix::process::kill_process(rustix::process::Pid::from_child(&self.child), signal)?;
            Ok(())
        }

        fn wait_exit(&mut self) -> Res<ExitStatus> {
            let deadline = Instant::now() + HANG;
            loop {
                if let Some(status) = self.child.try_wait()? {
                    return Ok(status);
                }
                if Instant::now() > deadline {
                    return Err("echo_server still runs".into());
                }
                thread::sleep(Duration::from_millis(10));
            }
        }

        /// SIGTERM, then: exit code 0, and stderr is exactly `lines` long.
        fn stop_cleanly(mut self, lines: usize) -> Res<Vec<String>> {
            self.signal(Signal::TERM)?;
            let status = self.wait_exit()?;
            assert_eq!(status.code(), Some(0), "{status:?}");
            // All of stderr: its reader sees end of file once the server is gone.
            let deadline = Instant::now() + HANG;
            while !self.stderr_done.load(Ordering::SeqCst) {
                if Instant::now() > deadline {
                    return Err("stderr still open after the server exited".into());
                }
                thread::sleep(Duration::from_millis(10));
            }
            let all = self.stderr_lines();
            assert_eq!(all.len(), lines, "{all:?}");
            Ok(all)
        }

        fn client(&self, key: Option<&str>) -> multiproc::Result<Connection> {
            let mut client = Client::new(self.address.as_str()).timeout(HANG);
            if let Some(key) = key {
                client = client.authkey(key.as_bytes());
            }
            client.open()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn echo(conn: &mut Connection, message: &[u8]) -> Res<()> {
        conn.send_bytes(message)?;
        let got = conn.recv_bytes_timeout(HANG)?;
        if got != message {
            return Err(format!(
                "echo of {} bytes came back as {} bytes",
                message.len(),
                got.len()
            )
            .into());
        }
        Ok(())
    }

    fn read_frame(stream: &mut impl Read) -> io::Result<Vec<u8>> {
        let mut header = [0u8; 4];
        stream.read_exact(&mut header)?;
        let mut payload = vec![0u8; u32::from_be_bytes(header) as usize];
        stream.read_exact(&mut payload)?;
        Ok(payload)
    }

    /// A raw TCP connection holding the server's challenge: the server has accepted it and
    /// its handshake is under way.
    fn challenged(address: &str) -> Res<TcpStream> {
        let mut stream = TcpStream::connect(address)?;
        stream.set_read_timeout(Some(HANG))?;
        let frame = read_frame(&mut stream)?;
        if !frame.starts_with(b"#CHALLENGE#") {
            return Err(format!("first frame {frame:?}").into());
        }
        Ok(stream)
    }

    /// Whether the server closed `stream` within `HANG` (whatever it sent first is skipped).
    fn closed_by_server(stream: &mut TcpStream) -> Res<bool> {
        stream.set_read_timeout(Some(HANG))?;
        let mut buf = [0u8; 256];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return Ok(true),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(true),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Open, with nothing to read (checked without waiting).
    fn open_and_quiet(stream: &mut TcpStream) -> Res<bool> {
        stream.set_nonblocking(true)?;
        let mut buf = [0u8; 1];
        let quiet =
            matches!(stream.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
        stream.set_nonblocking(false)?;
        Ok(quiet)
    }

    /// Raises the soft open-files limit to at least `want`; false if the hard limit is lower.
    /// (The server inherits it.)
    fn raise_nofile(want: u64) -> bool {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        if limit.current.is_none_or(|c| c >= want) {
            return true;
        }
        if limit.maximum.is_some_and(|max| max < want) {
            return false;
        }
        let raised = Rlimit {
            current: Some(want),
            maximum: limit.maximum,
        };
        setrlimit(Resource::Nofile, raised).is_ok()
    }

    #[test]
    fn echo_server_serves_500_concurrent_clients() -> Res<()> {
        const THREADS: usize = 10;
        const PER_THREAD: usize = 50;
        if !raise_nofile(2048) {
            loud("*** SKIPPED: RLIMIT_NOFILE cannot reach 2048 for 500 clients ***");
            return Ok(());
        }
        let server = Server::start("127.0.0.1:0", Some(KEY), "bytes")?;
        // Phase 1: ten threads authenticate fifty clients each; all 500 stay open.
        let openers: Vec<_> = (0..THREADS)
            .map(|_| {
                let address = server.address.clone();
                thread::spawn(move || -> multiproc::Result<Vec<Connection>> {
                    (0..PER_THREAD)
                        .map(|_| {
                            Client::new(address.as_str())
                                .authkey(KEY.as_bytes())
                                .timeout(HANG)
                                .open()
                        })
                        .collect()
                })
            })
            .collect();
        let mut groups = Vec::new();
        for opener in openers {
            groups.push(opener.join().map_err(|_| "opener panicked")??);
        }
        assert_eq!(
            groups.iter().map(Vec::len).sum::<usize>(),
            THREADS * PER_THREAD
        );
        // Phase 2: every client sends three messages (one of them larger than a socket
        // read), then reads its echoes; all 500 are in flight at once.
        let message = |t: usize, i: usize, round: usize| -> Vec<u8> {
            let mut m = format!("{t}/{i}/{round}/").into_bytes();
            if round == 1 {
                m.resize(70_000, b'0' + (i % 10) as u8);
            }
            m
        };
        let workers: Vec<_> = groups
            .into_iter()
            .enumerate()
            .map(|(t, mut conns)| {
                thread::spawn(move || -> Result<usize, String> {
                    for round in 0..3 {
                        for (i, conn) in conns.iter_mut().enumerate() {
                            conn.send_bytes(&message(t, i, round))
                                .map_err(|e| format!("send {t}/{i}: {e}"))?;
                        }
                    }
                    let mut echoed = 0;
                    for round in 0..3 {
                        for (i, conn) in conns.iter_mut().enumerate() {
                            let got = conn
                                .recv_bytes_timeout(HANG)
                                .map_err(|e| format!("recv {t}/{i}: {e}"))?;
                            if got != message(t, i, round) {
                                return Err(format!("client {t}/{i} round {round}: wrong echo"));
                            }
                            echoed += 1;
                        }
                    }
                    Ok(echoed)
                })
            })
            .collect();
        let mut echoed = 0;
        for worker in workers {
            echoed += worker.join().map_err(|_| "worker panicked")??;
        }
        assert_eq!(echoed, 3 * THREADS * PER_THREAD);
        // Nobody failed, so nothing on stderr.
        server.stop_cleanly(0)?;
        Ok(())
    }

    #[test]
    fn echo_server_silent_and_dribbling_clients_do_not_delay_others() -> Res<()> {
        for key in [Some(KEY), None] {
            let server = Server::start("127.0.0.1:0", key, "bytes")?;
            let opened = Instant::now();
            // 50 clients that connect and say nothing. With a key, each holds the server's
            // challenge: the server took it and its handshake (10 s deadline) is pending.
            let mut silent = Vec::new();
            for _ in 0..50 {
                silent.push(match key {
                    Some(_) => challenged(&server.address)?,
                    None => TcpStream::connect(server.address.as_str())?,
                });
            }
            // 10 that send a frame's header and its first bytes, then one byte a second: an
            // answer to the challenge, or (without a key) a message; either announces 48
            // bytes, more than arrive while the test runs.
            let mut stops = Vec::new();
            let mut dribblers = Vec::new();
            let (started, starts) = mpsc::channel::<()>();
            for _ in 0..10 {
                let mut stream = match key {
                    Some(_) => challenged(&server.address)?,
                    None => TcpStream::connect(server.address.as_str())?,
                };
                let (stop, stopped) = mpsc::channel::<()>();
                stops.push(stop);
                let started = started.clone();
                dribblers.push(thread::spawn(move || -> io::Result<TcpStream> {
                    let frame = [&48u32.to_be_bytes()[..], &[b'{'; 48]].concat();
                    stream.write_all(&frame[..6])?;
                    let _ = started.send(());
                    for byte in &frame[6..] {
                        // Pacing, not synchronisation: this client is slow on purpose.
                        let pause = stopped.recv_timeout(Duration::from_secs(1));
                        if !matches!(pause, Err(mpsc::RecvTimeoutError::Timeout)) {
                            break;
                        }
                        stream.write_all(&[*byte])?;
                    }
                    Ok(stream)
                }));
            }
            for _ in 0..10 {
                starts
                    .recv_timeout(HANG)
                    .map_err(|_| "a dribbler did not start")?;
            }
            // A normal client, three times over: a server that served clients one at a time
            // would hold each of these behind a stalled handshake (10 s) or a stalled frame
            // (for ever).
            for round in 0..3 {
                let start = Instant::now();
                let mut conn = server.client(key)?;
                echo(&mut conn, format!("round {round}").as_bytes())?;
                let took = start.elapsed();
                assert!(
                    took < Duration::from_secs(5),
                    "key {key:?} round {round}: {took:?} beside 60 stalled clients"
                );
            }
            drop(stops);
            for dribbler in dribblers {
                silent.push(dribbler.join().map_err(|_| "dribbler panicked")??);
            }
            // The stalled ones are still being held, unless this machine was so slow that
            // the server's 10 s handshake deadline passed (then they were rightly dropped).
            if key.is_none() || opened.elapsed() < Duration::from_secs(8) {
                for stream in &mut silent {
                    assert!(
                        open_and_quiet(stream)?,
                        "key {key:?}: a stalled client was dropped"
                    );
                }
                // Stopped while they are all still connected: no client failed.
                server.stop_cleanly(0)?;
            } else {
                loud("*** NOTE: too slow to check that stalled clients are held (> 8 s) ***");
            }
            drop(silent);
        }
        Ok(())
    }

    #[test]
    fn echo_server_disconnects_bad_clients_with_one_line_each() -> Res<()> {
        for (codec, undecodable) in [("cbor", &b"\xff\xff\xff"[..]), ("pickle", INSTANCE_PICKLE)] {
            let server = Server::start("127.0.0.1:0", Some(KEY), codec)?;
            // A good client, connected before the bad ones and used after them.
            let mut steady = server.client(Some(KEY))?;
            if codec == "pickle" {
                steady.set_encoding(Encoding::Pickle);
            }
            let value = (String::from("steady"), vec![1u32, 2, 3]);
            steady.send(&value)?;
            assert_eq!(steady.recv_timeout::<(String, Vec<u32>)>(HANG)?, value);

            // 1. A wrong key.
            let err = Client::new(server.address.as_str())
                .authkey(b"wrong key")
                .timeout(HANG)
                .open()
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Authentication, "{err:?}");
            server.wait_for_stderr(1)?;

            // 2. During the handshake, an answer whose header announces 1 GiB: refused from
            // the header (the line says so), not after waiting for the payload.
            let mut liar = challenged(&server.address)?;
            liar.write_all(&(1u32 << 30).to_be_bytes())?;
            assert!(
                closed_by_server(&mut liar)?,
                "{codec}: 1 GiB header not refused"
            );
            let lines = server.wait_for_stderr(2)?;
            assert!(lines[1].contains("bad message length"), "{lines:?}");

            // 3. An authenticated client whose message does not decode.
            let mut garbled = server.client(Some(KEY))?;
            garbled.send_bytes(undecodable)?;
            let err = garbled.recv_bytes_timeout(HANG).unwrap_err();
            assert!(
                err.is_eof() || err.kind() == ErrorKind::BrokenPipe,
                "{err:?}"
            );
            server.wait_for_stderr(3)?;

            // 4. An authenticated client that sends a bad frame (a negative length).
            let broken = server.client(Some(KEY))?;
            let mut raw = TcpStream::from(OwnedFd::from(broken));
            raw.write_all(&(-2i32).to_be_bytes())?;
            assert!(
                closed_by_server(&mut raw)?,
                "{codec}: negative length not refused"
            );
            server.wait_for_stderr(4)?;

            // Everyone else carried on: the steady client, and a new one.
            steady.send(&value)?;
            assert_eq!(steady.recv_timeout::<(String, Vec<u32>)>(HANG)?, value);
            let mut late = server.client(Some(KEY))?;
            echo_value(&mut late, codec)?;
            drop(steady);
            drop(late);
            // Exactly one line per bad client, and none for the good ones.
            let lines = server.stop_cleanly(4)?;
            assert!(
                lines.iter().all(|l| l.starts_with("echo_server: ")),
                "{codec}: {lines:?}"
            );
            assert!(lines[0].contains("digest received was wrong"), "{lines:?}");
        }
        Ok(())
    }

    fn echo_value(conn: &mut Connection, codec: &str) -> Res<()> {
        if codec == "pickle" {
            conn.set_encoding(Encoding::Pickle);
        }
        conn.send(&vec![Some(1.5f64), None])?;
        assert_eq!(
            conn.recv_timeout::<Vec<Option<f64>>>(HANG)?,
            [Some(1.5), None]
        );
        Ok(())
    }

    /// Starts echo_server at `address` with a client connected, sends `signal`, and checks
    /// the exit code (0), the client's end of file, and (for a path) the socket file's
    /// removal.
    fn exits_zero_on(signal: Signal, address: &str) -> Res<()> {
        let mut server = Server::start(address, Some(KEY), "bytes")?;
        let mut conn = server.client(Some(KEY))?;
        echo(&mut conn, b"before the signal")?;
        server.signal(signal)?;
        let status = server.wait_exit()?;
        assert_eq!(status.code(), Some(0), "{address}: {status:?}");
        let err = conn.recv_bytes_timeout(HANG).unwrap_err();
        assert!(
            err.is_eof() || err.kind() == ErrorKind::BrokenPipe,
            "{err:?}"
        );
        if address.starts_with('/') {
            assert!(
                !std::path::Path::new(address).exists(),
                "{address} left behind"
            );
        }
        assert!(
            server.stderr_lines().is_empty(),
            "{:?}",
            server.stderr_lines()
        );
        Ok(())
    }

    #[test]
    fn echo_server_exits_0_on_sigterm() -> Res<()> {
        if std::net::TcpListener::bind("[::1]:0").is_ok() {
            exits_zero_on(Signal::TERM, "[::1]:0")?;
        } else {
            loud("*** SKIPPED: no IPv6 on loopback here: [::1] case left out ***");
        }
        exits_zero_on(Signal::TERM, &format!("@{}", unique("term")))
    }

    #[test]
    fn echo_server_exits_0_on_sigint() -> Res<()> {
        exits_zero_on(Signal::INT, "127.0.0.1:0")?;
        let path = std::env::temp_dir().join(format!("{}.sock", unique("int")));
        let result = exits_zero_on(Signal::INT, &path.display().to_string());
        let _ = std::fs::remove_file(&path);
        result
    }

    #[test]
    fn echo_server_disconnects_a_client_announcing_a_frame_over_64_mib() -> Res<()> {
        let server = Server::start("127.0.0.1:0", None, "bytes")?;
        let mut steady = server.client(None)?;
        echo_value(&mut steady, "bytes")?;
        // CPython's header for a long frame: -1, then the length (64 MiB + 1), then a start.
        let mut attacker = TcpStream::connect(server.address.as_str())?;
        let mut header = (-1i32).to_be_bytes().to_vec();
        header.extend_from_slice(&((64u64 << 20) + 1).to_be_bytes());
        attacker.write_all(&header)?;
        attacker.write_all(&[0; 4096])?;
        attacker.set_read_timeout(Some(HANG))?;
        let mut byte = [0u8; 1];
        let closed = match attacker.read(&mut byte) {
            Ok(0) => true,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
            Ok(_) => false,
        };
        assert!(
            closed,
            "the client announcing 64 MiB + 1 was not disconnected"
        );
        server.wait_for_stderr(1)?;
        echo_value(&mut steady, "bytes")?;
        drop(steady);
        server.stop_cleanly(1)?;
        Ok(())
    }

    #[test]
    fn echo_server_survives_a_deeply_nested_pickle() -> Res<()> {
        let mut server = Server::start("127.0.0.1:0", None, "pickle")?;
        let mut steady = server.client(None)?;
        echo_value(&mut steady, "pickle")?;
        // [[[...]]] 10,000 deep: 20 KB.
        let depth = 10_000;
        let mut deep = b"\x80\x03".to_vec();
        deep.extend(std::iter::repeat_n(b']', depth));
        deep.extend(std::iter::repeat_n(b'a', depth - 1));
        deep.push(b'.');
        let mut attacker = server.client(None)?;
        attacker.send_bytes(&deep)?;
        let err = attacker.recv_bytes_timeout(HANG).unwrap_err();
        assert!(
            err.is_eof() || err.kind() == ErrorKind::BrokenPipe,
            "{err:?}"
        );
        // Refused as any undecodable message: one line, and the others carry on.
        server.wait_for_stderr(1)?;
        if let Err(e) = echo_value(&mut steady, "pickle") {
            let status = server.wait_exit();
            return Err(format!(
                "the steady client lost its server ({e}); echo_server: {status:?}, stderr: {:?}",
                server.stderr_lines()
            )
            .into());
        }
        drop(steady);
        server.stop_cleanly(1)?;
        Ok(())
    }
}
