//! Everything both ends of Push Jobs must agree on: job vocabulary, the wire documents
//! (command-channel messages, the node config document), Chef request signing
//! and verification, and key encodings, and how errors are worded for people. Sans-IO:
//! bytes, keys and times in, values out.
#![warn(missing_docs)]

pub mod chef_auth;
pub mod config;
pub mod frame;
pub mod job;
pub mod keys;
pub mod message;
pub mod node_query;
pub mod report;
