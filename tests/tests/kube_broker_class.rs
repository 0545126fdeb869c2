//! Switchyard as a Knative broker class, against a real kube-apiserver with Knative's own CRDs:
//! Brokers whose `eventing.knative.dev/broker.class` names the class a server is given (each
//! test its own, so that the servers of tests running at once never reconcile each other's)
//! are declared in Switchyard with their Triggers, get Knative's status back, take events at
//! their address and deliver them; other classes are left alone; the API server going away and
//! back is survived; and the same YAML through `switchyard apply -f` behaves the same.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use switchyard_tests::{binary, kube_namespace, kubeconfig, kubectl, kubectl_on, PrivateApiServer, Server, Subscriber};

/// How long reconciliation may take (a restarted node waits for its predecessor's lease, 15 s).
const RECONCILED: Duration = Duration::from_secs(45);

/// A broker class of this test's own.
fn fresh_class() -> String {
    format!("Switchyard-{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// A server reconciling `class` on the API server of `kubeconfig`.
async fn start(kubeconfig: &Path, class: &str) -> Server {
    let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
    Server::start_with_env(&[("SWITCHYARD_KUBECONFIG", kubeconfig), ("SWITCHYARD_BROKER_CLASS", class)]).await
}

/// A Broker of `class` named `broker` and a Trigger `trigger` on it, for events of `ty`, to
/// `subscriber`: the YAML a Knative user writes.
fn broker_and_trigger(namespace: &str, class: &str, broker: &str, trigger: &str, ty: &str, subscriber: &str) -> String {
    format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: {broker}
  namespace: {namespace}
  annotations:
    eventing.knative.dev/broker.class: {class}
spec:
  delivery:
    retry: 2
    backoffPolicy: exponential
    backoffDelay: PT0.2S
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: {trigger}
  namespace: {namespace}
spec:
  broker: {broker}
  filter:
    attributes:
      type: {ty}
  subscriber:
    uri: {subscriber}
"#
    )
}

/// The object as the API server holds it.
fn get_object(config: &Path, resource: &str, namespace: &str, name: &str) -> Value {
    let json = kubectl_on(config, &["get", resource, name, "-n", namespace, "-o", "json"], None);
    serde_json::from_str(&json).expect("kubectl get -o json")
}

/// The status of condition `ty` in a Kubernetes object.
fn condition<'a>(object: &'a Value, ty: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == ty)
}

/// Waits until `check` gives something (every 200 ms, at most `timeout`), or fails with what
/// it was waiting for and the server's log.
async fn wait_until<T>(what: &str, server: &Server, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the Kubernetes object is Ready with its current generation observed; returns it.
async fn wait_ready(config: &Path, server: &Server, resource: &str, namespace: &str, name: &str) -> Value {
    wait_until(&format!("{resource} {namespace}/{name} to be Ready"), server, RECONCILED, || {
        let object = get_object(config, resource, namespace, name);
        let ready = condition(&object, "Ready").is_some_and(|c| c["status"] == "True");
        let observed = object["status"]["observedGeneration"] == object["metadata"]["generation"];
        (ready && observed).then_some(object)
    })
    .await
}

/// Waits until a REST GET of `path` answers `expected`.
async fn wait_rest(server: &Server, path: &str, expected: StatusCode) -> Value {
    let deadline = Instant::now() + RECONCILED;
    loop {
        let (status, body) = server.get(path).await;
        if status == expected {
            return body;
        }
        assert!(Instant::now() < deadline, "GET {path} answered {status}, not {expected}; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// POSTs a binary-mode CloudEvent to `url`; returns the status.
async fn post_event(url: &str, id: &str, ty: &str) -> StatusCode {
    reqwest::Client::new()
        .post(url)
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", ty)
        .header("ce-source", "/kube-broker-class")
        .header("content-type", "application/json")
        .body(r#"{"hello":"knative"}"#)
        .send()
        .await
        .expect("post event")
        .status()
}

/// Waits until the subscriber has event `id`.
async fn wait_delivered(subscriber: &Subscriber, server: &Server, id: &str) {
    wait_until(&format!("event {id} to be delivered"), server, RECONCILED, || {
        subscriber.ids().contains(id).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_of_the_class_is_declared_addressed_and_delivers_to_its_triggers() {
    let config = kubeconfig();
    let class = fresh_class();
    let namespace = kube_namespace("broker-class");
    let subscriber = Subscriber::start().await;
    let server = start(&config, &class).await;
    let other_class = format!(
        r#"apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: other
  namespace: {namespace}
  annotations:
    eventing.knative.dev/broker.class: MTChannelBasedBroker
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: other-trigger
  namespace: {namespace}
spec:
  broker: other
  subscriber:
    uri: {}
"#,
        subscriber.url
    );
    let yaml = broker_and_trigger(&namespace, &class, "default", "orders", "order.created", &subscriber.url);
    kubectl(&["apply", "-f", "-"], Some(&format!("{yaml}---\n{other_class}")));

    // The broker: declared in Switchyard, addressed at this node's ingest, Ready.
    let broker = wait_ready(&config, &server, "brokers.eventing.knative.dev", &namespace, "default").await;
    let address = broker["status"]["address"]["url"].as_str().expect("status.address.url").to_owned();
    assert_eq!(address, format!("{}/{namespace}/default", server.url));
    assert_eq!(broker["status"]["addresses"][0]["url"], address.as_str());
    for ty in ["Addressable", "IngressReady", "FilterReady", "EventPoliciesReady", "DeadLetterSinkResolved"] {
        assert_eq!(condition(&broker, ty).map(|c| &c["status"]), Some(&Value::from("True")), "{ty} in {broker}");
    }
    let declared = wait_rest(&server, &format!("/v1/namespaces/{namespace}/brokers/default"), StatusCode::OK).await;
    assert_eq!(declared["spec"]["delivery"]["retry"], 2, "the broker's spec is declared: {declared}");

    // The trigger: Ready with Knative's conditions and its subscriber's URI.
    let trigger = wait_ready(&config, &server, "triggers.eventing.knative.dev", &namespace, "orders").await;
    assert_eq!(trigger["status"]["subscriberUri"], subscriber.url.as_str());
    for ty in ["BrokerReady", "SubscriberResolved", "SubscriptionReady", "DependencyReady"] {
        assert_eq!(condition(&trigger, ty).map(|c| &c["status"]), Some(&Value::from("True")), "{ty} in {trigger}");
    }

    // Ingest at the broker's address reaches the trigger's subscriber, filtered.
    assert_eq!(post_event(&address, "created-1", "order.created").await, StatusCode::ACCEPTED);
    wait_delivered(&subscriber, &server, "created-1").await;
    let delivered = subscriber.received();
    let event = delivered.iter().find(|r| r.header("ce-id") == Some("created-1")).expect("delivered");
    assert_eq!(event.header("ce-type"), Some("order.created"));
    assert_eq!(event.body.as_ref(), br#"{"hello":"knative"}"#);

    // A new filter takes effect, and the trigger's new generation is observed.
    let generation = trigger["metadata"]["generation"].as_i64().expect("generation");
    let updated = broker_and_trigger(&namespace, &class, "default", "orders", "order.shipped", &subscriber.url);
    kubectl(&["apply", "-f", "-"], Some(&updated));
    wait_until("the new filter to be declared", &server, RECONCILED, || {
        let object = get_object(&config, "triggers.eventing.knative.dev", &namespace, "orders");
        let observed = object["status"]["observedGeneration"].as_i64() == Some(generation + 1);
        let ready = condition(&object, "Ready").is_some_and(|c| c["status"] == "True");
        (observed && ready).then_some(())
    })
    .await;
    let (_, declared) = server.get(&format!("/v1/namespaces/{namespace}/triggers/orders")).await;
    assert_eq!(declared["spec"]["filter"]["attributes"]["type"], "order.shipped", "{declared}");
    assert_eq!(post_event(&address, "created-2", "order.created").await, StatusCode::ACCEPTED);
    assert_eq!(post_event(&address, "shipped-1", "order.shipped").await, StatusCode::ACCEPTED);
    wait_delivered(&subscriber, &server, "shipped-1").await;
    server.wait_until_drained(&namespace, "orders", RECONCILED).await;
    assert!(!subscriber.ids().contains("created-2"), "the old filter still matched: {:?}", subscriber.ids());

    // The other class's objects: no status written, nothing declared in Switchyard.
    let other = get_object(&config, "brokers.eventing.knative.dev", &namespace, "other");
    assert!(other["status"].is_null() || other["status"] == serde_json::json!({}), "status written: {other}");
    let other_trigger = get_object(&config, "triggers.eventing.knative.dev", &namespace, "other-trigger");
    assert!(other_trigger["status"].is_null() || other_trigger["status"] == serde_json::json!({}), "{other_trigger}");
    let (status, _) = server.get(&format!("/v1/namespaces/{namespace}/brokers/other")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another class's broker was declared");
    let (status, _) = server.get(&format!("/v1/namespaces/{namespace}/triggers/other-trigger")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another class's trigger was declared");

    // Deleting in Kubernetes deletes in Switchyard.
    kubectl(&["delete", "triggers.eventing.knative.dev", "orders", "-n", &namespace], None);
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/triggers/orders"), StatusCode::NOT_FOUND).await;
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/brokers/default"), StatusCode::OK).await;
    kubectl(&["delete", "brokers.eventing.knative.dev", "default", "-n", &namespace], None);
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/brokers/default"), StatusCode::NOT_FOUND).await;
    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_leaving_the_class_is_deleted_and_rest_declarations_are_left_alone() {
    let config = kubeconfig();
    let class = fresh_class();
    let namespace = kube_namespace("broker-class-owner");
    let subscriber = Subscriber::start().await;
    let server = start(&config, &class).await;
    // Declared over REST first: the Kubernetes Broker of the same name must not take it over.
    let (status, _) = server.put(&format!("/v1/namespaces/{namespace}/brokers/rest"), serde_json::json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    let rest = broker_and_trigger(&namespace, &class, "rest", "rest-trigger", "t", &subscriber.url);
    let moving = broker_and_trigger(&namespace, &class, "moving", "moving-trigger", "t", &subscriber.url);
    kubectl(&["apply", "-f", "-"], Some(&format!("{rest}---\n{moving}")));
    wait_ready(&config, &server, "brokers.eventing.knative.dev", &namespace, "moving").await;
    wait_ready(&config, &server, "triggers.eventing.knative.dev", &namespace, "moving-trigger").await;
    let taken = wait_until("the REST broker's name to be reported taken", &server, RECONCILED, || {
        let object = get_object(&config, "brokers.eventing.knative.dev", &namespace, "rest");
        condition(&object, "Ready").filter(|c| c["reason"] == "DeclaredElsewhere").cloned()
    })
    .await;
    assert_eq!(taken["status"], "False", "{taken}");
    let (_, declared) = server.get(&format!("/v1/namespaces/{namespace}/brokers/rest")).await;
    assert!(declared["metadata"]["annotations"].get("switchyard.dev/managed-by").is_none(), "{declared}");

    // Another class now: its broker and triggers leave Switchyard; its status is not touched again.
    let moved = moving.replace(&format!("broker.class: {class}"), "broker.class: MTChannelBasedBroker");
    kubectl(&["apply", "-f", "-"], Some(&moved));
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/triggers/moving-trigger"), StatusCode::NOT_FOUND).await;
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/brokers/moving"), StatusCode::NOT_FOUND).await;
    // Deleting the Kubernetes object never deletes the REST declaration of the same name.
    kubectl(&["delete", "brokers.eventing.knative.dev", "rest", "-n", &namespace], None);
    kubectl(&["delete", "triggers.eventing.knative.dev", "rest-trigger", "-n", &namespace], None);
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/triggers/rest-trigger"), StatusCode::NOT_FOUND).await;
    let (status, _) = server.get(&format!("/v1/namespaces/{namespace}/brokers/rest")).await;
    assert_eq!(status, StatusCode::OK, "the REST broker was deleted");
    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_deleted_while_switchyard_was_down_are_removed_when_it_starts() {
    let config = kubeconfig();
    let class = fresh_class();
    let namespace = kube_namespace("broker-class-restart");
    let subscriber = Subscriber::start().await;
    let mut server = start(&config, &class).await;
    let yaml = broker_and_trigger(&namespace, &class, "default", "kept", "t", &subscriber.url);
    let gone = broker_and_trigger(&namespace, &class, "default", "gone", "t", &subscriber.url);
    kubectl(&["apply", "-f", "-"], Some(&format!("{yaml}---\n{gone}")));
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/triggers/gone"), StatusCode::OK).await;
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/triggers/kept"), StatusCode::OK).await;
    server.kill9();
    kubectl(&["delete", "triggers.eventing.knative.dev", "gone", "-n", &namespace], None);
    server.restart().await;
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/triggers/gone"), StatusCode::NOT_FOUND).await;
    let (status, _) = server.get(&format!("/v1/namespaces/{namespace}/triggers/kept")).await;
    assert_eq!(status, StatusCode::OK);
    let broker = wait_ready(&config, &server, "brokers.eventing.knative.dev", &namespace, "default").await;
    let address = broker["status"]["address"]["url"].as_str().expect("address").to_owned();
    assert_eq!(post_event(&address, "after-restart", "t").await, StatusCode::ACCEPTED);
    wait_delivered(&subscriber, &server, "after-restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_going_away_and_back_is_survived() {
    let api = PrivateApiServer::up();
    let config = api.kubeconfig.clone();
    let class = fresh_class();
    let namespace = "outage";
    let subscriber = Subscriber::start().await;
    let server = start(&config, &class).await;
    kubectl_on(&config, &["create", "namespace", namespace], None);
    let yaml = broker_and_trigger(namespace, &class, "default", "orders", "order.created", &subscriber.url);
    kubectl_on(&config, &["apply", "-f", "-"], Some(&yaml));
    let broker = wait_ready(&config, &server, "brokers.eventing.knative.dev", namespace, "default").await;
    // A trigger receives the events that arrive after it is declared.
    wait_ready(&config, &server, "triggers.eventing.knative.dev", namespace, "orders").await;
    let address = broker["status"]["address"]["url"].as_str().expect("address").to_owned();
    assert_eq!(post_event(&address, "before", "order.created").await, StatusCode::ACCEPTED);
    wait_delivered(&subscriber, &server, "before").await;
    assert_eq!(server.metric("switchyard_kubernetes_connected", &[]).await, Some(1.0));

    // Gone: the metric and the log say so, and what is declared keeps delivering.
    api.kill_api_server();
    let deadline = Instant::now() + RECONCILED;
    while server.metric("switchyard_kubernetes_connected", &[]).await != Some(0.0) {
        assert!(Instant::now() < deadline, "still connected; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(server.log().contains("cannot watch knative brokers on the kubernetes API server"), "{}", server.log());
    assert!(server.metric("switchyard_kubernetes_watch_errors_total", &[("resource", "brokers")]).await >= Some(1.0));
    assert_eq!(post_event(&address, "during", "order.created").await, StatusCode::ACCEPTED);
    wait_delivered(&subscriber, &server, "during").await;
    let (status, _) = server.get(&format!("/v1/namespaces/{namespace}/triggers/orders")).await;
    assert_eq!(status, StatusCode::OK, "a declaration was dropped while the API server was away");

    // Back (with an empty etcd): reconciliation resumes with what it now holds.
    api.up_again();
    kubectl_on(&config, &["create", "namespace", namespace], None);
    let renamed = broker_and_trigger(namespace, &class, "default", "orders-again", "order.created", &subscriber.url);
    kubectl_on(&config, &["apply", "-f", "-"], Some(&renamed));
    wait_ready(&config, &server, "triggers.eventing.knative.dev", namespace, "orders-again").await;
    wait_ready(&config, &server, "brokers.eventing.knative.dev", namespace, "default").await;
    // `orders` is not in the new etcd: gone from Switchyard too.
    wait_rest(&server, &format!("/v1/namespaces/{namespace}/triggers/orders"), StatusCode::NOT_FOUND).await;
    assert_eq!(server.metric("switchyard_kubernetes_connected", &[]).await, Some(1.0));
    assert!(server.log().contains("kubernetes API server reachable again"), "{}", server.log());
    assert_eq!(post_event(&address, "after", "order.created").await, StatusCode::ACCEPTED);
    wait_delivered(&subscriber, &server, "after").await;
    server.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_yaml_through_switchyard_apply_behaves_the_same() {
    let config = kubeconfig();
    let class = fresh_class();
    let namespace = kube_namespace("broker-class-apply");
    let through_kubernetes = Subscriber::start().await;
    let through_apply = Subscriber::start().await;
    let reconciling = start(&config, &class).await;
    let plain = Server::start().await;
    let yaml_for = |subscriber: &Subscriber| {
        broker_and_trigger(&namespace, &class, "default", "orders", "order.created", &subscriber.url)
    };
    kubectl(&["apply", "-f", "-"], Some(&yaml_for(&through_kubernetes)));
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), yaml_for(&through_apply)).expect("write yaml");
    let output = Command::new(binary())
        .args(["apply", "-f", file.path().to_str().expect("utf-8 path")])
        .env("SWITCHYARD_SERVER", &plain.url)
        .output()
        .expect("run switchyard apply");
    assert!(output.status.success(), "switchyard apply: {}", String::from_utf8_lossy(&output.stderr));

    wait_ready(&config, &reconciling, "triggers.eventing.knative.dev", &namespace, "orders").await;
    let broker = wait_ready(&config, &reconciling, "brokers.eventing.knative.dev", &namespace, "default").await;
    let addresses = [
        broker["status"]["address"]["url"].as_str().expect("address").to_owned(),
        format!("{}/{namespace}/default", plain.url),
    ];
    for address in &addresses {
        assert_eq!(post_event(address, "skipped", "order.deleted").await, StatusCode::ACCEPTED);
        assert_eq!(post_event(address, "matched", "order.created").await, StatusCode::ACCEPTED);
    }
    for (subscriber, server) in [(&through_kubernetes, &reconciling), (&through_apply, &plain)] {
        wait_delivered(subscriber, server, "matched").await;
        server.wait_until_drained(&namespace, "orders", RECONCILED).await;
        assert_eq!(subscriber.ids(), ["matched".to_owned()].into(), "what one path delivered");
    }
    let [a, b] = [&through_kubernetes, &through_apply].map(|s| {
        let received = s.received();
        let event = received.first().expect("one event").clone();
        ["ce-type", "ce-source", "ce-specversion"].map(|h| event.header(h).map(str::to_owned))
    });
    assert_eq!(a, b, "the two paths delivered different events");
    // Declared the same: the specs match, the subscriber aside.
    for (kind, name) in [("brokers", "default"), ("triggers", "orders")] {
        let path = format!("/v1/namespaces/{namespace}/{kind}/{name}");
        let (_, mut from_kubernetes) = reconciling.get(&path).await;
        let (_, mut from_apply) = plain.get(&path).await;
        for spec in [&mut from_kubernetes["spec"], &mut from_apply["spec"]] {
            if let Some(subscriber) = spec.get_mut("subscriber") {
                *subscriber = Value::Null;
            }
        }
        assert_eq!(from_kubernetes["spec"], from_apply["spec"], "{kind}/{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_of_a_class_reconciles_and_another_takes_over_when_it_dies() {
    let config = kubeconfig();
    let class = fresh_class();
    let namespace = kube_namespace("broker-class-lease");
    let subscriber = Subscriber::start().await;
    let mut nodes = [start(&config, &class).await, start(&config, &class).await];
    let yaml = broker_and_trigger(&namespace, &class, "default", "orders", "order.created", &subscriber.url);
    kubectl(&["apply", "-f", "-"], Some(&yaml));
    let broker = wait_ready(&config, &nodes[0], "brokers.eventing.knative.dev", &namespace, "default").await;
    let address = broker["status"]["address"]["url"].as_str().expect("address").to_owned();
    let leader =
        nodes.iter().position(|node| address.starts_with(&format!("{}/", node.url))).expect("a node's address");
    let follower = 1 - leader;
    // The follower neither declares nor writes: the status stays the leader's.
    let version = broker["metadata"]["resourceVersion"].clone();
    // (A quiet window: a few of the reconciler's 2-second passes.)
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _) = nodes[follower].get(&format!("/v1/namespaces/{namespace}/brokers/default")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "the follower reconciled too");
    let leading = "switchyard_kubernetes_broker_class_leader";
    assert_eq!(nodes[leader].metric(leading, &[]).await, Some(1.0));
    assert_eq!(nodes[follower].metric(leading, &[]).await, Some(0.0));
    let again = get_object(&config, "brokers.eventing.knative.dev", &namespace, "default");
    assert_eq!(again["metadata"]["resourceVersion"], version, "the status changed without a change: {again}");

    // The leader dies: the follower takes the lease once it expires, and reconciles.
    nodes[leader].kill9();
    let follower_url = format!("{}/{namespace}/default", nodes[follower].url);
    let taken = wait_until("the follower to take over", &nodes[follower], RECONCILED, || {
        let object = get_object(&config, "brokers.eventing.knative.dev", &namespace, "default");
        let ready = condition(&object, "Ready").is_some_and(|c| c["status"] == "True");
        (ready && object["status"]["address"]["url"] == follower_url.as_str()).then_some(object)
    })
    .await;
    let address = taken["status"]["address"]["url"].as_str().expect("address");
    wait_ready(&config, &nodes[follower], "triggers.eventing.knative.dev", &namespace, "orders").await;
    assert_eq!(post_event(address, "after-takeover", "order.created").await, StatusCode::ACCEPTED);
    wait_delivered(&subscriber, &nodes[follower], "after-takeover").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_dead_letter_sink_shows_under_its_own_knative_condition() {
    let config = kubeconfig();
    let class = fresh_class();
    let namespace = kube_namespace("class-dls");
    let subscriber = Subscriber::start().await;
    let server = start(&config, &class).await;
    let yaml = broker_and_trigger(&namespace, &class, "default", "orders", "order.created", &subscriber.url)
        + "  delivery:\n    deadLetterSink:\n      ref: {apiVersion: example.dev/v1, kind: Sink, name: nowhere}\n";
    kubectl(&["apply", "-f", "-"], Some(&yaml));
    let trigger = wait_until("the trigger's DeadLetterSinkResolved=False", &server, RECONCILED, || {
        let object = get_object(&config, "triggers.eventing.knative.dev", &namespace, "orders");
        condition(&object, "DeadLetterSinkResolved").is_some_and(|c| c["status"] == "False").then_some(object)
    })
    .await;
    let dead_letter = condition(&trigger, "DeadLetterSinkResolved").expect("DeadLetterSinkResolved");
    assert_eq!(dead_letter["reason"], "Unable to get the dead letter sink's URI", "{trigger}");
    assert!(dead_letter["message"].as_str().is_some_and(|m| m.contains("Sink")), "{trigger}");
    let ready = condition(&trigger, "Ready").expect("Ready");
    assert_eq!((&ready["status"], &ready["reason"]), (&dead_letter["status"], &dead_letter["reason"]), "{trigger}");
    for met in ["SubscriberResolved", "SubscriptionReady", "BrokerReady"] {
        assert_eq!(condition(&trigger, met).map(|c| &c["status"]), Some(&Value::from("True")), "{met}: {trigger}");
    }
}
