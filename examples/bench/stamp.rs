//! The header every benchmark payload starts with, and what a subscriber learns
//! from it: who sent the message, its place in that publisher's sequence, and when.
//!
//! Layout (big-endian): publisher index `u32`, sequence number `u64`, send time `u64`
//! in nanoseconds since the run's shared clock started; the rest is zero padding.

use bytes::BytesMut;

/// Bytes taken by the header; the smallest allowed `--payload`.
pub const STAMP_LEN: usize = 20;

/// The identity and send time of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub sequence: u64,
    pub sent_ns: u64,
}

impl Stamp {
    /// Overwrites the first bytes of the payload that ends `buf`: the PUBLISH just
    /// encoded, whose payload is its last `payload_len` bytes. Patching in place
    /// keeps one payload buffer for the whole run instead of one per message.
    pub fn write_into_tail(self, buf: &mut BytesMut, payload_len: usize) {
        let start = buf.len() - payload_len;
        if let Some(header) = buf.get_mut(start..start + STAMP_LEN) {
            header[..4].copy_from_slice(&self.publisher.to_be_bytes());
            header[4..12].copy_from_slice(&self.sequence.to_be_bytes());
            header[12..].copy_from_slice(&self.sent_ns.to_be_bytes());
        }
    }

    /// Reads the header; `None` if the payload is too short to hold one.
    pub fn read(payload: &[u8]) -> Option<Stamp> {
        let header: &[u8; STAMP_LEN] = payload.get(..STAMP_LEN)?.try_into().ok()?;
        let (publisher, rest) = header.split_at(4);
        let (sequence, sent_ns) = rest.split_at(8);
        Some(Stamp {
            publisher: u32::from_be_bytes(publisher.try_into().ok()?),
            sequence: u64::from_be_bytes(sequence.try_into().ok()?),
            sent_ns: u64::from_be_bytes(sent_ns.try_into().ok()?),
        })
    }
}

/// What one subscriber saw from one publisher. Loss is computed at the end, when
/// the publisher's sent count is known: `sent - unique`.
#[derive(Debug, Default)]
pub struct Track {
    /// One bit per sequence number seen; grows with the run, never per message.
    seen: Vec<u64>,
    /// The highest sequence number seen, plus one (0 = nothing yet).
    high_water: u64,
    pub unique: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

/// Sequence numbers above this are taken as garbage rather than grown into.
const MAX_SEQUENCE: u64 = 1 << 36;

impl Track {
    /// Records one delivery; `false` if the sequence number is implausible.
    pub fn record(&mut self, sequence: u64) -> bool {
        if sequence > MAX_SEQUENCE {
            return false;
        }
        let word = (sequence / 64) as usize;
        let bit = 1u64 << (sequence % 64);
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        let Some(slot) = self.seen.get_mut(word) else {
            return false;
        };
        if *slot & bit != 0 {
            self.duplicated += 1;
            return true;
        }
        *slot |= bit;
        self.unique += 1;
        if sequence + 1 < self.high_water {
            self.out_of_order += 1;
        }
        self.high_water = self.high_water.max(sequence + 1);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_the_payload_tail() {
        let mut buf = BytesMut::from(&[0xAAu8; 10][..]);
        buf.extend_from_slice(&[0u8; 64]);
        let stamp = Stamp {
            publisher: 7,
            sequence: 1 << 40,
            sent_ns: 123_456_789,
        };
        stamp.write_into_tail(&mut buf, 64);
        assert_eq!(Stamp::read(&buf[10..]), Some(stamp));
        assert_eq!(&buf[..10], &[0xAA; 10]);
    }

    #[test]
    fn track_counts_gaps_as_loss_not_disorder() {
        let mut track = Track::default();
        for sequence in [0, 1, 3, 2, 2, 5] {
            assert!(track.record(sequence));
        }
        assert_eq!(track.unique, 5);
        assert_eq!(track.duplicated, 1);
        assert_eq!(track.out_of_order, 1);
    }
}
