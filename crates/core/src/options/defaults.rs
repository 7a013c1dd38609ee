//! The core options: mitmproxy's names and defaults, except that waylay listens on
//! 127.0.0.1 by default (secure default), plus a few of waylay's own.

use super::{OptionSpec, OptionValue};

fn b(name: &str, v: bool, help: &str) -> OptionSpec {
    OptionSpec::new(name, OptionValue::Bool(v), help)
}
fn i(name: &str, v: i64, help: &str) -> OptionSpec {
    OptionSpec::new(name, OptionValue::Int(v), help)
}
fn s(name: &str, v: &str, help: &str) -> OptionSpec {
    OptionSpec::new(name, OptionValue::Str(v.into()), help)
}
fn o(name: &str, v: Option<&str>, help: &str) -> OptionSpec {
    OptionSpec::new(name, OptionValue::OptStr(v.map(Into::into)), help)
}
fn q(name: &str, help: &str) -> OptionSpec {
    OptionSpec::new(name, OptionValue::Seq(Vec::new()), help)
}

/// Every option the core declares, with its default and help.
pub fn core_options() -> Vec<OptionSpec> {
    vec![
        // Listening and modes.
        s("listen_host", "127.0.0.1", "Address to bind the proxy to (waylay's default is loopback only; use 0.0.0.0 to listen on all interfaces)."),
        i("listen_port", 8080, "Port to bind the proxy to."),
        OptionSpec::new("mode", OptionValue::Seq(vec!["regular".into()]), "The proxy server modes, each with its own listener: regular, upstream:URL (http://, https://, socks5://), reverse:URL (http://, https://, tls://, tcp://), socks5 (port 1080 by default), transparent (Linux); add @PORT or @HOST:PORT to listen elsewhere."),
        b("proxy_protocol", false, "Every listener requires a HAProxy PROXY protocol header (v1 or v2) on each connection, sent by a TCP load balancer in front of waylay: the client address addons, filters and logs see is the one it names. A connection without a valid header is closed."),
        b("server", true, "Start a proxy server. Enabled by default. (Turning it off is not supported by waylay yet.)"),
        i("workers", 0, "Worker threads (actix arbiters) serving connections; 0 means one per core this process may run on."),
        s("confdir", "~/.waylay", "Location of the default waylay configuration files (CA)."),
        // TLS.
        b("ssl_insecure", false, "Do not verify upstream server TLS certificates."),
        o("ssl_verify_upstream_trusted_ca", None, "Path to a PEM file of trusted CA certificates for verifying upstream servers, in addition to the system roots."),
        o("ssl_verify_upstream_trusted_confdir", None, "Path to a directory of trusted CA certificates for upstream server verification."),
        b("upstream_cert", true, "Connect to the server to learn the names of its certificate and copy them into the minted certificate."),
        b("add_upstream_certs_to_client_chain", false, "Add all certificates of the upstream server to the chain presented to the client. (Not supported by waylay yet: only the default is accepted.)"),
        q("certs", "SSL certificates of the form \"[domain=]path\" to use instead of minted ones. (Not supported by waylay yet: only the default is accepted.)"),
        o("client_certs", None, "Client certificate file or directory. (Not supported by waylay yet: only the default is accepted.)"),
        s("tls_version_client_min", "TLS1_2", "Minimum TLS version towards clients.").with_choices(["TLS1_2", "TLS1_3"]),
        s("tls_version_server_min", "TLS1_2", "Minimum TLS version towards servers.").with_choices(["TLS1_2", "TLS1_3"]),
        // Which connections are intercepted.
        q("ignore_hosts", "Regexes on host:port: matching connections are relayed untouched (TLS is not intercepted)."),
        q("allow_hosts", "Regexes on host:port: only matching connections are intercepted."),
        q("tcp_hosts", "Regexes on host:port: matching connections are treated as raw TCP."),
        // Protocols.
        b("http2", true, "Enable HTTP/2 support."),
        b("http2_ping_keepalive", false, "Send HTTP/2 pings to keep idle server connections alive."),
        b("websocket", true, "Enable WebSocket support."),
        b("rawtcp", true, "Enable raw TCP support for traffic that is neither HTTP nor TLS."),
        s("connection_strategy", "eager", "Determine when server connections are established: eager connects before the client handshake, lazy only when a request needs one. (Not supported by waylay yet: only the default is accepted.)").with_choices(["eager", "lazy"]),
        b("share_server_connections", false, "Share idle server connections between the client connections of a worker while no addon handles a server-connection hook (server_connect, server_connected, server_disconnect, server_connect_error, tls_*_server): an idle client connection then holds no server connection of its own. Off: every client connection keeps its own, as in mitmproxy. On, a flow may name a server connection another client connection opened. (waylay only)"),
        b("keep_host_header", false, "Reverse proxy mode: keep the original Host header (and the client's SNI towards the target) instead of rewriting it to the target."),
        b("validate_inbound_headers", true, "Make sure that incoming HTTP requests are not malformed. (Not supported by waylay yet: only the default is accepted.)"),
        b("normalize_outbound_headers", true, "Normalize outgoing HTTP/2 header names (lowercase). (Not supported by waylay yet: only the default is accepted.)"),
        // Bodies.
        o("stream_large_bodies", Some("1m"), "Stream bodies larger than this (e.g. 1m) instead of buffering them for the request/response hooks; waylay's default keeps memory bounded."),
        o("body_size_limit", None, "Byte size limit of HTTP request and response bodies (e.g. 10m); larger requests get 413, larger responses are cut."),
        b("anticache", false, "Strip headers that might cause the server to return 304 Not Modified."),
        b("anticomp", false, "Try to convince servers to send uncompressed data."),
        b("showhost", false, "Use the Host header to construct URLs for display."),
        // Auth.
        o("proxyauth", None, "Require proxy authentication: \"username:pass\", \"any\" or \"@htpasswd-file\"."),
        o("upstream_auth", None, "Add HTTP Basic authentication to upstream proxy requests (Proxy-Authorization) and reverse proxy requests (Authorization): username:password."),
        // Timeouts and limits (waylay's own).
        i("addon_timeout", 60, "Seconds a single addon hook may run before it is reported and the flow goes on without it."),
        i("connect_timeout", 10, "Seconds to wait for a server connection to be established."),
        i("idle_timeout", 300, "Seconds an idle client or server connection is kept open."),
        i("header_timeout", 30, "Seconds a client may take to send a complete request head."),
        i("max_header_size", 65536, "Largest request or response head accepted, in bytes (larger: 431)."),
        // Output.
        i("flow_detail", 1, "The display detail level for flows in mitmdump-style output: 0 (quiet) to 4."),
        s("termlog_verbosity", "info", "Log verbosity.").with_choices(["error", "warn", "info", "alert", "debug"]),
        o("dumper_filter", None, "Limit which flows are dumped."),
        b("dumper_default_contentview", false, "Show bodies raw rather than through a content view."),
        // Flow files.
        o("save_stream_file", None, "Stream flows to file as they complete (mitmproxy's flow format); prefix the path with + to append."),
        o("save_stream_filter", None, "Filter which flows are written to the stream file (and to hardump)."),
        o("rfile", None, "Read flows from file (a flow file or a HAR file; - for stdin) and play them through the addons."),
        o("readfile_filter", None, "Filter which flows are read from file."),
        b("store_streamed_bodies", false, "Store HTTP request and response bodies when streamed (see stream_large_bodies). waylay keeps them in temporary files, not in memory, and flow files (-w) include them."),
        // Common bundled addons.
        o("intercept", None, "Intercept filter expression: matching flows wait until resumed or killed (in the web UI, `waylay web`, or by an addon holding their intercept handle); setting it turns intercept_active on."),
        b("intercept_active", false, "Intercept toggle (set by setting intercept, as in mitmproxy)."),
        q("breakpoints", "Breakpoint rules \"[#]SEP filter SEP phase SEP action [SEP edit]...\": phase request or response, action resume or hold, edits header:Name=value, remove-header:Name, body:text, status:CODE, method:M, url:URL; a leading # disables a rule (waylay's own: mitmproxy has none)."),
        b("block_global", true, "Block connections from public IP addresses."),
        b("block_private", false, "Block connections from local (private) IP addresses."),
    ]
}
