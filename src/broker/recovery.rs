//! The rebuild of registry, router and retained set from the stores at startup.
//!
//! Only the small things come back into memory: a registry slot per session, the
//! subscriptions and the retained messages. Queues stay on disk until their
//! session reconnects (mosquitto #3273).

use std::sync::Arc;
use std::time::Instant;

use super::registry::{PendingWill, Restored};
use super::router::{Filter, Subscription};
use super::seam::{self, SessionRecord, StoredSubscription};
use super::Broker;

/// What startup found on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Persistent sessions, now offline.
    pub sessions: usize,
    /// Their subscriptions.
    pub subscriptions: usize,
    /// Retained messages.
    pub retained: usize,
}

impl Broker {
    /// Rebuilds sessions, subscriptions and retained messages from storage. Called
    /// once, before the listeners accept. Sessions whose expiry passed while the
    /// broker was down are ended here, their wills published ([MQTT-3.1.3-9]).
    pub fn recover(&self, now: Instant) -> Result<Recovery, seam::Error> {
        let recovered = self.sessions.recover()?;
        let retained_messages = self.retain_store.load()?;
        let mut recovery = Recovery {
            sessions: recovered.sessions.len(),
            subscriptions: 0,
            retained: retained_messages.len(),
        };
        for session in recovered.sessions {
            let (expires_at, will) = match session.record {
                // The connection was cut by a crash, or held at a shutdown: the
                // session counts as disconnected now, so its expiry and its will's
                // delay count from now ([MQTT-3.1.2-8], [MQTT-3.1.3-9]).
                SessionRecord::Online { expiry, will } => (
                    expiry.and_then(|d| now.checked_add(d)),
                    will.map(|will| {
                        let publish_at = now.checked_add(will.delay).unwrap_or(now);
                        PendingWill {
                            publish_at,
                            message: Arc::new(will.to_message(publish_at)),
                        }
                    }),
                ),
                SessionRecord::Offline { expires_at, will } => (
                    expires_at,
                    will.map(|will| PendingWill {
                        publish_at: will.publish_at,
                        message: will.message,
                    }),
                ),
            };
            let restored = Restored {
                expires_at,
                will,
                next_seq: session.max_seq.saturating_add(1),
                queued: session.queued,
            };
            self.registry.restore(session.client_id, restored);
        }
        recovery.subscriptions = self.restore_subscriptions(recovered.subscriptions);
        let mut retained = self.retained.write();
        for message in retained_messages {
            retained.set(message);
        }
        drop(retained);
        // Before anyone can connect: end what expired while the broker was down.
        self.on_tick(Instant::now());
        Ok(recovery)
    }

    /// Puts stored subscriptions back in the router, and tells the fan-out of the
    /// filters it did not route here yet. Returns how many were restored; a filter
    /// that no longer parses is skipped.
    pub(super) fn restore_subscriptions(&self, subscriptions: Vec<StoredSubscription>) -> usize {
        let mut restored = 0;
        let mut router = self.router.write();
        for stored in subscriptions {
            match Filter::parse(&stored.filter) {
                Ok(filter) => {
                    let subscription = Subscription {
                        options: stored.options,
                        identifier: stored.identifier,
                    };
                    if !router.subscribe(&stored.client_id, &filter, subscription) {
                        self.fanout.add_interest(&stored.filter);
                    }
                    restored += 1;
                }
                Err(error) => {
                    tracing::warn!(client_id = %stored.client_id, filter = %stored.filter, %error, "stored filter skipped");
                }
            }
        }
        restored
    }
}
