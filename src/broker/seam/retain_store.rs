//! [`RetainStore`]: retained messages kept beyond this process. The broker
//! answers subscriptions from its own trie ([`crate::broker::retained`]), a
//! mirror of this store loaded at start and kept current by [`RetainStore::watch`].

use std::fmt;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Error;
use crate::broker::message::Message;

/// Retained messages by topic.
pub trait RetainStore: Send + Sync + fmt::Debug {
    /// Stores `message` as its topic's retained message, or clears the topic when
    /// its payload is empty ([MQTT-3.3.1-6], [MQTT-3.3.1-10]).
    fn put(&self, message: &Message) -> Result<(), Error>;

    /// Every retained message that has not expired, to fill the broker's mirror at start.
    fn load(&self) -> Result<Vec<Arc<Message>>, Error>;

    /// Retained messages put by someone else from now on (other nodes), as they
    /// change; an empty payload clears the topic. `None` when nobody else writes.
    fn watch(&self) -> Option<mpsc::UnboundedReceiver<Arc<Message>>>;
}
