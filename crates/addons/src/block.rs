//! `block_global` / `block_private`: refuses clients by where they connect from (mitmproxy's
//! `block` addon). `block_global` is on by default, so a proxy listening on a public address
//! is not an open proxy for the whole internet.

use std::net::IpAddr;

use waylay_core::flow::Client;
use waylay_core::hooks::Configure;
use waylay_core::{Addon, HookKind, HookSet, Options, OptionsError};

/// Refuses clients from public addresses (`block_global`) or private ones (`block_private`)
/// in `client_connect`.
#[derive(Debug, Default)]
pub struct Block {
    block_global: bool,
    block_private: bool,
}

impl Block {
    /// The addon for `options`; it handles `client_connect` only while one of the two options
    /// is on (the manager reads [`Addon::hooks`] again after every `configure`).
    pub fn from_options(options: &Options) -> Self {
        Self {
            block_global: options.bool("block_global"),
            block_private: options.bool("block_private"),
        }
    }
}

impl Addon for Block {
    fn name(&self) -> String {
        "block".into()
    }

    fn hooks(&self) -> HookSet {
        if self.block_global || self.block_private {
            HookSet::of(&[HookKind::Configure, HookKind::ClientConnect])
        } else {
            HookSet::of(&[HookKind::Configure])
        }
    }

    async fn configure(&mut self, cfg: &mut Configure) -> Result<(), OptionsError> {
        self.block_global = cfg.options.bool("block_global");
        self.block_private = cfg.options.bool("block_private");
        Ok(())
    }

    async fn client_connect(&mut self, client: &mut Client) {
        let ip = client.peername.ip();
        let private = is_private(ip);
        let rule = match (private, self.block_private, self.block_global) {
            (true, true, _) => "block_private",
            (false, _, true) => "block_global",
            _ => return,
        };
        client.error = Some(format!("client {ip} refused ({rule})"));
    }
}

/// Whether `ip` is a private, loopback or link-local address (mitmproxy's `block_private`;
/// everything else is global for `block_global`).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                // Shared address space (RFC 6598, carrier-grade NAT).
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                // Unique local (fc00::/7) and link-local (fe80::/10).
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}
