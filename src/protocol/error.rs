//! Why a packet could not be decoded or accepted, and the one mapping of those
//! reasons to v5 reason codes.

use super::ReasonCode;

/// A protocol violation by the peer. Every variant closes that one connection;
/// [`Error::reason_code`] picks the v5 DISCONNECT (or CONNACK) reason code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes do not form a valid packet (MQTT 5.0 §4.13).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is well formed but breaks a protocol rule.
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    /// The packet is larger than the maximum packet size we announced.
    #[error("packet of {size} bytes exceeds the maximum of {max}")]
    PacketTooLarge {
        /// The size the fixed header announced, in bytes.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// CONNECT named a protocol name or level we do not speak.
    #[error("unsupported protocol version (level {level})")]
    UnsupportedProtocolVersion {
        /// The protocol level byte the client sent: it picks the CONNACK format.
        level: u8,
    },
    /// A topic name has wildcards, is empty where it may not be, or is not valid UTF-8.
    #[error("invalid topic name: {0}")]
    TopicNameInvalid(&'static str),
    /// A topic filter breaks the wildcard rules.
    #[error("invalid topic filter: {0}")]
    TopicFilterInvalid(&'static str),
    /// A topic alias is zero or above the announced maximum.
    #[error("invalid topic alias")]
    TopicAliasInvalid,
    /// The client sent more QoS>0 PUBLISH than our receive maximum.
    #[error("receive maximum exceeded")]
    ReceiveMaximumExceeded,
    /// Payload format indicator 1 with a payload that is not UTF-8.
    #[error("payload is not valid UTF-8")]
    PayloadFormatInvalid,
    /// The client did not send a packet within 1.5 × keep-alive.
    #[error("keep-alive timeout")]
    KeepAliveTimeout,
}

impl Error {
    /// The v5 reason code that reports this error to the peer.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Error::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            Error::Protocol(_) => ReasonCode::PROTOCOL_ERROR,
            Error::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            Error::UnsupportedProtocolVersion { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            Error::TopicNameInvalid(_) => ReasonCode::TOPIC_NAME_INVALID,
            Error::TopicFilterInvalid(_) => ReasonCode::TOPIC_FILTER_INVALID,
            Error::TopicAliasInvalid => ReasonCode::TOPIC_ALIAS_INVALID,
            Error::ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            Error::PayloadFormatInvalid => ReasonCode::PAYLOAD_FORMAT_INVALID,
            Error::KeepAliveTimeout => ReasonCode::KEEP_ALIVE_TIMEOUT,
        }
    }
}
