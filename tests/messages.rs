//! Events an orchestration sends to another instance (`ctx.send_event`): delivered once, also
//! when the sender's process dies between the delivery and its checkpoint; an unknown or ended
//! receiver is an `Err` the sender handles.

#![allow(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use durable::store::{Appended, Layer, SledStore, Store, StoreError, Write, WriteError};
use durable::{Ctx, Failure, Parked, Runtime, SendError, orchestration};
use support::harness::{fresh_db, open};

/// Collects the `ping` events it receives until one carries 0.
#[orchestration]
async fn receiver(ctx: Ctx, _x: u32) -> Result<Vec<u32>, Failure> {
    let mut got = Vec::new();
    loop {
        let v: u32 = ctx.wait_event("ping").await?;
        if v == 0 {
            return Ok(got);
        }
        got.push(v);
    }
}

/// Sends 7 and then 0 to `to`, then tries an instance that does not exist.
#[orchestration]
async fn sender(ctx: Ctx, to: String) -> Result<String, Failure> {
    ctx.send_event(to.clone(), "ping", &7u32).await?;
    ctx.send_event(to.clone(), "ping", &0u32).await?;
    match ctx.send_event("nobody", "ping", &1u32).await {
        Err(SendError::NotFound(id)) => Ok(format!("sent; no {id}")),
        other => Err(Failure::new(format!("expected NotFound, got {other:?}"))),
    }
}

/// A sled store in which the process "dies" for instance `sender` right after its first event
/// is delivered: every later write of its record fails, as its checkpoint would never be made.
/// The other instances go on (the receiver takes the event meanwhile).
struct DiesAfterSend {
    inner: SledStore,
    sender: &'static str,
    delivered: AtomicBool,
    appends: AtomicU32,
}

impl Layer for DiesAfterSend {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    fn append_once(&self, id: &str, key: &str, body: &[u8]) -> Result<Appended, StoreError> {
        let appended = self.inner.append_once(id, key, body);
        if let Ok(Appended::New(_)) = appended {
            self.appends.fetch_add(1, Ordering::SeqCst);
            self.delivered.store(true, Ordering::SeqCst);
        }
        appended
    }
    fn write(&self, id: &str, write: &Write<'_>) -> Result<u64, WriteError> {
        if id == self.sender && self.delivered.load(Ordering::SeqCst) {
            return Err(WriteError::Store(StoreError::Io("the process died".into())));
        }
        self.inner.write(id, write)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_event_arrives_once_when_the_sender_dies_after_delivering_it() {
    let db = fresh_db("send-crash");
    let store = Arc::new(DiesAfterSend {
        inner: SledStore::open(&db).unwrap(),
        sender: "tx",
        delivered: AtomicBool::new(false),
        appends: AtomicU32::new(0),
    });
    let b = || Runtime::builder(&db).orchestration(receiver).orchestration(sender);
    let rt = open(|| b().store(store.clone())).await;
    let rx = rt.start(receiver, "rx", 0).await.unwrap();
    rx.parked(Parked::Event("ping".into())).await.unwrap();
    rt.start(sender, "tx", "rx".to_owned()).await.unwrap();
    // The receiver takes the event (its first step after the start) while the sender cannot
    // record that it sent it.
    for _ in 0..5000 {
        let status = rt.status("rx").unwrap().unwrap();
        if status.steps >= 2 && status.buffered_events == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let status = rt.status("rx").unwrap().unwrap();
    assert!(status.steps >= 2 && status.buffered_events == 0, "not taken: {status:?}");
    assert_eq!(store.appends.load(Ordering::SeqCst), 1);
    assert_eq!(rt.status("tx").unwrap().unwrap().steps, 1, "the sender recorded nothing more");
    rt.shutdown().await;
    drop((rt, rx, store));

    // The restarted sender runs the send again; the store knows its key.
    let rt = open(b).await;
    let got = rt.handle::<receiver>("rx").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(got.unwrap(), [7], "the event the sender sent twice arrived once");
    let out = rt.handle::<sender>("tx").wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(out.unwrap(), "sent; no nobody");
    rt.shutdown().await;
}

/// Sends to an instance that has ended, and says what it was told.
#[orchestration]
async fn late_sender(ctx: Ctx, to: String) -> Result<String, Failure> {
    match ctx.send_event(to, "ping", &0u32).await {
        Err(SendError::Finished { id, state }) => Ok(format!("{id} {state}")),
        other => Err(Failure::new(format!("expected Finished, got {other:?}"))),
    }
}

/// Sends itself an event and takes it: an instance may send to itself.
#[orchestration]
async fn own_mail(ctx: Ctx, x: u32) -> Result<u32, Failure> {
    let me = ctx.instance_id().to_owned();
    ctx.send_event(me, "note", &x).await?;
    let got: u32 = ctx.wait_event("note").await?;
    Ok(got + 1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_an_ended_instance_is_an_error_and_to_oneself_works() {
    let db = fresh_db("send-ended");
    let b = || {
        Runtime::builder(&db)
            .orchestration(receiver)
            .orchestration(late_sender)
            .orchestration(own_mail)
    };
    let rt = open(b).await;
    let rx = rt.start(receiver, "done", 0).await.unwrap();
    rt.raise_event("done", "ping", &0u32).await.unwrap();
    assert_eq!(rx.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), Vec::<u32>::new());
    let late = rt.start(late_sender, "late", "done".to_owned()).await.unwrap();
    assert_eq!(
        late.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(),
        "done completed"
    );
    let own = rt.start(own_mail, "me", 41).await.unwrap();
    assert_eq!(own.wait_timeout(Duration::from_secs(10)).await.unwrap().unwrap(), 42);
    rt.shutdown().await;
}
