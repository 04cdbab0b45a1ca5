//! The Client Identifier (MQTT 3.1.1 §3.1.3.1).

use std::fmt;

use bytestring::ByteString;

/// A client identifier: the key of a session. Cheap to clone (reference counted).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(ByteString);

impl ClientId {
    /// Wraps an identifier the client sent or the server assigned.
    pub fn new(id: impl Into<ByteString>) -> ClientId {
        ClientId(id.into())
    }

    /// The identifier as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for ClientId {
    fn borrow(&self) -> &str {
        &self.0
    }
}
