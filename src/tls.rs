//! TLS termination with rustls (the ring provider: it builds with cargo and gcc alone): PEM
//! certificate chains and keys (PKCS#8, PKCS#1, SEC1; RSA, ECDSA, Ed25519), chosen by SNI, the
//! first one for clients that send no name or a name no certificate covers. ALPN offers `h2` and
//! `http/1.1`; TLS 1.2 and 1.3 only, rustls' default cipher suites.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

use crate::config::{Config, ConfigError, TlsCert};

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("tls.certs[{index}].{key}: {message}")]
pub struct TlsError {
    pub index: usize,
    /// `cert` or `key`.
    pub key: &'static str,
    pub message: String,
}

/// The certificates, and how a handshake picks one.
#[derive(Debug)]
struct Certificates {
    /// Each certified key with the DNS names of its end-entity certificate (lower case, read once
    /// at load: a handshake parses nothing), in config order.
    certs: Vec<(Arc<CertifiedKey>, Vec<String>)>,
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let by_name = hello.server_name().and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.certs
                .iter()
                .find(|(_, names)| names.iter().any(|n| dns_name_matches(n, &name)))
        });
        by_name.or(self.certs.first()).map(|(key, _)| key.clone())
    }
}

/// The DNS names (subjectAltName dNSName entries) a leaf certificate is valid for, lower-cased.
fn dns_names(leaf: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// RFC 6125 matching as webpki does it: the exact name, or a `*.` wildcard standing for exactly one
/// leftmost label (`*.example.org` matches `maps.example.org`, not `example.org` nor `a.b.example.org`).
fn dns_name_matches(pattern: &str, name: &str) -> bool {
    // An absolute name (trailing dot) is the same name.
    let name = name.strip_suffix('.').unwrap_or(name);
    match pattern.strip_prefix("*.") {
        Some(rest) => name
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && tail == rest && rest.contains('.')),
        None => pattern == name,
    }
}

/// Loads every certificate and key; the server configuration for the https listeners.
pub fn server_config(certs: &[TlsCert]) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let mut loaded = Vec::with_capacity(certs.len());
    for (index, c) in certs.iter().enumerate() {
        let chain = load_chain(&c.cert).map_err(|message| TlsError {
            index,
            key: "cert",
            message,
        })?;
        let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| TlsError {
            index,
            key: "key",
            message: format!("{}: {e}", c.key.display()),
        })?;
        let signing = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError {
                index,
                key: "key",
                message: format!("{}: {e}", c.key.display()),
            })?;
        let leaf = chain[0].clone();
        let certified = CertifiedKey::new(chain, signing);
        certified.keys_match().map_err(|e| TlsError {
            index,
            key: "key",
            message: format!("does not match the certificate: {e}"),
        })?;
        loaded.push((Arc::new(certified), dns_names(&leaf)));
    }
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError {
            index: 0,
            key: "cert",
            message: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Certificates { certs: loaded }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Loads every certificate and key the configuration names, as `geolb check` does before a start:
/// the error names the key at fault (`tls.certs[1].key`).
pub fn check(config: &Config) -> Result<(), ConfigError> {
    if !config.tls.certs.is_empty() {
        server_config(&config.tls.certs).map_err(|e| {
            ConfigError::at(format!("tls.certs[{}].{}", e.index, e.key), None, e.message)
        })?;
    }
    let https_nodes = config.nodes.iter().any(|n| n.tls) || config.discover.iter().any(|d| d.tls);
    let f = &config.forwarding;
    if https_nodes || f.ca_bundle.is_some() || f.client_cert.is_some() {
        client_config(f).map_err(|message| ConfigError {
            file: None,
            key: None,
            line: None,
            message,
        })?;
    }
    Ok(())
}

/// When each certificate (its leaf) stops being valid, in config order; `None` when a file cannot
/// be read or parsed (the loading itself reports that).
pub fn expiries(certs: &[TlsCert]) -> Vec<Option<std::time::SystemTime>> {
    certs
        .iter()
        .map(|c| {
            let chain = load_chain(&c.cert).ok()?;
            let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).ok()?;
            let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        })
        .collect()
}

fn load_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", path.display()));
    }
    Ok(chain)
}

/// How geolb verifies `https://` nodes: the system's roots, or `forwarding.ca_bundle`; a client
/// certificate when `forwarding.client_cert` is set; nothing at all with `insecure_skip_verify`.
pub fn client_config(
    forwarding: &crate::config::Forwarding,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = if forwarding.insecure_skip_verify {
        tracing::warn!(
            "forwarding.insecure_skip_verify: the certificates of https nodes are NOT verified"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnything(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &forwarding.ca_bundle {
            Some(path) => {
                for cert in load_chain(path).map_err(|e| format!("forwarding.ca_bundle: {e}"))? {
                    roots
                        .add(cert)
                        .map_err(|e| format!("forwarding.ca_bundle: {}: {e}", path.display()))?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
            }
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&forwarding.client_cert, &forwarding.client_key) {
        (Some(cert), Some(key)) => {
            let chain = load_chain(cert).map_err(|e| format!("forwarding.client_cert: {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("forwarding.client_key: {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("forwarding.client_key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// `insecure_skip_verify`: accepts any certificate (signatures are still checked).
#[derive(Debug)]
struct AcceptAnything(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnything {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_names_match_as_webpki_matches_them() {
        let sans = [
            "maps.example.org",
            "*.tiles.example.org",
            "Mixed.Example.COM",
        ];
        let cert = rcgen::generate_simple_self_signed(sans.map(String::from).to_vec())
            .expect("a test certificate");
        let leaf = cert.cert.der().clone();
        let names = dns_names(&leaf);
        assert_eq!(
            names,
            [
                "maps.example.org",
                "*.tiles.example.org",
                "mixed.example.com"
            ]
        );
        let webpki_says = |name: &str| {
            let end_entity = webpki::EndEntityCert::try_from(&leaf).unwrap();
            ServerName::try_from(name)
                .is_ok_and(|n| end_entity.verify_is_valid_for_subject_name(&n).is_ok())
        };
        for name in [
            "maps.example.org",
            "MAPS.example.org",
            "example.org",
            "a.tiles.example.org",
            "tiles.example.org",
            "a.b.tiles.example.org",
            ".tiles.example.org",
            "mixed.example.com",
            "other.example.org",
            "maps.example.org.",
        ] {
            let lower = name.to_ascii_lowercase();
            assert_eq!(
                names.iter().any(|n| dns_name_matches(n, &lower)),
                webpki_says(name),
                "{name}"
            );
        }
    }
}
