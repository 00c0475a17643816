//! The items of a `for` loop over a collection: stored once, with a count of those taken.
//!
//! A loop keeps the items it has still to visit across its awaits. Stored as "the items left",
//! every iteration would change the front of the stored bytes, and a checkpoint would write
//! the collection's first chunk again each time. A [`ForList`] is stored as the encoding of all
//! the items the loop had when it was first stored, unchanged for the whole loop, followed by
//! the number taken since: each checkpoint of the loop changes that number only, and the frame
//! writer keeps it apart from the unchanged encoding (see [`ForState::prepare`]), so a chunked
//! frame names the items' slots again and writes a few bytes.
//!
//! [`ForState::prepare`]: super::ForState::prepare

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::OnceLock;

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::ForIter;
use crate::codec::{self, CodecError};

/// The items of a `for` loop over any iterable: what the loop has left to visit, and (once
/// stored) the encoding of the items it had then, with the number taken since.
pub struct ForList<T> {
    left: VecDeque<T>,
    /// The encoding of `left` when the loop was first stored (set once per loop).
    encoded: OnceLock<Vec<u8>>,
    /// Items taken since `encoded` was set (0 while it is not).
    taken: u64,
}

impl<T> ForList<T> {
    /// The loop's items, none of them visited.
    pub(crate) fn new(items: VecDeque<T>) -> Self {
        ForList { left: items, encoded: OnceLock::new(), taken: 0 }
    }
}

impl<T> ForIter for ForList<T> {
    type Item = T;
    fn next_item(&mut self) -> Option<T> {
        let item = self.left.pop_front()?;
        if self.encoded.get().is_some() {
            self.taken += 1;
        }
        Some(item)
    }
}

impl<T: Serialize + DeserializeOwned> ForList<T> {
    /// Encodes the items on the first write of the loop (checking that they round-trip when
    /// `check`); returns how many trailing bytes of the stored form change as the loop goes on.
    pub(crate) fn prepare(&self, check: bool) -> Result<usize, CodecError> {
        if self.encoded.get().is_none() {
            let bytes =
                if check { codec::encode_checked(&self.left)? } else { codec::encode(&self.left)? };
            // `taken` is 0 until `encoded` is set.
            let _ = self.encoded.set(bytes);
        }
        Ok(codec::encode(&self.taken)?.len())
    }
}

/// Bytes written as one byte string (not as a sequence of `u8`s).
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl<T: Serialize> Serialize for ForList<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let encoded = match self.encoded.get() {
            Some(e) => e,
            // Written without `prepare` (not by the frame writer): the items left, taken 0.
            None => &codec::encode(&self.left).map_err(serde::ser::Error::custom)?,
        };
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&Bytes(encoded))?;
        t.serialize_element(&self.taken)?;
        t.end()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for ForList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = ForList<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the items of a `for` loop and how many were taken")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ForList<T>, A::Error> {
                let ByteBuf(encoded) =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let taken: u64 =
                    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let mut left: VecDeque<T> = codec::decode(&encoded).map_err(de::Error::custom)?;
                let skip =
                    usize::try_from(taken).ok().filter(|n| *n <= left.len()).ok_or_else(|| {
                        de::Error::custom(format!("{taken} items taken of {}", left.len()))
                    })?;
                left.drain(..skip);
                let encoded = OnceLock::from(encoded);
                Ok(ForList { left, encoded, taken })
            }
        }
        d.deserialize_tuple(2, V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(l: &mut ForList<String>) -> Vec<String> {
        std::iter::from_fn(|| l.next_item()).collect()
    }

    #[test]
    fn a_stored_loop_keeps_its_items_and_changes_only_its_count() {
        let items: VecDeque<String> = (0..100).map(|i| format!("item {i}")).collect();
        let mut l = ForList::new(items);
        l.next_item();
        let tail = l.prepare(true).unwrap();
        let first = codec::encode(&l).unwrap();
        l.next_item();
        l.next_item();
        l.prepare(false).unwrap();
        let later = codec::encode(&l).unwrap();
        assert_eq!(first.len(), later.len());
        let fixed = first.len() - tail;
        assert_eq!(first[..fixed], later[..fixed], "only the count changes");
        let mut back: ForList<String> = codec::decode(&later).unwrap();
        let rest = drain(&mut back);
        assert_eq!(rest.first().map(String::as_str), Some("item 3"));
        assert_eq!(rest.len(), 97);
        // Read back and written again, the bytes are the same.
        let back: ForList<String> = codec::decode(&later).unwrap();
        back.prepare(false).unwrap();
        assert_eq!(codec::encode(&back).unwrap(), later);
    }

    #[test]
    fn a_count_past_the_items_is_refused() {
        let l = ForList::new(VecDeque::from(vec![1u8, 2]));
        l.prepare(false).unwrap();
        let mut bytes = codec::encode(&l).unwrap();
        *bytes.last_mut().unwrap() = 3;
        let err = codec::decode::<ForList<u8>>(&bytes).err().unwrap();
        assert!(err.to_string().contains("3 items taken of 2"), "{err}");
    }
}
