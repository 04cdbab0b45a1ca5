//! The `$SYS/broker/…` topics, with mosquitto's names and meanings: retained
//! messages with the broker's counters, refreshed every `sys_interval` (only the
//! values that changed are republished). A `$` topic is never matched by a root
//! wildcard ([MQTT-4.7.2-1]), so `#` subscribers do not see them, and clients may
//! not publish under `$SYS` unless an ACL rule names it (see `auth`).
//!
//! | topic | meaning |
//! |---|---|
//! | `version`, `uptime` | `rookery version 0.1.0`; `N seconds` |
//! | `clients/connected`, `disconnected`, `total` | sessions online, offline (persistent), both |
//! | `clients/maximum` | most sessions online at one refresh |
//! | `clients/expired` | offline sessions removed because their expiry passed |
//! | `messages/received`, `sent` | MQTT packets of every type |
//! | `messages/stored`, `store/messages/count` | queued messages plus retained messages |
//! | `store/messages/bytes` | payload bytes of the retained messages |
//! | `publish/messages/received`, `sent`, `dropped` | PUBLISH packets |
//! | `publish/bytes/received`, `sent` | PUBLISH payload bytes |
//! | `bytes/received`, `sent` | bytes on client sockets |
//! | `subscriptions/count` | subscriptions over all sessions |
//! | `retained messages/count` | retained messages, not counting `$SYS` itself |
//! | `load/{messages,bytes,publish}/{received,sent}/{1min,5min,15min}`, `load/connections/…` | per-minute rates, exponentially averaged over 1, 5 and 15 minutes |
//! | `heap/current` | resident memory of the process in bytes (Linux; see below) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::message::Message;
use super::{Broker, Origin};
use crate::metrics::Metrics;
use crate::protocol::{ClientId, Properties, QoS, TopicName};

/// The series whose per-minute rate is averaged under `load/`.
const LOADS: [&str; 7] = [
    "messages/received",
    "messages/sent",
    "bytes/received",
    "bytes/sent",
    "publish/received",
    "publish/sent",
    "connections",
];
/// The averaging windows, in minutes.
const WINDOWS: [(f64, &str); 3] = [(1.0, "1min"), (5.0, "5min"), (15.0, "15min")];

/// What the `$SYS` publisher remembers between refreshes. Owned by the server's
/// tick task, so it needs no lock.
#[derive(Debug)]
pub struct SysState {
    started: Instant,
    /// The counters of [`LOADS`] at the last refresh, and when it was.
    last: Option<(Instant, [u64; 7])>,
    /// Per-minute rates averaged over [`WINDOWS`], per series.
    loads: [[f64; 3]; 7],
    maximum_connected: usize,
    /// The payload last published per topic: unchanged values are not republished.
    published: HashMap<String, String>,
}

impl SysState {
    /// State for a broker that started at `started`.
    pub fn new(started: Instant) -> SysState {
        SysState {
            started,
            last: None,
            loads: [[0.0; 3]; 7],
            maximum_connected: 0,
            published: HashMap::new(),
        }
    }

    /// mosquitto's load average: the rate per minute since the last refresh,
    /// folded into each window's exponential average.
    fn update_loads(&mut self, now: Instant, counters: [u64; 7]) {
        if let Some((at, previous)) = self.last {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            if elapsed > 0.0 {
                for (series, loads) in self.loads.iter_mut().enumerate() {
                    let current = counters.get(series).copied().unwrap_or(0);
                    let before = previous.get(series).copied().unwrap_or(0);
                    let rate = current.saturating_sub(before) as f64 * 60.0 / elapsed;
                    for (load, (minutes, _)) in loads.iter_mut().zip(WINDOWS) {
                        let decay = (-elapsed / (60.0 * minutes)).exp();
                        *load = rate + decay * (*load - rate);
                    }
                }
            }
        }
        self.last = Some((now, counters));
    }
}

impl Broker {
    /// Publishes the current counters under `$SYS/broker/` (the ones that changed).
    pub fn publish_sys(&self, state: &mut SysState, now: Instant) {
        let values = self.sys_values(state, now);
        let publisher = ClientId::new("$SYS");
        for (topic, value) in values {
            if state.published.get(&topic) == Some(&value) {
                continue;
            }
            let Ok(name) = TopicName::new(format!("$SYS/broker/{topic}")) else {
                continue;
            };
            let message = Message {
                topic: name,
                payload: Bytes::from(value.clone()),
                qos: QoS::AtMostOnce,
                retain: true,
                properties: Properties::default(),
                expires_at: None,
            };
            // A failure to store a $SYS value is not worth more than the next refresh.
            if self
                .route(&publisher, Arc::new(message), None, None, Origin::System)
                .is_ok()
            {
                state.published.insert(topic, value);
            }
        }
    }

    /// Every `$SYS/broker/…` value, by topic below `$SYS/broker/`.
    fn sys_values(&self, state: &mut SysState, now: Instant) -> Vec<(String, String)> {
        let metrics = self.metrics();
        let get = Metrics::get;
        let census = self.registry.census();
        let (retained, retained_bytes) = self.retained_census();
        let subscriptions = self.router.read().len();
        state.maximum_connected = state.maximum_connected.max(census.online);
        let stored = census.queued + retained;
        let counters = [
            metrics.packets_received.total(),
            metrics.packets_sent.total(),
            get(&metrics.bytes_received),
            get(&metrics.bytes_sent),
            get(&metrics.messages_received),
            get(&metrics.messages_sent),
            get(&metrics.connections_total),
        ];
        state.update_loads(now, counters);
        let uptime = now.saturating_duration_since(state.started).as_secs();
        let mut values: Vec<(String, String)> = [
            (
                "version",
                format!("rookery version {}", env!("CARGO_PKG_VERSION")),
            ),
            ("uptime", format!("{uptime} seconds")),
            ("clients/connected", census.online.to_string()),
            ("clients/disconnected", census.offline.to_string()),
            (
                "clients/total",
                (census.online + census.offline).to_string(),
            ),
            ("clients/maximum", state.maximum_connected.to_string()),
            (
                "clients/expired",
                get(&metrics.sessions_expired).to_string(),
            ),
            ("messages/received", counters[0].to_string()),
            ("messages/sent", counters[1].to_string()),
            ("messages/stored", stored.to_string()),
            ("publish/messages/received", counters[4].to_string()),
            ("publish/messages/sent", counters[5].to_string()),
            (
                "publish/messages/dropped",
                metrics.deliveries_dropped().to_string(),
            ),
            (
                "publish/bytes/received",
                get(&metrics.publish_bytes_received).to_string(),
            ),
            (
                "publish/bytes/sent",
                get(&metrics.publish_bytes_sent).to_string(),
            ),
            ("bytes/received", counters[2].to_string()),
            ("bytes/sent", counters[3].to_string()),
            ("subscriptions/count", subscriptions.to_string()),
            ("retained messages/count", retained.to_string()),
            ("store/messages/count", stored.to_string()),
            ("store/messages/bytes", retained_bytes.to_string()),
        ]
        .into_iter()
        .map(|(topic, value)| (topic.to_string(), value))
        .collect();
        for (series, loads) in LOADS.iter().zip(state.loads) {
            for (load, (_, window)) in loads.iter().zip(WINDOWS) {
                values.push((format!("load/{series}/{window}"), format!("{load:.2}")));
            }
        }
        if let Some(resident) = crate::metrics::process::resident_bytes() {
            values.push(("heap/current".to_string(), resident.to_string()));
        }
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn load_is_a_per_minute_rate_averaged_over_each_window() {
        let start = Instant::now();
        let mut state = SysState::new(start);
        state.update_loads(start, [0; 7]);
        // 600 packets in 10 s is 3600 per minute.
        state.update_loads(start + Duration::from_secs(10), [600, 0, 0, 0, 0, 0, 0]);
        let [one, five, fifteen] = state.loads[0];
        assert!(one > five && five > fifteen && fifteen > 0.0);
        let expected_one = 3600.0 * (1.0 - (-10.0f64 / 60.0).exp());
        assert!((one - expected_one).abs() < 1e-6, "{one}");
        assert_eq!(state.loads[1], [0.0; 3]);
    }
}
