//! Conformance checks every [`EventLog`] backend must pass, and an in-memory backend
//! ([`memory`]) for tests of what runs on the log.
//!
//! Each check takes the log and the name of a topic that does not exist yet (it creates it,
//! and deletes it at the end when it passed), or, for the dead-letter checks, a dead-letter
//! scope not used yet (purged at the end when it passed), and returns a [`CheckFailed`]
//! describing the first violation. Reads are bounded by timeouts, so a broken backend fails instead of hanging.
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

use crate::{DeadLetter, EventLog, LogError, LogEvent, Subscription};

pub mod memory;
mod reading;

pub use reading::{
    next_batch_cancel_safe, position_follows_reads_and_seeks, reader_reads_from_offset, seek_rereads_and_skips,
};

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
// For the checks in submodules.
use ensure;

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
    let ends = op(CHECK, "end_offsets", log.end_offsets(topic).await)?;
    ensure!(CHECK, !ends.is_empty(), "end_offsets lists no partition");
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let read = read_n(CHECK, sub.as_mut(), batch.len(), 7).await?;
    ensure_same(CHECK, &read, &batch)?;
    for event in &read {
        let end = ends.get(event.position.partition as usize).copied().unwrap_or(0);
        ensure!(CHECK, event.position.offset < end, "event at {:?} is not below its end offset {end}", event.position);
    }
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
    let ends = log.end_offsets(topic).await.map(|_| ());
    ensure!(CHECK, is_unknown(&ends), "end_offsets: expected UnknownTopic, got {ends:?}");
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

/// A dead-letter entry for `event_id` (the `id` is left empty: the store assigns it).
pub fn sample_dead_letter(event_id: &str, attempts: u32) -> DeadLetter {
    DeadLetter {
        id: String::new(),
        event: sample_event(event_id, 32),
        reason: format!("retries exhausted after {attempts} attempts"),
        attempts,
        last_status: Some(503),
        last_error: None,
        dead_lettered_at: "2024-05-01T12:00:00Z".to_owned(),
    }
}

/// Fails unless `got` is `want` with the id `id`.
fn ensure_entry(check: &'static str, got: &DeadLetter, want: &DeadLetter, id: &str) -> CheckResult {
    ensure!(check, got.id == id, "entry has id '{}', expected '{id}'", got.id);
    let want = DeadLetter { id: id.to_owned(), ..want.clone() };
    ensure!(check, *got == want, "entry differs:\n got {got:?}\nwant {want:?}");
    Ok(())
}

fn entry_ids(entries: &[DeadLetter]) -> Vec<&str> {
    entries.iter().map(|e| e.id.as_str()).collect()
}

/// Stored entries are read back exactly (event attributes with their types and order, data
/// form and bytes, and every other field), with store-assigned ids that increase.
pub async fn dead_letters_roundtrip(log: &Arc<dyn EventLog>, scope: &str) -> CheckResult {
    const CHECK: &str = "dead_letters_roundtrip";
    let store = log.dead_letters();
    let empty = op(CHECK, "list an unused scope", store.list(scope, None, 10).await)?;
    ensure!(CHECK, empty.is_empty(), "an unused scope lists {:?}", entry_ids(&empty));

    let mut first = sample_dead_letter("dl-first", 3);
    first.id = "chosen-by-caller".to_owned();
    let second = DeadLetter {
        id: String::new(),
        event: {
            let attributes = vec![
                ("specversion".to_owned(), AttrValue::String("1.0".to_owned())),
                ("id".to_owned(), AttrValue::String("dl-second".to_owned())),
                ("type".to_owned(), AttrValue::String("dev.switchyard.testkit".to_owned())),
                ("source".to_owned(), AttrValue::String("/switchyard/testkit".to_owned())),
                ("zeta".to_owned(), AttrValue::Integer(i32::MIN)),
                ("alpha".to_owned(), AttrValue::Bool(false)),
                ("datacontenttype".to_owned(), AttrValue::String("application/json".to_owned())),
            ];
            let data = Data { form: DataForm::Json, bytes: br#"{"b": 1, "a": [true, null]}"#.to_vec().into() };
            Event::new(attributes, Some(data)).map_err(|e| fail(CHECK, format!("test event: {e}")))?
        },
        reason: "not retryable: 400 Bad Request — «ü»".to_owned(),
        attempts: 0,
        last_status: None,
        last_error: Some("connection refused".to_owned()),
        dead_lettered_at: "2024-05-01T12:00:01.5Z".to_owned(),
    };
    let mut third = sample_dead_letter("dl-third", u32::MAX);
    third.event = sample_event("dl-third", 0);
    third.reason = String::new();
    third.last_status = Some(u16::MAX);
    third.last_error = Some(String::new());

    let first_id = op(CHECK, "put", store.put(scope, first.clone()).await)?;
    ensure!(CHECK, first_id != "chosen-by-caller", "put kept the caller's id instead of assigning one");
    ensure!(CHECK, !first_id.is_empty(), "put returned an empty id");
    let second_id = op(CHECK, "put", store.put(scope, second.clone()).await)?;
    let third_id = op(CHECK, "put", store.put(scope, third.clone()).await)?;
    ensure!(
        CHECK,
        first_id < second_id && second_id < third_id,
        "ids do not increase: '{first_id}', '{second_id}', '{third_id}'"
    );

    for (id, want) in [(&first_id, &first), (&second_id, &second), (&third_id, &third)] {
        let got = op(CHECK, "get", store.get(scope, id).await)?;
        let Some(got) = got else { return Err(fail(CHECK, format!("get '{id}': not found"))) };
        ensure_entry(CHECK, &got, want, id)?;
    }
    let missing = op(CHECK, "get an unknown id", store.get(scope, "no-such-id").await)?;
    ensure!(CHECK, missing.is_none(), "get of an unknown id returned {missing:?}");

    let listed = op(CHECK, "list", store.list(scope, None, 10).await)?;
    ensure!(CHECK, listed.len() == 3, "list returned {:?}, expected 3 entries", entry_ids(&listed));
    ensure_entry(CHECK, &listed[0], &first, &first_id)?;
    ensure_entry(CHECK, &listed[1], &second, &second_id)?;
    ensure_entry(CHECK, &listed[2], &third, &third_id)?;

    let purged = op(CHECK, "purge", store.purge(scope).await)?;
    ensure!(CHECK, purged == 3, "purge removed {purged} entries, expected 3");
    Ok(())
}

/// Listing pages with `after` and `limit`; `remove` and `purge` report what they removed; scopes
/// (including one that extends another, `s` and `s/x`) never see each other's entries; ids are
/// not reused after removal or purge; concurrent puts get distinct ids.
pub async fn dead_letters_paging_and_removal(log: &Arc<dyn EventLog>, scope: &str) -> CheckResult {
    const CHECK: &str = "dead_letters_paging_and_removal";
    const N: usize = 7;
    let store = log.dead_letters();
    let nested = format!("{scope}/nested");
    let longer = format!("{scope}x");

    // Neighbours before and after, so that a scope's boundaries are exercised both ways.
    let nested_id = op(CHECK, "put nested", store.put(&nested, sample_dead_letter("dl-nested", 1)).await)?;
    let mut ids = Vec::with_capacity(N);
    for i in 0..N {
        let id = op(CHECK, "put", store.put(scope, sample_dead_letter(&format!("dl-{i}"), 1)).await)?;
        if let Some(previous) = ids.last() {
            ensure!(CHECK, *previous < id, "ids do not increase: '{previous}' then '{id}'");
        }
        ids.push(id);
    }
    let longer_id = op(CHECK, "put longer", store.put(&longer, sample_dead_letter("dl-longer", 1)).await)?;

    // Paging.
    let mut paged: Vec<String> = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..=N {
        let page = op(CHECK, "list page", store.list(scope, after.as_deref(), 3).await)?;
        ensure!(CHECK, page.len() <= 3, "list returned {} entries, more than limit 3", page.len());
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        paged.extend(page.iter().map(|e| e.id.clone()));
    }
    ensure!(CHECK, paged == ids, "paging by 3 listed {paged:?}, expected {ids:?}");
    let tail = op(CHECK, "list after", store.list(scope, Some(&ids[2]), 100).await)?;
    ensure!(CHECK, entry_ids(&tail) == ids[3..], "list after '{}' returned {:?}", ids[2], entry_ids(&tail));
    let events: Vec<String> = tail.iter().map(|e| e.event.id().to_owned()).collect();
    let expected: Vec<String> = (3..N).map(|i| format!("dl-{i}")).collect();
    ensure!(CHECK, events == expected, "entries hold events {events:?}, expected {expected:?}");
    let none = op(CHECK, "list limit 0", store.list(scope, None, 0).await)?;
    ensure!(CHECK, none.is_empty(), "list with limit 0 returned {:?}", entry_ids(&none));
    let past = op(CHECK, "list after the last", store.list(scope, Some(&ids[N - 1]), 10).await)?;
    ensure!(CHECK, past.is_empty(), "list after the last id returned {:?}", entry_ids(&past));

    // Isolation.
    for (other, id, event) in [(&nested, &nested_id, "dl-nested"), (&longer, &longer_id, "dl-longer")] {
        let listed = op(CHECK, "list other scope", store.list(other, None, 100).await)?;
        let events: Vec<&str> = listed.iter().map(|e| e.event.id()).collect();
        ensure!(CHECK, events == [event], "scope '{other}' lists events {events:?}, expected [{event}]");
        ensure!(CHECK, listed[0].id == *id, "scope '{other}' lists id '{}', expected '{id}'", listed[0].id);
    }

    // Removal.
    ensure!(CHECK, op(CHECK, "remove", store.remove(scope, &ids[3]).await)?, "remove of an existing entry said false");
    ensure!(CHECK, !op(CHECK, "remove again", store.remove(scope, &ids[3]).await)?, "second remove said true");
    ensure!(CHECK, !op(CHECK, "remove unknown", store.remove(scope, "no-such-id").await)?, "remove unknown said true");
    let gone = op(CHECK, "get removed", store.get(scope, &ids[3]).await)?;
    ensure!(CHECK, gone.is_none(), "a removed entry is still returned by get");
    let after_removed = op(CHECK, "list after a removed id", store.list(scope, Some(&ids[3]), 100).await)?;
    ensure!(CHECK, entry_ids(&after_removed) == ids[4..], "list after a removed id: {:?}", entry_ids(&after_removed));
    let listed = op(CHECK, "list", store.list(scope, None, 100).await)?;
    let expected: Vec<&String> = ids.iter().enumerate().filter(|(i, _)| *i != 3).map(|(_, id)| id).collect();
    ensure!(CHECK, entry_ids(&listed) == expected, "after remove, list returned {:?}", entry_ids(&listed));

    // A removed last entry's id is not reused.
    ensure!(CHECK, op(CHECK, "remove last", store.remove(scope, &ids[N - 1]).await)?, "remove of the last said false");
    let next = op(CHECK, "put after remove", store.put(scope, sample_dead_letter("dl-next", 1)).await)?;
    ensure!(CHECK, next > ids[N - 1], "id '{next}' after removing '{}' is not greater", ids[N - 1]);

    // Purge: only this scope, and ids go on increasing.
    let purged = op(CHECK, "purge", store.purge(scope).await)?;
    ensure!(CHECK, purged == N as u64 - 1, "purge removed {purged} entries, expected {}", N - 1);
    let again = op(CHECK, "purge again", store.purge(scope).await)?;
    ensure!(CHECK, again == 0, "second purge removed {again} entries");
    let left = op(CHECK, "list purged", store.list(scope, None, 100).await)?;
    ensure!(CHECK, left.is_empty(), "a purged scope lists {:?}", entry_ids(&left));
    for other in [&nested, &longer] {
        let listed = op(CHECK, "list other scope", store.list(other, None, 100).await)?;
        ensure!(CHECK, listed.len() == 1, "purging '{scope}' changed '{other}': {:?}", entry_ids(&listed));
    }
    let after_purge = op(CHECK, "put after purge", store.put(scope, sample_dead_letter("dl-after", 1)).await)?;
    ensure!(CHECK, after_purge > next, "id '{after_purge}' after purge is not greater than '{next}'");

    // Concurrent puts.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..16 {
        let (store, scope) = (Arc::clone(&store), scope.to_owned());
        tasks.spawn(async move { store.put(&scope, sample_dead_letter(&format!("dl-c{i}"), 1)).await });
    }
    let mut concurrent = HashSet::new();
    while let Some(joined) = tasks.join_next().await {
        let id = op(CHECK, "concurrent put", joined.map_err(|e| fail(CHECK, format!("put task: {e}")))?)?;
        ensure!(CHECK, id > after_purge, "concurrent put got id '{id}', not after '{after_purge}'");
        ensure!(CHECK, concurrent.insert(id.clone()), "two concurrent puts got id '{id}'");
    }
    let listed = op(CHECK, "list", store.list(scope, None, 100).await)?;
    ensure!(CHECK, listed.len() == 17, "list returned {} entries after concurrent puts, expected 17", listed.len());
    ensure!(CHECK, listed.windows(2).all(|w| w[0].id < w[1].id), "list is not in id order: {:?}", entry_ids(&listed));

    for s in [scope, nested.as_str(), longer.as_str()] {
        op(CHECK, "purge", store.purge(s).await)?;
    }
    Ok(())
}

/// Dead letters are independent of topics: deleting a topic and its groups keeps them.
pub async fn dead_letters_outlive_topics(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "dead_letters_outlive_topics";
    let store = log.dead_letters();
    // Scopes named like the topic and its group, in case a backend keys both alike.
    let scopes = [topic.to_owned(), format!("{topic}/g")];
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let entry = sample_dead_letter("dl-kept", 2);
    let mut ids = Vec::new();
    for scope in &scopes {
        ids.push(op(CHECK, "put", store.put(scope, entry.clone()).await)?);
    }
    op(CHECK, "delete_group", log.delete_group(topic, "g").await)?;
    op(CHECK, "delete_topic", log.delete_topic(topic).await)?;
    for (scope, id) in scopes.iter().zip(&ids) {
        let got = op(CHECK, "get", store.get(scope, id).await)?;
        let Some(got) = got else { return Err(fail(CHECK, format!("entry '{id}' of '{scope}' lost with its topic"))) };
        ensure_entry(CHECK, &got, &entry, id)?;
        op(CHECK, "purge", store.purge(scope).await)?;
    }
    Ok(())
}

/// The state table: put, get, overwrite, scan by prefix (in key order, nothing outside the
/// prefix), remove (idempotent), and entries outliving the topics.
pub async fn state_roundtrip(log: &Arc<dyn EventLog>, prefix: &str) -> CheckResult {
    const CHECK: &str = "state_roundtrip";
    let state = log.state();
    let key = |name: &str| format!("{prefix}/{name}");
    ensure!(CHECK, op(CHECK, "get", state.get(&key("a")).await)?.is_none(), "a key never written has a value");
    op(CHECK, "put", state.put(&key("b"), b"2").await)?;
    op(CHECK, "put", state.put(&key("a"), b"1").await)?;
    op(CHECK, "put", state.put(&key("a"), b"\x00one").await)?;
    op(CHECK, "put", state.put(&format!("{prefix}x/outside"), b"no").await)?;
    let value = op(CHECK, "get", state.get(&key("a")).await)?;
    ensure!(CHECK, value.as_deref() == Some(b"\x00one".as_slice()), "get after overwrite returned {value:?}");
    let scanned = op(CHECK, "scan", state.scan(&format!("{prefix}/")).await)?;
    let expected = vec![(key("a"), b"\x00one".to_vec()), (key("b"), b"2".to_vec())];
    ensure!(CHECK, scanned == expected, "scan returned {scanned:?}, expected {expected:?}");
    op(CHECK, "remove", state.remove(&key("a")).await)?;
    op(CHECK, "remove", state.remove(&key("a")).await)?;
    ensure!(CHECK, op(CHECK, "get", state.get(&key("a")).await)?.is_none(), "a removed key still has a value");
    let scanned = op(CHECK, "scan", state.scan(&format!("{prefix}/")).await)?;
    ensure!(CHECK, scanned.len() == 1, "scan after remove returned {scanned:?}");
    for leftover in [key("b"), format!("{prefix}x/outside")] {
        op(CHECK, "remove", state.remove(&leftover).await)?;
    }

    // Concurrent writes all land, each durable when its own call returns.
    let mut writers = tokio::task::JoinSet::new();
    for i in 0..32 {
        let (state, key) = (Arc::clone(&state), key(&format!("c{i:02}")));
        writers.spawn(async move { state.put(&key, key.as_bytes()).await });
    }
    while let Some(written) = writers.join_next().await {
        op(CHECK, "put", written.map_err(|e| LogError::Unavailable(e.to_string())).and_then(|r| r))?;
    }
    let scanned = op(CHECK, "scan", state.scan(&format!("{prefix}/c")).await)?;
    ensure!(CHECK, scanned.len() == 32, "{} of 32 concurrent puts are there", scanned.len());
    ensure!(
        CHECK,
        scanned.iter().all(|(key, value)| key.as_bytes() == value.as_slice()),
        "a concurrent put kept another's value"
    );
    for (key, _) in scanned {
        op(CHECK, "remove", state.remove(&key).await)?;
    }
    Ok(())
}

/// Runs every check, each on its own topic `<prefix>.<check>` (dead-letter checks on scope
/// `<prefix>/<check>`).
pub async fn run_all(log: Arc<dyn EventLog>, prefix: &str) -> CheckResult {
    append_then_read(&log, &format!("{prefix}.append-then-read")).await?;
    group_starts_at_end(&log, &format!("{prefix}.group-starts-at-end")).await?;
    commit_resumes(&log, &format!("{prefix}.commit-resumes")).await?;
    concurrent_appends(&log, &format!("{prefix}.concurrent-appends")).await?;
    delete_then_recreate_is_empty(&log, &format!("{prefix}.delete-recreate")).await?;
    unknown_topic_errors(&log, &format!("{prefix}.unknown-topic")).await?;
    next_batch_waits(&log, &format!("{prefix}.next-batch-waits")).await?;
    reader_reads_from_offset(&log, &format!("{prefix}.reader-from-offset")).await?;
    seek_rereads_and_skips(&log, &format!("{prefix}.seek")).await?;
    position_follows_reads_and_seeks(&log, &format!("{prefix}.position")).await?;
    next_batch_cancel_safe(&log, &format!("{prefix}.cancel-safety")).await?;
    dead_letters_roundtrip(&log, &format!("{prefix}/dead-letters-roundtrip")).await?;
    dead_letters_paging_and_removal(&log, &format!("{prefix}/dead-letters-paging")).await?;
    dead_letters_outlive_topics(&log, &format!("{prefix}.dead-letters-outlive-topics")).await?;
    state_roundtrip(&log, &format!("{prefix}/state")).await?;
    Ok(())
}
