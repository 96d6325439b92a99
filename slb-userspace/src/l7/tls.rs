//! TLS settings of https listeners: certificates chosen by SNI (the first is
//! the default), optional client-certificate verification (mutual TLS),
//! TLS 1.2 and 1.3, session resumption with tickets of a 300 s lifetime and
//! a server-side session cache, ALPN `h2`, `http/1.1` and `http/1.0`.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tracing::warn;

use super::pem::{self, PemError};
use crate::config::L7Settings;

/// Lifetime of session tickets (SPEC §5: session resumption, 300 s).
pub const TICKET_LIFETIME_SECS: u32 = 300;
/// Sessions remembered for stateful (session-id) resumption.
const SESSION_CACHE_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate[{index}]: {source}")]
    Certificate { index: usize, source: PemError },
    #[error("client_ca: {0}")]
    ClientCa(PemError),
    #[error("client_ca: {0}")]
    Verifier(String),
    #[error("TLS settings: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("an https listener needs a certificate")]
    NoCertificate,
}

/// The process's crypto provider: ring.
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Session state of one https listener, kept across reloads so that a
/// reload (new certificates, new rules) does not make every client do a
/// full handshake again. One per listener and client-certificate setting:
/// a resumed session skips client-certificate verification, so a session
/// made where none was asked for (another listener, or before mutual TLS
/// or another CA was configured) must not resume where one is.
#[derive(Clone)]
pub struct Resumption {
    cache: Arc<dyn StoresServerSessions>,
    ticketer: Arc<dyn ProducesTickets>,
}

impl std::fmt::Debug for Resumption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resumption")
    }
}

impl Resumption {
    pub fn new() -> Result<Self, TlsError> {
        let inner = rustls::crypto::ring::Ticketer::new()?;
        Ok(Self {
            cache: Arc::new(Expiring(ServerSessionMemoryCache::new(SESSION_CACHE_SIZE))),
            ticketer: Arc::new(Lifetime(inner)),
        })
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `value` stamped with the time it was made.
fn stamped(value: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + value.len());
    v.extend_from_slice(&unix_now().to_be_bytes());
    v.extend_from_slice(value);
    v
}

/// The value of a `stamped` one still within `TICKET_LIFETIME_SECS`.
fn fresh(stamped: &[u8]) -> Option<Vec<u8>> {
    let (time, value) = stamped.split_first_chunk::<8>()?;
    let age = unix_now().saturating_sub(u64::from_be_bytes(*time));
    (age <= u64::from(TICKET_LIFETIME_SECS)).then(|| value.to_vec())
}

/// A ticketer whose tickets announce, and last, `TICKET_LIFETIME_SECS`:
/// ring's rotates its keys every few hours and would accept a ticket that
/// long (TLS 1.2 does not check a ticket's age).
#[derive(Debug)]
struct Lifetime(Arc<dyn ProducesTickets>);

impl ProducesTickets for Lifetime {
    fn enabled(&self) -> bool {
        self.0.enabled()
    }
    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME_SECS
    }
    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.0.encrypt(&stamped(plain))
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        fresh(&self.0.decrypt(cipher)?)
    }
}

/// The session-id cache, whose entries last `TICKET_LIFETIME_SECS` (the
/// library's never expire).
#[derive(Debug)]
struct Expiring(Arc<ServerSessionMemoryCache>);

impl StoresServerSessions for Expiring {
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> bool {
        self.0.put(key, stamped(&value))
    }
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        fresh(&self.0.get(key)?)
    }
    fn take(&self, key: &[u8]) -> Option<Vec<u8>> {
        fresh(&self.0.take(key)?)
    }
    fn can_cache(&self) -> bool {
        self.0.can_cache()
    }
}

/// Picks the certificate for a handshake: the first, in file order, that
/// names the SNI name exactly; else the first valid for it through a
/// wildcard (as in X.509); else the first one. Exact names first, as nginx
/// and HAProxy choose (and as the proxy's own host rules match).
#[derive(Debug)]
pub struct SniResolver {
    /// Not empty.
    certs: Vec<Arc<CertifiedKey>>,
    /// The exact (not wildcard) DNS names of each certificate, lower case,
    /// read once: the first pass of every handshake only compares strings.
    exact: Vec<Vec<String>>,
}

impl SniResolver {
    pub fn new(certs: Vec<Arc<CertifiedKey>>) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let exact = certs
            .iter()
            .map(|ck| {
                let Some(ee) = ck
                    .end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                else {
                    return Vec::new();
                };
                ee.valid_dns_names()
                    .filter(|n| !n.starts_with("*."))
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .collect();
        Ok(Self { certs, exact })
    }

    /// The certificate for `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = sni {
            let want = sni.trim_end_matches('.').to_ascii_lowercase();
            let exact = self.exact.iter().position(|names| names.contains(&want));
            if let Some(i) = exact {
                return self.certs.get(i).cloned();
            }
            if let Ok(name) = ServerName::try_from(sni) {
                let wildcard = self.certs.iter().find(|ck| {
                    ck.end_entity_cert()
                        .ok()
                        .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                        .is_some_and(|ee| ee.verify_is_valid_for_subject_name(&name).is_ok())
                });
                if let Some(ck) = wildcard {
                    return Some(ck.clone());
                }
            }
        }
        self.certs.first().cloned()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name())
    }
}

/// Warnings about the certificates of `cfg`'s https listeners that are out
/// of their validity period at `now`, named by key path as configuration
/// errors are (`listener[0].certificate[1].cert: <file>: the certificate
/// expired on …`). Files that cannot be read are the validation's errors.
pub fn certificate_warnings(
    cfg: &crate::config::Config,
    now: std::time::SystemTime,
) -> Vec<String> {
    let mut out = Vec::new();
    for (i, l) in cfg.listeners.iter().enumerate() {
        let Some(l7) = &l.l7 else { continue };
        for (j, c) in l7.certificates.iter().enumerate() {
            let Ok(chain) = pem::load_certs(&c.cert) else {
                continue;
            };
            for why in pem::chain_validity_problems(&chain, now) {
                out.push(format!(
                    "listener[{i}].certificate[{j}].cert: {}: {why}: clients will refuse it",
                    c.cert.display()
                ));
            }
        }
    }
    out
}

/// Builds the rustls settings of https listener `listener`, reading its
/// PEM files. A certificate out of its validity period is loaded with a
/// warning (see [`pem::validity_problem`]).
pub fn server_config(
    listener: &str,
    l7: &L7Settings,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut certs = Vec::with_capacity(l7.certificates.len());
    let now = std::time::SystemTime::now();
    for (index, c) in l7.certificates.iter().enumerate() {
        let ck = pem::load_certified_key(&c.cert, &c.key)
            .map_err(|source| TlsError::Certificate { index, source })?;
        for why in pem::chain_validity_problems(&ck.cert, now) {
            warn!(
                "listener {listener}: certificate[{index}] {}: {why}: clients will refuse it",
                c.cert.display()
            );
        }
        certs.push(ck);
    }
    let resolver = SniResolver::new(certs)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &l7.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = pem::load_roots(path).map_err(TlsError::ClientCa)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder.with_cert_resolver(Arc::new(resolver));
    // `http/1.0` too, as nginx offers it: rustls answers a client whose
    // list shares nothing with ours with a fatal alert, and curl's
    // `--http1.0` offers only `http/1.0`. The server's order decides: h2
    // for clients that offer it.
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    cfg.session_storage = resumption.cache.clone();
    cfg.ticketer = resumption.ticketer.clone();
    Ok(Arc::new(cfg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped_at(age_secs: u64, value: &[u8]) -> Vec<u8> {
        let mut v = (unix_now() - age_secs).to_be_bytes().to_vec();
        v.extend_from_slice(value);
        v
    }

    /// Tickets and cached sessions last `TICKET_LIFETIME_SECS` (TLS 1.2
    /// would otherwise resume with any ticket the keys still open, and
    /// with any cached session, however old).
    #[test]
    fn sessions_expire_after_their_lifetime() {
        assert_eq!(fresh(&stamped(b"s")), Some(b"s".to_vec()));
        assert_eq!(fresh(&stamped_at(299, b"s")), Some(b"s".to_vec()));
        assert_eq!(fresh(&stamped_at(301, b"s")), None);
        assert_eq!(fresh(b"short"), None);

        let r = Resumption::new().unwrap();
        let ticket = r.ticketer.encrypt(b"session").unwrap();
        assert_eq!(r.ticketer.decrypt(&ticket), Some(b"session".to_vec()));
        r.cache.put(b"id".to_vec(), b"session".to_vec());
        assert_eq!(r.cache.get(b"id"), Some(b"session".to_vec()));
        // An entry put 301 s ago (as stamped then) is not handed out.
        let Expiring(inner) = &Expiring(ServerSessionMemoryCache::new(4));
        inner.put(b"old".to_vec(), stamped_at(301, b"session"));
        assert_eq!(Expiring(inner.clone()).get(b"old"), None);
    }
}
