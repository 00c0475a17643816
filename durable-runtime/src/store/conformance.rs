//! The behaviour every [`Store`] must have, as a check any implementation can run on a fresh,
//! empty store: `conformance::check(&my_store)` in its tests.

use super::{Space, Store};

/// Runs the conformance checks on an empty store; the first violation, described.
pub fn check(store: &dyn Store) -> Result<(), String> {
    let ensure = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
    let io = |e: super::StoreError| e.to_string();
    for space in [Space::Instances, Space::Timers] {
        ensure(store.get(space, b"a").map_err(io)?.is_none(), "a fresh store is empty")?;
        store.put(space, b"a", b"1").map_err(io)?;
        ensure(store.get(space, b"a").map_err(io)?.as_deref() == Some(b"1"), "get reads a put")?;
        store.put(space, b"a", b"2").map_err(io)?;
        ensure(store.get(space, b"a").map_err(io)?.as_deref() == Some(b"2"), "put replaces")?;
        ensure(
            store.put_new(space, b"a", b"3").map_err(io)?.as_deref() == Some(b"2"),
            "put_new on a present key returns the present value",
        )?;
        ensure(store.get(space, b"a").map_err(io)?.as_deref() == Some(b"2"), "put_new keeps it")?;
        ensure(
            store.put_new(space, b"b", b"4").map_err(io)?.is_none(),
            "put_new on an absent key",
        )?;
        ensure(store.get(space, b"b").map_err(io)?.as_deref() == Some(b"4"), "put_new writes")?;
        store.put(space, b"c", b"5").map_err(io)?;
        let all = store.scan(space, None, 10).map_err(io)?;
        let keys: Vec<&[u8]> = all.iter().map(|(k, _)| k.as_slice()).collect();
        ensure(keys == [b"a" as &[u8], b"b", b"c"], "scan returns every key in order")?;
        let page = store.scan(space, Some(b"a"), 1).map_err(io)?;
        ensure(
            page.len() == 1 && page[0].0 == b"b" && page[0].1 == b"4",
            "scan starts after `after` and stops at `limit`",
        )?;
        store.delete(space, b"b").map_err(io)?;
        ensure(store.get(space, b"b").map_err(io)?.is_none(), "delete removes")?;
        store.delete(space, b"b").map_err(io)?;
        store.flush().map_err(io)?;
        for k in [b"a", b"c"] {
            store.delete(space, k).map_err(io)?;
        }
    }
    // Spaces are separate.
    store.put(Space::Timers, b"x", b"t").map_err(io)?;
    ensure(store.get(Space::Instances, b"x").map_err(io)?.is_none(), "spaces do not share keys")?;
    store.delete(Space::Timers, b"x").map_err(io)?;
    // Big values and binary keys round-trip.
    let big = vec![0xab; 1 << 20];
    store.put(Space::Instances, &[0, 255, 7], &big).map_err(io)?;
    ensure(
        store.get(Space::Instances, &[0, 255, 7]).map_err(io)?.as_deref() == Some(&big[..]),
        "a 1 MiB value under a binary key round-trips",
    )?;
    store.delete(Space::Instances, &[0, 255, 7]).map_err(io)?;
    store.flush().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SledStore;

    #[test]
    fn sled_store_conforms_and_keeps_flushed_writes_across_a_reopen() {
        let dir = std::env::temp_dir().join(format!("durable-conformance-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let store = SledStore::open(&dir).unwrap();
            check(&store).unwrap();
            store.put(Space::Instances, b"kept", b"yes").unwrap();
            store.flush().unwrap();
            assert!(matches!(SledStore::open(&dir), Err(crate::store::StoreError::Locked { .. })));
        }
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.get(Space::Instances, b"kept").unwrap().as_deref(), Some(&b"yes"[..]));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
