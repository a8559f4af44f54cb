//! One error type for the whole crate, with Python's exceptions as its kinds.
//!
//! mio returns bare `io::Error` because it is thin; we are not. A user must tell a clean EOF from a
//! corrupt length from a closed handle without parsing strings, so every failure carries an
//! [`ErrorKind`], a message in CPython's wording where CPython has one (so one string greps in both
//! languages), and the underlying error as [`source`](std::error::Error::source).

use std::borrow::Cow;
use std::fmt;
use std::io;

/// The result type of every fallible multiproc call.
///
/// # Examples
/// ```
/// fn roundtrip() -> multiproc::Result<String> {
///     let (mut a, mut b) = multiproc::Pipe::new()?;
///     a.send(&"hi")?;
///     b.recv()
/// }
/// assert_eq!(roundtrip().unwrap(), "hi");
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in Python's terms.
///
/// Matching on a kind is the stable way to handle errors; the message text may gain detail.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{ErrorKind, Pipe};
/// let (mut a, b) = Pipe::new()?;
/// drop(b);
/// assert_eq!(a.recv_bytes().unwrap_err().kind(), ErrorKind::Eof);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The peer closed the connection at a message boundary. Python: `EOFError`.
    Eof,
    /// The peer closed the connection in the middle of a message. Python: `OSError("got end of
    /// file during message")`.
    TruncatedMessage,
    /// A length header over the receiver's limit, or a header no sender writes (a negative
    /// length other than CPython's -1 marker). The payload is not consumed and the connection
    /// is no longer readable. Python: `OSError("bad message length")`. From a queue: a frame
    /// header in its shared memory that no producer wrote; the items behind it in that
    /// producer's ring were discarded and the queue stays usable.
    BadMessageLength,
    /// The handle was closed with [`Connection::close`](crate::Connection::close). Python:
    /// `OSError("handle is closed")`.
    Closed,
    /// The peer is gone while we were writing (EPIPE or ECONNRESET). Never a SIGPIPE.
    /// Python: `BrokenPipeError`.
    BrokenPipe,
    /// `send` on the read end of a half-duplex pipe. Python: `OSError("connection is
    /// read-only")`.
    ReadOnly,
    /// `recv` on the write end of a half-duplex pipe. Python: `OSError("connection is
    /// write-only")`.
    WriteOnly,
    /// An argument was out of range (an offset past the buffer, say). Python: `ValueError`.
    InvalidInput,
    /// The next message is longer than the buffer it was to be received into; it was not
    /// consumed, so the next receive returns it. Python: `multiprocessing.BufferTooShort`
    /// (which carries the message, consumed).
    BufferTooShort,
    /// The operation did not finish before its timeout. Python: `TimeoutError`.
    Timeout,
    /// A bounded buffer or queue has no room; nothing was added. Python: `queue.Full`.
    Full,
    /// A queue has no item to take now. Python: `queue.Empty`.
    Empty,
    /// The queue was shut down: no more puts, and no more gets once it is drained (at once
    /// after an immediate shutdown). Python 3.13: `queue.ShutDown` (raised by
    /// `queue.Queue`; `multiprocessing.Queue` has no shutdown).
    ShutDown,
    /// A value could not be serialised. The connection is unchanged. Python: pickling errors.
    Encode,
    /// A whole frame arrived but is not a valid encoding of the requested type. The frame was
    /// consumed and the connection stays usable. Python: unpickling errors.
    Decode,
    /// The authkey handshake failed: a wrong key on either side, a protocol error, or a
    /// peer too slow to finish before the deadline. Python:
    /// `multiprocessing.AuthenticationError`.
    Authentication,
    /// The operation is not possible in this process as it is (for example `fork` while other
    /// threads run).
    Unsupported,
    /// Any other OS error; see [`source`](std::error::Error::source). Python: `OSError`.
    Io,
}

impl ErrorKind {
    fn default_message(self) -> &'static str {
        match self {
            ErrorKind::Eof => "EOF: the peer closed the connection",
            ErrorKind::TruncatedMessage => "got end of file during message",
            ErrorKind::BadMessageLength => "bad message length",
            ErrorKind::Closed => "handle is closed",
            ErrorKind::BrokenPipe => "broken pipe: the peer is gone",
            ErrorKind::ReadOnly => "connection is read-only",
            ErrorKind::WriteOnly => "connection is write-only",
            ErrorKind::InvalidInput => "invalid argument",
            ErrorKind::BufferTooShort => "buffer too short for the message",
            ErrorKind::Timeout => "timed out",
            ErrorKind::Full => "full",
            ErrorKind::Empty => "empty",
            ErrorKind::Authentication => "authentication failed",
            ErrorKind::ShutDown => "queue shut down",
            ErrorKind::Encode => "could not encode the message",
            ErrorKind::Decode => "could not decode the message",
            ErrorKind::Unsupported => "operation not supported here",
            ErrorKind::Io => "I/O error",
        }
    }
}

/// A multiproc error: a [`ErrorKind`], a message and, for OS and codec failures, the source.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let (mut reader, _writer) = multiproc::Pipe::half_duplex()?;
/// let err = reader.send_bytes(b"x").unwrap_err();
/// assert_eq!(err.kind(), multiproc::ErrorKind::ReadOnly);
/// assert_eq!(err.to_string(), "connection is read-only");
/// # Ok(()) }
/// ```
pub struct Error {
    kind: ErrorKind,
    message: Cow<'static, str>,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// An error of `kind` with its default, CPython-worded message.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// assert_eq!(Error::new(ErrorKind::BadMessageLength).to_string(), "bad message length");
    /// ```
    pub fn new(kind: ErrorKind) -> Error {
        Error {
            kind,
            message: Cow::Borrowed(kind.default_message()),
            source: None,
        }
    }

    /// An error of `kind` with a message of the caller's.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// let e = Error::with_message(ErrorKind::InvalidInput, "offset is negative");
    /// assert_eq!(e.to_string(), "offset is negative");
    /// ```
    pub fn with_message(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub(crate) fn with_source(
        kind: ErrorKind,
        message: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The same error, its message saying what was being done: `"what: message"`, or just
    /// `what` before an OS error's own text (an error converted from `io::Error` has no
    /// message of its own).
    pub(crate) fn context(mut self, what: impl fmt::Display) -> Error {
        self.message = if self.message.is_empty() {
            Cow::Owned(what.to_string())
        } else {
            Cow::Owned(format!("{what}: {}", self.message))
        };
        self
    }

    /// What went wrong.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// assert_eq!(Error::new(ErrorKind::Eof).kind(), ErrorKind::Eof);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// True for a clean end of stream ([`ErrorKind::Eof`]).
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// assert!(Error::new(ErrorKind::Eof).is_eof());
    /// assert!(!Error::new(ErrorKind::TruncatedMessage).is_eof());
    /// ```
    pub fn is_eof(&self) -> bool {
        self.kind == ErrorKind::Eof
    }

    /// True for [`ErrorKind::Timeout`].
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// assert!(Error::new(ErrorKind::Timeout).is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        self.kind == ErrorKind::Timeout
    }

    /// True for [`ErrorKind::Closed`].
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// assert!(Error::new(ErrorKind::Closed).is_closed());
    /// ```
    pub fn is_closed(&self) -> bool {
        self.kind == ErrorKind::Closed
    }

    /// The OS error number, when the error came from a syscall.
    ///
    /// # Examples
    /// ```
    /// let e = multiproc::Error::from(std::io::Error::from_raw_os_error(9));
    /// assert_eq!(e.raw_os_error(), Some(9));
    /// ```
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source
            .as_ref()?
            .downcast_ref::<io::Error>()?
            .raw_os_error()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An OS error's text is the useful part; a codec error's text is in its own Display.
        // An error converted from `io::Error` has no message of its own: its source's text
        // alone, not "broken pipe: Broken pipe (os error 32)". Never empty.
        let source = self
            .source
            .as_ref()
            .map(|s| s.to_string())
            .filter(|s| !s.is_empty());
        match (self.message.as_ref(), source) {
            ("", Some(source)) => f.write_str(&source),
            ("", None) => f.write_str(self.kind.default_message()),
            (message, Some(source)) => write!(f, "{message}: {source}"),
            (message, None) => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<io::Error> for Error {
    /// Maps an OS error onto our kinds: EPIPE and ECONNRESET become
    /// [`ErrorKind::BrokenPipe`], ETIMEDOUT becomes [`ErrorKind::Timeout`], the rest
    /// [`ErrorKind::Io`]; the original is kept as the source, and its text is the message.
    /// An `io::Error` made from a multiproc [`Error`] gives that error back, kind and all.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Error, ErrorKind};
    /// let io = std::io::Error::from(Error::new(ErrorKind::Eof));
    /// assert_eq!(Error::from(io).kind(), ErrorKind::Eof);
    /// ```
    fn from(err: io::Error) -> Error {
        let err = match err.downcast::<Error>() {
            Ok(ours) => return ours,
            Err(err) => err,
        };
        let kind = match err.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => ErrorKind::BrokenPipe,
            io::ErrorKind::TimedOut => ErrorKind::Timeout,
            _ => ErrorKind::Io,
        };
        Error::with_source(kind, "", err)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Error {
        Error::from(io::Error::from(errno))
    }
}

impl From<Error> for io::Error {
    /// An OS error converted as it was comes back as it was: same kind, code and text.
    /// Anything else becomes an `io::Error` of the nearest kind (an OS error's own kind for
    /// [`ErrorKind::Io`]: `NotFound` for a missing socket path, say) with the multiproc
    /// error inside, so its message (which names the address or path) is kept, and
    /// [`Error::from`] gives it back whole, OS error code included. Such an `io::Error`
    /// holds ours, not a code: its `raw_os_error()` is `None`, and the code is its
    /// [`source`](std::error::Error::source)'s.
    ///
    /// # Examples
    /// ```
    /// use multiproc::{Client, Error, ErrorKind};
    /// let err = Client::connect("/nonexistent/multiproc.sock", None).unwrap_err();
    /// let io = std::io::Error::from(err);
    /// assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    /// assert!(io.to_string().contains("/nonexistent/multiproc.sock"));
    /// assert_eq!(io.raw_os_error(), None);
    /// use std::error::Error as _;
    /// let os = io.source().and_then(|s| s.downcast_ref::<std::io::Error>());
    /// assert_eq!(os.and_then(std::io::Error::raw_os_error), Some(2));
    /// let back = Error::from(io);
    /// assert_eq!((back.kind(), back.raw_os_error()), (ErrorKind::Io, Some(2)));
    /// ```
    fn from(mut err: Error) -> io::Error {
        if err.message.is_empty() {
            if let Some(source) = err.source.take() {
                match source.downcast::<io::Error>() {
                    Ok(io) => return *io,
                    Err(source) => err.source = Some(source),
                }
            }
        }
        let os_kind = err
            .source
            .as_deref()
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map(io::Error::kind);
        let kind = match err.kind {
            // An OS error's own kind: ConnectionReset stays that, not BrokenPipe.
            ErrorKind::Io | ErrorKind::BrokenPipe | ErrorKind::Timeout if os_kind.is_some() => {
                os_kind.unwrap_or(io::ErrorKind::Other)
            }
            ErrorKind::Io => io::ErrorKind::Other,
            ErrorKind::Eof | ErrorKind::TruncatedMessage => io::ErrorKind::UnexpectedEof,
            ErrorKind::BadMessageLength | ErrorKind::Decode => io::ErrorKind::InvalidData,
            ErrorKind::Authentication => io::ErrorKind::PermissionDenied,
            ErrorKind::BrokenPipe => io::ErrorKind::BrokenPipe,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            ErrorKind::Full | ErrorKind::Empty => io::ErrorKind::WouldBlock,
            ErrorKind::InvalidInput | ErrorKind::Encode | ErrorKind::BufferTooShort => {
                io::ErrorKind::InvalidInput
            }
            ErrorKind::Unsupported | ErrorKind::ReadOnly | ErrorKind::WriteOnly => {
                io::ErrorKind::Unsupported
            }
            ErrorKind::Closed | ErrorKind::ShutDown => io::ErrorKind::Other,
        };
        io::Error::new(kind, err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epipe_maps_to_broken_pipe_and_keeps_errno() {
        let e = Error::from(io::Error::from_raw_os_error(libc::EPIPE));
        assert_eq!(e.kind(), ErrorKind::BrokenPipe);
        assert_eq!(e.raw_os_error(), Some(libc::EPIPE));
        let back = io::Error::from(e);
        assert_eq!(back.raw_os_error(), Some(libc::EPIPE));
    }

    /// With context, an OS error becomes an `io::Error` of the OS error's kind, whatever our
    /// kind: ECONNRESET is `ConnectionReset` (as `from_raw_os_error` says), not `BrokenPipe`.
    #[test]
    fn an_os_error_with_context_keeps_its_io_kind() {
        for (errno, io_kind, kind) in [
            (
                libc::ECONNRESET,
                io::ErrorKind::ConnectionReset,
                ErrorKind::BrokenPipe,
            ),
            (
                libc::EPIPE,
                io::ErrorKind::BrokenPipe,
                ErrorKind::BrokenPipe,
            ),
            (libc::ETIMEDOUT, io::ErrorKind::TimedOut, ErrorKind::Timeout),
            (
                libc::ECONNREFUSED,
                io::ErrorKind::ConnectionRefused,
                ErrorKind::Io,
            ),
        ] {
            let plain = io::Error::from(Error::from(io::Error::from_raw_os_error(errno)));
            assert_eq!(plain.kind(), io_kind, "{errno}");
            let e = Error::from(io::Error::from_raw_os_error(errno)).context("cannot connect to x");
            assert_eq!(e.kind(), kind);
            let as_io = io::Error::from(e);
            assert_eq!(as_io.kind(), io_kind, "{errno}");
            let back = Error::from(as_io);
            assert_eq!((back.kind(), back.raw_os_error()), (kind, Some(errno)));
        }
    }

    #[test]
    fn display_uses_cpython_wording() {
        assert_eq!(
            Error::new(ErrorKind::Closed).to_string(),
            "handle is closed"
        );
        assert_eq!(
            Error::new(ErrorKind::TruncatedMessage).to_string(),
            "got end of file during message"
        );
    }
}
