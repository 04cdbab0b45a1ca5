//! Counters and gauges, as plain atomics: reading or bumping one never takes a lock.

use std::sync::atomic::AtomicU64;

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
}
