//! Mosquitto-compatible ACL files: which client may publish, subscribe to or
//! receive which topics.
//!
//! ```text
//! # Rules before any `user` line apply to anonymous clients.
//! topic read public/#
//!
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//!
//! # Patterns apply to every client, wherever they appear.
//! pattern write devices/%c/status
//! pattern read users/%u/#
//! ```
//!
//! Line forms: `topic [read|write|readwrite|deny] <filter>`, `user <name>` and
//! `pattern [read|write|readwrite|deny] <filter>`. Without an access word a rule is
//! `readwrite`; a filter containing spaces needs an explicit access word.
//!
//! A check collects the client's rules (its own `user` section, or the anonymous
//! section when it has no username) plus every pattern, and then:
//! 1. any matching `deny` rule refuses, wherever it appears (mosquitto lets a
//!    `topic` allow win over a `pattern deny`; here a deny always wins);
//! 2. otherwise any matching rule that grants the access allows;
//! 3. otherwise the answer is no.
//!
//! `%c` and `%u` are substituted only when they fill a whole level. If a pattern
//! would substitute a client id or username that is empty or contains `+`, `#` or
//! `/`, that client is refused everything: such a value could widen the pattern
//! (`+`), reach another client's subtree (`a/b` inside `a`'s `%u/#`), or both.
//! This extends mosquitto 2.0, which refuses `+` and `#`.

use std::collections::HashMap;
use std::path::Path;

use super::filter::{self, Level, Substitution};
use super::{Action, ClientIdentity, Error};

/// A parsed ACL file.
#[derive(Clone, Debug, Default)]
pub struct AclFile {
    /// `topic` rules before the first `user` line.
    anonymous: Vec<Rule>,
    /// `topic` rules per `user` section; repeated sections are merged.
    users: HashMap<String, Vec<Rule>>,
    /// `pattern` rules, for every client.
    patterns: Vec<Rule>,
}

#[derive(Clone, Debug)]
struct Rule {
    access: Access,
    filter: Vec<Level>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn parse(word: &str) -> Option<Access> {
        match word {
            "read" => Some(Access::Read),
            "write" => Some(Access::Write),
            "readwrite" => Some(Access::ReadWrite),
            "deny" => Some(Access::Deny),
            _ => None,
        }
    }

    fn grants(self, action: Action) -> bool {
        match action {
            Action::Publish => matches!(self, Access::Write | Access::ReadWrite),
            Action::Subscribe | Action::Receive => matches!(self, Access::Read | Access::ReadWrite),
        }
    }
}

impl AclFile {
    /// Parses the text of an ACL file; the error names the first bad line.
    pub fn parse(text: &str) -> Result<AclFile, Error> {
        let mut acl = AclFile::default();
        let mut section: Option<String> = None;
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            acl.parse_line(line, &mut section)
                .map_err(|reason| Error::Parse {
                    line: index + 1,
                    reason,
                })?;
        }
        Ok(acl)
    }

    /// Reads and parses an ACL file. Call this at start-up, not per packet.
    pub fn load(path: impl AsRef<Path>) -> Result<AclFile, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        AclFile::parse(&text)
    }

    fn parse_line(&mut self, line: &str, section: &mut Option<String>) -> Result<(), String> {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = rest.trim();
        match keyword {
            "user" if rest.is_empty() => Err("`user` needs a username".to_owned()),
            "user" => {
                *section = Some(rest.to_owned());
                Ok(())
            }
            "topic" | "pattern" => {
                let is_pattern = keyword == "pattern";
                let rule = parse_rule(rest, is_pattern)?;
                let rules = match (is_pattern, section.as_ref()) {
                    (true, _) => &mut self.patterns,
                    (false, None) => &mut self.anonymous,
                    (false, Some(user)) => self.users.entry(user.clone()).or_default(),
                };
                rules.push(rule);
                Ok(())
            }
            _ => Err(format!(
                "unknown keyword `{keyword}` (expected `topic`, `user` or `pattern`)"
            )),
        }
    }

    /// Whether `client` may perform `action` on `topic`.
    ///
    /// For [`Action::Publish`] and [`Action::Receive`], `topic` is a topic name; for
    /// [`Action::Subscribe`] it is a topic filter, without any `$share/<group>/`
    /// prefix. A subscription is allowed when some `read` rule covers the whole
    /// filter (`read sensors/#` covers `sensors/+/temp`; `read sensors/+` does not
    /// cover `sensors/#`) and no `deny` rule covers it. A `deny` rule *inside* an
    /// allowed filter does not refuse the subscription; it refuses each message at
    /// delivery, so check [`Action::Receive`] there, as mosquitto does.
    ///
    /// An invalid topic name or filter is refused.
    pub fn authorize(&self, client: &ClientIdentity, action: Action, topic: &str) -> bool {
        let is_valid = match action {
            Action::Publish | Action::Receive => filter::is_topic_name(topic),
            Action::Subscribe => filter::is_topic_filter(topic),
        };
        if !is_valid {
            return false;
        }
        let Some(subst) = self.substitution(client) else {
            return false;
        };
        let own_rules = match client.username.as_deref() {
            Some(username) => self.users.get(username).map_or(&[][..], Vec::as_slice),
            None => self.anonymous.as_slice(),
        };
        let levels: Vec<&str> = topic.split('/').collect();
        let mut is_granted = false;
        for rule in own_rules.iter().chain(&self.patterns) {
            if !filter::covers(&rule.filter, subst, &levels) {
                continue;
            }
            if rule.access == Access::Deny {
                return false;
            }
            is_granted |= rule.access.grants(action);
        }
        is_granted
    }

    /// The `%c`/`%u` values for `client`, or `None` when a pattern would have to
    /// substitute an unsafe value (see the module docs).
    fn substitution<'a>(&self, client: &'a ClientIdentity) -> Option<Substitution<'a>> {
        let uses = |placeholder: &Level| {
            self.patterns
                .iter()
                .any(|rule| rule.filter.contains(placeholder))
        };
        let is_safe = |value: &str| !value.is_empty() && !value.contains(['+', '#', '/']);
        if uses(&Level::ClientId) && !is_safe(&client.client_id) {
            return None;
        }
        if let Some(username) = client.username.as_deref() {
            if uses(&Level::Username) && !is_safe(username) {
                return None;
            }
        }
        Some(Substitution {
            client_id: Some(&client.client_id),
            username: client.username.as_deref(),
        })
    }
}

/// Parses what follows `topic` or `pattern`. Like mosquitto, when there is more
/// than one word the first must be an access word and the rest is the filter.
fn parse_rule(rest: &str, is_pattern: bool) -> Result<Rule, String> {
    if rest.is_empty() {
        return Err("missing topic filter".to_owned());
    }
    let (access, filter_text) = match rest.split_once(char::is_whitespace) {
        Some((word, filter_text)) => {
            let access = Access::parse(word).ok_or_else(|| {
                format!("unknown access `{word}` (expected read, write, readwrite or deny)")
            })?;
            (access, filter_text.trim())
        }
        None => (Access::ReadWrite, rest),
    };
    let filter = filter::parse(filter_text, is_pattern)?;
    Ok(Rule { access, filter })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACL: &str = "\
# anonymous clients
topic read public/#
topic write public/anon-inbox

user alice
topic readwrite alice/#
topic deny alice/secret
topic read sensors/#
topic read $SYS/broker/#

user bob
topic sensors/+
topic deny sensors/private

pattern write devices/%c/status
pattern read users/%u/#
pattern deny users/%u/blocked
";

    fn acl() -> AclFile {
        AclFile::parse(ACL).unwrap()
    }

    fn user(name: &str, client_id: &str) -> ClientIdentity {
        ClientIdentity {
            client_id: client_id.to_owned(),
            username: Some(name.to_owned()),
        }
    }

    fn anonymous(client_id: &str) -> ClientIdentity {
        ClientIdentity {
            client_id: client_id.to_owned(),
            username: None,
        }
    }

    #[test]
    fn anonymous_section_applies_to_clients_without_username() {
        let acl = acl();
        let anon = anonymous("c1");
        assert!(acl.authorize(&anon, Action::Subscribe, "public/#"));
        assert!(acl.authorize(&anon, Action::Receive, "public/news"));
        assert!(!acl.authorize(&anon, Action::Publish, "public/news"));
        assert!(acl.authorize(&anon, Action::Publish, "public/anon-inbox"));
        assert!(!acl.authorize(&anon, Action::Receive, "alice/x"));
        // The anonymous section does not apply to named users.
        assert!(!acl.authorize(&user("alice", "c2"), Action::Receive, "public/news"));
    }

    #[test]
    fn user_section_applies_only_to_that_user() {
        let acl = acl();
        let alice = user("alice", "a1");
        assert!(acl.authorize(&alice, Action::Publish, "alice/notes"));
        assert!(acl.authorize(&alice, Action::Subscribe, "alice/#"));
        assert!(!acl.authorize(&user("bob", "b1"), Action::Publish, "alice/notes"));
        assert!(!acl.authorize(&user("carol", "c1"), Action::Publish, "alice/notes"));
    }

    #[test]
    fn omitted_access_means_readwrite() {
        let acl = acl();
        let bob = user("bob", "b1");
        assert!(acl.authorize(&bob, Action::Publish, "sensors/t1"));
        assert!(acl.authorize(&bob, Action::Receive, "sensors/t1"));
    }

    #[test]
    fn deny_wins_over_allow() {
        let acl = acl();
        let alice = user("alice", "a1");
        assert!(!acl.authorize(&alice, Action::Publish, "alice/secret"));
        assert!(!acl.authorize(&alice, Action::Receive, "alice/secret"));
        assert!(!acl.authorize(&alice, Action::Subscribe, "alice/secret"));
        // A deny inside an allowed filter is enforced per message, not per SUBSCRIBE.
        assert!(acl.authorize(&alice, Action::Subscribe, "alice/#"));
        // A deny pattern beats an allow pattern, and beats `topic` allows too.
        assert!(acl.authorize(&alice, Action::Receive, "users/alice/inbox"));
        assert!(!acl.authorize(&alice, Action::Receive, "users/alice/blocked"));
        let deny_later = AclFile::parse("user u\ntopic read a/#\npattern deny a/%u").unwrap();
        assert!(!deny_later.authorize(&user("u", "c"), Action::Receive, "a/u"));
        assert!(deny_later.authorize(&user("u", "c"), Action::Receive, "a/v"));
    }

    #[test]
    fn deny_before_allow_in_file_order_still_wins() {
        let acl = AclFile::parse("topic deny x/#\ntopic readwrite x/#").unwrap();
        assert!(!acl.authorize(&anonymous("c"), Action::Publish, "x/y"));
    }

    #[test]
    fn subscribe_needs_a_read_rule_covering_the_whole_filter() {
        let acl = acl();
        let alice = user("alice", "a1");
        assert!(acl.authorize(&alice, Action::Subscribe, "sensors/+/temp"));
        assert!(acl.authorize(&alice, Action::Subscribe, "sensors/#"));
        assert!(!acl.authorize(&alice, Action::Subscribe, "#"));
        let bob = user("bob", "b1");
        assert!(acl.authorize(&bob, Action::Subscribe, "sensors/+"));
        assert!(acl.authorize(&bob, Action::Subscribe, "sensors/t1"));
        assert!(!acl.authorize(&bob, Action::Subscribe, "sensors/#"));
        assert!(!acl.authorize(&bob, Action::Subscribe, "sensors/private"));
        assert!(!acl.authorize(&bob, Action::Subscribe, "sensors/a/b"));
    }

    #[test]
    fn write_only_rule_does_not_allow_subscribe() {
        let acl = AclFile::parse("topic write out/#").unwrap();
        let anon = anonymous("c");
        assert!(acl.authorize(&anon, Action::Publish, "out/1"));
        assert!(!acl.authorize(&anon, Action::Subscribe, "out/1"));
        assert!(!acl.authorize(&anon, Action::Receive, "out/1"));
    }

    #[test]
    fn dollar_topic_not_matched_by_root_wildcard() {
        let everything = AclFile::parse("topic readwrite #").unwrap();
        let anon = anonymous("c");
        assert!(everything.authorize(&anon, Action::Receive, "a/b"));
        assert!(!everything.authorize(&anon, Action::Receive, "$SYS/broker/uptime"));
        assert!(!everything.authorize(&anon, Action::Subscribe, "$SYS/#"));
        assert!(!everything.authorize(&anon, Action::Publish, "$SYS/x"));
        let alice = user("alice", "a1");
        assert!(acl().authorize(&alice, Action::Subscribe, "$SYS/broker/#"));
        assert!(acl().authorize(&alice, Action::Receive, "$SYS/broker/uptime"));
    }

    #[test]
    fn patterns_substitute_client_id_and_username() {
        let acl = acl();
        let alice = user("alice", "dev-7");
        assert!(acl.authorize(&alice, Action::Publish, "devices/dev-7/status"));
        assert!(!acl.authorize(&alice, Action::Publish, "devices/dev-8/status"));
        assert!(acl.authorize(&alice, Action::Subscribe, "users/alice/#"));
        assert!(!acl.authorize(&alice, Action::Subscribe, "users/bob/#"));
        assert!(!acl.authorize(&alice, Action::Subscribe, "users/+/inbox"));
        // Patterns apply to anonymous clients too, but `%u` rules never match them.
        let anon = anonymous("dev-9");
        assert!(acl.authorize(&anon, Action::Publish, "devices/dev-9/status"));
        assert!(!acl.authorize(&anon, Action::Receive, "users//inbox"));
    }

    #[test]
    fn placeholders_inside_a_level_are_literal_text() {
        let acl = AclFile::parse("pattern read dev_%c/x").unwrap();
        let anon = anonymous("c1");
        assert!(!acl.authorize(&anon, Action::Receive, "dev_c1/x"));
        assert!(acl.authorize(&anon, Action::Receive, "dev_%c/x"));
    }

    #[test]
    fn unsafe_identity_in_pattern_is_refused_everything() {
        let acl = acl();
        for bad in ["+", "#", "a/b", "dev+", ""] {
            let client = anonymous(bad);
            assert!(
                !acl.authorize(&client, Action::Receive, "public/news"),
                "client id {bad:?}"
            );
            let named = user(bad, "c1");
            assert!(
                !acl.authorize(&named, Action::Receive, &format!("users/{bad}/x")),
                "username {bad:?}"
            );
        }
        // A wildcard username reaches nobody else's subtree through `users/%u/#`.
        assert!(!acl.authorize(&user("+", "c1"), Action::Receive, "users/bob/x"));
        // Values are only checked when some pattern uses them.
        let topics_only = AclFile::parse("topic read a/#").unwrap();
        assert!(topics_only.authorize(&anonymous("a/b"), Action::Receive, "a/x"));
    }

    #[test]
    fn invalid_topics_are_refused() {
        let acl = AclFile::parse("topic readwrite #").unwrap();
        let anon = anonymous("c");
        assert!(!acl.authorize(&anon, Action::Publish, "a/+"));
        assert!(!acl.authorize(&anon, Action::Receive, ""));
        assert!(!acl.authorize(&anon, Action::Subscribe, "a/#/b"));
        assert!(!acl.authorize(&anon, Action::Subscribe, ""));
    }

    #[test]
    fn empty_file_denies_everything() {
        let acl = AclFile::parse("# nothing\n").unwrap();
        assert!(!acl.authorize(&anonymous("c"), Action::Receive, "a"));
    }

    #[test]
    fn repeated_user_sections_merge() {
        let acl =
            AclFile::parse("user u\ntopic read a\nuser v\ntopic read b\nuser u\ntopic read c")
                .unwrap();
        let u = user("u", "c");
        assert!(acl.authorize(&u, Action::Receive, "a"));
        assert!(acl.authorize(&u, Action::Receive, "c"));
        assert!(!acl.authorize(&u, Action::Receive, "b"));
    }

    #[test]
    fn filters_with_spaces_need_an_access_word() {
        let acl = AclFile::parse("user name with spaces\ntopic read a b/c").unwrap();
        let u = user("name with spaces", "c");
        assert!(acl.authorize(&u, Action::Receive, "a b/c"));
        assert!(AclFile::parse("topic a b").is_err());
    }

    #[test]
    fn malformed_lines_name_their_line_number() {
        let cases = [
            ("topic read a\nbogus line", 2),
            ("\n\ntopic", 3),
            ("user", 1),
            ("topic readonly a/b", 1),
            ("topic read a/#/b", 1),
            ("# ok\npattern deny a+/b", 2),
        ];
        for (text, expected) in cases {
            match AclFile::parse(text) {
                Err(Error::Parse { line, .. }) => assert_eq!(line, expected, "{text:?}"),
                other => panic!("{text:?}: expected a parse error, got {other:?}"),
            }
        }
    }
}
