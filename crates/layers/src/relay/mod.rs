//! Relays between a client and a server once both sides are connected: raw TCP (and
//! passthrough), and WebSocket messages after an upgrade.

pub(crate) mod tcp;
pub(crate) mod websocket;
