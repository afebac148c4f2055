//! The Redis protocol (RESP2/RESP3) codec for a Redis front door: pure functions over byte
//! buffers, with no I/O, no sockets and no command semantics.
//!
//! This module owns:
//! - [`proto`]: parsing client requests (multibulk and inline, with Redis' own limits and
//!   protocol-error texts), encoding replies in either protocol version, and a small reply
//!   parser for tests and client-side checks.
//! - [`fuzz`]: the fuzz target body for the request parser, replayed over `fuzz/corpus`.
//! - [`glob`]: Redis' glob-style pattern matching (`KEYS`, `SCAN … MATCH`, `PSUBSCRIBE`),
//!   in bounded time for patterns that come from the network.

pub mod commands;
pub mod fuzz;
pub mod glob;
pub mod proto;
pub mod server;

pub use server::{start, RespError};
