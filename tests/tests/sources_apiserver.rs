//! ApiServerSource end to end against a real kube-apiserver (`deploy/kubernetes/local.sh`):
//! add, update and delete of ConfigMaps in both modes with Knative's exact attributes, label
//! selectors, core `Event` objects, a `kill -9` of Switchyard that sends what changed while it
//! was down and nothing else, a restart of the API server (a relist) that sends nothing again,
//! and refused specs.
//!
//! The shared API server is the one [`kubeconfig`] names; each test works in namespaces of its
//! own (the Switchyard namespace of the same name). The API server restart runs a private API
//! server on a free port, deleted when the test ends.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{
    kube_namespace, kubeconfig, kubectl, try_kubectl_on, PrivateApiServer, Received, Server, Subscriber,
};

const WAIT: Duration = Duration::from_secs(60);

/// The API server URL a kubeconfig names (the events' `source`).
fn api_url(kubeconfig: &Path) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let line = text.lines().find(|line| line.trim_start().starts_with("server:")).expect("server line");
    line.trim_start().trim_start_matches("server:").trim().to_owned()
}

/// A server that watches the shared API server, a broker `b` in `namespace` and a trigger to a
/// fresh subscriber.
async fn server_with_subscriber(namespace: &str) -> (Server, Subscriber) {
    let config = kubeconfig();
    let server = Server::start_with(&["--kubeconfig", config.to_str().unwrap()]).await;
    let subscriber = Subscriber::start().await;
    server.broker(namespace, "b").await;
    server.trigger(namespace, "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    (server, subscriber)
}

fn source_path(namespace: &str, name: &str) -> String {
    format!("/v1/namespaces/{namespace}/apiserversources/{name}")
}

async fn declare(server: &Server, namespace: &str, name: &str, spec: Value) {
    let (status, body) = server
        .put(
            &source_path(namespace, name),
            json!({
                "apiVersion": "sources.knative.dev/v1",
                "kind": "ApiServerSource",
                "metadata": {"name": name, "namespace": namespace},
                "spec": spec,
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

fn broker_sink() -> Value {
    json!({"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}})
}

/// Waits until the source's Ready condition has `reason` (`"Ready"`: is True); returns it.
async fn wait_for_reason(server: &Server, path: &str, reason: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (_, body) = server.get(path).await;
        let condition = &body["status"]["conditions"][0];
        let matches = if reason == "Ready" { condition["status"] == "True" } else { condition["reason"] == reason };
        if matches {
            return body;
        }
        assert!(Instant::now() < deadline, "expected {reason}: {body}; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn config_map(namespace: &str, name: &str, labels: &[(&str, &str)], value: &str) -> String {
    let labels: String = labels.iter().map(|(k, v)| format!("\n    {k}: \"{v}\"")).collect();
    let labels = if labels.is_empty() { String::new() } else { format!("\n  labels:{labels}") };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}{labels}\n\
         data:\n  k: \"{value}\"\n"
    )
}

fn apply(yaml: &str) {
    kubectl(&["apply", "-f", "-"], Some(yaml));
}

/// The events received, as (type, name) in order of arrival.
fn changes(received: &[Received]) -> Vec<(String, String)> {
    received
        .iter()
        .map(|r| (r.attribute("type").unwrap_or_default(), r.attribute("name").unwrap_or_default()))
        .collect()
}

/// Waits until an event of `ty` about `name` arrived; returns it.
async fn wait_for_event(subscriber: &Subscriber, server: &Server, ty: &str, name: &str) -> Received {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = subscriber
            .received()
            .into_iter()
            .find(|r| r.attribute("type").as_deref() == Some(ty) && r.attribute("name").as_deref() == Some(name));
        if let Some(found) = found {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "no {ty} of {name}; got {:?}; log: {}",
            changes(&subscriber.received()),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The first event about the object `name` through the API `api_version`.
async fn wait_for_api_event(subscriber: &Subscriber, server: &Server, name: &str, api_version: &str) -> Received {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = subscriber.received().into_iter().find(|r| {
            r.attribute("name").as_deref() == Some(name) && r.attribute("apiversion").as_deref() == Some(api_version)
        });
        if let Some(found) = found {
            return found;
        }
        assert!(Instant::now() < deadline, "no event of {name} through {api_version}; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One event per distinct id: at least once may repeat an event, always with its id.
fn distinct(received: &[Received]) -> Vec<(String, String)> {
    let mut seen = BTreeSet::new();
    received
        .iter()
        .filter(|r| seen.insert(r.header("ce-id").unwrap_or_default().to_owned()))
        .map(|r| (r.attribute("type").unwrap_or_default(), r.attribute("name").unwrap_or_default()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect()
}

#[tokio::test]
async fn reference_mode_sends_add_update_delete_as_knative_does_and_selects_by_label() {
    let namespace = kube_namespace("asrc-ref");
    apply(&config_map(&namespace, "before", &[("app", "shop")], "0"));
    let (server, subscriber) = server_with_subscriber(&namespace).await;
    declare(
        &server,
        &namespace,
        "cms",
        json!({
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap", "selector": {
                "matchLabels": {"app": "shop"},
                "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["hidden"]}],
            }}],
            "sink": broker_sink(),
        }),
    )
    .await;
    let body = wait_for_reason(&server, &source_path(&namespace, "cms"), "Ready").await;
    assert_eq!(body["spec"]["mode"], "Reference", "Knative's default mode is stored: {body}");

    // Not selected: no label, and a label the expression excludes.
    apply(&config_map(&namespace, "unlabelled", &[], "1"));
    apply(&config_map(&namespace, "hidden", &[("app", "shop"), ("tier", "hidden")], "1"));
    let started = Instant::now();
    apply(&config_map(&namespace, "a", &[("app", "shop")], "1"));
    let created = Instant::now();
    let add = wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.add", "a").await;
    eprintln!(
        "kubectl apply took {:?}; delivered to the subscriber {:?} after it returned",
        created - started,
        add.at.saturating_duration_since(created)
    );
    apply(&config_map(&namespace, "a", &[("app", "shop")], "2"));
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.update", "a").await;
    kubectl(&["delete", "configmap", "a", "-n", &namespace], None);
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.delete", "a").await;

    let received = subscriber.received();
    assert_eq!(
        changes(&received),
        pairs(&[
            ("dev.knative.apiserver.ref.add", "a"),
            ("dev.knative.apiserver.ref.update", "a"),
            ("dev.knative.apiserver.ref.delete", "a")
        ]),
        "neither the object there before the source nor those the selector excludes are sent"
    );
    let source = api_url(&kubeconfig());
    for event in &received {
        assert_eq!(event.attribute("source").as_deref(), Some(source.as_str()));
        assert_eq!(event.attribute("subject").unwrap(), format!("/apis/v1/namespaces/{namespace}/configmaps/a"));
        assert_eq!(event.attribute("kind").as_deref(), Some("ConfigMap"));
        assert_eq!(event.attribute("name").as_deref(), Some("a"));
        assert_eq!(event.attribute("namespace").as_deref(), Some(namespace.as_str()));
        assert_eq!(event.attribute("apiversion").as_deref(), Some("v1"));
        assert_eq!(event.header("content-type"), Some("application/json"));
        assert!(event.attribute("time").is_some());
        let expected = format!(r#"{{"kind":"ConfigMap","namespace":"{namespace}","name":"a","apiVersion":"v1"}}"#);
        assert_eq!(std::str::from_utf8(&event.body).unwrap(), expected);
    }
    let ids: BTreeSet<&str> = received.iter().filter_map(|r| r.header("ce-id")).collect();
    assert_eq!(ids.len(), 3, "each change has its own id");
    server.assert_healthy().await;
}

#[tokio::test]
async fn resource_mode_sends_the_object_and_core_events_work_like_any_resource() {
    let namespace = kube_namespace("asrc-res");
    let (server, subscriber) = server_with_subscriber(&namespace).await;
    declare(
        &server,
        &namespace,
        "objects",
        json!({
            "mode": "Resource",
            "resources": [
                {"apiVersion": "v1", "kind": "ConfigMap"},
                {"apiVersion": "v1", "kind": "Event"},
                {"apiVersion": "events.k8s.io/v1", "kind": "Event"},
            ],
            "sink": broker_sink(),
            "ceOverrides": {"extensions": {"team": "platform"}},
        }),
    )
    .await;
    wait_for_reason(&server, &source_path(&namespace, "objects"), "Ready").await;

    apply(&config_map(&namespace, "c", &[], "one"));
    let add = wait_for_event(&subscriber, &server, "dev.knative.apiserver.resource.add", "c").await;
    let object: Value = serde_json::from_slice(&add.body).unwrap();
    assert_eq!((&object["apiVersion"], &object["kind"]), (&json!("v1"), &json!("ConfigMap")), "{object}");
    assert_eq!(object["metadata"]["name"], "c");
    assert_eq!(object["data"]["k"], "one");
    assert_eq!(add.attribute("team").as_deref(), Some("platform"), "ceOverrides apply");
    apply(&config_map(&namespace, "c", &[], "two"));
    let update = wait_for_event(&subscriber, &server, "dev.knative.apiserver.resource.update", "c").await;
    let object: Value = serde_json::from_slice(&update.body).unwrap();
    assert_eq!(object["data"]["k"], "two");
    kubectl(&["delete", "configmap", "c", "-n", &namespace], None);
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.resource.delete", "c").await;

    let event_yaml = format!(
        "apiVersion: v1\nkind: Event\nmetadata:\n  name: evt\n  namespace: {namespace}\ninvolvedObject:\n  \
         apiVersion: v1\n  kind: ConfigMap\n  name: c\n  namespace: {namespace}\nreason: Tested\nmessage: hello\n\
         type: Normal\n"
    );
    apply(&event_yaml);
    // One object, two APIs (`v1` and `events.k8s.io/v1`): an event from each, in either order.
    let event = wait_for_api_event(&subscriber, &server, "evt", "v1").await;
    assert_eq!(event.attribute("type").as_deref(), Some("dev.knative.apiserver.resource.add"));
    assert_eq!(event.attribute("kind").as_deref(), Some("Event"));
    assert_eq!(event.attribute("subject").unwrap(), format!("/apis/v1/namespaces/{namespace}/events/evt"));
    let object: Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!(
        (&object["kind"], &object["reason"], &object["message"]),
        (&json!("Event"), &json!("Tested"), &json!("hello"))
    );
    // The same Event through the `events.k8s.io/v1` API, in that API's shape (`note` for the
    // core API's `message`).
    let event = wait_for_api_event(&subscriber, &server, "evt", "events.k8s.io/v1").await;
    assert_eq!(event.attribute("type").as_deref(), Some("dev.knative.apiserver.resource.add"));
    assert_eq!(
        event.attribute("subject").unwrap(),
        format!("/apis/events.k8s.io/v1/namespaces/{namespace}/events/evt")
    );
    let object: Value = serde_json::from_slice(&event.body).unwrap();
    assert_eq!((&object["apiVersion"], &object["note"]), (&json!("events.k8s.io/v1"), &json!("hello")), "{object}");
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_restart_sends_what_changed_while_down_and_nothing_else() {
    let namespace = kube_namespace("asrc-restart");
    for name in ["old1", "old2"] {
        apply(&config_map(&namespace, name, &[], "0"));
    }
    let (mut server, subscriber) = server_with_subscriber(&namespace).await;
    declare(
        &server,
        &namespace,
        "cms",
        json!({"resources": [{"apiVersion": "v1", "kind": "ConfigMap"}], "sink": broker_sink()}),
    )
    .await;
    wait_for_reason(&server, &source_path(&namespace, "cms"), "Ready").await;
    for name in ["a", "b", "c"] {
        apply(&config_map(&namespace, name, &[], "1"));
    }
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.add", "c").await;

    server.kill9();
    apply(&config_map(&namespace, "b", &[], "2"));
    kubectl(&["delete", "configmap", "c", "-n", &namespace], None);
    apply(&config_map(&namespace, "d", &[], "1"));
    server.restart().await;
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.update", "b").await;
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.delete", "c").await;
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.add", "d").await;
    // A sentinel: the watch after the relist works, and anything sent before it has arrived.
    apply(&config_map(&namespace, "e", &[], "1"));
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.add", "e").await;

    let mut got = distinct(&subscriber.received());
    got.sort();
    let mut expected = pairs(&[
        ("dev.knative.apiserver.ref.add", "a"),
        ("dev.knative.apiserver.ref.add", "b"),
        ("dev.knative.apiserver.ref.add", "c"),
        ("dev.knative.apiserver.ref.update", "b"),
        ("dev.knative.apiserver.ref.delete", "c"),
        ("dev.knative.apiserver.ref.add", "d"),
        ("dev.knative.apiserver.ref.add", "e"),
    ]);
    expected.sort();
    assert_eq!(got, expected, "only what changed while down is sent again; log: {}", server.log());
    server.assert_healthy().await;
}

/// Waits (2 minutes at most) until events of type `ty` arrived for `count` distinct objects
/// named `burst…`.
async fn wait_for_burst(subscriber: &Subscriber, server: &Server, ty: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let names: BTreeSet<String> = subscriber
            .received()
            .iter()
            .filter(|r| r.attribute("type").as_deref() == Some(ty))
            .filter_map(|r| r.attribute("name"))
            .filter(|n| n.starts_with("burst"))
            .collect();
        if names.len() == count {
            return;
        }
        assert!(Instant::now() < deadline, "{} of {count} {ty} events arrived; log: {}", names.len(), server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the private API server answers `/readyz` again.
async fn wait_api_ready(cluster: &PrivateApiServer) {
    let deadline = Instant::now() + WAIT;
    while !try_kubectl_on(&cluster.kubeconfig, &["get", "--raw", "/readyz"], None).status.success() {
        assert!(Instant::now() < deadline, "the private API server did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A TCP proxy in front of an API server that the test can cut (every connection closed, new
/// ones refused) and restore: Switchyard loses the API server while `kubectl` still reaches it.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_seen) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                let mut cut = cut_seen.clone();
                if *cut.borrow() {
                    continue;
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Proxy { port, cut }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

#[tokio::test]
async fn the_api_server_going_away_and_a_relist_send_only_what_changed() {
    let cluster = PrivateApiServer::up();
    let namespace = "relist";
    cluster.kubectl(&["create", "namespace", namespace], None);
    let before: String = (0..20).map(|i| config_map(namespace, &format!("old{i}"), &[], "0") + "---\n").collect();
    cluster.kubectl(&["apply", "-f", "-"], Some(&before));
    // Switchyard reaches the API server through the proxy, named by the source's own kubeconfig
    // (the server is started without --kubeconfig).
    let upstream = api_url(&cluster.kubeconfig);
    let proxy = Proxy::start(upstream.trim_start_matches("https://").to_owned()).await;
    let proxied_url = format!("https://127.0.0.1:{}", proxy.port);
    let proxied = cluster.kubeconfig.with_file_name("proxied-kubeconfig");
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap().replace(&upstream, &proxied_url);
    std::fs::write(&proxied, text).unwrap();

    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker(namespace, "b").await;
    server.trigger(namespace, "all", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    declare(
        &server,
        namespace,
        "cms",
        json!({
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "kubeconfig": proxied.to_str().unwrap(),
            "sink": broker_sink(),
        }),
    )
    .await;
    let path = source_path(namespace, "cms");
    wait_for_reason(&server, &path, "Ready").await;
    let after: String = (0..5).map(|i| config_map(namespace, &format!("new{i}"), &[], "0") + "---\n").collect();
    cluster.kubectl(&["apply", "-f", "-"], Some(&after));
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.add", "new4").await;
    assert_eq!(subscriber.received()[0].attribute("source").as_deref(), Some(proxied_url.as_str()));

    // Away: the source says so.
    proxy.set_cut(true);
    let down = wait_for_reason(&server, &path, "ApiServerUnavailable").await;
    eprintln!("while the API server is away: {}", down["status"]["conditions"][0]);
    // Meanwhile, changes; then the API server restarts, so its watch cache starts after them and
    // the watch cannot resume (410 Gone): the watcher lists again.
    cluster.kubectl(&["apply", "-f", "-"], Some(&config_map(namespace, "old0", &[], "changed")));
    cluster.kubectl(&["delete", "configmap", "old1", "-n", namespace], None);
    cluster.kubectl(&["apply", "-f", "-"], Some(&config_map(namespace, "mid", &[], "0")));
    let args = cluster.kill_api_server();
    cluster.restart_api_server(&args);
    wait_api_ready(&cluster).await;
    proxy.set_cut(false);
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.update", "old0").await;
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.delete", "old1").await;
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.add", "mid").await;
    wait_for_reason(&server, &path, "Ready").await;
    let relists = server.metric("switchyard_source_apiserver_relists_total", &[("kind", "ApiServerSource")]).await;
    assert!(relists.is_some_and(|n| n >= 1.0), "the watch was listed again: {relists:?}");
    cluster.kubectl(&["apply", "-f", "-"], Some(&config_map(namespace, "sentinel", &[], "0")));
    wait_for_event(&subscriber, &server, "dev.knative.apiserver.ref.add", "sentinel").await;

    let mut got = distinct(&subscriber.received());
    got.sort();
    let mut expected = pairs(&[
        ("dev.knative.apiserver.ref.update", "old0"),
        ("dev.knative.apiserver.ref.delete", "old1"),
        ("dev.knative.apiserver.ref.add", "mid"),
        ("dev.knative.apiserver.ref.add", "sentinel"),
    ]);
    expected.extend((0..5).map(|i| ("dev.knative.apiserver.ref.add".to_owned(), format!("new{i}"))));
    expected.sort();
    assert_eq!(got, expected, "the relist sends what changed and nothing else; log: {}", server.log());
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_burst_of_configmaps_arrives_in_full() {
    const COUNT: usize = 1000;
    let namespace = kube_namespace("asrc-burst");
    let (server, subscriber) = server_with_subscriber(&namespace).await;
    declare(
        &server,
        &namespace,
        "cms",
        json!({"resources": [{"apiVersion": "v1", "kind": "ConfigMap"}], "sink": broker_sink()}),
    )
    .await;
    wait_for_reason(&server, &source_path(&namespace, "cms"), "Ready").await;
    let yaml: String = (0..COUNT).map(|i| config_map(&namespace, &format!("burst{i}"), &[], "x") + "---\n").collect();
    let started = Instant::now();
    apply(&yaml);
    let applied = started.elapsed();
    wait_for_burst(&subscriber, &server, "dev.knative.apiserver.ref.add", COUNT).await;
    let elapsed = started.elapsed();
    eprintln!(
        "{COUNT} ConfigMaps: kubectl apply took {applied:?}, all delivered after {elapsed:?} \
         ({:.0} events/s end to end)",
        COUNT as f64 / elapsed.as_secs_f64()
    );

    // Deleted while Switchyard is down: the list after the restart finds them gone, without
    // kubectl's pace in the way.
    let mut server = server;
    server.kill9();
    kubectl(&["delete", "--raw", &format!("/api/v1/namespaces/{namespace}/configmaps")], None);
    let restarted = Instant::now();
    server.restart().await;
    wait_for_burst(&subscriber, &server, "dev.knative.apiserver.ref.delete", COUNT).await;
    let elapsed = restarted.elapsed();
    eprintln!(
        "{COUNT} deletions found by the list after a restart: delivered {elapsed:?} after the restart began \
         ({:.0} events/s)",
        COUNT as f64 / elapsed.as_secs_f64()
    );
}

#[tokio::test]
async fn bad_specs_are_refused_and_a_server_without_kubernetes_says_why() {
    let server = Server::start().await;
    let cases = [
        (
            json!({"resources": [{"apiVersion": "v1", "kind": "ConfigMap"}], "mode": "Full", "sink": broker_sink()}),
            "spec.mode",
        ),
        (json!({"resources": [{"apiVersion": "v1"}], "sink": broker_sink()}), "spec.resources[0].kind"),
        (json!({"resources": [], "sink": broker_sink()}), "spec.resources"),
        (
            json!({
                "resources": [{"apiVersion": "v1", "kind": "Pod", "selector": {
                    "matchExpressions": [{"key": "a", "operator": "Near"}],
                }}],
                "sink": broker_sink(),
            }),
            "spec.resources[0].selector.matchExpressions[0].operator",
        ),
        (json!({"resources": [{"apiVersion": "v1", "kind": "Pod"}]}), "spec.sink"),
    ];
    for (spec, field) in cases {
        let (status, problem) = server.put(&source_path("default", "bad"), json!({"spec": spec})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{spec}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{spec}: {detail}");
    }
    let (status, _) = server.get(&source_path("default", "bad")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Accepted (the API server may come later), and not ready while the server has none.
    let spec = json!({
        "resources": [{"apiVersion": "v1", "kind": "ConfigMap"}],
        "serviceAccountName": "watcher",
        "sink": broker_sink(),
    });
    declare(&server, "default", "nowhere", spec).await;
    let body = wait_for_reason(&server, &source_path("default", "nowhere"), "KubernetesNotConfigured").await;
    assert_eq!(body["spec"]["mode"], "Reference");
    assert_eq!(body["spec"]["serviceAccountName"], "watcher");
    assert_eq!(body["kind"], "ApiServerSource");
    assert_eq!(body["apiVersion"], "sources.knative.dev/v1");
    let (status, list) = server.get("/v1/namespaces/default/apiserversources").await;
    assert_eq!((status, list["items"].as_array().map(Vec::len)), (StatusCode::OK, Some(1)), "{list}");
}

#[tokio::test]
async fn a_namespace_selector_follows_the_namespaces_it_selects() {
    let home = kube_namespace("asrc-home");
    let (server, subscriber) = server_with_subscriber(&home).await;
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    declare(
        &server,
        &home,
        "teams",
        json!({
            "resources": [{"apiVersion": "v1", "kind": "ConfigMap"}],
            "namespaceSelector": {"matchLabels": {"switchyard-test": run}},
            "sink": broker_sink(),
        }),
    )
    .await;
    wait_for_reason(&server, &source_path(&home, "teams"), "Ready").await;
    apply(&config_map(&home, "at-home", &[], "0"));

    // A namespace that starts matching: what it holds then is its baseline; what comes later is sent.
    let first = kube_namespace("asrc-team");
    apply(&config_map(&first, "there-before", &[], "0"));
    kubectl(&["label", "namespace", &first, &format!("switchyard-test={run}")], None);
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0;
    // The new namespace's stream starts after the label is seen: keep creating until one is sent.
    loop {
        apply(&config_map(&first, &format!("later{attempt}"), &[], "0"));
        let sent = subscriber.received().iter().any(|r| r.attribute("namespace").as_deref() == Some(first.as_str()));
        if sent {
            break;
        }
        assert!(Instant::now() < deadline, "nothing from {first}; log: {}", server.log());
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let received = subscriber.received();
    for event in &received {
        assert_eq!(event.attribute("namespace").as_deref(), Some(first.as_str()), "only selected namespaces");
        assert!(event.attribute("name").unwrap().starts_with("later"), "the baseline is not sent");
        assert_eq!(event.attribute("type").as_deref(), Some("dev.knative.apiserver.ref.add"));
    }
}
