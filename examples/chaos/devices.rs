//! Will-carrying clients, a new set each cycle, and how many times each will may
//! be published. The watcher (a QoS 2 subscriber to `will/#`) counts them.
//!
//! | kind   | session                   | during traffic            | after the kill         | wills |
//! |--------|---------------------------|---------------------------|------------------------|-------|
//! | Clean  | 3.1.1 clean session       | connected                 | never back             | 1     |
//! | Gone   | 5.0, expiry 300 s, delay 2 s | connected              | never back             | 1     |
//! | Back   | 5.0, expiry 300 s, delay 2 s | connected              | back at once, then DISCONNECT 0x00 | 0 (0–1 if it came back late) |
//! | Polite | 5.0 expiry 0              | DISCONNECT 0x00 at a random moment | —             | 0 (1 if still connected at the kill; 0–1 if its DISCONNECT was in flight) |
//! | Drop   | 3.1.1 clean session       | drops the socket at a random moment | —              | 1     |
//!
//! A device of any kind whose CONNACK never came (the kill fell in its connect)
//! may see its will published once: the broker may have stored it already.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rookery::protocol::ProtocolVersion;
use tokio::task::JoinHandle;

use crate::conn::{connect_packet, will, Conn};

pub const WILL_DELAY: Duration = Duration::from_secs(2);
const EXPIRY: u32 = 300;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Clean,
    Gone,
    Back,
    Polite,
    Drop,
}

pub const KINDS: [Kind; 5] = [
    Kind::Clean,
    Kind::Gone,
    Kind::Back,
    Kind::Polite,
    Kind::Drop,
];

/// What the device did that decides its will.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// Connected when the broker was killed.
    Crashed,
    /// Sent DISCONNECT 0x00; the broker closed the connection then, if it did.
    DisconnectSent { closed_at: Option<Instant> },
    /// The broker closed the connection after a DISCONNECT, before it was killed:
    /// the will is gone.
    Disconnected,
    /// Sent DISCONNECT 0x00, but the close may have been the kill.
    DisconnectInFlight,
    /// Dropped its socket.
    Dropped,
    /// No CONNACK came (the broker died first). Its CONNECT may still have been
    /// handled, the will stored with the session before the CONNACK went out:
    /// then the will is rightly published after the restart, as for any
    /// connection the crash ended.
    NeverConnected,
}

pub struct Device {
    pub client_id: String,
    pub kind: Kind,
    ending: Option<Ending>,
    /// Back: a reconnect came too late to be sure it beat the will delay.
    came_back_late: bool,
    /// Back: connected after a restart (until the checks end).
    back: Option<Conn>,
    pub sessions_lost: u64,
}

impl Device {
    pub fn new(cycle: u32, kind: Kind, index: usize) -> Device {
        Device {
            client_id: format!("dev-{cycle}-{kind:?}-{index}").to_lowercase(),
            kind,
            ending: None,
            came_back_late: false,
            back: None,
            sessions_lost: 0,
        }
    }

    /// How many times its will may have been published: (at least, at most).
    pub fn wills_allowed(&self) -> (u32, u32) {
        match (self.kind, self.ending) {
            (_, None) => (0, 0),
            (_, Some(Ending::NeverConnected)) => (0, 1),
            (Kind::Back, _) if self.came_back_late => (0, 1),
            (Kind::Back, _) => (0, 0),
            (_, Some(Ending::Disconnected)) => (0, 0),
            (_, Some(Ending::DisconnectInFlight | Ending::DisconnectSent { .. })) => (0, 1),
            (_, Some(Ending::Crashed | Ending::Dropped)) => (1, 1),
        }
    }

    /// Connects with its will and lives out the traffic phase; returns when the
    /// broker dies or the device has left.
    pub async fn live(mut self, addr: SocketAddr, leave_after: Duration) -> Device {
        let (version, expiry, delay) = match self.kind {
            Kind::Clean | Kind::Drop => (ProtocolVersion::V3_1_1, None, None),
            Kind::Gone | Kind::Back => (
                ProtocolVersion::V5,
                Some(EXPIRY),
                Some(WILL_DELAY.as_secs() as u32),
            ),
            Kind::Polite => (ProtocolVersion::V5, Some(0), None),
        };
        let mut connect = connect_packet(version, &self.client_id, expiry);
        connect.will = Some(will(&self.client_id, delay));
        let Ok((mut conn, _)) = Conn::open(addr, connect).await else {
            self.ending = Some(Ending::NeverConnected);
            return self;
        };
        let leaves = matches!(self.kind, Kind::Polite | Kind::Drop);
        let closed = async { while conn.recv().await.is_ok() {} };
        tokio::select! {
            () = closed => {
                self.ending = Some(Ending::Crashed);
                return self;
            }
            () = tokio::time::sleep(leave_after), if leaves => {}
        }
        self.ending = Some(match self.kind {
            Kind::Drop => {
                drop(conn);
                Ending::Dropped
            }
            _ => Ending::DisconnectSent {
                closed_at: conn.disconnect_confirmed().await,
            },
        });
        self
    }

    /// Decides, now that the kill's moment is known, whether a DISCONNECT took
    /// effect before it.
    pub fn settle(&mut self, killed_at: Instant) {
        if let Some(Ending::DisconnectSent { closed_at }) = self.ending {
            self.ending = Some(match closed_at {
                Some(at) if at < killed_at => Ending::Disconnected,
                _ => Ending::DisconnectInFlight,
            });
        }
    }

    /// Back devices reconnect after a restart (without a will: the new connection
    /// replaces it) and stay until [`Device::leave`].
    pub async fn come_back(&mut self, addr: SocketAddr, spawned: Instant) {
        if self.kind != Kind::Back || self.ending != Some(Ending::Crashed) {
            return;
        }
        let connect = connect_packet(ProtocolVersion::V5, &self.client_id, Some(EXPIRY));
        match Conn::open(addr, connect).await {
            Ok((conn, connack)) => {
                if !connack.session_present {
                    self.sessions_lost += 1;
                }
                // The broker's will delay starts no earlier than its spawn.
                if spawned.elapsed() + Duration::from_millis(300) > WILL_DELAY {
                    self.came_back_late = true;
                }
                self.back = Some(conn);
            }
            Err(_) => self.came_back_late = true,
        }
    }

    /// Ends a Back device's connection with DISCONNECT 0x00.
    pub async fn leave(&mut self) {
        if let Some(conn) = self.back.take() {
            conn.disconnect().await;
        }
    }

    /// Forgets a connection the broker's death ended.
    pub fn lost_connection(&mut self) {
        self.back = None;
    }
}

/// Starts every device's traffic phase.
pub fn spawn_all(
    devices: Vec<Device>,
    addr: SocketAddr,
    rng: &mut fastrand::Rng,
    traffic: Duration,
) -> Vec<JoinHandle<Device>> {
    devices
        .into_iter()
        .map(|device| {
            let leave_after = traffic.mul_f64(rng.f64());
            tokio::spawn(device.live(addr, leave_after))
        })
        .collect()
}
