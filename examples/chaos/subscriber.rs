//! A subscriber with a persistent session, and what it received. It acknowledges
//! as a careful client does: PUBACK at once; for QoS 2 it takes the message on
//! PUBLISH, answers PUBREC, and until PUBREL treats a PUBLISH with the same packet
//! id as the same message (a resend), so any other second copy of a QoS 2 message
//! is one the broker delivered twice.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rookery::protocol::{
    Ack, Packet, PacketId, Properties, ProtocolVersion, QoS, Subscribe, SubscriptionOptions,
};
use tokio_util::sync::CancellationToken;

use crate::conn::{connect_packet, Conn};
use crate::message::{identify, Identity, SeqSet};

/// How a subscriber spends a traffic phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    /// Connected throughout.
    Online,
    /// Offline and online in turns of a few hundred milliseconds: messages queue
    /// while it is away and are replayed when it is back.
    Intermittent,
    /// Offline throughout; it catches up only when the checks drain it.
    Offline,
}

/// Violations, and what is normal but worth counting.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// A message that arrived before one published earlier on its lane.
    pub out_of_order: u64,
    /// A second copy of a QoS 2 delivery (not a resend under the same packet id).
    pub qos2_duplicates: u64,
    /// A will received twice.
    pub will_duplicates: u64,
    /// A message that does not match the subscription, or a payload not ours.
    pub misrouted: u64,
    /// A packet id reused for another message while its QoS 2 flow was open.
    pub reused_ids: u64,
    /// A reconnect that found no session.
    pub sessions_lost: u64,
    /// QoS 1 redeliveries: allowed.
    pub redelivered: u64,
    /// First copies received.
    pub received: u64,
}

/// What a drain waits for.
#[derive(Debug, Default)]
pub struct Target {
    /// Per lane, what must have arrived.
    pub lanes: HashMap<u32, SeqSet>,
    pub wills: HashSet<String>,
    /// Keep listening until then (for wills that must not come).
    pub not_before: Option<Instant>,
    /// Give up then.
    pub deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct Lane {
    seen: SeqSet,
    last_first_seen: Option<u64>,
}

#[derive(Debug)]
pub struct Subscriber {
    pub client_id: String,
    pub version: ProtocolVersion,
    pub filter: String,
    pub qos: QoS,
    pub presence: Presence,
    /// Lanes the filter matches; a message of any other is misrouted.
    lanes: HashMap<u32, Lane>,
    /// Wills received, and how often.
    pub wills: HashMap<String, u32>,
    /// QoS 2 deliveries between PUBREC and PUBREL, by packet id.
    pending: HashMap<PacketId, Identity>,
    pub counts: Counts,
    /// The first few violations, spelled out.
    pub problems: Vec<String>,
    rng: fastrand::Rng,
}

/// How long a drained subscriber listens on for late duplicates.
const GRACE: Duration = Duration::from_millis(300);

impl Subscriber {
    pub fn new(
        client_id: &str,
        version: ProtocolVersion,
        filter: &str,
        qos: QoS,
        presence: Presence,
        lanes: impl IntoIterator<Item = u32>,
        seed: u64,
    ) -> Subscriber {
        Subscriber {
            client_id: client_id.into(),
            version,
            filter: filter.into(),
            qos,
            presence,
            lanes: lanes.into_iter().map(|id| (id, Lane::default())).collect(),
            wills: HashMap::new(),
            pending: HashMap::new(),
            counts: Counts::default(),
            problems: Vec::new(),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Whether the subscription matches `lane`.
    pub fn expects(&self, lane: u32) -> bool {
        self.lanes.contains_key(&lane)
    }

    /// Which of `expected`'s sequence numbers never arrived.
    pub fn missing(&self, lane: u32, expected: &SeqSet) -> Vec<u64> {
        match self.lanes.get(&lane) {
            Some(received) => expected.missing_from(&received.seen),
            None => expected.missing_from(&SeqSet::default()),
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < 10 {
            self.problems.push(text);
        }
    }

    /// Opens the session and subscribes; the SUBACK comes before any publisher starts.
    pub async fn subscribe(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let connect = connect_packet(self.version, &self.client_id, Some(u32::MAX));
        let (mut conn, _) = Conn::open(addr, connect).await?;
        conn.queue(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(1).expect("non-zero"),
            filters: vec![(
                ByteString::from(self.filter.as_str()),
                SubscriptionOptions {
                    qos: self.qos,
                    ..SubscriptionOptions::default()
                },
            )],
            properties: Properties::default(),
        }));
        conn.flush().await?;
        match conn.recv().await? {
            Packet::SubAck(suback)
                if suback.reasons.first().map(|r| r.0) == Some(self.qos as u8) => {}
            other => anyhow::bail!("{}: SUBACK expected, got {other:?}", self.client_id),
        }
        conn.disconnect().await;
        Ok(())
    }

    /// A traffic phase: present as [`Presence`] says until `stop`.
    pub async fn run(mut self, addr: SocketAddr, stop: CancellationToken) -> Self {
        match self.presence {
            Presence::Online => {
                let _ = self.listen(addr, &stop, None, None).await;
            }
            Presence::Offline => stop.cancelled().await,
            Presence::Intermittent => loop {
                let away = Duration::from_millis(self.rng.u64(100..800));
                tokio::select! {
                    () = tokio::time::sleep(away) => {}
                    () = stop.cancelled() => break,
                }
                let until = Instant::now() + Duration::from_millis(self.rng.u64(100..600));
                if self.listen(addr, &stop, Some(until), None).await.is_err() {
                    break;
                }
            },
        }
        self
    }

    /// Connects and receives until `target` is met (then [`GRACE`] longer), or
    /// its deadline; the result says whether the connection held up.
    pub async fn drain(
        mut self,
        addr: SocketAddr,
        target: Target,
        stop: CancellationToken,
    ) -> (Self, anyhow::Result<()>) {
        let result = self.listen(addr, &stop, None, Some(target)).await;
        (self, result)
    }

    async fn listen(
        &mut self,
        addr: SocketAddr,
        stop: &CancellationToken,
        until: Option<Instant>,
        target: Option<Target>,
    ) -> anyhow::Result<()> {
        let connect = connect_packet(self.version, &self.client_id, Some(u32::MAX));
        let (mut conn, connack) = tokio::select! {
            opened = Conn::open(addr, connect) => opened?,
            () = stop.cancelled() => return Ok(()),
        };
        if !connack.session_present {
            self.counts.sessions_lost += 1;
            self.problem(format!("{}: session lost", self.client_id));
        }
        let mut missing = target.as_ref().map_or(0, |t| self.count_missing(t));
        let mut met_at = None;
        loop {
            let now = Instant::now();
            if let Some(target) = &target {
                if met_at.is_none() && missing == 0 && target.not_before.is_none_or(|at| at <= now)
                {
                    met_at = Some(now);
                }
            }
            let leave_at = [
                until,
                met_at.map(|at| at + GRACE),
                target.as_ref().and_then(|t| t.deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            let wake = leave_at.unwrap_or(now + Duration::from_secs(3600));
            // While a target's not_before is ahead, wake for it too.
            let wake = match target.as_ref().and_then(|t| t.not_before) {
                Some(at) if at > now && met_at.is_none() => wake.min(at),
                _ => wake,
            };
            if leave_at.is_some_and(|at| at <= now) {
                break;
            }
            tokio::select! {
                packet = conn.recv() => {
                    let packet = packet?;
                    missing -= self.on_packet(packet, &mut conn, target.as_ref());
                    while let Some(packet) = conn.next_buffered()? {
                        missing -= self.on_packet(packet, &mut conn, target.as_ref());
                    }
                    conn.flush().await?;
                }
                () = tokio::time::sleep_until(wake.into()) => {}
                () = stop.cancelled() => return Ok(()),
            }
        }
        // Leaving: politely, or by dropping the socket, as devices do.
        if self.rng.bool() {
            conn.disconnect().await;
        }
        Ok(())
    }

    fn count_missing(&self, target: &Target) -> usize {
        let lanes: usize = target
            .lanes
            .iter()
            .map(|(lane, expected)| self.missing(*lane, expected).len())
            .sum();
        let wills = target
            .wills
            .iter()
            .filter(|name| !self.wills.contains_key(*name))
            .count();
        lanes + wills
    }

    /// Handles one packet; returns how many of the target's messages it brought (0 or 1).
    fn on_packet(&mut self, packet: Packet, conn: &mut Conn, target: Option<&Target>) -> usize {
        match packet {
            Packet::Publish(publish) => {
                let Some(identity) = identify(&publish.payload) else {
                    self.counts.misrouted += 1;
                    self.problem(format!(
                        "{}: foreign payload on {}",
                        self.client_id, publish.topic
                    ));
                    return 0;
                };
                match (publish.qos, publish.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => {
                        conn.queue(&Packet::PubAck(Ack::new(id)));
                        self.record(identity, false, target)
                    }
                    (QoS::ExactlyOnce, Some(id)) => {
                        conn.queue(&Packet::PubRec(Ack::new(id)));
                        match self.pending.get(&id) {
                            Some(open) if *open == identity => 0,
                            Some(open) => {
                                self.counts.reused_ids += 1;
                                let text = format!(
                                    "{}: packet id {} reused for {identity:?} while {open:?} was open",
                                    self.client_id,
                                    id.get()
                                );
                                self.problem(text);
                                0
                            }
                            None => {
                                self.pending.insert(id, identity.clone());
                                self.record(identity, true, target)
                            }
                        }
                    }
                    _ => self.record(identity, false, target),
                }
            }
            Packet::PubRel(ack) => {
                self.pending.remove(&ack.packet_id);
                conn.queue(&Packet::PubComp(Ack::new(ack.packet_id)));
                0
            }
            _ => 0,
        }
    }

    fn record(
        &mut self,
        identity: Identity,
        is_exactly_once: bool,
        target: Option<&Target>,
    ) -> usize {
        match identity {
            Identity::Message(id) => {
                let Some(lane) = self.lanes.get_mut(&id.lane) else {
                    self.counts.misrouted += 1;
                    self.problem(format!(
                        "{}: got lane {} it did not subscribe to",
                        self.client_id, id.lane
                    ));
                    return 0;
                };
                if !lane.seen.insert(id.seq) {
                    if is_exactly_once {
                        self.counts.qos2_duplicates += 1;
                        let text = format!("{}: QoS 2 {id:?} delivered twice", self.client_id);
                        self.problem(text);
                    } else {
                        self.counts.redelivered += 1;
                    }
                    return 0;
                }
                self.counts.received += 1;
                let before = lane
                    .last_first_seen
                    .replace(id.seq.max(lane.last_first_seen.unwrap_or(0)));
                if before.is_some_and(|last| last > id.seq) {
                    self.counts.out_of_order += 1;
                    let text = format!(
                        "{}: lane {} seq {} after {}",
                        self.client_id,
                        id.lane,
                        id.seq,
                        before.unwrap_or(0)
                    );
                    self.problem(text);
                }
                let wanted = target
                    .and_then(|t| t.lanes.get(&id.lane))
                    .is_some_and(|expected| expected.contains(id.seq));
                usize::from(wanted)
            }
            Identity::Will(name) => {
                let count = self.wills.entry(name.clone()).or_default();
                *count += 1;
                if *count > 1 {
                    if is_exactly_once {
                        self.counts.will_duplicates += 1;
                        self.problem(format!("{}: will of {name} received twice", self.client_id));
                    } else {
                        self.counts.redelivered += 1;
                    }
                    return 0;
                }
                self.counts.received += 1;
                usize::from(target.is_some_and(|t| t.wills.contains(&name)))
            }
        }
    }
}
