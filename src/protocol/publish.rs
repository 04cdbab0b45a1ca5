//! PUBLISH (MQTT 3.1.1 §3.3, MQTT 5.0 §3.3).

use bytes::Bytes;
use bytestring::ByteString;

use super::{PacketId, Properties, QoS};

/// An application message on the wire.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Publish {
    /// Set when this is a re-delivery of an earlier attempt.
    pub dup: bool,
    /// Delivery guarantee of this hop.
    pub qos: QoS,
    /// Retain flag.
    pub retain: bool,
    /// The topic name. The decoder has checked it has no wildcards and no U+0000;
    /// it may be empty only when a v5 topic alias stands in for it.
    pub topic: ByteString,
    /// Present exactly when `qos` > 0.
    pub packet_id: Option<PacketId>,
    /// PUBLISH properties (v5).
    pub properties: Properties,
    /// The application payload; shared, never copied, when fanned out.
    pub payload: Bytes,
}
