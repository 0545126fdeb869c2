//! Identified deliveries: when a destination sets `audience` (Knative's `Destination.audience`),
//! every attempt to it carries `Authorization: Bearer <jwt>`, an OIDC-style token this node
//! signs with its own key, as Knative's OIDC feature sends a token for the destination's
//! audience.
//!
//! The token is a JWS compact serialization (RFC 7515 §7.1) with ES256 (ECDSA P-256 and
//! SHA-256, RFC 7518 §3.4), which every JWT library verifies. Its claims (RFC 7519 §4.1):
//! `iss` (this node's issuer URL), `sub` ([`Identity::of_trigger`]), `aud` (the audience),
//! `iat`, `nbf`, `exp` ([`TOKEN_LIFETIME`] later) and a random `jti`. A subscriber verifies it
//! with the key published at the issuer's `/.well-known/jwks.json`, found through its OpenID
//! discovery document (`/.well-known/openid-configuration`, OpenID Connect Discovery 1.0 §4).
//!
//! The key is generated at first start and kept in the data directory, so that tokens stay
//! verifiable across restarts; nodes that share an issuer (Kafka mode behind one address) must
//! be given the same key (`[identity] key_file`), or a subscriber would find only one node's key.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use http::HeaderValue;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

/// How long a token is valid: short, so a leaked one is soon useless, as Knative's are.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(600);

/// A cached token is signed anew once it has less than this left, so that no attempt carries
/// a token about to expire (clocks differ, and an attempt may wait for its connection).
pub const REFRESH_BEFORE: Duration = Duration::from_secs(120);

/// The JWS algorithm of every token.
pub const ALGORITHM: &str = "ES256";

/// Where the key set is published, under the issuer URL.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Where the discovery document is published, under the issuer URL (OpenID Connect Discovery
/// 1.0 §4: the issuer with `/.well-known/openid-configuration` appended).
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";

/// The generated key's file, under the data directory.
pub const GENERATED_KEY_FILE: &str = "oidc/signing-key.pk8";

/// Tokens kept for reuse; past this, those due for renewal are dropped, and all of them if
/// that is not enough (a node with this many subject and audience pairs signs a little more).
const MAX_CACHED: usize = 10_000;

/// Who a token is for and whom it names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The `sub` claim: the sender.
    pub subject: String,
    /// The `aud` claim: the destination's `audience`.
    pub audience: String,
}

impl Identity {
    /// A trigger's identity towards `audience`: `sub` is
    /// `system:switchyard:trigger:<namespace>:<name>`. Knative sends the token of the
    /// trigger's own OIDC service account (`system:serviceaccount:<namespace>:<name>`); the same
    /// shape lets a subscriber's policy match a sender the same way, and the `switchyard`
    /// segment keeps it from being taken for a Kubernetes service account it is not.
    pub fn of_trigger(namespace: &str, name: &str, audience: &str) -> Identity {
        Identity { subject: crate::this_node::trigger_subject(namespace, name), audience: audience.to_owned() }
    }

    /// A source's identity towards its sink's `audience`:
    /// `system:switchyard:source:<kind>:<namespace>:<name>`.
    pub fn of_source(kind: &str, namespace: &str, name: &str, audience: &str) -> Identity {
        Identity { subject: crate::this_node::source_subject(kind, namespace, name), audience: audience.to_owned() }
    }
}

/// Why the signing key could not be had, or a token signed.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read or written.
    #[error("cannot {action} the OIDC signing key '{path}': {source}")]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The key file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file holds no usable key.
    #[error("the OIDC signing key '{path}' is not a PKCS#8 ECDSA P-256 private key (DER or PEM): {reason}")]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What ring said.
        reason: String,
    },
    /// The system's random generator or the signature failed.
    #[error("cannot sign an OIDC token: the system's random generator failed")]
    Signing,
}

/// A cached token and when it expires.
struct Cached {
    header: HeaderValue,
    expires: SystemTime,
}

/// Signs this node's tokens and describes its key: one per process.
pub struct Issuer {
    issuer: String,
    key: EcdsaKeyPair,
    kid: String,
    /// The public point's coordinates, base64url.
    x: String,
    y: String,
    rng: SystemRandom,
    cache: Mutex<HashMap<Identity, Cached>>,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer").field("issuer", &self.issuer).field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl Issuer {
    /// The issuer named `issuer` (a URL, without a trailing slash) signing with the key in
    /// `key_file` (an operator's PKCS#8 key, DER or PEM), or else with the key generated in
    /// `data_dir` at the first start ([`GENERATED_KEY_FILE`], mode 0600).
    pub fn open(issuer: &str, key_file: Option<&Path>, data_dir: &Path) -> Result<Issuer, IdentityError> {
        let (path, pkcs8) = match key_file {
            Some(path) => (path.to_owned(), read(path)?),
            None => {
                let path = data_dir.join(GENERATED_KEY_FILE);
                let pkcs8 = match path.exists() {
                    true => read(&path)?,
                    false => generate(&path)?,
                };
                (path, pkcs8)
            }
        };
        Issuer::from_pkcs8(issuer, &pkcs8).map_err(|reason| IdentityError::Invalid { path, reason })
    }

    /// The issuer named `issuer` signing with a PKCS#8 key (DER, or PEM `PRIVATE KEY`).
    pub fn from_pkcs8(issuer: &str, pkcs8: &[u8]) -> Result<Issuer, String> {
        let der = pem_body(pkcs8).unwrap_or_else(|| pkcs8.to_vec());
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &rng)
            .map_err(|rejected| rejected.to_string())?;
        // An uncompressed point: 0x04, then X and Y, 32 bytes each (SEC 1 §2.3.3).
        let point = key.public_key().as_ref();
        let (x, y) = (URL_SAFE_NO_PAD.encode(&point[1..33]), URL_SAFE_NO_PAD.encode(&point[33..65]));
        // The JWK thumbprint (RFC 7638 §3): SHA-256 of the required members, sorted, no spaces.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()));
        let issuer = issuer.trim_end_matches('/').to_owned();
        Ok(Issuer { issuer, key, kid, x, y, rng, cache: Mutex::default() })
    }

    /// The `iss` of every token.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key's id, the `kid` of every token's header and of the JWK.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    /// The JWK Set (RFC 7517 §5) of the public key.
    pub fn jwks(&self) -> serde_json::Value {
        json!({"keys": [{
            "kty": "EC",
            "crv": "P-256",
            "x": self.x,
            "y": self.y,
            "kid": self.kid,
            "alg": ALGORITHM,
            "use": "sig",
        }]})
    }

    /// The OpenID Provider Metadata (OpenID Connect Discovery 1.0 §3) a verifier needs: the
    /// issuer, where its keys are, and what it signs with; the shape Kubernetes' service
    /// account issuer publishes, which has no authorization endpoint either.
    pub fn discovery(&self) -> serde_json::Value {
        json!({
            "issuer": self.issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", self.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti"],
        })
    }

    /// `Bearer <token>` for `identity` at `now`: the cached token while it has at least
    /// [`REFRESH_BEFORE`] left, a new one otherwise.
    pub fn bearer(&self, identity: &Identity, now: SystemTime) -> Result<HeaderValue, IdentityError> {
        let mut cache = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = |cached: &Cached| cached.expires.duration_since(now).is_ok_and(|left| left >= REFRESH_BEFORE);
        if let Some(cached) = cache.get(identity).filter(|cached| fresh(cached)) {
            return Ok(cached.header.clone());
        }
        let token = self.token(identity, now)?;
        let mut header = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| IdentityError::Signing)?;
        header.set_sensitive(true);
        if cache.len() >= MAX_CACHED {
            cache.retain(|_, cached| fresh(cached));
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(identity.clone(), Cached { header: header.clone(), expires: now + TOKEN_LIFETIME });
        Ok(header)
    }

    /// A new signed token for `identity`, issued at `now`.
    pub fn token(&self, identity: &Identity, now: SystemTime) -> Result<String, IdentityError> {
        let issued = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut jti = [0u8; 16];
        self.rng.fill(&mut jti).map_err(|_| IdentityError::Signing)?;
        let header = json!({"alg": ALGORITHM, "typ": "JWT", "kid": self.kid});
        let claims = json!({
            "iss": self.issuer,
            "sub": identity.subject,
            "aud": identity.audience,
            "iat": issued,
            "nbf": issued,
            "exp": issued + TOKEN_LIFETIME.as_secs(),
            "jti": URL_SAFE_NO_PAD.encode(jti),
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        // ring's FIXED signatures are R and S, 32 bytes each: exactly JWS's ES256 form
        // (RFC 7518 §3.4), not DER.
        let signature = self.key.sign(&self.rng, input.as_bytes()).map_err(|_| IdentityError::Signing)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref())))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, IdentityError> {
    std::fs::read(path).map_err(|source| IdentityError::Io { action: "read", path: path.to_owned(), source })
}

/// A new key written to `path` (its directory created), readable by this user only, and
/// renamed into place once whole, so a crash never leaves half a key to be read at the next
/// start.
fn generate(path: &Path) -> Result<Vec<u8>, IdentityError> {
    let write_error = |source| IdentityError::Io { action: "write", path: path.to_owned(), source };
    let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| IdentityError::Signing)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(write_error)?;
    }
    let partial = path.with_extension("partial");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&partial).map_err(write_error)?;
    file.write_all(document.as_ref()).and_then(|()| file.sync_all()).map_err(write_error)?;
    std::fs::rename(&partial, path).map_err(write_error)?;
    tracing::info!(path = %path.display(), "generated the OIDC signing key");
    Ok(document.as_ref().to_vec())
}

/// The DER inside a PEM `PRIVATE KEY` block (RFC 7468 §10), if the text is one.
fn pem_body(text: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(text).ok()?;
    let start = text.find("-----BEGIN PRIVATE KEY-----")? + "-----BEGIN PRIVATE KEY-----".len();
    let end = start + text[start..].find("-----END PRIVATE KEY-----")?;
    let body: String = text[start..end].chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

    use super::*;

    const ISSUER: &str = "http://127.0.0.1:8080";

    fn issuer() -> Issuer {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        Issuer::from_pkcs8(&format!("{ISSUER}/"), document.as_ref()).unwrap()
    }

    fn decode(part: &str) -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
    }

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn a_token_carries_the_claims_and_verifies_with_the_published_key() {
        let issuer = issuer();
        let identity = Identity::of_trigger("shop", "orders", "orders-service");
        let token = issuer.token(&identity, at(1_700_000_000)).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(decode(parts[0]), json!({"alg": "ES256", "typ": "JWT", "kid": issuer.key_id()}));
        let claims = decode(parts[1]);
        assert_eq!(claims["iss"], ISSUER, "without the trailing slash");
        assert_eq!(claims["sub"], "system:switchyard:trigger:shop:orders");
        assert_eq!(claims["aud"], "orders-service");
        assert_eq!((claims["iat"].as_u64(), claims["nbf"].as_u64()), (Some(1_700_000_000), Some(1_700_000_000)));
        assert_eq!(claims["exp"].as_u64(), Some(1_700_000_600));
        assert_eq!(URL_SAFE_NO_PAD.decode(claims["jti"].as_str().unwrap()).unwrap().len(), 16);

        // The JWK's coordinates rebuild the very public key that verifies the signature.
        let jwk = &issuer.jwks()["keys"][0];
        assert_eq!(
            (&jwk["kty"], &jwk["crv"], &jwk["alg"], &jwk["use"]),
            (&json!("EC"), &json!("P-256"), &json!("ES256"), &json!("sig"))
        );
        assert_eq!(jwk["kid"], issuer.key_id());
        let coordinate = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap();
        let point = [&[4u8][..], &coordinate("x"), &coordinate("y")].concat();
        assert_eq!(point, issuer.key.public_key().as_ref());
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let input = format!("{}.{}", parts[0], parts[1]);
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point).verify(input.as_bytes(), &signature).unwrap();

        let discovery = issuer.discovery();
        assert_eq!(discovery["issuer"], ISSUER);
        assert_eq!(discovery["jwks_uri"], format!("{ISSUER}/.well-known/jwks.json"));
        assert_eq!(discovery["id_token_signing_alg_values_supported"], json!(["ES256"]));
    }

    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint() {
        // RFC 7638 §3.1 computes thumbprints of RSA keys only; this is the same rule applied
        // to the EC members by hand, so a change of canonical form shows here.
        let issuer = issuer();
        let jwk = &issuer.jwks()["keys"][0];
        let canonical = format!("{{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":{},\"y\":{}}}", jwk["x"], jwk["y"]);
        let expected = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()));
        assert_eq!(issuer.key_id(), expected);
        assert_eq!(issuer.key_id().len(), 43);
    }

    #[test]
    fn a_token_is_reused_until_it_has_less_than_two_minutes_left() {
        let issuer = issuer();
        let identity = Identity::of_trigger("shop", "orders", "orders-service");
        let first = issuer.bearer(&identity, at(1_000)).unwrap();
        assert!(first.to_str().unwrap().starts_with("Bearer ey"));
        assert!(first.is_sensitive());
        assert_eq!(issuer.bearer(&identity, at(1_000 + 479)).unwrap(), first, "8 minutes in: reused");
        let renewed = issuer.bearer(&identity, at(1_000 + 481)).unwrap();
        assert_ne!(renewed, first, "under 2 minutes left: signed anew");
        assert_eq!(issuer.bearer(&identity, at(1_000 + 482)).unwrap(), renewed);
        // Another audience, or another trigger, is another token.
        let other_audience = Identity::of_trigger("shop", "orders", "billing");
        assert_ne!(issuer.bearer(&other_audience, at(1_000 + 482)).unwrap(), renewed);
        let other_trigger = Identity::of_trigger("shop", "refunds", "orders-service");
        assert_ne!(issuer.bearer(&other_trigger, at(1_000 + 482)).unwrap(), renewed);
    }

    #[test]
    fn the_generated_key_is_kept_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Issuer::open(ISSUER, None, dir.path()).unwrap();
        let path = dir.path().join(GENERATED_KEY_FILE);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let again = Issuer::open(ISSUER, None, dir.path()).unwrap();
        assert_eq!(again.key_id(), first.key_id(), "the same key after a restart");
        assert_eq!(again.jwks(), first.jwks());
    }

    #[test]
    fn an_operators_key_is_read_as_der_or_pem_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        let der = dir.path().join("key.der");
        std::fs::write(&der, document.as_ref()).unwrap();
        let pem = dir.path().join("key.pem");
        let body = STANDARD.encode(document.as_ref());
        let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        std::fs::write(&pem, format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", lines.join("\n")))
            .unwrap();
        let from_der = Issuer::open(ISSUER, Some(&der), dir.path()).unwrap();
        let from_pem = Issuer::open(ISSUER, Some(&pem), dir.path()).unwrap();
        assert_eq!(from_der.key_id(), from_pem.key_id());
        assert!(!dir.path().join(GENERATED_KEY_FILE).exists(), "nothing generated beside an operator's key");

        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "not a key").unwrap();
        let error = Issuer::open(ISSUER, Some(&bad), dir.path()).unwrap_err().to_string();
        assert!(error.starts_with(&format!("the OIDC signing key '{}' is not a PKCS#8", bad.display())), "{error}");
        let missing = Issuer::open(ISSUER, Some(&dir.path().join("missing")), dir.path()).unwrap_err();
        assert!(missing.to_string().starts_with("cannot read the OIDC signing key"), "{missing}");
    }
}

#[cfg(test)]
mod delivery_tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::http_client::{Attempt, Target};
    use crate::plan::Format;
    use crate::testing::{client, event, Subscriber};

    const ATTEMPT: Attempt<'static> = Attempt { trigger: "shop/orders", number: 1, dead_letter: false };

    fn target(url: url::Url, identity: Option<Identity>) -> Target {
        Target {
            url,
            format: Format::Binary,
            header_encoding: None,
            namespace: "shop".to_owned(),
            timeout: Duration::from_secs(3600),
            signer: None,
            ca_certs: None,
            identity,
            sender: Arc::from("system:switchyard:trigger:shop:orders"),
        }
    }

    fn issuer() -> Arc<Issuer> {
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        Arc::new(Issuer::from_pkcs8("http://127.0.0.1:1", document.as_ref()).unwrap())
    }

    #[tokio::test]
    async fn attempts_to_a_destination_with_an_audience_carry_the_cached_token_over_userinfo() {
        let subscriber = Subscriber::accepting().await;
        let issuer = issuer();
        let client = client().with_issuer(issuer.clone());
        let identity = Identity::of_trigger("shop", "orders", "orders-service");
        let mut with_userinfo = subscriber.url("/in");
        with_userinfo.set_username("user").unwrap();
        with_userinfo.set_password(Some("secret")).unwrap();
        for url in [subscriber.url("/in"), with_userinfo.clone()] {
            client.send(&target(url, Some(identity.clone())), &event("e"), ATTEMPT).await.unwrap();
        }
        client.send(&target(with_userinfo, None), &event("e"), ATTEMPT).await.unwrap();
        let received = subscriber.at("/in");
        let expected = issuer.bearer(&identity, SystemTime::now()).unwrap();
        assert_eq!(received[0].header("authorization"), expected.to_str().ok(), "one token, reused");
        assert_eq!(received[1].header("authorization"), expected.to_str().ok(), "the token wins over userinfo");
        assert!(
            received[2].header("authorization").is_some_and(|value| value.starts_with("Basic ")),
            "without an audience, userinfo is sent as before"
        );
    }

    #[test]
    fn audiences_are_compiled_for_the_subscriber_and_the_dead_letter_sink_and_bad_ones_named() {
        use switchyard_meta::resources::{DeliverySpec, TriggerSpec};
        use switchyard_meta::ValidationError;

        use crate::plan::TriggerPlan;

        let compile = |spec: serde_json::Value, broker: Option<serde_json::Value>| {
            let spec: TriggerSpec = serde_json::from_value(spec).unwrap();
            let broker: Option<DeliverySpec> = broker.map(|b| serde_json::from_value(b).unwrap());
            TriggerPlan::compile(&spec, broker.as_ref())
        };
        let plan = compile(
            json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:1/", "audience": "orders-service"},
                   "delivery": {"deadLetterSink": {"uri": "http://127.0.0.1:2/", "audience": "dls"}}}),
            None,
        )
        .unwrap();
        assert_eq!(
            (plan.audience.as_deref(), plan.delivery.dead_letter_audience.as_deref()),
            (Some("orders-service"), Some("dls"))
        );
        let inherited = compile(
            json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:1/"}}),
            Some(json!({"deadLetterSink": {"uri": "http://127.0.0.1:2/", "audience": "broker-dls"}})),
        )
        .unwrap();
        assert_eq!(
            (inherited.audience, inherited.delivery.dead_letter_audience.as_deref()),
            (None, Some("broker-dls"))
        );

        let long = "a".repeat(crate::plan::MAX_AUDIENCE_BYTES + 1);
        let cases = [
            (json!({"uri": "http://127.0.0.1:1/", "audience": ""}), "spec.subscriber.audience", "must not be empty"),
            (
                json!({"uri": "http://127.0.0.1:1/", "audience": long}),
                "spec.subscriber.audience",
                "longer than the limit of 512 bytes",
            ),
            (
                json!({"uri": "http://127.0.0.1:1/", "audience": "a\nb"}),
                "spec.subscriber.audience",
                "'a\\nb' has a control character",
            ),
        ];
        for (subscriber, field, message) in cases {
            let error = compile(json!({"broker": "b", "subscriber": subscriber}), None).unwrap_err();
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{error}") };
            assert_eq!(actual, field);
            assert!(error.to_string().contains(message), "{error}");
        }
        let error = compile(
            json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:1/"},
                   "delivery": {"deadLetterSink": {"uri": "http://127.0.0.1:2/", "audience": " "}}}),
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("spec.delivery.deadLetterSink.audience"), "{error}");
    }

    #[tokio::test]
    async fn without_a_key_an_attempt_with_an_audience_fails_and_sends_nothing() {
        let subscriber = Subscriber::accepting().await;
        let identity = Identity::of_trigger("shop", "orders", "orders-service");
        let failure = client().send(&target(subscriber.url("/"), Some(identity)), &event("e"), ATTEMPT).await;
        assert_eq!(
            failure.unwrap_err().error.as_deref(),
            Some("no OIDC signing key to send a token for audience 'orders-service'")
        );
        assert!(subscriber.at("/").is_empty());
        client().send(&target(subscriber.url("/"), None), &event("e"), ATTEMPT).await.unwrap();
        assert_eq!(subscriber.at("/")[0].header("authorization"), None);
    }
}
