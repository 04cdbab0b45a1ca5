//! A session moving between nodes (issue 10): this node resumes a session that
//! another node held, or lets go of one that another node claimed. The
//! [`SessionStore`](super::seam::SessionStore) decides who owns a session
//! (compare-and-set in the cluster's session bucket); this carries out what that
//! means for this node's router, registry and the connection holding the session.
//!
//! What a session had queued on the node it left stays there and is dropped:
//! only its subscriptions follow it (see README, Cluster).

use super::lifecycle::{left_behind, Prior};
use super::mailbox::{Control, Successor};
use super::registry::{HandOff, EXPIRY};
use super::seam::{StoredSubscription, TakenElsewhere};
use super::Broker;
use crate::protocol::ClientId;

/// How the log line of a connection taken over from another node names its successor.
const ANOTHER_NODE: &str = "another node";

impl Broker {
    /// Installs the subscriptions of a session that another node held and a new
    /// connection here resumes, then waits until the cluster routes their
    /// messages to this node: a message published after CONNACK reaches the
    /// client. Returns the session as the connection now finds it.
    pub(super) async fn adopt(
        &self,
        client_id: &ClientId,
        subscriptions: Vec<StoredSubscription>,
        prior: Prior,
    ) -> Prior {
        // Subscriptions an older stay of the session here left are stale: the
        // other node's are newer.
        let stale = self.router.write().remove_client(client_id);
        for filter in stale {
            self.fanout.remove_interest(&filter.to_string());
        }
        let restored = self.restore_subscriptions(subscriptions);
        tracing::debug!(%client_id, subscriptions = restored, "session resumed from another node");
        self.fanout.interest_settled().await;
        match prior {
            Prior::Session { will } => Prior::Session { will },
            Prior::Nothing | Prior::Ended => Prior::Session { will: None },
        }
    }

    /// Lets go of a session that another node claimed. A connection holding it is
    /// taken over as by a local successor: v5 DISCONNECT 0x8E Session taken over,
    /// a 3.1.1 connection closed ([MQTT-3.1.4-3]), a will without delay published
    /// as it goes. A will still waiting for its delay is cancelled if the new
    /// owner resumed the session, and published now if it started a new one
    /// ([MQTT-3.1.3-9]). Then the session's subscriptions leave this node's router.
    ///
    /// The store has already forgotten what this node kept of the session, and
    /// fences every write the old connection still makes.
    pub async fn release_to_other_node(&self, taken: TakenElsewhere) {
        let client_id = &taken.client_id;
        let prior = match self.registry.hand_off(client_id) {
            HandOff::Nothing => return,
            HandOff::Online { link, departed } => {
                let successor = Box::new(Successor {
                    peer: None,
                    listener: ANOTHER_NODE.into(),
                });
                let _ = link.mailbox.send_control(Control::TakeOver(successor));
                left_behind(departed, link.is_persistent).await
            }
            HandOff::Offline { will } => Prior::Session { will },
        };
        if let Prior::Session { will: Some(will) } = prior {
            if !taken.is_resumed {
                if let Err(error) = self.publish(client_id, will.message) {
                    tracing::error!(%client_id, %error, "could not publish the will");
                }
            }
        }
        let filters = self.router.write().remove_client(client_id);
        for filter in filters {
            self.fanout.remove_interest(&filter.to_string());
        }
        self.registry.finish_ending(client_id, EXPIRY);
        tracing::debug!(%client_id, "session taken by another node");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::broker::message::Message;
    use crate::broker::registry::{Link, PendingWill, Restored};
    use crate::broker::router::{Filter, Subscription};
    use crate::broker::seam::Claim;
    use crate::broker::{Mailbox, SessionRequest};
    use crate::config::{Limits, SessionConfig};
    use crate::protocol::{QoS, SubscriptionOptions, TopicName};
    use crate::storage::Storage;

    fn broker() -> Broker {
        Broker::new(
            Limits::default(),
            SessionConfig::default(),
            Storage::in_memory(),
        )
    }

    /// An offline session with a subscription and a will due in an hour.
    fn offline_with_delayed_will(broker: &Broker, client_id: &ClientId) {
        let message = Message {
            topic: TopicName::new("will/t").unwrap(),
            payload: "gone".into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
        };
        let restored = Restored {
            expires_at: None,
            will: Some(PendingWill {
                publish_at: Instant::now() + Duration::from_secs(3600),
                message: Arc::new(message),
            }),
            next_seq: 1,
            queued: 0,
        };
        broker.registry.restore(client_id.clone(), restored);
        let subscription = Subscription {
            options: SubscriptionOptions::default(),
            identifier: None,
        };
        let filter = Filter::parse("t").unwrap();
        broker
            .subscribe(client_id, Claim::default(), &filter, subscription)
            .unwrap();
    }

    /// A connected client subscribed to the will's topic; its mailbox.
    async fn watcher(broker: &Broker) -> Arc<Mailbox> {
        let client_id = ClientId::new("watcher");
        let mailbox = Arc::new(Mailbox::default());
        let link = Link {
            connection_id: broker.next_connection_id(),
            mailbox: mailbox.clone(),
            is_persistent: false,
        };
        let request = SessionRequest {
            client_id: &client_id,
            clean_start: true,
            expiry: Some(Duration::ZERO),
            will: None,
            connection: Successor {
                peer: None,
                listener: "test".into(),
            },
        };
        let attached = broker.connect(request, link).await.unwrap();
        let subscription = Subscription {
            options: SubscriptionOptions::default(),
            identifier: None,
        };
        let filter = Filter::parse("will/t").unwrap();
        broker
            .subscribe(&client_id, attached.claim, &filter, subscription)
            .unwrap();
        mailbox
    }

    #[tokio::test]
    async fn issue_10_a_session_resumed_elsewhere_leaves_this_node_and_its_delayed_will_is_cancelled(
    ) {
        let broker = broker();
        let watcher = watcher(&broker).await;
        let client_id = ClientId::new("c");
        offline_with_delayed_will(&broker, &client_id);
        let taken = TakenElsewhere {
            client_id: client_id.clone(),
            is_resumed: true,
        };
        broker.release_to_other_node(taken).await;
        assert!(broker.subscriptions_of(&client_id).is_empty());
        assert!(broker.registry.get(&client_id).is_none());
        // [MQTT-3.1.3-9] the session continues elsewhere: no will.
        assert!(!watcher.has_deliveries());
        broker.on_tick(Instant::now() + Duration::from_secs(7200));
        assert!(!watcher.has_deliveries(), "the will was kept on this node");
    }

    #[tokio::test]
    async fn issue_10_a_session_restarted_elsewhere_publishes_its_delayed_will_now() {
        let broker = broker();
        let watcher = watcher(&broker).await;
        let client_id = ClientId::new("c");
        offline_with_delayed_will(&broker, &client_id);
        let taken = TakenElsewhere {
            client_id: client_id.clone(),
            is_resumed: false,
        };
        broker.release_to_other_node(taken).await;
        // [MQTT-3.1.3-9] the session ended (Clean Start elsewhere): the will is due.
        let mut batch = Vec::new();
        watcher.take(10, &mut batch);
        assert_eq!(batch.len(), 1);
        assert_eq!(&batch[0].message.payload[..], b"gone");
        assert!(broker.subscriptions_of(&client_id).is_empty());
    }
}
