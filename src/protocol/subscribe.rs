//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.

use bytestring::ByteString;

use super::{PacketId, Properties, QoS, ReasonCode};

/// A request to add subscriptions.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscribe {
    /// Echoed in SUBACK.
    pub packet_id: PacketId,
    /// At least one ([MQTT-3.8.3-3]). Filters are raw strings here: the session
    /// validates each one so that a bad filter can get its own reason code.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
    /// v5: subscription identifier and user properties.
    pub properties: Properties,
}

/// The options byte of one SUBSCRIBE entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS the subscriber accepts.
    pub qos: QoS,
    /// v5: do not deliver the subscriber's own publishes.
    pub no_local: bool,
    /// v5: keep the retain flag as the publisher set it.
    pub retain_as_published: bool,
    /// v5: when to send retained messages on subscribe.
    pub retain_handling: RetainHandling,
}

/// v5 Retain Handling option (MQTT 5.0 §3.8.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at every subscribe.
    #[default]
    OnSubscribe,
    /// 1: send them only if the subscription did not exist.
    OnNewSubscribe,
    /// 2: never send them.
    Never,
}

/// The answer to SUBSCRIBE: one code per filter, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SubAck {
    /// Echoes the SUBSCRIBE.
    pub packet_id: PacketId,
    /// Granted QoS (0x00–0x02) or a failure code; 3.x sees 0x80 for any failure.
    pub reasons: Vec<ReasonCode>,
    /// v5 properties.
    pub properties: Properties,
}

/// A request to remove subscriptions.
#[derive(Clone, Debug, PartialEq)]
pub struct Unsubscribe {
    /// Echoed in UNSUBACK.
    pub packet_id: PacketId,
    /// At least one ([MQTT-3.10.3-2]).
    pub filters: Vec<ByteString>,
    /// v5 user properties.
    pub properties: Properties,
}

/// The answer to UNSUBSCRIBE.
#[derive(Clone, Debug, PartialEq)]
pub struct UnsubAck {
    /// Echoes the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// v5 only: one code per filter. Empty (and not encoded) for 3.x.
    pub reasons: Vec<ReasonCode>,
    /// v5 properties.
    pub properties: Properties,
}
