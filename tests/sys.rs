//! `$SYS/broker/…` counters (mosquitto habit).

mod common;
use common::*;

#[tokio::test]
async fn sys_topics_report_connected_clients_and_are_hidden_from_root_wildcards() {
    let mut config = rookery::Config::default();
    config.metrics.sys_interval = Some(std::time::Duration::from_millis(250));
    let broker = start_broker_with(config).await;
    let (mut watcher, _) = v4::connect(v4::options(broker.addr, "watcher")).await;
    // [MQTT-4.7.2-1] `#` does not match `$SYS/…`.
    watcher.subscribe("#", v4::QoS::AtMostOnce).await;
    watcher
        .subscribe("$SYS/broker/clients/connected", v4::QoS::AtMostOnce)
        .await;
    // A refresh after the watcher connected counts it.
    loop {
        let publish = watcher.next_publish().await;
        assert_eq!(publish.topic, "$SYS/broker/clients/connected");
        if &publish.payload[..] == b"1" {
            break;
        }
    }
    // Retained: a new subscriber gets the last value at once, with the retain flag.
    let (mut late, _) = v4::connect(v4::options(broker.addr, "late")).await;
    late.subscribe("$SYS/broker/clients/connected", v4::QoS::AtMostOnce)
        .await;
    let publish = late.next_publish().await;
    assert!(publish.retain);
    assert!(["1", "2"].contains(&std::str::from_utf8(&publish.payload).unwrap()));
    broker.stop().await;
}

/// Reads `$SYS` publishes into `values` until `done` holds (or the wait runs out).
async fn watch_until(
    watcher: &mut RawClient,
    values: &mut std::collections::HashMap<String, String>,
    done: impl Fn(&std::collections::HashMap<String, String>) -> bool,
) {
    let waited = tokio::time::timeout(WAIT, async {
        while !done(values) {
            let publish = watcher.expect_publish().await;
            let topic = publish.topic.strip_prefix("$SYS/broker/").unwrap();
            let value = String::from_utf8(publish.payload.to_vec()).unwrap();
            values.insert(topic.to_string(), value);
        }
    })
    .await;
    assert!(waited.is_ok(), "values never got there: {values:#?}");
}

fn number(values: &std::collections::HashMap<String, String>, topic: &str) -> f64 {
    values
        .get(topic)
        .map_or(-1.0, |value| value.parse().unwrap())
}

#[tokio::test]
async fn sys_values_move_as_clients_connect_publish_and_leave() {
    use rookery::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};
    const V5: ProtocolVersion = ProtocolVersion::V5;
    let mut config = rookery::Config::default();
    config.metrics.sys_interval = Some(std::time::Duration::from_millis(100));
    let broker = start_broker_with(config).await;
    let (mut watcher, _) = RawClient::start(broker.addr, V5, "watcher", true).await;
    watcher
        .subscribe_one("$SYS/broker/#", QoS::AtMostOnce)
        .await;
    let mut values = std::collections::HashMap::new();
    watch_until(&mut watcher, &mut values, |v| {
        v.contains_key("version")
            && v.contains_key("uptime")
            && v.contains_key("messages/received")
            && number(v, "clients/connected") == 1.0
            && number(v, "heap/current") > 0.0
    })
    .await;
    assert_eq!(
        values["version"],
        format!("rookery version {}", env!("CARGO_PKG_VERSION"))
    );
    assert!(values["uptime"].ends_with(" seconds"));
    assert!(number(&values, "heap/current") > 0.0);
    let received_before = number(&values, "messages/received");

    let (mut subscriber, _) = RawClient::open(broker.addr, persistent_packet(V5, "sub", 600)).await;
    subscriber.subscribe_one("data/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    for _ in 0..10 {
        publisher
            .send(&Packet::Publish(publish(
                "data/x",
                QoS::AtMostOnce,
                0,
                "0123456789",
            )))
            .await;
    }
    let mut retained = publish("data/kept", QoS::AtMostOnce, 0, "abc");
    retained.retain = true;
    publisher.send(&Packet::Publish(retained)).await;
    for _ in 0..11 {
        subscriber.expect_publish().await;
    }
    // Each value is published in turn: wait until every one has moved.
    watch_until(&mut watcher, &mut values, |v| {
        number(v, "clients/connected") == 3.0
            && number(v, "publish/messages/received") == 11.0
            && number(v, "publish/messages/sent") >= 11.0
            && number(v, "retained messages/count") == 1.0
            && number(v, "publish/bytes/received") == 103.0
            && number(v, "publish/bytes/sent") >= 103.0
            && number(v, "messages/received") > received_before + 11.0
            && number(v, "messages/sent") > 11.0
            && number(v, "bytes/received") > 103.0
            && number(v, "bytes/sent") > 103.0
            && number(v, "subscriptions/count") == 2.0
            && number(v, "store/messages/count") >= 1.0
            && number(v, "store/messages/bytes") >= 3.0
            && number(v, "load/publish/received/1min") > 0.0
            && number(v, "load/connections/15min") > 0.0
            && number(v, "clients/maximum") == 3.0
    })
    .await;

    // The persistent session outlives its connection: one disconnected client.
    subscriber.disconnect().await;
    watch_until(&mut watcher, &mut values, |v| {
        number(v, "clients/disconnected") == 1.0
            && number(v, "clients/connected") == 2.0
            && number(v, "clients/total") == 3.0
            && number(v, "clients/maximum") == 3.0
    })
    .await;
    assert_eq!(number(&values, "clients/total"), 3.0);
    assert_eq!(number(&values, "clients/maximum"), 3.0);

    // Clients may not publish into $SYS without an ACL that names it.
    let mut forged = publish("$SYS/broker/version", QoS::AtLeastOnce, 7, "forged");
    forged.retain = true;
    publisher.send(&Packet::Publish(forged)).await;
    match publisher.expect().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let (mut late, _) = RawClient::start(broker.addr, V5, "late", true).await;
    late.subscribe_one("$SYS/broker/version", QoS::AtMostOnce)
        .await;
    let version = late.expect_publish().await;
    assert!(version.payload.starts_with(b"rookery version"));
    broker.stop().await;
}
