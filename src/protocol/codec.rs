//! Framing: the fixed header, the remaining length, and the primitive encodings
//! (two-byte integers, UTF-8 strings, binary data, variable byte integers).
//!
//! [`decode`] returns `Ok(None)` for a partial packet, like mini-redis's
//! `Connection::parse_frame`: the caller reads more bytes and tries again. The
//! remaining length is checked against `max_size` as soon as the fixed header is
//! complete, before a single byte of the body is buffered.

use bytes::BytesMut;

use super::{Error, Packet, ProtocolVersion};

/// Decodes the packet at the front of `buf`, consuming its bytes.
///
/// `version` is the version negotiated by CONNECT (use `V3_1_1` before CONNECT: the
/// CONNECT body carries its own version). `max_size` bounds the whole packet,
/// fixed header included ([MQTT-3.1.2-24] in v5 terms).
pub fn decode(
    buf: &mut BytesMut,
    version: ProtocolVersion,
    max_size: usize,
) -> Result<Option<Packet>, Error> {
    let _ = (buf, version, max_size);
    unimplemented!("codec: being written")
}

/// Appends the encoding of `packet` for a peer that speaks `version` to `buf`.
pub fn encode(packet: &Packet, version: ProtocolVersion, buf: &mut BytesMut) {
    let _ = (packet, version, buf);
    unimplemented!("codec: being written")
}
