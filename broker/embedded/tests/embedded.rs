//! Embedded-log behaviour on real files: recovery, segments, retention, group commit.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_event::Event;
use switchyard_log::testkit::sample_event;
use switchyard_log::{EventLog, LogError, LogEvent};
use switchyard_log_embedded::{EmbeddedConfig, EmbeddedLog};

const TOPIC: &str = "default.my-broker";

fn events(prefix: &str, n: usize, data_len: usize) -> Vec<Event> {
    (0..n).map(|i| sample_event(&format!("{prefix}-{i}"), data_len)).collect()
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("topics").join(TOPIC))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

/// Record start positions in a segment file, from its framing.
fn record_positions(path: &Path) -> Vec<u64> {
    let bytes = fs::read(path).unwrap();
    let mut at = 0usize;
    let mut positions = Vec::new();
    while at + 24 <= bytes.len() {
        positions.push(at as u64);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 24 + len;
    }
    positions
}

async fn open(dir: &Path, tweak: impl FnOnce(&mut EmbeddedConfig)) -> Arc<EmbeddedLog> {
    let mut config = EmbeddedConfig::new(dir);
    tweak(&mut config);
    EmbeddedLog::open(config).await.unwrap()
}

/// Reads everything up to the current end through a group (without committing).
async fn read_all(log: &EmbeddedLog, group: &str) -> Vec<LogEvent> {
    let end = log.end_offset(TOPIC).unwrap();
    let mut sub = log.subscribe(TOPIC, group).await.unwrap();
    let mut out: Vec<LogEvent> = Vec::new();
    while out.last().map_or(0, |e| e.position.offset + 1) < end {
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.next_batch(64)).await.unwrap().unwrap();
        out.extend(batch);
    }
    out
}

fn ids(events: &[LogEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.id().to_owned()).collect()
}

fn expected_ids(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i}")).collect()
}

async fn setup(dir: &Path, tweak: impl FnOnce(&mut EmbeddedConfig)) -> Arc<EmbeddedLog> {
    let log = open(dir, tweak).await;
    log.create_topic(TOPIC).await.unwrap();
    log.create_group(TOPIC, "all").await.unwrap();
    log
}

async fn append_each(log: &EmbeddedLog, events: &[Event]) {
    for e in events {
        log.append(TOPIC, std::slice::from_ref(e)).await.unwrap();
    }
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |_| {}).await;
    append_each(&log, &events("e", 10, 100)).await;
    log.close().await;
    drop(log);

    let segment = segment_files(dir.path(), "log").pop().unwrap();
    let clean_len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new().append(true).open(&segment).unwrap().write_all(&[0xAB; 37]).unwrap();

    let log = open(dir.path(), |_| {}).await;
    assert_eq!(fs::metadata(&segment).unwrap().len(), clean_len);
    assert_eq!(log.end_offset(TOPIC), Some(10));
    assert_eq!(ids(&read_all(&log, "all").await), expected_ids("e", 0..10));
    log.append(TOPIC, &[sample_event("next", 10)]).await.unwrap();
    let all = read_all(&log, "all").await;
    assert_eq!(all.last().unwrap().position.offset, 10);
    assert_eq!(all.last().unwrap().event.id(), "next");
}

#[tokio::test]
async fn a_record_torn_mid_way_is_cut_and_offsets_continue() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |_| {}).await;
    append_each(&log, &events("e", 10, 100)).await;
    drop(log); // drop without close: must shut down cleanly too

    let segment = segment_files(dir.path(), "log").pop().unwrap();
    let last = *record_positions(&segment).last().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 30).unwrap();

    let log = open(dir.path(), |_| {}).await;
    assert_eq!(fs::metadata(&segment).unwrap().len(), last);
    assert_eq!(log.end_offset(TOPIC), Some(9));
    assert_eq!(ids(&read_all(&log, "all").await), expected_ids("e", 0..9));
    log.append(TOPIC, &[sample_event("again", 10)]).await.unwrap();
    let all = read_all(&log, "all").await;
    assert_eq!(all.len(), 10);
    assert_eq!((all[9].position.offset, all[9].event.id()), (9, "again"));
}

#[tokio::test]
async fn a_checksum_mismatch_mid_segment_truncates_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |_| {}).await;
    append_each(&log, &events("e", 10, 50)).await;
    log.close().await;
    drop(log);

    let segment = segment_files(dir.path(), "log").pop().unwrap();
    let positions = record_positions(&segment);
    let mut bytes = fs::read(&segment).unwrap();
    bytes[positions[5] as usize + 30] ^= 0x01; // a payload byte of record 5
    fs::write(&segment, &bytes).unwrap();

    let log = open(dir.path(), |_| {}).await;
    assert_eq!(fs::metadata(&segment).unwrap().len(), positions[5]);
    assert_eq!(log.end_offset(TOPIC), Some(5));
    assert_eq!(ids(&read_all(&log, "all").await), expected_ids("e", 0..5));
    log.append(TOPIC, &[sample_event("after", 10)]).await.unwrap();
    assert_eq!(read_all(&log, "all").await[5].position.offset, 5);
}

#[tokio::test]
async fn segments_roll_and_reads_cross_them_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |c| c.segment_bytes = 4096).await;
    let all = events("e", 60, 1000);
    append_each(&log, &all[..40]).await;
    log.append(TOPIC, &all[40..]).await.unwrap(); // one batch larger than a segment
    let segments = segment_files(dir.path(), "log");
    assert!(segments.len() >= 10, "{} segments", segments.len());
    let names: Vec<String> = segments.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names[0], "00000000000000000000.log");
    assert!(names.iter().all(|n| n.len() == 24), "{names:?}");

    let read = read_all(&log, "all").await;
    assert_eq!(ids(&read), expected_ids("e", 0..60));
    assert!(read.iter().zip(&all).all(|(r, e)| *r.event == *e));
    drop(log);

    // Reopen, also with every index lost: it is rebuilt by scanning.
    for idx in segment_files(dir.path(), "idx") {
        fs::remove_file(idx).unwrap();
    }
    let log = open(dir.path(), |c| c.segment_bytes = 4096).await;
    assert_eq!(log.end_offset(TOPIC), Some(60));
    assert_eq!(ids(&read_all(&log, "all").await), expected_ids("e", 0..60));
    assert_eq!(segment_files(dir.path(), "idx").len(), segments.len());
    log.append(TOPIC, &[sample_event("more", 10)]).await.unwrap();
    assert_eq!(read_all(&log, "all").await[60].event.id(), "more");
}

#[tokio::test]
async fn the_sparse_index_is_used_and_a_bad_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |_| {}).await;
    // ~200 KiB in one segment: about 50 index entries.
    append_each(&log, &events("e", 200, 1000)).await;
    let mut sub = log.subscribe(TOPIC, "all").await.unwrap();
    let first = sub.next_batch(150).await.unwrap();
    sub.commit(0, 150).unwrap();
    drop(sub);
    assert_eq!(first.len(), 150);
    let idx = segment_files(dir.path(), "idx").pop().unwrap();
    assert!(fs::metadata(&idx).unwrap().len() >= 8 * 40);
    drop(log);

    // An index pointing at the wrong places must not break reads after recovery.
    let mut garbage = Vec::new();
    for i in 0u32..60 {
        garbage.extend_from_slice(&(i * 3 + 1).to_le_bytes());
        garbage.extend_from_slice(&(i * 1000 + 7).to_le_bytes());
    }
    fs::write(&idx, &garbage).unwrap();
    let log = open(dir.path(), |_| {}).await;
    let mut sub = log.subscribe(TOPIC, "all").await.unwrap();
    let rest = sub.next_batch(100).await.unwrap();
    assert_eq!(ids(&rest), expected_ids("e", 150..200));
}

#[tokio::test]
async fn retention_by_size_deletes_oldest_closed_segments_and_readers_skip_forward() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |c| {
        c.segment_bytes = 4096;
        c.retention_bytes = 10_000;
        c.retention_check_interval = Duration::from_secs(3600);
    })
    .await;
    append_each(&log, &events("e", 60, 1000)).await;
    let before = segment_files(dir.path(), "log").len();
    let deleted = log.enforce_retention();
    let after = segment_files(dir.path(), "log");
    assert!(deleted > 0 && after.len() == before - deleted, "{before} → {}", after.len());
    let total: u64 = after.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    assert!(total <= 10_000, "{total} bytes left");
    assert_eq!(segment_files(dir.path(), "idx").len(), after.len());

    // The group still points at offset 0: it skips to the first retained record.
    let read = read_all(&log, "all").await;
    let first = read[0].position.offset;
    assert!(first > 0);
    assert_eq!(ids(&read), expected_ids("e", first as usize..60));
    assert_eq!(log.enforce_retention(), 0);
}

#[tokio::test]
async fn the_total_budget_deletes_the_oldest_segments_of_any_topic() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |c| {
        c.segment_bytes = 4096;
        c.retention_total_bytes = 16_000;
        c.retention_check_interval = Duration::from_secs(3600);
    })
    .await;
    // The old topic fills first, then a newer one: each alone is within its own 10 GiB.
    append_each(&log, &events("old", 30, 1000)).await;
    let newer = "default.newer";
    log.create_topic(newer).await.unwrap();
    for event in events("new", 8, 1000) {
        log.append(newer, std::slice::from_ref(&event)).await.unwrap();
    }
    let newer_files = || fs::read_dir(dir.path().join("topics").join(newer)).unwrap().count();
    let newer_before = newer_files();
    assert!(log.enforce_retention() > 0);
    let sizes = |topic: &str| -> u64 {
        let dir = dir.path().join("topics").join(topic);
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum()
    };
    assert!(sizes(TOPIC) + sizes(newer) <= 16_000, "{} + {}", sizes(TOPIC), sizes(newer));
    assert_eq!(newer_files(), newer_before, "the oldest segments went first: all of the old topic's");
    assert_eq!(log.enforce_retention(), 0);
}

#[tokio::test]
async fn retention_by_age_keeps_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |c| {
        c.segment_bytes = 4096;
        c.retention_age = Duration::from_secs(3600);
        c.retention_check_interval = Duration::from_secs(3600);
    })
    .await;
    append_each(&log, &events("e", 30, 1000)).await;
    let before = segment_files(dir.path(), "log").len();
    assert_eq!(log.enforce_retention(), 0, "nothing is an hour old");
    drop(log);

    let log = open(dir.path(), |c| {
        c.segment_bytes = 4096;
        c.retention_age = Duration::from_millis(1);
        c.retention_check_interval = Duration::from_millis(20);
    })
    .await;
    // The background task does it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while segment_files(dir.path(), "log").len() > 1 {
        assert!(tokio::time::Instant::now() < deadline, "retention did not run");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(before > 1);
    assert_eq!(segment_files(dir.path(), "log").len(), 1);
    let read = read_all(&log, "all").await;
    assert!(!read.is_empty());
    assert_eq!(read.last().unwrap().event.id(), "e-29");
    log.append(TOPIC, &[sample_event("x", 10)]).await.unwrap();
    assert_eq!(log.end_offset(TOPIC), Some(31));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_batches_concurrent_appends() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |_| {}).await;
    let before = log.stats();
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..64 {
        let log = Arc::clone(&log);
        tasks.spawn(async move {
            for i in 0..20 {
                log.append(TOPIC, &[sample_event(&format!("t{t}-{i}"), 1000)]).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let after = log.stats();
    let appends = after.appends - before.appends;
    let fsyncs = after.fsyncs - before.fsyncs;
    assert_eq!(appends, 64 * 20);
    assert_eq!(after.events - before.events, 64 * 20);
    assert!(after.bytes - before.bytes > 64 * 20 * 1000);
    eprintln!("{appends} appends took {fsyncs} fsyncs");
    assert!(fsyncs * 4 <= appends, "{appends} appends took {fsyncs} fsyncs");
    assert_eq!(read_all(&log, "all").await.len(), 64 * 20);
}

#[tokio::test]
async fn reopen_after_drop_keeps_events_topics_and_commits() {
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |_| {}).await;
    log.create_topic("other").await.unwrap();
    append_each(&log, &events("e", 12, 300)).await;
    log.create_group(TOPIC, "late").await.unwrap();
    let mut sub = log.subscribe(TOPIC, "all").await.unwrap();
    assert_eq!(sub.next_batch(5).await.unwrap().len(), 5);
    sub.commit(0, 5).unwrap(); // not flushed: dropping the log persists it
    assert!(sub.commit(1, 5).is_err(), "the embedded log has only partition 0");
    drop(log);
    // A subscription that outlives its log returns what is durable, then `Closed`.
    let rest = sub.next_batch(100).await.unwrap();
    assert_eq!(rest.len(), 7);
    assert!(matches!(sub.next_batch(100).await, Err(LogError::Closed)));
    drop(sub);

    let log = open(dir.path(), |_| {}).await;
    assert_eq!(log.end_offset("other"), Some(0));
    assert_eq!(log.end_offset(TOPIC), Some(12));
    assert_eq!(ids(&read_all(&log, "all").await), expected_ids("e", 5..12));
    log.append(TOPIC, &[sample_event("new", 10)]).await.unwrap();
    assert_eq!(ids(&read_all(&log, "late").await), ["new"]);
    log.close().await;
    assert!(matches!(log.append(TOPIC, &[sample_event("x", 1)]).await, Err(LogError::Closed)));
}

#[tokio::test]
async fn a_late_reader_streams_its_backlog_from_disk_in_bounded_batches() {
    // A reader that does not ask for more holds nothing but its cursor: appends keep going and
    // the backlog is read later from the files, `max` events at a time.
    let dir = tempfile::tempdir().unwrap();
    let log = setup(dir.path(), |c| c.segment_bytes = 64 << 10).await;
    let mut sub = log.subscribe(TOPIC, "all").await.unwrap();
    for chunk in events("e", 500, 1000).chunks(50) {
        log.append(TOPIC, chunk).await.unwrap();
    }
    let mut n = 0;
    while n < 500 {
        let batch = sub.next_batch(32).await.unwrap();
        assert!(batch.len() <= 32);
        assert_eq!(batch[0].position.offset, n as u64);
        n += batch.len();
    }
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Append this many events of this size in one call.
        Append(usize, usize),
        /// Close and reopen.
        Reopen,
        /// Drop, append garbage to the last segment file (a torn write), reopen.
        CrashWithTornTail(Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (1usize..6, 0usize..1500).prop_map(|(n, size)| Op::Append(n, size)),
            1 => Just(Op::Reopen),
            1 => proptest::collection::vec(any::<u8>(), 1..80).prop_map(Op::CrashWithTornTail),
        ]
    }

    fn last_segment(dir: &Path) -> PathBuf {
        segment_files(dir, "log").pop().unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn acknowledged_events_are_never_lost(ops in proptest::collection::vec(op(), 1..16)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let dir = tempfile::tempdir().unwrap();
                let config = |c: &mut EmbeddedConfig| c.segment_bytes = 4096;
                let mut log = setup(dir.path(), config).await;
                let mut acknowledged: Vec<String> = Vec::new();
                for (step, op) in ops.into_iter().enumerate() {
                    match op {
                        Op::Append(n, size) => {
                            let batch = events(&format!("s{step}"), n, size);
                            log.append(TOPIC, &batch).await.unwrap();
                            acknowledged.extend(batch.iter().map(|e| e.id().to_owned()));
                        }
                        Op::Reopen => {
                            log.close().await;
                            drop(log);
                            log = open(dir.path(), config).await;
                        }
                        Op::CrashWithTornTail(garbage) => {
                            drop(log);
                            OpenOptions::new().append(true).open(last_segment(dir.path())).unwrap()
                                .write_all(&garbage).unwrap();
                            log = open(dir.path(), config).await;
                        }
                    }
                    assert_eq!(log.end_offset(TOPIC), Some(acknowledged.len() as u64));
                }
                let read = read_all(&log, "all").await;
                assert_eq!(ids(&read), acknowledged);
                for (i, e) in read.iter().enumerate() {
                    assert_eq!(e.position.offset, i as u64);
                }
            });
        }
    }
}
