//! Counters and gauges, as plain atomics: reading or bumping one never takes a lock.
//! Hot-path counters are bumped with `Relaxed` ordering, and the busiest ones
//! (packets and bytes) are added once per connection turn, not once per packet.
//!
//! The names follow mosquitto's `$SYS/broker/…` meanings (see `broker/sys.rs`):
//! a "packet" is any MQTT control packet, a "publish" is a PUBLISH.

mod histogram;
pub mod process;

use std::sync::atomic::{AtomicU64, Ordering};

pub use histogram::{Histogram, LatencyHistogram};

/// Broker-wide counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// PUBLISH packets accepted from clients (and wills).
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent to clients.
    pub messages_sent: AtomicU64,
    /// Deliveries dropped at a full queue, for an offline non-queueing session, or
    /// because they exceeded the client's maximum packet size.
    pub messages_dropped: AtomicU64,
    /// Connections currently open.
    pub connections_current: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// MQTT packets of every type received from clients.
    pub packets_received: AtomicU64,
    /// MQTT packets of every type sent to clients.
    pub packets_sent: AtomicU64,
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
}
