//! Slots shared out among the nodes of a Switchyard cluster by Kafka's group protocol: each
//! slot is a partition of the topic `{prefix}leases`, and each node is a member of the consumer
//! group of the same name that holds partitions and never reads them.

use std::collections::BTreeSet;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::TopicPartitionList;
use switchyard_log::LogError;
use tokio::sync::{oneshot, watch};

use crate::client::{self, Context};
use crate::config::KafkaConfig;

/// How long one poll waits: the latency of leaving after `Leases` is dropped.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// A release that takes longer than this is logged: it delays the rebalance of the whole group.
const SLOW_RELEASE: Duration = Duration::from_secs(10);

/// The slots this node holds, among all the nodes that joined the same lease group: each slot
/// is held by at most one live node, and every slot by some node as long as one is live.
///
/// It is Kafka's consumer group protocol with the cooperative-sticky assignor, so:
///
/// - **A slot changes owner only after its old owner released it**: when a rebalance takes
///   slots from this node, [`held`](Leases::held) drops them first, then `release` is called
///   with them on the lease thread, and only once it returns does the node give them up; the
///   group assigns them elsewhere after that. Stop whatever runs on those slots inside
///   `release`. Slots that stay with a node are not interrupted by a rebalance.
/// - **A node that dies** (kill -9, a crash) loses its slots when its session expires: 6 s
///   after its last heartbeat. Until then they are held by nobody live.
/// - **A node cut off from Kafka** notices that its session expired (librdkafka tracks it) and
///   releases its slots — at about the moment the group gives them to another node, not
///   strictly before: exactly one holder is a guarantee between nodes that reach Kafka, not
///   across a network partition. Work that must never run twice needs a fencing check of its
///   own.
/// - **Assignments** just add to [`held`](Leases::held).
///
/// Heartbeats continue from librdkafka's own thread while `release` runs, so a release may
/// block for a while (up to ~10 s is fine; the node's part in the next rebalance waits for it).
pub struct Leases {
    slots: u32,
    held: watch::Receiver<BTreeSet<u32>>,
    stop: Arc<AtomicBool>,
    /// Resolves once the lease thread has released everything and left the group.
    finished: Option<oneshot::Receiver<()>>,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases").field("slots", &self.slots).field("held", &*self.held.borrow()).finish()
    }
}

/// What the lease thread, its consumer's context and `Leases` share.
struct Shared {
    topic: String,
    held: watch::Sender<BTreeSet<u32>>,
    release: Mutex<Release>,
}

/// The caller's `release` callback.
type Release = Box<dyn Fn(&BTreeSet<u32>) + Send>;

impl Shared {
    /// Drops `slots` from the held set, then calls `release` with them; returns once it has.
    fn give_up(&self, slots: &BTreeSet<u32>) {
        if slots.is_empty() {
            return;
        }
        self.held.send_if_modified(|held| {
            let before = held.len();
            held.retain(|slot| !slots.contains(slot));
            held.len() != before
        });
        let started = Instant::now();
        let release = self.release.lock().unwrap_or_else(PoisonError::into_inner);
        // The slots go either way: a release that panics must not keep them from their next
        // owner, nor stop the lease thread.
        if std::panic::catch_unwind(AssertUnwindSafe(|| release(slots))).is_err() {
            tracing::error!(topic = %self.topic, ?slots, "releasing slots panicked; giving them up anyway");
        }
        let took = started.elapsed();
        if took > SLOW_RELEASE {
            tracing::warn!(topic = %self.topic, ?slots, ?took, "releasing slots was slow; the group's rebalance waited");
        }
        tracing::info!(topic = %self.topic, released = ?slots, held = ?*self.held.borrow(), "slots released");
    }
}

impl Leases {
    /// Joins the lease group `{prefix}leases` over the topic `{prefix}leases`
    /// ([`KafkaConfig::leases_topic`]), created if missing with `slots` partitions and the
    /// configured replication factor; if it exists, its partition count is the number of
    /// slots (see [`slots`](Leases::slots)).
    ///
    /// `release(&slots)` is called on the lease thread whenever slots are taken from this
    /// node, after [`held`](Leases::held) dropped them and before they are given up, and for
    /// everything still held when the node leaves. That thread is not a runtime worker: the
    /// callback may block, for example on `tokio::runtime::Handle::block_on` to await the end
    /// of what runs on the slots. A callback that panics is logged; the slots go anyway.
    ///
    /// Returns once the node has joined; the first slots arrive with the group's first
    /// rebalance, moments later (watch [`held`](Leases::held)). Fails with
    /// `LogError::Unavailable`, naming the address, when the cluster does not answer within
    /// [`KafkaConfig::connect_timeout`].
    pub async fn join<F>(config: &KafkaConfig, slots: u32, release: F) -> Result<Leases, LogError>
    where
        F: Fn(&BTreeSet<u32>) + Send + 'static,
    {
        let topic = config.leases_topic();
        let group = config.group_id("leases");
        let context = Context::new(config);
        let control = client::reach(config, &context).await?;
        let found = client::ensure_topic(config, &control, &topic, slots, &[]).await?;
        if found != slots {
            tracing::info!(%topic, slots = found, asked = slots, "the lease topic exists with its own number of slots");
        }

        let (held_tx, held) = watch::channel(BTreeSet::new());
        let shared = Arc::new(Shared { topic: topic.clone(), held: held_tx, release: Mutex::new(Box::new(release)) });
        let lease_context = LeaseContext { base: context, shared: Arc::clone(&shared) };
        let consumer: BaseConsumer<LeaseContext> = client::create(&config.lease_member(&group), lease_context)?;
        consumer
            .subscribe(&[&topic])
            .map_err(|e| client::unavailable(format!("cannot join lease group '{group}'"), &e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (finish, finished) = oneshot::channel();
        let thread_stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("kafka-leases".to_owned())
            .spawn(move || {
                run(consumer, &shared, &thread_stop);
                // The watch ends (its sender goes with `shared`) before `leave` returns.
                drop(shared);
                let _ = finish.send(());
            })
            .map_err(LogError::Io)?;
        Ok(Leases { slots: found, held, stop, finished: Some(finished) })
    }

    /// The number of slots: the partition count of the lease topic. Slots are `0..slots()`.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// The slots this node holds now. It changes on every rebalance; once the node has left
    /// (after a drop or [`leave`](Leases::leave)) it holds nothing and the sender is gone.
    pub fn held(&self) -> watch::Receiver<BTreeSet<u32>> {
        self.held.clone()
    }

    /// Leaves the group like dropping does, and returns once `release` has been called for
    /// everything held and the group has been left (so the other nodes rebalance at once).
    pub async fn leave(mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(finished) = self.finished.take() {
            let _ = finished.await;
        }
    }
}

impl Drop for Leases {
    /// Leaves the group: the lease thread calls `release` for everything held, then gives
    /// the slots up. Returns at once; use [`Leases::leave`] to wait for it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// The lease thread: polls so that the node takes part in the group, until stopped; then
/// leaves, releasing what it holds.
fn run(consumer: BaseConsumer<LeaseContext>, shared: &Shared, stop: &AtomicBool) {
    let mut last_error: Option<(String, Instant)> = None;
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(POLL_INTERVAL) {
            None => {}
            Some(Ok(_)) => tracing::debug!(topic = %shared.topic, "a record in the lease topic; ignored"),
            Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Err(error)) if client::say_again(&mut last_error, &error) => {
                tracing::warn!(topic = %shared.topic, %error, "taking part in the lease group");
            }
            Some(Err(_)) => {}
        }
    }
    // Closing the consumer revokes everything it holds (calling `release` through the
    // rebalance callback), then leaves the group.
    drop(consumer);
    // Whatever the close did not revoke (it could not reach the group, say) is released here:
    // the node holds nothing once it has left.
    let rest = shared.held.borrow().clone();
    shared.give_up(&rest);
}

/// The lease consumer's context: logs go to `tracing`, rebalances update the held slots.
struct LeaseContext {
    base: Context,
    shared: Arc<Shared>,
}

impl LeaseContext {
    fn slots(&self, partitions: &TopicPartitionList) -> BTreeSet<u32> {
        partitions
            .elements_for_topic(&self.shared.topic)
            .iter()
            .filter_map(|element| u32::try_from(element.partition()).ok())
            .collect()
    }
}

impl ClientContext for LeaseContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.base.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ConsumerContext for LeaseContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                let slots = self.slots(revoked);
                if consumer.assignment_lost() {
                    tracing::warn!(topic = %self.shared.topic, ?slots, "lease session expired; slots lost");
                }
                // The rebalance gives the slots up when this returns, after `release` did.
                self.shared.give_up(&slots);
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(error) => tracing::warn!(topic = %self.shared.topic, %error, "lease rebalance failed"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(assigned) = rebalance {
            // A slot is held, not read: no fetching.
            if let Err(error) = consumer.pause(assigned) {
                tracing::debug!(topic = %self.shared.topic, %error, "pausing lease partitions");
            }
            let slots = self.slots(assigned);
            self.shared.held.send_if_modified(|held| {
                let before = held.len();
                held.extend(&slots);
                held.len() != before
            });
            tracing::info!(topic = %self.shared.topic, assigned = ?slots, held = ?*self.shared.held.borrow(), "slots assigned");
        }
    }
}
