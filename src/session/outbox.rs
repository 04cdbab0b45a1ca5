//! Encoded packets waiting to be written: everything one turn of the connection
//! loop produced goes out in one write.

use bytes::BytesMut;

use crate::metrics::{Metrics, PacketCounts};
use crate::protocol::{encode, Packet, ProtocolVersion};

/// An output buffer that enforces the peer's Maximum Packet Size.
#[derive(Debug)]
pub struct Outbox {
    buffer: BytesMut,
    version: ProtocolVersion,
    max_packet_size: usize,
    /// Packets by type and PUBLISH payload bytes encoded since [`Outbox::report_counts`].
    packets: PacketCounts,
    publish_bytes: u64,
}

impl Outbox {
    /// An empty outbox for a peer speaking `version`.
    pub fn new(version: ProtocolVersion) -> Outbox {
        Outbox {
            buffer: BytesMut::new(),
            version,
            max_packet_size: usize::MAX,
            packets: PacketCounts::default(),
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
        self.packets.count(packet.packet_type());
        if let Packet::Publish(publish) = packet {
            self.publish_bytes += publish.payload.len() as u64;
        }
        true
    }

    /// Adds the packets and PUBLISH payload bytes encoded since the last call to
    /// the broker's counters: once per connection turn, not once per packet.
    pub fn report_counts(&mut self, metrics: &Metrics) {
        self.packets.add_to(&metrics.packets_sent);
        Metrics::add(
            &metrics.publish_bytes_sent,
            std::mem::take(&mut self.publish_bytes),
        );
    }

    /// Drops everything encoded and not yet written, and its counts: it will
    /// never be sent.
    pub fn discard(&mut self) {
        self.buffer.clear();
        self.packets = PacketCounts::default();
        self.publish_bytes = 0;
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
