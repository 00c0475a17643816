//! Damaged database files: every kind of file a sled store keeps (`db`, `conf`, `snap.*`, blob
//! files, `blobs.seal`) is damaged in a copy of a closed database, which is then reopened. The
//! outcome must be one of two: the store refuses (at open, or at the first read of what is
//! damaged) with [`StoreError::Damaged`] naming the damaged file and saying what to do, or every
//! record acknowledged before the damage reads back identically (the damage was harmless).
//! A store that opens and serves fewer or older records — a silent rollback — fails the test.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use durable::store::{SledStore, Space, Store, StoreError};

/// One acknowledged record.
struct Record {
    space: Space,
    key: Vec<u8>,
    value: Vec<u8>,
}

/// A value that does not compress and differs per record.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn records() -> Vec<Record> {
    let mut out = Vec::new();
    for i in 0u64..40 {
        let value = noise(i, 100 + usize::try_from(i).unwrap() * 7);
        out.push(Record { space: Space::Instances, key: format!("small-{i:02}").into(), value });
    }
    for i in 0u64..4 {
        // Above sled's blob threshold: each lands in a file of its own under `blobs/`.
        let value = noise(1000 + i, 200 * 1024 + usize::try_from(i).unwrap() * 1024);
        out.push(Record { space: Space::Instances, key: format!("large-{i}").into(), value });
    }
    for i in 0u64..10 {
        let key = [i.to_be_bytes().as_slice(), b"timer"].concat();
        out.push(Record { space: Space::Timers, key, value: noise(2000 + i, 16) });
    }
    out
}

fn scratch(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir =
        exe.parent().and_then(Path::parent).unwrap().join("scratch").join("damaged").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.parent().unwrap()).unwrap();
    dir
}

/// A closed database holding [`records`], all acknowledged by a flush. With `snapshotted`, it
/// was opened and closed once more, so sled wrote a snapshot covering them; without, they are
/// only in sled's log, after the last snapshot.
fn pristine(name: &str, snapshotted: bool) -> PathBuf {
    let dir = scratch(&format!("{name}-pristine"));
    let store = SledStore::open(&dir).unwrap();
    for r in records() {
        store.put(r.space, &r.key, &r.value).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    if snapshotted {
        let store = SledStore::open(&dir).unwrap();
        store.flush().unwrap();
        drop(store);
    }
    wait_released(&dir);
    dir
}

/// Waits until sled's background thread has let go of `db` (its lock) after a store was dropped.
fn wait_released(dir: &Path) {
    let db = fs::File::open(dir.join("db")).unwrap();
    for _ in 0..500 {
        if db.try_lock().is_ok() {
            db.unlock().unwrap();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("sled still holds {} after 5 s", dir.display());
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn flip(file: &Path, offset: u64) {
    let mut bytes = fs::read(file).unwrap();
    let i = usize::try_from(offset).unwrap();
    bytes[i] ^= 0x5A;
    fs::write(file, bytes).unwrap();
}

fn truncate(file: &Path, len: u64) {
    fs::OpenOptions::new().write(true).open(file).unwrap().set_len(len).unwrap();
}

fn blob_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> =
        fs::read_dir(dir.join("blobs")).unwrap().map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

fn snapshot_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap.")))
        .collect();
    out.sort();
    out
}

/// What a reopened damaged copy did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The open failed with `Damaged` naming the file.
    Refused,
    /// The open succeeded; reading a damaged record failed with `Damaged` naming the file, and
    /// every record that could be read was intact.
    RefusedOnRead,
    /// Everything reads back identically.
    Intact,
}

/// Checks that `e` is `Damaged`, names `file` and says what to do.
fn assert_reports(e: &StoreError, file: &Path, what: &str) {
    let text = e.to_string();
    let StoreError::Damaged { file: named, .. } = e else {
        panic!("{what}: expected Damaged naming {}, got {e:?}", file.display());
    };
    assert_eq!(Path::new(named), file, "{what}: names the wrong file: {text}");
    assert!(text.contains(&file.display().to_string()), "{what}: no path in `{text}`");
    assert!(text.contains("backup"), "{what}: does not say what to do: `{text}`");
}

/// Reopens the damaged copy `dir` and checks that the damage to `file` is either reported or
/// harmless: never a silent rollback.
fn reopen_and_check(dir: &Path, file: &Path, what: &str) -> Outcome {
    let store = match SledStore::open(dir) {
        Ok(s) => s,
        Err(e) => {
            assert_reports(&e, file, what);
            return Outcome::Refused;
        }
    };
    let mut outcome = Outcome::Intact;
    for r in records() {
        match store.get(r.space, &r.key) {
            Ok(Some(v)) => assert!(
                v == r.value,
                "{what}: silent damage: {} reads back different bytes",
                String::from_utf8_lossy(&r.key)
            ),
            Ok(None) => panic!(
                "{what}: silent rollback: acknowledged record {} is missing",
                String::from_utf8_lossy(&r.key)
            ),
            Err(e) => {
                assert_reports(&e, file, what);
                outcome = Outcome::RefusedOnRead;
            }
        }
    }
    if outcome == Outcome::Intact {
        // Nothing extra appeared either.
        let n = store.scan(Space::Instances, None, 1000).unwrap().len()
            + store.scan(Space::Timers, None, 1000).unwrap().len();
        assert_eq!(n, records().len(), "{what}: the record count changed");
    }
    outcome
}

/// Copies `pristine`, damages its file `name` (relative to the directory) with `damage` and
/// checks the reopened copy.
fn damage_and_check(
    pristine: &Path,
    copy: &Path,
    file: &Path,
    what: &str,
    damage: impl FnOnce(&Path),
) -> Outcome {
    copy_dir(pristine, copy);
    let target = copy.join(file.strip_prefix(pristine).unwrap());
    damage(&target);
    let outcome = reopen_and_check(copy, &target, what);
    println!("{what}: {outcome:?}");
    outcome
}

/// A flipped byte anywhere in `db` — start, middle, end and a sweep in between, with the
/// records only in the log and with them under a snapshot — is reported naming `db`, or is in a
/// region sled does not read (every record reads back). In particular a flip in the log after
/// the last snapshot, which sled's recovery takes for a torn write and silently cuts the log at,
/// is reported.
#[test]
fn a_flipped_byte_in_db_is_reported_or_harmless() {
    for snapshotted in [false, true] {
        let name = if snapshotted { "db-snap" } else { "db-log" };
        let pristine = pristine(name, snapshotted);
        let db = pristine.join("db");
        let bytes = fs::read(&db).unwrap();
        let len = u64::try_from(bytes.len()).unwrap();
        // sled's segment is mostly zeros after what it wrote: flip densely where it wrote.
        let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let used = u64::try_from(used).unwrap();
        let mut offsets = vec![len / 2, len - 2, len - 1];
        offsets.extend((0..160).map(|i| used * i / 160));
        offsets.sort_unstable();
        offsets.dedup();
        let (mut refused, mut intact) = (0, 0);
        for offset in offsets {
            let what = format!("{name}: db byte {offset} of {len} flipped");
            match damage_and_check(&pristine, &scratch(name), &db, &what, |f| flip(f, offset)) {
                Outcome::Intact => intact += 1,
                _ => refused += 1,
            }
        }
        println!("{name}: {refused} reported, {intact} harmless");
        assert!(refused > 0, "{name}: no flip in db was noticed at all");
    }
}

/// A flipped byte of `conf`, or a `conf` cut short, refuses the open naming `conf`: sled would
/// otherwise say "created using a sled version earlier than 0.29" or blame `db`. A `conf` cut to
/// 8 bytes or less is replaced by sled's defaults, the only settings the store uses: harmless,
/// and every record reads back.
#[test]
fn a_damaged_conf_is_reported() {
    let pristine = pristine("conf", false);
    let conf = pristine.join("conf");
    let len = fs::metadata(&conf).unwrap().len();
    let copy = scratch("conf");
    for offset in [0, 1, len / 2, len - 5, len - 1] {
        let what = format!("conf byte {offset} of {len} flipped");
        let outcome = damage_and_check(&pristine, &copy, &conf, &what, |f| flip(f, offset));
        assert_eq!(outcome, Outcome::Refused, "{what}");
    }
    for keep in [9, len / 2, len - 4, len - 1] {
        let what = format!("conf truncated to {keep} of {len} bytes");
        let outcome = damage_and_check(&pristine, &copy, &conf, &what, |f| truncate(f, keep));
        assert_eq!(outcome, Outcome::Refused, "{what}");
    }
    for keep in [0, 8] {
        let what = format!("conf truncated to {keep} of {len} bytes");
        let outcome = damage_and_check(&pristine, &copy, &conf, &what, |f| truncate(f, keep));
        assert_eq!(outcome, Outcome::Intact, "{what}");
    }
}

/// An emptied blob file, one cut short and one with a flipped byte (in its checksum, its kind
/// byte or its data) refuse the open naming that file, whether the blob's record is
/// only in sled's log or under a snapshot: sled would silently drop the record (and, in the log,
/// every write after it).
#[test]
fn a_damaged_blob_file_is_reported() {
    for snapshotted in [false, true] {
        let name = if snapshotted { "blob-snap" } else { "blob-log" };
        let pristine = pristine(name, snapshotted);
        let blobs = blob_files(&pristine);
        assert!(blobs.len() >= 4, "the large records should be blob files: {blobs:?}");
        let copy = scratch(name);
        for (i, blob) in blobs.iter().enumerate() {
            let len = fs::metadata(blob).unwrap().len();
            let file = blob.file_name().unwrap().to_string_lossy().into_owned();
            let what = format!("{name}: blob {file} emptied");
            let outcome = damage_and_check(&pristine, &copy, blob, &what, |f| truncate(f, 0));
            assert_eq!(outcome, Outcome::Refused, "{what}");
            let what = format!("{name}: blob {file} cut short");
            let outcome = damage_and_check(&pristine, &copy, blob, &what, |f| truncate(f, len / 2));
            assert_eq!(outcome, Outcome::Refused, "{what}");
            let offset = [0, 4, len / 2, len - 1][i % 4];
            let what = format!("{name}: blob {file} byte {offset} of {len} flipped");
            let outcome = damage_and_check(&pristine, &copy, blob, &what, |f| flip(f, offset));
            assert_eq!(outcome, Outcome::Refused, "{what}");
            // A removed blob is not checked: sled removes blobs itself, and a power cut between
            // such a removal and the next seal must not make a sound database refuse to open
            // (a documented limit).
        }
    }
}

/// A damaged `blobs.seal` or `db.seal` (flipped byte, cut short) refuses the open naming it:
/// without a trustworthy list of synced blobs a damaged blob could not be told from an unsynced
/// one, and without the last flush's mark a log cut short could not be told from a whole one.
/// An emptied `db.seal` only loses that check (as on a database made before it existed): every
/// record reads back.
#[test]
fn a_damaged_seal_is_reported() {
    let pristine = pristine("seal", false);
    let copy = scratch("seal");
    for name in ["blobs.seal", "db.seal"] {
        let seal = pristine.join(name);
        let len = fs::metadata(&seal).unwrap().len();
        let bytes = fs::read(&seal).unwrap();
        // Every byte of db.seal's used slot; a sample of blobs.seal.
        let offsets: Vec<u64> = if name == "db.seal" {
            (0..len)
                .filter(|&i| bytes[usize::try_from(i / 16 * 16).unwrap()..][..12] != [0; 12])
                .collect()
        } else {
            vec![0, len / 2, len - 1]
        };
        assert!(!offsets.is_empty(), "{name} records nothing");
        for offset in offsets {
            let what = format!("{name} byte {offset} of {len} flipped");
            let outcome = damage_and_check(&pristine, &copy, &seal, &what, |f| flip(f, offset));
            assert_eq!(outcome, Outcome::Refused, "{what}");
        }
        let cuts = if name == "db.seal" { vec![3, len / 2, len - 1] } else { vec![0, 3, len - 1] };
        for keep in cuts {
            let what = format!("{name} truncated to {keep} of {len} bytes");
            let outcome = damage_and_check(&pristine, &copy, &seal, &what, |f| truncate(f, keep));
            assert_eq!(outcome, Outcome::Refused, "{what}");
        }
    }
    let seal = pristine.join("db.seal");
    let what = "db.seal emptied";
    let outcome = damage_and_check(&pristine, &copy, &seal, what, |f| truncate(f, 0));
    assert_eq!(outcome, Outcome::Intact, "{what}");
}

/// A flipped byte or a truncation of sled's snapshot file (`snap.*`) refuses the open naming it.
#[test]
fn a_damaged_snapshot_is_reported() {
    let pristine = pristine("snap", true);
    let snaps = snapshot_files(&pristine);
    let snap = snaps.last().expect("a snapshot file after a reopen");
    let len = fs::metadata(snap).unwrap().len();
    let copy = scratch("snap");
    for offset in [0, len / 2, len - 1] {
        let what = format!("snapshot byte {offset} of {len} flipped");
        let outcome = damage_and_check(&pristine, &copy, snap, &what, |f| flip(f, offset));
        assert_eq!(outcome, Outcome::Refused, "{what}");
    }
    let what = format!("snapshot truncated to 0 of {len} bytes");
    let outcome = damage_and_check(&pristine, &copy, snap, &what, |f| truncate(f, 0));
    assert_eq!(outcome, Outcome::Refused, "{what}");
}

/// A snapshot left unfinished by a crash while sled was opening (`snap.<lsn>.generating`, torn)
/// is harmless: sled would read it as the newest snapshot and refuse to open; the store removes
/// it, sled reads the previous snapshot and replays the log, and every record reads back.
#[test]
fn an_unfinished_snapshot_is_harmless() {
    let pristine = pristine("snap-unfinished", true);
    let snaps = snapshot_files(&pristine);
    let snap = snaps.last().expect("a snapshot file after a reopen");
    let copy = scratch("snap-unfinished");
    let what = "a torn snap.FFFFFFFFFFFFFFFF.generating";
    let outcome = damage_and_check(&pristine, &copy, snap, what, |f| {
        let bytes = fs::read(f).unwrap();
        let torn = f.with_file_name("snap.FFFFFFFFFFFFFFFF.generating");
        fs::write(torn, &bytes[..bytes.len() / 2]).unwrap();
    });
    assert_eq!(outcome, Outcome::Intact, "{what}");
    assert!(!copy.join("snap.FFFFFFFFFFFFFFFF.generating").exists());
}
