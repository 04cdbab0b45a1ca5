//! CONNECT and CONNACK (MQTT 3.1.1 §3.1–3.2, MQTT 5.0 §3.1–3.2).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::ack::reason_code;
use super::codec::{binary_len, put_binary, Reader};
use super::properties::Owner;
use super::publish::check_topic_name;
use super::{Error, Properties, ProtocolVersion, QoS, ReasonCode};

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

/// Reason codes a v5 CONNACK may carry (MQTT 5.0 §3.2.2.2).
const CONNACK_REASONS: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

/// CONNECT flag bits (MQTT 5.0 §3.1.2.3).
const RESERVED: u8 = 0b0000_0001;
const CLEAN_START: u8 = 0b0000_0010;
const WILL: u8 = 0b0000_0100;
const WILL_RETAIN: u8 = 0b0010_0000;
const PASSWORD: u8 = 0b0100_0000;
const USERNAME: u8 = 0b1000_0000;

impl Connect {
    /// Decodes a CONNECT body. The version comes from the packet itself, so this
    /// works whatever version the connection assumed before CONNECT.
    pub(crate) fn decode(r: &mut Reader) -> Result<Connect, Error> {
        let version = protocol_version(r)?;
        let flags = r.u8()?;
        // [MQTT-3.1.2-3] the reserved flag must be 0.
        if flags & RESERVED != 0 {
            return Err(Error::Malformed("CONNECT reserved flag set"));
        }
        let will_qos = (flags >> 3) & 0b11;
        if flags & WILL == 0 && (will_qos != 0 || flags & WILL_RETAIN != 0) {
            // [MQTT-3.1.2-11], [MQTT-3.1.2-13], [MQTT-3.1.2-15] no will, no will QoS or retain.
            return Err(Error::Malformed("will QoS or retain without a will"));
        }
        // [MQTT-3.1.2-14] will QoS 3 is malformed.
        let will_qos = QoS::from_bits(will_qos).ok_or(Error::Malformed("will QoS 3"))?;
        // [MQTT-3.1.2-22] 3.x: no password without a username (v5 allows it).
        if !version.is_v5() && flags & PASSWORD != 0 && flags & USERNAME == 0 {
            return Err(Error::Malformed("password without username"));
        }
        let keep_alive = r.u16()?;
        let properties = if version.is_v5() {
            Properties::decode(r, Owner::CONNECT)?
        } else {
            Properties::default()
        };
        // [MQTT-3.1.3-4] a UTF-8 string. 3.1 capped it at 23 characters, which many
        // 3.1 clients ignore: any length is accepted.
        let client_id = r.string()?;
        let will = if flags & WILL != 0 {
            Some(Will::decode(
                r,
                version,
                will_qos,
                flags & WILL_RETAIN != 0,
            )?)
        } else {
            None
        };
        let username = if flags & USERNAME != 0 {
            Some(r.string()?)
        } else {
            None
        };
        let password = if flags & PASSWORD != 0 {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Connect {
            version,
            clean_start: flags & CLEAN_START != 0,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = if self.clean_start { CLEAN_START } else { 0 };
        if let Some(will) = &self.will {
            flags |= WILL | ((will.qos as u8) << 3) | if will.retain { WILL_RETAIN } else { 0 };
        }
        if self.username.is_some() {
            flags |= USERNAME;
        }
        if self.password.is_some() {
            flags |= PASSWORD;
        }
        flags
    }

    /// The remaining length of this CONNECT at its own version.
    pub(crate) fn encoded_len(&self) -> usize {
        let v5 = self.version.is_v5();
        binary_len(protocol_name(self.version))
            + 4
            + if v5 { self.properties.wire_len() } else { 0 }
            + binary_len(self.client_id.as_bytes())
            + self.will.as_ref().map_or(0, |will| will.encoded_len(v5))
            + self
                .username
                .as_ref()
                .map_or(0, |username| binary_len(username.as_bytes()))
            + self
                .password
                .as_ref()
                .map_or(0, |password| binary_len(password))
    }

    /// Writes the body at `self.version`, whatever the connection's version.
    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        let v5 = self.version.is_v5();
        put_binary(buf, protocol_name(self.version));
        buf.put_u8(self.version.level());
        buf.put_u8(self.flags());
        buf.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(buf);
        }
        put_binary(buf, self.client_id.as_bytes());
        if let Some(will) = &self.will {
            will.encode(v5, buf);
        }
        if let Some(username) = &self.username {
            put_binary(buf, username.as_bytes());
        }
        if let Some(password) = &self.password {
            put_binary(buf, password);
        }
    }
}

/// Reads the protocol name and level: `MQTT` 4 or 5, or `MQIsdp` 3 ([MQTT-3.1.2-1],
/// [MQTT-3.1.2-2]). Anything else gets CONNACK 0x01 (3.x) or 0x84 (v5) from the
/// connection layer.
fn protocol_version(r: &mut Reader) -> Result<ProtocolVersion, Error> {
    let name = r.binary()?;
    let level = r.u8()?;
    match (&name[..], level) {
        (b"MQTT", 4) => Ok(ProtocolVersion::V3_1_1),
        (b"MQTT", 5) => Ok(ProtocolVersion::V5),
        (b"MQIsdp", 3) => Ok(ProtocolVersion::V3_1),
        _ => Err(Error::UnsupportedProtocolVersion { level }),
    }
}

fn protocol_name(version: ProtocolVersion) -> &'static [u8] {
    match version {
        ProtocolVersion::V3_1 => b"MQIsdp",
        ProtocolVersion::V3_1_1 | ProtocolVersion::V5 => b"MQTT",
    }
}

impl Will {
    /// Reads the will fields of the CONNECT payload; QoS and retain come from the flags.
    fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
        qos: QoS,
        retain: bool,
    ) -> Result<Will, Error> {
        let properties = if version.is_v5() {
            Properties::decode(r, Owner::WILL)?
        } else {
            Properties::default()
        };
        let topic = r.string()?;
        // [MQTT-3.1.3-11] the will topic is a topic name: no wildcards.
        check_topic_name(&topic)?;
        let payload = r.binary()?;
        Ok(Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
    }

    fn encoded_len(&self, v5: bool) -> usize {
        (if v5 { self.properties.wire_len() } else { 0 })
            + binary_len(self.topic.as_bytes())
            + binary_len(&self.payload)
    }

    fn encode(&self, v5: bool, buf: &mut BytesMut) {
        if v5 {
            self.properties.encode(buf);
        }
        put_binary(buf, self.topic.as_bytes());
        put_binary(buf, &self.payload);
    }
}

impl ConnAck {
    /// Decodes a CONNACK body; a 3.x return code becomes the equal v5 reason code.
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<ConnAck, Error> {
        let flags = r.u8()?;
        // 3.1 has no session present flag: its first byte is unused.
        let session_present = version != ProtocolVersion::V3_1 && flags & 1 != 0;
        // [MQTT-3.2.2-1] bits 7–1 are reserved.
        if version != ProtocolVersion::V3_1 && flags & 0xFE != 0 {
            return Err(Error::Malformed("CONNACK reserved flags set"));
        }
        if !version.is_v5() {
            let code = ReasonCode::from_v3_connack(r.u8()?)
                .ok_or(Error::Protocol("unknown CONNACK return code"))?;
            return Ok(ConnAck {
                session_present,
                code,
                properties: Properties::default(),
            });
        }
        let code = reason_code(r, CONNACK_REASONS)?;
        let properties = Properties::decode(r, Owner::CONNACK)?;
        Ok(ConnAck {
            session_present,
            code,
            properties,
        })
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.wire_len()
        } else {
            2
        }
    }

    /// Writes the body; a 3.x peer gets the nearest 3.x return code.
    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        let session_present = version != ProtocolVersion::V3_1 && self.session_present;
        buf.put_u8(u8::from(session_present));
        if version.is_v5() {
            buf.put_u8(self.code.0);
            self.properties.encode(buf);
        } else {
            buf.put_u8(self.code.to_v3_connack());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::tests::{round_trip, VERSIONS};
    use crate::protocol::properties::tests::full;
    use crate::protocol::{decode, Packet};

    fn props(version: ProtocolVersion, owner: Owner) -> Properties {
        if version.is_v5() {
            full(owner)
        } else {
            Properties::default()
        }
    }

    fn connect(version: ProtocolVersion) -> Connect {
        Connect {
            version,
            clean_start: true,
            keep_alive: 60,
            client_id: "rookery".into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    fn decode_v(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, Error> {
        decode(&mut BytesMut::from(bytes), version, usize::MAX)
    }

    /// mosquitto_pub -V mqttv311 -i rookery -k 60, captured off the wire.
    const MOSQUITTO_V311: &[u8] = b"\x10\x13\x00\x04MQTT\x04\x02\x00\x3c\x00\x07rookery";

    /// The same with -V mqttv5 -D connect session-expiry-interval 30.
    const MOSQUITTO_V5: &[u8] =
        b"\x10\x1c\x00\x04MQTT\x05\x02\x00\x3c\x08\x11\x00\x00\x00\x1e\x21\x00\x14\x00\x07rookery";

    #[test]
    fn connect_round_trips_at_every_version_with_everything_set() {
        for version in VERSIONS {
            for will_qos in [QoS::AtMostOnce, QoS::ExactlyOnce] {
                let packet = Connect {
                    clean_start: false,
                    keep_alive: 0xFFFF,
                    client_id: "a-client-id-longer-than-23-characters".into(),
                    will: Some(Will {
                        topic: "last/will".into(),
                        payload: Bytes::from_static(b"\x00gone"),
                        qos: will_qos,
                        retain: true,
                        properties: props(version, Owner::WILL),
                    }),
                    username: Some("user".into()),
                    password: Some(Bytes::from_static(b"\xFFpass")),
                    properties: props(version, Owner::CONNECT),
                    ..connect(version)
                };
                // The version argument does not matter for CONNECT.
                for assumed in VERSIONS {
                    round_trip(&Packet::Connect(Box::new(packet.clone())), assumed);
                }
            }
            round_trip(&Packet::Connect(Box::new(connect(version))), version);
        }
    }

    #[test]
    fn mosquitto_v311_connect_exact_bytes() {
        let packet = Packet::Connect(Box::new(connect(ProtocolVersion::V3_1_1)));
        assert_eq!(
            decode_v(MOSQUITTO_V311, ProtocolVersion::V3_1_1),
            Ok(Some(packet.clone()))
        );
        assert_eq!(
            &round_trip(&packet, ProtocolVersion::V3_1_1)[..],
            MOSQUITTO_V311
        );
    }

    #[test]
    fn mosquitto_v5_connect_decodes_before_the_version_is_known() {
        let properties = Properties {
            session_expiry_interval: Some(30),
            receive_maximum: Some(20),
            ..Properties::default()
        };
        let packet = Packet::Connect(Box::new(Connect {
            properties,
            ..connect(ProtocolVersion::V5)
        }));
        assert_eq!(
            decode_v(MOSQUITTO_V5, ProtocolVersion::V3_1_1),
            Ok(Some(packet.clone()))
        );
        assert_eq!(
            &round_trip(&packet, ProtocolVersion::V3_1_1)[..],
            MOSQUITTO_V5
        );
    }

    #[test]
    fn mqisdp_level_3_is_v3_1() {
        let bytes = b"\x10\x15\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x07rookery";
        let Some(Packet::Connect(c)) = decode_v(bytes, ProtocolVersion::V5).unwrap() else {
            panic!()
        };
        assert_eq!(c.version, ProtocolVersion::V3_1);
    }

    /// A v3.1.1 CONNECT with `flags` and a payload that fits them.
    fn with_flags(name: &[u8], level: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut body = vec![0, name.len() as u8];
        body.extend_from_slice(name);
        body.extend_from_slice(&[level, flags, 0, 60]);
        if level == 5 {
            body.push(0);
        }
        body.extend_from_slice(payload);
        let mut bytes = vec![0x10, body.len() as u8];
        bytes.extend(body);
        bytes
    }

    #[test]
    fn unknown_protocol_name_or_level_is_unsupported() {
        for (name, level) in [
            (&b"MQTT"[..], 3),
            (b"MQTT", 6),
            (b"MQIsdp", 4),
            (b"MQTX", 4),
            (b"", 4),
        ] {
            let bytes = with_flags(name, level, 0x02, b"\x00\x01c");
            assert_eq!(
                decode_v(&bytes, ProtocolVersion::V3_1_1),
                Err(Error::UnsupportedProtocolVersion { level })
            );
        }
    }

    #[test]
    fn reserved_connect_flag_is_malformed() {
        let bytes = with_flags(b"MQTT", 4, 0x03, b"\x00\x01c");
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn will_qos_or_retain_without_will_is_malformed() {
        for flags in [0x08, 0x10, 0x20] {
            let bytes = with_flags(b"MQTT", 4, flags, b"\x00\x01c");
            assert!(
                matches!(
                    decode_v(&bytes, ProtocolVersion::V3_1_1),
                    Err(Error::Malformed(_))
                ),
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn will_qos_3_is_malformed() {
        let bytes = with_flags(b"MQTT", 4, 0x1C, b"\x00\x01c\x00\x01t\x00\x00");
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn will_topic_with_wildcard_is_invalid() {
        let bytes = with_flags(b"MQTT", 4, 0x04, b"\x00\x01c\x00\x01#\x00\x00");
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::TopicNameInvalid(_))
        ));
    }

    #[test]
    fn password_without_username_is_malformed_in_3x_only() {
        let v311 = with_flags(b"MQTT", 4, 0x40, b"\x00\x01c\x00\x02pw");
        assert!(matches!(
            decode_v(&v311, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
        let v31 = with_flags(b"MQIsdp", 3, 0x40, b"\x00\x01c\x00\x02pw");
        assert!(matches!(
            decode_v(&v31, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
        let v5 = with_flags(b"MQTT", 5, 0x40, b"\x00\x01c\x00\x02pw");
        let Some(Packet::Connect(c)) = decode_v(&v5, ProtocolVersion::V3_1_1).unwrap() else {
            panic!()
        };
        assert_eq!(
            (c.username, c.password.as_deref()),
            (None, Some(&b"pw"[..]))
        );
    }

    #[test]
    fn client_id_must_be_utf8() {
        let bytes = with_flags(b"MQTT", 4, 0x02, b"\x00\x02\xC3\x28");
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
        let bytes = with_flags(b"MQTT", 4, 0x02, b"\x00\x02a\x00");
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn empty_client_id_is_left_to_the_session() {
        let bytes = with_flags(b"MQTT", 4, 0x00, b"\x00\x00");
        assert!(decode_v(&bytes, ProtocolVersion::V3_1_1).unwrap().is_some());
    }

    #[test]
    fn connect_missing_flagged_fields_is_malformed() {
        let bytes = with_flags(b"MQTT", 4, 0x80, b"\x00\x01c");
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn connack_round_trips_at_every_version() {
        for version in VERSIONS {
            let connack = ConnAck {
                session_present: version != ProtocolVersion::V3_1,
                code: ReasonCode::SUCCESS,
                properties: props(version, Owner::CONNACK),
            };
            round_trip(&Packet::ConnAck(connack), version);
            let refused = ConnAck {
                code: ReasonCode::NOT_AUTHORIZED,
                ..ConnAck::default()
            };
            round_trip(&Packet::ConnAck(refused), version);
        }
    }

    #[test]
    fn connack_exact_bytes() {
        let ok = Packet::ConnAck(ConnAck::default());
        assert_eq!(
            &round_trip(&ok, ProtocolVersion::V3_1_1)[..],
            [0x20, 0x02, 0x00, 0x00]
        );
        assert_eq!(
            &round_trip(&ok, ProtocolVersion::V5)[..],
            [0x20, 0x03, 0x00, 0x00, 0x00]
        );
        let resumed = Packet::ConnAck(ConnAck {
            session_present: true,
            ..ConnAck::default()
        });
        assert_eq!(
            &round_trip(&resumed, ProtocolVersion::V3_1_1)[..],
            [0x20, 0x02, 0x01, 0x00]
        );
    }

    #[test]
    fn v3_connack_maps_v5_reason_codes() {
        let cases = [
            (ReasonCode::UNSUPPORTED_PROTOCOL_VERSION, 0x01),
            (ReasonCode::CLIENT_IDENTIFIER_NOT_VALID, 0x02),
            (ReasonCode::SERVER_BUSY, 0x03),
            (ReasonCode::BAD_USER_NAME_OR_PASSWORD, 0x04),
            (ReasonCode::BANNED, 0x05),
        ];
        for (code, v3) in cases {
            let mut buf = BytesMut::new();
            crate::protocol::encode(
                &Packet::ConnAck(ConnAck {
                    code,
                    ..ConnAck::default()
                }),
                ProtocolVersion::V3_1_1,
                &mut buf,
            );
            assert_eq!(&buf[..], [0x20, 0x02, 0x00, v3]);
        }
    }

    #[test]
    fn connack_reserved_flags_are_malformed() {
        assert!(matches!(
            decode_v(&[0x20, 2, 0x02, 0], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }
}
