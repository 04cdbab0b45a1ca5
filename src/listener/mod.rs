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
        let broker = Arc::new(Broker::new(
            config.limits.clone(),
            config.session.clone(),
            Storage::in_memory(),
        ));
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
        tasks.spawn(tick_loop(
            broker.clone(),
            config.metrics.sys_interval,
            shutdown.clone(),
        ));
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

    /// Stops accepting, tells every client (v5 DISCONNECT 0x8B), and waits for
    /// every connection to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
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

async fn tick_loop(
    broker: Arc<Broker>,
    sys_interval: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut interval = tokio::time::interval(TICK);
    let mut next_sys = Instant::now();
    loop {
        tokio::select! {
            _ = interval.tick() => {
                let now = Instant::now();
                broker.on_tick(now);
                if let Some(every) = sys_interval.filter(|_| now >= next_sys) {
                    broker.publish_sys();
                    next_sys = now + every;
                }
            }
            () = shutdown.cancelled() => return,
        }
    }
}
