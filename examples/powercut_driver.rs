//! The power-cut harness, long mode: `--cuts N` simulated power cuts of the power-cut worker
//! (`examples/powercut.rs`), each at an acknowledgement, after a clean exit or at a random
//! moment, with the database left behind checked against every acknowledgement. Prints the
//! seed, a line per cut, every violation and a summary line; exits 1 on any violation. Needs
//! root, loop devices and `mkfs.ext4`.
//!
//! ```text
//! cargo run --release --example powercut_driver -- --cuts 300 [--seed N] [--reopen-every W]
//! ```

#[path = "../tests/support/powercut.rs"]
mod powercut;

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!(
        "usage: cargo run --release --example powercut_driver -- [--cuts N] [--seed N] [--reopen-every W]"
    );
    std::process::exit(2);
}

fn main() {
    let mut cuts = 300;
    let mut seed = powercut::clock_seed();
    let mut reopen_every = "25".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("`{flag}` needs a value")));
        let number =
            || value.parse::<u64>().unwrap_or_else(|_| usage(&format!("`{flag}` takes a number")));
        match flag.as_str() {
            "--cuts" => cuts = usize::try_from(number()).unwrap_or(usize::MAX),
            "--seed" => seed = number(),
            "--reopen-every" => reopen_every = number().to_string(),
            other => usage(&format!("unknown flag `{other}`")),
        }
    }
    println!("power cuts: seed {seed} (--seed {seed} reuses it)");
    let cfg = powercut::Config {
        seed,
        cuts,
        // One directory per seed: a later run with another seed leaves a violating cut's files.
        scratch: powercut::scratch(&format!("powercut-long-{seed}")),
        worker: powercut::worker(),
        progress: true,
        worker_args: vec!["--reopen-every".into(), reopen_every],
    };
    let summary = powercut::run(&cfg).unwrap_or_else(|e| {
        eprintln!("the harness cannot run: {e}");
        std::process::exit(2);
    });
    for v in &summary.violations {
        println!("violation: {v}");
    }
    println!("{}", summary.line());
    println!("{}", summary.slots_line());
    std::process::exit(i32::from(!summary.violations.is_empty()));
}
