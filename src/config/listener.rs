//! `[[listeners]]`: where the broker accepts clients, over which transport, and
//! with which TLS material.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Error;

/// The transport of a listener.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ListenerKind {
    /// Plain MQTT over TCP.
    #[default]
    Tcp,
    /// MQTT over TLS (needs `cert` and `key`).
    Tls,
    /// MQTT over WebSocket (subprotocol `mqtt`, binary frames).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerKind {
    /// The name the configuration uses: `tcp`, `tls`, `ws`, `wss`.
    pub fn name(self) -> &'static str {
        match self {
            ListenerKind::Tcp => "tcp",
            ListenerKind::Tls => "tls",
            ListenerKind::Ws => "ws",
            ListenerKind::Wss => "wss",
        }
    }

    /// Whether the listener speaks TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerKind::Tls | ListenerKind::Wss)
    }

    /// Whether the listener speaks WebSocket.
    pub fn is_websocket(self) -> bool {
        matches!(self, ListenerKind::Ws | ListenerKind::Wss)
    }
}

/// The oldest TLS version a listener accepts.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    /// TLS 1.3 only.
    #[serde(rename = "1.3")]
    V1_3,
}

/// One listening socket. The TLS keys apply to `tls` and `wss` listeners, `path` to
/// `ws` and `wss`; `validate` refuses them elsewhere rather than ignoring them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address and port; port 0 picks a free one.
    pub bind: SocketAddr,
    /// Transport.
    pub kind: ListenerKind,
    /// PEM server certificate chain, leaf first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert` (PKCS#8, PKCS#1 or SEC1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// PEM bundle of the CAs that client certificates must chain to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (mutual TLS); needs `client_ca`.
    /// Without it, a certificate is checked if the client offers one.
    pub require_client_cert: bool,
    /// PEM certificate revocation lists for client certificates; needs `client_ca`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crl: Option<PathBuf>,
    /// Oldest TLS version accepted: `"1.2"` or `"1.3"`.
    pub min_tls_version: TlsVersion,
    /// The client certificate's Common Name becomes the username and the password
    /// is not checked (mosquitto's `use_identity_as_username`); needs `require_client_cert`.
    pub identity_as_username: bool,
    /// HTTP path of a `ws`/`wss` listener.
    pub path: String,
}

impl Default for ListenerConfig {
    fn default() -> ListenerConfig {
        ListenerConfig {
            bind: SocketAddr::from(([127, 0, 0, 1], 1883)),
            kind: ListenerKind::Tcp,
            cert: None,
            key: None,
            client_ca: None,
            require_client_cert: false,
            crl: None,
            min_tls_version: TlsVersion::default(),
            identity_as_username: false,
            path: "/mqtt".to_string(),
        }
    }
}

impl ListenerConfig {
    pub(super) fn validate(&self) -> Result<(), Error> {
        let invalid =
            |reason: &str| Err(Error::Invalid(format!("listener {}: {reason}", self.bind)));
        let has_tls_options = self.cert.is_some()
            || self.key.is_some()
            || self.client_ca.is_some()
            || self.crl.is_some()
            || self.require_client_cert
            || self.identity_as_username;
        if !self.kind.is_tls() && has_tls_options {
            return invalid("TLS options need kind = \"tls\" or \"wss\"");
        }
        if self.kind.is_tls() && (self.cert.is_none() || self.key.is_none()) {
            return invalid("a TLS listener needs `cert` and `key`");
        }
        if (self.require_client_cert || self.crl.is_some()) && self.client_ca.is_none() {
            return invalid("`require_client_cert` and `crl` need `client_ca`");
        }
        if self.identity_as_username && !self.require_client_cert {
            return invalid("`identity_as_username` needs `require_client_cert = true`");
        }
        if !self.path.starts_with('/') {
            return invalid("`path` must start with `/`");
        }
        Ok(())
    }
}
