//! Benchmark: dispatch throughput and memory with many triggers on one broker.
//!
//! `cargo build --release -p switchyard && cargo run --release -p switchyard-tests --example many_triggers -- [TRIGGERS...]`
//!
//! For each trigger count (default 10 and 10,000), starts the release binary on a fresh data
//! directory, declares that many triggers on one broker (exact `type` filters, one in a hundred
//! a CESQL filter, all delivering to one local subscriber), then ingests 20,000 events whose
//! types spread over the first ten triggers, and measures the time from the first ingest to the
//! last delivery. Prints events/s and RSS for each count, and the ratio to the first count.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::{Server, Subscriber};

const EVENTS: usize = 20_000;

#[tokio::main]
async fn main() {
    let counts: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let counts = if counts.is_empty() { vec![10, 10_000] } else { counts };
    println!(
        "{:>10}  {:>12}  {:>10}  {:>12}  {:>12}",
        "triggers", "declare s", "events/s", "RSS MiB idle", "RSS MiB load"
    );
    let mut baseline = None;
    for triggers in counts {
        let (rate, declare, idle, loaded) = run(triggers).await;
        let ratio = baseline.map(|b: f64| format!("  ({:.2}x of {} triggers)", rate / b, 10)).unwrap_or_default();
        baseline.get_or_insert(rate);
        println!("{triggers:>10}  {declare:>12.1}  {rate:>10.0}  {idle:>12.1}  {loaded:>12.1}{ratio}");
    }
}

async fn run(triggers: usize) -> (f64, f64, f64, f64) {
    let server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    let client = reqwest::Client::new();
    let declare_started = Instant::now();
    // Declared 16 at a time: the server serialises declarations anyway.
    let mut pending = Vec::new();
    for i in 0..triggers {
        let filter = if i % 100 == 99 {
            json!({"filters": [{"cesql": format!("type = 'type.{i}' AND EXISTS source")}]})
        } else {
            json!({"filter": {"attributes": {"type": format!("type.{i}")}}})
        };
        let mut spec = json!({"broker": "b", "subscriber": {"uri": subscriber.url}});
        spec.as_object_mut().unwrap().extend(filter.as_object().unwrap().clone());
        let request = client
            .put(format!("{}/v1/namespaces/default/triggers/t{i}", server.url))
            .json(&json!({"spec": spec}))
            .send();
        pending.push(request);
        if pending.len() == 16 {
            for response in futures_join(std::mem::take(&mut pending)).await {
                assert!(response.status().is_success());
            }
        }
    }
    for response in futures_join(pending).await {
        assert!(response.status().is_success());
    }
    let declare = declare_started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = server.rss_kib().unwrap_or(0) as f64 / 1024.0;

    let started = Instant::now();
    for chunk in 0..EVENTS / 100 {
        let batch: Vec<_> = (chunk * 100..(chunk + 1) * 100)
            .map(|n| json!({"specversion": "1.0", "id": format!("e{n}"), "type": format!("type.{}", n % 10), "source": "/bench"}))
            .collect();
        assert_eq!(server.send_batch("default", "b", &batch).await, axum::http::StatusCode::ACCEPTED);
    }
    let received = subscriber.wait_for(EVENTS, Duration::from_secs(300)).await;
    let elapsed = received.last().map(|r| r.at - started).unwrap_or_else(|| started.elapsed());
    let loaded = server.rss_kib().unwrap_or(0) as f64 / 1024.0;
    (EVENTS as f64 / elapsed.as_secs_f64(), declare, idle, loaded)
}

async fn futures_join(
    requests: Vec<impl std::future::Future<Output = reqwest::Result<reqwest::Response>> + Send + 'static>,
) -> Vec<reqwest::Response> {
    let handles: Vec<_> = requests.into_iter().map(tokio::spawn).collect();
    let mut responses = Vec::new();
    for handle in handles {
        responses.push(handle.await.expect("task").expect("request"));
    }
    responses
}
