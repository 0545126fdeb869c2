//! One read, many triggers: per broker topic, a single reader decodes each event once, asks the
//! match index which triggers are candidates, runs only their filters, and pushes the event
//! into each matching trigger's bounded queue. A trigger that does not match an event never
//! hears of it: it learns that the event is behind it from the published position.
//!
//! A trigger whose queue is full is detached at that offset and reads the log itself from
//! there (the backlog stays on disk, not in memory); once it has caught up it attaches again.
//!
//! A record that could not be decoded is no event to match: it is pushed to every attached
//! trigger, whatever its filter, and each moves it to its dead-letter store.
//!
//! The task is supervised: after a panic its triggers are detached (their queues close, so
//! they read alone from where they were, as after falling behind), the fanout reports a
//! [`TriggerFault`] for its topic's triggers, and it restarts after a doubling wait from the
//! position it last published (see `supervise.rs`).
//!
//! Invariant: a trigger never misses an event by switching between the fanout and its own
//! reader. Ordering contract with the workers: for every batch, pushes (and detachments, which drop
//! the trigger's queue sender) happen before the batch's end is published in `position`. A
//! worker that reads `position` and then finds its queue empty but open has therefore received
//! every matching event below that position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_log::{EventLog, LogError, LogEvent};
use tokio::sync::{mpsc, oneshot, watch};

use crate::filter::{EventView, Filter};
use crate::index::MatchIndex;
use crate::queue;
use crate::supervise::{FaultSlot, Restarts, TriggerFault};

/// Events a trigger's queue holds before the trigger is detached.
pub(crate) const QUEUE_CAPACITY: usize = 1024;
/// Events read per batch.
const BATCH: usize = 256;

/// What a worker holds while attached.
pub(crate) struct Attachment {
    /// Matching events (and undecodable records) from `at` on.
    pub(crate) queue: queue::Receiver<LogEvent>,
    /// The fanout's position when the attachment began: the worker reads the log itself below
    /// it (from where it was) before taking from the queue.
    pub(crate) at: u64,
    /// Set to the first offset not pushed when the fanout detaches the trigger (then the
    /// queue's sender is dropped).
    pub(crate) detached_at: Arc<AtomicU64>,
}

enum Command {
    Attach {
        trigger: String,
        filter: Arc<Filter>,
        from: u64,
        reply: oneshot::Sender<Attachment>,
    },
    Detach {
        trigger: String,
    },
    /// The triggers attached now (for tests).
    #[cfg(test)]
    Attached {
        reply: oneshot::Sender<Vec<String>>,
    },
}

/// The running fanouts, one per topic, started on first use.
#[derive(Default)]
pub(crate) struct Fanouts {
    running: std::sync::Mutex<HashMap<String, Fanout>>,
}

impl Fanouts {
    /// The fanout of `topic`, started at `from` if none runs.
    pub(crate) fn get(&self, log: &Arc<dyn EventLog>, topic: &str, from: u64) -> Fanout {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.get(topic) {
            Some(fanout) if fanout.is_alive() => fanout.clone(),
            _ => {
                let fanout = Fanout::start(log.clone(), topic.to_owned(), from);
                running.insert(topic.to_owned(), fanout.clone());
                fanout
            }
        }
    }

    /// Why the fanout of `topic` does not work as it should, if it does not.
    pub(crate) fn fault(&self, topic: &str) -> Option<TriggerFault> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(topic).and_then(|fanout| fanout.fault.get())
    }

    /// The fanout of `topic`, if one was started.
    #[cfg(test)]
    pub(crate) fn running(&self, topic: &str) -> Option<Fanout> {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).get(topic).cloned()
    }
}

/// A handle on one topic's fanout task.
#[derive(Clone)]
pub(crate) struct Fanout {
    commands: mpsc::UnboundedSender<Command>,
    /// Every event below this offset has been pushed to (or skipped for) every attached trigger.
    pub(crate) position: watch::Receiver<u64>,
    /// Set while the task restarts after a panic.
    fault: FaultSlot,
}

impl Fanout {
    /// Starts the fanout of `topic` at `from`.
    pub(crate) fn start(log: Arc<dyn EventLog>, topic: String, from: u64) -> Fanout {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (position_tx, position) = watch::channel(from);
        let fault = FaultSlot::default();
        tokio::spawn(supervise(log, topic, commands_rx, position_tx, fault.clone()));
        Fanout { commands, position, fault }
    }

    /// Whether the task still runs (it ends when its topic is deleted).
    pub(crate) fn is_alive(&self) -> bool {
        !self.commands.is_closed()
    }

    /// Attaches a trigger that has handled everything below `from`. `None` when the fanout
    /// has stopped.
    pub(crate) async fn attach(&self, trigger: &str, filter: Arc<Filter>, from: u64) -> Option<Attachment> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Attach { trigger: trigger.to_owned(), filter, from, reply }).ok()?;
        answer.await.ok()
    }

    /// Detaches a trigger (it is stopping).
    pub(crate) fn detach(&self, trigger: &str) {
        let _ = self.commands.send(Command::Detach { trigger: trigger.to_owned() });
    }

    /// The triggers attached now, sorted.
    #[cfg(test)]
    pub(crate) async fn attached(&self) -> Vec<String> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Attached { reply }).expect("the fanout runs");
        let mut attached = answer.await.expect("the fanout answers");
        attached.sort();
        attached
    }
}

struct Attached {
    filter: Arc<Filter>,
    /// Events below this offset are not this trigger's business (it handled them itself).
    from: u64,
    queue: queue::Sender<LogEvent>,
    detached_at: Arc<AtomicU64>,
}

struct Fan {
    triggers: HashMap<String, Attached>,
    index: MatchIndex<String>,
}

impl Fan {
    fn reindex(&mut self) {
        let mut index = MatchIndex::new();
        for (name, attached) in &self.triggers {
            index.insert(name.clone(), &attached.filter);
        }
        self.index = index;
    }

    fn push(&mut self, log_event: &LogEvent, candidates: &mut Vec<String>) -> bool {
        candidates.clear();
        // A record that is not an event matches nothing, yet every trigger must move it aside.
        let undecodable = log_event.undecodable.is_some();
        if undecodable {
            candidates.extend(self.triggers.keys().cloned());
        } else {
            self.index.candidates(&log_event.event, candidates);
        }
        let view = EventView::new(&log_event.event);
        let offset = log_event.position.offset;
        let mut detached = false;
        for name in candidates.iter() {
            let Some(attached) = self.triggers.get(name) else { continue };
            if offset < attached.from || !(undecodable || attached.filter.evaluate(&view, &mut None)) {
                continue;
            }
            if attached.queue.try_send(log_event.clone()).is_err() {
                // Full (or the worker is gone): it reads from here itself.
                attached.detached_at.store(offset, Ordering::Release);
                self.triggers.remove(name);
                detached = true;
            }
        }
        detached
    }
}

/// Runs the fanout, restarting it after a panic. While it waits to restart, triggers asking
/// to attach are turned away (they read alone, and ask again once caught up).
async fn supervise(
    log: Arc<dyn EventLog>,
    topic: String,
    mut commands: mpsc::UnboundedReceiver<Command>,
    position: watch::Sender<u64>,
    fault: FaultSlot,
) {
    let mut restarts = Restarts::new("fanout", "FanoutPanicked", fault);
    loop {
        // Everything below the published position went to the triggers then attached; those
        // attaching anew say where they are themselves.
        let from = *position.borrow();
        let Err(message) = restarts.watch(run(&log, &topic, from, &mut commands, &position)).await else { return };
        let restart = tokio::time::sleep(restarts.panicked(&topic, &message));
        tokio::pin!(restart);
        loop {
            tokio::select! {
                () = &mut restart => break,
                command = commands.recv() => if command.is_none() { return },
            }
        }
    }
}

async fn run(
    log: &Arc<dyn EventLog>,
    topic: &str,
    from: u64,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    position: &watch::Sender<u64>,
) {
    let mut reader = match log.reader(topic, 0, from).await {
        Ok(reader) => reader,
        Err(error) => {
            tracing::warn!(%topic, %error, "fanout cannot read its topic");
            return;
        }
    };
    let mut fan = Fan { triggers: HashMap::new(), index: MatchIndex::new() };
    let mut next = from;
    let mut candidates = Vec::new();
    loop {
        tokio::select! {
            biased;
            command = commands.recv() => match command {
                None => return,
                Some(Command::Attach { trigger, filter, from, reply }) => {
                    let (queue, queue_rx) = queue::bounded(QUEUE_CAPACITY);
                    let detached_at = Arc::new(AtomicU64::new(u64::MAX));
                    let attachment = Attachment { queue: queue_rx, at: next, detached_at: detached_at.clone() };
                    if reply.send(attachment).is_ok() {
                        let attached = Attached { filter: filter.clone(), from: from.max(next), queue, detached_at };
                        // A trigger attaching anew replaces its old attachment; otherwise the
                        // index grows in place (attaching 10,000 triggers stays linear).
                        if fan.triggers.insert(trigger.clone(), attached).is_some() {
                            fan.reindex();
                        } else {
                            fan.index.insert(trigger, &filter);
                        }
                    }
                }
                Some(Command::Detach { trigger }) => {
                    if fan.triggers.remove(&trigger).is_some() {
                        fan.reindex();
                    }
                }
                #[cfg(test)]
                Some(Command::Attached { reply }) => {
                    let _ = reply.send(fan.triggers.keys().cloned().collect());
                }
            },
            batch = reader.next_batch(BATCH) => match batch {
                Ok(batch) => {
                    let mut detached = false;
                    for log_event in &batch {
                        detached |= fan.push(log_event, &mut candidates);
                        next = log_event.position.offset + 1;
                    }
                    if detached {
                        fan.reindex();
                    }
                    position.send_replace(next);
                }
                Err(LogError::UnknownTopic(_) | LogError::Closed) => return,
                Err(error) => {
                    tracing::warn!(%topic, %error, "fanout read failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use switchyard_log::testkit::memory::MemoryLog;
    use switchyard_log::EventLog;

    use super::{Attachment, Fanout, QUEUE_CAPACITY};
    use crate::filter::Filter;
    use crate::queue::TryRecvError;
    use crate::testing::{of_type, typed, TOPIC};

    async fn log() -> Arc<MemoryLog> {
        let log = MemoryLog::new();
        log.create_topic(TOPIC).await.unwrap();
        log
    }

    fn start(log: &Arc<MemoryLog>, from: u64) -> Fanout {
        Fanout::start(log.clone() as Arc<dyn EventLog>, TOPIC.to_owned(), from)
    }

    async fn wait_position(fanout: &Fanout, at_least: u64) {
        fanout.position.clone().wait_for(|p| *p >= at_least).await.unwrap();
    }

    /// Everything queued now, as (offset, id); and whether the queue is closed.
    fn drain(attachment: &mut Attachment) -> (Vec<(u64, String)>, bool) {
        let mut taken = Vec::new();
        loop {
            match attachment.queue.try_recv() {
                Ok(pushed) => taken.push((pushed.position.offset, pushed.event.id().to_owned())),
                Err(TryRecvError::Empty) => return (taken, false),
                Err(TryRecvError::Disconnected) => return (taken, true),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn each_attached_trigger_receives_exactly_its_matching_events() {
        let log = log().await;
        let fanout = start(&log, 0);
        let mut a = fanout.attach("ns/a", Arc::new(of_type("a")), 0).await.unwrap();
        let mut b = fanout.attach("ns/b", Arc::new(of_type("b")), 0).await.unwrap();
        let mut all = fanout.attach("ns/all", Arc::new(Filter::All), 0).await.unwrap();
        let mut none = fanout.attach("ns/none", Arc::new(of_type("z")), 0).await.unwrap();
        let types = ["a", "b", "c", "a", "a", "b", "c", "c", "a", "b"];
        let events: Vec<_> = types.iter().enumerate().map(|(i, ty)| typed(&format!("e{i}"), ty)).collect();
        log.append(TOPIC, &events).await.unwrap();
        wait_position(&fanout, 10).await;
        let expected = |ty: &str| -> Vec<(u64, String)> {
            let matching = types.iter().enumerate().filter(|(_, t)| ty == "*" || **t == ty);
            matching.map(|(i, _)| (i as u64, format!("e{i}"))).collect()
        };
        assert_eq!(drain(&mut a), (expected("a"), false));
        assert_eq!(drain(&mut b), (expected("b"), false));
        assert_eq!(drain(&mut all), (expected("*"), false));
        assert_eq!(drain(&mut none), (vec![], false), "a trigger learns of non-matching events by the position only");
        assert_eq!(fanout.attached().await, ["ns/a", "ns/all", "ns/b", "ns/none"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_trigger_gets_nothing_below_the_offset_it_attached_from() {
        let log = log().await;
        let fanout = start(&log, 0);
        // It handled everything below 5 itself.
        let mut late = fanout.attach("ns/late", Arc::new(Filter::All), 5).await.unwrap();
        assert_eq!(late.at, 0, "the fanout's position when it attached");
        let events: Vec<_> = (0..8).map(|i| typed(&format!("e{i}"), "a")).collect();
        log.append(TOPIC, &events).await.unwrap();
        wait_position(&fanout, 8).await;
        let offsets: Vec<u64> = drain(&mut late).0.into_iter().map(|(offset, _)| offset).collect();
        assert_eq!(offsets, [5, 6, 7]);
        // Attaching after events were read: `at` says where the queue starts.
        let later = fanout.attach("ns/later", Arc::new(Filter::All), 0).await.unwrap();
        assert_eq!(later.at, 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_is_detached_at_the_first_matching_offset_it_could_not_take() {
        let log = log().await;
        let fanout = start(&log, 0);
        let mut slow = fanout.attach("ns/slow", Arc::new(of_type("a")), 0).await.unwrap();
        let fast = fanout.attach("ns/fast", Arc::new(Filter::All), 0).await.unwrap();
        // The fast trigger keeps up.
        let drained = tokio::spawn(async move {
            let mut fast = fast;
            let mut offsets = Vec::new();
            while let Some(pushed) = fast.queue.recv().await {
                offsets.push(pushed.position.offset);
                if offsets.len() == 2 * (QUEUE_CAPACITY + 3) {
                    break;
                }
            }
            offsets
        });
        // Matching ("a") at even offsets, others between: the slow one's 1025th match is 2048.
        let events: Vec<_> = (0..2 * (QUEUE_CAPACITY + 3))
            .map(|i| typed(&format!("e{i}"), if i % 2 == 0 { "a" } else { "b" }))
            .collect();
        for chunk in events.chunks(100) {
            log.append(TOPIC, chunk).await.unwrap();
            tokio::task::yield_now().await;
        }
        let fast = drained.await.unwrap();
        assert_eq!(fast, (0..events.len() as u64).collect::<Vec<_>>(), "the fast trigger is not held back");
        let (taken, closed) = drain(&mut slow);
        assert!(closed, "detached: its queue is closed");
        assert_eq!(slow.detached_at.load(Ordering::Acquire), 2 * QUEUE_CAPACITY as u64);
        let offsets: Vec<u64> = taken.iter().map(|(offset, _)| *offset).collect();
        assert_eq!(offsets, (0..QUEUE_CAPACITY as u64).map(|i| 2 * i).collect::<Vec<_>>(), "no gap before it");
        assert_eq!(fanout.attached().await, ["ns/fast"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_detached_trigger_gets_nothing_more_and_no_detached_offset() {
        let log = log().await;
        let fanout = start(&log, 0);
        let mut gone = fanout.attach("ns/gone", Arc::new(Filter::All), 0).await.unwrap();
        let mut stays = fanout.attach("ns/stays", Arc::new(Filter::All), 0).await.unwrap();
        log.append(TOPIC, &[typed("before", "a")]).await.unwrap();
        wait_position(&fanout, 1).await;
        fanout.detach("ns/gone");
        log.append(TOPIC, &[typed("after", "a")]).await.unwrap();
        wait_position(&fanout, 2).await;
        assert_eq!(drain(&mut gone), (vec![(0, "before".to_owned())], true));
        assert_eq!(gone.detached_at.load(Ordering::Acquire), u64::MAX, "stopping, not fallen behind");
        assert_eq!(drain(&mut stays).0.len(), 2);
        assert_eq!(fanout.attached().await, ["ns/stays"]);
    }

    #[tokio::test(start_paused = true)]
    async fn attaching_again_replaces_the_old_attachment() {
        let log = log().await;
        let fanout = start(&log, 0);
        let mut old = fanout.attach("ns/t", Arc::new(of_type("a")), 0).await.unwrap();
        let mut new = fanout.attach("ns/t", Arc::new(of_type("b")), 0).await.unwrap();
        log.append(TOPIC, &[typed("a", "a"), typed("b", "b")]).await.unwrap();
        wait_position(&fanout, 2).await;
        assert_eq!(drain(&mut old), (vec![], true));
        assert_eq!(drain(&mut new), (vec![(1, "b".to_owned())], false), "the new filter only");
        assert_eq!(fanout.attached().await, ["ns/t"]);
    }

    /// The ordering contract, on two threads: whenever the published position is `p`, every
    /// matching event below `p` is already in the queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_matching_event_below_the_published_position_is_already_queued() {
        let log = log().await;
        let fanout = start(&log, 0);
        // One event in ten matches, so the queue never fills.
        let mut attachment = fanout.attach("ns/t", Arc::new(of_type("a")), 0).await.unwrap();
        const EVENTS: u64 = 5000;
        let appender = {
            let log = log.clone();
            tokio::spawn(async move {
                for chunk in 0..EVENTS / 100 {
                    let events: Vec<_> = (chunk * 100..(chunk + 1) * 100)
                        .map(|i| typed(&format!("e{i}"), if i % 10 == 0 { "a" } else { "b" }))
                        .collect();
                    log.append(TOPIC, &events).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        };
        let mut position = fanout.position.clone();
        let mut received = 0;
        loop {
            let published = *position.borrow_and_update();
            let (taken, closed) = drain(&mut attachment);
            assert!(!closed);
            received += taken.len() as u64;
            // At least: the fanout may have pushed its next batch since.
            assert!(received >= published.div_ceil(10), "only {received} queued at position {published}");
            if published == EVENTS {
                break;
            }
            position.changed().await.unwrap();
        }
        assert_eq!(received, EVENTS / 10);
        appender.await.unwrap();
    }
}
