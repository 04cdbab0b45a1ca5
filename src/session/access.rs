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

use std::time::Instant;

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
    /// The client's address, for log lines.
    pub addr: Option<std::net::SocketAddr>,
    /// The listener it came in on (`tcp 127.0.0.1:1883`), for log lines.
    pub listener: std::sync::Arc<str>,
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
    /// topic name, or a filter without its `$share/<group>/` prefix). A denied
    /// publish or subscribe is the operator's business and logged (rate-limited); a
    /// delivery held back by a `deny` rule is the ACL working as written.
    pub(super) fn is_allowed(
        &mut self,
        broker: &Broker,
        action: Action,
        topic: &str,
        now: Instant,
    ) -> bool {
        let is_allowed = broker.authorize(&self.identity, action, topic);
        if !is_allowed {
            match action {
                Action::Receive => {
                    tracing::debug!(client_id = %self.client_id, topic, "delivery denied by the ACL")
                }
                _ => self.denials.deny(&self.client_id, action, topic, now),
            }
        }
        is_allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{AclFile, PasswordFile};
    use crate::config::{Limits, SessionConfig};
    use crate::protocol::{Properties, ProtocolVersion, QoS, Will};
    use bytestring::ByteString;

    const PASSWORDS: &str = include_str!("../../tests/fixtures/passwords");

    fn connect(username: Option<&str>, password: Option<&str>, will: Option<&str>) -> Connect {
        Connect {
            version: ProtocolVersion::V5,
            clean_start: true,
            keep_alive: 60,
            client_id: ByteString::from("c1"),
            will: will.map(|topic| Will {
                topic: ByteString::from(topic),
                payload: bytes::Bytes::new(),
                qos: QoS::AtMostOnce,
                retain: false,
                properties: Properties::default(),
            }),
            username: username.map(ByteString::from),
            password: password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes())),
            properties: Properties::default(),
        }
    }

    fn run(connect: &Connect, peer: &Peer) -> Result<Option<String>, ReasonCode> {
        let authenticator = Authenticator::new(
            false,
            Some(PasswordFile::parse(PASSWORDS).unwrap()),
            Some(AclFile::parse("pattern write wills/%u\n").unwrap()),
        );
        let negotiated = super::super::connect::negotiate(
            connect,
            &Limits::default(),
            &SessionConfig::default(),
        )
        .unwrap();
        admit(connect, negotiated, peer, &authenticator).map(|negotiated| negotiated.username)
    }

    #[test]
    fn password_decides_without_a_certificate_identity() {
        let peer = Peer::default();
        let ok = connect(Some("alice"), Some("wonderland"), None);
        assert_eq!(run(&ok, &peer), Ok(Some("alice".to_string())));
        let wrong = connect(Some("alice"), Some("x"), None);
        assert_eq!(
            run(&wrong, &peer),
            Err(ReasonCode::BAD_USER_NAME_OR_PASSWORD)
        );
        let anonymous = connect(None, None, None);
        assert_eq!(run(&anonymous, &peer), Err(ReasonCode::NOT_AUTHORIZED));
    }

    #[test]
    fn certificate_name_replaces_the_username_and_skips_the_password() {
        let peer = Peer {
            certificate_name: Some("device-1".to_string()),
            is_name_username: true,
            ..Peer::default()
        };
        let connect = connect(Some("alice"), Some("wrong"), None);
        assert_eq!(run(&connect, &peer), Ok(Some("device-1".to_string())));
    }

    #[test]
    fn certificate_without_a_name_is_not_authorized() {
        let peer = Peer {
            certificate_name: None,
            is_name_username: true,
            ..Peer::default()
        };
        let connect = connect(None, None, None);
        assert_eq!(run(&connect, &peer), Err(ReasonCode::NOT_AUTHORIZED));
    }

    #[test]
    fn will_topic_needs_write_access() {
        let peer = Peer::default();
        let own = connect(Some("alice"), Some("wonderland"), Some("wills/alice"));
        assert!(run(&own, &peer).is_ok());
        let other = connect(Some("alice"), Some("wonderland"), Some("wills/bob"));
        assert_eq!(run(&other, &peer), Err(ReasonCode::NOT_AUTHORIZED));
    }
}
