//! Conformance checks every [`EventLog`] backend must pass.
//!
//! Each check takes the log and the name of a topic that does not exist yet (it creates it,
//! and deletes it at the end when it passed), and returns a [`CheckFailed`] describing the
//! first violation. Reads are bounded by timeouts, so a broken backend fails instead of hanging.
//! [`run_all`] runs them all; call it from each backend's integration tests:
//!
//! ```ignore
//! let log: Arc<dyn EventLog> = open_my_backend().await;
//! switchyard_log::testkit::run_all(log, "conformance").await.unwrap();
//! ```

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use switchyard_event::{AttrValue, Data, DataForm, Event};

use crate::{EventLog, LogError, LogEvent, Subscription};

/// How long a check waits for events that should arrive.
const READ_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a check waits to be sure that no event arrives.
const QUIET_PERIOD: Duration = Duration::from_millis(300);

/// A conformance violation.
#[derive(Debug, thiserror::Error)]
#[error("check '{check}' failed: {message}")]
pub struct CheckFailed {
    /// The check.
    pub check: &'static str,
    /// What went wrong.
    pub message: String,
}

type CheckResult = Result<(), CheckFailed>;

fn fail(check: &'static str, message: impl Into<String>) -> CheckFailed {
    CheckFailed { check, message: message.into() }
}

/// Turns a log error into a check failure that says which call failed.
fn op<T>(check: &'static str, what: &str, result: Result<T, LogError>) -> Result<T, CheckFailed> {
    result.map_err(|e| fail(check, format!("{what}: {e}")))
}

macro_rules! ensure {
    ($check:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            return Err(fail($check, format!($($arg)+)));
        }
    };
}

/// A valid event with this `id` (no control characters), an extension of each type and a binary payload.
pub fn sample_event(id: &str, data_len: usize) -> Event {
    let string = |s: &str| AttrValue::String(s.to_owned());
    let attributes = vec![
        ("specversion".to_owned(), string("1.0")),
        ("id".to_owned(), string(id)),
        ("source".to_owned(), string("/switchyard/testkit")),
        ("type".to_owned(), string("dev.switchyard.testkit")),
        ("datacontenttype".to_owned(), string("application/octet-stream")),
        ("flag".to_owned(), AttrValue::Bool(true)),
        ("count".to_owned(), AttrValue::Integer(-7)),
    ];
    let bytes: Vec<u8> = id.bytes().cycle().take(data_len).collect();
    let data = Data { form: DataForm::Binary, bytes: bytes.into() };
    // Only fails for an `id` with control characters, which the kit never uses.
    Event::new(attributes, Some(data)).expect("testkit events are valid")
}

fn events(prefix: &str, n: usize) -> Vec<Event> {
    (0..n).map(|i| sample_event(&format!("{prefix}-{i}"), 16 + i % 200)).collect()
}

/// Reads exactly `n` events (in batches of at most `max`), failing on timeout.
pub async fn read_n(
    check: &'static str,
    sub: &mut dyn Subscription,
    n: usize,
    max: usize,
) -> Result<Vec<LogEvent>, CheckFailed> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let batch = tokio::time::timeout(READ_TIMEOUT, sub.next_batch(max.min(n - out.len())))
            .await
            .map_err(|_| fail(check, format!("timed out after reading {} of {n} events", out.len())))?;
        let batch = op(check, "next_batch", batch)?;
        ensure!(check, !batch.is_empty(), "next_batch returned an empty batch");
        ensure!(check, batch.len() <= max, "next_batch returned {} events, more than max {max}", batch.len());
        out.extend(batch);
    }
    Ok(out)
}

/// Fails if an event arrives within [`QUIET_PERIOD`].
async fn expect_nothing(check: &'static str, sub: &mut dyn Subscription) -> CheckResult {
    match tokio::time::timeout(QUIET_PERIOD, sub.next_batch(10)).await {
        Err(_) => Ok(()),
        Ok(Ok(batch)) => Err(fail(
            check,
            format!("expected no event, got {:?}", batch.iter().map(|e| e.event.id().to_owned()).collect::<Vec<_>>()),
        )),
        Ok(Err(e)) => Err(fail(check, format!("next_batch: {e}"))),
    }
}

fn ensure_same(check: &'static str, read: &[LogEvent], expected: &[Event]) -> CheckResult {
    ensure!(check, read.len() == expected.len(), "read {} events, expected {}", read.len(), expected.len());
    for (i, (got, want)) in read.iter().zip(expected).enumerate() {
        ensure!(check, *got.event == *want, "event {i} differs: got {:?}, expected {want:?}", got.event);
        if i > 0 {
            let previous = read[i - 1].position;
            ensure!(
                check,
                got.position.partition != previous.partition || got.position.offset > previous.offset,
                "offsets do not increase: {previous:?} then {:?}",
                got.position
            );
        }
    }
    Ok(())
}

/// Appended events are read back by a group created before them, in order and unchanged, and
/// `next_batch` honours `max`.
pub async fn append_then_read(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "append_then_read";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_topic again", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let batch = events("a", 25);
    op(CHECK, "append", log.append(topic, &batch[..1]).await)?;
    op(CHECK, "append", log.append(topic, &batch[1..]).await)?;
    op(CHECK, "append nothing", log.append(topic, &[]).await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let read = read_n(CHECK, sub.as_mut(), batch.len(), 7).await?;
    ensure_same(CHECK, &read, &batch)?;
    ensure!(CHECK, read.iter().all(|e| e.timestamp_ms > 0), "timestamps are not set");
    expect_nothing(CHECK, sub.as_mut()).await?;
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// A group created after some appends sees every later event and none of the earlier ones;
/// creating it again keeps its position.
pub async fn group_starts_at_end(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "group_starts_at_end";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "append", log.append(topic, &events("before", 3)).await)?;
    op(CHECK, "create_group", log.create_group(topic, "late").await)?;
    let later = events("after", 5);
    op(CHECK, "append", log.append(topic, &later[..2]).await)?;
    op(CHECK, "create_group again", log.create_group(topic, "late").await)?;
    op(CHECK, "append", log.append(topic, &later[2..]).await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "late").await)?;
    let read = read_n(CHECK, sub.as_mut(), later.len(), 100).await?;
    ensure_same(CHECK, &read, &later)?;
    expect_nothing(CHECK, sub.as_mut()).await?;
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// A new subscription of a group resumes at its last commit; deleted groups are gone.
pub async fn commit_resumes(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "commit_resumes";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let all = events("c", 10);
    op(CHECK, "append", log.append(topic, &all).await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let read = read_n(CHECK, sub.as_mut(), 4, 4).await?;
    let Some(last) = read.last() else { return Err(fail(CHECK, "read nothing")) };
    op(CHECK, "commit", sub.commit(last.position.partition, last.position.offset + 1))?;
    drop(sub);
    op(CHECK, "flush", log.flush().await)?;
    let mut sub = op(CHECK, "subscribe again", log.subscribe(topic, "g").await)?;
    let rest = read_n(CHECK, sub.as_mut(), 6, 100).await?;
    ensure_same(CHECK, &rest, &all[4..])?;
    drop(sub);

    op(CHECK, "delete_group", log.delete_group(topic, "g").await)?;
    op(CHECK, "delete_group again", log.delete_group(topic, "g").await)?;
    match log.subscribe(topic, "g").await {
        Err(LogError::UnknownGroup { .. }) => {}
        Err(e) => return Err(fail(CHECK, format!("subscribe to a deleted group: expected UnknownGroup, got {e}"))),
        Ok(_) => return Err(fail(CHECK, "subscribe to a deleted group succeeded")),
    }
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// Concurrent appenders (64 tasks × 50 events, one per call) each land exactly once, each
/// task's events in its order.
pub async fn concurrent_appends(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "concurrent_appends";
    const TASKS: usize = 64;
    const PER_TASK: usize = 50;
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..TASKS {
        let (log, topic) = (Arc::clone(log), topic.to_owned());
        tasks.spawn(async move {
            for i in 0..PER_TASK {
                log.append(&topic, &[sample_event(&format!("t{t}-{i}"), 64)]).await?;
            }
            Ok::<(), LogError>(())
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let appended = joined.map_err(|e| fail(CHECK, format!("appender task: {e}")))?;
        op(CHECK, "append", appended)?;
    }
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let read = read_n(CHECK, sub.as_mut(), TASKS * PER_TASK, 500).await?;
    let mut seen = HashSet::new();
    let mut next_per_task = vec![0usize; TASKS];
    for e in &read {
        let id = e.event.id();
        ensure!(CHECK, seen.insert(id.to_owned()), "event {id} read twice");
        let parsed = id
            .strip_prefix('t')
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(t, i)| Some((t.parse::<usize>().ok()?, i.parse::<usize>().ok()?)));
        let Some((t, i)) = parsed.filter(|(t, _)| *t < TASKS) else {
            return Err(fail(CHECK, format!("unexpected event {id}")));
        };
        ensure!(CHECK, next_per_task[t] == i, "task {t}: read event {i}, expected {}", next_per_task[t]);
        next_per_task[t] += 1;
    }
    expect_nothing(CHECK, sub.as_mut()).await?;
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// A deleted then recreated topic is empty, and its old groups are gone.
pub async fn delete_then_recreate_is_empty(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "delete_then_recreate_is_empty";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    op(CHECK, "append", log.append(topic, &events("old", 5)).await)?;
    op(CHECK, "delete_topic", log.delete_topic(topic).await)?;
    op(CHECK, "delete_topic again", log.delete_topic(topic).await)?;
    match log.append(topic, &events("x", 1)).await {
        Err(LogError::UnknownTopic(_)) => {}
        other => return Err(fail(CHECK, format!("append to a deleted topic: expected UnknownTopic, got {other:?}"))),
    }
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    match log.subscribe(topic, "g").await {
        Err(LogError::UnknownGroup { .. }) => {}
        Err(e) => return Err(fail(CHECK, format!("old group after recreate: expected UnknownGroup, got {e}"))),
        Ok(_) => return Err(fail(CHECK, "a group survived the deletion of its topic")),
    }
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let fresh = events("new", 3);
    op(CHECK, "append", log.append(topic, &fresh).await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let read = read_n(CHECK, sub.as_mut(), fresh.len(), 100).await?;
    ensure_same(CHECK, &read, &fresh)?;
    expect_nothing(CHECK, sub.as_mut()).await?;
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// Operations on a topic that does not exist fail with `UnknownTopic`; subscribing to an
/// unknown group fails with `UnknownGroup`.
pub async fn unknown_topic_errors(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "unknown_topic_errors";
    let is_unknown = |r: &Result<(), LogError>| matches!(r, Err(LogError::UnknownTopic(_)));
    let appended = log.append(topic, &events("x", 1)).await;
    ensure!(CHECK, is_unknown(&appended), "append: expected UnknownTopic, got {appended:?}");
    let created = log.create_group(topic, "g").await;
    ensure!(CHECK, is_unknown(&created), "create_group: expected UnknownTopic, got {created:?}");
    let subscribed = log.subscribe(topic, "g").await.map(|_| ());
    ensure!(CHECK, is_unknown(&subscribed), "subscribe: expected UnknownTopic, got {subscribed:?}");
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    let subscribed = log.subscribe(topic, "nope").await.map(|_| ());
    ensure!(
        CHECK,
        matches!(subscribed, Err(LogError::UnknownGroup { .. })),
        "subscribe to an unknown group: expected UnknownGroup, got {subscribed:?}"
    );
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// `next_batch` waits for an append that comes later, and returns it.
pub async fn next_batch_waits(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "next_batch_waits";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let later = events("late", 2);
    let appender = {
        let (log, topic, later) = (Arc::clone(log), topic.to_owned(), later.clone());
        tokio::spawn(async move {
            tokio::time::sleep(QUIET_PERIOD).await;
            log.append(&topic, &later).await
        })
    };
    let read = read_n(CHECK, sub.as_mut(), later.len(), 10).await?;
    let appended = appender.await.map_err(|e| fail(CHECK, format!("appender task: {e}")))?;
    op(CHECK, "append", appended)?;
    ensure_same(CHECK, &read, &later)?;
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// Runs every check, each on its own topic `<prefix>.<check>`.
pub async fn run_all(log: Arc<dyn EventLog>, prefix: &str) -> CheckResult {
    append_then_read(&log, &format!("{prefix}.append-then-read")).await?;
    group_starts_at_end(&log, &format!("{prefix}.group-starts-at-end")).await?;
    commit_resumes(&log, &format!("{prefix}.commit-resumes")).await?;
    concurrent_appends(&log, &format!("{prefix}.concurrent-appends")).await?;
    delete_then_recreate_is_empty(&log, &format!("{prefix}.delete-recreate")).await?;
    unknown_topic_errors(&log, &format!("{prefix}.unknown-topic")).await?;
    next_batch_waits(&log, &format!("{prefix}.next-batch-waits")).await?;
    Ok(())
}
