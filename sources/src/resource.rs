//! What every source's spec has in common (Knative's duck `SourceSpec`): `sink`, a Knative
//! Destination, and `ceOverrides`; and the parsing of a submitted source into the stored
//! resource.

use std::collections::BTreeMap;
pub(crate) use switchyard_meta::secret::is_env_name;

use serde::{Deserialize, Serialize};
use switchyard_event::AttrValue;
use switchyard_log::addresses::ObjectRef;
use switchyard_meta::kafka_sink;
use switchyard_meta::resources::{parse_resource, validate_dns_label, validate_http_url};
use switchyard_meta::ValidationError;
use url::Url;

use crate::sink::HttpOptions;
use crate::{NotReady, SourceKind};

/// The Knative API version of the Broker a sink may name.
const BROKER_API_VERSION: &str = "eventing.knative.dev/v1";

/// A source as stored and answered: Knative metadata, and the spec in its canonical form
/// (what [`SourceKind::validate`] returned).
pub use switchyard_meta::Source;

/// `spec.sink`: a Knative Destination. A `ref` names a Switchyard Broker or KafkaSink of the
/// source's namespace, or (when the server has an API server) any object with an address, to
/// which `uri` is then a relative path.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkSpec {
    /// A Broker in the source's namespace: `{"kind": "Broker", "name": …}`, or a KafkaSink
    /// (`{"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": …}`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<SinkRef>,
    /// Or an absolute http(s) URL that receives every event in binary mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// PEM CA certificates an https sink's TLS connections trust besides the built-in roots.
    #[serde(default, rename = "CACerts", skip_serializing_if = "Option::is_none")]
    pub ca_certs: Option<String>,
    /// OIDC audience: every POST to the sink carries a token for it (the source as `sub`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

/// `spec.sink.ref`: a Knative KReference to a Broker, a KafkaSink, or any addressable object.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkRef {
    /// `eventing.knative.dev/v1` for a Broker if present; required for other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `Broker`, `KafkaSink`, or any kind with `status.address.url` (then with `apiVersion`).
    pub kind: String,
    /// The object's name.
    pub name: String,
    /// The source's namespace if present (a sink in another namespace is refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// `spec.ceOverrides`: extensions set on every event the source sends (replacing any the
/// event already has, as Knative's overrides do).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CeOverrides {
    /// Extension name (`[a-z0-9]+`, not a context attribute) → string value.
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

impl CeOverrides {
    /// The overrides as attributes, validated.
    pub fn attributes(&self) -> Vec<(String, AttrValue)> {
        self.extensions.iter().map(|(name, value)| (name.clone(), AttrValue::String(value.clone()))).collect()
    }
}

/// Checks `spec.sink` and `spec.ceOverrides`, the fields every source has.
pub(crate) fn check_common(sink: Option<&SinkSpec>, overrides: Option<&CeOverrides>) -> Result<(), ValidationError> {
    let sink = sink.ok_or_else(|| ValidationError::field("spec.sink", "is required".to_owned()))?;
    for (field, value) in [("spec.sink.CACerts", &sink.ca_certs), ("spec.sink.audience", &sink.audience)] {
        if value.is_some() && sink.reference.as_ref().is_some_and(|r| SinkTarget::of(r) == SinkTarget::Local) {
            return Err(ValidationError::field(
                field,
                "applies to an HTTP sink: a Broker or KafkaSink of the namespace is written directly".to_owned(),
            ));
        }
    }
    match (&sink.reference, &sink.uri) {
        (None, None) => return Err(ValidationError::field("spec.sink", "needs 'ref' (a Broker) or 'uri'".to_owned())),
        (None, Some(uri)) => validate_http_url("spec.sink.uri", uri)?,
        (Some(reference), uri) => match SinkTarget::of(reference) {
            SinkTarget::Local => {
                if uri.is_some() {
                    return Err(ValidationError::field("spec.sink", "give either 'ref' or 'uri', not both".to_owned()));
                }
                check_local_ref(reference)?;
            }
            SinkTarget::Object => check_object_ref(reference, uri.as_deref())?,
        },
    }
    if let Some(overrides) = overrides {
        for name in overrides.extensions.keys() {
            let field = format!("spec.ceOverrides.extensions.{name}");
            let event_rule = switchyard_event::model::validate_name(name).err();
            if let Some(error) = event_rule {
                return Err(ValidationError::field(&field, format!("invalid extension name: {error}")));
            }
            if switchyard_event::model::REQUIRED_ATTRIBUTES.contains(&name.as_str())
                || switchyard_event::model::OPTIONAL_ATTRIBUTES.contains(&name.as_str())
            {
                return Err(ValidationError::field(
                    &field,
                    format!("'{name}' is a context attribute, not an extension: it cannot be overridden"),
                ));
            }
        }
    }
    Ok(())
}

/// What a `sink.ref` names: one of Switchyard's own (a Broker or a KafkaSink, resolved here), or
/// any other object, resolved through the API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinkTarget {
    Local,
    Object,
}

impl SinkTarget {
    /// A `Broker` is Switchyard's own unless it names another API group; a KafkaSink always is
    /// (its `apiVersion` is checked). Any other kind needs an `apiVersion` to be an object
    /// reference (Knative's `KReference` requires one).
    fn of(reference: &SinkRef) -> SinkTarget {
        match reference.kind.as_str() {
            kafka_sink::KIND | "Broker" => SinkTarget::Local,
            _ if reference.api_version.is_none() => SinkTarget::Local,
            _ => SinkTarget::Object,
        }
    }
}

/// A reference to a Broker or KafkaSink of the source's namespace, resolved here.
fn check_local_ref(reference: &SinkRef) -> Result<(), ValidationError> {
    if reference.kind == kafka_sink::KIND {
        if let Some(api_version) = reference.api_version.as_deref().filter(|v| *v != kafka_sink::API_VERSION) {
            return Err(ValidationError::field(
                "spec.sink.ref.apiVersion",
                format!("'{api_version}' is not supported for a KafkaSink: use '{}'", kafka_sink::API_VERSION),
            ));
        }
    } else if reference.kind == "Broker" {
        if let Some(api_version) = reference.api_version.as_deref().filter(|v| *v != BROKER_API_VERSION) {
            return Err(ValidationError::field(
                "spec.sink.ref.apiVersion",
                format!("'{api_version}' is not supported: use '{BROKER_API_VERSION}'"),
            ));
        }
    } else {
        return Err(ValidationError::field(
            "spec.sink.ref.kind",
            format!(
                "'{}' is neither 'Broker' nor 'KafkaSink': give a 'uri', or name the object with its 'apiVersion' too (resolved through the Kubernetes API server)",
                reference.kind
            ),
        ));
    }
    validate_dns_label("spec.sink.ref.name", &reference.name)
}

/// A reference to any object with an address, and the `uri` relative to that address.
fn check_object_ref(reference: &SinkRef, uri: Option<&str>) -> Result<(), ValidationError> {
    if reference.api_version.as_deref().is_some_and(str::is_empty) {
        return Err(ValidationError::field("spec.sink.ref.apiVersion", "must not be empty".to_owned()));
    }
    validate_object_name("spec.sink.ref.name", &reference.name)?;
    if let Some(uri) = uri {
        Sink::address("http://example.invalid/", Some(uri))
            .map_err(|message| ValidationError::field("spec.sink.uri", message))?;
    }
    Ok(())
}

/// A Kubernetes object name (a DNS-1123 subdomain: what most kinds, CRDs included, accept).
pub(crate) fn validate_object_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let valid_label = |label: &str| {
        !label.is_empty()
            && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    match name.len() <= 253 && name.split('.').all(valid_label) {
        true => Ok(()),
        false => Err(ValidationError::field(
            field,
            format!("'{name}' is not a Kubernetes object name (lower-case letters, digits, '-' and '.')"),
        )),
    }
}

/// The secret (`what`: "the webhook secret", "the AMQP URI") held in the server's environment
/// variable `name`; while it is unset or empty the source is not ready, and says which variable
/// to set.
pub(crate) fn secret_from_env(name: &str, what: &str) -> Result<String, NotReady> {
    std::env::var(name).ok().filter(|value| !value.is_empty()).ok_or_else(|| NotReady {
        reason: "SecretNotFound",
        message: format!("the environment variable '{name}' holding {what} is not set on this server"),
    })
}

/// Deserialises a spec into its typed form, with errors that name the field under `spec.`.
pub(crate) fn typed_spec<S: serde::de::DeserializeOwned + Default>(
    spec: &serde_json::Value,
) -> Result<S, ValidationError> {
    if spec.is_null() {
        return Ok(S::default());
    }
    serde_path_to_error::deserialize(spec).map_err(|e| {
        let inner = e.path().to_string();
        let path = if inner == "." { "spec".to_owned() } else { format!("spec.{inner}") };
        ValidationError::Body { path, message: e.into_inner().to_string() }
    })
}

/// The canonical JSON form of a typed spec.
pub(crate) fn canonical<S: Serialize>(spec: &S) -> serde_json::Value {
    serde_json::to_value(spec).unwrap_or(serde_json::Value::Null)
}

/// Parses and validates a submitted source of `kind` for `namespace/name` (a `{"spec": …}` body
/// or a whole Knative object).
pub fn parse_source(
    kind: &dyn SourceKind,
    namespace: &str,
    name: &str,
    body: &[u8],
) -> Result<Source, ValidationError> {
    let mut source: Source = parse_resource(kind.kind(), kind.api_versions(), namespace, name, body)?;
    source.spec = kind.validate(&source.spec)?;
    if let Some(other) = source.spec.pointer("/sink/ref/namespace").and_then(|v| v.as_str()) {
        if other != namespace {
            return Err(ValidationError::field(
                "spec.sink.ref.namespace",
                format!("'{other}' is not the source's namespace '{namespace}': a source sends to a broker of its own namespace"),
            ));
        }
    }
    Ok(source)
}

/// A source's identity: kind, namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceRef {
    /// The Knative kind (`PingSource`).
    pub kind: &'static str,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for SourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.kind.to_ascii_lowercase(), self.namespace, self.name)
    }
}

/// Where a source's events go, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// A broker of the source's namespace.
    Broker(String),
    /// A KafkaSink of the source's namespace.
    KafkaSink(String),
    /// An HTTP endpoint.
    Uri(Url),
    /// Any object with an address (`status.address.url`), resolved through the API server each
    /// time events are sent; `path`, the sink's `uri`, is joined to that address.
    Object {
        /// The object.
        reference: ObjectRef,
        /// The `uri` given with the `ref`.
        path: Option<String>,
    },
}

impl Sink {
    /// A destination's address when it gives both `ref` and `uri`: `uri` is a reference
    /// relative to the object's address, resolved as RFC 3986 §5.2 says (Knative's resolver
    /// does `addr.URL.ResolveReference(dest.URI)` and refuses an absolute `uri`). Without
    /// `path`, the address as the object gives it.
    pub fn address(resolved: &str, path: Option<&str>) -> Result<String, String> {
        let Some(path) = path else { return Ok(resolved.to_owned()) };
        if Url::parse(path).is_ok() {
            return Err(format!(
                "'{path}' is absolute: with a 'ref', 'uri' is a path relative to the address of the object it names"
            ));
        }
        let base = Url::parse(resolved).map_err(|e| format!("the address '{resolved}' is not an absolute URL: {e}"))?;
        base.join(path).map(String::from).map_err(|e| format!("'{path}' cannot be joined to '{resolved}': {e}"))
    }
}

/// A stored source ready to compile: its identity, spec and common fields.
#[derive(Debug, Clone)]
pub struct Declared {
    /// Kind, namespace, name.
    pub id: SourceRef,
    /// Server-set: this incarnation of the resource (a source deleted and declared again has
    /// another), so progress recorded for an earlier one is not taken for its own.
    pub uid: String,
    /// The spec, canonical.
    pub spec: serde_json::Value,
    /// Where events go.
    pub sink: Sink,
    /// Extensions set on every event.
    pub overrides: Vec<(String, AttrValue)>,
    /// How an HTTP sink is reached.
    pub http: HttpOptions,
}

impl Declared {
    /// The declared view of a stored source of `kind`; an error for a spec whose sink or
    /// overrides no longer pass validation (stored by a version with other rules).
    pub fn new(kind: &'static dyn SourceKind, source: &Source) -> Result<Declared, ValidationError> {
        let namespace = source.metadata.namespace.clone().unwrap_or_default();
        let name = source.metadata.name.clone().unwrap_or_default();
        let sink: SinkSpec = source
            .spec
            .get("sink")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ValidationError::field("spec.sink", e.to_string()))?
            .unwrap_or_default();
        let overrides: CeOverrides = source
            .spec
            .get("ceOverrides")
            .cloned()
            .map(serde_json::from_value)
            .transpose()
            .map_err(|e| ValidationError::field("spec.ceOverrides", e.to_string()))?
            .unwrap_or_default();
        check_common(Some(&sink), Some(&overrides))?;
        let http = HttpOptions { audience: sink.audience, ca_certs: sink.ca_certs };
        let sink = match (sink.reference, sink.uri) {
            (Some(reference), path) if matches!(SinkTarget::of(&reference), SinkTarget::Object) => Sink::Object {
                reference: ObjectRef {
                    api_version: reference.api_version.unwrap_or_default(),
                    kind: reference.kind,
                    namespace: namespace.clone(),
                    name: reference.name,
                },
                path,
            },
            (Some(reference), _) if reference.kind == kafka_sink::KIND => Sink::KafkaSink(reference.name),
            (Some(reference), _) => Sink::Broker(reference.name),
            (None, Some(uri)) => {
                Sink::Uri(Url::parse(&uri).map_err(|e| ValidationError::field("spec.sink.uri", e.to_string()))?)
            }
            (None, None) => return Err(ValidationError::field("spec.sink", "is required".to_owned())),
        };
        Ok(Declared {
            id: SourceRef { kind: kind.kind(), namespace, name },
            uid: source.metadata.uid.clone().unwrap_or_default(),
            spec: source.spec.clone(),
            sink,
            overrides: overrides.attributes(),
            http,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(json: serde_json::Value) -> Result<(), ValidationError> {
        let spec: SinkSpec = serde_json::from_value(json).map_err(|e| ValidationError::field("x", e.to_string()))?;
        check_common(Some(&spec), None)
    }

    #[test]
    fn sinks_are_a_broker_or_a_uri() {
        sink(serde_json::json!({"ref": {"kind": "Broker", "name": "default"}})).unwrap();
        sink(serde_json::json!({"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}}))
            .unwrap();
        sink(serde_json::json!({"uri": "http://127.0.0.1:9000/x"})).unwrap();
        let cases = [
            (serde_json::json!({}), "spec.sink"),
            (serde_json::json!({"ref": {"kind": "Service", "name": "s"}}), "spec.sink.ref.kind"),
            (
                serde_json::json!({"ref": {"apiVersion": "v1", "kind": "Broker", "name": "s"}}),
                "spec.sink.ref.apiVersion",
            ),
            (serde_json::json!({"ref": {"kind": "Broker", "name": "B_"}}), "spec.sink.ref.name"),
            (serde_json::json!({"uri": "/relative"}), "spec.sink.uri"),
            (serde_json::json!({"uri": "http://x/", "ref": {"kind": "Broker", "name": "b"}}), "spec.sink"),
            (serde_json::json!({"ref": {"kind": "Broker", "name": "b"}, "audience": "a"}), "spec.sink.audience"),
        ];
        for (json, field) in cases {
            let error = sink(json.clone()).expect_err(&json.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{json}: {error}") };
            assert_eq!(actual, field, "{json}: {error}");
        }
    }

    #[test]
    fn a_sink_may_name_any_object_with_its_api_version_and_a_relative_uri() {
        let service = serde_json::json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "shop"});
        sink(serde_json::json!({"ref": service})).unwrap();
        sink(serde_json::json!({"ref": service, "uri": "/orders"})).unwrap();
        let cases = [
            (serde_json::json!({"ref": service, "uri": "http://elsewhere.example/"}), "spec.sink.uri"),
            (
                serde_json::json!({"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "Shop"}}),
                "spec.sink.ref.name",
            ),
            (
                serde_json::json!({"ref": {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": "k"}, "uri": "/x"}),
                "spec.sink",
            ),
        ];
        for (json, field) in cases {
            let error = sink(json.clone()).expect_err(&json.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{json}: {error}") };
            assert_eq!(actual, field, "{json}: {error}");
        }
        let source: Source = serde_json::from_value(serde_json::json!({
            "apiVersion": "sources.knative.dev/v1", "kind": "PingSource",
            "metadata": {"namespace": "ns", "name": "p"},
            "spec": {"sink": {"ref": service, "uri": "orders"}}
        }))
        .unwrap();
        let declared = Declared::new(&crate::ping::Ping, &source).unwrap();
        let Sink::Object { reference, path } = declared.sink else { panic!("{:?}", declared.sink) };
        assert_eq!(reference.to_string(), "Service ns/shop (serving.knative.dev/v1)");
        assert_eq!(path.as_deref(), Some("orders"));
    }

    #[test]
    fn overrides_must_be_extension_names() {
        let uri = SinkSpec { uri: Some("http://x/".into()), ..SinkSpec::default() };
        let overrides = |name: &str| CeOverrides { extensions: [(name.to_owned(), "v".to_owned())].into() };
        check_common(Some(&uri), Some(&overrides("team"))).unwrap();
        for bad in ["Team", "te-am", "", "type", "id", "subject"] {
            let error = check_common(Some(&uri), Some(&overrides(bad))).expect_err(bad).to_string();
            assert!(error.contains("spec.ceOverrides.extensions"), "{bad}: {error}");
        }
    }
}
