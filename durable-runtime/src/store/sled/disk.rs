//! What sled 0.34 leaves undone on disk, done here: power-loss durability, exclusive ownership,
//! private permissions and damage detection for a database directory.
//!
//! sled's `flush` makes its log durable with `sync_file_range`, which does not persist a grown
//! file's size; it writes large log entries to `blobs/<lsn>` files that it never syncs; it writes
//! `conf` without a sync and never syncs a directory. [`Directory`] fills each gap:
//!
//! - [`Directory::sync`] after every sled flush: `fdatasync` of `db`, then of every blob file
//!   written since the last sync and of the `blobs` directory. A blob sync also advances the
//!   *seal* (`blobs.seal`, the highest synced blob's number), so that on the next open a damaged
//!   blob the seal covers is reported instead of being silently dropped with everything after it.
//! - [`Directory::claim`] before sled opens: creates the directory `0700`, takes an exclusive
//!   lock on `durable.lock` held for the store's whole life (sled's own lock is released while the
//!   store reopens the database for a snapshot), and checks every blob against its checksum.
//! - [`Directory::settle`] after every open: `0600` on every file, then syncs `conf`, `db`, the
//!   snapshot's rename (the directory) and the directory's own entry in its parent.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

const LOCK_FILE: &str = "durable.lock";
const SEAL_FILE: &str = "blobs.seal";

/// An owned database directory.
#[derive(Debug)]
pub(super) struct Directory {
    path: PathBuf,
    /// Held for the store's whole life: the exclusive lock is on this file.
    _lock: File,
    /// Blob files already synced (by name).
    synced_blobs: HashSet<OsString>,
    /// The highest blob number covered by the seal.
    sealed: u64,
}

impl Directory {
    /// Creates (private) and locks directory `path`, then checks its blob files. Call before sled
    /// opens it.
    pub(super) fn claim(path: &Path) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| at(path, "cannot create the database directory", &e))?;
        let lock_path = path.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| at(&lock_path, "cannot open the lock file", &e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked {
                    path: path.display().to_string(),
                    detail: format!(
                        "{} is locked by another process, or by another open store in this one",
                        lock_path.display()
                    ),
                });
            }
            Err(fs::TryLockError::Error(e)) => {
                return Err(at(&lock_path, "cannot lock", &e));
            }
        }
        let sealed = read_seal(path)?;
        let synced_blobs = check_blobs(path, sealed)?;
        Ok(Self { path: path.to_owned(), _lock: lock, synced_blobs, sealed })
    }

    /// Makes the directory's files private and syncs what sled's open created or renamed.
    pub(super) fn settle(&mut self) -> Result<(), StoreError> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(|e| at(&self.path, "cannot list", &e))? {
            let entry = entry.map_err(|e| at(&self.path, "cannot list", &e))?;
            names.push(entry.path());
        }
        for file in &names {
            let private = if file.is_dir() { 0o700 } else { 0o600 };
            fs::set_permissions(file, fs::Permissions::from_mode(private))
                .map_err(|e| at(file, "cannot make private", &e))?;
            if file.is_file() {
                sync_file(file)?;
            }
        }
        let blobs = self.path.join("blobs");
        if blobs.is_dir() {
            self.sync_blobs()?;
            sync_dir(&blobs)?;
        }
        sync_dir(&self.path)?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
        Ok(())
    }

    /// Syncs the log file and every blob written since the last call. Call after sled's flush.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        sync_file(&self.path.join("db"))?;
        self.sync_blobs()
    }

    fn sync_blobs(&mut self) -> Result<(), StoreError> {
        let blobs = self.path.join("blobs");
        let listing = match fs::read_dir(&blobs) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(at(&blobs, "cannot list", &e)),
        };
        let mut present = HashSet::new();
        let mut highest = None;
        for entry in listing {
            let entry = entry.map_err(|e| at(&blobs, "cannot list", &e))?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                let file = entry.path();
                match sync_file(&file) {
                    Ok(()) => {}
                    // sled removed it meanwhile: nothing left to make durable.
                    Err(_) if !file.exists() => continue,
                    Err(e) => return Err(e),
                }
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                    .map_err(|e| at(&file, "cannot make private", &e))?;
                if let Some(n) = blob_number(&name) {
                    highest = highest.max(Some(n));
                }
            }
            present.insert(name);
        }
        self.synced_blobs = present;
        if let Some(n) = highest {
            sync_dir(&blobs)?;
            if n > self.sealed {
                write_seal(&self.path, n)?;
                self.sealed = n;
            }
        }
        Ok(())
    }
}

fn at(path: &Path, what: &str, e: &io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn sync_file(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|f| f.sync_data()).map_err(|e| at(path, "cannot sync", &e))
}

fn sync_dir(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| at(path, "cannot sync directory", &e))
}

fn blob_number(name: &std::ffi::OsStr) -> Option<u64> {
    name.to_str()?.parse().ok()
}

fn read_seal(dir: &Path) -> Result<u64, StoreError> {
    let path = dir.join(SEAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(at(&path, "cannot read", &e)),
    };
    // Eight bytes of number, then their checksum.
    let damaged = || StoreError::Damaged {
        file: path.display().to_string(),
        detail: "the seal file is not 12 bytes with a valid checksum".into(),
    };
    let (n, crc) = bytes.split_at_checked(8).ok_or_else(damaged)?;
    let n: [u8; 8] = n.try_into().map_err(|_| damaged())?;
    if crc != crc32fast::hash(&n).to_le_bytes() {
        return Err(damaged());
    }
    Ok(u64::from_le_bytes(n))
}

/// Replaces the seal atomically: a new file, synced, renamed over the old one, directory synced.
fn write_seal(dir: &Path, n: u64) -> Result<(), StoreError> {
    let path = dir.join(SEAL_FILE);
    let fresh = dir.join(format!("{SEAL_FILE}.new"));
    let mut bytes = n.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32fast::hash(&n.to_le_bytes()).to_le_bytes());
    let write = || -> io::Result<()> {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&fresh)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        fs::rename(&fresh, &path)
    };
    write().map_err(|e| at(&path, "cannot write", &e))?;
    sync_dir(dir)
}

/// Checks every blob file against the checksum sled wrote at its start. A damaged blob that the
/// seal covers was acknowledged: report it. One past the seal was never acknowledged (a power
/// cut before its sync): sled's open discards it with the log entries after it.
fn check_blobs(dir: &Path, sealed: u64) -> Result<HashSet<OsString>, StoreError> {
    let blobs = dir.join("blobs");
    let mut present = HashSet::new();
    let listing = match fs::read_dir(&blobs) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(present),
        Err(e) => return Err(at(&blobs, "cannot list", &e)),
    };
    for entry in listing {
        let entry = entry.map_err(|e| at(&blobs, "cannot list", &e))?;
        let name = entry.file_name();
        let file = entry.path();
        let covered = blob_number(&name).is_some_and(|n| n <= sealed);
        if covered {
            if let Some(problem) = blob_problem(&file)? {
                return Err(StoreError::Damaged {
                    file: file.display().to_string(),
                    detail: format!(
                        "{problem}; this blob holds acknowledged data that sled would silently \
                         drop, with every later write. Restore the database directory from a \
                         backup"
                    ),
                });
            }
            present.insert(name);
        }
    }
    Ok(present)
}

/// What is wrong with a blob file: sled's layout is a CRC-32 of the rest, then a kind byte, then
/// the data.
fn blob_problem(file: &Path) -> Result<Option<String>, StoreError> {
    let mut bytes = Vec::new();
    File::open(file)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| at(file, "cannot read", &e))?;
    let Some((crc, rest)) = bytes.split_at_checked(4) else {
        return Ok(Some(format!("it is {} bytes long, too short for a blob", bytes.len())));
    };
    if rest.is_empty() {
        return Ok(Some("it has no kind byte".into()));
    }
    let crc: [u8; 4] =
        crc.try_into().map_err(|_| at(file, "cannot read", &io::Error::other("")))?;
    if u32::from_le_bytes(crc) != crc32fast::hash(rest) {
        return Ok(Some("its checksum does not match its contents".into()));
    }
    Ok(None)
}
