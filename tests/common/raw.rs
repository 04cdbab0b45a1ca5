//! Packet builders and short handshakes for [`RawClient`] tests: the packets a
//! well-behaved client would send, so that a test can then misbehave on purpose
//! (not acknowledge, resend with DUP, go silent).

use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use rookery::protocol::{
    Ack, ConnAck, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, SubAck,
    Subscribe, SubscriptionOptions, Will,
};

use super::RawClient;

/// A packet id from a literal.
pub fn id(n: u16) -> PacketId {
    PacketId::new(n).expect("packet ids in tests are non-zero")
}

/// A CONNECT with a 30 s keep-alive and nothing else.
pub fn connect_packet(version: ProtocolVersion, client_id: &str, clean_start: bool) -> Connect {
    Connect {
        version,
        clean_start,
        keep_alive: 30,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

/// A CONNECT that resumes (or starts) a session outliving the connection: clean
/// session 0 in 3.x; Clean Start 0 and a Session Expiry Interval in 5.0.
pub fn persistent_packet(version: ProtocolVersion, client_id: &str, expiry: u32) -> Connect {
    let mut connect = connect_packet(version, client_id, false);
    if version.is_v5() {
        connect.properties.session_expiry_interval = Some(expiry);
    }
    connect
}

/// A will on `topic` with `payload`, QoS 0, no retain.
pub fn will(topic: &str, payload: &str) -> Will {
    Will {
        topic: ByteString::from(topic),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    }
}

/// A PUBLISH; `packet_id` is ignored at QoS 0.
pub fn publish(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Publish {
    Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: (qos != QoS::AtMostOnce).then(|| id(packet_id)),
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

/// A SUBSCRIBE of several filters at once.
pub fn subscribe_packet(packet_id: u16, filters: &[(&str, SubscriptionOptions)]) -> Subscribe {
    Subscribe {
        packet_id: id(packet_id),
        filters: filters
            .iter()
            .map(|(filter, options)| (ByteString::from(*filter), *options))
            .collect(),
        properties: Properties::default(),
    }
}

/// Subscription options with only a QoS.
pub fn at(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

impl RawClient {
    /// Connects, sends `connect` and returns the CONNACK.
    pub async fn open(addr: std::net::SocketAddr, connect: Connect) -> (RawClient, ConnAck) {
        let mut client = RawClient::connect(addr, connect.version).await;
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Some(Packet::ConnAck(connack)) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// [`RawClient::open`] with a plain CONNECT; panics unless it is accepted.
    pub async fn start(
        addr: std::net::SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
    ) -> (RawClient, ConnAck) {
        let (client, connack) =
            RawClient::open(addr, connect_packet(version, client_id, clean_start)).await;
        assert!(!connack.code.is_error(), "refused: {connack:?}");
        (client, connack)
    }

    /// The next packet; panics if the connection closed.
    pub async fn expect(&mut self) -> Packet {
        self.recv().await.expect("connection closed")
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn expect_publish(&mut self) -> Publish {
        match self.expect().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Asserts that nothing arrives (and the connection stays open) for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(packet) = tokio::time::timeout(wait, self.recv()).await {
            panic!("expected nothing, got {packet:?}");
        }
    }

    /// Subscribes and returns the SUBACK.
    pub async fn subscribe(&mut self, subscribe: Subscribe) -> SubAck {
        self.send(&Packet::Subscribe(subscribe)).await;
        match self.expect().await {
            Packet::SubAck(suback) => suback,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes to one filter at `qos`.
    pub async fn subscribe_one(&mut self, filter: &str, qos: QoS) -> SubAck {
        self.subscribe(subscribe_packet(1, &[(filter, at(qos))]))
            .await
    }

    /// Publishes and completes the QoS handshake as the sender.
    pub async fn publish_acked(&mut self, publish: Publish) {
        let (qos, packet_id) = (publish.qos, publish.packet_id);
        self.send(&Packet::Publish(publish)).await;
        match (qos, packet_id) {
            (QoS::AtLeastOnce, Some(packet_id)) => {
                assert!(
                    matches!(self.expect().await, Packet::PubAck(ack) if ack.packet_id == packet_id)
                );
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                assert!(
                    matches!(self.expect().await, Packet::PubRec(ack) if ack.packet_id == packet_id)
                );
                self.send(&Packet::PubRel(Ack::new(packet_id))).await;
                assert!(
                    matches!(self.expect().await, Packet::PubComp(ack) if ack.packet_id == packet_id)
                );
            }
            _ => {}
        }
    }

    /// The next PUBLISH, acknowledged as a well-behaved receiver would (PUBACK, or
    /// PUBREC → PUBREL → PUBCOMP), checking the broker's side of the handshake.
    pub async fn receive_acked(&mut self) -> Publish {
        let publish = self.expect_publish().await;
        match (publish.qos, publish.packet_id) {
            (QoS::AtMostOnce, None) => {}
            (QoS::AtLeastOnce, Some(packet_id)) => {
                self.send(&Packet::PubAck(Ack::new(packet_id))).await;
            }
            (QoS::ExactlyOnce, Some(packet_id)) => {
                self.send(&Packet::PubRec(Ack::new(packet_id))).await;
                assert!(
                    matches!(self.expect().await, Packet::PubRel(ack) if ack.packet_id == packet_id)
                );
                self.send(&Packet::PubComp(Ack::new(packet_id))).await;
            }
            _ => panic!("packet id does not fit the QoS: {publish:?}"),
        }
        publish
    }

    /// Every PUBLISH that arrives (acknowledged) until nothing has come for `quiet`.
    pub async fn publishes_until_quiet(&mut self, quiet: Duration) -> Vec<Publish> {
        let mut publishes = Vec::new();
        while let Ok(publish) = tokio::time::timeout(quiet, self.receive_acked()).await {
            publishes.push(publish);
        }
        publishes
    }

    /// Sends DISCONNECT (reason 0) and waits for the broker to close.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(Default::default())).await;
        assert!(self.is_closed().await);
    }
}
