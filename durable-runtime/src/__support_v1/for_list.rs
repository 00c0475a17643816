//! The items of a `for` loop over a collection: stored once, with how far the loop has got.
//!
//! A loop keeps the items it has still to visit across its awaits. Stored as "the items left",
//! every iteration would change the front of the stored bytes, and a checkpoint would write
//! the collection's first chunk again each time. A [`ForList`] is stored as the encoding of all
//! the items the loop had when it was first stored, unchanged for the whole loop, followed by
//! the number taken since and where the items left begin: each checkpoint of the loop changes
//! those two numbers only, and the frame writer keeps them apart from the unchanged encoding
//! (see [`ForState::prepare`]), so a chunked frame names the items' slots again and writes a
//! few bytes. Reading a loop back decodes the items left only: an item the loop took was a
//! value of the program, dropped by it once already.
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
/// stored) the encoding of the items it had then, with where the items left begin in it.
pub struct ForList<T> {
    left: VecDeque<T>,
    /// Set on the loop's first checkpoint, and kept for the whole loop.
    stored: OnceLock<Stored>,
}

/// A loop's items as stored: their number, then each item's encoding.
struct Stored {
    bytes: Vec<u8>,
    /// Where each item left ends in `bytes`.
    ends: VecDeque<usize>,
    /// Where the first item left begins.
    at: usize,
    /// Items taken since the encoding.
    taken: u64,
}

impl Stored {
    /// The encoding of `items`.
    fn of<T: Serialize>(items: &VecDeque<T>) -> Result<Stored, CodecError> {
        let mut bytes = codec::encode(&(items.len() as u64))?;
        let at = bytes.len();
        let mut ends = VecDeque::with_capacity(items.len());
        for item in items {
            bytes.extend_from_slice(&codec::encode(item)?);
            ends.push_back(bytes.len());
        }
        Ok(Stored { bytes, ends, at, taken: 0 })
    }

    /// The bytes of the stored form that change from one iteration to the next.
    fn tail_len(&self) -> Result<usize, CodecError> {
        Ok(codec::encode(&self.taken)?.len() + codec::encode(&(self.at as u64))?.len())
    }
}

impl<T> ForList<T> {
    /// The loop's items, none of them visited.
    pub(crate) fn new(items: VecDeque<T>) -> Self {
        ForList { left: items, stored: OnceLock::new() }
    }
}

impl<T> ForIter for ForList<T> {
    type Item = T;
    fn next_item(&mut self) -> Option<T> {
        let item = self.left.pop_front()?;
        if let Some(s) = self.stored.get_mut() {
            s.taken += 1;
            s.at = s.ends.pop_front().unwrap_or(s.bytes.len());
        }
        Some(item)
    }
}

impl<T: Serialize + DeserializeOwned> ForList<T> {
    /// Encodes the items on the first write of the loop (checking that the items left
    /// round-trip when `check`); returns how many trailing bytes of the stored form change as
    /// the loop goes on.
    pub(crate) fn prepare(&self, check: bool) -> Result<usize, CodecError> {
        if check {
            codec::encode_checked(&self.left)?;
        }
        match self.stored.get() {
            Some(s) => s.tail_len(),
            None => {
                let s = Stored::of(&self.left)?;
                let tail = s.tail_len();
                let _ = self.stored.set(s);
                tail
            }
        }
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
        if s.is_human_readable() {
            // Shown to people (the web view, `locals`): the items left.
            return s.collect_seq(&self.left);
        }
        let fresh;
        let stored = match self.stored.get() {
            Some(stored) => stored,
            // Written without `prepare` (not by the frame writer).
            None => {
                fresh = Stored::of(&self.left).map_err(serde::ser::Error::custom)?;
                &fresh
            }
        };
        let mut t = s.serialize_tuple(3)?;
        t.serialize_element(&Bytes(&stored.bytes))?;
        t.serialize_element(&stored.taken)?;
        t.serialize_element(&(stored.at as u64))?;
        t.end()
    }
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for ForList<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: DeserializeOwned> Visitor<'de> for V<T> {
            type Value = ForList<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "the items of a `for` loop, how many were taken and where the rest begin",
                )
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ForList<T>, A::Error> {
                let ByteBuf(bytes) = seq_value(&mut seq, 0)?;
                let taken: u64 = seq_value(&mut seq, 1)?;
                let at: u64 = seq_value(&mut seq, 2)?;
                ForList::read(bytes, taken, at).map_err(de::Error::custom)
            }
        }
        d.deserialize_tuple(3, V(PhantomData))
    }
}

/// Element `i` of a stored `ForList`.
fn seq_value<'de, A: SeqAccess<'de>, X: Deserialize<'de>>(
    seq: &mut A,
    i: usize,
) -> Result<X, A::Error> {
    seq.next_element()?.ok_or_else(|| de::Error::invalid_length(i, &"3 elements"))
}

impl<T: DeserializeOwned> ForList<T> {
    /// The loop stored as `bytes` with `taken` items taken and the rest from byte `at`: only
    /// the items left are decoded (those taken were values of the program, dropped by it once
    /// already).
    fn read(bytes: Vec<u8>, taken: u64, at: u64) -> Result<Self, String> {
        let (count, header) = codec::decode_prefix::<u64>(&bytes).map_err(|e| e.to_string())?;
        let left_count =
            count.checked_sub(taken).ok_or_else(|| format!("{taken} items taken of {count}"))?;
        let mut pos = usize::try_from(at)
            .ok()
            .filter(|at| (header..=bytes.len()).contains(at))
            .ok_or_else(|| format!("the items left begin at byte {at} of {}", bytes.len()))?;
        let mut left = VecDeque::new();
        let mut ends = VecDeque::new();
        for _ in 0..left_count {
            let (item, used) =
                codec::decode_prefix::<T>(&bytes[pos..]).map_err(|e| e.to_string())?;
            left.push_back(item);
            pos += used;
            ends.push_back(pos);
        }
        if pos != bytes.len() {
            return Err(format!("{} bytes after the {left_count} items left", bytes.len() - pos));
        }
        let at = usize::try_from(at).unwrap_or(0);
        Ok(ForList { left, stored: OnceLock::from(Stored { bytes, ends, at, taken }) })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn drain<T>(l: &mut ForList<T>) -> Vec<T> {
        std::iter::from_fn(|| l.next_item()).collect()
    }

    #[test]
    fn a_stored_loop_keeps_its_items_and_changes_only_its_tail() {
        let items: VecDeque<String> = (0..100).map(|i| format!("item {i}")).collect();
        let mut l = ForList::new(items);
        l.next_item();
        let tail = l.prepare(true).unwrap();
        let first = codec::encode(&l).unwrap();
        l.next_item();
        l.next_item();
        assert_eq!(l.prepare(false).unwrap(), tail);
        let later = codec::encode(&l).unwrap();
        assert_eq!(first.len(), later.len());
        let fixed = first.len() - tail;
        assert_eq!(first[..fixed], later[..fixed], "only the tail changes");
        assert_ne!(first[fixed..], later[fixed..]);
        let mut back: ForList<String> = codec::decode(&later).unwrap();
        let rest = drain(&mut back);
        assert_eq!(rest.first().map(String::as_str), Some("item 3"));
        assert_eq!(rest.len(), 97);
        // Read back, taken from and written again: the same bytes as the loop that ran on.
        let mut back: ForList<String> = codec::decode(&later).unwrap();
        back.next_item();
        l.next_item();
        back.prepare(false).unwrap();
        assert_eq!(codec::encode(&back).unwrap(), codec::encode(&l).unwrap());
    }

    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Counted(u32);

    impl Drop for Counted {
        fn drop(&mut self) {
            DROPPED.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn reading_a_loop_back_makes_no_item_it_already_took() {
        let mut l = ForList::new((0..10).map(Counted).collect());
        l.prepare(false).unwrap();
        for _ in 0..4 {
            l.next_item();
        }
        let bytes = codec::encode(&l).unwrap();
        let before = DROPPED.load(Ordering::SeqCst);
        let mut back: ForList<Counted> = codec::decode(&bytes).unwrap();
        assert_eq!(DROPPED.load(Ordering::SeqCst), before, "no item decoded and dropped");
        assert_eq!(back.next_item().map(|c| c.0), Some(4));
        assert_eq!(DROPPED.load(Ordering::SeqCst), before + 1, "only the item the loop took");
    }

    #[test]
    fn people_see_the_items_left() {
        let mut l = ForList::new(VecDeque::from(vec![1u8, 2, 3]));
        l.prepare(false).unwrap();
        l.next_item();
        assert_eq!(serde_json::to_string(&l).unwrap(), "[2,3]");
    }

    #[test]
    fn damaged_counts_and_positions_are_refused() {
        let mut l = ForList::new(VecDeque::from(vec![1u16, 300, 2]));
        l.prepare(false).unwrap();
        l.next_item();
        let good = codec::encode(&l).unwrap();
        let n = good.len();
        // The tail is `taken` (1) then `at` (2): both one byte here.
        for (i, value, why) in [
            (n - 2, 7, "7 items taken of 3"),
            (n - 1, 60, "begin at byte 60"),
            (n - 1, 3, "after the"),
        ] {
            let mut bad = good.clone();
            bad[i] = value;
            let err = codec::decode::<ForList<u16>>(&bad).err().unwrap().to_string();
            assert!(err.contains(why), "{err}");
        }
        assert_eq!(drain(&mut codec::decode::<ForList<u16>>(&good).unwrap()), [300, 2]);
    }
}
