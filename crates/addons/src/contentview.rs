//! Rendering a body for the terminal: pretty-printed JSON, text, or a hex dump for binary
//! data, cut off after a limit. Plain functions over bytes, no flow needed.

use std::fmt::Write as _;

use crate::human::escape_control;

/// Where a rendering stops (mitmproxy cuts content views after 512 lines; waylay also caps
/// the bytes, so one 1 MiB minified line cannot flood the terminal).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cutoff {
    pub(crate) lines: usize,
    pub(crate) bytes: usize,
}

/// The cut-off used at `flow_detail` 3.
pub(crate) const DETAIL3_CUTOFF: Cutoff = Cutoff {
    lines: 512,
    bytes: 64 * 1024,
};

/// A rendered body: its lines (control characters escaped) and whether it was cut.
#[derive(Debug, Default)]
pub(crate) struct Rendered {
    pub(crate) lines: Vec<String>,
    pub(crate) cut: bool,
}

impl Rendered {
    /// Adds a line; returns false (and marks the rendering cut) once `cutoff` is reached.
    fn push(&mut self, line: String, used: &mut usize, cutoff: Option<Cutoff>) -> bool {
        let Some(c) = cutoff else {
            self.lines.push(line);
            return true;
        };
        if self.lines.len() >= c.lines {
            self.cut = true;
            return false;
        }
        let remaining = c.bytes.saturating_sub(*used);
        if line.len() > remaining {
            let mut end = remaining;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            if end > 0 {
                self.lines.push(line[..end].to_owned());
            }
            self.cut = true;
            return false;
        }
        *used += line.len();
        self.lines.push(line);
        true
    }
}

fn looks_like_json(content_type: Option<&str>, text: &str) -> bool {
    match content_type {
        Some(ct) if ct.to_ascii_lowercase().contains("json") => true,
        _ => {
            let t = text.trim_start();
            t.starts_with('{') || t.starts_with('[')
        }
    }
}

/// Renders `content` (already decoded from its `Content-Encoding`). `text` is the body as
/// text when the caller knows its charset; otherwise UTF-8 is tried. With `pretty`, JSON is
/// re-indented.
pub(crate) fn render(
    content: &[u8],
    text: Option<&str>,
    content_type: Option<&str>,
    pretty: bool,
    cutoff: Option<Cutoff>,
) -> Rendered {
    let mut out = Rendered::default();
    if content.is_empty() {
        return out;
    }
    let text = text
        .or_else(|| std::str::from_utf8(content).ok())
        .filter(|t| !t.contains('\0'));
    let mut used = 0;
    match text {
        Some(t) => {
            let pretty_json = if pretty && looks_like_json(content_type, t) {
                serde_json::from_str::<serde_json::Value>(t)
                    .ok()
                    .and_then(|v| serde_json::to_string_pretty(&v).ok())
            } else {
                None
            };
            let t = pretty_json.as_deref().unwrap_or(t);
            for line in t.lines() {
                if !out.push(escape_control(line, true), &mut used, cutoff) {
                    break;
                }
            }
        }
        None => {
            for (i, chunk) in content.chunks(16).enumerate() {
                if !out.push(hex_line(i * 16, chunk), &mut used, cutoff) {
                    break;
                }
            }
        }
    }
    out
}

/// One hex-dump line: offset, 16 bytes in hex, the printable ASCII.
fn hex_line(offset: usize, chunk: &[u8]) -> String {
    let mut line = String::with_capacity(80);
    let _ = write!(line, "{offset:010x} ");
    for i in 0..16 {
        match chunk.get(i) {
            Some(b) => {
                let _ = write!(line, " {b:02x}");
            }
            None => line.push_str("   "),
        }
        if i == 7 {
            line.push(' ');
        }
    }
    line.push_str("  ");
    line.extend(chunk.iter().map(|&b| {
        if b.is_ascii_graphic() || b == b' ' {
            char::from(b)
        } else {
            '.'
        }
    }));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_split_into_lines_and_escaped() {
        let r = render(b"a\nb\x1b[0m\n", None, None, true, None);
        assert_eq!(r.lines, vec!["a", "b\\x1b[0m"]);
        assert!(!r.cut);
    }

    #[test]
    fn json_is_pretty_printed_unless_raw() {
        let r = render(br#"{"a":1}"#, None, Some("application/json"), true, None);
        assert_eq!(r.lines, vec!["{", "  \"a\": 1", "}"]);
        let r = render(br#"{"a":1}"#, None, Some("application/json"), false, None);
        assert_eq!(r.lines, vec![r#"{"a":1}"#]);
    }

    #[test]
    fn binary_is_hex_dumped() {
        let r = render(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR!", None, None, true, None);
        assert_eq!(r.lines.len(), 2);
        assert_eq!(
            r.lines[0],
            "0000000000  89 50 4e 47 0d 0a 1a 0a  00 00 00 0d 49 48 44 52  .PNG........IHDR"
        );
        assert!(r.lines[1].starts_with("0000000010  21    "));
        assert!(r.lines[1].ends_with("  !"));
    }

    #[test]
    fn cutoff_by_lines_and_bytes() {
        let body = "x\n".repeat(1000);
        let r = render(body.as_bytes(), None, None, true, Some(DETAIL3_CUTOFF));
        assert_eq!(r.lines.len(), 512);
        assert!(r.cut);

        let long = "é".repeat(100_000);
        let r = render(long.as_bytes(), None, None, true, Some(DETAIL3_CUTOFF));
        assert_eq!(r.lines.len(), 1);
        assert!(r.lines[0].len() <= DETAIL3_CUTOFF.bytes);
        assert!(r.cut);
    }
}
