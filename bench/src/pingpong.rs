//! The network floor: a raw TCP ping-pong on loopback with the frame sizes of a counter
//! increment (request and response), one message in flight, timed like the member's calls.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use anyhow::Context;

use crate::report::Measured;
use crate::workload::WorkloadSpec;

/// Bytes of a counter-increment request frame (48-byte header + archived `Inc`).
pub const REQUEST: usize = 80;
/// Bytes of its response frame (header + archived `i64`).
pub const RESPONSE: usize = 64;

/// Runs the ping-pong for the spec's warm-up and duration.
///
/// Errors: the loopback socket could not be set up.
pub fn run(spec: &WorkloadSpec) -> anyhow::Result<Measured> {
    let listener = TcpListener::bind("127.0.0.1:0").context("ping-pong: cannot listen")?;
    let addr = listener.local_addr()?;
    let server = std::thread::Builder::new()
        .name("pingpong-echo".into())
        .spawn(move || -> std::io::Result<()> {
            let (mut s, _) = listener.accept()?;
            s.set_nodelay(true)?;
            let mut req = [0u8; REQUEST];
            let resp = [1u8; RESPONSE];
            loop {
                if s.read_exact(&mut req).is_err() {
                    return Ok(());
                }
                s.write_all(&resp)?;
            }
        })?;
    let mut s = TcpStream::connect(addr).context("ping-pong: cannot connect")?;
    s.set_nodelay(true)?;
    let (req, mut resp) = ([2u8; REQUEST], [0u8; RESPONSE]);
    let mut measured = Measured::new();
    let start = Instant::now();
    let (from, end) = (start + spec.warmup, start + spec.warmup + spec.duration);
    loop {
        let t0 = Instant::now();
        if t0 >= end {
            break;
        }
        s.write_all(&req)?;
        s.read_exact(&mut resp)?;
        if t0 >= from {
            measured.record(t0.elapsed());
        }
    }
    drop(s);
    let _ = server.join();
    measured.elapsed = spec.duration;
    Ok(measured)
}
