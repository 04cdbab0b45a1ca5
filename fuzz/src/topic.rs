//! Topic names, filters and `$share` filters from arbitrary text, and the
//! subscription trie:
//! - parsing never panics, and accepts exactly what the spec's rules (restated
//!   here, independently of `rookery`) accept;
//! - the trie reports exactly the filters that the naive `TopicFilter::matches`
//!   says match, before and after removing half of them, and `len`/`get` agree.
//!
//! Input: lines. Each line that is a valid filter is subscribed (key = line
//! number); each line that is a valid topic name is matched against all of them.

use std::collections::BTreeSet;

use rookery::broker::trie::TopicTrie;
use rookery::protocol::topic::MAX_LEVELS;
use rookery::protocol::{SharedFilter, TopicFilter, TopicName};

/// Runs every property on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let mut trie = TopicTrie::new();
    let mut filters = Vec::new();
    for (key, line) in lines.iter().enumerate() {
        check_shared(line);
        let filter = TopicFilter::new(line.to_string());
        assert_eq!(filter.is_ok(), is_valid_filter(line), "filter {line:?}");
        assert_eq!(
            TopicName::new(line.to_string()).is_ok(),
            is_valid_name(line),
            "name {line:?}"
        );
        if let Ok(filter) = filter {
            trie.insert(&filter, key, ());
            filters.push((key, filter));
        }
    }
    let distinct: BTreeSet<&str> = filters.iter().map(|(_, f)| f.as_str()).collect();
    assert!(distinct.len() <= trie.len() && trie.len() == filters.len());
    compare(&trie, &filters, &lines);
    // Remove every other filter: the trie must forget exactly those.
    let (removed, kept): (Vec<_>, Vec<_>) = filters.into_iter().partition(|(key, _)| key % 2 == 0);
    for (key, filter) in &removed {
        assert_eq!(trie.remove(filter, key), Some(()), "remove {filter}");
        assert_eq!(trie.get(filter, key), None, "get after remove {filter}");
    }
    for (key, filter) in &kept {
        assert_eq!(trie.get(filter, key), Some(&()), "get {filter}");
    }
    assert_eq!(trie.len(), kept.len());
    compare(&trie, &kept, &lines);
}

/// The trie against the naive matcher, for every line that is a topic name.
fn compare(trie: &TopicTrie<usize, ()>, filters: &[(usize, TopicFilter)], lines: &[&str]) {
    for line in lines {
        let Ok(topic) = TopicName::new(line.to_string()) else {
            continue;
        };
        let mut by_trie = BTreeSet::new();
        trie.for_each_match(topic.as_str(), |key, ()| {
            assert!(
                by_trie.insert(*key),
                "key {key} reported twice for {line:?}"
            );
        });
        let naive: BTreeSet<usize> = filters
            .iter()
            .filter(|(_, filter)| filter.matches(&topic))
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(by_trie, naive, "topic {line:?}");
    }
}

/// `$share/{group}/{filter}` splits where the spec says, or is refused.
fn check_shared(line: &str) {
    let parsed = SharedFilter::parse(line);
    let Some(rest) = line.strip_prefix("$share/") else {
        assert!(matches!(parsed, Ok(None)), "not shared: {line:?}");
        return;
    };
    let expected = rest.split_once('/').filter(|(group, filter)| {
        !group.is_empty()
            && !group.contains(['+', '#', '\0'])
            && line.len() <= 65_535
            && is_valid_filter(filter)
    });
    match (parsed, expected) {
        (Ok(Some(shared)), Some((group, filter))) => {
            assert_eq!(&*shared.group, group, "{line:?}");
            assert_eq!(shared.filter.as_str(), filter, "{line:?}");
        }
        (Err(_), None) => {}
        (parsed, expected) => panic!("{line:?}: parsed {parsed:?}, expected {expected:?}"),
    }
}

/// [MQTT-4.7.3-1..3] and the level limit, shared by names and filters.
fn is_valid_common(s: &str) -> bool {
    !s.is_empty() && s.len() <= 65_535 && !s.contains('\0') && s.split('/').count() <= MAX_LEVELS
}

/// [MQTT-4.7.1-1] no wildcards in a topic name.
fn is_valid_name(s: &str) -> bool {
    is_valid_common(s) && !s.contains(['+', '#'])
}

/// [MQTT-4.7.1-2], [MQTT-4.7.1-3]: `#` alone and last, `+` alone; never `$share/`.
fn is_valid_filter(s: &str) -> bool {
    let levels: Vec<&str> = s.split('/').collect();
    let is_level_ok = |(i, level): (usize, &&str)| match *level {
        "#" => i + 1 == levels.len(),
        "+" => true,
        level => !level.contains(['+', '#']),
    };
    is_valid_common(s) && !s.starts_with("$share/") && levels.iter().enumerate().all(is_level_ok)
}
