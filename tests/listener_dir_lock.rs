//! Binds of Unix socket paths take turns on their directory's `flock` (from before
//! `bind(2)` to after `listen(2)`): what happens where that lock cannot be had (someone
//! else holds it, or the directory cannot be opened for reading), and what it costs.

use std::error::Error as StdError;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Client, Listener};

type TestResult = Result<(), Box<dyn StdError>>;

/// A fresh directory under the temp dir, removed with what is in it on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> std::io::Result<TempDir> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "multiproc-dirlock-{}-{}-{tag}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&path)?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Another program's exclusive `flock` on `dir` (a lock of its own open file description,
/// as `flock(1)` or a single-instance lock on a run directory takes), held until dropped.
fn foreign_lock(dir: &Path) -> std::io::Result<OwnedFd> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )?;
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
    Ok(fd)
}

/// A stream socket bound to `path` that does not listen (yet): another binder caught
/// between its `bind(2)` and its `listen(2)`.
fn bound_not_listening(path: &Path) -> std::io::Result<OwnedFd> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let socket = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&socket, &rustix::net::SocketAddrUnix::new(path)?)?;
    Ok(socket)
}

/// A directory another program keeps locked (`flock(1) /run/app long-command`, a
/// single-instance lock): every bind there used to wait out the whole 500 ms for the lock,
/// one after another. The first bind may wait; the ones after it must not.
#[test]
fn binds_under_a_directory_locked_by_someone_else_do_not_each_wait() -> TestResult {
    const BINDS: usize = 6;
    let dir = TempDir::new("held")?;
    let _held = foreign_lock(&dir.0)?;
    let mut waits = Vec::new();
    let mut listeners = Vec::new();
    for i in 0..BINDS {
        let started = Instant::now();
        listeners.push(Listener::bind(
            dir.0.join(format!("{i}.sock")).as_path(),
            None,
        )?);
        waits.push(started.elapsed());
    }
    // Generous: six binds that each waited 500 ms take three seconds.
    let total: Duration = waits.iter().sum();
    assert!(
        total < Duration::from_millis(1500),
        "{BINDS} binds took {total:?} in all: {waits:?}"
    );
    // And they work.
    for (i, _) in listeners.iter().enumerate() {
        Client::connect(dir.0.join(format!("{i}.sock")).as_path(), None)?;
    }
    Ok(())
}

/// Where the directory lock cannot be had (someone else holds it past the wait, as above),
/// a bind must still not take the path from another binder caught between its `bind(2)`
/// and its `listen(2)`: its file looks stale then (a connection is refused), but a socket
/// is bound to it. Taking it made both binds succeed, the other one unreachable.
#[test]
fn a_socket_bound_but_not_listening_is_not_replaced_under_a_locked_directory() -> TestResult {
    let dir = TempDir::new("window")?;
    let path = dir.0.join("s.sock");
    let _held = foreign_lock(&dir.0)?;
    let _other = bound_not_listening(&path)?;
    match Listener::bind(path.as_path(), None) {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e:?}"),
        Ok(_) => panic!("took the path of a socket bound there, between its bind and listen"),
    }
    Ok(())
}

/// The same in a directory the user may write and search but not read (mode 0333, and
/// 0311 for the owner): it cannot be opened to lock it at all. Run as a user other than
/// root (root reads every directory): as `nobody` in a child when this runs as root.
#[test]
fn a_socket_bound_but_not_listening_is_not_replaced_in_an_unreadable_directory() -> TestResult {
    const CHILD: &str = "MULTIPROC_TEST_UNREADABLE_DIR";
    if let Some(dir) = std::env::var_os(CHILD) {
        return bind_beside_a_socket_in_its_window(Path::new(&dir));
    }
    let dir = TempDir::new("unreadable")?;
    if rustix::process::getuid().is_root() {
        use std::os::unix::process::CommandExt;
        const NOBODY: u32 = 65534;
        std::os::unix::fs::chown(&dir.0, Some(NOBODY), Some(NOBODY))?;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o333))?;
        let out = std::process::Command::new(std::env::current_exe()?)
            .args([
                "a_socket_bound_but_not_listening_is_not_replaced_in_an_unreadable_directory",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, &dir.0)
            .uid(NOBODY)
            .gid(NOBODY)
            .output();
        let out = match out {
            Ok(out) => out,
            // This binary sits where `nobody` may not go (under /root, say).
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                eprintln!("SKIPPED: cannot run this test binary as nobody: {e}");
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let text = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !text.contains("1 passed") {
            return Err(format!("{text}\n{}", String::from_utf8_lossy(&out.stderr)).into());
        }
        return Ok(());
    }
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o311))?;
    bind_beside_a_socket_in_its_window(&dir.0)
}

fn bind_beside_a_socket_in_its_window(dir: &Path) -> TestResult {
    assert!(
        std::fs::read_dir(dir).is_err(),
        "{} can be read here",
        dir.display()
    );
    let path = dir.join("s.sock");
    let other = bound_not_listening(&path)?;
    let result = Listener::bind(path.as_path(), None);
    let _ = std::fs::remove_file(&path);
    drop(other);
    match result {
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e:?}"),
        Ok(_) => panic!("took the path of a socket bound there, between its bind and listen"),
    }
    Ok(())
}

/// Displayed addresses read back (`to_string`, then `parse`): IPv6 with a zone id,
/// abstract names with `@`, `:` and NUL in them, and relative paths that read as another
/// kind, which read back as the same file.
#[test]
fn displayed_addresses_read_back() -> TestResult {
    use multiproc::Address;
    use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
    let scoped = SocketAddr::V6(SocketAddrV6::new(
        "fe80::1".parse::<Ipv6Addr>()?,
        6000,
        0,
        2,
    ));
    for address in [
        Address::Tcp(scoped),
        Address::Tcp("[::1]:9".parse()?),
        Address::Tcp("127.0.0.1:9".parse()?),
        Address::Abstract(b"@a:80".to_vec()),
        Address::Abstract(b"x\0y/z".to_vec()),
        Address::Abstract(Vec::new()),
        Address::Unix("/tmp/@x:80".into()),
        Address::Unix("a:b".into()),
    ] {
        let shown = address.to_string();
        let back: Address = shown.parse().map_err(|e| format!("{shown:?}: {e}"))?;
        assert_eq!(back, address, "{shown:?}");
    }
    for (path, shown) in [
        ("@x", "./@x"),
        ("localhost:6000", "./localhost:6000"),
        (":6000", "./:6000"),
        ("[::1]:9", "./[::1]:9"),
        ("fe80::1%eth0", "./fe80::1%eth0"),
    ] {
        let address = Address::Unix(path.into());
        assert_eq!(address.to_string(), shown);
        assert_eq!(shown.parse::<Address>()?, Address::Unix(shown.into()));
    }
    Ok(())
}

/// Bind and connect errors name the address and keep their kind and OS error.
#[test]
fn errors_that_name_the_address_keep_kind_and_os_error() -> TestResult {
    use multiproc::ErrorKind;
    let dir = TempDir::new("errors")?;
    let missing = dir.0.join("none.sock");
    let err = Client::connect(missing.as_path(), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT), "{err:?}");
    assert!(
        err.to_string().contains(&*missing.to_string_lossy()),
        "{err}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let err = Client::connect(format!("localhost:{port}").as_str(), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{err:?}");
    assert!(
        matches!(
            err.raw_os_error(),
            Some(libc::ECONNREFUSED | libc::EADDRNOTAVAIL)
        ),
        "{err:?}"
    );
    eprintln!("{err}");
    let _first = Listener::bind(missing.as_path(), None)?;
    let err = Listener::bind(missing.as_path(), None).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EADDRINUSE), "{err:?}");
    assert!(err.to_string().starts_with("cannot listen at "), "{err}");
    Ok(())
}

/// A directory remembered as locked by someone else (a lock held past the wait, then
/// released) must still serialise this program's own binds there. The memory made the
/// next binds try the lock once and, finding it taken by one of them, go on without it:
/// several binders over one stale file then replaced it together, so that more than one
/// bind succeeded (all but one unreachable, their files removed by the others) or one
/// failed with `NotFound` (the file it judged stale removed under it).
#[test]
fn binds_over_a_stale_file_take_turns_in_a_directory_once_locked_by_someone_else() -> TestResult {
    const ROUNDS: usize = 48;
    const BINDERS: usize = 4;
    let dirs = (0..ROUNDS)
        .map(|_| TempDir::new("remembered"))
        .collect::<std::io::Result<Vec<_>>>()?;
    // Each directory held by "someone else" past the wait once: remembered. All at once,
    // so that the waits overlap.
    let held = dirs
        .iter()
        .map(|d| foreign_lock(&d.0))
        .collect::<std::io::Result<Vec<_>>>()?;
    std::thread::scope(|s| -> TestResult {
        let warms: Vec<_> = dirs
            .iter()
            .map(|d| s.spawn(move || Listener::bind(d.0.join("warm.sock").as_path(), None)))
            .collect();
        for w in warms {
            drop(w.join().unwrap()?);
        }
        Ok(())
    })?;
    drop(held);
    let mut failures = Vec::new();
    for dir in &dirs {
        let path = dir.0.join("s.sock");
        // A stale file: its listener gone.
        drop(std::os::unix::net::UnixListener::bind(&path)?);
        let start = std::sync::Barrier::new(BINDERS);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..BINDERS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        Listener::bind(path.as_path(), None)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let won = results.iter().filter(|r| r.is_ok()).count();
        let others: Vec<_> = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .filter(|e| e.raw_os_error() != Some(libc::EADDRINUSE))
            .map(|e| e.to_string())
            .collect();
        if won != 1 || !others.is_empty() {
            failures.push(format!("{won} binds succeeded; other errors: {others:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    Ok(())
}
