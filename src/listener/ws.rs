//! MQTT over WebSocket (MQTT 5.0 §6): the HTTP upgrade on the configured path with
//! the `mqtt` subprotocol, and [`WsStream`], which turns the WebSocket into the
//! byte stream that [`crate::connection::run`] reads, so the connection code is
//! the same for every transport.
//!
//! Packets travel in binary frames; a frame may hold part of a packet or several
//! packets ([MQTT-6.0.0-2]), so frames are just a byte stream here. A text frame
//! closes the connection ([MQTT-6.0.0-1]).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{header, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// Subprotocols we answer to, best first: `mqtt` ([MQTT-6.0.0-4]) and the name
/// some MQTT 3.1 clients still offer.
const SUBPROTOCOLS: &[&str] = &["mqtt", "mqttv3.1"];

/// Runs the server side of the WebSocket upgrade. A request for another path gets
/// 404. A client that offers no MQTT subprotocol is still served, without one
/// (browsers' libraries differ; the MQTT bytes that follow are what matter).
/// Not cancel-safe; the caller bounds it with a timeout.
pub async fn accept<S>(stream: S, path: &str, max_message_size: usize) -> io::Result<WsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    #[allow(clippy::result_large_err)] // The signature is tungstenite's callback type.
    let upgrade = |request: &Request, response: Response| upgrade(path, request, response);
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size));
    let inner = tokio_tungstenite::accept_hdr_async_with_config(stream, upgrade, Some(config))
        .await
        .map_err(into_io)?;
    Ok(WsStream {
        inner,
        read: Bytes::new(),
    })
}

/// Checks the upgrade request and picks the subprotocol.
#[allow(clippy::result_large_err)] // The signature is tungstenite's callback type.
fn upgrade(
    path: &str,
    request: &Request,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if request.uri().path() != path {
        let mut refusal = ErrorResponse::new(Some(format!(
            "no MQTT endpoint at {}",
            request.uri().path()
        )));
        *refusal.status_mut() = StatusCode::NOT_FOUND;
        return Err(refusal);
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let chosen = SUBPROTOCOLS
        .iter()
        .find(|name| offered.iter().any(|offer| offer.eq_ignore_ascii_case(name)));
    if let Some(chosen) = chosen {
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(chosen),
        );
    }
    Ok(response)
}

/// A WebSocket connection as a byte stream: each write becomes one binary frame,
/// and reads return the payload of binary frames in order.
#[derive(Debug)]
pub struct WsStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary frame.
    read: Bytes,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.read.is_empty() {
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.read = data,
                // A close frame, or the socket ended: end of stream.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "MQTT over WebSocket uses binary frames",
                    )))
                }
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Err(error)) => return Poll::Ready(Err(into_io(error))),
            }
        }
        let count = this.read.len().min(buf.remaining());
        if let Some(chunk) = this.read.get(..count) {
            buf.put_slice(chunk);
        }
        this.read.advance(count);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let inner = &mut self.get_mut().inner;
        ready!(Pin::new(&mut *inner).poll_ready(cx)).map_err(into_io)?;
        let frame = Message::Binary(Bytes::copy_from_slice(buf));
        Pin::new(inner).start_send(frame).map_err(into_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner)
            .poll_flush(cx)
            .map_err(into_io)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().inner).poll_close(cx)) {
            Ok(()) | Err(tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(error) => Poll::Ready(Err(into_io(error))),
        }
    }
}

fn into_io(error: tungstenite::Error) -> io::Error {
    match error {
        tungstenite::Error::Io(error) => error,
        error => io::Error::other(error),
    }
}
