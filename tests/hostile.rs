//! Hostile and slow peers (issue 12): a peer that trickles its CONNECT, stalls its
//! TLS handshake or its WebSocket upgrade is cut at `connect_timeout`; one client
//! id reconnecting thousands of times from ten sockets at once leaves nothing
//! behind — no session beyond its own, no connection, no task.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::wire::{bytes_of, Transport, WireBroker, TRANSPORTS};
use common::*;
use rookery::protocol::{Packet, ProtocolVersion};
use rookery::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How late after the connect timeout the cut may come: the pause between two
/// bytes, and a machine busy with other tests.
const SLACK: Duration = Duration::from_millis(1_500);

async fn broker() -> WireBroker {
    let mut config = Config::default();
    config.limits.connect_timeout = CONNECT_TIMEOUT;
    WireBroker::start_with(config).await
}

fn assert_cut_at_the_connect_timeout(what: &str, elapsed: Duration) {
    eprintln!("{what}: cut after {elapsed:?}");
    assert!(
        elapsed + Duration::from_millis(100) >= CONNECT_TIMEOUT,
        "{what}: cut after {elapsed:?}, before the connect timeout"
    );
    assert!(
        elapsed <= CONNECT_TIMEOUT + SLACK,
        "{what}: cut only after {elapsed:?}"
    );
}

/// Completes the transport's own handshake, then sends a CONNECT one byte per
/// second; returns how long until the broker closed the connection.
async fn trickle_connect(broker: &WireBroker, transport: Transport) -> Duration {
    // From before the accept: the connect timeout counts from there.
    let started = Instant::now();
    let mut wire = broker.open(transport, V4).await;
    let connect = Packet::Connect(Box::new(connect_packet(V4, "trickle", true)));
    let bytes = bytes_of(V4, &[connect]);
    for byte in bytes.iter() {
        // A write to a connection the broker closed may fail; the read tells.
        let _ = wire.write(&[*byte]).await;
        match wire.recv_within(Duration::from_secs(1)).await {
            Some(None) => return started.elapsed(),
            Some(Some(packet)) => panic!("{transport:?}: got {packet:?} for half a CONNECT"),
            None => {}
        }
    }
    panic!("{transport:?}: a CONNECT sent one byte per second went through");
}

/// Opens a TCP connection, sends `first` and nothing more; returns how long until
/// the broker closed it.
async fn stall(addr: std::net::SocketAddr, first: &[u8]) -> Duration {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(CONNECT_TIMEOUT + SLACK + SLACK, async {
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
    assert!(closed.is_ok(), "a stalled handshake was not cut");
    started.elapsed()
}

fn connections(broker: &WireBroker) -> u64 {
    broker
        .broker()
        .metrics()
        .connections_current
        .load(Ordering::Relaxed)
}

/// Waits (up to [`WAIT`]) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_connect_sent_one_byte_per_second_is_cut_at_the_connect_timeout() {
    let broker = broker().await;
    let [tcp, tls, ws] = TRANSPORTS;
    let (tcp, tls, ws) = tokio::join!(
        trickle_connect(&broker, tcp),
        trickle_connect(&broker, tls),
        trickle_connect(&broker, ws),
    );
    assert_cut_at_the_connect_timeout("TCP", tcp);
    assert_cut_at_the_connect_timeout("TLS", tls);
    assert_cut_at_the_connect_timeout("WebSocket", ws);
    assert!(eventually(|| broker.broker().session_count() == 0).await);
    assert!(eventually(|| connections(&broker) == 0).await);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_stalled_tls_handshakes_and_websocket_upgrades_are_cut_at_the_connect_timeout() {
    let broker = broker().await;
    let tls = broker.addr(Transport::Tls);
    let ws = broker.addr(Transport::Ws);
    // A TLS record header announcing a 512-byte ClientHello that never comes.
    let hello_header = [0x16, 0x03, 0x01, 0x02, 0x00];
    let upgrade_head = b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n";
    let (tls_silent, tls_partial, ws_silent, ws_partial) = tokio::join!(
        stall(tls, b""),
        stall(tls, &hello_header),
        stall(ws, b""),
        stall(ws, upgrade_head),
    );
    assert_cut_at_the_connect_timeout("TLS, nothing sent", tls_silent);
    assert_cut_at_the_connect_timeout("TLS, half a ClientHello", tls_partial);
    assert_cut_at_the_connect_timeout("WebSocket, nothing sent", ws_silent);
    assert_cut_at_the_connect_timeout("WebSocket, half the upgrade", ws_partial);
    assert!(eventually(|| connections(&broker) == 0).await);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_slow_upgrade_then_no_connect_is_cut_at_the_connect_timeout_from_accept() {
    // One deadline for everything before CONNECT: a peer that spends most of it
    // on the upgrade does not get a fresh connect timeout for CONNECT.
    let broker = broker().await;
    let mut stream = TcpStream::connect(broker.addr(Transport::Ws))
        .await
        .unwrap();
    let accepted = Instant::now();
    stream
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    tokio::time::sleep(CONNECT_TIMEOUT.mul_f32(0.7)).await;
    let rest = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n";
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during the upgrade");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "upgrade refused");
    let closed = tokio::time::timeout(CONNECT_TIMEOUT + SLACK, async {
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
    assert!(closed.is_ok(), "not cut");
    let elapsed = accepted.elapsed();
    assert!(
        elapsed < CONNECT_TIMEOUT + CONNECT_TIMEOUT.mul_f32(0.5),
        "cut {elapsed:?} after accept: the connect timeout restarted after the upgrade"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_takeover_storm_leaks_no_sessions_connections_or_tasks() {
    const SOCKETS: usize = 10;
    const ROUNDS: usize = 200;
    let broker = WireBroker::start().await;
    let addr = broker.addr(Transport::Tcp);
    let tasks_before = broker.alive_tasks();
    let started = Instant::now();
    let storms: Vec<_> = (0..SOCKETS)
        .map(|socket| {
            tokio::spawn(async move {
                // Each socket holds its connection until its next one: ten live
                // connections take the session from each other, of every kind.
                let mut held = None;
                for round in 0..ROUNDS {
                    let mut connect = match (socket + round) % 3 {
                        0 => connect_packet(V4, "storm", true),
                        1 => persistent_packet(V4, "storm", 0),
                        _ => persistent_packet(V5, "storm", 60),
                    };
                    if round % 2 == 0 {
                        connect.will = Some(will("storm/will", "gone"));
                    }
                    let (client, connack) = RawClient::open(addr, connect).await;
                    assert!(!connack.code.is_error(), "refused: {connack:?}");
                    held = Some(client);
                }
                drop(held);
            })
        })
        .collect();
    for storm in storms {
        storm.await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "takeover storm: {} connects in {elapsed:?} ({:.0}/s)",
        SOCKETS * ROUNDS,
        (SOCKETS * ROUNDS) as f64 / elapsed.as_secs_f64()
    );
    let registry = broker.broker();
    assert!(
        eventually(|| registry.census().online == 0).await,
        "a connection still holds the session: {:?}",
        registry.census()
    );
    let left = registry.session_count();
    assert!(left <= 1, "sessions left: {left}");
    assert!(eventually(|| connections(&broker) == 0).await);
    assert!(
        eventually(|| broker.alive_tasks() <= tasks_before).await,
        "tasks: {} before, {} after",
        tasks_before,
        broker.alive_tasks()
    );
    broker.stop().await;
}
