//! `confdir/config.yaml`: option values read at start, as mitmproxy reads
//! `~/.mitmproxy/config.yaml` (option names as keys, sequences as lists). Command-line flags
//! win over it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use waylay::options::OptionType;
use waylay::{OptionValue, Options};

/// The file's name inside confdir.
pub(crate) const CONFIG_FILE: &str = "config.yaml";

/// A YAML value as an option may take it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Yaml {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Option<Yaml>>),
    Map(#[expect(dead_code, reason = "only its kind is reported")] BTreeMap<String, Option<Yaml>>),
}

impl Yaml {
    /// The value as option text, for scalars.
    fn scalar(&self) -> Option<String> {
        match self {
            Self::Bool(b) => Some(b.to_string()),
            Self::Int(i) => Some(i.to_string()),
            Self::Float(f) => Some(f.to_string()),
            Self::Str(s) => Some(s.clone()),
            Self::Seq(_) | Self::Map(_) => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::Bool(_) => "a boolean",
            Self::Int(_) => "an integer",
            Self::Float(_) => "a number",
            Self::Str(_) => "a string",
            Self::Seq(_) => "a list",
            Self::Map(_) => "a mapping",
        }
    }
}

/// Option values by name.
pub(crate) type Values = Vec<(String, OptionValue)>;

/// The option values the file sets, checked against the declared options, in name order.
/// `Ok(None)` when there is no file. Errors are one line naming the file and the key.
pub(crate) fn read(confdir: &Path, options: &Options) -> Result<Option<(PathBuf, Values)>, String> {
    let path = confdir.join(CONFIG_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("config file {}: {e}", path.display())),
    };
    let values =
        parse(&text, options).map_err(|e| format!("config file {}: {e}", path.display()))?;
    Ok(Some((path, values)))
}

/// The values the file sets for options declared in `options`, skipping what [`read`] would
/// refuse (an unknown key, a bad value): what can be known before the scripts declare
/// theirs. Empty when there is no file or it cannot be read.
#[cfg(feature = "python")]
pub(crate) fn read_known(confdir: &Path, options: &Options) -> Values {
    std::fs::read_to_string(confdir.join(CONFIG_FILE))
        .ok()
        .and_then(|text| parse_with(&text, options, false).ok())
        .unwrap_or_default()
}

/// Parses the file's text into option values.
pub(crate) fn parse(text: &str, options: &Options) -> Result<Values, String> {
    parse_with(text, options, true)
}

/// [`parse`]; unless `strict`, a key it would refuse is skipped instead.
fn parse_with(text: &str, options: &Options, strict: bool) -> Result<Values, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let map: Option<BTreeMap<String, Option<Yaml>>> =
        serde_saphyr::from_str(text).map_err(|e| {
            let msg = e.to_string();
            let first = msg.lines().map(str::trim).find(|l| !l.is_empty());
            format!(
                "not a YAML mapping of option names to values: {}",
                first.unwrap_or("invalid YAML")
            )
        })?;
    let mut out = Vec::new();
    for (key, value) in map.unwrap_or_default() {
        match entry(&key, value, options) {
            Ok(v) => out.push((key, v)),
            Err(e) if strict => return Err(e),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// One key's value, checked against its declaration.
fn entry(key: &str, value: Option<Yaml>, options: &Options) -> Result<OptionValue, String> {
    let Some(spec) = options.specs().find(|s| s.name == key) else {
        // The same wording as an unknown `--set` name, with the suggestion.
        let err = options
            .parse(key, "")
            .err()
            .map_or_else(|| format!("unknown option {key:?}"), |e| e.to_string());
        return Err(err);
    };
    let bad = |what: String| format!("option {key}: {what}");
    Ok(match (spec.typ, value) {
        (OptionType::OptStr, None) => OptionValue::OptStr(None),
        (OptionType::OptInt, None) => OptionValue::OptInt(None),
        (OptionType::Seq, None) => OptionValue::Seq(Vec::new()),
        (_, None) => return Err(bad(format!("expected {}, found nothing", spec.typ))),
        (OptionType::Seq, Some(Yaml::Seq(items))) => {
            let mut v = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item.as_ref().and_then(Yaml::scalar) {
                    Some(s) => v.push(s),
                    None => return Err(bad(format!("item {} is not a string", i + 1))),
                }
            }
            OptionValue::Seq(v)
        }
        (OptionType::Seq, Some(other)) => {
            return Err(bad(format!("expected a list, found {}", other.kind())));
        }
        (typ, Some(y)) => {
            let Some(text) = y.scalar() else {
                return Err(bad(format!("expected {typ}, found {}", y.kind())));
            };
            if typ == OptionType::Bool && !matches!(y, Yaml::Bool(_) | Yaml::Str(_)) {
                return Err(bad(format!("expected true or false, found {}", y.kind())));
            }
            options.parse(key, &text).map_err(|e| e.to_string())?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> Options {
        Options::new()
    }

    #[test]
    fn scalars_and_lists() {
        let v = parse(
            "listen_port: 9090\nssl_insecure: true\nignore_hosts:\n  - a\\.com\n  - b\nbody_size_limit: 1m\nstream_large_bodies: 2048\nproxyauth: null\n",
            &opts(),
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                (
                    "body_size_limit".into(),
                    OptionValue::OptStr(Some("1m".into()))
                ),
                (
                    "ignore_hosts".into(),
                    OptionValue::Seq(vec!["a\\.com".into(), "b".into()])
                ),
                ("listen_port".into(), OptionValue::Int(9090)),
                ("proxyauth".into(), OptionValue::OptStr(None)),
                ("ssl_insecure".into(), OptionValue::Bool(true)),
                (
                    "stream_large_bodies".into(),
                    OptionValue::OptStr(Some("2048".into()))
                ),
            ]
        );
        assert_eq!(parse("", &opts()).unwrap(), vec![]);
        assert_eq!(parse("# only a comment\n", &opts()).unwrap(), vec![]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("lisen_port: 1\n", &opts()).unwrap_err();
        assert_eq!(
            e,
            "unknown option \"lisen_port\" (did you mean \"listen_port\"?)"
        );
        let e = parse("listen_port: eighty\n", &opts()).unwrap_err();
        assert_eq!(
            e,
            "bad value \"eighty\" for option listen_port: expected an integer"
        );
        let e = parse("ignore_hosts: a.com\n", &opts()).unwrap_err();
        assert_eq!(e, "option ignore_hosts: expected a list, found a string");
        let e = parse("ssl_insecure: 3\n", &opts()).unwrap_err();
        assert_eq!(
            e,
            "option ssl_insecure: expected true or false, found an integer"
        );
        let e = parse("listen_port: [1]\n", &opts()).unwrap_err();
        assert_eq!(e, "option listen_port: expected int, found a list");
        let e = parse("- a\n- b\n", &opts()).unwrap_err();
        assert!(e.starts_with("not a YAML mapping"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = parse("a: [\n", &opts()).unwrap_err();
        assert!(!e.contains('\n'), "{e}");
    }
}
