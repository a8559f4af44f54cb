//! `Connection` and `Pipe`: framed messages over a socketpair or a pipe.
//!
//! A [`Connection`] owns one fd and speaks CPython's framing (see [`crate::frame`] and
//! `docs/wire-format.md`), so the peer may be another Rust process or a Python process using
//! `multiprocessing.connection.Connection`. Reads go through a read-ahead buffer: many small
//! frames arrive in one `read(2)`, and a large frame is read straight into the `Vec` that
//! `recv_bytes` returns. Because of that buffer, the fd's readiness alone can miss frames
//! already received: ask [`Connection::poll`] (or `wait`) rather than polling the raw fd.
//!
//! The fd stays in blocking mode: `O_NONBLOCK` lives on the open file description, which is
//! shared with every process holding a copy of the fd, so setting it here would change a
//! peer's behaviour.

use std::fmt;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, cbor_string};
use crate::codec::{Codecs, Encoding};
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{Frame, FrameDecoder, Header};
use crate::sys;
use crate::sys::fd::FdKind;

/// Payloads up to this size are sent from one contiguous stack buffer (see `write_frame`).
const SMALL_FRAME: usize = 1024;

mod nonblocking;
pub(crate) use nonblocking::Within;
mod pipe;
#[cfg(test)]
mod slice_proptests;

pub use pipe::Pipe;

/// One end of a [`Pipe`], or any fd carrying CPython-framed messages. Python:
/// `multiprocessing.connection.Connection`.
///
/// `send`/`recv` exchange serde values encoded as CBOR; `send_bytes`/`recv_bytes` exchange raw
/// byte messages and interoperate with a Python peer's `send_bytes`/`recv_bytes`. Every I/O
/// method takes `&mut self`, so Python's "a Pipe end is not thread-safe" is checked by the
/// compiler; move the `Connection` to the thread that uses it.
///
/// For byte fields in your own types, annotate them with `#[serde(with = "serde_bytes")]`
/// (crate `serde_bytes`): plain `Vec<u8>` encodes as an array of integers, about twice the
/// size and much slower to decode.
///
/// CBOR has one "null", so nested options collapse: `Some(None::<T>)` and `Some(())` arrive
/// as `None`. Use an enum where the difference matters.
///
/// # Examples
/// Parent and child over a duplex pipe, as in Python's tutorial:
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Pipe, Process};
///
/// let (mut parent, mut child) = Pipe::new()?;
/// let mut p = Process::fork(move || {
///     let msg: String = child.recv().unwrap();
///     child.send(&format!("{msg} back")).unwrap();
/// });
/// p.start()?;
/// parent.send("hello")?;
/// assert_eq!(parent.recv::<String>()?, "hello back");
/// assert_eq!(p.join()?, 0);
/// # Ok(()) }
/// ```
pub struct Connection {
    fd: Option<OwnedFd>,
    kind: FdKind,
    readable: bool,
    writable: bool,
    decoder: FrameDecoder,
    codec: Codecs,
    encoded: Vec<u8>,
    max_message_len: u64,
    /// The fd reported end of file (or a reset); reads are not attempted again.
    eof: bool,
    /// Frames queued by `try_send*` and not yet written: `queued[queued_pos..]`.
    queued: Vec<u8>,
    queued_pos: usize,
    send_buffer_limit: usize,
    /// Unique in this process: tells this connection from another on the same fd number.
    serial: u64,
}

/// The source of [`Connection::serial`]s.
static SERIALS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Connection {
    fn with_fd(fd: OwnedFd, kind: FdKind, readable: bool, writable: bool) -> Connection {
        if writable && kind != FdKind::Socket {
            sys::fd::ignore_sigpipe_once();
        }
        Connection {
            fd: Some(fd),
            serial: SERIALS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            kind,
            readable,
            writable,
            decoder: FrameDecoder::new(),
            codec: Codecs::default(),
            encoded: Vec::new(),
            max_message_len: u64::MAX,
            eof: false,
            queued: Vec::new(),
            queued_pos: 0,
            send_buffer_limit: nonblocking::DEFAULT_SEND_BUFFER_LIMIT,
        }
    }

    /// This connection's number, unique in this process (a reactor tells a connection put
    /// in another's place by it, even on the same fd number).
    pub(crate) fn serial(&self) -> u64 {
        self.serial
    }

    /// Adopts a connected stream socket that the caller just made (`accept`, `connect`):
    /// what `From<OwnedFd>` finds out with `fstat` and `fcntl` is known here.
    pub(crate) fn from_socket(fd: OwnedFd) -> Connection {
        Connection::with_fd(fd, FdKind::Socket, true, true)
    }

    fn fd(&self) -> Result<BorrowedFd<'_>> {
        self.fd
            .as_ref()
            .map(|fd| fd.as_fd())
            .ok_or_else(|| Error::new(ErrorKind::Closed))
    }

    fn check_readable(&self) -> Result<()> {
        self.fd()?;
        if !self.readable {
            return Err(Error::new(ErrorKind::WriteOnly));
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<()> {
        self.fd()?;
        if !self.writable {
            return Err(Error::new(ErrorKind::ReadOnly));
        }
        Ok(())
    }

    /// How `send` encodes and `recv` decodes values (CBOR unless changed).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, _b) = multiproc::Pipe::new()?;
    /// assert_eq!(a.encoding(), multiproc::Encoding::Cbor);
    /// # Ok(()) }
    /// ```
    pub fn encoding(&self) -> Encoding {
        self.codec.encoding()
    }

    /// Switches the encoding of `send`/`recv`, e.g. to [`Encoding::Pickle`] to talk to a
    /// Python peer's plain `send`/`recv`. `send_bytes`/`recv_bytes` are not affected.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, _b) = multiproc::Pipe::new()?;
    /// a.set_encoding(multiproc::Encoding::Cbor);
    /// # Ok(()) }
    /// ```
    pub fn set_encoding(&mut self, encoding: Encoding) {
        self.codec.set_encoding(encoding);
    }

    /// Sends `value` as one CBOR-encoded message. Python: `Connection.send` (which pickles).
    ///
    /// The value is encoded before anything is written, so an encode error leaves the stream
    /// untouched.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::collections::BTreeMap;
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send(&BTreeMap::from([("id", 7)]))?;
    /// let got: BTreeMap<String, i32> = b.recv()?;
    /// assert_eq!(got["id"], 7);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed`, `ReadOnly`, `Encode` (the value refused to serialise), `BrokenPipe` (the peer
    /// is gone), `Io`.
    pub fn send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.check_writable()?;
        if self.codec.encoding() == Encoding::Cbor {
            // A lone byte or text string goes out from where it lies, after its CBOR
            // header: no encoding buffer (see `codec::cbor_string`).
            let sent = cbor_string::encode(value, |head, body| {
                self.flush_blocking()?;
                write_frame(self.fd()?, self.kind, head, body)
            });
            if let Some(sent) = sent {
                return sent;
            }
        }
        self.with_encoded(value, |conn, payload| {
            conn.flush_blocking()?;
            write_frame(conn.fd()?, conn.kind, &[], payload)
        })
    }

    /// Receives one message and decodes it as `T`. Python: `Connection.recv`.
    ///
    /// Blocks until a whole message has arrived.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    /// struct Reading { id: u32, v: f64 }
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send(&Reading { id: 1, v: 0.5 })?;
    /// assert_eq!(b.recv::<Reading>()?, Reading { id: 1, v: 0.5 });
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Eof` (peer closed between messages), `TruncatedMessage` (peer closed inside one),
    /// `Decode` (the message is not a `T`; it was consumed and the connection stays usable),
    /// `BadMessageLength`, `Closed`, `WriteOnly`, `Io`.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T> {
        let frame = self.next_frame(self.max_message_len)?;
        self.decode_frame(frame)
    }

    fn decode_frame<T: DeserializeOwned>(&mut self, frame: Frame) -> Result<T> {
        let payload = match &frame {
            Frame::Buffered { start, end } => self.decoder.slice(*start, *end),
            Frame::Owned(body) => body.as_slice(),
        };
        if self.codec.encoding() == Encoding::Cbor {
            // A lone byte or text string becomes its value in one copy.
            if let Some(value) = cbor_string::decode_encoding(payload) {
                return Ok(value);
            }
        }
        self.codec.decode(payload)
    }

    fn frame_to_vec(&self, frame: Frame) -> Vec<u8> {
        match frame {
            Frame::Buffered { start, end } => self.decoder.slice(start, end).to_vec(),
            Frame::Owned(body) => body,
        }
    }

    fn frame_into(&self, frame: Frame, buf: &mut Vec<u8>) -> usize {
        match frame {
            Frame::Buffered { start, end } => {
                buf.clear();
                buf.extend_from_slice(self.decoder.slice(start, end));
            }
            Frame::Owned(body) => *buf = body,
        }
        buf.len()
    }

    /// Sends `buf` as one message. Python: `Connection.send_bytes(buf)`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"ping")?;
    /// assert_eq!(b.recv_bytes()?, b"ping");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed`, `ReadOnly`, `BrokenPipe` (the peer is gone; never a SIGPIPE), `Io`.
    pub fn send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.flush_blocking()?;
        write_frame(self.fd()?, self.kind, &[], buf)
    }

    /// Sends `size` bytes of `buf` starting at `offset` (all the rest when `size` is `None`).
    /// Python: `Connection.send_bytes(buf, offset, size)`, with its checks.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send_bytes_range(b"0123456789", 2, Some(3))?;
    /// a.send_bytes_range(b"0123456789", 7, None)?;
    /// assert_eq!(b.recv_bytes()?, b"234");
    /// assert_eq!(b.recv_bytes()?, b"789");
    /// let err = a.send_bytes_range(b"abc", 2, Some(5)).unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::InvalidInput);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` when `offset` or `offset + size` lies past the end of `buf` (nothing is
    /// sent); otherwise as [`send_bytes`](Self::send_bytes).
    pub fn send_bytes_range(
        &mut self,
        buf: &[u8],
        offset: usize,
        size: Option<usize>,
    ) -> Result<()> {
        // Python checks the handle before the arguments.
        self.check_writable()?;
        if offset > buf.len() {
            return Err(Error::with_message(
                ErrorKind::InvalidInput,
                "buffer length < offset",
            ));
        }
        let end = match size {
            None => buf.len(),
            Some(size) => match offset.checked_add(size) {
                Some(end) if end <= buf.len() => end,
                _ => {
                    return Err(Error::with_message(
                        ErrorKind::InvalidInput,
                        "buffer length < offset + size",
                    ));
                }
            },
        };
        self.send_bytes(&buf[offset..end])
    }

    /// Receives one byte message. Python: `Connection.recv_bytes()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"")?;
    /// assert_eq!(b.recv_bytes()?, b"");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Eof`, `TruncatedMessage`, `BadMessageLength` (over
    /// [`max_message_len`](Self::max_message_len)), `Closed`, `WriteOnly`, `Io`.
    pub fn recv_bytes(&mut self) -> Result<Vec<u8>> {
        self.recv_bytes_limited(self.max_message_len)
    }

    /// Receives one byte message of at most `maxlength` bytes. Python:
    /// `Connection.recv_bytes(maxlength)`.
    ///
    /// A longer message is refused with `BadMessageLength` without reading its payload, and
    /// the connection is no longer readable afterwards, as in Python: the stream position is
    /// lost.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::ErrorKind;
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"0123456789")?;
    /// let err = b.recv_bytes_max(4).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::BadMessageLength);
    /// assert_eq!(b.recv_bytes().unwrap_err().kind(), ErrorKind::BadMessageLength);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_max(&mut self, maxlength: usize) -> Result<Vec<u8>> {
        self.recv_bytes_limited((maxlength as u64).min(self.max_message_len))
    }

    fn recv_bytes_limited(&mut self, limit: u64) -> Result<Vec<u8>> {
        let frame = self.next_frame(limit)?;
        Ok(self.frame_to_vec(frame))
    }

    /// Receives one byte message into `buf`, replacing its contents; returns the message
    /// length. Python: `Connection.recv_bytes_into`, without its `BufferTooShort` trap: the
    /// vector grows to fit, so no message is ever cut. `buf`'s capacity is reused for
    /// messages that fit the 64 KiB read-ahead buffer; a longer one is read into a vector
    /// of its own, which takes `buf`'s place (one copy fewer). Into a buffer of fixed size,
    /// at an offset as Python allows: [`recv_bytes_into_slice`](Self::recv_bytes_into_slice).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// let mut buf = Vec::with_capacity(1024);
    /// for word in ["one", "three"] {
    ///     a.send_bytes(word.as_bytes())?;
    ///     let n = b.recv_bytes_into(&mut buf)?;
    ///     assert_eq!(&buf[..n], word.as_bytes());
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes); on error `buf` is left unchanged.
    pub fn recv_bytes_into(&mut self, buf: &mut Vec<u8>) -> Result<usize> {
        let frame = self.next_frame(self.max_message_len)?;
        Ok(self.frame_into(frame, buf))
    }

    /// Receives one byte message into the front of `buf`; returns its length. Python:
    /// `Connection.recv_bytes_into(buffer, offset)`, with the offset as a subslice:
    /// `recv_bytes_into_slice(&mut buffer[offset..])`.
    ///
    /// For a fixed buffer (an array, a region of shared memory). A message longer than
    /// `buf` is refused from its header with `BufferTooShort`, as Python refuses it, but
    /// unlike Python's the message is not consumed: take it with
    /// [`recv_bytes`](Self::recv_bytes) (or retry with a larger buffer), and the connection
    /// carries on. `buf` past the message is left as it was. A message over the 64 KiB
    /// read-ahead buffer is read into a vector of its own, then copied; for those,
    /// [`recv_bytes_into`](Self::recv_bytes_into) copies less. There is no timeout form:
    /// [`poll`](Self::poll) first, whose true means a whole message is here.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::ErrorKind;
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// let mut buf = [0u8; 8];
    /// a.send_bytes(b"abc")?;
    /// let n = b.recv_bytes_into_slice(&mut buf[2..])?; // Python: recv_bytes_into(buf, 2)
    /// assert_eq!(&buf[..2 + n], b"\0\0abc");
    /// a.send_bytes(b"much too long")?;
    /// let err = b.recv_bytes_into_slice(&mut buf).unwrap_err();
    /// assert_eq!(err.kind(), ErrorKind::BufferTooShort);
    /// assert_eq!(b.recv_bytes()?, b"much too long"); // still there
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `BufferTooShort` as above (nothing consumed; decided from the header, so also for a
    /// message the peer then cuts short by closing, which the next receive reports as
    /// `TruncatedMessage`); otherwise as [`recv_bytes`](Self::recv_bytes). On error `buf`
    /// is left unchanged.
    #[doc(alias = "BufferTooShort")]
    pub fn recv_bytes_into_slice(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.check_readable()?;
        let limit = self.max_message_len;
        loop {
            // Checked from the header, before the payload is read: refused, the message
            // stays whole in the stream for the next receive.
            if let Some(len) = self.decoder.next_len() {
                if len > buf.len() as u64 && len <= limit {
                    return Err(Error::with_message(
                        ErrorKind::BufferTooShort,
                        format!(
                            "buffer too short: the message is {len} bytes, the buffer {}",
                            buf.len()
                        ),
                    ));
                }
            }
            if let Some(frame) = self.decoder.decode(limit)? {
                let payload = match &frame {
                    Frame::Buffered { start, end } => self.decoder.slice(*start, *end),
                    Frame::Owned(body) => body.as_slice(),
                };
                // Checked above from the same header; should the two ever disagree, an error
                // rather than a panic (the message is gone then).
                let Some(into) = buf.get_mut(..payload.len()) else {
                    return Err(Error::with_message(
                        ErrorKind::BufferTooShort,
                        format!("buffer too short: the message was {} bytes", payload.len()),
                    ));
                };
                into.copy_from_slice(payload);
                return Ok(payload.len());
            }
            if self.fill(true)? == Fill::Eof {
                return Err(self.decoder.eof_error());
            }
        }
    }

    /// Reads until the decoder yields a frame.
    fn next_frame(&mut self, limit: u64) -> Result<Frame> {
        self.check_readable()?;
        loop {
            if let Some(frame) = self.decoder.decode(limit)? {
                return Ok(frame);
            }
            if self.fill(true)? == Fill::Eof {
                return Err(self.decoder.eof_error());
            }
        }
    }

    /// One read into the decoder: blocking, or (`block == false`) only what is there now.
    fn fill(&mut self, block: bool) -> Result<Fill> {
        if self.eof {
            return Ok(Fill::Eof);
        }
        let fd = self
            .fd
            .as_ref()
            .ok_or_else(|| Error::new(ErrorKind::Closed))?
            .as_fd();
        let (target, limit) = self.decoder.read_target();
        if limit == 0 {
            // The decoder holds a whole frame (a caller read before decoding it): nothing
            // to read into, and a 0-byte read would pass for the end of the stream.
            return Ok(Fill::Data);
        }
        let read = if block {
            sys::fd::read_into(fd, target, limit).map(Some)
        } else {
            sys::fd::try_read_into(fd, self.kind, target, limit)
        };
        match read {
            Ok(None) => Ok(Fill::WouldBlock),
            Ok(Some(0)) => {
                self.eof = true;
                Ok(Fill::Eof)
            }
            Ok(Some(_)) => Ok(Fill::Data),
            // A Unix socket whose peer closed with our data unread reports ECONNRESET once
            // its queue is drained: for the reader that is the end of the stream.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(Fill::Eof)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a `recv` would return without blocking, waiting up to `timeout` for that
    /// (`None`: as long as it takes; `Some(Duration::ZERO)`: just check). Python:
    /// `Connection.poll(timeout)`.
    ///
    /// True when a whole message is buffered, and also at end of file or after a bad length,
    /// where `recv` fails at once, as in Python. Stricter than Python in one way: bytes of an
    /// incomplete message do not count, so a true `poll` never leads to a blocking `recv`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// assert!(!b.poll(Some(Duration::ZERO))?);
    /// a.send_bytes(b"x")?;
    /// assert!(b.poll(Some(Duration::from_secs(1)))?);
    /// drop(a);
    /// b.recv_bytes()?;
    /// assert!(b.poll(None)?); // EOF: recv would fail at once
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed`, `WriteOnly`, `Io`.
    pub fn poll(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.check_readable()?;
        // A timeout too large for an Instant is as good as none.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        loop {
            if self.ready_now() {
                return Ok(true);
            }
            if deadline.is_some_and(|d| d <= Instant::now())
                || !sys::fd::wait_readable(self.fd()?, deadline)?
            {
                return Ok(false);
            }
        }
    }

    /// Closes this end; later calls fail with `Closed`. Closing twice is harmless. Python:
    /// `Connection.close`. Dropping the `Connection` closes it too.
    ///
    /// Messages received but not yet returned are discarded. Messages
    /// [`try_send`](Self::try_send) queued and not yet written
    /// ([`pending_send_len`](Self::pending_send_len)) are written as far as the fd takes them
    /// without blocking; the rest is lost (one the fd took only part of reaches the peer cut
    /// short, as `TruncatedMessage`). To deliver them all, call [`flush`](Self::flush) until
    /// it returns true (or `send` anything, which writes the queue first) before closing or
    /// dropping.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.close();
    /// assert!(a.is_closed());
    /// assert!(a.send_bytes(b"x").unwrap_err().is_closed());
    /// assert!(b.recv_bytes().unwrap_err().is_eof());
    /// # Ok(()) }
    /// ```
    pub fn close(&mut self) {
        self.write_queue_before_closing();
        self.fd = None;
        self.decoder = FrameDecoder::new();
    }

    /// Writes as much of the `try_send` queue as the fd takes now, without blocking: what it
    /// cannot take is lost with the connection. Not by the parent's copy of a connection a
    /// forked child was handed (moved into the fork's closure): the child writes its own
    /// copy of the queue, and both would put the same bytes on the stream.
    fn write_queue_before_closing(&mut self) {
        if self.fd.is_some() && self.pending_send_len() > 0 && !crate::process::handed_to_child() {
            let _ = self.flush();
        }
    }

    /// Whether [`close`](Self::close) was called. Python: `Connection.closed`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, _b) = multiproc::Pipe::new()?;
    /// assert!(!a.is_closed());
    /// a.close();
    /// assert!(a.is_closed());
    /// # Ok(()) }
    /// ```
    #[doc(alias = "closed")]
    pub fn is_closed(&self) -> bool {
        self.fd.is_none()
    }

    /// Whether this end can receive. Python: `Connection.readable`.
    ///
    /// Fixed when the connection is made: it stays true after a message over the limit
    /// ([`recv_bytes_max`](Self::recv_bytes_max)), where Python sets `readable` false (or
    /// closes a read-only end) so that later receives fail with "connection is
    /// write-only"; here they fail with `BadMessageLength` instead.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (reader, writer) = multiproc::Pipe::half_duplex()?;
    /// assert!(reader.readable() && !reader.writable());
    /// assert!(writer.writable() && !writer.readable());
    /// # Ok(()) }
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this end can send. Python: `Connection.writable`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, b) = multiproc::Pipe::new()?;
    /// assert!(a.writable() && b.writable());
    /// # Ok(()) }
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// The largest message payload `recv`, `recv_bytes` and `recv_bytes_into` accept
    /// (default: no limit but memory, as in Python).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (_a, mut b) = multiproc::Pipe::new()?;
    /// assert_eq!(b.max_message_len(), u64::MAX);
    /// b.set_max_message_len(1 << 20);
    /// assert_eq!(b.max_message_len(), 1 << 20);
    /// # Ok(()) }
    /// ```
    pub fn max_message_len(&self) -> u64 {
        self.max_message_len
    }

    /// Sets the largest message payload this end accepts; a longer one fails with
    /// `BadMessageLength` before its payload is read (and, as in Python, leaves the connection
    /// unreadable). Memory for a message grows only as its bytes arrive, whatever the limit.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// b.set_max_message_len(3);
    /// a.send_bytes(b"abcd")?;
    /// assert_eq!(b.recv_bytes().unwrap_err().kind(), multiproc::ErrorKind::BadMessageLength);
    /// # Ok(()) }
    /// ```
    pub fn set_max_message_len(&mut self, limit: u64) {
        self.max_message_len = limit;
    }

    /// Bytes received from the fd but not yet returned as messages. They are lost if the fd
    /// is taken out with [`IntoRawFd`] or `OwnedFd::from`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"one")?;
    /// a.send_bytes(b"two")?;
    /// b.recv_bytes()?;
    /// // The second message was read along with the first.
    /// assert!(b.poll(Some(Duration::from_secs(1)))?);
    /// assert_eq!(b.buffered_len(), 7);
    /// # Ok(()) }
    /// ```
    pub fn buffered_len(&self) -> usize {
        self.decoder.buffered_len()
    }
}

/// Writes one whole frame, blocking until it is all out.
/// Writes one frame whose payload is `head` then `body` (either may be empty).
fn write_frame(fd: BorrowedFd<'_>, kind: FdKind, head: &[u8], body: &[u8]) -> Result<()> {
    let payload_len = head.len() + body.len();
    let header = Header::for_len(payload_len);
    let header = header.as_bytes();
    if payload_len <= SMALL_FRAME {
        // One contiguous buffer and send(2)/write(2): for small frames the kernel's copy-in
        // of a msghdr and an iovec array costs more than copying the payload here.
        let mut frame = [0u8; 12 + SMALL_FRAME];
        let mut len = 0;
        for part in [header, head, body] {
            frame[len..len + part.len()].copy_from_slice(part);
            len += part.len();
        }
        sys::fd::write_all_contiguous(fd, kind, &frame[..len])?;
    } else {
        let mut bufs = [IoSlice::new(header), IoSlice::new(head), IoSlice::new(body)];
        sys::fd::write_all(fd, kind, &mut bufs)?;
    }
    Ok(())
}

/// What one read into the decoder produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fill {
    Data,
    Eof,
    WouldBlock,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd.as_ref().map(|fd| fd.as_raw_fd()))
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .field("buffered", &self.decoder.buffered_len())
            .finish()
    }
}

impl From<OwnedFd> for Connection {
    /// Adopts an fd carrying CPython framing. Python: `Connection(handle, readable,
    /// writable)`, with the direction read from the fd's access mode (a pipe's read end is
    /// read-only) and sockets written with `MSG_NOSIGNAL`.
    ///
    /// The fd must carry a byte stream: a stream socket, a pipe or FIFO, a file. A datagram
    /// or seqpacket socket is not refused, but a message over 64 KiB arrives damaged or never
    /// (a datagram longer than one read is cut short). An fd in non-blocking mode
    /// (`O_NONBLOCK`, as mio and tokio sockets are) is fine: the blocking calls wait for it,
    /// and its mode is left as it is. A timeout set on a blocking socket (`SO_RCVTIMEO`,
    /// `SO_SNDTIMEO`: std's `set_read_timeout`, `set_write_timeout`) ends a blocking call
    /// with an `Io` error (`EAGAIN`); a receive loses nothing by it (a frame begun is
    /// finished by the next), while a send may have written part of its frame.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::os::fd::OwnedFd;
    /// use multiproc::Connection;
    /// let (a, b) = multiproc::Pipe::new()?;
    /// let mut a = Connection::from(OwnedFd::from(a));
    /// let mut b = Connection::from(OwnedFd::from(b));
    /// a.send_bytes(b"adopted")?;
    /// assert_eq!(b.recv_bytes()?, b"adopted");
    /// # Ok(()) }
    /// ```
    fn from(fd: OwnedFd) -> Connection {
        // fstat/fcntl only fail on a bad fd, which an OwnedFd is not; fall back to a
        // read-write stream anyway.
        let (kind, readable, writable) =
            sys::fd::describe(fd.as_fd()).unwrap_or((FdKind::Other, true, true));
        Connection::with_fd(fd, kind, readable, writable)
    }
}

impl Drop for Connection {
    /// Closes the fd, after writing what it takes now of the `try_send` queue (see
    /// [`Connection::close`]).
    fn drop(&mut self) {
        self.write_queue_before_closing();
    }
}

impl From<Connection> for OwnedFd {
    /// Takes the fd out. Buffered, unreturned bytes are dropped (see
    /// [`Connection::buffered_len`]), and so are queued sends (see
    /// [`Connection::pending_send_len`]): the fd may be left in the middle of a frame.
    ///
    /// # Panics
    /// If the connection was closed.
    fn from(mut conn: Connection) -> OwnedFd {
        conn.fd.take().expect("Connection was closed")
    }
}

impl AsFd for Connection {
    /// The connection's fd, for registering with `poll`, `select` or mio. Python:
    /// `Connection.fileno()`. Frames already in the read-ahead buffer do not make the fd
    /// readable: use [`Connection::poll`] or drain with `recv` until it would block.
    ///
    /// # Panics
    /// If the connection was closed (Python raises `OSError` there).
    #[doc(alias = "fileno")]
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_ref().expect("Connection was closed").as_fd()
    }
}

impl AsRawFd for Connection {
    /// The fd number. Python: `Connection.fileno()`.
    ///
    /// # Panics
    /// If the connection was closed.
    fn as_raw_fd(&self) -> RawFd {
        self.as_fd().as_raw_fd()
    }
}

impl IntoRawFd for Connection {
    /// Takes the fd out; the caller must close it. Buffered bytes and queued sends are
    /// dropped, as with `OwnedFd::from`.
    ///
    /// # Panics
    /// If the connection was closed.
    fn into_raw_fd(self) -> RawFd {
        OwnedFd::from(self).into_raw_fd()
    }
}

/// Registers the connection's fd in a user's own mio `Poll`, for reading and/or writing.
///
/// mio is edge-triggered, and a `Connection` reads ahead: one readable event may bring
/// several messages into the buffer, and no new event comes for them. So on each readable
/// event, drain: call `try_recv`/`try_recv_bytes` until it returns `Ok(None)` (or an error
/// such as `Eof`). Likewise after a writable event, call `flush` until it returns true or
/// you stop caring. A [`WaitSet`](crate::WaitSet) does this bookkeeping for you.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use std::time::Duration;
/// use mio::{Events, Interest, Poll, Token};
///
/// let (mut tx, mut rx) = multiproc::Pipe::new()?;
/// let mut poll = Poll::new()?;
/// poll.registry().register(&mut rx, Token(7), Interest::READABLE)?;
/// tx.send_bytes(b"one")?;
/// tx.send_bytes(b"two")?;
/// let mut events = Events::with_capacity(8);
/// poll.poll(&mut events, Some(Duration::from_secs(5)))?;
/// assert_eq!(events.iter().next().unwrap().token(), Token(7));
/// let mut got = Vec::new();
/// while let Some(msg) = rx.try_recv_bytes()? {
///     got.push(msg);
/// }
/// assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
/// # Ok(()) }
/// ```
///
/// On a closed connection the three methods fail with an error (`Closed` inside an
/// `io::Error`) rather than panic. Deregister before closing: closing removes the fd from
/// mio's epoll only when no other process or `dup` holds it.
impl mio::event::Source for Connection {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.fd()?.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.fd()?.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.fd()?.as_raw_fd()).deregister(registry)
    }
}
