//! Flow files in mitmproxy's own format: a sequence of tnetstring-encoded flow states
//! (flow format version 21, mitmproxy 12), so `mitmproxy -r`, `mitmweb` and
//! `mitmproxy.io.FlowReader` open waylay's files and waylay opens theirs. HAR (JSON) files are
//! read too, as mitmproxy does, and written by [`har`].
//!
//! ```
//! use waylay_core::flowfile::{FlowReader, FlowWriter};
//! use waylay_core::{Flow, HttpFlow, flow::{Client, Request}};
//!
//! let client = std::sync::Arc::new(Client::new(
//!     "127.0.0.1:50000".parse().unwrap(),
//!     "127.0.0.1:8080".parse().unwrap(),
//! ));
//! let flow = HttpFlow::new(client, Request::from_url("GET", "http://example.com/").unwrap());
//!
//! let mut file = Vec::new();
//! FlowWriter::new(&mut file).add(&Flow::Http(Box::new(flow))).unwrap();
//! let flows: Vec<Flow> = FlowReader::new(&file[..]).collect::<Result<_, _>>().unwrap();
//! assert_eq!(flows.len(), 1);
//! ```

mod compat;
mod encode;
pub mod har;
mod play;
mod state;
pub mod tnetstring;

use std::io::{BufRead, BufReader, Read, Write};

use bytes::Bytes;

/// The oldest flow format version waylay reads (older ones need mitmproxy 12 to convert).
pub const OLDEST_FLOW_FORMAT_VERSION: i64 = compat::OLDEST;
pub use play::{hook_sequence, play};
pub use state::{VERSION as FLOW_FORMAT_VERSION, from_state, to_state};

use crate::Flow;

/// Why a flow file could not be read (the flows before the failure were returned).
#[derive(Debug, thiserror::Error)]
pub enum FlowFileError {
    /// The file could not be read.
    #[error("reading the flow file: {0}")]
    Io(#[from] std::io::Error),
    /// The file ends in the middle of a flow.
    #[error(
        "the flow file is truncated: flow #{index} (at byte {offset}) needs {expected} bytes, only {got} are there"
    )]
    Truncated {
        /// 1-based number of the flow.
        index: usize,
        /// Where it starts in the file.
        offset: u64,
        /// The bytes its length prefix announces.
        expected: u64,
        /// The bytes that were left.
        got: u64,
    },
    /// The bytes are not a tnetstring.
    #[error("the flow file is corrupt at flow #{index} (byte {offset}): {reason}")]
    Corrupt {
        /// 1-based number of the flow.
        index: usize,
        /// Where the bad value is in the file.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A well-formed flow waylay cannot use (a version it does not migrate, an unknown flow
    /// type, a field of the wrong type).
    #[error("flow #{index} cannot be read: {reason}")]
    Invalid {
        /// 1-based number of the flow.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A HAR file that could not be read.
    #[error("not a valid HAR file: {0}")]
    Har(String),
}

/// Reads flows from a flow file (or a HAR file), one at a time: an iterator of
/// `Result<Flow, FlowFileError>` that ends after the first error.
#[derive(Debug)]
pub struct FlowReader<R> {
    input: BufReader<R>,
    offset: u64,
    index: usize,
    done: bool,
    har: Option<std::vec::IntoIter<Flow>>,
    started: bool,
}

impl<R: Read> FlowReader<R> {
    /// Reads from `input` (buffered internally).
    pub fn new(input: R) -> Self {
        Self {
            input: BufReader::with_capacity(64 * 1024, input),
            offset: 0,
            index: 0,
            done: false,
            har: None,
            started: false,
        }
    }

    /// Detects a HAR file (JSON, possibly after a UTF-8 byte-order mark) on first use.
    fn sniff(&mut self) -> Result<(), FlowFileError> {
        self.started = true;
        let head = self.input.fill_buf()?;
        let bom = head.starts_with(b"\xef\xbb\xbf");
        let body = if bom { &head[3..] } else { head };
        if body.first() == Some(&b'{') {
            let mut text = Vec::new();
            self.input.read_to_end(&mut text)?;
            let text = if bom { &text[3..] } else { &text[..] };
            self.har = Some(har::read(text)?.into_iter());
        }
        Ok(())
    }

    fn read_one(&mut self) -> Result<Option<Flow>, FlowFileError> {
        let start = self.offset;
        let index = self.index + 1;
        // The length prefix, byte by byte (at most 12 digits, as mitmproxy).
        let mut prefix = Vec::with_capacity(16);
        loop {
            let buf = self.input.fill_buf()?;
            let Some(&c) = buf.first() else {
                if prefix.is_empty() {
                    return Ok(None);
                }
                return Err(FlowFileError::Truncated {
                    index,
                    offset: start,
                    expected: prefix.len() as u64 + 1,
                    got: prefix.len() as u64,
                });
            };
            self.input.consume(1);
            self.offset += 1;
            prefix.push(c);
            if c == b':' {
                break;
            }
            if !c.is_ascii_digit() || prefix.len() > tnetstring::MAX_LEN_DIGITS {
                return Err(FlowFileError::Corrupt {
                    index,
                    offset: start,
                    reason: "missing or invalid length prefix".into(),
                });
            }
        }
        let len: u64 = std::str::from_utf8(&prefix[..prefix.len() - 1])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or_else(|| FlowFileError::Corrupt {
                index,
                offset: start,
                reason: "missing or invalid length prefix".into(),
            })?;
        // The payload and its type byte; the buffer grows as data arrives, so a corrupt
        // length never allocates more than the file holds.
        let mut data = prefix;
        let want = len + 1;
        let got = (&mut self.input).take(want).read_to_end(&mut data)? as u64;
        self.offset += got;
        if got < want {
            return Err(FlowFileError::Truncated {
                index,
                offset: start,
                expected: data.len() as u64 - got + want,
                got: data.len() as u64,
            });
        }
        let value = tnetstring::decode(&Bytes::from(data)).map_err(|e| FlowFileError::Corrupt {
            index,
            offset: start + e.offset as u64,
            reason: e.reason,
        })?;
        let value =
            compat::migrate(value).map_err(|reason| FlowFileError::Invalid { index, reason })?;
        let flow = from_state(&value).map_err(|reason| FlowFileError::Invalid { index, reason })?;
        Ok(Some(flow))
    }
}

impl<R: Read> Iterator for FlowReader<R> {
    type Item = Result<Flow, FlowFileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if !self.started
            && let Err(e) = self.sniff()
        {
            self.done = true;
            return Some(Err(e));
        }
        if let Some(har) = self.har.as_mut() {
            return har.next().map(Ok);
        }
        match self.read_one() {
            Ok(Some(f)) => {
                self.index += 1;
                Some(Ok(f))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

/// Writes flows as mitmproxy 12 does (flow format version 21).
#[derive(Debug)]
pub struct FlowWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
    sizer: encode::Sizer,
}

impl<W: Write> FlowWriter<W> {
    /// Writes to `out` (each flow in one `write_all`; wrap files in a `BufWriter` for many
    /// small flows).
    pub fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::new(),
            sizer: encode::Sizer::default(),
        }
    }

    /// Appends one flow.
    pub fn add(&mut self, flow: &Flow) -> std::io::Result<()> {
        encode::write_flow(flow, &mut self.sizer, &mut self.buf, &mut self.out)?;
        // Do not keep a large body's buffer around after it.
        if self.buf.capacity() > 1 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer.
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Every flow of the file at `path` (`-` for stdin), or the first error.
pub fn read_file(path: &str) -> Result<Vec<Flow>, FlowFileError> {
    if path == "-" {
        return FlowReader::new(std::io::stdin().lock()).collect();
    }
    let f = std::fs::File::open(path)
        .map_err(|e| FlowFileError::Io(std::io::Error::new(e.kind(), format!("{path}: {e}"))))?;
    FlowReader::new(f).collect()
}
