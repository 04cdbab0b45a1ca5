//! The cluster's [`RetainStore`]: one JetStream key-value bucket (`{stream}_RETAINED`,
//! one value per topic) that every node writes and watches. Each node's
//! retained trie is a mirror of the bucket, so a SUBSCRIBE on any node sees a
//! retained message set on any other.
//!
//! A topic's key is its bytes in hex (KV keys allow few characters), or, past
//! [`MAX_PLAIN_KEY`] bytes, `h` + its SHA-256. Clearing a topic writes the
//! empty-payload message rather than deleting the key, so every change carries
//! its topic, whatever the key.

use std::sync::{Arc, Mutex};

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{connect, RETRY};
use crate::broker::message::Message;
use crate::broker::seam::{Error, RetainStore};
use crate::config::ClusterConfig;

/// Topics up to this many bytes are keyed by their hex.
const MAX_PLAIN_KEY: usize = 512;

/// Retained messages in a JetStream KV bucket.
#[derive(Debug)]
pub struct NatsRetainStore {
    puts: mpsc::UnboundedSender<Arc<Message>>,
    changes: Mutex<Option<mpsc::UnboundedReceiver<Arc<Message>>>>,
}

impl NatsRetainStore {
    /// Starts the task that writes and watches the bucket. Must be called inside
    /// a tokio runtime.
    pub fn start(config: ClusterConfig) -> NatsRetainStore {
        let (puts, queue) = mpsc::unbounded_channel();
        let (changes_tx, changes) = mpsc::unbounded_channel();
        tokio::spawn(run(config, queue, changes_tx));
        NatsRetainStore {
            puts,
            changes: Mutex::new(Some(changes)),
        }
    }
}

impl RetainStore for NatsRetainStore {
    /// Queued for the bucket, in order; the broker's own trie has it at once.
    fn put(&self, message: &Message) -> Result<(), Error> {
        self.puts
            .send(Arc::new(message.detached()))
            .map_err(|_| Error::Io("the cluster's retained store has stopped".into()))
    }

    /// Nothing up front: the watch replays the bucket's current values first.
    fn load(&self) -> Result<Vec<Arc<Message>>, Error> {
        Ok(Vec::new())
    }

    fn watch(&self) -> Option<mpsc::UnboundedReceiver<Arc<Message>>> {
        self.changes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }
}

/// The bucket's key for `topic`.
pub fn key(topic: &str) -> String {
    if topic.len() <= MAX_PLAIN_KEY {
        return format!("t{}", hex(topic.as_bytes()));
    }
    format!("h{}", hex(&Sha256::digest(topic.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

async fn run(
    config: ClusterConfig,
    mut puts: mpsc::UnboundedReceiver<Arc<Message>>,
    changes: mpsc::UnboundedSender<Arc<Message>>,
) {
    let bucket = loop {
        match open_bucket(&config).await {
            Ok(bucket) => break bucket,
            Err(error) => {
                warn!(%error, "cluster: cannot open the retained-message bucket; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    info!(bucket = %bucket_name(&config), "cluster: retained messages shared");
    loop {
        let mut watch = loop {
            match bucket.watch_with_history(">").await {
                Ok(watch) => break watch,
                Err(error) => {
                    warn!(%error, "cluster: cannot watch retained messages; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        loop {
            tokio::select! {
                put = puts.recv() => {
                    let Some(message) = put else { return };
                    share(&bucket, &message).await;
                }
                entry = watch.next() => match entry {
                    Some(Ok(entry)) if entry.operation == kv::Operation::Put => {
                        match crate::storage::decode_message(entry.value) {
                            Ok(message) => {
                                let _ = changes.send(Arc::new(message));
                            }
                            Err(error) => warn!(%error, key = %entry.key, "cluster: retained message skipped"),
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        warn!(%error, "cluster: watching retained messages failed; watching again");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

/// Writes one retained change, trying again until the bucket takes it: a change
/// that is skipped would leave the nodes disagreeing for good, and the changes
/// after it wait so that the bucket keeps their order.
async fn share(bucket: &kv::Store, message: &Message) {
    let value = crate::storage::encode_message(message);
    let key = key(message.topic.as_str());
    let mut logged = false;
    while let Err(error) = bucket.put(key.as_str(), value.clone()).await {
        if !logged {
            warn!(%error, topic = %message.topic, "cluster: could not share a retained message; retrying");
            logged = true;
        }
        tokio::time::sleep(RETRY).await;
    }
}

fn bucket_name(config: &ClusterConfig) -> String {
    format!("{}_RETAINED", config.stream)
}

async fn open_bucket(config: &ClusterConfig) -> Result<kv::Store, async_nats::Error> {
    let jetstream: jetstream::Context = connect(config, "retained").await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_valid_kv_keys_and_distinct() {
        let valid = |key: &str| key.bytes().all(|b| b.is_ascii_alphanumeric());
        let long = "x".repeat(MAX_PLAIN_KEY + 1);
        for topic in ["a/b", "a.b", "$SYS/x", "é/ /*", long.as_str()] {
            assert!(valid(&key(topic)), "{topic}");
        }
        assert_ne!(key("a/b"), key("a.b"));
        assert_eq!(key(&long).len(), 65);
    }
}
