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
pub mod mailbox;
mod recovery;
pub use recovery::Prior;
pub mod registry;
pub mod retained;
pub mod router;
pub mod sys;
pub mod trie;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use parking_lot::RwLock;

use crate::auth::{Action, Authenticator, ClientIdentity};
use crate::config::{Limits, MqttConfig, SessionConfig};
use crate::metrics::{DropReason, Metrics};
use crate::protocol::{ClientId, PacketId, TopicFilter};
use crate::storage::{
    self, Delivery, Message, PublishWrite, QueuedDelivery, Storage, StoredSubscription,
};
use registry::{Admission, Registry};
use retained::Retained;
use router::{Filter, Router, Subscription, Target};

/// State shared by every connection. Created once, behind an `Arc`.
#[derive(Debug)]
pub struct Broker {
    router: RwLock<Router>,
    retained: RwLock<Retained>,
    registry: Registry,
    storage: Storage,
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

/// What became of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Routed {
    /// Subscribers that matched.
    pub matched: usize,
    /// Of those, deliveries dropped at a full queue (or QoS 0 for an offline session).
    pub dropped: usize,
}

impl Broker {
    /// A broker with the given limits and session rules, over `storage`.
    pub fn new(limits: Limits, session_config: SessionConfig, storage: Storage) -> Broker {
        Broker {
            router: RwLock::new(Router::default()),
            retained: RwLock::new(Retained::default()),
            registry: Registry::default(),
            storage,
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

    /// The store.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Sessions and where they are.
    pub fn registry(&self) -> &Registry {
        &self.registry
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
    ) -> Result<Routed, storage::Error> {
        self.route_received(publisher, message, None, None)
    }

    /// Publishes the will of the session `of` and, in the same write, replaces its
    /// stored record with `record`, which no longer holds the will: a crash leaves
    /// the will published or still held, never both ([MQTT-3.1.2-8] once).
    pub fn publish_will(
        &self,
        of: &ClientId,
        message: Arc<Message>,
        record: &storage::SessionRecord,
    ) -> Result<Routed, storage::Error> {
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
    ) -> Result<Routed, storage::Error> {
        self.route_received(publisher, message, Some(packet_id), None)
    }

    /// Routes a message from a client (or its will): counted as received, and as
    /// dropped when it matched no subscription and is not kept as retained.
    fn route_received(
        &self,
        publisher: &ClientId,
        message: Arc<Message>,
        incoming: Option<PacketId>,
        session: Option<(&ClientId, &storage::SessionRecord)>,
    ) -> Result<Routed, storage::Error> {
        self.count_received(&message);
        let is_retained = message.retain;
        let routed = self.route(publisher, message, incoming, session)?;
        if routed.matched == 0 && !is_retained {
            self.metrics.count_dropped(DropReason::NoSubscribers, 1);
        }
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
        session: Option<(&ClientId, &storage::SessionRecord)>,
    ) -> Result<Routed, storage::Error> {
        let mut targets = Vec::new();
        self.router
            .read()
            .route(&message.topic, publisher, &mut targets);
        let mut routed = Routed {
            matched: targets.len(),
            dropped: 0,
        };
        let mut write = PublishWrite {
            retained: Some(&*message).filter(|message| message.retain),
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
        if let Err(error) = self.storage.commit_publish(&write) {
            for (slot, _) in &sends {
                slot.release();
            }
            return Err(error);
        }
        if message.retain {
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
        filter: &Filter,
        subscription: Subscription,
    ) -> Result<bool, storage::Error> {
        if self.is_persistent(client_id) {
            self.storage.save_subscription(&StoredSubscription {
                client_id: client_id.clone(),
                filter: filter.to_string(),
                options: subscription.options,
                identifier: subscription.identifier,
            })?;
        }
        Ok(self
            .router
            .write()
            .subscribe(client_id, filter, subscription))
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(
        &self,
        client_id: &ClientId,
        filter: &Filter,
    ) -> Result<bool, storage::Error> {
        if self.is_persistent(client_id) {
            self.storage
                .remove_subscription(client_id, &filter.to_string())?;
        }
        Ok(self.router.write().unsubscribe(client_id, filter))
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

    /// Deletes an offline session (admin action). Returns `false`, touching
    /// nothing, if the session is online or does not exist.
    pub fn delete_offline_session(&self, client_id: &ClientId) -> Result<bool, storage::Error> {
        let is_offline = self
            .registry
            .sessions()
            .iter()
            .any(|(id, is_online, _)| id == client_id && !is_online);
        if !is_offline {
            return Ok(false);
        }
        self.registry.remove(client_id);
        self.end_session(client_id)?;
        Ok(true)
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

    /// Deletes everything a session owned: its subscriptions and its stored state.
    /// Called when a session ends (clean start, expiry, or a non-persistent session's
    /// connection closing).
    pub fn end_session(&self, client_id: &ClientId) -> Result<(), storage::Error> {
        self.router.write().remove_client(client_id);
        self.storage.delete_session(client_id)
    }

    /// Expires offline sessions and publishes wills whose delay passed. Called
    /// periodically by the server with the current time.
    pub fn on_tick(&self, now: Instant) {
        let due = self.registry.take_due(now);
        for will in due.wills {
            // An expired session's record goes next; until then it holds no will.
            let record = storage::SessionRecord::Offline {
                expires_at: will.expires_at,
                will: None,
            };
            if let Err(error) = self.publish_will(&will.client_id, will.message, &record) {
                tracing::error!(client_id = %will.client_id, %error, "could not store a delayed will");
            }
        }
        Metrics::add(&self.metrics.sessions_expired, due.expired.len() as u64);
        for client_id in due.expired {
            tracing::debug!(%client_id, "session expired");
            if let Err(error) = self.end_session(&client_id) {
                tracing::error!(%client_id, %error, "could not delete an expired session");
            }
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
