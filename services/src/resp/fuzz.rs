//! Fuzz target body for the Redis protocol parser: a plain function over arbitrary bytes,
//! called by the cargo-fuzz target in `fuzz/` and, over the checked-in corpus, by a stable test.
//! It must return normally for every input: a panic is the bug.

use super::glob;
use super::proto::{parse, parse_value, Command, Limits};

/// Requests as a connection reads them, with small limits so the bounds are reached: every
/// command parsed uses at most what is buffered and makes progress, and its arguments are
/// readable. The same bytes go through the reply parser, and the first two arguments of each
/// command through the glob matcher (pattern, string).
pub fn requests(data: &[u8]) {
    let limits = Limits {
        max_bulk: 256,
        max_args: 16,
        max_inline: 256,
    };
    let mut cmd = Command::new();
    let mut at = 0;
    while at < data.len() {
        match parse(&data[at..], &limits, &mut cmd) {
            Ok(Some(used)) => {
                assert!(
                    used > 0 && at + used <= data.len(),
                    "progress within the buffer"
                );
                let args: Vec<&[u8]> = cmd.args(&data[at..]).collect();
                assert_eq!(args.len(), cmd.len());
                if let [pattern, s, ..] = args.as_slice() {
                    let _ = glob::matches(pattern, s, false);
                    let _ = glob::matches(pattern, s, true);
                }
                at += used;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let mut at = 0;
    while let Ok(Some((_, used))) = parse_value(&data[at..]) {
        assert!(used > 0 && at + used <= data.len());
        at += used;
    }
}
