//! The handshakes a mode's front runs on an accepted connection before the next-layer step:
//! the SOCKS5 server side (`--mode socks5`) and the PROXY protocol header (behind a load
//! balancer). IO over the socket-free codecs in `proto/`; generic over the stream so tests
//! run them over in-memory pipes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proto::Parsed;
use crate::proto::proxy_protocol::{self, ProxyHeader, ProxyProtocolError};
use crate::proto::socks5::{
    Reply, ServerAuth, ServerHandshake, ServerStep, Socks5Error, TargetAddr, UserPass, encode_reply,
};

/// The most bytes a SOCKS5 handshake may take (greeting, RFC 1929, request: well under).
const MAX_SOCKS5_HANDSHAKE: usize = 1024;

/// Why a SOCKS5 client was not served. Each is one log line; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum Socks5AcceptError {
    /// The client broke the protocol, or is not SOCKS5 at all (HTTP, SOCKS4, garbage).
    #[error(transparent)]
    Protocol(#[from] Socks5Error),
    /// The client asked for something waylay does not do; the refusal was sent.
    #[error("{0}")]
    Refused(String),
    /// Wrong username or password; the failure was sent.
    #[error("SOCKS5 authentication failed for user {0:?}")]
    AuthFailed(String),
    /// The client closed or stalled before finishing the handshake.
    #[error("SOCKS5 client {0}")]
    Incomplete(&'static str),
    /// Reading or writing failed.
    #[error("SOCKS5 handshake: {0}")]
    Io(#[from] io::Error),
}

/// A SOCKS5 client whose CONNECT awaits its answer: dial [`Socks5Pending::target`], then
/// [`Socks5Pending::succeeded`] or [`Socks5Pending::failed`].
#[derive(Debug)]
pub struct Socks5Pending<S> {
    io: S,
    target: TargetAddr,
    leftover: Bytes,
    credentials: Option<UserPass>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Socks5Pending<S> {
    /// Where the client wants to go.
    pub fn target(&self) -> &TargetAddr {
        &self.target
    }

    /// The credentials the client authenticated with, if any.
    pub fn credentials(&self) -> Option<&UserPass> {
        self.credentials.as_ref()
    }

    /// Answers "succeeded": returns the stream and the bytes the client already sent past
    /// its request (pipelined), which belong to the tunnelled stream.
    pub async fn succeeded(mut self, bound: Option<SocketAddr>) -> io::Result<(S, Bytes)> {
        self.io
            .write_all(&encode_reply(Reply::Succeeded, bound))
            .await?;
        self.io.flush().await?;
        Ok((self.io, self.leftover))
    }

    /// Answers with a failure (from [`Reply::from_io_error`] for a failed dial) and closes.
    pub async fn failed(mut self, reply: Reply) -> io::Result<()> {
        self.io.write_all(&encode_reply(reply, None)).await?;
        self.io.shutdown().await
    }
}

/// Runs the server side of a SOCKS5 handshake on `io` up to the CONNECT request; `check`
/// decides username/password when `auth` requires them. The whole handshake must finish
/// within `timeout`.
pub async fn socks5_accept<S, F>(
    io: S,
    auth: ServerAuth,
    mut check: F,
    timeout: Duration,
) -> Result<Socks5Pending<S>, Socks5AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&UserPass) -> bool,
{
    socks5_accept_with(
        io,
        auth,
        |u: UserPass| std::future::ready(check(&u)),
        timeout,
    )
    .await
}

/// [`socks5_accept`] with an asynchronous check (a hook, a costly password hash).
pub async fn socks5_accept_with<S, F, Fut>(
    io: S,
    auth: ServerAuth,
    check: F,
    timeout: Duration,
) -> Result<Socks5Pending<S>, Socks5AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(UserPass) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    tokio::time::timeout(timeout, socks5_handshake(io, auth, check))
        .await
        .unwrap_or(Err(Socks5AcceptError::Incomplete(
            "did not finish the handshake in time",
        )))
}

async fn socks5_handshake<S, F, Fut>(
    mut io: S,
    auth: ServerAuth,
    mut check: F,
) -> Result<Socks5Pending<S>, Socks5AcceptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(UserPass) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut hs = ServerHandshake::new(auth);
    let mut buf: Vec<u8> = Vec::with_capacity(64);
    let mut credentials = None;
    // Each step consumes input or reads more, and the input is bounded.
    loop {
        match hs.advance(&buf)? {
            ServerStep::NeedMore => {
                if buf.len() >= MAX_SOCKS5_HANDSHAKE {
                    return Err(Socks5AcceptError::Incomplete("sent an oversized handshake"));
                }
                let mut chunk = [0u8; 512];
                let n = io.read(&mut chunk).await?;
                if n == 0 {
                    return Err(Socks5AcceptError::Incomplete(
                        "closed the connection during the handshake",
                    ));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            ServerStep::Send { consumed, reply } => {
                buf.drain(..consumed);
                io.write_all(&reply).await?;
                io.flush().await?;
            }
            ServerStep::Authenticate {
                consumed,
                credentials: given,
            } => {
                buf.drain(..consumed);
                let ok = check(given.clone()).await;
                io.write_all(&hs.auth_result(ok)).await?;
                io.flush().await?;
                if !ok {
                    let _ = io.shutdown().await;
                    return Err(Socks5AcceptError::AuthFailed(given.username));
                }
                credentials = Some(given);
            }
            ServerStep::Refuse { reply, reason, .. } => {
                io.write_all(&reply).await?;
                let _ = io.shutdown().await;
                return Err(Socks5AcceptError::Refused(reason));
            }
            ServerStep::Connect { consumed, target } => {
                return Ok(Socks5Pending {
                    io,
                    target,
                    leftover: Bytes::copy_from_slice(&buf[consumed..]),
                    credentials,
                });
            }
        }
    }
}

/// Why a connection's PROXY protocol header was not accepted (the connection is closed).
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// Missing or malformed.
    #[error(transparent)]
    Invalid(#[from] ProxyProtocolError),
    /// The connection closed or stalled before a whole header arrived.
    #[error("connection {0} before a whole PROXY protocol header")]
    Incomplete(&'static str),
    /// Reading failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Reads the PROXY protocol header that must start `io`; returns it and the bytes read past
/// it (the client's first bytes), within `timeout`.
pub async fn read_proxy_header<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> Result<(ProxyHeader, Bytes), ProxyHeaderError> {
    let read = async {
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        loop {
            if let Parsed::Done { value, len } = proxy_protocol::parse(&buf)? {
                return Ok((value, Bytes::copy_from_slice(&buf[len..])));
            }
            let mut chunk = [0u8; 512];
            let n = io.read(&mut chunk).await?;
            if n == 0 {
                return Err(ProxyHeaderError::Incomplete("closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ProxyHeaderError::Incomplete("stalled")))
}

/// Reads the PROXY protocol header that must start `io`, consuming exactly its bytes (so
/// the stream can be handed on as it is), within `timeout`. A v2 header's length is in its
/// first 16 bytes; a v1 header is read a byte at a time up to its CRLF (at most 107).
pub async fn read_proxy_header_exact<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyHeaderError> {
    tokio::time::timeout(timeout, read_exact_header(io, Vec::new()))
        .await
        .unwrap_or(Err(ProxyHeaderError::Incomplete("stalled")))
}

/// [`read_proxy_header_exact`] on a TCP socket: one `peek` usually holds the whole header
/// (a balancer sends it in one write), which is then consumed in one read.
pub async fn accept_proxy_header(
    tcp: &mut tokio::net::TcpStream,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyHeaderError> {
    let read = async {
        let mut peeked = [0u8; 256];
        let n = tcp.peek(&mut peeked).await?;
        if n == 0 {
            return Err(ProxyHeaderError::Incomplete("closed"));
        }
        match proxy_protocol::parse(&peeked[..n])? {
            Parsed::Done { value, len } => {
                tcp.read_exact(&mut peeked[..len]).await?;
                Ok(value)
            }
            // Sent in pieces, or longer than the peek: the careful way.
            Parsed::Incomplete => read_exact_header(tcp, Vec::new()).await,
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Err(ProxyHeaderError::Incomplete("stalled")))
}

async fn read_exact_header<S: AsyncRead + Unpin>(
    io: &mut S,
    mut buf: Vec<u8>,
) -> Result<ProxyHeader, ProxyHeaderError> {
    let eof = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof => ProxyHeaderError::Incomplete("closed"),
        _ => ProxyHeaderError::Io(e),
    };
    loop {
        if let Parsed::Done { value, len } = proxy_protocol::parse(&buf)? {
            debug_assert_eq!(len, buf.len());
            return Ok(value);
        }
        // How many bytes are certainly still part of the header.
        let want = if buf.len() >= 16 && buf.starts_with(&proxy_protocol::V2_SIGNATURE) {
            (16 + usize::from(u16::from_be_bytes([buf[14], buf[15]])))
                .saturating_sub(buf.len())
                .max(1)
        } else if buf.len() < 15 && buf.first() == Some(&b'P') {
            // A v1 header is at least `PROXY UNKNOWN\r\n`, 15 bytes.
            15 - buf.len()
        } else if buf.len() < 16 && buf.first() == Some(&b'\r') {
            // Every v2 header has 16 bytes before its addresses.
            16 - buf.len()
        } else {
            1
        };
        if buf.len() + want > proxy_protocol::V1_MAX_LEN
            && !buf.starts_with(&proxy_protocol::V2_SIGNATURE)
        {
            return Err(ProxyProtocolError::V1TooLong.into());
        }
        let start = buf.len();
        buf.resize(start + want, 0);
        io.read_exact(&mut buf[start..]).await.map_err(eof)?;
    }
}

/// The destination a connection redirected to waylay (an nftables or iptables `redirect` or
/// `dnat` rule) was originally addressed to: transparent mode's target. Linux only.
#[cfg(target_os = "linux")]
pub fn original_destination(stream: &tokio::net::TcpStream) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    // An IPv4 connection on an IPv6 socket (`::ffff:a.b.c.d`) was redirected by IPv4 rules.
    let v6 = match stream.local_addr()? {
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().is_none(),
        SocketAddr::V4(_) => false,
    };
    let addr = if v6 {
        sock.original_dst_v6()?
    } else {
        sock.original_dst_v4()?
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::other("the original destination is not an IP address"))
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;
    use crate::proto::proxy_protocol::{Version, encode_v1, encode_v2};
    use crate::proto::socks5::NotSocks5;

    const T: Duration = Duration::from_secs(5);

    fn check_alice(u: &UserPass) -> bool {
        u.username == "alice" && u.password == "pw"
    }

    #[tokio::test]
    async fn socks5_connect_with_auth_and_pipelined_bytes() {
        let (mut client, server) = duplex(1024);
        let accept = tokio::spawn(socks5_accept(server, ServerAuth::UserPass, check_alice, T));
        client.write_all(b"\x05\x01\x02").await.unwrap();
        let mut sel = [0u8; 2];
        client.read_exact(&mut sel).await.unwrap();
        assert_eq!(sel, [5, 2]);
        client.write_all(b"\x01\x05alice\x02pw").await.unwrap();
        let mut ok = [0u8; 2];
        client.read_exact(&mut ok).await.unwrap();
        assert_eq!(ok, [1, 0]);
        // The request and the first tunnelled bytes in one write.
        client
            .write_all(b"\x05\x01\x00\x03\x09localhost\x01\xbbGET /")
            .await
            .unwrap();
        let pending = accept.await.unwrap().unwrap();
        assert_eq!(
            pending.target(),
            &TargetAddr::Domain("localhost".into(), 443)
        );
        assert_eq!(pending.credentials().unwrap().username, "alice");
        let (_server, leftover) = pending.succeeded(None).await.unwrap();
        assert_eq!(&leftover[..], b"GET /");
        let mut reply = [0u8; 10];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[..2], [5, 0]);
    }

    #[tokio::test]
    async fn socks5_wrong_password_is_answered_and_closed() {
        let (mut client, server) = duplex(1024);
        let accept = tokio::spawn(socks5_accept(server, ServerAuth::UserPass, check_alice, T));
        client
            .write_all(b"\x05\x01\x02\x01\x05alice\x02no")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, [5, 2, 1, 1]);
        let err = accept.await.unwrap().unwrap_err();
        assert_eq!(
            err.to_string(),
            "SOCKS5 authentication failed for user \"alice\""
        );
    }

    #[tokio::test]
    async fn socks5_dial_failure_is_answered() {
        let (mut client, server) = duplex(1024);
        let accept = tokio::spawn(socks5_accept(server, ServerAuth::None, |_| true, T));
        client
            .write_all(b"\x05\x01\x00\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x01")
            .await
            .unwrap();
        let pending = accept.await.unwrap().unwrap();
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        pending
            .failed(Reply::from_io_error(&refused))
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer[..4], [5, 0, 5, 5]);
    }

    #[tokio::test]
    async fn not_socks5_and_unsupported_commands() {
        let (mut client, server) = duplex(1024);
        let accept = tokio::spawn(socks5_accept(server, ServerAuth::None, |_| true, T));
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = accept.await.unwrap().unwrap_err();
        assert!(matches!(
            err,
            Socks5AcceptError::Protocol(Socks5Error::NotSocks5(NotSocks5::Http))
        ));

        let (mut client, server) = duplex(1024);
        let accept = tokio::spawn(socks5_accept(server, ServerAuth::None, |_| true, T));
        client
            .write_all(b"\x05\x01\x00\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00")
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer[..4], [5, 0, 5, 7]);
        assert!(matches!(
            accept.await.unwrap().unwrap_err(),
            Socks5AcceptError::Refused(_)
        ));
    }

    #[tokio::test]
    async fn socks5_stalled_client_times_out() {
        let (_client, server) = duplex(1024);
        let err = socks5_accept(
            server,
            ServerAuth::None,
            |_| true,
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Socks5AcceptError::Incomplete(_)), "{err}");
    }

    #[tokio::test]
    async fn proxy_header_then_client_bytes() {
        let header = ProxyHeader::Proxied {
            version: Version::V2,
            source: "203.0.113.9:5555".parse().unwrap(),
            destination: "127.0.0.1:8080".parse().unwrap(),
        };
        for bytes in [encode_v2(&header, b""), encode_v1(&header)] {
            let (mut lb, mut server) = duplex(1024);
            let mut sent = bytes.clone();
            sent.extend_from_slice(b"GET / HTTP/1.1\r\n");
            // Split in two writes, as a balancer may.
            lb.write_all(&sent[..7]).await.unwrap();
            let reader = tokio::spawn(async move { read_proxy_header(&mut server, T).await });
            lb.write_all(&sent[7..]).await.unwrap();
            let (got, rest) = reader.await.unwrap().unwrap();
            assert_eq!(got.source(), header.source());
            assert_eq!(&rest[..], b"GET / HTTP/1.1\r\n");
        }
    }

    #[tokio::test]
    async fn the_exact_reader_leaves_the_client_bytes_in_the_stream() {
        let proxied = ProxyHeader::Proxied {
            version: Version::V2,
            source: "[2001:db8::9]:5555".parse().unwrap(),
            destination: "[::1]:8080".parse().unwrap(),
        };
        let local = ProxyHeader::Local {
            version: Version::V1,
        };
        for bytes in [
            encode_v2(&proxied, b"\x05\x00\x03abc"),
            encode_v1(&proxied),
            b"PROXY UNKNOWN\r\n".to_vec(),
        ] {
            let (mut lb, mut server) = duplex(1024);
            let mut sent = bytes.clone();
            sent.extend_from_slice(b"GET / HTTP/1.1\r\n");
            lb.write_all(&sent).await.unwrap();
            drop(lb);
            let got = read_proxy_header_exact(&mut server, T).await.unwrap();
            if bytes.starts_with(b"PROXY UNKNOWN") {
                assert_eq!(got, local);
            } else {
                assert_eq!(got.source(), proxied.source());
            }
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        }
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"PROXY TCP4 nonsense here\r\n",
            b"\r\n\r\n\0\r\nQUIT\n\x31\x11\x00\x0c",
        ] {
            let (mut lb, mut server) = duplex(1024);
            lb.write_all(bad).await.unwrap();
            drop(lb);
            assert!(
                read_proxy_header_exact(&mut server, T).await.is_err(),
                "{bad:?}"
            );
        }
    }

    #[tokio::test]
    async fn missing_or_truncated_proxy_header() {
        let (mut lb, mut server) = duplex(1024);
        lb.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let err = read_proxy_header(&mut server, T).await.unwrap_err();
        assert!(matches!(
            err,
            ProxyHeaderError::Invalid(ProxyProtocolError::Missing(_))
        ));

        let (mut lb, mut server) = duplex(1024);
        lb.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
        drop(lb);
        let err = read_proxy_header(&mut server, T).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection closed before a whole PROXY protocol header"
        );
    }
}
