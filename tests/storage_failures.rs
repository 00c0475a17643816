//! Failed writes and full disks: a failed flush fails exactly the operations that waited on it,
//! with a clear error and without hanging; once space returns, work goes on without a restart;
//! after a failed sync nothing more is acknowledged.
//!
//! The full-disk test mounts a small tmpfs and the sync-failure test injects `EIO` with strace:
//! both need root and strace (`.ci/run` installs it when missing).

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use durable::store::{Layer, SledStore, Store, StoreError};
use durable::{ActivityContext, Ctx, Failure, Runtime, activity, orchestration};
use support::harness::{activity_body, fresh_db};

#[activity]
async fn grow(ctx: ActivityContext, s: String) -> Result<String, String> {
    activity_body(&ctx).await;
    Ok(format!("{s}+"))
}

#[orchestration]
async fn two_grows(ctx: Ctx, s: String) -> Result<String, Failure> {
    let a = ctx.call(grow, s).await?;
    let b = ctx.call(grow, a).await?;
    Ok(b)
}

/// A sled store whose flushes fail (as a full disk) while `failing` is set.
struct FailingFlush {
    inner: SledStore,
    failing: AtomicBool,
}

impl Layer for FailingFlush {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn flush(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Full("injected: no space left on device".into()));
        }
        self.inner.flush()
    }
}

async fn within<T>(what: &str, secs: u64, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .unwrap_or_else(|_| panic!("{what} hung for {secs} s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_fails_its_callers_and_work_resumes_when_it_heals() {
    let db = fresh_db("failing-flush");
    let store =
        Arc::new(FailingFlush { inner: SledStore::open(&db).unwrap(), failing: false.into() });
    let rt = Runtime::builder(&db).store(store.clone()).orchestration(two_grows).open().await;
    let rt = rt.unwrap();
    store.failing.store(true, Ordering::SeqCst);
    // A start while flushes fail is refused, promptly, saying why.
    let refused = within("start", 10, rt.start(two_grows, "refused", "a".into())).await;
    let Err(err) = refused else { panic!("a start that is not durable must not be acknowledged") };
    assert!(err.to_string().contains("disk is full"), "{err}");
    // An instance in flight makes no acknowledged progress, and does not fail either.
    let pending = within(
        "wait",
        10,
        rt.handle::<two_grows>("refused").wait_timeout(Duration::from_millis(500)),
    )
    .await;
    assert!(pending.is_none() || pending.as_ref().is_some_and(|r| r.is_err()), "{pending:?}");
    // Space returns: the same calls succeed, without a restart.
    store.failing.store(false, Ordering::SeqCst);
    let h = within("start", 10, rt.start(two_grows, "after", "b".into())).await.unwrap();
    assert_eq!(within("wait", 20, h.wait()).await.unwrap(), "b++");
    let h = within("start", 10, rt.start(two_grows, "refused", "a".into())).await.unwrap();
    assert_eq!(within("wait", 20, h.wait()).await.unwrap(), "a++");
    rt.shutdown().await;
}

/// A sled store whose flushes panic while `panicking` is set (as a store with a bug might).
struct PanickingFlush {
    inner: SledStore,
    panicking: AtomicBool,
}

impl Layer for PanickingFlush {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn flush(&self) -> Result<(), StoreError> {
        assert!(!self.panicking.load(Ordering::SeqCst), "injected: the store's flush panics");
        self.inner.flush()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_that_panics_fails_its_callers_and_work_goes_on_once_it_stops() {
    let db = fresh_db("panicking-flush");
    let store =
        Arc::new(PanickingFlush { inner: SledStore::open(&db).unwrap(), panicking: false.into() });
    let rt = Runtime::builder(&db).store(store.clone()).orchestration(two_grows).open().await;
    let rt = rt.unwrap();
    store.panicking.store(true, Ordering::SeqCst);
    let refused = within("start", 10, rt.start(two_grows, "refused", "a".into())).await;
    let Err(err) = refused else { panic!("a start that is not durable must not be acknowledged") };
    assert!(err.to_string().contains("panicked while flushing"), "{err}");
    // The commit thread outlived the panic: once flushes work again, so does everything else.
    store.panicking.store(false, Ordering::SeqCst);
    let h = within("start", 10, rt.start(two_grows, "after", "b".into())).await.unwrap();
    assert_eq!(within("wait", 20, h.wait()).await.unwrap(), "b++");
    rt.shutdown().await;
}

#[orchestration]
async fn naps_then_grows(ctx: Ctx, s: String) -> Result<String, Failure> {
    ctx.sleep(Duration::from_millis(50)).await;
    let a = ctx.call(grow, s).await?;
    Ok(a)
}

/// A sled store whose timer index fails (`Err`) and then panics, once each.
struct FlakyTimers {
    inner: SledStore,
    calls: std::sync::atomic::AtomicU32,
}

impl Layer for FlakyTimers {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn due_timers(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<(Vec<durable::store::Timer>, Option<u64>), StoreError> {
        match self.calls.fetch_add(1, Ordering::SeqCst) {
            1 => Err(StoreError::Io("injected: the timer index cannot be read".into())),
            2 => panic!("injected: the timer index panics"),
            _ => self.inner.due_timers(now_ms, limit),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_fire_after_the_timer_index_failed_and_panicked() {
    let db = fresh_db("flaky-timers");
    let store = Arc::new(FlakyTimers { inner: SledStore::open(&db).unwrap(), calls: 0.into() });
    let rt = Runtime::builder(&db).store(store.clone()).orchestration(naps_then_grows).open().await;
    let rt = rt.unwrap();
    let h = within("start", 10, rt.start(naps_then_grows, "naps", "z".into())).await.unwrap();
    // The timer task reads the index at open, then when the sleep is set (an error), then
    // again a second later (a panic), then a second after that.
    assert_eq!(within("wait", 20, h.wait()).await.unwrap(), "z+");
    assert!(store.calls.load(Ordering::SeqCst) >= 4, "the index was read again after failing");
    rt.shutdown().await;
}

fn mounted_tmpfs(dir: &Path, size: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).into()) }
}

/// Fills the file system holding `dir` with a file there; returns its path.
fn fill(dir: &Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&chunk[..4096]).is_ok() {}
    let _ = f.write_all(&chunk[..1]);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_what_it_must_and_work_goes_on_once_space_returns() {
    let mount = fresh_db("full-disk-mount");
    mounted_tmpfs(&mount, "48m").unwrap_or_else(|e| panic!("cannot mount a tmpfs (root?): {e}"));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&mount);
    let db = mount.join("db");
    let rt = Runtime::builder(&db).orchestration(two_grows).open().await.unwrap();
    let h = rt.start(two_grows, "before", "x".into()).await.unwrap();
    assert_eq!(within("wait", 20, h.wait()).await.unwrap(), "x++");
    let filler = fill(&mount);
    // Big inputs need new space in sled's log: the starts fail, promptly and clearly.
    let big = "y".repeat(512 << 10);
    let mut refused = 0;
    for i in 0..8 {
        match within(
            "start on a full disk",
            30,
            rt.start(two_grows, format!("full-{i}"), big.clone()),
        )
        .await
        {
            Ok(_) => {}
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains("disk is full") || text.contains("No space left"),
                    "unclear error: {text}"
                );
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a full disk refused nothing");
    // Space returns: new work is accepted and completes, in the same process.
    std::fs::remove_file(&filler).unwrap();
    let h =
        within("start after space returned", 30, rt.start(two_grows, "after", "z".into())).await;
    let h = h.unwrap_or_else(|e| panic!("still failing after space returned: {e}"));
    assert_eq!(within("wait", 30, h.wait()).await.unwrap(), "z++");
    for i in 0..8 {
        let h =
            within("start again", 30, rt.start(two_grows, format!("full-{i}"), big.clone())).await;
        let h = h.unwrap_or_else(|e| panic!("full-{i} still failing: {e}"));
        let out = within("wait", 60, h.wait()).await.unwrap();
        assert_eq!(out.len(), big.len() + 2);
    }
    rt.shutdown().await;
    drop(rt);
}

/// After a failed sync, nothing more is acknowledged: the invoice example, with `fdatasync`
/// failing from the second call of each thread on (strace counts per thread; the store syncs
/// with `fsync` at open and with one `fdatasync` per flush, made by the commit thread or by the
/// thread of the code pool that waits for it). The instance needs four flushes (its start and
/// three checkpoints) and at most three threads flush, so a sync fails before it completes.
/// strace logs the syncs and the example's output in the order they happened: no step is
/// reported after the first failed sync, and the example exits with an error naming it instead
/// of reporting a result or hanging.
#[test]
fn after_a_failed_sync_nothing_more_is_acknowledged() {
    let invoice = support::example("invoice");
    let db = fresh_db("eio");
    let log = db.with_extension("strace");
    let out = Command::new("timeout")
        .arg("120")
        .arg("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .args(["-e", "trace=fdatasync,write", "-e", "inject=fdatasync:error=EIO:when=2+"])
        .arg(&invoice)
        .arg("--db")
        .arg(&db)
        .output()
        .expect("run strace (installed by .ci/run)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(124), "hung after a failed sync:\n{stdout}\n{stderr}");
    assert!(!stdout.contains("completed:"), "acknowledged a result after a failed sync:\n{stdout}");
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(
        all.contains("failed sync") || all.contains("Input/output error"),
        "unclear error:\n{all}"
    );
    let traced = std::fs::read_to_string(&log).unwrap();
    let failed = traced
        .lines()
        .position(|l| l.contains("fdatasync(") && l.contains("EIO"))
        .unwrap_or_else(|| panic!("no sync failed:\n{traced}"));
    let acknowledged =
        |l: &&str| l.contains("write(1, \"step") || l.contains("write(1, \"completed");
    assert!(
        !traced.lines().skip(failed + 1).any(|l| acknowledged(&l)),
        "a step was reported after the failed sync:\n{traced}"
    );
}
