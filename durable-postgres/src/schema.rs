//! The store's tables and their history.
//!
//! A schema holds a `schema_version` table with one row per applied version. On connect, a
//! store applies the versions its schema lacks, in order, in one transaction that first takes
//! an advisory lock named after the schema: two processes connecting at once apply each
//! version once. A schema newer than [`CURRENT`] is refused (an older crate would not know its
//! tables).
//!
//! | version | what | why |
//! |---|---|---|
//! | 1 | `instances` (record, version, finished flag, lease), `inbox`, `kv` (the timer index), sequence `lease_tokens` | the store |
//! | 2 | partial index `instances_unfinished` on `instances (id) WHERE NOT finished` | [`claim`](durable_runtime::store::Store::claim) pages through unfinished instances in id order; without it each claim reads past every finished instance, which is most of them in a long-lived database (measured by `tests/measure.rs`: 39 ms per claim among 200,000 finished instances, 1.2 ms with the index) |
//! | 3 | `delivered` (instance, key), going with its instance (`ON DELETE CASCADE`) | [`append_once`](durable_runtime::store::Store::append_once): the keys of the messages appended with one, kept after the messages are consumed |

use durable_runtime::store::StoreError;

/// The schema version this crate creates and works with.
pub const CURRENT: u32 = 3;

/// The SQL of version `version` for schema `schema` (already checked by [`check_name`]), or
/// `None` for a version that does not exist. Version 1 creates the tables; each later one
/// changes what the one before made.
pub fn migration(schema: &str, version: u32) -> Option<String> {
    let sql = match version {
        1 => {
            "CREATE TABLE {s}.instances (
                id bytea PRIMARY KEY,
                record bytea NOT NULL,
                version bigint NOT NULL,
                finished boolean NOT NULL DEFAULT false,
                lease_owner text,
                lease_token bigint,
                lease_expires_ms bigint
            );
            CREATE TABLE {s}.inbox (
                seq bigserial PRIMARY KEY,
                id bytea NOT NULL REFERENCES {s}.instances (id) ON DELETE CASCADE,
                body bytea NOT NULL
            );
            CREATE INDEX inbox_by_instance ON {s}.inbox (id, seq);
            CREATE TABLE {s}.kv (
                space text NOT NULL,
                key bytea NOT NULL,
                value bytea NOT NULL,
                PRIMARY KEY (space, key)
            );
            CREATE SEQUENCE {s}.lease_tokens;"
        }
        2 => "CREATE INDEX instances_unfinished ON {s}.instances (id) WHERE NOT finished;",
        3 => {
            "CREATE TABLE {s}.delivered (
                id bytea NOT NULL REFERENCES {s}.instances (id) ON DELETE CASCADE,
                key text NOT NULL,
                PRIMARY KEY (id, key)
            );"
        }
        _ => return None,
    };
    Some(sql.replace("{s}", &quoted(schema)))
}

/// Refuses a schema name that is not lowercase ASCII letters, digits and `_`, starting with a
/// letter or `_`, at most 40 bytes: such a name needs no quoting rules and leaves room for the
/// notification channel `<schema>_changes` within PostgreSQL's 63-byte identifiers.
pub fn check_name(schema: &str) -> Result<(), StoreError> {
    let mut chars = schema.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if first_ok && rest_ok && schema.len() <= 40 {
        Ok(())
    } else {
        Err(StoreError::Io(format!(
            "schema name `{schema}`: use lowercase ASCII letters, digits and `_`, starting with a \
             letter or `_`, at most 40 bytes"
        )))
    }
}

/// `schema` as a quoted SQL identifier.
pub(crate) fn quoted(schema: &str) -> String {
    format!("\"{schema}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_version_up_to_current_has_sql_and_none_after() {
        for v in 1..=CURRENT {
            assert!(migration("s", v).is_some_and(|sql| sql.contains("\"s\".")), "version {v}");
        }
        assert!(migration("s", CURRENT + 1).is_none());
        assert!(migration("s", 0).is_none());
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        for ok in ["durable", "t_1", "_x", &"a".repeat(40)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Durable", "1x", "a-b", "a\"b", "a b", &"a".repeat(41)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
