//! A subscriber task: subscribes, acknowledges every QoS 1/2 delivery the way the
//! spec asks (PUBACK; PUBREC, then PUBCOMP on PUBREL), and reads each payload's
//! stamp into per-publisher tracks and a latency histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use bytestring::ByteString;
use hdrhistogram::Histogram;
use rookery::protocol::{
    Ack, Packet, PacketId, Properties, Publish, QoS, Subscribe, SubscriptionOptions,
};
use tokio::sync::{mpsc, watch};

use crate::stamp::{Stamp, Track};
use crate::wire::{Conn, HANDSHAKE_TIMEOUT};
use crate::Target;

const READ_CHUNK: usize = 64 * 1024;
/// Latencies are recorded in microseconds, up to a minute, to 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Everything one subscriber needs to know.
pub struct Plan {
    pub target: Target,
    pub index: usize,
    pub filter: ByteString,
    pub qos: QoS,
    /// How many publishers exist; stamps from an index at or above it are corrupt.
    pub publishers: usize,
    pub clock: Instant,
    /// Shared count of unique deliveries across subscribers, which the drain watches.
    pub unique_total: Arc<AtomicU64>,
}

/// What a subscriber saw, handed back when it stops.
pub struct Report {
    /// Indexed by publisher.
    pub tracks: Vec<Track>,
    pub latency_us: Histogram<u64>,
    /// PUBLISH packets received, duplicates included.
    pub delivered: u64,
    /// Payloads without a readable stamp.
    pub corrupt: u64,
    /// When the last PUBLISH arrived, in nanoseconds on the shared clock.
    pub last_delivery_ns: u64,
}

/// Connects and subscribes, reports ready once SUBACK granted the subscription,
/// then counts deliveries until `stop` turns true.
pub async fn run(
    plan: Plan,
    ready: mpsc::Sender<anyhow::Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<Report> {
    let mut conn = match subscribe(&plan).await {
        Ok(conn) => conn,
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            bail!("subscriber {} did not start", plan.index);
        }
    };
    let _ = ready.send(Ok(())).await;
    drop(ready);
    let mut subscriber = Subscriber {
        report: Report {
            tracks: (0..plan.publishers).map(|_| Track::default()).collect(),
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?,
            delivered: 0,
            corrupt: 0,
            last_delivery_ns: 0,
        },
    };
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => break,
            read = conn.read_more() => read.with_context(|| format!("subscriber {}", plan.index))?,
        }
        let now_ns = plan.clock.elapsed().as_nanos() as u64;
        let mut unique = 0;
        while let Some(packet) = conn.next_packet()? {
            match packet {
                Packet::Publish(publish) => {
                    unique += subscriber.on_publish(&mut conn, &publish, now_ns)
                }
                Packet::PubRel(ack) => conn.queue(&Packet::PubComp(Ack::new(ack.packet_id))),
                Packet::Disconnect(d) => bail!("broker sent DISCONNECT {:#04x}", d.reason.0),
                _ => {}
            }
        }
        conn.flush().await?;
        plan.unique_total.fetch_add(unique, Ordering::Relaxed);
    }
    conn.disconnect().await?;
    Ok(subscriber.report)
}

async fn subscribe(plan: &Plan) -> anyhow::Result<Conn> {
    let client_id = format!("{}-s{}", plan.target.client_prefix, plan.index);
    let (mut conn, _) = Conn::connect(
        plan.target.addr,
        plan.target.version,
        &client_id,
        READ_CHUNK,
    )
    .await?;
    let packet_id = PacketId::new(1).context("1 is a valid packet id")?;
    let options = SubscriptionOptions {
        qos: plan.qos,
        ..SubscriptionOptions::default()
    };
    conn.queue(&Packet::Subscribe(Subscribe {
        packet_id,
        filters: vec![(plan.filter.clone(), options)],
        properties: Properties::default(),
    }));
    conn.flush().await?;
    let reply = tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.recv())
        .await
        .context("no SUBACK")??;
    let Packet::SubAck(suback) = reply else {
        bail!("expected SUBACK, got {}", reply.name());
    };
    match suback.reasons.first() {
        Some(code) if code.0 == plan.qos as u8 => Ok(conn),
        other => bail!("SUBACK for {:?} granted {other:?}", plan.filter),
    }
}

struct Subscriber {
    report: Report,
}

impl Subscriber {
    /// Acknowledges and records one delivery; returns 1 if it was new.
    fn on_publish(&mut self, conn: &mut Conn, publish: &Publish, now_ns: u64) -> u64 {
        match (publish.qos, publish.packet_id) {
            (QoS::AtLeastOnce, Some(id)) => conn.queue(&Packet::PubAck(Ack::new(id))),
            (QoS::ExactlyOnce, Some(id)) => conn.queue(&Packet::PubRec(Ack::new(id))),
            _ => {}
        }
        let report = &mut self.report;
        report.delivered += 1;
        report.last_delivery_ns = now_ns;
        let Some(stamp) = Stamp::read(&publish.payload) else {
            report.corrupt += 1;
            return 0;
        };
        let Some(track) = report.tracks.get_mut(stamp.publisher as usize) else {
            report.corrupt += 1;
            return 0;
        };
        let before = track.unique;
        if !track.record(stamp.sequence) {
            report.corrupt += 1;
        }
        let latency_us = now_ns.saturating_sub(stamp.sent_ns) / 1_000;
        report.latency_us.saturating_record(latency_us.max(1));
        track.unique - before
    }
}
