//! What waylay knows about the client and server connections a flow travels on.

use std::net::SocketAddr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ConnectionId, now};
use crate::mode::Via;

/// TLS details of one side of a connection, once a handshake has completed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsInfo {
    /// Server name indication sent by the client (or by waylay, towards a server).
    pub sni: Option<String>,
    /// The ALPN protocol agreed on (`h2`, `http/1.1`).
    pub alpn: Option<String>,
    /// ALPN protocols offered by the client side of this handshake.
    pub alpn_offers: Vec<String>,
    /// Negotiated protocol version (`TLSv1.3`).
    pub version: Option<String>,
    /// Negotiated cipher suite.
    pub cipher: Option<String>,
    /// The certificate chain presented by the peer, leaf first, DER.
    pub certificate_list: Vec<Bytes>,
}

/// The client side of a connection: who connected to waylay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    /// Unique id of this connection.
    pub id: ConnectionId,
    /// The client's address.
    pub peername: SocketAddr,
    /// Waylay's local address the client connected to.
    pub sockname: SocketAddr,
    /// The proxy mode that accepted the connection (`regular`, ...).
    pub proxy_mode: String,
    /// Set once TLS with the client is established.
    pub tls: Option<TlsInfo>,
    /// When the connection was accepted (seconds since the Unix epoch).
    pub timestamp_start: f64,
    /// When the TLS handshake completed.
    pub timestamp_tls_setup: Option<f64>,
    /// When the connection closed.
    pub timestamp_end: Option<f64>,
    /// Why the connection failed or was closed by waylay; setting it in `client_connect`
    /// refuses the connection.
    pub error: Option<String>,
}

impl Client {
    /// A client connection accepted now.
    pub fn new(peername: SocketAddr, sockname: SocketAddr) -> Self {
        Self {
            id: ConnectionId::new(),
            peername,
            sockname,
            proxy_mode: "regular".into(),
            tls: None,
            timestamp_start: now(),
            timestamp_tls_setup: None,
            timestamp_end: None,
            error: None,
        }
    }

    /// Whether TLS with the client is established.
    pub fn tls_established(&self) -> bool {
        self.tls.is_some()
    }

    /// The SNI the client sent, if any.
    pub fn sni(&self) -> Option<&str> {
        self.tls.as_ref().and_then(|t| t.sni.as_deref())
    }

    /// Asks waylay to close this connection (used from `client_connect`).
    pub fn kill(&mut self) {
        self.error = Some(super::KILLED_MESSAGE.into());
    }
}

/// A `host:port` destination.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Address {
    /// Host name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Address {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The server side of a connection: where waylay connects to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// Unique id of this connection.
    pub id: ConnectionId,
    /// Where waylay dials; an addon may change it in `server_connect`.
    pub address: Address,
    /// The resolved address actually connected to.
    pub peername: Option<SocketAddr>,
    /// Waylay's local address of the connection.
    pub sockname: Option<SocketAddr>,
    /// Whether waylay speaks TLS to this server.
    pub tls: bool,
    /// SNI waylay sends (defaults to the host when TLS is used).
    pub sni: Option<String>,
    /// TLS details once established.
    pub tls_info: Option<TlsInfo>,
    /// When dialing started.
    pub timestamp_start: Option<f64>,
    /// When the TCP connection was established.
    pub timestamp_tcp_setup: Option<f64>,
    /// When the TLS handshake completed.
    pub timestamp_tls_setup: Option<f64>,
    /// When the connection closed.
    pub timestamp_end: Option<f64>,
    /// Why the connection failed; setting it in `server_connect` makes the dial fail with it.
    pub error: Option<String>,
    /// Where this server connection goes: set in `request_headers`, `http_connect`,
    /// `next_layer` or `server_connect` to choose where this server connection goes
    /// (straight to the server, or through an HTTP(S) or SOCKS5 proxy). `None` leaves it to
    /// the mode (direct, or the upstream proxy of `upstream:` mode). Connections are pooled
    /// per route: a flow never reuses a connection made for another one.
    #[serde(default)]
    pub via: Option<Via>,
}

impl Server {
    /// A server connection about to be made to `address`.
    pub fn new(address: Address) -> Self {
        Self {
            id: ConnectionId::new(),
            address,
            peername: None,
            sockname: None,
            tls: false,
            sni: None,
            tls_info: None,
            timestamp_start: None,
            timestamp_tcp_setup: None,
            timestamp_tls_setup: None,
            timestamp_end: None,
            error: None,
            via: None,
        }
    }
}
