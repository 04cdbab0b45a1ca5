//! The cluster's [`SessionStore`]: who owns each session, and the subscriptions
//! of persistent sessions, in one JetStream key-value bucket
//! (`{stream}_SESSIONS`, `replicas` copies) that every node writes and watches.
//!
//! One value per client id ([`Owner`]): the owning node, the claim's epoch,
//! whether a session outlives its connection, and its subscriptions. A claim is
//! a compare-and-set on the key's revision (create if absent, update with the
//! revision just read), so two nodes can never both take the same session: the
//! loser reads again and claims after the winner, with a higher epoch. Every
//! later write of the owner is a compare-and-set on the revision its own last
//! write returned, so once another node claims, the old owner's writes are
//! refused by the bucket ([MQTT-3.1.4-3]: one session, one connection).
//!
//! Records, queues and in-flight state stay in this node's own store
//! ([`Storage`](crate::storage::Storage), `local` here): a claim also takes a
//! local claim, and every write checks the cluster claim first and then goes to
//! the local store, fenced by the local claim. So the checks a write makes are
//! in memory; the bucket is written behind, in order, by one task.
//!
//! Keys are never deleted: an ended session is written as `has_session: false`,
//! so epochs only grow.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch, OnceCell};
use tracing::{debug, info, warn};

use super::{connect, RETRY};
use crate::broker::seam::{
    Claim, Claimed, Claiming, Error, Intent, Recovered, SessionRecord, SessionStore,
    StoredSubscription, TakenElsewhere,
};
use crate::config::ClusterConfig;
use crate::protocol::ClientId;
use crate::storage::record;

/// How long a CONNECT waits for the cluster to agree on its claim.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a claim that lost a compare-and-set race reads and tries again.
const CLAIM_ATTEMPTS: usize = 10;
/// How long a claim the bucket did not answer waits before asking again.
const CLAIM_RETRY: Duration = Duration::from_millis(100);
/// The format of [`Owner`] this release writes.
const FORMAT: u8 = 1;

/// A session's value in the bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Owner {
    /// [`FORMAT`].
    format: u8,
    /// The node whose connection claimed the session last.
    node: String,
    /// Grows by one with every claim.
    epoch: u64,
    /// The client id (a key may be a hash of it).
    client_id: String,
    /// A session that outlives its connection exists (it may be resumed).
    has_session: bool,
    /// The claim resumed the session (Clean Start 0) rather than starting anew.
    is_resumed: bool,
    /// Filter → options and subscription identifier, as the local store encodes them.
    subscriptions: BTreeMap<String, Vec<u8>>,
}

impl Owner {
    fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    fn decode(value: &[u8]) -> Result<Owner, Error> {
        let owner: Owner =
            serde_json::from_slice(value).map_err(|error| Error::Corrupt(error.to_string()))?;
        if owner.format > FORMAT {
            return Err(Error::UnknownFormat {
                found: owner.format,
                known: FORMAT,
            });
        }
        Ok(owner)
    }

    fn stored_subscriptions(&self) -> Vec<StoredSubscription> {
        let client_id = ClientId::new(self.client_id.as_str());
        self.subscriptions
            .iter()
            .filter_map(|(filter, options)| {
                let decoded = record::decode_subscription(Bytes::copy_from_slice(options));
                let (options, identifier) = decoded
                    .map_err(|error| warn!(%client_id, %filter, %error, "cluster: stored subscription skipped"))
                    .ok()?;
                Some(StoredSubscription {
                    client_id: client_id.clone(),
                    filter: filter.clone(),
                    options,
                    identifier,
                })
            })
            .collect()
    }
}

/// A session a connection on this node has claimed.
#[derive(Debug)]
struct Held {
    /// The local store's claim, which local writes carry.
    local: Claim,
    /// What the bucket holds (or will, once the writes queued are done).
    owner: Owner,
}

/// A change for the task that writes the bucket, in the order it was made.
#[derive(Debug)]
enum Write {
    /// A claim succeeded: later puts of `epoch` follow `revision`.
    Claimed {
        key: String,
        epoch: u64,
        revision: u64,
    },
    /// The value of a held session changed.
    Put {
        key: String,
        epoch: u64,
        value: Bytes,
    },
    /// The session ended and was released: forget its revision.
    Forget { key: String, epoch: u64 },
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
}

/// Session ownership in a JetStream KV bucket, over this node's own store.
#[derive(Debug)]
pub struct NatsSessionStore {
    shared: Arc<Shared>,
    taken: Mutex<Option<mpsc::UnboundedReceiver<TakenElsewhere>>>,
}

impl NatsSessionStore {
    /// Starts the tasks that watch and write the bucket, over `local`, this
    /// node's store. Must be called inside a tokio runtime.
    pub fn start(config: ClusterConfig, local: Arc<dyn SessionStore>) -> NatsSessionStore {
        let (writes, queue) = mpsc::unbounded_channel();
        let (taken_tx, taken) = mpsc::unbounded_channel();
        let (done_tx, done) = watch::channel(0);
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
        });
        tokio::spawn(write_behind(shared.clone(), queue, done_tx));
        tokio::spawn(watch(shared.clone()));
        NatsSessionStore {
            shared,
            taken: Mutex::new(Some(taken)),
        }
    }
}

/// The bucket's key for `client_id`: as [`super::retained::key`] does for topics.
fn key(client_id: &ClientId) -> String {
    super::retained::key(client_id.as_str())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section leaves the map consistent at every step.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Hands a write to the task; called with the `held` lock, so writes are
    /// queued in the order the values changed.
    fn queue(&self, write: Write) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.writes.send(write);
    }

    async fn bucket(&self) -> Result<&kv::Store, Error> {
        self.bucket
            .get_or_try_init(|| open_bucket(&self.config))
            .await
            .map_err(|error| Error::Io(format!("cluster session bucket: {error}")))
    }

    /// Takes `client_id` in the bucket, then locally. A bucket that does not
    /// answer (a stream still electing its leader) is asked again until the
    /// caller's timeout.
    async fn claim(&self, client_id: ClientId, intent: Intent) -> Result<Claimed, Error> {
        let bucket = self.bucket().await?;
        let key = key(&client_id);
        lock(&self.claiming).insert(client_id.clone(), None);
        let _in_flight = InFlight {
            shared: self,
            client_id: client_id.clone(),
        };
        let mut races = 0;
        loop {
            match self.try_claim(bucket, &client_id, &key, intent).await {
                Ok(Some((owner, previous, revision))) => {
                    return self
                        .claimed(client_id, key, owner, previous, revision)
                        .await
                }
                // Another claim came first: read it, and claim after it.
                Ok(None) if races < CLAIM_ATTEMPTS => races += 1,
                Ok(None) => {
                    return Err(Error::Io(format!(
                        "session {client_id}: {CLAIM_ATTEMPTS} claims in a row lost a race"
                    )))
                }
                Err(error) => {
                    debug!(%client_id, %error, "cluster: claim not answered; asking again");
                    tokio::time::sleep(CLAIM_RETRY).await;
                }
            }
        }
    }

    /// One read and one compare-and-set: the value written, the one it replaced
    /// and the new revision, or `None` if another claim came between the two.
    async fn try_claim(
        &self,
        bucket: &kv::Store,
        client_id: &ClientId,
        key: &str,
        intent: Intent,
    ) -> Result<Option<(Owner, Option<Owner>, u64)>, String> {
        let entry = bucket.entry(key).await.map_err(|error| error.to_string())?;
        let previous = match &entry {
            Some(entry) if entry.operation == kv::Operation::Put => Owner::decode(&entry.value)
                .map_err(|error| warn!(%client_id, %error, "cluster: session value replaced"))
                .ok(),
            _ => None,
        };
        let owner = self.next_owner(client_id, intent, previous.as_ref());
        let written = match &entry {
            Some(entry) => match bucket.update(key, owner.encode(), entry.revision).await {
                Ok(revision) => Some(revision),
                Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                Err(error) => return Err(error.to_string()),
            },
            None => match bucket.create(key, owner.encode()).await {
                Ok(revision) => Some(revision),
                Err(error) if error.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(error) => return Err(error.to_string()),
            },
        };
        Ok(written.map(|revision| (owner, previous, revision)))
    }

    /// The value a claim writes: the session's subscriptions carry over unless
    /// it starts anew ([MQTT-3.1.2-4]).
    fn next_owner(&self, client_id: &ClientId, intent: Intent, previous: Option<&Owner>) -> Owner {
        let resumable = previous.filter(|owner| owner.has_session && !intent.clean_start);
        Owner {
            format: FORMAT,
            node: self.config.node_id.clone(),
            epoch: previous.map_or(1, |owner| owner.epoch.saturating_add(1)),
            client_id: client_id.as_str().to_string(),
            has_session: intent.is_persistent,
            is_resumed: resumable.is_some(),
            subscriptions: resumable
                .map(|owner| owner.subscriptions.clone())
                .unwrap_or_default(),
        }
    }

    /// A claim the bucket took: taken locally too, and remembered as held.
    async fn claimed(
        &self,
        client_id: ClientId,
        key: String,
        owner: Owner,
        previous: Option<Owner>,
        revision: u64,
    ) -> Result<Claimed, Error> {
        let local = self.local.claim(
            &client_id,
            Intent {
                clean_start: !owner.is_resumed,
                is_persistent: owner.has_session,
            },
        );
        let local = local.taken().await?.claim;
        let from_elsewhere = previous
            .filter(|previous| owner.is_resumed && previous.node != owner.node)
            .map(|_| owner.stored_subscriptions());
        // Kept on this node's disk as well, as if subscribed here.
        for subscription in from_elsewhere.iter().flatten() {
            self.local.save_subscription(subscription, local)?;
        }
        let epoch = owner.epoch;
        let mut held = lock(&self.held);
        self.queue(Write::Claimed {
            key,
            epoch,
            revision,
        });
        held.insert(client_id.clone(), Held { local, owner });
        // The watch may have seen a newer claim before this one's answer came.
        let overtaken = lock(&self.claiming)
            .get_mut(&client_id)
            .and_then(Option::take)
            .filter(|(newer, _)| *newer > epoch);
        drop(held);
        if let Some((newer, is_resumed)) = overtaken {
            self.let_go(&client_id, newer, is_resumed);
        }
        Ok(Claimed {
            claim: Claim { epoch },
            resumed_from_elsewhere: from_elsewhere,
        })
    }

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
        if entry.owner.epoch != claim.epoch {
            return Err(fenced(client_id, claim, entry.owner.epoch));
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

    /// Another node claimed a session: if this node held it with an older
    /// claim, it lets go. A claim of this node still waiting for its answer
    /// learns of it when the answer comes (see [`Shared::claimed`]).
    fn claimed_elsewhere(&self, owner: &Owner) {
        if owner.node == self.config.node_id {
            return;
        }
        let client_id = ClientId::new(owner.client_id.as_str());
        let held = lock(&self.held);
        match held.get(&client_id) {
            Some(entry) if entry.owner.epoch < owner.epoch => {
                drop(held);
                self.let_go(&client_id, owner.epoch, owner.is_resumed);
            }
            Some(_) => {}
            None => {
                let mut claiming = lock(&self.claiming);
                if let Some(newest) = claiming.get_mut(&client_id) {
                    if newest.is_none_or(|(epoch, _)| epoch < owner.epoch) {
                        *newest = Some((owner.epoch, owner.is_resumed));
                    }
                }
            }
        }
    }

    /// Drops what this node kept of a session whose claim here is older than
    /// `newer`, and tells the broker, which lets its connection go.
    fn let_go(&self, client_id: &ClientId, newer: u64, is_resumed: bool) {
        let mut held = lock(&self.held);
        let Some(entry) = held.remove(client_id) else {
            return;
        };
        if entry.owner.epoch >= newer {
            held.insert(client_id.clone(), entry);
            return;
        }
        self.queue(Write::Forget {
            key: key(client_id),
            epoch: entry.owner.epoch,
        });
        drop(held);
        if let Err(error) = self.local.drop_session(client_id, entry.local) {
            warn!(%client_id, %error, "cluster: could not drop the local copy of a session taken elsewhere");
        }
        self.local.release(client_id, entry.local);
        debug!(%client_id, "cluster: session claimed by another node");
        let _ = self.taken.send(TakenElsewhere {
            client_id: client_id.clone(),
            is_resumed,
        });
    }
}

/// A claim in flight, in [`Shared::claiming`] until it is answered or given up.
struct InFlight<'a> {
    shared: &'a Shared,
    client_id: ClientId,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        lock(&self.shared.claiming).remove(&self.client_id);
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
            let claim = self.shared.claim(client_id, intent);
            tokio::time::timeout(CLAIM_TIMEOUT, claim)
                .await
                .unwrap_or_else(|_| Err(Error::Io("the cluster did not answer a claim".into())))
        }))
    }

    fn taken_elsewhere(&self) -> Option<mpsc::UnboundedReceiver<TakenElsewhere>> {
        lock(&self.taken).take()
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
                entry.owner.epoch == claim.epoch
                    && self.shared.local.is_current(client_id, entry.local)
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
            |owner| owner.has_session = is_persistent(record),
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
            self.shared.local.release(client_id, claim);
            return;
        };
        if entry.owner.epoch != claim.epoch {
            return;
        }
        let local = entry.local;
        held.remove(client_id);
        self.shared.queue(Write::Forget {
            key: key(client_id),
            epoch: claim.epoch,
        });
        self.shared.local.release(client_id, local);
    }

    /// What this node's own store kept; the bucket is not read at start-up.
    fn recover(&self) -> Result<Recovered, Error> {
        self.shared.local.recover()
    }
}

/// Writes the values of held sessions, in the order they changed, each a
/// compare-and-set on the revision of the previous one. A write refused because
/// the revision moved means another node claimed the session: it is dropped
/// (the watch tells the broker). Other failures are retried until the bucket
/// takes the write, as a retained change is.
async fn write_behind(
    shared: Arc<Shared>,
    mut queue: mpsc::UnboundedReceiver<Write>,
    done: watch::Sender<u64>,
) {
    let mut revisions: HashMap<String, (u64, u64)> = HashMap::new();
    while let Some(write) = queue.recv().await {
        write_one(&shared, &mut revisions, write).await;
        done.send_modify(|done| *done += 1);
    }
}

/// One write of [`write_behind`]; `revisions` maps each held key to its epoch
/// and the revision of the last write.
async fn write_one(shared: &Shared, revisions: &mut HashMap<String, (u64, u64)>, write: Write) {
    let (key, epoch, value) = match write {
        Write::Claimed {
            key,
            epoch,
            revision,
        } => {
            revisions.insert(key, (epoch, revision));
            return;
        }
        Write::Forget { key, epoch } => {
            if revisions.get(&key).is_some_and(|(held, _)| *held == epoch) {
                revisions.remove(&key);
            }
            return;
        }
        Write::Put { key, epoch, value } => (key, epoch, value),
    };
    let Some(&(held, revision)) = revisions.get(&key) else {
        return;
    };
    if held != epoch {
        return;
    }
    let Ok(bucket) = shared.bucket().await else {
        return;
    };
    match put(bucket, &key, value, revision).await {
        Some(revision) => revisions.insert(key, (epoch, revision)),
        None => revisions.remove(&key),
    };
}

/// One compare-and-set, retried on failures other than a moved revision; the
/// new revision, or `None` if another node claimed the session meanwhile.
async fn put(bucket: &kv::Store, key: &str, value: Bytes, revision: u64) -> Option<u64> {
    let mut is_retry = false;
    loop {
        match bucket.update(key, value.clone(), revision).await {
            Ok(revision) => return Some(revision),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                // A retry after a timeout may find its own first attempt there.
                let entry = bucket.entry(key).await.ok().flatten();
                return match entry {
                    Some(entry) if is_retry && entry.value == value => Some(entry.revision),
                    _ => {
                        debug!(key, "cluster: session write fenced by a newer claim");
                        None
                    }
                };
            }
            Err(error) => {
                if !is_retry {
                    warn!(%error, key, "cluster: could not write a session; retrying");
                }
                is_retry = true;
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

/// Watches the bucket for claims by other nodes.
async fn watch(shared: Arc<Shared>) {
    let bucket = loop {
        match shared.bucket().await {
            Ok(bucket) => break bucket,
            Err(error) => {
                warn!(%error, "cluster: cannot open the session bucket; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    info!(bucket = %bucket_name(&shared.config), "cluster: sessions shared");
    loop {
        let mut changes = match bucket.watch_all().await {
            Ok(changes) => changes,
            Err(error) => {
                warn!(%error, "cluster: cannot watch sessions; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Some(change) = changes.next().await {
            match change {
                Ok(entry) if entry.operation == kv::Operation::Put => {
                    match Owner::decode(&entry.value) {
                        Ok(owner) => shared.claimed_elsewhere(&owner),
                        Err(error) => {
                            warn!(%error, key = %entry.key, "cluster: session change skipped")
                        }
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    warn!(%error, "cluster: watching sessions failed; watching again");
                    break;
                }
            }
        }
    }
}

fn bucket_name(config: &ClusterConfig) -> String {
    format!("{}_SESSIONS", config.stream)
}

async fn open_bucket(config: &ClusterConfig) -> Result<kv::Store, async_nats::Error> {
    let jetstream = connect(config, "sessions").await?;
    let name = bucket_name(config);
    if let Ok(bucket) = jetstream.get_key_value(name.clone()).await {
        return Ok(bucket);
    }
    Ok(jetstream
        .create_key_value(kv::Config {
            bucket: name,
            history: 1,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await?)
}
