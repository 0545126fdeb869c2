//! Who may do what: bearer tokens mapped to roles, checked in front of every route but health,
//! readiness, the OpenAPI document and webhooks (which check their own signatures); the
//! browser guards (allowed `Host`s, cross-site `Origin`s, JSON-only admin bodies); and the audit
//! line of every change.
//!
//! Tokens are configured as SHA-256 hashes, so a leaked configuration does not leak them; a
//! presented token is hashed and looked up. With no token configured every request is
//! anonymous and allowed, which [`crate::config`] permits only on a loopback listener (or with
//! `allow_unauthenticated`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::problem::ApiError;

/// Requests refused by authentication or the browser guards, by `reason`.
pub const AUTH_REFUSED: &str = "switchyard_auth_refused_requests_total";

/// `[auth]`, as written by an operator.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Bearer tokens, each with its role.
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
    /// A file of token lines (see [`parse_token_line`]), read at start.
    pub tokens_file: Option<std::path::PathBuf>,
    /// Serve a non-loopback listener with no token configured: anyone who reaches the port
    /// controls the server.
    pub allow_unauthenticated: Option<bool>,
    /// Host names (without port) requests may name in `Host`; `["*"]` accepts any. Default: the
    /// loopback names when listening on loopback, any otherwise.
    pub allowed_hosts: Option<Vec<String>>,
    /// Require an admin token for `/metrics` too.
    pub protect_metrics: Option<bool>,
    /// Token lines from `SWITCHYARD_AUTH_TOKENS`.
    #[serde(skip)]
    pub env_tokens: Option<String>,
    /// OIDC issuers whose JWTs are accepted (`[[auth.oidc]]`, see [`crate::oidc`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub oidc: Vec<crate::oidc::OidcFile>,
}

/// One `[[auth.tokens]]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// Who holds it: the name audit lines and refusals give.
    pub name: String,
    /// The token's SHA-256, in hex (`switchyard token new` prints it).
    pub sha256: String,
    /// `admin`, `namespace-admin`, `namespace-reader` or `ingest`.
    pub role: String,
    /// The namespace of a namespace role or an ingest token.
    pub namespace: Option<String>,
    /// The one broker an ingest token may send to (every broker of the namespace when absent).
    pub broker: Option<String>,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Read and change one namespace's declarations and dead letters, and send to its brokers.
    NamespaceAdmin {
        /// The namespace.
        namespace: String,
    },
    /// Read one namespace's declarations and dead letters.
    NamespaceReader {
        /// The namespace.
        namespace: String,
    },
    /// Send events to one namespace's brokers (or one of them) and KafkaSinks.
    Ingest {
        /// The namespace.
        namespace: String,
        /// The one broker, if only one.
        broker: Option<String>,
    },
}

/// A configured token, without the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Who holds it.
    pub name: String,
    /// What it may do.
    #[serde(flatten)]
    pub role: Role,
}

/// The validated `[auth]`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthConfig {
    /// Every token, by its SHA-256 (the hashes are not shown by `switchyard config`).
    #[serde(serialize_with = "serialize_principals")]
    pub tokens: HashMap<[u8; 32], Principal>,
    /// See [`AuthFile::allow_unauthenticated`].
    pub allow_unauthenticated: bool,
    /// See [`AuthFile::allowed_hosts`]; `None` is the default.
    pub allowed_hosts: Option<Vec<String>>,
    /// See [`AuthFile::protect_metrics`].
    pub protect_metrics: bool,
    /// The OIDC issuers, with their cached keys.
    pub oidc: crate::oidc::Oidc,
}

fn serialize_principals<S: serde::Serializer>(
    tokens: &HashMap<[u8; 32], Principal>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut principals: Vec<&Principal> = tokens.values().collect();
    principals.sort_by(|a, b| a.name.cmp(&b.name));
    principals.serialize(serializer)
}

/// A configuration error: `(key, message)`.
pub type AuthError = (&'static str, String);

impl AuthConfig {
    /// Validates `file` (with `extra_lines`, token lines from the environment).
    pub fn from_file(file: AuthFile, extra_lines: Option<&str>) -> Result<AuthConfig, AuthError> {
        let mut tokens = HashMap::new();
        let mut add = |key: &'static str, token: TokenFile| -> Result<(), AuthError> {
            let (hash, principal) = token_entry(&token).map_err(|message| (key, message))?;
            if tokens.insert(hash, principal).is_some() {
                return Err((key, format!("the token of '{}' is configured twice", token.name)));
            }
            Ok(())
        };
        for token in file.tokens {
            add("auth.tokens", token)?;
        }
        if let Some(path) = &file.tokens_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ("auth.tokens_file", format!("cannot read '{}': {e}", path.display())))?;
            for (number, line) in token_lines(&text) {
                let token = parse_token_line(line).map_err(|message| {
                    ("auth.tokens_file", format!("'{}' line {number}: {message}", path.display()))
                })?;
                add("auth.tokens_file", token)?;
            }
        }
        if let Some(text) = extra_lines {
            for (number, line) in token_lines(text) {
                let token =
                    parse_token_line(line).map_err(|message| ("auth.tokens", format!("line {number}: {message}")))?;
                add("auth.tokens", token)?;
            }
        }
        let allowed_hosts = match file.allowed_hosts {
            Some(hosts) if hosts.is_empty() => {
                return Err(("auth.allowed_hosts", "is empty: list host names, or [\"*\"] for any".to_owned()))
            }
            Some(hosts) => {
                Some(hosts.into_iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect())
            }
            None => None,
        };
        Ok(AuthConfig {
            tokens,
            oidc: crate::oidc::Oidc::from_files(file.oidc)?,
            allow_unauthenticated: file.allow_unauthenticated.unwrap_or(false),
            allowed_hosts,
            protect_metrics: file.protect_metrics.unwrap_or(false),
        })
    }

    /// As a configuration file says it (tokens by their hashes).
    pub fn to_file(&self) -> AuthFile {
        let mut tokens: Vec<TokenFile> = self
            .tokens
            .iter()
            .map(|(hash, principal)| {
                let (role, namespace, broker) = match &principal.role {
                    Role::Admin => ("admin", None, None),
                    Role::NamespaceAdmin { namespace } => ("namespace-admin", Some(namespace.clone()), None),
                    Role::NamespaceReader { namespace } => ("namespace-reader", Some(namespace.clone()), None),
                    Role::Ingest { namespace, broker } => ("ingest", Some(namespace.clone()), broker.clone()),
                };
                TokenFile { name: principal.name.clone(), sha256: hex(hash), role: role.to_owned(), namespace, broker }
            })
            .collect();
        tokens.sort_by(|a, b| a.name.cmp(&b.name));
        AuthFile {
            tokens,
            tokens_file: None,
            allow_unauthenticated: Some(self.allow_unauthenticated),
            allowed_hosts: self.allowed_hosts.clone(),
            protect_metrics: Some(self.protect_metrics),
            env_tokens: None,
            oidc: self.oidc.to_files(),
        }
    }

    /// Whether requests must carry a token (a static one or an OIDC issuer's JWT).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty() || !self.oidc.is_empty()
    }

    /// Refuses to serve anyone who reaches a non-loopback `listen` without authentication,
    /// unless the operator said so (Redis's protected mode).
    pub fn check_listener(&self, listen: SocketAddr) -> Result<(), AuthError> {
        if self.enabled() || self.allow_unauthenticated || listen.ip().is_loopback() {
            return Ok(());
        }
        Err((
            "listen",
            format!(
                "refusing to listen on {listen} without authentication, since anyone who reaches it would control this server: configure [auth] tokens (see `switchyard token new`), listen on loopback, or accept that with [auth] allow_unauthenticated = true (SWITCHYARD_ALLOW_UNAUTHENTICATED=true, --allow-unauthenticated)"
            ),
        ))
    }
}

/// The non-empty, non-comment lines of a token file, numbered from 1.
fn token_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split(['\n', ';'])
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// One token line: whitespace-separated `key=value` fields `name`, `sha256`, `role`, and
/// `namespace` and `broker` where the role takes them, e.g.
/// `name=ci sha256=9f86… role=ingest namespace=team-a broker=orders`.
pub fn parse_token_line(line: &str) -> Result<TokenFile, String> {
    let mut token = TokenFile::default();
    for field in line.split_whitespace() {
        let (key, value) = field.split_once('=').ok_or_else(|| format!("'{field}' is not key=value"))?;
        let slot = match key {
            "name" => &mut token.name,
            "sha256" => &mut token.sha256,
            "role" => &mut token.role,
            "namespace" => token.namespace.get_or_insert_with(String::new),
            "broker" => token.broker.get_or_insert_with(String::new),
            _ => return Err(format!("unknown key '{key}' (name, sha256, role, namespace, broker)")),
        };
        value.clone_into(slot);
    }
    Ok(token)
}

fn token_entry(token: &TokenFile) -> Result<([u8; 32], Principal), String> {
    if token.name.is_empty() {
        return Err("every token needs a 'name' (who holds it, for the audit log)".to_owned());
    }
    let hash = parse_sha256(&token.sha256).ok_or_else(|| {
        format!("the sha256 of '{}' is not 64 hex digits: give the token's SHA-256, not the token", token.name)
    })?;
    let role = parse_role(&token.name, &token.role, token.namespace.as_deref(), token.broker.as_deref())?;
    Ok((hash, Principal { name: token.name.clone(), role }))
}

/// The role `role` of `who` (a token's name, an OIDC grant's subject) with its `namespace` and
/// `broker`, checked as static tokens and OIDC grants share them.
pub(crate) fn parse_role(who: &str, role: &str, namespace: Option<&str>, broker: Option<&str>) -> Result<Role, String> {
    let needs_namespace = || {
        namespace
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("'{who}' has role '{role}', which needs a 'namespace'"))
    };
    if broker.is_some() && role != "ingest" {
        return Err(format!("'{who}': only an ingest token takes a 'broker'"));
    }
    Ok(match role {
        "admin" if namespace.is_some() => {
            return Err(format!("'{who}': an admin token has no 'namespace' (use namespace-admin)"))
        }
        "admin" => Role::Admin,
        "namespace-admin" => Role::NamespaceAdmin { namespace: needs_namespace()? },
        "namespace-reader" => Role::NamespaceReader { namespace: needs_namespace()? },
        "ingest" => Role::Ingest { namespace: needs_namespace()?, broker: broker.map(str::to_owned) },
        other => {
            return Err(format!("'{who}': unknown role '{other}' (admin, namespace-admin, namespace-reader, ingest)"))
        }
    })
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim().to_ascii_lowercase();
    if hex.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(hash)
}

/// A token's SHA-256 in hex, as configured.
pub fn sha256_hex(token: &str) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random token (256 bits, URL-safe).
pub fn new_token() -> anyhow::Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    Ok(format!("sy_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// What a request needs, from its method and path (the route table's shapes, as
/// [`crate::routes::RouteClass`] reads them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Anyone: health, readiness, the OpenAPI document, webhooks (signed by their sender).
    Public,
    /// Any valid token (the stateless filter and CESQL tools, unknown paths).
    Authenticated,
    /// An admin token (cross-namespace lists, protected metrics).
    Admin,
    /// Reading one namespace.
    Read(String),
    /// Changing one namespace.
    Write(String),
    /// Sending to a broker (or a KafkaSink) of a namespace.
    Ingest(String, String),
}

/// What a request for `path` with `method` needs.
pub fn required(method: &Method, path: &str, protect_metrics: bool) -> Access {
    let reading = method == Method::GET || method == Method::HEAD;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["metrics"] if protect_metrics => Access::Admin,
        ["healthz" | "readyz" | "metrics" | "openapi.json"] => Access::Public,
        // What subscribers verify identified deliveries' tokens with (`routes::identity`).
        [".well-known", "openid-configuration" | "jwks.json"] => Access::Public,
        ["webhooks", ..] => Access::Public,
        ["kafkasinks", namespace, name] => Access::Ingest((*namespace).to_owned(), (*name).to_owned()),
        ["v1", "cesql" | "filters", ..] => Access::Authenticated,
        ["v1", "namespaces", namespace, _, ..] if reading => Access::Read((*namespace).to_owned()),
        ["v1", "namespaces", namespace, _, ..] => Access::Write((*namespace).to_owned()),
        ["v1", _] if reading => Access::Admin,
        [namespace, broker] if !namespace.is_empty() && !broker.is_empty() => {
            Access::Ingest((*namespace).to_owned(), (*broker).to_owned())
        }
        _ => Access::Authenticated,
    }
}

impl Role {
    /// Whether this role grants `access`.
    pub fn permits(&self, access: &Access) -> bool {
        match (self, access) {
            (_, Access::Public | Access::Authenticated) | (Role::Admin, _) => true,
            (_, Access::Admin) => false,
            (Role::NamespaceAdmin { namespace }, Access::Read(ns) | Access::Write(ns) | Access::Ingest(ns, _)) => {
                namespace == ns
            }
            (Role::NamespaceReader { namespace }, Access::Read(ns)) => namespace == ns,
            (Role::Ingest { namespace, broker }, Access::Ingest(ns, b)) => {
                namespace == ns && broker.as_ref().is_none_or(|broker| broker == b)
            }
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Role::Admin => "admin".to_owned(),
            Role::NamespaceAdmin { namespace } => format!("namespace-admin of '{namespace}'"),
            Role::NamespaceReader { namespace } => format!("namespace-reader of '{namespace}'"),
            Role::Ingest { namespace, broker: None } => format!("ingest into '{namespace}'"),
            Role::Ingest { namespace, broker: Some(broker) } => format!("ingest into '{namespace}/{broker}'"),
        }
    }
}

impl Access {
    fn describe(&self) -> String {
        match self {
            Access::Public | Access::Authenticated => "this".to_owned(),
            Access::Admin => "this (admin only)".to_owned(),
            Access::Read(namespace) => format!("read namespace '{namespace}'"),
            Access::Write(namespace) => format!("change namespace '{namespace}'"),
            Access::Ingest(namespace, broker) => format!("send to '{namespace}/{broker}'"),
        }
    }
}

/// Which `Host`s are answered.
#[derive(Debug)]
enum Hosts {
    /// Any.
    Any,
    /// Only these names (`[auth] allowed_hosts`).
    Listed(Vec<String>),
    /// A loopback node's default, against DNS rebinding (a page on evil.example whose name now
    /// resolves to 127.0.0.1 still sends `Host: evil.example`): loopback addresses, `localhost`
    /// and `*.localhost`, and names without a dot, which no outside DNS answers for; a request
    /// without `Host` (not a browser's) too.
    Loopback,
}

/// What the middleware checks with.
#[derive(Debug)]
pub struct Guard {
    config: AuthConfig,
    hosts: Hosts,
}

impl Guard {
    /// The guard for a server listening on `listen`.
    pub fn new(config: AuthConfig, listen: SocketAddr) -> Guard {
        let hosts = match &config.allowed_hosts {
            Some(hosts) if hosts.iter().any(|h| h == "*") => Hosts::Any,
            Some(hosts) => Hosts::Listed(hosts.clone()),
            None if listen.ip().is_loopback() => Hosts::Loopback,
            None => Hosts::Any,
        };
        Guard { config, hosts }
    }

    fn host_allowed(&self, headers: &HeaderMap, uri: &axum::http::Uri) -> bool {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| uri.authority().map(|a| a.to_string()))
            .map(|host| host_name(&host));
        match (&self.hosts, host) {
            (Hosts::Any, _) => true,
            (Hosts::Listed(hosts), Some(name)) => hosts.contains(&name),
            (Hosts::Listed(_), None) => false,
            (Hosts::Loopback, None) => true,
            (Hosts::Loopback, Some(name)) => {
                name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
                    || name == "localhost"
                    || name.ends_with(".localhost")
                    || (!name.contains('.') && !name.contains(':'))
            }
        }
    }

    /// A browser sends `Origin` with every cross-site request that could change something; a
    /// page on another port of the same host is another origin, so the port counts too.
    fn origin_allowed(headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else { return true };
        let origin = origin.to_str().ok().and_then(|o| o.split_once("://")).map(|(_, authority)| authority);
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        match (origin, host) {
            (Some(origin), Some(host)) => origin.trim_end_matches('/').eq_ignore_ascii_case(host.trim()),
            _ => false,
        }
    }
}

/// `host[:port]` or `[v6]:port` → the lower-case host, brackets kept off.
fn host_name(authority: &str) -> String {
    let authority = authority.trim().trim_end_matches('/');
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(host, _)| host),
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

fn refused(reason: &'static str, error: ApiError) -> Response {
    metrics::counter!(AUTH_REFUSED, "reason" => reason).increment(1);
    error.into_response()
}

fn is_json(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|value| {
        let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
    })
}

/// Whether a request carries a body (a length, or a chunked one).
fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || crate::routes::content_length(headers).is_some_and(|length| length > 0)
}

/// The middleware in front of every route.
pub async fn guard(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let access = required(&method, &path, guard.config.protect_metrics);
    let operations = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    if !operations && !guard.host_allowed(request.headers(), request.uri()) {
        let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("").to_owned();
        return refused(
            "host",
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!("host '{host}' is not one this server answers for: add it to [auth] allowed_hosts"),
            ),
        );
    }
    let admin_write = matches!(access, Access::Write(_) | Access::Admin | Access::Authenticated)
        && !(method == Method::GET || method == Method::HEAD);
    if admin_write && !Guard::origin_allowed(request.headers()) {
        return refused(
            "origin",
            ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-site requests may not change this server (Origin is not its host)",
            ),
        );
    }
    if admin_write && has_body(request.headers()) && !is_json(request.headers()) {
        return refused(
            "content_type",
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "the API takes JSON bodies only: send Content-Type: application/json",
            ),
        );
    }
    let (who, response) = match authenticate(&guard.config, request.headers(), &access).await {
        Ok(principal) => {
            let who = principal.as_ref().map(|p| p.name.clone());
            // The handlers' view of who sent the request (ingest checks a broker's EventPolicies).
            request.extensions_mut().insert(Sender(principal));
            (who, next.run(request).await)
        }
        Err((who, refusal)) => (who, *refusal),
    };
    if matches!(access, Access::Write(_)) {
        tracing::info!(
            target: "switchyard::audit",
            who = who.as_deref().unwrap_or("anonymous"),
            %method,
            path,
            status = response.status().as_u16(),
            "declaration change"
        );
    }
    response
}

/// Who sent a request, as the auth middleware found: `None` with authentication off, or on a
/// public route.
#[derive(Debug, Clone)]
pub struct Sender(pub Option<Principal>);

/// The request's principal (`None`: anonymous), or the refusal with the name of who was
/// refused, if known.
async fn authenticate(
    config: &AuthConfig,
    headers: &HeaderMap,
    access: &Access,
) -> Result<Option<Principal>, (Option<String>, Box<Response>)> {
    if !config.enabled() || *access == Access::Public {
        return Ok(None);
    }
    let challenge = |detail: &str, reason: &'static str| {
        let error = ApiError::new(StatusCode::UNAUTHORIZED, detail)
            .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"switchyard\""));
        (None, Box::new(refused(reason, error)))
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(challenge("this endpoint needs a bearer token: send 'Authorization: Bearer <token>'", "missing"));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(challenge("the Authorization header is not 'Bearer <token>'", "malformed"));
    };
    let hash: [u8; 32] =
        ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref().try_into().unwrap_or([0; 32]);
    let principal = match config.tokens.get(&hash) {
        Some(principal) => principal.clone(),
        None if !config.oidc.is_empty() && crate::oidc::is_jwt(token) => match config.oidc.verify(token).await {
            Ok(principal) => principal,
            Err(refusal) => {
                let (detail, reason) = (refusal.to_string(), refusal.reason());
                return Err(match refusal {
                    // A valid token, which may do nothing here.
                    crate::oidc::Refused::NoGrant(subject) => {
                        (Some(subject), Box::new(refused(reason, ApiError::new(StatusCode::FORBIDDEN, detail))))
                    }
                    _ => challenge(&detail, reason),
                });
            }
        },
        None => return Err(challenge("the bearer token is not one this server knows", "invalid")),
    };
    if !principal.role.permits(access) {
        return Err((
            Some(principal.name.clone()),
            Box::new(refused(
                "forbidden",
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    format!("token '{}' ({}) may not {}", principal.name, principal.role.describe(), access.describe()),
                ),
            )),
        ));
    }
    Ok(Some(principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(line: &str) -> Role {
        token_entry(&parse_token_line(line).unwrap()).unwrap().1.role
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn sha256_is_hex_of_the_token() {
        assert_eq!(sha256_hex("test"), HASH);
        assert_eq!(parse_sha256(HASH).map(|h| h[0]), Some(0x9f));
        assert!(parse_sha256("test").is_none());
    }

    #[test]
    fn routes_need_what_they_touch() {
        let get = Method::GET;
        let put = Method::PUT;
        let post = Method::POST;
        assert_eq!(required(&get, "/healthz", false), Access::Public);
        assert_eq!(required(&get, "/metrics", false), Access::Public);
        assert_eq!(required(&get, "/metrics", true), Access::Admin);
        assert_eq!(required(&post, "/webhooks/github/ns/s", false), Access::Public);
        assert_eq!(required(&get, "/.well-known/openid-configuration", false), Access::Public);
        assert_eq!(required(&get, "/.well-known/jwks.json", false), Access::Public);
        assert_eq!(required(&post, "/team/orders", false), Access::Ingest("team".into(), "orders".into()));
        assert_eq!(required(&post, "/kafkasinks/team/k", false), Access::Ingest("team".into(), "k".into()));
        assert_eq!(required(&get, "/v1/namespaces/team/triggers/t", false), Access::Read("team".into()));
        assert_eq!(required(&put, "/v1/namespaces/team/triggers/t", false), Access::Write("team".into()));
        assert_eq!(
            required(&post, "/v1/namespaces/team/triggers/t/deadletters/redrive", false),
            Access::Write("team".into())
        );
        assert_eq!(required(&get, "/v1/triggers", false), Access::Admin);
        assert_eq!(required(&post, "/v1/filters/test", false), Access::Authenticated);
        // `POST /v1/{x}` is ingest into namespace `v1`, as the router has it.
        assert_eq!(required(&post, "/v1/pingsources", false), Access::Ingest("v1".into(), "pingsources".into()));
    }

    #[test]
    fn roles_grant_their_namespace_only() {
        let admin = role(&format!("name=a sha256={HASH} role=admin"));
        let team_admin = role(&format!("name=a sha256={HASH} role=namespace-admin namespace=team"));
        let reader = role(&format!("name=a sha256={HASH} role=namespace-reader namespace=team"));
        let ingest = role(&format!("name=a sha256={HASH} role=ingest namespace=team broker=orders"));
        let read = Access::Read("team".into());
        let write = Access::Write("team".into());
        let other = Access::Write("other".into());
        let orders = Access::Ingest("team".into(), "orders".into());
        let payments = Access::Ingest("team".into(), "payments".into());
        assert!(admin.permits(&other) && admin.permits(&Access::Admin));
        assert!(team_admin.permits(&read) && team_admin.permits(&write) && team_admin.permits(&payments));
        assert!(!team_admin.permits(&other) && !team_admin.permits(&Access::Admin));
        assert!(reader.permits(&read) && !reader.permits(&write) && !reader.permits(&orders));
        assert!(ingest.permits(&orders) && !ingest.permits(&payments) && !ingest.permits(&read));
    }

    #[test]
    fn bad_token_lines_name_what_to_fix() {
        for (line, expected) in [
            ("name=a role=admin sha256=abc", "not 64 hex digits"),
            (&format!("sha256={HASH} role=admin") as &str, "needs a 'name'"),
            (&format!("name=a sha256={HASH} role=root"), "unknown role 'root'"),
            (&format!("name=a sha256={HASH} role=namespace-reader"), "needs a 'namespace'"),
            (&format!("name=a sha256={HASH} role=admin broker=b"), "only an ingest token"),
        ] {
            let error = parse_token_line(line).and_then(|t| token_entry(&t)).unwrap_err();
            assert!(error.contains(expected), "{line}: {error}");
        }
        assert!(parse_token_line("name=a colour=red").unwrap_err().contains("unknown key 'colour'"));
    }

    #[test]
    fn a_non_loopback_listener_needs_tokens_or_consent() {
        let open = AuthConfig::default();
        assert!(open.check_listener("127.0.0.1:8080".parse().unwrap()).is_ok());
        assert!(open.check_listener("[::1]:8080".parse().unwrap()).is_ok());
        let (key, message) = open.check_listener("0.0.0.0:8080".parse().unwrap()).unwrap_err();
        assert_eq!(key, "listen");
        assert!(message.contains("0.0.0.0:8080") && message.contains("allow_unauthenticated"), "{message}");
        let consented = AuthConfig { allow_unauthenticated: true, ..AuthConfig::default() };
        assert!(consented.check_listener("0.0.0.0:8080".parse().unwrap()).is_ok());
    }

    #[test]
    fn host_names_drop_ports_and_brackets() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }
}
