//! The cluster's [`SessionStore`]: who owns each session, and the subscriptions
//! of persistent sessions, in one JetStream key-value bucket
//! (`{stream}_SESSIONS`, `replicas` copies) that every node writes and watches.
//!
//! One value per client id ([`Owner`]): the owning node, whether a session
//! outlives its connection, and its subscriptions. A claim is a compare-and-set
//! on the key's revision (create if absent, update with the revision just
//! read), so two nodes can never both take the same session: the loser reads
//! again and claims after the winner. The revision of the claim's write is its
//! epoch; revisions grow across the whole bucket, so any later write by another
//! node means that node claimed since. Every later write of the owner is a
//! compare-and-set on the revision its own last write returned, so once another
//! node claims, the old owner's writes are refused by the bucket
//! ([MQTT-3.1.4-3]: one session, one connection).
//!
//! Records, queues and in-flight state stay in this node's own store
//! ([`Storage`](crate::storage::Storage), `local` here): a claim also takes a
//! local claim, and every write checks the cluster claim first and then goes to
//! the local store, fenced by the local claim. So the checks a write makes are
//! in memory; the bucket is written behind, in order, by one task.
//!
//! When a session ends and its node lets go, its key is purged (its marker
//! expires a few minutes later), so the bucket holds the sessions that are
//! connected or persist, not every client id ever seen.

mod bucket;
mod claim;
mod owner;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::{mpsc, watch, OnceCell};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::RETRY;
use crate::broker::seam::{
    Claim, Claiming, Error, Intent, Recovered, SessionRecord, SessionStore, Standing,
    StoredSubscription, TakenElsewhere,
};
use crate::config::ClusterConfig;
use crate::protocol::ClientId;
use crate::storage::record::{self, Clock};
use bucket::{key, write_behind, Write};
use owner::Owner;

/// How long a CONNECT waits for the cluster to agree on its claim.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a claim that lost a compare-and-set race reads and tries again.
const CLAIM_ATTEMPTS: usize = 10;
/// How long a claim the bucket did not answer waits before asking again.
const CLAIM_RETRY: Duration = Duration::from_millis(100);

/// A session a connection on this node has claimed.
#[derive(Debug)]
struct Held {
    /// The revision of the claim's write: a write of another node with a higher
    /// revision means that node claimed the session since.
    epoch: u64,
    /// The local store's claim, which local writes carry.
    local: Claim,
    /// What the bucket holds (or will, once the writes queued are done).
    owner: Owner,
}

#[derive(Debug)]
struct Shared {
    config: ClusterConfig,
    local: Arc<dyn SessionStore>,
    bucket: OnceCell<kv::Store>,
    held: Mutex<HashMap<ClientId, Held>>,
    /// Claims waiting for the bucket's answer, with the newest claim (epoch, is
    /// resumed) another node made on the same client id meanwhile. Locked after
    /// `held`, never before.
    claiming: Mutex<HashMap<ClientId, Option<(u64, bool)>>>,
    writes: mpsc::UnboundedSender<Write>,
    /// Writes queued so far, and done so far (by the task).
    queued: AtomicU64,
    done: watch::Receiver<u64>,
    taken: mpsc::UnboundedSender<TakenElsewhere>,
    /// Whether this node reaches the cluster ([`super::liveness`]).
    standing: watch::Receiver<Standing>,
}

/// Session ownership in a JetStream KV bucket, over this node's own store.
#[derive(Debug)]
pub struct NatsSessionStore {
    shared: Arc<Shared>,
    taken: Mutex<Option<mpsc::UnboundedReceiver<TakenElsewhere>>>,
    /// Stops the tasks when the store goes (with its broker): they hold the
    /// shared state, so they would otherwise run, and watch, for ever.
    stop: CancellationToken,
}

impl Drop for NatsSessionStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl NatsSessionStore {
    /// Starts the tasks that watch and write the bucket, over `local`, this
    /// node's store. Must be called inside a tokio runtime.
    pub fn start(config: ClusterConfig, local: Arc<dyn SessionStore>) -> NatsSessionStore {
        let (writes, queue) = mpsc::unbounded_channel();
        let (taken_tx, taken) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(0);
        let (standing, heartbeats) = super::liveness::heartbeats(config.clone());
        let shared = Arc::new(Shared {
            config,
            local,
            bucket: OnceCell::new(),
            held: Mutex::default(),
            claiming: Mutex::default(),
            writes,
            queued: AtomicU64::new(0),
            done,
            taken: taken_tx,
            standing,
        });
        let stop = CancellationToken::new();
        let writes = write_behind(shared.clone(), queue, done_tx);
        let watch = bucket::watch(shared.clone());
        tokio::spawn(stop.clone().run_until_cancelled_owned(writes));
        tokio::spawn(stop.clone().run_until_cancelled_owned(watch));
        tokio::spawn(stop.clone().run_until_cancelled_owned(heartbeats));
        NatsSessionStore {
            shared,
            taken: Mutex::new(Some(taken)),
            stop,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section leaves the map consistent at every step.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Runs `write` with the local claim that `claim` stands for, if it is still
    /// this node's newest on the session; `change` then updates the value the
    /// bucket holds, which is written behind if it changed. The zero claim (a
    /// session restored at start-up, never claimed since) writes locally only.
    fn fenced(
        &self,
        client_id: &ClientId,
        claim: Claim,
        write: impl FnOnce(Claim) -> Result<(), Error>,
        change: impl FnOnce(&mut Owner),
    ) -> Result<(), Error> {
        let mut held = lock(&self.held);
        let Some(entry) = held.get_mut(client_id) else {
            if claim.epoch == 0 {
                return write(claim);
            }
            return Err(fenced(client_id, claim, 0));
        };
        if entry.epoch != claim.epoch {
            return Err(fenced(client_id, claim, entry.epoch));
        }
        write(entry.local)?;
        let before = entry.owner.clone();
        change(&mut entry.owner);
        if entry.owner != before && (entry.owner.has_session || before.has_session) {
            self.queue(Write::Put {
                key: key(client_id),
                epoch: claim.epoch,
                value: entry.owner.encode(),
            });
        }
        Ok(())
    }
}

fn fenced(client_id: &ClientId, claim: Claim, current: u64) -> Error {
    Error::Fenced {
        client_id: client_id.clone(),
        stale: claim.epoch,
        current,
    }
}

/// Whether a stored record is of a session that outlives its connection.
fn is_persistent(record: &SessionRecord) -> bool {
    match record {
        SessionRecord::Online { expiry, .. } => *expiry != Some(Duration::ZERO),
        SessionRecord::Offline { .. } => true,
    }
}

impl SessionStore for NatsSessionStore {
    /// One read and one compare-and-set on the bucket (more if another node
    /// claims the same client id at the same moment).
    fn claim(&self, client_id: &ClientId, intent: Intent) -> Claiming<'_> {
        let client_id = client_id.clone();
        Claiming::Pending(Box::pin(async move {
            if *self.shared.standing.borrow() == Standing::CutOff {
                return Err(Error::CutOff {
                    fencing_timeout: self.shared.config.fencing_timeout,
                });
            }
            let claim = self.shared.claim(client_id, intent);
            tokio::time::timeout(CLAIM_TIMEOUT, claim)
                .await
                .unwrap_or_else(|_| Err(Error::Io("the cluster did not answer a claim".into())))
        }))
    }

    fn taken_elsewhere(&self) -> Option<mpsc::UnboundedReceiver<TakenElsewhere>> {
        lock(&self.taken).take()
    }

    fn standing(&self) -> Option<watch::Receiver<Standing>> {
        Some(self.shared.standing.clone())
    }

    fn writes_settled(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        let target = self.shared.queued.load(Ordering::Acquire);
        let mut done = self.shared.done.clone();
        Some(Box::pin(async move {
            // An error means the task ended (shutdown): nothing to wait for.
            let settled = done.wait_for(|done| *done >= target);
            if tokio::time::timeout(CLAIM_TIMEOUT, settled).await.is_err() {
                warn!("cluster: the session bucket has not taken a subscription yet");
            }
        }))
    }

    fn is_current(&self, client_id: &ClientId, claim: Claim) -> bool {
        let held = lock(&self.shared.held);
        match held.get(client_id) {
            Some(entry) => {
                entry.epoch == claim.epoch && self.shared.local.is_current(client_id, entry.local)
            }
            None => claim.epoch == 0 && self.shared.local.is_current(client_id, claim),
        }
    }

    fn save(
        &self,
        client_id: &ClientId,
        record: &SessionRecord,
        claim: Claim,
    ) -> Result<(), Error> {
        let local = &self.shared.local;
        self.shared.fenced(
            client_id,
            claim,
            |local_claim| local.save(client_id, record, local_claim),
            |owner| {
                owner.has_session = is_persistent(record);
                owner.expires_at_ms = match record {
                    SessionRecord::Offline {
                        expires_at: Some(at),
                        ..
                    } => Some(Clock::now().to_wall(Some(*at))),
                    _ => None,
                };
            },
        )
    }

    fn save_subscription(
        &self,
        subscription: &StoredSubscription,
        claim: Claim,
    ) -> Result<(), Error> {
        let local = &self.shared.local;
        let options = record::encode_subscription(subscription.options, subscription.identifier);
        self.shared.fenced(
            &subscription.client_id,
            claim,
            |local_claim| local.save_subscription(subscription, local_claim),
            |owner| {
                owner
                    .subscriptions
                    .insert(subscription.filter.clone(), options.to_vec());
            },
        )
    }

    fn remove_subscription(
        &self,
        client_id: &ClientId,
        filter: &str,
        claim: Claim,
    ) -> Result<(), Error> {
        let local = &self.shared.local;
        self.shared.fenced(
            client_id,
            claim,
            |local_claim| local.remove_subscription(client_id, filter, local_claim),
            |owner| {
                owner.subscriptions.remove(filter);
            },
        )
    }

    fn drop_session(&self, client_id: &ClientId, claim: Claim) -> Result<(), Error> {
        let local = &self.shared.local;
        self.shared.fenced(
            client_id,
            claim,
            |local_claim| local.drop_session(client_id, local_claim),
            |owner| {
                owner.has_session = false;
                owner.subscriptions.clear();
            },
        )
    }

    fn release(&self, client_id: &ClientId, claim: Claim) {
        let mut held = lock(&self.shared.held);
        let Some(entry) = held.get(client_id) else {
            // The zero claim is the local store's own (a session restored at
            // start-up); any other is a cluster epoch, meaningless there.
            if claim.epoch == 0 {
                self.shared.local.release(client_id, claim);
            }
            return;
        };
        if entry.epoch != claim.epoch {
            return;
        }
        // Nothing of the session outlives it: its key goes (see [`Write::Forget`]).
        let is_ended = !entry.owner.has_session;
        let local = entry.local;
        held.remove(client_id);
        self.shared.queue(Write::Forget {
            key: key(client_id),
            epoch: claim.epoch,
            is_ended,
        });
        self.shared.local.release(client_id, local);
    }

    /// What this node's own store kept; the bucket is not read at start-up.
    fn recover(&self) -> Result<Recovered, Error> {
        self.shared.local.recover()
    }
}
