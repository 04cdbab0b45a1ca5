//! Replays the inputs the fuzzers found (`tests/fixtures/fuzz/<target>/`, one file
//! each) through the same checks the fuzz targets run (`fuzz/src/`), so that they
//! stay fixed on stable `cargo test`, where libFuzzer does not run.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

#[path = "../fuzz/src/lib.rs"]
mod checks;

/// The `decode` check measures what the decoder allocates.
#[global_allocator]
static ALLOC: checks::alloc::Counting = checks::alloc::Counting;

/// Runs `check` on every file of `tests/fixtures/fuzz/<target>/` and names each
/// one that fails.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/fuzz")
        .join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return; // nothing found for this target yet
    };
    let mut failed = Vec::new();
    for entry in entries {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(failed.is_empty(), "failing {target} inputs: {failed:#?}");
}

#[test]
fn issue_12_decode_inputs_found_by_the_fuzzer() {
    replay("decode", checks::decode::check);
}

#[test]
fn issue_12_topic_inputs_found_by_the_fuzzer() {
    replay("topic", checks::topic::check);
}

#[test]
fn issue_12_session_inputs_found_by_the_fuzzer() {
    replay("session", checks::session::check);
}

#[test]
fn issue_12_password_inputs_found_by_the_fuzzer() {
    replay("password", checks::password::check);
}

#[test]
fn issue_12_acl_inputs_found_by_the_fuzzer() {
    replay("acl", checks::acl::check);
}

#[test]
fn issue_12_record_inputs_found_by_the_fuzzer() {
    replay("record", checks::record::check);
}
