//! Outbound messages: deliveries from the mailbox become PUBLISH packets inside the
//! in-flight window, the client's PUBACK/PUBREC/PUBCOMP finish them, and a resumed
//! session replays what it had not finished, with DUP set ([MQTT-4.4.0-1]).

use std::time::Instant;

use super::inflight::{InFlight, Phase};
use super::{Error, Outbox, Session};
use crate::auth::Action;
use crate::broker::message::Delivery;
use crate::broker::seam::{DeliveryState, QueuedDelivery};
use crate::broker::Broker;
use crate::metrics::DropReason;
use crate::protocol::{Ack, Packet, PacketId, Properties, Publish, QoS, ReasonCode};

/// The Message Expiry Interval forwarded to a subscriber: what remains of the
/// publisher's interval ([MQTT-3.3.2-6]), in whole seconds rounded *up*. A message
/// that waited 0.3 s of a 5 s expiry is forwarded with 5 and one that waited 1.2 s
/// with 4: truncating would shorten the life of every message that waited any
/// fraction of a second. An expired message is never sent, so the floor is 1.
fn remaining_expiry_interval(expires_at: Instant, now: Instant) -> u32 {
    let remaining = expires_at.saturating_duration_since(now);
    let seconds = remaining
        .as_secs()
        .saturating_add(u64::from(remaining.subsec_nanos() > 0));
    u32::try_from(seconds).unwrap_or(u32::MAX).max(1)
}

impl Session {
    /// Whether the connection should take another delivery from the mailbox: not
    /// while the in-flight window is full ([MQTT-3.3.4-7]) or older ones wait.
    pub fn can_send(&self) -> bool {
        self.outbound.has_room() && !self.outbound.has_pending()
    }

    /// Replays the stored state of a resumed persistent session: unacknowledged
    /// PUBLISH again with DUP=1 and their original packet ids, PUBREL again, then the
    /// queued messages, all in their original order. Only as many as the client's
    /// window holds go now; the rest follow as it acknowledges ([MQTT-3.3.4-7]).
    pub fn resume(&mut self, broker: &Broker, now: Instant, out: &mut Outbox) -> Result<(), Error> {
        let (stored, incoming) = broker.stored_state(&self.client_id)?;
        self.incoming = incoming.into_iter().collect();
        self.slot.set_queued(stored.len());
        for QueuedDelivery {
            seq,
            delivery,
            state,
        } in stored
        {
            self.slot.advance_seq_past(seq);
            self.replayed_seqs.insert(seq);
            match state {
                DeliveryState::Queued => self.outbound.push_pending(delivery),
                DeliveryState::Sent(packet_id) => {
                    let phase = Phase::Published;
                    self.outbound
                        .push_resend(packet_id, InFlight { delivery, phase });
                }
                DeliveryState::Released(packet_id) => {
                    let phase = Phase::Released;
                    self.outbound
                        .push_resend(packet_id, InFlight { delivery, phase });
                }
            }
        }
        self.send_pending(broker, now, out)
    }

    /// Sends one delivery from the mailbox, or parks it behind a full window.
    pub fn on_delivery(
        &mut self,
        delivery: Delivery,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        if let Some(seq) = delivery.seq {
            // The same stored delivery was already replayed at resume.
            if self.replayed_seqs.remove(&seq) {
                return Ok(());
            }
        }
        if self.outbound.has_pending() || !self.outbound.has_room() {
            self.outbound.push_pending(delivery);
            return Ok(());
        }
        self.send_delivery(delivery, broker, now, out)
    }

    /// Fills the window: resends of a resumed session first, then waiting deliveries.
    fn send_pending(
        &mut self,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        while let Some((packet_id, in_flight)) = self.outbound.pop_resend() {
            match in_flight.phase {
                Phase::Published => {
                    self.send_publish(&in_flight.delivery, packet_id, true, now, out);
                }
                Phase::Released => {
                    out.send(&Packet::PubRel(Ack::new(packet_id)));
                }
            }
            self.outbound.insert(packet_id, in_flight);
        }
        while let Some(delivery) = self.outbound.pop_pending() {
            self.send_delivery(delivery, broker, now, out)?;
        }
        Ok(())
    }

    fn send_delivery(
        &mut self,
        delivery: Delivery,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        // [MQTT-3.3.2-5] an expired message is not delivered.
        if delivery.message.is_expired(now) {
            broker.metrics().count_dropped(DropReason::Expired, 1);
            return self.finish(&delivery, broker);
        }
        // A `deny` rule may carve topics out of an allowed subscription, and the ACL
        // may have been reloaded since the client subscribed.
        if !self.is_allowed(
            broker,
            Action::Receive,
            delivery.message.topic.as_str(),
            now,
        ) {
            broker.metrics().count_dropped(DropReason::NotAuthorized, 1);
            return self.finish(&delivery, broker);
        }
        if delivery.qos == QoS::AtMostOnce {
            if !self.send_publish(&delivery, None, false, now, out) {
                // [MQTT-3.1.2-25] too large for the client: dropped, and counted as such.
                broker.metrics().count_dropped(DropReason::TooLarge, 1);
            }
            self.slot.release();
            return Ok(());
        }
        let Some(packet_id) = self.outbound.allocate() else {
            self.outbound.push_pending(delivery);
            return Ok(());
        };
        if !self.send_publish(&delivery, Some(packet_id), false, now, out) {
            // Too large for the client: [MQTT-3.1.2-25] drop it as if it were delivered.
            broker.metrics().count_dropped(DropReason::TooLarge, 1);
            return self.finish(&delivery, broker);
        }
        if let (Some(seq), true) = (delivery.seq, self.is_persistent()) {
            broker.delivery_progressed(&self.client_id, seq, DeliveryState::Sent(packet_id))?;
        }
        let phase = Phase::Published;
        self.outbound
            .insert(packet_id, InFlight { delivery, phase });
        Ok(())
    }

    /// Encodes a PUBLISH for `delivery`; `false` if the client's maximum packet size forbids it.
    fn send_publish(
        &mut self,
        delivery: &Delivery,
        packet_id: impl Into<Option<PacketId>>,
        dup: bool,
        now: Instant,
        out: &mut Outbox,
    ) -> bool {
        let message = &delivery.message;
        // 3.x has no properties: skip the copy.
        let mut properties = Properties::default();
        if self.version.is_v5() {
            properties = message.properties.clone();
            properties.message_expiry_interval = message
                .expires_at
                .map(|at| remaining_expiry_interval(at, now));
            properties.subscription_identifiers = delivery.subscription_ids.clone();
        }
        let publish = Publish {
            dup,
            qos: delivery.qos,
            retain: delivery.retain,
            topic: message.topic.clone().into_inner(),
            packet_id: packet_id.into(),
            properties,
            payload: message.payload.clone(),
        };
        let sent = out.send(&Packet::Publish(publish));
        self.sent_count += u64::from(sent);
        sent
    }

    /// A delivery is over (acknowledged, expired or undeliverable): forget its stored copy.
    fn finish(&mut self, delivery: &Delivery, broker: &Broker) -> Result<(), Error> {
        self.slot.release();
        if let (Some(seq), true) = (delivery.seq, self.is_persistent()) {
            broker.delivery_done(&self.client_id, seq)?;
        }
        Ok(())
    }

    pub(super) fn on_puback(
        &mut self,
        ack: Ack,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        if let Some(done) = self.outbound.acknowledge(ack.packet_id) {
            self.finish(&done.delivery, broker)?;
        }
        self.send_pending(broker, now, out)
    }

    pub(super) fn on_pubrec(
        &mut self,
        ack: Ack,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        // (MQTT 5.0 §4.3.3) a PUBREC with an error reason ends the flow without PUBREL.
        if ack.reason.is_error() {
            if let Some(done) = self.outbound.remove(ack.packet_id) {
                self.finish(&done.delivery, broker)?;
            }
            return self.send_pending(broker, now, out);
        }
        let seq = self
            .outbound
            .receive(ack.packet_id)
            .map(|delivery| delivery.seq);
        let reason = match seq {
            None => ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            Some(seq) => {
                if let (Some(seq), true) = (seq, self.is_persistent()) {
                    let state = DeliveryState::Released(ack.packet_id);
                    broker.delivery_progressed(&self.client_id, seq, state)?;
                }
                ReasonCode::SUCCESS
            }
        };
        let reason = if self.version.is_v5() {
            reason
        } else {
            ReasonCode::SUCCESS
        };
        // [MQTT-4.3.3-3] answer PUBREC with PUBREL.
        out.send(&Packet::PubRel(Ack {
            reason,
            ..Ack::new(ack.packet_id)
        }));
        Ok(())
    }

    pub(super) fn on_pubcomp(
        &mut self,
        ack: Ack,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<(), Error> {
        if let Some(done) = self.outbound.complete(ack.packet_id) {
            self.finish(&done.delivery, broker)?;
        }
        self.send_pending(broker, now, out)
    }
}
