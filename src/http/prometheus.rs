//! The broker's counters in Prometheus form, read at scrape time: no second set of
//! counters to keep in step, and nothing added to the MQTT hot path. Storage
//! latencies come from lock-free histograms that storage records into.

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
use crate::metrics::{process, Histogram, LatencyHistogram, Metrics};

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

impl BrokerCollector {
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

    /// Storage commit and fsync latencies (empty with the memory backend).
    fn encode_storage(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let none = LatencyHistogram::default();
        let latency = self.broker.storage().latency();
        let commit = latency.map_or(&none, |latency| &latency.commit);
        let sync = latency.map_or(&none, |latency| &latency.sync);
        let help = "time to commit one storage write batch";
        encode_histogram(encoder, "storage_commit_seconds", help, &commit.snapshot())?;
        let help = "time of one group-commit fsync (durability = \"fsync\")";
        encode_histogram(encoder, "storage_sync_seconds", help, &sync.snapshot())
    }
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let metrics = self.broker.metrics();
        let get = Metrics::get;
        let counters = [
            (
                "packets_received",
                "MQTT packets of every type received",
                get(&metrics.packets_received),
            ),
            (
                "packets_sent",
                "MQTT packets of every type sent",
                get(&metrics.packets_sent),
            ),
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
                "publish_messages_dropped",
                "deliveries dropped (full queue, offline QoS 0, too large)",
                get(&metrics.messages_dropped),
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
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let census = self.broker.registry().census();
        let gauges = [
            (
                "clients_connected",
                "sessions with a connection",
                census.online as i64,
            ),
            (
                "clients_disconnected",
                "persistent sessions whose client is away",
                census.offline as i64,
            ),
            (
                "queued_messages",
                "messages queued for all sessions",
                census.queued as i64,
            ),
            (
                "subscriptions",
                "subscriptions over all sessions",
                self.broker.subscription_count() as i64,
            ),
            (
                "retained_messages",
                "retained messages, $SYS included",
                self.broker.retained_count() as i64,
            ),
            (
                "connections_open",
                "sockets open, CONNECT received or not",
                get(&metrics.connections_current) as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        self.encode_connected(&mut encoder)?;
        let refused = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "auth_failures",
            "CONNECTs refused by authentication or authorisation",
            None,
            refused.metric_type(),
        )?;
        for (reason, value) in [
            ("bad_credentials", get(&metrics.refused_bad_credentials)),
            ("not_authorized", get(&metrics.refused_not_authorized)),
        ] {
            let labels = [("reason", reason)];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        self.encode_storage(&mut encoder)?;
        if let Some(resident) = process::resident_bytes() {
            let gauge = ConstGauge::new(resident as i64);
            let help = "resident memory of the process";
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                help,
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(fds) = process::open_fds() {
            let gauge = ConstGauge::new(fds as i64);
            let help = "open file descriptors (sockets included)";
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                help,
                None,
                gauge.metric_type(),
            )?)?;
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
