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
        // Limits, so that no stored filter can stall its broker.
        (json!([{"jsonpath": "$..*..*..*"}]), vec!["spec.filters[0]", "(jsonpath descendant segments)"]),
        (json!([{"jsonpath": format!("$.{}", "a".repeat(2_000))}]), vec!["spec.filters[0]", "(jsonpath query length)"]),
        (
            json!([{"cesql": format!("{}1{}", "ABS(".repeat(100), ")".repeat(100))}]),
            vec!["spec.filters[0]", "(cesql nesting limit)"],
        ),
        (
            json!([{"all": [{"cesql": format!("type LIKE '{}'", "%a".repeat(200))}]}]),
            vec!["spec.filters[0]", "(like pattern length)"],
        ),
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

async fn post_json(server: &Server, path: &str, body: &Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new().post(format!("{}{path}", server.url)).json(body).send().await.unwrap();
    let status = response.status();
    (status, response.json::<Value>().await.unwrap_or(Value::Null))
}

fn nested_event(depth: usize) -> Value {
    let data: Value = serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).unwrap();
    json!({"specversion": "1.0", "id": "1", "type": "t", "source": "/s", "datacontenttype": "application/json", "data": data})
}

/// The hardening issue's reproductions against the filter-test and CESQL APIs: each gets a
/// clean 4xx naming the limit, or its correct answer within bounded work, and the node keeps
/// answering.
#[tokio::test]
async fn hostile_filters_get_a_clean_refusal_or_a_bounded_answer() {
    let server = Server::start().await;

    // 110-deep data with `..*` four times: 14 s and 4 GiB before; now refused at compile.
    let request = json!({"filters": [{"jsonpath": "$..*..*..*..*"}], "event": nested_event(110)});
    let (status, problem) = post_json(&server, "/v1/filters/test", &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("filters[0]") && detail.contains("(jsonpath descendant segments)"), "{detail}");
    server.assert_healthy().await;
    // Two descendant segments are accepted, and answered.
    let request = json!({"filters": [{"jsonpath": "$..*..*"}], "event": nested_event(110)});
    let (status, answer) = post_json(&server, "/v1/filters/test", &request).await;
    assert_eq!((status, answer), (StatusCode::OK, json!({"matched": true, "errors": []})));
    // Wide data: the work budget stops the evaluation, which counts as no match.
    let mut wide = nested_event(0);
    wide["data"] = Value::Array((0..200_000).map(|_| json!(1)).collect());
    let request = json!({"filters": [{"jsonpath": "$.data[?@ == 2]"}], "event": wide});
    let (status, answer) = post_json(&server, "/v1/filters/test", &request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["matched"], false);
    assert!(answer["errors"][0].as_str().unwrap().contains("(jsonpath work budget)"), "{answer}");
    server.assert_healthy().await;

    // Deep CESQL: 400 naming the limit in a filter; a parse error answer from the evaluator.
    let deep = format!("{}TRUE{}", "(".repeat(5_000), ")".repeat(5_000));
    let request = json!({"filters": [{"cesql": deep}], "event": nested_event(1)});
    let (status, problem) = post_json(&server, "/v1/filters/test", &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("(cesql nesting limit)"), "{problem}");
    let (status, answer) =
        post_json(&server, "/v1/cesql/evaluate", &json!({"expression": deep, "event": nested_event(1)})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answer["error"]["kind"], "parse");
    assert!(answer["error"]["message"].as_str().unwrap().contains("(cesql nesting limit)"), "{answer}");
    server.assert_healthy().await;

    // The quadratic LIKE (80,000 characters): its correct answer.
    let mut event = nested_event(1);
    event["big"] = json!(format!("{}b", "a".repeat(80_000)));
    for (pattern, expected) in [
        (format!("%{}_b", "a".repeat(200)), true),
        (format!("%{}_b%", "a".repeat(200)), true),
        (format!("%{}_c%", "a".repeat(200)), false),
    ] {
        let expression = format!("big LIKE '{pattern}'");
        let (status, answer) =
            post_json(&server, "/v1/cesql/evaluate", &json!({"expression": expression, "event": event})).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer["result"], json!(expected), "{pattern}: {answer}");
        server.assert_healthy().await;
    }
    let expression = format!("big LIKE '%{}'", "_".repeat(300));
    let (_, answer) =
        post_json(&server, "/v1/cesql/evaluate", &json!({"expression": expression, "event": event})).await;
    assert!(answer["error"]["message"].as_str().unwrap().contains("(like pattern length)"), "{answer}");

    // Bodies over the limit: 413 from the declared length, before the body is read (by the
    // server's API body limit, or the route's own).
    for path in ["/v1/filters/test", "/v1/cesql/evaluate"] {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", server.url))
            .header("content-type", "application/json")
            .body(vec![b' '; (1 << 20) + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        assert_eq!(response.headers()["content-type"], "application/problem+json");
        let problem: Value = response.json().await.unwrap();
        assert!(problem["detail"].as_str().unwrap().contains("1048576"), "{problem}");
    }
    server.assert_healthy().await;
}

/// A trigger's filter that is accepted but runs out of budget on an event just does not match
/// it, is counted, and the broker goes on.
#[tokio::test]
async fn trigger_filters_over_a_limit_are_refused_and_budgets_do_not_stall_the_broker() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    // Filters over a limit are refused at declaration: `invalid_cesql_and_jsonpath_are_400_…`.
    let costly = Subscriber::start().await;
    let plain = Subscriber::start().await;
    server
        .trigger(
            "default",
            "costly",
            json!({"broker": "b", "subscriber": {"uri": costly.url}, "filters": [{"jsonpath": "$.data[?@ == 2]"}]}),
        )
        .await;
    server.trigger("default", "plain", json!({"broker": "b", "subscriber": {"uri": plain.url}})).await;
    let mut wide = nested_event(0);
    wide["id"] = json!("wide");
    wide["data"] = Value::Array((0..200_000).map(|_| json!(2)).collect());
    post_structured(&server, &wide).await;
    let mut small = nested_event(0);
    small["id"] = json!("small");
    small["data"] = json!([2]);
    post_structured(&server, &small).await;
    plain.wait_for(2, WAIT).await;
    costly.wait_for(1, WAIT).await;
    server.wait_until_all_drained("default", &["costly", "plain"], WAIT).await;
    assert_eq!(costly.ids().into_iter().collect::<Vec<_>>(), ["small"]);
    let exhausted = server.metric("switchyard_filter_budget_exhausted_total", &[("dialect", "jsonpath")]).await;
    assert!(exhausted.is_some_and(|n| n >= 1.0), "{exhausted:?}");
    server.assert_healthy().await;
}
