//! Encoded packets waiting to be written: everything one turn of the connection
//! loop produced goes out in one write.

use bytes::BytesMut;

use crate::protocol::{encode, Packet, ProtocolVersion};

/// An output buffer that enforces the peer's Maximum Packet Size.
#[derive(Debug)]
pub struct Outbox {
    buffer: BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
    /// Packets and PUBLISH payload bytes encoded since [`Outbox::take_counts`].
    packets: u64,
    publish_bytes: u64,
}

impl Outbox {
    /// An empty outbox for a peer speaking `version`.
    pub fn new(version: ProtocolVersion) -> Outbox {
        Outbox {
            buffer: BytesMut::new(),
            version,
            max_packet_size: usize::MAX,
            packets: 0,
            publish_bytes: 0,
        }
    }

    /// Sets the version once CONNECT is known.
    pub fn set_version(&mut self, version: ProtocolVersion) {
        self.version = version;
    }

    /// The client's Maximum Packet Size (v5 CONNECT).
    pub fn set_max_packet_size(&mut self, max: usize) {
        self.max_packet_size = max;
    }

    /// Encodes `packet`. Returns `false`, sending nothing, if it exceeds the
    /// client's maximum packet size ([MQTT-3.1.2-24]).
    pub fn send(&mut self, packet: &Packet) -> bool {
        let start = self.buffer.len();
        encode(packet, self.version, &mut self.buffer);
        if self.buffer.len() - start > self.max_packet_size {
            self.buffer.truncate(start);
            return false;
        }
        self.packets += 1;
        if let Packet::Publish(publish) = packet {
            self.publish_bytes += publish.payload.len() as u64;
        }
        true
    }

    /// Packets and PUBLISH payload bytes encoded since the last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.packets),
            std::mem::take(&mut self.publish_bytes),
        )
    }

    /// The bytes to write.
    pub fn buffer(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }
}
