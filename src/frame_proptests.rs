//! Property tests for the frame decoder in [`crate::frame`].
//!
//! A driver plays the I/O layer exactly as `Connection` does: decode until nothing more comes
//! out, then "read" into [`FrameDecoder::read_target`], at most the limit it returns and at most
//! what the current chunk holds (a pipe's `read(2)` never returns more than has arrived, so a
//! chunk boundary is a `WouldBlock`). At every read the driver checks the decoder's promises:
//! the limit is never 0 while no frame is complete, it fits the target's spare capacity, and
//! the target's capacity stays within `2 * (bytes fed) + 2 * READ_AHEAD`.
//!
//! Streams are compared against a reference parser written from the wire format alone
//! (`reference`), so any bytes, not just well-formed ones, have an expected outcome.

use proptest::prelude::*;
use proptest::sample::Index;

use crate::error::{Error, ErrorKind};
use crate::frame::{Frame, FrameDecoder, HEADER_MAX, Header, READ_AHEAD, SHORT_MAX, parse_header};

const RA: usize = READ_AHEAD;

/// The I/O layer's side of the decoder, with the checks it is owed.
struct Driver {
    d: FrameDecoder,
    limit: u64,
    /// Bytes handed to the decoder so far.
    fed: usize,
    frames: Vec<Vec<u8>>,
    /// Largest read-target capacity seen.
    peak_capacity: usize,
}

impl Driver {
    fn new(limit: u64) -> Driver {
        Driver {
            d: FrameDecoder::new(),
            limit,
            fed: 0,
            frames: Vec::new(),
            peak_capacity: 0,
        }
    }

    /// Decodes every whole frame buffered so far. Also checks that `frame_ready` and
    /// `next_len` agree with what `decode` does next (`recv_bytes_into_slice` refuses a
    /// frame on `next_len` alone, so that must be the length of the frame `decode` yields,
    /// and never a length `decode` refuses under the limit).
    fn drain(&mut self) -> Result<(), Error> {
        loop {
            let ready = self.d.frame_ready(self.limit);
            let next = self.d.next_len();
            let result = self.d.decode(self.limit);
            match &result {
                Ok(None) => assert!(!ready, "frame_ready() said yes but decode found nothing"),
                Ok(Some(_)) => assert!(ready, "decode yielded a frame frame_ready() missed"),
                Err(_) => assert!(ready, "decode failed at once but frame_ready() said no"),
            }
            match &result {
                Ok(Some(Frame::Buffered { start, end })) => {
                    assert_eq!(next, Some((end - start) as u64), "next_len, then a frame");
                }
                Ok(Some(Frame::Owned(body))) => {
                    assert_eq!(next, Some(body.len() as u64), "next_len, then a frame");
                }
                Ok(None) => assert!(
                    next.is_none_or(|n| n <= self.limit),
                    "next_len {next:?} over the limit {}, and decode did not refuse it",
                    self.limit
                ),
                Err(_) => assert!(
                    next.is_none_or(|n| n > self.limit),
                    "next_len {next:?} within the limit {}, and decode refused it",
                    self.limit
                ),
            }
            match result? {
                None => return Ok(()),
                Some(Frame::Buffered { start, end }) => {
                    self.frames.push(self.d.slice(start, end).to_vec());
                }
                Some(Frame::Owned(body)) => {
                    assert!(
                        body.capacity() <= body.len() + 2 * RA,
                        "owned frame of {} bytes holds {} bytes of capacity",
                        body.len(),
                        body.capacity()
                    );
                    self.frames.push(body);
                }
            }
        }
    }

    /// One `read(2)` that finds `avail` waiting: appends what the decoder allows, returns how
    /// many bytes that was.
    fn read(&mut self, avail: &[u8]) -> usize {
        let bound = 2 * self.fed + 2 * RA;
        let (target, max) = self.d.read_target();
        let capacity = target.capacity();
        assert!(
            max > 0,
            "read_target offered 0 bytes while no frame is complete"
        );
        assert!(
            max <= capacity - target.len(),
            "read limit {max} exceeds the spare capacity {}",
            capacity - target.len()
        );
        assert!(
            capacity <= bound,
            "read target holds {capacity} bytes of capacity after {} bytes fed",
            self.fed
        );
        let n = max.min(avail.len());
        target.extend_from_slice(&avail[..n]);
        assert_eq!(target.capacity(), capacity, "the read reallocated");
        self.peak_capacity = self.peak_capacity.max(capacity);
        self.fed += n;
        n
    }

    /// Delivers one chunk: reads until it is used up, decoding before every read.
    fn feed(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let mut rest = chunk;
        while !rest.is_empty() {
            self.drain()?;
            let n = self.read(rest);
            rest = &rest[n..];
        }
        self.drain()
    }

    /// Delivers `stream` cut into pieces of the sizes in `chunks`, cycled.
    fn feed_chunked(&mut self, stream: &[u8], chunks: &[usize]) -> Result<(), Error> {
        let mut rest = stream;
        for &size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.clamp(1, rest.len()));
            self.feed(piece)?;
            rest = tail;
        }
        // Bytes that arrived with no read in between still get decoded.
        self.drain()
    }
}

/// What a byte stream means, by the wire format alone.
#[derive(Debug, PartialEq)]
enum End {
    /// Ends at a frame boundary.
    Clean,
    /// Ends inside a header or a payload.
    Partial,
    /// A header that must be refused: negative, over the limit, or over `isize::MAX`.
    Refused,
}

fn reference(stream: &[u8], limit: u64) -> (Vec<Vec<u8>>, End) {
    let mut frames = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (frames, End::Clean);
        }
        if rest.len() < 4 {
            return (frames, End::Partial);
        }
        let short = i32::from_be_bytes(rest[..4].try_into().unwrap());
        let (header, len) = match short {
            n if n >= 0 => (4, n as u64),
            -1 if rest.len() < 12 => return (frames, End::Partial),
            -1 => (12, u64::from_be_bytes(rest[4..12].try_into().unwrap())),
            _ => return (frames, End::Refused),
        };
        if len > limit || len > isize::MAX as u64 {
            return (frames, End::Refused);
        }
        let body = &rest[header..];
        if (body.len() as u64) < len {
            return (frames, End::Partial);
        }
        frames.push(body[..len as usize].to_vec());
        rest = &body[len as usize..];
    }
}

/// A payload whose every byte depends on its position and seed, so a shifted, truncated or
/// swapped payload compares unequal.
fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8) ^ ((i >> 8) as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[derive(Debug, Clone)]
struct Msg {
    len: usize,
    seed: u8,
    /// Written with the -1 marker and an 8-byte length although short enough for 4 bytes.
    long_form: bool,
}

impl Msg {
    fn encode_into(&self, out: &mut Vec<u8>) {
        if self.long_form {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            out.extend_from_slice(&(self.len as u64).to_be_bytes());
        } else {
            out.extend_from_slice(Header::for_len(self.len).as_bytes());
        }
        out.extend_from_slice(&payload(self.len, self.seed));
    }
}

/// Sizes around every boundary the decoder has: the read-ahead buffer with a 4- and a 12-byte
/// header, and a couple of read-aheads.
fn boundary_lens() -> Vec<usize> {
    vec![
        RA - 13,
        RA - 12,
        RA - 11,
        RA - 5,
        RA - 4,
        RA - 3,
        RA - 1,
        RA,
        RA + 1,
        2 * RA - 4,
        2 * RA,
    ]
}

fn msg_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..64,
        2 => 64usize..4096,
        3 => prop::sample::select(boundary_lens()),
        1 => RA..3 * RA + 17,
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    (msg_len(), any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(len, seed, long_form)| Msg {
        len,
        seed,
        long_form,
    })
}

/// Read sizes: single bytes, header-sized pieces, ordinary reads and whole-buffer reads.
fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![
            2 => Just(1usize),
            2 => 1usize..16,
            3 => 1usize..5000,
            2 => 5000usize..200_000,
        ],
        1..8,
    )
}

/// A stream and the offsets where its frames end.
fn encode_all(msgs: &[Msg]) -> (Vec<u8>, Vec<usize>) {
    let mut stream = Vec::new();
    let mut ends = Vec::new();
    for m in msgs {
        m.encode_into(&mut stream);
        ends.push(stream.len());
    }
    (stream, ends)
}

fn expected_payloads(msgs: &[Msg]) -> Vec<Vec<u8>> {
    msgs.iter().map(|m| payload(m.len, m.seed)).collect()
}

/// Bytes that look like frames more often than chance would: whole frames, random headers
/// (any 4-byte length, the -1 marker with any or a small 8-byte length) and random bytes, in
/// any order.
fn noisy_stream() -> impl Strategy<Value = Vec<u8>> {
    let frame = (prop::collection::vec(any::<u8>(), 0..200), any::<bool>()).prop_map(
        |(body, long_form)| {
            let mut v = Vec::new();
            if long_form {
                v.extend_from_slice(&(-1i32).to_be_bytes());
                v.extend_from_slice(&(body.len() as u64).to_be_bytes());
            } else {
                v.extend_from_slice(Header::for_len(body.len()).as_bytes());
            }
            v.extend_from_slice(&body);
            v
        },
    );
    let piece = prop_oneof![
        4 => frame,
        1 => (0u32..300).prop_map(|n| n.to_be_bytes().to_vec()),
        1 => any::<i32>().prop_map(|n| n.to_be_bytes().to_vec()),
        1 => any::<u64>().prop_map(|n| [&(-1i32).to_be_bytes()[..], &n.to_be_bytes()].concat()),
        1 => (0u64..300).prop_map(|n| [&(-1i32).to_be_bytes()[..], &n.to_be_bytes()].concat()),
        2 => prop::collection::vec(any::<u8>(), 0..300),
    ];
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..3000),
        3 => prop::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat()),
    ]
}

fn limit() -> impl Strategy<Value = u64> {
    prop_oneof![3 => Just(u64::MAX), 1 => 0u64..300, 1 => 0u64..(3 * RA as u64)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Any payloads, cut into any reads, come out whole, in order, and the stream ends
    /// cleanly.
    #[test]
    fn split_stream_yields_the_same_payloads(
        msgs in prop::collection::vec(msg(), 0..8),
        chunks in chunks(),
    ) {
        let (stream, _) = encode_all(&msgs);
        let mut driver = Driver::new(u64::MAX);
        driver.feed_chunked(&stream, &chunks).unwrap();
        prop_assert_eq!(&driver.frames, &expected_payloads(&msgs));
        prop_assert_eq!(driver.d.buffered_len(), 0);
        prop_assert_eq!(driver.d.eof_error().kind(), ErrorKind::Eof);
    }

    /// The same with every read a single byte, the worst case for the header logic.
    #[test]
    fn byte_at_a_time_yields_the_same_payloads(
        msgs in prop::collection::vec(
            (prop_oneof![0usize..40, prop::sample::select(boundary_lens())], any::<u8>(), any::<bool>())
                .prop_map(|(len, seed, long_form)| Msg { len, seed, long_form }),
            0..4,
        ),
    ) {
        let (stream, _) = encode_all(&msgs);
        let mut driver = Driver::new(u64::MAX);
        driver.feed_chunked(&stream, &[1]).unwrap();
        prop_assert_eq!(&driver.frames, &expected_payloads(&msgs));
        prop_assert_eq!(driver.d.eof_error().kind(), ErrorKind::Eof);
    }

    /// A stream cut anywhere yields the frames that ended before the cut, then `Eof` if the
    /// cut fell on a frame boundary and `TruncatedMessage` otherwise.
    #[test]
    fn cut_stream_ends_eof_at_boundary_else_truncated(
        msgs in prop::collection::vec(msg(), 1..6),
        chunks in chunks(),
        cut in any::<Index>(),
    ) {
        let (stream, ends) = encode_all(&msgs);
        let cut = cut.index(stream.len() + 1);
        let mut driver = Driver::new(u64::MAX);
        driver.feed_chunked(&stream[..cut], &chunks).unwrap();
        let whole = ends.iter().filter(|&&end| end <= cut).count();
        prop_assert_eq!(&driver.frames, &expected_payloads(&msgs[..whole]));
        let at_boundary = cut == 0 || ends.contains(&cut);
        let expected = if at_boundary { ErrorKind::Eof } else { ErrorKind::TruncatedMessage };
        prop_assert_eq!(driver.d.eof_error().kind(), expected);
    }

    /// Any bytes and any limit: frames, then nothing or a refusal, exactly as the reference
    /// parser reads the same bytes; no panic, no empty read target, bounded memory (checked
    /// by the driver at every read).
    #[test]
    fn any_bytes_decode_as_the_reference_parser_reads_them(
        stream in noisy_stream(),
        chunks in chunks(),
        limit in limit(),
    ) {
        let (frames, end) = reference(&stream, limit);
        let mut driver = Driver::new(limit);
        let result = driver.feed_chunked(&stream, &chunks);
        prop_assert_eq!(&driver.frames, &frames);
        match end {
            End::Refused => {
                let err = result.unwrap_err();
                prop_assert_eq!(err.kind(), ErrorKind::BadMessageLength);
                // The refused frame stays put, and so does the refusal.
                let buffered = driver.d.buffered_len();
                prop_assert!(driver.d.frame_ready(u64::MAX));
                for _ in 0..3 {
                    let again = driver.d.decode(u64::MAX).unwrap_err();
                    prop_assert_eq!(again.kind(), ErrorKind::BadMessageLength);
                    prop_assert_eq!(driver.d.buffered_len(), buffered);
                }
            }
            End::Clean => {
                result.unwrap();
                prop_assert_eq!(driver.d.eof_error().kind(), ErrorKind::Eof);
            }
            End::Partial => {
                result.unwrap();
                prop_assert_eq!(driver.d.eof_error().kind(), ErrorKind::TruncatedMessage);
            }
        }
    }

    /// A negative length other than -1 is refused as soon as its 4 bytes are in, after the
    /// frames before it, and nothing is consumed after that.
    #[test]
    fn negative_length_is_bad_message_length(
        n in i32::MIN..=-2,
        before in prop::collection::vec(msg(), 0..3),
        tail in prop::collection::vec(any::<u8>(), 0..100),
        chunks in chunks(),
    ) {
        let (mut stream, _) = encode_all(&before);
        stream.extend_from_slice(&n.to_be_bytes());
        stream.extend_from_slice(&tail);
        let mut driver = Driver::new(u64::MAX);
        let err = driver.feed_chunked(&stream, &chunks).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::BadMessageLength);
        prop_assert_eq!(&driver.frames, &expected_payloads(&before));
        let buffered = driver.d.buffered_len();
        prop_assert!(buffered >= 4);
        prop_assert_eq!(
            driver.d.decode(u64::MAX).unwrap_err().kind(),
            ErrorKind::BadMessageLength
        );
        prop_assert_eq!(driver.d.buffered_len(), buffered);
    }

    /// A length over the limit is refused before its payload is read: what was buffered
    /// stays buffered, and every later decode fails the same way, whatever its limit.
    #[test]
    fn over_limit_is_refused_and_payload_kept(
        before in prop::collection::vec(msg(), 0..3),
        len in prop_oneof![1usize..200, prop::sample::select(boundary_lens())],
        under in any::<Index>(),
        long_form in any::<bool>(),
        chunks in chunks(),
    ) {
        let limit = under.index(len) as u64; // 0..len: always too small
        let (mut stream, _) = encode_all(&before);
        Msg { len, seed: 1, long_form }.encode_into(&mut stream);
        // The frames before must pass: feed them with no limit, then lower it.
        let mut driver = Driver::new(u64::MAX);
        let (prefix, _) = encode_all(&before);
        driver.feed_chunked(&prefix, &chunks).unwrap();
        prop_assert_eq!(&driver.frames, &expected_payloads(&before));
        driver.limit = limit;
        let err = driver.feed_chunked(&stream[prefix.len()..], &chunks).unwrap_err();
        prop_assert_eq!(err.kind(), ErrorKind::BadMessageLength);
        let buffered = driver.d.buffered_len();
        prop_assert!(driver.d.frame_ready(u64::MAX));
        for retry_limit in [limit, len as u64, u64::MAX] {
            prop_assert_eq!(
                driver.d.decode(retry_limit).unwrap_err().kind(),
                ErrorKind::BadMessageLength
            );
            prop_assert_eq!(driver.d.buffered_len(), buffered);
        }
    }

    /// A length exactly at the limit is accepted.
    #[test]
    fn length_at_limit_is_accepted(
        len in prop_oneof![0usize..200, prop::sample::select(boundary_lens())],
        long_form in any::<bool>(),
        chunks in chunks(),
    ) {
        let m = Msg { len, seed: 9, long_form };
        let (stream, _) = encode_all(std::slice::from_ref(&m));
        let mut driver = Driver::new(len as u64);
        driver.feed_chunked(&stream, &chunks).unwrap();
        prop_assert_eq!(&driver.frames, &expected_payloads(&[m]));
    }

    /// A huge announced length costs memory only as its bytes arrive, and EOF inside it is
    /// `TruncatedMessage`.
    #[test]
    fn huge_length_allocates_as_bytes_arrive(
        len in prop_oneof![
            Just(1u64 << 62),
            Just(isize::MAX as u64),
            (4 * RA as u64)..(isize::MAX as u64),
        ],
        arrived in prop_oneof![0usize..64, 0usize..(5 * RA)],
        chunks in chunks(),
    ) {
        let mut stream = (-1i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&len.to_be_bytes());
        stream.extend_from_slice(&payload(arrived, 3));
        let mut driver = Driver::new(u64::MAX);
        driver.feed_chunked(&stream, &chunks).unwrap();
        prop_assert!(driver.frames.is_empty());
        let capacity = driver.d.read_target().0.capacity();
        prop_assert!(
            capacity <= 2 * (HEADER_MAX + arrived) + 2 * RA,
            "{capacity} bytes of capacity for {arrived} payload bytes"
        );
        if arrived < RA {
            prop_assert!(driver.peak_capacity <= 2 * RA, "peak {}", driver.peak_capacity);
        }
        prop_assert_eq!(driver.d.eof_error().kind(), ErrorKind::TruncatedMessage);
    }

    /// Every header `Header::for_len` writes parses back to its length, and no prefix of it
    /// parses at all.
    #[test]
    fn header_parses_back(len in prop_oneof![0usize..=SHORT_MAX, (SHORT_MAX + 1)..=usize::MAX]) {
        let header = Header::for_len(len);
        let bytes = header.as_bytes();
        let expected_len = if len > SHORT_MAX { HEADER_MAX } else { 4 };
        prop_assert_eq!(bytes.len(), expected_len);
        prop_assert_eq!(parse_header(bytes).unwrap(), Some((expected_len, len as u64)));
        for cut in 0..bytes.len() {
            prop_assert_eq!(parse_header(&bytes[..cut]).unwrap(), None);
        }
    }
}

/// Lengths no allocation can hold are refused like an over-limit length, even with no limit.
#[test]
fn length_beyond_isize_max_is_bad_message_length() {
    for len in [isize::MAX as u64 + 1, 1 << 63, u64::MAX] {
        let mut stream = (-1i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&len.to_be_bytes());
        stream.extend_from_slice(b"a few bytes");
        let mut driver = Driver::new(u64::MAX);
        let err = driver.feed_chunked(&stream, &[5]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessageLength, "length {len}");
        assert!(driver.peak_capacity <= RA, "length {len}");
    }
}

/// The -1 marker with lengths of 2^62 and `isize::MAX`, a few bytes, then EOF: nothing beyond
/// the read-ahead buffer and one read-ahead's worth of payload is allocated.
#[test]
fn huge_long_header_then_eof_is_truncated_with_small_allocation() {
    for len in [1u64 << 62, isize::MAX as u64] {
        let mut stream = (-1i32).to_be_bytes().to_vec();
        stream.extend_from_slice(&len.to_be_bytes());
        stream.extend_from_slice(b"xyz");
        let mut driver = Driver::new(u64::MAX);
        driver.feed_chunked(&stream, &[1]).unwrap();
        assert!(driver.frames.is_empty());
        assert!(
            driver.peak_capacity <= 2 * RA,
            "length {len}: {}",
            driver.peak_capacity
        );
        assert!(driver.d.read_target().0.capacity() <= 2 * RA);
        assert_eq!(driver.d.eof_error().kind(), ErrorKind::TruncatedMessage);
    }
}
