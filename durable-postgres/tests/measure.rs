//! Measurements behind the numbers in the README and the schema's history, not checks: run
//! with `cargo test -p durable-postgres --test measure -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, reason = "a measurement fails loudly on unexpected errors")]

mod support;

use std::time::Instant;

use durable_postgres::PgStore;
use durable_runtime::store::{Fence, Store, Write};
use support::{TempSchema, conninfo, sql};

#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn round_trips_and_claims_over_many_finished_instances() {
    println!(
        "server settings: {:?}",
        sql("SELECT name, setting FROM pg_settings \
             WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')")
    );
    let schema = TempSchema::new("measure");
    let store = schema.store();
    store.create("w", b"x").unwrap();
    let lease = store.lease("w", "A", 0, u64::MAX / 4).unwrap().unwrap();
    let record = vec![7u8; 1024];
    let n = 2000u32;
    let t = Instant::now();
    for i in 0..u64::from(n) {
        let fence = Some(Fence { token: lease.token, until_ms: 100 });
        let write =
            Write { expected: i + 1, record: &record, fence, consumed: &[], finished: false };
        store.write("w", &write).unwrap();
    }
    println!("a fenced write of 1 KiB: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        store.read("w").unwrap();
    }
    println!("a read: {:?}", t.elapsed() / n);
    let t = Instant::now();
    for _ in 0..n {
        store.append("w", b"event").unwrap();
    }
    println!("an append: {:?}", t.elapsed() / n);
    // Schema version 2 adds the partial index on unfinished instances that claims page through.
    for version in [1, 2] {
        let schema = TempSchema::new(&format!("claim{version}"));
        let store = PgStore::connect_at(&conninfo(), &schema.name, version).unwrap();
        sql(&format!(
            "INSERT INTO \"{0}\".instances (id, record, version, finished)
             SELECT convert_to('f' || lpad(g::text, 7, '0'), 'UTF8'), '\\x00', 1, true
             FROM generate_series(1, 200000) g;
             ANALYZE \"{0}\".instances",
            schema.name
        ));
        store.create("open", b"r").unwrap();
        let k = 50u32;
        let t = Instant::now();
        for i in 0..u64::from(k) {
            assert_eq!(store.claim("A", i * 10, i * 10 + 5, None, 16).unwrap().len(), 1);
        }
        println!(
            "schema version {version}: a claim among 200000 finished instances: {:?}",
            t.elapsed() / k
        );
    }
}
