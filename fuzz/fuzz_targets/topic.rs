//! Topic filters and names from arbitrary text: parsing never panics, and the
//! subscription trie matches exactly what the naive `TopicFilter::matches` does.
//!
//! Input: lines. Each line that is a valid filter is subscribed (key = line
//! number); each line that is a valid topic name is then matched against all of them.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use rookery::broker::trie::TopicTrie;
use rookery::protocol::{SharedFilter, TopicFilter, TopicName};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<&str> = text.split('\n').collect();
    let mut trie = TopicTrie::new();
    let mut filters = Vec::new();
    for (key, line) in lines.iter().enumerate() {
        let _ = SharedFilter::parse(line);
        if let Ok(filter) = TopicFilter::new(line.to_string()) {
            trie.insert(&filter, key, ());
            filters.push((key, filter));
        }
    }
    for line in &lines {
        let Ok(topic) = TopicName::new(line.to_string()) else {
            continue;
        };
        let mut by_trie = BTreeSet::new();
        trie.for_each_match(topic.as_str(), |key, ()| {
            by_trie.insert(*key);
        });
        let naive: BTreeSet<usize> = filters
            .iter()
            .filter(|(_, filter)| filter.matches(&topic))
            .map(|(key, _)| *key)
            .collect();
        assert_eq!(by_trie, naive, "topic {:?}", topic.as_str());
    }
});
