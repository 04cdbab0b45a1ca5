//! Mosquitto-compatible password files: parse once at start, verify per CONNECT.
//!
//! One `username:hash` per line; blank lines and lines starting with `#` are
//! skipped. Three hash formats are understood:
//!
//! | prefix        | written by                        | algorithm                                    |
//! |---------------|-----------------------------------|----------------------------------------------|
//! | `$6$salt$h`   | `mosquitto_passwd` 1.x            | SHA-512 over the password bytes, then salt   |
//! | `$7$n$salt$h` | `mosquitto_passwd` 2.0 (n = 101)  | PBKDF2-HMAC-SHA512, `n` rounds, 64-byte key  |
//! | `$argon2id$…` | `rookery passwd`, mosquitto 2.1   | Argon2id, PHC string format                  |
//!
//! Salts and hashes of `$6$`/`$7$` are standard base64. Plain-text passwords are
//! refused at load time rather than compared, so a file that was never run through
//! `mosquitto_passwd -U` fails loudly instead of letting anyone in.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, Engine, GeneralPurpose, GeneralPurposeConfig};
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;

use super::Error;

/// The iteration count `mosquitto_passwd` 2.0 writes for `$7$` hashes.
const PBKDF2_ITERATIONS: u32 = 101;
/// Salt length `mosquitto_passwd` uses for `$6$` and `$7$`.
const PBKDF2_SALT_LEN: usize = 12;
/// SHA-512 output, and the PBKDF2 key length mosquitto derives.
const SHA512_LEN: usize = 64;

/// Standard base64 that accepts input with or without `=` padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Which algorithm [`hash_password`] uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum HashKind {
    /// `$argon2id$…` with the `argon2` crate's default cost (19 MiB, 2 passes).
    #[default]
    Argon2id,
    /// `$7$101$…`, readable by mosquitto 2.0.
    Pbkdf2Sha512,
}

/// The users of a password file and their stored hashes.
#[derive(Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, StoredHash>,
}

#[derive(Clone)]
enum StoredHash {
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
    /// An Argon2 PHC string, checked to parse at load time.
    Argon2(String),
}

impl PasswordFile {
    /// Parses the text of a password file; the error names the first bad line.
    pub fn parse(text: &str) -> Result<PasswordFile, Error> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line_number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parse_error = |reason: String| Error::Parse {
                line: line_number,
                reason,
            };
            let (username, hash) = line
                .split_once(':')
                .ok_or_else(|| parse_error("expected `username:hash`".to_owned()))?;
            let username = username.trim();
            if username.is_empty() {
                return Err(parse_error("empty username".to_owned()));
            }
            let hash = StoredHash::parse(hash.trim())
                .map_err(|reason| parse_error(format!("user `{username}`: {reason}")))?;
            if users.insert(username.to_owned(), hash).is_some() {
                return Err(parse_error(format!("user `{username}` appears twice")));
            }
        }
        Ok(PasswordFile { users })
    }

    /// Reads and parses a password file. Call this at start-up, not per connection.
    pub fn load(path: impl AsRef<Path>) -> Result<PasswordFile, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        PasswordFile::parse(&text)
    }

    /// Whether `username` is in the file and `password` matches its hash. The hash
    /// comparison is constant-time; an unknown user returns `false` at once.
    pub fn verify(&self, username: &str, password: &[u8]) -> bool {
        self.users
            .get(username)
            .is_some_and(|stored| stored.verify(password))
    }

    /// Whether `username` has an entry.
    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }

    /// How many users the file holds.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file holds no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Lists the users but never their hashes, so the struct is safe to log.
impl fmt::Debug for PasswordFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut users: Vec<&str> = self.users.keys().map(String::as_str).collect();
        users.sort_unstable();
        f.debug_struct("PasswordFile")
            .field("users", &users)
            .finish()
    }
}

impl StoredHash {
    fn parse(text: &str) -> Result<StoredHash, String> {
        if text.starts_with("$argon2") {
            return parse_argon2(text);
        }
        let mut fields = text.split('$');
        if fields.next() != Some("") {
            return Err("not a `$6$`, `$7$` or `$argon2id$` hash \
                        (plain-text passwords are not accepted)"
                .to_owned());
        }
        match fields.next() {
            Some("6") => {
                let salt = decode_salt(fields.next())?;
                let hash = decode_hash(fields.next())?;
                no_more_fields(fields)?;
                Ok(StoredHash::Sha512 { salt, hash })
            }
            Some("7") => {
                let iterations = fields
                    .next()
                    .and_then(|n| n.parse::<u32>().ok())
                    .filter(|&n| n >= 1)
                    .ok_or("`$7$` needs a positive iteration count")?;
                let salt = decode_salt(fields.next())?;
                let hash = decode_hash(fields.next())?;
                no_more_fields(fields)?;
                Ok(StoredHash::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                })
            }
            _ => Err("unknown hash type (expected `$6$`, `$7$` or `$argon2id$`)".to_owned()),
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Sha512 { salt, hash } => {
                let digest = Sha512::new()
                    .chain_update(password)
                    .chain_update(salt)
                    .finalize();
                digest.as_slice().ct_eq(hash).into()
            }
            StoredHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => {
                let mut derived = [0u8; SHA512_LEN];
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, *iterations, &mut derived);
                derived.as_slice().ct_eq(hash).into()
            }
            // `Argon2::verify_password` takes the variant and cost from the PHC
            // string and compares the outputs in constant time.
            StoredHash::Argon2(phc) => PasswordHash::new(phc)
                .is_ok_and(|parsed| Argon2::default().verify_password(password, &parsed).is_ok()),
        }
    }
}

fn parse_argon2(text: &str) -> Result<StoredHash, String> {
    let parsed = PasswordHash::new(text).map_err(|e| format!("bad argon2 hash: {e}"))?;
    argon2::Algorithm::try_from(parsed.algorithm)
        .map_err(|e| format!("bad argon2 algorithm: {e}"))?;
    argon2::Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err("argon2 hash lacks a salt or an output".to_owned());
    }
    Ok(StoredHash::Argon2(text.to_owned()))
}

fn decode_salt(field: Option<&str>) -> Result<Vec<u8>, String> {
    let salt = BASE64
        .decode(field.ok_or("missing salt")?)
        .map_err(|e| format!("salt is not base64: {e}"))?;
    if salt.is_empty() {
        return Err("empty salt".to_owned());
    }
    Ok(salt)
}

fn decode_hash(field: Option<&str>) -> Result<Vec<u8>, String> {
    let hash = BASE64
        .decode(field.ok_or("missing hash")?)
        .map_err(|e| format!("hash is not base64: {e}"))?;
    if hash.len() != SHA512_LEN {
        return Err(format!(
            "hash is {} bytes, expected {SHA512_LEN}",
            hash.len()
        ));
    }
    Ok(hash)
}

fn no_more_fields<'a>(mut fields: impl Iterator<Item = &'a str>) -> Result<(), String> {
    match fields.next() {
        None => Ok(()),
        Some(_) => Err("too many `$`-separated fields".to_owned()),
    }
}

/// Hashes `password` for a password file line (`username:<this>`), with a fresh
/// random salt. Used by `rookery passwd`.
///
/// Panics only if the operating system cannot supply random bytes, which leaves
/// no safe way to make a salt.
#[allow(clippy::expect_used)] // Both invariants are stated in the `expect` messages.
pub fn hash_password(password: &str, kind: HashKind) -> String {
    match kind {
        HashKind::Argon2id => {
            let mut salt = [0u8; 16];
            getrandom::getrandom(&mut salt).expect("the OS random number generator works");
            let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid argon2 salt");
            Argon2::default()
                .hash_password(password.as_bytes(), &salt)
                .expect("argon2's default parameters are valid")
                .to_string()
        }
        HashKind::Pbkdf2Sha512 => {
            let mut salt = [0u8; PBKDF2_SALT_LEN];
            getrandom::getrandom(&mut salt).expect("the OS random number generator works");
            let mut derived = [0u8; SHA512_LEN];
            pbkdf2::pbkdf2_hmac::<Sha512>(
                password.as_bytes(),
                &salt,
                PBKDF2_ITERATIONS,
                &mut derived,
            );
            format!(
                "$7${PBKDF2_ITERATIONS}${}${}",
                base64::engine::general_purpose::STANDARD.encode(salt),
                base64::engine::general_purpose::STANDARD.encode(derived),
            )
        }
    }
}

/// The text of a password file with `username`'s entry set to `hash`: its line
/// replaced in place if present, appended otherwise. Comments and other users'
/// lines are kept as they were. Used by `rookery passwd`.
///
/// Refuses a username that [`PasswordFile::parse`] would not read back as written:
/// one with surrounding whitespace (trimmed away) or a leading `#` (a comment).
pub fn set_entry(text: &str, username: &str, hash: &str) -> Result<String, Error> {
    if username.is_empty()
        || username.contains(':')
        || username.contains(char::is_control)
        || username.trim() != username
        || username.starts_with('#')
    {
        return Err(Error::Parse {
            line: 0,
            reason: "a username must be non-empty, without `:`, control characters, \
                     surrounding whitespace or a leading `#`"
                .to_owned(),
        });
    }
    let entry = format!("{username}:{hash}");
    let mut is_replaced = false;
    let mut lines: Vec<&str> = Vec::new();
    for line in text.lines() {
        let name = line.split_once(':').map(|(name, _)| name.trim());
        if name == Some(username) && !line.trim_start().starts_with('#') {
            if !is_replaced {
                lines.push(&entry);
            }
            is_replaced = true;
        } else {
            lines.push(line);
        }
    }
    if !is_replaced {
        lines.push(&entry);
    }
    let mut updated = lines.join("\n");
    updated.push('\n');
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -c -b` (mosquitto 2.0.11): alice/wonderland,
    /// bob/`b0b:with spaces & ünïcode`.
    const MOSQUITTO_FIXTURE: &str = include_str!("../../tests/fixtures/passwords");

    /// Computed by hand: base64(SHA-512(b"hunter2" ‖ bytes 1..=12)).
    const SHA512_LINE: &str = "carol:$6$AQIDBAUGBwgJCgsM$BvAI+Qf6pQOLRl808d6QZTT3a6B0xO5zIcHD3JzY0IlwG27yGPwEz2wOVlVnzMCgfQVblzctfy3CVaRYU+etmQ==";

    fn parse_error_line(text: &str) -> usize {
        match PasswordFile::parse(text) {
            Err(Error::Parse { line, .. }) => line,
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn mosquitto_2_pbkdf2_fixture_verifies() {
        let file = PasswordFile::parse(MOSQUITTO_FIXTURE).unwrap();
        assert_eq!(file.len(), 2);
        assert!(file.verify("alice", b"wonderland"));
        assert!(file.verify("bob", "b0b:with spaces & ünïcode".as_bytes()));
    }

    #[test]
    fn fixture_loads_from_disk() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/passwords");
        let file = PasswordFile::load(path).unwrap();
        assert!(file.verify("alice", b"wonderland"));
    }

    #[test]
    fn load_reports_missing_file() {
        let err = PasswordFile::load("/nonexistent/rookery/passwords").unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
    }

    #[test]
    fn mosquitto_1_sha512_vector_verifies() {
        let file = PasswordFile::parse(SHA512_LINE).unwrap();
        assert!(file.verify("carol", b"hunter2"));
        assert!(!file.verify("carol", b"hunter3"));
    }

    #[test]
    fn wrong_password_is_rejected() {
        let file = PasswordFile::parse(MOSQUITTO_FIXTURE).unwrap();
        assert!(!file.verify("alice", b"Wonderland"));
        assert!(!file.verify("alice", b""));
        assert!(!file.verify("bob", b"wonderland"));
    }

    #[test]
    fn unknown_user_is_rejected() {
        let file = PasswordFile::parse(MOSQUITTO_FIXTURE).unwrap();
        assert!(!file.verify("mallory", b"wonderland"));
        assert!(!file.verify("", b""));
    }

    #[test]
    fn comments_blank_lines_and_crlf_are_ignored() {
        let text = format!("# users\n\n   \r\n{SHA512_LINE}\r\n# end\n");
        let file = PasswordFile::parse(&text).unwrap();
        assert!(file.verify("carol", b"hunter2"));
    }

    #[test]
    fn malformed_lines_name_their_line_number() {
        assert_eq!(parse_error_line("# c\nalice\n"), 2);
        assert_eq!(parse_error_line("\n\nalice:plaintext"), 3);
        assert_eq!(parse_error_line(":$6$AQIDBAUGBwgJCgsM$AAAA"), 1);
        assert_eq!(parse_error_line("a:$6$AQIDBAUGBwgJCgsM$AAAA"), 1); // short hash
        assert_eq!(parse_error_line("a:$6$!!!!$AAAA"), 1);
        assert_eq!(parse_error_line("a:$7$0$AQIDBAUGBwgJCgsM$AAAA"), 1);
        assert_eq!(parse_error_line("a:$7$x$AQIDBAUGBwgJCgsM$AAAA"), 1);
        assert_eq!(parse_error_line("a:$5$salt$hash"), 1);
        assert_eq!(parse_error_line("a:$argon2id$garbage"), 1);
        let twice = format!("{SHA512_LINE}\n{SHA512_LINE}");
        assert_eq!(parse_error_line(&twice), 2);
    }

    #[test]
    fn argon2id_round_trip() {
        let hash = hash_password("correct horse", HashKind::default());
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        let file = PasswordFile::parse(&format!("dave:{hash}")).unwrap();
        assert!(file.verify("dave", b"correct horse"));
        assert!(!file.verify("dave", b"correct horse "));
    }

    #[test]
    fn pbkdf2_round_trip_uses_mosquitto_layout() {
        let hash = hash_password("s3cret", HashKind::Pbkdf2Sha512);
        let fields: Vec<&str> = hash.split('$').collect();
        assert_eq!(fields[..3], ["", "7", "101"]);
        assert_eq!(BASE64.decode(fields[3]).unwrap().len(), 12);
        assert_eq!(BASE64.decode(fields[4]).unwrap().len(), 64);
        let file = PasswordFile::parse(&format!("erin:{hash}")).unwrap();
        assert!(file.verify("erin", b"s3cret"));
        assert!(!file.verify("erin", b"s3cre"));
    }

    #[test]
    fn salts_are_fresh() {
        let a = hash_password("same", HashKind::Pbkdf2Sha512);
        let b = hash_password("same", HashKind::Pbkdf2Sha512);
        assert_ne!(a, b);
    }

    #[test]
    fn set_entry_replaces_in_place_and_appends_new_users() {
        let text = "# users\nalice:old\nbob:keep\n";
        let updated = set_entry(text, "alice", "new").unwrap();
        assert_eq!(updated, "# users\nalice:new\nbob:keep\n");
        let updated = set_entry(&updated, "carol", "hash").unwrap();
        assert_eq!(updated, "# users\nalice:new\nbob:keep\ncarol:hash\n");
        assert_eq!(set_entry("", "dave", "h").unwrap(), "dave:h\n");
        assert!(set_entry("", "a:b", "h").is_err());
        assert!(set_entry("", "", "h").is_err());
    }

    #[test]
    fn issue_12_set_entry_refuses_names_the_file_would_not_read_back() {
        // The parser trims names and skips `#` lines: such a user could never log in.
        for name in [" bob", "bob ", "\u{a0}bob", "#bob"] {
            assert!(set_entry("", name, SHA512_LINE).is_err(), "{name:?}");
        }
        let updated = set_entry("", "b#b", "$6$AQ==$x").unwrap();
        assert_eq!(updated, "b#b:$6$AQ==$x\n");
    }

    #[test]
    fn debug_output_hides_hashes() {
        let file = PasswordFile::parse(MOSQUITTO_FIXTURE).unwrap();
        let text = format!("{file:?}");
        assert!(text.contains("alice") && !text.contains("$7$"), "{text}");
    }
}
