//! [`MessageLog`]: what a publish leaves for persistent sessions, and each
//! session's cursor over it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use super::{Error, SessionRecord};
use crate::broker::message::Delivery;
use crate::metrics::StorageLatency;
use crate::protocol::{ClientId, PacketId};

/// The stored deliveries of persistent sessions, in routing order per session.
///
/// An entry is acknowledged by moving it through [`DeliveryState`] and removing
/// it once the client completed it: the packet id and the sequence number are
/// the ack handle. Every method is keyed by client id, and sequence numbers are
/// the broker's, so a cursor is "the entries of this client, in `seq` order".
pub trait MessageLog: Send + Sync + fmt::Debug {
    /// Writes everything one publish changes as one atomic unit: a crash leaves
    /// all of it or none of it. The broker calls this before it acknowledges the
    /// publish, so "acknowledged" means "stored" (durable once [`MessageLog::wait_durable`]
    /// covers [`MessageLog::sync_point`]).
    fn append(&self, write: &PublishWrite<'_>) -> Result<(), Error>;

    /// A session's cursor: its stored entries, queued and in flight, in sequence order.
    fn pending(&self, client_id: &ClientId) -> Result<Vec<QueuedDelivery>, Error>;

    /// Records that an entry was sent, or released, under a packet id.
    fn set_state(&self, client_id: &ClientId, seq: u64, state: DeliveryState) -> Result<(), Error>;

    /// Removes a completed (or expired, or undeliverable) entry.
    fn remove(&self, client_id: &ClientId, seq: u64) -> Result<(), Error>;

    /// Inbound QoS 2 packet ids whose PUBREL has not arrived yet.
    fn incoming(&self, client_id: &ClientId) -> Result<Vec<PacketId>, Error>;

    /// Forgets an inbound QoS 2 packet id after PUBREL.
    fn remove_incoming(&self, client_id: &ClientId, packet_id: PacketId) -> Result<(), Error>;

    /// The point every write appended so far has reached. Only a log whose
    /// appends become durable later (`fsync` durability) ever moves it.
    fn sync_point(&self) -> SyncPoint;

    /// Waits until every write up to `point` is durable. Concurrent callers share
    /// one fsync: this is the group commit. Cancel-safe.
    fn wait_durable(
        &self,
        point: SyncPoint,
    ) -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send + '_>>;

    /// Makes everything durable (graceful shutdown).
    fn sync(&self) -> Result<(), Error>;

    /// How long commits and fsyncs take, for `/metrics`; `None` when there is
    /// nothing worth timing.
    fn latency(&self) -> Option<&StorageLatency> {
        None
    }
}

/// A point in the sequence of writes: once storage is durable up to it, every
/// write committed before it was taken survives power loss. See [`MessageLog::wait_durable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyncPoint(pub u64);

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

/// Everything one publish changes in the log, written atomically: one write batch, so a
/// crash leaves all of it or none of it.
#[derive(Debug, Default)]
pub struct PublishWrite<'a> {
    /// Deliveries to persistent sessions.
    pub deliveries: Vec<(ClientId, QueuedDelivery)>,
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
        self.deliveries.is_empty() && self.incoming.is_none() && self.session.is_none()
    }
}
