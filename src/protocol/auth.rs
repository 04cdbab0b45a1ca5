//! AUTH (MQTT 5.0 §3.15): enhanced authentication exchange.

use super::{Properties, ReasonCode};

/// An AUTH packet.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Auth {
    /// 0x00 success, 0x18 continue, 0x19 re-authenticate.
    pub reason: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: Properties,
}
