//! The driver of the differential tester (`tests/differential.rs`).
//!
//! - `differential run <case> <id> <db> <abort-after>`: one durable run in this process,
//!   aborting right after checkpoint `abort-after` (0: never); used by the tests.
//! - `differential long [rounds]`: every case, hand-written and generated, in process and with
//!   a real process aborted after every checkpoint, `rounds` times (default 1). See the README
//!   for a loop over many generated batches.

#![allow(clippy::unwrap_used, reason = "a test driver fails loudly")]

#[macro_use]
#[path = "../tests/support/differential.rs"]
mod differential;
#[path = "../tests/support/differential_cases.rs"]
mod cases;
#[path = "../tests/support/differential_generated.rs"]
mod generated;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("long") {
        let rounds: u64 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(1);
        let exe = std::env::current_exe().unwrap();
        let dir = differential::fresh_dir("long");
        std::fs::create_dir_all(&dir).unwrap();
        let (mut runs, mut checkpoints) = (0u64, 0u64);
        for round in 0..rounds {
            for case in cases::CASES.iter().chain(generated::GENERATED) {
                let tag = format!("long{round}");
                checkpoints += differential::check_in_process(case, &tag).await;
                differential::check_with_processes(case, &tag, &exe, &dir).await;
                runs += 1;
            }
            println!("round {round}: {runs} case runs, {checkpoints} checkpoints, all equal");
        }
        return;
    }
    let all: Vec<differential::Case> =
        cases::CASES.iter().chain(generated::GENERATED).copied().collect();
    std::process::exit(differential::process_main(&all, &args).await);
}
