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
//! | 8 | 1 | kind (1 request, 2 response, 3 control, 4 replica) |
//! | 9 | 1 | flags (requests: [`RETRY`]) |
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

/// Request flags: the call was sent before (its connection failed, or its owner refused or did
/// not answer a batch), so it may have run: the owner answers it from the answers it remembers,
/// if it is there, instead of running it again. A first send cannot have run and skips the look.
pub const RETRY: u8 = 1;

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
    /// Replica traffic from a partition's owner to a backup: a backup operation, or the owner's
    /// versions for the anti-entropy check (see `replica.rs`).
    Replica = 4,
    /// An event for a listener the peer registered on this connection (correlation: the
    /// listener's id; service: the object's service).
    Event = 5,
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

/// `n` rounded up to a multiple of [`FRAME_ALIGN`].
fn padded(n: usize) -> usize {
    n.div_ceil(FRAME_ALIGN).saturating_mul(FRAME_ALIGN)
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

/// `N` bytes of `buf` from `at`, zero-filled past its end.
fn le<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    let src = buf.get(at..).unwrap_or(&[]);
    let n = src.len().min(N);
    out[..n].copy_from_slice(&src[..n]);
    out
}

/// Parses the frame at the start of `buf`: `Ok(None)` until the whole frame is there.
///
/// Checks, in order: magic, kind, reserved, the payload length against `max_payload` (as soon
/// as the header is complete, before the body arrives), and that `buf` starts 16-aligned in
/// memory. Bytes that cannot begin a magic are rejected before a whole header is in.
///
/// Errors: `BadMagic`, `UnknownKind`, `ReservedNotZero`, `TooLarge`, `Misaligned`.
pub fn decode(buf: &[u8], max_payload: usize) -> Result<Option<Header>, FrameError> {
    if buf.len() < HEADER_LEN {
        // Reject garbage early, from its first bytes.
        let have = buf.len().min(MAGIC.len());
        if buf.get(..have) != MAGIC.get(..have) {
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
        4 => FrameKind::Replica,
        5 => FrameKind::Event,
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
    let address_mod = buf.as_ptr() as usize % FRAME_ALIGN;
    if address_mod != 0 {
        return Err(FrameError::Misaligned { address_mod });
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
/// [`ReadBuf::next_frame`]. Grows to at most one largest frame (`HEADER_LEN + max_payload`
/// padded to 16), or its initial 64 KiB if that is more; never on the word of a header that
/// claims more than `max_payload`.
///
/// Invariants: `buf.len() == buf.capacity()`, zero-filled; `start` is a multiple of 16, so
/// every frame (and payload) starts 16-aligned; `start <= end <= buf.len()`.
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

    /// Free space to read into. Compacts (moving the pending bytes to offset 0), and grows when
    /// the pending frame needs more room, so a whole frame always fits.
    ///
    /// Not empty as long as every whole frame was taken with [`ReadBuf::next_frame`] first
    /// (an empty slice would read as end of stream).
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let needed = self.needed();
        if self.end == self.buf.len() || self.buf.len() - self.start < needed {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let want = needed.max(self.end + 1);
            if want > self.buf.len() {
                self.grow(want.max(self.buf.len().saturating_mul(2)).min(self.limit()));
            }
        }
        let end = self.end.min(self.buf.len());
        &mut self.buf[end..]
    }

    /// Replaces the buffer with a zero-filled one of exactly `len` bytes holding the pending
    /// bytes (which start at 0). `AlignedVec` rounds a reallocation up to a power of two,
    /// which could nearly double the bound; allocating the new buffer ourselves keeps it exact.
    fn grow(&mut self, len: usize) {
        if len <= self.buf.len() {
            return;
        }
        let mut buf = AlignedVec::with_capacity(len);
        buf.extend_from_slice(&self.buf[..self.end]);
        buf.resize(len, 0);
        self.buf = buf;
    }

    /// The largest this buffer grows: one largest frame, or the initial size.
    fn limit(&self) -> usize {
        // A payload length is a u32: no frame is longer, whatever `max_payload` says.
        let max = self.max_payload.min(u32::MAX as usize);
        (HEADER_LEN + padded(max)).max(INITIAL)
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

    /// The most a buffer for `max`-byte payloads may hold: one largest frame, or the initial
    /// size.
    fn bound(max: usize) -> usize {
        (HEADER_LEN + padded(max)).max(INITIAL)
    }

    /// Feeds `bytes` in chunks of pseudo-random sizes (1 to `chunk` bytes); returns the
    /// frames, or the first error. Checks the buffer's bound and the payloads' alignment.
    fn feed_chunked(
        bytes: &[u8],
        max: usize,
        seed: u64,
        chunk: u64,
    ) -> Result<Vec<(Header, Vec<u8>)>, FrameError> {
        let mut rb = ReadBuf::new(max);
        let mut out = Vec::new();
        let mut s = seed | 1;
        let mut at = 0;
        while at < bytes.len() {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let spare = rb.spare();
            assert!(!spare.is_empty(), "spare is never empty after draining");
            let n = ((s % chunk) as usize + 1)
                .min(spare.len())
                .min(bytes.len() - at);
            spare[..n].copy_from_slice(&bytes[at..at + n]);
            rb.filled(n);
            at += n;
            assert!(rb.buf.capacity() <= bound(max), "grew past the bound");
            while let Some((h, p)) = rb.next_frame()? {
                assert_eq!(p.as_ptr() as usize % FRAME_ALIGN, 0, "payload aligned");
                out.push((h, p.to_vec()));
            }
        }
        rb.finish()?;
        Ok(out)
    }

    fn feed(bytes: &[u8], max: usize, seed: u64) -> Result<Vec<(Header, Vec<u8>)>, FrameError> {
        feed_chunked(bytes, max, seed, 200)
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
        // Just over the bound, with only the header in: an error at once, no waiting.
        let mut head = frame(FrameKind::Request, 1, b"");
        head[4..8].copy_from_slice(&1025u32.to_le_bytes());
        let mut rb = ReadBuf::new(1024);
        rb.spare()[..HEADER_LEN].copy_from_slice(&head[..HEADER_LEN]);
        rb.filled(HEADER_LEN);
        assert_eq!(
            rb.next_frame().map(|f| f.map(|(h, _)| h)),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert_eq!(rb.buf.capacity(), INITIAL);
        assert!(matches!(
            rb.finish(),
            Err(FrameError::Truncated { have: 48, .. })
        ));
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

    #[test]
    fn the_buffer_grows_to_one_largest_frame_and_no_further() {
        // 1 MiB + 48 is just over a power of two, the case AlignedVec's own growth would double;
        // 100_000 is no power of two at all.
        for max in [MAX, 100_000] {
            let mut stream = AlignedVec::<16>::new();
            for (i, n) in [max, 0, max - 1, 5, max].iter().enumerate() {
                stream.extend_from_slice(&frame(FrameKind::Response, i as u64, &vec![i as u8; *n]));
            }
            let frames = feed_chunked(&stream, max, 3, 50_000).unwrap();
            assert_eq!(frames.len(), 5);
            assert!(frames
                .iter()
                .all(|(h, p)| p.len() == h.payload_len as usize));
        }
        // A buffer for small frames never grows past its initial size.
        let mut stream = AlignedVec::<16>::new();
        for i in 0..5000u64 {
            stream.extend_from_slice(&frame(FrameKind::Request, i, &[1; 100]));
        }
        assert_eq!(feed_chunked(&stream, 128, 5, 4000).unwrap().len(), 5000);
    }

    #[test]
    fn garbage_is_rejected_before_a_whole_header() {
        assert_eq!(decode(&[], MAX), Ok(None));
        let mut buf = AlignedVec::<16>::new();
        buf.extend_from_slice(b"CC");
        assert_eq!(decode(&buf, MAX), Ok(None));
        let mut buf = AlignedVec::<16>::new();
        buf.extend_from_slice(b"GE");
        assert_eq!(
            decode(&buf, MAX),
            Err(FrameError::BadMagic {
                found: [b'G', b'E', 0, 0]
            })
        );
    }
}
