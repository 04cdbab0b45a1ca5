//! `Session`: the MQTT rules of one client, as a synchronous state machine.
//!
//! It is fed packets from the client ([`Session::on_packet`]), deliveries from its
//! mailbox ([`Session::on_delivery`]) and the time ([`Session::on_tick`]), and it
//! answers by encoding packets into an [`Outbox`]. It never awaits, never touches a
//! socket and never reads the clock: `now` is an argument, as in quinn-proto, so
//! every QoS, keep-alive and expiry rule is testable with a plain `#[test]`.

pub mod access;
pub mod connect;
mod deliver;
pub mod inflight;
pub mod outbox;
mod publish;
mod subscribe;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::ClientIdentity;
use crate::broker::message::Message;
use crate::broker::seam::{self, Claim};
use crate::broker::Broker;
use crate::broker::{Attached, ClientSlot, Departure, PendingWill};
use crate::protocol::{
    self, ClientId, Disconnect, Packet, PacketId, ProtocolVersion, ReasonCode, TopicName,
};
pub use access::Peer;
pub use connect::{Negotiated, SessionExpiry, WillMessage};
use inflight::Outbound;
pub use outbox::Outbox;

/// Why a session stops processing a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client broke the protocol; the reason code goes into a v5 DISCONNECT.
    #[error(transparent)]
    Protocol(#[from] protocol::Error),
    /// Storage failed; the broker cannot keep its promises for this client.
    #[error(transparent)]
    Storage(#[from] seam::Error),
}

impl Error {
    /// The v5 DISCONNECT reason code for this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Error::Protocol(error) => error.reason_code(),
            Error::Storage(_) => ReasonCode::UNSPECIFIED_ERROR,
        }
    }
}

/// What the connection should do after a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// The client sent DISCONNECT: close; publish the will only if asked to (v5 0x04).
    Disconnect {
        /// Whether the will is published.
        publish_will: bool,
    },
}

/// The state of one client's session while a connection holds it.
#[derive(Debug)]
pub struct Session {
    client_id: ClientId,
    /// Who the client is for ACL checks.
    identity: ClientIdentity,
    version: ProtocolVersion,
    slot: Arc<ClientSlot>,
    /// The connection's claim on the session; every session write carries it.
    claim: Claim,
    session_expiry: SessionExpiry,
    keep_alive: Option<Duration>,
    last_packet_at: Instant,
    will: Option<Box<WillMessage>>,
    /// Inbound topic aliases; index = alias - 1.
    /// Grown on first use, so a client that never uses aliases pays nothing.
    topic_aliases: Vec<Option<TopicName>>,
    /// Our Topic Alias Maximum.
    topic_alias_maximum: u16,
    /// Inbound QoS 2 packet ids whose PUBREL has not arrived ([MQTT-4.3.3-9]).
    incoming: HashSet<PacketId>,
    outbound: Outbound,
    /// Stored deliveries replayed at resume; a mailbox copy of one of these is a duplicate.
    replayed_seqs: HashSet<u64>,
    /// PUBLISH packets sent since the connection last collected the count.
    sent_count: u64,
    /// Whether a subscription was added or removed since the connection last
    /// asked: its SUBACK or UNSUBACK waits until other nodes know of it
    /// ([`Broker::interest_settled`]).
    has_new_interest: bool,
    /// The in-flight count last shown to the registry (see [`Session::report_in_flight`]).
    reported_in_flight: usize,
    /// The reason code of the client's DISCONNECT, once it sent one.
    disconnect_reason: Option<ReasonCode>,
    /// ACL denials, logged at a limited rate.
    denials: crate::connection_log::Denials,
}

impl Session {
    /// A session for an accepted CONNECT, on the session [`Broker::connect`] attached.
    pub fn new(
        negotiated: &Negotiated,
        attached: &Attached,
        broker: &Broker,
        now: Instant,
    ) -> Session {
        Session {
            client_id: negotiated.client_id.clone(),
            identity: access::identity(negotiated),
            version: negotiated.version,
            slot: attached.slot.clone(),
            claim: attached.claim,
            session_expiry: negotiated.session_expiry,
            keep_alive: negotiated.keep_alive,
            last_packet_at: now,
            will: negotiated.will.clone(),
            topic_aliases: Vec::new(),
            topic_alias_maximum: broker.limits().topic_alias_maximum,
            incoming: HashSet::new(),
            outbound: Outbound::new(negotiated.client_receive_maximum),
            replayed_seqs: HashSet::new(),
            sent_count: 0,
            has_new_interest: false,
            reported_in_flight: 0,
            disconnect_reason: None,
            denials: Default::default(),
        }
    }

    /// The connection's claim on the session (see [`Broker::disconnect`]).
    pub fn claim(&self) -> Claim {
        self.claim
    }

    /// The session's client id.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// Whether a subscription was added or removed since
    /// [`Session::interest_settled`] was last called (see [`Broker::interest_settled`]).
    pub fn has_new_interest(&self) -> bool {
        self.has_new_interest
    }

    /// Other nodes know of every subscription added or removed so far.
    pub fn interest_settled(&mut self) {
        self.has_new_interest = false;
    }

    /// PUBLISH packets sent since the last call; the connection adds them to the
    /// broker's counter once per turn instead of once per message.
    pub fn take_sent_count(&mut self) -> u64 {
        std::mem::take(&mut self.sent_count)
    }

    /// Shows the registry how many messages are in flight, for the metrics: once
    /// per connection turn, and only when the number changed.
    pub fn report_in_flight(&mut self) {
        let in_flight = self.outbound.len();
        if in_flight != self.reported_in_flight {
            self.slot.set_in_flight(in_flight);
            self.reported_in_flight = in_flight;
        }
    }

    /// The reason code of the client's DISCONNECT (0x00 for 3.x), once it sent one.
    pub fn disconnect_reason(&self) -> Option<ReasonCode> {
        self.disconnect_reason
    }

    /// The protocol version the client connected with.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }

    /// Whether the session outlives the connection; its queue and in-flight state
    /// are then mirrored to storage.
    pub fn is_persistent(&self) -> bool {
        self.session_expiry.is_persistent()
    }

    /// Handles one packet from the client.
    pub fn on_packet(
        &mut self,
        packet: Packet,
        broker: &Broker,
        now: Instant,
        out: &mut Outbox,
    ) -> Result<Flow, Error> {
        self.last_packet_at = now;
        match packet {
            Packet::Publish(publish) => self.on_publish(publish, broker, now, out)?,
            Packet::PubAck(ack) => self.on_puback(ack, broker, now, out)?,
            Packet::PubRec(ack) => self.on_pubrec(ack, broker, now, out)?,
            Packet::PubRel(ack) => self.on_pubrel(ack, broker, out)?,
            Packet::PubComp(ack) => self.on_pubcomp(ack, broker, now, out)?,
            Packet::Subscribe(subscribe) => self.on_subscribe(subscribe, broker, now, out)?,
            Packet::Unsubscribe(unsubscribe) => self.on_unsubscribe(unsubscribe, broker, out)?,
            Packet::PingReq => {
                out.send(&Packet::PingResp);
            }
            Packet::Disconnect(disconnect) => return self.on_disconnect(&disconnect),
            // [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
            Packet::Connect(_) => return Err(protocol::Error::Protocol("second CONNECT").into()),
            // No authentication method was accepted, so AUTH may not be sent ([MQTT-4.12.0-1]).
            Packet::Auth(_) => {
                return Err(
                    protocol::Error::Protocol("AUTH without an authentication method").into(),
                )
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                return Err(
                    protocol::Error::Protocol("server-to-client packet sent by a client").into(),
                )
            }
        }
        Ok(Flow::Continue)
    }

    fn on_disconnect(&mut self, disconnect: &Disconnect) -> Result<Flow, Error> {
        if let Some(seconds) = disconnect.properties.session_expiry_interval {
            // [MQTT-3.14.2-2] a session that ended with the connection cannot be made persistent.
            if self.session_expiry == SessionExpiry::WithConnection && seconds != 0 {
                return Err(protocol::Error::Protocol(
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                )
                .into());
            }
            self.session_expiry = SessionExpiry::from_interval(seconds, None);
        }
        self.disconnect_reason = Some(disconnect.reason);
        // [MQTT-3.14.4-3] a normal DISCONNECT discards the will; v5 0x04 asks for it.
        Ok(Flow::Disconnect {
            publish_will: disconnect.reason == ReasonCode::DISCONNECT_WITH_WILL,
        })
    }

    /// Closes the connection when keep-alive × 1.5 passes without a packet ([MQTT-3.1.2-24]).
    pub fn on_tick(&mut self, now: Instant) -> Result<(), Error> {
        if now >= self.next_deadline(now) {
            return Err(protocol::Error::KeepAliveTimeout.into());
        }
        Ok(())
    }

    /// When [`Session::on_tick`] should run next.
    pub fn next_deadline(&self, now: Instant) -> Instant {
        match self.keep_alive_grace() {
            Some(grace) => self.last_packet_at + grace,
            None => now + Duration::from_secs(3600),
        }
    }

    /// How long the client may stay silent: 1.5 × the keep-alive in force, if any.
    pub fn keep_alive_grace(&self) -> Option<Duration> {
        self.keep_alive
            .map(|keep_alive| keep_alive + keep_alive / 2)
    }

    /// The DISCONNECT a v5 client gets before the server closes the connection
    /// (takeover, shutdown, a protocol error); nothing for 3.x.
    pub fn send_disconnect(&self, reason: ReasonCode, out: &mut Outbox) {
        if self.version.is_v5() {
            out.send(&Packet::Disconnect(Disconnect {
                reason,
                ..Disconnect::default()
            }));
        }
    }

    /// The DISCONNECT that tells a v5 client which rule it broke, with the reason
    /// as a reason string (allowed on DISCONNECT whatever Request Problem
    /// Information says, [MQTT-3.1.2-29]).
    pub fn send_error(&self, error: &Error, out: &mut Outbox) {
        if self.version.is_v5() {
            let mut disconnect = Disconnect {
                reason: error.reason_code(),
                ..Disconnect::default()
            };
            disconnect.properties.reason_string = Some(error.to_string().into());
            if !out.send(&Packet::Disconnect(disconnect.clone())) {
                // [MQTT-3.14.2-3] never past the client's Maximum Packet Size: drop the string.
                disconnect.properties.reason_string = None;
                out.send(&Packet::Disconnect(disconnect));
            }
        }
    }

    /// The connection is gone: decides what remains of the session and which will
    /// to publish now. `publish_will` is false after a normal DISCONNECT, a
    /// shutdown, or a takeover that continues the session with a delayed will.
    pub fn depart(
        &mut self,
        publish_will: bool,
        now: Instant,
    ) -> (Departure, Option<Arc<Message>>) {
        let will = self.will.take().filter(|_| publish_will);
        if !self.is_persistent() {
            return (
                Departure::End,
                will.map(|will| Arc::new(will.to_message(now))),
            );
        }
        let expires_at = self.session_expiry.deadline(now);
        match will {
            Some(will) if !will.delay.is_zero() => {
                let publish_at = now + will.delay;
                let pending = PendingWill {
                    publish_at,
                    message: Arc::new(will.to_message(publish_at)),
                };
                (
                    Departure::Offline {
                        expires_at,
                        will: Some(pending),
                    },
                    None,
                )
            }
            will => (
                Departure::Offline {
                    expires_at,
                    will: None,
                },
                will.map(|will| Arc::new(will.to_message(now))),
            ),
        }
    }

    /// The broker is shutting down and closes the connection without a DISCONNECT
    /// from the client, so the will is due ([MQTT-3.1.2-8]; a server's DISCONNECT
    /// does not delete it, only the client's 0x00 does, [MQTT-3.14.4-3]).
    ///
    /// - A session that ends with the connection has its will published now: the
    ///   session ends, and a will is due when its session ends whatever its delay
    ///   ([MQTT-3.1.3-9]). Mosquitto does the same (`post_shutdown_cleanup`).
    /// - A persistent session keeps its will in its stored record
    ///   ([`Departure::Held`]): after the restart the client counts as gone from
    ///   then, and the will is published after its delay unless the client is back
    ///   in time. A planned restart does not fire the wills of every device that
    ///   comes back. (Mosquitto publishes these too; its `FIXME` there asks for this.)
    pub fn depart_at_shutdown(&mut self, now: Instant) -> (Departure, Option<Arc<Message>>) {
        if !self.is_persistent() {
            return self.depart(true, now);
        }
        self.will = None;
        (Departure::Held, None)
    }

    /// Another connection took the session over ([MQTT-3.1.4-3]), closing this
    /// network connection without a DISCONNECT, so the will is due as on any such
    /// close ([MQTT-3.1.2-8]) — unless a v5 Will Delay Interval holds it back: then
    /// it goes to the successor, and a continued session cancels it while a Clean
    /// Start, which ends the session, publishes it at once ([MQTT-3.1.3-9]).
    pub fn hand_over(&mut self, now: Instant) -> (Departure, Option<Arc<Message>>) {
        let is_delayed = self.will.as_ref().is_some_and(|will| !will.delay.is_zero());
        if !self.is_persistent() || !is_delayed {
            return self.depart(true, now);
        }
        let will = self.will.take().map(|will| {
            let publish_at = now + will.delay;
            PendingWill {
                publish_at,
                message: Arc::new(will.to_message(publish_at)),
            }
        });
        let expires_at = self.session_expiry.deadline(now);
        (Departure::Offline { expires_at, will }, None)
    }
}

#[cfg(test)]
mod tests;
