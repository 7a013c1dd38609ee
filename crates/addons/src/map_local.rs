//! `map_local`: answer matching requests from local files, as mitmproxy's maplocal.

use std::path::{Path, PathBuf};

use regex::Regex;
use waylay_core::hooks::{Configure, Loader};
use waylay_core::options::OptionValue;
use waylay_core::{Addon, HookKind, HookSet, HttpFlow, OptionSpec, OptionsError, Response};

use crate::matcher::FlowMatcher;
use crate::spec::{regex_error, split_spec};
use crate::value::expand_home;

const OPTION: &str = "map_local";

/// One `[/filter]/url-regex/path` rule; `root` is canonical and exists.
#[derive(Debug, Clone)]
struct Rule {
    matcher: FlowMatcher,
    regex: Regex,
    root: PathBuf,
    /// `root` is a file, not a directory.
    is_file: bool,
}

fn parse_rule(option: &str) -> Result<Rule, String> {
    let raw = split_spec(option)?;
    let matcher = FlowMatcher::parse_opt(raw.filter)?;
    let regex = Regex::new(raw.subject).map_err(|e| {
        format!(
            "invalid regular expression {:?} ({})",
            raw.subject,
            regex_error(&e)
        )
    })?;
    let root = std::fs::canonicalize(expand_home(raw.replacement))
        .map_err(|e| format!("invalid file path {:?} ({e})", raw.replacement))?;
    let is_file = root.is_file();
    Ok(Rule {
        matcher,
        regex,
        root,
        is_file,
    })
}

/// Percent-decodes a URL path (invalid escapes stay as written; bytes that are not UTF-8
/// are replaced).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `root` joined with the untrusted relative `rel`, or `None` when `rel` would leave `root`
/// (a `..` part, a backslash, a NUL, a drive or root prefix).
fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => return None,
            part if part.contains(['\\', '\0', ':']) => return None,
            part => p.push(part),
        }
    }
    Some(p)
}

/// The files a URL may map to under a directory rule, most preferred first (mitmproxy's
/// order): the URL's remainder after the match (or the regex's first group), percent-decoded,
/// then with `/index.html`, then the same with unusual characters replaced by `_`; the
/// directory's `index.html` when nothing remains. Candidates that would leave the directory
/// are dropped.
pub(crate) fn file_candidates(url: &str, regex: &Regex, root: &Path) -> Vec<PathBuf> {
    let Some(caps) = regex.captures(url) else {
        return Vec::new();
    };
    let suffix = if regex.captures_len() > 1 {
        caps.get(1).map_or("", |m| m.as_str()).to_owned()
    } else {
        let end = caps.get(0).map_or(0, |m| m.end());
        let rest = &url[end..];
        rest.split('?')
            .next()
            .unwrap_or("")
            .trim_matches('/')
            .to_owned()
    };
    if suffix.is_empty() {
        return vec![root.join("index.html")];
    }
    let decoded = percent_decode(&suffix);
    let mut names = vec![decoded.clone(), format!("{decoded}/index.html")];
    let escaped: String = decoded
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.=(),/".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if escaped != decoded {
        names.push(escaped.clone());
        names.push(format!("{escaped}/index.html"));
    }
    let joined: Option<Vec<PathBuf>> = names.iter().map(|n| safe_join(root, n)).collect();
    joined.unwrap_or_default()
}

/// The content type for a file name, from its extension.
fn content_type(path: &Path) -> Option<String> {
    mime_guess::from_path(path).first().map(|m| m.to_string())
}

/// mitmproxy's `map_local` addon: for each rule `[SEP filter] SEP url-regex SEP path` (any
/// separator character), a request whose filter matches and whose URL (`pretty_url`)
/// matches `url-regex` is answered from a local file at `request`, never forwarded:
///
/// - `path` a file: that file;
/// - `path` a directory: the URL's remainder after the match (or the regex's first group),
///   percent-decoded, under the directory, or its `index.html` for a directory or an empty
///   remainder.
///
/// The content type comes from the file's extension. When no candidate exists the answer is
/// 404. A remainder with `..` never leaves the directory, and neither does a symlink inside
/// it (waylay checks the resolved path, where mitmproxy only checks the name); such a request
/// gets 404 too, where mitmproxy forwards it to the server.
#[derive(Debug, Default)]
pub struct MapLocal {
    rules: Vec<Rule>,
}

impl MapLocal {
    /// The addon, with no rules until `map_local` is set.
    pub fn new() -> Self {
        Self::default()
    }
}

/// `candidate` if it is a file inside `root` once symlinks are resolved.
async fn inside(root: &Path, candidate: &Path) -> Option<PathBuf> {
    let real = tokio::fs::canonicalize(candidate).await.ok()?;
    if !real.starts_with(root) {
        return None;
    }
    let meta = tokio::fs::metadata(&real).await.ok()?;
    meta.is_file().then_some(real)
}

impl Addon for MapLocal {
    fn name(&self) -> String {
        OPTION.into()
    }

    /// The flow hooks only while it has rules: without, a proxy keeps its fast path (no
    /// flow is built for requests nobody observes); the manager reads this again after every
    /// `configure`, so setting the option at run time takes effect from the next request.
    fn hooks(&self) -> HookSet {
        const LIFE: HookSet = HookSet::of(&[HookKind::Load, HookKind::Configure, HookKind::Done]);
        if !self.rules.is_empty() {
            LIFE.union(HookSet::of(&[HookKind::Request]))
        } else {
            LIFE
        }
    }

    async fn load(&mut self, loader: &mut Loader) {
        loader.add_option(OptionSpec::new(
            OPTION,
            OptionValue::Seq(Vec::new()),
            "Map remote resources to a local file using a pattern of the form \"[/flow-filter]/url-regex/file-or-directory-path\", where the separator can be any character.",
        ));
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        if let Some(rules) = crate::spec::parse_rules(cfg, OPTION, parse_rule)? {
            self.rules = rules;
        }
        Ok(())
    }

    async fn request(&mut self, flow: &mut HttpFlow) {
        if flow.response.is_some() || flow.error.is_some() || !flow.live {
            return;
        }
        let url = flow.request.pretty_url();
        let mut tried = Vec::new();
        let mut matched = false;
        for rule in &self.rules {
            if !rule.matcher.matches(flow) || !rule.regex.is_match(&url) {
                continue;
            }
            matched = true;
            let (candidates, root) = if rule.is_file {
                let dir = rule.root.parent().unwrap_or(&rule.root).to_path_buf();
                (vec![rule.root.clone()], dir)
            } else {
                (
                    file_candidates(&url, &rule.regex, &rule.root),
                    rule.root.clone(),
                )
            };
            for candidate in &candidates {
                let Some(file) = inside(&root, candidate).await else {
                    continue;
                };
                match tokio::fs::read(&file).await {
                    Ok(body) => {
                        let mut headers = vec![("server", "waylay".to_owned())];
                        if let Some(ct) = content_type(&file) {
                            headers.push(("content-type", ct));
                        }
                        flow.response = Some(Response::make(200, body, headers));
                        return;
                    }
                    Err(e) => tracing::warn!("map_local: cannot read {}: {e}", file.display()),
                }
            }
            tried.extend(candidates);
        }
        if matched {
            let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
            let list = if list.is_empty() {
                "none inside the directory".to_owned()
            } else {
                list.join(", ")
            };
            tracing::info!("map_local: no local file for {url} (candidates: {list})");
            flow.response = Some(Response::make(404, "", [("server", "waylay")]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_follow_mitmproxy() {
        let root = Path::new("/srv");
        let re = Regex::new("example.com/static").unwrap();
        assert_eq!(
            file_candidates("https://example.com/static/a/b.css?x=1", &re, root),
            vec![
                PathBuf::from("/srv/a/b.css"),
                PathBuf::from("/srv/a/b.css/index.html")
            ]
        );
        assert_eq!(
            file_candidates("https://example.com/static/", &re, root),
            vec![PathBuf::from("/srv/index.html")]
        );
        assert_eq!(
            file_candidates("https://example.com/static/a%20b", &re, root),
            vec![
                PathBuf::from("/srv/a b"),
                PathBuf::from("/srv/a b/index.html"),
                PathBuf::from("/srv/a_b"),
                PathBuf::from("/srv/a_b/index.html"),
            ]
        );
        let grouped = Regex::new(r"example\.com/(img/[^?]*)").unwrap();
        assert_eq!(
            file_candidates("https://example.com/img/x.png?v=2", &grouped, root)[0],
            PathBuf::from("/srv/img/x.png")
        );
    }

    #[test]
    fn traversal_never_leaves_the_directory() {
        let root = Path::new("/srv");
        let re = Regex::new("example.com/").unwrap();
        for url in [
            "http://example.com/../etc/passwd",
            "http://example.com/a/%2e%2e/%2e%2e/etc/passwd",
            "http://example.com/a/..%2f..%2fetc",
            "http://example.com/a\\..\\b",
        ] {
            assert_eq!(
                file_candidates(url, &re, root),
                Vec::<PathBuf>::new(),
                "{url}"
            );
        }
        assert_eq!(safe_join(root, "a/./b"), Some(PathBuf::from("/srv/a/b")));
    }

    proptest::proptest! {
        /// Whatever the URL, every candidate stays under the directory (by its components,
        /// before symlinks, which the serving path checks on the resolved file).
        #[test]
        fn candidates_never_leave_the_root(rest in "[a-z./%2eEfF\\\\?#:_-]{0,40}") {
            let root = Path::new("/srv/www");
            let re = Regex::new("example.com/").unwrap();
            let url = format!("http://example.com/{rest}");
            for c in file_candidates(&url, &re, root) {
                proptest::prop_assert!(c.starts_with(root), "{url} -> {}", c.display());
                proptest::prop_assert!(
                    !c.components().any(|p| p == std::path::Component::ParentDir),
                    "{url} -> {}",
                    c.display()
                );
            }
        }
    }

    #[test]
    fn content_types_from_extensions() {
        assert_eq!(
            content_type(Path::new("a.css")).as_deref(),
            Some("text/css")
        );
        assert_eq!(
            content_type(Path::new("a.json")).as_deref(),
            Some("application/json")
        );
        assert_eq!(content_type(Path::new("noext")), None);
    }
}
