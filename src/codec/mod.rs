//! Message codecs: how `send`/`recv` turn serde values into frame payloads and back.
//!
//! A small internal seam, so another engine can be measured (or offered) without touching the
//! connection code. Implementations:
//!
//! - [`cbor`]: CBOR through ciborium, the default; [`cbor_string`] is its fast path for
//!   values that are one byte or text string.
//! - [`pickle`]: Python's pickle through serde-pickle (feature `pickle`), plain data only.

pub(crate) mod cbor;
pub(crate) mod cbor_string;
#[cfg(feature = "pickle")]
pub(crate) mod pickle;
#[cfg(feature = "pickle")]
pub(crate) mod pickle_scan;

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

/// How a [`Connection`](crate::Connection) encodes what `send` sends and decodes what `recv`
/// receives.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::{Encoding, Pipe};
/// let (mut a, mut b) = Pipe::new()?;
/// assert_eq!(a.encoding(), Encoding::Cbor);
/// # #[cfg(feature = "pickle")] {
/// a.set_encoding(Encoding::Pickle);
/// b.set_encoding(Encoding::Pickle);
/// a.send(&vec![1, 2, 3])?;
/// assert_eq!(b.recv::<Vec<i32>>()?, [1, 2, 3]);
/// # }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Encoding {
    /// CBOR (RFC 8949), compact and fast; the default.
    #[default]
    Cbor,
    /// Python's pickle (protocol 3 written; protocols 0 to 5 read), so a Python peer's
    /// plain `conn.send(obj)`/`conn.recv()` interoperate. Only plain data is accepted: None,
    /// bool, int, float, str, bytes, list, tuple, dict, set. A pickle that builds class
    /// instances, names other globals or nests deeper than 100 levels is a `Decode` error
    /// and is never executed; the connection stays usable. Typed values carry ints within
    /// `i64`; for bigger ones (and to keep tuples and sets as such) use the dynamic values
    /// of [`multiproc::pickle`](crate::pickle).
    #[cfg(feature = "pickle")]
    Pickle,
}

/// The engines of one connection, one of them selected.
#[derive(Debug, Default)]
pub(crate) struct Codecs {
    encoding: Encoding,
    cbor: cbor::Cbor,
    #[cfg(feature = "pickle")]
    pickle: pickle::Pickle,
}

impl Codecs {
    pub(crate) fn encoding(&self) -> Encoding {
        self.encoding
    }

    pub(crate) fn set_encoding(&mut self, encoding: Encoding) {
        self.encoding = encoding;
    }
}

impl Codec for Codecs {
    fn encode<T: Serialize + ?Sized>(&mut self, value: &T, out: &mut Vec<u8>) -> Result<()> {
        match self.encoding {
            Encoding::Cbor => self.cbor.encode(value, out),
            #[cfg(feature = "pickle")]
            Encoding::Pickle => self.pickle.encode(value, out),
        }
    }

    fn decode<T: DeserializeOwned>(&mut self, payload: &[u8]) -> Result<T> {
        match self.encoding {
            Encoding::Cbor => self.cbor.decode(payload),
            #[cfg(feature = "pickle")]
            Encoding::Pickle => self.pickle.decode(payload),
        }
    }
}
