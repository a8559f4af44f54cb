//! Python's pickle for plain data, as dynamic values (feature `pickle`).
//!
//! [`Encoding::Pickle`](crate::Encoding::Pickle) sends and receives your own serde types as
//! pickles. When the shape is not known in advance, or ints may exceed 128 bits, use
//! [`loads`] and [`dumps`] on the raw message bytes with serde-pickle's [`Value`], which
//! keeps tuples, sets, frozensets and big ints as Python had them.
//!
//! Known limit (serde-pickle 1.2): a container that Python's pickle writes once and refers
//! to twice (`[S, S]` for a list `S` holding strings) is refused as "recursive structure
//! found" (`Decode`); a shared string or number is fine.
//!
//! # Examples
//! ```
//! # fn main() -> multiproc::Result<()> {
//! use multiproc::pickle::{self, Value};
//! // What Python's conn.send((1, 2**80)) puts on the wire (protocol 4).
//! let from_python = b"\x80\x04\x95\x12\x00\x00\x00\x00\x00\x00\x00K\x01\x8a\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x86\x94.";
//! let value = pickle::loads(from_python)?;
//! let Value::Tuple(items) = &value else { panic!("{value:?}") };
//! assert_eq!(items[0], Value::I64(1));
//! assert_eq!(items[1].to_string(), "1208925819614629174706176");
//! let back = pickle::dumps(&value)?;
//! assert_eq!(pickle::loads(&back)?, value);
//! # Ok(()) }
//! ```

pub use serde_pickle::{HashableValue, Value};

use crate::error::{Error, ErrorKind, Result};

/// Decodes a pickle of plain data. Python: `pickle.loads`, minus everything that is not
/// data: a pickle that builds objects or names globals is refused, never executed.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// let err = multiproc::pickle::loads(b"cos\nsystem\n(S'echo hi'\ntR.").unwrap_err();
/// assert_eq!(err.kind(), multiproc::ErrorKind::Decode);
/// # Ok(()) }
/// ```
///
/// # Errors
/// `Decode` for anything but a well-formed pickle of plain data.
pub fn loads(pickle: &[u8]) -> Result<Value> {
    crate::codec::pickle::unpickle(pickle, "", |p| {
        serde_pickle::value_from_slice(p, serde_pickle::DeOptions::new())
    })
}

/// Encodes a value as a pickle (protocol 3, which every Python 3 reads). Python:
/// `pickle.dumps`.
///
/// # Examples
/// ```
/// # fn main() -> multiproc::Result<()> {
/// use multiproc::pickle::{self, Value};
/// let bytes = pickle::dumps(&Value::List(vec![Value::None, Value::Bool(true)]))?;
/// assert_eq!(bytes.last(), Some(&b'.'));
/// # Ok(()) }
/// ```
///
/// # Errors
/// `Encode` if the value cannot be written (serde-pickle refuses it).
pub fn dumps(value: &Value) -> Result<Vec<u8>> {
    serde_pickle::value_to_vec(value, serde_pickle::SerOptions::new())
        .map_err(|e| Error::with_source(ErrorKind::Encode, "could not pickle", e))
}
