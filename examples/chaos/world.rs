//! The clients of a run, one cycle at a time, and what the checks found.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::future::join_all;
use rookery::protocol::{
    Ack, Packet, PacketId, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::{data_files, Broker, Launch};
use crate::conn::{connect_packet, Conn};
use crate::devices::{self, Device, KINDS, WILL_DELAY};
use crate::message::{identify, matches, Identity, MessageId};
use crate::publisher::{Lane, Mode, Publisher};
use crate::subscriber::{Counts, Presence, Subscriber, Target};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// How long clients may take to finish or drain before that counts as a loss.
const DRAIN_DEADLINE: Duration = Duration::from_secs(60);
/// Devices of each kind per cycle.
const DEVICES_PER_KIND: usize = 2;

pub struct World {
    publishers: Vec<Publisher>,
    subscribers: Vec<Subscriber>,
    watcher: Subscriber,
    devices: Vec<Device>,
    rng: fastrand::Rng,
    /// Totals at the end of the previous cycle, to report each cycle's share.
    acked_before: u64,
    counts_before: Counts,
    wills_before: u32,
}

/// One cycle's findings.
#[derive(Debug, Default)]
pub struct Report {
    pub killed_after: Duration,
    /// Kills while the clients resumed, after the first restart.
    pub extra_kills: u32,
    pub acked: u64,
    pub acked_total: u64,
    pub delivered: u64,
    pub lost: u64,
    pub qos2_duplicates: u64,
    pub out_of_order: u64,
    pub retained_topics: usize,
    pub retained_mismatches: usize,
    pub wills: u32,
    pub will_violations: u64,
    pub sessions_lost: u64,
    pub other: u64,
    pub redelivered: u64,
    /// PUBCOMP 0x92 answering a PUBREL resent after a crash: normal.
    pub pubcomps_not_found: u64,
    pub restart: Duration,
    pub journals: usize,
    pub tables: usize,
    pub problems: Vec<String>,
}

impl Report {
    pub fn violations(&self) -> u64 {
        self.lost
            + self.qos2_duplicates
            + self.out_of_order
            + self.retained_mismatches as u64
            + self.will_violations
            + self.sessions_lost
            + self.other
    }

    pub fn line(&self) -> String {
        let extra = match self.extra_kills {
            0 => String::new(),
            n => format!(" +{n} while resuming"),
        };
        format!(
            "killed after {:.2}s{extra} | acked {} (total {}) | lost {} | qos2 dup {} | order {} | \
             retained {}/{} ok | wills {} ok, bad {} | sessions lost {} | other {} | \
             qos1 redelivered {} | pubcomp 0x92 {} | restart {} ms | journals {} tables {}",
            self.killed_after.as_secs_f64(),
            self.acked,
            self.acked_total,
            self.lost,
            self.qos2_duplicates,
            self.out_of_order,
            self.retained_topics - self.retained_mismatches,
            self.retained_topics,
            self.wills,
            self.will_violations,
            self.sessions_lost,
            self.other,
            self.redelivered,
            self.pubcomps_not_found,
            self.restart.as_millis(),
            self.journals,
            self.tables,
        )
    }
}

#[derive(Debug, Default)]
pub struct Totals {
    cycles: u32,
    kills: u32,
    acked: u64,
    delivered: u64,
    wills: u32,
    redelivered: u64,
    pubcomps_not_found: u64,
    pub violations: u64,
    lost: u64,
    qos2_duplicates: u64,
    out_of_order: u64,
    retained_mismatches: usize,
    will_violations: u64,
    max_restart: Duration,
}

impl Totals {
    pub fn add(&mut self, report: &Report) {
        self.cycles += 1;
        self.kills += 1 + report.extra_kills;
        self.acked = report.acked_total;
        self.delivered += report.delivered;
        self.wills += report.wills;
        self.redelivered += report.redelivered;
        self.pubcomps_not_found += report.pubcomps_not_found;
        self.violations += report.violations();
        self.lost = self.lost.max(report.lost);
        self.qos2_duplicates += report.qos2_duplicates;
        self.out_of_order += report.out_of_order;
        self.retained_mismatches += report.retained_mismatches;
        self.will_violations += report.will_violations;
        self.max_restart = self.max_restart.max(report.restart);
    }

    pub fn line(&self) -> String {
        format!(
            "{} cycles, {} kills, {} acknowledged messages, {} deliveries checked, {} wills: \
             lost {}, qos2 duplicates {}, out of order {}, retained mismatches {}, will violations {}, \
             violations {} | qos1 redelivered {}, pubcomp 0x92 {} | slowest restart {} ms | {}",
            self.cycles,
            self.kills,
            self.acked,
            self.delivered,
            self.wills,
            self.lost,
            self.qos2_duplicates,
            self.out_of_order,
            self.retained_mismatches,
            self.will_violations,
            self.violations,
            self.redelivered,
            self.pubcomps_not_found,
            self.max_restart.as_millis(),
            if self.violations == 0 { "PASS" } else { "FAIL" },
        )
    }
}

impl World {
    pub fn new(seed: u64, bulk_rate: f64) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut next_lane = 0;
        let mut lane = |topic: String, qos: QoS, retain: bool| {
            next_lane += 1;
            Lane::new(next_lane, topic, qos, retain)
        };
        let steady = |name: &str, lane: &mut dyn FnMut(String, QoS, bool) -> Lane| {
            vec![
                lane(format!("chaos/{name}/q1"), QoS::AtLeastOnce, false),
                lane(format!("chaos/{name}/q2"), QoS::ExactlyOnce, false),
            ]
        };
        let retained = |name: &str, lane: &mut dyn FnMut(String, QoS, bool) -> Lane| {
            (0..4)
                .map(|k| {
                    let qos = [QoS::AtLeastOnce, QoS::ExactlyOnce][k % 2];
                    lane(format!("retained/{name}/{k}"), qos, true)
                })
                .collect::<Vec<_>>()
        };
        let publishers = vec![
            Publisher::new(
                "pub-a",
                V4,
                steady("a", &mut lane),
                64,
                20,
                300.0,
                None,
                rng.u64(..),
            ),
            Publisher::new(
                "pub-b",
                V5,
                steady("b", &mut lane),
                64,
                20,
                300.0,
                None,
                rng.u64(..),
            ),
            Publisher::new(
                "bulk-a",
                V4,
                vec![lane("chaos/bulk-a/q1".into(), QoS::AtLeastOnce, false)],
                2048,
                100,
                bulk_rate * 0.6,
                None,
                rng.u64(..),
            ),
            Publisher::new(
                "bulk-b",
                V5,
                vec![lane("chaos/bulk-b/q2".into(), QoS::ExactlyOnce, false)],
                1024,
                50,
                bulk_rate * 0.4,
                None,
                rng.u64(..),
            ),
            Publisher::new(
                "retain-a",
                V4,
                retained("a", &mut lane),
                32,
                10,
                100.0,
                Some(8),
                rng.u64(..),
            ),
            Publisher::new(
                "retain-b",
                V5,
                retained("b", &mut lane),
                32,
                10,
                100.0,
                Some(8),
                rng.u64(..),
            ),
        ];
        let topics: Vec<(u32, String)> = publishers
            .iter()
            .flat_map(|p| p.lanes.iter().map(|l| (l.id, l.topic.clone())))
            .collect();
        let mut subscriber = |client_id: &str, version, filter: &str, qos, presence| {
            let lanes = topics
                .iter()
                .filter(|(_, topic)| matches(filter, topic))
                .map(|(id, _)| *id);
            Subscriber::new(
                client_id,
                version,
                filter,
                qos,
                presence,
                lanes,
                rng.u64(..),
            )
        };
        let subscribers = vec![
            subscriber(
                "sub-online-5",
                V5,
                "chaos/#",
                QoS::ExactlyOnce,
                Presence::Online,
            ),
            subscriber(
                "sub-online-4",
                V4,
                "chaos/#",
                QoS::AtLeastOnce,
                Presence::Online,
            ),
            subscriber(
                "sub-flaky-4",
                V4,
                "chaos/+/q2",
                QoS::ExactlyOnce,
                Presence::Intermittent,
            ),
            subscriber(
                "sub-flaky-5",
                V5,
                "chaos/#",
                QoS::AtLeastOnce,
                Presence::Intermittent,
            ),
            subscriber(
                "sub-away-5",
                V5,
                "chaos/a/#",
                QoS::ExactlyOnce,
                Presence::Offline,
            ),
            subscriber(
                "sub-away-4",
                V4,
                "chaos/+/+",
                QoS::ExactlyOnce,
                Presence::Offline,
            ),
        ];
        let watcher = subscriber(
            "will-watcher",
            V5,
            "will/#",
            QoS::ExactlyOnce,
            Presence::Online,
        );
        World {
            publishers,
            subscribers,
            watcher,
            devices: Vec::new(),
            rng,
            acked_before: 0,
            counts_before: Counts::default(),
            wills_before: 0,
        }
    }

    /// Every subscription is made (SUBACK received) before anything is published.
    pub async fn subscribe_all(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        for subscriber in self.subscribers.iter_mut().chain([&mut self.watcher]) {
            subscriber.subscribe(addr).await?;
        }
        Ok(())
    }

    /// Traffic, a kill, a restart (perhaps killed again), and the checks.
    pub async fn cycle(
        &mut self,
        cycle: u32,
        launch: &Launch,
        broker: &mut Broker,
        longest_traffic: Duration,
    ) -> anyhow::Result<Report> {
        let traffic = longest_traffic
            .mul_f64(self.rng.f64())
            .max(Duration::from_millis(20));
        self.traffic(cycle, broker, traffic).await;
        let mut report = Report {
            killed_after: traffic,
            ..Report::default()
        };
        loop {
            *broker = launch.start()?;
            report.restart = broker.spawned.elapsed();
            let timer = (report.extra_kills < 2 && self.rng.u32(..4) == 0).then(|| {
                let after = Duration::from_millis(self.rng.u64(..1000));
                let broker = broker.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    broker.kill();
                })
            });
            let verified = self.verify(broker, &mut report).await;
            if let Some(timer) = timer {
                timer.abort();
            }
            match verified? {
                true => break,
                false => {
                    report.extra_kills += 1;
                    anyhow::ensure!(broker.is_killed(), "the broker died on its own");
                }
            }
        }
        for device in &mut self.devices {
            device.leave().await;
        }
        let (journals, tables) = data_files(&launch.data_dir);
        report.journals = journals;
        report.tables = tables;
        Ok(report)
    }

    /// Runs every client until the broker is killed after `traffic`.
    async fn traffic(&mut self, cycle: u32, broker: &Broker, traffic: Duration) {
        let addr = broker.addr;
        let stop = CancellationToken::new();
        let devices: Vec<Device> = KINDS
            .iter()
            .flat_map(|&kind| (0..DEVICES_PER_KIND).map(move |i| Device::new(cycle, kind, i)))
            .collect();
        let devices = devices::spawn_all(devices, addr, &mut self.rng, traffic);
        let publishers: Vec<_> = self
            .publishers
            .drain(..)
            .map(|p| tokio::spawn(p.run(addr, Mode::Publish, stop.clone())))
            .collect();
        let subscribers: Vec<_> = self
            .subscribers
            .drain(..)
            .map(|s| tokio::spawn(s.run(addr, stop.clone())))
            .collect();
        let watcher = std::mem::replace(&mut self.watcher, placeholder());
        let watcher = tokio::spawn(watcher.run(addr, stop.clone()));
        tokio::time::sleep(traffic).await;
        let killed_at = Instant::now();
        broker.kill();
        // Let clients read what the broker sent before it died, then stop the rest.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.cancel();
        self.publishers = joined(publishers).await;
        self.subscribers = joined(subscribers).await;
        self.watcher = watcher.await.expect("watcher task");
        for mut device in joined(devices).await {
            device.settle(killed_at);
            self.devices.push(device);
        }
    }

    /// After a restart: devices come back, publishers finish, subscribers drain,
    /// then every check. `Ok(false)` if the broker was killed meanwhile.
    async fn verify(&mut self, broker: &Broker, report: &mut Report) -> anyhow::Result<bool> {
        let addr = broker.addr;
        let stop = CancellationToken::new();
        join_all(
            self.devices
                .iter_mut()
                .map(|device| device.come_back(addr, broker.spawned)),
        )
        .await;
        let finishing: Vec<_> = self
            .publishers
            .drain(..)
            .map(|p| tokio::spawn(p.run(addr, Mode::Finish, stop.clone())))
            .collect();
        self.publishers = joined(finishing).await;
        if broker.is_killed() {
            self.devices.iter_mut().for_each(Device::lost_connection);
            return Ok(false);
        }
        let unfinished: usize = self.publishers.iter().map(Publisher::inflight).sum();
        anyhow::ensure!(
            unfinished == 0,
            "publishers could not finish {unfinished} messages"
        );
        let deadline = Instant::now() + DRAIN_DEADLINE;
        let draining: Vec<_> = self
            .subscribers
            .drain(..)
            .map(|s| {
                let mut lanes = acked_lanes(&self.publishers);
                lanes.retain(|lane, _| s.expects(*lane));
                let target = Target {
                    lanes,
                    deadline: Some(deadline),
                    ..Target::default()
                };
                tokio::spawn(s.drain(addr, target, stop.clone()))
            })
            .collect();
        let watcher = std::mem::replace(&mut self.watcher, placeholder());
        let target = Target {
            wills: self
                .devices
                .iter()
                .filter(|d| d.wills_allowed().0 > 0)
                .map(|d| d.client_id.clone())
                .collect(),
            not_before: Some(broker.spawned + WILL_DELAY + Duration::from_secs(1)),
            deadline: Some(deadline),
            ..Target::default()
        };
        let watching = tokio::spawn(watcher.drain(addr, target, stop.clone()));
        let mut connection_failed = false;
        for task in draining {
            let (subscriber, result) = task.await.expect("subscriber task");
            connection_failed |= result.is_err();
            self.subscribers.push(subscriber);
        }
        let (watcher, result) = watching.await.expect("watcher task");
        connection_failed |= result.is_err();
        self.watcher = watcher;
        let retained = retained_state(addr, self.expected_retained().len()).await;
        if broker.is_killed() {
            self.devices.iter_mut().for_each(Device::lost_connection);
            return Ok(false);
        }
        anyhow::ensure!(!connection_failed, "a subscriber's connection failed");
        self.check(report, &retained.context("reading retained messages")?);
        Ok(true)
    }

    /// Retained lanes' expected messages, by topic.
    fn expected_retained(&self) -> HashMap<String, MessageId> {
        self.publishers
            .iter()
            .flat_map(|p| &p.lanes)
            .filter_map(|lane| {
                let seq = lane.last_sent??;
                Some((lane.topic.clone(), MessageId { lane: lane.id, seq }))
            })
            .collect()
    }

    fn check(&mut self, report: &mut Report, retained: &HashMap<String, Identity>) {
        let acked = acked_lanes(&self.publishers);
        let acked_total: u64 = acked.values().map(|s| s.len() as u64).sum();
        report.acked_total = acked_total;
        report.acked = acked_total - self.acked_before;
        self.acked_before = acked_total;
        for subscriber in &self.subscribers {
            for (&lane, expected) in &acked {
                let missing = subscriber.missing(lane, expected);
                if subscriber.expects(lane) && !missing.is_empty() {
                    report.lost += missing.len() as u64;
                    report.problems.push(format!(
                        "{}: lane {lane}: {} acknowledged messages missing, first {:?}",
                        subscriber.client_id,
                        missing.len(),
                        &missing[..missing.len().min(5)]
                    ));
                }
            }
        }
        // Counters: this cycle's share.
        let mut counts = Counts::default();
        for subscriber in self.subscribers.iter().chain([&self.watcher]) {
            add(&mut counts, &subscriber.counts);
            report.problems.extend(subscriber.problems.iter().cloned());
        }
        for subscriber in self.subscribers.iter_mut().chain([&mut self.watcher]) {
            subscriber.problems.clear();
        }
        let before = std::mem::replace(&mut self.counts_before, counts.clone());
        report.delivered = counts.received - before.received;
        report.qos2_duplicates = counts.qos2_duplicates - before.qos2_duplicates;
        report.out_of_order = counts.out_of_order - before.out_of_order;
        report.redelivered = counts.redelivered - before.redelivered;
        report.other =
            (counts.misrouted - before.misrouted) + (counts.reused_ids - before.reused_ids);
        report.sessions_lost = counts.sessions_lost - before.sessions_lost;
        report.will_violations = counts.will_duplicates - before.will_duplicates;
        for publisher in &mut self.publishers {
            report.sessions_lost += std::mem::take(&mut publisher.sessions_lost);
            report.other += std::mem::take(&mut publisher.bad_acks);
            report.pubcomps_not_found += std::mem::take(&mut publisher.pubcomps_not_found);
            report.problems.append(&mut publisher.problems);
        }
        // Retained: exactly the last message published to each topic.
        let expected = self.expected_retained();
        report.retained_topics = expected.len().max(retained.len());
        for (topic, id) in &expected {
            if retained.get(topic) != Some(&Identity::Message(*id)) {
                report.retained_mismatches += 1;
                report.problems.push(format!(
                    "retained {topic}: expected {id:?}, got {:?}",
                    retained.get(topic)
                ));
            }
        }
        for (topic, got) in retained {
            if !expected.contains_key(topic) {
                report.retained_mismatches += 1;
                report
                    .problems
                    .push(format!("retained {topic}: expected none, got {got:?}"));
            }
        }
        // Wills: as often as each device's fate allows.
        for device in &mut self.devices {
            report.sessions_lost += std::mem::take(&mut device.sessions_lost);
            let (least, most) = device.wills_allowed();
            let got = self
                .watcher
                .wills
                .get(&device.client_id)
                .copied()
                .unwrap_or(0);
            if got < least || got > most {
                report.will_violations += 1;
                report.problems.push(format!(
                    "will of {} ({:?}) published {got} times, expected {least}..={most}",
                    device.client_id, device.kind
                ));
            }
        }
        let wills: u32 = self.watcher.wills.values().sum();
        report.wills = wills - std::mem::replace(&mut self.wills_before, wills);
    }
}

fn placeholder() -> Subscriber {
    Subscriber::new("", V4, "", QoS::AtMostOnce, Presence::Offline, [], 0)
}

fn add(total: &mut Counts, counts: &Counts) {
    total.out_of_order += counts.out_of_order;
    total.qos2_duplicates += counts.qos2_duplicates;
    total.will_duplicates += counts.will_duplicates;
    total.misrouted += counts.misrouted;
    total.reused_ids += counts.reused_ids;
    total.sessions_lost += counts.sessions_lost;
    total.redelivered += counts.redelivered;
    total.received += counts.received;
}

/// Every non-retained lane's acknowledged sequence numbers.
fn acked_lanes(publishers: &[Publisher]) -> HashMap<u32, crate::message::SeqSet> {
    publishers
        .iter()
        .flat_map(|p| &p.lanes)
        .filter(|lane| !lane.retain)
        .map(|lane| (lane.id, lane.acked.clone()))
        .collect()
}

async fn joined<T: 'static>(tasks: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut done = Vec::with_capacity(tasks.len());
    for task in tasks {
        done.push(task.await.expect("client task"));
    }
    done
}

/// What a new subscriber to `retained/#` receives, by topic: waits for
/// `expected` topics (then a little longer, for any extra).
async fn retained_state(
    addr: SocketAddr,
    expected: usize,
) -> anyhow::Result<HashMap<String, Identity>> {
    let connect = connect_packet(V5, "retained-check", None);
    let (mut conn, _) = Conn::open(addr, connect).await?;
    conn.queue(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        filters: vec![(
            "retained/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
        )],
        properties: Default::default(),
    }));
    conn.flush().await?;
    let mut got = HashMap::new();
    let mut quiet = if expected == 0 {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(5)
    };
    while let Ok(packet) = tokio::time::timeout(quiet, conn.recv()).await {
        if let Packet::Publish(publish) = packet? {
            if let Some(id) = publish.packet_id {
                conn.queue(&Packet::PubAck(Ack::new(id)));
                conn.flush().await?;
            }
            let identity = identify(&publish.payload).unwrap_or_else(|| {
                Identity::Will(format!("foreign payload {:?}", publish.payload))
            });
            got.insert(publish.topic.to_string(), identity);
            if got.len() >= expected {
                quiet = Duration::from_millis(300);
            }
        }
    }
    conn.disconnect().await;
    Ok(got)
}
