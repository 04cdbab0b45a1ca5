//! SUBSCRIBE and UNSUBSCRIBE: wildcards, `$` topics, overlapping subscriptions,
//! subscription identifiers, no-local, invalid filters and shared subscriptions.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use bytestring::ByteString;
use common::*;
use rookery::protocol::{
    Packet, ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionOptions, Unsubscribe,
};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const QUIET: Duration = Duration::from_millis(200);

fn topics(publishes: &[Publish]) -> Vec<&str> {
    publishes.iter().map(|publish| &*publish.topic).collect()
}

/// Subscribes `filter`, publishes to each topic, returns the topics that arrived.
async fn matched(version: ProtocolVersion, filter: &str, published: &[&str]) -> Vec<String> {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, version, "sub", true).await;
    let suback = subscriber.subscribe_one(filter, QoS::AtLeastOnce).await;
    assert_eq!(suback.reasons, [ReasonCode::GRANTED_QOS_1], "{filter}");
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    for topic in published {
        publisher
            .publish_acked(publish(topic, QoS::AtLeastOnce, 1, "x"))
            .await;
    }
    let got = subscriber.publishes_until_quiet(QUIET).await;
    broker.stop().await;
    topics(&got).into_iter().map(String::from).collect()
}

const LEVELS: [&str; 6] = ["a/b/c", "a/b/x/c", "a/c", "a//c", "x/b/c", "a/b/c/d"];

#[tokio::test]
async fn single_level_wildcard_matches_exactly_one_level_v4() {
    // [MQTT-4.7.1-3] (3.1.1) `+` matches one whole level, which may be empty.
    assert_eq!(matched(V4, "a/+/c", &LEVELS).await, ["a/b/c", "a//c"]);
}

#[tokio::test]
async fn single_level_wildcard_matches_exactly_one_level_v5() {
    // [MQTT-4.7.1-2] (5.0)
    assert_eq!(matched(V5, "a/+/c", &LEVELS).await, ["a/b/c", "a//c"]);
}

const TREE: [&str; 5] = ["s", "s/a", "s/a/b", "sx", "x/s"];

#[tokio::test]
async fn multi_level_wildcard_matches_the_parent_and_every_child_v4() {
    // [MQTT-4.7.1-2] (3.1.1) `#` matches the parent level and any number of children.
    assert_eq!(matched(V4, "s/#", &TREE).await, ["s", "s/a", "s/a/b"]);
}

#[tokio::test]
async fn multi_level_wildcard_matches_the_parent_and_every_child_v5() {
    // [MQTT-4.7.1-1] (5.0)
    assert_eq!(matched(V5, "s/#", &TREE).await, ["s", "s/a", "s/a/b"]);
}

async fn dollar_topics(version: ProtocolVersion) {
    let broker = start_broker().await;
    let (mut wild, _) = RawClient::start(broker.addr, version, "wild", true).await;
    wild.subscribe(subscribe_packet(
        1,
        &[("#", at(QoS::AtMostOnce)), ("+/x", at(QoS::AtMostOnce))],
    ))
    .await;
    let (mut dollar, _) = RawClient::start(broker.addr, version, "dollar", true).await;
    dollar.subscribe_one("$app/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    for topic in ["$app/x", "app/x"] {
        publisher
            .publish_acked(publish(topic, QoS::AtMostOnce, 0, "x"))
            .await;
    }
    // [MQTT-4.7.2-1] `#` and `+/x` do not match `$app/x`; `app/x` matches both, once.
    assert_eq!(topics(&wild.publishes_until_quiet(QUIET).await), ["app/x"]);
    // A filter that starts with `$` does.
    assert_eq!(
        topics(&dollar.publishes_until_quiet(QUIET).await),
        ["$app/x"]
    );
    broker.stop().await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_root_wildcards_v4() {
    dollar_topics(V4).await;
}

#[tokio::test]
async fn dollar_topics_are_not_matched_by_root_wildcards_v5() {
    dollar_topics(V5).await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos_v4() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V4, "sub", true).await;
    subscriber.subscribe_one("o/#", QoS::AtMostOnce).await;
    subscriber.subscribe_one("o/+", QoS::ExactlyOnce).await;
    subscriber.subscribe_one("o/x", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "pub", true).await;
    publisher
        .publish_acked(publish("o/x", QoS::ExactlyOnce, 1, "x"))
        .await;
    // [MQTT-3.3.5-1] (3.1.1) respecting the maximum QoS of all matching subscriptions.
    let got = subscriber.publishes_until_quiet(QUIET).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    broker.stop().await;
}

#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_every_identifier_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    for (n, filter, qos) in [
        (1, "o/#", QoS::AtMostOnce),
        (2, "o/+", QoS::ExactlyOnce),
        (3, "o/x", QoS::AtLeastOnce),
    ] {
        let mut subscribe = subscribe_packet(n, &[(filter, at(qos))]);
        subscribe.properties.subscription_identifiers = vec![u32::from(n) * 100];
        subscriber.subscribe(subscribe).await;
    }
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    publisher
        .publish_acked(publish("o/x", QoS::ExactlyOnce, 1, "x"))
        .await;
    let got = subscriber.publishes_until_quiet(QUIET).await;
    assert_eq!(got.len(), 1, "{got:?}");
    // [MQTT-3.3.4-2] the maximum QoS; [MQTT-3.3.4-4] every identifier, in any order.
    assert_eq!(got[0].qos, QoS::ExactlyOnce);
    let mut ids = got[0].properties.subscription_identifiers.clone();
    ids.sort();
    assert_eq!(ids, [100, 200, 300]);
    broker.stop().await;
}

#[tokio::test]
async fn subscription_identifier_comes_with_matching_messages_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = v5::connect(v5::options(broker.addr, "sub")).await;
    let properties = rumqttc::v5::mqttbytes::v5::SubscribeProperties {
        id: Some(42),
        user_properties: vec![],
    };
    subscriber
        .client
        .subscribe_with_properties("ids/with", v5::QoS::AtMostOnce, properties)
        .await
        .unwrap();
    subscriber
        .subscribe("ids/without", v5::QoS::AtMostOnce)
        .await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "pub")).await;
    for topic in ["ids/with", "ids/without"] {
        publisher
            .client
            .publish(topic, v5::QoS::AtMostOnce, false, "x")
            .await
            .unwrap();
    }
    // [MQTT-3.3.4-3] the identifier of the matching subscription, and none without one.
    let with = subscriber.next_publish().await;
    assert_eq!(with.topic, "ids/with");
    assert_eq!(with.properties.unwrap().subscription_identifiers, [42]);
    let without = subscriber.next_publish().await;
    assert_eq!(without.topic, "ids/without");
    let ids = without
        .properties
        .map(|properties| properties.subscription_identifiers)
        .unwrap_or_default();
    assert!(ids.is_empty(), "{ids:?}");
    // [MQTT-3.8.4-3] subscribing again replaces the subscription, identifier included.
    subscriber.subscribe("ids/with", v5::QoS::AtMostOnce).await;
    publisher
        .client
        .publish("ids/with", v5::QoS::AtMostOnce, false, "x")
        .await
        .unwrap();
    let replaced = subscriber.next_publish().await;
    let ids = replaced
        .properties
        .map(|properties| properties.subscription_identifiers)
        .unwrap_or_default();
    assert!(ids.is_empty(), "{ids:?}");
    broker.stop().await;
}

#[tokio::test]
async fn no_local_keeps_own_messages_from_coming_back_v5() {
    let broker = start_broker().await;
    let (mut talker, _) = v5::connect(v5::options(broker.addr, "talker")).await;
    let filter = rumqttc::v5::mqttbytes::v5::Filter {
        nolocal: true,
        ..rumqttc::v5::mqttbytes::v5::Filter::new("chat", v5::QoS::AtLeastOnce)
    };
    talker.client.subscribe_many([filter]).await.unwrap();
    talker
        .wait_for(|packet| matches!(packet, v5::V5Packet::SubAck(_)))
        .await;
    let (mut listener, _) = v5::connect(v5::options(broker.addr, "listener")).await;
    listener.subscribe("chat", v5::QoS::AtLeastOnce).await;
    talker
        .client
        .publish("chat", v5::QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    // [MQTT-3.8.3-3] not forwarded to the publishing client id; others get it.
    assert_eq!(&listener.next_publish().await.payload[..], b"mine");
    talker.expect_no_publish(QUIET).await;
    // Others' messages still reach the no-local subscriber.
    listener
        .client
        .publish("chat", v5::QoS::AtLeastOnce, false, "theirs")
        .await
        .unwrap();
    assert_eq!(&talker.next_publish().await.payload[..], b"theirs");
    broker.stop().await;
}

#[tokio::test]
async fn own_messages_come_back_without_no_local_v4() {
    let broker = start_broker().await;
    let (mut talker, _) = v4::connect(v4::options(broker.addr, "talker")).await;
    talker.subscribe("chat", v4::QoS::AtLeastOnce).await;
    talker
        .client
        .publish("chat", v4::QoS::AtLeastOnce, false, "mine")
        .await
        .unwrap();
    // 3.1.1 has no No Local option: a subscriber gets its own messages.
    assert_eq!(&talker.next_publish().await.payload[..], b"mine");
    broker.stop().await;
}

fn unsubscribe_packet(packet_id: u16, filter: &str) -> Packet {
    Packet::Unsubscribe(Unsubscribe {
        packet_id: id(packet_id),
        filters: vec![ByteString::from(filter)],
        properties: Default::default(),
    })
}

#[tokio::test]
async fn unsubscribe_stops_delivery_v4() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V4, "sub", true).await;
    subscriber.subscribe_one("u/+", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "pub", true).await;
    publisher
        .publish_acked(publish("u/1", QoS::AtMostOnce, 0, "before"))
        .await;
    assert_eq!(&subscriber.expect_publish().await.payload[..], b"before");
    subscriber.send(&unsubscribe_packet(0x0102, "u/+")).await;
    // [MQTT-3.10.4-4], [MQTT-3.10.4-5] (3.1.1) UNSUBACK with the same packet id: B0 02 01 02.
    assert_eq!(subscriber.recv_bytes(4).await, [0xB0, 0x02, 0x01, 0x02]);
    publisher
        .publish_acked(publish("u/1", QoS::AtMostOnce, 0, "after"))
        .await;
    // [MQTT-3.10.4-2] no new messages for that filter.
    subscriber.expect_silence(QUIET).await;
    // Even where nothing was subscribed, UNSUBACK.
    subscriber.send(&unsubscribe_packet(3, "u/+")).await;
    assert_eq!(subscriber.recv_bytes(4).await, [0xB0, 0x02, 0x00, 0x03]);
    broker.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    subscriber.subscribe_one("u/+", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    subscriber.send(&unsubscribe_packet(2, "u/+")).await;
    match subscriber.expect().await {
        Packet::UnsubAck(unsuback) => {
            assert_eq!(unsuback.packet_id, id(2));
            assert_eq!(unsuback.reasons, [ReasonCode::SUCCESS]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    publisher
        .publish_acked(publish("u/1", QoS::AtMostOnce, 0, "after"))
        .await;
    subscriber.expect_silence(QUIET).await;
    // MQTT 5.0 §3.11.3: 0x11 (No subscription existed).
    subscriber.send(&unsubscribe_packet(3, "u/+")).await;
    match subscriber.expect().await {
        Packet::UnsubAck(unsuback) => {
            assert_eq!(unsuback.reasons, [ReasonCode::NO_SUBSCRIPTION_EXISTED])
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    broker.stop().await;
}

/// Two valid filters around two invalid ones.
fn mixed_filters() -> [(&'static str, SubscriptionOptions); 4] {
    [
        ("ok/+", at(QoS::AtLeastOnce)),
        ("a/#/b", at(QoS::AtMostOnce)),
        ("a+", at(QoS::AtMostOnce)),
        ("ok/#", at(QoS::AtMostOnce)),
    ]
}

#[tokio::test]
async fn invalid_filter_gets_suback_0x80_v4() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V4, "sub", true).await;
    subscriber
        .send(&Packet::Subscribe(subscribe_packet(9, &mixed_filters())))
        .await;
    // [MQTT-4.7.1-2], [MQTT-4.7.1-3] (3.1.1) misplaced wildcards; 0x80 for each,
    // granted QoS for the others, in SUBSCRIBE order ([MQTT-3.9.3-1]).
    assert_eq!(
        subscriber.recv_bytes(8).await,
        [0x90, 0x06, 0x00, 0x09, 0x01, 0x80, 0x80, 0x00]
    );
    // The connection stays usable.
    subscriber.send(&Packet::PingReq).await;
    assert_eq!(subscriber.expect().await, Packet::PingResp);
    broker.stop().await;
}

#[tokio::test]
async fn invalid_filter_gets_suback_0x8f_v5() {
    let broker = start_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    let suback = subscriber
        .subscribe(subscribe_packet(9, &mixed_filters()))
        .await;
    // [MQTT-3.8.4-6], [MQTT-3.9.3-1]: one reason per filter, in order; 0x8F (Topic Filter invalid).
    assert_eq!(
        suback.reasons,
        [
            ReasonCode::GRANTED_QOS_1,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::TOPIC_FILTER_INVALID,
            ReasonCode::GRANTED_QOS_0
        ]
    );
    subscriber.send(&Packet::PingReq).await;
    assert_eq!(subscriber.expect().await, Packet::PingResp);
    broker.stop().await;
}

/// Two members of `$share/g/…` and one plain subscriber: the plain one gets every
/// message, the group gets each message exactly once, split between its members.
async fn shared_subscription(version: ProtocolVersion) {
    let broker = start_broker().await;
    let mut members = Vec::new();
    for name in ["m1", "m2"] {
        let (mut member, _) = RawClient::start(broker.addr, version, name, true).await;
        let suback = member
            .subscribe_one("$share/g/sh/#", QoS::AtLeastOnce)
            .await;
        assert_eq!(suback.reasons, [ReasonCode::GRANTED_QOS_1]);
        members.push(member);
    }
    let (mut plain, _) = RawClient::start(broker.addr, version, "plain", true).await;
    plain.subscribe_one("sh/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, version, "pub", true).await;
    for n in 1..=10 {
        publisher
            .publish_acked(publish("sh/t", QoS::AtLeastOnce, n, &n.to_string()))
            .await;
    }
    assert_eq!(plain.publishes_until_quiet(QUIET).await.len(), 10);
    let mut seen = Vec::new();
    for member in &mut members {
        let got = member.publishes_until_quiet(QUIET).await;
        // MQTT 5.0 §4.8.2: the group's messages are shared out, so each member gets some.
        assert!(!got.is_empty(), "a member got nothing");
        seen.extend(got.into_iter().map(|publish| publish.payload));
    }
    assert_eq!(seen.len(), 10, "each message goes to exactly one member");
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 10);
    broker.stop().await;
}

#[tokio::test]
async fn shared_subscription_gives_each_message_to_one_member_v4() {
    shared_subscription(V4).await;
}

#[tokio::test]
async fn shared_subscription_gives_each_message_to_one_member_v5() {
    shared_subscription(V5).await;
}
