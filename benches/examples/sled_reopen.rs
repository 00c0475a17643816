//! The trade-off behind `SledStore`'s reopen interval: rewrites of one 200-byte record through
//! `Store::write` on a fresh store that snapshots (closes and opens again) every `every` writes
//! (0: never), then the longest write (a reopen's pause shows here) and the times of opening the
//! database again (the first one replays the log written since the last snapshot; the later ones
//! find a fresh snapshot).
//!
//! ```text
//! cargo run --release --manifest-path benches/Cargo.toml --example sled_reopen
//! ```

use std::time::{Duration, Instant};

use durable::store::{SledStore, Store, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sled-reopen");
    let cases = [
        (10u64, SledStore::DEFAULT_REOPEN_EVERY),
        (100_000, SledStore::DEFAULT_REOPEN_EVERY),
        (100_000, 2_000),
        (100_000, 1_000),
        (100_000, 0),
        (1_000_000, 0),
    ];
    println!(
        "| writes | reopen every | worst write | first open | later opens (median of 4) | files |"
    );
    println!("|---|---|---|---|---|---|");
    for (k, every) in cases {
        let db = base.join(format!("k{k}-e{every}"));
        let _ = std::fs::remove_dir_all(&db);
        let store = SledStore::open_with(&db, every)?;
        let mut record = vec![0u8; 200];
        let mut version = store.create("x", &record)?.map_or(1, |v| v.version);
        let mut worst = Duration::ZERO;
        for i in 0..k {
            record[..8].copy_from_slice(&i.to_le_bytes());
            let write = Write {
                expected: version,
                record: &record,
                fence: None,
                consumed: &[],
                finished: false,
            };
            let t = Instant::now();
            version = store.write("x", &write)?;
            worst = worst.max(t.elapsed());
        }
        store.flush()?;
        drop(store);
        let mut opens = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let store = SledStore::open_with(&db, every)?;
            store.read("x")?;
            opens.push(t.elapsed());
        }
        let size: u64 =
            std::fs::read_dir(&db)?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum();
        let mut later = opens[1..].to_vec();
        later.sort_unstable();
        println!(
            "| {k} | {every} | {:.2} ms | {:.2} ms | {:.2} ms | {size} B |",
            worst.as_secs_f64() * 1e3,
            opens[0].as_secs_f64() * 1e3,
            later[2].as_secs_f64() * 1e3
        );
        std::fs::remove_dir_all(&db)?;
    }
    Ok(())
}
