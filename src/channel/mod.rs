//! The ZeroMQ command channel (zmq.md §1–2): its sockets on their own thread
//! ([`thread`]), and the keys it admits and signs with ([`keys`]).

pub mod keys;
#[cfg(test)]
mod tests;
pub mod thread;

pub use keys::{ClientKeys, CurveIdentity, SessionKeys, decode_ccpk};
