//! Which Unix socket files have a socket listening on them (or bound to them and not yet
//! listening), asked of the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`, `unix_diag`):
//! each listening or unconnected socket of this network
//! namespace with the device and inode of the file it was bound to.
//!
//! `/proc/net/unix` shows only the *name* a socket was bound with, which stays the same when
//! its file is removed and another made there; the inode tells the file itself.
//! [man7: sock_diag.7]

use std::io;

use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

/// `SOCK_DIAG_BY_FAMILY`: the request type of every `sock_diag` family.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `NLM_F_REQUEST | NLM_F_DUMP`.
const DUMP_REQUEST: u16 = 0x1 | 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
/// `TCP_LISTEN`, the state `unix_diag` reports listening sockets in.
const TCP_LISTEN: u32 = 10;
/// `TCP_CLOSE`, the state of a socket bound to a file and not listening (yet): a binder
/// between its `bind(2)` and its `listen(2)`. Accepted connections, which carry their
/// listener's file too, are `TCP_ESTABLISHED`, and not asked for.
const TCP_CLOSE: u32 = 7;
/// `UDIAG_SHOW_VFS`: ask for each socket's file.
const UDIAG_SHOW_VFS: u32 = 0x2;
/// The attribute carrying `struct unix_diag_vfs { u32 ino; u32 dev; }`.
const UNIX_DIAG_VFS: u16 = 1;
const NLMSG_HEADER: usize = 16;
/// `struct unix_diag_msg`.
const DIAG_MSG: usize = 16;
/// Ample for one datagram of a dump (the kernel fills at most 32 KiB).
const RECV_BUFFER: usize = 64 * 1024;

/// A socket file as the kernel names it: its filesystem's device (major, minor) and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    pub(crate) major: u32,
    pub(crate) minor: u32,
    pub(crate) ino: u64,
}

impl FileId {
    /// Whether the kernel's `self` names the file `file` (from `stat`): `unix_diag_vfs`
    /// carries only the low 32 bits of the inode number, which on filesystems with 64-bit
    /// inode numbers (btrfs, XFS, tmpfs with `inode64`) are not all of it.
    fn is(self, file: FileId) -> bool {
        self.major == file.major && self.minor == file.minor && self.ino == file.ino & 0xffff_ffff
    }
}

/// Whether a socket of this network namespace listens on the file `file`, or is bound to it
/// without listening or being connected (about to listen: its file is not stale, though a
/// connection to it is refused). `Err` when the
/// kernel cannot tell (no `unix_diag`, netlink refused by a sandbox, a reply that does not
/// parse): the caller falls back to another way.
pub(crate) fn listening_on(file: FileId) -> io::Result<bool> {
    let socket = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    rustix::net::sendto(
        &socket,
        &dump_request(),
        SendFlags::empty(),
        &SocketAddrNetlink::new(0, 0),
    )?;
    let mut buffer = vec![0u8; RECV_BUFFER];
    let mut found = false;
    loop {
        let (got, whole) = loop {
            match rustix::net::recv(&socket, &mut buffer[..], RecvFlags::TRUNC) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other?,
            }
        };
        if whole > got {
            return Err(bad_reply("a datagram longer than the buffer"));
        }
        match scan_datagram(&buffer[..got], file)? {
            Scan::More { listening } => found |= listening,
            Scan::Done { listening } => return Ok(found || listening),
        }
    }
}

/// The dump request: every listening or unconnected `AF_UNIX` socket, with its file.
fn dump_request() -> [u8; 40] {
    let mut request = [0u8; 40];
    request[0..4].copy_from_slice(&40u32.to_ne_bytes());
    request[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request[6..8].copy_from_slice(&DUMP_REQUEST.to_ne_bytes());
    // Sequence number and port 0: one request on a socket of its own.
    // struct unix_diag_req: family, protocol, padding, states, ino, show, cookie.
    request[16] = AddressFamily::UNIX.as_raw() as u8;
    request[20..24].copy_from_slice(&((1u32 << TCP_LISTEN) | (1u32 << TCP_CLOSE)).to_ne_bytes());
    request[28..32].copy_from_slice(&UDIAG_SHOW_VFS.to_ne_bytes());
    request
}

/// What one datagram of the reply said.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// The dump goes on in the next datagram.
    More { listening: bool },
    /// The dump ended (`NLMSG_DONE`) in this one.
    Done { listening: bool },
}

/// Reads the netlink messages of one datagram: whether one of them is a socket on `file`.
fn scan_datagram(mut datagram: &[u8], file: FileId) -> io::Result<Scan> {
    let mut listening = false;
    while datagram.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes(datagram[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().expect("2 bytes"));
        if len < NLMSG_HEADER || len > datagram.len() {
            return Err(bad_reply("a message length outside its datagram"));
        }
        match kind {
            NLMSG_DONE => return Ok(Scan::Done { listening }),
            NLMSG_ERROR => {
                // struct nlmsgerr: a negative errno, then the request's header.
                let errno = datagram
                    .get(NLMSG_HEADER..NLMSG_HEADER + 4)
                    .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                    .ok_or_else(|| bad_reply("an error message cut short"))?;
                return Err(io::Error::from_raw_os_error(errno.unsigned_abs() as i32));
            }
            SOCK_DIAG_BY_FAMILY => {
                listening |= socket_on(&datagram[NLMSG_HEADER..len]).is_some_and(|on| on.is(file));
            }
            _ => {}
        }
        datagram = datagram.get(align4(len)..).unwrap_or(&[]);
    }
    Ok(Scan::More { listening })
}

/// The file of the socket described by `message` (a `unix_diag_msg` and its attributes),
/// if it has one.
fn socket_on(message: &[u8]) -> Option<FileId> {
    let mut attributes = message.get(DIAG_MSG..)?;
    while attributes.len() >= 4 {
        let len = u16::from_ne_bytes(attributes[0..2].try_into().expect("2 bytes")) as usize;
        let kind = u16::from_ne_bytes(attributes[2..4].try_into().expect("2 bytes"));
        if len < 4 || len > attributes.len() {
            return None;
        }
        if kind == UNIX_DIAG_VFS && len >= 12 {
            let ino = u32::from_ne_bytes(attributes[4..8].try_into().expect("4 bytes"));
            let dev = u32::from_ne_bytes(attributes[8..12].try_into().expect("4 bytes"));
            // The kernel's own device number: major in the top 12 bits, minor below.
            return Some(FileId {
                major: dev >> 20,
                minor: dev & 0xf_ffff,
                ino: u64::from(ino),
            });
        }
        attributes = attributes.get(align4(len)..).unwrap_or(&[]);
    }
    None
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn bad_reply(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("sock_diag reply: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn id_of(path: &std::path::Path) -> FileId {
        let meta = std::fs::metadata(path).unwrap();
        FileId {
            major: rustix::fs::major(meta.dev()),
            minor: rustix::fs::minor(meta.dev()),
            ino: meta.ino(),
        }
    }

    #[test]
    fn a_listening_socket_is_found_by_its_file_and_only_while_it_listens() {
        let dir = std::env::temp_dir().join(format!("multiproc-diag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let file = id_of(&path);
        match listening_on(file) {
            Ok(found) => assert!(found, "the listening socket was not found"),
            Err(e) => {
                eprintln!("SKIPPED: sock_diag is not available here: {e}");
                return;
            }
        }
        drop(listener);
        assert!(!listening_on(file).unwrap(), "a closed socket was found");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_dir(&dir).unwrap();
    }

    /// `unix_diag_vfs` holds a 32-bit inode number: a file whose inode number needs more
    /// bits is still matched (it was missed, and a live listener on it probed).
    #[test]
    fn a_64_bit_inode_number_matches_its_low_32_bits() {
        let mut message = vec![0u8; NLMSG_HEADER + DIAG_MSG + 12];
        let total = message.len() as u32;
        message[0..4].copy_from_slice(&total.to_ne_bytes());
        message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        message[32..34].copy_from_slice(&12u16.to_ne_bytes());
        message[34..36].copy_from_slice(&UNIX_DIAG_VFS.to_ne_bytes());
        message[36..40].copy_from_slice(&5u32.to_ne_bytes());
        message[40..44].copy_from_slice(&((254u32 << 20) | 3).to_ne_bytes());
        let file = |ino| FileId {
            major: 254,
            minor: 3,
            ino,
        };
        for (ino, found) in [
            (5, true),
            ((7 << 32) | 5, true),
            (6, false),
            (1 << 32, false),
        ] {
            assert_eq!(
                scan_datagram(&message, file(ino)).unwrap(),
                Scan::More { listening: found },
                "inode {ino:#x}"
            );
        }
    }

    #[test]
    fn replies_that_do_not_parse_are_errors_not_panics() {
        let file = FileId {
            major: 0,
            minor: 1,
            ino: 2,
        };
        let mut header = [0u8; 16];
        // A length past the datagram, shorter than a header, and zero.
        for len in [17u32, 3, 0] {
            header[0..4].copy_from_slice(&len.to_ne_bytes());
            header[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
            assert!(scan_datagram(&header, file).is_err(), "length {len}");
        }
        // An error message cut short, and a socket message with bad attribute lengths.
        header[0..4].copy_from_slice(&16u32.to_ne_bytes());
        header[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert!(scan_datagram(&header, file).is_err());
        let mut message = vec![0u8; 16 + DIAG_MSG + 4];
        let total = message.len() as u32;
        message[0..4].copy_from_slice(&total.to_ne_bytes());
        message[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        for attribute_len in [0u16, 3, 9, 400] {
            message[32..34].copy_from_slice(&attribute_len.to_ne_bytes());
            message[34..36].copy_from_slice(&UNIX_DIAG_VFS.to_ne_bytes());
            assert_eq!(
                scan_datagram(&message, file).unwrap(),
                Scan::More { listening: false }
            );
        }
    }
}
