//! PEM files of https listeners: certificate chains, private keys, CA
//! bundles. Used by config validation (so `slb validate` reports a bad file
//! with its key path) and by the proxy when it builds its TLS settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;

/// A PEM file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {what}", path.display())]
    Content { path: PathBuf, what: String },
    #[error("the key in {} does not belong to the certificate in {}{detail}", key.display(), cert.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        /// What else the operator should know (several keys in the file),
        /// with its leading separator; may be empty.
        detail: String,
    },
    #[error(
        "the key belongs to certificate {index} of {}, not to the first: the server's \
         certificate must come first, then its intermediates", cert.display()
    )]
    Order { cert: PathBuf, index: usize },
    #[error(
        "the key's type or size is not supported (RSA of 2048 to 4096 bits, ECDSA P-256 \
         or P-384, Ed25519)"
    )]
    Unsupported,
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

fn content(path: &Path, what: impl Into<String>) -> PemError {
    PemError::Content {
        path: path.to_owned(),
        what: what.into(),
    }
}

/// Every `CERTIFICATE` block of the file, in order (leaf first); at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let data = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(path, format!("bad PEM data: {e}")))?;
    if certs.is_empty() {
        return Err(content(path, "no PEM CERTIFICATE block"));
    }
    Ok(certs)
}

/// The first private key of the file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let data = read(path)?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| {
        // Said plainly: the parser skips an encrypted PKCS#8 block ("no
        // PRIVATE KEY block") and fails on the headers of OpenSSL's older
        // encrypted PKCS#1/SEC1 blocks ("base64 decode error").
        if is_encrypted(&data) {
            return content(
                path,
                "the private key is encrypted (passphrase-protected), which is not \
                 supported: store it unencrypted, e.g. `openssl pkey -in <file> -out <new file>`",
            );
        }
        match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                content(path, "no PEM PRIVATE KEY block")
            }
            e => content(path, format!("bad PEM data: {e}")),
        }
    })
}

/// Whether the PEM text holds an encrypted key: PKCS#8's `ENCRYPTED
/// PRIVATE KEY`, or OpenSSL's legacy `Proc-Type: 4,ENCRYPTED` header.
fn is_encrypted(data: &[u8]) -> bool {
    let has = |needle: &[u8]| data.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// The chain with its key, checked to belong together; read from
/// `cert_path` and `key_path` (named in errors).
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, PemError> {
    let provider = super::tls::provider();
    // The provider's own message ("failed to parse private key as RSA,
    // ECDSA, or EdDSA") is also what a well-formed key of a size or curve
    // ring does not sign with gets (RSA 1024 or 8192, P-521).
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|_| PemError::Unsupported)?;
    let ck = CertifiedKey::new(chain, signing);
    if let Err(e) = ck.keys_match() {
        // Intermediates before the server's own certificate: the key then
        // matches a later one (nginx and HAProxy also want the leaf first).
        let later = ck.cert.iter().skip(1).position(|c| {
            CertifiedKey::new(vec![c.clone()], ck.key.clone())
                .keys_match()
                .is_ok()
        });
        return Err(match later {
            Some(i) => PemError::Order {
                cert: cert_path.to_owned(),
                index: i + 2,
            },
            None => {
                // rustls's own words for a plain mismatch ("keys may not
                // be consistent: KeyMismatch") add nothing; a file with
                // several keys (an old and a new one) explains it.
                let mut detail = match e {
                    rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                        String::new()
                    }
                    e => format!(" ({e})"),
                };
                let keys = keys_in(key_path);
                if keys > 1 {
                    detail.push_str(&format!(
                        "; {} holds {keys} private keys, of which the first is used",
                        key_path.display()
                    ));
                }
                PemError::Pair {
                    cert: cert_path.to_owned(),
                    key: key_path.to_owned(),
                    detail,
                }
            }
        });
    }
    Ok(ck)
}

/// How many private-key blocks the PEM file at `path` holds (0 if it
/// cannot be read again).
fn keys_in(path: &Path) -> usize {
    use rustls::pki_types::pem::SectionKind;
    let Ok(data) = std::fs::read(path) else {
        return 0;
    };
    <(SectionKind, Vec<u8>) as PemObject>::pem_slice_iter(&data)
        .filter_map(Result::ok)
        .filter(|(kind, _)| {
            matches!(
                kind,
                SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
            )
        })
        .count()
}

/// Loads a certificate and its key from their files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, PemError> {
    Ok(Arc::new(certified_key(
        load_certs(cert)?,
        load_key(key)?,
        cert,
        key,
    )?))
}

/// Why `cert` cannot be used at `now`, if its validity period does not
/// cover it: "expired on …" or "not valid before …" (dates as `openssl
/// x509 -dates` prints them). Such a certificate is still loaded, as nginx
/// and HAProxy load it: refusing it would take a site down on a reload
/// over a renewal that came late, or a clock that is off. The caller warns.
pub fn validity_problem(cert: &CertificateDer<'_>, now: SystemTime) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let validity = parsed.validity();
    let now = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(_) => 0,
    };
    if now > validity.not_after.timestamp() {
        Some(format!("the certificate expired on {}", validity.not_after))
    } else if now < validity.not_before.timestamp() {
        Some(format!(
            "the certificate is not valid before {}",
            validity.not_before
        ))
    } else {
        None
    }
}

/// [`validity_problem`] of each certificate of a chain: the server's own
/// (first), then its intermediates, which clients refuse as readily.
pub fn chain_validity_problems(chain: &[CertificateDer<'_>], now: SystemTime) -> Vec<String> {
    chain
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let why = validity_problem(c, now)?;
            Some(match i {
                0 => why,
                i => format!("certificate {} of the file (an intermediate): {why}", i + 1),
            })
        })
        .collect()
}

/// The CA certificates of a bundle, as trust anchors.
pub fn load_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| content(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}
