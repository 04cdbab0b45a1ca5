//! The broker's counters in Prometheus form, read at scrape time: no second set of
//! counters to keep in step, and nothing added to the MQTT hot path. Distributions
//! across sessions (queue depth, in flight) are computed from the registry at
//! scrape time too; storage latencies come from lock-free histograms that storage
//! records into.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::broker::Broker;
use crate::metrics::{process, DropReason, Histogram, LatencyHistogram, Metrics, PacketCounters};
use crate::protocol::Packet;

/// Bucket bounds of the per-session distributions: messages queued, or in flight.
const DEPTH_BOUNDS: [u64; 7] = [0, 1, 10, 100, 1_000, 10_000, 100_000];

/// Packet types a client may send, and the broker may send ([MQTT-2.1.2], table
/// 2-1): always listed, zero or not, so that a dashboard's series exist from the
/// first scrape. Anything else a misbehaving client sent is listed once seen.
const FROM_CLIENT: [u8; 11] = [1, 3, 4, 5, 6, 7, 8, 10, 12, 14, 15];
const FROM_SERVER: [u8; 11] = [2, 3, 4, 5, 6, 7, 9, 11, 13, 14, 15];

/// A registry whose only collector reads `broker`.
pub(super) fn registry(broker: Arc<Broker>) -> Registry {
    let mut registry = Registry::with_prefix("rookery");
    registry.register_collector(Box::new(BrokerCollector { broker }));
    registry
}

#[derive(Debug)]
struct BrokerCollector {
    broker: Arc<Broker>,
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_counters(&mut encoder)?;
        self.encode_gauges(&mut encoder)?;
        self.encode_connected(&mut encoder)?;
        let metrics = self.broker.metrics();
        encode_packets(
            &mut encoder,
            "packets_received",
            "MQTT packets received, by type",
            &metrics.packets_received,
            &FROM_CLIENT,
        )?;
        encode_packets(
            &mut encoder,
            "packets_sent",
            "MQTT packets sent, by type",
            &metrics.packets_sent,
            &FROM_SERVER,
        )?;
        encode_dropped(&mut encoder, metrics)?;
        encode_auth_failures(&mut encoder, metrics)?;
        self.encode_depths(&mut encoder)?;
        self.encode_storage(&mut encoder)?;
        encode_process(&mut encoder)
    }
}

impl BrokerCollector {
    fn encode_counters(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let metrics = self.broker.metrics();
        let get = Metrics::get;
        let counters = [
            (
                "bytes_received",
                "bytes read from client sockets",
                get(&metrics.bytes_received),
            ),
            (
                "bytes_sent",
                "bytes written to client sockets",
                get(&metrics.bytes_sent),
            ),
            (
                "publish_messages_received",
                "PUBLISH packets accepted from clients",
                get(&metrics.messages_received),
            ),
            (
                "publish_messages_sent",
                "PUBLISH packets sent to clients",
                get(&metrics.messages_sent),
            ),
            (
                "publish_bytes_received",
                "PUBLISH payload bytes received",
                get(&metrics.publish_bytes_received),
            ),
            (
                "publish_bytes_sent",
                "PUBLISH payload bytes sent",
                get(&metrics.publish_bytes_sent),
            ),
            (
                "connections",
                "connections accepted",
                get(&metrics.connections_total),
            ),
            (
                "sessions_expired",
                "offline sessions removed at expiry",
                get(&metrics.sessions_expired),
            ),
        ];
        for (name, help, value) in counters {
            encode_counter(encoder, name, help, value)?;
        }
        Ok(())
    }

    fn encode_gauges(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let census = self.broker.census();
        let metrics = self.broker.metrics();
        let gauges = [
            (
                "clients_connected",
                "sessions with a connection",
                census.online,
            ),
            (
                "clients_disconnected",
                "persistent sessions whose client is away",
                census.offline,
            ),
            (
                "queued_messages",
                "messages queued for all sessions, those in flight included",
                census.queued,
            ),
            (
                "inflight_messages",
                "messages sent to connected clients and not yet acknowledged",
                census.in_flight,
            ),
            (
                "subscriptions",
                "subscriptions over all sessions",
                self.broker.subscription_count(),
            ),
            (
                "retained_messages",
                "retained messages, $SYS included",
                self.broker.retained_count(),
            ),
            (
                "connections_open",
                "sockets open, CONNECT received or not",
                Metrics::get(&metrics.connections_current) as usize,
            ),
        ];
        for (name, help, value) in gauges {
            encode_gauge(encoder, name, help, value as i64)?;
        }
        Ok(())
    }

    /// Connected clients by listener and protocol version.
    fn encode_connected(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut counts: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        for (_, info) in self.broker.directory().list() {
            *counts
                .entry((info.listener.to_string(), info.version))
                .or_default() += 1;
        }
        let gauge = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "clients_by_listener",
            "connected clients by listener and protocol version",
            None,
            gauge.metric_type(),
        )?;
        for ((listener, version), count) in counts {
            let labels = [("listener", listener.as_str()), ("version", version)];
            ConstGauge::new(count).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// How many messages each session holds, as distributions across sessions.
    fn encode_depths(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let depths = self.broker.depths();
        let queued = depths.iter().map(|depth| depth.queued as u64);
        let help = "messages queued per session (in flight included), across sessions";
        encode_histogram(
            encoder,
            "session_queued_messages",
            help,
            &Histogram::of(&DEPTH_BOUNDS, queued),
        )?;
        let in_flight = depths
            .iter()
            .filter_map(|depth| depth.in_flight.map(|n| n as u64));
        let help = "messages in flight per connected session, across sessions";
        encode_histogram(
            encoder,
            "session_inflight_messages",
            help,
            &Histogram::of(&DEPTH_BOUNDS, in_flight),
        )
    }

    /// Storage commit and fsync latencies (empty with the memory backend).
    fn encode_storage(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let none = LatencyHistogram::default();
        let latency = self.broker.storage_latency();
        let commit = latency.map_or(&none, |latency| &latency.commit);
        let sync = latency.map_or(&none, |latency| &latency.sync);
        let help = "time to commit one storage write batch";
        encode_histogram(encoder, "storage_commit_seconds", help, &commit.snapshot())?;
        let help = "time of one group-commit fsync (durability = \"fsync\")";
        encode_histogram(encoder, "storage_sync_seconds", help, &sync.snapshot())
    }
}

/// A counter family labelled by packet type: the types in `usual`, and any other
/// type counted at least once.
fn encode_packets(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    counters: &PacketCounters,
    usual: &[u8],
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for packet_type in 1..=15u8 {
        let count = counters.get(packet_type);
        let Some(type_name) = Packet::type_name(packet_type) else {
            continue;
        };
        if count > 0 || usual.contains(&packet_type) {
            let labels = [("type", type_name)];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

fn encode_dropped(encoder: &mut DescriptorEncoder, metrics: &Metrics) -> Result<(), fmt::Error> {
    let help = "deliveries dropped, by reason (no_subscribers counts messages)";
    let mut family =
        encoder.encode_descriptor("publish_messages_dropped", help, None, MetricType::Counter)?;
    for reason in DropReason::ALL {
        let labels = [("reason", reason.label())];
        ConstCounter::new(metrics.dropped(reason)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_auth_failures(
    encoder: &mut DescriptorEncoder,
    metrics: &Metrics,
) -> Result<(), fmt::Error> {
    let help = "CONNECTs refused by authentication or authorisation";
    let mut family = encoder.encode_descriptor("auth_failures", help, None, MetricType::Counter)?;
    for (reason, counter) in [
        ("bad_credentials", &metrics.refused_bad_credentials),
        ("not_authorized", &metrics.refused_not_authorized),
    ] {
        let labels = [("reason", reason)];
        ConstCounter::new(Metrics::get(counter)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The process as the kernel sees it; each metric is left out where `/proc` is missing.
fn encode_process(encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
    if let Some(resident) = process::resident_bytes() {
        let help = "resident memory of the process";
        encode_gauge(
            encoder,
            "process_resident_memory_bytes",
            help,
            resident as i64,
        )?;
    }
    if let Some(fds) = process::open_fds() {
        let help = "open file descriptors (sockets included)";
        encode_gauge(encoder, "process_open_fds", help, fds as i64)?;
    }
    if let Some(seconds) = process::cpu_seconds() {
        let counter = ConstCounter::new(seconds);
        let help = "user and system CPU time of the process";
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            help,
            None,
            counter.metric_type(),
        )?)?;
    }
    Ok(())
}

fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn encode_histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    histogram: &Histogram,
) -> Result<(), fmt::Error> {
    encoder
        .encode_descriptor(name, help, None, MetricType::Histogram)?
        .encode_histogram::<NoLabelSet>(histogram.sum, histogram.count, &histogram.buckets, None)
}
