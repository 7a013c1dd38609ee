//! `proxyauth`: clients must authenticate to the proxy with HTTP Basic credentials in
//! `Proxy-Authorization` (mitmproxy's `proxyauth` addon).
//!
//! A CONNECT without valid credentials is refused with `407 Proxy Authentication Required`
//! (`http_connect`); one with them authenticates its client connection, so the requests inside
//! the tunnel need none. A request to the proxy itself (absolute-form, on a connection that
//! did not authenticate) needs them too (`request_headers`). The credential check,
//! [`Credentials::verify`], is a plain function of a user and a password, for other
//! mechanisms (SOCKS5) to reuse; [`parse_basic`] reads the header.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use base64::Engine as _;
use waylay_core::flow::{Client, ConnectionId, Response};
use waylay_core::hooks::{Configure, Socks5AuthData};
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, Options, OptionsError};

use crate::htpasswd::{Htpasswd, constant_time_eq};

/// The body of the 407 (the realm is in `Proxy-Authenticate`).
const REQUIRED: &str = "waylay: proxy authentication required (proxyauth)\n";
const CHALLENGE: &str = "Basic realm=\"waylay\"";
/// How many accepted header values [`ProxyAuth`] remembers (then it starts over), so a
/// bcrypt hash is checked once per client credentials, not on every request.
const CACHE_LIMIT: usize = 1024;

/// What `proxyauth` accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// `any`: some user and password must be sent, whatever they are.
    Any,
    /// `username:password`: exactly these.
    Single {
        /// The user name.
        user: String,
        /// The password.
        pass: String,
    },
    /// `@path`: the users of an htpasswd file (bcrypt or `{SHA}`).
    Htpasswd(Arc<Htpasswd>),
}

impl Credentials {
    /// Parses the `proxyauth` option: `any`, `username:password` (split at the first `:`,
    /// so the password may contain more) or `@path` to an htpasswd file, read now. The error
    /// is one line naming the option.
    pub fn parse(v: &str) -> Result<Self, OptionsError> {
        let rejected = |reason: String| OptionsError::Rejected {
            name: "proxyauth".into(),
            reason,
        };
        if v == "any" {
            return Ok(Self::Any);
        }
        if let Some(path) = v.strip_prefix('@') {
            if path.is_empty() {
                return Err(rejected(format!("{v:?} names no htpasswd file")));
            }
            return Htpasswd::read(std::path::Path::new(path))
                .map(|h| Self::Htpasswd(Arc::new(h)))
                .map_err(rejected);
        }
        if v.starts_with("ldap:") || v.starts_with("ldaps:") {
            // mitmproxy's LDAP form: never taken for user "ldap".
            return Err(rejected(format!(
                "{v:?}: LDAP authentication is not supported (use \"@htpasswd-file\")"
            )));
        }
        match v.split_once(':') {
            Some((user, pass)) if !user.is_empty() => Ok(Self::Single {
                user: user.into(),
                pass: pass.into(),
            }),
            _ => Err(rejected(format!(
                "{v:?} is not \"username:password\", \"any\" or \"@htpasswd-file\""
            ))),
        }
    }

    /// Whether `user` with `pass` may use the proxy: the one credential check, for HTTP
    /// proxy authentication and SOCKS5 alike. A bcrypt hash costs milliseconds of CPU: see
    /// [`Credentials::is_costly`].
    pub fn verify(&self, user: &str, pass: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Single { user: u, pass: p } => {
                // Constant-time in the password's length, so a probe learns nothing from timing.
                user == u && constant_time_eq(pass.as_bytes(), p.as_bytes())
            }
            Self::Htpasswd(h) => h.check(user, pass),
        }
    }

    /// Whether [`Credentials::verify`] may be slow (an htpasswd file, maybe bcrypt): then run
    /// it off the worker thread ([`tokio::task::spawn_blocking`]) and cache the outcome.
    pub fn is_costly(&self) -> bool {
        matches!(self, Self::Htpasswd(_))
    }
}

/// The user and password of a `Basic` credentials header value (`Basic base64(user:pass)`);
/// `None` for any other scheme or a malformed value.
pub fn parse_basic(value: &[u8]) -> Option<(String, String)> {
    let h = std::str::from_utf8(value).ok()?;
    let (scheme, token) = h.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// Requires proxy authentication while `proxyauth` is set.
#[derive(Debug, Default)]
pub struct ProxyAuth {
    credentials: Option<Credentials>,
    /// Client connections whose CONNECT carried valid credentials.
    authenticated: HashSet<ConnectionId>,
    /// `Proxy-Authorization` values already verified against costly credentials, with the
    /// outcome; at most [`CACHE_LIMIT`], emptied when the option changes.
    verified: HashMap<Vec<u8>, bool>,
}

impl ProxyAuth {
    /// The addon for `options`; it handles requests only while `proxyauth` is set (the
    /// manager reads [`Addon::hooks`] again after every `configure`).
    pub fn from_options(options: &Options) -> Self {
        Self {
            credentials: options
                .str("proxyauth")
                .and_then(|v| Credentials::parse(v).ok()),
            authenticated: HashSet::new(),
            verified: HashMap::new(),
        }
    }

    /// Whether the flow's request carries acceptable credentials. Costly checks (bcrypt) run
    /// on the blocking pool, once per header value.
    async fn accepts(&mut self, flow: &HttpFlow) -> bool {
        let Some(creds) = &self.credentials else {
            return true;
        };
        let Some(value) = flow.request.headers.get_bytes("proxy-authorization") else {
            return false;
        };
        let Some((user, pass)) = parse_basic(value) else {
            return false;
        };
        if !creds.is_costly() {
            return creds.verify(&user, &pass);
        }
        if let Some(&ok) = self.verified.get(value) {
            return ok;
        }
        let value = value.to_vec();
        let check = creds.clone();
        let ok = tokio::task::spawn_blocking(move || check.verify(&user, &pass))
            .await
            .unwrap_or(false);
        if self.verified.len() >= CACHE_LIMIT {
            self.verified.clear();
        }
        self.verified.insert(value, ok);
        ok
    }

    fn refuse(flow: &mut HttpFlow) {
        tracing::info!(client.addr = %flow.client.peername, "proxy authentication required (proxyauth)");
        flow.response = Some(Response::make(
            407,
            REQUIRED,
            [
                ("proxy-authenticate", CHALLENGE),
                ("content-type", "text/plain; charset=utf-8"),
            ],
        ));
    }
}

impl Addon for ProxyAuth {
    fn name(&self) -> String {
        "proxyauth".into()
    }

    fn hooks(&self) -> HookSet {
        if self.credentials.is_some() {
            HookSet::of(&[
                HookKind::Configure,
                HookKind::HttpConnect,
                HookKind::RequestHeaders,
                HookKind::ClientDisconnect,
                HookKind::Socks5Auth,
            ])
        } else {
            HookSet::of(&[HookKind::Configure])
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        self.credentials = cfg
            .options
            .str("proxyauth")
            .map(Credentials::parse)
            .transpose()?;
        self.verified.clear();
        Ok(())
    }

    async fn http_connect(&mut self, flow: &mut HttpFlow) {
        if self.credentials.is_none() {
            return;
        }
        if self.accepts(flow).await {
            self.authenticated.insert(flow.client.id);
        } else {
            Self::refuse(flow);
        }
    }

    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        // A replay (sent by waylay itself, marked by the proxy) needs none, as in mitmproxy.
        if self.credentials.is_none()
            || self.authenticated.contains(&flow.client.id)
            || flow.is_replay.is_some()
        {
            return;
        }
        if !self.accepts(flow).await {
            Self::refuse(flow);
        }
    }

    /// SOCKS5 mode asks for a username and password when `proxyauth` is set: the same
    /// credentials as HTTP proxy authentication. An accepted client connection needs none
    /// on the requests it then sends (as after an authenticated CONNECT).
    async fn socks5_auth(&mut self, data: &mut Socks5AuthData) {
        let Some(credentials) = &self.credentials else {
            return;
        };
        data.valid = if credentials.is_costly() {
            let (c, u, p) = (
                credentials.clone(),
                data.username.clone(),
                data.password.clone(),
            );
            tokio::task::spawn_blocking(move || c.verify(&u, &p))
                .await
                .unwrap_or(false)
        } else {
            credentials.verify(&data.username, &data.password)
        };
        if data.valid {
            self.authenticated.insert(data.client.id);
        }
    }

    async fn client_disconnect(&mut self, client: &mut Client) {
        self.authenticated.remove(&client.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn basic(user_pass: &str) -> Vec<u8> {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
        .into_bytes()
    }

    #[test]
    fn basic_credentials_are_read() {
        assert_eq!(
            parse_basic(&basic("alice:s3cret")),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(
            parse_basic(&basic("alice:with:colon")),
            Some(("alice".into(), "with:colon".into()))
        );
        assert_eq!(parse_basic(b"basic YTpi"), Some(("a".into(), "b".into())));
    }

    #[test]
    fn other_schemes_and_garbage_are_no_credentials() {
        for v in [
            &b"Bearer abc"[..],
            b"Basic !!!",
            b"Basic",
            b"",
            b"Basic YWxpY2U=",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_basic(v), None, "{v:?}");
        }
    }

    #[test]
    fn the_option_is_any_or_user_and_password() {
        assert_eq!(Credentials::parse("any").ok(), Some(Credentials::Any));
        assert_eq!(
            Credentials::parse("alice:s3cret").ok(),
            Some(Credentials::Single {
                user: "alice".into(),
                pass: "s3cret".into()
            })
        );
        assert_eq!(
            Credentials::parse("alice:with:colon").ok(),
            Some(Credentials::Single {
                user: "alice".into(),
                pass: "with:colon".into()
            })
        );
        for bad in [
            "@",
            "@/does/not/exist/htpasswd",
            "nocolon",
            ":pass",
            "",
            "ldap:localhost:cn=admin:pw:ou=users",
            "ldaps:localhost:cn=admin:pw:ou=users",
        ] {
            assert!(Credentials::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn verify_needs_the_exact_user_and_password() {
        let c = Credentials::parse("alice:s3cret").expect("parse");
        assert!(c.verify("alice", "s3cret"));
        assert!(!c.verify("alice", "s3cre"));
        assert!(!c.verify("alice", "s3cret!"));
        assert!(!c.verify("bob", "s3cret"));
        assert!(Credentials::Any.verify("", ""));
    }

    proptest! {
        #[test]
        fn random_header_values_never_panic(v in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = parse_basic(&v);
        }

        #[test]
        fn option_values_parse_or_refuse_without_panic(v in "[^@]{0,40}") {
            let _ = Credentials::parse(&v);
        }

        #[test]
        fn a_password_is_everything_after_the_first_colon(
            // Not "ldap" or "ldaps": those are the refused LDAP form.
            user in "u[a-z]{0,10}",
            pass in ".{0,20}",
        ) {
            prop_assert_eq!(
                Credentials::parse(&format!("{user}:{pass}")).ok(),
                Some(Credentials::Single { user, pass })
            );
        }

        #[test]
        fn encoded_credentials_come_back(user in "[^:\\x00]{0,20}", pass in ".{0,20}") {
            let parsed = parse_basic(&basic(&format!("{user}:{pass}")));
            prop_assert_eq!(parsed, Some((user, pass)));
        }
    }
}
