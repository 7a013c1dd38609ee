//! What requests and responses share: headers, body, trailers and the encoding rules.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::Headers;
use super::encoding::{self, EncodingError};

/// An HTTP protocol version as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpVersion {
    /// `HTTP/1.0`
    #[serde(rename = "HTTP/1.0")]
    Http10,
    /// `HTTP/1.1`
    #[serde(rename = "HTTP/1.1")]
    Http11,
    /// `HTTP/2.0`
    #[serde(rename = "HTTP/2.0")]
    Http2,
    /// `HTTP/3`
    #[serde(rename = "HTTP/3")]
    Http3,
}

impl HttpVersion {
    /// The version as mitmproxy prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http10 => "HTTP/1.0",
            Self::Http11 => "HTTP/1.1",
            Self::Http2 => "HTTP/2.0",
            Self::Http3 => "HTTP/3",
        }
    }
}

impl std::fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Body and framing shared by [`super::Request`] and [`super::Response`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Protocol version.
    pub http_version: HttpVersion,
    /// Header fields in wire order.
    pub headers: Headers,
    /// The body as it travels, still `Content-Encoding`-encoded. `None` while it has not
    /// been read, and for streamed bodies (larger than `stream_large_bodies`), which never
    /// sit in memory.
    pub raw_content: Option<Bytes>,
    /// Trailer fields, when the peer sent any. Boxed: few messages have them, and a flow
    /// (two messages) stays under 1 KiB, the largest size the system allocator's per-thread
    /// cache serves (`BENCHMARKS.md`, session 9).
    pub trailers: Option<Box<Headers>>,
    /// Set when the body is streamed through instead of buffered.
    #[serde(default)]
    pub stream: bool,
    /// What a streamed body passes through on its way, chunk by chunk (mitmproxy's callable
    /// `flow.response.stream`); set with `stream` in `request_headers` or
    /// `response_headers`. The body then goes out without `Content-Length` (its length may
    /// change).
    #[serde(skip)]
    pub stream_fn: Option<StreamFn>,
    /// A streamed body kept on disk with `store_streamed_bodies` (`raw_content` stays
    /// `None`): flow files write it as the message's content once it is complete.
    #[serde(skip)]
    pub stored_body: Option<super::StoredBody>,
    /// When the first byte of the message was read.
    pub timestamp_start: f64,
    /// When the last byte of the message was read.
    pub timestamp_end: Option<f64>,
}

/// A function a streamed body passes through: each chunk in, what to send in its place out
/// (nothing, one chunk or several); called once more with an empty chunk when the body ends,
/// for what it still holds. Any `Fn(Bytes) -> Vec<Bytes>` is one.
pub trait ChunkTransform: std::any::Any + Send + Sync {
    /// What to send for `chunk` (empty at the end of the body).
    fn transform(&self, chunk: Bytes) -> Vec<Bytes>;
}

impl<F: Fn(Bytes) -> Vec<Bytes> + Send + Sync + 'static> ChunkTransform for F {
    fn transform(&self, chunk: Bytes) -> Vec<Bytes> {
        self(chunk)
    }
}

/// A [`ChunkTransform`] held by a message ([`Message::stream_fn`]); clones share it.
#[derive(Clone)]
pub struct StreamFn(std::sync::Arc<dyn ChunkTransform>);

impl StreamFn {
    /// Wraps `f`.
    pub fn new(f: impl ChunkTransform) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// What to send for `chunk` (see [`ChunkTransform`]).
    pub fn apply(&self, chunk: Bytes) -> Vec<Bytes> {
        self.0.transform(chunk)
    }

    /// The transform as its own type, when it is a `T`.
    pub fn downcast_ref<T: ChunkTransform>(&self) -> Option<&T> {
        let any: &dyn std::any::Any = &*self.0;
        any.downcast_ref()
    }
}

impl std::fmt::Debug for StreamFn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamFn(..)")
    }
}

impl PartialEq for StreamFn {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Why a body cannot be read as text or JSON.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body was streamed, so waylay does not hold it.
    #[error("body is not available (streamed or not read yet)")]
    Unavailable,
    /// Content-Encoding could not be undone.
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    /// The body is not valid UTF-8.
    #[error("body is not valid UTF-8")]
    NotUtf8,
    /// The body is not valid JSON.
    #[error("body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Message {
    /// A message with the given version and headers, no body yet.
    pub fn new(http_version: HttpVersion, headers: Headers) -> Self {
        Self::new_at(http_version, headers, super::now())
    }

    /// [`Message::new`] started at `timestamp_start` (a clock read the caller already made).
    pub fn new_at(http_version: HttpVersion, headers: Headers, timestamp_start: f64) -> Self {
        Self {
            http_version,
            headers,
            raw_content: None,
            trailers: None,
            stream: false,
            stream_fn: None,
            stored_body: None,
            timestamp_start,
            timestamp_end: None,
        }
    }

    fn content_encoding(&self) -> Option<&str> {
        self.headers
            .get("content-encoding")
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    /// The body with `Content-Encoding` undone (gzip, deflate, br, zstd).
    pub fn content(&self) -> Result<Bytes, BodyError> {
        let raw = self.raw_content.as_ref().ok_or(BodyError::Unavailable)?;
        match self.content_encoding() {
            None => Ok(raw.clone()),
            Some(enc) => Ok(encoding::decode_all(enc, raw)?.into()),
        }
    }

    /// Sets the body from decoded bytes, encoding it with the message's `Content-Encoding`
    /// (an unknown encoding is dropped from the headers so the message stays consistent),
    /// and sets `Content-Length` to the encoded length as mitmproxy does: always, an empty
    /// body included, unless the message has a `Transfer-Encoding` (whatever its value),
    /// where the length is implied by the framing.
    pub fn set_content(&mut self, content: impl Into<Bytes>) {
        let content = content.into();
        let raw = match self.content_encoding().map(str::to_owned) {
            None => content,
            Some(enc) => match encoding::encode_all(&enc, &content) {
                Ok(v) => v.into(),
                Err(_) => {
                    self.headers.remove("content-encoding");
                    content
                }
            },
        };
        if !self.headers.contains("transfer-encoding") {
            self.headers.insert("content-length", raw.len().to_string());
        }
        self.raw_content = Some(raw);
        self.stream = false;
    }

    /// Sets the on-the-wire body as is and fixes `Content-Length` (unless the message is
    /// chunked, where the length is implied).
    pub fn set_raw_content(&mut self, raw: impl Into<Bytes>) {
        let raw = raw.into();
        if !self
            .headers
            .tokens("transfer-encoding")
            .iter()
            .any(|t| t == "chunked")
            && (self.headers.contains("content-length") || !raw.is_empty())
        {
            self.headers.insert("content-length", raw.len().to_string());
        }
        self.raw_content = Some(raw);
        self.stream = false;
    }

    /// The decoded body as text (UTF-8; other charsets are decoded lossily as Latin-1).
    pub fn text(&self) -> Result<String, BodyError> {
        let content = self.content()?;
        let charset = self
            .headers
            .get("content-type")
            .and_then(|ct| {
                ct.split(';')
                    .map(str::trim)
                    .find_map(|p| p.strip_prefix("charset=").map(|c| c.trim_matches('"')))
            })
            .map(|c| c.to_ascii_lowercase());
        match charset.as_deref() {
            Some("iso-8859-1" | "latin-1" | "latin1") => {
                Ok(content.iter().map(|&b| b as char).collect())
            }
            _ => String::from_utf8(content.to_vec()).map_err(|_| BodyError::NotUtf8),
        }
    }

    /// Replaces the body with `text` (encoded as UTF-8, then with `Content-Encoding`).
    pub fn set_text(&mut self, text: impl Into<String>) {
        self.set_content(Bytes::from(text.into()));
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, BodyError> {
        Ok(serde_json::from_slice(&self.content()?)?)
    }

    /// Removes `Content-Encoding` by decoding the body in place.
    pub fn decode(&mut self) -> Result<(), BodyError> {
        let content = self.content()?;
        self.headers.remove("content-encoding");
        self.set_raw_content(content);
        Ok(())
    }

    /// Encodes the body with `encoding` (replacing any existing encoding).
    pub fn encode(&mut self, encoding_name: &str) -> Result<(), BodyError> {
        let content = self.content()?;
        let raw = encoding::encode(encoding_name, &content)?;
        self.headers
            .insert("content-encoding", encoding_name.to_owned());
        self.set_raw_content(raw);
        Ok(())
    }
}
