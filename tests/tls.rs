//! TLS and mutual TLS listeners with real clients (mosquitto_pub/sub, rumqttc, a
//! rustls client speaking raw MQTT), the rejected certificates, and reload.

mod common;

use std::process::Command;
use std::time::Duration;

use common::certs::{self, packets, Ca, KeyCert, Pki, Raw};
use common::*;
use rookery::config::{ListenerConfig, TlsVersion};
use rookery::protocol::{Packet, ProtocolVersion, ReasonCode};
use rookery::{Config, Server};

async fn start(listeners: Vec<ListenerConfig>) -> Server {
    let config = Config {
        listeners,
        ..memory_config()
    };
    Server::bind(config).await.unwrap()
}

/// Runs a TLS handshake and CONNECT; the CONNACK code, or `None` if the broker
/// refused the connection before answering (for TLS 1.3 the client learns that
/// its certificate was refused only when it reads).
async fn tls_connack(server: &Server, client: Option<&KeyCert>, ca: &str) -> Option<ReasonCode> {
    let config = certs::client_config(ca, client);
    let stream = certs::tls_connect(server.local_addrs()[0], config)
        .await
        .ok()?;
    let mut raw = Raw::new(stream, ProtocolVersion::V3_1_1);
    raw.connect(&packets::anonymous(ProtocolVersion::V3_1_1, "c"))
        .await
}

async fn mosquitto(
    program: &str,
    server: &Server,
    pki: &Pki,
    client: &KeyCert,
    args: &[&str],
) -> std::process::Output {
    let (cert, key) = client.write(pki.dir.path(), &format!("client-{}", fastrand::u32(..)));
    tokio::process::Command::new(program)
        .args([
            "-h",
            "localhost",
            "-p",
            &server.local_addrs()[0].port().to_string(),
        ])
        .arg("--cafile")
        .arg(&pki.ca_file)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(args)
        .output()
        .await
        .expect("mosquitto-clients are installed")
}

#[tokio::test]
async fn mosquitto_clients_over_mutual_tls() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let publish = [
        "-V",
        "mqttv311",
        "-t",
        "tls/hello",
        "-m",
        "over mtls",
        "-r",
        "-q",
        "1",
    ];
    let published = mosquitto("mosquitto_pub", &server, &pki, &pki.device_1, &publish).await;
    assert!(published.status.success(), "{published:?}");
    let subscribe = ["-V", "mqttv5", "-t", "tls/#", "-C", "1", "-W", "5"];
    let received = mosquitto("mosquitto_sub", &server, &pki, &pki.device_2, &subscribe).await;
    assert!(received.status.success(), "{received:?}");
    assert_eq!(
        String::from_utf8_lossy(&received.stdout).trim(),
        "over mtls"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn mosquitto_pub_without_client_certificate_is_refused() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let port = server.local_addrs()[0].port().to_string();
    let output = tokio::process::Command::new("mosquitto_pub")
        .args(["-h", "localhost", "-p", &port, "-t", "t", "-m", "x"])
        .arg("--cafile")
        .arg(&pki.ca_file)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificate_of_the_ca_is_accepted() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let code = tls_connack(&server, Some(&pki.device_1), &pki.ca.cert).await;
    assert_eq!(code, Some(ReasonCode::SUCCESS));
    server.shutdown().await;
}

#[tokio::test]
async fn missing_client_certificate_never_reaches_connect() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    assert_eq!(tls_connack(&server, None, &pki.ca.cert).await, None);
    server.shutdown().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let stranger = Ca::new("Someone else's CA").client("device-1");
    assert_eq!(
        tls_connack(&server, Some(&stranger), &pki.ca.cert).await,
        None
    );
    server.shutdown().await;
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let expired = pki.ca.expired_client("device-1");
    assert_eq!(
        tls_connack(&server, Some(&expired), &pki.ca.cert).await,
        None
    );
    server.shutdown().await;
}

#[tokio::test]
async fn revoked_client_certificate_is_refused() {
    let pki = Pki::new();
    let crl = certs::write(pki.dir.path(), "ca.crl", &pki.ca.crl(&[&pki.device_2]));
    let listener = ListenerConfig {
        crl: Some(crl),
        ..pki.listener(true)
    };
    let server = start(vec![listener]).await;
    let revoked = tls_connack(&server, Some(&pki.device_2), &pki.ca.cert).await;
    assert_eq!(revoked, None);
    let valid = tls_connack(&server, Some(&pki.device_1), &pki.ca.cert).await;
    assert_eq!(valid, Some(ReasonCode::SUCCESS));
    server.shutdown().await;
}

#[tokio::test]
async fn tls_1_2_client_is_refused_by_a_tls_1_3_listener() {
    let pki = Pki::new();
    let listener = ListenerConfig {
        min_tls_version: TlsVersion::V1_3,
        ..pki.listener(false)
    };
    let server = start(vec![listener]).await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::pem::PemObject::from_pem_slice(pki.ca.cert.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls12 = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    assert!(certs::tls_connect(server.local_addrs()[0], tls12)
        .await
        .is_err());
    let code = tls_connack(&server, None, &pki.ca.cert).await;
    assert_eq!(code, Some(ReasonCode::SUCCESS));
    server.shutdown().await;
}

#[tokio::test]
async fn a_failed_handshake_does_not_affect_other_clients() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let config = certs::client_config(&pki.ca.cert, Some(&pki.device_1));
    let stream = certs::tls_connect(server.local_addrs()[0], config)
        .await
        .unwrap();
    let mut healthy = Raw::new(stream, ProtocolVersion::V3_1_1);
    let connect = packets::anonymous(ProtocolVersion::V3_1_1, "healthy");
    assert_eq!(healthy.connect(&connect).await, Some(ReasonCode::SUCCESS));
    // Garbage instead of a ClientHello, and a client that never says anything.
    let mut garbage = tokio::net::TcpStream::connect(server.local_addrs()[0])
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut garbage,
        b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00",
    )
    .await
    .unwrap();
    let _silent = tokio::net::TcpStream::connect(server.local_addrs()[0])
        .await
        .unwrap();
    healthy.send(&Packet::PingReq).await.unwrap();
    assert_eq!(healthy.recv().await, Some(Packet::PingResp));
    server.shutdown().await;
}

#[tokio::test]
async fn rumqttc_over_mutual_tls_v4_and_v5() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let port = server.local_addrs()[0].port();
    let transport = |client: &KeyCert| {
        rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
            ca: pki.ca.cert.clone().into_bytes(),
            alpn: None,
            client_auth: Some((
                client.cert.clone().into_bytes(),
                client.key.clone().into_bytes(),
            )),
        })
    };
    let mut options = v5::MqttOptions::new("sub", "localhost", port);
    options.set_transport(transport(&pki.device_1));
    let (mut subscriber, _) = v5::connect(options).await;
    subscriber.subscribe("tls/#", v5::QoS::AtLeastOnce).await;
    let mut options = v4::MqttOptions::new("pub", "localhost", port);
    options.set_transport(transport(&pki.device_2));
    let (publisher, _) = v4::connect(options).await;
    publisher
        .client
        .publish("tls/a", v4::QoS::AtLeastOnce, false, "secret")
        .await
        .unwrap();
    assert_eq!(&subscriber.next_publish().await.payload[..], b"secret");
    server.shutdown().await;
}

/// `identity_as_username` with a `%u` ACL pattern: device-1 may use only its own subtree.
#[tokio::test]
async fn certificate_common_name_becomes_the_username() {
    let pki = Pki::new();
    let acl = certs::write(pki.dir.path(), "acl", "pattern readwrite devices/%u/#\n");
    let listener = ListenerConfig {
        identity_as_username: true,
        ..pki.listener(true)
    };
    let mut config = Config {
        listeners: vec![listener],
        ..memory_config()
    };
    config.auth.allow_anonymous = Some(false);
    config.auth.acl_file = Some(acl);
    let server = Server::bind(config).await.unwrap();
    let tls = certs::client_config(&pki.ca.cert, Some(&pki.device_1));
    let stream = certs::tls_connect(server.local_addrs()[0], tls)
        .await
        .unwrap();
    let mut client = Raw::new(stream, ProtocolVersion::V5);
    // Whatever username and password it sends, it is `device-1`.
    let login = packets::login(ProtocolVersion::V5, "any-id", "admin", "guess");
    assert_eq!(client.connect(&login).await, Some(ReasonCode::SUCCESS));
    let qos = rookery::protocol::QoS::AtLeastOnce;
    client
        .send(&packets::subscribe(1, "devices/device-1/#", qos))
        .await
        .unwrap();
    client
        .send(&packets::subscribe(2, "devices/device-2/#", qos))
        .await
        .unwrap();
    let granted = [client.recv().await, client.recv().await];
    let reasons: Vec<ReasonCode> = granted
        .into_iter()
        .map(|packet| match packet {
            Some(Packet::SubAck(suback)) => suback.reasons[0],
            other => panic!("expected SUBACK, got {other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        [ReasonCode::GRANTED_QOS_1, ReasonCode::NOT_AUTHORIZED]
    );
    server.shutdown().await;
}

/// Replaces the server certificate on disk and reloads: a new client sees the new
/// certificate, a client connected before is still served.
#[tokio::test]
async fn reload_serves_the_new_certificate_and_keeps_connections() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(true)]).await;
    let addr = server.local_addrs()[0];
    let tls = certs::client_config(&pki.ca.cert, Some(&pki.device_1));
    let stream = certs::tls_connect(addr, tls.clone()).await.unwrap();
    let mut old = Raw::new(stream, ProtocolVersion::V3_1_1);
    let connect = packets::anonymous(ProtocolVersion::V3_1_1, "old");
    assert_eq!(old.connect(&connect).await, Some(ReasonCode::SUCCESS));

    let renewed = pki.ca.server();
    renewed.write(pki.dir.path(), "server");
    server.reload().unwrap();

    let stream = certs::tls_connect(addr, tls).await.unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, renewed.der());
    old.send(&Packet::PingReq).await.unwrap();
    assert_eq!(old.recv().await, Some(Packet::PingResp));
    server.shutdown().await;
}

#[tokio::test]
async fn failed_reload_keeps_the_previous_certificate() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(false)]).await;
    let original = std::fs::read_to_string(&pki.server_cert).unwrap();
    certs::write(pki.dir.path(), "server.key", "not a key");
    let error = server.reload().unwrap_err();
    assert!(error.to_string().contains("server.key"), "{error}");
    let tls = certs::client_config(&pki.ca.cert, None);
    let stream = certs::tls_connect(server.local_addrs()[0], tls)
        .await
        .unwrap();
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let original: rustls::pki_types::CertificateDer =
        rustls::pki_types::pem::PemObject::from_pem_slice(original.as_bytes()).unwrap();
    assert_eq!(presented, original);
    server.shutdown().await;
}

#[tokio::test]
async fn changed_certificate_files_are_picked_up_without_a_signal() {
    let pki = Pki::new();
    let server = start(vec![pki.listener(false)]).await;
    let renewed = pki.ca.server();
    renewed.write(pki.dir.path(), "server");
    let tls = certs::client_config(&pki.ca.cert, None);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stream = certs::tls_connect(server.local_addrs()[0], tls.clone())
            .await
            .unwrap();
        if stream.get_ref().1.peer_certificates().unwrap()[0] == renewed.der() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.shutdown().await;
}

/// The whole binary: start it with a TLS listener, replace the certificate, SIGHUP.
#[tokio::test]
async fn sighup_reloads_the_certificate_of_a_running_broker() {
    let pki = Pki::new();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let config = format!(
        "[[listeners]]\nbind = \"127.0.0.1:{port}\"\nkind = \"tls\"\ncert = {:?}\nkey = {:?}\n[storage]\ndir = {:?}\n",
        pki.server_cert,
        pki.server_key,
        pki.dir.path().join("data"),
    );
    let config_file = certs::write(pki.dir.path(), "rookery.toml", &config);
    let mut broker = tokio::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("--config")
        .arg(&config_file)
        .env("ROOKERY_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let tls = certs::client_config(&pki.ca.cert, None);
    let stream = loop {
        match certs::tls_connect(addr, tls.clone()).await {
            Ok(stream) => break stream,
            Err(_) => {
                let exited = broker.try_wait().unwrap();
                assert!(exited.is_none(), "the broker exited: {exited:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let mut old = Raw::new(stream, ProtocolVersion::V3_1_1);
    let connect = packets::anonymous(ProtocolVersion::V3_1_1, "old");
    assert_eq!(old.connect(&connect).await, Some(ReasonCode::SUCCESS));

    let renewed = pki.ca.server();
    renewed.write(pki.dir.path(), "server");
    let pid = broker.id().unwrap().to_string();
    let status = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
    assert!(status.success());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stream = certs::tls_connect(addr, tls.clone()).await.unwrap();
        if stream.get_ref().1.peer_certificates().unwrap()[0] == renewed.der() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    old.send(&Packet::PingReq).await.unwrap();
    assert_eq!(old.recv().await, Some(Packet::PingResp));
    broker.kill().await.unwrap();
}
