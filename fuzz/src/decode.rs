//! The packet decoder, at every protocol version, on any bytes:
//! - it never panics;
//! - it never holds more memory than a constant factor of the maximum packet size
//!   (a decoder that trusted a declared length would reserve up to 256 MiB);
//! - `Ok(None)` and `PacketTooLarge` consume nothing, a packet consumes at most
//!   the maximum;
//! - decode → encode → decode gives the same packet, `encoded_len` is exact, and
//!   encoding that packet again gives the same bytes.
//!
//! Input: two bytes that set the maximum packet size (2 to 4,097 bytes, so that
//! inputs reach it), then the bytes to decode.

use bytes::BytesMut;
use rookery::protocol::codec::encoded_len;
use rookery::protocol::{decode, encode, Error, Packet, ProtocolVersion};

use super::alloc;
use super::input::Input;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Bytes a decoded packet may hold per byte of its encoding. The worst case is a
/// v5 user property: 5 bytes on the wire (id, two empty strings) become a pair of
/// 32-byte `ByteString`s in a `Vec` that may have doubled and be mid-copy.
const BYTES_PER_WIRE_BYTE: usize = 64;

/// Fixed costs: the `Box` of a CONNECT, a read buffer's bookkeeping.
const SLACK: usize = 4096;

/// Runs every property on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let max_size = 2 + usize::from(input.u16() & 0x0FFF);
    let bytes = input.rest();
    for version in VERSIONS {
        let mut buf = BytesMut::from(bytes);
        // A read buffer may round its growth up to what it held before.
        let allowance = BYTES_PER_WIRE_BYTE * max_size + 2 * bytes.len() + SLACK;
        loop {
            let before = buf.len();
            let (result, peak) = alloc::measure(|| decode(&mut buf, version, max_size));
            assert!(
                peak <= allowance,
                "{version:?}: decoding with a maximum of {max_size} bytes held {peak} bytes"
            );
            match result {
                Ok(Some(packet)) => {
                    assert!(
                        before - buf.len() <= max_size,
                        "{version:?}: oversize packet"
                    );
                    round_trip(&packet, version);
                }
                Ok(None) => {
                    assert_eq!(
                        buf.len(),
                        before,
                        "{version:?}: a partial packet was consumed"
                    );
                    break;
                }
                Err(Error::PacketTooLarge { size, max }) => {
                    assert_eq!(
                        buf.len(),
                        before,
                        "{version:?}: an oversize packet was consumed"
                    );
                    assert!(size > max && max == max_size, "{version:?}: {size} > {max}");
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// decode → encode → decode, and encode once more.
fn round_trip(packet: &Packet, version: ProtocolVersion) {
    let mut encoded = BytesMut::new();
    encode(packet, version, &mut encoded);
    assert_eq!(
        encoded.len(),
        encoded_len(packet, version),
        "{version:?}: encoded_len"
    );
    let first = encoded.clone().freeze();
    let again = decode(&mut encoded, version, usize::MAX)
        .unwrap_or_else(|error| panic!("{version:?}: re-encoded packet fails: {error}"))
        .unwrap_or_else(|| panic!("{version:?}: re-encoded packet is incomplete"));
    assert!(
        encoded.is_empty(),
        "{version:?}: re-encoding left trailing bytes"
    );
    assert_eq!(&again, packet, "{version:?}");
    let mut twice = BytesMut::new();
    encode(&again, version, &mut twice);
    assert_eq!(twice.freeze(), first, "{version:?}: encoding is not stable");
}
