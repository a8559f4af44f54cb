//! Sockets: the `AF_UNIX` stream pair behind a duplex `Pipe`.

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::{AddressFamily, SocketFlags, SocketType};

/// `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`. No `O_NONBLOCK`: that flag is shared by
/// every process holding the fd, so non-blocking calls use `MSG_DONTWAIT` per call instead.
/// [man7: socketpair.2]
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}
