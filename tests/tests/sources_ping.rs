//! PingSource end to end: a real server fires on a seconds schedule into a broker (or straight
//! to a URI), a trigger delivers to a real subscriber; restarts neither fire a tick twice nor
//! lose one.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};
use switchyard_tests::{Received, Server, Subscriber};

const WAIT: Duration = Duration::from_secs(30);

/// The tick each ping event is for (`ce-time`), with its id.
fn ticks(received: &[Received]) -> Vec<(String, String)> {
    received
        .iter()
        .map(|r| (r.header("ce-time").expect("ce-time").to_owned(), r.header("ce-id").expect("ce-id").to_owned()))
        .collect()
}

fn seconds(time: &str) -> i64 {
    time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
        .expect("rfc 3339")
        .unix_timestamp()
}

/// Every second from the first tick to the last is there, each with one id, and no id stands
/// for two ticks.
fn assert_every_tick_once(received: &[Received], log: &str) {
    let ticks = ticks(received);
    let times: BTreeSet<i64> = ticks.iter().map(|(time, _)| seconds(time)).collect();
    let ids: BTreeSet<&str> = ticks.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), times.len(), "one id per tick: {ticks:?}");
    let (first, last) = (*times.first().expect("ticks"), *times.last().expect("ticks"));
    let missing: Vec<i64> = (first..=last).filter(|t| !times.contains(t)).collect();
    assert!(missing.is_empty(), "ticks missing between {first} and {last}: {missing:?}; log: {log}");
}

/// Waits until the ticks up to `until` (Unix seconds) have arrived with none missing since the
/// first — deliveries are concurrent, so a later tick may arrive before an earlier one, and a
/// redelivery may arrive before either — then checks them with [`assert_every_tick_once`].
async fn wait_for_every_tick_until(subscriber: &Subscriber, until: i64, server: &Server) -> Vec<Received> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let received = subscriber.received();
        let times: BTreeSet<i64> = ticks(&received).iter().map(|(time, _)| seconds(time)).collect();
        let complete = match (times.first(), times.last()) {
            (Some(&first), Some(&last)) => last >= until && (first..=last).all(|t| times.contains(&t)),
            _ => false,
        };
        if complete || std::time::Instant::now() > deadline {
            assert_every_tick_once(&received, &server.log());
            assert!(complete, "no tick at or after {until} within {WAIT:?}: {times:?}");
            return received;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn ping_into_broker(server: &Server, subscriber: &Subscriber) {
    server.broker("default", "b").await;
    server
        .trigger(
            "default",
            "pings",
            json!({"broker": "b", "filter": {"attributes": {"type": "dev.knative.sources.ping"}}, "subscriber": {"uri": subscriber.url}}),
        )
        .await;
    let (status, body) = server
        .put(
            "/v1/namespaces/default/pingsources/every-second",
            json!({
                "apiVersion": "sources.knative.dev/v1",
                "kind": "PingSource",
                "metadata": {"name": "every-second", "namespace": "default"},
                "spec": {
                    "schedule": "* * * * * *",
                    "contentType": "application/json",
                    "data": "{\"message\": \"Hello world!\"}",
                    "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "b"}},
                    "ceOverrides": {"extensions": {"team": "core"}},
                },
            }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

#[tokio::test]
async fn a_seconds_schedule_fires_once_a_second_into_the_broker() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    ping_into_broker(&server, &subscriber).await;
    // One event a second: every second between the first tick and the last, each once, and
    // the ticks keep up with the clock.
    let started = now();
    let received = wait_for_every_tick_until(&subscriber, started + 4, &server).await;
    let latest = ticks(&received).iter().map(|(time, _)| seconds(time)).max().unwrap_or_default();
    assert!(now() - latest <= 5, "the latest tick is {}s old; log: {}", now() - latest, server.log());
    for event in &received {
        assert_eq!(event.header("ce-type"), Some("dev.knative.sources.ping"));
        assert_eq!(event.header("ce-source"), Some("/apis/v1/namespaces/default/pingsources/every-second"));
        assert_eq!(event.header("content-type"), Some("application/json"));
        assert_eq!(event.header("ce-team"), Some("core"), "ceOverrides.extensions");
        assert_eq!(&event.body[..], b"{\"message\": \"Hello world!\"}");
        let time = event.header("ce-time").expect("time");
        assert!(time.ends_with('Z') && !time.contains('.'), "the tick, a whole second in UTC: {time}");
    }
    let (_, body) = server.get("/v1/namespaces/default/pingsources/every-second").await;
    assert_eq!(body["status"]["conditions"][0]["status"], "True", "{body}");
    assert_eq!(body["status"]["sinkUri"], format!("{}/default/b", server.url));
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"switchyard_source_events_total{kind="PingSource",outcome="sent"}"#), "{metrics}");
}

#[tokio::test]
async fn restarts_neither_fire_a_tick_twice_nor_lose_one() {
    let mut server = Server::start().await;
    let subscriber = Subscriber::start().await;
    ping_into_broker(&server, &subscriber).await;
    subscriber.wait_for(2, WAIT).await;

    // A clean stop, three seconds down, a start: the missed ticks come once, none twice.
    assert!(server.terminate().await.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().await;
    let received = wait_for_every_tick_until(&subscriber, now() + 3, &server).await;
    let ticks = ticks(&received);
    let distinct: BTreeSet<&String> = ticks.iter().map(|(time, _)| time).collect();
    assert_eq!(distinct.len(), ticks.len(), "a tick fired twice across a clean restart: {ticks:?}");

    // kill -9: a tick may be delivered again (at least once), but only as the same event.
    server.kill9();
    // Down over two ticks.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await;
    wait_for_every_tick_until(&subscriber, now() + 3, &server).await;
}

#[tokio::test]
async fn a_uri_sink_that_is_down_loses_no_tick() {
    let server = Server::start().await;
    let sink = Subscriber::start().await;
    let (status, body) = server
        .put(
            "/v1/namespaces/default/pingsources/direct",
            json!({"spec": {"schedule": "* * * * * *", "data": "tick", "sink": {"uri": sink.url}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    sink.wait_for(2, WAIT).await;
    sink.set_down(true);
    // The outage: three ticks the source must keep until the sink is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = server.get("/v1/namespaces/default/pingsources/direct").await;
    assert_eq!(body["status"]["conditions"][0]["reason"], "SinkUnavailable", "{body}");
    sink.set_down(false);
    let received = wait_for_every_tick_until(&sink, now() + 3, &server).await;
    assert!(received.iter().all(|r| &r.body[..] == b"tick" && r.header("ce-specversion") == Some("1.0")));
}

#[tokio::test]
async fn deleting_a_ping_source_stops_it_and_a_new_one_starts_afresh() {
    let server = Server::start().await;
    let subscriber = Subscriber::start().await;
    ping_into_broker(&server, &subscriber).await;
    subscriber.wait_for(1, WAIT).await;
    let (status, _) = server.delete("/v1/namespaces/default/pingsources/every-second").await;
    assert_eq!(status, StatusCode::OK);
    // The deletion is answered once the source has stopped, so every tick it sent is in the
    // log: all of them have arrived once the trigger is past them.
    server.wait_until_drained("default", "pings", WAIT).await;
    let after_delete = subscriber.received().len();
    // Two schedule periods in which a source still running would fire, then until what it
    // fired has arrived.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.wait_until_drained("default", "pings", WAIT).await;
    assert_eq!(subscriber.received().len(), after_delete, "a deleted source still fires");
    let (status, _) = server.get("/v1/namespaces/default/pingsources/every-second").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Declared again, it does not send the ticks of the time it did not exist.
    let (status, _) = server
        .put(
            "/v1/namespaces/default/pingsources/every-second",
            json!({"spec": {"schedule": "* * * * * *", "sink": {"ref": {"kind": "Broker", "name": "b"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    subscriber.wait_for(after_delete + 2, WAIT).await;
    let received = subscriber.received();
    let recent: Vec<i64> = ticks(&received[after_delete..]).iter().map(|(time, _)| seconds(time)).collect();
    let gap_start = ticks(&received[..after_delete]).iter().map(|(time, _)| seconds(time)).max().unwrap_or(0);
    assert!(
        recent.iter().all(|t| *t > gap_start + 2),
        "ticks of the deleted time were sent: {recent:?} after {gap_start}"
    );
}

#[tokio::test]
async fn invalid_ping_sources_are_refused_with_the_field_named() {
    let server = Server::start().await;
    let cases: [(Value, &str); 6] = [
        (json!({"spec": {"schedule": "every minute", "sink": {"uri": "http://127.0.0.1:1/"}}}), "spec.schedule"),
        (json!({"spec": {"timezone": "Mars/Base", "sink": {"uri": "http://127.0.0.1:1/"}}}), "spec.timezone"),
        (json!({"spec": {"schedule": "* * * * *"}}), "spec.sink"),
        (json!({"spec": {"sink": {"ref": {"kind": "Service", "name": "x"}}}}), "spec.sink.ref.kind"),
        (json!({"spec": {"sink": {"uri": "http://x/"}, "colour": "red"}}), "colour"),
        (json!({"apiVersion": "sources.knative.dev/v1", "kind": "GitHubSource", "spec": {}}), "kind"),
    ];
    for (body, field) in cases {
        let (status, problem) = server.put("/v1/namespaces/default/pingsources/p", body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {problem}");
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(field), "{body}: {detail}");
    }
}
