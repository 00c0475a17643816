//! Ordinary Rust in, the same result out: bodies that compute one thing as a plain `async fn`
//! compute the same as orchestrations, stopped at every suspension point and resumed.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::collections::BTreeMap;

use durable::{ActivityContext, Ctx, Failure, activity, orchestration};
use serde::{Deserialize, Serialize};
use support::harness::{activity_body, stop_at_every_point};

#[activity]
async fn add(ctx: ActivityContext, x: i64, y: i64) -> Result<i64, String> {
    activity_body(&ctx).await;
    Ok(x + y)
}

// ----- items keep their block scope -----

const RATE: i64 = 10;

#[orchestration]
async fn block_items(ctx: Ctx, x: i64) -> Result<(i64, i64, i64, i64), Failure> {
    let base = RATE;
    let inner = {
        const RATE: i64 = 20;
        let a = ctx.call(add, (x, RATE)).await?;
        a + RATE
    };
    let branch = if x > 0 {
        use std::cmp::max as pick;
        const STEP: i64 = 1;
        let b = ctx.call(add, (x, STEP)).await?;
        pick(b, STEP)
    } else {
        use std::cmp::min as pick;
        const STEP: i64 = 2;
        let b = ctx.call(add, (x, STEP)).await?;
        pick(b, STEP)
    };
    let offset = 100;
    macro_rules! shifted {
        ($v:expr) => {
            $v + offset
        };
    }
    let c = ctx.call(add, (x, 1)).await?;
    Ok((base, inner, branch, shifted!(c)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_in_a_block_keep_the_blocks_scope() {
    let (out, _) = stop_at_every_point(block_items, "items", 1).await;
    assert_eq!(out, (10, 41, 2, 102));
    let (out, _) = stop_at_every_point(block_items, "items-neg", -5).await;
    assert_eq!(out, (10, 35, -3, 96));
}

// ----- evaluation order: operands left of an await are evaluated before it -----

static COUNTED_RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[activity]
async fn counted(x: i64, y: i64) -> Result<i64, String> {
    COUNTED_RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    Ok(x + y)
}

#[orchestration]
async fn divide_then_call(ctx: Ctx, count: i64) -> Result<i64, Failure> {
    let total = 12;
    let v = total / count + ctx.call(counted, (1, 1)).await?;
    Ok(v)
}

fn shipping(log: &mut Vec<String>) -> i64 {
    log.push("shipping".into());
    5
}

#[orchestration]
async fn left_to_right(ctx: Ctx, x0: i64) -> Result<(i64, i64, i64, Vec<String>), Failure> {
    let mut x = x0;
    let y = x + ctx
        .call(
            add,
            (
                {
                    x += 1;
                    x
                },
                0,
            ),
        )
        .await?;
    let mut log = Vec::new();
    let z = shipping(&mut log) + ctx.call(add, (1, 2)).await?;
    Ok((y, x, z, log))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operands_left_of_an_await_are_evaluated_first() {
    let (out, _) = stop_at_every_point(left_to_right, "left-to-right", 10).await;
    assert_eq!(out, (21, 11, 8, vec!["shipping".to_string()]));

    let db = support::harness::fresh_db("divide-first");
    let rt =
        support::harness::open(|| durable::Runtime::builder(&db).orchestration(divide_then_call))
            .await;
    let h = rt.start(divide_then_call, "divide-first", 0).await.unwrap();
    let err = h.wait().await.unwrap_err().to_string();
    assert!(err.contains("panicked: attempt to divide by zero"), "{err}");
    assert_eq!(COUNTED_RUNS.load(std::sync::atomic::Ordering::SeqCst), 0, "panicked first");
    rt.shutdown().await;
}

// ----- assignment is not a use -----

#[activity]
async fn upper(ctx: ActivityContext, s: String) -> Result<String, String> {
    activity_body(&ctx).await;
    Ok(s.to_uppercase())
}

#[orchestration]
async fn assignments(ctx: Ctx, c: bool) -> Result<(String, i64, i64, String), Failure> {
    let mut buf = String::from("ab");
    buf = ctx.call(upper, buf).await?;
    buf.push('c');
    let mut again = buf.clone();
    for _ in 0..2 {
        again = ctx.call(upper, again).await?;
        again.push('x');
    }
    let x;
    if c {
        x = ctx.call(add, (1, 2)).await?;
    } else {
        x = 0;
    }
    let y;
    y = ctx.call(add, (x, 10)).await?;
    let z: u8;
    let _ = ctx.call(add, (0, 0)).await?;
    z = 200;
    // `u8` arithmetic: the written type holds where the assignment declares `z` again.
    let wide = i64::from(z.wrapping_add(100));
    Ok((buf, x, y * 1000 + wide, again))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigning_a_moved_or_unset_local() {
    let (out, _) = stop_at_every_point(assignments, "assign", true).await;
    assert_eq!(out, ("ABc".to_string(), 3, 13_044, "ABCXx".to_string()));
    let (out, _) = stop_at_every_point(assignments, "assign-else", false).await;
    assert_eq!(out, ("ABc".to_string(), 0, 10_044, "ABCXx".to_string()));
}

// ----- assignments from `if`/`match` with awaits, like `let` -----

#[orchestration]
async fn assign_from_branches(ctx: Ctx, n: i64) -> Result<(i64, i64, i64), Failure> {
    let mut v = 1;
    v = match ctx.call(add, (n, 0)).await? {
        0 => -1,
        k => ctx.call(add, (k, v)).await?,
    };
    let mut w = 0;
    w = if n > 2 { ctx.call(add, (n, w)).await? } else { 7 };
    let mut total = 100;
    total += if n > 2 { ctx.call(add, (1, 1)).await? } else { 0 };
    Ok((v, w, total))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigning_an_if_or_match_with_awaits() {
    let (out, _) = stop_at_every_point(assign_from_branches, "assign-branch", 5).await;
    assert_eq!(out, (6, 5, 102));
    let (out, _) = stop_at_every_point(assign_from_branches, "assign-branch-0", 0).await;
    assert_eq!(out, (-1, 7, 100));
}

// ----- names resolve to bindings, not to spellings -----

#[activity]
async fn echo(ctx: ActivityContext, s: String) -> Result<String, String> {
    activity_body(&ctx).await;
    Ok(s)
}

#[orchestration]
async fn same_names(ctx: Ctx, name: String) -> Result<(String, Vec<usize>, usize), Failure> {
    let items = vec!["a".to_string(), "bcd".to_string()];
    let data = vec![1u8, 2, 3];
    let echoed = ctx.call(echo, name).await?;
    let lens: Vec<usize> = items.iter().map(|name| name.len()).collect();
    let _ = ctx.call(measure_bytes, data).await?;
    let inner = {
        let data = vec![0u8; 4];
        data.len()
    };
    Ok((echoed, lens, inner))
}

#[activity]
async fn measure_bytes(ctx: ActivityContext, data: Vec<u8>) -> Result<usize, String> {
    activity_body(&ctx).await;
    Ok(data.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closure_parameter_or_inner_let_named_like_a_moved_local() {
    let (out, _) = stop_at_every_point(same_names, "same-names", "n".to_string()).await;
    assert_eq!(out, ("n".to_string(), vec![1, 3], 4));
}

// ----- format-spec counts and uppercase locals are uses and locals -----

#[orchestration]
async fn specs_and_uppercase(ctx: Ctx, v: i64) -> Result<(String, i64), Failure> {
    let width = 6;
    let prec = 2;
    let N = v * 2;
    let x = ctx.call(add, (v, 1)).await?;
    let f = 1.5_f64;
    Ok((format!("[{x:>width$}][{f:.prec$}][{:>1$}]", x, width), N))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_spec_counts_and_uppercase_locals_are_kept() {
    let (out, _) = stop_at_every_point(specs_and_uppercase, "specs", 4).await;
    assert_eq!(out, ("[     5][1.50][     5]".to_string(), 8));
}

// ----- types inferred from code after the await that first stores them -----

#[orchestration]
async fn inferred_later(ctx: Ctx, n: i64) -> Result<(Option<i64>, Vec<i64>, Option<i64>), Failure> {
    let mut best = None;
    for i in 0..3 {
        let v = ctx.call(add, (n, i)).await?;
        if v > n {
            break;
        }
    }
    best = Some(n);
    let mut seen = Vec::new();
    if n > 0 {
        let v = ctx.call(add, (n, 2)).await?;
        seen.push(v);
    }
    let mut found = None;
    loop {
        let v = ctx.call(add, (n, 3)).await?;
        found = Some(v);
        break;
    }
    Ok((best, seen, found))
}

fn done(k: i64) -> bool {
    k > 2
}

/// The loop's exit is reached (by `break`) before the `push` that fixes `acc`'s type in the
/// source; code after the loop needs the type.
#[orchestration]
async fn exit_before_push(ctx: Ctx, n: i64) -> Result<Vec<i64>, Failure> {
    let mut acc = Vec::new();
    let mut k = 0;
    loop {
        if done(k) {
            break;
        }
        k += 1;
        acc.push(ctx.call(add, (n, k)).await?);
    }
    let shown: Vec<i64> = acc.iter().map(|x| x.abs() * 10).collect();
    Ok(shown)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_fixed_after_the_first_await_are_inferred() {
    let (out, _) = stop_at_every_point(exit_before_push, "exit-before-push", 1).await;
    assert_eq!(out, vec![20, 30, 40]);
    let (out, _) = stop_at_every_point(inferred_later, "inferred", 1).await;
    assert_eq!(out, (Some(1), vec![3], Some(4)));
    let (out, _) = stop_at_every_point(inferred_later, "inferred-0", 0).await;
    assert_eq!(out, (Some(0), vec![], Some(3)));
}

// ----- custom status from a `&str` -----

#[orchestration]
async fn status_from_str(ctx: Ctx, n: i64) -> Result<i64, Failure> {
    ctx.set_status("waiting");
    let v = ctx.call(add, (n, 1)).await?;
    ctx.set_status("done");
    Ok(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_status_takes_a_str() {
    let db = support::harness::fresh_db("status-str");
    let rt =
        support::harness::open(|| durable::Runtime::builder(&db).orchestration(status_from_str))
            .await;
    let h = rt.start(status_from_str, "status-str", 1).await.unwrap();
    assert_eq!(h.wait().await.unwrap(), 2);
    let status = rt.status("status-str").unwrap().unwrap();
    assert_eq!(status.custom_status::<String>().unwrap().unwrap(), "done");
    rt.shutdown().await;
}

// ----- `for` consumes its iterable lazily -----

#[orchestration]
async fn lazy_for(
    ctx: Ctx,
    names: Vec<String>,
) -> Result<(i64, Vec<i64>, Vec<i64>, Vec<i64>, i64, Vec<(usize, i64)>), Failure> {
    // An infinite range, left by `break`.
    let mut tries = 0;
    for attempt in 1.. {
        tries = ctx.call(add, (attempt, 0)).await?;
        if attempt == 3 {
            break;
        }
    }
    // A lazy `map` with effects: each item is produced when the loop reaches it.
    let cell = std::cell::Cell::new(0_i64);
    let mut produced = Vec::new();
    for i in (0..3).map(|i| {
        cell.set(cell.get() + 1);
        i
    }) {
        produced.push(ctx.call(add, (cell.get(), i * 0)).await?);
    }
    // An inclusive range stopped at its last item does not yield it again.
    let mut inclusive = Vec::new();
    for i in 1..=3 {
        inclusive.push(ctx.call(add, (i, 0)).await?);
    }
    let mut evens = Vec::new();
    for i in (0..7).filter(|i| i % 2 == 0).map(|i| i * 10) {
        evens.push(ctx.call(add, (i, 0)).await?);
    }
    // Borrowed iteration: the collection stays a local of its own.
    let mut total = 0;
    for n in names.iter() {
        total = ctx.call(add, (total, n.len() as i64)).await?;
    }
    for n in &names {
        total = ctx.call(add, (total, n.len() as i64)).await?;
    }
    // Items borrowed from the collection are usable after an await in the body.
    let mut lens = vec![1_i64, 2];
    for len in lens.iter_mut() {
        *len = ctx.call(add, (*len, 100)).await?;
    }
    for (i, n) in names.iter().enumerate() {
        let _ = ctx.call(add, (0, 0)).await?;
        total += n.len() as i64 * i as i64 + lens[i];
    }
    let mut indexed = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let len = ctx.call(add, (n.len() as i64, 0)).await?;
        indexed.push((i, len));
    }
    let _still_here = names;
    Ok((tries, produced, inclusive, evens, total, indexed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_loops_consume_their_iterable_lazily() {
    let names = vec!["ab".to_string(), "cde".to_string()];
    let (out, _) = stop_at_every_point(lazy_for, "lazy-for", names).await;
    assert_eq!(
        out,
        (3, vec![1, 2, 3], vec![1, 2, 3], vec![0, 20, 40, 60], 216, vec![(0, 2), (1, 3)])
    );
}

// ----- types declared in the body still see the imports and helpers beside them -----

#[orchestration]
async fn local_types(ctx: Ctx, x: i64) -> Result<String, Failure> {
    use std::fmt;
    struct Shown(i64);
    impl fmt::Display for Shown {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "<{}>", twice(self.0))
        }
    }
    fn twice(v: i64) -> i64 {
        v * 2
    }
    let v = ctx.call(add, (x, 1)).await?;
    Ok(format!("{}{}", Shown(v), twice(v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_declared_in_the_body_see_their_neighbours() {
    let (out, _) = stop_at_every_point(local_types, "local-types", 1).await;
    assert_eq!(out, "<4>4");
}

// ----- the fixes together: spilled `?`, scoped assignment, macros, cursors, fields -----

fn half(x: i64) -> Result<i64, String> {
    if x % 2 == 0 { Ok(x / 2) } else { Err("odd".into()) }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
struct Pair {
    a: i64,
    b: i64,
}

#[orchestration]
async fn mixed(ctx: Ctx, n: i64) -> Result<Vec<i64>, Failure> {
    let mut out = Vec::new();
    let t = half(n)? + ctx.call(add, (1, 1)).await?;
    out.push(t);
    let x0 = 1;
    {
        let mut x = 2;
        x = ctx.call(add, (x, 1)).await?;
        out.push(x);
    }
    out.push(x0);
    macro_rules! twice {
        ($e:expr) => {
            $e * 2 + n
        };
    }
    let a = ctx.call(add, (1, 0)).await?;
    out.push(twice!(a));
    if n > 0 {
        let b = ctx.call(add, (2, 0)).await?;
        out.push(twice!(b));
    }
    let mut v = vec![1, 2, 3];
    for item in v.iter_mut() {
        *item += 10;
        let _ = ctx.call(add, (0, 0)).await?;
    }
    out.extend(v.iter().copied());
    let mut m = BTreeMap::new();
    m.insert("k".to_string(), 5i64);
    m.insert("j".to_string(), 6i64);
    for (k, val) in m.iter() {
        out.push(ctx.call(add, (*val, k.len() as i64)).await?);
    }
    for w in v.clone() {
        out.push(ctx.call(add, (w, 0)).await?);
    }
    let mut p = Pair::default();
    p.a = ctx.call(add, (3, 4)).await?;
    p.b += ctx.call(add, (p.a, 1)).await?;
    out.push(p.a + p.b);
    for i in 0..2 {
        for j in v.iter().skip(1) {
            out.push(ctx.call(add, (i, *j)).await?);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixes_together() {
    let (out, _) = stop_at_every_point(mixed, "mixed", 4).await;
    assert_eq!(out, vec![4, 3, 1, 6, 8, 11, 12, 13, 7, 6, 11, 12, 13, 15, 12, 13, 13, 14]);
}

// ----- an iterator that can be stored is kept as it is -----

#[orchestration]
async fn stored_iterators(ctx: Ctx, n: i64) -> Result<(i64, Vec<i64>), Failure> {
    let attempts = 1..;
    let mut last = 0;
    for attempt in attempts {
        last = ctx.call(add, (attempt, 0)).await?;
        if attempt == n {
            break;
        }
    }
    let items = vec![3, 4];
    let mut seen = Vec::new();
    for x in items {
        seen.push(ctx.call(add, (x, 0)).await?);
    }
    Ok((last, seen))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_in_a_local_is_kept_not_collected() {
    let (out, _) = stop_at_every_point(stored_iterators, "stored-iterators", 3).await;
    assert_eq!(out, (3, vec![3, 4]));
}

// ----- `Drop` of a local not used after an `.await` -----

/// The drops of `Dropped` values, by instance.
static DROPPED: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Records its drop under its instance.
#[derive(Serialize, Deserialize)]
struct Dropped(String, String);

impl Drop for Dropped {
    fn drop(&mut self) {
        DROPPED.lock().unwrap().push((self.0.clone(), self.1.clone()));
    }
}

#[activity]
async fn drops_seen(id: String) -> Result<Vec<String>, String> {
    let dropped = DROPPED.lock().unwrap();
    Ok(dropped.iter().filter(|(i, _)| *i == id).map(|(_, w)| w.clone()).collect())
}

#[orchestration]
async fn guards(ctx: Ctx, _x: u8) -> Result<(Vec<String>, Vec<String>), Failure> {
    let id = ctx.instance_id().to_string();
    // Not used after the `.await`: dropped there, before the activity runs.
    let _unused = Dropped(id.clone(), "unused".into());
    // Used after it: lives to its last use, as in plain Rust.
    let kept = Dropped(id.clone(), "kept".into());
    let first = ctx.call(drops_seen, id.clone()).await?;
    drop(kept);
    let second = ctx.call(drops_seen, id).await?;
    Ok((first, second))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_not_used_after_an_await_is_dropped_at_it() {
    let db = support::harness::fresh_db("guards");
    let rt = support::harness::open(|| durable::Runtime::builder(&db).orchestration(guards)).await;
    let out = rt.start(guards, "guards", 0).await.unwrap().wait().await.unwrap();
    assert_eq!(
        out.0,
        ["unused"],
        "dropped at the `.await`, where plain Rust waits for the block's end"
    );
    assert_eq!(out.1, ["unused", "kept"], "a local used after the `.await` drops where it is used");
    rt.shutdown().await;
}
