//! TLS on the listener (`[tls]`): rustls with the ring provider, ALPN `h2` and `http/1.1`, and
//! client certificates checked against `client_ca_file` when it is set (mutual TLS).
//!
//! The files are read at start, where anything wrong stops the server with the key and the file
//! named, and then watched: when one of them changes (its modification time or length), the
//! pair is loaded again and new connections get it; connections already open keep theirs. A
//! broken new pair (a key written before its certificate, a typo) is logged and counted, and the
//! previous pair stays in use.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Handshakes that failed or timed out.
pub(crate) const TLS_HANDSHAKE_FAILURES: &str = "switchyard_http_tls_handshake_failures_total";
/// Reloads of the certificate files, by `result` (`loaded`, `failed`).
pub(crate) const TLS_RELOADS: &str = "switchyard_http_tls_reloads_total";

/// How often the files are checked for a change: a renewed certificate is served within this
/// long, and three `stat` calls cost nothing at this rate.
const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// A file that cannot be used: names the configuration key and the file.
#[derive(Debug, thiserror::Error)]
#[error("invalid config key '{key}': '{path}' {message}")]
pub(crate) struct TlsError {
    key: &'static str,
    path: PathBuf,
    message: String,
}

impl TlsError {
    fn new(key: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
        TlsError { key, path: path.to_owned(), message: message.into() }
    }
}

/// The listener's TLS: the configuration new connections get, and what the files looked like
/// when it was loaded.
pub(crate) struct Tls {
    settings: TlsConfig,
    current: RwLock<TlsAcceptor>,
    stamps: Mutex<Vec<Option<Stamp>>>,
}

/// What a file looked like: a change to either is a reason to load it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl Tls {
    /// Loads the files; an error names the key and the file, and the server does not start.
    pub(crate) fn load(settings: TlsConfig) -> Result<Arc<Tls>, TlsError> {
        metrics::describe_counter!(TLS_HANDSHAKE_FAILURES, "TLS handshakes on the listener that failed or timed out.");
        metrics::describe_counter!(TLS_RELOADS, "Reloads of the listener's certificate files, by result.");
        let stamps = stamps(&settings);
        let config = server_config(&settings)?;
        Ok(Arc::new(Tls {
            settings,
            current: RwLock::new(TlsAcceptor::from(Arc::new(config))),
            stamps: Mutex::new(stamps),
        }))
    }

    /// Checks the files every [`RELOAD_INTERVAL`] for as long as the server runs.
    pub(crate) fn watch(self: &Arc<Tls>) -> tokio::task::JoinHandle<()> {
        let tls = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(RELOAD_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(tls) = tls.upgrade() else { return };
                // Reading and parsing files blocks: off the runtime's workers.
                let _ = tokio::task::spawn_blocking(move || tls.reload_if_changed()).await;
            }
        })
    }

    /// Loads the files again when they changed since the last look. A failure is remembered
    /// with the files' stamps, so a broken pair is reported once, not at every check, and tried
    /// again as soon as either file changes again.
    fn reload_if_changed(&self) {
        let now = stamps(&self.settings);
        {
            let mut seen = self.stamps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match server_config(&self.settings) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    TlsAcceptor::from(Arc::new(config));
                metrics::counter!(TLS_RELOADS, "result" => "loaded").increment(1);
                tracing::info!(cert_file = %self.settings.cert_file.display(), "reloaded the tls certificate");
            }
            Err(error) => {
                metrics::counter!(TLS_RELOADS, "result" => "failed").increment(1);
                tracing::error!(%error, "cannot reload the tls certificate; new connections keep the previous one");
            }
        }
    }

    /// The handshake of one accepted connection, bounded by `timeout`. `None` when it failed or
    /// took too long: counted, logged at debug (a port scan is not news), and the connection
    /// dropped.
    pub(crate) async fn handshake(&self, stream: TcpStream, timeout: Duration) -> Option<TlsStream<TcpStream>> {
        let acceptor = self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let peer = stream.peer_addr().ok();
        let error = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no handshake within {} s (http.header_read_timeout_secs)", timeout.as_secs()),
        };
        metrics::counter!(TLS_HANDSHAKE_FAILURES).increment(1);
        tracing::debug!(?peer, %error, "tls handshake failed");
        None
    }
}

fn stamps(settings: &TlsConfig) -> Vec<Option<Stamp>> {
    [Some(&settings.cert_file), Some(&settings.key_file), settings.client_ca_file.as_ref()]
        .into_iter()
        .flatten()
        .map(|path| std::fs::metadata(path).ok().map(|meta| Stamp { modified: meta.modified().ok(), len: meta.len() }))
        .collect()
}

/// The rustls configuration of the files: a certificate chain and its key (checked to match),
/// ALPN for HTTP/2 and HTTP/1.1, and the client verifier with `client_ca_file`.
fn server_config(settings: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let (cert_key, key_key) = ("tls.cert_file", "tls.key_file");
    let chain = certificates(cert_key, &settings.cert_file)?;
    let key_pem = read(key_key, &settings.key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| {
        TlsError::new(
            key_key,
            &settings.key_file,
            format!("holds no PEM private key (PKCS#8, SEC1 or PKCS#1): {error}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError::new(cert_key, &settings.cert_file, format!("cannot be served: {error}")))?;
    let builder = match &settings.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let key = "tls.client_ca_file";
            let mut roots = RootCertStore::empty();
            for certificate in certificates(key, path)? {
                roots
                    .add(certificate)
                    .map_err(|error| TlsError::new(key, path, format!("holds an unusable CA certificate: {error}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|error| TlsError::new(key, path, format!("cannot verify clients: {error}")))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|error| {
        TlsError::new(
            key_key,
            &settings.key_file,
            format!("does not fit the certificate in '{}': {error}", settings.cert_file.display()),
        )
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|error| TlsError::new(key, path, format!("cannot be read: {error}")))
}

/// One or more PEM certificates; a file with none, or with a block that is not one, is refused.
fn certificates(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::new(key, path, format!("is not PEM certificates: {error}")))?;
    if certificates.is_empty() {
        return Err(TlsError::new(key, path, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

/// An accepted connection, in the clear or after its TLS handshake.
pub(super) enum Stream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(stream) => stream.is_write_vectored(),
            Stream::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    /// On TLS: `close_notify`, then the TCP write side, so the lingering close that follows
    /// reads what the client still sends as it does in the clear.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Stream::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            Files { dir: tempfile::tempdir().unwrap() }
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let path = self.dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        }

        /// A self-signed certificate for localhost and its key, written as `{name}.crt`/`.key`.
        fn pair(&self, name: &str) -> (PathBuf, PathBuf) {
            let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
            (
                self.write(&format!("{name}.crt"), &certified.cert.pem()),
                self.write(&format!("{name}.key"), &certified.signing_key.serialize_pem()),
            )
        }
    }

    fn settings(cert_file: PathBuf, key_file: PathBuf) -> TlsConfig {
        TlsConfig { cert_file, key_file, client_ca_file: None }
    }

    #[test]
    fn tls_is_configured_by_both_files_and_the_environment_names_them() {
        use crate::config::ServeConfig;
        let resolve = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            let env = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
            ServeConfig::resolve(None, &env, None, None)
        };
        assert_eq!(resolve(&[]).unwrap().tls, None);
        let error = resolve(&[("SWITCHYARD_TLS_CERT_FILE", "/c.pem")]).unwrap_err().to_string();
        assert!(error.contains("tls.key_file"), "{error}");
        let error = resolve(&[("SWITCHYARD_TLS_CLIENT_CA_FILE", "/ca.pem")]).unwrap_err().to_string();
        assert!(error.contains("tls.client_ca_file"), "{error}");
        let config = resolve(&[
            ("SWITCHYARD_TLS_CERT_FILE", "/c.pem"),
            ("SWITCHYARD_TLS_KEY_FILE", "/k.pem"),
            ("SWITCHYARD_TLS_CLIENT_CA_FILE", "/ca.pem"),
        ])
        .unwrap();
        let expected =
            TlsConfig { cert_file: "/c.pem".into(), key_file: "/k.pem".into(), client_ca_file: Some("/ca.pem".into()) };
        assert_eq!(config.tls.as_ref(), Some(&expected));
        let printed = toml::to_string(&config.to_file()).unwrap();
        assert!(printed.contains("[tls]") && printed.contains("client_ca_file = \"/ca.pem\""), "{printed}");
    }

    #[test]
    fn bad_files_name_the_key_and_the_file() {
        let files = Files::new();
        let (cert, key) = files.pair("a");
        let (_, other_key) = files.pair("b");
        let garbage = files.write("garbage.pem", "not pem at all\n");
        let missing = files.dir.path().join("missing.pem");
        let cases = [
            (settings(garbage.clone(), key.clone()), "tls.cert_file", &garbage),
            (settings(cert.clone(), garbage.clone()), "tls.key_file", &garbage),
            (settings(missing.clone(), key.clone()), "tls.cert_file", &missing),
            (settings(cert.clone(), other_key.clone()), "tls.key_file", &other_key),
            (
                TlsConfig { client_ca_file: Some(garbage.clone()), ..settings(cert.clone(), key.clone()) },
                "tls.client_ca_file",
                &garbage,
            ),
        ];
        for (settings, key, path) in cases {
            let error = Tls::load(settings).err().expect("refused").to_string();
            assert!(error.contains(key) && error.contains(&path.display().to_string()), "{error}");
        }
        assert!(Tls::load(settings(cert, key)).is_ok());
    }

    #[test]
    fn a_changed_pair_is_loaded_and_a_broken_one_keeps_the_previous() {
        let files = Files::new();
        let (cert, key) = files.pair("a");
        let tls = Tls::load(settings(cert.clone(), key.clone())).unwrap();
        let first = tls.current.read().unwrap().config().clone();
        // A broken certificate: the previous configuration stays.
        std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
        tls.reload_if_changed();
        assert!(Arc::ptr_eq(&first, tls.current.read().unwrap().config()));
        // A new valid pair replaces it.
        let (new_cert, new_key) = files.pair("b");
        std::fs::copy(new_cert, &cert).unwrap();
        std::fs::copy(new_key, &key).unwrap();
        tls.reload_if_changed();
        assert!(!Arc::ptr_eq(&first, tls.current.read().unwrap().config()));
    }
}
