//! CBOR (RFC 8949) through ciborium.
//!
//! Decoding reuses one scratch buffer per connection: `ciborium::from_reader` zeroes a fresh
//! 4 KiB buffer on every call, about 30 ns of a ~190 ns small-struct decode. Nesting is capped
//! by ciborium's recursion limit (256), so a hostile frame of nested arrays is an error, not a
//! stack overflow. Collection sizes in headers pre-allocate what serde's cautious size hints
//! allow (up to 1 MiB per collection), so a frame is first checked, in one pass without
//! recursion, for a collection or string that declares more items or bytes than follow it
//! ([`lengths_fit`]): without that, 2 KB of nested arrays each declaring 2^32 items made a
//! recursive type reserve 1 MiB per level, 255 MiB in all (an adversarial review's
//! finding). With it, memory stays proportional to the frame.

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
        if let Err(why) = lengths_fit(payload) {
            return Err(Error::with_message(
                ErrorKind::Decode,
                format!("could not decode the message: {why}"),
            ));
        }
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

/// Walks every item header of `cbor` in order (CBOR writes a collection's items right after
/// its header, so one pass without recursion sees them all) and refuses a string that
/// declares more bytes than follow it, or collections whose declared items, together with
/// those still owed by every collection open around them, could not fit in the bytes left
/// (each item takes at least one byte; a map entry is two items). Anything else malformed
/// is left to ciborium, whose error is the more precise.
pub(crate) fn lengths_fit(cbor: &[u8]) -> std::result::Result<(), String> {
    // Items still owed by each open collection, innermost last (`None`: indefinite).
    let mut open: Vec<Option<u64>> = Vec::new();
    let mut owed: u64 = 0;
    let mut at = 0;
    while at < cbor.len() {
        let initial = cbor[at];
        at += 1;
        let (major, info) = (initial >> 5, initial & 0x1f);
        while open.last() == Some(&Some(0)) {
            open.pop();
        }
        if initial == 0xff {
            // A break closes the innermost indefinite collection or string.
            match open.pop() {
                Some(None) => continue,
                _ => return Ok(()),
            }
        }
        // This header is one item of the collection around it; a tag and what it tags are
        // one item together, counted at the tagged item.
        if major != 6 {
            if let Some(Some(left)) = open.last_mut() {
                *left -= 1;
                owed -= 1;
            }
        }
        let width = match info {
            0..=23 => 0,
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 if matches!(major, 2..=5) => {
                open.push(None); // its items or chunks follow, then a break
                continue;
            }
            _ => return Ok(()),
        };
        let Some(bytes) = cbor.get(at..at + width) else {
            return Ok(());
        };
        let declared = if width == 0 {
            u64::from(info)
        } else {
            bytes.iter().fold(0u64, |n, &b| n << 8 | u64::from(b))
        };
        at += width;
        let left = (cbor.len() - at) as u64;
        match major {
            2 | 3 => {
                if declared > left {
                    return Err(format!(
                        "a header declares {declared} bytes where {left} are left"
                    ));
                }
                at += declared as usize; // within `left`, checked above
                if owed > left - declared {
                    return Err(format!(
                        "{owed} items are declared where {} bytes are left",
                        left - declared
                    ));
                }
            }
            4 | 5 => {
                let items = if major == 5 {
                    declared.saturating_mul(2)
                } else {
                    declared
                };
                owed = owed.saturating_add(items);
                if owed > left {
                    return Err(format!(
                        "a header declares {items} items, {owed} in all with the collections \
                         around it, where {left} bytes are left"
                    ));
                }
                open.push(Some(items));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pseudo-random CBOR value (a small linear congruential generator, so the test is
    /// the same on every run).
    fn random_value(seed: &mut u64, depth: u32) -> ciborium::Value {
        use ciborium::Value;
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let pick = (*seed >> 33) % if depth == 0 { 6 } else { 9 };
        let n = ((*seed >> 20) % 5) as usize;
        match pick {
            0 => Value::Integer(((*seed >> 8) as i64).into()),
            1 => Value::Float(f64::from_bits(*seed >> 3)),
            2 => Value::Bytes(vec![7; n * 30]),
            3 => Value::Text("é".repeat(n * 20)),
            4 => Value::Bool(n % 2 == 0),
            5 => Value::Null,
            6 => Value::Array((0..n).map(|_| random_value(seed, depth - 1)).collect()),
            7 => Value::Map(
                (0..n)
                    .map(|_| (random_value(seed, depth - 1), random_value(seed, depth - 1)))
                    .collect(),
            ),
            _ => Value::Tag(n as u64 * 1000, Box::new(random_value(seed, depth - 1))),
        }
    }

    #[test]
    fn what_ciborium_writes_always_fits() {
        let mut seed = 1;
        for _ in 0..5_000 {
            let value = random_value(&mut seed, 4);
            let mut cbor = Vec::new();
            ciborium::into_writer(&value, &mut cbor).unwrap();
            assert_eq!(lengths_fit(&cbor), Ok(()), "{value:?}");
        }
    }

    #[test]
    fn lengths_past_the_end_are_refused_before_ciborium_sees_them() {
        // What ciborium writes for ordinary values passes.
        let mut ok = Vec::new();
        ciborium::into_writer(&(vec![1u8, 2, 3], "text", [(1, 2.5)], Some(b'x')), &mut ok).unwrap();
        assert_eq!(lengths_fit(&ok), Ok(()));
        // 255 nested arrays, each declaring 2^32 - 1 items: 2 KB that would have a
        // recursive type reserve 1 MiB per level.
        let nested: Vec<u8> = std::iter::repeat_n([0x9b, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff], 255)
            .flatten()
            .collect();
        assert!(
            lengths_fit(&nested)
                .unwrap_err()
                .contains("4294967295 items")
        );
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Tree(Vec<Tree>);
        let e = Cbor::default().decode::<Tree>(&nested).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Decode);
        assert!(e.to_string().contains("declares"), "{e}");
        // A byte string and a map that claim more than follows.
        assert!(lengths_fit(&[0x5a, 0, 1, 0, 0, 1, 2]).is_err());
        assert!(lengths_fit(&[0xa2, 1, 2, 3]).is_err());
        // Indefinite lengths and breaks walk through, and tags count with what they tag.
        assert_eq!(lengths_fit(&[0x9f, 1, 2, 0xff]), Ok(()));
        assert_eq!(lengths_fit(&[0x5f, 0x41, 7, 0xff]), Ok(()));
        assert_eq!(
            lengths_fit(&[0x82, 0xc1, 0x1a, 0, 0, 0, 1, 0xf9, 0, 0]),
            Ok(())
        );
        assert_eq!(lengths_fit(&[0x81, 0x9f, 0x81, 1, 0xff]), Ok(()));
        // What ciborium writes for nested and tagged values, floats of every width, maps
        // with compound keys.
        let mut ok = Vec::new();
        let value = ciborium::Value::Map(vec![(
            ciborium::Value::Array(vec![1.into(), ciborium::Value::Float(0.5)]),
            ciborium::Value::Tag(2, Box::new(ciborium::Value::Bytes(vec![1, 2, 3]))),
        )]);
        ciborium::into_writer(&(value, 1e300f64, 1.5f32, vec![vec![(); 3]; 4]), &mut ok).unwrap();
        assert_eq!(lengths_fit(&ok), Ok(()));
    }
}
