//! [`SessionStore`]: who owns a session, and what a persistent session keeps
//! between connections.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Error;
use crate::broker::message::{StoredWill, WillMessage};
use crate::protocol::{ClientId, SubscriptionOptions};

/// A node's hold on a client id. Every write about the session carries it, and
/// the store refuses one whose epoch a newer claim has passed
/// ([`Error::Fenced`]): a connection (or, in a cluster, a node) that lost the
/// session can no longer undo what its successor wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Claim {
    /// Increases with every claim on the same client id.
    pub epoch: u64,
}

/// What a new connection asks of its session, as far as the claim needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intent {
    /// Clean Start: whatever session there was is discarded ([MQTT-3.1.2-4]).
    pub clean_start: bool,
    /// The session outlives the connection (a session expiry other than 0).
    pub is_persistent: bool,
    /// This node keeps a session for the client id (offline, or held by the
    /// connection being taken over). In a cluster, it is the session to resume
    /// if this node owned it last; otherwise the one another node left wins.
    pub has_local_session: bool,
}

/// A claim taken, and what another node left of the session.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The new claim.
    pub claim: Claim,
    /// A session this claim resumes that this node does not keep (another node
    /// held it last, or this node has lost it since, restarted without its
    /// data), with its subscriptions; `None` if there was none, or the claim
    /// was a Clean Start.
    pub resumed_from_elsewhere: Option<Vec<StoredSubscription>>,
}

/// A claim, taken at once (a single node's claims live in its memory) or once
/// the cluster agrees (a round trip to the session bucket).
pub enum Claiming<'a> {
    /// Taken.
    Ready(Claimed),
    /// Taken when this resolves.
    Pending(Pin<Box<dyn Future<Output = Result<Claimed, Error>> + Send + 'a>>),
}

impl Claiming<'_> {
    /// The claim, waiting for the cluster if it must.
    pub async fn taken(self) -> Result<Claimed, Error> {
        match self {
            Claiming::Ready(claimed) => Ok(claimed),
            Claiming::Pending(pending) => pending.await,
        }
    }
}

/// Another node claimed a session that this node held: its connection here, if
/// any, must go ([MQTT-3.1.4-3]), and what this node kept of it is no longer
/// the session's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenElsewhere {
    /// The session.
    pub client_id: ClientId,
    /// Whether the new owner resumed the session (Clean Start 0), which cancels a
    /// will still waiting for its delay ([MQTT-3.1.3-9]); otherwise the session
    /// ended here, and such a will is due now.
    pub is_resumed: bool,
}

/// Whether this node can prove that it owns the sessions it holds. A single
/// node always can; a cluster node can while it reaches the cluster (see
/// `cluster::liveness`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Not proven yet, for less than the fencing timeout since start: claims
    /// wait for the cluster.
    Joining,
    /// Proven within the fencing timeout.
    Member,
    /// Not proven for longer than the fencing timeout: another node may have
    /// taken any session over unseen, so this node serves no client (it
    /// disconnects those it has, refuses new ones) until it reaches the cluster.
    CutOff,
}

/// Session ownership, records and subscriptions.
pub trait SessionStore: Send + Sync + fmt::Debug {
    /// Claims `client_id` for a new connection; every claim before it is fenced
    /// off, on this node and (in a cluster) on every other.
    fn claim(&self, client_id: &ClientId, intent: Intent) -> Claiming<'_>;

    /// Sessions other nodes take from this one, as they happen; handed out once.
    /// A single node has none.
    fn taken_elsewhere(&self) -> Option<mpsc::UnboundedReceiver<TakenElsewhere>> {
        None
    }

    /// This node's [`Standing`] as it changes. A single node has none: it is
    /// always a member.
    fn standing(&self) -> Option<watch::Receiver<Standing>> {
        None
    }

    /// Completes once every write made so far is where a claim on any node will
    /// find it, so that a SUBACK means "this subscription follows the session".
    /// `None` if that is so already: a single node's writes are done when they return.
    fn writes_settled(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        None
    }

    /// Whether `claim` is still the newest on its client id.
    fn is_current(&self, client_id: &ClientId, claim: Claim) -> bool;

    /// Writes (replaces) the session's record, unless `claim` is stale.
    fn save(&self, client_id: &ClientId, record: &SessionRecord, claim: Claim)
        -> Result<(), Error>;

    /// Stores a subscription (replacing one on the same filter), unless `claim` is stale.
    fn save_subscription(
        &self,
        subscription: &StoredSubscription,
        claim: Claim,
    ) -> Result<(), Error>;

    /// Forgets a subscription, unless `claim` is stale.
    fn remove_subscription(
        &self,
        client_id: &ClientId,
        filter: &str,
        claim: Claim,
    ) -> Result<(), Error>;

    /// Drops everything kept for a session that ended, unless `claim` is stale:
    /// its record, its subscriptions and its cursor in the [`super::MessageLog`]
    /// (queue, in-flight state, inbound QoS 2 ids). The claim stays: the same
    /// connection may start a new session (Clean Start).
    fn drop_session(&self, client_id: &ClientId, claim: Claim) -> Result<(), Error>;

    /// Forgets `claim` once its session is gone (if no newer claim replaced it):
    /// from then on every claim taken before it is stale.
    fn release(&self, client_id: &ClientId, claim: Claim);

    /// Every stored session and subscription, for a broker starting up. Records
    /// that belong to no session are deleted, not returned.
    fn recover(&self) -> Result<Recovered, Error>;
}

/// What a session left on disk.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionRecord {
    /// A connection holds the session. If the broker stops without a detach (a
    /// crash, or a shutdown, which keeps this record as it is), the session counts
    /// as disconnected at the restart: it expires `expiry` after it, and its will
    /// is published `will.delay` after it, or when the session expires first
    /// ([MQTT-3.1.2-8], [MQTT-3.1.3-9]).
    Online {
        /// The session expiry interval; `None` until a clean start replaces it.
        /// `Some(ZERO)` is a session that ends with its connection, stored only to
        /// keep its will: after a restart the will is published at once.
        expiry: Option<Duration>,
        /// The will from CONNECT, unless the session has none.
        will: Option<Box<WillMessage>>,
    },
    /// The session waits offline.
    Offline {
        /// When it expires; `None` never.
        expires_at: Option<Instant>,
        /// A will whose delay has not passed yet ([MQTT-3.1.3-9]).
        will: Option<StoredWill>,
    },
}

/// A stored subscription.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredSubscription {
    /// The subscriber.
    pub client_id: ClientId,
    /// The filter as the client sent it, `$share/{group}/` included.
    pub filter: String,
    /// QoS, no-local, retain-as-published, retain handling.
    pub options: SubscriptionOptions,
    /// v5 subscription identifier.
    pub identifier: Option<u32>,
}

/// A stored session, as found at startup.
#[derive(Clone, Debug, PartialEq)]
pub struct RecoveredSession {
    /// The session's client id.
    pub client_id: ClientId,
    /// Its record.
    pub record: SessionRecord,
    /// Stored queue entries (queued and in flight).
    pub queued: usize,
    /// The highest stored sequence number, 0 if none.
    pub max_seq: u64,
}

/// Everything found at startup. Orphans (queues or subscriptions of a session
/// without a record) are deleted, not returned.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every persistent session.
    pub sessions: Vec<RecoveredSession>,
    /// Their subscriptions.
    pub subscriptions: Vec<StoredSubscription>,
}
