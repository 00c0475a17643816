//! The behaviour every [`Store`] must have, as a check any implementation can run on a fresh,
//! empty store: `conformance::check(&my_store)` in its tests.
//!
//! Covered: the key-value layer (`get`, `put`, `put_new`, `delete`, `scan`, `flush`); instance
//! records (`create`, `read`, conditional `write` and `remove`, including two writers racing
//! from threads: exactly one wins, the other gets a conflict); inboxes (`append` to a present
//! and an absent instance, order, concurrent appenders, consumption by a write, what `remove`
//! leaves); deduplicated appends (`append_once`: a key delivers once, also after its message was
//! consumed, racing appenders with one key land once, keys are per instance and go with it;
//! `delivered` reads them);
//! leases (`claim`, `claim_abandoned` taking only leases that ran out while held, `claim_ids`
//! (optional) taking the free unfinished ones among named instances, also from racing threads,
//! `lease`,
//! `release`, `hand_over`, `renew` extending only the owner's, finished instances never claimed, an expired
//! lease taken over by another owner and the old holder's fenced write refused); the timer
//! index (`set_timer`, `clear_timer`, `due_timers`).
//!
//! Over 400 lines on purpose: one check per part of the contract, each a sequence of small
//! assertions that reads best in one place.

use super::{Appended, Fence, Space, Store, Timer, Write, WriteError};

/// Runs the conformance checks on an empty store; the first violation, described.
pub fn check(store: &dyn Store) -> Result<(), String> {
    check_key_values(store)?;
    check_records(store)?;
    check_racing_writers(store)?;
    check_reads_during_writes(store)?;
    check_inbox(store)?;
    check_append_once(store)?;
    check_leases(store)?;
    check_claim_ids(store)?;
    check_timers(store)
}

fn ensure(ok: bool, what: &str) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.to_owned()) }
}

fn io(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// An unfenced write of `record` over `expected`.
fn plain(expected: u64, record: &[u8]) -> Write<'_> {
    Write { expected, record, fence: None, consumed: &[], finished: false }
}

fn check_key_values(store: &dyn Store) -> Result<(), String> {
    let mut spaces = vec![Space::Instances, Space::Timers];
    if store.keeps_slots() {
        spaces.push(Space::Slots);
    }
    for space in spaces {
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

fn check_records(store: &dyn Store) -> Result<(), String> {
    ensure(store.read("r").map_err(io)?.is_none(), "read of an absent instance")?;
    ensure(store.create("r", b"one").map_err(io)?.is_none(), "create of a new instance")?;
    let got = store.read("r").map_err(io)?.ok_or("read after create")?;
    ensure(got.record == b"one" && got.version == 1, "create writes version 1")?;
    let present = store.create("r", b"other").map_err(io)?.ok_or("create over a present id")?;
    ensure(present.record == b"one" && present.version == 1, "create returns the present record")?;
    ensure(
        store.read("r").map_err(io)?.is_some_and(|v| v.record == b"one"),
        "create leaves a present record alone",
    )?;
    let v2 = store.write("r", &plain(1, b"two")).map_err(io)?;
    ensure(v2 == 2, "a write bumps the version")?;
    match store.write("r", &plain(1, b"stale")) {
        Err(WriteError::Conflict { found: Some(2), expected: 1, .. }) => {}
        other => return Err(format!("a write naming an old version must conflict: {other:?}")),
    }
    ensure(
        store.read("r").map_err(io)?.is_some_and(|v| v.record == b"two" && v.version == 2),
        "a refused write changes nothing",
    )?;
    match store.write("absent", &plain(0, b"x")) {
        Err(WriteError::Conflict { found: None, .. }) => {}
        other => return Err(format!("a write to an absent instance must conflict: {other:?}")),
    }
    ensure(store.read("absent").map_err(io)?.is_none(), "a write creates nothing")?;
    // A record put through the key-value layer has version 0.
    store.put(Space::Instances, b"raw", b"r").map_err(io)?;
    ensure(
        store.read("raw").map_err(io)?.is_some_and(|v| v.version == 0),
        "an unversioned record reads as version 0",
    )?;
    ensure(store.write("raw", &plain(0, b"s")).map_err(io)? == 1, "version 0 can be written")?;
    // Remove is conditional too.
    match store.remove("r", 1) {
        Err(WriteError::Conflict { found: Some(2), .. }) => {}
        other => return Err(format!("a remove naming an old version must conflict: {other:?}")),
    }
    store.remove("r", 2).map_err(io)?;
    ensure(store.read("r").map_err(io)?.is_none(), "remove removes")?;
    ensure(store.get(Space::Instances, b"r").map_err(io)?.is_none(), "remove removes the value")?;
    ensure(
        store.create("r", b"again").map_err(io)?.is_none()
            && store.read("r").map_err(io)?.is_some_and(|v| v.version == 1),
        "an id can be created again after remove, at version 1",
    )?;
    store.remove("r", 1).map_err(io)?;
    store.remove("raw", 1).map_err(io)?;
    store.flush().map_err(io)
}

fn check_racing_writers(store: &dyn Store) -> Result<(), String> {
    store.create("race", b"0").map_err(io)?;
    for round in 0..50u64 {
        let expected = round + 1;
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<Result<u64, WriteError>> = std::thread::scope(|s| {
            let writers: Vec<_> = [b"a", b"b"]
                .into_iter()
                .map(|body| {
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        store.write("race", &plain(expected, body))
                    })
                })
                .collect();
            writers.into_iter().map(|w| w.join()).collect::<Result<_, _>>()
        })
        .map_err(|_| "a racing writer panicked".to_owned())?;
        let won = results.iter().filter(|r| r.is_ok()).count();
        let lost = results
            .iter()
            .filter(|r| matches!(r, Err(WriteError::Conflict { found: Some(f), .. }) if *f == expected + 1))
            .count();
        ensure(
            won == 1 && lost == 1,
            &format!("two writers of version {expected}: one wins, one conflicts ({results:?})"),
        )?;
        let now = store.read("race").map_err(io)?.ok_or("the raced record")?;
        ensure(now.version == expected + 1, "the winner's version is current")?;
    }
    let v = store.read("race").map_err(io)?.map_or(0, |v| v.version);
    store.remove("race", v).map_err(io)?;
    Ok(())
}

/// A read returns a record with the version it was written under, never the record of one write
/// with the version of another, while a writer is busy: a client that wrote back what it read
/// under a torn version would overwrite a checkpoint.
fn check_reads_during_writes(store: &dyn Store) -> Result<(), String> {
    const WRITES: u64 = 1_000;
    // The record written as version v is v's decimal digits.
    store.create("torn", b"1").map_err(io)?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let torn = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut torn = Vec::new();
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                match store.read("torn") {
                    Ok(Some(v)) if v.record != v.version.to_string().as_bytes() => {
                        torn.push((v.version, String::from_utf8_lossy(&v.record).into_owned()));
                    }
                    Ok(_) => {}
                    Err(e) => torn.push((0, format!("read failed: {e}"))),
                }
            }
            torn
        });
        let written = (1..WRITES).try_for_each(|v| {
            let record = (v + 1).to_string();
            store.write("torn", &plain(v, record.as_bytes())).map(drop)
        });
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let torn = reader.join().map_err(|_| "the reader panicked".to_owned())?;
        written.map_err(io)?;
        Ok::<_, String>(torn)
    })?;
    ensure(
        torn.is_empty(),
        &format!(
            "a read during writes returned (version, record) pairs of different writes: {:?}",
            {
                let mut first = torn;
                first.truncate(5);
                first
            }
        ),
    )?;
    store.remove("torn", WRITES).map_err(io)
}

fn check_inbox(store: &dyn Store) -> Result<(), String> {
    ensure(store.append("nobody", b"m").map_err(io)?.is_none(), "append to an absent instance")?;
    ensure(store.inbox("nobody").map_err(io)?.is_empty(), "nothing appended to nobody")?;
    store.create("box", b"rec").map_err(io)?;
    // An id that extends another must not see its inbox.
    store.create("box2", b"rec").map_err(io)?;
    let first = store.append("box", b"m1").map_err(io)?.ok_or("append to a present instance")?;
    let second = store.append("box", b"m2").map_err(io)?.ok_or("second append")?;
    store.append("box2", b"other").map_err(io)?.ok_or("append to box2")?;
    ensure(second > first, "later appends get larger seqs")?;
    let inbox = store.inbox("box").map_err(io)?;
    let bodies: Vec<&[u8]> = inbox.iter().map(|m| m.body.as_slice()).collect();
    ensure(bodies == [b"m1" as &[u8], b"m2"], "the inbox holds its messages, oldest first")?;
    ensure(
        store.read("box").map_err(io)?.is_some_and(|v| v.version == 1 && v.record == b"rec"),
        "an append does not touch the record",
    )?;
    let both = store.read_with_inbox("box").map_err(io)?;
    ensure(
        both.is_some_and(|(v, m)| v.version == 1 && v.record == b"rec" && m == inbox),
        "read_with_inbox gives the record and the inbox",
    )?;
    ensure(store.read_with_inbox("nobody").map_err(io)?.is_none(), "nobody has neither")?;
    // Concurrent appenders all land, each once.
    std::thread::scope(|s| {
        for t in 0..4u8 {
            s.spawn(move || {
                for i in 0..25u8 {
                    let _ = store.append("box", &[t, i]);
                }
            });
        }
    });
    let inbox = store.inbox("box").map_err(io)?;
    let mut seqs: Vec<u64> = inbox.iter().map(|m| m.seq).collect();
    seqs.dedup();
    ensure(inbox.len() == 102 && seqs.len() == 102, "100 concurrent appends, each kept once")?;
    ensure(seqs.windows(2).all(|w| w[0] < w[1]), "the inbox is in seq order")?;
    // A write consumes messages atomically with the record; a refused write consumes none.
    let consumed: Vec<u64> = inbox.iter().map(|m| m.seq).skip(1).collect();
    let refused = Write { consumed: &consumed, ..plain(7, b"no") };
    ensure(store.write("box", &refused).is_err(), "a stale write is refused")?;
    ensure(store.inbox("box").map_err(io)?.len() == 102, "a refused write consumes nothing")?;
    let write = Write { consumed: &consumed, ..plain(1, b"took") };
    store.write("box", &write).map_err(io)?;
    let left = store.inbox("box").map_err(io)?;
    ensure(left.len() == 1 && left[0].seq == first, "a write removes what it consumed")?;
    ensure(store.inbox("box2").map_err(io)?.len() == 1, "another instance's inbox is untouched")?;
    store.remove("box", 2).map_err(io)?;
    ensure(store.inbox("box").map_err(io)?.is_empty(), "remove empties the inbox")?;
    ensure(store.append("box", b"late").map_err(io)?.is_none(), "no append after remove")?;
    store.remove("box2", 1).map_err(io)?;
    store.flush().map_err(io)
}

fn check_append_once(store: &dyn Store) -> Result<(), String> {
    ensure(
        store.append_once("nobody", "k", b"m").map_err(io)? == Appended::NoInstance,
        "append_once to an absent instance",
    )?;
    ensure(store.inbox("nobody").map_err(io)?.is_empty(), "nothing appended to nobody")?;
    store.create("once", b"rec").map_err(io)?;
    store.create("once2", b"rec").map_err(io)?;
    let Appended::New(first) = store.append_once("once", "k1", b"m1").map_err(io)? else {
        return Err("the first append_once of a key appends".into());
    };
    ensure(
        store.append_once("once", "k1", b"again").map_err(io)? == Appended::Duplicate,
        "a second append_once with the key appends nothing",
    )?;
    ensure(store.delivered("once", "k1").map_err(io)?, "delivered knows an appended key")?;
    ensure(!store.delivered("once", "k2").map_err(io)?, "delivered of a key never appended")?;
    ensure(!store.delivered("once2", "k1").map_err(io)?, "delivered is per instance")?;
    ensure(!store.delivered("nobody", "k1").map_err(io)?, "delivered of an absent instance")?;
    ensure(
        matches!(store.append_once("once2", "k1", b"m").map_err(io)?, Appended::New(_)),
        "keys are per instance",
    )?;
    let plain_seq = store.append("once", b"plain").map_err(io)?.ok_or("a plain append")?;
    ensure(plain_seq > first, "keyed and plain appends share the seq order")?;
    let inbox = store.inbox("once").map_err(io)?;
    let bodies: Vec<&[u8]> = inbox.iter().map(|m| m.body.as_slice()).collect();
    ensure(bodies == [b"m1" as &[u8], b"plain"], "a duplicate leaves the inbox as it was")?;
    // The key outlives its message: a sender that runs again after the receiver took the
    // message must not deliver it twice.
    let write = Write { consumed: &[first, plain_seq], ..plain(1, b"took") };
    store.write("once", &write).map_err(io)?;
    ensure(store.inbox("once").map_err(io)?.is_empty(), "the write consumed both")?;
    ensure(
        store.append_once("once", "k1", b"late").map_err(io)? == Appended::Duplicate,
        "a key is kept after its message was consumed",
    )?;
    ensure(store.delivered("once", "k1").map_err(io)?, "delivered after consumption")?;
    // Racing appenders with one key: exactly one lands.
    let landed = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let landed = &landed;
            s.spawn(move || {
                for i in 0..10u8 {
                    let key = format!("race-{i}");
                    if let Ok(Appended::New(_)) = store.append_once("once", &key, &[t, i]) {
                        landed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            });
        }
    });
    ensure(
        landed.load(std::sync::atomic::Ordering::SeqCst) == 10
            && store.inbox("once").map_err(io)?.len() == 10,
        "of racing appends with one key, exactly one lands",
    )?;
    // Keys go with the instance: one created again under the id starts with none.
    store.remove("once", 2).map_err(io)?;
    ensure(
        store.append_once("once", "k1", b"x").map_err(io)? == Appended::NoInstance,
        "no append_once after remove",
    )?;
    ensure(!store.delivered("once", "k1").map_err(io)?, "keys go with a removed instance")?;
    store.create("once", b"again").map_err(io)?;
    ensure(
        matches!(store.append_once("once", "k1", b"new").map_err(io)?, Appended::New(_)),
        "a removed instance's keys are gone with it",
    )?;
    store.remove("once", 1).map_err(io)?;
    store.remove("once2", 1).map_err(io)?;
    store.flush().map_err(io)
}

fn check_leases(store: &dyn Store) -> Result<(), String> {
    for id in ["l1", "l2", "l3"] {
        store.create(id, b"r").map_err(io)?;
    }
    // l3 ends: it is never claimed.
    store.write("l3", &Write { finished: true, ..plain(1, b"done") }).map_err(io)?;
    let mut a = store.claim("A", 100, 200, None, 1).map_err(io)?;
    a.extend(store.claim("A", 100, 200, Some("l1"), 10).map_err(io)?);
    let ids: Vec<&str> = a.iter().map(|l| l.id.as_str()).collect();
    ensure(
        ids == ["l1", "l2"],
        "claim takes the unfinished instances, in id order, up to `limit`, after `after`",
    )?;
    ensure(a.iter().all(|l| l.owner == "A" && l.expires_ms == 200), "claims are A's until 200")?;
    ensure(
        store.claim("B", 150, 300, None, 10).map_err(io)?.is_empty(),
        "another owner cannot claim an unexpired lease",
    )?;
    ensure(store.lease("l1", "B", 150, 300).map_err(io)?.is_none(), "nor lease it")?;
    ensure(store.lease("none", "B", 150, 300).map_err(io)?.is_none(), "no lease of nothing")?;
    // Nothing ran out yet: an abandoned-only claim takes nothing, not even A's own.
    ensure(
        store.claim_abandoned("B", 150, 300, None, 10).map_err(io)?.is_empty()
            && store.claim_abandoned("A", 150, 300, None, 10).map_err(io)?.is_empty(),
        "claim_abandoned takes no live lease",
    )?;
    ensure(
        store.claim("A", 100, 200, None, 10).map_err(io)?.is_empty(),
        "a claim skips live leases, also its owner's",
    )?;
    let again = store.lease("l2", "A", 120, 220).map_err(io)?.ok_or("A leases its own")?;
    ensure(again.token == a[1].token && again.expires_ms == 220, "and its lease is extended")?;
    // Renewal extends what the owner still holds, keeps the token, and takes nothing.
    let asked: Vec<String> = ["l2", "l1", "l3", "none"].map(String::from).into();
    let mut renewed = store.renew("A", &asked, 230).map_err(io)?;
    renewed.sort();
    ensure(renewed == ["l1", "l2"], "renew extends the owner's leases, and only those")?;
    ensure(
        store.renew("B", &asked, 999).map_err(io)?.is_empty(),
        "renew takes no lease of another owner",
    )?;
    ensure(store.lease("l1", "B", 225, 300).map_err(io)?.is_none(), "a renewed lease holds")?;
    let kept = store.lease("l1", "A", 225, 228).map_err(io)?.ok_or("A still holds l1")?;
    ensure(kept.token == a[0].token && kept.expires_ms == 230, "with its token, until 230")?;
    let l1 = a[0].clone();
    // The holder writes fenced, which extends its lease.
    let fence = Fence { token: l1.token, until_ms: 260 };
    store.write("l1", &Write { fence: Some(fence), ..plain(1, b"A1") }).map_err(io)?;
    ensure(store.lease("l1", "B", 250, 400).map_err(io)?.is_none(), "a fenced write renews")?;
    // The lease runs out and B takes it over; A's fenced write is refused.
    let b = store.lease("l1", "B", 261, 500).map_err(io)?.ok_or("B takes the expired lease")?;
    ensure(b.token > l1.token && b.owner == "B", "a takeover issues a greater token")?;
    match store.write("l1", &Write { fence: Some(fence), ..plain(2, b"A2") }) {
        Err(WriteError::Fenced { token, current: Some(c), .. })
            if token == l1.token && c == b.token => {}
        other => return Err(format!("the old holder's write must be fenced: {other:?}")),
    }
    ensure(
        store.read("l1").map_err(io)?.is_some_and(|v| v.record == b"A1" && v.version == 2),
        "a fenced-off write changes nothing",
    )?;
    let fence_b = Fence { token: b.token, until_ms: 500 };
    store.write("l1", &Write { fence: Some(fence_b), ..plain(2, b"B1") }).map_err(io)?;
    // Releasing with a stale token does nothing; with the current one frees the instance.
    store.release(&l1).map_err(io)?;
    ensure(store.lease("l1", "C", 300, 600).map_err(io)?.is_none(), "a stale release is a no-op")?;
    store.release(&b).map_err(io)?;
    let c = store.lease("l1", "C", 300, 600).map_err(io)?.ok_or("released, C takes it")?;
    ensure(c.token > b.token, "tokens keep growing")?;
    // Abandoned: a lease that ran out while held. l1 is C's until 600, l2 A's until 220.
    let lost = store.claim_abandoned("D", 400, 700, None, 10).map_err(io)?;
    ensure(
        lost.len() == 1 && lost[0].id == "l2" && lost[0].owner == "D" && lost[0].token > c.token,
        "claim_abandoned takes the lease that ran out, with a new token",
    )?;
    store.release(&lost[0]).map_err(io)?;
    ensure(
        store.claim_abandoned("E", 400, 700, None, 10).map_err(io)?.is_empty(),
        "claim_abandoned leaves an instance nobody holds",
    )?;
    ensure(
        store.claim_abandoned("E", 601, 700, Some("l1"), 10).map_err(io)?.is_empty(),
        "and pages after `after`",
    )?;
    let l1_again = store.claim_abandoned("E", 601, 700, None, 10).map_err(io)?;
    ensure(l1_again.len() == 1 && l1_again[0].id == "l1", "C's lease ran out at 600")?;
    store.release(&l1_again[0]).map_err(io)?;
    // The finished instance becomes claimable again when a write says it is not finished.
    store.write("l3", &plain(2, b"again")).map_err(io)?;
    let d = store.claim("D", 1000, 2000, Some("l2"), 10).map_err(io)?;
    ensure(d.len() == 1 && d[0].id == "l3", "an unfinished instance is claimable again")?;
    // A hand-over gives the lease back as a release does.
    let f = store.lease("l2", "F", 3000, 4000).map_err(io)?.ok_or("F takes l2")?;
    ensure(store.lease("l2", "G", 3001, 4000).map_err(io)?.is_none(), "F holds l2")?;
    store.hand_over(&f).map_err(io)?;
    let g = store.lease("l2", "G", 3002, 4000).map_err(io)?.ok_or("handed over, G takes it")?;
    ensure(g.token > f.token, "with a greater token")?;
    store.release(&g).map_err(io)?;
    for (id, v) in [("l1", 3), ("l2", 1), ("l3", 3)] {
        store.remove(id, v).map_err(io)?;
    }
    ensure(store.claim("E", 0, 1, None, 10).map_err(io)?.is_empty(), "removed: nothing to claim")?;
    store.flush().map_err(io)
}

fn check_claim_ids(store: &dyn Store) -> Result<(), String> {
    // Optional: a store that cannot claim by id says so, and the runtime leases one by one.
    let claim_ids = |owner: &str, ids: &[String], now: u64, until: u64| {
        store.claim_ids(owner, ids, now, until).ok_or("claim_ids stopped answering")?.map_err(io)
    };
    if store.claim_ids("probe", &[], 0, 0).is_none() {
        return Ok(());
    }
    let named: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    for id in &named {
        store.create(id, b"r").map_err(io)?;
    }
    // n0 ends; n1 is A's.
    store.write("n0", &Write { finished: true, ..plain(1, b"done") }).map_err(io)?;
    let a = store.lease("n1", "A", 100, 200).map_err(io)?.ok_or("A leases n1")?;
    let mut asked = named[..3].to_vec();
    asked.push("none".into());
    let b = claim_ids("B", &asked, 150, 300)?;
    ensure(
        b.len() == 1 && b[0].id == "n2" && b[0].owner == "B" && b[0].expires_ms == 300,
        "claim_ids takes the free unfinished instances among those named, and only those",
    )?;
    ensure(
        claim_ids("A", &asked, 150, 300)?.is_empty(),
        "claim_ids skips live leases, also its owner's",
    )?;
    let c = claim_ids("C", &asked, 301, 400)?;
    let ids: Vec<&str> = c.iter().map(|l| l.id.as_str()).collect();
    ensure(
        c.len() == 2 && ids.contains(&"n1") && ids.contains(&"n2"),
        "claim_ids takes leases that ran out",
    )?;
    ensure(c.iter().all(|l| l.token > a.token.max(b[0].token)), "with greater tokens")?;
    // Two claimers at once over the same instances: each instance goes to exactly one.
    let rest = named[3..].to_vec();
    let (x, y) = std::thread::scope(|scope| {
        let x = scope.spawn(|| claim_ids("X", &rest, 500, 600));
        let y = scope.spawn(|| claim_ids("Y", &rest, 500, 600));
        (x.join(), y.join())
    });
    let (x, y) = (x.map_err(|_| "a claimer panicked")?, y.map_err(|_| "a claimer panicked")?);
    let mut got: Vec<String> = x?.into_iter().chain(y?).map(|l| l.id).collect();
    got.sort();
    ensure(got == rest, "racing claim_ids give each instance to exactly one claimer")?;
    for id in &named {
        let v = store.read(id).map_err(io)?.ok_or("still there")?.version;
        store.remove(id, v).map_err(io)?;
    }
    store.flush().map_err(io)
}

fn check_timers(store: &dyn Store) -> Result<(), String> {
    let t = |at_ms: u64, id: &str| Timer { at_ms, id: id.to_owned() };
    ensure(store.due_timers(u64::MAX, 10).map_err(io)?.0.is_empty(), "no timers at first")?;
    for timer in [t(300, "c"), t(100, "a"), t(200, "b"), t(200, "a")] {
        store.set_timer(&timer).map_err(io)?;
    }
    let (due, next) = store.due_timers(200, 10).map_err(io)?;
    ensure(due == [t(100, "a"), t(200, "a"), t(200, "b")], "due timers, earliest first")?;
    ensure(next == Some(300), "and the next one to come due")?;
    let (due, _) = store.due_timers(200, 2).map_err(io)?;
    ensure(due.len() == 2, "at most `limit` due timers")?;
    store.clear_timer(&t(200, "a")).map_err(io)?;
    store.clear_timer(&t(200, "a")).map_err(io)?;
    let (due, next) = store.due_timers(99, 10).map_err(io)?;
    ensure(due.is_empty() && next == Some(100), "nothing due before the first")?;
    let (due, next) = store.due_timers(1000, 10).map_err(io)?;
    ensure(due == [t(100, "a"), t(200, "b"), t(300, "c")] && next.is_none(), "clear removes")?;
    for timer in due {
        store.clear_timer(&timer).map_err(io)?;
    }
    ensure(
        store.scan(Space::Timers, None, 10).map_err(io)?.is_empty(),
        "cleared timers leave no index entry",
    )?;
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

    /// A store dropped and opened again at once in the same process: sled's background thread
    /// may still hold sled's own lock for a moment; the open waits for it instead of failing.
    #[test]
    fn a_store_opens_again_right_after_it_was_dropped() {
        let dir = std::env::temp_dir().join(format!("durable-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for round in 0u32..40 {
            let store = SledStore::open(&dir).unwrap_or_else(|e| panic!("round {round}: {e}"));
            if round > 0 {
                let last = (round - 1).to_le_bytes();
                assert_eq!(
                    store.get(Space::Instances, b"round").unwrap().as_deref(),
                    Some(&last[..])
                );
            }
            store.put(Space::Instances, b"round", &round.to_le_bytes()).unwrap();
            store.flush().unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
