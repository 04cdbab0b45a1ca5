//! Will messages: published when a connection ends abnormally, discarded on a
//! normal DISCONNECT, asked for with v5 DISCONNECT 0x04, held back by a v5 Will
//! Delay Interval, and published on takeover.

mod common;

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use common::*;
use rookery::protocol::{Connect, Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const QUIET: Duration = Duration::from_millis(300);

/// A client `client_id` whose will is `gone:<client_id>` on `will/<client_id>`.
fn with_will(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        will: Some(will(
            &format!("will/{client_id}"),
            &format!("gone:{client_id}"),
        )),
        ..connect_packet(version, client_id, clean_start)
    }
}

/// A v5 client with a persistent session and a delayed will.
fn with_delayed_will(client_id: &str, session_expiry: u32, delay: u32) -> Connect {
    let mut connect = with_will(V5, client_id, false);
    connect.properties.session_expiry_interval = Some(session_expiry);
    if let Some(will) = &mut connect.will {
        will.properties.will_delay_interval = Some(delay);
    }
    connect
}

async fn watcher(addr: std::net::SocketAddr, version: ProtocolVersion) -> RawClient {
    let (mut watcher, _) = RawClient::start(addr, version, "watcher", true).await;
    watcher.subscribe_one("will/#", QoS::ExactlyOnce).await;
    watcher
}

fn payloads(publishes: &[rookery::protocol::Publish]) -> Vec<String> {
    publishes
        .iter()
        .map(|publish| String::from_utf8(publish.payload.to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn will_is_published_when_the_connection_drops_v4() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V4).await;
    let mut options = v4::options(broker.addr, "dies");
    options.set_last_will(rumqttc::LastWill::new(
        "will/dies",
        "gone",
        v4::QoS::AtLeastOnce,
        false,
    ));
    let (client, _) = v4::connect(options).await;
    client.kill();
    // [MQTT-3.1.2-8] published when the connection closes without DISCONNECT,
    // [MQTT-3.1.2-16] as a non-retained message at its QoS.
    let got = watcher.receive_acked().await;
    assert_eq!(
        (&*got.topic, &got.payload[..], got.qos, got.retain),
        ("will/dies", &b"gone"[..], QoS::AtLeastOnce, false)
    );
    broker.stop().await;
}

#[tokio::test]
async fn will_is_published_when_the_connection_drops_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let mut options = v5::options(broker.addr, "dies");
    let properties = rumqttc::v5::mqttbytes::v5::LastWillProperties {
        content_type: Some("text/plain".into()),
        user_properties: vec![("why".into(), "crash".into())],
        delay_interval: None,
        payload_format_indicator: None,
        message_expiry_interval: None,
        response_topic: None,
        correlation_data: None,
    };
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "will/dies",
        "gone",
        v5::QoS::ExactlyOnce,
        false,
        Some(properties),
    ));
    let (client, _) = v5::connect(options).await;
    client.kill();
    // [MQTT-3.1.2-8]; will properties travel with it ([MQTT-3.3.2-17], [MQTT-3.3.2-20]).
    let got = watcher.receive_acked().await;
    assert_eq!(
        (&*got.topic, &got.payload[..], got.qos),
        ("will/dies", &b"gone"[..], QoS::ExactlyOnce)
    );
    assert_eq!(got.properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(
        got.properties.user_properties,
        [(ByteString::from("why"), ByteString::from("crash"))]
    );
    broker.stop().await;
}

async fn retained_will(version: ProtocolVersion) {
    let broker = start_broker().await;
    let mut connect = with_will(version, "dies", true);
    if let Some(will) = &mut connect.will {
        will.retain = true;
    }
    let (client, _) = RawClient::open(broker.addr, connect).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // [MQTT-3.1.2-17] a will with retain 1 is published as a retained message.
    let (mut late, _) = RawClient::start(broker.addr, version, "late", true).await;
    late.subscribe_one("will/#", QoS::AtMostOnce).await;
    let got = late.expect_publish().await;
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"gone:dies");
    broker.stop().await;
}

#[tokio::test]
async fn will_with_retain_is_retained_v4() {
    retained_will(V4).await;
}

#[tokio::test]
async fn will_with_retain_is_retained_v5() {
    retained_will(V5).await;
}

async fn no_will_after_disconnect(version: ProtocolVersion) {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, version).await;
    let (client, _) = RawClient::open(broker.addr, with_will(version, "polite", true)).await;
    client.disconnect().await;
    // [MQTT-3.14.4-3] a normal DISCONNECT discards the will.
    watcher.expect_silence(QUIET).await;
    broker.stop().await;
}

#[tokio::test]
async fn will_is_not_published_after_a_normal_disconnect_v4() {
    no_will_after_disconnect(V4).await;
}

#[tokio::test]
async fn will_is_not_published_after_a_normal_disconnect_v5() {
    no_will_after_disconnect(V5).await;
}

#[tokio::test]
async fn will_is_not_published_after_disconnect_from_a_real_client_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let mut options = v5::options(broker.addr, "polite");
    options.set_last_will(rumqttc::v5::mqttbytes::v5::LastWill::new(
        "will/polite",
        "gone",
        v5::QoS::AtMostOnce,
        false,
        None,
    ));
    let (client, _) = v5::connect(options).await;
    client.disconnect().await;
    watcher.expect_silence(QUIET).await;
    broker.stop().await;
}

#[tokio::test]
async fn disconnect_with_will_message_publishes_it_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (mut client, _) = RawClient::open(broker.addr, with_will(V5, "asks", true)).await;
    // MQTT 5.0 §3.14.2.1: reason 0x04 (Disconnect with Will Message).
    client
        .send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::DISCONNECT_WITH_WILL,
            ..Disconnect::default()
        }))
        .await;
    assert!(client.is_closed().await);
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:asks");
    broker.stop().await;
}

async fn will_on_protocol_error(version: ProtocolVersion) {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, version).await;
    let (mut client, _) = RawClient::open(broker.addr, with_will(version, "rude", true)).await;
    // [MQTT-3.1.0-2] a second CONNECT is a protocol violation: the server closes the
    // connection, which is not a normal DISCONNECT, so the will goes out ([MQTT-3.1.2-8]).
    client
        .send(&Packet::Connect(Box::new(connect_packet(
            version, "rude", true,
        ))))
        .await;
    client.drain_until_closed().await;
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:rude");
    broker.stop().await;
}

#[tokio::test]
async fn will_is_published_when_the_server_closes_on_a_protocol_error_v4() {
    will_on_protocol_error(V4).await;
}

#[tokio::test]
async fn will_is_published_when_the_server_closes_on_a_protocol_error_v5() {
    will_on_protocol_error(V5).await;
}

#[tokio::test]
async fn will_is_published_after_the_will_delay_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (client, _) = RawClient::open(broker.addr, with_delayed_will("late", 60, 1)).await;
    drop(client);
    // [MQTT-3.1.3-9] held back for the Will Delay Interval (1 s)…
    watcher.expect_silence(Duration::from_millis(700)).await;
    // …then published.
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:late");
    broker.stop().await;
}

#[tokio::test]
async fn will_is_not_published_if_the_client_reconnects_within_the_delay_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (client, _) = RawClient::open(broker.addr, with_delayed_will("back", 60, 1)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // [MQTT-3.1.3-9] a new connection to the session before the delay passes: no will.
    let (_client, connack) = RawClient::open(broker.addr, persistent_packet(V5, "back", 60)).await;
    assert!(connack.session_present);
    watcher.expect_silence(Duration::from_millis(1300)).await;
    broker.stop().await;
}

#[tokio::test]
async fn will_is_published_when_the_session_ends_before_the_delay_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (client, _) = RawClient::open(broker.addr, with_delayed_will("short", 1, 30)).await;
    drop(client);
    // [MQTT-3.1.3-9] "until the Will Delay Interval has passed or the Session ends,
    // whichever happens first": the session expires after 1 s.
    watcher.expect_silence(Duration::from_millis(700)).await;
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:short");
    broker.stop().await;
}

#[tokio::test]
async fn clean_start_publishes_a_pending_delayed_will_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (client, _) = RawClient::open(broker.addr, with_delayed_will("fresh", 60, 30)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Clean Start ends the old session ([MQTT-3.1.2-4]), and with it the will's wait.
    let (_client, connack) = RawClient::start(broker.addr, V5, "fresh", true).await;
    assert!(!connack.session_present);
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:fresh");
    broker.stop().await;
}

#[tokio::test]
async fn will_is_published_on_takeover_v4() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V4).await;
    let (mut old, _) = RawClient::open(broker.addr, with_will(V4, "twin", false)).await;
    let (_new, connack) = RawClient::start(broker.addr, V4, "twin", false).await;
    assert!(connack.session_present);
    assert!(old.is_closed().await);
    // [MQTT-3.1.4-2] (3.1.1) the existing connection is closed without DISCONNECT,
    // so its will is published ([MQTT-3.1.2-8]).
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:twin");
    watcher.expect_silence(QUIET).await;
    broker.stop().await;
}

#[tokio::test]
async fn will_is_published_on_takeover_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (mut old, _) = RawClient::open(broker.addr, with_will(V5, "twin", true)).await;
    let (_new, _) = RawClient::start(broker.addr, V5, "twin", true).await;
    // [MQTT-3.1.4-3] DISCONNECT 0x8E to the old connection, and its will is published.
    assert!(matches!(
        old.drain_until_closed().await.as_slice(),
        [Packet::Disconnect(disconnect)] if disconnect.reason == ReasonCode::SESSION_TAKEN_OVER
    ));
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:twin");
    watcher.expect_silence(QUIET).await;
    broker.stop().await;
}

#[tokio::test]
async fn delayed_will_is_not_published_on_a_takeover_that_continues_the_session_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (_old, _) = RawClient::open(broker.addr, with_delayed_will("twin", 60, 1)).await;
    let (_new, connack) = RawClient::open(broker.addr, persistent_packet(V5, "twin", 60)).await;
    assert!(connack.session_present);
    // [MQTT-3.1.3-9] the new connection arrived before the delay passed.
    watcher.expect_silence(Duration::from_millis(1300)).await;
    broker.stop().await;
}

#[tokio::test]
async fn will_payload_is_binary_safe_v4() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V4).await;
    let mut connect = with_will(V4, "bin", true);
    if let Some(will) = &mut connect.will {
        will.payload = Bytes::from_static(&[0x00, 0xFF, 0x10]);
    }
    let (client, _) = RawClient::open(broker.addr, connect).await;
    drop(client);
    assert_eq!(
        &watcher.receive_acked().await.payload[..],
        &[0x00, 0xFF, 0x10]
    );
    broker.stop().await;
}

#[tokio::test]
async fn wills_of_many_clients_are_each_published_once_v4() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V4).await;
    let mut clients = Vec::new();
    for n in 0..5 {
        let (client, _) = RawClient::open(broker.addr, with_will(V4, &format!("c{n}"), true)).await;
        clients.push(client);
    }
    drop(clients);
    let mut got = payloads(&watcher.publishes_until_quiet(QUIET).await);
    got.sort();
    assert_eq!(got, ["gone:c0", "gone:c1", "gone:c2", "gone:c3", "gone:c4"]);
    broker.stop().await;
}

#[tokio::test]
async fn delayed_will_is_published_on_a_takeover_with_clean_start_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    let (_old, _) = RawClient::open(broker.addr, with_delayed_will("twin", 60, 30)).await;
    let (_new, connack) = RawClient::start(broker.addr, V5, "twin", true).await;
    assert!(!connack.session_present);
    // [MQTT-3.1.3-9] the will waits for its delay "or the Session ends, whichever
    // happens first": Clean Start ends the session now.
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:twin");
    broker.stop().await;
}

#[tokio::test]
async fn will_delay_does_not_outlive_a_session_that_ends_with_the_connection_v5() {
    let broker = start_broker().await;
    let mut watcher = watcher(broker.addr, V5).await;
    // Session Expiry 0: the session ends when the connection does, and so does the wait.
    let (client, _) = RawClient::open(broker.addr, with_delayed_will("brief", 0, 30)).await;
    drop(client);
    assert_eq!(&watcher.receive_acked().await.payload[..], b"gone:brief");
    broker.stop().await;
}
