//! mitmproxy's export formats for a recorded flow: `curl`, `httpie`, `raw`, `raw_request`,
//! `raw_response`. Pure functions over [`HttpFlow`]; `waylay export` prints them.

use waylay_core::flow::Message;
use waylay_core::{HttpFlow, Request};

/// The export formats, by mitmproxy's names, sorted.
pub const EXPORT_FORMATS: [&str; 5] = ["curl", "httpie", "raw", "raw_request", "raw_response"];

/// Why a flow cannot be exported in a format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The format name is none of [`EXPORT_FORMATS`].
    #[error(
        "no such export format: {0:?} (expected one of curl, httpie, raw, raw_request, raw_response)"
    )]
    UnknownFormat(String),
    /// `raw_response` of a flow without a response.
    #[error("cannot export a flow with no response")]
    NoResponse,
    /// The body was streamed, so it was never recorded.
    #[error("{0} content missing (the body was streamed)")]
    ContentMissing(&'static str),
    /// `curl` / `httpie` need a text body to put on a command line.
    #[error("request content must be valid UTF-8 to export it as a command")]
    NotText,
    /// Neither request nor response content was recorded.
    #[error("cannot export a flow with no request or response content")]
    Nothing,
}

/// Exports `flow` in `format` (one of [`EXPORT_FORMATS`]).
pub fn export(format: &str, flow: &HttpFlow) -> Result<Vec<u8>, ExportError> {
    match format {
        "curl" => curl_command(flow).map(String::into_bytes),
        "httpie" => httpie_command(flow).map(String::into_bytes),
        "raw" => raw(flow),
        "raw_request" => raw_request(flow),
        "raw_response" => raw_response(flow),
        other => Err(ExportError::UnknownFormat(other.to_owned())),
    }
}

/// Quotes `s` for a POSIX shell, as Python's `shlex.quote`.
pub fn shell_quote(s: &str) -> String {
    if s.is_empty() {
        return "''".to_owned();
    }
    let safe = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c));
    if safe {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\"'\"'"))
    }
}

/// The request with its body decoded (`Content-Encoding` undone where possible).
fn decoded_request(flow: &HttpFlow) -> Request {
    let mut r = flow.request.clone();
    let _ = r.decode();
    r
}

/// Drops the headers a command line makes redundant.
fn pop_headers(r: &mut Request) {
    r.headers.remove("content-length");
    if r.headers.get("host") == Some(r.host.as_str()) {
        r.headers.remove("host");
    }
    if r.headers.get(":authority") == Some(r.host.as_str()) {
        r.headers.remove(":authority");
    }
}

/// The body for a shell command line: quoted, and with control characters written as
/// `\xNN` inside `"$(printf ...)"` so the shell restores them.
fn body_for_shell(r: &Request) -> Result<Option<String>, ExportError> {
    let Some(raw) = r.raw_content.as_ref() else {
        return Ok(None);
    };
    if raw.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(raw).map_err(|_| ExportError::NotText)?;
    let mut escaped = String::with_capacity(text.len());
    let mut any = false;
    for c in text.chars() {
        if (c as u32) < 32 {
            any = true;
            escaped.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    Ok(Some(if any {
        format!("\"$(printf {})\"", shell_quote(&escaped))
    } else {
        shell_quote(&escaped)
    }))
}

/// The request as a `curl` command line.
pub fn curl_command(flow: &HttpFlow) -> Result<String, ExportError> {
    let mut r = decoded_request(flow);
    pop_headers(&mut r);
    let mut args: Vec<String> = vec!["curl".into()];
    for (name, value) in r.headers.iter() {
        if name.eq_ignore_ascii_case("accept-encoding") {
            args.push("--compressed".into());
        } else {
            args.push("-H".into());
            args.push(format!("{name}: {}", String::from_utf8_lossy(value)));
        }
    }
    let body = body_for_shell(&r)?;
    if r.method != "GET" {
        if body.is_none() {
            // curl sends no Content-Length without a body; some servers want one.
            args.push("-H".into());
            args.push("content-length: 0".into());
        }
        args.push("-X".into());
        args.push(r.method.to_string());
    }
    args.push(r.pretty_url());
    let mut cmd = args
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(b) = body {
        cmd.push_str(" -d ");
        cmd.push_str(&b);
    }
    Ok(cmd)
}

/// The request as an `httpie` command line.
pub fn httpie_command(flow: &HttpFlow) -> Result<String, ExportError> {
    let mut r = decoded_request(flow);
    pop_headers(&mut r);
    let mut args = vec!["http".to_owned(), r.method.to_string(), r.pretty_url()];
    for (name, value) in r.headers.iter() {
        args.push(format!("{name}: {}", String::from_utf8_lossy(value)));
    }
    let mut cmd = args
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(b) = body_for_shell(&r)? {
        cmd.push_str(" <<< ");
        cmd.push_str(&b);
    }
    Ok(cmd)
}

fn push_head(out: &mut Vec<u8>, first_line: &str, m: &Message) {
    out.extend_from_slice(first_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in m.headers.iter() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// The request as HTTP/1 bytes: request line, headers, blank line, decoded body.
pub fn raw_request(flow: &HttpFlow) -> Result<Vec<u8>, ExportError> {
    let r = decoded_request(flow);
    let Some(body) = r.raw_content.clone() else {
        return Err(ExportError::ContentMissing("request"));
    };
    let target = if r.method.eq_ignore_ascii_case("CONNECT") {
        if r.authority.is_empty() {
            format!("{}:{}", r.host, r.port)
        } else {
            r.authority.to_string()
        }
    } else {
        r.path.to_string()
    };
    let mut out = Vec::with_capacity(256 + body.len());
    push_head(
        &mut out,
        &format!("{} {target} {}", r.method, r.http_version),
        &r.message,
    );
    out.extend_from_slice(&body);
    Ok(out)
}

/// The response as HTTP/1 bytes: status line, headers, blank line, decoded body.
pub fn raw_response(flow: &HttpFlow) -> Result<Vec<u8>, ExportError> {
    let Some(resp) = flow.response.as_ref() else {
        return Err(ExportError::NoResponse);
    };
    let mut resp = resp.clone();
    let _ = resp.decode();
    let Some(body) = resp.raw_content.clone() else {
        return Err(ExportError::ContentMissing("response"));
    };
    let mut out = Vec::with_capacity(256 + body.len());
    let line = format!("{} {} {}", resp.http_version, resp.status_code, resp.reason);
    push_head(&mut out, line.trim_end(), &resp.message);
    out.extend_from_slice(&body);
    Ok(out)
}

/// The request and the response (whichever were recorded), separated by a blank line.
pub fn raw(flow: &HttpFlow) -> Result<Vec<u8>, ExportError> {
    let req = flow.request.raw_content.is_some();
    let resp = flow
        .response
        .as_ref()
        .is_some_and(|r| r.raw_content.is_some());
    match (req, resp) {
        (true, true) => {
            let mut out = raw_request(flow)?;
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(&raw_response(flow)?);
            Ok(out)
        }
        (true, false) => raw_request(flow),
        (false, true) => raw_response(flow),
        (false, false) => Err(ExportError::Nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use waylay_core::flow::{Client, Response};

    fn flow(method: &str, url: &str) -> HttpFlow {
        let client = Arc::new(Client::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:8080".parse().unwrap(),
        ));
        HttpFlow::new(client, Request::from_url(method, url).unwrap())
    }

    #[test]
    fn shell_quoting_as_shlex() {
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("abc-1.2/x:y@z%+=,_"), "abc-1.2/x:y@z%+=,_");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\"'\"'s'");
    }

    #[test]
    fn curl_for_a_get_and_a_post() {
        let mut f = flow("GET", "http://example.com/path?q=1");
        f.request.headers.append("Accept-Encoding", "gzip");
        f.request.headers.append("X-Thing", "a b");
        assert_eq!(
            curl_command(&f).unwrap(),
            "curl --compressed -H 'X-Thing: a b' 'http://example.com/path?q=1'"
        );

        let mut f = flow("POST", "http://example.com:8080/submit");
        f.request.headers.append("content-length", "9");
        f.request.set_raw_content("a=1&b=it's");
        assert_eq!(
            curl_command(&f).unwrap(),
            "curl -H 'Host: example.com:8080' -X POST http://example.com:8080/submit -d 'a=1&b=it'\"'\"'s'"
        );

        let f = flow("DELETE", "http://example.com/x");
        assert_eq!(
            curl_command(&f).unwrap(),
            "curl -H 'content-length: 0' -X DELETE http://example.com/x"
        );

        let mut f = flow("PUT", "http://example.com/x");
        f.request.set_raw_content("a\nb");
        assert!(
            curl_command(&f)
                .unwrap()
                .ends_with(" -d \"$(printf 'a\\x0ab')\""),
            "{}",
            curl_command(&f).unwrap()
        );
        f.request.set_raw_content(vec![0xff, 0xfe]);
        assert_eq!(curl_command(&f), Err(ExportError::NotText));
    }

    #[test]
    fn httpie_command_line() {
        let mut f = flow("POST", "http://example.com/a");
        f.request.headers.append("X-A", "1");
        f.request.set_raw_content("{\"k\": 1}");
        assert_eq!(
            httpie_command(&f).unwrap(),
            "http POST http://example.com/a 'X-A: 1' <<< '{\"k\": 1}'"
        );
    }

    #[test]
    fn raw_request_response_and_both() {
        let mut f = flow("POST", "http://example.com/p?x=1");
        f.request.set_raw_content("body");
        assert_eq!(
            raw_request(&f).unwrap(),
            b"POST /p?x=1 HTTP/1.1\r\nHost: example.com\r\ncontent-length: 4\r\n\r\nbody"
        );
        assert_eq!(raw_response(&f), Err(ExportError::NoResponse));
        assert_eq!(raw(&f).unwrap(), raw_request(&f).unwrap());

        f.response = Some(Response::make(404, "nope", [("x", "y")]));
        let resp = b"HTTP/1.1 404 Not Found\r\nx: y\r\ncontent-length: 4\r\n\r\nnope".to_vec();
        assert_eq!(raw_response(&f).unwrap(), resp);
        let mut both = raw_request(&f).unwrap();
        both.extend_from_slice(b"\r\n\r\n");
        both.extend_from_slice(&resp);
        assert_eq!(raw(&f).unwrap(), both);

        f.request.raw_content = None;
        assert_eq!(raw_request(&f), Err(ExportError::ContentMissing("request")));
        assert_eq!(raw(&f).unwrap(), resp);
        assert!(matches!(
            export("har", &f),
            Err(ExportError::UnknownFormat(_))
        ));
    }

    #[test]
    fn encoded_bodies_are_exported_decoded() {
        let mut f = flow("POST", "http://example.com/z");
        f.request.set_content("hello");
        f.request.encode("gzip").unwrap();
        assert_ne!(f.request.raw_content.as_deref(), Some(&b"hello"[..]));
        let raw = raw_request(&f).unwrap();
        assert!(
            raw.ends_with(b"\r\n\r\nhello"),
            "{}",
            String::from_utf8_lossy(&raw)
        );
        assert!(
            !String::from_utf8_lossy(&raw)
                .to_ascii_lowercase()
                .contains("content-encoding")
        );
    }
}
