//! TLS settings of https listeners: certificates chosen by SNI (the first is
//! the default), optional client-certificate verification (mutual TLS),
//! TLS 1.2 and 1.3, session resumption with tickets of a 300 s lifetime and
//! a server-side session cache, ALPN `h2` and `http/1.1`.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::server::{
    ClientHello, ProducesTickets, ResolvesServerCert, ServerSessionMemoryCache,
    StoresServerSessions, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

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

/// Session state kept across reloads, so that a reload (new certificates,
/// new rules) does not make every client do a full handshake again.
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
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_SIZE),
            ticketer: Arc::new(Lifetime(inner)),
        })
    }
}

/// A ticketer whose tickets announce `TICKET_LIFETIME_SECS` (ring's rotate
/// keys every few hours and would announce that).
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
        self.0.encrypt(plain)
    }
    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.0.decrypt(cipher)
    }
}

/// Picks the certificate for a handshake: the first, in file order, valid
/// for the SNI name (wildcards as in X.509), else the first one.
#[derive(Debug)]
pub struct SniResolver {
    /// Not empty.
    certs: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub fn new(certs: Vec<Arc<CertifiedKey>>) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        Ok(Self { certs })
    }

    /// The certificate for `sni`.
    pub fn pick(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let name = sni.and_then(|s| ServerName::try_from(s).ok());
        if let Some(name) = name {
            for ck in &self.certs {
                let Ok(der) = ck.end_entity_cert() else {
                    continue;
                };
                let Ok(ee) = webpki::EndEntityCert::try_from(der) else {
                    continue;
                };
                if ee.verify_is_valid_for_subject_name(&name).is_ok() {
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

/// Builds the rustls settings of an https listener, reading its PEM files.
pub fn server_config(
    l7: &L7Settings,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut certs = Vec::with_capacity(l7.certificates.len());
    for (index, c) in l7.certificates.iter().enumerate() {
        let ck = pem::load_certified_key(&c.cert, &c.key)
            .map_err(|source| TlsError::Certificate { index, source })?;
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
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.session_storage = resumption.cache.clone();
    cfg.ticketer = resumption.ticketer.clone();
    Ok(Arc::new(cfg))
}
