//! A supervisor: a pool of worker processes that outlives its workers.
//!
//! N workers (spawned children, each with its own duplex `Connection`) compute hash chains
//! that the supervisor hands out one at a time. One `WaitSet` carries everything that can
//! happen: a worker's results and heartbeats (its connection), a worker's death (its exit
//! `Sentinel`) and Ctrl-C or SIGTERM (a socket that the signal handler writes a byte to). A
//! worker that dies mid-task is noticed through its sentinel: its task goes back to the queue
//! and a replacement takes its place. A worker that stops sending heartbeats is killed and
//! replaced the same way.
//!
//! By default exactly one worker dies abruptly halfway through a task (it sends itself
//! SIGKILL, as the OOM killer would), and the run still ends with every task done exactly
//! once and the digests checked.
//!
//! On a terminal the progress is one status line, rewritten in place; otherwise (a pipe, a
//! log file) a plain line each second. Ctrl-C or SIGTERM stops every worker (SIGTERM, a grace
//! period, then SIGKILL), and the supervisor exits with 130 or 143. The workers are daemons,
//! so even a SIGKILL of the supervisor takes them down with it (Linux `PR_SET_PDEATHSIG`).
//!
//! ```sh
//! cargo run --release --example supervisor
//! cargo run --release --example supervisor -- --workers 4 --tasks 3000 --crash-rate 0.01 --hangs 1
//! ```

use std::collections::{HashSet, VecDeque};
use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::str::FromStr;
use std::time::{Duration, Instant};

use multiproc::{Connection, Key, Pipe, Process, Sentinel, WaitSet, Waitable};
use serde::{Deserialize, Serialize};
use signal_hook::consts::{SIGINT, SIGTERM};

/// A busy worker sends a heartbeat this often.
const HEARTBEAT: Duration = Duration::from_millis(100);
/// How often the loop wakes up without events: status line, stall checks.
const TICK: Duration = Duration::from_millis(100);
/// How often a plain (not a terminal) progress line is printed.
const PLAIN_EVERY: Duration = Duration::from_secs(1);
/// After SIGTERM, how long workers get to exit before SIGKILL.
const GRACE: Duration = Duration::from_secs(2);

/// Upper bounds of the command-line values: the supervisor keeps about 25 bytes per task
/// (1,000,000 tasks: 25 MB), and each worker is a process with two fds here.
const MAX_WORKERS: usize = 256;
const MAX_TASKS: u32 = 1_000_000;
/// A busy worker heartbeats every `HEARTBEAT`; a stall limit must leave room for several.
const MIN_STALL: Duration = Duration::from_millis(500);

const USAGE: &str = "\
usage: supervisor [--workers N] [--tasks N] [--rounds N] [--crashes N] [--crash-rate F]
                  [--hangs N] [--stall-ms N] [--seed N] [--verify-every N]

  --workers N       worker processes, 1 to 256 (default 8)
  --tasks N         hash chains to compute, 1 to 1000000 (default 1000)
  --rounds N        links per chain, the work per task (default 4000, a few ms)
  --crashes N       tasks whose first attempt kills its worker mid-task (default 1)
  --crash-rate F    and each task's first attempt does so with probability F, 0 to 1
                    (default 0)
  --hangs N         tasks whose first attempt hangs its worker mid-task (default 0);
                    crashes and hangs together are at most the tasks
  --stall-ms N      a busy worker silent this long is killed and replaced, at least 500
                    (default 2000)
  --seed N          chooses the chains and the faulty tasks (default 1)
  --verify-every N  the supervisor recomputes every Nth digest and every retried one
                    (default 10; 1 checks them all)";

#[derive(Debug, Clone)]
struct Config {
    workers: usize,
    tasks: u32,
    rounds: u32,
    crashes: u32,
    crash_rate: f64,
    hangs: u32,
    stall: Duration,
    seed: u64,
    verify_every: u32,
}

fn parse_args() -> Result<Config, String> {
    fn num<T: FromStr>(flag: &str, value: &str) -> Result<T, String> {
        value
            .parse()
            .map_err(|_| format!("{flag}: not a valid number: {value:?}"))
    }
    let mut cfg = Config {
        workers: 8,
        tasks: 1000,
        rounds: 4000,
        crashes: 1,
        crash_rate: 0.0,
        hangs: 0,
        stall: Duration::from_secs(2),
        seed: 1,
        verify_every: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--workers" => cfg.workers = num(&flag, &value)?,
            "--tasks" => cfg.tasks = num(&flag, &value)?,
            "--rounds" => cfg.rounds = num(&flag, &value)?,
            "--crashes" => cfg.crashes = num(&flag, &value)?,
            "--crash-rate" => cfg.crash_rate = num(&flag, &value)?,
            "--hangs" => cfg.hangs = num(&flag, &value)?,
            "--stall-ms" => cfg.stall = Duration::from_millis(num(&flag, &value)?),
            "--seed" => cfg.seed = num(&flag, &value)?,
            "--verify-every" => cfg.verify_every = num(&flag, &value)?,
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    if !(1..=MAX_WORKERS).contains(&cfg.workers) {
        return Err(format!("--workers: from 1 to {MAX_WORKERS}"));
    }
    if !(1..=MAX_TASKS).contains(&cfg.tasks) {
        return Err(format!("--tasks: from 1 to {MAX_TASKS}"));
    }
    if cfg.verify_every == 0 {
        return Err("--verify-every must be at least 1".into());
    }
    // NaN is in no range, so it is refused here too.
    if !(0.0..=1.0).contains(&cfg.crash_rate) {
        return Err("--crash-rate is a probability, from 0 to 1".into());
    }
    if cfg.stall < MIN_STALL {
        return Err(format!(
            "--stall-ms: at least {} (a busy worker heartbeats every {} ms)",
            MIN_STALL.as_millis(),
            HEARTBEAT.as_millis()
        ));
    }
    if u64::from(cfg.crashes) + u64::from(cfg.hangs) > u64::from(cfg.tasks) {
        return Err("more injected faults than tasks".into());
    }
    Ok(cfg)
}

// ---------------------------------------------------------------------------------------
// The work: a hash chain. No crypto crate is at hand, and none is needed: the point is real
// CPU work whose result the supervisor can check.

/// splitmix64 (Steele, Lea, Flood: "Fast splittable pseudorandom number generators", 2014).
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a (Fowler, Noll, Vo) of `word`'s bytes, continuing from `hash`.
fn fnv1a(mut hash: u64, word: u64) -> u64 {
    for byte in word.to_le_bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
    }
    hash
}

/// One task: `rounds` links, each expanding the running state into a 512-byte block
/// (splitmix64) and compressing the block into the next state (FNV-1a). Each link needs the
/// one before, so the work can be neither skipped nor split. `between(round)` runs before
/// every link.
fn hash_chain(seed: u64, rounds: u32, mut between: impl FnMut(u32)) -> u64 {
    let mut state = seed;
    let mut block = [0u64; 64];
    for round in 0..rounds {
        between(round);
        let mut expand = state;
        for word in block.iter_mut() {
            *word = splitmix64(&mut expand);
        }
        state = block.iter().fold(FNV_OFFSET ^ state, |h, &w| fnv1a(h, w));
    }
    state
}

/// The chain seed of task `id`: tasks differ, and a run is reproducible from `--seed`.
fn task_seed(seed: u64, id: u32) -> u64 {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(id);
    splitmix64(&mut x)
}

// ---------------------------------------------------------------------------------------
// The protocol between supervisor and worker.

/// Supervisor to worker.
#[derive(Serialize, Deserialize, Debug)]
enum Order {
    Task(Task),
    Stop,
}

#[derive(Serialize, Deserialize, Debug)]
struct Task {
    id: u32,
    seed: u64,
    rounds: u32,
    /// Injected misbehaviour, halfway through the chain.
    fault: Option<Fault>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The worker sends itself SIGKILL.
    Crash,
    /// The worker stops computing and heartbeating, but stays alive.
    Hang,
}

/// Worker to supervisor.
#[derive(Serialize, Deserialize, Debug)]
enum Report {
    Heartbeat { task: u32 },
    Done { task: u32, digest: u64 },
}

/// What a spawned worker is started with.
#[derive(Serialize, Deserialize)]
struct WorkerArgs {
    id: usize,
    conn: Connection,
}

/// A worker process: compute what it is told until told to stop (or the supervisor is gone).
fn worker(args: WorkerArgs) {
    let WorkerArgs { id, mut conn } = args;
    let mut last_beat = Instant::now();
    loop {
        let task = match conn.recv::<Order>() {
            Ok(Order::Task(task)) => task,
            Ok(Order::Stop) => return,
            Err(e) if e.is_eof() => return,
            Err(e) => panic!("worker {id}: bad order: {e}"),
        };
        let halfway = task.rounds / 2;
        let digest = hash_chain(task.seed, task.rounds, |round| {
            if round == halfway {
                match task.fault {
                    Some(Fault::Crash) => die_abruptly(),
                    Some(Fault::Hang) => loop {
                        std::thread::sleep(Duration::from_secs(3600));
                    },
                    None => {}
                }
            }
            // Heartbeats come from the computing loop itself, so they prove progress, not
            // merely that some thread of the worker is alive.
            if round % 64 == 0 && last_beat.elapsed() >= HEARTBEAT {
                last_beat = Instant::now();
                if conn.send(&Report::Heartbeat { task: task.id }).is_err() {
                    std::process::exit(1); // the supervisor is gone
                }
            }
        });
        if conn
            .send(&Report::Done {
                task: task.id,
                digest,
            })
            .is_err()
        {
            std::process::exit(1);
        }
    }
}

/// Dies as an OOM kill would: no unwinding, no goodbye, the task half done.
fn die_abruptly() -> ! {
    let me = rustix::process::getpid();
    let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
    std::process::abort()
}

// ---------------------------------------------------------------------------------------
// The supervisor.

/// Everything the supervisor waits on, in one `WaitSet`.
enum Item {
    /// Results and heartbeats from worker `id`.
    Conn(usize, Connection),
    /// Ready when worker `id`'s process exits.
    Exit(usize, Sentinel),
    /// The read end of a socket the handler of this signal writes to.
    Signal(i32, UnixStream),
}

impl Waitable for Item {
    fn wait_fd(&self) -> multiproc::Result<BorrowedFd<'_>> {
        match self {
            Item::Conn(_, conn) => conn.wait_fd(),
            Item::Exit(_, sentinel) => sentinel.wait_fd(),
            Item::Signal(_, socket) => Ok(socket.as_fd()),
        }
    }

    fn is_ready(&mut self) -> bool {
        match self {
            Item::Conn(_, conn) => conn.is_ready(),
            Item::Exit(_, sentinel) => sentinel.is_ready(),
            Item::Signal(_, socket) => socket.as_fd().is_ready(),
        }
    }

    fn is_ready_buffered(&self) -> bool {
        match self {
            Item::Conn(_, conn) => conn.is_ready_buffered(),
            Item::Exit(..) | Item::Signal(..) => false,
        }
    }
}

/// One slot of the pool and the process currently filling it.
struct Worker {
    process: Process,
    pid: u32,
    /// `None` once the connection reached its end.
    conn: Option<Key>,
    /// `None` once this process's exit has been handled.
    exit: Option<Key>,
    task: Option<u32>,
    /// The last message from the worker, or when it was given its task.
    last_heard: Instant,
    killed_for_stall: bool,
    // For the summary, over every process that filled the slot:
    done: u32,
    heartbeats: u64,
    restarts: u32,
    exit_codes: Vec<i32>,
}

enum Outcome {
    Finished,
    Interrupted(i32),
}

struct Supervisor {
    cfg: Config,
    set: WaitSet<Item>,
    signals: Vec<Key>,
    workers: Vec<Worker>,
    queue: VecDeque<u32>,
    /// Per task: the fault its first attempt carries.
    faults: Vec<Option<Fault>>,
    /// Per task: how often it was handed out.
    attempts: Vec<u32>,
    results: Vec<Option<u64>>,
    done: u32,
    duplicates: u32,
    restarts: u32,
    started: Instant,
    display: Display,
}

impl Supervisor {
    fn new(cfg: Config) -> Result<Supervisor, Box<dyn std::error::Error>> {
        let mut set = WaitSet::new()?;
        let mut signals = Vec::new();
        for signal in [SIGINT, SIGTERM] {
            let (read, write) = UnixStream::pair()?;
            read.set_nonblocking(true)?;
            // The handler only writes a byte to `write`; all the work happens in the loop.
            signal_hook::low_level::pipe::register(signal, write)?;
            signals.push(set.insert(Item::Signal(signal, read))?);
        }
        let tasks = cfg.tasks as usize;
        let mut faults = vec![None; tasks];
        let mut rng = cfg.seed ^ 0x5eed_f00d_dead_beef;
        let mut below = |n: u32| (splitmix64(&mut rng) % u64::from(n)) as u32;
        let mut chosen = HashSet::new();
        for fault in std::iter::repeat_n(Fault::Crash, cfg.crashes as usize)
            .chain(std::iter::repeat_n(Fault::Hang, cfg.hangs as usize))
        {
            let id = loop {
                let id = below(cfg.tasks);
                if chosen.insert(id) {
                    break id;
                }
            };
            faults[id as usize] = Some(fault);
        }
        if cfg.crash_rate > 0.0 {
            for fault in faults.iter_mut().filter(|f| f.is_none()) {
                let unit = (splitmix64(&mut rng) >> 11) as f64 / (1u64 << 53) as f64;
                if unit < cfg.crash_rate {
                    *fault = Some(Fault::Crash);
                }
            }
        }
        Ok(Supervisor {
            set,
            signals,
            workers: Vec::with_capacity(cfg.workers),
            queue: (0..cfg.tasks).collect(),
            faults,
            attempts: vec![0; tasks],
            results: vec![None; tasks],
            done: 0,
            duplicates: 0,
            restarts: 0,
            started: Instant::now(),
            display: Display::new(std::io::stdout().is_terminal()),
            cfg,
        })
    }

    /// Starts a worker process for slot `id`, its connection and sentinel in the set.
    fn launch(&mut self, id: usize) -> multiproc::Result<(Process, u32, Key, Key)> {
        let (ours, theirs) = Pipe::new()?;
        let mut process = Process::spawn(worker, WorkerArgs { id, conn: theirs });
        process.set_name(format!("worker-{id}"));
        process.set_daemon(true)?;
        process.start()?;
        let pid = process.pid().expect("started");
        let exit = self.set.insert(Item::Exit(id, process.sentinel()?))?;
        let conn = self.set.insert(Item::Conn(id, ours))?;
        Ok((process, pid, conn, exit))
    }

    fn start_workers(&mut self) -> multiproc::Result<()> {
        for id in 0..self.cfg.workers {
            let (process, pid, conn, exit) = self.launch(id)?;
            self.workers.push(Worker {
                process,
                pid,
                conn: Some(conn),
                exit: Some(exit),
                task: None,
                last_heard: Instant::now(),
                killed_for_stall: false,
                done: 0,
                heartbeats: 0,
                restarts: 0,
                exit_codes: Vec::new(),
            });
            self.display
                .event(&format!("worker {id} started (pid {pid})"));
        }
        Ok(())
    }

    fn run(&mut self) -> multiproc::Result<Outcome> {
        let mut ready = Vec::new();
        while self.done < self.cfg.tasks {
            self.dispatch();
            self.set.wait_into(&mut ready, Some(TICK))?;
            // Signals first: Ctrl-C on a terminal reaches the workers too (one process
            // group), and their deaths must not be taken for crashes to recover from.
            if let Some(signal) = self.take_signal() {
                return Ok(Outcome::Interrupted(signal));
            }
            for &key in &ready {
                match self.set.get(key) {
                    Some(Item::Conn(id, _)) => {
                        let id = *id;
                        self.drain(id);
                    }
                    Some(Item::Exit(id, _)) => {
                        let id = *id;
                        self.on_exit(id)?;
                    }
                    // Handled above, or removed while handling an earlier key.
                    Some(Item::Signal(..)) | None => {}
                }
            }
            self.check_stalls()?;
            self.show_progress(false);
        }
        self.show_progress(true);
        Ok(Outcome::Finished)
    }

    /// A signal that arrived, if any; its socket is drained.
    fn take_signal(&mut self) -> Option<i32> {
        let mut caught = None;
        for &key in &self.signals {
            if let Some(Item::Signal(signal, socket)) = self.set.get_mut(key) {
                let mut buf = [0u8; 16];
                while matches!(socket.read(&mut buf), Ok(1..)) {
                    caught = Some(*signal);
                }
            }
        }
        caught
    }

    /// Hands a task to every idle worker.
    fn dispatch(&mut self) {
        for w in &mut self.workers {
            let (Some(conn_key), Some(_), None, false) =
                (w.conn, w.exit, w.task, w.killed_for_stall)
            else {
                continue;
            };
            let Some(id) = self.queue.pop_front() else {
                return;
            };
            let first = self.attempts[id as usize] == 0;
            self.attempts[id as usize] += 1;
            let task = Task {
                id,
                seed: task_seed(self.cfg.seed, id),
                rounds: self.cfg.rounds,
                fault: self.faults[id as usize].filter(|_| first),
            };
            let Some(Item::Conn(_, conn)) = self.set.get_mut(conn_key) else {
                unreachable!("a worker's conn key names its connection");
            };
            if conn.send(&Order::Task(task)).is_ok() {
                w.task = Some(id);
                w.last_heard = Instant::now();
            } else {
                // Gone: its sentinel will say so. The task stays first in line.
                self.attempts[id as usize] -= 1;
                self.queue.push_front(id);
            }
        }
    }

    /// Takes every message worker `id` has sent; at the end of its stream, drops the
    /// connection.
    fn drain(&mut self, id: usize) {
        let Some(key) = self.workers[id].conn else {
            return;
        };
        let Some(Item::Conn(_, conn)) = self.set.get_mut(key) else {
            return;
        };
        let mut reports = Vec::new();
        let ended = loop {
            match conn.try_recv::<Report>() {
                Ok(Some(report)) => reports.push(report),
                Ok(None) => break false,
                // End of file, a message cut short by the death, or worse: in every case
                // nothing more will come, and the sentinel tells the rest.
                Err(e) => {
                    if !e.is_eof() && e.kind() != multiproc::ErrorKind::TruncatedMessage {
                        self.display
                            .event(&format!("worker {id}: connection failed: {e}"));
                    }
                    break true;
                }
            }
        };
        for report in reports {
            self.on_report(id, report);
        }
        if ended {
            self.set.remove(key);
            self.workers[id].conn = None;
        }
    }

    fn on_report(&mut self, id: usize, report: Report) {
        let w = &mut self.workers[id];
        w.last_heard = Instant::now();
        match report {
            Report::Heartbeat { .. } => w.heartbeats += 1,
            Report::Done { task, digest } => {
                if w.task != Some(task) {
                    self.display.event(&format!(
                        "worker {id}: result for task {task}, not its task"
                    ));
                    self.duplicates += 1;
                    return;
                }
                w.task = None;
                let slot = &mut self.results[task as usize];
                if slot.is_some() {
                    self.duplicates += 1;
                } else {
                    *slot = Some(digest);
                    self.done += 1;
                    w.done += 1;
                }
            }
        }
    }

    /// Worker `id`'s process exited: collect what it sent, re-queue its task, replace it.
    fn on_exit(&mut self, id: usize) -> multiproc::Result<()> {
        // Results it sent before dying still count, and must not be computed twice.
        self.drain(id);
        let w = &mut self.workers[id];
        if let Some(key) = w.conn.take() {
            self.set.remove(key);
        }
        if let Some(key) = w.exit.take() {
            self.set.remove(key);
        }
        let code = w.process.join()?;
        w.exit_codes.push(code);
        let how = describe_exit(code);
        let line = match w.task.take() {
            Some(task) => {
                self.queue.push_front(task);
                format!(
                    "worker {id} (pid {}) died during task {task}, exit code {how}; task {task} \
                     re-queued",
                    w.pid
                )
            }
            None => format!(
                "worker {id} (pid {}) exited while idle, exit code {how}",
                w.pid
            ),
        };
        self.display.event(&line);
        if self.done == self.cfg.tasks {
            return Ok(());
        }
        let (process, pid, conn, exit) = self.launch(id)?;
        let w = &mut self.workers[id];
        w.process = process;
        w.pid = pid;
        w.conn = Some(conn);
        w.exit = Some(exit);
        w.last_heard = Instant::now();
        w.killed_for_stall = false;
        w.restarts += 1;
        self.restarts += 1;
        self.display
            .event(&format!("worker {id} restarted (pid {pid})"));
        Ok(())
    }

    /// Kills busy workers that have been silent too long; their sentinels do the rest.
    fn check_stalls(&mut self) -> multiproc::Result<()> {
        for (id, w) in self.workers.iter_mut().enumerate() {
            let Some(task) = w.task else { continue };
            let silent = w.last_heard.elapsed();
            if w.killed_for_stall || w.exit.is_none() || silent < self.cfg.stall {
                continue;
            }
            self.display.event(&format!(
                "worker {id} (pid {}) stalled: no heartbeat for {:.1} s during task {task}; \
                 killing it",
                w.pid,
                silent.as_secs_f64()
            ));
            w.process.kill()?;
            w.killed_for_stall = true;
        }
        Ok(())
    }

    fn show_progress(&mut self, last: bool) {
        let elapsed = self.started.elapsed();
        let rate = f64::from(self.done) / elapsed.as_secs_f64().max(1e-9);
        self.display.progress(
            &Progress {
                done: self.done,
                total: self.cfg.tasks,
                elapsed,
                rate,
                restarts: self.restarts,
            },
            last,
        );
    }

    /// Asks every worker to stop and waits for it, killing any that does not.
    fn stop_all(&mut self, interrupted: bool) -> multiproc::Result<()> {
        for w in &mut self.workers {
            if w.exit.is_none() {
                continue;
            }
            if interrupted {
                w.process.terminate()?;
            } else if let Some(Item::Conn(_, conn)) = w.conn.and_then(|k| self.set.get_mut(k)) {
                let _ = conn.send(&Order::Stop);
            }
        }
        let deadline = Instant::now() + GRACE;
        for w in &mut self.workers {
            if w.exit.take().is_none() {
                continue;
            }
            let code = match w.process.join_deadline(deadline) {
                Ok(code) => code,
                Err(e) if e.is_timeout() => {
                    w.process.kill()?;
                    w.process.join()?
                }
                Err(e) => return Err(e),
            };
            w.exit_codes.push(code);
        }
        Ok(())
    }

    /// Recomputes every `--verify-every`th digest, and every retried task's; returns how
    /// many were checked and the ids of those that differ.
    fn verify(&self) -> (u32, Vec<u32>) {
        let mut checked = 0;
        let mut wrong = Vec::new();
        for (id, result) in (0u32..).zip(&self.results) {
            let Some(digest) = *result else { continue };
            if id % self.cfg.verify_every != 0 && self.attempts[id as usize] < 2 {
                continue;
            }
            checked += 1;
            if hash_chain(task_seed(self.cfg.seed, id), self.cfg.rounds, |_| {}) != digest {
                wrong.push(id);
            }
        }
        (checked, wrong)
    }

    /// Prints the summary; returns whether the results are right.
    fn summary(&self, wall: Duration) -> bool {
        let (checked, wrong) = self.verify();
        let finished = self.done == self.cfg.tasks;
        let once = if self.duplicates == 0 {
            "each exactly once".to_owned()
        } else {
            format!("{} RESULTS DUPLICATED OR MISPLACED", self.duplicates)
        };
        let injected = |f| self.faults.iter().filter(|&&x| x == Some(f)).count();
        println!();
        println!("summary");
        println!(
            "  tasks       {} of {} done, {once}",
            self.done, self.cfg.tasks
        );
        println!("  wall time   {:.2} s", wall.as_secs_f64());
        println!(
            "  throughput  {:.1} tasks/s",
            f64::from(self.done) / wall.as_secs_f64().max(1e-9)
        );
        println!(
            "  restarts    {} (injected: {}, {})",
            self.restarts,
            plural(injected(Fault::Crash), "crash", "crashes"),
            plural(injected(Fault::Hang), "hang", "hangs")
        );
        if wrong.is_empty() {
            println!("  verified    {checked} digests recomputed by the supervisor: all match");
        } else {
            println!("  verified    {checked} digests recomputed: WRONG for tasks {wrong:?}");
        }
        if finished {
            let checksum = self
                .results
                .iter()
                .fold(FNV_OFFSET, |h, d| fnv1a(h, d.unwrap_or(0)));
            println!("  checksum    {checksum:#018x} (depends on --tasks, --rounds, --seed only)");
        }
        println!();
        println!("  worker  tasks  heartbeats  restarts  exit codes");
        for (id, w) in self.workers.iter().enumerate() {
            // Runs of one code as "3 × code", so a slot that crashed often stays one line.
            let mut codes: Vec<String> = Vec::new();
            for run in w.exit_codes.chunk_by(|a, b| a == b) {
                let code = describe_exit(run[0]);
                codes.push(match run.len() {
                    1 => code,
                    n => format!("{n} × {code}"),
                });
            }
            println!(
                "  {id:>6}  {:>5}  {:>10}  {:>8}  {}",
                w.done,
                w.heartbeats,
                w.restarts,
                codes.join(", ")
            );
        }
        let total = |f: fn(&Worker) -> u64| self.workers.iter().map(f).sum::<u64>();
        println!(
            "  {:>6}  {:>5}  {:>10}  {:>8}",
            "total",
            total(|w| u64::from(w.done)),
            total(|w| w.heartbeats),
            total(|w| u64::from(w.restarts)),
        );
        self.duplicates == 0 && wrong.is_empty()
    }
}

fn describe_exit(code: i32) -> String {
    let name = match -code {
        2 => "SIGINT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        15 => "SIGTERM",
        _ if code >= 0 => return format!("{code}"),
        _ => return format!("{code} (signal {})", -code),
    };
    format!("{code} ({name})")
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What the status line shows.
struct Progress {
    done: u32,
    total: u32,
    elapsed: Duration,
    rate: f64,
    restarts: u32,
}

/// Progress output: a status line rewritten in place on a terminal, plain lines otherwise.
struct Display {
    tty: bool,
    /// A status line is on screen, without its newline.
    status_shown: bool,
    next: Instant,
}

impl Display {
    fn new(tty: bool) -> Display {
        Display {
            tty,
            status_shown: false,
            next: Instant::now() + if tty { TICK } else { PLAIN_EVERY },
        }
    }

    /// Prints a line of its own (above the status line, on a terminal).
    fn event(&mut self, line: &str) {
        let mut out = std::io::stdout().lock();
        if self.status_shown {
            let _ = write!(out, "\r\x1b[K");
            self.status_shown = false;
        }
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }

    fn progress(&mut self, p: &Progress, last: bool) {
        let now = Instant::now();
        if !last && now < self.next {
            return;
        }
        let percent = u64::from(p.done) * 100 / u64::from(p.total);
        let mut out = std::io::stdout().lock();
        if self.tty {
            self.next = now + TICK;
            const WIDTH: u64 = 30;
            let filled = (u64::from(p.done) * WIDTH / u64::from(p.total)) as usize;
            let eta = if p.rate > 0.0 {
                format!("{:.1} s", f64::from(p.total - p.done) / p.rate)
            } else {
                "?".to_owned()
            };
            let _ = write!(
                out,
                "\r[{}{}] {}/{} {percent:>3}%  {:.0} tasks/s  restarts {}  eta {eta}\x1b[K",
                "#".repeat(filled),
                ".".repeat(WIDTH as usize - filled),
                p.done,
                p.total,
                p.rate,
                p.restarts
            );
            self.status_shown = true;
            if last {
                let _ = writeln!(out);
                self.status_shown = false;
            }
        } else {
            while self.next <= now {
                self.next += PLAIN_EVERY;
            }
            let _ = writeln!(
                out,
                "progress: {}/{} tasks ({percent}%) after {:.1} s, {:.1} tasks/s, {}",
                p.done,
                p.total,
                p.elapsed.as_secs_f64(),
                p.rate,
                plural(p.restarts as usize, "restart", "restarts")
            );
        }
        let _ = out.flush();
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    multiproc::init(); // in a worker, runs `worker` and exits
    let cfg = match parse_args() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("supervisor: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    println!(
        "supervisor: {} workers, {} tasks of {} rounds, seed {}",
        cfg.workers, cfg.tasks, cfg.rounds, cfg.seed
    );
    let mut sup = Supervisor::new(cfg)?;
    sup.start_workers()?;
    let outcome = sup.run()?;
    let wall = sup.started.elapsed();
    let code = match outcome {
        Outcome::Finished => {
            sup.stop_all(false)?;
            0
        }
        Outcome::Interrupted(signal) => {
            let name = if signal == SIGINT {
                "SIGINT"
            } else {
                "SIGTERM"
            };
            sup.display.event(&format!(
                "interrupted by {name}: stopping {} workers (SIGTERM, then SIGKILL after {} s)",
                sup.workers.len(),
                GRACE.as_secs()
            ));
            sup.stop_all(true)?;
            println!(
                "interrupted: {} of {} tasks done; all {} workers stopped, none left running",
                sup.done,
                sup.cfg.tasks,
                sup.workers.len()
            );
            128 + signal
        }
    };
    let ok = sup.summary(wall);
    if !ok {
        eprintln!("supervisor: results failed verification");
        std::process::exit(1);
    }
    std::process::exit(code)
}
