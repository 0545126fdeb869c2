//! `KafkaRecords`, `Leases` and the `kafka_tool` example against a real Kafka cluster:
//! `SWITCHYARD_TEST_KAFKA` (default `127.0.0.1:19092`, what `deploy/kafka/local.sh up`
//! starts). Every test names its topics and groups under its own random prefix and deletes
//! them when it ends, so runs can share the cluster.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::OwnKafka;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use switchyard_log::records::{InitialOffset, Record, RecordConnector, RecordConsumer, RecordConsumerConfig};
use switchyard_log::LogError;
use switchyard_log_kafka::{KafkaConfig, KafkaRecords, Leases};

const WAIT: Duration = Duration::from_secs(30);

fn address() -> String {
    std::env::var("SWITCHYARD_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

fn client_config() -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", address());
    config
}

/// A prefix no other run uses, and the guard that deletes its topics and groups from the
/// shared cluster when the test ends, passed or failed. Declared first in a test, the guard is
/// dropped last.
fn prefix() -> (String, Cleanup) {
    let prefix = format!("sytest-{:08x}.", fastrand::u32(..));
    (prefix.clone(), Cleanup(prefix))
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let prefix = self.0.clone();
        // Drop cannot await, and may run inside the test's runtime: a thread of its own.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
                let control: BaseConsumer = client_config().create().unwrap();
                let timeout = Duration::from_secs(10);
                if let Ok(metadata) = control.fetch_metadata(None, timeout) {
                    let topics: Vec<&str> =
                        metadata.topics().iter().map(|t| t.name()).filter(|name| name.starts_with(&prefix)).collect();
                    if !topics.is_empty() {
                        let _ = admin.delete_topics(&topics, &AdminOptions::new()).await;
                    }
                }
                if let Ok(groups) = control.fetch_group_list(None, timeout) {
                    let groups: Vec<&str> =
                        groups.groups().iter().map(|g| g.name()).filter(|name| name.starts_with(&prefix)).collect();
                    if !groups.is_empty() {
                        let _ = admin.delete_groups(&groups, &AdminOptions::new()).await;
                    }
                }
            });
        });
        let _ = cleaned.join();
    }
}

/// Creates `topic` with `partitions` partitions and waits until each has a leader that
/// answers.
async fn create_topic(topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config().create().unwrap();
    let results = admin
        .create_topics([&NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &AdminOptions::new())
        .await;
    results.unwrap().into_iter().for_each(|r| drop(r.unwrap()));
    let control: BaseConsumer = client_config().create().unwrap();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + WAIT;
        loop {
            let served = control.fetch_metadata(Some(&topic), Duration::from_secs(5)).is_ok_and(|metadata| {
                metadata.topics().iter().any(|t| {
                    t.name() == topic
                        && t.partitions().len() == partitions as usize
                        && t.partitions().iter().all(|p| {
                            p.leader() >= 0 && control.fetch_watermarks(&topic, p.id(), Duration::from_secs(5)).is_ok()
                        })
                })
            });
            if served {
                return;
            }
            assert!(Instant::now() < deadline, "topic '{topic}' not served");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap();
}

/// What a test produces, and expects to read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Sent {
    partition: i32,
    key: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    value: Option<Vec<u8>>,
}

impl Sent {
    fn plain(partition: i32, value: &str) -> Sent {
        Sent { partition, key: None, headers: Vec::new(), value: Some(value.as_bytes().to_vec()) }
    }

    fn of(record: &Record) -> Sent {
        Sent {
            partition: record.partition,
            key: record.key.clone(),
            headers: record.headers.clone(),
            value: record.value.as_ref().map(|v| v.to_vec()),
        }
    }
}

fn producer() -> FutureProducer {
    KafkaConfig::new(address()).producer().create().unwrap()
}

/// Produces `records` to `topic` in order, each acknowledged; returns their offsets.
async fn produce(producer: &FutureProducer, topic: &str, records: &[Sent]) -> Vec<i64> {
    let mut offsets = Vec::new();
    for sent in records {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &sent.headers {
            headers = headers.insert(Header { key: name.as_str(), value: value.as_deref() });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).partition(sent.partition).headers(headers);
        if let Some(key) = &sent.key {
            record = record.key(key.as_slice());
        }
        if let Some(value) = &sent.value {
            record = record.payload(value.as_slice());
        }
        let delivered = producer.send(record, Duration::from_secs(10)).await.map_err(|(e, _)| e).unwrap();
        assert_eq!(delivered.partition, sent.partition);
        offsets.push(delivered.offset);
    }
    offsets
}

fn consumer_config(group: &str, topics: &[&str], initial_offset: InitialOffset) -> RecordConsumerConfig {
    let mut config = RecordConsumerConfig::new(address(), group, topics.iter().map(|t| (*t).to_owned()).collect());
    config.initial_offset = initial_offset;
    config
}

type Member = Box<dyn RecordConsumer>;

async fn connect(config: RecordConsumerConfig) -> Member {
    KafkaRecords.connect(config).await.expect("kafka answers (deploy/kafka/local.sh up)")
}

/// Reads until `n` records arrived, failing after [`WAIT`].
async fn read(consumer: &mut Member, n: usize) -> Vec<Record> {
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while read.len() < n {
        let batch = tokio::time::timeout_at(deadline, consumer.next_batch(100))
            .await
            .unwrap_or_else(|_| panic!("timed out after reading {} of {n}", read.len()))
            .unwrap();
        read.extend(batch);
    }
    read
}

/// Whatever arrives within `within`.
async fn read_for(consumer: &mut Member, within: Duration) -> Vec<Record> {
    let mut read = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(batch) = tokio::time::timeout_at(deadline, consumer.next_batch(100)).await {
        read.extend(batch.unwrap());
    }
    read
}

/// Waits until `group`'s committed offset of `partition` of `topic` is `offset`; returns how
/// long that took.
async fn wait_committed(bootstrap: &str, group: &str, topic: &str, partition: i32, offset: i64) -> Duration {
    let control: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let (topic, group) = (topic.to_owned(), group.to_owned());
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        loop {
            let mut wanted = rdkafka::TopicPartitionList::new();
            wanted.add_partition(&topic, partition);
            let committed = control.committed_offsets(wanted, Duration::from_secs(5)).ok();
            let at = committed.and_then(|c| c.find_partition(&topic, partition).map(|e| e.offset()));
            if at == Some(rdkafka::Offset::Offset(offset)) {
                return started.elapsed();
            }
            assert!(started.elapsed() < WAIT, "group '{group}' committed {at:?}, not {offset}");
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

/// The next offset of every partition in `records`, for `commit`.
fn ends(records: &[Record]) -> BTreeMap<(String, i32), i64> {
    let mut ends = BTreeMap::new();
    for record in records {
        let end = ends.entry((record.topic.clone(), record.partition)).or_insert(0);
        *end = (*end).max(record.offset + 1);
    }
    ends
}

fn commit_all(consumer: &mut Member, records: &[Record]) {
    for ((topic, partition), next) in ends(records) {
        consumer.commit(&topic, partition, next).unwrap();
    }
}

/// Within each partition, offsets only grow.
fn assert_ordered(records: &[Record]) {
    let mut last: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for record in records {
        let key = (record.topic.clone(), record.partition);
        if let Some(previous) = last.insert(key, record.offset) {
            assert!(
                record.offset > previous,
                "partition {} went from {previous} to {}",
                record.partition,
                record.offset
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_are_read_exactly_and_commits_hold_for_the_next_member() {
    let (prefix, _cleanup) = prefix();
    let topic = format!("{prefix}records");
    let group = format!("{prefix}group");
    create_topic(&topic, 3).await;
    let producer = producer();
    let mut first = vec![
        Sent {
            partition: 0,
            key: Some(b"order-1".to_vec()),
            headers: vec![
                ("content-type".to_owned(), Some(b"application/json".to_vec())),
                ("empty".to_owned(), None),
                ("binary".to_owned(), Some(vec![0, 255, 10])),
                ("content-type".to_owned(), Some(b"again".to_vec())),
            ],
            value: Some(b"{\"n\":1}".to_vec()),
        },
        Sent { partition: 1, key: Some(b"tombstone".to_vec()), headers: Vec::new(), value: None },
        Sent {
            partition: 2,
            key: None,
            headers: vec![("only".to_owned(), Some(Vec::new()))],
            value: Some(vec![0, 1, 2]),
        },
    ];
    first.extend((0..30).map(|i| Sent::plain(i % 3, &format!("plain-{i}"))));
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    produce(&producer, &topic, &first).await;

    let mut consumer = connect(consumer_config(&group, &[&topic], InitialOffset::Earliest)).await;
    let records = read(&mut consumer, first.len()).await;
    assert_eq!(records.len(), first.len(), "nothing twice");
    assert_ordered(&records);
    let mut got: Vec<Sent> = records.iter().map(Sent::of).collect();
    let mut expected = first.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "exact keys, headers in order, values");
    for record in &records {
        assert_eq!(record.topic, topic);
        let timestamp = record.timestamp_ms.expect("a timestamp");
        assert!((before - 60_000..before + 60_000).contains(&timestamp), "{timestamp} vs {before}");
    }
    assert_eq!(
        consumer.assignment(),
        (0..3).map(|p| (topic.clone(), p)).collect::<Vec<_>>(),
        "a lone member owns every partition"
    );
    commit_all(&mut consumer, &records);
    // Commits for partitions not owned are ignored, not errors.
    consumer.commit("someone-elses", 0, 5).unwrap();
    assert!(consumer.commit(&topic, 0, -1).is_err(), "negative offsets are refused");
    consumer.close().await.unwrap();

    let second: Vec<Sent> = (0..9).map(|i| Sent::plain(i % 3, &format!("after-{i}"))).collect();
    produce(&producer, &topic, &second).await;
    let mut consumer = connect(consumer_config(&group, &[&topic], InitialOffset::Earliest)).await;
    let mut records = read(&mut consumer, second.len()).await;
    records.extend(read_for(&mut consumer, Duration::from_secs(1)).await);
    let mut got: Vec<Sent> = records.iter().map(Sent::of).collect();
    let mut expected = second.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "what was committed is not read again, what came after is");
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn latest_on_a_new_group_skips_what_is_already_there() {
    let (prefix, _cleanup) = prefix();
    let topic = format!("{prefix}latest");
    create_topic(&topic, 3).await;
    let producer = producer();
    let old: Vec<Sent> = (0..6).map(|i| Sent::plain(i % 3, &format!("old-{i}"))).collect();
    produce(&producer, &topic, &old).await;

    let mut consumer = connect(consumer_config(&format!("{prefix}late"), &[&topic], InitialOffset::Latest)).await;
    // The member starts at the end once it owns the partitions; until then, a record produced
    // may come before that end. So produce until one arrives: whatever arrives is new.
    let mut records = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut produced = 0;
    while records.is_empty() {
        assert!(Instant::now() < deadline, "nothing new arrived");
        produce(&producer, &topic, &[Sent::plain(produced % 3, &format!("new-{produced}"))]).await;
        produced += 1;
        records.extend(read_for(&mut consumer, Duration::from_millis(300)).await);
    }
    records.extend(read_for(&mut consumer, Duration::from_secs(1)).await);
    for record in &records {
        let value = String::from_utf8(record.value.as_ref().unwrap().to_vec()).unwrap();
        assert!(value.starts_with("new-"), "{value} was there before the group");
    }
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_is_reported_until_it_exists_then_records_flow() {
    let (prefix, _cleanup) = prefix();
    let topic = format!("{prefix}later");
    let mut consumer = connect(consumer_config(&format!("{prefix}g"), &[&topic], InitialOffset::Earliest)).await;
    let started = Instant::now();
    for _ in 0..3 {
        let error = tokio::time::timeout(WAIT, consumer.next_batch(10)).await.unwrap().unwrap_err();
        assert!(matches!(&error, LogError::UnknownTopic(t) if *t == topic), "{error:?}");
    }
    // Reported again at most once a second: a caller retrying in a loop is not spun.
    assert!(started.elapsed() >= Duration::from_millis(1900), "{:?}", started.elapsed());

    let created = Instant::now();
    create_topic(&topic, 2).await;
    let sent = vec![Sent::plain(0, "a"), Sent::plain(1, "b"), Sent::plain(0, "c")];
    produce(&producer(), &topic, &sent).await;
    let mut records = Vec::new();
    while records.len() < sent.len() {
        assert!(created.elapsed() < WAIT, "records did not flow after the topic was created: {records:?}");
        match tokio::time::timeout(WAIT, consumer.next_batch(10)).await.unwrap() {
            Ok(batch) => records.extend(batch),
            Err(LogError::UnknownTopic(_)) => {}
            Err(error) => panic!("{error:?}"),
        }
    }
    let mut got: Vec<Sent> = records.iter().map(Sent::of).collect();
    let mut expected = sent;
    got.sort();
    expected.sort();
    assert_eq!(got, expected);
    eprintln!("records flowed {:?} after the topic was created", created.elapsed());
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn connecting_to_nothing_fails_quickly_naming_the_address() {
    let mut config = consumer_config("g", &["t"], InitialOffset::Earliest);
    config.bootstrap_servers = "127.0.0.1:1".to_owned();
    config.connect_timeout = Duration::from_secs(2);
    let started = Instant::now();
    let Err(error) = KafkaRecords.connect(config).await else { panic!("connected to nothing") };
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    assert!(matches!(error, LogError::Unavailable(_)), "{error:?}");
    assert!(error.to_string().contains("'127.0.0.1:1'"), "{error}");
}

#[tokio::test(flavor = "multi_thread")]
async fn uncommitted_records_go_to_the_next_member() {
    let (prefix, _cleanup) = prefix();
    let topic = format!("{prefix}redeliver");
    let group = format!("{prefix}group");
    create_topic(&topic, 1).await;
    let sent: Vec<Sent> = (0..10).map(|i| Sent::plain(0, &format!("r-{i}"))).collect();
    let offsets = produce(&producer(), &topic, &sent).await;

    let mut consumer = connect(consumer_config(&group, &[&topic], InitialOffset::Earliest)).await;
    let records = read(&mut consumer, sent.len()).await;
    // Only the first four are done.
    consumer.commit(&topic, 0, offsets[4]).unwrap();
    consumer.close().await.unwrap();

    let mut consumer = connect(consumer_config(&group, &[&topic], InitialOffset::Earliest)).await;
    let again = read(&mut consumer, 6).await;
    let again_offsets: Vec<i64> = again.iter().map(|r| r.offset).collect();
    assert_eq!(again_offsets, offsets[4..].to_vec(), "everything not committed, nothing that was");
    assert_eq!(again.iter().map(Sent::of).collect::<Vec<_>>(), records[4..].iter().map(Sent::of).collect::<Vec<_>>());
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_members_share_the_partitions_and_miss_nothing() {
    let (prefix, _cleanup) = prefix();
    let topic = format!("{prefix}shared");
    let group = format!("{prefix}group");
    create_topic(&topic, 4).await;
    let config = consumer_config(&group, &[&topic], InitialOffset::Earliest);
    let mut a = connect(config.clone()).await;
    let mut b = connect(config).await;

    // Both poll (as the KafkaSource would) while the group settles.
    let settle = Instant::now();
    loop {
        let (owned_a, owned_b) = (a.assignment(), b.assignment());
        let all: BTreeSet<_> = owned_a.iter().chain(&owned_b).cloned().collect();
        if !owned_a.is_empty() && !owned_b.is_empty() && all.len() == 4 && owned_a.len() + owned_b.len() == 4 {
            break;
        }
        assert!(settle.elapsed() < WAIT, "the group did not settle: {owned_a:?} {owned_b:?}");
        let _ = tokio::time::timeout(Duration::from_millis(100), a.next_batch(10)).await;
        let _ = tokio::time::timeout(Duration::from_millis(100), b.next_batch(10)).await;
    }
    eprintln!("settled in {:?}: {:?} / {:?}", settle.elapsed(), a.assignment(), b.assignment());

    let sent: Vec<Sent> = (0..200).map(|i| Sent::plain(i % 4, &format!("s-{i}"))).collect();
    let producer = producer();
    let producing = {
        let (topic, sent) = (topic.clone(), sent.clone());
        tokio::spawn(async move { produce(&producer, &topic, &sent).await })
    };
    let seen: Arc<Mutex<Vec<(char, Record)>>> = Arc::default();
    let expected: HashSet<Vec<u8>> = sent.iter().map(|s| s.value.clone().unwrap()).collect();
    let reader = |name: char, mut consumer: Member| {
        let (seen, expected) = (Arc::clone(&seen), expected.clone());
        tokio::spawn(async move {
            let deadline = Instant::now() + WAIT;
            loop {
                let values: HashSet<Vec<u8>> =
                    seen.lock().unwrap().iter().map(|(_, r)| r.value.clone().unwrap().to_vec()).collect();
                if values.is_superset(&expected) || Instant::now() > deadline {
                    break;
                }
                if let Ok(batch) = tokio::time::timeout(Duration::from_millis(200), consumer.next_batch(50)).await {
                    let batch = batch.unwrap();
                    commit_all(&mut consumer, &batch);
                    seen.lock().unwrap().extend(batch.into_iter().map(|r| (name, r)));
                }
            }
            consumer.close().await.unwrap();
        })
    };
    let (ta, tb) = (reader('a', a), reader('b', b));
    producing.await.unwrap();
    ta.await.unwrap();
    tb.await.unwrap();

    let seen = seen.lock().unwrap();
    let values: HashSet<Vec<u8>> = seen.iter().map(|(_, r)| r.value.clone().unwrap().to_vec()).collect();
    let missing: Vec<_> = expected.difference(&values).collect();
    assert!(missing.is_empty(), "missing {} records", missing.len());
    // The group settled before producing, so each partition had one reader.
    for partition in 0..4 {
        let readers: BTreeSet<char> = seen.iter().filter(|(_, r)| r.partition == partition).map(|(n, _)| *n).collect();
        assert_eq!(readers.len(), 1, "partition {partition} read by {readers:?}");
    }
    let by: BTreeSet<char> = seen.iter().map(|(n, _)| *n).collect();
    assert_eq!(by.len(), 2, "both members read");
    assert!(seen.len() <= sent.len() + 50, "{} reads of {} records", seen.len(), sent.len());
}

/// What the lease test records, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    ReleaseStarted(&'static str, BTreeSet<u32>),
    ReleaseDone(&'static str, BTreeSet<u32>),
    Held(&'static str, BTreeSet<u32>),
}

async fn join(config: &KafkaConfig, name: &'static str, log: &Arc<Mutex<Vec<Step>>>) -> Leases {
    let release_log = Arc::clone(log);
    let leases = Leases::join(config, 4, move |slots| {
        release_log.lock().unwrap().push(Step::ReleaseStarted(name, slots.clone()));
        // As a source stopping would: the slots stay with this node until it returns.
        std::thread::sleep(Duration::from_millis(300));
        release_log.lock().unwrap().push(Step::ReleaseDone(name, slots.clone()));
    })
    .await
    .expect("kafka answers (deploy/kafka/local.sh up)");
    let mut held = leases.held();
    let log = Arc::clone(log);
    tokio::spawn(async move {
        loop {
            let now = held.borrow_and_update().clone();
            log.lock().unwrap().push(Step::Held(name, now));
            if held.changed().await.is_err() {
                break;
            }
        }
    });
    leases
}

/// Samples both nodes' holdings every ~50 ms until `done` says yes, asserting no slot is held
/// by both at any sample.
async fn watch_exclusive(
    a: &Leases,
    b: Option<&Leases>,
    what: &str,
    done: impl Fn(&BTreeSet<u32>, &BTreeSet<u32>) -> bool,
) {
    let started = Instant::now();
    loop {
        let held_a = a.held().borrow().clone();
        let held_b = b.map(|b| b.held().borrow().clone()).unwrap_or_default();
        assert!(
            held_a.is_disjoint(&held_b),
            "{what}: both hold {:?}",
            held_a.intersection(&held_b).collect::<Vec<_>>()
        );
        if done(&held_a, &held_b) {
            eprintln!("{what}: {:?}", started.elapsed());
            return;
        }
        assert!(started.elapsed() < WAIT, "{what}: not reached: {held_a:?} / {held_b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_give_every_slot_to_exactly_one_node_and_move_only_after_release() {
    let (prefix, _cleanup) = prefix();
    let mut config = KafkaConfig::new(address());
    config.topic_prefix = prefix;
    let log: Arc<Mutex<Vec<Step>>> = Arc::default();
    let all: BTreeSet<u32> = (0..4).collect();

    let a = join(&config, "a", &log).await;
    assert_eq!(a.slots(), 4);
    watch_exclusive(&a, None, "a alone holds everything", |held, _| *held == all).await;

    let b = join(&config, "b", &log).await;
    assert_eq!(b.slots(), 4, "the existing topic's partitions are the slots");
    watch_exclusive(&a, Some(&b), "a and b share the slots", |held_a, held_b| {
        !held_a.is_empty() && !held_b.is_empty() && held_a.len() + held_b.len() == 4
    })
    .await;
    // Stable: sampled for a while longer, nothing is held twice and nothing is lost.
    let stable = Instant::now();
    while stable.elapsed() < Duration::from_secs(3) {
        let (held_a, held_b) = (a.held().borrow().clone(), b.held().borrow().clone());
        assert!(held_a.is_disjoint(&held_b) && held_a.len() + held_b.len() == 4, "{held_a:?} / {held_b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let b_held = b.held().borrow().clone();

    drop(b);
    watch_exclusive(&a, None, "a takes everything back", |held, _| *held == all).await;

    // Give the watchers a moment to log the last changes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let log = log.lock().unwrap().clone();
    let released_by = |name: &str, slot: u32, before: usize| {
        log[..before].iter().any(|s| matches!(s, Step::ReleaseDone(n, slots) if *n == name && slots.contains(&slot)))
    };
    // a released every slot b got before b held it.
    let b_got = log
        .iter()
        .position(|s| matches!(s, Step::Held("b", slots) if slots.is_superset(&b_held)))
        .unwrap_or_else(|| panic!("b never held {b_held:?}: {log:#?}"));
    assert!(b_held.iter().all(|slot| released_by("a", *slot, b_got)), "a released before b held: {log:#?}");
    // b, dropped, released its slots (and its watch dropped them) before a held them again.
    let b_leaving = log
        .iter()
        .position(|s| matches!(s, Step::ReleaseStarted("b", _)))
        .unwrap_or_else(|| panic!("b released nothing: {log:#?}"));
    let a_back = b_leaving
        + log[b_leaving..]
            .iter()
            .position(|s| matches!(s, Step::Held("a", slots) if *slots == all))
            .unwrap_or_else(|| panic!("a never held everything again: {log:#?}"));
    assert!(b_held.iter().all(|slot| released_by("b", *slot, a_back)), "b released before a held: {log:#?}");
    assert!(
        log.iter().any(|s| matches!(s, Step::Held("b", slots) if slots.is_empty())),
        "b ended with nothing: {log:#?}"
    );
    a.leave().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn leaving_releases_everything_before_returning() {
    let (prefix, _cleanup) = prefix();
    let mut config = KafkaConfig::new(address());
    config.topic_prefix = prefix;
    let released: Arc<Mutex<Vec<BTreeSet<u32>>>> = Arc::default();
    let leases = {
        let released = Arc::clone(&released);
        Leases::join(&config, 3, move |slots| released.lock().unwrap().push(slots.clone())).await.unwrap()
    };
    let mut held = leases.held();
    tokio::time::timeout(WAIT, held.wait_for(|slots| slots.len() == 3)).await.unwrap().unwrap();
    leases.leave().await;
    assert_eq!(*released.lock().unwrap(), vec![(0..3).collect::<BTreeSet<u32>>()]);
    assert!(held.borrow_and_update().is_empty());
    assert!(held.changed().await.is_err(), "the watch ends with the leases");
}

/// Kafka goes away under a consumer and comes back: `next_batch` says `Unavailable` (paced)
/// while it is gone, and records flow again afterwards without reconnecting.
#[tokio::test(flavor = "multi_thread")]
async fn an_outage_is_reported_then_records_flow_again() {
    let kafka = Arc::new(tokio::task::spawn_blocking(|| OwnKafka::start("records")).await.unwrap());
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", kafka.address()).create().unwrap();
    let new_topic = NewTopic::new("outage", 1, TopicReplication::Fixed(1));
    admin.create_topics([&new_topic], &AdminOptions::new()).await.unwrap().into_iter().for_each(|r| drop(r.unwrap()));
    let producer: FutureProducer = KafkaConfig::new(kafka.address()).producer().create().unwrap();
    let sent = |value: &str| Sent::plain(0, value);
    // The topic is served once a record is acknowledged.
    let deadline = Instant::now() + WAIT;
    loop {
        let record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to("outage").partition(0).payload(b"before");
        match producer.send(record, Duration::from_secs(5)).await {
            Ok(_) => break,
            Err(error) => assert!(Instant::now() < deadline, "{error:?}"),
        }
    }
    let mut config = consumer_config("outage-group", &["outage"], InitialOffset::Earliest);
    config.bootstrap_servers = kafka.address();
    let mut consumer = connect(config).await;
    let before = read(&mut consumer, 1).await;
    commit_all(&mut consumer, &before);
    let took = wait_committed(&kafka.address(), "outage-group", "outage", 0, before[0].offset + 1).await;
    eprintln!("the commit reached kafka after {took:?}");
    assert!(took < Duration::from_secs(3), "auto-commit took {took:?}");

    let stopping = Arc::clone(&kafka);
    tokio::task::spawn_blocking(move || stopping.run("stop")).await.unwrap();
    let stopped = Instant::now();
    let error = tokio::time::timeout(WAIT, consumer.next_batch(10))
        .await
        .expect("an error within the wait")
        .expect_err("no records during the outage");
    eprintln!("outage reported after {:?}: {error}", stopped.elapsed());
    assert!(matches!(&error, LogError::Unavailable(reason) if reason.contains(&kafka.address())), "{error:?}");
    let again = Instant::now();
    let error = tokio::time::timeout(WAIT, consumer.next_batch(10)).await.unwrap().unwrap_err();
    assert!(matches!(error, LogError::Unavailable(_)), "{error:?}");
    assert!(again.elapsed() >= Duration::from_millis(900), "paced: {:?}", again.elapsed());

    let starting = Arc::clone(&kafka);
    tokio::task::spawn_blocking(move || starting.run("up")).await.unwrap();
    let restarted = Instant::now();
    produce(&producer, "outage", &[sent("after")]).await;
    let mut records = Vec::new();
    while records.is_empty() {
        assert!(restarted.elapsed() < WAIT, "records did not flow again");
        match tokio::time::timeout(WAIT, consumer.next_batch(10)).await.unwrap() {
            Ok(batch) => records.extend(batch),
            Err(LogError::Unavailable(_)) => {}
            Err(error) => panic!("{error:?}"),
        }
    }
    eprintln!("records flowed {:?} after the restart", restarted.elapsed());
    assert_eq!(records.iter().map(Sent::of).collect::<Vec<_>>(), vec![sent("after")], "nothing committed came back");
    commit_all(&mut consumer, &records);

    // Closing while Kafka is gone ends, with an error, rather than hanging.
    let stopping = Arc::clone(&kafka);
    tokio::task::spawn_blocking(move || stopping.run("stop")).await.unwrap();
    let closing = Instant::now();
    let closed = consumer.close().await;
    eprintln!("close during an outage took {:?}: {closed:?}", closing.elapsed());
    drop(kafka);
}

/// The `kafka_tool` example, as the end-to-end tests run it.
fn kafka_tool() -> Option<PathBuf> {
    // target/debug/deps/records-… → target/debug/examples/kafka_tool
    let tool = std::env::current_exe().ok()?.parent()?.parent()?.join("examples").join("kafka_tool");
    tool.exists().then_some(tool)
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_tool_creates_produces_and_deletes() {
    let Some(tool) = kafka_tool() else {
        eprintln!("skipped: the kafka_tool example is not built (cargo test -p switchyard-log-kafka builds it)");
        return;
    };
    let (prefix, _cleanup) = prefix();
    let topic = format!("{prefix}tool");
    let run = |args: &[&str], stdin: &str| {
        let mut child = Command::new(&tool)
            .arg(address())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    for _ in 0..2 {
        let (ok, _, stderr) = run(&["create-topic", &topic, "2"], "");
        assert!(ok, "create-topic is idempotent: {stderr}");
    }
    let lines = [
        r#"{"key": "k", "value": "v", "headers": [["a", "1"], ["b", null]], "partition": 1}"#,
        "",
        r#"{"value_base64": "AAH/", "partition": 0}"#,
        r#"{"key": null, "value": null, "partition": 1}"#,
    ];
    let (ok, stdout, stderr) = run(&["produce", &topic], &lines.join("\n"));
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "1 0\n0 0\n1 1\n");

    let mut consumer = connect(consumer_config(&format!("{prefix}g"), &[&topic], InitialOffset::Earliest)).await;
    let mut got: Vec<Sent> = read(&mut consumer, 3).await.iter().map(Sent::of).collect();
    got.sort();
    let expected = vec![
        Sent { partition: 0, key: None, headers: Vec::new(), value: Some(vec![0, 1, 255]) },
        Sent { partition: 1, key: None, headers: Vec::new(), value: None },
        Sent {
            partition: 1,
            key: Some(b"k".to_vec()),
            headers: vec![("a".to_owned(), Some(b"1".to_vec())), ("b".to_owned(), None)],
            value: Some(b"v".to_vec()),
        },
    ];
    assert_eq!(got, expected);
    consumer.close().await.unwrap();

    let (ok, _, stderr) = run(&["produce", &topic], "{\"value\": \"x\", \"value_base64\": \"eA==\"}\n");
    assert!(!ok && stderr.contains("line 1: both 'value' and 'value_base64'"), "{stderr}");
    let (ok, _, stderr) = run(&["produce", &format!("{prefix}absent")], "{}\n");
    assert!(!ok && stderr.contains("does not exist"), "{stderr}");
    for _ in 0..2 {
        let (ok, _, stderr) = run(&["delete-topic", &topic], "");
        assert!(ok, "delete-topic is idempotent: {stderr}");
    }
}
