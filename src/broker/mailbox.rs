//! A client's mailbox: deliveries from publishers and control requests from the
//! broker, drained by the connection task that holds the session.
//!
//! A mutex-protected queue plus a [`Notify`], rather than a channel, for two
//! reasons measured on the fan-in and idle-connection benchmarks: the connection
//! takes a whole batch under one lock, and an idle mailbox owns no buffer at all
//! (a tokio channel allocates its first block of slots up front).
//!
//! The queue is unbounded here; the bound is the session's queue count in its
//! registry slot (`max_queued_messages`), checked before anything is pushed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::message::Delivery;

/// A request from the broker to a connection task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Another connection took the session over ([MQTT-3.1.4-3]): handle what the
    /// client already sent, then detach; the successor gets the
    /// [`Departure`](super::registry::Departure).
    /// Boxed: the mailbox keeps room for one control, and takeovers are rare.
    TakeOver(Box<Successor>),
    /// An operator asked for the client to be disconnected (v5 DISCONNECT 0x98).
    Kick,
    /// This node is cut off from its cluster and cannot prove it owns the session
    /// (v5 DISCONNECT 0x9C Use another server).
    CutOff,
}

/// The connection taking a session over, as the log line of the one it replaces
/// tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    /// Its address, if the transport knew it.
    pub peer: Option<SocketAddr>,
    /// The listener it came in on (`tcp 127.0.0.1:1883`).
    pub listener: Arc<str>,
}

#[derive(Debug, Default)]
struct State {
    deliveries: VecDeque<Delivery>,
    control: Option<Control>,
    is_closed: bool,
}

/// One connection's inbox. Shared as `Arc<Mailbox>` between the registry (senders)
/// and the connection task (the only receiver).
#[derive(Debug, Default)]
pub struct Mailbox {
    state: Mutex<State>,
    ready: Notify,
    /// Wakes a connection blocked elsewhere (a write to a client that does not
    /// read) when a control request arrives: a takeover must not wait for it.
    control_ready: Notify,
}

impl Mailbox {
    /// Queues a delivery. Returns `false`, dropping it, if the connection has gone.
    pub fn push(&self, delivery: Delivery) -> bool {
        let mut state = self.state.lock();
        if state.is_closed {
            return false;
        }
        let was_empty = state.deliveries.is_empty();
        state.deliveries.push_back(delivery);
        drop(state);
        // Only the first delivery of a batch wakes the receiver; it drains the rest.
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    /// Hands the connection a control request; gives it back if the connection has gone.
    pub fn send_control(&self, control: Control) -> Result<(), Control> {
        let mut state = self.state.lock();
        if state.is_closed {
            return Err(control);
        }
        // A takeover already waiting wins over a kick or a cut-off: either way the
        // connection goes.
        if !matches!(control, Control::TakeOver(_)) && state.control.is_some() {
            return Ok(());
        }
        state.control = Some(control);
        drop(state);
        self.ready.notify_one();
        self.control_ready.notify_one();
        Ok(())
    }

    /// Moves up to `max` deliveries into `batch`, oldest first.
    pub fn take(&self, max: usize, batch: &mut Vec<Delivery>) {
        let mut state = self.state.lock();
        let n = state.deliveries.len().min(max);
        batch.extend(state.deliveries.drain(..n));
        if state.deliveries.is_empty() && state.deliveries.capacity() > 1024 {
            // A burst is over: give its memory back.
            state.deliveries = VecDeque::new();
        }
    }

    /// Drops the deliveries waiting, keeping any control request: they were routed
    /// to a session that has since been discarded.
    pub fn discard_deliveries(&self) {
        self.state.lock().deliveries = VecDeque::new();
    }

    /// The pending control request, if any.
    pub fn take_control(&self) -> Option<Control> {
        self.state.lock().control.take()
    }

    /// Waits until a control request is pending. Cancel-safe: a request that
    /// arrives while nobody waits leaves a permit for the next call.
    pub async fn control_requested(&self) {
        loop {
            if self.state.lock().control.is_some() {
                return;
            }
            self.control_ready.notified().await;
        }
    }

    /// Whether deliveries are waiting.
    pub fn has_deliveries(&self) -> bool {
        !self.state.lock().deliveries.is_empty()
    }

    /// Waits until something may have arrived since the last check. Cancel-safe: a
    /// wake-up that lands while the caller is elsewhere is kept for the next call.
    pub async fn wait(&self) {
        self.ready.notified().await;
    }

    /// Refuses further deliveries and drops the queued ones: the connection is gone.
    pub fn close(&self) {
        let mut state = self.state.lock();
        state.is_closed = true;
        state.deliveries = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::message::Message;
    use crate::protocol::{Properties, QoS, TopicName};
    use std::sync::Arc;

    fn delivery(n: u8) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: TopicName::new("t").unwrap(),
                payload: bytes::Bytes::from(vec![n]),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
                expires_at: None,
            }),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_ids: Vec::new(),
            seq: None,
        }
    }

    #[test]
    fn batches_come_out_in_order_and_bounded() {
        let mailbox = Mailbox::default();
        for n in 0..5 {
            assert!(mailbox.push(delivery(n)));
        }
        let mut batch = Vec::new();
        mailbox.take(3, &mut batch);
        assert_eq!(
            batch
                .iter()
                .map(|d| d.message.payload[0])
                .collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert!(mailbox.has_deliveries());
        batch.clear();
        mailbox.take(10, &mut batch);
        assert_eq!(batch.len(), 2);
        assert!(!mailbox.has_deliveries());
    }

    #[test]
    fn a_closed_mailbox_refuses_deliveries() {
        let mailbox = Mailbox::default();
        mailbox.push(delivery(1));
        mailbox.close();
        assert!(!mailbox.push(delivery(2)));
        assert!(!mailbox.has_deliveries());
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_receiver() {
        let mailbox = Arc::new(Mailbox::default());
        let waiter = tokio::spawn({
            let mailbox = mailbox.clone();
            async move { mailbox.wait().await }
        });
        tokio::task::yield_now().await;
        mailbox.push(delivery(1));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
