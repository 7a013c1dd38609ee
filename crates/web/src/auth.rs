//! Who may use the UI: the token (or `web_password`), the session cookie it buys, and the
//! checks every request passes (XSRF token and `Sec-Fetch-Site` on every non-GET), as
//! mitmweb >= 11.1.2 has them.

use argon2::password_hash::PasswordVerifier;
use http::{HeaderMap, Method, header};

/// What the browser must show to use the UI.
#[derive(Debug)]
pub(crate) struct Auth {
    secret: Secret,
    /// The session cookie's value: random, per process.
    session: String,
    /// The XSRF token: random, per process, readable by the page from its cookie.
    xsrf: String,
    /// `waylay-auth-<port>` (per port, so two UIs on one host do not share it).
    pub(crate) cookie_name: String,
    /// `waylay-xsrf-<port>`.
    pub(crate) xsrf_cookie_name: String,
}

#[derive(Debug)]
enum Secret {
    Token(String),
    Plain(String),
    Argon2(String),
}

/// The outcome of checking a request's credentials.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// The session cookie was shown.
    Session,
    /// The token or password was shown in the URL or a form: set the cookie on the answer.
    Credentials,
    /// `Authorization: Bearer` (a script, not a browser: a browser never adds it by itself,
    /// so no XSRF token is needed).
    Bearer,
    /// Nothing valid was shown.
    Denied,
}

/// Why a state-changing request was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Forbidden {
    /// `Sec-Fetch-Site` says another site sent it.
    #[error("cross-site request refused (Sec-Fetch-Site: {0})")]
    CrossSite(String),
    /// The `X-XSRFToken` header is missing or wrong.
    #[error("missing or wrong X-XSRFToken header")]
    Xsrf,
}

/// 16 random bytes as hex (mitmweb's `token_hex(16)`).
pub(crate) fn random_hex() -> String {
    let mut b = [0u8; 16];
    // Without an OS random source there is no safe token: fall back to a time-and-address
    // mix only so that the process still starts, and say so.
    if getrandom::fill(&mut b).is_err() {
        tracing::warn!("no OS random source: the web UI token is weak");
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b = (t ^ u128::from(std::process::id())).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Equal in time independent of where the strings differ.
pub(crate) fn ct_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Auth {
    /// `password` (plain, or an argon2 hash starting with `$`) replaces the token when set.
    pub(crate) fn new(token: Option<String>, password: Option<String>, port: u16) -> Self {
        let secret = match password {
            Some(p) if p.starts_with('$') => Secret::Argon2(p),
            Some(p) => Secret::Plain(p),
            None => Secret::Token(token.unwrap_or_else(random_hex)),
        };
        Self {
            secret,
            session: random_hex(),
            xsrf: random_hex(),
            cookie_name: format!("waylay-auth-{port}"),
            xsrf_cookie_name: format!("waylay-xsrf-{port}"),
        }
    }

    /// The token to print in the URL (`None` when a password is set).
    pub(crate) fn token(&self) -> Option<&str> {
        match &self.secret {
            Secret::Token(t) => Some(t),
            Secret::Plain(_) | Secret::Argon2(_) => None,
        }
    }

    /// Whether `given` is the token or the password.
    pub(crate) fn check_secret(&self, given: &str) -> bool {
        match &self.secret {
            Secret::Token(t) | Secret::Plain(t) => ct_eq(t, given),
            Secret::Argon2(hash) => argon2::Argon2::default()
                .verify_password(given.as_bytes(), hash.as_str())
                .is_ok(),
        }
    }

    /// Checks the cookie, then `Authorization: Bearer`, then `?token=`.
    pub(crate) fn access(&self, headers: &HeaderMap, query: Option<&str>) -> Access {
        if cookie(headers, &self.cookie_name).is_some_and(|c| ct_eq(&c, &self.session)) {
            return Access::Session;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if let Some(b) = bearer
            && self.check_secret(b)
        {
            return Access::Bearer;
        }
        if let Some(t) = query.and_then(|q| query_param(q, "token"))
            && self.check_secret(&t)
        {
            return Access::Credentials;
        }
        Access::Denied
    }

    /// The `Set-Cookie` values that open a session: the HttpOnly session cookie and the
    /// XSRF cookie the page reads.
    pub(crate) fn session_cookies(&self) -> [String; 2] {
        [
            format!(
                "{}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age=34560000",
                self.cookie_name, self.session
            ),
            self.xsrf_cookie(),
        ]
    }

    /// The XSRF cookie (not HttpOnly: the page copies it into `X-XSRFToken`).
    pub(crate) fn xsrf_cookie(&self) -> String {
        format!(
            "{}={}; Path=/; SameSite=Strict",
            self.xsrf_cookie_name, self.xsrf
        )
    }

    /// Whether the request carries the XSRF cookie already.
    pub(crate) fn has_xsrf_cookie(&self, headers: &HeaderMap) -> bool {
        cookie(headers, &self.xsrf_cookie_name).is_some_and(|c| ct_eq(&c, &self.xsrf))
    }

    /// The checks for a request that changes state (every method but GET and HEAD).
    pub(crate) fn check_unsafe(
        &self,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<(), Forbidden> {
        // A GET changes nothing, and another site may link to the UI (the printed URL).
        if method == Method::GET || method == Method::HEAD {
            return Ok(());
        }
        check_fetch_site(headers)?;
        let given = headers.get("x-xsrftoken").and_then(|v| v.to_str().ok());
        match given {
            Some(g) if ct_eq(g, &self.xsrf) => Ok(()),
            _ => Err(Forbidden::Xsrf),
        }
    }
}

/// Refuses a request another site made the browser send (`Sec-Fetch-Site` other than
/// `same-origin` or `none`; clients that do not send it are not browsers).
pub(crate) fn check_fetch_site(headers: &HeaderMap) -> Result<(), Forbidden> {
    match headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None | Some("same-origin" | "none") => Ok(()),
        Some(other) => Err(Forbidden::CrossSite(other.to_owned())),
    }
}

/// The value of cookie `name`.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| v.trim().to_owned())
        })
}

/// The percent-decoded value of `name` in a query or form body.
pub(crate) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn token_bearer_and_cookie() {
        let a = Auth::new(Some("tok".into()), None, 8081);
        assert_eq!(a.access(&HeaderMap::new(), None), Access::Denied);
        assert_eq!(
            a.access(&HeaderMap::new(), Some("token=tok")),
            Access::Credentials
        );
        assert_eq!(
            a.access(&HeaderMap::new(), Some("token=nope")),
            Access::Denied
        );
        assert_eq!(
            a.access(&headers(&[("authorization", "Bearer tok")]), None),
            Access::Bearer
        );
        let cookie = a.session_cookies()[0].split(';').next().unwrap().to_owned();
        assert_eq!(
            a.access(&headers(&[("cookie", &cookie)]), None),
            Access::Session
        );
        assert_eq!(
            a.access(&headers(&[("cookie", "waylay-auth-8081=forged")]), None),
            Access::Denied
        );
    }

    #[test]
    fn argon2_password() {
        // `argon2id` of "hunter2", made with the argon2 crate's defaults.
        use argon2::password_hash::PasswordHasher;
        let hash = argon2::Argon2::default()
            .hash_password(b"hunter2")
            .unwrap()
            .to_string();
        let a = Auth::new(None, Some(hash), 1);
        assert!(a.token().is_none());
        assert!(a.check_secret("hunter2"));
        assert!(!a.check_secret("hunter3"));
    }

    #[test]
    fn unsafe_methods_need_xsrf_and_same_site() {
        let a = Auth::new(None, None, 1);
        let xsrf = a.xsrf.clone();
        assert_eq!(
            a.check_unsafe(&Method::POST, &HeaderMap::new()),
            Err(Forbidden::Xsrf)
        );
        assert_eq!(
            a.check_unsafe(&Method::POST, &headers(&[("x-xsrftoken", &xsrf)])),
            Ok(())
        );
        assert!(matches!(
            a.check_unsafe(
                &Method::POST,
                &headers(&[("x-xsrftoken", &xsrf), ("sec-fetch-site", "cross-site")])
            ),
            Err(Forbidden::CrossSite(_))
        ));
        assert_eq!(a.check_unsafe(&Method::GET, &HeaderMap::new()), Ok(()));
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(
            query_param("a=1&token=a%20b+c", "token").as_deref(),
            Some("a b c")
        );
        assert_eq!(query_param("token=%zz%", "token").as_deref(), Some("%zz%"));
        assert_eq!(query_param("x=1", "token"), None);
    }
}
