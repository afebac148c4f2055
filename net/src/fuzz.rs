//! Fuzz target bodies for the wire: plain functions over arbitrary bytes, called by the
//! cargo-fuzz targets in `fuzz/` and, over the checked-in corpus, by a stable test. Each must
//! return normally for every input: a panic is the bug.

use std::net::SocketAddr;

use crate::frame::{decode, ReadBuf, HEADER_LEN};

/// Bytes from a socket, as a member reads them: fed to a [`ReadBuf`] in chunks whose sizes the
/// first byte picks, frames taken until the input is used up or refused. Every frame taken lies
/// within what was fed, its header decodes again on its own, and a control frame's payload is
/// validated (never trusted) like a member does.
pub fn frames(data: &[u8]) {
    let (chunk, bytes) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 64) + 1, rest),
        None => return,
    };
    let max_payload = 1 << 16;
    let mut rb = ReadBuf::new(max_payload);
    let addr = SocketAddr::from(([127, 0, 0, 1], 1));
    let mut fed = 0;
    let mut taken = 0;
    while fed < bytes.len() {
        let spare = rb.spare();
        let n = spare.len().min(chunk).min(bytes.len() - fed);
        assert!(n > 0, "a buffer with no whole frame always has room");
        spare[..n].copy_from_slice(&bytes[fed..fed + n]);
        rb.filled(n);
        fed += n;
        loop {
            match rb.next_frame() {
                Ok(Some((header, payload))) => {
                    assert_eq!(payload.len(), header.payload_len as usize);
                    assert!(payload.len() <= max_payload);
                    taken += HEADER_LEN + payload.len();
                    assert!(taken <= fed, "a frame from bytes not yet fed");
                    if header.kind == crate::frame::FrameKind::Control {
                        let _ = crate::conn::decode_control(payload, addr);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = rb.finish();
    let _ = decode(bytes, max_payload);
}
