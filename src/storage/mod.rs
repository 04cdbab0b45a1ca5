//! What must outlive a connection: the outbound queues and in-flight state of
//! persistent sessions, and the inbound QoS 2 packet ids awaiting PUBREL.
//!
//! This module is the storage seam: the session and broker logic call these typed
//! methods and never see how records are kept. Today the only backend is
//! `memory`; a disk backend replaces it without touching the callers.
//!
//! Queue entries are keyed by a per-client sequence number assigned by the broker,
//! so replay after a reconnect is in publish order ([MQTT-4.6.0-2]..[MQTT-4.6.0-4]).

mod memory;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::protocol::{ClientId, PacketId, Properties, QoS, TopicName};

/// Why a storage operation failed. The broker treats it as "not stored": it does
/// not acknowledge a message it failed to store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not write or read.
    #[error("storage I/O failed: {0}")]
    Io(String),
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

/// The store. Cheap to share behind the broker's `Arc`.
#[derive(Debug, Default)]
pub struct Storage {
    backend: memory::MemoryStore,
}

impl Storage {
    /// A store that keeps everything in memory: state survives reconnects but not a restart.
    pub fn in_memory() -> Storage {
        Storage::default()
    }

    /// Appends deliveries for several clients as one atomic write. The broker calls
    /// this before it acknowledges the publish, so "acknowledged" means "stored".
    pub fn enqueue(&self, batch: &[(ClientId, QueuedDelivery)]) -> Result<(), Error> {
        self.backend.enqueue(batch);
        Ok(())
    }

    /// The client's stored queue, in sequence order.
    pub fn queue(&self, client_id: &ClientId) -> Result<Vec<QueuedDelivery>, Error> {
        Ok(self.backend.queue(client_id))
    }

    /// Records that a queued delivery was sent, or released, under a packet id.
    pub fn set_state(
        &self,
        client_id: &ClientId,
        seq: u64,
        state: DeliveryState,
    ) -> Result<(), Error> {
        self.backend.set_state(client_id, seq, state);
        Ok(())
    }

    /// Removes a completed (or expired, or undeliverable) delivery.
    pub fn remove(&self, client_id: &ClientId, seq: u64) -> Result<(), Error> {
        self.backend.remove(client_id, seq);
        Ok(())
    }

    /// Records an inbound QoS 2 packet id whose PUBREL has not arrived yet.
    pub fn add_incoming(&self, client_id: &ClientId, packet_id: PacketId) -> Result<(), Error> {
        self.backend.add_incoming(client_id, packet_id);
        Ok(())
    }

    /// Forgets an inbound QoS 2 packet id after PUBREL.
    pub fn remove_incoming(&self, client_id: &ClientId, packet_id: PacketId) -> Result<(), Error> {
        self.backend.remove_incoming(client_id, packet_id);
        Ok(())
    }

    /// Inbound QoS 2 packet ids awaiting PUBREL.
    pub fn incoming(&self, client_id: &ClientId) -> Result<Vec<PacketId>, Error> {
        Ok(self.backend.incoming(client_id))
    }

    /// Drops everything stored for a session that ended.
    pub fn delete_session(&self, client_id: &ClientId) -> Result<(), Error> {
        self.backend.delete_session(client_id);
        Ok(())
    }
}
