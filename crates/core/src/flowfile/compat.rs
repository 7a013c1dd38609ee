//! Older flow format versions, migrated to version 21 where mitmproxy 12's own migration is
//! a matter of renaming and defaulting fields (versions 12 to 20, mitmproxy 7 onwards).
//! Older files (before WebSocket messages moved into their HTTP flow) are refused: migrating
//! them means pairing flows across the file, which mitmproxy 12 does and waylay does not.

use super::state::VERSION;
use super::tnetstring::Value;

/// The oldest version waylay migrates.
pub(crate) const OLDEST: i64 = 12;

/// Brings a flow state to version 21, or says why it cannot.
pub(super) fn migrate(mut d: Value) -> Result<Value, String> {
    let version = match d.get("version") {
        Some(Value::Int(v)) => *v,
        Some(Value::List(parts)) => {
            let shown: Vec<String> = parts
                .iter()
                .map(|p| match p {
                    Value::Int(i) => i.to_string(),
                    _ => "?".into(),
                })
                .collect();
            return Err(format!(
                "flow format version ({}) is too old: waylay reads versions {OLDEST} to {VERSION} \
                 (mitmproxy 7 and later); open and save the file with mitmproxy 12 to convert it",
                shown.join(", ")
            ));
        }
        _ => return Err("the flow has no format version".into()),
    };
    if version > VERSION {
        return Err(format!(
            "flow format version {version} is newer than this waylay reads ({OLDEST} to {VERSION})"
        ));
    }
    if version < OLDEST {
        return Err(format!(
            "flow format version {version} is too old: waylay reads versions {OLDEST} to \
             {VERSION} (mitmproxy 7 and later); open and save the file with mitmproxy 12 to \
             convert it"
        ));
    }
    for from in version..VERSION {
        step(&mut d, from);
        d.set("version", Value::Int(from + 1));
    }
    Ok(d)
}

fn step(d: &mut Value, from: i64) {
    match from {
        12 => {
            let marked = matches!(d.get("marked"), Some(Value::Bool(true)));
            d.set("marked", Value::str(if marked { ":default:" } else { "" }));
        }
        13 => {
            d.set("comment", Value::str(""));
            let req_end = d
                .get("request")
                .and_then(|r| r.get("timestamp_end"))
                .cloned();
            if let Some(resp) = d.get_mut("response")
                && matches!(resp.get("timestamp_start"), Some(Value::Null))
                && let Some(end) = req_end
            {
                let plus_one = match &end {
                    Value::Int(i) => Value::Int(i + 1),
                    Value::Float(f) => Value::Float(f + 1.0),
                    other => other.clone(),
                };
                resp.set("timestamp_start", end);
                resp.set("timestamp_end", plus_one);
            }
        }
        14 => {
            if let Some(Value::List(msgs)) =
                d.get_mut("websocket").and_then(|w| w.get_mut("messages"))
            {
                for m in msgs {
                    if let Value::List(fields) = m {
                        fields.push(Value::Bool(false));
                    }
                }
            }
        }
        15 => {
            let ts = d
                .get("request")
                .or_else(|| d.get("client_conn"))
                .and_then(|x| x.get("timestamp_start"))
                .cloned()
                .unwrap_or(Value::Float(0.0));
            d.set("timestamp_created", ts);
        }
        16 => {
            d.remove("mode");
        }
        17 => {
            if let Some(c) = d.get_mut("client_conn") {
                c.set("proxy_mode", Value::str("regular"));
            }
        }
        18 => {
            if let Some(c) = d.get_mut("client_conn") {
                let addr = c.remove("address").unwrap_or(Value::Null);
                c.set("peername", addr);
                if matches!(c.get("timestamp_start"), None | Some(Value::Null)) {
                    c.set("timestamp_start", Value::Float(0.0));
                }
                c.remove("tls_extensions");
            }
            if let Some(sv) = d.get_mut("server_conn") {
                let ip = sv.remove("ip_address").unwrap_or(Value::Null);
                sv.set("peername", ip);
                let src = sv.remove("source_address").unwrap_or(Value::Null);
                sv.set("sockname", src);
                let via = sv.remove("via2").unwrap_or(Value::Null);
                sv.set("via", via);
                if matches!(sv.get("sni"), Some(Value::Bool(true))) {
                    let host = sv
                        .get("address")
                        .and_then(|a| match a {
                            Value::List(l) => l.first().cloned(),
                            _ => None,
                        })
                        .unwrap_or(Value::Null);
                    sv.set("sni", host);
                }
            }
            for conn in ["client_conn", "server_conn"] {
                if let Some(c) = d.get_mut(conn) {
                    c.remove("tls_established");
                    let cipher = c.remove("cipher_name").unwrap_or(Value::Null);
                    c.set("cipher", cipher);
                    if c.get("transport_protocol").is_none() {
                        c.set("transport_protocol", Value::str("tcp"));
                    }
                }
            }
        }
        19 => {
            for conn in ["client_conn", "server_conn"] {
                if let Some(c) = d.get_mut(conn) {
                    c.remove("state");
                }
            }
        }
        20 => {
            for conn in ["client_conn", "server_conn"] {
                if let Some(c) = d.get_mut(conn)
                    && matches!(c.get("tls_version"), Some(Value::Str(v)) if v == "QUIC")
                {
                    c.set("tls_version", Value::str("QUICv1"));
                }
            }
        }
        _ => {}
    }
}
