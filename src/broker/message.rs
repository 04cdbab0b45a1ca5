//! The core's message types: an application message as it is routed, one
//! delivery of it to one subscriber, and a will waiting to become a message.
//! Every seam speaks these; none of them knows how they are stored or carried.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{Properties, QoS, TopicName};

/// An application message as the broker routes it: shared by every subscriber it
/// fans out to, so the payload is never copied.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// Where it was published.
    pub topic: TopicName,
    /// The payload.
    pub payload: Bytes,
    /// The QoS the publisher used; each delivery is capped by its subscription.
    pub qos: QoS,
    /// The publisher's retain flag.
    pub retain: bool,
    /// Properties forwarded untouched to subscribers ([MQTT-3.3.2-17], [MQTT-3.3.2-18]):
    /// payload format, content type, response topic, correlation data, user
    /// properties. Topic alias, subscription ids and expiry are per-hop and kept out.
    pub properties: Properties,
    /// When the message expires (v5 Message Expiry Interval), if it does.
    pub expires_at: Option<Instant>,
}

impl Message {
    /// Whether the message may no longer be delivered ([MQTT-3.3.2-5]).
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// A copy whose topic and payload own their bytes. A decoded message's are
    /// slices of the connection's read buffer; one kept for long (a retained
    /// message) must not keep that whole buffer alive.
    pub fn detached(&self) -> Message {
        let topic = TopicName::new(bytestring::ByteString::from(self.topic.as_str().to_owned()))
            .unwrap_or_else(|_| self.topic.clone());
        Message {
            topic,
            payload: Bytes::copy_from_slice(&self.payload),
            ..self.clone()
        }
    }
}

/// One message on its way to one subscriber.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// The shared message.
    pub message: Arc<Message>,
    /// min(publish QoS, granted QoS) ([MQTT-3.8.4-8]).
    pub qos: QoS,
    /// The retain flag to send: set for retained messages sent on subscribe, and
    /// for v5 retain-as-published subscriptions.
    pub retain: bool,
    /// v5 subscription identifiers of every matching subscription ([MQTT-3.3.4-3]).
    pub subscription_ids: Vec<u32>,
    /// The per-client sequence number of the stored copy, for persistent sessions.
    pub seq: Option<u64>,
}

/// A will as CONNECT described it; it becomes a [`Message`] only when published,
/// because its expiry counts from then. Stored with the session record of a
/// connected client, so that it survives the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct WillMessage {
    /// Will topic.
    pub topic: TopicName,
    /// Will payload.
    pub payload: Bytes,
    /// Will QoS.
    pub qos: QoS,
    /// Will retain flag.
    pub retain: bool,
    /// Forwarded will properties.
    pub properties: Properties,
    /// v5 Message Expiry Interval of the will.
    pub expiry_interval: Option<u32>,
    /// v5 Will Delay Interval.
    pub delay: Duration,
}

impl WillMessage {
    /// The will as a message published at `now`.
    pub fn to_message(&self, now: Instant) -> Message {
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: self.qos,
            retain: self.retain,
            properties: self.properties.clone(),
            expires_at: self
                .expiry_interval
                .and_then(|seconds| now.checked_add(Duration::from_secs(u64::from(seconds)))),
        }
    }
}

/// A will waiting for its delay.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredWill {
    /// When to publish it.
    pub publish_at: Instant,
    /// The will message.
    pub message: Arc<Message>,
}
