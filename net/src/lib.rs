//! corecast-net: the network layer of corecast.
//!
//! It will own the frame codec (fixed little-endian header + aligned rkyv payload, bounded),
//! the per-shard io_uring listeners on `port + shard`, member-to-member connections, join,
//! membership and failure detection, and the smart client. None of that exists yet: a member
//! runs in one process (see the cluster issue). The crate is in the workspace now so that the
//! layout `../shared/DESIGN.md` fixes is in place and `engine` stays free of socket code.
