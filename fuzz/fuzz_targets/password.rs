//! Fuzz target `password`: the properties are in `src/password.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rookery_fuzz::password::check(data));
