//! Any bytes, at every protocol version: decoding never panics, and whatever
//! decodes re-encodes to bytes that decode to the same packet.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rookery::protocol::{decode, encode, ProtocolVersion};

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

fuzz_target!(|data: &[u8]| {
    for version in VERSIONS {
        let mut buf = BytesMut::from(data);
        // A small maximum, as a broker would set, so that the size check runs too.
        while let Ok(Some(packet)) = decode(&mut buf, version, 64 * 1024) {
            let mut encoded = BytesMut::new();
            encode(&packet, version, &mut encoded);
            let again = decode(&mut encoded, version, usize::MAX)
                .expect("a re-encoded packet decodes")
                .expect("a re-encoded packet is complete");
            assert_eq!(again, packet, "{version:?}");
            assert!(encoded.is_empty(), "re-encoding produced trailing bytes");
        }
    }
});
