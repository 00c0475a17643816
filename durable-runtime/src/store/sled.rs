//! The embedded default store: sled 0.34. The only module that names sled.

use std::path::Path;

use super::{Entries, Space, Store, StoreError};

/// A [`Store`] in a sled database directory. One process owns a directory at a time.
#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    instances: sled::Tree,
    timers: sled::Tree,
}

fn io(e: sled::Error) -> StoreError {
    StoreError::Io(e.to_string())
}

impl SledStore {
    /// Opens (or creates) the database in directory `path`.
    ///
    /// A directory that another process holds gives [`StoreError::Locked`] naming the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
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
        Ok(Self { db, instances, timers })
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        match space {
            Space::Instances => &self.instances,
            Space::Timers => &self.timers,
        }
    }
}

impl Store for SledStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(space).get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(space).insert(key, value).map_err(io)?;
        Ok(())
    }

    fn put_new(
        &self,
        space: Space,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        match self.tree(space).compare_and_swap(key, None::<&[u8]>, Some(value)).map_err(io)? {
            Ok(()) => Ok(None),
            Err(cas) => Ok(cas.current.map(|v| v.to_vec())),
        }
    }

    fn delete(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.tree(space).remove(key).map_err(io)?;
        Ok(())
    }

    fn scan(
        &self,
        space: Space,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        use std::ops::Bound;
        let tree = self.tree(space);
        let lower = match after {
            Some(k) => Bound::Excluded(k.to_vec()),
            None => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for item in tree.range::<Vec<u8>, _>((lower, Bound::Unbounded)).take(limit) {
            let (k, v) = item.map_err(io)?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(io)?;
        Ok(())
    }
}
