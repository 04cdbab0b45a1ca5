//! DISCONNECT (MQTT 3.1.1 §3.14, MQTT 5.0 §3.14).

use super::{Properties, ReasonCode};

/// The end of a connection; in v5 either side may send it, with a reason.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Disconnect {
    /// v5 reason; `NORMAL_DISCONNECTION` for 3.x.
    pub reason: ReasonCode,
    /// v5: session expiry update, reason string, server reference, user properties.
    pub properties: Properties,
}
