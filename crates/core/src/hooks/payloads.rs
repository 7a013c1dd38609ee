//! The payloads of hooks that are not flows.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::flow::{Address, Client, Server};
use crate::options::{OptionSpec, Options};

/// The protocol layer waylay puts on a connection (or the rest of it).
///
/// `next_layer` receives what waylay detected and may choose another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layer {
    /// Terminate TLS from the client (intercept).
    Tls,
    /// HTTP/1.x.
    Http1,
    /// HTTP/2 (prior knowledge or after ALPN).
    Http2,
    /// Relay raw bytes, with `tcp_*` events.
    Tcp,
    /// Relay bytes untouched, with no events at all (TLS passthrough, `ignore_hosts`).
    Passthrough,
}

/// The `next_layer` event: the connection, the first bytes the client sent, and the layer
/// waylay is about to use.
#[derive(Debug, Clone)]
pub struct NextLayer {
    /// The client connection.
    pub client: Arc<Client>,
    /// Where the connection goes (the CONNECT target), if known.
    pub server: Option<Address>,
    /// The first bytes the client sent (peeked, not consumed); empty if the server speaks
    /// first.
    pub data_client: Bytes,
    /// What waylay detected.
    pub detected: Layer,
    /// The layer that will be used: set it to override the detection.
    pub layer: Layer,
    /// The route the server connection will take (`None`: the mode's: direct, or the
    /// upstream proxy). Set it to send this connection through a proxy, or direct. Ignored
    /// inside intercepted TLS, whose server connection is already made.
    pub via: Option<crate::mode::Via>,
}

/// The `tls_clienthello` event: what the client offered. Setting `ignore_connection` relays
/// the connection untouched (passthrough) instead of intercepting it.
#[derive(Debug, Clone)]
pub struct ClientHelloData {
    /// The client connection.
    pub client: Arc<Client>,
    /// The destination, if known.
    pub server: Option<Address>,
    /// Server name indication, if sent.
    pub sni: Option<String>,
    /// ALPN protocols the client offered.
    pub alpn_protocols: Vec<String>,
    /// Relay this connection without intercepting it.
    pub ignore_connection: bool,
    /// Establish the server's TLS before answering the client (waylay's default, so the
    /// client only gets ALPN protocols the server accepted).
    pub establish_server_tls_first: bool,
}

/// Which side of the proxy a TLS handshake or an error is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    /// Between the client and waylay.
    Client,
    /// Between waylay and the server.
    Server,
}

/// The payload of the `tls_*` hooks (other than `tls_clienthello`).
#[derive(Debug, Clone)]
pub struct TlsData {
    /// Which handshake.
    pub side: Side,
    /// The client connection.
    pub client: Arc<Client>,
    /// The server connection, for server-side handshakes.
    pub server: Option<Server>,
    /// The server name used in the handshake.
    pub sni: Option<String>,
    /// ALPN protocols offered in the handshake (the hook may change them in `tls_start_*`).
    pub alpn_offers: Vec<String>,
    /// The negotiated ALPN protocol, once established.
    pub alpn: Option<String>,
    /// Why the handshake failed, in `tls_failed_*`.
    pub error: Option<String>,
}

/// The `socks5_auth` payload: the username and password a SOCKS5 client sent (RFC 1929,
/// asked for when `proxyauth` is set). Set `valid` to let the client in; it starts `false`,
/// so without an addon deciding, the client is refused.
#[derive(Clone)]
pub struct Socks5AuthData {
    /// The client connection.
    pub client: Arc<Client>,
    /// The username sent.
    pub username: String,
    /// The password sent.
    pub password: String,
    /// Whether the credentials are accepted.
    pub valid: bool,
}

impl std::fmt::Debug for Socks5AuthData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a password in a log line.
        f.debug_struct("Socks5AuthData")
            .field("client", &self.client.peername)
            .field("username", &self.username)
            .field("valid", &self.valid)
            .finish_non_exhaustive()
    }
}

/// The `server_connect` / `server_disconnect` payload: the server connection (its address
/// may be changed in `server_connect`) and the client it serves.
#[derive(Debug, Clone)]
pub struct ServerConnectionHookData {
    /// The client connection.
    pub client: Arc<Client>,
    /// The server connection.
    pub server: Server,
}

/// The `configure` payload: which options changed, and all current values.
#[derive(Debug, Clone)]
pub struct Configure {
    /// The names that changed (all names at start).
    pub updated: BTreeSet<String>,
    /// A snapshot of every option.
    pub options: Arc<Options>,
}

impl Configure {
    /// Whether option `name` is among the updated ones.
    pub fn changed(&self, name: &str) -> bool {
        self.updated.contains(name)
    }
}

/// A command an addon offers, invoked through the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// The command's name (`myaddon.reset`).
    pub name: String,
    /// One line of help.
    pub help: String,
}

/// Given to `load`: where an addon declares its options and commands.
#[derive(Debug, Clone, Default)]
pub struct Loader {
    pub(crate) options: Vec<OptionSpec>,
    pub(crate) commands: Vec<CommandSpec>,
    pub(crate) manager: Option<crate::manager::ManagerHandle>,
    pub(crate) addon: Option<crate::manager::AddonId>,
}

impl Loader {
    /// An empty loader.
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares an option; it is in the `configure` snapshot from then on.
    pub fn add_option(&mut self, spec: OptionSpec) {
        self.options.push(spec);
    }

    /// Declares a command; the manager routes invocations of `name` to this addon's
    /// `command` method.
    pub fn add_command(&mut self, name: impl Into<String>, help: impl Into<String>) {
        self.commands.push(CommandSpec {
            name: name.into(),
            help: help.into(),
        });
    }

    /// The options declared so far.
    pub fn options(&self) -> &[OptionSpec] {
        &self.options
    }

    /// The commands declared so far.
    pub fn commands(&self) -> &[CommandSpec] {
        &self.commands
    }

    /// The manager the addon is being added to, for an addon that changes options
    /// ([`ManagerHandle::set`](crate::ManagerHandle::set)) or asks the proxy to stop
    /// ([`ManagerHandle::request_shutdown`](crate::ManagerHandle::request_shutdown)) later, as
    /// mitmproxy's `ctx.options` and `ctx.master.shutdown()` let an addon do. `None` for a
    /// loader made outside a manager. An addon keeping it should drop it in `done`.
    pub fn manager(&self) -> Option<&crate::manager::ManagerHandle> {
        self.manager.as_ref()
    }

    /// The id the addon being loaded gets in that manager (for
    /// [`ManagerHandle::declare_hooks`](crate::ManagerHandle::declare_hooks)).
    pub fn addon_id(&self) -> Option<crate::manager::AddonId> {
        self.addon
    }
}

/// Severity of a log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LogLevel {
    /// Very detailed.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that waylay handled.
    Warn,
    /// A failure.
    Error,
}

/// A log record, as given to the `log` hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Severity.
    pub level: LogLevel,
    /// The module that logged it.
    pub target: String,
    /// The message, with structured fields appended as `key=value`.
    pub message: String,
    /// When (seconds since the Unix epoch).
    pub timestamp: f64,
}

/// The `update` payload: flows another addon changed.
pub type Flows = Vec<crate::flow::Flow>;
