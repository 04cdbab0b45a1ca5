//! Outside peers as processes: mosquitto's `mosquitto_sub`/`mosquitto_pub` and
//! Eclipse Paho for Python (scripts in `tests/interop/`), at MQTT 3.1, 3.1.1 and 5.0,
//! against a test broker on a free port.
//!
//! These tools are required, not optional: a missing one fails the test with the
//! command that installs it (`.ci/run` installs both), rather than passing silently.
//!
//! Each test is a plain `#[test]` that owns a multi-threaded runtime for the broker
//! (and any rumqttc client), so the test itself can block on child processes.
mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// How long a peer process gets for one step (connect, subscribe, deliver).
const PEER_WAIT: Duration = Duration::from_secs(10);

/// A broker on its own runtime; the test thread stays free to block.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    broker: Option<TestBroker>,
    port: String,
}

impl Fixture {
    fn start() -> Fixture {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let broker = runtime.block_on(start_broker());
        let port = broker.port().to_string();
        Fixture {
            runtime,
            broker: Some(broker),
            port,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        self.broker.as_ref().unwrap().addr
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.take() {
            self.runtime.block_on(broker.stop());
        }
    }
}

fn require_mosquitto_clients() {
    for tool in ["mosquitto_sub", "mosquitto_pub"] {
        let found = Command::new(tool)
            .arg("--help")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        assert!(
            found,
            "`{tool}` is not installed: install mosquitto-clients \
             (`apt-get install mosquitto-clients`; CI's .ci/run does this)"
        );
    }
}

fn require_paho() {
    let found = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "Python paho-mqtt is not installed: install paho-mqtt \
         (`python3 -m pip install paho-mqtt`; CI's .ci/run does this)"
    );
}

/// A running peer process whose stdout and stderr lines arrive on a channel.
/// The process is killed when the peer is dropped.
struct Peer {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Peer {
    fn spawn(command: &mut Command) -> Peer {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
        let (tx, lines) = mpsc::channel();
        forward(child.stdout.take().unwrap(), "", tx.clone());
        forward(child.stderr.take().unwrap(), "stderr: ", tx);
        Peer {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) that satisfies `pred`.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PEER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("peer never printed {what}; it printed:\n{:#?}", self.seen),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn forward(stream: impl Read + Send + 'static, prefix: &'static str, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(format!("{prefix}{line}")).is_err() {
                return;
            }
        }
    });
}

/// Starts `mosquitto_sub` in debug mode and waits for its SUBACK. Its stdout is a
/// pipe, which C's stdio buffers fully: coreutils' `stdbuf -oL` makes it print
/// each line as it happens.
fn mosquitto_sub(fixture: &Fixture, args: &[&str]) -> Peer {
    let mut sub = Peer::spawn(
        Command::new("stdbuf")
            .args(["-oL", "mosquitto_sub"])
            .args(["-h", "127.0.0.1", "-p", &fixture.port, "-d"])
            .args(args),
    );
    let suback = sub.wait_for("a SUBACK", |line| line.starts_with("Subscribed (mid"));
    let granted: u8 = suback.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(granted < 0x80, "subscription refused: {suback}");
    sub
}

/// The next line of `mosquitto_sub` that is a message, not a debug line.
fn next_message(sub: &mut Peer) -> String {
    sub.wait_for("a message", |line| {
        !line.starts_with("Client ")
            && !line.starts_with("Subscribed")
            && !line.starts_with("stderr")
    })
}

/// Runs `mosquitto_pub` to completion (its QoS handshake included).
fn mosquitto_pub(fixture: &Fixture, args: &[&str]) {
    let output = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &fixture.port])
        .args(args)
        .output()
        .expect("mosquitto_pub runs");
    assert_success("mosquitto_pub", args, &output);
}

fn assert_success(program: &str, args: &[&str], output: &Output) {
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `mosquitto_sub -t 'sensors/#' -v` receives what `mosquitto_pub` sends, at every
/// QoS, both at `version`; the debug line shows the QoS it arrived with.
fn mosquitto_round_trip(version: &str) {
    require_mosquitto_clients();
    let fixture = Fixture::start();
    for qos in ["0", "1", "2"] {
        let client_id = format!("sub-{version}-{qos}");
        let mut sub = mosquitto_sub(
            &fixture,
            &[
                "-V",
                version,
                "-q",
                qos,
                "-i",
                &client_id,
                "-t",
                "sensors/#",
                "-v",
                "-C",
                "1",
            ],
        );
        let topic = format!("sensors/{version}/q{qos}");
        let payload = format!("hi-{qos}");
        mosquitto_pub(
            &fixture,
            &["-V", version, "-q", qos, "-t", &topic, "-m", &payload],
        );
        let received = sub.wait_for("a PUBLISH", |line| line.contains("received PUBLISH"));
        // QoS min(publish, subscription) = qos ([MQTT-3.8.4-8] 3.1.1 / [MQTT-3.8.4-8] 5.0).
        assert!(
            received.contains(&format!("(d0, q{qos}, r0,")),
            "{received}"
        );
        assert_eq!(next_message(&mut sub), format!("{topic} {payload}"));
    }
}

#[test]
fn mosquitto_pub_sub_every_qos_v5() {
    mosquitto_round_trip("mqttv5");
}

#[test]
fn mosquitto_pub_sub_every_qos_v311() {
    mosquitto_round_trip("mqttv311");
}

#[test]
fn mosquitto_pub_sub_every_qos_v31() {
    // MQTT 3.1: protocol name MQIsdp, level 3.
    mosquitto_round_trip("mqttv31");
}

#[test]
fn mosquitto_versions_interoperate() {
    // One broker, one topic tree: what a 3.1 client publishes reaches a 5.0 client,
    // and the other way round.
    require_mosquitto_clients();
    let fixture = Fixture::start();
    for (sub_version, pub_version) in [
        ("mqttv5", "mqttv31"),
        ("mqttv31", "mqttv5"),
        ("mqttv311", "mqttv5"),
    ] {
        let mut sub = mosquitto_sub(
            &fixture,
            &[
                "-V",
                sub_version,
                "-q",
                "2",
                "-t",
                "mixed/+",
                "-v",
                "-C",
                "1",
            ],
        );
        let payload = format!("from {pub_version} to {sub_version}");
        mosquitto_pub(
            &fixture,
            &[
                "-V",
                pub_version,
                "-q",
                "2",
                "-t",
                "mixed/a",
                "-m",
                &payload,
            ],
        );
        assert_eq!(next_message(&mut sub), format!("mixed/a {payload}"));
    }
}

#[test]
fn mosquitto_retained_set_deliver_clear() {
    // [MQTT-3.3.1-5] a retained message is stored and [MQTT-3.3.1-6] sent to new
    // subscribers with the retain flag set ([MQTT-3.3.1-8]); [MQTT-3.3.1-10] an empty
    // retained payload clears it.
    require_mosquitto_clients();
    let fixture = Fixture::start();
    mosquitto_pub(
        &fixture,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-r",
            "-t",
            "sensors/retained",
            "-m",
            "kept",
        ],
    );
    for version in ["mqttv5", "mqttv311", "mqttv31"] {
        let mut sub = mosquitto_sub(
            &fixture,
            &[
                "-V",
                version,
                "-t",
                "sensors/#",
                "-F",
                "%r %t %p",
                "-C",
                "1",
            ],
        );
        assert_eq!(
            next_message(&mut sub),
            "1 sensors/retained kept",
            "{version}"
        );
    }
    mosquitto_pub(
        &fixture,
        &[
            "-V",
            "mqttv311",
            "-q",
            "1",
            "-r",
            "-t",
            "sensors/retained",
            "-n",
        ],
    );
    let args = [
        "-h",
        "127.0.0.1",
        "-p",
        &fixture.port,
        "-t",
        "sensors/#",
        "-v",
        "-W",
        "1",
    ];
    let output = Command::new("mosquitto_sub")
        .args(args)
        .output()
        .expect("mosquitto_sub runs");
    assert!(
        output.stdout.is_empty(),
        "the retained message was not cleared: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn mosquitto_user_properties_pass_through_v5() {
    // [MQTT-3.3.2-17] user properties are forwarded unchanged, in order [MQTT-3.3.2-18].
    require_mosquitto_clients();
    let fixture = Fixture::start();
    let mut sub = mosquitto_sub(
        &fixture,
        &[
            "-V", "mqttv5", "-q", "1", "-t", "props/#", "-F", "%P|%p", "-C", "1",
        ],
    );
    mosquitto_pub(
        &fixture,
        &[
            "-V",
            "mqttv5",
            "-q",
            "1",
            "-t",
            "props/a",
            "-m",
            "body",
            "-D",
            "publish",
            "user-property",
            "origin",
            "mosquitto",
        ],
    );
    assert_eq!(next_message(&mut sub), "origin:mosquitto|body");
}

fn script(name: &str) -> String {
    format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn run_python(args: &[&str]) -> Output {
    Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs")
}

fn paho_round_trip(version: &str) {
    require_paho();
    let fixture = Fixture::start();
    for qos in ["0", "1", "2"] {
        let script = script("paho_roundtrip.py");
        let args = [script.as_str(), &fixture.port, version, qos];
        let output = run_python(&args);
        assert_success("python3", &args, &output);
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("OK v{version} qos {qos}")
        );
    }
}

#[test]
fn paho_round_trip_every_qos_v311() {
    paho_round_trip("311");
}

#[test]
fn paho_round_trip_every_qos_with_user_properties_v5() {
    // The script checks user properties and content type arrive ([MQTT-3.3.2-17], [MQTT-3.3.2-20]).
    paho_round_trip("5");
}

#[test]
fn paho_user_properties_reach_rumqttc_and_mosquitto_v5() {
    // Three implementations in one flow: paho publishes, rumqttc and mosquitto_sub
    // receive the user properties in order ([MQTT-3.3.2-18]).
    require_paho();
    require_mosquitto_clients();
    let fixture = Fixture::start();
    let mut rumqttc = fixture.runtime.block_on(async {
        let (mut sub, _) = v5::connect(v5::options(fixture.addr(), "rumqttc-sub")).await;
        sub.subscribe("mixed5/#", v5::QoS::ExactlyOnce).await;
        sub
    });
    let mut mosquitto = mosquitto_sub(
        &fixture,
        &[
            "-V", "mqttv5", "-q", "2", "-t", "mixed5/#", "-F", "%P|%t|%p", "-C", "1",
        ],
    );
    let script = script("paho_publish.py");
    let args = [script.as_str(), &fixture.port, "mixed5/x", "payload", "2"];
    let output = run_python(&args);
    assert_success("python3", &args, &output);
    let publish = fixture.runtime.block_on(rumqttc.next_publish());
    assert_eq!(&publish.topic[..], b"mixed5/x");
    assert_eq!(&publish.payload[..], b"payload");
    let user_properties = publish.properties.unwrap().user_properties;
    assert_eq!(
        user_properties,
        [
            ("origin".to_string(), "paho".to_string()),
            ("n".to_string(), "1".to_string())
        ]
    );
    assert_eq!(
        next_message(&mut mosquitto),
        "origin:paho n:1|mixed5/x|payload"
    );
}

#[test]
fn rumqttc_v4_publish_reaches_mosquitto_v31() {
    // rumqttc (3.1.1) publishes at QoS 1; mosquitto_sub at 3.1 receives it.
    require_mosquitto_clients();
    let fixture = Fixture::start();
    let mut sub = mosquitto_sub(
        &fixture,
        &[
            "-V",
            "mqttv31",
            "-q",
            "1",
            "-t",
            "rs/+/temp",
            "-v",
            "-C",
            "1",
        ],
    );
    fixture.runtime.block_on(async {
        let (publisher, _) = v4::connect(v4::options(fixture.addr(), "rumqttc-pub")).await;
        publisher
            .client
            .publish("rs/kitchen/temp", v4::QoS::AtLeastOnce, false, "21.5")
            .await
            .unwrap();
        publisher.disconnect().await;
    });
    assert_eq!(next_message(&mut sub), "rs/kitchen/temp 21.5");
}

fn paho_pipelined(version: &str) {
    require_paho();
    let fixture = Fixture::start();
    let script = script("paho_pipelined.py");
    let args = [script.as_str(), &fixture.port, version, "100"];
    let output = run_python(&args);
    assert_success("python3", &args, &output);
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "OK 100");
}

#[test]
fn issue_8_paho_connect_subscribe_publish_without_waiting_v311() {
    // [MQTT-3.1.4-5] paho sends SUBSCRIBE and PUBLISH before CONNACK arrives.
    paho_pipelined("311");
}

#[test]
fn issue_8_paho_connect_subscribe_publish_without_waiting_v5() {
    paho_pipelined("5");
}
