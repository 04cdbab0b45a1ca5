//! What must outlive a connection, and a restart: session records, the
//! subscriptions, outbound queues and in-flight state of persistent sessions, the
//! inbound QoS 2 packet ids awaiting PUBREL, and retained messages.
//!
//! This module is the storage seam: the session and broker logic call these typed
//! methods and never see how records are kept. Two backends sit behind it:
//! `fjall` (an LSM tree on disk; the only code that imports fjall) and
//! `memory` (nothing survives a restart; for tests and benchmarks). The
//! `[storage] durability` setting picks one — see [`Durability`].
//!
//! Queue entries are keyed by a per-client sequence number assigned by the broker,
//! so replay after a reconnect is in publish order ([MQTT-4.6.0-2]..[MQTT-4.6.0-4]).
//! Deadlines are [`Instant`]s here and wall-clock times on disk (`record::Clock`).

mod fjall;
mod group_commit;
mod memory;
pub(crate) mod record;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use crate::config::Durability;
use crate::config::StorageConfig;
use crate::protocol::{ClientId, PacketId, Properties, QoS, SubscriptionOptions, TopicName};

/// Why a storage operation failed. The broker treats it as "not stored": it does
/// not acknowledge a message it failed to store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not write or read.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A stored record does not decode.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// A stored record has a format version this release does not know.
    #[error(
        "stored record has format version {found}; this release reads up to {}",
        record::FORMAT
    )]
    UnknownFormat {
        /// The version byte found.
        found: u8,
    },
    /// Another process (a second rookery) holds the data directory's lock.
    #[error(
        "data directory {} is in use by another rookery process",
        crate::config::shown(dir)
    )]
    InUse {
        /// The data directory, as configured.
        dir: PathBuf,
    },
    /// The data directory could not be created or opened.
    #[error("{}", data_dir_error(dir, source))]
    DataDir {
        /// The data directory, as configured.
        dir: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The data dir was written by a newer release; it is left untouched.
    #[error("{dir}: written by a newer rookery (data format {found}, this release reads up to {}); upgrade, or point storage.dir elsewhere", record::FORMAT)]
    NewerDataDir {
        /// The data directory.
        dir: PathBuf,
        /// Its format version.
        found: u8,
    },
}

/// "permission denied writing /x" reads better than "cannot open /x: permission denied".
fn data_dir_error(dir: &std::path::Path, source: &std::io::Error) -> String {
    let dir = crate::config::shown(dir);
    match source.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied writing data directory {dir}")
        }
        _ => format!(
            "cannot open data directory {dir}: {}",
            crate::config::in_words(source)
        ),
    }
}

/// An application message as the broker routes it: shared by every subscriber it
/// fans out to, so the payload is never copied.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Where it was published.
    pub topic: TopicName,
    /// The payload.
    pub payload: Bytes,
    /// The QoS the publisher used; each delivery is capped by its subscription.
    pub qos: QoS,
    /// The publisher's retain flag.
    pub retain: bool,
    /// Properties forwarded untouched to subscribers ([MQTT-3.3.2-17], [MQTT-3.3.2-18]):
    /// payload format, content type, response topic, correlation data, user
    /// properties. Topic alias, subscription ids and expiry are per-hop and kept out.
    pub properties: Properties,
    /// When the message expires (v5 Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Whether the message may no longer be delivered ([MQTT-3.3.2-5]).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// A copy whose topic and payload own their bytes. A decoded message's are
    /// slices of the connection's read buffer; one kept for long (a retained
    /// message) must not keep that whole buffer alive.
    pub fn detached(&self) -> Message {
        let topic = TopicName::new(bytestring::ByteString::from(self.topic.as_str().to_owned()))
            .unwrap_or_else(|_| self.topic.clone());
        Message {
            topic,
            payload: Bytes::copy_from_slice(&self.payload),
            ..self.clone()
        }
    }
}

/// One message on its way to one subscriber.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// min(publish QoS, granted QoS) ([MQTT-3.8.4-8]).
    pub qos: QoS,
    /// The retain flag to send: set for retained messages sent on subscribe, and
    /// for v5 retain-as-published subscriptions.
    pub retain: bool,
    /// v5 subscription identifiers of every matching subscription ([MQTT-3.3.4-3]).
    pub subscription_ids: Vec<u32>,
    /// The per-client sequence number of the stored copy, for persistent sessions.
    pub seq: Option<u64>,
}

/// How far an outbound QoS 1/2 message has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not yet sent.
    Queued,
    /// PUBLISH sent with this id; awaiting PUBACK or PUBREC.
    Sent(PacketId),
    /// PUBREC received, PUBREL sent; awaiting PUBCOMP.
    Released(PacketId),
}

/// A stored queue entry.
#[derive(Clone, Debug, PartialEq)]
pub struct QueuedDelivery {
    /// Sequence number, increasing per client in routing order.
    pub seq: u64,
    /// What to deliver.
    pub delivery: Delivery,
    /// Progress.
    pub state: DeliveryState,
}

impl QueuedDelivery {
    /// Numbers a delivery `seq` for storage: the entry to store, not yet sent, and
    /// the same delivery for the subscriber's mailbox.
    pub fn queued(seq: u64, delivery: Delivery) -> (QueuedDelivery, Delivery) {
        let delivery = Delivery {
            seq: Some(seq),
            ..delivery
        };
        let entry = QueuedDelivery {
            seq,
            delivery: delivery.clone(),
            state: DeliveryState::Queued,
        };
        (entry, delivery)
    }
}

/// A will as CONNECT described it; it becomes a [`Message`] only when published,
/// because its expiry counts from then. Stored with the session record of a
/// connected client, so that it survives the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct WillMessage {
    /// Will topic.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Forwarded will properties.
    pub properties: Properties,
    /// v5 Message Expiry Interval of the will.
    pub expiry_interval: Option<u32>,
    /// v5 Will Delay Interval.
    pub delay: Duration,
}

impl WillMessage {
    /// The will as a message published at `now`.
    pub fn to_message(&self, now: Instant) -> Message {
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self
                .expiry_interval
                .and_then(|seconds| now.checked_add(Duration::from_secs(u64::from(seconds)))),
        }
    }
}

/// What a session left on disk.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionRecord {
    /// A connection holds the session. If the broker stops without a detach (a
    /// crash, or a shutdown, which keeps this record as it is), the session counts
    /// as disconnected at the restart: it expires `expiry` after it, and its will
    /// is published `will.delay` after it, or when the session expires first
    /// ([MQTT-3.1.2-8], [MQTT-3.1.3-9]).
    Online {
        /// The session expiry interval; `None` until a clean start replaces it.
        /// `Some(ZERO)` is a session that ends with its connection, stored only to
        /// keep its will: after a restart the will is published at once.
        expiry: Option<Duration>,
        /// The will from CONNECT, unless the session has none.
        will: Option<Box<WillMessage>>,
    },
    /// The session waits offline.
    Offline {
        /// When it expires; `None` never.
        expires_at: Option<Instant>,
        /// A will whose delay has not passed yet ([MQTT-3.1.3-9]).
        will: Option<StoredWill>,
    },
}

/// A will waiting for its delay.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredWill {
    /// When to publish it.
    pub publish_at: Instant,
    /// The will message.
    pub message: Arc<Message>,
}

/// Everything one publish changes, written atomically: one write batch, so a
/// crash leaves all of it or none of it.
#[derive(Debug, Default)]
pub struct PublishWrite<'a> {
    /// Deliveries to persistent sessions.
    pub deliveries: Vec<(ClientId, QueuedDelivery)>,
    /// A retained message to store (or, with an empty payload, to clear).
    pub retained: Option<&'a Message>,
    /// An inbound QoS 2 packet id that is now awaiting PUBREL: stored with the
    /// deliveries, so a crash can neither route the message twice nor lose it.
    pub incoming: Option<(&'a ClientId, PacketId)>,
    /// The record of the session whose will this is, now without the will: stored
    /// with the deliveries, so a crash can neither publish the will twice nor lose it.
    pub session: Option<(&'a ClientId, &'a SessionRecord)>,
}

impl PublishWrite<'_> {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
            && self.retained.is_none()
            && self.incoming.is_none()
            && self.session.is_none()
    }
}

/// A stored subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSubscription {
    /// The subscriber.
    pub client_id: ClientId,
    /// The filter as the client sent it, `$share/{group}/` included.
    pub filter: String,
    /// QoS, no-local, retain-as-published, retain handling.
    pub options: SubscriptionOptions,
    /// v5 subscription identifier.
    pub identifier: Option<u32>,
}

/// A stored session, as found at startup.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredSession {
    /// The session's client id.
    pub client_id: ClientId,
    /// Its record.
    pub record: SessionRecord,
    /// Stored queue entries (queued and in flight).
    pub queued: usize,
    /// The highest stored sequence number, 0 if none.
    pub max_seq: u64,
}

/// Everything found on disk at startup. Orphans (queues or subscriptions of a
/// session without a record) are deleted, not returned.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every persistent session.
    pub sessions: Vec<RecoveredSession>,
    /// Their subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
    /// Retained messages that have not expired.
    pub retained: Vec<Arc<Message>>,
}

/// A point in the sequence of writes: once storage is durable up to it, every
/// write committed before it was taken survives power loss. See [`Storage::wait_durable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyncPoint(u64);

#[derive(Debug)]
enum Backend {
    Memory(memory::MemoryStore),
    Fjall(fjall::FjallStore),
}

/// The store. Cheap to share behind the broker's `Arc`.
#[derive(Debug)]
pub struct Storage {
    backend: Backend,
}

impl Default for Storage {
    fn default() -> Storage {
        Storage::in_memory()
    }
}

impl Storage {
    /// A store that keeps everything in memory: state survives reconnects but not a restart.
    pub fn in_memory() -> Storage {
        Storage {
            backend: Backend::Memory(memory::MemoryStore::default()),
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
        Ok(Storage { backend })
    }

    /// Everything stored, for the broker to rebuild itself at startup.
    pub fn recover(&self) -> Result<Recovered, Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(Recovered::default()),
            Backend::Fjall(store) => store.recover(),
        }
    }

    /// Writes a publish's deliveries, retained message and inbound QoS 2 id as one
    /// atomic batch. The broker calls this before it acknowledges the publish, so
    /// "acknowledged" means "stored".
    pub fn commit_publish(&self, write: &PublishWrite<'_>) -> Result<(), Error> {
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

    /// Appends deliveries for several clients as one atomic write.
    pub fn enqueue(&self, deliveries: Vec<(ClientId, QueuedDelivery)>) -> Result<(), Error> {
        self.commit_publish(&PublishWrite {
            deliveries,
            ..PublishWrite::default()
        })
    }

    /// The client's stored queue, in sequence order.
    pub fn queue(&self, client_id: &ClientId) -> Result<Vec<QueuedDelivery>, Error> {
        match &self.backend {
            Backend::Memory(store) => Ok(store.queue(client_id)),
            Backend::Fjall(store) => store.queue(client_id),
        }
    }

    /// Records that a queued delivery was sent, or released, under a packet id.
    pub fn set_state(
        &self,
        client_id: &ClientId,
        seq: u64,
        state: DeliveryState,
    ) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(store) => {
                store.set_state(client_id, seq, state);
                Ok(())
            }
            Backend::Fjall(store) => store.set_state(client_id, seq, state),
        }
    }

    /// Removes a completed (or expired, or undeliverable) delivery.
    pub fn remove(&self, client_id: &ClientId, seq: u64) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(store) => {
                store.remove(client_id, seq);
                Ok(())
            }
            Backend::Fjall(store) => store.remove(client_id, seq),
        }
    }

    /// Records an inbound QoS 2 packet id whose PUBREL has not arrived yet.
    pub fn add_incoming(&self, client_id: &ClientId, packet_id: PacketId) -> Result<(), Error> {
        self.commit_publish(&PublishWrite {
            incoming: Some((client_id, packet_id)),
            ..PublishWrite::default()
        })
    }

    /// Forgets an inbound QoS 2 packet id after PUBREL.
    pub fn remove_incoming(&self, client_id: &ClientId, packet_id: PacketId) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(store) => {
                store.remove_incoming(client_id, packet_id);
                Ok(())
            }
            Backend::Fjall(store) => store.remove_incoming(client_id, packet_id),
        }
    }

    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub fn incoming(&self, client_id: &ClientId) -> Result<Vec<PacketId>, Error> {
        match &self.backend {
            Backend::Memory(store) => Ok(store.incoming(client_id)),
            Backend::Fjall(store) => store.incoming(client_id),
        }
    }

    /// Writes (replaces) a persistent session's record. The memory backend keeps
    /// none: the registry is the only copy.
    pub fn save_session(&self, client_id: &ClientId, record: &SessionRecord) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Fjall(store) => store.save_session(client_id, record),
        }
    }

    /// Stores a subscription of a persistent session (replacing one on the same filter).
    pub fn save_subscription(&self, subscription: &StoredSubscription) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Fjall(store) => store.save_subscription(subscription),
        }
    }

    /// Forgets a subscription.
    pub fn remove_subscription(&self, client_id: &ClientId, filter: &str) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Fjall(store) => store.remove_subscription(client_id, filter),
        }
    }

    /// Drops everything stored for a session that ended: its record, subscriptions,
    /// queue, in-flight state and inbound QoS 2 ids.
    pub fn delete_session(&self, client_id: &ClientId) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(store) => {
                store.delete_session(client_id);
                Ok(())
            }
            Backend::Fjall(store) => store.delete_session(client_id),
        }
    }

    /// The point every write committed so far has reached. Only `fsync` durability
    /// ever has to wait for it; for the others it never moves.
    pub fn sync_point(&self) -> SyncPoint {
        match &self.backend {
            Backend::Memory(_) => SyncPoint::default(),
            Backend::Fjall(store) => store.sync_point(),
        }
    }

    /// Waits until every write up to `point` is on stable storage (`fsync`
    /// durability; immediate otherwise). Concurrent callers share one fsync: this
    /// is the group commit. Cancel-safe.
    pub async fn wait_durable(&self, point: SyncPoint) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Fjall(store) => store.wait_durable(point).await,
        }
    }

    /// Flushes and fsyncs everything (graceful shutdown).
    pub fn sync(&self) -> Result<(), Error> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Fjall(store) => store.sync(),
        }
    }
}
