//! A replacement value as the rewriting addons take it: literal (with Python escapes), or
//! `@path` read from a file each time it is used.

use std::path::PathBuf;

use bytes::Bytes;

use crate::spec::unescape;

/// A literal value, or a file to read it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replacement {
    Literal(Bytes),
    File(PathBuf),
}

impl Replacement {
    /// `@path` is a file (checked to be readable now), anything else a literal with Python's
    /// escapes decoded.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text.strip_prefix('@') {
            Some(path) => {
                let path = expand_home(path);
                std::fs::metadata(&path)
                    .map_err(|e| format!("cannot read file {}: {e}", path.display()))
                    .and_then(|m| {
                        if m.is_file() {
                            Ok(())
                        } else {
                            Err(format!("{} is not a file", path.display()))
                        }
                    })?;
                Ok(Self::File(path))
            }
            None => Ok(Self::Literal(unescape(text)?.into())),
        }
    }

    /// The value now (a file is read without blocking the worker).
    pub(crate) async fn read(&self) -> Result<Bytes, String> {
        match self {
            Self::Literal(b) => Ok(b.clone()),
            Self::File(p) => tokio::fs::read(p)
                .await
                .map(Bytes::from)
                .map_err(|e| format!("cannot read replacement file {}: {e}", p.display())),
        }
    }
}

/// Expands a leading `~/` to the home directory.
pub(crate) fn expand_home(p: &str) -> PathBuf {
    let rest = if p == "~" {
        Some("")
    } else {
        p.strip_prefix("~/")
    };
    match (rest, std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}
