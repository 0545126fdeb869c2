//! Addressable references resolved through a real kube-apiserver: a Trigger's `subscriber.ref`
//! and `delivery.deadLetterSink.ref`, and a source's `sink.ref`, naming an object whose
//! `status.address.url` points at a local subscriber (a stand-in for Knative Serving's Service,
//! `services.serving.knative.dev`, created by the test as a CRD). The address is followed when
//! it changes, without losing events; a reference that cannot be resolved shows Knative's
//! `SubscriberResolved=False` and is delivered to once it resolves; without an API server such
//! a reference is refused as before.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{kube_namespace, kubeconfig, kubectl, kubectl_on, PrivateApiServer, Server, Subscriber};

/// How long resolving, restarting and delivering may take.
const WAIT: Duration = Duration::from_secs(45);

/// A CRD standing in for Knative Serving's Service: what the resolver reads of it is
/// `status.address.url`.
const SERVICE_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: services.serving.knative.dev
spec:
  group: serving.knative.dev
  scope: Namespaced
  names:
    kind: Service
    listKind: ServiceList
    plural: services
    singular: service
    shortNames: [ksvc]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

/// The tests' API server, with the Service CRD established (created once per process,
/// idempotently: other tests on the shared server may create it too).
fn api_server() -> PathBuf {
    static READY: OnceLock<PathBuf> = OnceLock::new();
    READY
        .get_or_init(|| {
            let config = kubeconfig();
            kubectl(&["apply", "-f", "-"], Some(SERVICE_CRD));
            kubectl(
                &["wait", "--for", "condition=established", "--timeout=60s", "crd/services.serving.knative.dev"],
                None,
            );
            config
        })
        .clone()
}

/// Applies the Service CRD to the API server of `config` and waits until it is established.
fn install_service_crd(config: &Path) {
    kubectl_on(config, &["apply", "-f", "-"], Some(SERVICE_CRD));
    kubectl_on(
        config,
        &["wait", "--for", "condition=established", "--timeout=60s", "crd/services.serving.knative.dev"],
        None,
    );
}

/// A server with the API server to resolve references through.
async fn server() -> Server {
    let config = api_server();
    Server::start_with(&["--kubeconfig", config.to_str().expect("utf-8 path")]).await
}

/// Creates (or leaves) the Knative Service `name`, and sets its `status.address.url`.
fn service(namespace: &str, name: &str, url: &str) {
    service_on(&api_server(), namespace, name, url);
}

fn service_on(config: &Path, namespace: &str, name: &str, url: &str) {
    let object = format!(
        "apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec: {{}}\n"
    );
    kubectl_on(config, &["apply", "-f", "-"], Some(&object));
    set_address_on(config, namespace, name, url);
}

/// Sets the Service's `status.address.url` through the status subresource, as Knative Serving
/// would.
fn set_address(namespace: &str, name: &str, url: &str) {
    set_address_on(&api_server(), namespace, name, url);
}

fn set_address_on(config: &Path, namespace: &str, name: &str, url: &str) {
    let patch = json!({"status": {"address": {"url": url}}}).to_string();
    kubectl_on(
        config,
        &[
            "patch",
            "services.serving.knative.dev",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
}

fn service_ref(name: &str) -> Value {
    json!({"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": name})
}

fn events(prefix: &str, count: usize) -> Vec<Value> {
    (0..count)
        .map(|i| json!({"specversion": "1.0", "id": format!("{prefix}-{i}"), "type": "order.created", "source": "/shop"}))
        .collect()
}

fn ids(events: &[Value]) -> BTreeSet<String> {
    events.iter().map(|event| event["id"].as_str().expect("id").to_owned()).collect()
}

/// The declaration's `status` once `done` holds (or panics after [`WAIT`], with the last).
async fn wait_for_status(server: &Server, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = server.get(path).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
        if done(&body["status"]) {
            return body["status"].clone();
        }
        assert!(Instant::now() < deadline, "{path} never reached the expected status: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition<'a>(status: &'a Value, ty: &str) -> &'a Value {
    let conditions = status["conditions"].as_array().expect("conditions");
    conditions.iter().find(|condition| condition["type"] == ty).unwrap_or_else(|| panic!("no {ty} in {status}"))
}

#[tokio::test]
async fn a_trigger_delivers_to_its_subscribers_address_and_follows_it_without_losing_events() {
    let namespace = kube_namespace("refs-follow");
    let (first, second) = (Subscriber::start().await, Subscriber::start().await);
    service(&namespace, "shop", &first.url);
    let server = server().await;
    server.broker(&namespace, "b").await;
    let path = format!("/v1/namespaces/{namespace}/triggers/t");
    let (status, body) =
        server.put(&path, json!({"spec": {"broker": "b", "subscriber": {"ref": service_ref("shop")}}})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let status = wait_for_status(&server, &path, |s| s["conditions"][0]["status"] == "True").await;
    assert_eq!(status["subscriberUri"], first.url.as_str(), "{status}");
    assert_eq!(condition(&status, "SubscriberResolved")["status"], "True", "{status}");
    assert_eq!(condition(&status, "DeadLetterSinkResolved")["reason"], "DeadLetterSinkNotConfigured", "{status}");

    let before = events("before", 20);
    assert_eq!(server.send_batch(&namespace, "b", &before).await, StatusCode::ACCEPTED);
    first.wait_for_ids(&ids(&before), &server).await;

    // The address moves while events keep coming: each reaches one of the two.
    set_address(&namespace, "shop", &second.url);
    let during = events("during", 50);
    for chunk in during.chunks(5) {
        assert_eq!(server.send_batch(&namespace, "b", chunk).await, StatusCode::ACCEPTED);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = wait_for_status(&server, &path, |s| s["subscriberUri"] == second.url.as_str()).await;
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");
    let after = events("after", 20);
    assert_eq!(server.send_batch(&namespace, "b", &after).await, StatusCode::ACCEPTED);
    second.wait_for_ids(&ids(&after), &server).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let delivered: BTreeSet<String> = first.ids().union(&second.ids()).cloned().collect();
        let missing: Vec<String> = ids(&during).difference(&delivered).cloned().collect();
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "lost across the address change: {missing:?}; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(first.ids().iter().all(|id| !id.starts_with("after")), "the old address got events after the move");
}

#[tokio::test]
async fn a_missing_object_is_not_ready_until_it_appears_and_then_gets_the_events_that_waited() {
    let namespace = kube_namespace("refs-missing");
    let subscriber = Subscriber::start().await;
    let server = server().await;
    server.broker(&namespace, "b").await;
    let path = format!("/v1/namespaces/{namespace}/triggers/t");
    let spec = json!({"spec": {"broker": "b", "subscriber": {"ref": service_ref("later")}}});
    let (status, body) = server.put(&path, spec).await;
    // Knative's way: the object is accepted, and its status says why it does not run.
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let status = &body["status"];
    assert_eq!(status["conditions"][0]["status"], "False", "{status}");
    assert_eq!(status["conditions"][0]["reason"], "Unable to get the Subscriber's URI", "{status}");
    let resolved = condition(status, "SubscriberResolved");
    assert_eq!(resolved["status"], "False", "{status}");
    assert_eq!(resolved["reason"], "Unable to get the Subscriber's URI", "{status}");
    let message = resolved["message"].as_str().unwrap_or_default();
    assert!(message.contains("later") && message.contains("does not exist"), "{status}");
    assert!(status["subscriberUri"].is_null(), "{status}");
    let unresolved = server.metric("switchyard_unresolved_references", &[]).await.unwrap_or_default();
    assert!(unresolved >= 1.0, "the gauge counts it: {unresolved}");

    // Sent while it cannot be resolved: they wait in the log.
    let waiting = events("waiting", 10);
    assert_eq!(server.send_batch(&namespace, "b", &waiting).await, StatusCode::ACCEPTED);
    service(&namespace, "later", &subscriber.url);
    subscriber.wait_for_ids(&ids(&waiting), &server).await;
    let status = wait_for_status(&server, &path, |s| s["conditions"][0]["status"] == "True").await;
    assert_eq!(condition(&status, "SubscriberResolved")["status"], "True", "{status}");
    assert_eq!(status["subscriberUri"], subscriber.url.as_str(), "{status}");
}

#[tokio::test]
async fn a_uri_with_a_ref_is_a_path_below_its_address_and_a_dead_letter_sink_ref_resolves() {
    let namespace = kube_namespace("refs-paths");
    let (subscriber, dead) = (Subscriber::start().await, Subscriber::start().await);
    subscriber.always(StatusCode::INTERNAL_SERVER_ERROR);
    service(&namespace, "shop", &format!("{}api/v1/", subscriber.url));
    service(&namespace, "dead", &format!("{}letters", dead.url));
    let server = server().await;
    server.broker(&namespace, "b").await;
    let path = format!("/v1/namespaces/{namespace}/triggers/t");
    let spec = json!({"spec": {
        "broker": "b",
        "subscriber": {"ref": service_ref("shop"), "uri": "orders?v=2"},
        "delivery": {"retry": 0, "deadLetterSink": {"ref": service_ref("dead"), "uri": "/dlq"}}
    }});
    let (status, body) = server.put(&path, spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let status = wait_for_status(&server, &path, |s| s["conditions"][0]["status"] == "True").await;
    assert_eq!(status["subscriberUri"], format!("{}api/v1/orders?v=2", subscriber.url), "{status}");
    assert_eq!(condition(&status, "DeadLetterSinkResolved")["status"], "True", "{status}");

    let sent = events("dl", 3);
    assert_eq!(server.send_batch(&namespace, "b", &sent).await, StatusCode::ACCEPTED);
    dead.wait_for_ids(&ids(&sent), &server).await;
    assert!(subscriber.received().iter().all(|r| r.path == "/api/v1/orders"), "{:?}", subscriber.received());
    // `/dlq` is absolute-path relative: it replaces the address's path, as RFC 3986 says.
    assert!(dead.received().iter().all(|r| r.path == "/dlq"), "{:?}", dead.received());

    // An absolute `uri` with a `ref` is refused, as in Knative.
    let bad =
        json!({"spec": {"broker": "b", "subscriber": {"ref": service_ref("shop"), "uri": "http://127.0.0.1:1/"}}});
    let (status, problem) = server.put(&format!("/v1/namespaces/{namespace}/triggers/bad"), bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert!(problem["detail"].as_str().unwrap_or_default().contains("spec.subscriber.uri"), "{problem}");
}

#[tokio::test]
async fn a_sources_sink_ref_names_an_addressable_object() {
    let namespace = kube_namespace("refs-source");
    let subscriber = Subscriber::start().await;
    service(&namespace, "ticks", &subscriber.url);
    let server = server().await;
    let path = format!("/v1/namespaces/{namespace}/pingsources/p");
    let spec = json!({"spec": {"schedule": "* * * * * *", "data": "tick", "sink": {"ref": service_ref("ticks"), "uri": "pings"}}});
    let (status, body) = server.put(&path, spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let received = subscriber.wait_for(2, WAIT).await;
    assert!(received.iter().all(|r| r.path == "/pings"), "{received:?}");
    let status = wait_for_status(&server, &path, |s| s["sinkUri"].is_string()).await;
    assert_eq!(status["sinkUri"], format!("{}pings", subscriber.url), "{status}");
    assert_eq!(status["conditions"][0]["status"], "True", "{status}");

    // Its object going away shows in its status.
    kubectl(&["delete", "services.serving.knative.dev", "ticks", "-n", &namespace], None);
    let status = wait_for_status(&server, &path, |s| s["conditions"][0]["status"] == "False").await;
    assert_eq!(status["conditions"][0]["reason"], "SinkNotFound", "{status}");
}

#[tokio::test]
async fn without_an_api_server_object_references_are_refused_as_before() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let cases = [
        (
            "triggers/t",
            json!({"spec": {"broker": "b", "subscriber": {"ref": service_ref("shop")}}}),
            "spec.subscriber.ref",
        ),
        (
            "triggers/d",
            json!({"spec": {"broker": "b", "subscriber": {"uri": "http://127.0.0.1:1/"}, "delivery": {"deadLetterSink": {"ref": service_ref("dead")}}}}),
            "spec.delivery.deadLetterSink.ref",
        ),
        (
            "pingsources/p",
            json!({"spec": {"schedule": "* * * * *", "sink": {"ref": service_ref("shop")}}}),
            "spec.sink.ref",
        ),
        (
            "brokers/c",
            json!({"spec": {"delivery": {"deadLetterSink": {"ref": service_ref("dead")}}}}),
            "spec.delivery.deadLetterSink.ref",
        ),
    ];
    for (resource, body, field) in cases {
        let (status, problem) = server.put(&format!("/v1/namespaces/default/{resource}"), body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field) && detail.contains("Kubernetes"), "{body}: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_server_is_a_clear_status_and_known_addresses_keep_delivering() {
    let api = PrivateApiServer::up();
    install_service_crd(&api.kubeconfig);
    let namespace = "refs-outage";
    kubectl_on(&api.kubeconfig, &["create", "namespace", namespace], None);
    let (known, later) = (Subscriber::start().await, Subscriber::start().await);
    service_on(&api.kubeconfig, namespace, "known", &known.url);
    let server = Server::start_with(&["--kubeconfig", api.kubeconfig.to_str().expect("utf-8 path")]).await;
    server.broker(namespace, "b").await;
    let resolved = format!("/v1/namespaces/{namespace}/triggers/resolved");
    let filter = |ty: &str| json!({"attributes": {"type": ty}});
    let spec = json!({"spec": {"broker": "b", "filter": filter("known"), "subscriber": {"ref": service_ref("known")}}});
    assert_eq!(server.put(&resolved, spec).await.0, StatusCode::CREATED);
    wait_for_status(&server, &resolved, |s| s["conditions"][0]["status"] == "True").await;

    api.kill_api_server();
    // What was resolved keeps delivering from the resolver's cache.
    let typed = |prefix: &str, ty: &str| -> Vec<Value> {
        events(prefix, 5)
            .into_iter()
            .map(|mut event| {
                event["type"] = json!(ty);
                event
            })
            .collect()
    };
    let during = typed("during", "known");
    assert_eq!(server.send_batch(namespace, "b", &during).await, StatusCode::ACCEPTED);
    known.wait_for_ids(&ids(&during), &server).await;
    // What was not says why, and waits.
    let waiting_path = format!("/v1/namespaces/{namespace}/triggers/waiting");
    let spec = json!({"spec": {"broker": "b", "filter": filter("later"), "subscriber": {"ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "later"}}}});
    let (status, body) = server.put(&waiting_path, spec).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let resolution = condition(&body["status"], "SubscriberResolved").clone();
    assert_eq!(resolution["status"], "False", "{body}");
    assert!(!resolution["message"].as_str().unwrap_or_default().is_empty(), "{body}");
    let waiting = typed("waiting", "later");
    assert_eq!(server.send_batch(namespace, "b", &waiting).await, StatusCode::ACCEPTED);

    api.up_again();
    install_service_crd(&api.kubeconfig);
    kubectl_on(&api.kubeconfig, &["create", "namespace", namespace], None);
    service_on(&api.kubeconfig, namespace, "later", &later.url);
    later.wait_for_ids(&ids(&waiting), &server).await;
    let status = wait_for_status(&server, &waiting_path, |s| s["conditions"][0]["status"] == "True").await;
    assert_eq!(status["subscriberUri"], later.url.as_str(), "{status}");
}
