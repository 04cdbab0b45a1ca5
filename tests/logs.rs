//! The operator's log: each client event is one INFO line with the fields an
//! operator searches by. The subscriber's output is captured as JSON lines (the
//! `[log] format = "json"` shape) and each event's fields are checked, with real
//! clients on a real broker.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::certs::packets::{anonymous, login, publish};
use common::*;
use rookery::protocol::{Disconnect, Packet, ProtocolVersion, QoS, ReasonCode};
use rookery::Config;
use serde_json::Value;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Everything the subscriber wrote, shared with the test.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Installs a JSON subscriber for this thread. `#[tokio::test]` runs every task
    /// of the test (the broker's included) on this thread.
    fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .without_time()
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// Every `message` line about `client_id`.
    fn events(&self, message: &str, client_id: &str) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|line| line["message"] == message && line["client_id"] == client_id)
            .collect()
    }

    /// Waits for the first `message` line about `client_id`.
    async fn wait_for(&self, message: &str, client_id: &str) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(line) = self.events(message, client_id).into_iter().next() {
                    return line;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {message:?} line for {client_id}: {:?}", self.lines()))
    }
}

fn config_with_passwords(dir: &Path, acl: Option<&str>) -> Config {
    let mut config = Config::default();
    config.auth.password_file =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/passwords"));
    if let Some(acl) = acl {
        let path = dir.join("acl");
        std::fs::write(&path, acl).unwrap();
        config.auth.acl_file = Some(path);
    }
    config
}

#[tokio::test]
async fn connect_and_client_disconnect_are_logged_with_every_field_v5() {
    let (log, _guard) = Captured::install();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(config_with_passwords(dir.path(), None)).await;
    let mut client = RawClient::connect(broker.addr, V5).await;
    let local = client.stream.local_addr().unwrap().to_string();
    client
        .send(&login(V5, "sensor-1", "alice", "wonderland"))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));

    let line = log.wait_for("client connected", "sensor-1").await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["peer"], local);
    assert_eq!(line["listener"], format!("tcp {}", broker.addr));
    assert_eq!(line["version"], "5.0");
    assert_eq!(line["username"], "alice");
    assert_eq!(line["clean_start"], true);
    assert_eq!(line["keep_alive"], 60);
    assert_eq!(line["session_present"], false);

    client
        .send(&Packet::Disconnect(Disconnect {
            reason: ReasonCode::DISCONNECT_WITH_WILL,
            ..Disconnect::default()
        }))
        .await;
    let line = log.wait_for("client disconnected", "sensor-1").await;
    assert_eq!(line["reason"], "client sent DISCONNECT");
    assert_eq!(line["code"], "0x04");
    assert_eq!(line["peer"], local);
    broker.stop().await;
}

#[tokio::test]
async fn keep_alive_timeout_is_logged_with_its_reason_code() {
    let (log, _guard) = Captured::install();
    let broker = start_broker().await;
    let mut connect = connect_packet(V4, "sleepy", true);
    connect.keep_alive = 1;
    let (mut client, _) = RawClient::open(broker.addr, connect).await;
    let line = log.wait_for("client connected", "sleepy").await;
    assert_eq!(line["version"], "3.1.1");
    assert_eq!(line["keep_alive"], 1);
    // [MQTT-3.1.2-24] 1.5 × keep-alive of silence closes the connection.
    assert!(client.is_closed().await);
    let line = log.wait_for("client disconnected", "sleepy").await;
    assert_eq!(line["reason"], "keep-alive timeout");
    assert_eq!(line["code"], "0x8D");
    broker.stop().await;
}

#[tokio::test]
async fn protocol_error_and_shutdown_each_say_why() {
    let (log, _guard) = Captured::install();
    let broker = start_broker().await;

    let (mut rude, _) = RawClient::start(broker.addr, V5, "rude", true).await;
    rude.send(&anonymous(V5, "rude")).await; // [MQTT-3.1.0-2] a second CONNECT
    rude.drain_until_closed().await;
    let line = log.wait_for("client disconnected", "rude").await;
    assert_eq!(line["code"], "0x82");
    assert!(line["reason"]
        .as_str()
        .unwrap()
        .starts_with("protocol error: "));

    let (_staying, _) = RawClient::start(broker.addr, V5, "staying", true).await;
    log.wait_for("client connected", "staying").await;
    broker.stop().await;
    let line = log.wait_for("client disconnected", "staying").await;
    assert_eq!(line["reason"], "server shutting down");
    assert_eq!(line["code"], "0x8B");
}

#[tokio::test]
async fn issue_9_a_close_without_disconnect_and_a_socket_error_are_told_apart() {
    let (log, _guard) = Captured::install();
    let broker = start_broker().await;

    // An orderly close (FIN) with no DISCONNECT before it.
    let (vanishing, _) = RawClient::start(broker.addr, V4, "vanishing", true).await;
    drop(vanishing);
    let line = log.wait_for("client disconnected", "vanishing").await;
    assert_eq!(line["reason"], "closed by the client without DISCONNECT");
    assert_eq!(line["code"], "");

    // A reset (RST): zero linger makes the close abortive, as a crashed peer's
    // kernel or a NAT dropping the flow would.
    let (resetting, _) = RawClient::start(broker.addr, V4, "resetting", true).await;
    resetting.stream.set_zero_linger().unwrap();
    drop(resetting);
    let line = log.wait_for("client disconnected", "resetting").await;
    let reason = line["reason"].as_str().unwrap();
    assert!(reason.starts_with("socket error: "), "{reason}");
    assert!(
        reason.to_lowercase().contains("reset"),
        "the io error is in the line: {reason}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn issue_9_a_takeover_names_the_connection_that_took_the_session() {
    let (log, _guard) = Captured::install();
    let broker = start_broker().await;
    let (mut first, _) = RawClient::start(broker.addr, V5, "twin", true).await;
    let (second, _) = RawClient::start(broker.addr, V5, "twin", true).await;
    first.drain_until_closed().await;
    let line = log.wait_for("client disconnected", "twin").await;
    let successor = second.stream.local_addr().unwrap();
    assert_eq!(
        line["reason"],
        format!(
            "session taken over by a new connection from {successor} on tcp {}",
            broker.addr
        )
    );
    assert_eq!(line["peer"], first.stream.local_addr().unwrap().to_string());
    assert_eq!(line["code"], "0x8E");
    assert_eq!(log.events("client connected", "twin").len(), 2);
    broker.stop().await;
}

#[tokio::test]
async fn refusals_say_why_bad_credentials_not_authorised_client_id_rejected() {
    let (log, _guard) = Captured::install();
    let dir = tempfile::tempdir().unwrap();
    let broker = start_broker_with(config_with_passwords(dir.path(), None)).await;

    let (_, connack) = RawClient::open(broker.addr, {
        let Packet::Connect(connect) = login(V5, "mallory", "alice", "guess") else {
            unreachable!()
        };
        *connect
    })
    .await;
    assert_eq!(connack.code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let line = log.wait_for("client refused", "mallory").await;
    assert_eq!(line["reason"], "bad credentials");
    assert_eq!(line["code"], "0x86");
    assert_eq!(line["username"], "alice");
    assert_eq!(line["version"], "5.0");

    // A password file closes the broker to clients without a username.
    let (_, connack) = RawClient::open(broker.addr, connect_packet(V4, "nobody", true)).await;
    assert!(connack.code.is_error());
    let line = log.wait_for("client refused", "nobody").await;
    assert_eq!(line["reason"], "not authorised");

    // [MQTT-3.1.3-8] an empty client id with a persistent session is refused.
    let (_, connack) = RawClient::open(broker.addr, connect_packet(V4, "", false)).await;
    assert!(connack.code.is_error());
    let line = log.wait_for("client refused", "").await;
    assert_eq!(line["reason"], "client id rejected");
    broker.stop().await;
}

#[tokio::test]
async fn server_busy_is_logged_when_the_connection_limit_is_reached() {
    let (log, _guard) = Captured::install();
    let mut config = Config::default();
    config.limits.max_connections = 1;
    let broker = start_broker_with(config).await;
    let (_first, _) = RawClient::start(broker.addr, V4, "first", true).await;
    let mut second = RawClient::connect(broker.addr, V4).await;
    assert!(second.is_closed().await);
    let busy = log
        .lines()
        .into_iter()
        .find(|line| line["message"] == "client refused" && line["reason"] == "server busy")
        .expect("a server busy line");
    assert_eq!(
        busy["peer"],
        second.stream.local_addr().unwrap().to_string()
    );
    broker.stop().await;
}

#[tokio::test]
async fn acl_denials_are_logged_with_action_and_topic_at_a_limited_rate() {
    let (log, _guard) = Captured::install();
    let dir = tempfile::tempdir().unwrap();
    let acl = "user alice\ntopic readwrite alice/#\n";
    let broker = start_broker_with(config_with_passwords(dir.path(), Some(acl))).await;
    let mut client = RawClient::connect(broker.addr, V4).await;
    client
        .send(&login(V4, "flooder", "alice", "wonderland"))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::ConnAck(_))));
    for _ in 0..50 {
        client
            .send(&publish(1, "forbidden/topic", QoS::AtMostOnce, false, "x"))
            .await;
    }
    client
        .send(&common::certs::packets::subscribe(
            1,
            "secret/#",
            QoS::AtMostOnce,
        ))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::SubAck(_))));
    let denials = log.events("denied by the ACL", "flooder");
    // 50 forbidden publishes and a subscribe: five lines, then silence until the window ends.
    assert_eq!(denials.len(), 5, "{denials:?}");
    assert!(denials
        .iter()
        .all(|line| line["level"] == "INFO" && line["action"] == "publish"));
    assert_eq!(denials[0]["topic"], "forbidden/topic");
    broker.stop().await;
}

#[tokio::test]
async fn connection_messages_false_silences_connect_and_disconnect_lines() {
    let (log, _guard) = Captured::install();
    let mut config = Config::default();
    config.log.connection_messages = false;
    let broker = start_broker_with(config).await;
    let (client, _) = RawClient::start(broker.addr, V5, "quiet", true).await;
    client.disconnect().await;
    let (_, connack) = RawClient::open(broker.addr, connect_packet(V4, "", false)).await;
    assert!(connack.code.is_error());
    broker.stop().await;
    let lines = log.lines();
    assert!(
        !lines.iter().any(|line| line["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("client "))),
        "{lines:?}"
    );
}

#[tokio::test]
async fn kick_is_logged_as_an_administrative_disconnect() {
    let (log, _guard) = Captured::install();
    let broker = start_broker().await;
    let (mut client, _) = RawClient::start(broker.addr, V5, "kicked", true).await;
    assert!(broker
        .server
        .broker()
        .kick(&rookery::protocol::ClientId::new("kicked")));
    client.drain_until_closed().await;
    let line = log.wait_for("client disconnected", "kicked").await;
    assert_eq!(line["reason"], "kicked by an administrator");
    assert_eq!(line["code"], "0x98");
    broker.stop().await;
}
