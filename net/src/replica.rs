//! The payloads of replica frames ([`FrameKind::Replica`](crate::frame::FrameKind)), sans IO.
//!
//! A backup frame's header names the partition, the backup operation (service and op), the
//! original caller (0 for none) and, for a sync backup, the correlation id its ack answers (0 for
//! an async backup, which gets none). Its payload is:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | the namespace's version for the receiving replica slot |
//! | 8 | 8 | the caller's call number (with the header's caller: the call id) |
//! | 16 | 4 | response length |
//! | 20 | 12 | reserved, 0 |
//! | 32 | response length, padded to 16 | the owner's answer, remembered for retries |
//! | … | rest | the backup operation's archived payload (16-aligned: read in place) |
//!
//! A versions frame (flags [`VERSIONS`]) carries an archived `Vec<PartitionVersions>`.
//!
//! A migration chunk (flags [`MIGRATION`]) carries one piece of a partition's archived snapshot,
//! acked like a sync backup. Its payload is a 96-byte prefix, then the piece:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | the migration's id |
//! | 8 | 8 | the master that runs it |
//! | 16 | 8 | the snapshot's total length |
//! | 24 | 4 | this chunk's index |
//! | 28 | 4 | the chunk count |
//! | 32 | 1 | the destination's replica slot now (255: none) |
//! | 33 | 1 | its slot once the migration commits |
//! | 34 | 1 | the row's depth (1..=7) |
//! | 35 | 5 | reserved, 0 |
//! | 40 | 56 | the row once committed: 7 member ids, 0 for none |

use rkyv::util::AlignedVec;

/// Header flags of a backup operation.
pub const BACKUP: u8 = 0;
/// Header flags of an owner's versions for the anti-entropy check.
pub const VERSIONS: u8 = 1;

/// Header flags of a chunk of a migrating partition.
pub const MIGRATION: u8 = 2;

const PREFIX: usize = 32;
const CHUNK_PREFIX: usize = 96;

/// What every chunk of a migration says besides its piece of the snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkHead {
    /// The migration's id.
    pub id: u64,
    /// The master that runs it.
    pub master: u64,
    /// The snapshot's total length.
    pub total: u64,
    /// This chunk's index.
    pub index: u32,
    /// How many chunks the snapshot takes.
    pub count: u32,
    /// The destination's replica slot now.
    pub current: Option<u8>,
    /// Its slot once the migration commits.
    pub new: u8,
    /// The partition's row once committed (member ids, 0 for none).
    pub to: Vec<u64>,
}

/// Builds a migration chunk's payload.
pub fn encode_chunk(head: &ChunkHead, piece: &[u8]) -> AlignedVec {
    let mut out = AlignedVec::with_capacity(CHUNK_PREFIX + piece.len());
    out.extend_from_slice(&head.id.to_le_bytes());
    out.extend_from_slice(&head.master.to_le_bytes());
    out.extend_from_slice(&head.total.to_le_bytes());
    out.extend_from_slice(&head.index.to_le_bytes());
    out.extend_from_slice(&head.count.to_le_bytes());
    out.push(head.current.unwrap_or(u8::MAX));
    out.push(head.new);
    out.push(head.to.len() as u8);
    out.extend_from_slice(&[0; 5]);
    for i in 0..7 {
        let id = head.to.get(i).copied().unwrap_or(0);
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(piece);
    out
}

/// Takes a migration chunk's payload apart: its head and its piece.
///
/// Errors: a payload shorter than its prefix, a depth outside 1..=7, a replica slot past it, a
/// chunk index not below the count, or a reserved byte that is not 0.
pub fn decode_chunk(payload: &[u8]) -> Result<(ChunkHead, &[u8]), String> {
    let prefix = payload.get(..CHUNK_PREFIX).ok_or_else(|| {
        format!(
            "migration chunk of {} bytes is shorter than its prefix",
            payload.len()
        )
    })?;
    let word = |at: usize| u64::from_le_bytes(bytes_at(prefix, at));
    let half = |at: usize| u32::from_le_bytes(bytes_at(prefix, at));
    let (index, count) = (half(24), half(28));
    let depth = usize::from(prefix[34]);
    let new = prefix[33];
    if !(1..=7).contains(&depth) || usize::from(new) >= depth {
        return Err(format!(
            "migration chunk with depth {depth} and replica slot {new}"
        ));
    }
    if index >= count {
        return Err(format!("migration chunk {index} of {count}"));
    }
    if prefix[35..40].iter().any(|b| *b != 0) {
        return Err("reserved bytes of a migration chunk are not 0".into());
    }
    let head = ChunkHead {
        id: word(0),
        master: word(8),
        total: word(16),
        index,
        count,
        current: (prefix[32] != u8::MAX).then_some(prefix[32]),
        new,
        to: (0..depth).map(|i| word(40 + 8 * i)).collect(),
    };
    Ok((head, &payload[CHUNK_PREFIX..]))
}

/// A backup frame's payload, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct BackupParts<'a> {
    /// The namespace's version for the receiving replica slot.
    pub version: u64,
    /// The caller's call number.
    pub call: u64,
    /// The owner's answer.
    pub response: &'a [u8],
    /// The backup operation's payload.
    pub op: &'a [u8],
}

/// The `N` bytes of `prefix` at `at`: the caller checked the prefix's length.
fn bytes_at<const N: usize>(prefix: &[u8], at: usize) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&prefix[at..at + N]);
    b
}

fn padded(n: usize) -> usize {
    n.div_ceil(16) * 16
}

/// Builds a backup frame's payload.
pub fn encode_backup(version: u64, call: u64, response: &[u8], op: &[u8]) -> AlignedVec {
    let mut out = AlignedVec::with_capacity(PREFIX + padded(response.len()) + op.len());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&call.to_le_bytes());
    out.extend_from_slice(&(response.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; 12]);
    out.extend_from_slice(response);
    out.resize(PREFIX + padded(response.len()), 0);
    out.extend_from_slice(op);
    out
}

/// Takes a backup frame's payload apart.
///
/// Errors: a payload shorter than its prefix or its response length says, or a reserved byte
/// that is not 0 (the text says which).
pub fn decode_backup(payload: &[u8]) -> Result<BackupParts<'_>, String> {
    let prefix = payload.get(..PREFIX).ok_or_else(|| {
        format!(
            "backup payload of {} bytes is shorter than its prefix",
            payload.len()
        )
    })?;
    let word = |at: usize| u64::from_le_bytes(bytes_at(prefix, at));
    let response_len = u32::from_le_bytes(bytes_at(prefix, 16)) as usize;
    if prefix[20..].iter().any(|b| *b != 0) {
        return Err("reserved bytes of a backup payload are not 0".into());
    }
    let op_start = PREFIX
        .checked_add(padded(response_len))
        .filter(|end| *end <= payload.len())
        .ok_or_else(|| {
            format!(
                "backup response of {response_len} bytes does not fit a payload of {}",
                payload.len()
            )
        })?;
    Ok(BackupParts {
        version: word(0),
        call: word(8),
        response: &payload[PREFIX..PREFIX + response_len],
        op: &payload[op_start..],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn backup_payloads_round_trip_with_the_operation_aligned() {
        for response in [&b""[..], b"12345678", &[7u8; 17]] {
            let bytes = encode_backup(42, 9, response, b"op-bytes");
            let parts = decode_backup(&bytes).unwrap();
            assert_eq!(parts.version, 42);
            assert_eq!(parts.call, 9);
            assert_eq!(parts.response, response);
            assert_eq!(parts.op, b"op-bytes");
            assert_eq!(
                (parts.op.as_ptr() as usize - bytes.as_ptr() as usize) % 16,
                0
            );
        }
    }

    #[test]
    fn migration_chunks_round_trip_and_refuse_nonsense() {
        let head = ChunkHead {
            id: 7,
            master: 99,
            total: 3000,
            index: 1,
            count: 3,
            current: None,
            new: 1,
            to: vec![5, 6],
        };
        let bytes = encode_chunk(&head, b"piece");
        let (back, piece) = decode_chunk(&bytes).unwrap();
        assert_eq!(back, head);
        assert_eq!(piece, b"piece");
        let owner = ChunkHead {
            current: Some(1),
            new: 0,
            ..head.clone()
        };
        assert_eq!(decode_chunk(&encode_chunk(&owner, b"")).unwrap().0, owner);
        assert!(decode_chunk(&bytes[..50]).is_err());
        let mut bad = bytes.clone();
        bad[24] = 3; // index 3 of 3
        assert!(decode_chunk(&bad).is_err());
        let mut bad = bytes.clone();
        bad[33] = 2; // slot 2 of a row of 2
        assert!(decode_chunk(&bad).is_err());
        let mut bad = bytes.clone();
        bad[36] = 1;
        assert!(decode_chunk(&bad).is_err());
    }

    #[test]
    fn malformed_backup_payloads_are_refused() {
        assert!(decode_backup(&[0; 8]).is_err());
        let mut bytes = encode_backup(1, 2, b"abc", b"");
        bytes[16] = 200;
        assert!(decode_backup(&bytes).is_err());
        let mut bytes = encode_backup(1, 2, b"", b"");
        bytes[25] = 1;
        assert!(decode_backup(&bytes).is_err());
    }
}
