//! Retained messages: set, replace, clear, delivery on subscribe, the retain flag
//! on routed messages (3.1.1) and retain-as-published / retain handling (5.0).

mod common;

use std::time::Duration;

use common::*;
use rookery::protocol::{ProtocolVersion, Publish, QoS, RetainHandling};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const QUIET: Duration = Duration::from_millis(200);

fn retained(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Publish {
    Publish {
        retain: true,
        ..publish(topic, qos, packet_id, payload)
    }
}

fn sorted(mut publishes: Vec<Publish>) -> Vec<(String, String, QoS, bool)> {
    publishes.sort_by(|a, b| a.topic.cmp(&b.topic));
    publishes
        .into_iter()
        .map(|publish| {
            let payload = String::from_utf8(publish.payload.to_vec()).unwrap();
            (
                publish.topic.to_string(),
                payload,
                publish.qos,
                publish.retain,
            )
        })
        .collect()
}

/// Set, replace and clear retained messages, then check what a new subscriber gets.
async fn set_replace_clear(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    for packet in [
        retained("r/a", QoS::AtLeastOnce, 1, "first"),
        // [MQTT-3.3.1-5] a new retained message replaces the old one.
        retained("r/a", QoS::ExactlyOnce, 2, "second"),
        retained("r/b", QoS::AtMostOnce, 0, "b"),
        retained("r/c", QoS::AtLeastOnce, 3, "c"),
        // [MQTT-3.3.1-10]/[MQTT-3.3.1-11] (3.1.1), [MQTT-3.3.1-6]/[MQTT-3.3.1-7] (5.0):
        // an empty payload clears the topic and is not itself retained.
        retained("r/c", QoS::AtLeastOnce, 4, ""),
        // [MQTT-3.3.1-12] (3.1.1), [MQTT-3.3.1-8] (5.0): retain 0 leaves it alone.
        publish("r/b", QoS::AtMostOnce, 0, "not retained"),
        retained("$r/hidden", QoS::AtMostOnce, 0, "h"),
    ] {
        publisher.publish_acked(packet).await;
    }
    let (mut subscriber, _) = RawClient::start(broker.addr, version, "sub", true).await;
    subscriber.subscribe_one("r/#", QoS::AtLeastOnce).await;
    // [MQTT-3.3.1-6]/[MQTT-3.3.1-8] (3.1.1) sent on subscribe with RETAIN 1, at
    // min(stored QoS, granted QoS).
    assert_eq!(
        sorted(subscriber.publishes_until_quiet(QUIET).await),
        [
            ("r/a".into(), "second".into(), QoS::AtLeastOnce, true),
            ("r/b".into(), "b".into(), QoS::AtMostOnce, true),
        ]
    );
    // [MQTT-4.7.2-1] `#` does not match a retained `$` topic either.
    subscriber.subscribe_one("#", QoS::AtMostOnce).await;
    let all = sorted(subscriber.publishes_until_quiet(QUIET).await);
    assert!(
        all.iter().all(|(topic, ..)| !topic.starts_with('$')),
        "{all:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn retained_messages_are_set_replaced_cleared_and_sent_on_subscribe_v4() {
    set_replace_clear(V4).await;
}

#[tokio::test]
async fn retained_messages_are_set_replaced_cleared_and_sent_on_subscribe_v5() {
    set_replace_clear(V5).await;
}

#[tokio::test]
async fn retain_flag_is_cleared_on_normal_routing_v4() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V4, "sub", true).await;
    subscriber.subscribe_one("live", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "pub", true).await;
    publisher
        .publish_acked(retained("live", QoS::AtMostOnce, 0, "x"))
        .await;
    // [MQTT-3.3.1-9] (3.1.1) an established subscription gets RETAIN 0: 30 07 00 04 live x.
    assert_eq!(
        subscriber.recv_bytes(9).await,
        [0x30, 0x07, 0x00, 0x04, b'l', b'i', b'v', b'e', b'x']
    );
    // [MQTT-3.3.1-10] (3.1.1) the clearing message is still routed as normal.
    publisher
        .publish_acked(retained("live", QoS::AtMostOnce, 0, ""))
        .await;
    assert_eq!(
        subscriber.recv_bytes(8).await,
        [0x30, 0x06, 0x00, 0x04, b'l', b'i', b'v', b'e']
    );
    broker.stop().await;
}

#[tokio::test]
async fn retain_as_published_keeps_the_flag_only_when_asked_v5() {
    let broker = start_broker().await;
    let (mut keep, _) = RawClient::start(broker.addr, V5, "keep", true).await;
    let mut options = at(QoS::AtMostOnce);
    options.retain_as_published = true;
    keep.subscribe(subscribe_packet(1, &[("rap", options)]))
        .await;
    let (mut clear, _) = RawClient::start(broker.addr, V5, "clear", true).await;
    clear.subscribe_one("rap", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    publisher
        .publish_acked(retained("rap", QoS::AtMostOnce, 0, "r"))
        .await;
    publisher
        .publish_acked(publish("rap", QoS::AtMostOnce, 0, "n"))
        .await;
    // [MQTT-3.3.1-13] retain as published 1: the publisher's flag.
    let flags: Vec<bool> = keep
        .publishes_until_quiet(QUIET)
        .await
        .iter()
        .map(|publish| publish.retain)
        .collect();
    assert_eq!(flags, [true, false]);
    // [MQTT-3.3.1-12] retain as published 0: always 0.
    let flags: Vec<bool> = clear
        .publishes_until_quiet(QUIET)
        .await
        .iter()
        .map(|publish| publish.retain)
        .collect();
    assert_eq!(flags, [false, false]);
    broker.stop().await;
}

/// Subscribes twice with `handling`; returns how many retained messages each SUBSCRIBE brought.
async fn retained_per_subscribe(handling: RetainHandling) -> (usize, usize) {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    publisher
        .publish_acked(retained("rh", QoS::AtMostOnce, 0, "r"))
        .await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    let mut options = at(QoS::AtMostOnce);
    options.retain_handling = handling;
    subscriber
        .subscribe(subscribe_packet(1, &[("rh", options)]))
        .await;
    let first = subscriber.publishes_until_quiet(QUIET).await;
    assert!(first.iter().all(|publish| publish.retain));
    subscriber
        .subscribe(subscribe_packet(2, &[("rh", options)]))
        .await;
    let second = subscriber.publishes_until_quiet(QUIET).await;
    broker.stop().await;
    (first.len(), second.len())
}

#[tokio::test]
async fn retain_handling_0_sends_retained_at_every_subscribe_v5() {
    // [MQTT-3.3.1-9] (5.0), and again when the subscription is replaced ([MQTT-3.8.4-4]).
    assert_eq!(
        retained_per_subscribe(RetainHandling::OnSubscribe).await,
        (1, 1)
    );
}

#[tokio::test]
async fn retain_handling_1_sends_retained_only_for_a_new_subscription_v5() {
    // [MQTT-3.3.1-10] (5.0)
    assert_eq!(
        retained_per_subscribe(RetainHandling::OnNewSubscribe).await,
        (1, 0)
    );
}

#[tokio::test]
async fn retain_handling_2_never_sends_retained_on_subscribe_v5() {
    // [MQTT-3.3.1-11] (5.0)
    assert_eq!(retained_per_subscribe(RetainHandling::Never).await, (0, 0));
}

#[tokio::test]
async fn expired_retained_message_is_not_sent_on_subscribe_v5() {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    let mut short = retained("exp/short", QoS::AtMostOnce, 0, "s");
    short.properties.message_expiry_interval = Some(1);
    let mut long = retained("exp/long", QoS::AtMostOnce, 0, "l");
    long.properties.message_expiry_interval = Some(100);
    publisher.publish_acked(short).await;
    publisher.publish_acked(long).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    subscriber.subscribe_one("exp/#", QoS::AtMostOnce).await;
    // [MQTT-3.3.2-5] the expired one is gone; [MQTT-3.3.2-6] the other carries what remains.
    let got = subscriber.publishes_until_quiet(QUIET).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(&*got[0].topic, "exp/long");
    let remaining = got[0].properties.message_expiry_interval.unwrap();
    assert!((98..=99).contains(&remaining), "remaining {remaining}");
    broker.stop().await;
}

#[tokio::test]
async fn retained_message_reaches_a_real_client_on_subscribe_v4() {
    let broker = start_broker().await;
    let (mut publisher, _) = v4::connect(v4::options(broker.addr, "pub")).await;
    publisher
        .client
        .publish("sensors/temp", v4::QoS::AtLeastOnce, true, "21.5")
        .await
        .unwrap();
    // PUBACK means stored.
    publisher
        .wait_for(|packet| matches!(packet, v4::Incoming::PubAck(_)))
        .await;
    let (mut probe, _) = v4::connect(v4::options(broker.addr, "probe")).await;
    probe.subscribe("sensors/#", v4::QoS::AtLeastOnce).await;
    let got = probe.next_publish().await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"21.5");
    broker.stop().await;
}

#[tokio::test]
async fn retained_message_reaches_a_real_client_on_subscribe_v5() {
    let broker = start_broker().await;
    let (mut publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    publisher
        .client
        .publish("sensors/temp", v5::QoS::AtLeastOnce, true, "21.5")
        .await
        .unwrap();
    publisher
        .wait_for(|packet| matches!(packet, v5::V5Packet::PubAck(_)))
        .await;
    let (mut probe, _) = v5::connect(v5::options(broker.addr, "probe")).await;
    probe.subscribe("sensors/#", v5::QoS::AtLeastOnce).await;
    let got = probe.next_publish().await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"21.5");
    broker.stop().await;
}

#[tokio::test]
async fn retained_message_carries_the_subscription_identifier_v5() {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    publisher
        .publish_acked(retained("id/t", QoS::AtMostOnce, 0, "r"))
        .await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    let mut subscribe = subscribe_packet(1, &[("id/#", at(QoS::AtMostOnce))]);
    subscribe.properties.subscription_identifiers = vec![7];
    subscriber.subscribe(subscribe).await;
    // [MQTT-3.3.4-3] sent as a result of that subscription: its identifier comes along.
    let got = subscriber.expect_publish().await;
    assert_eq!(got.properties.subscription_identifiers, [7]);
    broker.stop().await;
}

#[tokio::test]
async fn shared_subscription_gets_no_retained_messages_on_subscribe_v5() {
    let broker = start_broker().await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    publisher
        .publish_acked(retained("sh/t", QoS::AtMostOnce, 0, "r"))
        .await;
    let (mut member, _) = RawClient::start(broker.addr, V5, "member", true).await;
    member.subscribe_one("$share/g/sh/#", QoS::AtMostOnce).await;
    // MQTT 5.0 §4.8.2: retained messages are not sent for a shared subscription.
    member.expect_silence(QUIET).await;
    broker.stop().await;
}
