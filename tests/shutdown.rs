//! Shutdown: idle clients are told (v5 DISCONNECT 0x8B) and the broker is down in
//! well under 200 ms; a client that does not read is dropped at `shutdown_timeout`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rookery::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};
use rookery::Config;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_idle_clients_takes_under_200ms_and_tells_v5_clients_why() {
    let broker = start_broker().await;
    let mut v5_clients = Vec::new();
    let mut v4_clients = Vec::new();
    for i in 0..20 {
        v5_clients.push(
            RawClient::start(broker.addr, V5, &format!("v5-{i}"), true)
                .await
                .0,
        );
        v4_clients.push(
            RawClient::start(broker.addr, V4, &format!("v4-{i}"), true)
                .await
                .0,
        );
    }
    // A connection that never sends CONNECT must not hold shutdown up for the connect timeout.
    let mut silent = tokio::net::TcpStream::connect(broker.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;

    // Timed: the server's shutdown, not the harness removing the temporary data dir.
    let TestBroker {
        server, data_dir, ..
    } = broker;
    let started = Instant::now();
    server.shutdown().await;
    let elapsed = started.elapsed();
    drop(data_dir);
    eprintln!("shutdown with 40 idle clients and a silent socket: {elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(200),
        "shutdown took {elapsed:?}"
    );

    for client in &mut v5_clients {
        match client.recv().await {
            Some(Packet::Disconnect(disconnect)) => {
                assert_eq!(disconnect.reason, ReasonCode::SERVER_SHUTTING_DOWN)
            }
            other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
        }
        assert!(client.is_closed().await);
    }
    for client in &mut v4_clients {
        assert!(client.is_closed().await);
    }
    let mut byte = [0u8; 1];
    let read = tokio::io::AsyncReadExt::read(&mut silent, &mut byte).await;
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the silent connection is closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_read_is_dropped_at_the_shutdown_timeout() {
    let mut config = Config::default();
    config.server.shutdown_timeout = Duration::from_millis(300);
    let broker = start_broker_with(config).await;
    // A subscriber that never reads: its socket buffers fill, and the broker's write
    // to it blocks.
    let (mut stalled, _) = RawClient::start(broker.addr, V5, "stalled", true).await;
    stalled.subscribe_one("flood", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "publisher", true).await;
    let payload = "x".repeat(60 * 1024);
    for _ in 0..400 {
        publisher
            .send(&Packet::Publish(publish(
                "flood",
                QoS::AtMostOnce,
                0,
                &payload,
            )))
            .await;
    }
    // A round trip: every publish has been routed.
    publisher.send(&Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));

    let started = Instant::now();
    broker.stop().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(2),
        "shutdown took {elapsed:?}"
    );
    drop(stalled);
}
