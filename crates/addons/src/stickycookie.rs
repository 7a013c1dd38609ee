//! `stickycookie`: keep the cookies servers set and send them on matching requests, as
//! mitmproxy's stickycookie.

use std::collections::HashMap;

use waylay_core::hooks::{Configure, Loader};
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError};

use crate::matcher::FlowMatcher;

const OPTION: &str = "stickycookie";

/// Where a cookie applies: domain, port, path.
type Origin = (String, u16, String);

/// A cookie's attributes, names lowercased (`("path", "/")`, `("secure", "")`).
type Attrs = Vec<(String, String)>;

/// One `Set-Cookie` value: name, value and attributes.
pub(crate) fn parse_set_cookie(header: &str) -> Option<(String, String, Attrs)> {
    let mut parts = header.split(';');
    let (name, value) = parts.next()?.split_once('=')?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    let attrs = parts
        .map(|a| match a.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), v.trim().to_owned()),
            None => (a.trim().to_ascii_lowercase(), String::new()),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect();
    Some((name.to_owned(), value.trim().to_owned(), attrs))
}

/// Whether a host name (not an IP literal) — Python's `cookiejar.is_HDN`.
fn is_hdn(s: &str) -> bool {
    !(s.is_empty()
        || s.starts_with('.')
        || s.ends_with('.')
        || s.parse::<std::net::IpAddr>().is_ok())
}

/// Python's `cookiejar.domain_match(a, b)`.
fn cookiejar_match(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == b {
        return true;
    }
    if !is_hdn(&a) {
        return false;
    }
    match a.rfind(&b) {
        None | Some(0) => false,
        Some(_) => b.starts_with('.') && is_hdn(&b[1..]),
    }
}

/// mitmproxy's domain match for the jar: as `cookiejar`, or with `b`'s dots trimmed.
pub(crate) fn domain_match(a: &str, b: &str) -> bool {
    cookiejar_match(a, b) || cookiejar_match(a, b.trim_matches('.'))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Seconds since the epoch of a cookie date (`Thu, 01 Jan 1970 00:00:00 GMT`, dashes
/// allowed between the date parts); `None` when it cannot be read.
pub(crate) fn cookie_date(s: &str) -> Option<i64> {
    let s = s
        .split_once(',')
        .map_or(s, |(_, rest)| rest)
        .replace('-', " ");
    let mut it = s.split_whitespace();
    let day: i64 = it.next()?.parse().ok()?;
    let mon = it.next()?.to_ascii_lowercase();
    let month = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ]
    .iter()
    .position(|m| mon.starts_with(m))? as i64
        + 1;
    let mut year: i64 = it.next()?.parse().ok()?;
    if year < 100 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let mut hms = it.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + sec)
}

/// Whether the attributes say the cookie is already expired (`Max-Age` ≤ 0 or `Expires` in
/// the past).
fn is_expired(attrs: &[(String, String)], now: i64) -> bool {
    if let Some((_, v)) = attrs.iter().find(|(k, _)| k == "max-age")
        && let Ok(age) = v.parse::<i64>()
    {
        return age <= 0;
    }
    attrs
        .iter()
        .find(|(k, _)| k == "expires")
        .and_then(|(_, v)| cookie_date(v))
        .is_some_and(|t| t <= now)
}

/// mitmproxy's `stickycookie` addon: with a filter set, cookies servers set are kept in a
/// jar by domain, port and path, and matching requests get a `Cookie` header with every
/// kept cookie that applies to them (replacing the one they carry). A cookie set expired is
/// removed from the jar.
#[derive(Debug, Default)]
pub struct StickyCookie {
    matcher: Option<FlowMatcher>,
    jar: HashMap<Origin, Vec<(String, String)>>,
}

impl StickyCookie {
    /// The addon, inactive until `stickycookie` is set.
    pub fn new() -> Self {
        Self::default()
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Addon for StickyCookie {
    fn name(&self) -> String {
        OPTION.into()
    }

    /// The flow hooks only while it has a filter: without, a proxy keeps its fast path (no
    /// flow is built for requests nobody observes); the manager reads this again after every
    /// `configure`, so setting the option at run time takes effect from the next request.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if self.matcher.is_some() {
            LIFE.union(HookSet::of(&[HookKind::Request, HookKind::Response]))
        } else {
            LIFE
        }
    }

    async fn load(&mut self, loader: &mut Loader) {
        loader.add_option(OptionSpec::optional(
            OPTION,
            "Set sticky cookie filter. Matched against requests.",
        ));
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if !cfg.changed(OPTION) {
            return Ok(());
        }
        self.matcher = match cfg.options.str(OPTION) {
            None => None,
            Some(f) => Some(FlowMatcher::parse(f).map_err(|e| OptionsError::rejected(OPTION, e))?),
        };
        Ok(())
    }

    async fn response(&mut self, flow: &mut HttpFlow) {
        if self.matcher.is_none() {
            return;
        }
        let Some(resp) = flow.response.as_ref() else {
            return;
        };
        let now = now_secs();
        let host = &flow.request.host;
        for header in resp.headers.get_all("set-cookie") {
            let Some((name, value, attrs)) = parse_set_cookie(header) else {
                continue;
            };
            let attr = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            let domain = attr("domain").unwrap_or_else(|| host.to_string());
            let path = attr("path").unwrap_or_else(|| "/".to_owned());
            if !domain_match(host, &domain) {
                continue;
            }
            let key = (domain, flow.request.port, path);
            if is_expired(&attrs, now) {
                if let Some(c) = self.jar.get_mut(&key) {
                    c.retain(|(n, _)| *n != name);
                    if c.is_empty() {
                        self.jar.remove(&key);
                    }
                }
            } else {
                let c = self.jar.entry(key).or_default();
                match c.iter_mut().find(|(n, _)| *n == name) {
                    Some(slot) => slot.1 = value,
                    None => c.push((name, value)),
                }
            }
        }
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        let Some(matcher) = &self.matcher else {
            return;
        };
        if !matcher.matches(flow) {
            return;
        }
        let r = &flow.request;
        let mut cookies: Vec<(String, String)> = Vec::new();
        for ((domain, port, path), c) in &self.jar {
            if domain_match(&r.host, domain) && r.port == *port && r.path.starts_with(path.as_str())
            {
                cookies.extend(c.iter().cloned());
            }
        }
        if cookies.is_empty() {
            return;
        }
        flow.metadata
            .insert("stickycookie".into(), serde_json::Value::Bool(true));
        let header: Vec<String> = cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        flow.request.headers.insert("cookie", header.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_values() {
        let (n, v, a) =
            parse_set_cookie("id=a3fWa; Expires=Wed, 21 Oct 2015 07:28:00 GMT; Secure; Path=/x")
                .unwrap();
        assert_eq!((n.as_str(), v.as_str()), ("id", "a3fWa"));
        assert!(a.contains(&("secure".into(), String::new())));
        assert!(a.contains(&("path".into(), "/x".into())));
        assert!(parse_set_cookie("novalue").is_none());
    }

    #[test]
    fn dates_and_expiry() {
        assert_eq!(cookie_date("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            cookie_date("Wed, 21-Oct-2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(cookie_date("nonsense"), None);
        let attrs = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        assert!(is_expired(&attrs("max-age", "0"), 100));
        assert!(!is_expired(&attrs("max-age", "10"), 100));
        assert!(is_expired(
            &attrs("expires", "Thu, 01 Jan 1970 00:00:00 GMT"),
            100
        ));
        assert!(!is_expired(
            &attrs("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
            100
        ));
    }

    #[test]
    fn domains_match_as_mitmproxy() {
        assert!(domain_match("example.com", "example.com"));
        assert!(domain_match("www.example.com", ".example.com"));
        assert!(!domain_match("www.example.com", "example.com"));
        assert!(domain_match("example.com", ".example.com"));
        assert!(!domain_match("evil.com", ".example.com"));
        assert!(!domain_match("127.0.0.1", ".0.0.1"));
    }
}
