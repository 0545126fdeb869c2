//! Checks of how subscriptions and readers read: `reader` from an offset, `seek`, `position`,
//! and the cancel safety of `next_batch` that the dispatcher's `select!` loops rely on.
//!
//! They hold on a backend with several partitions per topic: the events of one check share a
//! `source` and no `partitionkey`, so they land in one partition, and every `reader`, `seek`
//! and `position` is of the partition the events were read back from.

use std::sync::Arc;
use std::time::Duration;

use switchyard_event::Event;

use super::{ensure, ensure_same, events, expect_nothing, fail, op, read_n, CheckFailed, CheckResult, READ_TIMEOUT};
use crate::{EventLog, LogError, LogEvent, Subscription};

/// The partition `read` landed in; fails unless they all share it (the checks rely on events of
/// one source going to one partition, as the Kafka binding's keyless partitioning does).
fn partition_of(check: &'static str, read: &[LogEvent]) -> Result<u32, CheckFailed> {
    let Some(first) = read.first() else { return Err(fail(check, "read nothing")) };
    let partition = first.position.partition;
    let spread: Vec<_> = read.iter().map(|e| e.position).filter(|p| p.partition != partition).collect();
    ensure!(check, spread.is_empty(), "events of one source landed in several partitions: {partition} and {spread:?}");
    Ok(partition)
}

/// Fails unless `sub.position(partition)` is `Some(want)`.
fn ensure_position(check: &'static str, sub: &dyn Subscription, partition: u32, want: u64, when: &str) -> CheckResult {
    let got = sub.position(partition);
    ensure!(check, got == Some(want), "position({partition}) {when}: {got:?}, expected Some({want})");
    Ok(())
}

/// Fails unless `read` sits exactly at `offsets`.
fn ensure_offsets(check: &'static str, read: &[LogEvent], offsets: &[u64], what: &str) -> CheckResult {
    let got: Vec<u64> = read.iter().map(|e| e.position.offset).collect();
    ensure!(check, got == offsets, "{what} at offsets {got:?}, expected {offsets:?}");
    Ok(())
}

fn offsets(read: &[LogEvent]) -> Vec<u64> {
    read.iter().map(|e| e.position.offset).collect()
}

/// The offset the next event appended to `partition` gets.
async fn end_of(check: &'static str, log: &Arc<dyn EventLog>, topic: &str, partition: u32) -> Result<u64, CheckFailed> {
    let ends = op(check, "end_offsets", log.end_offsets(topic).await)?;
    let end = ends.get(partition as usize).copied();
    end.ok_or_else(|| fail(check, format!("end_offsets {ends:?} lists no partition {partition}")))
}

/// `reader` of a partition from an offset returns the events from exactly there, in order and
/// at their positions, knows its position, refuses commits, and sees later appends; a reader
/// opened at the end sees only those.
pub async fn reader_reads_from_offset(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "reader_reads_from_offset";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let first = events("r", 10);
    op(CHECK, "append", log.append(topic, &first).await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let read = read_n(CHECK, sub.as_mut(), first.len(), 100).await?;
    ensure_same(CHECK, &read, &first)?;
    let partition = partition_of(CHECK, &read)?;

    let from = read[3].position.offset;
    let mut reader = op(CHECK, "reader", log.reader(topic, partition, from).await)?;
    ensure_position(CHECK, reader.as_ref(), partition, from, "of a new reader")?;
    let got = read_n(CHECK, reader.as_mut(), first.len() - 3, 3).await?;
    ensure_same(CHECK, &got, &first[3..])?;
    ensure_offsets(CHECK, &got, &offsets(&read[3..]), "the reader read events")?;
    let end = read[9].position.offset + 1;
    ensure_position(CHECK, reader.as_ref(), partition, end, "after reading to the end")?;
    ensure!(CHECK, reader.commit(partition, from + 1).is_err(), "a reader's commit was accepted");

    let at_end = end_of(CHECK, log, topic, partition).await?;
    ensure!(CHECK, at_end == end, "end offset of partition {partition} is {at_end}, expected {end}");
    let mut from_end = op(CHECK, "reader at the end", log.reader(topic, partition, end).await)?;
    expect_nothing(CHECK, from_end.as_mut()).await?;
    let later = events("r-later", 4);
    op(CHECK, "append", log.append(topic, &later).await)?;
    for (what, reader) in [("the first reader", &mut reader), ("the reader opened at the end", &mut from_end)] {
        let got = read_n(CHECK, reader.as_mut(), later.len(), 100).await?;
        ensure_same(CHECK, &got, &later)?;
        let expected: Vec<u64> = (end..end + later.len() as u64).collect();
        ensure_offsets(CHECK, &got, &expected, &format!("{what} read later events"))?;
        expect_nothing(CHECK, reader.as_mut()).await?;
    }
    drop((sub, reader, from_end));
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// After `seek` back, the next batch starts exactly at the offset sought (events are read
/// again); after `seek` forward, events in between are skipped; the last seek wins; and a
/// new subscription of the group still starts at its last commit.
pub async fn seek_rereads_and_skips(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "seek_rereads_and_skips";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let all = events("s", 10);
    op(CHECK, "append", log.append(topic, &all).await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let read = read_n(CHECK, sub.as_mut(), all.len(), 100).await?;
    ensure_same(CHECK, &read, &all)?;
    let partition = partition_of(CHECK, &read)?;
    let at = offsets(&read);
    op(CHECK, "commit", sub.commit(partition, at[4]))?;

    op(CHECK, "seek back", sub.seek(partition, at[2]))?;
    let again = read_n(CHECK, sub.as_mut(), 8, 100).await?;
    ensure_same(CHECK, &again, &all[2..])?;
    ensure_offsets(CHECK, &again, &at[2..], "after seeking back to the third event, events read")?;

    op(CHECK, "seek back", sub.seek(partition, at[1]))?;
    let two = read_n(CHECK, sub.as_mut(), 2, 2).await?;
    ensure_same(CHECK, &two, &all[1..3])?;
    op(CHECK, "seek forward", sub.seek(partition, at[6]))?;
    let rest = read_n(CHECK, sub.as_mut(), 4, 100).await?;
    ensure_same(CHECK, &rest, &all[6..])?;
    ensure_offsets(CHECK, &rest, &at[6..], "after seeking forward over 3 events, events read")?;

    op(CHECK, "seek", sub.seek(partition, at[0]))?;
    op(CHECK, "seek again", sub.seek(partition, at[8]))?;
    let last = read_n(CHECK, sub.as_mut(), 2, 100).await?;
    ensure_same(CHECK, &last, &all[8..])?;
    expect_nothing(CHECK, sub.as_mut()).await?;

    drop(sub);
    op(CHECK, "flush", log.flush().await)?;
    let mut sub = op(CHECK, "subscribe again", log.subscribe(topic, "g").await)?;
    let resumed = read_n(CHECK, sub.as_mut(), 6, 100).await?;
    ensure_same(CHECK, &resumed, &all[4..])?;
    expect_nothing(CHECK, sub.as_mut()).await?;
    drop(sub);
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// `position` of the partition a subscription reads is where its next batch starts: the
/// group's start (when known before the first read), one past the last event returned, and
/// the offset sought; a cancelled read leaves it; a partition the topic does not have has none.
pub async fn position_follows_reads_and_seeks(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "position_follows_reads_and_seeks";
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    // A probe event through a group of its own shows which partition this source's events go to.
    op(CHECK, "create_group", log.create_group(topic, "probe").await)?;
    op(CHECK, "append", log.append(topic, &events("probe", 1)).await)?;
    let mut probe = op(CHECK, "subscribe", log.subscribe(topic, "probe").await)?;
    let probed = read_n(CHECK, probe.as_mut(), 1, 1).await?;
    drop(probe);
    let partition = partition_of(CHECK, &probed)?;
    let start = end_of(CHECK, log, topic, partition).await?;

    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    // A reader may not know its position before its first read (a Kafka member has no
    // partitions until the group assigns them); if it says one, it is the group's start.
    let known = sub.position(partition);
    ensure!(
        CHECK,
        known.is_none_or(|p| p == start),
        "position({partition}) of a new group's subscription: {known:?}, expected Some({start}) or None"
    );
    let all = events("p", 6);
    op(CHECK, "append", log.append(topic, &all).await)?;
    let first = read_n(CHECK, sub.as_mut(), 2, 2).await?;
    ensure_same(CHECK, &first, &all[..2])?;
    ensure!(
        CHECK,
        first[0].position.offset == start,
        "first event at {:?}, expected offset {start}",
        first[0].position
    );
    ensure_position(CHECK, sub.as_ref(), partition, first[1].position.offset + 1, "after reading 2 events")?;
    let rest = read_n(CHECK, sub.as_mut(), 4, 100).await?;
    ensure_same(CHECK, &rest, &all[2..])?;
    let end = end_of(CHECK, log, topic, partition).await?;
    ensure!(CHECK, rest[3].position.offset + 1 == end, "last event at {:?}, end offset {end}", rest[3].position);
    ensure_position(CHECK, sub.as_ref(), partition, end, "after reading every event")?;

    op(CHECK, "seek back", sub.seek(partition, first[1].position.offset))?;
    ensure_position(CHECK, sub.as_ref(), partition, first[1].position.offset, "right after seeking back")?;
    let one = read_n(CHECK, sub.as_mut(), 1, 1).await?;
    ensure_same(CHECK, &one, &all[1..2])?;
    ensure_position(CHECK, sub.as_ref(), partition, first[1].position.offset + 1, "after reading 1 event")?;

    op(CHECK, "seek to the end", sub.seek(partition, end))?;
    ensure_position(CHECK, sub.as_ref(), partition, end, "right after seeking to the end")?;
    expect_nothing(CHECK, sub.as_mut()).await?;
    ensure_position(CHECK, sub.as_ref(), partition, end, "after a read that got nothing and was cancelled")?;
    let late = events("p-late", 1);
    op(CHECK, "append", log.append(topic, &late).await)?;
    let got = read_n(CHECK, sub.as_mut(), 1, 10).await?;
    ensure_same(CHECK, &got, &late)?;
    ensure!(CHECK, got[0].position.offset == end, "event appended at end offset {end} read at {:?}", got[0].position);
    ensure_position(CHECK, sub.as_ref(), partition, end + 1, "after reading the late event")?;

    let partitions = op(CHECK, "end_offsets", log.end_offsets(topic).await)?.len();
    let beyond = u32::try_from(partitions).unwrap_or(u32::MAX);
    let none = sub.position(beyond);
    ensure!(CHECK, none.is_none(), "position of partition {beyond}, which the topic does not have: {none:?}");
    drop(sub);
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}

/// What interrupts read number `round`: a few yields (so that a read is dropped between its
/// steps) or, every fifth round, a millisecond or two (so that reads also complete, and are
/// dropped while waiting for events).
async fn interruption(round: u32) {
    if round % 5 == 4 {
        tokio::time::sleep(Duration::from_millis(u64::from(1 + round % 2))).await;
    } else {
        for _ in 0..round % 5 {
            tokio::task::yield_now().await;
        }
    }
}

/// Reads `expected.len()` events in batches of at most 7, racing every `next_batch` against
/// a short interruption that drops it when it wins, and fails at the first event that is not
/// the next expected one (skipped or read twice). Returns the events and how many reads were
/// dropped.
async fn read_interrupted(
    check: &'static str,
    who: &str,
    sub: &mut dyn Subscription,
    expected: &[Event],
) -> Result<(Vec<LogEvent>, u32), CheckFailed> {
    const MAX: usize = 7;
    let n = expected.len();
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let mut read: Vec<LogEvent> = Vec::with_capacity(n);
    let mut cancelled = 0u32;
    let mut round = 0u32;
    while read.len() < n {
        ensure!(
            check,
            tokio::time::Instant::now() < deadline,
            "the {who} timed out after reading {} of {n} events ({cancelled} reads cancelled)",
            read.len()
        );
        round = round.wrapping_add(1);
        tokio::select! {
            batch = sub.next_batch(MAX) => {
                let batch = op(check, "next_batch", batch)?;
                ensure!(check, !batch.is_empty(), "next_batch of the {who} returned an empty batch");
                ensure!(
                    check,
                    batch.len() <= MAX,
                    "next_batch of the {who} returned {} events, more than max {MAX}",
                    batch.len()
                );
                for got in batch {
                    let at = read.len();
                    let want = expected.get(at).map(Event::id);
                    ensure!(
                        check,
                        want == Some(got.event.id()),
                        "the {who} read {} at {:?} as event {at}, expected {want:?} ({cancelled} reads cancelled so far)",
                        got.event.id(),
                        got.position
                    );
                    read.push(got);
                }
            }
            () = interruption(round) => cancelled += 1,
        }
    }
    Ok((read, cancelled))
}

/// `next_batch` is cancel-safe: while events are appended, a group's subscription and a reader
/// each start reads and drop most of them before they complete (at every step, and while
/// waiting), and still return every event exactly once, in order.
pub async fn next_batch_cancel_safe(log: &Arc<dyn EventLog>, topic: &str) -> CheckResult {
    const CHECK: &str = "next_batch_cancel_safe";
    const EVENTS: usize = 300;
    op(CHECK, "create_topic", log.create_topic(topic).await)?;
    op(CHECK, "create_group", log.create_group(topic, "g").await)?;
    // A probe read first, so that the reader is of the partition the events go to and the
    // group's subscription is up (assigned) before the appends start.
    op(CHECK, "append", log.append(topic, &events("probe", 1)).await)?;
    let mut sub = op(CHECK, "subscribe", log.subscribe(topic, "g").await)?;
    let probed = read_n(CHECK, sub.as_mut(), 1, 1).await?;
    let partition = partition_of(CHECK, &probed)?;
    let next = probed[0].position.offset + 1;
    let mut reader = op(CHECK, "reader", log.reader(topic, partition, next).await)?;

    let appended = events("x", EVENTS);
    let appender = {
        let (log, topic, appended) = (Arc::clone(log), topic.to_owned(), appended.clone());
        tokio::spawn(async move {
            // 1, 2 or 3 events at a time, paced so that readers catch up and wait in between.
            let mut at = 0;
            for size in [1, 2, 3].into_iter().cycle() {
                if at >= appended.len() {
                    break;
                }
                let until = (at + size).min(appended.len());
                log.append(&topic, &appended[at..until]).await?;
                at = until;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok::<(), LogError>(())
        })
    };
    let (by_group, by_reader) = tokio::join!(
        read_interrupted(CHECK, "group", sub.as_mut(), &appended),
        read_interrupted(CHECK, "reader", reader.as_mut(), &appended)
    );
    let appended_ok = appender.await.map_err(|e| fail(CHECK, format!("appender task: {e}")))?;
    op(CHECK, "append", appended_ok)?;
    for (what, result, sub) in [("group", by_group, &mut sub), ("reader", by_reader, &mut reader)] {
        let (read, cancelled) = result?;
        ensure!(CHECK, cancelled > 0, "the {what}'s reads all completed: no read was cancelled, nothing was checked");
        ensure_same(CHECK, &read, &appended)
            .map_err(|e| fail(CHECK, format!("the {what}, with {cancelled} reads cancelled: {}", e.message)))?;
        ensure!(
            CHECK,
            read[0].position.offset == next,
            "the {what} read first {:?}, expected offset {next}",
            read[0].position
        );
        let end = read[EVENTS - 1].position.offset + 1;
        ensure_position(CHECK, sub.as_ref(), partition, end, &format!("of the {what} after reading every event"))?;
        expect_nothing(CHECK, sub.as_mut()).await?;
    }
    drop((sub, reader));
    op(CHECK, "delete_topic", log.delete_topic(topic).await)
}
