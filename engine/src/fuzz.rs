//! Fuzz target bodies for the engine: plain functions over arbitrary bytes, called by the
//! cargo-fuzz targets in `fuzz/` and, over the checked-in corpus, by a stable test (so CI replays
//! every input that ever found a bug without a nightly toolchain). Each must return normally
//! for every input: a panic is the bug.

use crate::config::Config;

/// The config parser: any text parses or is refused with an error that names something; a
/// config it accepts validates again and survives being printed back as its shard count.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match Config::from_toml_str(&text) {
        Ok(config) => {
            assert!(
                config.validate().is_ok(),
                "an accepted config must validate"
            );
            assert!(config.shard_count() >= 1);
        }
        Err(e) => assert!(!e.to_string().is_empty(), "errors say what is wrong"),
    }
    // Overrides, as `--set KEY=VALUE` gives them.
    if let Some((key, value)) = text.split_once('=') {
        let overrides = [(key.trim().to_owned(), value.trim().to_owned())];
        if let Ok(config) = Config::load(None, &overrides) {
            assert!(config.validate().is_ok());
        }
    }
}
