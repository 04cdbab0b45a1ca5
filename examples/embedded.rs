//! Runs a broker inside your own program and talks to it with a client.
//!
//! `cargo run --example embedded`

use std::time::Duration;

use rookery::{Config, Server};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Bind first (port 0 picks a free port), then hand the listener to the broker.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    // Keep nothing on disk: this broker lives only as long as the example.
    let mut config = Config::default();
    config.storage.durability = rookery::config::Durability::Memory;
    let server = Server::start(config, vec![listener])?;
    let addr = server.local_addrs()[0];
    println!("broker listening on {addr}");

    let options = MqttOptions::new("embedded-example", addr.ip().to_string(), addr.port());
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe("greetings/#", QoS::AtLeastOnce).await?;
    client
        .publish(
            "greetings/world",
            QoS::AtLeastOnce,
            false,
            "hello from an embedded broker",
        )
        .await?;

    let received = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Event::Incoming(Incoming::Publish(publish)) = eventloop.poll().await? {
                return anyhow::Ok(publish);
            }
        }
    })
    .await??;
    println!(
        "received on {}: {}",
        received.topic,
        String::from_utf8_lossy(&received.payload)
    );

    client.disconnect().await?;
    server.shutdown().await;
    Ok(())
}
