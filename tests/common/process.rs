//! The real `rookery` binary on a data dir, for crash tests: started, then
//! killed with SIGKILL (no shutdown, no flush, no sync) and restarted.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `rookery` binary on a data dir, killed with SIGKILL.
pub struct BrokerProcess {
    child: Child,
    pub addr: SocketAddr,
}

impl BrokerProcess {
    pub async fn start(dir: &Path) -> BrokerProcess {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(env!("CARGO_BIN_EXE_rookery"))
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // From here on, Drop kills and reaps the child, even if the test panics.
        let broker = BrokerProcess { child, addr };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return broker;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the broker did not start listening on {addr}");
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
