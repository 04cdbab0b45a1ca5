//! The bucket itself: opening it, the task that writes held sessions behind,
//! and the watch for other nodes' claims.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::owner::Owner;
use super::{Shared, RETRY};

/// How long the marker of a purged session stays in the bucket.
const MARKER_TTL: Duration = Duration::from_secs(300);
use crate::broker::seam::Error;
use crate::cluster::connect;
use crate::config::ClusterConfig;
use crate::protocol::ClientId;

/// The bucket's key for `client_id`: as [`crate::cluster::retained::key`] does for topics.
pub(super) fn key(client_id: &ClientId) -> String {
    crate::cluster::retained::key(client_id.as_str())
}

/// A change for the task that writes the bucket, in the order it was made.
#[derive(Debug)]
pub(super) enum Write {
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
    /// The node no longer holds the session. If it ended, its key is purged
    /// (compare-and-set on the revision), and the purge marker expires after
    /// [`MARKER_TTL`]: the bucket keeps only sessions that are held or persist.
    Forget {
        key: String,
        epoch: u64,
        is_ended: bool,
    },
}

impl Shared {
    /// Hands a write to the task; called with the `held` lock, so writes are
    /// queued in the order the values changed.
    pub(super) fn queue(&self, write: Write) {
        self.queued.fetch_add(1, Ordering::AcqRel);
        let _ = self.writes.send(write);
    }

    pub(super) async fn bucket(&self) -> Result<&kv::Store, Error> {
        self.bucket
            .get_or_try_init(|| open_bucket(&self.config))
            .await
            .map_err(|error| Error::Io(format!("cluster session bucket: {error}")))
    }
}

/// Writes the values of held sessions, in the order they changed, each a
/// compare-and-set on the revision of the previous one. A write refused because
/// the revision moved means another node claimed the session: it is dropped,
/// and the node lets go of the session if the watch has not made it do so
/// already. Other failures are retried until the bucket takes the write, as a
/// retained change is.
pub(super) async fn write_behind(
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
        Write::Forget {
            key,
            epoch,
            is_ended,
        } => {
            let Some(&(held, revision)) = revisions.get(&key) else {
                return;
            };
            if held == epoch {
                revisions.remove(&key);
                if let (true, Ok(bucket)) = (is_ended, shared.bucket().await) {
                    purge(bucket, &key, revision).await;
                }
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
        Ok(revision) => {
            revisions.insert(key, (epoch, revision));
        }
        Err(newer) => {
            revisions.remove(&key);
            // Usually the watch has told already; if it missed the claim, this does.
            if let Some((owner, revision)) = newer {
                shared.claimed_elsewhere(&owner, revision);
            }
        }
    }
}

/// One compare-and-set, retried on failures other than a moved revision: the
/// new revision, or, if another node claimed the session meanwhile, its claim.
async fn put(
    bucket: &kv::Store,
    key: &str,
    value: Bytes,
    revision: u64,
) -> Result<u64, Option<(Owner, u64)>> {
    let mut is_retry = false;
    loop {
        match bucket.update(key, value.clone(), revision).await {
            Ok(revision) => return Ok(revision),
            Err(error) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                let entry = bucket.entry(key).await.ok().flatten();
                // A retry after a timeout may find its own first attempt there.
                if let Some(entry) = entry
                    .as_ref()
                    .filter(|entry| is_retry && entry.value == value)
                {
                    return Ok(entry.revision);
                }
                debug!(key, "cluster: session write fenced by a newer claim");
                let newer = entry.and_then(|entry| {
                    let owner = Owner::decode(&entry.value).ok()?;
                    Some((owner, entry.revision))
                });
                return Err(newer);
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

/// Purges the key of a session that ended, unless another node claimed it
/// meanwhile. Best effort: a key left behind says `has_session: false`, which
/// a claim reads as no session.
async fn purge(bucket: &kv::Store, key: &str, revision: u64) {
    let purged = match bucket
        .purge_expect_revision_with_ttl(key, revision, MARKER_TTL)
        .await
    {
        // A bucket made before markers could expire (no per-message TTL).
        Err(error) if error.kind() == kv::UpdateErrorKind::Other => {
            bucket.purge_expect_revision(key, Some(revision)).await
        }
        other => other,
    };
    if let Err(error) = purged {
        debug!(%error, key, "cluster: ended session not purged");
    }
}

/// Watches the bucket for claims by other nodes.
pub(super) async fn watch(shared: Arc<Shared>) {
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
    // After a broken watch, the next one starts where it stopped.
    let mut seen = 0;
    loop {
        let changes = match seen {
            0 => bucket.watch_all().await,
            seen => bucket.watch_all_from_revision(seen + 1).await,
        };
        let mut changes = match changes {
            Ok(changes) => changes,
            Err(error) => {
                warn!(%error, "cluster: cannot watch sessions; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        while let Some(change) = changes.next().await {
            if let Ok(entry) = &change {
                seen = entry.revision;
            }
            match change {
                Ok(entry) if entry.operation == kv::Operation::Put => {
                    match Owner::decode(&entry.value) {
                        Ok(owner) => shared.claimed_elsewhere(&owner, entry.revision),
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
    let bucket = kv::Config {
        bucket: name,
        history: 1,
        num_replicas: config.replicas,
        limit_markers: Some(MARKER_TTL),
        ..Default::default()
    };
    match jetstream.create_key_value(bucket.clone()).await {
        Ok(bucket) => Ok(bucket),
        // nats-server 2.10 has no per-message TTL: purge markers stay.
        Err(_) => Ok(jetstream
            .create_key_value(kv::Config {
                limit_markers: None,
                ..bucket
            })
            .await?),
    }
}
