//! Group commit for `durability = "fsync"`: writers never fsync inline. Each
//! commit takes a ticket; a connection that is about to send acknowledgements
//! waits until a sync covering its last ticket has finished. One thread runs the
//! syncs back to back, and every waiter that arrived during one sync shares the next.
//!
//! Why a thread and not `spawn_blocking`: the sync loop must outlive any one
//! caller, and a single owner makes "at most one fsync in flight" obvious.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tokio::sync::watch;

use super::{Error, SyncPoint};

/// What the sync thread runs: make every write committed so far durable.
pub type SyncFn = Box<dyn FnMut() -> Result<(), Error> + Send>;

#[derive(Debug, Default)]
struct Requests {
    is_requested: bool,
    is_stopping: bool,
}

#[derive(Debug)]
struct Shared {
    /// Tickets handed out: incremented after each commit returns.
    written: AtomicU64,
    requests: Mutex<Requests>,
    wake: Condvar,
    /// The highest ticket known durable.
    synced: watch::Sender<u64>,
    has_failed: AtomicBool,
}

/// The ticket counter and the sync thread.
#[derive(Debug)]
pub struct GroupCommit {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl GroupCommit {
    /// Starts the sync thread.
    pub fn start(sync: SyncFn) -> Result<GroupCommit, Error> {
        let shared = Arc::new(Shared {
            written: AtomicU64::new(0),
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
            synced: watch::Sender::new(0),
            has_failed: AtomicBool::new(false),
        });
        let thread = std::thread::Builder::new()
            .name("rookery-fsync".into())
            .spawn({
                let shared = shared.clone();
                move || sync_loop(&shared, sync)
            })
            .map_err(|error| Error::Io(format!("cannot start the fsync thread: {error}")))?;
        Ok(GroupCommit {
            shared,
            thread: Some(thread),
        })
    }

    /// Called after every commit.
    pub fn committed(&self) {
        self.shared.written.fetch_add(1, Ordering::Release);
    }

    /// The ticket of the latest commit.
    pub fn sync_point(&self) -> SyncPoint {
        SyncPoint(self.shared.written.load(Ordering::Acquire))
    }

    /// Waits until a sync that started after `point` was taken has finished.
    pub async fn wait(&self, point: SyncPoint) -> Result<(), Error> {
        let mut synced = self.shared.synced.subscribe();
        if *synced.borrow_and_update() < point.0 {
            self.request();
            // The sender lives in `shared`, which outlives this borrow of `self`.
            let _ = synced.wait_for(|&synced| synced >= point.0).await;
        }
        if self.shared.has_failed.load(Ordering::Acquire) {
            return Err(Error::Io("fsync failed; storage is read-only".into()));
        }
        Ok(())
    }

    fn request(&self) {
        let mut requests = lock(&self.shared.requests);
        requests.is_requested = true;
        self.shared.wake.notify_one();
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        lock(&self.shared.requests).is_stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn lock(requests: &Mutex<Requests>) -> std::sync::MutexGuard<'_, Requests> {
    // The guarded flags stay meaningful whatever panicked while holding them.
    requests
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn sync_loop(shared: &Shared, mut sync: SyncFn) {
    loop {
        {
            let mut requests = lock(&shared.requests);
            while !requests.is_requested && !requests.is_stopping {
                requests = shared
                    .wake
                    .wait(requests)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            if !requests.is_requested {
                return;
            }
            requests.is_requested = false;
        }
        // Every ticket up to `target` was committed before this sync starts.
        let target = shared.written.load(Ordering::Acquire);
        if target <= *shared.synced.borrow() {
            continue;
        }
        match sync() {
            Ok(()) => {
                shared.synced.send_replace(target);
            }
            Err(error) => {
                tracing::error!(%error, "fsync failed; acknowledgements stop");
                shared.has_failed.store(true, Ordering::Release);
                shared.synced.send_replace(u64::MAX);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_waiters_share_syncs() {
        let syncs = Arc::new(AtomicUsize::new(0));
        let counter = syncs.clone();
        let group = Arc::new(
            GroupCommit::start(Box::new(move || {
                counter.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
                Ok(())
            }))
            .unwrap(),
        );
        let mut waiters = Vec::new();
        for _ in 0..50 {
            group.committed();
            let point = group.sync_point();
            let group = group.clone();
            waiters.push(tokio::spawn(async move { group.wait(point).await }));
        }
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
        let syncs = syncs.load(Ordering::Relaxed);
        assert!((1..50).contains(&syncs), "{syncs} syncs for 50 commits");
    }

    #[tokio::test]
    async fn nothing_written_means_no_wait() {
        let group = GroupCommit::start(Box::new(|| Ok(()))).unwrap();
        group.wait(group.sync_point()).await.unwrap();
    }

    #[tokio::test]
    async fn failed_sync_fails_waiters() {
        let group = GroupCommit::start(Box::new(|| Err(Error::Io("disk on fire".into())))).unwrap();
        group.committed();
        assert!(group.wait(group.sync_point()).await.is_err());
    }
}
