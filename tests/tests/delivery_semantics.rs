//! Delivery semantics against real HTTP subscribers: retries and their spacing, timeouts,
//! Retry-After, dead-letter sinks and the dead-letter store, redrive, replies and their loop
//! bound, ordering, flow control, and retries surviving kill -9.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use base64::Engine;
use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{Answer, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(20);

fn gaps(times: &[Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

async fn dead_letters(server: &Server, trigger: &str) -> Vec<Value> {
    let (status, body) = server.get(&format!("/v1/namespaces/default/triggers/{trigger}/deadletters")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"].as_array().unwrap().clone()
}

async fn wait_for_dead_letters(server: &Server, trigger: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let items = dead_letters(server, trigger).await;
        if items.len() >= count {
            return items;
        }
        assert!(Instant::now() < deadline, "expected {count} dead letters, got {}", items.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn failures_are_retried_with_linear_and_exponential_spacing() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let linear = Subscriber::start_answering(vec![StatusCode::INTERNAL_SERVER_ERROR; 3]).await;
    let exponential = Subscriber::start_answering(vec![StatusCode::BAD_GATEWAY; 3]).await;
    server
        .trigger(
            "default",
            "linear",
            json!({"broker": "b", "subscriber": {"uri": linear.url},
            "delivery": {"retry": 3, "backoffPolicy": "linear", "backoffDelay": "PT0.2S"}}),
        )
        .await;
    server
        .trigger(
            "default",
            "exponential",
            json!({"broker": "b", "subscriber": {"uri": exponential.url},
            "delivery": {"retry": 3, "backoffPolicy": "exponential", "backoffDelay": "PT0.1S"}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "r1", "t", b"{}").await, StatusCode::ACCEPTED);
    linear.wait_for(4, WAIT).await;
    exponential.wait_for(4, WAIT).await;
    // The wait before retry k: delay × k (linear) or delay × 2^(k-1) (exponential), plus up to
    // 10% jitter. The upper slack covers scheduling on a loaded machine.
    for (subscriber, expected) in [(&linear, [200, 400, 600]), (&exponential, [100, 200, 400])] {
        let observed = gaps(&subscriber.arrival_times());
        for (gap, base) in observed.iter().zip(expected) {
            let base = Duration::from_millis(base);
            assert!(*gap >= base, "gap {gap:?} shorter than the backoff {base:?}: {observed:?}");
            assert!(
                *gap <= base.mul_f64(1.1) + Duration::from_millis(250),
                "gap {gap:?} too long for {base:?}: {observed:?}"
            );
        }
        assert_eq!(subscriber.ids().len(), 1);
    }
    assert!(dead_letters(&server, "linear").await.is_empty());
}

#[tokio::test]
async fn a_hung_subscriber_times_out_and_is_retried() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let slow = Subscriber::start_with_answers(vec![Answer::status(StatusCode::OK).after(Duration::from_secs(5))]).await;
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": slow.url},
            "delivery": {"timeout": "PT0.3S", "backoffDelay": "PT0.05S"}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "slow-1", "t", b"{}").await, StatusCode::ACCEPTED);
    let times = {
        let deadline = Instant::now() + WAIT;
        loop {
            let times = slow.arrival_times();
            if times.len() >= 2 {
                break times;
            }
            assert!(Instant::now() < deadline, "no retry after the timeout");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(300) && gap < Duration::from_secs(3),
        "retry came {gap:?} after the first attempt"
    );
}

#[tokio::test]
async fn a_non_retryable_answer_goes_to_the_dead_letter_sink_at_once_with_knative_extensions() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    subscriber.always(Answer::status(StatusCode::BAD_REQUEST).body("field 'sku' is missing"));
    let sink = Subscriber::start().await;
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": subscriber.url},
            "delivery": {"retry": 5, "backoffDelay": "PT0.05S", "deadLetterSink": {"uri": sink.url}}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "bad-1", "order.created", br#"{"n":1}"#).await, StatusCode::ACCEPTED);
    let received = sink.wait_for(1, WAIT).await.remove(0);
    assert_eq!(received.header("ce-id"), Some("bad-1"));
    assert_eq!(received.header("ce-type"), Some("order.created"));
    assert_eq!(&received.body[..], br#"{"n":1}"#);
    assert_eq!(received.header("ce-knativeerrordest"), Some(subscriber.url.as_str()));
    assert_eq!(received.header("ce-knativeerrorcode"), Some("400"));
    let data = base64::engine::general_purpose::STANDARD.encode("field 'sku' is missing");
    assert_eq!(received.header("ce-knativeerrordata"), Some(data.as_str()));
    assert_eq!(received.header("ce-knativeerrorattempts"), Some("1"));
    // Dead-lettered is final: once committed past it, no retry can follow.
    server.wait_until_drained("default", "t", WAIT).await;
    assert_eq!(subscriber.received().len(), 1, "a 400 is not retried");
    assert!(dead_letters(&server, "t").await.is_empty(), "the sink took it: nothing in the store");
}

#[tokio::test]
async fn retryable_statuses_are_retried_then_kept_in_the_store() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let not_found = Subscriber::start().await;
    not_found.always(StatusCode::NOT_FOUND);
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": not_found.url},
            "delivery": {"retry": 2, "backoffDelay": "PT0.05S"}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "nf-1", "t", br#"{"k":"v"}"#).await, StatusCode::ACCEPTED);
    let items = wait_for_dead_letters(&server, "t", 1).await;
    assert_eq!(not_found.received().len(), 3, "404 is retried: 1 attempt + 2 retries");
    let entry = &items[0];
    assert_eq!(entry["attempts"], 3);
    assert_eq!(entry["lastStatus"], 404);
    assert!(entry["reason"].as_str().unwrap().contains("404"), "{entry}");
    assert_eq!(entry["event"]["id"], "nf-1");
    assert_eq!(entry["event"]["data"], json!({"k": "v"}));
    assert!(entry["deadLetteredAt"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_retry_after_max() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let honoured =
        Subscriber::start_with_answers(vec![Answer::status(StatusCode::TOO_MANY_REQUESTS).header("retry-after", "1")])
            .await;
    let capped = Subscriber::start_with_answers(vec![
        Answer::status(StatusCode::SERVICE_UNAVAILABLE).header("retry-after", "30")
    ])
    .await;
    server
        .trigger(
            "default",
            "honoured",
            json!({"broker": "b", "subscriber": {"uri": honoured.url},
            "delivery": {"backoffDelay": "PT0.05S"}}),
        )
        .await;
    server
        .trigger(
            "default",
            "capped",
            json!({"broker": "b", "subscriber": {"uri": capped.url},
            "delivery": {"backoffDelay": "PT0.05S", "retryAfterMax": "PT0.4S"}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "ra-1", "t", b"{}").await, StatusCode::ACCEPTED);
    honoured.wait_for(2, WAIT).await;
    capped.wait_for(2, WAIT).await;
    let honoured_gap = gaps(&honoured.arrival_times())[0];
    assert!(honoured_gap >= Duration::from_secs(1), "Retry-After: 1 honoured, got {honoured_gap:?}");
    let capped_gap = gaps(&capped.arrival_times())[0];
    assert!(
        capped_gap >= Duration::from_millis(400) && capped_gap < Duration::from_secs(5),
        "Retry-After capped at retryAfterMax, got {capped_gap:?}"
    );
}

#[tokio::test]
async fn a_dead_letter_sink_that_is_down_keeps_the_event_in_the_store_until_redriven() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    subscriber.always(StatusCode::INTERNAL_SERVER_ERROR);
    let sink = Subscriber::start().await;
    sink.set_down(true);
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": subscriber.url},
            "delivery": {"retry": 1, "backoffDelay": "PT0.05S", "deadLetterSink": {"uri": sink.url}}}),
        )
        .await;
    let structured = json!({"specversion": "1.0", "id": "keep-1", "type": "t", "source": "/s",
        "time": "2024-05-01T10:00:00+02:00", "flag": true, "data": {"a": [1, 2]}});
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents+json")
        .json(&structured)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(server.send_binary("default", "b", "keep-2", "t", b"{}").await, StatusCode::ACCEPTED);
    let items = wait_for_dead_letters(&server, "t", 2).await;
    let first = items.iter().find(|i| i["event"]["id"] == "keep-1").unwrap();
    assert_eq!(first["lastStatus"], 500);
    assert_eq!(first["attempts"], 2);
    assert!(first["reason"].as_str().unwrap().contains("dead-letter sink"), "{first}");
    for (name, value) in structured.as_object().unwrap() {
        assert_eq!(&first["event"][name], value, "stored event keeps '{name}'");
    }
    // Paging.
    let (_, page) = server.get("/v1/namespaces/default/triggers/t/deadletters?limit=1").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, page) = server.get(&format!("/v1/namespaces/default/triggers/t/deadletters?limit=1&after={next}")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_ne!(page["items"][0]["id"], items[0]["id"]);
    let (status, problem) = server.get("/v1/namespaces/default/triggers/t/deadletters?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(problem["detail"].as_str().unwrap().contains("limit"));

    // The subscriber recovers; redrive one by id, then the rest.
    subscriber.always(StatusCode::OK);
    let before = subscriber.received().len();
    let keep2 = items.iter().find(|i| i["event"]["id"] == "keep-2").unwrap()["id"].as_str().unwrap().to_owned();
    let response = reqwest::Client::new()
        .post(format!("{}/v1/namespaces/default/triggers/t/deadletters/redrive", server.url))
        .json(&json!({"ids": [keep2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_for_dead_letters_count(&server, "t", 1).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/namespaces/default/triggers/t/deadletters/redrive", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    wait_for_dead_letters_count(&server, "t", 0).await;
    let redelivered: Vec<_> =
        subscriber.received()[before..].iter().filter_map(|r| r.header("ce-id").map(str::to_owned)).collect();
    assert!(
        redelivered.contains(&"keep-1".to_owned()) && redelivered.contains(&"keep-2".to_owned()),
        "{redelivered:?}"
    );
    let keep1 = subscriber.received().into_iter().rev().find(|r| r.header("ce-id") == Some("keep-1")).unwrap();
    assert_eq!(keep1.header("ce-time"), Some("2024-05-01T10:00:00+02:00"));
    assert_eq!(&keep1.body[..], br#"{"a":[1,2]}"#);
    assert!(sink.received().is_empty());
}

async fn wait_for_dead_letters_count(server: &Server, trigger: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while dead_letters(server, trigger).await.len() != count {
        assert!(Instant::now() < deadline, "dead letters never reached {count}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dead_letters_can_be_purged_and_unknown_ones_are_404() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    subscriber.always(StatusCode::BAD_REQUEST);
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    for i in 0..3 {
        assert_eq!(server.send_binary("default", "b", &format!("p{i}"), "t", b"{}").await, StatusCode::ACCEPTED);
    }
    let items = wait_for_dead_letters(&server, "t", 3).await;
    let id = items[0]["id"].as_str().unwrap();
    let (status, entry) = server.get(&format!("/v1/namespaces/default/triggers/t/deadletters/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(entry["id"], id);
    let (status, _) = server.delete(&format!("/v1/namespaces/default/triggers/t/deadletters/{id}")).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.delete(&format!("/v1/namespaces/default/triggers/t/deadletters/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = server.delete("/v1/namespaces/default/triggers/t/deadletters").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["purged"], 2);
    assert!(dead_letters(&server, "t").await.is_empty());
    let (status, _) = server.get("/v1/namespaces/default/triggers/nope/deadletters").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/namespaces/default/triggers/t/deadletters/redrive", server.url))
        .json(&json!({"ids": ["00000000000000009999"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn replies_are_written_back_and_routed_to_the_trigger_matching_their_type() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let reply = Answer::status(StatusCode::OK)
        .header("ce-specversion", "1.0")
        .header("ce-id", "reply-1")
        .header("ce-type", "order.confirmed")
        .header("ce-source", "/confirmer")
        .header("content-type", "application/json")
        .body(r#"{"confirmed":true}"#);
    let confirmer = Subscriber::start_with_answers(vec![reply]).await;
    let audit = Subscriber::start().await;
    // A 202 is never a reply, whatever it carries.
    let not_a_reply = Answer::status(StatusCode::ACCEPTED)
        .header("ce-specversion", "1.0")
        .header("ce-id", "not-a-reply")
        .header("ce-type", "order.confirmed")
        .header("ce-source", "/x");
    let accepting = Subscriber::start_with_answers(vec![not_a_reply]).await;
    server.trigger("default", "confirm", json!({"broker": "b", "filter": {"attributes": {"type": "order.created"}}, "subscriber": {"uri": confirmer.url}})).await;
    server.trigger("default", "accept", json!({"broker": "b", "filter": {"attributes": {"type": "order.created"}}, "subscriber": {"uri": accepting.url}})).await;
    server.trigger("default", "audit", json!({"broker": "b", "filter": {"attributes": {"type": "order.confirmed"}}, "subscriber": {"uri": audit.url}})).await;
    assert_eq!(server.send_binary("default", "b", "o-1", "order.created", b"{}").await, StatusCode::ACCEPTED);
    let received = audit.wait_for(1, WAIT).await.remove(0);
    assert_eq!(received.header("ce-id"), Some("reply-1"));
    assert_eq!(received.header("ce-source"), Some("/confirmer"));
    assert_eq!(&received.body[..], br#"{"confirmed":true}"#);
    assert!(received.header("ce-knativearrivaltime").is_some());
    assert!(received.header("ce-knativebrokerttl").is_none(), "the hop counter is the broker's, not the subscriber's");
    // Once o-1's deliveries are final, every reply they make is written (a reply is appended
    // before its delivery is final), the 202's too had it wrongly been taken for one. Each is
    // an order.confirmed, so audit must have as many as were written. Counted, because audit's
    // backlog alone would not prove it on Kafka: the 202's reply would go to the partition of
    // its own source, which audit may not have read from yet.
    server.wait_until_all_drained("default", &["confirm", "accept"], WAIT).await;
    let replies = server.metric("switchyard_reply_events_total", &[("outcome", "written")]).await.unwrap_or(0.0);
    audit.wait_for(replies as usize, WAIT).await;
    server.wait_until_drained("default", "audit", WAIT).await;
    assert_eq!(audit.ids().into_iter().collect::<Vec<_>>(), ["reply-1"]);
}

#[tokio::test]
async fn reply_loops_are_bounded_by_the_hop_counter() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let echo = Subscriber::start().await;
    echo.always(
        Answer::status(StatusCode::OK)
            .header("ce-specversion", "1.0")
            .header("ce-id", "echo")
            .header("ce-type", "ping")
            .header("ce-source", "/echo"),
    );
    server
        .trigger(
            "default",
            "loop",
            json!({"broker": "b", "filter": {"attributes": {"type": "ping"}}, "subscriber": {"uri": echo.url}}),
        )
        .await;
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "start")
        .header("ce-type", "ping")
        .header("ce-source", "/test")
        .header("ce-knativebrokerttl", "5")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    // Hops with ttl 5, 4, 3, 2, 1; the reply to the last would have 0 and is dropped.
    echo.wait_for(5, WAIT).await;
    // A sixth hop's event would be appended before the fifth delivery is final, and then
    // delivered before the backlog is 0 (replies share the source /echo, so the partition the
    // trigger took hops 2 to 5 from).
    server.wait_until_drained("default", "loop", WAIT).await;
    assert_eq!(echo.received().len(), 5);
}

#[tokio::test]
async fn an_invalid_reply_is_a_failed_attempt() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let invalid = Answer::status(StatusCode::OK)
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","type":"x"}"#);
    let subscriber = Subscriber::start_with_answers(vec![invalid]).await;
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": subscriber.url}, "delivery": {"backoffDelay": "PT0.05S"}}),
        )
        .await;
    assert_eq!(server.send_binary("default", "b", "iv-1", "t", b"{}").await, StatusCode::ACCEPTED);
    subscriber.wait_for(2, WAIT).await;
    // Final once committed past: no third attempt can follow.
    server.wait_until_drained("default", "t", WAIT).await;
    assert_eq!(subscriber.received().len(), 2, "retried once, then the plain 200 ends it");
}

#[tokio::test]
async fn retries_in_progress_survive_kill_9() {
    let mut server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    subscriber.always(StatusCode::SERVICE_UNAVAILABLE);
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": subscriber.url},
            "delivery": {"retry": 100, "backoffPolicy": "linear", "backoffDelay": "PT0.1S"}}),
        )
        .await;
    for i in 0..20 {
        assert_eq!(server.send_binary("default", "b", &format!("k{i}"), "t", b"{}").await, StatusCode::ACCEPTED);
    }
    subscriber.wait_for(40, WAIT).await;
    server.kill9();
    subscriber.always(StatusCode::OK);
    let failed = subscriber.received().len();
    server.restart().await;
    let deadline = Instant::now() + WAIT;
    loop {
        let delivered: std::collections::BTreeSet<_> =
            subscriber.received()[failed..].iter().filter_map(|r| r.header("ce-id").map(str::to_owned)).collect();
        if delivered.len() == 20 {
            break;
        }
        assert!(Instant::now() < deadline, "only {} of 20 delivered after restart", delivered.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A subscriber that fails the first attempts of chosen events and records, per partition
/// key, the order of successful deliveries; it also tracks the most requests in flight.
#[derive(Clone, Default)]
struct Recorder {
    failures_left: Arc<Mutex<HashMap<String, usize>>>,
    delivered: Arc<Mutex<Vec<(String, String)>>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    hold: Duration,
}

impl Recorder {
    async fn start(self) -> (String, Recorder) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let state = self.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap, _body: Bytes| {
            let state = state.clone();
            async move {
                let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                state.max_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(state.hold).await;
                state.in_flight.fetch_sub(1, Ordering::SeqCst);
                let id = headers.get("ce-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let key = headers.get("ce-partitionkey").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let mut failures = state.failures_left.lock().unwrap();
                if let Some(left) = failures.get_mut(&id).filter(|left| **left > 0) {
                    *left -= 1;
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                state.delivered.lock().unwrap().push((key, id));
                StatusCode::OK.into_response()
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, self)
    }

    fn delivered(&self) -> Vec<(String, String)> {
        self.delivered.lock().unwrap().clone()
    }
}

async fn send_keyed(server: &Server, id: &str, key: &str) {
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", id)
        .header("ce-type", "t")
        .header("ce-source", "/ordered")
        .header("ce-partitionkey", key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn ordered_delivery_keeps_per_key_order_under_failures_while_other_keys_flow() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let recorder = Recorder::default();
    recorder.failures_left.lock().unwrap().insert("a-0".to_owned(), 3);
    recorder.failures_left.lock().unwrap().insert("b-2".to_owned(), 1);
    let (url, recorder) = recorder.start().await;
    server
        .trigger(
            "default",
            "t",
            json!({"broker": "b", "subscriber": {"uri": url},
            "delivery": {"ordering": "ordered", "retry": 10, "backoffPolicy": "linear", "backoffDelay": "PT0.1S"}}),
        )
        .await;
    for i in 0..5 {
        send_keyed(&server, &format!("a-{i}"), "a").await;
        send_keyed(&server, &format!("b-{i}"), "b").await;
    }
    let deadline = Instant::now() + WAIT;
    while recorder.delivered().len() < 10 {
        assert!(Instant::now() < deadline, "delivered only {:?}", recorder.delivered());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let delivered = recorder.delivered();
    for key in ["a", "b"] {
        let order: Vec<_> = delivered.iter().filter(|(k, _)| k == key).map(|(_, id)| id.clone()).collect();
        let expected: Vec<_> = (0..5).map(|i| format!("{key}-{i}")).collect();
        assert_eq!(order, expected, "key {key} delivered in log order");
    }
    // Key b did not wait for key a's retries (a-0 needed 0.1 + 0.2 + 0.3 s of backoff).
    let position = |id: &str| delivered.iter().position(|(_, d)| d == id).unwrap();
    assert!(position("b-4") < position("a-0"), "{delivered:?}");
}

#[tokio::test]
async fn max_in_flight_and_rate_limit_are_respected() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let (bounded_url, bounded) = Recorder { hold: Duration::from_millis(100), ..Default::default() }.start().await;
    let (limited_url, limited) = Recorder::default().start().await;
    server
        .trigger(
            "default",
            "bounded",
            json!({"broker": "b", "subscriber": {"uri": bounded_url}, "delivery": {"maxInFlight": 2}}),
        )
        .await;
    server
        .trigger(
            "default",
            "limited",
            json!({"broker": "b", "subscriber": {"uri": limited_url}, "delivery": {"rateLimit": 20}}),
        )
        .await;
    let started = Instant::now();
    for i in 0..20 {
        assert_eq!(server.send_binary("default", "b", &format!("f{i}"), "t", b"{}").await, StatusCode::ACCEPTED);
    }
    let deadline = Instant::now() + WAIT;
    while bounded.delivered().len() < 20 || limited.delivered().len() < 20 {
        assert!(Instant::now() < deadline, "flow-controlled deliveries did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    assert!(bounded.max_in_flight.load(Ordering::SeqCst) <= 2, "maxInFlight 2 exceeded");
    assert_eq!(bounded.max_in_flight.load(Ordering::SeqCst), 2, "and it is used");
    // 20 attempts at 20/s are spread over at least 19 intervals of 50 ms.
    assert!(elapsed >= Duration::from_millis(900), "rateLimit 20/s delivered 20 events in {elapsed:?}");
}
