//! Protocol logic that needs no socket: plain functions and state machines over bytes and
//! strings, each unit-tested with byte fixtures and proptest. The actors in `conn/`, `http/`,
//! `relay/` and the fronts only move bytes and messages.

pub(crate) mod client_hello;
pub(crate) mod detect;
pub(crate) mod headers;
pub mod proxy_protocol;
pub mod socks5;
pub(crate) mod target;

/// A message parsed from the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// More bytes are needed.
    Incomplete,
    /// The message, and how many bytes it took.
    Done {
        /// The message.
        value: T,
        /// Its length in bytes.
        len: usize,
    },
}
