//! A serde `Deserializer` wrapper that counts how deeply values nest and refuses to go deeper
//! than [`MAX_DEPTH`].
//!
//! Decoding is recursive: every level of a nested value (`enum List { Nil, Cons(Box<List>) }`,
//! nested `Vec`s, a crafted record) takes a few stack frames, and a value nested a hundred
//! thousand levels deep would overflow the thread's stack and abort the process. The wrapper sits
//! between bincode and the `Deserialize` impls: each compound value (sequence, tuple, struct,
//! map, enum, option, newtype) entered is one level, and entering one level too many is a decode
//! error instead. Primitives pass straight through.

use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, Visitor};

/// How deeply a decoded value may nest. Enough for any realistic data; at a few kilobytes of
/// stack per level (unoptimised builds), far from the 2 MiB stacks of tokio's threads.
pub const MAX_DEPTH: usize = 128;

/// Decodes a `T` through the depth counter; the entry point for [`super::decode`].
pub(super) struct Limited<T>(PhantomData<T>);

impl<T> Limited<T> {
    pub(super) fn new() -> Self {
        Limited(PhantomData)
    }
}

impl<'de, T: de::Deserialize<'de>> DeserializeSeed<'de> for Limited<T> {
    type Value = T;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<T, D::Error> {
        let depth = Cell::new(0);
        T::deserialize(Depth { inner: d, depth: &depth })
    }
}

struct Depth<'a, D> {
    inner: D,
    depth: &'a Cell<usize>,
}

/// One level entered; left again when dropped, on success and on error alike.
struct Level<'a>(&'a Cell<usize>);

impl<'a> Level<'a> {
    fn enter<E: de::Error>(depth: &'a Cell<usize>) -> Result<Self, E> {
        let next = depth.get() + 1;
        if next > MAX_DEPTH {
            return Err(E::custom(format_args!(
                "the value is nested more than {MAX_DEPTH} levels deep"
            )));
        }
        depth.set(next);
        Ok(Level(depth))
    }
}

impl Drop for Level<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

struct Wrap<'a, X> {
    inner: X,
    depth: &'a Cell<usize>,
}

impl<'a, X> Wrap<'a, X> {
    fn new(inner: X, depth: &'a Cell<usize>) -> Self {
        Wrap { inner, depth }
    }
}

macro_rules! forward_primitive {
    ($($method:ident)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            self.inner.$method(visitor)
        }
    )*};
}

macro_rules! compound {
    ($($method:ident ( $($arg:ident : $ty:ty),* ))*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            let _level = Level::enter::<D::Error>(self.depth)?;
            self.inner.$method($($arg,)* Wrap::new(visitor, self.depth))
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Depth<'_, D> {
    type Error = D::Error;

    forward_primitive! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_i128 deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64
        deserialize_u128 deserialize_f32 deserialize_f64 deserialize_char deserialize_str
        deserialize_string deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier deserialize_ignored_any
    }

    compound! {
        deserialize_any()
        deserialize_option()
        deserialize_seq()
        deserialize_map()
        deserialize_tuple(len: usize)
        deserialize_unit_struct(name: &'static str)
        deserialize_newtype_struct(name: &'static str)
        deserialize_tuple_struct(name: &'static str, len: usize)
        deserialize_struct(name: &'static str, fields: &'static [&'static str])
        deserialize_enum(name: &'static str, variants: &'static [&'static str])
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident ( $ty:ty ))*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, X: Visitor<'de>> Visitor<'de> for Wrap<'_, X> {
    type Value = X::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit! {
        visit_bool(bool) visit_i8(i8) visit_i16(i16) visit_i32(i32) visit_i64(i64)
        visit_i128(i128) visit_u8(u8) visit_u16(u16) visit_u32(u32) visit_u64(u64)
        visit_u128(u128) visit_f32(f32) visit_f64(f64) visit_char(char) visit_str(&str)
        visit_borrowed_str(&'de str) visit_string(String) visit_bytes(&[u8])
        visit_borrowed_bytes(&'de [u8]) visit_byte_buf(Vec<u8>)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Depth { inner: d, depth: self.depth })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Depth { inner: d, depth: self.depth })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(Wrap::new(seq, self.depth))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(Wrap::new(map, self.depth))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(Wrap::new(data, self.depth))
    }
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Wrap<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Depth { inner: d, depth: self.depth })
    }
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;
    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.inner.next_element_seed(Wrap::new(seed, self.depth))
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(Wrap::new(seed, self.depth))
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(Wrap::new(seed, self.depth))
    }
    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

impl<'a, 'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Wrap<'a, A> {
    type Error = A::Error;
    type Variant = Wrap<'a, A::Variant>;
    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), A::Error> {
        let depth = self.depth;
        let (value, variant) = self.inner.variant_seed(Wrap::new(seed, depth))?;
        Ok((value, Wrap::new(variant, depth)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Wrap<'_, A> {
    type Error = A::Error;
    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.inner.newtype_variant_seed(Wrap::new(seed, self.depth))
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let _level = Level::enter::<A::Error>(self.depth)?;
        self.inner.tuple_variant(len, Wrap::new(visitor, self.depth))
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let _level = Level::enter::<A::Error>(self.depth)?;
        self.inner.struct_variant(fields, Wrap::new(visitor, self.depth))
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_DEPTH;
    use crate::codec::{self, CodecError};
    use serde::{Deserialize, Serialize};

    /// A list nested `n` deep, encoded without building it: bincode writes `Cons(x)` as the
    /// variant index 1 followed by `x`, and `Nil` as 0.
    fn nested_list_bytes(n: usize) -> Vec<u8> {
        let mut b = vec![1u8; n];
        b.push(0);
        b
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum List {
        Nil,
        Cons(Box<List>),
    }

    #[test]
    fn deep_values_are_an_error_not_a_stack_overflow() {
        // On a small stack, so that a regression overflows here and not only in production.
        let t = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| {
                let err = codec::decode::<List>(&nested_list_bytes(100_000)).unwrap_err();
                assert!(
                    matches!(&err, CodecError::Decode(m) if m.contains("nested more than")),
                    "{err}"
                );
                let mut ok = List::Nil;
                for _ in 0..MAX_DEPTH - 1 {
                    ok = List::Cons(Box::new(ok));
                }
                assert_eq!(codec::decode::<List>(&nested_list_bytes(MAX_DEPTH - 1)).unwrap(), ok);
            })
            .unwrap();
        t.join().unwrap();
    }

    #[test]
    fn nested_collections_count_too() {
        // Each level: a Vec of length 1.
        let v = nested_list_bytes(100_000);
        assert!(codec::decode::<Vec<Vec<Vec<u8>>>>(&[1, 1, 0]).is_ok());
        #[derive(Deserialize)]
        struct Tree(Vec<Tree>);
        assert_eq!(codec::decode::<Tree>(&[1, 0]).map(|t| t.0.len()), Ok(1));
        match codec::decode::<Tree>(&v) {
            Err(err) => assert!(err.to_string().contains("nested more than"), "{err}"),
            Ok(_) => panic!("decoded a tree 100,000 deep"),
        }
    }
}
