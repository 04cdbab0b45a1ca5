//! The checks behind each fuzz target, one module per target.
//!
//! Each `check(data)` panics when a property fails and returns normally
//! otherwise. The targets in `fuzz_targets/` call them, and so does the main
//! crate's `tests/fuzz_fixtures.rs` (through `#[path]`), which replays every input
//! under `tests/fixtures/fuzz/<target>/` on stable `cargo test`. So this code
//! depends on nothing but `rookery`, `bytes` and std.

pub mod acl;
pub mod alloc;
pub mod decode;
pub mod input;
pub mod password;
pub mod record;
pub mod session;
pub mod topic;
