//! The CA onboarding page: `http://mitm.it/` through the proxy is answered by waylay itself
//! with download links for the CA certificate and install steps.

use std::path::{Path, PathBuf};

use waylay_core::hooks::{Configure, Loader};

use crate::value::expand_home;
use waylay_core::options::OptionValue;
use waylay_core::{
    Addon, HookKind, HookSet, HttpFlow, OptionSpec, Options, OptionsError, Response,
};

/// The page, with links to `/cert/pem`, `/cert/cer` and `/cert/p12`.
const PAGE: &str = include_str!("onboarding.html");

/// The default `onboarding_host`, mitmproxy's.
pub const ONBOARDING_HOST: &str = "mitm.it";

/// The certificate files the proxy writes in `confdir` (waylay's), then mitmproxy's (used when
/// confdir holds mitmproxy's CA and no waylay one).
const PEM_FILES: [&str; 2] = ["waylay-ca-cert.pem", "mitmproxy-ca-cert.pem"];
const DER_FILES: [&str; 2] = ["waylay-ca-cert.cer", "mitmproxy-ca-cert.cer"];

/// mitmproxy's onboarding app as an addon: while `onboarding` is on (the default), any request
/// whose host (the `Host` header, else the destination) is `onboarding_host` is answered at
/// `requestheaders` and never forwarded:
///
/// | path | answer |
/// |---|---|
/// | `/` | an HTML page with the three downloads and install steps per platform |
/// | `/cert/pem` | `waylay-ca-cert.pem` from `confdir`, as an attachment |
/// | `/cert/cer` | `waylay-ca-cert.cer` (DER) |
/// | `/cert/p12` | the certificate alone as PKCS#12 (no key; empty password) |
/// | anything else | 404 |
///
/// The files are read when asked for (without blocking the worker), so the page always
/// offers the CA the proxy uses; a confdir holding mitmproxy's CA offers
/// `mitmproxy-ca-cert.*`.
#[derive(Debug, Default)]
pub struct Onboarding {
    enabled: bool,
    host: String,
    confdir: PathBuf,
}

impl Onboarding {
    /// The addon; it takes `onboarding`, `onboarding_host` and `confdir` from the options.
    pub fn new() -> Self {
        Self::default()
    }

    /// The options it declares in `load`.
    pub fn option_specs() -> Vec<OptionSpec> {
        vec![
            OptionSpec::new(
                "onboarding",
                OptionValue::Bool(true),
                "Serve the CA onboarding page at onboarding_host through the proxy.",
            ),
            OptionSpec::new(
                "onboarding_host",
                OptionValue::Str(ONBOARDING_HOST.into()),
                "Host name of the onboarding page (requests to it are answered by waylay, never forwarded).",
            ),
        ]
    }

    async fn serve(&self, path: &str) -> Response {
        let path = path.split(['?', '#']).next().unwrap_or("/");
        match path {
            "/" | "/index.html" => Response::make(
                200,
                PAGE,
                [
                    ("content-type", "text/html; charset=utf-8"),
                    ("cache-control", "no-store"),
                ],
            ),
            "/cert/pem" => self.file(&PEM_FILES).await,
            "/cert/cer" => self.file(&DER_FILES).await,
            "/cert/p12" => match read_first(&self.confdir, &DER_FILES).await {
                Ok((_, der)) => match p12_of(&der) {
                    Ok(p12) => attachment(p12, "application/x-pkcs12", "waylay-ca-cert.p12"),
                    Err(e) => failure(500, &format!("cannot build the PKCS#12 file: {e}")),
                },
                Err(e) => failure(404, &e),
            },
            _ => failure(404, &format!("no such page: {path}")),
        }
    }

    async fn file(&self, names: &[&'static str]) -> Response {
        match read_first(&self.confdir, names).await {
            // The name the file is offered under follows the CA in use.
            Ok((name, bytes)) => attachment(bytes, "application/x-x509-ca-cert", name),
            Err(e) => failure(404, &e),
        }
    }
}

fn attachment(body: Vec<u8>, content_type: &str, filename: &str) -> Response {
    Response::make(
        200,
        body,
        [
            ("content-type", content_type.to_owned()),
            (
                "content-disposition",
                format!("attachment; filename=\"{filename}\""),
            ),
            ("cache-control", "no-store".to_owned()),
        ],
    )
}

fn failure(status: u16, msg: &str) -> Response {
    Response::make(
        status,
        format!("{msg}\n"),
        [("content-type", "text/plain; charset=utf-8")],
    )
}

/// The first of `names` that exists in `dir`, read without blocking the worker.
async fn read_first(dir: &Path, names: &[&'static str]) -> Result<(&'static str, Vec<u8>), String> {
    for name in names {
        match tokio::fs::read(dir.join(name)).await {
            Ok(b) => return Ok((name, b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("cannot read {name}: {e}")),
        }
    }
    Err(format!("no CA certificate in {}", dir.display()))
}

/// A PKCS#12 store holding only the certificate `der` (no key), with an empty password, as
/// mitmproxy offers it for iOS and Windows.
pub fn p12_of(der: &[u8]) -> Result<Vec<u8>, String> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry};
    let cert = Certificate::from_der(der).map_err(|e| e.to_string())?;
    let mut store = KeyStore::new();
    store.add_entry("waylay", KeyStoreEntry::Certificate(cert));
    store.writer("").write().map_err(|e| e.to_string())
}

impl Addon for Onboarding {
    fn name(&self) -> String {
        "onboarding".into()
    }

    fn hooks(&self) -> HookSet {
        HookSet::of(&[
            HookKind::Load,
            HookKind::Configure,
            HookKind::Done,
            HookKind::RequestHeaders,
        ])
    }

    // Only requests to the onboarding host need a flow: others take the proxy's flowless path
    // when no other addon looks at HTTP (the onboarding page is on by default).
    fn http_hosts(options: &Options) -> Option<Vec<String>> {
        if !options.bool("onboarding") {
            return Some(Vec::new());
        }
        let host = options.str("onboarding_host").unwrap_or(ONBOARDING_HOST);
        Some(vec![host.trim().to_ascii_lowercase()])
    }

    async fn load(&mut self, loader: &mut Loader) {
        for spec in Self::option_specs() {
            loader.add_option(spec);
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        let o = &cfg.options;
        let host = o.str("onboarding_host").unwrap_or(ONBOARDING_HOST).trim();
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "/?#@".contains(c))
        {
            return Err(OptionsError::rejected(
                "onboarding_host",
                format!("{host:?} is not a host name"),
            ));
        }
        self.enabled = o.bool("onboarding");
        self.host = host.to_ascii_lowercase();
        self.confdir = expand_home(o.str("confdir").unwrap_or("~/.waylay"));
        Ok(())
    }

    // Answered at `requestheaders` (mitmproxy answers at `request`): the client sees the
    // same, and no other request's body is buffered for this addon.
    async fn request_headers(&mut self, flow: &mut HttpFlow) {
        if !self.enabled || flow.response.is_some() || flow.error.is_some() || !flow.live {
            return;
        }
        if !flow.request.pretty_host().eq_ignore_ascii_case(&self.host) {
            return;
        }
        let resp = self.serve(&flow.request.path).await;
        flow.response = Some(resp);
    }
}
