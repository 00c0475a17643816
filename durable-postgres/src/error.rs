//! PostgreSQL and pool errors as [`StoreError`]s, and checked conversions of stored numbers.

use durable_runtime::store::StoreError;
use tokio_postgres::error::SqlState;

/// A failed statement: a full disk is [`StoreError::Full`], anything else [`StoreError::Io`]
/// naming what was being done.
pub(crate) fn sql(doing: &str, e: &tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::DISK_FULL) {
        return StoreError::Full(format!("PostgreSQL, {doing}: {e}"));
    }
    match e.as_db_error() {
        Some(db) => StoreError::Io(format!(
            "PostgreSQL, {doing}: {} {} ({})",
            db.severity(),
            db.message(),
            db.code().code()
        )),
        None => StoreError::Io(format!("PostgreSQL, {doing}: {e}")),
    }
}

/// No connection could be had from the pool.
pub(crate) fn pool(e: &deadpool_postgres::PoolError) -> StoreError {
    StoreError::Io(format!("cannot get a PostgreSQL connection: {e}"))
}

/// A stored value this crate never writes: the schema was changed by hand, or is damaged.
pub(crate) fn bad_data(what: &str) -> StoreError {
    StoreError::Io(format!("PostgreSQL holds an impossible value: {what}"))
}

/// A time, version or count as PostgreSQL's `bigint`: values past `i64::MAX` (292 million years
/// of milliseconds) are stored as `i64::MAX`.
pub(crate) fn to_db(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `limit` as PostgreSQL's `bigint`.
pub(crate) fn limit_to_db(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A stored `bigint` that must not be negative.
pub(crate) fn from_db(n: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(n).map_err(|_| bad_data(&format!("{what} {n} is negative")))
}
