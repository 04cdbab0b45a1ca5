//! The HTTP listener: `/metrics` parsed as Prometheus text with values that move
//! as real clients connect and publish, and `/health`.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use common::*;
use rookery::config::Durability;
use rookery::protocol::{Packet, ProtocolVersion, QoS};
use rookery::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// One HTTP/1.1 GET; returns the status code and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, None, None).await
}

/// One HTTP/1.1 request, with an optional bearer token and JSON body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: rookery\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes()).await.unwrap();
    // A rejected oversized body may be answered before it is all sent.
    let _ = stream.write_all(body.as_bytes()).await;
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// Prometheus text into `name → value`, checking each line's shape on the way.
fn parse(text: &str) -> HashMap<String, f64> {
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let mut samples = HashMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').unwrap();
        assert!(name.starts_with("rookery_"), "{line}");
        samples.insert(name.to_string(), value.parse().unwrap());
    }
    samples
}

async fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    parse(&body)
}

/// Scrapes until `settled` holds: a subscriber's counts are added at the end of
/// its own turn, after the publisher has its acknowledgement.
async fn scrape_until(
    addr: SocketAddr,
    settled: impl Fn(&HashMap<String, f64>) -> bool,
) -> HashMap<String, f64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let samples = scrape(addr).await;
        if settled(&samples) || tokio::time::Instant::now() > deadline {
            return samples;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A broker with `config` and an HTTP listener; returns it and the HTTP address.
async fn metrics_broker(mut config: Config) -> (TestBroker, SocketAddr) {
    config.http.bind = Some("127.0.0.1:0".parse().unwrap());
    let broker = start_broker_with(config).await;
    let http = broker.server.http_addr().unwrap();
    (broker, http)
}

fn packets(samples: &HashMap<String, f64>, direction: &str, packet_type: &str) -> f64 {
    samples[&format!("rookery_packets_{direction}_total{{type=\"{packet_type}\"}}")]
}

fn dropped(samples: &HashMap<String, f64>, reason: &str) -> f64 {
    samples[&format!("rookery_publish_messages_dropped_total{{reason=\"{reason}\"}}")]
}

#[tokio::test]
async fn metrics_are_prometheus_text_and_move_with_real_clients() {
    let mut config = Config::default();
    config.http.bind = Some("127.0.0.1:0".parse().unwrap());
    let broker = start_broker_with(config).await;
    let http = broker.server.http_addr().unwrap();
    assert_eq!(get(http, "/health").await, (200, "ok\n".to_string()));

    let before = scrape(http).await;
    assert_eq!(before["rookery_clients_connected"], 0.0);
    assert_eq!(before["rookery_publish_messages_received_total"], 0.0);
    assert!(before["rookery_process_resident_memory_bytes"] > 0.0);

    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "sub", true).await;
    subscriber.subscribe_one("m/#", QoS::AtMostOnce).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V5, "pub", true).await;
    for _ in 0..5 {
        publisher
            .send(&Packet::Publish(publish(
                "m/a",
                QoS::AtMostOnce,
                0,
                "hello",
            )))
            .await;
    }
    for _ in 0..5 {
        subscriber.expect_publish().await;
    }
    // The sender's counts are added at the end of its turn: a round trip settles them.
    publisher.send(&Packet::PingReq).await;
    publisher.expect().await;
    subscriber.send(&Packet::PingReq).await;
    subscriber.expect().await;

    let after = scrape(http).await;
    assert_eq!(after["rookery_clients_connected"], 2.0);
    assert_eq!(after["rookery_subscriptions"], 1.0);
    assert_eq!(after["rookery_publish_messages_received_total"], 5.0);
    assert_eq!(after["rookery_publish_messages_sent_total"], 5.0);
    assert_eq!(after["rookery_publish_bytes_received_total"], 25.0);
    assert_eq!(
        after["rookery_packets_received_total{type=\"CONNECT\"}"],
        2.0
    );
    assert_eq!(
        after["rookery_packets_received_total{type=\"PUBLISH\"}"],
        5.0
    );
    assert_eq!(
        after["rookery_packets_received_total{type=\"PINGREQ\"}"],
        2.0
    );
    assert!(after["rookery_process_cpu_seconds_total"] > 0.0);
    assert!(after["rookery_process_open_fds"] > 0.0);
    assert!(after["rookery_bytes_sent_total"] > before["rookery_bytes_sent_total"]);
    assert_eq!(after["rookery_connections_total"], 2.0);
    let by_listener = format!(
        "rookery_clients_by_listener{{listener=\"tcp {}\",version=\"5.0\"}}",
        broker.addr
    );
    assert_eq!(after[&by_listener], 2.0, "{after:?}");
    broker.stop().await;
}

#[tokio::test]
async fn auth_failures_are_counted_by_reason() {
    let mut config = Config::default();
    config.http.bind = Some("127.0.0.1:0".parse().unwrap());
    config.auth.password_file =
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/passwords"));
    let broker = start_broker_with(config).await;
    let http = broker.server.http_addr().unwrap();
    let mut bad = connect_packet(V5, "guesser", true);
    bad.username = Some("alice".into());
    bad.password = Some(bytes::Bytes::from_static(b"wrong"));
    RawClient::open(broker.addr, bad).await;
    RawClient::open(broker.addr, connect_packet(V5, "anonymous", true)).await;
    let samples = scrape(http).await;
    assert_eq!(
        samples["rookery_auth_failures_total{reason=\"bad_credentials\"}"],
        1.0
    );
    assert_eq!(
        samples["rookery_auth_failures_total{reason=\"not_authorized\"}"],
        1.0
    );
    broker.stop().await;
}

#[tokio::test]
async fn http_port_in_use_fails_start_without_creating_the_data_dir() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.http.bind = Some(taken.local_addr().unwrap());
    config.storage.dir = dir.path().join("data");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let error = rookery::Server::start(config, vec![listener]).unwrap_err();
    assert!(error.to_string().starts_with("cannot listen on"), "{error}");
    assert!(!dir.path().join("data").exists());
}

const TOKEN: &str = "s3cret-token";

async fn api_broker() -> (TestBroker, SocketAddr) {
    let mut config = Config::default();
    config.http.bind = Some("127.0.0.1:0".parse().unwrap());
    config.http.admin_token = Some(TOKEN.to_string());
    let broker = start_broker_with(config).await;
    let http = broker.server.http_addr().unwrap();
    (broker, http)
}

/// An authorised API call; the body parsed as JSON.
async fn api(
    http: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let (status, text) = request(http, method, &format!("/api/v1{path}"), Some(TOKEN), body).await;
    let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"));
    (status, value)
}

#[tokio::test]
async fn admin_api_needs_the_bearer_token_and_is_off_without_one() {
    let mut config = Config::default();
    config.http.bind = Some("127.0.0.1:0".parse().unwrap());
    let off = start_broker_with(config).await;
    let (status, _) = request(
        off.server.http_addr().unwrap(),
        "GET",
        "/api/v1/clients",
        Some("x"),
        None,
    )
    .await;
    assert_eq!(status, 403);
    off.stop().await;

    let (broker, http) = api_broker().await;
    let (status, body) = request(http, "GET", "/api/v1/clients", None, None).await;
    assert_eq!(status, 401);
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = request(http, "GET", "/api/v1/clients", Some("wrong"), None).await;
    assert_eq!(status, 401);
    // /metrics and /health stay open.
    assert_eq!(get(http, "/health").await.0, 200);
    let (status, body) = api(http, "GET", "/nothing-here", None).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    broker.stop().await;
}

#[tokio::test]
async fn admin_api_lists_and_searches_connected_clients() {
    let (broker, http) = api_broker().await;
    let (mut sensor, _) = RawClient::start(broker.addr, V5, "sensor-7", true).await;
    sensor
        .subscribe_one("cmd/sensor-7/#", QoS::AtLeastOnce)
        .await;
    let peer = sensor.stream.local_addr().unwrap().to_string();
    let (_other, _) = RawClient::start(broker.addr, ProtocolVersion::V3_1_1, "other", true).await;

    let (status, body) = api(http, "GET", "/clients", None).await;
    assert_eq!(status, 200);
    let clients = body["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    let sensor_entry = &clients[1];
    assert_eq!(sensor_entry["client_id"], "sensor-7");
    assert_eq!(sensor_entry["peer"], peer);
    assert_eq!(sensor_entry["version"], "5.0");
    assert_eq!(sensor_entry["listener"], format!("tcp {}", broker.addr));
    assert_eq!(
        sensor_entry["subscriptions"],
        serde_json::json!(["cmd/sensor-7/#"])
    );
    assert!(sensor_entry["connected_since"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(clients[0]["version"], "3.1.1");

    let (_, body) = api(http, "GET", "/clients?search=sens", None).await;
    assert_eq!(body["clients"].as_array().unwrap().len(), 1);
    broker.stop().await;
}

#[tokio::test]
async fn admin_api_publishes_and_rejects_bad_input_with_json_errors() {
    let (broker, http) = api_broker().await;
    let (mut subscriber, _) = RawClient::start(broker.addr, V5, "listener", true).await;
    subscriber.subscribe_one("cmd/#", QoS::AtMostOnce).await;

    let body = r#"{"topic": "cmd/reboot", "payload": "now", "qos": 1}"#;
    let (status, reply) = api(http, "POST", "/publish", Some(body)).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["matched"], 1);
    let publish = subscriber.expect_publish().await;
    assert_eq!(publish.topic, "cmd/reboot");
    assert_eq!(&publish.payload[..], b"now");

    for (body, expected) in [
        ("{not json", 400),
        (r#"{"topic": "a/+"}"#, 400),
        (r#"{"topic": "a", "qos": 3}"#, 400),
        (r#"{"topic": "a", "colour": "red"}"#, 422),
    ] {
        let (status, reply) = api(http, "POST", "/publish", Some(body)).await;
        assert_eq!(status, expected, "{body}: {reply}");
        assert!(reply["error"].is_string(), "{reply}");
    }
    let oversized = format!(r#"{{"topic": "a", "payload": "{}"}}"#, "x".repeat(100_000));
    let (status, _) = request(
        http,
        "POST",
        "/api/v1/publish",
        Some(TOKEN),
        Some(&oversized),
    )
    .await;
    assert_eq!(status, 413);
    broker.stop().await;
}

#[tokio::test]
async fn admin_api_lists_and_deletes_retained_messages_and_offline_sessions() {
    let (broker, http) = api_broker().await;
    for topic in ["status/a", "status/b", "other/c"] {
        let body = format!(r#"{{"topic": "{topic}", "payload": "up", "retain": true}}"#);
        assert_eq!(api(http, "POST", "/publish", Some(&body)).await.0, 200);
    }
    let (status, body) = api(http, "GET", "/retained?filter=status/%23", None).await;
    assert_eq!(status, 200);
    let topics: Vec<&str> = body["retained"]
        .as_array()
        .unwrap()
        .iter()
        .map(|message| message["topic"].as_str().unwrap())
        .collect();
    assert_eq!(topics, ["status/a", "status/b"]);
    let (status, body) = api(http, "DELETE", "/retained?filter=status/%23", None).await;
    assert_eq!((status, body["deleted"].as_u64()), (200, Some(2)));
    let (_, body) = api(http, "GET", "/retained", None).await;
    assert_eq!(body["retained"].as_array().unwrap().len(), 1);
    assert_eq!(
        api(http, "GET", "/retained?filter=a/%23/b", None).await.0,
        400
    );

    let (away, _) = RawClient::open(broker.addr, persistent_packet(V5, "away", 600)).await;
    away.disconnect().await;
    let (_here, _) = RawClient::open(broker.addr, persistent_packet(V5, "here", 600)).await;
    let (_, body) = api(http, "GET", "/sessions", None).await;
    assert_eq!(
        body["sessions"],
        serde_json::json!([
            {"client_id": "away", "online": false, "queued": 0},
            {"client_id": "here", "online": true, "queued": 0},
        ])
    );
    assert_eq!(api(http, "DELETE", "/sessions/here", None).await.0, 409);
    assert_eq!(api(http, "DELETE", "/sessions/away", None).await.0, 200);
    assert_eq!(api(http, "DELETE", "/sessions/away", None).await.0, 404);
    broker.stop().await;
}

#[tokio::test]
async fn kick_disconnects_the_client_with_administrative_action() {
    let (broker, http) = api_broker().await;
    let (mut victim, _) = RawClient::start(broker.addr, V5, "victim", true).await;
    let (mut old_timer, _) =
        RawClient::start(broker.addr, ProtocolVersion::V3_1_1, "old", true).await;

    let (status, body) = api(http, "POST", "/clients/victim/kick", None).await;
    assert_eq!((status, body["kicked"].as_str()), (200, Some("victim")));
    match victim.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(
                disconnect.reason,
                rookery::protocol::ReasonCode::ADMINISTRATIVE_ACTION
            )
        }
        other => panic!("expected DISCONNECT 0x98, got {other:?}"),
    }
    assert!(victim.is_closed().await);
    // 3.1.1 has no DISCONNECT from the server: the connection just closes.
    assert_eq!(api(http, "POST", "/clients/old/kick", None).await.0, 200);
    assert!(old_timer.is_closed().await);

    assert_eq!(api(http, "POST", "/clients/victim/kick", None).await.0, 404);
    let (_, body) = api(http, "GET", "/clients", None).await;
    assert_eq!(body["clients"], serde_json::json!([]));
    broker.stop().await;
}

#[tokio::test]
async fn reload_through_the_api_applies_a_new_acl_and_reports_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic read public/#\n").unwrap();
    let mut config = Config::default();
    config.http.bind = Some("127.0.0.1:0".parse().unwrap());
    config.http.admin_token = Some(TOKEN.to_string());
    config.auth.acl_file = Some(acl.clone());
    let broker = start_broker_with(config).await;
    let http = broker.server.http_addr().unwrap();
    let (mut client, _) = RawClient::start(broker.addr, V5, "reader", true).await;
    let refused = client.subscribe_one("private/x", QoS::AtMostOnce).await;
    assert!(refused.reasons[0].is_error());

    std::fs::write(&acl, "topic read public/#\ntopic read private/#\n").unwrap();
    let (status, body) = api(http, "POST", "/reload", None).await;
    assert_eq!((status, body["reloaded"].as_bool()), (200, Some(true)));
    let granted = client.subscribe_one("private/x", QoS::AtMostOnce).await;
    assert!(!granted.reasons[0].is_error());

    std::fs::write(&acl, "topic sometimes x/#\n").unwrap();
    let (status, body) = api(http, "POST", "/reload", None).await;
    assert_eq!(status, 422);
    assert!(body["error"].as_str().unwrap().contains("acl"), "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn issue_9_packets_are_counted_by_type_in_each_direction() {
    let (broker, http) = metrics_broker(Config::default()).await;
    let (mut subscriber, _) = v4::connect(v4::options(broker.addr, "typed-sub")).await;
    subscriber.subscribe("typed/#", v4::QoS::AtLeastOnce).await;
    let (mut publisher, _) = v4::connect(v4::options(broker.addr, "typed-pub")).await;
    for n in 0..5u8 {
        let qos = v4::QoS::AtLeastOnce;
        publisher
            .client
            .publish("typed/a", qos, false, vec![n])
            .await
            .unwrap();
    }
    for _ in 0..5 {
        publisher
            .wait_for(|event| matches!(event, v4::Incoming::PubAck(_)))
            .await;
        subscriber.next_publish().await;
    }
    // rumqttc acknowledges each delivery on its own; wait for the last PUBACK.
    let after = scrape_until(http, |s| packets(s, "received", "PUBACK") >= 5.0).await;
    for (packet_type, count) in [
        ("CONNECT", 2.0),
        ("SUBSCRIBE", 1.0),
        ("PUBLISH", 5.0),
        ("PUBACK", 5.0),
    ] {
        assert_eq!(
            packets(&after, "received", packet_type),
            count,
            "{packet_type} in"
        );
    }
    for (packet_type, count) in [
        ("CONNACK", 2.0),
        ("SUBACK", 1.0),
        ("PUBLISH", 5.0),
        ("PUBACK", 5.0),
    ] {
        assert_eq!(
            packets(&after, "sent", packet_type),
            count,
            "{packet_type} out"
        );
    }
    // Types nobody sent are listed at 0, so that a dashboard's series exist.
    assert_eq!(packets(&after, "received", "UNSUBSCRIBE"), 0.0);
    assert!(
        !after.contains_key("rookery_packets_received_total"),
        "only by type"
    );
    broker.stop().await;
}

#[tokio::test]
async fn issue_9_drops_queue_depth_and_in_flight_move_with_a_subscriber_that_never_acknowledges() {
    let mut config = Config::default();
    config.limits.max_queued_messages = 2;
    let (broker, http) = metrics_broker(config).await;
    // Never reads, never acknowledges: its two admitted messages stay in flight.
    let (mut hoarder, _) = RawClient::start(broker.addr, V5, "hoarder", true).await;
    hoarder.subscribe_one("hoard/#", QoS::AtLeastOnce).await;
    // A persistent session away with a QoS 0 subscription queues nothing.
    let mut away = v4::options(broker.addr, "away");
    away.set_clean_session(false);
    let (mut away, _) = v4::connect(away).await;
    away.subscribe("away/#", v4::QoS::AtMostOnce).await;
    away.disconnect().await;

    let (mut publisher, _) = v4::connect(v4::options(broker.addr, "pub")).await;
    let topics = ["hoard/a"; 5].into_iter().chain(["away/a", "nobody/home"]);
    for topic in topics.clone() {
        let qos = v4::QoS::AtLeastOnce;
        publisher
            .client
            .publish(topic, qos, false, "x")
            .await
            .unwrap();
    }
    // A PUBACK means routed, and a publish's drops are counted before it.
    for _ in topics {
        publisher
            .wait_for(|event| matches!(event, v4::Incoming::PubAck(_)))
            .await;
    }
    let after = scrape_until(http, |s| s["rookery_inflight_messages"] == 2.0).await;
    assert_eq!(dropped(&after, "queue_full"), 3.0, "{after:?}");
    assert_eq!(dropped(&after, "offline"), 1.0);
    assert_eq!(dropped(&after, "no_subscribers"), 1.0);
    assert_eq!(dropped(&after, "too_large"), 0.0);

    assert_eq!(after["rookery_queued_messages"], 2.0);
    assert_eq!(after["rookery_inflight_messages"], 2.0);
    // Three sessions hold 2, 0 and 0 messages; the two online ones have 2 and 0 in flight.
    let queued = "rookery_session_queued_messages";
    assert_eq!(after[&format!("{queued}_count")], 3.0);
    assert_eq!(after[&format!("{queued}_sum")], 2.0);
    assert_eq!(after[&format!("{queued}_bucket{{le=\"0.0\"}}")], 2.0);
    assert_eq!(after[&format!("{queued}_bucket{{le=\"10.0\"}}")], 3.0);
    let in_flight = "rookery_session_inflight_messages";
    assert_eq!(after[&format!("{in_flight}_count")], 2.0);
    assert_eq!(after[&format!("{in_flight}_bucket{{le=\"1.0\"}}")], 1.0);
    assert_eq!(after[&format!("{in_flight}_bucket{{le=\"+Inf\"}}")], 2.0);
    drop(hoarder);
    broker.stop().await;
}

#[tokio::test]
async fn issue_9_storage_commit_and_fsync_latency_histograms_count_qos1_to_a_persistent_session() {
    let mut config = Config::default();
    config.storage.durability = Durability::Fsync;
    let (broker, http) = metrics_broker(config).await;
    let mut options = v4::options(broker.addr, "stored");
    options.set_clean_session(false);
    let (mut subscriber, _) = v4::connect(options).await;
    subscriber.subscribe("stored/#", v4::QoS::AtLeastOnce).await;
    let before = scrape(http).await;
    let commits = "rookery_storage_commit_seconds";
    let (mut publisher, _) = v4::connect(v4::options(broker.addr, "pub")).await;
    for n in 0..10u8 {
        let qos = v4::QoS::AtLeastOnce;
        publisher
            .client
            .publish("stored/a", qos, false, vec![n])
            .await
            .unwrap();
    }
    for _ in 0..10 {
        publisher
            .wait_for(|event| matches!(event, v4::Incoming::PubAck(_)))
            .await;
        subscriber.next_publish().await;
    }
    let after = scrape(http).await;
    // One batch per publish (its delivery stored), plus the subscriber's state changes.
    let count = |samples: &HashMap<String, f64>, name: &str| samples[&format!("{name}_count")];
    assert!(
        count(&after, commits) >= count(&before, commits) + 10.0,
        "{after:?}"
    );
    assert!(after[&format!("{commits}_sum")] > before[&format!("{commits}_sum")]);
    assert_eq!(
        after[&format!("{commits}_bucket{{le=\"+Inf\"}}")],
        count(&after, commits)
    );
    // Acknowledged means fsynced: at least one group commit ran.
    let syncs = "rookery_storage_sync_seconds";
    assert!(count(&after, syncs) > count(&before, syncs), "{after:?}");
    broker.stop().await;
}
