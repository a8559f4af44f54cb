//! A fast path for values that are one CBOR byte or text string: `serde_bytes::ByteBuf`,
//! `String`, and those inside `Option`s and newtypes.
//!
//! Such a value is the commonest item there is, and ciborium moves its bytes more often than
//! needed: encoding copies them into the encoding, which is then copied to where it goes;
//! decoding reads them through its scratch buffer into a vector grown by doubling. Here the
//! encoder hands the string's own bytes, next to their CBOR header, to whoever stores them,
//! and the decoder gives the visitor a vector filled once, at its final size.
//!
//! Both sides produce what ciborium would, or step aside: [`encode`] returns `None` for any
//! value that is not a string, and [`decode`] returns `None` whenever the target type asks
//! for anything but the string it found (or rejects it), so that the caller runs ciborium,
//! whose answer or error then stands. One difference, on purpose: a type that asks for a
//! borrowed `&str` or `&[u8]` (`deserialize_str`, `deserialize_bytes`: `url::Url`,
//! `DisplayFromStr` fields, `ByteArray`) gets its string at any length here, where ciborium
//! refuses one longer than its scratch buffer ("invalid type"). Nothing here trusts the
//! input: a header that does not describe exactly the bytes given is `None` too.

use serde::de::{self, DeserializeOwned, Visitor};
use serde::ser::{self, Impossible, Serialize};

/// Which kind of CBOR string (major type 2 or 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StringKind {
    Bytes,
    Text,
}

impl StringKind {
    fn major(self) -> u8 {
        match self {
            StringKind::Bytes => 2,
            StringKind::Text => 3,
        }
    }
}

/// The longest CBOR header: a type byte and an 8-byte length.
pub(crate) const MAX_HEADER: usize = 9;

/// The shortest CBOR header of a definite-length string of `len` bytes, as ciborium writes
/// it: `(buffer, bytes used)`.
// Inline: called from code generic in the item type, so compiled in the user's crate, where
// a call returned the header through memory and its reload stalled (a few ns of a put).
#[inline]
pub(crate) fn header(kind: StringKind, len: u64) -> ([u8; MAX_HEADER], usize) {
    let mut out = [0u8; MAX_HEADER];
    let major = kind.major() << 5;
    let used = if len < 24 {
        out[0] = major | len as u8;
        1
    } else if len <= u64::from(u8::MAX) {
        out[0] = major | 24;
        out[1] = len as u8;
        2
    } else if len <= u64::from(u16::MAX) {
        out[0] = major | 25;
        out[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        3
    } else if len <= u64::from(u32::MAX) {
        out[0] = major | 26;
        out[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        5
    } else {
        out[0] = major | 27;
        out[1..9].copy_from_slice(&len.to_be_bytes());
        9
    };
    (out, used)
}

/// Reads a definite-length string header from the front of `prefix` (which need not hold
/// more than the header): `(kind, header length, string length)`, or `None` for anything
/// else (another major type, an indefinite length, a reserved or cut-short header).
pub(crate) fn parse_header(prefix: &[u8]) -> Option<(StringKind, usize, u64)> {
    let first = *prefix.first()?;
    let kind = match first >> 5 {
        2 => StringKind::Bytes,
        3 => StringKind::Text,
        _ => return None,
    };
    let (used, len) = match first & 0x1f {
        n @ 0..=23 => (1, u64::from(n)),
        24 => (2, u64::from(*prefix.get(1)?)),
        25 => (
            3,
            u64::from(u16::from_be_bytes(prefix.get(1..3)?.try_into().ok()?)),
        ),
        26 => (
            5,
            u64::from(u32::from_be_bytes(prefix.get(1..5)?.try_into().ok()?)),
        ),
        27 => (9, u64::from_be_bytes(prefix.get(1..9)?.try_into().ok()?)),
        _ => return None,
    };
    Some((kind, used, len))
}

/// If `value` serialises as one byte or text string, calls `store(header, bytes)` with the
/// CBOR header and the string's bytes (together, exactly ciborium's encoding) and returns
/// what `store` returned. `None` otherwise, with `store` not called.
pub(crate) fn encode<T: Serialize + ?Sized, R>(
    value: &T,
    store: impl FnOnce(&[u8], &[u8]) -> R,
) -> Option<R> {
    let mut probe = Probe {
        store: Some(store),
        stored: None,
    };
    // The outcome is in `stored`: a `Serialize` impl could even drop the serializer's
    // `Ok` and fail after `store` ran, and then the bytes were stored all the same.
    let _ = value.serialize(&mut probe);
    probe.stored
}

/// Deserialises a `T` from the contents of a string of `kind`, or `None` if `T` wants
/// anything else from it (then ciborium must decide, from the encoding).
pub(crate) fn decode<T: DeserializeOwned>(kind: StringKind, bytes: Vec<u8>) -> Option<T> {
    T::deserialize(Whole { kind, bytes }).ok()
}

/// [`decode`] of a whole encoding held in memory: `None` unless it is exactly one string
/// (and `T` takes it as such).
pub(crate) fn decode_encoding<T: DeserializeOwned>(encoding: &[u8]) -> Option<T> {
    let (kind, used) = lone_string(encoding, encoding.len())?;
    decode(kind, encoding[used..].to_vec())
}

/// The kind and header length of an encoding of `total` bytes that starts with `prefix`,
/// if it is exactly one definite-length string (its header says the rest is the string).
pub(crate) fn lone_string(prefix: &[u8], total: usize) -> Option<(StringKind, usize)> {
    let (kind, used, len) = parse_header(prefix)?;
    ((used as u64).checked_add(len) == Some(total as u64)).then_some((kind, used))
}

/// "Not a lone string": the signal to step aside, never shown to a user.
#[derive(Debug)]
struct NotAString;

impl std::fmt::Display for NotAString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a lone CBOR string")
    }
}

impl std::error::Error for NotAString {}

impl ser::Error for NotAString {
    fn custom<M: std::fmt::Display>(_: M) -> NotAString {
        NotAString
    }
}

impl de::Error for NotAString {
    fn custom<M: std::fmt::Display>(_: M) -> NotAString {
        NotAString
    }
}

/// A serializer that accepts a string, seen through `Option`s and newtypes (which ciborium
/// writes as their content), and nothing else.
struct Probe<F, R> {
    store: Option<F>,
    stored: Option<R>,
}

impl<F: FnOnce(&[u8], &[u8]) -> R, R> Probe<F, R> {
    fn put(&mut self, kind: StringKind, bytes: &[u8]) -> Result<(), NotAString> {
        let store = self.store.take().ok_or(NotAString)?;
        let (header, used) = header(kind, bytes.len() as u64);
        self.stored = Some(store(&header[..used], bytes));
        Ok(())
    }
}

/// The serializer methods that step aside.
macro_rules! not_a_string {
    ($($name:ident($($arg:ty),*) -> $ok:ty;)*) => {
        $(fn $name(self, $(_: $arg),*) -> Result<$ok, NotAString> {
            Err(NotAString)
        })*
    };
}

impl<F: FnOnce(&[u8], &[u8]) -> R, R> ser::Serializer for &mut Probe<F, R> {
    type Ok = ();
    type Error = NotAString;
    type SerializeSeq = Impossible<(), NotAString>;
    type SerializeTuple = Impossible<(), NotAString>;
    type SerializeTupleStruct = Impossible<(), NotAString>;
    type SerializeTupleVariant = Impossible<(), NotAString>;
    type SerializeMap = Impossible<(), NotAString>;
    type SerializeStruct = Impossible<(), NotAString>;
    type SerializeStructVariant = Impossible<(), NotAString>;

    /// As ciborium: types with a compact form (addresses, times...) use it, and that is
    /// never a lone string where ciborium's would be one.
    fn is_human_readable(&self) -> bool {
        false
    }

    fn serialize_bytes(self, v: &[u8]) -> Result<(), NotAString> {
        self.put(StringKind::Bytes, v)
    }

    fn serialize_str(self, v: &str) -> Result<(), NotAString> {
        self.put(StringKind::Text, v.as_bytes())
    }

    fn serialize_some<U: ?Sized + Serialize>(self, value: &U) -> Result<(), NotAString> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<U: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &U,
    ) -> Result<(), NotAString> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<U: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &U,
    ) -> Result<(), NotAString> {
        Err(NotAString)
    }

    not_a_string! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_i128(i128) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_u128(u128) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }
}

/// A string's contents as a deserializer: gives them to a visitor that asks for what
/// ciborium would give it for that string, and steps aside for every other request.
struct Whole {
    kind: StringKind,
    bytes: Vec<u8>,
}

impl Whole {
    fn visit<'de, V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotAString> {
        match self.kind {
            StringKind::Bytes => visitor.visit_byte_buf(self.bytes),
            StringKind::Text => {
                visitor.visit_string(String::from_utf8(self.bytes).map_err(|_| NotAString)?)
            }
        }
    }

    fn visit_if<'de, V: Visitor<'de>>(
        self,
        kind: StringKind,
        visitor: V,
    ) -> Result<V::Value, NotAString> {
        if self.kind == kind {
            self.visit(visitor)
        } else {
            Err(NotAString)
        }
    }
}

/// The deserializer methods that step aside.
macro_rules! step_aside {
    ($($name:ident($($arg:ty),*);)*) => {
        $(fn $name<V: Visitor<'de>>(self, $(_: $arg,)* _: V) -> Result<V::Value, NotAString> {
            Err(NotAString)
        })*
    };
}

impl<'de> de::Deserializer<'de> for Whole {
    type Error = NotAString;

    /// As ciborium (see the serializer's).
    fn is_human_readable(&self) -> bool {
        false
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotAString> {
        self.visit(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotAString> {
        self.visit_if(StringKind::Bytes, visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotAString> {
        self.visit_if(StringKind::Bytes, visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotAString> {
        self.visit_if(StringKind::Text, visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotAString> {
        self.visit_if(StringKind::Text, visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, NotAString> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, NotAString> {
        visitor.visit_newtype_struct(self)
    }

    step_aside! {
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_char();
        deserialize_unit();
        deserialize_unit_struct(&'static str);
        deserialize_seq();
        deserialize_tuple(usize);
        deserialize_tuple_struct(&'static str, usize);
        deserialize_map();
        deserialize_struct(&'static str, &'static [&'static str]);
        deserialize_enum(&'static str, &'static [&'static str]);
        deserialize_identifier();
        deserialize_ignored_any();
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_bytes::ByteBuf;

    use super::*;

    /// Our encoding, if the fast path takes `value`.
    fn ours<T: Serialize>(value: &T) -> Option<Vec<u8>> {
        encode(value, |header, bytes| [header, bytes].concat())
    }

    fn ciborium<T: Serialize>(value: &T) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out).unwrap();
        out
    }

    /// Decodes a whole encoding through the fast path.
    fn decoded<T: DeserializeOwned>(encoding: &[u8]) -> Option<T> {
        decode_encoding(encoding)
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct Wrapped(ByteBuf);

    #[test]
    fn strings_encode_as_ciborium_does_at_every_header_size() {
        for len in [0, 1, 23, 24, 255, 256, 65_535, 65_536, 100_000] {
            let bytes = ByteBuf::from(vec![7u8; len]);
            assert_eq!(ours(&bytes).unwrap(), ciborium(&bytes), "bytes of {len}");
            let text = "é".repeat(len / 2);
            assert_eq!(ours(&text).unwrap(), ciborium(&text), "text of {len}");
            let some = Some(Wrapped(bytes.clone()));
            assert_eq!(ours(&some).unwrap(), ciborium(&some), "wrapped {len}");
            assert_eq!(decoded::<ByteBuf>(&ciborium(&bytes)).unwrap(), bytes);
            assert_eq!(decoded::<String>(&ciborium(&text)).unwrap(), text);
            assert_eq!(decoded::<Option<Wrapped>>(&ciborium(&some)).unwrap(), some);
        }
        let (header, used) = header(StringKind::Bytes, 1 << 33);
        assert_eq!(
            parse_header(&header[..used]),
            Some((StringKind::Bytes, 9, 1 << 33))
        );
    }

    #[test]
    fn anything_else_steps_aside() {
        assert_eq!(ours(&vec![1u8, 2, 3]), None, "a plain Vec<u8> is an array");
        assert_eq!(ours(&5u32), None);
        assert_eq!(ours(&None::<String>), None);
        assert_eq!(ours(&("a", "b")), None);
        assert_eq!(ours(&'c'), None, "ciborium writes a char as it likes");
        // Not human-readable, as ciborium: an address is its compact form, never its text.
        let ip = std::net::IpAddr::from([127, 0, 0, 1]);
        assert_eq!(ours(&ip), None);
        assert_eq!(decoded::<std::net::IpAddr>(&ciborium(&"127.0.0.1")), None);
        // A string that the target type does not take as such is ciborium's to judge.
        let bytes = ciborium(&ByteBuf::from(b"abc".to_vec()));
        assert_eq!(decoded::<String>(&bytes), None);
        assert_eq!(decoded::<Vec<u8>>(&bytes), None);
        assert_eq!(decoded::<u32>(&bytes), None);
        let text = ciborium(&"abc");
        assert_eq!(decoded::<ByteBuf>(&text), None);
        assert_eq!(decoded::<String>(&[0x62, 0xff, 0xfe]), None, "bad UTF-8");
        assert_eq!(decoded::<ByteBuf>(&[0x43, 1, 2]), None, "cut short");
        assert_eq!(
            decoded::<ByteBuf>(&[0x41, 1, 2]),
            None,
            "bytes after the string"
        );
        let claim = [0x7b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decoded::<String>(&claim), None, "text of u64::MAX bytes");
    }

    /// A type that asks for a borrowed `&str`, as those parsing their text form do.
    #[derive(Debug, PartialEq)]
    struct Parsed(usize);

    impl<'de> Deserialize<'de> for Parsed {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Parsed, D::Error> {
            struct Len;
            impl serde::de::Visitor<'_> for Len {
                type Value = Parsed;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("text")
                }
                fn visit_str<E>(self, v: &str) -> Result<Parsed, E> {
                    Ok(Parsed(v.len()))
                }
            }
            d.deserialize_str(Len)
        }
    }

    #[test]
    fn a_long_string_reaches_a_type_that_borrows_it() {
        // ciborium refuses this one (longer than its 4 KiB scratch); the fast path gives it.
        let text = ciborium(&"x".repeat(5000));
        assert!(ciborium::from_reader::<Parsed, _>(text.as_slice()).is_err());
        assert_eq!(decoded::<Parsed>(&text), Some(Parsed(5000)));
        assert_eq!(decoded::<Parsed>(&ciborium(&"short")), Some(Parsed(5)));
    }

    #[test]
    fn headers_that_are_not_definite_strings_are_refused() {
        assert_eq!(parse_header(&[]), None);
        assert_eq!(parse_header(&[0x5f]), None, "indefinite length");
        assert_eq!(parse_header(&[0x5c]), None, "reserved");
        assert_eq!(parse_header(&[0x59, 0x01]), None, "cut short");
        assert_eq!(parse_header(&[0x83]), None, "an array");
        assert_eq!(parse_header(&[0x41, 0]), Some((StringKind::Bytes, 1, 1)));
    }
}
