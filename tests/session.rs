//! Sessions that outlive their connection: offline queueing, redelivery of
//! unacknowledged PUBLISH (DUP=1, same packet id) and PUBREL after a reconnect,
//! session expiry, and the queue limit.

mod common;

use std::time::Duration;

use common::*;
use rookery::metrics::DropReason;
use rookery::protocol::{Ack, Packet, PacketId, ProtocolVersion, Publish, QoS};
use rookery::Config;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const QUIET: Duration = Duration::from_millis(200);

/// Opens (or resumes) the persistent session `client_id`; returns session present.
async fn resume(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
) -> (RawClient, bool) {
    let (client, connack) = RawClient::open(addr, persistent_packet(version, client_id, 60)).await;
    assert!(!connack.code.is_error(), "refused: {connack:?}");
    (client, connack.session_present)
}

/// Publishes one message at each QoS on `topic/<qos>` from a fresh client.
async fn publish_each_qos(addr: std::net::SocketAddr, version: ProtocolVersion, topic: &str) {
    let (mut publisher, _) = RawClient::start(addr, version, "pub", true).await;
    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let packet_id = u16::try_from(n).unwrap() + 1;
        publisher
            .publish_acked(publish(
                &format!("{topic}/{}", qos as u8),
                qos,
                packet_id,
                "x",
            ))
            .await;
    }
    publisher.disconnect().await;
}

async fn offline_queueing(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    subscriber.subscribe_one("q/#", QoS::ExactlyOnce).await;
    subscriber.disconnect().await;
    publish_each_qos(broker.addr, version, "q").await;
    let (mut subscriber, session_present) = resume(broker.addr, version, "sub").await;
    assert!(session_present);
    // [MQTT-3.1.2-5] (3.1.1) / [MQTT-4.5.0-1] (5.0): QoS 1 and 2 were stored for the
    // offline session; QoS 0 was not (a MAY that defaults off, mosquitto's habit).
    let got: Vec<(String, QoS)> = subscriber
        .publishes_until_quiet(QUIET)
        .await
        .into_iter()
        .map(|publish| (publish.topic.to_string(), publish.qos))
        .collect();
    assert_eq!(
        got,
        [
            ("q/1".to_string(), QoS::AtLeastOnce),
            ("q/2".to_string(), QoS::ExactlyOnce)
        ]
    );
    // The subscription is part of the session: new messages keep coming.
    publish_each_qos(broker.addr, version, "q").await;
    assert_eq!(subscriber.publishes_until_quiet(QUIET).await.len(), 3);
    broker.stop().await;
}

#[tokio::test]
async fn qos1_and_qos2_are_queued_for_an_offline_session_v4() {
    offline_queueing(V4).await;
}

#[tokio::test]
async fn qos1_and_qos2_are_queued_for_an_offline_session_v5() {
    offline_queueing(V5).await;
}

#[tokio::test]
async fn qos0_is_queued_offline_when_configured_v4() {
    let mut config = Config::default();
    config.session.queue_qos0_messages = true;
    let broker = start_broker_with(config).await;
    let (mut subscriber, _) = resume(broker.addr, V4, "sub").await;
    subscriber.subscribe_one("q/#", QoS::AtMostOnce).await;
    subscriber.disconnect().await;
    publish_each_qos(broker.addr, V4, "q").await;
    let (mut subscriber, _) = resume(broker.addr, V4, "sub").await;
    let topics: Vec<String> = subscriber
        .publishes_until_quiet(QUIET)
        .await
        .iter()
        .map(|publish| publish.topic.to_string())
        .collect();
    assert_eq!(topics, ["q/0", "q/1", "q/2"]);
    broker.stop().await;
}

#[tokio::test]
async fn real_client_gets_messages_queued_while_offline_v4() {
    let broker = start_broker().await;
    let mut options = v4::options(broker.addr, "sub");
    options.set_clean_session(false);
    let (mut subscriber, _) = v4::connect(options.clone()).await;
    subscriber.subscribe("offline", v4::QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let mut publisher = RawClient::start(broker.addr, V4, "pub", true).await.0;
    publisher
        .publish_acked(publish("offline", QoS::AtLeastOnce, 1, "while away"))
        .await;
    let (mut subscriber, connack) = v4::connect(options).await;
    assert!(connack.session_present);
    assert_eq!(&subscriber.next_publish().await.payload[..], b"while away");
    broker.stop().await;
}

#[tokio::test]
async fn real_client_gets_messages_queued_while_offline_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v5::connect(v5::persistent(broker.addr, "sub", 60)).await;
    subscriber.subscribe("offline", v5::QoS::ExactlyOnce).await;
    subscriber.disconnect().await;
    let mut publisher = RawClient::start(broker.addr, V5, "pub", true).await.0;
    publisher
        .publish_acked(publish("offline", QoS::ExactlyOnce, 1, "while away"))
        .await;
    let (mut subscriber, connack) = v5::connect(v5::persistent(broker.addr, "sub", 60)).await;
    assert!(connack.session_present);
    let got = subscriber.next_publish().await;
    assert_eq!(
        (&got.payload[..], got.qos),
        (&b"while away"[..], v5::QoS::ExactlyOnce)
    );
    broker.stop().await;
}

/// Receives `n` PUBLISH without acknowledging them.
async fn receive_unacked(client: &mut RawClient, n: usize) -> Vec<Publish> {
    let mut publishes = Vec::new();
    for _ in 0..n {
        publishes.push(client.expect_publish().await);
    }
    publishes
}

async fn redelivery_with_dup(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    subscriber.subscribe_one("d/#", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    for (n, qos) in [
        (1, QoS::AtLeastOnce),
        (2, QoS::ExactlyOnce),
        (3, QoS::AtLeastOnce),
    ] {
        publisher
            .publish_acked(publish(&format!("d/{n}"), qos, n, &n.to_string()))
            .await;
    }
    let first = receive_unacked(&mut subscriber, 3).await;
    assert!(first.iter().all(|publish| !publish.dup));
    // The connection drops with all three unacknowledged.
    drop(subscriber);
    let (mut subscriber, session_present) = resume(broker.addr, version, "sub").await;
    assert!(session_present);
    let again = receive_unacked(&mut subscriber, 3).await;
    // [MQTT-4.4.0-1] resent with their original packet ids, in order, and
    // [MQTT-3.3.1-1] with DUP 1.
    for (before, after) in first.iter().zip(&again) {
        assert!(after.dup, "{after:?}");
        assert_eq!(
            (after.packet_id, &after.topic, after.qos, &after.payload),
            (before.packet_id, &before.topic, before.qos, &before.payload)
        );
    }
    // Acknowledged now, they are not sent a third time.
    for publish in &again {
        let packet_id = publish.packet_id.unwrap();
        if publish.qos == QoS::AtLeastOnce {
            subscriber.send(&Packet::PubAck(Ack::new(packet_id))).await;
        } else {
            subscriber.send(&Packet::PubRec(Ack::new(packet_id))).await;
            assert!(
                matches!(subscriber.expect().await, Packet::PubRel(ack) if ack.packet_id == packet_id)
            );
            subscriber.send(&Packet::PubComp(Ack::new(packet_id))).await;
        }
    }
    subscriber.disconnect().await;
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    subscriber.expect_silence(QUIET).await;
    broker.stop().await;
}

#[tokio::test]
async fn unacknowledged_publish_is_resent_with_dup_after_reconnect_v4() {
    redelivery_with_dup(V4).await;
}

#[tokio::test]
async fn unacknowledged_publish_is_resent_with_dup_after_reconnect_v5() {
    redelivery_with_dup(V5).await;
}

async fn pubrel_resent(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    subscriber.subscribe_one("r", QoS::ExactlyOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    publisher
        .publish_acked(publish("r", QoS::ExactlyOnce, 1, "x"))
        .await;
    let packet_id: PacketId = subscriber.expect_publish().await.packet_id.unwrap();
    subscriber.send(&Packet::PubRec(Ack::new(packet_id))).await;
    assert!(matches!(subscriber.expect().await, Packet::PubRel(ack) if ack.packet_id == packet_id));
    // Gone before PUBCOMP.
    drop(subscriber);
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    // [MQTT-4.4.0-1] PUBREL again with its id; [MQTT-4.3.3-6] (5.0) never the PUBLISH.
    match subscriber.expect().await {
        Packet::PubRel(ack) => assert_eq!(ack.packet_id, packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    subscriber.send(&Packet::PubComp(Ack::new(packet_id))).await;
    subscriber.expect_silence(QUIET).await;
    subscriber.disconnect().await;
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    subscriber.expect_silence(QUIET).await;
    broker.stop().await;
}

#[tokio::test]
async fn pubrel_is_resent_after_reconnect_v4() {
    pubrel_resent(V4).await;
}

#[tokio::test]
async fn pubrel_is_resent_after_reconnect_v5() {
    pubrel_resent(V5).await;
}

/// Subscribes, goes offline, waits past the expiry, and checks that the session,
/// its subscription and its queue are gone.
async fn expired_session_is_gone(
    broker: TestBroker,
    version: ProtocolVersion,
    connect: rookery::protocol::Connect,
) {
    let (mut subscriber, _) = RawClient::open(broker.addr, connect.clone()).await;
    subscriber.subscribe_one("e", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    publisher
        .publish_acked(publish("e", QoS::AtLeastOnce, 1, "queued"))
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (mut subscriber, connack) = RawClient::open(broker.addr, connect).await;
    assert!(!connack.session_present);
    publisher
        .publish_acked(publish("e", QoS::AtLeastOnce, 2, "after"))
        .await;
    subscriber.expect_silence(QUIET).await;
    broker.stop().await;
}

#[tokio::test]
async fn session_is_discarded_after_its_expiry_interval_v5() {
    // [MQTT-4.1.0-2] (5.0) discarded when the Session Expiry Interval has passed.
    let broker = start_broker().await;
    expired_session_is_gone(broker, V5, persistent_packet(V5, "sub", 1)).await;
}

#[tokio::test]
async fn session_is_discarded_after_the_configured_expiration_v4() {
    // 3.1.1 sessions never expire by the spec; mosquitto's persistent_client_expiration does it.
    let mut config = Config::default();
    config.session.persistent_client_expiration = Some(Duration::from_secs(1));
    let broker = start_broker_with(config).await;
    expired_session_is_gone(broker, V4, persistent_packet(V4, "sub", 0)).await;
}

async fn queue_limit(version: ProtocolVersion) {
    let mut config = Config::default();
    config.limits.max_queued_messages = 3;
    let broker = start_broker_with(config).await;
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    subscriber.subscribe_one("lim", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    for n in 1..=5 {
        publisher
            .publish_acked(publish("lim", QoS::AtLeastOnce, n, &n.to_string()))
            .await;
    }
    let dropped = broker
        .server
        .broker()
        .metrics()
        .dropped(DropReason::QueueFull);
    assert_eq!(dropped, 2);
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    // The oldest three were kept; the newer two were dropped (mosquitto's max_queued_messages).
    let payloads: Vec<String> = subscriber
        .publishes_until_quiet(QUIET)
        .await
        .iter()
        .map(|publish| String::from_utf8(publish.payload.to_vec()).unwrap())
        .collect();
    assert_eq!(payloads, ["1", "2", "3"]);
    // Room again once they are delivered.
    publisher
        .publish_acked(publish("lim", QoS::AtLeastOnce, 6, "6"))
        .await;
    assert_eq!(&subscriber.receive_acked().await.payload[..], b"6");
    broker.stop().await;
}

#[tokio::test]
async fn messages_past_max_queued_are_dropped_v4() {
    queue_limit(V4).await;
}

#[tokio::test]
async fn messages_past_max_queued_are_dropped_v5() {
    queue_limit(V5).await;
}

async fn inbound_qos2_survives_reconnect(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, version, "sub", true).await;
    subscriber.subscribe_one("in", QoS::ExactlyOnce).await;
    let (mut publisher, _) = resume(broker.addr, version, "pub").await;
    let message = publish("in", QoS::ExactlyOnce, 7, "once");
    publisher.send(&Packet::Publish(message.clone())).await;
    assert!(matches!(publisher.expect().await, Packet::PubRec(ack) if ack.packet_id == id(7)));
    // The publisher loses the connection before it sends PUBREL…
    drop(publisher);
    let (mut publisher, session_present) = resume(broker.addr, version, "pub").await;
    assert!(session_present);
    // …and, resuming, re-sends the PUBLISH with DUP ([MQTT-4.4.0-1]): it is
    // acknowledged but not routed again ([MQTT-4.3.3-2] (3.1.1) / [MQTT-4.3.3-10] (5.0)).
    publisher
        .send(&Packet::Publish(Publish {
            dup: true,
            ..message
        }))
        .await;
    assert!(matches!(publisher.expect().await, Packet::PubRec(ack) if ack.packet_id == id(7)));
    publisher.send(&Packet::PubRel(Ack::new(id(7)))).await;
    assert!(matches!(publisher.expect().await, Packet::PubComp(ack) if ack.packet_id == id(7)));
    assert_eq!(subscriber.publishes_until_quiet(QUIET).await.len(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn inbound_qos2_is_exactly_once_across_a_reconnect_v4() {
    inbound_qos2_survives_reconnect(V4).await;
}

#[tokio::test]
async fn inbound_qos2_is_exactly_once_across_a_reconnect_v5() {
    inbound_qos2_survives_reconnect(V5).await;
}

async fn takeover_resumes(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut old, _) = resume(broker.addr, version, "sub").await;
    old.subscribe_one("t", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    publisher
        .publish_acked(publish("t", QoS::AtLeastOnce, 1, "unacked"))
        .await;
    let first = old.expect_publish().await;
    // A second connection takes the session over while the first still holds it.
    let (mut new, session_present) = resume(broker.addr, version, "sub").await;
    assert!(session_present);
    // [MQTT-4.4.0-1] the unacknowledged PUBLISH moves to the new connection.
    let again = new.expect_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    new.send(&Packet::PubAck(Ack::new(again.packet_id.unwrap())))
        .await;
    // The subscription moved with the session.
    publisher
        .publish_acked(publish("t", QoS::AtLeastOnce, 2, "next"))
        .await;
    assert_eq!(&new.receive_acked().await.payload[..], b"next");
    broker.stop().await;
}

#[tokio::test]
async fn takeover_of_a_persistent_session_resumes_it_v4() {
    takeover_resumes(V4).await;
}

#[tokio::test]
async fn takeover_of_a_persistent_session_resumes_it_v5() {
    takeover_resumes(V5).await;
}

#[tokio::test]
async fn disconnect_can_end_the_session_with_expiry_zero_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = resume(broker.addr, V5, "sub").await;
    subscriber.subscribe_one("t", QoS::AtLeastOnce).await;
    let mut disconnect = rookery::protocol::Disconnect::default();
    disconnect.properties.session_expiry_interval = Some(0);
    subscriber.send(&Packet::Disconnect(disconnect)).await;
    assert!(subscriber.is_closed().await);
    // MQTT 5.0 §3.14.2.2.2: the DISCONNECT's Session Expiry Interval replaces CONNECT's.
    let (_subscriber, session_present) = resume(broker.addr, V5, "sub").await;
    assert!(!session_present);
    broker.stop().await;
}

async fn retained_redelivery(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    let mut retained = publish("kept", QoS::AtLeastOnce, 1, "retained");
    retained.retain = true;
    publisher.publish_acked(retained).await;
    let (mut subscriber, _) = resume(broker.addr, version, "sub").await;
    subscriber.subscribe_one("kept", QoS::AtLeastOnce).await;
    let first = subscriber.expect_publish().await;
    assert!(first.retain);
    drop(subscriber);
    let (mut subscriber, session_present) = resume(broker.addr, version, "sub").await;
    assert!(session_present);
    // [MQTT-4.4.0-1] a retained message sent on subscribe is an unacknowledged PUBLISH
    // like any other: resent with its packet id and DUP 1.
    let again = subscriber.expect_publish().await;
    assert!(again.dup);
    assert_eq!(
        (again.packet_id, &again.payload),
        (first.packet_id, &first.payload)
    );
    broker.stop().await;
}

#[tokio::test]
async fn unacknowledged_retained_message_is_resent_after_reconnect_v4() {
    retained_redelivery(V4).await;
}

#[tokio::test]
async fn unacknowledged_retained_message_is_resent_after_reconnect_v5() {
    retained_redelivery(V5).await;
}
