//! Restarting triggers holds up nobody: a broker PUT restarts its triggers side by side, each
//! old worker's grace period (5 s for in-flight deliveries) overlapping the others', and
//! `/metrics` answers meanwhile.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{Answer, Server, Subscriber};

/// How long a replaced trigger's in-flight deliveries may finish (the dispatcher's fixed
/// grace).
const REPLACE_GRACE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_put_restarts_its_triggers_side_by_side_and_metrics_answer_meanwhile() {
    let server = Server::start().await;
    server.broker("default", "b").await;
    // Every delivery is held for a minute, so each trigger has one in flight when replaced.
    let subscriber = Subscriber::start().await;
    subscriber.always(Answer::status(StatusCode::OK).after(Duration::from_secs(60)));
    let triggers = ["t0", "t1", "t2"];
    for name in triggers {
        let uri = format!("{}{name}", subscriber.url);
        server.trigger("default", name, json!({"broker": "b", "subscriber": {"uri": uri}})).await;
    }
    let event = json!({"specversion": "1.0", "id": "e0", "type": "t", "source": "/s"});
    assert_eq!(server.send_batch("default", "b", &[event]).await, StatusCode::ACCEPTED);
    subscriber.wait_for(triggers.len(), Duration::from_secs(10)).await;

    // The PUT restarts the three triggers. One after another, each waiting out its old
    // worker's grace under a lock, it took three grace periods, and /metrics waited as long.
    let put = {
        let server_url = server.url.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let response = reqwest::Client::new()
                .put(format!("{server_url}/v1/namespaces/default/brokers/b"))
                .json(&json!({"spec": {"delivery": {"retry": 2}}}))
                .send()
                .await
                .expect("put");
            (response.status(), started.elapsed())
        })
    };
    let scraping = Instant::now();
    let text = server.metrics().await;
    let scraped = scraping.elapsed();
    let (status, took) = put.await.unwrap();
    assert!(status.is_success(), "PUT answered {status}");
    assert!(took < REPLACE_GRACE, "the PUT waited for the old workers: {took:?}");
    assert!(scraped < REPLACE_GRACE, "/metrics waited for the old workers: {scraped:?}");
    for name in triggers {
        let backlog = switchyard_tests::metric_value(
            &text,
            "switchyard_trigger_backlog",
            &[("namespace", "default"), ("trigger", name)],
        );
        assert_eq!(backlog, Some(1.0), "{name}'s backlog during the restart");
    }

    // The old workers stopped at the end of one grace period, side by side, and the new ones
    // redelivered the event they had in flight.
    let received = subscriber.wait_for(2 * triggers.len(), 2 * REPLACE_GRACE + Duration::from_secs(10)).await;
    let first = received[..triggers.len()].iter().map(|r| r.at).max().unwrap();
    for retried in &received[triggers.len()..] {
        let after = retried.at - first;
        assert!(after < 2 * REPLACE_GRACE, "{} redelivered {after:?} after the first try", retried.path);
    }
    for name in triggers {
        let (status, body) = server.get(&format!("/v1/namespaces/default/triggers/{name}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["status"]["conditions"][0]["status"], "True", "{name}: {body}");
    }
}
