//! Taking a session, and losing it: a claim is one read and one
//! compare-and-set on the session's key; the watch tells a node when another
//! node's claim has overtaken one of its own.

use tracing::{debug, warn};

use super::owner::{Owner, FORMAT};
use super::{key, lock, Held, Shared, Write, CLAIM_ATTEMPTS, CLAIM_RETRY};
use crate::broker::seam::{Claim, Claimed, Error, Intent, TakenElsewhere};
use crate::protocol::ClientId;
use crate::storage::record::Clock;
use async_nats::jetstream::kv;

impl Shared {
    /// Takes `client_id` in the bucket, then locally. A bucket that does not
    /// answer (a stream still electing its leader) is asked again until the
    /// caller's timeout.
    pub(super) async fn claim(
        &self,
        client_id: ClientId,
        intent: Intent,
    ) -> Result<Claimed, Error> {
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
                        .claimed(client_id, key, owner, previous, revision, intent)
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
        // [MQTT-3.1.2-23] an expired session is gone, whichever node kept it.
        let now_ms = Clock::now().wall_ms();
        let resumable = previous.filter(|owner| owner.is_resumable(now_ms) && !intent.clean_start);
        Owner {
            format: FORMAT,
            node: self.config.node_id.clone(),
            client_id: client_id.as_str().to_string(),
            has_session: intent.is_persistent,
            expires_at_ms: None,
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
        intent: Intent,
    ) -> Result<Claimed, Error> {
        let local = self.local.claim(
            &client_id,
            Intent {
                clean_start: !owner.is_resumed,
                is_persistent: owner.has_session,
                has_local_session: intent.has_local_session,
            },
        );
        let local = local.taken().await?.claim;
        let from_elsewhere = previous
            .filter(|previous| {
                owner.is_resumed && (previous.node != owner.node || !intent.has_local_session)
            })
            .map(|_| owner.stored_subscriptions());
        // Kept on this node's disk as well, as if subscribed here, replacing
        // whatever an older stay of the session here left (the bucket is newer).
        if from_elsewhere.is_some() {
            self.local.drop_session(&client_id, local)?;
        }
        for subscription in from_elsewhere.iter().flatten() {
            self.local.save_subscription(subscription, local)?;
        }
        // The claim's revision is its epoch: the bucket's revisions only grow,
        // across every key, even one purged and created again.
        let epoch = revision;
        let mut held = lock(&self.held);
        self.queue(Write::Claimed {
            key,
            epoch,
            revision,
        });
        held.insert(
            client_id.clone(),
            Held {
                epoch,
                local,
                owner,
            },
        );
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

    /// Another node claimed a session: if this node held it with an older
    /// claim, it lets go. A claim of this node still waiting for its answer
    /// learns of it when the answer comes (see [`Shared::claimed`]).
    pub(super) fn claimed_elsewhere(&self, owner: &Owner, revision: u64) {
        if owner.node == self.config.node_id {
            return;
        }
        let client_id = ClientId::new(owner.client_id.as_str());
        let held = lock(&self.held);
        match held.get(&client_id) {
            Some(entry) if entry.epoch < revision => {
                drop(held);
                self.let_go(&client_id, revision, owner.is_resumed);
            }
            Some(_) => {}
            None => {
                let mut claiming = lock(&self.claiming);
                if let Some(newest) = claiming.get_mut(&client_id) {
                    if newest.is_none_or(|(epoch, _)| epoch < revision) {
                        *newest = Some((revision, owner.is_resumed));
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
        if entry.epoch >= newer {
            held.insert(client_id.clone(), entry);
            return;
        }
        self.queue(Write::Forget {
            key: key(client_id),
            epoch: entry.epoch,
            is_ended: false,
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
