"""Writes the flow-file fixtures of crates/core/tests/data with real mitmproxy.

Run with the Python of the mitmproxy venv (scripts/peers.sh sets WAYLAY_MITMPROXY_PY):

    source scripts/peers.sh && install_peers
    "$WAYLAY_MITMPROXY_PY" scripts/gen_flow_fixtures.py

The flows are built with mitmproxy's flow API and written with mitmproxy.io.FlowWriter,
with fixed ids and timestamps so the files are reproducible and the Rust tests can check
them field by field (crates/core/tests/flowfile.rs holds the same values). It also writes
what mitmproxy's hardump writes for the HTTP flows (mitmproxy-12.3.1.har), for the HAR test.
"""

import datetime
import gzip
import json
import os
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mitmproxy import certs, connection, http, io, tcp, version, websocket
from mitmproxy.addons.savehar import SaveHar
from mitmproxy.flow import Error
from mitmproxy.websocket import WebSocketData

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "core", "tests", "data")
T0 = 1_700_000_000.0


def client(n, tls=False):
    c = connection.Client(
        peername=("127.0.0.1", 50000 + n),
        sockname=("127.0.0.1", 8080),
        timestamp_start=T0 + n,
    )
    c.id = f"00000000-0000-4000-8000-00000000c{n:03d}"
    if tls:
        c.tls = True
        c.sni = "example.com"
        c.alpn = b"h2"
        c.alpn_offers = [b"h2", b"http/1.1"]
        c.tls_version = "TLSv1.3"
        c.cipher = "TLS_AES_256_GCM_SHA384"
        c.timestamp_tls_setup = T0 + n + 0.01
    c.timestamp_end = T0 + n + 0.9
    return c


def server(n, host, port, tls=False, cert=None):
    s = connection.Server(address=(host, port))
    s.id = f"00000000-0000-4000-8000-00000000b{n:03d}"
    s.peername = ("127.0.0.1", port)
    s.sockname = ("127.0.0.1", 40000 + n)
    s.timestamp_start = T0 + n + 0.02
    s.timestamp_tcp_setup = T0 + n + 0.03
    if tls:
        s.tls = True
        s.sni = host
        s.alpn = b"h2"
        s.alpn_offers = [b"h2", b"http/1.1"]
        s.tls_version = "TLSv1.3"
        s.cipher = "TLS_AES_256_GCM_SHA384"
        s.timestamp_tls_setup = T0 + n + 0.04
        s.certificate_list = [cert]
    s.timestamp_end = T0 + n + 0.8
    return s


def test_cert():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "example.com")])
    now = datetime.datetime(2023, 11, 14, tzinfo=datetime.timezone.utc)
    c = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("example.com")]), False)
        .sign(key, hashes.SHA256())
    )
    return certs.Cert(c)


def http_flow():
    f = http.HTTPFlow(client(1), server(1, "example.com", 8080))
    f.id = "00000000-0000-4000-8000-000000000001"
    f.request = http.Request(
        "example.com", 8080, b"POST", b"http", b"", b"/submit?a=1&b=two", b"HTTP/1.1",
        http.Headers([(b"Host", b"example.com:8080"), (b"Content-Type", b"application/x-www-form-urlencoded"),
                      (b"X-Dup", b"1"), (b"x-dup", b"2"), (b"Cookie", b"sid=abc; theme=dark"),
                      (b"Content-Length", b"11")]),
        b"hello=world", None, T0 + 1.1, T0 + 1.2,
    )
    body = gzip.compress(b'{"ok": true}', mtime=0)
    f.response = http.Response(
        b"HTTP/1.1", 201, b"Created",
        http.Headers([(b"Content-Type", b"application/json"), (b"Content-Encoding", b"gzip"),
                      (b"Set-Cookie", b"sid=new; Path=/; HttpOnly"), (b"Content-Length", str(len(body)).encode())]),
        body, None, T0 + 1.3, T0 + 1.4,
    )
    f.marked = ":star:"
    f.comment = "a comment"
    f.metadata = {"note": "hello", "n": 1}
    f.timestamp_created = T0 + 1.05
    return f


def websocket_flow():
    f = http.HTTPFlow(client(2), server(2, "example.com", 80))
    f.id = "00000000-0000-4000-8000-000000000002"
    f.request = http.Request(
        "example.com", 80, b"GET", b"http", b"", b"/ws", b"HTTP/1.1",
        http.Headers([(b"Host", b"example.com"), (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
                      (b"Sec-WebSocket-Version", b"13"), (b"Sec-WebSocket-Key", b"dGhlIHNhbXBsZSBub25jZQ==")]),
        b"", None, T0 + 2.1, T0 + 2.1,
    )
    f.response = http.Response(
        b"HTTP/1.1", 101, b"Switching Protocols",
        http.Headers([(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"),
                      (b"Sec-WebSocket-Accept", b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")]),
        b"", None, T0 + 2.2, T0 + 2.2,
    )
    f.websocket = WebSocketData(
        messages=[
            websocket.WebSocketMessage(websocket.Opcode.TEXT, True, b"hello text", T0 + 2.3),
            websocket.WebSocketMessage(websocket.Opcode.BINARY, False, b"\x00\x01\xff", T0 + 2.4),
            websocket.WebSocketMessage(websocket.Opcode.TEXT, False, b"dropped", T0 + 2.5, dropped=True),
        ],
        closed_by_client=True,
        close_code=1000,
        close_reason="bye",
        timestamp_end=T0 + 2.6,
    )
    f.timestamp_created = T0 + 2.05
    return f


def tcp_flow():
    f = tcp.TCPFlow(client(3), server(3, "127.0.0.1", 7000))
    f.id = "00000000-0000-4000-8000-000000000003"
    f.messages = [
        tcp.TCPMessage(True, b"hello", T0 + 3.1),
        tcp.TCPMessage(False, b"\x00binary\xff", T0 + 3.2),
    ]
    f.timestamp_created = T0 + 3.05
    return f


def error_flow():
    s = server(4, "127.0.0.1", 1)
    s.peername = None
    s.sockname = None
    s.timestamp_tcp_setup = None
    s.error = "Connection refused"
    f = http.HTTPFlow(client(4), s)
    f.id = "00000000-0000-4000-8000-000000000004"
    f.request = http.Request(
        "127.0.0.1", 1, b"GET", b"http", b"", b"/", b"HTTP/1.1",
        http.Headers([(b"Host", b"127.0.0.1:1")]), b"", None, T0 + 4.1, T0 + 4.1,
    )
    f.error = Error("Connection refused", T0 + 4.2)
    f.timestamp_created = T0 + 4.05
    return f


def https_flow(cert):
    f = http.HTTPFlow(client(5, tls=True), server(5, "example.com", 443, tls=True, cert=cert))
    f.id = "00000000-0000-4000-8000-000000000005"
    f.request = http.Request(
        "example.com", 443, b"GET", b"https", b"example.com", b"/secure", b"HTTP/2.0",
        http.Headers([(b"user-agent", b"fixture")]), b"", None, T0 + 5.1, T0 + 5.1,
    )
    f.response = http.Response(
        b"HTTP/2.0", 200, b"",
        http.Headers([(b"content-type", b"text/html"), (b"content-length", b"13")]),
        b"<p>secure</p>", None, T0 + 5.2, T0 + 5.3,
    )
    f.timestamp_created = T0 + 5.05
    return f


def main():
    if version.VERSION != "12.3.1":
        sys.exit(f"expected mitmproxy 12.3.1, got {version.VERSION}")
    cert = test_cert()
    flows = [http_flow(), websocket_flow(), tcp_flow(), error_flow(), https_flow(cert)]
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "mitmproxy-12.3.1.flows"), "wb") as fo:
        w = io.FlowWriter(fo)
        for f in flows:
            w.add(f)
    with open(os.path.join(OUT, "mitmproxy-12.3.1-cert.der"), "wb") as fo:
        fo.write(cert.to_cryptography().public_bytes(__import__("cryptography").hazmat.primitives.serialization.Encoding.DER))
    har = SaveHar().make_har([f for f in flows if isinstance(f, http.HTTPFlow)])
    with open(os.path.join(OUT, "mitmproxy-12.3.1.har"), "w") as fo:
        json.dump(har, fo, indent=2)
    print("wrote", len(flows), "flows to", os.path.normpath(OUT))


if __name__ == "__main__":
    main()
