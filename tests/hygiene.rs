//! Resource hygiene: file descriptors, threads, child processes, files on disk and memory,
//! on success and error paths. Each test runs in a forked process of its own
//! (`tests_main!`), so lowering a resource limit or counting fds and children is exact.

#[macro_use]
mod util;

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use multiproc::{
    Client, Connection, Context, ErrorKind, Handler, Listener, Pipe, Process, Queue, Reactor,
    WaitSet,
};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use util::TestResult;

/// Open fds and what they are.
type FdList = Vec<(i32, String)>;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn fd_count() -> usize {
    util::open_fds().len()
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |d| d.count())
}

/// Pids whose parent is this process, with their state letter (`Z`: a zombie).
fn my_children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid: u32 = f.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        if ppid == me {
            out.push((pid, state));
        }
    }
    out
}

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Memory mappings, but for the brk heap (it appears once, when malloc first uses it).
fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map_or(0, |m| m.lines().filter(|l| !l.ends_with("[heap]")).count())
}

/// What this process holds, to compare before and after a loop.
#[derive(Debug, PartialEq, Eq)]
struct Census {
    fds: usize,
    threads: usize,
    children: usize,
    mappings: usize,
}

fn census() -> Census {
    Census {
        fds: fd_count(),
        threads: thread_count(),
        children: my_children().len(),
        mappings: mappings(),
    }
}

/// The census after a first one: the first look at `/proc` grows the heap once.
fn settled_census() -> Census {
    let _ = census();
    census()
}

fn check_census(what: &str, before: &Census) -> TestResult {
    let after = census();
    if &after != before {
        fail!("{what}: before {before:?}, after {after:?}");
    }
    Ok(())
}

/// Runs `f` with `RLIMIT_NOFILE` at `limit`, restoring it after.
fn with_nofile<R>(limit: u64, f: impl FnOnce() -> R) -> Res<R> {
    let saved = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            maximum: saved.maximum,
        },
    )?;
    let r = f();
    setrlimit(Resource::Nofile, saved)?;
    Ok(r)
}

/// The lowest fd number not open: with `RLIMIT_NOFILE` at `first_free() + n`, exactly `n`
/// more fds can be opened.
fn first_free() -> u64 {
    let open = util::open_fds();
    (0..).find(|fd| !open.contains(fd)).unwrap() as u64
}

fn scratch_dir(tag: &str) -> Res<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("multiproc-hygiene-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir)?;
    Ok(dir)
}

/// The fds `ls -l /proc/self/fd` sees in a program started by `std::process::Command`
/// (which closes nothing itself), other than stdio and `ls`'s own directory fd.
fn fds_seen_by_exec() -> Res<BTreeMap<i32, String>> {
    let out = std::process::Command::new("ls")
        .args(["-l", "/proc/self/fd"])
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(parse_ls(&text))
}

fn parse_ls(text: &str) -> BTreeMap<i32, String> {
    let mut seen = BTreeMap::new();
    for line in text.lines() {
        let Some((left, target)) = line.split_once(" -> ") else {
            continue;
        };
        let Some(fd) = left
            .split_whitespace()
            .last()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if fd > 2 && !target.contains("/fd") {
            seen.insert(fd, target.to_owned());
        }
    }
    seen
}

struct Echo;
impl Handler for Echo {
    fn on_message(&mut self, ctx: &mut Context<'_>, m: &[u8]) {
        let _ = ctx.send_bytes(m);
    }
}

/// Every kind of object the library makes exists while an unrelated program starts: none
/// of their fds may reach it.
fn an_exec_inherits_no_fd_of_the_library() -> TestResult {
    let dir = scratch_dir("exec")?;
    // What the environment gave this process without close-on-exec (the runner's), before.
    let inherited = fds_seen_by_exec()?;
    // A started child (pidfd) and its sentinel (a dup of it); forked before any thread.
    let (mut keep, mut child_end) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = child_end.recv_bytes();
    });
    p.start()?;
    let _sentinel = p.sentinel()?;
    let _pipes = (Pipe::new()?, Pipe::half_duplex()?);
    let q: Queue<u32> = Queue::new()?;
    q.put(&1)?;
    let _simple: multiproc::SimpleQueue<u32> = multiproc::SimpleQueue::new()?;
    let mut set = WaitSet::new()?;
    let (_a, b) = Pipe::new()?;
    set.insert(b)?;
    let mut reactor = Reactor::new()?;
    let (_c, d) = Pipe::new()?;
    reactor.register(d, Echo)?;
    let _unix = Listener::bind(dir.join("s"), None)?;
    let _abs = Listener::bind(format!("@multiproc-hygiene-{}", std::process::id()), None)?;
    let mut tcp = Listener::bind("127.0.0.1:0", Some(b"key"))?;
    let addr = tcp.local_addr().clone();
    // One accepted and authenticated connection, a client one, and a handshake pending.
    let a2 = addr.clone();
    let client = std::thread::spawn(move || Client::connect(&a2, Some(b"key")));
    let _server_side = tcp.accept()?;
    let _client_side = client.join().map_err(|_| "client panicked")??;
    let multiproc::Address::Tcp(sock) = addr else {
        fail!("not tcp")
    };
    let _silent = std::net::TcpStream::connect(sock)?;
    let _ = tcp.try_accept();
    let mut seen = fds_seen_by_exec()?;
    seen.retain(|fd, target| inherited.get(fd) != Some(target));
    keep.send_bytes(b"go")?;
    p.join()?;
    let _ = std::fs::remove_dir_all(&dir);
    if !seen.is_empty() {
        fail!("an exec'd program inherited {seen:?}");
    }
    Ok(())
}

/// A spawned child lists its fds and what a program it runs inherits.
fn report_fds(mut conn: Connection) {
    let mine: Vec<(i32, String)> = util::open_fds()
        .into_iter()
        .map(|fd| {
            let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            (fd, target)
        })
        .collect();
    let exec: Vec<(i32, String)> = fds_seen_by_exec().unwrap_or_default().into_iter().collect();
    conn.send(&(conn.as_raw_fd(), mine, exec)).unwrap();
}

fn a_spawned_child_receives_only_what_was_passed() -> TestResult {
    let dir = scratch_dir("spawn")?;
    let _q: Queue<u32> = Queue::new()?;
    let _l = Listener::bind(dir.join("s"), Some(b"k"))?;
    let _other = Pipe::new()?;
    let (mut ours, theirs) = Pipe::new()?;
    let mut p = Process::spawn(report_fds, theirs);
    p.start()?;
    let (conn_fd, mine, exec): (i32, FdList, FdList) = ours.recv()?;
    assert_eq!(p.join()?, 0);
    let _ = std::fs::remove_dir_all(&dir);
    let mut extra: Vec<_> = mine
        .iter()
        .filter(|(fd, _)| *fd > 2 && *fd != conn_fd)
        .collect();
    if std::env::var_os("MULTIPROC_NO_PIDFD").is_some_and(|v| v == "1") {
        // Without pidfds the child holds the write end of its exit sentinel pipe, for
        // itself only.
        let held = extra.iter().position(|(_, t)| t.starts_with("pipe:"));
        extra.remove(held.ok_or("no sentinel pipe in the child")?);
    }
    if !extra.is_empty() || !exec.is_empty() {
        fail!("child fds {mine:?} (its connection is {conn_fd}); its exec inherited {exec:?}");
    }
    Ok(())
}

/// The same, with exit sentinels as pipes (no pidfds: old kernels, a seccomp filter): the
/// child's end of the pipe must not reach the programs it runs, or the parent's sentinel
/// would wait for them too. This test binary runs that test again with pidfds off.
fn without_pidfds_a_spawned_childs_sentinel_pipe_reaches_no_exec() -> TestResult {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["a_spawned_child_receives_only_what_was_passed", "--exact"])
        .env("MULTIPROC_NO_PIDFD", "1")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("1 passed") {
        fail!("{}\n{}", text, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// 1000 failing connects of every kind: nothing grows.
fn failing_connects_leak_nothing() -> TestResult {
    // A server that fails every handshake (the client's key is wrong), in a child of its
    // own, forked before this process starts any thread; it reports its own census.
    let (mut ctl, mut server_ctl) = Pipe::new()?;
    let name = format!("@multiproc-hygiene-auth-{}", std::process::id());
    let server_name = name.clone();
    let mut server = Process::fork(move || {
        let mut l = Listener::bind(&server_name, Some(b"right")).unwrap();
        l.set_handshake_timeout(Duration::from_secs(5));
        server_ctl.send_bytes(b"ready").unwrap();
        // Warm up (first-use allocations), then count.
        let _ = l.accept();
        let before = settled_census();
        let mut failures = 0u32;
        for _ in 0..999 {
            if let Err(e) = l.accept() {
                assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
                failures += 1;
            }
        }
        let after = census();
        server_ctl
            .send(&(failures, format!("{before:?}"), format!("{after:?}")))
            .unwrap();
    });
    server.start()?;
    assert_eq!(ctl.recv_bytes()?, b"ready");

    let dir = scratch_dir("connect")?;
    let missing = dir.join("missing");
    let too_long = format!("/tmp/{}", "x".repeat(200));
    // Warm up every path once.
    let attempt = |i: usize| -> multiproc::Result<Connection> {
        match i % 5 {
            0 => Client::connect("@multiproc-hygiene-nobody", None),
            1 => Client::connect(&missing, None),
            2 => Client::connect("127.0.0.1:1", None),
            3 => Client::connect("definitely not an address::", None),
            _ => Client::connect(too_long.as_str(), None),
        }
    };
    for i in 0..5 {
        let _ = attempt(i);
    }
    let _ = Client::connect(name.as_str(), Some(b"wrong"));
    let before = settled_census();
    for i in 0..1000 {
        if attempt(i).is_ok() {
            fail!("attempt {i} connected");
        }
    }
    for _ in 0..999 {
        let e = Client::connect(name.as_str(), Some(b"wrong"))
            .err()
            .ok_or("a wrong key connected")?;
        assert_eq!(e.kind(), ErrorKind::Authentication, "{e}");
    }
    check_census("client side, 2000 failed connects", &before)?;
    let (failures, sb, sa): (u32, String, String) = ctl.recv()?;
    assert_eq!(server.join()?, 0);
    assert_eq!(failures, 999);
    if sb != sa {
        fail!("server side, 999 failed handshakes: before {sb}, after {sa}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Connects that time out: into a full Unix accept queue, and into a TCP listener that
/// never answers the handshake.
fn timed_out_connects_leak_nothing() -> TestResult {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let name = format!("multiproc-hygiene-full-{}", std::process::id());
    let server = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new_abstract_name(name.as_bytes())?;
    rustix::net::bind(&server, &addr)?;
    rustix::net::listen(&server, 0)?;
    let mut fillers: Vec<OwnedFd> = Vec::new();
    loop {
        let s = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        match rustix::net::connect(&s, &addr) {
            Ok(()) => fillers.push(s),
            Err(_) => break,
        }
    }
    let tcp = std::net::TcpListener::bind("127.0.0.1:0")?;
    let tcp_addr = tcp.local_addr()?;
    let full = format!("@{name}");
    let unix_try = || {
        Client::new(full.as_str())
            .timeout(Duration::from_millis(1))
            .open()
    };
    let tcp_try = || {
        Client::new(tcp_addr)
            .authkey(b"k")
            .timeout(Duration::from_millis(2))
            .open()
    };
    let e = unix_try().err().ok_or("connected into a full queue")?;
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    let _ = tcp_try();
    let before = settled_census();
    for _ in 0..300 {
        let e = unix_try().err().ok_or("connected into a full queue")?;
        assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
        let e = tcp_try().err().ok_or("handshake without a server")?;
        assert!(
            matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Authentication),
            "{e}"
        );
    }
    check_census("600 timed-out connects", &before)?;
    Ok(())
}

/// 1000 failing binds of every kind: nothing grows, no file is left.
fn failing_binds_leak_nothing() -> TestResult {
    let dir = scratch_dir("bind")?;
    let live_path = dir.join("live");
    let _live = Listener::bind(&live_path, None)?;
    let abs = format!("@multiproc-hygiene-bind-{}", std::process::id());
    let _abs = Listener::bind(abs.as_str(), None)?;
    let tcp = Listener::bind("127.0.0.1:0", None)?;
    let tcp_addr = tcp.local_addr().to_string();
    let too_long = dir.join("y".repeat(200));
    let no_dir = dir.join("no/such/dir/s");
    let regular = dir.join("regular");
    std::fs::write(&regular, b"not a socket")?;
    let attempt = |i: usize| -> multiproc::Result<Listener> {
        match i % 6 {
            0 => Listener::bind(&live_path, None),
            1 => Listener::bind(abs.as_str(), None),
            2 => Listener::bind(tcp_addr.as_str(), None),
            3 => Listener::bind(&too_long, None),
            4 => Listener::bind(&no_dir, None),
            _ => Listener::bind(&regular, None),
        }
    };
    for i in 0..6 {
        let _ = attempt(i);
    }
    let before = settled_census();
    for i in 0..1002 {
        if attempt(i).is_ok() {
            fail!("bind {i} succeeded");
        }
    }
    check_census("1002 failed binds", &before)?;
    let mut left: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    left.sort();
    assert_eq!(left, ["live", "regular"], "files in the bind directory");
    drop(_live);
    assert!(
        !live_path.exists(),
        "dropping a listener left its socket file"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// A bind that fails after the socket file was made (out of fds for the epoll or timers)
/// must not leave the file behind.
fn a_bind_failing_half_way_removes_its_socket_file() -> TestResult {
    let dir = scratch_dir("halfway")?;
    let _ = Listener::bind(dir.join("warm"), None)?;
    let before = settled_census();
    // socket (+0), then epoll (+1), timer (+2), timer (+3): let each of them fail in turn.
    for extra in 1..=3u64 {
        let path = dir.join(format!("s{extra}"));
        let limit = first_free() + extra;
        let r = with_nofile(limit, || Listener::bind(&path, None))?;
        let e = r.err().ok_or("bound with too few fds")?;
        assert_eq!(e.kind(), ErrorKind::Io, "{e}");
        if path.exists() {
            fail!(
                "a bind failing with {e} (limit {extra} fds) left {}",
                path.display()
            );
        }
    }
    check_census("3 half-way binds", &before)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

fn idle(_: ()) {}

/// `Process::start` that fails: a missing program, and fork and spawn short of fds.
fn failing_starts_leak_nothing() -> TestResult {
    let attempt = || {
        let mut p = Process::command(multiproc::Command::new("/nonexistent/program"));
        p.start()
    };
    let _ = attempt();
    let before = settled_census();
    for _ in 0..1000 {
        if attempt().is_ok() {
            fail!("a missing program started");
        }
    }
    check_census("1000 failed command starts", &before)?;
    // Fork: no fd for the pidfd, at once or after the fork; spawn: none for the payload.
    let mut q = Process::fork(|| {});
    q.start()?;
    q.join()?;
    let mut s = Process::spawn(idle, ());
    s.start()?;
    s.join()?;
    let before = settled_census();
    for extra in 0..4u64 {
        for _ in 0..50 {
            let limit = first_free() + extra;
            let r = with_nofile(limit, || {
                let mut p = Process::fork(|| {});
                let started = p.start();
                let joined = started.as_ref().ok().map(|_| p.join());
                (started, joined)
            })?;
            if let (Ok(()), Some(j)) = r {
                j?;
            }
            let r = with_nofile(limit, || {
                let mut p = Process::spawn(idle, ());
                let started = p.start();
                let joined = started.as_ref().ok().map(|_| p.join());
                (started, joined)
            })?;
            if let (Ok(()), Some(j)) = r {
                j?;
            }
        }
    }
    let zombies: Vec<_> = my_children();
    if !zombies.is_empty() {
        fail!("children left after failed starts: {zombies:?}");
    }
    check_census("400 fork and spawn starts short of fds", &before)?;
    Ok(())
}

/// `Queue::new` short of fds (memfd or eventfd refused) or of address space.
fn failing_queue_creation_leaks_nothing() -> TestResult {
    let _: Queue<u32> = Queue::new()?;
    let before = settled_census();
    for extra in 0..2u64 {
        for _ in 0..500 {
            let r = with_nofile(first_free() + extra, Queue::<u32>::new)?;
            if r.is_ok() {
                fail!("a queue with {extra} fds");
            }
        }
    }
    check_census("1000 queues short of fds", &before)?;
    // Address space: leave no room for the queue's mapping.
    let saved = getrlimit(Resource::As);
    let vm: u64 = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or("VmSize")?;
    let mut refused = 0;
    let before = settled_census();
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some((vm + 1024) * 1024),
            maximum: saved.maximum,
        },
    )?;
    for _ in 0..1000 {
        if Queue::<u32>::new().is_err() {
            refused += 1;
        }
    }
    setrlimit(Resource::As, saved)?;
    assert_eq!(refused, 1000, "queues made without address space");
    check_census("1000 queues short of address space", &before)?;
    Ok(())
}

struct FailOnGarbage;
impl Handler for FailOnGarbage {
    fn on_message(&mut self, _: &mut Context<'_>, _: &[u8]) {}
    fn on_error(&mut self, ctx: &mut Context<'_>, _: multiproc::Error) {
        ctx.stop();
    }
    fn on_eof(&mut self, ctx: &mut Context<'_>) {
        ctx.stop();
    }
}

/// Handlers whose connection fails, and WaitSet inserts the system refuses.
fn reactor_and_waitset_errors_leak_nothing() -> TestResult {
    let mut reactor = Reactor::new()?;
    let round = |reactor: &mut Reactor| -> TestResult {
        let (mut a, b) = Pipe::new()?;
        reactor.register(b, FailOnGarbage)?;
        // A length header far over the limit: an error for the handler.
        a.send_bytes(&[0xff; 1])?;
        let raw: OwnedFd = a.into();
        rustix::io::write(&raw, &[0xff, 0xff, 0xff, 0xff, 0xff])?;
        drop(raw);
        reactor.run()?;
        Ok(())
    };
    // Warm-up: the first rounds grow buffers (and the heap's mappings) once.
    for _ in 0..100 {
        round(&mut reactor)?;
    }
    let before = settled_census();
    for _ in 0..1000 {
        round(&mut reactor)?;
    }
    assert_eq!(reactor.len(), 0);
    check_census("1000 failed reactor connections", &before)?;
    let mut set: WaitSet<Connection> = WaitSet::new()?;
    let file = std::fs::File::open("/proc/self/status")?;
    let _ = set.insert(Connection::from(OwnedFd::from(file.try_clone()?)));
    let before = settled_census();
    for _ in 0..1000 {
        let conn = Connection::from(OwnedFd::from(file.try_clone()?));
        if set.insert(conn).is_ok() {
            fail!("epoll took a regular file");
        }
    }
    check_census("1000 refused WaitSet inserts", &before)?;
    Ok(())
}

/// After join, terminate, kill and drop: no zombie, no fd.
fn children_leave_nothing_behind() -> TestResult {
    let mut p = Process::fork(|| {});
    p.start()?;
    p.join()?;
    let before = settled_census();
    for i in 0..200 {
        let (mut keep, mut end) = Pipe::new()?;
        let mut p = Process::fork(move || {
            let _ = end.recv_bytes();
        });
        p.start()?;
        match i % 3 {
            0 => {
                // Not a drop: the forked child holds a copy of `keep` too.
                keep.send_bytes(b"exit")?;
                assert_eq!(p.join()?, 0);
            }
            1 => {
                p.terminate()?;
                assert_eq!(p.join()?, -15);
            }
            _ => {
                p.kill()?;
                assert_eq!(p.join()?, -9);
            }
        }
    }
    check_census("200 joined children", &before)?;
    // Dropped while running, then it exits: a zombie until the next start or
    // active_children (as in Python), which reaps it.
    let (mut keep, mut end) = Pipe::new()?;
    let mut p = Process::fork(move || {
        let _ = end.recv_bytes();
    });
    p.start()?;
    let pid = p.pid().ok_or("no pid")?;
    drop(p);
    keep.send_bytes(b"exit")?;
    drop(keep);
    // Wait for it to become a zombie (its state in /proc), then see it reaped.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !my_children().contains(&(pid, 'Z')) {
        if std::time::Instant::now() > deadline {
            fail!("the dropped child never exited");
        }
        std::thread::yield_now();
    }
    assert!(multiproc::active_children().is_empty());
    check_census("a dropped child after active_children", &before)?;
    Ok(())
}

/// RSS after a warm-up and after many more rounds: no growth without bound.
fn repeated_use_does_not_grow_memory() -> TestResult {
    fn measure(what: &str, rounds: usize, mut f: impl FnMut() -> TestResult) -> TestResult {
        for _ in 0..rounds / 5 {
            f()?;
        }
        let before = settled_census();
        let rss = rss_kb();
        for _ in 0..rounds {
            f()?;
        }
        let grown = rss_kb().saturating_sub(rss);
        eprintln!("{what}: {rounds} rounds, RSS +{grown} kB");
        check_census(what, &before)?;
        if grown > 1024 {
            fail!("{what}: RSS grew {grown} kB over {rounds} rounds");
        }
        Ok(())
    }
    let name = format!("@multiproc-hygiene-rss-{}", std::process::id());
    let mut l = Listener::bind(name.as_str(), None)?;
    measure("unix connect/accept", 5000, || {
        let mut c = Client::connect(name.as_str(), None)?;
        let mut s = l.accept()?;
        c.send_bytes(b"x")?;
        assert_eq!(s.recv_bytes()?, b"x");
        Ok(())
    })?;
    measure("queue create/put/get/drop", 5000, || {
        let q: Queue<u64> = Queue::new()?;
        q.put(&7)?;
        assert_eq!(q.get()?, 7);
        Ok(())
    })?;
    measure("fork start/join", 2000, || {
        let mut p = Process::fork(|| {});
        p.start()?;
        assert_eq!(p.join()?, 0);
        Ok(())
    })?;
    // Authenticated TCP needs a second thread for the client: last, after the forks.
    let mut tcp = Listener::bind("127.0.0.1:0", Some(b"k"))?;
    let addr = tcp.local_addr().clone();
    let (go, go_rx) = std::sync::mpsc::channel::<bool>();
    let (done, done_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || -> multiproc::Result<()> {
        while go_rx.recv().unwrap_or(false) {
            let mut c = Client::connect(&addr, Some(b"k"))?;
            c.send_bytes(b"x")?;
            drop(c);
            let _ = done.send(());
        }
        Ok(())
    });
    measure("tcp authenticated connect/accept", 3000, || {
        go.send(true)?;
        let mut s = tcp.accept()?;
        assert_eq!(s.recv_bytes()?, b"x");
        done_rx.recv()?;
        Ok(())
    })?;
    go.send(false)?;
    client.join().map_err(|_| "client panicked")??;
    Ok(())
}

/// Producers that die without letting go of their log (ended by `exit`, which drops no
/// handle, or killed): once their items are taken, their memory goes back when the next
/// producer starts, not after 127 of them.
fn dead_producers_give_their_queue_memory_back() -> TestResult {
    use std::os::unix::fs::MetadataExt;
    const ITEMS: usize = 32;
    let q: Queue<serde_bytes::ByteBuf> = Queue::new()?;
    let file = util::queue_file();
    let item = serde_bytes::ByteBuf::from(vec![7u8; 64_000]);
    let mut peak = 0;
    for i in 0..40 {
        let (mut ctl, mut child_ctl) = Pipe::new()?;
        let (producer, item) = (q.clone(), item.clone());
        let mut p = Process::fork(move || {
            for _ in 0..ITEMS {
                producer.put(&item).unwrap();
            }
            if i % 2 == 0 {
                std::process::exit(0);
            }
            child_ctl.send_bytes(b"put").unwrap();
            let _ = child_ctl.recv_bytes();
        });
        p.start()?;
        for _ in 0..ITEMS {
            q.get_timeout(util::CHILD_HANG)?;
        }
        if i % 2 == 0 {
            assert_eq!(p.join()?, 0);
        } else {
            assert_eq!(ctl.recv_bytes()?, b"put");
            p.kill()?;
            assert_eq!(p.join()?, -9);
        }
        peak = peak.max(file.metadata()?.blocks() * 512);
    }
    // One dead producer's 2 MiB may stay until the next starts; 40 of them held 60 to 75
    // MiB before.
    if peak > 8 << 20 {
        fail!("40 dead producers, each put 2 MiB that was taken: the queue held {peak} bytes");
    }
    Ok(())
}

/// A `ReactorHandle` kept after its reactor was dropped: the reactor's fds, the tasks it
/// never ran and whatever is posted from then on all go at once.
fn a_reactor_handle_outliving_its_reactor_keeps_nothing() -> TestResult {
    let before = settled_census();
    let reactor = Reactor::new()?;
    let handle = reactor.handle();
    let (mut peer, end) = Pipe::new()?;
    handle.post(move |_| drop(end));
    drop(reactor);
    if !peer.poll(Some(Duration::from_secs(1)))? {
        fail!("a task the dropped reactor never ran still holds its connection");
    }
    assert!(peer.recv_bytes().unwrap_err().is_eof());
    drop(peer);
    check_census("a dropped reactor, its handle kept", &before)?;
    for _ in 0..1000 {
        let (conn, _peer) = Pipe::new()?;
        handle.post(move |_| drop(conn));
    }
    check_census("1000 tasks posted to a dropped reactor", &before)?;
    Ok(())
}

/// Peers that stay connected after each was sent one large message: the server keeps no
/// send buffer of that size for each of them (encoding, queue of unsent frames).
fn idle_connections_keep_no_large_send_buffer() -> TestResult {
    struct Big;
    impl Handler for Big {
        fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
            // 4 MiB in a tuple: through the encoder (a lone byte string would skip it).
            ctx.send(&(1u8, serde_bytes::ByteBuf::from(vec![7u8; 4 << 20])))
                .unwrap();
        }
    }
    const PEERS: usize = 8;
    let (mut servers, mut clients) = (Vec::new(), Vec::new());
    for _ in 0..PEERS {
        let (server, client) = Pipe::new()?;
        servers.push(server);
        clients.push(client);
    }
    let (mut ctl, mut child_ctl) = Pipe::new()?;
    let mut child = util::child(move || {
        for c in &mut clients {
            c.send_bytes(b"go").unwrap();
            let (_, big): (u8, serde_bytes::ByteBuf) = c.recv().unwrap();
            assert_eq!(big.len(), 4 << 20);
        }
        child_ctl.send_bytes(b"done").unwrap();
        let _ = child_ctl.recv_bytes();
    })?;
    let mut reactor = Reactor::new()?;
    let rss = rss_kb();
    for server in servers {
        reactor.register(server, Big)?;
    }
    while !ctl.poll(Some(Duration::ZERO))? {
        reactor.run_once(Some(Duration::from_millis(100)))?;
    }
    assert_eq!(ctl.recv_bytes()?, b"done");
    let grown = rss_kb().saturating_sub(rss);
    ctl.send_bytes(b"bye")?;
    util::finish(&mut child)?;
    assert_eq!(reactor.len(), PEERS);
    // Each peer's buffers held its message (twice: encoded, then queued): RSS grew 68 MiB.
    if grown > 16 << 10 {
        fail!("{PEERS} idle peers, each sent 4 MiB once: RSS grew {grown} kB");
    }
    Ok(())
}

/// Page faults taken so far by the calling thread (`minflt`, field 10 of its `stat`).
fn thread_faults() -> u64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    // After the state (field 3), field 10 is the 7th.
    rest.split_whitespace()
        .nth(7)
        .and_then(|f| f.parse().ok())
        .unwrap_or(0)
}

/// Large typed values sent again and again, by a reactor's handler (encoded, then queued)
/// and by a blocking `send`: their buffers are reused, not faulted in afresh for each (a
/// page fault per 4 KiB, several times the cost of encoding the value, measured at 4 MiB
/// through a reactor and 40 MiB through `send`). Counted for this thread: the reader is
/// another process.
fn repeated_large_sends_reuse_their_buffers() -> TestResult {
    const ROUNDS: usize = 8;
    struct Big(Vec<u8>);
    impl Handler for Big {
        fn on_message(&mut self, ctx: &mut Context<'_>, _: &[u8]) {
            // In a tuple: through the encoder (a lone byte string would skip it).
            ctx.send(&(1u8, serde_bytes::Bytes::new(&self.0))).unwrap();
        }
    }
    let (server, mut client) = Pipe::new()?;
    let (mut blocking, mut reader) = Pipe::new()?;
    let mut child = util::child(move || {
        let mut buf = Vec::new();
        for _ in 0..=ROUNDS {
            client.send_bytes(b"go").unwrap();
            client.recv_bytes_into(&mut buf).unwrap();
        }
        drop(client);
        for _ in 0..=ROUNDS {
            reader.recv_bytes_into(&mut buf).unwrap();
        }
    })?;
    let mut reactor = Reactor::new()?;
    reactor.register(server, Big(vec![7u8; 4 << 20]))?;
    let f = thread_faults();
    // Until the child, done, closes its end.
    while reactor.len() == 1 {
        reactor.run_once(Some(util::CHILD_HANG))?;
    }
    let reactor_faults = thread_faults() - f;
    let big = (1u8, serde_bytes::ByteBuf::from(vec![7u8; 40 << 20]));
    blocking.send(&big)?;
    let f = thread_faults();
    for _ in 0..ROUNDS {
        blocking.send(&big)?;
    }
    let send_faults = thread_faults() - f;
    util::finish(&mut child)?;
    // A 4 MiB buffer faulted in afresh is 1024 faults, a 40 MiB one 10 240. The reactor's
    // first reply takes two (its encoding, its queue); the others took as many each.
    let fresh = 1024;
    if reactor_faults > 3 * fresh + ROUNDS as u64 * fresh / 4
        || send_faults > ROUNDS as u64 * fresh / 4
    {
        fail!(
            "page faults: {reactor_faults} for {} replies of 4 MiB, {send_faults} for {ROUNDS} \
             more blocking sends of 40 MiB",
            ROUNDS + 1
        );
    }
    Ok(())
}

/// A spawned child that replaces itself with another program (`exec`): its stdin and
/// stdout become the two pipes it was passed, and the program (a shell) says it runs, then
/// waits for a line.
fn exec_a_shell((input, output): (Connection, Connection)) {
    let input = OwnedFd::from(input);
    let output = OwnedFd::from(output);
    rustix::stdio::dup2_stdin(&input).unwrap();
    rustix::stdio::dup2_stdout(&output).unwrap();
    let err = std::os::unix::process::CommandExt::exec(
        std::process::Command::new("sh").args(["-c", "echo up; read line"]),
    );
    panic!("exec failed: {err}");
}

/// The child's exit sentinel fires when the child exits, not before: not when it runs
/// another program in its place (`exec`: the same process goes on), with pidfds or
/// without (the sentinel pipe's write end, held by the child, must survive its exec).
fn a_spawned_childs_sentinel_fires_at_its_exit_not_at_its_exec() -> TestResult {
    let (stdin_r, stdin_w) = Pipe::half_duplex()?;
    let (stdout_r, stdout_w) = Pipe::half_duplex()?;
    let mut p = Process::spawn(exec_a_shell, (stdin_r, stdout_w));
    p.set_daemon(true)?;
    p.start()?;
    let stdout_r = OwnedFd::from(stdout_r);
    let mut up = [0u8; 3];
    let mut got = 0;
    while got < up.len() {
        let n = rustix::io::read(&stdout_r, &mut up[got..])?;
        if n == 0 {
            fail!("the shell said nothing");
        }
        got += n;
    }
    assert_eq!(&up, b"up\n");
    // The shell runs (it said so) and waits for its line: the child has not exited.
    let sentinel = p.sentinel()?;
    let ready = multiproc::wait(&mut [sentinel], Some(Duration::ZERO))?;
    let early = !ready.is_empty();
    rustix::io::write(OwnedFd::from(stdin_w), b"go\n")?;
    let ready = multiproc::wait(&mut [p.sentinel()?], Some(Duration::from_secs(20)))?;
    assert_eq!(ready, [0], "the sentinel did not fire at exit");
    assert_eq!(p.join()?, 0);
    if early {
        fail!("the sentinel fired while the child ran (after its exec)");
    }
    Ok(())
}

/// The same without pidfds: this test binary runs that test again with pidfds off.
fn without_pidfds_a_spawned_childs_sentinel_fires_at_its_exit_not_at_its_exec() -> TestResult {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args([
            "a_spawned_childs_sentinel_fires_at_its_exit_not_at_its_exec",
            "--exact",
        ])
        .env("MULTIPROC_NO_PIDFD", "1")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("1 passed") {
        fail!("{}\n{}", text, String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

tests_main!(
    an_exec_inherits_no_fd_of_the_library,
    a_spawned_child_receives_only_what_was_passed,
    without_pidfds_a_spawned_childs_sentinel_pipe_reaches_no_exec,
    failing_connects_leak_nothing,
    timed_out_connects_leak_nothing,
    failing_binds_leak_nothing,
    a_bind_failing_half_way_removes_its_socket_file,
    failing_starts_leak_nothing,
    failing_queue_creation_leaks_nothing,
    reactor_and_waitset_errors_leak_nothing,
    children_leave_nothing_behind,
    repeated_use_does_not_grow_memory,
    dead_producers_give_their_queue_memory_back,
    a_reactor_handle_outliving_its_reactor_keeps_nothing,
    idle_connections_keep_no_large_send_buffer,
    repeated_large_sends_reuse_their_buffers,
    a_spawned_childs_sentinel_fires_at_its_exit_not_at_its_exec;
    // Fails, as documented on `Sentinel`: without pidfds, a spawned child holds the
    // sentinel pipe's write end close-on-exec, so an exec of its own fires the sentinel
    // early. Chosen over the other way (surviving exec, it reached every program the child
    // starts with std's `Command`, and one outliving the child kept the sentinel from ever
    // firing). Kept to show the cost; run it with `--ignored`.
    ignored: without_pidfds_a_spawned_childs_sentinel_fires_at_its_exit_not_at_its_exec,
);
