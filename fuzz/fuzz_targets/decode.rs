//! Fuzz target `decode`: the properties are in `src/decode.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| rookery_fuzz::decode::check(data));

#[global_allocator]
static ALLOC: rookery_fuzz::alloc::Counting = rookery_fuzz::alloc::Counting;
