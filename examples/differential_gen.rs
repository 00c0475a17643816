//! Writes random, well-typed orchestration bodies as differential cases (see
//! `tests/support/differential.rs`): `differential_gen <seed> <count>` prints a Rust file for
//! `tests/support/differential_generated.rs`. The same seed gives the same file.
//!
//! A body works on `i64` locals, a `Vec<i64>` log and a `HashMap<i64, i64>`; it mixes activity
//! calls (with `?`, inside expressions, matched on), `if`/`else`, `match`, `for` and `while`
//! loops with `break` and `continue`, and early `return`s, nested a few levels. Every loop is
//! bounded and all arithmetic wraps, so every body terminates without panicking.

use std::fmt::Write;

/// splitmix64: small, seedable, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        let span = u64::try_from(hi - lo + 1).unwrap_or(1);
        lo + i64::try_from(self.below(span)).unwrap_or(0)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Var {
    name: String,
    /// Whether statements may assign it (loop counters and loop variables may not).
    assignable: bool,
}

struct Gen {
    rng: Rng,
    out: String,
    scopes: Vec<Vec<Var>>,
    next: usize,
    /// Loops around the current statement: `break`/`continue` are allowed inside one.
    loops: usize,
    /// Awaits the body may still write (each loop multiplies what its body does).
    budget: i64,
}

impl Gen {
    fn fresh(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}{}", self.next)
    }

    fn line(&mut self, depth: usize, text: &str) {
        let _ = writeln!(self.out, "{}{text}", "    ".repeat(depth + 1));
    }

    fn vars(&self) -> impl Iterator<Item = &Var> {
        self.scopes.iter().flatten()
    }

    fn atom(&mut self) -> String {
        let names: Vec<String> = self.vars().map(|v| v.name.clone()).collect();
        if names.is_empty() || self.rng.chance(25) {
            format!("({}_i64)", self.rng.int(-3, 20))
        } else {
            let i = usize::try_from(self.rng.below(names.len() as u64)).unwrap_or(0);
            names[i].clone()
        }
    }

    fn expr(&mut self) -> String {
        let (a, b) = (self.atom(), self.atom());
        match self.rng.below(5) {
            0 => a,
            1 => format!("{a}.wrapping_add({b})"),
            2 => format!("{a}.wrapping_sub({b})"),
            3 => format!("{a}.wrapping_mul({}_i64)", self.rng.int(-2, 3)),
            _ => format!("({a} % 7)"),
        }
    }

    fn cond(&mut self) -> String {
        let (a, b) = (self.atom(), self.atom());
        match self.rng.below(3) {
            0 => format!("{a} < {b}"),
            1 => format!("{a} % 2 == 0"),
            _ => format!("log.len() > {}", self.rng.below(6)),
        }
    }

    fn target(&mut self) -> Option<String> {
        let names: Vec<String> =
            self.vars().filter(|v| v.assignable).map(|v| v.name.clone()).collect();
        if names.is_empty() {
            return None;
        }
        let i = usize::try_from(self.rng.below(names.len() as u64)).unwrap_or(0);
        Some(names[i].clone())
    }

    fn declare(&mut self, name: String, assignable: bool) {
        if let Some(scope) = self.scopes.last_mut() {
            scope.push(Var { name, assignable });
        }
    }

    fn block(&mut self, depth: usize, statements: u64) {
        self.scopes.push(Vec::new());
        for _ in 0..statements {
            self.statement(depth);
        }
        self.scopes.pop();
    }

    fn call(&mut self) -> String {
        self.budget -= 1;
        let (a, b) = (self.atom(), self.atom());
        format!("ctx.call(dadd, ({a}, {b})).await?")
    }

    fn statement(&mut self, depth: usize) {
        let nested = depth < 3 && self.budget > 2;
        let pick = self.rng.below(if nested { 17 } else { 11 });
        match pick {
            0 => {
                let v = self.fresh("v");
                let e = self.expr();
                self.line(depth, &format!("let mut {v}: i64 = {e};"));
                self.declare(v, true);
            }
            1 | 2 => {
                let v = self.fresh("v");
                let c = self.call();
                self.line(depth, &format!("let mut {v} = {c};"));
                self.declare(v, true);
            }
            3 | 4 => match self.target() {
                Some(t) => {
                    let c = self.call();
                    let e = self.expr();
                    let rhs = if self.rng.chance(30) { format!("{c} + {e}") } else { c };
                    self.line(depth, &format!("{t} = {rhs};"));
                }
                None => self.statement(depth),
            },
            5 => match self.target() {
                Some(t) => {
                    self.budget -= 1;
                    let (a, fallback) = (self.atom(), self.rng.int(-5, 5));
                    let r = self.fresh("r");
                    // (`t = match … .await {..}` is refused by the lowering: a `let` is not.)
                    self.line(
                        depth,
                        &format!(
                            "let {r} = match ctx.call(dcheck, {a}).await {{ Ok(x) => x, Err(_) => {fallback}_i64 }};"
                        ),
                    );
                    self.line(depth, &format!("{t} = {r};"));
                }
                None => self.statement(depth),
            },
            6 => {
                let e = self.expr();
                self.line(depth, &format!("log.push({e});"));
            }
            7 => {
                let (k, e) = (self.atom(), self.expr());
                self.line(depth, &format!("m.insert({k} % 5, {e});"));
            }
            8 => {
                if self.rng.chance(15) {
                    // A call that may fail the whole body with its error.
                    self.budget -= 1;
                    let a = self.atom();
                    let v = self.fresh("v");
                    self.line(
                        depth,
                        &format!("let {v} = ctx.call(dcheck, {a}.wrapping_abs() % 50 + 1).await?;"),
                    );
                    self.declare(v, false);
                } else {
                    let e = self.expr();
                    self.line(depth, &format!("log.push({e}.wrapping_mul(2));"));
                }
            }
            9 => {
                if self.loops > 0 && self.rng.chance(50) {
                    let c = self.cond();
                    let jump = if self.rng.chance(50) { "break" } else { "continue" };
                    self.line(depth, &format!("if {c} {{ {jump}; }}"));
                } else if self.rng.chance(20) {
                    let c = self.cond();
                    self.line(
                        depth,
                        &format!("if {c} {{ return Ok((log, sorted_entries(&m))); }}"),
                    );
                } else {
                    let e = self.expr();
                    self.line(depth, &format!("log.push({e});"));
                }
            }
            10 => {
                let (a, b) = (self.atom(), self.atom());
                let v = self.fresh("v");
                let c1 = self.call();
                self.line(
                    depth,
                    &format!("let {v} = {c1} * 2 + ctx.call(dadd, ({a}, {b})).await?;"),
                );
                self.budget -= 1;
                self.declare(v, false);
            }
            11 | 12 => {
                let c = self.cond();
                self.line(depth, &format!("if {c} {{"));
                let n = 1 + self.rng.below(3);
                self.block(depth + 1, n);
                if self.rng.chance(60) {
                    self.line(depth, "} else {");
                    let n = 1 + self.rng.below(3);
                    self.block(depth + 1, n);
                }
                self.line(depth, "}");
            }
            13 => {
                let a = self.atom();
                self.line(depth, &format!("match {a}.rem_euclid(3) {{"));
                for arm in ["0", "1", "_"] {
                    self.line(depth + 1, &format!("{arm} => {{"));
                    let n = 1 + self.rng.below(2);
                    self.block(depth + 2, n);
                    self.line(depth + 1, "}");
                }
                self.line(depth, "}");
            }
            14 | 15 => {
                let bound = 1 + self.rng.below(3);
                let i = self.fresh("i");
                self.line(depth, &format!("for {i} in 0..{bound}_i64 {{"));
                self.loops += 1;
                let saved = self.budget;
                self.budget = saved / i64::try_from(bound).unwrap_or(1);
                self.scopes.push(vec![Var { name: i, assignable: false }]);
                let n = 1 + self.rng.below(3);
                self.block(depth + 1, n);
                self.scopes.pop();
                self.budget = saved - (saved / 2);
                self.loops -= 1;
                self.line(depth, "}");
            }
            _ => {
                let bound = 1 + self.rng.below(3);
                let w = self.fresh("w");
                self.line(depth, &format!("let mut {w}: i64 = 0;"));
                self.line(depth, &format!("while {w} < {bound} {{"));
                self.line(depth + 1, &format!("{w} += 1;"));
                self.loops += 1;
                let saved = self.budget;
                self.budget = saved / i64::try_from(bound).unwrap_or(1);
                let n = 1 + self.rng.below(3);
                self.block(depth + 1, n);
                self.budget = saved - (saved / 2);
                self.loops -= 1;
                self.line(depth, "}");
                self.declare(w, false);
            }
        }
    }
}

fn body(seed: u64, index: u64) -> (i64, String) {
    let mut g = Gen {
        rng: Rng(seed.wrapping_mul(1_000_003).wrapping_add(index)),
        out: String::new(),
        scopes: vec![vec![Var { name: "n".into(), assignable: false }]],
        next: 0,
        loops: 0,
        budget: 14,
    };
    let input = g.rng.int(-3, 12);
    g.line(0, "let mut log: Vec<i64> = Vec::new();");
    g.line(0, "let mut m: HashMap<i64, i64> = HashMap::new();");
    // At least one checkpoint, so there is something to stop at.
    g.line(0, "let mut v0 = ctx.call(dadd, (n, 1)).await?;");
    g.scopes[0].push(Var { name: "v0".into(), assignable: true });
    let statements = 4 + g.rng.below(6);
    for _ in 0..statements {
        g.statement(0);
    }
    let top: Vec<String> = g.scopes[0].iter().map(|v| v.name.clone()).collect();
    for v in top {
        g.line(0, &format!("log.push({v});"));
    }
    g.line(0, "Ok((log, sorted_entries(&m)))");
    (input, g.out)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let seed: u64 = args.first().and_then(|s| s.parse().ok()).unwrap_or(1);
    let count: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "//! Generated by `cargo run --example differential_gen -- {seed} {count}`: random bodies for the\n\
         //! differential tester. Do not edit; regenerate.\n\n\
         #![allow(unused_imports, unreachable_pub, dead_code, clippy::all)]\n\n\
         use std::collections::HashMap;\n\n\
         use crate::differential::Case;\n"
    );
    let mut names = Vec::new();
    for i in 0..count {
        let (input, text) = body(seed, i);
        let name = format!("gen_{seed}_{i}");
        let _ = writeln!(
            out,
            "differential_case!({name}, true, (n: i64 = {input}), |ctx| -> (Vec<i64>, Vec<(i64, i64)>) {{\n{text}}});\n"
        );
        names.push(name);
    }
    let _ = writeln!(out, "/// The generated cases.\npub const GENERATED: &[Case] = &[");
    for n in names {
        let _ = writeln!(out, "    {n}::CASE,");
    }
    let _ = writeln!(out, "];");
    print!("{out}");
}
