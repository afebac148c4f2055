//! Chaos testing: what concurrent clients saw, and whether a linearizable grid could have shown
//! them exactly that.
//!
//! - [`history`]: the recorded operations (call, outcome, invocation and completion times).
//! - [`check`]: the linearizability checker (Wing–Gong–Lowe search, one object at a time), pure:
//!   it reads a history and returns a [`check::Verdict`], with no clock and no I/O.
//! - [`run`]: `corecast chaos`: member processes under load, killed and paused one at a time,
//!   the history recorded through a smart client, checked, and acknowledged writes counted.
//! - `model` (private): the sequential specification of each object kind the checker replays.

pub mod check;
pub mod history;
mod model;
pub mod run;
