//! The value a session has in the bucket: who owns it, with which claim, and
//! what it keeps (JSON, so `nats kv get` shows it as it is).

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::broker::seam::{Error, StoredSubscription};
use crate::protocol::ClientId;
use crate::storage::record;

/// The format of [`Owner`] this release writes.
pub(super) const FORMAT: u8 = 1;

/// A session's value in the bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(super) struct Owner {
    /// [`FORMAT`].
    pub(super) format: u8,
    /// The node whose connection claimed the session last.
    pub(super) node: String,
    /// The client id (a key may be a hash of it).
    pub(super) client_id: String,
    /// A session that outlives its connection exists (it may be resumed).
    pub(super) has_session: bool,
    /// When the session expires, in wall-clock milliseconds, once its
    /// connection has gone; `None` while connected, or if it never expires. Kept
    /// here so that a session whose node is gone still expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) expires_at_ms: Option<u64>,
    /// The claim resumed the session (Clean Start 0) rather than starting anew.
    pub(super) is_resumed: bool,
    /// Filter → options and subscription identifier, as the local store encodes them.
    pub(super) subscriptions: BTreeMap<String, Vec<u8>>,
}

impl Owner {
    pub(super) fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    pub(super) fn decode(value: &[u8]) -> Result<Owner, Error> {
        let owner: Owner =
            serde_json::from_slice(value).map_err(|error| Error::Corrupt(error.to_string()))?;
        if owner.format > FORMAT {
            return Err(Error::UnknownFormat {
                found: owner.format,
                known: FORMAT,
            });
        }
        Ok(owner)
    }

    /// Whether a session is there to resume at wall-clock time `now_ms`.
    pub(super) fn is_resumable(&self, now_ms: u64) -> bool {
        self.has_session && self.expires_at_ms.is_none_or(|at| at > now_ms)
    }

    pub(super) fn stored_subscriptions(&self) -> Vec<StoredSubscription> {
        let client_id = ClientId::new(self.client_id.as_str());
        self.subscriptions
            .iter()
            .filter_map(|(filter, options)| {
                let decoded = record::decode_subscription(Bytes::copy_from_slice(options));
                let (options, identifier) = decoded
                    .map_err(|error| warn!(%client_id, %filter, %error, "cluster: stored subscription skipped"))
                    .ok()?;
                Some(StoredSubscription {
                    client_id: client_id.clone(),
                    filter: filter.clone(),
                    options,
                    identifier,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{QoS, SubscriptionOptions};

    fn owner() -> Owner {
        let options = SubscriptionOptions {
            qos: QoS::ExactlyOnce,
            no_local: true,
            ..Default::default()
        };
        let encoded = record::encode_subscription(options, Some(7));
        Owner {
            format: FORMAT,
            node: "n1".into(),
            client_id: "é/c".into(),
            has_session: true,
            expires_at_ms: None,
            is_resumed: false,
            subscriptions: BTreeMap::from([("a/+".to_string(), encoded.to_vec())]),
        }
    }

    #[test]
    fn issue_10_an_owner_round_trips_with_its_subscriptions() {
        let owner = owner();
        let decoded = Owner::decode(&owner.encode()).unwrap();
        assert_eq!(decoded, owner);
        let subscriptions = decoded.stored_subscriptions();
        assert_eq!(subscriptions.len(), 1);
        assert_eq!(subscriptions[0].client_id, ClientId::new("é/c"));
        assert_eq!(subscriptions[0].options.qos, QoS::ExactlyOnce);
        assert!(subscriptions[0].options.no_local);
        assert_eq!(subscriptions[0].identifier, Some(7));
    }

    #[test]
    fn issue_10_an_offline_session_past_its_expiry_is_not_resumed() {
        let mut owner = owner();
        assert!(owner.is_resumable(1_000));
        owner.expires_at_ms = Some(1_000);
        assert!(owner.is_resumable(999));
        assert!(!owner.is_resumable(1_000));
        owner.has_session = false;
        owner.expires_at_ms = None;
        assert!(!owner.is_resumable(0));
    }

    #[test]
    fn issue_10_a_newer_format_or_garbage_is_refused_not_misread() {
        let mut newer = owner();
        newer.format = FORMAT + 1;
        assert!(matches!(
            Owner::decode(&newer.encode()),
            Err(Error::UnknownFormat { .. })
        ));
        assert!(matches!(Owner::decode(b"\xff{"), Err(Error::Corrupt(_))));
    }

    #[test]
    fn issue_10_a_subscription_that_does_not_decode_is_skipped() {
        let mut owner = owner();
        owner.subscriptions.insert("bad".into(), vec![9]);
        let filters: Vec<_> = owner
            .stored_subscriptions()
            .into_iter()
            .map(|subscription| subscription.filter)
            .collect();
        assert_eq!(filters, ["a/+"]);
    }
}
