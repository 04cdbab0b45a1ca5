//! Counters and gauges, as plain atomics: reading or bumping one never takes a lock.
//! Hot-path counters are bumped with `Relaxed` ordering, and the busiest ones
//! (packets and bytes) are added once per connection turn, not once per packet:
//! a connection counts packets by type in a [`PacketCounts`] of its own and adds
//! them to the shared [`PacketCounters`] when its turn ends.
//!
//! The names follow mosquitto's `$SYS/broker/…` meanings (see `broker/sys.rs`):
//! a "packet" is any MQTT control packet, a "publish" is a PUBLISH.

mod histogram;
pub mod process;

use std::sync::atomic::{AtomicU64, Ordering};

pub use histogram::{Histogram, LatencyHistogram, StorageLatency};

/// Broker-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// PUBLISH packets accepted from clients (and wills).
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: AtomicU64,
    /// Messages and deliveries dropped, by [`DropReason`].
    dropped: [AtomicU64; DropReason::ALL.len()],
    /// Connections currently open.
    pub connections_current: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// MQTT packets received from clients, by type.
    pub packets_received: PacketCounters,
    /// MQTT packets sent to clients, by type.
    pub packets_sent: PacketCounters,
    /// Bytes read from client sockets (after TLS and WebSocket framing are removed).
    pub bytes_received: AtomicU64,
    /// Bytes written to client sockets (before TLS and WebSocket framing).
    pub bytes_sent: AtomicU64,
    /// Payload bytes of the PUBLISH packets accepted from clients.
    pub publish_bytes_received: AtomicU64,
    /// Payload bytes of the PUBLISH packets sent to clients.
    pub publish_bytes_sent: AtomicU64,
    /// Offline sessions removed because their expiry passed.
    pub sessions_expired: AtomicU64,
    /// CONNECTs refused for a bad username or password.
    pub refused_bad_credentials: AtomicU64,
    /// CONNECTs refused as not authorised (anonymous, certificate, will topic).
    pub refused_not_authorized: AtomicU64,
}

impl Metrics {
    /// Adds `n` to `counter`; does nothing for 0, so that an idle turn touches no
    /// shared cache line.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts `n` messages or deliveries dropped for `reason`. Callers add up a
    /// whole publish's drops first, so a publish costs at most one add per reason.
    pub fn count_dropped(&self, reason: DropReason, n: u64) {
        if let Some(counter) = self.dropped.get(reason as usize) {
            Metrics::add(counter, n);
        }
    }

    /// What was dropped for `reason` since start.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped.get(reason as usize).map_or(0, Metrics::get)
    }

    /// Deliveries dropped for any reason but [`DropReason::NoSubscribers`] (which
    /// counts messages, not deliveries): mosquitto's `publish/messages/dropped`.
    pub fn deliveries_dropped(&self) -> u64 {
        DropReason::ALL
            .iter()
            .filter(|&&reason| reason != DropReason::NoSubscribers)
            .map(|&reason| self.dropped(reason))
            .sum()
    }
}

/// Why a message did not reach a subscriber. Every reason but `NoSubscribers`
/// counts deliveries (one message to one subscriber); `NoSubscribers` counts
/// messages that matched no subscription at all (EMQX's `messages.dropped.no_subscribers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The session already held `max_queued_messages` (mosquitto's `max_queued_messages`).
    QueueFull,
    /// The session had no connection and does not queue this message: QoS 0 for an
    /// offline session (unless `queue_qos0_messages`), or a connection that went
    /// away between routing and delivery.
    Offline,
    /// Larger than the client's Maximum Packet Size ([MQTT-3.1.2-25]).
    TooLarge,
    /// Its Message Expiry Interval passed before it could be sent ([MQTT-3.3.2-5]).
    Expired,
    /// The ACL no longer lets the subscriber receive it (a reload, or a `deny` rule
    /// inside an allowed subscription).
    NotAuthorized,
    /// A PUBLISH from a client that matched no subscription.
    NoSubscribers,
}

impl DropReason {
    /// Every reason, in the order of the counters.
    pub const ALL: [DropReason; 6] = [
        DropReason::QueueFull,
        DropReason::Offline,
        DropReason::TooLarge,
        DropReason::Expired,
        DropReason::NotAuthorized,
        DropReason::NoSubscribers,
    ];

    /// The Prometheus label value.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Offline => "offline",
            DropReason::TooLarge => "too_large",
            DropReason::Expired => "expired",
            DropReason::NotAuthorized => "not_authorized",
            DropReason::NoSubscribers => "no_subscribers",
        }
    }
}

/// MQTT control packet types are numbered 1 to 15 ([MQTT-2.1.2], table 2-1); 0 is
/// reserved and never counted.
const PACKET_TYPES: usize = 16;

/// Broker-wide packet counters, one per control packet type.
#[derive(Debug, Default)]
pub struct PacketCounters([AtomicU64; PACKET_TYPES]);

impl PacketCounters {
    /// Packets of type `packet_type` (the number in the fixed header) counted so far.
    pub fn get(&self, packet_type: u8) -> u64 {
        self.0.get(usize::from(packet_type)).map_or(0, Metrics::get)
    }

    /// Packets of every type.
    pub fn total(&self) -> u64 {
        self.0.iter().map(Metrics::get).sum()
    }

    /// Counts one packet now; for the rare packet outside a connection turn (CONNECT).
    pub fn count_one(&self, packet_type: u8) {
        if let Some(counter) = self.0.get(usize::from(packet_type)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One connection's packet counts by type since they were last added to the
/// shared [`PacketCounters`]. `u32` is plenty: a turn handles at most a few
/// reads' worth of packets, and the counts are emptied at the end of every turn.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PacketCounts([u32; PACKET_TYPES]);

impl PacketCounts {
    /// Counts one packet of type `packet_type`.
    pub fn count(&mut self, packet_type: u8) {
        if let Some(count) = self.0.get_mut(usize::from(packet_type)) {
            *count = count.wrapping_add(1);
        }
    }

    /// Adds the counts to `counters` and starts again from zero: one atomic add per
    /// type seen this turn, none for an idle turn.
    pub fn add_to(&mut self, counters: &PacketCounters) {
        for (count, counter) in self.0.iter_mut().zip(&counters.0) {
            Metrics::add(counter, u64::from(std::mem::take(count)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_counts_are_added_by_type_and_reset() {
        let counters = PacketCounters::default();
        let mut counts = PacketCounts::default();
        counts.count(3);
        counts.count(3);
        counts.count(12);
        counts.count(200); // not a packet type: ignored, not a panic
        counts.add_to(&counters);
        assert_eq!(counts, PacketCounts::default());
        counts.count(3);
        counts.add_to(&counters);
        assert_eq!(
            (counters.get(3), counters.get(12), counters.total()),
            (3, 1, 4)
        );
    }

    #[test]
    fn mosquitto_dropped_leaves_out_messages_nobody_subscribed_to() {
        let metrics = Metrics::default();
        metrics.count_dropped(DropReason::QueueFull, 2);
        metrics.count_dropped(DropReason::TooLarge, 1);
        metrics.count_dropped(DropReason::NoSubscribers, 5);
        assert_eq!(metrics.dropped(DropReason::QueueFull), 2);
        assert_eq!(metrics.deliveries_dropped(), 3);
    }
}
