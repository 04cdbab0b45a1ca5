//! A running broker: the [`Server`] builds the broker on its seams, recovers
//! what storage kept, starts the listeners, the HTTP endpoint and the
//! housekeeping, and shuts it all down in order.
//!
//! [`Server::start`] takes listeners that are already bound, so tests and
//! embedders can bind `127.0.0.1:0` and ask which port they got (mini-redis's
//! `server::run`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::broker::message::Message;
use crate::broker::seam::{Seams, Standing, TakenElsewhere};
use crate::broker::sys::SysState;
use crate::broker::Broker;
use crate::cluster::{NatsFanout, NatsRetainStore, NatsSessionStore};
use crate::config::Config;
pub use crate::listener::reload::ReloadError;
use crate::listener::reload::{self, Reloader};
use crate::listener::tls;
use crate::listener::{accept_loop, Transport};
use crate::storage::Storage;

/// How often sessions are expired and delayed wills published.
const TICK: Duration = Duration::from_millis(250);
/// How often a node cut off from its cluster looks for clients to disconnect.
const CUT_OFF_SWEEP: Duration = Duration::from_secs(1);

/// Why the server could not start. Each message is one line that names what
/// failed and where (the address, the file and its key, the data directory).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// The data dir could not be opened or read.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// A listener could not be bound or inspected.
    #[error("cannot listen on {addr}: {}", crate::config::in_words(source))]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A TLS listener's certificate, key, CA bundle or CRL could not be loaded.
    #[error("TLS listener {addr}: {source}")]
    Tls {
        /// The listener's configured address.
        addr: SocketAddr,
        /// What is wrong.
        source: tls::Error,
    },
    /// The password or ACL file could not be loaded.
    #[error("{}", auth_error(key, path, source))]
    Auth {
        /// The configuration key that names the file (`auth.password_file`).
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: crate::auth::Error,
    },
}

/// "cannot read auth.password_file config/passwords (relative to /srv): permission denied"
fn auth_error(key: &str, path: &std::path::Path, error: &crate::auth::Error) -> String {
    let path = crate::config::shown(path);
    match error {
        crate::auth::Error::Io { source, .. } => {
            format!(
                "cannot read {key} {path}: {}",
                crate::config::in_words(source)
            )
        }
        crate::auth::Error::Parse { line, reason } => {
            format!("{key} {path}, line {line}: {reason}")
        }
    }
}

/// A running broker: its listeners, its connections and its housekeeping.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    local_addrs: Vec<SocketAddr>,
    /// Cancelled first: stop accepting, and every connection says goodbye.
    shutdown: CancellationToken,
    /// Cancelled `shutdown_timeout` later: connections still running are dropped.
    hard_stop: CancellationToken,
    shutdown_timeout: Duration,
    /// Where the HTTP listener is bound, if there is one.
    http_addr: Option<SocketAddr>,
    tasks: TaskTracker,
    reloader: Arc<Reloader>,
}

impl Server {
    /// Binds every listener of `config` and starts serving.
    pub async fn bind(config: Config) -> Result<Server, Error> {
        config.validate()?;
        let mut listeners = Vec::new();
        for listener in &config.listeners {
            let addr = listener.bind;
            let bound = TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })?;
            listeners.push(bound);
        }
        Server::start(config, listeners)
    }

    /// Serves on listeners that are already bound, in configuration order:
    /// `listeners[i]` speaks what `config.listeners[i]` says (TLS files are loaded
    /// here); listeners beyond the configured ones speak plain TCP.
    /// Must be called inside a tokio runtime.
    pub fn start(config: Config, listeners: Vec<TcpListener>) -> Result<Server, Error> {
        config.validate()?;
        // Everything that can fail without touching the disk goes first, so that a
        // start-up that fails leaves no data directory behind.
        let authenticator = reload::load_authenticator(&config.auth)?;
        let transports = load_transports(&config, &listeners)?;
        let http = config.http.bind.map(bind_http).transpose()?;
        let storage = Storage::open(&config.storage)?;
        let mut seams = Seams::from(storage);
        if let Some(cluster) = &config.cluster {
            seams.fanout = Arc::new(NatsFanout::start(cluster.clone()));
            seams.retained = Arc::new(NatsRetainStore::start(cluster.clone()));
            seams.sessions = Arc::new(NatsSessionStore::start(cluster.clone(), seams.sessions));
        }
        let broker = Arc::new(
            Broker::new(config.limits.clone(), config.session.clone(), seams)
                .with_mqtt(config.mqtt.clone()),
        );
        broker.set_logging_connections(config.log.connection_messages);
        broker.set_authenticator(Arc::new(authenticator));
        let mut reloader = Reloader {
            tls: Vec::new(),
            auth: config.auth.clone(),
            broker: broker.clone(),
        };
        let recovery = broker.recover(Instant::now())?;
        info!(
            sessions = recovery.sessions,
            subscriptions = recovery.subscriptions,
            retained = recovery.retained,
            "storage recovered"
        );
        let shutdown = CancellationToken::new();
        let hard_stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let permits = match config.limits.max_connections {
            0 => Semaphore::MAX_PERMITS,
            n => n,
        };
        let connections = Arc::new(Semaphore::new(permits));
        let mut local_addrs = Vec::new();
        for (listener, (addr, transport)) in listeners.into_iter().zip(transports) {
            if let Some(tls) = &transport.tls {
                reloader.tls.push((addr, tls.clone()));
            }
            info!(listener = %transport.name, "listening");
            local_addrs.push(addr);
            let accept = accept_loop(
                listener,
                Arc::new(transport),
                broker.clone(),
                connections.clone(),
                (shutdown.clone(), hard_stop.clone()),
                tasks.clone(),
            );
            tasks.spawn(accept);
        }
        tasks.spawn(tick_loop(
            broker.clone(),
            config.metrics.sys_interval,
            shutdown.clone(),
        ));
        if let Some(inbound) = broker.take_remote_inbound() {
            tasks.spawn(route_remote(broker.clone(), inbound, shutdown.clone()));
        }
        if let Some(taken) = broker.take_sessions_taken_elsewhere() {
            tasks.spawn(release_taken(
                broker.clone(),
                taken,
                tasks.clone(),
                shutdown.clone(),
            ));
        }
        if let Some(standing) = broker.standing() {
            tasks.spawn(cut_off_when_isolated(
                broker.clone(),
                standing,
                shutdown.clone(),
            ));
        }
        if let Some(changes) = broker.watch_retained() {
            tasks.spawn(mirror_retained(broker.clone(), changes, shutdown.clone()));
        }
        let reloader = Arc::new(reloader);
        tasks.spawn(reloader.clone().watch(shutdown.clone()));
        let http_addr = match http {
            Some((listener, addr)) => {
                info!(listener = %format!("http {addr}"), "listening");
                let serve = crate::http::serve(
                    listener,
                    broker.clone(),
                    crate::http::Admin {
                        token: config.http.admin_token.clone(),
                        reload: {
                            let reloader = reloader.clone();
                            Box::new(move || reloader.reload().map_err(|error| error.to_string()))
                        },
                    },
                    (shutdown.clone(), hard_stop.clone()),
                );
                tasks.spawn(serve);
                Some(addr)
            }
            None => None,
        };

        Ok(Server {
            broker,
            local_addrs,
            shutdown,
            hard_stop,
            shutdown_timeout: config.server.shutdown_timeout,
            http_addr,
            tasks,
            reloader,
        })
    }

    /// Reloads every TLS listener's certificate, key, CA bundle and CRL, and the
    /// password and ACL files, without touching connected clients. Each part that
    /// fails keeps its previous version; the error lists them. Called on SIGHUP,
    /// and by the server itself when one of those files changes.
    pub fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload()
    }

    /// The addresses the listeners are bound to, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The address of the HTTP listener (`[http] bind`), if there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, tells every client (v5 DISCONNECT 0x8B), waits for every
    /// connection to finish — dropping those still running after
    /// `shutdown_timeout` (clients that do not read) — then flushes and fsyncs
    /// storage. Each phase is logged.
    pub async fn shutdown(self) {
        let started = Instant::now();
        let connected = self
            .broker
            .metrics()
            .connections_current
            .load(Ordering::Relaxed);
        info!(
            clients = connected,
            "shutdown: stopped accepting, disconnecting clients"
        );
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(self.shutdown_timeout, self.tasks.wait())
            .await
            .is_err()
        {
            let remaining = self
                .broker
                .metrics()
                .connections_current
                .load(Ordering::Relaxed);
            warn!(
                clients = remaining,
                timeout = ?self.shutdown_timeout,
                "shutdown: dropping clients that did not read their DISCONNECT in time"
            );
            self.hard_stop.cancel();
            self.tasks.wait().await;
        }
        info!(elapsed = ?started.elapsed(), "shutdown: clients disconnected");
        match self.broker.sync_storage() {
            Ok(()) => info!(elapsed = ?started.elapsed(), "shutdown: storage flushed"),
            Err(error) => error!(%error, "shutdown: could not sync storage"),
        }
    }
}

/// Binds the HTTP listener. Synchronous, so that [`Server::start`] (which tests and
/// embedders call with their own MQTT listeners) can do it before touching storage.
fn bind_http(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), Error> {
    let bound = std::net::TcpListener::bind(addr)
        .and_then(|listener| {
            listener.set_nonblocking(true)?;
            let local = listener.local_addr()?;
            Ok((TcpListener::from_std(listener)?, local))
        })
        .map_err(|source| Error::Bind { addr, source })?;
    Ok(bound)
}

/// Each listener's address and transport (TLS files read here), in order.
fn load_transports(
    config: &Config,
    listeners: &[TcpListener],
) -> Result<Vec<(SocketAddr, Transport)>, Error> {
    let mut transports = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.iter().enumerate() {
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        let listener_config = config.listeners.get(index).cloned().unwrap_or_default();
        let transport = Transport::load(&listener_config, addr).map_err(|source| Error::Tls {
            addr: listener_config.bind,
            source,
        })?;
        transports.push((addr, transport));
    }
    Ok(transports)
}

async fn tick_loop(
    broker: Arc<Broker>,
    sys_interval: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(TICK);
    let mut next_sys = Instant::now();
    let mut sys = SysState::new(Instant::now());
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let now = Instant::now();
                broker.on_tick(now);
                if let Some(every) = sys_interval.filter(|_| now >= next_sys) {
                    broker.publish_sys(&mut sys, now);
                    next_sys = now + every;
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}

/// Routes messages published on other nodes to this node's subscribers (the
/// [`crate::broker::seam::Fanout`]'s inbound side; a single node has none).
async fn route_remote(
    broker: Arc<Broker>,
    mut inbound: mpsc::UnboundedReceiver<Arc<Message>>,
    shutdown: CancellationToken,
) {
    loop {
        let message = tokio::select! {
            message = inbound.recv() => message,
            () = shutdown.cancelled() => return,
        };
        let Some(message) = message else { return };
        if let Err(error) = broker.publish_remote(message) {
            error!(%error, "could not store a message from another node");
        }
    }
}

/// Keeps the broker's retained trie equal to the shared retained store as other
/// nodes change it (a single node has no such changes).
async fn mirror_retained(
    broker: Arc<Broker>,
    mut changes: mpsc::UnboundedReceiver<Arc<Message>>,
    shutdown: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            change = changes.recv() => change,
            () = shutdown.cancelled() => return,
        };
        let Some(message) = change else { return };
        broker.apply_retained(message);
    }
}

/// Lets go of the sessions other nodes claim (a single node has no such claims).
/// Each is let go in its own task: a takeover waits for the connection to leave.
/// Disconnects every client while this node is cut off from its cluster: one
/// that connected just before the cut-off was noticed goes at the next sweep.
async fn cut_off_when_isolated(
    broker: Arc<Broker>,
    mut standing: tokio::sync::watch::Receiver<Standing>,
    shutdown: CancellationToken,
) {
    loop {
        if *standing.borrow_and_update() == Standing::CutOff {
            let online = broker.cut_off_all();
            if online > 0 {
                warn!(
                    clients = online,
                    "cluster: disconnecting clients: this node is cut off"
                );
            }
        }
        tokio::select! {
            changed = standing.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(CUT_OFF_SWEEP) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

async fn release_taken(
    broker: Arc<Broker>,
    mut taken: mpsc::UnboundedReceiver<TakenElsewhere>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            next = taken.recv() => next,
            () = shutdown.cancelled() => return,
        };
        let Some(next) = next else { return };
        let broker = broker.clone();
        tasks.spawn(async move { broker.release_to_other_node(next).await });
    }
}
