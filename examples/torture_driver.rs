//! The crash-torture driver, long mode: SIGKILLs the torture worker (`examples/torture.rs`)
//! `--kills N` times at random moments, restarting it each time, and compares the result with
//! runs that were never killed. Prints the seed, one line per epoch, every violation, and one
//! summary line; exits 1 on any violation.
//!
//! ```text
//! cargo run --example torture_driver -- --kills 1000 [--seed 0x…]
//! ```
//! With `--postgres URL`, `--workers N` worker processes (default 3) share one PostgreSQL
//! database (a fresh schema per epoch) and any of them is killed:
//!
//! ```text
//! cargo run --example torture_driver -- --postgres "$DURABLE_PG" --workers 3 --kills 100
//! ```
//! The checks are described in `tests/support/torture.rs`; `cargo test --test torture` runs the
//! same driver with 50 kills on sled, `cargo test --test torture_postgres` with a few on
//! PostgreSQL.

#[path = "../tests/support/torture.rs"]
mod torture;

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!(
        "usage: cargo run --example torture_driver -- [--kills N] [--seed S] \
         [--kills-per-epoch N] [--max-kill-delay-ms N] [--postgres URL [--workers N] \
         [--lease-ms N] [--instances N]]"
    );
    std::process::exit(2);
}

fn count(flag: &str, v: Option<String>) -> usize {
    usize::try_from(number(flag, v)).unwrap_or(usize::MAX)
}

fn number(flag: &str, v: Option<String>) -> u64 {
    let Some(v) = v else { usage(&format!("`{flag}` needs a value")) };
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    };
    parsed.unwrap_or_else(|| usage(&format!("`{flag}` takes a number, not `{v}`")))
}

fn main() {
    let mut kills = 1000;
    let mut seed = None;
    let mut per_epoch = None;
    let mut max_delay = None;
    let mut postgres = None;
    let mut workers = 3;
    let mut lease_ms = None;
    let mut instances = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--kills" => kills = count(&flag, args.next()),
            "--seed" => seed = Some(number(&flag, args.next())),
            "--kills-per-epoch" => per_epoch = Some(count(&flag, args.next())),
            "--max-kill-delay-ms" => max_delay = Some(number(&flag, args.next())),
            "--postgres" => {
                postgres = Some(args.next().unwrap_or_else(|| usage("`--postgres` needs a URL")))
            }
            "--workers" => workers = count(&flag, args.next()),
            "--lease-ms" => lease_ms = Some(number(&flag, args.next())),
            "--instances" => instances = Some(count(&flag, args.next())),
            other => usage(&format!("unexpected argument `{other}`")),
        }
    }
    let seed = seed.unwrap_or_else(torture::clock_seed);
    println!("torture: seed {seed:#x} (--seed {seed:#x} reuses it)");
    let dir = torture::scratch("torture-long");
    let mut cfg = match postgres {
        Some(url) => torture::Config::postgres(kills, seed, dir, torture::worker(), url, workers),
        None => torture::Config::new(kills, seed, dir, torture::worker()),
    };
    if let Some(ms) = lease_ms {
        cfg.lease_ms = ms;
    }
    if let Some(n) = instances {
        cfg.first_instances = n.max(1);
    }
    if let Some(n) = per_epoch {
        cfg.kills_per_epoch = n.max(1);
    }
    if let Some(ms) = max_delay {
        cfg.max_kill_delay_ms = ms;
    }
    cfg.progress = true;
    let summary = torture::run(&cfg);
    for v in &summary.violations {
        println!("violation: {v}");
    }
    println!("{}", summary.line());
    std::process::exit(i32::from(!summary.violations.is_empty()));
}
