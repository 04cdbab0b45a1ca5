//! CONNECT: what a client asked for, checked against the rules and our limits, and
//! the CONNACK that answers it. Pure: the connection task does the waiting
//! (takeover) and the sending.

use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;

use super::publish::forwarded_properties;
pub use crate::broker::message::WillMessage;
use crate::config::{Limits, SessionConfig};
use crate::protocol::{
    ClientId, ConnAck, Connect, Properties, ProtocolVersion, ReasonCode, TopicName,
};

/// How long a session outlives its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionExpiry {
    /// It ends with the connection (clean session 1, or v5 expiry 0).
    WithConnection,
    /// It is kept this long after the connection closes.
    After(Duration),
    /// It is kept until a clean start replaces it (3.x clean session 0, v5 0xFFFFFFFF).
    Never,
}

impl SessionExpiry {
    /// From a v5 Session Expiry Interval ([MQTT-3.1.2-23]), capped by configuration.
    pub fn from_interval(seconds: u32, cap: Option<Duration>) -> SessionExpiry {
        let expiry = match seconds {
            0 => SessionExpiry::WithConnection,
            u32::MAX => SessionExpiry::Never,
            n => SessionExpiry::After(Duration::from_secs(u64::from(n))),
        };
        match (expiry, cap) {
            (SessionExpiry::WithConnection, _) | (_, None) => expiry,
            (SessionExpiry::Never, Some(cap)) => SessionExpiry::After(cap),
            (SessionExpiry::After(asked), Some(cap)) => SessionExpiry::After(asked.min(cap)),
        }
    }

    /// Whether the session outlives its connection.
    pub fn is_persistent(self) -> bool {
        self != SessionExpiry::WithConnection
    }

    /// The deadline for a session that goes offline at `now`; `None` for never.
    pub fn deadline(self, now: Instant) -> Option<Instant> {
        match self {
            SessionExpiry::WithConnection => Some(now),
            SessionExpiry::After(duration) => now.checked_add(duration),
            SessionExpiry::Never => None,
        }
    }

    fn as_interval(self) -> u32 {
        match self {
            SessionExpiry::WithConnection => 0,
            SessionExpiry::After(duration) => {
                u32::try_from(duration.as_secs()).unwrap_or(u32::MAX - 1)
            }
            SessionExpiry::Never => u32::MAX,
        }
    }
}

/// The accepted terms of a connection.
#[derive(Debug, Clone, PartialEq)]
pub struct Negotiated {
    /// The protocol version.
    pub version: ProtocolVersion,
    /// The session key: as sent, or assigned by us.
    pub client_id: ClientId,
    /// Whether we assigned the client id ([MQTT-3.1.3-6]).
    pub is_assigned_id: bool,
    /// Clean Session / Clean Start.
    pub clean_start: bool,
    /// Keep-alive in force; `None` disables the timeout.
    pub keep_alive: Option<Duration>,
    /// Whether we overrode the client's keep-alive (v5 Server Keep Alive).
    pub is_keep_alive_overridden: bool,
    /// How long the session outlives the connection.
    pub session_expiry: SessionExpiry,
    /// Whether we changed the expiry the client asked for.
    pub is_session_expiry_overridden: bool,
    /// The will, if any.
    pub will: Option<Box<WillMessage>>,
    /// The outbound window: `max_inflight`, capped by a v5 client's Receive Maximum.
    pub client_receive_maximum: u16,
    /// The client's Maximum Packet Size, if it set one.
    pub client_max_packet_size: Option<u32>,
    /// The username from CONNECT.
    pub username: Option<String>,
}

/// Checks a CONNECT. `Err` carries the CONNACK reason code that refuses it.
pub fn negotiate(
    connect: &Connect,
    limits: &Limits,
    sessions: &SessionConfig,
) -> Result<Negotiated, ReasonCode> {
    let version = connect.version;
    let properties = &connect.properties;
    let (client_id, is_assigned_id) = client_id(connect)?;
    if version.is_v5() {
        // (MQTT 5.0 §3.1.2.11) Receive Maximum and Maximum Packet Size of 0 are protocol errors.
        if properties.receive_maximum == Some(0) || properties.maximum_packet_size == Some(0) {
            return Err(ReasonCode::PROTOCOL_ERROR);
        }
        // Enhanced authentication is not offered: [MQTT-4.12.0-1].
        if properties.authentication_method.is_some() {
            return Err(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
    }
    let asked_expiry = if version.is_v5() {
        SessionExpiry::from_interval(properties.session_expiry_interval.unwrap_or(0), None)
    } else if connect.clean_start {
        SessionExpiry::WithConnection
    } else {
        sessions
            .persistent_client_expiration
            .map_or(SessionExpiry::Never, SessionExpiry::After)
    };
    let session_expiry = match (asked_expiry, version.is_v5()) {
        (SessionExpiry::WithConnection, _) | (_, false) => asked_expiry,
        (_, true) => {
            SessionExpiry::from_interval(asked_expiry.as_interval(), sessions.max_session_expiry)
        }
    };
    let (keep_alive, is_keep_alive_overridden) =
        keep_alive(connect.keep_alive, limits.max_keep_alive);
    let will = match &connect.will {
        None => None,
        // Copies, like the client id: a will can wait a long time.
        Some(will) => Some(Box::new(WillMessage {
            topic: TopicName::new(ByteString::from(will.topic.to_string()))
                .map_err(|_| ReasonCode::TOPIC_NAME_INVALID)?,
            payload: Bytes::copy_from_slice(&will.payload),
            qos: will.qos,
            retain: will.retain,
            properties: forwarded_properties(&will.properties),
            expiry_interval: will.properties.message_expiry_interval,
            delay: Duration::from_secs(u64::from(will.properties.will_delay_interval.unwrap_or(0))),
        })),
    };
    Ok(Negotiated {
        version,
        client_id,
        is_assigned_id,
        clean_start: connect.clean_start,
        keep_alive,
        is_keep_alive_overridden,
        session_expiry,
        is_session_expiry_overridden: session_expiry != asked_expiry,
        will,
        // Our window is `max_inflight` for every client, never more than a v5
        // client's Receive Maximum ([MQTT-3.3.4-7]).
        client_receive_maximum: properties
            .receive_maximum
            .unwrap_or(u16::MAX)
            .min(limits.max_inflight),
        client_max_packet_size: properties.maximum_packet_size,
        username: connect.username.as_ref().map(|name| name.to_string()),
    })
}

fn client_id(connect: &Connect) -> Result<(ClientId, bool), ReasonCode> {
    if !connect.client_id.is_empty() {
        // A copy, not a slice of the read buffer: the id lives as long as the
        // session, and a slice would keep the whole buffer it arrived in alive.
        let id = ByteString::from(connect.client_id.to_string());
        return Ok((ClientId::new(id), false));
    }
    match connect.version {
        // 3.1 requires 1 to 23 characters.
        ProtocolVersion::V3_1 => Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        // [MQTT-3.1.3-8] an empty id with clean session 0 is refused with 0x02.
        ProtocolVersion::V3_1_1 if !connect.clean_start => {
            Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID)
        }
        // [MQTT-3.1.3-6], [MQTT-3.2.2-16]: assign one (and tell a v5 client).
        _ => Ok((
            ClientId::new(format!("rookery-{:016x}", fastrand::u64(..))),
            true,
        )),
    }
}

fn keep_alive(asked: u16, max: Option<Duration>) -> (Option<Duration>, bool) {
    let asked = (asked != 0).then(|| Duration::from_secs(u64::from(asked)));
    match (asked, max) {
        (_, None) => (asked, false),
        (None, Some(max)) => (Some(max), true),
        (Some(asked), Some(max)) if asked > max => (Some(max), true),
        (Some(asked), Some(_)) => (Some(asked), false),
    }
}

/// The CONNACK that accepts `negotiated`.
pub fn connack(negotiated: &Negotiated, session_present: bool, limits: &Limits) -> ConnAck {
    let mut properties = Properties::default();
    if negotiated.version.is_v5() {
        if negotiated.is_assigned_id {
            properties.assigned_client_identifier = Some(negotiated.client_id.as_str().into());
        }
        if negotiated.is_keep_alive_overridden {
            let seconds = negotiated.keep_alive.map_or(0, |ka| ka.as_secs());
            properties.server_keep_alive = Some(u16::try_from(seconds).unwrap_or(u16::MAX));
        }
        if negotiated.is_session_expiry_overridden {
            properties.session_expiry_interval = Some(negotiated.session_expiry.as_interval());
        }
        properties.receive_maximum = Some(limits.receive_maximum);
        properties.topic_alias_maximum = Some(limits.topic_alias_maximum);
        properties.maximum_packet_size = Some(limits.max_packet_size);
    }
    ConnAck {
        // [MQTT-3.2.2-1]/[MQTT-3.2.2-2] session present is 0 after a clean start.
        session_present: session_present && !negotiated.clean_start,
        code: ReasonCode::SUCCESS,
        properties,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn connect(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
        Connect {
            version,
            clean_start,
            keep_alive: 60,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    #[test]
    fn empty_client_id_with_persistent_session_is_rejected_v4() {
        // [MQTT-3.1.3-8]
        let result = negotiate(
            &connect(ProtocolVersion::V3_1_1, "", false),
            &Limits::default(),
            &SessionConfig::default(),
        );
        assert_eq!(result.unwrap_err(), ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }

    #[test]
    fn empty_client_id_is_assigned_v5() {
        // [MQTT-3.2.2-16]
        let negotiated = negotiate(
            &connect(ProtocolVersion::V5, "", false),
            &Limits::default(),
            &SessionConfig::default(),
        )
        .unwrap();
        assert!(negotiated.is_assigned_id);
        let connack = connack(&negotiated, false, &Limits::default());
        assert_eq!(
            connack.properties.assigned_client_identifier.as_deref(),
            Some(negotiated.client_id.as_str())
        );
    }

    #[test]
    fn v3_persistent_session_never_expires_unless_configured() {
        let negotiated = negotiate(
            &connect(ProtocolVersion::V3_1_1, "a", false),
            &Limits::default(),
            &SessionConfig::default(),
        )
        .unwrap();
        assert_eq!(negotiated.session_expiry, SessionExpiry::Never);
        let config = SessionConfig {
            persistent_client_expiration: Some(Duration::from_secs(60)),
            ..SessionConfig::default()
        };
        let negotiated = negotiate(
            &connect(ProtocolVersion::V3_1_1, "a", false),
            &Limits::default(),
            &config,
        )
        .unwrap();
        assert_eq!(
            negotiated.session_expiry,
            SessionExpiry::After(Duration::from_secs(60))
        );
    }

    #[test]
    fn v5_session_expiry_is_capped_and_reported() {
        let mut packet = connect(ProtocolVersion::V5, "a", true);
        packet.properties.session_expiry_interval = Some(u32::MAX);
        let config = SessionConfig {
            max_session_expiry: Some(Duration::from_secs(100)),
            ..SessionConfig::default()
        };
        let negotiated = negotiate(&packet, &Limits::default(), &config).unwrap();
        assert_eq!(
            negotiated.session_expiry,
            SessionExpiry::After(Duration::from_secs(100))
        );
        let connack = connack(&negotiated, false, &Limits::default());
        assert_eq!(connack.properties.session_expiry_interval, Some(100));
    }

    #[test]
    fn server_keep_alive_overrides_a_longer_one() {
        let limits = Limits {
            max_keep_alive: Some(Duration::from_secs(30)),
            ..Limits::default()
        };
        let negotiated = negotiate(
            &connect(ProtocolVersion::V5, "a", true),
            &limits,
            &SessionConfig::default(),
        )
        .unwrap();
        assert_eq!(negotiated.keep_alive, Some(Duration::from_secs(30)));
        assert_eq!(
            connack(&negotiated, false, &limits)
                .properties
                .server_keep_alive,
            Some(30)
        );
    }

    #[test]
    fn receive_maximum_zero_is_a_protocol_error() {
        let mut packet = connect(ProtocolVersion::V5, "a", true);
        packet.properties.receive_maximum = Some(0);
        assert_eq!(
            negotiate(&packet, &Limits::default(), &SessionConfig::default()).unwrap_err(),
            ReasonCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn clean_start_never_reports_session_present() {
        let negotiated = negotiate(
            &connect(ProtocolVersion::V3_1_1, "a", true),
            &Limits::default(),
            &SessionConfig::default(),
        )
        .unwrap();
        assert!(!connack(&negotiated, true, &Limits::default()).session_present);
    }
}
