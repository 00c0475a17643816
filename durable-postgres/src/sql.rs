//! The statements of the store, for one schema.
//!
//! Every write that changes an instance is one statement (so one transaction, committed before
//! the call returns) that also calls `pg_notify` for the rows it changed: the notification is
//! sent when, and only if, the write commits.
//!
//! Instance ids are stored as `bytea` (the id's UTF-8 bytes), which orders them as the trait
//! does (byte order, no collation) and admits any key of the key-value layer.

use durable_runtime::store::Timer;

use crate::schema::quoted;

/// The key space of the timer index in table `kv`.
pub(crate) const TIMERS: &str = "timers";

/// Key of a timer index entry: big-endian due time, then the instance id (as the trait's
/// [`Space::Timers`](durable_runtime::store::Space::Timers) describes).
pub(crate) fn timer_key(timer: &Timer) -> Vec<u8> {
    let mut k = timer.at_ms.to_be_bytes().to_vec();
    k.extend_from_slice(timer.id.as_bytes());
    k
}

/// The statements, with the schema's name in them.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) migrate_lock: String,
    pub(crate) get_record: String,
    /// `$1` id, `$2` record, `$3` channel, `$4` payload: inserts at version 0 or replaces the
    /// record (keeping its version).
    pub(crate) put_record: String,
    /// `$1` id, `$2` record, `$3` channel, `$4` payload: a row when inserted (version 0).
    pub(crate) put_new_record: String,
    pub(crate) delete_record: String,
    pub(crate) scan_records: String,
    pub(crate) get_kv: String,
    pub(crate) put_kv: String,
    pub(crate) put_new_kv: String,
    pub(crate) delete_kv: String,
    pub(crate) scan_kv: String,
    /// `$1` id, `$2` record, `$3` channel, `$4` payload: a row when created (version 1).
    pub(crate) create: String,
    pub(crate) read: String,
    pub(crate) write: String,
    pub(crate) diagnose: String,
    pub(crate) remove: String,
    pub(crate) append: String,
    pub(crate) append_once: String,
    pub(crate) delivered: String,
    pub(crate) inbox: String,
    pub(crate) read_with_inbox: String,
    pub(crate) claim: String,
    pub(crate) claim_abandoned: String,
    pub(crate) claim_ids: String,
    pub(crate) lease: String,
    pub(crate) release: String,
    pub(crate) renew: String,
    pub(crate) due_timers: String,
}

impl Sql {
    pub(crate) fn new(schema: &str) -> Self {
        let s = quoted(schema);
        // The lease columns a claim sets: the holder claiming again keeps its token and its
        // lease is extended; anyone else gets a new, greater token. `$1` owner, `$2` now,
        // `$3` until. Every right-hand side reads the row as it was.
        let grant = format!(
            "UPDATE {s}.instances i SET
                lease_token = CASE WHEN i.lease_owner = $1 AND i.lease_expires_ms > $2
                    THEN i.lease_token ELSE nextval('{s}.lease_tokens') END,
                lease_expires_ms = CASE WHEN i.lease_owner = $1 AND i.lease_expires_ms > $2
                    THEN greatest(i.lease_expires_ms, $3) ELSE $3 END,
                lease_owner = $1
             FROM candidates c WHERE i.id = c.id
             RETURNING i.id, i.lease_token, i.lease_expires_ms"
        );
        // Who may take a lease: nobody holds it, it expired, or `$1` holds it.
        let free = "(lease_owner IS NULL OR lease_expires_ms <= $2 OR lease_owner = $1)";
        // What a claim takes: nobody holds it, or it expired. Not a lease `$1` holds: a driver
        // of `$1` runs the instance, and may give the lease back (by its token) while the claim
        // returns it, which would leave the claimer with a lease nobody holds.
        let claimable = "(lease_owner IS NULL OR lease_expires_ms <= $2)";
        Self {
            migrate_lock: "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))".into(),
            get_record: format!("SELECT record FROM {s}.instances WHERE id = $1"),
            put_record: format!(
                "WITH put AS (
                    INSERT INTO {s}.instances (id, record, version) VALUES ($1, $2, 0)
                    ON CONFLICT (id) DO UPDATE SET record = excluded.record RETURNING 1)
                 SELECT pg_notify($3, $4) FROM put"
            ),
            put_new_record: format!(
                "WITH put AS (
                    INSERT INTO {s}.instances (id, record, version) VALUES ($1, $2, 0)
                    ON CONFLICT (id) DO NOTHING RETURNING 1)
                 SELECT pg_notify($3, $4) FROM put"
            ),
            delete_record: format!(
                "WITH gone AS (DELETE FROM {s}.instances WHERE id = $1 RETURNING 1)
                 SELECT pg_notify($2, $3) FROM gone"
            ),
            scan_records: format!(
                "SELECT id, record FROM {s}.instances WHERE ($1::bytea IS NULL OR id > $1)
                 ORDER BY id LIMIT $2"
            ),
            get_kv: format!("SELECT value FROM {s}.kv WHERE space = $1 AND key = $2"),
            put_kv: format!(
                "INSERT INTO {s}.kv (space, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (space, key) DO UPDATE SET value = excluded.value"
            ),
            put_new_kv: format!(
                "INSERT INTO {s}.kv (space, key, value) VALUES ($1, $2, $3)
                 ON CONFLICT (space, key) DO NOTHING RETURNING 1"
            ),
            delete_kv: format!("DELETE FROM {s}.kv WHERE space = $1 AND key = $2"),
            scan_kv: format!(
                "SELECT key, value FROM {s}.kv WHERE space = $1 AND ($2::bytea IS NULL OR key > $2)
                 ORDER BY key LIMIT $3"
            ),
            create: format!(
                "WITH created AS (
                    INSERT INTO {s}.instances (id, record, version) VALUES ($1, $2, 1)
                    ON CONFLICT (id) DO NOTHING RETURNING 1)
                 SELECT pg_notify($3, $4) FROM created"
            ),
            read: format!("SELECT record, version FROM {s}.instances WHERE id = $1"),
            // The version compare, the fencing check and the write are one UPDATE: a concurrent
            // writer of the same row waits for this one and then finds the version moved on.
            // `$1` id, `$2` record, `$3` expected version, `$4` finished, `$5` fence token (NULL
            // for an unfenced write), `$6` fence until, `$7` consumed seqs, `$8`/`$9` notify.
            write: format!(
                "WITH written AS (
                    UPDATE {s}.instances SET record = $2, version = version + 1, finished = $4,
                        lease_expires_ms = CASE WHEN $5::bigint IS NULL THEN lease_expires_ms
                            ELSE greatest(lease_expires_ms, $6::bigint) END
                    WHERE id = $1 AND version = $3 AND ($5::bigint IS NULL OR lease_token = $5)
                    RETURNING version),
                 consumed AS (
                    DELETE FROM {s}.inbox WHERE id = $1 AND seq = ANY($7::bigint[])
                    AND EXISTS (SELECT 1 FROM written))
                 SELECT version, pg_notify($8, $9) FROM written"
            ),
            diagnose: format!("SELECT version, lease_token FROM {s}.instances WHERE id = $1"),
            // The inbox goes with the row (ON DELETE CASCADE), and the lease is in it.
            remove: format!(
                "WITH removed AS (DELETE FROM {s}.instances WHERE id = $1 AND version = $2
                    RETURNING 1)
                 SELECT pg_notify($3, $4) FROM removed"
            ),
            // Appends to one instance take a transaction-scoped advisory lock named after it
            // before the INSERT draws its seq, and hold it until they have committed: an
            // instance's messages become visible in seq order, which is the order their appends
            // returned in. The INSERT draws a seq only for a row the join with `locked`
            // produced, so after the lock. An instance removed meanwhile fails the foreign key
            // (no message). `$1` id, `$2` body, `$3`/`$4` notify.
            append: format!(
                "WITH locked AS (
                    SELECT pg_advisory_xact_lock(
                        hashtextextended('{schema}/inbox/' || encode($1::bytea, 'hex'), 0))),
                 appended AS (
                    INSERT INTO {s}.inbox (id, body)
                    SELECT i.id, $2 FROM {s}.instances i, locked WHERE i.id = $1
                    RETURNING seq)
                 SELECT seq, pg_notify($3, $4) FROM appended"
            ),
            // As `append`, and the message is inserted only for a key the instance did not
            // have: of two racing appends with one key, the second waits on the first's key row
            // and then inserts nothing. `$1` id, `$2` key, `$3` body, `$4`/`$5` notify.
            append_once: format!(
                "WITH locked AS (
                    SELECT pg_advisory_xact_lock(
                        hashtextextended('{schema}/inbox/' || encode($1::bytea, 'hex'), 0))),
                 marked AS (
                    INSERT INTO {s}.delivered (id, key)
                    SELECT i.id, $2 FROM {s}.instances i, locked WHERE i.id = $1
                    ON CONFLICT (id, key) DO NOTHING
                    RETURNING id),
                 appended AS (
                    INSERT INTO {s}.inbox (id, body) SELECT id, $3 FROM marked
                    RETURNING seq)
                 SELECT seq, pg_notify($4, $5) FROM appended"
            ),
            delivered: format!(
                "SELECT EXISTS (SELECT 1 FROM {s}.delivered WHERE id = $1 AND key = $2)"
            ),
            inbox: format!("SELECT seq, body FROM {s}.inbox WHERE id = $1 ORDER BY seq"),
            // One statement, so one snapshot: the inbox is the one that goes with the record
            // (two queries could pair a record with an inbox from before the write that consumed
            // a message, which would then look buffered again).
            read_with_inbox: format!(
                "SELECT record, version,
                    ARRAY(SELECT seq FROM {s}.inbox WHERE id = $1 ORDER BY seq),
                    ARRAY(SELECT body FROM {s}.inbox WHERE id = $1 ORDER BY seq)
                 FROM {s}.instances WHERE id = $1"
            ),
            // Rows another transaction holds (a claimer, a writer) are skipped, not waited for:
            // two claimers never get the same instance. `$4` after, `$5` limit.
            claim: format!(
                "WITH candidates AS (
                    SELECT id FROM {s}.instances
                    WHERE NOT finished AND ($4::bytea IS NULL OR id > $4) AND {claimable}
                    ORDER BY id LIMIT $5
                    FOR NO KEY UPDATE SKIP LOCKED)
                 {grant}"
            ),
            // The same, of the leases that ran out while held only. `$1` and `$3` are used by
            // the grant alone.
            claim_abandoned: format!(
                "WITH candidates AS (
                    SELECT id FROM {s}.instances
                    WHERE NOT finished AND ($4::bytea IS NULL OR id > $4)
                        AND lease_owner IS NOT NULL AND lease_expires_ms <= $2
                    ORDER BY id LIMIT $5
                    FOR NO KEY UPDATE SKIP LOCKED)
                 {grant}"
            ),
            // The unfinished among the ids `$4` that no live lease holds. A row another
            // transaction holds is waited for, not skipped: the holder may be one that leaves
            // the instance to others (a renewal finding the lease released, a statement that
            // fails), and a skipped instance would wait for the sweep. Rows are locked in id
            // order, as `renew` locks them: the two never wait for each other in a cycle (the
            // other multi-row statement, `claim`, skips locked rows). `$1` and `$3` are used by
            // the grant alone.
            claim_ids: format!(
                "WITH candidates AS (
                    SELECT id FROM {s}.instances
                    WHERE id = ANY($4) AND NOT finished AND {claimable}
                    ORDER BY id
                    FOR NO KEY UPDATE)
                 {grant}"
            ),
            // One instance, finished or not (as the sled store does); waits for a writer of it.
            lease: format!(
                "WITH candidates AS (
                    SELECT id FROM {s}.instances WHERE id = $4 AND {free}
                    FOR NO KEY UPDATE)
                 {grant}"
            ),
            // Extends what `$1` still holds among the ids `$2` (expired or not: nobody took
            // it, or the owner would differ) to `$3`; the token stays. Locks in id order (see
            // `claim_ids`).
            renew: format!(
                "WITH held AS (
                    SELECT id FROM {s}.instances WHERE id = ANY($2) AND lease_owner = $1
                    ORDER BY id
                    FOR NO KEY UPDATE)
                 UPDATE {s}.instances i SET lease_expires_ms = greatest(i.lease_expires_ms, $3)
                 FROM held h WHERE i.id = h.id
                 RETURNING i.id"
            ),
            release: format!(
                "WITH released AS (
                    UPDATE {s}.instances SET lease_owner = NULL, lease_token = NULL,
                        lease_expires_ms = NULL
                    WHERE id = $1 AND lease_token = $2 RETURNING 1)
                 SELECT pg_notify($3, $4) FROM released"
            ),
            // The due entries (keys below `$1`, the big-endian bytes of now + 1; NULL: all),
            // then the first one not yet due. Keys shorter than a due time are no timers.
            due_timers: format!(
                "(SELECT key, true AS due FROM {s}.kv
                  WHERE space = '{TIMERS}' AND length(key) >= 8 AND ($1::bytea IS NULL OR key < $1)
                  ORDER BY key LIMIT $2)
                 UNION ALL
                 (SELECT key, false FROM {s}.kv
                  WHERE space = '{TIMERS}' AND length(key) >= 8 AND $1::bytea IS NOT NULL
                  AND key >= $1
                  ORDER BY key LIMIT 1)"
            ),
        }
    }
}
