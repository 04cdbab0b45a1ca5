//! Broker configuration: a TOML file, overridden by `ROOKERY_…` environment
//! variables and command-line flags, with a [`Default`] that is a runnable broker.
//!
//! Each module receives only its own section (`limits`, `storage`, …), never the
//! whole `Config`, so that what a module depends on is visible in its signature.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod cluster;
mod listener;
pub use cluster::ClusterConfig;
pub use listener::{ListenerConfig, ListenerKind, TlsVersion};

/// Why a configuration could not be loaded. Each says where: the file and line,
/// or the environment variable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {}", shown(path), in_words(source))]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not TOML, or does not describe a `Config` (an unknown key, a bad value).
    #[error("{file}{}: {message}", line.map_or_else(String::new, |line| format!(", line {line}")))]
    File {
        /// The file as named on the command line, or "configuration" for text.
        file: String,
        /// The 1-based line of the error, if known.
        line: Option<usize>,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment override does not fit the configuration's shape.
    #[error("environment variable {0}: does not name a configuration key")]
    Env(String),
    /// An environment override names a key but its value does not fit.
    #[error("environment variable {name}: {message}")]
    EnvValue {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The values are individually valid but do not make a broker.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole broker configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where clients connect. Any number of each kind.
    pub listeners: Vec<ListenerConfig>,
    /// Where state is kept.
    pub storage: StorageConfig,
    /// Resource limits, all enforced.
    pub limits: Limits,
    /// Session rules.
    pub session: SessionConfig,
    /// Choices the MQTT specification leaves to the server.
    pub mqtt: MqttConfig,
    /// The `$SYS` topics.
    pub metrics: MetricsConfig,
    /// Who may connect and what they may do.
    pub auth: AuthConfig,
    /// What the broker logs, and how.
    pub log: LogConfig,
    /// The server process itself.
    pub server: ServerConfig,
    /// The optional HTTP listener: Prometheus metrics and health.
    pub http: HttpConfig,
    /// The NATS JetStream cluster this node belongs to; absent, a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listeners: vec![ListenerConfig::default()],
            storage: StorageConfig::default(),
            limits: Limits::default(),
            session: SessionConfig::default(),
            mqtt: MqttConfig::default(),
            metrics: MetricsConfig::default(),
            auth: AuthConfig::default(),
            log: LogConfig::default(),
            server: ServerConfig::default(),
            http: HttpConfig::default(),
            cluster: None,
        }
    }
}

/// Authentication and authorization, with mosquitto's file formats.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether clients without a username may connect. Unset: allowed exactly when
    /// there is no `password_file`, so a fresh broker is open and adding a password
    /// file closes it (mosquitto 2 also refuses anonymous clients by default, but
    /// only on non-local listeners).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_anonymous: Option<bool>,
    /// Mosquitto password file (`user:$7$…`, `$6$`, `$argon2id$`; `rookery passwd` writes one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// Mosquitto ACL file; without one, every client that may connect may do anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acl_file: Option<PathBuf>,
}

impl AuthConfig {
    /// `allow_anonymous`, with its default applied.
    pub fn is_anonymous_allowed(&self) -> bool {
        self.allow_anonymous.unwrap_or(self.password_file.is_none())
    }
}

/// Where and how state is stored.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// Data directory.
    pub dir: PathBuf,
    /// What an acknowledgement survives.
    pub durability: Durability,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            dir: PathBuf::from("data"),
            durability: Durability::default(),
        }
    }
}

/// What an acknowledged message (PUBACK, PUBREC, SUBACK, CONNACK) survives.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// A crash of the broker process (`kill -9`): each write reaches the OS before
    /// the acknowledgement, but is not fsynced.
    #[default]
    Process,
    /// Power loss too: acknowledgements wait for an fsync, which concurrent
    /// connections share (group commit).
    Fsync,
    /// Nothing survives a restart; state is kept in memory only.
    Memory,
}

/// Resource limits. Each is enforced; each has a default that keeps one
/// misbehaving client from hurting the others.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest packet accepted or sent, fixed header included, in bytes.
    pub max_packet_size: u32,
    /// Outbound QoS 1/2 messages awaiting acknowledgement per client; a v5 client's
    /// Receive Maximum lowers it further.
    pub max_inflight: u16,
    /// Inbound QoS 1/2 messages a v5 client may have unacknowledged: our Receive Maximum.
    pub receive_maximum: u16,
    /// Messages waiting for one client (offline, or online behind a full window);
    /// past it new messages for that client are dropped and counted. 0: no limit.
    pub max_queued_messages: usize,
    /// Simultaneous connections; past it new ones are closed at accept. 0: no limit.
    pub max_connections: usize,
    /// Topic Alias Maximum announced to v5 clients (inbound aliases). 0 disables them.
    pub topic_alias_maximum: u16,
    /// Time a new connection has, from the accept, to finish its TLS handshake,
    /// its WebSocket upgrade and its CONNECT, all together.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// If set, clients asking for a longer keep-alive (or none) get this one (v5 Server Keep Alive).
    #[serde(with = "humantime_serde")]
    pub max_keep_alive: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_packet_size: 1024 * 1024,
            max_inflight: 100,
            receive_maximum: 100,
            max_queued_messages: 1000,
            max_connections: 0,
            topic_alias_maximum: 64,
            connect_timeout: Duration::from_secs(10),
            max_keep_alive: None,
        }
    }
}

/// Rules for sessions that outlive their connection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// How long a 3.x persistent session (clean session 0) is kept while offline.
    /// Unset: forever, as the 3.1.1 spec says (mosquitto's `persistent_client_expiration`).
    #[serde(with = "humantime_serde")]
    pub persistent_client_expiration: Option<Duration>,
    /// Upper bound on the Session Expiry Interval a v5 client may ask for.
    #[serde(with = "humantime_serde")]
    pub max_session_expiry: Option<Duration>,
    /// Queue QoS 0 messages for offline persistent sessions too (mosquitto's `queue_qos0_messages`).
    pub queue_qos0_messages: bool,
}

/// Choices the MQTT specification leaves to the server.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// v5: answer a QoS 1/2 PUBLISH that no subscription matched with PUBACK/PUBREC
    /// 0x10 (No matching subscribers) rather than 0x00 (Success). Off by default:
    /// the message was accepted either way, and clients that treat any non-zero
    /// reason code as a failure would otherwise report an error.
    pub no_subscribers_reason: bool,
}

/// The optional HTTP listener: `GET /metrics` (Prometheus), `GET /health`, and the
/// admin API under `/api/v1/` when `admin_token` is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address and port; unset, there is no HTTP listener.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind: Option<SocketAddr>,
    /// Bearer token of the admin API (`/api/v1/`); unset, the API is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

/// The server process itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// At shutdown, how long clients get to read their DISCONNECT (and the broker
    /// to write what they were owed) before connections that do not read are dropped.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

/// The log (see README, Operations). Which levels are shown is `ROOKERY_LOG`'s
/// business (an `EnvFilter`), not the file's, so that one environment variable
/// turns on debugging whatever the file says.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `"text"` for people, `"json"` (one object per line) for log collectors.
    pub format: LogFormat,
    /// One line per client connect, refusal and disconnect (mosquitto's `connection_messages`).
    pub connection_messages: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: LogFormat::Text,
            connection_messages: true,
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-01-01T00:00:00Z  INFO rookery::connection_log: client connected peer=…`
    #[default]
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// The `$SYS/broker/…` topics (mosquitto's `sys_interval`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// How often the counters are published under `$SYS/broker/`; unset disables them.
    #[serde(with = "humantime_serde")]
    pub sys_interval: Option<Duration>,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            sys_interval: Some(Duration::from_secs(10)),
        }
    }
}

impl Config {
    /// Parses a TOML document, then applies `ROOKERY_…` overrides from `env`.
    ///
    /// An override names a key path with `__` between levels:
    /// `ROOKERY_LIMITS__MAX_INFLIGHT=50`, `ROOKERY_STORAGE__DIR=/var/lib/rookery`.
    /// The value is read as a TOML value, or as a string if it is not one.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        Config::parse_file(text, env, "configuration")
    }

    /// Reads and parses a file (see [`Config::parse`]).
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse_file(&text, env, &path.display().to_string())
    }

    /// The file is deserialized from its text first, so that an error has a line;
    /// then each override is applied and checked in turn, so that an error names
    /// its variable.
    fn parse_file(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        file: &str,
    ) -> Result<Config, Error> {
        let mut config: Config =
            toml::from_str(text).map_err(|error| file_error(file, text, &error))?;
        let mut document: Option<toml::Table> = None;
        for (name, value) in env {
            // Only `SECTION__KEY` names are overrides: `ROOKERY_LOG` and friends are not.
            let Some(path) = name
                .strip_prefix("ROOKERY_")
                .filter(|path| path.contains("__"))
            else {
                continue;
            };
            let document = match &mut document {
                Some(document) => document,
                None => document
                    .insert(toml::from_str(text).map_err(|error| file_error(file, text, &error))?),
            };
            let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
            set_path(document, &keys, parse_value(&value))
                .map_err(|()| Error::Env(name.clone()))?;
            config = document
                .clone()
                .try_into()
                .map_err(|error: toml::de::Error| Error::EnvValue {
                    name: name.clone(),
                    message: one_line(error.message()),
                })?;
        }
        config.validate().map_err(|error| match error {
            Error::Invalid(message) => Error::File {
                file: file.to_string(),
                line: None,
                message,
            },
            other => other,
        })?;
        Ok(config)
    }

    /// Checks relations between values that serde cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        if self.listeners.is_empty() {
            return Err(Error::Invalid("at least one listener is needed".into()));
        }
        for listener in &self.listeners {
            listener.validate()?;
        }
        if self.limits.max_packet_size < 128 {
            return Err(Error::Invalid(
                "limits.max_packet_size must be at least 128 bytes".into(),
            ));
        }
        if self.limits.max_packet_size > 268_435_455 {
            return Err(Error::Invalid(
                "limits.max_packet_size is at most 268435455 bytes".into(),
            ));
        }
        if self.limits.max_inflight == 0 || self.limits.receive_maximum == 0 {
            return Err(Error::Invalid(
                "limits.max_inflight and limits.receive_maximum must be at least 1".into(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            cluster.validate()?;
        }
        Ok(())
    }
}

/// A TOML error as one line: the line number, and the key as `section.key`.
fn file_error(file: &str, text: &str, error: &toml::de::Error) -> Error {
    let Some(start) = error.span().map(|span| span.start) else {
        return Error::File {
            file: file.to_string(),
            line: None,
            message: one_line(error.message()),
        };
    };
    let before = text.get(..start).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    // The section is the last `[header]` above the error; the key is what precedes `=`.
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| line.starts_with('['))
        .map(|header| header.trim_matches(['[', ']']).trim().to_string());
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|line| line.split_once('='))
        .map(|(key, _)| key.trim().to_string());
    let name = match (section, key) {
        (Some(section), Some(key)) => format!("`{section}.{key}`: "),
        (None, Some(key)) => format!("`{key}`: "),
        _ => String::new(),
    };
    Error::File {
        file: file.to_string(),
        line: Some(line),
        message: format!("{name}{}", one_line(error.message())),
    }
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

/// A path as an error message shows it: a relative path with the directory it was
/// resolved against (the working directory), so that "data" is not a riddle.
pub fn shown(path: &Path) -> String {
    if path.is_absolute() {
        return path.display().to_string();
    }
    match std::env::current_dir() {
        Ok(cwd) => format!("{} (relative to {})", path.display(), cwd.display()),
        Err(_) => path.display().to_string(),
    }
}

/// An I/O error in words: "permission denied", not "Permission denied (os error 13)".
pub fn in_words(error: &std::io::Error) -> String {
    let text = error.to_string();
    let text = match text.find(" (os error ") {
        Some(end) => text.get(..end).unwrap_or(&text).to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

fn parse_value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut table| table.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_string()))
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), ()> {
    match keys {
        [] => Err(()),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [key, rest @ ..] => {
            let entry = table
                .entry(key.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(inner) => set_path(inner, rest, value),
                _ => Err(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default_broker() {
        assert_eq!(Config::parse("", []).unwrap(), Config::default());
    }

    #[test]
    fn file_values_and_env_overrides() {
        let text = "[[listeners]]\nbind = \"0.0.0.0:1884\"\n[limits]\nmax_inflight = 7\nconnect_timeout = \"3s\"\n";
        let env = [
            (
                "ROOKERY_LIMITS__MAX_QUEUED_MESSAGES".to_string(),
                "5".to_string(),
            ),
            ("ROOKERY_STORAGE__DIR".to_string(), "/tmp/x".to_string()),
            ("PATH".to_string(), "/bin".to_string()),
            ("ROOKERY_LOG".to_string(), "debug".to_string()),
        ];
        let config = Config::parse(text, env).unwrap();
        assert_eq!(config.listeners[0].bind.port(), 1884);
        assert_eq!(config.limits.max_inflight, 7);
        assert_eq!(config.limits.connect_timeout, Duration::from_secs(3));
        assert_eq!(config.limits.max_queued_messages, 5);
        assert_eq!(config.storage.dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn issue_8_no_subscribers_reason_is_off_by_default_and_configurable() {
        assert!(!Config::default().mqtt.no_subscribers_reason);
        let config = Config::parse("[mqtt]\nno_subscribers_reason = true\n", []).unwrap();
        assert!(config.mqtt.no_subscribers_reason);
        let env = [(
            "ROOKERY_MQTT__NO_SUBSCRIBERS_REASON".to_string(),
            "true".to_string(),
        )];
        assert!(Config::parse("", env).unwrap().mqtt.no_subscribers_reason);
    }

    #[test]
    fn documented_config_file_states_the_defaults() {
        let documented = Config::parse(include_str!("../../config/rookery.toml"), []).unwrap();
        assert_eq!(documented, Config::default());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Config::parse("[limits]\nmax_inflite = 3\n", []).is_err());
    }

    #[test]
    fn mtls_example_config_parses() {
        let config = Config::parse(include_str!("../../config/mtls.toml"), []).unwrap();
        let kinds: Vec<ListenerKind> = config.listeners.iter().map(|l| l.kind).collect();
        assert_eq!(
            kinds,
            [ListenerKind::Tls, ListenerKind::Wss, ListenerKind::Tcp]
        );
        assert!(config.listeners[0].identity_as_username);
        assert_eq!(config.listeners[1].path, "/mqtt");
        assert!(!config.auth.is_anonymous_allowed());
    }

    #[test]
    fn tls_listeners_need_their_files() {
        let tls = "[[listeners]]\nkind = \"tls\"\ncert = \"c\"\nkey = \"k\"\n";
        assert!(Config::parse(tls, []).is_ok());
        assert!(Config::parse("[[listeners]]\nkind = \"wss\"\ncert = \"c\"\n", []).is_err());
        // TLS options on a plain listener are refused rather than ignored.
        assert!(Config::parse("[[listeners]]\ncert = \"c\"\nkey = \"k\"\n", []).is_err());
        let mtls_without_ca = format!("{tls}require_client_cert = true\n");
        assert!(Config::parse(&mtls_without_ca, []).is_err());
        let identity_without_mtls =
            format!("{tls}client_ca = \"ca\"\nidentity_as_username = true\n");
        assert!(Config::parse(&identity_without_mtls, []).is_err());
        assert!(Config::parse(&format!("{tls}min_tls_version = \"1.1\"\n"), []).is_err());
        assert!(Config::parse("[[listeners]]\nkind = \"ws\"\npath = \"mqtt\"\n", []).is_err());
    }

    #[test]
    fn anonymous_access_defaults_to_open_only_without_a_password_file() {
        assert!(AuthConfig::default().is_anonymous_allowed());
        let closed = Config::parse("[auth]\npassword_file = \"p\"\n", []).unwrap();
        assert!(!closed.auth.is_anonymous_allowed());
        let open = Config::parse(
            "[auth]\npassword_file = \"p\"\nallow_anonymous = true\n",
            [],
        )
        .unwrap();
        assert!(open.auth.is_anonymous_allowed());
    }

    #[test]
    fn invalid_limits_are_rejected() {
        assert!(Config::parse("[limits]\nmax_inflight = 0\n", []).is_err());
        assert!(Config::parse("listeners = []\n", []).is_err());
    }
}
