//! Rookery: an MQTT 3.1, 3.1.1 and 5.0 broker.
//!
//! ```text
//! listener (tcp | tls | ws | wss)         accept, connection limit, TLS handshake, WebSocket upgrade
//!   └─ connection task (1 per client)     bytes ⇄ Packet, select! loop, keep-alive, shutdown
//!        └─ Session (sync state machine)  MQTT rules: CONNECT, SUBSCRIBE, PUBLISH, QoS 1/2, will
//!             └─ Broker (Arc, shared)     use cases: connect · disconnect · publish · subscribe
//!                  │                      router (trie + $share) · retained trie · registry (who is where)
//!                  ├─ fan-out ──────────→ this node's clients' mailboxes
//!                  └─ seams               SessionStore · MessageLog · RetainStore · Fanout
//!                       └─ Storage (fjall) + LocalOnly fanout on a single node
//! ```
//!
//! A connection task owns its socket, its [`session::Session`] and its mailbox.
//! Publishing runs inline in the publisher's task: match in the trie, store the
//! deliveries of persistent sessions in one batch, hand each delivery to its
//! subscriber's mailbox, and only then acknowledge the publisher. "Acknowledged"
//! therefore means "stored", and each publisher's order is kept for free.
//!
//! The broker reaches storage and other nodes only through the four traits in
//! [`broker::seam`]; [`storage::Storage`] implements the storage ones for a
//! single node.
//!
//! Start a broker on an already-bound listener (as tests and embedders do):
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = rookery::Server::start(rookery::Config::default(), vec![listener])?;
//! println!("listening on {:?}", server.local_addrs());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
#![warn(clippy::expect_used, missing_docs)]

pub mod auth;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod connection_log;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod session;
pub mod storage;

/// Internals that the fuzz targets in `fuzz/` drive directly. Not a stable API.
#[doc(hidden)]
pub mod fuzzing {
    /// The storage record encoding (`storage::record`), for the `record` target.
    pub mod record {
        pub use crate::storage::record::{
            client_prefix, decode_delivery, decode_retained, decode_session, decode_state,
            decode_subscription, encode_delivery, encode_retained, encode_session, encode_state,
            encode_subscription, key_seq, split_key, Clock,
        };
    }
}

pub use broker::Broker;
pub use config::Config;
pub use server::Server;
