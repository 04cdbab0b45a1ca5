//! Malformed and forbidden input, as raw bytes (mosquitto's `13-malformed-*`): each
//! test sends exact bytes, expects exact bytes (or a silent close) back, and then
//! checks that the broker still serves a fresh client.
//!
//! 3.x has no way to say why, so a violation is a plain close; a v5 client gets a
//! DISCONNECT with the reason code first (MQTT 5.0 §4.13). Before CONNACK the broker
//! does not know the version yet, so a bad CONNECT is closed without an answer,
//! except for the protocol level, which has its own CONNACK code.
mod common;

use std::net::SocketAddr;

use common::*;
use rookery::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};
use rookery::Config;

/// A packet: the first byte, the remaining length (minimally encoded) and `body`.
fn packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut bytes = vec![first];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        bytes.push(byte);
        if len == 0 {
            break;
        }
    }
    bytes.extend_from_slice(body);
    bytes
}

/// A length-prefixed string or binary field.
fn string(s: &[u8]) -> Vec<u8> {
    let mut bytes = (s.len() as u16).to_be_bytes().to_vec();
    bytes.extend_from_slice(s);
    bytes
}

/// A CONNECT body: protocol name, level, flags, keep-alive 60, then `rest` (v5
/// properties and the payload, as the caller wrote them).
fn connect_body(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> Vec<u8> {
    let mut body = string(name);
    body.extend_from_slice(&[level, flags, 0x00, 0x3C]);
    body.extend_from_slice(rest);
    body
}

/// A well-formed clean-session CONNECT for 3.1.1.
fn connect_v4(client_id: &str) -> Vec<u8> {
    packet(
        0x10,
        &connect_body(b"MQTT", 4, 0x02, &string(client_id.as_bytes())),
    )
}

/// A well-formed clean-start CONNECT for 5.0, without properties.
fn connect_v5(client_id: &str) -> Vec<u8> {
    let mut rest = vec![0x00];
    rest.extend(string(client_id.as_bytes()));
    packet(0x10, &connect_body(b"MQTT", 5, 0x02, &rest))
}

const CONNACK_V4_ACCEPTED: [u8; 4] = [0x20, 0x02, 0x00, 0x00];
const CONNACK_V4_UNACCEPTABLE_PROTOCOL: [u8; 4] = [0x20, 0x02, 0x00, 0x01];

/// Reads the DISCONNECT a v5 client gets before the broker closes and checks its
/// reason code. It may carry a Reason String (MQTT 5.0 §3.14.2.2.3), so the bytes
/// after the reason code are not compared.
async fn expect_disconnect_v5(client: &mut RawClient, reason: ReasonCode) {
    match client.recv().await {
        Some(Packet::Disconnect(disconnect)) => assert_eq!(disconnect.reason, reason),
        other => panic!("expected DISCONNECT {:#04x}, got {other:?}", reason.0),
    }
}

/// A 3.1.1 client that has been accepted.
async fn connected_v4(addr: SocketAddr, client_id: &str) -> RawClient {
    let mut client = RawClient::connect(addr, ProtocolVersion::V3_1_1).await;
    client.send_bytes(&connect_v4(client_id)).await;
    assert_eq!(client.recv_bytes(4).await, CONNACK_V4_ACCEPTED);
    client
}

/// A 5.0 client that has been accepted.
async fn connected_v5(addr: SocketAddr, client_id: &str) -> RawClient {
    let mut client = RawClient::connect(addr, ProtocolVersion::V5).await;
    client.send_bytes(&connect_v5(client_id)).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => assert_eq!(connack.code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    client
}

/// The broker survived: a fresh client connects and gets PINGRESP for PINGREQ.
async fn assert_still_serving(addr: SocketAddr) {
    let mut client = connected_v4(addr, "survivor").await;
    client.send_bytes(&[0xC0, 0x00]).await;
    assert_eq!(client.recv_bytes(2).await, [0xD0, 0x00]);
}

/// Sends `bytes` on a fresh connection and expects it closed without a reply.
async fn assert_refused_silently(bytes: &[u8]) {
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
    client.send_bytes(bytes).await;
    assert!(client.is_closed().await, "expected a close, and no reply");
    assert_still_serving(broker.addr).await;
    broker.stop().await;
}

/// Sends `bytes` after an accepted CONNECT and expects a plain close (3.1.1).
async fn assert_closes_v4(bytes: &[u8]) {
    let broker = start_broker().await;
    let mut client = connected_v4(broker.addr, "offender").await;
    client.send_bytes(bytes).await;
    assert!(client.is_closed().await, "expected a close, and no reply");
    assert_still_serving(broker.addr).await;
    broker.stop().await;
}

/// Sends `bytes` after an accepted CONNECT and expects DISCONNECT `reason`, then a close (5.0).
async fn assert_disconnects_v5(bytes: &[u8], reason: ReasonCode) {
    let broker = start_broker().await;
    let mut client = connected_v5(broker.addr, "offender").await;
    client.send_bytes(bytes).await;
    expect_disconnect_v5(&mut client, reason).await;
    assert!(
        client.is_closed().await,
        "expected a close after DISCONNECT"
    );
    assert_still_serving(broker.addr).await;
    broker.stop().await;
}

// ---------------------------------------------------------------- CONNECT

#[tokio::test]
async fn well_formed_connects_are_accepted_v4_and_v5() {
    let broker = start_broker().await;
    connected_v4(broker.addr, "a").await;
    connected_v5(broker.addr, "b").await;
    broker.stop().await;
}

#[tokio::test]
async fn unsupported_protocol_level_gets_connack_0x01_then_close_v4() {
    // [MQTT-3.1.2-2] an unsupported level is answered with return code 0x01, then closed.
    // 0x84 is a mosquitto bridge's "3.1.1 + bridge bit", which retries without the bit
    // only after this answer.
    for (name, level) in [
        (&b"MQTT"[..], 3u8),
        (b"MQTT", 0),
        (b"MQIsdp", 4),
        (b"MQTT", 0x84),
    ] {
        let broker = start_broker().await;
        let mut client = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
        let bytes = packet(0x10, &connect_body(name, level, 0x02, &string(b"c")));
        client.send_bytes(&bytes).await;
        assert_eq!(
            client.recv_bytes(4).await,
            CONNACK_V4_UNACCEPTABLE_PROTOCOL,
            "level {level}"
        );
        assert!(client.is_closed().await);
        assert_still_serving(broker.addr).await;
        broker.stop().await;
    }
}

#[tokio::test]
async fn protocol_level_above_5_gets_connack_0x84_then_close_v5() {
    // [MQTT-3.1.2-2] (5.0): CONNACK 0x84 (Unsupported Protocol Version), then close.
    // A client newer than 5.0 reads the v5 CONNACK: flags, reason, no properties.
    for level in [6u8, 0x85] {
        let broker = start_broker().await;
        let mut client = RawClient::connect(broker.addr, ProtocolVersion::V5).await;
        let bytes = packet(
            0x10,
            &connect_body(b"MQTT", level, 0x02, &[0x00, 0x00, 0x01, b'c']),
        );
        client.send_bytes(&bytes).await;
        assert_eq!(
            client.recv_bytes(5).await,
            [0x20, 0x03, 0x00, 0x84, 0x00],
            "level {level}"
        );
        assert!(client.is_closed().await);
        assert_still_serving(broker.addr).await;
        broker.stop().await;
    }
}

#[tokio::test]
async fn bad_protocol_name_gets_connack_0x01_then_close() {
    // [MQTT-3.1.2-1] a wrong protocol name may be closed; the broker also answers 0x01
    // (no CONNACK format is more widely understood than the 3.1.1 one).
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
    let bytes = packet(0x10, &connect_body(b"MQTX", 4, 0x02, &string(b"c")));
    client.send_bytes(&bytes).await;
    assert_eq!(client.recv_bytes(4).await, CONNACK_V4_UNACCEPTABLE_PROTOCOL);
    assert!(client.is_closed().await);
    assert_still_serving(broker.addr).await;
    broker.stop().await;
}

#[tokio::test]
async fn connect_reserved_flag_set_is_closed_v4() {
    // [MQTT-3.1.2-3] the reserved flag must be 0, else the connection is closed.
    assert_refused_silently(&packet(
        0x10,
        &connect_body(b"MQTT", 4, 0x03, &string(b"c")),
    ))
    .await;
}

#[tokio::test]
async fn connect_reserved_flag_set_is_closed_v5() {
    // [MQTT-3.1.2-3] (MQTT 5.0: a Malformed Packet).
    let mut rest = vec![0x00];
    rest.extend(string(b"c"));
    assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", 5, 0x03, &rest))).await;
}

/// A CONNECT whose will fields are present (topic `w`, payload `x`).
fn connect_with_will(level: u8, flags: u8) -> Vec<u8> {
    let mut rest = if level == 5 { vec![0x00] } else { vec![] };
    rest.extend(string(b"c"));
    if level == 5 {
        rest.push(0x00); // will properties
    }
    rest.extend(string(b"w"));
    rest.extend(string(b"x"));
    packet(0x10, &connect_body(b"MQTT", level, flags, &rest))
}

#[tokio::test]
async fn connect_will_qos_3_is_closed() {
    // [MQTT-3.1.2-14] will QoS 3 is malformed. Flags: will (0x04), QoS 3 (0x18), clean.
    for level in [4, 5] {
        assert_refused_silently(&connect_with_will(level, 0x1E)).await;
    }
}

#[tokio::test]
async fn connect_will_flags_without_will_are_closed() {
    // [MQTT-3.1.2-13] no will flag: will QoS must be 0; [MQTT-3.1.2-15] and will retain 0.
    for level in [4u8, 5] {
        let mut rest = if level == 5 { vec![0x00] } else { vec![] };
        rest.extend(string(b"c"));
        for flags in [0x0A, 0x12, 0x22] {
            assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", level, flags, &rest)))
                .await;
        }
    }
}

#[tokio::test]
async fn connect_will_topic_with_wildcard_is_closed_v4() {
    // [MQTT-3.1.3-11] the will topic is a topic name; [MQTT-4.7.3-2] no wildcards in it.
    let mut rest = string(b"c");
    rest.extend(string(b"w/#"));
    rest.extend(string(b"x"));
    assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", 4, 0x06, &rest))).await;
}

#[tokio::test]
async fn connect_password_without_username_is_closed_v4() {
    // [MQTT-3.1.2-22] 3.1.1: if the user name flag is 0, the password flag must be 0.
    let mut rest = string(b"c");
    rest.extend(string(b"secret"));
    assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", 4, 0x42, &rest))).await;
}

#[tokio::test]
async fn connect_password_without_username_is_accepted_v5() {
    // MQTT 5.0 §3.1.2.9 allows a password without a user name.
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr, ProtocolVersion::V5).await;
    let mut rest = vec![0x00];
    rest.extend(string(b"c"));
    rest.extend(string(b"secret"));
    client
        .send_bytes(&packet(0x10, &connect_body(b"MQTT", 5, 0x42, &rest)))
        .await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => assert_eq!(connack.code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn connect_truncated_client_id_is_closed() {
    // [MQTT-1.5.3] a string is its length and that many bytes; a client id that claims
    // 10 bytes but ends the packet after 3 is malformed (mosquitto 13-malformed-connect).
    for level in [4u8, 5] {
        let mut rest = if level == 5 { vec![0x00] } else { vec![] };
        rest.extend([0x00, 0x0A, b'a', b'b', b'c']);
        assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", level, 0x02, &rest))).await;
    }
}

#[tokio::test]
async fn connect_truncated_protocol_name_is_closed() {
    // The protocol name claims 4 bytes; the packet ends after 2.
    assert_refused_silently(&[0x10, 0x04, 0x00, 0x04, b'M', b'Q']).await;
}

#[tokio::test]
async fn connect_truncated_username_is_closed_v4() {
    // User name flag set, but the packet ends inside the user name.
    let mut rest = string(b"c");
    rest.extend([0x00, 0x05, b'u']);
    assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", 4, 0x82, &rest))).await;
}

#[tokio::test]
async fn connect_invalid_utf8_client_id_is_closed() {
    // [MQTT-1.5.3-1] ill-formed UTF-8 (0xC3 0x28) is malformed; so is U+0000 [MQTT-1.5.3-2].
    for id in [
        &[0xC3u8, 0x28][..],
        &[b'a', 0x00, b'b'],
        &[0xED, 0xA0, 0x80],
    ] {
        for level in [4u8, 5] {
            let mut rest = if level == 5 { vec![0x00] } else { vec![] };
            rest.extend(string(id));
            assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", level, 0x02, &rest)))
                .await;
        }
    }
}

#[tokio::test]
async fn connect_with_trailing_bytes_is_closed_v4() {
    // The remaining length covers bytes that no CONNECT field accounts for.
    let mut rest = string(b"c");
    rest.extend([0xFF, 0xFF]);
    assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", 4, 0x02, &rest))).await;
}

#[tokio::test]
async fn connect_duplicate_property_is_closed_v5() {
    // MQTT 5.0 §3.1.2.11: a property other than user property twice is a Protocol Error.
    // Properties: Session Expiry Interval (0x11) twice.
    let mut rest = vec![10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2];
    rest.extend(string(b"c"));
    assert_refused_silently(&packet(0x10, &connect_body(b"MQTT", 5, 0x02, &rest))).await;
}

#[tokio::test]
async fn connect_with_bad_fixed_header_flags_is_closed() {
    // [MQTT-2.2.2-2] CONNECT's reserved fixed-header flags are 0000.
    let mut bytes = connect_v4("c");
    bytes[0] = 0x11;
    assert_refused_silently(&bytes).await;
}

#[tokio::test]
async fn first_packet_not_connect_is_closed() {
    // [MQTT-3.1.0-1] the first packet from the client must be CONNECT.
    for bytes in [
        &[0xC0u8, 0x00][..],                               // PINGREQ
        &[0x30, 0x05, 0x00, 0x01, b'a', b'h', b'i'],       // PUBLISH
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00], // SUBSCRIBE
        &[0xE0, 0x00],                                     // DISCONNECT
    ] {
        assert_refused_silently(bytes).await;
    }
}

#[tokio::test]
async fn second_connect_is_closed_v4() {
    // [MQTT-3.1.0-2] a second CONNECT is a protocol violation: close.
    assert_closes_v4(&connect_v4("offender")).await;
}

#[tokio::test]
async fn second_connect_is_disconnected_0x82_v5() {
    // [MQTT-3.1.0-2] a second CONNECT is a Protocol Error (0x82).
    assert_disconnects_v5(&connect_v5("offender"), ReasonCode::PROTOCOL_ERROR).await;
}

// ---------------------------------------------------------------- PUBLISH

#[tokio::test]
async fn publish_qos_3_is_closed_v4() {
    // [MQTT-3.3.1-4] a PUBLISH must not have both QoS bits set.
    assert_closes_v4(&[0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, b'x']).await;
}

#[tokio::test]
async fn publish_qos_3_is_disconnected_0x81_v5() {
    // [MQTT-3.3.1-4] a Malformed Packet (0x81).
    assert_disconnects_v5(
        &[0x36, 0x07, 0x00, 0x01, b'a', 0x00, 0x01, 0x00, b'x'],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn publish_topic_with_wildcard_is_closed_v4() {
    // [MQTT-3.3.2-2] the topic name in a PUBLISH must not contain wildcards.
    assert_closes_v4(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'#']).await;
    assert_closes_v4(&[0x30, 0x05, 0x00, 0x03, b'a', b'/', b'+']).await;
}

#[tokio::test]
async fn publish_topic_with_wildcard_is_disconnected_0x90_v5() {
    // [MQTT-3.3.2-2] no wildcards in a topic name. MQTT 5.0 §3.3.2.1 leaves the
    // reason code open; 0x90 (Topic Name Invalid) tells the client which field is
    // wrong, as HiveMQ and EMQX answer too.
    assert_disconnects_v5(
        &[0x30, 0x06, 0x00, 0x03, b'a', b'/', b'#', 0x00],
        ReasonCode::TOPIC_NAME_INVALID,
    )
    .await;
}

#[tokio::test]
async fn issue_8_publish_empty_topic_without_alias_is_closed() {
    // [MQTT-4.7.3-1] a topic name is at least one character long; MQTT 5.0 §3.3.2.1
    // makes a zero-length one without a Topic Alias a Protocol Error (0x82).
    assert_closes_v4(&[0x30, 0x03, 0x00, 0x00, b'x']).await;
    assert_disconnects_v5(
        &[0x30, 0x04, 0x00, 0x00, 0x00, b'x'],
        ReasonCode::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn publish_qos_0_with_dup_is_closed_v4() {
    // [MQTT-3.3.1-2] DUP must be 0 for QoS 0 messages.
    assert_closes_v4(&[0x38, 0x04, 0x00, 0x01, b'a', b'x']).await;
}

#[tokio::test]
async fn publish_qos_0_with_dup_is_disconnected_0x81_v5() {
    // [MQTT-3.3.1-2] a Malformed Packet.
    assert_disconnects_v5(
        &[0x38, 0x05, 0x00, 0x01, b'a', 0x00, b'x'],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn publish_packet_id_0_is_closed_v4() {
    // [MQTT-2.3.1-1] a QoS > 0 PUBLISH carries a non-zero packet identifier.
    assert_closes_v4(&[0x32, 0x06, 0x00, 0x01, b'a', 0x00, 0x00, b'x']).await;
}

#[tokio::test]
async fn publish_packet_id_0_is_disconnected_0x82_v5() {
    // [MQTT-2.3.1-1] a Protocol Error (0x82).
    assert_disconnects_v5(
        &[0x34, 0x07, 0x00, 0x01, b'a', 0x00, 0x00, 0x00, b'x'],
        ReasonCode::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn publish_topic_alias_0_is_disconnected_0x94_v5() {
    // [MQTT-3.3.2-8] a topic alias of 0 is a Protocol Error, reported as Topic Alias Invalid.
    assert_disconnects_v5(
        &[0x30, 0x08, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00, b'x'],
        ReasonCode::TOPIC_ALIAS_INVALID,
    )
    .await;
}

#[tokio::test]
async fn publish_truncated_topic_is_closed_v4() {
    // The topic claims 16 bytes; the packet holds 2.
    assert_closes_v4(&[0x30, 0x04, 0x00, 0x10, b'a', b'b']).await;
}

#[tokio::test]
async fn publish_property_length_past_the_packet_is_disconnected_0x81_v5() {
    // Property length 10 with one byte of properties left in the packet.
    assert_disconnects_v5(
        &[0x30, 0x05, 0x00, 0x01, b'a', 0x0A, 0x01],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn publish_invalid_utf8_topic_is_disconnected_0x81_v5() {
    // [MQTT-1.5.4-1] ill-formed UTF-8 is a Malformed Packet.
    assert_disconnects_v5(
        &[0x30, 0x06, 0x00, 0x02, 0xC3, 0x28, 0x00, b'x'],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn issue_8_publish_with_subscription_identifier_is_disconnected_0x82_v5() {
    // [MQTT-3.3.4-6] a client's PUBLISH must not carry a Subscription Identifier.
    assert_disconnects_v5(
        &[0x30, 0x07, 0x00, 0x01, b'a', 0x02, 0x0B, 0x07, b'x'],
        ReasonCode::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn issue_8_publish_response_topic_with_wildcard_is_disconnected_0x82_v5() {
    // [MQTT-3.3.2-14] the Response Topic must not contain wildcard characters.
    for wildcard in [b'#', b'+'] {
        assert_disconnects_v5(
            &[
                0x30, 0x0B, 0x00, 0x01, b'a', 0x06, 0x08, 0x00, 0x03, b'r', b'/', wildcard, b'x',
            ],
            ReasonCode::PROTOCOL_ERROR,
        )
        .await;
    }
}

// ---------------------------------------------------------------- SUBSCRIBE

#[tokio::test]
async fn subscribe_without_filters_is_closed_v4() {
    // [MQTT-3.8.3-3] a SUBSCRIBE carries at least one topic filter.
    assert_closes_v4(&[0x82, 0x02, 0x00, 0x01]).await;
}

#[tokio::test]
async fn subscribe_without_filters_is_disconnected_0x82_v5() {
    // [MQTT-3.8.3-2] (MQTT 5.0): a SUBSCRIBE with no payload is a Protocol Error.
    assert_disconnects_v5(&[0x82, 0x03, 0x00, 0x01, 0x00], ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn subscribe_with_bad_reserved_flags_is_closed_v4() {
    // [MQTT-3.8.1-1] SUBSCRIBE's fixed-header flags are 0010.
    assert_closes_v4(&[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]).await;
}

#[tokio::test]
async fn subscribe_with_bad_reserved_flags_is_disconnected_0x81_v5() {
    // [MQTT-3.8.1-1] a Malformed Packet.
    assert_disconnects_v5(
        &[0x80, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x00],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn subscribe_options_reserved_bits_are_closed_v4() {
    // [MQTT-3.8.3-4] 3.1.1: reserved bits set, or QoS 3, in the requested QoS byte.
    for options in [0x03, 0x04, 0x80] {
        assert_closes_v4(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', options]).await;
    }
}

#[tokio::test]
async fn subscribe_options_reserved_bits_are_disconnected_0x81_v5() {
    // [MQTT-3.8.3-5] bits 6 and 7 of the subscription options are reserved: malformed.
    for options in [0x40, 0x80] {
        assert_disconnects_v5(
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', options],
            ReasonCode::MALFORMED_PACKET,
        )
        .await;
    }
}

#[tokio::test]
async fn subscribe_options_qos_3_or_retain_handling_3_is_disconnected_0x82_v5() {
    // MQTT 5.0 §3.8.3.1: Maximum QoS 3 and Retain Handling 3 are Protocol Errors.
    for options in [0x03, 0x30] {
        assert_disconnects_v5(
            &[0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', options],
            ReasonCode::PROTOCOL_ERROR,
        )
        .await;
    }
}

#[tokio::test]
async fn issue_8_malformed_subscribe_is_0x81_even_after_a_protocol_error_v5() {
    // MQTT 5.0 §1.2, §4.13.1: a Protocol Error is found after the packet has been
    // parsed; a packet that cannot be parsed is a Malformed Packet, whatever rule an
    // earlier field broke.
    let cases: &[&[u8]] = &[
        // Maximum QoS 3 (a Protocol Error), then a filter that runs past the packet.
        &[
            0x82, 0x0A, 0x00, 0x01, 0x00, 0x00, 0x01, b'a', 0x03, 0x00, 0x05, b'b',
        ],
        // Packet identifier 0, then reserved option bits [MQTT-3.8.3-5].
        &[0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x40],
        // A second Subscription Identifier, then an unknown property id.
        &[
            0x82, 0x0C, 0x00, 0x01, 0x05, 0x0B, 0x01, 0x0B, 0x02, 0x7F, 0x00, 0x01, b'a', 0x00,
        ],
        // An empty filter [MQTT-4.7.3-1] without its options byte.
        &[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
    ];
    for bytes in cases {
        assert_disconnects_v5(bytes, ReasonCode::MALFORMED_PACKET).await;
    }
}

#[tokio::test]
async fn issue_8_malformed_unsubscribe_is_0x81_even_after_a_protocol_error_v5() {
    // Packet identifier 0, then a filter that runs past the packet.
    assert_disconnects_v5(
        &[0xA2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x05, b'a'],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
    // An empty filter, then a user property cut short.
    assert_disconnects_v5(
        &[0xA2, 0x07, 0x00, 0x01, 0x03, 0x26, 0x00, 0x05, 0x00, 0x00],
        ReasonCode::MALFORMED_PACKET,
    )
    .await;
}

#[tokio::test]
async fn issue_8_subscribe_protocol_errors_alone_are_0x82_v5() {
    // The same rules in packets that parse: Protocol Error.
    let cases: &[&[u8]] = &[
        &[0x82, 0x07, 0x00, 0x00, 0x00, 0x00, 0x01, b'a', 0x00], // packet id 0
        &[
            0x82, 0x0B, 0x00, 0x01, 0x04, 0x0B, 0x01, 0x0B, 0x02, 0x00, 0x01, b'a', 0x00,
        ], // two ids
        &[0xA2, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, b'a'],       // UNSUBSCRIBE, packet id 0
    ];
    for bytes in cases {
        assert_disconnects_v5(bytes, ReasonCode::PROTOCOL_ERROR).await;
    }
}

#[tokio::test]
async fn subscribe_packet_id_0_is_closed_v4() {
    // [MQTT-2.3.1-1] SUBSCRIBE carries a non-zero packet identifier.
    assert_closes_v4(&[0x82, 0x06, 0x00, 0x00, 0x00, 0x01, b'a', 0x00]).await;
}

#[tokio::test]
async fn subscribe_no_local_on_shared_subscription_is_disconnected_0x82_v5() {
    // [MQTT-3.8.3-4] (MQTT 5.0): No Local on a shared subscription is a Protocol Error.
    let mut body = vec![0x00, 0x01, 0x00];
    body.extend(string(b"$share/g/a"));
    body.push(0x04);
    assert_disconnects_v5(&packet(0x82, &body), ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn subscribe_invalid_filter_gets_failure_code_and_stays_connected() {
    // [MQTT-4.7.1-2] `a/#/b` is not a valid filter; it fails in SUBACK (0x80 / 0x8F)
    // without closing the connection (MQTT 5.0 §3.9.3).
    let broker = start_broker().await;
    let mut v4 = connected_v4(broker.addr, "v4").await;
    v4.send_bytes(&[
        0x82, 0x0A, 0x00, 0x07, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00,
    ])
    .await;
    assert_eq!(v4.recv_bytes(5).await, [0x90, 0x03, 0x00, 0x07, 0x80]);
    let mut v5 = connected_v5(broker.addr, "v5").await;
    v5.send_bytes(&[
        0x82, 0x0B, 0x00, 0x07, 0x00, 0x00, 0x05, b'a', b'/', b'#', b'/', b'b', 0x00,
    ])
    .await;
    assert_eq!(v5.recv_bytes(6).await, [0x90, 0x04, 0x00, 0x07, 0x00, 0x8F]);
    for client in [&mut v4, &mut v5] {
        client.send_bytes(&[0xC0, 0x00]).await;
        assert_eq!(client.recv_bytes(2).await, [0xD0, 0x00]);
    }
    broker.stop().await;
}

#[tokio::test]
async fn issue_8_subscribe_empty_filter_is_closed_v4() {
    // [MQTT-4.7.3-1] a topic filter is at least one character long: not a SUBACK 0x80.
    assert_closes_v4(&[0x82, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00]).await;
    // Also after a valid filter in the same packet.
    assert_closes_v4(&[
        0x82, 0x09, 0x00, 0x01, 0x00, 0x01, b'a', 0x00, 0x00, 0x00, 0x00,
    ])
    .await;
}

#[tokio::test]
async fn issue_8_subscribe_empty_filter_is_disconnected_0x82_v5() {
    // [MQTT-4.7.3-1]: MQTT 5.0 names no code; 0x8F is for a "correctly formed" filter.
    assert_disconnects_v5(
        &[0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00],
        ReasonCode::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn issue_8_unsubscribe_empty_filter_is_closed_v4() {
    // [MQTT-4.7.3-1] not an UNSUBACK: the connection closes.
    assert_closes_v4(&[0xA2, 0x04, 0x00, 0x01, 0x00, 0x00]).await;
}

#[tokio::test]
async fn issue_8_unsubscribe_empty_filter_is_disconnected_0x82_v5() {
    // [MQTT-4.7.3-1], as for SUBSCRIBE.
    assert_disconnects_v5(
        &[0xA2, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00],
        ReasonCode::PROTOCOL_ERROR,
    )
    .await;
}

#[tokio::test]
async fn unsubscribe_without_filters_is_closed_v4() {
    // [MQTT-3.10.3-2] an UNSUBSCRIBE carries at least one topic filter.
    assert_closes_v4(&[0xA2, 0x02, 0x00, 0x01]).await;
}

// ---------------------------------------------------------------- topic lengths
//
// A topic name or filter is a UTF-8 string with a two-byte length, so it holds at
// most 65,535 bytes [MQTT-4.7.3-3] and a longer one cannot even be written. A length
// that runs past the end of the packet means the packet cannot be parsed: a
// Malformed Packet (0x81, MQTT 5.0 §1.5.4 and §4.13), the same in PUBLISH, SUBSCRIBE
// and UNSUBSCRIBE. It is not 0x90/0x8F, which are for names and filters that are
// "correctly formed" but refused.

/// A PUBLISH, SUBSCRIBE and UNSUBSCRIBE whose topic claims `claimed` bytes but
/// carries `carried`; `v5` adds the empty property lengths.
fn overlong_topic_packets(claimed: u16, carried: usize, v5: bool) -> [Vec<u8>; 3] {
    let mut topic = claimed.to_be_bytes().to_vec();
    topic.extend(std::iter::repeat_n(b'a', carried));
    let props: &[u8] = if v5 { &[0x00] } else { &[] };
    let mut publish = topic.clone();
    publish.extend_from_slice(props);
    let mut subscribe = vec![0x00, 0x01];
    subscribe.extend_from_slice(props);
    subscribe.extend_from_slice(&topic);
    subscribe.push(0x00);
    let mut unsubscribe = vec![0x00, 0x01];
    unsubscribe.extend_from_slice(props);
    unsubscribe.extend_from_slice(&topic);
    [
        packet(0x30, &publish),
        packet(0x82, &subscribe),
        packet(0xA2, &unsubscribe),
    ]
}

#[tokio::test]
async fn issue_8_topic_length_past_the_packet_is_closed_v4() {
    for (claimed, carried) in [(0xFFFF, 10), (5, 4), (0x8000, 0x7FFF)] {
        for bytes in overlong_topic_packets(claimed, carried, false) {
            assert_closes_v4(&bytes).await;
        }
    }
}

#[tokio::test]
async fn issue_8_topic_length_past_the_packet_is_disconnected_0x81_v5() {
    for (claimed, carried) in [(0xFFFF, 10), (5, 4), (0x8000, 0x7FFF)] {
        for bytes in overlong_topic_packets(claimed, carried, true) {
            assert_disconnects_v5(&bytes, ReasonCode::MALFORMED_PACKET).await;
        }
    }
}

#[tokio::test]
async fn issue_8_topic_of_65535_bytes_is_accepted() {
    // [MQTT-4.7.3-3] the longest string the wire can carry is a valid topic; only a
    // name or filter of more than 201 levels is refused (0x90 / SUBACK 0x8F).
    let broker = start_broker().await;
    let long = "a".repeat(65_535);
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        let (mut client, _) = RawClient::start(broker.addr, version, "long", true).await;
        let suback = client.subscribe_one(&long, QoS::AtLeastOnce).await;
        assert_eq!(suback.reasons, [ReasonCode::GRANTED_QOS_1]);
        client
            .publish_acked(publish(&long, QoS::AtLeastOnce, 2, "x"))
            .await;
        let got = client.receive_acked().await;
        assert_eq!(got.topic.len(), 65_535);
        client
            .send(&Packet::Unsubscribe(rookery::protocol::Unsubscribe {
                packet_id: id(3),
                filters: vec![long.as_str().into()],
                properties: Default::default(),
            }))
            .await;
        assert!(matches!(client.expect().await, Packet::UnsubAck(_)));
    }
    broker.stop().await;
}

// ---------------------------------------------------------------- framing

#[tokio::test]
async fn remaining_length_longer_than_4_bytes_is_closed() {
    // MQTT 5.0 §1.5.5 / 3.1.1 §2.2.3: the remaining length takes at most four bytes.
    let bytes = [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
    assert_refused_silently(&bytes).await;
    assert_closes_v4(&bytes).await;
    assert_disconnects_v5(&bytes, ReasonCode::MALFORMED_PACKET).await;
}

#[tokio::test]
async fn remaining_length_not_minimally_encoded_is_closed_v4() {
    // [MQTT-1.5.5-1] the minimum number of bytes: 0x80 0x00 encodes 0 in two bytes.
    assert_closes_v4(&[0xC0, 0x80, 0x00]).await;
}

#[tokio::test]
async fn reserved_packet_types_are_closed() {
    // Packet type 0 is reserved in every version; 15 (AUTH) is reserved in 3.1.1.
    assert_closes_v4(&[0x00, 0x00]).await;
    assert_closes_v4(&[0xF0, 0x00]).await;
    assert_disconnects_v5(&[0x00, 0x00], ReasonCode::MALFORMED_PACKET).await;
}

#[tokio::test]
async fn server_to_client_packets_from_a_client_are_closed() {
    // CONNACK, SUBACK and PINGRESP only flow from server to client (§2.1.2).
    assert_closes_v4(&[0x20, 0x02, 0x00, 0x00]).await;
    assert_closes_v4(&[0xD0, 0x00]).await;
    assert_disconnects_v5(&[0xD0, 0x00], ReasonCode::PROTOCOL_ERROR).await;
}

#[tokio::test]
async fn packet_larger_than_max_packet_size_is_closed_v4() {
    // [MQTT-3.1.2-24] (5.0) / 3.1.1 §4.8: a packet over the server's limit closes the
    // connection. Only the fixed header is sent: the broker must decide without the body.
    let broker = start_broker_with(small_packets()).await;
    let mut client = connected_v4(broker.addr, "big").await;
    client.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    assert!(client.is_closed().await);
    assert_still_serving(broker.addr).await;
    broker.stop().await;
}

fn small_packets() -> Config {
    let mut config = Config::default();
    config.limits.max_packet_size = 1024;
    config
}

#[tokio::test]
async fn packet_larger_than_max_packet_size_is_disconnected_0x95_v5() {
    // [MQTT-3.1.2-24] a packet over the Maximum Packet Size the server announced is
    // answered with DISCONNECT 0x95 (Packet Too Large). The header alone announces
    // 256 MiB and nothing follows: a broker that buffered first would wait forever.
    let broker = start_broker_with(small_packets()).await;
    let mut client = connected_v5(broker.addr, "big").await;
    let started = std::time::Instant::now();
    client.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    expect_disconnect_v5(&mut client, ReasonCode::PACKET_TOO_LARGE).await;
    assert!(client.is_closed().await);
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    assert_still_serving(broker.addr).await;
    broker.stop().await;
}

#[tokio::test]
async fn packet_one_byte_over_max_packet_size_is_refused_v5() {
    // The limit counts the whole packet, fixed header included (MQTT 5.0 §3.1.2.11.4):
    // a 1,025-byte PUBLISH against a 1,024-byte limit is refused; 1,024 bytes is fine.
    let broker = start_broker_with(small_packets()).await;
    let mut client = connected_v5(broker.addr, "edge").await;
    // Fixed header 3 bytes + topic 3 + properties 1 = 7; payload fills to the limit.
    let fits = packet(
        0x30,
        &[&[0x00, 0x01, b'a', 0x00][..], &[b'x'; 1017]].concat(),
    );
    assert_eq!(fits.len(), 1024);
    client.send_bytes(&fits).await;
    client.send_bytes(&[0xC0, 0x00]).await;
    assert_eq!(client.recv_bytes(2).await, [0xD0, 0x00]);
    let too_big = packet(
        0x30,
        &[&[0x00, 0x01, b'a', 0x00][..], &[b'x'; 1018]].concat(),
    );
    assert_eq!(too_big.len(), 1025);
    client.send_bytes(&too_big[..5]).await;
    expect_disconnect_v5(&mut client, ReasonCode::PACKET_TOO_LARGE).await;
    assert!(client.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn disconnect_reason_string_is_left_out_when_over_client_maximum_packet_size_v5() {
    // [MQTT-3.14.2-3] the Reason String must not make the DISCONNECT larger than the
    // client's Maximum Packet Size: the DISCONNECT goes out without it, not at all.
    let broker = start_broker().await;
    let mut client = RawClient::connect(broker.addr, ProtocolVersion::V5).await;
    // Properties: Maximum Packet Size (0x27) = 16.
    let mut rest = vec![0x05, 0x27, 0x00, 0x00, 0x00, 0x10];
    rest.extend(string(b"tiny"));
    client
        .send_bytes(&packet(0x10, &connect_body(b"MQTT", 5, 0x02, &rest)))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    client.send_bytes(&connect_v5("tiny")).await;
    assert_eq!(client.recv_bytes(4).await, [0xE0, 0x02, 0x82, 0x00]);
    assert!(client.is_closed().await);
    broker.stop().await;
}

#[tokio::test]
async fn connect_larger_than_max_packet_size_is_closed() {
    // Before CONNECT the version is unknown: an oversized CONNECT is closed unanswered.
    let broker = start_broker_with(small_packets()).await;
    let mut client = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
    client.send_bytes(&[0x10, 0xFF, 0xFF, 0x03]).await;
    assert!(client.is_closed().await);
    assert_still_serving(broker.addr).await;
    broker.stop().await;
}

#[tokio::test]
async fn garbage_bytes_are_closed() {
    // Not MQTT at all: an HTTP request, TLS ClientHello start, and random noise.
    let noise: Vec<u8> = (0..64u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for bytes in [
        &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
        &[
            0x16, 0x03, 0x01, 0x00, 0xA5, 0x01, 0x00, 0x00, 0xA1, 0x03, 0x03,
        ],
        &noise,
    ] {
        assert_refused_silently(bytes).await;
        assert_closes_v4(bytes).await;
    }
}

#[tokio::test]
async fn a_violation_closes_only_the_offending_connection() {
    // A protocol error of one client never affects another (MQTT 5.0 §4.13).
    let broker = start_broker().await;
    let mut bystander = connected_v5(broker.addr, "bystander").await;
    let mut offender = connected_v4(broker.addr, "offender").await;
    offender.send_bytes(&[0x36, 0x00]).await;
    assert!(offender.is_closed().await);
    bystander.send_bytes(&[0xC0, 0x00]).await;
    assert_eq!(bystander.recv_bytes(2).await, [0xD0, 0x00]);
    broker.stop().await;
}
