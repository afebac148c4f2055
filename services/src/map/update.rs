//! Read-modify-write of one entry on its owner, as Redis' string commands do: add to a value
//! that holds a decimal integer (INCR, INCRBY, DECR, DECRBY), append bytes (APPEND), or set it
//! under a condition while reading the old value (SET with NX / XX / GET / EX / PX). Adding and
//! appending keep the entry's expiry; a missing key starts from the empty value (with the map's
//! default TTL). The backup is the same idempotent [`Apply`] as any write: the value the owner
//! computed.

use corecast_engine::events::now_millis;
use corecast_engine::prelude::*;

use super::{store, write, write_steps, Apply, MapService};

/// What to do to the value.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Parse the value as a decimal `i64` (a missing one as 0) and add this.
    Add(i64),
    /// Append these bytes.
    Append(Vec<u8>),
    /// Store a value when a condition holds.
    Set(SetTo),
}

/// A conditional set: the value, its TTL and the condition.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SetTo {
    /// The new value.
    pub value: Vec<u8>,
    /// The TTL, as `Put::ttl_ms` (`-1`: the map's default, `0`: none, else milliseconds).
    pub ttl_ms: i64,
    /// `None`: always; `Some(true)`: only if the key has a live value (XX); `Some(false)`: only
    /// if it has none (NX).
    pub if_exists: Option<bool>,
}

/// Changes a key's value in place, on its owner.
#[derive(Archive, Serialize, Deserialize)]
pub struct Update {
    /// The map.
    pub name: String,
    /// The key.
    pub key: Vec<u8>,
    /// The change.
    pub change: Change,
}

/// The outcome of an [`Update`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// The value after an `Add`.
    Integer(i64),
    /// The value's length after an `Append`.
    Length(u64),
    /// After a `Set`: whether it stored the value (the condition held), and the live value
    /// before.
    Set(bool, Option<Vec<u8>>),
    /// The value is not a decimal integer that fits an `i64`; nothing changed.
    NotAnInteger,
    /// The sum does not fit an `i64`; nothing changed.
    Overflow,
}

/// The decimal integer `bytes` spell, as Redis reads them: an optional `-`, digits, no leading
/// zeros, no `+`, no spaces, within `i64`.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(bytes).ok()?;
    let digits = text.strip_prefix('-').unwrap_or(text);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && text != "-0";
    canonical.then(|| text.parse().ok()).flatten()
}

/// What an update answers, and what it writes (`None`: nothing).
fn apply(change: &ArchivedChange, old: Option<&[u8]>) -> (Updated, Option<Vec<u8>>) {
    match change {
        ArchivedChange::Set(to) => {
            let stored = to.if_exists.as_ref().is_none_or(|&e| e == old.is_some());
            let outcome = Updated::Set(stored, old.map(<[u8]>::to_vec));
            (outcome, stored.then(|| to.value.to_vec()))
        }
        ArchivedChange::Add(delta) => {
            let current = match old {
                None => 0,
                Some(v) => match parse_integer(v) {
                    Some(n) => n,
                    None => return (Updated::NotAnInteger, None),
                },
            };
            match current.checked_add(delta.to_native()) {
                Some(n) => (Updated::Integer(n), Some(n.to_string().into_bytes())),
                None => (Updated::Overflow, None),
            }
        }
        ArchivedChange::Append(tail) => {
            let mut value = old.map(<[u8]>::to_vec).unwrap_or_default();
            value.extend_from_slice(tail);
            (Updated::Length(value.len() as u64), Some(value))
        }
    }
}

/// The result and, when it wrote, the write's record (for the backup).
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct UpdateResult {
    /// What the caller gets.
    pub outcome: Updated,
    /// The value written and the write's record; `None` when nothing changed. Only the owner's
    /// backup is built from it, so it is not archived: the answer a caller gets (and a retry
    /// replays) holds the outcome alone, not another copy of the value and the record.
    #[rkyv(with = rkyv::with::Skip)]
    pub written: Option<(Vec<u8>, super::Written)>,
}

impl Operation for Update {
    type Service = MapService;
    type Response = UpdateResult;
    const ID: OpId = OpId(14);
    fn object_name(op: &Archived<Self>) -> Option<&str> {
        Some(op.name.as_str())
    }
    fn run(op: &Archived<Self>, ctx: &mut OpContext<MapService>) -> Result<UpdateResult, OpError> {
        let now = now_millis();
        let old = ctx
            .container
            .get(op.name.as_str())
            .and_then(|s| s.get(&op.key, now))
            .map(|e| (store::value(e).to_vec(), store::expires(e)));
        let (outcome, value) = apply(&op.change, old.as_ref().map(|(v, _)| v.as_slice()));
        let Some(value) = value else {
            return Ok(UpdateResult {
                outcome,
                written: None,
            });
        };
        // A set gives the entry its own TTL; otherwise the entry keeps its expiry, and a new one
        // gets the map's default.
        let ttl_ms = match (&op.change, old) {
            (ArchivedChange::Set(to), _) => to.ttl_ms.to_native(),
            (_, None) => -1,
            (_, Some((_, 0))) => 0,
            (_, Some((_, at))) => at.saturating_sub(now).max(1) as i64,
        };
        let written = write(ctx, &op.name, &op.key, &value, ttl_ms, false)?;
        Ok(UpdateResult {
            outcome,
            written: Some((value, written)),
        })
    }
    fn should_backup(_: &Archived<Self>, r: &UpdateResult) -> bool {
        r.written.is_some()
    }
    fn backup_operation(op: &Archived<Self>, r: &UpdateResult) -> Option<Backup> {
        let (value, written) = r.written.as_ref()?;
        Some(Backup::of(&Apply {
            name: op.name.to_string(),
            steps: write_steps(&op.key, value, written).into(),
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn integers_are_read_as_redis_reads_them() {
        for (text, want) in [
            ("0", Some(0)),
            ("-5", Some(-5)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("01", None),
            ("-0", None),
            ("+1", None),
            (" 1", None),
            ("", None),
            ("-", None),
            ("1.5", None),
        ] {
            assert_eq!(parse_integer(text.as_bytes()), want, "{text:?}");
        }
    }
}
