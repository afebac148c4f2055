//! The `frames` target. Its body is `corecast_net::fuzz::frames`,
//! which `services/tests/fuzz_corpus.rs` also runs over `fuzz/corpus/frames` on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecast_net::fuzz::frames(data));
