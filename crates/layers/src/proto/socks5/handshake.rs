//! The SOCKS5 handshakes as state machines over the bytes read so far: the server side
//! (`--mode socks5`) and the client side (towards a SOCKS5 upstream proxy).

use super::{
    AUTH_VERSION, Command, Method, Parsed, Reply, Socks5Error, TargetAddr, UserPass, VERSION,
    encode_auth_reply, encode_auth_request, encode_reply, encode_request, parse_auth_request,
    parse_greeting, parse_reply, parse_request,
};

/// How the server side authenticates clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerAuth {
    /// No authentication (method 0x00).
    None,
    /// Username/password (RFC 1929) required; the caller checks them.
    UserPass,
}

/// What the server side of the handshake needs done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerStep {
    /// Read more bytes, then call [`ServerHandshake::advance`] again with all unconsumed ones.
    NeedMore,
    /// Write `reply`, drop `consumed` bytes, and go on.
    Send {
        /// Input bytes used.
        consumed: usize,
        /// Bytes to write to the client.
        reply: Vec<u8>,
    },
    /// Check the credentials, write [`ServerHandshake::auth_result`], and go on (or close).
    Authenticate {
        /// Input bytes used.
        consumed: usize,
        /// What the client sent.
        credentials: UserPass,
    },
    /// Dial `target`, then write [`encode_reply`] with the outcome; the handshake is over
    /// and the connection carries the client's stream from here.
    Connect {
        /// Input bytes used.
        consumed: usize,
        /// Where the client wants to go.
        target: TargetAddr,
    },
    /// Write `reply` and close: the client asked for something waylay does not do.
    Refuse {
        /// Input bytes used.
        consumed: usize,
        /// Bytes to write before closing.
        reply: Vec<u8>,
        /// Why, for the log line.
        reason: String,
    },
}

/// The phases of the server side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerPhase {
    /// Waiting for the greeting.
    Greeting,
    /// Waiting for the RFC 1929 request.
    Auth,
    /// The credentials are being checked by the caller.
    Checking,
    /// Waiting for the request.
    Request,
    /// The handshake ended (connect, refuse or failure).
    Done,
}

/// The server side of a SOCKS5 handshake (`--mode socks5`), fed the bytes read so far.
#[derive(Debug)]
pub struct ServerHandshake {
    auth: ServerAuth,
    phase: ServerPhase,
}

impl ServerHandshake {
    /// A handshake with a freshly accepted client.
    pub const fn new(auth: ServerAuth) -> Self {
        Self {
            auth,
            phase: ServerPhase::Greeting,
        }
    }

    /// Advances over `input` (the unconsumed bytes read so far).
    pub fn advance(&mut self, input: &[u8]) -> Result<ServerStep, Socks5Error> {
        let result = self.step(input);
        if result.is_err() {
            self.phase = ServerPhase::Done;
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<ServerStep, Socks5Error> {
        match self.phase {
            ServerPhase::Greeting => {
                let Parsed::Done {
                    value: methods,
                    len,
                } = parse_greeting(input)?
                else {
                    return Ok(ServerStep::NeedMore);
                };
                let wanted = match self.auth {
                    ServerAuth::None => Method::NoAuth,
                    ServerAuth::UserPass => Method::UserPass,
                };
                if !methods.contains(&wanted) {
                    self.phase = ServerPhase::Done;
                    return Ok(ServerStep::Refuse {
                        consumed: len,
                        reply: vec![VERSION, Method::NoAcceptable.code()],
                        reason: format!(
                            "SOCKS5 client offers no acceptable authentication method (needs {wanted:?})"
                        ),
                    });
                }
                self.phase = match self.auth {
                    ServerAuth::None => ServerPhase::Request,
                    ServerAuth::UserPass => ServerPhase::Auth,
                };
                Ok(ServerStep::Send {
                    consumed: len,
                    reply: vec![VERSION, wanted.code()],
                })
            }
            ServerPhase::Auth => match parse_auth_request(input)? {
                Parsed::Incomplete => Ok(ServerStep::NeedMore),
                Parsed::Done { value, len } => {
                    self.phase = ServerPhase::Checking;
                    Ok(ServerStep::Authenticate {
                        consumed: len,
                        credentials: value,
                    })
                }
            },
            ServerPhase::Request => match parse_request(input) {
                Ok(Parsed::Incomplete) => Ok(ServerStep::NeedMore),
                Ok(Parsed::Done { value, len }) => {
                    self.phase = ServerPhase::Done;
                    match value.command {
                        Command::Connect => Ok(ServerStep::Connect {
                            consumed: len,
                            target: value.target,
                        }),
                        other => Ok(ServerStep::Refuse {
                            consumed: len,
                            reply: encode_reply(Reply::CommandNotSupported, None),
                            reason: format!("SOCKS5 command {other:?} is not supported"),
                        }),
                    }
                }
                Err(e @ Socks5Error::BadAddressType(_)) => {
                    self.phase = ServerPhase::Done;
                    Ok(ServerStep::Refuse {
                        consumed: input.len(),
                        reply: encode_reply(Reply::AddressTypeNotSupported, None),
                        reason: e.to_string(),
                    })
                }
                Err(e) => Err(e),
            },
            ServerPhase::Checking | ServerPhase::Done => Ok(ServerStep::NeedMore),
        }
    }

    /// The answer to [`ServerStep::Authenticate`]: write it; on failure close afterwards.
    pub fn auth_result(&mut self, ok: bool) -> [u8; 2] {
        self.phase = if ok && self.phase == ServerPhase::Checking {
            ServerPhase::Request
        } else {
            ServerPhase::Done
        };
        encode_auth_reply(ok)
    }
}

/// What the client side of the handshake needs done next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientStep {
    /// Read more bytes, then call [`ClientHandshake::advance`] again with all unconsumed ones.
    NeedMore,
    /// Write `bytes`, drop `consumed` input bytes, and go on.
    Send {
        /// Input bytes used.
        consumed: usize,
        /// Bytes to write to the proxy.
        bytes: Vec<u8>,
    },
    /// The proxy connected: bytes after `consumed` belong to the tunnelled stream.
    Connected {
        /// Input bytes used.
        consumed: usize,
        /// The address the proxy bound for the connection.
        bound: TargetAddr,
    },
}

/// The phases of the client side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientPhase {
    /// Waiting for the method selection.
    Method,
    /// Waiting for the RFC 1929 answer.
    Auth,
    /// Waiting for the reply to the request.
    Reply,
    /// Connected or failed.
    Done,
}

/// The client side of a SOCKS5 handshake (towards a SOCKS5 upstream proxy).
#[derive(Debug)]
pub struct ClientHandshake {
    target: TargetAddr,
    credentials: Option<(String, String)>,
    phase: ClientPhase,
}

impl ClientHandshake {
    /// A handshake asking for a CONNECT to `target`; returns it and the greeting to write.
    /// With credentials, both "no authentication" and username/password are offered (as
    /// curl does): the proxy chooses.
    pub fn new(
        target: TargetAddr,
        credentials: Option<(String, String)>,
    ) -> Result<(Self, Vec<u8>), Socks5Error> {
        if let Some((u, p)) = &credentials {
            // Fail before any byte is sent.
            encode_auth_request(u, p)?;
        }
        encode_request(Command::Connect, &target)?;
        let greeting = if credentials.is_some() {
            vec![VERSION, 2, Method::NoAuth.code(), Method::UserPass.code()]
        } else {
            vec![VERSION, 1, Method::NoAuth.code()]
        };
        Ok((
            Self {
                target,
                credentials,
                phase: ClientPhase::Method,
            },
            greeting,
        ))
    }

    /// Advances over `input` (the unconsumed bytes read from the proxy so far).
    pub fn advance(&mut self, input: &[u8]) -> Result<ClientStep, Socks5Error> {
        let result = self.step(input);
        if result.is_err() {
            self.phase = ClientPhase::Done;
        }
        result
    }

    fn step(&mut self, input: &[u8]) -> Result<ClientStep, Socks5Error> {
        match self.phase {
            ClientPhase::Method => {
                let Some(sel) = input.get(..2) else {
                    return Ok(ClientStep::NeedMore);
                };
                if sel[0] != VERSION {
                    return Err(Socks5Error::BadVersion {
                        found: sel[0],
                        what: "method selection",
                    });
                }
                let bytes = match (Method::from_code(sel[1]), &self.credentials) {
                    (Method::NoAcceptable, _) => return Err(Socks5Error::NoAcceptableMethod),
                    (Method::NoAuth, _) => {
                        self.phase = ClientPhase::Reply;
                        encode_request(Command::Connect, &self.target)?
                    }
                    (Method::UserPass, Some((u, p))) => {
                        self.phase = ClientPhase::Auth;
                        encode_auth_request(u, p)?
                    }
                    (m, _) => return Err(Socks5Error::UnexpectedMethod(m.code())),
                };
                Ok(ClientStep::Send { consumed: 2, bytes })
            }
            ClientPhase::Auth => {
                let Some(ans) = input.get(..2) else {
                    return Ok(ClientStep::NeedMore);
                };
                if ans[0] != AUTH_VERSION {
                    return Err(Socks5Error::BadAuthVersion(ans[0]));
                }
                if ans[1] != 0 {
                    return Err(Socks5Error::AuthRejected(ans[1]));
                }
                self.phase = ClientPhase::Reply;
                Ok(ClientStep::Send {
                    consumed: 2,
                    bytes: encode_request(Command::Connect, &self.target)?,
                })
            }
            ClientPhase::Reply => match parse_reply(input)? {
                Parsed::Incomplete => Ok(ClientStep::NeedMore),
                Parsed::Done { value, len } => {
                    self.phase = ClientPhase::Done;
                    match value.reply {
                        Reply::Succeeded => Ok(ClientStep::Connected {
                            consumed: len,
                            bound: value.bound,
                        }),
                        failure => Err(Socks5Error::Refused(failure)),
                    }
                }
            },
            ClientPhase::Done => Ok(ClientStep::NeedMore),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Runs a server handshake over `input` fed one byte at a time, as a slow client would.
    fn serve_bytewise(auth: ServerAuth, input: &[u8], accept: bool) -> (Vec<u8>, ServerStep) {
        let mut hs = ServerHandshake::new(auth);
        let mut written = Vec::new();
        let (mut start, mut end) = (0, 0);
        loop {
            match hs.advance(&input[start..end]).unwrap() {
                ServerStep::NeedMore => {
                    assert!(end < input.len(), "ran out of input");
                    end += 1;
                }
                ServerStep::Send { consumed, reply } => {
                    written.extend(reply);
                    start += consumed;
                }
                ServerStep::Authenticate {
                    consumed,
                    credentials,
                } => {
                    start += consumed;
                    let ok = accept && credentials.username == "u" && credentials.password == "p";
                    written.extend(hs.auth_result(ok));
                    if !ok {
                        return (written, ServerStep::NeedMore);
                    }
                }
                last @ (ServerStep::Connect { .. } | ServerStep::Refuse { .. }) => {
                    return (written, last);
                }
            }
        }
    }

    #[test]
    fn server_handshake_without_auth() {
        let input = b"\x05\x01\x00\x05\x01\x00\x03\x09localhost\x00\x50";
        let (written, last) = serve_bytewise(ServerAuth::None, input, true);
        assert_eq!(written, b"\x05\x00");
        assert_eq!(
            last,
            ServerStep::Connect {
                consumed: 16,
                target: TargetAddr::Domain("localhost".into(), 80)
            }
        );
    }

    #[test]
    fn server_handshake_with_auth() {
        let input = b"\x05\x02\x00\x02\x01\x01u\x01p\x05\x01\x00\x01\x7f\x00\x00\x01\x00\x50";
        let (written, last) = serve_bytewise(ServerAuth::UserPass, input, true);
        assert_eq!(written, b"\x05\x02\x01\x00");
        assert!(matches!(last, ServerStep::Connect { .. }));

        let (written, _) = serve_bytewise(ServerAuth::UserPass, input, false);
        assert_eq!(written, b"\x05\x02\x01\x01");
    }

    #[test]
    fn server_refuses_what_it_does_not_do() {
        // Auth required, but the client offers only "no auth".
        let (_, last) = serve_bytewise(ServerAuth::UserPass, b"\x05\x01\x00", true);
        let ServerStep::Refuse { reply, reason, .. } = last else {
            panic!("{last:?}")
        };
        assert_eq!(reply, b"\x05\xff");
        assert!(reason.contains("no acceptable"), "{reason}");

        for (cmd, name) in [(2u8, "Bind"), (3, "UdpAssociate")] {
            let mut input = b"\x05\x01\x00\x05".to_vec();
            input.extend_from_slice(&[cmd, 0, 1, 127, 0, 0, 1, 0, 80]);
            let (_, last) = serve_bytewise(ServerAuth::None, &input, true);
            let ServerStep::Refuse { reply, reason, .. } = last else {
                panic!("{last:?}")
            };
            assert_eq!(reply[1], Reply::CommandNotSupported.code());
            assert!(reason.contains(name), "{reason}");
        }

        let (_, last) = serve_bytewise(ServerAuth::None, b"\x05\x01\x00\x05\x01\x00\x09", true);
        let ServerStep::Refuse { reply, .. } = last else {
            panic!("{last:?}")
        };
        assert_eq!(reply[1], Reply::AddressTypeNotSupported.code());
    }

    /// Runs the client side against canned proxy answers, fed in one piece.
    fn client_run(
        creds: Option<(&str, &str)>,
        answers: &[u8],
    ) -> (Vec<u8>, Result<TargetAddr, Socks5Error>) {
        let target = TargetAddr::Domain("example.com".into(), 443);
        let creds = creds.map(|(u, p)| (u.to_owned(), p.to_owned()));
        let (mut hs, mut written) = ClientHandshake::new(target, creds).unwrap();
        let mut start = 0;
        loop {
            match hs.advance(&answers[start..]) {
                Ok(ClientStep::NeedMore) => return (written, Err(Socks5Error::NoMethods)),
                Ok(ClientStep::Send { consumed, bytes }) => {
                    start += consumed;
                    written.extend(bytes);
                }
                Ok(ClientStep::Connected { consumed, bound }) => {
                    assert_eq!(start + consumed, answers.len());
                    return (written, Ok(bound));
                }
                Err(e) => return (written, Err(e)),
            }
        }
    }

    #[test]
    fn client_handshake_fixtures() {
        let ok_reply = b"\x05\x00\x00\x01\x0a\x00\x00\x01\x04\x38";
        let mut answers = b"\x05\x00".to_vec();
        answers.extend_from_slice(ok_reply);
        let (written, r) = client_run(None, &answers);
        assert_eq!(
            written,
            b"\x05\x01\x00\x05\x01\x00\x03\x0bexample.com\x01\xbb"
        );
        assert_eq!(r, Ok(TargetAddr::Ip("10.0.0.1:1080".parse().unwrap())));

        let mut answers = b"\x05\x02\x01\x00".to_vec();
        answers.extend_from_slice(ok_reply);
        let (written, r) = client_run(Some(("u", "pw")), &answers);
        assert!(written.starts_with(b"\x05\x02\x00\x02\x01\x01u\x02pw\x05\x01\x00\x03"));
        assert!(r.is_ok());

        assert_eq!(
            client_run(Some(("u", "pw")), b"\x05\x02\x01\x01").1,
            Err(Socks5Error::AuthRejected(1))
        );
        assert_eq!(
            client_run(None, b"\x05\xff").1,
            Err(Socks5Error::NoAcceptableMethod)
        );
        assert_eq!(
            client_run(None, b"\x05\x02").1,
            Err(Socks5Error::UnexpectedMethod(2))
        );
        // Credentials offered, but the proxy needs none: straight to the request.
        let mut answers = b"\x05\x00".to_vec();
        answers.extend_from_slice(ok_reply);
        let (written, r) = client_run(Some(("u", "pw")), &answers);
        assert_eq!(&written[..4], b"\x05\x02\x00\x02");
        assert_eq!(written[4], 5, "the request follows the greeting");
        assert!(r.is_ok());
        assert_eq!(
            client_run(None, b"\x05\x00\x05\x05\x00\x01\x00\x00\x00\x00\x00\x00").1,
            Err(Socks5Error::Refused(Reply::ConnectionRefused))
        );
        assert_eq!(
            Socks5Error::Refused(Reply::ConnectionRefused).to_string(),
            "the SOCKS5 proxy answered: connection refused"
        );
        assert!(matches!(
            client_run(None, b"HTTP/1.1 400 Bad Request\r\n").1,
            Err(Socks5Error::BadVersion { found: b'H', .. })
        ));
    }

    proptest! {
        #[test]
        fn handshakes_never_panic(
            b in proptest::collection::vec(any::<u8>(), 0..300),
            auth in any::<bool>(),
        ) {
            let mut s = ServerHandshake::new(if auth { ServerAuth::UserPass } else { ServerAuth::None });
            let mut rest = &b[..];
            for _ in 0..8 {
                match s.advance(rest) {
                    Ok(ServerStep::Send { consumed, .. }) => rest = &rest[consumed..],
                    Ok(ServerStep::Authenticate { consumed, .. }) => {
                        rest = &rest[consumed..];
                        s.auth_result(true);
                    }
                    _ => break,
                }
            }
            let creds = auth.then(|| ("u".to_owned(), "p".to_owned()));
            let (mut c, _) = ClientHandshake::new(TargetAddr::Domain("h".into(), 1), creds).unwrap();
            let mut rest = &b[..];
            for _ in 0..8 {
                match c.advance(rest) {
                    Ok(ClientStep::Send { consumed, .. }) => rest = &rest[consumed..],
                    _ => break,
                }
            }
        }

    }
}
