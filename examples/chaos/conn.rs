//! One raw MQTT connection: a socket, a read buffer [`decode`] frames, and a write
//! buffer that collects a turn's packets for one write. No protocol logic: the
//! clients decide what to send, so they can resend with DUP, PUBREL after a
//! reconnect, and count exactly what was acknowledged.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use rookery::protocol::{
    decode, encode, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion, QoS, Will,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the broker may take to answer CONNECT (recovery of a large data dir
/// happens before it listens, so this is after the banner).
const CONNACK_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Conn {
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
    version: ProtocolVersion,
}

/// The CONNECT of a session that outlives its connection (clean session 0; in v5
/// Clean Start 0 and an expiry), or of one that does not.
pub fn connect_packet(version: ProtocolVersion, client_id: &str, expiry: Option<u32>) -> Connect {
    let mut properties = Properties::default();
    if version.is_v5() {
        properties.session_expiry_interval = expiry;
    }
    Connect {
        version,
        clean_start: expiry.is_none(),
        keep_alive: 0,
        client_id: ByteString::from(client_id),
        will: None,
        username: None,
        password: None,
        properties,
    }
}

/// A QoS 2 will on `will/{client_id}` whose payload names the client.
pub fn will(client_id: &str, delay: Option<u32>) -> Will {
    let properties = Properties {
        will_delay_interval: delay,
        ..Properties::default()
    };
    Will {
        topic: ByteString::from(format!("will/{client_id}")),
        payload: crate::message::will_payload(client_id),
        qos: QoS::ExactlyOnce,
        retain: false,
        properties,
    }
}

impl Conn {
    /// Connects and waits for a successful CONNACK.
    pub async fn open(addr: SocketAddr, connect: Connect) -> anyhow::Result<(Conn, ConnAck)> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            read: BytesMut::with_capacity(64 * 1024),
            write: BytesMut::new(),
            version: connect.version,
        };
        let client_id = connect.client_id.clone();
        conn.queue(&Packet::Connect(Box::new(connect)));
        conn.flush().await?;
        let reply = tokio::time::timeout(CONNACK_TIMEOUT, conn.recv())
            .await
            .with_context(|| format!("{client_id}: no CONNACK"))??;
        let Packet::ConnAck(connack) = reply else {
            bail!("{client_id}: expected CONNACK, got {}", reply.name());
        };
        if connack.code.is_error() {
            bail!("{client_id}: CONNACK refused: {:#04x}", connack.code.0);
        }
        Ok((conn, connack))
    }

    /// Appends `packet` to the write buffer; nothing is sent until [`Conn::flush`].
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.write);
    }

    /// Sends what is queued. Not cancel-safe: keep it out of `select!`.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await?;
            self.write.clear();
        }
        Ok(())
    }

    /// A packet already read, if there is a whole one.
    pub fn next_buffered(&mut self) -> anyhow::Result<Option<Packet>> {
        Ok(decode(&mut self.read, self.version, usize::MAX)?)
    }

    /// The next packet, reading as needed. Cancel-safe: a cancelled read leaves
    /// the buffer as it was.
    pub async fn recv(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(packet) = self.next_buffered()? {
                return Ok(packet);
            }
            self.read.reserve(64 * 1024);
            if self.stream.read_buf(&mut self.read).await? == 0 {
                bail!("connection closed");
            }
        }
    }

    /// DISCONNECT 0x00 (the will is discarded), then waits briefly for the close.
    pub async fn disconnect(self) {
        self.disconnect_confirmed().await;
    }

    /// [`Conn::disconnect`]; returns when the broker closed the connection, if it
    /// did within 2 s.
    pub async fn disconnect_confirmed(mut self) -> Option<Instant> {
        self.queue(&Packet::Disconnect(Disconnect::default()));
        self.flush().await.ok()?;
        tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(1..) = self.stream.read_buf(&mut self.read).await {
                self.read.clear();
            }
            Instant::now()
        })
        .await
        .ok()
    }
}

/// A payload of `len` bytes that starts with `head`.
pub fn padded(head: &[u8], len: usize) -> Bytes {
    let mut payload = BytesMut::with_capacity(len.max(head.len()));
    payload.extend_from_slice(head);
    payload.resize(len.max(head.len()), b'.');
    payload.freeze()
}
