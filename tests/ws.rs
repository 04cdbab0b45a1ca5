//! MQTT over WebSocket (`ws`, `wss`): rumqttc, and a browser-style client that
//! offers the `mqtt` subprotocol and splits packets across frames.

mod common;

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use common::certs::{packets, Pki};
use common::*;
use futures_util::{SinkExt, StreamExt};
use rookery::config::{ListenerConfig, ListenerKind};
use rookery::protocol::{decode, encode, Packet, ProtocolVersion, QoS, ReasonCode};
use rookery::{Config, Server};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

async fn start_ws() -> Server {
    let listener = ListenerConfig {
        bind: "127.0.0.1:0".parse().unwrap(),
        kind: ListenerKind::Ws,
        ..ListenerConfig::default()
    };
    let config = Config {
        listeners: vec![listener],
        ..memory_config()
    };
    Server::bind(config).await.unwrap()
}

/// Opens a WebSocket the way a browser library does: `Sec-WebSocket-Protocol: mqtt`.
async fn browser(
    addr: SocketAddr,
    path: &str,
) -> Result<(WebSocketStream<TcpStream>, Option<HeaderValue>), tungstenite::Error> {
    let mut request = format!("ws://{addr}{path}").into_client_request()?;
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
    let stream = TcpStream::connect(addr).await.unwrap();
    let (socket, response) = tokio_tungstenite::client_async(request, stream).await?;
    let protocol = response.headers().get("Sec-WebSocket-Protocol").cloned();
    Ok((socket, protocol))
}

fn bytes_of(packet: &Packet) -> Bytes {
    let mut out = BytesMut::new();
    encode(packet, ProtocolVersion::V5, &mut out);
    out.freeze()
}

/// Reads binary frames until a whole packet has arrived.
async fn next_packet(socket: &mut WebSocketStream<TcpStream>, buf: &mut BytesMut) -> Packet {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(packet) = decode(buf, ProtocolVersion::V5, usize::MAX).unwrap() {
                return packet;
            }
            match socket.next().await {
                Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
                other => panic!("expected a binary frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("timed out waiting for a packet")
}

#[tokio::test]
async fn browser_client_with_mqtt_subprotocol_publishes_and_subscribes() {
    let server = start_ws().await;
    let (mut socket, protocol) = browser(server.local_addrs()[0], "/mqtt").await.unwrap();
    assert_eq!(protocol, Some(HeaderValue::from_static("mqtt")));
    // One packet split over two frames.
    let connect = bytes_of(&packets::anonymous(ProtocolVersion::V5, "browser"));
    let (head, tail) = connect.split_at(5);
    socket
        .send(Message::Binary(Bytes::copy_from_slice(head)))
        .await
        .unwrap();
    socket
        .send(Message::Binary(Bytes::copy_from_slice(tail)))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    match next_packet(&mut socket, &mut buf).await {
        Packet::ConnAck(connack) => assert_eq!(connack.code, ReasonCode::SUCCESS),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    // Two packets in one frame.
    let mut both = BytesMut::new();
    both.extend_from_slice(&bytes_of(&packets::subscribe(1, "ws/#", QoS::AtMostOnce)));
    both.extend_from_slice(&bytes_of(&packets::publish(
        2,
        "ws/hello",
        QoS::AtMostOnce,
        false,
        "hi",
    )));
    socket.send(Message::Binary(both.freeze())).await.unwrap();
    assert!(matches!(
        next_packet(&mut socket, &mut buf).await,
        Packet::SubAck(_)
    ));
    match next_packet(&mut socket, &mut buf).await {
        Packet::Publish(publish) => assert_eq!(&publish.payload[..], b"hi"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn other_path_is_not_found() {
    let server = start_ws().await;
    match browser(server.local_addrs()[0], "/elsewhere").await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("expected 404, got {:?}", other.map(|_| ())),
    }
    server.shutdown().await;
}

#[tokio::test]
async fn text_frame_closes_the_connection() {
    // [MQTT-6.0.0-1]
    let server = start_ws().await;
    let (mut socket, _) = browser(server.local_addrs()[0], "/mqtt").await.unwrap();
    socket
        .send(Message::Binary(bytes_of(&packets::anonymous(
            ProtocolVersion::V5,
            "t",
        ))))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    assert!(matches!(
        next_packet(&mut socket, &mut buf).await,
        Packet::ConnAck(_)
    ));
    socket.send(Message::text("{}")).await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection stayed open");
    server.shutdown().await;
}

#[tokio::test]
async fn rumqttc_over_ws_v4_and_v5() {
    let server = start_ws().await;
    let addr = server.local_addrs()[0];
    let url = format!("ws://{addr}/mqtt");
    let mut options = v5::MqttOptions::new("sub", url.clone(), addr.port());
    options.set_transport(rumqttc::Transport::Ws);
    let (mut subscriber, _) = v5::connect(options).await;
    subscriber.subscribe("ws/#", v5::QoS::AtLeastOnce).await;
    let mut options = v4::MqttOptions::new("pub", url, addr.port());
    options.set_transport(rumqttc::Transport::Ws);
    let (publisher, _) = v4::connect(options).await;
    publisher
        .client
        .publish("ws/a", v4::QoS::AtLeastOnce, false, "over websocket")
        .await
        .unwrap();
    assert_eq!(
        &subscriber.next_publish().await.payload[..],
        b"over websocket"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn rumqttc_over_wss_with_client_certificate() {
    let pki = Pki::new();
    let listener = ListenerConfig {
        kind: ListenerKind::Wss,
        path: "/mqtt-secure".to_string(),
        ..pki.listener(true)
    };
    let config = Config {
        listeners: vec![listener],
        ..memory_config()
    };
    let server = Server::bind(config).await.unwrap();
    let port = server.local_addrs()[0].port();
    let tls = rumqttc::TlsConfiguration::Simple {
        ca: pki.ca.cert.clone().into_bytes(),
        alpn: None,
        client_auth: Some((
            pki.device_1.cert.clone().into_bytes(),
            pki.device_1.key.clone().into_bytes(),
        )),
    };
    let url = format!("wss://localhost:{port}/mqtt-secure");
    let mut options = v4::MqttOptions::new("secure", url, port);
    options.set_transport(rumqttc::Transport::wss_with_config(tls));
    let (mut client, connack) = v4::connect(options).await;
    assert_eq!(connack.code, rumqttc::ConnectReturnCode::Success);
    client.subscribe("wss/#", v4::QoS::AtLeastOnce).await;
    client
        .client
        .publish("wss/x", v4::QoS::AtLeastOnce, false, "both layers")
        .await
        .unwrap();
    assert_eq!(&client.next_publish().await.payload[..], b"both layers");
    server.shutdown().await;
}
