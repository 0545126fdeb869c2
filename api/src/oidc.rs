//! OIDC JWTs as bearer tokens: a token that is a JWT and not a configured static token is
//! verified against the keys of the issuer its `iss` names (`[[auth.oidc]]`), and its subject
//! is mapped to a role by that issuer's grants.
//!
//! An issuer's keys (its JWKS, found through OpenID Connect Discovery 1.0 §4 unless
//! `jwks_url` is given) are fetched on first use and cached. They are fetched again when a
//! token names a `kid` the cache lacks (the issuer rotated its keys), at most once per
//! [`MIN_REFETCH`] per issuer so that tokens with made-up `kid`s cannot hammer the issuer, and
//! whenever the cache is older than `jwks_refresh_secs`, so that keys the issuer removed stop
//! verifying. While the issuer cannot be reached the keys it last published keep verifying.
//!
//! The issuer's address is the operator's own configuration, not a declaration's, so fetches
//! do not go through the outbound guard (which judges where declared destinations send).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use url::Url;

use crate::auth::{parse_role, AuthError, Principal, Role};

/// JWKS fetches (discovery included) that failed, over every issuer.
pub const JWKS_FETCH_FAILURES: &str = "switchyard_auth_jwks_fetch_failures_total";

/// The least time between two fetches of one issuer's keys (shorter when `jwks_refresh_secs`
/// is).
pub const MIN_REFETCH: Duration = Duration::from_secs(10);

/// How long one discovery or JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The signature algorithms accepted: asymmetric only. `none` and the HMAC ones are refused,
/// since an HMAC "key" in a JWKS would be public (the classic algorithm-confusion attack).
const ACCEPTED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// One `[[auth.oidc]]`, as written by an operator.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcFile {
    /// The issuer's URL, exactly as its tokens' `iss` says it.
    pub issuer: String,
    /// Where its keys are (skips discovery at `{issuer}/.well-known/openid-configuration`).
    pub jwks_url: Option<String>,
    /// The `aud` its tokens must carry to be accepted here.
    pub audience: String,
    /// How far the issuer's clock may be from this one (default 60).
    pub clock_skew_secs: Option<u64>,
    /// How old the cached keys may get before they are fetched again (default 300).
    pub jwks_refresh_secs: Option<u64>,
    /// The claim naming who holds the token (default `sub`).
    pub subject_claim: Option<String>,
    /// Subjects mapped to roles.
    #[serde(default)]
    pub grants: Vec<GrantFile>,
}

/// One `[[auth.oidc.grants]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantFile {
    /// The subject, exactly, or a prefix followed by `*`.
    pub subject: String,
    /// `admin`, `namespace-admin`, `namespace-reader` or `ingest`.
    pub role: String,
    /// The namespace of a namespace role or of ingest.
    pub namespace: Option<String>,
    /// The one broker ingest may send to (every broker of the namespace when absent).
    pub broker: Option<String>,
}

/// A validated `[[auth.oidc]]`.
#[derive(Debug, Clone, Serialize)]
pub struct IssuerConfig {
    /// The `iss` its tokens carry.
    pub issuer: String,
    /// Its JWKS, when not discovered.
    pub jwks_url: Option<String>,
    /// The `aud` required.
    pub audience: String,
    /// The clock skew tolerated, in seconds.
    pub clock_skew_secs: u64,
    /// The cache's age limit, in seconds.
    pub jwks_refresh_secs: u64,
    /// The claim naming the subject.
    pub subject_claim: String,
    /// Subjects mapped to roles.
    pub grants: Vec<Grant>,
}

/// A subject pattern and the role it grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Exact, or a prefix followed by `*`.
    pub subject: String,
    /// What it may do.
    #[serde(flatten)]
    pub role: Role,
}

/// Why a JWT was refused: each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not a well-formed JWT.
    #[error("the token is not a valid JWT: {0}")]
    Malformed(String),
    /// A refused or unknown `alg`.
    #[error(
        "the token's algorithm '{0}' is not accepted (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
    )]
    Algorithm(String),
    /// `iss` is no configured issuer.
    #[error("the token was not issued by a configured issuer ('{0}')")]
    Issuer(String),
    /// The issuer's keys have no such `kid`.
    #[error("no key '{kid}' in the issuer's keys ('{issuer}')")]
    UnknownKey {
        /// The token's `kid`.
        kid: String,
        /// The issuer.
        issuer: String,
    },
    /// The issuer's keys could not be fetched, and none are cached that could verify.
    #[error("the issuer '{issuer}' could not be reached to fetch its keys: {error}")]
    Unreachable {
        /// The issuer.
        issuer: String,
        /// Why.
        error: String,
    },
    /// No key of the issuer verifies the signature.
    #[error("the token's signature does not verify with the keys of '{0}'")]
    Signature(String),
    /// `aud` does not name this server.
    #[error("the token's audience is not '{0}'")]
    Audience(String),
    /// `exp` passed.
    #[error("the token expired at {0}")]
    Expired(String),
    /// `nbf` or `iat` is in the future.
    #[error("the token is not valid before {0}")]
    NotYetValid(String),
    /// A claim is missing or of the wrong type.
    #[error("the token's claims are not usable: {0}")]
    Claims(String),
    /// The subject matches no grant (a 403: the token is valid).
    #[error("subject '{0}' has no grant on this server: add an [[auth.oidc.grants]] for it")]
    NoGrant(String),
}

impl Refused {
    /// The `reason` label of `switchyard_auth_refused_requests_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::Malformed(_) => "invalid",
            Refused::Algorithm(_) => "algorithm",
            Refused::Issuer(_) => "issuer",
            Refused::UnknownKey { .. } => "unknown_key",
            Refused::Unreachable { .. } => "issuer_unreachable",
            Refused::Signature(_) => "signature",
            Refused::Audience(_) => "audience",
            Refused::Expired(_) => "expired",
            Refused::NotYetValid(_) => "not_yet_valid",
            Refused::Claims(_) => "claims",
            Refused::NoGrant(_) => "no_grant",
        }
    }
}

/// Every configured issuer with its cached keys; clones share the caches.
#[derive(Debug, Clone, Default)]
pub struct Oidc {
    issuers: Arc<Vec<Issuer>>,
}

impl Serialize for Oidc {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.issuers.iter().map(|issuer| &issuer.config))
    }
}

#[derive(Debug)]
struct Issuer {
    config: IssuerConfig,
    client: reqwest::Client,
    // A tokio mutex held across a fetch, so that concurrent requests wait for one fetch rather
    // than each starting their own.
    keys: tokio::sync::Mutex<KeyCache>,
}

#[derive(Debug, Default)]
struct KeyCache {
    keys: Vec<Key>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
    /// The discovered JWKS address, kept until a fetch from it fails.
    jwks_uri: Option<Url>,
    error: Option<String>,
}

#[derive(Clone)]
struct Key {
    kid: Option<String>,
    alg: Option<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl Oidc {
    /// Validates `[[auth.oidc]]`.
    pub fn from_files(files: Vec<OidcFile>) -> Result<Oidc, AuthError> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .map_err(|e| ("auth.oidc", format!("cannot build the HTTP client that fetches issuers' keys: {e}")))?;
        let mut issuers = Vec::new();
        for (index, file) in files.into_iter().enumerate() {
            let config = issuer_config(index, file).map_err(|message| ("auth.oidc", message))?;
            if issuers.iter().any(|i: &Issuer| i.config.issuer == config.issuer) {
                return Err((
                    "auth.oidc",
                    format!("auth.oidc[{index}].issuer '{}' is configured twice", config.issuer),
                ));
            }
            issuers.push(Issuer { config, client: client.clone(), keys: tokio::sync::Mutex::default() });
        }
        Ok(Oidc { issuers: Arc::new(issuers) })
    }

    /// As a configuration file says it.
    pub fn to_files(&self) -> Vec<OidcFile> {
        self.issuers
            .iter()
            .map(|Issuer { config, .. }| OidcFile {
                issuer: config.issuer.clone(),
                jwks_url: config.jwks_url.clone(),
                audience: config.audience.clone(),
                clock_skew_secs: Some(config.clock_skew_secs),
                jwks_refresh_secs: Some(config.jwks_refresh_secs),
                subject_claim: Some(config.subject_claim.clone()),
                grants: config.grants.iter().map(grant_file).collect(),
            })
            .collect()
    }

    /// Whether no issuer is configured.
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// The principal of a JWT: its subject, with the role of its best grant.
    pub async fn verify(&self, token: &str) -> Result<Principal, Refused> {
        let jwt = Jwt::parse(token)?;
        let iss = jwt.claims.get("iss").and_then(Value::as_str).unwrap_or_default();
        let issuer = self
            .issuers
            .iter()
            .find(|issuer| issuer.config.issuer == iss)
            .ok_or_else(|| Refused::Issuer(iss.to_owned()))?;
        issuer.verify_signature(&jwt).await?;
        let subject = check_claims(&issuer.config, &jwt.claims, unix_now())?;
        let role = best_grant(&issuer.config.grants, &subject).ok_or_else(|| Refused::NoGrant(subject.clone()))?;
        Ok(Principal { name: subject, role: role.clone() })
    }
}

fn grant_file(grant: &Grant) -> GrantFile {
    let (role, namespace, broker) = match &grant.role {
        Role::Admin => ("admin", None, None),
        Role::NamespaceAdmin { namespace } => ("namespace-admin", Some(namespace.clone()), None),
        Role::NamespaceReader { namespace } => ("namespace-reader", Some(namespace.clone()), None),
        Role::Ingest { namespace, broker } => ("ingest", Some(namespace.clone()), broker.clone()),
    };
    GrantFile { subject: grant.subject.clone(), role: role.to_owned(), namespace, broker }
}

fn issuer_config(index: usize, file: OidcFile) -> Result<IssuerConfig, String> {
    let key = |name: &str| format!("auth.oidc[{index}].{name}");
    check_fetch_url(&file.issuer).map_err(|message| format!("{} '{}' {message}", key("issuer"), file.issuer))?;
    if let Some(jwks_url) = &file.jwks_url {
        check_fetch_url(jwks_url).map_err(|message| format!("{} '{jwks_url}' {message}", key("jwks_url")))?;
    }
    if file.audience.trim().is_empty() {
        return Err(format!("{} is empty: give the 'aud' this server's tokens carry", key("audience")));
    }
    let subject_claim = file.subject_claim.unwrap_or_else(|| "sub".to_owned());
    if subject_claim.is_empty() {
        return Err(format!("{} is empty", key("subject_claim")));
    }
    let jwks_refresh_secs = file.jwks_refresh_secs.unwrap_or(300);
    if jwks_refresh_secs == 0 {
        return Err(format!("{} is 0: give the cached keys' age limit in seconds", key("jwks_refresh_secs")));
    }
    let mut grants = Vec::new();
    for (number, grant) in file.grants.into_iter().enumerate() {
        let grant_key = key(&format!("grants[{number}]"));
        if grant.subject.is_empty() || grant.subject.strip_suffix('*').unwrap_or(&grant.subject).contains('*') {
            return Err(format!(
                "{grant_key}.subject '{}' is not a subject, or a prefix followed by one '*'",
                grant.subject
            ));
        }
        let role = parse_role(&grant.subject, &grant.role, grant.namespace.as_deref(), grant.broker.as_deref())
            .map_err(|message| format!("{grant_key}: {message}"))?;
        grants.push(Grant { subject: grant.subject, role });
    }
    Ok(IssuerConfig {
        issuer: file.issuer,
        jwks_url: file.jwks_url,
        audience: file.audience,
        clock_skew_secs: file.clock_skew_secs.unwrap_or(60),
        jwks_refresh_secs,
        subject_claim,
        grants,
    })
}

/// Keys fetched over plain HTTP could be replaced on the way, so only a loopback address may
/// be `http`.
fn check_fetch_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("is not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Domain(name)) => name == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err("is plain http: use https (keys fetched over http could be replaced on the way)".to_owned()),
        other => Err(format!("has scheme '{other}': use https")),
    }
}

/// The role of the grant matching `subject`: an exact one, else the one with the longest prefix.
fn best_grant<'a>(grants: &'a [Grant], subject: &str) -> Option<&'a Role> {
    if let Some(exact) = grants.iter().find(|grant| grant.subject == subject) {
        return Some(&exact.role);
    }
    grants
        .iter()
        .filter_map(|grant| grant.subject.strip_suffix('*').map(|prefix| (prefix, &grant.role)))
        .filter(|(prefix, _)| subject.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(_, role)| role)
}

/// Whether a bearer token has a JWT's shape (RFC 7519 §3: three base64url parts; the last is
/// empty for `alg: none`, which is refused later, with a message saying so).
pub fn is_jwt(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|part| part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
}

/// A JWT's parts, decoded but not verified.
struct Jwt<'a> {
    alg: Algorithm,
    kid: Option<String>,
    /// `header.payload`, what the signature covers.
    signed: &'a str,
    signature: &'a str,
    claims: Map<String, Value>,
}

impl<'a> Jwt<'a> {
    fn parse(token: &'a str) -> Result<Jwt<'a>, Refused> {
        let (signed, signature) = token.rsplit_once('.').ok_or_else(|| Refused::Malformed("no signature".into()))?;
        let (header, payload) = signed.split_once('.').ok_or_else(|| Refused::Malformed("no payload".into()))?;
        let header = json_part(header, "header")?;
        // RFC 7515 §4.1.11: extensions marked critical must be understood; none are.
        if header.contains_key("crit") {
            return Err(Refused::Malformed("its header has 'crit' extensions, which are not supported".into()));
        }
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or_default();
        let alg = alg
            .parse::<Algorithm>()
            .ok()
            .filter(|alg| ACCEPTED.contains(alg))
            .ok_or_else(|| Refused::Algorithm(alg.to_owned()))?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(Refused::Malformed("its header's 'kid' is not a string".into())),
        };
        Ok(Jwt { alg, kid, signed, signature, claims: json_part(payload, "payload")? })
    }
}

fn json_part(part: &str, name: &str) -> Result<Map<String, Value>, Refused> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| Refused::Malformed(format!("its {name} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| Refused::Malformed(format!("its {name} is not a JSON object")))
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

/// A date claim as a person reads it; one past year 9999 (which neither `SystemTime` nor an
/// HTTP date may hold) as its number.
fn shown_time(seconds: f64) -> String {
    const YEAR_10000: f64 = 253_402_300_800.0;
    if (0.0..YEAR_10000).contains(&seconds) {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs_f64(seconds))
    } else {
        format!("{seconds} seconds since 1970")
    }
}

/// Checks the registered claims of a verified token (RFC 7519 §4.1) at `now` (Unix seconds), and
/// returns its subject.
fn check_claims(config: &IssuerConfig, claims: &Map<String, Value>, now: f64) -> Result<String, Refused> {
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == config.audience,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(config.audience.as_str())),
        _ => false,
    };
    if !audience_ok {
        return Err(Refused::Audience(config.audience.clone()));
    }
    let skew = config.clock_skew_secs as f64;
    let date = |name: &str| match claims.get(name) {
        None => Ok(None),
        Some(value) => {
            value.as_f64().map(Some).ok_or_else(|| Refused::Claims(format!("'{name}' is not a number of seconds")))
        }
    };
    let exp = date("exp")?.ok_or_else(|| Refused::Claims("it has no 'exp' (expiry)".to_owned()))?;
    if now > exp + skew {
        return Err(Refused::Expired(shown_time(exp)));
    }
    for not_before in [date("nbf")?, date("iat")?].into_iter().flatten() {
        if not_before > now + skew {
            return Err(Refused::NotYetValid(shown_time(not_before)));
        }
    }
    match claims.get(&config.subject_claim) {
        Some(Value::String(subject)) if !subject.is_empty() => Ok(subject.clone()),
        _ => Err(Refused::Claims(format!("it has no '{}' naming its subject", config.subject_claim))),
    }
}

impl Issuer {
    fn min_refetch(&self) -> Duration {
        MIN_REFETCH.min(self.refresh())
    }

    fn refresh(&self) -> Duration {
        Duration::from_secs(self.config.jwks_refresh_secs)
    }

    async fn verify_signature(&self, jwt: &Jwt<'_>) -> Result<(), Refused> {
        let candidates = self.keys(jwt.kid.as_deref()).await?;
        let verified = candidates.iter().filter(|key| key.alg.is_none_or(|alg| alg == jwt.alg)).any(|key| {
            jsonwebtoken::crypto::verify(jwt.signature, jwt.signed.as_bytes(), &key.key, jwt.alg).unwrap_or(false)
        });
        if verified {
            Ok(())
        } else {
            Err(Refused::Signature(self.config.issuer.clone()))
        }
    }

    /// The cached keys the token's `kid` names (every key when it names none), fetched again
    /// when stale or when the `kid` is unknown, as often as [`Issuer::min_refetch`] allows.
    async fn keys(&self, kid: Option<&str>) -> Result<Vec<Key>, Refused> {
        let mut cache = self.keys.lock().await;
        let now = Instant::now();
        let stale = cache.fetched.is_none_or(|at| now.duration_since(at) >= self.refresh());
        let unknown = kid.is_some_and(|kid| !cache.keys.iter().any(|key| key.kid.as_deref() == Some(kid)));
        if (stale || unknown) && cache.attempted.is_none_or(|at| now.duration_since(at) >= self.min_refetch()) {
            cache.attempted = Some(now);
            match self.fetch(&mut cache.jwks_uri).await {
                Ok(keys) => {
                    cache.keys = keys;
                    cache.fetched = Some(now);
                    cache.error = None;
                }
                Err(error) => {
                    metrics::counter!(JWKS_FETCH_FAILURES).increment(1);
                    tracing::warn!(issuer = %self.config.issuer, %error, "cannot fetch the issuer's keys");
                    cache.error = Some(error);
                }
            }
        }
        // Every attempt either fetched or recorded its error, so no keys means an error.
        let unreachable = |error: &Option<String>| Refused::Unreachable {
            issuer: self.config.issuer.clone(),
            error: error.clone().unwrap_or_default(),
        };
        if cache.fetched.is_none() {
            return Err(unreachable(&cache.error));
        }
        let Some(kid) = kid else { return Ok(cache.keys.clone()) };
        let named: Vec<Key> = cache.keys.iter().filter(|key| key.kid.as_deref() == Some(kid)).cloned().collect();
        match (named.is_empty(), cache.error.is_some()) {
            (false, _) => Ok(named),
            (true, true) => Err(unreachable(&cache.error)),
            (true, false) => Err(Refused::UnknownKey { kid: kid.to_owned(), issuer: self.config.issuer.clone() }),
        }
    }

    /// The issuer's signing keys, from its JWKS (discovered first when not configured).
    async fn fetch(&self, discovered: &mut Option<Url>) -> Result<Vec<Key>, String> {
        let jwks_url = match (&self.config.jwks_url, discovered.clone()) {
            (Some(url), _) => Url::parse(url).map_err(|e| format!("jwks_url '{url}': {e}"))?,
            (None, Some(url)) => url,
            (None, None) => self.discover().await?,
        };
        let jwks = self.get_json(&jwks_url).await;
        // A failure may mean the issuer moved its keys: discover again next time.
        *discovered = jwks.is_ok().then(|| jwks_url.clone()).filter(|_| self.config.jwks_url.is_none());
        let keys = jwks?
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("the JWKS at '{jwks_url}' has no 'keys' list"))?
            .iter()
            .filter_map(signing_key)
            .collect();
        Ok(keys)
    }

    /// OpenID Connect Discovery 1.0 §4: the configuration at the issuer's well-known path,
    /// whose `issuer` must be the one configured (§4.3).
    async fn discover(&self) -> Result<Url, String> {
        let issuer = &self.config.issuer;
        let url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let url = Url::parse(&url).map_err(|e| format!("'{url}': {e}"))?;
        let document = self.get_json(&url).await?;
        let named = document.get("issuer").and_then(Value::as_str).unwrap_or_default();
        if named != issuer {
            return Err(format!("the discovery document at '{url}' names issuer '{named}', not '{issuer}'"));
        }
        let jwks_uri = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the discovery document at '{url}' has no 'jwks_uri'"))?;
        check_fetch_url(jwks_uri).map_err(|message| format!("the discovered jwks_uri '{jwks_uri}' {message}"))
    }

    async fn get_json(&self, url: &Url) -> Result<Value, String> {
        let response = self.client.get(url.clone()).send().await.map_err(|e| format!("GET '{url}': {e}"))?;
        if !response.status().is_success() {
            return Err(format!("GET '{url}' answered {}", response.status()));
        }
        response.json().await.map_err(|e| format!("GET '{url}': the answer is not JSON: {e}"))
    }
}

/// A JWK usable to verify signatures: asymmetric, not marked for encryption only. Other keys
/// are skipped rather than failing the set, so that one key of a kind this server does not
/// know cannot stop it from verifying with the rest.
fn signing_key(value: &Value) -> Option<Key> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_))
        || jwk.common.public_key_use == Some(PublicKeyUse::Encryption)
    {
        return None;
    }
    let alg = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::try_from(alg).ok().filter(|alg| ACCEPTED.contains(alg))?),
        None => None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(Key { kid: jwk.common.key_id, alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> IssuerConfig {
        issuer_config(
            0,
            OidcFile {
                issuer: "https://issuer.test".into(),
                audience: "switchyard".into(),
                grants: vec![
                    GrantFile {
                        subject: "system:serviceaccount:team:*".into(),
                        role: "ingest".into(),
                        namespace: Some("team".into()),
                        broker: None,
                    },
                    GrantFile {
                        subject: "system:serviceaccount:team:deployer".into(),
                        role: "namespace-admin".into(),
                        namespace: Some("team".into()),
                        broker: None,
                    },
                    GrantFile { subject: "alice".into(), role: "admin".into(), namespace: None, broker: None },
                ],
                ..OidcFile::default()
            },
        )
        .unwrap()
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    const NOW: f64 = 1_800_000_000.0;

    #[test]
    fn claims_are_checked_within_the_clock_skew() {
        let config = config();
        let good = |extra: Value| {
            let mut token = claims(serde_json::json!({"sub": "alice", "aud": "switchyard", "exp": NOW + 10.0}));
            token.extend(claims(extra));
            check_claims(&config, &token, NOW)
        };
        assert_eq!(good(serde_json::json!({})), Ok("alice".to_owned()));
        assert_eq!(good(serde_json::json!({"aud": ["other", "switchyard"]})), Ok("alice".to_owned()));
        assert_eq!(good(serde_json::json!({"exp": NOW - 59.0})), Ok("alice".to_owned()), "within the skew");
        assert!(matches!(good(serde_json::json!({"exp": NOW - 61.0})), Err(Refused::Expired(_))));
        assert!(matches!(good(serde_json::json!({"nbf": NOW + 61.0})), Err(Refused::NotYetValid(_))));
        assert!(matches!(good(serde_json::json!({"iat": NOW + 61.0})), Err(Refused::NotYetValid(_))));
        assert_eq!(good(serde_json::json!({"nbf": NOW + 59.0, "iat": NOW})), Ok("alice".to_owned()));
        assert_eq!(good(serde_json::json!({"aud": "other"})), Err(Refused::Audience("switchyard".to_owned())));
        assert_eq!(good(serde_json::json!({"aud": ["other"]})), Err(Refused::Audience("switchyard".to_owned())));
        // A date of the wrong type is refused, not taken as absent.
        assert!(matches!(good(serde_json::json!({"exp": "never"})), Err(Refused::Claims(_))));
        assert!(matches!(good(serde_json::json!({"nbf": "later"})), Err(Refused::Claims(_))));
        assert!(matches!(good(serde_json::json!({"sub": 7})), Err(Refused::Claims(_))));
        let mut no_exp = claims(serde_json::json!({"sub": "alice", "aud": "switchyard"}));
        assert!(matches!(check_claims(&config, &no_exp, NOW), Err(Refused::Claims(m)) if m.contains("'exp'")));
        no_exp.insert("exp".into(), Value::from(NOW));
        assert!(check_claims(&config, &no_exp, NOW).is_ok());
        let message = Refused::Expired(shown_time(NOW)).to_string();
        assert!(message.starts_with("the token expired at ") && message.ends_with("GMT"), "{message}");
        assert!(
            matches!(good(serde_json::json!({"nbf": 1e300})), Err(Refused::NotYetValid(m)) if m.ends_with("seconds since 1970"))
        );
        assert!(matches!(good(serde_json::json!({"exp": -1e300})), Err(Refused::Expired(_))));
    }

    #[test]
    fn subjects_match_exactly_or_by_the_longest_prefix() {
        let grants = config().grants;
        let team = |namespace: &str| Role::Ingest { namespace: namespace.into(), broker: None };
        assert_eq!(best_grant(&grants, "alice"), Some(&Role::Admin));
        assert_eq!(best_grant(&grants, "alice2"), None);
        assert_eq!(best_grant(&grants, "system:serviceaccount:team:ci"), Some(&team("team")));
        assert_eq!(
            best_grant(&grants, "system:serviceaccount:team:deployer"),
            Some(&Role::NamespaceAdmin { namespace: "team".into() })
        );
        assert_eq!(best_grant(&grants, "system:serviceaccount:other:ci"), None);
    }

    #[test]
    fn bad_issuers_name_the_key_and_the_value() {
        let bad = |file: OidcFile| issuer_config(1, file).unwrap_err();
        let base =
            OidcFile { issuer: "https://issuer.test".into(), audience: "switchyard".into(), ..OidcFile::default() };
        let message = bad(OidcFile { issuer: "http://issuer.test".into(), ..base.clone() });
        assert!(message.starts_with("auth.oidc[1].issuer 'http://issuer.test' is plain http"), "{message}");
        assert!(issuer_config(0, OidcFile { issuer: "http://127.0.0.1:9/".into(), ..base.clone() }).is_ok());
        let message = bad(OidcFile { jwks_url: Some("keys".into()), ..base.clone() });
        assert!(message.starts_with("auth.oidc[1].jwks_url 'keys' is not a URL"), "{message}");
        assert!(bad(OidcFile { audience: String::new(), ..base.clone() }).contains("auth.oidc[1].audience is empty"));
        let grant = |subject: &str, role: &str| GrantFile {
            subject: subject.into(),
            role: role.into(),
            ..GrantFile::default()
        };
        let message = bad(OidcFile { grants: vec![grant("a*b*", "admin")], ..base.clone() });
        assert!(message.contains("auth.oidc[1].grants[0].subject 'a*b*'"), "{message}");
        let message = bad(OidcFile { grants: vec![grant("ci", "ingest")], ..base.clone() });
        assert!(
            message.contains("auth.oidc[1].grants[0]: 'ci' has role 'ingest', which needs a 'namespace'"),
            "{message}"
        );
        let message = bad(OidcFile { grants: vec![grant("ci", "root")], ..base });
        assert!(message.contains("unknown role 'root'"), "{message}");
    }

    #[test]
    fn only_asymmetric_algorithms_are_accepted() {
        let encode = |value: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string());
        let token = |header: Value| format!("{}.{}.c2ln", encode(header), encode(serde_json::json!({"sub": "a"})));
        for alg in ["none", "HS256", "HS512", ""] {
            let token = token(serde_json::json!({"alg": alg}));
            assert!(matches!(Jwt::parse(&token), Err(Refused::Algorithm(a)) if a == alg), "{alg}");
        }
        for alg in ["RS256", "ES256", "EdDSA"] {
            let token = token(serde_json::json!({"alg": alg, "kid": "k1"}));
            let jwt = Jwt::parse(&token).unwrap();
            assert_eq!(jwt.kid.as_deref(), Some("k1"));
        }
        let crit = token(serde_json::json!({"alg": "ES256", "crit": ["exp"]}));
        assert!(matches!(Jwt::parse(&crit), Err(Refused::Malformed(_))));
        let none = format!("{}.{}.", encode(serde_json::json!({"alg": "none"})), encode(serde_json::json!({})));
        assert!(is_jwt(&none) && is_jwt("a.b.c") && !is_jwt("sy_token") && !is_jwt("a.b") && !is_jwt("a+.b.c"));
    }

    #[test]
    fn only_signing_keys_of_accepted_algorithms_are_kept() {
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "e", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        assert_eq!(signing_key(&ec).and_then(|k| k.kid), Some("e".to_owned()));
        let mut encryption = ec.clone();
        encryption["use"] = "enc".into();
        assert!(signing_key(&encryption).is_none());
        let mut hmac_alg = ec.clone();
        hmac_alg["alg"] = "HS256".into();
        assert!(signing_key(&hmac_alg).is_none());
        assert!(signing_key(&serde_json::json!({"kty": "oct", "k": "c2VjcmV0"})).is_none());
        assert!(signing_key(&serde_json::json!({"kty": "unknown"})).is_none());
    }
}
