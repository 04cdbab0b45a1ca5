//! The `rookery` binary as an operator meets it: the start banner, the log format,
//! and (in `errors`) what it says when it cannot start.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Starts the binary in `dir` with `args` and `env`, stderr piped.
fn spawn(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_rookery"));
    command
        .args(args)
        .current_dir(dir)
        .env_remove("ROOKERY_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().unwrap()
}

/// Sends SIGTERM, as systemd and `docker stop` do.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn banner_names_version_config_data_dir_durability_and_listeners_as_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rookery.toml"),
        "[log]\nformat = \"json\"\n[storage]\ndir = \"state\"\n",
    )
    .unwrap();
    let mut child = spawn(
        dir.path(),
        &["--config", "rookery.toml", "--listen", "127.0.0.1:0"],
        &[],
    );
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    let banner = loop {
        assert!(Instant::now() < deadline, "no banner in {lines:?}");
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited: {lines:?}"
        );
        // Not a terminal: no colour escapes.
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        lines.push(line);
        if value["message"] == "rookery started" {
            break value;
        }
    };
    assert_eq!(banner["level"], "INFO");
    assert_eq!(banner["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(banner["config"], "rookery.toml");
    let data_dir = dir.path().join("state");
    assert_eq!(banner["data_dir"], data_dir.display().to_string());
    assert_eq!(banner["durability"], "process");
    let listeners = banner["listeners"].as_str().unwrap();
    assert!(listeners.starts_with("tcp 127.0.0.1:"), "{listeners}");
    assert!(
        !listeners.ends_with(":0"),
        "the bound port, not 0: {listeners}"
    );
    // Third-party crates stay quiet at INFO.
    assert!(lines
        .iter()
        .all(|line| line.contains("\"target\":\"rookery")));
    terminate(&child);
    assert!(child.wait().unwrap().success());
}

/// Runs the binary in `dir` (with `RUST_BACKTRACE=1`, as on many developer
/// machines) expecting it to fail: exit code 1 and exactly one line on stderr,
/// which is returned.
fn fails(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = spawn(dir, args, env);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr:?}");
    assert!(!stderr.contains("Caused by") && !stderr.contains("backtrace"));
    stderr.trim_end().to_string()
}

/// What a directory holds, to check that a failed start wrote nothing.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = walk(dir);
    names.sort();
    names
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flat_map(|entry| {
            let path = entry.unwrap().path();
            let mut names = vec![path.display().to_string()];
            if path.is_dir() {
                names.extend(walk(&path));
            }
            names
        })
        .collect()
}

/// Writes `text` as `rookery.toml` in a fresh directory, runs the binary on it and
/// expects it to fail without creating anything.
fn fails_with_config(text: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rookery.toml"), text).unwrap();
    let before = listing(dir.path());
    let line = fails(
        dir.path(),
        &["--config", "rookery.toml", "--listen", "127.0.0.1:0"],
        env,
    );
    assert_eq!(listing(dir.path()), before, "a failed start wrote files");
    (dir, line)
}

#[test]
fn typo_in_a_key_names_the_file_line_and_key() {
    let (_dir, line) =
        fails_with_config("[storage]\ndir = \"d\"\n\n[limits]\nmax_inflite = 3\n", &[]);
    assert!(
        line.starts_with("rookery: rookery.toml, line 5: `limits.max_inflite`: unknown field"),
        "{line}"
    );
    assert!(
        line.contains("`max_inflight`"),
        "suggests the known keys: {line}"
    );
}

#[test]
fn bad_value_names_the_key_or_the_environment_variable() {
    let (_dir, line) = fails_with_config("[limits]\nconnect_timeout = 10\n", &[]);
    assert!(
        line.starts_with("rookery: rookery.toml, line 2: `limits.connect_timeout`: invalid type"),
        "{line}"
    );
    let (_dir, line) = fails_with_config("", &[("ROOKERY_LIMITS__MAX_INFLIGHT", "lots")]);
    assert!(
        line.starts_with(
            "rookery: environment variable ROOKERY_LIMITS__MAX_INFLIGHT: invalid type"
        ),
        "{line}"
    );
    let (_dir, line) = fails_with_config("[limits]\nmax_inflight = 0\n", &[]);
    assert!(
        line.starts_with("rookery: rookery.toml: limits.max_inflight"),
        "{line}"
    );
}

#[test]
fn unreadable_password_file_names_the_key_and_where_a_relative_path_points() {
    let (dir, line) = fails_with_config(
        "[auth]\npassword_file = \"missing\"\n[storage]\ndir = \"d\"\n",
        &[],
    );
    let expected = format!(
        "rookery: cannot read auth.password_file missing (relative to {}): no such file or directory",
        dir.path().display()
    );
    assert_eq!(line, expected);
    // A directory where the file should be cannot be read either.
    let (dir, line) = fails_with_config("[auth]\npassword_file = \".\"\n", &[]);
    assert!(
        line.starts_with(&format!(
            "rookery: cannot read auth.password_file . (relative to {}): ",
            dir.path().display()
        )),
        "{line}"
    );
}

#[test]
fn locked_data_dir_says_another_rookery_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", "state"],
        &[],
    );
    let mut stderr = BufReader::new(first.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("rookery started") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "first broker exited"
        );
    }
    let before = listing(dir.path());
    let error = fails(
        dir.path(),
        &["--listen", "127.0.0.1:0", "--data-dir", "state"],
        &[],
    );
    assert_eq!(
        error,
        format!(
            "rookery: data directory state (relative to {}) is in use by another rookery process",
            dir.path().display()
        )
    );
    assert_eq!(listing(dir.path()), before);
    terminate(&first);
    assert!(first.wait().unwrap().success());
}

#[test]
fn port_in_use_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let error = fails(dir.path(), &["--listen", &addr], &[]);
    assert_eq!(
        error,
        format!("rookery: cannot listen on {addr}: address already in use")
    );
    assert!(listing(dir.path()).is_empty(), "nothing created on disk");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("--no-such-flag")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn help_documents_rookery_log_env_overrides_and_sighup() {
    let output = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for needle in [
        "ROOKERY_LOG",
        "ROOKERY_<SECTION>__<KEY>",
        "SIGHUP",
        "SIGTERM",
        "PORT|HOST:PORT",
    ] {
        assert!(
            help.contains(needle),
            "--help does not mention {needle}:\n{help}"
        );
    }
}

/// Reads lines from the broker's stderr until the banner, returning it (text format).
fn wait_for_banner(child: &mut Child) -> String {
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("rookery started") {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "exited before the banner"
        );
    }
    line
}

#[test]
fn listen_accepts_a_bare_port_and_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(
        dir.path(),
        &[
            "--listen",
            "0",
            "--listen",
            "localhost:0",
            "--data-dir",
            "d",
        ],
        &[],
    );
    let banner = wait_for_banner(&mut child);
    // A bare port is loopback (mosquitto 2's habit without a configuration).
    assert!(banner.contains("listeners=tcp 127.0.0.1:"), "{banner}");
    assert_eq!(banner.matches("tcp ").count(), 2, "{banner}");
    terminate(&child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let output = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["--listen", "not a port"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&output.stderr).contains("is not PORT or HOST:PORT"));
}

#[cfg(target_os = "linux")]
#[test]
fn systemd_is_told_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let notify = socket_path.to_str().unwrap();
    let mut child = spawn(
        dir.path(),
        &["--listen", "0", "--data-dir", "d"],
        &[("NOTIFY_SOCKET", notify)],
    );
    let mut buffer = [0u8; 64];
    let n = socket.recv(&mut buffer).unwrap();
    assert_eq!(&buffer[..n], b"READY=1");
    terminate(&child);
    let n = socket.recv(&mut buffer).unwrap();
    assert_eq!(&buffer[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
    drop(child.stderr.take());
}

#[tokio::test]
async fn gen_certs_writes_a_ca_server_and_device_certificates_a_tls_listener_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_rookery"))
        .args(["gen-certs", "certs"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let certs = dir.path().join("certs");
    for name in ["ca", "server", "device-1", "device-2"] {
        assert!(certs.join(format!("{name}.crt")).exists(), "{name}.crt");
        let key = certs.join(format!("{name}.key"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}.key is private");
        }
    }
    // The files make a mutual-TLS listener.
    let mut config = rookery::Config::default();
    config.storage.durability = rookery::config::Durability::Memory;
    let listener = &mut config.listeners[0];
    listener.kind = rookery::config::ListenerKind::Tls;
    listener.cert = Some(certs.join("server.crt"));
    listener.key = Some(certs.join("server.key"));
    listener.client_ca = Some(certs.join("ca.crt"));
    listener.require_client_cert = true;
    let bound = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = rookery::Server::start(config, vec![bound]).unwrap();
    server.shutdown().await;
}
