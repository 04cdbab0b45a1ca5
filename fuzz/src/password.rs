//! The Mosquitto password file parser, and `set_entry` (what `rookery passwd`
//! writes), on arbitrary text:
//! - parsing never panics; an error names a line of the file;
//! - a parsed file holds exactly one user per entry line, and its `Debug` output
//!   shows no hash;
//! - checking a password against any entry never panics (only the cheap hash
//!   kinds: a file may legitimately ask for a costly one);
//! - a username that `set_entry` accepts, written into a file that parses, gives
//!   a file that parses, where that user verifies with the password just set.
//!
//! Input: the first line is a username, the rest is the file.

use rookery::auth::{set_entry, Error, PasswordFile};

/// A `$6$` (SHA-512, mosquitto 1.x) hash of [`PASSWORD`]: cheap to verify.
const HASH: &str = "$6$AQIDBAUGBwgJCgsM$BvAI+Qf6pQOLRl808d6QZTT3a6B0xO5zIcHD3JzY0IlwG27yGPwEz2wOVlVnzMCgfQVblzctfy3CVaRYU+etmQ==";
const PASSWORD: &[u8] = b"hunter2";

/// Runs every property on one input; panics if one fails.
pub fn check(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (first, file) = text.split_once('\n').unwrap_or((&text, ""));
    let username = first;
    let Some(parsed) = parse(file) else {
        return;
    };
    let entries: Vec<(&str, &str)> = file
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split_once(':').expect("a parsed entry has a colon"))
        .map(|(user, hash)| (user.trim(), hash.trim()))
        .collect();
    assert_eq!(parsed.len(), entries.len(), "one user per entry line");
    let debug = format!("{parsed:?}");
    for (user, hash) in &entries {
        assert!(parsed.contains(user), "user {user:?} missing");
        let is_cheap = hash.starts_with("$6$")
            || hash
                .strip_prefix("$7$")
                .and_then(|rest| rest.split('$').next())
                .and_then(|rounds| rounds.parse::<u32>().ok())
                .is_some_and(|rounds| rounds <= 1000);
        if is_cheap {
            let _ = parsed.verify(user, PASSWORD);
        }
        let is_hash_a_name = entries.iter().any(|(name, _)| name.contains(hash));
        assert!(
            !debug.contains(hash) || is_hash_a_name,
            "Debug shows the hash of {user:?}"
        );
    }
    let Ok(updated) = set_entry(file, username, HASH) else {
        return;
    };
    let reparsed = PasswordFile::parse(&updated)
        .unwrap_or_else(|error| panic!("set_entry({username:?}) wrote a bad file: {error}"));
    assert!(
        reparsed.verify(username, PASSWORD),
        "user {username:?} does not verify after set_entry"
    );
    let others = entries.iter().filter(|(user, _)| user != &username).count();
    assert_eq!(
        reparsed.len(),
        others + 1,
        "set_entry({username:?}) lost or added users"
    );
}

/// Parses `file`; `None` (after checking the line number) when it is refused.
fn parse(file: &str) -> Option<PasswordFile> {
    match PasswordFile::parse(file) {
        Ok(parsed) => Some(parsed),
        Err(Error::Parse { line, .. }) => {
            let lines = file.lines().count();
            assert!(
                (1..=lines).contains(&line),
                "error on line {line} of {lines}"
            );
            None
        }
        Err(error) => panic!("parsing text failed with {error}"),
    }
}
