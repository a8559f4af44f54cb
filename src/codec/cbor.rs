//! CBOR (RFC 8949) through ciborium.
//!
//! Decoding reuses one scratch buffer per connection: `ciborium::from_reader` zeroes a fresh
//! 4 KiB buffer on every call, about 30 ns of a ~190 ns small-struct decode. Nesting is capped
//! by ciborium's recursion limit (256), so a hostile frame of nested arrays is an error, not a
//! stack overflow; collection sizes in headers only pre-allocate what serde's cautious size
//! hints allow, and the input is one in-memory frame, so memory stays proportional to it.

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Codec;
use crate::error::{Error, ErrorKind, Result};

const SCRATCH: usize = 4096;

/// The CBOR engine with its reusable scratch buffer.
#[derive(Debug, Default)]
pub(crate) struct Cbor {
    scratch: Vec<u8>,
}

impl Cbor {
    /// Grows the scratch to at least `len` bytes.
    pub(crate) fn reserve_scratch(&mut self, len: usize) {
        if self.scratch.len() < len {
            self.scratch.resize(len.max(SCRATCH), 0);
        }
    }
}

impl Codec for Cbor {
    fn encode<T: Serialize + ?Sized>(&mut self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        ciborium::into_writer(value, out)
            .map_err(|e| Error::with_source(ErrorKind::Encode, "could not encode the message", e))
    }

    fn decode<T: DeserializeOwned>(&mut self, payload: &[u8]) -> Result<T> {
        if self.scratch.is_empty() {
            self.scratch = vec![0; SCRATCH];
        }
        let mut rest = payload;
        let value =
            ciborium::de::from_reader_with_buffer(&mut rest, &mut self.scratch).map_err(|e| {
                Error::with_source(ErrorKind::Decode, "could not decode the message", e)
            })?;
        if !rest.is_empty() {
            return Err(Error::with_message(
                ErrorKind::Decode,
                format!(
                    "could not decode the message: {} bytes after the value",
                    rest.len()
                ),
            ));
        }
        Ok(value)
    }
}
