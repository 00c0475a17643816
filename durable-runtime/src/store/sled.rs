//! The embedded default store: sled 0.34. The only module that names sled.
//!
//! sled writes its recovery snapshot only while a database is being opened, so the next open
//! replays every log entry written since the previous one: after a long run, the first open after
//! a crash gets slower with history. To keep that replay bounded, the store reopens its database
//! (flush, close, open: sled snapshots) after every `reopen_every` writes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use super::{Entries, Space, Store, StoreError};

/// A [`Store`] in a sled database directory. One process owns a directory at a time. Clones
/// share the database.
#[derive(Debug, Clone)]
pub struct SledStore {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    open: RwLock<Option<Open>>,
    writes: AtomicU64,
    reopen_every: u64,
}

#[derive(Debug)]
struct Open {
    db: sled::Db,
    instances: sled::Tree,
    timers: sled::Tree,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

fn open_at(path: &Path) -> Result<Open, StoreError> {
    let db = sled::Config::new().path(path).open().map_err(|e| {
        let detail = e.to_string();
        if detail.contains("lock") || detail.contains("WouldBlock") {
            StoreError::Locked { path: path.display().to_string(), detail }
        } else {
            StoreError::Io(format!("cannot open database {}: {detail}", path.display()))
        }
    })?;
    let instances = db.open_tree("instances").map_err(io)?;
    let timers = db.open_tree("timers").map_err(io)?;
    Ok(Open { db, instances, timers })
}

impl SledStore {
    /// How many writes pass between two snapshots by default.
    pub const DEFAULT_REOPEN_EVERY: u64 = 10_000;

    /// Opens (or creates) the database in directory `path`.
    ///
    /// A directory that another process holds gives [`StoreError::Locked`] naming the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, Self::DEFAULT_REOPEN_EVERY)
    }

    /// Opens the database, snapshotting it (by reopening) after every `reopen_every` writes
    /// (0: never), which bounds what an open after a crash must replay.
    pub fn open_with(path: impl AsRef<Path>, reopen_every: u64) -> Result<Self, StoreError> {
        let path = path.as_ref().to_owned();
        let open = open_at(&path)?;
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                open: RwLock::new(Some(open)),
                writes: AtomicU64::new(0),
                reopen_every,
            }),
        })
    }

    fn with<T>(
        &self,
        space: Space,
        f: impl FnOnce(&sled::Tree) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let guard = self.read()?;
        let open = guard.as_ref().ok_or_else(unavailable)?;
        f(match space {
            Space::Instances => &open.instances,
            Space::Timers => &open.timers,
        })
    }

    fn read(&self) -> Result<RwLockReadGuard<'_, Option<Open>>, StoreError> {
        self.shared.open.read().map_err(|_| StoreError::Io("store lock poisoned".into()))
    }

    /// Counts a write; every `reopen_every` writes, snapshots the database by reopening it.
    fn wrote(&self) -> Result<(), StoreError> {
        let every = self.shared.reopen_every;
        let n = self.shared.writes.fetch_add(1, Ordering::Relaxed) + 1;
        if every == 0 || !n.is_multiple_of(every) {
            return Ok(());
        }
        let mut slot =
            self.shared.open.write().map_err(|_| StoreError::Io("store lock poisoned".into()))?;
        if let Some(open) = slot.as_ref() {
            open.db.flush().map_err(io)?;
        }
        // sled snapshots while opening. Its background thread may hold the directory's lock for
        // a moment after the last handle is dropped: retry the open for a while.
        drop(slot.take());
        let mut wait = std::time::Duration::from_millis(1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match open_at(&self.shared.path) {
                Ok(open) => {
                    *slot = Some(open);
                    return Ok(());
                }
                Err(StoreError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn unavailable() -> StoreError {
    StoreError::Io("the database could not be reopened after a snapshot".into())
}

impl Store for SledStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(space, |t| Ok(t.get(key).map_err(io)?.map(|v| v.to_vec())))
    }

    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.with(space, |t| t.insert(key, value).map(drop).map_err(io))?;
        self.wrote()
    }

    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let present = self.with(space, |t| {
            match t.compare_and_swap(key, None::<&[u8]>, Some(value)).map_err(io)? {
                Ok(()) => Ok(None),
                Err(cas) => Ok(cas.current.map(|v| v.to_vec())),
            }
        })?;
        if present.is_none() {
            self.wrote()?;
        }
        Ok(present)
    }

    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.with(space, |t| t.remove(key).map(drop).map_err(io))?;
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
                let (k, v) = item.map_err(io)?;
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(out)
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        let guard = self.read()?;
        let open = guard.as_ref().ok_or_else(unavailable)?;
        open.db.flush().map_err(io)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_by_reopening_keep_every_write_and_conform() {
        let dir = std::env::temp_dir().join(format!("durable-sled-reopen-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
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
}
