//! Two `PgStore`s on one schema behave as two processes sharing the database: racing writers
//! and claimers, a lease taken over after it expired, and changes one makes told to the other.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier, mpsc};
use std::time::Duration;

use durable_runtime::store::{Change, Fence, Store, Write, WriteError};
use support::TempSchema;

fn plain(expected: u64, record: &[u8]) -> Write<'_> {
    Write { expected, record, fence: None, consumed: &[], finished: false }
}

/// Runs `a` and `b` at once, from two threads released together.
fn race<T: Send>(a: impl FnOnce() -> T + Send, b: impl FnOnce() -> T + Send) -> (T, T) {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let ta = s.spawn(|| {
            barrier.wait();
            a()
        });
        let tb = s.spawn(|| {
            barrier.wait();
            b()
        });
        (ta.join().unwrap(), tb.join().unwrap())
    })
}

#[test]
fn of_two_processes_writing_one_version_exactly_one_wins() {
    let schema = TempSchema::new("writers");
    let (a, b) = (schema.store(), schema.store());
    a.create("race", b"0").unwrap();
    let (mut won_a, mut won_b) = (0, 0);
    for expected in 1..=100u64 {
        let (ra, rb) = race(
            || a.write("race", &plain(expected, b"a")),
            || b.write("race", &plain(expected, b"b")),
        );
        let conflict = |r: &Result<u64, WriteError>| matches!(r, Err(WriteError::Conflict { found: Some(f), .. }) if *f == expected + 1);
        match (&ra, &rb) {
            (Ok(v), _) if conflict(&rb) && *v == expected + 1 => won_a += 1,
            (_, Ok(v)) if conflict(&ra) && *v == expected + 1 => won_b += 1,
            _ => panic!("version {expected}: one must win, one conflict: {ra:?} {rb:?}"),
        }
        let winner: &[u8] = if ra.is_ok() { b"a" } else { b"b" };
        let now = b.read("race").unwrap().unwrap();
        assert_eq!((now.version, now.record.as_slice()), (expected + 1, winner));
    }
    assert_eq!(won_a + won_b, 100);
}

#[test]
fn of_two_processes_claiming_one_instance_exactly_one_gets_it() {
    let schema = TempSchema::new("claimers");
    let (a, b) = (schema.store(), schema.store());
    for round in 0..50 {
        let id = format!("i{round:03}");
        a.create(&id, b"r").unwrap();
        // `lease` of the one instance, from both.
        let (la, lb) = race(|| a.lease(&id, "A", 0, 1000), || b.lease(&id, "B", 0, 1000));
        let (la, lb) = (la.unwrap(), lb.unwrap());
        assert!(la.is_some() != lb.is_some(), "round {round}: exactly one lease: {la:?} {lb:?}");
        let held = la.or(lb).unwrap();
        a.release(&held).unwrap();
        // `claim` of everything, from both: the instance goes to one of them.
        let (ca, cb) =
            race(|| a.claim("A", 0, 1000, None, 100), || b.claim("B", 0, 1000, None, 100));
        let (ca, cb) = (ca.unwrap(), cb.unwrap());
        let ids_a: BTreeSet<_> = ca.iter().map(|l| l.id.clone()).collect();
        let ids_b: BTreeSet<_> = cb.iter().map(|l| l.id.clone()).collect();
        assert!(
            ids_a.is_disjoint(&ids_b),
            "round {round}: both claimed {:?}",
            ids_a.intersection(&ids_b)
        );
        assert!(ids_a.contains(&id) || ids_b.contains(&id), "round {round}: nobody got {id}");
        assert!(ca.iter().all(|l| l.owner == "A") && cb.iter().all(|l| l.owner == "B"));
        for lease in ca.iter().chain(&cb) {
            b.release(lease).unwrap();
        }
    }
}

#[test]
fn a_lease_taken_over_after_expiry_fences_the_old_holder_off() {
    let schema = TempSchema::new("takeover");
    let (a, b) = (schema.store(), schema.store());
    a.create("job", b"r").unwrap();
    let held = a.claim("A", 1000, 2000, None, 10).unwrap().pop().unwrap();
    assert!(b.lease("job", "B", 1999, 3000).unwrap().is_none(), "not before it expires");
    let fence = Fence { token: held.token, until_ms: 2000 };
    assert_eq!(a.write("job", &Write { fence: Some(fence), ..plain(1, b"A1") }).unwrap(), 2);
    let taken = b.lease("job", "B", 2000, 3000).unwrap().expect("expired: B takes it over");
    assert!(taken.token > held.token, "a takeover issues a greater token");
    match a.write("job", &Write { fence: Some(fence), ..plain(2, b"A2") }) {
        Err(WriteError::Fenced { token, current: Some(current), .. }) => {
            assert_eq!((token, current), (held.token, taken.token));
        }
        other => panic!("the old holder's write must be fenced: {other:?}"),
    }
    let now = b.read("job").unwrap().unwrap();
    assert_eq!(
        (now.version, now.record.as_slice()),
        (2, &b"A1"[..]),
        "the fenced write changed nothing"
    );
    let fence_b = Fence { token: taken.token, until_ms: 4000 };
    assert_eq!(b.write("job", &Write { fence: Some(fence_b), ..plain(2, b"B1") }).unwrap(), 3);
    // B's fenced write extended its lease: A cannot take it back at 3500.
    assert!(a.lease("job", "A", 3500, 5000).unwrap().is_none());
    // A stale release is a no-op; B's frees the instance.
    a.release(&held).unwrap();
    assert!(a.claim("A", 3500, 5000, None, 10).unwrap().is_empty());
    b.release(&taken).unwrap();
    let again = a.claim("A", 3500, 5000, None, 10).unwrap();
    assert!(again.len() == 1 && again[0].token > taken.token);
}

/// Watches `store`; the changes it is told of.
fn watch(store: &impl Store) -> mpsc::Receiver<Change> {
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    store.watch(Arc::new(move |c| drop(tx.lock().unwrap().send(c)))).unwrap();
    rx
}

fn next(rx: &mpsc::Receiver<Change>) -> Change {
    rx.recv_timeout(Duration::from_secs(10)).expect("a change within 10 s")
}

#[test]
fn a_watcher_is_told_of_the_other_process_changes_and_of_a_lost_connection() {
    let schema = TempSchema::new("watch");
    let (a, b) = (schema.store(), schema.store());
    let changes = watch(&b);
    a.create("w", b"r").unwrap();
    assert_eq!(next(&changes), Change::Instance("w".into()));
    a.append("w", b"m").unwrap();
    assert_eq!(next(&changes), Change::Instance("w".into()));
    a.write("w", &plain(1, b"r2")).unwrap();
    assert_eq!(next(&changes), Change::Instance("w".into()));
    // B's own writes are not told to B: notifications arrive in commit order, so the next
    // change after B's write is A's.
    b.create("own", b"r").unwrap();
    a.create("after", b"r").unwrap();
    assert_eq!(next(&changes), Change::Instance("after".into()));
    // A failed write tells nothing.
    assert!(a.write("w", &plain(1, b"stale")).is_err());
    a.remove("after", 1).unwrap();
    assert_eq!(next(&changes), Change::Instance("after".into()));
    // An id too long for a payload is told as "look at everything".
    let long = "x".repeat(9000);
    a.create(&long, b"r").unwrap();
    assert_eq!(next(&changes), Change::Missed);
    // The listener's connection is killed: B listens again and says it may have missed some.
    let killed = support::sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN \"{}_changes\"'",
        schema.name
    ));
    assert_eq!(killed.len(), 1, "one listener");
    assert_eq!(next(&changes), Change::Missed);
    a.create("later", b"r").unwrap();
    assert_eq!(next(&changes), Change::Instance("later".into()));
    assert!(changes.recv_timeout(Duration::from_millis(200)).is_err(), "nothing else");
}

#[test]
fn stores_in_other_schemas_are_not_told() {
    let (one, other) = (TempSchema::new("ns1"), TempSchema::new("ns2"));
    let (a, b) = (one.store(), other.store());
    let changes = watch(&b);
    a.create("elsewhere", b"r").unwrap();
    other.store().create("here", b"r").unwrap();
    assert_eq!(next(&changes), Change::Instance("here".into()));
    assert!(b.read("elsewhere").unwrap().is_none(), "schemas do not share instances");
}

#[test]
fn a_watch_callback_may_call_the_store() {
    let schema = TempSchema::new("callback");
    let (a, b) = (schema.store(), Arc::new(schema.store()));
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    // Weak: the callback lives as long as the store.
    let reader = Arc::downgrade(&b);
    b.watch(Arc::new(move |change| {
        if let (Change::Instance(id), Some(store)) = (change, reader.upgrade()) {
            let record = store.read(&id).map(|v| v.map(|v| v.record));
            drop(tx.lock().unwrap().send(record.map_err(|e| e.to_string())));
        }
    }))
    .unwrap();
    a.create("cb", b"rec").unwrap();
    let read = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(read, Ok(Some(b"rec".to_vec())));
}
