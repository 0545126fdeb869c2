//! Signed deliveries: Standard Webhooks 1.0.0 ("Signature scheme", "Webhook headers"), opt-in
//! per trigger (`spec.signing`).
//!
//! Every attempt carries `webhook-id`, `webhook-timestamp` (the attempt's, in seconds since the
//! Unix epoch) and `webhook-signature`: one signature per secret, space-delimited, over
//! `{webhook-id}.{webhook-timestamp}.{body}` — `v1,<base64 HMAC-SHA256>` for a `whsec_` secret
//! and `v1a,<base64 Ed25519>` for a `whsk_` one. A subscriber accepts a delivery when any one
//! verifies, which is how a secret is rotated: sign with the old and the new for a while.
//!
//! What is signed is the body as sent. In binary mode (the default) that is the event's data
//! only: the `ce-` headers carrying its attributes are not covered by the signature. In
//! structured mode (`delivery.format: json`) the body is the whole event, and all of it is
//! signed.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use http::{HeaderName, HeaderValue};
use ring::signature::{Ed25519KeyPair, KeyPair};
use ring::{digest, hmac};
use switchyard_event::Event;
use switchyard_meta::resources::SigningSpec;
use switchyard_meta::{Secret, SecretSource, ValidationError};

/// The most secrets one trigger signs with: two during a rotation, a few more to spare; each
/// costs a signature on every attempt.
pub const MAX_SECRETS: usize = 8;

/// The prefix of a symmetric (HMAC-SHA256) secret.
pub const SYMMETRIC_PREFIX: &str = "whsec_";
/// The prefix of an Ed25519 secret key.
pub const SECRET_KEY_PREFIX: &str = "whsk_";
/// The prefix of an Ed25519 public key.
pub const PUBLIC_KEY_PREFIX: &str = "whpk_";

/// Standard Webhooks' bounds of a symmetric secret: "at least 24 bytes (192 bits, 512
/// maximum)".
const SYMMETRIC_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// Standard base64, padded or not: the reference libraries accept both (Python pads what it is
/// given, JavaScript's decoder is lenient), so a secret one of them accepts is accepted here.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The headers of a signed attempt.
pub const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
/// The attempt's time, in seconds since the Unix epoch.
pub const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
/// The signatures, space-delimited.
pub const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");

/// A trigger's `spec.signing`, checked: the secrets it names, not read yet (an environment
/// variable or a file may be provided after the trigger is declared). Inline values are
/// checked at once.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningPlan {
    secrets: Vec<Secret>,
}

impl SigningPlan {
    /// Checks `spec.signing` (named `field` in errors): 1 to [`MAX_SECRETS`] secrets, each a
    /// valid [`Secret`], an inline one a valid key. Errors never quote a secret.
    pub fn compile(spec: &SigningSpec, field: &str) -> Result<SigningPlan, ValidationError> {
        let secrets_field = format!("{field}.secrets");
        if spec.secrets.is_empty() || spec.secrets.len() > MAX_SECRETS {
            return Err(ValidationError::field(
                &secrets_field,
                format!("has {} secrets: give 1 to {MAX_SECRETS}", spec.secrets.len()),
            ));
        }
        for (i, secret) in spec.secrets.iter().enumerate() {
            let field = format!("{secrets_field}[{i}]");
            secret.validate(&field)?;
            if let Some(SecretSource::Value(value)) = secret.source() {
                SigningKey::parse(value).map_err(|e| ValidationError::field(&format!("{field}.value"), e.0))?;
            }
        }
        Ok(SigningPlan { secrets: spec.secrets.clone() })
    }

    /// Reads every secret and parses its key: done when the trigger starts. The error names the
    /// variable or file to fix, never the key.
    pub fn read(&self) -> Result<Signer, SigningError> {
        let keys = self.secrets.iter().enumerate().map(|(i, secret)| {
            let what = format!("the signing secret spec.signing.secrets[{i}]");
            let text = secret.read(&what).map_err(|e| SigningError::NotFound(e.0))?;
            SigningKey::parse(&text).map_err(|e| SigningError::Invalid(format!("{} {what}: {}", place(secret), e.0)))
        });
        Ok(Signer { keys: keys.collect::<Result<_, _>>()? })
    }
}

/// Where a secret was read from, for an error about its content.
fn place(secret: &Secret) -> String {
    match secret.source() {
        Some(SecretSource::Env(name)) => format!("the environment variable '{name}' holding"),
        Some(SecretSource::File(path)) => format!("the file '{path}' holding"),
        Some(SecretSource::Value(_)) | None => "the value of".to_owned(),
    }
}

/// Why a trigger's signing secrets could not be used; the message names the variable or file
/// and is safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// A secret could not be read (an unset variable, a missing or empty file).
    #[error("{0}")]
    NotFound(String),
    /// A secret was read but is not a Standard Webhooks key.
    #[error("{0}")]
    Invalid(String),
}

impl SigningError {
    /// The trigger's `Ready=False` reason: `SecretNotFound` or `InvalidSecret`.
    pub fn reason(&self) -> &'static str {
        match self {
            SigningError::NotFound(_) => "SecretNotFound",
            SigningError::Invalid(_) => "InvalidSecret",
        }
    }
}

/// Why a key's text is not a Standard Webhooks key; never quotes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct KeyError(String);

/// One parsed secret.
enum SigningKey {
    /// `whsec_`: HMAC-SHA256, signatures `v1,`.
    Hmac(hmac::Key),
    /// `whsk_`: Ed25519, signatures `v1a,`.
    Ed25519(Ed25519KeyPair),
}

impl SigningKey {
    /// `whsec_<base64 of 24 to 64 bytes>`, or `whsk_<base64>` of an Ed25519 secret key: its
    /// 32-byte seed (what the Go reference library reads) or the 64-byte seed and public key
    /// (Go's `ed25519.PrivateKey`, libsodium's secret key), whose public half must match.
    fn parse(text: &str) -> Result<SigningKey, KeyError> {
        if let Some(encoded) = text.strip_prefix(SYMMETRIC_PREFIX) {
            let key = decode(encoded, SYMMETRIC_PREFIX)?;
            if !SYMMETRIC_BYTES.contains(&key.len()) {
                return Err(KeyError(format!(
                    "a {SYMMETRIC_PREFIX} secret must hold {} to {} bytes, not {}",
                    SYMMETRIC_BYTES.start(),
                    SYMMETRIC_BYTES.end(),
                    key.len()
                )));
            }
            return Ok(SigningKey::Hmac(hmac::Key::new(hmac::HMAC_SHA256, &key)));
        }
        if let Some(encoded) = text.strip_prefix(SECRET_KEY_PREFIX) {
            let key = decode(encoded, SECRET_KEY_PREFIX)?;
            let pair = match key.len() {
                32 => Ed25519KeyPair::from_seed_unchecked(&key),
                64 => Ed25519KeyPair::from_seed_and_public_key(&key[..32], &key[32..]),
                n => {
                    return Err(KeyError(format!(
                        "a {SECRET_KEY_PREFIX} key must hold a 32-byte Ed25519 seed (or the 64-byte seed and public key), not {n} bytes"
                    )))
                }
            };
            return pair.map(SigningKey::Ed25519).map_err(|_| {
                KeyError(format!("the {SECRET_KEY_PREFIX} key's public half does not belong to its seed"))
            });
        }
        Err(KeyError(format!(
            "is not a Standard Webhooks secret: write '{SYMMETRIC_PREFIX}<base64>' (HMAC-SHA256) or '{SECRET_KEY_PREFIX}<base64>' (Ed25519)"
        )))
    }
}

fn decode(encoded: &str, prefix: &str) -> Result<Vec<u8>, KeyError> {
    BASE64.decode(encoded).map_err(|_| KeyError(format!("what follows '{prefix}' is not base64")))
}

/// What signs a trigger's deliveries: every secret it declares, read and parsed.
pub struct Signer {
    keys: Vec<SigningKey>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("keys", &self.keys.len()).finish_non_exhaustive()
    }
}

impl Signer {
    /// The signer as shared by a trigger's targets.
    pub fn shared(self) -> Arc<Signer> {
        Arc::new(self)
    }

    /// The `whpk_` public key of each Ed25519 secret, in the declared order: what subscribers
    /// verify `v1a` signatures with.
    pub fn public_keys(&self) -> Vec<String> {
        let public = |key: &SigningKey| match key {
            SigningKey::Ed25519(pair) => {
                Some(format!("{PUBLIC_KEY_PREFIX}{}", BASE64.encode(pair.public_key().as_ref())))
            }
            SigningKey::Hmac(_) => None,
        };
        self.keys.iter().filter_map(public).collect()
    }

    /// `webhook-signature` for `{id}.{timestamp}.{body}`: one signature per secret, in the
    /// declared order, space-delimited.
    pub fn sign(&self, id: &str, timestamp: u64, body: &[u8]) -> HeaderValue {
        let mut content = Vec::with_capacity(id.len() + 22 + body.len());
        content.extend_from_slice(id.as_bytes());
        content.extend_from_slice(format!(".{timestamp}.").as_bytes());
        content.extend_from_slice(body);
        let signatures: Vec<String> = self
            .keys
            .iter()
            .map(|key| match key {
                SigningKey::Hmac(key) => format!("v1,{}", BASE64.encode(hmac::sign(key, &content))),
                SigningKey::Ed25519(pair) => format!("v1a,{}", BASE64.encode(pair.sign(&content))),
            })
            .collect();
        // Base64, commas and spaces only.
        HeaderValue::try_from(signatures.join(" ")).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The three headers of one attempt of `event` whose body is `body`, made at `now`.
    pub fn headers(&self, event: &Event, body: &[u8], now: SystemTime) -> [(HeaderName, HeaderValue); 3] {
        let id = webhook_id(event);
        let timestamp = now.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs());
        let signature = self.sign(&id, timestamp, body);
        [
            (WEBHOOK_ID, HeaderValue::try_from(id).unwrap_or_else(|_| HeaderValue::from_static(""))),
            (WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp)),
            (WEBHOOK_SIGNATURE, signature),
        ]
    }
}

/// `webhook-id`: `msg_` and the unpadded base64url SHA-256 of the event's `source`, a NUL and
/// its `id`.
///
/// Standard Webhooks wants one id per event, the same on every retry (subscribers use it as an
/// idempotency key): `source` and `id` identify a CloudEvent (CloudEvents §3.1.1, "source + id
/// is unique"), so every attempt and every redrive of one event share it, and two events never
/// do. Hashed, because the spec forbids a `.` in it ("Signature scheme": the id must not let a
/// sender shift the `.`-delimited signed content) and the attributes are the producer's to
/// choose; a NUL separates them because no CloudEvents string holds one.
pub fn webhook_id(event: &Event) -> String {
    let mut hash = digest::Context::new(&digest::SHA256);
    hash.update(event.source().as_bytes());
    hash.update(&[0]);
    hash.update(event.id().as_bytes());
    format!("msg_{}", URL_SAFE_NO_PAD.encode(hash.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{UnparsedPublicKey, ED25519};
    use switchyard_event::AttrValue;

    fn signer(secrets: &[&str]) -> Signer {
        let keys = secrets.iter().map(|s| SigningKey::parse(s).unwrap_or_else(|e| panic!("{s}: {}", e.0)));
        Signer { keys: keys.collect() }
    }

    fn signatures(value: &HeaderValue) -> Vec<String> {
        value.to_str().unwrap().split(' ').map(str::to_owned).collect()
    }

    /// The test vector of the Python and JavaScript reference libraries (`tests/test_webhooks.py`:
    /// `test_sign_function`).
    #[test]
    fn hmac_matches_the_reference_libraries_vector() {
        let signer = signer(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let signature = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    /// The vector of the Go reference library (`webhook_asymmetric_test.go`:
    /// `TestAsymmetricWebhookSign`), its seed given unprefixed there.
    #[test]
    fn ed25519_matches_the_go_reference_vector_and_verifies_with_its_public_key() {
        let seed = "VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=";
        let signer = signer(&[&format!("whsk_{seed}")]);
        let body = br#"{"test": 2432232314}"#;
        let signature = signer.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(
            signature,
            "v1a,tQ9V2XOqn7jL/DQenEFpqIugdBVtiMmER5mhSkXBNwM0mkATuDe6KYYUuxqtaiHeYGb7KaaBRdM5WqyeFiL8Ag=="
        );
        let [public] = &signer.public_keys()[..] else { panic!("{:?}", signer.public_keys()) };
        let public = BASE64.decode(public.strip_prefix("whpk_").unwrap()).unwrap();
        let raw = BASE64.decode(signature.to_str().unwrap().strip_prefix("v1a,").unwrap()).unwrap();
        let verifier = UnparsedPublicKey::new(&ED25519, &public);
        verifier.verify(br#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#, &raw).unwrap();
        assert!(verifier.verify(b"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265331.{}", &raw).is_err());
        // The 64-byte form (seed, then public key) is the same key.
        let full = [BASE64.decode(seed).unwrap(), public].concat();
        let again = self::signer(&[&format!("whsk_{}", BASE64.encode(&full))]);
        assert_eq!(again.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body), signature);
    }

    #[test]
    fn every_secret_signs_in_the_declared_order() {
        let signer = signer(&[
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk",
            "whsec_c2Vjb25kIHNlY3JldCwgYWxzbyAyNCsgYnl0ZXM=",
        ]);
        let all = signatures(&signer.sign("msg_x", 1, b"body"));
        assert_eq!(all.len(), 3, "{all:?}");
        assert!(all[0].starts_with("v1,") && all[1].starts_with("v1a,") && all[2].starts_with("v1,"), "{all:?}");
        assert_ne!(all[0], all[2]);
        assert_eq!(signer.public_keys().len(), 1);
    }

    #[test]
    fn headers_carry_an_id_per_event_and_the_attempts_time() {
        let signer = signer(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]);
        let event = |source: &str, id: &str| {
            let attributes = vec![
                ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
                ("id".to_owned(), AttrValue::String(id.to_owned())),
                ("source".to_owned(), AttrValue::String(source.to_owned())),
                ("type".to_owned(), AttrValue::String("t".to_owned())),
            ];
            Event::new(attributes, None).unwrap()
        };
        let at = UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_900);
        let [(_, id), (_, timestamp), (_, signature)] = signer.headers(&event("/s", "1"), b"{}", at);
        assert_eq!(timestamp, "1700000000");
        let id = id.to_str().unwrap();
        assert!(id.starts_with("msg_") && !id.contains('.'), "{id}");
        assert_eq!(signature, signer.sign(id, 1_700_000_000, b"{}"));
        assert_eq!(webhook_id(&event("/s", "1")), id);
        for other in [event("/s", "2"), event("/t", "1")] {
            assert_ne!(webhook_id(&other), id);
        }
        // `source` and `id` are kept apart: moving a character from one to the other changes it.
        assert_ne!(webhook_id(&event("/s", "11")), webhook_id(&event("/s1", "1")));
    }

    #[test]
    fn bad_keys_are_refused_without_quoting_them() {
        for (key, expected) in [
            ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not a Standard Webhooks secret"),
            ("whpk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "not a Standard Webhooks secret"),
            ("whsec_not*base64!", "not base64"),
            ("whsec_c2hvcnQ=", "24 to 64 bytes, not 5"),
            ("whsk_c2hvcnQ=", "32-byte Ed25519 seed"),
        ] {
            let Err(KeyError(message)) = SigningKey::parse(key) else { panic!("{key} was accepted") };
            assert!(message.contains(expected), "{key}: {message}");
            assert!(!message.contains(key.split('_').next_back().unwrap()), "{key}: {message}");
        }
        let mismatched = [[7u8; 32], [9u8; 32]].concat();
        let Err(KeyError(message)) = SigningKey::parse(&format!("whsk_{}", BASE64.encode(mismatched))) else {
            panic!("a mismatched public half was accepted")
        };
        assert!(message.contains("does not belong"), "{message}");
    }

    fn spec(json: serde_json::Value) -> SigningSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_declaration_is_checked_and_names_the_field() {
        let good = spec(serde_json::json!({"secrets": [
            {"value": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, {"env": "UNSET_AT_DECLARATION"}, {"file": "/nowhere"}
        ]}));
        SigningPlan::compile(&good, "spec.signing").unwrap();
        let nine = vec![serde_json::json!({"env": "X"}); 9];
        for (json, field, expected) in [
            (serde_json::json!({"secrets": []}), "spec.signing.secrets", "give 1 to 8"),
            (serde_json::json!({"secrets": nine}), "spec.signing.secrets", "has 9 secrets"),
            (
                serde_json::json!({"secrets": [{"env": "X"}, {"value": "hunter2"}]}),
                "spec.signing.secrets[1].value",
                "whsec_",
            ),
            (serde_json::json!({"secrets": [{"file": "rel"}]}), "spec.signing.secrets[0].file", "absolute"),
        ] {
            let error = SigningPlan::compile(&spec(json.clone()), "spec.signing").unwrap_err();
            let ValidationError::Field { field: actual, message } = &error else { panic!("{json}: {error}") };
            assert_eq!(actual, field, "{json}: {error}");
            assert!(message.contains(expected) && !message.contains("hunter2"), "{json}: {error}");
        }
    }

    #[test]
    fn reading_names_the_variable_or_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key").display().to_string();
        let plan =
            SigningPlan::compile(&spec(serde_json::json!({"secrets": [{"file": path}]})), "spec.signing").unwrap();
        let missing = plan.read().unwrap_err();
        assert_eq!(missing.reason(), "SecretNotFound");
        assert!(missing.to_string().contains(&path), "{missing}");
        std::fs::write(&path, "whsec_tooShort\n").unwrap();
        let invalid = plan.read().unwrap_err();
        assert_eq!(invalid.reason(), "InvalidSecret");
        assert!(invalid.to_string().contains(&path) && !invalid.to_string().contains("tooShort"), "{invalid}");
        std::fs::write(&path, "whsk_VEVTVFNJR05JTkdLRVlET05PVFVTRVRISVNGT1JBTlk=\n").unwrap();
        assert_eq!(plan.read().unwrap().public_keys().len(), 1);
    }
}
