//! Read-modify-write of one entry on its owner, as Redis' string commands do: add to a value
//! that holds a decimal integer (INCR, INCRBY, DECR, DECRBY), append bytes (APPEND), or set it
//! under a condition while reading the old value (SET with NX / XX / GET / EX / PX). Adding and
//! appending keep the entry's expiry; a missing key starts from the empty value (with the map's
//! default TTL). The backup is the same idempotent [`Apply`] as any write: the value the owner
//! computed.

use corecast_engine::events::now_millis;
use corecast_engine::prelude::*;
use rkyv::rancor::{Fallible, Source};
use rkyv::ser::{Allocator, Writer};
use rkyv::string::{ArchivedString, StringResolver};
use rkyv::vec::{ArchivedVec, VecResolver};
use rkyv::{munge::munge, Place};

use super::{store, write, write_steps, Apply, MapService};
use crate::decimal::Decimal;

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
    /// Whether to answer the value before (GET); without it the answer holds none.
    pub get: bool,
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

/// An [`Update`] that borrows its map name and key, archived as one without copying them into
/// an `Update` first (two allocations less for each INCR or SET through the front door).
pub struct UpdateRef<'a> {
    /// The map.
    pub name: &'a str,
    /// The key.
    pub key: &'a [u8],
    /// The change.
    pub change: &'a Change,
}

impl Archive for UpdateRef<'_> {
    type Archived = ArchivedUpdate;
    type Resolver = (StringResolver, VecResolver, <Change as Archive>::Resolver);

    fn resolve(&self, (name, key, change): Self::Resolver, out: Place<ArchivedUpdate>) {
        munge!(let ArchivedUpdate { name: name_out, key: key_out, change: change_out } = out);
        ArchivedString::resolve_from_str(self.name, name, name_out);
        ArchivedVec::resolve_from_slice(self.key, key, key_out);
        self.change.resolve(change, change_out);
    }
}

impl<S> Serialize<S> for UpdateRef<'_>
where
    S: Fallible + Allocator + Writer + ?Sized,
    S::Error: Source,
    Change: Serialize<S>,
{
    fn serialize(&self, s: &mut S) -> Result<Self::Resolver, S::Error> {
        Ok((
            ArchivedString::serialize_from_str(self.name, s)?,
            ArchivedVec::serialize_from_slice(self.key, s)?,
            self.change.serialize(s)?,
        ))
    }
}

/// The outcome of an [`Update`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Updated {
    /// The value after an `Add`.
    Integer(i64),
    /// The value's length after an `Append`.
    Length(u64),
    /// After a `Set`: whether it stored the value (the condition held), and the live value
    /// before if the set asked for it (`SetTo::get`).
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

/// What an update writes.
enum NewValue<'a> {
    /// Nothing: the condition failed or the value is not a number.
    None,
    /// The set's own value, read from the operation, and its TTL.
    Given(&'a [u8], i64),
    /// The sum, in decimal.
    Number(Decimal),
    /// A value computed from the old one.
    Computed(Vec<u8>),
}

/// What an update answers, and what it writes.
fn apply<'a>(change: &'a ArchivedChange, old: Option<&[u8]>) -> (Updated, NewValue<'a>) {
    match change {
        ArchivedChange::Set(to) => {
            let stored = to.if_exists.as_ref().is_none_or(|&e| e == old.is_some());
            let before = if to.get {
                old.map(<[u8]>::to_vec)
            } else {
                None
            };
            let value = if stored {
                NewValue::Given(&to.value, to.ttl_ms.to_native())
            } else {
                NewValue::None
            };
            (Updated::Set(stored, before), value)
        }
        ArchivedChange::Add(delta) => {
            let current = match old {
                None => 0,
                Some(v) => match parse_integer(v) {
                    Some(n) => n,
                    None => return (Updated::NotAnInteger, NewValue::None),
                },
            };
            match current.checked_add(delta.to_native()) {
                Some(n) => (Updated::Integer(n), NewValue::Number(Decimal::of(n))),
                None => (Updated::Overflow, NewValue::None),
            }
        }
        ArchivedChange::Append(tail) => {
            let mut value = Vec::with_capacity(old.map_or(0, <[u8]>::len) + tail.len());
            value.extend_from_slice(old.unwrap_or_default());
            value.extend_from_slice(tail);
            (
                Updated::Length(value.len() as u64),
                NewValue::Computed(value),
            )
        }
    }
}

/// The result and, when it wrote, the write's record (for the backup).
#[derive(Archive, Serialize, Deserialize, Debug)]
pub struct UpdateResult {
    /// What the caller gets.
    pub outcome: Updated,
    /// The write's record and the value written when the owner computed it (`None` for a set,
    /// whose value is the operation's, and for a sum, which is the outcome's); `None` when
    /// nothing changed. Only the owner's backup is
    /// built from it, so it is not archived: the answer a caller gets (and a retry replays)
    /// holds the outcome alone, not another copy of the value and the record.
    #[rkyv(with = rkyv::with::Skip)]
    pub written: Option<(Option<Vec<u8>>, super::Written)>,
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
        // One look-up for the read and the write.
        let (spot, old) = match ctx.container.get(op.name.as_str()) {
            Some(s) => {
                let spot = s.locate(&op.key);
                (Some(spot), s.at(spot).filter(|e| store::live(e, now)))
            }
            None => (None, None),
        };
        let old_expiry = old.map(|e| store::expires(e));
        let (outcome, value) = apply(&op.change, old.map(|e| store::value(e)));
        // A set gives the entry its own TTL; otherwise the entry keeps its expiry, and a new one
        // gets the map's default.
        let kept_ttl = || match old_expiry {
            None => -1,
            Some(0) => 0,
            Some(at) => at.saturating_sub(now).max(1) as i64,
        };
        let number;
        let (value, computed, ttl_ms) = match value {
            NewValue::None => {
                return Ok(UpdateResult {
                    outcome,
                    written: None,
                })
            }
            NewValue::Given(value, ttl_ms) => (value, None, ttl_ms),
            NewValue::Number(n) => {
                number = n;
                (number.as_bytes(), None, kept_ttl())
            }
            NewValue::Computed(v) => (&[][..], Some(v), kept_ttl()),
        };
        let value = computed.as_deref().unwrap_or(value);
        // The backup takes a set's value from the operation and a sum from the outcome.
        let written = write(ctx, &op.name, spot, (&op.key, value), ttl_ms, false, now)?;
        Ok(UpdateResult {
            outcome,
            written: Some((computed, written)),
        })
    }
    fn should_backup(_: &Archived<Self>, r: &UpdateResult) -> bool {
        r.written.is_some()
    }
    fn backup_operation(op: &Archived<Self>, r: &UpdateResult) -> Option<Backup> {
        let (computed, written) = r.written.as_ref()?;
        let sum;
        let value = match (computed, &op.change, &r.outcome) {
            (Some(v), _, _) => &v[..],
            (None, ArchivedChange::Set(to), _) => &to.value[..],
            (None, _, Updated::Integer(n)) => {
                sum = Decimal::of(*n);
                sum.as_bytes()
            }
            (None, _, _) => return None,
        };
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
    fn an_update_that_borrows_archives_as_the_update_it_stands_for() {
        for change in [
            Change::Add(-42),
            Change::Append(b"tail".to_vec()),
            Change::Set(SetTo {
                value: vec![7; 300],
                ttl_ms: 1500,
                if_exists: Some(false),
                get: true,
            }),
        ] {
            let owned = Update {
                name: "a map with a longer name than fits inline".into(),
                key: b"key-17".to_vec(),
                change: change.clone(),
            };
            let borrowed = UpdateRef {
                name: &owned.name,
                key: &owned.key,
                change: &change,
            };
            let a = corecast_engine::payload::encode(&owned).unwrap();
            let b = corecast_engine::payload::encode_as::<Update, _>(&borrowed).unwrap();
            assert_eq!(a.as_slice(), b.as_slice(), "{change:?}");
            let read = corecast_engine::payload::access::<Update>(&b).unwrap();
            assert_eq!(read.key.as_slice(), b"key-17");
        }
    }

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

    #[test]
    fn sums_are_written_in_the_decimal_they_are_read_in() {
        for n in [
            0,
            7,
            -7,
            10,
            -10,
            1234567890,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ] {
            let d = Decimal::of(n);
            assert_eq!(d.as_bytes(), n.to_string().as_bytes());
            assert_eq!(parse_integer(d.as_bytes()), Some(n));
        }
    }
}
