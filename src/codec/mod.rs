//! Message codecs: how `send`/`recv` turn serde values into frame payloads and back.
//!
//! A small internal seam, so another engine can be measured (or offered) without touching the
//! connection code. Implementations:
//!
//! - [`cbor`]: CBOR through ciborium, the default and, for now, the only engine.

pub(crate) mod cbor;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;

/// Encodes values into a caller-owned buffer and decodes whole payloads.
pub(crate) trait Codec: Default + std::fmt::Debug + Send {
    /// Appends the encoding of `value` to `out`.
    fn encode<T: Serialize + ?Sized>(&mut self, value: &T, out: &mut Vec<u8>) -> Result<()>;

    /// Decodes exactly one value occupying all of `payload`.
    fn decode<T: DeserializeOwned>(&mut self, payload: &[u8]) -> Result<T>;
}
