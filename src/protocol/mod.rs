//! The MQTT wire model: one [`Packet`] type for 3.1, 3.1.1 and 5.0.
//!
//! This module owns bytes ⇄ packets and nothing else: it does no I/O, imports no
//! runtime and knows nothing about sessions. Fields that only exist in v5
//! (properties, most reason codes) take their default value for 3.x packets, and
//! the encoder leaves them out when the negotiated version is older.
//!
//! Every function here treats its input as hostile: a malformed packet is an
//! [`Error`], never a panic, and the configured maximum packet size is checked
//! before a packet's body is buffered.

mod ack;
mod auth;
mod client_id;
pub mod codec;
mod connect;
mod disconnect;
mod error;
pub mod properties;
mod publish;
mod reason;
mod subscribe;
pub mod topic;

use std::num::NonZeroU16;

pub use ack::Ack;
pub use auth::Auth;
pub use client_id::ClientId;
pub use codec::{decode, encode};
pub use connect::{ConnAck, Connect, Will};
pub use disconnect::Disconnect;
pub use error::Error;
pub use properties::Properties;
pub use publish::Publish;
pub use reason::ReasonCode;
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use topic::{SharedFilter, TopicFilter, TopicName};

/// The protocol level a client announced in its CONNECT packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// MQTT 3.1, protocol name `MQIsdp`, level 3.
    V3_1,
    /// MQTT 3.1.1, protocol name `MQTT`, level 4.
    V3_1_1,
    /// MQTT 5.0, protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// Whether properties and reason codes exist on the wire.
    pub fn is_v5(self) -> bool {
        self == ProtocolVersion::V5
    }

    /// The protocol level byte of the CONNECT variable header.
    pub fn level(self) -> u8 {
        match self {
            ProtocolVersion::V3_1 => 3,
            ProtocolVersion::V3_1_1 => 4,
            ProtocolVersion::V5 => 5,
        }
    }
}

/// Quality of service of a PUBLISH or a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum QoS {
    /// QoS 0: fire and forget.
    #[default]
    AtMostOnce = 0,
    /// QoS 1: PUBACK.
    AtLeastOnce = 1,
    /// QoS 2: PUBREC, PUBREL, PUBCOMP.
    ExactlyOnce = 2,
}

impl QoS {
    /// Parses the two QoS bits; `3` is not a QoS ([MQTT-3.3.1-4]).
    pub fn from_bits(bits: u8) -> Option<QoS> {
        match bits {
            0 => Some(QoS::AtMostOnce),
            1 => Some(QoS::AtLeastOnce),
            2 => Some(QoS::ExactlyOnce),
            _ => None,
        }
    }
}

/// A non-zero packet identifier ([MQTT-2.3.1-1]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// Returns `None` for zero, which is never a valid packet identifier.
    pub fn new(id: u16) -> Option<PacketId> {
        NonZeroU16::new(id).map(PacketId)
    }

    /// The identifier as it appears on the wire.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// Every MQTT control packet, for every protocol version.
#[derive(Clone, Debug, PartialEq)]
pub enum Packet {
    /// Client → server: open a session.
    Connect(Box<Connect>),
    /// Server → client: answer to CONNECT.
    ConnAck(ConnAck),
    /// Either way: an application message.
    Publish(Publish),
    /// QoS 1 acknowledgement.
    PubAck(Ack),
    /// QoS 2, step 1: publish received.
    PubRec(Ack),
    /// QoS 2, step 2: publish release.
    PubRel(Ack),
    /// QoS 2, step 3: publish complete.
    PubComp(Ack),
    /// Client → server: add subscriptions.
    Subscribe(Subscribe),
    /// Server → client: answer to SUBSCRIBE.
    SubAck(SubAck),
    /// Client → server: remove subscriptions.
    Unsubscribe(Unsubscribe),
    /// Server → client: answer to UNSUBSCRIBE.
    UnsubAck(UnsubAck),
    /// Client → server keep-alive probe.
    PingReq,
    /// Server → client answer to PINGREQ.
    PingResp,
    /// Either way (server → client in v5 only): the connection ends.
    Disconnect(Disconnect),
    /// v5 enhanced authentication exchange.
    Auth(Auth),
}

impl Packet {
    /// The control packet type, the high nibble of the fixed header's first byte
    /// ([MQTT-2.1.2], table 2-1): 1 for CONNECT to 15 for AUTH.
    pub fn packet_type(&self) -> u8 {
        match self {
            Packet::Connect(_) => 1,
            Packet::ConnAck(_) => 2,
            Packet::Publish(_) => 3,
            Packet::PubAck(_) => 4,
            Packet::PubRec(_) => 5,
            Packet::PubRel(_) => 6,
            Packet::PubComp(_) => 7,
            Packet::Subscribe(_) => 8,
            Packet::SubAck(_) => 9,
            Packet::Unsubscribe(_) => 10,
            Packet::UnsubAck(_) => 11,
            Packet::PingReq => 12,
            Packet::PingResp => 13,
            Packet::Disconnect(_) => 14,
            Packet::Auth(_) => 15,
        }
    }

    /// The spec's name of control packet type `packet_type` (`None` for 0, which
    /// is reserved, and anything above 15).
    pub fn type_name(packet_type: u8) -> Option<&'static str> {
        const NAMES: [&str; 15] = [
            "CONNECT",
            "CONNACK",
            "PUBLISH",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBSCRIBE",
            "SUBACK",
            "UNSUBSCRIBE",
            "UNSUBACK",
            "PINGREQ",
            "PINGRESP",
            "DISCONNECT",
            "AUTH",
        ];
        NAMES.get(usize::from(packet_type).checked_sub(1)?).copied()
    }

    /// The packet's name as the spec writes it, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Packet::Connect(_) => "CONNECT",
            Packet::ConnAck(_) => "CONNACK",
            Packet::Publish(_) => "PUBLISH",
            Packet::PubAck(_) => "PUBACK",
            Packet::PubRec(_) => "PUBREC",
            Packet::PubRel(_) => "PUBREL",
            Packet::PubComp(_) => "PUBCOMP",
            Packet::Subscribe(_) => "SUBSCRIBE",
            Packet::SubAck(_) => "SUBACK",
            Packet::Unsubscribe(_) => "UNSUBSCRIBE",
            Packet::UnsubAck(_) => "UNSUBACK",
            Packet::PingReq => "PINGREQ",
            Packet::PingResp => "PINGRESP",
            Packet::Disconnect(_) => "DISCONNECT",
            Packet::Auth(_) => "AUTH",
        }
    }
}
