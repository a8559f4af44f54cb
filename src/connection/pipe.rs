//! `Pipe`: the two ways to create a connected pair of [`Connection`]s.

use super::Connection;
use crate::error::Result;
use crate::sys;
use crate::sys::fd::FdKind;

/// Creates connected pairs of [`Connection`]s. Python: `multiprocessing.Pipe`.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let (mut left, mut right) = multiproc::Pipe::new()?;
/// left.send(&[1, 2, 3])?;
/// assert_eq!(right.recv::<Vec<i32>>()?, [1, 2, 3]);
/// right.send("and back")?;
/// assert_eq!(left.recv::<String>()?, "and back");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Pipe {
    _private: (),
}

impl Pipe {
    /// Two duplex ends over an `AF_UNIX` stream socketpair. Python: `Pipe()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"->")?;
    /// b.send_bytes(b"<-")?;
    /// assert_eq!(b.recv_bytes()?, b"->");
    /// assert_eq!(a.recv_bytes()?, b"<-");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` when the system is out of fds or memory.
    #[allow(clippy::new_ret_no_self)] // Python's `Pipe()` returns the two ends, not a Pipe.
    pub fn new() -> Result<(Connection, Connection)> {
        Pipe::duplex()
    }

    /// Same as [`Pipe::new`]. Python: `Pipe(duplex=True)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::duplex()?;
    /// assert!(a.readable() && a.writable() && b.readable() && b.writable());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` when the system is out of fds or memory.
    pub fn duplex() -> Result<(Connection, Connection)> {
        let (a, b) = sys::socket::socketpair()?;
        Ok((
            Connection::with_fd(a, FdKind::Socket, true, true),
            Connection::with_fd(b, FdKind::Socket, true, true),
        ))
    }

    /// A one-way pipe: `(reader, writer)`, in Python's order. Python: `Pipe(duplex=False)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::ErrorKind;
    /// let (mut reader, mut writer) = multiproc::Pipe::half_duplex()?;
    /// writer.send("one way")?;
    /// assert_eq!(reader.recv::<String>()?, "one way");
    /// assert_eq!(reader.send("no").unwrap_err().kind(), ErrorKind::ReadOnly);
    /// assert_eq!(writer.recv::<String>().unwrap_err().kind(), ErrorKind::WriteOnly);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Io` when the system is out of fds.
    pub fn half_duplex() -> Result<(Connection, Connection)> {
        let (r, w) = sys::fd::pipe()?;
        Ok((
            Connection::with_fd(r, FdKind::Other, true, false),
            Connection::with_fd(w, FdKind::Other, false, true),
        ))
    }
}
