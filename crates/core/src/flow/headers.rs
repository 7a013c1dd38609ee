//! Ordered, case-preserving HTTP header fields.

use std::sync::OnceLock;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// HTTP header fields as they travelled: in order, with the case the peer used, duplicates kept.
///
/// Lookups ignore case, as HTTP does. What the client sent is what the server gets, unless an
/// addon changes it.
///
/// Headers read from the network are kept as the proxy's HTTP library parsed them
/// ([`Headers::from_http`]: lowercase names, order of first appearance) until something
/// changes them; reading them costs no copy, and a flow nobody edits goes back to the wire
/// ([`Headers::to_http`]) without being rebuilt. The first change turns them into the plain
/// ordered list the other constructors make. Either way every method behaves the same.
#[derive(Default)]
pub struct Headers {
    repr: Repr,
}

enum Repr {
    /// An ordered list of `(name, value)`: built by hand, read from a flow file, or edited.
    Fields(Vec<(String, Bytes)>),
    /// As parsed from the wire, untouched. `fields` is the list form, made only when asked
    /// for ([`Headers::fields`]).
    Wire {
        map: HeaderMap,
        fields: OnceLock<Vec<(String, Bytes)>>,
    },
}

impl Default for Repr {
    fn default() -> Self {
        Self::Fields(Vec::new())
    }
}

impl Clone for Headers {
    fn clone(&self) -> Self {
        let repr = match &self.repr {
            Repr::Fields(f) => Repr::Fields(f.clone()),
            Repr::Wire { map, .. } => Repr::Wire {
                map: map.clone(),
                fields: OnceLock::new(),
            },
        };
        Self { repr }
    }
}

impl std::fmt::Debug for Headers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

/// The list form of a parsed header map.
fn fields_of(map: &HeaderMap) -> Vec<(String, Bytes)> {
    map.iter()
        .map(|(n, v)| (n.as_str().to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

impl Headers {
    /// An empty header list.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty header list with room for `n` fields.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            repr: Repr::Fields(Vec::with_capacity(n)),
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
            repr: Repr::Fields(
                pairs
                    .into_iter()
                    .map(|(n, v)| (n.into(), v.into()))
                    .collect(),
            ),
        }
    }

    /// Headers as the HTTP library parsed them (names lowercase, in order of first
    /// appearance, duplicates after the first of their name), kept as they are until changed.
    pub fn from_http(map: HeaderMap) -> Self {
        Self {
            repr: Repr::Wire {
                map,
                fields: OnceLock::new(),
            },
        }
    }

    /// The fields as an HTTP header map (names lowercased); fields that are not valid HTTP
    /// are left out and named in `invalid` (an addon wrote them). Headers still as parsed
    /// are cloned, not rebuilt.
    pub fn to_http(&self, mut invalid: impl FnMut(&str)) -> HeaderMap {
        let fields = match &self.repr {
            Repr::Wire { map, .. } => return map.clone(),
            Repr::Fields(f) => f,
        };
        let mut map = HeaderMap::with_capacity(fields.len());
        for (name, value) in fields {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_maybe_shared(value.clone()),
            ) {
                (Ok(n), Ok(v)) => {
                    map.append(n, v);
                }
                _ => invalid(name),
            }
        }
        map
    }

    /// [`Headers::to_http`] for headers that are not needed afterwards: headers still as
    /// parsed are moved out, not cloned.
    pub fn into_http(self, invalid: impl FnMut(&str)) -> HeaderMap {
        match self.repr {
            Repr::Wire { map, .. } => map,
            Repr::Fields(_) => self.to_http(invalid),
        }
    }

    /// The list form, for changing it: parsed headers are copied into it once.
    fn fields_mut(&mut self) -> &mut Vec<(String, Bytes)> {
        if let Repr::Wire { map, fields } = &mut self.repr {
            let list = fields.take().unwrap_or_else(|| fields_of(map));
            self.repr = Repr::Fields(list);
        }
        match &mut self.repr {
            Repr::Fields(f) => f,
            Repr::Wire { .. } => unreachable!("turned into fields above"),
        }
    }

    /// The first value of `name` (case-insensitive), if it is valid UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The first value of `name` (case-insensitive) as raw bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&[u8]> {
        match &self.repr {
            Repr::Fields(f) => f
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_ref()),
            Repr::Wire { map, .. } => map.get(name).map(HeaderValue::as_bytes),
        }
    }

    /// Every value of `name` (case-insensitive), in order, that is valid UTF-8.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
    }

    /// Whether a field called `name` is present (case-insensitive).
    pub fn contains(&self, name: &str) -> bool {
        match &self.repr {
            Repr::Fields(f) => f.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)),
            Repr::Wire { map, .. } => map.contains_key(name),
        }
    }

    /// Sets `name` to a single value: the first field of that name keeps its place (and its
    /// case) and takes the value, later duplicates are removed; a new field goes at the end.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        let name = name.into();
        let value = value.into();
        let Some((name, value)) = self.wire_set(name, value, true) else {
            return;
        };
        let mut slot = None;
        let mut i = 0;
        let fields = self.fields_mut();
        fields.retain_mut(|(n, v)| {
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
            fields.push((name, value));
        }
    }

    /// Adds a field at the end, keeping any existing field of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        if let Some(field) = self.wire_set(name.into(), value.into(), false) {
            self.fields_mut().push(field);
        }
    }

    /// Sets a field on headers still as parsed, in the parsed map itself, when that gives
    /// exactly what the list form would (the common edit, an addon setting one header, then
    /// costs no copy of the others); otherwise gives the field back for the list form.
    ///
    /// The map keeps names lowercase and groups a name's values after its first field: a
    /// new name goes at the end in both forms when it is lowercase already, and `insert`
    /// (`replace`) on a present name keeps that field's place and name and drops the later
    /// ones in both. Appending to a present name, a name with capitals, and a name or value
    /// that is not valid HTTP take the list form (which keeps case, order, and the invalid
    /// field for the layer to report).
    fn wire_set(&mut self, name: String, value: Bytes, replace: bool) -> Option<(String, Bytes)> {
        let Repr::Wire { map, fields } = &mut self.repr else {
            return Some((name, value));
        };
        let Ok(key) = HeaderName::from_bytes(name.as_bytes()) else {
            return Some((name, value));
        };
        let present = map.contains_key(&key);
        if (present && !replace) || (!present && key.as_str() != name) {
            return Some((name, value));
        }
        // HeaderValue's own rule (visible ASCII, obs-text, space and tab), checked first so
        // that the value is never lost to a failed conversion.
        if !value
            .iter()
            .all(|&b| (b >= 0x20 && b != 0x7f) || b == b'\t')
        {
            return Some((name, value));
        }
        match HeaderValue::from_maybe_shared(value) {
            Ok(v) => {
                map.insert(key, v);
                *fields = OnceLock::new();
                None
            }
            // Not reached: the check above is the conversion's.
            Err(_) => Some((name, Bytes::new())),
        }
    }

    /// Removes every field called `name`; returns how many were removed.
    pub fn remove(&mut self, name: &str) -> usize {
        if !self.contains(name) {
            return 0;
        }
        let fields = self.fields_mut();
        let before = fields.len();
        fields.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        before - fields.len()
    }

    /// Keeps only the fields for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &[u8]) -> bool) {
        self.fields_mut().retain(|(n, v)| keep(n, v));
    }

    /// The fields in order, as `(name, raw value)`.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &[u8])> {
        Iter(match &self.repr {
            Repr::Fields(f) => IterRepr::Fields(f.iter()),
            Repr::Wire { map, .. } => IterRepr::Wire(map.iter(), map.len()),
        })
    }

    /// The fields in order, with owned values (cheap: values are reference-counted).
    pub fn fields(&self) -> &[(String, Bytes)] {
        match &self.repr {
            Repr::Fields(f) => f,
            Repr::Wire { map, fields } => fields.get_or_init(|| fields_of(map)),
        }
    }

    /// Number of fields, duplicates counted.
    pub fn len(&self) -> usize {
        match &self.repr {
            Repr::Fields(f) => f.len(),
            Repr::Wire { map, .. } => map.len(),
        }
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every field.
    pub fn clear(&mut self) {
        self.repr = Repr::Fields(Vec::new());
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

/// The fields of [`Headers`] in order, as `(name, raw value)` ([`Headers::iter`]).
struct Iter<'a>(IterRepr<'a>);

enum IterRepr<'a> {
    Fields(std::slice::Iter<'a, (String, Bytes)>),
    /// The map's iterator and the fields it has left.
    Wire(http::header::Iter<'a, HeaderValue>, usize),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            IterRepr::Fields(it) => it.next().map(|(n, v)| (n.as_str(), v.as_ref())),
            IterRepr::Wire(it, left) => {
                let (n, v) = it.next()?;
                *left = left.saturating_sub(1);
                Some((n.as_str(), v.as_bytes()))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = match &self.0 {
            IterRepr::Fields(it) => it.len(),
            IterRepr::Wire(_, left) => *left,
        };
        (n, Some(n))
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl<'a> IntoIterator for &'a Headers {
    type Item = &'a (String, Bytes);
    type IntoIter = std::slice::Iter<'a, (String, Bytes)>;
    fn into_iter(self) -> Self::IntoIter {
        self.fields().iter()
    }
}

impl FromIterator<(String, Bytes)> for Headers {
    fn from_iter<T: IntoIterator<Item = (String, Bytes)>>(iter: T) -> Self {
        Self {
            repr: Repr::Fields(iter.into_iter().collect()),
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
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for (n, v) in self.iter() {
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
        Ok(Self::from_iter(pairs.into_iter().map(|(n, v)| {
            let v = match v {
                WireValue::Text(t) => Bytes::from(t),
                WireValue::Raw(b) => Bytes::from(b),
            };
            (n, v)
        })))
    }
}
