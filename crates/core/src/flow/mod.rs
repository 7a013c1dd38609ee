//! The flow model: what addons read and change.

mod connection;
pub mod encoding;
mod error;
mod headers;
mod http;
mod inject;
mod intercept;
mod kill;
mod message;
mod stored;
mod tcp;
mod websocket;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The string type of a flow's short fields (method, scheme, host, path, reason): a `String`
/// that holds up to 24 bytes inline, without an allocation.
pub use compact_str::{CompactString, ToCompactString, format_compact};
pub use connection::{Address, Client, Server, TlsInfo};
pub use error::{FlowError, KILLED_MESSAGE};
pub use headers::Headers;
pub use http::{HttpEdit, HttpFlow, Request, Response, decimal, reason_phrase, split_host_port};
pub use inject::{INJECT_QUEUE, InjectError, InjectQueues, Injector};
pub use intercept::{Intercept, InterceptHandle, Release};
pub use kill::KillSwitch;
pub use message::{BodyError, ChunkTransform, HttpVersion, Message, StreamFn};
pub use stored::{BodyStore, StoredBody};
pub use tcp::{TcpEdit, TcpFlow, TcpInjector, TcpMessage};
pub use websocket::{WebSocketData, WebSocketInjector, WebSocketMessage, WebSocketMessageKind};

/// Free-form data addons attach to a flow (serialised with it).
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Seconds since the Unix epoch, as mitmproxy's timestamps.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A process-unique prefix so ids from different runs do not collide in flow files.
fn process_prefix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.write_u32(std::process::id());
        h.finish()
    })
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u128);

        impl $name {
            /// A fresh id, unique in this process and (very likely) across runs.
            #[expect(clippy::new_without_default, reason = "an id is made, not defaulted")]
            pub fn new() -> Self {
                let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
                Self((u128::from(process_prefix()) << 64) | u128::from(n))
            }
        }

        impl std::fmt::Display for $name {
            /// Formatted as a UUID-shaped string, as mitmproxy's ids are.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let v = self.0;
                write!(
                    f,
                    "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    (v >> 96) as u32,
                    (v >> 80) as u16,
                    (v >> 64) as u16,
                    (v >> 48) as u16,
                    v & 0xffff_ffff_ffff
                )
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                let hex: String = s.chars().filter(|c| *c != '-').collect();
                if hex.len() != 32 {
                    return Err(format!("bad id {s:?}"));
                }
                u128::from_str_radix(&hex, 16).map(Self).map_err(|_| format!("bad id {s:?}"))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The id of a flow.
    FlowId
);
id_type!(
    /// The id of a client or server connection.
    ConnectionId
);

impl ConnectionId {
    /// The id a flow without a server connection records for the one it lacks (mitmproxy's
    /// flows always have one): the same for the same flow, every time it is written, and
    /// unlike any other flow's or any real connection's (the flow's id with its process half
    /// inverted).
    pub(crate) fn placeholder_for(flow: FlowId) -> Self {
        Self(flow.0 ^ (u128::from(u64::MAX) << 64))
    }
}

/// Any kind of flow, as handed to `update` and stored in flow files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Flow {
    /// An HTTP flow (possibly with a WebSocket conversation).
    Http(Box<HttpFlow>),
    /// A raw TCP flow.
    Tcp(Box<TcpFlow>),
}

impl Flow {
    /// The flow's id.
    pub fn id(&self) -> FlowId {
        match self {
            Self::Http(f) => f.id,
            Self::Tcp(f) => f.id,
        }
    }
}

/// The version of the flow file format written by this build: mitmproxy 12's (see
/// [`crate::flowfile`]).
pub const FLOW_FORMAT_VERSION: i64 = crate::flowfile::FLOW_FORMAT_VERSION;
