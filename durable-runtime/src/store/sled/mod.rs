//! The embedded default store: sled 0.34. The only module that names sled.
//!
//! sled writes its recovery snapshot only while a database is being opened, so the next open
//! replays every log entry written since the previous one: after a long run, the first open after
//! a crash gets slower with history. To keep that replay bounded, the store reopens its database
//! (flush, close, open: sled snapshots) after every `reopen_every` writes.
//!
//! sled alone is not durable against a power cut; [`disk`] adds the syncs it leaves out, owns the
//! directory for the store's whole life and detects damaged files.
//!
//! Failures: sled hangs when its disk fills, so writes are refused with [`StoreError::Full`] while
//! less than [`disk::RESERVE`] would stay free, and accepted again once space is freed. A full
//! disk that sled meets anyway (another process filled it) fails the flush and the writes it would
//! have made durable; [`Store::recover`] then reopens the database from disk. Any other failed write or sync stops the store for good ([`StoreError::Failed`]): after a
//! failed `fsync` the kernel may have dropped the data while its cache still shows it, so only a
//! new process, reading the disk, knows what is durable.
//!
//! Over 400 lines on purpose: opening, snapshotting by reopening, failure classification and the
//! key-value layer share the open database and its locks; the instance layer is in `instances`.

mod disk;

mod instances;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

use self::disk::{Directory, Room};
use super::{Entries, Lease, Space, Store, StoreError};

/// A [`Store`] in a sled database directory. One process owns a directory at a time. Clones
/// share the database.
///
/// The directory is created `0700` and its files `0600`: checkpoints hold user data.
#[derive(Debug, Clone)]
pub struct SledStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    open: RwLock<Option<Open>>,
    directory: Mutex<Directory>,
    room: Room,
    writes: AtomicU64,
    reopen_every: u64,
    /// Set by a failed sync: every later operation fails with it.
    stopped: Mutex<Option<String>>,
    /// Leases by instance. A sled database belongs to one process for the store's whole life
    /// (see [`disk`]), so leases live in memory: none outlives the process that took it.
    leases: Mutex<HashMap<String, Lease>>,
    /// The last fencing token issued.
    tokens: AtomicU64,
    /// Held by every conditional write of the instance layer (see [`instances`]).
    writing: Mutex<()>,
    /// Finished marks not yet in the `finished` tree, by instance, with the number of the write
    /// that asked for each: a mark goes into the tree only after a flush made its ended record
    /// durable (see [`instances`]). Claims treat them as in the tree.
    marks: Mutex<HashMap<String, u64>>,
    /// Numbers the writes that ask for a mark.
    mark_seq: AtomicU64,
}

#[derive(Debug)]
struct Open {
    db: sled::Db,
    instances: sled::Tree,
    timers: sled::Tree,
    /// Instance id to the version of its record (u64, little endian).
    versions: sled::Tree,
    /// Instance id, NUL, big-endian seq: one inbox message.
    inbox: sled::Tree,
    /// Ids of instances that ended (never claimed).
    finished: sled::Tree,
    /// Instance id, NUL, key: the keys of the messages [`Store::append_once`] appended to the
    /// instance (value empty), kept until it is removed.
    delivered: sled::Tree,
    /// Frame chunks stored apart from their records ([`Space::Slots`]).
    slots: sled::Tree,
}

/// Key of the flush mark in sled's default tree (see [`disk`]).
const MARK: &[u8] = b"durable.flush-mark";

/// A sled error met while working on the database in `path`, classified: a full disk can be
/// recovered from by reopening; a damaged entry (sled checks one when it reads it) and a missing
/// blob file are damage; anything else that touched the disk cannot be recovered from.
fn classify(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(e) if is_full(&e) => StoreError::Full(e.to_string()),
        sled::Error::Corruption { .. } => damaged_db(path, &e),
        // sled opens no file but blobs after its open.
        sled::Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound => StoreError::Damaged {
            file: path.join("blobs").display().to_string(),
            detail: format!(
                "a blob file sled needs is missing ({e}). Restore the database directory from a \
                 backup"
            ),
        },
        other => StoreError::Io(other.to_string()),
    }
}

fn damaged_db(path: &Path, e: &sled::Error) -> StoreError {
    StoreError::Damaged {
        file: path.join("db").display().to_string(),
        detail: format!(
            "sled reports {e}. Restore the database directory from a backup, or move it away to \
             start with an empty database"
        ),
    }
}

fn read_mark(db: &sled::Db, path: &Path) -> Result<Option<u64>, StoreError> {
    let Some(bytes) = db.get(MARK).map_err(|e| classify(path, e))? else { return Ok(None) };
    let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| StoreError::Damaged {
        file: path.join("db").display().to_string(),
        detail: "its flush mark is unreadable. Restore the database directory from a backup".into(),
    })?;
    Ok(Some(u64::from_le_bytes(bytes)))
}

fn is_full(e: &std::io::Error) -> bool {
    matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}

fn open_at(path: &Path, directory: &mut Directory) -> Result<Open, StoreError> {
    let db = sled::Config::new().path(path).open().map_err(|e| match e {
        sled::Error::Io(e) if is_full(&e) => StoreError::Full(e.to_string()),
        // sled reports its own lock as `Other` with this text.
        sled::Error::Io(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.to_string().contains("could not acquire lock") =>
        {
            StoreError::Locked {
                path: path.display().to_string(),
                detail: "sled still holds its lock".into(),
            }
        }
        sled::Error::Corruption { .. } => damaged_db(path, &e),
        sled::Error::Unsupported(msg) => StoreError::Damaged {
            file: path.join("conf").display().to_string(),
            detail: format!(
                "sled cannot read its configuration ({msg}). If the file was not written by \
                 another sled version it is damaged: restore the directory from a backup"
            ),
        },
        other => StoreError::Io(format!("cannot open database {}: {other}", path.display())),
    })?;
    directory.check_mark(read_mark(&db, path)?)?;
    let instances = db.open_tree("instances").map_err(|e| classify(path, e))?;
    let timers = db.open_tree("timers").map_err(|e| classify(path, e))?;
    let versions = db.open_tree("versions").map_err(|e| classify(path, e))?;
    let inbox = db.open_tree("inbox").map_err(|e| classify(path, e))?;
    let finished = db.open_tree("finished").map_err(|e| classify(path, e))?;
    let delivered = db.open_tree("delivered").map_err(|e| classify(path, e))?;
    let slots = db.open_tree("slots").map_err(|e| classify(path, e))?;
    directory.settle()?;
    Ok(Open { db, instances, timers, versions, inbox, finished, delivered, slots })
}

impl SledStore {
    /// How many writes pass between two snapshots by default.
    pub const DEFAULT_REOPEN_EVERY: u64 = 10_000;

    /// Opens (or creates) the database in directory `path`.
    ///
    /// A store of this process dropped just before may leave sled's own lock held for a moment
    /// (by its background thread): the open waits for it, up to 10 s.
    ///
    /// A directory that another process holds gives [`StoreError::Locked`] naming the path; a
    /// damaged file gives [`StoreError::Damaged`] naming the file, here or, for an entry of `db`
    /// that sled reads only when it is used, from the operation that reads it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Self::DEFAULT_REOPEN_EVERY)
    }

    /// Opens the database, snapshotting it (by reopening) after every `reopen_every` writes
    /// (0: never), which bounds what an open after a crash must replay.
    pub fn open_with(path: impl AsRef<Path>, reopen_every: u64) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let directory = Mutex::new(Directory::claim(&path)?);
        let open = open_when_free(&path, &directory)?;
        Ok(Self {
            shared: Arc::new(Shared {
                open: RwLock::new(Some(open)),
                directory,
                room: Room::new(&path),
                path,
                writes: AtomicU64::new(0),
                reopen_every,
                stopped: Mutex::new(None),
                leases: Mutex::new(HashMap::new()),
                tokens: AtomicU64::new(0),
                writing: Mutex::new(()),
                marks: Mutex::new(HashMap::new()),
                mark_seq: AtomicU64::new(0),
            }),
        })
    }

    fn with<T>(
        &self,
        space: Space,
        f: impl FnOnce(&sled::Tree) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.with_open(|open| {
            f(match space {
                Space::Instances => &open.instances,
                Space::Timers => &open.timers,
                Space::Slots => &open.slots,
            })
        })
    }

    fn with_open<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Open) -> Result<T, E>,
    ) -> Result<T, E> {
        self.check_running()?;
        let guard = self.read()?;
        let open = guard.as_ref().ok_or_else(unavailable)?;
        f(open)
    }

    fn io(&self, e: sled::Error) -> StoreError {
        classify(&self.shared.path, e)
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Option<Open>>, StoreError> {
        self.shared.open.read().map_err(|_| StoreError::Io("store lock poisoned".into()))
    }

    fn check_running(&self) -> Result<(), StoreError> {
        match &*lock(&self.shared.stopped) {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Remembers a failed sync for good, unless the disk was only full.
    fn stop_unless_full(&self, e: StoreError) -> StoreError {
        match e {
            StoreError::Full(_) => e,
            other => {
                let why = other.to_string();
                tracing::error!("store stopped: {why}");
                *lock(&self.shared.stopped) = Some(why.clone());
                StoreError::Failed(why)
            }
        }
    }

    /// Counts a write; every `reopen_every` writes, snapshots the database by reopening it.
    fn wrote(&self) -> Result<(), StoreError> {
        let every = self.shared.reopen_every;
        let n = self.shared.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if every == 0 || !n.is_multiple_of(every) {
            return Ok(());
        }
        self.reopen(true)
    }

    /// Closes and opens the database again, flushing first when `flush` (a snapshot) and
    /// dropping what is not durable otherwise (recovery).
    fn reopen(&self, flush: bool) -> Result<(), StoreError> {
        let mut slot =
            self.shared.open.write().map_err(|_| StoreError::Io("store lock poisoned".into()))?;
        if flush && let Some(open) = slot.as_ref() {
            open.db.flush().map_err(|e| self.io(e))?;
            lock(&self.shared.directory).sync()?;
        }
        if !flush {
            // What was not durable is gone, the ended records whose marks wait here among it.
            // Under the write lock: no write is halfway, so no mark of the old database stays.
            lock(&self.shared.marks).clear();
        }
        // sled snapshots while opening.
        drop(slot.take());
        *slot = Some(open_when_free(&self.shared.path, &self.shared.directory)?);
        Ok(())
    }
}

/// Opens the database of a claimed directory. sled's background thread may hold sled's own
/// lock for a moment after the last handle of a database of this process is dropped (a reopen,
/// or a store dropped and opened again): the open is retried for a while. No other process can
/// take the directory meanwhile: its own lock is held throughout.
fn open_when_free(path: &Path, directory: &Mutex<Directory>) -> Result<Open, StoreError> {
    let mut wait = std::time::Duration::from_millis(1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut claimed = lock(directory);
        match open_at(path, &mut claimed) {
            Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                drop(claimed);
                std::thread::sleep(wait);
                wait = (wait * 2).min(std::time::Duration::from_millis(50));
            }
            opened => return opened,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A stored value as the key-value calls show it: an instance's record without its version.
fn raw(space: Space, value: &[u8]) -> &[u8] {
    match space {
        Space::Instances => instances::record_of(value),
        Space::Timers | Space::Slots => value,
    }
}

fn unavailable() -> StoreError {
    StoreError::Io("the database could not be reopened after a snapshot or a failure".into())
}

impl Store for SledStore {
    // In `Space::Instances` these calls see records, as the instance layer's `read` does: the
    // version stored in front of a record is the instance layer's, and a raw `put` keeps it.

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(space, |t| {
            let value = t.get(key).map_err(|e| self.io(e))?;
            Ok(value.map(|v| raw(space, &v).to_vec()))
        })
    }

    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.shared.room.claim(key.len() + value.len())?;
        self.with_open(|open| {
            match space {
                Space::Instances => {}
                Space::Timers => {
                    return open.timers.insert(key, value).map(drop).map_err(|e| self.io(e));
                }
                Space::Slots => {
                    return open.slots.insert(key, value).map(drop).map_err(|e| self.io(e));
                }
            }
            let _writing = lock(&self.shared.writing);
            let present = open.instances.get(key).map_err(|e| self.io(e))?;
            let value = match present.as_deref().and_then(instances::split) {
                Some((version, _)) => instances::versioned(version, value),
                None => value.to_vec(),
            };
            open.instances.insert(key, value).map(drop).map_err(|e| self.io(e))
        })?;
        self.wrote()
    }

    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.shared.room.claim(key.len() + value.len())?;
        let present = self.with(space, |t| {
            match t.compare_and_swap(key, None::<&[u8]>, Some(value)).map_err(|e| self.io(e))? {
                Ok(()) => Ok(None),
                Err(cas) => Ok(cas.current.map(|v| raw(space, &v).to_vec())),
            }
        })?;
        if present.is_none() {
            self.wrote()?;
        }
        Ok(present)
    }

    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.with(space, |t| t.remove(key).map(drop).map_err(|e| self.io(e)))?;
        self.wrote()
    }

    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        use std::ops::Bound;
        let lower = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Unbounded,
        };
        self.with(space, |tree| {
            let mut out = Vec::new();
            for item in tree.range::<Vec<u8>, _>((lower, Bound::Unbounded)).take(limit) {
                let (k, v) = item.map_err(|e| self.io(e))?;
                out.push((k.to_vec(), raw(space, &v).to_vec()));
            }
            Ok(out)
        })
    }

    fn keeps_slots(&self) -> bool {
        true
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.check_running()?;
        let guard = self.read()?;
        let open = guard.as_ref().ok_or_else(unavailable)?;
        // The flush mark goes in first, after every write this flush covers, under the
        // directory's lock so that marks reach sled in increasing order.
        let mark = || {
            let mut directory = lock(&self.shared.directory);
            let epoch = directory.next_epoch();
            open.db.insert(MARK, &epoch.to_le_bytes()).map_err(|e| self.io(e))?;
            Ok(epoch)
        };
        // The finished marks of ended records written before this flush: durable with it.
        let due: Vec<(String, u64)> =
            lock(&self.shared.marks).iter().map(|(id, n)| (id.clone(), *n)).collect();
        let synced = mark().and_then(|epoch| {
            open.db.flush().map_err(|e| self.io(e))?;
            let mut directory = lock(&self.shared.directory);
            directory.sync()?;
            directory.flushed(epoch)
        });
        synced.map_err(|e| self.stop_unless_full(e))?;
        self.set_marks(open, &due)
    }

    fn recover(&self) -> Result<(), StoreError> {
        self.check_running()?;
        self.reopen(false).map_err(|e| self.stop_unless_full(e))
    }

    fn create(&self, id: &str, record: &[u8]) -> Result<Option<super::Versioned>, StoreError> {
        self.create_instance(id, record)
    }
    fn read(&self, id: &str) -> Result<Option<super::Versioned>, StoreError> {
        self.read_instance(id)
    }
    fn write(&self, id: &str, write: &super::Write<'_>) -> Result<u64, super::WriteError> {
        self.write_instance(id, write)
    }
    fn remove(&self, id: &str, expected: u64) -> Result<(), super::WriteError> {
        self.remove_instance(id, expected)
    }
    fn append(&self, id: &str, body: &[u8]) -> Result<Option<u64>, StoreError> {
        self.append_message(id, body)
    }
    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<super::Appended, StoreError> {
        self.append_message_once(id, key, body)
    }

    fn delivered(&self, id: &str, key: &str) -> Result<bool, StoreError> {
        self.was_delivered(id, key)
    }

    fn inbox(&self, id: &str) -> Result<Vec<super::Message>, StoreError> {
        self.messages(id)
    }
    fn claim(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.claim_unfinished(owner, now_ms, until_ms, after, limit)
    }
    fn claim_abandoned(
        &self,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Lease>, StoreError> {
        self.take_expired(owner, now_ms, until_ms, after, limit)
    }
    fn claim_ids(
        &self,
        owner: &str,
        ids: &[String],
        now_ms: u64,
        until_ms: u64,
    ) -> Option<Result<Vec<Lease>, StoreError>> {
        Some(self.claim_free(owner, ids, now_ms, until_ms))
    }
    fn lease(
        &self,
        id: &str,
        owner: &str,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<Option<Lease>, StoreError> {
        self.lease_one(id, owner, now_ms, until_ms)
    }
    fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut leases = lock(&self.shared.leases);
        if leases.get(&lease.id).is_some_and(|l| l.token == lease.token) {
            leases.remove(&lease.id);
        }
        Ok(())
    }
    fn renew(&self, owner: &str, ids: &[String], until_ms: u64) -> Result<Vec<String>, StoreError> {
        let mut leases = lock(&self.shared.leases);
        let mut renewed = Vec::new();
        for id in ids {
            if let Some(held) = leases.get_mut(id)
                && held.owner == owner
            {
                held.expires_ms = held.expires_ms.max(until_ms);
                renewed.push(id.clone());
            }
        }
        Ok(renewed)
    }
    fn set_timer(&self, timer: &super::Timer) -> Result<(), StoreError> {
        self.put(Space::Timers, &instances::timer_key(timer), &[])
    }
    fn clear_timer(&self, timer: &super::Timer) -> Result<(), StoreError> {
        self.delete(Space::Timers, &instances::timer_key(timer))
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<super::Timer>, Option<u64>), StoreError> {
        self.due(now_ms, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("durable-sled-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn snapshots_by_reopening_keep_every_write_and_conform() {
        let dir = fresh("reopen");
        {
            let store = SledStore::open_with(&dir, 7).unwrap();
            crate::store::conformance::check(&store).unwrap();
            for i in 0u32..100 {
                store.put(Space::Instances, &i.to_be_bytes(), &i.to_le_bytes()).unwrap();
            }
            store.flush().unwrap();
            for i in 0u32..100 {
                let v = store.get(Space::Instances, &i.to_be_bytes()).unwrap();
                assert_eq!(v.as_deref(), Some(&i.to_le_bytes()[..]));
            }
        }
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.scan(Space::Instances, None, 1000).unwrap().len(), 100);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_finished_mark_reaches_the_tree_only_after_a_flush_made_its_record_durable() {
        use crate::store::Write;
        let dir = fresh("marks");
        let store = SledStore::open(&dir).unwrap();
        let write = |expected, finished| Write {
            expected,
            record: b"r",
            fence: None,
            consumed: &[],
            finished,
        };
        let in_tree = |id: &str| {
            store.with_open(|open| open.finished.contains_key(id).map_err(|e| store.io(e))).unwrap()
        };
        let claimable = || -> Vec<String> {
            let leases = store.claim("o", 0, 1, None, 10).unwrap();
            for l in &leases {
                store.release(l).unwrap();
            }
            leases.into_iter().map(|l| l.id).collect()
        };
        for id in ["ended", "again", "lost"] {
            store.create(id, b"r").unwrap();
        }
        store.write("ended", &write(1, true)).unwrap();
        store.write("again", &write(1, true)).unwrap();
        // Waiting marks keep ended instances out of claims, but are not in the tree yet.
        assert!(!in_tree("ended") && !in_tree("again"));
        assert_eq!(claimable(), ["lost"]);
        // Not ended any more before the flush: the waiting mark is dropped, not applied.
        store.write("again", &write(2, false)).unwrap();
        Store::flush(&store).unwrap();
        assert!(in_tree("ended"), "the flush made the record durable, then set its mark");
        assert!(!in_tree("again"));
        assert_eq!(claimable(), ["again", "lost"]);
        // A failed flush forgets what was not durable, the waiting marks with it: the ended
        // record, if it survived, is claimed again and its driver marks it.
        store.write("lost", &write(1, true)).unwrap();
        Store::recover(&store).unwrap();
        assert!(!in_tree("lost"));
        Store::flush(&store).unwrap();
        assert!(!in_tree("lost"), "a forgotten mark is not set by a later flush");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn records_of_the_older_layout_read_write_and_remove_with_their_version() {
        use crate::store::{Write, WriteError};
        let dir = fresh("older-layout");
        let store = SledStore::open(&dir).unwrap();
        // As stores wrote them before versions moved into the value: the record alone, its
        // version in the `versions` tree.
        store
            .with_open(|open| {
                for (id, version) in [("a", 7u64), ("b", 3)] {
                    open.instances.insert(id, &b"DR-old"[..]).map_err(|e| store.io(e))?;
                    open.versions.insert(id, &version.to_le_bytes()).map_err(|e| store.io(e))?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let read = Store::read(&store, "a").unwrap().unwrap();
        assert_eq!((read.version, read.record.as_slice()), (7, &b"DR-old"[..]));
        assert_eq!(store.get(Space::Instances, b"a").unwrap().as_deref(), Some(&b"DR-old"[..]));
        let write = |expected, record| Write {
            expected,
            record,
            fence: None,
            consumed: &[],
            finished: false,
        };
        assert!(matches!(
            store.write("a", &write(6, b"x")),
            Err(WriteError::Conflict { found: Some(7), .. })
        ));
        assert_eq!(store.write("a", &write(7, b"DR-new")).unwrap(), 8);
        let read = Store::read(&store, "a").unwrap().unwrap();
        assert_eq!((read.version, read.record.as_slice()), (8, &b"DR-new"[..]));
        let left = store.with_open(|open| open.versions.get("a").map_err(|e| store.io(e)));
        assert!(left.unwrap().is_none(), "the version moved into the value");
        // A raw put keeps the version the value holds; the key-value calls see records.
        store.put(Space::Instances, b"a", b"DR-put").unwrap();
        let read = Store::read(&store, "a").unwrap().unwrap();
        assert_eq!((read.version, read.record.as_slice()), (8, &b"DR-put"[..]));
        let scanned = store.scan(Space::Instances, None, 10).unwrap();
        let records: Vec<&[u8]> = scanned.iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(records, [&b"DR-put"[..], &b"DR-old"[..]]);
        // Remove is conditional on the older layout's version too.
        assert!(store.remove("b", 2).is_err());
        store.remove("b", 3).unwrap();
        assert!(Store::read(&store, "b").unwrap().is_none());
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_directory_stays_owned_while_the_store_snapshots() {
        let dir = fresh("owned");
        let store = SledStore::open_with(&dir, 3).unwrap();
        // A second opener keeps trying while the store snapshots (closes and reopens sled)
        // every three writes: it must never get in, and the store must never lose its database.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let intruder = {
            let (dir, stop) = (dir.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut got_in = 0;
                while !stop.load(Ordering::Relaxed) {
                    if SledStore::open(&dir).is_ok() {
                        got_in += 1;
                    }
                }
                got_in
            })
        };
        for i in 0u32..600 {
            store.put(Space::Instances, &i.to_be_bytes(), b"v").unwrap();
        }
        store.flush().unwrap();
        stop.store(true, Ordering::Relaxed);
        assert_eq!(intruder.join().unwrap(), 0, "a second opener took the directory");
        assert_eq!(store.scan(Space::Instances, None, 1000).unwrap().len(), 600);
        drop(store);
        assert!(SledStore::open(&dir).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_directory_and_its_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = fresh("private");
        let store = SledStore::open(&dir).unwrap();
        store.put(Space::Instances, b"big", &vec![7u8; 1 << 20]).unwrap();
        store.flush().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        let mut files = 0;
        for entry in
            std::fs::read_dir(&dir).unwrap().chain(std::fs::read_dir(dir.join("blobs")).unwrap())
        {
            let path = entry.unwrap().path();
            let want = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&path), want, "{}", path.display());
            files += 1;
        }
        assert!(files >= 4, "db, conf, lock, blobs and a blob at least");
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
