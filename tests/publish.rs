//! PUBLISH: every QoS in both directions, exactly-once, per-publisher order,
//! message expiry, topic aliases and the v5 properties a broker forwards untouched.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use rookery::protocol::{Ack, Packet, ProtocolVersion, QoS, ReasonCode};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// Publisher QoS × subscription QoS, all nine, with both handshakes checked packet
/// by packet: the publisher's (PUBACK / PUBREC-PUBREL-PUBCOMP from the broker) and
/// the subscriber's (the broker's PUBLISH and PUBREL).
async fn qos_matrix(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, version, "sub", true).await;
    let suback = subscriber
        .subscribe(subscribe_packet(
            1,
            &[
                ("q/0", at(QoS::AtMostOnce)),
                ("q/1", at(QoS::AtLeastOnce)),
                ("q/2", at(QoS::ExactlyOnce)),
            ],
        ))
        .await;
    assert_eq!(
        suback.reasons,
        [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::GRANTED_QOS_2
        ]
    );
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    let mut packet_id = 0;
    for published in QOS {
        for granted in QOS {
            packet_id += 1;
            let topic = format!("q/{}", granted as u8);
            let payload = format!("{published:?} to {granted:?}");
            publisher
                .publish_acked(publish(&topic, published, packet_id, &payload))
                .await;
            let got = subscriber.receive_acked().await;
            assert_eq!(got.payload, payload.as_bytes(), "{payload}");
            assert_eq!(got.topic, topic);
            // [MQTT-3.8.4-6] (3.1.1) / [MQTT-3.8.4-8] (5.0): min(published, granted).
            assert_eq!(got.qos, published.min(granted), "{payload}");
            // [MQTT-3.3.1-3] (5.0) DUP is set only on a retransmission.
            assert!(!got.dup, "{payload}");
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn delivered_qos_is_the_minimum_of_published_and_granted_v4() {
    qos_matrix(V4).await;
}

#[tokio::test]
async fn delivered_qos_is_the_minimum_of_published_and_granted_v5() {
    qos_matrix(V5).await;
}

#[tokio::test]
async fn every_qos_round_trips_between_real_clients_v4() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v4::connect(v4::options(broker.addr, "sub")).await;
    subscriber.subscribe("rt/#", v4::QoS::ExactlyOnce).await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "pub")).await;
    for qos in [
        v4::QoS::AtMostOnce,
        v4::QoS::AtLeastOnce,
        v4::QoS::ExactlyOnce,
    ] {
        let topic = format!("rt/{qos:?}");
        publisher
            .client
            .publish(topic.clone(), qos, false, "x")
            .await
            .unwrap();
        let got = subscriber.next_publish().await;
        assert_eq!((got.topic, got.qos), (topic, qos));
    }
    broker.stop().await;
}

#[tokio::test]
async fn every_qos_round_trips_between_real_clients_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v5::connect(v5::options(broker.addr, "sub")).await;
    subscriber.subscribe("rt/#", v5::QoS::ExactlyOnce).await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    for qos in [
        v5::QoS::AtMostOnce,
        v5::QoS::AtLeastOnce,
        v5::QoS::ExactlyOnce,
    ] {
        let topic = format!("rt/{qos:?}");
        publisher
            .client
            .publish(topic.clone(), qos, false, "x")
            .await
            .unwrap();
        let got = subscriber.next_publish().await;
        assert_eq!((got.topic, got.qos), (Bytes::from(topic), qos));
    }
    broker.stop().await;
}

/// The publisher re-sends a QoS 2 PUBLISH (DUP=1) before PUBREL: it is
/// acknowledged again but routed once; after PUBCOMP the same id is a new message.
async fn qos2_resend_is_routed_once(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, version, "sub", true).await;
    subscriber.subscribe_one("once", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    let first = publish("once", QoS::ExactlyOnce, 5, "m");
    publisher.send(&Packet::Publish(first.clone())).await;
    assert!(matches!(publisher.expect().await, Packet::PubRec(ack) if ack.packet_id == id(5)));
    let resent = rookery::protocol::Publish {
        dup: true,
        ..first.clone()
    };
    publisher.send(&Packet::Publish(resent)).await;
    // [MQTT-4.3.3-2] (3.1.1) / [MQTT-4.3.3-10] (5.0): PUBREC again, no second delivery.
    assert!(matches!(publisher.expect().await, Packet::PubRec(ack) if ack.packet_id == id(5)));
    publisher.send(&Packet::PubRel(Ack::new(id(5)))).await;
    assert!(matches!(publisher.expect().await, Packet::PubComp(ack) if ack.packet_id == id(5)));
    assert_eq!(&subscriber.receive_acked().await.payload[..], b"m");
    subscriber.expect_silence(Duration::from_millis(200)).await;
    // [MQTT-4.3.3-12] (5.0): after PUBCOMP the packet id starts a new publication.
    publisher.publish_acked(first).await;
    assert_eq!(&subscriber.receive_acked().await.payload[..], b"m");
    broker.stop().await;
}

#[tokio::test]
async fn qos2_publish_resent_before_pubrel_is_delivered_once_v4() {
    qos2_resend_is_routed_once(V4).await;
}

#[tokio::test]
async fn qos2_publish_resent_before_pubrel_is_delivered_once_v5() {
    qos2_resend_is_routed_once(V5).await;
}

/// The reason codes of the PUBACK and the PUBREC a v5 publisher gets for a message
/// nobody subscribed to, from a broker started with `config`.
async fn reasons_for_no_subscribers(config: rookery::Config) -> [ReasonCode; 2] {
    let broker = start_broker_with(config).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    let mut reasons = Vec::new();
    for (qos, packet_id) in [(QoS::AtLeastOnce, 1), (QoS::ExactlyOnce, 2)] {
        publisher
            .send(&Packet::Publish(publish("nobody", qos, packet_id, "x")))
            .await;
        match publisher.expect().await {
            Packet::PubAck(ack) | Packet::PubRec(ack) => reasons.push(ack.reason),
            other => panic!("expected PUBACK or PUBREC, got {other:?}"),
        }
    }
    broker.stop().await;
    [reasons[0], reasons[1]]
}

#[tokio::test]
async fn issue_8_puback_for_no_subscribers_is_success_by_default_v5() {
    // MQTT 5.0 §3.4.2.1 allows 0x10 but does not require it; by default we send 0x00.
    assert_eq!(
        reasons_for_no_subscribers(rookery::Config::default()).await,
        [ReasonCode::SUCCESS; 2]
    );
}

#[tokio::test]
async fn issue_8_puback_reports_no_matching_subscribers_when_configured_v5() {
    // `[mqtt] no_subscribers_reason = true`: 0x10 (No matching subscribers), a success code.
    let mut config = rookery::Config::default();
    config.mqtt.no_subscribers_reason = true;
    assert_eq!(
        reasons_for_no_subscribers(config).await,
        [ReasonCode::NO_MATCHING_SUBSCRIBERS; 2]
    );
}

#[tokio::test]
async fn puback_is_two_bytes_of_packet_id_v4() {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "pub", true).await;
    publisher
        .send(&Packet::Publish(publish(
            "nobody",
            QoS::AtLeastOnce,
            0x1234,
            "x",
        )))
        .await;
    // [MQTT-2.3.1-6] (3.1.1) the PUBACK carries the PUBLISH's packet id.
    assert_eq!(publisher.recv_bytes(4).await, [0x40, 0x02, 0x12, 0x34]);
    broker.stop().await;
}

#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order_v4() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v4::connect(v4::options(broker.addr, "sub")).await;
    subscriber.subscribe("order", v4::QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "pub")).await;
    for n in 0..300 {
        publisher
            .client
            .publish("order", v4::QoS::AtLeastOnce, false, n.to_string())
            .await
            .unwrap();
    }
    // [MQTT-4.6.0-5], [MQTT-4.6.0-6]: same topic and QoS, in the order received.
    for n in 0..300 {
        let got = subscriber.next_publish().await;
        assert_eq!(got.payload, n.to_string().as_bytes());
    }
    broker.stop().await;
}

#[tokio::test]
async fn messages_from_one_publisher_arrive_in_order_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v5::connect(v5::options(broker.addr, "sub")).await;
    subscriber.subscribe("order", v5::QoS::ExactlyOnce).await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    for n in 0..300 {
        publisher
            .client
            .publish("order", v5::QoS::ExactlyOnce, false, n.to_string())
            .await
            .unwrap();
    }
    // [MQTT-4.6.0-5], [MQTT-4.6.0-6]
    for n in 0..300 {
        let got = subscriber.next_publish().await;
        assert_eq!(got.payload, n.to_string().as_bytes());
    }
    broker.stop().await;
}

fn expiring(seconds: u32) -> v5::PublishProperties {
    v5::PublishProperties {
        message_expiry_interval: Some(seconds),
        ..Default::default()
    }
}

#[tokio::test]
async fn expired_message_is_not_delivered_to_a_resumed_session_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v5::connect(v5::persistent(broker.addr, "sub", 60)).await;
    subscriber.subscribe("exp", v5::QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    for (payload, expiry) in [("short", Some(1)), ("long", Some(100)), ("forever", None)] {
        let properties = expiry.map(expiring).unwrap_or_default();
        publisher
            .client
            .publish_with_properties("exp", v5::QoS::AtLeastOnce, false, payload, properties)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (mut subscriber, connack) = v5::connect(v5::persistent(broker.addr, "sub", 60)).await;
    assert!(connack.session_present);
    // [MQTT-3.3.2-5] "short" expired while queued: deleted, not delivered.
    let long = subscriber.next_publish().await;
    assert_eq!(&long.payload[..], b"long");
    // [MQTT-3.3.2-6] the interval forwarded is what remains after ~1.2 s of waiting.
    let remaining = long.properties.unwrap().message_expiry_interval.unwrap();
    assert!((97..=99).contains(&remaining), "remaining {remaining}");
    let forever = subscriber.next_publish().await;
    assert_eq!(&forever.payload[..], b"forever");
    assert_eq!(
        forever
            .properties
            .and_then(|properties| properties.message_expiry_interval),
        None
    );
    subscriber
        .expect_no_publish(Duration::from_millis(200))
        .await;
    broker.stop().await;
}

#[tokio::test]
async fn message_expiry_interval_is_forwarded_to_online_subscribers_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v5::connect(v5::options(broker.addr, "sub")).await;
    subscriber.subscribe("exp", v5::QoS::AtMostOnce).await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    publisher
        .client
        .publish_with_properties("exp", v5::QoS::AtLeastOnce, false, "x", expiring(60))
        .await
        .unwrap();
    let got = subscriber.next_publish().await;
    // [MQTT-3.3.2-6]
    let remaining = got.properties.unwrap().message_expiry_interval.unwrap();
    assert!((59..=60).contains(&remaining), "remaining {remaining}");
    broker.stop().await;
}

fn aliased(topic: &str, alias: u16, payload: &str) -> Packet {
    let mut packet = publish(topic, QoS::AtMostOnce, 0, payload);
    packet.properties.topic_alias = Some(alias);
    Packet::Publish(packet)
}

#[tokio::test]
async fn inbound_topic_alias_is_resolved_and_not_forwarded_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    subscriber.subscribe_one("alias/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    // [MQTT-3.3.2-12] aliases 1..=Topic Alias Maximum are accepted: set, then use.
    publisher.send(&aliased("alias/long/name", 1, "set")).await;
    publisher.send(&aliased("", 1, "used")).await;
    // Re-pointing an alias is allowed too.
    publisher.send(&aliased("alias/other", 1, "moved")).await;
    publisher.send(&aliased("", 1, "used again")).await;
    for (topic, payload) in [
        ("alias/long/name", "set"),
        ("alias/long/name", "used"),
        ("alias/other", "moved"),
        ("alias/other", "used again"),
    ] {
        let got = subscriber.expect_publish().await;
        assert_eq!((&*got.topic, &got.payload[..]), (topic, payload.as_bytes()));
        // [MQTT-3.3.2-11] the subscriber announced no Topic Alias Maximum: no alias to it.
        assert_eq!(got.properties.topic_alias, None);
    }
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_above_maximum_is_disconnect_0x94_v5() {
    let broker = start_broker().await;
    let (mut publisher, connack) = RawClient::start(broker.addr, V5, "pub", true).await;
    let maximum = connack.properties.topic_alias_maximum.unwrap();
    // [MQTT-3.3.2-9] more than the Topic Alias Maximum: DISCONNECT 0x94 (Topic Alias invalid).
    publisher.send(&aliased("a", maximum + 1, "x")).await;
    match publisher.drain_until_closed().await.as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::TOPIC_ALIAS_INVALID)
        }
        other => panic!("expected DISCONNECT 0x94, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_does_not_survive_a_reconnect_v5() {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", false).await;
    publisher.send(&aliased("a/b", 1, "x")).await;
    publisher.disconnect().await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", false).await;
    // [MQTT-3.3.2-7] alias mappings are per connection: alias 1 is unknown now.
    publisher.send(&aliased("", 1, "x")).await;
    match publisher.drain_until_closed().await.as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::PROTOCOL_ERROR)
        }
        other => panic!("expected DISCONNECT 0x82, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn application_properties_are_forwarded_untouched_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v5::connect(v5::options(broker.addr, "sub")).await;
    subscriber.subscribe("props", v5::QoS::AtLeastOnce).await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    let sent = v5::PublishProperties {
        payload_format_indicator: Some(1),
        content_type: Some("application/json".into()),
        response_topic: Some("reply/to/me".into()),
        correlation_data: Some(Bytes::from_static(&[0xDE, 0xAD, 0x00, 0xEF])),
        user_properties: vec![
            ("b".into(), "2".into()),
            ("a".into(), "1".into()),
            ("b".into(), "3".into()),
        ],
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties(
            "props",
            v5::QoS::AtLeastOnce,
            false,
            "{\"ok\":true}",
            sent.clone(),
        )
        .await
        .unwrap();
    let got = subscriber.next_publish().await.properties.unwrap();
    // [MQTT-3.3.2-4] payload format, [MQTT-3.3.2-15] response topic, [MQTT-3.3.2-16]
    // correlation data, [MQTT-3.3.2-17]/[MQTT-3.3.2-18] user properties in order,
    // [MQTT-3.3.2-20] content type.
    assert_eq!(got, sent);
    broker.stop().await;
}

#[tokio::test]
async fn v5_publish_reaches_a_v4_subscriber_without_properties_v4() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V4, "sub", true).await;
    subscriber.subscribe_one("mixed", QoS::AtLeastOnce).await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    let properties = v5::PublishProperties {
        user_properties: vec![("k".into(), "v".into())],
        ..expiring(60)
    };
    publisher
        .client
        .publish_with_properties("mixed", v5::QoS::AtLeastOnce, false, "hi", properties)
        .await
        .unwrap();
    // A 3.1.1 PUBLISH has no properties on the wire: exactly topic, packet id, payload.
    let header = subscriber.recv_bytes(2).await;
    assert_eq!(header, [0x32, 2 + 5 + 2 + 2]);
    assert_eq!(
        subscriber.recv_bytes(11).await,
        [0x00, 0x05, b'm', b'i', b'x', b'e', b'd', 0x00, 0x01, b'h', b'i']
    );
    broker.stop().await;
}

/// Sends five QoS 1 messages to a subscriber whose window is `window`: it gets
/// exactly `window` until it acknowledges one, then the next.
async fn window_is_respected(
    broker: TestBroker,
    subscriber_connect: rookery::protocol::Connect,
    window: usize,
) {
    let version = subscriber_connect.version;
    let (mut subscriber, _) = RawClient::open(broker.addr, subscriber_connect).await;
    subscriber.subscribe_one("w", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    for n in 1..=5 {
        publisher
            .publish_acked(publish("w", QoS::AtLeastOnce, n, &n.to_string()))
            .await;
    }
    let mut in_flight = Vec::new();
    for _ in 0..window {
        in_flight.push(subscriber.expect_publish().await);
    }
    subscriber.expect_silence(Duration::from_millis(200)).await;
    let first = in_flight.remove(0);
    subscriber
        .send(&Packet::PubAck(Ack::new(first.packet_id.unwrap())))
        .await;
    let next = subscriber.expect_publish().await;
    assert_eq!(next.payload, (window + 1).to_string().as_bytes());
    broker.stop().await;
}

#[tokio::test]
async fn outbound_window_is_max_inflight_v4() {
    let mut config = rookery::Config::default();
    config.limits.max_inflight = 2;
    let broker = start_broker_with(config).await;
    window_is_respected(broker, connect_packet(V4, "sub", true), 2).await;
}

#[tokio::test]
async fn outbound_window_is_the_clients_receive_maximum_v5() {
    // [MQTT-3.3.4-9] no more unacknowledged QoS 1/2 PUBLISH than the client's Receive Maximum.
    let broker = start_broker().await;
    let mut connect = connect_packet(V5, "sub", true);
    connect.properties.receive_maximum = Some(3);
    window_is_respected(broker, connect, 3).await;
}

/// QoS 2 from a client that reconnects between PUBREC and PUBREL, then resends its
/// PUBREL as raw bytes `pubrel`; returns the client for the caller's checks.
async fn qos2_resumed_with_pubrel(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    pubrel: &[u8],
) -> RawClient {
    let (mut client, _) = RawClient::start(addr, version, "resender", false).await;
    client
        .send(&Packet::Publish(publish("t", QoS::ExactlyOnce, 5, "x")))
        .await;
    assert_eq!(client.expect().await, Packet::PubRec(Ack::new(id(5))));
    drop(client);
    let (mut client, connack) = RawClient::start(addr, version, "resender", false).await;
    // MQTT 3.1's CONNACK has no Session Present flag.
    assert!(connack.session_present || version == ProtocolVersion::V3_1);
    client.send_bytes(pubrel).await;
    client
}

#[tokio::test]
async fn issue_8_v3_1_pubrel_resent_with_dup_gets_pubcomp() {
    // MQTT 3.1 §3.6: PUBREL is QoS 1 and a resend sets DUP (0x6A); 3.1.1 fixed the
    // flags to 0010 [MQTT-3.6.1-1], so only a 3.1 connection accepts it.
    let broker = start_broker().await;
    let mut client = qos2_resumed_with_pubrel(
        broker.addr,
        ProtocolVersion::V3_1,
        &[0x6A, 0x02, 0x00, 0x05],
    )
    .await;
    assert_eq!(client.recv_bytes(4).await, [0x70, 0x02, 0x00, 0x05]);
    // The 3.1 forms of SUBSCRIBE and UNSUBSCRIBE (QoS 1, DUP) are accepted too.
    client
        .send_bytes(&[0x8A, 0x06, 0x00, 0x06, 0x00, 0x01, b'a', 0x00])
        .await;
    assert_eq!(client.recv_bytes(5).await, [0x90, 0x03, 0x00, 0x06, 0x00]);
    client
        .send_bytes(&[0xAA, 0x05, 0x00, 0x07, 0x00, 0x01, b'a'])
        .await;
    assert_eq!(client.recv_bytes(4).await, [0xB0, 0x02, 0x00, 0x07]);
    broker.stop().await;
}

#[tokio::test]
async fn issue_8_v4_pubrel_with_dup_is_closed() {
    // [MQTT-3.6.1-1] a 3.1.1 PUBREL's flags are 0010: DUP makes it malformed.
    let broker = start_broker().await;
    let mut client = qos2_resumed_with_pubrel(broker.addr, V4, &[0x6A, 0x02, 0x00, 0x05]).await;
    assert!(client.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn issue_12_an_answer_to_a_publish_of_the_previous_connection_counts_before_its_resend() {
    // Two QoS 2 messages in flight when the connection drops; the client comes
    // back with Receive Maximum 1, so only the first is sent again at once. The
    // client already has the second and answers it (PUBREC 2) before its resend:
    // the flow goes on from there [MQTT-4.4.0-1] — PUBREL 2, not "Packet
    // Identifier not found", and no PUBLISH 2 again later.
    let broker = start_broker().await;
    let mut first = persistent_packet(V5, "sub", 300);
    first.properties.receive_maximum = Some(2);
    let (mut subscriber, _) = RawClient::open(broker.addr, first).await;
    subscriber.subscribe_one("w/t", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "pub", true).await;
    publisher
        .publish_acked(publish("w/t", QoS::AtLeastOnce, 1, "one"))
        .await;
    publisher
        .publish_acked(publish("w/t", QoS::AtLeastOnce, 2, "two"))
        .await;
    let ids: Vec<_> = [
        subscriber.expect_publish().await,
        subscriber.expect_publish().await,
    ]
    .iter()
    .map(|publish| publish.packet_id.unwrap())
    .collect();
    drop(subscriber);

    let mut again = persistent_packet(V5, "sub", 300);
    again.properties.receive_maximum = Some(1);
    let (mut subscriber, connack) = RawClient::open(broker.addr, again).await;
    assert!(connack.session_present);
    let resent = subscriber.expect_publish().await;
    assert!(resent.dup);
    assert_eq!(resent.packet_id, Some(ids[0]));
    subscriber.send(&Packet::PubRec(Ack::new(ids[1]))).await;
    match subscriber.expect().await {
        Packet::PubRel(pubrel) => {
            assert_eq!(pubrel.packet_id, ids[1]);
            assert_eq!(pubrel.reason, ReasonCode::SUCCESS);
        }
        other => panic!("expected PUBREL, got {other:?}"),
    }
    subscriber.send(&Packet::PubComp(Ack::new(ids[1]))).await;
    subscriber.send(&Packet::PubRec(Ack::new(ids[0]))).await;
    assert!(matches!(subscriber.expect().await, Packet::PubRel(ack) if ack.packet_id == ids[0]));
    subscriber.send(&Packet::PubComp(Ack::new(ids[0]))).await;
    subscriber.expect_silence(Duration::from_millis(300)).await;
    broker.stop().await;
}
