//! The hand-written cases of the differential tester: the control-flow forms the lowering
//! supports and the semantics the issue "Ordinary Rust in, the same result out" named.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use crate::differential::Case;

differential_case!(straight, true, (n: i64 = 5), |ctx| -> i64 {
    let a = ctx.call(dadd, (n, 1)).await?;
    let b = ctx.call(dadd, (a, 2)).await?;
    Ok(a * b)
});

differential_case!(loops, true, (n: i64 = 4), |ctx| -> Vec<i64> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(ctx.call(dadd, (i, i)).await?);
    }
    let mut j = 0;
    while j < 4 {
        j = ctx.call(dadd, (j, 1)).await?;
        if j == 2 {
            continue;
        }
        v.push(j);
    }
    'outer: loop {
        for k in [1, 2, 3] {
            let x = ctx.call(dadd, (j, k)).await?;
            if x > 12 {
                break 'outer;
            }
            j = x;
        }
    }
    v.push(j);
    Ok(v)
});

differential_case!(matches, true, (xs: Vec<i64> = vec![0, 3, 8, -1, 14]), |ctx| -> Vec<String> {
    let mut out = Vec::new();
    for x in xs {
        let s = match x {
            0 => "zero".to_string(),
            n if n < 0 => match ctx.call(dcheck, n).await {
                Ok(v) => format!("ok {v}"),
                Err(e) => format!("refused: {e}"),
            },
            n => {
                let doubled = ctx.call(dadd, (n, n)).await?;
                match ctx.call(dcheck, doubled).await {
                    Ok(v) => format!("checked {v}"),
                    Err(e) => format!("err {e}"),
                }
            }
        };
        out.push(s);
    }
    Ok(out)
});

differential_case!(shadowing, true, (x: i64 = 3), |ctx| -> (i64, String) {
    let x = ctx.call(dadd, (x, 1)).await?;
    let x = x * 2;
    let y = {
        let z = ctx.call(dadd, (x, 100)).await?;
        let z = z + 1;
        z * 2
    };
    let x = format!("{x}/{y}");
    let x = ctx.call(dcat, (x, "!".to_string())).await?;
    Ok((y, x))
});

differential_case!(early_return, true, (limit: i64 = 20), |ctx| -> i64 {
    let mut acc = 1;
    loop {
        acc = ctx.call(dadd, (acc, acc)).await?;
        if acc > limit {
            return Ok(acc);
        }
        if acc == 7 {
            return Err(durable::Failure::new("seven"));
        }
    }
});

differential_case!(question_mark_error, true, (x: i64 = 3), |ctx| -> i64 {
    let a = ctx.call(dadd, (x, 4)).await?;
    let b = ctx.call(dcheck, a).await?;
    Ok(b)
});

differential_case!(awaits_in_expressions, true, (x: i64 = 2), |ctx| -> (i64, String, Vec<i64>) {
    let sum = ctx.call(dadd, (x, 1)).await? * 10 + ctx.call(dadd, (x, 2)).await?;
    let s = [ctx.call(dadd, (sum, 0)).await?.to_string(), x.to_string()].join("-");
    let v = Vec::from([ctx.call(dadd, (1, 1)).await?, ctx.call(dadd, (2, 2)).await?]);
    let c = if ctx.call(dcheck, sum).await.is_ok() { 1 } else { 0 };
    Ok((sum + c, s, v))
});

differential_case!(collections, true, (n: i64 = 6), |ctx| -> (usize, i64, Vec<(String, i64)>, usize, usize) {
    let mut m: HashMap<String, i64> = (0..n).map(|i| (format!("k{i}"), i)).collect();
    let s: HashSet<i64> = (0..n).map(|i| i * 3).collect();
    let mut b: BTreeMap<String, i64> = BTreeMap::new();
    let mut q: VecDeque<i64> = VecDeque::new();
    for i in 0..3 {
        let v = ctx.call(dadd, (i, n)).await?;
        m.insert(format!("new{i}"), v);
        b.insert(format!("b{i}"), v);
        q.push_front(v);
    }
    let total: i64 = m.values().sum::<i64>() + q.iter().sum::<i64>();
    ctx.call(dadd, (total, 0)).await?;
    Ok((m.len(), total, b.into_iter().collect(), s.len(), q.len()))
});

differential_case!(context_through_a_reference, true, (s: String = "ab".to_string()), |ctx| -> String {
    let c = &ctx;
    let t = c.call(dcat, (s.clone(), "-".to_string())).await?;
    let again = &ctx;
    let u = again.call(dcat, (t, s)).await?;
    Ok(u)
});

differential_case!(serde_skip_in_process, false, (a: u32 = 3), |ctx| -> (u32, u32) {
    let mut v = WithSkip { a, b: 3 };
    ctx.call(dadd, (1, 1)).await?;
    v.a *= 2;
    ctx.call(dadd, (2, 2)).await?;
    Ok((v.a, v.b))
});

differential_case!(drops_in_process, false, (_x: u32 = 0), |ctx| -> Vec<String> {
    let run = ctx.instance_id().to_string();
    let keep = Noisy::new(&run, "keep");
    ctx.call(dadd, (1, 1)).await?;
    {
        let guard = Noisy::new(&run, "guard");
        ctx.call(dadd, (2, 2)).await?;
        let _ = &guard;
    }
    let moved = Noisy::new(&run, "moved");
    ctx.call(dadd, (3, 3)).await?;
    drop(moved);
    ctx.call(dadd, (4, 4)).await?;
    let seen = drops(&run);
    let _ = &keep;
    Ok(seen)
});

differential_case!(timers, true, (n: i64 = 3), |ctx| -> Vec<i64> {
    let mut v = Vec::new();
    for i in 0..n {
        ctx.sleep(std::time::Duration::from_millis(1)).await;
        v.push(ctx.call(dadd, (i, 10)).await?);
    }
    ctx.sleep(std::time::Duration::from_millis(2)).await;
    v.push(n);
    Ok(v)
});

differential_case!(drops_across_a_timer, false, (_x: u32 = 0), |ctx| -> Vec<String> {
    let run = ctx.instance_id().to_string();
    let keep = Noisy::new(&run, "keep");
    ctx.sleep(std::time::Duration::from_millis(1)).await;
    let slept = drops(&run);
    ctx.call(dadd, (1, 1)).await?;
    let _ = &keep;
    Ok(slept)
});

differential_case!(struct_shorthand_fields, true, (a0: i64 = 1), |ctx| -> (Pair, Pair, i64) {
    let mut a = a0;
    // `a` is read before the call changes it, as in plain Rust.
    let first = Pair { a, b: ctx.call(dadd, ({ a += 10; a }, 0)).await? };
    let name = format!("n{a}");
    let second = Pair { b: ctx.call(dadd, (a, 1)).await?, a };
    let labelled = Labelled { name, total: ctx.call(dadd, (first.b, second.b)).await? };
    Ok((first, second, labelled.total + labelled.name.len() as i64))
});

differential_case!(for_over_a_borrow_with_changing_operands, true, (n0: usize = 5), |ctx| -> Vec<i64> {
    // The adapters' arguments and the slice's bounds are read once, before the loop, though
    // the body changes them.
    let v: Vec<i64> = vec![10, 20, 30, 40, 50, 60];
    let mut n = n0;
    let mut out = Vec::new();
    for x in v.iter().take(n) {
        n = n.saturating_sub(2);
        out.push(ctx.call(dadd, (*x, 0)).await?);
    }
    let mut k = 1;
    for (i, x) in v.iter().skip(k).enumerate() {
        k += 1;
        let r = ctx.call(dadd, (*x, i as i64)).await?;
        out.push(r - *x);
    }
    let mut lo = 2;
    for x in &v[lo..] {
        lo += 1;
        out.push(ctx.call(dadd, (*x, lo as i64)).await?);
    }
    out.push((n + k + lo) as i64);
    Ok(out)
});

differential_case!(macro_text, true, (n: i64 = 4), |ctx| -> (String, i64) {
    let a = ctx.call(dadd, (n, 0)).await?;
    // `stringify!` sees the text as written, `?` included; `assert!` runs its `?`.
    let text = stringify!(half(a)?).to_string();
    assert!(half(a)? > 1);
    Ok((text, half(a)?))
});

differential_case!(nested_fn_with_a_static, false, (_x: u32 = 0), |ctx| -> (i64, i64) {
    fn next_id() -> i64 {
        static N: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }
    let a = next_id();
    ctx.call(dadd, (1, 1)).await?;
    let b = next_id();
    ctx.call(dadd, (2, 2)).await?;
    // One counter for every piece of the body (a new process starts it again: compared
    // without restarts).
    Ok((b - a, next_id() - b))
});

/// Half of an even number.
pub fn half(x: i64) -> Result<i64, String> {
    if x % 2 == 0 { Ok(x / 2) } else { Err(format!("{x} is odd")) }
}

/// Two numbers, built with shorthand fields around awaits.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Pair {
    pub a: i64,
    pub b: i64,
}

/// A name and a total, the name given by shorthand before an await.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct Labelled {
    pub name: String,
    pub total: i64,
}

/// A type with a field the checkpoint leaves out.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq)]
pub struct WithSkip {
    pub a: u32,
    #[serde(skip)]
    pub b: u32,
}

/// Every hand-written case.
pub const CASES: &[Case] = &[
    straight::CASE,
    loops::CASE,
    matches::CASE,
    shadowing::CASE,
    early_return::CASE,
    question_mark_error::CASE,
    awaits_in_expressions::CASE,
    collections::CASE,
    context_through_a_reference::CASE,
    serde_skip_in_process::CASE,
    drops_in_process::CASE,
    timers::CASE,
    drops_across_a_timer::CASE,
    struct_shorthand_fields::CASE,
    for_over_a_borrow_with_changing_operands::CASE,
    macro_text::CASE,
    nested_fn_with_a_static::CASE,
];
