//! Who is connected right now, as the admin API shows it: what each client's
//! connection told us at CONNECT (address, listener, username, version, when).
//! Kept beside the registry rather than in it, so that the registry's hot-path
//! slots stay small; written once per connect and once per disconnect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;

use crate::protocol::ClientId;

/// What a connected client told us at CONNECT.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientInfo {
    /// Its address, if the transport knew it.
    pub peer: Option<SocketAddr>,
    /// The listener it came in on (`tcp 127.0.0.1:1883`).
    pub listener: Arc<str>,
    /// The username it acts as (or its certificate's name).
    pub username: Option<String>,
    /// `3.1`, `3.1.1` or `5.0`.
    pub version: &'static str,
    /// When CONNACK was sent.
    pub connected_at: SystemTime,
}

/// The connected clients by client id.
#[derive(Debug, Default)]
pub struct Directory {
    clients: Mutex<HashMap<ClientId, ClientInfo>>,
}

impl Directory {
    /// Records a client that was just accepted (replacing the connection it took over).
    pub fn insert(&self, client_id: ClientId, info: ClientInfo) {
        self.clients.lock().insert(client_id, info);
    }

    /// Forgets a connection that ended, unless a newer connection with the same
    /// client id (a takeover, which may finish first) is what is recorded now.
    pub fn remove(&self, client_id: &ClientId, peer: Option<SocketAddr>) {
        let mut clients = self.clients.lock();
        if clients.get(client_id).is_some_and(|info| info.peer == peer) {
            clients.remove(client_id);
        }
    }

    /// Every connected client.
    pub fn list(&self) -> Vec<(ClientId, ClientInfo)> {
        let clients = self.clients.lock();
        clients
            .iter()
            .map(|(client_id, info)| (client_id.clone(), info.clone()))
            .collect()
    }
}
