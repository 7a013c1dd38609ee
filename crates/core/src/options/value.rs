//! Option types and values, and parsing them from text.

use std::fmt;

/// The type of an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// `true` / `false`.
    Bool,
    /// A signed integer.
    Int,
    /// A string.
    Str,
    /// A string or nothing.
    OptStr,
    /// An integer or nothing.
    OptInt,
    /// A list of strings.
    Seq,
}

impl fmt::Display for OptionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bool => "bool",
            Self::Int => "int",
            Self::Str => "str",
            Self::OptStr => "optional str",
            Self::OptInt => "optional int",
            Self::Seq => "sequence of str",
        })
    }
}

/// A typed option value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OptionValue {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A string.
    Str(String),
    /// An optional string.
    OptStr(Option<String>),
    /// An optional integer.
    OptInt(Option<i64>),
    /// A list of strings.
    Seq(Vec<String>),
}

impl OptionValue {
    /// The value's type.
    pub fn typ(&self) -> OptionType {
        match self {
            Self::Bool(_) => OptionType::Bool,
            Self::Int(_) => OptionType::Int,
            Self::Str(_) => OptionType::Str,
            Self::OptStr(_) => OptionType::OptStr,
            Self::OptInt(_) => OptionType::OptInt,
            Self::Seq(_) => OptionType::Seq,
        }
    }

    /// Parses `text` as a value of type `typ`; the error says what was expected.
    pub fn parse(typ: OptionType, text: &str) -> Result<Self, String> {
        let t = text.trim();
        match typ {
            OptionType::Bool => match t.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Self::Bool(true)),
                "false" | "0" | "no" | "off" => Ok(Self::Bool(false)),
                _ => Err("true or false".into()),
            },
            OptionType::Int => t.parse().map(Self::Int).map_err(|_| "an integer".into()),
            OptionType::Str => Ok(Self::Str(text.to_owned())),
            OptionType::OptStr => Ok(Self::OptStr(if t.is_empty() {
                None
            } else {
                Some(text.to_owned())
            })),
            // Nothing, or `None` as mitmproxy spells it.
            OptionType::OptInt if t.is_empty() || t == "None" => Ok(Self::OptInt(None)),
            OptionType::OptInt => t
                .parse()
                .map(|i| Self::OptInt(Some(i)))
                .map_err(|_| "an integer or None".into()),
            OptionType::Seq => Ok(Self::Seq(if t.is_empty() {
                Vec::new()
            } else {
                vec![text.to_owned()]
            })),
        }
    }
}

impl fmt::Display for OptionValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bool(b) => write!(f, "{b}"),
            Self::Int(i) => write!(f, "{i}"),
            Self::Str(s) => write!(f, "{s:?}"),
            Self::OptStr(None) => f.write_str("None"),
            Self::OptStr(Some(s)) => write!(f, "{s:?}"),
            Self::OptInt(None) => f.write_str("None"),
            Self::OptInt(Some(i)) => write!(f, "{i}"),
            Self::Seq(v) => write!(f, "{v:?}"),
        }
    }
}

/// Parses a human size (`1024`, `1k`, `3m`, `2g`, `512b`; powers of 1024) into bytes, as
/// mitmproxy's `stream_large_bodies` and `body_size_limit` take them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let (num, mult) = match t.chars().last() {
        Some('b') => (&t[..t.len() - 1], 1u64),
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        _ => (t.as_str(), 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("invalid size {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

/// Levenshtein distance, for "did you mean" on unknown option names.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
