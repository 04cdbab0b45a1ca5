//! The handshake: reading and checking CONNECT, and refusing it with the right
//! CONNACK. Taking the session (over) is the broker's [`crate::Broker::connect`].

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::timeout_at;
use tracing::debug;

use super::{Connection, LINGER};
use crate::connection_log;
use crate::protocol::{self, decode, ConnAck, Packet, ProtocolVersion, ReasonCode};
use crate::session::{access, connect, Negotiated};

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Reads and checks CONNECT, refusing it with the right CONNACK when it fails.
    /// The decoded packet is dropped here: nothing of it outlives the handshake.
    pub(super) async fn accept_connect(&mut self) -> Option<Negotiated> {
        let connect = match timeout_at(self.connect_deadline, self.read_connect()).await {
            Ok(Ok(Some(connect))) => connect,
            Ok(Ok(None)) => return None,
            Ok(Err(error)) => {
                debug!(%error, "refused before CONNECT");
                // [MQTT-3.1.2-2] an unsupported version gets CONNACK 0x01 (3.1.1) or
                // 0x84 (5.0), then close. A level above 5 is a newer client, which
                // reads the v5 CONNACK; anything older gets the 3.1.1 one. Bit 7 is
                // mosquitto's bridge flag (0x84 = a 3.1.1 bridge), not the version.
                if let protocol::Error::UnsupportedProtocolVersion { level } = error {
                    let code = ReasonCode::UNSUPPORTED_PROTOCOL_VERSION;
                    connection_log::refused(&self.broker, &self.peer, None, code);
                    let version = match level & 0x7F {
                        0..=4 => ProtocolVersion::V3_1_1,
                        _ => ProtocolVersion::V5,
                    };
                    self.refuse(version, ReasonCode::UNSUPPORTED_PROTOCOL_VERSION)
                        .await;
                }
                return None;
            }
            Err(_) => {
                debug!("no CONNECT within the connect timeout");
                return None;
            }
        };
        self.out.set_version(connect.version);
        let negotiated = match connect::negotiate(
            &connect,
            self.broker.limits(),
            self.broker.session_config(),
        ) {
            Ok(negotiated) => negotiated,
            Err(reason) => {
                connection_log::refused(&self.broker, &self.peer, Some(&connect), reason);
                self.refuse(connect.version, reason).await;
                return None;
            }
        };
        let authenticator = self.broker.authenticator();
        let negotiated = match access::admit(&connect, negotiated, &self.peer, &authenticator) {
            Ok(negotiated) => negotiated,
            Err(reason) => {
                connection_log::refused(&self.broker, &self.peer, Some(&connect), reason);
                self.refuse(connect.version, reason).await;
                return None;
            }
        };
        if let Some(max) = negotiated.client_max_packet_size {
            self.out
                .set_max_packet_size(usize::try_from(max).unwrap_or(usize::MAX));
            // [MQTT-3.1.2-24] nothing above the client's Maximum Packet Size, not even
            // CONNACK; and without a CONNACK the client is not served ([MQTT-3.2.0-1]).
            let connack = connect::connack(&negotiated, true, self.broker.limits());
            if !self.out.send(&Packet::ConnAck(connack)) {
                debug!(client_id = %negotiated.client_id, max, "CONNACK exceeds the client's Maximum Packet Size; closing");
                return None;
            }
            self.out.discard();
        }
        Some(negotiated)
    }

    /// Reads until a whole CONNECT has arrived. `Ok(None)`: the peer left first.
    async fn read_connect(&mut self) -> Result<Option<Box<protocol::Connect>>, protocol::Error> {
        const CONNECT: u8 = 1;
        let max = self.broker.limits().max_packet_size as usize;
        loop {
            // [MQTT-3.1.0-1] the first packet must be CONNECT: judged by its first
            // byte, not after waiting for whatever length a stray packet claims.
            if self
                .read_buf
                .first()
                .is_some_and(|&first| first >> 4 != CONNECT)
            {
                return Err(protocol::Error::Protocol("first packet is not CONNECT"));
            }
            match decode(&mut self.read_buf, ProtocolVersion::V3_1_1, max)? {
                Some(Packet::Connect(connect)) => {
                    // Read before the session's turns begin: counted on its own.
                    let metrics = self.broker.metrics();
                    metrics.packets_received.count_one(CONNECT);
                    return Ok(Some(connect));
                }
                // [MQTT-3.1.0-1] the first packet must be CONNECT.
                Some(_) => return Err(protocol::Error::Protocol("first packet is not CONNECT")),
                None => {}
            }
            self.read_buf.reserve(self.read_size);
            match self.stream.read_buf(&mut self.read_buf).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => {}
            }
        }
    }

    pub(super) async fn refuse(&mut self, version: ProtocolVersion, code: ReasonCode) {
        self.out.set_version(version);
        self.out.send(&Packet::ConnAck(ConnAck {
            session_present: false,
            code,
            properties: Default::default(),
        }));
        self.close(LINGER).await;
    }
}
