//! Fuzz target `record`: the properties are in `src/record.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rookery_fuzz::record::check(data));
