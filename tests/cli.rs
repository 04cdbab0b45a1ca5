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
