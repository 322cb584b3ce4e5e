//! TLS termination (rustls) for the public listener, and the certificates
//! it serves.
//!
//! Certificates are loaded and checked while the config is validated (so
//! `pollgate check` reports missing files, bad PEM, a key that does not match
//! its certificate, and expired certificates), and the loaded [`CertStore`]
//! travels inside the [`Config`](crate::config::Config). The listener's
//! [`Resolver`] holds the store behind an `ArcSwap`: a reload (of the config,
//! or of a certificate file, which triggers the same reload) swaps it, so new
//! handshakes use the new certificate and open connections are untouched.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM private key (PKCS#8, PKCS#1 or SEC1)")]
    BadKey { path: PathBuf },
    #[error("{key} does not match the certificate in {cert}")]
    Mismatch { cert: PathBuf, key: PathBuf },
    #[error("{path}: certificate is not usable: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: certificate expired on {not_after}")]
    Expired { path: PathBuf, not_after: String },
}

/// One certificate chain and its key, loaded.
#[derive(Clone)]
pub struct LoadedPair {
    pub key: Arc<CertifiedKey>,
    /// Files it came from (watched for renewal).
    pub files: [PathBuf; 2],
}

impl fmt::Debug for LoadedPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoadedPair({:?})", self.files)
    }
}

/// Loads and checks a PEM chain and key.
///
/// # Errors
/// See [`TlsError`].
pub fn load_pair(cert: &Path, key: &Path) -> Result<LoadedPair, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read(cert)?;
    let key_pem = read(key)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            path: cert.to_owned(),
        });
    };
    check_validity(cert, leaf)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::BadKey {
        path: key.to_owned(),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let certified = CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        other => TlsError::BadCertificate {
            path: cert.to_owned(),
            reason: other.to_string(),
        },
    })?;
    Ok(LoadedPair {
        key: Arc::new(certified),
        files: [cert.to_owned(), key.to_owned()],
    })
}

fn check_validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| {
        TlsError::BadCertificate {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })?;
    let not_after = parsed.validity().not_after;
    if not_after.timestamp() < crate::broker::Timestamp::now().secs() {
        return Err(TlsError::Expired {
            path: path.to_owned(),
            not_after: not_after.to_string(),
        });
    }
    Ok(())
}

/// Every certificate the listener can present, by SNI host name.
#[derive(Debug, Clone)]
pub struct CertStore {
    pub default: LoadedPair,
    /// Lower-case host (or `*.example.com`) -> pair.
    pub by_host: HashMap<String, LoadedPair>,
}

impl CertStore {
    /// Every file the store was loaded from.
    pub fn files(&self) -> Vec<PathBuf> {
        std::iter::once(&self.default)
            .chain(self.by_host.values())
            .flat_map(|p| p.files.iter().cloned())
            .collect()
    }

    fn pick(&self, server_name: Option<&str>) -> &LoadedPair {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        if let Some(pair) = self.by_host.get(&name) {
            return pair;
        }
        let wildcard = name.split_once('.').map(|(_, rest)| format!("*.{rest}"));
        wildcard
            .and_then(|w| self.by_host.get(&w))
            .unwrap_or(&self.default)
    }
}

/// Chooses the certificate per handshake from the store in force.
#[derive(Debug)]
pub struct Resolver(ArcSwap<CertStore>);

impl Resolver {
    pub fn new(store: CertStore) -> Arc<Resolver> {
        Arc::new(Resolver(ArcSwap::from_pointee(store)))
    }

    /// New handshakes use `store` from now on.
    pub fn set(&self, store: CertStore) {
        self.0.store(Arc::new(store));
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().pick(hello.server_name()).key.clone())
    }
}

/// The acceptor for the public listener: TLS 1.2 and 1.3 with rustls's
/// default ciphers, ALPN h2 then http/1.1.
///
/// # Errors
/// Only if rustls refuses its own default protocol versions (a build problem).
pub fn acceptor(resolver: Arc<Resolver>) -> Result<tokio_rustls::TlsAcceptor, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Where a client's trusted roots come from.
pub enum Roots<'a> {
    /// A `ca:` bundle.
    Bundle(&'a [CertificateDer<'static>]),
    /// The system's roots (/etc/ssl/certs and friends).
    System,
    /// None: for a client that only ever speaks plain http.
    Empty,
}

/// A TLS client config trusting `roots`; shared by the proxy's upstream
/// clients and the CLI. Returns how many roots were loaded.
pub fn client_config(roots: Roots<'_>) -> (rustls::ClientConfig, usize) {
    let mut store = rustls::RootCertStore::empty();
    let (loaded, _) = match roots {
        Roots::Bundle(ca) => store.add_parsable_certificates(ca.iter().cloned()),
        Roots::System => {
            store.add_parsable_certificates(rustls_native_certs::load_native_certs().certs)
        }
        Roots::Empty => (0, 0),
    };
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(store)
        .with_no_client_auth();
    (config, loaded)
}

/// Root certificates for verifying an upstream: a PEM bundle.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })?;
    let roots: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(roots)
}
