//! The PostgreSQL rows of the table (issue 12): one worker's sequential steps against a bare
//! upsert, many instances on 1, 2 and 4 worker processes, and resume after K steps.

use std::collections::HashMap;
use std::time::Duration;

use crate::table::{self, Row, Table};
use crate::{BoxError, Config, Samples, pg_side, run_child, s, sys};

/// Runs the PostgreSQL measurements `c` asks for, or notes why there are none.
pub async fn pg_rows(
    c: &Config,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let Some(conninfo) = c.pg.clone() else {
        let note = "PostgreSQL rows skipped: no server given. Set DURABLE_PG or pass --pg CONNINFO \
                    (`eval \"$(.ci/postgres start --durable)\"` starts a throwaway one).";
        eprintln!("{note}");
        details.push(note.into());
        return Ok(());
    };
    let client = pg_side::connect(&conninfo).await?;
    let settings = pg_side::settings(&client).await?;
    let setting = |name: &str| settings.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    let durable_defaults = ["fsync", "synchronous_commit", "full_page_writes"]
        .iter()
        .all(|n| setting(n) == Some("on"));
    let listed: Vec<String> = settings.iter().map(|(n, v)| format!("{n}={v}")).collect();
    details.push(format!("PostgreSQL server: {}", listed.join(", ")));
    if !durable_defaults {
        let warning = "WARNING: the PostgreSQL server does not run with its durable defaults \
                       (fsync, synchronous_commit, full_page_writes all on): its rows do not \
                       measure durable commits";
        eprintln!("{warning}");
        details.push(warning.into());
    }
    if c.wants_pg("seq") {
        sequential_rows(c, &conninfo, &client, table, details).await?;
    }
    if c.wants_pg("workers") {
        worker_rows(c, &conninfo, &client, table, details).await?;
    }
    if c.wants_pg("resume") {
        resume_rows(c, &conninfo, &client, table, details).await?;
    }
    Ok(())
}

async fn sequential_rows(
    c: &Config,
    conninfo: &str,
    client: &tokio_postgres::Client,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let n = c.seq_steps;
    let schema = pg_side::schema_name("calibrate");
    let cal = pg_side::calibrate(conninfo, &schema, 200).await;
    pg_side::drop_schema(client, &schema).await?;
    let cal = cal?;
    let size = cal.record;
    let [gets, puts, flushes, others] = cal.per_step;
    details.push(format!(
        "PG: checkpoint record of the sequential loop {size} bytes; store calls per step on \
         PgStore (a 200-step run, start included; each call is one round trip): {} get/read/inbox, \
         {} put/write, {} flush (a no-op), {} other",
        table::num(gets),
        table::num(puts),
        table::num(flushes),
        table::num(others)
    ));
    let mut rate = Samples::default();
    let mut reference = Samples::default();
    let mut ratio = Samples::default();
    let mut cpu = Samples::default();
    let mut cpu_reference = Samples::default();
    for run in 0..c.runs {
        eprintln!("pg sequential: run {}/{}", run + 1, c.runs);
        // Alternate which goes first, so that neither always runs on a cooler machine.
        let durable_first = run % 2 == 0;
        let (mut wall, mut wall_ref) = (Duration::ZERO, Duration::ZERO);
        for durable_turn in [durable_first, !durable_first] {
            let schema = pg_side::schema_name("seq");
            if durable_turn {
                let r = pg_side::sequential(conninfo, &schema, n).await;
                pg_side::drop_schema(client, &schema).await?;
                let (w, c) = r?;
                wall = w;
                cpu.push(c.as_secs_f64() * 1e6 / n as f64);
            } else {
                let r = pg_side::upsert_reference(client, &schema, size, n).await;
                pg_side::drop_schema(client, &schema).await?;
                let (w, c) = r?;
                wall_ref = w;
                cpu_reference.push(c.as_secs_f64() * 1e6 / n as f64);
            }
        }
        rate.push(n as f64 / wall.as_secs_f64());
        reference.push(n as f64 / wall_ref.as_secs_f64());
        ratio.push(wall.as_secs_f64() / wall_ref.as_secs_f64());
    }
    let r = ratio.median();
    table.push(Row::new(
        format!("PG: 1 instance × {} sequential steps, 1 worker", table::int(n)),
        format!("{} steps/s", table::int_f(rate.median())),
        format!("bare upsert {size} B + commit: {}/s", table::int_f(reference.median())),
        format!("{}× its cost", table::num(r)),
        "≤ 2× the upsert's cost",
        table::met(r <= 2.0),
    ));
    details.push(format!(
        "PG sequential: durable {} steps/s ({}), {} ms per step; bare upsert {} /s ({}), {} ms \
         each; per-step cost ratio {} ({})",
        table::int_f(rate.median()),
        rate.spread(),
        table::num(1e3 / rate.median()),
        table::int_f(reference.median()),
        reference.spread(),
        table::num(1e3 / reference.median()),
        table::num(r),
        ratio.spread()
    ));
    details.push(format!(
        "PG sequential, CPU of this process per step (the server's not counted): durable {} µs \
         ({}), bare upsert {} µs ({})",
        table::num(cpu.median()),
        cpu.spread(),
        table::num(cpu_reference.median()),
        cpu_reference.spread()
    ));
    Ok(())
}

async fn worker_rows(
    c: &Config,
    conninfo: &str,
    client: &tokio_postgres::Client,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let n = c.fan_instances;
    let steps = (3 * n) as f64;
    let counts = c.pg_workers.clone();
    let base = counts[0];
    let mut rate: HashMap<usize, Samples> = HashMap::new();
    let mut scaling: HashMap<usize, Samples> = HashMap::new();
    let mut cpu: HashMap<usize, Samples> = HashMap::new();
    let mut shares: HashMap<usize, Vec<String>> = HashMap::new();
    for run in 0..c.runs {
        // Rotate the order, so that no worker count always runs first on a cooler machine.
        let mut order = counts.clone();
        order.rotate_left(run % counts.len());
        let mut this_run = HashMap::new();
        for &w in &order {
            eprintln!("pg workers: run {}/{}, {w} worker processes", run + 1, c.runs);
            let schema = pg_side::schema_name("fan");
            let r = pg_side::fan_out(conninfo, &schema, n, w).await;
            pg_side::drop_schema(client, &schema).await?;
            let f = r?;
            let x = steps / f.took.as_secs_f64();
            rate.entry(w).or_default().push(x);
            cpu.entry(w).or_default().push(f.worker_cpu_us / steps);
            let share: Vec<String> = f.steps.iter().map(u64::to_string).collect();
            shares.entry(w).or_default().push(share.join("/"));
            this_run.insert(w, x);
        }
        for &w in &counts {
            scaling.entry(w).or_default().push(this_run[&w] / this_run[&base]);
        }
    }
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    for &w in &counts {
        let x = rate[&w].median();
        let (compared, ratio, target, met) = if w == base {
            ("—".to_owned(), "—".to_owned(), "—".to_owned(), "—".to_owned())
        } else {
            let g = scaling[&w].median();
            let (target, met) = if w == 4 && base == 1 {
                (
                    "≥ 2.5× one worker (on enough cores)".to_owned(),
                    format!("{} (nproc {nproc})", table::met(g >= 2.5)),
                )
            } else {
                ("—".to_owned(), "—".to_owned())
            };
            (
                format!("{base} worker: {} steps/s", table::int_f(rate[&base].median())),
                format!("{}×", table::num(g)),
                target,
                met,
            )
        };
        table.push(Row::new(
            format!(
                "PG: {} instances × 3 steps incl. starts, {w} worker process{}",
                table::int(n),
                if w == 1 { "" } else { "es" }
            ),
            format!("{} steps/s", table::int_f(x)),
            compared,
            ratio,
            target,
            met,
        ));
        details.push(format!(
            "PG workers={w}: {} steps/s ({}); against {base} worker {}× ({}); CPU of the worker \
             processes per step {} µs ({}); step events per worker, by run: {}",
            table::int_f(x),
            rate[&w].spread(),
            table::num(scaling[&w].median()),
            scaling[&w].spread(),
            table::num(cpu[&w].median()),
            cpu[&w].spread(),
            shares[&w].join(", ")
        ));
    }
    Ok(())
}

async fn resume_rows(
    c: &Config,
    conninfo: &str,
    client: &tokio_postgres::Client,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    let dir = c.dir.join("pg-resume");
    sys::remove(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut pristine: HashMap<u64, String> = HashMap::new();
    let result = resume_measured(c, conninfo, client, &dir, &mut pristine, table, details).await;
    for schema in pristine.values() {
        pg_side::drop_schema(client, schema).await?;
    }
    sys::remove(&dir);
    result
}

async fn resume_measured(
    c: &Config,
    conninfo: &str,
    client: &tokio_postgres::Client,
    dir: &std::path::Path,
    pristine: &mut HashMap<u64, String>,
    table: &mut Table,
    details: &mut Vec<String>,
) -> Result<(), BoxError> {
    // Build every history once: by running it on PostgreSQL up to `pg_real_max` steps, longer
    // ones on sled (Buffered) with the record then created in PostgreSQL through the Store trait.
    let mut copied_any = false;
    for &k in &c.ks {
        let schema = pg_side::schema_name(&format!("history{k}"));
        pristine.insert(k, schema.clone());
        if k <= c.pg_real_max {
            eprintln!("pg resume: building history K={k} on PostgreSQL");
            let (r, _) =
                run_child(&[s("pg-build"), conninfo.to_owned(), schema.clone(), s(k)]).await?;
            let size = pg_side::record(client, &schema).await?.len();
            details.push(format!(
                "PG history K={k}: run on PostgreSQL in {} ms (every step committed); record {size} B",
                table::num(r["build_us"] / 1e3)
            ));
        } else {
            eprintln!("pg resume: building history K={k} on sled, copying its record");
            copied_any = true;
            let db = dir.join(format!("sled-{k}.db"));
            let (r, _) = run_child(&[s("durable-build"), db.display().to_string(), s(k)]).await?;
            let size = pg_side::copy_from_sled(&db, conninfo, &schema).await?;
            sys::remove(&db);
            details.push(format!(
                "PG history K={k}: built on sled in {} ms (Buffered), its record ({size} B) \
                 created in PostgreSQL through Store::create",
                table::num(r["build_us"] / 1e3)
            ));
        }
    }
    // Is a copied record what running on PostgreSQL writes? Compare at the smallest K.
    let k_lo = c.ks[0];
    if copied_any && k_lo <= c.pg_real_max {
        let db = dir.join("sled-check.db");
        run_child(&[s("durable-build"), db.display().to_string(), s(k_lo)]).await?;
        let schema = pg_side::schema_name("check");
        let copied = pg_side::copy_from_sled(&db, conninfo, &schema).await;
        sys::remove(&db);
        let copied_record = match copied {
            Ok(_) => pg_side::record(client, &schema).await,
            Err(e) => Err(e),
        };
        pg_side::drop_schema(client, &schema).await?;
        let real = pg_side::record(client, &pristine[&k_lo]).await?;
        let copied_record = copied_record?;
        if copied_record == real {
            details.push(format!(
                "PG history check: at K={k_lo} the record built on sled and copied is byte for \
                 byte the one running on PostgreSQL wrote ({} B)",
                real.len()
            ));
        } else {
            let differing: Vec<usize> = (0..copied_record.len().max(real.len()))
                .filter(|&i| copied_record.get(i) != real.get(i))
                .collect();
            details.push(format!(
                "PG history check: at K={k_lo} the record built on sled and copied ({} B) \
                 differs from the one running on PostgreSQL wrote ({} B) in {} bytes, at \
                 offsets {:?}",
                copied_record.len(),
                real.len(),
                differing.len(),
                &differing[..differing.len().min(16)]
            ));
        }
    }

    let mut next: HashMap<u64, Samples> = HashMap::new();
    let mut other: HashMap<(u64, &str), Samples> = HashMap::new();
    let mut growth = Samples::default();
    let k_hi = c.ks[c.ks.len() - 1];
    // As for sled: three times as many rounds as elsewhere, the first a warm-up.
    let rounds = 3 * c.runs + 1;
    for round in 0..rounds {
        let warm_up = round == 0;
        eprintln!(
            "pg resume: round {round}/{}{}",
            rounds - 1,
            if warm_up { " (warm-up)" } else { "" }
        );
        let mut this_run: HashMap<u64, f64> = HashMap::new();
        for &k in &c.ks {
            let schema = pg_side::schema_name("resume");
            let cloned = pg_side::clone_history(conninfo, client, &pristine[&k], &schema).await;
            let r = match cloned {
                Ok(()) => {
                    run_child(&[s("pg-resume"), conninfo.to_owned(), schema.clone(), s(k)]).await
                }
                Err(e) => Err(e),
            };
            pg_side::drop_schema(client, &schema).await?;
            let (r, wall) = r?;
            if warm_up {
                continue;
            }
            next.entry(k).or_default().push(r["next_us"] / 1e3);
            other.entry((k, "open")).or_default().push(r["open_us"] / 1e3);
            other.entry((k, "first")).or_default().push(r["first_us"] / 1e3);
            other.entry((k, "spawn")).or_default().push(wall.as_secs_f64() * 1e3);
            this_run.insert(k, r["next_us"]);
        }
        if !warm_up {
            growth.push(this_run[&k_hi] / this_run[&k_lo]);
        }
    }
    for &k in &c.ks {
        let d = next[&k].median();
        table.push(Row::new(
            format!("PG: Resume after K={} steps: process start → next new step", table::int(k)),
            format!("{} ms", table::num(d)),
            "—",
            "—",
            "—",
            "—",
        ));
        details.push(format!(
            "PG resume K={k}: next new step {} ms ({}); PgStore connect + runtime open {} ms ({}); \
             in-flight call K+1 restarted at {} ms; parent's spawn → result line {} ms",
            table::num(d),
            next[&k].spread(),
            table::num(other[&(k, "open")].median()),
            other[&(k, "open")].spread(),
            table::num(other[&(k, "first")].median()),
            table::num(other[&(k, "spawn")].median()),
        ));
    }
    let g = growth.median();
    table.push(Row::new(
        format!("PG: Resume growth: K={} / K={} (same run)", table::int(k_hi), table::int(k_lo)),
        format!("{}×", table::num(g)),
        "—",
        "—",
        "≤ 1.2×",
        table::met(g <= 1.2),
    ));
    details.push(format!("PG resume growth {} ({})", table::num(g), growth.spread()));
    Ok(())
}
