//! Persistent QoS 1 throughput in each durability mode (not a timed test).
//!
//! `cargo run --release --example persist_bench [messages] [publishers]`
//!
//! An in-process broker on a temporary data dir; one persistent (clean session 0)
//! subscriber on `bench/#` at QoS 1 that acknowledges everything; `publishers`
//! clients pipelining QoS 1 PUBLISH with 100 in flight each. Reports end-to-end
//! messages per second (the last PUBACK to the publisher *and* the last delivery
//! to the subscriber), median of three runs per mode.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rookery::config::Durability;
use rookery::protocol::{
    decode, encode, Ack, Connect, Packet, PacketId, Properties, ProtocolVersion, Publish, QoS,
    Subscribe, SubscriptionOptions,
};
use rookery::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const WINDOW: usize = 100;

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
}

impl Client {
    async fn connect(addr: std::net::SocketAddr, client_id: &str, clean: bool) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = Client {
            stream,
            buf: BytesMut::new(),
            out: BytesMut::new(),
        };
        client.push(&Packet::Connect(Box::new(Connect {
            version: V4,
            clean_start: clean,
            keep_alive: 0,
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            properties: Properties::default(),
        })));
        client.flush().await;
        client.packets().await;
        client
    }

    fn push(&mut self, packet: &Packet) {
        encode(packet, V4, &mut self.out);
    }

    async fn flush(&mut self) {
        self.stream.write_all(&self.out).await.expect("write");
        self.out.clear();
    }

    /// Every whole packet from the next read.
    async fn packets(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while packets.is_empty() {
            if self.stream.read_buf(&mut self.buf).await.expect("read") == 0 {
                panic!("broker closed the connection");
            }
            while let Some(packet) = decode(&mut self.buf, V4, usize::MAX).expect("decode") {
                packets.push(packet);
            }
        }
        packets
    }
}

async fn publisher(addr: std::net::SocketAddr, index: usize, count: usize) {
    let mut client = Client::connect(addr, &format!("bench-pub-{index}"), true).await;
    let payload = Bytes::from(vec![b'x'; 64]);
    let (mut sent, mut acked) = (0, 0);
    while acked < count {
        while sent < count && sent - acked < WINDOW {
            sent += 1;
            client.push(&Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "bench/t".into(),
                packet_id: PacketId::new((sent % 65_535 + 1) as u16),
                properties: Properties::default(),
                payload: payload.clone(),
            }));
        }
        client.flush().await;
        acked += client
            .packets()
            .await
            .iter()
            .filter(|p| matches!(p, Packet::PubAck(_)))
            .count();
    }
}

async fn subscriber(mut client: Client, count: usize) {
    let mut received = 0;
    while received < count {
        for packet in client.packets().await {
            if let Packet::Publish(publish) = packet {
                received += 1;
                if let Some(id) = publish.packet_id {
                    client.push(&Packet::PubAck(Ack::new(id)));
                }
            }
        }
        client.flush().await;
    }
}

async fn run(durability: Durability, messages: usize, publishers: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default();
    config.storage.dir = dir.path().to_path_buf();
    config.storage.durability = durability;
    config.limits.max_queued_messages = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = Server::start(config, vec![listener]).expect("start");
    let addr = server.local_addrs()[0];
    let mut sub = Client::connect(addr, "bench-sub", false).await;
    sub.push(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).expect("non-zero"),
        filters: vec![(
            "bench/#".into(),
            SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..Default::default()
            },
        )],
        properties: Properties::default(),
    }));
    sub.flush().await;
    sub.packets().await;
    let started = Instant::now();
    let receiving = tokio::spawn(subscriber(sub, messages));
    let per = messages / publishers;
    let sending: Vec<_> = (0..publishers)
        .map(|i| tokio::spawn(publisher(addr, i, per)))
        .collect();
    for task in sending {
        task.await.expect("publisher");
    }
    receiving.await.expect("subscriber");
    let rate = messages as f64 / started.elapsed().as_secs_f64();
    server.shutdown().await;
    rate
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let messages: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let publishers: usize = args.next().map_or(Ok(4), |a| a.parse())?;
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "{messages} persistent QoS 1 messages, {publishers} publishers, 1 subscriber, 64 B payload"
    );
    println!("| durability | msg/s (median of 3) | vs memory |");
    println!("|---|---|---|");
    let mut memory = None;
    for durability in [Durability::Memory, Durability::Process, Durability::Fsync] {
        let mut rates: Vec<f64> = (0..3)
            .map(|_| runtime.block_on(run(durability, messages, publishers)))
            .collect();
        rates.sort_by(f64::total_cmp);
        let median = rates[1];
        let base = *memory.get_or_insert(median);
        println!(
            "| {durability:?} | {median:.0} | {:.0} % |",
            100.0 * median / base
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
