//! The two ends of a proxied connection: the client connection actor, and the server side
//! (dialing, the server connection actor, the pool of a client connection).

pub(crate) mod client;
pub(crate) mod dest;
pub(crate) mod dial;
pub(crate) mod pool;
pub(crate) mod resolve;
pub(crate) mod server;
