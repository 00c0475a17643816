//! What sled 0.34 leaves undone on disk, done here: power-loss durability, exclusive ownership,
//! private permissions and damage detection for a database directory.
//!
//! sled's `flush` makes its log durable with `sync_file_range`, which does not persist a grown
//! file's size; it writes large log entries to `blobs/<lsn>` files that it never syncs; it writes
//! `conf` without a sync and never syncs a directory. [`Directory`] fills each gap:
//!
//! - [`Directory::sync`] after every sled flush: `fdatasync` of `db`, then of every complete blob
//!   file written since the last sync and of the `blobs` directory. Synced blobs are listed in
//!   the *seal* (`blobs.seal`), so that on the next open a damaged blob the seal lists is reported
//!   instead of being silently dropped by sled with every write after it. A blob still being
//!   written (its checksum does not match yet) belongs to a later flush and waits for it: sled's
//!   flush returns only once every blob below its log position is complete.
//! - [`Directory::claim`] before sled opens: creates the directory `0700`, takes an exclusive
//!   lock on `durable.lock` held for the store's whole life (sled's own lock is released while the
//!   store reopens the database for a snapshot), and checks `conf`, the snapshot sled will read
//!   and every blob the seal lists against its checksum.
//! - The *flush mark*: sled's recovery takes a damaged log entry for a write torn by a crash and
//!   silently drops it with everything after it, so a flipped byte in `db` would roll back
//!   acknowledged writes. Every flush therefore writes an increasing number (its epoch) into the
//!   database before sled's flush, and once `db` is synced records it in `db.seal`
//!   ([`Directory::flushed`]). On open, a database whose mark is below the seal's lost
//!   acknowledged writes: it is reported ([`Directory::check_mark`]). The seal is written after
//!   the sync and is not synced itself: it only ever understates what `db` holds, so a power cut
//!   can weaken the check (an older seal) but never make it fail on an undamaged database.
//! - [`Directory::settle`] after every open: `0600` on every file, then syncs `conf`, `db`, the
//!   snapshot's rename (the directory) and the directory's own entry in its parent.
//!
//! Over 400 lines on purpose: syncs, the directory lock, flush marks and the free-space reserve
//! all work on the one directory handle this module owns.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::store::StoreError;

const LOCK_FILE: &str = "durable.lock";
const SEAL_FILE: &str = "blobs.seal";
const MARK_FILE: &str = "db.seal";
/// `db.seal`: two slots of [`SLOT`] bytes, written alternately, so a write torn by a crash can
/// only damage the slot being written. A slot is the epoch (u64 LE), its CRC-32 (u32 LE) and four
/// zero bytes; all zeros is an unused slot.
const SLOT: usize = 16;

/// An owned database directory.
#[derive(Debug)]
pub(super) struct Directory {
    path: PathBuf,
    /// Held for the store's whole life: the exclusive lock is on this file.
    _lock: File,
    /// Blob files already synced, and listed in the seal (by name).
    synced_blobs: BTreeSet<OsString>,
    /// `db.seal`, open for writing its slots.
    marks: File,
    /// The highest epoch in `db.seal`: `db` holds a flush mark at least this high.
    flushed: u64,
    /// The last epoch handed out by [`Directory::next_epoch`].
    epoch: u64,
    /// `db`, kept open between flushes for its `fdatasync` (reopened after each open of sled).
    log: Option<File>,
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
        check_conf(path)?;
        check_snapshot(path)?;
        let sealed = read_seal(path)?;
        let synced_blobs = check_blobs(path, &sealed)?;
        let (marks, flushed) = open_marks(path)?;
        Ok(Self {
            path: path.to_owned(),
            _lock: lock,
            synced_blobs,
            marks,
            flushed,
            epoch: flushed,
            log: None,
        })
    }

    /// Checks the flush mark sled recovered (`None`: the database has none yet) against the
    /// seal. Call after every open.
    pub(super) fn check_mark(&mut self, mark: Option<u64>) -> Result<(), StoreError> {
        let mark = mark.unwrap_or(0);
        if mark < self.flushed {
            return Err(StoreError::Damaged {
                file: self.path.join("db").display().to_string(),
                detail: format!(
                    "the log ends before the last acknowledged flush (flush mark {mark}, {} \
                     recorded in {MARK_FILE}): sled stopped reading at a damaged entry and would \
                     silently drop every write after it. Restore the database directory from a \
                     backup",
                    self.flushed
                ),
            });
        }
        self.epoch = self.epoch.max(mark);
        Ok(())
    }

    /// The epoch of a new flush: higher than every mark written before.
    pub(super) fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Records that `db` durably holds the flush mark `epoch`. Call after [`Directory::sync`].
    pub(super) fn flushed(&mut self, epoch: u64) -> Result<(), StoreError> {
        use std::os::unix::fs::FileExt;
        if epoch <= self.flushed {
            return Ok(());
        }
        let slot = u64::try_from(SLOT).unwrap_or(16) * (epoch % 2);
        let path = self.path.join(MARK_FILE);
        self.marks
            .write_all_at(&mark_slot(epoch), slot)
            .map_err(|e| at(&path, "cannot write", &e))?;
        self.flushed = epoch;
        Ok(())
    }

    /// Makes the directory's files private and syncs what sled's open created or renamed.
    pub(super) fn settle(&mut self) -> Result<(), StoreError> {
        self.log = None;
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
                // At open, a file may be new: sync its metadata too.
                sync_all(file)?;
            }
        }
        let blobs = self.path.join("blobs");
        if blobs.is_dir() {
            self.sync_blobs()?;
            sync_all(&blobs)?;
        }
        sync_all(&self.path)?;
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_all(parent)?;
        }
        Ok(())
    }

    /// Syncs the log file and every blob written since the last call. Call after sled's flush.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        let path = self.path.join("db");
        let log = match self.log.take() {
            Some(log) => log,
            None => File::open(&path).map_err(|e| at(&path, "cannot sync", &e))?,
        };
        log.sync_data().map_err(|e| at(&path, "cannot sync", &e))?;
        self.log = Some(log);
        self.sync_blobs()
    }

    fn sync_blobs(&mut self) -> Result<(), StoreError> {
        let blobs = self.path.join("blobs");
        let listing = match fs::read_dir(&blobs) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(at(&blobs, "cannot list", &e)),
        };
        let mut present = BTreeSet::new();
        for entry in listing {
            let entry = entry.map_err(|e| at(&blobs, "cannot list", &e))?;
            let name = entry.file_name();
            if !self.synced_blobs.contains(&name) {
                let file = entry.path();
                match blob_problem(&file) {
                    Ok(None) => {}
                    // Still being written, for a later flush.
                    Ok(Some(_)) => continue,
                    // sled removed it meanwhile: nothing left to make durable.
                    Err(_) if !file.exists() => continue,
                    Err(e) => return Err(e),
                }
                match sync_file(&file) {
                    Ok(()) => {}
                    Err(_) if !file.exists() => continue,
                    Err(e) => return Err(e),
                }
                fs::set_permissions(&file, fs::Permissions::from_mode(0o600))
                    .map_err(|e| at(&file, "cannot make private", &e))?;
            }
            present.insert(name);
        }
        // New blobs, or blobs sled removed (their records were replaced): the seal lists exactly
        // the complete blobs on disk, so that one missing on the next open is known to be lost.
        if present != self.synced_blobs {
            sync_all(&blobs)?;
            write_seal(&self.path, &present)?;
            self.synced_blobs = present;
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

/// `fsync`: a file's data and metadata, or a directory's entries.
fn sync_all(path: &Path) -> Result<(), StoreError> {
    File::open(path).and_then(|f| f.sync_all()).map_err(|e| at(path, "cannot sync", &e))
}

fn read_seal(dir: &Path) -> Result<BTreeSet<OsString>, StoreError> {
    let path = dir.join(SEAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(e) => return Err(at(&path, "cannot read", &e)),
    };
    // The names, one per line, then the checksum of those lines.
    let damaged = || StoreError::Damaged {
        file: path.display().to_string(),
        detail: "the list of synced blobs does not match its checksum. Restore the database \
                 directory from a backup"
            .into(),
    };
    let (names, crc) = bytes.split_last_chunk::<4>().ok_or_else(damaged)?;
    if u32::from_le_bytes(*crc) != crc32fast::hash(names) {
        return Err(damaged());
    }
    let names = std::str::from_utf8(names).map_err(|_| damaged())?;
    Ok(names.lines().map(OsString::from).collect())
}

/// Replaces the seal atomically: a new file, synced, renamed over the old one, directory synced.
fn write_seal(dir: &Path, names: &BTreeSet<OsString>) -> Result<(), StoreError> {
    let path = dir.join(SEAL_FILE);
    let fresh = dir.join(format!("{SEAL_FILE}.new"));
    let mut bytes = Vec::new();
    for name in names {
        bytes.extend_from_slice(name.as_encoded_bytes());
        bytes.push(b'\n');
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let write = || -> io::Result<()> {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&fresh)?;
        f.write_all(&bytes)?;
        f.sync_data()?;
        fs::rename(&fresh, &path)
    };
    write().map_err(|e| at(&path, "cannot write", &e))?;
    sync_all(dir)
}

/// Checks every blob file against the checksum sled wrote at its start. A damaged blob that the
/// seal lists was synced, so a power cut cannot have damaged it: report it. One the seal does not
/// list was never acknowledged (a cut before its sync): sled's open discards it with the log
/// entries after it.
fn check_blobs(dir: &Path, sealed: &BTreeSet<OsString>) -> Result<BTreeSet<OsString>, StoreError> {
    let blobs = dir.join("blobs");
    let mut present = BTreeSet::new();
    let listing = match fs::read_dir(&blobs) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(present),
        Err(e) => return Err(at(&blobs, "cannot list", &e)),
    };
    let damaged = |file: &Path, problem: &str| StoreError::Damaged {
        file: file.display().to_string(),
        detail: format!(
            "{problem}; this blob holds acknowledged data that sled would silently drop, with \
             every later write. Restore the database directory from a backup"
        ),
    };
    // A listed blob that is missing is not reported: sled removes a blob once nothing needs it,
    // and a power cut between that removal reaching the disk and the next seal would make a
    // sound database refuse to open. Emptied or altered blobs are what the list catches.
    for entry in listing {
        let entry = entry.map_err(|e| at(&blobs, "cannot list", &e))?;
        let name = entry.file_name();
        let file = entry.path();
        if sealed.contains(&name) {
            if let Some(problem) = blob_problem(&file)? {
                return Err(damaged(&file, &problem));
            }
            present.insert(name);
        }
    }
    Ok(present)
}

/// Checks sled's `conf` against the CRC-32 sled appends: sled only warns about a mismatch and
/// then misreads the settings ("created using a sled version earlier than 0.29", or corruption
/// blamed on `db`). A `conf` of 8 bytes or less sled replaces with its defaults, the only
/// settings this store uses: harmless.
fn check_conf(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join("conf");
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(at(&path, "cannot read", &e)),
    };
    if bytes.len() <= 8 {
        return Ok(());
    }
    match bytes.split_last_chunk::<4>() {
        Some((body, crc)) if u32::from_le_bytes(*crc) == crc32fast::hash(body) => Ok(()),
        _ => Err(StoreError::Damaged {
            file: path.display().to_string(),
            detail: "sled's configuration does not match its checksum. Restore the database \
                     directory from a backup"
                .into(),
        }),
    }
}

/// Checks the snapshot sled will read (the last `snap.*` by name, as sled picks it) against its
/// CRC-32: sled would report the mismatch as corrupted data in `db`.
///
/// A `snap.<lsn>.generating` is a snapshot whose open was cut short by a crash before sled renamed
/// it into place (and so before sled removed the previous snapshot or reused the log it covers).
/// sled would read it all the same, as the newest, and refuse to open when it is torn: it is
/// removed instead, and sled reads the previous snapshot and replays the log.
fn check_snapshot(dir: &Path) -> Result<(), StoreError> {
    let mut snapshots = Vec::new();
    let mut unfinished = false;
    for entry in fs::read_dir(dir).map_err(|e| at(dir, "cannot list", &e))? {
        let entry = entry.map_err(|e| at(dir, "cannot list", &e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            let path = entry.path();
            fs::remove_file(&path).map_err(|e| at(&path, "cannot remove", &e))?;
            unfinished = true;
        } else if name.starts_with("snap.") && !name.ends_with(".in___motion") {
            snapshots.push(entry.path());
        }
    }
    if unfinished {
        sync_all(dir)?;
    }
    snapshots.sort();
    let Some(path) = snapshots.pop() else { return Ok(()) };
    let bytes = fs::read(&path).map_err(|e| at(&path, "cannot read", &e))?;
    // The snapshot, its length (u64) and the CRC-32 of the snapshot.
    let intact = bytes.len() > 12
        && bytes.split_last_chunk::<4>().is_some_and(|(rest, crc)| {
            u32::from_le_bytes(*crc) == crc32fast::hash(&rest[..rest.len() - 8])
        });
    if intact {
        return Ok(());
    }
    Err(StoreError::Damaged {
        file: path.display().to_string(),
        detail: "sled's snapshot does not match its checksum. Restore the database directory \
                 from a backup"
            .into(),
    })
}

/// Opens (creating it when missing) `db.seal` and reads the highest epoch it records.
fn open_marks(dir: &Path) -> Result<(File, u64), StoreError> {
    let path = dir.join(MARK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(|e| at(&path, "cannot open", &e))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| at(&path, "cannot read", &e))?;
    let damaged = |what: &str| StoreError::Damaged {
        file: path.display().to_string(),
        detail: format!(
            "{what}. It records the last flush of the database; restore the database directory \
             from a backup"
        ),
    };
    if bytes.is_empty() {
        // New (or created just before a crash): no flush recorded yet. Both slots, unused.
        file.write_all(&[0; 2 * SLOT]).map_err(|e| at(&path, "cannot write", &e))?;
        return Ok((file, 0));
    }
    if bytes.len() != 2 * SLOT {
        return Err(damaged(&format!("it is {} bytes long instead of {}", bytes.len(), 2 * SLOT)));
    }
    let mut flushed = 0;
    for slot in bytes.chunks_exact(SLOT) {
        if slot.iter().all(|&b| b == 0) {
            continue;
        }
        let epoch = u64::from_le_bytes(slot[..8].try_into().map_err(|_| damaged("unreadable"))?);
        if slot != mark_slot(epoch) {
            return Err(damaged("a slot does not match its checksum"));
        }
        flushed = flushed.max(epoch);
    }
    Ok((file, flushed))
}

fn mark_slot(epoch: u64) -> [u8; SLOT] {
    let mut slot = [0; SLOT];
    slot[..8].copy_from_slice(&epoch.to_le_bytes());
    slot[8..12].copy_from_slice(&crc32fast::hash(&epoch.to_le_bytes()).to_le_bytes());
    slot
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

/// Free space the store leaves untouched on the database's file system: sled stops for good
/// (its writes hang) when the disk fills under it, so the store refuses a write that would come
/// close to that instead, with [`StoreError::Full`], and accepts it again once space is freed.
pub(super) const RESERVE: u64 = 8 << 20;

/// Looks at the free space before the writes: another process may fill the disk at any time.
/// A look serves the writes of the next [`Room::FRESH`] (less what they claim): at the rate of
/// 8 GB/s, another process cannot write the reserve's 8 MiB in that time, and a `statvfs`
/// per write was a few percent of a loaded runtime's CPU.
#[derive(Debug)]
pub(super) struct Room {
    path: PathBuf,
    /// The last look: when, the bytes free then, and the bytes claimed since.
    last: Mutex<Option<(Instant, u64, u64)>>,
}

impl Room {
    /// How long a look at the free space serves.
    const FRESH: Duration = Duration::from_millis(1);

    pub(super) fn new(path: &Path) -> Self {
        Self { path: path.to_owned(), last: Mutex::new(None) }
    }

    /// Makes sure a write of `bytes` leaves the reserve free.
    pub(super) fn claim(&self, bytes: usize) -> Result<(), StoreError> {
        // sled may write a value twice (log and, later, a rewritten page), plus headers.
        let need = u64::try_from(bytes).unwrap_or(u64::MAX).saturating_mul(2).saturating_add(512);
        let mut last = self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((looked, free, claimed)) = last.as_mut()
            && looked.elapsed() < Self::FRESH
            && free.saturating_sub(RESERVE).saturating_sub(*claimed) >= need
        {
            *claimed = claimed.saturating_add(need);
            return Ok(());
        }
        let stat = rustix::fs::statvfs(&self.path)
            .map_err(|e| at(&self.path, "cannot read the free space of", &e.into()))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        *last = None;
        if free.saturating_sub(RESERVE) < need {
            return Err(StoreError::Full(format!(
                "{free} bytes free on the file system of {}, and the store keeps {RESERVE} in \
                 reserve: free some space",
                self.path.display()
            )));
        }
        *last = Some((Instant::now(), free, need));
        Ok(())
    }
}
