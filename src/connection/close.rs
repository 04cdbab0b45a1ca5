//! Leaving: the session is let go first (a successor may be waiting for it), the
//! will is published, and only then is the client told goodbye, within bounded
//! time, with a lingering close so the goodbye is not lost to a reset.
//!
//! At shutdown a persistent session's will is neither published nor dropped: it
//! stays in the stored record and is settled after the restart (see
//! [`Session::depart_at_shutdown`]).

use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::timeout;
use tracing::debug;

use super::{Connection, Ending, FAREWELL_TIMEOUT, LINGER, MIN_READ, SHUTDOWN_LINGER};
use crate::connection_log;
use crate::protocol::ReasonCode;
use crate::session::Session;

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Lets go of the session first (a successor may be waiting for it), then says
    /// goodbye to the client within bounded time.
    pub(super) async fn finish(
        &mut self,
        mut session: Session,
        connection_id: u64,
        ending: Ending,
    ) {
        let ended = ending.ended(&session);
        connection_log::disconnected(&self.broker, &self.peer, session.client_id(), &ended);
        let now = Instant::now();
        let (departure, will) = match &ending {
            Ending::TakenOver(_) => session.hand_over(now),
            Ending::Closed | Ending::SocketError(_) | Ending::Violation(_) | Ending::Kicked => {
                session.depart(true, now)
            }
            Ending::Disconnected { publish_will } => session.depart(*publish_will, now),
            // The client is expected back, here or on another node.
            Ending::Shutdown | Ending::CutOff => session.depart_at_shutdown(now),
        };
        let client_id = session.client_id().clone();
        self.broker
            .disconnect(&client_id, connection_id, session.claim(), departure, will);
        let linger = match ending {
            Ending::Closed | Ending::SocketError(_) => Duration::ZERO,
            Ending::Disconnected { .. } => LINGER,
            Ending::TakenOver(_) => {
                session.send_disconnect(ReasonCode::SESSION_TAKEN_OVER, &mut self.out);
                LINGER
            }
            Ending::Violation(error) => {
                debug!(%error, "closing the connection");
                session.send_error(&error, &mut self.out);
                LINGER
            }
            Ending::Shutdown => {
                session.send_disconnect(ReasonCode::SERVER_SHUTTING_DOWN, &mut self.out);
                SHUTDOWN_LINGER
            }
            Ending::Kicked => {
                session.send_disconnect(ReasonCode::ADMINISTRATIVE_ACTION, &mut self.out);
                LINGER
            }
            Ending::CutOff => {
                session.send_disconnect(ReasonCode::USE_ANOTHER_SERVER, &mut self.out);
                LINGER
            }
        };
        self.close(linger).await;
    }

    /// Writes what is left, shuts our side, then reads and discards for up to
    /// `linger` until the client closes too: closing a socket with unread input
    /// resets it, and the reset can overtake our DISCONNECT, so the client would
    /// never learn its reason code (a lingering close, as HTTP servers do).
    pub(super) async fn close(&mut self, linger: Duration) {
        let farewell = async {
            self.flush().await?;
            self.stream.shutdown().await
        };
        if !matches!(timeout(FAREWELL_TIMEOUT, farewell).await, Ok(Ok(()))) {
            return;
        }
        // Even with no time to linger, what has already arrived is read: a timeout
        // polls its future once before it looks at the clock.
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            self.read_buf.clear();
            self.read_buf.reserve(MIN_READ * 8);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.read_buf));
            if !matches!(read.await, Ok(Ok(1..))) {
                return;
            }
        }
    }
}
