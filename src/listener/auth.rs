//! CPython's authkey handshake, byte for byte (`multiprocessing/connection.py`,
//! `deliver_challenge` / `answer_challenge`, Python 3.12's protocol description).
//!
//! The server sends `#CHALLENGE#` and a message: 40 random bytes after a `{sha256}` prefix
//! (modern, Python 3.12+), or 20 bare random bytes (legacy, Python 3.11 and older). The
//! client answers with the HMAC of the whole message: `{digest}` + MAC for a prefixed
//! message, a bare 16-byte HMAC-MD5 for a 20-byte one. The server replies `#WELCOME#` or
//! `#FAILURE#`; then the roles swap. A 16-byte answer is taken as HMAC-MD5 either way, so a
//! legacy peer is understood without asking; [`Digest::Md5`] makes *our* challenges legacy
//! ones, for peers that insist on them (CPython's of every version answer either form).
//!
//! Beyond CPython: every frame of the handshake is at most 256 bytes (refused from its
//! header, before it is read), MACs are compared in constant time (`hmac`'s
//! `verify_slice`), and the whole handshake has a deadline.

use std::time::Instant;

use hmac::{Hmac, Mac};

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};

pub(crate) const CHALLENGE: &[u8] = b"#CHALLENGE#";
pub(crate) const WELCOME: &[u8] = b"#WELCOME#";
pub(crate) const FAILURE: &[u8] = b"#FAILURE#";
/// Random bytes in a modern challenge (CPython's `MESSAGE_LENGTH`).
const MESSAGE_LENGTH: usize = 40;
/// Random bytes in a legacy challenge; also the shortest challenge accepted.
const LEGACY_MESSAGE_LENGTH: usize = 20;
const MD5_LEN: usize = 16;
/// The longest handshake frame either side accepts.
pub(crate) const MAX_FRAME: u64 = 256;

/// The HMAC digest of the challenges we send. Python 3.12+ sends `sha256`; every digest
/// Python allows is accepted in answers.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Digest, Listener};
/// let mut listener = Listener::bind("127.0.0.1:0", Some(b"key"))?;
/// listener.set_digest(Digest::Md5); // challenge as Python 3.11 and older do
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Digest {
    /// HMAC-MD5 in the legacy form: a bare 20-byte challenge, a bare 16-byte answer. What
    /// Python 3.11 and older send. Not needed to talk to them: they answer any challenge
    /// with HMAC-MD5 over all of its bytes, prefix included, which is accepted.
    Md5,
    /// HMAC-SHA256 (Python 3.12's default).
    #[default]
    Sha256,
    /// HMAC-SHA384.
    Sha384,
    /// HMAC-SHA3-256.
    Sha3_256,
    /// HMAC-SHA3-384.
    Sha3_384,
}

impl Digest {
    fn name(self) -> &'static [u8] {
        match self {
            Digest::Md5 => b"md5",
            Digest::Sha256 => b"sha256",
            Digest::Sha384 => b"sha384",
            Digest::Sha3_256 => b"sha3_256",
            Digest::Sha3_384 => b"sha3_384",
        }
    }

    fn from_name(name: &[u8]) -> Option<Digest> {
        [
            Digest::Md5,
            Digest::Sha256,
            Digest::Sha384,
            Digest::Sha3_256,
            Digest::Sha3_384,
        ]
        .into_iter()
        .find(|d| d.name() == name)
    }

    fn mac(self, key: &[u8], message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message),
            Digest::Sha3_256 => run::<Hmac<sha3::Sha3_256>>(key, message),
            Digest::Sha3_384 => run::<Hmac<sha3::Sha3_384>>(key, message),
        }
    }

    /// Whether `mac` is the MAC of `message`, compared in constant time.
    fn verify(self, key: &[u8], message: &[u8], mac: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], tag: &[u8]) -> bool {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .expect("HMAC takes keys of any length");
            mac.update(message);
            mac.verify_slice(tag).is_ok()
        }
        match self {
            Digest::Md5 => run::<Hmac<md5::Md5>>(key, message, mac),
            Digest::Sha256 => run::<Hmac<sha2::Sha256>>(key, message, mac),
            Digest::Sha384 => run::<Hmac<sha2::Sha384>>(key, message, mac),
            Digest::Sha3_256 => run::<Hmac<sha3::Sha3_256>>(key, message, mac),
            Digest::Sha3_384 => run::<Hmac<sha3::Sha3_384>>(key, message, mac),
        }
    }
}

pub(crate) fn auth_error(message: impl Into<String>) -> Error {
    Error::with_message(ErrorKind::Authentication, message.into())
}

/// A fresh challenge message (what follows `#CHALLENGE#`).
pub(crate) fn new_challenge(digest: Digest) -> Result<Vec<u8>> {
    let random_len = if digest == Digest::Md5 {
        LEGACY_MESSAGE_LENGTH
    } else {
        MESSAGE_LENGTH
    };
    let mut random = vec![0u8; random_len];
    getrandom::fill(&mut random).map_err(|e| {
        Error::with_message(ErrorKind::Io, format!("no randomness for a challenge: {e}"))
    })?;
    if digest == Digest::Md5 {
        return Ok(random);
    }
    let mut message = Vec::with_capacity(random_len + 12);
    message.push(b'{');
    message.extend_from_slice(digest.name());
    message.push(b'}');
    message.extend_from_slice(&random);
    Ok(message)
}

/// The digest a message (a challenge, or an answer) names, and its payload; `None` for the
/// legacy forms (a 20-byte challenge or a 16-byte answer: HMAC-MD5, no prefix).
fn digest_and_payload(message: &[u8]) -> Result<(Option<Digest>, &[u8])> {
    if message.len() == LEGACY_MESSAGE_LENGTH || message.len() == MD5_LEN {
        return Ok((None, message));
    }
    if message.first() == Some(&b'{') {
        if let Some(close) = message.iter().take(12).position(|&b| b == b'}') {
            if let Some(digest) = Digest::from_name(&message[1..close]) {
                return Ok((Some(digest), &message[close + 1..]));
            }
        }
    }
    Err(auth_error(
        "unsupported message length, missing digest prefix, or unsupported digest",
    ))
}

/// Our answer to the challenge `message`.
pub(crate) fn answer(key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    match digest_and_payload(message)?.0 {
        None => Ok(Digest::Md5.mac(key, message)),
        Some(digest) => {
            let mut reply = Vec::with_capacity(64);
            reply.push(b'{');
            reply.extend_from_slice(digest.name());
            reply.push(b'}');
            reply.extend_from_slice(&digest.mac(key, message));
            Ok(reply)
        }
    }
}

/// Checks the peer's `reply` to our challenge `message`.
pub(crate) fn verify(key: &[u8], message: &[u8], reply: &[u8]) -> Result<()> {
    let (digest, mac) = digest_and_payload(reply)?;
    if digest.unwrap_or(Digest::Md5).verify(key, message, mac) {
        Ok(())
    } else {
        Err(auth_error("digest received was wrong"))
    }
}

/// The challenge inside a `#CHALLENGE#` frame.
pub(crate) fn parse_challenge(frame: &[u8]) -> Result<&[u8]> {
    let message = frame
        .strip_prefix(CHALLENGE)
        .ok_or_else(|| auth_error("protocol error: expected a challenge"))?;
    if message.len() < LEGACY_MESSAGE_LENGTH {
        return Err(auth_error(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    Ok(message)
}

fn recv(conn: &mut Connection, deadline: Instant) -> Result<Vec<u8>> {
    conn.recv_reply_deadline(deadline).map_err(handshake_error)
}

fn handshake_error(e: Error) -> Error {
    if e.is_timeout() {
        auth_error("handshake timed out")
    } else {
        auth_error(format!("handshake failed: {e}"))
    }
}

/// The client's side, blocking until `deadline`: answer the server's challenge, then
/// challenge it. Python: `answer_challenge` then `deliver_challenge`, except that our
/// challenge leaves with our answer, in one write, rather than after the server's
/// `#WELCOME#`: one message fewer to wait for. A server reads it once it has sent its
/// verdict, as CPython's does (it reads exactly one frame at a time); after a `#FAILURE#`
/// it is never read, and the client reports the failure as before.
pub(crate) fn client_handshake(
    conn: &mut Connection,
    key: &[u8],
    digest: Digest,
    deadline: Instant,
    tcp: bool,
    challenge_here: bool,
) -> Result<()> {
    let limit = conn.max_message_len();
    conn.set_max_message_len(MAX_FRAME);
    let frame = if challenge_here {
        // Readable already (`connect_tcp` waited for it): read before any `poll`.
        conn.recv_bytes_deadline(deadline)
            .map_err(handshake_error)?
    } else {
        recv(conn, deadline)?
    };
    let reply = answer(key, parse_challenge(&frame)?)?;
    let message = new_challenge(digest)?;
    conn.queue_frame(&reply)?;
    conn.queue_frame(&[CHALLENGE, &message].concat())?;
    conn.flush_blocking()?;
    if recv(conn, deadline)? != WELCOME {
        return Err(auth_error("digest sent was rejected"));
    }
    if tcp && conn.buffered_len() == 0 {
        // The `#WELCOME#` came alone: the server writes its answer separately (CPython
        // does), and a server with Nagle's algorithm on (CPython's) holds that small
        // answer until its small `#WELCOME#` is acknowledged, which our delayed ACK would
        // put off by 40 ms or more. Acknowledge now.
        let _ = rustix::net::sockopt::set_tcp_quickack(&*conn, true);
    }
    let reply = recv(conn, deadline)?;
    if let Err(e) = verify(key, &message, &reply) {
        let _ = conn.send_bytes(FAILURE);
        return Err(e);
    }
    conn.send_bytes(WELCOME)?;
    conn.set_max_message_len(limit);
    Ok(())
}

/// What a server-side handshake waits for next.
#[derive(Debug)]
enum Stage {
    /// Our challenge is out; waiting for the answer.
    Answer { message: Vec<u8> },
    /// We welcomed the client; waiting for its challenge.
    Challenge,
    /// Our answer is out; waiting for the verdict.
    Verdict,
}

/// A server-side handshake driven without blocking: feed it with
/// [`advance`](Self::advance) whenever its connection may have data.
#[derive(Debug)]
pub(crate) struct ServerHandshake {
    stage: Stage,
    pub(crate) deadline: Instant,
}

/// What `advance` found.
#[derive(Debug)]
pub(crate) enum Progress {
    Waiting,
    Done,
}

impl ServerHandshake {
    /// Sends the challenge and starts waiting.
    pub(crate) fn start(
        conn: &mut Connection,
        digest: Digest,
        deadline: Instant,
    ) -> Result<ServerHandshake> {
        conn.set_max_message_len(MAX_FRAME);
        let message = new_challenge(digest)?;
        conn.try_send_bytes(&[CHALLENGE, &message].concat())?;
        conn.flush()?;
        Ok(ServerHandshake {
            stage: Stage::Answer { message },
            deadline,
        })
    }

    /// Takes what has arrived; `Done` once the client is authenticated (the connection's
    /// message limit is lifted again). What it sends in reply leaves in one write.
    pub(crate) fn advance(&mut self, conn: &mut Connection, key: &[u8]) -> Result<Progress> {
        let progress = self.take_frames(conn, key);
        // A FAILURE goes out too, as far as the socket takes it; the error is the news.
        let flushed = conn.flush();
        let progress = progress?;
        flushed?;
        Ok(progress)
    }

    fn take_frames(&mut self, conn: &mut Connection, key: &[u8]) -> Result<Progress> {
        loop {
            let frame = match conn.try_recv_bytes() {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(Progress::Waiting),
                Err(e) => return Err(auth_error(format!("handshake failed: {e}"))),
            };
            match &self.stage {
                Stage::Answer { message } => {
                    if let Err(e) = verify(key, message, &frame) {
                        let _ = conn.queue_frame(FAILURE);
                        return Err(e);
                    }
                    conn.queue_frame(WELCOME)?;
                    self.stage = Stage::Challenge;
                }
                Stage::Challenge => {
                    let reply = answer(key, parse_challenge(&frame)?)?;
                    conn.queue_frame(&reply)?;
                    self.stage = Stage::Verdict;
                }
                Stage::Verdict => {
                    if frame != WELCOME {
                        return Err(auth_error("digest sent was rejected"));
                    }
                    conn.set_max_message_len(u64::MAX);
                    return Ok(Progress::Done);
                }
            }
            // The client answers what we are about to send, so nothing more can be due
            // unless it came already (our client sends its challenge with its answer). The
            // socket stays registered (level-triggered): whatever comes later is reported.
            if conn.buffered_len() == 0 {
                return Ok(Progress::Waiting);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modern_and_legacy_answers_verify() {
        let key = b"secret";
        for digest in [
            Digest::Md5,
            Digest::Sha256,
            Digest::Sha384,
            Digest::Sha3_256,
            Digest::Sha3_384,
        ] {
            let message = new_challenge(digest).unwrap();
            let reply = answer(key, &message).unwrap();
            verify(key, &message, &reply).unwrap();
            assert!(verify(b"other", &message, &reply).is_err());
            if digest == Digest::Md5 {
                assert_eq!(message.len(), 20);
                assert_eq!(reply.len(), 16);
            } else {
                assert!(reply.starts_with(b"{"));
            }
        }
        // A legacy 16-byte MD5 answer to a modern challenge is accepted, as in CPython.
        let message = new_challenge(Digest::Sha256).unwrap();
        verify(key, &message, &Digest::Md5.mac(key, &message)).unwrap();
    }

    #[test]
    fn python_vectors() {
        // hmac.new(b'key', b'{sha256}' + bytes(range(40)), 'sha256').hexdigest()
        let mut message = b"{sha256}".to_vec();
        message.extend(0u8..40);
        let mac = Digest::Sha256.mac(b"key", &message);
        assert_eq!(
            mac.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            PY_SHA256
        );
    }

    const PY_SHA256: &str = "05b37335205f51ff483146e965fdf576943e0e64675a64ceccba80b6704d76b8";

    #[test]
    fn bad_messages_are_errors() {
        assert!(parse_challenge(b"#CHALLENGE#short").is_err());
        assert!(parse_challenge(b"hello").is_err());
        assert!(digest_and_payload(b"{sha1}0123456789012345678901234567").is_err());
        assert!(digest_and_payload(b"no prefix and not 16 or 20 long").is_err());
    }
}
