//! Retained messages: the last retained message of each topic, in a tree of topic
//! levels so that a wildcard subscribe visits only the branches it can match.
//!
//! A retained message with an empty payload clears the topic and is not stored
//! ([MQTT-3.3.1-10], [MQTT-3.3.1-11]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::message::Message;
use crate::protocol::{TopicFilter, TopicName};

#[derive(Debug, Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

/// The retained message of every topic that has one.
#[derive(Debug, Default)]
pub struct Retained {
    root: Node,
    count: usize,
}

impl Retained {
    /// Stores `message` as the retained message of its topic, or clears the topic
    /// when the payload is empty.
    pub fn set(&mut self, message: Arc<Message>) {
        let topic = message.topic.clone();
        if message.payload.is_empty() {
            self.clear(&topic);
            return;
        }
        let mut node = &mut self.root;
        for level in topic.as_str().split('/') {
            node = node.children.entry(Box::from(level)).or_default();
        }
        if node.message.replace(message).is_none() {
            self.count += 1;
        }
    }

    fn clear(&mut self, topic: &TopicName) {
        if remove(&mut self.root, &mut topic.as_str().split('/')) {
            self.count -= 1;
        }
    }

    /// How many topics have a retained message.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no topic has a retained message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Retained messages outside `$SYS` (mosquitto does not count its own), and the
    /// payload bytes of all of them. Walks the tree: for `$SYS`, not the hot path.
    pub fn census(&self) -> (usize, u64) {
        let mut count = 0;
        let mut bytes = 0;
        for (name, child) in &self.root.children {
            let is_sys = name.starts_with('$');
            walk(child, &mut |message| {
                count += usize::from(!is_sys);
                bytes += message.payload.len() as u64;
            });
        }
        (count, bytes)
    }

    /// The unexpired retained messages whose topic matches `filter`.
    pub fn matching(&self, filter: &TopicFilter, now: Instant) -> Vec<Arc<Message>> {
        let levels: Vec<&str> = filter.as_str().split('/').collect();
        let mut found = Vec::new();
        collect(&self.root, &levels, true, now, &mut found);
        found
    }
}

fn walk(node: &Node, visit: &mut impl FnMut(&Message)) {
    if let Some(message) = &node.message {
        visit(message);
    }
    for child in node.children.values() {
        walk(child, visit);
    }
}

/// Removes the message at the path, pruning empty nodes. Returns whether there was one.
fn remove<'a>(node: &mut Node, levels: &mut impl Iterator<Item = &'a str>) -> bool {
    let Some(level) = levels.next() else {
        return node.message.take().is_some();
    };
    let Some(child) = node.children.get_mut(level) else {
        return false;
    };
    let removed = remove(child, levels);
    if child.message.is_none() && child.children.is_empty() {
        node.children.remove(level);
    }
    removed
}

fn collect(
    node: &Node,
    levels: &[&str],
    is_root: bool,
    now: Instant,
    found: &mut Vec<Arc<Message>>,
) {
    let Some((level, rest)) = levels.split_first() else {
        if let Some(message) = &node.message {
            if !message.is_expired(now) {
                found.push(message.clone());
            }
        }
        return;
    };
    match *level {
        "#" => {
            // `#` matches the parent level too: `a/#` matches `a`.
            if let Some(message) = node.message.as_ref().filter(|_| !is_root) {
                if !message.is_expired(now) {
                    found.push(message.clone());
                }
            }
            for (name, child) in &node.children {
                // [MQTT-4.7.2-1] a leading wildcard does not match `$` topics.
                if is_root && name.starts_with('$') {
                    continue;
                }
                collect_all(child, now, found);
            }
        }
        "+" => {
            for (name, child) in &node.children {
                if is_root && name.starts_with('$') {
                    continue;
                }
                collect(child, rest, false, now, found);
            }
        }
        literal => {
            if let Some(child) = node.children.get(literal) {
                collect(child, rest, false, now, found);
            }
        }
    }
}

fn collect_all(node: &Node, now: Instant, found: &mut Vec<Arc<Message>>) {
    if let Some(message) = &node.message {
        if !message.is_expired(now) {
            found.push(message.clone());
        }
    }
    for child in node.children.values() {
        collect_all(child, now, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Properties, QoS};
    use bytes::Bytes;

    fn message(topic: &str, payload: &'static str) -> Arc<Message> {
        Arc::new(Message {
            topic: TopicName::new(topic).unwrap(),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: Properties::default(),
            expires_at: None,
        })
    }

    fn topics(retained: &Retained, filter: &str) -> Vec<String> {
        let mut found: Vec<String> = retained
            .matching(&TopicFilter::new(filter).unwrap(), Instant::now())
            .iter()
            .map(|m| m.topic.as_str().to_string())
            .collect();
        found.sort();
        found
    }

    #[test]
    fn wildcards_select_retained_topics() {
        let mut retained = Retained::default();
        for topic in ["a", "a/b", "a/b/c", "a/x", "$SYS/load", "/lead"] {
            retained.set(message(topic, "v"));
        }
        assert_eq!(topics(&retained, "a/#"), ["a", "a/b", "a/b/c", "a/x"]);
        assert_eq!(topics(&retained, "a/+"), ["a/b", "a/x"]);
        assert_eq!(topics(&retained, "+/+"), ["/lead", "a/b", "a/x"]);
        assert_eq!(topics(&retained, "a/b"), ["a/b"]);
        assert_eq!(retained.len(), 6);
    }

    #[test]
    fn dollar_topic_not_matched_by_root_wildcard() {
        let mut retained = Retained::default();
        retained.set(message("$SYS/load", "v"));
        assert!(topics(&retained, "#").is_empty());
        assert!(topics(&retained, "+/load").is_empty());
        assert_eq!(topics(&retained, "$SYS/#"), ["$SYS/load"]);
    }

    #[test]
    fn empty_payload_clears_the_topic() {
        let mut retained = Retained::default();
        retained.set(message("a/b", "v"));
        retained.set(message("a/b", ""));
        assert!(topics(&retained, "#").is_empty());
        assert!(retained.is_empty());
        assert!(
            retained.root.children.is_empty(),
            "empty branches are pruned"
        );
    }

    #[test]
    fn expired_retained_messages_are_not_delivered() {
        let mut retained = Retained::default();
        let mut expired = (*message("a", "v")).clone();
        expired.expires_at = Some(Instant::now());
        retained.set(Arc::new(expired));
        assert!(topics(&retained, "a").is_empty());
    }
}
