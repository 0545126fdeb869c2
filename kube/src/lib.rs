//! Switchyard on a Kubernetes API server, when `serve` is given one (`--kubeconfig`, or
//! `[kubernetes] in_cluster = true`):
//!
//! - [`KubeAddresses`]: a `Destination.ref` naming any object with `status.address.url` (a
//!   Knative Service, a Broker, a CRD instance) resolved through the API server, and resolved
//!   again when the object changes.
//! - [`broker_class`]: Knative `Broker`s whose `eventing.knative.dev/broker.class` names
//!   Switchyard, and their `Trigger`s, reconciled into this node's declarations, with Knative's
//!   status written back.

mod addresses;
pub mod broker_class;
mod lease;

use std::path::Path;

pub use crate::addresses::KubeAddresses;

/// A client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The kubeconfig could not be read or used.
    #[error("cannot use kubeconfig '{path}': {message}")]
    Kubeconfig {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// In-cluster credentials are missing or unusable.
    #[error("cannot use the in-cluster service account: {0}")]
    InCluster(String),
    /// The client could not be built.
    #[error("cannot build a kubernetes client: {0}")]
    Client(String),
}

/// A client of the API server a kubeconfig names, or (`None`) of the cluster this process runs
/// in, from its service account; and that server's URL.
pub async fn client(kubeconfig: Option<&Path>) -> Result<(kube::Client, String), KubeError> {
    let config = match kubeconfig {
        Some(path) => {
            let invalid = |message: String| KubeError::Kubeconfig { path: path.display().to_string(), message };
            let file = kube::config::Kubeconfig::read_from(path).map_err(|e| invalid(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| invalid(e.to_string()))?
        }
        None => kube::Config::incluster().map_err(|e| KubeError::InCluster(e.to_string()))?,
    };
    let url = config.cluster_url.to_string().trim_end_matches('/').to_owned();
    Ok((kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))?, url))
}
