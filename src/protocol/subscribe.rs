//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK.

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use super::codec::{binary_len, put_binary, Reader};
use super::properties::Owner;
use super::{Error, PacketId, Properties, ProtocolVersion, QoS, ReasonCode};

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

/// Reason codes a v5 SUBACK may carry (MQTT 5.0 §3.9.3).
const SUBACK_REASONS: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// Return codes of a 3.x SUBACK ([MQTT-3.9.3-2]).
const V3_SUBACK_RETURN_CODES: &[u8] = &[0x00, 0x01, 0x02, 0x80];
/// Reason codes a v5 UNSUBACK may carry (MQTT 5.0 §3.11.3).
const UNSUBACK_REASONS: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];

/// The v5 properties, or the 3.x default.
fn properties(r: &mut Reader, version: ProtocolVersion, owner: Owner) -> Result<Properties, Error> {
    if version.is_v5() {
        Properties::decode(r, owner)
    } else {
        Ok(Properties::default())
    }
}

fn properties_len(properties: &Properties, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        properties.wire_len()
    } else {
        0
    }
}

fn put_properties(properties: &Properties, version: ProtocolVersion, buf: &mut BytesMut) {
    if version.is_v5() {
        properties.encode(buf);
    }
}

/// Reads reason codes up to the end of the packet, each checked against `allowed`.
fn reason_codes(r: &mut Reader, allowed: &[u8]) -> Vec<ReasonCode> {
    let codes = r.rest();
    if codes.iter().any(|code| !allowed.contains(code)) {
        r.violation(Error::Protocol("reason code not allowed in this packet"));
    }
    codes.iter().map(|&code| ReasonCode(code)).collect()
}

/// A topic filter of SUBSCRIBE or UNSUBSCRIBE, which must be at least one character
/// long [MQTT-4.7.3-1]. An empty one closes the connection: it is not a filter that
/// a SUBACK/UNSUBACK code could refuse (0x8F means "correctly formed but not
/// accepted"), and MQTT 5.0 names no code for it, so it is a Protocol Error (0x82),
/// as an empty topic name is (MQTT 5.0 §3.3.2.1). Other wildcard and length rules
/// are the session's, which answers them per filter with 0x8F (0x80 in 3.x).
fn topic_filter(r: &mut Reader) -> Result<ByteString, Error> {
    let filter = r.string()?;
    if filter.is_empty() {
        r.violation(Error::Protocol("empty topic filter"));
    }
    Ok(filter)
}

impl SubscriptionOptions {
    /// Parses the options byte of a SUBSCRIBE entry.
    pub(crate) fn from_byte(
        byte: u8,
        version: ProtocolVersion,
    ) -> Result<SubscriptionOptions, Error> {
        if !version.is_v5() {
            // [MQTT-3-8.3-4] in 3.1.1 only the QoS bits may be set.
            let qos = QoS::from_bits(byte).ok_or(Error::Malformed(
                "subscription options reserved bits or QoS 3",
            ))?;
            return Ok(SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            });
        }
        // [MQTT-3.8.3-5] bits 6 and 7 are reserved.
        if byte & 0b1100_0000 != 0 {
            return Err(Error::Malformed("subscription options reserved bits set"));
        }
        let qos = QoS::from_bits(byte & 0b11).ok_or(Error::Protocol("subscription with QoS 3"))?;
        let retain_handling = match (byte >> 4) & 0b11 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscribe,
            2 => RetainHandling::Never,
            _ => return Err(Error::Protocol("retain handling 3")),
        };
        Ok(SubscriptionOptions {
            qos,
            no_local: byte & 0b0100 != 0,
            retain_as_published: byte & 0b1000 != 0,
            retain_handling,
        })
    }

    /// The options byte; only the QoS for a 3.x peer.
    pub(crate) fn to_byte(self, version: ProtocolVersion) -> u8 {
        let qos = self.qos as u8;
        if !version.is_v5() {
            return qos;
        }
        qos | (u8::from(self.no_local) << 2)
            | (u8::from(self.retain_as_published) << 3)
            | ((self.retain_handling as u8) << 4)
    }
}

impl Subscribe {
    /// Decodes a SUBSCRIBE body; at least one filter ([MQTT-3.8.3-3]).
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Subscribe, Error> {
        let packet_id = r.packet_id()?;
        let properties = properties(r, version, Owner::SUBSCRIBE)?;
        let mut filters = Vec::with_capacity(1);
        while !r.is_empty() {
            let filter = topic_filter(r)?;
            let byte = r.u8()?;
            let options = r.defer(SubscriptionOptions::from_byte(byte, version))?;
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(Error::Protocol("SUBSCRIBE without topic filters"));
        }
        Ok(Subscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let filters: usize = self
            .filters
            .iter()
            .map(|(filter, _)| binary_len(filter.as_bytes()) + 1)
            .sum();
        2 + properties_len(&self.properties, version) + filters
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        put_properties(&self.properties, version, buf);
        for (filter, options) in &self.filters {
            put_binary(buf, filter.as_bytes());
            buf.put_u8(options.to_byte(version));
        }
    }
}

impl SubAck {
    /// Decodes a SUBACK body; 3.x return codes become the equal v5 codes.
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<SubAck, Error> {
        let packet_id = r.packet_id()?;
        let properties = properties(r, version, Owner::SUBACK)?;
        let allowed = if version.is_v5() {
            SUBACK_REASONS
        } else {
            V3_SUBACK_RETURN_CODES
        };
        let reasons = reason_codes(r, allowed);
        Ok(SubAck {
            packet_id,
            reasons,
            properties,
        })
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        2 + properties_len(&self.properties, version) + self.reasons.len()
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        put_properties(&self.properties, version, buf);
        for reason in &self.reasons {
            buf.put_u8(if version.is_v5() {
                reason.0
            } else {
                reason.to_v3_suback()
            });
        }
    }
}

impl Unsubscribe {
    /// Decodes an UNSUBSCRIBE body; at least one filter ([MQTT-3.10.3-2]).
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Unsubscribe, Error> {
        let packet_id = r.packet_id()?;
        let properties = properties(r, version, Owner::UNSUBSCRIBE)?;
        let mut filters = Vec::with_capacity(1);
        while !r.is_empty() {
            filters.push(topic_filter(r)?);
        }
        if filters.is_empty() {
            return Err(Error::Protocol("UNSUBSCRIBE without topic filters"));
        }
        Ok(Unsubscribe {
            packet_id,
            filters,
            properties,
        })
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let filters: usize = self
            .filters
            .iter()
            .map(|filter| binary_len(filter.as_bytes()))
            .sum();
        2 + properties_len(&self.properties, version) + filters
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        put_properties(&self.properties, version, buf);
        for filter in &self.filters {
            put_binary(buf, filter.as_bytes());
        }
    }
}

impl UnsubAck {
    /// Decodes an UNSUBACK body: just the packet id in 3.x.
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<UnsubAck, Error> {
        let packet_id = r.packet_id()?;
        let properties = properties(r, version, Owner::UNSUBACK)?;
        let reasons = if version.is_v5() {
            reason_codes(r, UNSUBACK_REASONS)
        } else {
            Vec::new()
        };
        Ok(UnsubAck {
            packet_id,
            reasons,
            properties,
        })
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.wire_len() + self.reasons.len()
        } else {
            2
        }
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(buf);
            buf.extend(self.reasons.iter().map(|reason| reason.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::tests::{round_trip, VERSIONS};
    use crate::protocol::properties::tests::full;
    use crate::protocol::{decode, Packet};

    fn id() -> PacketId {
        PacketId::new(9).unwrap()
    }

    fn props(version: ProtocolVersion, owner: Owner) -> Properties {
        if version.is_v5() {
            full(owner)
        } else {
            Properties::default()
        }
    }

    fn decode_v(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, Error> {
        decode(&mut BytesMut::from(bytes), version, usize::MAX)
    }

    #[test]
    fn subscribe_round_trips_at_every_version() {
        for version in VERSIONS {
            let v5 = version.is_v5();
            let options = SubscriptionOptions {
                qos: QoS::ExactlyOnce,
                no_local: v5,
                retain_as_published: v5,
                retain_handling: if v5 {
                    RetainHandling::Never
                } else {
                    RetainHandling::OnSubscribe
                },
            };
            let packet = Packet::Subscribe(Subscribe {
                packet_id: id(),
                filters: vec![
                    ("a/+/c".into(), options),
                    ("$share/g/#".into(), SubscriptionOptions::default()),
                ],
                properties: props(version, Owner::SUBSCRIBE),
            });
            round_trip(&packet, version);
        }
    }

    #[test]
    fn subscribe_v4_exact_bytes() {
        let packet = Packet::Subscribe(Subscribe {
            packet_id: id(),
            filters: vec![(
                "a/#".into(),
                SubscriptionOptions {
                    qos: QoS::AtLeastOnce,
                    ..Default::default()
                },
            )],
            properties: Properties::default(),
        });
        assert_eq!(
            &round_trip(&packet, ProtocolVersion::V3_1_1)[..],
            [0x82, 8, 0, 9, 0, 3, b'a', b'/', b'#', 1]
        );
    }

    #[test]
    fn suback_round_trips_at_every_version() {
        for version in VERSIONS {
            let mut reasons = vec![
                ReasonCode::GRANTED_QOS_0,
                ReasonCode::GRANTED_QOS_2,
                ReasonCode::UNSPECIFIED_ERROR,
            ];
            if version.is_v5() {
                reasons.push(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED);
            }
            let packet = Packet::SubAck(SubAck {
                packet_id: id(),
                reasons,
                properties: props(version, Owner::SUBACK),
            });
            round_trip(&packet, version);
        }
    }

    #[test]
    fn v3_suback_maps_every_failure_to_0x80() {
        let packet = Packet::SubAck(SubAck {
            packet_id: id(),
            reasons: vec![ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED],
            properties: Properties::default(),
        });
        let mut buf = BytesMut::new();
        crate::protocol::encode(&packet, ProtocolVersion::V3_1_1, &mut buf);
        assert_eq!(&buf[..], [0x90, 4, 0, 9, 0x01, 0x80]);
    }

    #[test]
    fn unsubscribe_round_trips_at_every_version() {
        for version in VERSIONS {
            let packet = Packet::Unsubscribe(Unsubscribe {
                packet_id: id(),
                filters: vec!["a/b".into(), "#".into()],
                properties: props(version, Owner::UNSUBSCRIBE),
            });
            round_trip(&packet, version);
        }
    }

    #[test]
    fn unsuback_round_trips_at_every_version() {
        for version in VERSIONS {
            let reasons = if version.is_v5() {
                vec![ReasonCode::SUCCESS, ReasonCode::NO_SUBSCRIPTION_EXISTED]
            } else {
                vec![]
            };
            let packet = Packet::UnsubAck(UnsubAck {
                packet_id: id(),
                reasons,
                properties: props(version, Owner::UNSUBACK),
            });
            round_trip(&packet, version);
        }
    }

    #[test]
    fn v3_unsuback_has_no_payload() {
        let packet = Packet::UnsubAck(UnsubAck {
            packet_id: id(),
            reasons: vec![ReasonCode::SUCCESS],
            properties: Properties::default(),
        });
        let mut buf = BytesMut::new();
        crate::protocol::encode(&packet, ProtocolVersion::V3_1_1, &mut buf);
        assert_eq!(&buf[..], [0xB0, 2, 0, 9]);
        assert!(matches!(
            decode_v(&[0xB0, 3, 0, 9, 0], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn subscribe_without_filters_is_a_protocol_error() {
        assert!(matches!(
            decode_v(&[0x82, 2, 0, 9], ProtocolVersion::V3_1_1),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode_v(&[0x82, 3, 0, 9, 0], ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn unsubscribe_without_filters_is_a_protocol_error() {
        assert!(matches!(
            decode_v(&[0xA2, 2, 0, 9], ProtocolVersion::V3_1_1),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode_v(&[0xA2, 3, 0, 9, 0], ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn issue_8_empty_topic_filter_is_a_protocol_error() {
        // [MQTT-4.7.3-1] at every version, in SUBSCRIBE and UNSUBSCRIBE.
        for version in VERSIONS {
            let props: &[u8] = if version.is_v5() { &[0] } else { &[] };
            let mut subscribe = vec![0x00, 0x09];
            subscribe.extend_from_slice(props);
            subscribe.extend_from_slice(&[0, 1, b'a', 0, 0, 0, 0]);
            let mut unsubscribe = vec![0x00, 0x09];
            unsubscribe.extend_from_slice(props);
            unsubscribe.extend_from_slice(&[0, 1, b'a', 0, 0]);
            for (first, body) in [(0x82, subscribe), (0xA2, unsubscribe)] {
                let mut bytes = vec![first, body.len() as u8];
                bytes.extend(body);
                assert!(
                    matches!(decode_v(&bytes, version), Err(Error::Protocol(_))),
                    "{version:?} {bytes:x?}"
                );
            }
        }
    }

    #[test]
    fn issue_8_malformed_wins_over_an_earlier_protocol_error() {
        // MQTT 5.0 §1.2: a Protocol Error is found after the packet parsed.
        let qos_3_then_truncated = [0x82, 10, 0, 9, 0, 0, 1, b'a', 0x03, 0, 5, b'b'];
        let id_0_then_reserved_bits = [0x82, 7, 0, 0, 0, 0, 1, b'a', 0x40];
        let duplicate_then_unknown = [0x82, 12, 0, 9, 5, 0x0B, 1, 0x0B, 2, 0x7F, 0, 1, b'a', 0];
        let id_0_then_trailing = [0xA2, 7, 0, 0, 0, 0, 1, b'a', 0];
        for bytes in [
            &qos_3_then_truncated[..],
            &id_0_then_reserved_bits,
            &duplicate_then_unknown,
            &id_0_then_trailing,
        ] {
            assert!(
                matches!(
                    decode_v(bytes, ProtocolVersion::V5),
                    Err(Error::Malformed(_))
                ),
                "{bytes:x?}"
            );
        }
        // Each rule alone, in a packet that parses, is still a Protocol Error.
        let id_0 = [0x82, 7, 0, 0, 0, 0, 1, b'a', 0];
        let qos_3 = [0x82, 7, 0, 9, 0, 0, 1, b'a', 0x03];
        for bytes in [&id_0[..], &qos_3] {
            assert!(
                matches!(
                    decode_v(bytes, ProtocolVersion::V5),
                    Err(Error::Protocol(_))
                ),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn subscribe_packet_id_0_is_rejected() {
        let bytes = [0x82, 6, 0, 0, 0, 1, b'a', 0];
        assert!(matches!(
            decode_v(&bytes, ProtocolVersion::V3_1_1),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn filter_without_options_byte_is_malformed() {
        assert!(matches!(
            decode_v(&[0x82, 5, 0, 9, 0, 1, b'a'], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    fn subscribe_with_options(byte: u8, version: ProtocolVersion) -> Result<Option<Packet>, Error> {
        let mut bytes = vec![0x82, 6, 0, 9];
        if version.is_v5() {
            bytes[1] += 1;
            bytes.push(0);
        }
        bytes.extend_from_slice(&[0, 1, b'a', byte]);
        decode_v(&bytes, version)
    }

    #[test]
    fn v5_subscription_options_reserved_bits_are_malformed() {
        for byte in [0x40, 0x80, 0xC1] {
            assert!(matches!(
                subscribe_with_options(byte, ProtocolVersion::V5),
                Err(Error::Malformed(_))
            ));
        }
    }

    #[test]
    fn v5_retain_handling_3_is_a_protocol_error() {
        assert!(matches!(
            subscribe_with_options(0x30, ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn v5_subscription_qos_3_is_a_protocol_error() {
        assert!(matches!(
            subscribe_with_options(0x03, ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn v3_subscription_options_upper_bits_are_malformed() {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
            for byte in [0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0x03] {
                assert!(
                    matches!(
                        subscribe_with_options(byte, version),
                        Err(Error::Malformed(_))
                    ),
                    "{byte:#x}"
                );
            }
            assert!(subscribe_with_options(0x02, version).unwrap().is_some());
        }
    }

    #[test]
    fn v5_subscription_identifier_0_is_a_protocol_error() {
        let bytes = [0x82, 9, 0, 9, 2, 0x0B, 0, 0, 1, b'a', 0];
        assert!(matches!(
            decode_v(&bytes[..], ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn v3_suback_return_code_outside_the_table_is_rejected() {
        assert!(decode_v(&[0x90, 3, 0, 9, 0x87], ProtocolVersion::V3_1_1).is_err());
        assert!(decode_v(&[0x90, 3, 0, 9, 0x87], ProtocolVersion::V5).is_err());
        assert!(decode_v(&[0x90, 4, 0, 9, 0, 0x87], ProtocolVersion::V5)
            .unwrap()
            .is_some());
    }
}
