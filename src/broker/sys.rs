//! The `$SYS/broker/…` topics, as mosquitto publishes them: retained messages with
//! the broker's counters, refreshed every `sys_interval`. A `$` topic is never
//! matched by a root wildcard ([MQTT-4.7.2-1]), so `#` subscribers do not see them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::Broker;
use crate::protocol::{ClientId, Properties, QoS, TopicName};
use crate::storage::Message;

impl Broker {
    /// Publishes the current counters under `$SYS/broker/`.
    pub fn publish_sys(&self) {
        let metrics = self.metrics();
        let values = [
            (
                "$SYS/broker/version",
                format!("rookery {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/clients/connected",
                metrics
                    .connections_current
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "$SYS/broker/clients/total",
                self.registry().len().to_string(),
            ),
            (
                "$SYS/broker/connections/total",
                metrics
                    .connections_total
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "$SYS/broker/messages/received",
                metrics
                    .messages_received
                    .load(Ordering::Relaxed)
                    .to_string(),
            ),
            (
                "$SYS/broker/messages/sent",
                metrics.messages_sent.load(Ordering::Relaxed).to_string(),
            ),
            (
                "$SYS/broker/messages/dropped",
                metrics.messages_dropped.load(Ordering::Relaxed).to_string(),
            ),
            (
                "$SYS/broker/retained messages/count",
                self.retained_count().to_string(),
            ),
        ];
        let publisher = ClientId::new("$SYS");
        for (topic, value) in values {
            let Ok(topic) = TopicName::new(topic) else {
                continue;
            };
            let message = Message {
                topic,
                payload: Bytes::from(value),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::default(),
                expires_at: None,
            };
            // A failure to store a $SYS value is not worth more than the next refresh.
            let _ = self.route(&publisher, Arc::new(message), None);
        }
    }
}
