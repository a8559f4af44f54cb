//! The Unix socket file a listener binds: telling a stale one (left by a listener that is
//! gone) from a live one, and taking turns to replace it.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::sys::unix_diag;

/// How long a bind of a socket file waits for its turn (see
/// `lock_directory_of`).
const DIRECTORY_LOCK_WAIT: Duration = Duration::from_millis(500);

/// Whether `path` is a socket file of ours that nothing listens on any more.
///
/// A socket of this network namespace listening on the file is found without touching it:
/// by the file's device and inode in the kernel's socket diagnostics, or, where those are
/// not to be had, by the file's name in `/proc/net/unix` (which a socket keeps after its
/// file is removed and another made there: then a stale file is taken for a live one).
/// Otherwise a connection attempt decides, without waiting: refused means stale; anything
/// else (accepted, or a full backlog: `EAGAIN`) means alive. Only a listener elsewhere
/// (another network namespace) ever sees that attempt.
pub(super) fn is_stale(path: &Path) -> bool {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.file_type().is_socket() || meta.uid() != rustix::process::getuid().as_raw() {
        return false;
    }
    if listening_on(path, &meta) {
        return false;
    }
    let Ok(unix) = rustix::net::SocketAddrUnix::new(path) else {
        return false;
    };
    let Ok(probe) = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        None,
    ) else {
        return false;
    };
    rustix::net::connect(&probe, &unix) == Err(rustix::io::Errno::CONNREFUSED)
}

/// Whether a socket of this network namespace is known to listen on the socket file at
/// `path` (whose metadata is `meta`).
#[cfg(any(target_os = "linux", target_os = "android"))]
fn listening_on(path: &Path, meta: &std::fs::Metadata) -> bool {
    let file = unix_diag::FileId {
        major: rustix::fs::major(meta.dev()),
        minor: rustix::fs::minor(meta.dev()),
        ino: meta.ino(),
    };
    unix_diag::listening_on(file).unwrap_or_else(|_| listening_under_name(path))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn listening_on(_: &Path, _: &std::fs::Metadata) -> bool {
    false
}

/// Whether `/proc/net/unix` lists a socket listening at `path`, or bound there and not
/// listening yet (unconnected, `St` 01; an accepted connection, which shows its listener's
/// name, is connected, 03). The table shows the name
/// each socket was bound with, so only absolute names are compared (with `path` made
/// absolute): a relative one may name a file in any directory.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn listening_under_name(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    /// `__SO_ACCEPTCON` in the Flags column: a listening socket.
    const ACCEPTING: u32 = 1 << 16;
    /// `SS_UNCONNECTED` in the St column.
    const UNCONNECTED: &[u8] = b"01";
    let Ok(absolute) = std::path::absolute(path) else {
        return false;
    };
    let Ok(table) = std::fs::read("/proc/net/unix") else {
        return false;
    };
    let name = absolute.as_os_str().as_bytes();
    table.split(|&b| b == b'\n').skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path: the path is the rest.
        let mut fields = line.splitn(8, |&b| b == b' ').filter(|f| !f.is_empty());
        let flags = fields.nth(3).and_then(|f| std::str::from_utf8(f).ok());
        let accepting = flags
            .and_then(|f| u32::from_str_radix(f, 16).ok())
            .is_some_and(|f| f & ACCEPTING != 0);
        let unconnected = fields.nth(1) == Some(UNCONNECTED);
        (accepting || unconnected) && fields.last() == Some(name)
    })
}

/// An exclusive `flock` on the directory holding `path`, for as long as it is kept; `None`
/// if the directory cannot be opened, or stays locked for [`DIRECTORY_LOCK_WAIT`] (someone
/// else's lock, such as a single-instance lock on a run directory): then nothing is
/// serialised, rather than wait for it without end. A directory found locked that long is
/// remembered, and later binds there try its lock once rather than wait again (every bind
/// there waited the whole time, one after another); taking it forgets it.
pub(super) fn lock_directory_of(path: &Path) -> Option<OwnedFd> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .ok()?;
    let id = rustix::fs::fstat(&fd).ok().map(|st| (st.st_dev, st.st_ino));
    let held_before = id.is_some_and(|id| held_elsewhere().contains(&id));
    let give_up = Instant::now()
        + if held_before {
            Duration::ZERO
        } else {
            DIRECTORY_LOCK_WAIT
        };
    let mut pause = Duration::from_micros(100);
    loop {
        match rustix::fs::flock(&fd, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                if held_before {
                    held_elsewhere().retain(|&known| Some(known) != id);
                }
                return Some(fd);
            }
            Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR)
                if Instant::now() < give_up =>
            {
                // Binders hold it for microseconds: a short pause, growing, until then.
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                if let Some(id) = id.filter(|_| !held_before) {
                    let mut held = held_elsewhere();
                    if !held.contains(&id) {
                        // Bounded: the oldest is forgotten (and waited for once more).
                        if held.len() == HELD_DIRECTORIES {
                            held.remove(0);
                        }
                        held.push(id);
                    }
                }
                return None;
            }
            Err(_) => return None,
        }
    }
}

/// How many directories found locked by someone else are remembered.
const HELD_DIRECTORIES: usize = 64;

/// Directories (device, inode) whose lock was held past [`DIRECTORY_LOCK_WAIT`].
fn held_elsewhere() -> std::sync::MutexGuard<'static, Vec<(u64, u64)>> {
    static HELD: std::sync::Mutex<Vec<(u64, u64)>> = std::sync::Mutex::new(Vec::new());
    HELD.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod tests {
    use super::*;

    /// The fallback where socket diagnostics are refused: the name in `/proc/net/unix`.
    #[test]
    fn the_name_fallback_sees_a_listener_by_its_absolute_name_only_while_it_listens() {
        let path = std::env::temp_dir().join(format!("multiproc-name-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(listening_under_name(&path));
        drop(listener);
        assert!(!listening_under_name(&path));
        std::fs::remove_file(&path).unwrap();
    }

    /// A socket bound to the file and not listening yet (a binder between `bind(2)` and
    /// `listen(2)`) holds it too, in both ways of asking; once closed, it is stale.
    #[test]
    fn a_socket_bound_and_not_yet_listening_holds_its_file() {
        let path = std::env::temp_dir().join(format!("multiproc-bound-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&socket, &rustix::net::SocketAddrUnix::new(&path).unwrap()).unwrap();
        assert!(listening_under_name(&path));
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(listening_on(&path, &meta));
        assert!(!is_stale(&path));
        drop(socket);
        assert!(!listening_under_name(&path));
        assert!(is_stale(&path));
        std::fs::remove_file(&path).unwrap();
    }
}
