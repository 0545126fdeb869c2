//! What the dispatcher's unit tests share: a real HTTP subscriber on 127.0.0.1 that records
//! what it receives and answers what the test scripts, an [`Admit`] that records replies (or
//! refuses them, or panics), and a harness around a [`Dispatcher`] over the in-memory log,
//! seen through [`ChaosLog`] (which reads chosen events back as undecodable records, or
//! panics in a read, on demand); and a recorder of the counters the dispatcher increments.
//!
//! Everything runs inside the test's own (current-thread, paused-time) runtime: the server's
//! delays are `tokio::time::sleep`s, which paused time fast-forwards, and loopback I/O wakes
//! its peer at once, so a test spanning minutes of backoff runs in milliseconds.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::response::IntoResponse;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use switchyard_event::http::HeaderEncoding;
use switchyard_event::{AttrValue, Event};
use switchyard_log::testkit::memory::MemoryLog;
use switchyard_log::testkit::sample_event;
use switchyard_log::{
    Admit, Admitted, DeadLetter, DeadLetterStore, EventLog, LogError, LogEvent, Origin, Refusal, StateStore,
    Subscription,
};
use tokio::time::Instant;
use url::Url;

use crate::{DeliveryClient, DeliveryPolicy, Dispatcher, Filter, TriggerPlan, TriggerRef};

/// The namespace, trigger and broker every test uses.
pub(crate) const NAMESPACE: &str = "ns";
pub(crate) const TRIGGER: &str = "t";
pub(crate) const BROKER: &str = "b";
pub(crate) const TOPIC: &str = "ns.b";
/// The trigger's scope in the dead-letter store.
pub(crate) const SCOPE: &str = "ns/t";

/// The reply size limit of the tests' delivery clients.
pub(crate) const MAX_REPLY_BYTES: usize = 64 * 1024;

/// A request as the subscriber saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: http::Method,
    pub(crate) path: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The event it carried, if it decodes as one.
    pub(crate) event: Option<Event>,
    /// 1 for the first request with this event id on this path, 2 for the next…
    pub(crate) attempt: usize,
}

impl Request {
    /// The carried event's id ("" when the request held no event).
    pub(crate) fn id(&self) -> &str {
        self.event.as_ref().map_or("", Event::id)
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }
}

/// A request with when it arrived and, once answered, when and how.
#[derive(Debug, Clone)]
pub(crate) struct Received {
    pub(crate) request: Request,
    pub(crate) arrived: Instant,
    pub(crate) answered: Option<(Instant, StatusCode)>,
}

impl std::ops::Deref for Received {
    type Target = Request;
    fn deref(&self) -> &Request {
        &self.request
    }
}

/// What the subscriber answers to one request.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    pub(crate) body: Bytes,
    /// How long it takes to answer (paused time).
    pub(crate) delay: Duration,
}

impl Reply {
    pub(crate) fn status(status: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).expect("a status"),
            headers: Vec::new(),
            body: Bytes::new(),
            delay: Duration::ZERO,
        }
    }

    pub(crate) fn ok() -> Reply {
        Reply::status(200)
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap()));
        self
    }

    pub(crate) fn body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    pub(crate) fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    /// A 200 carrying `event` as a binary-mode reply.
    pub(crate) fn event(event: &Event) -> Reply {
        let (headers, body) = switchyard_event::http::encode_binary(event, HeaderEncoding::Percent);
        let mut reply = Reply::ok().body(body);
        reply.headers = headers.iter().map(|(name, value)| (name.clone(), value.clone())).collect();
        reply
    }
}

type Script = dyn Fn(&Request) -> Reply + Send + Sync;

#[derive(Default)]
struct Record {
    received: Vec<Received>,
    attempts: HashMap<(String, String), usize>,
}

/// A real HTTP subscriber (and dead-letter sink: any path is served) on 127.0.0.1.
#[derive(Clone)]
pub(crate) struct Subscriber {
    address: std::net::SocketAddr,
    record: Arc<Mutex<Record>>,
}

impl Subscriber {
    /// Serves every path, answering each request with what `script` says.
    pub(crate) async fn start(script: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Subscriber {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1");
        let address = listener.local_addr().expect("local address");
        let subscriber = Subscriber { address, record: Arc::default() };
        let script: Arc<Script> = Arc::new(script);
        let record = subscriber.record.clone();
        let app = axum::Router::new().fallback(
            move |method: http::Method, uri: http::Uri, headers: HeaderMap, body: Bytes| {
                let (record, script) = (record.clone(), script.clone());
                async move {
                    let event = switchyard_event::http::decode_request(&headers, body.clone())
                        .ok()
                        .and_then(|mut events| events.pop());
                    let path = uri.path().to_owned();
                    let (index, reply) = {
                        let mut record = record.lock().unwrap();
                        let id = event.as_ref().map_or("", Event::id).to_owned();
                        let attempt = record.attempts.entry((path.clone(), id)).or_default();
                        *attempt += 1;
                        let request = Request { method, path, headers, body, event, attempt: *attempt };
                        let reply = script(&request);
                        record.received.push(Received { request, arrived: Instant::now(), answered: None });
                        (record.received.len() - 1, reply)
                    };
                    tokio::time::sleep(reply.delay).await;
                    // Recorded before the answer leaves: whoever learns of it finds it recorded.
                    record.lock().unwrap().received[index].answered = Some((Instant::now(), reply.status));
                    let mut response = (reply.status, reply.body).into_response();
                    // The script's headers replace the defaults (axum's content type).
                    let headers = response.headers_mut();
                    for (name, _) in &reply.headers {
                        headers.remove(name);
                    }
                    for (name, value) in reply.headers {
                        headers.append(name, value);
                    }
                    response
                }
            },
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        subscriber
    }

    /// Answers 200 to everything.
    pub(crate) async fn accepting() -> Subscriber {
        Subscriber::start(|_| Reply::ok()).await
    }

    pub(crate) fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}{path}", self.address)).unwrap()
    }

    /// Every request so far, in arrival order.
    pub(crate) fn received(&self) -> Vec<Received> {
        self.record.lock().unwrap().received.clone()
    }

    /// The ids of the events answered with a 2xx (at any path), without copying requests.
    pub(crate) fn accepted_ids(&self) -> std::collections::HashSet<String> {
        let record = self.record.lock().unwrap();
        let accepted = record.received.iter().filter(|r| r.answered.is_some_and(|(_, status)| status.is_success()));
        accepted.map(|r| r.id().to_owned()).collect()
    }

    /// The requests to `path`.
    pub(crate) fn at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// The ids of the events received at `path`, in arrival order (with repeats).
    pub(crate) fn ids(&self, path: &str) -> Vec<String> {
        self.at(path).iter().map(|r| r.id().to_owned()).collect()
    }

    /// Waits until `path` has received `count` requests.
    pub(crate) async fn wait_for(&self, path: &str, count: usize) -> Vec<Received> {
        wait_until(&format!("{count} requests at {path}"), || self.at(path).len() >= count).await;
        self.at(path)
    }
}

/// One call of [`Admissions::admit`].
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    pub(crate) namespace: String,
    pub(crate) broker: String,
    pub(crate) events: Vec<Event>,
    pub(crate) origin: Origin,
    pub(crate) refused: bool,
}

/// Stands for the engine's admission: records every reply it is given, and refuses the next
/// ones or drops them as out of hops when told to.
#[derive(Debug, Default)]
pub(crate) struct Admissions {
    calls: Mutex<Vec<Admission>>,
    refuse_next: AtomicU32,
    hops_spent: AtomicBool,
    panic_next: AtomicU32,
}

impl Admissions {
    /// Refuses the next `n` calls (as a full log would: `Unavailable`).
    pub(crate) fn refuse_next(&self, n: u32) {
        self.refuse_next.store(n, Ordering::SeqCst);
    }

    /// Panics in the next `n` calls (a bug on the path of a delivery, for the tests of what
    /// survives one).
    pub(crate) fn panic_next(&self, n: u32) {
        self.panic_next.store(n, Ordering::SeqCst);
    }

    /// Answers every call with `HopsSpent` from now on.
    pub(crate) fn hops_spent(&self) {
        self.hops_spent.store(true, Ordering::SeqCst);
    }

    pub(crate) fn calls(&self) -> Vec<Admission> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Admit for Admissions {
    async fn admit(
        &self,
        namespace: &str,
        broker: &str,
        events: Vec<Event>,
        origin: Origin,
    ) -> Result<Admitted, Refusal> {
        if take_one(&self.panic_next) {
            panic!("injected panic in admission");
        }
        let refused = self.refuse_next.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        self.calls.lock().unwrap().push(Admission {
            namespace: namespace.to_owned(),
            broker: broker.to_owned(),
            events,
            origin,
            refused,
        });
        if refused {
            Err(Refusal::Unavailable("refused by the test".to_owned()))
        } else if self.hops_spent.load(Ordering::SeqCst) {
            Ok(Admitted::HopsSpent)
        } else {
            Ok(Admitted::Stored)
        }
    }

    fn broker_exists(&self, namespace: &str, broker: &str) -> bool {
        namespace == NAMESPACE && broker == BROKER
    }

    fn refuse(&self, _origin: &Origin, refusal: Refusal) -> Refusal {
        refusal
    }
}

/// The trigger every test runs.
pub(crate) fn trigger() -> TriggerRef {
    TriggerRef {
        namespace: NAMESPACE.to_owned(),
        name: TRIGGER.to_owned(),
        broker: BROKER.to_owned(),
        topic: TOPIC.to_owned(),
        group: TRIGGER.to_owned(),
    }
}

/// A plan delivering every event to `subscriber` under the default policy changed by `tune`,
/// with an hour per attempt so that no test times out an attempt by accident.
pub(crate) fn plan(subscriber: Url, tune: impl FnOnce(&mut DeliveryPolicy)) -> TriggerPlan {
    let mut delivery = DeliveryPolicy { timeout: Duration::from_secs(3600), ..DeliveryPolicy::default() };
    tune(&mut delivery);
    TriggerPlan {
        filter: Filter::All,
        subscriber,
        audience: None,
        ca_certs: None,
        delivery,
        signing: None,
        signer: None,
    }
}

/// A sample event with this id.
pub(crate) fn event(id: &str) -> Event {
    sample_event(id, 8)
}

/// An event with this id and type.
pub(crate) fn typed(id: &str, ty: &str) -> Event {
    let string = |s: &str| AttrValue::String(s.to_owned());
    let attributes = vec![
        ("specversion".to_owned(), string("1.0")),
        ("id".to_owned(), string(id)),
        ("source".to_owned(), string("/test")),
        ("type".to_owned(), string(ty)),
    ];
    Event::new(attributes, None).unwrap()
}

/// A filter passing events of type `ty`.
pub(crate) fn of_type(ty: &str) -> Filter {
    Filter::Attributes(vec![("type".to_owned(), ty.to_owned())])
}

/// A sample event with this id and `partitionkey`.
pub(crate) fn keyed(id: &str, key: &str) -> Event {
    let mut event = event(id);
    event.set_extension("partitionkey", AttrValue::String(key.to_owned())).unwrap();
    event
}

pub(crate) fn client() -> DeliveryClient {
    DeliveryClient::new(MAX_REPLY_BYTES).expect("a delivery client")
}

/// Polls `condition` every 10 ms of (paused) time; panics after an hour of it.
pub(crate) async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while !condition() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// As [`wait_until`], for a condition that must await (the dead-letter store).
pub(crate) async fn wait_until_async<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(3600);
    while !condition().await {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Takes one from a countdown; false when it is at zero.
fn take_one(countdown: &AtomicU32) -> bool {
    countdown.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// What [`ChaosLog`] does to reads, beyond the in-memory log's own faults.
#[derive(Debug, Default)]
pub(crate) struct Chaos {
    /// Ids of events read back as undecodable records.
    undecodable: Mutex<HashSet<String>>,
    /// Group subscriptions' (the workers') next reads that panic.
    subscription_panics: AtomicU32,
    /// Shared readers' (the fanout's) next reads that panic.
    reader_panics: AtomicU32,
    /// Whether the log says it is partitioned (as Kafka does): then workers read alone.
    partitioned: AtomicBool,
}

impl Chaos {
    /// Reads the event with this id back as a record that could not be decoded.
    pub(crate) fn undecodable(&self, id: &str) {
        self.undecodable.lock().unwrap().insert(id.to_owned());
    }

    /// Panics in the next `n` reads of group subscriptions (the workers' own reads).
    pub(crate) fn panic_subscription_reads(&self, n: u32) {
        self.subscription_panics.store(n, Ordering::SeqCst);
    }

    /// Says the log is partitioned, so that workers read it alone (as on Kafka), from now on.
    pub(crate) fn partitioned(&self) {
        self.partitioned.store(true, Ordering::SeqCst);
    }

    /// Panics in the next `n` reads of shared readers (the fanout's).
    pub(crate) fn panic_reader_reads(&self, n: u32) {
        self.reader_panics.store(n, Ordering::SeqCst);
    }
}

/// The in-memory log, read through [`Chaos`].
pub(crate) struct ChaosLog {
    inner: Arc<MemoryLog>,
    chaos: Arc<Chaos>,
}

#[async_trait]
impl EventLog for ChaosLog {
    fn dead_letters(&self) -> Arc<dyn DeadLetterStore> {
        self.inner.dead_letters()
    }
    fn state(&self) -> Arc<dyn StateStore> {
        self.inner.state()
    }
    async fn create_topic(&self, topic: &str) -> Result<(), LogError> {
        self.inner.create_topic(topic).await
    }
    async fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        self.inner.delete_topic(topic).await
    }
    async fn append(&self, topic: &str, events: &[Event]) -> Result<(), LogError> {
        self.inner.append(topic, events).await
    }
    async fn create_group(&self, topic: &str, group: &str) -> Result<(), LogError> {
        self.inner.create_group(topic, group).await
    }
    async fn delete_group(&self, topic: &str, group: &str) -> Result<(), LogError> {
        self.inner.delete_group(topic, group).await
    }
    async fn subscribe(&self, topic: &str, group: &str) -> Result<Box<dyn Subscription>, LogError> {
        let inner = self.inner.subscribe(topic, group).await?;
        Ok(Box::new(ChaosSubscription { inner, chaos: self.chaos.clone(), topic: topic.to_owned(), shared: false }))
    }
    async fn reader(&self, topic: &str, partition: u32, offset: u64) -> Result<Box<dyn Subscription>, LogError> {
        let inner = self.inner.reader(topic, partition, offset).await?;
        Ok(Box::new(ChaosSubscription { inner, chaos: self.chaos.clone(), topic: topic.to_owned(), shared: true }))
    }
    async fn flush(&self) -> Result<(), LogError> {
        self.inner.flush().await
    }
    fn single_partition(&self) -> bool {
        !self.chaos.partitioned.load(Ordering::SeqCst)
    }
    async fn end_offsets(&self, topic: &str) -> Result<Vec<u64>, LogError> {
        self.inner.end_offsets(topic).await
    }
}

struct ChaosSubscription {
    inner: Box<dyn Subscription>,
    chaos: Arc<Chaos>,
    topic: String,
    /// A shared reader, not a group's subscription.
    shared: bool,
}

#[async_trait]
impl Subscription for ChaosSubscription {
    async fn next_batch(&mut self, max: usize) -> Result<Vec<LogEvent>, LogError> {
        let panics = if self.shared { &self.chaos.reader_panics } else { &self.chaos.subscription_panics };
        if take_one(panics) {
            panic!("injected panic in a read of {}", if self.shared { "a shared reader" } else { "a subscription" });
        }
        let batch = self.inner.next_batch(max).await?;
        let undecodable = self.chaos.undecodable.lock().unwrap().clone();
        let read = |log_event: LogEvent| {
            if !undecodable.contains(log_event.event.id()) {
                return log_event;
            }
            let LogEvent { position, timestamp_ms, .. } = log_event;
            let record = Bytes::from_static(b"\x01\x00\xff not an event");
            LogEvent::undecodable(&self.topic, position, timestamp_ms, record, "truncated record".to_owned())
        };
        Ok(batch.into_iter().map(read).collect())
    }
    fn commit(&mut self, partition: u32, next_offset: u64) -> Result<(), LogError> {
        self.inner.commit(partition, next_offset)
    }
    fn seek(&mut self, partition: u32, offset: u64) -> Result<(), LogError> {
        self.inner.seek(partition, offset)
    }
    fn position(&self, partition: u32) -> Option<u64> {
        self.inner.position(partition)
    }
}

/// Counts what the code under test increments, on the test's thread (the tests' runtimes run
/// every task there): `get("name{label=value}")`, labels in the order given.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    counts: Mutex<HashMap<String, Arc<Count>>>,
}

#[derive(Debug, Default)]
struct Count(AtomicU64);

impl metrics::CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }
    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

impl Counters {
    /// Records into a new set of counters (leaked: a test's worth) until the guard is dropped.
    pub(crate) fn install() -> (&'static Counters, metrics::LocalRecorderGuard<'static>) {
        let counters: &'static Counters = Box::leak(Box::default());
        (counters, metrics::set_default_local_recorder(counters))
    }

    /// The counter's value (0 when it was never incremented).
    pub(crate) fn get(&self, key: &str) -> u64 {
        self.counts.lock().unwrap().get(key).map_or(0, |count| count.0.load(Ordering::SeqCst))
    }
}

impl metrics::Recorder for Counters {
    fn describe_counter(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_gauge(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn describe_histogram(&self, _: metrics::KeyName, _: Option<metrics::Unit>, _: metrics::SharedString) {}
    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        let name =
            if labels.is_empty() { key.name().to_owned() } else { format!("{}{{{}}}", key.name(), labels.join(",")) };
        let count = self.counts.lock().unwrap().entry(name).or_default().clone();
        metrics::Counter::from_arc(count)
    }
    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }
    fn register_histogram(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// A dispatcher over an in-memory log holding the test topic (read through [`ChaosLog`]), with
/// the trigger's group created before any event, so that it reads from offset 0.
pub(crate) struct Harness {
    pub(crate) log: Arc<MemoryLog>,
    pub(crate) chaos: Arc<Chaos>,
    pub(crate) admissions: Arc<Admissions>,
    pub(crate) dispatcher: Dispatcher,
}

impl Harness {
    pub(crate) async fn new() -> Harness {
        let log = MemoryLog::new();
        log.create_topic(TOPIC).await.unwrap();
        log.create_group(TOPIC, TRIGGER).await.unwrap();
        let admissions = Arc::new(Admissions::default());
        let chaos = Arc::new(Chaos::default());
        let chaotic = Arc::new(ChaosLog { inner: log.clone(), chaos: chaos.clone() });
        let dispatcher = Dispatcher::new(chaotic, client(), admissions.clone() as Arc<dyn Admit>);
        Harness { log, chaos, admissions, dispatcher }
    }

    /// A second dispatcher on the same log, as a restarted node would be.
    pub(crate) fn dispatcher(log: &Arc<MemoryLog>, admissions: &Arc<Admissions>) -> Dispatcher {
        Dispatcher::new(log.clone() as Arc<dyn EventLog>, client(), admissions.clone() as Arc<dyn Admit>)
    }

    pub(crate) async fn start(&self, plan: TriggerPlan) {
        self.dispatcher.start(trigger(), plan).await;
    }

    pub(crate) async fn append(&self, events: &[Event]) {
        self.log.append(TOPIC, events).await.unwrap();
    }

    /// The trigger's committed position.
    pub(crate) fn committed(&self) -> u64 {
        self.log.committed(TOPIC, TRIGGER).expect("the trigger's group")
    }

    pub(crate) async fn wait_committed(&self, position: u64) {
        wait_until(&format!("commit of {position}"), || self.committed() == position).await;
    }

    pub(crate) async fn dead_letters(&self) -> Vec<DeadLetter> {
        self.log.dead_letters().list(SCOPE, None, usize::MAX).await.unwrap()
    }
}
