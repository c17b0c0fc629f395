//! The Push Jobs node agent (`push-jobs-client`): fetches its config from the push
//! server, keeps a CURVE-encrypted command channel, heartbeats, and runs whitelisted
//! commands one job at a time (zmq.md §6).

pub mod agent;
pub mod channel;
pub mod config;
pub mod fetch;
pub mod pending;
pub mod runner;
pub mod whitelist;
