//! Access control against the real binary: a non-loopback listener without authentication
//! refuses to start; with tokens configured every route but health, readiness, the OpenAPI
//! document and webhooks needs one, and each role does only what it may; the browser guards
//! (Host, Origin, JSON-only admin bodies) hold with authentication off; changes are audited.

use std::process::Command;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use switchyard_tests::{binary, metric_value, Server, Subscriber};

const ADMIN: &str = "sy_admin-token";
const TEAM_ADMIN: &str = "sy_team-admin-token";
const READER: &str = "sy_team-reader-token";
const INGEST: &str = "sy_orders-ingest-token";

fn hash(token: &str) -> String {
    let output = Command::new(binary())
        .args(["token", "hash"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().expect("stdin").write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run switchyard token hash");
    assert!(output.status.success());
    String::from_utf8(output.stdout).expect("utf-8").trim().to_owned()
}

/// The token lines of the four roles, as `SWITCHYARD_AUTH_TOKENS` takes them.
fn token_lines() -> String {
    [
        format!("name=ops sha256={} role=admin", hash(ADMIN)),
        format!("name=team-lead sha256={} role=namespace-admin namespace=team", hash(TEAM_ADMIN)),
        format!("name=dashboard sha256={} role=namespace-reader namespace=team", hash(READER)),
        format!("name=checkout sha256={} role=ingest namespace=team broker=orders", hash(INGEST)),
    ]
    .join("\n")
}

async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let challenge = response.headers().get("www-authenticate").is_some();
    let mut body: Value = response.json().await.unwrap_or(Value::Null);
    if status == StatusCode::UNAUTHORIZED {
        assert!(challenge, "a 401 says how to authenticate: {body}");
    }
    if let Some(object) = body.as_object_mut() {
        object.insert("_status".to_owned(), json!(status.as_u16()));
    }
    (status, body)
}

async fn send_event(server: &Server, broker: &str, token: Option<&str>, id: &str) -> StatusCode {
    send_to(server, "team", broker, token, id).await
}

async fn send_to(server: &Server, namespace: &str, broker: &str, token: Option<&str>, id: &str) -> StatusCode {
    send_typed(server, namespace, broker, token, "order.created", id).await.status()
}

/// One binary-mode event of type `ty` to `namespace/broker`.
async fn send_typed(
    server: &Server,
    namespace: &str,
    broker: &str,
    token: Option<&str>,
    ty: &str,
    id: &str,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/{namespace}/{broker}", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", ty)
        .header("ce-source", "/checkout")
        .header("content-type", "application/json")
        .body("{}");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("send")
}

/// The dead letters of trigger `namespace/trigger`, once there are some (read as admin).
async fn dead_letters(server: &Server, namespace: &str, trigger: &str) -> Value {
    let path = format!("/v1/namespaces/{namespace}/triggers/{trigger}/deadletters");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, dead) = call(server, Method::GET, &path, Some(ADMIN), None).await;
        if dead["items"].as_array().is_some_and(|items| !items.is_empty()) {
            return dead;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event reached the dead letters of {namespace}/{trigger}: {dead}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `config print` says, failing, for a listener `flag` at `address` with no authentication
/// configured: it resolves exactly what `serve` would start with, without listening.
fn refused_without_authentication(flag: &str, address: &str) -> String {
    let refused = Command::new(binary())
        .args(["config", "print", flag, address])
        .env_remove("SWITCHYARD_AUTH_TOKENS")
        .env_remove("SWITCHYARD_ALLOW_UNAUTHENTICATED")
        .output()
        .expect("run switchyard");
    assert!(!refused.status.success(), "{flag} {address} was accepted without authentication");
    String::from_utf8_lossy(&refused.stderr).into_owned()
}

#[test]
fn a_non_loopback_listener_without_tokens_refuses_to_start_and_says_how_to_fix_it() {
    let message = refused_without_authentication("--listen", "0.0.0.0:8080");
    assert!(
        message.contains("refusing to listen on 0.0.0.0:8080 without authentication")
            && message.contains("switchyard token new")
            && message.contains("SWITCHYARD_ALLOW_UNAUTHENTICATED"),
        "{message}"
    );
    let serve = Command::new(binary())
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tempfile::tempdir().expect("tempdir").path())
        .env_remove("SWITCHYARD_AUTH_TOKENS")
        .env_remove("SWITCHYARD_ALLOW_UNAUTHENTICATED")
        .output()
        .expect("run switchyard serve");
    assert!(!serve.status.success(), "serve started on every interface without authentication");
    assert!(String::from_utf8_lossy(&serve.stderr).contains("refusing to listen"));

    for consent in [vec!["--allow-unauthenticated"], vec![]] {
        let mut command = Command::new(binary());
        command.args(["config", "print", "--listen", "0.0.0.0:8080"]).args(&consent);
        if consent.is_empty() {
            command.env("SWITCHYARD_AUTH_TOKENS", format!("name=ops sha256={} role=admin", hash(ADMIN)));
        }
        let output = command.output().expect("run switchyard");
        assert!(output.status.success(), "{consent:?}: {}", String::from_utf8_lossy(&output.stderr));
        let printed = String::from_utf8_lossy(&output.stdout);
        assert!(!printed.contains(ADMIN), "config print shows a token: {printed}");
    }
}

/// A server with the four tokens; with authentication on, loopback subscribers are refused
/// unless allowed, so namespace `team`'s are.
async fn authenticated_server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, "[outbound.namespaces.team]\nallow = [\"127.0.0.1/32\"]\n").expect("write config");
    let server = Server::start_with_args_and_env(
        &["--config", &config.display().to_string()],
        &[("SWITCHYARD_AUTH_TOKENS", &token_lines())],
    )
    .await;
    (server, dir)
}

#[tokio::test]
async fn tokens_are_required_and_each_role_does_only_what_it_may() {
    let (server, _config) = authenticated_server().await;
    let subscriber = Subscriber::start().await;
    let broker = |name: &str| format!("/v1/namespaces/team/brokers/{name}");
    let trigger_path = "/v1/namespaces/team/triggers/t";
    let trigger = json!({"spec": {"broker": "orders", "subscriber": {"uri": subscriber.url}}});

    // Open: the probes, the metrics (not protected by default), the API's description.
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let status = reqwest::get(format!("{}{path}", server.url)).await.expect("get").status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    // No token, a wrong one, a malformed header: 401 with a challenge.
    let (status, problem) = call(&server, Method::GET, &broker("orders"), None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("Authorization: Bearer")), "{problem}");
    let (status, _) = call(&server, Method::GET, &broker("orders"), Some("sy_guess"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(send_event(&server, "orders", None, "anonymous").await, StatusCode::UNAUTHORIZED);

    // Admin declares anywhere; the namespace admin only in its namespace.
    for name in ["orders", "payments"] {
        let (status, body) = call(&server, Method::PUT, &broker(name), Some(ADMIN), Some(json!({"spec": {}}))).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, body) = call(&server, Method::PUT, trigger_path, Some(TEAM_ADMIN), Some(trigger.clone())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, problem) =
        call(&server, Method::PUT, "/v1/namespaces/other/brokers/b", Some(TEAM_ADMIN), Some(json!({"spec": {}}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(
        problem["detail"], "token 'team-lead' (namespace-admin of 'team') may not change namespace 'other'",
        "{problem}"
    );
    let (status, _) = call(&server, Method::GET, "/v1/triggers", Some(TEAM_ADMIN), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "listing every namespace is for admins");
    let (status, _) = call(&server, Method::GET, "/v1/triggers", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);

    // The reader reads its namespace and changes nothing.
    let (status, body) = call(&server, Method::GET, trigger_path, Some(READER), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = call(&server, Method::DELETE, trigger_path, Some(READER), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) =
        call(&server, Method::POST, &format!("{trigger_path}/deadletters/redrive"), Some(READER), Some(json!({})))
            .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(send_event(&server, "orders", Some(READER), "from-reader").await, StatusCode::FORBIDDEN);

    // The ingest token sends to its one broker, and nothing else.
    assert_eq!(send_event(&server, "orders", Some(INGEST), "o-1").await, StatusCode::ACCEPTED);
    assert_eq!(send_event(&server, "payments", Some(INGEST), "p-1").await, StatusCode::FORBIDDEN);
    let (status, _) = call(&server, Method::GET, trigger_path, Some(INGEST), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // The namespace admin may send too.
    assert_eq!(send_event(&server, "orders", Some(TEAM_ADMIN), "o-2").await, StatusCode::ACCEPTED);
    let received = subscriber.wait_for(2, Duration::from_secs(15)).await;
    let mut ids: Vec<String> = received.iter().filter_map(|r| r.attribute("id")).collect();
    ids.sort();
    assert_eq!(ids, ["o-1", "o-2"]);

    // Every refusal is counted by reason; every change is audited with who made it.
    let metrics = server.metrics().await;
    for reason in ["missing", "invalid", "forbidden"] {
        let count = metric_value(&metrics, "switchyard_auth_refused_requests_total", &[("reason", reason)]);
        assert!(count.is_some_and(|c| c >= 1.0), "{reason}: {count:?}");
    }
    let log = server.log();
    let audit: Vec<&str> = log.lines().filter(|line| line.contains("declaration change")).collect();
    assert!(
        audit.iter().any(|line| line.contains("team-lead") && line.contains(trigger_path) && line.contains("201")),
        "no audit line for the trigger's creation by team-lead: {audit:#?}"
    );
    assert!(
        audit.iter().any(|line| line.contains("team-lead") && line.contains("403")),
        "refused changes are audited too: {audit:#?}"
    );
    assert!(!log.contains(TEAM_ADMIN) && !log.contains(ADMIN), "a token reached the log");
}

#[tokio::test]
async fn the_cli_sends_its_token() {
    let (server, _config) = authenticated_server().await;
    let (status, _) =
        call(&server, Method::PUT, "/v1/namespaces/team/brokers/orders", Some(ADMIN), Some(json!({"spec": {}}))).await;
    assert_eq!(status, StatusCode::CREATED);
    let get = |token: Option<&str>| {
        let mut command = Command::new(binary());
        command.args(["get", "brokers", "-n", "team", "-o", "json", "--server", &server.url]);
        command.env_remove("SWITCHYARD_TOKEN");
        if let Some(token) = token {
            command.env("SWITCHYARD_TOKEN", token);
        }
        command.output().expect("run switchyard get")
    };
    let output = get(Some(READER));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("orders"));
    let output = get(None);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("401"), "{}", String::from_utf8_lossy(&output.stderr));

    // `token new` prints a token and the line that configures it, which the server then takes.
    let output = Command::new(binary())
        .args(["token", "new", "--name", "ci", "--role", "ingest", "--namespace", "team", "--broker", "orders"])
        .output()
        .expect("run switchyard token new");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    let (token, line) = printed.trim().split_once('\n').expect("two lines");
    assert!(line.contains(&format!("sha256={}", hash(token))) && line.contains("role=ingest"), "{line}");
    let refused = Command::new(binary())
        .args(["token", "new", "--name", "ci", "--role", "namespace-reader"])
        .output()
        .expect("run switchyard token new");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs a 'namespace'"));
}

#[tokio::test]
async fn browsers_cannot_drive_a_loopback_node_without_authentication() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let port = server.url.rsplit(':').next().expect("port").to_owned();
    let client = reqwest::Client::new();
    let path = format!("{}/v1/namespaces/default/brokers/b", server.url);

    // DNS rebinding: a page whose name now resolves to 127.0.0.1 still sends its own Host.
    for (host, expected) in [
        (format!("evil.example:{port}"), StatusCode::MISDIRECTED_REQUEST),
        (format!("localhost:{port}"), StatusCode::OK),
        (format!("127.0.0.1:{port}"), StatusCode::OK),
    ] {
        let status = client.get(&path).header("host", &host).send().await.expect("get").status();
        assert_eq!(status, expected, "{host}");
    }
    let ingest = client
        .post(format!("{}/default/b", server.url))
        .header("host", "evil.example")
        .header("ce-specversion", "1.0")
        .header("ce-id", "1")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .send()
        .await
        .expect("post");
    assert_eq!(ingest.status(), StatusCode::MISDIRECTED_REQUEST);

    // A cross-site form or fetch: text/plain bodies and foreign Origins change nothing.
    let redrive = format!("{}/v1/namespaces/default/triggers/t/deadletters/redrive", server.url);
    let response = client.post(&redrive).header("content-type", "text/plain").body("{}").send().await.expect("post");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let problem: Value = response.json().await.expect("problem");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("application/json")), "{problem}");
    let response =
        client.put(&path).header("origin", "http://evil.example").json(&json!({"spec": {}})).send().await.expect("put");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Another port of the same host is another origin (a local dev server's page).
    for origin in ["http://evil.example", "http://127.0.0.1:1", "null"] {
        let response = client.delete(&path).header("origin", origin).send().await.expect("delete");
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin}");
    }
    let (status, _) = server.get("/v1/namespaces/default/brokers/b").await;
    assert_eq!(status, StatusCode::OK, "the broker survived");
    // Same-origin and non-browser clients are unaffected.
    let response = client
        .put(&path)
        .header("origin", format!("http://127.0.0.1:{port}"))
        .json(&json!({"spec": {}}))
        .send()
        .await
        .expect("put");
    assert!(response.status().is_success(), "{}", response.status());
    let metrics = server.metrics().await;
    for reason in ["host", "origin", "content_type"] {
        let count = metric_value(&metrics, "switchyard_auth_refused_requests_total", &[("reason", reason)]);
        assert!(count.is_some_and(|c| c >= 1.0), "{reason}: {count:?}");
    }
}

#[tokio::test]
async fn allowed_hosts_replace_the_loopback_default() {
    let server = Server::start_with_env(&[("SWITCHYARD_ALLOWED_HOSTS", "switchyard.test, events.test")]).await;
    let client = reqwest::Client::new();
    let path = format!("{}/v1/namespaces/default/brokers", server.url);
    for (host, expected) in [
        ("switchyard.test", StatusCode::OK),
        ("EVENTS.test:8080", StatusCode::OK),
        ("localhost", StatusCode::MISDIRECTED_REQUEST),
        ("127.0.0.1", StatusCode::MISDIRECTED_REQUEST),
    ] {
        let response = client.get(&path).header("host", host).send().await.expect("get");
        assert_eq!(response.status(), expected, "{host}");
    }
    // Probes come with whatever Host the prober uses.
    let status = client.get(format!("{}/readyz", server.url)).header("host", "10-1-2-3.pod").send().await.expect("get");
    assert_eq!(status.status(), StatusCode::OK);
}

#[tokio::test]
async fn with_tokens_loopback_and_private_destinations_are_refused_unless_allowed() {
    let (server, _config) = authenticated_server().await;
    let subscriber = Subscriber::start().await;
    for namespace in ["team", "other"] {
        for (path, body) in [
            (format!("/v1/namespaces/{namespace}/brokers/b"), json!({"spec": {}})),
            (
                format!("/v1/namespaces/{namespace}/triggers/t"),
                json!({"spec": {"broker": "b", "subscriber": {"uri": subscriber.url}, "delivery": {"retry": 0}}}),
            ),
        ] {
            let (status, answer) = call(&server, Method::PUT, &path, Some(ADMIN), Some(body)).await;
            assert_eq!(status, StatusCode::CREATED, "{answer}");
        }
    }
    assert_eq!(send_to(&server, "other", "b", Some(ADMIN), "to-other").await, StatusCode::ACCEPTED);
    assert_eq!(send_to(&server, "team", "b", Some(ADMIN), "to-team").await, StatusCode::ACCEPTED);
    subscriber.wait_for(1, Duration::from_secs(15)).await;
    let dead = dead_letters(&server, "other", "t").await;
    assert!(dead.to_string().contains("refused by the outbound guard"), "{dead}");
    let ids: Vec<String> = subscriber.received().iter().filter_map(|r| r.attribute("id")).collect();
    assert_eq!(ids, ["to-team"], "only the allow-listed namespace delivers to loopback");
}

/// Knative's EventPolicy: a broker that policies apply to admits only the senders they name,
/// and only events passing their filters; the broker's status lists them.
#[tokio::test]
async fn event_policies_admit_only_the_senders_they_name() {
    let (server, _config) = authenticated_server().await;
    let subscriber = Subscriber::start().await;
    for (path, body) in [
        ("/v1/namespaces/team/brokers/orders", json!({"spec": {}})),
        ("/v1/namespaces/team/brokers/payments", json!({"metadata": {"labels": {"tier": "gold"}}, "spec": {}})),
        (
            "/v1/namespaces/team/triggers/t",
            json!({"spec": {"broker": "orders", "subscriber": {"uri": subscriber.url}}}),
        ),
    ] {
        let (status, answer) = call(&server, Method::PUT, path, Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }
    let send = |token: &'static str, broker: &'static str, ty: &'static str, id: &'static str| {
        send_typed(&server, "team", broker, Some(token), ty, id)
    };
    // No policy: the roles decide.
    assert_eq!(send(TEAM_ADMIN, "orders", "order.created", "before").await.status(), StatusCode::ACCEPTED);

    // Applied with `switchyard apply -f`, as Knative YAML.
    let yaml = r#"
apiVersion: eventing.knative.dev/v1alpha1
kind: EventPolicy
metadata: {name: checkout-only, namespace: team}
spec:
  to:
    - ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: orders}
  from:
    - sub: checkout
  filters:
    - prefix: {type: order.}
"#;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, yaml).expect("write the policy");
    let output = Command::new(binary())
        .args(["apply", "-f", &file.display().to_string(), "--server", &server.url, "--token", ADMIN])
        .output()
        .expect("run switchyard apply");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let (_, broker) = call(&server, Method::GET, "/v1/namespaces/team/brokers/orders", Some(ADMIN), None).await;
    assert_eq!(
        broker["status"]["policies"],
        json!([{"apiVersion": "eventing.knative.dev/v1alpha1", "name": "checkout-only"}]),
        "{broker}"
    );
    let (_, policy) =
        call(&server, Method::GET, "/v1/namespaces/team/eventpolicies/checkout-only", Some(READER), None).await;
    assert_eq!(policy["status"]["brokers"], json!(["orders"]), "{policy}");

    // The named sender, with events passing the filters: admitted.
    assert_eq!(send(INGEST, "orders", "order.created", "allowed").await.status(), StatusCode::ACCEPTED);
    // An event the filters refuse: 403, and nothing of the request is kept.
    let refused = send(INGEST, "orders", "refund.created", "filtered").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.expect("problem");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("does not pass the filters")), "{problem}");
    // Another sender, even one whose role lets it send: 403 naming it.
    let refused = send(TEAM_ADMIN, "orders", "order.created", "not-named").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.expect("problem");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("'team-lead' is not a sender") && d.contains("checkout-only")),
        "{problem}"
    );
    // A broker the policy does not apply to is unchanged.
    assert_eq!(send(TEAM_ADMIN, "payments", "x", "other-broker").await.status(), StatusCode::ACCEPTED);

    // By label, with a subject prefix.
    let (status, answer) = call(
        &server,
        Method::PUT,
        "/v1/namespaces/team/eventpolicies/gold",
        Some(TEAM_ADMIN),
        Some(json!({"spec": {"to": [{"selector": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "matchLabels": {"tier": "gold"}}}],
                    "from": [{"sub": "check*"}]}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(send(TEAM_ADMIN, "payments", "x", "gold-refused").await.status(), StatusCode::FORBIDDEN);

    // A Kubernetes-only sender reference is refused, naming the field.
    let (status, problem) = call(
        &server,
        Method::PUT,
        "/v1/namespaces/team/eventpolicies/bad",
        Some(TEAM_ADMIN),
        Some(json!({"spec": {"from": [{"ref": {"apiVersion": "sources.knative.dev/v1", "kind": "PingSource", "name": "p"}}]}})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("spec.from[0].ref")), "{problem}");

    // Deleted: the roles decide again.
    let (status, _) =
        call(&server, Method::DELETE, "/v1/namespaces/team/eventpolicies/checkout-only", Some(TEAM_ADMIN), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(send(TEAM_ADMIN, "orders", "order.created", "after").await.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(3, Duration::from_secs(15)).await;
    let mut ids: Vec<String> = received.iter().filter_map(|r| r.attribute("id")).collect();
    ids.sort();
    assert_eq!(ids, ["after", "allowed", "before"]);
}

#[tokio::test]
async fn a_broker_with_event_policies_refuses_anonymous_senders() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let (status, answer) =
        server.put("/v1/namespaces/default/eventpolicies/p", json!({"spec": {"from": [{"sub": "checkout"}]}})).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let refused = send_typed(&server, "default", "b", None, "t", "1").await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.expect("problem");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("no identity")), "{problem}");
}

/// With authentication on, a trigger still reaches what its namespace has on this node without
/// a token of its own: a KafkaSink its subscriber names, and another broker (chained), where
/// EventPolicies see the trigger as `system:switchyard:trigger:<namespace>:<name>`. Another
/// namespace's broker is an ordinary request, and needs a token like anyone's.
#[tokio::test]
async fn triggers_reach_their_own_namespaces_kafka_sinks_and_brokers_with_authentication_on() {
    let (server, _config) = authenticated_server().await;
    let subscriber = Subscriber::start().await;
    let topic = switchyard_tests::fresh("auth-sink");
    switchyard_tests::create_topic(&topic, 1);
    let sink_ref = json!({"ref": {"apiVersion": "eventing.knative.dev/v1alpha1", "kind": "KafkaSink", "name": "out"}});
    let chained = format!("{}/team/payments", server.url);
    let elsewhere = format!("{}/other/b", server.url);
    for (path, body) in [
        ("/v1/namespaces/team/brokers/orders", json!({"spec": {}})),
        ("/v1/namespaces/team/brokers/payments", json!({"spec": {}})),
        ("/v1/namespaces/other/brokers/b", json!({"spec": {}})),
        (
            "/v1/namespaces/team/kafkasinks/out",
            json!({"spec": {"topic": topic, "bootstrapServers": [switchyard_tests::kafka_bootstrap()]}}),
        ),
        (
            "/v1/namespaces/team/eventpolicies/from-chain",
            json!({"spec": {"to": [{"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "payments"}}],
                            "from": [{"sub": "system:switchyard:trigger:team:chain"}]}}),
        ),
        ("/v1/namespaces/team/triggers/to-sink", json!({"spec": {"broker": "orders", "subscriber": sink_ref}})),
        ("/v1/namespaces/team/triggers/chain", json!({"spec": {"broker": "orders", "subscriber": {"uri": chained}}})),
        (
            "/v1/namespaces/team/triggers/stray",
            json!({"spec": {"broker": "orders", "subscriber": {"uri": elsewhere}, "delivery": {"retry": 0}}}),
        ),
        (
            "/v1/namespaces/team/triggers/paid",
            json!({"spec": {"broker": "payments", "subscriber": {"uri": subscriber.url}}}),
        ),
    ] {
        let (status, answer) = call(&server, Method::PUT, path, Some(ADMIN), Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {answer}");
    }
    assert_eq!(send_event(&server, "orders", Some(INGEST), "o-1").await, StatusCode::ACCEPTED);

    let record = &switchyard_tests::consume(&topic, 1)[0];
    let written: Value = serde_json::from_str(record["value"].as_str().expect("a value")).expect("structured");
    assert_eq!(written["id"], "o-1", "{record}");
    // Admitted to `payments` only as the trigger the policy names.
    subscriber.wait_for(1, Duration::from_secs(15)).await;
    assert_eq!(subscriber.received()[0].attribute("id").as_deref(), Some("o-1"));

    // Another namespace's broker: 401, as for any request without a token.
    let dead = dead_letters(&server, "team", "stray").await;
    assert_eq!(dead["items"][0]["lastStatus"], 401, "{dead}");
    server.assert_healthy().await;
}

/// With `--admin-listen` the admin API is served on that listener alone: the main one keeps
/// ingest, the probes and the OpenAPI document, and answers the admin API 404 saying where it
/// is. Such a listener off loopback needs authentication, as the main one does.
#[tokio::test]
async fn the_admin_api_can_have_a_listener_of_its_own() {
    let admin_port = switchyard_tests::free_port();
    let admin_listen = format!("127.0.0.1:{admin_port}");
    let server = Server::start_with(&["--admin-listen", &admin_listen]).await;
    let admin = format!("http://127.0.0.1:{admin_port}");
    let client = reqwest::Client::new();
    let refused = client
        .put(format!("{}/v1/namespaces/team/brokers/orders", server.url))
        .json(&json!({"spec": {}}))
        .send()
        .await
        .expect("put on the main listener");
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let problem: Value = refused.json().await.expect("problem");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains(&admin_listen)), "{problem}");
    let created = client
        .put(format!("{admin}/v1/namespaces/team/brokers/orders"))
        .json(&json!({"spec": {}}))
        .send()
        .await
        .expect("put on the admin listener");
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(send_event(&server, "orders", None, "main-ingest").await, StatusCode::ACCEPTED);
    for (base, path) in [(&server.url, "/healthz"), (&server.url, "/openapi.json"), (&admin, "/readyz")] {
        let answer = client.get(format!("{base}{path}")).send().await.expect("get");
        assert_eq!(answer.status(), StatusCode::OK, "{base}{path}");
    }
    let listed = client.get(format!("{}/v1/brokers", server.url)).send().await.expect("list on main");
    assert_eq!(listed.status(), StatusCode::NOT_FOUND);

    let message = refused_without_authentication("--admin-listen", "0.0.0.0:9090");
    assert!(message.contains("admin_listen") && message.contains("refusing to listen on 0.0.0.0:9090"), "{message}");
}
