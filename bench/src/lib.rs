//! `pushy-load`: a load generator that simulates thousands of Push Jobs nodes speaking
//! the real protocol (zmq.md) against a server, for benchmarks. README.md has the flags
//! and what is and is not simulated.
//!
//! Data flow of a run:
//! ```text
//! run.rs ──spawns──▶ shard.rs threads (N) ──FetchRequest──▶ fetcher.rs (tokio, bounded)
//!                     │  own every socket,   ◀──FetchResult──  signed GET …/pushy/config
//!                     │  zmq::poll loop
//!                     ├─ inbound.rs: verify + decode server frames
//!                     ├─ node.rs: the agent's machine per node → Effects
//!                     └─ stats.rs counters ──▶ run.rs reporter (progress, status file)
//! ```
//! Pure pieces (no sockets, no clock): `node`, `behaviour`, `plan`, `inbound`.
//! `provision` writes the server's local key directory for the simulated nodes.

pub mod behaviour;
pub mod fetcher;
pub mod inbound;
pub mod limits;
pub mod node;
pub mod plan;
pub mod provision;
pub mod run;
pub mod shard;
pub mod stats;
pub mod zmq_ctx;
