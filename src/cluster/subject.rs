//! MQTT topics as NATS subjects, and filters as subject patterns: a total,
//! reversible encoding under which NATS interest matching agrees with MQTT's.
//!
//! - One MQTT level is one NATS token. A token holds the level's bytes except
//!   those NATS gives a meaning or forbids (`.`, `*`, `>`, whitespace, control and
//!   non-ASCII bytes) and `%`, which are written `%XX` (upper-case hex). An empty
//!   level — NATS has no empty tokens — is the lone `%`, which no escape produces.
//! - Topics whose first level starts with `$` live under their own prefix
//!   ([`SYSTEM`]), so a filter starting with a wildcard, which never matches
//!   them in MQTT ([MQTT-4.7.2-1]), never matches them in NATS either.
//! - `+` is `*`. `#` is `>`, and, when it follows a level, also the subject
//!   without it: `a/#` matches `a` ([MQTT-4.7.1-2]), so it becomes `P.a` and
//!   `P.a.>`.
//! - A subject longer than [`MAX_SUBJECT`] bytes goes to [`OVERFLOW`]; every node
//!   with any interest listens there and matches locally, as it does anyway.
//!
//! | MQTT | NATS |
//! |---|---|
//! | `sensors/kitchen/temp` | `mqtt.t.sensors.kitchen.temp` |
//! | `a//b`, `a.b/c*` | `mqtt.t.a.%.b`, `mqtt.t.a%2Eb.c%2A` |
//! | `$SYS/broker/uptime` | `mqtt.s.$SYS.broker.uptime` |
//! | `+/temp`, `a/#`, `#` | `mqtt.t.*.temp`; `mqtt.t.a` + `mqtt.t.a.>`; `mqtt.t.>` |

use std::fmt::Write;

use crate::protocol::{TopicFilter, TopicName};

/// Topics whose first level does not start with `$`.
pub const TOPICS: &str = "mqtt.t";
/// Topics whose first level starts with `$` ([MQTT-4.7.2-1]).
pub const SYSTEM: &str = "mqtt.s";
/// Where topics too long for a subject go.
pub const OVERFLOW: &str = "mqtt.x";
/// The longest subject sent: NATS's control line (4 KiB by default) must also
/// hold the verb, the reply subject, the headers' and the payload's sizes.
pub const MAX_SUBJECT: usize = 3 * 1024;

/// The subject a message on `topic` is published to.
pub fn encode_topic(topic: &TopicName) -> String {
    let prefix = if topic.is_system() { SYSTEM } else { TOPICS };
    let mut subject = String::with_capacity(prefix.len() + topic.as_str().len() + 8);
    subject.push_str(prefix);
    for level in topic.levels() {
        subject.push('.');
        push_token(&mut subject, level);
    }
    if subject.len() > MAX_SUBJECT {
        return OVERFLOW.to_string();
    }
    subject
}

/// The topic a subject from [`encode_topic`] stands for; `None` for anything
/// else (including [`OVERFLOW`], whose messages carry their topic inside).
pub fn decode_topic(subject: &str) -> Option<TopicName> {
    let rest = subject
        .strip_prefix(TOPICS)
        .or_else(|| subject.strip_prefix(SYSTEM))?
        .strip_prefix('.')?;
    let mut bytes = Vec::with_capacity(rest.len());
    for (index, token) in rest.split('.').enumerate() {
        if index > 0 {
            bytes.push(b'/');
        }
        decode_token(token, &mut bytes)?;
    }
    let topic = TopicName::new(String::from_utf8(bytes).ok()?).ok()?;
    let expected = if topic.is_system() { SYSTEM } else { TOPICS };
    subject.starts_with(expected).then_some(topic)
}

/// The subject patterns that together receive exactly the topics `filter`
/// matches (one or two; see the module docs), plus [`OVERFLOW`] for the long ones.
pub fn encode_filter(filter: &TopicFilter) -> Vec<String> {
    let is_system = filter.as_str().starts_with('$');
    let mut pattern = String::from(if is_system { SYSTEM } else { TOPICS });
    let mut subjects = Vec::with_capacity(3);
    for level in filter.levels() {
        match level {
            "#" => {
                if pattern.len() + 2 > MAX_SUBJECT {
                    return vec![OVERFLOW.to_string()];
                }
                // [MQTT-4.7.1-2] `#` also matches the parent level itself; at the
                // root there is no parent topic (a topic has at least one level).
                if pattern.len() > TOPICS.len() {
                    subjects.push(pattern.clone());
                }
                pattern.push_str(".>");
                subjects.push(pattern);
                subjects.push(OVERFLOW.to_string());
                return subjects;
            }
            "+" => pattern.push_str(".*"),
            literal => {
                pattern.push('.');
                push_token(&mut pattern, literal);
            }
        }
    }
    if pattern.len() <= MAX_SUBJECT {
        subjects.push(pattern);
    }
    subjects.push(OVERFLOW.to_string());
    subjects
}

fn push_token(subject: &mut String, level: &str) {
    if level.is_empty() {
        subject.push('%');
        return;
    }
    for byte in level.bytes() {
        if is_plain(byte) {
            subject.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(subject, "%{byte:02X}");
        }
    }
}

/// Bytes a token carries as they are.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_graphic() && !matches!(byte, b'.' | b'*' | b'>' | b'%')
}

fn decode_token(token: &str, bytes: &mut Vec<u8>) -> Option<()> {
    if token == "%" {
        return Some(());
    }
    let mut rest = token.as_bytes();
    if rest.is_empty() {
        return None;
    }
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = tail.get(..2)?;
            let text = std::str::from_utf8(hex).ok()?;
            if text.bytes().any(|b| b.is_ascii_lowercase()) {
                return None;
            }
            let byte = u8::from_str_radix(text, 16).ok()?;
            if is_plain(byte) {
                return None; // not what `push_token` writes: not ours
            }
            bytes.push(byte);
            rest = tail.get(2..)?;
        } else if is_plain(first) {
            bytes.push(first);
            rest = tail;
        } else {
            return None;
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// NATS's own rule: `*` one token, `>` one or more tokens at the end.
    fn nats_matches(pattern: &str, subject: &str) -> bool {
        let mut subject = subject.split('.');
        for token in pattern.split('.') {
            match (token, subject.next()) {
                (">", Some(_)) => return true,
                ("*", Some(_)) => {}
                (literal, Some(actual)) if literal == actual => {}
                _ => return false,
            }
        }
        subject.next().is_none()
    }

    fn topic(text: &str) -> TopicName {
        TopicName::new(text.to_string()).unwrap()
    }

    fn filter(text: &str) -> TopicFilter {
        TopicFilter::new(text.to_string()).unwrap()
    }

    #[test]
    fn the_module_table_holds() {
        assert_eq!(
            encode_topic(&topic("sensors/kitchen/temp")),
            "mqtt.t.sensors.kitchen.temp"
        );
        assert_eq!(encode_topic(&topic("a//b")), "mqtt.t.a.%.b");
        assert_eq!(encode_topic(&topic("a.b/c*")), "mqtt.t.a%2Eb.c%2A");
        assert_eq!(
            encode_topic(&topic("$SYS/broker/uptime")),
            "mqtt.s.$SYS.broker.uptime"
        );
        assert_eq!(
            encode_filter(&filter("+/temp")),
            ["mqtt.t.*.temp", OVERFLOW]
        );
        assert_eq!(
            encode_filter(&filter("a/#")),
            ["mqtt.t.a", "mqtt.t.a.>", OVERFLOW]
        );
        assert_eq!(encode_filter(&filter("#")), ["mqtt.t.>", OVERFLOW]);
    }

    #[test]
    fn root_wildcards_do_not_reach_dollar_topics() {
        // [MQTT-4.7.2-1]
        let sys = encode_topic(&topic("$SYS/x"));
        for text in ["#", "+/x", "+/#"] {
            assert!(!encode_filter(&filter(text))
                .iter()
                .any(|pattern| nats_matches(pattern, &sys)));
        }
        assert!(encode_filter(&filter("$SYS/#"))
            .iter()
            .any(|pattern| nats_matches(pattern, &sys)));
    }

    #[test]
    fn a_topic_too_long_for_a_subject_overflows() {
        let long = "x".repeat(MAX_SUBJECT) + "/y";
        assert_eq!(encode_topic(&topic(&long)), OVERFLOW);
        assert!(encode_filter(&filter("#"))
            .iter()
            .any(|pattern| pattern == OVERFLOW));
    }

    #[test]
    fn foreign_subjects_do_not_decode() {
        for subject in [
            "mqtt.t",
            "mqtt.t.",
            "mqtt.t.a..b",
            "mqtt.t.%2e",
            "mqtt.t.%41",
            "mqtt.t.%4",
            "mqtt.s.a",
            "mqtt.t.$a",
            "other.a",
        ] {
            assert_eq!(decode_topic(subject), None, "{subject}");
        }
    }

    fn level() -> impl Strategy<Value = String> {
        // Bytes that need escaping, and some that do not, including the empty level.
        prop::collection::vec(
            prop::sample::select(vec![
                "a", "b", ".", "*", ">", "%", " ", "é", "\u{7f}", "$", "-",
            ]),
            0..4,
        )
        .prop_map(|parts| parts.concat())
    }

    fn topic_text() -> impl Strategy<Value = String> {
        prop::collection::vec(level(), 1..5).prop_map(|levels| levels.join("/"))
    }

    fn filter_text() -> impl Strategy<Value = String> {
        let part = prop_oneof![level(), Just("+".to_string())];
        (prop::collection::vec(part, 1..5), any::<bool>()).prop_map(|(mut levels, hash)| {
            if hash {
                levels.push("#".to_string());
            }
            levels.join("/")
        })
    }

    proptest! {
        #[test]
        fn decoding_an_encoded_topic_gives_it_back(text in topic_text()) {
            let Ok(topic) = TopicName::new(text) else { return Ok(()) };
            prop_assert_eq!(decode_topic(&encode_topic(&topic)), Some(topic));
        }

        #[test]
        fn nats_matching_agrees_with_mqtt_matching(text in topic_text(), pattern in filter_text()) {
            let (Ok(topic), Ok(filter)) = (TopicName::new(text), TopicFilter::new(pattern)) else {
                return Ok(());
            };
            let subject = encode_topic(&topic);
            let nats = encode_filter(&filter)
                .iter()
                .any(|pattern| nats_matches(pattern, &subject));
            prop_assert_eq!(nats, filter.matches(&topic), "{} vs {}", filter, topic);
        }
    }
}
