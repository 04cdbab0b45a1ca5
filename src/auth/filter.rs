//! The ACL's own topic-filter matcher: does an ACL filter *cover* a topic name or a
//! subscription filter?
//!
//! This is deliberately separate from `protocol::topic`: an ACL filter may hold the
//! pattern placeholders `%c` and `%u`, and a subscription is checked against an
//! ACL with wildcard-aware coverage (mosquitto's `mosquitto_sub_matches_acl`),
//! not with plain topic matching.
//!
//! The rules, level by level (levels are split on `/`):
//! - a literal level covers only the same literal (`a` does not cover `+`);
//! - `+` covers any one level, including a subscriber's `+`, but not `#`;
//! - `#` (always last) covers every remaining level, and none: `a/#` covers `a`;
//! - a topic or filter whose first level starts with `$` is covered only by a
//!   rule whose first level is the same literal: `#` and `+/x` never cover
//!   `$SYS/x`, and neither does a pattern `%c/#` for a client named `$SYS`
//!   ([MQTT-4.7.2-1]).
//!
//! | ACL rule       | checked       | covered? |
//! |----------------|---------------|----------|
//! | `sensors/#`    | `sensors`     | yes      |
//! | `sensors/#`    | `sensors/+/t` | yes      |
//! | `sensors/+`    | `sensors/#`   | no       |
//! | `sensors/+`    | `sensors/+`   | yes      |
//! | `sensors/a`    | `sensors/+`   | no       |
//! | `#`            | `$SYS/uptime` | no       |

/// One level of a parsed ACL filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    /// Text that must equal the checked level exactly.
    Literal(String),
    /// `+`
    SingleWildcard,
    /// `#`, only ever the last level.
    MultiWildcard,
    /// `%c` as a whole level of a `pattern` rule.
    ClientId,
    /// `%u` as a whole level of a `pattern` rule.
    Username,
}

/// The values `%c` and `%u` stand for while one check runs. `None` means the rule
/// cannot apply (an anonymous client has no `%u`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Substitution<'a> {
    pub(crate) client_id: Option<&'a str>,
    pub(crate) username: Option<&'a str>,
}

/// Parses an ACL filter with mosquitto's `mosquitto_sub_topic_check` rules: `+` and
/// `#` must fill a whole level, and `#` must be the last one. In a `pattern` rule a
/// level that is exactly `%c` or `%u` becomes a placeholder; elsewhere it is text.
pub(crate) fn parse(filter: &str, is_pattern: bool) -> Result<Vec<Level>, String> {
    if filter.is_empty() {
        return Err("empty topic filter".to_owned());
    }
    let count = filter.split('/').count();
    filter
        .split('/')
        .enumerate()
        .map(|(index, level)| match level {
            "#" if index + 1 == count => Ok(Level::MultiWildcard),
            "#" => Err(format!("`#` must be the last level in `{filter}`")),
            "+" => Ok(Level::SingleWildcard),
            "%c" if is_pattern => Ok(Level::ClientId),
            "%u" if is_pattern => Ok(Level::Username),
            _ if level.contains(['+', '#']) => {
                Err(format!("a wildcard must fill a whole level in `{filter}`"))
            }
            _ => Ok(Level::Literal(level.to_owned())),
        })
        .collect()
}

/// Whether `text` is a valid topic name: not empty, no wildcards.
pub(crate) fn is_topic_name(text: &str) -> bool {
    !text.is_empty() && !text.contains(['+', '#'])
}

/// Whether `text` is a valid subscription filter (same rules as [`parse`]).
pub(crate) fn is_topic_filter(text: &str) -> bool {
    parse(text, false).is_ok()
}

/// Whether the ACL filter `rule` covers `checked`, a topic name or a subscription
/// filter already split into levels. See the module docs for the rules.
pub(crate) fn covers(rule: &[Level], subst: Substitution<'_>, checked: &[&str]) -> bool {
    let starts_with_dollar = checked.first().is_some_and(|first| first.starts_with('$'));
    if starts_with_dollar && !matches!(rule.first(), Some(Level::Literal(_))) {
        return false;
    }
    let mut rule_levels = rule.iter();
    let mut checked_levels = checked.iter();
    loop {
        match (rule_levels.next(), checked_levels.next()) {
            (Some(Level::MultiWildcard), _) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(Level::SingleWildcard), Some(&level)) => {
                if level == "#" {
                    return false;
                }
            }
            (Some(Level::Literal(text)), Some(&level)) => {
                if text != level {
                    return false;
                }
            }
            (Some(Level::ClientId), Some(&level)) => {
                if subst.client_id != Some(level) {
                    return false;
                }
            }
            (Some(Level::Username), Some(&level)) => {
                if subst.username != Some(level) {
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rule: &str, checked: &str) -> bool {
        let rule = parse(rule, false).unwrap();
        let levels: Vec<&str> = checked.split('/').collect();
        covers(&rule, Substitution::default(), &levels)
    }

    #[test]
    fn plain_topic_matching() {
        assert!(check("foo/bar", "foo/bar"));
        assert!(check("foo/+", "foo/bar"));
        assert!(check("foo/+/baz", "foo/bar/baz"));
        assert!(check("foo/+/#", "foo/bar/baz"));
        assert!(check("foo/+/#", "foo/bar"));
        assert!(check("#", "foo/bar/baz"));
        assert!(check("#", "/foo/bar"));
        assert!(check("/#", "/foo/bar"));
        assert!(check("foo//bar", "foo//bar"));
        assert!(check("foo//+", "foo//bar"));
        assert!(check("foo/bar/+", "foo/bar/"));
        assert!(!check("foo/bar", "foo"));
        assert!(!check("foo/+", "foo/bar/baz"));
        assert!(!check("foo/+/baz", "foo/bar/bar"));
        assert!(!check("/#", "foo/bar"));
        assert!(!check("test/6/#", "test/3"));
    }

    #[test]
    fn multi_level_wildcard_covers_parent() {
        assert!(check("foo/#", "foo"));
        assert!(check("foo/#", "foo/"));
    }

    #[test]
    fn dollar_topic_not_matched_by_root_wildcard() {
        assert!(!check("#", "$SYS/uptime"));
        assert!(!check("+/uptime", "$SYS/uptime"));
        assert!(check("$SYS/#", "$SYS/uptime"));
        assert!(!check("$BOB/bar", "$SYS/bar"));
    }

    #[test]
    fn subscription_coverage_is_wildcard_aware() {
        assert!(check("sensors/#", "sensors/+/temp"));
        assert!(check("sensors/#", "sensors/#"));
        assert!(check("sensors/+", "sensors/+"));
        assert!(check("#", "#"));
        assert!(!check("sensors/+", "sensors/#"));
        assert!(!check("sensors/a", "sensors/+"));
        assert!(!check("sensors/+/temp", "sensors/#"));
    }

    #[test]
    fn placeholders_match_only_their_value() {
        let rule = parse("devices/%c/%u", true).unwrap();
        let subst = Substitution {
            client_id: Some("c1"),
            username: Some("alice"),
        };
        assert!(covers(&rule, subst, &["devices", "c1", "alice"]));
        assert!(!covers(&rule, subst, &["devices", "c2", "alice"]));
        assert!(!covers(&rule, subst, &["devices", "+", "alice"]));
        let anonymous = Substitution {
            client_id: Some("c1"),
            username: None,
        };
        assert!(!covers(&rule, anonymous, &["devices", "c1", "alice"]));
    }

    #[test]
    fn placeholder_never_covers_dollar_topic() {
        let rule = parse("%c/#", true).unwrap();
        let subst = Substitution {
            client_id: Some("$SYS"),
            username: None,
        };
        assert!(!covers(&rule, subst, &["$SYS", "broker"]));
    }

    #[test]
    fn placeholders_are_text_outside_patterns_and_inside_levels() {
        assert_eq!(
            parse("a/%c", false).unwrap()[1],
            Level::Literal("%c".into())
        );
        assert_eq!(
            parse("a/x%c", true).unwrap()[1],
            Level::Literal("x%c".into())
        );
    }

    #[test]
    fn invalid_filters_are_rejected() {
        for bad in ["", "foo#", "foo/#/bar", "fo+o", "+foo", "foo/bar+", "#/a"] {
            assert!(parse(bad, false).is_err(), "{bad:?} should be invalid");
        }
        assert!(is_topic_filter("+/+/#"));
        assert!(!is_topic_name("a/+"));
        assert!(!is_topic_name(""));
    }
}
