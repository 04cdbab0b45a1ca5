//! What a listener speaks — TCP, TLS, WebSocket, or WebSocket over TLS — and the
//! handshakes that come before MQTT.
//!
//! Each handshake runs in the client's own task, so a slow or failing handshake
//! never reaches CONNECT handling and never holds up the accept loop or another
//! client. The connect timeout counts from the accept and covers the handshakes
//! and CONNECT together: a peer that spends it on a slow TLS handshake or
//! WebSocket upgrade gets no fresh one for CONNECT (issue 12).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::tls::{self, TlsListener};
use super::ws;
use crate::broker::Broker;
use crate::config::ListenerConfig;
use crate::connection;
use crate::metrics::Metrics;
use crate::session::Peer;

/// The layers between the socket and MQTT for one listener.
#[derive(Debug)]
pub(crate) struct Transport {
    /// Present for `tls` and `wss`.
    pub(crate) tls: Option<Arc<TlsListener>>,
    /// The HTTP path, for `ws` and `wss`.
    websocket_path: Option<String>,
    /// `identity_as_username`.
    is_name_username: bool,
    /// How log lines name this listener: `tcp 127.0.0.1:1883`.
    pub(crate) name: Arc<str>,
}

impl Transport {
    /// Builds the transport of `config`, reading its TLS files.
    pub(crate) fn load(config: &ListenerConfig, addr: SocketAddr) -> Result<Transport, tls::Error> {
        let tls = match config.kind.is_tls() {
            true => Some(Arc::new(TlsListener::load(config)?)),
            false => None,
        };
        Ok(Transport {
            tls,
            websocket_path: config.kind.is_websocket().then(|| config.path.clone()),
            is_name_username: config.identity_as_username,
            name: format!("{} {addr}", config.kind.name()).into(),
        })
    }

    /// What the transport knows of a client before any handshake.
    fn peer(&self, addr: SocketAddr) -> Peer {
        Peer {
            addr: Some(addr),
            listener: self.name.clone(),
            ..Peer::default()
        }
    }

    /// Runs the handshakes, then the MQTT connection, to the end.
    pub(crate) async fn serve(
        &self,
        stream: TcpStream,
        addr: SocketAddr,
        broker: Arc<Broker>,
        shutdown: CancellationToken,
    ) {
        // Each transport's future is boxed, so a plain TCP connection's task is only
        // as large as the MQTT connection itself, not the largest (WSS) stack.
        let stream = Counted {
            stream,
            broker: broker.clone(),
        };
        let deadline = Deadline(tokio::time::Instant::now() + broker.limits().connect_timeout);
        let Some(tls) = &self.tls else {
            if self.websocket_path.is_none() {
                let peer = self.peer(addr);
                return connection::run_with(stream, peer, broker, shutdown, deadline.0).await;
            }
            let websocket =
                self.serve_mqtt(stream, addr, self.peer(addr), broker, shutdown, deadline);
            return Box::pin(websocket).await;
        };
        Box::pin(self.serve_tls(tls, stream, addr, broker, shutdown, deadline)).await;
    }

    /// Runs the TLS handshake, then serves MQTT (over WebSocket for `wss`).
    async fn serve_tls<S>(
        &self,
        tls: &TlsListener,
        stream: S,
        addr: SocketAddr,
        broker: Arc<Broker>,
        shutdown: CancellationToken,
        deadline: Deadline,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(accepted) = handshake(tls.accept(stream), deadline, &shutdown).await else {
            debug!(%addr, "TLS handshake timed out");
            return;
        };
        let (stream, certificate_name) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                info!(%addr, %error, "TLS handshake failed");
                return;
            }
        };
        let peer = Peer {
            certificate_name,
            is_name_username: self.is_name_username,
            ..self.peer(addr)
        };
        self.serve_mqtt(stream, addr, peer, broker, shutdown, deadline)
            .await;
    }

    /// Upgrades to WebSocket if this is a `ws`/`wss` listener, then serves MQTT.
    async fn serve_mqtt<S>(
        &self,
        stream: S,
        addr: SocketAddr,
        peer: Peer,
        broker: Arc<Broker>,
        shutdown: CancellationToken,
        deadline: Deadline,
    ) where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(path) = &self.websocket_path else {
            return connection::run_with(stream, peer, broker, shutdown, deadline.0).await;
        };
        let max_message_size = broker.limits().max_packet_size as usize;
        let upgrade = ws::accept(stream, path, max_message_size);
        match handshake(upgrade, deadline, &shutdown).await {
            Some(Ok(stream)) => {
                connection::run_with(stream, peer, broker, shutdown, deadline.0).await;
            }
            Some(Err(error)) => info!(%addr, %error, "WebSocket upgrade failed"),
            None => debug!(%addr, "WebSocket upgrade timed out"),
        }
    }
}

/// The client's socket, counting bytes in and out for `$SYS/broker/bytes/…`: one
/// relaxed add per read or write call, which the connection already batches.
struct Counted<S> {
    stream: S,
    broker: Arc<Broker>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        Metrics::add(&self.broker.metrics().bytes_received, read as u64);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            Metrics::add(&self.broker.metrics().bytes_sent, *written as u64);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// When the connect timeout, counted from the accept, runs out.
#[derive(Debug, Clone, Copy)]
struct Deadline(tokio::time::Instant);

/// Runs a handshake until the connect deadline; `None` if it passed or the
/// broker is shutting down.
async fn handshake<T>(
    handshake: impl Future<Output = T>,
    deadline: Deadline,
    shutdown: &CancellationToken,
) -> Option<T> {
    tokio::select! {
        done = tokio::time::timeout_at(deadline.0, handshake) => done.ok(),
        () = shutdown.cancelled() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, SessionConfig};
    use crate::storage::Storage;

    /// A plain TCP connection's task must not carry the TLS and WebSocket stacks:
    /// that made every idle client cost ~24 KB instead of ~3 KB.
    #[tokio::test]
    async fn plain_tcp_task_does_not_hold_the_tls_and_websocket_stacks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let transport = Transport::load(&ListenerConfig::default(), addr).unwrap();
        let broker = Arc::new(Broker::new(
            Limits::default(),
            SessionConfig::default(),
            Storage::in_memory(),
        ));
        let task = transport.serve(stream, addr, broker, CancellationToken::new());
        let size = std::mem::size_of_val(&task);
        assert!(size < 4096, "a plain TCP connection task is {size} bytes");
    }
}
