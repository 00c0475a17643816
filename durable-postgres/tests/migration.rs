//! The schema is versioned: a database made at version 1 is migrated on connect and keeps its
//! data; processes connecting at once migrate once; a newer schema is refused.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use durable_postgres::{PgStore, schema};
use durable_runtime::store::{Appended, Fence, Space, Store, Timer, Write};
use support::{TempSchema, conninfo, sql};

fn versions(schema: &str) -> Vec<String> {
    sql(&format!("SELECT version FROM \"{schema}\".schema_version ORDER BY version"))
        .into_iter()
        .map(|row| row[0].clone().unwrap())
        .collect()
}

fn has_unfinished_index(schema: &str) -> bool {
    !sql(&format!(
        "SELECT 1 FROM pg_indexes WHERE schemaname = '{schema}' AND indexname = 'instances_unfinished'"
    ))
    .is_empty()
}

#[test]
fn a_version_1_database_is_migrated_and_keeps_its_data() {
    let schema = TempSchema::new("v1");
    let timer = Timer { at_ms: 500, id: "a".into() };
    let held = {
        let old = PgStore::connect_at(&conninfo(), &schema.name, 1).unwrap();
        assert_eq!(versions(&schema.name), ["1"]);
        assert!(!has_unfinished_index(&schema.name), "version 1 has no partial index");
        old.create("a", b"rec-a").unwrap();
        old.create("done", b"rec-d").unwrap();
        old.write(
            "done",
            &Write { expected: 1, record: b"end", fence: None, consumed: &[], finished: true },
        )
        .unwrap();
        old.append("a", b"m1").unwrap();
        old.append("a", b"m2").unwrap();
        old.set_timer(&timer).unwrap();
        old.put(Space::Timers, b"k", b"kv").unwrap();
        let held = old.claim("A", 100, 1000, None, 10).unwrap();
        assert_eq!(held.len(), 1, "only the unfinished instance: {held:?}");
        held.into_iter().next().unwrap()
    };
    let store = schema.store();
    assert_eq!(versions(&schema.name), ["1", "2", "3"]);
    assert!(has_unfinished_index(&schema.name));
    let a = store.read("a").unwrap().unwrap();
    assert_eq!((a.version, a.record.as_slice()), (1, &b"rec-a"[..]));
    let bodies: Vec<Vec<u8>> = store.inbox("a").unwrap().into_iter().map(|m| m.body).collect();
    assert_eq!(bodies, [b"m1".to_vec(), b"m2".to_vec()]);
    assert_eq!(store.read("done").unwrap().unwrap().version, 2);
    assert_eq!(store.get(Space::Timers, b"k").unwrap().as_deref(), Some(&b"kv"[..]));
    assert_eq!(store.due_timers(1000, 10).unwrap(), (vec![timer], None));
    // The lease survived: another owner cannot claim, the holder writes with its token.
    assert!(store.claim("B", 200, 2000, None, 10).unwrap().is_empty(), "held, or finished");
    let fence = Fence { token: held.token, until_ms: 1500 };
    let inbox: Vec<u64> = store.inbox("a").unwrap().iter().map(|m| m.seq).collect();
    let write =
        Write { expected: 1, record: b"a2", fence: Some(fence), consumed: &inbox, finished: false };
    assert_eq!(store.write("a", &write).unwrap(), 2);
    assert!(store.inbox("a").unwrap().is_empty());
    // Version 3 keeps the keys of deduplicated appends.
    assert!(matches!(store.append_once("a", "k", b"m3").unwrap(), Appended::New(_)));
    assert_eq!(store.append_once("a", "k", b"m3").unwrap(), Appended::Duplicate);
    // And the new schema works for new instances as well.
    store.create("new", b"n").unwrap();
    let claimed = store.claim("B", 2000, 3000, None, 10).unwrap();
    let ids: Vec<&str> = claimed.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["a", "new"], "the expired lease and the new instance; never the finished one");
    assert!(claimed[0].token > held.token);
}

#[test]
fn processes_connecting_at_once_migrate_once() {
    let schema = TempSchema::new("together");
    let stores: Vec<_> = std::thread::scope(|s| {
        let connecting: Vec<_> =
            (0..4).map(|_| s.spawn(|| PgStore::connect_in(&conninfo(), &schema.name))).collect();
        connecting.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for store in &stores {
        assert!(store.as_ref().is_ok(), "{store:?}");
    }
    assert_eq!(versions(&schema.name), ["1", "2", "3"]);
}

#[test]
fn a_schema_newer_than_the_crate_is_refused() {
    let schema = TempSchema::new("newer");
    drop(schema.store());
    sql(&format!(
        "INSERT INTO \"{}\".schema_version (version) VALUES ({})",
        schema.name,
        schema::CURRENT + 1
    ));
    let e = PgStore::connect_in(&conninfo(), &schema.name).unwrap_err();
    assert!(e.to_string().contains("newer than this durable-postgres knows"), "{e}");
}
