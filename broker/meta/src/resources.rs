//! Broker and Trigger resources in Knative's shapes (`eventing.knative.dev/v1`), and the
//! parsing every declared kind shares. A request body is either `{"spec": …}` or a whole
//! Knative object. Parsing checks the shape and the names; what the fields mean is checked
//! where they are compiled into what runs (the dispatcher's trigger plan, a source kind's
//! `validate`), in one pass, so what is accepted is exactly what runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The Knative API version Switchyard speaks.
pub const API_VERSION: &str = "eventing.knative.dev/v1";

/// Object metadata (the subset of Kubernetes `ObjectMeta` that means something here; the
/// server-set fields of an exported object are accepted and ignored so that `kubectl get -o
/// yaml` output applies unchanged).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The resource name (a DNS-1123 label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The namespace (a DNS-1123 label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Server-set: a unique id of this incarnation of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Server-set: when the resource was first created (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    /// Server-set: incremented on every change of `spec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Kubernetes bookkeeping, accepted and ignored.
    #[serde(default, skip_serializing)]
    pub resource_version: Option<serde_json::Value>,
    /// Kubernetes bookkeeping, accepted and ignored.
    #[serde(default, skip_serializing)]
    pub managed_fields: Option<serde_json::Value>,
    /// Kubernetes bookkeeping, accepted and ignored.
    #[serde(default, skip_serializing)]
    pub finalizers: Option<serde_json::Value>,
    /// Kubernetes bookkeeping, accepted and ignored.
    #[serde(default, skip_serializing)]
    pub owner_references: Option<serde_json::Value>,
}

/// A Knative `Destination`: a `uri`, or a `ref` resolved to an address (plus `uri` as a path
/// relative to it).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// An absolute http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A Kubernetes object reference: a KafkaSink of the namespace, or (with an API server) any
    /// addressable object (`status.address.url`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<serde_json::Value>,
    /// PEM CA certificates the destination's TLS connections trust besides the built-in roots
    /// (Knative field; at most 64 KiB).
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// OIDC audience (Knative field): every delivery to the destination carries
    /// `Authorization: Bearer <token>`, a JWT with this `aud` signed by the server's issuer
    /// (replacing a `uri`'s userinfo credentials). 1 to 512 bytes. Not for a source's sink yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Knative's `DeliverySpec` plus Switchyard's own fields (`format`, `headerEncoding`,
/// `ordering`, `maxInFlight`, `rateLimit`), as submitted. Every field is validated on the way in; [`resolve_delivery`]
/// turns it into concrete settings with the server-wide defaults.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverySpec {
    /// Where events go after the last retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_sink: Option<Destination>,
    /// Retries after the first attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<i64>,
    /// `linear` or `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_policy: Option<String>,
    /// ISO-8601 duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_delay: Option<String>,
    /// ISO-8601 duration, per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// ISO-8601 duration: the longest `Retry-After` honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_max: Option<String>,
    /// `binary` (default) or `json`: the HTTP content mode used to deliver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// `compatible` or `percent`: how `binary` deliveries write string attributes into `ce-`
    /// headers; the server's `header_encoding` setting when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_encoding: Option<String>,
    /// `unordered` (default) or `ordered`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<String>,
    /// Deliveries in flight at once per trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_in_flight: Option<i64>,
    /// Attempts per second per trigger.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<f64>,
}

/// `spec` of a Broker.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BrokerSpec {
    /// Knative's broker-class configuration reference; accepted and ignored (there is one
    /// broker class here).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Default delivery for the broker's triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
}

/// Knative `filter`: attribute equality.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesFilter {
    /// Attribute name → required value (`""` means "present").
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One element of `filters` (CloudEvents Subscriptions API dialects, as Knative implements
/// them): exactly one dialect per element.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", schema(no_recursion))]
pub enum SubscriptionsFilter {
    /// Every named attribute equals the value.
    Exact(BTreeMap<String, String>),
    /// Every named attribute starts with the value.
    Prefix(BTreeMap<String, String>),
    /// Every named attribute ends with the value.
    Suffix(BTreeMap<String, String>),
    /// All nested filters pass.
    All(Vec<SubscriptionsFilter>),
    /// At least one nested filter passes.
    Any(Vec<SubscriptionsFilter>),
    /// The nested filter does not pass.
    Not(Box<SubscriptionsFilter>),
    /// A CESQL expression.
    Cesql(String),
    /// A JSONPath query over the event's JSON form (Switchyard's own dialect).
    Jsonpath(String),
}

impl<'de> Deserialize<'de> for SubscriptionsFilter {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let object = BTreeMap::<String, serde_json::Value>::deserialize(deserializer)?;
        let mut dialects = object.into_iter();
        let (Some((dialect, value)), None) = (dialects.next(), dialects.next()) else {
            return Err(D::Error::custom(
                "each filter must have exactly one dialect (exact, prefix, suffix, all, any, not, cesql, jsonpath)",
            ));
        };
        let decoded = match dialect.as_str() {
            "exact" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::Exact),
            "prefix" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::Prefix),
            "suffix" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::Suffix),
            "all" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::All),
            "any" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::Any),
            "not" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::Not),
            "cesql" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::Cesql),
            "jsonpath" => serde_json::from_value(value_of(&dialect, value)?).map(SubscriptionsFilter::Jsonpath),
            other => {
                return Err(D::Error::custom(format!(
                    "unknown filter dialect '{other}': use exact, prefix, suffix, all, any, not, cesql or jsonpath"
                )))
            }
        };
        decoded.map_err(|e| D::Error::custom(format!("invalid '{dialect}' filter: {e}")))
    }
}

fn value_of<E: serde::de::Error>(dialect: &str, value: serde_json::Value) -> Result<serde_json::Value, E> {
    if value.is_null() {
        return Err(E::custom(format!("the '{dialect}' filter has no value")));
    }
    Ok(value)
}

/// `spec` of a Trigger (Knative's TriggerSpec).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerSpec {
    /// The broker (in the trigger's namespace) whose events this trigger receives.
    #[serde(default)]
    pub broker: String,
    /// Attribute filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<AttributesFilter>,
    /// Subscriptions-API filters; a non-empty list overrides `filter`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<SubscriptionsFilter>,
    /// Where matching events are delivered.
    #[serde(default)]
    pub subscriber: Destination,
    /// Delivery options; replaces the broker's as a whole when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliverySpec>,
    /// Signed deliveries (Standard Webhooks; a Switchyard extension): off when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningSpec>,
}

/// `spec.signing` of a Trigger: every attempt (to the subscriber and the dead-letter sink)
/// carries Standard Webhooks' `webhook-id`, `webhook-timestamp` and `webhook-signature`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SigningSpec {
    /// The signing secrets, each `whsec_<base64>` (HMAC-SHA256, `v1`) or `whsk_<base64>`
    /// (Ed25519, `v1a`). Each signs every delivery: several are how a secret is rotated.
    #[serde(default)]
    pub secrets: Vec<crate::Secret>,
}

/// A whole resource in Knative's shape: as declared and stored (`T` = `()`, no status), or as
/// the API answers it, with the status the server observes (`T` = [`BrokerStatus`] …).
///
/// [`BrokerStatus`]: crate::status::BrokerStatus
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S, T = ()> {
    /// The API version, e.g. `eventing.knative.dev/v1`.
    pub api_version: String,
    /// The kind, e.g. `Broker`.
    pub kind: String,
    /// Name, namespace and server-set fields.
    pub metadata: Metadata,
    /// What the user declared.
    pub spec: S,
    /// What the server observes; never stored, absent in the answer to a DELETE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<T>,
}

impl<S, T> Resource<S, T> {
    /// `(namespace, name)`: set on every resource that passed [`parse_resource`].
    pub fn names(&self) -> (&str, &str) {
        (self.metadata.namespace.as_deref().unwrap_or_default(), self.metadata.name.as_deref().unwrap_or_default())
    }

    /// The resource with `status`.
    pub fn with_status<U>(self, status: U) -> Resource<S, U> {
        Resource {
            api_version: self.api_version,
            kind: self.kind,
            metadata: self.metadata,
            spec: self.spec,
            status: Some(status),
        }
    }

    /// The resource as it is stored when it replaces `existing` (or is created): the server-set
    /// metadata filled in — a new uid, creation time and generation 1, or the existing uid and
    /// creation time with the generation bumped when the spec changed — and no status.
    pub fn prepared(self, existing: Option<&Resource<S, T>>) -> (Resource<S>, Upsert)
    where
        S: PartialEq,
    {
        let mut resource = self.declared();
        let upsert = match existing {
            Some(existing) => {
                let generation = existing.metadata.generation.unwrap_or(1);
                resource.metadata.uid.clone_from(&existing.metadata.uid);
                resource.metadata.creation_timestamp.clone_from(&existing.metadata.creation_timestamp);
                resource.metadata.generation =
                    Some(if existing.spec == resource.spec { generation } else { generation + 1 });
                Upsert::Replaced
            }
            None => {
                resource.metadata.uid = Some(new_uid());
                resource.metadata.creation_timestamp = Some(now_rfc3339());
                resource.metadata.generation = Some(1);
                Upsert::Created
            }
        };
        (resource, upsert)
    }

    /// The resource as declared, without a status.
    pub fn declared(self) -> Resource<S> {
        self.unobserved()
    }

    /// The resource without a status, typed for any status (the answer to a DELETE).
    pub fn unobserved<U>(self) -> Resource<S, U> {
        Resource {
            api_version: self.api_version,
            kind: self.kind,
            metadata: self.metadata,
            spec: self.spec,
            status: None,
        }
    }
}

/// Whether a create-or-replace created the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    /// The resource did not exist.
    Created,
    /// The resource existed and was replaced.
    Replaced,
}

/// RFC 3339 UTC timestamp of now, second precision (Kubernetes style).
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| time::OffsetDateTime::now_utc());
    now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn new_uid() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos() as u128;
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) as u128;
    let bits = nanos ^ (count << 96) ^ (u128::from(std::process::id()) << 64);
    let hex = format!("{bits:032x}");
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A Broker as declared.
pub type Broker = Resource<BrokerSpec>;
/// A Trigger as declared.
pub type Trigger = Resource<TriggerSpec>;
/// A source as declared: its spec is its kind's, kept in canonical JSON form.
pub type Source = Resource<serde_json::Value>;

/// The body of a PUT: `{"spec": …}`, `{}` (or an empty body), or a whole Knative object as
/// `kubectl get -o yaml` exports it. Unknown fields are refused, with the field named.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Submission<S> {
    /// The kind's API version, if present.
    #[serde(default)]
    pub api_version: Option<String>,
    /// The kind, if present; it must match the path.
    #[serde(default)]
    pub kind: Option<String>,
    /// If present, `name` and `namespace` must match the path; server-set fields are ignored.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// The spec.
    pub spec: Option<S>,
    /// Ignored: the status is the server's.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}

/// Parses a submitted Broker for `namespace/name` (its shape and names; what its fields mean
/// is checked where they are compiled).
pub fn parse_broker(namespace: &str, name: &str, body: &[u8]) -> Result<Broker, ValidationError> {
    parse_resource("Broker", &[API_VERSION], namespace, name, body)
}

/// Parses a submitted Trigger for `namespace/name` (its shape and names).
pub fn parse_trigger(namespace: &str, name: &str, body: &[u8]) -> Result<Trigger, ValidationError> {
    parse_resource("Trigger", &[API_VERSION], namespace, name, body)
}

/// Parses a submitted resource of `kind` for `namespace/name`: `{"spec": …}`, `{}` (or an
/// empty body), or a whole Knative object whose `apiVersion` is one of `api_versions`, whose
/// `kind` matches and whose `metadata.name`/`namespace` match the path. The spec is only
/// deserialised as `S`; validating it is the caller's. Server-set metadata is cleared, and the
/// resource carries the first of `api_versions`.
pub fn parse_resource<S: serde::de::DeserializeOwned + Default>(
    kind: &str,
    api_versions: &[&str],
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Resource<S>, ValidationError> {
    validate_dns_label("namespace", namespace)?;
    validate_dns_label("name", name)?;
    let body = if body.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { body };
    let mut json = serde_json::Deserializer::from_slice(body);
    let submitted: Submission<S> = serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        ValidationError::Body { path, message: e.into_inner().to_string() }
    })?;
    json.end().map_err(|e| ValidationError::Body { path: ".".to_owned(), message: e.to_string() })?;
    if let Some(api_version) = &submitted.api_version {
        if !api_versions.contains(&api_version.as_str()) {
            return Err(ValidationError::field(
                "apiVersion",
                format!("'{api_version}' is not supported: use '{}'", api_versions.join("' or '")),
            ));
        }
    }
    if let Some(submitted_kind) = &submitted.kind {
        if submitted_kind != kind {
            return Err(ValidationError::field(
                "kind",
                format!("'{submitted_kind}' does not match the path: expected '{kind}'"),
            ));
        }
    }
    let mut metadata = submitted.metadata.unwrap_or_default();
    for (field, value, expected) in
        [("metadata.name", &metadata.name, name), ("metadata.namespace", &metadata.namespace, namespace)]
    {
        if let Some(value) = value {
            if value != expected {
                return Err(ValidationError::field(
                    field,
                    format!("'{value}' does not match the path: expected '{expected}'"),
                ));
            }
        }
    }
    metadata.name = Some(name.to_owned());
    metadata.namespace = Some(namespace.to_owned());
    // Server-set fields are the server's: whatever the client sent is replaced on store.
    metadata.uid = None;
    metadata.creation_timestamp = None;
    metadata.generation = None;
    Ok(Resource {
        api_version: api_versions.first().copied().unwrap_or(API_VERSION).to_owned(),
        kind: kind.to_owned(),
        metadata,
        spec: submitted.spec.unwrap_or_default(),
        status: None,
    })
}

/// Kubernetes DNS-1123 label: what Knative resource names and namespaces look like, and what
/// keeps topic and directory names unambiguous.
pub fn validate_dns_label(field: &str, value: &str) -> Result<(), ValidationError> {
    let bytes = value.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-';
    if valid {
        Ok(())
    } else {
        Err(ValidationError::field(
            field,
            format!("'{value}' is not a valid name: use 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit"),
        ))
    }
}

/// An absolute http or https URL.
pub fn validate_http_url(field: &str, uri: &str) -> Result<(), ValidationError> {
    match url::Url::parse(uri) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err(ValidationError::field(field, format!("'{uri}' must be an http or https URL"))),
        Err(e) => Err(ValidationError::field(field, format!("'{uri}' is not an absolute URL: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trigger(body: &str) -> Result<Trigger, ValidationError> {
        parse_trigger("default", "t1", body.as_bytes())
    }

    #[test]
    fn spec_only_and_whole_knative_objects_are_accepted() {
        let t = trigger(r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#).unwrap();
        assert_eq!(t.metadata.name.as_deref(), Some("t1"));
        let whole = r#"{"apiVersion":"eventing.knative.dev/v1","kind":"Trigger",
            "metadata":{"name":"t1","namespace":"default","labels":{"a":"b"},"resourceVersion":"12"},
            "spec":{"broker":"b","filter":{"attributes":{"type":"x"}},"subscriber":{"uri":"https://x/y"}},
            "status":{"ready":true}}"#;
        let t = trigger(whole).unwrap();
        assert_eq!(t.spec.filter.unwrap().attributes["type"], "x");
        assert_eq!(t.status, None, "a submitted status is ignored");
        let b = parse_broker("default", "b", b"").unwrap();
        assert_eq!(b.spec, BrokerSpec::default());
    }

    #[test]
    fn malformed_triggers_name_the_field() {
        let cases = [
            (
                r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"exact":{"type":"a"},"prefix":{"type":"b"}}]}}"#,
                "filters",
            ),
            (r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"xpath":"/a"}]}}"#, "xpath"),
            (r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"colour":"red"}}"#, "colour"),
            (r#"{"kind":"Broker","spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#, "kind"),
            (
                r#"{"metadata":{"name":"other"},"spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#,
                "metadata.name",
            ),
            (r#"[1]"#, "body"),
        ];
        for (body, needle) in cases {
            let err = trigger(body).expect_err(body).to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    #[test]
    fn prepared_metadata_is_created_then_kept_and_the_generation_follows_the_spec() {
        let t = trigger(r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#).unwrap();
        let (created, upsert) = t.clone().prepared(None);
        assert_eq!((upsert, created.metadata.generation), (Upsert::Created, Some(1)));
        assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
        let (same, upsert) = t.prepared(Some(&created));
        assert_eq!((upsert, same.metadata.generation), (Upsert::Replaced, Some(1)));
        assert_eq!(same.metadata.uid, created.metadata.uid);
        let changed = trigger(r#"{"spec":{"broker":"b","subscriber":{"uri":"http://y/"}}}"#).unwrap();
        let (next, _) = changed.prepared(Some(&same));
        assert_eq!((next.metadata.generation, next.metadata.uid), (Some(2), created.metadata.uid));
    }

    #[test]
    fn dns_labels() {
        for ok in ["a", "default", "my-broker-1", &"a".repeat(63)] {
            validate_dns_label("name", ok).unwrap();
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a_b", &"a".repeat(64)] {
            assert!(validate_dns_label("name", bad).is_err(), "{bad}");
        }
    }
}
