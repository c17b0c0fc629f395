//! One libzmq context for every simulated node, with its socket limit raised.
//!
//! libzmq refuses a context's 1024th socket unless `ZMQ_MAX_SOCKETS` is raised, and the
//! `zmq` crate (0.10) has no setter for it nor a way to reach its context's raw pointer.
//! So this module makes the context through `zmq-sys` and wraps each raw socket in a
//! `zmq::Socket` (`Socket::from_raw`), keeping every other call on the safe API. The
//! context is terminated only after the last socket made from it is dropped: each
//! [`Socket`] holds a reference to it.

use std::ops::Deref;
use std::os::raw::{c_int, c_void};
use std::sync::Arc;

/// The raw context; terminated when the last [`Context`] or [`Socket`] lets go.
struct Raw(*mut c_void);

// SAFETY: a libzmq context is thread-safe (zmq_ctx_new(3): "contexts are thread safe
// and may be shared among as many application threads as necessary").
unsafe impl Send for Raw {}
// SAFETY: as above.
unsafe impl Sync for Raw {}

impl Drop for Raw {
    fn drop(&mut self) {
        // SAFETY: the pointer came from zmq_ctx_new and is terminated once, here. Every
        // socket made from it is already closed (they hold an Arc to this value).
        while unsafe { zmq_sys::zmq_ctx_term(self.0) } == -1
            && zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() }) == zmq::Error::EINTR
        {}
    }
}

fn last_error() -> zmq::Error {
    // SAFETY: reads libzmq's thread-local errno.
    zmq::Error::from_raw(unsafe { zmq_sys::zmq_errno() })
}

/// A shared context handle (cheap to clone, usable from every shard thread).
#[derive(Clone)]
pub struct Context {
    raw: Arc<Raw>,
}

/// The socket types the generator makes.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A node's command channel.
    Dealer,
    /// A heartbeat subscriber.
    Sub,
    /// One end of a shard's doorbell.
    Pair,
}

impl Context {
    /// A context allowing `max_sockets` sockets, with `io_threads` I/O threads.
    ///
    /// # Errors
    /// When libzmq refuses an option (e.g. a limit above what it supports).
    pub fn new(max_sockets: i32, io_threads: i32) -> Result<Context, zmq::Error> {
        // SAFETY: zmq_ctx_new has no preconditions; a null result is checked.
        let ptr = unsafe { zmq_sys::zmq_ctx_new() };
        if ptr.is_null() {
            return Err(last_error());
        }
        let raw = Arc::new(Raw(ptr));
        for (option, value) in [
            (zmq_sys::ZMQ_MAX_SOCKETS, max_sockets),
            (zmq_sys::ZMQ_IO_THREADS, io_threads),
        ] {
            // SAFETY: a live context and an integer option.
            if unsafe { zmq_sys::zmq_ctx_set(raw.0, option as c_int, value as c_int) } != 0 {
                return Err(last_error());
            }
        }
        Ok(Context { raw })
    }

    /// A new socket of `kind`.
    ///
    /// # Errors
    /// `EMFILE` past the socket limit or when the process runs out of descriptors.
    pub fn socket(&self, kind: Kind) -> Result<Socket, zmq::Error> {
        let kind = match kind {
            Kind::Dealer => zmq_sys::ZMQ_DEALER,
            Kind::Sub => zmq_sys::ZMQ_SUB,
            Kind::Pair => zmq_sys::ZMQ_PAIR,
        };
        // SAFETY: a live context (we hold a reference) and a valid socket type.
        let ptr = unsafe { zmq_sys::zmq_socket(self.raw.0, kind as c_int) };
        if ptr.is_null() {
            return Err(last_error());
        }
        Ok(Socket {
            // SAFETY: a fresh socket pointer owned by nobody else; `zmq::Socket` closes it
            // on drop, before `_context` below lets the context go.
            inner: unsafe { zmq::Socket::from_raw(ptr) },
            _context: self.raw.clone(),
        })
    }
}

/// A socket of a [`Context`]; derefs to `zmq::Socket`.
pub struct Socket {
    // Field order matters: the socket is closed before the context reference drops.
    inner: zmq::Socket,
    _context: Arc<Raw>,
}

impl Deref for Socket {
    type Target = zmq::Socket;

    fn deref(&self) -> &zmq::Socket {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_sockets_than_the_default_limit() {
        let ctx = Context::new(1100, 1).unwrap();
        let sockets: Vec<Socket> = (0..1050).map(|_| ctx.socket(Kind::Sub).unwrap()).collect();
        assert_eq!(sockets.len(), 1050);
        sockets[0].set_linger(0).unwrap();
        drop(ctx);
        // The context outlives its handle while sockets remain; dropping them ends it.
        drop(sockets);
    }

    #[test]
    fn the_limit_is_enforced() {
        let ctx = Context::new(4, 1).unwrap();
        let _kept: Vec<Socket> = (0..4).map(|_| ctx.socket(Kind::Dealer).unwrap()).collect();
        assert_eq!(ctx.socket(Kind::Dealer).err(), Some(zmq::Error::EMFILE));
    }
}
