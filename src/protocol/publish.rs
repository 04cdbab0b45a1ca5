//! PUBLISH (MQTT 3.1.1 §3.3, MQTT 5.0 §3.3).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::codec::{binary_len, put_binary, Reader};
use super::properties::Owner;
use super::{Error, PacketId, Properties, ProtocolVersion, QoS};

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

impl Publish {
    /// Decodes a PUBLISH body; `flags` is the low nibble of the fixed header.
    /// The payload is a slice of the packet buffer, never a copy.
    pub(crate) fn decode(
        r: &mut Reader,
        flags: u8,
        version: ProtocolVersion,
    ) -> Result<Publish, Error> {
        let dup = flags & 0b1000 != 0;
        let retain = flags & 0b0001 != 0;
        // [MQTT-3.3.1-4] QoS 3 is malformed.
        let qos =
            QoS::from_bits((flags >> 1) & 0b11).ok_or(Error::Malformed("PUBLISH with QoS 3"))?;
        // [MQTT-3.3.1-2] DUP must be 0 for QoS 0.
        if dup && qos == QoS::AtMostOnce {
            return Err(Error::Malformed("PUBLISH with QoS 0 and DUP set"));
        }
        let topic = r.string()?;
        let packet_id = match qos {
            QoS::AtMostOnce => None,
            _ => Some(r.packet_id()?),
        };
        let properties = if version.is_v5() {
            Properties::decode(r, Owner::PUBLISH)?
        } else {
            Properties::default()
        };
        // [MQTT-3.3.2-1] a topic name, which only a v5 topic alias may leave empty.
        if !(topic.is_empty() && properties.topic_alias.is_some()) {
            check_topic_name(&topic)?;
        }
        Ok(Publish {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// The low nibble of the fixed header: DUP, QoS, RETAIN.
    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | ((self.qos as u8) << 1) | u8::from(self.retain)
    }

    /// The remaining length of this PUBLISH.
    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let packet_id = if self.qos == QoS::AtMostOnce { 0 } else { 2 };
        let properties = if version.is_v5() {
            self.properties.wire_len()
        } else {
            0
        };
        binary_len(self.topic.as_bytes()) + packet_id + properties + self.payload.len()
    }

    /// Writes the body. A QoS > 0 PUBLISH without a packet id is the caller's bug
    /// and goes out with id 0, which the peer rejects.
    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        put_binary(buf, self.topic.as_bytes());
        if self.qos != QoS::AtMostOnce {
            debug_assert!(
                self.packet_id.is_some(),
                "QoS > 0 PUBLISH without a packet id"
            );
            buf.put_u16(self.packet_id.map_or(0, PacketId::get));
        }
        if version.is_v5() {
            self.properties.encode(buf);
        }
        buf.put_slice(&self.payload);
    }
}

/// The decoder's own topic-name check (PUBLISH and will topics): at least one
/// character [MQTT-4.7.3-1] and no wildcard [MQTT-3.3.2-2], [MQTT-4.7.3-2]. U+0000
/// and invalid UTF-8 were already refused when the string was read [MQTT-1.5.4-1..2].
///
/// An empty name is a Protocol Error, as MQTT 5.0 §3.3.2.1 says ("It is a Protocol
/// Error if the Topic Name is zero length and there is no Topic Alias"); a name with
/// a wildcard gets 0x90 Topic Name Invalid, which names the field at fault.
pub(crate) fn check_topic_name(topic: &str) -> Result<(), Error> {
    if topic.is_empty() {
        return Err(Error::Protocol("empty topic name"));
    }
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(Error::TopicNameInvalid("wildcard in topic name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::tests::round_trip;
    use crate::protocol::properties::tests::full;
    use crate::protocol::{decode, Packet};

    fn publish(qos: QoS, version: ProtocolVersion) -> Packet {
        Packet::Publish(Publish {
            dup: qos != QoS::AtMostOnce,
            qos,
            retain: true,
            topic: "sensors/é/temp".into(),
            packet_id: PacketId::new(if qos == QoS::AtMostOnce { 0 } else { 65535 }),
            properties: if version.is_v5() {
                full(Owner::PUBLISH)
            } else {
                Properties::default()
            },
            payload: Bytes::from_static(b"\x00\xFF21.5"),
        })
    }

    fn decode_v(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, Error> {
        decode(&mut BytesMut::from(bytes), version, usize::MAX)
    }

    #[test]
    fn publish_round_trips_at_every_version_and_qos() {
        for version in [
            ProtocolVersion::V3_1,
            ProtocolVersion::V3_1_1,
            ProtocolVersion::V5,
        ] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                round_trip(&publish(qos, version), version);
            }
        }
    }

    #[test]
    fn publish_v4_exact_bytes() {
        let packet = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "a/b".into(),
            packet_id: PacketId::new(10),
            payload: Bytes::from_static(b"hi"),
            ..Publish::default()
        });
        let bytes = round_trip(&packet, ProtocolVersion::V3_1_1);
        assert_eq!(
            &bytes[..],
            [0x32, 0x09, 0, 3, b'a', b'/', b'b', 0, 10, b'h', b'i']
        );
        // v5 adds an empty property length.
        let bytes = round_trip(&packet, ProtocolVersion::V5);
        assert_eq!(
            &bytes[..],
            [0x32, 0x0A, 0, 3, b'a', b'/', b'b', 0, 10, 0, b'h', b'i']
        );
    }

    #[test]
    fn empty_payload_is_allowed() {
        let packet = Packet::Publish(Publish {
            topic: "t".into(),
            ..Publish::default()
        });
        assert_eq!(
            &round_trip(&packet, ProtocolVersion::V3_1_1)[..],
            [0x30, 3, 0, 1, b't']
        );
    }

    #[test]
    fn qos_3_is_malformed() {
        let bytes = [0x36, 0x05, 0, 1, b't', 0, 1];
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn qos_0_with_dup_is_malformed() {
        let bytes = [0x38, 0x03, 0, 1, b't'];
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn packet_id_0_is_rejected() {
        let bytes = [0x32, 0x05, 0, 1, b't', 0, 0];
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn wildcards_in_topic_name_are_invalid() {
        for topic in [b'+', b'#'] {
            let bytes = [0x30, 0x05, 0, 3, b'a', b'/', topic];
            assert!(matches!(
                decode_v(&bytes, ProtocolVersion::V3_1_1),
                Err(Error::TopicNameInvalid(_))
            ));
        }
    }

    #[test]
    fn nul_in_topic_name_is_malformed() {
        let bytes = [0x30, 0x04, 0, 2, b'a', 0];
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn issue_8_empty_topic_without_alias_is_a_protocol_error() {
        // MQTT 5.0 §3.3.2.1: a Protocol Error.
        let bytes = [0x30, 0x03, 0, 0, 0];
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
        let v3 = [0x30, 0x02, 0, 0];
        assert!(matches!(
            decode_v(&v3, ProtocolVersion::V3_1_1),
            Err(Error::Protocol(_))
        ));
        let aliased = [0x30, 0x06, 0, 0, 3, 0x23, 0, 7];
        let Some(Packet::Publish(p)) = decode_v(&aliased, ProtocolVersion::V5).unwrap() else {
            panic!()
        };
        assert_eq!((p.topic.as_ref(), p.properties.topic_alias), ("", Some(7)));
    }

    #[test]
    fn payload_format_indicator_2_is_a_protocol_error() {
        let bytes = [0x30, 0x06, 0, 1, b't', 2, 0x01, 2];
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn non_utf8_payload_with_format_indicator_is_left_to_the_session() {
        let bytes = [0x30, 0x07, 0, 1, b't', 2, 0x01, 1, 0xFF];
        assert!(decode_v(&bytes, ProtocolVersion::V5).unwrap().is_some());
    }
}
