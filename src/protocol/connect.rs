//! CONNECT and CONNACK (MQTT 3.1.1 §3.1–3.2, MQTT 5.0 §3.1–3.2).

use bytes::Bytes;
use bytestring::ByteString;

use super::{Properties, ProtocolVersion, QoS, ReasonCode};

/// A client's request to open a session. The protocol version is read from here,
/// never chosen by port.
#[derive(Clone, Debug, PartialEq)]
pub struct Connect {
    /// From the protocol name and level.
    pub version: ProtocolVersion,
    /// Clean Session (3.x) or Clean Start (5.0).
    pub clean_start: bool,
    /// Keep-alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// May be empty: the server then assigns one (v5) or, in 3.1.1, accepts it only with clean session.
    pub client_id: ByteString,
    /// The message to publish if the connection ends abnormally.
    pub will: Option<Will>,
    /// Present when the username flag is set.
    pub username: Option<ByteString>,
    /// Present when the password flag is set; binary data.
    pub password: Option<Bytes>,
    /// CONNECT properties (v5).
    pub properties: Properties,
}

/// The will message of a CONNECT.
#[derive(Clone, Debug, PartialEq)]
pub struct Will {
    /// Validated as a topic name (no wildcards) by the decoder.
    pub topic: ByteString,
    /// Will payload; binary.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Will properties (v5): delay interval, expiry, content type, …
    pub properties: Properties,
}

/// The server's answer to CONNECT.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ConnAck {
    /// Whether the server resumed a stored session.
    pub session_present: bool,
    /// A v5 reason code; mapped to a 3.x return code when encoded for a 3.x client.
    pub code: ReasonCode,
    /// CONNACK properties (v5).
    pub properties: Properties,
}
