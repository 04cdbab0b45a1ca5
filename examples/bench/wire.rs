//! One MQTT client connection: a TCP socket, a read buffer that [`decode`] frames,
//! and a write buffer that collects every packet of one turn for a single write.
//!
//! Both buffers live as long as the connection and are reused: `decode` splits each
//! packet off the read buffer, and once the packet is dropped `reserve` reclaims the
//! space, so the steady state allocates nothing per message.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::BytesMut;
use bytestring::ByteString;
use rookery::protocol::{
    decode, encode, ConnAck, Connect, Disconnect, Packet, Properties, ProtocolVersion,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Far above anything a benchmark broker sends us; guards against garbage only.
const MAX_PACKET_SIZE: usize = 1 << 20;
/// How long a broker may take to answer CONNECT or SUBSCRIBE.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected, CONNACKed MQTT client socket.
pub struct Conn {
    stream: TcpStream,
    read: BytesMut,
    write: BytesMut,
    /// Free space made in the read buffer before each read: large for traffic, so
    /// one read takes many packets; small for idle connections.
    read_chunk: usize,
    version: ProtocolVersion,
}

impl Conn {
    /// Opens a clean session. In v5 it announces the largest Receive Maximum, so the
    /// broker's in-flight window towards us is its own limit, as in 3.1.1.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        read_chunk: usize,
    ) -> anyhow::Result<(Conn, ConnAck)> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            read: BytesMut::new(),
            write: BytesMut::with_capacity(256),
            read_chunk,
            version,
        };
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.receive_maximum = Some(u16::MAX);
        }
        conn.queue(&Packet::Connect(Box::new(Connect {
            version,
            clean_start: true,
            // Long enough for any run: the generator sends no PINGREQ.
            keep_alive: 3600,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties,
        })));
        conn.flush().await?;
        let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv())
            .await
            .context("no CONNACK")??;
        let Packet::ConnAck(connack) = reply else {
            bail!("expected CONNACK, got {}", reply.name());
        };
        if connack.code.0 != 0 {
            bail!("CONNACK refused: reason code {:#04x}", connack.code.0);
        }
        Ok((conn, connack))
    }

    /// Appends `packet` to the write buffer; nothing is sent until [`Conn::flush`].
    pub fn queue(&mut self, packet: &Packet) {
        encode(packet, self.version, &mut self.write);
    }

    /// The write buffer, for patching the packet just queued.
    pub fn write_buffer(&mut self) -> &mut BytesMut {
        &mut self.write
    }

    /// Bytes queued and not yet flushed.
    pub fn queued_len(&self) -> usize {
        self.write.len()
    }

    /// Sends everything queued in one write. Not cancel-safe: never use it in `select!`.
    pub async fn flush(&mut self) -> anyhow::Result<()> {
        if !self.write.is_empty() {
            self.stream.write_all(&self.write).await?;
            self.write.clear();
        }
        Ok(())
    }

    /// Takes the next complete packet out of the read buffer, if there is one.
    pub fn next_packet(&mut self) -> anyhow::Result<Option<Packet>> {
        Ok(decode(&mut self.read, self.version, MAX_PACKET_SIZE)?)
    }

    /// Waits for more bytes from the broker. Cancel-safe (a read either completes
    /// or leaves the buffer untouched), so it can sit in `select!`.
    pub async fn read_more(&mut self) -> anyhow::Result<()> {
        self.read.reserve(self.read_chunk);
        if self.stream.read_buf(&mut self.read).await? == 0 {
            bail!("broker closed the connection");
        }
        Ok(())
    }

    /// Reads whatever the broker has already sent, without waiting.
    pub fn try_read_more(&mut self) -> anyhow::Result<()> {
        self.read.reserve(self.read_chunk);
        match self.stream.try_read_buf(&mut self.read) {
            Ok(0) => bail!("broker closed the connection"),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The next packet, reading as needed.
    pub async fn recv(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(packet) = self.next_packet()? {
                return Ok(packet);
            }
            self.read_more().await?;
        }
    }

    /// Sends DISCONNECT and waits (briefly) for the broker to close first, so the
    /// TIME_WAIT socket stays on the broker's side and a run of many connections
    /// does not exhaust the generator's ephemeral ports.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        self.queue(&Packet::Disconnect(Disconnect::default()));
        self.flush().await?;
        let mut sink = [0u8; 256];
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while matches!(self.stream.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
        Ok(())
    }

    /// Drops both buffers: an idle connection then holds only its socket.
    pub fn shrink(&mut self) {
        self.read = BytesMut::new();
        self.write = BytesMut::new();
    }
}
