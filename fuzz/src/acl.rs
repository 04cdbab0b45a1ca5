//! The Mosquitto ACL file parser and its decisions, on arbitrary text:
//! - parsing never panics; an error names a line of the file;
//! - deciding never panics, and an invalid topic or filter is always refused;
//! - comment and blank lines in front shift an error's line number by exactly
//!   their count and change no decision;
//! - `pattern deny #` appended refuses every topic that does not start with `$`;
//! - a `user` section for someone else, appended, changes no decision;
//! - for a filter without wildcards, subscribing is allowed exactly when
//!   receiving on that topic is (both need a `read` rule and no `deny`).
//!
//! Input: three lines (client id, username — empty for an anonymous client —
//! and a topic), then the file.

use rookery::auth::{AclFile, Action, ClientIdentity, Error};

const ACTIONS: [Action; 3] = [Action::Publish, Action::Subscribe, Action::Receive];

/// Runs every property on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let client_id = parts.next().unwrap_or_default();
    let username = parts.next().unwrap_or_default();
    let topic = parts.next().unwrap_or_default();
    let file = parts.next().unwrap_or_default();
    let client = ClientIdentity {
        client_id: client_id.to_owned(),
        username: (!username.is_empty()).then(|| username.to_owned()),
    };
    let lines = file.lines().count();
    let shifted = format!("# a comment\n\n  \t\n{file}");
    let acl = match (AclFile::parse(file), AclFile::parse(&shifted)) {
        (Ok(acl), Ok(shifted)) => {
            for action in ACTIONS {
                assert_eq!(
                    acl.authorize(&client, action, topic),
                    shifted.authorize(&client, action, topic),
                    "leading comments changed {action:?} {topic:?}"
                );
            }
            acl
        }
        (Err(Error::Parse { line, .. }), Err(Error::Parse { line: after, .. })) => {
            assert!(
                (1..=lines).contains(&line),
                "error on line {line} of {lines}"
            );
            assert_eq!(after, line + 3, "line numbers after three leading lines");
            return;
        }
        (plain, shifted) => {
            panic!("leading comments changed the outcome: {plain:?} vs {shifted:?}")
        }
    };
    for action in ACTIONS {
        let allowed = acl.authorize(&client, action, topic);
        if !is_valid(action, topic) {
            assert!(!allowed, "{action:?} allowed on invalid {topic:?}");
        }
    }
    if is_valid(Action::Receive, topic) && !topic.contains(['+', '#']) {
        assert_eq!(
            acl.authorize(&client, Action::Subscribe, topic),
            acl.authorize(&client, Action::Receive, topic),
            "subscribe and receive differ on {topic:?}"
        );
    }
    let denied = AclFile::parse(&format!("{file}\npattern deny #\n")).expect("a valid line");
    if !topic.starts_with('$') {
        for action in ACTIONS {
            assert!(
                !denied.authorize(&client, action, topic),
                "`pattern deny #` did not refuse {action:?} {topic:?}"
            );
        }
    }
    let someone_else = match &client.username {
        Some(name) => format!("{name}~"),
        None => "someone".to_owned(),
    };
    let other = format!("{file}\nuser {someone_else}\ntopic readwrite #\ntopic readwrite $SYS/#\n");
    if let Ok(other) = AclFile::parse(&other) {
        for action in ACTIONS {
            assert_eq!(
                acl.authorize(&client, action, topic),
                other.authorize(&client, action, topic),
                "user {someone_else:?}'s section changed {action:?} {topic:?}"
            );
        }
    }
}

/// What the ACL calls a valid topic name (publish, receive) or filter (subscribe).
fn is_valid(action: Action, topic: &str) -> bool {
    let levels: Vec<&str> = topic.split('/').collect();
    match action {
        Action::Publish | Action::Receive => !topic.is_empty() && !topic.contains(['+', '#']),
        Action::Subscribe => {
            !topic.is_empty()
                && levels.iter().enumerate().all(|(i, level)| match *level {
                    "#" => i + 1 == levels.len(),
                    "+" => true,
                    level => !level.contains(['+', '#']),
                })
        }
    }
}
