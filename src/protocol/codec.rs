//! Framing: the fixed header, the remaining length, and the primitive encodings
//! (two-byte integers, UTF-8 strings, binary data, variable byte integers).
//!
//! [`decode`] returns `Ok(None)` for a partial packet, like mini-redis's
//! `Connection::parse_frame`: the caller reads more bytes and tries again. The
//! remaining length is checked against `max_size` as soon as the fixed header is
//! complete, before a single byte of the body is buffered.
//!
//! A complete packet is split off the read buffer and frozen into one [`Bytes`];
//! every string, binary field and payload of the decoded packet is a slice of it,
//! so decoding a PUBLISH never copies its payload. Each packet family decodes its
//! own body from a `Reader` over that `Bytes` and encodes its own body; this file
//! only frames them.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::{
    Ack, Auth, ConnAck, Connect, Disconnect, Error, Packet, PacketId, ProtocolVersion, Publish,
    SubAck, Subscribe, UnsubAck, Unsubscribe,
};

/// The largest value a variable byte integer can hold (MQTT 5.0 §1.5.5).
pub const MAX_VARIABLE_BYTE_INTEGER: usize = 268_435_455;

/// Decodes the packet at the front of `buf`, consuming its bytes.
///
/// `version` is the version negotiated by CONNECT (use `V3_1_1` before CONNECT: the
/// CONNECT body carries its own version). `max_size` bounds the whole packet,
/// fixed header included ([MQTT-3.1.2-24] in v5 terms).
///
/// Returns `Ok(None)`, consuming nothing, while the packet is incomplete. A bad
/// first byte (reserved type or flags) and [`Error::PacketTooLarge`] are reported
/// as soon as those bytes arrive, before the body, consuming nothing; on any other
/// error the offending packet has been consumed. Either way the connection must close.
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: usize,
) -> Result<Option<Packet>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    check_first_byte(first, version)?;
    let Some((remaining, length_bytes)) = remaining_length(buf.get(1..).unwrap_or_default())?
    else {
        return Ok(None);
    };
    let header_len = 1 + length_bytes;
    let size = header_len + remaining;
    if size > max_size {
        return Err(Error::PacketTooLarge {
            size,
            max: max_size,
        });
    }
    if buf.len() < size {
        // The size is now known and allowed: grow once rather than per read.
        buf.reserve(size - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(size).freeze();
    let first = frame.get_u8();
    frame.advance(length_bytes);
    let mut body = Reader::new(frame);
    let packet = decode_body(first, &mut body, version)?;
    body.finish()?;
    Ok(Some(packet))
}

/// Parses the remaining length after the first byte: `Ok(None)` while more bytes
/// are needed, else the value and how many bytes encoded it.
fn remaining_length(bytes: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let mut value = 0usize;
    for (i, &byte) in bytes.iter().take(4).enumerate() {
        value |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            // [MQTT-1.5.5-1] the minimum number of bytes: no trailing zero group.
            if byte == 0 && i > 0 {
                return Err(Error::Malformed("remaining length not minimally encoded"));
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if bytes.len() >= 4 {
        return Err(Error::Malformed("remaining length longer than 4 bytes"));
    }
    Ok(None)
}

/// Checks the packet type and fixed-header flags, so that garbage is refused at its
/// first byte rather than after waiting for the body its "remaining length" promised.
fn check_first_byte(first: u8, version: ProtocolVersion) -> Result<(), Error> {
    let (kind, flags) = (first >> 4, first & 0x0F);
    // Type 0 is reserved in every version; 15 (AUTH) exists only in v5.
    if kind == 0 || (kind == 15 && !version.is_v5()) {
        return Err(Error::Malformed("reserved packet type"));
    }
    // [MQTT-2.2.2-2] reserved flags: 0b0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE, 0
    // elsewhere; a violation is a Malformed Packet (MQTT 5.0 §2.1.3). MQTT 3.1 had no
    // reserved flags there: those three packets are QoS 1 and may carry DUP, which a
    // 3.1 client sets on a PUBREL it resends after a reconnect (3.1 §3.6).
    let expected_flags = match kind {
        3 => flags,
        6 | 8 | 10 if version == ProtocolVersion::V3_1 => 0b0010 | (flags & 0b1000),
        6 | 8 | 10 => 0b0010,
        _ => 0,
    };
    if flags != expected_flags {
        return Err(Error::Malformed("invalid fixed header flags"));
    }
    Ok(())
}

/// Hands the body to its packet family ([`check_first_byte`] has vetted `first`).
fn decode_body(first: u8, r: &mut Reader, version: ProtocolVersion) -> Result<Packet, Error> {
    let (kind, flags) = (first >> 4, first & 0x0F);
    Ok(match kind {
        1 => Packet::Connect(Box::new(Connect::decode(r)?)),
        2 => Packet::ConnAck(ConnAck::decode(r, version)?),
        3 => Packet::Publish(Publish::decode(r, flags, version)?),
        4 => Packet::PubAck(Ack::decode(r, version, Ack::PUBACK_REASONS)?),
        5 => Packet::PubRec(Ack::decode(r, version, Ack::PUBACK_REASONS)?),
        6 => Packet::PubRel(Ack::decode(r, version, Ack::PUBREL_REASONS)?),
        7 => Packet::PubComp(Ack::decode(r, version, Ack::PUBREL_REASONS)?),
        8 => Packet::Subscribe(Subscribe::decode(r, version)?),
        9 => Packet::SubAck(SubAck::decode(r, version)?),
        10 => Packet::Unsubscribe(Unsubscribe::decode(r, version)?),
        11 => Packet::UnsubAck(UnsubAck::decode(r, version)?),
        12 => Packet::PingReq,
        13 => Packet::PingResp,
        14 => Packet::Disconnect(Disconnect::decode(r, version)?),
        15 if version.is_v5() => Packet::Auth(Auth::decode(r)?),
        _ => return Err(Error::Malformed("reserved packet type")),
    })
}

/// Appends the encoding of `packet` for a peer that speaks `version` to `buf`.
///
/// A CONNECT is always encoded at its own `Connect::version`. The buffer grows at
/// most once per packet. The caller keeps packets under the peer's maximum packet
/// size (see [`encoded_len`]), which is far below the 256 MiB the format allows.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    let body_len = body_len(packet, version);
    buf.reserve(1 + variable_byte_integer_len(body_len) + body_len);
    buf.put_u8(first_byte(packet));
    put_variable_byte_integer(buf, body_len);
    match packet {
        Packet::Connect(connect) => connect.encode(buf),
        Packet::ConnAck(connack) => connack.encode(version, buf),
        Packet::Publish(publish) => publish.encode(version, buf),
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            ack.encode(version, buf)
        }
        Packet::Subscribe(subscribe) => subscribe.encode(version, buf),
        Packet::SubAck(suback) => suback.encode(version, buf),
        Packet::Unsubscribe(unsubscribe) => unsubscribe.encode(version, buf),
        Packet::UnsubAck(unsuback) => unsuback.encode(version, buf),
        Packet::PingReq | Packet::PingResp => {}
        Packet::Disconnect(disconnect) => disconnect.encode(version, buf),
        Packet::Auth(auth) => auth.encode(buf),
    }
}

/// The number of bytes [`encode`] appends for `packet`, fixed header included:
/// compare it with the peer's Maximum Packet Size before sending ([MQTT-3.1.2-25]).
pub fn encoded_len(packet: &Packet, version: ProtocolVersion) -> usize {
    let body_len = body_len(packet, version);
    1 + variable_byte_integer_len(body_len) + body_len
}

/// The remaining length of `packet`'s encoding.
fn body_len(packet: &Packet, version: ProtocolVersion) -> usize {
    match packet {
        Packet::Connect(connect) => connect.encoded_len(),
        Packet::ConnAck(connack) => connack.encoded_len(version),
        Packet::Publish(publish) => publish.encoded_len(version),
        Packet::PubAck(ack) | Packet::PubRec(ack) | Packet::PubRel(ack) | Packet::PubComp(ack) => {
            ack.encoded_len(version)
        }
        Packet::Subscribe(subscribe) => subscribe.encoded_len(version),
        Packet::SubAck(suback) => suback.encoded_len(version),
        Packet::Unsubscribe(unsubscribe) => unsubscribe.encoded_len(version),
        Packet::UnsubAck(unsuback) => unsuback.encoded_len(version),
        Packet::PingReq | Packet::PingResp => 0,
        Packet::Disconnect(disconnect) => disconnect.encoded_len(version),
        Packet::Auth(auth) => auth.encoded_len(),
    }
}

/// Packet type and flags.
fn first_byte(packet: &Packet) -> u8 {
    match packet {
        Packet::Connect(_) => 0x10,
        Packet::ConnAck(_) => 0x20,
        Packet::Publish(publish) => 0x30 | publish.flags(),
        Packet::PubAck(_) => 0x40,
        Packet::PubRec(_) => 0x50,
        Packet::PubRel(_) => 0x62,
        Packet::PubComp(_) => 0x70,
        Packet::Subscribe(_) => 0x82,
        Packet::SubAck(_) => 0x90,
        Packet::Unsubscribe(_) => 0xA2,
        Packet::UnsubAck(_) => 0xB0,
        Packet::PingReq => 0xC0,
        Packet::PingResp => 0xD0,
        Packet::Disconnect(_) => 0xE0,
        Packet::Auth(_) => 0xF0,
    }
}

/// A cursor over one packet's body. Every read checks the bytes are there and
/// reports a truncated field as malformed: the fixed header promised them.
///
/// A Malformed Packet is one that "cannot be parsed", a Protocol Error one found
/// "after the packet has been parsed" (MQTT 5.0 §1.2, §4.13.1). So a broken rule in
/// a field that parses (packet id 0, a duplicate property, QoS 3 in subscription
/// options, …) is only noted here, and the packet is read on: [`Reader::finish`]
/// reports it once nothing later in the packet turns out to be malformed.
pub(crate) struct Reader {
    buf: Bytes,
    /// The first rule the packet broke while still parsing.
    violation: Option<Error>,
}

const TRUNCATED: Error = Error::Malformed("packet shorter than its fields");

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Reader {
        Reader {
            buf,
            violation: None,
        }
    }

    /// Notes a broken rule that does not stop the packet from parsing; the first one
    /// noted is what [`Reader::finish`] reports.
    pub(crate) fn violation(&mut self, error: Error) {
        self.violation.get_or_insert(error);
    }

    /// `result`, except that an error other than [`Error::Malformed`] is noted as a
    /// [`Reader::violation`] and `T::default()` stands in for the value: the packet
    /// is discarded anyway, but the rest of it is parsed first.
    pub(crate) fn defer<T: Default>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        match result {
            Err(error @ Error::Malformed(_)) => Err(error),
            Err(error) => {
                self.violation(error);
                Ok(T::default())
            }
            ok => ok,
        }
    }

    /// The violation noted so far, if any, as an error.
    pub(crate) fn check_violation(&mut self) -> Result<(), Error> {
        self.violation.take().map_or(Ok(()), Err)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        self.buf.try_get_u8().map_err(|_| TRUNCATED)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        self.buf.try_get_u16().map_err(|_| TRUNCATED)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        self.buf.try_get_u32().map_err(|_| TRUNCATED)
    }

    /// A variable byte integer (MQTT 5.0 §1.5.5): at most four bytes.
    pub(crate) fn variable_byte_integer(&mut self) -> Result<u32, Error> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if byte == 0 && i > 0 {
                    return Err(Error::Malformed(
                        "variable byte integer not minimally encoded",
                    ));
                }
                return Ok(value);
            }
        }
        Err(Error::Malformed(
            "variable byte integer longer than 4 bytes",
        ))
    }

    /// The next `len` bytes, shared with the packet buffer.
    pub(crate) fn take(&mut self, len: usize) -> Result<Bytes, Error> {
        if len > self.buf.len() {
            return Err(TRUNCATED);
        }
        Ok(self.buf.split_to(len))
    }

    /// Everything not yet read (a PUBLISH payload, a list of reason codes).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two-byte length and that many bytes (MQTT 5.0 §1.5.6).
    pub(crate) fn binary(&mut self) -> Result<Bytes, Error> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 string (MQTT 5.0 §1.5.4), validated once and kept as a slice.
    pub(crate) fn string(&mut self) -> Result<ByteString, Error> {
        let bytes = self.binary()?;
        // [MQTT-1.5.4-2] no U+0000; checked first because it is cheaper than UTF-8.
        if bytes.contains(&0) {
            return Err(Error::Malformed("string contains U+0000"));
        }
        // [MQTT-1.5.4-1] well-formed UTF-8 (Rust strings cannot hold surrogates).
        ByteString::try_from(bytes).map_err(|_| Error::Malformed("string is not valid UTF-8"))
    }

    /// A packet identifier, which is never zero ([MQTT-2.3.1-1]); a zero is a
    /// [`Reader::violation`], with 1 standing in.
    pub(crate) fn packet_id(&mut self) -> Result<PacketId, Error> {
        match PacketId::new(self.u16()?) {
            Some(packet_id) => Ok(packet_id),
            None => {
                self.violation(Error::Protocol("packet identifier 0"));
                Ok(PacketId(std::num::NonZeroU16::MIN))
            }
        }
    }

    /// Fails if the body has bytes its fields did not account for (malformed), then
    /// if the packet broke a rule on the way ([`Reader::violation`]).
    pub(crate) fn finish(&mut self) -> Result<(), Error> {
        if !self.buf.is_empty() {
            return Err(Error::Malformed("packet longer than its fields"));
        }
        self.check_violation()
    }
}

/// Bytes a variable byte integer takes on the wire.
pub(crate) fn variable_byte_integer_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// Writes a variable byte integer; values above [`MAX_VARIABLE_BYTE_INTEGER`] are
/// the caller's bug and come out as a malformed integer rather than a panic.
pub(crate) fn put_variable_byte_integer(buf: &mut BytesMut, mut value: usize) {
    debug_assert!(
        value <= MAX_VARIABLE_BYTE_INTEGER,
        "variable byte integer out of range"
    );
    loop {
        let byte = (value & 0x7F) as u8;
        value >>= 7;
        if value == 0 {
            buf.put_u8(byte);
            return;
        }
        buf.put_u8(byte | 0x80);
    }
}

/// Bytes `put_binary` writes for `data`.
pub(crate) fn binary_len(data: &[u8]) -> usize {
    2 + data.len().min(usize::from(u16::MAX))
}

/// Writes binary data or a string. Longer than 65,535 bytes cannot be framed: it is
/// cut short (and `binary_len` agrees) so the packet stays well formed; the decoder
/// never produces such a field.
pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) {
    let len = u16::try_from(data.len()).unwrap_or(u16::MAX);
    debug_assert_eq!(
        usize::from(len),
        data.len(),
        "field longer than 65,535 bytes"
    );
    buf.put_u16(len);
    buf.put_slice(data.get(..usize::from(len)).unwrap_or_default());
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::{Properties, QoS, ReasonCode};

    /// Every protocol version, for tests that cover each one.
    pub(crate) const VERSIONS: [ProtocolVersion; 3] = [
        ProtocolVersion::V3_1,
        ProtocolVersion::V3_1_1,
        ProtocolVersion::V5,
    ];

    fn decode_all(bytes: &[u8], version: ProtocolVersion) -> Result<Option<Packet>, Error> {
        decode(&mut BytesMut::from(bytes), version, usize::MAX)
    }

    /// Encodes, checks `encoded_len`, decodes, and asserts the packet survived.
    pub(crate) fn round_trip(packet: &Packet, version: ProtocolVersion) -> Bytes {
        let mut buf = BytesMut::new();
        encode(packet, version, &mut buf);
        assert_eq!(buf.len(), encoded_len(packet, version));
        let bytes = buf.clone().freeze();
        let decoded = decode(&mut buf, version, usize::MAX).unwrap().unwrap();
        assert_eq!(&decoded, packet, "{version:?}");
        assert!(buf.is_empty(), "decode consumed the whole packet");
        bytes
    }

    #[test]
    fn bad_first_byte_is_refused_before_the_body_arrives() {
        // "GET /" claims a 69-byte PUBACK body; its flags are wrong at the first byte.
        for version in VERSIONS {
            for first in [b"G".as_slice(), &[0x00], &[0x41], &[0x80], &[0x16, 0x03]] {
                assert!(
                    matches!(decode_all(first, version), Err(Error::Malformed(_))),
                    "{first:?} {version:?}"
                );
            }
        }
        assert!(decode_all(&[0xF0], ProtocolVersion::V3_1_1).is_err());
        assert_eq!(decode_all(&[0xF0], ProtocolVersion::V5), Ok(None));
    }

    #[test]
    fn pingreq_and_pingresp_round_trip_at_every_version() {
        for version in VERSIONS {
            assert_eq!(&round_trip(&Packet::PingReq, version)[..], [0xC0, 0x00]);
            assert_eq!(&round_trip(&Packet::PingResp, version)[..], [0xD0, 0x00]);
        }
    }

    #[test]
    fn truncated_packets_are_incomplete_not_errors() {
        let publish = Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            topic: "a/b".into(),
            packet_id: PacketId::new(7),
            payload: Bytes::from(vec![9; 300]),
            ..Publish::default()
        });
        for version in VERSIONS {
            let mut full = BytesMut::new();
            encode(&publish, version, &mut full);
            for len in 0..full.len() {
                let mut part = BytesMut::from(&full[..len]);
                assert_eq!(
                    decode(&mut part, version, usize::MAX),
                    Ok(None),
                    "length {len}"
                );
                assert_eq!(part.len(), len, "nothing consumed");
            }
        }
    }

    #[test]
    fn two_packets_in_one_buffer_decode_one_at_a_time() {
        let mut buf = BytesMut::from(&[0xC0, 0x00, 0xD0, 0x00][..]);
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V5, 100),
            Ok(Some(Packet::PingReq))
        );
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V5, 100),
            Ok(Some(Packet::PingResp))
        );
        assert_eq!(decode(&mut buf, ProtocolVersion::V5, 100), Ok(None));
    }

    #[test]
    fn remaining_length_of_five_bytes_is_malformed() {
        let bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01];
        assert!(matches!(
            decode_all(&bytes, ProtocolVersion::V5),
            Err(Error::Malformed(_))
        ));
        // Known to be too long as soon as the fourth length byte has its continuation bit.
        assert!(matches!(
            decode_all(&bytes[..5], ProtocolVersion::V5),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn remaining_length_boundaries_decode() {
        assert_eq!(remaining_length(&[0x7F]), Ok(Some((127, 1))));
        assert_eq!(remaining_length(&[0x80, 0x01]), Ok(Some((128, 2))));
        assert_eq!(
            remaining_length(&[0xFF, 0xFF, 0xFF, 0x7F]),
            Ok(Some((MAX_VARIABLE_BYTE_INTEGER, 4)))
        );
        assert_eq!(remaining_length(&[0xFF, 0xFF]), Ok(None));
        assert!(remaining_length(&[0x80, 0x00]).is_err());
        for value in [
            0,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            MAX_VARIABLE_BYTE_INTEGER,
        ] {
            let mut buf = BytesMut::new();
            put_variable_byte_integer(&mut buf, value);
            assert_eq!(buf.len(), variable_byte_integer_len(value));
            assert_eq!(remaining_length(&buf), Ok(Some((value, buf.len()))));
        }
    }

    #[test]
    fn oversize_packet_is_rejected_before_its_body_arrives() {
        // PUBLISH announcing 1,000 bytes; only the fixed header is buffered.
        let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
        assert_eq!(
            decode(&mut buf, ProtocolVersion::V3_1_1, 1000),
            Err(Error::PacketTooLarge {
                size: 1003,
                max: 1000
            })
        );
        assert_eq!(buf.len(), 3, "nothing consumed");
        let mut buf = BytesMut::from(&[0x30, 0xE8, 0x07][..]);
        assert_eq!(decode(&mut buf, ProtocolVersion::V3_1_1, 1003), Ok(None));
    }

    #[test]
    fn reserved_packet_types_are_malformed() {
        for version in VERSIONS {
            assert!(matches!(
                decode_all(&[0x00, 0x00], version),
                Err(Error::Malformed(_))
            ));
        }
        assert!(matches!(
            decode_all(&[0xF0, 0x00], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
        assert!(decode_all(&[0xF0, 0x00], ProtocolVersion::V5)
            .unwrap()
            .is_some());
    }

    #[test]
    fn reserved_fixed_header_flags_are_malformed() {
        let cases: &[&[u8]] = &[
            &[0x41, 0x02, 0x00, 0x01],                         // PUBACK
            &[0x60, 0x02, 0x00, 0x01],                         // PUBREL needs 0b0010
            &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // SUBSCRIBE needs 0b0010
            &[0xA0, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],       // UNSUBSCRIBE needs 0b0010
            &[0xC1, 0x00],                                     // PINGREQ
            &[0xE8, 0x00],                                     // DISCONNECT
        ];
        for bytes in cases {
            assert!(
                matches!(
                    decode_all(bytes, ProtocolVersion::V3_1_1),
                    Err(Error::Malformed(_))
                ),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn issue_8_v3_1_accepts_dup_on_pubrel_subscribe_and_unsubscribe() {
        // MQTT 3.1 sends these at QoS 1 with DUP on a resend; 3.1.1 and 5.0 fixed
        // their flags to 0b0010 ([MQTT-3.6.1-1], [MQTT-3.8.1-1], [MQTT-3.10.1-1]).
        let cases: &[&[u8]] = &[
            &[0x6A, 0x02, 0x00, 0x01],                         // PUBREL, DUP
            &[0x8A, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // SUBSCRIBE, DUP
            &[0xAA, 0x05, 0x00, 0x01, 0x00, 0x01, b'a'],       // UNSUBSCRIBE, DUP
        ];
        for bytes in cases {
            assert!(
                decode_all(bytes, ProtocolVersion::V3_1).unwrap().is_some(),
                "{bytes:x?}"
            );
            assert!(
                matches!(
                    decode_all(bytes, ProtocolVersion::V3_1_1),
                    Err(Error::Malformed(_))
                ),
                "{bytes:x?}"
            );
        }
        let v5_pubrel_dup = [0x6A, 0x02, 0x00, 0x01];
        assert!(matches!(
            decode_all(&v5_pubrel_dup, ProtocolVersion::V5),
            Err(Error::Malformed(_))
        ));
        // Only DUP: QoS 0 or 2 and RETAIN stay refused at 3.1 too.
        for first in [0x60, 0x64, 0x63, 0x6B] {
            assert!(
                matches!(
                    decode_all(&[first, 0x02, 0x00, 0x01], ProtocolVersion::V3_1),
                    Err(Error::Malformed(_))
                ),
                "{first:#x}"
            );
        }
    }

    #[test]
    fn body_longer_than_its_fields_is_malformed() {
        assert!(matches!(
            decode_all(&[0xC0, 0x01, 0x00], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
        assert!(matches!(
            decode_all(&[0x40, 0x03, 0x00, 0x01, 0x00], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn body_shorter_than_its_fields_is_malformed() {
        assert!(matches!(
            decode_all(&[0x40, 0x01, 0x00], ProtocolVersion::V3_1_1),
            Err(Error::Malformed(_))
        ));
    }

    #[test]
    fn strings_reject_nul_and_invalid_utf8() {
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, b'a', 0x00]));
        assert!(matches!(r.string(), Err(Error::Malformed(_))));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x02, 0xC3, 0x28]));
        assert!(matches!(r.string(), Err(Error::Malformed(_))));
        let mut r = Reader::new(Bytes::from_static(&[0x00, 0x03, b'a', b'/', b'b']));
        assert_eq!(r.string().unwrap(), "a/b");
    }

    #[test]
    fn decoded_payload_shares_the_read_buffer() {
        let mut buf = BytesMut::new();
        let publish = Packet::Publish(Publish {
            topic: "t".into(),
            payload: Bytes::from(vec![1; 64]),
            ..Publish::default()
        });
        encode(&publish, ProtocolVersion::V5, &mut buf);
        let start = buf.as_ptr() as usize;
        let end = start + buf.len();
        let Some(Packet::Publish(decoded)) =
            decode(&mut buf, ProtocolVersion::V5, usize::MAX).unwrap()
        else {
            panic!("not a publish");
        };
        let payload = decoded.payload.as_ptr() as usize;
        assert!((start..end).contains(&payload), "payload was copied");
    }

    #[test]
    fn encode_appends_to_existing_bytes() {
        let mut buf = BytesMut::from(&b"xy"[..]);
        encode(&Packet::PingResp, ProtocolVersion::V5, &mut buf);
        assert_eq!(&buf[..], b"xy\xD0\x00");
    }

    #[test]
    fn over_long_field_is_cut_to_keep_the_frame_valid() {
        let data = vec![b'a'; 70_000];
        assert_eq!(binary_len(&data), 65_537);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn version() -> impl Strategy<Value = ProtocolVersion> {
            prop_oneof![
                Just(ProtocolVersion::V3_1),
                Just(ProtocolVersion::V3_1_1),
                Just(ProtocolVersion::V5)
            ]
        }

        /// A well-framed packet of any type with a random body: far more of these
        /// get past the fixed header than purely random bytes do.
        fn framed() -> impl Strategy<Value = Vec<u8>> {
            (any::<u8>(), proptest::collection::vec(any::<u8>(), 0..200)).prop_map(
                |(first, body)| {
                    let mut buf = BytesMut::new();
                    buf.put_u8(first);
                    put_variable_byte_integer(&mut buf, body.len());
                    buf.put_slice(&body);
                    buf.to_vec()
                },
            )
        }

        /// Whatever decodes must re-encode to something that decodes the same.
        fn check(bytes: &[u8], version: ProtocolVersion) {
            let mut buf = BytesMut::from(bytes);
            while let Ok(Some(packet)) = decode(&mut buf, version, 1 << 20) {
                let mut out = BytesMut::new();
                encode(&packet, version, &mut out);
                assert_eq!(out.len(), encoded_len(&packet, version));
                // The type the metrics count by is the one on the wire.
                assert_eq!(out[0] >> 4, packet.packet_type());
                assert_eq!(Packet::type_name(packet.packet_type()), Some(packet.name()));
                let again = decode(&mut out, version, usize::MAX);
                assert_eq!(again, Ok(Some(packet)));
                assert!(out.is_empty());
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), version in version()) {
                check(&bytes, version);
            }

            #[test]
            fn framed_random_bodies_round_trip(bytes in framed(), version in version()) {
                check(&bytes, version);
            }

            #[test]
            fn structured_bodies_round_trip(
                kind in 1u8..16,
                v5_props in proptest::collection::vec(
                    prop_oneof![Just(0x26u8), Just(0x1F), Just(0x0B), Just(0x01), Just(0x23), Just(0x11)],
                    0..4
                ),
                tail in proptest::collection::vec(prop_oneof![Just(0u8), Just(1), Just(b'a'), any::<u8>()], 0..40),
                version in version(),
            ) {
                // A packet id, a property list of plausible ids, then random fields.
                let mut body = vec![0x00, 0x01];
                if version.is_v5() {
                    let mut props = Vec::new();
                    for id in v5_props {
                        props.push(id);
                        match id {
                            0x26 => props.extend_from_slice(&[0, 1, b'k', 0, 1, b'v']),
                            0x1F => props.extend_from_slice(&[0, 1, b'r']),
                            0x11 => props.extend_from_slice(&[0, 0, 0, 5]),
                            0x23 => props.extend_from_slice(&[0, 3]),
                            _ => props.push(1),
                        }
                    }
                    body.push(props.len() as u8);
                    body.extend(props);
                }
                body.extend(tail);
                let flags = match kind { 3 => 0b0010, 6 | 8 | 10 => 0b0010, _ => 0 };
                let mut bytes = vec![(kind << 4) | flags];
                let mut len = BytesMut::new();
                put_variable_byte_integer(&mut len, body.len());
                bytes.extend_from_slice(&len);
                bytes.extend(body);
                check(&bytes, version);
            }
        }

        fn string() -> impl Strategy<Value = ByteString> {
            "[a-zé/$ ]{0,12}".prop_map(ByteString::from)
        }

        fn topic() -> impl Strategy<Value = ByteString> {
            "[a-zé/$]{1,12}".prop_map(ByteString::from)
        }

        fn bytes() -> impl Strategy<Value = Bytes> {
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Bytes::from)
        }

        fn qos() -> impl Strategy<Value = QoS> {
            (0u8..3).prop_map(|bits| QoS::from_bits(bits).unwrap())
        }

        fn properties() -> impl Strategy<Value = Properties> {
            (
                proptest::option::of(0u8..2),
                proptest::option::of(any::<u32>()),
                proptest::option::of(string()),
                proptest::option::of(bytes()),
                proptest::collection::vec((string(), string()), 0..3),
                proptest::collection::vec(1u32..=268_435_455, 0..3),
            )
                .prop_map(|(format, expiry, content_type, correlation, user, ids)| {
                    Properties {
                        payload_format_indicator: format,
                        message_expiry_interval: expiry,
                        content_type,
                        correlation_data: correlation,
                        user_properties: user,
                        subscription_identifiers: ids,
                        ..Properties::default()
                    }
                })
        }

        fn publish() -> impl Strategy<Value = Packet> {
            (
                qos(),
                any::<bool>(),
                any::<bool>(),
                topic(),
                1u16..,
                properties(),
                bytes(),
            )
                .prop_map(|(qos, dup, retain, topic, id, properties, payload)| {
                    let qos0 = qos == QoS::AtMostOnce;
                    Packet::Publish(Publish {
                        dup: dup && !qos0,
                        qos,
                        retain,
                        topic,
                        packet_id: if qos0 { None } else { PacketId::new(id) },
                        properties,
                        payload,
                    })
                })
        }

        fn connect() -> impl Strategy<Value = Packet> {
            (
                version(),
                any::<bool>(),
                any::<u16>(),
                string(),
                proptest::option::of((topic(), bytes(), qos(), any::<bool>())),
                proptest::option::of(string()),
                proptest::option::of(bytes()),
            )
                .prop_map(
                    |(version, clean_start, keep_alive, client_id, will, username, password)| {
                        // 3.x needs a username for a password [MQTT-3.1.2-22].
                        let password = if version.is_v5() || username.is_some() {
                            password
                        } else {
                            None
                        };
                        Packet::Connect(Box::new(Connect {
                            version,
                            clean_start,
                            keep_alive,
                            client_id,
                            will: will.map(|(topic, payload, qos, retain)| crate::protocol::Will {
                                topic,
                                payload,
                                qos,
                                retain,
                                properties: Properties::default(),
                            }),
                            username,
                            password,
                            properties: Properties::default(),
                        }))
                    },
                )
        }

        /// Strips what `version` cannot carry, as the encoder does.
        fn at_version(packet: Packet, version: ProtocolVersion) -> Packet {
            match packet {
                Packet::Publish(publish) if !version.is_v5() => Packet::Publish(Publish {
                    properties: Properties::default(),
                    ..publish
                }),
                other => other,
            }
        }

        proptest! {
            #[test]
            fn arbitrary_packets_round_trip(
                packet in prop_oneof![publish(), connect()],
                version in version(),
            ) {
                let packet = at_version(packet, version);
                let mut buf = BytesMut::new();
                encode(&packet, version, &mut buf);
                prop_assert_eq!(buf.len(), encoded_len(&packet, version));
                prop_assert_eq!(decode(&mut buf, version, usize::MAX), Ok(Some(packet)));
            }
        }

        #[test]
        fn v5_ack_with_omitted_reason_round_trips() {
            let ack = decode_all(&[0x40, 0x02, 0x00, 0x01], ProtocolVersion::V5)
                .unwrap()
                .unwrap();
            assert_eq!(ack, Packet::PubAck(Ack::new(PacketId::new(1).unwrap())));
            let with_reason = decode_all(&[0x40, 0x03, 0x00, 0x01, 0x00], ProtocolVersion::V5)
                .unwrap()
                .unwrap();
            assert_eq!(with_reason, ack);
            let full = decode_all(&[0x40, 0x04, 0x00, 0x01, 0x10, 0x00], ProtocolVersion::V5)
                .unwrap()
                .unwrap();
            assert_eq!(
                full,
                Packet::PubAck(Ack {
                    packet_id: PacketId::new(1).unwrap(),
                    reason: ReasonCode::NO_MATCHING_SUBSCRIBERS,
                    properties: Properties::default(),
                })
            );
        }
    }
}
