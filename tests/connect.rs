//! Connection life: CONNECT/CONNACK, session takeover, keep-alive, session
//! present, client identifiers, and MQTT 3.1 (`MQIsdp`) clients.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rookery::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};

const V3: ProtocolVersion = ProtocolVersion::V3_1;
const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test]
async fn connect_is_answered_with_connack_v4() {
    let broker = start_broker().await;
    // [MQTT-3.2.0-1] the first packet from the server is CONNACK: 20 02 00 00.
    let mut client = RawClient::connect(broker.addr, V4).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V4, "c", true))))
        .await;
    assert_eq!(client.recv_bytes(4).await, [0x20, 0x02, 0x00, 0x00]);
    let (_rumqttc, connack) = v4::connect(v4::options(broker.addr, "r")).await;
    assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
    assert!(!connack.session_present);
    broker.stop().await;
}

#[tokio::test]
async fn connack_announces_server_limits_v5() {
    let broker = start_broker().await;
    let (_client, connack) = v5::connect(v5::options(broker.addr, "c")).await;
    assert_eq!(
        connack.code,
        rumqttc::v5::mqttbytes::v5::ConnectReturnCode::Success
    );
    let properties = connack.properties.expect("v5 CONNACK properties");
    let limits = rookery::config::Limits::default();
    assert_eq!(properties.receive_max, Some(limits.receive_maximum));
    assert_eq!(properties.topic_alias_max, Some(limits.topic_alias_maximum));
    assert_eq!(properties.max_packet_size, Some(limits.max_packet_size));
    // No id was assigned: the client sent one.
    assert_eq!(properties.assigned_client_identifier, None);
    broker.stop().await;
}

#[tokio::test]
async fn takeover_closes_the_old_connection_v4() {
    let broker = start_broker().await;
    let (mut old, _) = RawClient::start(broker.addr, V4, "dup", true).await;
    let (mut new, _) = RawClient::start(broker.addr, V4, "dup", true).await;
    // [MQTT-3.1.4-2] the server disconnects the existing client; 3.1.1 just closes.
    assert_eq!(old.drain_until_closed().await, vec![]);
    new.send(&Packet::PingReq).await;
    assert_eq!(new.expect().await, Packet::PingResp);
    broker.stop().await;
}

#[tokio::test]
async fn takeover_sends_disconnect_session_taken_over_v5() {
    let broker = start_broker().await;
    let (mut old, _) = RawClient::start(broker.addr, V5, "dup", true).await;
    let (mut new, _) = RawClient::start(broker.addr, V5, "dup", true).await;
    // [MQTT-3.1.4-3] MQTT 5.0: DISCONNECT with reason 0x8E (Session taken over), then close.
    match old.drain_until_closed().await.as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER)
        }
        other => panic!("expected one DISCONNECT 0x8E, got {other:?}"),
    }
    new.send(&Packet::PingReq).await;
    assert_eq!(new.expect().await, Packet::PingResp);
    broker.stop().await;
}

/// A clean session that was taken over ends with its connection: the new one
/// starts empty ([MQTT-3.1.2-6]).
#[tokio::test]
async fn takeover_of_a_clean_session_does_not_inherit_subscriptions_v4() {
    let broker = start_broker().await;
    let (mut old, _) = RawClient::start(broker.addr, V4, "dup", true).await;
    old.subscribe_one("t", QoS::AtMostOnce).await;
    let (mut new, connack) = RawClient::start(broker.addr, V4, "dup", false).await;
    assert!(!connack.session_present);
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "pub", true).await;
    publisher
        .publish_acked(publish("t", QoS::AtLeastOnce, 1, "x"))
        .await;
    new.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn takeover_of_a_clean_session_does_not_inherit_subscriptions_v5() {
    let broker = start_broker().await;
    let (mut old, _) = RawClient::start(broker.addr, V5, "dup", true).await;
    old.subscribe_one("t", QoS::AtMostOnce).await;
    let (mut new, connack) = RawClient::start(broker.addr, V5, "dup", true).await;
    assert!(!connack.session_present);
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    publisher
        .publish_acked(publish("t", QoS::AtLeastOnce, 1, "x"))
        .await;
    new.expect_silence(Duration::from_millis(200)).await;
    broker.stop().await;
}

#[tokio::test]
async fn keep_alive_times_out_after_one_and_a_half_periods_v4() {
    let broker = start_broker().await;
    let connect = rookery::protocol::Connect {
        keep_alive: 1,
        ..connect_packet(V4, "sleepy", true)
    };
    let (mut client, _) = RawClient::open(broker.addr, connect).await;
    // A packet inside the window restarts it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    client.send(&Packet::PingReq).await;
    assert_eq!(client.expect().await, Packet::PingResp);
    let silent_since = Instant::now();
    // [MQTT-3.1.2-24] no packet within 1.5 × keep-alive: the server closes.
    assert!(client.is_closed().await);
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn keep_alive_timeout_sends_disconnect_0x8d_v5() {
    let broker = start_broker().await;
    let connect = rookery::protocol::Connect {
        keep_alive: 1,
        ..connect_packet(V5, "sleepy", true)
    };
    let (mut client, _) = RawClient::open(broker.addr, connect).await;
    let silent_since = Instant::now();
    // [MQTT-3.1.2-22] MQTT 5.0 numbering; DISCONNECT 0x8D (Keep Alive timeout).
    match client.drain_until_closed().await.as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::KEEP_ALIVE_TIMEOUT)
        }
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let waited = silent_since.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
    assert!(
        waited < Duration::from_millis(2500),
        "closed after {waited:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn session_present_only_for_a_resumed_session_v4() {
    let broker = start_broker().await;
    // [MQTT-3.2.2-3] no stored session: session present 0.
    let (client, connack) = RawClient::start(broker.addr, V4, "p", false).await;
    assert!(!connack.session_present);
    client.disconnect().await;
    // [MQTT-3.2.2-2] clean session 0 and a stored session: session present 1.
    let (client, connack) = RawClient::start(broker.addr, V4, "p", false).await;
    assert!(connack.session_present);
    client.disconnect().await;
    // [MQTT-3.2.2-1] clean session 1: session present 0, and the stored session is gone.
    let (client, connack) = RawClient::start(broker.addr, V4, "p", true).await;
    assert!(!connack.session_present);
    client.disconnect().await;
    let (_client, connack) = RawClient::start(broker.addr, V4, "p", false).await;
    assert!(!connack.session_present);
    broker.stop().await;
}

#[tokio::test]
async fn session_present_only_for_a_resumed_session_v5() {
    let broker = start_broker().await;
    let (client, connack) = v5::connect(v5::persistent(broker.addr, "p", 60)).await;
    assert!(!connack.session_present);
    client.disconnect().await;
    // [MQTT-3.2.2-3] Clean Start 0 and a stored session: session present 1.
    let (client, connack) = v5::connect(v5::persistent(broker.addr, "p", 0)).await;
    assert!(connack.session_present);
    client.disconnect().await;
    // Session Expiry 0 on that connection: the session ended with it ([MQTT-3.1.2-23]).
    let (client, connack) = v5::connect(v5::persistent(broker.addr, "p", 60)).await;
    assert!(!connack.session_present);
    client.disconnect().await;
    // [MQTT-3.2.2-2] Clean Start 1: session present 0.
    let mut options = v5::persistent(broker.addr, "p", 60);
    options.set_clean_start(true);
    let (_client, connack) = v5::connect(options).await;
    assert!(!connack.session_present);
    broker.stop().await;
}

#[tokio::test]
async fn empty_client_id_with_clean_session_0_is_rejected_v4() {
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr, V4).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V4, "", false))))
        .await;
    // [MQTT-3.1.3-8] CONNACK 0x02 (identifier rejected), then close.
    assert_eq!(client.recv_bytes(4).await, [0x20, 0x02, 0x00, 0x02]);
    assert!(client.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn empty_client_id_with_clean_session_1_is_assigned_v4() {
    let broker = start_broker().await;
    // [MQTT-3.1.3-6] the server assigns a unique id (3.1.1 cannot say which).
    let (mut first, _) = RawClient::start(broker.addr, V4, "", true).await;
    let (mut second, _) = RawClient::start(broker.addr, V4, "", true).await;
    first.subscribe_one("t", QoS::AtMostOnce).await;
    second.subscribe_one("t", QoS::AtMostOnce).await;
    // Both sessions exist side by side: neither took the other over.
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "pub", true).await;
    publisher
        .publish_acked(publish("t", QoS::AtMostOnce, 0, "x"))
        .await;
    assert_eq!(&first.expect_publish().await.payload[..], b"x");
    assert_eq!(&second.expect_publish().await.payload[..], b"x");
    broker.stop().await;
}

#[tokio::test]
async fn empty_client_id_gets_an_assigned_client_identifier_v5() {
    let broker = start_broker().await;
    // [MQTT-3.2.2-16] the CONNACK carries the Assigned Client Identifier, even with Clean Start 0.
    let (_first, connack) = RawClient::start(broker.addr, V5, "", false).await;
    let first_id = connack
        .properties
        .assigned_client_identifier
        .expect("assigned client identifier");
    let (_second, connack) = RawClient::start(broker.addr, V5, "", true).await;
    let second_id = connack
        .properties
        .assigned_client_identifier
        .expect("assigned client identifier");
    assert!(!first_id.is_empty());
    assert_ne!(
        first_id, second_id,
        "[MQTT-3.1.3-6] assigned ids are unique"
    );
    broker.stop().await;
}

#[tokio::test]
async fn mqisdp_client_connects_and_exchanges_messages_v3() {
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr, V3).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(
            V3,
            "old-timer",
            true,
        ))))
        .await;
    // MQTT 3.1 CONNACK: the same four bytes as 3.1.1 (the session present bit is reserved).
    assert_eq!(client.recv_bytes(4).await, [0x20, 0x02, 0x00, 0x00]);
    let suback = client.subscribe_one("legacy/#", QoS::ExactlyOnce).await;
    assert_eq!(suback.reasons, vec![ReasonCode::GRANTED_QOS_2]);
    // Its own QoS 2 publish comes back (around the handshake), and so does a 3.1.1 client's.
    client
        .send(&Packet::Publish(publish(
            "legacy/a",
            QoS::ExactlyOnce,
            7,
            "from 3.1",
        )))
        .await;
    let mut got = Vec::new();
    while got.len() < 4 {
        match client.expect().await {
            Packet::PubRec(ack) => {
                assert_eq!(ack.packet_id, id(7));
                client.send(&Packet::PubRel(ack)).await;
                got.push("PUBREC".to_string());
            }
            Packet::PubComp(ack) => {
                assert_eq!(ack.packet_id, id(7));
                got.push("PUBCOMP".to_string());
            }
            Packet::PubRel(ack) => {
                client.send(&Packet::PubComp(ack)).await;
                got.push("PUBREL".to_string());
            }
            Packet::Publish(publish) => {
                assert_eq!(&publish.payload[..], b"from 3.1");
                if let Some(packet_id) = publish.packet_id {
                    client
                        .send(&Packet::PubRec(rookery::protocol::Ack::new(packet_id)))
                        .await;
                }
                got.push("PUBLISH".to_string());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    got.sort();
    assert_eq!(got, ["PUBCOMP", "PUBLISH", "PUBREC", "PUBREL"]);
    let (newer, _) = v4::connect(v4::options(broker.addr, "newer")).await;
    newer
        .client
        .publish("legacy/b", v4::QoS::AtMostOnce, false, "from 3.1.1")
        .await
        .unwrap();
    let got = client.expect_publish().await;
    assert_eq!(
        (got.topic.as_ref(), &got.payload[..], got.qos),
        ("legacy/b", &b"from 3.1.1"[..], QoS::AtMostOnce)
    );
    broker.stop().await;
}

#[tokio::test]
async fn empty_client_id_is_rejected_v3() {
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr, V3).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V3, "", true))))
        .await;
    // MQTT 3.1 §3.1: the client identifier is 1 to 23 characters; 0x02 otherwise.
    assert_eq!(client.recv_bytes(4).await, [0x20, 0x02, 0x00, 0x02]);
    assert!(client.is_closed().await);
    broker.stop().await;
}
