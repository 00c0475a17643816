//! What power-loss durability costs per flush: sled's own `insert` + `flush` (which syncs its log
//! with `sync_file_range` only) against `SledStore::put` + `Store::flush` (sled's flush, then the
//! flush mark, `fdatasync` of `db`, new blobs and the blobs directory, and the `db.seal` slot),
//! with 1 KiB values on one thread, one write per flush and 8 writes per flush (group commit).
//! A row of sled's flush followed by an `fdatasync` of `db` by hand separates the cost of the
//! sync itself from the store's own work. Prints a markdown table of medians.
//!
//! ```text
//! cargo run --release --example sync_cost -- [--flushes N] [--runs N] [--dir PATH]
//! ```
//!
//! The scratch databases go to `target/sync-cost` by default: keep them on the disk to measure
//! (not a tmpfs).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use durable::store::{SledStore, Space, Store};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const VALUE: usize = 1024;
/// Records are rewritten in turn, like instances checkpointing.
const KEYS: u64 = 64;

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}");
    eprintln!(
        "usage: cargo run --release --example sync_cost -- [--flushes N] [--runs N] [--dir PATH]"
    );
    std::process::exit(2);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// sled `insert` + `flush`.
    Sled,
    /// sled `insert` + `flush` + `fdatasync` of `db` by hand.
    SledSync,
    /// `SledStore::put` + `Store::flush`.
    Store,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Sled => "sled insert + flush (sync_file_range)",
            Way::SledSync => "sled insert + flush + fdatasync(db) by hand",
            Way::Store => "SledStore put + Store::flush (power-loss durable)",
        }
    }
}

/// The value of write `i`: never the one its key holds already (sled skips writing a value
/// equal to the present one, which would leave nothing to flush).
fn fresh(value: &mut [u8], i: u64) -> &[u8] {
    value[..8].copy_from_slice(&i.to_le_bytes());
    value
}

/// Runs `flushes` flushes of `batch` writes each on a fresh database; time per flush.
fn measure(dir: &Path, way: Way, batch: u64, flushes: u64) -> Result<Duration, BoxError> {
    let _ = std::fs::remove_dir_all(dir);
    let mut value = vec![0xA5u8; VALUE];
    let key = |i: u64| (i % KEYS).to_be_bytes();
    let took = match way {
        Way::Sled | Way::SledSync => {
            let db = sled::Config::new().path(dir).open()?;
            let tree = db.open_tree("instances")?;
            let file = std::fs::File::open(dir.join("db"))?;
            let start = Instant::now();
            for f in 0..flushes {
                for w in 0..batch {
                    tree.insert(key(f * batch + w), fresh(&mut value, f * batch + w))?;
                }
                db.flush()?;
                if way == Way::SledSync {
                    file.sync_data()?;
                }
            }
            start.elapsed()
        }
        Way::Store => {
            let store = SledStore::open(dir)?;
            let start = Instant::now();
            for f in 0..flushes {
                for w in 0..batch {
                    let i = f * batch + w;
                    store.put(Space::Instances, &key(i), fresh(&mut value, i))?;
                }
                store.flush()?;
            }
            start.elapsed()
        }
    };
    // Let sled's thread let go of the directory before it is removed.
    std::thread::sleep(Duration::from_millis(50));
    let _ = std::fs::remove_dir_all(dir);
    Ok(took / u32::try_from(flushes)?)
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn micros(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

fn main() -> Result<(), BoxError> {
    let mut flushes = 1_000u64;
    let mut runs = 5usize;
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/sync-cost");
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage(&format!("`{flag}` needs a value")));
        let number =
            || value.parse::<u64>().unwrap_or_else(|_| usage(&format!("`{flag}` takes a number")));
        match flag.as_str() {
            "--flushes" => flushes = number().max(1),
            "--runs" => runs = usize::try_from(number()).unwrap_or(usize::MAX).max(1),
            "--dir" => dir = PathBuf::from(&value),
            other => usage(&format!("unknown flag `{other}`")),
        }
    }
    std::fs::create_dir_all(&dir)?;
    let ways = [Way::Sled, Way::SledSync, Way::Store];
    let batches = [1u64, 8];
    // Interleaved, so that a slow moment of a shared machine spreads over every row.
    let mut samples = vec![Vec::new(); ways.len() * batches.len()];
    for run in 0..runs {
        for (b, &batch) in batches.iter().enumerate() {
            for (w, &way) in ways.iter().enumerate() {
                let scratch = dir.join(format!("run{run}-{w}-{batch}"));
                samples[b * ways.len() + w].push(measure(&scratch, way, batch, flushes)?);
            }
        }
    }
    println!(
        "{flushes} flushes per run, {runs} runs, medians; values of {VALUE} B over {KEYS} keys, \
         one thread\n"
    );
    println!(
        "| writes per flush | way | per flush (median) | min … max of the runs | per write | \
         against sled insert + flush |"
    );
    println!("|---|---|---|---|---|---|");
    for (b, &batch) in batches.iter().enumerate() {
        let base = median(samples[b * ways.len()].clone());
        for (w, &way) in ways.iter().enumerate() {
            let runs = &samples[b * ways.len() + w];
            let m = median(runs.clone());
            let (min, max) = (runs.iter().min(), runs.iter().max());
            let range = match (min, max) {
                (Some(&min), Some(&max)) => format!("{} … {}", micros(min), micros(max)),
                _ => String::new(),
            };
            let per_write = m / u32::try_from(batch)?;
            let ratio = m.as_secs_f64() / base.as_secs_f64();
            println!(
                "| {batch} | {} | {} | {range} | {} | {ratio:.1}× |",
                way.name(),
                micros(m),
                micros(per_write)
            );
        }
    }
    Ok(())
}
