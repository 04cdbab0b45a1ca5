//! The on-disk encoding of every record and key, and nothing else.
//!
//! Every value starts with a format version byte. A reader keeps one decoder per
//! format it has ever written (mosquitto's `persist_read_v234.c` habit), so a later
//! release reads an older data dir; a byte it does not know is an error, never a guess.
//!
//! Keys that belong to a client start with the client id, length-prefixed (u16 BE),
//! so that a prefix scan over one client never matches a longer id (`a` vs `ab`).
//! Sequence numbers and packet ids follow in big-endian, so keys sort in queue order.
//!
//! Deadlines are stored as wall-clock milliseconds since the UNIX epoch: an
//! [`Instant`] means nothing after a restart. [`Clock`] converts at the boundary.
//!
//! Formats:
//! - 1: the first.
//! - 2: an online session record also carries the will from CONNECT (so that
//!   it survives a crash or a shutdown). Every other record is as in format 1.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};

use super::{Delivery, DeliveryState, Error, Message, SessionRecord, StoredWill, WillMessage};
use crate::protocol::codec::Reader;
use crate::protocol::properties::Owner;
use crate::protocol::{
    ClientId, PacketId, Properties, ProtocolVersion, QoS, SubscriptionOptions, TopicName,
};

/// The record format this release writes; it reads this one and every older one.
pub const FORMAT: u8 = 2;

/// "No deadline" in a wall-clock field.
const NEVER: u64 = u64::MAX;

/// A matched pair of clocks, read once, to convert deadlines between [`Instant`]
/// (in memory) and wall-clock milliseconds (on disk).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    instant: Instant,
    wall_ms: u64,
}

impl Clock {
    /// The clocks now.
    pub fn now() -> Clock {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(NEVER - 1)
            });
        Clock {
            instant: Instant::now(),
            wall_ms,
        }
    }

    /// The monotonic side of the pair.
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// The wall-clock side of the pair, in milliseconds since the Unix epoch.
    pub fn wall_ms(&self) -> u64 {
        self.wall_ms
    }

    /// `at` in wall-clock milliseconds; `None` (no deadline) is `u64::MAX`.
    pub fn to_wall(self, at: Option<Instant>) -> u64 {
        let Some(at) = at else { return NEVER };
        let ahead = at.saturating_duration_since(self.instant).as_millis();
        let behind = self.instant.saturating_duration_since(at).as_millis();
        let ahead = u64::try_from(ahead).unwrap_or(NEVER - 1);
        let behind = u64::try_from(behind).unwrap_or(NEVER - 1);
        self.wall_ms
            .saturating_add(ahead)
            .saturating_sub(behind)
            .min(NEVER - 1)
    }

    /// A deadline that passed (while the broker was down, say) becomes `now`, so
    /// that every `is_expired(now)` check sees it as expired.
    fn to_instant(self, wall_ms: u64) -> Option<Instant> {
        if wall_ms == NEVER {
            return None;
        }
        let ahead = Duration::from_millis(wall_ms.saturating_sub(self.wall_ms));
        let behind = Duration::from_millis(self.wall_ms.saturating_sub(wall_ms));
        // A passed deadline maps to the past, not to this clock's `now`: the caller's
        // own `now` may have been read a moment before this clock was.
        Some(
            self.instant
                .checked_add(ahead)
                .and_then(|at| at.checked_sub(behind))
                .unwrap_or(self.instant),
        )
    }
}

/// Reads the version byte; returns it if this release reads that format.
fn check_format(r: &mut Reader) -> Result<u8, Error> {
    match r.u8().map_err(corrupt)? {
        found @ 1..=FORMAT => Ok(found),
        found => Err(Error::UnknownFormat {
            found,
            known: FORMAT,
        }),
    }
}

fn corrupt(error: crate::protocol::Error) -> Error {
    Error::Corrupt(error.to_string())
}

// ---- keys ----

/// `len(client_id) ‖ client_id`: the prefix of every per-client key.
pub fn client_prefix(client_id: &ClientId) -> Vec<u8> {
    let id = client_id.as_str().as_bytes();
    let mut key = Vec::with_capacity(2 + id.len() + 8);
    // Client ids come from a u16-length string on the wire.
    key.put_u16(u16::try_from(id.len()).unwrap_or(u16::MAX));
    key.extend_from_slice(id);
    key
}

/// A client's key with a sequence number after it (queues, in-flight state).
pub fn seq_key(client_id: &ClientId, seq: u64) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.put_u64(seq);
    key
}

/// A client's key with an inbound packet id after it.
pub fn packet_id_key(client_id: &ClientId, packet_id: PacketId) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.put_u16(packet_id.get());
    key
}

/// A client's key with a subscription's filter text after it.
pub fn filter_key(client_id: &ClientId, filter: &str) -> Vec<u8> {
    let mut key = client_prefix(client_id);
    key.extend_from_slice(filter.as_bytes());
    key
}

/// Splits a per-client key into the client id and what follows it.
pub fn split_key(key: &[u8]) -> Result<(ClientId, &[u8]), Error> {
    let bad = || Error::Corrupt("key shorter than its client id".into());
    let len: [u8; 2] = key
        .get(..2)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(bad)?;
    let len = usize::from(u16::from_be_bytes(len));
    let id = key.get(2..2 + len).ok_or_else(bad)?;
    let rest = key.get(2 + len..).ok_or_else(bad)?;
    let id = std::str::from_utf8(id).map_err(|_| Error::Corrupt("client id not UTF-8".into()))?;
    Ok((ClientId::new(id), rest))
}

/// The sequence number at the end of a queue or in-flight key.
pub fn key_seq(rest: &[u8]) -> Result<u64, Error> {
    let bytes: [u8; 8] = rest
        .try_into()
        .map_err(|_| Error::Corrupt("queue key without a sequence number".into()))?;
    Ok(u64::from_be_bytes(bytes))
}

// ---- messages ----

fn put_message(buf: &mut BytesMut, message: &Message, clock: Clock) {
    buf.put_u8(message.qos as u8 | (u8::from(message.retain) << 2));
    buf.put_u64(clock.to_wall(message.expires_at));
    let topic = message.topic.as_str().as_bytes();
    buf.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    buf.extend_from_slice(topic);
    // The v5 wire encoding of the forwarded properties: already tested, and it
    // round-trips everything a Message carries.
    message.properties.encode(buf);
    buf.extend_from_slice(&message.payload);
}

fn read_message(r: &mut Reader, clock: Clock) -> Result<Message, Error> {
    let flags = r.u8().map_err(corrupt)?;
    let qos = QoS::from_bits(flags & 0b11).ok_or_else(|| Error::Corrupt("QoS 3".into()))?;
    let expires_at = clock.to_instant(u64_of(r)?);
    let len = usize::from(r.u16().map_err(corrupt)?);
    let topic = r.take(len).map_err(corrupt)?;
    let topic = std::str::from_utf8(&topic)
        .map_err(|_| Error::Corrupt("topic not UTF-8".into()))
        .and_then(|topic| TopicName::new(topic).map_err(corrupt))?;
    let properties = Properties::decode(r, Owner::PUBLISH).map_err(corrupt)?;
    r.check_violation().map_err(corrupt)?;
    Ok(Message {
        topic,
        payload: r.rest(),
        qos,
        retain: flags & 0b100 != 0,
        properties,
        expires_at,
    })
}

fn u64_of(r: &mut Reader) -> Result<u64, Error> {
    let high = r.u32().map_err(corrupt)?;
    let low = r.u32().map_err(corrupt)?;
    Ok((u64::from(high) << 32) | u64::from(low))
}

/// A retained message (`retained` keyspace, keyed by topic).
pub fn encode_retained(message: &Message, clock: Clock) -> Bytes {
    let mut buf = BytesMut::with_capacity(32 + message.payload.len());
    buf.put_u8(FORMAT);
    put_message(&mut buf, message, clock);
    buf.freeze()
}

/// Reads a retained message.
pub fn decode_retained(value: Bytes, clock: Clock) -> Result<Message, Error> {
    let mut r = Reader::new(value);
    check_format(&mut r)?;
    read_message(&mut r, clock)
}

/// A queued delivery (`queues` keyspace): the per-subscriber part, then the message.
pub fn encode_delivery(delivery: &Delivery, clock: Clock) -> Bytes {
    let message = &delivery.message;
    let mut buf = BytesMut::with_capacity(48 + message.payload.len());
    buf.put_u8(FORMAT);
    buf.put_u8(delivery.qos as u8 | (u8::from(delivery.retain) << 2));
    buf.put_u16(u16::try_from(delivery.subscription_ids.len()).unwrap_or(0));
    for id in delivery.subscription_ids.iter().take(usize::from(u16::MAX)) {
        buf.put_u32(*id);
    }
    put_message(&mut buf, message, clock);
    buf.freeze()
}

/// Reads a queued delivery stored under `seq`.
pub fn decode_delivery(value: Bytes, seq: u64, clock: Clock) -> Result<Delivery, Error> {
    let mut r = Reader::new(value);
    check_format(&mut r)?;
    let flags = r.u8().map_err(corrupt)?;
    let qos = QoS::from_bits(flags & 0b11).ok_or_else(|| Error::Corrupt("QoS 3".into()))?;
    let count = r.u16().map_err(corrupt)?;
    let subscription_ids = (0..count)
        .map(|_| r.u32().map_err(corrupt))
        .collect::<Result<Vec<u32>, Error>>()?;
    let message = read_message(&mut r, clock)?;
    Ok(Delivery {
        message: Arc::new(message),
        qos,
        retain: flags & 0b100 != 0,
        subscription_ids,
        seq: Some(seq),
    })
}

/// The progress of a sent delivery (`inflight` keyspace). `Queued` is never stored:
/// it is the absence of a record.
pub fn encode_state(state: DeliveryState) -> [u8; 4] {
    let (phase, id) = match state {
        DeliveryState::Queued => (0, 0),
        DeliveryState::Sent(id) => (1, id.get()),
        DeliveryState::Released(id) => (2, id.get()),
    };
    let [high, low] = id.to_be_bytes();
    [FORMAT, phase, high, low]
}

/// Reads a delivery's progress.
pub fn decode_state(value: Bytes) -> Result<DeliveryState, Error> {
    let mut r = Reader::new(value);
    check_format(&mut r)?;
    let phase = r.u8().map_err(corrupt)?;
    let id = r.u16().map_err(corrupt)?;
    match (phase, PacketId::new(id)) {
        (0, _) => Ok(DeliveryState::Queued),
        (1, Some(id)) => Ok(DeliveryState::Sent(id)),
        (2, Some(id)) => Ok(DeliveryState::Released(id)),
        _ => Err(Error::Corrupt("unknown delivery state".into())),
    }
}

/// A subscription's options and identifier (`subscriptions` keyspace).
pub fn encode_subscription(options: SubscriptionOptions, identifier: Option<u32>) -> [u8; 6] {
    let [a, b, c, d] = identifier.unwrap_or(0).to_be_bytes();
    [FORMAT, options.to_byte(ProtocolVersion::V5), a, b, c, d]
}

/// Reads a subscription's options and identifier.
pub fn decode_subscription(value: Bytes) -> Result<(SubscriptionOptions, Option<u32>), Error> {
    let mut r = Reader::new(value);
    check_format(&mut r)?;
    let byte = r.u8().map_err(corrupt)?;
    let options = SubscriptionOptions::from_byte(byte, ProtocolVersion::V5).map_err(corrupt)?;
    // Subscription identifiers start at 1 ((MQTT 5.0 §3.8.2.1.2)), so 0 means none.
    let identifier = Some(r.u32().map_err(corrupt)?).filter(|&id| id != 0);
    Ok((options, identifier))
}

const ONLINE: u8 = 1;
const OFFLINE: u8 = 2;

/// A session record (`sessions` keyspace, keyed by client id).
pub fn encode_session(record: &SessionRecord, clock: Clock) -> Bytes {
    let mut buf = BytesMut::with_capacity(32);
    buf.put_u8(FORMAT);
    match record {
        SessionRecord::Online { expiry, will } => {
            buf.put_u8(ONLINE);
            buf.put_u64(expiry.map_or(NEVER, |d| u64::try_from(d.as_millis()).unwrap_or(NEVER)));
            if let Some(will) = will {
                buf.put_u8(1);
                put_will(&mut buf, will);
            } else {
                buf.put_u8(0);
            }
        }
        SessionRecord::Offline { expires_at, will } => {
            buf.put_u8(OFFLINE);
            buf.put_u64(clock.to_wall(*expires_at));
            if let Some(will) = will {
                buf.put_u8(1);
                buf.put_u64(clock.to_wall(Some(will.publish_at)));
                put_message(&mut buf, &will.message, clock);
            } else {
                buf.put_u8(0);
            }
        }
    }
    buf.freeze()
}

/// Reads a session record, in any format this release knows.
pub fn decode_session(value: Bytes, clock: Clock) -> Result<SessionRecord, Error> {
    let mut r = Reader::new(value);
    let format = check_format(&mut r)?;
    match r.u8().map_err(corrupt)? {
        ONLINE => {
            let millis = u64_of(&mut r)?;
            let expiry = (millis != NEVER).then(|| Duration::from_millis(millis));
            // Format 1 kept no will with an online session.
            let will = match format {
                1 => None,
                _ => match r.u8().map_err(corrupt)? {
                    0 => None,
                    _ => Some(Box::new(read_will(&mut r)?)),
                },
            };
            Ok(SessionRecord::Online { expiry, will })
        }
        OFFLINE => {
            let expires_at = clock.to_instant(u64_of(&mut r)?);
            let will = match r.u8().map_err(corrupt)? {
                0 => None,
                _ => {
                    let publish_at = clock.to_instant(u64_of(&mut r)?);
                    let message = read_message(&mut r, clock)?;
                    Some(StoredWill {
                        publish_at: publish_at.unwrap_or(clock.instant),
                        message: Arc::new(message),
                    })
                }
            };
            Ok(SessionRecord::Offline { expires_at, will })
        }
        _ => Err(Error::Corrupt("unknown session state".into())),
    }
}

/// A will not yet published: its delay and expiry are intervals, since they
/// count from a disconnection that has not happened yet.
fn put_will(buf: &mut BytesMut, will: &WillMessage) {
    let has_expiry = will.expiry_interval.is_some();
    buf.put_u8(will.qos as u8 | (u8::from(will.retain) << 2) | (u8::from(has_expiry) << 3));
    buf.put_u64(u64::try_from(will.delay.as_millis()).unwrap_or(NEVER));
    buf.put_u32(will.expiry_interval.unwrap_or(0));
    let topic = will.topic.as_str().as_bytes();
    buf.put_u16(u16::try_from(topic.len()).unwrap_or(u16::MAX));
    buf.extend_from_slice(topic);
    will.properties.encode(buf);
    buf.extend_from_slice(&will.payload);
}

fn read_will(r: &mut Reader) -> Result<WillMessage, Error> {
    let flags = r.u8().map_err(corrupt)?;
    let qos = QoS::from_bits(flags & 0b11).ok_or_else(|| Error::Corrupt("QoS 3".into()))?;
    let delay = Duration::from_millis(u64_of(r)?);
    let expiry_interval = Some(r.u32().map_err(corrupt)?).filter(|_| flags & 0b1000 != 0);
    let len = usize::from(r.u16().map_err(corrupt)?);
    let topic = r.take(len).map_err(corrupt)?;
    let topic = std::str::from_utf8(&topic)
        .map_err(|_| Error::Corrupt("will topic not UTF-8".into()))
        .and_then(|topic| TopicName::new(topic).map_err(corrupt))?;
    let properties = Properties::decode(r, Owner::PUBLISH).map_err(corrupt)?;
    r.check_violation().map_err(corrupt)?;
    Ok(WillMessage {
        topic,
        payload: r.rest(),
        qos,
        retain: flags & 0b100 != 0,
        properties,
        expiry_interval,
        delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytestring::ByteString;

    fn message() -> Message {
        Message {
            topic: TopicName::new("a/b").unwrap(),
            payload: Bytes::from_static(b"payload"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties {
                content_type: Some(ByteString::from("text/plain")),
                user_properties: vec![("k".into(), "v".into())],
                ..Properties::default()
            },
            expires_at: None,
        }
    }

    #[test]
    fn delivery_round_trips() {
        let clock = Clock::now();
        let delivery = Delivery {
            message: Arc::new(message()),
            qos: QoS::AtLeastOnce,
            retain: false,
            subscription_ids: vec![1, 268_435_455],
            seq: Some(7),
        };
        let bytes = encode_delivery(&delivery, clock);
        assert_eq!(decode_delivery(bytes, 7, clock).unwrap(), delivery);
    }

    #[test]
    fn deadlines_survive_as_wall_clock_and_passed_ones_are_expired() {
        let clock = Clock::now();
        let mut later = message();
        later.expires_at = Some(clock.instant + Duration::from_secs(60));
        let decoded = decode_retained(encode_retained(&later, clock), clock).unwrap();
        let delta = decoded.expires_at.unwrap() - clock.instant;
        assert!(delta <= Duration::from_secs(60) && delta > Duration::from_millis(59_990));
        // Read back 2 minutes later, the deadline has passed.
        let restarted = Clock {
            instant: clock.instant,
            wall_ms: clock.wall_ms + 120_000,
        };
        let decoded = decode_retained(encode_retained(&later, clock), restarted).unwrap();
        assert!(decoded.is_expired(restarted.instant));
    }

    #[test]
    fn session_records_round_trip() {
        let clock = Clock::now();
        let online = SessionRecord::Online {
            expiry: Some(Duration::from_secs(30)),
            will: None,
        };
        assert_eq!(
            decode_session(encode_session(&online, clock), clock).unwrap(),
            online
        );
        for expiry_interval in [None, Some(0), Some(60)] {
            let online = SessionRecord::Online {
                expiry: Some(Duration::ZERO),
                will: Some(Box::new(will(expiry_interval))),
            };
            assert_eq!(
                decode_session(encode_session(&online, clock), clock).unwrap(),
                online
            );
        }
        let offline = SessionRecord::Offline {
            expires_at: None,
            will: Some(StoredWill {
                publish_at: clock.instant,
                message: Arc::new(message()),
            }),
        };
        assert_eq!(
            decode_session(encode_session(&offline, clock), clock).unwrap(),
            offline
        );
    }

    fn will(expiry_interval: Option<u32>) -> WillMessage {
        let message = message();
        WillMessage {
            topic: message.topic,
            payload: message.payload,
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: message.properties,
            expiry_interval,
            delay: Duration::from_millis(1_500),
        }
    }

    /// Records as release 1 wrote them, kept as files (`tests/fixtures/records/`):
    /// a data dir from before wills were stored with online sessions still opens.
    #[test]
    fn format_1_session_records_still_decode() {
        let clock = Clock::now();
        let online = Bytes::from_static(include_bytes!(
            "../../tests/fixtures/records/v1_session_online.bin"
        ));
        assert_eq!(
            decode_session(online, clock).unwrap(),
            SessionRecord::Online {
                expiry: Some(Duration::from_secs(30)),
                will: None,
            }
        );
        let offline = Bytes::from_static(include_bytes!(
            "../../tests/fixtures/records/v1_session_offline_will.bin"
        ));
        let SessionRecord::Offline { expires_at, will } = decode_session(offline, clock).unwrap()
        else {
            panic!("not an offline record");
        };
        assert_eq!(expires_at, None);
        let will = will.unwrap();
        assert!(will.publish_at <= clock.instant, "due long ago");
        assert_eq!(will.message.topic.as_str(), "w/gone");
        assert_eq!(&will.message.payload[..], b"bye");
        assert_eq!(will.message.qos, QoS::AtLeastOnce);
    }

    #[test]
    fn subscription_and_state_round_trip() {
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            retain_as_published: true,
            retain_handling: crate::protocol::RetainHandling::Never,
        };
        let bytes = Bytes::copy_from_slice(&encode_subscription(options, Some(9)));
        assert_eq!(decode_subscription(bytes).unwrap(), (options, Some(9)));
        let state = DeliveryState::Released(PacketId::new(300).unwrap());
        let bytes = Bytes::copy_from_slice(&encode_state(state));
        assert_eq!(decode_state(bytes).unwrap(), state);
    }

    #[test]
    fn newer_format_is_refused_not_guessed() {
        let mut bytes = encode_retained(&message(), Clock::now()).to_vec();
        bytes[0] = FORMAT + 1;
        assert!(matches!(
            decode_retained(Bytes::from(bytes), Clock::now()),
            Err(Error::UnknownFormat { found, .. }) if found == FORMAT + 1
        ));
    }

    #[test]
    fn client_prefixes_do_not_overlap() {
        let a = seq_key(&ClientId::new("a"), 1);
        let ab = client_prefix(&ClientId::new("ab"));
        assert!(!a.starts_with(&ab));
        assert!(!ab.starts_with(&client_prefix(&ClientId::new("a"))));
        let (client, rest) = split_key(&a).unwrap();
        assert_eq!(client.as_str(), "a");
        assert_eq!(key_seq(rest).unwrap(), 1);
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        for len in 0..20 {
            let bytes = encode_retained(&message(), Clock::now());
            let cut = bytes.slice(..len.min(bytes.len()));
            let _ = decode_retained(cut.clone(), Clock::now());
            let _ = decode_delivery(cut.clone(), 1, Clock::now());
            let _ = decode_session(cut, Clock::now());
        }
    }
}
