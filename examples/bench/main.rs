//! A lean MQTT load generator for Rookery or any other broker.
//!
//! ```text
//! cargo run --release --example bench -- --port 1883 --scenario fanin --qos 1 --publishers 16
//! ```
//!
//! Scenarios: `fanin` (N publishers → wildcard subscribers), `fanout` (publishers →
//! N subscribers of one topic), `pairs` (N publisher/subscriber pairs, one topic
//! each) and `conn` (C idle connections: connect rate, then hold). Every payload
//! carries its publisher, sequence number and send time, so subscribers measure
//! end-to-end latency and count lost, duplicated and out-of-order messages.
//!
//! Several brokers (a cluster's nodes): `--publish-to` and `--subscribe-to` list
//! the addresses each side connects to, client `i` taking address `i mod n`, and
//! `--broker-pid` repeats, one per node:
//!
//! ```text
//! bench --scenario pairs --qos 1 --publish-to 127.0.0.1:1883 --subscribe-to 127.0.0.1:1884 \
//!       --broker-pid 4101 --broker-pid 4102
//! ```
//!
//! Lean by construction: one task per connection, buffers reused for the whole run,
//! no allocation per message, many packets per write. It reports its own CPU time
//! so a reader can check it was not the bottleneck.

mod idle;
mod procfs;
mod publisher;
mod report;
mod stamp;
mod subscriber;
mod traffic;
mod wire;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use rookery::protocol::{ProtocolVersion, QoS};

use crate::report::Report;
use crate::stamp::STAMP_LEN;

/// Load generator: publish, subscribe or connect against an MQTT broker and report
/// throughput, latency, message integrity and CPU use.
#[derive(Debug, Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 1883)]
    port: u16,
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// MQTT protocol level: 3 (3.1), 4 (3.1.1) or 5.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(3..=5))]
    version: u8,
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    qos: u8,
    /// Payload size in bytes (at least 20: the stamp).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Default: 16 for fanin and pairs, 1 for fanout.
    #[arg(long)]
    publishers: Option<usize>,
    /// Default: 1 for fanin, 100 for fanout; pairs always has one per publisher.
    #[arg(long)]
    subscribers: Option<usize>,
    /// How long publishers send (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Send exactly this many messages per publisher instead of `--duration`.
    #[arg(long)]
    messages: Option<u64>,
    /// Unacknowledged QoS 1/2 messages per publisher.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=65535))]
    inflight: u64,
    /// Cap on messages per second, across all publishers (for latency at a fixed load).
    #[arg(long)]
    rate: Option<f64>,
    /// conn: how many idle connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// conn: how many handshakes may be in progress at once.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// conn: how long to hold the connections open.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    hold: Duration,
    /// conn: spread connections over this many loopback source addresses
    /// (127.0.0.1, .2, …); beyond ~14k connections from one address the kernel's
    /// ephemeral-port search, not the broker, limits the connect rate.
    /// Default: 4 for a 127.x broker, else 1 (the kernel picks).
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=254))]
    source_ips: Option<u8>,
    /// After publishing, wait at most this long without a new delivery.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    drain: Duration,
    /// Publishers connect to these brokers (`host:port`, comma-separated),
    /// publisher `i` to the `i mod n`th; default: `--host`/`--port`.
    #[arg(long, value_delimiter = ',')]
    publish_to: Vec<String>,
    /// Subscribers connect to these brokers, as `--publish-to`.
    #[arg(long, value_delimiter = ',')]
    subscribe_to: Vec<String>,
    /// The broker's PID: report its CPU time over the run, and for conn its RSS.
    /// Repeat it for several brokers: CPU is reported per broker and in total.
    #[arg(long)]
    broker_pid: Vec<u32>,
    /// Runtime worker threads; 1 runs everything on one thread. Default: one per core.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON line on stdout (the summary goes to stderr).
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    Fanin,
    Fanout,
    Pairs,
    Conn,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Fanin => "fanin",
            Scenario::Fanout => "fanout",
            Scenario::Pairs => "pairs",
            Scenario::Conn => "conn",
        }
    }
}

/// Where and how every connection of a run connects.
#[derive(Clone, Debug)]
pub struct Target {
    pub addr: SocketAddr,
    pub version: ProtocolVersion,
    /// Client ids are this plus a role and an index; unique per run.
    pub client_prefix: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(threads) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match runtime {
        Ok(runtime) => runtime.block_on(run(args)),
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> ExitCode {
    let mut report = Report {
        scenario: args.scenario.name(),
        qos: args.qos,
        version: args.version,
        payload: args.payload,
        rate: args.rate,
        ..Report::default()
    };
    let result = match args.scenario {
        Scenario::Conn => run_idle(&args, &mut report).await,
        _ => run_traffic(&args, &mut report).await,
    };
    let failed = result.is_err();
    if let Err(e) = result {
        report.error = Some(format!("{e:#}"));
    }
    if args.json {
        eprintln!("{}", report.summary());
        match serde_json::to_string(&report) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot encode the report: {e}"),
        }
    } else {
        println!("{}", report.summary());
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn run_traffic(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.payload >= STAMP_LEN,
        "--payload must be at least {STAMP_LEN} bytes"
    );
    anyhow::ensure!(args.rate.is_none_or(|r| r > 0.0), "--rate must be positive");
    let publishers = args.publishers.unwrap_or(match args.scenario {
        Scenario::Fanout => 1,
        _ => 16,
    });
    let subscribers = match args.scenario {
        Scenario::Pairs => publishers,
        Scenario::Fanout => args.subscribers.unwrap_or(100),
        _ => args.subscribers.unwrap_or(1),
    };
    anyhow::ensure!(
        publishers > 0 && subscribers > 0,
        "need clients on both sides"
    );
    report.publishers = publishers;
    report.subscribers = subscribers;
    let target = target(args)?;
    let settings = traffic::Settings {
        publish_to: addresses(&args.publish_to, target.addr)?,
        subscribe_to: addresses(&args.subscribe_to, target.addr)?,
        target,
        scenario: args.scenario,
        qos: QoS::from_bits(args.qos).context("QoS is 0, 1 or 2")?,
        payload_len: args.payload,
        publishers,
        subscribers,
        duration: args.duration,
        messages: args.messages,
        inflight: args.inflight as usize,
        rate: args.rate,
        drain: args.drain,
        broker_pids: args.broker_pid.clone(),
    };
    let outcome = traffic::run(&settings).await?;
    report.duration_s = outcome.span_secs;
    report.sent = outcome.sent;
    report.delivered = outcome.delivered;
    if outcome.span_secs > 0.0 {
        report.msgs_per_s = outcome.delivered as f64 / outcome.span_secs;
    }
    report.p50_us = outcome.latency_us.value_at_quantile(0.5) as f64;
    report.p99_us = outcome.latency_us.value_at_quantile(0.99) as f64;
    report.p999_us = outcome.latency_us.value_at_quantile(0.999) as f64;
    report.lost = outcome.lost;
    report.duplicated = outcome.duplicated;
    report.out_of_order = outcome.out_of_order;
    report.corrupt = outcome.corrupt;
    report.bench_cpu_s = outcome.bench_cpu_secs;
    report.broker_cpu_s = outcome
        .broker_cpu_secs
        .as_ref()
        .map(|each| each.iter().sum());
    if outcome.delivered > 0 {
        let per_million = |cpu: f64| cpu * 1e6 / outcome.delivered as f64;
        report.broker_cpu_s_per_million = report.broker_cpu_s.map(per_million);
        if args.broker_pid.len() > 1 {
            report.broker_cpu_s_per_million_each = outcome
                .broker_cpu_secs
                .map(|each| each.into_iter().map(per_million).collect());
        }
    }
    Ok(())
}

async fn run_idle(args: &Args, report: &mut Report) -> anyhow::Result<()> {
    let target = target(args)?;
    let cpu_before = procfs::cpu_seconds(None).unwrap_or(0.0);
    let settings = idle::Settings {
        connections: args.connections,
        concurrency: args.concurrency,
        hold: args.hold,
        source_ips: args.source_ips.unwrap_or(match target.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => 4,
            _ => 1,
        }),
        broker_pid: args.broker_pid.first().copied(),
    };
    let outcome = idle::run(&target, &settings).await;
    report.bench_cpu_s = procfs::cpu_seconds(None).unwrap_or(0.0) - cpu_before;
    report.duration_s = outcome.connect_secs;
    report.connections = Some(outcome.connected);
    report.connect_failed = Some(outcome.failed);
    report.connect_rate_per_s = Some(outcome.connected as f64 / outcome.connect_secs);
    if let Some((baseline, held)) = outcome.broker_rss_kib {
        report.broker_rss_baseline_kib = Some(baseline);
        report.broker_rss_held_kib = Some(held);
        if outcome.connected > 0 {
            let grown = held.saturating_sub(baseline) as f64 * 1024.0;
            report.broker_rss_per_connection_bytes = Some(grown / outcome.connected as f64);
        }
    }
    match outcome.first_error {
        Some(error) => anyhow::bail!("{} connections failed, first: {error}", outcome.failed),
        None => Ok(()),
    }
}

fn target(args: &Args) -> anyhow::Result<Target> {
    let addr = (args.host.as_str(), args.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", args.host))?
        .next()
        .with_context(|| format!("{} has no address", args.host))?;
    let version = match args.version {
        3 => ProtocolVersion::V3_1,
        4 => ProtocolVersion::V3_1_1,
        _ => ProtocolVersion::V5,
    };
    let run_id = fastrand::u32(..);
    Ok(Target {
        addr,
        version,
        client_prefix: format!("bench-{run_id:08x}"),
    })
}

/// `listed` resolved, or `default` alone if nothing is listed.
fn addresses(listed: &[String], default: SocketAddr) -> anyhow::Result<Vec<SocketAddr>> {
    if listed.is_empty() {
        return Ok(vec![default]);
    }
    listed
        .iter()
        .map(|address| {
            address
                .to_socket_addrs()
                .with_context(|| format!("cannot resolve {address} (host:port)"))?
                .next()
                .with_context(|| format!("{address} has no address"))
        })
        .collect()
}

/// Parses `10s`, `500ms`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 10s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| e.to_string())
}
