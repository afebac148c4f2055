//! Redis' glob-style pattern matching (`stringmatchlen` in Redis' `util.c`), as used by
//! `KEYS`, `SCAN … MATCH`, `PSUBSCRIBE` and friends.
//!
//! Patterns come from the network, so [`matches()`] never recurses: it backtracks iteratively
//! to the most recent `*`, which bounds it to O(len(pattern) × len(string)) steps where a
//! naive recursive matcher is exponential in the number of `*`s.
//!
//! Syntax, with Redis' own edge cases:
//! - `*` matches any run of bytes (consecutive `*`s act as one), `?` any single byte;
//! - `[abc]`, `[^abc]` (negated), `[a-z]` (a range; `[z-a]` is the same range), `[\]]` (an
//!   escaped byte, compared exactly even when matching without case);
//! - `\x` matches `x` literally; a trailing lone `\` matches a backslash;
//! - an unclosed `[` runs to the end of the pattern and still matches one byte (`[ab` is
//!   `[ab]`; `[` alone matches nothing, `[^` anything), and a `-` before the closing `]`
//!   makes a range ending in `]` that swallows the rest (`[a-]` is not `a` or `-`);
//! - an empty string is matched only by the empty pattern (Redis' `KEYS *` and `SCAN` skip
//!   the matcher entirely for the pattern `*`; callers should do the same);
//! - a pattern with more than 1000 `*` groups that are not at its end matches nothing
//!   (Redis' protection against abusive patterns).
//!
//! Matching without case folds ASCII letters only. Bytes are compared as unsigned, where
//! Redis compares range bounds as C `char` (signed on x86): ranges with bounds at or above
//! 0x80 may differ from Redis on such platforms.

/// Redis stops recursing past this many `*` groups and reports no match.
const MAX_STAR_GROUPS: usize = 1000;

/// Whether `s` matches the glob `pattern`, with Redis' `stringmatchlen` semantics
/// (see the module documentation); `nocase` folds ASCII case.
pub fn matches(pattern: &[u8], s: &[u8], nocase: bool) -> bool {
    // Redis' matching loop runs only while both are non-empty.
    if s.is_empty() {
        return pattern.is_empty();
    }
    if inner_star_groups(pattern) > MAX_STAR_GROUPS {
        return false;
    }
    let (mut pi, mut si) = (0usize, 0usize);
    // The pattern position after the most recent `*` group, and the string position its
    // continuation was last tried at.
    let mut resume: Option<(usize, usize)> = None;
    loop {
        if si == s.len() {
            // The string is used up: only trailing `*`s may remain.
            while pattern.get(pi) == Some(&b'*') {
                pi += 1;
            }
            if pi == pattern.len() {
                return true;
            }
        } else if let Some(&p) = pattern.get(pi) {
            if p == b'*' {
                let after = skip_stars(pattern, pi);
                if after == pattern.len() {
                    return true;
                }
                resume = Some((after, si));
                pi = after;
                continue;
            }
            let (ok, next) = single(pattern, pi, s[si], nocase);
            if ok {
                pi = next;
                si += 1;
                continue;
            }
        }
        // Mismatch: let the last `*` swallow one more byte, if it can.
        match resume {
            Some((after, tried)) if tried + 1 < s.len() => {
                resume = Some((after, tried + 1));
                pi = after;
                si = tried + 1;
            }
            _ => return false,
        }
    }
}

/// The position after the run of `*`s starting at `pi`.
fn skip_stars(pattern: &[u8], mut pi: usize) -> usize {
    while pattern.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi
}

/// How many `*` groups of `pattern` are followed by more pattern: the nesting depth Redis'
/// recursive matcher needs to match it.
fn inner_star_groups(pattern: &[u8]) -> usize {
    let mut groups = 0;
    let mut pi = 0;
    while pi < pattern.len() {
        if pattern[pi] == b'*' {
            pi = skip_stars(pattern, pi);
            if pi < pattern.len() {
                groups += 1;
            }
        } else {
            // The byte matched does not change where a token ends.
            pi = single(pattern, pi, 0, false).1;
        }
    }
    groups
}

/// Matches the one-byte token (`?`, a class, an escape or a literal) at `pattern[pi]`
/// against `c`: whether it matches, and where the next token starts.
fn single(pattern: &[u8], pi: usize, c: u8, nocase: bool) -> (bool, usize) {
    let eq = |a: u8, b: u8| {
        if nocase {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    match pattern[pi] {
        b'?' => (true, pi + 1),
        b'[' => class(pattern, pi + 1, c, nocase),
        b'\\' if pi + 1 < pattern.len() => (eq(pattern[pi + 1], c), pi + 2),
        p => (eq(p, c), pi + 1),
    }
}

/// Matches the class whose body starts at `pattern[i]` (just after its `[`) against `c`;
/// a faithful transcription of Redis' loop, including its handling of unclosed classes.
fn class(pattern: &[u8], mut i: usize, c: u8, nocase: bool) -> (bool, usize) {
    let len = pattern.len();
    let not = pattern.get(i) == Some(&b'^');
    if not {
        i += 1;
    }
    let mut hit = false;
    loop {
        let rest = len - i;
        if rest >= 2 && pattern[i] == b'\\' {
            i += 1;
            // Redis compares escaped class members exactly, even without case.
            hit |= pattern[i] == c;
        } else if rest == 0 {
            // Unclosed: the class ends with the pattern.
            i -= 1;
            break;
        } else if pattern[i] == b']' {
            break;
        } else if rest >= 3 && pattern[i + 1] == b'-' {
            let (mut lo, mut hi) = (pattern[i], pattern[i + 2]);
            if lo > hi {
                std::mem::swap(&mut lo, &mut hi);
            }
            let mut x = c;
            if nocase {
                lo = lo.to_ascii_lowercase();
                hi = hi.to_ascii_lowercase();
                x = x.to_ascii_lowercase();
            }
            hit |= lo <= x && x <= hi;
            i += 2;
        } else if nocase {
            hit |= pattern[i].eq_ignore_ascii_case(&c);
        } else {
            hit |= pattern[i] == c;
        }
        i += 1;
    }
    (hit != not, i + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes(), false)
    }

    fn mi(p: &str, s: &str) -> bool {
        matches(p.as_bytes(), s.as_bytes(), true)
    }

    /// Redis' recursive `stringmatchlen_impl`, transcribed as the oracle the iterative
    /// matcher is checked against (bytes past the pattern read as C's terminating NUL).
    fn oracle(p: &[u8], s: &[u8], nocase: bool) -> bool {
        fn at(p: &[u8], i: usize) -> u8 {
            p.get(i).copied().unwrap_or(0)
        }
        fn low(b: u8) -> u8 {
            b.to_ascii_lowercase()
        }
        fn imp(
            p: &[u8],
            mut pi: usize,
            s: &[u8],
            mut si: usize,
            nc: bool,
            skip: &mut bool,
            nesting: usize,
        ) -> bool {
            if nesting > 1000 {
                return false;
            }
            while pi < p.len() && si < s.len() {
                match p[pi] {
                    b'*' => {
                        while pi < p.len() && at(p, pi + 1) == b'*' {
                            pi += 1;
                        }
                        if p.len() - pi == 1 {
                            return true;
                        }
                        while si < s.len() {
                            if imp(p, pi + 1, s, si, nc, skip, nesting + 1) {
                                return true;
                            }
                            if *skip {
                                return false;
                            }
                            si += 1;
                        }
                        *skip = true;
                        return false;
                    }
                    b'?' => si += 1,
                    b'[' => {
                        pi += 1;
                        let not = pi < p.len() && p[pi] == b'^';
                        if not {
                            pi += 1;
                        }
                        let mut hit = false;
                        loop {
                            let rest = p.len() - pi;
                            if rest >= 2 && p[pi] == b'\\' {
                                pi += 1;
                                if p[pi] == s[si] {
                                    hit = true;
                                }
                            } else if rest == 0 {
                                pi -= 1;
                                break;
                            } else if p[pi] == b']' {
                                break;
                            } else if rest >= 3 && p[pi + 1] == b'-' {
                                let (mut a, mut b, mut c) = (p[pi], p[pi + 2], s[si]);
                                if a > b {
                                    std::mem::swap(&mut a, &mut b);
                                }
                                if nc {
                                    a = low(a);
                                    b = low(b);
                                    c = low(c);
                                }
                                pi += 2;
                                if c >= a && c <= b {
                                    hit = true;
                                }
                            } else if (!nc && p[pi] == s[si]) || (nc && low(p[pi]) == low(s[si])) {
                                hit = true;
                            }
                            pi += 1;
                        }
                        if not {
                            hit = !hit;
                        }
                        if !hit {
                            return false;
                        }
                        si += 1;
                    }
                    first => {
                        let mut b = first;
                        if first == b'\\' && p.len() - pi >= 2 {
                            pi += 1;
                            b = p[pi];
                        }
                        if (!nc && b != s[si]) || (nc && low(b) != low(s[si])) {
                            return false;
                        }
                        si += 1;
                    }
                }
                pi += 1;
                if si == s.len() {
                    while pi < p.len() && p[pi] == b'*' {
                        pi += 1;
                    }
                    break;
                }
            }
            pi == p.len() && si == s.len()
        }
        let mut skip = false;
        imp(p, 0, s, 0, nocase, &mut skip, 0)
    }

    #[test]
    fn wildcards() {
        assert!(m("h?llo", "hello"));
        assert!(m("h?llo", "hallo"));
        assert!(!m("h?llo", "hllo"));
        assert!(m("h*llo", "hllo"));
        assert!(m("h*llo", "heeeello"));
        assert!(!m("h*llo", "heeeelo"));
        assert!(m("*", "anything"));
        assert!(m("**", "x"));
        assert!(m("a*", "a"));
        assert!(m("a**", "a"));
        assert!(m("*a*", "bab"));
        assert!(!m("*a*", "bbb"));
        assert!(m("*.txt", "notes.txt"));
        assert!(!m("*.txt", "notes.txt.bak"));
        assert!(m("user:*:name", "user:42:name"));
        assert!(!m("user:*:name", "user:42:email"));
        assert!(m("", ""));
        assert!(!m("", "a"));
        assert!(!m("a", ""));
        // Redis' loop never runs for an empty string: only the empty pattern matches it.
        assert!(!m("*", ""));
        assert!(!m("?", ""));
    }

    #[test]
    fn classes() {
        assert!(m("h[ae]llo", "hello"));
        assert!(m("h[ae]llo", "hallo"));
        assert!(!m("h[ae]llo", "hillo"));
        assert!(m("h[^e]llo", "hallo"));
        assert!(m("h[^e]llo", "hbllo"));
        assert!(!m("h[^e]llo", "hello"));
        assert!(m("h[a-b]llo", "hallo"));
        assert!(m("h[a-b]llo", "hbllo"));
        assert!(!m("h[a-b]llo", "hcllo"));
        // Reversed ranges are the same range.
        assert!(m("h[b-a]llo", "hallo"));
        assert!(m("h[z-x]", "hy"));
        assert!(!m("h[z-x]", "hw"));
        assert!(m("[0-9][0-9]", "42"));
        assert!(m("[^0-9]", "x"));
        assert!(!m("[^0-9]", "5"));
        // Escapes inside a class.
        assert!(m("[\\]]", "]"));
        assert!(m("[\\^]", "^"));
        assert!(m("[a\\-z]", "-"));
        assert!(!m("[a\\-z]", "b"));
        // `^` only negates first.
        assert!(m("[a^]", "^"));
        // An empty class `[]` never matches; `[]]` is `[]` followed by a literal `]`.
        assert!(!m("[]", "a"));
        assert!(!m("[]]", "]"));
    }

    #[test]
    fn escapes_and_edge_cases() {
        assert!(m("h\\*llo", "h*llo"));
        assert!(!m("h\\*llo", "hello"));
        assert!(m("h\\?llo", "h?llo"));
        assert!(!m("h\\?llo", "hallo"));
        assert!(m("\\[a]", "[a]"));
        assert!(m("\\a", "a"));
        // A trailing backslash matches a backslash.
        assert!(m("a\\", "a\\"));
        assert!(!m("a\\", "a"));
        // An unclosed class runs to the end of the pattern.
        assert!(m("[ab", "a"));
        assert!(m("[ab", "b"));
        assert!(!m("[ab", "c"));
        assert!(!m("x[ab", "xab"));
        assert!(!m("[", "["));
        assert!(!m("[", "a"));
        assert!(m("[^", "q"));
        assert!(m("[^ab", "c"));
        assert!(!m("[^ab", "a"));
        // `-` before `]` makes a range ending in `]` that swallows the rest of the pattern.
        assert!(m("[a-]", "^"));
        assert!(!m("[a-]", "-"));
        assert!(m("[a-]xyz", "x"));
        // A class with a trailing escape start.
        assert!(m("[\\", "\\"));
    }

    #[test]
    fn nocase() {
        assert!(mi("HELLO", "hello"));
        assert!(mi("h*LO", "HeLlo"));
        assert!(!m("HELLO", "hello"));
        assert!(mi("[A-C]x", "bX"));
        assert!(mi("[a-c]", "B"));
        assert!(mi("[xyz]", "Y"));
        assert!(mi("\\H", "h"));
        // Escaped class members compare exactly, as in Redis.
        assert!(!mi("[\\H]", "h"));
        // Ranges are lowered after ordering: `[A-z]` folds to a..z, so `[` is out.
        assert!(m("[A-z]", "["));
        assert!(!mi("[A-z]", "["));
        // Only ASCII folds.
        assert!(!mi("\u{e9}", "\u{c9}"));
    }

    #[test]
    fn binary_bytes() {
        assert!(matches(b"a\x00*", b"a\x00\xff\r\n", false));
        assert!(matches(b"[\x80-\xff]", b"\x90", false));
        assert!(!matches(b"[\x80-\xff]", b"\x7f", false));
        assert!(matches(b"?", b"\xff", true));
    }

    #[test]
    fn pathological_patterns_finish_fast() {
        let s = vec![b'a'; 10_000];
        let start = std::time::Instant::now();
        assert!(!matches(b"a*a*a*a*a*b", &s, false));
        assert!(matches(b"a*a*a*a*a*a", &s, false));
        assert!(!matches(b"*a*a*a*a*a*a*a*a*a*a*a*a*b*", &s, true));
        assert!(!matches(b"*?*?*?*?*?*?*?*?*?*?b", &s, false));
        let long_pattern: Vec<u8> = b"a*".repeat(500).into_iter().chain(*b"b").collect();
        assert!(!matches(&long_pattern, &s, false));
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "took {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn nesting_limit_like_redis() {
        let mut p = b"*a".repeat(1000);
        p.push(b'*');
        let s = vec![b'a'; 1000];
        assert!(matches(&p, &s, false));
        assert_eq!(matches(&p, &s, false), oracle(&p, &s, false));
        let mut p = b"*a".repeat(1001);
        p.push(b'*');
        let s = vec![b'a'; 1001];
        assert!(!matches(&p, &s, false));
        // A trailing group does not count.
        let mut p = b"a*".repeat(1000);
        p.extend_from_slice(b"a*");
        assert!(matches(&p, &s, false));
    }

    #[test]
    fn agrees_with_redis_recursive_matcher() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let pattern_bytes = b"ab*?[]^-\\A";
        let string_bytes = b"abAB-]^\\*[";
        for round in 0..40_000 {
            let plen = (next() % 9) as usize;
            let slen = (next() % 9) as usize;
            let p: Vec<u8> = (0..plen)
                .map(|_| pattern_bytes[(next() % pattern_bytes.len() as u64) as usize])
                .collect();
            let s: Vec<u8> = (0..slen)
                .map(|_| string_bytes[(next() % string_bytes.len() as u64) as usize])
                .collect();
            let nocase = round % 2 == 0;
            assert_eq!(
                matches(&p, &s, nocase),
                oracle(&p, &s, nocase),
                "pattern {:?} string {:?} nocase {nocase}",
                String::from_utf8_lossy(&p),
                String::from_utf8_lossy(&s),
            );
        }
    }
}
