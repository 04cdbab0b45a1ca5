//! RSS of a broker holding many offline sessions with queued messages (mosquitto #3273).
//!
//! `cargo run --release --example offline_memory [sessions] [messages_each]`
//!
//! Fills a temporary data dir through the storage API (one subscription and
//! `messages_each` queued QoS 1 messages per session), then starts a broker on it
//! in a child process and reports that process's resident memory after recovery.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rookery::broker::message::{Delivery, Message};
use rookery::broker::seam::{
    Claim, DeliveryState, MessageLog, PublishWrite, QueuedDelivery, SessionRecord, SessionStore,
    StoredSubscription,
};
use rookery::config::StorageConfig;
use rookery::protocol::{ClientId, Properties, QoS, SubscriptionOptions, TopicName};
use rookery::storage::Storage;

fn fill(dir: &std::path::Path, sessions: usize, messages: usize) -> anyhow::Result<()> {
    let storage = Storage::open(&StorageConfig {
        dir: dir.to_path_buf(),
        ..StorageConfig::default()
    })?;
    let clients: Vec<ClientId> = (0..sessions)
        .map(|i| ClientId::new(format!("offline-{i:06}")))
        .collect();
    for client_id in &clients {
        // Written as a session restored at start-up is: with the zero claim.
        let record = SessionRecord::Offline {
            expires_at: None,
            will: None,
        };
        storage.save(client_id, &record, Claim::default())?;
        let subscription = StoredSubscription {
            client_id: client_id.clone(),
            filter: format!("devices/{client_id}/#"),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
            identifier: None,
        };
        storage.save_subscription(&subscription, Claim::default())?;
    }
    for seq in 1..=messages as u64 {
        for chunk in clients.chunks(1000) {
            let message = Arc::new(Message {
                topic: TopicName::new("devices/all/cmd")?,
                payload: Bytes::from(vec![b'x'; 100]),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Properties::default(),
                expires_at: None,
            });
            let deliveries = chunk
                .iter()
                .map(|client_id| {
                    let delivery = Delivery {
                        message: message.clone(),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        subscription_ids: Vec::new(),
                        seq: Some(seq),
                    };
                    (
                        client_id.clone(),
                        QueuedDelivery {
                            seq,
                            delivery,
                            state: DeliveryState::Queued,
                        },
                    )
                })
                .collect();
            storage.append(&PublishWrite {
                deliveries,
                ..PublishWrite::default()
            })?;
        }
    }
    storage.sync()?;
    Ok(())
}

fn serve(dir: &std::path::Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let mut config = rookery::Config::default();
        config.storage.dir = dir.to_path_buf();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let started = std::time::Instant::now();
        let server = rookery::Server::start(config, vec![listener])?;
        let recovered_in = started.elapsed();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let status = std::fs::read_to_string("/proc/self/status")?;
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap_or("VmRSS: ?");
        println!(
            "{} sessions restored in {recovered_in:.2?}; {rss}",
            server.broker().session_count()
        );
        server.shutdown().await;
        anyhow::Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let (Some("serve"), Some(dir)) = (args.get(1).map(String::as_str), args.get(2)) {
        return serve(std::path::Path::new(dir));
    }
    let sessions: usize = args.get(1).map_or(Ok(100_000), |a| a.parse())?;
    let messages: usize = args.get(2).map_or(Ok(10), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    fill(dir.path(), sessions, messages)?;
    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("serve")
        .arg(dir.path())
        .status()?;
    anyhow::ensure!(status.success(), "serve failed");
    Ok(())
}
