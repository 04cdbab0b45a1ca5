//! `Session` driven with packets and `now`, asserting on the packets it answers
//! with: no sockets, no sleeps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::*;
use crate::broker::message::Delivery;
use crate::broker::router::{Filter, Subscription};
use crate::broker::{Link, Mailbox, SessionRequest};
use crate::config::{Limits, MqttConfig, SessionConfig};
use crate::protocol::{decode, Ack, Connect, Properties, Publish, QoS, SubscriptionOptions};
use crate::storage::Storage;

struct Harness {
    broker: Broker,
    session: Session,
    out: Outbox,
    mailbox: Arc<Mailbox>,
    now: Instant,
}

fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        version,
        clean_start,
        keep_alive: 10,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

fn harness_with(broker: Broker, connect: Connect) -> Harness {
    let now = Instant::now();
    let negotiated =
        connect::negotiate(&connect, broker.limits(), broker.session_config()).unwrap();
    let mailbox = Arc::new(Mailbox::default());
    let link = Link {
        connection_id: broker.next_connection_id(),
        mailbox: mailbox.clone(),
        is_persistent: negotiated.session_expiry.is_persistent(),
    };
    let attached = block_on(broker.connect(request(&negotiated), link)).unwrap();
    let session = Session::new(&negotiated, &attached, &broker, now);
    Harness {
        broker,
        session,
        out: Outbox::new(negotiated.version),
        mailbox,
        now,
    }
}

/// Runs a broker use case that may wait (a takeover) to completion.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(future)
}

fn request(negotiated: &Negotiated) -> SessionRequest<'_> {
    SessionRequest {
        client_id: &negotiated.client_id,
        clean_start: negotiated.clean_start,
        expiry: match negotiated.session_expiry {
            SessionExpiry::WithConnection => Some(Duration::ZERO),
            SessionExpiry::After(duration) => Some(duration),
            SessionExpiry::Never => None,
        },
        will: negotiated.will.as_deref(),
        connection: crate::broker::Successor {
            peer: None,
            listener: "test".into(),
        },
    }
}

fn harness(version: ProtocolVersion) -> Harness {
    let broker = Broker::new(
        Limits::default(),
        SessionConfig::default(),
        Storage::in_memory(),
    );
    harness_with(broker, connect_packet(version, "c", true))
}

impl Harness {
    fn packet(&mut self, packet: Packet) -> Result<Flow, Error> {
        self.session
            .on_packet(packet, &self.broker, self.now, &mut self.out)
    }

    fn sent(&mut self) -> Vec<Packet> {
        let mut buf = BytesMut::from(&self.out.buffer()[..]);
        self.out.buffer().clear();
        let mut packets = Vec::new();
        while let Some(packet) = decode(&mut buf, self.session.version, usize::MAX).unwrap() {
            packets.push(packet);
        }
        packets
    }

    fn take_mailbox(&mut self) -> Vec<Delivery> {
        let mut batch = Vec::new();
        self.mailbox.take(usize::MAX, &mut batch);
        batch
    }

    fn deliver_mailbox(&mut self) {
        for delivery in self.take_mailbox() {
            self.session
                .on_delivery(delivery, &self.broker, self.now, &mut self.out)
                .unwrap();
        }
    }

    fn subscribe(&mut self, filter: &str, qos: QoS) {
        let subscription = Subscription {
            options: SubscriptionOptions {
                qos,
                ..Default::default()
            },
            identifier: None,
        };
        self.broker
            .subscribe(
                &self.session.client_id,
                self.session.claim,
                &Filter::parse(filter).unwrap(),
                subscription,
            )
            .unwrap();
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn publish(topic: &str, qos: QoS, packet_id: Option<u16>) -> Publish {
    Publish {
        qos,
        topic: ByteString::from(topic),
        packet_id: packet_id.map(id),
        payload: Bytes::from_static(b"hello"),
        ..Publish::default()
    }
}

#[test]
fn qos1_publish_is_acknowledged_with_puback() {
    // [MQTT-4.3.2-2] PUBACK carries the PUBLISH's packet id.
    let mut h = harness(ProtocolVersion::V3_1_1);
    h.packet(Packet::Publish(publish("a", QoS::AtLeastOnce, Some(7))))
        .unwrap();
    assert_eq!(h.sent(), vec![Packet::PubAck(Ack::new(id(7)))]);
}

#[test]
fn issue_8_v5_puback_reports_no_matching_subscribers_only_when_configured() {
    // MQTT 5.0 §3.4.2.1: 0x10 may be sent; `[mqtt] no_subscribers_reason` decides.
    for (enabled, expected) in [
        (false, ReasonCode::SUCCESS),
        (true, ReasonCode::NO_MATCHING_SUBSCRIBERS),
    ] {
        let broker = Broker::new(
            Limits::default(),
            SessionConfig::default(),
            Storage::in_memory(),
        )
        .with_mqtt(MqttConfig {
            no_subscribers_reason: enabled,
        });
        let mut h = harness_with(broker, connect_packet(ProtocolVersion::V5, "c", true));
        h.packet(Packet::Publish(publish("a", QoS::AtLeastOnce, Some(7))))
            .unwrap();
        let Packet::PubAck(ack) = &h.sent()[0] else {
            panic!("expected PUBACK")
        };
        assert_eq!(ack.reason, expected, "no_subscribers_reason = {enabled}");
    }
}

#[test]
fn qos2_resent_publish_before_pubrel_is_not_routed_twice() {
    // [MQTT-4.3.3-10]
    let mut h = harness(ProtocolVersion::V3_1_1);
    h.subscribe("a", QoS::ExactlyOnce);
    h.packet(Packet::Publish(publish("a", QoS::ExactlyOnce, Some(1))))
        .unwrap();
    let mut again = publish("a", QoS::ExactlyOnce, Some(1));
    again.dup = true;
    h.packet(Packet::Publish(again)).unwrap();
    assert_eq!(
        h.sent(),
        vec![
            Packet::PubRec(Ack::new(id(1))),
            Packet::PubRec(Ack::new(id(1)))
        ]
    );
    let mut routed = 0;
    routed += h.take_mailbox().len();
    assert_eq!(routed, 1);
    h.packet(Packet::PubRel(Ack::new(id(1)))).unwrap();
    assert_eq!(h.sent(), vec![Packet::PubComp(Ack::new(id(1)))]);
    // After PUBREL the id is free: a new PUBLISH with it is a new message.
    h.packet(Packet::Publish(publish("a", QoS::ExactlyOnce, Some(1))))
        .unwrap();
    assert_eq!(h.take_mailbox().len(), 1);
}

#[test]
fn keep_alive_times_out_after_one_and_a_half_intervals() {
    // [MQTT-3.1.2-24] keep-alive 10 s → close after 15 s of silence.
    let mut h = harness(ProtocolVersion::V3_1_1);
    assert!(h.session.on_tick(h.now + Duration::from_secs(14)).is_ok());
    let error = h
        .session
        .on_tick(h.now + Duration::from_secs(15))
        .unwrap_err();
    assert_eq!(error.reason_code(), ReasonCode::KEEP_ALIVE_TIMEOUT);
}

#[test]
fn pingreq_is_answered_and_resets_keep_alive() {
    let mut h = harness(ProtocolVersion::V3_1_1);
    h.now += Duration::from_secs(10);
    h.packet(Packet::PingReq).unwrap();
    assert_eq!(h.sent(), vec![Packet::PingResp]);
    assert!(h.session.on_tick(h.now + Duration::from_secs(14)).is_ok());
}

#[test]
fn topic_alias_sets_then_stands_in_for_the_topic_v5() {
    let mut h = harness(ProtocolVersion::V5);
    h.subscribe("long/topic/name", QoS::AtMostOnce);
    let mut first = publish("long/topic/name", QoS::AtMostOnce, None);
    first.properties.topic_alias = Some(3);
    h.packet(Packet::Publish(first)).unwrap();
    let mut second = publish("", QoS::AtMostOnce, None);
    second.properties.topic_alias = Some(3);
    h.packet(Packet::Publish(second)).unwrap();
    let topics: Vec<String> = h
        .take_mailbox()
        .into_iter()
        .map(|d| d.message.topic.as_str().to_string())
        .collect();
    assert_eq!(topics, ["long/topic/name", "long/topic/name"]);
}

#[test]
fn topic_alias_zero_or_above_maximum_is_an_error_v5() {
    // [MQTT-3.3.2-8], [MQTT-3.3.2-9]
    for alias in [0, 65] {
        let mut h = harness(ProtocolVersion::V5);
        let mut packet = publish("t", QoS::AtMostOnce, None);
        packet.properties.topic_alias = Some(alias);
        let error = h.packet(Packet::Publish(packet)).unwrap_err();
        assert_eq!(error.reason_code(), ReasonCode::TOPIC_ALIAS_INVALID);
    }
}

#[test]
fn unknown_topic_alias_is_a_protocol_error_v5() {
    let mut h = harness(ProtocolVersion::V5);
    let mut packet = publish("", QoS::AtMostOnce, None);
    packet.properties.topic_alias = Some(1);
    assert_eq!(
        h.packet(Packet::Publish(packet)).unwrap_err().reason_code(),
        ReasonCode::PROTOCOL_ERROR
    );
}

#[test]
fn outbound_window_holds_back_past_receive_maximum_v5() {
    let broker = Broker::new(
        Limits::default(),
        SessionConfig::default(),
        Storage::in_memory(),
    );
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.properties.receive_maximum = Some(2);
    let mut h = harness_with(broker, connect);
    h.subscribe("t", QoS::AtLeastOnce);
    for _ in 0..3 {
        h.broker
            .publish(
                &ClientId::new("p"),
                Arc::new(message("t", QoS::AtLeastOnce)),
            )
            .unwrap();
    }
    h.deliver_mailbox();
    let sent = h.sent();
    assert_eq!(
        sent.len(),
        2,
        "[MQTT-3.3.4-7] no more than Receive Maximum in flight"
    );
    assert!(!h.session.can_send());
    let Packet::Publish(first) = &sent[0] else {
        panic!()
    };
    h.packet(Packet::PubAck(Ack::new(first.packet_id.unwrap())))
        .unwrap();
    let sent = h.sent();
    assert_eq!(sent.len(), 1, "an acknowledgement frees one place");
}

#[test]
fn qos2_outbound_handshake_completes() {
    let mut h = harness(ProtocolVersion::V3_1_1);
    h.subscribe("t", QoS::ExactlyOnce);
    h.broker
        .publish(
            &ClientId::new("p"),
            Arc::new(message("t", QoS::ExactlyOnce)),
        )
        .unwrap();
    h.deliver_mailbox();
    let Packet::Publish(sent) = &h.sent()[0] else {
        panic!()
    };
    let packet_id = sent.packet_id.unwrap();
    h.packet(Packet::PubRec(Ack::new(packet_id))).unwrap();
    assert_eq!(h.sent(), vec![Packet::PubRel(Ack::new(packet_id))]);
    h.packet(Packet::PubComp(Ack::new(packet_id))).unwrap();
    assert!(h.session.outbound.is_empty());
}

#[test]
fn expired_messages_are_not_delivered() {
    // [MQTT-3.3.2-5]
    let mut h = harness(ProtocolVersion::V5);
    h.subscribe("t", QoS::AtLeastOnce);
    let mut expiring = message("t", QoS::AtLeastOnce);
    expiring.expires_at = Some(h.now + Duration::from_secs(5));
    h.broker
        .publish(&ClientId::new("p"), Arc::new(expiring))
        .unwrap();
    h.now += Duration::from_secs(6);
    h.deliver_mailbox();
    assert!(h.sent().is_empty());
}

#[test]
fn forwarded_expiry_is_the_remaining_time_v5() {
    // [MQTT-3.3.2-6]
    let mut h = harness(ProtocolVersion::V5);
    h.subscribe("t", QoS::AtMostOnce);
    let mut expiring = message("t", QoS::AtMostOnce);
    expiring.expires_at = Some(h.now + Duration::from_secs(60));
    h.broker
        .publish(&ClientId::new("p"), Arc::new(expiring))
        .unwrap();
    h.now += Duration::from_secs(20);
    h.deliver_mailbox();
    let Packet::Publish(sent) = &h.sent()[0] else {
        panic!()
    };
    assert_eq!(sent.properties.message_expiry_interval, Some(40));
}

#[test]
fn persistent_session_resumes_unacknowledged_messages_with_dup() {
    // [MQTT-4.4.0-1] same packet ids, DUP set, original order.
    let broker = Broker::new(
        Limits::default(),
        SessionConfig::default(),
        Storage::in_memory(),
    );
    let mut h = harness_with(broker, connect_packet(ProtocolVersion::V3_1_1, "c", false));
    h.subscribe("t", QoS::AtLeastOnce);
    for _ in 0..2 {
        h.broker
            .publish(
                &ClientId::new("p"),
                Arc::new(message("t", QoS::AtLeastOnce)),
            )
            .unwrap();
    }
    h.deliver_mailbox();
    let first_ids: Vec<PacketId> = h
        .sent()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => p.packet_id.unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    // The connection drops; the session goes offline and a new connection resumes it.
    let (departure, _) = h.session.depart(true, h.now);
    let claim = h.session.claim();
    h.broker
        .disconnect(&ClientId::new("c"), 1, claim, departure, None);
    let broker = h.broker;
    let mut h = harness_with(broker, connect_packet(ProtocolVersion::V3_1_1, "c", false));
    h.session.resume(&h.broker, h.now, &mut h.out).unwrap();
    let resent: Vec<(PacketId, bool)> = h
        .sent()
        .into_iter()
        .map(|p| match p {
            Packet::Publish(p) => (p.packet_id.unwrap(), p.dup),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        resent,
        first_ids.iter().map(|&id| (id, true)).collect::<Vec<_>>()
    );
}

#[test]
fn issue_12_resume_resends_no_more_than_the_new_receive_maximum_v5() {
    // [MQTT-3.3.4-7] the window is the Receive Maximum of *this* connection; the
    // rest of the resends wait their turn, with their ids ([MQTT-4.4.0-1]).
    let broker = Broker::new(
        Limits::default(),
        SessionConfig::default(),
        Storage::in_memory(),
    );
    let mut connect = connect_packet(ProtocolVersion::V5, "c", false);
    connect.properties.session_expiry_interval = Some(60);
    let mut h = harness_with(broker, connect.clone());
    h.subscribe("t", QoS::AtLeastOnce);
    for _ in 0..3 {
        let message = Arc::new(message("t", QoS::AtLeastOnce));
        h.broker.publish(&ClientId::new("p"), message).unwrap();
    }
    h.deliver_mailbox();
    assert_eq!(h.sent().len(), 3);
    let (departure, _) = h.session.depart(true, h.now);
    let claim = h.session.claim();
    h.broker
        .disconnect(&ClientId::new("c"), 1, claim, departure, None);
    connect.properties.receive_maximum = Some(1);
    let mut h = harness_with(h.broker, connect);
    h.session.resume(&h.broker, h.now, &mut h.out).unwrap();
    for expected in 1..=3 {
        let sent = h.sent();
        let [Packet::Publish(resent)] = sent.as_slice() else {
            panic!("expected one resend, got {sent:?}")
        };
        assert_eq!((resent.packet_id, resent.dup), (Some(id(expected)), true));
        assert!(!h.session.can_send(), "the window is full");
        h.packet(Packet::PubAck(Ack::new(id(expected)))).unwrap();
    }
    assert!(h.sent().is_empty());
    assert!(h.session.can_send());
}

#[test]
fn second_connect_is_a_protocol_error() {
    // [MQTT-3.1.0-2]
    let mut h = harness(ProtocolVersion::V5);
    let connect = connect_packet(ProtocolVersion::V5, "c", true);
    let error = h.packet(Packet::Connect(Box::new(connect))).unwrap_err();
    assert_eq!(error.reason_code(), ReasonCode::PROTOCOL_ERROR);
}

#[test]
fn disconnect_cannot_make_a_clean_session_persistent_v5() {
    // [MQTT-3.14.2-2]
    let mut h = harness(ProtocolVersion::V5);
    let mut disconnect = Disconnect::default();
    disconnect.properties.session_expiry_interval = Some(60);
    assert!(h.packet(Packet::Disconnect(disconnect)).is_err());
}

#[test]
fn disconnect_with_will_asks_for_the_will_v5() {
    let mut h = harness(ProtocolVersion::V5);
    let disconnect = Disconnect {
        reason: ReasonCode::DISCONNECT_WITH_WILL,
        ..Disconnect::default()
    };
    assert_eq!(
        h.packet(Packet::Disconnect(disconnect)).unwrap(),
        Flow::Disconnect { publish_will: true }
    );
    assert_eq!(
        h.packet(Packet::Disconnect(Disconnect::default())).unwrap(),
        Flow::Disconnect {
            publish_will: false
        }
    );
}

fn delayed_will_harness(delay: u32) -> Harness {
    let broker = Broker::new(
        Limits::default(),
        SessionConfig::default(),
        Storage::in_memory(),
    );
    let mut connect = connect_packet(ProtocolVersion::V5, "c", false);
    connect.properties.session_expiry_interval = Some(60);
    connect.will = Some(crate::protocol::Will {
        topic: ByteString::from("will"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(delay),
            ..Properties::default()
        },
    });
    harness_with(broker, connect)
}

#[test]
fn takeover_hands_a_delayed_will_to_the_successor_v5() {
    let mut h = delayed_will_harness(30);
    let (departure, publish_now) = h.session.hand_over(h.now);
    assert!(publish_now.is_none(), "the successor decides");
    let Departure::Offline {
        will: Some(will), ..
    } = departure
    else {
        panic!("expected an offline session holding its will, got {departure:?}");
    };
    assert_eq!(will.publish_at, h.now + Duration::from_secs(30));
}

#[test]
fn takeover_publishes_an_undelayed_will_as_the_connection_closes_v5() {
    // [MQTT-3.1.2-8] closed without DISCONNECT, and no delay holds the will back.
    let mut h = delayed_will_harness(0);
    let (departure, publish_now) = h.session.hand_over(h.now);
    assert!(publish_now.is_some());
    assert!(matches!(departure, Departure::Offline { will: None, .. }));
}

fn received(broker: &Broker) -> u64 {
    broker
        .metrics()
        .messages_received
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// A session with a 30 s delayed will is taken over by a connection with
/// `clean_start`: whether a session is present, and how many messages (wills) the
/// broker received.
fn settle_takeover_of_delayed_will(clean_start: bool) -> (bool, u64) {
    let mut h = delayed_will_harness(30);
    let (departure, _) = h.session.hand_over(h.now);
    assert!(matches!(
        departure,
        Departure::Offline { will: Some(_), .. }
    ));
    let client_id = h.session.client_id().clone();
    h.broker
        .disconnect(&client_id, 1, h.session.claim(), departure, None);
    let mut connect = connect_packet(ProtocolVersion::V5, "c", clean_start);
    connect.properties.session_expiry_interval = Some(60);
    let negotiated =
        connect::negotiate(&connect, h.broker.limits(), h.broker.session_config()).unwrap();
    let link = Link {
        connection_id: h.broker.next_connection_id(),
        mailbox: Arc::new(Mailbox::default()),
        is_persistent: true,
    };
    let attached = block_on(h.broker.connect(request(&negotiated), link)).unwrap();
    (attached.session_present, received(&h.broker))
}

#[test]
fn takeover_that_continues_the_session_cancels_the_will_v5() {
    // [MQTT-3.1.3-9] a new connection before the delay passes: no will, session present.
    assert_eq!(settle_takeover_of_delayed_will(false), (true, 0));
}

#[test]
fn takeover_that_ends_the_session_publishes_a_delayed_will_at_once_v5() {
    // [MQTT-3.1.3-9] "or the Session ends, whichever happens first".
    assert_eq!(settle_takeover_of_delayed_will(true), (false, 1));
}

fn message(topic: &str, qos: QoS) -> Message {
    Message {
        topic: TopicName::new(topic).unwrap(),
        payload: Bytes::from_static(b"m"),
        qos,
        retain: false,
        properties: Properties::default(),
        expires_at: None,
    }
}

#[test]
fn issue_8_forwarded_expiry_rounds_up_to_whole_seconds_v5() {
    // [MQTT-3.3.2-6] what remains, rounded up: 0.3 s of 5 s waited → 5, 1.2 s → 4.
    let mut h = harness(ProtocolVersion::V5);
    h.subscribe("t", QoS::AtMostOnce);
    for (waited, forwarded) in [(300, 5), (1200, 4), (0, 5), (4999, 1)] {
        let mut expiring = message("t", QoS::AtMostOnce);
        expiring.expires_at = Some(h.now + Duration::from_secs(5));
        h.broker
            .publish(&ClientId::new("p"), Arc::new(expiring))
            .unwrap();
        let published_at = h.now;
        h.now += Duration::from_millis(waited);
        h.deliver_mailbox();
        let Packet::Publish(sent) = &h.sent()[0] else {
            panic!("expected PUBLISH")
        };
        assert_eq!(
            sent.properties.message_expiry_interval,
            Some(forwarded),
            "after {waited} ms"
        );
        h.now = published_at;
    }
}

#[test]
fn issue_8_client_publish_with_subscription_identifier_is_a_protocol_error_v5() {
    // [MQTT-3.3.4-6] a PUBLISH from a client carries no Subscription Identifier.
    let mut h = harness(ProtocolVersion::V5);
    let mut publish = publish("a", QoS::AtLeastOnce, Some(1));
    publish.properties.subscription_identifiers = vec![7];
    let error = h.packet(Packet::Publish(publish)).unwrap_err();
    assert_eq!(error.reason_code(), ReasonCode::PROTOCOL_ERROR);
    assert!(h.sent().is_empty(), "no PUBACK");
}

#[test]
fn issue_8_response_topic_with_wildcard_is_a_protocol_error_v5() {
    // [MQTT-3.3.2-14] the Response Topic must not contain wildcard characters.
    for response_topic in ["reply/+", "reply/#", "+"] {
        let mut h = harness(ProtocolVersion::V5);
        let mut publish = publish("a", QoS::AtLeastOnce, Some(1));
        publish.properties.response_topic = Some(response_topic.into());
        let error = h.packet(Packet::Publish(publish)).unwrap_err();
        assert_eq!(error.reason_code(), ReasonCode::PROTOCOL_ERROR);
    }
    let mut h = harness(ProtocolVersion::V5);
    let mut publish = publish("a", QoS::AtLeastOnce, Some(1));
    publish.properties.response_topic = Some("reply/to/me".into());
    h.packet(Packet::Publish(publish)).unwrap();
}

#[test]
fn shutdown_holds_a_persistent_sessions_will_for_the_restart_v5() {
    // The stored record keeps the will; nothing is published as the broker stops.
    let mut h = delayed_will_harness(0);
    let (departure, publish_now) = h.session.depart_at_shutdown(h.now);
    assert!(publish_now.is_none());
    assert!(matches!(departure, Departure::Held));
}

#[test]
fn shutdown_publishes_the_will_of_a_session_that_ends_with_it() {
    // [MQTT-3.1.2-8] the server closes without a DISCONNECT from the client, and
    // [MQTT-3.1.3-9] the session ends, so even a delayed will is due now.
    let broker = Broker::new(
        Limits::default(),
        SessionConfig::default(),
        Storage::in_memory(),
    );
    let mut connect = connect_packet(ProtocolVersion::V5, "c", true);
    connect.will = Some(crate::protocol::Will {
        topic: ByteString::from("will"),
        payload: Bytes::from_static(b"gone"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties {
            will_delay_interval: Some(30),
            ..Properties::default()
        },
    });
    let mut h = harness_with(broker, connect);
    let (departure, publish_now) = h.session.depart_at_shutdown(h.now);
    assert!(matches!(departure, Departure::End));
    assert_eq!(&publish_now.unwrap().payload[..], b"gone");
}
