//! The subscription trie: which (filter, key) entries match a published topic.
//!
//! Each filter level is one node. A node has its literal children in a hash map,
//! and its `+` child and its `#` entries in slots of their own, so a publish walks
//! only the nodes its levels can reach: the cost grows with the topic's depth and
//! the wildcards along its path, never with the number of unrelated subscriptions.
//!
//! The rules (see [`crate::protocol::topic`] for the full list):
//! - `+` matches exactly one level, the empty level included: `+/+` matches `/a`;
//! - `#` matches the parent level and every level below: `a/#` matches `a` and `a/b/c`;
//! - a topic starting with `$` is not matched by `+` or `#` at the first level
//!   ([MQTT-4.7.2-1]): `#` does not match `$SYS/x`, `$SYS/#` does.
//!
//! The trie does not know what `K` (say, a client id) and `V` (say, subscription
//! options) are: one filter holds at most one value per key, as one client holds at
//! most one subscription per filter ([MQTT-3.8.4-3]).
//!
//! Depth: matching, insertion and removal recurse once per filter level, which
//! [`TopicFilter`] bounds by [`crate::protocol::topic::MAX_LEVELS`].

use std::collections::HashMap;
use std::hash::Hash;
use std::str::Split;

use foldhash::fast::RandomState;

use crate::protocol::TopicFilter;

/// Subscriptions indexed by filter level; see the module doc for the rules.
#[derive(Debug)]
pub struct TopicTrie<K, V> {
    root: Node<K, V>,
    len: usize,
}

/// One filter level.
///
/// foldhash is seeded per process, so topic levels chosen by clients cannot be
/// crafted to collide, and it is several times faster than SipHash on short keys.
#[derive(Debug)]
struct Node<K, V> {
    /// Literal next levels.
    children: HashMap<Box<str>, Node<K, V>, RandomState>,
    /// The `+` next level.
    plus: Option<Box<Node<K, V>>>,
    /// Entries of filters that end here with `/#` (or are `#`, at the root).
    hash: HashMap<K, V, RandomState>,
    /// Entries of filters that end exactly at this level.
    entries: HashMap<K, V, RandomState>,
}

impl<K, V> Default for Node<K, V> {
    fn default() -> Self {
        Node {
            children: HashMap::default(),
            plus: None,
            hash: HashMap::default(),
            entries: HashMap::default(),
        }
    }
}

impl<K: Eq + Hash, V> Default for TopicTrie<K, V> {
    fn default() -> Self {
        TopicTrie::new()
    }
}

impl<K: Eq + Hash, V> TopicTrie<K, V> {
    /// An empty trie.
    pub fn new() -> Self {
        TopicTrie {
            root: Node::default(),
            len: 0,
        }
    }

    /// The number of (filter, key) entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no filter has any entry.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Stores `value` for (`filter`, `key`); returns the value it replaces, as a
    /// repeated SUBSCRIBE replaces the existing subscription ([MQTT-3.8.4-3]).
    pub fn insert(&mut self, filter: &TopicFilter, key: K, value: V) -> Option<V> {
        let mut node = &mut self.root;
        let mut levels = filter.levels();
        let slot = loop {
            match levels.next() {
                None => break &mut node.entries,
                Some("#") => break &mut node.hash,
                Some("+") => node = node.plus.get_or_insert_with(Box::default),
                Some(level) => node = node.children.entry(Box::from(level)).or_default(),
            }
        };
        let replaced = slot.insert(key, value);
        if replaced.is_none() {
            self.len += 1;
        }
        replaced
    }

    /// Removes the entry for (`filter`, `key`), and every node left empty by it, so
    /// a churn of unique filters does not leave the trie growing.
    pub fn remove(&mut self, filter: &TopicFilter, key: &K) -> Option<V> {
        let removed = self.root.remove(filter.levels(), key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// The value stored for (`filter`, `key`).
    pub fn get(&self, filter: &TopicFilter, key: &K) -> Option<&V> {
        let mut node = &self.root;
        for level in filter.levels() {
            node = match level {
                "#" => return node.hash.get(key),
                "+" => node.plus.as_deref()?,
                _ => node.children.get(level)?,
            };
        }
        node.entries.get(key)
    }

    /// Calls `f` once for every (filter, key) entry whose filter matches `topic`.
    ///
    /// Does not allocate: levels are split off `topic` as the walk goes down.
    pub fn for_each_match<'t>(&'t self, topic: &str, mut f: impl FnMut(&'t K, &'t V)) {
        let mut levels = topic.split('/');
        let Some(first) = levels.next() else { return };
        let root = &self.root;
        // [MQTT-4.7.2-1] `$SYS/…` is not matched by a filter starting with a wildcard.
        if !first.starts_with('$') {
            root.hash.iter().for_each(|(k, v)| f(k, v));
            if let Some(plus) = &root.plus {
                plus.visit(levels.clone(), &mut f);
            }
        }
        if let Some(child) = root.children.get(first) {
            child.visit(levels, &mut f);
        }
    }
}

impl<K: Eq + Hash, V> Node<K, V> {
    /// Reports the entries under this node that match the `rest` of the topic.
    ///
    /// Each node is reached through one sequence of levels, so each entry is
    /// reported at most once.
    fn visit<'t>(&'t self, mut rest: Split<'_, char>, f: &mut impl FnMut(&'t K, &'t V)) {
        // `a/#` matches `a` as well as everything below it.
        self.hash.iter().for_each(|(k, v)| f(k, v));
        let Some(level) = rest.next() else {
            self.entries.iter().for_each(|(k, v)| f(k, v));
            return;
        };
        if let Some(plus) = &self.plus {
            plus.visit(rest.clone(), f);
        }
        if let Some(child) = self.children.get(level) {
            child.visit(rest, f);
        }
    }

    fn remove(&mut self, mut levels: Split<'_, char>, key: &K) -> Option<V> {
        match levels.next() {
            None => self.entries.remove(key),
            Some("#") => self.hash.remove(key),
            Some("+") => {
                let plus = self.plus.as_deref_mut()?;
                let removed = plus.remove(levels, key);
                if plus.is_empty() {
                    self.plus = None;
                }
                removed
            }
            Some(level) => {
                let child = self.children.get_mut(level)?;
                let removed = child.remove(levels, key);
                if child.is_empty() {
                    self.children.remove(level);
                }
                removed
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_empty()
            && self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    /// The trie holding each of `filters` under key 0, with the filter as value.
    fn trie_of(filters: &[&str]) -> TopicTrie<u32, String> {
        let mut trie = TopicTrie::new();
        for f in filters {
            trie.insert(&filter(f), 0, (*f).to_owned());
        }
        trie
    }

    /// The filters matching `topic`, in order, duplicates kept.
    fn matched(trie: &TopicTrie<u32, String>, topic: &str) -> Vec<String> {
        let mut found = Vec::new();
        trie.for_each_match(topic, |_, v| found.push(v.clone()));
        found.sort();
        found
    }

    #[test]
    fn exact_filter_matches_only_its_topic() {
        let trie = trie_of(&["a/b", "a/c", "a"]);
        assert_eq!(matched(&trie, "a/b"), ["a/b"]);
        assert_eq!(matched(&trie, "a"), ["a"]);
        assert!(matched(&trie, "a/b/c").is_empty());
        assert!(matched(&trie, "b").is_empty());
    }

    #[test]
    fn single_level_wildcard_matches_exactly_one_level() {
        let trie = trie_of(&["sport/tennis/+", "sport/+"]);
        assert_eq!(matched(&trie, "sport/tennis/player1"), ["sport/tennis/+"]);
        assert!(matched(&trie, "sport/tennis/player1/ranking").is_empty());
        assert!(matched(&trie, "sport").is_empty());
        assert_eq!(matched(&trie, "sport/"), ["sport/+"]);
    }

    #[test]
    fn single_level_wildcard_matches_empty_level() {
        let trie = trie_of(&["+/+", "/+", "+"]);
        assert_eq!(matched(&trie, "/finance"), ["+/+", "/+"]);
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        let trie = trie_of(&["sport/tennis/player1/#", "sport/#", "#"]);
        assert_eq!(matched(&trie, "sport"), ["#", "sport/#"]);
        assert_eq!(
            matched(&trie, "sport/tennis/player1"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(
            matched(&trie, "sport/tennis/player1/score/wimbledon"),
            ["#", "sport/#", "sport/tennis/player1/#"]
        );
        assert_eq!(matched(&trie, "sport/tennis"), ["#", "sport/#"]);
    }

    #[test]
    fn dollar_topic_not_matched_by_root_wildcard() {
        // [MQTT-4.7.2-1]
        let trie = trie_of(&["#", "+/monitor/Clients", "$SYS/#", "$SYS/monitor/+", "+"]);
        assert_eq!(
            matched(&trie, "$SYS/monitor/Clients"),
            ["$SYS/#", "$SYS/monitor/+"]
        );
        assert_eq!(matched(&trie, "$SYS"), ["$SYS/#"]);
        assert_eq!(
            matched(&trie, "a/monitor/Clients"),
            ["#", "+/monitor/Clients"]
        );
    }

    #[test]
    fn dollar_below_root_is_matched_by_wildcards() {
        let trie = trie_of(&["a/+", "a/#"]);
        assert_eq!(matched(&trie, "a/$SYS"), ["a/#", "a/+"]);
    }

    #[test]
    fn empty_levels_are_significant() {
        let trie = trie_of(&["a/b", "a//b", "/", "a/"]);
        assert_eq!(matched(&trie, "a//b"), ["a//b"]);
        assert_eq!(matched(&trie, "/"), ["/"]);
        assert_eq!(matched(&trie, "a/"), ["a/"]);
        assert!(matched(&trie, "a").is_empty());
    }

    #[test]
    fn each_entry_reported_once_per_key() {
        let mut trie = TopicTrie::new();
        for key in 0..3 {
            trie.insert(&filter("a/+"), key, ());
            trie.insert(&filter("#"), key, ());
        }
        let mut keys = Vec::new();
        trie.for_each_match("a/b", |k, ()| keys.push(*k));
        keys.sort();
        assert_eq!(keys, [0, 0, 1, 1, 2, 2]);
        assert_eq!(trie.len(), 6);
    }

    #[test]
    fn insert_replaces_value_of_same_filter_and_key() {
        let mut trie = TopicTrie::new();
        assert_eq!(trie.insert(&filter("a/+"), "c1", 1), None);
        assert_eq!(trie.insert(&filter("a/+"), "c1", 2), Some(1));
        assert_eq!(trie.len(), 1);
        assert_eq!(trie.get(&filter("a/+"), &"c1"), Some(&2));
        assert_eq!(trie.get(&filter("a/#"), &"c1"), None);
        assert_eq!(trie.get(&filter("a"), &"c1"), None);
    }

    #[test]
    fn remove_returns_value_and_prunes_empty_nodes() {
        let mut trie = TopicTrie::new();
        for f in ["a/b/c", "a/+/#", "#", "a/b"] {
            trie.insert(&filter(f), 7, f);
        }
        for f in ["a/b/c", "a/+/#", "#", "a/b"] {
            assert_eq!(trie.remove(&filter(f), &7), Some(f));
            assert_eq!(trie.remove(&filter(f), &7), None);
        }
        assert!(trie.is_empty());
        assert!(trie.root.is_empty(), "nodes left behind: {:?}", trie.root);
    }

    #[test]
    fn remove_keeps_other_keys_and_filters() {
        let mut trie = TopicTrie::new();
        trie.insert(&filter("a/b"), 1, ());
        trie.insert(&filter("a/b"), 2, ());
        trie.insert(&filter("a/b/c"), 1, ());
        assert_eq!(trie.remove(&filter("a/b"), &1), Some(()));
        assert_eq!(trie.remove(&filter("x/y"), &1), None);
        assert_eq!(trie.len(), 2);
        assert!(trie.get(&filter("a/b"), &2).is_some());
        assert!(trie.get(&filter("a/b/c"), &1).is_some());
    }

    #[test]
    fn deepest_filter_allowed_does_not_overflow_the_stack() {
        let deep = "+/".repeat(crate::protocol::topic::MAX_LEVELS - 1) + "#";
        let mut trie = TopicTrie::new();
        trie.insert(&filter(&deep), 1, ());
        let mut n = 0;
        trie.for_each_match(&"a/".repeat(300), |_, ()| n += 1);
        assert_eq!(n, 1);
        assert_eq!(trie.remove(&filter(&deep), &1), Some(()));
    }

    /// Filters and topics from a small alphabet of levels, so that they collide often.
    fn filter_strategy() -> impl Strategy<Value = TopicFilter> {
        let level = prop::sample::select(vec!["a", "b", "$x", "", "+"]);
        (prop::collection::vec(level, 1..5), any::<bool>()).prop_filter_map(
            "valid filter",
            |(levels, hash)| {
                let mut s = levels.join("/");
                if hash {
                    s.push_str("/#");
                }
                TopicFilter::new(s).ok()
            },
        )
    }

    fn topic_strategy() -> impl Strategy<Value = String> {
        let level = prop::sample::select(vec!["a", "b", "$x", ""]);
        prop::collection::vec(level, 1..6).prop_map(|levels| levels.join("/"))
    }

    fn bare_hash() -> impl Strategy<Value = TopicFilter> {
        Just(filter("#"))
    }

    proptest! {
        #[test]
        fn matches_agree_with_naive_filter_matching(
            ops in prop::collection::vec(
                (prop_oneof![9 => filter_strategy(), 1 => bare_hash()], 0u8..3, any::<bool>()),
                0..60,
            ),
            topics in prop::collection::vec(topic_strategy(), 1..20),
        ) {
            let mut trie = TopicTrie::new();
            let mut model: BTreeSet<(String, u8)> = BTreeSet::new();
            for (f, key, is_insert) in &ops {
                let entry = (f.as_str().to_owned(), *key);
                if *is_insert {
                    let replaced = trie.insert(f, *key, entry.clone());
                    prop_assert_eq!(replaced.is_some(), !model.insert(entry));
                } else {
                    let removed = trie.remove(f, key);
                    prop_assert_eq!(removed.is_some(), model.remove(&entry));
                }
                prop_assert_eq!(trie.len(), model.len());
            }
            for topic in &topics {
                let mut got = Vec::new();
                trie.for_each_match(topic, |k, v| {
                    assert_eq!(*k, v.1);
                    got.push(v.clone());
                });
                got.sort();
                let want: Vec<_> = model
                    .iter()
                    .filter(|(f, _)| filter(f).matches_str(topic))
                    .cloned()
                    .collect();
                prop_assert_eq!(got, want, "topic {:?}", topic);
            }
            for (f, key) in &model {
                prop_assert_eq!(trie.get(&filter(f), key).map(|v| v.1), Some(*key));
            }
            for (f, key) in model.clone() {
                prop_assert!(trie.remove(&filter(&f), &key).is_some());
            }
            prop_assert!(trie.root.is_empty());
        }
    }
}
