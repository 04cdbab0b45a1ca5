//! [`Fanout`]: messages that cross nodes. A single node has no other node, and
//! plugs in [`LocalOnly`], which does nothing and costs one empty call per publish.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::broker::message::Message;

/// Interest in topics and messages to and from other nodes. Local delivery never
/// goes through it: a publish reaches this node's subscribers first, from the
/// publisher's own task, and only then is it handed to other nodes.
pub trait Fanout: Send + Sync + fmt::Debug {
    /// This node now has a subscription on `filter` (as the client wrote it).
    /// Called once per subscription; the implementation counts references.
    fn add_interest(&self, filter: &str);

    /// A subscription on `filter` went away.
    fn remove_interest(&self, filter: &str);

    /// Hands a message published on this node to the nodes interested in its topic.
    fn publish(&self, message: &Arc<Message>);

    /// Messages published on other nodes, to route to this node's subscribers.
    /// Taken once, by the server; `None` when there are no other nodes.
    fn take_inbound(&self) -> Option<mpsc::UnboundedReceiver<Arc<Message>>>;

    /// Completes once every interest added so far reaches the other nodes: a
    /// SUBACK waits for it, so a message published anywhere after the SUBACK is
    /// delivered.
    fn interest_settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// `None` while this node can take more publishes; otherwise completes once
    /// it can. Messages for other nodes can pile up faster than they leave (the
    /// cluster is slower than the publishers, or out of reach): past a bound, the
    /// connections that publish stop reading until the backlog shrinks — TCP
    /// back-pressure, as a slow broker applies it, not lost messages and not
    /// unbounded memory. A single node never waits.
    fn backlogged(&self) -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
        None
    }

    /// Whether there are other nodes at all: a single node's connections never
    /// ask [`Fanout::backlogged`], which keeps a call off every turn of theirs.
    fn has_peers(&self) -> bool {
        true
    }
}

/// The fanout of a single node: there is nobody to tell.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalOnly;

impl Fanout for LocalOnly {
    fn add_interest(&self, _filter: &str) {}

    fn remove_interest(&self, _filter: &str) {}

    fn publish(&self, _message: &Arc<Message>) {}

    fn take_inbound(&self) -> Option<mpsc::UnboundedReceiver<Arc<Message>>> {
        None
    }

    fn interest_settled(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(std::future::ready(()))
    }

    fn has_peers(&self) -> bool {
        false
    }
}
