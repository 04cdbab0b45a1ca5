//! Authentication and authorization applied to MQTT: who may CONNECT (password
//! file, or the TLS client certificate), and the ACL checks of PUBLISH, SUBSCRIBE,
//! deliveries, retained messages and wills.
//!
//! The decisions themselves are [`Authenticator`]'s; this file maps them onto
//! packets and reason codes:
//!
//! | refused              | MQTT 3.1.1                        | MQTT 5.0                  |
//! |----------------------|-----------------------------------|---------------------------|
//! | CONNECT, bad login   | CONNACK `0x04`                    | CONNACK `0x86`            |
//! | CONNECT, not allowed | CONNACK `0x05`                    | CONNACK `0x87`            |
//! | will topic           | CONNACK `0x05`                    | CONNACK `0x87`            |
//! | SUBSCRIBE filter     | SUBACK `0x80`                     | SUBACK `0x87`             |
//! | PUBLISH              | dropped, acknowledged as usual    | PUBACK/PUBREC `0x87`      |
//! | delivery, retained   | not sent                          | not sent                  |
//!
//! The authenticator is read from the broker at each check, so a reload applies to
//! connected clients from their next packet on.

use super::{Negotiated, Session};
use crate::auth::{Action, Authenticator, ClientIdentity, Denied};
use crate::broker::Broker;
use crate::protocol::{Connect, ReasonCode};

/// What the transport learned about a client before its CONNECT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peer {
    /// The Common Name of the verified client certificate, if one was presented.
    pub certificate_name: Option<String>,
    /// The listener's `identity_as_username`: the certificate name replaces the
    /// CONNECT username, and no password is checked.
    pub is_name_username: bool,
}

/// Decides whether an otherwise acceptable CONNECT may proceed, and settles the
/// username the session will act as. `Err` carries the refusing CONNACK code.
pub fn admit(
    connect: &Connect,
    mut negotiated: Negotiated,
    peer: &Peer,
    authenticator: &Authenticator,
) -> Result<Negotiated, ReasonCode> {
    if peer.is_name_username {
        // mosquitto's use_identity_as_username: the certificate vouches for the client.
        match &peer.certificate_name {
            Some(name) => negotiated.username = Some(name.clone()),
            None => return Err(ReasonCode::NOT_AUTHORIZED),
        }
    } else {
        let username = connect.username.as_deref();
        let password = connect.password.as_deref();
        authenticator
            .authenticate(username, password)
            .map_err(|denied| match denied {
                Denied::BadCredentials => ReasonCode::BAD_USER_NAME_OR_PASSWORD,
                Denied::NotAuthorized => ReasonCode::NOT_AUTHORIZED,
            })?;
    }
    if let Some(will) = &negotiated.will {
        // The will is published in this client's name, so it needs `write` (mosquitto does the same).
        let identity = identity(&negotiated);
        if !authenticator.authorize(&identity, Action::Publish, will.topic.as_str()) {
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
    }
    Ok(negotiated)
}

/// The ACL identity of a negotiated connection.
pub fn identity(negotiated: &Negotiated) -> ClientIdentity {
    ClientIdentity {
        client_id: negotiated.client_id.as_str().to_string(),
        username: negotiated.username.clone(),
    }
}

impl Session {
    /// Whether the broker's current ACL lets this client do `action` on `topic` (a
    /// topic name, or a filter without its `$share/<group>/` prefix).
    pub(super) fn is_allowed(&self, broker: &Broker, action: Action, topic: &str) -> bool {
        let is_allowed = broker.authorize(&self.identity, action, topic);
        if !is_allowed {
            tracing::debug!(client_id = %self.client_id, ?action, topic, "denied by the ACL");
        }
        is_allowed
    }
}
