//! Who is where: for every session, whether a connection holds it now (and how to
//! reach that connection) or it waits offline until it expires.
//!
//! A slot outlives the connections that attach to it, so its message sequence
//! number and its queue count carry over a reconnect. The map lock is held only to
//! find or insert a slot; each slot has its own small lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::sync::oneshot;

use super::mailbox::{Control, Mailbox};
use super::message::{Delivery, Message};
use super::seam::Claim;
use crate::metrics::DropReason;
use crate::protocol::{ClientId, QoS};

/// How to reach the connection that holds a session.
#[derive(Debug, Clone)]
pub struct Link {
    /// Unique per connection, so a late detach of a replaced connection is ignored.
    pub connection_id: u64,
    /// Deliveries and control requests. Unbounded; the slot's queue count is the bound.
    pub mailbox: Arc<Mailbox>,
    /// Whether the session outlives this connection.
    pub is_persistent: bool,
}

/// A will waiting for its delay to pass ([MQTT-3.1.3-9]).
#[derive(Debug, Clone)]
pub struct PendingWill {
    /// When to publish it.
    pub publish_at: Instant,
    /// The will message.
    pub message: Arc<Message>,
}

/// The connection id under which an expired (or deleted) offline session is
/// [`Presence::Ending`]: connection ids start at 1.
pub const EXPIRY: u64 = 0;

/// Where a session is now.
#[derive(Debug)]
enum Presence {
    Online(Link),
    Offline {
        expires_at: Option<Instant>,
        will: Option<PendingWill>,
    },
    /// The connection that held the session ended it and is deleting what it
    /// kept; the slot stays until then, so that a new connection with the same
    /// client id waits for the clean-up instead of racing it (see
    /// [`Registry::finish_ending`]).
    Ending {
        connection_id: u64,
    },
}

/// One session's entry.
#[derive(Debug)]
pub struct ClientSlot {
    client_id: ClientId,
    next_seq: AtomicU64,
    queued: AtomicUsize,
    /// Messages sent and not yet acknowledged, as the connection last reported
    /// (see [`ClientSlot::set_in_flight`]); meaningful only while online.
    in_flight: AtomicUsize,
    presence: Mutex<Presence>,
    /// The epoch of the claim of the connection that holds (or last held) the
    /// session; 0 for a session restored at start-up.
    claim: AtomicU64,
    /// Connections that were replaced while they still held the session, each
    /// with the channel its successor waits on. Locked only under `presence`.
    handovers: Mutex<Vec<(u64, oneshot::Sender<Departure>)>>,
}

/// What the broker may do with one message for one client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Over the queue limit, or QoS 0 for an offline session: dropped and counted.
    Drop(DropReason),
    /// Send to the connection without storing (QoS 0, or a session that ends with its connection).
    Send,
    /// Store under this sequence number, then send if the session is online.
    Store(u64),
}

impl ClientSlot {
    /// The session's client id.
    pub fn client_id(&self) -> &ClientId {
        &self.client_id
    }

    /// Whether the session outlives its connection (an offline session always does).
    pub fn is_persistent(&self) -> bool {
        match &*self.presence.lock() {
            Presence::Online(link) => link.is_persistent,
            Presence::Offline { .. } => true,
            Presence::Ending { .. } => false,
        }
    }

    /// Decides the fate of one delivery and reserves its queue place.
    pub fn admit(&self, qos: QoS, max_queued: usize, queue_qos0: bool) -> Admission {
        let presence = self.presence.lock();
        let (is_online, is_persistent) = match &*presence {
            Presence::Online(link) => (true, link.is_persistent),
            Presence::Offline { .. } => (false, true),
            Presence::Ending { .. } => (false, false),
        };
        let must_store = is_persistent && (qos > QoS::AtMostOnce || (!is_online && queue_qos0));
        if !is_online && !must_store {
            return Admission::Drop(DropReason::Offline);
        }
        let queued = self.queued.load(Ordering::Relaxed);
        if max_queued != 0 && queued >= max_queued {
            return Admission::Drop(DropReason::QueueFull);
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if must_store {
            Admission::Store(self.next_seq.fetch_add(1, Ordering::Relaxed))
        } else {
            Admission::Send
        }
    }

    /// Hands a delivery to the connection holding the session, if any. Looks the
    /// link up now, not at admission, so a session that attached in between gets it.
    /// Returns `false` if the delivery is lost: it was not stored, and the
    /// connection went away since admission.
    pub fn deliver(&self, delivery: Delivery) -> bool {
        let is_stored = delivery.seq.is_some();
        let is_pushed = match &*self.presence.lock() {
            // A closed mailbox means the connection is ending; stored deliveries are
            // replayed from storage on the next attach, others end here.
            Presence::Online(link) => link.mailbox.push(delivery),
            Presence::Offline { .. } | Presence::Ending { .. } => false,
        };
        is_pushed || is_stored
    }

    /// Records how many messages the connection has in flight (a gauge for the
    /// metrics; the connection reports it once per turn, only when it changed).
    pub fn set_in_flight(&self, count: usize) {
        self.in_flight.store(count, Ordering::Relaxed);
    }

    /// Releases a queue place once a delivery is finished (sent at QoS 0, acknowledged, or dropped).
    pub fn release(&self) {
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Records the claim of the connection that now holds the session.
    pub fn set_claim(&self, claim: Claim) {
        self.claim.store(claim.epoch, Ordering::Relaxed);
    }

    /// The claim of the connection that holds, or last held, the session.
    pub fn claim(&self) -> Claim {
        Claim {
            epoch: self.claim.load(Ordering::Relaxed),
        }
    }

    /// An ending session still counts as online: its connection is finishing.
    fn depth(&self) -> Depth {
        let is_online = matches!(
            &*self.presence.lock(),
            Presence::Online(_) | Presence::Ending { .. }
        );
        Depth {
            queued: self.queued.load(Ordering::Relaxed),
            in_flight: is_online.then(|| self.in_flight.load(Ordering::Relaxed)),
        }
    }

    /// Drops what the connection holding the session has not sent yet, and its
    /// queue count: the session it was routed to is gone.
    pub fn discard_deliveries(&self) {
        if let Presence::Online(link) = &*self.presence.lock() {
            link.mailbox.discard_deliveries();
        }
        self.queued.store(0, Ordering::Relaxed);
    }

    /// Resets the queue count to what a resumed session actually holds.
    pub fn set_queued(&self, count: usize) {
        self.queued.store(count, Ordering::Relaxed);
    }

    /// Makes sure future sequence numbers are above `seq` (after loading stored entries).
    pub fn advance_seq_past(&self, seq: u64) {
        self.next_seq
            .fetch_max(seq.saturating_add(1), Ordering::Relaxed);
    }
}

/// What this node had of a session another node claimed.
#[derive(Debug)]
pub enum HandOff {
    /// Nothing, or a session already ending.
    Nothing,
    /// A connection, told nothing yet; its departure comes through `departed`.
    Online {
        /// The connection.
        link: Link,
        /// What it leaves behind.
        departed: oneshot::Receiver<Departure>,
    },
    /// An offline session, with a will waiting for its delay.
    Offline {
        /// The will.
        will: Option<PendingWill>,
    },
}

/// What was attached before a new connection took a slot.
#[derive(Debug)]
pub enum Previous {
    /// No session existed.
    Nothing,
    /// An offline persistent session, with its will if its delay had not passed.
    Offline {
        /// The will that was waiting, if any.
        will: Option<PendingWill>,
    },
    /// Another connection holds it. It has been replaced in the slot already; the
    /// new connection waits on `departed` for what it leaves behind, so that
    /// everything it read before letting go takes effect first.
    Online {
        /// How to tell the old connection to let go.
        link: Link,
        /// Completed when the old connection detaches (dropped if it never does).
        departed: oneshot::Receiver<Departure>,
    },
    /// The connection that held it ended the session and is deleting what it
    /// kept; `departed` completes (with [`Departure::End`]) once it is done.
    Ending {
        /// Completed when the clean-up is over.
        departed: oneshot::Receiver<Departure>,
    },
}

/// What became of a connection's departure (see [`crate::Broker::disconnect`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Detached {
    /// The connection still held the session: the departure took effect.
    Own,
    /// A newer connection had taken the session over and got the departure.
    HandedOver,
    /// Neither: the connection's session had been replaced and nobody waits for it.
    Stale,
}

/// What a finished connection leaves behind.
#[derive(Debug)]
pub enum Departure {
    /// The session ends with the connection.
    End,
    /// The session waits offline.
    Offline {
        /// When it expires; `None` never.
        expires_at: Option<Instant>,
        /// A will to publish later.
        will: Option<PendingWill>,
    },
    /// The broker is stopping while a connection holds a persistent session: the
    /// stored record stays as it was while connected, will included, and is settled
    /// after the restart as if the client had gone then. In memory, for the moments
    /// left before exit, the session waits offline without a deadline or a will, so
    /// that nothing here can publish the will, or end the session, a second time.
    Held,
}

/// Everything due at a given time: expired sessions and wills whose delay passed.
#[derive(Debug, Default)]
pub struct Due {
    /// Sessions whose expiry passed, with the claim of their last connection:
    /// their state must be deleted, then [`Registry::finish_ending`] called with
    /// [`EXPIRY`].
    pub expired: Vec<(ClientId, Claim)>,
    /// Wills to publish now; their sessions' stored records must forget them.
    pub wills: Vec<DueWill>,
}

/// A will whose delay passed, or whose session expired.
#[derive(Debug)]
pub struct DueWill {
    /// The session it belongs to.
    pub client_id: ClientId,
    /// The will message.
    pub message: Arc<Message>,
    /// When the session expires (it may have already).
    pub expires_at: Option<Instant>,
}

/// An offline session as storage remembers it.
#[derive(Debug)]
pub struct Restored {
    /// When it expires; `None` never.
    pub expires_at: Option<Instant>,
    /// A will waiting for its delay.
    pub will: Option<PendingWill>,
    /// The next sequence number: above every stored one.
    pub next_seq: u64,
    /// Stored queue entries.
    pub queued: usize,
}

/// Sessions counted by [`crate::Broker::census`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Sessions with a connection.
    pub online: usize,
    /// Sessions kept while their client is away.
    pub offline: usize,
    /// Messages queued for all sessions (those in flight included).
    pub queued: usize,
    /// Messages sent to connected clients and not yet acknowledged.
    pub in_flight: usize,
}

/// How much one session holds (see [`Broker::depths`](super::Broker::depths)).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    /// Messages queued for it, those in flight included.
    pub queued: usize,
    /// Messages in flight to its client; `None` while it is offline.
    pub in_flight: Option<usize>,
}

/// Every session, online or offline.
#[derive(Debug, Default)]
pub struct Registry {
    clients: RwLock<HashMap<ClientId, Arc<ClientSlot>>>,
}

impl Registry {
    /// The slot of a session, if one exists.
    pub fn get(&self, client_id: &ClientId) -> Option<Arc<ClientSlot>> {
        self.clients.read().get(client_id).cloned()
    }

    /// Points the session at a new connection and returns what held it before.
    /// The new mailbox is installed *before* the caller loads stored deliveries: a
    /// publish racing this attach lands in storage before the load or in the new
    /// mailbox after it, never nowhere.
    pub fn attach(&self, client_id: &ClientId, link: Link) -> (Arc<ClientSlot>, Previous) {
        let mut is_new = false;
        // The slot's presence is locked before the map is let go: otherwise
        // [`Registry::finish_ending`] could remove the slot in between, and this
        // connection would wait on a slot no one finishes (issue 10).
        let mut clients = self.clients.write();
        let slot = {
            let slot = clients.entry(client_id.clone()).or_insert_with(|| {
                is_new = true;
                Arc::new(ClientSlot {
                    client_id: client_id.clone(),
                    next_seq: AtomicU64::new(1),
                    queued: AtomicUsize::new(0),
                    in_flight: AtomicUsize::new(0),
                    presence: Mutex::new(Presence::Offline {
                        expires_at: None,
                        will: None,
                    }),
                    handovers: Mutex::default(),
                    claim: AtomicU64::new(0),
                })
            });
            slot.clone()
        };
        #[cfg(test)]
        tests::before_presence_lock();
        let mut presence = slot.presence.lock();
        drop(clients);
        let previous = std::mem::replace(&mut *presence, Presence::Online(link));
        let previous = match previous {
            Presence::Online(old) => {
                let (done, departed) = oneshot::channel();
                slot.handovers.lock().push((old.connection_id, done));
                Previous::Online {
                    link: old,
                    departed,
                }
            }
            Presence::Ending { connection_id } => {
                let (done, departed) = oneshot::channel();
                slot.handovers.lock().push((connection_id, done));
                Previous::Ending { departed }
            }
            Presence::Offline { .. } if is_new => Previous::Nothing,
            Presence::Offline { will, .. } => Previous::Offline { will },
        };
        drop(presence);
        (slot, previous)
    }

    /// Recreates an offline session found in storage at startup, so that the
    /// next connection with its client id resumes it.
    pub fn restore(&self, client_id: ClientId, restored: Restored) {
        let slot = Arc::new(ClientSlot {
            client_id: client_id.clone(),
            next_seq: AtomicU64::new(restored.next_seq),
            queued: AtomicUsize::new(restored.queued),
            in_flight: AtomicUsize::new(0),
            presence: Mutex::new(Presence::Offline {
                expires_at: restored.expires_at,
                will: restored.will,
            }),
            handovers: Mutex::default(),
            claim: AtomicU64::new(0),
        });
        self.clients.write().insert(client_id, slot);
    }

    /// Records that a connection ended. If another connection took the session
    /// over meanwhile, the departure goes to that connection instead, which decides
    /// what remains of the session (it waits for this, see [`Previous::Online`]).
    pub fn detach(
        &self,
        client_id: &ClientId,
        connection_id: u64,
        departure: Departure,
    ) -> Detached {
        let Some(slot) = self.get(client_id) else {
            return Detached::Stale;
        };
        let mut presence = slot.presence.lock();
        if !matches!(&*presence, Presence::Online(link) if link.connection_id == connection_id) {
            let mut handovers = slot.handovers.lock();
            let Some(index) = handovers.iter().position(|(id, _)| *id == connection_id) else {
                return Detached::Stale;
            };
            let (_, successor) = handovers.swap_remove(index);
            return match successor.send(departure) {
                Ok(()) => Detached::HandedOver,
                Err(_) => Detached::Stale,
            };
        }
        match departure {
            Departure::End => *presence = Presence::Ending { connection_id },
            Departure::Offline { expires_at, will } => {
                *presence = Presence::Offline { expires_at, will };
            }
            Departure::Held => {
                *presence = Presence::Offline {
                    expires_at: None,
                    will: None,
                };
            }
        }
        Detached::Own
    }

    /// Ends the [`Presence::Ending`] that [`Registry::detach`] left: removes the
    /// slot, or, if a new connection attached meanwhile, tells it the session ended.
    pub fn finish_ending(&self, client_id: &ClientId, connection_id: u64) {
        let mut clients = self.clients.write();
        let Some(slot) = clients.get(client_id).cloned() else {
            return;
        };
        let presence = slot.presence.lock();
        if matches!(&*presence, Presence::Ending { connection_id: id } if *id == connection_id) {
            drop(presence);
            clients.remove(client_id);
            return;
        }
        let mut handovers = slot.handovers.lock();
        if let Some(index) = handovers.iter().position(|(id, _)| *id == connection_id) {
            let (_, successor) = handovers.swap_remove(index);
            let _ = successor.send(Departure::End);
        }
    }

    /// Marks a session that another node claimed as ending, so that a new local
    /// connection waits for the clean-up. A connection that holds it hands its
    /// departure over as it would to a local successor. Call
    /// [`Registry::finish_ending`] with [`EXPIRY`] once it is let go.
    pub fn hand_off(&self, client_id: &ClientId) -> HandOff {
        let Some(slot) = self.get(client_id) else {
            return HandOff::Nothing;
        };
        let mut presence = slot.presence.lock();
        if matches!(&*presence, Presence::Ending { .. }) {
            return HandOff::Nothing;
        }
        let ending = Presence::Ending {
            connection_id: EXPIRY,
        };
        match std::mem::replace(&mut *presence, ending) {
            Presence::Online(link) => {
                let (done, departed) = oneshot::channel();
                slot.handovers.lock().push((link.connection_id, done));
                HandOff::Online { link, departed }
            }
            Presence::Offline { will, .. } => HandOff::Offline { will },
            Presence::Ending { .. } => HandOff::Nothing,
        }
    }

    /// Marks an offline session as ending (an admin deleting it), so that a new
    /// connection waits for the clean-up; returns the claim of its last
    /// connection, or `None` if the session is online or does not exist. Call
    /// [`Registry::finish_ending`] with [`EXPIRY`] once it is deleted.
    pub fn begin_ending(&self, client_id: &ClientId) -> Option<Claim> {
        let slot = self.get(client_id)?;
        let mut presence = slot.presence.lock();
        if !matches!(&*presence, Presence::Offline { .. }) {
            return None;
        }
        *presence = Presence::Ending {
            connection_id: EXPIRY,
        };
        Some(slot.claim())
    }

    /// Sessions online and offline, and the messages queued for all of them. Locks
    /// each slot in turn: for `$SYS`, not the hot path.
    pub fn census(&self) -> Census {
        let clients = self.clients.read();
        let mut census = Census::default();
        for slot in clients.values() {
            let depth = slot.depth();
            match depth.in_flight {
                Some(in_flight) => {
                    census.online += 1;
                    census.in_flight += in_flight;
                }
                None => census.offline += 1,
            }
            census.queued += depth.queued;
        }
        census
    }

    /// Every session's queue depth and in-flight count, for the metrics'
    /// distributions. Like [`Registry::census`], not for the hot path.
    pub fn depths(&self) -> Vec<Depth> {
        let clients = self.clients.read();
        clients.values().map(|slot| slot.depth()).collect()
    }

    /// Asks the connection holding `client_id` to disconnect it. Returns whether
    /// one was online. A connection already being taken over is left to that.
    pub fn kick(&self, client_id: &ClientId) -> bool {
        let Some(slot) = self.get(client_id) else {
            return false;
        };
        let presence = slot.presence.lock();
        match &*presence {
            Presence::Online(link) => link.mailbox.send_control(Control::Kick).is_ok(),
            Presence::Offline { .. } | Presence::Ending { .. } => false,
        }
    }

    /// Asks every connection to disconnect its client because this node is cut off
    /// from its cluster; returns how many were asked.
    pub fn cut_off_all(&self) -> usize {
        let slots: Vec<Arc<ClientSlot>> = self.clients.read().values().cloned().collect();
        slots
            .iter()
            .filter(|slot| match &*slot.presence.lock() {
                Presence::Online(link) => link.mailbox.send_control(Control::CutOff).is_ok(),
                Presence::Offline { .. } | Presence::Ending { .. } => false,
            })
            .count()
    }

    /// Every session: its client id, whether it is online, and its queue length.
    pub fn sessions(&self) -> Vec<(ClientId, bool, usize)> {
        let clients = self.clients.read();
        clients
            .iter()
            .map(|(client_id, slot)| {
                let is_online = !matches!(&*slot.presence.lock(), Presence::Offline { .. });
                let queued = slot.queued.load(Ordering::Relaxed);
                (client_id.clone(), is_online, queued)
            })
            .collect()
    }

    /// Number of sessions, online and offline.
    pub fn len(&self) -> usize {
        self.clients.read().len()
    }

    /// Takes every expired offline session and every will whose delay has passed.
    /// A will is also due when its session expires first ([MQTT-3.1.3-9]).
    pub fn take_due(&self, now: Instant) -> Due {
        let mut due = Due::default();
        let clients = self.clients.read();
        for (client_id, slot) in clients.iter() {
            let mut presence = slot.presence.lock();
            let Presence::Offline { expires_at, will } = &mut *presence else {
                continue;
            };
            let is_expired = expires_at.is_some_and(|at| at <= now);
            if let Some(pending) = will.take() {
                if is_expired || pending.publish_at <= now {
                    due.wills.push(DueWill {
                        client_id: client_id.clone(),
                        message: pending.message,
                        expires_at: *expires_at,
                    });
                } else {
                    *will = Some(pending);
                }
            }
            if is_expired {
                due.expired.push((client_id.clone(), slot.claim()));
                *presence = Presence::Ending {
                    connection_id: EXPIRY,
                };
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(connection_id: u64) -> Link {
        Link {
            connection_id,
            mailbox: Arc::new(Mailbox::default()),
            is_persistent: false,
        }
    }

    std::thread_local! {
        /// Run by [`Registry::attach`] between finding the slot and locking its
        /// presence, on the attaching thread: where a race would bite.
        static BEFORE_PRESENCE_LOCK: std::cell::RefCell<Option<Box<dyn FnMut()>>> =
            std::cell::RefCell::new(None);
    }

    pub(super) fn before_presence_lock() {
        BEFORE_PRESENCE_LOCK.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook();
            }
        });
    }

    #[test]
    fn issue_10_a_connection_attaching_while_an_ended_session_is_removed_is_told_it_ended() {
        // A connection that finds the session ending waits for the clean-up's
        // word. If the clean-up removed the slot between the new connection's map
        // lookup and its presence lock, the word never came: the CONNACK waited
        // the whole takeover timeout. The clean-up runs on another thread right
        // in that gap, given 100 ms to finish there (it cannot while the attach
        // holds the map, which is the fix).
        let registry = Arc::new(Registry::default());
        let client_id = ClientId::new("c");
        registry.attach(&client_id, link(1));
        registry.detach(&client_id, 1, Departure::End);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let finisher = std::sync::Arc::new(parking_lot::Mutex::new(None));
        {
            let (registry, client_id, finisher) =
                (registry.clone(), client_id.clone(), finisher.clone());
            BEFORE_PRESENCE_LOCK.with(|hook| {
                *hook.borrow_mut() = Some(Box::new(move || {
                    let (registry, client_id, done_tx) =
                        (registry.clone(), client_id.clone(), done_tx.clone());
                    *finisher.lock() = Some(std::thread::spawn(move || {
                        registry.finish_ending(&client_id, 1);
                        let _ = done_tx.send(());
                    }));
                    let _ = done_rx.recv_timeout(std::time::Duration::from_millis(100));
                }));
            });
        }
        let (_, previous) = registry.attach(&client_id, link(2));
        BEFORE_PRESENCE_LOCK.with(|hook| hook.borrow_mut().take());
        if let Some(finisher) = finisher.lock().take() {
            finisher.join().unwrap();
        }
        let Previous::Ending { mut departed } = previous else {
            panic!("the attach should have found the session ending");
        };
        assert!(
            matches!(departed.try_recv(), Ok(Departure::End)),
            "the attach was never told the session ended"
        );
    }
}
