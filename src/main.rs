//! The `rookery` command: run a broker, or (`rookery passwd`) edit a password file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rookery::config::{LogConfig, LogFormat};
use rookery::{Config, Server};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// mimalloc: the broker allocates many small, short-lived buffers across threads,
/// where it measured faster than the system allocator (see README, Performance).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// An MQTT 3.1, 3.1.1 and 5.0 broker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see config/rookery.toml). Without one, the embedded
    /// defaults: 127.0.0.1:1883, data in ./data.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen on this address with plain TCP (repeatable); replaces the file's listeners.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<SocketAddr>,
    /// Data directory; overrides `storage.dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Add a user to a mosquitto-compatible password file, or change their password.
    Passwd(passwd::Args),
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    // ROOKERY_LOG is the log filter, not a configuration key.
    let env = std::env::vars().filter(|(name, _)| name != "ROOKERY_LOG");
    let mut config = match &cli.config {
        Some(path) => Config::load(path, env)?,
        None => Config::parse("", env)?,
    };
    if !cli.listen.is_empty() {
        config.listeners = cli
            .listen
            .iter()
            .map(|&bind| rookery::config::ListenerConfig {
                bind,
                ..Default::default()
            })
            .collect();
    }
    if let Some(dir) = &cli.data_dir {
        config.storage.dir = dir.clone();
    }
    config.validate()?;
    Ok(config)
}

/// Exit codes: 0 after a clean shutdown, 1 when the broker cannot start or a
/// command fails, 2 for a command line clap rejects (clap exits itself).
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line and nothing else: each error already says what failed and
            // where, so neither anyhow's `Caused by:` chain (which repeats it) nor a
            // backtrace (RUST_BACKTRACE=1 is common) would help an operator.
            eprintln!("rookery: {}", error.to_string().replace('\n', "; "));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    if let Some(Command::Passwd(args)) = &cli.command {
        return passwd::run(args);
    }
    let config = load_config(cli)?;
    if cli.print_config {
        print!("{}", toml::to_string_pretty(&config)?);
        return Ok(());
    }
    init_logging(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| anyhow::anyhow!("cannot start the async runtime: {error}"))?;
    runtime.block_on(async {
        let server = Server::bind(config.clone()).await?;
        log_banner(cli, &config, &server);
        wait_for_signal(&server).await;
        tracing::info!("shutting down");
        server.shutdown().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}

/// Levels when `ROOKERY_LOG` is unset: the broker's own events at INFO, other
/// crates (fjall, rustls, tungstenite…) only when something is wrong.
const DEFAULT_LOG: &str = "warn,rookery=info";

/// Logs to stderr, as text or JSON lines, with colours only on a terminal (a file or
/// journald would otherwise get escape codes).
fn init_logging(config: &LogConfig) {
    let filter = match std::env::var("ROOKERY_LOG") {
        Ok(directives) => EnvFilter::new(directives),
        Err(_) => EnvFilter::new(DEFAULT_LOG),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The first line an operator looks for: what runs, from which file, on which
/// data, listening where.
fn log_banner(cli: &Cli, config: &Config, server: &Server) {
    let listeners: Vec<String> = config
        .listeners
        .iter()
        .zip(server.local_addrs())
        .map(|(listener, addr)| format!("{} {addr}", listener.kind.name()))
        .collect();
    let data_dir = std::path::absolute(&config.storage.dir).unwrap_or(config.storage.dir.clone());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %cli.config.as_deref().map_or("(built-in defaults)".into(), |path| path.display().to_string()),
        data_dir = %data_dir.display(),
        durability = format!("{:?}", config.storage.durability).to_lowercase(),
        listeners = %listeners.join(", "),
        "rookery started"
    );
}

/// Waits for ctrl-c or SIGTERM; reloads certificates and auth files on SIGHUP.
async fn wait_for_signal(server: &Server) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut terminate), Ok(mut hangup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => return,
                    _ = terminate.recv() => return,
                    _ = hangup.recv() => {
                        tracing::info!("SIGHUP: reloading");
                        // A failure is logged by the server and keeps the old configuration.
                        let _ = server.reload();
                    }
                }
            }
        }
    }
    let _ = server;
    let _ = tokio::signal::ctrl_c().await;
}

/// `rookery passwd`: mosquitto_passwd without installing mosquitto.
mod passwd {
    use std::io::{BufRead, IsTerminal};
    use std::path::{Path, PathBuf};

    use anyhow::{anyhow, bail};
    use rookery::auth::{hash_password, set_entry, HashKind};

    #[derive(Debug, clap::Args)]
    pub struct Args {
        /// Create the file, replacing any existing one.
        #[arg(short = 'c')]
        create: bool,
        /// Write a `$7$` PBKDF2-SHA512 hash (readable by mosquitto 2.0) instead of argon2id.
        #[arg(long)]
        pbkdf2: bool,
        /// The password. Without it, it is asked for on a terminal, or read as one line from stdin.
        #[arg(long)]
        password: Option<String>,
        /// The password file.
        file: PathBuf,
        /// The user to add or update.
        user: String,
    }

    pub fn run(args: &Args) -> anyhow::Result<()> {
        let text = match (args.create, std::fs::read_to_string(&args.file)) {
            (true, _) => String::new(),
            (false, Ok(text)) => text,
            (false, Err(error)) => bail!(
                "cannot read {}: {error} (use -c to create it)",
                args.file.display()
            ),
        };
        let password = match &args.password {
            Some(password) => password.clone(),
            None => read_password()?,
        };
        let kind = match args.pbkdf2 {
            true => HashKind::Pbkdf2Sha512,
            false => HashKind::Argon2id,
        };
        let updated = set_entry(&text, &args.user, &hash_password(&password, kind))?;
        write_private(&args.file, &updated)
    }

    fn read_password() -> anyhow::Result<String> {
        if std::io::stdin().is_terminal() {
            let password = rpassword::prompt_password("Password: ")?;
            if password != rpassword::prompt_password("Reenter password: ")? {
                bail!("passwords do not match");
            }
            return Ok(password);
        }
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Writes beside the file and renames over it, so a broker watching the file
    /// never reads half of it; the file is readable by its owner only.
    fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&temporary)
            .map_err(|error| anyhow!("cannot write {}: {error}", temporary.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
            .map_err(|error| anyhow!("cannot replace {}: {error}", path.display()))
    }
}
