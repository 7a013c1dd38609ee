//! The filter expressions of the search, highlight and intercept boxes.
//!
//! Until the core's flow-filter language lands, this is a subset of it: terms separated by
//! spaces must all match (`&` may be written), `!` negates a term, `|` between terms means
//! either; `~m ~d ~u ~h ~hq ~hs ~bq ~bs ~b ~c ~q ~s ~e ~marked ~http ~tcp ~websocket ~all`;
//! a bare word is `~u`. Values are case-insensitive regular expressions, as in mitmproxy.

use regex::{Regex, RegexBuilder};
use waylay_core::{Flow, HttpFlow};

/// A parsed filter.
#[derive(Debug, Clone)]
pub(crate) struct WebFilter {
    /// Alternatives (`|`), each a list of terms that must all match.
    any: Vec<Vec<Term>>,
}

/// Why an expression does not parse, and where (a character offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at position {position}")]
pub(crate) struct FilterParseError {
    pub(crate) message: String,
    pub(crate) position: usize,
}

#[derive(Debug, Clone)]
struct Term {
    negate: bool,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    Method(Regex),
    Domain(Regex),
    Url(Regex),
    Header(Regex, Part),
    Body(Regex, Part),
    Code(u16),
    Request,
    Response,
    Error,
    Marked,
    Http,
    Tcp,
    WebSocket,
    All,
}

#[derive(Debug, Clone, Copy)]
enum Part {
    Request,
    Response,
    Both,
}

fn regex(v: &str, at: usize) -> Result<Regex, FilterParseError> {
    RegexBuilder::new(v)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| FilterParseError {
            message: format!(
                "bad regular expression {v:?}: {}",
                e.to_string().lines().last().unwrap_or("")
            ),
            position: at,
        })
}

/// Splits into (offset, token), honouring double and single quotes.
fn tokens(s: &str) -> Result<Vec<(usize, String)>, FilterParseError> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some(&(i, c)) = it.peek() {
        if c.is_whitespace() {
            it.next();
            continue;
        }
        if c == '"' || c == '\'' {
            it.next();
            let mut t = String::new();
            let mut closed = false;
            for (_, d) in it.by_ref() {
                if d == c {
                    closed = true;
                    break;
                }
                t.push(d);
            }
            if !closed {
                return Err(FilterParseError {
                    message: "unterminated quote".into(),
                    position: i,
                });
            }
            out.push((i, t));
            continue;
        }
        let mut t = String::new();
        while let Some(&(_, d)) = it.peek() {
            if d.is_whitespace() {
                break;
            }
            t.push(d);
            it.next();
        }
        out.push((i, t));
    }
    Ok(out)
}

impl WebFilter {
    /// Parses `expr`.
    pub(crate) fn parse(expr: &str) -> Result<Self, FilterParseError> {
        let toks = tokens(expr)?;
        let mut any = vec![Vec::new()];
        let mut i = 0;
        while i < toks.len() {
            let (at, t) = &toks[i];
            i += 1;
            match t.as_str() {
                "|" => {
                    if any.last().is_some_and(Vec::is_empty) {
                        return Err(FilterParseError {
                            message: "nothing before |".into(),
                            position: *at,
                        });
                    }
                    any.push(Vec::new());
                    continue;
                }
                "&" => continue,
                _ => {}
            }
            let (negate, word, at) = match t.strip_prefix('!') {
                Some(rest) => (true, rest.to_owned(), at + 1),
                None => (false, t.clone(), *at),
            };
            let mut arg = |name: &str| -> Result<(usize, String), FilterParseError> {
                let a = toks.get(i).cloned().ok_or_else(|| FilterParseError {
                    message: format!("{name} needs an argument"),
                    position: expr.len(),
                })?;
                i += 1;
                Ok(a)
            };
            let test = match word.as_str() {
                "~m" => {
                    let (p, v) = arg("~m")?;
                    Test::Method(regex(&v, p)?)
                }
                "~d" => {
                    let (p, v) = arg("~d")?;
                    Test::Domain(regex(&v, p)?)
                }
                "~u" => {
                    let (p, v) = arg("~u")?;
                    Test::Url(regex(&v, p)?)
                }
                "~h" | "~hq" | "~hs" | "~b" | "~bq" | "~bs" => {
                    let (p, v) = arg(&word)?;
                    let part = match word.as_bytes().get(2) {
                        Some(b'q') => Part::Request,
                        Some(b's') => Part::Response,
                        _ => Part::Both,
                    };
                    if word.starts_with("~h") {
                        Test::Header(regex(&v, p)?, part)
                    } else {
                        Test::Body(regex(&v, p)?, part)
                    }
                }
                "~c" => {
                    let (p, v) = arg("~c")?;
                    Test::Code(v.parse().map_err(|_| FilterParseError {
                        message: format!("~c needs a status code, got {v:?}"),
                        position: p,
                    })?)
                }
                "~q" => Test::Request,
                "~s" => Test::Response,
                "~e" => Test::Error,
                "~marked" => Test::Marked,
                "~http" => Test::Http,
                "~tcp" => Test::Tcp,
                "~websocket" => Test::WebSocket,
                "~all" => Test::All,
                w if w.starts_with('~') => {
                    return Err(FilterParseError {
                        message: format!("unknown filter {w}"),
                        position: at,
                    });
                }
                "" => {
                    return Err(FilterParseError {
                        message: "! needs a term".into(),
                        position: at,
                    });
                }
                w => Test::Url(regex(w, at)?),
            };
            if let Some(last) = any.last_mut() {
                last.push(Term { negate, test });
            }
        }
        if any.len() > 1 && any.last().is_some_and(Vec::is_empty) {
            return Err(FilterParseError {
                message: "nothing after |".into(),
                position: expr.len(),
            });
        }
        Ok(Self { any })
    }

    /// Whether the HTTP flow `flow` matches.
    pub(crate) fn matches_http(&self, flow: &HttpFlow) -> bool {
        self.any
            .iter()
            .any(|all| all.iter().all(|t| t.test.http(flow) != t.negate))
    }

    /// Whether `flow` matches.
    pub(crate) fn matches(&self, flow: &Flow) -> bool {
        self.any
            .iter()
            .any(|all| all.iter().all(|t| t.test.matches(flow) != t.negate))
    }
}

fn headers_match(r: &Regex, h: &waylay_core::Headers) -> bool {
    h.iter()
        .any(|(k, v)| r.is_match(&format!("{k}: {}", String::from_utf8_lossy(v))))
}

fn body_match(r: &Regex, m: &waylay_core::flow::Message) -> bool {
    m.content()
        .ok()
        .is_some_and(|b| r.is_match(&String::from_utf8_lossy(&b)))
}

impl Test {
    fn matches(&self, flow: &Flow) -> bool {
        match flow {
            Flow::Http(f) => self.http(f),
            Flow::Tcp(f) => match self {
                Self::Tcp | Self::All => true,
                Self::Error => f.error.is_some(),
                Self::Marked => !f.marked.is_empty(),
                Self::Domain(r) => f
                    .server
                    .as_ref()
                    .is_some_and(|s| r.is_match(&s.address.host)),
                Self::Body(r, _) => f
                    .messages
                    .iter()
                    .any(|m| r.is_match(&String::from_utf8_lossy(&m.content))),
                _ => false,
            },
        }
    }

    fn http(&self, f: &HttpFlow) -> bool {
        let q = &f.request;
        let s = f.response.as_ref();
        match self {
            Self::Method(r) => r.is_match(&q.method),
            Self::Domain(r) => r.is_match(&q.host) || r.is_match(&q.pretty_host()),
            Self::Url(r) => r.is_match(&q.pretty_url()),
            Self::Header(r, part) => {
                let req =
                    matches!(part, Part::Request | Part::Both) && headers_match(r, &q.headers);
                let resp = matches!(part, Part::Response | Part::Both)
                    && s.is_some_and(|s| headers_match(r, &s.headers));
                req || resp
            }
            Self::Body(r, part) => {
                let req = matches!(part, Part::Request | Part::Both) && body_match(r, q);
                let resp = matches!(part, Part::Response | Part::Both)
                    && s.is_some_and(|s| body_match(r, s));
                req || resp
            }
            Self::Code(c) => s.is_some_and(|s| s.status_code == *c),
            Self::Request => s.is_none(),
            Self::Response => s.is_some(),
            Self::Error => f.error.is_some(),
            Self::Marked => !f.marked.is_empty(),
            Self::Http | Self::All => true,
            Self::WebSocket => f.websocket.is_some(),
            Self::Tcp => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_where() {
        let e = WebFilter::parse("~m GET ~zz").unwrap_err();
        assert_eq!(e.position, 7);
        let e = WebFilter::parse("~d").unwrap_err();
        assert_eq!(e.position, 2);
        let e = WebFilter::parse("~u (").unwrap_err();
        assert_eq!(e.position, 3);
        assert!(WebFilter::parse("~c abc").is_err());
        assert!(WebFilter::parse("a |").is_err());
        assert!(WebFilter::parse("\"a").is_err());
    }

    #[test]
    fn random_input_never_panics() {
        for s in [
            "",
            "!",
            "| a",
            "~",
            "!~m",
            "''",
            "~c 99999999",
            "a & b | !c ~q",
        ] {
            let _ = WebFilter::parse(s);
        }
    }
}
