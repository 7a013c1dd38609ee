//! Socket-free protocol parsers: plain functions and state machines over bytes, each
//! unit-tested with byte fixtures and proptest.

pub mod proxy_protocol;
pub mod socks5;

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
