//! A `Listener` in a process that runs out of file descriptors. Each test lowers this
//! process's `RLIMIT_NOFILE`, so each runs in a forked process of its own (`tests_main!`),
//! never beside other tests in threads.

#[macro_use]
mod util;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use multiproc::{Address, ErrorKind, Listener};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use util::TestResult;

/// Only a hang reaches it.
const HANG: Duration = Duration::from_secs(20);

/// This process's CPU time so far (user and system), from `/proc/self/stat`, in clock
/// ticks (hundredths of a second on Linux).
fn cpu_ticks() -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat[stat.rfind(')').ok_or("stat")? + 2..]
        .split(' ')
        .collect();
    Ok(fields[11].parse::<u64>()? + fields[12].parse::<u64>()?)
}

/// With no fd left, a waiting client's connection stays readable on the listening socket;
/// the listener must then pause (not spin on it through its level-triggered epoll) and,
/// once fds are free again, wake a waiter and accept every client that waited.
fn out_of_fds_the_listener_pauses_without_spinning_and_loses_no_client() -> TestResult {
    const CLIENTS: usize = 8;
    let mut listener = Listener::bind("127.0.0.1:0", None)?;
    let Address::Tcp(addr) = listener.local_addr().clone() else {
        return Err("not TCP".into());
    };
    let addr: SocketAddr = addr;
    let clients: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(addr))
        .collect::<Result<_, _>>()?;
    let saved = getrlimit(Resource::Nofile);
    // A new fd takes the lowest free number, and the limit bounds numbers: at the first
    // free one, not one more fd can be had, and every accept fails with EMFILE.
    let open = util::open_fds();
    let first_free = (0..).find(|fd| !open.contains(fd)).ok_or("no free fd")? as u64;
    let before = cpu_ticks()?;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(first_free),
            maximum: saved.maximum,
        },
    )?;
    let waited = listener.accept_timeout(Duration::from_secs(1));
    setrlimit(Resource::Nofile, saved)?;
    let used = cpu_ticks()? - before;
    let err = waited
        .err()
        .ok_or("a connection accepted without a free fd")?;
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // A busy loop burns the whole second (100 ticks) if it gets the CPU, and still a good
    // share of it on a loaded machine; pausing 50 ms at a time costs a tick or two.
    assert!(
        used < 25,
        "the listener used {used} ticks of CPU in 1 s of waiting: it spun"
    );
    // Paused, the listener is still waitable: its resume timer wakes a waiter, which then
    // finds the clients that waited.
    assert_eq!(multiproc::wait(&mut [&mut listener], Some(HANG))?, [0]);
    let mut accepted = Vec::new();
    for _ in 0..CLIENTS {
        accepted.push(listener.accept_timeout(HANG)?);
    }
    assert_eq!(accepted.len(), clients.len());
    Ok(())
}

/// A Unix bind that runs out of fds after its socket file exists (for the epoll instance or
/// either timer) fails without leaving the file: no listener would own it, and the path
/// would hold a stale file. Each fd more fails one step later, until there are enough.
fn a_bind_out_of_fds_after_its_file_exists_leaves_no_file() -> TestResult {
    let path = std::env::temp_dir().join(format!("multiproc-fds-bind-{}", std::process::id()));
    let saved = getrlimit(Resource::Nofile);
    let open = util::open_fds();
    let first_free = (0..).find(|fd| !open.contains(fd)).ok_or("no free fd")? as u64;
    let mut failed = 0;
    for more in 1..=8 {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(first_free + more),
                maximum: saved.maximum,
            },
        )?;
        let bound = Listener::bind(path.as_path(), None);
        setrlimit(Resource::Nofile, saved)?;
        let left = path.exists();
        let _ = std::fs::remove_file(&path);
        match bound {
            Ok(listener) => {
                assert!(left, "a listener without its file");
                drop(listener);
                break;
            }
            Err(e) => {
                assert!(
                    !left,
                    "a bind that failed with {more} fds ({e}) left its file"
                );
                failed += 1;
            }
        }
    }
    // Out of fds at the epoll instance, the first timer, the second one.
    assert!(
        failed >= 3,
        "only {failed} binds failed: the limit did not bite"
    );
    Ok(())
}

tests_main!(
    out_of_fds_the_listener_pauses_without_spinning_and_loses_no_client,
    a_bind_out_of_fds_after_its_file_exists_leaves_no_file,
);
