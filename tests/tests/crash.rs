//! Nothing acknowledged is lost: `kill -9` under concurrent ingest, a torn log tail, restart.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{Server, Subscriber};

fn newest_segment(server: &Server) -> std::path::PathBuf {
    let dir = server.data_dir().join("log/topics/default.b");
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "log"))
        .collect();
    segments.sort();
    segments.pop().expect("a segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_events_survive_kill_9_and_a_torn_tail() {
    let mut server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    // A second trigger whose subscriber is down through the crash: its events are all still
    // undelivered (retrying) when the process dies.
    let down = Subscriber::start().await;
    down.set_down(true);
    server.trigger("default", "down", json!({"broker": "b", "subscriber": {"uri": down.url}})).await;

    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for producer in 0..8 {
        let (url, acknowledged, stop) = (format!("{}/default/b", server.url), acknowledged.clone(), stop.clone());
        producers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("p{producer}-{i}");
                let sent = client
                    .post(&url)
                    .header("ce-specversion", "1.0")
                    .header("ce-id", &id)
                    .header("ce-type", "load")
                    .header("ce-source", "/crash")
                    .body(vec![b'x'; 512])
                    .send()
                    .await;
                if matches!(sent, Ok(ref r) if r.status() == StatusCode::ACCEPTED) {
                    acknowledged.lock().unwrap().insert(id);
                }
                i += 1;
            }
        }));
    }
    // The load itself: the kill must land while ingest is busy.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    stop.store(true, Ordering::Relaxed);
    for producer in producers {
        producer.await.unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 100, "load too light to mean anything: {}", acknowledged.len());

    // A torn tail: half a record after the last complete one, as a crash mid-write leaves it.
    let segment = newest_segment(&server);
    let length_before = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().append(true).open(&segment).unwrap().write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();

    server.restart().await;
    // Recovery cuts the junk, and with it any record the kill itself tore: a write(2) that SIGKILL
    // interrupts can be partial (one CI run lost 616 bytes more). Such a record was never
    // acknowledged; that no acknowledged event is lost is checked below.
    let length_after = std::fs::metadata(&segment).unwrap().len();
    assert!(
        length_after <= length_before,
        "torn tail not truncated at recovery: {length_after} > {length_before} bytes"
    );
    assert_eq!(server.send_binary("default", "b", "after-restart", "t", b"{}").await, StatusCode::ACCEPTED);

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let delivered = subscriber.ids();
        let missing: Vec<_> = acknowledged.iter().filter(|id| !delivered.contains(*id)).take(5).collect();
        if missing.is_empty() && delivered.contains("after-restart") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} acknowledged events never delivered, e.g. {missing:?}",
            acknowledged.len() - acknowledged.iter().filter(|id| delivered.contains(*id)).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn progress_survives_a_clean_restart_without_redelivering_everything() {
    let mut server = Server::start().await;
    server.broker("default", "b").await;
    let subscriber = Subscriber::start().await;
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    for i in 0..50 {
        assert_eq!(server.send_binary("default", "b", &format!("e{i}"), "t", b"{}").await, StatusCode::ACCEPTED);
    }
    subscriber.wait_for(50, Duration::from_secs(15)).await;
    let status = server.terminate().await;
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    server.restart().await;
    assert_eq!(server.send_binary("default", "b", "e50", "t", b"{}").await, StatusCode::ACCEPTED);
    subscriber.wait_for(51, Duration::from_secs(15)).await;
    // Had the stop not committed, the restarted trigger would resume below e50 and redeliver
    // those events before its backlog is 0.
    server.wait_until_drained("default", "t", Duration::from_secs(15)).await;
    let ids: Vec<_> = subscriber.received().iter().filter_map(|r| r.header("ce-id").map(str::to_owned)).collect();
    assert_eq!(ids.len(), 51, "a graceful stop commits progress: nothing redelivered: {ids:?}\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_refuses_ingest_lets_deliveries_finish_and_exits_0() {
    let mut server = Server::start().await;
    server.broker("default", "b").await;
    let slow = Subscriber::start().await;
    slow.always(switchyard_tests::Answer::status(StatusCode::OK).after(Duration::from_millis(1500)));
    server.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": slow.url}})).await;
    assert_eq!(server.send_binary("default", "b", "in-flight", "t", b"{}").await, StatusCode::ACCEPTED);
    slow.wait_for(1, Duration::from_secs(10)).await;
    // The delivery is in flight (the subscriber answers only after 1.5 s): stop now.
    let pid = server.pid().unwrap();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    // Until the server has taken the signal. Ingest checks for a stop before it looks up the
    // broker, so a request to a broker that does not exist answers 404 until then, 503 from
    // then on, and appends nothing either way.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.send_binary("default", "nope", "probe", "t", b"{}").await != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "the server did not start stopping after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let response = reqwest::Client::new()
        .post(format!("{}/default/b", server.url))
        .header("ce-specversion", "1.0")
        .header("ce-id", "late")
        .header("ce-type", "t")
        .header("ce-source", "/s")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE, "ingest refuses while stopping");
    assert!(response.headers().contains_key("retry-after"));
    let status = server.terminate().await;
    assert!(status.success(), "exit code 0 after the in-flight delivery finished, got {status}");
    // The finished delivery's progress was persisted: a restart does not redeliver it.
    slow.always(StatusCode::OK);
    server.restart().await;
    assert_eq!(server.send_binary("default", "b", "after", "t", b"{}").await, StatusCode::ACCEPTED);
    slow.wait_for(2, Duration::from_secs(10)).await;
    // A redelivery of "in-flight" (the same source as "after", so the same partition) would
    // come before the backlog is 0.
    server.wait_until_drained("default", "t", Duration::from_secs(10)).await;
    let ids: Vec<_> = slow.received().iter().filter_map(|r| r.header("ce-id").map(str::to_owned)).collect();
    assert_eq!(ids, ["in-flight", "after"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grace_period_bounds_the_whole_stop_not_each_trigger() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchyard.toml");
    std::fs::write(&config, "shutdown_grace_secs = 2\n").unwrap();
    let mut server = Server::start_with(&["--config", config.to_str().unwrap()]).await;
    server.broker("default", "b").await;
    let hung = Subscriber::start().await;
    hung.always(switchyard_tests::Answer::status(StatusCode::OK).after(Duration::from_secs(60)));
    let triggers = 4;
    for i in 0..triggers {
        server.trigger("default", &format!("t{i}"), json!({"broker": "b", "subscriber": {"uri": hung.url}})).await;
    }
    assert_eq!(server.send_binary("default", "b", "hangs", "t", b"{}").await, StatusCode::ACCEPTED);
    hung.wait_for(triggers, Duration::from_secs(10)).await;
    let started = Instant::now();
    let status = server.terminate().await;
    let took = started.elapsed();
    assert!(status.success(), "{status}");
    // One grace period of 2 s for all four hung deliveries (sequential stops would take 8 s).
    assert!(took < Duration::from_secs(6), "stopping took {took:?}");
}
