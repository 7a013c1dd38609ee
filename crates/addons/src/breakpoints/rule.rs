//! One breakpoint rule, as written in the `breakpoints` option:
//!
//! ```text
//! [#] SEP filter SEP phase SEP action [SEP edit]...
//! ```
//!
//! `SEP` is the first character (after an optional `#`, which disables the rule); it may be
//! any character that is neither a letter, a digit nor whitespace. `filter` is a flow filter
//! expression (empty: every flow), `phase` is `request` or `response`, `action` is `resume`
//! (apply the edits and go on) or `hold` (apply them and wait for the user). Each edit is
//! `kind:argument`:
//!
//! | edit | phase | does |
//! |---|---|---|
//! | `header:Name=value` | both | sets the header (replacing every field of that name) |
//! | `remove-header:Name` | both | removes the header |
//! | `body:text` | both | replaces the body (Content-Length follows) |
//! | `status:404` | response | sets the status code (and its reason phrase) |
//! | `method:PUT` | request | sets the method |
//! | `url:http://host/path` | request | sets scheme, host, port and path (and Host) |
//!
//! Header values and bodies take Python's backslash escapes (`\n`, `\x00`), as the other
//! rule options do. Errors name the byte offset in the rule where the problem is.

use std::fmt;

use waylay_core::{Filter, HttpFlow, Request, Response};

use crate::spec::unescape;

/// When a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// When the whole request was read (`request` hook), before it goes to the server.
    Request,
    /// When the whole response was read (`response` hook), before it goes to the client.
    Response,
}

/// What happens after the edits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The flow goes on.
    Resume,
    /// The flow is intercepted: it waits until resumed or killed (in the web UI).
    Hold,
}

/// One change a rule makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Edit {
    SetHeader { name: String, value: Vec<u8> },
    RemoveHeader(String),
    Body(Vec<u8>),
    Status(u16),
    Method(String),
    Url(String),
}

/// Why a rule does not parse: where (a byte offset into the rule) and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct RuleError {
    /// Byte offset into the rule text.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

fn err(position: usize, message: impl Into<String>) -> RuleError {
    RuleError {
        position,
        message: message.into(),
    }
}

/// A parsed rule; `text` is what it was parsed from (shown in the event log and on flows).
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) enabled: bool,
    pub(crate) sep: char,
    pub(crate) filter_text: String,
    pub(crate) filter: Option<Filter>,
    pub(crate) phase: Phase,
    pub(crate) action: Action,
    /// Each edit with its text as written (`kind:argument`).
    pub(crate) edits: Vec<(Edit, String)>,
}

impl PartialEq for Rule {
    fn eq(&self, o: &Self) -> bool {
        self.enabled == o.enabled
            && self.sep == o.sep
            && self.filter_text == o.filter_text
            && self.phase == o.phase
            && self.action == o.action
            && self.edits == o.edits
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
}

impl Rule {
    /// Parses one rule.
    pub(crate) fn parse(text: &str) -> Result<Self, RuleError> {
        let (enabled, start) = match text.strip_prefix('#') {
            Some(_) => (false, 1),
            None => (true, 0),
        };
        let Some(sep) = text[start..].chars().next() else {
            return Err(err(
                start,
                "empty; expected SEP filter SEP phase SEP action [SEP edit]...",
            ));
        };
        if sep.is_alphanumeric() || sep.is_whitespace() {
            return Err(err(
                start,
                format!("the separator {sep:?} must not be a letter, a digit or whitespace"),
            ));
        }
        // Each field with its byte offset in `text`.
        let mut fields = Vec::new();
        let mut at = start + sep.len_utf8();
        for part in text[at..].split(sep) {
            fields.push((at, part));
            at += part.len() + sep.len_utf8();
        }
        let field = |i: usize, what: &str| {
            fields
                .get(i)
                .copied()
                .ok_or_else(|| err(text.len(), format!("missing the {what}")))
        };
        let (fpos, filter_text) = field(0, "filter")?;
        let filter = if filter_text.trim().is_empty() {
            None
        } else {
            Some(Filter::parse(filter_text).map_err(|e| {
                err(
                    fpos + e.position,
                    format!("invalid filter: {}", e.message).replace(['\n', '\r'], " "),
                )
            })?)
        };
        let (ppos, phase) = field(1, "phase (request or response)")?;
        let phase = match phase.trim() {
            "request" => Phase::Request,
            "response" => Phase::Response,
            other => {
                return Err(err(
                    ppos,
                    format!("unknown phase {other:?} (request or response)"),
                ));
            }
        };
        let (apos, action) = field(2, "action (resume or hold)")?;
        let action = match action.trim() {
            "resume" => Action::Resume,
            "hold" => Action::Hold,
            other => {
                return Err(err(
                    apos,
                    format!("unknown action {other:?} (resume or hold)"),
                ));
            }
        };
        let mut edits = Vec::new();
        for &(pos, raw) in fields.iter().skip(3) {
            edits.push((parse_edit(raw, pos, phase)?, raw.to_owned()));
        }
        Ok(Self {
            enabled,
            sep,
            filter_text: filter_text.to_owned(),
            filter,
            phase,
            action,
            edits,
        })
    }

    /// Whether the rule applies to `flow` at `phase`.
    pub(crate) fn matches(&self, flow: &HttpFlow, phase: Phase) -> bool {
        self.enabled && self.phase == phase && self.filter.as_ref().is_none_or(|f| f.matches(flow))
    }

    /// Applies the edits to `flow` (its request or response, by the rule's phase); `false`
    /// when the phase's message is missing.
    pub(crate) fn apply(&self, flow: &mut HttpFlow) -> bool {
        match self.phase {
            Phase::Request => {
                for (e, _) in &self.edits {
                    edit_request(&mut flow.request, e);
                }
                true
            }
            Phase::Response => {
                let Some(r) = flow.response.as_mut() else {
                    return false;
                };
                for (e, _) in &self.edits {
                    edit_response(r, e);
                }
                true
            }
        }
    }
}

fn edit_message(m: &mut waylay_core::flow::Message, e: &Edit) {
    match e {
        Edit::SetHeader { name, value } => {
            m.headers.remove(name);
            m.headers.append(name.clone(), value.clone());
        }
        Edit::RemoveHeader(name) => {
            m.headers.remove(name);
        }
        // A streamed body is not in memory: it goes through as it is.
        Edit::Body(b) if !m.stream => m.set_content(b.clone()),
        Edit::Body(_) => {}
        Edit::Status(_) | Edit::Method(_) | Edit::Url(_) => {}
    }
}

fn edit_request(r: &mut Request, e: &Edit) {
    match e {
        Edit::Method(m) => r.method = m.as_str().into(),
        Edit::Url(u) => {
            // Checked when parsed.
            if let Ok(to) = Request::from_url(&r.method, u) {
                let authority = to.headers.get("host").map(str::to_owned);
                r.scheme = to.scheme;
                r.host = to.host;
                r.port = to.port;
                r.path = to.path;
                if !r.authority.is_empty()
                    && let Some(a) = &authority
                {
                    r.authority = a.as_str().into();
                }
                if r.headers.contains("host")
                    && let Some(a) = authority
                {
                    r.headers.insert("host", a);
                }
            }
        }
        other => edit_message(r, other),
    }
}

fn edit_response(r: &mut Response, e: &Edit) {
    match e {
        Edit::Status(code) => {
            r.status_code = *code;
            r.reason = waylay_core::flow::reason_phrase(*code).into();
        }
        other => edit_message(r, other),
    }
}

fn parse_edit(raw: &str, pos: usize, phase: Phase) -> Result<Edit, RuleError> {
    let Some((kind, arg)) = raw.split_once(':') else {
        return Err(err(
            pos,
            format!(
                "expected an edit kind:argument (header, remove-header, body, status, method, url), found {raw:?}"
            ),
        ));
    };
    let apos = pos + kind.len() + 1;
    let escaped = |s: &str, at: usize| unescape(s).map_err(|e| err(at, e));
    match kind.trim() {
        "header" => {
            let Some((name, value)) = arg.split_once('=') else {
                return Err(err(apos, "expected header:Name=value"));
            };
            if !is_token(name) {
                return Err(err(apos, format!("{name:?} is not a header name")));
            }
            Ok(Edit::SetHeader {
                name: name.to_owned(),
                value: escaped(value, apos + name.len() + 1)?,
            })
        }
        "remove-header" => {
            if !is_token(arg) {
                return Err(err(apos, format!("{arg:?} is not a header name")));
            }
            Ok(Edit::RemoveHeader(arg.to_owned()))
        }
        "body" => Ok(Edit::Body(escaped(arg, apos)?)),
        "status" => {
            if phase != Phase::Response {
                return Err(err(pos, "status applies to the response phase only"));
            }
            arg.trim()
                .parse::<u16>()
                .ok()
                .filter(|c| (100..=999).contains(c))
                .map(Edit::Status)
                .ok_or_else(|| err(apos, format!("{arg:?} is not a status code (100 to 999)")))
        }
        "method" => {
            if phase != Phase::Request {
                return Err(err(pos, "method applies to the request phase only"));
            }
            if !arg.bytes().all(|b| b.is_ascii_uppercase()) || arg.is_empty() {
                return Err(err(
                    apos,
                    format!("{arg:?} is not a method (GET, PUT, ...)"),
                ));
            }
            Ok(Edit::Method(arg.to_owned()))
        }
        "url" => {
            if phase != Phase::Request {
                return Err(err(pos, "url applies to the request phase only"));
            }
            let ok = Request::from_url("GET", arg)
                .ok()
                .filter(|r| matches!(r.scheme.as_str(), "http" | "https") && !r.host.is_empty());
            if ok.is_none() {
                return Err(err(apos, format!("{arg:?} is not an http(s) URL")));
            }
            Ok(Edit::Url(arg.to_owned()))
        }
        other => Err(err(
            pos,
            format!("unknown edit {other:?} (header, remove-header, body, status, method, url)"),
        )),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.enabled {
            f.write_str("#")?;
        }
        let s = self.sep;
        let phase = match self.phase {
            Phase::Request => "request",
            Phase::Response => "response",
        };
        let action = match self.action {
            Action::Resume => "resume",
            Action::Hold => "hold",
        };
        write!(f, "{s}{}{s}{phase}{s}{action}", self.filter_text)?;
        for (_, raw) in &self.edits {
            write!(f, "{s}{raw}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_rule_with_every_edit_parses() {
        let r = Rule::parse(
            "|~d example.com & ~q|request|resume|header:X-A=b c|remove-header:cookie|body:hi\\n|method:PUT|url:http://h:81/p?q",
        )
        .unwrap();
        assert!(r.enabled);
        assert_eq!(r.phase, Phase::Request);
        assert_eq!(r.action, Action::Resume);
        assert_eq!(r.edits.len(), 5);
        assert_eq!(r.edits[2].0, Edit::Body(b"hi\n".to_vec()));
        let r = Rule::parse("#/~s/response/hold/status:404").unwrap();
        assert!(!r.enabled);
        assert_eq!(r.edits[0].0, Edit::Status(404));
        let r = Rule::parse("|||hold").unwrap_err();
        assert_eq!(r.position, 2, "{r}");
    }

    #[test]
    fn errors_name_the_position() {
        let cases = [
            ("", 0, "empty"),
            ("a|b", 0, "separator"),
            ("|~q", 3, "missing the phase"),
            ("|~q|later|resume", 4, "unknown phase"),
            ("|~q|request|stop", 12, "unknown action"),
            ("|~q|request|resume|nonsense", 19, "expected an edit"),
            ("|~q|request|resume|status:200", 19, "response phase only"),
            ("|~q|response|resume|status:99", 27, "not a status code"),
            ("|~q|response|resume|header:a b=c", 27, "not a header name"),
            ("|~q|request|resume|url:ftp://x/", 23, "http(s) URL"),
            ("#|~q & (|request|resume", 8, "invalid filter"),
        ];
        for (text, pos, msg) in cases {
            let e = Rule::parse(text).unwrap_err();
            assert_eq!(e.position, pos, "{text}: {e}");
            assert!(e.message.contains(msg), "{text}: {e}");
        }
    }

    fn edit() -> impl Strategy<Value = String> {
        prop_oneof![
            "[A-Za-z][A-Za-z0-9-]{0,8}=[a-z0-9 ]{0,8}".prop_map(|s| format!("header:{s}")),
            "[A-Za-z][A-Za-z0-9-]{0,8}".prop_map(|s| format!("remove-header:{s}")),
            "[a-z0-9 ]{0,12}".prop_map(|s| format!("body:{s}")),
            (100u16..1000).prop_map(|c| format!("status:{c}")),
            "[A-Z]{1,7}".prop_map(|s| format!("method:{s}")),
            "[a-z]{1,8}(/[a-z0-9]{0,5}){0,2}".prop_map(|s| format!("url:http://{s}")),
        ]
    }

    fn rule() -> impl Strategy<Value = String> {
        (
            any::<bool>(),
            prop::sample::select(vec!['|', '/', ';', '!', '%']),
            prop::sample::select(vec!["", "~q", "~d example.com", "!~s & ~m GET"]),
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(edit(), 0..4),
        )
            .prop_map(|(enabled, sep, filter, request, hold, edits)| {
                let mut s = String::new();
                if !enabled {
                    s.push('#');
                }
                let phase = if request { "request" } else { "response" };
                let action = if hold { "hold" } else { "resume" };
                // A filter holding the separator would be cut by it.
                let filter = if filter.contains(sep) { "" } else { filter };
                s.push_str(&format!("{sep}{filter}{sep}{phase}{sep}{action}"));
                for e in edits {
                    let e = if e.starts_with("status:") && request {
                        "remove-header:x".to_owned()
                    } else if !request && (e.starts_with("method:") || e.starts_with("url:")) {
                        "body:y".to_owned()
                    } else {
                        e
                    };
                    if !e.contains(sep) {
                        s.push(sep);
                        s.push_str(&e);
                    }
                }
                s
            })
    }

    proptest! {
        #[test]
        fn random_text_never_panics_and_errors_point_inside(s in "\\PC{0,40}") {
            if let Err(e) = Rule::parse(&s) {
                prop_assert!(e.position <= s.len());
            }
        }

        #[test]
        fn valid_rules_parse_and_print_back(text in rule()) {
            let r = Rule::parse(&text).map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(r.to_string(), text.clone());
            let again = Rule::parse(&r.to_string()).unwrap();
            prop_assert_eq!(again, r);
        }

        #[test]
        fn a_rule_cut_short_is_an_error_or_a_rule(text in rule(), cut in 0usize..60) {
            let cut = text.char_indices().map(|(i, _)| i).nth(cut).unwrap_or(text.len());
            if let Err(e) = Rule::parse(&text[..cut]) {
                prop_assert!(e.position <= cut);
            }
        }
    }
}
