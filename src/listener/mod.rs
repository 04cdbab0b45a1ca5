//! Listening sockets: accept with backoff, enforce the connection limit, and spawn
//! one [`connection::run`] task per client. No MQTT is parsed here.
//!
//! [`Server`] takes listeners that are already bound, so tests and embedders can
//! bind `127.0.0.1:0` and ask which port they got (mini-redis's `server::run`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info};

use crate::broker::Broker;
use crate::config::Config;
use crate::connection;
use crate::storage::Storage;

/// How often sessions are expired and delayed wills published.
const TICK: Duration = Duration::from_millis(250);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is not valid.
    #[error(transparent)]
    Config(#[from] crate::config::Error),
    /// The data dir could not be opened or read.
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::Error),
    /// A listener could not be bound or inspected.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A running broker: its listeners, its connections and its housekeeping.
#[derive(Debug)]
pub struct Server {
    broker: Arc<Broker>,
    local_addrs: Vec<SocketAddr>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
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

    /// Serves on listeners that are already bound, one per configured listener.
    /// Must be called inside a tokio runtime.
    pub fn start(config: Config, listeners: Vec<TcpListener>) -> Result<Server, Error> {
        config.validate()?;
        let storage = Storage::open(&config.storage)?;
        let broker = Arc::new(Broker::new(
            config.limits.clone(),
            config.session.clone(),
            storage,
        ));
        let recovery = broker.recover(Instant::now())?;
        info!(
            sessions = recovery.sessions,
            subscriptions = recovery.subscriptions,
            retained = recovery.retained,
            "storage recovered"
        );
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let permits = match config.limits.max_connections {
            0 => Semaphore::MAX_PERMITS,
            n => n,
        };
        let connections = Arc::new(Semaphore::new(permits));
        let mut local_addrs = Vec::new();
        for listener in listeners {
            let addr = listener.local_addr().map_err(|source| Error::Bind {
                addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                source,
            })?;
            info!(%addr, "listening");
            local_addrs.push(addr);
            let accept = accept_loop(
                listener,
                broker.clone(),
                connections.clone(),
                shutdown.clone(),
                tasks.clone(),
            );
            tasks.spawn(accept);
        }
        tasks.spawn(tick_loop(broker.clone(), shutdown.clone()));
        Ok(Server {
            broker,
            local_addrs,
            shutdown,
            tasks,
        })
    }

    /// The addresses the listeners are bound to, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The shared broker state.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, tells every client (v5 DISCONNECT 0x8B), waits for
    /// every connection to finish, then flushes and fsyncs storage.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        if let Err(error) = self.broker.storage().sync() {
            error!(%error, "could not sync storage at shutdown");
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Usually out of file descriptors: wait instead of spinning.
                error!(%error, "accept failed; backing off {:?}", backoff);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        configure(&stream);
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            connection::run(stream, broker, shutdown).await;
            drop(permit);
        });
    }
}

fn configure(stream: &TcpStream) {
    // MQTT packets are small and latency matters more than segment count.
    let _ = stream.set_nodelay(true);
}

async fn tick_loop(broker: Arc<Broker>, shutdown: CancellationToken) {
    let mut interval = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = interval.tick() => broker.on_tick(Instant::now()),
            () = shutdown.cancelled() => return,
        }
    }
}
