//! The REST API for brokers and triggers, through the real binary.

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::Server;

#[tokio::test]
async fn brokers_crud_with_knative_shapes() {
    let server = Server::start().await;
    let (status, body) = server.put("/v1/namespaces/team-a/brokers/orders", json!({"spec": {}})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["apiVersion"], "eventing.knative.dev/v1");
    assert_eq!(body["kind"], "Broker");
    assert_eq!(body["metadata"]["name"], "orders");
    assert_eq!(body["metadata"]["namespace"], "team-a");
    assert_eq!(body["status"]["address"]["url"], format!("{}/team-a/orders", server.url));
    assert_eq!(body["status"]["conditions"][0]["type"], "Ready");
    let uid = body["metadata"]["uid"].clone();
    assert!(uid.is_string());

    // Idempotent replace: 200, same uid.
    let (status, body) = server.put("/v1/namespaces/team-a/brokers/orders", json!({})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["metadata"]["uid"], uid);

    // A whole Knative object is accepted unchanged.
    let knative = json!({
        "apiVersion": "eventing.knative.dev/v1", "kind": "Broker",
        "metadata": {"name": "audit", "namespace": "team-a",
                     "annotations": {"eventing.knative.dev/broker.class": "MTChannelBasedBroker"}},
        "spec": {"delivery": {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.5S"}}
    });
    let (status, body) = server.put("/v1/namespaces/team-a/brokers/audit", knative).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["spec"]["delivery"]["retry"], 3);

    let (status, list) = server.get("/v1/namespaces/team-a/brokers").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<_> =
        list["items"].as_array().unwrap().iter().map(|b| b["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["audit", "orders"]);
    let (_, other) = server.get("/v1/namespaces/team-b/brokers").await;
    assert_eq!(other["items"].as_array().unwrap().len(), 0);
    let (_, all) = server.get("/v1/brokers").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    let (status, problem) = server.get("/v1/namespaces/Team_A/brokers").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("Team_A"));

    let (status, _) = server.get("/v1/namespaces/team-a/brokers/orders").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.delete("/v1/namespaces/team-a/brokers/orders").await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = server.get("/v1/namespaces/team-a/brokers/orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(problem["detail"].as_str().unwrap().contains("team-a/orders"));
    let (status, _) = server.delete("/v1/namespaces/team-a/brokers/orders").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The deleted broker's ingest is gone too.
    assert_eq!(server.send_binary("team-a", "orders", "1", "t", b"{}").await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn trigger_validation_names_the_field() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let cases = [
        (json!({"spec": {"subscriber": {"uri": "http://x/"}}}), "spec.broker"),
        (json!({"spec": {"broker": "b"}}), "spec.subscriber.uri"),
        (json!({"spec": {"broker": "b", "subscriber": {"uri": "not a url"}}}), "spec.subscriber.uri"),
        (json!({"spec": {"broker": "b", "subscriber": {"uri": "/relative"}}}), "spec.subscriber.uri"),
        (
            json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "filter": {"attributes": {"Bad-Key": "x"}}}}),
            "Bad-Key",
        ),
        (
            json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "filter": {"attributes": {"1type": "x"}}}}),
            "1type",
        ),
        (
            json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "filters": [{"exact": {"type": "a"}, "suffix": {"type": "b"}}]}}),
            "exactly one dialect",
        ),
        (json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "filters": [{}]}}), "exactly one dialect"),
        (
            json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "filters": [{"regex": {"type": "a"}}]}}),
            "regex",
        ),
        (json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "colour": "red"}}), "colour"),
        (json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/", "port": 80}}}), "port"),
        (json!({"kind": "Broker", "spec": {"broker": "b", "subscriber": {"uri": "http://x/"}}}), "kind"),
        (json!({"apiVersion": "v2", "spec": {"broker": "b", "subscriber": {"uri": "http://x/"}}}), "apiVersion"),
    ];
    let mut cases = cases.to_vec();
    for (delivery, field) in [
        (json!({"backoffDelay": "5s"}), "spec.delivery.backoffDelay"),
        (json!({"backoffDelay": "P1M"}), "spec.delivery.backoffDelay"),
        (json!({"timeout": "PT0S"}), "spec.delivery.timeout"),
        (json!({"retryAfterMax": "soon"}), "spec.delivery.retryAfterMax"),
        (json!({"retry": -1}), "spec.delivery.retry"),
        (json!({"backoffPolicy": "fibonacci"}), "spec.delivery.backoffPolicy"),
        (json!({"ordering": "sorted"}), "spec.delivery.ordering"),
        (json!({"maxInFlight": 0}), "spec.delivery.maxInFlight"),
        (json!({"rateLimit": -5}), "spec.delivery.rateLimit"),
        (json!({"deadLetterSink": {"uri": "nowhere"}}), "spec.delivery.deadLetterSink.uri"),
        (json!({"deadLetterSink": {}}), "spec.delivery.deadLetterSink.uri"),
    ] {
        cases.push((json!({"spec": {"broker": "b", "subscriber": {"uri": "http://x/"}, "delivery": delivery}}), field));
    }
    for (body, needle) in cases {
        let (status, problem) = server.put("/v1/namespaces/default/triggers/t", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(needle), "{body}: {detail}");
    }
    let (status, problem) = server
        .put("/v1/namespaces/default/brokers/b", json!({"spec": {"delivery": {"backoffPolicy": "random"}}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("spec.delivery.backoffPolicy"), "{problem}");
    let (status, problem) = server.put("/v1/namespaces/default/triggers/Bad_Name", json!({"spec": {}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("Bad_Name"));
}

#[tokio::test]
async fn triggers_crud_and_readiness_follows_the_broker() {
    let server = Server::start().await;
    let spec = json!({"broker": "later", "filter": {"attributes": {"type": "a"}}, "subscriber": {"uri": "http://127.0.0.1:9/"}});
    server.trigger("default", "t1", spec.clone()).await;
    let (_, trigger) = server.get("/v1/namespaces/default/triggers/t1").await;
    assert_eq!(trigger["status"]["conditions"][0]["status"], "False");
    assert_eq!(trigger["status"]["conditions"][0]["reason"], "BrokerDoesNotExist");
    server.broker("default", "later").await;
    let (_, trigger) = server.get("/v1/namespaces/default/triggers/t1").await;
    assert_eq!(trigger["status"]["conditions"][0]["status"], "True");
    assert_eq!(trigger["status"]["subscriberUri"], "http://127.0.0.1:9/");
    let (_, list) = server.get("/v1/triggers").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (status, _) = server.delete("/v1/namespaces/default/triggers/t1").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.get("/v1/namespaces/default/triggers/t1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn declarations_survive_a_restart() {
    let mut server = Server::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}})).await;
    server.restart().await;
    let (status, _) = server.get("/v1/namespaces/default/triggers/t").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.send_binary("default", "b", "1", "t", b"{}").await, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn health_and_unknown_paths() {
    let server = Server::start().await;
    assert_eq!(server.get("/healthz").await.0, StatusCode::OK);
    assert_eq!(server.get("/readyz").await.0, StatusCode::OK);
    let (status, problem) = server.get("/v1/nothing/here/at/all").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["status"], 404);
}

#[tokio::test]
async fn a_wrong_method_is_a_problem_that_lists_the_allowed_ones() {
    let server = Server::start().await;
    let response = reqwest::Client::new().post(format!("{}/v1/brokers", server.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    assert!(response.headers()["allow"].to_str().unwrap().contains("GET"));
    let problem: serde_json::Value = response.json().await.unwrap();
    assert_eq!(problem["detail"], "method POST is not allowed on this path");
}
