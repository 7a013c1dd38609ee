//! Filter expressions: mitmproxy's `~` language, parsed once into a matcher.
//!
//! ```
//! use waylay_core::Filter;
//!
//! let filter: Filter = "~d example.com & !~c 404".parse().unwrap();
//! assert_eq!(filter.to_string(), "~d example.com & !~c 404");
//! assert!(Filter::parse("~d").unwrap_err().to_string().contains("expected a regex after ~d"));
//! ```
//!
//! The language is mitmproxy 12's, with its precedence (`!`, then `&`, then `|`;
//! expressions side by side are joined with "and", loosest of all), its quoting, and its
//! rules for what each operator looks at:
//!
//! | operator | matches |
//! |---|---|
//! | `~all` | every flow |
//! | `~http`, `~tcp`, `~websocket` | HTTP flows, TCP flows, HTTP flows that became WebSockets |
//! | `~dns`, `~udp` | nothing (waylay has no DNS or UDP flows) |
//! | `~q`, `~s` | HTTP flows without / with a response |
//! | `~e`, `~marked`, `~replay`, `~replayq`, `~replays` | an error, a mark, a replayed flow (request / response) |
//! | `~a` | a response with an asset content type (JavaScript, CSS, image, font) |
//! | `~c CODE` | the response status |
//! | `~b`, `~bq`, `~bs` `REGEX` | bodies (request and/or response, decoded through `Content-Encoding`; WebSocket and TCP messages) |
//! | `~h`, `~hq`, `~hs` `REGEX` | header lines `name: value` |
//! | `~t`, `~tq`, `~ts` `REGEX` | the `Content-Type` |
//! | `~d REGEX` | the host (or `Host` header) |
//! | `~m REGEX` | the method |
//! | `~u REGEX`, `REGEX` | the URL |
//! | `~src`, `~dst` `REGEX` | the client's and the server's `host:port` |
//! | `~comment`, `~marker`, `~meta` `REGEX` | the comment, the mark, the metadata (`key: value` lines) |
//!
//! Regexes are Python's syntax, matched case-insensitively as in mitmproxy ≥ 11.1; the
//! few Python features the `regex` crate lacks (look-around, backreferences, conditional
//! and atomic groups, possessive quantifiers, `\N{...}`) are refused with a message.

mod ast;
mod error;
mod matcher;
mod parser;
mod print;
mod pyre;
mod pystr;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use error::FilterError;

use crate::flow::{Flow, HttpFlow, TcpFlow};

/// A borrowed flow of any kind, what a [`Filter`] is matched against.
#[derive(Debug, Clone, Copy)]
pub enum FlowRef<'a> {
    /// An HTTP flow (with its WebSocket messages, if any).
    Http(&'a HttpFlow),
    /// A raw TCP flow.
    Tcp(&'a TcpFlow),
}

impl<'a> From<&'a HttpFlow> for FlowRef<'a> {
    fn from(f: &'a HttpFlow) -> Self {
        Self::Http(f)
    }
}

impl<'a> From<&'a mut HttpFlow> for FlowRef<'a> {
    fn from(f: &'a mut HttpFlow) -> Self {
        Self::Http(f)
    }
}

impl<'a> From<&'a TcpFlow> for FlowRef<'a> {
    fn from(f: &'a TcpFlow) -> Self {
        Self::Tcp(f)
    }
}

impl<'a> From<&'a mut TcpFlow> for FlowRef<'a> {
    fn from(f: &'a mut TcpFlow) -> Self {
        Self::Tcp(f)
    }
}

impl<'a> From<&'a Flow> for FlowRef<'a> {
    fn from(f: &'a Flow) -> Self {
        match f {
            Flow::Http(h) => Self::Http(h),
            Flow::Tcp(t) => Self::Tcp(t),
        }
    }
}

/// A parsed filter expression (mitmproxy's `~d example.com & ~c 200` language).
///
/// Parse once with [`Filter::parse`] (or `str::parse`), then call [`Filter::matches`] on
/// as many flows as needed: regexes are compiled at parse time and cloning is cheap (the
/// tree is shared). `Display` prints a canonical form that parses back to an equal filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Arc<ast::Node>,
}

impl Filter {
    /// Parses `text`; the error says what was expected and at which byte offset.
    pub fn parse(text: &str) -> Result<Self, FilterError> {
        Ok(Self {
            root: Arc::new(parser::parse(text)?),
        })
    }

    /// Whether `flow` matches (`&HttpFlow`, `&TcpFlow`, `&Flow` or a [`FlowRef`]).
    pub fn matches<'a>(&self, flow: impl Into<FlowRef<'a>>) -> bool {
        matcher::eval(&self.root, flow.into())
    }
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.root, &other.root) || self.root == other.root
    }
}

impl FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        Self::parse(s)
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        print::write_node(f, &self.root)
    }
}
