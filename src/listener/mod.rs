//! Listening sockets: accept with backoff, enforce the connection limit, and spawn
//! one [`connection::run`](crate::connection::run) task per client. No MQTT is parsed here.
//!
//! Listeners arrive already bound (see [`crate::Server`]), so tests and embedders
//! can bind `127.0.0.1:0` and ask which port they got (mini-redis's `server::run`).
//! What each listener speaks (TCP, TLS, WebSocket) is in `transport.rs`; reloading
//! certificates and auth files is in [`reload`].

pub mod reload;
pub mod tls;
mod transport;
pub mod ws;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::error;

use crate::broker::Broker;
use crate::connection_log;
pub(crate) use transport::Transport;

/// Accepts connections on `listener` until `shutdown`, each in its own task.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    transport: Arc<Transport>,
    broker: Arc<Broker>,
    connections: Arc<Semaphore>,
    (shutdown, hard_stop): (CancellationToken, CancellationToken),
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
            connection_log::refused_busy(&broker, peer, &transport.name);
            drop(stream);
            continue;
        };
        configure(&stream);
        let broker = broker.clone();
        let shutdown = shutdown.clone();
        let hard_stop = hard_stop.clone();
        let transport = transport.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = transport.serve(stream, peer, broker, shutdown) => {}
                // Past the shutdown timeout: drop the connection mid-write.
                () = hard_stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

fn configure(stream: &TcpStream) {
    // MQTT packets are small and latency matters more than segment count.
    let _ = stream.set_nodelay(true);
}
