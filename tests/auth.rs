//! Password and ACL files applied to real connections, v3.1.1 and v5: refused
//! logins, denied SUBSCRIBE and PUBLISH, filtered deliveries, retained messages,
//! wills, `%c`/`%u` patterns, and reload.

mod common;

use std::path::Path;
use std::time::Duration;

use common::certs::packets::{anonymous, login, publish, subscribe, with_will};
use common::*;
use rookery::protocol::{Packet, ProtocolVersion, QoS, ReasonCode};
use rookery::Config;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;

const ACL: &str = "\
topic read public/#

user alice
topic readwrite alice/#
topic read public/#
topic read shared/#
topic deny shared/hidden
topic deny alice/secret

user bob
topic write shared/#
topic write alice/#

pattern readwrite clients/%c/#
pattern read inbox/%u/#
";

/// A broker with the fixture password file (alice/wonderland, bob) and [`ACL`].
async fn broker(dir: &Path) -> TestBroker {
    let acl = dir.join("acl");
    std::fs::write(&acl, ACL).unwrap();
    let mut config = Config::default();
    config.auth.password_file =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/passwords"));
    config.auth.acl_file = Some(acl);
    start_broker_with(config).await
}

async fn alice(broker: &TestBroker, version: ProtocolVersion, client_id: &str) -> RawClient {
    let mut client = RawClient::connect(broker.addr, version).await;
    client
        .send(&login(version, client_id, "alice", "wonderland"))
        .await;
    assert_eq!(connack(&mut client).await, ReasonCode::SUCCESS);
    client
}

async fn connack(client: &mut RawClient) -> ReasonCode {
    match client.recv().await {
        Some(Packet::ConnAck(connack)) => connack.code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

async fn refused(broker: &TestBroker, connect: Packet, version: ProtocolVersion) -> ReasonCode {
    let mut client = RawClient::connect(broker.addr, version).await;
    client.send(&connect).await;
    let code = connack(&mut client).await;
    assert!(
        client.is_closed().await,
        "the connection stays open after {code:?}"
    );
    code
}

async fn suback(client: &mut RawClient, id: u16, filter: &str) -> ReasonCode {
    client.send(&subscribe(id, filter, QoS::AtLeastOnce)).await;
    match client.recv().await {
        Some(Packet::SubAck(suback)) => suback.reasons[0],
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn right_password_connects_v4_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    alice(&broker, V4, "a4").await;
    alice(&broker, V5, "a5").await;
    broker.stop().await;
}

#[tokio::test]
async fn wrong_password_is_refused_v4_0x04_and_v5_0x86() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let v4 = refused(&broker, login(V4, "c", "alice", "Wonderland"), V4).await;
    // The decoder reports v3 return codes as their v5 equivalents: 0x04 arrives as 0x86.
    assert_eq!(v4, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let v5 = refused(&broker, login(V5, "c", "alice", "Wonderland"), V5).await;
    assert_eq!(v5, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    broker.stop().await;
}

#[tokio::test]
async fn wrong_password_is_refused_with_exact_bytes_v4() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut client = RawClient::connect(broker.addr, V4).await;
    client.send(&login(V4, "c", "alice", "nope")).await;
    assert_eq!(client.recv_bytes(4).await, [0x20, 0x02, 0x00, 0x04]);
    broker.stop().await;
}

#[tokio::test]
async fn unknown_user_is_refused_v4_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let v4 = refused(&broker, login(V4, "c", "mallory", "wonderland"), V4).await;
    assert_eq!(v4, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    let v5 = refused(&broker, login(V5, "c", "mallory", "wonderland"), V5).await;
    assert_eq!(v5, ReasonCode::BAD_USER_NAME_OR_PASSWORD);
    broker.stop().await;
}

#[tokio::test]
async fn anonymous_is_refused_once_a_password_file_is_set_v4_0x05_and_v5_0x87() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut client = RawClient::connect(broker.addr, V4).await;
    client.send(&anonymous(V4, "c")).await;
    assert_eq!(client.recv_bytes(4).await, [0x20, 0x02, 0x00, 0x05]);
    let v5 = refused(&broker, anonymous(V5, "c"), V5).await;
    assert_eq!(v5, ReasonCode::NOT_AUTHORIZED);
    broker.stop().await;
}

#[tokio::test]
async fn anonymous_is_allowed_when_configured() {
    let mut config = Config::default();
    config.auth.password_file =
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/passwords"));
    config.auth.allow_anonymous = Some(true);
    let broker = start_broker_with(config).await;
    let mut client = RawClient::connect(broker.addr, V5).await;
    client.send(&anonymous(V5, "c")).await;
    assert_eq!(connack(&mut client).await, ReasonCode::SUCCESS);
    broker.stop().await;
}

#[tokio::test]
async fn denied_subscribe_v4_0x80_and_v5_0x87() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut v4 = alice(&broker, V4, "a4").await;
    assert_eq!(
        suback(&mut v4, 1, "alice/#").await,
        ReasonCode::GRANTED_QOS_1
    );
    // 3.1.1 can only say 0x80, which the decoder reads as UNSPECIFIED_ERROR.
    assert_eq!(
        suback(&mut v4, 2, "bob/#").await,
        ReasonCode::UNSPECIFIED_ERROR
    );
    assert_eq!(suback(&mut v4, 3, "#").await, ReasonCode::UNSPECIFIED_ERROR);
    let mut v5 = alice(&broker, V5, "a5").await;
    assert_eq!(
        suback(&mut v5, 1, "bob/#").await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        suback(&mut v5, 2, "$share/g/bob/#").await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        suback(&mut v5, 3, "$share/g/alice/+").await,
        ReasonCode::GRANTED_QOS_1
    );
    broker.stop().await;
}

#[tokio::test]
async fn denied_publish_is_dropped_but_acknowledged_v4() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut reader = alice(&broker, V4, "reader").await;
    suback(&mut reader, 1, "public/#").await;
    let mut writer = alice(&broker, V4, "writer").await;
    writer
        .send(&publish(7, "public/news", QoS::AtLeastOnce, false, "x"))
        .await;
    match writer.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id.get(), 7),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    writer.send(&Packet::PingReq).await;
    assert_eq!(writer.recv().await, Some(Packet::PingResp));
    reader.send(&Packet::PingReq).await;
    assert_eq!(
        reader.recv().await,
        Some(Packet::PingResp),
        "the denied message was delivered"
    );
    broker.stop().await;
}

#[tokio::test]
async fn denied_publish_gets_0x87_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut client = alice(&broker, V5, "a5").await;
    client
        .send(&publish(1, "public/news", QoS::AtLeastOnce, false, "x"))
        .await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    client
        .send(&publish(2, "public/news", QoS::ExactlyOnce, false, "x"))
        .await;
    match client.recv().await {
        Some(Packet::PubRec(ack)) => assert_eq!(ack.reason, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    // An allowed publish still goes through on the same connection.
    client
        .send(&publish(3, "alice/x", QoS::AtLeastOnce, false, "x"))
        .await;
    match client.recv().await {
        Some(Packet::PubAck(ack)) => assert!(!ack.reason.is_error(), "{ack:?}"),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    broker.stop().await;
}

#[tokio::test]
async fn deny_rule_filters_deliveries_inside_an_allowed_subscription() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let (mut alice, _) =
        v4::connect(credentials(&broker, "alice-sub", "alice", "wonderland")).await;
    alice.subscribe("shared/#", v4::QoS::AtLeastOnce).await;
    let (bob, _) = v4::connect(credentials(&broker, "bob", "bob", BOB)).await;
    for topic in ["shared/hidden", "shared/open"] {
        bob.client
            .publish(topic, v4::QoS::AtLeastOnce, false, topic)
            .await
            .unwrap();
    }
    assert_eq!(alice.next_publish().await.topic, "shared/open");
    alice.expect_no_publish(Duration::from_millis(300)).await;
    broker.stop().await;
}

#[tokio::test]
async fn retained_messages_obey_the_acl_on_subscribe() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let (bob, _) = v4::connect(credentials(&broker, "bob", "bob", BOB)).await;
    for topic in ["shared/hidden", "shared/open"] {
        bob.client
            .publish(topic, v4::QoS::AtLeastOnce, true, topic)
            .await
            .unwrap();
    }
    bob.disconnect().await;
    let (mut alice, _) = v4::connect(credentials(&broker, "alice", "alice", "wonderland")).await;
    alice.subscribe("shared/#", v4::QoS::AtLeastOnce).await;
    assert_eq!(alice.next_publish().await.topic, "shared/open");
    alice.expect_no_publish(Duration::from_millis(300)).await;
    broker.stop().await;
}

#[tokio::test]
async fn will_on_a_denied_topic_is_refused_v4_and_v5() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let v4 = with_will(login(V4, "c", "alice", "wonderland"), "public/gone");
    assert_eq!(refused(&broker, v4, V4).await, ReasonCode::NOT_AUTHORIZED);
    let v5 = with_will(login(V5, "c", "alice", "wonderland"), "public/gone");
    assert_eq!(refused(&broker, v5, V5).await, ReasonCode::NOT_AUTHORIZED);
    let mut allowed = RawClient::connect(broker.addr, V5).await;
    allowed
        .send(&with_will(
            login(V5, "c", "alice", "wonderland"),
            "alice/gone",
        ))
        .await;
    assert_eq!(connack(&mut allowed).await, ReasonCode::SUCCESS);
    broker.stop().await;
}

#[tokio::test]
async fn client_id_pattern_grants_only_the_own_subtree() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut client = alice(&broker, V5, "c1").await;
    assert_eq!(
        suback(&mut client, 1, "clients/c1/#").await,
        ReasonCode::GRANTED_QOS_1
    );
    assert_eq!(
        suback(&mut client, 2, "clients/c2/#").await,
        ReasonCode::NOT_AUTHORIZED
    );
    client
        .send(&publish(
            3,
            "clients/c1/status",
            QoS::AtLeastOnce,
            false,
            "up",
        ))
        .await;
    // Our own subscription sees it: allowed to write and to read.
    let mut got_ack = false;
    let mut got_message = false;
    while !(got_ack && got_message) {
        match client.recv().await {
            Some(Packet::PubAck(ack)) if ack.packet_id.get() == 3 => {
                assert!(!ack.reason.is_error(), "{ack:?}");
                got_ack = true;
            }
            Some(Packet::Publish(message)) => {
                assert_eq!(&message.topic[..], "clients/c1/status");
                got_message = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    broker.stop().await;
}

#[tokio::test]
async fn username_pattern_grants_read_of_the_own_inbox_v4() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    let mut client = alice(&broker, V4, "any").await;
    assert_eq!(
        suback(&mut client, 1, "inbox/alice/#").await,
        ReasonCode::GRANTED_QOS_1
    );
    assert_eq!(
        suback(&mut client, 2, "inbox/bob/#").await,
        ReasonCode::UNSPECIFIED_ERROR
    );
    broker.stop().await;
}

#[tokio::test]
async fn reload_applies_a_new_password_file() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    let hash = rookery::auth::hash_password("first", rookery::auth::HashKind::Pbkdf2Sha512);
    std::fs::write(&passwords, format!("carol:{hash}\n")).unwrap();
    let mut config = Config::default();
    config.auth.password_file = Some(passwords.clone());
    let broker = start_broker_with(config).await;
    let first = login(V5, "new", "carol", "first");
    let second = login(V5, "new", "carol", "second");
    let mut old = RawClient::connect(broker.addr, V5).await;
    old.send(&login(V5, "old", "carol", "first")).await;
    assert_eq!(connack(&mut old).await, ReasonCode::SUCCESS);

    let hash = rookery::auth::hash_password("second", rookery::auth::HashKind::Argon2id);
    std::fs::write(&passwords, format!("carol:{hash}\n")).unwrap();
    broker.server.reload().unwrap();
    assert_eq!(
        refused(&broker, first, V5).await,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    let mut new = RawClient::connect(broker.addr, V5).await;
    new.send(&second).await;
    assert_eq!(connack(&mut new).await, ReasonCode::SUCCESS);
    // The client that logged in with the old password keeps its connection.
    old.send(&Packet::PingReq).await;
    assert_eq!(old.recv().await, Some(Packet::PingResp));
    broker.stop().await;
}

#[tokio::test]
async fn broken_acl_file_on_reload_keeps_the_previous_rules() {
    let dir = tempfile::tempdir().unwrap();
    let broker = broker(dir.path()).await;
    std::fs::write(dir.path().join("acl"), "topic sometimes x/#\n").unwrap();
    let error = broker.server.reload().unwrap_err();
    assert!(error.to_string().contains("acl"), "{error}");
    let mut client = alice(&broker, V5, "a5").await;
    assert_eq!(
        suback(&mut client, 1, "bob/#").await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        suback(&mut client, 2, "alice/#").await,
        ReasonCode::GRANTED_QOS_1
    );
    broker.stop().await;
}

/// bob's password in the fixture file.
const BOB: &str = "b0b:with spaces & ünïcode";

fn credentials(
    broker: &TestBroker,
    client_id: &str,
    user: &str,
    password: &str,
) -> v4::MqttOptions {
    let mut options = v4::options(broker.addr, client_id);
    options.set_credentials(user, password);
    options
}

#[test]
fn passwd_subcommand_writes_entries_the_broker_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwords");
    let rookery = env!("CARGO_BIN_EXE_rookery");
    let status = std::process::Command::new(rookery)
        .args(["passwd", "-c", "--password", "first"])
        .arg(&file)
        .arg("alice")
        .status()
        .unwrap();
    assert!(status.success());
    let mut child = std::process::Command::new(rookery)
        .args(["passwd", "--pbkdf2"])
        .arg(&file)
        .arg("bob")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"from stdin\n").unwrap();
    assert!(child.wait().unwrap().success());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("alice:$argon2id$") && text.contains("bob:$7$101$"),
        "{text}"
    );
    let passwords = rookery::auth::PasswordFile::load(&file).unwrap();
    assert!(passwords.verify("alice", b"first"));
    assert!(passwords.verify("bob", b"from stdin"));
    // Without -c a missing file is an error, not a silent create.
    let missing = std::process::Command::new(rookery)
        .args(["passwd", "--password", "x"])
        .arg(dir.path().join("absent"))
        .arg("carol")
        .output()
        .unwrap();
    assert!(!missing.status.success());
}
