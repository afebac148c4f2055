//! The `config` target. Its body is `corecast_engine::fuzz::config`,
//! which `services/tests/fuzz_corpus.rs` also runs over `fuzz/corpus/config` on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecast_engine::fuzz::config(data));
