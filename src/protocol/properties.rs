//! v5 properties (MQTT 5.0 §2.2.2) as one typed struct.
//!
//! Every packet that carries properties uses this struct. The decoder rejects an
//! unknown property id, or one not allowed in the packet it arrives in, as a
//! malformed packet (MQTT 5.0 §2.2.2.2), and a second copy of a property that may
//! appear only once as a protocol error ([MQTT-2.2.2-2]). A 3.x packet always has
//! `Properties::default()`.
//!
//! The encoder writes whatever is set, in id order: the sender chooses which
//! properties a packet carries.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::codec::{
    binary_len, put_binary, put_variable_byte_integer, variable_byte_integer_len, Reader,
};
use super::Error;

/// All v5 properties. `None`/empty means "absent on the wire".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Properties {
    /// 0x01, PUBLISH and will: 1 means the payload is UTF-8.
    pub payload_format_indicator: Option<u8>,
    /// 0x02, PUBLISH and will: seconds until the message expires.
    pub message_expiry_interval: Option<u32>,
    /// 0x03, PUBLISH and will.
    pub content_type: Option<ByteString>,
    /// 0x08, PUBLISH and will: the topic of a request's response.
    pub response_topic: Option<ByteString>,
    /// 0x09, PUBLISH and will.
    pub correlation_data: Option<Bytes>,
    /// 0x0B, PUBLISH (server → client, possibly several) and SUBSCRIBE (at most one).
    pub subscription_identifiers: Vec<u32>,
    /// 0x11, CONNECT, CONNACK, DISCONNECT.
    pub session_expiry_interval: Option<u32>,
    /// 0x12, CONNACK: the id the server assigned to a client that sent none.
    pub assigned_client_identifier: Option<ByteString>,
    /// 0x13, CONNACK: the keep-alive the server imposes.
    pub server_keep_alive: Option<u16>,
    /// 0x15, CONNECT, CONNACK, AUTH.
    pub authentication_method: Option<ByteString>,
    /// 0x16, CONNECT, CONNACK, AUTH.
    pub authentication_data: Option<Bytes>,
    /// 0x17, CONNECT.
    pub request_problem_information: Option<u8>,
    /// 0x18, will properties: seconds to wait before publishing the will.
    pub will_delay_interval: Option<u32>,
    /// 0x19, CONNECT.
    pub request_response_information: Option<u8>,
    /// 0x1A, CONNACK.
    pub response_information: Option<ByteString>,
    /// 0x1C, CONNACK, DISCONNECT.
    pub server_reference: Option<ByteString>,
    /// 0x1F, every ack, CONNACK, DISCONNECT, AUTH.
    pub reason_string: Option<ByteString>,
    /// 0x21, CONNECT, CONNACK.
    pub receive_maximum: Option<u16>,
    /// 0x22, CONNECT, CONNACK.
    pub topic_alias_maximum: Option<u16>,
    /// 0x23, PUBLISH.
    pub topic_alias: Option<u16>,
    /// 0x24, CONNACK.
    pub maximum_qos: Option<u8>,
    /// 0x25, CONNACK.
    pub retain_available: Option<u8>,
    /// 0x26, every packet with properties; order is kept ([MQTT-3.3.2-18]).
    pub user_properties: Vec<(ByteString, ByteString)>,
    /// 0x27, CONNECT, CONNACK.
    pub maximum_packet_size: Option<u32>,
    /// 0x28, CONNACK.
    pub wildcard_subscription_available: Option<u8>,
    /// 0x29, CONNACK.
    pub subscription_identifiers_available: Option<u8>,
    /// 0x2A, CONNACK.
    pub shared_subscription_available: Option<u8>,
}

/// Which packet (or will) a property list belongs to: a bit set, so that the
/// allowed-ids table below reads like the spec's (MQTT 5.0 §2.2.2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Owner(u16);

impl Owner {
    pub(crate) const CONNECT: Owner = Owner(1 << 0);
    pub(crate) const WILL: Owner = Owner(1 << 1);
    pub(crate) const CONNACK: Owner = Owner(1 << 2);
    pub(crate) const PUBLISH: Owner = Owner(1 << 3);
    /// PUBACK, PUBREC, PUBREL and PUBCOMP allow the same properties.
    pub(crate) const ACK: Owner = Owner(1 << 4);
    pub(crate) const SUBSCRIBE: Owner = Owner(1 << 5);
    pub(crate) const SUBACK: Owner = Owner(1 << 6);
    pub(crate) const UNSUBSCRIBE: Owner = Owner(1 << 7);
    pub(crate) const UNSUBACK: Owner = Owner(1 << 8);
    pub(crate) const DISCONNECT: Owner = Owner(1 << 9);
    pub(crate) const AUTH: Owner = Owner(1 << 10);
}

const USER_PROPERTY: u8 = 0x26;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;

/// The packets a property id may appear in; `None` for an unknown id.
fn allowed_in(id: u8) -> Option<u16> {
    const CONNECT: u16 = Owner::CONNECT.0;
    const WILL: u16 = Owner::WILL.0;
    const CONNACK: u16 = Owner::CONNACK.0;
    const PUBLISH: u16 = Owner::PUBLISH.0;
    const SUBSCRIBE: u16 = Owner::SUBSCRIBE.0;
    const DISCONNECT: u16 = Owner::DISCONNECT.0;
    const AUTH: u16 = Owner::AUTH.0;
    const ANY_ACK: u16 = Owner::ACK.0 | Owner::SUBACK.0 | Owner::UNSUBACK.0;
    Some(match id {
        0x01 | 0x02 | 0x03 | 0x08 | 0x09 => PUBLISH | WILL,
        SUBSCRIPTION_IDENTIFIER => PUBLISH | SUBSCRIBE,
        0x11 => CONNECT | CONNACK | DISCONNECT,
        0x12 | 0x13 | 0x1A | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => CONNACK,
        0x15 | 0x16 => CONNECT | CONNACK | AUTH,
        0x17 | 0x19 => CONNECT,
        0x18 => WILL,
        0x1C => CONNACK | DISCONNECT,
        0x1F => CONNACK | ANY_ACK | DISCONNECT | AUTH,
        0x21 | 0x22 | 0x27 => CONNECT | CONNACK,
        0x23 => PUBLISH,
        USER_PROPERTY => u16::MAX,
        _ => return None,
    })
}

impl Properties {
    /// Reads a property length and the properties it covers, as allowed in `owner`.
    /// A broken rule in a property that parses (a duplicate, a value out of range) is
    /// noted on `outer` as a [`Reader::violation`]; an unknown or misplaced id is malformed.
    pub(crate) fn decode(outer: &mut Reader, owner: Owner) -> Result<Properties, Error> {
        let len = outer.variable_byte_integer()?;
        let mut r = Reader::new(outer.take(len as usize)?);
        let mut properties = Properties::default();
        let mut seen = 0u64;
        while !r.is_empty() {
            let id = u8::try_from(r.variable_byte_integer()?)
                .map_err(|_| Error::Malformed("unknown property"))?;
            let allowed = allowed_in(id).ok_or(Error::Malformed("unknown property"))?;
            if allowed & owner.0 == 0 {
                return Err(Error::Malformed("property not allowed in this packet"));
            }
            let repeatable =
                id == USER_PROPERTY || (id == SUBSCRIPTION_IDENTIFIER && owner == Owner::PUBLISH);
            // Known ids are all below 0x2B, so the bit fits.
            let bit = 1u64 << id;
            if seen & bit != 0 && !repeatable {
                r.violation(Error::Protocol("property included twice [MQTT-2.2.2-2]"));
            }
            seen |= bit;
            properties.read_one(id, &mut r)?;
        }
        if let Err(violation) = r.check_violation() {
            outer.violation(violation);
        }
        Ok(properties)
    }

    /// Reads the value of property `id` into its field.
    fn read_one(&mut self, id: u8, r: &mut Reader) -> Result<(), Error> {
        match id {
            0x01 => {
                self.payload_format_indicator =
                    Some(flag(r, "payload format indicator not 0 or 1")?)
            }
            0x02 => self.message_expiry_interval = Some(r.u32()?),
            0x03 => self.content_type = Some(r.string()?),
            0x08 => self.response_topic = Some(r.string()?),
            0x09 => self.correlation_data = Some(r.binary()?),
            SUBSCRIPTION_IDENTIFIER => match r.variable_byte_integer()? {
                0 => r.violation(Error::Protocol("subscription identifier 0")),
                value => self.subscription_identifiers.push(value),
            },
            0x11 => self.session_expiry_interval = Some(r.u32()?),
            0x12 => self.assigned_client_identifier = Some(r.string()?),
            0x13 => self.server_keep_alive = Some(r.u16()?),
            0x15 => self.authentication_method = Some(r.string()?),
            0x16 => self.authentication_data = Some(r.binary()?),
            0x17 => {
                self.request_problem_information =
                    Some(flag(r, "request problem information not 0 or 1")?)
            }
            0x18 => self.will_delay_interval = Some(r.u32()?),
            0x19 => {
                self.request_response_information =
                    Some(flag(r, "request response information not 0 or 1")?)
            }
            0x1A => self.response_information = Some(r.string()?),
            0x1C => self.server_reference = Some(r.string()?),
            0x1F => self.reason_string = Some(r.string()?),
            0x21 => {
                let value = r.u16()?;
                self.receive_maximum = Some(non_zero(r, value, "receive maximum 0"))
            }
            0x22 => self.topic_alias_maximum = Some(r.u16()?),
            0x23 => match r.u16()? {
                // [MQTT-3.3.2-8] a topic alias of 0 is not permitted.
                0 => r.violation(Error::TopicAliasInvalid),
                alias => self.topic_alias = Some(alias),
            },
            0x24 => self.maximum_qos = Some(flag(r, "maximum QoS not 0 or 1")?),
            0x25 => self.retain_available = Some(flag(r, "retain available not 0 or 1")?),
            USER_PROPERTY => self.user_properties.push((r.string()?, r.string()?)),
            0x27 => {
                let value = r.u32()?;
                self.maximum_packet_size = Some(non_zero(r, value, "maximum packet size 0"))
            }
            0x28 => {
                self.wildcard_subscription_available =
                    Some(flag(r, "wildcard available not 0 or 1")?)
            }
            0x29 => {
                self.subscription_identifiers_available =
                    Some(flag(r, "identifiers available not 0 or 1")?)
            }
            0x2A => {
                self.shared_subscription_available = Some(flag(r, "shared available not 0 or 1")?)
            }
            _ => return Err(Error::Malformed("unknown property")),
        }
        Ok(())
    }

    /// Whether no property is set, so that a v5 ack or DISCONNECT may leave out
    /// its property length (MQTT 5.0 §3.4.2.1, §3.14.2.1).
    pub fn is_empty(&self) -> bool {
        self.encoded_len() == 0
    }

    /// The property length: the bytes of every property, without the length itself.
    pub(crate) fn encoded_len(&self) -> usize {
        let strings = [
            &self.content_type,
            &self.response_topic,
            &self.assigned_client_identifier,
            &self.authentication_method,
            &self.response_information,
            &self.server_reference,
            &self.reason_string,
        ];
        let flags = [
            self.payload_format_indicator,
            self.request_problem_information,
            self.request_response_information,
            self.maximum_qos,
            self.retain_available,
            self.wildcard_subscription_available,
            self.subscription_identifiers_available,
            self.shared_subscription_available,
        ];
        let u16s = [
            self.server_keep_alive,
            self.receive_maximum,
            self.topic_alias_maximum,
            self.topic_alias,
        ];
        let u32s = [
            self.message_expiry_interval,
            self.session_expiry_interval,
            self.will_delay_interval,
            self.maximum_packet_size,
        ];
        let binaries = [&self.correlation_data, &self.authentication_data];
        strings
            .iter()
            .filter_map(|s| s.as_ref())
            .map(|s| 1 + binary_len(s.as_bytes()))
            .sum::<usize>()
            + binaries
                .iter()
                .filter_map(|b| b.as_ref())
                .map(|b| 1 + binary_len(b))
                .sum::<usize>()
            + flags.iter().flatten().count() * 2
            + u16s.iter().flatten().count() * 3
            + u32s.iter().flatten().count() * 5
            + self
                .subscription_identifiers
                .iter()
                .map(|&id| 1 + variable_byte_integer_len(id as usize))
                .sum::<usize>()
            + self
                .user_properties
                .iter()
                .map(|(k, v)| 1 + binary_len(k.as_bytes()) + binary_len(v.as_bytes()))
                .sum::<usize>()
    }

    /// Bytes [`Properties::encode`] writes: the property length and the properties.
    pub(crate) fn wire_len(&self) -> usize {
        let len = self.encoded_len();
        variable_byte_integer_len(len) + len
    }

    /// Writes the property length, then every property that is set, in id order.
    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        put_variable_byte_integer(buf, self.encoded_len());
        put_u8(buf, 0x01, self.payload_format_indicator);
        put_u32(buf, 0x02, self.message_expiry_interval);
        put_bytes(buf, 0x03, self.content_type.as_ref());
        put_bytes(buf, 0x08, self.response_topic.as_ref());
        put_bytes(buf, 0x09, self.correlation_data.as_ref());
        for &id in &self.subscription_identifiers {
            buf.put_u8(SUBSCRIPTION_IDENTIFIER);
            put_variable_byte_integer(buf, id as usize);
        }
        put_u32(buf, 0x11, self.session_expiry_interval);
        put_bytes(buf, 0x12, self.assigned_client_identifier.as_ref());
        put_u16(buf, 0x13, self.server_keep_alive);
        put_bytes(buf, 0x15, self.authentication_method.as_ref());
        put_bytes(buf, 0x16, self.authentication_data.as_ref());
        put_u8(buf, 0x17, self.request_problem_information);
        put_u32(buf, 0x18, self.will_delay_interval);
        put_u8(buf, 0x19, self.request_response_information);
        put_bytes(buf, 0x1A, self.response_information.as_ref());
        put_bytes(buf, 0x1C, self.server_reference.as_ref());
        put_bytes(buf, 0x1F, self.reason_string.as_ref());
        put_u16(buf, 0x21, self.receive_maximum);
        put_u16(buf, 0x22, self.topic_alias_maximum);
        put_u16(buf, 0x23, self.topic_alias);
        put_u8(buf, 0x24, self.maximum_qos);
        put_u8(buf, 0x25, self.retain_available);
        for (key, value) in &self.user_properties {
            buf.put_u8(USER_PROPERTY);
            put_binary(buf, key.as_bytes());
            put_binary(buf, value.as_bytes());
        }
        put_u32(buf, 0x27, self.maximum_packet_size);
        put_u8(buf, 0x28, self.wildcard_subscription_available);
        put_u8(buf, 0x29, self.subscription_identifiers_available);
        put_u8(buf, 0x2A, self.shared_subscription_available);
    }
}

/// A one-byte property whose only values are 0 and 1; anything else is a
/// protocol error (e.g. [MQTT-3.3.2-4] for the payload format indicator).
fn flag(r: &mut Reader, what: &'static str) -> Result<u8, Error> {
    let value = r.u8()?;
    if value > 1 {
        r.violation(Error::Protocol(what));
    }
    Ok(value)
}

/// A property that may not be zero: a zero is a protocol error.
fn non_zero<T: PartialEq + Default>(r: &mut Reader, value: T, what: &'static str) -> T {
    if value == T::default() {
        r.violation(Error::Protocol(what));
    }
    value
}

fn put_u8(buf: &mut BytesMut, id: u8, value: Option<u8>) {
    if let Some(value) = value {
        buf.put_u8(id);
        buf.put_u8(value);
    }
}

fn put_u16(buf: &mut BytesMut, id: u8, value: Option<u16>) {
    if let Some(value) = value {
        buf.put_u8(id);
        buf.put_u16(value);
    }
}

fn put_u32(buf: &mut BytesMut, id: u8, value: Option<u32>) {
    if let Some(value) = value {
        buf.put_u8(id);
        buf.put_u32(value);
    }
}

fn put_bytes(buf: &mut BytesMut, id: u8, value: Option<&impl AsRef<[u8]>>) {
    if let Some(value) = value {
        buf.put_u8(id);
        put_binary(buf, value.as_ref());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Every property allowed in `owner`, each with a distinct value: what the
    /// round-trip tests of each packet family send.
    pub(crate) fn full(owner: Owner) -> Properties {
        fn keep<T>(owner: Owner, id: u8, value: T) -> Option<T> {
            (allowed_in(id).unwrap() & owner.0 != 0).then_some(value)
        }
        let o = owner;
        Properties {
            payload_format_indicator: keep(o, 0x01, 1),
            message_expiry_interval: keep(o, 0x02, 3600),
            content_type: keep(o, 0x03, "text/plain".into()),
            response_topic: keep(o, 0x08, "reply/to".into()),
            correlation_data: keep(o, 0x09, Bytes::from_static(b"\x00\x01corr")),
            subscription_identifiers: match owner {
                Owner::PUBLISH => vec![1, 268_435_455],
                Owner::SUBSCRIBE => vec![42],
                _ => vec![],
            },
            session_expiry_interval: keep(o, 0x11, u32::MAX),
            assigned_client_identifier: keep(o, 0x12, "auto-1".into()),
            server_keep_alive: keep(o, 0x13, 30),
            authentication_method: keep(o, 0x15, "SCRAM-SHA-1".into()),
            authentication_data: keep(o, 0x16, Bytes::from_static(b"\xFFdata")),
            request_problem_information: keep(o, 0x17, 0),
            will_delay_interval: keep(o, 0x18, 10),
            request_response_information: keep(o, 0x19, 1),
            response_information: keep(o, 0x1A, "resp".into()),
            server_reference: keep(o, 0x1C, "other:1883".into()),
            reason_string: keep(o, 0x1F, "because".into()),
            receive_maximum: keep(o, 0x21, 100),
            topic_alias_maximum: keep(o, 0x22, 10),
            topic_alias: keep(o, 0x23, 3),
            maximum_qos: keep(o, 0x24, 1),
            retain_available: keep(o, 0x25, 0),
            user_properties: vec![
                ("k".into(), "v".into()),
                ("k".into(), "v2".into()),
                ("é".into(), "".into()),
            ],
            maximum_packet_size: keep(o, 0x27, 1 << 20),
            wildcard_subscription_available: keep(o, 0x28, 1),
            subscription_identifiers_available: keep(o, 0x29, 0),
            shared_subscription_available: keep(o, 0x2A, 1),
        }
    }

    fn decode_as(bytes: &[u8], owner: Owner) -> Result<Properties, Error> {
        let mut r = Reader::new(Bytes::copy_from_slice(bytes));
        let properties = Properties::decode(&mut r, owner)?;
        r.finish()?;
        Ok(properties)
    }

    fn encoded(properties: &Properties) -> Vec<u8> {
        let mut buf = BytesMut::new();
        properties.encode(&mut buf);
        assert_eq!(buf.len(), properties.wire_len());
        buf.to_vec()
    }

    const OWNERS: [Owner; 11] = [
        Owner::CONNECT,
        Owner::WILL,
        Owner::CONNACK,
        Owner::PUBLISH,
        Owner::ACK,
        Owner::SUBSCRIBE,
        Owner::SUBACK,
        Owner::UNSUBSCRIBE,
        Owner::UNSUBACK,
        Owner::DISCONNECT,
        Owner::AUTH,
    ];

    #[test]
    fn every_allowed_property_round_trips_in_every_owner() {
        for owner in OWNERS {
            let properties = full(owner);
            assert!(!properties.user_properties.is_empty());
            assert_eq!(
                decode_as(&encoded(&properties), owner),
                Ok(properties),
                "{owner:?}"
            );
        }
        assert_eq!(
            full(Owner::CONNACK).reason_string.as_deref(),
            Some("because")
        );
        assert_eq!(
            full(Owner::PUBLISH).subscription_identifiers,
            [1, 268_435_455]
        );
        assert_eq!(
            full(Owner::UNSUBSCRIBE),
            Properties {
                user_properties: full(Owner::ACK).user_properties,
                ..Properties::default()
            }
        );
    }

    #[test]
    fn empty_properties_are_one_zero_byte() {
        assert_eq!(encoded(&Properties::default()), [0]);
        assert!(Properties::default().is_empty());
    }

    #[test]
    fn user_properties_keep_their_order() {
        let bytes = [13, 0x26, 0, 1, b'b', 0, 0, 0x26, 0, 1, b'a', 0, 1, b'x'];
        let properties = decode_as(&bytes, Owner::PUBLISH).unwrap();
        assert_eq!(
            properties.user_properties,
            [("b".into(), "".into()), ("a".into(), "x".into())]
        );
        assert_eq!(encoded(&properties), bytes);
    }

    #[test]
    fn unknown_property_is_malformed() {
        assert!(matches!(
            decode_as(&[2, 0x04, 0], Owner::PUBLISH),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            decode_as(&[3, 0x80, 0x01, 0], Owner::PUBLISH),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn property_in_the_wrong_packet_is_malformed() {
        // Topic alias in CONNECT, session expiry in PUBLISH, will delay in CONNECT.
        assert!(matches!(
            decode_as(&[3, 0x23, 0, 1], Owner::CONNECT),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            decode_as(&[5, 0x11, 0, 0, 0, 1], Owner::PUBLISH),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            decode_as(&[5, 0x18, 0, 0, 0, 1], Owner::CONNECT),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            decode_as(&[2, 0x0B, 1], Owner::UNSUBSCRIBE),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_property_is_a_protocol_error() {
        let twice = [6, 0x02, 0, 0, 0, 1, 0x02];
        assert!(decode_as(&twice, Owner::PUBLISH).is_err());
        let twice = [10, 0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2];
        assert!(matches!(
            decode_as(&twice, Owner::PUBLISH),
            Err(Error::Protocol(_))
        ));
        let subscription_ids = [4, 0x0B, 1, 0x0B, 2];
        assert_eq!(
            decode_as(&subscription_ids, Owner::PUBLISH)
                .unwrap()
                .subscription_identifiers,
            [1, 2]
        );
        assert!(matches!(
            decode_as(&subscription_ids, Owner::SUBSCRIBE),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn subscription_identifier_zero_is_a_protocol_error() {
        assert!(matches!(
            decode_as(&[2, 0x0B, 0], Owner::SUBSCRIBE),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn payload_format_indicator_other_than_0_or_1_is_a_protocol_error() {
        assert!(matches!(
            decode_as(&[2, 0x01, 2], Owner::PUBLISH),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode_as(&[2, 0x01, 2], Owner::WILL),
            Err(Error::Protocol(_))
        ));
        assert_eq!(
            decode_as(&[2, 0x01, 0], Owner::PUBLISH)
                .unwrap()
                .payload_format_indicator,
            Some(0)
        );
    }

    #[test]
    fn zero_receive_maximum_packet_size_and_topic_alias_are_rejected() {
        assert!(matches!(
            decode_as(&[3, 0x21, 0, 0], Owner::CONNECT),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode_as(&[5, 0x27, 0, 0, 0, 0], Owner::CONNECT),
            Err(Error::Protocol(_))
        ));
        assert_eq!(
            decode_as(&[3, 0x23, 0, 0], Owner::PUBLISH),
            Err(Error::TopicAliasInvalid)
        );
    }

    #[test]
    fn property_length_beyond_the_packet_is_malformed() {
        assert!(matches!(
            decode_as(&[9, 0x01, 1], Owner::PUBLISH),
            Err(Error::Malformed(_))
        ));
        // A property whose value runs past the property length.
        assert!(matches!(
            decode_as(&[2, 0x02, 0, 0, 0, 1], Owner::PUBLISH),
            Err(Error::Malformed(_))
        ));
    }
}
