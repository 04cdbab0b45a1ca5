//! How many messages this node has handed to the cluster that the stream has not
//! taken yet, and the wait of publishers while there are too many.
//!
//! A PUBACK does not wait for the stream (that would slow a publisher to one
//! cluster round trip per message), so a node can take publishes faster than
//! JetStream takes them from it — a burst, a cluster slower than the node, a
//! stream electing its leader. Unbounded, the difference would wait in memory.
//! Past [`HIGH`] messages, connections that publish stop reading (TCP
//! back-pressure, as a slow broker applies it: nothing acknowledged is dropped)
//! until the backlog is down to [`LOW`]; deliveries to them go on.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// Messages waiting for the stream beyond which publishers wait: a few seconds
/// of what a small NATS cluster takes, some megabytes of memory.
pub const HIGH: usize = 20_000;
/// Messages waiting for the stream at which publishers go on.
pub const LOW: usize = HIGH / 2;

#[derive(Debug, Default)]
pub struct Backlog {
    waiting: AtomicUsize,
    room: Notify,
}

impl Backlog {
    /// A message was handed to the cluster's task.
    pub fn add(&self) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
    }

    /// The stream took a message.
    pub fn done(&self) {
        let before = self.waiting.fetch_sub(1, Ordering::AcqRel);
        // Every count passes LOW on its way down: one wake-up per crossing.
        if before == LOW + 1 {
            self.room.notify_waiters();
        }
    }

    /// `None` below [`HIGH`]; otherwise a wait until the backlog is down to [`LOW`].
    pub fn wait(self: &Arc<Self>) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        if self.waiting.load(Ordering::Relaxed) < HIGH {
            return None;
        }
        let backlog = self.clone();
        Some(Box::pin(async move {
            loop {
                let notified = backlog.room.notified();
                tokio::pin!(notified);
                // Registered before the check: a crossing between the two wakes it.
                notified.as_mut().enable();
                if backlog.waiting.load(Ordering::Acquire) <= LOW {
                    return;
                }
                notified.await;
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn issue_10_publishers_wait_above_high_and_go_on_at_low() {
        let backlog = Arc::new(Backlog::default());
        for _ in 0..HIGH - 1 {
            backlog.add();
        }
        assert!(backlog.wait().is_none(), "below HIGH nobody waits");
        backlog.add();
        let waiter = {
            let backlog = backlog.clone();
            tokio::spawn(async move {
                if let Some(wait) = backlog.wait() {
                    wait.await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..HIGH - LOW - 1 {
            backlog.done();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "still above LOW");
        backlog.done();
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken at LOW")
            .unwrap();
    }
}
