//! AUTH (MQTT 5.0 §3.15): enhanced authentication exchange.

use bytes::{BufMut, BytesMut};

use super::ack::reason_code;
use super::codec::Reader;
use super::properties::Owner;
use super::{Error, Properties, ReasonCode};

/// Reason codes an AUTH may carry ([MQTT-3.15.2-1]).
const REASONS: &[u8] = &[0x00, 0x18, 0x19];

/// An AUTH packet.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Auth {
    /// 0x00 success, 0x18 continue, 0x19 re-authenticate.
    pub reason: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: Properties,
}

impl Auth {
    /// Decodes an AUTH body; an empty one means success with no properties
    /// (MQTT 5.0 §3.15.2.1). AUTH exists only in v5: the caller checks that.
    pub(crate) fn decode(r: &mut Reader) -> Result<Auth, Error> {
        if r.is_empty() {
            return Ok(Auth::default());
        }
        let reason = reason_code(r, REASONS)?;
        let properties = if r.is_empty() {
            Properties::default()
        } else {
            Properties::decode(r, Owner::AUTH)?
        };
        Ok(Auth { reason, properties })
    }

    fn is_short(&self) -> bool {
        self.reason == ReasonCode::SUCCESS && self.properties.is_empty()
    }

    pub(crate) fn encoded_len(&self) -> usize {
        if self.is_short() {
            0
        } else {
            1 + self.properties.wire_len()
        }
    }

    pub(crate) fn encode(&self, buf: &mut BytesMut) {
        if !self.is_short() {
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
    use crate::protocol::{decode, Packet, ProtocolVersion};

    #[test]
    fn auth_round_trips_in_v5() {
        let auth = Auth {
            reason: ReasonCode::CONTINUE_AUTHENTICATION,
            properties: full(Owner::AUTH),
        };
        round_trip(&Packet::Auth(auth), ProtocolVersion::V5);
        let bytes = round_trip(&Packet::Auth(Auth::default()), ProtocolVersion::V5);
        assert_eq!(&bytes[..], [0xF0, 0x00]);
    }

    #[test]
    fn auth_is_a_reserved_packet_type_before_v5() {
        for version in [ProtocolVersion::V3_1, ProtocolVersion::V3_1_1] {
            let result = decode(&mut BytesMut::from(&[0xF0, 0x00][..]), version, 100);
            assert!(matches!(result, Err(Error::Malformed(_))));
        }
    }

    #[test]
    fn auth_reason_not_in_the_table_is_rejected() {
        let result = decode(
            &mut BytesMut::from(&[0xF0, 0x02, 0x87, 0x00][..]),
            ProtocolVersion::V5,
            100,
        );
        assert!(matches!(result, Err(Error::Protocol(_))));
    }

    #[test]
    fn auth_with_flags_is_malformed() {
        let result = decode(
            &mut BytesMut::from(&[0xF1, 0x00][..]),
            ProtocolVersion::V5,
            100,
        );
        assert!(matches!(result, Err(Error::Malformed(_))));
    }
}
