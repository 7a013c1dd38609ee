//! The connection and TLS hooks, offered to scripts under mitmproxy's names and with the
//! objects mitmproxy passes: `client_connected(client)`, `server_connect(data)` with a
//! `ServerConnectionHookData`, `tls_clienthello(data)` with a `ClientHelloData`,
//! `tls_start_client(data)` with a `TlsData`, ...
//!
//! These hooks fire once per connection, not per request, so the Python objects are
//! snapshots made for the hook; what mitmproxy lets a hook change is read back afterwards:
//! `client.error` (refuses the client), `data.server.address`/`error`/`sni` in the server
//! hooks, `data.ignore_connection` and `establish_server_tls_first` in `tls_clienthello`,
//! `data.conn.sni`/`alpn_offers` in `tls_start_*`.

use std::net::SocketAddr;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use waylay_core::HookKind;
use waylay_core::flow::{Address, Client, Server, TlsInfo};
use waylay_core::hooks::{ClientHelloData, ServerConnectionHookData, Side, TlsData};

use super::core::to_bytes;

/// The connection hooks and the names a script implements them under.
pub(super) const CONN_HOOKS: &[(HookKind, &str)] = &[
    (HookKind::ClientConnect, "client_connected"),
    (HookKind::ClientDisconnect, "client_disconnected"),
    (HookKind::ServerConnect, "server_connect"),
    (HookKind::ServerConnected, "server_connected"),
    (HookKind::ServerDisconnect, "server_disconnected"),
    (HookKind::ServerConnectError, "server_connect_error"),
    (HookKind::TlsClienthello, "tls_clienthello"),
    (HookKind::TlsStartClient, "tls_start_client"),
    (HookKind::TlsStartServer, "tls_start_server"),
    (HookKind::TlsEstablishedClient, "tls_established_client"),
    (HookKind::TlsEstablishedServer, "tls_established_server"),
    (HookKind::TlsFailedClient, "tls_failed_client"),
    (HookKind::TlsFailedServer, "tls_failed_server"),
];

/// The name a script implements hook `kind` under (mitmproxy's).
pub(super) fn script_name(kind: HookKind) -> &'static str {
    CONN_HOOKS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(kind.name(), |(_, n)| n)
}

/// The payload of a connection hook, borrowed for the length of the hook.
#[derive(Debug)]
pub(super) enum ConnPayload<'a> {
    Client(&'a mut Client),
    Server(&'a mut ServerConnectionHookData),
    Hello(&'a mut ClientHelloData),
    Tls(&'a mut TlsData),
}

fn addr(a: SocketAddr) -> (String, u16) {
    (a.ip().to_string(), a.port())
}

fn tls_fields(d: &Bound<'_, PyDict>, tls: Option<&TlsInfo>) -> PyResult<()> {
    let py = d.py();
    d.set_item("tls_established", tls.is_some())?;
    d.set_item("sni", tls.and_then(|t| t.sni.clone()))?;
    d.set_item(
        "alpn",
        tls.and_then(|t| t.alpn.as_ref())
            .map(|a| PyBytes::new(py, a.as_bytes())),
    )?;
    let offers: Vec<Bound<'_, PyBytes>> = tls
        .map(|t| {
            t.alpn_offers
                .iter()
                .map(|a| PyBytes::new(py, a.as_bytes()))
                .collect()
        })
        .unwrap_or_default();
    d.set_item("alpn_offers", PyTuple::new(py, offers)?)?;
    d.set_item("tls_version", tls.and_then(|t| t.version.clone()))?;
    d.set_item("cipher", tls.and_then(|t| t.cipher.clone()))?;
    let certs: Vec<Bound<'_, PyBytes>> = tls
        .map(|t| {
            t.certificate_list
                .iter()
                .map(|c| PyBytes::new(py, c))
                .collect()
        })
        .unwrap_or_default();
    d.set_item("certificate_list", PyTuple::new(py, certs)?)?;
    d.set_item("transport_protocol", "tcp")?;
    d.set_item("cipher_list", PyTuple::empty(py))?;
    Ok(())
}

fn client_fields<'py>(py: Python<'py>, c: &Client) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    tls_fields(&d, c.tls.as_ref())?;
    d.set_item("id", c.id.to_string())?;
    d.set_item("peername", addr(c.peername))?;
    d.set_item("sockname", addr(c.sockname))?;
    d.set_item("proxy_mode", c.proxy_mode.clone())?;
    d.set_item("tls", c.tls.is_some())?;
    d.set_item("timestamp_start", c.timestamp_start)?;
    d.set_item("timestamp_tls_setup", c.timestamp_tls_setup)?;
    d.set_item("timestamp_end", c.timestamp_end)?;
    d.set_item("error", c.error.clone())?;
    Ok(d)
}

fn server_fields<'py>(
    py: Python<'py>,
    s: Option<&Server>,
    address: Option<&Address>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    tls_fields(&d, s.and_then(|s| s.tls_info.as_ref()))?;
    let address = s.map(|s| &s.address).or(address);
    d.set_item("address", address.map(|a| (a.host.clone(), a.port)))?;
    d.set_item("id", s.map(|s| s.id.to_string()))?;
    d.set_item("peername", s.and_then(|s| s.peername).map(addr))?;
    d.set_item("sockname", s.and_then(|s| s.sockname).map(addr))?;
    d.set_item("tls", s.is_some_and(|s| s.tls))?;
    if let Some(s) = s
        && s.tls_info.is_none()
    {
        // Before the handshake the SNI waylay will send is the server's own field.
        d.set_item("sni", s.sni.clone())?;
    }
    d.set_item("timestamp_start", s.and_then(|s| s.timestamp_start))?;
    d.set_item("timestamp_tcp_setup", s.and_then(|s| s.timestamp_tcp_setup))?;
    d.set_item("timestamp_tls_setup", s.and_then(|s| s.timestamp_tls_setup))?;
    d.set_item("timestamp_end", s.and_then(|s| s.timestamp_end))?;
    d.set_item("error", s.and_then(|s| s.error.clone()))?;
    d.set_item("via", py.None())?;
    Ok(d)
}

/// The object the script's hook receives (built by the shim from plain fields).
pub(super) fn make(py: Python<'_>, kind: HookKind, p: &ConnPayload<'_>) -> PyResult<Py<PyAny>> {
    let fns = super::host::fns(py)?;
    let extra = PyDict::new(py);
    let (client, server) = match p {
        ConnPayload::Client(c) => (client_fields(py, c)?, None),
        ConnPayload::Server(d) => (
            client_fields(py, &d.client)?,
            Some(server_fields(py, Some(&d.server), None)?),
        ),
        ConnPayload::Hello(h) => {
            extra.set_item("sni", h.sni.clone())?;
            let alpn: Vec<Bound<'_, PyBytes>> = h
                .alpn_protocols
                .iter()
                .map(|a| PyBytes::new(py, a.as_bytes()))
                .collect();
            extra.set_item("alpn_protocols", PyList::new(py, alpn)?)?;
            extra.set_item("ignore_connection", h.ignore_connection)?;
            extra.set_item("establish_server_tls_first", h.establish_server_tls_first)?;
            (
                client_fields(py, &h.client)?,
                Some(server_fields(py, None, h.server.as_ref())?),
            )
        }
        ConnPayload::Tls(t) => {
            let client = client_fields(py, &t.client)?;
            let server = server_fields(py, t.server.as_ref(), None)?;
            // The side being handshaken: what waylay offers or negotiated there.
            let conn = if t.side == Side::Client {
                &client
            } else {
                &server
            };
            conn.set_item("sni", t.sni.clone())?;
            let offers: Vec<Bound<'_, PyBytes>> = t
                .alpn_offers
                .iter()
                .map(|a| PyBytes::new(py, a.as_bytes()))
                .collect();
            conn.set_item("alpn_offers", PyTuple::new(py, offers)?)?;
            if let Some(a) = &t.alpn {
                conn.set_item("alpn", PyBytes::new(py, a.as_bytes()))?;
            }
            extra.set_item(
                "side",
                if t.side == Side::Client {
                    "client"
                } else {
                    "server"
                },
            )?;
            extra.set_item("error", t.error.clone())?;
            (client, Some(server))
        }
    };
    let obj = fns
        .conn_hook_arg
        .bind(py)
        .call1((script_name(kind), client, server, extra))?;
    Ok(obj.unbind())
}

fn text(v: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if v.is_none() {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&to_bytes(v)?).into_owned()))
}

fn read_server(server: &Bound<'_, PyAny>, s: &mut Server) -> PyResult<()> {
    let a = server.getattr("address")?;
    if !a.is_none() {
        let (host, port): (String, u16) = a.extract()?;
        s.address = Address::new(host, port);
    }
    s.error = text(&server.getattr("error")?)?;
    if s.tls_info.is_none() {
        s.sni = text(&server.getattr("sni")?)?;
    }
    Ok(())
}

/// Reads back what the hook may change (see the module docs).
pub(super) fn read_back(obj: &Bound<'_, PyAny>, p: &mut ConnPayload<'_>) -> PyResult<()> {
    match p {
        ConnPayload::Client(c) => c.error = text(&obj.getattr("error")?)?,
        ConnPayload::Server(d) => read_server(&obj.getattr("server")?, &mut d.server)?,
        ConnPayload::Hello(h) => {
            h.ignore_connection = obj.getattr("ignore_connection")?.is_truthy()?;
            h.establish_server_tls_first =
                obj.getattr("establish_server_tls_first")?.is_truthy()?;
        }
        ConnPayload::Tls(t) => {
            let conn = obj.getattr("conn")?;
            t.sni = text(&conn.getattr("sni")?)?;
            let mut offers = Vec::new();
            for o in conn.getattr("alpn_offers")?.try_iter()? {
                offers.push(String::from_utf8_lossy(&to_bytes(&o?)?).into_owned());
            }
            t.alpn_offers = offers;
        }
    }
    Ok(())
}
