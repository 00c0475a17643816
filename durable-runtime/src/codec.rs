//! The one place that knows the byte format of stored values.
//!
//! Everything durable writes goes through [`encode`] and comes back through [`decode`]: bincode 2
//! with serde, positional and little-endian with variable-length integers. Every decode has a size
//! limit, so a corrupt length prefix is an error and never an allocation of gigabytes, and a depth
//! limit ([`MAX_DEPTH`]), so a deeply nested value is an error and never a stack overflow.

mod depth;

pub use depth::MAX_DEPTH;

use std::mem::ManuallyDrop;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest value, in bytes, that [`decode`] accepts (64 MiB).
pub const DECODE_LIMIT: usize = 64 << 20;

/// A value could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// Serialization failed (for example `#[serde(flatten)]`, which bincode cannot write).
    #[error("cannot encode value: {0}")]
    Encode(String),
    /// The bytes do not decode as the expected type, or exceed the size limit.
    #[error("cannot decode value: {0}")]
    Decode(String),
    /// The encoded value is larger than what may be stored, or would not decode again.
    #[error("{0}")]
    TooLarge(String),
    /// The bytes decode, but not to the same value: the type does not round-trip through the codec.
    #[error(
        "value does not round-trip through the codec (untagged or internally tagged enums, \
         `#[serde(flatten)]` and `skip_serializing_if` are not supported): {0}"
    )]
    NoRoundTrip(String),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// Encodes `value` to bytes.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a `T` from `bytes`; trailing bytes are an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, read) = decode_prefix(bytes)?;
    if read != bytes.len() {
        return Err(CodecError::Decode(format!(
            "{} trailing bytes after the value",
            bytes.len() - read
        )));
    }
    Ok(value)
}

/// Decodes a `T` from the front of `bytes`; returns it and the number of bytes read.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, usize), CodecError> {
    bincode::serde::seed_decode_from_slice(depth::Limited::<T>::new(), bytes, config())
        .map_err(|e| CodecError::Decode(e.to_string()))
}

/// Checks that `bytes`, the encoding of a `T` about to be stored, will decode again: at most
/// [`DECODE_LIMIT`] bytes, and within the decoder's allowance.
///
/// The decoder's limit counts the memory it claims, not the bytes it reads: up to 16 bytes per
/// encoded byte (a `u128` written in one byte claims 16). An encoding of at most a sixteenth of
/// the limit therefore always decodes; a larger one is decoded here once to find out.
pub fn check_readable<T: DeserializeOwned>(bytes: &[u8]) -> Result<(), CodecError> {
    if bytes.len() > DECODE_LIMIT {
        return Err(CodecError::TooLarge(format!(
            "{} bytes exceed the limit of {DECODE_LIMIT} bytes on any stored value",
            bytes.len()
        )));
    }
    if bytes.len().saturating_mul(16) > DECODE_LIMIT {
        decode::<T>(bytes).map_err(|e| {
            CodecError::TooLarge(format!("{} bytes that would not decode again: {e}", bytes.len()))
        })?;
    }
    Ok(())
}

/// Encodes `value`, decodes the bytes and encodes the decoded value again: the value round-trips
/// when the second encoding matches the first. Returns the first encoding.
///
/// "Matches" is not "equal bytes": a `HashMap` or `HashSet` writes its entries in iteration
/// order, and two maps with the same content (the original and the decoded copy, each with its
/// own random hasher) iterate in different orders. Their encodings are then permutations of the
/// same entry encodings: the same length and the same bytes, in another order. So when the bytes
/// differ, the check accepts the encodings only if they have the same length and the same bytes
/// (as multisets), and the second one decodes too. The failures this check exists for do not
/// survive that: `#[serde(flatten)]` fails to encode, untagged and internally tagged enums fail to
/// decode, and a field that `skip_serializing_if` left out is read from the following bytes, which
/// fails to decode, leaves bytes over, or decodes to a value that is written with a different
/// length or different bytes (the tests below pin each case).
pub fn encode_checked<T: Serialize + DeserializeOwned>(value: &T) -> Result<Vec<u8>, CodecError> {
    let bytes = encode(value)?;
    // The decoded copies are never dropped: they are not values of the program, and a `Drop`
    // of the user's type must not see them. The check runs once per suspension point and
    // process, so what this leaks is bounded.
    let back: ManuallyDrop<T> =
        ManuallyDrop::new(decode(&bytes).map_err(|e| CodecError::NoRoundTrip(e.to_string()))?);
    let again = encode(&*back)?;
    if again == bytes {
        return Ok(bytes);
    }
    if again.len() != bytes.len() || sorted(&again) != sorted(&bytes) {
        return Err(CodecError::NoRoundTrip(
            "decoding and encoding again gives different bytes".into(),
        ));
    }
    decode::<T>(&again)
        .map(ManuallyDrop::new)
        .map_err(|e| CodecError::NoRoundTrip(e.to_string()))?;
    Ok(bytes)
}

fn sorted(bytes: &[u8]) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.sort_unstable();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn round_trips_plain_values() {
        let v = (7u64, String::from("x"), vec![1i32, -2]);
        let b = encode(&v).unwrap();
        assert_eq!(decode::<(u64, String, Vec<i32>)>(&b).unwrap(), v);
    }

    #[test]
    fn corrupt_length_prefix_is_an_error_not_an_abort() {
        // A Vec<u8> whose varint length claims 2^60 elements.
        let bytes = [0xFFu8, 0, 0, 0, 0, 0, 0, 0x10, 0];
        assert!(matches!(decode::<Vec<u8>>(&bytes), Err(CodecError::Decode(_))));
    }

    #[test]
    fn values_that_would_not_decode_again_are_refused() {
        // Small numbers encode in one byte each but claim eight when decoded: 6 MiB of them
        // claim 48 MiB, fine; 9 MiB claim 72 MiB, over the limit.
        let fine = vec![1u64; 6 << 20];
        assert!(check_readable::<Vec<u64>>(&encode(&fine).unwrap()).is_ok());
        let over = vec![1u64; 9 << 20];
        let b = encode(&over).unwrap();
        assert!(b.len() < DECODE_LIMIT);
        assert!(matches!(check_readable::<Vec<u64>>(&b), Err(CodecError::TooLarge(_))));
        assert!(decode::<Vec<u64>>(&b).is_err(), "the check matches what decoding does");
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut b = encode(&1u8).unwrap();
        b.push(0);
        assert!(decode::<u8>(&b).is_err());
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    #[serde(untagged)]
    enum Untagged {
        A(u32),
        B(String),
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Skips {
        #[serde(skip_serializing_if = "Option::is_none")]
        a: Option<u32>,
        b: u32,
    }

    #[test]
    fn values_that_do_not_round_trip_are_caught() {
        assert!(matches!(encode_checked(&Untagged::A(1)), Err(CodecError::NoRoundTrip(_))));
        assert!(encode_checked(&Skips { a: None, b: 5 }).is_err());
        assert!(encode_checked(&Skips { a: Some(1), b: 5 }).is_ok());
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct SkipsVec {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        a: Vec<u8>,
        b: Vec<u8>,
        c: u8,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Inner {
        x: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Flattened {
        #[serde(flatten)]
        inner: Inner,
        y: u32,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    #[serde(tag = "kind")]
    enum Tagged {
        A { x: u32 },
    }

    #[test]
    fn every_unsupported_attribute_is_caught() {
        assert!(encode_checked(&Flattened { inner: Inner { x: 1 }, y: 2 }).is_err());
        assert!(encode_checked(&Tagged::A { x: 1 }).is_err());
        // The skipped `a` is read from `b`'s bytes: `b` = [2, 3] reads as `a` = [3, 4]...
        for b in [vec![], vec![0], vec![1, 1], vec![2, 3, 4], vec![0, 0, 0]] {
            for c in [0, 1, 2, 200] {
                let v = SkipsVec { a: vec![], b: b.clone(), c };
                assert!(encode_checked(&v).is_err(), "{v:?} passed the round-trip check");
            }
        }
    }

    #[test]
    fn hash_collections_round_trip() {
        use std::collections::{HashMap, HashSet};
        for n in [0usize, 1, 5, 50, 500] {
            let m: HashMap<String, i64> =
                (0..n).map(|i| (format!("key-{i}"), i64::try_from(i).unwrap() * 7)).collect();
            let s: HashSet<u64> = (0..n).map(|i| u64::try_from(i).unwrap() * 1000).collect();
            let nested: Vec<HashMap<u8, HashSet<String>>> = vec![
                (0..u8::try_from(n.min(200)).unwrap())
                    .map(|i| (i, [format!("a{i}"), format!("b{i}")].into_iter().collect()))
                    .collect(),
            ];
            // Many tries: each decoded map gets a new hasher and so, often, a new order.
            for _ in 0..20 {
                assert!(encode_checked(&m).is_ok(), "map of {n}");
                assert!(encode_checked(&s).is_ok(), "set of {n}");
                assert!(encode_checked(&nested).is_ok(), "nested of {n}");
            }
        }
    }
}
