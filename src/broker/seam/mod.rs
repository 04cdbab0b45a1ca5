//! The seams: the four traits through which the broker core reaches everything
//! outside this process's memory, and nothing else crosses.
//!
//! | seam | what the core asks of it | single node (today) | cluster (issue 10, step 2) |
//! |---|---|---|---|
//! | [`SessionStore`] | claim a client id, save and drop what a session keeps | fjall `sessions`, `subscriptions`; claims in memory | JetStream KV, compare-and-set on the revision |
//! | [`MessageLog`] | append a publish's deliveries, a session's cursor, durability | fjall `queues`, `inflight`, `incoming`; group commit | JetStream streams and consumers |
//! | [`RetainStore`] | put, delete, load, watch retained messages | fjall `retained` | a KV bucket every node watches |
//! | [`Fanout`] | interest in filters; messages to and from other nodes | [`LocalOnly`]: nothing | NATS subjects |
//!
//! The core keeps its own in-memory indexes (router, retained trie, registry)
//! and decides every MQTT question; a seam only keeps or carries what it is
//! given. Methods are synchronous and short except [`MessageLog::wait_durable`]:
//! an append is ordered when it returns and durable once a later wait covers
//! it, which is how fjall's group commit works today and how a stream's
//! asynchronous acknowledgements will.

mod fanout;
mod message_log;
mod retain_store;
mod session_store;

use std::path::PathBuf;
use std::sync::Arc;

pub use fanout::{Fanout, LocalOnly};
pub use message_log::{DeliveryState, MessageLog, PublishWrite, QueuedDelivery, SyncPoint};
pub use retain_store::RetainStore;
pub use session_store::{
    Claim, Claimed, Claiming, Intent, Recovered, RecoveredSession, SessionRecord, SessionStore,
    Standing, StoredSubscription, TakenElsewhere,
};

use crate::protocol::ClientId;

/// The four seams a broker runs on.
#[derive(Debug, Clone)]
pub struct Seams {
    /// Session ownership, records and subscriptions.
    pub sessions: Arc<dyn SessionStore>,
    /// Queued and in-flight deliveries, inbound QoS 2 ids, durability.
    pub log: Arc<dyn MessageLog>,
    /// Retained messages.
    pub retained: Arc<dyn RetainStore>,
    /// Other nodes.
    pub fanout: Arc<dyn Fanout>,
}

/// Why a storage operation failed. The broker treats it as "not stored": it does
/// not acknowledge a message it failed to store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The backend could not write or read.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A stored record does not decode.
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// A stored record has a format version this release does not know.
    #[error("stored record has format version {found}; this release reads up to {known}")]
    UnknownFormat {
        /// The version byte found.
        found: u8,
        /// The newest version this release reads.
        known: u8,
    },
    /// Another process (a second rookery) holds the data directory's lock.
    #[error(
        "data directory {} is in use by another rookery process",
        crate::config::shown(dir)
    )]
    InUse {
        /// The data directory, as configured.
        dir: PathBuf,
    },
    /// The data directory could not be created or opened.
    #[error("{}", data_dir_error(dir, source))]
    DataDir {
        /// The data directory, as configured.
        dir: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The data dir was written by a newer release; it is left untouched.
    #[error("{dir}: written by a newer rookery (data format {found}, this release reads up to {known}); upgrade, or point storage.dir elsewhere")]
    NewerDataDir {
        /// The data directory.
        dir: PathBuf,
        /// Its format version.
        found: u8,
        /// The newest format this release reads.
        known: u8,
    },
    /// A write carried a claim on a session that a newer claim has replaced: the
    /// writer no longer owns the session, and its write would undo the owner's.
    #[error("session {client_id} is owned by a newer connection (claim {stale} < {current})")]
    Fenced {
        /// The session.
        client_id: ClientId,
        /// The epoch of the writer's claim.
        stale: u64,
        /// The epoch of the current claim.
        current: u64,
    },
    /// This cluster node has not reached NATS for longer than its fencing
    /// timeout, so it takes no session (see `cluster::liveness`).
    #[error("this node is cut off from its cluster (NATS has not answered for longer than cluster.fencing_timeout, {}); it takes no session until NATS answers", humantime_serde::re::humantime::format_duration(*fencing_timeout))]
    CutOff {
        /// `[cluster] fencing_timeout`.
        fencing_timeout: std::time::Duration,
    },
}

/// "permission denied writing /x" reads better than "cannot open /x: permission denied".
fn data_dir_error(dir: &std::path::Path, source: &std::io::Error) -> String {
    let dir = crate::config::shown(dir);
    match source.kind() {
        std::io::ErrorKind::PermissionDenied => {
            format!("permission denied writing data directory {dir}")
        }
        _ => format!(
            "cannot open data directory {dir}: {}",
            crate::config::in_words(source)
        ),
    }
}
