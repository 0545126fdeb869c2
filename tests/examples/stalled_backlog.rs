//! Benchmark: memory with a stalled subscriber and a large backlog.
//!
//! `cargo build --release -p switchyard && cargo run --release -p switchyard-tests --example stalled_backlog -- [EVENTS]`
//!
//! Starts the release binary, points a trigger at a subscriber that never answers, ingests
//! EVENTS (default 100,000) 1 KiB events in batches of 100, and prints the server's RSS as the
//! backlog grows and while it stays stalled. The dispatcher reads at most a bounded window
//! ahead of the watermark, so RSS should level off however large the backlog grows.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests::{Answer, Server, Subscriber};

#[tokio::main]
async fn main() {
    let events: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let server = Server::start().await;
    server.broker("default", "b").await;
    let stalled = Subscriber::start().await;
    stalled.always(Answer::status(reqwest::StatusCode::OK).after(Duration::from_secs(3600)));
    server
        .trigger(
            "default",
            "stalled",
            json!({"broker": "b", "subscriber": {"uri": stalled.url}, "delivery": {"timeout": "PT10S"}}),
        )
        .await;
    let rss_mib = |server: &Server| server.rss_kib().unwrap_or(0) as f64 / 1024.0;
    println!("{:>12}  {:>10}", "backlog", "RSS MiB");
    println!("{:>12}  {:>10.1}", "idle", rss_mib(&server));

    let data = "x".repeat(1024);
    let started = Instant::now();
    let mut sent = 0;
    let mut next_report = events / 10;
    while sent < events {
        let batch: Vec<_> = (sent..(sent + 100).min(events))
            .map(|i| json!({"specversion": "1.0", "id": format!("e{i}"), "type": "t", "source": "/bench", "datacontenttype": "text/plain", "data": data}))
            .collect();
        assert_eq!(server.send_batch("default", "b", &batch).await, axum::http::StatusCode::ACCEPTED);
        sent += batch.len();
        if sent >= next_report {
            println!("{sent:>12}  {:>10.1}", rss_mib(&server));
            next_report += events / 10;
        }
    }
    println!("ingested {events} events in {:.1}s", started.elapsed().as_secs_f64());
    for seconds in [5, 15, 30] {
        tokio::time::sleep_until((started + Duration::from_secs(seconds)).max(Instant::now()).into()).await;
        println!("{:>12}  {:>10.1}", format!("stalled {seconds}s"), rss_mib(&server));
    }
    println!("subscriber saw {} attempts (the bounded in-flight window)", stalled.received().len());
}
