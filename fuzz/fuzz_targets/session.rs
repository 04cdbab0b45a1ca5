//! Fuzz target `session`: the properties are in `src/session.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rookery_fuzz::session::check(data));
