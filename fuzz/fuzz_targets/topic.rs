//! Fuzz target `topic`: the properties are in `src/topic.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rookery_fuzz::topic::check(data));
