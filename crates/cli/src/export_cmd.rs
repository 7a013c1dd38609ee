//! `waylay export FORMAT FILE [FILTER]`: prints recorded HTTP flows in one of mitmproxy's
//! export formats (curl, httpie, raw, raw_request, raw_response) to stdout.

use std::io::Write;

use waylay::addons::export::{EXPORT_FORMATS, export};
use waylay_core::{Filter, Flow};

/// Runs the subcommand on the arguments after `export`; the error is one line and whether
/// it is a usage error (exit code 2) rather than a failure (1).
pub(crate) fn run(args: &[String]) -> Result<(), (String, bool)> {
    let usage = |m: String| (m, true);
    let [format, file, filter @ ..] = args else {
        return Err(usage(format!(
            "usage: waylay export FORMAT FILE [FILTER] (FORMAT: {})",
            EXPORT_FORMATS.join(", ")
        )));
    };
    if !EXPORT_FORMATS.contains(&format.as_str()) {
        return Err(usage(format!(
            "no such export format: {format:?} (expected one of {})",
            EXPORT_FORMATS.join(", ")
        )));
    }
    let filter = if filter.is_empty() {
        None
    } else {
        let text = filter.join(" ");
        Some(Filter::parse(&text).map_err(|e| usage(format!("filter {text:?}: {e}")))?)
    };
    let flows = waylay_core::flowfile::read_file(file).map_err(|e| (e.to_string(), false))?;
    let mut out = std::io::stdout().lock();
    let mut first = true;
    for flow in &flows {
        let Flow::Http(f) = flow else { continue };
        if filter.as_ref().is_some_and(|flt| !flt.matches(&**f)) {
            continue;
        }
        let bytes = export(format, f).map_err(|e| (e.to_string(), false))?;
        if !first {
            let _ = out.write_all(b"\n");
        }
        first = false;
        out.write_all(&bytes)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(|e| (format!("cannot write to stdout: {e}"), false))?;
    }
    Ok(())
}
