//! Reload without restart: the certificates, CA bundles and CRLs of every TLS
//! listener, and the password and ACL files.
//!
//! A reload is asked for by SIGHUP (`main.rs` calls [`crate::Server::reload`]) or
//! happens by itself when one of those files changes: their modification times and
//! sizes are polled every [`WATCH_INTERVAL`]. Each part is rebuilt whole and then
//! swapped in atomically. A part that fails to load keeps its previous version and
//! the failure is logged, so a half-written file never takes the broker down.
//! Connections are not touched: they keep their TLS session, and their next ACL
//! check uses the new policy. The configuration file itself is not re-read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::tls::TlsListener;
use crate::auth::{AclFile, Authenticator, PasswordFile};
use crate::broker::Broker;
use crate::config::AuthConfig;
use crate::server::Error;

/// How often the watched files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Some parts could not be reloaded; each kept its previous version.
#[derive(Debug, thiserror::Error)]
#[error("reload failed, previous version kept: {}", failures.join("; "))]
pub struct ReloadError {
    /// One message per part that failed.
    pub failures: Vec<String>,
}

/// Everything a reload rebuilds.
#[derive(Debug)]
pub(crate) struct Reloader {
    pub(crate) tls: Vec<(SocketAddr, Arc<TlsListener>)>,
    pub(crate) auth: AuthConfig,
    pub(crate) broker: Arc<Broker>,
}

impl Reloader {
    /// Reloads every part, keeping the old version of each part that fails.
    pub(crate) fn reload(&self) -> Result<(), ReloadError> {
        let mut failures = Vec::new();
        for (addr, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => info!(%addr, "TLS certificates reloaded"),
                Err(error) => {
                    warn!(%addr, %error, "TLS reload failed; keeping the previous certificates");
                    failures.push(format!("listener {addr}: {error}"));
                }
            }
        }
        match load_authenticator(&self.auth) {
            Ok(authenticator) => {
                self.broker.set_authenticator(Arc::new(authenticator));
                info!("password and ACL files reloaded");
            }
            Err(error) => {
                warn!(%error, "auth reload failed; keeping the previous password and ACL files");
                failures.push(error.to_string());
            }
        }
        match failures.is_empty() {
            true => Ok(()),
            false => Err(ReloadError { failures }),
        }
    }

    fn watched_files(&self) -> Vec<PathBuf> {
        let tls_files = self.tls.iter().flat_map(|(_, tls)| tls.watched_files());
        let auth_files = [&self.auth.password_file, &self.auth.acl_file]
            .into_iter()
            .flatten()
            .cloned();
        tls_files.chain(auth_files).collect()
    }

    /// A task that reloads whenever a watched file changes, until shutdown. The
    /// files are looked at now, not when the task first runs, so that a change
    /// made right after start-up is not mistaken for the starting state.
    pub(crate) fn watch(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> impl std::future::Future<Output = ()> {
        let files = self.watched_files();
        let mut seen = stamps(&files);
        async move {
            if files.is_empty() {
                return;
            }
            let mut interval = tokio::time::interval(WATCH_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = interval.tick() => {}
                    () = shutdown.cancelled() => return,
                }
                let current = stamps(&files);
                if current != seen {
                    // Recorded even if the reload fails: the next change (say, the
                    // key written after the certificate) triggers another attempt.
                    seen = current;
                    info!("a certificate, password or ACL file changed; reloading");
                    let _ = self.reload();
                }
            }
        }
    }
}

/// Modification time and size of each file; `None` for a file that is missing.
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|path| {
            let metadata = std::fs::metadata(path).ok()?;
            Some((metadata.modified().ok()?, metadata.len()))
        })
        .collect()
}

/// Reads the password and ACL files named in `config`.
pub(crate) fn load_authenticator(config: &AuthConfig) -> Result<Authenticator, Error> {
    let auth_error = |key: &'static str, path: &PathBuf| {
        let path = path.clone();
        move |source| Error::Auth { key, path, source }
    };
    let passwords = match &config.password_file {
        Some(path) => {
            Some(PasswordFile::load(path).map_err(auth_error("auth.password_file", path))?)
        }
        None => None,
    };
    let acl = match &config.acl_file {
        Some(path) => Some(AclFile::load(path).map_err(auth_error("auth.acl_file", path))?),
        None => None,
    };
    Ok(Authenticator::new(
        config.is_anonymous_allowed(),
        passwords,
        acl,
    ))
}
