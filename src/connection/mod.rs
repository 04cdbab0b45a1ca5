//! One task per client: bytes ⇄ packets, the `select!` loop, and writing what the
//! [`Session`] produced. It makes no MQTT decisions of its own, except the one
//! mapping of errors to a closing DISCONNECT or CONNACK.
//!
//! Reads are batched (one `read_buf` may hold many packets, all handled before the
//! next read, so TCP pushes back on a fast publisher) and writes are coalesced
//! (everything a turn produced goes out together).

mod close;
mod handshake;
mod input;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::sleep_until;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, Instrument};

use crate::broker::arrival::Place;
use crate::broker::message::Delivery;
use crate::broker::seam::{self, SyncPoint};
use crate::broker::{Broker, Control, Link, Mailbox, SessionRequest, Successor};
use crate::connection_log::{self, Ended};
use crate::metrics::Metrics;
use crate::protocol::{Packet, ProtocolVersion, ReasonCode};
use crate::session::{self, connect, Negotiated, Outbox, Peer, Session, SessionExpiry};

/// Deliveries taken from the mailbox per turn before the socket is flushed.
const DELIVERIES_PER_TURN: usize = 256;
/// Smallest and largest read, in bytes (see `Connection::adapt_read_size`).
const MIN_READ: usize = 128;
const MAX_READ: usize = 64 * 1024;
/// How much a connection being taken over reads of what its client already sent
/// (see [`Connection::read_what_arrived`]).
const TAKEOVER_READS: usize = 16;
/// Reads of nothing but PUBLISH and acknowledgements after which a connection no
/// longer orders others' PUBLISH (see [`Connection::note_what_arrived`]).
const STEADY_READS: u8 = 16;
/// Reads taken of what a client sent before it closed (see
/// [`Connection::read_what_was_sent`]): a socket receive buffer's worth.
const CLOSED_READS: usize = 64;
/// How long the last packets to a leaving client (a DISCONNECT with its reason)
/// may take to write: a client that does not read does not hold the task.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a closing connection keeps reading after it shut its side, so that
/// the client reads our DISCONNECT instead of a reset (a lingering close).
const LINGER: Duration = Duration::from_secs(1);
/// [`LINGER`] while the broker shuts down, which waits for every connection: none,
/// only what the client already sent is read before closing.
const SHUTDOWN_LINGER: Duration = Duration::ZERO;

/// Why a connection ended.
enum Ending {
    /// The client closed the socket without DISCONNECT: publish the will.
    Closed,
    /// Reading or writing the socket failed (a reset, a timeout): publish the will.
    SocketError(std::io::Error),
    /// The client sent DISCONNECT.
    Disconnected { publish_will: bool },
    /// The client broke the protocol: tell a v5 client why, publish the will.
    Violation(session::Error),
    /// Another connection took the session over.
    TakenOver(Box<Successor>),
    /// The broker is shutting down.
    Shutdown,
    /// An operator disconnected the client (admin API): v5 0x98, will published.
    Kicked,
    /// This node is cut off from its cluster: v5 0x9C; as at shutdown, a
    /// persistent session keeps its will.
    CutOff,
}

impl Ending {
    /// How the log line tells this ending.
    fn ended<'a>(&'a self, session: &Session) -> Ended<'a> {
        match self {
            Ending::Closed => Ended::Closed,
            Ending::SocketError(error) => Ended::SocketError(error),
            Ending::Disconnected { .. } => Ended::ClientDisconnect(
                session
                    .disconnect_reason()
                    .unwrap_or(ReasonCode::NORMAL_DISCONNECTION),
            ),
            Ending::Violation(error) => Ended::Violation(error),
            Ending::TakenOver(successor) => Ended::TakenOver(successor),
            Ending::Shutdown => Ended::Shutdown,
            Ending::Kicked => Ended::Kicked,
            Ending::CutOff => Ended::CutOff,
        }
    }
}

/// Serves one client until it leaves. Never returns an error: a failing client is
/// logged and disconnected, and nothing it does affects other connections.
pub async fn run<S>(stream: S, broker: Arc<Broker>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connect_deadline = tokio::time::Instant::now() + broker.limits().connect_timeout;
    run_with(stream, Peer::default(), broker, shutdown, connect_deadline).await;
}

/// [`run`] for a client the transport knows something about (a TLS client
/// certificate), with the CONNECT due by `connect_deadline`: the connect timeout
/// counts from the accept, so that the transport's handshakes (TLS, WebSocket)
/// and CONNECT together get one timeout, not one each.
pub async fn run_with<S>(
    stream: S,
    peer: Peer,
    broker: Arc<Broker>,
    shutdown: CancellationToken,
    connect_deadline: tokio::time::Instant,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    broker
        .metrics()
        .connections_current
        .fetch_add(1, Ordering::Relaxed);
    broker
        .metrics()
        .connections_total
        .fetch_add(1, Ordering::Relaxed);
    let (place, place_waker) = Place::new(broker.arrivals().clone());
    let mut connection = Connection {
        stream,
        place,
        place_waker,
        steady_reads: 0,
        is_routing_input: false,
        may_wait_for_cluster: false,
        has_peers: broker.has_peers(),
        read_buf: BytesMut::new(),
        read_size: MIN_READ * 2,
        out: Outbox::new(ProtocolVersion::V3_1_1),
        broker: broker.clone(),
        peer,
        durable: SyncPoint::default(),
        connect_deadline,
        written_at: Instant::now(),
    };
    let span = info_span!("connection", client_id = tracing::field::Empty);
    connection.serve(shutdown).instrument(span).await;
    connection.place.leave();
    broker
        .metrics()
        .connections_current
        .fetch_sub(1, Ordering::Relaxed);
}

struct Connection<S> {
    stream: S,
    /// This connection's place in the arrival order, and the waker that keeps it.
    place: Arc<Place>,
    place_waker: Waker,
    /// Reads in a row that held only PUBLISH, acknowledgements and PINGREQ, up to
    /// [`STEADY_READS`]; see [`Connection::note_what_arrived`].
    steady_reads: u8,
    /// Whether the packets handled since the last note could change routing.
    is_routing_input: bool,
    /// Whether the client has sent a PUBLISH on a cluster node: only such a
    /// connection waits while the cluster's backlog is full (see
    /// [`crate::broker::seam::Fanout::backlogged`]). Never set on a single node.
    may_wait_for_cluster: bool,
    /// The broker has other nodes (read once: the fanout does not change).
    has_peers: bool,
    read_buf: BytesMut,
    read_size: usize,
    out: Outbox,
    broker: Arc<Broker>,
    peer: Peer,
    /// Storage is known durable up to here (see [`Connection::flush`]).
    durable: SyncPoint,
    /// When a client that has not sent a whole CONNECT is cut.
    connect_deadline: tokio::time::Instant,
    /// When the client last took bytes we wrote (see
    /// [`Connection::keep_alive_while_writing`]).
    written_at: Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn serve(&mut self, shutdown: CancellationToken) {
        // A client still to send CONNECT has nothing to lose: at shutdown, close it now.
        let accepted = tokio::select! {
            accepted = self.accept_connect() => accepted,
            () = shutdown.cancelled() => None,
        };
        let Some(negotiated) = accepted else {
            return;
        };
        tracing::Span::current().record("client_id", negotiated.client_id.as_str());
        let mailbox = Arc::new(Mailbox::default());
        let connection_id = self.broker.next_connection_id();
        let link = Link {
            connection_id,
            mailbox: mailbox.clone(),
            is_persistent: negotiated.session_expiry.is_persistent(),
        };
        let successor = Successor {
            peer: self.peer.addr,
            listener: self.peer.listener.clone(),
        };
        let attached = match self
            .broker
            .connect(session_request(&negotiated, successor), link)
            .await
        {
            Ok(attached) => attached,
            Err(error) => {
                match error {
                    // Said once by the cluster, not once per client.
                    seam::Error::CutOff { .. } => tracing::debug!(%error, "refusing"),
                    _ => tracing::error!(%error, "could not take the session; refusing"),
                }
                connection_log::refused(
                    &self.broker,
                    &self.peer,
                    None,
                    ReasonCode::SERVER_UNAVAILABLE,
                );
                self.refuse(negotiated.version, ReasonCode::SERVER_UNAVAILABLE)
                    .await;
                return;
            }
        };
        let session_present = attached.session_present;
        let now = Instant::now();
        let mut session = Session::new(&negotiated, &attached, &self.broker, now);
        self.out.send(&Packet::ConnAck(connect::connack(
            &negotiated,
            session_present,
            self.broker.limits(),
        )));
        connection_log::connected(&self.broker, &self.peer, &negotiated, session_present);
        let resumed = if session_present {
            session.resume(&self.broker, now, &mut self.out)
        } else {
            Ok(())
        };
        // [MQTT-3.1.4-5] packets the client sent right behind CONNECT, without
        // waiting for CONNACK, are already in the read buffer: they go first.
        let ending = match resumed.map(|()| self.handle_packets(&mut session)) {
            Ok(None) => self.run_session(&mut session, &mailbox, &shutdown).await,
            Ok(Some(ending)) => ending,
            Err(error) => Ending::Violation(error),
        };
        mailbox.close();
        self.finish(session, connection_id, ending).await;
    }

    async fn run_session(
        &mut self,
        session: &mut Session,
        mailbox: &Mailbox,
        shutdown: &CancellationToken,
    ) -> Ending {
        let keep_alive = sleep_until(session.next_deadline(Instant::now()).into());
        tokio::pin!(keep_alive);
        let mut batch = Vec::new();
        loop {
            match mailbox.take_control() {
                Some(Control::TakeOver(successor)) => {
                    return self.read_what_arrived(session, successor)
                }
                Some(Control::Kick) => return Ending::Kicked,
                Some(Control::CutOff) => return Ending::CutOff,
                None => {}
            }
            if let Some(ending) = self.deliver(session, mailbox, &mut batch) {
                return ending;
            }
            // A client that does not read must not keep a takeover waiting: the
            // write gives way to a control request (it is cancel-safe, see `flush`).
            tokio::select! {
                biased;
                written = self.flush_session(session) => if let Err(error) = written {
                    debug!(%error, "write failed");
                    return self.read_what_was_sent(session, error);
                },
                () = mailbox.control_requested() => continue,
                // A write to a peer that vanished without a FIN blocks until TCP gives
                // up, many minutes later: keep-alive counts during writes too.
                () = &mut keep_alive => match self.keep_alive_while_writing(session) {
                    Ok(deadline) => {
                        keep_alive.as_mut().reset(deadline.into());
                        continue;
                    }
                    Err(error) => return Ending::Violation(error),
                },
            }
            // More deliveries are ready for the window: look at the socket, then loop.
            let has_work = session.can_send() && mailbox.has_deliveries();
            // A publisher the cluster cannot keep up with is not read (deliveries to
            // it go on), nor held to its keep-alive, whose PINGREQ waits unread too.
            let mut backlog = match self.may_wait_for_cluster {
                true => self.broker.backlogged(),
                false => None,
            };
            let is_reading = backlog.is_none();
            self.read_buf.reserve(self.read_size);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Ending::Shutdown,
                () = until_room(&mut backlog), if !is_reading => {}
                read = input::read_in_order(&mut self.stream, &mut self.read_buf, &self.place, &self.place_waker), if is_reading => match read {
                    Ok(0) => return Ending::Closed,
                    Err(error) => return Ending::SocketError(error),
                    Ok(n) => if let Some(ending) = self.on_read(n, session).await {
                        return ending;
                    },
                },
                () = std::future::ready(()), if has_work => {}
                () = mailbox.wait(), if !has_work => {}
                () = &mut keep_alive, if is_reading => {
                    let now = Instant::now();
                    if let Err(error) = session.on_tick(now) {
                        return Ending::Violation(error);
                    }
                    // Packets since the timer was set moved the deadline: re-arm once
                    // per keep-alive period instead of once per packet.
                    keep_alive.as_mut().reset(session.next_deadline(now).into());
                }
            }
        }
    }

    /// The keep-alive deadline passed while a write was blocked, when nothing the
    /// client sent could be read. A client still taking what we write is slow, not
    /// gone: it gets 1.5 × its keep-alive from when it last took some. One that
    /// neither sends nor takes has vanished ([MQTT-3.1.2-24] in 3.1.1,
    /// [MQTT-3.1.2-22] in 5.0). Returns when to look again.
    fn keep_alive_while_writing(&self, session: &mut Session) -> Result<Instant, session::Error> {
        let now = Instant::now();
        match session.on_tick(now) {
            Ok(()) => Ok(session.next_deadline(now)),
            Err(error) => match session.keep_alive_grace() {
                Some(grace) if now < self.written_at + grace => Ok(self.written_at + grace),
                _ => Err(error),
            },
        }
    }

    /// Takes a batch of deliveries from the mailbox while the in-flight window has room.
    fn deliver(
        &mut self,
        session: &mut Session,
        mailbox: &Mailbox,
        batch: &mut Vec<Delivery>,
    ) -> Option<Ending> {
        if !session.can_send() {
            return None;
        }
        mailbox.take(DELIVERIES_PER_TURN, batch);
        let now = Instant::now();
        for delivery in batch.drain(..) {
            if let Err(error) = session.on_delivery(delivery, &self.broker, now, &mut self.out) {
                return Some(Ending::Violation(error));
            }
        }
        None
    }

    /// Counts what the session sent, then writes it.
    async fn flush_session(&mut self, session: &mut Session) -> std::io::Result<()> {
        // A SUBACK leaves once other nodes route to the new subscription.
        // Cancel-safe: the flag is cleared only once the wait is over.
        if session.has_new_interest() {
            self.broker.interest_settled().await;
            session.interest_settled();
        }
        let metrics = self.broker.metrics();
        Metrics::add(&metrics.messages_sent, session.take_sent_count());
        session.report_in_flight();
        self.flush().await
    }

    /// Counts and writes everything the outbox holds. Cancel-safe: what was
    /// written leaves the outbox as it goes, so a cancelled flush resumes where it
    /// stopped.
    async fn flush(&mut self) -> std::io::Result<()> {
        self.out.report_counts(self.broker.metrics());
        if self.out.is_empty() {
            return Ok(());
        }
        // With fsync durability, acknowledgements leave only once what they
        // acknowledge is on disk; concurrent connections share the fsync.
        let point = self.broker.sync_point();
        if point > self.durable {
            self.broker
                .wait_durable(point)
                .await
                .map_err(std::io::Error::other)?;
            self.durable = point;
        }
        let buffer = self.out.buffer();
        while !buffer.is_empty() {
            match self.stream.write(buffer).await? {
                0 => return Err(std::io::ErrorKind::WriteZero.into()),
                written => {
                    buffer.advance(written);
                    self.written_at = Instant::now();
                }
            }
        }
        buffer.clear();
        self.stream.flush().await
    }
}

/// The session an accepted CONNECT asks the broker for.
fn session_request(negotiated: &Negotiated, connection: Successor) -> SessionRequest<'_> {
    let expiry = match negotiated.session_expiry {
        SessionExpiry::WithConnection => Some(Duration::ZERO),
        SessionExpiry::After(duration) => Some(duration),
        SessionExpiry::Never => None,
    };
    SessionRequest {
        client_id: &negotiated.client_id,
        clean_start: negotiated.clean_start,
        expiry,
        will: negotiated.will.as_deref(),
        connection,
    }
}

/// Completes when the cluster's backlog has room again; never without a wait.
async fn until_room(
    backlog: &mut Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
) {
    match backlog {
        Some(wait) => wait.await,
        None => std::future::pending().await,
    }
}
