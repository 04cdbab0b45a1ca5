//! The message scenarios — `fanin`, `fanout` and `pairs` — share one run:
//! subscribe everyone, connect every publisher, start them together, publish,
//! drain, then add up what each subscriber saw against what each publisher sent.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytestring::ByteString;
use hdrhistogram::Histogram;
use rookery::protocol::QoS;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::publisher::{self, Stop};
use crate::subscriber;
use crate::{procfs, Scenario, Target};

/// Which publishers feed which subscribers, and how hard.
pub struct Settings {
    pub target: Target,
    /// Publisher `i` connects to `publish_to[i % len]`; never empty.
    pub publish_to: Vec<SocketAddr>,
    /// Subscriber `i` connects to `subscribe_to[i % len]`; never empty.
    pub subscribe_to: Vec<SocketAddr>,
    pub scenario: Scenario,
    pub qos: QoS,
    pub payload_len: usize,
    pub publishers: usize,
    pub subscribers: usize,
    /// `--duration`, unless `messages` (per publisher) is set.
    pub duration: Duration,
    pub messages: Option<u64>,
    pub inflight: usize,
    /// Total messages per second across publishers.
    pub rate: Option<f64>,
    /// Stop draining after this long without a new delivery.
    pub drain: Duration,
    pub broker_pids: Vec<u32>,
}

/// Totals over every (subscriber, publisher) pair that should meet.
pub struct Outcome {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    pub latency_us: Histogram<u64>,
    /// From the start signal to the last delivery.
    pub span_secs: f64,
    /// CPU used from the start signal to the end of the drain.
    pub bench_cpu_secs: f64,
    /// Per broker, in `broker_pids` order; `None` if any could not be read.
    pub broker_cpu_secs: Option<Vec<f64>>,
}

impl Settings {
    /// The target of the client at `index` on one side.
    fn target_at(&self, addresses: &[SocketAddr], index: usize) -> Target {
        let mut target = self.target.clone();
        if let Some(addr) = addresses.get(index % addresses.len().max(1)) {
            target.addr = *addr;
        }
        target
    }

    /// Every broker's CPU seconds so far; `None` without PIDs or if one cannot be read.
    fn broker_cpu(&self) -> Option<Vec<f64>> {
        if self.broker_pids.is_empty() {
            return None;
        }
        self.broker_pids
            .iter()
            .map(|pid| procfs::cpu_seconds(Some(*pid)))
            .collect()
    }

    fn topic(&self, prefix: &str, publisher: usize) -> ByteString {
        match self.scenario {
            Scenario::Fanout => format!("{prefix}/all").into(),
            _ => format!("{prefix}/{publisher}").into(),
        }
    }

    fn filter(&self, prefix: &str, subscriber: usize) -> ByteString {
        match self.scenario {
            Scenario::Fanin => format!("{prefix}/+").into(),
            Scenario::Pairs => format!("{prefix}/{subscriber}").into(),
            _ => format!("{prefix}/all").into(),
        }
    }

    /// The publishers whose every message `subscriber` should receive.
    fn feeds(&self, subscriber: usize) -> std::ops::Range<usize> {
        match self.scenario {
            Scenario::Pairs => subscriber..subscriber + 1,
            _ => 0..self.publishers,
        }
    }
}

pub async fn run(settings: &Settings) -> anyhow::Result<Outcome> {
    let clock = Instant::now();
    // A fresh topic space per run: nothing retained or queued by an earlier run matches.
    let prefix = format!("bench/{:08x}", fastrand::u32(..));
    let unique_total = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel(64);
    let mut subscribers = Vec::with_capacity(settings.subscribers);
    for index in 0..settings.subscribers {
        let plan = subscriber::Plan {
            target: settings.target_at(&settings.subscribe_to, index),
            index,
            filter: settings.filter(&prefix, index),
            qos: settings.qos,
            publishers: settings.publishers,
            clock,
            unique_total: Arc::clone(&unique_total),
        };
        let task = subscriber::run(plan, ready_tx.clone(), stop_rx.clone());
        subscribers.push(tokio::spawn(task));
    }
    wait_ready(&mut ready_rx, settings.subscribers, "subscribers").await?;

    let (go_tx, go_rx) = watch::channel(None);
    let publishers = spawn_publishers(settings, &prefix, clock, &ready_tx, &go_rx);
    wait_ready(&mut ready_rx, settings.publishers, "publishers").await?;
    let bench_cpu_before = procfs::cpu_seconds(None).unwrap_or(0.0);
    let broker_cpu_before = settings.broker_cpu();
    let begin = Instant::now();
    let stop = match settings.messages {
        Some(count) => Stop::After(count),
        None => Stop::At(begin + settings.duration),
    };
    let _ = go_tx.send(Some((begin, stop)));

    let mut sent = Vec::with_capacity(publishers.len());
    for (index, task) in publishers.into_iter().enumerate() {
        sent.push(
            task.await
                .context("publisher task panicked")?
                .with_context(|| format!("publisher {index} failed"))?,
        );
    }
    let expected = (0..settings.subscribers)
        .map(|s| settings.feeds(s).map(|p| sent[p]).sum::<u64>())
        .sum();
    drain(&unique_total, expected, settings.drain).await;
    let bench_cpu_secs = procfs::cpu_seconds(None).unwrap_or(0.0) - bench_cpu_before;
    let broker_cpu_secs = broker_cpu_before
        .zip(settings.broker_cpu())
        .map(|(before, after)| after.iter().zip(before).map(|(a, b)| a - b).collect());
    let _ = stop_tx.send(true);

    let mut outcome = Outcome {
        sent: sent.iter().sum(),
        delivered: 0,
        lost: 0,
        duplicated: 0,
        out_of_order: 0,
        corrupt: 0,
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        span_secs: 0.0,
        bench_cpu_secs,
        broker_cpu_secs,
    };
    let begin_ns = begin.duration_since(clock).as_nanos() as u64;
    let mut last_delivery_ns = begin_ns;
    for (index, task) in subscribers.into_iter().enumerate() {
        let report = task
            .await
            .context("subscriber task panicked")?
            .with_context(|| format!("subscriber {index} failed"))?;
        for publisher in settings.feeds(index) {
            let track = &report.tracks[publisher];
            outcome.lost += sent[publisher].saturating_sub(track.unique);
            outcome.duplicated += track.duplicated;
            outcome.out_of_order += track.out_of_order;
        }
        outcome.delivered += report.delivered;
        outcome.corrupt += report.corrupt;
        outcome.latency_us.add(&report.latency_us)?;
        last_delivery_ns = last_delivery_ns.max(report.last_delivery_ns);
    }
    outcome.span_secs = (last_delivery_ns - begin_ns) as f64 / 1e9;
    Ok(outcome)
}

fn spawn_publishers(
    settings: &Settings,
    prefix: &str,
    clock: Instant,
    ready: &mpsc::Sender<anyhow::Result<()>>,
    go: &watch::Receiver<Option<(Instant, Stop)>>,
) -> Vec<JoinHandle<anyhow::Result<u64>>> {
    let interval = settings
        .rate
        .map(|rate| Duration::from_secs_f64(settings.publishers as f64 / rate));
    (0..settings.publishers)
        .map(|index| {
            let plan = publisher::Plan {
                target: settings.target_at(&settings.publish_to, index),
                index: index as u32,
                topic: settings.topic(prefix, index),
                qos: settings.qos,
                payload_len: settings.payload_len,
                inflight: settings.inflight,
                interval,
                // Paced publishers start staggered over one interval, not in lockstep.
                first_send_delay: interval.map_or(Duration::ZERO, |interval| {
                    interval.mul_f64(index as f64 / settings.publishers as f64)
                }),
                clock,
            };
            tokio::spawn(publisher::run(plan, ready.clone(), go.clone()))
        })
        .collect()
}

/// Waits for `count` tasks to report that they connected (and subscribed).
async fn wait_ready(
    ready: &mut mpsc::Receiver<anyhow::Result<()>>,
    count: usize,
    what: &str,
) -> anyhow::Result<()> {
    for _ in 0..count {
        ready
            .recv()
            .await
            .with_context(|| format!("{what} stopped before they were ready"))?
            .with_context(|| format!("{what} could not start"))?;
    }
    Ok(())
}

/// Returns once every expected message arrived, or once deliveries stopped for
/// `quiet`: what has not arrived by then counts as lost.
async fn drain(unique_total: &AtomicU64, expected: u64, quiet: Duration) {
    let mut seen = unique_total.load(Ordering::Relaxed);
    let mut last_progress = Instant::now();
    while seen < expected && last_progress.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now_seen = unique_total.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            last_progress = Instant::now();
        }
    }
}
