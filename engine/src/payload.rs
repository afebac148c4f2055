//! The rkyv bounds of everything that crosses a channel or a socket, gathered in one trait.
//!
//! Owns: [`Payload`] (serializable, validatable in place, deserializable), and the encode /
//! access / decode helpers the shard and the invoker use. Nothing else in the engine names
//! rkyv's serializer or validator types, so a change of rkyv strategy is a change here only.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Archived, Deserialize, Serialize};

/// Bytes of one archived value, aligned so they can be read in place.
pub type Bytes = AlignedVec;

/// A value that travels as an rkyv archive: operations, responses, replica data.
///
/// Implemented for every type that derives `rkyv::{Archive, Serialize, Deserialize}` (and for
/// primitives, `String`, `Vec`, `Option`, tuples …). The archived form is validated before it is
/// read: bytes are never trusted.
pub trait Payload:
    Sized
    + Archive<
        Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                      + Deserialize<Self, HighDeserializer<rancor::Error>>,
    > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
    + Send
    + 'static
{
}

impl<T> Payload for T where
    T: Archive<
            Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
                          + Deserialize<T, HighDeserializer<rancor::Error>>,
        > + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
        + Send
        + 'static
{
}

/// A value that archives as a `T` without being one: a twin of `T` that borrows what `T` owns
/// (`#[rkyv(as = ArchivedT)]` with `Cow` or reference fields), so a caller holding the key and the
/// name as slices archives an operation without copying them into a `T` first.
pub trait ArchivesAs<T: Payload>:
    Archive<Archived = Archived<T>>
    + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

impl<T: Payload, V> ArchivesAs<T> for V where
    V: Archive<Archived = Archived<T>>
        + for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>
{
}

/// Bytes an archive starts with room for: an operation on one key with a value of about 100
/// bytes fits, where growing from nothing (doubling) would allocate three times.
const FIRST_CAPACITY: usize = 256;

/// Room a response archived into empty bytes starts with (most are an outcome or a value).
const FIRST_RESPONSE_CAPACITY: usize = 64;

/// Archives `value` into `out` (cleared first), reusing its allocation.
pub(crate) fn encode_into<T: Payload>(value: &T, out: &mut Bytes) -> Result<(), rancor::Error> {
    let mut buf = std::mem::take(out);
    buf.clear();
    if buf.capacity() == 0 {
        buf.reserve(FIRST_RESPONSE_CAPACITY);
    }
    *out = rkyv::api::high::to_bytes_in(value, buf)?;
    Ok(())
}

/// `bytes` in an aligned allocation of their own.
pub(crate) fn copy(bytes: &[u8]) -> Bytes {
    let mut out = Bytes::with_capacity(bytes.len());
    out.extend_from_slice(bytes);
    out
}

/// Archives `value` into fresh bytes.
pub fn encode<T: Payload>(value: &T) -> Result<Bytes, rancor::Error> {
    encode_as::<T, T>(value)
}

/// Archives `value`, which archives as a `T`, into fresh bytes.
pub fn encode_as<T: Payload, V: ArchivesAs<T>>(value: &V) -> Result<Bytes, rancor::Error> {
    rkyv::api::high::to_bytes_in(value, Bytes::with_capacity(FIRST_CAPACITY))
}

/// Validates `bytes` as an archived `T` and returns it in place, without copying.
pub fn access<T: Payload>(bytes: &[u8]) -> Result<&Archived<T>, rancor::Error> {
    rkyv::access::<Archived<T>, rancor::Error>(bytes)
}

/// Validates `bytes` and deserializes an owned `T` (used for small responses on the caller side).
pub fn decode<T: Payload>(bytes: &[u8]) -> Result<T, rancor::Error> {
    let archived = access::<T>(bytes)?;
    rkyv::deserialize::<T, rancor::Error>(archived)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, PartialEq)]
    struct Sample {
        name: String,
        amount: i64,
    }

    #[test]
    fn a_payload_round_trips_and_is_read_in_place() {
        let bytes = encode(&Sample {
            name: "c".into(),
            amount: -3,
        })
        .unwrap();
        let archived = access::<Sample>(&bytes).unwrap();
        assert_eq!(archived.name.as_str(), "c");
        assert_eq!(archived.amount.to_native(), -3);
        assert_eq!(
            decode::<Sample>(&bytes).unwrap(),
            Sample {
                name: "c".into(),
                amount: -3
            }
        );
    }

    #[test]
    fn corrupted_bytes_are_an_error_not_a_panic() {
        // A name longer than rkyv's inline string, so the archive holds a relative pointer.
        let name = "a-counter-name-long-enough-to-live-out-of-line".to_owned();
        let bytes = encode(&Sample { name, amount: 1 }).unwrap();
        let mut detected = 0;
        for i in 0..bytes.len() {
            for garbage in [0xff, 0x80, 0x00] {
                let mut corrupt = bytes.clone();
                corrupt[i] = garbage;
                detected += usize::from(access::<Sample>(&corrupt).is_err());
            }
        }
        assert!(
            detected > 0,
            "no corruption of {} bytes was detected",
            bytes.len()
        );
        assert!(access::<Sample>(&[]).is_err());
        assert!(
            access::<Sample>(&[1, 2, 3]).is_err(),
            "too short for the root"
        );
    }
}
