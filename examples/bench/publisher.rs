//! A publisher task: one connection sending stamped PUBLISH packets, keeping up to
//! `inflight` QoS 1/2 messages unacknowledged (a sliding window that PUBACK or
//! PUBCOMP advances). QoS 0 writes as fast as TCP allows, unless `--rate` paces it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use bytestring::ByteString;
use rookery::protocol::{Ack, Packet, PacketId, Publish, QoS};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep_until;

use crate::stamp::Stamp;
use crate::wire::Conn;
use crate::Target;

/// QoS 0 bytes encoded per write at most. QoS 1/2 writes are bounded by the window:
/// fill it, write once, then wait for acks, so each write carries many packets.
const QOS0_BATCH_BYTES: usize = 32 * 1024;
/// A broker that acknowledges nothing for this long has stalled.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const READ_CHUNK: usize = 16 * 1024;

/// When a publisher stops sending.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    /// Send until this moment (`--duration`).
    At(Instant),
    /// Send exactly this many messages (`--messages`).
    After(u64),
}

/// Everything one publisher needs to know.
pub struct Plan {
    pub target: Target,
    pub index: u32,
    pub topic: ByteString,
    pub qos: QoS,
    pub payload_len: usize,
    pub inflight: usize,
    /// Time between two messages of this publisher, under `--rate`.
    pub interval: Option<Duration>,
    /// Offset of this publisher's first message from the common start, under `--rate`.
    pub first_send_delay: Duration,
    /// Shared by every task: stamps are nanoseconds since this instant.
    pub clock: Instant,
}

/// Connects, reports ready, waits for the start signal (which carries the stop
/// condition and this publisher's first send time), publishes, and returns how
/// many messages it sent; for QoS 1/2, every one of them was acknowledged.
pub async fn run(
    plan: Plan,
    ready: mpsc::Sender<anyhow::Result<()>>,
    mut go: watch::Receiver<Option<(Instant, Stop)>>,
) -> anyhow::Result<u64> {
    let client_id = format!("{}-p{}", plan.target.client_prefix, plan.index);
    let connected = Conn::connect(
        plan.target.addr,
        plan.target.version,
        &client_id,
        READ_CHUNK,
    )
    .await
    .with_context(|| format!("publisher {}", plan.index));
    let (mut conn, connack) = match connected {
        Ok(connected) => connected,
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return Ok(0);
        }
    };
    let _ = ready.send(Ok(())).await;
    drop(ready);
    let (begin, stop) = *go
        .wait_for(Option::is_some)
        .await
        .context("start signal dropped")?
        .as_ref()
        .context("start signal empty")?;
    // v5 brokers may announce a smaller Receive Maximum than our window.
    let broker_max = connack
        .properties
        .receive_maximum
        .map_or(usize::MAX, usize::from);
    let window = Window::new(plan.inflight.min(broker_max));
    let sent = Publisher {
        conn: &mut conn,
        plan: &plan,
        window,
        stop,
    }
    .publish(begin + plan.first_send_delay)
    .await
    .with_context(|| format!("publisher {}", plan.index))?;
    conn.disconnect().await?;
    Ok(sent)
}

struct Publisher<'a> {
    conn: &'a mut Conn,
    plan: &'a Plan,
    window: Window,
    stop: Stop,
}

impl Publisher<'_> {
    async fn publish(&mut self, first_due: Instant) -> anyhow::Result<u64> {
        let plan = self.plan;
        let mut packet = Packet::Publish(Publish {
            qos: plan.qos,
            topic: plan.topic.clone(),
            payload: Bytes::from(vec![0u8; plan.payload_len]),
            ..Publish::default()
        });
        let mut sent = 0u64;
        let mut next_due = first_due;
        loop {
            let now = Instant::now();
            let sending = match self.stop {
                Stop::At(end) => now < end,
                Stop::After(count) => sent < count,
            };
            while sending && self.window.has_room() && self.conn.queued_len() < QOS0_BATCH_BYTES {
                if let Stop::After(count) = self.stop {
                    if sent >= count {
                        break;
                    }
                }
                if let Some(interval) = plan.interval {
                    if next_due > now {
                        break;
                    }
                    next_due += interval;
                }
                self.queue_publish(&mut packet, sent);
                sent += 1;
            }
            self.conn.flush().await?;
            if !sending && self.window.is_empty() {
                return Ok(sent);
            }
            self.wait(sending, next_due).await?;
            self.handle_acks()?;
        }
    }

    fn queue_publish(&mut self, packet: &mut Packet, sequence: u64) {
        let plan = self.plan;
        if let Packet::Publish(publish) = packet {
            if plan.qos != QoS::AtMostOnce {
                publish.packet_id = Some(self.window.take());
            }
        }
        self.conn.queue(packet);
        let stamp = Stamp {
            publisher: plan.index,
            sequence,
            sent_ns: plan.clock.elapsed().as_nanos() as u64,
        };
        stamp.write_into_tail(self.conn.write_buffer(), plan.payload_len);
    }

    /// Waits for whatever lets the loop progress: acks when the window is full or
    /// sending is over, the next due time under `--rate`; otherwise it only picks
    /// up acks that already arrived.
    async fn wait(&mut self, sending: bool, next_due: Instant) -> anyhow::Result<()> {
        let paced = self.plan.interval.is_some() && sending && self.window.has_room();
        if self.plan.qos == QoS::AtMostOnce {
            if paced {
                sleep_until(next_due.into()).await;
            }
            return Ok(());
        }
        if !sending || !self.window.has_room() {
            return tokio::time::timeout(ACK_TIMEOUT, self.conn.read_more())
                .await
                .context("broker stopped acknowledging")?;
        }
        if paced && next_due > Instant::now() {
            tokio::select! {
                read = self.conn.read_more() => read?,
                () = sleep_until(next_due.into()) => {}
            }
            return Ok(());
        }
        self.conn.try_read_more()
    }

    fn handle_acks(&mut self) -> anyhow::Result<()> {
        while let Some(packet) = self.conn.next_packet()? {
            match packet {
                Packet::PubAck(ack) | Packet::PubComp(ack) => self.window.release(ack.packet_id)?,
                Packet::PubRec(ack) => {
                    if ack.reason.0 >= 0x80 {
                        self.window.release(ack.packet_id)?;
                    } else {
                        self.conn.queue(&Packet::PubRel(Ack::new(ack.packet_id)));
                    }
                }
                Packet::Disconnect(d) => bail!("broker sent DISCONNECT {:#04x}", d.reason.0),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Packet ids in use. Ids are handed out round-robin and skip any still in
/// flight, so a broker that acknowledges out of order cannot make us reuse one.
struct Window {
    in_use: Vec<bool>,
    next: u16,
    outstanding: usize,
    capacity: usize,
}

impl Window {
    fn new(capacity: usize) -> Window {
        Window {
            in_use: vec![false; usize::from(u16::MAX) + 1],
            next: 0,
            outstanding: 0,
            capacity: capacity.clamp(1, usize::from(u16::MAX)),
        }
    }

    fn has_room(&self) -> bool {
        self.outstanding < self.capacity
    }

    fn is_empty(&self) -> bool {
        self.outstanding == 0
    }

    /// Call only when [`Window::has_room`]: then a free id exists.
    fn take(&mut self) -> PacketId {
        loop {
            self.next = self.next.wrapping_add(1);
            let Some(id) = PacketId::new(self.next) else {
                continue;
            };
            let slot = &mut self.in_use[usize::from(self.next)];
            if !*slot {
                *slot = true;
                self.outstanding += 1;
                return id;
            }
        }
    }

    fn release(&mut self, id: PacketId) -> anyhow::Result<()> {
        let slot = &mut self.in_use[usize::from(id.get())];
        if !*slot {
            bail!("acknowledgement for packet id {} not in flight", id.get());
        }
        *slot = false;
        self.outstanding -= 1;
        Ok(())
    }
}
