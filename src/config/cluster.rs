//! `[cluster]`: the NATS JetStream cluster Rookery nodes run on. Absent, the
//! broker is a single node.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Error;

/// How this node reaches NATS, and how it names itself there.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// NATS server URLs (`nats://host:4222`, `tls://host:4222`); the client
    /// fails over between them.
    pub nats: Vec<String>,
    /// This node's name, unique in the cluster: letters, digits, `-` and `_`.
    pub node_id: String,
    /// NATS user name (with `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// NATS password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// NATS token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// A NATS credentials file (JWT and NKey seed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_file: Option<PathBuf>,
    /// CA bundle that signed the NATS servers' certificates; set, TLS is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// The JetStream stream that carries messages between nodes.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Copies of each message the stream keeps (the NATS cluster's size, up to 5).
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long a message waits in the stream for a node that is away.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub max_age: Duration,
    /// How long a node may be cut off from NATS before it disconnects its clients
    /// and refuses new ones: beyond it, another node may have taken its sessions
    /// over unseen. Heartbeats go five times per timeout.
    #[serde(default = "default_fencing_timeout", with = "humantime_serde")]
    pub fencing_timeout: Duration,
}

fn default_fencing_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_stream() -> String {
    "ROOKERY_MESSAGES".to_string()
}

fn default_replicas() -> usize {
    1
}

fn default_max_age() -> Duration {
    Duration::from_secs(3600)
}

/// Whether `name` may be a NATS subject token and a consumer name.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl ClusterConfig {
    /// A cluster of one node named `node_id` on the NATS servers `nats`, with the
    /// defaults for everything else.
    pub fn new(nats: Vec<String>, node_id: impl Into<String>) -> ClusterConfig {
        ClusterConfig {
            nats,
            node_id: node_id.into(),
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            tls_ca_file: None,
            stream: default_stream(),
            replicas: default_replicas(),
            max_age: default_max_age(),
            fencing_timeout: default_fencing_timeout(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), Error> {
        if self.nats.is_empty() {
            return Err(Error::Invalid(
                "cluster.nats needs at least one NATS server URL".into(),
            ));
        }
        if !is_name(&self.node_id) {
            return Err(Error::Invalid(format!(
                "cluster.node_id {:?} must be letters, digits, '-' and '_'",
                self.node_id
            )));
        }
        if !is_name(&self.stream) {
            return Err(Error::Invalid(format!(
                "cluster.stream {:?} must be letters, digits, '-' and '_'",
                self.stream
            )));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(Error::Invalid("cluster.replicas must be 1 to 5".into()));
        }
        if self.fencing_timeout < Duration::from_secs(1) {
            return Err(Error::Invalid(
                "cluster.fencing_timeout must be at least 1s".into(),
            ));
        }
        if self.password.is_some() != self.user.is_some() {
            return Err(Error::Invalid(
                "cluster.user and cluster.password go together".into(),
            ));
        }
        Ok(())
    }
}
