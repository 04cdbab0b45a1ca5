//! Wills survive the broker (issue 12): the will of a session that was connected
//! when the broker was killed, or shut down, is published after the restart, once.
//!
//! A session online when the broker stopped counts as disconnected at the restart
//! ([MQTT-3.1.2-8]): its will is published after its Will Delay Interval, or at
//! once when the session ends first ([MQTT-3.1.3-9]); a reconnect in time cancels
//! it; a DISCONNECT 0x00 deleted it for good ([MQTT-3.14.4-3]). At a graceful
//! shutdown a persistent session's will is kept for the restart, and a session
//! that ends with its connection has its will published then.
//!
//! The watcher is a persistent 3.1.1 session subscribed at QoS 1, offline across
//! each restart, so a will published at any moment is queued for it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::process::BrokerProcess;
use common::*;
use rookery::protocol::{Connect, Packet, Properties, ProtocolVersion, QoS};

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(700);

/// Subscribes the watcher to `w/#` and leaves it offline.
async fn watch(addr: SocketAddr) {
    let (mut watcher, _) = RawClient::open(addr, persistent_packet(V4, "watcher", 0)).await;
    watcher.subscribe_one("w/#", QoS::AtLeastOnce).await;
    watcher.disconnect().await;
}

/// Resumes the watcher's session.
async fn resume_watcher(addr: SocketAddr) -> RawClient {
    let (watcher, connack) = RawClient::open(addr, persistent_packet(V4, "watcher", 0)).await;
    assert!(connack.session_present, "the watcher's session survived");
    watcher
}

/// A CONNECT with a QoS 1 will on `w/{client_id}`, payload `gone`, after `delay` s.
fn with_will(mut connect: Connect, delay: u32) -> Connect {
    let mut will = will(&format!("w/{}", connect.client_id), "gone");
    will.qos = QoS::AtLeastOnce;
    if connect.version.is_v5() {
        will.properties = Properties {
            will_delay_interval: Some(delay),
            ..Properties::default()
        };
    }
    connect.will = Some(will);
    connect
}

/// Connects a device; it stays connected until the broker goes.
async fn device(addr: SocketAddr, connect: Connect) -> RawClient {
    let (device, connack) = RawClient::open(addr, connect).await;
    assert!(!connack.code.is_error(), "refused: {connack:?}");
    device
}

/// The topics of every will the watcher receives until it is quiet.
/// Asserts that a fresh subscriber to the wills gets none: nothing is published
/// again, or at all.
async fn assert_no_wills(addr: SocketAddr) {
    assert_eq!(
        wills(&mut resume_watcher(addr).await).await,
        Vec::<String>::new()
    );
}

async fn wills(watcher: &mut RawClient) -> Vec<String> {
    let mut topics: Vec<String> = watcher
        .publishes_until_quiet(QUIET)
        .await
        .into_iter()
        .map(|publish| {
            assert_eq!(&publish.payload[..], b"gone");
            publish.topic.to_string()
        })
        .collect();
    topics.sort();
    topics
}

#[tokio::test]
async fn issue_12_kill_9_publishes_a_connected_sessions_will_once_after_its_delay_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    watch(broker.addr).await;
    let _dev = device(broker.addr, with_will(persistent_packet(V5, "dev", 60), 1)).await;
    broker.kill();

    let restarted = Instant::now();
    let broker = BrokerProcess::start(dir.path()).await;
    let mut watcher = resume_watcher(broker.addr).await;
    let will = watcher.receive_acked().await;
    assert_eq!(will.topic, "w/dev");
    assert!(
        restarted.elapsed() >= Duration::from_secs(1),
        "the Will Delay counts from the restart, got it after {:?}",
        restarted.elapsed()
    );
    watcher.expect_silence(QUIET).await;
    drop(watcher);
    broker.kill();

    // Published, and the record says so: another crash does not bring it back.
    let broker = BrokerProcess::start(dir.path()).await;
    assert_no_wills(broker.addr).await;
    broker.kill();
}

#[tokio::test]
async fn issue_12_kill_9_publishes_the_will_of_a_session_that_ended_with_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    watch(broker.addr).await;
    // 3.1.1 clean session, and 5.0 expiry 0 with a delay the session's end cuts short.
    let _dev4 = device(broker.addr, with_will(connect_packet(V4, "dev4", true), 0)).await;
    let _dev5 = device(broker.addr, with_will(connect_packet(V5, "dev5", true), 30)).await;
    broker.kill();

    let broker = BrokerProcess::start(dir.path()).await;
    let mut watcher = resume_watcher(broker.addr).await;
    assert_eq!(wills(&mut watcher).await, ["w/dev4", "w/dev5"]);
    drop(watcher);
    broker.kill();

    let broker = BrokerProcess::start(dir.path()).await;
    assert_no_wills(broker.addr).await;
    broker.kill();
}

#[tokio::test]
async fn issue_12_reconnect_within_the_will_delay_after_kill_9_cancels_the_will_v5() {
    // [MQTT-3.1.3-9] a new connection before the delay passes: no will.
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    watch(broker.addr).await;
    let _dev = device(broker.addr, with_will(persistent_packet(V5, "dev", 60), 1)).await;
    broker.kill();

    let broker = BrokerProcess::start(dir.path()).await;
    let (_back, connack) = RawClient::open(broker.addr, persistent_packet(V5, "dev", 60)).await;
    assert!(connack.session_present);
    let mut watcher = resume_watcher(broker.addr).await;
    watcher.expect_silence(Duration::from_millis(1_500)).await;
    broker.kill();
}

#[tokio::test]
async fn issue_12_normal_disconnect_before_kill_9_leaves_no_will() {
    // [MQTT-3.14.4-3] DISCONNECT 0x00 deletes the will, for good.
    let dir = tempfile::tempdir().unwrap();
    let broker = BrokerProcess::start(dir.path()).await;
    watch(broker.addr).await;
    for connect in [
        with_will(persistent_packet(V5, "dev5", 60), 0),
        with_will(connect_packet(V4, "dev4", true), 0),
        with_will(persistent_packet(V4, "dev4p", 0), 0),
    ] {
        device(broker.addr, connect).await.disconnect().await;
    }
    broker.kill();

    let broker = BrokerProcess::start(dir.path()).await;
    assert_no_wills(broker.addr).await;
    broker.kill();
}

#[tokio::test]
async fn issue_12_shutdown_keeps_a_persistent_sessions_will_until_after_the_restart_v5() {
    let broker = start_broker().await;
    watch(broker.addr).await;
    let mut dev = device(broker.addr, with_will(persistent_packet(V5, "dev", 60), 1)).await;
    let stopped = Instant::now();
    let broker = broker.restart().await;
    assert!(matches!(dev.recv().await, Some(Packet::Disconnect(_))));

    let mut watcher = resume_watcher(broker.addr).await;
    let will = watcher.receive_acked().await;
    assert_eq!(will.topic, "w/dev");
    assert!(
        stopped.elapsed() >= Duration::from_secs(1),
        "kept through the shutdown, then delayed from the restart; got it after {:?}",
        stopped.elapsed()
    );
    watcher.expect_silence(QUIET).await;
    drop(watcher);
    let broker = broker.restart().await;
    assert_no_wills(broker.addr).await;
    broker.stop().await;
}

#[tokio::test]
async fn issue_12_shutdown_then_reconnect_in_time_cancels_a_persistent_sessions_will_v5() {
    let broker = start_broker().await;
    watch(broker.addr).await;
    let _dev = device(broker.addr, with_will(persistent_packet(V5, "dev", 60), 1)).await;
    let broker = broker.restart().await;
    let (_back, connack) = RawClient::open(broker.addr, persistent_packet(V5, "dev", 60)).await;
    assert!(connack.session_present);
    let mut watcher = resume_watcher(broker.addr).await;
    watcher.expect_silence(Duration::from_millis(1_500)).await;
    broker.stop().await;
}

#[tokio::test]
async fn issue_12_shutdown_publishes_the_will_of_a_session_that_ends_with_it_once() {
    // [MQTT-3.1.2-8] the server closes the connection without a DISCONNECT from the
    // client; the session ends with it, so the will is due now ([MQTT-3.1.3-9]).
    let broker = start_broker().await;
    watch(broker.addr).await;
    let _dev4 = device(broker.addr, with_will(connect_packet(V4, "dev4", true), 0)).await;
    let _dev5 = device(broker.addr, with_will(connect_packet(V5, "dev5", true), 30)).await;
    let broker = broker.restart().await;
    let mut watcher = resume_watcher(broker.addr).await;
    assert_eq!(wills(&mut watcher).await, ["w/dev4", "w/dev5"]);
    drop(watcher);
    let broker = broker.restart().await;
    assert_no_wills(broker.addr).await;
    broker.stop().await;
}
