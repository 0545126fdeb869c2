//! Knative's EventPolicy (`eventing.knative.dev/v1alpha1`): which senders a namespace's brokers
//! admit. A broker that one or more policies apply to (`spec.to`, or every broker of the
//! namespace when `to` is empty) admits only requests whose sender matches a `from` of one of
//! them, and only the events that pass that policy's `filters` (Knative's authorization
//! semantics, `docs/eventing/features/authorization`). A broker no policy applies to admits
//! whoever the server's authentication lets in.
//!
//! A sender is named by its subject (`from[].sub`, exact or with a trailing `*`): a static
//! token's name, or an OIDC token's subject. Knative's `from[].ref` names a Kubernetes object
//! whose service account signs its requests; there are no service accounts here, so it is refused.

use serde::{Deserialize, Serialize};

use crate::resources::{parse_resource, validate_dns_label, Resource, SubscriptionsFilter};
use crate::ValidationError;

/// The kind.
pub const KIND: &str = "EventPolicy";
/// Its API version (the only one).
pub const API_VERSION: &str = "eventing.knative.dev/v1alpha1";
/// Most entries in `to`, and in `from`.
pub const MAX_ENTRIES: usize = 64;

/// `spec` of an EventPolicy.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EventPolicySpec {
    /// The brokers it applies to: every broker of the namespace when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<PolicyTarget>,
    /// The senders it admits (at least one).
    #[serde(default)]
    pub from: Vec<PolicySender>,
    /// Subscriptions-API filters every admitted event must pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<SubscriptionsFilter>,
}

/// One `spec.to` entry: a broker by name, or the brokers whose labels match.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTarget {
    /// A broker of the namespace.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<TargetRef>,
    /// Brokers by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<TargetSelector>,
}

/// `spec.to[].ref`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetRef {
    /// `eventing.knative.dev/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Broker`.
    #[serde(default)]
    pub kind: String,
    /// The broker's name.
    #[serde(default)]
    pub name: String,
}

/// `spec.to[].selector`: brokers whose labels include every `matchLabels` entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TargetSelector {
    /// `eventing.knative.dev/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Broker`.
    #[serde(default)]
    pub kind: String,
    /// Labels the broker must have.
    #[serde(default)]
    pub match_labels: std::collections::BTreeMap<String, String>,
}

/// One `spec.from` entry.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySender {
    /// The sender's subject: exact, or a prefix followed by `*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Knative's reference to a sending object: refused (no service accounts here).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<serde_json::Value>,
}

/// A declared EventPolicy.
pub type EventPolicy = Resource<EventPolicySpec>;

/// An EventPolicy's observed state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPolicyStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// `Ready`.
    pub conditions: Vec<crate::status::Condition>,
    /// The brokers of its namespace it applies to now.
    pub brokers: Vec<String>,
}

/// Parses and checks an EventPolicy submitted for `namespace/name`; errors name the field.
/// The filters are compiled where they run (the dispatcher's filter), by the caller.
pub fn parse_event_policy(namespace: &str, name: &str, body: &[u8]) -> Result<EventPolicy, ValidationError> {
    let policy: EventPolicy = parse_resource(KIND, &[API_VERSION], namespace, name, body)?;
    policy.spec.validate()?;
    Ok(policy)
}

impl EventPolicySpec {
    /// Checks `to` and `from`; errors name the field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.to.len() > MAX_ENTRIES || self.from.len() > MAX_ENTRIES {
            let field = if self.to.len() > MAX_ENTRIES { "spec.to" } else { "spec.from" };
            return Err(ValidationError::field(field, format!("has more than {MAX_ENTRIES} entries")));
        }
        for (i, target) in self.to.iter().enumerate() {
            let field = format!("spec.to[{i}]");
            let (api_version, kind) = match (&target.reference, &target.selector) {
                (Some(reference), None) => {
                    validate_dns_label(&format!("{field}.ref.name"), &reference.name)?;
                    (&reference.api_version, &reference.kind)
                }
                (None, Some(selector)) => (&selector.api_version, &selector.kind),
                _ => return Err(ValidationError::field(&field, "give exactly one of 'ref' and 'selector'".to_owned())),
            };
            let which = if target.reference.is_some() { "ref" } else { "selector" };
            if kind != "Broker" {
                return Err(ValidationError::field(
                    &format!("{field}.{which}.kind"),
                    format!("'{kind}' is not supported: an EventPolicy here applies to brokers ('Broker')"),
                ));
            }
            if !api_version.is_empty() && api_version != "eventing.knative.dev/v1" {
                return Err(ValidationError::field(
                    &format!("{field}.{which}.apiVersion"),
                    format!("'{api_version}' is not a Broker's API version: use 'eventing.knative.dev/v1'"),
                ));
            }
        }
        if self.from.is_empty() {
            return Err(ValidationError::field(
                "spec.from",
                "needs at least one sender ({\"sub\": \"<subject>\"}): a policy that admits nobody would stop its brokers"
                    .to_owned(),
            ));
        }
        for (i, sender) in self.from.iter().enumerate() {
            let field = format!("spec.from[{i}]");
            match (&sender.sub, &sender.reference) {
                (Some(sub), None) => validate_subject(&format!("{field}.sub"), sub)?,
                (None, Some(_)) => {
                    return Err(ValidationError::field(
                        &format!("{field}.ref"),
                        "needs Kubernetes service accounts: name the sender by its subject, 'sub' (a token's name, or an OIDC subject)".to_owned(),
                    ))
                }
                _ => return Err(ValidationError::field(&field, "give exactly one of 'sub' and 'ref'".to_owned())),
            }
        }
        Ok(())
    }

    /// Whether it applies to the broker `name` with `labels`.
    pub fn applies_to(&self, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        self.to.is_empty()
            || self.to.iter().any(|target| match (&target.reference, &target.selector) {
                (Some(reference), _) => reference.name == name,
                (None, Some(selector)) => selector.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)),
                (None, None) => false,
            })
    }

    /// Whether it admits the sender `subject`.
    pub fn admits(&self, subject: &str) -> bool {
        self.from.iter().filter_map(|sender| sender.sub.as_deref()).any(|pattern| match pattern.strip_suffix('*') {
            Some(prefix) => subject.starts_with(prefix),
            None => subject == pattern,
        })
    }
}

fn validate_subject(field: &str, subject: &str) -> Result<(), ValidationError> {
    if subject.is_empty() || subject.len() > 256 {
        return Err(ValidationError::field(field, "must have 1 to 256 characters".to_owned()));
    }
    if subject.trim_end_matches('*').contains('*') || subject.matches('*').count() > 1 {
        return Err(ValidationError::field(field, format!("'{subject}' may have '*' only at its end")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: serde_json::Value) -> Result<EventPolicy, ValidationError> {
        parse_event_policy("team", "p", serde_json::json!({"spec": spec}).to_string().as_bytes())
    }

    #[test]
    fn policies_name_brokers_and_senders() {
        let policy = parse(serde_json::json!({
            "to": [{"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "orders"}},
                   {"selector": {"kind": "Broker", "matchLabels": {"tier": "gold"}}}],
            "from": [{"sub": "checkout"}, {"sub": "system:serviceaccount:team:*"}],
        }))
        .unwrap();
        let none = Default::default();
        let gold = [("tier".to_owned(), "gold".to_owned())].into();
        assert!(policy.spec.applies_to("orders", &none) && policy.spec.applies_to("other", &gold));
        assert!(!policy.spec.applies_to("other", &none));
        assert!(policy.spec.admits("checkout") && policy.spec.admits("system:serviceaccount:team:billing"));
        assert!(!policy.spec.admits("checkout2") && !policy.spec.admits("system:serviceaccount:other:x"));
        let everywhere = parse(serde_json::json!({"from": [{"sub": "a"}]})).unwrap();
        assert!(everywhere.spec.applies_to("any", &none));
    }

    #[test]
    fn bad_policies_name_the_field() {
        for (spec, field) in [
            (serde_json::json!({}), "spec.from"),
            (serde_json::json!({"from": [{}]}), "spec.from[0]"),
            (serde_json::json!({"from": [{"sub": "a*b"}]}), "spec.from[0].sub"),
            (serde_json::json!({"from": [{"ref": {"kind": "PingSource", "name": "p"}}]}), "spec.from[0].ref"),
            (serde_json::json!({"from": [{"sub": "a"}], "to": [{}]}), "spec.to[0]"),
            (serde_json::json!({"from": vec![serde_json::json!({"sub": "a"}); MAX_ENTRIES + 1]}), "spec.from"),
            (
                serde_json::json!({"from": [{"sub": "a"}], "to": [{"ref": {"kind": "Channel", "name": "c"}}]}),
                "spec.to[0].ref.kind",
            ),
            (
                serde_json::json!({"from": [{"sub": "a"}], "to": [{"ref": {"kind": "Broker", "name": "Bad_Name"}}]}),
                "spec.to[0].ref.name",
            ),
        ] {
            let error = parse(spec.clone()).unwrap_err();
            assert!(matches!(&error, ValidationError::Field { field: f, .. } if f == field), "{spec}: {error}");
        }
    }
}
