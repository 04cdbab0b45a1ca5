//! The single node's store: what must outlive a connection, and a restart —
//! session records, the subscriptions, outbound queues and in-flight state of
//! persistent sessions, the inbound QoS 2 packet ids awaiting PUBREL, and
//! retained messages.
//!
//! [`Storage`] implements three of the broker's seams ([`SessionStore`],
//! [`MessageLog`], [`RetainStore`]); the broker reaches it only through them.
//! Two backends sit behind it: `fjall` (an LSM tree on disk; the only code that
//! imports fjall) and `memory` (nothing survives a restart; for tests and
//! benchmarks). The `[storage] durability` setting picks one — see [`Durability`].
//!
//! Queue entries are keyed by a per-client sequence number assigned by the broker,
//! so replay after a reconnect is in publish order ([MQTT-4.6.0-2]..[MQTT-4.6.0-4]).
//! Deadlines are [`Instant`](std::time::Instant)s here and wall-clock times on
//! disk (`record::Clock`).

mod claims;
mod fjall;
mod group_commit;
mod memory;
pub(crate) mod record;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::message::{Delivery, Message, StoredWill, WillMessage};
pub use crate::broker::seam::Error;
use crate::broker::seam::{
    Claim, Claimed, Claiming, DeliveryState, Intent, LocalOnly, MessageLog, PublishWrite,
    QueuedDelivery, Recovered, RecoveredSession, RetainStore, Seams, SessionRecord, SessionStore,
    StoredSubscription, SyncPoint,
};
pub use crate::config::Durability;
use crate::config::StorageConfig;
use crate::metrics::StorageLatency;
use crate::protocol::{ClientId, PacketId};
use claims::Claims;

#[derive(Debug)]
enum Backend {
    Memory(memory::MemoryStore),
    Fjall(fjall::FjallStore),
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Storage {
    backend: Backend,
    claims: Claims,
}

impl Default for Storage {
    fn default() -> Storage {
        Storage::in_memory()
    }
}

impl From<Storage> for Seams {
    /// A single node: this store behind the three storage seams, and nobody to fan out to.
    fn from(storage: Storage) -> Seams {
        let storage = Arc::new(storage);
        Seams {
            sessions: storage.clone(),
            log: storage.clone(),
            retained: storage,
            fanout: Arc::new(LocalOnly),
        }
    }
}

/// A message in the store's versioned record format (expiry as wall-clock
/// time), for carrying it to another node.
pub fn encode_message(message: &Message) -> bytes::Bytes {
    record::encode_retained(message, record::Clock::now())
}

/// A message [`encode_message`] wrote (on this node or another).
pub fn decode_message(bytes: bytes::Bytes) -> Result<Message, Error> {
    record::decode_retained(bytes, record::Clock::now())
}

impl Storage {
    /// A store that keeps everything in memory: state survives reconnects but not a restart.
    pub fn in_memory() -> Storage {
        Storage {
            backend: Backend::Memory(memory::MemoryStore::default()),
            claims: Claims::default(),
        }
    }

    /// Opens (or creates) the store `config` describes. A data dir written by a
    /// newer release is refused ([`Error::NewerDataDir`]); a torn journal tail is
    /// recovered by fjall, keeping every complete batch before it.
    pub fn open(config: &StorageConfig) -> Result<Storage, Error> {
        let backend = match config.durability {
            Durability::Memory => Backend::Memory(memory::MemoryStore::default()),
            Durability::Process => Backend::Fjall(fjall::FjallStore::open(&config.dir, false)?),
            Durability::Fsync => Backend::Fjall(fjall::FjallStore::open(&config.dir, true)?),
        };
        Ok(Storage {
            backend,
            claims: Claims::default(),
        })
    }
}

impl SessionStore for Storage {
    /// In memory: ready at once, and no other node to resume a session from.
    fn claim(&self, client_id: &ClientId, _intent: Intent) -> Claiming<'_> {
        Claiming::Ready(Claimed {
            claim: self.claims.claim(client_id),
            resumed_from_elsewhere: None,
        })
    }

    fn is_current(&self, client_id: &ClientId, claim: Claim) -> bool {
        self.claims.is_current(client_id, claim)
    }

    /// The memory backend keeps no record: the registry is the only copy.
    fn save(
        &self,
        client_id: &ClientId,
        record: &SessionRecord,
        claim: Claim,
    ) -> Result<(), Error> {
        self.claims
            .fenced(client_id, claim, || match &self.backend {
                Backend::Memory(_) => Ok(()),
                Backend::Fjall(store) => store.save_session(client_id, record),
            })
    }

    fn save_subscription(
        &self,
        subscription: &StoredSubscription,
        claim: Claim,
    ) -> Result<(), Error> {
        self.claims
            .fenced(&subscription.client_id, claim, || match &self.backend {
                Backend::Memory(_) => Ok(()),
                Backend::Fjall(store) => store.save_subscription(subscription),
            })
    }

    fn remove_subscription(
        &self,
        client_id: &ClientId,
        filter: &str,
        claim: Claim,
    ) -> Result<(), Error> {
        self.claims
            .fenced(client_id, claim, || match &self.backend {
                Backend::Memory(_) => Ok(()),
                Backend::Fjall(store) => store.remove_subscription(client_id, filter),
            })
    }

    fn drop_session(&self, client_id: &ClientId, claim: Claim) -> Result<(), Error> {
        self.claims
            .fenced(client_id, claim, || match &self.backend {
                Backend::Memory(store) => {
                    store.delete_session(client_id);
                    Ok(())
                }
                Backend::Fjall(store) => store.delete_session(client_id),
            })
    }

    fn release(&self, client_id: &ClientId, claim: Claim) {
        self.claims.release(client_id, claim);
    }

    fn recover(&self) -> Result<Recovered, Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(Recovered::default()),
            Backend::Fjall(store) => store.recover(),
        }
    }
}

impl MessageLog for Storage {
    /// Only the disk backend has anything worth timing.
    fn latency(&self) -> Option<&StorageLatency> {
        match &self.backend {
            Backend::Memory(_) => None,
            Backend::Fjall(store) => Some(store.latency()),
        }
    }

    fn append(&self, write: &PublishWrite<'_>) -> Result<(), Error> {
        if write.is_empty() {
            return Ok(());
        }
        match &self.backend {
            Backend::Memory(store) => {
                store.enqueue(&write.deliveries);
                if let Some((client_id, packet_id)) = write.incoming {
                    store.add_incoming(client_id, packet_id);
                }
                Ok(())
            }
            Backend::Fjall(store) => store.commit_publish(write),
        }
    }

    fn pending(&self, client_id: &ClientId) -> Result<Vec<QueuedDelivery>, Error> {
        match &self.backend {
            Backend::Memory(store) => Ok(store.queue(client_id)),
            Backend::Fjall(store) => store.queue(client_id),
        }
    }

    fn set_state(&self, client_id: &ClientId, seq: u64, state: DeliveryState) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(store) => {
                store.set_state(client_id, seq, state);
                Ok(())
            }
            Backend::Fjall(store) => store.set_state(client_id, seq, state),
        }
    }

    fn remove(&self, client_id: &ClientId, seq: u64) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(store) => {
                store.remove(client_id, seq);
                Ok(())
            }
            Backend::Fjall(store) => store.remove(client_id, seq),
        }
    }

    fn incoming(&self, client_id: &ClientId) -> Result<Vec<PacketId>, Error> {
        match &self.backend {
            Backend::Memory(store) => Ok(store.incoming(client_id)),
            Backend::Fjall(store) => store.incoming(client_id),
        }
    }

    fn remove_incoming(&self, client_id: &ClientId, packet_id: PacketId) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(store) => {
                store.remove_incoming(client_id, packet_id);
                Ok(())
            }
            Backend::Fjall(store) => store.remove_incoming(client_id, packet_id),
        }
    }

    fn sync_point(&self) -> SyncPoint {
        match &self.backend {
            Backend::Memory(_) => SyncPoint::default(),
            Backend::Fjall(store) => store.sync_point(),
        }
    }

    fn wait_durable(
        &self,
        point: SyncPoint,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>> {
        Box::pin(async move {
            match &self.backend {
                Backend::Memory(_) => Ok(()),
                Backend::Fjall(store) => store.wait_durable(point).await,
            }
        })
    }

    fn sync(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Fjall(store) => store.sync(),
        }
    }
}

impl RetainStore for Storage {
    /// Memory durability keeps retained messages only in the broker's trie.
    fn put(&self, message: &Message) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Fjall(store) => store.put_retained(message),
        }
    }

    fn load(&self) -> Result<Vec<Arc<Message>>, Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(Vec::new()),
            Backend::Fjall(store) => store.retained(),
        }
    }

    /// Nobody else writes this node's store.
    fn watch(&self) -> Option<mpsc::UnboundedReceiver<Arc<Message>>> {
        None
    }
}
