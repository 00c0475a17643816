//! `PgStore` passes the store conformance suite every store implementation runs.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use durable_runtime::store::{Space, Store, conformance};
use support::TempSchema;

#[test]
fn pg_store_conforms() {
    let schema = TempSchema::new("conf");
    let store = schema.store();
    conformance::check(&store).unwrap();
    assert!(store.shared(), "a PostgreSQL store is shared by several processes");
}

#[test]
fn a_second_store_on_the_schema_sees_what_the_first_wrote() {
    let schema = TempSchema::new("reopen");
    let first = schema.store();
    first.put(Space::Instances, b"kept", b"yes").unwrap();
    first.create("made", b"rec").unwrap();
    first.append("made", b"m").unwrap();
    first.flush().unwrap();
    drop(first);
    let second = schema.store();
    assert_eq!(second.get(Space::Instances, b"kept").unwrap().as_deref(), Some(&b"yes"[..]));
    assert_eq!(second.read("made").unwrap().unwrap().version, 1);
    assert_eq!(second.inbox("made").unwrap().len(), 1);
}

#[test]
fn a_record_of_several_mebibytes_round_trips() {
    let schema = TempSchema::new("big");
    let store = schema.store();
    let big: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    store.create("big", &big).unwrap();
    assert_eq!(store.read("big").unwrap().unwrap().record, big);
}

#[test]
fn a_bad_schema_name_or_an_unreachable_server_is_an_error_not_a_panic() {
    let conninfo = support::conninfo();
    let e = durable_postgres::PgStore::connect_in(&conninfo, "Bad-Name").unwrap_err();
    assert!(e.to_string().contains("schema name"), "{e}");
    let e = durable_postgres::PgStore::connect("host=/nonexistent/socket/dir user=x dbname=x")
        .unwrap_err();
    assert!(e.to_string().contains("PostgreSQL"), "{e}");
}

#[test]
fn connect_uses_schema_durable() {
    let existed = !support::sql("SELECT 1 FROM pg_namespace WHERE nspname = 'durable'").is_empty();
    let store = durable_postgres::PgStore::connect(&support::conninfo()).unwrap();
    assert_eq!(store.schema(), "durable");
    let tables = support::sql(
        "SELECT 1 FROM pg_tables WHERE schemaname = 'durable' AND tablename = 'instances'",
    );
    assert_eq!(tables.len(), 1);
    drop(store);
    // Only what this test made goes: DURABLE_PG may name a database of the developer's.
    if !existed {
        support::sql("DROP SCHEMA durable CASCADE");
    }
}

#[test]
fn a_store_whose_connections_were_killed_reports_an_error_and_then_works_again() {
    let schema = TempSchema::new("killed");
    drop(schema.store());
    let app = format!("{}_app", schema.name);
    let conninfo = format!("{} application_name={app}", support::conninfo());
    let store = durable_postgres::PgStore::connect_in(&conninfo, &schema.name).unwrap();
    store.create("k", b"before").unwrap();
    // The timeout makes the server wait until the backends are gone (PostgreSQL 14+), so no
    // call below can still reach a living one.
    let killed = support::sql(&format!(
        "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity \
         WHERE application_name = '{app}'"
    ));
    assert!(!killed.is_empty(), "the store's connection was found");
    // A call may meet a dead connection the pool has not yet seen close: an error, not a panic.
    // Each such call discards its connection, so within the pool's size a call gets a new one.
    let mut errors = Vec::new();
    let again = loop {
        match store.read("k") {
            Ok(found) => break found.unwrap(),
            Err(e) => {
                assert!(e.to_string().contains("PostgreSQL"), "{e}");
                errors.push(e.to_string());
                assert!(
                    errors.len() <= durable_postgres::PgStore::POOL_SIZE,
                    "the store never got a new connection: {errors:?}"
                );
            }
        }
    };
    assert_eq!(again.record, b"before");
}
