//! A publisher with a persistent session, behaving as a careful client does: a
//! window of QoS 1/2 messages in flight, and after a reconnect every one of them
//! sent again, in order (PUBLISH with DUP, or PUBREL once PUBREC came). It keeps
//! what the broker acknowledged, the only thing the checks hold it to.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use rookery::protocol::{Ack, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS};
use tokio_util::sync::CancellationToken;

use crate::conn::{connect_packet, padded, Conn};
use crate::message::{message_head, MessageId, SeqSet};

/// One publisher's stream of messages on one topic.
#[derive(Debug)]
pub struct Lane {
    /// Numbers every lane of the run, carried in each payload.
    pub id: u32,
    pub topic: String,
    pub qos: QoS,
    pub retain: bool,
    pub next_seq: u64,
    /// Sequence numbers whose PUBACK or PUBCOMP came.
    pub acked: SeqSet,
    /// A retained lane's last message sent: `Some(None)` for a deletion.
    pub last_sent: Option<Option<u64>>,
}

impl Lane {
    pub fn new(id: u32, topic: String, qos: QoS, retain: bool) -> Lane {
        Lane {
            id,
            topic,
            qos,
            retain,
            next_seq: 0,
            acked: SeqSet::default(),
            last_sent: None,
        }
    }
}

#[derive(Debug)]
struct InFlight {
    packet_id: PacketId,
    lane: usize,
    seq: u64,
    is_deletion: bool,
    /// PUBREC came and PUBREL went: only PUBCOMP is missing.
    is_released: bool,
}

#[derive(Debug)]
pub struct Publisher {
    pub client_id: String,
    pub version: ProtocolVersion,
    pub lanes: Vec<Lane>,
    payload_len: usize,
    window: usize,
    interval: Duration,
    /// One message in this many deletes its retained topic (empty payload).
    deletion_one_in: Option<u32>,
    inflight: VecDeque<InFlight>,
    next_packet_id: u16,
    has_session: bool,
    /// Reconnects that found no session: in-flight messages were forgotten.
    pub sessions_lost: u64,
    /// PUBACK/PUBREC/PUBCOMP with a failure code, or for nothing in flight.
    pub bad_acks: u64,
    /// The first few of them, spelled out.
    pub problems: Vec<String>,
    /// PUBCOMP 0x92 for a resent PUBREL: normal after a crash (v5 says so; 3.1.1
    /// clients cannot tell).
    pub pubcomps_not_found: u64,
    rng: fastrand::Rng,
}

/// What a run of the publisher does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Publish new messages until the broker dies or `stop`.
    Publish,
    /// Only finish what is in flight, then disconnect.
    Finish,
}

impl Publisher {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client_id: &str,
        version: ProtocolVersion,
        lanes: Vec<Lane>,
        payload_len: usize,
        window: usize,
        rate: f64,
        deletion_one_in: Option<u32>,
        seed: u64,
    ) -> Publisher {
        Publisher {
            client_id: client_id.into(),
            version,
            lanes,
            payload_len,
            window,
            interval: Duration::from_secs_f64(1.0 / rate),
            deletion_one_in,
            inflight: VecDeque::new(),
            next_packet_id: 0,
            has_session: false,
            sessions_lost: 0,
            bad_acks: 0,
            problems: Vec::new(),
            pubcomps_not_found: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    /// Connects, resends what is in flight, then works in `mode`. Returns when the
    /// connection ends, for whatever reason: the state is kept for the next run.
    pub async fn run(mut self, addr: SocketAddr, mode: Mode, stop: CancellationToken) -> Self {
        let _ = self.session(addr, mode, &stop).await;
        self
    }

    async fn session(
        &mut self,
        addr: SocketAddr,
        mode: Mode,
        stop: &CancellationToken,
    ) -> anyhow::Result<()> {
        let connect = connect_packet(self.version, &self.client_id, Some(u32::MAX));
        let (mut conn, connack) = tokio::select! {
            opened = Conn::open(addr, connect) => opened?,
            () = stop.cancelled() => return Ok(()),
        };
        if self.has_session && !connack.session_present {
            self.sessions_lost += 1;
            self.inflight.clear();
        }
        self.has_session = true;
        for inflight in &self.inflight {
            let packet = if inflight.is_released {
                Packet::PubRel(Ack::new(inflight.packet_id))
            } else {
                Packet::Publish(self.publish_packet(inflight, true))
            };
            conn.queue(&packet);
        }
        conn.flush().await?;
        let mut next_send = Instant::now();
        loop {
            if mode == Mode::Finish && self.inflight.is_empty() {
                conn.disconnect().await;
                return Ok(());
            }
            if mode == Mode::Publish {
                let now = Instant::now();
                // After a stall, do not burst to catch up.
                if next_send + Duration::from_millis(100) < now {
                    next_send = now;
                }
                while self.inflight.len() < self.window && next_send <= now {
                    self.publish_next(&mut conn);
                    next_send += self.interval;
                }
                conn.flush().await?;
            }
            let can_send = mode == Mode::Publish && self.inflight.len() < self.window;
            tokio::select! {
                packet = conn.recv() => self.on_packet(packet?, &mut conn),
                () = tokio::time::sleep_until(next_send.into()), if can_send => {}
                () = stop.cancelled() => return Ok(()),
            }
            while let Some(packet) = conn.next_buffered()? {
                self.on_packet(packet, &mut conn);
            }
            conn.flush().await?;
        }
    }

    fn publish_next(&mut self, conn: &mut Conn) {
        let lane = self.rng.usize(..self.lanes.len());
        let is_deletion = self.deletion_one_in.is_some_and(|n| self.rng.u32(..n) == 0);
        let lane_state = &mut self.lanes[lane];
        let seq = lane_state.next_seq;
        lane_state.next_seq += 1;
        if lane_state.retain {
            lane_state.last_sent = Some((!is_deletion).then_some(seq));
        }
        let inflight = InFlight {
            packet_id: self.allocate_packet_id(),
            lane,
            seq,
            is_deletion,
            is_released: false,
        };
        conn.queue(&Packet::Publish(self.publish_packet(&inflight, false)));
        self.inflight.push_back(inflight);
    }

    fn allocate_packet_id(&mut self) -> PacketId {
        loop {
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            let id = PacketId::new(self.next_packet_id).expect("non-zero");
            if self.inflight.iter().all(|f| f.packet_id != id) {
                return id;
            }
        }
    }

    fn publish_packet(&self, inflight: &InFlight, dup: bool) -> Publish {
        let lane = &self.lanes[inflight.lane];
        let payload = if inflight.is_deletion {
            Bytes::new()
        } else {
            let id = MessageId {
                lane: lane.id,
                seq: inflight.seq,
            };
            padded(&message_head(id), self.payload_len)
        };
        Publish {
            dup,
            qos: lane.qos,
            retain: lane.retain,
            topic: ByteString::from(lane.topic.as_str()),
            packet_id: Some(inflight.packet_id),
            properties: Properties::default(),
            payload,
        }
    }

    fn on_packet(&mut self, packet: Packet, conn: &mut Conn) {
        match packet {
            Packet::PubAck(ack) => self.complete(ack, false),
            Packet::PubComp(ack) => self.complete(ack, true),
            Packet::PubRec(ack) => {
                let found = self
                    .inflight
                    .iter_mut()
                    .find(|f| f.packet_id == ack.packet_id);
                match found {
                    Some(_) if ack.reason.is_error() => {
                        self.bad_ack("PUBREC", &ack);
                        self.inflight.retain(|f| f.packet_id != ack.packet_id);
                    }
                    Some(inflight) => {
                        inflight.is_released = true;
                        conn.queue(&Packet::PubRel(Ack::new(ack.packet_id)));
                    }
                    None => self.bad_ack("PUBREC", &ack),
                }
            }
            _ => {}
        }
    }

    /// PUBACK (QoS 1) or PUBCOMP (QoS 2): the message is acknowledged.
    fn complete(&mut self, ack: Ack, is_pubcomp: bool) {
        let name = if is_pubcomp { "PUBCOMP" } else { "PUBACK" };
        let position = self
            .inflight
            .iter()
            .position(|f| f.packet_id == ack.packet_id && f.is_released == is_pubcomp);
        let Some(position) = position else {
            self.bad_ack(name, &ack);
            return;
        };
        // PUBCOMP 0x92 (Packet Identifier not found) answers a PUBREL resent after
        // a crash that came after the broker handled the first one but before its
        // PUBCOMP left: the flow is complete, and PUBREC already meant "stored".
        let is_already_released = is_pubcomp && ack.reason.0 == 0x92;
        if ack.reason.is_error() && !is_already_released {
            self.bad_ack(name, &ack);
        }
        let inflight = self.inflight.remove(position).expect("found");
        if is_already_released {
            self.pubcomps_not_found += 1;
        }
        if !ack.reason.is_error() || is_already_released {
            self.lanes[inflight.lane].acked.insert(inflight.seq);
        }
    }

    fn bad_ack(&mut self, name: &str, ack: &Ack) {
        self.bad_acks += 1;
        if self.problems.len() < 5 {
            let state = self
                .inflight
                .iter()
                .find(|f| f.packet_id == ack.packet_id)
                .map(|f| format!("{f:?}"))
                .unwrap_or_else(|| "nothing in flight".into());
            self.problems.push(format!(
                "{}: {name} {} reason {:#04x} for {state}",
                self.client_id,
                ack.packet_id.get(),
                ack.reason.0
            ));
        }
    }
}
