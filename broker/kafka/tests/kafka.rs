//! The Kafka backend against a real Kafka cluster: `SWITCHYARD_TEST_KAFKA` (default
//! `127.0.0.1:19092`, what `deploy/kafka/local.sh up` starts). Every test works under its own
//! random topic prefix, so reruns and concurrent runs never share topics or groups; none stops
//! or reconfigures the cluster, which other tests share.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::OwnKafka;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use switchyard_event::{AttrValue, Data, DataForm, Event};
use switchyard_log::testkit::{sample_dead_letter, sample_event};
use switchyard_log::{Backend, Change, Changes, EventLog, LogError, LogEvent, Release, Subscription};
use switchyard_log_kafka::{CompactedTopic, KafkaConfig, KafkaLog};

const WAIT: Duration = Duration::from_secs(20);

fn address() -> String {
    std::env::var("SWITCHYARD_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

/// A configuration under a prefix no other run uses, and the guard that deletes the run's
/// topics and groups from the shared cluster when the test ends, passed or failed. Declared
/// first in a test, the guard is dropped last, after the logs.
fn config() -> (KafkaConfig, Cleanup) {
    let mut config = KafkaConfig::new(address());
    config.topic_prefix = format!("sytest-{:08x}.", fastrand::u32(..));
    let cleanup = Cleanup(config.topic_prefix.clone());
    (config, cleanup)
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", address());
    config
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Drop cannot await, and may run inside the test's runtime: a thread of its own.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(cleanup(&prefix));
        });
        let _ = cleaned.join();
    }
}

async fn cleanup(prefix: &str) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let control: BaseConsumer = client_config().create().unwrap();
    let timeout = Duration::from_secs(10);
    if let Ok(metadata) = control.fetch_metadata(None, timeout) {
        let topics: Vec<&str> =
            metadata.topics().iter().map(|t| t.name()).filter(|name| name.starts_with(prefix)).collect();
        if !topics.is_empty() {
            let _ = admin.delete_topics(&topics, &AdminOptions::new()).await;
        }
    }
    if let Ok(groups) = control.fetch_group_list(None, timeout) {
        let groups: Vec<&str> =
            groups.groups().iter().map(|g| g.name()).filter(|name| name.starts_with(prefix)).collect();
        if !groups.is_empty() {
            let _ = admin.delete_groups(&groups, &AdminOptions::new()).await;
        }
    }
}

async fn connect(config: &KafkaConfig) -> Arc<KafkaLog> {
    Arc::new(KafkaLog::connect(config.clone()).await.expect("kafka answers (deploy/kafka/local.sh up)"))
}

fn event(id: &str, partition_key: Option<&str>) -> Event {
    let mut attributes = vec![
        ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
        ("id".to_owned(), AttrValue::String(id.to_owned())),
        ("source".to_owned(), AttrValue::String("/shop/web".to_owned())),
        ("type".to_owned(), AttrValue::String("order.created".to_owned())),
        ("datacontenttype".to_owned(), AttrValue::String("application/json".to_owned())),
    ];
    if let Some(key) = partition_key {
        attributes.push(("partitionkey".to_owned(), AttrValue::String(key.to_owned())));
    }
    let data = Data { form: DataForm::Json, bytes: Bytes::from(format!("{{\"id\":\"{id}\"}}")) };
    Event::new(attributes, Some(data)).unwrap()
}

/// Reads until `n` events arrived, failing after [`WAIT`].
async fn read(sub: &mut dyn Subscription, n: usize) -> Vec<LogEvent> {
    let mut read = Vec::new();
    while read.len() < n {
        let batch = tokio::time::timeout(WAIT, sub.next_batch(100))
            .await
            .unwrap_or_else(|_| panic!("timed out after reading {} of {n}", read.len()))
            .unwrap();
        read.extend(batch);
    }
    read
}

#[tokio::test(flavor = "multi_thread")]
async fn conformance() {
    let (config, _cleanup) = config();
    let log = connect(&config).await;
    let prefix = format!("conformance-{:08x}", fastrand::u32(..));
    let result = switchyard_log::testkit::run_all(log.clone() as Arc<dyn EventLog>, &prefix).await;
    drop(log);
    result.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_to_nothing_fails_quickly_naming_the_address() {
    // Nothing listens on port 1.
    let mut config = KafkaConfig::new("127.0.0.1:1");
    config.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let error = KafkaLog::connect(config).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(error, LogError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("'127.0.0.1:1'"), "{error}");
}

/// Kafka goes away under a connected log: appends (to a topic it knows and to one it does not)
/// and dead-letter writes fail with `Unavailable` within ten seconds, the bound ingest needs to
/// answer 503 rather than hang, and never succeed falsely.
#[tokio::test(flavor = "multi_thread")]
async fn writes_during_an_outage_are_unavailable_within_ten_seconds() {
    let kafka = tokio::task::spawn_blocking(|| OwnKafka::start("outage")).await.unwrap();
    let mut config = KafkaConfig::new(kafka.address());
    config.topic_prefix = format!("sytest-{:08x}.", fastrand::u32(..));
    let log = connect(&config).await;
    log.create_topic("shop.default").await.unwrap();
    log.create_group("shop.default", "shop.orders").await.unwrap();
    log.append("shop.default", &[event("before", None)]).await.unwrap();

    tokio::task::spawn_blocking(move || drop(kafka)).await.unwrap();

    let bound = Duration::from_secs(10);
    let started = Instant::now();
    let appended = log.append("shop.default", &[event("during-1", None), event("during-2", Some("k"))]).await;
    let took = started.elapsed();
    assert!(matches!(appended, Err(LogError::Unavailable(_))), "{appended:?}");
    assert!(took <= bound, "append to a known topic took {took:?}");

    let started = Instant::now();
    let appended = log.append("shop.other", &[event("during-3", None)]).await;
    let took = started.elapsed();
    assert!(matches!(appended, Err(LogError::Unavailable(_))), "not UnknownTopic, Kafka cannot tell: {appended:?}");
    assert!(took <= bound, "append to an unknown topic took {took:?}");

    let started = Instant::now();
    let put = log.dead_letters().put("shop/orders", sample_dead_letter("dl", 1)).await;
    let took = started.elapsed();
    assert!(matches!(put, Err(LogError::Unavailable(_))), "{put:?}");
    assert!(took <= Duration::from_secs(12), "dead-letter put took {took:?}");
}

/// `create_group` commits the end of every partition, so a group created after some appends
/// resumes there even before any member joined.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_group_is_committed_at_the_end_of_every_partition() {
    let (config, _cleanup) = config();
    let log = connect(&config).await;
    log.create_topic("shop.default").await.unwrap();
    let events: Vec<Event> = (0..40).map(|i| event(&format!("e{i}"), Some(&format!("key-{i}")))).collect();
    log.append("shop.default", &events).await.unwrap();
    let ends = log.end_offsets("shop.default").await.unwrap();
    assert_eq!(ends.len(), 8);
    assert_eq!(ends.iter().sum::<u64>(), 40);
    assert!(ends.iter().filter(|end| **end > 0).count() > 1, "keys spread over partitions: {ends:?}");

    log.create_group("shop.default", "shop.orders").await.unwrap();
    let mut group: ClientConfig = client_config();
    group.set("group.id", config.group_id("shop.orders"));
    let consumer: BaseConsumer = group.create().unwrap();
    let mut partitions = TopicPartitionList::new();
    partitions.add_partition_range(&config.kafka_topic("shop.default"), 0, 7);
    let committed = consumer.committed_offsets(partitions, Duration::from_secs(10)).unwrap();
    let committed: Vec<Offset> = committed.elements().iter().map(|e| e.offset()).collect();
    let expected: Vec<Offset> = ends.iter().map(|end| Offset::Offset(*end as i64)).collect();
    assert_eq!(committed, expected);

    // Appended later: read; appended before: not.
    log.append("shop.default", &[event("later", Some("key-1"))]).await.unwrap();
    let mut sub = log.subscribe("shop.default", "shop.orders").await.unwrap();
    let read = read(sub.as_mut(), 1).await;
    assert_eq!(read[0].event.id(), "later");

    drop(sub);
    drop(log);
}

/// Two members of one group (two nodes running the same trigger) share the partitions, and
/// every event is read by exactly one of them.
#[tokio::test(flavor = "multi_thread")]
async fn two_members_of_a_group_split_the_partitions() {
    let (config, _cleanup) = config();
    let (node_a, node_b) = (connect(&config).await, connect(&config).await);
    node_a.create_topic("shop.default").await.unwrap();
    node_a.create_group("shop.default", "shop.orders").await.unwrap();
    let mut a = node_a.subscribe("shop.default", "shop.orders").await.unwrap();
    let mut b = node_b.subscribe("shop.default", "shop.orders").await.unwrap();

    // Wait until both have joined and the group is stable, so that no partition moves while
    // events are read (a move re-reads from the last commit: at-least-once, not exactly-once).
    let admin: BaseConsumer = client_config().create().unwrap();
    let group_id = config.group_id("shop.orders");
    let deadline = Instant::now() + WAIT;
    loop {
        let groups = admin.fetch_group_list(Some(&group_id), Duration::from_secs(5)).unwrap();
        let stable = groups.groups().iter().any(|g| {
            g.state() == "Stable"
                && g.members().len() == 2
                && g.members().iter().all(|m| m.assignment().is_some_and(|a| a.len() > 30))
        });
        if stable {
            break;
        }
        assert!(Instant::now() < deadline, "the group did not settle with two members");
        // Both must poll to complete the rebalance: their threads do, without next_batch.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    const N: usize = 400;
    let events: Vec<Event> = (0..N).map(|i| event(&format!("e{i}"), Some(&format!("customer-{}", i % 50)))).collect();
    node_a.append("shop.default", &events).await.unwrap();

    let mut seen: HashMap<String, &str> = HashMap::new();
    let mut partitions: HashMap<&str, BTreeSet<u32>> = HashMap::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < N {
        assert!(Instant::now() < deadline, "read {} of {N}", seen.len());
        for (name, sub) in [("a", &mut a), ("b", &mut b)] {
            if let Ok(batch) = tokio::time::timeout(Duration::from_millis(100), sub.next_batch(50)).await {
                for e in batch.unwrap() {
                    partitions.entry(name).or_default().insert(e.position.partition);
                    let previous = seen.insert(e.event.id().to_owned(), name);
                    assert!(previous.is_none(), "{} read by {previous:?} and {name}", e.event.id());
                }
            }
        }
    }
    let expected: HashSet<String> = events.iter().map(|e| e.id().to_owned()).collect();
    assert_eq!(seen.keys().cloned().collect::<HashSet<_>>(), expected);
    let (pa, pb) = (&partitions["a"], &partitions["b"]);
    assert!(!pa.is_empty() && !pb.is_empty(), "a read {pa:?}, b read {pb:?}");
    assert!(pa.is_disjoint(pb), "a read {pa:?}, b read {pb:?}");

    drop((a, b));
    drop((node_a, node_b));
}

/// Events are stored in the binary mode of the CloudEvents Kafka binding: what a plain Kafka
/// consumer sees.
#[tokio::test(flavor = "multi_thread")]
async fn stored_records_use_the_binary_mode_of_the_kafka_binding() {
    let (config, _cleanup) = config();
    let log = connect(&config).await;
    log.create_topic("shop.default").await.unwrap();
    let mut typed = event("typed", Some("order-42"));
    typed.set_extension("attempt", AttrValue::Integer(3)).unwrap();
    log.append("shop.default", &[event("plain", Some("order-42")), typed.clone()]).await.unwrap();

    let mut reader = client_config();
    reader.set("group.id", format!("{}plain-reader", config.topic_prefix)).set("enable.auto.commit", "false");
    let consumer: BaseConsumer = reader.create().unwrap();
    let mut all = TopicPartitionList::new();
    for partition in 0..8 {
        all.add_partition_offset(&config.kafka_topic("shop.default"), partition, Offset::Beginning).unwrap();
    }
    consumer.assign(&all).unwrap();
    let mut records = Vec::new();
    let deadline = Instant::now() + WAIT;
    while records.len() < 2 {
        assert!(Instant::now() < deadline, "read {} of 2 records", records.len());
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message.unwrap();
            let headers: Vec<(String, String)> = message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), String::from_utf8(h.value.unwrap().to_vec()).unwrap()))
                        .collect()
                })
                .unwrap_or_default();
            records.push((message.key().map(<[u8]>::to_vec), headers, message.payload().map(<[u8]>::to_vec)));
        }
    }
    let (key, headers, value) = &records[0];
    assert_eq!(key.as_deref(), Some(&b"order-42"[..]));
    assert_eq!(value.as_deref(), Some(&b"{\"id\":\"plain\"}"[..]));
    let expected = [
        ("ce_specversion", "1.0"),
        ("ce_id", "plain"),
        ("ce_source", "/shop/web"),
        ("ce_type", "order.created"),
        ("content-type", "application/json"),
        ("ce_partitionkey", "order-42"),
    ];
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!(headers, expected);
    // Same key, same partition, in order; the integer extension travels as its canonical
    // string, its type in Switchyard's private header.
    let (key, headers, _) = &records[1];
    assert_eq!(key.as_deref(), Some(&b"order-42"[..]));
    let headers: HashMap<&str, &str> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    assert_eq!((headers["ce_id"], headers["ce_attempt"]), ("typed", "3"));
    assert_eq!(headers["switchyard_types"], "attempt=integer");

    // Read back through the log, the event is exactly the one appended.
    let mut reader = log.reader("shop.default", records_partition(&log).await, 1).await.unwrap();
    let read = read(reader.as_mut(), 1).await;
    assert_eq!(*read[0].event, typed);

    drop(reader);
    drop(log);
}

/// The partition the `order-42` key maps to (the one with events).
async fn records_partition(log: &KafkaLog) -> u32 {
    let ends = log.end_offsets("shop.default").await.unwrap();
    ends.iter().position(|end| *end > 0).unwrap() as u32
}

/// A reader belongs to no group: it reads one partition from an offset, seeks, and refuses
/// commits.
#[tokio::test(flavor = "multi_thread")]
async fn a_reader_reads_one_partition_seeks_and_refuses_commits() {
    let (config, _cleanup) = config();
    let log = connect(&config).await;
    log.create_topic("shop.default").await.unwrap();
    let events: Vec<Event> = (0..10).map(|i| event(&format!("e{i}"), Some("one-key"))).collect();
    log.append("shop.default", &events).await.unwrap();
    let partition = records_partition(&log).await;

    let mut reader = log.reader("shop.default", partition, 4).await.unwrap();
    assert_eq!(reader.position(partition), Some(4));
    let read_ids = |read: &[LogEvent]| read.iter().map(|e| e.event.id().to_owned()).collect::<Vec<_>>();
    let first = read(reader.as_mut(), 6).await;
    assert_eq!(read_ids(&first), (4..10).map(|i| format!("e{i}")).collect::<Vec<_>>());
    assert_eq!(first[0].position.offset, 4);
    assert_eq!(reader.position(partition), Some(10));

    reader.seek(partition, 1).unwrap();
    assert_eq!(reader.position(partition), Some(1));
    let mut again = Vec::new();
    while again.len() < 2 {
        again.extend(tokio::time::timeout(WAIT, reader.next_batch(2 - again.len())).await.unwrap().unwrap());
    }
    assert_eq!(read_ids(&again), ["e1", "e2"]);
    assert_eq!(reader.position(partition), Some(3));
    assert!(reader.commit(partition, 3).is_err());
    assert!(reader.seek(partition + 1, 0).is_err());
    assert!(log.reader("shop.default", 8, 0).await.is_err());
    assert!(matches!(log.reader("no.such-topic", 0, 0).await, Err(LogError::UnknownTopic(_))));

    drop(reader);
    drop(log);
}

/// A group member seeks within the partitions it owns; commits stay what was committed.
#[tokio::test(flavor = "multi_thread")]
async fn a_member_seeks_within_its_partitions() {
    let (config, _cleanup) = config();
    let log = connect(&config).await;
    log.create_topic("shop.default").await.unwrap();
    log.create_group("shop.default", "g").await.unwrap();
    let events: Vec<Event> = (0..5).map(|i| event(&format!("e{i}"), Some("one-key"))).collect();
    log.append("shop.default", &events).await.unwrap();
    let partition = records_partition(&log).await;
    let mut sub = log.subscribe("shop.default", "g").await.unwrap();
    let first = read(sub.as_mut(), 5).await;
    assert_eq!(first.last().unwrap().position.offset, 4);
    assert_eq!(sub.position(partition), Some(5));
    sub.commit(partition, 2).unwrap();

    sub.seek(partition, 1).unwrap();
    let again = read(sub.as_mut(), 4).await;
    let ids: Vec<&str> = again.iter().map(|e| e.event.id()).collect();
    assert_eq!(ids, ["e1", "e2", "e3", "e4"]);
    assert!(sub.seek(8, 0).is_err(), "a partition the topic does not have");

    // The next member resumes at the commit, not at the seek.
    drop(sub);
    log.flush().await.unwrap();
    let mut sub = log.subscribe("shop.default", "g").await.unwrap();
    let resumed = read(sub.as_mut(), 3).await;
    assert_eq!(resumed[0].event.id(), "e2");

    drop(sub);
    drop(log);
}

/// The dispatcher `select!`s on `next_batch`: a future dropped before it completes loses nothing.
#[tokio::test(flavor = "multi_thread")]
async fn next_batch_is_cancel_safe() {
    let (config, _cleanup) = config();
    let log = connect(&config).await;
    log.create_topic("shop.default").await.unwrap();
    log.create_group("shop.default", "g").await.unwrap();
    let mut sub = log.subscribe("shop.default", "g").await.unwrap();
    const N: usize = 300;
    let appender = {
        let log = log.clone();
        tokio::spawn(async move {
            for i in 0..N {
                log.append("shop.default", &[event(&format!("e{i}"), None)]).await.unwrap();
            }
        })
    };
    let mut ids = Vec::new();
    let deadline = Instant::now() + WAIT;
    while ids.len() < N {
        assert!(Instant::now() < deadline, "read {} of {N}", ids.len());
        // Most of these are cancelled while waiting.
        if let Ok(batch) = tokio::time::timeout(Duration::from_micros(300), sub.next_batch(7)).await {
            ids.extend(batch.unwrap().iter().map(|e| e.event.id().to_owned()));
        }
    }
    appender.await.unwrap();
    // Keyless events of one source share a partition: all in order.
    assert_eq!(ids, (0..N).map(|i| format!("e{i}")).collect::<Vec<_>>());

    drop(sub);
    drop(log);
}

/// Anything can be written to a Kafka topic: a record that is not an event comes out as an
/// undecodable stand-in, with its position, its bytes and why, and reading goes on after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_that_is_not_an_event_comes_out_undecodable_then_reading_goes_on() {
    let (config, _cleanup) = config();
    let log = connect(&config).await;
    log.create_topic("shop.default").await.unwrap();
    log.create_group("shop.default", "g").await.unwrap();
    log.append("shop.default", &[event("before", Some("k"))]).await.unwrap();
    let partition = records_partition(&log).await;

    let producer: FutureProducer = client_config().create().unwrap();
    let headers = OwnedHeaders::new().insert(Header { key: "ce_specversion", value: Some("0.3") });
    let kafka_topic = config.kafka_topic("shop.default");
    let record: FutureRecord<'_, [u8], [u8]> =
        FutureRecord::to(&kafka_topic).partition(partition as i32).headers(headers).payload(&b"not an event"[..]);
    producer.send(record, Duration::from_secs(5)).await.unwrap();
    log.append("shop.default", &[event("after", Some("k"))]).await.unwrap();

    let mut sub = log.subscribe("shop.default", "g").await.unwrap();
    let records = read(sub.as_mut(), 3).await;
    assert_eq!(records[0].event.id(), "before");
    let undecodable = &records[1];
    assert_eq!((undecodable.position.partition, undecodable.position.offset), (partition, 1));
    assert!(undecodable.undecodable.as_deref().is_some_and(|reason| reason.contains("specversion")), "{undecodable:?}");
    assert_eq!(undecodable.event.ty(), switchyard_log::UNDECODABLE_TYPE);
    assert_eq!(undecodable.event.data().map(|d| d.bytes.as_ref()), Some(&b"not an event"[..]));
    assert_eq!(records[2].event.id(), "after");

    drop(sub);
    drop(log);
}

/// What one node dead-letters, every node lists (and removes) within moments.
#[tokio::test(flavor = "multi_thread")]
async fn dead_letters_put_on_one_node_are_seen_by_another() {
    let (config, _cleanup) = config();
    let (node_a, node_b) = (connect(&config).await, connect(&config).await);
    let (a, b) = (node_a.dead_letters(), node_b.dead_letters());
    let scope = "shop/orders";

    let first = a.put(scope, sample_dead_letter("dl-a", 3)).await.unwrap();
    // Read-your-writes on the node that wrote.
    assert_eq!(a.list(scope, None, 10).await.unwrap().len(), 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    let seen = loop {
        let listed = b.list(scope, None, 10).await.unwrap();
        if !listed.is_empty() {
            break listed;
        }
        assert!(Instant::now() < deadline, "node b did not see node a's dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(seen[0].id, first);
    assert_eq!(seen[0].event, sample_event("dl-a", 32));

    // Ids keep growing across nodes: b has seen a's id.
    let second = b.put(scope, sample_dead_letter("dl-b", 1)).await.unwrap();
    assert!(second > first, "'{second}' after '{first}'");
    assert!(b.remove(scope, &first).await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let ids: Vec<String> = a.list(scope, None, 10).await.unwrap().into_iter().map(|e| e.id).collect();
        if ids == [second.clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "node a lists {ids:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A node started later loads the whole store before it serves.
    let node_c = connect(&config).await;
    let listed = node_c.dead_letters().list(scope, None, 10).await.unwrap();
    assert_eq!(listed.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), [second]);

    drop((node_a, node_b, node_c));
}

/// The compacted-topic follower the dead-letter store uses, on its own: a replicated table
/// with read-your-writes.
#[tokio::test(flavor = "multi_thread")]
async fn a_compacted_topic_replicates_a_table() {
    let (config, _cleanup) = config();
    let topic = format!("{}config", config.topic_prefix);
    let table = Arc::new(std::sync::Mutex::new(HashMap::<Vec<u8>, Vec<u8>>::new()));
    let apply = |table: Arc<std::sync::Mutex<HashMap<Vec<u8>, Vec<u8>>>>| {
        move |key: &[u8], value: Option<&[u8]>| {
            let mut table = table.lock().unwrap();
            match value {
                Some(value) => table.insert(key.to_vec(), value.to_vec()),
                None => table.remove(key),
            };
        }
    };
    let writer = CompactedTopic::open(&config, &topic, apply(table.clone())).await.unwrap();
    writer.put(b"brokers/shop/default", b"{}").await.unwrap();
    writer.put(b"triggers/shop/orders", b"{\"v\":1}").await.unwrap();
    writer.put(b"triggers/shop/orders", b"{\"v\":2}").await.unwrap();
    writer.delete(b"brokers/shop/default").await.unwrap();
    assert_eq!(
        table.lock().unwrap().clone(),
        HashMap::from([(b"triggers/shop/orders".to_vec(), b"{\"v\":2}".to_vec())])
    );

    // Another follower starts with the whole table.
    let other_table = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let other = CompactedTopic::open(&config, &topic, apply(other_table.clone())).await.unwrap();
    assert_eq!(*other_table.lock().unwrap(), *table.lock().unwrap());
    writer.put(b"k", b"v").await.unwrap();
    other.sync().await.unwrap();
    assert_eq!(other_table.lock().unwrap().get(&b"k"[..]).map(Vec::as_slice), Some(&b"v"[..]));

    drop((writer, other));
}

/// Each release of a node's placement: the slots released, and what the node held meanwhile.
type Released = Arc<std::sync::Mutex<Vec<(BTreeSet<u32>, BTreeSet<u32>)>>>;

/// Records what a node's placement releases.
struct Releases {
    held: tokio::sync::watch::Receiver<BTreeSet<u32>>,
    released: Released,
}

#[async_trait::async_trait]
impl Release for Releases {
    async fn release(&self, slots: &BTreeSet<u32>) {
        let held = self.held.borrow().clone();
        self.released.lock().unwrap().push((slots.clone(), held));
    }
}

fn on_release(backend: &Backend) -> Released {
    let released = Released::default();
    let releases = Releases { held: backend.placement.held(), released: Arc::clone(&released) };
    backend.placement.on_release(Arc::new(releases));
    released
}

async fn changes(changes: &mut Changes, n: usize) -> Vec<Change> {
    let mut got = Vec::new();
    for _ in 0..n {
        got.push(tokio::time::timeout(WAIT, changes.receiver.recv()).await.expect("a change").expect("open"));
    }
    got
}

/// What `open` gives a node besides the log: declarations every node applies in one order
/// (replayed to a node that opens later, handed out once), and slots shared out among the nodes,
/// each released through the hook once the node no longer counts it as held.
#[tokio::test(flavor = "multi_thread")]
async fn nodes_share_declarations_and_placement() {
    let (config, _cleanup) = config();
    let a = switchyard_log_kafka::open(config.clone()).await.unwrap();
    let a_released = on_release(&a);
    let mut a_changes = a.declarations.changes().unwrap();
    assert_eq!(a_changes.replayed, 0);
    assert!(a.declarations.changes().is_err(), "the changes are handed out once");
    let published = [
        ("broker/shop/default", Some(b"{}".to_vec())),
        ("trigger/shop/orders", Some(b"{\"v\":1}".to_vec())),
        ("broker/shop/default", None),
    ];
    for (sequence, (key, value)) in (0..).zip(&published) {
        assert_eq!(a.declarations.publish(key, value.clone()).await.unwrap(), sequence);
    }
    let expected: Vec<Change> = (0..)
        .zip(&published)
        .map(|(sequence, (key, value))| Change { sequence, key: (*key).to_owned(), value: value.clone() })
        .collect();
    assert_eq!(changes(&mut a_changes, 3).await, expected);

    let b = switchyard_log_kafka::open(config.clone()).await.unwrap();
    let b_released = on_release(&b);
    let mut b_changes = b.declarations.changes().unwrap();
    assert_eq!(b_changes.replayed, 3, "what was in the topic when b opened");
    assert_eq!(changes(&mut b_changes, 3).await, expected);
    assert_eq!(b.declarations.publish("trigger/shop/orders", None).await.unwrap(), 3);
    let deleted = Change { sequence: 3, key: "trigger/shop/orders".to_owned(), value: None };
    let deleted = [deleted];
    assert_eq!(changes(&mut a_changes, 1).await, deleted, "a applies b's change");
    assert_eq!(changes(&mut b_changes, 1).await, deleted);

    let all: BTreeSet<u32> = (0..16).collect();
    assert_eq!((a.placement.slots(), b.placement.slots()), (16, 16));
    let started = Instant::now();
    loop {
        let (held_a, held_b) = (a.placement.held().borrow().clone(), b.placement.held().borrow().clone());
        if !held_a.is_empty() && !held_b.is_empty() && held_a.is_disjoint(&held_b) && held_a.len() + held_b.len() == 16
        {
            break;
        }
        assert!(started.elapsed() < WAIT, "the slots were not shared out: {held_a:?} / {held_b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b_held = b.placement.held().borrow().clone();
    b.placement.leave().await;
    assert!(b.placement.held().borrow().is_empty(), "b holds nothing once it left");
    let mut a_held = a.placement.held();
    tokio::time::timeout(WAIT, a_held.wait_for(|held| *held == all)).await.unwrap().unwrap();

    let b_released = b_released.lock().unwrap().clone();
    let released: BTreeSet<u32> = b_released.iter().flat_map(|(slots, _)| slots.iter().copied()).collect();
    assert_eq!(released, b_held, "b released what it held, through the hook");
    let a_released = a_released.lock().unwrap().clone();
    assert!(!a_released.is_empty(), "a released the slots b got");
    for (slots, held) in a_released.iter().chain(&b_released) {
        assert!(slots.is_disjoint(held), "{slots:?} still counted as held ({held:?}) while released");
    }
    a.placement.leave().await;
}
