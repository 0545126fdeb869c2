//! GitHubSource (`sources.knative.dev/v1alpha1`): GitHub webhook deliveries to
//! `POST /webhooks/github/{namespace}/{name}` become CloudEvents, mapped as Knative's
//! GitHubSource maps them, except that the data is the payload exactly as GitHub sent it.
//!
//! Switchyard does not register the webhook with GitHub (Knative does, with `accessToken`):
//! give GitHub the URL in the source's `status.webhookUrl` and the same secret.

mod webhook;

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchyard_meta::{Secret, ValidationError};

use crate::resource::{canonical, check_common, typed_spec, CeOverrides, Declared, SinkSpec};
use crate::{Behaviour, NotReady, SourceKind};

pub use webhook::GitHubWebhook;

/// The GitHubSource kind.
pub struct GitHub;

/// `spec` of a GitHubSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitHubSourceSpec {
    /// `owner/repository`, or an organisation: the `source` of events whose payload names no
    /// repository (`https://github.com/<ownerAndRepository>`).
    #[serde(default)]
    pub owner_and_repository: String,
    /// The GitHub events taken (`X-GitHub-Event` values, e.g. `push`, `pull_request`); others
    /// are answered 200 and dropped, so that GitHub does not retry them.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// The webhook secret: `X-Hub-Signature-256` must be its HMAC-SHA256 of the body.
    #[serde(default)]
    pub secret_token: Secret,
    /// Knative's token for registering the webhook with GitHub's API: accepted and ignored
    /// (Switchyard does not register webhooks).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<serde_json::Value>,
    /// GitHub Enterprise API URL, for registering the webhook: accepted and ignored.
    #[serde(default, rename = "githubAPIURL", skip_serializing_if = "Option::is_none")]
    pub github_api_url: Option<String>,
    /// Whether the registered webhook uses https: accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,
    /// Kubernetes service account: accepted and ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

impl SourceKind for GitHub {
    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        crate::SpecSchema::of::<GitHubSourceSpec>()
    }

    fn kind(&self) -> &'static str {
        "GitHubSource"
    }

    fn plural(&self) -> &'static str {
        "githubsources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["sources.knative.dev/v1alpha1"]
    }

    fn webhook_path(&self) -> Option<&'static str> {
        Some("github")
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        let spec: GitHubSourceSpec = typed_spec(spec)?;
        if spec.owner_and_repository.is_empty() {
            return Err(ValidationError::field(
                "spec.ownerAndRepository",
                "is required: 'owner/repository' or an organisation".to_owned(),
            ));
        }
        let parts: Vec<&str> = spec.owner_and_repository.split('/').collect();
        if parts.len() > 2 || parts.iter().any(|part| !is_github_name(part)) {
            return Err(ValidationError::field(
                "spec.ownerAndRepository",
                format!("'{}' is not 'owner/repository' or an organisation", spec.owner_and_repository),
            ));
        }
        if spec.event_types.is_empty() {
            return Err(ValidationError::field(
                "spec.eventTypes",
                "needs at least one GitHub event name (e.g. 'push', 'pull_request')".to_owned(),
            ));
        }
        for (i, event_type) in spec.event_types.iter().enumerate() {
            let valid = event_type.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
                && event_type.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !valid {
                return Err(ValidationError::field(
                    &format!("spec.eventTypes[{i}]"),
                    format!(
                        "'{event_type}' is not a GitHub event name (lower case, digits and '_', e.g. 'pull_request')"
                    ),
                ));
            }
        }
        spec.secret_token.validate("spec.secretToken")?;
        check_common(spec.sink.as_ref(), spec.ce_overrides.as_ref())?;
        Ok(canonical(&spec))
    }

    fn compile(&self, source: &Declared, _: &crate::Clients) -> Result<Behaviour, NotReady> {
        // Validated on the way in.
        let spec: GitHubSourceSpec = serde_json::from_value(source.spec.clone())
            .map_err(|e| NotReady { reason: "InvalidSpec", message: e.to_string() })?;
        let secret = spec
            .secret_token
            .read("the webhook secret")
            .map_err(|error| NotReady { reason: "SecretNotFound", message: error.0 })?;
        let event_types: BTreeSet<String> = spec.event_types.into_iter().collect();
        Ok(Behaviour::Webhook(Arc::new(GitHubWebhook::new(
            secret.into_bytes(),
            event_types,
            spec.owner_and_repository,
        ))))
    }
}

/// GitHub owner, organisation and repository names: letters, digits, `-`, `_` and `.`.
fn is_github_name(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(spec: serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        GitHub.validate(&spec)
    }

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "ownerAndRepository": "octo/hello",
            "eventTypes": ["push", "pull_request"],
            "secretToken": {"value": "s3cret"},
            "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}},
        })
    }

    #[test]
    fn a_knative_spec_is_accepted() {
        let mut spec = valid();
        spec["accessToken"] = serde_json::json!({"secretKeyRef": {"name": "t", "key": "k"}});
        spec["githubAPIURL"] = serde_json::json!("https://api.github.com/");
        let canonical = validate(spec).unwrap();
        assert_eq!(canonical["eventTypes"], serde_json::json!(["push", "pull_request"]));
        validate(serde_json::json!({
            "ownerAndRepository": "octo-org", "eventTypes": ["organization"],
            "secretToken": {"env": "GITHUB_SECRET"}, "sink": {"uri": "http://127.0.0.1:1/"},
        }))
        .unwrap();
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let cases: [(&str, serde_json::Value, &str); 9] = [
            ("ownerAndRepository", serde_json::json!(""), "spec.ownerAndRepository"),
            ("ownerAndRepository", serde_json::json!("a/b/c"), "spec.ownerAndRepository"),
            ("eventTypes", serde_json::json!([]), "spec.eventTypes"),
            ("eventTypes", serde_json::json!(["Push"]), "spec.eventTypes[0]"),
            ("secretToken", serde_json::json!({}), "spec.secretToken"),
            ("secretToken", serde_json::json!({"value": "a", "env": "B"}), "spec.secretToken"),
            ("secretToken", serde_json::json!({"env": "1X"}), "spec.secretToken.env"),
            (
                "secretToken",
                serde_json::json!({"secretKeyRef": {"name": "s", "key": "k"}}),
                "spec.secretToken.secretKeyRef",
            ),
            ("sink", serde_json::json!({"ref": {"kind": "Service", "name": "s"}}), "spec.sink.ref.kind"),
        ];
        for (field, value, expected) in cases {
            let mut spec = valid();
            spec[field] = value.clone();
            let error = validate(spec).expect_err(&value.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{value}: {error}") };
            assert_eq!(actual, expected, "{value}: {error}");
        }
        let mut spec = valid();
        spec["colour"] = serde_json::json!("red");
        assert!(validate(spec).unwrap_err().to_string().contains("colour"));
    }
}
