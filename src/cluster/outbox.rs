//! Messages on their way into the stream, kept until JetStream acknowledges them.
//!
//! Publishing without waiting for the stream's acknowledgement loses every
//! message sent while the stream has no leader: a NATS server killed under
//! traffic cost 175–237 messages in `tests/cluster.rs` before this outbox. Here
//! each message waits in order until its acknowledgement comes; up to [`WINDOW`]
//! are in flight at once, so a round trip per message does not cap throughput.
//! When one fails (no leader during an election, a connection lost), it and
//! every one after it are sent again, in order, until the stream takes them;
//! messages published meanwhile wait behind them, unsent.
//! Each carries a `Nats-Msg-Id` unique to this node and run, so the stream's
//! duplicate window drops a copy it had stored already (an acknowledgement lost,
//! not the message).
//!
//! What is left: of the messages already sent when the first failure shows, a
//! failed one sent again lands behind a later one the stream did take (only if
//! the stream came back in the instant between the two); and messages still
//! here when the process dies are lost (README, Cluster).

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use async_nats::jetstream;
use tracing::{debug, warn};

use super::backlog::Backlog;
use super::{subject, ORIGIN, RETRY};
use crate::broker::message::Message;

/// Acknowledgements awaited at once.
pub const WINDOW: usize = 256;

type Ack = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

struct Unacked {
    message: Arc<Message>,
    id: u64,
    /// `None` while held back (see [`Outbox::is_retrying`]). In a mutex only to
    /// make the outbox `Sync` (the node is shared by reference across awaits);
    /// reached through `get_mut`, never locked.
    ack: Mutex<Option<Ack>>,
}

impl Unacked {
    fn ack(&mut self) -> &mut Option<Ack> {
        self.ack
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// This node's messages not yet acknowledged by the stream, oldest first.
pub struct Outbox {
    /// Told of every message the stream takes.
    backlog: Arc<Backlog>,
    /// `Nats-Msg-Id` prefix: the node id and a number drawn at start, so that a
    /// restarted node's ids never match its previous run's.
    prefix: String,
    next_id: u64,
    unacked: VecDeque<Unacked>,
    /// A send failed and the backlog is being sent again: new messages wait
    /// behind it, unsent, so that none overtakes an older one in the stream.
    is_retrying: bool,
}

impl Outbox {
    pub fn new(node_id: &str, backlog: Arc<Backlog>) -> Outbox {
        Outbox {
            backlog,
            prefix: format!("{node_id}-{:016x}", fastrand::u64(..)),
            next_id: 0,
            unacked: VecDeque::new(),
            is_retrying: false,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.unacked.len() >= WINDOW
    }

    /// Sends `message` and keeps it until it is acknowledged.
    pub async fn publish(
        &mut self,
        jetstream: &jetstream::Context,
        node_id: &str,
        message: Arc<Message>,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let ack = match self.is_retrying {
            true => None,
            false => Some(self.send(jetstream, node_id, &message, id).await),
        };
        let ack = Mutex::new(ack);
        self.unacked.push_back(Unacked { message, id, ack });
    }

    /// Waits for the oldest acknowledgement. On failure, waits [`RETRY`] and sends
    /// everything unacknowledged again, in order, holding new messages back until
    /// the backlog is taken. Cancel-safe: the oldest entry leaves only once its
    /// acknowledgement has come.
    pub async fn settle_oldest(&mut self, jetstream: &jetstream::Context, node_id: &str) {
        let result = match self.unacked.front_mut() {
            Some(oldest) => match oldest.ack() {
                Some(ack) => ack.await,
                // Held back behind a backlog that has been taken since.
                None => return self.resend(jetstream, node_id).await,
            },
            None => return,
        };
        match result {
            Ok(()) => {
                self.unacked.pop_front();
                self.backlog.done();
                if self.unacked.is_empty() {
                    self.is_retrying = false;
                }
            }
            Err(error) => {
                if !self.is_retrying {
                    warn!(%error, waiting = self.unacked.len(), "cluster: the stream did not take a message; sending again");
                }
                self.is_retrying = true;
                // The failed future is spent: until the resend below, a fresh one
                // that fails at once stands in (a spent one must not be polled).
                if let Some(oldest) = self.unacked.front_mut() {
                    *oldest.ack() = Some(Box::pin(std::future::ready(Err(error))));
                }
                tokio::time::sleep(RETRY).await;
                self.resend(jetstream, node_id).await;
            }
        }
    }

    async fn resend(&mut self, jetstream: &jetstream::Context, node_id: &str) {
        let prefix = self.prefix.clone();
        for index in 0..self.unacked.len() {
            let Some(entry) = self.unacked.get(index) else {
                break;
            };
            let (message, id) = (entry.message.clone(), entry.id);
            let ack = send(jetstream, node_id, &prefix, &message, id).await;
            if let Some(entry) = self.unacked.get_mut(index) {
                *entry.ack() = Some(ack);
            }
        }
        debug!(
            sent = self.unacked.len(),
            "cluster: unacknowledged messages sent again"
        );
    }

    async fn send(
        &self,
        jetstream: &jetstream::Context,
        node_id: &str,
        message: &Message,
        id: u64,
    ) -> Ack {
        send(jetstream, node_id, &self.prefix, message, id).await
    }
}

async fn send(
    jetstream: &jetstream::Context,
    node_id: &str,
    prefix: &str,
    message: &Message,
    id: u64,
) -> Ack {
    let subject = subject::encode_topic(&message.topic);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(ORIGIN, node_id);
    headers.insert("Nats-Msg-Id", format!("{prefix}-{id}").as_str());
    let payload = crate::storage::encode_message(message);
    match jetstream
        .publish_with_headers(subject, headers, payload)
        .await
    {
        Ok(ack) => Box::pin(async move {
            ack.into_future()
                .await
                .map(|_| ())
                .map_err(|error| error.to_string())
        }),
        Err(error) => Box::pin(std::future::ready(Err(error.to_string()))),
    }
}
