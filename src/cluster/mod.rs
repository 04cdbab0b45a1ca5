//! Rookery nodes on a NATS JetStream cluster: the [`Fanout`] that carries
//! messages between nodes. NATS does the consensus, the replication and the
//! interest-based routing; Rookery builds none of its own.
//!
//! Every message published on a node goes, after local delivery, into one
//! JetStream stream (`[cluster] stream`, subjects `mqtt.>`, interest retention)
//! under its topic's subject ([`subject`]). Each node reads the stream through one
//! durable pull consumer, `node-{node_id}`, whose filter subjects are its local
//! subscriptions' patterns. One consumer per node, not one NATS subscription per
//! filter, for three reasons:
//! - **one copy**: a message matching several of a node's filters is delivered to
//!   the node once, and its router gives each client one copy per MQTT's rules;
//! - **one order**: the consumer is one ordered stream, so each publisher's order
//!   is kept on every subscription across nodes ([MQTT-4.6.0-5]);
//! - **stored**: a message waits in the stream (`max_age`) while a node restarts.
//!
//! A consumer's filter subjects may not overlap, so the patterns are reduced to
//! a non-overlapping cover ([`cover`]); anything the cover lets through that no
//! local filter matches is dropped by the router, which matches exactly anyway.
//! A SUBSCRIBE's SUBACK waits until the consumer's filter includes it
//! ([`Fanout::interest_settled`]), so a message published on any node after the
//! SUBACK reaches the subscriber.

mod backlog;
mod cover;
mod liveness;
mod outbox;
mod retained;
mod sessions;
pub mod subject;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures_util::StreamExt;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::broker::message::Message;
use crate::broker::seam::Fanout;
use crate::config::ClusterConfig;
use crate::protocol::TopicFilter;
pub use backlog::HIGH as BACKLOG_LIMIT;
pub use cover::cover;
pub use retained::NatsRetainStore;
pub use sessions::NatsSessionStore;

/// The header that names the node a message was published on, so that a node
/// skips its own messages (they were delivered locally already).
const ORIGIN: &str = "Rookery-Node";
/// A filter subject that no message is published to: a consumer with no filter
/// subjects would receive everything.
const NOTHING: &str = "mqtt.n";
/// How long a SUBACK waits for other nodes to learn of the subscription.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a JetStream request waits for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a broken NATS setup waits between attempts.
pub(crate) const RETRY: Duration = Duration::from_millis(500);

/// A request to the task that owns the NATS connection. One task, one queue:
/// publishes leave in the order they were made.
#[derive(Debug)]
enum Command {
    Publish(Arc<Message>),
    Interest { filter: String, delta: i64 },
}

/// The cluster's [`Fanout`].
#[derive(Debug)]
pub struct NatsFanout {
    commands: mpsc::UnboundedSender<Command>,
    /// Messages handed to the task and not yet taken by the stream.
    backlog: Arc<backlog::Backlog>,
    inbound: Mutex<Option<mpsc::UnboundedReceiver<Arc<Message>>>>,
    /// Interest changes asked for so far, and applied so far (by the task).
    requested: AtomicU64,
    applied: watch::Receiver<u64>,
}

impl NatsFanout {
    /// Starts the task that connects to NATS (retrying until it can) and carries
    /// messages both ways. Must be called inside a tokio runtime.
    pub fn start(config: ClusterConfig) -> NatsFanout {
        let (commands, queue) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let (applied_tx, applied) = watch::channel(0);
        let backlog = Arc::new(backlog::Backlog::default());
        tokio::spawn(run(config, queue, inbound_tx, applied_tx, backlog.clone()));
        NatsFanout {
            commands,
            backlog,
            inbound: Mutex::new(Some(inbound)),
            requested: AtomicU64::new(0),
            applied,
        }
    }

    fn interest(&self, filter: &str, delta: i64) {
        self.requested.fetch_add(1, Ordering::AcqRel);
        let filter = filter.to_string();
        let _ = self.commands.send(Command::Interest { filter, delta });
    }
}

impl Fanout for NatsFanout {
    fn add_interest(&self, filter: &str) {
        self.interest(filter, 1);
    }

    fn remove_interest(&self, filter: &str) {
        self.interest(filter, -1);
    }

    fn publish(&self, message: &Arc<Message>) {
        if self
            .commands
            .send(Command::Publish(message.clone()))
            .is_ok()
        {
            self.backlog.add();
        }
    }

    fn backlogged(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        self.backlog.wait()
    }

    fn take_inbound(&self) -> Option<mpsc::UnboundedReceiver<Arc<Message>>> {
        self.inbound
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    }

    fn interest_settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let target = self.requested.load(Ordering::Acquire);
        let mut applied = self.applied.clone();
        Box::pin(async move {
            // An error means the task ended (shutdown): nothing to wait for. With
            // NATS out of reach, a SUBACK waits no longer than this.
            let settled = applied.wait_for(|applied| *applied >= target);
            if tokio::time::timeout(SETTLE_TIMEOUT, settled).await.is_err() {
                warn!("cluster: other nodes do not know of a new subscription yet");
            }
        })
    }
}

/// The NATS side of a node: owns the connection, the stream and the consumer.
struct Node {
    config: ClusterConfig,
    jetstream: jetstream::Context,
    stream: stream::Stream,
    /// Local interest: NATS pattern → number of local subscriptions needing it.
    interest: BTreeMap<String, usize>,
    /// The filter subjects the consumer has now.
    filters: Vec<String>,
    /// Messages published here, until the stream acknowledges them.
    outbox: outbox::Outbox,
}

async fn run(
    config: ClusterConfig,
    mut queue: mpsc::UnboundedReceiver<Command>,
    inbound: mpsc::UnboundedSender<Arc<Message>>,
    applied: watch::Sender<u64>,
    backlog: Arc<backlog::Backlog>,
) {
    let mut node = loop {
        match Node::connect(config.clone(), backlog.clone()).await {
            Ok(node) => break node,
            Err(error) => {
                warn!(%error, nats = ?config.nats, "cluster: cannot reach NATS JetStream; retrying");
                tokio::time::sleep(RETRY).await;
            }
        }
    };
    info!(node = %config.node_id, stream = %config.stream, "cluster: joined");
    let mut done = 0u64;
    // The subscriptions recovered at start-up are in the queue already: the
    // consumer starts with them, so that messages stored for them while this
    // node was away are delivered.
    while let Ok(command) = queue.try_recv() {
        match command {
            Command::Publish(message) => node.publish(message).await,
            Command::Interest { filter, delta } => {
                node.change_interest(&filter, delta);
                done += 1;
            }
        }
    }
    node.filters = cover(node.interest.keys().cloned());
    loop {
        let mut messages = loop {
            match node.messages().await {
                Ok(messages) => break messages,
                Err(error) => {
                    warn!(%error, "cluster: cannot read from the stream; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        // Only now does the consumer exist with the interest asked for so far.
        let _ = applied.send(done);
        loop {
            tokio::select! {
                command = queue.recv() => {
                    let Some(command) = command else { return };
                    let mut is_interest_changed = false;
                    let mut next = Some(command);
                    // Everything queued now, in order: one consumer update for a burst of SUBSCRIBEs.
                    while let Some(command) = next {
                        match command {
                            Command::Publish(message) => node.publish(message).await,
                            Command::Interest { filter, delta } => {
                                node.change_interest(&filter, delta);
                                is_interest_changed = true;
                                done += 1;
                            }
                        }
                        next = queue.try_recv().ok();
                    }
                    if is_interest_changed {
                        if let Err(error) = node.update_consumer().await {
                            warn!(%error, "cluster: could not update this node's interest");
                        }
                        let _ = applied.send(done);
                    }
                }
                () = node.outbox.settle_oldest(&node.jetstream, &node.config.node_id),
                    if !node.outbox.is_empty() => {}
                message = messages.next() => match message {
                    Some(Ok(message)) => node.receive(message, &inbound).await,
                    Some(Err(error)) => {
                        warn!(%error, "cluster: reading the stream failed; resubscribing");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

/// A JetStream context on a new connection to the cluster's NATS servers; `role`
/// names the connection in NATS's monitoring.
async fn connect(
    config: &ClusterConfig,
    role: &str,
) -> Result<jetstream::Context, async_nats::Error> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("rookery {} {role}", config.node_id))
        .no_echo();
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &config.token {
        options = options.token(token.clone());
    }
    if let Some(path) = &config.credentials_file {
        options = options.credentials_file(path).await?;
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    let client = options.connect(config.nats.clone()).await?;
    let mut jetstream = jetstream::new(client);
    // A cluster that is still electing its leaders answers nothing: ask again soon.
    jetstream.set_timeout(REQUEST_TIMEOUT);
    Ok(jetstream)
}

impl Node {
    async fn connect(
        config: ClusterConfig,
        backlog: Arc<backlog::Backlog>,
    ) -> Result<Node, async_nats::Error> {
        let jetstream = connect(&config, "messages").await?;
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: config.stream.clone(),
                subjects: vec!["mqtt.>".to_string()],
                retention: stream::RetentionPolicy::Interest,
                max_age: config.max_age,
                num_replicas: config.replicas,
                ..Default::default()
            })
            .await?;
        Ok(Node {
            outbox: outbox::Outbox::new(&config.node_id, backlog),
            config,
            jetstream,
            stream,
            interest: BTreeMap::new(),
            filters: Vec::new(),
        })
    }

    fn consumer_name(&self) -> String {
        format!("node-{}", self.config.node_id)
    }

    fn consumer_config(&self) -> consumer::pull::Config {
        let filters = match self.filters.is_empty() {
            true => vec![NOTHING.to_string()],
            false => self.filters.clone(),
        };
        consumer::pull::Config {
            durable_name: Some(self.consumer_name()),
            filter_subjects: filters,
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        }
    }

    /// The consumer's messages, creating the consumer (or taking over this node's
    /// consumer from before a restart, with the current interest) first.
    async fn messages(&mut self) -> Result<consumer::pull::Stream, async_nats::Error> {
        let config = self.consumer_config();
        let consumer: consumer::PullConsumer =
            match self.stream.create_consumer(config.clone()).await {
                Ok(consumer) => consumer,
                // It exists, from before a restart, with that run's interest.
                Err(_) => self.stream.update_consumer(config).await?,
            };
        Ok(consumer.messages().await?)
    }

    fn change_interest(&mut self, filter: &str, delta: i64) {
        let text = crate::protocol::SharedFilter::parse(filter)
            .ok()
            .flatten()
            .map(|shared| shared.filter.to_string())
            .unwrap_or_else(|| filter.to_string());
        let Ok(filter) = TopicFilter::new(text) else {
            return;
        };
        for pattern in subject::encode_filter(&filter) {
            let count = self.interest.entry(pattern.clone()).or_default();
            *count = match delta {
                1.. => count.saturating_add(1),
                _ => count.saturating_sub(1),
            };
            if *count == 0 {
                self.interest.remove(&pattern);
            }
        }
    }

    async fn update_consumer(&mut self) -> Result<(), async_nats::Error> {
        let filters = cover(self.interest.keys().cloned());
        if filters == self.filters {
            return Ok(());
        }
        self.filters = filters;
        let _: consumer::PullConsumer = self.stream.update_consumer(self.consumer_config()).await?;
        Ok(())
    }

    /// Hands `message` to the outbox, waiting first for the oldest acknowledgement
    /// if the window is full.
    async fn publish(&mut self, message: Arc<Message>) {
        if self.outbox.is_full() {
            self.outbox
                .settle_oldest(&self.jetstream, &self.config.node_id)
                .await;
        }
        self.outbox
            .publish(&self.jetstream, &self.config.node_id, message)
            .await;
    }

    async fn receive(
        &self,
        message: jetstream::Message,
        inbound: &mpsc::UnboundedSender<Arc<Message>>,
    ) {
        let origin = message
            .headers
            .as_ref()
            .and_then(|headers| headers.get(ORIGIN))
            .map(|value| value.as_str());
        if origin != Some(self.config.node_id.as_str()) {
            match crate::storage::decode_message(message.payload.clone()) {
                Ok(decoded) => {
                    let _ = inbound.send(Arc::new(decoded));
                }
                Err(error) => warn!(%error, subject = %message.subject, "cluster: message skipped"),
            }
        }
        if let Err(error) = message.ack().await {
            warn!(%error, "cluster: could not acknowledge a message");
        }
    }
}
