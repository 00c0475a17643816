//! The PostgreSQL server the tests use, and a fresh schema per test.

#![allow(dead_code, reason = "each test binary uses part of the support")]

use std::sync::atomic::{AtomicU64, Ordering};

use durable_postgres::PgStore;

/// The server's conninfo, from `DURABLE_PG`. Fails the test when it is unset: a skipped test
/// would pass without testing anything.
pub(crate) fn conninfo() -> String {
    match std::env::var("DURABLE_PG") {
        Ok(c) if !c.trim().is_empty() => c,
        _ => panic!(
            "DURABLE_PG is not set: the durable-postgres tests need a PostgreSQL server. Start a \
             throwaway one from the repository root with `eval \"$(.ci/postgres start)\"` (it \
             prints the `export DURABLE_PG=…` line), or point DURABLE_PG at a database of yours \
             (libpq syntax: `host=… user=… dbname=…`); stop it with `.ci/postgres stop \
             \"$DURABLE_PG_DIR\"`."
        ),
    }
}

/// Runs `sql` (simple protocol, several statements allowed) on a connection of its own; the
/// text of every returned row's columns.
pub(crate) fn sql(sql: &str) -> Vec<Vec<Option<String>>> {
    let (conninfo, sql) = (conninfo(), sql.to_owned());
    // A thread of its own: callers may be inside a tokio runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            let messages = client.simple_query(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect()
        })
    })
    .join()
    .unwrap()
}

/// A schema no other test uses, dropped (with everything in it) when this is dropped.
pub(crate) struct TempSchema {
    pub(crate) name: String,
}

impl TempSchema {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "t_{tag}_{}_{nanos:x}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        Self { name }
    }

    /// A store (a "process") on this schema.
    pub(crate) fn store(&self) -> PgStore {
        PgStore::connect_in(&conninfo(), &self.name).unwrap()
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        sql(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
    }
}
