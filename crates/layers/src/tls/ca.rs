//! The local certificate authority that signs the certificates waylay presents
//! to intercepted clients.
//!
//! The on-disk layout deliberately mirrors mitmproxy's (`~/.mitmproxy`): one
//! PEM file with key and certificate, plus the certificate alone as PEM and
//! DER for installing into trust stores. A `mitmproxy-ca.pem` is picked up
//! as is, so a CA a user already trusts for mitmproxy keeps working.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use super::error::TlsError;

/// File holding waylay's CA private key followed by its certificate.
pub const CA_FILE: &str = "waylay-ca.pem";
/// File holding only waylay's CA certificate, PEM encoded.
pub const CA_CERT_PEM_FILE: &str = "waylay-ca-cert.pem";
/// File holding only waylay's CA certificate, DER encoded (for Windows and
/// Android, which prefer `.cer`).
pub const CA_CERT_DER_FILE: &str = "waylay-ca-cert.cer";
/// mitmproxy's key + certificate file, used when waylay has none of its own.
pub const MITMPROXY_CA_FILE: &str = "mitmproxy-ca.pem";

/// How long a freshly created CA stays valid.
const CA_VALIDITY: Duration = Duration::days(3652);
/// Backdating absorbs clock skew between this machine and the clients.
pub(crate) const BACKDATE: Duration = Duration::days(2);

/// A CA certificate together with the key that signs leaf certificates.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    not_after: OffsetDateTime,
    origin: Option<PathBuf>,
}

impl fmt::Debug for CertificateAuthority {
    // Hand-written so the signing key can never end up in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("origin", &self.origin)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the CA from `confdir`, or creates one there.
    ///
    /// Order: `waylay-ca.pem`, then `mitmproxy-ca.pem`, else a new ECDSA P-256
    /// CA is generated and written as `waylay-ca.pem` (mode 0600),
    /// `waylay-ca-cert.pem` and `waylay-ca-cert.cer`. The companion
    /// certificate files are (re)written whenever waylay's own CA is used and
    /// they are missing or stale. `confdir` is created if missing.
    pub fn load_or_create(confdir: &Path) -> Result<Self, TlsError> {
        fs::create_dir_all(confdir).map_err(TlsError::io(confdir))?;

        let own = confdir.join(CA_FILE);
        if let Some(pem) = read_if_exists(&own)? {
            let ca = Self::parse(&pem, Some(own.clone()))?;
            warn_if_group_readable(&own);
            ca.write_companions(confdir)?;
            return Ok(ca);
        }

        let mitm = confdir.join(MITMPROXY_CA_FILE);
        if let Some(pem) = read_if_exists(&mitm)? {
            // mitmproxy's confdir is the user's; we only read from it.
            tracing::info!(path = %mitm.display(), "using mitmproxy's CA");
            return Self::parse(&pem, Some(mitm));
        }

        let bundle = generate_bundle()?;
        let ca = if publish_exclusive(&own, bundle.as_bytes())? {
            tracing::info!(path = %own.display(), "created a new CA");
            Self::parse(&bundle, Some(own))?
        } else {
            // Another process created the CA between our check and our write;
            // use theirs so both agree on a single CA.
            let pem = fs::read_to_string(&own).map_err(TlsError::io(&own))?;
            Self::parse(&pem, Some(own))?
        };
        ca.write_companions(confdir)?;
        Ok(ca)
    }

    /// Parses a CA from PEM text holding a private key (PKCS#8, PKCS#1 RSA
    /// or SEC1 EC) and its certificate, in any order.
    pub fn from_pem(pem: &str) -> Result<Self, TlsError> {
        Self::parse(pem, None)
    }

    /// Generates a fresh CA that lives only in memory (for tests and
    /// throw-away setups).
    pub fn generate() -> Result<Self, TlsError> {
        Self::parse(&generate_bundle()?, None)
    }

    /// The CA certificate, PEM encoded.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER encoded.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The file the CA was loaded from or written to; `None` for in-memory CAs.
    pub fn origin(&self) -> Option<&Path> {
        self.origin.as_deref()
    }

    /// End of the CA's validity; leaves must not outlive it.
    pub(crate) fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// Signs a leaf certificate for `public_key` with the CA key.
    pub(crate) fn sign(
        &self,
        params: &CertificateParams,
        public_key: &impl PublicKeyData,
    ) -> Result<Certificate, TlsError> {
        Ok(params.signed_by(public_key, &self.issuer)?)
    }

    fn parse(pem: &str, origin: Option<PathBuf>) -> Result<Self, TlsError> {
        let label = origin
            .as_ref()
            .map_or_else(|| "CA PEM".to_owned(), |p| p.display().to_string());

        let key_der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
            Ok(key) => key,
            Err(rustls_pki_types::pem::Error::NoItemsFound) => {
                return Err(TlsError::MissingKey { origin: label });
            }
            Err(e) => return Err(bad_pem(&label, e)),
        };
        let key = key_pair_from_der(&key_der, &label)?;

        let mut certs = Vec::new();
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            certs.push(cert.map_err(|e| bad_pem(&label, e))?);
        }
        if certs.is_empty() {
            return Err(TlsError::MissingCert { origin: label });
        }

        // Bundles may carry a chain; the CA certificate is the one whose
        // public key is ours.
        let mut found = None;
        for der in certs {
            let (_, cert) =
                x509_parser::parse_x509_certificate(&der).map_err(|e| TlsError::BadCert {
                    origin: label.clone(),
                    reason: e.to_string(),
                })?;
            if *cert.public_key().subject_public_key.data == *key.public_key_raw() {
                let not_after = cert.validity().not_after.to_datetime();
                if !cert.is_ca() {
                    tracing::warn!(origin = %label, "CA certificate lacks basicConstraints CA:TRUE; clients will reject leaves it signs");
                }
                if not_after < OffsetDateTime::now_utc() {
                    tracing::warn!(origin = %label, "CA certificate has expired");
                }
                found = Some((der.clone(), not_after));
                break;
            }
        }
        let Some((cert_der, not_after)) = found else {
            return Err(TlsError::KeyMismatch { origin: label });
        };

        // Taking name and key identifier from the existing certificate keeps
        // the issuer of our leaves byte-identical to the CA's subject, which
        // chain building depends on.
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| TlsError::BadCert {
            origin: label.clone(),
            reason: e.to_string(),
        })?;
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);

        Ok(Self {
            issuer,
            cert_der,
            cert_pem,
            not_after,
            origin,
        })
    }

    /// Writes the certificate-only files if they are missing or belong to a
    /// different CA (say, one left over after the key file was deleted).
    fn write_companions(&self, confdir: &Path) -> Result<(), TlsError> {
        let files: [(&str, &[u8]); 2] = [
            (CA_CERT_PEM_FILE, self.cert_pem.as_bytes()),
            (CA_CERT_DER_FILE, self.cert_der.as_ref()),
        ];
        for (name, contents) in files {
            let path = confdir.join(name);
            match fs::read(&path) {
                Ok(existing) if existing == contents => continue,
                Ok(_) => {
                    tracing::info!(path = %path.display(), "replacing stale CA certificate file")
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(TlsError::io(&path)(e)),
            }
            replace_atomically(&path, contents)?;
        }
        Ok(())
    }
}

/// Creates a new CA and returns its key and certificate as one PEM bundle,
/// key first like mitmproxy's files.
fn generate_bundle() -> Result<String, TlsError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;

    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, "waylay");
    name.push(DnType::OrganizationName, "waylay");
    params.distinguished_name = name;
    // Path length 0: this CA only ever signs leaves directly.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial()?);

    let cert = params.self_signed(&key)?;
    Ok(format!("{}{}", key.serialize_pem(), cert.pem()))
}

/// A random positive 127-bit serial number.
///
/// Serials must be unique per issuer: browsers reject a second certificate
/// with the same issuer and serial, and rcgen's default derives the serial
/// from the public key, which all our leaves share.
pub(crate) fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    super::provider::provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| TlsError::Rcgen("no randomness available for a serial number".into()))?;
    // Clearing the top bit keeps the INTEGER positive; setting the next one
    // keeps the length fixed so no leading-zero normalisation is needed.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn bad_pem(origin: &str, e: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::BadPem {
        origin: origin.to_owned(),
        reason: e.to_string(),
    }
}

/// PEM-encodes DER with 64-column lines, the layout OpenSSL and browsers'
/// certificate importers expect. (No PEM writer is among our dependencies;
/// rcgen's is only reachable for certificates it signed itself.)
fn pem_encode(label: &str, der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Private keys
// ---------------------------------------------------------------------------

/// AlgorithmIdentifier contents for rsaEncryption with NULL parameters.
const ALG_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
];
/// AlgorithmIdentifier contents for id-ecPublicKey on prime256v1.
const ALG_EC_P256: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d,
    0x03, 0x01, 0x07,
];
/// AlgorithmIdentifier contents for id-ecPublicKey on secp384r1.
const ALG_EC_P384: &[u8] = &[
    0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22,
];

/// Turns any supported private key encoding into an rcgen key pair.
///
/// rcgen on ring only reads PKCS#8, so PKCS#1 and SEC1 keys get wrapped in a
/// PKCS#8 envelope first; the inner structures are exactly what PKCS#8
/// expects, only the algorithm identifier has to be supplied.
fn key_pair_from_der(key: &PrivateKeyDer<'_>, origin: &str) -> Result<KeyPair, TlsError> {
    let candidates: Vec<PrivatePkcs8KeyDer<'static>> = match key {
        PrivateKeyDer::Pkcs8(k) => vec![PrivatePkcs8KeyDer::from(k.secret_pkcs8_der().to_vec())],
        PrivateKeyDer::Pkcs1(k) => vec![wrap_pkcs8(ALG_RSA, k.secret_pkcs1_der())],
        // SEC1 keys name their curve only optionally, so try the curves ring
        // can sign with; ring rejects a mismatched curve.
        PrivateKeyDer::Sec1(k) => vec![
            wrap_pkcs8(ALG_EC_P256, k.secret_sec1_der()),
            wrap_pkcs8(ALG_EC_P384, k.secret_sec1_der()),
        ],
        _ => {
            return Err(TlsError::UnsupportedKey {
                origin: origin.to_owned(),
                reason: "unknown private key encoding".into(),
            });
        }
    };

    let mut last_error = None;
    for der in candidates {
        match KeyPair::try_from(&PrivateKeyDer::Pkcs8(der)) {
            Ok(pair) => return Ok(pair),
            Err(e) => last_error = Some(e),
        }
    }
    Err(TlsError::UnsupportedKey {
        origin: origin.to_owned(),
        reason: last_error.map_or_else(String::new, |e| {
            format!("{e} (supported: RSA 2048-8192 bits, ECDSA P-256/P-384, Ed25519)")
        }),
    })
}

/// Builds a PKCS#8 PrivateKeyInfo (RFC 5208) around an algorithm-specific key.
fn wrap_pkcs8(algorithm: &[u8], key: &[u8]) -> PrivatePkcs8KeyDer<'static> {
    let mut body = vec![0x02, 0x01, 0x00]; // version 0
    body.extend(der_tlv(0x30, algorithm));
    body.extend(der_tlv(0x04, key));
    PrivatePkcs8KeyDer::from(der_tlv(0x30, &body))
}

/// Encodes one DER tag-length-value with a definite length.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

// ---------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------

fn read_if_exists(path: &Path) -> Result<Option<String>, TlsError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TlsError::io(path)(e)),
    }
}

#[cfg(unix)]
fn warn_if_group_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "CA key file is readable by other users; consider chmod 600");
    }
}

#[cfg(not(unix))]
fn warn_if_group_readable(_path: &Path) {}

/// Writes `contents` to a fresh temporary file next to `path` and returns its
/// name. The temp file is private when `private` is set, from the moment it
/// exists, so the key is never briefly world-readable.
fn write_temp(path: &Path, contents: &[u8], private: bool) -> Result<PathBuf, TlsError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let file_name = path
        .file_name()
        .map_or_else(|| "ca".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        if private {
            options.mode(0o600);
        }
    }
    #[cfg(not(unix))]
    let _ = private;

    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(contents)?;
        file.sync_all()
    });
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(TlsError::io(&tmp)(e));
    }
    Ok(tmp)
}

/// Atomically puts `contents` at `path` unless the file already exists.
/// Returns `false` if another writer got there first.
///
/// A hard link refuses to replace an existing file, which rename would do
/// silently and leave two processes with different CAs.
fn publish_exclusive(path: &Path, contents: &[u8]) -> Result<bool, TlsError> {
    let tmp = write_temp(path, contents, true)?;
    let result = match fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        // Some filesystems have no hard links; a rename is still atomic.
        Err(_) => fs::rename(&tmp, path)
            .map(|()| true)
            .map_err(TlsError::io(path)),
    };
    let _ = fs::remove_file(&tmp);
    result
}

/// Atomically replaces `path` with `contents` (readable certificate files).
fn replace_atomically(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let tmp = write_temp(path, contents, false)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        TlsError::io(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths() {
        assert_eq!(der_tlv(0x04, &[1, 2]), vec![0x04, 2, 1, 2]);
        let long = vec![0u8; 300];
        assert_eq!(&der_tlv(0x04, &long)[..4], &[0x04, 0x82, 0x01, 0x2c]);
        let medium = vec![0u8; 200];
        assert_eq!(&der_tlv(0x04, &medium)[..3], &[0x04, 0x81, 200]);
    }

    #[test]
    fn base64_matches_reference() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
