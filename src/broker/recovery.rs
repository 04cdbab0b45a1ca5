//! The broker's side of persistence: session records written as connections
//! attach and leave, and the rebuild of registry, router and retained set from
//! storage at startup.
//!
//! Only the small things come back into memory: a registry slot per session, the
//! subscriptions and the retained messages. Queues stay on disk until their
//! session reconnects (mosquitto #3273).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::{Departure, Detached, PendingWill, Restored};
use super::router::{Filter, Subscription};
use super::Broker;
use crate::protocol::ClientId;
use crate::storage::{self, Message, SessionRecord, StoredWill, WillMessage};

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
    pub fn recover(&self, now: Instant) -> Result<Recovery, storage::Error> {
        let recovered = self.storage.recover()?;
        let mut recovery = Recovery {
            sessions: recovered.sessions.len(),
            subscriptions: 0,
            retained: recovered.retained.len(),
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
        let mut router = self.router.write();
        for stored in recovered.subscriptions {
            match Filter::parse(&stored.filter) {
                Ok(filter) => {
                    let subscription = Subscription {
                        options: stored.options,
                        identifier: stored.identifier,
                    };
                    router.subscribe(&stored.client_id, &filter, subscription);
                    recovery.subscriptions += 1;
                }
                Err(error) => {
                    tracing::warn!(client_id = %stored.client_id, filter = %stored.filter, %error, "stored filter skipped");
                }
            }
        }
        drop(router);
        let mut retained = self.retained.write();
        for message in recovered.retained {
            retained.set(message);
        }
        drop(retained);
        // Before anyone can connect: end what expired while the broker was down.
        self.on_tick(Instant::now());
        Ok(recovery)
    }

    /// Stores the record of a session a connection now holds, before CONNACK: if
    /// the broker dies while it is connected, the session (and its subscriptions)
    /// come back, expiring `expiry` after the restart (`None`: never), and its will
    /// is published as if the client had gone at the restart.
    ///
    /// A session that ends with its connection (`Some(ZERO)`) is stored only when
    /// it has a will, for the will's sake: after a crash it is published at once,
    /// since the session has ended ([MQTT-3.1.3-9]). Its record is deleted when the
    /// connection ends, as any ended session's is.
    pub fn open_session(
        &self,
        client_id: &ClientId,
        expiry: Option<Duration>,
        will: Option<&WillMessage>,
    ) -> Result<(), storage::Error> {
        if expiry == Some(Duration::ZERO) && will.is_none() {
            return Ok(());
        }
        let record = SessionRecord::Online {
            expiry,
            will: will.map(|will| Box::new(will.clone())),
        };
        self.storage.save_session(client_id, &record)
    }

    /// Records that a connection ended (see [`super::registry::Registry::detach`]),
    /// stores when the offline session expires and any will it still holds, and
    /// publishes `will`, the will due now. A connection that was taken over hands
    /// its departure to its successor instead.
    ///
    /// The will due now is published in the same write that takes it out of the
    /// stored record (which held it since CONNECT), so a crash leaves it published
    /// or still held, never both and never neither. An ended session's record then
    /// says "expired", until [`Broker::end_session`] deletes it.
    pub fn detach(
        &self,
        client_id: &ClientId,
        connection_id: u64,
        departure: Departure,
        will: Option<Arc<Message>>,
    ) -> Detached {
        let record = match &departure {
            Departure::End => will.is_some().then(|| SessionRecord::Offline {
                expires_at: Some(Instant::now()),
                will: None,
            }),
            Departure::Held => None,
            Departure::Offline { expires_at, will } => Some(SessionRecord::Offline {
                expires_at: *expires_at,
                will: will.as_ref().map(|will| StoredWill {
                    publish_at: will.publish_at,
                    message: will.message.clone(),
                }),
            }),
        };
        let detached = self.registry.detach(client_id, connection_id, departure);
        let stored = match (&detached, &record, will) {
            (Detached::Own, Some(record), Some(will)) => {
                self.publish_will(client_id, will, record).map(|_| ())
            }
            (Detached::Own, Some(record), None) => self.storage.save_session(client_id, record),
            // The record is the successor's now, or another connection's.
            (_, _, Some(will)) => self.publish(client_id, will).map(|_| ()),
            (_, _, None) => Ok(()),
        };
        if let Err(error) = stored {
            tracing::error!(%client_id, %error, "could not store the departure or publish the will");
        }
        detached
    }
}

/// What a new connection found of its session once any connection that held it
/// had let go.
#[derive(Debug)]
pub enum Prior {
    /// There was no session.
    Nothing,
    /// The previous connection ended the session as it left (it was not
    /// persistent, or its DISCONNECT set the expiry to 0).
    Ended,
    /// A session waits to be resumed, with a will still held back for its delay.
    Session {
        /// The will the session still holds, if any.
        will: Option<PendingWill>,
    },
}

impl Broker {
    /// Settles a new connection's claim on its session; returns whether a session
    /// is present ([MQTT-3.2.2-2]). A session that ended, or that this Clean Start
    /// discards ([MQTT-3.1.2-4]), loses its subscriptions and stored state here.
    pub fn settle_session(&self, client_id: &ClientId, clean_start: bool, prior: Prior) -> bool {
        let will = match prior {
            Prior::Nothing => return false,
            // [MQTT-3.1.3-9] a new connection before the will delay passes cancels the will.
            Prior::Session { .. } if !clean_start => return true,
            Prior::Ended => None,
            Prior::Session { will } => will,
        };
        // The session ends now, so a will waiting for its delay is due now ([MQTT-3.1.3-9]).
        if let Some(will) = will {
            // Stored with the will: the session ended, so a crash before
            // `end_session` below cannot bring the will back.
            let record = SessionRecord::Offline {
                expires_at: Some(Instant::now()),
                will: None,
            };
            if let Err(error) = self.publish_will(client_id, will.message, &record) {
                tracing::error!(%error, "could not store the will message");
            }
        }
        if let Err(error) = self.end_session(client_id) {
            tracing::error!(%error, "could not discard the previous session");
        }
        if let Some(slot) = self.registry.get(client_id) {
            slot.set_queued(0);
        }
        false
    }
}
