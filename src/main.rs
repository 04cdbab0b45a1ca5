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

/// What `--help` adds after the options: the knobs that are not flags.
const AFTER_HELP: &str = "\
Environment:
  ROOKERY_LOG                  log filter (tracing EnvFilter); default \"warn,rookery=info\",
                               e.g. ROOKERY_LOG=debug or ROOKERY_LOG=info,rookery::connection_log=warn
  ROOKERY_<SECTION>__<KEY>     overrides one configuration key, e.g.
                               ROOKERY_LIMITS__MAX_INFLIGHT=50, ROOKERY_STORAGE__DIR=/var/lib/rookery,
                               ROOKERY_LOG__FORMAT=json (the value is read as TOML, else as a string)

Signals:
  SIGHUP            reload TLS certificates, keys, CA bundle, CRL, password and ACL files;
                    clients stay connected, a failed reload keeps the old files
  SIGTERM, SIGINT   shut down: v5 clients get DISCONNECT 0x8B, storage is flushed,
                    clients that do not read are dropped after [server] shutdown_timeout

Exit status: 0 after a clean shutdown, 1 when the broker cannot start, 2 for a bad command line.";

/// An MQTT 3.1, 3.1.1 and 5.0 broker.
#[derive(Debug, Parser)]
#[command(version, about, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML configuration file (see config/rookery.toml). Without one, the embedded
    /// defaults: 127.0.0.1:1883, data in ./data.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Listen with plain TCP on PORT (loopback, as mosquitto 2 does without a
    /// configuration) or HOST:PORT (repeatable); replaces the file's listeners.
    #[arg(long = "listen", value_name = "PORT|HOST:PORT", value_parser = parse_listen)]
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
    /// Write development certificates into DIR: a CA, a server certificate for
    /// localhost and 127.0.0.1, and client certificates for device-1 and device-2.
    GenCerts(gen_certs::Args),
}

/// `1883` → 127.0.0.1:1883; `0.0.0.0:1883`, `[::]:1883`, `localhost:1883` as written.
fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|error| format!("{text:?} is not PORT or HOST:PORT ({error})"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
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
    match &cli.command {
        Some(Command::Passwd(args)) => return passwd::run(args),
        Some(Command::GenCerts(args)) => return gen_certs::run(args),
        None => {}
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
        let mut signals = Signals::install()?;
        let server = Server::bind(config.clone()).await?;
        log_banner(cli, &config, &server);
        systemd::notify("READY=1");
        signals.wait(&server).await;
        tracing::info!("shutting down");
        systemd::notify("STOPPING=1");
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
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr (a pipe whose reader went away) must not stop the broker:
        // the default reports the failed write with eprintln!, which panics.
        .log_internal_errors(false);
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

/// SIGTERM, SIGINT and SIGHUP, caught from before the listeners open: a signal
/// sent as soon as the banner (or systemd's READY=1) appears must not find the
/// default action (exit) still in place.
#[cfg(unix)]
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        let install = |kind| {
            signal(kind).map_err(|error| anyhow::anyhow!("cannot install signal handlers: {error}"))
        };
        Ok(Signals {
            terminate: install(SignalKind::terminate())?,
            interrupt: install(SignalKind::interrupt())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// Waits for SIGTERM or SIGINT; reloads certificates and auth files on SIGHUP.
    async fn wait(&mut self, server: &Server) {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => return,
                _ = self.interrupt.recv() => return,
                _ = self.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading");
                    systemd::notify("RELOADING=1");
                    // A failure is logged by the server and keeps the old configuration.
                    let _ = server.reload();
                    systemd::notify("READY=1");
                }
            }
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> anyhow::Result<Signals> {
        Ok(Signals)
    }

    async fn wait(&mut self, _server: &Server) {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// systemd's `Type=notify` protocol (sd_notify(3)) without a library: one datagram
/// to `$NOTIFY_SOCKET`. Outside systemd the variable is unset and nothing is sent.
mod systemd {
    pub fn notify(state: &str) {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return;
        };
        if let Err(error) = send(&path, state) {
            tracing::warn!(%error, "could not notify systemd");
        }
    }

    #[cfg(target_os = "linux")]
    fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let bytes = path.as_bytes();
        // A leading '@' names an abstract socket.
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name)?,
            None => SocketAddr::from_pathname(path)?,
        };
        UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
        Ok(())
    }

    #[cfg(not(target_os = "linux"))]
    fn send(_path: &std::ffi::OsStr, _state: &str) -> std::io::Result<()> {
        Ok(())
    }
}

/// `rookery gen-certs DIR`: certificates for trying TLS and mutual TLS
/// (`config/mtls.toml`). Every key is new on each run; these are for development
/// only: keep real CA keys off disk.
mod gen_certs {
    use std::path::{Path, PathBuf};

    use anyhow::anyhow;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
        IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    #[derive(Debug, clap::Args)]
    pub struct Args {
        /// Where to write ca.crt/key, server.crt/key, device-1.crt/key and device-2.crt/key.
        dir: PathBuf,
    }

    pub fn run(args: &Args) -> anyhow::Result<()> {
        let out = args.dir.as_path();
        std::fs::create_dir_all(out)
            .map_err(|error| anyhow!("cannot create {}: {error}", out.display()))?;
        let mut ca = CertificateParams::default();
        ca.distinguished_name = named("Rookery development CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        write(out, "ca.crt", &ca.self_signed(&ca_key)?.pem())?;
        write(out, "ca.key", &ca_key.serialize_pem())?;
        let issuer = Issuer::new(ca, ca_key);

        let mut server = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        server.distinguished_name = named("localhost");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        sign(out, "server", server, &issuer)?;
        for device in ["device-1", "device-2"] {
            let mut client = CertificateParams::default();
            client.distinguished_name = named(device);
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            sign(out, device, client, &issuer)?;
        }
        println!(
            "wrote ca, server, device-1 and device-2 certificates to {}",
            out.display()
        );
        Ok(())
    }

    fn named(common_name: &str) -> DistinguishedName {
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "Rookery development");
        name.push(DnType::CommonName, common_name);
        name
    }

    fn sign(
        out: &Path,
        name: &str,
        params: CertificateParams,
        issuer: &Issuer<'_, KeyPair>,
    ) -> anyhow::Result<()> {
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, issuer)?;
        write(out, &format!("{name}.crt"), &certificate.pem())?;
        write(out, &format!("{name}.key"), &key.serialize_pem())
    }

    /// Keys are readable by their owner only.
    fn write(out: &Path, name: &str, text: &str) -> anyhow::Result<()> {
        let path = out.join(name);
        std::fs::write(&path, text)
            .map_err(|error| anyhow!("cannot write {}: {error}", path.display()))?;
        #[cfg(unix)]
        if name.ends_with(".key") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
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
