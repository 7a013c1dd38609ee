//! `Content-Encoding` codecs: gzip, deflate, br, zstd (and identity).

use std::io::{Read, Write};

/// Why a body could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum EncodingError {
    /// The encoding name is not one waylay knows.
    #[error("unsupported content encoding {0:?}")]
    Unsupported(String),
    /// The bytes are not valid for the encoding.
    #[error("invalid {encoding} data: {reason}")]
    Invalid {
        /// The encoding that failed.
        encoding: String,
        /// What the codec said.
        reason: String,
    },
}

/// Upper bound on a decoded body, so a small compressed bomb cannot exhaust memory.
pub const MAX_DECODED: u64 = 1 << 30;

fn invalid(encoding: &str, e: impl std::fmt::Display) -> EncodingError {
    EncodingError::Invalid {
        encoding: encoding.to_owned(),
        reason: e.to_string(),
    }
}

fn read_bounded(encoding: &str, r: impl Read) -> Result<Vec<u8>, EncodingError> {
    let mut out = Vec::new();
    let n = r
        .take(MAX_DECODED + 1)
        .read_to_end(&mut out)
        .map_err(|e| invalid(encoding, e))?;
    if n as u64 > MAX_DECODED {
        return Err(invalid(encoding, "decoded body exceeds 1 GiB"));
    }
    Ok(out)
}

/// Decodes `data` that was encoded with one `Content-Encoding` token.
pub fn decode(encoding: &str, data: &[u8]) -> Result<Vec<u8>, EncodingError> {
    let e = encoding.trim().to_ascii_lowercase();
    match e.as_str() {
        "" | "identity" | "none" => Ok(data.to_vec()),
        "gzip" | "x-gzip" => read_bounded(&e, flate2::read::GzDecoder::new(data)),
        "deflate" => {
            // Servers send both zlib-wrapped and raw deflate under this name.
            match read_bounded(&e, flate2::read::ZlibDecoder::new(data)) {
                Ok(v) => Ok(v),
                Err(_) => read_bounded(&e, flate2::read::DeflateDecoder::new(data)),
            }
        }
        "br" => read_bounded(&e, brotli::Decompressor::new(data, 4096)),
        "zstd" => {
            let d = zstd::stream::read::Decoder::new(data).map_err(|err| invalid(&e, err))?;
            read_bounded(&e, d)
        }
        _ => Err(EncodingError::Unsupported(encoding.to_owned())),
    }
}

/// Encodes `data` with one `Content-Encoding` token.
pub fn encode(encoding: &str, data: &[u8]) -> Result<Vec<u8>, EncodingError> {
    let e = encoding.trim().to_ascii_lowercase();
    match e.as_str() {
        "" | "identity" | "none" => Ok(data.to_vec()),
        "gzip" | "x-gzip" => {
            let mut w = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).map_err(|err| invalid(&e, err))?;
            w.finish().map_err(|err| invalid(&e, err))
        }
        "deflate" => {
            let mut w = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            w.write_all(data).map_err(|err| invalid(&e, err))?;
            w.finish().map_err(|err| invalid(&e, err))
        }
        "br" => {
            let mut out = Vec::new();
            {
                let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                w.write_all(data).map_err(|err| invalid(&e, err))?;
            }
            Ok(out)
        }
        "zstd" => zstd::stream::encode_all(data, 3).map_err(|err| invalid(&e, err)),
        _ => Err(EncodingError::Unsupported(encoding.to_owned())),
    }
}

/// Decodes a body through a whole `Content-Encoding` header value (`gzip, br` was applied
/// gzip first, so it is undone last).
pub fn decode_all(header: &str, data: &[u8]) -> Result<Vec<u8>, EncodingError> {
    let mut tokens: Vec<&str> = header
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    tokens.reverse();
    let mut cur = data.to_vec();
    for t in tokens {
        cur = decode(t, &cur)?;
    }
    Ok(cur)
}

/// Encodes a body with a whole `Content-Encoding` header value, in the order listed.
pub fn encode_all(header: &str, data: &[u8]) -> Result<Vec<u8>, EncodingError> {
    let mut cur = data.to_vec();
    for t in header.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        cur = encode(t, &cur)?;
    }
    Ok(cur)
}
