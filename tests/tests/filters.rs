//! Filter dialects end to end: CESQL and JSONPath triggers, the filter-test and CESQL APIs,
//! and their CLI commands.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{binary, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(15);

fn order(id: &str, ty: &str, region: &str, sku: &str) -> Value {
    json!({"specversion": "1.0", "id": id, "type": ty, "source": format!("/orders/{region}"),
           "region": region, "count": 42, "datacontenttype": "application/json",
           "data": {"items": [{"sku": sku, "qty": 2}]}})
}

async fn post_structured(server: &Server, event: &Value) {
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents+json")
        .json(event)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn cesql_jsonpath_and_subscriptions_dialects_route_exactly() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let cesql = Subscriber::start().await;
    let jsonpath = Subscriber::start().await;
    let mixed = Subscriber::start().await;
    server
        .trigger(
            "default",
            "cesql",
            json!({"broker": "b", "subscriber": {"uri": cesql.url},
        "filters": [{"cesql": "type LIKE 'com.example.order.%' AND region IN ('eu', 'uk') AND count > 40"}]}),
        )
        .await;
    server
        .trigger(
            "default",
            "jsonpath",
            json!({"broker": "b", "subscriber": {"uri": jsonpath.url},
        "filters": [{"jsonpath": "$.data.items[?@.sku == 'A1']"}]}),
        )
        .await;
    server
        .trigger(
            "default",
            "mixed",
            json!({"broker": "b", "subscriber": {"uri": mixed.url},
        "filters": [{"any": [{"suffix": {"type": ".shipped"}}, {"cesql": "LOWER(region) = 'us'"}]},
                    {"not": {"jsonpath": "$.data.items[?@.sku == 'B2']"}}]}),
        )
        .await;
    post_structured(&server, &order("1", "com.example.order.created", "eu", "A1")).await;
    post_structured(&server, &order("2", "com.example.order.created", "us", "A1")).await;
    post_structured(&server, &order("3", "com.example.order.shipped", "uk", "B2")).await;
    post_structured(&server, &order("4", "com.example.order.shipped", "fr", "C3")).await;
    post_structured(&server, &order("5", "com.other.thing", "eu", "A1")).await;
    cesql.wait_for(2, WAIT).await;
    jsonpath.wait_for(3, WAIT).await;
    mixed.wait_for(2, WAIT).await;
    // Every event has its final outcome for each trigger, so a wrongly matched one would have
    // arrived. (On Kafka the regions' sources spread the events over partitions, and this
    // covers those a trigger has taken from; see `wait_until_all_drained`.)
    server.wait_until_all_drained("default", &["cesql", "jsonpath", "mixed"], WAIT).await;
    let ids = |s: &Subscriber| s.ids().into_iter().collect::<Vec<_>>();
    assert_eq!(ids(&cesql), ["1", "3"]);
    assert_eq!(ids(&jsonpath), ["1", "2", "5"]);
    assert_eq!(ids(&mixed), ["2", "4"]);
}

#[tokio::test]
async fn invalid_cesql_and_jsonpath_are_400_pointing_at_the_problem() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    for (filters, needles) in [
        (json!([{"cesql": "type = "}]), vec!["spec.filters[0]", "position 7"]),
        (json!([{"cesql": "type == 'a'"}]), vec!["spec.filters[0]", "position"]),
        (json!([{"all": [{"exact": {"type": "a"}}, {"cesql": "NOT"}]}]), vec!["spec.filters[0][1]", "CESQL"]),
        (json!([{"jsonpath": "$.data[?@.sku == ]"}]), vec!["spec.filters[0]", "JSONPath"]),
    ] {
        let (status, problem) = server
            .put(
                "/v1/namespaces/default/triggers/t",
                json!({"spec": {"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}, "filters": filters}}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{filters}");
        let detail = problem["detail"].as_str().unwrap();
        for needle in needles {
            assert!(detail.contains(needle), "{filters}: {detail}");
        }
    }
}

#[tokio::test]
async fn filter_test_and_cesql_evaluate_apis() {
    let server = Server::start().await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: Value| {
        let request = client.post(format!("{}{path}", server.url)).json(&body);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.json::<Value>().await.unwrap())
        }
    };
    let event = order("1", "com.example.order.created", "eu", "A1");

    let (status, answer) =
        post("/v1/filters/test", json!({"filter": {"attributes": {"region": "eu"}}, "event": event})).await;
    assert_eq!((status, answer.clone()), (StatusCode::OK, json!({"matched": true, "errors": []})));
    let (_, answer) = post(
        "/v1/filters/test",
        json!({"filter": {"attributes": {"region": "eu"}}, "filters": [{"exact": {"region": "us"}}], "event": event}),
    )
    .await;
    assert_eq!(answer["matched"], false, "a non-empty filters overrides filter");
    let (_, answer) = post("/v1/filters/test", json!({"filters": [{"cesql": "missing = 'x'"}], "event": event})).await;
    assert_eq!(answer["matched"], false);
    assert!(answer["errors"][0].as_str().unwrap().contains("missingAttribute"), "{answer}");
    let (status, problem) = post("/v1/filters/test", json!({"filters": [{"cesql": "((("}], "event": event})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("filters[0]"));
    let (status, _) = post("/v1/filters/test", json!({"event": {"id": "no-type"}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    for (expression, result, kind) in [
        ("count + 1", json!(43), Value::Null),
        ("UPPER(region) || 'x'", Value::Null, json!("parse")),
        ("CONCAT(region, '-', type)", json!("eu-com.example.order.created"), Value::Null),
        ("type LIKE '%.created'", json!(true), Value::Null),
        ("nothere", Value::Null, json!("missingAttribute")),
        ("count / 0", Value::Null, json!("math")),
        ("INT('abc')", Value::Null, json!("cast")),
        ("NOSUCH(1)", Value::Null, json!("missingFunction")),
        ("type = ", Value::Null, json!("parse")),
    ] {
        let (status, answer) = post("/v1/cesql/evaluate", json!({"expression": expression, "event": event})).await;
        assert_eq!(status, StatusCode::OK, "{expression}");
        assert_eq!(answer["result"], result, "{expression}: {answer}");
        assert_eq!(answer["error"].get("kind").cloned().unwrap_or(Value::Null), kind, "{expression}: {answer}");
    }
    let (status, _) = post("/v1/cesql/evaluate", json!({"expression": "true"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the event is required");
}

#[tokio::test]
async fn filter_test_and_cesql_cli() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("trigger.yaml");
    std::fs::write(
        &trigger,
        "apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata:\n  name: t\nspec:\n  broker: b\n  filters:\n    - cesql: \"region = 'eu' AND count >= 42\"\n  subscriber:\n    uri: http://127.0.0.1:9/\n",
    )
    .unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, order("1", "com.example.order.created", "eu", "A1").to_string()).unwrap();
    let run = |args: &[&str]| Command::new(binary()).args(args).env("SWITCHYARD_SERVER", &server.url).output().unwrap();
    let output = run(&["filter", "test", "-f", trigger.to_str().unwrap(), "-e", event.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "matched\n");
    let output = run(&["cesql", "CONCAT(region, ':', STRING(count))", "-e", event.to_str().unwrap()]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "\"eu:42\"\n");
    let output = run(&["cesql", "count / 0", "-e", event.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("math"));
}
