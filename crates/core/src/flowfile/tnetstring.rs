//! Typed netstrings, the encoding of mitmproxy's flow files: `LEN:DATA` followed by one type
//! byte (`,` bytes, `;` UTF-8 string, `#` integer, `^` float, `!` boolean, `~` null,
//! `]` list, `}` dictionary). Socket-free; bodies are sliced out of the input, not copied.

use bytes::{BufMut, Bytes};

/// A decoded tnetstring value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `0:~`
    Null,
    /// `4:true!` / `5:false!`
    Bool(bool),
    /// `N:123#`
    Int(i64),
    /// `N:1.5^`
    Float(f64),
    /// `N:...,` raw bytes.
    Bytes(Bytes),
    /// `N:...;` a UTF-8 string.
    Str(String),
    /// `N:...]`
    List(Vec<Value>),
    /// `N:...}` key/value pairs in file order.
    Dict(Vec<(Value, Value)>),
}

/// Why bytes are not a tnetstring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a tnetstring at byte {offset}: {reason}")]
pub struct TnetError {
    /// Offset of the value that failed, from the start of the decoded buffer.
    pub offset: usize,
    /// What was wrong.
    pub reason: String,
}

fn err(offset: usize, reason: impl Into<String>) -> TnetError {
    TnetError {
        offset,
        reason: reason.into(),
    }
}

/// The longest length prefix accepted (as mitmproxy: 12 digits).
pub const MAX_LEN_DIGITS: usize = 12;

impl Value {
    /// A string value.
    pub fn str(s: impl Into<String>) -> Self {
        Self::Str(s.into())
    }

    /// A bytes value.
    pub fn bytes(b: impl Into<Bytes>) -> Self {
        Self::Bytes(b.into())
    }

    /// `Some(s)` as a string, `None` as null.
    pub fn opt_str(s: Option<&str>) -> Self {
        s.map_or(Self::Null, Self::str)
    }

    /// `Some(f)` as a float, `None` as null.
    pub fn opt_float(f: Option<f64>) -> Self {
        f.map_or(Self::Null, Self::Float)
    }

    /// The value under `key` in a dictionary (keys may be strings or bytes, as older files
    /// used bytes).
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Dict(items) => items.iter().find_map(|(k, v)| match k {
                Self::Str(s) if s == key => Some(v),
                Self::Bytes(b) if b.as_ref() == key.as_bytes() => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Mutable access to the value under `key`.
    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Self::Dict(items) => items.iter_mut().find_map(|(k, v)| match k {
                Self::Str(s) if s == key => Some(v),
                Self::Bytes(b) if b.as_ref() == key.as_bytes() => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }

    /// Sets `key` in a dictionary (replacing an existing entry); no-op on other values.
    pub fn set(&mut self, key: &str, value: Value) {
        if let Some(v) = self.get_mut(key) {
            *v = value;
        } else if let Self::Dict(items) = self {
            items.push((Self::str(key), value));
        }
    }

    /// Removes `key` from a dictionary, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let Self::Dict(items) = self else {
            return None;
        };
        let i = items.iter().position(|(k, _)| match k {
            Self::Str(s) => s == key,
            Self::Bytes(b) => b.as_ref() == key.as_bytes(),
            _ => false,
        })?;
        Some(items.remove(i).1)
    }

    /// The length of the encoded value, prefix and type byte included.
    pub fn encoded_len(&self) -> usize {
        let n = self.payload_len();
        digits(n) + 1 + n + 1
    }

    fn payload_len(&self) -> usize {
        match self {
            Self::Null => 0,
            Self::Bool(true) => 4,
            Self::Bool(false) => 5,
            Self::Int(i) => int_len(*i),
            Self::Float(f) => format_float(*f).len(),
            Self::Bytes(b) => b.len(),
            Self::Str(s) => s.len(),
            Self::List(items) => items.iter().map(Value::encoded_len).sum(),
            Self::Dict(items) => items
                .iter()
                .map(|(k, v)| k.encoded_len() + v.encoded_len())
                .sum(),
        }
    }

    /// Appends the encoding of the value to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let n = self.payload_len();
        out.reserve(digits(n) + n + 2);
        push_usize(out, n);
        out.push(b':');
        match self {
            Self::Null => out.push(b'~'),
            Self::Bool(b) => {
                out.extend_from_slice(if *b { b"true" } else { b"false" });
                out.push(b'!');
            }
            Self::Int(i) => {
                out.extend_from_slice(i.to_string().as_bytes());
                out.push(b'#');
            }
            Self::Float(f) => {
                out.extend_from_slice(format_float(*f).as_bytes());
                out.push(b'^');
            }
            Self::Bytes(b) => {
                out.put_slice(b);
                out.push(b',');
            }
            Self::Str(s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(b';');
            }
            Self::List(items) => {
                for i in items {
                    i.encode_into(out);
                }
                out.push(b']');
            }
            Self::Dict(items) => {
                for (k, v) in items {
                    k.encode_into(out);
                    v.encode_into(out);
                }
                out.push(b'}');
            }
        }
    }

    /// The encoding of the value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }
}

/// Floats as Python's `repr` would parse them back: shortest round-trip form, with `.0`
/// on integral values, `inf`/`nan` spelled as Python accepts.
fn format_float(f: f64) -> String {
    if f.is_nan() {
        "nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        format!("{f:?}")
    }
}

fn int_len(i: i64) -> usize {
    usize::from(i < 0) + digits_u64(i.unsigned_abs())
}

fn digits(n: usize) -> usize {
    digits_u64(n as u64)
}

fn digits_u64(mut n: u64) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

fn push_usize(out: &mut Vec<u8>, n: usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Decodes exactly one value spanning all of `data`.
pub fn decode(data: &Bytes) -> Result<Value, TnetError> {
    let (v, rest) = pop(data, 0, 0)?;
    if rest != data.len() {
        return Err(err(rest, "trailing bytes after the value"));
    }
    Ok(v)
}

/// Deeper nesting than this is refused (no flow comes close; it bounds the recursion).
const MAX_DEPTH: usize = 64;

/// Parses one value starting at `pos`; returns it and the offset after it.
fn pop(data: &Bytes, pos: usize, depth: usize) -> Result<(Value, usize), TnetError> {
    if depth > MAX_DEPTH {
        return Err(err(pos, "nested too deeply"));
    }
    let buf = &data[..];
    let mut i = pos;
    let mut len: usize = 0;
    while i < buf.len() && buf[i].is_ascii_digit() {
        if i - pos >= MAX_LEN_DIGITS {
            return Err(err(pos, "absurdly large length prefix"));
        }
        len = len * 10 + usize::from(buf[i] - b'0');
        i += 1;
    }
    if i == pos || i >= buf.len() || buf[i] != b':' {
        return Err(err(pos, "missing or invalid length prefix"));
    }
    let start = i + 1;
    let end = start
        .checked_add(len)
        .filter(|e| *e < buf.len())
        .ok_or_else(|| err(pos, format!("length {len} runs past the end of the data")))?;
    let tag = buf[end];
    let payload = &buf[start..end];
    let text = || std::str::from_utf8(payload).map_err(|_| err(pos, "invalid UTF-8"));
    let v = match tag {
        b',' => Value::Bytes(data.slice(start..end)),
        b';' => Value::Str(text()?.to_owned()),
        b'#' => Value::Int(
            text()?
                .trim()
                .parse()
                .map_err(|_| err(pos, "invalid integer literal"))?,
        ),
        b'^' => Value::Float(
            text()?
                .trim()
                .parse()
                .map_err(|_| err(pos, "invalid float literal"))?,
        ),
        b'!' => match payload {
            b"true" => Value::Bool(true),
            b"false" => Value::Bool(false),
            _ => return Err(err(pos, "invalid boolean literal")),
        },
        b'~' if payload.is_empty() => Value::Null,
        b'~' => return Err(err(pos, "invalid null literal")),
        b']' => {
            let mut items = Vec::new();
            let mut p = start;
            while p < end {
                let (item, next) = pop_within(data, p, end, depth)?;
                items.push(item);
                p = next;
            }
            Value::List(items)
        }
        b'}' => {
            let mut items = Vec::new();
            let mut p = start;
            while p < end {
                let (k, next) = pop_within(data, p, end, depth)?;
                if next >= end {
                    return Err(err(p, "dictionary key without a value"));
                }
                let (v, next) = pop_within(data, next, end, depth)?;
                items.push((k, v));
                p = next;
            }
            Value::Dict(items)
        }
        other => return Err(err(end, format!("unknown type tag {:?}", other as char))),
    };
    Ok((v, end + 1))
}

/// Parses a value that must end before `limit` (inside a container).
fn pop_within(
    data: &Bytes,
    pos: usize,
    limit: usize,
    depth: usize,
) -> Result<(Value, usize), TnetError> {
    let (v, next) = pop(&data.slice(..limit), pos, depth + 1)?;
    // `pop` saw only the container's payload, so `next <= limit`; body slices made from the
    // shortened view still point into the same allocation.
    Ok((v, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(v: &Value) -> Value {
        let enc = Bytes::from(v.encode());
        assert_eq!(enc.len(), v.encoded_len());
        decode(&enc).unwrap()
    }

    #[test]
    fn known_encodings() {
        assert_eq!(Value::str("hello world").encode(), b"11:hello world;");
        assert_eq!(Value::Int(12345).encode(), b"5:12345#");
        assert_eq!(
            Value::List(vec![Value::Int(12345), Value::Bool(true), Value::Int(0)]).encode(),
            b"19:5:12345#4:true!1:0#]"
        );
        assert_eq!(Value::Null.encode(), b"0:~");
        assert_eq!(Value::Float(1.0).encode(), b"3:1.0^");
        assert_eq!(Value::Int(-7).encode(), b"2:-7#");
        assert_eq!(
            Value::Int(i64::MIN).encode().len(),
            Value::Int(i64::MIN).encoded_len()
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let e = decode(&Bytes::from_static(b"5:abc,")).unwrap_err();
        assert!(e.reason.contains("runs past the end"), "{e}");
        let e = decode(&Bytes::from_static(b"3:abc?")).unwrap_err();
        assert!(e.reason.contains("unknown type tag"), "{e}");
        let e = decode(&Bytes::from_static(b"x")).unwrap_err();
        assert!(e.reason.contains("length prefix"), "{e}");
        let e = decode(&Bytes::from_static(b"3:1:a}")).unwrap_err();
        assert!(
            e.reason.contains("without a value") || e.reason.contains("past"),
            "{e}"
        );
        let e = decode(&Bytes::from_static(b"9999999999999:a,")).unwrap_err();
        assert!(e.reason.contains("absurdly"), "{e}");
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>()
                .prop_filter("NaN never equals itself", |f| !f.is_nan())
                .prop_map(Value::Float),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Bytes(b.into())),
            ".{0,20}".prop_map(Value::Str),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::List),
                proptest::collection::vec((inner.clone(), inner), 0..8).prop_map(Value::Dict),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_decode_roundtrip(v in value()) {
            prop_assert_eq!(roundtrip(&v), v);
        }

        #[test]
        fn random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&Bytes::from(b));
        }

        #[test]
        fn mutated_encodings_never_panic(v in value(), at in any::<usize>(), byte in any::<u8>()) {
            let mut enc = v.encode();
            if !enc.is_empty() {
                let i = at % enc.len();
                enc[i] = byte;
            }
            let _ = decode(&Bytes::from(enc));
        }
    }
}
