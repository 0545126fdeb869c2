//! Addressable references resolved outside Switchyard: a Knative `Destination.ref` naming an
//! object (a Knative Service, a Broker, any object with `status.address.url`) that only an API
//! server knows the address of. The binary gives an implementation when it is configured with
//! one (`switchyard-kube`); without one, such a reference cannot be resolved.

use async_trait::async_trait;
use tokio::sync::watch;

/// The object a `ref` names (Knative's `KReference`, its namespace defaulted to the referrer's).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// `group/version`, or `version` for the core group (`serving.knative.dev/v1`).
    pub api_version: String,
    /// The kind (`Service`).
    pub kind: String,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{} ({})", self.kind, self.namespace, self.name, self.api_version)
    }
}

/// Resolves references to addresses, and says when an address may have changed.
#[async_trait]
pub trait Addresses: Send + Sync + 'static {
    /// The object's address (`status.address.url`), or why there is none: the message is a
    /// user's to read (in a condition), e.g. `Service default/shop has no status.address.url`.
    async fn resolve(&self, reference: &ObjectRef) -> Result<String, String>;

    /// What [`Addresses::resolve`] would answer from what is known already, without waiting
    /// (for status reports); `None` when nothing is known yet.
    fn cached(&self, _reference: &ObjectRef) -> Option<Result<String, String>> {
        None
    }

    /// Changes value whenever an object this resolver has resolved (or failed to) changes, so
    /// that whoever holds a resolved address resolves again.
    fn changes(&self) -> watch::Receiver<u64>;
}
