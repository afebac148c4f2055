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

use rkyv::util::AlignedVec;

/// Header flags of a backup operation.
pub const BACKUP: u8 = 0;
/// Header flags of an owner's versions for the anti-entropy check.
pub const VERSIONS: u8 = 1;

const PREFIX: usize = 32;

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
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&prefix[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut len = [0u8; 4];
    len.copy_from_slice(&prefix[16..20]);
    let response_len = u32::from_le_bytes(len) as usize;
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
