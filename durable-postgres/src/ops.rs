//! The store's operations, as async functions on the store's runtime.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use durable_runtime::store::{
    Appended, Entries, Lease, Message, Space, StoreError, Timer, Versioned, Write, WriteError,
};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::error::{self, from_db, limit_to_db, to_db};
use crate::schema;
use crate::sql::{Sql, TIMERS};

/// How often `create` and `put_new` look again when the row they collided with was removed
/// before they could read it.
const COLLISION_RETRIES: usize = 100;

/// The longest notification payload PostgreSQL accepts is 7999 bytes.
const MAX_PAYLOAD: usize = 7999;

/// What every task of a store shares: the pool, the statements, and the names.
pub(crate) struct Shared {
    pool: Pool,
    /// For the listening connection, which is not pooled.
    pub(crate) config: tokio_postgres::Config,
    sql: Sql,
    schema: String,
    /// The notification channel: `<schema>_changes`.
    pub(crate) channel: String,
    /// This store's random name, which starts its notifications' payloads.
    pub(crate) name: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("schema", &self.schema)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A [`Write`] the store's runtime can own.
#[derive(Debug)]
pub(crate) struct OwnedWrite {
    expected: u64,
    record: Vec<u8>,
    fence: Option<(u64, u64)>,
    consumed: Vec<u64>,
    finished: bool,
}

impl From<&Write<'_>> for OwnedWrite {
    fn from(w: &Write<'_>) -> Self {
        Self {
            expected: w.expected,
            record: w.record.to_vec(),
            fence: w.fence.map(|f| (f.token, f.until_ms)),
            consumed: w.consumed.to_vec(),
            finished: w.finished,
        }
    }
}

impl Shared {
    pub(crate) fn new(conninfo: &str, schema: &str) -> Result<Self, StoreError> {
        let mut config = tokio_postgres::Config::from_str(conninfo)
            .map_err(|e| StoreError::Io(format!("PostgreSQL connection string: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("durable");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(crate::PgStore::POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Io(format!("PostgreSQL connection pool: {e}")))?;
        let name = format!(
            "{:016x}",
            getrandom::u64().map_err(|e| {
                StoreError::Io(format!("cannot draw the store's random name: {e}"))
            })?
        );
        Ok(Self {
            pool,
            config,
            sql: Sql::new(schema),
            schema: schema.to_owned(),
            channel: format!("{schema}_changes"),
            name,
        })
    }

    pub(crate) fn schema(&self) -> &str {
        &self.schema
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(|e| error::pool(&e))
    }

    /// Runs `sql` (prepared once per connection) and returns its rows.
    async fn query(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| error::sql(doing, &e))?;
        client.query(&statement, params).await.map_err(|e| error::sql(doing, &e))
    }

    /// The payload that tells other stores instance `id` changed: this store's name, a space,
    /// the id. Just the name when the id cannot be a payload (listeners report
    /// [`Change::Missed`](durable_runtime::store::Change::Missed) then).
    fn payload(&self, id: &[u8]) -> String {
        self.payload_as(&self.name, id)
    }

    /// The payload of a write its instance's runner makes under its lease: the store's name
    /// marked with `!` (listeners report [`Change::Stepped`](durable_runtime::store::Change)).
    fn runner_payload(&self, id: &[u8]) -> String {
        self.payload_as(&format!("{}!", self.name), id)
    }

    fn payload_as(&self, writer: &str, id: &[u8]) -> String {
        let fits = writer.len() + 1 + id.len() <= MAX_PAYLOAD && !id.contains(&0);
        match std::str::from_utf8(id) {
            Ok(id) if fits => format!("{writer} {id}"),
            _ => self.name.clone(),
        }
    }

    /// Brings the schema up to `target`: see [`schema`].
    pub(crate) async fn migrate(&self, target: u32) -> Result<(), StoreError> {
        let doing = "migrating the schema";
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(|e| error::sql(doing, &e))?;
        let lock_name = format!("durable-postgres migrate {}", self.schema);
        tx.execute(&self.sql.migrate_lock, &[&lock_name])
            .await
            .map_err(|e| error::sql(doing, &e))?;
        let s = schema::quoted(&self.schema);
        tx.batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {s};
             CREATE TABLE IF NOT EXISTS {s}.schema_version (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await
        .map_err(|e| error::sql(doing, &e))?;
        let row = tx
            .query_one(&format!("SELECT coalesce(max(version), 0) FROM {s}.schema_version"), &[])
            .await
            .map_err(|e| error::sql(doing, &e))?;
        let found: i32 = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
        let found =
            u32::try_from(found).map_err(|_| error::bad_data("a negative schema version"))?;
        if found > schema::CURRENT {
            return Err(StoreError::Io(format!(
                "schema `{}` is at version {found}, newer than this durable-postgres knows ({}): \
                 upgrade durable-postgres",
                self.schema,
                schema::CURRENT
            )));
        }
        for version in found + 1..=target {
            let sql = schema::migration(&self.schema, version)
                .ok_or_else(|| StoreError::Io(format!("there is no schema version {version}")))?;
            tx.batch_execute(&sql).await.map_err(|e| error::sql(doing, &e))?;
            let v = i32::try_from(version).map_err(|_| error::bad_data("schema version"))?;
            tx.execute(&format!("INSERT INTO {s}.schema_version (version) VALUES ($1)"), &[&v])
                .await
                .map_err(|e| error::sql(doing, &e))?;
            if found > 0 {
                tracing::info!(schema = %self.schema, version, "migrated the PostgreSQL schema");
            }
        }
        tx.commit().await.map_err(|e| error::sql(doing, &e))
    }

    // ----- key-value layer -----

    pub(crate) async fn get(
        &self,
        space: Space,
        key: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let rows = match space_name(space)? {
            None => self.query("reading a record", &self.sql.get_record, &[&key]).await?,
            Some(space) => self.query("reading a value", &self.sql.get_kv, &[&space, &key]).await?,
        };
        rows.first()
            .map(|row| row.try_get(0).map_err(|e| error::sql("reading a value", &e)))
            .transpose()
    }

    pub(crate) async fn put(
        &self,
        space: Space,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<(), StoreError> {
        match space_name(space)? {
            None => {
                let payload = self.payload(&key);
                let params: [&(dyn ToSql + Sync); 4] = [&key, &value, &self.channel, &payload];
                self.query("writing a record", &self.sql.put_record, &params).await?;
            }
            Some(space) => {
                self.query("writing a value", &self.sql.put_kv, &[&space, &key, &value]).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn put_new(
        &self,
        space: Space,
        key: Vec<u8>,
        value: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let name = space_name(space)?;
        for _ in 0..COLLISION_RETRIES {
            let inserted = match name {
                None => {
                    let payload = self.payload(&key);
                    let params: [&(dyn ToSql + Sync); 4] = [&key, &value, &self.channel, &payload];
                    self.query("writing a new record", &self.sql.put_new_record, &params).await?
                }
                Some(space) => {
                    let params: [&(dyn ToSql + Sync); 3] = [&space, &key, &value];
                    self.query("writing a new value", &self.sql.put_new_kv, &params).await?
                }
            };
            if !inserted.is_empty() {
                return Ok(None);
            }
            // Present: return it, unless it was deleted meanwhile (then try again).
            if let Some(present) = self.get(space, key.clone()).await? {
                return Ok(Some(present));
            }
        }
        Err(StoreError::Io("put_new: the key kept being created and deleted meanwhile".into()))
    }

    pub(crate) async fn delete(&self, space: Space, key: Vec<u8>) -> Result<(), StoreError> {
        match space_name(space)? {
            None => {
                let payload = self.payload(&key);
                let params: [&(dyn ToSql + Sync); 3] = [&key, &self.channel, &payload];
                self.query("deleting a record", &self.sql.delete_record, &params).await?;
            }
            Some(space) => {
                self.query("deleting a value", &self.sql.delete_kv, &[&space, &key]).await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn scan(
        &self,
        space: Space,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let limit = limit_to_db(limit);
        let rows = match space_name(space)? {
            None => {
                self.query("scanning records", &self.sql.scan_records, &[&after, &limit]).await?
            }
            Some(space) => {
                let params: [&(dyn ToSql + Sync); 3] = [&space, &after, &limit];
                self.query("scanning values", &self.sql.scan_kv, &params).await?
            }
        };
        rows.iter()
            .map(|row| {
                Ok((
                    row.try_get(0).map_err(|e| error::sql("scanning", &e))?,
                    row.try_get(1).map_err(|e| error::sql("scanning", &e))?,
                ))
            })
            .collect()
    }

    // ----- instances -----

    pub(crate) async fn create(
        &self,
        id: String,
        record: Vec<u8>,
    ) -> Result<Option<Versioned>, StoreError> {
        let key = id.as_bytes();
        let payload = self.payload(key);
        for _ in 0..COLLISION_RETRIES {
            let params: [&(dyn ToSql + Sync); 4] = [&key, &record, &self.channel, &payload];
            if !self.query("creating an instance", &self.sql.create, &params).await?.is_empty() {
                return Ok(None);
            }
            if let Some(present) = self.read_key(key).await? {
                return Ok(Some(present));
            }
        }
        Err(StoreError::Io(format!(
            "create `{id}`: the instance kept being created and removed meanwhile"
        )))
    }

    pub(crate) async fn read(&self, id: String) -> Result<Option<Versioned>, StoreError> {
        self.read_key(id.as_bytes()).await
    }

    async fn read_key(&self, key: &[u8]) -> Result<Option<Versioned>, StoreError> {
        let doing = "reading an instance";
        let rows = self.query(doing, &self.sql.read, &[&key]).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let record = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
        let version: i64 = row.try_get(1).map_err(|e| error::sql(doing, &e))?;
        Ok(Some(Versioned { version: from_db(version, "a version")?, record }))
    }

    pub(crate) async fn write(&self, id: String, write: OwnedWrite) -> Result<u64, WriteError> {
        let doing = "writing an instance";
        let key = id.as_bytes();
        let payload =
            if write.fence.is_some() { self.runner_payload(key) } else { self.payload(key) };
        let expected = to_db(write.expected);
        let token = write.fence.map(|(token, _)| to_db(token));
        let until = write.fence.map(|(_, until)| to_db(until));
        let consumed: Vec<i64> = write.consumed.iter().map(|&seq| to_db(seq)).collect();
        let params: [&(dyn ToSql + Sync); 9] = [
            &key,
            &write.record,
            &expected,
            &write.finished,
            &token,
            &until,
            &consumed,
            &self.channel,
            &payload,
        ];
        let rows = self.query(doing, &self.sql.write, &params).await?;
        if let Some(row) = rows.first() {
            let version: i64 = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
            return Ok(from_db(version, "a version")?);
        }
        // Refused: say why, from the row as it is now. Versions and tokens only grow, so what
        // is read now explains the refusal.
        let rows = self.query(doing, &self.sql.diagnose, &[&key]).await?;
        let Some(row) = rows.first() else {
            return Err(WriteError::Conflict { id, expected: write.expected, found: None });
        };
        let found: i64 = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
        let current: Option<i64> = row.try_get(1).map_err(|e| error::sql(doing, &e))?;
        let current = current.map(|t| from_db(t, "a lease token")).transpose()?;
        if let Some((token, _)) = write.fence
            && current != Some(token)
        {
            return Err(WriteError::Fenced { id, token, current });
        }
        Err(WriteError::Conflict {
            id,
            expected: write.expected,
            found: Some(from_db(found, "a version")?),
        })
    }

    pub(crate) async fn remove(&self, id: String, expected: u64) -> Result<(), WriteError> {
        let doing = "removing an instance";
        let key = id.as_bytes();
        let payload = self.payload(key);
        let version = to_db(expected);
        let params: [&(dyn ToSql + Sync); 4] = [&key, &version, &self.channel, &payload];
        if !self.query(doing, &self.sql.remove, &params).await?.is_empty() {
            return Ok(());
        }
        let found = self.read_key(key).await?.map(|v| v.version);
        Err(WriteError::Conflict { id, expected, found })
    }

    pub(crate) async fn append(
        &self,
        id: String,
        body: Vec<u8>,
    ) -> Result<Option<u64>, StoreError> {
        let doing = "appending a message";
        let key = id.as_bytes();
        let payload = self.payload(key);
        let params: [&(dyn ToSql + Sync); 4] = [&key, &body, &self.channel, &payload];
        let rows = match self.query(doing, &self.sql.append, &params).await {
            Ok(rows) => rows,
            // The instance was removed between the statement's snapshot and its insert.
            Err(_) if self.read_key(key).await?.is_none() => return Ok(None),
            Err(e) => return Err(e),
        };
        let Some(row) = rows.first() else { return Ok(None) };
        let seq: i64 = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
        Ok(Some(from_db(seq, "a message seq")?))
    }

    pub(crate) async fn append_once(
        &self,
        id: String,
        key: String,
        body: Vec<u8>,
    ) -> Result<Appended, StoreError> {
        let doing = "appending a keyed message";
        let bytes = id.as_bytes();
        let payload = self.payload(bytes);
        let params: [&(dyn ToSql + Sync); 5] = [&bytes, &key, &body, &self.channel, &payload];
        let rows = match self.query(doing, &self.sql.append_once, &params).await {
            Ok(rows) => rows,
            // The instance was removed between the statement's snapshot and its inserts.
            Err(_) if self.read_key(bytes).await?.is_none() => return Ok(Appended::NoInstance),
            Err(e) => return Err(e),
        };
        if let Some(row) = rows.first() {
            let seq: i64 = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
            return Ok(Appended::New(from_db(seq, "a message seq")?));
        }
        // Nothing inserted: the key was there, or the instance was not.
        Ok(match self.read_key(bytes).await? {
            Some(_) => Appended::Duplicate,
            None => Appended::NoInstance,
        })
    }

    pub(crate) async fn delivered(&self, id: String, key: String) -> Result<bool, StoreError> {
        let doing = "looking up a delivered message";
        let bytes = id.as_bytes();
        let rows = self.query(doing, &self.sql.delivered, &[&bytes, &key]).await?;
        let row = rows.first().ok_or_else(|| error::bad_data("EXISTS returned no row"))?;
        row.try_get(0).map_err(|e| error::sql(doing, &e))
    }

    /// The record and the inbox of `id`, the two queries sent at once (they may go out on two
    /// pooled connections): one wait for the server instead of two.
    pub(crate) async fn read_with_inbox(
        &self,
        id: String,
    ) -> Result<Option<(Versioned, Vec<Message>)>, StoreError> {
        let doing = "reading an instance and its inbox";
        let key = id.as_bytes();
        let rows = self.query(doing, &self.sql.read_with_inbox, &[&key]).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        let record = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
        let version: i64 = row.try_get(1).map_err(|e| error::sql(doing, &e))?;
        let seqs: Vec<i64> = row.try_get(2).map_err(|e| error::sql(doing, &e))?;
        let bodies: Vec<Vec<u8>> = row.try_get(3).map_err(|e| error::sql(doing, &e))?;
        let inbox = seqs
            .into_iter()
            .zip(bodies)
            .map(|(seq, body)| Ok(Message { seq: from_db(seq, "a message seq")?, body }))
            .collect::<Result<_, StoreError>>()?;
        Ok(Some((Versioned { version: from_db(version, "a version")?, record }, inbox)))
    }

    pub(crate) async fn inbox(&self, id: String) -> Result<Vec<Message>, StoreError> {
        let doing = "reading an inbox";
        let key = id.as_bytes();
        let rows = self.query(doing, &self.sql.inbox, &[&key]).await?;
        rows.iter()
            .map(|row| {
                let seq: i64 = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
                let body = row.try_get(1).map_err(|e| error::sql(doing, &e))?;
                Ok(Message { seq: from_db(seq, "a message seq")?, body })
            })
            .collect()
    }

    // ----- leases -----

    /// Claims as [`Store::claim`](durable_runtime::store::Store::claim) does or, when
    /// `abandoned`, as `claim_abandoned` does.
    pub(crate) async fn claim(
        &self,
        owner: String,
        now_ms: u64,
        until_ms: u64,
        after: Option<String>,
        limit: usize,
        abandoned: bool,
    ) -> Result<Vec<Lease>, StoreError> {
        let after = after.map(String::into_bytes);
        let (now, until, limit) = (to_db(now_ms), to_db(until_ms), limit_to_db(limit));
        let params: [&(dyn ToSql + Sync); 5] = [&owner, &now, &until, &after, &limit];
        let sql = if abandoned { &self.sql.claim_abandoned } else { &self.sql.claim };
        let rows = self.query("claiming instances", sql, &params).await?;
        let mut leases = leases(&rows, &owner)?;
        // UPDATE … RETURNING does not keep the candidates' order.
        leases.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(leases.into_iter().map(|(_, lease)| lease).collect())
    }

    pub(crate) async fn claim_ids(
        &self,
        owner: String,
        ids: Vec<String>,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Vec<Lease>, StoreError> {
        let keys: Vec<Vec<u8>> = ids.into_iter().map(String::into_bytes).collect();
        let (now, until) = (to_db(now_ms), to_db(until_ms));
        let params: [&(dyn ToSql + Sync); 4] = [&owner, &now, &until, &keys];
        let rows = self.query("claiming instances", &self.sql.claim_ids, &params).await?;
        Ok(leases(&rows, &owner)?.into_iter().map(|(_, lease)| lease).collect())
    }

    pub(crate) async fn lease(
        &self,
        id: String,
        owner: String,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        let key = id.into_bytes();
        let (now, until) = (to_db(now_ms), to_db(until_ms));
        let params: [&(dyn ToSql + Sync); 4] = [&owner, &now, &until, &key];
        let rows = self.query("leasing an instance", &self.sql.lease, &params).await?;
        Ok(leases(&rows, &owner)?.into_iter().next().map(|(_, lease)| lease))
    }

    /// Gives `lease` back. Other workers are woken only when `to_others` (a hand-over); a plain
    /// release tells only the clients waiting for the instance.
    pub(crate) async fn release(&self, lease: Lease, to_others: bool) -> Result<(), StoreError> {
        let key = lease.id.as_bytes();
        let payload = if to_others { self.payload(key) } else { self.runner_payload(key) };
        let token = to_db(lease.token);
        let params: [&(dyn ToSql + Sync); 4] = [&key, &token, &self.channel, &payload];
        self.query("releasing a lease", &self.sql.release, &params).await?;
        Ok(())
    }

    pub(crate) async fn renew(
        &self,
        owner: String,
        ids: Vec<String>,
        until_ms: u64,
    ) -> Result<Vec<String>, StoreError> {
        let doing = "renewing leases";
        let keys: Vec<Vec<u8>> = ids.into_iter().map(String::into_bytes).collect();
        let until = to_db(until_ms);
        let params: [&(dyn ToSql + Sync); 3] = [&owner, &keys, &until];
        let rows = self.query(doing, &self.sql.renew, &params).await?;
        rows.iter()
            .map(|row| {
                let key: Vec<u8> = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
                Ok(String::from_utf8_lossy(&key).into_owned())
            })
            .collect()
    }

    // ----- timers -----

    pub(crate) async fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<Timer>, Option<u64>), StoreError> {
        let doing = "reading due timers";
        // Keys below the bytes of now + 1 are due at now or earlier; at u64::MAX, all are.
        let bound = now_ms.checked_add(1).map(|b| b.to_be_bytes().to_vec());
        let limit = limit_to_db(limit);
        let rows = self.query(doing, &self.sql.due_timers, &[&bound, &limit]).await?;
        let mut due = Vec::new();
        let mut next = None;
        for row in &rows {
            let key: Vec<u8> = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
            let is_due: bool = row.try_get(1).map_err(|e| error::sql(doing, &e))?;
            let Some((at, id)) = key.split_first_chunk::<8>() else { continue };
            let at_ms = u64::from_be_bytes(*at);
            if is_due {
                due.push(Timer { at_ms, id: String::from_utf8_lossy(id).into_owned() });
            } else {
                next = Some(at_ms);
            }
        }
        due.sort_by(|a, b| (a.at_ms, a.id.as_bytes()).cmp(&(b.at_ms, b.id.as_bytes())));
        Ok((due, next))
    }
}

/// The table a space lives in: `None` for [`Space::Instances`] (the instances table), the
/// `kv` space name otherwise.
fn space_name(space: Space) -> Result<Option<&'static str>, StoreError> {
    match space {
        Space::Instances => Ok(None),
        Space::Timers => Ok(Some(TIMERS)),
        Space::Slots => Ok(Some("slots")),
        other => Err(StoreError::Io(format!("the PostgreSQL store has no space {other:?}"))),
    }
}

/// The leases a claim returned, with the id's bytes to sort by.
fn leases(rows: &[tokio_postgres::Row], owner: &str) -> Result<Vec<(Vec<u8>, Lease)>, StoreError> {
    let doing = "claiming instances";
    rows.iter()
        .map(|row| {
            let key: Vec<u8> = row.try_get(0).map_err(|e| error::sql(doing, &e))?;
            let token: i64 = row.try_get(1).map_err(|e| error::sql(doing, &e))?;
            let expires: i64 = row.try_get(2).map_err(|e| error::sql(doing, &e))?;
            let lease = Lease {
                id: String::from_utf8_lossy(&key).into_owned(),
                owner: owner.to_owned(),
                token: from_db(token, "a lease token")?,
                expires_ms: from_db(expires, "a lease expiry")?,
            };
            Ok((key, lease))
        })
        .collect()
}
