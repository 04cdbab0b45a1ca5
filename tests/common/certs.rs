//! A throw-away PKI made with rcgen at test time (no private keys are committed):
//! CAs, a server certificate for localhost/127.0.0.1, client certificates, CRLs,
//! and a TLS client to try them with.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams,
    SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct KeyCert {
    pub cert: String,
    pub key: String,
    pub serial: Vec<u8>,
}

impl KeyCert {
    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert.as_bytes()).unwrap()
    }

    /// Writes `<name>.crt` and `<name>.key` into `dir`.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = write(dir, &format!("{name}.crt"), &self.cert);
        let key = write(dir, &format!("{name}.key"), &self.key);
        (cert, key)
    }
}

/// A certificate authority that signs server and client certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pub cert: String,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.distinguished_name = named(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            cert,
        }
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server(&self) -> KeyCert {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name = named("localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A client certificate whose Common Name is `common_name`.
    pub fn client(&self, common_name: &str) -> KeyCert {
        self.sign(client_params(common_name))
    }

    /// A client certificate that expired in 2001.
    pub fn expired_client(&self, common_name: &str) -> KeyCert {
        let mut params = client_params(common_name);
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        self.sign(params)
    }

    /// A PEM CRL that revokes `revoked`.
    pub fn crl(&self, revoked: &[&KeyCert]) -> String {
        let params = CertificateRevocationListParams {
            this_update: rcgen::date_time_ymd(2020, 1, 1),
            next_update: rcgen::date_time_ymd(2100, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|cert| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&cert.serial),
                    revocation_time: rcgen::date_time_ymd(2020, 1, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).unwrap().pem().unwrap()
    }

    fn sign(&self, mut params: CertificateParams) -> KeyCert {
        let serial: Vec<u8> = std::iter::once(0x01)
            .chain((0..15).map(|_| fastrand::u8(..)))
            .collect();
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        KeyCert {
            cert: cert.pem(),
            key: key.serialize_pem(),
            serial,
        }
    }
}

fn named(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Rookery tests");
    name.push(DnType::CommonName, common_name);
    name
}

fn client_params(common_name: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = named(common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A CA, a server certificate and two clients (`device-1`, `device-2`) on disk.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub ca_file: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub device_1: KeyCert,
    pub device_2: KeyCert,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Rookery test CA");
        let ca_file = write(dir.path(), "ca.crt", &ca.cert);
        let (server_cert, server_key) = ca.server().write(dir.path(), "server");
        let device_1 = ca.client("device-1");
        let device_2 = ca.client("device-2");
        Pki {
            dir,
            ca,
            ca_file,
            server_cert,
            server_key,
            device_1,
            device_2,
        }
    }

    /// A `tls` listener on 127.0.0.1:0 with this PKI's server certificate; mutual
    /// TLS against this CA when `require_client_cert`.
    pub fn listener(&self, require_client_cert: bool) -> rookery::config::ListenerConfig {
        rookery::config::ListenerConfig {
            bind: "127.0.0.1:0".parse().unwrap(),
            kind: rookery::config::ListenerKind::Tls,
            cert: Some(self.server_cert.clone()),
            key: Some(self.server_key.clone()),
            client_ca: require_client_cert.then(|| self.ca_file.clone()),
            require_client_cert,
            ..Default::default()
        }
    }
}

/// A rustls client that trusts `ca_pem` and presents `client`, if given.
pub fn client_config(ca_pem: &str, client: Option<&KeyCert>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match client {
        Some(client) => builder
            .with_client_auth_cert(
                vec![client.der()],
                PrivateKeyDer::from_pem_slice(client.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    }
}

/// Connects and runs the TLS handshake as `localhost`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let stream = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), stream)
        .await
}

/// Packets for tests that speak MQTT by hand over any transport.
pub mod packets {
    use bytes::Bytes;
    use bytestring::ByteString;
    use rookery::protocol::{
        Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS, Subscribe,
        SubscriptionOptions, Will,
    };

    pub fn connect(version: ProtocolVersion, client_id: &str) -> Connect {
        Connect {
            version,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteString::from(client_id),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        }
    }

    pub fn login(version: ProtocolVersion, client_id: &str, user: &str, password: &str) -> Packet {
        let mut connect = connect(version, client_id);
        connect.username = Some(ByteString::from(user));
        connect.password = Some(Bytes::copy_from_slice(password.as_bytes()));
        Packet::Connect(Box::new(connect))
    }

    pub fn anonymous(version: ProtocolVersion, client_id: &str) -> Packet {
        Packet::Connect(Box::new(connect(version, client_id)))
    }

    pub fn with_will(packet: Packet, topic: &str) -> Packet {
        let Packet::Connect(mut connect) = packet else {
            panic!("not a CONNECT")
        };
        connect.will = Some(Will {
            topic: ByteString::from(topic),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: Properties::default(),
        });
        Packet::Connect(connect)
    }

    pub fn subscribe(id: u16, filter: &str, qos: QoS) -> Packet {
        Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(id).unwrap(),
            filters: vec![(
                ByteString::from(filter),
                SubscriptionOptions {
                    qos,
                    ..Default::default()
                },
            )],
            properties: Properties::default(),
        })
    }

    pub fn publish(id: u16, topic: &str, qos: QoS, retain: bool, payload: &str) -> Packet {
        Packet::Publish(Publish {
            dup: false,
            qos,
            retain,
            topic: ByteString::from(topic),
            packet_id: PacketId::new(id).filter(|_| qos != QoS::AtMostOnce),
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
        })
    }
}

/// A packet-level client over any byte stream (TLS, WebSocket adapters, TCP).
pub struct Raw<S> {
    pub stream: S,
    buf: bytes::BytesMut,
    pub version: rookery::protocol::ProtocolVersion,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Raw<S> {
    pub fn new(stream: S, version: rookery::protocol::ProtocolVersion) -> Raw<S> {
        Raw {
            stream,
            buf: bytes::BytesMut::new(),
            version,
        }
    }

    pub async fn send(&mut self, packet: &rookery::protocol::Packet) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut out = bytes::BytesMut::new();
        rookery::protocol::encode(packet, self.version, &mut out);
        self.stream.write_all(&out).await?;
        self.stream.flush().await
    }

    /// The next packet; `None` if the connection closed or failed.
    pub async fn recv(&mut self) -> Option<rookery::protocol::Packet> {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(super::WAIT, async {
            loop {
                if let Some(packet) =
                    rookery::protocol::decode(&mut self.buf, self.version, usize::MAX).unwrap()
                {
                    return Some(packet);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }

    /// Sends CONNECT and returns the CONNACK's reason code (v3 codes arrive as
    /// their v5 equivalents); `None` if the connection ended instead.
    pub async fn connect(
        &mut self,
        connect: &rookery::protocol::Packet,
    ) -> Option<rookery::protocol::ReasonCode> {
        if self.send(connect).await.is_err() {
            return None;
        }
        match self.recv().await {
            Some(rookery::protocol::Packet::ConnAck(connack)) => Some(connack.code),
            Some(other) => panic!("expected CONNACK, got {other:?}"),
            None => None,
        }
    }
}
