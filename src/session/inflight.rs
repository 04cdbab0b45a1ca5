//! The outbound QoS 1/2 window: which packet ids are in use, what each one carries
//! and how far its handshake has got, plus the deliveries waiting for room.
//!
//! It knows nothing about topics or storage; the session mirrors each change of a
//! persistent delivery to storage.

use std::collections::VecDeque;

use foldhash::{HashMap, HashMapExt};

use crate::broker::message::Delivery;
use crate::protocol::PacketId;

/// Where an outbound QoS 1/2 handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// PUBLISH sent; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published,
    /// PUBREL sent; waiting for PUBCOMP.
    Released,
}

/// One delivery awaiting acknowledgement.
#[derive(Debug, Clone)]
pub struct InFlight {
    /// What was sent.
    pub delivery: Delivery,
    /// Handshake progress.
    pub phase: Phase,
}

/// The window of one session.
#[derive(Debug)]
pub struct Outbound {
    window: HashMap<PacketId, InFlight>,
    /// Unfinished handshakes of a resumed session waiting for room in the window:
    /// the client's Receive Maximum may be smaller than before the reconnect
    /// ([MQTT-3.3.4-7]). Each keeps its packet id ([MQTT-4.4.0-1]), so none is
    /// reused meanwhile.
    resends: VecDeque<(PacketId, InFlight)>,
    pending: VecDeque<Delivery>,
    capacity: usize,
    last_id: u16,
}

impl Outbound {
    /// A window of `capacity` in-flight messages: the client's Receive Maximum
    /// ([MQTT-3.3.4-7]) or the configured maximum for 3.x clients.
    pub fn new(capacity: u16) -> Outbound {
        Outbound {
            window: HashMap::new(),
            resends: VecDeque::new(),
            pending: VecDeque::new(),
            capacity: usize::from(capacity.max(1)),
            last_id: 0,
        }
    }

    /// Whether another QoS 1/2 PUBLISH may be sent now.
    pub fn has_room(&self) -> bool {
        self.window.len() < self.capacity
    }

    /// Messages in flight.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The next free packet id, cycling through 1..=65535 ([MQTT-2.3.1-2]: an id is
    /// not reused while its handshake is unfinished).
    pub fn allocate(&mut self) -> Option<PacketId> {
        for _ in 0..=u16::MAX {
            self.last_id = self.last_id.wrapping_add(1);
            if let Some(id) = PacketId::new(self.last_id) {
                let is_waiting = self.resends.iter().any(|(waiting, _)| *waiting == id);
                if !self.window.contains_key(&id) && !is_waiting {
                    return Some(id);
                }
            }
        }
        None
    }

    /// Queues an unfinished handshake of a resumed session to be resent, in order,
    /// before any new delivery.
    pub fn push_resend(&mut self, packet_id: PacketId, in_flight: InFlight) {
        self.resends.push_back((packet_id, in_flight));
    }

    /// The oldest handshake waiting to be resent, if the window has room for it.
    pub fn pop_resend(&mut self) -> Option<(PacketId, InFlight)> {
        if self.has_room() {
            self.resends.pop_front()
        } else {
            None
        }
    }

    /// Records a sent PUBLISH (or a resumed one).
    pub fn insert(&mut self, packet_id: PacketId, in_flight: InFlight) {
        self.window.insert(packet_id, in_flight);
    }

    /// PUBACK: the QoS 1 delivery is done.
    pub fn acknowledge(&mut self, packet_id: PacketId) -> Option<InFlight> {
        let Some(entry) = self.window.remove(&packet_id) else {
            return self.take_resend(packet_id, Phase::Published);
        };
        if entry.phase == Phase::Published {
            return Some(entry);
        }
        // A PUBACK for a QoS 2 message in the release phase: keep waiting for PUBCOMP.
        self.window.insert(packet_id, entry);
        None
    }

    /// PUBREC: the QoS 2 delivery moves to the release phase. Returns it, or `None`
    /// if the id is unknown (or already released, when the PUBREC is a repeat and
    /// the PUBREL just goes out again).
    pub fn receive(&mut self, packet_id: PacketId) -> Option<&Delivery> {
        if !self.window.contains_key(&packet_id) {
            // Received on an earlier connection and not sent again yet: the
            // PUBLISH is not resent, the PUBREL goes now.
            let entry = self.take_resend(packet_id, Phase::Published)?;
            self.window.insert(packet_id, entry);
        }
        let entry = self.window.get_mut(&packet_id)?;
        entry.phase = Phase::Released;
        Some(&entry.delivery)
    }

    /// PUBCOMP: the QoS 2 delivery is done.
    pub fn complete(&mut self, packet_id: PacketId) -> Option<InFlight> {
        let Some(entry) = self.window.remove(&packet_id) else {
            return self.take_resend(packet_id, Phase::Released);
        };
        if entry.phase == Phase::Released {
            return Some(entry);
        }
        self.window.insert(packet_id, entry);
        None
    }

    /// Drops a delivery whatever its phase (a PUBREC with an error reason ends a QoS 2 flow).
    pub fn remove(&mut self, packet_id: PacketId) -> Option<InFlight> {
        self.window.remove(&packet_id).or_else(|| {
            let index = self.resends.iter().position(|(id, _)| *id == packet_id)?;
            self.resends.remove(index).map(|(_, entry)| entry)
        })
    }

    /// Takes the entry of `packet_id` out of the resend queue if it is at `phase`:
    /// a resumed session's client may answer a PUBLISH (or PUBREL) of the previous
    /// connection before the window lets it be sent again, and the answer counts
    /// ([MQTT-4.4.0-1]: the flow goes on where it was).
    fn take_resend(&mut self, packet_id: PacketId, phase: Phase) -> Option<InFlight> {
        let index = self
            .resends
            .iter()
            .position(|(id, entry)| *id == packet_id && entry.phase == phase)?;
        self.resends.remove(index).map(|(_, entry)| entry)
    }

    /// Queues a delivery behind a full window.
    pub fn push_pending(&mut self, delivery: Delivery) {
        self.pending.push_back(delivery);
    }

    /// The oldest waiting delivery, if the window has room for it.
    pub fn pop_pending(&mut self) -> Option<Delivery> {
        if self.has_room() {
            self.pending.pop_front()
        } else {
            None
        }
    }

    /// Whether deliveries or resends are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty() || !self.resends.is_empty()
    }

    /// Number of waiting deliveries.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_ids_skip_those_in_use_and_wrap() {
        let mut outbound = Outbound::new(10);
        let first = outbound.allocate().unwrap();
        assert_eq!(first.get(), 1);
        outbound.last_id = u16::MAX - 1;
        assert_eq!(outbound.allocate().unwrap().get(), u16::MAX);
        // 0 is skipped: [MQTT-2.3.1-1]
        let delivery_id = outbound.allocate().unwrap();
        assert_eq!(delivery_id.get(), 1);
    }

    #[test]
    fn window_capacity_is_enforced() {
        let outbound = Outbound::new(0);
        assert!(outbound.has_room(), "a capacity of 0 is raised to 1");
    }
}
