//! Several nodes on one real Kafka (`deploy/kafka/local.sh up`): shared declarations, ingest
//! on any node, a node killed under load, and Kafka itself stopped and restarted mid-load.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use switchyard_tests::{fresh_cluster, Server, Subscriber};

/// Declarations reach other nodes and triggers start there within this; events are delivered
/// within it (a killed node's partitions move after Kafka's session timeout, ~6 s).
const WAIT: Duration = Duration::from_secs(40);

async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_ids(subscriber: &Subscriber, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let received = subscriber.ids();
        let missing: Vec<_> = expected.difference(&received).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events never delivered, e.g. {:?}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_declaration_on_one_node_runs_on_every_node_and_ingest_works_on_either() {
    let cluster = fresh_cluster();
    let a = Server::start_node(&cluster).await;
    let b = Server::start_node(&cluster).await;
    let subscriber = Subscriber::start().await;
    a.broker("default", "b").await;
    a.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let status = eventually("the trigger is visible on the other node", async || {
        let (status, trigger) = b.get("/v1/namespaces/default/triggers/t").await;
        (status == StatusCode::OK).then_some(trigger)
    })
    .await;
    assert_eq!(status["status"]["conditions"][0]["status"], "True", "{status}");

    let mut sent = BTreeSet::new();
    for i in 0..40 {
        let node = if i % 2 == 0 { &a } else { &b };
        let id = format!("e{i}");
        assert_eq!(node.send_binary("default", "b", &id, "t", b"{}").await, StatusCode::ACCEPTED);
        sent.insert(id);
    }
    wait_for_ids(&subscriber, &sent).await;

    // Deleted on the other node: deliveries stop everywhere.
    let (status, _) = b.delete("/v1/namespaces/default/triggers/t").await;
    assert_eq!(status, StatusCode::OK);
    eventually("the deletion reaches the first node", async || {
        (a.get("/v1/namespaces/default/triggers/t").await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    // Both nodes have applied the deletion (the DELETE is answered once applied where it was
    // made). The backlog gauge has a series per running worker: once it is gone from both
    // nodes, no worker is left that could deliver what comes next.
    eventually("no node runs the deleted trigger", async || {
        for node in [&a, &b] {
            let labels = [("namespace", "default"), ("trigger", "t")];
            if node.metric("switchyard_trigger_backlog", &labels).await.is_some() {
                return None;
            }
        }
        Some(())
    })
    .await;
    let before = subscriber.received().len();
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        assert_eq!(node.send_binary("default", "b", &format!("late{i}"), "t", b"{}").await, StatusCode::ACCEPTED);
    }
    assert_eq!(subscriber.received().len(), before, "a deleted trigger still delivers");
}

/// Sends events to `nodes` in turn until stopped; records the ids acknowledged with 202.
fn produce(
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<BTreeSet<String>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let url = &urls[i as usize % urls.len()];
            let id = format!("p{i}");
            let response = client
                .post(url)
                .header("ce-specversion", "1.0")
                .header("ce-id", &id)
                .header("ce-type", "t")
                // Keyless events go to the partition their source hashes to: many sources
                // put load on every partition, the killed node's included.
                .header("ce-source", format!("/producer/{}", i % 32))
                .body("{}")
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == StatusCode::ACCEPTED) {
                acked.lock().unwrap().insert(id);
            }
            i += 1;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
}

#[tokio::test]
async fn killing_a_node_under_load_loses_no_acknowledged_event() {
    let cluster = fresh_cluster();
    let mut a = Server::start_node(&cluster).await;
    let b = Server::start_node(&cluster).await;
    let subscriber = Subscriber::start().await;
    a.broker("default", "b").await;
    a.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    eventually("the trigger runs on the second node", async || {
        (b.get("/v1/namespaces/default/triggers/t").await.0 == StatusCode::OK).then_some(())
    })
    .await;
    // Both nodes are group members before the kill, so some partitions are the killed node's.
    let topic = format!("{cluster}.default.b");
    eventually("both nodes hold partitions of the broker", async || {
        (holds_partitions(&a, &topic) && holds_partitions(&b, &topic)).then_some(())
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let urls = vec![format!("{}/default/b", a.url), format!("{}/default/b", b.url)];
    let producer = produce(urls, stop.clone(), acked.clone());
    // Load before and after the kill: it lands mid-stream, and events keep coming to the dead
    // node's partitions until the group moves them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    a.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 100, "the load was too light to mean anything: {} events", acked.len());
    wait_for_ids(&subscriber, &acked).await;
}

/// Whether `node`'s trigger group member holds partitions of `kafka_topic`, by the last
/// rebalance it logged (each logs the whole assignment after it).
fn holds_partitions(node: &Server, kafka_topic: &str) -> bool {
    // The Kafka backend's consumers log `consumer=topic '<topic>' … assigned=[…]` on every
    // rebalance.
    let consumer = format!("consumer=topic '{kafka_topic}'");
    let log = node.log();
    let last = log
        .lines()
        .rev()
        .find(|l| l.contains(&consumer) && (l.contains("partitions assigned") || l.contains("partitions revoked")));
    last.and_then(|l| l.split("assigned=").nth(1)).is_some_and(|partitions| !partitions.starts_with("[]"))
}

/// A Kafka of this test's own, since it is stopped mid-test.
struct OwnKafka {
    port: u16,
}

impl OwnKafka {
    fn script() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kafka/local.sh")
    }

    fn run(&self, command: &str) -> String {
        let output = Command::new(OwnKafka::script())
            .arg(command)
            .env("KAFKA_PORT", self.port.to_string())
            .output()
            .expect("run deploy/kafka/local.sh");
        assert!(output.status.success(), "local.sh {command}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for OwnKafka {
    fn drop(&mut self) {
        let _ = Command::new(OwnKafka::script()).arg("down").env("KAFKA_PORT", self.port.to_string()).status();
    }
}

#[tokio::test]
async fn a_kafka_outage_is_503_never_a_false_202_and_loses_nothing() {
    let kafka = OwnKafka { port: 19192 };
    kafka.run("down");
    let bootstrap = kafka.run("up");
    let node = Server::start_node_on(&bootstrap, &fresh_cluster()).await;
    let subscriber = Subscriber::start().await;
    node.broker("default", "b").await;
    node.trigger("default", "t", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let producer = produce(vec![format!("{}/default/b", node.url)], stop.clone(), acked.clone());
    // The load that Kafka stops under.
    tokio::time::sleep(Duration::from_secs(1)).await;
    kafka.run("stop");
    let acked_at_stop = acked.lock().unwrap().len();
    let refused = eventually("ingest refuses while kafka is down", async || {
        let status = node.send_binary("default", "b", "during-outage", "t", b"{}").await;
        (status != StatusCode::ACCEPTED).then_some(status)
    })
    .await;
    assert_eq!(refused, StatusCode::SERVICE_UNAVAILABLE);
    kafka.run("up");
    eventually("ingest accepts again once kafka is back", async || {
        (node.send_binary("default", "b", "after-outage", "t", b"{}").await == StatusCode::ACCEPTED).then_some(())
    })
    .await;
    eventually("the load is acknowledged again after the outage", async || {
        (acked.lock().unwrap().len() > acked_at_stop).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    let mut acked = acked.lock().unwrap().clone();
    assert!(acked.len() > acked_at_stop, "nothing was acknowledged after the outage");
    acked.insert("after-outage".to_owned());
    wait_for_ids(&subscriber, &acked).await;
}

/// The tick (`ce-time`, in seconds) of each ping received, and the distinct ids.
fn ping_ticks(subscriber: &Subscriber) -> (Vec<i64>, BTreeSet<String>) {
    let received = subscriber.received();
    let ticks = received
        .iter()
        .map(|r| {
            let time = r.header("ce-time").expect("ce-time");
            time::OffsetDateTime::parse(time, &time::format_description::well_known::Rfc3339)
                .expect("rfc 3339")
                .unix_timestamp()
        })
        .collect();
    (ticks, subscriber.ids())
}

#[tokio::test]
async fn a_ping_source_runs_on_exactly_one_node_and_moves_when_that_node_dies() {
    let cluster = fresh_cluster();
    let mut nodes = [Server::start_node(&cluster).await, Server::start_node(&cluster).await];
    let subscriber = Subscriber::start().await;
    nodes[0].broker("default", "b").await;
    nodes[0].trigger("default", "pings", json!({"broker": "b", "subscriber": {"uri": subscriber.url}})).await;
    let (status, body) = nodes[1]
        .put(
            "/v1/namespaces/default/pingsources/every-second",
            json!({"spec": {"schedule": "* * * * * *", "sink": {"ref": {"kind": "Broker", "name": "b"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    // Both nodes know it; one runs it: each tick arrives once, not once per node.
    subscriber.wait_for(6, WAIT).await;
    let (ticks, ids) = ping_ticks(&subscriber);
    assert_eq!(ticks.len(), ids.len(), "a tick was sent by two nodes: {ticks:?}");
    let distinct: BTreeSet<i64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ticks.len(), "{ticks:?}");
    let runs_here = |node: &Server| node.log().contains("source started");
    let runner = match (runs_here(&nodes[0]), runs_here(&nodes[1])) {
        (true, false) => 0,
        (false, true) => 1,
        other => panic!("the source should run on exactly one node, got {other:?}"),
    };

    // kill -9 the node running it: the other takes it over after Kafka's session timeout and
    // sends the ticks it missed, once (a redelivery of the same event aside: same id).
    nodes[runner].kill9();
    let killed_at = *distinct.last().unwrap();
    eventually("the surviving node runs the source", async || runs_here(&nodes[1 - runner]).then_some(())).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let (ticks, _) = ping_ticks(&subscriber);
        if ticks.iter().any(|t| *t > killed_at + 10) {
            break;
        }
        assert!(Instant::now() < deadline, "no ticks after the failover: {ticks:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ticks, ids) = ping_ticks(&subscriber);
    let distinct: BTreeSet<i64> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "one id per tick: {ticks:?}");
    let (first, last) = (*distinct.first().unwrap(), *distinct.last().unwrap());
    let missing: Vec<i64> = (first..=last).filter(|t| !distinct.contains(t)).collect();
    assert!(missing.is_empty(), "ticks lost in the failover: {missing:?}; log: {}", nodes[1 - runner].log());
}
