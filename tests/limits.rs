//! Resource limits (`[limits]` in the configuration), each enforced and, where v5
//! has a property for it, announced: connections, packet sizes both ways, the
//! in-flight windows both ways, offline queues, keep-alive and the connect timeout.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use rookery::metrics::DropReason;
use rookery::protocol::{
    Ack, ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, SubscriptionOptions,
};
use rookery::Config;
use tokio::io::AsyncWriteExt;

fn config(edit: impl FnOnce(&mut rookery::config::Limits)) -> Config {
    let mut config = Config::default();
    edit(&mut config.limits);
    config
}

fn connect_packet(version: ProtocolVersion, client_id: &str, properties: Properties) -> Packet {
    Packet::Connect(Box::new(Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties,
    }))
}

/// Connects a raw client with `packet` and returns it with the CONNACK.
async fn connect_with(addr: SocketAddr, packet: Packet) -> (RawClient, ConnAck) {
    let Packet::Connect(connect) = &packet else {
        panic!("not a CONNECT");
    };
    let mut client = RawClient::connect(addr, connect.version).await;
    client.send(&packet).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => {
            assert_eq!(connack.code, ReasonCode::SUCCESS);
            (client, connack)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn connect_v5(addr: SocketAddr, client_id: &str, properties: Properties) -> RawClient {
    connect_with(
        addr,
        connect_packet(ProtocolVersion::V5, client_id, properties),
    )
    .await
    .0
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &[u8]) -> Packet {
    Packet::Publish(Publish {
        qos,
        topic: topic.into(),
        packet_id: PacketId::new(packet_id),
        payload: Bytes::copy_from_slice(payload),
        ..Publish::default()
    })
}

/// Subscribes and waits for the SUBACK.
async fn subscribe(client: &mut RawClient, filter: &str, qos: QoS) {
    client
        .send(&Packet::Subscribe(Subscribe {
            packet_id: id(1),
            filters: vec![(
                filter.into(),
                SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            )],
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
}

/// The next packet, which must be a PUBLISH.
async fn next_publish(client: &mut RawClient) -> Publish {
    match client.recv().await {
        Some(Packet::Publish(publish)) => publish,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Asserts that nothing arrives within `wait` (and the connection stays open).
async fn expect_silence(client: &mut RawClient, wait: Duration) {
    use tokio::io::AsyncReadExt;
    let mut byte = [0u8; 1];
    if let Ok(read) = tokio::time::timeout(wait, client.stream.read(&mut byte)).await {
        panic!("expected silence, got {read:?} ({byte:?})");
    }
}

// ---------------------------------------------------------------- connections

#[tokio::test]
async fn max_connections_closes_the_extra_connection() {
    // limits.max_connections: past it, new connections are closed at accept.
    let broker = start_broker_with(config(|limits| limits.max_connections = 2)).await;
    let (first, _) = v4::connect(v4::options(broker.addr, "one")).await;
    let (_second, _) = v4::connect(v4::options(broker.addr, "two")).await;
    // Closed at accept, before it could send anything.
    let mut third = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
    assert!(third.is_closed().await, "the third connection is refused");
    // Once a connection leaves, its place is free again.
    first.disconnect().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let mut next = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
        let mut bytes = bytes::BytesMut::new();
        let connect = connect_packet(ProtocolVersion::V3_1_1, "four", Properties::default());
        rookery::protocol::encode(&connect, ProtocolVersion::V3_1_1, &mut bytes);
        // The write fails if this attempt was refused too: then only the retry counts.
        let _ = next.stream.write_all(&bytes).await;
        if let Some(Packet::ConnAck(connack)) = next.recv().await {
            assert_eq!(connack.code, ReasonCode::SUCCESS);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn connect_timeout_closes_a_silent_socket() {
    // limits.connect_timeout: a socket that never sends CONNECT is closed
    // (3.1.1 §3.1.4: "a reasonable amount of time").
    let broker = start_broker_with(config(|limits| {
        limits.connect_timeout = Duration::from_millis(300)
    }))
    .await;
    let started = Instant::now();
    let mut silent = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
    assert!(silent.is_closed().await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn connect_timeout_closes_a_socket_that_sends_half_a_connect() {
    // A slow-loris CONNECT (a fixed header, then nothing) gets the same deadline.
    let broker = start_broker_with(config(|limits| {
        limits.connect_timeout = Duration::from_millis(300)
    }))
    .await;
    let mut slow = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
    slow.send_bytes(&[0x10, 0x20, 0x00, 0x04, b'M']).await;
    assert!(slow.is_closed().await);
    broker.stop().await;
}

// ---------------------------------------------------------------- packet sizes

#[tokio::test]
async fn connack_announces_the_limits_v5() {
    // (MQTT 5.0 §3.2.2.3) CONNACK carries Receive Maximum, Maximum Packet Size and Topic
    // Alias Maximum (MQTT 5.0 §3.2.2.3.3, §3.2.2.3.6, §3.2.2.3.8).
    let broker = start_broker_with(config(|limits| {
        limits.receive_maximum = 7;
        limits.max_packet_size = 4096;
        limits.topic_alias_maximum = 3;
    }))
    .await;
    let (_client, connack) = connect_with(
        broker.addr,
        connect_packet(ProtocolVersion::V5, "c", Properties::default()),
    )
    .await;
    assert_eq!(connack.properties.receive_maximum, Some(7));
    assert_eq!(connack.properties.maximum_packet_size, Some(4096));
    assert_eq!(connack.properties.topic_alias_maximum, Some(3));
    assert_eq!(connack.properties.server_keep_alive, None);
    broker.stop().await;
}

#[tokio::test]
async fn message_over_client_maximum_packet_size_is_dropped_for_that_client_v5() {
    // [MQTT-3.1.2-25] the server must not send a packet larger than the client's
    // Maximum Packet Size; it discards the message as if delivered. The connection
    // lives on, later (smaller) messages arrive, and the QoS 1 window is not leaked.
    let broker = start_broker().await;
    let small = Properties {
        maximum_packet_size: Some(64),
        receive_maximum: Some(1),
        ..Properties::default()
    };
    let mut picky = connect_v5(broker.addr, "picky", small).await;
    subscribe(&mut picky, "size/#", QoS::AtLeastOnce).await;
    let mut roomy = connect_v5(broker.addr, "roomy", Properties::default()).await;
    subscribe(&mut roomy, "size/#", QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "pub")).await;
    let dropped_before = broker
        .server
        .broker()
        .metrics()
        .dropped(DropReason::TooLarge);
    for (payload, qos) in [
        (vec![b'x'; 100], v4::QoS::AtLeastOnce),
        (vec![b'y'; 100], v4::QoS::AtMostOnce),
        (b"small".to_vec(), v4::QoS::AtLeastOnce),
    ] {
        publisher
            .client
            .publish("size/a", qos, false, payload)
            .await
            .unwrap();
    }
    // The picky client gets only the small one, even with a window of 1.
    let got = next_publish(&mut picky).await;
    assert_eq!(&got.payload[..], b"small");
    assert!(!got.dup);
    picky
        .send(&Packet::PubAck(Ack::new(got.packet_id.unwrap())))
        .await;
    expect_silence(&mut picky, Duration::from_millis(200)).await;
    // The other subscriber gets all three.
    for expected in [&[b'x'; 100][..], &[b'y'; 100], b"small"] {
        let got = next_publish(&mut roomy).await;
        assert_eq!(&got.payload[..], expected);
        if let Some(packet_id) = got.packet_id {
            roomy.send(&Packet::PubAck(Ack::new(packet_id))).await;
        }
    }
    let dropped = broker
        .server
        .broker()
        .metrics()
        .dropped(DropReason::TooLarge);
    assert_eq!(
        dropped - dropped_before,
        2,
        "both oversized copies are counted"
    );
    broker.stop().await;
}

#[tokio::test]
async fn client_maximum_packet_size_is_respected_by_rumqttc_v5() {
    // The same rule seen through a real v5 client that sets Maximum Packet Size.
    let broker = start_broker().await;
    let mut options = v5::options(broker.addr, "rumqttc-small");
    options.set_max_packet_size(Some(128));
    let (mut sub, _) = v5::connect(options).await;
    sub.subscribe("rs/#", v5::QoS::AtLeastOnce).await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "rumqttc-pub")).await;
    publisher
        .client
        .publish("rs/big", v5::QoS::AtLeastOnce, false, vec![0u8; 500])
        .await
        .unwrap();
    publisher
        .client
        .publish("rs/small", v5::QoS::AtLeastOnce, false, "ok")
        .await
        .unwrap();
    let got = sub.next_publish().await;
    assert_eq!(&got.payload[..], b"ok");
    sub.expect_no_publish(Duration::from_millis(200)).await;
    broker.stop().await;
}

// ---------------------------------------------------------------- windows

#[tokio::test]
async fn exceeding_receive_maximum_with_qos_2_is_disconnected_0x93_v5() {
    // [MQTT-3.3.4-9]: more unacknowledged QoS 2 PUBLISH than the Receive Maximum the
    // server announced is answered with DISCONNECT 0x93 (Receive Maximum exceeded).
    let broker = start_broker_with(config(|limits| limits.receive_maximum = 2)).await;
    let (mut client, connack) = connect_with(
        broker.addr,
        connect_packet(ProtocolVersion::V5, "greedy", Properties::default()),
    )
    .await;
    assert_eq!(connack.properties.receive_maximum, Some(2));
    for n in 1..=2 {
        client
            .send(&publish("rm/a", QoS::ExactlyOnce, n, b"m"))
            .await;
        assert!(matches!(client.recv().await, Some(Packet::PubRec(ack)) if ack.packet_id == id(n)));
    }
    client
        .send(&publish("rm/a", QoS::ExactlyOnce, 3, b"m"))
        .await;
    match client.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        }
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
    assert!(client.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn receive_maximum_counts_only_unreleased_qos_2_v5() {
    // A PUBREL frees the slot (the PUBCOMP answers it), so a client that stays within
    // the window may publish for ever.
    let broker = start_broker_with(config(|limits| limits.receive_maximum = 1)).await;
    let mut client = connect_v5(broker.addr, "polite", Properties::default()).await;
    for n in 1..=5 {
        client
            .send(&publish("rm/b", QoS::ExactlyOnce, n, b"m"))
            .await;
        assert!(matches!(client.recv().await, Some(Packet::PubRec(_))));
        client.send(&Packet::PubRel(Ack::new(id(n)))).await;
        assert!(matches!(client.recv().await, Some(Packet::PubComp(_))));
    }
    broker.stop().await;
}

#[tokio::test]
async fn client_receive_maximum_bounds_outbound_in_flight_v5() {
    // [MQTT-3.3.4-7] the server sends no more unacknowledged QoS 1/2 PUBLISH than the
    // client's Receive Maximum; each PUBACK lets the next one go.
    let broker = start_broker().await;
    let window = Properties {
        receive_maximum: Some(2),
        ..Properties::default()
    };
    let mut sub = connect_v5(broker.addr, "window", window).await;
    subscribe(&mut sub, "w/#", QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "wpub")).await;
    for n in 0..5u8 {
        publisher
            .client
            .publish("w/a", v4::QoS::AtLeastOnce, false, vec![n])
            .await
            .unwrap();
    }
    let first = next_publish(&mut sub).await;
    let second = next_publish(&mut sub).await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&[0][..], &[1][..])
    );
    expect_silence(&mut sub, Duration::from_millis(300)).await;
    sub.send(&Packet::PubAck(Ack::new(first.packet_id.unwrap())))
        .await;
    let third = next_publish(&mut sub).await;
    assert_eq!(&third.payload[..], &[2]);
    expect_silence(&mut sub, Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn max_inflight_bounds_outbound_in_flight_v4() {
    // limits.max_inflight is the window for 3.x clients, which cannot announce one.
    let broker = start_broker_with(config(|limits| limits.max_inflight = 2)).await;
    let (mut sub, _) = connect_with(
        broker.addr,
        connect_packet(ProtocolVersion::V3_1_1, "v4window", Properties::default()),
    )
    .await;
    subscribe(&mut sub, "w4/#", QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "w4pub")).await;
    for n in 0..3u8 {
        publisher
            .client
            .publish("w4/a", v4::QoS::AtLeastOnce, false, vec![n])
            .await
            .unwrap();
    }
    let first = next_publish(&mut sub).await;
    let _second = next_publish(&mut sub).await;
    expect_silence(&mut sub, Duration::from_millis(300)).await;
    sub.send(&Packet::PubAck(Ack::new(first.packet_id.unwrap())))
        .await;
    assert_eq!(&next_publish(&mut sub).await.payload[..], &[2]);
    broker.stop().await;
}

// ---------------------------------------------------------------- queues

#[tokio::test]
async fn max_queued_messages_drops_the_excess_for_an_offline_session_v4() {
    // limits.max_queued_messages: an offline persistent session keeps the oldest
    // messages up to the limit; newer ones are dropped and counted.
    let broker = start_broker_with(config(|limits| limits.max_queued_messages = 3)).await;
    let mut options = v4::options(broker.addr, "sleeper");
    options.set_clean_session(false);
    let (mut sleeper, _) = v4::connect(options.clone()).await;
    sleeper.subscribe("q/#", v4::QoS::AtLeastOnce).await;
    sleeper.disconnect().await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "qpub")).await;
    for n in 0..5u8 {
        publisher
            .client
            .publish("q/a", v4::QoS::AtLeastOnce, false, vec![n])
            .await
            .unwrap();
    }
    // All five PUBACKs arrived (the drops are the subscriber's, not the publisher's).
    let mut acks = 0;
    let mut publisher = publisher;
    while acks < 5 {
        if let v4::Incoming::PubAck(_) = publisher.wait_for(|_| true).await {
            acks += 1;
        }
    }
    let dropped = broker
        .server
        .broker()
        .metrics()
        .dropped(DropReason::QueueFull);
    assert_eq!(dropped, 2);
    let (mut sleeper, connack) = v4::connect(options).await;
    assert!(connack.session_present);
    for n in 0..3u8 {
        assert_eq!(&sleeper.next_publish().await.payload[..], &[n]);
    }
    sleeper.expect_no_publish(Duration::from_millis(300)).await;
    broker.stop().await;
}

#[tokio::test]
async fn max_queued_messages_applies_to_v5_sessions_too() {
    let broker = start_broker_with(config(|limits| limits.max_queued_messages = 2)).await;
    let options = v5::persistent(broker.addr, "sleeper5", 600);
    let (mut sleeper, _) = v5::connect(options.clone()).await;
    sleeper.subscribe("q5/#", v5::QoS::ExactlyOnce).await;
    sleeper.disconnect().await;
    let (publisher, _) = v5::connect(v5::options(broker.addr, "q5pub")).await;
    for n in 0..4u8 {
        publisher
            .client
            .publish("q5/a", v5::QoS::ExactlyOnce, false, vec![n])
            .await
            .unwrap();
    }
    let mut publisher = publisher;
    let mut completed = 0;
    while completed < 4 {
        if let v5::V5Packet::PubComp(_) = publisher.wait_for(|_| true).await {
            completed += 1;
        }
    }
    let (mut sleeper, connack) = v5::connect(options).await;
    assert!(connack.session_present);
    for n in 0..2u8 {
        assert_eq!(&sleeper.next_publish().await.payload[..], &[n]);
    }
    sleeper.expect_no_publish(Duration::from_millis(300)).await;
    broker.stop().await;
}

// ---------------------------------------------------------------- keep-alive

#[tokio::test]
async fn server_keep_alive_is_announced_v5() {
    // [MQTT-3.2.2-21] if the server sends Server Keep Alive, the client uses it; it is
    // sent when limits.max_keep_alive lowers the client's value, or replaces 0 (none).
    let broker = start_broker_with(config(|limits| {
        limits.max_keep_alive = Some(Duration::from_secs(20))
    }))
    .await;
    for (asked, announced) in [(60u16, Some(20u16)), (0, Some(20)), (10, None)] {
        let Packet::Connect(mut connect) =
            connect_packet(ProtocolVersion::V5, "ka", Properties::default())
        else {
            unreachable!()
        };
        connect.keep_alive = asked;
        let (_client, connack) = connect_with(broker.addr, Packet::Connect(connect)).await;
        assert_eq!(
            connack.properties.server_keep_alive, announced,
            "asked {asked}"
        );
    }
    broker.stop().await;
}

#[tokio::test]
async fn server_keep_alive_is_enforced_with_disconnect_0x8d_v5() {
    // [MQTT-3.1.2-22] (5.0) / [MQTT-3.1.2-24] (3.1.1): 1.5 × the keep-alive in force
    // without a packet closes the connection; v5 hears 0x8D (Keep Alive timeout).
    let broker = start_broker_with(config(|limits| {
        limits.max_keep_alive = Some(Duration::from_secs(1))
    }))
    .await;
    let started = Instant::now();
    let mut client = connect_v5(broker.addr, "sleepy", Properties::default()).await;
    match client.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::KEEP_ALIVE_TIMEOUT)
        }
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
    assert!(client.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn max_keep_alive_applies_to_v4_clients_without_keep_alive() {
    // 3.1.1 cannot announce it, but the limit still holds: a silent client with
    // keep-alive 0 is closed after 1.5 × max_keep_alive.
    let broker = start_broker_with(config(|limits| {
        limits.max_keep_alive = Some(Duration::from_secs(1))
    }))
    .await;
    let Packet::Connect(mut connect) =
        connect_packet(ProtocolVersion::V3_1_1, "v4sleepy", Properties::default())
    else {
        unreachable!()
    };
    connect.keep_alive = 0;
    let (mut client, connack) = connect_with(broker.addr, Packet::Connect(connect)).await;
    assert_eq!(connack.properties, Properties::default());
    assert!(client.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn pings_keep_a_connection_alive_past_its_keep_alive() {
    // [MQTT-3.1.2-23] any packet within the keep-alive resets the timer.
    let broker = start_broker_with(config(|limits| {
        limits.max_keep_alive = Some(Duration::from_secs(1))
    }))
    .await;
    let mut client = connect_v5(broker.addr, "pinger", Properties::default()).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        client.send(&Packet::PingReq).await;
        assert_eq!(client.recv().await, Some(Packet::PingResp));
    }
    broker.stop().await;
}

#[tokio::test]
async fn topic_alias_over_the_maximum_is_disconnected_0x94_v5() {
    // [MQTT-3.3.2-9] a Topic Alias above the Topic Alias Maximum the server sent.
    let broker = start_broker_with(config(|limits| limits.topic_alias_maximum = 2)).await;
    let mut client = connect_v5(broker.addr, "aliaser", Properties::default()).await;
    for alias in [1u16, 2] {
        client
            .send(&Packet::Publish(Publish {
                topic: "ta/a".into(),
                properties: Properties {
                    topic_alias: Some(alias),
                    ..Properties::default()
                },
                payload: Bytes::from_static(b"x"),
                ..Publish::default()
            }))
            .await;
    }
    client
        .send(&Packet::Publish(Publish {
            topic: "ta/a".into(),
            properties: Properties {
                topic_alias: Some(3),
                ..Properties::default()
            },
            ..Publish::default()
        }))
        .await;
    match client.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, ReasonCode::TOPIC_ALIAS_INVALID)
        }
        other => panic!("expected DISCONNECT 0x94, got {other:?}"),
    }
    broker.stop().await;
}
