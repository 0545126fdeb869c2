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
        Condition::failed("Ready", reason, message)
    }

    /// A condition of type `ty` that holds (`SubscriberResolved=True`).
    pub fn met(ty: &str) -> Condition {
        Condition { ty: ty.into(), status: "True".into(), reason: None, message: None }
    }

    /// A condition of type `ty` that holds, with a note (Knative's `MarkTrueWithReason`:
    /// `DeadLetterSinkResolved=True`, `DeadLetterSinkNotConfigured`).
    pub fn met_because(ty: &str, reason: &str, message: String) -> Condition {
        Condition { ty: ty.into(), status: "True".into(), reason: Some(reason.into()), message: Some(message) }
    }

    /// A condition of type `ty` that does not hold, with why.
    pub fn failed(ty: &str, reason: &str, message: String) -> Condition {
        Condition { ty: ty.into(), status: "False".into(), reason: Some(reason.into()), message: Some(message) }
    }

    /// A condition of type `ty` not known yet, with why.
    pub fn unknown(ty: &str, reason: &str, message: String) -> Condition {
        Condition { ty: ty.into(), status: "Unknown".into(), reason: Some(reason.into()), message: Some(message) }
    }
}

/// Knative's trigger and broker condition types and reasons for destinations
/// (knative.dev/eventing `pkg/apis/eventing/v1/trigger_lifecycle.go`; the reasons are the
/// broker reconcilers', `pkg/reconciler/broker/trigger/trigger.go` and `broker/broker.go`).
pub mod knative {
    /// The subscriber's address is known (`status.subscriberUri`).
    pub const SUBSCRIBER_RESOLVED: &str = "SubscriberResolved";
    /// The dead-letter sink's address is known (or none is configured).
    pub const DEAD_LETTER_SINK_RESOLVED: &str = "DeadLetterSinkResolved";
    /// Why `SubscriberResolved` is `False`.
    pub const SUBSCRIBER_UNRESOLVED: &str = "Unable to get the Subscriber's URI";
    /// Why `DeadLetterSinkResolved` is `False`.
    pub const DEAD_LETTER_SINK_UNRESOLVED: &str = "Unable to get the dead letter sink's URI";
    /// Why `DeadLetterSinkResolved` is `True` without a sink, and its message.
    pub const DEAD_LETTER_SINK_NOT_CONFIGURED: (&str, &str) =
        ("DeadLetterSinkNotConfigured", "No dead letter sink is configured.");
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
    /// `Ready`, or `Ready=False` with a reason; `DeadLetterSinkResolved` when its delivery
    /// has a dead-letter sink.
    pub conditions: Vec<Condition>,
    /// The EventPolicies that apply to it (Knative's `status.policies`): when there are any,
    /// only the senders they name may send to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<AppliedPolicy>,
}

/// An EventPolicy that applies to a broker.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// `eventing.knative.dev/v1alpha1`.
    pub api_version: String,
    /// The policy's name (of the broker's namespace).
    pub name: String,
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
    /// `Ready` first (or `Ready=False` with a reason: `BrokerDoesNotExist`, `InvalidSpec`,
    /// `ActivationFailed`, `Unable to get the Subscriber's URI`, …), then Knative's
    /// `SubscriberResolved` and `DeadLetterSinkResolved`.
    pub conditions: Vec<Condition>,
    /// With `spec.signing`: what subscribers verify with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing: Option<SigningStatus>,
}

/// How a trigger signs its deliveries, as it runs.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SigningStatus {
    /// The `whpk_` public key of each Ed25519 (`whsk_`) secret the running trigger signs with,
    /// in the declared order; empty while it does not run.
    pub public_keys: Vec<String>,
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
