//! Fuzz target `acl`: the properties are in `src/acl.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rookery_fuzz::acl::check(data));
