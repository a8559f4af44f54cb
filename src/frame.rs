//! CPython's message framing, as a sans-IO encoder and incremental decoder: bytes in, frames out.
//!
//! The wire format is `multiprocessing.connection.Connection._send_bytes`/`_recv_bytes` (CPython
//! `Lib/multiprocessing/connection.py`), described in `docs/wire-format.md`:
//!
//! ```text
//! short frame (payload <= 0x7fff_ffff bytes)
//! +-----------------------------+------------------+
//! | i32 big-endian length  (n)  | n bytes payload  |
//! +-----------------------------+------------------+
//!
//! long frame (payload > 0x7fff_ffff bytes)
//! +----------------+---------------------------+------------------+
//! | i32 BE  -1     | u64 big-endian length (n) | n bytes payload  |
//! +----------------+---------------------------+------------------+
//! ```
//!
//! Nothing here touches a file descriptor, which is what lets the decoder be property-tested
//! and fuzzed. The decoder keeps one read-ahead buffer for small frames (many frames per
//! `read(2)`) and reads a large frame's payload straight into the `Vec` it returns, as CPython
//! does, so a big message is copied once. That `Vec` grows only as payload bytes arrive: a
//! header claiming 2^62 bytes followed by EOF allocates nothing beyond the read-ahead buffer.

use crate::error::{Error, ErrorKind, Result};

/// Largest payload CPython sends with a 4-byte header.
pub(crate) const SHORT_MAX: usize = 0x7fff_ffff;
/// The 4-byte header value that announces an 8-byte length.
const LONG_MARKER: i32 = -1;
/// Longest header: the marker plus the 8-byte length.
pub(crate) const HEADER_MAX: usize = 12;
/// Read-ahead buffer size. Frames (header included) that fit are decoded in place; larger
/// ones get their own `Vec`.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// An encoded frame header: 4 bytes, or 12 for payloads over [`SHORT_MAX`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    bytes: [u8; HEADER_MAX],
    len: u8,
}

impl Header {
    /// The header CPython writes for a payload of `payload_len` bytes.
    pub(crate) fn for_len(payload_len: usize) -> Header {
        let mut bytes = [0; HEADER_MAX];
        if payload_len > SHORT_MAX {
            // Above 0x7fffffff bytes CPython writes -1, then an 8-byte length. A CPython peer
            // reads the 4-byte header as signed and would misparse anything else.
            bytes[..4].copy_from_slice(&LONG_MARKER.to_be_bytes());
            bytes[4..].copy_from_slice(&(payload_len as u64).to_be_bytes());
            Header { bytes, len: 12 }
        } else {
            bytes[..4].copy_from_slice(&(payload_len as u32).to_be_bytes());
            Header { bytes, len: 4 }
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// Parses a header from the front of `bytes`: `Ok(None)` if more bytes are needed, else the
/// header's length and the payload's length.
///
/// # Errors
/// `BadMessageLength` for a negative length other than the -1 marker.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Option<(usize, u64)>> {
    let Some(first) = bytes.first_chunk::<4>() else {
        return Ok(None);
    };
    match i32::from_be_bytes(*first) {
        n if n >= 0 => Ok(Some((4, n as u64))),
        LONG_MARKER => match bytes[4..].first_chunk::<8>() {
            Some(long) => Ok(Some((HEADER_MAX, u64::from_be_bytes(*long)))),
            None => Ok(None),
        },
        n => Err(Error::with_message(
            ErrorKind::BadMessageLength,
            format!("bad message length: negative length {n} in frame header"),
        )),
    }
}

/// Where a decoded frame's payload is.
#[derive(Debug)]
pub(crate) enum Frame {
    /// In the read-ahead buffer: pass to [`FrameDecoder::slice`]. Valid until the next call
    /// that reads or decodes.
    Buffered { start: usize, end: usize },
    /// A large frame, read into its own allocation.
    Owned(Vec<u8>),
}

/// A large frame being read straight into its final allocation.
#[derive(Debug)]
struct LargeFrame {
    body: Vec<u8>,
    total: usize,
    /// Its header's length: bytes received that are not in `body`, still counted as
    /// buffered (a connection passed on with them would lose the frame).
    header_len: usize,
}

/// Incremental frame decoder over a read-ahead buffer.
///
/// The I/O layer loops: [`decode`](Self::decode); if it yields nothing, fill
/// [`read_target`](Self::read_target) (at most the limit it returns) and
/// try again. At EOF, [`eof_error`](Self::eof_error) says whether the stream ended cleanly.
#[derive(Debug, Default)]
pub(crate) struct FrameDecoder {
    /// Read-ahead bytes; unconsumed data is `buf[pos..]`.
    buf: Vec<u8>,
    pos: usize,
    large: Option<LargeFrame>,
    /// Set after a bad length: the payload was not consumed, so the stream position is lost.
    broken: bool,
    /// The previous frame was large; read just a header next, so a stream of large frames
    /// does not copy each one's first bytes out of the read-ahead buffer.
    last_large: bool,
}

impl FrameDecoder {
    pub(crate) fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Yields the next whole frame, if the bytes so far hold one.
    ///
    /// A frame whose payload exceeds `limit` is refused with `BadMessageLength`, as are
    /// invalid headers; the payload is left unread and every later call fails the same way.
    pub(crate) fn decode(&mut self, limit: u64) -> Result<Option<Frame>> {
        if self.broken {
            return Err(Error::with_message(
                ErrorKind::BadMessageLength,
                "bad message length: connection is no longer readable after an earlier bad \
                 message length",
            ));
        }
        if let Some(large) = &mut self.large {
            if large.total as u64 > limit {
                // Started under a higher limit (or by a read before any decode): refused
                // now, as it would have been from its header.
                self.broken = true;
                return Err(over_limit(large.total as u64, limit));
            }
            if large.body.len() < large.total {
                return Ok(None);
            }
            let body = std::mem::take(&mut large.body);
            self.large = None;
            self.last_large = true;
            return Ok(Some(Frame::Owned(body)));
        }
        let avail = &self.buf[self.pos..];
        let (header_len, payload_len) = match parse_header(avail) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        if payload_len > limit || payload_len > isize::MAX as u64 {
            self.broken = true;
            return Err(over_limit(payload_len, limit));
        }
        let payload_len = payload_len as usize;
        if avail.len() - header_len >= payload_len {
            let start = self.pos + header_len;
            self.pos = start + payload_len;
            self.last_large = false;
            return Ok(Some(Frame::Buffered {
                start,
                end: self.pos,
            }));
        }
        self.last_large = false;
        self.start_large_frame();
        Ok(None)
    }

    /// If the buffered bytes start a frame that does not fit the read-ahead buffer (and is
    /// not wholly here), moves it to a vector of its own, which the reads then fill.
    /// Whoever reads first (`decode`, or a read to see whether a frame is ready) does it:
    /// otherwise the buffer would fill up with no room left to read into.
    fn start_large_frame(&mut self) {
        if self.large.is_some() {
            return;
        }
        let avail = &self.buf[self.pos..];
        let Ok(Some((header_len, payload_len))) = parse_header(avail) else {
            return;
        };
        let have = &avail[header_len..];
        if payload_len > isize::MAX as u64
            || (have.len() as u64) >= payload_len
            || header_len as u64 + payload_len <= READ_AHEAD as u64
        {
            return;
        }
        let payload_len = payload_len as usize;
        // Grow only as bytes arrive: start at what is here plus one read-ahead's worth.
        let initial = payload_len.min(READ_AHEAD.max(2 * have.len()));
        let mut body = Vec::with_capacity(initial);
        body.extend_from_slice(have);
        self.pos = self.buf.len();
        self.large = Some(LargeFrame {
            body,
            total: payload_len,
            header_len,
        });
    }

    /// The bytes of a [`Frame::Buffered`].
    pub(crate) fn slice(&self, start: usize, end: usize) -> &[u8] {
        &self.buf[start..end]
    }

    /// The vector the next read appends to, and how many bytes of its spare capacity that
    /// read may fill: never past the end of a large frame (the next frame's bytes belong in
    /// the read-ahead buffer).
    pub(crate) fn read_target(&mut self) -> (&mut Vec<u8>, usize) {
        self.start_large_frame();
        if let Some(large) = &mut self.large {
            let body = &mut large.body;
            let missing = large.total - body.len();
            if body.len() == body.capacity() {
                body.reserve_exact(missing.min(body.capacity().max(READ_AHEAD)));
            }
            let limit = missing.min(body.capacity() - body.len());
            return (body, limit);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(READ_AHEAD);
        }
        if self.last_large && matches!(parse_header(&self.buf[self.pos..]), Ok(Some(_))) {
            // The header after a large frame is in, and that frame is not large (it would
            // have moved above): back to full reads, whether or not it was decoded yet.
            self.last_large = false;
        }
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.buf.len() == self.buf.capacity() || frame_overruns(&self.buf, self.pos) {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let spare = self.buf.capacity() - self.buf.len();
        let limit = if self.last_large {
            spare.min(HEADER_MAX.saturating_sub(self.buf.len() - self.pos).max(1))
        } else {
            spare
        };
        (&mut self.buf, limit)
    }

    /// True when [`decode`](Self::decode) with `limit` would return without needing more
    /// bytes: a whole frame is buffered, or it would fail at once (a broken stream, or a
    /// buffered header over `limit`).
    pub(crate) fn frame_ready(&self, limit: u64) -> bool {
        if self.broken {
            return true;
        }
        if let Some(large) = &self.large {
            return large.body.len() == large.total || large.total as u64 > limit;
        }
        match parse_header(&self.buf[self.pos..]) {
            Ok(Some((h, p))) => {
                p > limit || p > isize::MAX as u64 || (self.buf.len() - self.pos - h) as u64 >= p
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// The payload length of the next frame, once its header is here; `None` before that,
    /// and on a broken stream or an invalid header (which `decode` reports), a length over
    /// `isize::MAX` included: the caller's refusal must not stand in for `decode`'s.
    pub(crate) fn next_len(&self) -> Option<u64> {
        if self.broken {
            return None;
        }
        if let Some(large) = &self.large {
            return Some(large.total as u64);
        }
        match parse_header(&self.buf[self.pos..]) {
            Ok(Some((_, len))) if len <= isize::MAX as u64 => Some(len),
            _ => None,
        }
    }

    /// The error for end of stream now: `Eof` at a frame boundary, `TruncatedMessage` inside
    /// a frame.
    pub(crate) fn eof_error(&self) -> Error {
        if self.large.is_some() || self.pos < self.buf.len() {
            Error::new(ErrorKind::TruncatedMessage)
        } else {
            Error::new(ErrorKind::Eof)
        }
    }

    /// Bytes received but not yet returned as frames.
    pub(crate) fn buffered_len(&self) -> usize {
        self.buf.len() - self.pos
            + self
                .large
                .as_ref()
                .map_or(0, |l| l.header_len + l.body.len())
    }
}

/// The error for a frame of `len` bytes over `limit`.
fn over_limit(len: u64, limit: u64) -> Error {
    let message = if limit >= isize::MAX as u64 {
        // No limit was set: the header claims more than any allocation can hold.
        format!("bad message length: frame of {len} bytes is larger than memory can hold")
    } else {
        format!("bad message length: frame of {len} bytes exceeds the limit of {limit}")
    };
    Error::with_message(ErrorKind::BadMessageLength, message)
}

/// Whether the frame starting at `buf[pos..]` would run past the buffer's capacity, so the
/// buffer must be compacted before reading more.
fn frame_overruns(buf: &Vec<u8>, pos: usize) -> bool {
    match parse_header(&buf[pos..]) {
        Ok(Some((h, p))) => pos as u64 + h as u64 + p > buf.capacity() as u64,
        _ => buf.capacity() - pos < HEADER_MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the I/O layer: decode what is there, then "read" at most the limit the
    /// decoder allows from `bytes`, until `bytes` is used up and nothing more decodes.
    pub(crate) fn push(d: &mut FrameDecoder, mut bytes: &[u8], limit: u64) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        loop {
            while let Some(frame) = d.decode(limit)? {
                out.push(match frame {
                    Frame::Buffered { start, end } => d.slice(start, end).to_vec(),
                    Frame::Owned(v) => v,
                });
            }
            if bytes.is_empty() {
                return Ok(out);
            }
            let (target, max) = d.read_target();
            assert!(max > 0, "decoder offered an empty read target");
            let n = max.min(bytes.len());
            target.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
    }

    fn encode(payload: &[u8]) -> Vec<u8> {
        let mut v = Header::for_len(payload.len()).as_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn header_matches_cpython() {
        assert_eq!(Header::for_len(5).as_bytes(), &[0, 0, 0, 5]);
        assert_eq!(
            Header::for_len(SHORT_MAX).as_bytes(),
            &[0x7f, 0xff, 0xff, 0xff]
        );
        let long = Header::for_len(SHORT_MAX + 1);
        assert_eq!(
            long.as_bytes(),
            &[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0x80, 0, 0, 0]
        );
    }

    #[test]
    fn negative_length_other_than_marker_is_bad_length() {
        let err = parse_header(&(-2i32).to_be_bytes()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessageLength);
    }

    /// `next_len` tells a frame's length from its header alone, consuming nothing: a
    /// large frame's while its payload streams in, and nothing once the stream is broken.
    #[test]
    fn next_len_reads_the_header_without_consuming() {
        let mut d = FrameDecoder::new();
        assert_eq!(d.next_len(), None);
        let small = encode(b"abcdef");
        push(&mut d, &small[..3], u64::MAX).unwrap();
        assert_eq!(d.next_len(), None, "half a header");
        push(&mut d, &small[3..5], u64::MAX).unwrap();
        assert_eq!(d.next_len(), Some(6));
        assert_eq!(push(&mut d, &small[5..], u64::MAX).unwrap(), [b"abcdef"]);
        assert_eq!(d.next_len(), None);
        let large = encode(&vec![7; READ_AHEAD * 2]);
        assert!(
            push(&mut d, &large[..READ_AHEAD], u64::MAX)
                .unwrap()
                .is_empty()
        );
        assert_eq!(d.next_len(), Some(2 * READ_AHEAD as u64));
        assert_eq!(
            push(&mut d, &large[READ_AHEAD..], u64::MAX).unwrap().len(),
            1
        );
        let (target, room) = d.read_target();
        assert!(room >= 11);
        target.extend_from_slice(&encode(b"toolong"));
        assert_eq!(d.next_len(), Some(7));
        assert!(d.decode(3).is_err());
        assert_eq!(d.next_len(), None, "broken");
    }

    #[test]
    fn long_marker_with_small_length_is_accepted() {
        let mut d = FrameDecoder::new();
        let mut bytes = (-1i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&3u64.to_be_bytes());
        bytes.extend_from_slice(b"abc");
        assert_eq!(
            push(&mut d, &bytes, u64::MAX).unwrap(),
            vec![b"abc".to_vec()]
        );
    }

    #[test]
    fn huge_header_then_eof_allocates_only_read_ahead() {
        let mut d = FrameDecoder::new();
        let mut bytes = (-1i32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&(1u64 << 62).to_be_bytes());
        bytes.extend_from_slice(b"xy");
        assert!(push(&mut d, &bytes, u64::MAX).unwrap().is_empty());
        assert!(d.read_target().0.capacity() <= 2 * READ_AHEAD);
        assert_eq!(d.eof_error().kind(), ErrorKind::TruncatedMessage);
    }

    #[test]
    fn over_limit_keeps_payload_and_breaks_stream() {
        let mut d = FrameDecoder::new();
        let err = push(&mut d, &encode(b"0123456789"), 4).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessageLength);
        assert_eq!(d.buffered_len(), 14);
        assert!(d.frame_ready(4));
        assert_eq!(
            d.decode(u64::MAX).unwrap_err().kind(),
            ErrorKind::BadMessageLength
        );
    }

    /// Reads as `poll` does: everything there is, asking only `frame_ready` in between,
    /// and decodes afterwards. A frame longer than the read-ahead buffer must move to its
    /// own vector on the way, never leaving a read with no room.
    #[test]
    fn reads_before_decoding_never_run_out_of_room() {
        for len in [
            READ_AHEAD - 4,
            READ_AHEAD - 3,
            READ_AHEAD + 1,
            3 * READ_AHEAD,
        ] {
            let big: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut stream = encode(b"a");
            stream.extend(encode(&big));
            stream.extend(encode(b"z"));
            let mut d = FrameDecoder::new();
            let mut rest = &stream[..];
            while !rest.is_empty() && !d.frame_ready(u64::MAX) {
                let (target, max) = d.read_target();
                assert!(max > 0, "no room to read with {len}-byte frame pending");
                let n = max.min(rest.len()).min(1000);
                target.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            let mut got = push(&mut d, rest, u64::MAX).unwrap();
            got.extend(push(&mut d, &[], u64::MAX).unwrap());
            assert_eq!(got, vec![b"a".to_vec(), big, b"z".to_vec()], "len {len}");
        }
    }

    /// A large frame moved to its own vector still counts its header as buffered: a
    /// connection passed on with it would lose the frame.
    #[test]
    fn a_large_frame_started_counts_its_header_as_buffered() {
        let bytes = encode(&vec![1u8; 3 * READ_AHEAD]);
        for end in [4, 5, READ_AHEAD, 2 * READ_AHEAD] {
            let mut d = FrameDecoder::new();
            let mut rest = &bytes[..end];
            while !rest.is_empty() {
                let (target, max) = d.read_target();
                let n = max.min(rest.len());
                target.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
            }
            let _ = d.read_target(); // moves the frame if the header is in
            assert_eq!(d.buffered_len(), end, "after {end} bytes read");
        }
    }

    /// After a large frame, reads are cut to a header's length (so that a stream of large
    /// frames does not copy each one's start out of the read-ahead buffer); once the next
    /// header is in, and its frame is small, they are whole again, decoded or not.
    #[test]
    fn reads_after_a_large_frame_grow_back_once_the_next_header_is_in() {
        let mut stream = encode(&vec![2u8; 2 * READ_AHEAD]);
        let small = vec![3u8; 60_000];
        stream.extend(encode(&small));
        let mut d = FrameDecoder::new();
        let split = stream.len() - small.len() - 4;
        assert_eq!(push(&mut d, &stream[..split], u64::MAX).unwrap().len(), 1);
        let mut rest = &stream[split..];
        let mut reads = 0;
        while !d.frame_ready(u64::MAX) {
            let (target, max) = d.read_target();
            let n = max.min(rest.len());
            target.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            reads += 1;
        }
        assert!(reads <= 3, "{reads} reads for a 60 000-byte frame");
        assert_eq!(push(&mut d, &[], u64::MAX).unwrap(), vec![small]);
    }

    #[test]
    fn a_large_frame_started_is_held_to_a_lower_limit() {
        let mut d = FrameDecoder::new();
        let bytes = encode(&vec![1u8; 3 * READ_AHEAD]);
        assert!(
            push(&mut d, &bytes[..2 * READ_AHEAD], u64::MAX)
                .unwrap()
                .is_empty()
        );
        assert!(d.frame_ready(10), "a recv with limit 10 fails at once");
        let err = d.decode(10).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessageLength);
        assert!(d.decode(u64::MAX).is_err(), "the stream stays broken");
    }

    #[test]
    fn large_and_small_frames_interleave() {
        let big = vec![7u8; READ_AHEAD * 3 + 5];
        let mut stream = encode(b"a");
        stream.extend(encode(&big));
        stream.extend(encode(b""));
        stream.extend(encode(b"tail"));
        let mut d = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(1000) {
            got.extend(push(&mut d, chunk, u64::MAX).unwrap());
        }
        assert_eq!(got, vec![b"a".to_vec(), big, vec![], b"tail".to_vec()]);
        assert_eq!(d.eof_error().kind(), ErrorKind::Eof);
    }
}
