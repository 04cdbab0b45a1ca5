//! The `conn` scenario: open many idle connections as fast as the broker accepts
//! them, hold them so the broker's memory per connection can be read, then close.
//!
//! At most `concurrency` handshakes are in progress at once: an unbounded burst
//! only overflows the listen backlog and measures SYN retransmission timers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;

use crate::procfs;
use crate::wire::Conn;
use crate::Target;

/// What the scenario measured.
pub struct Outcome {
    pub connected: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    /// From the first connect attempt to the last CONNACK.
    pub connect_secs: f64,
    /// Broker VmRSS before the first connection and at the end of the hold, in KiB.
    pub broker_rss_kib: Option<(u64, u64)>,
}

pub async fn run(
    target: &Target,
    connections: usize,
    concurrency: usize,
    hold: Duration,
    broker_pid: Option<u32>,
) -> Outcome {
    let baseline = broker_pid.and_then(procfs::rss_kib);
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let (done_tx, mut done_rx) = mpsc::channel(1024);
    let (release_tx, release_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let begin = Instant::now();
    for index in 0..connections {
        let target = target.clone();
        let permits = Arc::clone(&permits);
        let done = done_tx.clone();
        let mut release = release_rx.clone();
        tasks.spawn(async move {
            let permit = permits.acquire_owned().await;
            let client_id = format!("{}-c{index}", target.client_prefix);
            let connected = Conn::connect(target.addr, target.version, &client_id, 256).await;
            drop(permit);
            let mut conn = match connected {
                Ok((conn, _)) => conn,
                Err(e) => {
                    let _ = done.send(Err(format!("{e:#}"))).await;
                    return;
                }
            };
            conn.shrink();
            let _ = done.send(Ok(())).await;
            drop(done);
            let _ = release.wait_for(|release| *release).await;
            let _ = conn.disconnect().await;
        });
    }
    drop(done_tx);
    let mut outcome = Outcome {
        connected: 0,
        failed: 0,
        first_error: None,
        connect_secs: 0.0,
        broker_rss_kib: None,
    };
    while let Some(result) = done_rx.recv().await {
        match result {
            Ok(()) => outcome.connected += 1,
            Err(e) => {
                outcome.failed += 1;
                outcome.first_error.get_or_insert(e);
            }
        }
    }
    outcome.connect_secs = begin.elapsed().as_secs_f64();
    eprintln!(
        "{} connections open in {:.2}s; holding them for {:?}",
        outcome.connected, outcome.connect_secs, hold
    );
    tokio::time::sleep(hold).await;
    let held = broker_pid.and_then(procfs::rss_kib);
    outcome.broker_rss_kib = baseline.zip(held);
    let _ = release_tx.send(true);
    while tasks.join_next().await.is_some() {}
    outcome
}
