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
        pickle_scan::check(payload).map_err(|why| {
            Error::with_message(
                ErrorKind::Decode,
                format!("refused to unpickle the message: {why}"),
            )
        })?;
        serde_pickle::from_slice(payload, serde_pickle::DeOptions::new())
            .map_err(|e| Error::with_source(ErrorKind::Decode, "could not unpickle the message", e))
    }
}
