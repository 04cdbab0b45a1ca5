//! Node liveness: every node writes a heartbeat into one JetStream key-value
//! bucket (`{stream}_NODES`, keyed by node id) and watches the others'.
//!
//! A node proves that it still owns its sessions by reaching the cluster: a
//! claim made on another node overtakes this node's claims, and this node hears
//! of it through the session bucket's watch ([`super::sessions`]). Cut off from
//! NATS, it hears nothing: another node may have taken its sessions over
//! meanwhile, and its clients would be served twice ([MQTT-3.1.4-3]). So once
//! its heartbeats have failed for longer than `[cluster] fencing_timeout`, the
//! node counts itself [`Standing::CutOff`]: it disconnects its clients (v5
//! DISCONNECT 0x9C Use another server) and refuses new ones (CONNACK 0x88 Server
//! unavailable) until a heartbeat gets through again. A client that reconnects
//! to another node gets its session there.
//!
//! The bucket's entries expire half a minute after a node's last heartbeat, so it
//! lists the nodes that are alive (`nats kv ls`); each node logs the others
//! joining and leaving (silent for longer than its own fencing timeout).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::kv;
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::connect;
use crate::broker::seam::Standing;
use crate::config::ClusterConfig;

/// How long a heartbeat stays in the bucket: the same for every node whatever
/// its fencing timeout, so that any node may create the bucket.
const HEARTBEAT_TTL: Duration = Duration::from_secs(30);

/// A node's heartbeat, as the bucket holds it (JSON, so `nats kv get` shows it).
#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    /// The node's `node_id`.
    node: String,
    /// The node's release.
    version: String,
    /// When the node started, in wall-clock milliseconds.
    started_at_ms: u64,
}

/// How often a node writes its heartbeat: several times per fencing timeout, so
/// that one lost heartbeat does not cut a node off.
fn heartbeat_interval(fencing_timeout: Duration) -> Duration {
    (fencing_timeout / 5).clamp(Duration::from_millis(100), Duration::from_secs(2))
}

/// The task that writes this node's heartbeats and watches the others', and the
/// receiver that tells this node's [`Standing`].
pub(super) fn heartbeats(
    config: ClusterConfig,
) -> (watch::Receiver<Standing>, impl Future<Output = ()>) {
    let (standing_tx, standing) = watch::channel(Standing::Joining);
    (standing, run(config, standing_tx))
}

async fn run(config: ClusterConfig, standing: watch::Sender<Standing>) {
    let interval = heartbeat_interval(config.fencing_timeout);
    let heartbeat = Heartbeat {
        node: config.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at_ms: wall_ms(),
    };
    let value = Bytes::from(serde_json::to_vec(&heartbeat).unwrap_or_default());
    let mut bucket: Option<kv::Store> = None;
    // One heartbeat at a time; the verdict does not wait for it (a request to a
    // cluster that is electing its leaders may hang for seconds).
    let mut beating: Option<Pin<Box<dyn Future<Output = Beat> + Send>>> = None;
    let mut last_beat = Instant::now();
    let mut peers = Peers::default();
    let mut changes: Option<kv::Watch> = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {
                if beating.is_none() {
                    beating = Some(Box::pin(beat(config.clone(), bucket.clone(), value.clone())));
                }
                let silent = last_beat.elapsed();
                if silent > config.fencing_timeout && *standing.borrow() != Standing::CutOff {
                    warn!(
                        node = %config.node_id,
                        silent_ms = silent.as_millis() as u64,
                        fencing_timeout_ms = config.fencing_timeout.as_millis() as u64,
                        "cluster: NATS out of reach for longer than the fencing timeout; this \
                         node can no longer prove it owns its sessions: disconnecting its \
                         clients and refusing new ones until NATS answers"
                    );
                    standing.send_replace(Standing::CutOff);
                    changes = None;
                }
                peers.expire(config.fencing_timeout);
            }
            beat = next_beat(&mut beating) => {
                beating = None;
                let (store, beat) = beat;
                if store.is_some() {
                    bucket = store;
                }
                match (beat, &bucket) {
                    (Ok(()), Some(store)) => {
                        last_beat = Instant::now();
                        if *standing.borrow() == Standing::CutOff {
                            info!(node = %config.node_id, "cluster: reachable again; accepting clients");
                        }
                        standing.send_if_modified(|standing| {
                            std::mem::replace(standing, Standing::Member) != Standing::Member
                        });
                        if changes.is_none() {
                            changes = store.watch_all().await.ok();
                        }
                    }
                    (Ok(()), None) => {}
                    (Err(error), _) => debug!(%error, "cluster: heartbeat failed"),
                }
            }
            change = next_change(&mut changes) => match change {
                Some(Ok(entry)) => peers.saw(&entry, &config.node_id),
                Some(Err(error)) => {
                    debug!(%error, "cluster: watching nodes failed; watching again");
                    changes = None;
                }
                None => changes = None,
            },
        }
    }
}

/// The outcome of one heartbeat, and the bucket if it could be opened.
type Beat = (Option<kv::Store>, Result<(), async_nats::Error>);

/// The heartbeat in flight's outcome; pending for ever without one.
async fn next_beat(beating: &mut Option<Pin<Box<dyn Future<Output = Beat> + Send>>>) -> Beat {
    match beating {
        Some(beat) => beat.await,
        None => std::future::pending().await,
    }
}

/// The next change the watch reports; pending for ever without a watch.
async fn next_change(
    changes: &mut Option<kv::Watch>,
) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match changes {
        Some(changes) => changes.next().await,
        None => std::future::pending().await,
    }
}

/// Writes one heartbeat, opening the bucket first if need be.
async fn beat(config: ClusterConfig, bucket: Option<kv::Store>, value: Bytes) -> Beat {
    let bucket = match bucket {
        Some(bucket) => bucket,
        None => match open_bucket(&config).await {
            Ok(bucket) => bucket,
            Err(error) => return (None, Err(error)),
        },
    };
    let put = bucket.put(&config.node_id, value).await;
    (Some(bucket), put.map(drop).map_err(Into::into))
}

async fn open_bucket(config: &ClusterConfig) -> Result<kv::Store, async_nats::Error> {
    let jetstream = connect(config, "liveness").await?;
    let name = format!("{}_NODES", config.stream);
    if let Ok(bucket) = jetstream.get_key_value(name.clone()).await {
        return Ok(bucket);
    }
    let created = jetstream
        .create_key_value(kv::Config {
            bucket: name.clone(),
            history: 1,
            // A node whose heartbeats stop drops out of the bucket.
            max_age: HEARTBEAT_TTL,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await;
    match created {
        Ok(bucket) => Ok(bucket),
        // Another node created it meanwhile.
        Err(error) => jetstream
            .get_key_value(name)
            .await
            .map_err(|_| error.into()),
    }
}

/// The other nodes this node has heard from, and when.
#[derive(Debug, Default)]
struct Peers {
    last_seen: HashMap<String, Instant>,
}

impl Peers {
    fn saw(&mut self, entry: &kv::Entry, own: &str) {
        if entry.operation != kv::Operation::Put || entry.key == own {
            return;
        }
        let is_new = self
            .last_seen
            .insert(entry.key.clone(), Instant::now())
            .is_none();
        if is_new {
            let version = serde_json::from_slice::<Heartbeat>(&entry.value)
                .map(|heartbeat| heartbeat.version)
                .unwrap_or_default();
            info!(peer = %entry.key, %version, "cluster: node joined");
        }
    }

    /// Forgets the nodes silent for longer than `timeout`, saying so.
    fn expire(&mut self, timeout: Duration) {
        self.last_seen.retain(|node, seen| {
            let silent = seen.elapsed();
            let is_alive = silent <= timeout;
            if !is_alive {
                warn!(
                    peer = %node,
                    silent_ms = silent.as_millis() as u64,
                    "cluster: node left (no heartbeat within the fencing timeout)"
                );
            }
            is_alive
        });
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_millis() as u64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_10_heartbeats_come_several_times_per_fencing_timeout() {
        assert_eq!(
            heartbeat_interval(Duration::from_secs(10)),
            Duration::from_secs(2)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(2)),
            Duration::from_millis(400)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_millis(200)),
            Duration::from_millis(100)
        );
        assert_eq!(
            heartbeat_interval(Duration::from_secs(600)),
            Duration::from_secs(2)
        );
    }
}
