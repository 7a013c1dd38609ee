//! The parsed form of a filter: a tree of operators whose regexes are compiled once.

use super::pyre::{self, BaseFlags, Mode};

/// An operator that takes no argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FlagOp {
    /// `~a`: the response is an asset (CSS, JavaScript, image, font).
    Asset,
    /// `~e`: the flow has an error.
    Error,
    /// `~http`
    Http,
    /// `~marked`
    Marked,
    /// `~replay`
    Replay,
    /// `~replayq`
    ReplayRequest,
    /// `~replays`
    ReplayResponse,
    /// `~q`: a request without a response.
    Request,
    /// `~s`: a response.
    Response,
    /// `~tcp`
    Tcp,
    /// `~udp` (waylay has no UDP flows: matches nothing)
    Udp,
    /// `~dns` (waylay has no DNS flows: matches nothing)
    Dns,
    /// `~websocket`
    WebSocket,
    /// `~all`
    All,
}

/// An operator that takes a regex.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RexOp {
    Body,
    BodyRequest,
    BodyResponse,
    ContentType,
    ContentTypeRequest,
    ContentTypeResponse,
    Domain,
    Dst,
    Header,
    HeaderRequest,
    HeaderResponse,
    Method,
    Src,
    Url,
    Meta,
    Marker,
    Comment,
}

/// What follows `~` in an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Flag(FlagOp),
    Rex(RexOp),
    Code,
}

/// Every operator with its name (without the `~`).
pub(super) const OPERATORS: &[(&str, Op)] = &[
    ("a", Op::Flag(FlagOp::Asset)),
    ("e", Op::Flag(FlagOp::Error)),
    ("http", Op::Flag(FlagOp::Http)),
    ("marked", Op::Flag(FlagOp::Marked)),
    ("replay", Op::Flag(FlagOp::Replay)),
    ("replayq", Op::Flag(FlagOp::ReplayRequest)),
    ("replays", Op::Flag(FlagOp::ReplayResponse)),
    ("q", Op::Flag(FlagOp::Request)),
    ("s", Op::Flag(FlagOp::Response)),
    ("tcp", Op::Flag(FlagOp::Tcp)),
    ("udp", Op::Flag(FlagOp::Udp)),
    ("dns", Op::Flag(FlagOp::Dns)),
    ("websocket", Op::Flag(FlagOp::WebSocket)),
    ("all", Op::Flag(FlagOp::All)),
    ("b", Op::Rex(RexOp::Body)),
    ("bq", Op::Rex(RexOp::BodyRequest)),
    ("bs", Op::Rex(RexOp::BodyResponse)),
    ("t", Op::Rex(RexOp::ContentType)),
    ("tq", Op::Rex(RexOp::ContentTypeRequest)),
    ("ts", Op::Rex(RexOp::ContentTypeResponse)),
    ("d", Op::Rex(RexOp::Domain)),
    ("dst", Op::Rex(RexOp::Dst)),
    ("h", Op::Rex(RexOp::Header)),
    ("hq", Op::Rex(RexOp::HeaderRequest)),
    ("hs", Op::Rex(RexOp::HeaderResponse)),
    ("m", Op::Rex(RexOp::Method)),
    ("src", Op::Rex(RexOp::Src)),
    ("u", Op::Rex(RexOp::Url)),
    ("meta", Op::Rex(RexOp::Meta)),
    ("marker", Op::Rex(RexOp::Marker)),
    ("comment", Op::Rex(RexOp::Comment)),
    ("c", Op::Code),
];

/// The name of an operator (without the `~`).
pub(super) fn name_of(op: Op) -> &'static str {
    OPERATORS
        .iter()
        .find(|(_, o)| *o == op)
        .map_or("?", |(n, _)| n)
}

impl RexOp {
    /// Whether mitmproxy matches this operator's regex against bytes (else text), and the
    /// flags it compiles it with.
    fn compile_as(self) -> (Mode, BaseFlags) {
        let multiline = BaseFlags {
            multiline: true,
            dotall: false,
        };
        let dotall = BaseFlags {
            multiline: false,
            dotall: true,
        };
        match self {
            Self::Body | Self::BodyRequest | Self::BodyResponse => (Mode::Bytes, dotall),
            Self::Header | Self::HeaderRequest | Self::HeaderResponse => (Mode::Bytes, multiline),
            Self::ContentType
            | Self::ContentTypeRequest
            | Self::ContentTypeResponse
            | Self::Method => (Mode::Bytes, BaseFlags::default()),
            Self::Meta | Self::Comment => (Mode::Str, multiline),
            Self::Domain | Self::Dst | Self::Src | Self::Url | Self::Marker => {
                (Mode::Str, BaseFlags::default())
            }
        }
    }
}

/// A compiled regex, for text or for bytes.
#[derive(Debug, Clone)]
pub(super) enum Compiled {
    Str(regex::Regex),
    Bytes(regex::bytes::Regex),
}

/// A regex argument: the text as written (after unquoting) and its compiled form.
#[derive(Debug, Clone)]
pub(super) struct Rex {
    pub(super) source: String,
    pub(super) re: Compiled,
    /// The form used on an empty text, when it differs (see `pyre::Translated`).
    pub(super) for_empty: Option<Compiled>,
}

fn compile_as(mode: Mode, pattern: &str) -> Result<Compiled, String> {
    Ok(match mode {
        Mode::Str => Compiled::Str(regex::Regex::new(pattern).map_err(short)?),
        Mode::Bytes => Compiled::Bytes(regex::bytes::Regex::new(pattern).map_err(short)?),
    })
}

impl Compiled {
    #[inline]
    fn is_match(&self, data: &[u8]) -> bool {
        match self {
            Self::Bytes(r) => r.is_match(data),
            Self::Str(r) => std::str::from_utf8(data).is_ok_and(|t| r.is_match(t)),
        }
    }
}

impl Rex {
    /// Compiles `source` for `op`; the error says why it is not a valid (Python) regex.
    pub(super) fn compile(op: RexOp, source: String) -> Result<Self, String> {
        let (mode, flags) = op.compile_as();
        let translated = pyre::translate(&source, mode, flags)?;
        let re = compile_as(mode, &translated.pattern)?;
        let for_empty = match &translated.for_empty {
            Some(p) => Some(compile_as(mode, p)?),
            None => None,
        };
        Ok(Self {
            source,
            re,
            for_empty,
        })
    }

    /// Whether the regex matches somewhere in `text`.
    #[inline]
    pub(super) fn is_match_str(&self, text: &str) -> bool {
        let re = match (&self.for_empty, text.is_empty()) {
            (Some(empty), true) => empty,
            _ => &self.re,
        };
        match re {
            Compiled::Str(r) => r.is_match(text),
            Compiled::Bytes(r) => r.is_match(text.as_bytes()),
        }
    }

    /// Whether the regex matches somewhere in `data`.
    #[inline]
    pub(super) fn is_match_bytes(&self, data: &[u8]) -> bool {
        match (&self.for_empty, data.is_empty()) {
            (Some(empty), true) => empty.is_match(data),
            _ => self.re.is_match(data),
        }
    }
}

/// The last line of the regex crate's multi-line error.
fn short(e: regex::Error) -> String {
    match e {
        regex::Error::CompiledTooBig(_) => "the regex is too large".into(),
        other => other
            .to_string()
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid regex")
            .trim()
            .trim_start_matches("error: ")
            .to_owned(),
    }
}

/// A node of the filter tree.
#[derive(Debug, Clone)]
pub(super) enum Node {
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Flag(FlagOp),
    Rex(RexOp, Rex),
    /// `~c`: the status code (saturated: larger numbers match nothing).
    Code(u32),
}

impl PartialEq for Node {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Not(a), Self::Not(b)) => a == b,
            (Self::And(a), Self::And(b)) | (Self::Or(a), Self::Or(b)) => a == b,
            (Self::Flag(a), Self::Flag(b)) => a == b,
            (Self::Rex(oa, ra), Self::Rex(ob, rb)) => oa == ob && ra.source == rb.source,
            (Self::Code(a), Self::Code(b)) => a == b,
            (
                Self::Not(_)
                | Self::And(_)
                | Self::Or(_)
                | Self::Flag(_)
                | Self::Rex(..)
                | Self::Code(_),
                _,
            ) => false,
        }
    }
}
