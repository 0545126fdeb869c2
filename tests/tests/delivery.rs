//! Delivery to real HTTP subscribers: filtering, content modes, fidelity, independence.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{Answer, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn several_triggers_each_receive_exactly_their_events() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let created = Subscriber::start().await;
    let eu = Subscriber::start().await;
    let everything = Subscriber::start().await;
    let present = Subscriber::start().await;
    let prefixed = Subscriber::start().await;
    server.trigger("default", "created", json!({"broker": "b", "filter": {"attributes": {"type": "order.created"}}, "subscriber": {"uri": created.url}})).await;
    server.trigger("default", "eu", json!({"broker": "b", "filter": {"attributes": {"type": "order.created", "region": "eu"}}, "subscriber": {"uri": eu.url}})).await;
    server.trigger("default", "all", json!({"broker": "b", "subscriber": {"uri": everything.url}})).await;
    server
        .trigger(
            "default",
            "present",
            json!({"broker": "b", "filter": {"attributes": {"region": ""}}, "subscriber": {"uri": present.url}}),
        )
        .await;
    server.trigger("default", "prefixed", json!({"broker": "b", "filter": {"attributes": {"type": "ignored"}},
        "filters": [{"prefix": {"type": "order."}}, {"not": {"exact": {"region": "us"}}}], "subscriber": {"uri": prefixed.url}})).await;

    let client = reqwest::Client::new();
    let events = [
        ("1", "order.created", Some("eu")),
        ("2", "order.created", Some("us")),
        ("3", "order.shipped", Some("eu")),
        ("4", "order.created", None),
        ("5", "Order.Created", Some("eu")),
        ("6", "order.created", Some("")),
    ];
    for (id, ty, region) in events {
        let mut request = client
            .post(format!("{}/default/b", server.url))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", ty)
            .header("ce-source", "/orders");
        if let Some(region) = region {
            request = request.header("ce-region", region);
        }
        assert_eq!(request.send().await.unwrap().status(), StatusCode::ACCEPTED);
    }
    everything.wait_for(6, WAIT).await;
    created.wait_for(4, WAIT).await;
    eu.wait_for(1, WAIT).await;
    present.wait_for(4, WAIT).await;
    prefixed.wait_for(4, WAIT).await;
    // Every event has its final outcome for every trigger (all share one source, so one
    // partition, which each trigger has taken from): a wrongly matched event or a duplicate
    // would have arrived by now.
    server.wait_until_all_drained("default", &["created", "eu", "all", "present", "prefixed"], WAIT).await;
    let ids = |s: &Subscriber| s.ids().into_iter().collect::<Vec<_>>();
    assert_eq!(ids(&everything), ["1", "2", "3", "4", "5", "6"]);
    assert_eq!(ids(&created), ["1", "2", "4", "6"]);
    assert_eq!(ids(&eu), ["1"]);
    assert_eq!(ids(&present), ["1", "2", "3", "5"]);
    assert_eq!(ids(&prefixed), ["1", "3", "4", "6"]);
    assert_eq!(everything.received().len(), 6, "each event delivered once");
}

#[tokio::test]
async fn binary_delivery_is_faithful_and_carries_knative_headers() {
    let server = Server::start().await;
    server.broker("ns1", "b").await;
    let subscriber = Subscriber::start().await;
    server.trigger("ns1", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let client = reqwest::Client::new();
    let structured = json!({
        "specversion": "1.0", "id": "fid-1", "type": "com.example.t", "source": "https://example.com/src",
        "subject": "Euro € and \"quotes\" 100%", "time": "2024-05-01T10:00:00.123+02:00",
        "datacontenttype": "application/json", "dataschema": "https://example.com/schema",
        "flag": true, "count": 42, "text": "spaced out",
        "data": {"b": [1, 2, {"c": null}], "a": "x"}
    });
    let response = client
        .post(format!("{}/ns1/b", server.url))
        .header("content-type", "application/cloudevents+json")
        .body(serde_json::to_vec(&structured).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(1, WAIT).await.remove(0);
    assert_eq!(received.header("ce-id"), Some("fid-1"));
    assert_eq!(received.header("ce-specversion"), Some("1.0"));
    assert_eq!(received.header("ce-type"), Some("com.example.t"));
    assert_eq!(received.header("ce-source"), Some("https://example.com/src"));
    assert_eq!(received.header("ce-time"), Some("2024-05-01T10:00:00.123+02:00"), "time keeps its offset text");
    // `compatible` header encoding (the default): raw, as Knative's broker writes values.
    assert_eq!(received.header("ce-subject"), Some("Euro € and \"quotes\" 100%"));
    assert_eq!(received.header("ce-flag"), Some("true"));
    assert_eq!(received.header("ce-count"), Some("42"));
    assert_eq!(received.header("ce-text"), Some("spaced out"));
    assert_eq!(received.header("content-type"), Some("application/json"));
    assert_eq!(received.header("prefer"), Some("reply"));
    assert_eq!(received.header("kn-namespace"), Some("ns1"));
    assert_eq!(&received.body[..], br#"{"b":[1,2,{"c":null}],"a":"x"}"#);
}

#[tokio::test]
async fn structured_delivery_keeps_types_order_and_data() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": subscriber.url}, "delivery": {"format": "json"}}),
        )
        .await;
    let client = reqwest::Client::new();
    let body = r#"{"specversion":"1.0","id":"s-1","type":"t","source":"/s","time":"2024-01-01T00:00:00-05:00","flag":false,"count":-7,"datacontenttype":"application/vnd.x+json","data":{"z":1,  "a":[true]}}"#;
    let response = client
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents+json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Binary in, structured out: bytes become data_base64, text stays text.
    let response = client
        .post(format!("{}/default/b", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "bin-1")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .header("content-type", "application/octet-stream")
        .body(vec![0u8, 159, 146, 150])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(2, WAIT).await;
    let first = &received.iter().find(|r| String::from_utf8_lossy(&r.body).contains("s-1")).unwrap();
    assert!(first.header("content-type").unwrap().starts_with("application/cloudevents+json"));
    let text = String::from_utf8(first.body.to_vec()).unwrap();
    assert!(text.contains(r#""data":{"z":1,  "a":[true]}"#), "data bytes unchanged: {text}");
    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["flag"], false);
    assert_eq!(value["count"], -7);
    assert_eq!(value["time"], "2024-01-01T00:00:00-05:00");
    let keys: Vec<&String> = value.as_object().unwrap().keys().collect();
    assert_eq!(&keys[..6], ["specversion", "id", "type", "source", "time", "flag"], "attribute order kept");
    let second = received.iter().find(|r| String::from_utf8_lossy(&r.body).contains("bin-1")).unwrap();
    let value: Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(value["data_base64"], "AJ+Slg==");
}

#[tokio::test]
async fn a_new_trigger_starts_at_the_end_of_the_log() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    assert_eq!(server.send_binary("default", "b", "before", "t", b"{}").await, StatusCode::ACCEPTED);
    let subscriber = Subscriber::start().await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    assert_eq!(server.send_binary("default", "b", "after", "t", b"{}").await, StatusCode::ACCEPTED);
    subscriber.wait_for(1, WAIT).await;
    // Had the trigger started before the end, "before" would be below its committed position
    // (same source as "after", so the same partition), and delivered by now.
    server.wait_until_drained("default", "t", WAIT).await;
    assert_eq!(subscriber.ids().into_iter().collect::<Vec<_>>(), ["after"]);
}

#[tokio::test]
async fn failures_are_retried_and_a_stalled_trigger_does_not_delay_others() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let flaky =
        Subscriber::start_answering(vec![StatusCode::INTERNAL_SERVER_ERROR, StatusCode::SERVICE_UNAVAILABLE]).await;
    let healthy = Subscriber::start().await;
    let stalled = Subscriber::start_answering(vec![StatusCode::INTERNAL_SERVER_ERROR; 1000]).await;
    server.trigger("default", "flaky", json!({"broker": "b", "subscriber": {"uri": flaky.url}})).await;
    server.trigger("default", "healthy", json!({"broker": "b", "subscriber": {"uri": healthy.url}})).await;
    server.trigger("default", "stalled", json!({"broker": "b", "subscriber": {"uri": stalled.url}})).await;
    for i in 0..20 {
        assert_eq!(server.send_binary("default", "b", &format!("e{i}"), "t", b"{}").await, StatusCode::ACCEPTED);
    }
    healthy.wait_for(20, WAIT).await;
    assert_eq!(healthy.ids().len(), 20);
    // The flaky subscriber failed twice, then everything got through — and nothing more comes
    // once every event's outcome is final.
    flaky.wait_for(22, WAIT).await;
    server.wait_until_drained("default", "flaky", WAIT).await;
    assert_eq!(flaky.ids().len(), 20);
    assert_eq!(flaky.received().len(), 22);
    assert!(stalled.ids().len() <= 20);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let target = Subscriber::start().await;
    let redirect = Answer::status(StatusCode::TEMPORARY_REDIRECT).header("location", target.url.clone());
    let redirecting = Subscriber::start_with_answers(vec![redirect]).await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": redirecting.url}})).await;
    assert_eq!(server.send_binary("default", "b", "r1", "t", b"{}").await, StatusCode::ACCEPTED);
    // A 3xx is an answer, not a delivery, and not retryable: the event is dead-lettered.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, body) = server.get("/v1/namespaces/default/triggers/t/deadletters").await;
        if let Some(entry) = body["items"].as_array().and_then(|items| items.first()) {
            assert_eq!(entry["lastStatus"], 307);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the redirected event was never dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(redirecting.received().len(), 1);
    assert!(target.received().is_empty(), "the redirect was not followed");
}

/// POSTs one binary-mode event with these extra headers and body.
async fn post_binary(server: &Server, broker: &str, id: &str, headers: &[(&str, &[u8])], body: &'static [u8]) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/default/{broker}", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "t")
        .header("ce-source", "/s");
    for (name, value) in headers {
        request = request.header(*name, reqwest::header::HeaderValue::from_bytes(value).unwrap());
    }
    let response = request.body(body).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED, "{id}");
}

#[tokio::test]
async fn header_encoding_is_chosen_per_trigger_with_the_server_default_for_the_rest() {
    let value = "Zoë \"q\" 100% not %41";
    // Sent percent-encoded: raw, '%41' would be an escape.
    let subject: (&str, &[u8]) = ("ce-subject", b"Zo%C3%AB%20%22q%22%20100%25%20not%20%2541");
    for (server_default, default_header) in
        [(None, "Zoë \"q\" 100% not %2541"), (Some("percent"), "Zo%C3%AB%20%22q%22%20100%25%20not%20%2541")]
    {
        let server = match server_default {
            None => Server::start().await,
            Some(encoding) => Server::start_with_env(&[("SWITCHYARD_HEADER_ENCODING", encoding)]).await,
        };
        server.broker("default", "b").await;
        let subscriber = Subscriber::start().await;
        for (name, delivery) in [
            ("default", json!({})),
            ("percent", json!({"headerEncoding": "percent"})),
            ("compatible", json!({"headerEncoding": "compatible"})),
        ] {
            let uri = format!("{}/{name}", subscriber.url);
            server
                .trigger("default", name, json!({"broker": "b", "subscriber": {"uri": uri}, "delivery": delivery}))
                .await;
        }
        post_binary(&server, "b", "e-1", &[subject], b"").await;
        let received = subscriber.wait_for(3, WAIT).await;
        let at = |path: &str| received.iter().find(|r| r.path.ends_with(path)).unwrap().header("ce-subject").unwrap();
        assert_eq!(at("/default"), default_header, "server default {server_default:?}");
        assert_eq!(at("/percent"), "Zo%C3%AB%20%22q%22%20100%25%20not%20%2541");
        assert_eq!(at("/compatible"), "Zoë \"q\" 100% not %2541");
        // Either way, a receiver that decodes as the HTTP binding says reads the value back.
        assert!(received.iter().all(|r| r.attribute("subject").as_deref() == Some(value)));
    }
    let (status, body) = Server::start()
        .await
        .put("/v1/namespaces/default/triggers/t", json!({"spec": {"broker": "b", "subscriber": {"uri": "http://127.0.0.1:9/"}, "delivery": {"headerEncoding": "raw"}}}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["detail"].as_str().unwrap().contains("spec.delivery.headerEncoding"), "{body}");
}

#[tokio::test]
async fn structured_delivery_writes_utf8_text_as_a_json_string() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    let spec = json!({"broker": "b", "subscriber": {"uri": subscriber.url}, "delivery": {"format": "json"}});
    server.trigger("default", "t", spec).await;
    let text: &[u8] = "café \"q\"\n".as_bytes();
    // (id, content type, body, the member delivered)
    let cases: [(&str, &[u8], &[u8], Value); 5] = [
        ("plain", b"text/plain", text, json!({"data": "café \"q\"\n"})),
        ("xml", b"application/atom+xml", b"<feed/>", json!({"data": "<feed/>"})),
        ("charset", b"application/x-log; charset=utf-8", b"line", json!({"data": "line"})),
        ("latin1", b"text/plain; charset=iso-8859-1", b"caf\xe9", json!({"data_base64": "Y2Fm6Q=="})),
        ("png", b"image/png", b"\x89PNG", json!({"data_base64": "iVBORw=="})),
    ];
    for (id, content_type, body, _) in &cases {
        post_binary(&server, "b", id, &[("content-type", content_type)], body).await;
    }
    // A producer's data_base64 of text goes out as text too, in a batch as alone.
    let batch = json!([{"specversion": "1.0", "id": "batched", "type": "t", "source": "/s",
        "datacontenttype": "text/csv", "data_base64": "YSxi"}]);
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents-batch+json")
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(cases.len() + 1, WAIT).await;
    let delivered: Vec<Value> = received.iter().map(|r| serde_json::from_slice(&r.body).unwrap()).collect();
    let by_id = |id: &str| delivered.iter().find(|v| v["id"] == id).unwrap_or_else(|| panic!("{id}")).clone();
    for (id, _, _, member) in cases {
        let event = by_id(id);
        let (name, value) = member.as_object().unwrap().iter().next().unwrap();
        assert_eq!(&event[name], value, "{id}: {event}");
    }
    assert_eq!(by_id("batched")["data"], "a,b");
    assert_eq!(by_id("batched").get("data_base64"), None);
}
