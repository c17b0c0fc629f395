//! What the server knows about each node's connection (zmq.md §4): the registry task
//! that owns every node machine and routes node messages to jobs, and the snapshot of
//! node states it publishes for HTTP.

pub mod liveness;
pub mod machine;
pub mod news;
pub mod registry;
mod snapshot;
mod task;

pub use snapshot::{Availability, NodeSnapshot, Presence};
pub use task::{JobSink, RegistryHandle, spawn};
