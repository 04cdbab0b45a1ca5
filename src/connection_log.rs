//! The operator's log of client events: one INFO line when a client connects, is
//! refused or leaves (and why), and rate-limited lines for ACL denials — the lines
//! mosquitto writes, with the fields as structured `tracing` fields so that the JSON
//! format can be searched by `client_id`, `peer` or `reason`.
//!
//! The connection task only reports *that* something happened (one call per event);
//! what goes into the line is decided here, so the line's shape is in one place.
//! `[log] connection_messages = false` (mosquitto's `connection_messages`) silences
//! connect, refuse and disconnect lines; ACL denials are logged regardless. The
//! same two events keep the broker's [`Directory`](crate::broker::directory::Directory)
//! of connected clients, which the admin API lists.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tracing::info;

use crate::auth::Action;
use crate::broker::directory::ClientInfo;
use crate::broker::Broker;
use crate::broker::Successor;
use crate::metrics::Metrics;
use crate::protocol::{self, ClientId, Connect, ProtocolVersion, ReasonCode};
use crate::session::{self, Negotiated, Peer};

/// Why a connection ended, as its log line says.
#[derive(Debug)]
pub enum Ended<'a> {
    /// The client sent DISCONNECT with this reason code.
    ClientDisconnect(ReasonCode),
    /// The client closed the socket without sending DISCONNECT.
    Closed,
    /// Reading or writing the socket failed (a reset, a timeout).
    SocketError(&'a std::io::Error),
    /// The client broke the protocol (keep-alive timeout included) or storage failed.
    Violation(&'a session::Error),
    /// Another connection with the same client id took the session over.
    TakenOver(&'a Successor),
    /// The broker is shutting down.
    Shutdown,
    /// An operator disconnected the client through the admin API.
    Kicked,
    /// This node is cut off from its cluster.
    CutOff,
}

impl Ended<'_> {
    /// The `reason` field: a few words an operator can grep for.
    fn reason(&self) -> String {
        match self {
            Ended::ClientDisconnect(_) => "client sent DISCONNECT".to_string(),
            Ended::Closed => "closed by the client without DISCONNECT".to_string(),
            Ended::SocketError(error) => format!("socket error: {error}"),
            Ended::Violation(session::Error::Protocol(protocol::Error::KeepAliveTimeout)) => {
                "keep-alive timeout".to_string()
            }
            Ended::Violation(session::Error::Storage(error)) => {
                format!("storage error: {error}")
            }
            Ended::Violation(error) => format!("protocol error: {error}"),
            Ended::TakenOver(successor) => format!(
                "session taken over by a new connection from {} on {}",
                Addr(successor.peer),
                successor.listener
            ),
            Ended::Shutdown => "server shutting down".to_string(),
            Ended::Kicked => "kicked by an administrator".to_string(),
            Ended::CutOff => "this node is cut off from its cluster".to_string(),
        }
    }

    /// The reason code sent or received, where there is one.
    fn code(&self) -> Option<ReasonCode> {
        match self {
            Ended::ClientDisconnect(code) => Some(*code),
            Ended::Closed | Ended::SocketError(_) => None,
            Ended::Violation(error) => Some(error.reason_code()),
            Ended::TakenOver(_) => Some(ReasonCode::SESSION_TAKEN_OVER),
            Ended::Shutdown => Some(ReasonCode::SERVER_SHUTTING_DOWN),
            Ended::Kicked => Some(ReasonCode::ADMINISTRATIVE_ACTION),
            Ended::CutOff => Some(ReasonCode::USE_ANOTHER_SERVER),
        }
    }
}

/// A CONNECT was accepted and CONNACK sent.
pub fn connected(broker: &Broker, peer: &Peer, negotiated: &Negotiated, session_present: bool) {
    let info = ClientInfo {
        peer: peer.addr,
        listener: peer.listener.clone(),
        username: negotiated.username.clone(),
        version: version(negotiated.version),
        connected_at: SystemTime::now(),
    };
    broker
        .directory()
        .insert(negotiated.client_id.clone(), info);
    if !broker.is_logging_connections() {
        return;
    }
    info!(
        peer = %Addr(peer.addr),
        listener = %peer.listener,
        client_id = %negotiated.client_id,
        version = version(negotiated.version),
        username = negotiated.username.as_deref().unwrap_or(""),
        certificate = peer.certificate_name.as_deref().unwrap_or(""),
        clean_start = negotiated.clean_start,
        keep_alive = negotiated.keep_alive.map_or(0, |keep_alive| keep_alive.as_secs()),
        session_present,
        "client connected"
    );
}

/// A CONNECT was refused with CONNACK `code`. `connect` is `None` when the CONNECT
/// could not be read (an unsupported protocol version).
pub fn refused(broker: &Broker, peer: &Peer, connect: Option<&Connect>, code: ReasonCode) {
    let metrics = broker.metrics();
    match code {
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => Metrics::add(&metrics.refused_bad_credentials, 1),
        ReasonCode::NOT_AUTHORIZED => Metrics::add(&metrics.refused_not_authorized, 1),
        _ => {}
    }
    if !broker.is_logging_connections() {
        return;
    }
    info!(
        peer = %Addr(peer.addr),
        listener = %peer.listener,
        client_id = connect.map_or("", |connect| &*connect.client_id),
        version = connect.map_or("", |connect| version(connect.version)),
        username = connect.and_then(|c| c.username.as_deref()).unwrap_or(""),
        certificate = peer.certificate_name.as_deref().unwrap_or(""),
        reason = refusal(code),
        code = %Code(code),
        "client refused"
    );
}

/// A connection was closed at accept because the connection limit was reached.
pub fn refused_busy(broker: &Broker, addr: SocketAddr, listener: &str) {
    if !broker.is_logging_connections() {
        return;
    }
    info!(
        peer = %addr,
        listener,
        reason = refusal(ReasonCode::SERVER_BUSY),
        "client refused"
    );
}

/// A connection that had been accepted ended.
pub fn disconnected(broker: &Broker, peer: &Peer, client_id: &ClientId, ended: &Ended) {
    broker.directory().remove(client_id, peer.addr);
    if !broker.is_logging_connections() {
        return;
    }
    info!(
        peer = %Addr(peer.addr),
        listener = %peer.listener,
        client_id = %client_id,
        reason = ended.reason(),
        code = %ended.code().map_or_else(String::new, |code| Code(code).to_string()),
        "client disconnected"
    );
}

/// How many denials a client may log in one window, and the window: a client
/// retrying a forbidden publish in a loop writes at most this many lines.
const DENIALS_PER_WINDOW: u32 = 5;
const DENIAL_WINDOW: Duration = Duration::from_secs(10);

/// One client's ACL-denial lines, rate-limited: the first 5 denials of each 10 s
/// window are logged, the rest counted, and the count reported on the next line
/// that is logged.
#[derive(Debug, Default)]
pub struct Denials {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Denials {
    /// Logs (or counts) one ACL denial.
    pub fn deny(&mut self, client_id: &ClientId, action: Action, topic: &str, now: Instant) {
        let is_new_window = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= DENIAL_WINDOW);
        if is_new_window {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged >= DENIALS_PER_WINDOW {
            self.suppressed += 1;
            return;
        }
        self.logged += 1;
        let suppressed = std::mem::take(&mut self.suppressed);
        info!(
            client_id = %client_id,
            action = action_name(action),
            topic,
            suppressed,
            "denied by the ACL"
        );
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Publish => "publish",
        Action::Subscribe => "subscribe",
        Action::Receive => "receive",
    }
}

/// The words for a refusing CONNACK code (3.x codes are mapped from these).
fn refusal(code: ReasonCode) -> &'static str {
    match code {
        ReasonCode::BAD_USER_NAME_OR_PASSWORD => "bad credentials",
        ReasonCode::NOT_AUTHORIZED => "not authorised",
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID => "client id rejected",
        ReasonCode::SERVER_BUSY => "server busy",
        ReasonCode::SERVER_UNAVAILABLE => "server unavailable",
        ReasonCode::UNSUPPORTED_PROTOCOL_VERSION => "unsupported protocol version",
        ReasonCode::PROTOCOL_ERROR | ReasonCode::MALFORMED_PACKET => "protocol error",
        ReasonCode::PACKET_TOO_LARGE => "packet too large",
        _ => "refused",
    }
}

fn version(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

/// A reason code as mosquitto and the spec write it: `0x8D`.
struct Code(ReasonCode);

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:02X}", self.0 .0)
    }
}

/// A peer address, or `-` for a connection the transport did not describe
/// (an embedder calling [`crate::connection::run`] directly).
struct Addr(Option<SocketAddr>);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(addr) => addr.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_are_limited_per_window_and_the_rest_counted() {
        let mut denials = Denials::default();
        let client_id = ClientId::new("c");
        let start = Instant::now();
        for _ in 0..20 {
            denials.deny(&client_id, Action::Publish, "t", start);
        }
        assert_eq!(denials.logged, DENIALS_PER_WINDOW);
        assert_eq!(denials.suppressed, 15);
        // The next window logs again, and reports what was held back.
        denials.deny(&client_id, Action::Publish, "t", start + DENIAL_WINDOW);
        assert_eq!(denials.logged, 1);
        assert_eq!(denials.suppressed, 0);
    }

    #[test]
    fn reason_codes_are_written_as_hex() {
        assert_eq!(Code(ReasonCode::KEEP_ALIVE_TIMEOUT).to_string(), "0x8D");
        assert_eq!(Code(ReasonCode::SUCCESS).to_string(), "0x00");
    }
}
