//! Broker and Trigger resources in Knative's shapes (`eventing.knative.dev/v1`), and their
//! validation. A request body is either `{"spec": …}` or a whole Knative object; both are
//! checked here before anything is stored, so nothing downstream sees an invalid resource.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::parse_iso8601_duration;
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

/// A Knative `Destination`. Only `uri` is meaningful without Kubernetes.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// An absolute http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// A Kubernetes object reference; rejected (there is no Kubernetes to resolve it).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub r#ref: Option<serde_json::Value>,
    /// PEM CA certificates for the destination (Knative field; not supported yet).
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// OIDC audience (Knative field; not supported yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// Knative's `DeliverySpec` plus Switchyard's own fields (`format`, `ordering`, `maxInFlight`,
/// `rateLimit`), as submitted. Every field is validated on the way in; [`resolve_delivery`]
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
}

/// A condition in `status.conditions`, Kubernetes style.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// e.g. `Ready`.
    #[serde(rename = "type")]
    pub ty: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message when not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Condition {
    /// `Ready=True`.
    pub fn ready() -> Condition {
        Condition { ty: "Ready".into(), status: "True".into(), reason: None, message: None }
    }

    /// `Ready=False` with a reason.
    pub fn not_ready(reason: &str, message: String) -> Condition {
        Condition { ty: "Ready".into(), status: "False".into(), reason: Some(reason.into()), message: Some(message) }
    }
}

/// A whole resource as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource<S> {
    /// Always [`API_VERSION`].
    pub api_version: String,
    /// `Broker` or `Trigger`.
    pub kind: String,
    /// Name, namespace and server-set fields.
    pub metadata: Metadata,
    /// What the user declared.
    pub spec: S,
    /// What the server observed (not stored; filled in on read).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub status: serde_json::Value,
}

/// A Broker.
pub type Broker = Resource<BrokerSpec>;
/// A Trigger.
pub type Trigger = Resource<TriggerSpec>;

/// The body of a PUT: `{"spec": …}` or a whole Knative object.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Submitted<S> {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<Metadata>,
    spec: Option<S>,
    /// A status in a submitted object is the server's business: ignored.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde_json::Value>,
}

/// The kinds of resources the REST API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `Broker`.
    Broker,
    /// `Trigger`.
    Trigger,
    /// A source, by its Knative kind name (`PingSource`); its spec is the sources crate's.
    Source(&'static str),
}

impl Kind {
    /// The Knative kind name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Broker => "Broker",
            Kind::Trigger => "Trigger",
            Kind::Source(kind) => kind,
        }
    }
}

/// Parses a submitted broker for `namespace/name`, validating everything.
pub fn parse_broker(namespace: &str, name: &str, body: &[u8]) -> Result<Broker, ValidationError> {
    let broker: Broker = parse(Kind::Broker, namespace, name, body)?;
    if let Some(delivery) = &broker.spec.delivery {
        validate_delivery(delivery, "spec.delivery")?;
    }
    Ok(broker)
}

/// Parses a submitted trigger for `namespace/name`, validating everything.
pub fn parse_trigger(namespace: &str, name: &str, body: &[u8]) -> Result<Trigger, ValidationError> {
    let trigger: Trigger = parse(Kind::Trigger, namespace, name, body)?;
    validate_trigger_spec(&trigger.spec)?;
    Ok(trigger)
}

fn parse<S: serde::de::DeserializeOwned + Default>(
    kind: Kind,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Resource<S>, ValidationError> {
    parse_resource(kind.name(), &[API_VERSION], namespace, name, body)
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
    let submitted: Submitted<S> = serde_path_to_error::deserialize(&mut json).map_err(|e| {
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
        status: serde_json::Value::Null,
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

fn validate_trigger_spec(spec: &TriggerSpec) -> Result<(), ValidationError> {
    if spec.broker.is_empty() {
        return Err(ValidationError::field("spec.broker", "is required".to_owned()));
    }
    validate_dns_label("spec.broker", &spec.broker)?;
    validate_filters(spec.filter.as_ref(), &spec.filters, "spec.")?;
    validate_destination(&spec.subscriber, "spec.subscriber", true)?;
    if let Some(delivery) = &spec.delivery {
        validate_delivery(delivery, "spec.delivery")?;
    }
    Ok(())
}

/// Validates a trigger's `filter` and `filters` (field names under `prefix`, e.g. `spec.`):
/// attribute names, one dialect per element, parseable CESQL and JSONPath.
pub fn validate_filters(
    filter: Option<&AttributesFilter>,
    filters: &[SubscriptionsFilter],
    prefix: &str,
) -> Result<(), ValidationError> {
    if let Some(filter) = filter {
        for key in filter.attributes.keys() {
            validate_attribute_key(&format!("{prefix}filter.attributes"), key)?;
        }
    }
    for (i, filter) in filters.iter().enumerate() {
        validate_subscriptions_filter(filter, &format!("{prefix}filters[{i}]"))?;
    }
    Ok(())
}

/// Knative: filter keys match `^[a-z][a-z0-9]*$`.
fn validate_attribute_key(field: &str, key: &str) -> Result<(), ValidationError> {
    let mut bytes = key.bytes();
    let valid = matches!(bytes.next(), Some(b) if b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(ValidationError::field(field, format!("invalid attribute name '{key}': must match ^[a-z][a-z0-9]*$")))
    }
}

fn validate_subscriptions_filter(filter: &SubscriptionsFilter, field: &str) -> Result<(), ValidationError> {
    match filter {
        SubscriptionsFilter::Exact(map) | SubscriptionsFilter::Prefix(map) | SubscriptionsFilter::Suffix(map) => {
            if map.is_empty() {
                return Err(ValidationError::field(field, "needs at least one attribute".to_owned()));
            }
            for key in map.keys() {
                validate_attribute_key(field, key)?;
            }
            Ok(())
        }
        SubscriptionsFilter::All(filters) | SubscriptionsFilter::Any(filters) => {
            for (i, nested) in filters.iter().enumerate() {
                validate_subscriptions_filter(nested, &format!("{field}[{i}]"))?;
            }
            Ok(())
        }
        SubscriptionsFilter::Not(nested) => validate_subscriptions_filter(nested, &format!("{field}.not")),
        SubscriptionsFilter::Cesql(expression) => switchyard_cesql::parse(expression)
            .map(drop)
            .map_err(|e| ValidationError::field(field, format!("invalid CESQL expression '{expression}': {e}"))),
        SubscriptionsFilter::Jsonpath(query) => jsonpath_rust::parser::parse_json_path(query)
            .map(drop)
            .map_err(|e| ValidationError::field(field, format!("invalid JSONPath query '{query}': {e}"))),
    }
}

fn validate_destination(destination: &Destination, field: &str, required: bool) -> Result<(), ValidationError> {
    if destination.r#ref.is_some() {
        return Err(ValidationError::field(
            &format!("{field}.ref"),
            "object references need Kubernetes: give the address as 'uri'".to_owned(),
        ));
    }
    match &destination.uri {
        None if required => Err(ValidationError::field(&format!("{field}.uri"), "is required".to_owned())),
        None => Ok(()),
        Some(uri) => validate_http_url(&format!("{field}.uri"), uri),
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

/// The most retries a delivery may ask for: with Knative's exponential backoff, far more than
/// any subscriber outage lasts, and it bounds the attempts one event can cost.
pub const MAX_RETRY: i64 = 1000;
/// The most deliveries in flight per trigger that `maxInFlight` may ask for.
pub const MAX_IN_FLIGHT: i64 = 10_000;

/// How the wait between retries grows (Knative's `backoffPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffPolicy {
    /// `backoffDelay × n` before retry `n`.
    Linear,
    /// `backoffDelay × 2^(n−1)` before retry `n`.
    Exponential,
}

/// The HTTP content mode of deliveries (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryFormat {
    /// Attributes in `ce-` headers, data as the body.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Json,
}

/// Whether a trigger's deliveries may overtake each other (`ordering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryOrdering {
    /// Deliveries run concurrently, up to `maxInFlight`.
    Unordered,
    /// Events with the same `partitionkey` go one at a time, in log order; other keys proceed.
    Ordered,
}

/// A [`DeliverySpec`] with every field checked, parsed, and defaulted: what the dispatcher
/// needs, in plain types.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedDelivery {
    /// Retries after the first attempt.
    pub retry: u32,
    /// How the wait between retries grows.
    pub backoff_policy: BackoffPolicy,
    /// The backoff unit.
    pub backoff_delay: Duration,
    /// Per-attempt timeout; never zero.
    pub timeout: Duration,
    /// The longest `Retry-After` honoured; zero ignores `Retry-After`.
    pub retry_after_max: Duration,
    /// The HTTP content mode.
    pub format: DeliveryFormat,
    /// Whether deliveries may overtake each other.
    pub ordering: DeliveryOrdering,
    /// Deliveries in flight at once, 1 to [`MAX_IN_FLIGHT`].
    pub max_in_flight: u32,
    /// Attempts per second, if limited; finite and positive.
    pub rate_limit: Option<f64>,
    /// The dead-letter sink's absolute http(s) URL, if any.
    pub dead_letter_uri: Option<String>,
}

impl Default for ResolvedDelivery {
    /// The server-wide defaults, used for every field a spec leaves unset.
    fn default() -> ResolvedDelivery {
        ResolvedDelivery {
            retry: 10,
            backoff_policy: BackoffPolicy::Exponential,
            // Knative's default broker configuration (`config-br-defaults`): PT0.2S.
            backoff_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(300),
            format: DeliveryFormat::Binary,
            ordering: DeliveryOrdering::Unordered,
            max_in_flight: 100,
            rate_limit: None,
            dead_letter_uri: None,
        }
    }
}

/// The concrete delivery settings of a (broker's or trigger's) `delivery`, with the
/// server-wide defaults for whatever it leaves unset, and for everything when it is `None`.
///
/// Submitted resources are validated by the same code, so this fails only for a resource that
/// was stored before a rule existed; the error names the field under `spec.delivery`.
pub fn resolve_delivery(spec: Option<&DeliverySpec>) -> Result<ResolvedDelivery, ValidationError> {
    match spec {
        None => Ok(ResolvedDelivery::default()),
        Some(spec) => resolve_delivery_at(spec, "spec.delivery"),
    }
}

fn validate_delivery(delivery: &DeliverySpec, field: &str) -> Result<(), ValidationError> {
    resolve_delivery_at(delivery, field).map(drop)
}

/// One of two names; the error quotes the value and lists both.
fn one_of<T: Copy>(field: &str, value: &str, what: &str, choices: [(&str, T); 2]) -> Result<T, ValidationError> {
    let [(first, _), (second, _)] = choices;
    choices
        .into_iter()
        .find(|(name, _)| *name == value)
        .map(|(_, chosen)| chosen)
        .ok_or_else(|| ValidationError::field(field, format!("'{value}' is not {what}: use '{first}' or '{second}'")))
}

/// Validation and resolution in one pass, so that what is accepted is exactly what resolves.
fn resolve_delivery_at(delivery: &DeliverySpec, field: &str) -> Result<ResolvedDelivery, ValidationError> {
    let path = |name: &str| format!("{field}.{name}");
    let mut resolved = ResolvedDelivery::default();
    if let Some(sink) = &delivery.dead_letter_sink {
        validate_destination(sink, &path("deadLetterSink"), true)?;
        resolved.dead_letter_uri = sink.uri.clone();
    }
    if let Some(retry) = delivery.retry {
        resolved.retry = u32::try_from(retry).ok().filter(|&r| i64::from(r) <= MAX_RETRY).ok_or_else(|| {
            ValidationError::field(&path("retry"), format!("'{retry}' is out of range: use 0 to {MAX_RETRY}"))
        })?;
    }
    if let Some(policy) = &delivery.backoff_policy {
        let choices = [("linear", BackoffPolicy::Linear), ("exponential", BackoffPolicy::Exponential)];
        resolved.backoff_policy = one_of(&path("backoffPolicy"), policy, "a backoff policy", choices)?;
    }
    if let Some(delay) = &delivery.backoff_delay {
        resolved.backoff_delay = duration_field(&path("backoffDelay"), delay)?;
    }
    if let Some(timeout) = &delivery.timeout {
        resolved.timeout = duration_field(&path("timeout"), timeout)?;
        if resolved.timeout.is_zero() {
            return Err(ValidationError::field(&path("timeout"), format!("'{timeout}' must be longer than zero")));
        }
    }
    if let Some(max) = &delivery.retry_after_max {
        resolved.retry_after_max = duration_field(&path("retryAfterMax"), max)?;
    }
    if let Some(format) = &delivery.format {
        let choices = [("binary", DeliveryFormat::Binary), ("json", DeliveryFormat::Json)];
        resolved.format = one_of(&path("format"), format, "a format", choices)?;
    }
    if let Some(ordering) = &delivery.ordering {
        let choices = [("unordered", DeliveryOrdering::Unordered), ("ordered", DeliveryOrdering::Ordered)];
        resolved.ordering = one_of(&path("ordering"), ordering, "an ordering", choices)?;
    }
    if let Some(max_in_flight) = delivery.max_in_flight {
        resolved.max_in_flight = u32::try_from(max_in_flight)
            .ok()
            .filter(|&m| m >= 1 && i64::from(m) <= MAX_IN_FLIGHT)
            .ok_or_else(|| {
                ValidationError::field(
                    &path("maxInFlight"),
                    format!("'{max_in_flight}' is out of range: use 1 to {MAX_IN_FLIGHT}"),
                )
            })?;
    }
    if let Some(rate) = delivery.rate_limit {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(ValidationError::field(
                &path("rateLimit"),
                format!("'{rate}' is not a rate: use a number of attempts per second greater than zero"),
            ));
        }
        resolved.rate_limit = Some(rate);
    }
    Ok(resolved)
}

fn duration_field(field: &str, text: &str) -> Result<Duration, ValidationError> {
    parse_iso8601_duration(text)
        .map_err(|e| ValidationError::field(field, format!("'{text}' is not a valid ISO-8601 duration: {e}")))
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
        let b = parse_broker("default", "b", b"").unwrap();
        assert_eq!(b.spec, BrokerSpec::default());
    }

    #[test]
    fn invalid_triggers_name_the_field() {
        let cases = [
            (r#"{"spec":{"subscriber":{"uri":"http://x/"}}}"#, "spec.broker"),
            (r#"{"spec":{"broker":"b"}}"#, "spec.subscriber.uri"),
            (r#"{"spec":{"broker":"b","subscriber":{"uri":"/relative"}}}"#, "spec.subscriber.uri"),
            (r#"{"spec":{"broker":"b","subscriber":{"uri":"ftp://x/"}}}"#, "spec.subscriber.uri"),
            (r#"{"spec":{"broker":"b","subscriber":{"ref":{"kind":"Service","name":"s"}}}}"#, "spec.subscriber.ref"),
            (
                r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"filter":{"attributes":{"Type":"x"}}}}"#,
                "Type",
            ),
            (
                r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"exact":{"type":"a"},"prefix":{"type":"b"}}]}}"#,
                "filters",
            ),
            (r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"filters":[{"xpath":"/a"}]}}"#, "xpath"),
            (r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"colour":"red"}}"#, "colour"),
            (
                r#"{"spec":{"broker":"b","subscriber":{"uri":"http://x/"},"delivery":{"format":"xml"}}}"#,
                "spec.delivery.format",
            ),
            (r#"{"kind":"Broker","spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#, "kind"),
            (
                r#"{"metadata":{"name":"other"},"spec":{"broker":"b","subscriber":{"uri":"http://x/"}}}"#,
                "metadata.name",
            ),
            (r#"{"spec":{"broker":"B_","subscriber":{"uri":"http://x/"}}}"#, "spec.broker"),
            (r#"[1]"#, "body"),
        ];
        for (body, needle) in cases {
            let err = trigger(body).expect_err(body).to_string();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }

    fn delivery(json: &str) -> Result<ResolvedDelivery, ValidationError> {
        let body = format!(r#"{{"spec":{{"broker":"b","subscriber":{{"uri":"http://x/"}},"delivery":{json}}}}}"#);
        let trigger = trigger(&body)?;
        resolve_delivery(trigger.spec.delivery.as_ref())
    }

    #[test]
    fn delivery_defaults() {
        let defaults = ResolvedDelivery {
            retry: 10,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: Duration::from_millis(200),
            timeout: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(300),
            format: DeliveryFormat::Binary,
            ordering: DeliveryOrdering::Unordered,
            max_in_flight: 100,
            rate_limit: None,
            dead_letter_uri: None,
        };
        assert_eq!(resolve_delivery(None).unwrap(), defaults);
        assert_eq!(resolve_delivery(Some(&DeliverySpec::default())).unwrap(), defaults);
        assert_eq!(delivery("{}").unwrap(), defaults);
        assert_eq!(ResolvedDelivery::default(), defaults);
    }

    #[test]
    fn delivery_overrides() {
        let resolved = delivery(
            r#"{"deadLetterSink":{"uri":"https://dls.example/x"},"retry":3,"backoffPolicy":"linear",
                "backoffDelay":"PT1S","timeout":"PT2M","retryAfterMax":"PT0S","format":"json",
                "ordering":"ordered","maxInFlight":1,"rateLimit":2.5}"#,
        )
        .unwrap();
        assert_eq!(
            resolved,
            ResolvedDelivery {
                retry: 3,
                backoff_policy: BackoffPolicy::Linear,
                backoff_delay: Duration::from_secs(1),
                timeout: Duration::from_secs(120),
                retry_after_max: Duration::ZERO,
                format: DeliveryFormat::Json,
                ordering: DeliveryOrdering::Ordered,
                max_in_flight: 1,
                rate_limit: Some(2.5),
                dead_letter_uri: Some("https://dls.example/x".to_owned()),
            }
        );
        // One field set, the rest defaulted.
        let resolved = delivery(r#"{"retry":0}"#).unwrap();
        assert_eq!(resolved, ResolvedDelivery { retry: 0, ..ResolvedDelivery::default() });
        let resolved = delivery(r#"{"retry":1000,"maxInFlight":10000,"backoffDelay":"PT0S"}"#).unwrap();
        assert_eq!((resolved.retry, resolved.max_in_flight, resolved.backoff_delay), (1000, 10_000, Duration::ZERO));
    }

    #[test]
    fn invalid_delivery_fields_are_named_and_quoted() {
        let cases = [
            (r#"{"retry":-1}"#, "spec.delivery.retry", "'-1'"),
            (r#"{"retry":1001}"#, "spec.delivery.retry", "'1001'"),
            (r#"{"retry":99999999999}"#, "spec.delivery.retry", "'99999999999'"),
            (r#"{"backoffPolicy":"Linear"}"#, "spec.delivery.backoffPolicy", "'Linear'"),
            (r#"{"backoffPolicy":"fibonacci"}"#, "spec.delivery.backoffPolicy", "'fibonacci'"),
            (r#"{"backoffDelay":"200ms"}"#, "spec.delivery.backoffDelay", "'200ms'"),
            (r#"{"backoffDelay":"P1M"}"#, "spec.delivery.backoffDelay", "no fixed length"),
            (r#"{"backoffDelay":"-PT1S"}"#, "spec.delivery.backoffDelay", "'-PT1S'"),
            (r#"{"backoffDelay":""}"#, "spec.delivery.backoffDelay", "''"),
            (r#"{"timeout":"PT"}"#, "spec.delivery.timeout", "'PT'"),
            (r#"{"timeout":"PT0S"}"#, "spec.delivery.timeout", "'PT0S' must be longer than zero"),
            (r#"{"timeout":"pt30s"}"#, "spec.delivery.timeout", "write 'PT30S'"),
            (r#"{"retryAfterMax":"P1Y"}"#, "spec.delivery.retryAfterMax", "'P1Y'"),
            (r#"{"retryAfterMax":"5m"}"#, "spec.delivery.retryAfterMax", "'5m'"),
            (r#"{"format":"xml"}"#, "spec.delivery.format", "'xml'"),
            (r#"{"ordering":"fifo"}"#, "spec.delivery.ordering", "'fifo'"),
            (r#"{"maxInFlight":0}"#, "spec.delivery.maxInFlight", "'0'"),
            (r#"{"maxInFlight":-5}"#, "spec.delivery.maxInFlight", "'-5'"),
            (r#"{"maxInFlight":10001}"#, "spec.delivery.maxInFlight", "'10001'"),
            (r#"{"rateLimit":0}"#, "spec.delivery.rateLimit", "'0'"),
            (r#"{"rateLimit":-1.5}"#, "spec.delivery.rateLimit", "'-1.5'"),
            (r#"{"deadLetterSink":{}}"#, "spec.delivery.deadLetterSink.uri", "is required"),
            (r#"{"deadLetterSink":{"uri":"/dls"}}"#, "spec.delivery.deadLetterSink.uri", "'/dls'"),
            (r#"{"deadLetterSink":{"uri":"ftp://x/"}}"#, "spec.delivery.deadLetterSink.uri", "'ftp://x/'"),
        ];
        for (json, field, quoted) in cases {
            let error = delivery(json).expect_err(json);
            let ValidationError::Field { field: actual, message } = &error else { panic!("{json}: {error}") };
            assert_eq!(actual, field, "{json}: {error}");
            assert!(message.contains(quoted), "{json}: {error}");
            // Brokers validate their delivery the same way.
            let body = format!(r#"{{"spec":{{"delivery":{json}}}}}"#);
            assert_eq!(parse_broker("default", "b", body.as_bytes()), Err(error), "{json}");
        }
    }

    #[test]
    fn non_finite_rate_limits_are_refused() {
        // JSON cannot carry them, but a spec built in code can.
        for rate in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let spec = DeliverySpec { rate_limit: Some(rate), ..DeliverySpec::default() };
            let error = resolve_delivery(Some(&spec)).unwrap_err().to_string();
            assert!(error.contains("spec.delivery.rateLimit"), "{error}");
        }
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
