//! Subscriptions: who gets a message published on a topic.
//!
//! Plain subscriptions live in one [`TopicTrie`] keyed by client id; `$share/{group}/…`
//! subscriptions live in a second trie keyed by (group, client id), and each
//! publish goes to one member of each matching group, round robin (MQTT 5.0 §4.8.2).
//! The router only answers "who"; the broker delivers and stores.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytestring::ByteString;

use super::trie::TopicTrie;
use crate::protocol::{ClientId, QoS, SharedFilter, SubscriptionOptions, TopicFilter, TopicName};

/// One subscription's options, as SUBSCRIBE set them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// QoS, no-local, retain-as-published, retain handling.
    pub options: SubscriptionOptions,
    /// v5 subscription identifier.
    pub identifier: Option<u32>,
}

/// A filter as a client subscribes to it: plain or shared.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// A normal topic filter.
    Plain(TopicFilter),
    /// `$share/{group}/{filter}`.
    Shared(SharedFilter),
}

impl Filter {
    /// Parses and validates a filter from SUBSCRIBE or UNSUBSCRIBE.
    pub fn parse(text: &str) -> Result<Filter, crate::protocol::Error> {
        match SharedFilter::parse(text)? {
            Some(shared) => Ok(Filter::Shared(shared)),
            None => Ok(Filter::Plain(TopicFilter::new(ByteString::from(text))?)),
        }
    }

    /// The topic filter, without any `$share/{group}/` prefix.
    pub fn topic_filter(&self) -> &TopicFilter {
        match self {
            Filter::Plain(filter) => filter,
            Filter::Shared(shared) => &shared.filter,
        }
    }
}

/// The filter as the client wrote it, `$share/{group}/` included.
impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Filter::Plain(filter) => f.write_str(filter.as_str()),
            Filter::Shared(shared) => {
                write!(f, "$share/{}/{}", shared.group, shared.filter.as_str())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct SharedKey {
    group: ByteString,
    client_id: ClientId,
}

#[derive(Clone, Debug)]
struct SharedEntry {
    filter: TopicFilter,
    subscription: Subscription,
}

/// Who a message goes to, after overlapping subscriptions are merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The subscriber.
    pub client_id: ClientId,
    /// The highest QoS granted among its matching subscriptions ([MQTT-3.3.4-2]).
    pub qos: QoS,
    /// Whether any matching subscription asked for retain-as-published.
    pub retain_as_published: bool,
    /// Identifiers of every matching subscription that has one ([MQTT-3.3.4-3]).
    pub subscription_ids: Vec<u32>,
}

/// All subscriptions of all sessions.
#[derive(Debug, Default)]
pub struct Router {
    plain: TopicTrie<ClientId, Subscription>,
    shared: TopicTrie<SharedKey, SharedEntry>,
    by_client: HashMap<ClientId, Vec<Filter>>,
    next_member: AtomicUsize,
}

impl Router {
    /// Number of subscriptions, over all sessions.
    pub fn len(&self) -> usize {
        self.by_client.values().map(Vec::len).sum()
    }

    /// Whether there are no subscriptions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds or replaces a subscription. Returns whether it existed before
    /// (v5 retain handling 1 depends on it, [MQTT-3.8.4-3]).
    pub fn subscribe(
        &mut self,
        client_id: &ClientId,
        filter: &Filter,
        subscription: Subscription,
    ) -> bool {
        let existed = match filter {
            Filter::Plain(topic_filter) => self
                .plain
                .insert(topic_filter, client_id.clone(), subscription)
                .is_some(),
            Filter::Shared(shared) => {
                let key = SharedKey {
                    group: shared.group.clone(),
                    client_id: client_id.clone(),
                };
                let entry = SharedEntry {
                    filter: shared.filter.clone(),
                    subscription,
                };
                self.shared.insert(&shared.filter, key, entry).is_some()
            }
        };
        if !existed {
            self.by_client
                .entry(client_id.clone())
                .or_default()
                .push(filter.clone());
        }
        existed
    }

    /// Removes a subscription. Returns whether it existed.
    pub fn unsubscribe(&mut self, client_id: &ClientId, filter: &Filter) -> bool {
        let existed = match filter {
            Filter::Plain(topic_filter) => self.plain.remove(topic_filter, client_id).is_some(),
            Filter::Shared(shared) => {
                let key = SharedKey {
                    group: shared.group.clone(),
                    client_id: client_id.clone(),
                };
                self.shared.remove(&shared.filter, &key).is_some()
            }
        };
        if existed {
            if let Some(filters) = self.by_client.get_mut(client_id) {
                filters.retain(|existing| existing != filter);
                if filters.is_empty() {
                    self.by_client.remove(client_id);
                }
            }
        }
        existed
    }

    /// Removes every subscription of a session that ended; returns their filters.
    pub fn remove_client(&mut self, client_id: &ClientId) -> Vec<Filter> {
        let filters = self.by_client.remove(client_id).unwrap_or_default();
        for filter in &filters {
            match filter {
                Filter::Plain(topic_filter) => {
                    self.plain.remove(topic_filter, client_id);
                }
                Filter::Shared(shared) => {
                    let key = SharedKey {
                        group: shared.group.clone(),
                        client_id: client_id.clone(),
                    };
                    self.shared.remove(&shared.filter, &key);
                }
            }
        }
        filters
    }

    /// The subscriptions of one client, for session resumption and tests.
    pub fn subscriptions_of(&self, client_id: &ClientId) -> &[Filter] {
        self.by_client
            .get(client_id)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Every client that should receive a message published on `topic` by
    /// `publisher`, one [`Target`] per client.
    pub fn route(&self, topic: &TopicName, publisher: &ClientId, targets: &mut Vec<Target>) {
        let mut index: HashMap<ClientId, usize> = HashMap::new();
        self.plain
            .for_each_match(topic.as_str(), |client_id, subscription| {
                // [MQTT-3.8.3-3] No Local: never back to the publisher on this subscription.
                if subscription.options.no_local && client_id == publisher {
                    return;
                }
                merge(targets, &mut index, client_id, subscription);
            });
        if !self.shared.is_empty() {
            self.route_shared(topic, targets, &mut index);
        }
    }

    fn route_shared(
        &self,
        topic: &TopicName,
        targets: &mut Vec<Target>,
        index: &mut HashMap<ClientId, usize>,
    ) {
        let mut groups: HashMap<(&ByteString, &TopicFilter), Vec<(&ClientId, &Subscription)>> =
            HashMap::new();
        self.shared.for_each_match(topic.as_str(), |key, entry| {
            groups
                .entry((&key.group, &entry.filter))
                .or_default()
                .push((&key.client_id, &entry.subscription));
        });
        for (_, mut members) in groups {
            // The trie visits members in hash order; sort so round robin is fair.
            members.sort_by(|a, b| a.0.cmp(b.0));
            let turn = self.next_member.fetch_add(1, Ordering::Relaxed);
            if let Some((client_id, subscription)) = members.get(turn % members.len().max(1)) {
                merge(targets, index, client_id, subscription);
            }
        }
    }
}

/// Below this many targets, duplicates are found by a linear scan: cheaper than
/// hashing for the common publish that matches a handful of subscribers.
const LINEAR_DEDUPE: usize = 16;

fn merge(
    targets: &mut Vec<Target>,
    index: &mut HashMap<ClientId, usize>,
    client_id: &ClientId,
    subscription: &Subscription,
) {
    let options = &subscription.options;
    let existing = if index.is_empty() {
        targets
            .iter()
            .position(|target| &target.client_id == client_id)
    } else {
        index.get(client_id).copied()
    };
    if let Some(target) = existing.and_then(|i| targets.get_mut(i)) {
        target.qos = target.qos.max(options.qos);
        target.retain_as_published |= options.retain_as_published;
        target.subscription_ids.extend(subscription.identifier);
        return;
    }
    if !index.is_empty() || targets.len() >= LINEAR_DEDUPE {
        if index.is_empty() {
            for (i, target) in targets.iter().enumerate() {
                index.insert(target.client_id.clone(), i);
            }
        }
        index.insert(client_id.clone(), targets.len());
    }
    targets.push(Target {
        client_id: client_id.clone(),
        qos: options.qos,
        retain_as_published: options.retain_as_published,
        subscription_ids: subscription.identifier.into_iter().collect(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(qos: QoS, identifier: Option<u32>) -> Subscription {
        Subscription {
            options: SubscriptionOptions {
                qos,
                ..SubscriptionOptions::default()
            },
            identifier,
        }
    }

    fn route(router: &Router, topic: &str, publisher: &str) -> Vec<Target> {
        let mut targets = Vec::new();
        router.route(
            &TopicName::new(topic).unwrap(),
            &ClientId::new(publisher),
            &mut targets,
        );
        targets.sort_by(|a, b| a.client_id.cmp(&b.client_id));
        targets
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_with_highest_qos_and_all_ids() {
        let mut router = Router::default();
        let a = ClientId::new("a");
        router.subscribe(
            &a,
            &Filter::parse("x/#").unwrap(),
            sub(QoS::AtMostOnce, Some(1)),
        );
        router.subscribe(
            &a,
            &Filter::parse("x/+").unwrap(),
            sub(QoS::ExactlyOnce, Some(2)),
        );
        let targets = route(&router, "x/y", "p");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].qos, QoS::ExactlyOnce);
        let mut ids = targets[0].subscription_ids.clone();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
    }

    #[test]
    fn overlapping_subscriptions_merge_past_the_linear_scan_limit() {
        let mut router = Router::default();
        for i in 0..40 {
            let client_id = ClientId::new(format!("c{i}"));
            router.subscribe(
                &client_id,
                &Filter::parse("x/#").unwrap(),
                sub(QoS::AtMostOnce, None),
            );
            router.subscribe(
                &client_id,
                &Filter::parse("x/+").unwrap(),
                sub(QoS::AtLeastOnce, None),
            );
        }
        let targets = route(&router, "x/y", "p");
        assert_eq!(targets.len(), 40);
        assert!(targets.iter().all(|t| t.qos == QoS::AtLeastOnce));
    }

    #[test]
    fn no_local_skips_only_the_publisher() {
        let mut router = Router::default();
        let mut options = sub(QoS::AtLeastOnce, None);
        options.options.no_local = true;
        router.subscribe(
            &ClientId::new("a"),
            &Filter::parse("t").unwrap(),
            options.clone(),
        );
        router.subscribe(&ClientId::new("b"), &Filter::parse("t").unwrap(), options);
        let targets = route(&router, "t", "a");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].client_id, ClientId::new("b"));
    }

    #[test]
    fn shared_group_delivers_to_one_member_round_robin() {
        let mut router = Router::default();
        for name in ["a", "b"] {
            router.subscribe(
                &ClientId::new(name),
                &Filter::parse("$share/g/t/#").unwrap(),
                sub(QoS::AtLeastOnce, None),
            );
        }
        let first = route(&router, "t/1", "p");
        let second = route(&router, "t/1", "p");
        assert_eq!(first.len(), 1);
        assert_eq!(second.len(), 1);
        assert_ne!(first[0].client_id, second[0].client_id);
    }

    #[test]
    fn remove_client_drops_every_subscription() {
        let mut router = Router::default();
        let a = ClientId::new("a");
        router.subscribe(
            &a,
            &Filter::parse("t/#").unwrap(),
            sub(QoS::AtMostOnce, None),
        );
        router.subscribe(
            &a,
            &Filter::parse("$share/g/t").unwrap(),
            sub(QoS::AtMostOnce, None),
        );
        router.remove_client(&a);
        assert!(route(&router, "t", "p").is_empty());
        assert!(router.subscriptions_of(&a).is_empty());
    }

    #[test]
    fn resubscribe_replaces_and_reports_existing() {
        let mut router = Router::default();
        let a = ClientId::new("a");
        let filter = Filter::parse("t").unwrap();
        assert!(!router.subscribe(&a, &filter, sub(QoS::AtMostOnce, None)));
        assert!(router.subscribe(&a, &filter, sub(QoS::AtLeastOnce, None)));
        assert_eq!(route(&router, "t", "p")[0].qos, QoS::AtLeastOnce);
        assert!(router.unsubscribe(&a, &filter));
        assert!(!router.unsubscribe(&a, &filter));
    }
}
