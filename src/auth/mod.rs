//! Who may connect ([`Authenticator::authenticate`]) and what they may do
//! ([`Authenticator::authorize`]).
//!
//! Everything here is a pure decision over data loaded once at start-up: a
//! mosquitto-compatible [`PasswordFile`] and [`AclFile`]. Nothing does I/O per
//! packet, takes a lock, or depends on other broker modules; `auth` is a leaf.
//!
//! The session maps a [`Denied`] to its CONNACK code:
//!
//! | [`Denied`]                  | MQTT 3.1.1 | MQTT 5.0 |
//! |-----------------------------|------------|----------|
//! | [`Denied::BadCredentials`]  | `0x04`     | `0x86` Bad User Name or Password |
//! | [`Denied::NotAuthorized`]   | `0x05`     | `0x87` Not authorized            |
//!
//! ```
//! use rookery::auth::{Action, AclFile, Authenticator, ClientIdentity, PasswordFile};
//!
//! // A `$6$` line as written by mosquitto 1.x: alice / hunter2.
//! let passwords = PasswordFile::parse(
//!     "alice:$6$AQIDBAUGBwgJCgsM$BvAI+Qf6pQOLRl808d6QZTT3a6B0xO5zIcHD3JzY0IlwG27yGPwEz2wOVlVnzMCgfQVblzctfy3CVaRYU+etmQ==",
//! )?;
//! let acl = AclFile::parse("user alice\ntopic readwrite alice/#")?;
//! let auth = Authenticator::new(false, Some(passwords), Some(acl));
//!
//! assert!(auth.authenticate(Some("alice"), Some(b"hunter2")).is_ok());
//! let alice = ClientIdentity { client_id: "phone".into(), username: Some("alice".into()) };
//! assert!(auth.authorize(&alice, Action::Subscribe, "alice/+/inbox"));
//! assert!(!auth.authorize(&alice, Action::Publish, "bob/inbox"));
//! # Ok::<(), rookery::auth::Error>(())
//! ```

mod acl;
mod filter;
mod password;

use std::path::PathBuf;

pub use acl::AclFile;
pub use password::{hash_password, set_entry, HashKind, PasswordFile};

/// Why a password or ACL file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that was being read.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not in a form this module understands.
    #[error("line {line}: {reason}")]
    Parse {
        /// 1-based line number of the first bad line.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a CONNECT was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The username is unknown or the password does not match (v3 `0x04`, v5 `0x86`).
    #[error("bad username or password")]
    BadCredentials,
    /// The client may not connect this way at all, e.g. anonymously when anonymous
    /// access is off (v3 `0x05`, v5 `0x87`).
    #[error("not authorized")]
    NotAuthorized,
}

/// Who a connected client is, for ACL checks. Built once per connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The client id (assigned by the broker if the client sent an empty one).
    pub client_id: String,
    /// The username from CONNECT; `None` for an anonymous client.
    pub username: Option<String>,
}

/// What a client wants to do with a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// PUBLISH to a topic name; needs `write`.
    Publish,
    /// SUBSCRIBE to a topic filter; needs a `read` rule covering the filter.
    Subscribe,
    /// Deliver a message with this topic name to the client; needs `read`. Checked
    /// for every delivered message (including retained ones), because a `deny` rule
    /// may carve topics out of an allowed subscription.
    Receive,
}

/// The broker's authentication and authorization policy.
#[derive(Clone, Debug)]
pub struct Authenticator {
    allow_anonymous: bool,
    passwords: Option<PasswordFile>,
    acl: Option<AclFile>,
}

impl Authenticator {
    /// Builds the policy from files already loaded at start-up. With no ACL file
    /// every authenticated client may do everything.
    pub fn new(
        allow_anonymous: bool,
        passwords: Option<PasswordFile>,
        acl: Option<AclFile>,
    ) -> Authenticator {
        Authenticator {
            allow_anonymous,
            passwords,
            acl,
        }
    }

    /// Decides a CONNECT, following mosquitto 2.0:
    /// - no username: anonymous, allowed only if `allow_anonymous`;
    /// - a username and a password file: the user must be in the file and the
    ///   password must match, whatever `allow_anonymous` says;
    /// - a username but no password file: nothing can vouch for the name, so it is
    ///   treated like an anonymous connect (mosquitto 2.0.11 answers "not
    ///   authorised" here when anonymous access is off).
    ///
    /// A password sent without a username is ignored.
    pub fn authenticate(
        &self,
        username: Option<&str>,
        password: Option<&[u8]>,
    ) -> Result<(), Denied> {
        match (username, &self.passwords) {
            (Some(username), Some(passwords)) => {
                let password = password.ok_or(Denied::BadCredentials)?;
                if passwords.verify(username, password) {
                    Ok(())
                } else {
                    Err(Denied::BadCredentials)
                }
            }
            _ if self.allow_anonymous => Ok(()),
            _ => Err(Denied::NotAuthorized),
        }
    }

    /// Whether `client` may perform `action` on `topic`; see [`AclFile::authorize`].
    /// Without an ACL file everything is allowed.
    pub fn authorize(&self, client: &ClientIdentity, action: Action, topic: &str) -> bool {
        if action == Action::Publish && topic.starts_with("$SYS") {
            // The broker's own topics: a client may write there only where an ACL
            // says so by name (`#` never matches `$SYS`, [MQTT-4.7.2-1]).
            return self
                .acl
                .as_ref()
                .is_some_and(|acl| acl.authorize(client, action, topic));
        }
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.authorize(client, action, topic))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORDS: &str = include_str!("../../tests/fixtures/passwords");

    fn with_passwords(allow_anonymous: bool) -> Authenticator {
        Authenticator::new(
            allow_anonymous,
            Some(PasswordFile::parse(PASSWORDS).unwrap()),
            None,
        )
    }

    #[test]
    fn known_user_with_right_password_connects() {
        let auth = with_passwords(false);
        assert_eq!(
            auth.authenticate(Some("alice"), Some(b"wonderland")),
            Ok(())
        );
    }

    #[test]
    fn wrong_password_is_bad_credentials() {
        let auth = with_passwords(true);
        assert_eq!(
            auth.authenticate(Some("alice"), Some(b"nope")),
            Err(Denied::BadCredentials)
        );
        assert_eq!(
            auth.authenticate(Some("alice"), None),
            Err(Denied::BadCredentials)
        );
    }

    #[test]
    fn unknown_user_is_bad_credentials_even_when_anonymous_is_allowed() {
        let auth = with_passwords(true);
        assert_eq!(
            auth.authenticate(Some("mallory"), Some(b"wonderland")),
            Err(Denied::BadCredentials)
        );
    }

    #[test]
    fn anonymous_follows_allow_anonymous() {
        assert_eq!(with_passwords(true).authenticate(None, None), Ok(()));
        assert_eq!(
            with_passwords(false).authenticate(None, Some(b"wonderland")),
            Err(Denied::NotAuthorized)
        );
    }

    #[test]
    fn username_without_password_file_counts_as_anonymous() {
        let open = Authenticator::new(true, None, None);
        assert_eq!(open.authenticate(Some("anyone"), Some(b"x")), Ok(()));
        let closed = Authenticator::new(false, None, None);
        assert_eq!(
            closed.authenticate(Some("anyone"), Some(b"x")),
            Err(Denied::NotAuthorized)
        );
    }

    #[test]
    fn no_acl_file_allows_everything() {
        let auth = Authenticator::new(true, None, None);
        let client = ClientIdentity {
            client_id: "c".into(),
            username: None,
        };
        assert!(auth.authorize(&client, Action::Publish, "any/topic"));
        assert!(auth.authorize(&client, Action::Subscribe, "#"));
    }

    #[test]
    fn acl_file_is_consulted() {
        let acl = AclFile::parse("topic read public/#").unwrap();
        let auth = Authenticator::new(true, None, Some(acl));
        let client = ClientIdentity {
            client_id: "c".into(),
            username: None,
        };
        assert!(auth.authorize(&client, Action::Subscribe, "public/+"));
        assert!(!auth.authorize(&client, Action::Publish, "public/x"));
    }

    #[test]
    fn publishing_into_sys_needs_an_acl_rule_that_names_it() {
        let client = ClientIdentity {
            client_id: "c".into(),
            username: Some("admin".into()),
        };
        let open = Authenticator::new(true, None, None);
        assert!(!open.authorize(&client, Action::Publish, "$SYS/broker/version"));
        assert!(open.authorize(&client, Action::Subscribe, "$SYS/broker/#"));
        assert!(open.authorize(&client, Action::Publish, "sensors/a"));
        let everything = AclFile::parse("user admin\ntopic readwrite #\n").unwrap();
        let everything = Authenticator::new(true, None, Some(everything));
        assert!(!everything.authorize(&client, Action::Publish, "$SYS/broker/version"));
        let named = AclFile::parse("user admin\ntopic write $SYS/#\n").unwrap();
        let named = Authenticator::new(true, None, Some(named));
        assert!(named.authorize(&client, Action::Publish, "$SYS/broker/version"));
    }
}
