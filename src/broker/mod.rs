//! The shared broker: the use cases that cross sessions — publish, subscribe,
//! attach a connection to a session, end a session — each a short sequence of
//! calls into the parts below.
//!
//! Locks are std/parking_lot locks taken in one order (router → retained →
//! registry), never held across `.await`, during storage I/O, or while handing a
//! delivery to a mailbox. Publish runs inline in the publisher's task, so
//! per-publisher order needs no extra machinery ([MQTT-4.6.0-5]).

pub mod arrival;
pub mod directory;
mod handoff;
mod lifecycle;
mod mailbox;
pub mod message;
mod recovery;
mod registry;
pub mod retained;
pub mod router;
pub mod seam;
mod stored;
pub mod sys;
pub mod trie;

pub use lifecycle::{Attached, SessionRequest};
pub use mailbox::{Control, Mailbox, Successor};
pub use registry::{Admission, Census, ClientSlot, Departure, Depth, Detached, Link, PendingWill};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use crate::auth::{Action, Authenticator, ClientIdentity};
use crate::config::{Limits, MqttConfig, SessionConfig};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{ClientId, PacketId, TopicFilter};
use message::{Delivery, Message};
use registry::Registry;
use retained::Retained;
use router::{Filter, Router, Subscription, Target};
use seam::{
    Claim, Fanout, MessageLog, PublishWrite, QueuedDelivery, RetainStore, Seams, SessionRecord,
    SessionStore, StoredSubscription, SyncPoint,
};

/// State shared by every connection. Created once, behind an `Arc`.
#[derive(Debug)]
pub struct Broker {
    router: RwLock<Router>,
    retained: RwLock<Retained>,
    registry: Registry,
    sessions: Arc<dyn SessionStore>,
    log: Arc<dyn MessageLog>,
    retain_store: Arc<dyn RetainStore>,
    fanout: Arc<dyn Fanout>,
    metrics: Metrics,
    limits: Limits,
    session_config: SessionConfig,
    mqtt: MqttConfig,
    next_connection_id: AtomicU64,
    /// Swapped whole on reload; readers never wait.
    authenticator: ArcSwap<Authenticator>,
    /// The order in which connections' input arrived (see [`arrival`]).
    arrivals: Arc<arrival::Arrivals>,
    /// Who is connected, for the admin API.
    directory: directory::Directory,
    /// `[log] connection_messages`: whether connects and disconnects are logged.
    is_logging_connections: std::sync::atomic::AtomicBool,
}

/// Where a routed message was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// On this node: its retained flag updates the retained set.
    Local,
    /// On another node, which kept the retained message.
    Remote,
    /// This node's own `$SYS` values: retained on this node only, never stored or
    /// shared (each node has its own, and a restart starts them afresh).
    System,
}

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routed {
    /// Subscribers that matched.
    pub matched: usize,
    /// Of those, deliveries dropped at a full queue (or QoS 0 for an offline session).
    pub dropped: usize,
}

impl Broker {
    /// A broker with the given limits and session rules, on `seams` (for a single
    /// node, a [`crate::storage::Storage`] converts into them).
    pub fn new(limits: Limits, session_config: SessionConfig, seams: impl Into<Seams>) -> Broker {
        let seams = seams.into();
        Broker {
            router: RwLock::new(Router::default()),
            retained: RwLock::new(Retained::default()),
            registry: Registry::default(),
            sessions: seams.sessions,
            log: seams.log,
            retain_store: seams.retained,
            fanout: seams.fanout,
            metrics: Metrics::default(),
            limits,
            session_config,
            mqtt: MqttConfig::default(),
            next_connection_id: AtomicU64::new(1),
            authenticator: ArcSwap::from_pointee(Authenticator::new(true, None, None)),
            arrivals: Arc::default(),
            directory: directory::Directory::default(),
            is_logging_connections: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// Resource limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Session rules.
    pub fn session_config(&self) -> &SessionConfig {
        &self.session_config
    }

    /// The order in which connections' input arrived.
    pub fn arrivals(&self) -> &Arc<arrival::Arrivals> {
        &self.arrivals
    }

    /// The same broker with the server's choices among what MQTT allows (`[mqtt]`);
    /// [`Broker::new`] starts from [`MqttConfig::default`].
    pub fn with_mqtt(self, mqtt: MqttConfig) -> Broker {
        Broker { mqtt, ..self }
    }

    /// The server's choices among what MQTT allows.
    pub fn mqtt(&self) -> &MqttConfig {
        &self.mqtt
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Sessions online and offline, and the messages queued for all of them.
    pub fn census(&self) -> Census {
        self.registry.census()
    }

    /// Every session: its client id, whether it is online, and its queue length.
    pub fn sessions(&self) -> Vec<(ClientId, bool, usize)> {
        self.registry.sessions()
    }

    /// Number of sessions, online and offline.
    pub fn session_count(&self) -> usize {
        self.registry.len()
    }

    /// Asks the connection holding `client_id` to disconnect its client (v5
    /// DISCONNECT 0x98). Returns whether one was online.
    pub fn kick(&self, client_id: &ClientId) -> bool {
        self.registry.kick(client_id)
    }

    /// The point every stored write has reached; see [`Broker::wait_durable`].
    pub fn sync_point(&self) -> SyncPoint {
        self.log.sync_point()
    }

    /// Waits until every write up to `point` is durable (`fsync` durability;
    /// immediate otherwise). Cancel-safe.
    pub async fn wait_durable(&self, point: SyncPoint) -> Result<(), seam::Error> {
        self.log.wait_durable(point).await
    }

    /// Makes everything stored durable (graceful shutdown).
    pub fn sync_storage(&self) -> Result<(), seam::Error> {
        self.log.sync()
    }

    /// Retained messages changed by other nodes, to apply with
    /// [`Broker::apply_retained`]; `None` for a single node.
    pub fn watch_retained(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Arc<Message>>> {
        self.retain_store.watch()
    }

    /// Every session's queue depth and in-flight count (not for the hot path).
    pub fn depths(&self) -> Vec<Depth> {
        self.registry.depths()
    }

    /// How long storage commits and fsyncs take, if storage times them.
    pub fn storage_latency(&self) -> Option<&crate::metrics::StorageLatency> {
        self.log.latency()
    }

    /// Mirrors a retained message another node stored.
    pub fn apply_retained(&self, message: Arc<Message>) {
        self.retained.write().set(message);
    }

    /// Sessions other nodes claim from this one, to let go of with
    /// [`Broker::release_to_other_node`]; handed out once, `None` for a single node.
    pub fn take_sessions_taken_elsewhere(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<seam::TakenElsewhere>> {
        self.sessions.taken_elsewhere()
    }

    /// This node's standing in its cluster as it changes (see
    /// [`Broker::cut_off_all`]); `None` for a single node.
    pub fn standing(&self) -> Option<tokio::sync::watch::Receiver<seam::Standing>> {
        self.sessions.standing()
    }

    /// Disconnects every client because this node is cut off from its cluster: it
    /// can no longer prove it owns their sessions, which another node may have
    /// taken over meanwhile ([MQTT-3.1.4-3]). Returns how many were online.
    pub fn cut_off_all(&self) -> usize {
        self.registry.cut_off_all()
    }

    /// Whether this node has other nodes to hand messages to (a cluster).
    pub fn has_peers(&self) -> bool {
        self.fanout.has_peers()
    }

    /// `None` while this node can take more publishes; otherwise completes once
    /// it can (see [`Fanout::backlogged`]): connections that publish wait on it.
    pub fn backlogged(
        &self,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>> {
        self.fanout.backlogged()
    }

    /// Messages published on other nodes, to route with [`Broker::publish_remote`];
    /// `None` for a single node.
    pub fn take_remote_inbound(
        &self,
    ) -> Option<tokio::sync::mpsc::UnboundedReceiver<Arc<Message>>> {
        self.fanout.take_inbound()
    }

    /// Routes a message published on another node to this node's subscribers.
    /// Its node stored the retained message and acknowledged the publisher; the
    /// retained set is shared through the [`RetainStore`], not through here.
    pub fn publish_remote(&self, message: Arc<Message>) -> Result<Routed, seam::Error> {
        self.route(&ClientId::new(""), message, None, None, Origin::Remote)
    }

    /// Completes once every subscription added or removed so far is known to
    /// other nodes, both for routing and for a session resumed on another node.
    pub async fn interest_settled(&self) {
        self.fanout.interest_settled().await;
        if let Some(settled) = self.sessions.writes_settled() {
            settled.await;
        }
    }

    /// The current authentication and ACL policy; everyone may do everything until
    /// [`Broker::set_authenticator`] is called.
    pub fn authenticator(&self) -> Arc<Authenticator> {
        self.authenticator.load_full()
    }

    /// Replaces the policy (at start-up, and on reload); connected clients are
    /// checked against the new one from their next packet on.
    pub fn set_authenticator(&self, authenticator: Arc<Authenticator>) {
        self.authenticator.store(authenticator);
    }

    /// Who is connected right now (peer, username, version, since when).
    pub fn directory(&self) -> &directory::Directory {
        &self.directory
    }

    /// Turns the connect, refuse and disconnect log lines on or off (mosquitto's
    /// `connection_messages`).
    pub fn set_logging_connections(&self, is_logging: bool) {
        self.is_logging_connections
            .store(is_logging, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether connects, refusals and disconnects are logged.
    pub fn is_logging_connections(&self) -> bool {
        self.is_logging_connections
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the current ACL lets `client` do `action` on `topic`. Lock-free.
    pub fn authorize(&self, client: &ClientIdentity, action: Action, topic: &str) -> bool {
        self.authenticator.load().authorize(client, action, topic)
    }

    /// A process-unique id for a new connection.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Routes a message to every matching subscription: stores the deliveries for
    /// persistent sessions (and the retained message) in one batch, then hands
    /// every delivery to its mailbox. When this returns `Ok`, the message may be
    /// acknowledged to its publisher.
    pub fn publish(
        &self,
        publisher: &ClientId,
        message: Arc<Message>,
    ) -> Result<Routed, seam::Error> {
        self.route_received(publisher, message, None, None)
    }

    /// Publishes the will of the session `of` and, in the same write, replaces its
    /// stored record with `record`, which no longer holds the will: a crash leaves
    /// the will published or still held, never both ([MQTT-3.1.2-8] once).
    pub fn publish_will(
        &self,
        of: &ClientId,
        message: Arc<Message>,
        record: &SessionRecord,
    ) -> Result<Routed, seam::Error> {
        self.route_received(of, message, None, Some((of, record)))
    }

    /// [`Broker::publish`] for an inbound QoS 2 message of a persistent session: its
    /// packet id is stored, awaiting PUBREL, in the same batch as the deliveries, so
    /// a crash can neither lose the message nor route it twice ([MQTT-4.3.3-10]).
    pub fn publish_exactly_once(
        &self,
        publisher: &ClientId,
        message: Arc<Message>,
        packet_id: PacketId,
    ) -> Result<Routed, seam::Error> {
        self.route_received(publisher, message, Some(packet_id), None)
    }

    /// Routes a message from a client (or its will) here and to other nodes:
    /// counted as received, and as dropped when it matched no subscription and is
    /// not kept as retained.
    fn route_received(
        &self,
        publisher: &ClientId,
        message: Arc<Message>,
        incoming: Option<PacketId>,
        session: Option<(&ClientId, &SessionRecord)>,
    ) -> Result<Routed, seam::Error> {
        self.count_received(&message);
        let routed = self.route(publisher, message.clone(), incoming, session, Origin::Local)?;
        if routed.matched == 0 && !message.retain {
            self.metrics.count_dropped(DropReason::NoSubscribers, 1);
        }
        self.fanout.publish(&message);
        Ok(routed)
    }

    fn count_received(&self, message: &Message) {
        self.metrics
            .messages_received
            .fetch_add(1, Ordering::Relaxed);
        Metrics::add(
            &self.metrics.publish_bytes_received,
            message.payload.len() as u64,
        );
    }

    /// Routes without counting the message as received from a client ($SYS topics).
    fn route(
        &self,
        publisher: &ClientId,
        message: Arc<Message>,
        incoming: Option<PacketId>,
        session: Option<(&ClientId, &SessionRecord)>,
        origin: Origin,
    ) -> Result<Routed, seam::Error> {
        let mut targets = Vec::new();
        self.router
            .read()
            .route(&message.topic, publisher, &mut targets);
        let mut routed = Routed {
            matched: targets.len(),
            dropped: 0,
        };
        let mut write = PublishWrite {
            incoming: incoming.map(|packet_id| (publisher, packet_id)),
            session,
            ..PublishWrite::default()
        };
        let mut sends = Vec::with_capacity(targets.len());
        let (mut queue_full, mut offline) = (0, 0);
        for target in targets {
            let Some(slot) = self.registry.get(&target.client_id) else {
                continue;
            };
            let delivery = routed_delivery(&message, target);
            let admission = slot.admit(
                delivery.qos,
                self.limits.max_queued_messages,
                self.session_config.queue_qos0_messages,
            );
            match admission {
                Admission::Drop(DropReason::QueueFull) => queue_full += 1,
                Admission::Drop(_) => offline += 1,
                Admission::Send => sends.push((slot, delivery)),
                Admission::Store(seq) => {
                    let (entry, delivery) = QueuedDelivery::queued(seq, delivery);
                    write.deliveries.push((slot.client_id().clone(), entry));
                    sends.push((slot, delivery));
                }
            }
        }
        let keeps_retained = message.retain && origin != Origin::Remote;
        let stored = match keeps_retained && origin == Origin::Local {
            true => self.retain_store.put(&message),
            false => Ok(()),
        };
        if let Err(error) = stored.and_then(|()| self.log.append(&write)) {
            for (slot, _) in &sends {
                slot.release();
            }
            return Err(error);
        }
        if keeps_retained {
            let retained = Arc::new(message.detached());
            self.retained.write().set(retained);
        }
        for (slot, delivery) in sends {
            // The connection left between admission and now, and nothing was stored.
            if !slot.deliver(delivery) {
                offline += 1;
            }
        }
        // Shared counters: touched only when something was dropped, not per publish.
        routed.dropped = queue_full + offline;
        self.metrics
            .count_dropped(DropReason::QueueFull, queue_full as u64);
        self.metrics
            .count_dropped(DropReason::Offline, offline as u64);
        Ok(routed)
    }

    /// Adds a subscription; returns whether it already existed. A persistent
    /// session's subscription is stored before this returns, so SUBACK means stored.
    pub fn subscribe(
        &self,
        client_id: &ClientId,
        claim: Claim,
        filter: &Filter,
        subscription: Subscription,
    ) -> Result<bool, seam::Error> {
        let text = filter.to_string();
        if self.is_persistent(client_id) {
            let stored = StoredSubscription {
                client_id: client_id.clone(),
                filter: text.clone(),
                options: subscription.options,
                identifier: subscription.identifier,
            };
            self.sessions.save_subscription(&stored, claim)?;
        }
        let existed = self
            .router
            .write()
            .subscribe(client_id, filter, subscription);
        if !existed {
            self.fanout.add_interest(&text);
        }
        Ok(existed)
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(
        &self,
        client_id: &ClientId,
        claim: Claim,
        filter: &Filter,
    ) -> Result<bool, seam::Error> {
        let text = filter.to_string();
        if self.is_persistent(client_id) {
            self.sessions.remove_subscription(client_id, &text, claim)?;
        }
        let existed = self.router.write().unsubscribe(client_id, filter);
        if existed {
            self.fanout.remove_interest(&text);
        }
        Ok(existed)
    }

    fn is_persistent(&self, client_id: &ClientId) -> bool {
        self.registry
            .get(client_id)
            .is_some_and(|slot| slot.is_persistent())
    }

    /// The retained messages a new subscription to `filter` receives.
    pub fn retained_matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        self.retained.read().matching(filter, now)
    }

    /// A session's subscriptions, as the client wrote them.
    pub fn subscriptions_of(&self, client_id: &ClientId) -> Vec<String> {
        let router = self.router.read();
        router
            .subscriptions_of(client_id)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    /// Number of subscriptions over all sessions.
    pub fn subscription_count(&self) -> usize {
        self.router.read().len()
    }

    /// Retained messages outside `$SYS`, and the payload bytes of all of them.
    pub fn retained_census(&self) -> (usize, u64) {
        self.retained.read().census()
    }

    /// Number of topics with a retained message.
    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Expires offline sessions and publishes wills whose delay passed. Called
    /// periodically by the server with the current time.
    pub fn on_tick(&self, now: Instant) {
        let due = self.registry.take_due(now);
        for will in due.wills {
            // An expired session's record goes next; until then it holds no will.
            let record = SessionRecord::Offline {
                expires_at: will.expires_at,
                will: None,
            };
            if let Err(error) = self.publish_will(&will.client_id, will.message, &record) {
                tracing::error!(client_id = %will.client_id, %error, "could not store a delayed will");
            }
        }
        Metrics::add(&self.metrics.sessions_expired, due.expired.len() as u64);
        for (client_id, claim) in due.expired {
            tracing::debug!(%client_id, "session expired");
            if let Err(error) = self.end_session(&client_id, claim) {
                tracing::error!(%client_id, %error, "could not delete an expired session");
            }
            self.sessions.release(&client_id, claim);
            self.registry.finish_ending(&client_id, registry::EXPIRY);
        }
    }
}

fn routed_delivery(message: &Arc<Message>, target: Target) -> Delivery {
    Delivery {
        message: message.clone(),
        qos: message.qos.min(target.qos),
        // [MQTT-3.3.1-9] 3.1.1 clears retain on routed messages; v5 keeps it only for
        // retain-as-published subscriptions ([MQTT-3.3.1-12], [MQTT-3.3.1-13]).
        retain: message.retain && target.retain_as_published,
        subscription_ids: target.subscription_ids,
        seq: None,
    }
}
