//! The result of one run: a summary for people and, with `--json`, one line for
//! scripts (`examples/compare.sh` reads it).

use serde::Serialize;

/// Every number a run reports. Fields that do not apply to the scenario, or that
/// need `--broker-pid`, are left out of the JSON.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub qos: u8,
    pub version: u8,
    pub publishers: usize,
    pub subscribers: usize,
    pub payload: usize,
    /// Messages: from the start signal to the last delivery. `conn`: the connect phase.
    pub duration_s: f64,
    pub sent: u64,
    /// PUBLISH packets the subscribers received, duplicates included.
    pub delivered: u64,
    /// `delivered / duration_s`.
    pub msgs_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Payloads whose stamp could not be read: a broker that corrupts data.
    pub corrupt: u64,
    /// The generator's own CPU time over the measured window.
    pub bench_cpu_s: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_s_per_million: Option<f64>,
    /// With several `--broker-pid`s: each broker's share, in their order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_s_per_million_each: Option<Vec<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_failed: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_rate_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_baseline_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_held_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_rss_per_connection_bytes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Report {
    /// A few lines a person can read at a glance.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "{} · MQTT v{} · QoS {} · payload {} B",
            self.scenario, self.version, self.qos, self.payload
        );
        if let Some(connections) = self.connections {
            out += &format!(
                "\n  connections   {connections} open ({} failed) in {:.2}s: {:.0}/s",
                self.connect_failed.unwrap_or(0),
                self.duration_s,
                self.connect_rate_per_s.unwrap_or(0.0)
            );
            if let Some(per) = self.broker_rss_per_connection_bytes {
                out += &format!(
                    "\n  broker RSS    {} KiB → {} KiB: {per:.0} B per connection",
                    self.broker_rss_baseline_kib.unwrap_or(0),
                    self.broker_rss_held_kib.unwrap_or(0)
                );
            }
        } else {
            out += &format!(
                "\n  clients       {} publishers → {} subscribers{}\
                 \n  messages      {} sent, {} delivered in {:.2}s: {:.0} msgs/s\
                 \n  latency       p50 {:.0} µs · p99 {:.0} µs · p99.9 {:.0} µs\
                 \n  integrity     {} lost · {} duplicated · {} out of order · {} corrupt",
                self.publishers,
                self.subscribers,
                self.rate
                    .map_or(String::new(), |r| format!(" at {r:.0} msgs/s")),
                self.sent,
                self.delivered,
                self.duration_s,
                self.msgs_per_s,
                self.p50_us,
                self.p99_us,
                self.p999_us,
                self.lost,
                self.duplicated,
                self.out_of_order,
                self.corrupt,
            );
            if let (Some(cpu), Some(per)) = (self.broker_cpu_s, self.broker_cpu_s_per_million) {
                out += &format!("\n  broker CPU    {cpu:.2}s: {per:.2} s per million delivered");
            }
            if let Some(each) = &self.broker_cpu_s_per_million_each {
                let each: Vec<String> = each.iter().map(|per| format!("{per:.2}")).collect();
                out += &format!("\n  per broker    {} s per million", each.join(" · "));
            }
        }
        out += &format!("\n  generator CPU {:.2}s", self.bench_cpu_s);
        if let Some(error) = &self.error {
            out += &format!("\n  ERROR         {error}");
        }
        out
    }
}
