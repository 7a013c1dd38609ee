//! Minting and caching the leaf certificates presented to intercepted clients.
//!
//! Every leaf shares one ECDSA P-256 key generated at start-up: key
//! generation is the expensive part of minting, and a per-host key buys no
//! security when the CA key sits next to it anyway (mitmproxy does the same).

use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use dashmap::DashMap;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::sign::{CertifiedKey, SigningKey, SingleCertAndKey};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::ca::CertificateAuthority;
use super::ca::{BACKDATE, random_serial};
use super::error::TlsError;

/// Default number of cached leaves (and, separately, server configs).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Leaf lifetime. Apple platforms reject server certificates valid for more
/// than 398 days, so stay well below that.
const LEAF_VALIDITY: Duration = Duration::days(365);
/// Re-mint this long before a cached leaf expires, so a long-running proxy
/// never serves an expired certificate.
const REFRESH_MARGIN: Duration = Duration::days(7);
/// The common name field is limited to 64 characters (RFC 5280 ub-common-name).
const MAX_CN_LEN: usize = 64;
/// TLS 1.2 session-id cache shared by all server configs.
const SESSION_CACHE_SIZE: usize = 4096;

/// Cache key: the set of names a certificate covers, normalised so that
/// `["B.test", "a.test"]` and `["a.test", "b.test", "a.test"]` share a leaf.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct CacheKey(Vec<String>);

/// A minted leaf plus the time after which it should be replaced.
#[derive(Clone)]
struct Leaf {
    key: Arc<CertifiedKey>,
    refresh_after: OffsetDateTime,
}

/// Shared between concurrent requesters of the same names so that only the
/// first one mints; the rest block on it. The error is a string because
/// waiters each need their own copy.
type LeafCell = Arc<OnceLock<Result<Leaf, String>>>;

/// Server configs differ by names and by the ALPN list offered to clients.
type ConfigKey = (CacheKey, Vec<Vec<u8>>);
/// A config plus the refresh time of the leaf inside it.
type CachedConfig = (Arc<ServerConfig>, OffsetDateTime);

/// A cache entry with a logical timestamp for approximate LRU eviction.
struct Slot<T> {
    value: T,
    last_used: AtomicU64,
}

impl<T> Slot<T> {
    fn new(value: T, now: u64) -> Self {
        Self {
            value,
            last_used: AtomicU64::new(now),
        }
    }
}

/// Mints leaf certificates signed by the CA and caches them, together with
/// ready-to-use rustls server configurations.
pub struct CertCache {
    ca: Arc<CertificateAuthority>,
    /// rcgen's view of the shared leaf key (its public half goes into leaves).
    leaf_key: KeyPair,
    /// rustls' view of the same key, loaded once.
    leaf_signer: Arc<dyn SigningKey>,
    leaves: DashMap<CacheKey, Slot<LeafCell>>,
    configs: DashMap<ConfigKey, Slot<CachedConfig>>,
    /// One session store for all configs so TLS 1.2 resumption works across
    /// them and memory stays bounded.
    sessions: Arc<dyn StoresServerSessions>,
    capacity: usize,
    minted: AtomicU64,
    clock: AtomicU64,
    /// Offer clients TLS 1.3 only (`tls_version_client_min=TLS1_3`).
    tls13_only: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for CertCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertCache")
            .field("ca", &self.ca)
            .field("cached", &self.leaves.len())
            .field("capacity", &self.capacity)
            .field("minted", &self.minted())
            .finish_non_exhaustive()
    }
}

impl CertCache {
    /// Creates a cache holding up to [`DEFAULT_CAPACITY`] leaves, generating
    /// the shared leaf key.
    pub fn new(ca: Arc<CertificateAuthority>) -> Result<Self, TlsError> {
        Self::with_capacity(ca, DEFAULT_CAPACITY)
    }

    /// Like [`CertCache::new`] with a custom bound on cached leaves and
    /// configs. When a map is full, its least recently used half is dropped.
    pub fn with_capacity(ca: Arc<CertificateAuthority>, capacity: usize) -> Result<Self, TlsError> {
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let pkcs8 = PrivatePkcs8KeyDer::from(leaf_key.serialize_der());
        let leaf_signer = super::provider::provider()
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(pkcs8))?;
        Ok(Self {
            ca,
            leaf_key,
            leaf_signer,
            leaves: DashMap::new(),
            configs: DashMap::new(),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            capacity: capacity.max(1),
            minted: AtomicU64::new(0),
            clock: AtomicU64::new(0),
            tls13_only: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The CA that signs the leaves.
    pub fn ca(&self) -> &Arc<CertificateAuthority> {
        &self.ca
    }

    /// How many leaves were actually minted (cache misses) so far.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// How many leaves are currently cached.
    pub fn cached(&self) -> usize {
        self.leaves.len()
    }

    /// Returns a certificate chain `[leaf, CA]` with the shared key, valid for
    /// `names` (host names and/or IP literals, IPv6 with or without brackets).
    ///
    /// The first name becomes the subject CN. Names that cannot appear in a
    /// certificate are skipped; it is an error if none are left. Concurrent
    /// calls for the same names mint only once.
    pub fn get<S: AsRef<str>>(&self, names: &[S]) -> Result<Arc<CertifiedKey>, TlsError> {
        let names = Names::parse(names)?;
        Ok(self.leaf(&names)?.key)
    }

    /// Offer clients TLS 1.3 only from now on (or 1.2 and 1.3 again); cached
    /// configurations made for the other setting are dropped.
    pub fn set_tls13_only(&self, on: bool) {
        if self.tls13_only.swap(on, Ordering::AcqRel) != on {
            self.configs.clear();
        }
    }

    /// Returns a rustls server configuration (TLS 1.2 and 1.3, or 1.3 only after
    /// [`CertCache::set_tls13_only`]; ring) that
    /// presents the leaf for `names` and offers `alpn` in preference order.
    ///
    /// Configurations are cached per (names, ALPN list), so calling this for
    /// every accepted connection is cheap.
    pub fn server_config<S: AsRef<str>>(
        &self,
        names: &[S],
        alpn: &[Vec<u8>],
    ) -> Result<Arc<ServerConfig>, TlsError> {
        let names = Names::parse(names)?;
        let map_key = (names.key.clone(), alpn.to_vec());
        let now = self.tick();

        if let Some(slot) = self.configs.get(&map_key)
            && OffsetDateTime::now_utc() < slot.value.1
        {
            slot.last_used.store(now, Ordering::Relaxed);
            return Ok(slot.value.0.clone());
        }

        let leaf = self.leaf(&names)?;
        let versions: &[&rustls::SupportedProtocolVersion] =
            if self.tls13_only.load(Ordering::Acquire) {
                &[&rustls::version::TLS13]
            } else {
                &[&rustls::version::TLS13, &rustls::version::TLS12]
            };
        // Waylay picks the cipher suite in its own order, AES-128-GCM first (see
        // `aes128_first_provider`), as mitmproxy picks in its own.
        let mut config =
            ServerConfig::builder_with_provider(super::provider::aes128_first_provider())
                .with_protocol_versions(versions)?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(SingleCertAndKey::from(leaf.key)));
        config.alpn_protocols = alpn.to_vec();
        config.ignore_client_order = true;
        config.session_storage = self.sessions.clone();
        let config = Arc::new(config);

        if self.configs.len() >= self.capacity {
            evict_oldest_half(&self.configs, self.capacity);
        }
        // Racing builders are harmless: configs are cheap and equivalent, the
        // last one stored wins.
        self.configs.insert(
            map_key,
            Slot::new((config.clone(), leaf.refresh_after), now),
        );
        Ok(config)
    }

    fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// Looks up or mints the leaf for already-normalised names.
    fn leaf(&self, names: &Names) -> Result<Leaf, TlsError> {
        // The second round only happens when the cached leaf was stale or a
        // previous mint failed and got removed.
        for _ in 0..2 {
            let cell = self.leaf_cell(&names.key);
            let mut own_error = None;
            let outcome = cell.get_or_init(|| {
                self.mint(names).map_err(|e| {
                    let message = e.to_string();
                    own_error = Some(e);
                    message
                })
            });
            match outcome {
                Ok(leaf) if OffsetDateTime::now_utc() < leaf.refresh_after => {
                    return Ok(leaf.clone());
                }
                Ok(_) => {
                    self.forget(&names.key, &cell);
                }
                Err(message) => {
                    // Forget the failure so a later request can try again.
                    self.forget(&names.key, &cell);
                    return Err(own_error.unwrap_or_else(|| TlsError::Rcgen(message.clone())));
                }
            }
        }
        Err(TlsError::Rcgen(
            "freshly minted certificate is already due for renewal (is the CA about to expire?)"
                .into(),
        ))
    }

    /// Returns the shared cell for `key`, inserting an empty one on a miss.
    /// No map guard survives this function, so callers may block on the
    /// cell without stalling other keys in the same shard.
    fn leaf_cell(&self, key: &CacheKey) -> LeafCell {
        let now = self.tick();
        if let Some(slot) = self.leaves.get(key) {
            slot.last_used.store(now, Ordering::Relaxed);
            return slot.value.clone();
        }
        if self.leaves.len() >= self.capacity {
            evict_oldest_half(&self.leaves, self.capacity);
        }
        self.leaves
            .entry(key.clone())
            .or_insert_with(|| Slot::new(Arc::new(OnceLock::new()), now))
            .value
            .clone()
    }

    /// Removes `cell` from the map unless someone already replaced it.
    fn forget(&self, key: &CacheKey, cell: &LeafCell) {
        self.leaves
            .remove_if(key, |_, slot| Arc::ptr_eq(&slot.value, cell));
    }

    fn mint(&self, names: &Names) -> Result<Leaf, TlsError> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = names.sans.clone();

        let mut subject = DistinguishedName::new();
        if let Some(cn) = names.common_name() {
            subject.push(DnType::CommonName, cn);
        }
        subject.push(DnType::OrganizationName, "waylay");
        params.distinguished_name = subject;

        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;

        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        // A leaf outliving its CA would be rejected anyway; capping keeps the
        // refresh logic honest.
        params.not_after = (now + LEAF_VALIDITY).min(self.ca.not_after());
        params.serial_number = Some(random_serial()?);

        let cert = self.ca.sign(&params, &self.leaf_key)?;
        let chain = vec![cert.der().clone(), self.ca.cert_der().clone()];
        self.minted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(names = ?names.ordered, "minted leaf certificate");
        Ok(Leaf {
            key: Arc::new(CertifiedKey::new(chain, self.leaf_signer.clone())),
            refresh_after: params.not_after - REFRESH_MARGIN,
        })
    }
}

/// Drops the least recently used half of `map` once it holds `capacity`
/// entries. Halving (rather than removing one) amortises the scan over many
/// inserts.
fn evict_oldest_half<K: Eq + Hash, V>(map: &DashMap<K, Slot<V>>, capacity: usize) {
    let mut stamps: Vec<u64> = map
        .iter()
        .map(|slot| slot.last_used.load(Ordering::Relaxed))
        .collect();
    if stamps.len() < capacity {
        // Another thread evicted meanwhile.
        return;
    }
    let keep = capacity / 2;
    if keep == 0 {
        map.clear();
        return;
    }
    let index = stamps.len() - keep;
    let (_, cutoff, _) = stamps.select_nth_unstable(index);
    let cutoff = *cutoff;
    map.retain(|_, slot| slot.last_used.load(Ordering::Relaxed) >= cutoff);
    tracing::debug!(
        kept = map.len(),
        "evicted least recently used TLS cache entries"
    );
}

/// Requested names, cleaned up for use as SANs and as a cache key.
struct Names {
    key: CacheKey,
    /// Distinct names in request order; the first is the preferred CN.
    ordered: Vec<String>,
    sans: Vec<SanType>,
}

impl Names {
    fn parse<S: AsRef<str>>(raw: &[S]) -> Result<Self, TlsError> {
        let mut ordered = Vec::with_capacity(raw.len());
        let mut sans = Vec::with_capacity(raw.len());
        let mut first_invalid = None;
        for name in raw {
            let name = name.as_ref();
            match normalize(name) {
                Some(Ok((text, san))) if !ordered.contains(&text) => {
                    ordered.push(text);
                    sans.push(san);
                }
                Some(Err(())) => {
                    // Upstream certificates sometimes carry odd SANs; one bad
                    // name should not cost the connection its certificate.
                    tracing::debug!(name, "skipping name unusable in a certificate");
                    first_invalid.get_or_insert_with(|| name.to_owned());
                }
                // Duplicates and blank entries add nothing.
                Some(Ok(_)) | None => {}
            }
        }
        if ordered.is_empty() {
            return Err(first_invalid.map_or(TlsError::NoNames, TlsError::InvalidName));
        }
        let mut key = ordered.clone();
        key.sort_unstable();
        Ok(Self {
            key: CacheKey(key),
            ordered,
            sans,
        })
    }

    /// The first name that fits the CN length limit. Modern clients ignore
    /// the CN in favour of SANs, so omitting it for long names is harmless.
    fn common_name(&self) -> Option<&str> {
        self.ordered
            .iter()
            .map(String::as_str)
            .find(|n| n.len() <= MAX_CN_LEN)
    }
}

/// Canonicalises one name: IP literals to their standard text form, DNS
/// names to lowercase without a trailing dot. `None` for empty input,
/// `Some(Err(()))` for names a certificate cannot carry.
fn normalize(raw: &str) -> Option<Result<(String, SanType), ()>> {
    let trimmed = raw.trim();
    let unbracketed = trimmed
        .strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .unwrap_or(trimmed);
    if unbracketed.is_empty() {
        return None;
    }

    let ip = unbracketed.parse::<IpAddr>().ok().or_else(|| {
        // Zone ids ("fe80::1%eth0") are local routing detail, not identity.
        let (addr, _zone) = unbracketed.split_once('%')?;
        addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    });
    if let Some(ip) = ip {
        return Some(Ok((ip.to_string(), SanType::IpAddress(ip))));
    }

    let dns = unbracketed.trim_end_matches('.').to_ascii_lowercase();
    if dns.is_empty() {
        return None;
    }
    let plausible = dns
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'));
    if !plausible {
        return Some(Err(()));
    }
    Some(
        dns.clone()
            .try_into()
            .map(|ia5| (dns, SanType::DnsName(ia5)))
            .map_err(|_| ()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(names: &[&str]) -> Vec<String> {
        Names::parse(names).map(|n| n.key.0).unwrap_or_default()
    }

    #[test]
    fn key_is_sorted_lowercased_and_deduplicated() {
        assert_eq!(
            key_of(&["B.test.", "a.test", "b.test"]),
            vec!["a.test".to_owned(), "b.test".to_owned()]
        );
    }

    #[test]
    fn ip_literals_are_canonical() {
        assert_eq!(key_of(&["[::1]"]), vec!["::1".to_owned()]);
        assert_eq!(key_of(&["0:0::1"]), vec!["::1".to_owned()]);
        assert_eq!(key_of(&["fe80::1%eth0"]), vec!["fe80::1".to_owned()]);
        assert_eq!(key_of(&["127.0.0.1"]), vec!["127.0.0.1".to_owned()]);
    }

    #[test]
    fn bad_names_are_skipped_or_reported() {
        assert_eq!(key_of(&["ok.test", "bad name"]), vec!["ok.test".to_owned()]);
        assert!(matches!(
            Names::parse(&["bad name"]),
            Err(TlsError::InvalidName(_))
        ));
        assert!(matches!(Names::parse(&["", " "]), Err(TlsError::NoNames)));
        let none: [&str; 0] = [];
        assert!(matches!(Names::parse(&none), Err(TlsError::NoNames)));
    }

    #[test]
    fn long_names_get_no_cn() {
        let long = format!("{}.test", "a".repeat(70));
        let names = Names::parse(&[long.as_str(), "short.test"]).ok();
        assert_eq!(
            names.as_ref().and_then(Names::common_name),
            Some("short.test")
        );
    }
}
