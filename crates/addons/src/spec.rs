//! The option syntax the rewriting addons share: `[SEP filter] SEP subject SEP replacement`,
//! where `SEP` is whatever character the option starts with (`/~q/Host/example.org`,
//! `|~d x|a/b|c`), plus the two pieces of Python syntax mitmproxy users write inside it:
//! backslash escapes in header names and values, and `\1` / `\g<name>` group references in
//! replacements.

/// A spec split at its separator: the filter text (absent means "every flow"), the subject
/// and the replacement, unparsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RawSpec<'a> {
    pub(crate) filter: Option<&'a str>,
    pub(crate) subject: &'a str,
    pub(crate) replacement: &'a str,
}

/// Splits `[SEP filter] SEP subject SEP replacement` at the separator `SEP`, the option's
/// first character. With two parts there is no filter; the replacement is everything after
/// the third separator, separators included.
pub(crate) fn split_spec(option: &str) -> Result<RawSpec<'_>, String> {
    let mut chars = option.chars();
    let Some(sep) = chars.next() else {
        return Err("empty; expected [SEP filter] SEP subject SEP replacement".into());
    };
    let rest = chars.as_str();
    let parts: Vec<&str> = rest.splitn(3, sep).collect();
    match parts.as_slice() {
        [subject, replacement] => Ok(RawSpec {
            filter: None,
            subject,
            replacement,
        }),
        [filter, subject, replacement] => Ok(RawSpec {
            filter: Some(filter),
            subject,
            replacement,
        }),
        _ => Err(format!(
            "expected 2 or 3 parts separated by {sep:?} (the first character), found {}",
            parts.len()
        )),
    }
}

/// Decodes Python's backslash escapes (`\n`, `\t`, `\\`, `\xHH`, octal `\NNN`, ...) as
/// mitmproxy does for header names and values; an unknown escape stays as written.
pub(crate) fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let Some(&c) = b.get(i + 1) else {
            return Err("a trailing \\ escapes nothing".into());
        };
        i += 2;
        match c {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'x' => {
                let hex = b
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(v) = hex else {
                    return Err(format!("invalid \\x escape at position {}", i - 2));
                };
                out.push(v);
                i += 2;
            }
            b'0'..=b'7' => {
                let mut v = u32::from(c - b'0');
                let mut n = 1;
                while n < 3 && matches!(b.get(i), Some(b'0'..=b'7')) {
                    v = v * 8 + u32::from(b[i] - b'0');
                    i += 1;
                    n += 1;
                }
                // Python keeps the low byte of an octal escape above \377.
                out.push((v & 0xff) as u8);
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// A regex error on one line (the `regex` crate draws a multi-line diagram).
pub(crate) fn regex_error(e: &regex::Error) -> String {
    match e {
        regex::Error::Syntax(s) => s
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("error:"))
            .map(|l| l.trim_start_matches("error:").trim().to_owned())
            .next()
            .unwrap_or_else(|| s.replace('\n', " ")),
        other => other.to_string().replace('\n', " "),
    }
}

/// One piece of a Python `re.sub` replacement template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Group(usize),
    Named(String),
}

/// A Python-style replacement template (`https://\1.example.com/\g<rest>`), checked against
/// the regex it goes with and expanded for each match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text` as `re.sub` does: `\1`..`\99` and `\g<N>` / `\g<name>` refer to groups,
    /// `\n`, `\t`, `\\` and the other C escapes stand for their characters, any other
    /// backslash before an ASCII letter is an error, and everything else is literal. Group
    /// references must exist in `re`.
    pub(crate) fn parse(text: &str, re: &regex::Regex) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        let flush = |lit: &mut String, pieces: &mut Vec<Piece>| {
            if !lit.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(lit)));
            }
        };
        let groups = re.captures_len();
        let check_group = |n: usize| {
            if n < groups {
                Ok(n)
            } else {
                Err(format!("invalid group reference {n} in {text:?}"))
            }
        };
        while let Some((at, c)) = chars.next() {
            if c != '\\' {
                lit.push(c);
                continue;
            }
            let Some((_, e)) = chars.next() else {
                return Err(format!("bad escape (end of pattern) in {text:?}"));
            };
            match e {
                '0'..='9' => {
                    let mut n = e.to_digit(10).unwrap_or(0) as usize;
                    if let Some((_, d)) = chars.peek().copied()
                        && let Some(d) = d.to_digit(10)
                    {
                        n = n * 10 + d as usize;
                        chars.next();
                    }
                    if n == 0 {
                        // Python reads `\0` as an octal escape (NUL).
                        lit.push('\0');
                        continue;
                    }
                    flush(&mut lit, &mut pieces);
                    pieces.push(Piece::Group(check_group(n)?));
                }
                'g' => {
                    let rest = &text[at + 2..];
                    let name = rest
                        .strip_prefix('<')
                        .and_then(|r| r.split_once('>'))
                        .map(|(name, _)| name)
                        .ok_or_else(|| format!("missing group name after \\g in {text:?}"))?;
                    for _ in 0..name.chars().count() + 2 {
                        chars.next();
                    }
                    flush(&mut lit, &mut pieces);
                    if let Ok(n) = name.parse::<usize>() {
                        pieces.push(Piece::Group(check_group(n)?));
                    } else if re.capture_names().flatten().any(|g| g == name) {
                        pieces.push(Piece::Named(name.to_owned()));
                    } else {
                        return Err(format!("unknown group name {name:?} in {text:?}"));
                    }
                }
                'n' => lit.push('\n'),
                'r' => lit.push('\r'),
                't' => lit.push('\t'),
                'a' => lit.push('\x07'),
                'b' => lit.push('\x08'),
                'f' => lit.push('\x0c'),
                'v' => lit.push('\x0b'),
                '\\' => lit.push('\\'),
                e if e.is_ascii_alphabetic() => {
                    return Err(format!("bad escape \\{e} in {text:?}"));
                }
                e => {
                    lit.push('\\');
                    lit.push(e);
                }
            }
        }
        flush(&mut lit, &mut pieces);
        Ok(Self { pieces })
    }

    /// The replacement for one match.
    fn expand(&self, caps: &regex::Captures<'_>, out: &mut String) {
        for p in &self.pieces {
            match p {
                Piece::Literal(s) => out.push_str(s),
                Piece::Group(n) => out.push_str(caps.get(*n).map_or("", |m| m.as_str())),
                Piece::Named(n) => out.push_str(caps.name(n).map_or("", |m| m.as_str())),
            }
        }
    }

    /// Every match of `re` in `haystack` replaced, as `re.sub(re, template, haystack)`.
    pub(crate) fn replace_all(&self, re: &regex::Regex, haystack: &str) -> String {
        let mut out = String::with_capacity(haystack.len());
        let mut last = 0;
        for caps in re.captures_iter(haystack) {
            let Some(m) = caps.get(0) else { continue };
            out.push_str(&haystack[last..m.start()]);
            self.expand(&caps, &mut out);
            last = m.end();
        }
        out.push_str(&haystack[last..]);
        out
    }
}

/// `configure` for a rule addon: when `option` changed, every value of it parsed by `parse`
/// (`None` when it did not change), or the refusal naming the option and quoting the value.
pub(crate) fn parse_rules<R>(
    cfg: &waylay_core::hooks::Configure,
    option: &str,
    parse: fn(&str) -> Result<R, String>,
) -> Result<Option<Vec<R>>, waylay_core::OptionsError> {
    if !cfg.changed(option) {
        return Ok(None);
    }
    cfg.options
        .seq(option)
        .iter()
        .map(|value| {
            parse(value).map_err(|e| {
                waylay_core::OptionsError::rejected(option, format!("cannot parse {value:?}: {e}"))
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_or_three_parts_with_any_separator() {
        assert_eq!(
            split_spec("/~q/Host/example.org").unwrap(),
            RawSpec {
                filter: Some("~q"),
                subject: "Host",
                replacement: "example.org"
            }
        );
        assert_eq!(
            split_spec("|a/b|c/d").unwrap(),
            RawSpec {
                filter: None,
                subject: "a/b",
                replacement: "c/d"
            }
        );
        assert_eq!(
            split_spec(":~d x:Host:a:b:c").unwrap(),
            RawSpec {
                filter: Some("~d x"),
                subject: "Host",
                replacement: "a:b:c"
            }
        );
        assert_eq!(
            split_spec("éaébéc").unwrap(),
            RawSpec {
                filter: Some("a"),
                subject: "b",
                replacement: "c"
            }
        );
        assert!(split_spec("").is_err());
        assert!(split_spec("/only").unwrap_err().contains("found 1"));
        assert_eq!(
            split_spec("/h/").unwrap(),
            RawSpec {
                filter: None,
                subject: "h",
                replacement: ""
            }
        );
    }

    #[test]
    fn python_escapes() {
        assert_eq!(unescape(r"a\nb\t\\\x41\101\q").unwrap(), b"a\nb\t\\AA\\q");
        assert_eq!(unescape("ü").unwrap(), "ü".as_bytes());
        assert!(unescape(r"\x4").is_err());
        assert!(unescape("a\\").is_err());
    }

    #[test]
    fn templates_expand_groups_as_python_does() {
        let re = regex::Regex::new(r"https?://(?P<host>[^/]+)/(\w+)").unwrap();
        let t = Template::parse(r"http://\g<host>.local/\2-\g<2>\\\n$1", &re).unwrap();
        assert_eq!(
            t.replace_all(&re, "see https://a.com/xyz/rest"),
            "see http://a.com.local/xyz-xyz\\\n$1/rest"
        );
        assert!(
            Template::parse(r"\3", &re)
                .unwrap_err()
                .contains("group reference 3")
        );
        assert!(
            Template::parse(r"\g<nope>", &re)
                .unwrap_err()
                .contains("nope")
        );
        assert!(
            Template::parse(r"\q", &re)
                .unwrap_err()
                .contains("bad escape")
        );
        assert!(Template::parse(r"\g", &re).is_err());
    }

    #[test]
    fn regex_errors_are_one_line() {
        let e = regex::Regex::new(&String::from("(")).unwrap_err();
        let line = regex_error(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("unclosed"), "{line}");
    }

    proptest! {
        #[test]
        fn split_never_panics_and_round_trips(
            sep in prop::char::any().prop_filter("not in parts", |c| !"abc/~ .".contains(*c)),
            filter in "[a-c~ ./]{0,8}",
            subject in "[a-c~ ./]{0,8}",
            replacement in "[a-c~ ./]{0,8}",
        ) {
            let option = format!("{sep}{filter}{sep}{subject}{sep}{replacement}");
            let spec = split_spec(&option).unwrap();
            prop_assert_eq!(spec.filter, Some(filter.as_str()));
            prop_assert_eq!(spec.subject, subject.as_str());
            prop_assert_eq!(spec.replacement, replacement.as_str());
            let option = format!("{sep}{subject}{sep}{replacement}");
            let spec = split_spec(&option).unwrap();
            prop_assert_eq!(spec.filter, None);
            prop_assert_eq!(spec.subject, subject.as_str());
        }

        #[test]
        fn parsers_never_panic(s in ".{0,40}") {
            let _ = split_spec(&s);
            let _ = unescape(&s);
            let re = regex::Regex::new("(a)(?P<n>b)").unwrap();
            let _ = Template::parse(&s, &re).map(|t| t.replace_all(&re, "xabyab"));
        }
    }
}
