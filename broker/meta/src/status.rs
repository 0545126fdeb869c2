//! What the server observes of a declared resource, as the API answers it in `status`
//! (Knative's shapes: `conditions`, `observedGeneration`, an addressable's `address.url`).

use serde::{Deserialize, Serialize};

/// A condition in `status.conditions`, Kubernetes style.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

    /// `Ready=True` with a note: a property the user chose, not a fault (a source that is
    /// at most once, say).
    pub fn ready_because(reason: &str, message: String) -> Condition {
        Condition { ty: "Ready".into(), status: "True".into(), reason: Some(reason.into()), message: Some(message) }
    }

    /// `Ready=False` with a reason.
    pub fn not_ready(reason: &str, message: String) -> Condition {
        Condition { ty: "Ready".into(), status: "False".into(), reason: Some(reason.into()), message: Some(message) }
    }
}

/// An addressable's address.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Where to send events: the broker's ingest URL, `{base}/{namespace}/{name}`.
    pub url: String,
}

/// A broker's observed state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrokerStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// Where to send events.
    pub address: Address,
    /// `Ready`, or `Ready=False` with a reason.
    pub conditions: Vec<Condition>,
}

/// A trigger's observed state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// The subscriber's URL.
    #[cfg_attr(feature = "openapi", schema(required))]
    pub subscriber_uri: Option<String>,
    /// `Ready`, or `Ready=False` with a reason (`BrokerDoesNotExist`, `InvalidSpec`,
    /// `ActivationFailed`).
    pub conditions: Vec<Condition>,
}

/// A source's observed state.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<u64>,
    /// `Ready`, or `Ready=False` with a reason (`SinkNotFound`, `SecretNotFound`,
    /// `KafkaUnavailable`, …).
    pub conditions: Vec<Condition>,
    /// Where events go: a URI, or the ingest URL of the sink broker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink_uri: Option<String>,
    /// For a webhook source: the URL to give the sender.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
}
