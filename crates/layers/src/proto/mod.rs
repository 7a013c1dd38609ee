//! Protocol logic that needs no socket: plain functions over bytes and strings, unit-tested
//! with byte fixtures and property tests. The actors in `conn/`, `http/` and `relay/` only
//! move bytes and messages.

pub(crate) mod client_hello;
pub(crate) mod detect;
pub(crate) mod headers;
pub(crate) mod target;
