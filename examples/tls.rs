//! Mutual TLS end to end: a development CA, a broker whose `tls` listener requires
//! client certificates, and a client that presents one.
//!
//! `cargo run --example tls` (for files to keep, see `rookery gen-certs DIR`).

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rookery::config::{Durability, ListenerConfig, ListenerKind};
use rookery::{Config, Server};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, TlsConfiguration, Transport};

/// A certificate and key in PEM, signed by `issuer`.
fn issue(
    issuer: &Issuer<'_, KeyPair>,
    names: Vec<String>,
    cn: &str,
) -> anyhow::Result<(String, String)> {
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate()?;
    Ok((params.signed_by(&key, issuer)?.pem(), key.serialize_pem()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "example CA");
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let (server_cert, server_key) = issue(&issuer, vec!["localhost".into()], "localhost")?;
    let (client_cert, client_key) = issue(&issuer, vec![], "device-1")?;
    for (name, pem) in [
        ("ca.crt", &ca_pem),
        ("server.crt", &server_cert),
        ("server.key", &server_key),
    ] {
        std::fs::write(dir.path().join(name), pem)?;
    }

    // The broker: one listener, mutual TLS, the certificate's CN as the username.
    let mut config = Config::default();
    config.storage.durability = Durability::Memory;
    config.listeners = vec![ListenerConfig {
        bind: "127.0.0.1:0".parse()?,
        kind: ListenerKind::Tls,
        cert: Some(dir.path().join("server.crt")),
        key: Some(dir.path().join("server.key")),
        client_ca: Some(dir.path().join("ca.crt")),
        require_client_cert: true,
        identity_as_username: true,
        ..ListenerConfig::default()
    }];
    let server = Server::bind(config).await?;
    let port = server.local_addrs()[0].port();
    println!("mutual TLS listener on port {port}");

    // The device: trusts the CA and presents its own certificate.
    let mut options = MqttOptions::new("device-1", "localhost", port);
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: ca_pem.into_bytes(),
        alpn: None,
        client_auth: Some((client_cert.into_bytes(), client_key.into_bytes())),
    }));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe("devices/#", QoS::AtLeastOnce).await?;
    client
        .publish("devices/device-1/status", QoS::AtLeastOnce, false, "up")
        .await?;
    let received = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Incoming::Publish(publish)) = eventloop.poll().await? {
                return anyhow::Ok(publish);
            }
        }
    })
    .await??;
    println!(
        "received over mTLS on {}: {}",
        received.topic,
        String::from_utf8_lossy(&received.payload)
    );
    client.disconnect().await?;
    server.shutdown().await;
    Ok(())
}
