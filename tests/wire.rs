//! Real clients' timing, over TCP, TLS and WebSocket: packets pipelined behind
//! CONNECT, packets split one byte per write, a hundred packets in one segment, a
//! burst then DISCONNECT, takeovers of connections that are stuck or already
//! closing, and races between connections. Issue 8's defects 1–4, 7, 8 and 15; each
//! test fails on the broker before the fix.

mod common;

use std::time::{Duration, Instant};

use common::wire::{Transport, Wire, WireBroker, TRANSPORTS, VERSIONS};
use common::*;
use rookery::protocol::{
    Ack, ConnAck, Disconnect, Packet, Properties, ProtocolVersion, QoS, ReasonCode,
};
use rookery::Config;

fn connect(version: ProtocolVersion, client_id: &str) -> Packet {
    Packet::Connect(Box::new(connect_packet(version, client_id, true)))
}

fn subscribe(packet_id: u16, filter: &str, qos: QoS) -> Packet {
    Packet::Subscribe(subscribe_packet(packet_id, &[(filter, at(qos))]))
}

fn publish_packet(topic: &str, qos: QoS, packet_id: u16, payload: &str) -> Packet {
    Packet::Publish(publish(topic, qos, packet_id, payload))
}

/// Opens a connection and completes CONNECT; panics unless it is accepted.
async fn open(broker: &WireBroker, transport: Transport, connect: Packet) -> (Wire, ConnAck) {
    let version = match &connect {
        Packet::Connect(connect) => connect.version,
        _ => panic!("not a CONNECT"),
    };
    let mut wire = broker.open(transport, version).await;
    wire.send(&[connect]).await;
    match wire.expect().await {
        Packet::ConnAck(connack) if !connack.code.is_error() => (wire, connack),
        other => panic!("{transport:?}: expected a successful CONNACK, got {other:?}"),
    }
}

fn kind(packet: &Packet) -> &'static str {
    match packet {
        Packet::ConnAck(_) => "CONNACK",
        Packet::SubAck(_) => "SUBACK",
        Packet::PubAck(_) => "PUBACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PingResp => "PINGRESP",
        Packet::UnsubAck(_) => "UNSUBACK",
        _ => "other",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_packets_pipelined_behind_connect_are_handled_in_order() {
    // [MQTT-3.1.4-5] a client may send packets before CONNACK; they are processed in order.
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        for version in VERSIONS {
            let mut wire = broker.open(transport, version).await;
            wire.send(&[
                connect(version, "pipeliner"),
                subscribe(1, "pipe/t", QoS::AtLeastOnce),
                publish_packet("pipe/t", QoS::AtLeastOnce, 2, "first"),
                Packet::PingReq,
            ])
            .await;
            let mut seen = Vec::new();
            while seen.len() < 5 {
                let packet = wire.expect().await;
                if let Packet::Publish(publish) = &packet {
                    assert_eq!(&publish.payload[..], b"first");
                    wire.send(&[Packet::PubAck(Ack::new(publish.packet_id.unwrap()))])
                        .await;
                }
                seen.push(kind(&packet));
            }
            let position = |name| seen.iter().position(|seen| *seen == name).unwrap();
            assert_eq!(seen[0], "CONNACK", "{transport:?} {version:?}: {seen:?}");
            assert!(
                position("SUBACK") < position("PUBACK")
                    && position("PUBACK") < position("PINGRESP"),
                "{transport:?} {version:?}: {seen:?}"
            );
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_connect_and_subscribe_split_one_byte_per_write() {
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        for version in VERSIONS {
            let mut wire = broker.open(transport, version).await;
            wire.send_split(
                &[
                    connect(version, "trickle"),
                    subscribe(7, "trickle/#", QoS::ExactlyOnce),
                ],
                1,
            )
            .await;
            assert!(matches!(wire.expect().await, Packet::ConnAck(c) if !c.code.is_error()));
            match wire.expect().await {
                Packet::SubAck(suback) => assert_eq!(suback.packet_id, id(7)),
                other => panic!("{transport:?} {version:?}: expected SUBACK, got {other:?}"),
            }
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_hundred_packets_in_one_segment_are_all_answered_in_order() {
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let mut wire = broker.open(transport, version).await;
            let mut packets = vec![connect(version, "hundred")];
            packets
                .extend((1..=100).map(|n| publish_packet("hundred/t", QoS::AtLeastOnce, n, "x")));
            wire.send(&packets).await;
            assert!(matches!(wire.expect().await, Packet::ConnAck(_)));
            for n in 1..=100 {
                match wire.expect().await {
                    Packet::PubAck(ack) => assert_eq!(ack.packet_id, id(n), "{transport:?}"),
                    other => panic!("{transport:?}: expected PUBACK {n}, got {other:?}"),
                }
            }
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_burst_then_disconnect_loses_nothing() {
    // The battery device: connect, publish, disconnect, all in one segment, then gone.
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        let (mut subscriber, _) = open(
            &broker,
            Transport::Tcp,
            connect(ProtocolVersion::V5, "sink"),
        )
        .await;
        subscriber
            .send(&[subscribe(1, "burst/#", QoS::AtLeastOnce)])
            .await;
        assert!(matches!(subscriber.expect().await, Packet::SubAck(_)));
        let mut device = broker.open(transport, ProtocolVersion::V3_1_1).await;
        let mut packets = vec![connect(ProtocolVersion::V3_1_1, "device")];
        packets.extend(
            (1..=50).map(|n| publish_packet("burst/t", QoS::AtLeastOnce, n, &n.to_string())),
        );
        packets.push(Packet::Disconnect(Disconnect::default()));
        device.send(&packets).await;
        drop(device);
        for n in 1..=50 {
            match subscriber.expect().await {
                Packet::Publish(publish) => {
                    assert_eq!(
                        &publish.payload[..],
                        n.to_string().as_bytes(),
                        "{transport:?}"
                    );
                    subscriber
                        .send(&[Packet::PubAck(Ack::new(publish.packet_id.unwrap()))])
                        .await;
                }
                other => panic!("{transport:?}: expected PUBLISH {n}, got {other:?}"),
            }
        }
    }
    broker.stop().await;
}

/// A subscriber that stops reading while a publisher fills its socket.
async fn stuck_subscriber(
    broker: &WireBroker,
    transport: Transport,
    version: ProtocolVersion,
) -> Wire {
    let (mut victim, _) = open(broker, transport, connect(version, "victim")).await;
    victim.send(&[subscribe(1, "flood", QoS::AtMostOnce)]).await;
    assert!(matches!(victim.expect().await, Packet::SubAck(_)));
    let (mut flooder, _) = open(
        broker,
        Transport::Tcp,
        connect(ProtocolVersion::V5, "flooder"),
    )
    .await;
    let payload = "x".repeat(64 * 1024);
    // 24 MiB: more than the loopback socket buffers on both sides hold.
    let packets: Vec<Packet> = (1..=384)
        .map(|n| publish_packet("flood", QoS::AtLeastOnce, n, &payload))
        .collect();
    for chunk in packets.chunks(32) {
        flooder.send(chunk).await;
        for _ in chunk {
            assert!(matches!(flooder.expect().await, Packet::PubAck(_)));
        }
    }
    victim
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_takeover_of_a_connection_that_does_not_read_is_prompt() {
    // [MQTT-3.1.4-3] the takeover must not depend on the old connection's writer.
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            let victim = stuck_subscriber(&broker, transport, version).await;
            let started = Instant::now();
            let (mut again, connack) = open(&broker, transport, connect(version, "victim")).await;
            let elapsed = started.elapsed();
            eprintln!("{transport:?} {version:?}: takeover of a stuck connection took {elapsed:?}");
            assert!(
                elapsed < Duration::from_secs(1),
                "{transport:?}: {elapsed:?}"
            );
            assert!(!connack.session_present);
            again.send(&[Packet::PingReq]).await;
            assert!(matches!(again.expect().await, Packet::PingResp));
            drop(victim);
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_takeover_of_a_silent_half_open_connection_is_prompt() {
    // The old connection neither reads nor writes nor closes: its peer vanished.
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        let (half_open, _) = open(&broker, transport, connect(ProtocolVersion::V5, "ghost")).await;
        let started = Instant::now();
        let (_again, _) = open(&broker, transport, connect(ProtocolVersion::V5, "ghost")).await;
        assert!(started.elapsed() < Duration::from_secs(1), "{transport:?}");
        drop(half_open);
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_reconnect_right_after_closing_is_prompt() {
    // A client sends something, closes, and reconnects at once with the same id.
    let broker = WireBroker::start().await;
    let mut slowest = Duration::ZERO;
    for transport in TRANSPORTS {
        for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
            for round in 0..20u16 {
                let (mut wire, _) = open(&broker, transport, connect(version, "bouncer")).await;
                wire.send(&[subscribe(round + 1, "bounce/#", QoS::AtLeastOnce)])
                    .await;
                drop(wire);
                let started = Instant::now();
                let _ = open(&broker, transport, connect(version, "bouncer")).await;
                let elapsed = started.elapsed();
                slowest = slowest.max(elapsed);
                assert!(
                    elapsed < Duration::from_secs(1),
                    "{transport:?} {version:?} round {round}: {elapsed:?}"
                );
            }
        }
    }
    eprintln!("slowest reconnect: {slowest:?}");
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_disconnect_that_ends_the_session_is_not_overtaken_by_the_reconnect_v5() {
    // [MQTT-3.1.2-23] DISCONNECT with Session Expiry 0 ends the session; the CONNECT
    // sent right after it must find no session.
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        for round in 0..20 {
            let mut first = persistent_packet(ProtocolVersion::V5, "brief", 60);
            first.clean_start = true;
            let (mut wire, _) = open(&broker, transport, Packet::Connect(Box::new(first))).await;
            let mut disconnect = Disconnect::default();
            disconnect.properties.session_expiry_interval = Some(0);
            wire.send(&[
                subscribe(1, "brief/#", QoS::AtLeastOnce),
                Packet::Disconnect(disconnect),
            ])
            .await;
            drop(wire);
            let resume = persistent_packet(ProtocolVersion::V5, "brief", 60);
            let (_wire, connack) =
                open(&broker, transport, Packet::Connect(Box::new(resume))).await;
            assert!(!connack.session_present, "{transport:?} round {round}");
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_clean_session_that_closed_is_gone_for_the_next_connection_v4() {
    // [MQTT-3.1.2-6] a clean session ends with its connection, however fast the
    // next CONNECT (Clean Session 0) arrives.
    let broker = WireBroker::start().await;
    for transport in TRANSPORTS {
        for round in 0..20 {
            let (mut wire, _) = open(
                &broker,
                transport,
                connect(ProtocolVersion::V3_1_1, "fleeting"),
            )
            .await;
            wire.send(&[
                subscribe(1, "fleeting/#", QoS::AtLeastOnce),
                Packet::Disconnect(Disconnect::default()),
            ])
            .await;
            drop(wire);
            let resume = persistent_packet(ProtocolVersion::V3_1_1, "fleeting", 0);
            let (_wire, connack) =
                open(&broker, transport, Packet::Connect(Box::new(resume))).await;
            assert!(!connack.session_present, "{transport:?} round {round}");
        }
    }
    broker.stop().await;
}

/// B subscribes; A publishes on another connection 100 µs after B's SUBSCRIBE was
/// written, without waiting for the SUBACK; `idle` passes before each try. Returns
/// how many of `tries` B missed. (Sent back to back, the two writes can reach the
/// broker's sockets in either order: loopback delivers them from two CPUs.)
async fn race(broker: &WireBroker, transport: Transport, tries: u16, idle: Duration) -> usize {
    let (mut b, _) = open(broker, transport, connect(ProtocolVersion::V5, "race-b")).await;
    let (mut a, _) = open(
        broker,
        transport,
        connect(ProtocolVersion::V3_1_1, "race-a"),
    )
    .await;
    let mut missed = 0;
    for n in 1..=tries {
        let topic = format!("race/{n}");
        tokio::time::sleep(idle).await;
        b.send(&[subscribe(n, &topic, QoS::AtLeastOnce)]).await;
        std::thread::sleep(Duration::from_micros(100));
        a.send(&[publish_packet(&topic, QoS::AtLeastOnce, n, "hi")])
            .await;
        assert!(matches!(a.expect().await, Packet::PubAck(_)));
        let mut got_publish = false;
        let mut got_suback = false;
        while !(got_suback && got_publish) {
            match b.recv_within(Duration::from_millis(500)).await {
                Some(Some(Packet::SubAck(_))) => got_suback = true,
                Some(Some(Packet::Publish(publish))) => {
                    got_publish = true;
                    b.send(&[Packet::PubAck(Ack::new(publish.packet_id.unwrap()))])
                        .await;
                }
                Some(other) => panic!("{transport:?}: unexpected {other:?}"),
                None => break,
            }
        }
        if !got_publish {
            eprintln!("{transport:?} try {n}: SUBACK {got_suback}, no PUBLISH");
            missed += 1;
            // A broken broker makes every try wait; a few misses tell enough.
            if missed >= 10 {
                break;
            }
        }
    }
    missed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_subscribe_takes_effect_before_a_later_publish_on_another_connection() {
    let broker = WireBroker::start().await;
    let mut misses = Vec::new();
    for (transport, tries, idle) in [
        (Transport::Tcp, 1000, Duration::ZERO),
        (Transport::Tls, 300, Duration::ZERO),
        (Transport::Ws, 300, Duration::ZERO),
        // After idleness the workers sleep, and the reactor wakes them one at a time.
        (Transport::Tcp, 10, Duration::from_millis(300)),
    ] {
        misses.push((
            transport,
            race(&broker, transport, tries, idle).await,
            tries,
        ));
    }
    eprintln!("missed (transport, misses, tries): {misses:?}");
    assert!(
        misses.iter().all(|(_, missed, _)| *missed == 0),
        "{misses:?}"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_disconnect_reason_reaches_a_client_that_keeps_sending_v5() {
    // A v5 client sends QoS 2 PUBLISH past our Receive Maximum and keeps writing for
    // a while: the broker's DISCONNECT 0x93 [MQTT-3.3.4-9] must be followed by an
    // orderly close, not a reset that fails the client's writes (EPIPE/ECONNRESET)
    // before it gets to read the reason code.
    let mut config = Config::default();
    config.limits.receive_maximum = 2;
    let broker = WireBroker::start_with(config).await;
    let payload = "p".repeat(1024);
    for transport in TRANSPORTS {
        let mut wire = broker.open(transport, ProtocolVersion::V5).await;
        wire.send(&[connect(ProtocolVersion::V5, "greedy")]).await;
        for chunk in 0..20u16 {
            let packets: Vec<Packet> = (1..=10)
                .map(|n| publish_packet("greedy", QoS::ExactlyOnce, chunk * 10 + n, &payload))
                .collect();
            let bytes = common::wire::bytes_of(ProtocolVersion::V5, &packets);
            if let Err(error) = wire.write(&bytes).await {
                panic!("{transport:?}: write {chunk} failed: {error}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (packets, ending) = wire.until_closed_cleanly().await;
        let reason = packets.iter().find_map(|packet| match packet {
            Packet::Disconnect(disconnect) => Some(disconnect.reason),
            _ => None,
        });
        assert_eq!(
            reason,
            Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
            "{transport:?}: got {} packets, the last {:?}",
            packets.len(),
            packets.last()
        );
        assert_eq!(ending, Ok(()), "{transport:?}: the connection was reset");
    }
    broker.stop().await;
}

/// A v5 CONNECT with a will on `will/<client_id>` delayed by `delay` seconds, in a
/// session that outlives the connection by a minute.
fn with_delayed_will(client_id: &str, delay: u32, clean_start: bool) -> Packet {
    let mut connect = persistent_packet(ProtocolVersion::V5, client_id, 60);
    connect.clean_start = clean_start;
    let mut will = will(&format!("will/{client_id}"), "gone");
    will.properties = Properties {
        will_delay_interval: Some(delay),
        ..Properties::default()
    };
    connect.will = Some(will);
    Packet::Connect(Box::new(connect))
}

async fn will_watcher(broker: &WireBroker) -> Wire {
    let (mut watcher, _) = open(
        broker,
        Transport::Tcp,
        connect(ProtocolVersion::V5, "watcher"),
    )
    .await;
    watcher
        .send(&[subscribe(1, "will/#", QoS::AtMostOnce)])
        .await;
    assert!(matches!(watcher.expect().await, Packet::SubAck(_)));
    watcher
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_reconnect_before_the_will_delay_cancels_the_will_v5() {
    // [MQTT-3.1.3-9] the connection drops; the client is back before the delay passes.
    let broker = WireBroker::start().await;
    let mut watcher = will_watcher(&broker).await;
    let mut connected = Vec::new();
    for transport in TRANSPORTS {
        let client_id = format!("phoenix-{transport:?}");
        let (wire, _) = open(&broker, transport, with_delayed_will(&client_id, 1, false)).await;
        drop(wire);
        let (back, connack) =
            open(&broker, transport, with_delayed_will(&client_id, 1, false)).await;
        assert!(connack.session_present, "{transport:?}");
        connected.push(back);
    }
    // Past every delay: nothing was published.
    watcher.expect_silence(Duration::from_millis(1500)).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_takeover_that_continues_the_session_cancels_a_delayed_will_v5() {
    // [MQTT-3.1.3-9] the new connection came before the delay passed. Without a delay
    // the will is due as the old connection closes ([MQTT-3.1.2-8]).
    let broker = WireBroker::start().await;
    let mut watcher = will_watcher(&broker).await;
    let mut connected = Vec::new();
    for transport in TRANSPORTS {
        for delay in [1, 0] {
            let client_id = format!("twin-{transport:?}-{delay}");
            let (mut old, _) = open(
                &broker,
                transport,
                with_delayed_will(&client_id, delay, false),
            )
            .await;
            let (new, connack) = open(
                &broker,
                transport,
                with_delayed_will(&client_id, delay, false),
            )
            .await;
            assert!(connack.session_present, "{transport:?}");
            connected.push(new);
            match old.recv().await {
                Some(Packet::Disconnect(disconnect)) => {
                    assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER)
                }
                other => panic!("{transport:?}: expected DISCONNECT 0x8E, got {other:?}"),
            }
            if delay == 0 {
                assert!(
                    matches!(watcher.expect().await, Packet::Publish(_)),
                    "{transport:?}"
                );
            }
        }
    }
    // Past every delay: nothing else was published.
    watcher.expect_silence(Duration::from_millis(1500)).await;
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_a_takeover_that_ends_the_session_publishes_the_will_at_once_v5() {
    // [MQTT-3.1.3-9] "or the Session ends, whichever happens first": Clean Start ends it.
    let broker = WireBroker::start().await;
    let mut watcher = will_watcher(&broker).await;
    for transport in TRANSPORTS {
        let (_old, _) = open(&broker, transport, with_delayed_will("leaver", 30, false)).await;
        let (_new, connack) = open(&broker, transport, with_delayed_will("leaver", 30, true)).await;
        assert!(!connack.session_present);
        match watcher.expect().await {
            Packet::Publish(publish) => assert_eq!(&publish.topic[..], "will/leaver"),
            other => panic!("{transport:?}: expected the will, got {other:?}"),
        }
    }
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_8_no_connack_that_exceeds_the_maximum_packet_size_and_no_service_v5() {
    // [MQTT-3.1.2-24] a CONNACK larger than the client allows cannot be sent, and a
    // client without a successful CONNACK is not served [MQTT-3.2.0-1].
    let broker = WireBroker::start().await;
    let (mut watcher, _) = open(&broker, Transport::Tcp, connect(ProtocolVersion::V5, "eye")).await;
    watcher
        .send(&[subscribe(1, "tiny/#", QoS::AtMostOnce)])
        .await;
    assert!(matches!(watcher.expect().await, Packet::SubAck(_)));
    for transport in TRANSPORTS {
        let mut connect = connect_packet(ProtocolVersion::V5, "tiny", true);
        connect.properties.maximum_packet_size = Some(4);
        let mut wire = broker.open(transport, ProtocolVersion::V5).await;
        wire.send(&[
            Packet::Connect(Box::new(connect)),
            publish_packet("tiny/t", QoS::AtMostOnce, 0, "leak"),
            Packet::PingReq,
        ])
        .await;
        assert_eq!(wire.until_closed().await, Vec::new(), "{transport:?}");
    }
    watcher.expect_silence(Duration::from_millis(300)).await;
    broker.stop().await;
}
