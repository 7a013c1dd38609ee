//! HAR 1.2 (HTTP Archive): written from HTTP flows (mitmproxy's `hardump`), read into flows
//! (a HAR file given to `-r`), with the fields and conventions of mitmproxy's own HAR code.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value as Json, json};

use super::FlowFileError;
use crate::flow::{Address, Client, HttpVersion, Request, Response, Server, reason_phrase};
use crate::{Flow, Headers, HttpFlow};

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// Whether `data` looks binary: more than 30% of its first 100 bytes are not printable
/// ASCII (mitmproxy's `is_mostly_bin`).
fn mostly_binary(data: &[u8]) -> bool {
    let head = &data[..data.len().min(100)];
    let bin = head
        .iter()
        .filter(|&&c| !(c == b'\t' || c == b'\n' || c == b'\r' || (32..127).contains(&c)))
        .count();
    bin * 10 > head.len() * 3
}

fn name_values(pairs: impl IntoIterator<Item = (String, String)>) -> Json {
    Json::Array(
        pairs
            .into_iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect(),
    )
}

fn header_list(h: &Headers) -> Json {
    name_values(
        h.fields()
            .iter()
            .map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned())),
    )
}

/// The size of the header fields as sent (`name: value\r\n` per field and the final
/// CRLF), as HAR 1.2 means it. mitmproxy reports the length of a Python `repr` of its
/// headers object instead; waylay reports the bytes on purpose.
fn headers_size(h: &Headers) -> usize {
    h.fields()
        .iter()
        .map(|(n, v)| n.len() + v.len() + 4)
        .sum::<usize>()
        + 2
}

fn response_cookies(r: &Response) -> Json {
    Json::Array(
        r.headers
            .get_all("set-cookie")
            .filter_map(|line| {
                let mut parts = line.split(';');
                let (name, value) = parts.next()?.split_once('=')?;
                let mut c = json!({
                    "name": name.trim(),
                    "value": value.trim(),
                    "path": "/",
                    "domain": "",
                    "httpOnly": false,
                    "secure": false,
                });
                for attr in parts {
                    let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
                    let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
                    match k.as_str() {
                        "path" => c["path"] = v.into(),
                        "domain" => c["domain"] = v.into(),
                        "expires" => c["expires"] = v.into(),
                        "httponly" => c["httpOnly"] = true.into(),
                        "secure" => c["secure"] = true.into(),
                        "samesite" => c["sameSite"] = v.into(),
                        _ => {}
                    }
                }
                Some(c)
            })
            .collect(),
    )
}

fn ms(a: f64, b: f64) -> f64 {
    1000.0 * (b - a)
}

/// One HAR entry for an HTTP flow. `servers_seen` holds the server connections already
/// counted, so a reused connection reports no connect time (as mitmproxy).
pub fn entry(f: &HttpFlow, servers_seen: &mut Vec<crate::flow::ConnectionId>) -> Json {
    // A streamed body kept on disk (`store_streamed_bodies`) is in the HAR like any other:
    // the whole document is built in memory anyway.
    let stored = |m: &crate::flow::Message| {
        m.raw_content.is_none() && m.stored_body.as_ref().is_some_and(|b| b.is_complete())
    };
    if stored(&f.request) || f.response.as_ref().is_some_and(|r| stored(r)) {
        let mut copy = f.clone();
        let load = |m: &mut crate::flow::Message| {
            if m.raw_content.is_none()
                && let Some(b) = m.stored_body.as_ref().filter(|b| b.is_complete())
            {
                m.raw_content = b.read_all().ok().map(Bytes::from);
            }
        };
        load(&mut copy.request);
        if let Some(r) = copy.response.as_mut() {
            load(r);
        }
        copy.request.stored_body = None;
        if let Some(r) = copy.response.as_mut() {
            r.stored_body = None;
        }
        return entry(&copy, servers_seen);
    }
    let (mut connect, mut ssl) = (-1.0, -1.0);
    if let Some(s) = f.server.as_deref()
        && !servers_seen.contains(&s.id)
        && let (Some(start), Some(tcp)) = (s.timestamp_start, s.timestamp_tcp_setup)
    {
        connect = ms(start, tcp);
        if let Some(tls) = s.timestamp_tls_setup {
            ssl = ms(tcp, tls);
        }
        servers_seen.push(s.id);
    }
    let req = &f.request;
    let send = req
        .timestamp_end
        .map_or(0.0, |e| ms(req.timestamp_start, e));
    let (wait, receive) = match (&f.response, req.timestamp_end) {
        (Some(r), Some(req_end)) => (
            ms(req_end, r.timestamp_start),
            r.timestamp_end.map_or(0.0, |e| ms(r.timestamp_start, e)),
        ),
        (Some(r), None) => (
            0.0,
            r.timestamp_end.map_or(0.0, |e| ms(r.timestamp_start, e)),
        ),
        _ => (0.0, 0.0),
    };
    let timings =
        json!({"connect": connect, "ssl": ssl, "send": send, "receive": receive, "wait": wait});
    let time: f64 = [connect, ssl, send, receive, wait]
        .iter()
        .filter(|v| **v >= 0.0)
        .sum();

    let response = match &f.response {
        Some(r) => {
            let raw = r.raw_content.clone().unwrap_or_default();
            let content = r.content().unwrap_or_else(|_| raw.clone());
            let mut body = json!({
                "size": raw.len(),
                "compression": content.len() as i64 - raw.len() as i64,
                "mimeType": r.headers.get("content-type").unwrap_or(""),
            });
            if !content.is_empty() && mostly_binary(&content) {
                body["text"] = b64(&content).into();
                body["encoding"] = "base64".into();
            } else {
                body["text"] = r
                    .text()
                    .unwrap_or_else(|_| String::from_utf8_lossy(&content).into_owned())
                    .into();
            }
            json!({
                "status": r.status_code,
                "statusText": r.reason,
                "httpVersion": r.http_version.as_str(),
                "cookies": response_cookies(r),
                "headers": header_list(&r.headers),
                "content": body,
                "redirectURL": r.headers.get("location").unwrap_or(""),
                "headersSize": headers_size(&r.headers),
                "bodySize": raw.len(),
            })
        }
        None => json!({
            "status": 0,
            "statusText": "",
            "httpVersion": "",
            "headers": [],
            "cookies": [],
            "content": {},
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": -1,
            "_transferSize": 0,
            "_error": f.error.as_ref().map(|e| e.msg.clone()),
        }),
    };
    let url = if req.method == "CONNECT" {
        format!("https://{}/", req.pretty_url())
    } else {
        req.pretty_url()
    };
    let mut e = json!({
        "startedDateTime": iso8601(req.timestamp_start),
        "time": time,
        "request": {
            "method": req.method,
            "url": url,
            "httpVersion": req.http_version.as_str(),
            "cookies": name_values(req.cookies()),
            "headers": header_list(&req.headers),
            "queryString": name_values(req.query()),
            "headersSize": headers_size(&req.headers),
            "bodySize": req.raw_content.as_ref().map_or(0, Bytes::len),
        },
        "response": response,
        "cache": {},
        "timings": timings,
    });
    if matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") {
        let form = req
            .headers
            .get("content-type")
            .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
        let text = req.text().unwrap_or_else(|_| {
            String::from_utf8_lossy(&req.raw_content.clone().unwrap_or_default()).into_owned()
        });
        let params = if form {
            let mut r = Request::new("GET", "http", "h", 80, format!("/?{text}"));
            r.path = compact_str::format_compact!("/?{text}");
            name_values(r.query())
        } else {
            Json::Array(Vec::new())
        };
        e["request"]["postData"] = json!({
            "mimeType": req.headers.get("content-type").unwrap_or(""),
            "text": text,
            "params": params,
        });
    }
    if let Some(peer) = f.server.as_deref().and_then(|s| s.peername) {
        e["serverIPAddress"] = peer.ip().to_string().into();
    }
    if let Some(ws) = &f.websocket {
        let msgs: Vec<Json> = ws
            .messages
            .iter()
            .map(|m| {
                json!({
                    "type": if m.from_client { "send" } else { "receive" },
                    "time": m.timestamp,
                    "opcode": if m.is_text() { 1 } else { 2 },
                    "data": if m.is_text() { String::from_utf8_lossy(&m.content).into_owned() } else { b64(&m.content) },
                })
            })
            .collect();
        e["_resourceType"] = "websocket".into();
        e["_webSocketMessages"] = Json::Array(msgs);
    }
    e
}

/// A HAR 1.2 document of the HTTP flows among `flows` (others are skipped).
pub fn document<'a>(flows: impl IntoIterator<Item = &'a Flow>) -> Json {
    let mut seen = Vec::new();
    let entries: Vec<Json> = flows
        .into_iter()
        .filter_map(|f| match f {
            Flow::Http(h) => Some(entry(h, &mut seen)),
            Flow::Tcp(_) => None,
        })
        .collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": {"name": "waylay", "version": env!("CARGO_PKG_VERSION"), "comment": ""},
            "pages": [],
            "entries": entries,
        }
    })
}

/// `ts` (seconds since the epoch) as ISO 8601 in UTC with microseconds, as Python's
/// `datetime.isoformat()` writes it (`2024-01-02T03:04:05.123456+00:00`).
pub fn iso8601(ts: f64) -> String {
    let micros = (ts * 1e6).round() as i64;
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let base = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac == 0 {
        format!("{base}+00:00")
    } else {
        format!("{base}.{frac:06}+00:00")
    }
}

// Howard Hinnant's days-from-civil algorithms.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.frac][Z|±HH:MM]` into seconds since the epoch.
pub fn parse_iso8601(s: &str) -> Option<f64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', ' '])?;
    let mut dp = date.splitn(3, '-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (time, offset) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let mut tp = time.splitn(3, ':');
    let hh: f64 = tp.next()?.parse().ok()?;
    let mm: f64 = tp.next()?.parse().ok()?;
    let ss: f64 = tp.next().unwrap_or("0").parse().ok()?;
    let off = match offset.as_bytes().first() {
        None | Some(b'Z' | b'z') => 0.0,
        Some(sign) => {
            let (oh, om) = offset[1..].split_once(':').unwrap_or((&offset[1..], "0"));
            let v = oh.parse::<f64>().ok()? * 3600.0 + om.parse::<f64>().ok()? * 60.0;
            if *sign == b'-' { -v } else { v }
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(y, m, d) as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss - off)
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// `ts` as an HTTP date (IMF-fixdate, `Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn format_http_date(ts: f64) -> String {
    let secs = ts.floor() as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[(m - 1) as usize],
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Parses an HTTP date in IMF-fixdate form into seconds since the epoch.
pub fn parse_http_date(s: &str) -> Option<f64> {
    let mut parts = s.split_whitespace();
    let _weekday = parts.next()?;
    let d: u32 = parts.next()?.parse().ok()?;
    let mon = parts.next()?;
    let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as u32 + 1;
    let y: i64 = parts.next()?.parse().ok()?;
    let mut t = parts.next()?.split(':');
    let hh: i64 = t.next()?.parse().ok()?;
    let mm: i64 = t.next()?.parse().ok()?;
    let ss: i64 = t.next()?.parse().ok()?;
    if !parts.next()?.eq_ignore_ascii_case("GMT") || !(1..=31).contains(&d) {
        return None;
    }
    Some((days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss) as f64)
}

fn har_headers(v: Option<&Json>) -> Result<Headers, String> {
    let mut h = Headers::new();
    for item in v.and_then(Json::as_array).into_iter().flatten() {
        let (n, val) = if let Some(o) = item.as_object() {
            (o.get("name"), o.get("value"))
        } else if let Some(a) = item.as_array() {
            (a.first(), a.get(1))
        } else {
            (None, None)
        };
        match (n.and_then(Json::as_str), val.and_then(Json::as_str)) {
            (Some(n), Some(v)) => h.append(n, v.to_owned()),
            _ => return Err("a header is not a {name, value} pair".into()),
        }
    }
    Ok(h)
}

fn har_version(v: Option<&str>) -> HttpVersion {
    match v.unwrap_or("") {
        "http/2.0" | "HTTP/2" | "HTTP/2.0" | "h2" => HttpVersion::Http2,
        "HTTP/3" | "http/3" | "h3" => HttpVersion::Http3,
        "HTTP/1.0" | "http/1.0" => HttpVersion::Http10,
        _ => HttpVersion::Http11,
    }
}

fn entry_to_flow(e: &Json) -> Result<HttpFlow, String> {
    let req = e.get("request").ok_or("an entry has no request")?;
    let started = e
        .get("startedDateTime")
        .and_then(Json::as_str)
        .ok_or("an entry has no startedDateTime")?;
    let start = parse_iso8601(started).ok_or_else(|| format!("bad startedDateTime {started:?}"))?;
    let end = start + e.get("time").and_then(Json::as_f64).unwrap_or(0.0) / 1000.0;
    let method = req
        .get("method")
        .and_then(Json::as_str)
        .ok_or("a request has no method")?;
    let url = req
        .get("url")
        .and_then(Json::as_str)
        .ok_or("a request has no url")?;
    let mut request = Request::from_url(method, url)?;
    request.method = method.into();
    request.headers = har_headers(req.get("headers"))?;
    request.http_version = har_version(req.get("httpVersion").and_then(Json::as_str));
    let body = req
        .get("postData")
        .and_then(|p| p.get("text"))
        .and_then(Json::as_str)
        .unwrap_or("");
    request.raw_content = Some(Bytes::copy_from_slice(body.as_bytes()));
    request.timestamp_start = start;
    request.timestamp_end = Some(end);

    let mut client = Client::new(([127, 0, 0, 1], 0).into(), ([127, 0, 0, 1], 0).into());
    client.timestamp_start = start;
    client.timestamp_end = Some(end);
    let mut flow = HttpFlow::new(Arc::new(client), request);
    flow.live = false;
    flow.timestamp_created = start;
    if let Some(ip) = e.get("serverIPAddress").and_then(Json::as_str) {
        // The URL's port (mitmproxy guesses 80 or 443 from the scheme, losing e.g. 8080).
        let port = flow.request.port;
        let mut s = Server::new(Address::new(ip, port));
        s.peername = ip
            .trim_matches(['[', ']'])
            .parse()
            .ok()
            .map(|ip| std::net::SocketAddr::new(ip, port));
        flow.server = Some(Arc::new(s));
    }
    if let Some(resp) = e.get("response") {
        let status = resp.get("status").and_then(Json::as_u64).unwrap_or(0);
        if status > 0 {
            let status = u16::try_from(status).map_err(|_| format!("bad status {status}"))?;
            let headers = har_headers(resp.get("headers"))?;
            let content = resp.get("content");
            let text = content
                .and_then(|c| c.get("text"))
                .and_then(Json::as_str)
                .unwrap_or("");
            let decoded = if content
                .and_then(|c| c.get("encoding"))
                .and_then(Json::as_str)
                == Some("base64")
            {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(|e| format!("bad base64 body: {e}"))?
            } else {
                text.as_bytes().to_vec()
            };
            let mut r = Response::make(status, Bytes::new(), Vec::<(String, Bytes)>::new());
            r.headers = headers;
            // HAR bodies are decoded; drop the encoding so the headers describe the body.
            r.headers.remove("content-encoding");
            r.raw_content = Some(Bytes::from(decoded));
            r.reason = reason_phrase(status).into();
            r.http_version = har_version(resp.get("httpVersion").and_then(Json::as_str));
            r.timestamp_start = start;
            r.timestamp_end = Some(end);
            flow.response = Some(r);
        } else if let Some(msg) = resp.get("_error").and_then(Json::as_str) {
            flow.error = Some(crate::FlowError {
                msg: msg.to_owned(),
                timestamp: end,
            });
        }
    }
    Ok(flow)
}

/// The flows of a HAR document (UTF-8 JSON).
pub fn read(text: &[u8]) -> Result<Vec<Flow>, FlowFileError> {
    let doc: Json = serde_json::from_slice(text).map_err(|e| FlowFileError::Har(e.to_string()))?;
    let entries = doc
        .get("log")
        .and_then(|l| l.get("entries"))
        .and_then(Json::as_array)
        .ok_or_else(|| FlowFileError::Har("no log.entries".into()))?;
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            entry_to_flow(e)
                .map(|f| Flow::Http(Box::new(f)))
                .map_err(|m| FlowFileError::Har(format!("entry {}: {m}", i + 1)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_round_trip() {
        for ts in [0.0, 946_684_800.5, 1_700_000_000.123_456, 4_102_444_799.0] {
            let s = iso8601(ts);
            let back = parse_iso8601(&s).unwrap();
            assert!((back - ts).abs() < 1e-5, "{ts} {s} {back}");
        }
        assert_eq!(iso8601(946_684_800.0), "2000-01-01T00:00:00+00:00");
        assert_eq!(
            iso8601(1_000_000_000.25),
            "2001-09-09T01:46:40.250000+00:00"
        );
        assert_eq!(
            parse_iso8601("2001-09-09T03:46:40+02:00"),
            Some(1_000_000_000.0)
        );
        assert_eq!(parse_iso8601("2001-09-09T01:46:40Z"), Some(1_000_000_000.0));
        assert_eq!(parse_iso8601("garbage"), None);
    }

    #[test]
    fn http_dates_round_trip() {
        assert_eq!(
            format_http_date(784_111_777.0),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777.0)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn binary_detection() {
        assert!(!mostly_binary(b"hello world\n"));
        assert!(mostly_binary(&[0u8, 1, 2, 3, 0xff, 0xfe]));
    }
}
