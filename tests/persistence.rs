//! Persistence: what an acknowledgement promises survives a restart and `kill -9`.
//!
//! Restarts: write, stop, reopen the same directory, assert. Crashes: run the real
//! binary, SIGKILL it, restart it on the same data dir, and check that every
//! acknowledged QoS 1/2 message arrives exactly once, in order.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use common::process::BrokerProcess;
use common::*;
use rookery::protocol::{Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS};

const QUIET: Duration = Duration::from_millis(700);

fn persistent_v4(addr: SocketAddr, client_id: &str) -> v4::MqttOptions {
    let mut options = v4::options(addr, client_id);
    options.set_clean_session(false);
    options
}

async fn subscribe_and_leave(addr: SocketAddr, filter: &str) {
    let (mut sub4, _) = v4::connect(persistent_v4(addr, "sub-v4")).await;
    sub4.subscribe(filter, v4::QoS::ExactlyOnce).await;
    sub4.disconnect().await;
    let (mut sub5, _) = v5::connect(v5::persistent(addr, "sub-v5", u32::MAX)).await;
    sub5.subscribe(filter, v5::QoS::ExactlyOnce).await;
    sub5.disconnect().await;
}

/// Publishes `n` QoS 1 then `n` QoS 2 messages on `topic` and waits for every
/// PUBACK and PUBCOMP.
async fn publish_acknowledged(addr: SocketAddr, topic: &str, n: usize) -> Vec<String> {
    let (mut publisher, _) = v4::connect(v4::options(addr, "publisher")).await;
    let mut payloads = Vec::new();
    for (qos, name) in [(v4::QoS::AtLeastOnce, "q1"), (v4::QoS::ExactlyOnce, "q2")] {
        for i in 0..n {
            let payload = format!("{name}-{i}");
            publisher
                .client
                .publish(topic, qos, false, payload.clone())
                .await
                .unwrap();
            payloads.push(payload);
        }
    }
    let (mut acks, mut comps) = (0, 0);
    while acks < n || comps < n {
        match publisher
            .wait_for(|e| matches!(e, v4::Incoming::PubAck(_) | v4::Incoming::PubComp(_)))
            .await
        {
            v4::Incoming::PubAck(_) => acks += 1,
            _ => comps += 1,
        }
    }
    publisher.disconnect().await;
    payloads
}

async fn received_v4(client: &mut v4::Client) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(publish)) = tokio::time::timeout(QUIET, client.publishes.recv()).await {
        got.push(String::from_utf8(publish.payload.to_vec()).unwrap());
    }
    got
}

async fn received_v5(client: &mut v5::Client) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(Some(publish)) = tokio::time::timeout(QUIET, client.publishes.recv()).await {
        got.push(String::from_utf8(publish.payload.to_vec()).unwrap());
    }
    got
}

/// Reconnects both subscribers and returns what each received.
async fn reconnect_and_receive(addr: SocketAddr) -> (Vec<String>, Vec<String>) {
    let (mut sub4, connack) = v4::connect(persistent_v4(addr, "sub-v4")).await;
    assert!(connack.session_present, "v4 session lost");
    let (mut sub5, connack) = v5::connect(v5::persistent(addr, "sub-v5", u32::MAX)).await;
    assert!(connack.session_present, "v5 session lost");
    let got4 = received_v4(&mut sub4).await;
    let got5 = received_v5(&mut sub5).await;
    // Let the last PUBCOMPs reach the broker before leaving.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sub4.disconnect().await;
    sub5.disconnect().await;
    (got4, got5)
}

#[tokio::test]
async fn restart_keeps_queues_subscriptions_and_retained() {
    let broker = start_broker().await;
    subscribe_and_leave(broker.addr, "k/#").await;
    let expected = publish_acknowledged(broker.addr, "k/1", 20).await;
    let (publisher, _) = v4::connect(v4::options(broker.addr, "retainer")).await;
    publisher
        .client
        .publish("r/keep", v4::QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    let mut publisher = publisher;
    publisher
        .wait_for(|e| matches!(e, v4::Incoming::PubAck(_)))
        .await;
    publisher.disconnect().await;

    let broker = broker.restart().await;
    let (got4, got5) = reconnect_and_receive(broker.addr).await;
    assert_eq!(got4, expected);
    assert_eq!(got5, expected);

    let (mut fresh, _) = v4::connect(v4::options(broker.addr, "fresh")).await;
    fresh.subscribe("r/#", v4::QoS::AtLeastOnce).await;
    let retained = fresh.next_publish().await;
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], b"kept");
    broker.stop().await;
}

#[tokio::test]
async fn kill_9_loses_and_repeats_no_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    subscribe_and_leave(broker.addr, "k/#").await;
    let expected = publish_acknowledged(broker.addr, "k/1", 25).await;
    let (mut retainer, _) = v4::connect(v4::options(broker.addr, "retainer")).await;
    retainer
        .client
        .publish("r/keep", v4::QoS::AtLeastOnce, true, "kept")
        .await
        .unwrap();
    retainer
        .wait_for(|e| matches!(e, v4::Incoming::PubAck(_)))
        .await;
    broker.kill();

    let broker = BrokerProcess::start(dir.path()).await;
    let (got4, got5) = reconnect_and_receive(broker.addr).await;
    assert_eq!(got4, expected, "v4 subscriber after kill -9");
    assert_eq!(got5, expected, "v5 subscriber after kill -9");
    broker.kill();

    // Completed deliveries stay completed; subscriptions and retained messages stay.
    let broker = BrokerProcess::start(dir.path()).await;
    let (got4, got5) = reconnect_and_receive(broker.addr).await;
    assert!(got4.is_empty() && got5.is_empty(), "{got4:?} {got5:?}");
    let after = publish_acknowledged(broker.addr, "k/2", 3).await;
    broker.kill();
    let broker = BrokerProcess::start(dir.path()).await;
    let (got4, got5) = reconnect_and_receive(broker.addr).await;
    assert_eq!(got4, after);
    assert_eq!(got5, after);
    let (mut fresh, _) = v4::connect(v4::options(broker.addr, "fresh")).await;
    fresh.subscribe("r/#", v4::QoS::AtLeastOnce).await;
    assert_eq!(&fresh.next_publish().await.payload[..], b"kept");
    broker.kill();
}

fn connect_packet(client_id: &str) -> Packet {
    Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V3_1_1,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }))
}

fn publish_packet(topic: &str, id: u16, qos: QoS) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: topic.into(),
        packet_id: PacketId::new(id),
        properties: Properties::default(),
        payload: Bytes::from(id.to_string()),
    })
}

/// Pipelines `count` QoS 1 publishes and kills the broker after `kill_after`
/// PUBACKs arrived. Returns the ids acknowledged before the connection dropped.
async fn publish_until_killed(
    broker: BrokerProcess,
    first: u16,
    count: u16,
    kill_after: usize,
) -> Vec<u16> {
    let mut client = RawClient::connect(broker.addr, ProtocolVersion::V3_1_1).await;
    client.send(&connect_packet("mid-publisher")).await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    let mut bytes = bytes::BytesMut::new();
    for id in first..first + count {
        rookery::protocol::encode(
            &publish_packet("m/1", id, QoS::AtLeastOnce),
            ProtocolVersion::V3_1_1,
            &mut bytes,
        );
    }
    client.send_bytes(&bytes).await;
    let mut acked = Vec::new();
    let mut broker = Some(broker);
    while let Some(packet) = client.recv().await {
        if let Packet::PubAck(ack) = packet {
            acked.push(ack.packet_id.get());
        }
        if acked.len() == kill_after {
            if let Some(broker) = broker.take() {
                broker.kill();
            }
        }
    }
    if let Some(broker) = broker.take() {
        broker.kill();
    }
    acked
}

#[tokio::test]
async fn kill_9_mid_stream_keeps_every_acknowledged_message_over_several_cycles() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    let (mut sub, _) = v4::connect(persistent_v4(broker.addr, "mid-sub")).await;
    sub.subscribe("m/#", v4::QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut broker = broker;
    for cycle in 0..3u16 {
        let first = 1 + cycle * 1000;
        let acked = publish_until_killed(broker, first, 400, 40 + usize::from(cycle) * 30).await;
        assert!(
            acked.len() >= 40,
            "cycle {cycle}: only {} acks",
            acked.len()
        );
        broker = BrokerProcess::start(dir.path()).await;
        let (mut sub, connack) = v4::connect(persistent_v4(broker.addr, "mid-sub")).await;
        assert!(connack.session_present);
        let got: Vec<u16> = received_v4(&mut sub)
            .await
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        tokio::time::sleep(Duration::from_millis(200)).await;
        sub.disconnect().await;
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "cycle {cycle}: out of order or repeated: {got:?}"
        );
        for id in &acked {
            assert!(
                got.contains(id),
                "cycle {cycle}: acknowledged message {id} lost"
            );
        }
        assert!(
            got.iter().all(|id| (first..first + 400).contains(id)),
            "cycle {cycle}: stale messages {got:?}"
        );
    }
    broker.kill();
}

/// The journal file fjall appends to: the highest-numbered `*.jnl`.
fn last_journal(dir: &Path) -> PathBuf {
    let mut journals = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "jnl") {
                let id: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
                journals.push((id, path));
            }
        }
    }
    journals.into_iter().max().expect("no journal file").1
}

/// Publishes `n` acknowledged QoS 1 messages to an offline subscriber, then SIGKILL.
async fn journal_with_messages(dir: &Path, n: usize) -> Vec<String> {
    let broker = BrokerProcess::start(dir).await;
    let (mut sub, _) = v4::connect(persistent_v4(broker.addr, "journal-sub")).await;
    sub.subscribe("j/#", v4::QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let (mut publisher, _) = v4::connect(v4::options(broker.addr, "journal-pub")).await;
    let payloads: Vec<String> = (0..n).map(|i| format!("j-{i}")).collect();
    for payload in &payloads {
        publisher
            .client
            .publish("j/1", v4::QoS::AtLeastOnce, false, payload.clone())
            .await
            .unwrap();
        publisher
            .wait_for(|e| matches!(e, v4::Incoming::PubAck(_)))
            .await;
    }
    broker.kill();
    payloads
}

async fn journal_sub_receives(dir: &Path) -> Vec<String> {
    let broker = BrokerProcess::start(dir).await;
    let (mut sub, connack) = v4::connect(persistent_v4(broker.addr, "journal-sub")).await;
    assert!(connack.session_present);
    let got = received_v4(&mut sub).await;
    broker.kill();
    got
}

/// Where the journal's data ends: fjall preallocates the file with zeros.
fn journal_end(journal: &Path) -> u64 {
    let bytes = std::fs::read(journal).unwrap();
    let end = bytes.iter().rposition(|&b| b != 0).expect("empty journal") + 1;
    end as u64
}

#[tokio::test]
async fn torn_journal_tail_keeps_all_earlier_messages() {
    let dir = tempfile::tempdir().unwrap();
    let payloads = journal_with_messages(dir.path(), 21).await;
    let journal = last_journal(dir.path());
    // Tear the last batch (the 21st message): cut the file inside it.
    let end = journal_end(&journal);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap()
        .set_len(end - 20)
        .unwrap();
    let got = journal_sub_receives(dir.path()).await;
    assert_eq!(got, payloads[..20], "earlier messages lost or reordered");
}

#[tokio::test]
async fn garbage_after_journal_tail_is_ignored() {
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let payloads = journal_with_messages(dir.path(), 10).await;
    let journal = last_journal(dir.path());
    let end = journal_end(&journal);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .unwrap();
    file.seek(SeekFrom::Start(end)).unwrap();
    file.write_all(&[0xA5; 100]).unwrap();
    drop(file);
    assert_eq!(journal_sub_receives(dir.path()).await, payloads);
}

#[tokio::test]
async fn session_that_expired_while_down_is_gone_after_restart_v5() {
    let broker = start_broker().await;
    let (mut sub, _) = v5::connect(v5::persistent(broker.addr, "short", 1)).await;
    sub.subscribe("e/#", v5::QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let (mut keeper, _) = v5::connect(v5::persistent(broker.addr, "long", 3600)).await;
    keeper.subscribe("e/#", v5::QoS::AtLeastOnce).await;
    keeper.disconnect().await;
    let config = broker.config.clone();
    let data_dir = broker.data_dir;
    broker.server.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let broker = start_broker_in(config, data_dir).await;
    let (_, connack) = v5::connect(v5::persistent(broker.addr, "short", 1)).await;
    assert!(
        !connack.session_present,
        "expired while the broker was down"
    );
    let (_, connack) = v5::connect(v5::persistent(broker.addr, "long", 3600)).await;
    assert!(connack.session_present);
    broker.stop().await;
}

#[tokio::test]
async fn memory_durability_keeps_nothing_across_restart() {
    let mut config = rookery::Config::default();
    config.storage.durability = rookery::config::Durability::Memory;
    let broker = start_broker_with(config).await;
    subscribe_and_leave(broker.addr, "k/#").await;
    let broker = broker.restart().await;
    let (_, connack) = v4::connect(persistent_v4(broker.addr, "sub-v4")).await;
    assert!(!connack.session_present);
    assert!(std::fs::read_dir(broker.data_dir.path())
        .unwrap()
        .next()
        .is_none());
    broker.stop().await;
}

#[tokio::test]
async fn fsync_durability_acknowledges_after_group_commit() {
    let mut config = rookery::Config::default();
    config.storage.durability = rookery::config::Durability::Fsync;
    let broker = start_broker_with(config).await;
    subscribe_and_leave(broker.addr, "k/#").await;
    let expected = publish_acknowledged(broker.addr, "k/1", 10).await;
    let broker = broker.restart().await;
    let (got4, got5) = reconnect_and_receive(broker.addr).await;
    assert_eq!(got4, expected);
    assert_eq!(got5, expected);
    broker.stop().await;
}
