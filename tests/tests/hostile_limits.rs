//! Hostile clients against the limits and guards of admission and declarations (issue 13):
//! each reproduction once let a client crash, stall or loop a node; each now gets a clean 4xx
//! naming what to fix, and the node goes on serving.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{json, Map, Value};
use switchyard_tests::{Answer, Server, Subscriber};

fn event(id: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "source": "/hostile", "type": "t"})
}

async fn post_structured(server: &Server, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents+json")
        .json(body)
        .send()
        .await
        .expect("post");
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_poison_pill_is_refused_and_the_broker_goes_on_delivering() {
    // 65,535 attributes in a 710 KB body once got 202, wrapped the stored count and stalled
    // the broker for good.
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    server.broker("default", "b").await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let mut pill = Map::new();
    for (name, value) in event("pill").as_object().unwrap() {
        pill.insert(name.clone(), value.clone());
    }
    for i in 0..65_535 - 4 {
        pill.insert(format!("x{i}"), json!("v"));
    }
    let (status, problem) = post_structured(&server, &Value::Object(pill)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("(max_event_attributes)"), "{problem}");
    let (status, _) = post_structured(&server, &event("after")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let received = subscriber.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(received[0].attribute("id").as_deref(), Some("after"));
}

#[tokio::test]
async fn long_attribute_names_and_values_are_refused_naming_the_limit() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let mut long_value = event("v");
    long_value["subject"] = json!("s".repeat(8193));
    let (status, problem) = post_structured(&server, &long_value).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert_eq!(
        problem["detail"],
        "the event has a value of 8193 bytes in attribute 'subject', above the limit of 8192 (max_attribute_value_bytes)"
    );
    let mut long_name = event("n");
    long_name["x".repeat(129)] = json!("v");
    let (status, problem) = post_structured(&server, &long_name).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{problem}");
    assert!(problem["detail"].as_str().unwrap().ends_with("above the limit of 128 (max_attribute_name_bytes)"));
}

#[tokio::test]
async fn a_batch_of_many_tiny_events_is_refused_by_count() {
    // ~170,000 tiny events fit in a 10 MiB batch; they are counted, not decoded.
    let server = Server::start().await;
    server.broker("default", "b").await;
    let tiny: Vec<Value> = (0..5_000).map(|_| json!({})).collect();
    assert_eq!(server.send_batch("default", "b", &tiny).await, StatusCode::PAYLOAD_TOO_LARGE);
    let events: Vec<Value> = (0..1_000).map(|i| event(&i.to_string())).collect();
    assert_eq!(server.send_batch("default", "b", &events).await, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn numeric_fields_out_of_range_are_refused_and_the_server_stays_up() {
    // `rateLimit: 1e-300` was stored, then panicked on every start.
    let server = Server::start().await;
    server.broker("default", "b").await;
    for (delivery, field) in [
        (json!({"rateLimit": 1e-300}), "spec.delivery.rateLimit"),
        (json!({"rateLimit": 1e300}), "spec.delivery.rateLimit"),
        (json!({"timeout": "P99999W"}), "spec.delivery.timeout"),
        (json!({"backoffDelay": "P1D"}), "spec.delivery.backoffDelay"),
        (json!({"retryAfterMax": "P7D"}), "spec.delivery.retryAfterMax"),
        (json!({"retry": 1_000_000}), "spec.delivery.retry"),
        (json!({"maxInFlight": 1_000_000}), "spec.delivery.maxInFlight"),
    ] {
        let spec = json!({"spec": {"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}, "delivery": delivery}});
        let (status, problem) = server.put("/v1/namespaces/default/triggers/t", spec).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{delivery}: {problem}");
        assert!(problem["detail"].as_str().unwrap().contains(field), "{delivery}: {problem}");
    }
    let (status, _) =
        server.put("/v1/namespaces/default/brokers/b", json!({"spec": {"delivery": {"rateLimit": 0.0001}}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.assert_healthy().await;
}

#[tokio::test]
async fn a_trigger_into_its_own_broker_is_refused() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let own = format!("{}/default/b", server.url);
    for spec in [
        json!({"broker": "b", "subscriber": {"uri": own}}),
        json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}, "delivery": {"deadLetterSink": {"uri": own}}}),
    ] {
        let (status, problem) = server.put("/v1/namespaces/default/triggers/loop", json!({"spec": spec})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
        assert!(problem["detail"].as_str().unwrap().contains("is the ingest URL of broker 'default/b' on this node"));
    }
    // Chaining into another broker stays allowed.
    server.broker("default", "c").await;
    server
        .trigger("default", "chain", json!({"broker": "b", "subscriber": {"uri": format!("{}/default/c", server.url)}}))
        .await;
}

#[tokio::test]
async fn a_client_supplied_hop_counter_is_clamped_to_knatives_255() {
    // A subscriber that always replies: a client's `knativebrokerttl` of 2^31 once bought a
    // loop of 2^31 hops.
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    subscriber.always(
        Answer::status(StatusCode::OK)
            .header("ce-specversion", "1.0")
            .header("ce-id", "reply")
            .header("ce-source", "/replier")
            .header("ce-type", "t"),
    );
    server.broker("default", "b").await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let mut looping = event("loop");
    looping["knativebrokerttl"] = json!(2_147_483_647);
    assert_eq!(post_structured(&server, &looping).await.0, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while server.metric("switchyard_reply_events_total", &[("outcome", "dropped")]).await.unwrap_or(0.0) < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the loop did not end: {} deliveries",
            subscriber.received().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(subscriber.received().len(), 255, "one delivery per hop of the default budget");
}

#[tokio::test]
async fn a_namespace_holds_at_most_its_quota() {
    let server = Server::start_with_env(&[
        ("SWITCHYARD_MAX_BROKERS_PER_NAMESPACE", "1"),
        ("SWITCHYARD_MAX_TRIGGERS_PER_NAMESPACE", "2"),
    ])
    .await;
    server.broker("default", "b").await;
    let (status, problem) = server.put("/v1/namespaces/default/brokers/c", json!({"spec": {}})).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    assert_eq!(problem["detail"], "namespace 'default' already has 1 brokers, its quota (max_brokers_per_namespace = 1): delete one first, or raise the quota");
    server.broker("other", "c").await;
    let spec = json!({"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}});
    server.trigger("default", "t1", spec.clone()).await;
    server.trigger("default", "t2", spec.clone()).await;
    let (status, _) = server.put("/v1/namespaces/default/triggers/t3", json!({"spec": spec})).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    server.trigger("default", "t2", spec).await;
}

#[tokio::test]
async fn a_deleted_triggers_dead_letters_go_with_it() {
    let server = Server::start().await;
    let subscriber = Subscriber::start_answering(vec![StatusCode::BAD_REQUEST]).await;
    server.broker("default", "b").await;
    let spec = json!({"broker": "b", "subscriber": {"uri": subscriber.url}, "delivery": {"retry": 0}});
    server.trigger("default", "t", spec.clone()).await;
    assert_eq!(post_structured(&server, &event("dead")).await.0, StatusCode::ACCEPTED);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (_, letters) = server.get("/v1/namespaces/default/triggers/t/deadletters").await;
        if letters["items"].as_array().is_some_and(|items| !items.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no dead letter: {letters}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(server.delete("/v1/namespaces/default/triggers/t").await.0, StatusCode::OK);
    server.trigger("default", "t", spec).await;
    let (_, letters) = server.get("/v1/namespaces/default/triggers/t/deadletters").await;
    assert_eq!(letters["items"], json!([]), "a new trigger of the same name starts clean");
}
