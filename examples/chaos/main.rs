//! Crash cycles: the real broker under QoS 1 and 2 traffic, SIGKILLed at random
//! moments and restarted on the same data dir, and after every restart a check
//! that it kept every promise it made.
//!
//! ```text
//! cargo run --release --example chaos -- --cycles 100 [--durability process|fsync] [--seed S]
//! ```
//!
//! The cast (3.1.1 and 5.0 alike, all with persistent sessions):
//! - publishers of QoS 1 and QoS 2 messages, small ones at a steady rate and
//!   large ones in bulk (enough to make the LSM tree flush and compact, and, with
//!   `fsync`, to keep group commit busy);
//! - subscribers that stay online, come and go every few hundred milliseconds,
//!   or stay away for the whole traffic phase while their queues grow;
//! - publishers of retained messages (some of them deletions) on a few topics;
//! - will-carrying devices of every kind (see `devices.rs`), and a watcher of wills.
//!
//! Each cycle: traffic for a random time, `kill -9`, restart (one cycle in four
//! the broker is killed once more while the clients resume), then the clients
//! resume their sessions, finish what they had in flight, and drain. Then:
//! - **lost**: acknowledged messages (PUBACK, PUBCOMP) missing at a subscriber
//!   whose subscription matches them (every SUBACK came before the first publish);
//! - **QoS 2 duplicates**: a QoS 2 message delivered twice to one subscriber;
//! - **order**: a message that arrived after a later one of the same publisher
//!   and topic (per subscription);
//! - **retained**: the retained message of each topic is the last one published
//!   to it (or none after a deletion);
//! - **wills**: each published exactly as often as its device's fate allows.
//!
//! Any of those, or a session the broker forgot, is a violation: the run stops
//! (unless `--keep-going`), keeps its data dir and the broker's log, and exits 1.

mod broker;
mod conn;
mod devices;
mod message;
mod publisher;
mod subscriber;
mod world;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::broker::Launch;
use crate::world::{Totals, World};

#[derive(Debug, Parser)]
struct Args {
    /// Kill-and-restart cycles.
    #[arg(long, default_value_t = 10)]
    cycles: u32,
    #[arg(long, value_enum, default_value_t = Durability::Process)]
    durability: Durability,
    /// Seed for every random choice (kill moments, payload sizes, who comes back);
    /// printed at the start, so a failing run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest traffic phase, in milliseconds; the kill falls at a random moment in it.
    #[arg(long, default_value_t = 2500)]
    traffic_ms: u64,
    /// Messages per second, all bulk publishers together.
    #[arg(long, default_value_t = 2000.0)]
    bulk_rate: f64,
    /// The `rookery` binary; default: the one next to this example, built if needed.
    #[arg(long)]
    broker: Option<PathBuf>,
    /// Go on after a violation.
    #[arg(long)]
    keep_going: bool,
    /// Keep the data dir and the broker's log even when every check passes.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Durability {
    Process,
    Fsync,
    /// Nothing survives a restart: a test of the checks, which must all fail.
    Memory,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("chaos: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Whether every cycle passed.
async fn run(args: Args) -> anyhow::Result<bool> {
    let seed = args.seed.unwrap_or_else(|| fastrand::u64(..));
    let durability = match args.durability {
        Durability::Process => "process",
        Durability::Fsync => "fsync",
        Durability::Memory => "memory",
    };
    let work = tempfile::Builder::new()
        .prefix("rookery-chaos-")
        .tempdir()?;
    let launch = Launch {
        binary: broker::find_binary(args.broker)?,
        data_dir: work.path().join("data"),
        log: work.path().join("broker.log"),
        durability: durability.into(),
    };
    println!(
        "chaos: {} cycles, durability {durability}, seed {seed}, broker {}",
        args.cycles,
        launch.binary.display()
    );
    let traffic = Duration::from_millis(args.traffic_ms);
    let mut world = World::new(seed, args.bulk_rate);
    let mut broker = launch.start()?;
    world.subscribe_all(broker.addr).await?;
    let mut totals = Totals::default();
    for cycle in 1..=args.cycles {
        let report = world.cycle(cycle, &launch, &mut broker, traffic).await?;
        println!("cycle {cycle:>3}/{}: {}", args.cycles, report.line());
        for problem in &report.problems {
            println!("    {problem}");
        }
        let failed = report.violations() > 0;
        totals.add(&report);
        if failed && !args.keep_going {
            break;
        }
    }
    broker.kill();
    println!("total: {}", totals.line());
    let passed = totals.violations == 0;
    if !passed || args.keep {
        let kept = work.keep();
        println!(
            "data dir and broker log kept in {} (replay: --seed {seed})",
            kept.display()
        );
    }
    Ok(passed)
}
