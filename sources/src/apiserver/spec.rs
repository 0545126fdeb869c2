//! `spec` of an ApiServerSource, Knative's fields (`sources.knative.dev/v1`), and what it
//! compiles to: the resources to watch with their label selectors as Kubernetes reads them,
//! the namespaces, the mode.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector};
use serde::{Deserialize, Serialize};
use switchyard_meta::ValidationError;

use crate::resource::{CeOverrides, SinkSpec};

/// `mode: Reference` (Knative's default): the data is `{apiVersion, kind, name, namespace}`.
pub const REFERENCE: &str = "Reference";
/// `mode: Resource`: the data is the whole object.
pub const RESOURCE: &str = "Resource";

/// `spec` of an ApiServerSource.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServerSourceSpec {
    /// The resources to watch: `apiVersion`, `kind`, and an optional label `selector`.
    #[serde(default)]
    pub resources: Vec<ApiServerResource>,
    /// `Reference` (default): the data is a reference to the object. `Resource`: the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Only objects whose controller (the owner reference with `controller: true`) has this
    /// `apiVersion` and `kind`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<ApiServerOwner>,
    /// The namespaces to watch, by their labels (`{}`: all of them). Without it, the namespace
    /// of the source (a Switchyard namespace is the Kubernetes namespace of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// Knative's field, accepted and ignored: Switchyard watches with its own credentials (the
    /// `kubeconfig`, or those `serve` was given), not a service account of the source's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Knative's experimental CloudEvents Subscriptions API filters: not supported (refused
    /// when not empty); filter with a Trigger instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<serde_json::Value>,
    /// Switchyard's extension: the path of a kubeconfig file on the server naming the API
    /// server to watch. Without it, the API server `serve` was given (`--kubeconfig`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<String>,
    /// Where events go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkSpec>,
    /// Extensions set on every event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ce_overrides: Option<CeOverrides>,
}

/// `spec.resources[]`: Knative's `APIVersionKindSelector`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServerResource {
    /// `v1`, `apps/v1`, `events.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `ConfigMap`, `Event`, `Deployment`.
    #[serde(default)]
    pub kind: String,
    /// Only the objects these labels select.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// `spec.owner`: Knative's `APIVersionKind`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiServerOwner {
    /// The controller's `apiVersion`.
    #[serde(default)]
    pub api_version: String,
    /// The controller's `kind`.
    #[serde(default)]
    pub kind: String,
}

/// A Kubernetes label selector (`metav1.LabelSelector`): every `matchLabels` pair and every
/// `matchExpressions` requirement must hold.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must have these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements: `{key, operator: In|NotIn|Exists|DoesNotExist, values}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// `matchExpressions[]`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label.
    #[serde(default)]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[serde(default)]
    pub operator: String,
    /// The values (`In`, `NotIn`: at least one; `Exists`, `DoesNotExist`: none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Which namespaces a source watches.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Namespaces {
    /// The source's own.
    Own,
    /// Every namespace (`namespaceSelector: {}`).
    All,
    /// The namespaces whose labels this selects.
    Selected(Selector),
}

/// One resource to watch, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Watched {
    pub api_version: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub selector: Selector,
}

/// A spec compiled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Settings {
    pub resources: Vec<Watched>,
    /// Resource mode (`true`) or Reference mode.
    pub resource_mode: bool,
    pub owner: Option<ApiServerOwner>,
    pub namespaces: Namespaces,
    pub kubeconfig: Option<String>,
}

impl ApiServerSourceSpec {
    /// The spec as stored: Knative's default mode filled in.
    pub(crate) fn defaulted(mut self) -> ApiServerSourceSpec {
        self.mode.get_or_insert_with(|| REFERENCE.to_owned());
        self
    }

    pub(crate) fn settings(&self) -> Result<Settings, ValidationError> {
        if self.resources.is_empty() {
            return Err(ValidationError::field(
                "spec.resources",
                "needs at least one {apiVersion, kind}, e.g. {apiVersion: v1, kind: ConfigMap}".to_owned(),
            ));
        }
        let mut resources = Vec::with_capacity(self.resources.len());
        for (i, resource) in self.resources.iter().enumerate() {
            let field = format!("spec.resources[{i}]");
            let (group, version) = group_version(&resource.api_version)
                .map_err(|e| ValidationError::field(&format!("{field}.apiVersion"), e))?;
            let kind = resource.kind.trim();
            if kind.is_empty() {
                return Err(ValidationError::field(&format!("{field}.kind"), "is required, e.g. 'ConfigMap'".into()));
            }
            if !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(ValidationError::field(&format!("{field}.kind"), format!("'{kind}' is not a kind")));
            }
            let selector = match &resource.selector {
                Some(selector) => selector.compile(&format!("{field}.selector"))?,
                None => Selector::default(),
            };
            resources.push(Watched {
                api_version: resource.api_version.clone(),
                group,
                version,
                kind: kind.to_owned(),
                selector,
            });
        }
        let resource_mode = match self.mode.as_deref() {
            None | Some(REFERENCE) => false,
            Some(RESOURCE) => true,
            Some(other) => {
                return Err(ValidationError::field(
                    "spec.mode",
                    format!("'{other}' is not one of '{REFERENCE}' and '{RESOURCE}'"),
                ))
            }
        };
        if let Some(owner) = &self.owner {
            group_version(&owner.api_version).map_err(|e| ValidationError::field("spec.owner.apiVersion", e))?;
            if owner.kind.trim().is_empty() {
                return Err(ValidationError::field("spec.owner.kind", "is required".to_owned()));
            }
        }
        let namespaces = match &self.namespace_selector {
            None => Namespaces::Own,
            Some(selector) => {
                let compiled = selector.compile("spec.namespaceSelector")?;
                // Knative: an empty selector targets all namespaces.
                if compiled.selects_all() {
                    Namespaces::All
                } else {
                    Namespaces::Selected(compiled)
                }
            }
        };
        if !self.filters.is_empty() {
            return Err(ValidationError::field(
                "spec.filters",
                "is not supported (an experimental Knative feature): filter with a Trigger".to_owned(),
            ));
        }
        if let Some(path) = &self.kubeconfig {
            if path.is_empty() || path.chars().any(char::is_control) {
                return Err(ValidationError::field("spec.kubeconfig", format!("'{path}' is not a file path")));
            }
        }
        Ok(Settings {
            resources,
            resource_mode,
            owner: self.owner.clone(),
            namespaces,
            kubeconfig: self.kubeconfig.clone(),
        })
    }
}

/// The group and version of an `apiVersion`: `v1` is the core group's.
fn group_version(api_version: &str) -> Result<(String, String), String> {
    let parts: Vec<&str> = api_version.split('/').collect();
    let valid = |part: &str| {
        !part.is_empty() && part.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    };
    match parts.as_slice() {
        [version] if valid(version) && !version.contains('.') => Ok((String::new(), (*version).to_owned())),
        [group, version] if valid(group) && valid(version) && !version.contains('.') => {
            Ok(((*group).to_owned(), (*version).to_owned()))
        }
        _ if api_version.is_empty() => Err("is required, e.g. 'v1' or 'apps/v1'".to_owned()),
        _ => Err(format!("'{api_version}' is not an apiVersion ('v1', 'group/version')")),
    }
}

/// Kubernetes' label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let fine = !prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !fine {
            return Err(format!("'{key}' has a prefix that is not a DNS subdomain"));
        }
    }
    if name.is_empty() || !is_label_value(name) {
        return Err(format!(
            "'{key}' is not a label key: at most 63 characters, alphanumeric at both ends, '-', '_', '.' inside"
        ));
    }
    Ok(())
}

/// Kubernetes' label value: empty, or at most 63 characters, alphanumeric at both ends, `-`,
/// `_`, `.` inside.
fn is_label_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

impl LabelSelector {
    /// The selector as the API server takes it; errors name the field (`field` is the
    /// selector's own).
    pub(crate) fn compile(&self, field: &str) -> Result<Selector, ValidationError> {
        let mut expressions = Vec::new();
        for (key, value) in &self.match_labels {
            let field = format!("{field}.matchLabels");
            check_key(key).map_err(|e| ValidationError::field(&field, e))?;
            if !is_label_value(value) {
                return Err(ValidationError::field(&field, format!("'{value}' (of '{key}') is not a label value")));
            }
            expressions.push(Expression::Equal(key.clone(), value.clone()));
        }
        for (i, requirement) in self.match_expressions.iter().enumerate() {
            let field = format!("{field}.matchExpressions[{i}]");
            check_key(&requirement.key).map_err(|e| ValidationError::field(&format!("{field}.key"), e))?;
            for value in &requirement.values {
                if !is_label_value(value) {
                    return Err(ValidationError::field(
                        &format!("{field}.values"),
                        format!("'{value}' is not a label value"),
                    ));
                }
            }
            let key = requirement.key.clone();
            let values: BTreeSet<String> = requirement.values.iter().cloned().collect();
            let expression = match requirement.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(ValidationError::field(
                        &format!("{field}.values"),
                        format!("must not be empty for operator '{}'", requirement.operator),
                    ))
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(ValidationError::field(
                        &format!("{field}.values"),
                        format!("must be empty for operator '{}'", requirement.operator),
                    ))
                }
                "In" => Expression::In(key, values),
                "NotIn" => Expression::NotIn(key, values),
                "Exists" => Expression::Exists(key),
                "DoesNotExist" => Expression::DoesNotExist(key),
                other => {
                    return Err(ValidationError::field(
                        &format!("{field}.operator"),
                        format!("'{other}' is not one of 'In', 'NotIn', 'Exists', 'DoesNotExist'"),
                    ))
                }
            };
            expressions.push(expression);
        }
        Ok(expressions.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> Result<Settings, ValidationError> {
        let spec: ApiServerSourceSpec = crate::resource::typed_spec(&json)?;
        spec.settings()
    }

    #[test]
    fn group_versions_are_read_as_kubernetes_does() {
        assert_eq!(group_version("v1").unwrap(), (String::new(), "v1".to_owned()));
        assert_eq!(group_version("events.k8s.io/v1").unwrap(), ("events.k8s.io".to_owned(), "v1".to_owned()));
        for bad in ["", "apps/", "/v1", "a/b/c", "Apps/v1", "apps/v 1", "example.com"] {
            assert!(group_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selectors_become_the_api_servers_label_selector() {
        let settings = spec(serde_json::json!({
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "selector": {
                "matchLabels": {"app": "shop", "example.com/tier": "web"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "staging"]},
                    {"key": "canary", "operator": "DoesNotExist"},
                ],
            }}],
        }))
        .unwrap();
        assert_eq!(
            settings.resources[0].selector.to_string(),
            "app=shop,example.com/tier=web,env in (prod,staging),!canary"
        );
        assert!(!settings.resource_mode, "Reference is the default");
        assert_eq!(settings.namespaces, Namespaces::Own);
        let all =
            spec(serde_json::json!({"resources": [{"apiVersion": "v1", "kind": "Event"}], "namespaceSelector": {}}))
                .unwrap();
        assert_eq!(all.namespaces, Namespaces::All);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap"});
        let pods =
            |selector| serde_json::json!({"resources": [{"apiVersion": "v1", "kind": "Pod", "selector": selector}]});
        let namespaces = |expression| {
            let selector = serde_json::json!({"matchExpressions": [expression]});
            serde_json::json!({"resources": [cm], "namespaceSelector": selector})
        };
        let cases = [
            (serde_json::json!({}), "spec.resources"),
            (serde_json::json!({"resources": [{"apiVersion": "v1"}]}), "spec.resources[0].kind"),
            (serde_json::json!({"resources": [{"kind": "ConfigMap"}]}), "spec.resources[0].apiVersion"),
            (
                serde_json::json!({"resources": [cm, {"apiVersion": "a/b/c", "kind": "X"}]}),
                "spec.resources[1].apiVersion",
            ),
            (serde_json::json!({"resources": [cm], "mode": "Full"}), "spec.mode"),
            (serde_json::json!({"resources": [cm], "owner": {"apiVersion": "apps/v1"}}), "spec.owner.kind"),
            (pods(serde_json::json!({"matchLabels": {"-x": "y"}})), "spec.resources[0].selector.matchLabels"),
            (
                namespaces(serde_json::json!({"key": "a", "operator": "Near"})),
                "spec.namespaceSelector.matchExpressions[0].operator",
            ),
            (
                namespaces(serde_json::json!({"key": "a", "operator": "In"})),
                "spec.namespaceSelector.matchExpressions[0].values",
            ),
            (serde_json::json!({"resources": [cm], "filters": [{"exact": {"type": "x"}}]}), "spec.filters"),
            (serde_json::json!({"resources": [cm], "kubeconfig": ""}), "spec.kubeconfig"),
        ];
        for (json, field) in cases {
            let error = spec(json.clone()).expect_err(&json.to_string());
            let ValidationError::Field { field: actual, .. } = &error else { panic!("{json}: {error}") };
            assert_eq!(actual, field, "{json}: {error}");
        }
    }
}
