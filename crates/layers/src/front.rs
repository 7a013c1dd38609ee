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
