//! What a payload says about itself: which lane (one publisher's stream on one
//! topic) and which sequence number in it, or which client's will it is. Every
//! check reads this, never the topic, so a message routed to the wrong place is
//! caught too.

use bytes::Bytes;

/// A message of a lane: `lane` numbers every publisher's lanes in one space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MessageId {
    pub lane: u32,
    pub seq: u64,
}

/// What a received payload is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    Message(MessageId),
    Will(String),
}

const MESSAGE: u8 = b'm';
const WILL: u8 = b'w';
/// Tag, lane, sequence number.
pub const HEAD_LEN: usize = 1 + 4 + 8;

pub fn message_head(id: MessageId) -> [u8; HEAD_LEN] {
    let mut head = [0; HEAD_LEN];
    head[0] = MESSAGE;
    head[1..5].copy_from_slice(&id.lane.to_be_bytes());
    head[5..].copy_from_slice(&id.seq.to_be_bytes());
    head
}

pub fn will_payload(client_id: &str) -> Bytes {
    let mut payload = vec![WILL];
    payload.extend_from_slice(client_id.as_bytes());
    Bytes::from(payload)
}

/// `None` for a payload this tool did not write.
pub fn identify(payload: &[u8]) -> Option<Identity> {
    match payload.split_first()? {
        (&MESSAGE, rest) if rest.len() >= HEAD_LEN - 1 => Some(Identity::Message(MessageId {
            lane: u32::from_be_bytes(rest[..4].try_into().ok()?),
            seq: u64::from_be_bytes(rest[4..12].try_into().ok()?),
        })),
        (&WILL, rest) => Some(Identity::Will(String::from_utf8(rest.to_vec()).ok()?)),
        _ => None,
    }
}

/// A growable set of sequence numbers.
#[derive(Clone, Debug, Default)]
pub struct SeqSet {
    words: Vec<u64>,
}

impl SeqSet {
    pub fn contains(&self, seq: u64) -> bool {
        let (word, bit) = (seq as usize / 64, seq % 64);
        self.words.get(word).is_some_and(|w| w & (1 << bit) != 0)
    }

    /// Adds `seq`; returns whether it was new.
    pub fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = (seq as usize / 64, seq % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        let is_new = self.words[word] & (1 << bit) == 0;
        self.words[word] |= 1 << bit;
        is_new
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The members of `self` that `other` lacks.
    pub fn missing_from(&self, other: &SeqSet) -> Vec<u64> {
        let mut missing = Vec::new();
        for (index, &word) in self.words.iter().enumerate() {
            let lacking = word & !other.words.get(index).copied().unwrap_or(0);
            for bit in 0..64 {
                if lacking & (1 << bit) != 0 {
                    missing.push((index * 64 + bit) as u64);
                }
            }
        }
        missing
    }
}

/// Whether `filter` matches `topic` (`+` and `#`; no `$` topics are used here).
/// Written again rather than taken from the broker, so that it is a second opinion.
pub fn matches(filter: &str, topic: &str) -> bool {
    let mut levels = topic.split('/');
    for part in filter.split('/') {
        match (part, levels.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (part, Some(level)) if part == level => {}
            _ => return false,
        }
    }
    levels.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_identify_themselves() {
        let id = MessageId {
            lane: 7,
            seq: 1 << 40,
        };
        let payload = crate::conn::padded(&message_head(id), 100);
        assert_eq!(identify(&payload), Some(Identity::Message(id)));
        assert_eq!(
            identify(&will_payload("dev-1")),
            Some(Identity::Will("dev-1".into()))
        );
        assert_eq!(identify(b""), None);
    }

    #[test]
    fn filters_match() {
        assert!(matches("chaos/#", "chaos/p0/q1"));
        assert!(matches("chaos/+/q2", "chaos/p0/q2"));
        assert!(!matches("chaos/+/q2", "chaos/p0/q1"));
        assert!(!matches("chaos/p0", "chaos/p0/q1"));
    }

    #[test]
    fn missing_seqs() {
        let (mut all, mut got) = (SeqSet::default(), SeqSet::default());
        for seq in 0..200 {
            all.insert(seq);
        }
        for seq in (0..200).filter(|s| s % 70 != 3) {
            got.insert(seq);
        }
        assert_eq!(all.missing_from(&got), [3, 73, 143]);
        assert_eq!(got.len(), 197);
    }
}
