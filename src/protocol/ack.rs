//! PUBACK, PUBREC, PUBREL and PUBCOMP: the QoS 1 and QoS 2 handshakes share one shape.

use bytes::{BufMut, BytesMut};

use super::codec::Reader;
use super::properties::Owner;
use super::{Error, PacketId, Properties, ProtocolVersion, ReasonCode};

/// The body of PUBACK, PUBREC, PUBREL or PUBCOMP.
#[derive(Clone, Debug, PartialEq)]
pub struct Ack {
    /// The packet being acknowledged.
    pub packet_id: PacketId,
    /// v5 reason code; `SUCCESS` for 3.x.
    pub reason: ReasonCode,
    /// v5 properties (reason string, user properties).
    pub properties: Properties,
}

impl Ack {
    /// A successful acknowledgement with no properties.
    pub fn new(packet_id: PacketId) -> Ack {
        Ack {
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: Properties::default(),
        }
    }
}

impl Ack {
    /// Reason codes a PUBACK or PUBREC may carry (MQTT 5.0 §3.4.2.1, §3.5.2.1).
    pub(crate) const PUBACK_REASONS: &'static [u8] =
        &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
    /// Reason codes a PUBREL or PUBCOMP may carry (MQTT 5.0 §3.6.2.1, §3.7.2.1).
    pub(crate) const PUBREL_REASONS: &'static [u8] = &[0x00, 0x92];

    /// Decodes the body of any of the four acks; `allowed` is its reason-code table.
    /// A v5 ack may stop after the packet id (success, no properties) or after the
    /// reason code (no properties) (MQTT 5.0 §3.4.2.1).
    pub(crate) fn decode(
        r: &mut Reader,
        version: ProtocolVersion,
        allowed: &[u8],
    ) -> Result<Ack, Error> {
        let packet_id = r.packet_id()?;
        if !version.is_v5() || r.is_empty() {
            return Ok(Ack::new(packet_id));
        }
        let reason = reason_code(r, allowed)?;
        let properties = if r.is_empty() {
            Properties::default()
        } else {
            Properties::decode(r, Owner::ACK)?
        };
        Ok(Ack {
            packet_id,
            reason,
            properties,
        })
    }

    /// Whether the v5 reason code and properties can be left out.
    fn is_short(&self, version: ProtocolVersion) -> bool {
        !version.is_v5() || (self.reason == ReasonCode::SUCCESS && self.properties.is_empty())
    }

    /// The remaining length of this ack.
    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if self.is_short(version) {
            2
        } else {
            3 + self.properties.wire_len()
        }
    }

    /// Writes the body, in its short form whenever it is a plain success.
    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        buf.put_u16(self.packet_id.get());
        if !self.is_short(version) {
            buf.put_u8(self.reason.0);
            self.properties.encode(buf);
        }
    }
}

/// Reads a reason code and checks it is one the packet may carry; one it may not
/// is a protocol error, noted as a [`Reader::violation`].
pub(crate) fn reason_code(r: &mut Reader, allowed: &[u8]) -> Result<ReasonCode, Error> {
    let code = r.u8()?;
    if !allowed.contains(&code) {
        r.violation(Error::Protocol("reason code not allowed in this packet"));
    }
    Ok(ReasonCode(code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::tests::{round_trip, VERSIONS};
    use crate::protocol::properties::tests::full;
    use crate::protocol::{decode, Packet};

    fn wrap(kind: u8, ack: Ack) -> Packet {
        match kind {
            4 => Packet::PubAck(ack),
            5 => Packet::PubRec(ack),
            6 => Packet::PubRel(ack),
            _ => Packet::PubComp(ack),
        }
    }

    fn decode_v(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, Error> {
        decode(&mut BytesMut::from(bytes), version, usize::MAX)
    }

    #[test]
    fn every_ack_round_trips_at_every_version() {
        let id = PacketId::new(0x1234).unwrap();
        for kind in 4..=7 {
            for version in VERSIONS {
                round_trip(&wrap(kind, Ack::new(id)), version);
            }
            let reason = if kind <= 5 {
                ReasonCode::QUOTA_EXCEEDED
            } else {
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
            };
            let full = Ack {
                packet_id: id,
                reason,
                properties: full(Owner::ACK),
            };
            round_trip(&wrap(kind, full), ProtocolVersion::V5);
            let reason_only = Ack {
                packet_id: id,
                reason,
                properties: Properties::default(),
            };
            round_trip(&wrap(kind, reason_only), ProtocolVersion::V5);
        }
    }

    #[test]
    fn acks_exact_bytes() {
        let id = PacketId::new(1).unwrap();
        for version in VERSIONS {
            assert_eq!(
                &round_trip(&Packet::PubAck(Ack::new(id)), version)[..],
                [0x40, 2, 0, 1]
            );
            assert_eq!(
                &round_trip(&Packet::PubRec(Ack::new(id)), version)[..],
                [0x50, 2, 0, 1]
            );
            assert_eq!(
                &round_trip(&Packet::PubRel(Ack::new(id)), version)[..],
                [0x62, 2, 0, 1]
            );
            assert_eq!(
                &round_trip(&Packet::PubComp(Ack::new(id)), version)[..],
                [0x70, 2, 0, 1]
            );
        }
        let failed = Ack {
            reason: ReasonCode::NOT_AUTHORIZED,
            ..Ack::new(id)
        };
        assert_eq!(
            &round_trip(&Packet::PubAck(failed), ProtocolVersion::V5)[..],
            [0x40, 4, 0, 1, 0x87, 0]
        );
    }

    #[test]
    fn v3_ack_ignores_v5_fields_when_encoding() {
        let ack = Ack {
            reason: ReasonCode::NOT_AUTHORIZED,
            ..Ack::new(PacketId::new(1).unwrap())
        };
        let mut buf = BytesMut::new();
        crate::protocol::encode(&Packet::PubAck(ack), ProtocolVersion::V3_1_1, &mut buf);
        assert_eq!(&buf[..], [0x40, 2, 0, 1]);
    }

    #[test]
    fn ack_packet_id_0_is_rejected() {
        assert!(matches!(
            decode_v(&[0x40, 2, 0, 0], ProtocolVersion::V3_1_1),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn v3_ack_with_extra_bytes_is_malformed() {
        assert!(matches!(
            decode_v(&[0x40, 3, 0, 1, 0], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn reason_code_not_allowed_in_ack_is_rejected() {
        assert!(matches!(
            decode_v(&[0x40, 3, 0, 1, 0x92], ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(
            decode_v(&[0x62, 3, 0, 1, 0x10], ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn pubrel_needs_flags_0010() {
        assert!(matches!(
            decode_v(&[0x60, 2, 0, 1], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            decode_v(&[0x63, 2, 0, 1], ProtocolVersion::V5),
            Err(Error::Malformed(_))
        ));
    }
}
