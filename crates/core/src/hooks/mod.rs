//! Hooks: the one table from which the hook kinds, their mitmproxy names, the [`Hook`]
//! message enum and the [`Addon`] trait's methods are generated, so they can never disagree.
//!
//! # When each hook fires (the phase chart)
//!
//! ```text
//! load ─ configure(all) ─ running
//!   client_connect
//!     socks5_auth (SOCKS5 mode with `proxyauth`, before the client's CONNECT is answered)
//!     http_connect (CONNECT only) ─ next_layer ─ tls_clienthello ─ tls_start_server
//!       ─ tls_established_server ─ tls_start_client ─ tls_established_client
//!     per request:
//!       request_headers ─ request ─ [server_connect ─ server_connected (or
//!       server_connect_error)] ─ response_headers ─ response
//!       (error instead of a response when the exchange fails)
//!     a server connection through an upstream HTTP proxy (upstream mode, or a server's
//!       `via`) opened with a CONNECT: server_connect ─ http_connect_upstream (that CONNECT)
//!     a WebSocket upgrade (HTTP/1.1):
//!       websocket_handshake ─ request_headers ─ request ─ response_headers ─ response (101)
//!       ─ websocket_start ─ websocket_message* ─ websocket_end (after a close frame)
//!       or websocket_error (a side went away without one; `flow.error` set), never both
//!     raw TCP (not HTTP or TLS after CONNECT, nothing sent by the client within 1 s, or
//!     `tcp_hosts`): next_layer ─ tcp_start ─ server_connect ─ tcp_message*
//!       ─ server_disconnect ─ tcp_end (or tcp_error instead of tcp_end, never both)
//!     inside intercepted TLS, after tls_established_client: next_layer again for what the
//!       client speaks inside (ALPN `h2` / `http/1.1` decide at once; else its first decrypted
//!       bytes: an HTTP/1 request line or the h2 preface is HTTP, anything else, nothing
//!       within 1 s, or the server speaking first is raw TCP with `rawtcp`), then the
//!       per-request hooks above, or raw TCP over the TLS connection dialed before
//!       (server_connect already fired): tcp_start ─ tcp_message* ─ server_disconnect
//!       ─ tcp_end (or tcp_error)
//!     passthrough (`ignore_hosts`, `allow_hosts`, `ignore_connection`): server_connect ─
//!       server_disconnect, no tcp_* events
//!     server_disconnect
//!   client_disconnect
//! configure(changed) on every option change; log on every log record; update when another
//! addon changed flows; done last, when the addon is removed or the proxy shuts down.
//! ```

mod dispatch;
mod payloads;

use std::fmt;

pub(crate) use dispatch::Verdict;
pub(crate) use dispatch::track_unhandled;
pub use dispatch::{Begin, HookOutput, in_log_hook, not_handled, with_log_suppressed};
pub use payloads::{
    ClientHelloData, CommandSpec, Configure, Flows, Layer, Loader, LogEntry, LogLevel, NextLayer,
    ServerConnectionHookData, Side, Socks5AuthData, TlsData,
};

use crate::flow::{Client, HttpFlow, TcpFlow};
use crate::options::OptionsError;

/// A set of hook kinds, as a bit set (there are fewer than 64 hooks).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HookSet(u64);

impl HookSet {
    /// No hooks.
    pub const EMPTY: Self = Self(0);
    /// Every hook.
    pub const ALL: Self = Self(u64::MAX >> (64 - HookKind::COUNT));

    /// A set holding the given kinds.
    pub const fn of(kinds: &[HookKind]) -> Self {
        let mut bits = 0u64;
        let mut i = 0;
        while i < kinds.len() {
            bits |= 1 << kinds[i] as u8;
            i += 1;
        }
        Self(bits)
    }

    /// Whether `kind` is in the set.
    pub const fn contains(self, kind: HookKind) -> bool {
        self.0 & (1 << kind as u8) != 0
    }

    /// The set with `kind` added.
    pub const fn with(self, kind: HookKind) -> Self {
        Self(self.0 | (1 << kind as u8))
    }

    /// The set with `kind` removed.
    pub const fn without(self, kind: HookKind) -> Self {
        Self(self.0 & !(1 << kind as u8))
    }

    /// Both sets together.
    pub const fn union(self, o: Self) -> Self {
        Self(self.0 | o.0)
    }

    /// The raw bits (bit `k` is `HookKind` number `k`).
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// The set from raw bits.
    pub const fn from_bits(bits: u64) -> Self {
        Self(bits & Self::ALL.0)
    }

    /// The kinds in the set, in table order.
    pub fn iter(self) -> impl Iterator<Item = HookKind> {
        HookKind::ALL
            .iter()
            .copied()
            .filter(move |k| self.contains(*k))
    }
}

impl fmt::Debug for HookSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.iter().map(HookKind::name))
            .finish()
    }
}

macro_rules! hook_from {
    ($p:ident, $variant:ident, $payload:ty) => {
        Ok(Hook::$variant($p.downcast::<$payload>()?))
    };
    ($p:ident, $variant:ident) => {{
        drop($p);
        Ok(Hook::$variant)
    }};
}

macro_rules! hook_into {
    ($a:ident) => {
        Some($a as Box<dyn std::any::Any + Send>)
    };
    () => {
        None
    };
}

macro_rules! hooks {
    (
        extra { $($extra:tt)* }
        $(
            $(#[doc = $doc:literal])*
            $variant:ident = $name:literal,
            fn $method:ident($($arg:ident: $payload:ty)?) $(-> $ret:ty = $default:expr)?;
        )*
    ) => {
        /// Every hook, by kind. The discriminant is the hook's bit in a [`HookSet`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum HookKind {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl HookKind {
            /// Every hook kind, in table order.
            pub const ALL: &'static [HookKind] = &[$(HookKind::$variant,)*];
            /// How many hooks there are.
            pub const COUNT: usize = Self::ALL.len();

            /// The mitmproxy name of the hook (`requestheaders`, `tcp_message`).
            pub const fn name(self) -> &'static str {
                match self { $(HookKind::$variant => $name,)* }
            }

            /// The name of the [`Addon`] method that handles it (`request_headers`).
            pub const fn method(self) -> &'static str {
                match self { $(HookKind::$variant => stringify!($method),)* }
            }

            /// The kind with the given mitmproxy name or method name.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|k| k.name() == name || k.method() == name)
            }
        }

        /// A hook invocation carrying its payload by ownership: the manager moves it into
        /// each addon's message in turn and hands it back to the layer.
        #[derive(Debug)]
        pub enum Hook {
            $( $(#[doc = $doc])* $variant $((Box<$payload>))?, )*
        }

        impl Hook {
            /// Which hook this is.
            pub fn kind(&self) -> HookKind {
                match self { $(Hook::$variant { .. } => HookKind::$variant,)* }
            }

            /// Runs the matching method of `addon` on the payload.
            pub(crate) async fn dispatch<A: Addon>(&mut self, addon: &mut A) -> Verdict {
                match self {
                    $(
                        Hook::$variant $(($arg))? => {
                            Verdict::from(addon.$method($(&mut **$arg)?).await)
                        }
                    )*
                }
            }

            /// Builds the hook `kind` around `payload`; gives the payload back if its type
            /// is not the one `kind` carries.
            pub fn from_payload(
                kind: HookKind,
                payload: Box<dyn std::any::Any + Send>,
            ) -> Result<Self, Box<dyn std::any::Any + Send>> {
                match kind {
                    $( HookKind::$variant => hook_from!(payload, $variant $(, $payload)?), )*
                }
            }

            /// Takes the payload out (`None` for hooks without one).
            pub fn into_payload(self) -> Option<Box<dyn std::any::Any + Send>> {
                match self {
                    $( Hook::$variant $(($arg))? => hook_into!($($arg)?), )*
                }
            }
        }

        /// An addon: a value whose methods waylay calls as traffic passes.
        ///
        /// Every method has a no-op default; implement the ones you need, `async` or not.
        /// The phase chart in the [module docs](crate::hooks) says when each one fires.
        ///
        /// **Which hooks an addon handles** is learned without any work from the author:
        /// the default bodies report "not handled" the first time they run, and the manager
        /// then drops the addon from that hook's route, so a layer sends no message for a
        /// hook nobody handles. Override [`Addon::hooks`] to declare the set up front and
        /// skip even that first call.
        ///
        /// Hooks must not block: hand blocking work (files, databases) to a thread, for
        /// example through a crossbeam channel, as the bundled flow writers do.
        #[expect(async_fn_in_trait, reason = "addon futures run on one actix arbiter; they need not be Send")]
        pub trait Addon: Send + 'static {
            $($extra)*
            $(
                $(#[doc = $doc])*
                async fn $method(&mut self $(, $arg: &mut $payload)?) $(-> $ret)? {
                    $( let _ = $arg; )?
                    not_handled();
                    $($default)?
                }
            )*
        }
    };
}

hooks! {
    extra {
        /// The addon's name in logs and listings (its type name by default).
        fn name(&self) -> String {
            let full = std::any::type_name::<Self>();
            let base = full.split('<').next().unwrap_or(full);
            base.rsplit("::").next().unwrap_or(base).to_owned()
        }

        /// The hooks this addon handles. The default, every hook, is refined at run time
        /// (see the trait docs); declaring it exactly saves one call per unhandled hook.
        /// Read again after every `configure`, so the set may depend on the options (an
        /// addon that acts only while its option is on keeps the proxy's fast path while
        /// it is off, and joins its hooks' routes when the option is set at run time).
        fn hooks(&self) -> HookSet {
            HookSet::ALL
        }

        /// The hosts whose HTTP flows this addon acts on, when it acts on no others (the
        /// onboarding page: its `onboarding_host`), from the current options; `None` (the
        /// default): any host. When every addon handling an HTTP hook names its hosts, a
        /// request to another host is forwarded without building a flow, so such an addon
        /// costs nothing on the rest of the traffic. Read again whenever the options change.
        fn http_hosts(options: &crate::options::Options) -> Option<Vec<String>>
        where
            Self: Sized,
        {
            let _ = options;
            None
        }

        /// Chooses how `hook` runs: through its method, one hook at a time (the default), or
        /// detached from the addon so that the addon's next hook may start while this one
        /// waits ([`Begin::Detached`], for scripting hosts whose hooks await I/O, as
        /// mitmproxy runs `async def` hooks). `timeout` is `addon_timeout`, which a detached
        /// hook enforces itself. Called on the addon's thread, before the hook.
        fn begin(&mut self, hook: Hook, timeout: std::time::Duration) -> Begin {
            let _ = timeout;
            Begin::Method(hook)
        }

        /// Runs a command this addon declared in `load`.
        async fn command(&mut self, name: &str, args: &[String]) -> Result<String, String> {
            let _ = args;
            Err(format!("unknown command {name}"))
        }
    }

    /// A client connected. Set `client.error` (or call `kill`) to refuse the connection.
    ClientConnect = "clientconnect", fn client_connect(client: Client);
    /// The client connection closed.
    ClientDisconnect = "clientdisconnect", fn client_disconnect(client: Client);
    /// Waylay is about to dial a server; the address may be changed, or `server.error` set
    /// to refuse.
    ServerConnect = "serverconnect", fn server_connect(data: ServerConnectionHookData);
    /// A server connection closed.
    ServerDisconnect = "serverdisconnect", fn server_disconnect(data: ServerConnectionHookData);
    /// Waylay connected to a server (TCP is up; TLS, if any, follows): `server.peername` and
    /// `sockname` are set. A server connection gets this or `server_connect_error`, never both.
    ServerConnected = "server_connected", fn server_connected(data: ServerConnectionHookData);
    /// Waylay could not connect to a server, or `server_connect` refused it: `server.error`
    /// says why.
    ServerConnectError = "server_connect_error", fn server_connect_error(data: ServerConnectionHookData);
    /// The next protocol layer is being chosen; set `layer` to override the detection.
    NextLayer = "next_layer", fn next_layer(data: NextLayer);
    /// Options changed: all names at start, the changed ones after. Return an error to
    /// reject the new values (the old ones are kept).
    Configure = "configure", fn configure(cfg: Configure) -> Result<(), OptionsError> = Ok(());
    /// The addon is removed, or the proxy shut down: the last event it sees.
    Done = "done", fn done();
    /// The addon was registered: declare options and commands on the loader.
    Load = "load", fn load(loader: Loader);
    /// A log record was emitted. Never log from here (such records are not delivered).
    Log = "log", fn log(entry: LogEntry);
    /// The proxy is listening and every addon is loaded.
    Running = "running", fn running();
    /// Flows were changed by another addon.
    Update = "update", fn update(flows: Flows);
    /// A CONNECT request arrived. A non-2xx response set here is returned and the tunnel
    /// refused. CONNECT requests do not fire the other HTTP hooks.
    HttpConnect = "http_connect", fn http_connect(flow: HttpFlow);
    /// A CONNECT request is about to be sent to an upstream HTTP proxy (upstream mode, or a
    /// flow routed through one by its server's `via`): the payload is that CONNECT, whose
    /// headers an addon may change (add a `Proxy-Authorization`, a tracing header).
    HttpConnectUpstream = "http_connect_upstream", fn http_connect_upstream(flow: HttpFlow);
    /// Request headers were read; the body was not read yet.
    RequestHeaders = "requestheaders", fn request_headers(flow: HttpFlow);
    /// The full request was read. Set `flow.response` to answer without contacting the
    /// server.
    Request = "request", fn request(flow: HttpFlow);
    /// Response headers were read; the body was not read yet.
    ResponseHeaders = "responseheaders", fn response_headers(flow: HttpFlow);
    /// The full response was read.
    Response = "response", fn response(flow: HttpFlow);
    /// A protocol or connection error happened (not an HTTP error status).
    Error = "error", fn error(flow: HttpFlow);
    /// A client asks to upgrade to WebSocket (before `request_headers`); the handshake
    /// headers may be changed.
    WebsocketHandshake = "websocket_handshake", fn websocket_handshake(flow: HttpFlow);
    /// A WebSocket connection started.
    WebsocketStart = "websocket_start", fn websocket_start(flow: HttpFlow);
    /// A WebSocket message arrived: `flow.websocket.messages.last()`, modifiable and
    /// droppable; more may be injected.
    WebsocketMessage = "websocket_message", fn websocket_message(flow: HttpFlow);
    /// A WebSocket connection failed: a side went away without a close frame, or an
    /// addon killed the flow. `flow.error` says why; `websocket_end` does not follow.
    WebsocketError = "websocket_error", fn websocket_error(flow: HttpFlow);
    /// A WebSocket connection ended with a close frame: `close_code`, `close_reason` and
    /// `closed_by_client` are set.
    WebsocketEnd = "websocket_end", fn websocket_end(flow: HttpFlow);
    /// A raw TCP connection started.
    TcpStart = "tcp_start", fn tcp_start(flow: TcpFlow);
    /// Bytes arrived on a raw TCP connection: `flow.messages.last()`, modifiable.
    TcpMessage = "tcp_message", fn tcp_message(flow: TcpFlow);
    /// A raw TCP connection failed.
    TcpError = "tcp_error", fn tcp_error(flow: TcpFlow);
    /// A raw TCP connection ended.
    TcpEnd = "tcp_end", fn tcp_end(flow: TcpFlow);
    /// A TLS ClientHello arrived (SNI, ALPN); set `ignore_connection` to pass it through.
    TlsClienthello = "tls_clienthello", fn tls_clienthello(data: ClientHelloData);
    /// Waylay is about to answer the client's TLS handshake.
    TlsStartClient = "tls_start_client", fn tls_start_client(data: TlsData);
    /// Waylay is about to start a TLS handshake with the server.
    TlsStartServer = "tls_start_server", fn tls_start_server(data: TlsData);
    /// TLS with the client is established.
    TlsEstablishedClient = "tls_established_client", fn tls_established_client(data: TlsData);
    /// A SOCKS5 client sent a username and password (`proxyauth` is set): set
    /// `data.valid` to accept them (the `proxyauth` addon does).
    Socks5Auth = "socks5_auth", fn socks5_auth(data: Socks5AuthData);
    /// TLS with the server is established.
    TlsEstablishedServer = "tls_established_server", fn tls_established_server(data: TlsData);
    /// The TLS handshake with the client failed.
    TlsFailedClient = "tls_failed_client", fn tls_failed_client(data: TlsData);
    /// The TLS handshake with the server failed.
    TlsFailedServer = "tls_failed_server", fn tls_failed_server(data: TlsData);

}

/// The hooks every addon receives whether or not it handles them (lifecycle).
pub const LIFECYCLE: HookSet = HookSet::of(&[
    HookKind::Load,
    HookKind::Configure,
    HookKind::Running,
    HookKind::Done,
]);
