//! PUBACK, PUBREC, PUBREL and PUBCOMP: the QoS 1 and QoS 2 handshakes share one shape.

use super::{PacketId, Properties, ReasonCode};

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    /// The packet being acknowledged.
    pub packet_id: PacketId,
    /// v5 reason code; `SUCCESS` for 3.x.
    pub reason: ReasonCode,
    /// v5 properties (reason string, user properties).
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement with no properties.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }
    }
}
