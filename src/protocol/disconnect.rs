//! DISCONNECT (MQTT 3.1.1 §3.14, MQTT 5.0 §3.14).

use bytes::{BufMut, BytesMut};

use super::ack::reason_code;
use super::codec::Reader;
use super::properties::Owner;
use super::{Error, Properties, ProtocolVersion, ReasonCode};

/// Reason codes a DISCONNECT may carry (MQTT 5.0 §3.14.2.1).
const REASONS: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// The end of a connection; in v5 either side may send it, with a reason.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Disconnect {
    /// v5 reason; `NORMAL_DISCONNECTION` for 3.x.
    pub reason: ReasonCode,
    /// v5: session expiry update, reason string, server reference, user properties.
    pub properties: Properties,
}

impl Disconnect {
    /// Decodes a DISCONNECT body: empty in 3.x; in v5 the reason code and the
    /// properties may each be left out (MQTT 5.0 §3.14.2.1).
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Disconnect, Error> {
        if !version.is_v5() || r.is_empty() {
            return Ok(Disconnect::default());
        }
        let reason = reason_code(r, REASONS)?;
        let properties = if r.is_empty() {
            Properties::default()
        } else {
            Properties::decode(r, Owner::DISCONNECT)?
        };
        Ok(Disconnect { reason, properties })
    }

    /// Whether the body can be empty: always in 3.x, for a plain normal disconnection in v5.
    fn is_short(&self, version: ProtocolVersion) -> bool {
        !version.is_v5()
            || (self.reason == ReasonCode::NORMAL_DISCONNECTION && self.properties.is_empty())
    }

    pub(crate) fn encoded_len(&self, version: ProtocolVersion) -> usize {
        if self.is_short(version) {
            0
        } else {
            1 + self.properties.wire_len()
        }
    }

    pub(crate) fn encode(&self, version: ProtocolVersion, buf: &mut BytesMut) {
        if !self.is_short(version) {
            buf.put_u8(self.reason.0);
            self.properties.encode(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::tests::round_trip;
    use crate::protocol::properties::tests::full;
    use crate::protocol::{decode, Packet};

    fn decode_v(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, Error> {
        decode(&mut BytesMut::from(bytes), version, usize::MAX)
    }

    #[test]
    fn disconnect_round_trips_at_every_version() {
        for version in [
            ProtocolVersion::V3_1,
            ProtocolVersion::V3_1_1,
            ProtocolVersion::V5,
        ] {
            let bytes = round_trip(&Packet::Disconnect(Disconnect::default()), version);
            assert_eq!(&bytes[..], [0xE0, 0x00]);
        }
        let full = Disconnect {
            reason: ReasonCode::SERVER_SHUTTING_DOWN,
            properties: full(Owner::DISCONNECT),
        };
        round_trip(&Packet::Disconnect(full), ProtocolVersion::V5);
        let reason_only = Disconnect {
            reason: ReasonCode::SESSION_TAKEN_OVER,
            properties: Properties::default(),
        };
        let bytes = round_trip(&Packet::Disconnect(reason_only), ProtocolVersion::V5);
        assert_eq!(&bytes[..], [0xE0, 2, 0x8E, 0]);
    }

    #[test]
    fn v5_disconnect_with_reason_and_no_property_length_decodes() {
        let packet = decode_v(&[0xE0, 1, 0x04], ProtocolVersion::V5)
            .unwrap()
            .unwrap();
        assert_eq!(
            packet,
            Packet::Disconnect(Disconnect {
                reason: ReasonCode::DISCONNECT_WITH_WILL,
                ..Default::default()
            })
        );
    }

    #[test]
    fn v3_disconnect_with_a_body_is_malformed() {
        assert!(matches!(
            decode_v(&[0xE0, 1, 0x00], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn disconnect_reason_not_in_the_table_is_rejected() {
        assert!(matches!(
            decode_v(&[0xE0, 1, 0x18], ProtocolVersion::V5),
            Err(Error::Protocol(_))
        ));
    }
}
