//! The `resp` target. Its body is `corecast_services::resp::fuzz::requests`,
//! which `services/tests/fuzz_corpus.rs` also runs over `fuzz/corpus/resp` on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| corecast_services::resp::fuzz::requests(data));
