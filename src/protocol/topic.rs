//! Topic names and topic filters, valid by construction.
//!
//! The rules (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7):
//! - a topic name has no `+` or `#` and no U+0000, and is at least one character;
//! - `+` matches exactly one level and must fill a whole level (`a/+/c` yes, `a+` no);
//! - `#` matches the parent and any number of child levels and must be the last level
//!   (`a/#` matches `a`, `a/b`, `a/b/c`; `a/#/b` and `a#` are invalid);
//! - a topic starting with `$` is not matched by a filter starting with a wildcard
//!   ([MQTT-4.7.2-1]): `#` and `+/x` do not match `$SYS/x`, `$SYS/#` does.
//! - `$share/{group}/{filter}` is a shared subscription (v5 §4.8.2).
//!
//! Levels are what lies between `/` separators, and an empty level is a level like
//! any other: `/finance` has the two levels `""` and `"finance"`, so it is matched by
//! `+/+` and `/+` but not by `+`, and `a//b` is not `a/b`.
//!
//! Valid filters:
//! ```text
//! #            +            +/+          /+           sport/#
//! sport/+      +/tennis/#   sport/+/player1           $SYS/#
//! a//b         /            $share       a/$share/b   ﾃｽﾄ/+
//! ```
//! Invalid filters:
//! ```text
//! (empty)      sport/tennis#            sport/tennis/#/ranking     sport+
//! a/b+/c       #/a          a/##        a\0b         $share/g/a  (use SharedFilter)
//! ```
//! Invalid shared filters: `$share/`, `$share//a` (empty group), `$share/g` and
//! `$share/g/` (no filter), `$share/g+/a`, `$share/g#/a`.
//!
//! Beyond the spec, a name or filter may have at most [`MAX_LEVELS`] levels, so that
//! code walking levels recursively (the subscription trie) has bounded depth.

use std::borrow::Borrow;
use std::fmt;
use std::str::Split;

use bytestring::ByteString;

use super::Error;

/// The most levels a topic name or filter may have.
///
/// Not a spec rule: a 65,535-byte filter of only `/` has 65,536 levels, and walking
/// that many trie nodes recursively overflows a task's stack. mosquitto refuses more
/// than 200 separators (`TOPIC_HIERARCHY_LIMIT`, after CVE-2019-11779), i.e. more than
/// 201 levels; we accept exactly what it accepts.
pub const MAX_LEVELS: usize = 201;

/// The longest UTF-8 string the wire can carry ([MQTT-4.7.3-3]).
const MAX_LEN: usize = 65_535;

/// The prefix that makes a filter a shared subscription (v5 §4.8.2).
const SHARE_PREFIX: &str = "$share/";

/// A validated topic name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(ByteString);

/// A validated topic filter (never a `$share/…` one: see [`SharedFilter`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter(ByteString);

/// A `$share/{group}/{filter}` subscription.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SharedFilter {
    /// The share name; no `/`, `+` or `#`.
    pub group: ByteString,
    /// The filter after the group.
    pub filter: TopicFilter,
}

/// The checks names and filters share: [MQTT-4.7.3-1], [MQTT-4.7.3-2],
/// [MQTT-4.7.3-3] and [`MAX_LEVELS`].
fn check_common(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("empty"); // [MQTT-4.7.3-1]
    }
    if s.len() > MAX_LEN {
        return Err("longer than 65535 bytes"); // [MQTT-4.7.3-3]
    }
    if s.contains('\0') {
        return Err("contains U+0000"); // [MQTT-4.7.3-2]
    }
    if s.bytes().filter(|&b| b == b'/').count() >= MAX_LEVELS {
        return Err("too many levels");
    }
    Ok(())
}

impl TopicName {
    /// Validates a topic name.
    pub fn new(name: impl Into<ByteString>) -> Result<TopicName, Error> {
        let name = name.into();
        check_common(&name).map_err(Error::TopicNameInvalid)?;
        if name.contains(['+', '#']) {
            // [MQTT-4.7.1-1] wildcards belong to filters only.
            return Err(Error::TopicNameInvalid("contains a wildcard"));
        }
        Ok(TopicName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is a server-specific topic such as `$SYS/…`, which filters
    /// starting with a wildcard do not match ([MQTT-4.7.2-1]).
    pub fn is_system(&self) -> bool {
        self.0.starts_with('$')
    }

    /// The levels between `/` separators, empty ones included.
    pub fn levels(&self) -> Split<'_, char> {
        self.0.split('/')
    }

    /// The underlying string, shared without copying.
    pub fn into_inner(self) -> ByteString {
        self.0
    }
}

impl TopicFilter {
    /// Validates a topic filter.
    pub fn new(filter: impl Into<ByteString>) -> Result<TopicFilter, Error> {
        let filter = filter.into();
        check_common(&filter).map_err(Error::TopicFilterInvalid)?;
        if filter.starts_with(SHARE_PREFIX) {
            return Err(Error::TopicFilterInvalid(
                "shared subscription: use SharedFilter",
            ));
        }
        let mut levels = filter.split('/').peekable();
        while let Some(level) = levels.next() {
            match level {
                // [MQTT-4.7.1-2] `#` is on its own and last.
                "#" if levels.peek().is_some() => {
                    return Err(Error::TopicFilterInvalid("`#` is not the last level"))
                }
                "#" | "+" => {}
                _ if level.contains('#') => {
                    return Err(Error::TopicFilterInvalid("`#` does not fill a whole level"))
                }
                // [MQTT-4.7.1-3] `+` occupies an entire level.
                _ if level.contains('+') => {
                    return Err(Error::TopicFilterInvalid("`+` does not fill a whole level"))
                }
                _ => {}
            }
        }
        Ok(TopicFilter(filter))
    }

    /// The filter as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the filter can match more than the one topic name it spells.
    pub fn has_wildcards(&self) -> bool {
        self.0.contains(['+', '#'])
    }

    /// The levels between `/` separators, empty ones included; `+` and `#` are
    /// levels of their own.
    pub fn levels(&self) -> Split<'_, char> {
        self.0.split('/')
    }

    /// The underlying string, shared without copying.
    pub fn into_inner(self) -> ByteString {
        self.0
    }

    /// Whether this filter matches `topic`.
    ///
    /// Deliberately naive, one level at a time, so that it is obviously right: ACLs
    /// use it, and it is the oracle the subscription trie is tested against.
    pub fn matches(&self, topic: &TopicName) -> bool {
        self.matches_str(topic.as_str())
    }

    /// [`TopicFilter::matches`] for a topic that has not been validated.
    pub fn matches_str(&self, topic: &str) -> bool {
        let mut filter = self.levels();
        let mut topic_levels = topic.split('/');
        if topic.starts_with('$') && matches!(self.levels().next(), Some("+" | "#")) {
            return false; // [MQTT-4.7.2-1]
        }
        loop {
            match (filter.next(), topic_levels.next()) {
                // `#` matches the parent level too: `sport/#` matches `sport`.
                (Some("#"), _) => return true,
                (Some("+"), Some(_)) => {}
                (Some(f), Some(t)) if f == t => {}
                (None, None) => return true,
                _ => return false,
            }
        }
    }
}

impl SharedFilter {
    /// Splits `$share/{group}/{filter}`; `Ok(None)` when `s` is not a shared
    /// subscription at all, so callers can fall back to [`TopicFilter::new`].
    pub fn parse(s: &str) -> Result<Option<SharedFilter>, Error> {
        let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
            return Ok(None);
        };
        // [MQTT-4.8.2-2] the share name is followed by `/` and a topic filter.
        let Some((group, filter)) = rest.split_once('/') else {
            return Err(Error::TopicFilterInvalid(
                "shared subscription has no filter",
            ));
        };
        if group.is_empty() {
            return Err(Error::TopicFilterInvalid("empty share name")); // [MQTT-4.8.2-1]
        }
        if group.contains(['+', '#', '\0']) {
            return Err(Error::TopicFilterInvalid(
                "share name contains `+`, `#` or U+0000",
            ));
        }
        if s.len() > MAX_LEN {
            return Err(Error::TopicFilterInvalid("longer than 65535 bytes"));
        }
        Ok(Some(SharedFilter {
            group: ByteString::from(group),
            filter: TopicFilter::new(filter)?,
        }))
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SharedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHARE_PREFIX}{}/{}", self.group, self.filter)
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TopicFilter {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Sound because the derived `Hash`, `Eq` and `Ord` all defer to the `str`.
impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Sound because the derived `Hash`, `Eq` and `Ord` all defer to the `str`.
impl Borrow<str> for TopicFilter {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).unwrap()
    }

    fn matches(f: &str, t: &str) -> bool {
        filter(f).matches(&TopicName::new(t).unwrap())
    }

    fn is_invalid_filter(s: &str) -> bool {
        matches!(TopicFilter::new(s), Err(Error::TopicFilterInvalid(_)))
    }

    fn is_invalid_name(s: &str) -> bool {
        matches!(TopicName::new(s), Err(Error::TopicNameInvalid(_)))
    }

    #[test]
    fn valid_filters_from_the_module_doc() {
        for s in [
            "#",
            "+",
            "+/+",
            "/+",
            "sport/#",
            "sport/+",
            "+/tennis/#",
            "sport/+/player1",
            "$SYS/#",
            "a//b",
            "/",
            "$share",
            "a/$share/b",
            "ﾃｽﾄ/+",
        ] {
            assert!(TopicFilter::new(s).is_ok(), "{s:?} should be valid");
        }
    }

    #[test]
    fn empty_name_or_filter_is_invalid() {
        // [MQTT-4.7.3-1]
        assert!(is_invalid_name(""));
        assert!(is_invalid_filter(""));
    }

    #[test]
    fn nul_character_is_invalid() {
        // [MQTT-4.7.3-2]
        assert!(is_invalid_name("a\0b"));
        assert!(is_invalid_filter("a\0b"));
    }

    #[test]
    fn longer_than_65535_bytes_is_invalid() {
        // [MQTT-4.7.3-3]
        let ok = "a".repeat(65_535);
        assert!(TopicName::new(ok.clone()).is_ok());
        assert!(TopicFilter::new(ok).is_ok());
        let long = "a".repeat(65_536);
        assert!(is_invalid_name(&long));
        assert!(is_invalid_filter(&long));
    }

    #[test]
    fn more_than_max_levels_is_invalid() {
        let at_limit = vec!["a"; MAX_LEVELS].join("/");
        assert!(TopicName::new(at_limit.clone()).is_ok());
        assert!(TopicFilter::new(at_limit.clone()).is_ok());
        let over = format!("{at_limit}/a");
        assert!(is_invalid_name(&over));
        assert!(is_invalid_filter(&over));
        assert!(is_invalid_filter(&"/".repeat(65_535)));
    }

    #[test]
    fn wildcards_are_invalid_in_topic_names() {
        // [MQTT-4.7.1-1]
        for s in ["#", "+", "a/+", "a/#", "a+b", "sport/tennis#"] {
            assert!(is_invalid_name(s), "{s:?}");
        }
    }

    #[test]
    fn multi_level_wildcard_must_be_whole_last_level() {
        // [MQTT-4.7.1-2], MQTT 3.1.1 §4.7.1.2 non-normative examples.
        assert!(is_invalid_filter("sport/tennis#"));
        assert!(is_invalid_filter("sport/tennis/#/ranking"));
        assert!(is_invalid_filter("#/a"));
        assert!(is_invalid_filter("a/##"));
        assert!(TopicFilter::new("sport/tennis/#").is_ok());
    }

    #[test]
    fn single_level_wildcard_must_fill_whole_level() {
        // [MQTT-4.7.1-3], MQTT 3.1.1 §4.7.1.3 non-normative examples.
        assert!(is_invalid_filter("sport+"));
        assert!(is_invalid_filter("a/b+/c"));
        assert!(is_invalid_filter("a/++"));
        assert!(TopicFilter::new("+/tennis/#").is_ok());
        assert!(TopicFilter::new("sport/+/player1").is_ok());
    }

    #[test]
    fn share_prefix_is_not_a_plain_filter() {
        assert!(is_invalid_filter("$share/g/a"));
        assert!(TopicFilter::new("$share").is_ok());
        assert!(TopicFilter::new("$shared/g/a").is_ok());
    }

    #[test]
    fn multi_level_wildcard_matches_parent_and_children() {
        // MQTT 3.1.1 §4.7.1.2
        let f = "sport/tennis/player1/#";
        assert!(matches(f, "sport/tennis/player1"));
        assert!(matches(f, "sport/tennis/player1/ranking"));
        assert!(matches(f, "sport/tennis/player1/score/wimbledon"));
        assert!(!matches(f, "sport/tennis/player2"));
        assert!(!matches(f, "sport/tennis"));
        assert!(matches("sport/#", "sport"));
        assert!(matches("#", "sport/tennis"));
        assert!(matches("#", "/"));
    }

    #[test]
    fn single_level_wildcard_matches_exactly_one_level() {
        // MQTT 3.1.1 §4.7.1.3
        assert!(matches("sport/tennis/+", "sport/tennis/player1"));
        assert!(matches("sport/tennis/+", "sport/tennis/player2"));
        assert!(!matches("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!matches("sport/+", "sport"));
        assert!(matches("sport/+", "sport/"));
        assert!(matches("+/tennis/#", "sport/tennis"));
        assert!(matches("sport/+/player1", "sport/tennis/player1"));
    }

    #[test]
    fn single_level_wildcard_matches_empty_level() {
        // MQTT 3.1.1 §4.7.1.3: `/finance` matches `+/+` and `/+`, not `+`.
        assert!(matches("+/+", "/finance"));
        assert!(matches("/+", "/finance"));
        assert!(!matches("+", "/finance"));
        assert!(matches("a/+/b", "a//b"));
    }

    #[test]
    fn empty_levels_are_significant() {
        // MQTT 3.1.1 §4.7.3: `/finance` is not `finance`.
        assert!(!matches("finance", "/finance"));
        assert!(!matches("/finance", "finance"));
        assert!(!matches("a/b", "a//b"));
        assert!(!matches("a/b", "a/b/"));
        assert!(matches("/", "/"));
    }

    #[test]
    fn matching_is_case_sensitive_and_exact() {
        // MQTT 3.1.1 §4.7.3: `ACCOUNTS` and `Accounts` are different topics.
        assert!(!matches("ACCOUNTS", "Accounts"));
        assert!(matches("Accounts payable", "Accounts payable"));
        assert!(!matches("a", "ab"));
    }

    #[test]
    fn dollar_topic_not_matched_by_root_wildcard() {
        // [MQTT-4.7.2-1], MQTT 3.1.1 §4.7.2 non-normative examples.
        assert!(!matches("#", "$SYS/monitor/Clients"));
        assert!(!matches("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(!matches("+", "$SYS"));
        assert!(matches("$SYS/#", "$SYS/monitor/Clients"));
        assert!(matches("$SYS/#", "$SYS"));
        assert!(matches("$SYS/monitor/+", "$SYS/monitor/Clients"));
    }

    #[test]
    fn dollar_inside_topic_is_matched_by_wildcards() {
        assert!(matches("a/+", "a/$SYS"));
        assert!(matches("a/#", "a/$SYS/x"));
        assert!(matches("+/+", "a$/b"));
    }

    #[test]
    fn is_system_means_leading_dollar() {
        assert!(TopicName::new("$SYS/x").unwrap().is_system());
        assert!(!TopicName::new("a/$SYS").unwrap().is_system());
    }

    #[test]
    fn levels_include_empty_ones() {
        let name = TopicName::new("/a//b/").unwrap();
        assert_eq!(name.levels().collect::<Vec<_>>(), ["", "a", "", "b", ""]);
        let f = filter("+/#");
        assert_eq!(f.levels().collect::<Vec<_>>(), ["+", "#"]);
    }

    #[test]
    fn has_wildcards_only_for_plus_or_hash() {
        assert!(filter("a/+").has_wildcards());
        assert!(filter("#").has_wildcards());
        assert!(!filter("a/b").has_wildcards());
    }

    #[test]
    fn name_converts_to_and_from_strings() {
        let name = TopicName::new("a/b").unwrap();
        assert_eq!(name.to_string(), "a/b");
        assert_eq!(AsRef::<str>::as_ref(&name), "a/b");
        let set: std::collections::HashSet<TopicName> = [name.clone()].into();
        assert!(set.contains("a/b"));
        assert_eq!(name.into_inner(), "a/b");
    }

    #[test]
    fn non_shared_filter_parses_to_none() {
        assert_eq!(SharedFilter::parse("a/b").unwrap(), None);
        assert_eq!(SharedFilter::parse("$share").unwrap(), None);
        assert_eq!(SharedFilter::parse("$SYS/#").unwrap(), None);
    }

    #[test]
    fn shared_filter_splits_group_and_filter() {
        let shared = SharedFilter::parse("$share/workers/jobs/+/#")
            .unwrap()
            .unwrap();
        assert_eq!(shared.group, "workers");
        assert_eq!(shared.filter, filter("jobs/+/#"));
        assert_eq!(shared.to_string(), "$share/workers/jobs/+/#");
        let root = SharedFilter::parse("$share/g//").unwrap().unwrap();
        assert_eq!(root.filter, filter("/"));
    }

    #[test]
    fn shared_filter_needs_non_empty_group() {
        // [MQTT-4.8.2-1]
        assert!(SharedFilter::parse("$share//a").is_err());
        assert!(SharedFilter::parse("$share/").is_err());
    }

    #[test]
    fn shared_group_without_wildcards_followed_by_filter() {
        // [MQTT-4.8.2-2]
        assert!(SharedFilter::parse("$share/g+/a").is_err());
        assert!(SharedFilter::parse("$share/g#/a").is_err());
        assert!(SharedFilter::parse("$share/+/a").is_err());
        assert!(SharedFilter::parse("$share/g").is_err());
        assert!(SharedFilter::parse("$share/g/").is_err());
        assert!(SharedFilter::parse("$share/g/a#").is_err());
        assert!(SharedFilter::parse("$share/g/$share/h/a").is_err());
    }

    proptest::proptest! {
        #[test]
        fn validation_never_panics(s in "\\PC{0,40}") {
            let _ = TopicName::new(s.as_str());
            let _ = TopicFilter::new(s.as_str());
            let _ = SharedFilter::parse(&s);
        }
    }
}
