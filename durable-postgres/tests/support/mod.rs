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
    sql_at(&conninfo(), sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// [`sql`] on the server `conninfo` names; an error as text.
fn sql_at(conninfo: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let (conninfo, sql) = (conninfo.to_owned(), sql.to_owned());
    // A thread of its own: callers may be inside a tokio runtime.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(connection);
            let messages = client.simple_query(&sql).await.map_err(|e| e.to_string())?;
            Ok(messages
                .into_iter()
                .filter_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(row) => {
                        Some((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect())
                    }
                    _ => None,
                })
                .collect())
        })
    })
    .join()
    .map_err(|_| "the SQL thread panicked".to_owned())?
}

/// A schema no other test uses, dropped (with everything in it) when this is dropped.
pub(crate) struct TempSchema {
    pub(crate) name: String,
    conninfo: String,
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
        // Fails here, before there is a schema to drop, when DURABLE_PG is unset.
        Self { name, conninfo: conninfo() }
    }

    /// A store (a "process") on this schema.
    pub(crate) fn store(&self) -> PgStore {
        PgStore::connect_in(&self.conninfo, &self.name).unwrap()
    }
}

impl Drop for TempSchema {
    fn drop(&mut self) {
        let dropped =
            sql_at(&self.conninfo, &format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        // Not a second panic while a failed test unwinds.
        if let Err(e) = dropped
            && !std::thread::panicking()
        {
            panic!("dropping schema {}: {e}", self.name);
        }
    }
}
