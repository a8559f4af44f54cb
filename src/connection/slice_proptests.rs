//! Property test for [`Connection::recv_bytes_into_slice`], with `recv_bytes` as the reference.
//!
//! A thread writes any bytes (whole frames in both header forms, hostile headers, noise, a
//! stream cut anywhere) in pieces of any size into a socket or a pipe, in blocking or
//! non-blocking mode; the reader mixes receives into slices of every size (the next
//! message's length and one less among them) with `recv_bytes`, `try_recv_bytes` and
//! `poll`. A model read from the bytes alone says what each receive must return: the next
//! message, `BufferTooShort` with nothing consumed and the slice untouched, or how the stream
//! ends. Never a panic.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::Connection;
use crate::error::ErrorKind;
use crate::frame::READ_AHEAD;

const RA: usize = READ_AHEAD;

/// How the bytes after the last whole message end a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    /// At a message boundary: `Eof`.
    Clean,
    /// Inside a header (`None`) or a payload whose header announced this length:
    /// `TruncatedMessage`, or `BufferTooShort` into a shorter slice.
    Partial(Option<u64>),
    /// A negative length, or one over the limit or `isize::MAX`: `BadMessageLength`.
    Refused,
}

/// The messages in `stream`, and how it ends, by the wire format alone.
fn model(stream: &[u8], limit: u64) -> (Vec<&[u8]>, End) {
    let mut messages = Vec::new();
    let mut rest = stream;
    loop {
        if rest.is_empty() {
            return (messages, End::Clean);
        }
        let Some(short) = rest.first_chunk::<4>().map(|b| i32::from_be_bytes(*b)) else {
            return (messages, End::Partial(None));
        };
        let (header, len) = match short {
            n if n >= 0 => (4, n as u64),
            -1 => match rest[4..].first_chunk::<8>() {
                Some(long) => (12, u64::from_be_bytes(*long)),
                None => return (messages, End::Partial(None)),
            },
            _ => return (messages, End::Refused),
        };
        if len > limit || len > isize::MAX as u64 {
            return (messages, End::Refused);
        }
        let body = &rest[header..];
        if (body.len() as u64) < len {
            return (messages, End::Partial(Some(len)));
        }
        let (message, tail) = body.split_at(len as usize);
        messages.push(message);
        rest = tail;
    }
}

fn lens() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0usize..64,
        2 => 64usize..4096,
        2 => prop::sample::select(vec![RA - 13, RA - 12, RA - 4, RA - 1, RA, RA + 1]),
        1 => RA..3 * RA + 17,
    ]
}

/// Whole frames (4-byte or -1 headers), any header, a -1 header with any length, noise.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => (lens(), any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(len, seed, long)| {
            let mut v = if long {
                [&(-1i32).to_be_bytes()[..], &(len as u64).to_be_bytes()].concat()
            } else {
                (len as u32).to_be_bytes().to_vec()
            };
            v.extend((0..len).map(|i| (i as u8) ^ ((i >> 8) as u8) ^ seed));
            v
        }),
        1 => any::<i32>().prop_map(|n| n.to_be_bytes().to_vec()),
        1 => any::<u64>().prop_map(|n| [&(-1i32).to_be_bytes()[..], &n.to_be_bytes()].concat()),
        1 => prop::collection::vec(any::<u8>(), 0..40),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Op {
    /// Into a slice of this many bytes.
    Into(usize),
    /// Into a slice of the next message's length plus this (-1, 0, 1), if one is next.
    IntoNext(i8),
    Recv,
    TryRecv,
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => lens().prop_map(Op::Into),
        3 => (-1i8..=1).prop_map(Op::IntoNext),
        2 => Just(Op::Recv),
        1 => Just(Op::TryRecv),
        1 => Just(Op::Poll),
    ]
}

/// A connected pair: the reader as a `Connection` (socket, or a pipe's read end), the writer
/// as a plain byte sink.
fn transport(pipe: bool) -> (Connection, Box<dyn Write + Send>) {
    if pipe {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        (Connection::from(r), Box::new(std::fs::File::from(w)))
    } else {
        let (r, w) = std::os::unix::net::UnixStream::pair().unwrap();
        (Connection::from(OwnedFd::from(r)), Box::new(w))
    }
}

/// Write sizes: single bytes (every header cut), small and large pieces.
fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![Just(1usize), 1usize..16, 1usize..100_000], 1..6)
}

/// One case: `stream` written in `chunks` while the reader runs `ops`, each checked
/// against the model.
fn check(
    stream: Vec<u8>,
    chunks: Vec<usize>,
    limit: u64,
    ops: &[Op],
    pipe: bool,
    nonblocking: bool,
) -> Result<(), TestCaseError> {
    let (messages, end) = model(&stream, limit);
    let (mut conn, mut sink) = transport(pipe);
    conn.set_max_message_len(limit);
    if nonblocking {
        rustix::fs::fcntl_setfl(&conn, rustix::fs::OFlags::NONBLOCK).unwrap();
    }
    let bytes = stream.clone();
    let writer = std::thread::spawn(move || {
        let mut rest = &bytes[..];
        for &size in chunks.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            // The reader leaves at a refused header, with the rest unread.
            if sink.write_all(piece).is_err() {
                break;
            }
            rest = tail;
        }
    });
    let ending = match end {
        End::Clean => ErrorKind::Eof,
        End::Partial(_) => ErrorKind::TruncatedMessage,
        End::Refused => ErrorKind::BadMessageLength,
    };
    let mut next = 0;
    for &op in ops {
        let message = messages.get(next).copied();
        let slice_len = match op {
            Op::Into(n) => n,
            Op::IntoNext(delta) => {
                message.map_or(0, |m| m.len().saturating_add_signed(delta.into()))
            }
            Op::Recv => {
                match (conn.recv_bytes(), message) {
                    (Ok(got), Some(m)) => prop_assert!(got == m, "recv_bytes: other bytes"),
                    (Err(e), None) => prop_assert_eq!(e.kind(), ending),
                    (other, m) => prop_assert!(
                        false,
                        "recv_bytes: {:?} for {:?}",
                        other.map(|v| v.len()),
                        m.map(<[u8]>::len)
                    ),
                }
                next += usize::from(message.is_some());
                continue;
            }
            Op::TryRecv => {
                // `None` whenever the writer has not caught up: not a check of timing.
                match (conn.try_recv_bytes(), message) {
                    (Ok(None), _) => {}
                    (Ok(Some(got)), Some(m)) => {
                        prop_assert!(got == m, "try_recv_bytes: other bytes");
                        next += 1;
                    }
                    (Err(e), None) => prop_assert_eq!(e.kind(), ending),
                    (other, m) => prop_assert!(
                        false,
                        "try_recv_bytes: {:?} for {:?}",
                        other.map(|v| v.map(|v| v.len())),
                        m.map(<[u8]>::len)
                    ),
                }
                continue;
            }
            Op::Poll => {
                prop_assert!(conn.poll(Some(Duration::ZERO)).is_ok());
                continue;
            }
        };
        let mut buf = vec![0xa5; slice_len];
        let result = conn.recv_bytes_into_slice(&mut buf);
        let too_short = |len: u64| len > slice_len as u64;
        match (result, message) {
            (Ok(n), Some(m)) => {
                prop_assert_eq!(n, m.len());
                prop_assert!(&buf[..n] == m, "other bytes");
                prop_assert!(
                    buf[n..].iter().all(|&b| b == 0xa5),
                    "written past the message"
                );
                next += 1;
            }
            (Err(e), Some(m)) if e.kind() == ErrorKind::BufferTooShort => {
                prop_assert!(too_short(m.len() as u64), "{} bytes refused", m.len());
                prop_assert!(buf.iter().all(|&b| b == 0xa5), "slice written on error");
            }
            (Err(e), None) => {
                // A header announced more than the slice holds, then the stream ended:
                // refused from the header, as it would be before the end.
                let expected = match end {
                    End::Partial(Some(len)) if too_short(len) => ErrorKind::BufferTooShort,
                    _ => ending,
                };
                prop_assert_eq!(e.kind(), expected);
                prop_assert!(buf.iter().all(|&b| b == 0xa5), "slice written on error");
            }
            (other, m) => prop_assert!(
                false,
                "into {slice_len}: {:?} for {:?}",
                other.map_err(|e| e.kind()),
                m.map(<[u8]>::len)
            ),
        }
    }
    drop(conn);
    writer.join().unwrap();
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Into any slice, any bytes in any pieces: what `recv_bytes` would return, or
    /// `BufferTooShort` with the message kept; never a panic, never a byte lost.
    #[test]
    fn recv_bytes_into_slice_agrees_with_recv_bytes(
        pieces in prop::collection::vec(piece(), 0..6),
        cut in any::<prop::sample::Index>(),
        whole in any::<bool>(),
        chunks in chunks(),
        limit in prop_oneof![3 => Just(u64::MAX), 1 => 0u64..(2 * RA as u64)],
        ops in prop::collection::vec(op(), 1..24),
        pipe in any::<bool>(),
        nonblocking in any::<bool>(),
    ) {
        let mut stream = pieces.concat();
        if !whole {
            stream.truncate(cut.index(stream.len() + 1));
        }
        check(stream, chunks, limit, &ops, pipe, nonblocking)?;
    }
}

/// A -1 header announcing more than `isize::MAX` bytes is a bad length, as `recv_bytes` says
/// (it was `BufferTooShort`, which sends the caller to a `recv_bytes` that then refuses it).
#[test]
fn a_length_no_buffer_can_hold_is_bad_message_length() {
    for len in [isize::MAX as u64 + 1, u64::MAX] {
        let (mut conn, mut sink) = transport(false);
        let header = [&(-1i32).to_be_bytes()[..], &len.to_be_bytes()].concat();
        sink.write_all(&header).unwrap();
        let err = conn.recv_bytes_into_slice(&mut [0; 8]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadMessageLength, "length {len}");
    }
}
