//! The runtime's clock: wall time in production, a hand-advanced clock in tests, so timer tests
//! never sleep for real.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;

/// Where the runtime reads the time and waits for it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Inner>);

#[derive(Debug)]
enum Inner {
    System,
    Manual { now_ms: AtomicU64, moved: Notify },
}

/// A duration in whole milliseconds, saturating (the unit of every stored time).
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock {
    /// Wall-clock time.
    pub fn system() -> Self {
        Clock(Arc::new(Inner::System))
    }

    /// A clock that stands at `start` until [`advance`](Self::advance)d.
    pub fn manual(start: SystemTime) -> Self {
        let now_ms = AtomicU64::new(ms(start.duration_since(UNIX_EPOCH).unwrap_or_default()));
        Clock(Arc::new(Inner::Manual { now_ms, moved: Notify::new() }))
    }

    /// Moves a manual clock forward (no effect on the system clock).
    pub fn advance(&self, by: Duration) {
        if let Inner::Manual { now_ms, moved } = &*self.0 {
            now_ms.fetch_add(ms(by), Ordering::SeqCst);
            moved.notify_waiters();
        }
    }

    /// The current time.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms())
    }

    pub(crate) fn now_ms(&self) -> u64 {
        match &*self.0 {
            Inner::System => ms(SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()),
            Inner::Manual { now_ms, .. } => now_ms.load(Ordering::SeqCst),
        }
    }

    /// Waits until the clock reads `at_ms` or later.
    pub(crate) async fn sleep_until(&self, at_ms: u64) {
        match &*self.0 {
            Inner::System => {
                let now = self.now_ms();
                if at_ms > now {
                    tokio::time::sleep(Duration::from_millis(at_ms - now)).await;
                }
            }
            Inner::Manual { now_ms, moved } => loop {
                let notified = moved.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if now_ms.load(Ordering::SeqCst) >= at_ms {
                    return;
                }
                notified.await;
            },
        }
    }
}
