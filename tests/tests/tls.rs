//! TLS end to end: the real binary serving HTTPS (`[tls]`: HTTP/1.1 and HTTP/2, reload of
//! replaced certificate files, client certificates, refusal of bad files at start, `switchyard
//! health --cacert`), and deliveries to an HTTPS subscriber whose CA a trigger gives in
//! `subscriber.CACerts`. Certificates come from test CAs generated here (rcgen); everything
//! stays on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use switchyard_tests::{binary, free_port, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(30);

/// A test certificate authority.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, PEM.
struct Leaf {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("ca");
        Ca { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for localhost and 127.0.0.1.
    fn server(&self) -> Leaf {
        self.leaf(vec!["localhost".to_owned(), "127.0.0.1".to_owned()], ExtendedKeyUsagePurpose::ServerAuth)
    }

    /// A client certificate.
    fn client(&self) -> Leaf {
        self.leaf(vec!["client.test".to_owned()], ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn leaf(&self, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Leaf {
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }

    /// A client that trusts this CA only (no built-in roots), on a new connection pool.
    fn client_trusting(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pem().as_bytes()).expect("ca"))
            .timeout(Duration::from_secs(5))
    }
}

/// Files in a temporary directory.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Written whole under another name, then renamed: a reader never sees half a file.
    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        let partial = self.path(&format!("{name}.partial"));
        std::fs::write(&partial, text).expect("write");
        std::fs::rename(&partial, &path).expect("rename");
        path
    }

    fn write_pair(&self, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (self.write("server.crt", &leaf.cert), self.write("server.key", &leaf.key))
    }
}

/// `switchyard serve` with `[tls]` through its environment variables.
struct TlsServer {
    child: Child,
    url: String,
    log: PathBuf,
    _data: tempfile::TempDir,
}

impl TlsServer {
    /// Starts a server and waits until `ready` (a client it lets in) gets 200 from `/readyz`.
    async fn start(env: &[(&str, &Path)], ready: &reqwest::Client) -> TlsServer {
        let data = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = data.path().join("server.log");
        let child = Command::new(binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(data.path().join("data"))
            .env("SWITCHYARD_LOG", "info")
            .envs(env.iter().map(|(name, path)| (*name, path.as_os_str())))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn switchyard");
        let mut server = TlsServer { child, url: format!("https://127.0.0.1:{port}"), log, _data: data };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = server.child.try_wait().ok().flatten() {
                panic!("switchyard exited at start with {status}; log: {}", server.log());
            }
            if ready.get(format!("{}/readyz", server.url)).send().await.is_ok_and(|r| r.status().is_success()) {
                return server;
            }
            assert!(Instant::now() < deadline, "switchyard did not become ready; log: {}", server.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn metric(&self, client: &reqwest::Client, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = client.get(format!("{}/metrics", self.url)).send().await.expect("metrics").text().await.unwrap();
        switchyard_tests::metric_value(&text, name, labels).unwrap_or(0.0)
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_env<'a>(cert: &'a Path, key: &'a Path) -> Vec<(&'static str, &'a Path)> {
    vec![("SWITCHYARD_TLS_CERT_FILE", cert), ("SWITCHYARD_TLS_KEY_FILE", key)]
}

#[tokio::test]
async fn https_serves_http1_and_http2_and_plain_http_gets_no_answer() {
    let ca = Ca::new("serving ca");
    let files = Files::new();
    let (cert, key) = files.write_pair(&ca.server());
    let client = ca.client_trusting().build().unwrap();
    let server = TlsServer::start(&tls_env(&cert, &key), &client).await;

    // ALPN offers h2 first: a client that speaks it gets HTTP/2, one that does not HTTP/1.1.
    let h2 = client.get(format!("{}/readyz", server.url)).send().await.expect("https h2");
    assert_eq!((h2.status().as_u16(), h2.version()), (200, reqwest::Version::HTTP_2));
    let http1 = ca.client_trusting().http1_only().build().unwrap();
    let h1 = http1.get(format!("{}/readyz", server.url)).send().await.expect("https http/1.1");
    assert_eq!((h1.status().as_u16(), h1.version()), (200, reqwest::Version::HTTP_11));

    let before = server.metric(&client, "switchyard_http_tls_handshake_failures_total", &[]).await;
    let plain = server.url.replacen("https://", "http://", 1);
    let answer = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .get(format!("{plain}/readyz"))
        .send()
        .await;
    assert!(answer.is_err(), "plain HTTP to the TLS port got an answer: {answer:?}");
    // A client that does not trust the CA does not get through either.
    let untrusting = Ca::new("other").client_trusting().build().unwrap();
    assert!(untrusting.get(format!("{}/readyz", server.url)).send().await.is_err());
    let after = server.metric(&client, "switchyard_http_tls_handshake_failures_total", &[]).await;
    assert!(after >= before + 1.0, "failed handshakes are counted: {before} then {after}");
    assert!(client.get(format!("{}/healthz", server.url)).send().await.is_ok_and(|r| r.status() == 200));
}

#[tokio::test]
async fn an_event_sent_over_https_is_delivered_through_a_chained_broker_and_addresses_are_https() {
    let ca = Ca::new("serving ca");
    let files = Files::new();
    let (cert, key) = files.write_pair(&ca.server());
    let client = ca.client_trusting().build().unwrap();
    let server = TlsServer::start(&tls_env(&cert, &key), &client).await;
    let subscriber = Subscriber::start().await;
    let put = |path: &str, body: Value| {
        let request = client.put(format!("{}{path}", server.url)).json(&body).send();
        async move { request.await.expect("put") }
    };
    let broker = put("/v1/namespaces/default/brokers/b", json!({"spec": {}})).await;
    assert!(broker.status().is_success());
    let broker: Value = broker.json().await.unwrap();
    let address = broker["status"]["address"]["url"].as_str().unwrap_or_default().to_owned();
    assert!(address.starts_with(&server.url), "the broker's address is https: {broker}");
    // Through a chained broker at its https address: the node delivers to itself in-process.
    assert!(put("/v1/namespaces/default/brokers/next", json!({"spec": {}})).await.status().is_success());
    let chain = json!({"spec": {"broker": "b", "subscriber": {"uri": format!("{}/default/next", server.url)}}});
    assert!(put("/v1/namespaces/default/triggers/chain", chain).await.status().is_success());
    let trigger = json!({"spec": {"broker": "next", "subscriber": {"uri": subscriber.url}}});
    assert!(put("/v1/namespaces/default/triggers/t", trigger).await.status().is_success());
    let sent = client
        .post(&address)
        .header("ce-specversion", "1.0")
        .header("ce-id", "over-tls")
        .header("ce-type", "t")
        .header("ce-source", "/tls")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send over https");
    assert_eq!(sent.status().as_u16(), 202);
    let received = subscriber.wait_for(1, WAIT).await;
    assert_eq!(received[0].header("ce-id"), Some("over-tls"));
}

#[tokio::test]
async fn a_replaced_certificate_is_served_to_new_connections_and_a_broken_one_is_not() {
    let (old_ca, new_ca) = (Ca::new("old ca"), Ca::new("new ca"));
    let files = Files::new();
    let (cert, key) = files.write_pair(&old_ca.server());
    let old_client = || old_ca.client_trusting().build().unwrap();
    let new_client = || new_ca.client_trusting().build().unwrap();
    let server = TlsServer::start(&tls_env(&cert, &key), &old_client()).await;

    files.write_pair(&new_ca.server());
    let deadline = Instant::now() + WAIT;
    while new_client().get(format!("{}/readyz", server.url)).send().await.is_err() {
        assert!(Instant::now() < deadline, "the new certificate was never served; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(old_client().get(format!("{}/readyz", server.url)).send().await.is_err(), "the old certificate is gone");

    // A broken certificate file: logged, counted, and the last good pair stays.
    files.write("server.crt", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let deadline = Instant::now() + WAIT;
    while server.metric(&new_client(), "switchyard_http_tls_reloads_total", &[("result", "failed")]).await < 1.0 {
        assert!(Instant::now() < deadline, "the broken file was never noticed; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let still = new_client().get(format!("{}/readyz", server.url)).send().await.expect("previous pair kept");
    assert_eq!(still.status().as_u16(), 200);
}

#[tokio::test]
async fn client_certificates_signed_by_the_client_ca_are_required() {
    let (server_ca, client_ca, stranger_ca) = (Ca::new("server ca"), Ca::new("client ca"), Ca::new("stranger ca"));
    let files = Files::new();
    let (cert, key) = files.write_pair(&server_ca.server());
    let client_ca_file = files.write("clients.pem", &client_ca.pem());
    let identity = |leaf: Leaf| reqwest::Identity::from_pem(format!("{}{}", leaf.cert, leaf.key).as_bytes()).unwrap();
    let with_cert = server_ca.client_trusting().identity(identity(client_ca.client())).build().unwrap();
    let mut env = tls_env(&cert, &key);
    env.push(("SWITCHYARD_TLS_CLIENT_CA_FILE", &client_ca_file));
    let server = TlsServer::start(&env, &with_cert).await;

    let answer = with_cert.get(format!("{}/readyz", server.url)).send().await.expect("with a client certificate");
    assert_eq!(answer.status().as_u16(), 200);
    let without = server_ca.client_trusting().build().unwrap();
    assert!(without.get(format!("{}/readyz", server.url)).send().await.is_err(), "no client certificate");
    let stranger = server_ca.client_trusting().identity(identity(stranger_ca.client())).build().unwrap();
    assert!(stranger.get(format!("{}/readyz", server.url)).send().await.is_err(), "another CA's client certificate");
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_naming_the_key_and_the_file() {
    let ca = Ca::new("ca");
    let files = Files::new();
    let (cert, key) = files.write_pair(&ca.server());
    let garbage = files.write("garbage.pem", "this is not a certificate\n");
    let other_key = files.write("other.key", &ca.server().key);
    let cases = [
        (tls_env(&garbage, &key), "tls.cert_file", &garbage),
        (tls_env(&cert, &garbage), "tls.key_file", &garbage),
        (tls_env(&cert, &other_key), "tls.key_file", &other_key),
    ];
    for (env, name, file) in cases {
        let data = tempfile::tempdir().unwrap();
        let output = Command::new(binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port()), "--data-dir"])
            .arg(data.path())
            .envs(env.iter().map(|(var, path)| (*var, path.as_os_str())))
            .output()
            .expect("run switchyard");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{name}: started anyway");
        assert!(stderr.contains(name) && stderr.contains(&file.display().to_string()), "{name}: {stderr}");
    }
}

#[tokio::test]
async fn health_checks_an_https_server_with_cacert() {
    let ca = Ca::new("ca");
    let files = Files::new();
    let (cert, key) = files.write_pair(&ca.server());
    let ca_file = files.write("ca.pem", &ca.pem());
    let server = TlsServer::start(&tls_env(&cert, &key), &ca.client_trusting().build().unwrap()).await;
    let health = |cacert: Option<&Path>| {
        let mut command = Command::new(binary());
        command.args(["health", "--server", &server.url]).env_remove("SWITCHYARD_CACERT");
        if let Some(cacert) = cacert {
            command.arg("--cacert").arg(cacert);
        }
        command.output().expect("run health")
    };
    let trusted = health(Some(&ca_file));
    assert!(trusted.status.success(), "{}", String::from_utf8_lossy(&trusted.stderr));
    assert_eq!(String::from_utf8_lossy(&trusted.stdout).trim(), "ready");
    let untrusted = health(None);
    assert!(!untrusted.status.success(), "a private CA is not trusted without --cacert");
}

/// An HTTPS subscriber on 127.0.0.1 with a certificate of `ca`: answers 200 to every request and
/// records each request's `ce-id`.
struct HttpsSubscriber {
    url: String,
    ids: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsSubscriber {
    async fn start(ca: &Ca) -> HttpsSubscriber {
        use rustls::pki_types::pem::PemObject;
        let leaf = ca.server();
        let chain = vec![rustls::pki_types::CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()];
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://127.0.0.1:{}/", listener.local_addr().unwrap().port());
        let ids = Arc::new(Mutex::new(Vec::new()));
        let recorded = ids.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, recorded) = (acceptor.clone(), recorded.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate fails here: nothing recorded.
                    let Ok(stream) = acceptor.accept(stream).await else { return };
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let id = request.headers().get("ce-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                        recorded.lock().unwrap().push(id.to_owned());
                        async { Ok::<_, std::convert::Infallible>(hyper::Response::new(String::new())) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                });
            }
        });
        HttpsSubscriber { url, ids, task }
    }

    async fn wait_for(&self, id: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.ids.lock().unwrap().iter().any(|seen| seen == id) {
            assert!(Instant::now() < deadline, "'{id}' never arrived at the https subscriber");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for HttpsSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The first dead letter of a trigger, once there is one.
async fn first_dead_letter(server: &Server, trigger: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(&format!("/v1/namespaces/default/triggers/{trigger}/deadletters")).await;
        if let Some(entry) = body["items"].as_array().and_then(|items| items.first()) {
            return entry.clone();
        }
        assert!(Instant::now() < deadline, "{trigger}: nothing was dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ca_certs_let_a_trigger_reach_an_https_subscriber_of_a_private_ca() {
    let ca = Ca::new("subscriber ca");
    let subscriber = HttpsSubscriber::start(&ca).await;
    let server = Server::start().await;
    server.broker("default", "b").await;
    let only = |ty: &str| json!({"attributes": {"type": ty}});
    server
        .trigger(
            "default",
            "trusting",
            json!({"broker": "b", "filter": only("a"), "subscriber": {"uri": subscriber.url, "CACerts": ca.pem()}}),
        )
        .await;
    server
        .trigger(
            "default",
            "untrusting",
            json!({"broker": "b", "filter": only("b"), "subscriber": {"uri": subscriber.url}, "delivery": {"retry": 0}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "with-ca", "a", b"{}").await.as_u16(), 202);
    assert_eq!(server.send_binary("default", "b", "without-ca", "b", b"{}").await.as_u16(), 202);
    subscriber.wait_for("with-ca").await;
    let dead = first_dead_letter(&server, "untrusting").await;
    let error = dead["lastError"].as_str().unwrap_or_default().to_lowercase();
    assert!(error.contains("certificate") || error.contains("issuer"), "the dead letter says why: {dead}");
    assert!(!subscriber.ids.lock().unwrap().iter().any(|id| id == "without-ca"));
}

/// A source's sink URI with `CACerts` is reached over TLS its CA signs; a bundle that is not
/// PEM certificates is refused with the field.
#[tokio::test]
async fn ca_certs_let_a_source_reach_an_https_sink_of_a_private_ca() {
    let ca = Ca::new("source sink ca");
    let sink = HttpsSubscriber::start(&ca).await;
    let server = Server::start().await;
    let source = |ca_certs: &str| json!({"spec": {"schedule": "* * * * * *", "data": "{}", "sink": {"uri": sink.url, "CACerts": ca_certs}}});
    let (status, body) = server.put("/v1/namespaces/default/pingsources/tick", source(&ca.pem())).await;
    assert_eq!(status.as_u16(), 201, "{body}");
    let deadline = Instant::now() + WAIT;
    while sink.ids.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no tick reached the https sink");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, problem) = server.put("/v1/namespaces/default/pingsources/bad", source("not a certificate")).await;
    assert_eq!(status.as_u16(), 400, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("spec.sink.CACerts")), "{problem}");
}

#[tokio::test]
async fn ca_certs_of_a_dead_letter_sink_are_used_and_bad_ones_are_refused_with_the_field() {
    let ca = Ca::new("sink ca");
    let sink = HttpsSubscriber::start(&ca).await;
    let failing = Subscriber::start_answering(vec![reqwest::StatusCode::BAD_REQUEST]).await;
    let server = Server::start().await;
    server.broker("default", "b").await;
    let delivery = json!({"retry": 0, "deadLetterSink": {"uri": sink.url, "CACerts": ca.pem()}});
    server
        .trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": failing.url}, "delivery": delivery}))
        .await;
    assert_eq!(server.send_binary("default", "b", "to-the-sink", "t", b"{}").await.as_u16(), 202);
    sink.wait_for("to-the-sink").await;

    let cases = [
        (json!({"uri": sink.url, "CACerts": "not a certificate"}), None, "spec.subscriber.CACerts"),
        (
            json!({"uri": sink.url}),
            Some(json!({"deadLetterSink": {"uri": sink.url, "CACerts": format!("{}{}", ca.pem(), ca.client().key)}})),
            "spec.delivery.deadLetterSink.CACerts",
        ),
    ];
    for (subscriber, delivery, field) in cases {
        let mut spec = json!({"broker": "b", "subscriber": subscriber});
        if let Some(delivery) = delivery {
            spec["delivery"] = delivery;
        }
        let (status, body) = server.put("/v1/namespaces/default/triggers/bad", json!({"spec": spec})).await;
        assert_eq!(status.as_u16(), 400, "{body}");
        assert!(body.to_string().contains(field), "{field}: {body}");
    }
}
