//! Inbound PUBLISH and PUBREL: topic aliases, the QoS 1/2 handshakes with the
//! publisher, and handing the message to the broker.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Error, Outbox, Session};
use crate::auth::Action;
use crate::broker::message::Message;
use crate::broker::Broker;
use crate::protocol::{self, Ack, Packet, Properties, Publish, QoS, ReasonCode, TopicName};

/// The properties a PUBLISH carries on to its subscribers ([MQTT-3.3.2-15..20]):
/// topic alias and subscription identifiers are per hop, and expiry is kept as a
/// deadline instead.
pub fn forwarded_properties(properties: &Properties) -> Properties {
    Properties {
        payload_format_indicator: properties.payload_format_indicator,
        content_type: properties.content_type.clone(),
        response_topic: properties.response_topic.clone(),
        correlation_data: properties.correlation_data.clone(),
        user_properties: properties.user_properties.clone(),
        ..Properties::default()
    }
}

/// The v5 rules for the properties of a PUBLISH that a *client* sends; the decoder
/// cannot check them, as it reads PUBLISH in both directions. Both break a MUST for
/// which MQTT 5.0 names no reason code, so they are Protocol Errors (0x82, §4.13).
fn check_client_properties(properties: &Properties) -> Result<(), protocol::Error> {
    // [MQTT-3.3.4-6] subscription identifiers flow from server to client only.
    if !properties.subscription_identifiers.is_empty() {
        return Err(protocol::Error::Protocol(
            "subscription identifier in a client PUBLISH",
        ));
    }
    // [MQTT-3.3.2-14] the Response Topic (a topic name for the reply) has no wildcards.
    if let Some(response_topic) = &properties.response_topic {
        if response_topic.contains(['+', '#']) {
            return Err(protocol::Error::Protocol("wildcard in the response topic"));
        }
    }
    Ok(())
}

impl Session {
    pub(super) fn on_publish(
        &mut self,
        publish: Publish,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        check_client_properties(&publish.properties)?;
        let topic = self.resolve_topic(&publish)?;
        // (MQTT 5.0 §3.3.2.3.2) payload format 1 promises UTF-8; a v5 receiver may refuse it with 0x99.
        if publish.properties.payload_format_indicator == Some(1)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            return Err(protocol::Error::PayloadFormatInvalid.into());
        }
        if publish.qos == QoS::ExactlyOnce {
            if let Some(packet_id) = publish.packet_id {
                if self.incoming.contains(&packet_id) {
                    // [MQTT-4.3.3-10] a resent PUBLISH before PUBREL is not routed twice.
                    out.send(&Packet::PubRec(Ack::new(packet_id)));
                    return Ok(());
                }
                // [MQTT-3.3.4-9] more unacknowledged QoS 2 than our Receive Maximum.
                if self.incoming.len() >= usize::from(broker.limits().receive_maximum)
                    && self.version.is_v5()
                {
                    return Err(protocol::Error::ReceiveMaximumExceeded.into());
                }
            }
        }
        let message = Arc::new(Message {
            topic,
            expires_at: publish
                .properties
                .message_expiry_interval
                .and_then(|seconds| now.checked_add(Duration::from_secs(u64::from(seconds)))),
            properties: forwarded_properties(&publish.properties),
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
        });
        let reason = if !self.is_allowed(broker, Action::Publish, message.topic.as_str(), now) {
            // Denied: v5 says so; 3.x has no way to, so the message is dropped but
            // acknowledged as usual (mosquitto's habit).
            if self.version.is_v5() {
                ReasonCode::NOT_AUTHORIZED
            } else {
                ReasonCode::SUCCESS
            }
        } else {
            let routed = match (publish.qos, publish.packet_id) {
                // The packet id is stored in the same batch as the deliveries, so a
                // crash can neither lose the message nor route it twice.
                (QoS::ExactlyOnce, Some(packet_id)) if self.is_persistent() => {
                    broker.publish_exactly_once(&self.client_id, message, packet_id)?
                }
                _ => broker.publish(&self.client_id, message)?,
            };
            // (MQTT 5.0 §3.4.2.1) 0x10 is allowed, not required: `[mqtt] no_subscribers_reason`.
            if routed.matched == 0 && self.version.is_v5() && broker.mqtt().no_subscribers_reason {
                ReasonCode::NO_MATCHING_SUBSCRIBERS
            } else {
                ReasonCode::SUCCESS
            }
        };
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(packet_id)) => {
                out.send(&Packet::PubAck(Ack {
                    reason,
                    ..Ack::new(packet_id)
                }));
            }
            (QoS::ExactlyOnce, Some(packet_id)) if !reason.is_error() => {
                self.incoming.insert(packet_id);
                out.send(&Packet::PubRec(Ack {
                    reason,
                    ..Ack::new(packet_id)
                }));
            }
            // (MQTT 5.0 §4.3.3) a PUBREC with an error code ends the exchange: no PUBREL follows.
            (QoS::ExactlyOnce, Some(packet_id)) => {
                out.send(&Packet::PubRec(Ack {
                    reason,
                    ..Ack::new(packet_id)
                }));
            }
            _ => {}
        }
        Ok(())
    }

    /// The topic of a PUBLISH after v5 topic aliases ([MQTT-3.3.2-12], MQTT 5.0 §3.3.2.3.4).
    fn resolve_topic(&mut self, publish: &Publish) -> Result<TopicName, Error> {
        let Some(alias) = publish.properties.topic_alias else {
            return Ok(TopicName::new(publish.topic.clone())?);
        };
        // [MQTT-3.3.2-8], [MQTT-3.3.2-9] alias 0, or above our maximum, is an error.
        if alias == 0 || alias > self.topic_alias_maximum {
            return Err(protocol::Error::TopicAliasInvalid.into());
        }
        let index = usize::from(alias - 1);
        if self.topic_aliases.len() <= index {
            self.topic_aliases.resize(index + 1, None);
        }
        let slot = self
            .topic_aliases
            .get_mut(index)
            .ok_or(protocol::Error::TopicAliasInvalid)?;
        if publish.topic.is_empty() {
            return slot.clone().ok_or_else(|| {
                protocol::Error::Protocol("topic alias used before it was set").into()
            });
        }
        let topic = TopicName::new(publish.topic.clone())?;
        *slot = Some(topic.clone());
        Ok(topic)
    }

    pub(super) fn on_pubrel(
        &mut self,
        ack: Ack,
        broker: &Broker,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let reason = if self.incoming.remove(&ack.packet_id) {
            if self.is_persistent() {
                broker.incoming_released(&self.client_id, ack.packet_id)?;
            }
            ReasonCode::SUCCESS
        } else if self.version.is_v5() {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        } else {
            // 3.1.1 has no way to say so; completing is harmless ([MQTT-4.3.3-11]).
            ReasonCode::SUCCESS
        };
        out.send(&Packet::PubComp(Ack {
            reason,
            ..Ack::new(ack.packet_id)
        }));
        Ok(())
    }
}
