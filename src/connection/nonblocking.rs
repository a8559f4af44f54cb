//! The non-blocking half of `Connection`: receives that return "nothing yet", sends that
//! queue in a bounded buffer, and the deadline variants of the blocking calls.
//!
//! Nothing here sets `O_NONBLOCK`: that flag lives on the open file description, shared with
//! every process that holds the fd, so setting it would change a peer's blocking calls.
//! Sockets use `MSG_DONTWAIT` per call; pipes are polled with a zero timeout first (see
//! `sys::fd::try_read_into` and `sys::fd::try_write`).
//!
//! A partial frame stays in the decoder between calls, so `try_recv` can be called whenever
//! the fd turns readable and yields each message once it is whole.

use std::cell::Cell;
use std::io::IoSlice;
use std::os::fd::AsFd;
use std::thread::LocalKey;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Connection, Fill};
use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result};
use crate::frame::{Frame, Header};
use crate::sys;

/// Bytes `try_send` may queue before it reports `Full` (a frame is always accepted into an
/// empty queue, whatever its size).
pub(crate) const DEFAULT_SEND_BUFFER_LIMIT: usize = 1 << 20;

/// The most memory a send buffer (a value's encoding, the queue of unsent frames) keeps
/// once it is empty: a connection lives as long as its peer, and one large message must not
/// keep its memory for all that time (a reactor serving many idle peers held each one's
/// largest message). A larger one goes to its thread's spare (see [`SPARE_ENCODING`]).
const KEPT_SEND_BUFFER: usize = 1 << 20;

thread_local! {
    /// The last send buffer over [`KEPT_SEND_BUFFER`] that a connection of this thread
    /// emptied, one of each kind: the next large send of any of them reuses it. So a thread
    /// keeps one large encoding and one large queue, however many idle connections it
    /// serves, and large values sent again and again do not fault fresh memory in each time
    /// (dropped instead, a reactor's 4 MiB replies took 4x as long, 3 000 page faults each;
    /// a blocking `send` of 40 MiB, 10 000).
    static SPARE_ENCODING: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
    static SPARE_QUEUE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Takes the thread's spare `spare`: empty if it has none, or if the thread-locals are gone
/// already (a connection used from another thread-local's destructor, as its thread exits:
/// `take` would panic there, and a panic in a thread-local's destructor aborts).
fn take_spare(spare: &'static LocalKey<Cell<Vec<u8>>>) -> Vec<u8> {
    spare.try_with(Cell::take).unwrap_or_default()
}

/// Makes `buf` the thread's spare `spare` (freed instead if the thread-locals are gone).
fn keep_spare(spare: &'static LocalKey<Cell<Vec<u8>>>, buf: Vec<u8>) {
    let _ = spare.try_with(|s| s.set(buf));
}

impl Connection {
    /// Receives one message if a whole one is here now, without blocking. Python has no
    /// direct equivalent (`poll(0)` then `recv()`).
    ///
    /// `Ok(None)` means "nothing yet": bytes of a partial message are kept for the next call.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// assert_eq!(b.try_recv::<u32>()?, None);
    /// a.send(&7u32)?;
    /// assert_eq!(b.try_recv::<u32>()?, Some(7));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn try_recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.try_next_frame(self.max_message_len)? {
            Some(frame) => self.decode_frame(frame).map(Some),
            None => Ok(None),
        }
    }

    /// Receives one byte message if a whole one is here now, without blocking.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::half_duplex()?;
    /// assert_eq!(a.try_recv_bytes()?, None);
    /// b.send_bytes(b"now")?;
    /// assert_eq!(a.try_recv_bytes()?.as_deref(), Some(&b"now"[..]));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn try_recv_bytes(&mut self) -> Result<Option<Vec<u8>>> {
        let frame = self.try_next_frame(self.max_message_len)?;
        Ok(frame.map(|f| self.frame_to_vec(f)))
    }

    /// Like [`recv_bytes_into`](Self::recv_bytes_into), without blocking: `Ok(None)` if no
    /// whole message is here yet (and `buf` is untouched).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// let mut buf = Vec::new();
    /// assert_eq!(b.try_recv_bytes_into(&mut buf)?, None);
    /// a.send_bytes(b"xyz")?;
    /// assert_eq!(b.try_recv_bytes_into(&mut buf)?, Some(3));
    /// assert_eq!(buf, b"xyz");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn try_recv_bytes_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<usize>> {
        let frame = self.try_next_frame(self.max_message_len)?;
        Ok(frame.map(|f| self.frame_into(f, buf)))
    }

    /// Receives one message, waiting at most `timeout`. Python: `poll(timeout)` then
    /// `recv()`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// let err = b.recv_timeout::<String>(Duration::from_millis(1)).unwrap_err();
    /// assert!(err.is_timeout());
    /// a.send("late")?;
    /// assert_eq!(b.recv_timeout::<String>(Duration::from_secs(5))?, "late");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Timeout` when nothing whole arrived in time (a partial message is kept); otherwise
    /// as [`recv`](Self::recv).
    pub fn recv_timeout<T: DeserializeOwned>(&mut self, timeout: Duration) -> Result<T> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => self.recv(),
        }
    }

    /// Receives one message, waiting until `deadline` at most.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::{Duration, Instant};
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send(&1.5f64)?;
    /// let deadline = Instant::now() + Duration::from_secs(5);
    /// assert_eq!(b.recv_deadline::<f64>(deadline)?, 1.5);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline<T: DeserializeOwned>(&mut self, deadline: Instant) -> Result<T> {
        let frame = self.next_frame_deadline(self.max_message_len, deadline)?;
        self.decode_frame(frame)
    }

    /// Receives one byte message, waiting at most `timeout`.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Duration;
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.send_bytes(b"b")?;
    /// assert_eq!(b.recv_bytes_timeout(Duration::from_secs(5))?, b"b");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_bytes_timeout(&mut self, timeout: Duration) -> Result<Vec<u8>> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_bytes_deadline(deadline),
            None => self.recv_bytes(),
        }
    }

    /// Receives one byte message, waiting until `deadline` at most.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use std::time::Instant;
    /// let (_a, mut b) = multiproc::Pipe::new()?;
    /// assert!(b.recv_bytes_deadline(Instant::now()).unwrap_err().is_timeout());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_bytes_deadline(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        let frame = self.next_frame_deadline(self.max_message_len, deadline)?;
        Ok(self.frame_to_vec(frame))
    }

    /// Receives one byte message that answers something this side just sent, waiting until
    /// `deadline` at most: a buffered frame comes back at once; otherwise it waits for the fd
    /// before reading, since a reply cannot be there yet (`recv_bytes_deadline` tries a
    /// read first, which here only ever says `EAGAIN`).
    pub(crate) fn recv_reply_deadline(&mut self, deadline: Instant) -> Result<Vec<u8>> {
        let limit = self.max_message_len;
        loop {
            if let Some(frame) = self.decoder.decode(limit)? {
                return Ok(self.frame_to_vec(frame));
            }
            if !sys::fd::wait_readable(self.fd()?, Some(deadline))? {
                return Err(Error::new(ErrorKind::Timeout));
            }
            if let Some(frame) = self.try_next_frame(limit)? {
                return Ok(self.frame_to_vec(frame));
            }
        }
    }

    /// As [`try_recv_bytes_into`](Self::try_recv_bytes_into), but with at most `reads`
    /// reads of the fd: a large frame still streaming in after them is left for the next
    /// call, so one peer sending a huge message cannot hold a reactor's loop for as long as
    /// it keeps sending. `Spent` says the fd may hold more, which an edge-triggered waiter
    /// will not be told again.
    pub(crate) fn try_recv_bytes_into_within(
        &mut self,
        buf: &mut Vec<u8>,
        reads: usize,
    ) -> Result<Within> {
        Ok(match self.next_frame_within(self.max_message_len, reads)? {
            Found::Frame(frame) => Within::Message(self.frame_into(frame, buf)),
            Found::Drained => Within::Drained,
            Found::Spent => Within::Spent,
        })
    }

    /// Decodes a frame from what is here now, reading without blocking.
    fn try_next_frame(&mut self, limit: u64) -> Result<Option<Frame>> {
        Ok(match self.next_frame_within(limit, usize::MAX)? {
            Found::Frame(frame) => Some(frame),
            Found::Drained | Found::Spent => None,
        })
    }

    /// Decodes a frame from what is here now, with at most `reads` reads of the fd.
    fn next_frame_within(&mut self, limit: u64, reads: usize) -> Result<Found> {
        self.check_readable()?;
        for _ in 0..reads {
            if let Some(frame) = self.decoder.decode(limit)? {
                return Ok(Found::Frame(frame));
            }
            match self.fill(false)? {
                Fill::Data => {}
                Fill::Eof => return Err(self.decoder.eof_error()),
                Fill::WouldBlock => return Ok(Found::Drained),
            }
        }
        Ok(match self.decoder.decode(limit)? {
            Some(frame) => Found::Frame(frame),
            None => Found::Spent,
        })
    }

    fn next_frame_deadline(&mut self, limit: u64, deadline: Instant) -> Result<Frame> {
        loop {
            if let Some(frame) = self.try_next_frame(limit)? {
                return Ok(frame);
            }
            if !sys::fd::wait_readable(self.fd()?, Some(deadline))? {
                return Err(Error::new(ErrorKind::Timeout));
            }
        }
    }

    /// Whether a `recv` would return at once: a whole frame is buffered, the stream ended
    /// or broke, or the end is closed or write-only (the call fails at once). Reads what is
    /// on the fd without blocking to find out.
    pub(crate) fn ready_now(&mut self) -> bool {
        if !self.readable || self.fd.is_none() {
            return true;
        }
        loop {
            if self.eof || self.decoder.frame_ready(self.max_message_len) {
                return true;
            }
            match self.fill(false) {
                Ok(Fill::Data) => {}
                Ok(Fill::WouldBlock) => return false,
                // recv will find the end or the error again and report it.
                Ok(Fill::Eof) | Err(_) => return true,
            }
        }
    }

    /// Whether the other end is gone as far as the fd can tell without reading: an error
    /// or hang-up on it (a write-only end's reader closed). A closed connection counts.
    pub(crate) fn peer_gone(&self) -> bool {
        self.fd
            .as_ref()
            .is_none_or(|fd| sys::fd::hung_up(fd.as_fd()))
    }

    /// Whether a whole frame, or the end of the stream, is already in user space, or the
    /// end is write-only (a receive fails at once, as `ready_now` says too: `wait` must not
    /// block on an fd that will never bring what it waits for).
    pub(crate) fn ready_buffered(&self) -> bool {
        !self.readable || self.eof || self.decoder.frame_ready(self.max_message_len)
    }

    /// Sends `value` without blocking: written at once if the fd takes it, else queued for
    /// [`flush`](Self::flush). Messages keep their order whichever way they go. On
    /// [`close`](Self::close) or drop the queue is written only as far as the fd takes it
    /// without blocking: flush it first to deliver it all.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, mut b) = multiproc::Pipe::new()?;
    /// a.try_send(&("id", 1))?;
    /// assert!(a.flush()?);
    /// assert_eq!(b.recv::<(String, i32)>()?, ("id".to_string(), 1));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Full` when the queue holds messages and this one would take it past
    /// [`send_buffer_limit`](Self::send_buffer_limit) (nothing is queued); otherwise as
    /// [`send`](Self::send).
    pub fn try_send<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.check_writable()?;
        self.with_encoded(value, Connection::try_send_frame)
    }

    /// Encodes `value` into the reusable buffer and hands the payload to `then`.
    pub(super) fn with_encoded<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        then: impl FnOnce(&mut Connection, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut encoded = std::mem::take(&mut self.encoded);
        // Into the thread's large spare if it has one (ours is at most `KEPT_SEND_BUFFER`);
        // `idle` is the buffer this encoding does not use, whichever that is.
        let mut idle = take_spare(&SPARE_ENCODING);
        if idle.capacity() > encoded.capacity() {
            std::mem::swap(&mut encoded, &mut idle);
        }
        encoded.clear();
        let result = match self.codec.encode(value, &mut encoded) {
            Ok(()) => then(self, &encoded),
            Err(e) => Err(e),
        };
        if encoded.capacity() > KEPT_SEND_BUFFER {
            keep_spare(&SPARE_ENCODING, encoded);
            self.encoded = idle;
        } else {
            self.encoded = encoded;
        }
        result
    }

    /// Sends `buf` as one message without blocking; see [`try_send`](Self::try_send).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// use multiproc::ErrorKind;
    /// let (mut a, b) = multiproc::Pipe::new()?;
    /// a.set_send_buffer_limit(1 << 16);
    /// let chunk = vec![0u8; 1 << 15];
    /// // Nobody reads b: the socket buffer fills, then our queue, then Full.
    /// let err = loop {
    ///     if let Err(e) = a.try_send_bytes(&chunk) {
    ///         break e;
    ///     }
    /// };
    /// assert_eq!(err.kind(), ErrorKind::Full);
    /// assert!(a.pending_send_len() > 0);
    /// # drop(b);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_send_bytes(&mut self, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.try_send_frame(buf)
    }

    fn try_send_frame(&mut self, payload: &[u8]) -> Result<()> {
        let header = Header::for_len(payload.len());
        let header = header.as_bytes();
        let frame_len = header.len() + payload.len();
        self.flush()?;
        let pending = self.pending_send_len();
        if pending > 0 && pending + frame_len > self.send_buffer_limit {
            return Err(Error::with_message(
                ErrorKind::Full,
                format!(
                    "send buffer full: {pending} bytes queued, limit {}",
                    self.send_buffer_limit
                ),
            ));
        }
        let mut written = 0;
        if pending == 0 {
            let bufs = [IoSlice::new(header), IoSlice::new(payload)];
            written = sys::fd::try_write(self.fd()?, self.kind, &bufs)?;
        }
        if written < frame_len {
            self.reserve_queue(frame_len - written);
        }
        if written < header.len() {
            self.queued.extend_from_slice(&header[written..]);
            self.queued.extend_from_slice(payload);
        } else if written < frame_len {
            self.queued
                .extend_from_slice(&payload[written - header.len()..]);
        }
        Ok(())
    }

    /// Appends one frame to the send queue without writing anything (the reactor flushes
    /// once per round, so many small messages leave in one syscall).
    pub(crate) fn queue_frame(&mut self, payload: &[u8]) -> Result<()> {
        self.check_writable()?;
        let header = Header::for_len(payload.len());
        self.reserve_queue(header.as_bytes().len() + payload.len());
        self.queued.extend_from_slice(header.as_bytes());
        self.queued.extend_from_slice(payload);
        Ok(())
    }

    /// Encodes `value` and appends it to the send queue without writing anything.
    pub(crate) fn queue_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.check_writable()?;
        self.with_encoded(value, Connection::queue_frame)
    }

    /// Decodes a payload with this connection's codec.
    pub(crate) fn decode_payload<T: DeserializeOwned>(&mut self, payload: &[u8]) -> Result<T> {
        self.codec.decode(payload)
    }

    /// Writes queued messages without blocking, as far as the fd takes them; true when the
    /// queue is empty afterwards.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, _b) = multiproc::Pipe::new()?;
    /// assert!(a.flush()?); // nothing queued
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// `Closed`, `BrokenPipe` (the peer is gone), `Io`.
    pub fn flush(&mut self) -> Result<bool> {
        // Closed is Closed here too, as from every other I/O method, even with nothing queued.
        self.fd()?;
        while self.queued_pos < self.queued.len() {
            let bufs = [IoSlice::new(&self.queued[self.queued_pos..])];
            let n = sys::fd::try_write(self.fd()?, self.kind, &bufs)?;
            if n == 0 {
                if self.queued_pos > self.queued.len() / 2 {
                    self.queued.drain(..self.queued_pos);
                    self.queued_pos = 0;
                }
                return Ok(false);
            }
            self.queued_pos += n;
        }
        self.clear_queued();
        Ok(true)
    }

    /// Writes every queued message, blocking as long as it takes.
    pub(crate) fn flush_blocking(&mut self) -> Result<()> {
        if self.queued_pos < self.queued.len() {
            let fd = self.fd()?;
            let mut bufs = [IoSlice::new(&self.queued[self.queued_pos..])];
            sys::fd::write_all(fd, self.kind, &mut bufs)?;
        }
        self.clear_queued();
        Ok(())
    }

    /// Before `len` more bytes are queued: an empty queue they would grow past its capacity
    /// takes the thread's large spare, if it has one.
    fn reserve_queue(&mut self, len: usize) {
        if self.queued.is_empty() && len > self.queued.capacity() {
            let spare = take_spare(&SPARE_QUEUE);
            if spare.capacity() > self.queued.capacity() {
                self.queued = spare;
            }
        }
    }

    /// Empties the send queue, all of it written; a large allocation goes to the thread's
    /// spare.
    fn clear_queued(&mut self) {
        self.queued.clear();
        if self.queued.capacity() > KEPT_SEND_BUFFER {
            keep_spare(&SPARE_QUEUE, std::mem::take(&mut self.queued));
        }
        self.queued_pos = 0;
    }

    /// Bytes queued by `try_send*` and not yet written (frame headers included).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, _b) = multiproc::Pipe::new()?;
    /// a.try_send_bytes(b"fits in the socket buffer")?;
    /// assert_eq!(a.pending_send_len(), 0);
    /// # Ok(()) }
    /// ```
    pub fn pending_send_len(&self) -> usize {
        self.queued.len() - self.queued_pos
    }

    /// How many bytes `try_send*` may queue before reporting `Full` (default 1 MiB).
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (a, _b) = multiproc::Pipe::new()?;
    /// assert_eq!(a.send_buffer_limit(), 1 << 20);
    /// # Ok(()) }
    /// ```
    pub fn send_buffer_limit(&self) -> usize {
        self.send_buffer_limit
    }

    /// Sets how many bytes `try_send*` may queue before reporting `Full`. A message is
    /// always accepted into an empty queue, whatever its size.
    ///
    /// # Examples
    /// ```
    /// # fn main() -> multiproc::Result<()> {
    /// let (mut a, _b) = multiproc::Pipe::new()?;
    /// a.set_send_buffer_limit(4096);
    /// assert_eq!(a.send_buffer_limit(), 4096);
    /// # Ok(()) }
    /// ```
    pub fn set_send_buffer_limit(&mut self, limit: usize) {
        self.send_buffer_limit = limit;
    }
}

/// What [`Connection::next_frame_within`] found.
enum Found {
    Frame(Frame),
    /// Nothing more to read now.
    Drained,
    /// The reads allowed are spent.
    Spent,
}

/// What [`Connection::try_recv_bytes_into_within`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Within {
    /// A message of this many bytes.
    Message(usize),
    /// No whole message, and nothing more to read now.
    Drained,
    /// No whole message yet, and the reads allowed are spent: there may be more to read.
    Spent,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_streaming_in_is_read_a_few_reads_at_a_time() -> Result<()> {
        let (mut ours, theirs) = crate::Pipe::new()?;
        let len: usize = 200 * 1024;
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        // The header and the first 100 KiB: the rest comes later.
        let mut start = (len as u32).to_be_bytes().to_vec();
        start.extend_from_slice(&payload[..100 * 1024]);
        let written = rustix::io::write(&theirs, &start)?;
        assert_eq!(written, start.len(), "the socket took the start at once");
        let mut buf = Vec::new();
        // One read takes what the read-ahead buffer holds (64 KiB), not all that waits.
        assert_eq!(ours.try_recv_bytes_into_within(&mut buf, 1)?, Within::Spent);
        assert_eq!(
            ours.try_recv_bytes_into_within(&mut buf, 64)?,
            Within::Drained
        );
        let mut rest = &payload[100 * 1024..];
        while !rest.is_empty() {
            let n = rustix::io::write(&theirs, rest)?;
            rest = &rest[n..];
            if let Within::Message(n) = ours.try_recv_bytes_into_within(&mut buf, 64)? {
                assert!(rest.is_empty() && n == len);
            }
        }
        if buf.len() != len {
            assert_eq!(
                ours.try_recv_bytes_into_within(&mut buf, 64)?,
                Within::Message(len)
            );
        }
        assert!(buf == payload, "the message came out whole");
        Ok(())
    }
}
