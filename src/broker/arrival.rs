//! Arrival order across connections: a PUBLISH is routed only after the other
//! connections whose input arrived before it have handled that input, so a
//! SUBSCRIBE that reached the broker first takes effect first.
//!
//! The spec orders only each connection's own packets ([MQTT-4.6.0-5]), and a
//! single-threaded broker (Mosquitto) keeps arrival order for free. Here each
//! connection runs on whichever worker is free, and tokio runs the task it woke
//! last first (its LIFO slot), so a PUBLISH that arrived 100 µs after another
//! connection's SUBSCRIBE was routed before it about 3 % of the time (issue 8).
//!
//! The order is taken from the reactor: a connection draws a ticket when its
//! socket wakes it (in the order the kernel reported readiness), and gives the
//! ticket back once a read finds nothing more to handle. A connection about to
//! route a PUBLISH waits, for a bounded time, while a smaller ticket is out.
//!
//! Only input that can change where a PUBLISH goes needs ordering. A connection
//! that has sent nothing but PUBLISH, acknowledgements and PINGREQ for a while (a
//! steady publisher or subscriber: [`Place::set_ordered`]) draws no tickets, so
//! under load, where every connection is such a stream, publishers do not wait
//! on each other and the fast path is one atomic load.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Wake, Waker};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

/// How long a PUBLISH waits at most for earlier arrivals before it is routed
/// regardless: a connection that does not get a worker in that time is not allowed
/// to stall everyone else.
pub const MAX_GIVE_WAY: Duration = Duration::from_millis(5);

/// How often a waiting PUBLISH yields its worker before it sleeps: usually the
/// earlier connection is runnable and settles within a few task switches.
const YIELDS_BEFORE_SLEEP: usize = 4;

/// The tickets of every connection that was woken and has not yet handled what
/// woke it. One per broker.
#[derive(Debug, Default)]
pub struct Arrivals {
    next: AtomicU64,
    /// How many tickets are out: read without the lock on every PUBLISH.
    outstanding: AtomicUsize,
    pending: Mutex<BTreeSet<u64>>,
    /// Woken when a ticket is given back while someone sleeps (`sleeping` > 0).
    settled: Notify,
    sleeping: AtomicUsize,
}

impl Arrivals {
    fn draw(&self) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.pending.lock().insert(ticket);
        self.outstanding.fetch_add(1, Ordering::Release);
        ticket
    }

    fn give_back(&self, ticket: u64) {
        if self.pending.lock().remove(&ticket) {
            self.outstanding.fetch_sub(1, Ordering::Release);
        }
        if self.sleeping.load(Ordering::Acquire) > 0 {
            self.settled.notify_waiters();
        }
    }

    /// Whether a connection woken before `ticket` (0: now) still has input to handle.
    pub fn has_earlier(&self, ticket: u64) -> bool {
        if self.outstanding.load(Ordering::Acquire) == 0 {
            return false;
        }
        let ticket = match ticket {
            0 => u64::MAX,
            ticket => ticket,
        };
        self.pending
            .lock()
            .first()
            .is_some_and(|&earliest| earliest < ticket)
    }

    /// Waits, for at most [`MAX_GIVE_WAY`], until no connection woken before
    /// `ticket` (0: now) has input left to handle: a few yields first, then a sleep,
    /// so that an earlier connection sharing this core gets it. Cancel-safe.
    pub async fn wait_for_earlier(&self, ticket: u64) {
        for _ in 0..YIELDS_BEFORE_SLEEP {
            if !self.has_earlier(ticket) {
                return;
            }
            tokio::task::yield_now().await;
        }
        if !self.has_earlier(ticket) {
            return;
        }
        self.sleeping.fetch_add(1, Ordering::AcqRel);
        let _ = tokio::time::timeout(MAX_GIVE_WAY, async {
            loop {
                let settled = self.settled.notified();
                if !self.has_earlier(ticket) {
                    return;
                }
                settled.await;
            }
        })
        .await;
        self.sleeping.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's place in the arrival order: the waker its socket reads are
/// polled with. Waking it draws a ticket (while the connection is ordered), then
/// wakes the task as usual.
#[derive(Debug)]
pub struct Place {
    arrivals: Arc<Arrivals>,
    ticket: AtomicU64,
    /// Wake-ups so far: input that arrives while a read is being polled must keep
    /// the ticket that read would otherwise give back.
    wakes: AtomicU64,
    is_ordered: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Place {
    /// A place in `arrivals`, and the waker to poll socket reads with. A new
    /// connection is ordered: its first SUBSCRIBE must not be overtaken.
    pub fn new(arrivals: Arc<Arrivals>) -> (Arc<Place>, Waker) {
        let place = Arc::new(Place {
            arrivals,
            ticket: AtomicU64::new(0),
            wakes: AtomicU64::new(0),
            is_ordered: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        let waker = Waker::from(place.clone());
        (place, waker)
    }

    /// Points the socket's wake-ups at the task now polling (tokio's waker for a
    /// task does not change, so this clones once).
    pub fn register(&self, task: &Waker) {
        let mut current = self.task.lock();
        if !current
            .as_ref()
            .is_some_and(|current| current.will_wake(task))
        {
            *current = Some(task.clone());
        }
    }

    /// Whether this connection's input is ordered against others' PUBLISH. The
    /// connection turns it off after a run of packets that cannot change routing,
    /// and on again at the first one that can.
    pub fn set_ordered(&self, is_ordered: bool) {
        if self.is_ordered.swap(is_ordered, Ordering::AcqRel) && !is_ordered {
            self.leave();
        }
    }

    /// This connection's ticket; 0 if it was not woken by its socket.
    pub fn ticket(&self) -> u64 {
        self.ticket.load(Ordering::Acquire)
    }

    /// How many times the socket has woken this connection; see [`Place::settle`].
    pub fn wakes(&self) -> u64 {
        self.wakes.load(Ordering::Acquire)
    }

    /// A read found nothing: everything that woke this connection has been
    /// handled, unless the socket woke it again since `wakes` was taken.
    pub fn settle(&self, wakes: u64) {
        if self.wakes() == wakes {
            self.leave();
        }
    }

    /// The connection is gone: whatever it held is given back.
    pub fn leave(&self) {
        let ticket = self.ticket.swap(0, Ordering::AcqRel);
        if ticket != 0 {
            self.arrivals.give_back(ticket);
        }
    }

    /// Waits until the connections woken before this one have handled their input
    /// (see [`Arrivals::wait_for_earlier`]).
    pub async fn wait_for_earlier(&self) {
        self.arrivals.wait_for_earlier(self.ticket()).await;
    }
}

impl Wake for Place {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::AcqRel);
        if self.is_ordered.load(Ordering::Acquire) && self.ticket.load(Ordering::Acquire) == 0 {
            let ticket = self.arrivals.draw();
            if self
                .ticket
                .compare_exchange(0, ticket, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                self.arrivals.give_back(ticket);
            }
        }
        if let Some(task) = self.task.lock().as_ref() {
            task.wake_by_ref();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_woken_first_is_waited_for_until_it_settles() {
        let arrivals = Arc::new(Arrivals::default());
        let (first, first_waker) = Place::new(arrivals.clone());
        let (second, second_waker) = Place::new(arrivals.clone());
        first_waker.wake_by_ref();
        second_waker.wake_by_ref();
        assert!(arrivals.has_earlier(second.ticket()));
        assert!(!arrivals.has_earlier(first.ticket()));
        first.settle(first.wakes());
        assert!(!arrivals.has_earlier(second.ticket()));
        second.settle(second.wakes());
        assert!(!arrivals.has_earlier(0));
    }

    #[test]
    fn waking_twice_keeps_the_first_ticket() {
        let arrivals = Arc::new(Arrivals::default());
        let (place, waker) = Place::new(arrivals.clone());
        waker.wake_by_ref();
        let ticket = place.ticket();
        waker.wake_by_ref();
        assert_eq!(place.ticket(), ticket);
        place.settle(place.wakes());
        assert!(!arrivals.has_earlier(0));
    }

    #[test]
    fn a_connection_that_leaves_holds_nobody_up() {
        let arrivals = Arc::new(Arrivals::default());
        let (place, waker) = Place::new(arrivals.clone());
        waker.wake_by_ref();
        waker.wake_by_ref();
        place.settle(0);
        assert!(arrivals.has_earlier(0), "woken since: still pending");
        place.leave();
        assert!(!arrivals.has_earlier(0));
    }

    #[test]
    fn a_steady_stream_draws_no_tickets() {
        let arrivals = Arc::new(Arrivals::default());
        let (place, waker) = Place::new(arrivals.clone());
        waker.wake_by_ref();
        place.set_ordered(false);
        assert!(
            !arrivals.has_earlier(0),
            "turning ordering off gives the ticket back"
        );
        waker.wake_by_ref();
        assert_eq!(place.ticket(), 0);
        place.set_ordered(true);
        waker.wake_by_ref();
        assert_ne!(place.ticket(), 0);
    }

    #[tokio::test]
    async fn a_waiting_publisher_is_released_when_the_earlier_connection_settles() {
        let arrivals = Arc::new(Arrivals::default());
        let (first, first_waker) = Place::new(arrivals.clone());
        let (second, second_waker) = Place::new(arrivals.clone());
        first_waker.wake_by_ref();
        second_waker.wake_by_ref();
        let waiter = tokio::spawn(async move { second.wait_for_earlier().await });
        for _ in 0..2 * YIELDS_BEFORE_SLEEP {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished());
        first.settle(first.wakes());
        tokio::time::timeout(Duration::from_millis(500), waiter)
            .await
            .expect("released before the give-way bound")
            .unwrap();
    }
}
