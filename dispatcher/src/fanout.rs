//! One read, many triggers: per broker topic, a single reader decodes each event once, asks the
//! match index which triggers are candidates, runs only their filters, and pushes the event
//! into each matching trigger's bounded queue. A trigger that does not match an event never
//! hears of it: it learns that the event is behind it from the published position.
//!
//! A trigger whose queue is full is detached at that offset and reads the log itself from
//! there (the backlog stays on disk, not in memory); once it has caught up it attaches again.
//!
//! Ordering contract with the workers: for every batch, pushes (and detachments, which drop
//! the trigger's queue sender) happen before the batch's end is published in `position`. A
//! worker that reads `position` and then finds its queue empty but open has therefore received
//! every matching event below that position.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use switchyard_event::Event;
use switchyard_log::{EventLog, LogError, LogEvent, Position};
use tokio::sync::{mpsc, oneshot, watch};

use crate::filter::{EventView, Filter};
use crate::index::MatchIndex;

/// Events a trigger's queue holds before the trigger is detached.
pub(crate) const QUEUE_CAPACITY: usize = 1024;
/// Events read per batch.
const BATCH: usize = 256;

/// A matching event, as pushed into a trigger's queue.
pub(crate) struct Pushed {
    pub(crate) position: Position,
    pub(crate) timestamp_ms: i64,
    pub(crate) event: Arc<Event>,
}

/// What a worker holds while attached.
pub(crate) struct Attachment {
    /// Matching events from `at` on.
    pub(crate) queue: mpsc::Receiver<Pushed>,
    /// The fanout's position when the attachment began: the worker reads the log itself below
    /// it (from where it was) before taking from the queue.
    pub(crate) at: u64,
    /// Set to the first offset not pushed when the fanout detaches the trigger (then the
    /// queue's sender is dropped).
    pub(crate) detached_at: Arc<AtomicU64>,
}

enum Command {
    Attach { trigger: String, filter: Arc<Filter>, from: u64, reply: oneshot::Sender<Attachment> },
    Detach { trigger: String },
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
}

/// A handle on one topic's fanout task.
#[derive(Clone)]
pub(crate) struct Fanout {
    commands: mpsc::UnboundedSender<Command>,
    /// Every event below this offset has been pushed to (or skipped for) every attached trigger.
    pub(crate) position: watch::Receiver<u64>,
}

impl Fanout {
    /// Starts the fanout of `topic` at `from`.
    pub(crate) fn start(log: Arc<dyn EventLog>, topic: String, from: u64) -> Fanout {
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (position_tx, position) = watch::channel(from);
        tokio::spawn(run(log, topic, from, commands_rx, position_tx));
        Fanout { commands, position }
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
}

struct Attached {
    filter: Arc<Filter>,
    /// Events below this offset are not this trigger's business (it handled them itself).
    from: u64,
    queue: mpsc::Sender<Pushed>,
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
        self.index.candidates(&log_event.event, candidates);
        let view = EventView::new(&log_event.event);
        let offset = log_event.position.offset;
        let mut detached = false;
        for name in candidates.iter() {
            let Some(attached) = self.triggers.get(name) else { continue };
            if offset < attached.from || !attached.filter.evaluate(&view, &mut None) {
                continue;
            }
            let pushed = Pushed {
                position: log_event.position,
                timestamp_ms: log_event.timestamp_ms,
                event: log_event.event.clone(),
            };
            if attached.queue.try_send(pushed).is_err() {
                // Full (or the worker is gone): it reads from here itself.
                attached.detached_at.store(offset, Ordering::Release);
                self.triggers.remove(name);
                detached = true;
            }
        }
        detached
    }
}

async fn run(
    log: Arc<dyn EventLog>,
    topic: String,
    from: u64,
    mut commands: mpsc::UnboundedReceiver<Command>,
    position: watch::Sender<u64>,
) {
    let mut reader = match log.reader(&topic, 0, from).await {
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
                    let (queue, queue_rx) = mpsc::channel(QUEUE_CAPACITY);
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
