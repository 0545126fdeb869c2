//! Leader election over a `coordination.k8s.io/v1` Lease, so that of several Switchyard nodes
//! sharing one API server (a Kafka-backed cluster) exactly one reconciles Knative objects and
//! writes their status: the declarations it makes reach the other nodes through Switchyard's
//! own declaration log, and two writers of one status would only fight over it.
//!
//! The protocol is Kubernetes' own (client-go's `leaderelection`): the holder renews
//! `spec.renewTime` well within `spec.leaseDurationSeconds`; anyone may take a lease whose
//! renewal is older than its duration; every write carries the `resourceVersion` it read, so of
//! two takers at once the API server accepts one (409 Conflict for the other).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::Api;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a holder that stopped renewing keeps the lease (client-go's default).
const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and a candidate looks again.
const RENEW_INTERVAL: Duration = Duration::from_secs(2);

/// One candidate for a lease.
pub(crate) struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    /// A candidate named `identity` for the lease `name` in `api`'s namespace.
    pub(crate) fn new(api: Api<Lease>, name: String, identity: String) -> Elector {
        Elector { api, name, identity }
    }

    /// Runs for ever, saying in `leading` whether this candidate holds the lease: `true` from a
    /// successful take or renewal until the lease would have expired without a later one (a
    /// holder cut off from the API server steps down before anyone else may take over).
    pub(crate) async fn run(self, leading: watch::Sender<bool>) {
        let mut held_until: Option<Instant> = None;
        loop {
            let started = Instant::now();
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    if held_until.is_none() {
                        tracing::info!(lease = %self.name, identity = %self.identity, "leading: this node reconciles Knative brokers of its class");
                    }
                    held_until = Some(started + LEASE_DURATION - RENEW_INTERVAL);
                }
                Ok(false) => {
                    if held_until.take().is_some() {
                        tracing::warn!(lease = %self.name, "another node took the lease: no longer reconciling");
                    }
                }
                Err(error) => tracing::debug!(lease = %self.name, %error, "cannot renew the lease"),
            }
            if held_until.is_some_and(|until| Instant::now() >= until) {
                tracing::warn!(lease = %self.name, "the lease could not be renewed in time: no longer reconciling");
                held_until = None;
            }
            let now_leading = held_until.is_some();
            metrics::gauge!(crate::broker_class::LEADING).set(if now_leading { 1.0 } else { 0.0 });
            leading.send_if_modified(|current| std::mem::replace(current, now_leading) != now_leading);
            tokio::time::sleep(RENEW_INTERVAL).await;
        }
    }

    /// Takes the lease if it is free or expired, renews it if it is ours; `Ok(false)` when
    /// another holds it (or won the race to it).
    async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let duration_seconds = LEASE_DURATION.as_secs() as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        if !ours {
            // Expired when its last renewal is older than its own duration (as the holder set
            // it); a lease without a renewal or a holder is free.
            let held = spec.holder_identity.as_deref().is_some_and(|holder| !holder.is_empty());
            let duration = i64::from(spec.lease_duration_seconds.unwrap_or(duration_seconds));
            let expired = spec
                .renew_time
                .as_ref()
                .is_none_or(|renewed| now.as_second().saturating_sub(renewed.0.as_second()) > duration);
            if held && !expired {
                return Ok(false);
            }
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(MicroTime(now));
        // `lease.metadata.resourceVersion` is the one read: a concurrent writer makes this 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(error) => Err(error),
        }
    }
}

/// The lease of `class`: a DNS-1123 name made from it.
pub(crate) fn lease_name(class: &str) -> String {
    let mut name: String =
        class.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    name = format!("switchyard-broker-class-{name}");
    name.truncate(63);
    name.trim_end_matches('-').to_owned()
}

/// This process among the candidates: the host's name (a pod's name in Kubernetes) and the
/// process id, unique among live processes.
pub(crate) fn identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|host| host.trim().to_owned())
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "switchyard".to_owned());
    format!("{host}_{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_dns_labels_made_from_the_class() {
        assert_eq!(lease_name("Switchyard"), "switchyard-broker-class-switchyard");
        assert_eq!(lease_name("My.Class_1"), "switchyard-broker-class-my-class-1");
        let long = lease_name(&"x".repeat(100));
        assert_eq!(long.len(), 63);
        assert!(!lease_name(&format!("{}-", "a".repeat(38))).ends_with('-'));
    }
}
