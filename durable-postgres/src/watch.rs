//! The notification listener behind [`Store::watch`](durable_runtime::store::Store::watch).
//!
//! A pooled connection cannot listen: deadpool drives each connection by awaiting it, which
//! drops notifications. So the listener has a connection of its own, driven with
//! `poll_message`, whose notifications a task forwards on a channel. When that connection
//! ends (or stops answering), the listener connects again with backoff, listens again, and
//! tells the runtime it may have missed changes.
//!
//! The callback runs on a thread of its own, in the order changes arrived: never on the
//! store's runtime thread, which a callback that blocks or calls the store would stall (a call
//! waits for the runtime thread to answer it).

use std::time::Duration;

use durable_runtime::store::{Change, OnChange, StoreError};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls, Notification};

use crate::error;
use crate::ops::Shared;

/// How long the listener waits for a notification before it checks that its connection
/// still answers.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// The longest wait between two attempts to connect again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A listening connection.
pub(crate) struct Listener {
    config: tokio_postgres::Config,
    channel: String,
    /// The store's own name: notifications that start with it are its own writes.
    name: String,
    client: Client,
    notifications: mpsc::UnboundedReceiver<Notification>,
}

impl Listener {
    /// Connects and listens; `LISTEN` has taken effect when this returns.
    pub(crate) async fn connect(shared: &Shared) -> Result<Self, StoreError> {
        let (client, notifications) = listen(&shared.config, &shared.channel).await?;
        Ok(Self {
            config: shared.config.clone(),
            channel: shared.channel.clone(),
            name: shared.name.clone(),
            client,
            notifications,
        })
    }

    /// Delivers notifications until the store is dropped.
    pub(crate) async fn run(mut self, on_change: std::sync::mpsc::Sender<Change>) {
        let on_change = |change| {
            // The delivering thread ends only when the store is dropped, which ends this too.
            let _ = on_change.send(change);
        };
        loop {
            let received = tokio::time::timeout(CHECK_EVERY, self.notifications.recv()).await;
            match received {
                Ok(Some(n)) => {
                    if let Some(change) = self.change(n.payload()) {
                        on_change(change);
                    }
                }
                // Quiet for a while: a connection that no longer answers is lost.
                Err(_) if self.client.simple_query("").await.is_ok() => {}
                Ok(None) | Err(_) => {
                    self.reconnect().await;
                    on_change(Change::Missed);
                }
            }
        }
    }

    /// The change a payload tells of; `None` for this store's own writes.
    fn change(&self, payload: &str) -> Option<Change> {
        let (writer, id) = match payload.split_once(' ') {
            Some((writer, id)) => (writer, Some(id)),
            None => (payload, None),
        };
        let (writer, runner) = match writer.strip_suffix('!') {
            Some(w) => (w, true),
            None => (writer, false),
        };
        if writer == self.name {
            return None;
        }
        Some(match id {
            Some(id) if runner => Change::Stepped(id.to_owned()),
            Some(id) => Change::Instance(id.to_owned()),
            // An id that did not fit in a payload.
            None => Change::Missed,
        })
    }

    /// Connects and listens again, waiting longer after each failure.
    async fn reconnect(&mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match listen(&self.config, &self.channel).await {
                Ok((client, notifications)) => {
                    self.client = client;
                    self.notifications = notifications;
                    tracing::info!(channel = %self.channel, "listening again after a lost connection");
                    return;
                }
                Err(e) => {
                    tracing::warn!(channel = %self.channel, "cannot listen again yet: {e}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// Starts the thread that calls `on_change` with each change sent to the returned sender,
/// until every sender is dropped.
pub(crate) fn deliver(on_change: OnChange) -> Result<std::sync::mpsc::Sender<Change>, StoreError> {
    let (send, changes) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("durable-postgres-watch".into())
        .spawn(move || {
            for change in changes {
                on_change(change);
            }
        })
        .map_err(|e| StoreError::Io(format!("cannot start the watch thread: {e}")))?;
    Ok(send)
}

/// A new connection that listens on `channel`, and the notifications it receives. The
/// receiver ends when the connection does.
async fn listen(
    config: &tokio_postgres::Config,
    channel: &str,
) -> Result<(Client, mpsc::UnboundedReceiver<Notification>), StoreError> {
    let doing = "listening for changes";
    let (client, mut connection) =
        config.connect(NoTls).await.map_err(|e| error::sql(doing, &e))?;
    let (forward, notifications) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if forward.send(n).is_err() {
                        return;
                    }
                }
                Some(Ok(_notice)) => {}
                Some(Err(e)) => {
                    tracing::warn!("the listening connection failed: {e}");
                    return;
                }
                None => return,
            }
        }
    });
    // The channel name is a checked schema name plus `_changes`: no quoting issue.
    client
        .batch_execute(&format!("LISTEN \"{channel}\""))
        .await
        .map_err(|e| error::sql(doing, &e))?;
    Ok((client, notifications))
}
