//! Shared test harness: a real broker on 127.0.0.1:0, real clients (rumqttc v4 and
//! v5), and a raw-packet client for exact bytes and malformed input.
#![allow(dead_code, unused_imports)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rookery::protocol::{decode, encode, Packet, ProtocolVersion};
use rookery::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod raw;
pub use raw::*;
pub mod certs;
pub mod nats;
pub mod process;
pub mod wire;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(5);

/// A broker serving on a free loopback port; shut down by [`TestBroker::stop`].
/// Its data lives in a temporary directory that lives as long as it does.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub server: Server,
    pub config: Config,
    pub data_dir: tempfile::TempDir,
}

impl TestBroker {
    pub async fn stop(self) {
        self.server.shutdown().await;
    }

    /// Stops the broker and starts a new one on the same data dir (on a new port).
    pub async fn restart(self) -> TestBroker {
        self.server.shutdown().await;
        start_broker_in(self.config, self.data_dir).await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// The default configuration with nothing written to disk, for tests that bind
/// their own listeners through `Server::bind`.
pub fn memory_config() -> Config {
    let mut config = Config::default();
    config.storage.durability = rookery::config::Durability::Memory;
    config
}

/// Starts a broker with the default configuration on 127.0.0.1:0.
pub async fn start_broker() -> TestBroker {
    start_broker_with(Config::default()).await
}

/// Starts a broker with `config` (its listeners are replaced by one on 127.0.0.1:0,
/// its data dir by a fresh temporary one).
pub async fn start_broker_with(config: Config) -> TestBroker {
    start_broker_in(config, tempfile::tempdir().unwrap()).await
}

/// Starts a broker with `config` on the data dir `data_dir`.
pub async fn start_broker_in(mut config: Config, data_dir: tempfile::TempDir) -> TestBroker {
    config.storage.dir = data_dir.path().to_path_buf();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(config.clone(), vec![listener]).unwrap();
    let addr = server.local_addrs()[0];
    TestBroker {
        addr,
        server,
        config,
        data_dir,
    }
}

/// A client that speaks packets (or raw bytes) with no protocol logic of its own.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr, version: ProtocolVersion) -> RawClient {
        let stream = TcpStream::connect(addr).await.unwrap();
        RawClient::from_stream(stream, version)
    }

    /// A client on a connection made elsewhere (from a chosen source address, say).
    pub fn from_stream(stream: TcpStream, version: ProtocolVersion) -> RawClient {
        RawClient {
            stream,
            buf: BytesMut::new(),
            version,
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        encode(packet, self.version, &mut out);
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet, or `None` if the broker closed the connection.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(packet) = decode(&mut self.buf, self.version, usize::MAX).unwrap() {
                    return Some(packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }

    /// The raw bytes the broker sends next (up to `n`), for exact-byte checks.
    pub async fn recv_bytes(&mut self, n: usize) -> Vec<u8> {
        let mut bytes = vec![0; n];
        tokio::time::timeout(WAIT, self.stream.read_exact(&mut bytes))
            .await
            .expect("timed out waiting for bytes")
            .unwrap();
        bytes
    }

    /// Whether the broker closes the connection (without sending anything else).
    pub async fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(
            tokio::time::timeout(WAIT, self.stream.read(&mut byte)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Reads until the connection closes; returns the packets received before that.
    pub async fn drain_until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv().await {
            packets.push(packet);
        }
        packets
    }
}

/// rumqttc helpers: an MQTT 3.1.1 client whose event loop runs in a task, with the
/// incoming publishes forwarded to a channel.
pub mod v4 {
    use super::*;
    pub use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Publish, QoS};
    use tokio::sync::mpsc;

    pub struct Client {
        pub client: AsyncClient,
        pub publishes: mpsc::UnboundedReceiver<Publish>,
        pub events: mpsc::UnboundedReceiver<Incoming>,
        task: tokio::task::JoinHandle<()>,
    }

    pub fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// Connects and waits for CONNACK; returns it with the client.
    pub async fn connect(options: MqttOptions) -> (Client, rumqttc::ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let connack = tokio::time::timeout(WAIT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::ConnAck(connack))) => return connack,
                    Ok(_) => {}
                    Err(error) => panic!("connect failed: {error}"),
                }
            }
        })
        .await
        .expect("no CONNACK");
        let (publish_tx, publishes) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(incoming) = event {
                    if let Incoming::Publish(publish) = &incoming {
                        let _ = publish_tx.send(publish.clone());
                    }
                    let _ = event_tx.send(incoming);
                }
            }
        });
        (
            Client {
                client,
                publishes,
                events,
                task,
            },
            connack,
        )
    }

    impl Client {
        pub async fn next_publish(&mut self) -> Publish {
            tokio::time::timeout(WAIT, self.publishes.recv())
                .await
                .expect("timed out waiting for a publish")
                .expect("event loop ended")
        }

        /// Asserts that no publish arrives within `wait`.
        pub async fn expect_no_publish(&mut self, wait: Duration) {
            if let Ok(Some(publish)) = tokio::time::timeout(wait, self.publishes.recv()).await {
                panic!("unexpected publish: {publish:?}");
            }
        }

        /// Waits for a packet matching `pred` (e.g. SUBACK).
        pub async fn wait_for(&mut self, mut pred: impl FnMut(&Incoming) -> bool) -> Incoming {
            tokio::time::timeout(WAIT, async {
                loop {
                    let event = self.events.recv().await.expect("event loop ended");
                    if pred(&event) {
                        return event;
                    }
                }
            })
            .await
            .expect("timed out waiting for a packet")
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.unwrap();
            self.wait_for(|e| matches!(e, Incoming::SubAck(_))).await;
        }

        /// Drops the connection without DISCONNECT (the event loop task is aborted).
        pub fn kill(self) {
            self.task.abort();
        }

        pub async fn disconnect(self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
        }
    }
}

/// rumqttc helpers for MQTT 5.0.
pub mod v5 {
    use super::*;
    pub use rumqttc::v5::mqttbytes::v5::{
        ConnAck, ConnectProperties, Packet as V5Packet, Publish, PublishProperties,
    };
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
    use tokio::sync::mpsc;

    pub struct Client {
        pub client: AsyncClient,
        pub publishes: mpsc::UnboundedReceiver<Publish>,
        pub events: mpsc::UnboundedReceiver<V5Packet>,
        task: tokio::task::JoinHandle<()>,
    }

    pub fn options(addr: SocketAddr, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        options
    }

    /// Options for a session that outlives its connection.
    pub fn persistent(addr: SocketAddr, client_id: &str, expiry: u32) -> MqttOptions {
        let mut options = options(addr, client_id);
        options.set_clean_start(false);
        let properties = ConnectProperties {
            session_expiry_interval: Some(expiry),
            ..ConnectProperties::new()
        };
        options.set_connect_properties(properties);
        options
    }

    pub async fn connect(options: MqttOptions) -> (Client, ConnAck) {
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let connack = tokio::time::timeout(WAIT, async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(V5Packet::ConnAck(connack))) => return connack,
                    Ok(_) => {}
                    Err(error) => panic!("connect failed: {error}"),
                }
            }
        })
        .await
        .expect("no CONNACK");
        let (publish_tx, publishes) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(incoming) = event {
                    if let V5Packet::Publish(publish) = &incoming {
                        let _ = publish_tx.send(publish.clone());
                    }
                    let _ = event_tx.send(incoming);
                }
            }
        });
        (
            Client {
                client,
                publishes,
                events,
                task,
            },
            connack,
        )
    }

    impl Client {
        pub async fn next_publish(&mut self) -> Publish {
            tokio::time::timeout(WAIT, self.publishes.recv())
                .await
                .expect("timed out waiting for a publish")
                .expect("event loop ended")
        }

        pub async fn expect_no_publish(&mut self, wait: Duration) {
            if let Ok(Some(publish)) = tokio::time::timeout(wait, self.publishes.recv()).await {
                panic!("unexpected publish: {publish:?}");
            }
        }

        pub async fn wait_for(&mut self, mut pred: impl FnMut(&V5Packet) -> bool) -> V5Packet {
            tokio::time::timeout(WAIT, async {
                loop {
                    let event = self.events.recv().await.expect("event loop ended");
                    if pred(&event) {
                        return event;
                    }
                }
            })
            .await
            .expect("timed out waiting for a packet")
        }

        pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
            self.client.subscribe(filter, qos).await.unwrap();
            self.wait_for(|e| matches!(e, V5Packet::SubAck(_))).await;
        }

        pub fn kill(self) {
            self.task.abort();
        }

        pub async fn disconnect(self) {
            let _ = self.client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(1), self.task).await;
        }
    }
}
