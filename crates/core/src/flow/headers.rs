//! Ordered, case-preserving HTTP header fields.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// HTTP header fields as they travelled: in order, with the case the peer used, duplicates kept.
///
/// Lookups ignore case, as HTTP does. What the client sent is what the server gets, unless an
/// addon changes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, Bytes)>,
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty header list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            fields: Vec::with_capacity(n),
        }
    }

    /// Builds headers from `(name, value)` pairs, in order.
    pub fn from_pairs<N, V, I>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (N, V)>,
        N: Into<String>,
        V: Into<Bytes>,
    {
        Self {
            fields: pairs
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }

    /// The first value of `name` (case-insensitive), if it is valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `name` (case-insensitive) as raw bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    /// Every value of `name` (case-insensitive), in order, that is valid UTF-8.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether a field called `name` is present (case-insensitive).
    pub fn contains(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    }

    /// Sets `name` to a single value: the first field of that name keeps its place (and its
    /// case) and takes the value, later duplicates are removed; a new field goes at the end.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        let mut slot = None;
        let mut i = 0;
        self.fields.retain_mut(|(n, v)| {
            let keep = if n.eq_ignore_ascii_case(&name) {
                if slot.is_none() {
                    slot = Some(i);
                    *v = value.clone();
                    true
                } else {
                    false
                }
            } else {
                true
            };
            i += 1;
            keep
        });
        if slot.is_none() {
            self.fields.push((name, value));
        }
    }

    /// Adds a field at the end, keeping any existing field of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.fields.push((name.into(), value.into()));
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        let before = self.fields.len();
        self.fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before - self.fields.len()
    }

    /// Keeps only the fields for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.fields.retain(|(n, v)| keep(n, v));
    }

    /// The fields in order, as `(name, raw value)`.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_ref()))
    }

    /// The fields in order, with owned values (cheap: values are reference-counted).
    pub fn fields(&self) -> &[(String, Bytes)] {
        &self.fields
    }

    /// Number of fields, duplicates counted.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.fields.clear();
    }

    /// The comma-separated tokens of a list-valued header (`Connection`, `Content-Encoding`,
    /// ...), across all its fields, trimmed and lowercased.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.get_all(name)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    }
}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a (String, Bytes);
    type IntoIter = std::slice::Iter<'a, (String, Bytes)>;
    fn into_iter(self) -> Self::IntoIter {
        self.fields.iter()
    }
}

impl FromIterator<(String, Bytes)> for Headers {
    fn from_iter<T: IntoIterator<Item = (String, Bytes)>>(iter: T) -> Self {
        Self {
            fields: iter.into_iter().collect(),
        }
    }
}

/// A header value on the wire of a flow file: a string when it is UTF-8 (the common case, and
/// readable), raw bytes otherwise, so that round trips are exact.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WireValue {
    Text(String),
    Raw(Vec<u8>),
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.fields.len()))?;
        for (n, v) in &self.fields {
            let wire = match std::str::from_utf8(v) {
                Ok(t) => WireValue::Text(t.to_owned()),
                Err(_) => WireValue::Raw(v.to_vec()),
            };
            seq.serialize_element(&(n, wire))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let pairs: Vec<(String, WireValue)> = Vec::deserialize(d)?;
        Ok(Self {
            fields: pairs
                .into_iter()
                .map(|(n, v)| {
                    let v = match v {
                        WireValue::Text(t) => Bytes::from(t),
                        WireValue::Raw(b) => Bytes::from(b),
                    };
                    (n, v)
                })
                .collect(),
        })
    }
}
