//! The Unix socket file a listener binds: telling a stale one (left by a listener that is
//! gone) from a live one, taking turns to replace it, and removing our own.

use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::net::{AddressFamily, SocketFlags, SocketType};

#[cfg(any(target_os = "linux", target_os = "android"))]
use crate::sys::unix_diag;

/// How long a bind of a socket file waits for its turn (see
/// `lock_directory_of`).
const DIRECTORY_LOCK_WAIT: Duration = Duration::from_millis(500);

/// How long a bind waits for the lock of a directory remembered as locked by someone else
/// (see `lock_directory_of`): long enough for another binder's turn (from its `bind(2)` to
/// its `listen(2)`), short next to [`DIRECTORY_LOCK_WAIT`].
const REMEMBERED_LOCK_WAIT: Duration = Duration::from_millis(50);

/// A socket file a listener made, removed when this is dropped if it is still that file
/// (same device and inode: someone may have removed it and made another there). Not
/// `Clone`: whoever holds it removes the file, at most once (the bind until the listener
/// exists, then the listener). The parent's copy of a listener handed to a forked child
/// [`leave`](Self::leave)s it instead.
pub(super) struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// The socket file just bound at `path`: from now on, dropping this removes it.
    pub(super) fn bound_at(path: &Path) -> std::io::Result<SocketFile> {
        let meta = std::fs::symlink_metadata(path)?;
        Ok(SocketFile {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// Lets go of the file without removing it: a forked child, handed the listener, is
    /// the one to remove it now.
    pub(super) fn leave(mut self) {
        // The path is all there is to free: taken out first, forgetting the rest leaks nothing.
        drop(std::mem::take(&mut self.path));
        std::mem::forget(self);
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if meta.dev() == self.dev && meta.ino() == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

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
    let Ok(absolute) = std::path::absolute(path) else {
        return false;
    };
    let Ok(table) = std::fs::read("/proc/net/unix") else {
        return false;
    };
    let name = absolute.as_os_str().as_bytes();
    table
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line_holds(line, name))
}

/// Whether one line of `/proc/net/unix` is a stream socket named `name` that listens, or
/// is bound and unconnected (about to listen). Only stream sockets: a datagram socket is
/// unconnected for good (St 01), and one named `name` whose file was replaced would hold
/// a stale listener's file for as long as it lives; a seqpacket listener likewise (and a
/// live one on the file is found by the probe, which it refuses with `EPROTOTYPE`).
///
/// The kernel prints names raw, newlines included, so a local user can bind an abstract
/// name that reads, after a newline, as a whole line listening on our path: the only effect
/// is the safe one (a stale file taken for a live one, `EADDRINUSE`), and only where the
/// socket diagnostics are refused.
///
/// `Num RefCount Protocol Flags Type St Inode Path`: columns set apart by one space, the
/// inode right-aligned in five (`"  136"`), the path the rest of the line after one space
/// (spaces in it kept), absent for an unbound socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn line_holds(mut line: &[u8], name: &[u8]) -> bool {
    /// `__SO_ACCEPTCON` in the Flags column: a listening socket.
    const ACCEPTING: u32 = 1 << 16;
    /// `SOCK_STREAM` in the Type column.
    const STREAM: &[u8] = b"0001";
    /// `SS_UNCONNECTED` in the St column.
    const UNCONNECTED: &[u8] = b"01";
    let mut fields: [&[u8]; 7] = [&[]; 7];
    for field in &mut fields {
        line = line.trim_ascii_start();
        let end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
        (*field, line) = line.split_at(end);
    }
    let [_, _, _, flags, kind, state, _] = fields;
    let Some(path) = line.strip_prefix(b" ") else {
        return false;
    };
    let accepting = std::str::from_utf8(flags)
        .ok()
        .and_then(|f| u32::from_str_radix(f, 16).ok())
        .is_some_and(|f| f & ACCEPTING != 0);
    let unconnected = state == UNCONNECTED;
    kind == STREAM && (accepting || unconnected) && path == name
}

/// An exclusive `flock` on the directory holding `path`, for as long as it is kept; `None`
/// if the directory cannot be opened, or stays locked for [`DIRECTORY_LOCK_WAIT`] (someone
/// else's lock, such as a single-instance lock on a run directory): then nothing is
/// serialised, rather than wait for it without end. A directory found locked that long is
/// remembered, and later binds there wait only [`REMEMBERED_LOCK_WAIT`] rather than the
/// whole time again (every bind there waited it, one after another); taking it forgets it.
/// Not zero: the lock may be free again and held for a moment by another binder there (of
/// this program or another), whose turn must still be waited for. Binds that tried once and
/// went on without it replaced one stale file together (one removing the file another had
/// just bound, or failing with `NotFound`).
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
            REMEMBERED_LOCK_WAIT
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

    /// A datagram socket named like the file (its own file removed, then a stream listener's
    /// made there, which died) does not hold the stream listener's file: under its name in
    /// `/proc/net/unix` it is unconnected for good (St 01), and the stale file was taken for
    /// a live one as long as the datagram socket lived.
    #[test]
    fn a_datagram_socket_of_the_same_name_does_not_hold_a_stale_file() {
        let path =
            std::env::temp_dir().join(format!("multiproc-dgram-name-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let dgram = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let held = listening_under_name(&path);
        std::fs::remove_file(&path).unwrap();
        drop(dgram);
        assert!(
            !held,
            "a datagram socket's name held a stale stream socket file"
        );
    }

    /// The columns of `/proc/net/unix` as the kernel writes them: a short inode is padded
    /// with spaces, a path may hold spaces, an unbound socket has none, an abstract name
    /// starts with `@`.
    #[test]
    fn proc_net_unix_lines_are_read_whatever_their_inode_and_path() {
        let listening = b"0000000083c1e4cf: 00000002 00000000 00010000 0001 01   136 /tmp/a b";
        assert!(line_holds(listening, b"/tmp/a b"));
        assert!(!line_holds(listening, b"/tmp/a"));
        let wide = b"0000000083c1e4cf: 00000002 00000000 00010000 0001 01 30221030 /tmp/x";
        assert!(line_holds(wide, b"/tmp/x"));
        let bound = b"0000000083c1e4cf: 00000002 00000000 00000000 0001 01    7 /tmp/x";
        assert!(line_holds(bound, b"/tmp/x"));
        let accepted = b"0000000083c1e4cf: 00000002 00000000 00000000 0001 03 30221030 /tmp/x";
        assert!(!line_holds(accepted, b"/tmp/x"));
        let dgram = b"0000000083c1e4cf: 00000002 00000000 00000000 0002 01 30221030 /tmp/x";
        assert!(!line_holds(dgram, b"/tmp/x"));
        let seqpacket = b"0000000083c1e4cf: 00000002 00000000 00010000 0005 01 30221030 /tmp/x";
        assert!(!line_holds(seqpacket, b"/tmp/x"));
        let unbound = b"0000000083c1e4cf: 00000002 00000000 00000000 0001 01 30221030";
        assert!(!line_holds(unbound, b"30221030"));
        let abstract_name =
            b"0000000083c1e4cf: 00000002 00000000 00010000 0001 01 30221030 @/tmp/x";
        assert!(!line_holds(abstract_name, b"/tmp/x"));
        assert!(!line_holds(b"", b"/tmp/x"));
    }

    /// A seqpacket socket listening at `path`.
    fn seqpacket_listener(path: &Path) -> OwnedFd {
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        rustix::net::bind(&socket, &rustix::net::SocketAddrUnix::new(path).unwrap()).unwrap();
        rustix::net::listen(&socket, 1).unwrap();
        socket
    }

    /// A seqpacket listener named like the file (its own file removed, then a stream
    /// listener's made there, which died) does not hold the stream listener's file: our
    /// stream probe would be refused by it anyway (`EPROTOTYPE`), so it never serves the
    /// file, and the stale file was taken for a live one as long as it listened.
    #[test]
    fn a_seqpacket_listener_of_the_same_name_does_not_hold_a_stale_file() {
        let path =
            std::env::temp_dir().join(format!("multiproc-seqpacket-name-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seqpacket = seqpacket_listener(&path);
        std::fs::remove_file(&path).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let held = listening_under_name(&path);
        std::fs::remove_file(&path).unwrap();
        drop(seqpacket);
        assert!(
            !held,
            "a seqpacket listener's name held a stale stream socket file"
        );
    }

    /// A live seqpacket listener on the file is still not stale: the stream probe is
    /// refused with `EPROTOTYPE`, not `ECONNREFUSED`.
    #[test]
    fn a_live_seqpacket_listener_is_not_stale() {
        let path =
            std::env::temp_dir().join(format!("multiproc-seqpacket-live-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let seqpacket = seqpacket_listener(&path);
        let stale = is_stale(&path);
        std::fs::remove_file(&path).unwrap();
        drop(seqpacket);
        assert!(!stale);
    }
}
