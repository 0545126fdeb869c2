//! One read, many triggers: hundreds of triggers on one broker each get exactly their events,
//! and a trigger that falls behind is detached, reads the log itself, and still gets every
//! event without delaying the others.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{Server, Subscriber};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_triggers_each_receive_exactly_their_events() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    let triggers = 300;
    for i in 0..triggers {
        let spec = if i % 3 == 0 {
            json!({"broker": "b", "filter": {"attributes": {"type": format!("type.{i}")}}, "subscriber": {"uri": format!("{}t{i}", subscriber.url)}})
        } else if i % 3 == 1 {
            json!({"broker": "b", "filters": [{"exact": {"type": format!("type.{i}")}}, {"prefix": {"source": "/s"}}], "subscriber": {"uri": format!("{}t{i}", subscriber.url)}})
        } else {
            json!({"broker": "b", "filters": [{"cesql": format!("type = 'type.{i}'")}], "subscriber": {"uri": format!("{}t{i}", subscriber.url)}})
        };
        server.trigger("default", &format!("t{i}"), spec).await;
    }
    // Two events per trigger, plus events nobody wants.
    for round in 0..2 {
        let events: Vec<_> = (0..triggers + 50)
            .map(|i| json!({"specversion": "1.0", "id": format!("{round}-{i}"), "type": format!("type.{i}"), "source": "/s"}))
            .collect();
        assert_eq!(server.send_batch("default", "b", &events).await, StatusCode::ACCEPTED);
    }
    subscriber.wait_for(2 * triggers, Duration::from_secs(30)).await;
    // Every trigger is past every event: a duplicate or an event gone to the wrong trigger
    // would have arrived.
    let names: Vec<String> = (0..triggers).map(|i| format!("t{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    server.wait_until_all_drained("default", &names, Duration::from_secs(30)).await;
    let received = subscriber.received();
    assert_eq!(received.len(), 2 * triggers, "no event delivered twice or to the wrong trigger");
    for r in &received {
        let id = r.header("ce-id").unwrap();
        let i = id.split('-').nth(1).unwrap();
        assert_eq!(r.path, format!("/t{i}"), "{id} went to {}", r.path);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_trigger_is_detached_catches_up_alone_and_does_not_delay_others() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let fast = Subscriber::start().await;
    let slow = Subscriber::start().await;
    slow.set_down(true);
    server.trigger("default", "fast", json!({"broker": "b", "subscriber": {"uri": fast.url}})).await;
    server
        .trigger(
            "default",
            "slow",
            json!({"broker": "b", "subscriber": {"uri": slow.url},
            "delivery": {"maxInFlight": 1, "retry": 1000, "backoffPolicy": "linear", "backoffDelay": "PT0.05S"}}),
        )
        .await;
    // More than the slow trigger's read-ahead window plus its queue: it must be detached.
    let total = 3000;
    for chunk in 0..total / 100 {
        let events: Vec<_> = (chunk * 100..(chunk + 1) * 100)
            .map(|i| json!({"specversion": "1.0", "id": format!("e{i}"), "type": "t", "source": "/s"}))
            .collect();
        assert_eq!(server.send_batch("default", "b", &events).await, StatusCode::ACCEPTED);
    }
    let started = Instant::now();
    fast.wait_for(total, Duration::from_secs(30)).await;
    assert_eq!(fast.ids().len(), total);
    let fast_took = started.elapsed();
    slow.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ids: BTreeSet<_> = slow.ids();
        if ids.len() == total {
            break;
        }
        assert!(Instant::now() < deadline, "slow trigger got {} of {total} (fast took {fast_took:?})", ids.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.log().contains("detached from the fanout"), "the slow trigger was detached: {}", server.log());
}
