//! The loop guard: a trigger whose subscriber or dead-letter sink is its own broker's ingest URL
//! on this node would put every event back into the broker it came from, forever — and two
//! such triggers double the traffic on every pass. The hop counter cannot stop it, because
//! Knative strips `knativebrokerttl` before delivery, so an event delivered to an ingest URL
//! arrives as new. Such a declaration is refused.
//!
//! What is recognised as this node: a loopback or unspecified address, `localhost`, or the
//! address the node listens on, with the node's port. Chaining into another broker stays
//! allowed (a common Knative pattern); a cycle through two brokers is not detected, as in
//! Knative.

use std::net::{IpAddr, SocketAddr};

use switchyard_meta::resources::{DeliverySpec, Destination};
use switchyard_meta::ValidationError;
use url::{Host, Url};

use crate::declaration::Declaration;

/// Refuses a declaration that would deliver a broker's events into that same broker through
/// this node (listening on `node`).
pub(crate) fn refuse_self_delivery(declaration: &Declaration, node: SocketAddr) -> Result<(), ValidationError> {
    let (namespace, name) = declaration.names();
    match declaration {
        Declaration::Trigger(trigger) => {
            let broker = trigger.spec.broker.as_str();
            check(Some(&trigger.spec.subscriber), "spec.subscriber.uri", node, namespace, broker)?;
            check_dead_letter_sink(trigger.spec.delivery.as_ref(), node, namespace, broker)
        }
        Declaration::Broker(broker) => check_dead_letter_sink(broker.spec.delivery.as_ref(), node, namespace, name),
        Declaration::Source(_) | Declaration::KafkaSink(_) | Declaration::EventPolicy(_) => Ok(()),
    }
}

fn check_dead_letter_sink(
    delivery: Option<&DeliverySpec>,
    node: SocketAddr,
    namespace: &str,
    broker: &str,
) -> Result<(), ValidationError> {
    let sink = delivery.and_then(|delivery| delivery.dead_letter_sink.as_ref());
    check(sink, "spec.delivery.deadLetterSink.uri", node, namespace, broker)
}

fn check(
    destination: Option<&Destination>,
    field: &str,
    node: SocketAddr,
    namespace: &str,
    broker: &str,
) -> Result<(), ValidationError> {
    let Some(uri) = destination.and_then(|destination| destination.uri.as_deref()) else { return Ok(()) };
    match is_own_ingest(uri, node, namespace, broker) {
        true => Err(ValidationError::field(
            field,
            format!(
                "'{uri}' is the ingest URL of broker '{namespace}/{broker}' on this node: its events would come back \
                 into it forever; deliver to a service or to another broker"
            ),
        )),
        false => Ok(()),
    }
}

fn is_own_ingest(uri: &str, node: SocketAddr, namespace: &str, broker: &str) -> bool {
    let Ok(url) = Url::parse(uri) else { return false };
    let this_host = match url.host() {
        Some(Host::Ipv4(ip)) => is_this_node(IpAddr::V4(ip), node),
        Some(Host::Ipv6(ip)) => is_this_node(IpAddr::V6(ip), node),
        Some(Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        None => false,
    };
    this_host
        && url.port_or_known_default() == Some(node.port())
        && url.path().trim_end_matches('/') == format!("/{namespace}/{broker}")
}

fn is_this_node(ip: IpAddr, node: SocketAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || ip == node.ip()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "127.0.0.1:8080";

    fn own(uri: &str) -> bool {
        is_own_ingest(uri, NODE.parse().unwrap(), "default", "b")
    }

    #[test]
    fn every_spelling_of_this_node_is_recognised() {
        for uri in [
            "http://127.0.0.1:8080/default/b",
            "http://127.0.0.1:8080/default/b/",
            "http://localhost:8080/default/b",
            "http://LOCALHOST.:8080/default/b",
            "http://127.9.9.9:8080/default/b",
            "http://[::1]:8080/default/b",
            "http://0.0.0.0:8080/default/b?x=1",
        ] {
            assert!(own(uri), "{uri}");
        }
    }

    #[test]
    fn other_brokers_ports_and_paths_are_not_a_loop() {
        for uri in [
            "http://127.0.0.1:8080/default/other",
            "http://127.0.0.1:8081/default/b",
            "http://127.0.0.1/default/b",
            "http://127.0.0.1:8080/default/b/x",
            "http://127.0.0.1:8080/v1/namespaces/default/brokers/b",
            "http://example.com:8080/default/b",
            "not a url",
        ] {
            assert!(!own(uri), "{uri}");
        }
    }
}
