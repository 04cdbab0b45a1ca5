//! Hostile and slow peers (issue 12): a peer that trickles its CONNECT, stalls its
//! TLS handshake or its WebSocket upgrade is cut at `connect_timeout`; one client
//! id reconnecting thousands of times from ten sockets at once leaves nothing
//! behind — no session beyond its own, no connection, no task. A subscriber that
//! never reads costs bounded memory and slows no publisher; a peer that vanishes
//! without a FIN is cut by keep-alive and its will published; neither a flood of
//! connections nor a client with 100k subscriptions slows an ordinary client.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::process::BrokerProcess;
use common::wire::{bytes_of, Transport, WireBroker, TRANSPORTS};
use common::*;
use rookery::protocol::{Connect, Packet, ProtocolVersion, QoS};
use rookery::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const V4: ProtocolVersion = ProtocolVersion::V3_1_1;
const V5: ProtocolVersion = ProtocolVersion::V5;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1_500);
/// How late after the connect timeout the cut may come: the pause between two
/// bytes, and a machine busy with other tests.
const SLACK: Duration = Duration::from_millis(1_500);

async fn broker() -> WireBroker {
    let mut config = Config::default();
    config.limits.connect_timeout = CONNECT_TIMEOUT;
    WireBroker::start_with(config).await
}

fn assert_cut_at_the_connect_timeout(what: &str, elapsed: Duration) {
    eprintln!("{what}: cut after {elapsed:?}");
    assert!(
        elapsed + Duration::from_millis(100) >= CONNECT_TIMEOUT,
        "{what}: cut after {elapsed:?}, before the connect timeout"
    );
    assert!(
        elapsed <= CONNECT_TIMEOUT + SLACK,
        "{what}: cut only after {elapsed:?}"
    );
}

/// Completes the transport's own handshake, then sends a CONNECT one byte per
/// second; returns how long until the broker closed the connection.
async fn trickle_connect(broker: &WireBroker, transport: Transport) -> Duration {
    // From before the accept: the connect timeout counts from there.
    let started = Instant::now();
    let mut wire = broker.open(transport, V4).await;
    let connect = Packet::Connect(Box::new(connect_packet(V4, "trickle", true)));
    let bytes = bytes_of(V4, &[connect]);
    for byte in bytes.iter() {
        // A write to a connection the broker closed may fail; the read tells.
        let _ = wire.write(&[*byte]).await;
        match wire.recv_within(Duration::from_secs(1)).await {
            Some(None) => return started.elapsed(),
            Some(Some(packet)) => panic!("{transport:?}: got {packet:?} for half a CONNECT"),
            None => {}
        }
    }
    panic!("{transport:?}: a CONNECT sent one byte per second went through");
}

/// Opens a TCP connection, sends `first` and nothing more; returns how long until
/// the broker closed it.
async fn stall(addr: std::net::SocketAddr, first: &[u8]) -> Duration {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(CONNECT_TIMEOUT + SLACK + SLACK, async {
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
    assert!(closed.is_ok(), "a stalled handshake was not cut");
    started.elapsed()
}

fn connections(broker: &WireBroker) -> u64 {
    broker
        .broker()
        .metrics()
        .connections_current
        .load(Ordering::Relaxed)
}

/// Waits (up to [`WAIT`]) until `done` holds.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_connect_sent_one_byte_per_second_is_cut_at_the_connect_timeout() {
    let broker = broker().await;
    let [tcp, tls, ws] = TRANSPORTS;
    let (tcp, tls, ws) = tokio::join!(
        trickle_connect(&broker, tcp),
        trickle_connect(&broker, tls),
        trickle_connect(&broker, ws),
    );
    assert_cut_at_the_connect_timeout("TCP", tcp);
    assert_cut_at_the_connect_timeout("TLS", tls);
    assert_cut_at_the_connect_timeout("WebSocket", ws);
    assert!(eventually(|| broker.broker().session_count() == 0).await);
    assert!(eventually(|| connections(&broker) == 0).await);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_stalled_tls_handshakes_and_websocket_upgrades_are_cut_at_the_connect_timeout() {
    let broker = broker().await;
    let tls = broker.addr(Transport::Tls);
    let ws = broker.addr(Transport::Ws);
    // A TLS record header announcing a 512-byte ClientHello that never comes.
    let hello_header = [0x16, 0x03, 0x01, 0x02, 0x00];
    let upgrade_head = b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n";
    let (tls_silent, tls_partial, ws_silent, ws_partial) = tokio::join!(
        stall(tls, b""),
        stall(tls, &hello_header),
        stall(ws, b""),
        stall(ws, upgrade_head),
    );
    assert_cut_at_the_connect_timeout("TLS, nothing sent", tls_silent);
    assert_cut_at_the_connect_timeout("TLS, half a ClientHello", tls_partial);
    assert_cut_at_the_connect_timeout("WebSocket, nothing sent", ws_silent);
    assert_cut_at_the_connect_timeout("WebSocket, half the upgrade", ws_partial);
    assert!(eventually(|| connections(&broker) == 0).await);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_slow_upgrade_then_no_connect_is_cut_at_the_connect_timeout_from_accept() {
    // One deadline for everything before CONNECT: a peer that spends most of it
    // on the upgrade does not get a fresh connect timeout for CONNECT.
    let broker = broker().await;
    let mut stream = TcpStream::connect(broker.addr(Transport::Ws))
        .await
        .unwrap();
    let accepted = Instant::now();
    stream
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    tokio::time::sleep(CONNECT_TIMEOUT.mul_f32(0.7)).await;
    let rest = "Upgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: mqtt\r\n\r\n";
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed during the upgrade");
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 101"), "upgrade refused");
    let closed = tokio::time::timeout(CONNECT_TIMEOUT + SLACK, async {
        while let Ok(1..) = stream.read(&mut buf).await {}
    })
    .await;
    assert!(closed.is_ok(), "not cut");
    let elapsed = accepted.elapsed();
    assert!(
        elapsed < CONNECT_TIMEOUT + CONNECT_TIMEOUT.mul_f32(0.5),
        "cut {elapsed:?} after accept: the connect timeout restarted after the upgrade"
    );
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_takeover_storm_leaks_no_sessions_connections_or_tasks() {
    const SOCKETS: usize = 10;
    const ROUNDS: usize = 200;
    let broker = WireBroker::start().await;
    let addr = broker.addr(Transport::Tcp);
    let tasks_before = broker.alive_tasks();
    let started = Instant::now();
    let storms: Vec<_> = (0..SOCKETS)
        .map(|socket| {
            tokio::spawn(async move {
                // Each socket holds its connection until its next one: ten live
                // connections take the session from each other, of every kind.
                let mut held = None;
                for round in 0..ROUNDS {
                    let mut connect = match (socket + round) % 3 {
                        0 => connect_packet(V4, "storm", true),
                        1 => persistent_packet(V4, "storm", 0),
                        _ => persistent_packet(V5, "storm", 60),
                    };
                    if round % 2 == 0 {
                        connect.will = Some(will("storm/will", "gone"));
                    }
                    let (client, connack) = RawClient::open(addr, connect).await;
                    assert!(!connack.code.is_error(), "refused: {connack:?}");
                    held = Some(client);
                }
                drop(held);
            })
        })
        .collect();
    for storm in storms {
        storm.await.unwrap();
    }
    let elapsed = started.elapsed();
    eprintln!(
        "takeover storm: {} connects in {elapsed:?} ({:.0}/s)",
        SOCKETS * ROUNDS,
        (SOCKETS * ROUNDS) as f64 / elapsed.as_secs_f64()
    );
    let registry = broker.broker();
    assert!(
        eventually(|| registry.census().online == 0).await,
        "a connection still holds the session: {:?}",
        registry.census()
    );
    let left = registry.session_count();
    assert!(left <= 1, "sessions left: {left}");
    assert!(eventually(|| connections(&broker) == 0).await);
    assert!(
        eventually(|| broker.alive_tasks() <= tasks_before).await,
        "tasks: {} before, {} after",
        tasks_before,
        broker.alive_tasks()
    );
    broker.stop().await;
}

// ------------------------------------------------------------------ load and silence
//
// These run the real binary (`BrokerProcess`), so that its memory can be read from
// `/proc`, and so that its threads are not the test's. `ROOKERY_LONG=1` runs the
// long versions: a 60 s slow consumer and a 20,000-connection flood.

/// Whether to run the long versions (README, "Reliability").
fn is_long() -> bool {
    std::env::var("ROOKERY_LONG").is_ok_and(|value| value == "1")
}

/// The resident set of process `pid` in bytes, from `VmRSS` in `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

const MIB: u64 = 1024 * 1024;

/// Taken by each test below for its whole run: they measure rates and latencies on
/// a machine of a few cores, so they run one at a time, not beside each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Raises this process's soft limit on open files to its hard limit, so that a
/// broker started afterwards inherits it too; returns the limit.
fn raise_open_files() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// The `p`th percentile (0–100) of `samples`.
fn percentile(samples: &mut [Duration], p: usize) -> Duration {
    samples.sort_unstable();
    let index = (samples.len() * p / 100).min(samples.len().saturating_sub(1));
    samples.get(index).copied().unwrap_or_default()
}

/// A client publishing to a topic it subscribes to, timing each PUBLISH from its
/// write to its delivery back: how long the broker keeps an ordinary client waiting.
struct Bystander {
    client: RawClient,
    round_trips: Vec<Duration>,
}

impl Bystander {
    async fn start(addr: std::net::SocketAddr) -> Bystander {
        let (mut client, _) = RawClient::start(addr, V4, "bystander", true).await;
        // Each PUBLISH leaves at once: Nagle's algorithm would time the loopback's
        // delayed ACKs (40 ms), not the broker.
        client.stream.set_nodelay(true).unwrap();
        client
            .subscribe_one("bystander/echo", QoS::AtMostOnce)
            .await;
        Bystander {
            client,
            round_trips: Vec::new(),
        }
    }

    /// One round trip; panics if the message does not come back within [`WAIT`].
    async fn round_trip(&mut self) {
        let payload = self.round_trips.len().to_string();
        let sent = Instant::now();
        self.client
            .send(&Packet::Publish(publish(
                "bystander/echo",
                QoS::AtMostOnce,
                0,
                &payload,
            )))
            .await;
        let echo = self.client.expect_publish().await;
        assert_eq!(echo.payload.as_ref(), payload.as_bytes(), "lost an echo");
        self.round_trips.push(sent.elapsed());
    }

    /// Round trips, 1 ms apart, until `done` resolves; returns its output.
    async fn round_trips_until<T>(&mut self, done: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(done);
        loop {
            tokio::select! {
                output = &mut done => return output,
                () = tokio::time::sleep(Duration::from_millis(1)) => self.round_trip().await,
            }
        }
    }

    /// The 99th percentile of round trips for `period` with nothing else going
    /// on, printed beside the test's own figures: on a shared machine it tells the
    /// broker's delays from the scheduler's. Forgotten afterwards.
    async fn baseline(&mut self, period: Duration) -> Duration {
        self.round_trips_until(tokio::time::sleep(period)).await;
        let p99 = percentile(&mut self.round_trips, 99);
        self.round_trips.clear();
        p99
    }

    /// The 50th and 99th percentiles and the slowest round trip.
    fn figures(&mut self) -> (Duration, Duration, Duration) {
        let p50 = percentile(&mut self.round_trips, 50);
        let p99 = percentile(&mut self.round_trips, 99);
        let max = self.round_trips.last().copied().unwrap_or_default();
        (p50, p99, max)
    }
}

/// Reads until nothing comes for `quiet` or the connection closes; returns how
/// many bytes came. Counting bytes rather than decoding each packet keeps the
/// reader cheap enough to keep up at 10 MB/s in a debug build.
async fn bytes_until_quiet(client: &mut RawClient, quiet: Duration) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while let Ok(Ok(n @ 1..)) = tokio::time::timeout(quiet, client.stream.read(&mut buf)).await {
        total += n;
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_subscriber_that_never_reads_costs_bounded_memory_and_slows_no_publisher() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const RATE: u64 = 10_000;
    const BATCH: u64 = 100;
    const RSS_LIMIT: u64 = 200 * MIB;
    let seconds = if is_long() { 60 } else { 10 };
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    // Keep-alive 0: nothing ever cuts it, so it stays stuck for the whole run.
    let stuck_connect = Connect {
        keep_alive: 0,
        ..connect_packet(V4, "stuck", true)
    };
    let (mut stuck, _) = RawClient::open(broker.addr, stuck_connect).await;
    stuck.subscribe_one("flood/#", QoS::AtMostOnce).await;
    // A subscriber that reads: the broker must keep routing to it at full rate.
    let reader_connect = Connect {
        keep_alive: 0,
        ..connect_packet(V4, "reader", true)
    };
    let (mut reader, _) = RawClient::open(broker.addr, reader_connect).await;
    reader.subscribe_one("flood/#", QoS::AtMostOnce).await;
    let reader =
        tokio::spawn(async move { bytes_until_quiet(&mut reader, Duration::from_secs(2)).await });
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "publisher", true).await;
    let payload = "x".repeat(1024);
    let one = Packet::Publish(publish("flood/a", QoS::AtMostOnce, 0, &payload));
    // Subscribers get the same bytes: a 3.1.1 QoS 0 PUBLISH is forwarded as it came.
    let one_len = bytes_of(V4, std::slice::from_ref(&one)).len() as u64;
    let batch = bytes_of(V4, &vec![one; BATCH as usize]);

    let pid = broker.pid();
    let rss_before = rss_bytes(pid);
    let mut rss_max = rss_before;
    let started = Instant::now();
    let end = started + Duration::from_secs(seconds);
    let mut sent = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut next_sample = started;
    while Instant::now() < end {
        ticks.tick().await;
        let due = (started.elapsed().as_secs_f64() * RATE as f64) as u64;
        while sent + BATCH <= due {
            let write = publisher.stream.write_all(&batch);
            match tokio::time::timeout_at(end.into(), write).await {
                Ok(written) => written.unwrap(),
                Err(_) => break,
            }
            sent += BATCH;
        }
        if Instant::now() >= next_sample {
            rss_max = rss_max.max(rss_bytes(pid));
            next_sample += Duration::from_millis(250);
        }
    }
    let elapsed = started.elapsed();
    let rate = sent as f64 / elapsed.as_secs_f64();
    let read = reader.await.unwrap() as u64 / one_len;
    rss_max = rss_max.max(rss_bytes(pid));
    // What the stuck subscriber gets once it reads: at most its mailbox and the
    // socket buffers, not everything that was published while it was stuck.
    let stuck_got = bytes_until_quiet(&mut stuck, Duration::from_secs(1)).await as u64 / one_len;
    eprintln!(
        "slow consumer, {seconds} s: published {sent} ({rate:.0} msgs/s), the reader got \
         {read}, the stuck subscriber {stuck_got}; broker RSS {} MiB before, {} MiB at most",
        rss_before / MIB,
        rss_max / MIB
    );
    assert!(broker.is_running(), "the broker died");
    assert!(
        rss_max < RSS_LIMIT,
        "broker RSS reached {} MiB",
        rss_max / MIB
    );
    assert!(
        rate >= RATE as f64 * 0.95,
        "the publisher was slowed to {rate:.0} msgs/s"
    );
    assert!(
        read as f64 >= sent as f64 * 0.9,
        "the reading subscriber got {read} of {sent}"
    );
    assert!(
        stuck_got < sent / 2,
        "the stuck subscriber got {stuck_got} of {sent}: its messages were buffered, not dropped"
    );
}

/// The keep-alive of the peers that vanish, in seconds.
const KEEP_ALIVE: u16 = 2;

/// Connects with a will on `hostile/will/<client_id>` and a [`KEEP_ALIVE`],
/// subscribes to `filter` if given, then vanishes: it never reads or writes
/// again, and never closes its socket either (no FIN), as a peer does whose
/// network went away. Returns the socket, to be held open, and when it sent its
/// last packet.
async fn vanish(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    filter: Option<&str>,
) -> (RawClient, Instant) {
    let connect = Connect {
        keep_alive: KEEP_ALIVE,
        will: Some(will(&format!("hostile/will/{client_id}"), "gone")),
        ..connect_packet(version, client_id, true)
    };
    let mut last_sent = Instant::now();
    // A small receive window: what the broker writes to it fills the socket
    // buffers, and blocks its writes, within a fraction of a second.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = RawClient::from_stream(socket.connect(addr).await.unwrap(), version);
    client.send(&Packet::Connect(Box::new(connect))).await;
    match client.recv().await {
        Some(Packet::ConnAck(connack)) if !connack.code.is_error() => {}
        other => panic!("{client_id}: expected CONNACK, got {other:?}"),
    }
    if let Some(filter) = filter {
        last_sent = Instant::now();
        client.subscribe_one(filter, QoS::AtMostOnce).await;
    }
    (client, last_sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_peer_that_vanishes_without_fin_is_cut_by_keep_alive_and_its_will_published() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let broker = start_broker().await;
    let (mut watcher, _) = RawClient::start(broker.addr, V5, "watcher", true).await;
    watcher
        .subscribe_one("hostile/will/+", QoS::AtMostOnce)
        .await;
    // A subscriber on a busy topic: the broker's writes to it block once its
    // socket buffers are full, and keep-alive must still count.
    let (busy, busy_since) = vanish(broker.addr, V4, "busy-v4", Some("busy/#")).await;
    let (idle_v4, idle_v4_since) = vanish(broker.addr, V4, "idle-v4", None).await;
    let (idle_v5, idle_v5_since) = vanish(broker.addr, V5, "idle-v5", None).await;
    let (mut publisher, _) = RawClient::start(broker.addr, V4, "busy-publisher", true).await;
    let payload = "x".repeat(1024);
    let burst = bytes_of(
        V4,
        &vec![Packet::Publish(publish("busy/a", QoS::AtMostOnce, 0, &payload)); 100],
    );
    let flood = tokio::spawn(async move {
        loop {
            publisher.send_bytes(&burst).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // [MQTT-3.1.2-24] (3.1.1) / [MQTT-3.1.2-22] (5.0): no packet within 1.5 ×
    // the keep-alive, the server closes the connection; it then publishes the
    // will ([MQTT-3.1.2-8]).
    let cut_after = Duration::from_secs(u64::from(KEEP_ALIVE)).mul_f32(1.5);
    let mut wills = Vec::new();
    let deadline = Instant::now() + cut_after + SLACK;
    while wills.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, watcher.expect_publish()).await {
            Ok(will) => wills.push((will.topic.to_string(), Instant::now())),
            Err(_) => break,
        }
    }
    flood.abort();
    for (client_id, since) in [
        ("busy-v4", busy_since),
        ("idle-v4", idle_v4_since),
        ("idle-v5", idle_v5_since),
    ] {
        let topic = format!("hostile/will/{client_id}");
        let Some((_, at)) = wills.iter().find(|(will, _)| *will == topic) else {
            panic!("{client_id}: no will within {:?}", cut_after + SLACK);
        };
        let silent_for = at.duration_since(since);
        eprintln!("{client_id}: will published {silent_for:?} after its last packet");
        assert!(
            silent_for + Duration::from_millis(50) >= cut_after,
            "{client_id}: cut after {silent_for:?}, before 1.5 × the keep-alive"
        );
        assert!(
            silent_for <= cut_after + SLACK,
            "{client_id}: cut only after {silent_for:?}"
        );
    }
    drop((busy, idle_v4, idle_v5));
    broker.stop().await;
}

/// Source addresses the flood spreads its connections over: each has its own
/// ephemeral ports (about 28,000 on Linux), which 20,000 connections plus the
/// TIME_WAIT of earlier runs would otherwise exhaust or make slow to find.
const SOURCES: usize = 8;

/// The source address of the flood's `n`th connection: 127.0.0.2 to 127.0.0.9.
fn source_address(n: usize) -> std::net::SocketAddr {
    let last = 2 + u8::try_from(n % SOURCES).unwrap();
    std::net::SocketAddr::from(([127, 0, 0, last], 0))
}

/// A TCP connection to `to` from the address `from`.
async fn connect_from(from: std::net::SocketAddr, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(from).unwrap();
    socket.connect(to).await.unwrap()
}

/// Opens `count` connections (CONNECT, CONNACK) as fast as `parallel` tasks can,
/// sends how long that took on `opened`, and holds them until `release` resolves.
/// Runs on a runtime of its own, so that the bystander's round trips measure the
/// broker, not this test's scheduler.
fn connection_flood(
    addr: std::net::SocketAddr,
    count: usize,
    parallel: usize,
    opened: tokio::sync::oneshot::Sender<Duration>,
    release: tokio::sync::oneshot::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let started = Instant::now();
            let openers: Vec<_> = (0..parallel)
                .map(|opener| {
                    tokio::spawn(async move {
                        let mut held = Vec::new();
                        for n in (opener..count).step_by(parallel) {
                            let client_id = format!("flood-{n}");
                            let stream = connect_from(source_address(n), addr).await;
                            let mut client = RawClient::from_stream(stream, V4);
                            let connect = connect_packet(V4, &client_id, true);
                            client.send(&Packet::Connect(Box::new(connect))).await;
                            match client.recv().await {
                                Some(Packet::ConnAck(connack)) if !connack.code.is_error() => {}
                                other => panic!("{client_id}: expected CONNACK, got {other:?}"),
                            }
                            held.push(client);
                        }
                        held
                    })
                })
                .collect();
            let mut held = Vec::with_capacity(count);
            for opener in openers {
                held.extend(opener.await.unwrap());
            }
            assert_eq!(held.len(), count);
            let _ = opened.send(started.elapsed());
            let _ = release.await;
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_connection_flood_does_not_slow_a_bystander() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const P99_LIMIT: Duration = Duration::from_millis(50);
    // Files the test process needs besides the flood's sockets.
    const HEADROOM: u64 = 200;
    let wanted: u64 = if is_long() { 20_000 } else { 5_000 };
    let limit = raise_open_files();
    let count = wanted.min(limit.saturating_sub(HEADROOM));
    if count < wanted {
        eprintln!(
            "connection flood: {count} connections, not {wanted}: open files limited to {limit}"
        );
    }
    // The broker is a debug build sharing two cores with the flood: a second
    // flood, on a fresh broker, is allowed when the first's p99 is over (each
    // is reported); both over fails.
    let mut p99s = Vec::new();
    for _ in 0..2 {
        let p99 = flood_beside_a_bystander(count).await;
        p99s.push(p99);
        if p99 < P99_LIMIT {
            return;
        }
    }
    panic!("bystander p99 over {P99_LIMIT:?} in both floods: {p99s:?}");
}

/// Floods a fresh broker with `count` connections while a bystander makes round
/// trips; returns the bystander's p99.
async fn flood_beside_a_bystander(count: u64) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let mut bystander = Bystander::start(broker.addr).await;
    let baseline = bystander.baseline(Duration::from_secs(1)).await;
    let (opened, all_open) = tokio::sync::oneshot::channel();
    let (release, held) = tokio::sync::oneshot::channel();
    let flood = connection_flood(
        broker.addr,
        usize::try_from(count).unwrap(),
        64,
        opened,
        held,
    );
    let flood_time = bystander.round_trips_until(all_open).await;
    let flood_time = flood_time.expect("the flood failed: see its panic");
    // And with all of them connected.
    for _ in 0..100 {
        bystander.round_trip().await;
    }
    release.send(()).unwrap();
    flood.join().unwrap();
    let rss = rss_bytes(broker.pid());
    let (p50, p99, max) = bystander.figures();
    eprintln!(
        "connection flood: {count} connections in {flood_time:?} ({:.0}/s); broker RSS {} MiB; \
         bystander round trips: {}, p50 {p50:?}, p99 {p99:?} (idle: {baseline:?}), max {max:?}",
        count as f64 / flood_time.as_secs_f64(),
        rss / MIB,
        bystander.round_trips.len(),
    );
    assert!(broker.is_running(), "the broker died");
    p99
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_client_subscribing_to_100k_filters_does_not_starve_a_bystander() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Rookery has no per-client subscription limit yet, so the client is not
    // stopped: the broker must take all of them and go on serving everyone else.
    // 2 × 50,000 SUBSCRIBEs: packet ids are 16 bits.
    const FILTERS: u16 = 50_000;
    const ROUNDS: usize = 2;
    const P99_LIMIT: Duration = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let mut broker = BrokerProcess::start(dir.path()).await;
    let mut bystander = Bystander::start(broker.addr).await;
    let baseline = bystander.baseline(Duration::from_secs(1)).await;
    let (client, _) = RawClient::start(broker.addr, V4, "greedy", true).await;
    let (mut read, mut write) = client.stream.into_split();
    // Every SUBSCRIBE pipelined, none waiting for its SUBACK; packet ids wrap.
    let mut packets = Vec::new();
    for round in 0..ROUNDS {
        for n in 1..=FILTERS {
            let filter = format!("greedy/{round}/{n}/+");
            let subscribe = subscribe_packet(n, &[(&filter, at(QoS::AtLeastOnce))]);
            packets.push(Packet::Subscribe(subscribe));
        }
    }
    let total = packets.len();
    let bytes = bytes_of(V4, &packets);
    drop(packets);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        write.write_all(&bytes).await.unwrap();
        write
    });
    let subacks = async {
        let mut buf = bytes::BytesMut::new();
        let mut granted = 0;
        while granted < total {
            match rookery::protocol::decode(&mut buf, V4, usize::MAX).unwrap() {
                Some(Packet::SubAck(suback)) => {
                    assert_eq!(suback.reasons.len(), 1);
                    assert!(!suback.reasons.iter().any(|code| code.is_error()));
                    granted += 1;
                }
                Some(other) => panic!("expected SUBACK, got {other:?}"),
                None => {
                    let n = tokio::time::timeout(WAIT, read.read_buf(&mut buf))
                        .await
                        .expect("SUBACKs stopped coming")
                        .unwrap();
                    assert!(n > 0, "closed after {granted} SUBACKs");
                }
            }
        }
        granted
    };
    let granted = bystander.round_trips_until(subacks).await;
    let took = started.elapsed();
    let mut write = writer.await.unwrap();
    // The last filter works: the subscriptions were made, not just acknowledged.
    let last = format!("greedy/{}/{FILTERS}/x", ROUNDS - 1);
    let probe = bytes_of(
        V4,
        &[Packet::Publish(publish(&last, QoS::AtMostOnce, 0, "probe"))],
    );
    let (mut prober, _) = RawClient::start(broker.addr, V4, "prober", true).await;
    prober.send_bytes(&probe).await;
    let mut buf = bytes::BytesMut::new();
    let delivered = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(packet) = rookery::protocol::decode(&mut buf, V4, usize::MAX).unwrap() {
                return packet;
            }
            assert!(read.read_buf(&mut buf).await.unwrap() > 0, "closed");
        }
    })
    .await
    .expect("no delivery on the last filter");
    assert!(matches!(delivered, Packet::Publish(p) if p.topic == last.as_str()));
    let (p50, p99, max) = bystander.figures();
    eprintln!(
        "{total} SUBSCRIBEs: {granted} granted in {took:?} ({:.0}/s); broker RSS {} MiB; \
         bystander round trips: {}, p50 {p50:?}, p99 {p99:?} (idle: {baseline:?}), max {max:?}",
        total as f64 / took.as_secs_f64(),
        rss_bytes(broker.pid()) / MIB,
        bystander.round_trips.len(),
    );
    assert!(broker.is_running(), "the broker died");
    assert!(p99 < P99_LIMIT, "bystander p99 {p99:?}");
    write.shutdown().await.unwrap();
}
