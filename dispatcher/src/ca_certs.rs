//! A destination's `CACerts` (Knative's `Destination.CACerts`): PEM CA certificates that its
//! TLS connections trust in addition to the client's built-in roots.
//!
//! Checked when the trigger is declared (PEM certificates only, at most
//! [`MAX_CA_CERTS_BYTES`]); at delivery, every destination with the same bundle shares one HTTP
//! client built for it (through the outbound guard, as every other client), so a bundle costs
//! one connection pool, not one per trigger.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use switchyard_meta::resources::Destination;
use switchyard_meta::ValidationError;

/// The largest `CACerts`: room for dozens of certificates, and a bound on what every attempt's
/// client is built with.
pub const MAX_CA_CERTS_BYTES: usize = 64 * 1024;

/// Bundles whose clients are kept: past this, the cache is emptied (the clients of the bundles
/// still in use are built again at their next attempt), so deleted triggers' bundles do not
/// accumulate.
const MAX_CACHED_BUNDLES: usize = 1024;

/// A checked CA bundle, shared by every target that delivers with it.
#[derive(Clone)]
pub struct CaCerts(Arc<Bundle>);

struct Bundle {
    /// SHA-256 of the certificates: the cache key, and equality.
    digest: [u8; 32],
    certificates: Vec<CertificateDer<'static>>,
}

impl CaCerts {
    /// Parses and checks PEM certificates; an error says what is wrong with them.
    pub fn parse(pem: &str) -> Result<CaCerts, String> {
        if pem.len() > MAX_CA_CERTS_BYTES {
            return Err(format!("is longer than the limit of {MAX_CA_CERTS_BYTES} bytes"));
        }
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| format!("is not PEM certificates: {error}"))?;
        if certificates.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
        }
        // The iterator skips blocks of other kinds: a private key pasted here is refused, not
        // ignored.
        if pem.matches("-----BEGIN ").count() != certificates.len() {
            return Err("holds a PEM block that is not a certificate: give CA certificates only".to_owned());
        }
        let mut roots = RootCertStore::empty();
        let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
        for (index, certificate) in certificates.iter().enumerate() {
            roots
                .add(certificate.clone())
                .map_err(|error| format!("certificate {} cannot be a trust anchor: {error}", index + 1))?;
            digest.update(&(certificate.len() as u64).to_be_bytes());
            digest.update(certificate);
        }
        let mut key = [0; 32];
        key.copy_from_slice(digest.finish().as_ref());
        Ok(CaCerts(Arc::new(Bundle { digest: key, certificates })))
    }

    /// The certificates, DER.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.0.certificates
    }
}

impl PartialEq for CaCerts {
    fn eq(&self, other: &CaCerts) -> bool {
        self.0.digest == other.0.digest
    }
}

impl fmt::Debug for CaCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short: String = self.0.digest[..6].iter().map(|byte| format!("{byte:02x}")).collect();
        write!(f, "CaCerts({} certificates, sha256 {short}…)", self.0.certificates.len())
    }
}

/// A destination's `CACerts` (`field` e.g. `spec.subscriber`), if set, checked.
pub fn compile_ca_certs(destination: &Destination, field: &str) -> Result<Option<CaCerts>, ValidationError> {
    let Some(pem) = &destination.ca_certs else { return Ok(None) };
    CaCerts::parse(pem).map(Some).map_err(|message| ValidationError::field(&format!("{field}.CACerts"), message))
}

/// The HTTP clients of CA bundles, by bundle and by the namespace whose allow-list they apply
/// (`""` for the namespaces without one of their own).
#[derive(Default)]
pub(crate) struct CaClients {
    clients: Mutex<HashMap<[u8; 32], HashMap<String, reqwest::Client>>>,
}

impl CaClients {
    /// The client of `ca` for `namespace`, built by `build` the first time.
    pub(crate) fn get(
        &self,
        ca: &CaCerts,
        namespace: Option<&str>,
        build: impl FnOnce() -> Result<reqwest::Client, reqwest::Error>,
    ) -> Result<reqwest::Client, reqwest::Error> {
        let key = namespace.unwrap_or("");
        let mut clients = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&ca.0.digest).and_then(|by_namespace| by_namespace.get(key)) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CACHED_BUNDLES {
            clients.clear();
        }
        let client = build()?;
        clients.entry(ca.0.digest).or_default().insert(key.to_owned(), client.clone());
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_pem_certificates_is_refused_with_the_field() {
        let destination = |pem: &str| Destination { ca_certs: Some(pem.to_owned()), ..Destination::default() };
        let cases = [
            ("not pem".to_owned(), "no PEM certificate"),
            ("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".to_owned(), "not PEM certificates"),
            ("a".repeat(MAX_CA_CERTS_BYTES + 1), "limit"),
        ];
        for (pem, needle) in cases {
            let error = compile_ca_certs(&destination(&pem), "spec.subscriber").unwrap_err().to_string();
            assert!(error.contains("spec.subscriber.CACerts") && error.contains(needle), "{error}");
        }
        assert_eq!(compile_ca_certs(&Destination::default(), "spec.subscriber").unwrap(), None);
    }

    #[test]
    fn a_bundle_is_its_certificates_and_a_key_in_it_is_refused() {
        let one = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let bundle = format!("{}{}", one.cert.pem(), two.cert.pem());
        let parsed = CaCerts::parse(&bundle).unwrap();
        assert_eq!(parsed.certificates().len(), 2);
        assert_eq!(parsed, CaCerts::parse(&format!("\n{bundle}\n")).unwrap());
        assert_ne!(parsed, CaCerts::parse(&one.cert.pem()).unwrap());
        let with_key = format!("{}{}", one.cert.pem(), one.signing_key.serialize_pem());
        assert!(CaCerts::parse(&with_key).unwrap_err().contains("not a certificate"));
    }
}
