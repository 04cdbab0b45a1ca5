//! SUBSCRIBE and UNSUBSCRIBE: validate each filter, update the router, answer with
//! one reason code per filter, then send the retained messages the subscription
//! asked for.

use std::time::Instant;

use super::{Error, Outbox, Session};
use crate::auth::Action;
use crate::broker::message::Delivery;
use crate::broker::router::{Filter, Subscription};
use crate::broker::seam::QueuedDelivery;
use crate::broker::Admission;
use crate::broker::Broker;
use crate::protocol::{
    self, Packet, Properties, ReasonCode, RetainHandling, SubAck, Subscribe, UnsubAck, Unsubscribe,
};

impl Session {
    pub(super) fn on_subscribe(
        &mut self,
        subscribe: Subscribe,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        // (MQTT 5.0 §3.8.2.1.2) at most one subscription identifier, and it applies to every filter.
        let identifier = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for (text, options) in &subscribe.filters {
            let filter = match Filter::parse(text) {
                Ok(filter) => filter,
                Err(error) => {
                    tracing::debug!(client_id = %self.client_id, filter = %text, %error, "subscription refused");
                    reasons.push(ReasonCode::TOPIC_FILTER_INVALID);
                    continue;
                }
            };
            let is_shared = matches!(filter, Filter::Shared(_));
            // [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error.
            if is_shared && options.no_local {
                return Err(protocol::Error::Protocol("no local on a shared subscription").into());
            }
            // The ACL sees the filter without its `$share/<group>/` prefix.
            if !self.is_allowed(
                broker,
                Action::Subscribe,
                filter.topic_filter().as_str(),
                now,
            ) {
                reasons.push(ReasonCode::NOT_AUTHORIZED);
                continue;
            }
            let subscription = Subscription {
                options: *options,
                identifier,
            };
            let existed = broker.subscribe(&self.client_id, self.claim, &filter, subscription)?;
            self.has_new_interest |= !existed;
            // [MQTT-3.8.4-3] retained messages on subscribe, per retain handling;
            // never for shared subscriptions (MQTT 5.0 §4.8.2).
            let wants_retained = match options.retain_handling {
                RetainHandling::OnSubscribe => true,
                RetainHandling::OnNewSubscribe => !existed,
                RetainHandling::Never => false,
            };
            if wants_retained && !is_shared {
                for message in broker.retained_matching(filter.topic_filter(), now) {
                    retained.push(Delivery {
                        qos: message.qos.min(options.qos),
                        // [MQTT-3.3.1-8] retained messages sent on subscribe keep the flag.
                        retain: true,
                        subscription_ids: identifier.into_iter().collect(),
                        seq: None,
                        message,
                    });
                }
            }
            // [MQTT-3.8.4-6] we grant the QoS asked for: all three are supported.
            reasons.push(ReasonCode(options.qos as u8));
        }
        out.send(&Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reasons,
            properties: Properties::default(),
        }));
        for delivery in self.admit_retained(retained, broker)? {
            self.on_delivery(delivery, broker, now, out)?;
        }
        Ok(())
    }

    /// Retained messages sent on subscribe are deliveries like any other: each takes a
    /// queue place, and for a persistent session those at QoS 1/2 are stored (in one
    /// batch) before they are sent, so that an unacknowledged one is resent after a
    /// reconnect ([MQTT-4.4.0-1]).
    fn admit_retained(
        &self,
        retained: Vec<Delivery>,
        broker: &Broker,
    ) -> Result<Vec<Delivery>, Error> {
        let mut stored = Vec::new();
        let admitted = retained
            .into_iter()
            // No queue limit: the subscriber asked for these.
            .map(|delivery| match self.slot.admit(delivery.qos, 0, false) {
                Admission::Store(seq) => {
                    let (entry, delivery) = QueuedDelivery::queued(seq, delivery);
                    stored.push((self.client_id.clone(), entry));
                    delivery
                }
                Admission::Send | Admission::Drop(_) => delivery,
            })
            .collect();
        if !stored.is_empty() {
            broker.enqueue(stored)?;
        }
        Ok(admitted)
    }

    pub(super) fn on_unsubscribe(
        &mut self,
        unsubscribe: Unsubscribe,
        broker: &Broker,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for text in &unsubscribe.filters {
            reasons.push(match Filter::parse(text) {
                Ok(filter) if broker.unsubscribe(&self.client_id, self.claim, &filter)? => {
                    // In a cluster, UNSUBACK too waits until the change is shared.
                    self.has_new_interest = true;
                    ReasonCode::SUCCESS
                }
                Ok(_) => ReasonCode::NO_SUBSCRIPTION_EXISTED,
                Err(_) => ReasonCode::TOPIC_FILTER_INVALID,
            });
        }
        // [MQTT-3.10.4-4] UNSUBACK even if nothing was removed; 3.x has no reason codes.
        out.send(&Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            reasons: if self.version.is_v5() {
                reasons
            } else {
                Vec::new()
            },
            properties: Properties::default(),
        }));
        Ok(())
    }
}
