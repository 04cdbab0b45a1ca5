//! The session state machine, driven as `connection` drives it (connect, attach,
//! resume, packets, deliveries from the mailbox, time, takeover, departure) by a
//! script of arbitrary steps, with no I/O. After every step:
//! - nothing panicked;
//! - everything the session wrote decodes at the negotiated version and fits the
//!   client's Maximum Packet Size ([MQTT-3.1.2-24]);
//! - QoS 1/2 PUBLISH packets in flight never exceed the client's window
//!   (Receive Maximum / `max_inflight`, [MQTT-3.3.4-7]), counted as the client
//!   sees them: sent on this connection (the quota starts afresh with each one,
//!   MQTT 5.0 §4.9) and not yet PUBACKed, PUBCOMPed or refused by PUBREC ≥ 0x80;
//! - a new PUBLISH never reuses a packet id that is still in flight
//!   ([MQTT-2.3.1-2]), and a DUP one only resends an id in flight ([MQTT-4.4.0-1]);
//! - each client PUBLISH, PUBREL, SUBSCRIBE, UNSUBSCRIBE and PINGREQ gets its one
//!   answer, with its packet id.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rookery::broker::message::Message;
use rookery::broker::{Broker, Link, Mailbox, SessionRequest, Successor};
use rookery::config::{Limits, SessionConfig};
use rookery::protocol::{
    decode, encode, Ack, ClientId, Connect, Disconnect, Packet, PacketId, Properties,
    ProtocolVersion, Publish, QoS, ReasonCode, RetainHandling, Subscribe, SubscriptionOptions,
    TopicName, Unsubscribe, Will,
};
use rookery::session::{connect, Flow, Outbox, Session, SessionExpiry};
use rookery::storage::Storage;

use super::input::Input;

const CLIENT_ID: &str = "c";
const TOPICS: [&str; 4] = ["a", "a/b", "b", "$SYS/x"];
const FILTERS: [&str; 7] = ["a", "#", "a/+", "+/b", "$share/g/a", "$SYS/#", "a/#/b"];
const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V3_1,
    ProtocolVersion::V3_1_1,
    ProtocolVersion::V5,
];

/// Runs one script; panics if a property fails.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let limits = Limits {
        max_inflight: 1 + u16::from(input.byte() % 4),
        receive_maximum: 1 + u16::from(input.byte() % 4),
        max_queued_messages: 1 + usize::from(input.byte() % 8),
        topic_alias_maximum: u16::from(input.byte() % 3),
        ..Limits::default()
    };
    let sessions = SessionConfig {
        queue_qos0_messages: input.bool(),
        ..SessionConfig::default()
    };
    let mut world = World {
        broker: Arc::new(Broker::new(limits, sessions, Storage::in_memory())),
        // Only for a takeover's timer, which never fires: the old connection lets
        // go before the new one is polled again.
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime"),
        now: Instant::now(),
        connection: None,
        client: Client::default(),
    };
    while !input.is_empty() {
        world.step(&mut input);
    }
}

/// What the client knows about the session's outbound QoS 1/2 messages.
#[derive(Default)]
struct Client {
    /// Packet id → how far its handshake has got.
    in_flight: BTreeMap<u16, InFlight>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct InFlight {
    /// QoS 1 or 2: what a well-behaved client answers.
    qos: QoS,
    phase: Phase,
    /// Whether the PUBLISH was sent on the current connection.
    is_current: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    /// PUBLISH received; the client has not answered yet.
    Published,
    /// PUBREC sent (QoS 2): waiting for PUBREL.
    Released,
}

/// One network connection and the session it holds.
struct Connection {
    id: u64,
    session: Session,
    out: Outbox,
    mailbox: Arc<Mailbox>,
    version: ProtocolVersion,
    /// The outbound window the session promised.
    window: usize,
    max_packet_size: usize,
}

struct World {
    broker: Arc<Broker>,
    runtime: tokio::runtime::Runtime,
    now: Instant,
    connection: Option<Connection>,
    client: Client,
}

/// Why a connection ends, as `connection::Ending` has it.
enum Ending {
    Lost,
    Violation(rookery::session::Error),
    Disconnected { publish_will: bool },
    TakenOver,
    Shutdown,
}

impl World {
    fn step(&mut self, input: &mut Input) {
        let op = input.byte();
        match op % 16 {
            0 => self.connect(input),
            1 => self.external_publish(input),
            2 => self.tick(input),
            3 => self.deliver(input),
            4 => self.end(Ending::Lost),
            5 => self.end(Ending::Shutdown),
            6 => self.acknowledge_everything(),
            _ => {
                if self.connection.is_none() {
                    self.connect(input);
                }
                let packet = client_packet(op, self.version(), input);
                if let Some(packet) = packet {
                    self.send(packet);
                }
            }
        }
    }

    fn version(&self) -> ProtocolVersion {
        self.connection
            .as_ref()
            .map_or(ProtocolVersion::V5, |c| c.version)
    }

    /// CONNECT, as `connection::serve` handles it: negotiate, attach (taking the
    /// session over from the current connection), settle, CONNACK, resume.
    fn connect(&mut self, input: &mut Input) {
        let version = input.pick(&VERSIONS);
        let mut properties = Properties::default();
        if version.is_v5() {
            properties.session_expiry_interval = Some(input.pick(&[0, 0, 5, 60, u32::MAX]));
            properties.receive_maximum = input.pick(&[None, Some(1), Some(2), Some(3)]);
            properties.maximum_packet_size = input.pick(&[None, None, Some(30), Some(100)]);
        }
        let connect = Connect {
            version,
            clean_start: input.bool(),
            keep_alive: u16::from(input.byte() % 4),
            client_id: CLIENT_ID.into(),
            will: input.bool().then(|| Will {
                topic: input.pick(&TOPICS).into(),
                payload: Bytes::from_static(b"will"),
                qos: input.pick(&QOS),
                retain: input.bool(),
                properties: Properties {
                    will_delay_interval: version.is_v5().then(|| input.pick(&[0, 1, 10])),
                    ..Properties::default()
                },
            }),
            username: None,
            password: None,
            properties,
        };
        let Ok(negotiated) =
            connect::negotiate(&connect, self.broker.limits(), self.broker.session_config())
        else {
            return;
        };
        let mailbox = Arc::new(Mailbox::default());
        let id = self.broker.next_connection_id();
        let link = Link {
            connection_id: id,
            mailbox: mailbox.clone(),
            is_persistent: negotiated.session_expiry.is_persistent(),
        };
        let client_id = ClientId::new(CLIENT_ID);
        let request = SessionRequest {
            client_id: &client_id,
            clean_start: negotiated.clean_start,
            expiry: match negotiated.session_expiry {
                SessionExpiry::WithConnection => Some(Duration::ZERO),
                SessionExpiry::After(duration) => Some(duration),
                SessionExpiry::Never => None,
            },
            will: negotiated.will.as_deref(),
            connection: Successor {
                peer: None,
                listener: "fuzz".into(),
            },
        };
        let broker = self.broker.clone();
        let runtime = self.runtime.handle().clone();
        let _entered = runtime.enter();
        let mut attaching = pin!(broker.connect(request, link));
        let attached = match poll_once(attaching.as_mut()) {
            Poll::Ready(attached) => attached,
            // A takeover: the broker told the current connection to let go, and
            // waits for what it leaves behind.
            Poll::Pending => {
                self.end(Ending::TakenOver);
                match poll_once(attaching.as_mut()) {
                    Poll::Ready(attached) => attached,
                    Poll::Pending => panic!("the old connection did not hand over"),
                }
            }
        }
        .expect("in-memory storage does not fail");
        let is_present = attached.session_present;
        let mut out = Outbox::new(version);
        let max_packet_size = negotiated
            .client_max_packet_size
            .map_or(usize::MAX, |max| max as usize);
        out.set_max_packet_size(max_packet_size);
        if !is_present {
            self.client = Client::default();
        }
        for entry in self.client.in_flight.values_mut() {
            entry.is_current = false;
        }
        let mut session = Session::new(&negotiated, &attached, &self.broker, self.now);
        out.send(&Packet::ConnAck(connect::connack(
            &negotiated,
            is_present,
            self.broker.limits(),
        )));
        let resumed = match is_present {
            true => session.resume(&self.broker, self.now, &mut out),
            false => Ok(()),
        };
        self.connection = Some(Connection {
            id,
            session,
            out,
            mailbox,
            version,
            window: usize::from(negotiated.client_receive_maximum.max(1)),
            max_packet_size,
        });
        self.collect(&[]);
        if let Err(error) = resumed {
            self.end(Ending::Violation(error));
        }
    }

    /// A client packet into `Session::on_packet`; the client's own acknowledgements
    /// move its view of what is in flight.
    fn send(&mut self, packet: Packet) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let expected = expected_answer(&packet);
        self.client.acknowledge(&packet);
        let result =
            connection
                .session
                .on_packet(packet, &self.broker, self.now, &mut connection.out);
        match result {
            Ok(Flow::Continue) => self.collect(&expected),
            Ok(Flow::Disconnect { publish_will }) => {
                self.collect(&[]);
                self.end(Ending::Disconnected { publish_will });
            }
            Err(error) => {
                self.collect(&[]);
                self.end(Ending::Violation(error));
            }
        }
    }

    /// What `connection::Connection::deliver` does: take a batch from the mailbox
    /// while the window has room.
    fn deliver(&mut self, input: &mut Input) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        if !connection.session.can_send() {
            return;
        }
        let mut batch = Vec::new();
        connection
            .mailbox
            .take(1 + usize::from(input.byte() % 4), &mut batch);
        for delivery in batch {
            let result = connection.session.on_delivery(
                delivery,
                &self.broker,
                self.now,
                &mut connection.out,
            );
            if let Err(error) = result {
                self.collect(&[]);
                return self.end(Ending::Violation(error));
            }
        }
        self.collect(&[]);
    }

    /// Another client publishes.
    fn external_publish(&mut self, input: &mut Input) {
        let expires_at = match input.byte() % 4 {
            0 => Some(self.now + Duration::from_secs(2)),
            _ => None,
        };
        let message = Message {
            topic: TopicName::new(input.pick(&TOPICS)).expect("a valid topic"),
            payload: Bytes::copy_from_slice(input.bytes(64)),
            qos: input.pick(&QOS),
            retain: input.bool(),
            properties: Properties::default(),
            expires_at,
        };
        let _ = self.broker.publish(&ClientId::new("p"), Arc::new(message));
    }

    /// Time passes: keep-alive, message expiry, session expiry and will delays.
    fn tick(&mut self, input: &mut Input) {
        self.now += Duration::from_millis(250 * u64::from(input.byte()));
        self.broker.on_tick(self.now);
        if let Some(connection) = self.connection.as_mut() {
            if let Err(error) = connection.session.on_tick(self.now) {
                self.end(Ending::Violation(error));
            }
        }
    }

    /// A well-behaved client answers everything it holds.
    fn acknowledge_everything(&mut self) {
        let in_flight: Vec<(u16, InFlight)> = self
            .client
            .in_flight
            .iter()
            .map(|(&id, entry)| (id, *entry))
            .collect();
        for (id, entry) in in_flight {
            let ack = Ack::new(PacketId::new(id).expect("ids in flight are non-zero"));
            self.send(match (entry.phase, entry.qos) {
                (Phase::Published, QoS::ExactlyOnce) => Packet::PubRec(ack),
                (Phase::Published, _) => Packet::PubAck(ack),
                (Phase::Released, _) => Packet::PubComp(ack),
            });
            if self.connection.is_none() {
                return;
            }
        }
    }

    /// The connection ends, as `connection::close::finish` ends it.
    fn end(&mut self, ending: Ending) {
        let Some(mut connection) = self.connection.take() else {
            return;
        };
        let now = self.now;
        let session = &mut connection.session;
        let (departure, will) = match &ending {
            Ending::TakenOver => session.hand_over(now),
            Ending::Lost | Ending::Violation(_) => session.depart(true, now),
            Ending::Disconnected { publish_will } => session.depart(*publish_will, now),
            Ending::Shutdown => session.depart_at_shutdown(now),
        };
        let client_id = session.client_id().clone();
        let claim = session.claim();
        self.broker
            .disconnect(&client_id, connection.id, claim, departure, will);
        match ending {
            Ending::Violation(error) => session.send_error(&error, &mut connection.out),
            Ending::TakenOver => {
                session.send_disconnect(ReasonCode::SESSION_TAKEN_OVER, &mut connection.out)
            }
            Ending::Shutdown => {
                session.send_disconnect(ReasonCode::SERVER_SHUTTING_DOWN, &mut connection.out)
            }
            Ending::Lost | Ending::Disconnected { .. } => {}
        }
        connection.mailbox.close();
        self.connection = Some(connection);
        self.collect(&[]);
        self.connection = None;
    }

    /// Reads what the session wrote, as the client would, and checks it.
    fn collect(&mut self, expected: &[(u8, u16)]) {
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        let version = connection.version;
        let mut buf = BytesMut::from(&connection.out.buffer()[..]);
        connection.out.buffer().clear();
        let mut answers = Vec::new();
        while !buf.is_empty() {
            let before = buf.len();
            let packet = decode(&mut buf, version, usize::MAX)
                .unwrap_or_else(|error| panic!("{version:?}: the session wrote garbage: {error}"))
                .unwrap_or_else(|| panic!("{version:?}: the session wrote a partial packet"));
            let size = before - buf.len();
            assert!(
                size <= connection.max_packet_size,
                "{} of {size} bytes, over the client's maximum of {}",
                packet.name(),
                connection.max_packet_size
            );
            if let Some(answer) = answer_key(&packet) {
                answers.push(answer);
            }
            self.client.receive(&packet, connection.window);
        }
        for key in expected {
            let count = answers.iter().filter(|answer| *answer == key).count();
            assert_eq!(count, 1, "answers {answers:?}, expected one {key:?}");
        }
    }
}

impl Client {
    /// The client's own acknowledgements end what it counts as in flight.
    fn acknowledge(&mut self, packet: &Packet) {
        let (ack, ends) = match packet {
            Packet::PubAck(ack) => (ack, Phase::Published),
            Packet::PubComp(ack) => (ack, Phase::Released),
            Packet::PubRec(ack) if ack.reason.is_error() => {
                self.in_flight.remove(&ack.packet_id.get());
                return;
            }
            Packet::PubRec(ack) => {
                if let Some(entry) = self.in_flight.get_mut(&ack.packet_id.get()) {
                    entry.phase = Phase::Released;
                }
                return;
            }
            _ => return,
        };
        let id = ack.packet_id.get();
        if self.in_flight.get(&id).map(|entry| entry.phase) == Some(ends) {
            self.in_flight.remove(&id);
        }
    }

    /// Checks a packet from the server against what is in flight, then records it.
    fn receive(&mut self, packet: &Packet, window: usize) {
        let Packet::Publish(publish) = packet else {
            return;
        };
        let Some(packet_id) = publish.packet_id else {
            return;
        };
        let id = packet_id.get();
        let phase = self.in_flight.get(&id).map(|entry| entry.phase);
        if publish.dup {
            assert_eq!(
                phase,
                Some(Phase::Published),
                "DUP PUBLISH {id} is not a resend; in flight: {:?}",
                self.in_flight
            );
        } else {
            assert_eq!(
                phase, None,
                "PUBLISH reuses packet id {id} still in flight: {:?}",
                self.in_flight
            );
        }
        let is_current = true;
        let phase = Phase::Published;
        let qos = publish.qos;
        self.in_flight.insert(
            id,
            InFlight {
                qos,
                phase,
                is_current,
            },
        );
        let current = self.in_flight.values().filter(|e| e.is_current).count();
        assert!(
            current <= window,
            "{current} QoS 1/2 PUBLISH in flight, window {window}: {:?}",
            self.in_flight
        );
    }
}

/// The packet type and id of the answer a client packet must get.
fn expected_answer(packet: &Packet) -> Vec<(u8, u16)> {
    match packet {
        Packet::Publish(Publish {
            qos: QoS::AtLeastOnce,
            packet_id: Some(id),
            ..
        }) => vec![(4, id.get())],
        Packet::Publish(Publish {
            qos: QoS::ExactlyOnce,
            packet_id: Some(id),
            ..
        }) => vec![(5, id.get())],
        Packet::PubRec(ack) if !ack.reason.is_error() => vec![(6, ack.packet_id.get())],
        Packet::PubRel(ack) => vec![(7, ack.packet_id.get())],
        Packet::Subscribe(subscribe) => vec![(9, subscribe.packet_id.get())],
        Packet::Unsubscribe(unsubscribe) => vec![(11, unsubscribe.packet_id.get())],
        Packet::PingReq => vec![(13, 0)],
        _ => Vec::new(),
    }
}

/// The (type, id) of a server answer, to match with [`expected_answer`].
fn answer_key(packet: &Packet) -> Option<(u8, u16)> {
    match packet {
        Packet::PubAck(ack) => Some((4, ack.packet_id.get())),
        Packet::PubRec(ack) => Some((5, ack.packet_id.get())),
        Packet::PubRel(ack) => Some((6, ack.packet_id.get())),
        Packet::PubComp(ack) => Some((7, ack.packet_id.get())),
        Packet::SubAck(suback) => Some((9, suback.packet_id.get())),
        Packet::UnsubAck(unsuback) => Some((11, unsuback.packet_id.get())),
        Packet::PingResp => Some((13, 0)),
        _ => None,
    }
}

/// A packet a client might send; `op` (7 to 15) picks its kind. Packet ids come
/// from 1 to 4, so that they collide with those in flight.
fn client_packet(op: u8, version: ProtocolVersion, input: &mut Input) -> Option<Packet> {
    let id = PacketId::new(1 + u16::from(input.byte() % 4)).expect("non-zero");
    let packet = match op % 16 {
        7 => {
            let qos = input.pick(&QOS);
            let mut properties = Properties::default();
            if version.is_v5() {
                properties.topic_alias = input.pick(&[None, None, Some(1), Some(2)]);
                properties.message_expiry_interval = input.pick(&[None, Some(1)]);
            }
            Packet::Publish(Publish {
                dup: input.bool(),
                qos,
                retain: input.bool(),
                topic: input.pick(&["", "a", "a/b", "b", "$SYS/x"]).into(),
                packet_id: (qos != QoS::AtMostOnce).then_some(id),
                properties,
                payload: Bytes::copy_from_slice(input.bytes(64)),
            })
        }
        8 => Packet::PubAck(Ack::new(id)),
        9 => Packet::PubRec(Ack {
            reason: input.pick(&[ReasonCode::SUCCESS, ReasonCode::UNSPECIFIED_ERROR]),
            ..Ack::new(id)
        }),
        10 => Packet::PubRel(Ack::new(id)),
        11 => Packet::PubComp(Ack::new(id)),
        12 => {
            let options = SubscriptionOptions {
                qos: input.pick(&QOS),
                no_local: version.is_v5() && input.bool(),
                retain_as_published: version.is_v5() && input.bool(),
                retain_handling: input.pick(&[
                    RetainHandling::OnSubscribe,
                    RetainHandling::OnNewSubscribe,
                    RetainHandling::Never,
                ]),
            };
            Packet::Subscribe(Subscribe {
                packet_id: id,
                filters: vec![(input.pick(&FILTERS).into(), options)],
                properties: Properties::default(),
            })
        }
        13 => Packet::Unsubscribe(Unsubscribe {
            packet_id: id,
            filters: vec![input.pick(&FILTERS).into()],
            properties: Properties::default(),
        }),
        14 => match input.byte() % 3 {
            0 => Packet::PingReq,
            1 => Packet::Disconnect(Disconnect {
                reason: input.pick(&[
                    ReasonCode::NORMAL_DISCONNECTION,
                    ReasonCode::DISCONNECT_WITH_WILL,
                ]),
                properties: Properties {
                    session_expiry_interval: input.pick(&[None, Some(0), Some(30)]),
                    ..Properties::default()
                },
            }),
            _ => Packet::PingReq,
        },
        // Any bytes: whatever decodes at the session's version.
        _ => {
            let mut raw = BytesMut::from(input.bytes(255));
            return decode(&mut raw, version, usize::MAX).ok().flatten();
        }
    };
    // Through the wire and back, so that a 3.x client sends no properties or
    // reason codes, and a packet the decoder refuses never reaches the session.
    let mut wire = BytesMut::new();
    encode(&packet, version, &mut wire);
    decode(&mut wire, version, usize::MAX).ok().flatten()
}

fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}
