//! A persistent session's stored deliveries, as its connection reads and
//! acknowledges them: the session's cursor in the [`MessageLog`](super::seam::MessageLog).

use super::seam::{self, DeliveryState, PublishWrite, QueuedDelivery};
use super::Broker;
use crate::protocol::{ClientId, PacketId};

impl Broker {
    /// A resuming session's stored deliveries (queued and in flight) and the
    /// inbound QoS 2 ids awaiting PUBREL.
    pub fn stored_state(
        &self,
        client_id: &ClientId,
    ) -> Result<(Vec<QueuedDelivery>, Vec<PacketId>), seam::Error> {
        Ok((self.log.pending(client_id)?, self.log.incoming(client_id)?))
    }

    /// Stores deliveries for several sessions as one write (retained messages a
    /// persistent session receives on subscribe).
    pub fn enqueue(&self, deliveries: Vec<(ClientId, QueuedDelivery)>) -> Result<(), seam::Error> {
        self.log.append(&PublishWrite {
            deliveries,
            ..PublishWrite::default()
        })
    }

    /// Records that a stored delivery was sent, or released, under a packet id.
    pub fn delivery_progressed(
        &self,
        client_id: &ClientId,
        seq: u64,
        state: DeliveryState,
    ) -> Result<(), seam::Error> {
        self.log.set_state(client_id, seq, state)
    }

    /// Forgets a stored delivery the client completed (or that expired).
    pub fn delivery_done(&self, client_id: &ClientId, seq: u64) -> Result<(), seam::Error> {
        self.log.remove(client_id, seq)
    }

    /// Forgets an inbound QoS 2 packet id once its PUBREL arrived.
    pub fn incoming_released(
        &self,
        client_id: &ClientId,
        packet_id: PacketId,
    ) -> Result<(), seam::Error> {
        self.log.remove_incoming(client_id, packet_id)
    }
}
