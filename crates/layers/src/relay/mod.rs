//! Relays between a client and a server once both sides are connected: raw TCP (and
//! passthrough), and WebSocket messages after an upgrade; `session` holds what the two
//! share (the flow slot, the bounded history, injection, stopping).

mod session;
pub(crate) mod tcp;
pub(crate) mod websocket;
