//! The frame codec, sans IO: a fixed 48-byte little-endian header and an rkyv payload padded to
//! 16 bytes, so that in a 16-aligned buffer every payload starts aligned and is read in place.
//!
//! Owns: [`Header`], [`FrameKind`], [`FrameError`], [`encode`], [`decode`] and [`ReadBuf`] (a
//! receive buffer that yields whole frames). Decoding never panics and never allocates on the
//! word of a header: a length over the bound is an error as soon as the header is in.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `CCF1` |
//! | 4 | 4 | payload length (unpadded) |
//! | 8 | 1 | kind (1 request, 2 response, 3 control) |
//! | 9 | 1 | flags |
//! | 10 | 2 | status |
//! | 12 | 4 | partition |
//! | 16 | 8 | correlation id |
//! | 24 | 8 | partition table version |
//! | 32 | 2 | service id |
//! | 34 | 2 | operation id |
//! | 36 | 4 | reserved, 0 |
//! | 40 | 8 | caller id |

use rkyv::util::AlignedVec;

/// Header length in bytes.
pub const HEADER_LEN: usize = 48;
/// Frames (and so payloads) start at multiples of this in a receive buffer.
pub const FRAME_ALIGN: usize = 16;
/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"CCF1";

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// An operation for a partition.
    Request = 1,
    /// The answer to a request (same correlation id).
    Response = 2,
    /// A control message (handshake, membership, table).
    Control = 3,
}

/// A frame's fixed header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Unpadded payload length.
    pub payload_len: u32,
    /// What the frame carries.
    pub kind: FrameKind,
    /// Free for callers.
    pub flags: u8,
    /// Responses: 0 is ok.
    pub status: u16,
    /// The partition of a request.
    pub partition: u32,
    /// Matches a response to its request.
    pub correlation: u64,
    /// The partition table version the sender routed with.
    pub table_version: u64,
    /// The operation's service id.
    pub service: u16,
    /// The operation's id.
    pub op: u16,
    /// Who sent it (a member or client id).
    pub caller: u64,
}

impl Header {
    /// A header of `kind` with every other field zero.
    pub fn new(kind: FrameKind) -> Self {
        Self {
            payload_len: 0,
            kind,
            flags: 0,
            status: 0,
            partition: 0,
            correlation: 0,
            table_version: 0,
            service: 0,
            op: 0,
            caller: 0,
        }
    }

    /// Bytes the frame takes on the wire: header plus padded payload.
    pub fn wire_len(&self) -> usize {
        HEADER_LEN + padded(self.payload_len as usize)
    }
}

fn padded(n: usize) -> usize {
    n.div_ceil(FRAME_ALIGN) * FRAME_ALIGN
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first four bytes are not `CCF1`.
    #[error("not a corecast frame (magic {found:02x?})")]
    BadMagic {
        /// What was there.
        found: [u8; 4],
    },
    /// The kind byte is not a known kind.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The byte.
        kind: u8,
    },
    /// The payload is larger than the configured bound.
    #[error("frame payload of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The length claimed.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// The reserved field is not zero.
    #[error("reserved header field is {value}, not 0")]
    ReservedNotZero {
        /// Its value.
        value: u32,
    },
    /// The frame does not start 16-aligned in memory, so its payload cannot be read in place.
    #[error("frame is misaligned in memory (address mod 16 = {address_mod})")]
    Misaligned {
        /// The address modulo 16.
        address_mod: usize,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({have} of {need} bytes)")]
    Truncated {
        /// Bytes received.
        have: usize,
        /// Bytes the frame needs (at least a header).
        need: usize,
    },
}

/// Appends one frame to `out` (whose length is a multiple of 16 before and after).
///
/// Errors: `TooLarge` if the payload is over `max_payload`.
pub fn encode(
    out: &mut AlignedVec,
    header: &Header,
    payload: &[u8],
    max_payload: usize,
) -> Result<(), FrameError> {
    let len = payload.len();
    if len > max_payload || u32::try_from(len).is_err() {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: max_payload,
        });
    }
    let h = Header {
        payload_len: len as u32,
        ..*header
    };
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&h.payload_len.to_le_bytes());
    out.extend_from_slice(&[h.kind as u8, h.flags]);
    out.extend_from_slice(&h.status.to_le_bytes());
    out.extend_from_slice(&h.partition.to_le_bytes());
    out.extend_from_slice(&h.correlation.to_le_bytes());
    out.extend_from_slice(&h.table_version.to_le_bytes());
    out.extend_from_slice(&h.service.to_le_bytes());
    out.extend_from_slice(&h.op.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&h.caller.to_le_bytes());
    out.extend_from_slice(payload);
    const ZEROS: [u8; FRAME_ALIGN] = [0; FRAME_ALIGN];
    out.extend_from_slice(&ZEROS[..padded(len) - len]);
    Ok(())
}

fn le<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

/// Parses the frame at the start of `buf`: `Ok(None)` until the whole frame is there.
///
/// Errors: bad magic, unknown kind, reserved not zero, a payload over `max_payload` (reported
/// as soon as the header is complete), or `buf` not 16-aligned in memory.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    let address_mod = buf.as_ptr() as usize % FRAME_ALIGN;
    if address_mod != 0 {
        return Err(FrameError::Misaligned { address_mod });
    }
    if buf.len() < HEADER_LEN {
        // Reject garbage early, from its first bytes.
        let have = buf.len().min(4);
        if buf[..have] != MAGIC[..have] {
            return Err(FrameError::BadMagic { found: le(buf, 0) });
        }
        return Ok(None);
    }
    let magic: [u8; 4] = le(buf, 0);
    if magic != MAGIC {
        return Err(FrameError::BadMagic { found: magic });
    }
    let kind = match buf[8] {
        1 => FrameKind::Request,
        2 => FrameKind::Response,
        3 => FrameKind::Control,
        kind => return Err(FrameError::UnknownKind { kind }),
    };
    let reserved = u32::from_le_bytes(le(buf, 36));
    if reserved != 0 {
        return Err(FrameError::ReservedNotZero { value: reserved });
    }
    let payload_len = u32::from_le_bytes(le(buf, 4));
    if payload_len as usize > max_payload {
        return Err(FrameError::TooLarge {
            len: u64::from(payload_len),
            max: max_payload,
        });
    }
    let header = Header {
        payload_len,
        kind,
        flags: buf[9],
        status: u16::from_le_bytes(le(buf, 10)),
        partition: u32::from_le_bytes(le(buf, 12)),
        correlation: u64::from_le_bytes(le(buf, 16)),
        table_version: u64::from_le_bytes(le(buf, 24)),
        service: u16::from_le_bytes(le(buf, 32)),
        op: u16::from_le_bytes(le(buf, 34)),
        caller: u64::from_le_bytes(le(buf, 40)),
    };
    if buf.len() < header.wire_len() {
        return Ok(None);
    }
    Ok(Some(header))
}

/// The payload of a frame decoded from the start of `buf`.
pub fn payload<'a>(buf: &'a [u8], header: &Header) -> &'a [u8] {
    buf.get(HEADER_LEN..HEADER_LEN + header.payload_len as usize)
        .unwrap_or(&[])
}

/// A 16-aligned receive buffer: read into [`ReadBuf::spare`], take frames from
/// [`ReadBuf::next_frame`]. Grows to at most one largest frame (plus its initial size).
pub struct ReadBuf {
    buf: AlignedVec,
    start: usize,
    end: usize,
    max_payload: usize,
}

const INITIAL: usize = 64 * 1024;

impl ReadBuf {
    /// An empty buffer for frames of at most `max_payload` bytes of payload.
    pub fn new(max_payload: usize) -> Self {
        let mut buf = AlignedVec::with_capacity(INITIAL);
        buf.resize(INITIAL, 0);
        Self {
            buf,
            start: 0,
            end: 0,
            max_payload,
        }
    }

    /// Free space to read into. Compacts, and grows when the pending frame needs more room.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() || self.buf.len() - self.start < self.needed() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let need = self.needed().max(self.end + 1);
            if need > self.buf.len() {
                self.buf
                    .resize(need.max(self.buf.len() * 2).min(self.limit()), 0);
            }
        }
        let end = self.end.min(self.buf.len());
        &mut self.buf[end..]
    }

    /// The largest this buffer grows.
    fn limit(&self) -> usize {
        (HEADER_LEN + padded(self.max_payload)).max(INITIAL)
    }

    /// Bytes the frame at `start` needs in total (a header's worth if its header is not in).
    fn needed(&self) -> usize {
        let pending = &self.buf[self.start..self.end];
        if pending.len() < HEADER_LEN {
            return HEADER_LEN;
        }
        let len = u32::from_le_bytes(le(pending, 4)) as usize;
        if len > self.max_payload {
            return HEADER_LEN;
        }
        HEADER_LEN + padded(len)
    }

    /// `n` bytes were written into [`ReadBuf::spare`].
    pub fn filled(&mut self, n: usize) {
        self.end = (self.end + n).min(self.buf.len());
    }

    /// The next whole frame and its payload, consumed from the buffer; `Ok(None)` when more
    /// bytes are needed.
    ///
    /// Errors: as [`decode`]; the connection should close.
    pub fn next_frame(&mut self) -> Result<Option<(Header, &[u8])>, FrameError> {
        let pending = &self.buf[self.start..self.end];
        match decode(pending, self.max_payload)? {
            None => Ok(None),
            Some(header) => {
                let at = self.start;
                self.start += header.wire_len();
                let payload =
                    &self.buf[at + HEADER_LEN..at + HEADER_LEN + header.payload_len as usize];
                Ok(Some((header, payload)))
            }
        }
    }

    /// At end of stream: `Err(Truncated)` if part of a frame is buffered.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.is_empty() {
            return Ok(());
        }
        Err(FrameError::Truncated {
            have: self.end - self.start,
            need: self.needed(),
        })
    }

    /// No bytes are buffered.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MAX: usize = 1 << 20;

    fn frame(kind: FrameKind, corr: u64, payload: &[u8]) -> AlignedVec {
        let mut out = AlignedVec::new();
        let h = Header {
            correlation: corr,
            partition: 7,
            table_version: 3,
            service: 16,
            op: 1,
            caller: 99,
            ..Header::new(kind)
        };
        encode(&mut out, &h, payload, MAX).unwrap();
        out
    }

    /// Feeds `bytes` in chunks of pseudo-random sizes; returns the frames, or the first error.
    fn feed(bytes: &[u8], max: usize, seed: u64) -> Result<Vec<(Header, Vec<u8>)>, FrameError> {
        let mut rb = ReadBuf::new(max);
        let mut out = Vec::new();
        let mut s = seed | 1;
        let mut at = 0;
        while at < bytes.len() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let spare = rb.spare();
            let n = ((s % 200) as usize + 1)
                .min(spare.len())
                .min(bytes.len() - at);
            spare[..n].copy_from_slice(&bytes[at..at + n]);
            rb.filled(n);
            at += n;
            while let Some((h, p)) = rb.next_frame()? {
                assert_eq!(p.as_ptr() as usize % FRAME_ALIGN, 0, "payload aligned");
                out.push((h, p.to_vec()));
            }
        }
        rb.finish()?;
        Ok(out)
    }

    #[test]
    fn frames_round_trip_through_the_buffer_in_any_chunking() {
        let sizes = [0usize, 1, 15, 16, 17, 1000, 70_000];
        let mut stream: AlignedVec = AlignedVec::new();
        for (i, n) in sizes.iter().enumerate() {
            let payload: Vec<u8> = (0..*n).map(|b| (b * 7 + i) as u8).collect();
            stream.extend_from_slice(&frame(FrameKind::Request, i as u64, &payload));
        }
        for seed in 1..20 {
            let frames = feed(&stream, MAX, seed).unwrap();
            assert_eq!(frames.len(), sizes.len());
            for (i, (h, p)) in frames.iter().enumerate() {
                assert_eq!(h.correlation, i as u64);
                assert_eq!((h.partition, h.table_version, h.caller), (7, 3, 99));
                assert_eq!(p.len(), sizes[i]);
                assert!(p.iter().enumerate().all(|(b, v)| *v == (b * 7 + i) as u8));
            }
        }
    }

    #[test]
    fn an_archive_is_read_in_place_from_the_buffer() {
        let value = (42u64, String::from("hi"));
        let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(&value).unwrap();
        let mut stream = frame(FrameKind::Control, 0, b"x");
        stream.extend_from_slice(&frame(FrameKind::Request, 1, &bytes));
        let mut rb = ReadBuf::new(MAX);
        let spare = rb.spare();
        spare[..stream.len()].copy_from_slice(&stream);
        rb.filled(stream.len());
        assert!(rb.next_frame().unwrap().is_some());
        let (_, p) = rb.next_frame().unwrap().unwrap();
        let archived =
            rkyv::access::<rkyv::Archived<(u64, String)>, rkyv::rancor::Error>(p).unwrap();
        assert_eq!(archived.0, 42);
        assert_eq!(archived.1.as_str(), "hi");
    }

    #[test]
    fn each_malformation_is_its_own_error() {
        let good = frame(FrameKind::Request, 1, b"abc");
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(matches!(
            feed(&bad, MAX, 1),
            Err(FrameError::BadMagic { .. })
        ));
        let mut bad = good.clone();
        bad[8] = 9;
        assert_eq!(feed(&bad, MAX, 1), Err(FrameError::UnknownKind { kind: 9 }));
        let mut bad = good.clone();
        bad[36] = 1;
        assert_eq!(
            feed(&bad, MAX, 1),
            Err(FrameError::ReservedNotZero { value: 1 })
        );
        assert!(matches!(
            feed(&good[..good.len() - 16], MAX, 1),
            Err(FrameError::Truncated { .. })
        ));
        let mut unaligned: AlignedVec = AlignedVec::new();
        unaligned.extend_from_slice(&[0]);
        unaligned.extend_from_slice(&good);
        assert!(matches!(
            decode(&unaligned[1..], MAX),
            Err(FrameError::Misaligned { address_mod: 1 })
        ));
    }

    #[test]
    fn an_oversized_length_fails_at_the_header_without_growing() {
        let mut head = frame(FrameKind::Request, 1, b"");
        head[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut rb = ReadBuf::new(1024);
        let spare = rb.spare();
        spare[..HEADER_LEN].copy_from_slice(&head[..HEADER_LEN]);
        rb.filled(HEADER_LEN);
        assert!(matches!(rb.next_frame(), Err(FrameError::TooLarge { .. })));
        assert!(rb.spare().len() <= INITIAL);
        assert!(matches!(
            encode(
                &mut AlignedVec::<16>::new(),
                &Header::new(FrameKind::Request),
                &[0; 2000],
                1024
            ),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
