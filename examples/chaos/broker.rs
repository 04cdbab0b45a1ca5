//! The real `rookery` binary on a data dir: started on port 0 (the port is read
//! from its start banner), killed with SIGKILL, started again on the same dir.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How the broker is started each time.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    pub data_dir: PathBuf,
    /// Every line the broker writes to stderr, over all its lives.
    pub log: PathBuf,
    pub durability: String,
}

/// A running broker. Cloned handles share it, so a timer task can kill it while
/// the clients are busy.
#[derive(Clone)]
pub struct Broker {
    child: Arc<Mutex<Option<Child>>>,
    pub addr: SocketAddr,
    /// When the process was spawned: no timer in the broker starts earlier.
    pub spawned: Instant,
}

impl Launch {
    pub fn start(&self) -> anyhow::Result<Broker> {
        let spawned = Instant::now();
        let mut child = Command::new(&self.binary)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data_dir)
            .env("ROOKERY_STORAGE__DURABILITY", &self.durability)
            // Every queued message counts: no queue cap drops any.
            .env("ROOKERY_LIMITS__MAX_QUEUED_MESSAGES", "0")
            .env("ROOKERY_LOG", "warn,rookery=info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let stderr = child.stderr.take().context("stderr is piped")?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        writeln!(log, "---- broker started (pid {})", child.id())?;
        // The banner comes first; after it the thread keeps the pipe drained into
        // the log, so that logging never blocks the broker.
        let (banner_tx, banner_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut banner_tx = Some(banner_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if line.contains("rookery started") {
                    if let Some(tx) = banner_tx.take() {
                        let _ = tx.send(line);
                    }
                }
            }
        });
        let broker = Broker {
            child: Arc::new(Mutex::new(Some(child))),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            spawned,
        };
        let Ok(banner) = banner_rx.recv_timeout(Duration::from_secs(120)) else {
            broker.kill();
            bail!("the broker did not start; its log: {}", self.log.display());
        };
        let port = banner
            .split("127.0.0.1:")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse::<u16>().ok())
            .with_context(|| format!("no port in the start banner: {banner}"))?;
        Ok(Broker {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            ..broker
        })
    }
}

impl Broker {
    /// SIGKILL: no shutdown, no flush, no sync. Idempotent.
    pub fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_killed(&self) -> bool {
        self.child
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }
}

/// The `rookery` binary: `--broker`, else the one built next to this example
/// (`target/<profile>/rookery`), built with cargo if it is not there yet.
pub fn find_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/examples/chaos → target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot tell where this example was built")?;
    let binary = profile_dir.join("rookery");
    let is_release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build
        // With the example: the same features (dev-dependencies included), so this
        // reuses what built the example rather than building everything again.
        .args([
            "build",
            "--bin",
            "rookery",
            "--example",
            "chaos",
            "--manifest-path",
        ])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"));
    if is_release {
        build.arg("--release");
    }
    // What `cargo run` set for this example: build scripts (ring's) rerun when it
    // changes, so with it the build would start over, here and on the next `cargo run`.
    for (name, _) in std::env::vars() {
        let is_package_env = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "OUT_DIR";
        if is_package_env {
            build.env_remove(name);
        }
    }
    // Cheap when it is up to date, and it never runs a stale broker.
    let status = build.status();
    match status {
        Ok(status) if status.success() => {}
        _ if binary.exists() => eprintln!("cargo build failed; using {}", binary.display()),
        _ => bail!("cannot build rookery; pass --broker PATH"),
    }
    Ok(binary)
}

/// Files in the data dir by kind, to show how much the LSM tree moved: journal
/// segments, and tables (each memtable flush or compaction writes new ones).
pub fn data_files(dir: &Path) -> (usize, usize) {
    let (mut journals, mut tables) = (0, 0);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "jnl") {
                journals += 1;
            } else if path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|name| name == "tables")
            {
                tables += 1;
            }
        }
    }
    (journals, tables)
}
