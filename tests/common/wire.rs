//! A raw client that behaves like real devices and libraries rather than a polite
//! test client: it writes any bytes in any segmentation (a whole burst in one
//! segment, one byte per write), never waits for an answer unless told to, can
//! stop reading, and runs over TCP, TLS and WebSocket alike.
//!
//! [`WireBroker`] is a broker listening on all three transports at once, so every
//! case runs over each of them with the same code.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rookery::config::{ListenerConfig, ListenerKind};
use rookery::protocol::{decode, encode, Packet, ProtocolVersion};
use rookery::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::certs::{client_config, tls_connect, Pki};
use super::WAIT;

/// How the bytes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
    Ws,
}

/// Every transport, for tests that run over each.
pub const TRANSPORTS: [Transport; 3] = [Transport::Tcp, Transport::Tls, Transport::Ws];

/// Every protocol version.
pub const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// A broker with a TCP, a TLS and a WebSocket listener on loopback, on a runtime
/// of its own as in `rookery` the binary: the test's clients do not share its
/// worker threads, so scheduling races look like they do in production.
pub struct WireBroker {
    server: Option<Server>,
    runtime: Option<tokio::runtime::Runtime>,
    addrs: Vec<SocketAddr>,
    pki: Pki,
    _data_dir: tempfile::TempDir,
}

impl WireBroker {
    pub async fn start() -> WireBroker {
        WireBroker::start_with(Config::default()).await
    }

    /// Starts with `config`; its listeners and data dir are replaced.
    pub async fn start_with(mut config: Config) -> WireBroker {
        let pki = Pki::new();
        let data_dir = tempfile::tempdir().unwrap();
        config.storage.dir = data_dir.path().to_path_buf();
        let loopback = "127.0.0.1:0".parse().unwrap();
        config.listeners = vec![
            ListenerConfig {
                bind: loopback,
                ..ListenerConfig::default()
            },
            pki.listener(false),
            ListenerConfig {
                bind: loopback,
                kind: ListenerKind::Ws,
                ..ListenerConfig::default()
            },
        ];
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.spawn(Server::bind(config)).await.unwrap().unwrap();
        WireBroker {
            addrs: server.local_addrs().to_vec(),
            server: Some(server),
            runtime: Some(runtime),
            pki,
            _data_dir: data_dir,
        }
    }

    pub fn addr(&self, transport: Transport) -> SocketAddr {
        let index = match transport {
            Transport::Tcp => 0,
            Transport::Tls => 1,
            Transport::Ws => 2,
        };
        self.addrs[index]
    }

    /// The broker's shared state (registry, metrics).
    pub fn broker(&self) -> &std::sync::Arc<rookery::Broker> {
        self.server.as_ref().expect("running").broker()
    }

    /// Tasks alive on the broker's runtime: one per connection, plus the
    /// listeners' and the housekeeping's.
    pub fn alive_tasks(&self) -> usize {
        let runtime = self.runtime.as_ref().expect("running");
        runtime.metrics().num_alive_tasks()
    }

    /// A connection with nothing sent yet.
    pub async fn open(&self, transport: Transport, version: ProtocolVersion) -> Wire {
        let addr = self.addr(transport);
        let io = match transport {
            Transport::Tcp => {
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                Io::Tcp(stream)
            }
            Transport::Tls => {
                let config = client_config(&self.pki.ca.cert, None);
                let stream = tls_connect(addr, config).await.unwrap();
                stream.get_ref().0.set_nodelay(true).unwrap();
                Io::Tls(Box::new(stream))
            }
            Transport::Ws => {
                let mut request = format!("ws://{addr}/mqtt").into_client_request().unwrap();
                request
                    .headers_mut()
                    .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
                let stream = TcpStream::connect(addr).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let (socket, _) = tokio_tungstenite::client_async(request, stream)
                    .await
                    .unwrap();
                Io::Ws(Box::new(socket))
            }
        };
        Wire {
            io,
            buf: BytesMut::new(),
            version,
            transport,
        }
    }

    pub async fn stop(mut self) {
        let (Some(server), Some(runtime)) = (self.server.take(), self.runtime.take()) else {
            return;
        };
        runtime.spawn(server.shutdown()).await.unwrap();
        runtime.shutdown_background();
    }
}

impl Drop for WireBroker {
    fn drop(&mut self) {
        // A test that failed before `stop`: end the broker's tasks without waiting.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

enum Io {
    Tcp(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<TcpStream>>),
}

/// One raw connection.
pub struct Wire {
    io: Io,
    buf: BytesMut,
    pub version: ProtocolVersion,
    pub transport: Transport,
}

/// The bytes of `packets`, back to back.
pub fn bytes_of(version: ProtocolVersion, packets: &[Packet]) -> Bytes {
    let mut out = BytesMut::new();
    for packet in packets {
        encode(packet, version, &mut out);
    }
    out.freeze()
}

impl Wire {
    /// Writes `bytes` as one unit: one TCP segment (no delay), one TLS record, one
    /// WebSocket frame. Write errors are returned, not raised: a client that keeps
    /// writing after the broker closed is a case of its own.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match &mut self.io {
            Io::Tcp(stream) => stream.write_all(bytes).await,
            Io::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            Io::Ws(socket) => socket
                .send(Message::Binary(Bytes::copy_from_slice(bytes)))
                .await
                .map_err(std::io::Error::other),
        }
    }

    /// Sends `packets` back to back in a single write, without waiting for anything.
    pub async fn send(&mut self, packets: &[Packet]) {
        let bytes = bytes_of(self.version, packets);
        self.write(&bytes).await.unwrap();
    }

    /// Sends `packets` `chunk` bytes per write, pausing between writes so that each
    /// arrives on its own (a segment boundary inside a packet, a packet spanning
    /// WebSocket frames).
    pub async fn send_split(&mut self, packets: &[Packet], chunk: usize) {
        let bytes = bytes_of(self.version, packets);
        for piece in bytes.chunks(chunk) {
            self.write(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Reads more bytes; `false` when the connection ended (closed or reset).
    async fn fill(&mut self) -> bool {
        self.read_more().await == Ok(true)
    }

    /// Reads more bytes: `Ok(true)` if some came, `Ok(false)` at an orderly close
    /// (FIN; TLS close_notify; a WebSocket Close frame), `Err` on a reset or error.
    async fn read_more(&mut self) -> Result<bool, String> {
        let read = match &mut self.io {
            Io::Tcp(stream) => stream.read_buf(&mut self.buf).await,
            Io::Tls(stream) => stream.read_buf(&mut self.buf).await,
            Io::Ws(socket) => loop {
                match socket.next().await {
                    Some(Ok(Message::Binary(data))) => {
                        self.buf.extend_from_slice(&data);
                        return Ok(true);
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Text(_))) => panic!("the broker sent a text frame"),
                    Some(Ok(Message::Close(_))) => return Ok(false),
                    Some(Err(error)) => return Err(error.to_string()),
                    None => return Err("closed without a Close frame".into()),
                }
            },
        };
        read.map(|n| n > 0).map_err(|error| error.to_string())
    }

    /// Every packet until the broker closes, and how it closed: `Ok` for an orderly
    /// close, `Err` for a reset (the reason a client then never reads).
    pub async fn until_closed_cleanly(&mut self) -> (Vec<Packet>, Result<(), String>) {
        let mut packets = Vec::new();
        let ending = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(packet) = decode(&mut self.buf, self.version, usize::MAX).unwrap() {
                    packets.push(packet);
                    continue;
                }
                match self.read_more().await {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(error) => return Err(error),
                }
            }
        })
        .await
        .expect("the broker did not close the connection");
        (packets, ending)
    }

    /// The next packet, `None` once the broker closed the connection; panics after
    /// [`WAIT`] without either.
    pub async fn recv(&mut self) -> Option<Packet> {
        self.recv_within(WAIT)
            .await
            .unwrap_or_else(|| panic!("{:?}: nothing within {WAIT:?}", self.transport))
    }

    /// The next packet if one comes within `wait`: `Some(None)` if the connection
    /// closed, `None` if nothing happened.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Option<Packet>> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(packet) = decode(&mut self.buf, self.version, usize::MAX).unwrap() {
                    return Some(packet);
                }
                if !self.fill().await {
                    return None;
                }
            }
        })
        .await
        .ok()
    }

    /// Asserts that nothing arrives, and the connection stays open, for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(packet) = self.recv_within(wait).await {
            panic!("{:?}: expected nothing, got {packet:?}", self.transport);
        }
    }

    /// The next packet, which must come.
    pub async fn expect(&mut self) -> Packet {
        let transport = self.transport;
        self.recv()
            .await
            .unwrap_or_else(|| panic!("{transport:?}: connection closed"))
    }

    /// Every packet until the broker closes the connection.
    pub async fn until_closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv().await {
            packets.push(packet);
        }
        packets
    }
}
