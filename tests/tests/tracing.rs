//! Distributed tracing end to end: a W3C trace context sent at ingest (as the `traceparent`
//! header or the CloudEvents Distributed Tracing extension) reaches subscribers and dead-letter
//! sinks as one trace, and, with OTLP configured, the broker's spans reach a collector.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{Received, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(20);

/// The producer's context: its trace, and the span it sent from.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PRODUCER_SPAN: &str = "00f067aa0ba902b7";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// `(version, trace-id, parent-id, flags)` of a `traceparent` value.
fn fields(traceparent: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    assert_eq!((parts[1].len(), parts[2].len()), (32, 16), "traceparent {traceparent:?}");
    (parts[0].into(), parts[1].into(), parts[2].into(), parts[3].into())
}

/// Checks that a request continues the producer's trace from a new span of the broker's, and
/// returns that span's id.
fn assert_continues_the_trace(received: &Received) -> String {
    let traceparent = received.header("traceparent").expect("a traceparent header");
    let (version, trace_id, parent_id, flags) = fields(traceparent);
    assert_eq!((version.as_str(), trace_id.as_str(), flags.as_str()), ("00", TRACE_ID, "01"), "{traceparent}");
    assert_ne!(parent_id, PRODUCER_SPAN, "the broker's own span is the parent of the delivery");
    assert_ne!(parent_id, "0000000000000000");
    parent_id
}

async fn broker_with_trigger(server: &Server, subscriber: &Subscriber, delivery: Value) {
    server.broker("default", "b").await;
    server
        .trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}, "delivery": delivery}))
        .await;
}

fn binary_event(server: &Server, id: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "order.created")
        .header("ce-source", "/shop")
        .header("content-type", "application/json")
        .body(r#"{"sku":"A1"}"#)
}

#[tokio::test]
async fn a_traceparent_header_at_ingest_reaches_the_subscriber_as_one_trace() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    broker_with_trigger(&server, &subscriber, json!({})).await;
    let response = binary_event(&server, "h-1")
        .header("traceparent", TRACEPARENT)
        .header("tracestate", TRACESTATE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(1, WAIT).await.remove(0);
    assert_continues_the_trace(&received);
    assert_eq!(received.header("tracestate"), Some(TRACESTATE), "tracestate passes through unchanged");
    // The event kept the context it arrived in, as its Distributed Tracing extension.
    assert_eq!(received.header("ce-traceparent"), Some(TRACEPARENT));
    assert_eq!(received.header("ce-tracestate"), Some(TRACESTATE));
    assert_eq!(&received.body[..], br#"{"sku":"A1"}"#);

    // Every event of a batch without its own context adopts the request's.
    let batch = [
        json!({"specversion": "1.0", "id": "h-2", "type": "t", "source": "/s"}),
        json!({"specversion": "1.0", "id": "h-3", "type": "t", "source": "/s"}),
    ];
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents-batch+json")
        .header("traceparent", TRACEPARENT)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(3, WAIT).await;
    let spans: Vec<String> = received.iter().map(assert_continues_the_trace).collect();
    assert!(received[1..].iter().all(|r| r.header("ce-traceparent") == Some(TRACEPARENT)));
    assert!(received[1..].iter().all(|r| r.header("tracestate").is_none() && r.header("ce-tracestate").is_none()));
    assert!(
        spans[0] != spans[1] && spans[1] != spans[2] && spans[0] != spans[2],
        "a fresh span per delivery: {spans:?}"
    );
}

#[tokio::test]
async fn the_distributed_tracing_extension_is_the_events_own_trace_in_both_delivery_modes() {
    let server = Server::start().await;
    let binary = Subscriber::start().await;
    let structured = Subscriber::start().await;
    broker_with_trigger(&server, &binary, json!({})).await;
    server
        .trigger(
            "default",
            "json",
            json!({"broker": "b", "subscriber": {"uri": structured.url}, "delivery": {"format": "json"}}),
        )
        .await;
    let other = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-01";
    let event = json!({
        "specversion": "1.0", "id": "x-1", "type": "order.created", "source": "/shop",
        "traceparent": TRACEPARENT, "tracestate": TRACESTATE, "data": {"sku": "A1"}
    });
    // A header from a later hop of another trace does not replace the event's own context.
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents+json")
        .header("traceparent", other)
        .body(serde_json::to_vec(&event).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let received = binary.wait_for(1, WAIT).await.remove(0);
    assert_continues_the_trace(&received);
    assert_eq!(received.header("tracestate"), Some(TRACESTATE));
    assert_eq!(received.header("ce-traceparent"), Some(TRACEPARENT));

    let received = structured.wait_for(1, WAIT).await.remove(0);
    assert_continues_the_trace(&received);
    let delivered: Value = serde_json::from_slice(&received.body).unwrap();
    assert_eq!(delivered["traceparent"], TRACEPARENT, "the extension is delivered unchanged: {delivered}");
    assert_eq!(delivered["tracestate"], TRACESTATE);
}

#[tokio::test]
async fn a_malformed_traceparent_header_is_ignored() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    broker_with_trigger(&server, &subscriber, json!({})).await;
    let malformed = [
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "not a trace",
    ];
    for (i, value) in malformed.iter().enumerate() {
        let response = binary_event(&server, &format!("m-{i}"))
            .header("traceparent", *value)
            .header("tracestate", TRACESTATE)
            .send();
        assert_eq!(response.await.unwrap().status(), StatusCode::ACCEPTED, "{value}");
    }
    // An event without any trace context is delivered without one.
    assert_eq!(binary_event(&server, "m-none").send().await.unwrap().status(), StatusCode::ACCEPTED);
    for received in subscriber.wait_for(malformed.len() + 1, WAIT).await {
        for header in ["traceparent", "tracestate", "ce-traceparent", "ce-tracestate"] {
            assert_eq!(received.header(header), None, "{header} on {:?}", received.header("ce-id"));
        }
    }
}

#[tokio::test]
async fn dead_letter_sinks_and_retries_continue_the_trace() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    subscriber.always(StatusCode::SERVICE_UNAVAILABLE);
    let sink = Subscriber::start().await;
    let delivery = json!({"retry": 1, "backoffDelay": "PT0.05S", "deadLetterSink": {"uri": sink.url}});
    broker_with_trigger(&server, &subscriber, delivery).await;
    let response = binary_event(&server, "d-1").header("traceparent", TRACEPARENT).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    let dead = sink.wait_for(1, WAIT).await.remove(0);
    let sink_span = assert_continues_the_trace(&dead);
    assert_eq!(dead.header("ce-traceparent"), Some(TRACEPARENT));
    assert_eq!(dead.header("ce-knativeerrorcode"), Some("503"));
    let attempts = subscriber.wait_for(2, WAIT).await;
    let spans: Vec<String> = attempts.iter().map(assert_continues_the_trace).collect();
    assert!(
        spans[0] != spans[1] && !spans.contains(&sink_span),
        "every attempt is its own span: {spans:?} {sink_span}"
    );
    // The sink has the event before the broker logs that it took it.
    let deadline = Instant::now() + WAIT;
    while !server.log().lines().any(|l| l.contains("dead-letter sink") && l.contains(&format!("trace_id={TRACE_ID}"))) {
        assert!(Instant::now() < deadline, "the dead-lettering is logged with the trace id: {}", server.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The spans a collector received, from every `POST /v1/traces` body so far.
fn collected_spans(collector: &Subscriber) -> Vec<Value> {
    let mut spans = Vec::new();
    for request in collector.received() {
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(request.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_slice(&request.body).expect("an OTLP/JSON body");
        for resource in body["resourceSpans"].as_array().expect("resourceSpans") {
            let service = &resource["resource"]["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "service.name")
                .expect("service.name")["value"]["stringValue"];
            assert_eq!(service, "switchyard");
            for scope in resource["scopeSpans"].as_array().expect("scopeSpans") {
                spans.extend(scope["spans"].as_array().expect("spans").iter().cloned());
            }
        }
    }
    spans
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let attribute = span["attributes"].as_array()?.iter().find(|a| a["key"] == key)?;
    let value = &attribute["value"];
    value.get("stringValue").or_else(|| value.get("intValue"))
}

#[tokio::test]
async fn with_otlp_configured_the_brokers_spans_reach_the_collector_in_the_producers_trace() {
    let collector = Subscriber::start().await;
    let endpoint = collector.url.trim_end_matches('/').to_owned();
    let server = Server::start_with(&["--otlp-endpoint", &endpoint]).await;
    let subscriber = Subscriber::start().await;
    broker_with_trigger(&server, &subscriber, json!({})).await;
    // Untraced events and unsampled traces (flag 00) make no spans; they go first, so that any
    // span they wrongly made would be queued before those of the sampled event waited for.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b9c7c989f97918e1-00";
    let response = binary_event(&server, "o-unsampled").header("traceparent", unsampled).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(binary_event(&server, "o-untraced").send().await.unwrap().status(), StatusCode::ACCEPTED);
    subscriber.wait_for(2, WAIT).await;
    let response = binary_event(&server, "o-1").header("traceparent", TRACEPARENT).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let received = subscriber.wait_for(3, WAIT).await;
    let received = received.iter().find(|r| r.header("ce-id") == Some("o-1")).unwrap();
    let delivery_span = assert_continues_the_trace(received);

    let deadline = Instant::now() + WAIT;
    let spans = loop {
        let spans = collected_spans(&collector);
        let names: Vec<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
        if names.contains(&"ingest") && names.contains(&"deliver") {
            break spans;
        }
        assert!(Instant::now() < deadline, "expected ingest and deliver spans, got {spans:?}; log: {}", server.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(spans.iter().all(|s| s["traceId"] == TRACE_ID), "every span is in the producer's trace: {spans:?}");
    let ingest = spans.iter().find(|s| s["name"] == "ingest").unwrap();
    assert_eq!(ingest["parentSpanId"], PRODUCER_SPAN);
    assert_eq!(ingest["kind"], 2, "server");
    assert_eq!(attribute(ingest, "switchyard.broker"), Some(&json!("default/b")));
    assert_eq!(attribute(ingest, "cloudevents.event_id"), Some(&json!("o-1")));
    let deliver = spans.iter().find(|s| s["name"] == "deliver").unwrap();
    assert_eq!(deliver["spanId"], delivery_span.as_str(), "the span the subscriber was told is its parent");
    assert_eq!(deliver["parentSpanId"], PRODUCER_SPAN);
    assert_eq!(deliver["kind"], 3, "client");
    assert_eq!(attribute(deliver, "switchyard.trigger"), Some(&json!("default/t")));
    assert_eq!(attribute(deliver, "http.response.status_code"), Some(&json!("200")));
    assert_eq!(attribute(deliver, "url.full"), Some(&json!(subscriber.url)));
    for span in [ingest, deliver] {
        let start: u128 = span["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
        let end: u128 = span["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
        assert!(start > 0 && start <= end, "{span}");
        assert!(span.get("status").is_none(), "success leaves the status unset: {span}");
    }
    assert_eq!(spans.len(), 2, "one ingest and one deliver span, none for the others: {spans:?}");
}
