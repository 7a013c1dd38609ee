//! Python `re` syntax, as mitmproxy's filters take it, translated to the `regex` crate's.
//!
//! mitmproxy compiles every filter argument with Python's `re` (always case-insensitive).
//! Python's syntax and the `regex` crate's differ in places where the same text means
//! different things (`\Z`, `$`, `\<`, `[[:alpha:]]`, `[a&&b]`, `{,3}`, a literal `{`...).
//! Translating through a parser written after CPython's `re/_parser.py` rules makes
//! waylay accept exactly what Python accepts, with the same meaning, except for features
//! the `regex` crate does not have (look-around, backreferences, conditionals, atomic
//! groups, possessive quantifiers, `\N{name}`): those are refused with a clear message.
//!
//! Every literal is emitted as an escape, and capturing groups become non-capturing
//! (filters only ask whether there is a match).

use std::fmt::Write as _;

/// What the pattern is matched against: text (`str` patterns) or bytes (`bytes` patterns,
/// whose classes, case folding and `.` work on single bytes as Python's do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Str,
    Bytes,
}

/// Flags the operator compiles its pattern with (case-insensitivity is always on).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct BaseFlags {
    pub(super) multiline: bool,
    pub(super) dotall: bool,
}

const FLAG_I: u8 = 1;
const FLAG_M: u8 = 2;
const FLAG_S: u8 = 4;
const FLAG_X: u8 = 8;
const FLAG_A: u8 = 16;
const FLAG_U: u8 = 32;
const FLAG_L: u8 = 64;
const TYPE_FLAGS: u8 = FLAG_A | FLAG_U | FLAG_L;

fn flag_of(c: u32) -> Option<u8> {
    Some(match char::from_u32(c)? {
        'i' => FLAG_I,
        'm' => FLAG_M,
        's' => FLAG_S,
        'x' => FLAG_X,
        'a' => FLAG_A,
        'u' => FLAG_U,
        'L' => FLAG_L,
        // `t` (template) is deprecated in Python and cannot be honoured here.
        't' => 0x80,
        _ => return None,
    })
}

/// A translation failure: Python's message where Python fails too, or why waylay cannot
/// run a pattern Python accepts.
pub(super) type Error = String;

/// The kind of the last item of a sequence, for Python's "nothing to repeat" and
/// "multiple repeat" rules.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A zero-width position (`^`, `$`, `\b`, `\A`...): Python refuses to repeat it.
    At,
    Repeat,
    Other,
}

struct Item {
    text: String,
    kind: Kind,
}

/// Inline flags: `(?imsx)` for the whole pattern, or `(?i-m:...)` for a group.
enum Flags {
    Global(u8),
    Scoped(u8, u8),
}

/// One element of a character class.
enum ClassItem {
    Lit(u32),
    Range(u32, u32),
    /// `\d`, `\D`, `\s`, `\S`, `\w`, `\W` (as the letter).
    Cat(char),
}

struct Translator {
    chars: Vec<u32>,
    pos: usize,
    mode: Mode,
    /// Global flags set by `(?...)` at the start of the pattern.
    global: u8,
    /// Opened capturing groups so far, plus one (Python counts group 0).
    groups: usize,
    names: Vec<String>,
    /// Translating the variant used on an empty text (where `\B` cannot match).
    for_empty: bool,
    saw_non_boundary: bool,
    /// Groups open around the current position (the translator recurses into each).
    depth: usize,
}

/// The deepest group nesting translated (the regex crate refuses deeper than 250 anyway).
const MAX_DEPTH: usize = 200;

const MAXREPEAT: u64 = u32::MAX as u64;

fn is_digit(c: u32) -> bool {
    (u32::from(b'0')..=u32::from(b'9')).contains(&c)
}

fn is_oct(c: u32) -> bool {
    (u32::from(b'0')..=u32::from(b'7')).contains(&c)
}

fn is_hex(c: u32) -> bool {
    char::from_u32(c).is_some_and(|c| c.is_ascii_hexdigit())
}

fn ch(c: u32) -> String {
    char::from_u32(c).map_or_else(|| format!("\\x{c:x}"), |c| c.to_string())
}

/// Scoped state while translating: the flags in force inside the current group.
#[derive(Clone, Copy)]
struct Scope {
    verbose: bool,
    multiline: bool,
    ascii: bool,
}

impl Translator {
    fn peek(&self) -> Option<u32> {
        self.chars.get(self.pos).copied()
    }

    fn peek_is(&self, c: char) -> bool {
        self.peek() == Some(c as u32)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek_is(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn next(&mut self) -> Option<u32> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn lit(&self, c: u32) -> Result<String, Error> {
        if char::from_u32(c).is_some_and(|c| c.is_ascii_alphanumeric()) {
            return Ok(ch(c));
        }
        if self.mode == Mode::Str && char::from_u32(c).is_none() {
            return Err(format!(
                "a lone surrogate (U+{c:04X}) cannot be matched in UTF-8 text"
            ));
        }
        if self.mode == Mode::Bytes {
            // With Unicode off, `\xHH` is the byte itself (`\x{HH}` would be a code point).
            return Ok(format!("\\x{c:02X}"));
        }
        Ok(format!("\\x{{{c:X}}}"))
    }

    fn category(&self, c: char, ascii: bool) -> String {
        if self.mode == Mode::Str && ascii {
            match c {
                'd' => "[0-9]".into(),
                'D' => "[^0-9]".into(),
                's' => "[\\t\\n\\x0B\\x0C\\r ]".into(),
                'S' => "[^\\t\\n\\x0B\\x0C\\r ]".into(),
                'w' => "[0-9A-Za-z_]".into(),
                _ => "[^0-9A-Za-z_]".into(),
            }
        } else {
            format!("\\{c}")
        }
    }

    fn class_category(&self, c: char, ascii: bool) -> String {
        if self.mode == Mode::Str && ascii {
            match c {
                'd' => "0-9".into(),
                's' => "\\t\\n\\x0B\\x0C\\r ".into(),
                'w' => "0-9A-Za-z_".into(),
                // A negated ASCII set inside a class: use the POSIX-style negated form.
                'D' => "[^0-9]".into(),
                'S' => "[^\\t\\n\\x0B\\x0C\\r ]".into(),
                _ => "[^0-9A-Za-z_]".into(),
            }
        } else {
            format!("\\{c}")
        }
    }

    fn hex_escape(&mut self, n: usize, what: char) -> Result<u32, Error> {
        let start = self.pos;
        let mut v: u32 = 0;
        for _ in 0..n {
            match self.peek() {
                Some(c) if is_hex(c) => {
                    v = v.wrapping_mul(16)
                        + char::from_u32(c).and_then(|c| c.to_digit(16)).unwrap_or(0);
                    self.pos += 1;
                }
                _ => {
                    let got: String = self.chars[start..self.pos].iter().map(|&c| ch(c)).collect();
                    return Err(format!("incomplete escape \\{what}{got}"));
                }
            }
        }
        if what == 'U' && v > 0x10FFFF {
            let got: String = self.chars[start..self.pos].iter().map(|&c| ch(c)).collect();
            return Err(format!("bad escape \\U{got}"));
        }
        Ok(v)
    }

    /// An escape inside a class: a literal or a category.
    fn class_escape(&mut self, c: u32) -> Result<ClassItem, Error> {
        let Some(cc) = char::from_u32(c) else {
            return Ok(ClassItem::Lit(c));
        };
        Ok(match cc {
            'a' => ClassItem::Lit(7),
            'b' => ClassItem::Lit(8),
            'f' => ClassItem::Lit(12),
            'n' => ClassItem::Lit(10),
            'r' => ClassItem::Lit(13),
            't' => ClassItem::Lit(9),
            'v' => ClassItem::Lit(11),
            '\\' => ClassItem::Lit(92),
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => ClassItem::Cat(cc),
            'x' => ClassItem::Lit(self.hex_escape(2, 'x')?),
            'u' if self.mode == Mode::Str => ClassItem::Lit(self.hex_escape(4, 'u')?),
            'U' if self.mode == Mode::Str => ClassItem::Lit(self.hex_escape(8, 'U')?),
            'N' if self.mode == Mode::Str => {
                return Err("named Unicode escapes (\\N{...}) are not supported".into());
            }
            '0'..='7' => {
                let mut v = c - u32::from(b'0');
                for _ in 0..2 {
                    match self.peek() {
                        Some(d) if is_oct(d) => {
                            v = v * 8 + (d - u32::from(b'0'));
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                if v > 0o377 {
                    return Err(format!(
                        "octal escape value \\{v:o} outside of range 0-0o377"
                    ));
                }
                ClassItem::Lit(v)
            }
            '8' | '9' => return Err(format!("bad escape \\{cc}")),
            _ if cc.is_ascii_alphabetic() => return Err(format!("bad escape \\{cc}")),
            _ => ClassItem::Lit(c),
        })
    }

    fn class(&mut self, scope: Scope) -> Result<Item, Error> {
        let negate = self.eat('^');
        let mut items: Vec<ClassItem> = Vec::new();
        loop {
            let Some(this) = self.next() else {
                return Err("unterminated character set".into());
            };
            if this == u32::from(b']') && !items.is_empty() {
                break;
            }
            let code1 = if this == u32::from(b'\\') {
                let Some(e) = self.next() else {
                    return Err("bad escape (end of pattern)".into());
                };
                self.class_escape(e)?
            } else {
                ClassItem::Lit(this)
            };
            if self.eat('-') {
                let Some(that) = self.next() else {
                    return Err("unterminated character set".into());
                };
                if that == u32::from(b']') {
                    items.push(code1);
                    items.push(ClassItem::Lit(u32::from(b'-')));
                    break;
                }
                let code2 = if that == u32::from(b'\\') {
                    let Some(e) = self.next() else {
                        return Err("bad escape (end of pattern)".into());
                    };
                    self.class_escape(e)?
                } else {
                    ClassItem::Lit(that)
                };
                match (code1, code2) {
                    (ClassItem::Lit(lo), ClassItem::Lit(hi)) if lo <= hi => {
                        items.push(ClassItem::Range(lo, hi));
                    }
                    _ => return Err("bad character range".into()),
                }
            } else {
                items.push(code1);
            }
        }
        let mut out = String::from(if negate { "[^" } else { "[" });
        for it in &items {
            match *it {
                ClassItem::Lit(c) => out.push_str(&self.lit(c)?),
                ClassItem::Range(lo, hi) => {
                    out.push_str(&self.lit(lo)?);
                    out.push('-');
                    out.push_str(&self.lit(hi)?);
                }
                ClassItem::Cat(c) => out.push_str(&self.class_category(c, scope.ascii)),
            }
        }
        out.push(']');
        Ok(Item {
            text: out,
            kind: Kind::Other,
        })
    }

    /// An escape outside a class.
    fn escape(&mut self, scope: Scope) -> Result<Item, Error> {
        let Some(c) = self.next() else {
            return Err("bad escape (end of pattern)".into());
        };
        let other = |text: String| Item {
            text,
            kind: Kind::Other,
        };
        let at = |text: &str| Item {
            text: text.into(),
            kind: Kind::At,
        };
        let Some(cc) = char::from_u32(c) else {
            return Ok(other(self.lit(c)?));
        };
        Ok(match cc {
            'A' => at("\\A"),
            'Z' => at("\\z"),
            'B' if self.for_empty => {
                // Python's `\B` never matches in an empty text; the regex crate's does.
                self.saw_non_boundary = true;
                at(if self.mode == Mode::Bytes {
                    "(?-u:[^\\x00-\\xFF])"
                } else {
                    "[^\\x{0}-\\x{10FFFF}]"
                })
            }
            'B' => {
                self.saw_non_boundary = true;
                at(if scope.ascii && self.mode == Mode::Str {
                    "(?-u:\\B)"
                } else {
                    "\\B"
                })
            }
            'b' if scope.ascii && self.mode == Mode::Str => at("(?-u:\\b)"),
            'b' => at("\\b"),
            'd' | 'D' | 's' | 'S' | 'w' | 'W' => other(self.category(cc, scope.ascii)),
            'a' => other(self.lit(7)?),
            'f' => other(self.lit(12)?),
            'n' => other(self.lit(10)?),
            'r' => other(self.lit(13)?),
            't' => other(self.lit(9)?),
            'v' => other(self.lit(11)?),
            '\\' => other(self.lit(92)?),
            'x' => {
                let v = self.hex_escape(2, 'x')?;
                other(self.lit(v)?)
            }
            'u' if self.mode == Mode::Str => {
                let v = self.hex_escape(4, 'u')?;
                other(self.lit(v)?)
            }
            'U' if self.mode == Mode::Str => {
                let v = self.hex_escape(8, 'U')?;
                other(self.lit(v)?)
            }
            'N' if self.mode == Mode::Str => {
                return Err("named Unicode escapes (\\N{...}) are not supported".into());
            }
            '0' => {
                let mut v = 0;
                for _ in 0..2 {
                    match self.peek() {
                        Some(d) if is_oct(d) => {
                            v = v * 8 + (d - u32::from(b'0'));
                            self.pos += 1;
                        }
                        _ => break,
                    }
                }
                other(self.lit(v)?)
            }
            '1'..='9' => {
                let mut digits = vec![c];
                if let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                    self.pos += 1;
                    digits.push(d);
                    if is_oct(digits[0]) && is_oct(digits[1]) && self.peek().is_some_and(is_oct) {
                        let d3 = self.next().unwrap_or(u32::from(b'0'));
                        let v = (digits[0] - 48) * 64 + (digits[1] - 48) * 8 + (d3 - 48);
                        if v > 0o377 {
                            return Err(format!(
                                "octal escape value \\{v:o} outside of range 0-0o377"
                            ));
                        }
                        return Ok(other(self.lit(v)?));
                    }
                }
                let group = digits
                    .iter()
                    .fold(0usize, |a, &d| a * 10 + (d as usize - 48));
                if group < self.groups {
                    return Err("backreferences are not supported".into());
                }
                return Err(format!("invalid group reference {group}"));
            }
            _ if cc.is_ascii_alphabetic() => return Err(format!("bad escape \\{cc}")),
            _ => other(self.lit(c)?),
        })
    }

    /// `(?flags)` or `(?flags-flags:`; `first` is the first flag character, already read.
    /// Returns `Global(on)` for global flags, else the scoped (on, off) flags.
    fn flags(&mut self, first: u32) -> Result<Flags, Error> {
        let mut add: u8 = 0;
        let mut del: u8 = 0;
        let mut c = first;
        if c != u32::from(b'-') {
            loop {
                let Some(flag) = flag_of(c) else {
                    return Err("unknown flag".into());
                };
                if self.mode == Mode::Str && flag == FLAG_L {
                    return Err("bad inline flags: cannot use 'L' flag with a str pattern".into());
                }
                if self.mode == Mode::Bytes && flag == FLAG_U {
                    return Err("bad inline flags: cannot use 'u' flag with a bytes pattern".into());
                }
                add |= flag;
                if flag & TYPE_FLAGS != 0 && add & TYPE_FLAGS != flag {
                    return Err("bad inline flags: flags 'a', 'u' and 'L' are incompatible".into());
                }
                let Some(n) = self.next() else {
                    return Err("missing -, : or )".into());
                };
                c = n;
                if [u32::from(b')'), u32::from(b'-'), u32::from(b':')].contains(&c) {
                    break;
                }
                if flag_of(c).is_none() {
                    return Err(if char::from_u32(c).is_some_and(char::is_alphabetic) {
                        "unknown flag".into()
                    } else {
                        "missing -, : or )".into()
                    });
                }
            }
        }
        if c == u32::from(b')') {
            if add & 0x80 != 0 {
                return Err("the template flag (?t) is not supported".into());
            }
            return Ok(Flags::Global(add));
        }
        if add & 0x80 != 0 {
            return Err("bad inline flags: cannot turn on global flag".into());
        }
        if c == u32::from(b'-') {
            let Some(n) = self.next() else {
                return Err("missing flag".into());
            };
            c = n;
            if flag_of(c).is_none() {
                return Err(if char::from_u32(c).is_some_and(char::is_alphabetic) {
                    "unknown flag".into()
                } else {
                    "missing flag".into()
                });
            }
            loop {
                let flag = flag_of(c).unwrap_or(0);
                if flag & TYPE_FLAGS != 0 {
                    return Err("bad inline flags: cannot turn off flags 'a', 'u' and 'L'".into());
                }
                del |= flag;
                let Some(n) = self.next() else {
                    return Err("missing :".into());
                };
                c = n;
                if c == u32::from(b':') {
                    break;
                }
                if flag_of(c).is_none() {
                    return Err(if char::from_u32(c).is_some_and(char::is_alphabetic) {
                        "unknown flag".into()
                    } else {
                        "missing :".into()
                    });
                }
            }
        }
        if del & 0x80 != 0 {
            return Err("bad inline flags: cannot turn off global flag".into());
        }
        if add & del != 0 {
            return Err("bad inline flags: flag turned on and off".into());
        }
        Ok(Flags::Scoped(add, del))
    }

    fn group_name(&mut self, terminator: char) -> Result<String, Error> {
        let mut name = String::new();
        loop {
            let Some(c) = self.next() else {
                return Err(if name.is_empty() {
                    "missing group name".into()
                } else {
                    format!("missing {terminator}, unterminated name")
                });
            };
            if c == terminator as u32 {
                if name.is_empty() {
                    return Err("missing group name".into());
                }
                break;
            }
            name.push_str(&ch(c));
        }
        let mut chars = name.chars();
        let ident = chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric());
        if !ident || (self.mode == Mode::Bytes && !name.is_ascii()) {
            return Err(format!("bad character in group name {name:?}"));
        }
        Ok(name)
    }

    /// An alternation, up to (not including) a `)` or the end.
    fn sub(&mut self, scope: Scope, top: bool) -> Result<String, Error> {
        let mut out = String::new();
        let mut first = top;
        let mut scope = scope;
        loop {
            out.push_str(&self.seq(&mut scope, first)?);
            if !self.eat('|') {
                break;
            }
            out.push('|');
            first = false;
        }
        Ok(out)
    }

    /// A sequence of items, up to a `|`, a `)` or the end.
    fn seq(&mut self, scope: &mut Scope, first: bool) -> Result<String, Error> {
        let mut items: Vec<Item> = Vec::new();
        while let Some(this) = self.peek() {
            if this == u32::from(b'|') || this == u32::from(b')') {
                break;
            }
            self.pos += 1;
            if scope.verbose {
                if matches!(
                    char::from_u32(this),
                    Some(' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
                ) {
                    continue;
                }
                if this == u32::from(b'#') {
                    while let Some(c) = self.next() {
                        if c == u32::from(b'\n') {
                            break;
                        }
                    }
                    continue;
                }
            }
            let special = char::from_u32(this).filter(|c| ".\\[{()*+?^$|".contains(*c));
            let Some(sc) = special else {
                items.push(Item {
                    text: self.lit(this)?,
                    kind: Kind::Other,
                });
                continue;
            };
            match sc {
                '\\' => items.push(self.escape(*scope)?),
                '[' => items.push(self.class(*scope)?),
                '.' => items.push(Item {
                    text: ".".into(),
                    kind: Kind::Other,
                }),
                '^' => items.push(Item {
                    text: "^".into(),
                    kind: Kind::At,
                }),
                '$' => items.push(Item {
                    text: if scope.multiline {
                        "$".into()
                    } else {
                        // Python's `$` also matches before a newline ending the text.
                        "(?:\\n?\\z)".into()
                    },
                    kind: Kind::At,
                }),
                '*' | '+' | '?' | '{' => {
                    let here = self.pos;
                    let (min, max): (u64, Option<u64>) = match sc {
                        '*' => (0, None),
                        '+' => (1, None),
                        '?' => (0, Some(1)),
                        _ => {
                            if self.peek_is('}') {
                                items.push(Item {
                                    text: self.lit(u32::from(b'{'))?,
                                    kind: Kind::Other,
                                });
                                continue;
                            }
                            let mut lo = String::new();
                            let mut hi = String::new();
                            while let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                                lo.push_str(&ch(d));
                                self.pos += 1;
                            }
                            let comma = self.eat(',');
                            if comma {
                                while let Some(d) = self.peek().filter(|&d| is_digit(d)) {
                                    hi.push_str(&ch(d));
                                    self.pos += 1;
                                }
                            } else {
                                hi = lo.clone();
                            }
                            if !self.eat('}') {
                                self.pos = here;
                                items.push(Item {
                                    text: self.lit(u32::from(b'{'))?,
                                    kind: Kind::Other,
                                });
                                continue;
                            }
                            let parse = |s: &str| -> Result<u64, Error> {
                                let v = s.parse::<u64>().unwrap_or(u64::MAX);
                                if v >= MAXREPEAT {
                                    return Err("the repetition number is too large".into());
                                }
                                Ok(v)
                            };
                            let min = if lo.is_empty() { 0 } else { parse(&lo)? };
                            let max = if hi.is_empty() {
                                None
                            } else {
                                Some(parse(&hi)?)
                            };
                            if let Some(max) = max
                                && max < min
                            {
                                return Err("min repeat greater than max repeat".into());
                            }
                            (min, max)
                        }
                    };
                    let Some(last) = items.last_mut() else {
                        return Err("nothing to repeat".into());
                    };
                    match last.kind {
                        Kind::At => return Err("nothing to repeat".into()),
                        Kind::Repeat => return Err("multiple repeat".into()),
                        Kind::Other => {}
                    }
                    let mut q = match (min, max) {
                        (0, None) => "*".to_owned(),
                        (1, None) => "+".to_owned(),
                        (0, Some(1)) => "?".to_owned(),
                        (m, None) => format!("{{{m},}}"),
                        (m, Some(n)) if m == n => format!("{{{m}}}"),
                        (m, Some(n)) => format!("{{{m},{n}}}"),
                    };
                    if self.eat('?') {
                        q.push('?');
                    } else if self.peek_is('+') {
                        return Err("possessive quantifiers are not supported".into());
                    }
                    last.text = format!("(?:{}){q}", last.text);
                    last.kind = Kind::Repeat;
                }
                '(' => {
                    if let Some(item) = self.group(scope, first && items.is_empty())? {
                        items.push(item);
                    }
                }
                _ => {
                    // `|` and `)` end the sequence above; nothing else is special.
                    items.push(Item {
                        text: self.lit(this)?,
                        kind: Kind::Other,
                    });
                }
            }
        }
        let mut out = String::new();
        for it in items {
            out.push_str(&it.text);
        }
        Ok(out)
    }

    /// After `(`: a group, a comment or flags. `None` when nothing is added to the sequence.
    fn group(&mut self, scope: &mut Scope, may_be_global: bool) -> Result<Option<Item>, Error> {
        let mut name = None;
        let mut capture = true;
        let mut inner = *scope;
        let mut prefix = String::from("(?:");
        if self.eat('?') {
            let Some(c) = self.next() else {
                return Err("unexpected end of pattern".into());
            };
            match char::from_u32(c) {
                Some('P') => {
                    if self.eat('<') {
                        name = Some(self.group_name('>')?);
                    } else if self.eat('=') {
                        let n = self.group_name(')')?;
                        if !self.names.contains(&n) {
                            return Err(format!("unknown group name {n:?}"));
                        }
                        return Err("backreferences are not supported".into());
                    } else {
                        return match self.next() {
                            None => Err("unexpected end of pattern".into()),
                            Some(c) => Err(format!("unknown extension ?P{}", ch(c))),
                        };
                    }
                }
                Some(':') => capture = false,
                Some('#') => {
                    loop {
                        match self.next() {
                            None => return Err("missing ), unterminated comment".into()),
                            Some(c) if c == u32::from(b')') => break,
                            Some(_) => {}
                        }
                    }
                    return Ok(None);
                }
                Some('=' | '!') => return Err("look-ahead assertions are not supported".into()),
                Some('<') => {
                    return match self.next().and_then(char::from_u32) {
                        None => Err("unexpected end of pattern".into()),
                        Some('=' | '!') => Err("look-behind assertions are not supported".into()),
                        Some(c) => Err(format!("unknown extension ?<{c}")),
                    };
                }
                Some('(') => return Err("conditional groups are not supported".into()),
                Some('>') => return Err("atomic groups are not supported".into()),
                Some(f) if f == '-' || flag_of(c).is_some() => match self.flags(c)? {
                    Flags::Global(add) => {
                        if !may_be_global {
                            return Err("global flags not at the start of the expression".into());
                        }
                        // Global flags: they apply to the whole pattern.
                        self.global |= add;
                        if add & FLAG_X != 0 {
                            scope.verbose = true;
                        }
                        if add & FLAG_M != 0 {
                            scope.multiline = true;
                        }
                        if add & FLAG_A != 0 {
                            scope.ascii = true;
                        }
                        return Ok(None);
                    }
                    Flags::Scoped(add, del) => {
                        capture = false;
                        prefix = String::from("(?");
                        for (bit, c) in [(FLAG_I, 'i'), (FLAG_M, 'm'), (FLAG_S, 's')] {
                            if add & bit != 0 {
                                prefix.push(c);
                            }
                        }
                        if del & (FLAG_I | FLAG_M | FLAG_S) != 0 {
                            prefix.push('-');
                            for (bit, c) in [(FLAG_I, 'i'), (FLAG_M, 'm'), (FLAG_S, 's')] {
                                if del & bit != 0 {
                                    prefix.push(c);
                                }
                            }
                        }
                        prefix.push(':');
                        if prefix == "(?:" || prefix == "(?-:" {
                            prefix = "(?:".into();
                        }
                        if add & FLAG_X != 0 {
                            inner.verbose = true;
                        }
                        if del & FLAG_X != 0 {
                            inner.verbose = false;
                        }
                        if add & FLAG_M != 0 {
                            inner.multiline = true;
                        }
                        if del & FLAG_M != 0 {
                            inner.multiline = false;
                        }
                        if add & FLAG_A != 0 {
                            inner.ascii = true;
                        }
                    }
                },
                Some(_) | None => return Err(format!("unknown extension ?{}", ch(c))),
            }
        }
        if capture {
            if let Some(n) = &name {
                if self.names.contains(n) {
                    return Err(format!("redefinition of group name {n:?}"));
                }
                self.names.push(n.clone());
            }
            self.groups += 1;
        }
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("too many nested groups".into());
        }
        let body = self.sub(inner, false)?;
        self.depth -= 1;
        if !self.eat(')') {
            return Err("missing ), unterminated subpattern".into());
        }
        Ok(Some(Item {
            text: format!("{prefix}{body})"),
            kind: Kind::Other,
        }))
    }
}

/// A translated pattern: for any text, and, when it differs, for the empty text.
#[derive(Debug)]
pub(super) struct Translated {
    pub(super) pattern: String,
    /// Python's `\B` never matches in an empty text, the regex crate's does: a pattern
    /// with `\B` has a second form, with `\B` matching nothing, for empty texts.
    pub(super) for_empty: Option<String>,
}

/// Translates a Python pattern into the `regex` crate's syntax (to be compiled for text
/// in [`Mode::Str`], for bytes with Unicode off in [`Mode::Bytes`]).
pub(super) fn translate(pattern: &str, mode: Mode, base: BaseFlags) -> Result<Translated, Error> {
    let (text, non_boundary) = translate_one(pattern, mode, base, false)?;
    let for_empty = if non_boundary {
        Some(translate_one(pattern, mode, base, true)?.0)
    } else {
        None
    };
    Ok(Translated {
        pattern: text,
        for_empty,
    })
}

fn translate_one(
    pattern: &str,
    mode: Mode,
    base: BaseFlags,
    for_empty: bool,
) -> Result<(String, bool), Error> {
    let chars: Vec<u32> = match mode {
        Mode::Str => pattern.chars().map(u32::from).collect(),
        Mode::Bytes => pattern.bytes().map(u32::from).collect(),
    };
    let mut t = Translator {
        chars,
        pos: 0,
        mode,
        global: 0,
        groups: 1,
        names: Vec::new(),
        for_empty,
        saw_non_boundary: false,
        depth: 0,
    };
    let scope = Scope {
        verbose: false,
        multiline: base.multiline,
        ascii: false,
    };
    let body = t.sub(scope, true)?;
    if t.pos < t.chars.len() {
        return Err("unbalanced parenthesis".into());
    }
    let mut flags = String::from("(?i");
    if base.multiline || t.global & FLAG_M != 0 {
        flags.push('m');
    }
    if base.dotall || t.global & FLAG_S != 0 {
        flags.push('s');
    }
    if mode == Mode::Bytes {
        flags.push_str("-u");
    }
    flags.push(')');
    let mut out = String::with_capacity(flags.len() + body.len());
    let _ = write!(out, "{flags}{body}");
    Ok((out, t.saw_non_boundary))
}
