//! The real `rookery` binary on a data dir, for crash tests: started, then
//! killed with SIGKILL (no shutdown, no flush, no sync) and restarted.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The `rookery` binary on a data dir, killed with SIGKILL.
pub struct BrokerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl BrokerProcess {
    /// Starts the broker on port 0 and reads the port it bound from its start
    /// banner. Choosing a free port first and passing it in races with every other
    /// process on the machine, which may take the port in between.
    pub async fn start(dir: &Path) -> BrokerProcess {
        BrokerProcess::start_with_env(dir, &[]).await
    }

    /// [`BrokerProcess::start`] with configuration from the environment
    /// (`ROOKERY_<SECTION>__<KEY>`).
    pub async fn start_with_env(dir: &Path, env: &[(&str, &str)]) -> BrokerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rookery"))
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().expect("piped");
        // From here on, Drop kills and reaps the child, even if the test panics.
        let mut broker = BrokerProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let (banner, lines) = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stderr).lines();
            let banner = lines
                .by_ref()
                .map_while(Result::ok)
                .find(|line| line.contains("rookery started"));
            (banner, lines)
        })
        .await
        .unwrap();
        let banner = banner.expect("the broker exited before its start banner");
        // Keeps the pipe drained, so that logging never blocks the broker.
        std::thread::spawn(move || lines.for_each(drop));
        let port = banner
            .split("127.0.0.1:")
            .nth(1)
            .map(|rest| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .and_then(|digits| digits.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in the start banner: {banner}"));
        broker.addr.set_port(port);
        broker
    }

    /// The process id, for reading its memory from `/proc`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: no shutdown, no flush, no sync.
    pub fn kill(self) {
        drop(self);
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
