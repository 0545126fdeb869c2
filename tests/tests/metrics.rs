//! `/metrics` after real traffic: names, label sets and values an operator relies on.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{Answer, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(15);

/// One scrape: series (`name{labels}` as exposed) → value, plus the `# TYPE` of each family.
struct Scrape {
    series: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Scrape {
    async fn of(server: &Server) -> Scrape {
        let response = reqwest::get(format!("{}/metrics", server.url)).await.expect("scrape");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/plain; version=0.0.4"), "content type {content_type}");
        let text = response.text().await.unwrap();
        let mut series = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE line");
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') {
                let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line '{line}'"));
                series.insert(key.to_owned(), value.parse().unwrap_or_else(|_| panic!("value in '{line}'")));
            }
        }
        Scrape { series, types }
    }

    fn value(&self, key: &str) -> f64 {
        *self.series.get(key).unwrap_or_else(|| panic!("no series {key}; have {:#?}", self.series.keys()))
    }

    /// The label names used by every series of a family.
    fn label_names(&self, family: &str) -> Vec<Vec<String>> {
        let mut sets: Vec<Vec<String>> = self
            .series
            .keys()
            .filter(|key| key.split('{').next() == Some(family))
            .map(|key| {
                let labels = key.split_once('{').map_or("", |(_, rest)| rest.trim_end_matches('}'));
                labels.split(',').filter(|l| !l.is_empty()).map(|l| l.split('=').next().unwrap().to_owned()).collect()
            })
            .collect();
        sets.sort();
        sets.dedup();
        sets
    }
}

async fn scrape_until(server: &Server, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = Scrape::of(server).await;
        if done(&scrape) || tokio::time::Instant::now() > deadline {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_count_ingest_delivery_dead_letters_replies_and_the_log() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    let failing = Subscriber::start().await;
    failing.always(StatusCode::INTERNAL_SERVER_ERROR);
    let reply = Answer::status(StatusCode::OK)
        .header("ce-specversion", "1.0")
        .header("ce-id", "reply-1")
        .header("ce-type", "order.confirmed")
        .header("ce-source", "/confirmer");
    let replier = Subscriber::start_with_answers(vec![reply]).await;
    server.trigger("default", "ok", json!({"broker": "b", "filter": {"attributes": {"type": "order.created"}}, "subscriber": {"uri": subscriber.url}})).await;
    server.trigger("default", "failing", json!({"broker": "b", "filter": {"attributes": {"type": "order.created"}}, "subscriber": {"uri": failing.url},
        "delivery": {"retry": 1, "backoffDelay": "PT0.01S"}})).await;
    server.trigger("default", "replier", json!({"broker": "b", "filter": {"attributes": {"type": "order.reply-me"}}, "subscriber": {"uri": replier.url}})).await;

    for id in ["1", "2"] {
        assert_eq!(server.send_binary("default", "b", id, "order.created", b"{}").await, StatusCode::ACCEPTED);
    }
    let batch = [json!({"specversion": "1.0", "id": "3", "type": "order.created", "source": "/s"})];
    assert_eq!(server.send_batch("default", "b", &batch).await, StatusCode::ACCEPTED);
    assert_eq!(server.send_binary("default", "b", "r", "order.reply-me", b"{}").await, StatusCode::ACCEPTED);
    // Refusals, one per reason a client can cause.
    let client = reqwest::Client::new();
    let invalid =
        client.post(format!("{}/default/b", server.url)).header("ce-specversion", "1.0").send().await.unwrap();
    assert_eq!(invalid.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.send_binary("default", "nope", "x", "t", b"{}").await, StatusCode::NOT_FOUND);
    let unsupported = client
        .post(format!("{}/default/b", server.url))
        .header("content-type", "application/cloudevents+xml")
        .body("<e/>")
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    subscriber.wait_for(3, WAIT).await;

    let scrape = scrape_until(&server, |s| {
        s.series.get(r#"switchyard_dead_lettered_events_total{destination="store"}"#) == Some(&3.0)
            && s.series.get(r#"switchyard_reply_events_total{outcome="written"}"#) == Some(&1.0)
    })
    .await;
    assert_eq!(scrape.value(r#"switchyard_ingest_events_total{mode="binary"}"#), 3.0);
    assert_eq!(scrape.value(r#"switchyard_ingest_events_total{mode="batch"}"#), 1.0);
    assert!(scrape.value("switchyard_ingest_bytes_total") > 0.0);
    for reason in ["invalid_event", "unknown_broker", "unsupported_media_type"] {
        assert_eq!(scrape.value(&format!(r#"switchyard_ingest_rejected_requests_total{{reason="{reason}"}}"#)), 1.0);
    }
    assert_eq!(scrape.value("switchyard_ingest_duration_seconds_count"), 7.0);
    // 3 delivered to `ok`, 1 to `replier`, 1 reply (order.confirmed) matches nothing; `failing`
    // answered 500 twice (first attempt + 1 retry) for each of 3 events.
    assert_eq!(scrape.value(r#"switchyard_delivery_attempts_total{outcome="success"}"#), 4.0);
    assert_eq!(scrape.value(r#"switchyard_delivery_attempts_total{outcome="server_error"}"#), 6.0);
    assert_eq!(scrape.value("switchyard_delivery_duration_seconds_count"), 10.0);
    assert_eq!(scrape.value(r#"switchyard_delivery_duration_seconds_bucket{le="+Inf"}"#), 10.0);
    assert_eq!(scrape.value(r#"switchyard_dead_lettered_events_total{destination="store"}"#), 3.0);
    assert_eq!(scrape.value(r#"switchyard_reply_events_total{outcome="written"}"#), 1.0);
    // One append per accepted ingest request, whatever the backend.
    assert_eq!(scrape.value("switchyard_log_append_duration_seconds_count"), 4.0);
    if !switchyard_tests::on_kafka() {
        // The embedded log's own writes: 4 ingested events + 1 reply.
        assert_eq!(scrape.value("switchyard_log_appended_events_total"), 5.0);
        assert!(scrape.value("switchyard_log_fsyncs_total") >= 1.0);
        assert!(scrape.value("switchyard_log_fsync_batch_appends_count") >= 1.0);
        assert!(scrape.value("switchyard_log_written_bytes_total") > 0.0);
    }

    // Names follow switchyard_<thing>_<unit>[_total]; each family has a type; label sets are
    // the closed ones.
    for (family, kind) in &scrape.types {
        assert!(family.starts_with("switchyard_"), "family {family}");
        match kind.as_str() {
            "counter" => assert!(family.ends_with("_total"), "counter {family}"),
            "histogram" => assert!(family.ends_with("_seconds") || family.ends_with("_appends"), "histogram {family}"),
            "gauge" => {}
            other => panic!("family {family} has type {other}"),
        }
    }
    let labels = |names: &[&str]| vec![names.iter().map(|n| n.to_string()).collect::<Vec<_>>()];
    assert_eq!(scrape.label_names("switchyard_ingest_events_total"), labels(&["mode"]));
    assert_eq!(scrape.label_names("switchyard_ingest_rejected_requests_total"), labels(&["reason"]));
    assert_eq!(scrape.label_names("switchyard_delivery_attempts_total"), labels(&["outcome"]));
    assert_eq!(scrape.label_names("switchyard_dead_lettered_events_total"), labels(&["destination"]));
    assert_eq!(scrape.label_names("switchyard_trigger_backlog"), labels(&["namespace", "trigger"]));
    assert_eq!(scrape.label_names("switchyard_trigger_backlog_age_seconds"), labels(&["namespace", "trigger"]));
}

#[tokio::test]
async fn backlog_and_its_age_grow_behind_a_stalled_subscriber_and_drain_when_it_recovers() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let stalled = Subscriber::start().await;
    stalled.always(StatusCode::SERVICE_UNAVAILABLE);
    let healthy = Subscriber::start().await;
    server
        .trigger(
            "default",
            "stalled",
            json!({"broker": "b", "subscriber": {"uri": stalled.url},
        "delivery": {"retry": 100, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}}),
        )
        .await;
    server.trigger("default", "healthy", json!({"broker": "b", "subscriber": {"uri": healthy.url}})).await;
    for id in 0..5 {
        assert_eq!(server.send_binary("default", "b", &id.to_string(), "t", b"{}").await, StatusCode::ACCEPTED);
    }
    healthy.wait_for(5, WAIT).await;
    // The age is what is measured: the stalled trigger's oldest event must be over 1 s old.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let stalled_backlog = r#"switchyard_trigger_backlog{namespace="default",trigger="stalled"}"#;
    let stalled_age = r#"switchyard_trigger_backlog_age_seconds{namespace="default",trigger="stalled"}"#;
    let healthy_backlog = r#"switchyard_trigger_backlog{namespace="default",trigger="healthy"}"#;
    let healthy_age = r#"switchyard_trigger_backlog_age_seconds{namespace="default",trigger="healthy"}"#;
    let scrape = scrape_until(&server, |s| s.series.get(healthy_backlog) == Some(&0.0)).await;
    assert_eq!(scrape.value(stalled_backlog), 5.0);
    let age = scrape.value(stalled_age);
    assert!((1.0..60.0).contains(&age), "the oldest undelivered event is about 1 s old, got {age}");
    assert_eq!(scrape.value(healthy_backlog), 0.0);
    assert_eq!(scrape.value(healthy_age), 0.0);
    assert_eq!(scrape.types.get("switchyard_trigger_backlog").map(String::as_str), Some("gauge"));

    stalled.always(StatusCode::OK);
    let scrape = scrape_until(&server, |s| s.series.get(stalled_backlog) == Some(&0.0)).await;
    assert_eq!(scrape.value(stalled_backlog), 0.0);
    assert_eq!(scrape.value(stalled_age), 0.0);

    // A deleted trigger's series go with it.
    server.delete("/v1/namespaces/default/triggers/stalled").await;
    let scrape = Scrape::of(&server).await;
    assert!(!scrape.series.contains_key(stalled_backlog));
    assert!(scrape.series.contains_key(healthy_backlog));
}
