//! PEM files of https listeners: certificate chains, private keys, CA
//! bundles. Used by config validation (so `slb validate` reports a bad file
//! with its key path) and by the proxy when it builds its TLS settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    #[error("the key does not belong to the certificate, or is not usable: {0}")]
    Pair(String),
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
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => content(path, "no PEM PRIVATE KEY block"),
        e => content(path, format!("bad PEM data: {e}")),
    })
}

/// The chain with its key, checked to belong together.
pub fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, PemError> {
    let provider = super::tls::provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| PemError::Pair(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| PemError::Pair(e.to_string()))?;
    Ok(ck)
}

/// Loads a certificate and its key from their files.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, PemError> {
    Ok(Arc::new(certified_key(load_certs(cert)?, load_key(key)?)?))
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
