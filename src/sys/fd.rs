//! File-descriptor I/O: reads into spare capacity, vectored writes, readiness, fd kinds.

use std::io::{self, IoSlice};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Once;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

use crate::connection::Connection;

/// What an fd is, decided once when a `Connection` adopts it: sockets are written with
/// `MSG_NOSIGNAL`, pipes with `writev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FdKind {
    Socket,
    Other,
}

/// What kind of file `fd` is and whether it was opened for reading and for writing.
/// [man7: fstat.2, fcntl.2]
pub(crate) fn describe(fd: BorrowedFd<'_>) -> io::Result<(FdKind, bool, bool)> {
    let stat = rustix::fs::fstat(fd)?;
    let kind = if rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Socket
    {
        FdKind::Socket
    } else {
        FdKind::Other
    };
    let mode = rustix::fs::fcntl_getfl(fd)? & rustix::fs::OFlags::RWMODE;
    let readable = mode != rustix::fs::OFlags::WRONLY;
    let writable = mode != rustix::fs::OFlags::RDONLY;
    Ok((kind, readable, writable))
}

/// `read(2)` appending at most `limit` bytes to `buf`'s spare capacity; returns how many
/// (0 at end of file). Retries `EINTR`, and blocks even on an fd the user made
/// non-blocking: on `EAGAIN` it waits for the fd to turn readable and reads again. On a
/// blocking socket `EAGAIN` is a receive timeout the user set (`SO_RCVTIMEO`) running out,
/// and is returned. [man7: read.2, socket.7]
pub(crate) fn read_into(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    loop {
        match read_once(fd, buf, limit) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && is_nonblocking(fd) => {
                wait_readable(fd, None)?;
            }
            res => return res,
        }
    }
}

/// Whether `fd` is in non-blocking mode (`O_NONBLOCK`), so that `EAGAIN` from it means
/// "not now" and is to be waited out by the blocking calls. On a blocking fd it means a
/// timeout the user set on the socket (`SO_RCVTIMEO`, `SO_SNDTIMEO`) ran out: that is
/// reported, not waited past. Asked only after an `EAGAIN`, so it costs nothing otherwise.
/// [man7: fcntl.2, socket.7]
fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fcntl_getfl(fd).is_ok_and(|flags| flags.contains(rustix::fs::OFlags::NONBLOCK))
}

/// One `read(2)` into `buf`'s spare capacity (at most `limit` bytes), retrying `EINTR`;
/// `EAGAIN` (an `O_NONBLOCK` fd with nothing to read) is returned as an error.
fn read_once(fd: BorrowedFd<'_>, buf: &mut Vec<u8>, limit: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let limit = limit.min(spare.len());
    let target = &mut spare[..limit];
    let n = loop {
        match rustix::io::read(fd, &mut *target) {
            Ok((init, _)) => break init.len(),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: `read` initialised the first `n` bytes of the spare capacity (rustix returns
    // exactly the initialised prefix), and `n <= limit <= spare capacity`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

/// One non-blocking read: `Ok(None)` if nothing is there now. Sockets use `MSG_DONTWAIT`;
/// other fds are polled with a zero timeout first, since `O_NONBLOCK` would be shared with
/// every process holding the fd. [man7: recv.2, poll.2]
pub(crate) fn try_read_into(
    fd: BorrowedFd<'_>,
    kind: FdKind,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<usize>> {
    if kind == FdKind::Other {
        if !poll_now(fd, PollFlags::IN)? {
            return Ok(None);
        }
        // Readable: one read returns what is there without blocking (unless another
        // reader of a shared, non-blocking fd took it first: then there is nothing).
        return match read_once(fd, buf, limit) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        };
    }
    let spare = buf.spare_capacity_mut();
    let limit = limit.min(spare.len());
    let target = &mut spare[..limit];
    let n = loop {
        match rustix::net::recv(fd, &mut *target, RecvFlags::DONTWAIT) {
            Ok(((init, _), _)) => break init.len(),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    };
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity (rustix returns
    // exactly the initialised prefix), and `n <= limit <= spare capacity`.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(Some(n))
}

/// Writes as much of `bufs` as the fd takes now, without blocking; returns the byte count
/// (0 when it takes nothing). Sockets use `MSG_DONTWAIT | MSG_NOSIGNAL`; for other fds
/// (pipes) a zero-timeout poll for POLLOUT, then at most `PIPE_BUF` bytes, which a pipe
/// with room accepts without blocking. [man7: sendmsg.2, pipe.7]
pub(crate) fn try_write(
    fd: BorrowedFd<'_>,
    kind: FdKind,
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    loop {
        let res = match kind {
            FdKind::Socket => rustix::net::sendmsg(
                fd,
                bufs,
                &mut Default::default(),
                SendFlags::NOSIGNAL | SendFlags::DONTWAIT,
            ),
            FdKind::Other => {
                if !poll_now(fd, PollFlags::OUT)? {
                    return Ok(0);
                }
                let mut budget = PIPE_BUF;
                let mut limited = Vec::with_capacity(bufs.len());
                for b in bufs {
                    if budget == 0 {
                        break;
                    }
                    let n = b.len().min(budget);
                    limited.push(IoSlice::new(&b[..n]));
                    budget -= n;
                }
                rustix::io::writev(fd, &limited)
            }
        };
        match res {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Bytes a pipe write of at most this size is atomic and, with room in the pipe, does not
/// block (POSIX guarantees at least 512; Linux has 4096). [man7: pipe.7]
const PIPE_BUF: usize = 4096;

/// Whether `fd` is ready for `flags` right now (zero-timeout poll). Hang-up and error count
/// as ready: the following call reports them.
pub(crate) fn poll_now(fd: BorrowedFd<'_>, flags: PollFlags) -> io::Result<bool> {
    Ok(poll_until(
        &mut [PollFd::from_borrowed_fd(fd, flags)],
        Some(Instant::now()),
    )? > 0)
}

/// Whether `fd` reports an error or hang-up right now (a zero-timeout poll for no event, so
/// only those count): for a pipe's write end, that its reader is gone. A failing poll counts
/// as gone.
pub(crate) fn hung_up(fd: BorrowedFd<'_>) -> bool {
    poll_now(fd, PollFlags::empty()).unwrap_or(true)
}

/// Writes all of `bufs`, retrying short writes and `EINTR`, and waiting out `EAGAIN` (an fd
/// the user made non-blocking; on a blocking socket it is a send timeout the user set, and
/// is returned, with part of the frame possibly written). Sockets use `sendmsg` with
/// `MSG_NOSIGNAL`, so a dead peer is `EPIPE` and never a signal; for pipes see
/// [`ignore_sigpipe_once`].
/// [man7: sendmsg.2, writev.2]
pub(crate) fn write_all(
    fd: BorrowedFd<'_>,
    kind: FdKind,
    mut bufs: &mut [IoSlice<'_>],
) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let res = match kind {
            FdKind::Socket => {
                rustix::net::sendmsg(fd, bufs, &mut Default::default(), SendFlags::NOSIGNAL)
            }
            FdKind::Other => rustix::io::writev(fd, bufs),
        };
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(Errno::INTR) => continue,
            // An fd the user made non-blocking: wait for room rather than leave half a
            // frame on the stream. (On a blocking socket, a send timeout the user set ran
            // out: reported, as the user asked.)
            Err(Errno::AGAIN) if is_nonblocking(fd) => wait_writable(fd)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes all of `buf`: `send(2)` with `MSG_NOSIGNAL` for sockets, `write(2)` otherwise,
/// retrying short writes and `EINTR` and waiting out `EAGAIN`. One buffer, so no msghdr or
/// iovec for the kernel to copy in. [man7: send.2, write.2]
pub(crate) fn write_all_contiguous(
    fd: BorrowedFd<'_>,
    kind: FdKind,
    mut buf: &[u8],
) -> io::Result<()> {
    while !buf.is_empty() {
        let res = match kind {
            FdKind::Socket => rustix::net::send(fd, buf, SendFlags::NOSIGNAL),
            FdKind::Other => rustix::io::write(fd, buf),
        };
        match res {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(Errno::INTR) => continue,
            Err(Errno::AGAIN) if is_nonblocking(fd) => wait_writable(fd)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Makes writes to a pipe whose reader is gone return `EPIPE` instead of killing the
/// process: if SIGPIPE still has its default disposition, set it to ignored, once. Rust's
/// runtime and CPython both do this at startup, so in their processes this changes nothing;
/// a handler the program installed is left alone. [man7: sigaction.2, pipe.7]
pub(crate) fn ignore_sigpipe_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed `sigaction` is a valid value for the kernel to overwrite; passing a
        // null new action only queries the current one.
        let mut current: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: valid signal number, null `act`, valid pointer to `oldact`.
        let rc = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut current) };
        if rc == 0 && current.sa_sigaction == libc::SIG_DFL {
            // SAFETY: installing SIG_IGN for SIGPIPE runs no code of ours in signal context.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        }
    });
}

/// Waits until `fd` is readable or hung up, or until `deadline` (`None`: forever). Returns
/// whether it became ready. [man7: poll.2]
pub(crate) fn wait_readable(fd: BorrowedFd<'_>, deadline: Option<Instant>) -> io::Result<bool> {
    Ok(poll_until(&mut [PollFd::from_borrowed_fd(fd, PollFlags::IN)], deadline)? > 0)
}

/// Waits, as long as it takes, until `fd` is writable (or in error, which the next write
/// reports). For blocking writes to an fd the user made non-blocking. [man7: poll.2]
fn wait_writable(fd: BorrowedFd<'_>) -> io::Result<()> {
    poll_until(&mut [PollFd::from_borrowed_fd(fd, PollFlags::OUT)], None).map(drop)
}

/// `poll(2)` until `deadline` (`None`: forever); returns how many fds have events. Retries
/// `EINTR` without stretching the deadline. [man7: poll.2]
pub(crate) fn poll_until(fds: &mut [PollFd<'_>], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout =
            deadline.map(|d| super::timespec(d.saturating_duration_since(Instant::now())));
        match rustix::event::poll(fds, timeout.as_ref()) {
            Ok(n) => return Ok(n),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

impl FromRawFd for Connection {
    /// Adopts `fd` (Python: `Connection(handle)`); see `From<OwnedFd> for Connection` for
    /// what is detected. Panics if `fd` is -1 (as `OwnedFd::from_raw_fd` does); any other
    /// number that is not open is not detected: the connection says it is readable and
    /// writable, and its calls fail with `Io` (`EBADF`) until another file takes that
    /// number.
    ///
    /// # Safety
    /// `fd` must be an open file descriptor that nothing else owns or will close.
    unsafe fn from_raw_fd(fd: RawFd) -> Connection {
        // SAFETY: the caller hands over sole ownership of an open fd.
        Connection::from(unsafe { OwnedFd::from_raw_fd(fd) })
    }
}

/// `pipe2(O_CLOEXEC)`: `(read end, write end)`. [man7: pipe.2]
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Reads the first bytes of `raw`, an fd this process inherited at `exec` and does not own
/// yet, with `pread` at offset 0 (no state of the fd changes). `None` if `raw` is not open
/// or cannot be read that way. [man7: pread.2]
pub(crate) fn peek_inherited(raw: RawFd, buf: &mut [u8]) -> Option<usize> {
    if raw < 0 {
        return None;
    }
    // SAFETY: `fcntl(F_GETFD)` on any integer is sound; it only tells whether it is open.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: `raw` was just checked to be open, and the borrow lives only for this call;
    // `pread` at an explicit offset neither moves the file offset nor changes any flag, so
    // whoever owns the fd (if anyone) observes nothing.
    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
    rustix::io::pread(fd, buf, 0).ok()
}

/// Takes ownership of `raw`, an fd this process inherited at `exec` and that no code in it
/// has claimed. `None` if `raw` is not open.
///
/// Callers pass only numbers named by the payload their parent wrote for them (checked by a
/// token first), which were open before this process image started.
pub(crate) fn adopt_inherited(raw: RawFd) -> Option<OwnedFd> {
    if raw < 0 {
        return None;
    }
    // SAFETY: `fcntl(F_GETFD)` on any integer is sound.
    if unsafe { libc::fcntl(raw, libc::F_GETFD) } == -1 {
        return None;
    }
    // SAFETY: `raw` is open, and by the caller's contract it was inherited for us and nothing
    // else in this process owns it, so the new `OwnedFd` is its only owner.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // Inherited fds arrive without close-on-exec; ours are always close-on-exec.
    let _ = rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::CLOEXEC);
    Some(fd)
}
