//! OIDC JWTs against the real binary and a real issuer: the test runs an HTTP server on
//! loopback publishing OpenID Connect discovery and a JWKS for keys it generates (ES256 and
//! EdDSA, with ring), and signs tokens with them. Valid tokens work through their grants;
//! expired, wrongly addressed, forged, unsigned and ungranted ones are refused with what to fix;
//! rotated keys are picked up and removed ones stop verifying; an issuer that cannot be reached
//! gives 401s, not a sick server; static tokens keep working beside OIDC.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode as AxumStatus;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use switchyard_tests::{free_port, metric_value, Server};

const ADMIN: &str = "sy_static-admin-token";
const DEPLOYER: &str = "system:serviceaccount:team:deployer";

fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs()
}

/// A signing key the issuer publishes (or not) under `kid`.
enum SigningKey {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

struct Key {
    kid: String,
    key: SigningKey,
}

impl Key {
    fn es256(kid: &str) -> Key {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("generate");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
        Key { kid: kid.to_owned(), key: SigningKey::Es256(pair) }
    }

    fn eddsa(kid: &str) -> Key {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("generate");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        Key { kid: kid.to_owned(), key: SigningKey::EdDsa(pair) }
    }

    fn jwk(&self) -> Value {
        match &self.key {
            SigningKey::Es256(pair) => {
                // An uncompressed point: 0x04, x, y.
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": self.kid,
                       "x": b64(&point[1..33]), "y": b64(&point[33..])})
            }
            SigningKey::EdDsa(pair) => json!({"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                                              "kid": self.kid, "x": b64(pair.public_key().as_ref())}),
        }
    }

    /// A JWS compact serialization (RFC 7515 §7.1) of `claims`.
    fn sign(&self, claims: &Value) -> String {
        let alg = match self.key {
            SigningKey::Es256(_) => "ES256",
            SigningKey::EdDsa(_) => "EdDSA",
        };
        let signed = format!(
            "{}.{}",
            b64(json!({"alg": alg, "typ": "JWT", "kid": self.kid}).to_string()),
            b64(claims.to_string())
        );
        let signature = match &self.key {
            SigningKey::Es256(pair) => {
                pair.sign(&SystemRandom::new(), signed.as_bytes()).expect("sign").as_ref().to_vec()
            }
            SigningKey::EdDsa(pair) => pair.sign(signed.as_bytes()).as_ref().to_vec(),
        };
        format!("{signed}.{}", b64(signature))
    }
}

/// What the issuer publishes.
#[derive(Default)]
struct Published {
    jwks: Vec<Value>,
    /// Answer 503 to everything.
    down: bool,
    /// JWKS requests answered.
    fetches: usize,
}

/// A real OIDC issuer on loopback: discovery at the well-known path, the JWKS it points to.
struct Issuer {
    url: String,
    published: Arc<Mutex<Published>>,
}

impl Issuer {
    async fn start() -> Issuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the issuer");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let published = Arc::new(Mutex::new(Published::default()));
        let discovery = {
            let url = url.clone();
            move |State(published): State<Arc<Mutex<Published>>>| async move {
                if published.lock().expect("lock").down {
                    return AxumStatus::SERVICE_UNAVAILABLE.into_response();
                }
                Json(json!({"issuer": url, "jwks_uri": format!("{url}/keys"), "id_token_signing_alg_values_supported": ["ES256", "EdDSA"]}))
                    .into_response()
            }
        };
        let app = axum::Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .with_state(published.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Issuer { url, published }
    }

    fn publish(&self, keys: &[&Key]) {
        self.published.lock().expect("lock").jwks = keys.iter().map(|key| key.jwk()).collect();
    }

    fn fetches(&self) -> usize {
        self.published.lock().expect("lock").fetches
    }

    fn set_down(&self, down: bool) {
        self.published.lock().expect("lock").down = down;
    }

    /// Claims of a token this issuer would give `subject` for Switchyard, valid for an hour.
    fn claims(&self, subject: &str) -> Value {
        json!({"iss": self.url, "sub": subject, "aud": ["switchyard", "other-service"], "iat": now(), "exp": now() + 3600})
    }
}

async fn jwks(State(published): State<Arc<Mutex<Published>>>) -> Response {
    let mut published = published.lock().expect("lock");
    published.fetches += 1;
    if published.down {
        return AxumStatus::SERVICE_UNAVAILABLE.into_response();
    }
    Json(json!({"keys": published.jwks})).into_response()
}

fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A server accepting the issuer's tokens (refreshing its keys every second), a second issuer
/// at an address nobody listens on, and one static admin token.
async fn server_for(issuer: &Issuer, unreachable: &str) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("switchyard.toml");
    let toml = format!(
        r#"
[[auth.tokens]]
name = "ops"
sha256 = "{admin}"
role = "admin"

[[auth.oidc]]
issuer = "{issuer}"
audience = "switchyard"
clock_skew_secs = 5
jwks_refresh_secs = 1

[[auth.oidc.grants]]
subject = "system:serviceaccount:team:*"
role = "namespace-admin"
namespace = "team"

[[auth.oidc.grants]]
subject = "ci"
role = "ingest"
namespace = "team"
broker = "orders"

[[auth.oidc]]
issuer = "{unreachable}"
audience = "switchyard"

[[auth.oidc.grants]]
subject = "anyone"
role = "admin"
"#,
        admin = sha256_hex(ADMIN),
        issuer = issuer.url,
    );
    std::fs::write(&config, toml).expect("write config");
    let server = Server::start_with_args_and_env(&["--config", &config.display().to_string()], &[]).await;
    (server, dir)
}

async fn call(server: &Server, method: Method, path: &str, token: &str) -> (StatusCode, String) {
    let mut request =
        reqwest::Client::new().request(method.clone(), format!("{}{path}", server.url)).bearer_auth(token);
    if method == Method::PUT {
        request = request.json(&json!({"spec": {}}));
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    if status == StatusCode::UNAUTHORIZED {
        assert!(response.headers().contains_key("www-authenticate"), "a 401 says how to authenticate");
    }
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["detail"].as_str().unwrap_or_default().to_owned())
}

async fn send(server: &Server, broker: &str, token: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(format!("{}/team/{broker}", server.url))
        .bearer_auth(token)
        .header("ce-specversion", "1.0")
        .header("ce-id", uuid::Uuid::new_v4().to_string())
        .header("ce-type", "order.created")
        .header("ce-source", "/checkout")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("send");
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["detail"].as_str().unwrap_or_default().to_owned())
}

/// Sends with `token` until the answer is `expected` with a detail containing `needle` (the
/// server refetches keys at most once a second); returns the detail.
async fn send_until(server: &Server, token: &str, expected: StatusCode, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, detail) = send(server, "orders", token).await;
        if status == expected && detail.contains(needle) {
            return detail;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} ({detail}), not {expected} with '{needle}'; log: {}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn oidc_tokens_are_verified_against_the_issuer_and_its_rotated_keys() {
    let issuer = Issuer::start().await;
    let first = Key::es256("first");
    issuer.publish(&[&first]);
    let unreachable = format!("http://127.0.0.1:{}", free_port());
    let (server, _config) = server_for(&issuer, &unreachable).await;
    let deployer = first.sign(&issuer.claims(DEPLOYER));

    // A valid token with a grant works: its namespace admin declares and sends.
    let (status, detail) = call(&server, Method::PUT, "/v1/namespaces/team/brokers/orders", &deployer).await;
    assert_eq!(status, StatusCode::CREATED, "{detail}; log: {}", server.log());
    assert_eq!(send(&server, "orders", &deployer).await.0, StatusCode::ACCEPTED);
    let (status, detail) = call(&server, Method::PUT, "/v1/namespaces/other/brokers/b", &deployer).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(detail.contains(DEPLOYER) && detail.contains("may not change namespace 'other'"), "{detail}");
    // The ingest grant sends to its one broker and declares nothing.
    let ci = first.sign(&issuer.claims("ci"));
    assert_eq!(send(&server, "orders", &ci).await.0, StatusCode::ACCEPTED);
    assert_eq!(call(&server, Method::PUT, "/v1/namespaces/team/brokers/x", &ci).await.0, StatusCode::FORBIDDEN);
    // Static tokens keep working beside OIDC.
    assert_eq!(call(&server, Method::GET, "/v1/brokers", ADMIN).await.0, StatusCode::OK);
    assert_eq!(send(&server, "orders", ADMIN).await.0, StatusCode::ACCEPTED);

    // Refused, each saying what is wrong.
    let with = |change: Value| {
        let mut claims = issuer.claims(DEPLOYER);
        claims.as_object_mut().expect("object").extend(change.as_object().expect("object").clone());
        first.sign(&claims)
    };
    let expired = with(json!({"iat": now() - 7200, "exp": now() - 3600}));
    let wrong_audience = with(json!({"aud": "someone-else"}));
    let wrong_issuer = with(json!({"iss": "http://127.0.0.1:1/elsewhere"}));
    let not_yet = with(json!({"nbf": now() + 600}));
    // The deployer's signature over an admin's claims.
    let (signed, signature) = deployer.rsplit_once('.').expect("signature");
    let (header, _) = signed.split_once('.').expect("payload");
    let tampered = format!("{header}.{}.{signature}", b64(issuer.claims("anyone").to_string()));
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"}).to_string()),
        b64(issuer.claims(DEPLOYER).to_string())
    );
    for (token, expected, reason) in [
        (&expired, "the token expired at ", "expired"),
        (&wrong_audience, "the token's audience is not 'switchyard'", "audience"),
        (&wrong_issuer, "not issued by a configured issuer ('http://127.0.0.1:1/elsewhere')", "issuer"),
        (&not_yet, "the token is not valid before ", "not_yet_valid"),
        (&tampered, "signature does not verify", "signature"),
        (&unsigned, "algorithm 'none' is not accepted", "algorithm"),
    ] {
        let (status, detail) = send(&server, "orders", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}: {detail}");
        assert!(detail.contains(expected), "{reason}: {detail}");
        let count = server.metric("switchyard_auth_refused_requests_total", &[("reason", reason)]).await;
        assert!(count.is_some_and(|c| c >= 1.0), "{reason}: {count:?}");
    }
    // A valid token whose subject has no grant: authenticated, but allowed nothing.
    let stranger = first.sign(&issuer.claims("stranger"));
    let (status, detail) = send(&server, "orders", &stranger).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(detail.contains("subject 'stranger' has no grant"), "{detail}");

    // Rotation: a new key (another algorithm too) is found by its kid, without a restart.
    let second = Key::eddsa("second");
    issuer.publish(&[&first, &second]);
    let rotated = second.sign(&issuer.claims(DEPLOYER));
    send_until(&server, &rotated, StatusCode::ACCEPTED, "").await;
    // The old key withdrawn: its tokens stop verifying once the keys are refreshed.
    issuer.publish(&[&second]);
    send_until(&server, &deployer, StatusCode::UNAUTHORIZED, "no key 'first' in the issuer's keys").await;
    // A flood of made-up kids does not make the server fetch for each: at most once a second.
    let (before, started) = (issuer.fetches(), Instant::now());
    let bogus = Key::es256("bogus").sign(&issuer.claims(DEPLOYER));
    for _ in 0..30 {
        let (status, detail) = send(&server, "orders", &bogus).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(detail.contains("no key 'bogus'"), "{detail}");
    }
    let fetched = issuer.fetches() - before;
    assert!(fetched as u64 <= started.elapsed().as_secs() + 1, "{fetched} fetches for 30 unknown kids");

    // The issuer down: the keys it last published still verify, an unknown kid says the issuer
    // could not be reached, and the server stays well.
    issuer.set_down(true);
    let third = Key::es256("third").sign(&issuer.claims(DEPLOYER));
    let needle = format!("the issuer '{}' could not be reached", issuer.url);
    send_until(&server, &third, StatusCode::UNAUTHORIZED, &needle).await;
    assert_eq!(send(&server, "orders", &rotated).await.0, StatusCode::ACCEPTED, "cached keys still verify");
    // An issuer nobody listens on.
    let elsewhere = Key::es256("elsewhere")
        .sign(&json!({"iss": unreachable, "sub": "anyone", "aud": "switchyard", "exp": now() + 60}));
    let (status, detail) = call(&server, Method::GET, "/v1/brokers", &elsewhere).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(detail.contains(&format!("the issuer '{unreachable}' could not be reached")), "{detail}");
    server.assert_healthy().await;
    let metrics = server.metrics().await;
    let failures = metric_value(&metrics, "switchyard_auth_jwks_fetch_failures_total", &[]);
    assert!(failures.is_some_and(|f| f >= 2.0), "{failures:?}");
    let count = metric_value(&metrics, "switchyard_auth_refused_requests_total", &[("reason", "issuer_unreachable")]);
    assert!(count.is_some_and(|c| c >= 1.0), "{count:?}");
    issuer.set_down(false);

    // The audit line names the subject, and no token reaches the log.
    let log = server.log();
    assert!(
        log.lines().any(|line| line.contains("declaration change") && line.contains(DEPLOYER) && line.contains("201")),
        "no audit line naming {DEPLOYER}"
    );
    assert!(!log.contains(&deployer) && !log.contains(ADMIN), "a token reached the log");
}
