//! Pickle through serde-pickle, for Python peers that use plain `conn.send(obj)` /
//! `conn.recv()`. Only plain data passes: see `pickle_scan` for what is refused before
//! serde-pickle sees it. Encoding writes protocol 3, which every Python 3 reads.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Codec;
use super::pickle_scan;
use crate::error::{Error, ErrorKind, Result};

/// The pickle engine.
#[derive(Debug, Default)]
pub(crate) struct Pickle;

impl Codec for Pickle {
    fn encode<T: Serialize + ?Sized>(&mut self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        // serde-pickle's own `to_writer` needs a sized value; this is what it does.
        out.extend_from_slice(b"\x80\x03"); // PROTO 3
        let mut serializer =
            serde_pickle::Serializer::new(&mut *out, serde_pickle::SerOptions::new());
        value.serialize(&mut serializer).map_err(|e| {
            Error::with_source(ErrorKind::Encode, "could not pickle the message", e)
        })?;
        out.push(b'.'); // STOP
        Ok(())
    }

    fn decode<T: DeserializeOwned>(&mut self, payload: &[u8]) -> Result<T> {
        unpickle(payload, " the message", |p| {
            serde_pickle::from_slice(p, serde_pickle::DeOptions::new())
        })
    }
}

/// Checks `payload` (see `pickle_scan`), then lets serde-pickle `decode` it; `what` names it
/// in errors (with a leading space, or empty). A panic inside serde-pickle is a `Decode` error too: it sorts a set's items and
/// a dict's keys with an order that is not total (NaN; ints past 2^53 next to floats), and
/// Rust's sort panics when it notices. (The panic still reaches the panic hook, which prints
/// it on stderr by default; with `panic = "abort"` it aborts.)
pub(crate) fn unpickle<R>(
    payload: &[u8],
    what: &str,
    decode: impl FnOnce(&[u8]) -> serde_pickle::Result<R>,
) -> Result<R> {
    pickle_scan::check(payload).map_err(|why| {
        Error::with_message(
            ErrorKind::Decode,
            format!("refused to unpickle{what}: {why}"),
        )
    })?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode(payload))) {
        // serde-pickle's message may hold a dump of the value: a line of it is enough.
        Ok(decoded) => decoded.map_err(|e| {
            let mut text = e.to_string();
            if text.len() > 240 {
                let cut = (0..=240)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                text.truncate(cut);
                text.push_str("...");
            }
            Error::with_message(
                ErrorKind::Decode,
                format!("could not unpickle{what}: {text}"),
            )
        }),
        Err(_) => Err(Error::with_message(
            ErrorKind::Decode,
            format!(
                "could not unpickle{what}: serde-pickle failed on it (a set or dict key it \
                 cannot order, such as NaN)"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Protocol 4: a set of `items` as BINFLOATs (EMPTY_SET, MARK, items, ADDITEMS, STOP).
    fn set_of_floats(items: impl IntoIterator<Item = f64>) -> Vec<u8> {
        let mut p = b"\x80\x04\x8f(".to_vec();
        for f in items {
            p.push(b'G');
            p.extend_from_slice(&f.to_be_bytes());
        }
        p.extend_from_slice(b"\x90.");
        p
    }

    #[test]
    fn a_set_serde_pickle_cannot_order_is_a_decode_error_not_a_panic() {
        // A third NaN: serde-pickle's order calls NaN less than anything, both ways round,
        // and the sort behind its sets notices.
        let floats = (0..60u32).map(|i| {
            if i % 3 == 0 {
                f64::NAN
            } else {
                f64::from(i * 7919 % 1000)
            }
        });
        let p = set_of_floats(floats);
        let e = crate::pickle::loads(&p).expect_err("an unorderable set decoded");
        assert_eq!(e.kind(), ErrorKind::Decode, "{e}");
        // Typed, serde-pickle builds no set of its own (here a sequence of 60 floats).
        let typed = Pickle
            .decode::<Vec<f64>>(&p)
            .expect("the floats, as a sequence");
        assert_eq!(typed.len(), 60);
        // serde-pickle's error texts, which may dump the value, are cut short.
        let mut p = b"\x80\x04](".to_vec();
        p.extend(std::iter::repeat_n(b')', 100_000));
        p.extend_from_slice(b"e\x85Na.");
        let e = crate::pickle::loads(&p).expect_err("APPEND onto a tuple");
        assert!(
            e.to_string().len() < 400,
            "{} bytes of error",
            e.to_string().len()
        );
        // Sets of plain floats still decode.
        let p = set_of_floats([1.5, 2.5, -0.0]);
        assert!(crate::pickle::loads(&p).is_ok());
    }
}
