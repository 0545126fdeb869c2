//! The runtime's supervision, under paused time: a source kind whose activity panics a given
//! number of times (the panic a bad input would cause), run by the real runtime on the
//! in-memory backend's state table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use switchyard_log::testkit::memory::MemoryLog;
use switchyard_log::{Admitted, EventLog, Origin, Refusal, SingleNode};
use switchyard_meta::ValidationError;

use super::*;
use crate::resource::parse_source;
use crate::sink::{HttpOptions, HttpSink, KafkaSinkOutlet};
use crate::RunContext;

/// Runs of each `Flaky` source so far, by name.
static RUNS: Mutex<BTreeMap<String, usize>> = Mutex::new(BTreeMap::new());

fn runs(name: &str) -> usize {
    lock(&RUNS).get(name).copied().unwrap_or(0)
}

/// A source kind whose activity panics on its first `spec.panics` runs, then runs until
/// stopped.
struct Flaky;

struct FlakyActivity {
    name: String,
    panics: usize,
    stopped_cleanly: AtomicUsize,
}

#[async_trait]
impl Activity for FlakyActivity {
    async fn run(&self, context: RunContext) {
        let run = {
            let mut runs = lock(&RUNS);
            let run = runs.entry(self.name.clone()).or_default();
            *run += 1;
            *run
        };
        if run <= self.panics {
            panic!("record {run} is poison");
        }
        context.stopped().await;
        self.stopped_cleanly.fetch_add(1, Ordering::SeqCst);
    }
}

impl SourceKind for Flaky {
    fn kind(&self) -> &'static str {
        "FlakySource"
    }

    fn plural(&self) -> &'static str {
        "flakysources"
    }

    fn api_versions(&self) -> &'static [&'static str] {
        &["test/v1"]
    }

    fn validate(&self, spec: &serde_json::Value) -> Result<serde_json::Value, ValidationError> {
        Ok(spec.clone())
    }

    fn compile(&self, source: &Declared, _: &Clients) -> Result<Behaviour, NotReady> {
        let panics = source.spec["panics"].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        let name = source.id.name.clone();
        Ok(Behaviour::Active(Arc::new(FlakyActivity { name, panics, stopped_cleanly: AtomicUsize::new(0) })))
    }

    #[cfg(feature = "openapi")]
    fn spec_schema(&self) -> crate::SpecSchema {
        unreachable!("not documented")
    }
}

static FLAKY: Flaky = Flaky;

/// Admission that takes nothing: the flaky sources send nothing.
struct NoAdmission;

#[async_trait]
impl Admit for NoAdmission {
    async fn admit(&self, _: &str, _: &str, _: Vec<Event>, _: Origin) -> Result<Admitted, Refusal> {
        Err(Refusal::Unavailable("no admission in this test".to_owned()))
    }

    fn broker_exists(&self, _: &str, _: &str) -> bool {
        true
    }

    fn refuse(&self, _: &Origin, refusal: Refusal) -> Refusal {
        refusal
    }
}

struct NoHttp;

#[async_trait]
impl HttpSink for NoHttp {
    async fn post(&self, _: &SourceRef, _: &url::Url, _: &HttpOptions, _: Vec<Event>) -> Result<(), SinkError> {
        Err(SinkError::Unavailable("no http sink in this test".to_owned()))
    }
}

#[async_trait]
impl KafkaSinkOutlet for NoHttp {
    async fn write(&self, _: &SourceRef, _: &str, _: Vec<Event>) -> Result<(), SinkError> {
        Err(SinkError::Unavailable("no kafka sink in this test".to_owned()))
    }
}

use switchyard_log::Admit;

fn start() -> Arc<Sources> {
    let outlets = Outlets { admission: Arc::new(NoAdmission), http: Arc::new(NoHttp), kafka_sinks: Arc::new(NoHttp) };
    let log = MemoryLog::new();
    Sources::start(outlets, Clients::default(), log.state(), Arc::new(SingleNode::default()))
}

fn flaky(name: &str, panics: usize) -> Source {
    let body = serde_json::json!({"spec": {"panics": panics, "sink": {"uri": "http://127.0.0.1:1/"}}});
    parse_source(&FLAKY, "default", name, body.to_string().as_bytes()).expect("a valid source")
}

fn ready(sources: &Sources, source: &Source) -> Condition {
    let mut status = sources.status(&FLAKY, source, "http://127.0.0.1:1");
    status.conditions.remove(0)
}

#[tokio::test(start_paused = true)]
async fn a_panicking_activity_restarts_with_doubling_waits_and_its_status_says_so_until_it_runs_again() {
    let sources = start();
    let source = flaky("poisoned", 3);
    sources.apply(&FLAKY, &source).await;
    // Run 1 panics at once; then runs start after 1 s, 2 s and 4 s (runs 2 and 3 panic too).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(runs("poisoned"), 1);
    let condition = ready(&sources, &source);
    assert_eq!((condition.status.as_str(), condition.reason.as_deref()), ("False", Some(TASK_PANICKED)));
    let message = condition.message.unwrap_or_default();
    assert!(message.contains("record 1 is poison") && message.contains("in 1 s"), "{message}");
    tokio::time::sleep(Duration::from_secs(1)).await; // t = 1.5 s
    assert_eq!(runs("poisoned"), 2);
    tokio::time::sleep(Duration::from_secs(2)).await; // t = 3.5 s
    assert_eq!(runs("poisoned"), 3);
    let message = ready(&sources, &source).message.unwrap_or_default();
    assert!(message.contains("record 3 is poison") && message.contains("in 4 s"), "{message}");
    tokio::time::sleep(Duration::from_secs(4)).await; // t = 7.5 s: run 4 is healthy
    assert_eq!(runs("poisoned"), 4);
    assert_eq!(ready(&sources, &source).reason.as_deref(), Some(TASK_PANICKED), "not healthy yet");
    tokio::time::sleep(HEALTHY_AFTER).await;
    assert_eq!(ready(&sources, &source), Condition::ready());
    assert_eq!(runs("poisoned"), 4, "a healthy run is not restarted");
    sources.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_source_waiting_to_restart_stops_at_once_and_a_replaced_one_starts_afresh() {
    let sources = start();
    let source = flaky("always", usize::MAX);
    sources.apply(&FLAKY, &source).await;
    // Let the waits grow: 1 + 2 + 4 + 8 + 16 + 32 s, then 60 s each.
    tokio::time::sleep(Duration::from_secs(200)).await;
    let before = runs("always");
    assert!((7..=10).contains(&before), "{before} runs in 200 s");
    // Replacing it stops the waiting supervisor at once (paused time would jump to the end of
    // the wait otherwise, and the run count would move).
    let fixed = flaky("always", 0);
    let replaced = tokio::time::Instant::now();
    sources.apply(&FLAKY, &fixed).await;
    assert!(replaced.elapsed() < Duration::from_secs(1), "stopped without waiting out the backoff");
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(runs("always"), before + 1, "the new version runs at once");
    sources.shutdown().await;
}

/// Admission that takes at most `limit` events at once, refusing larger batches as admission
/// does (`max_batch_events`), and records the batches it took.
struct Limited {
    limit: usize,
    taken: Mutex<Vec<usize>>,
}

#[async_trait]
impl Admit for Limited {
    async fn admit(&self, _: &str, _: &str, events: Vec<Event>, _: Origin) -> Result<Admitted, Refusal> {
        if events.len() > self.limit {
            return Err(Refusal::Limit(LimitExceeded::TooManyEvents { count: events.len(), limit: self.limit }));
        }
        lock(&self.taken).push(events.len());
        Ok(Admitted::Stored)
    }

    fn broker_exists(&self, _: &str, _: &str) -> bool {
        true
    }

    fn refuse(&self, _: &Origin, refusal: Refusal) -> Refusal {
        refusal
    }
}

#[tokio::test]
async fn a_batch_over_the_brokers_limit_is_sent_in_batches_it_takes() {
    let admission = Arc::new(Limited { limit: 40, taken: Mutex::new(Vec::new()) });
    let outlets = Outlets { admission: admission.clone(), http: Arc::new(NoHttp), kafka_sinks: Arc::new(NoHttp) };
    let id = SourceRef { kind: "FlakySource", namespace: "default".to_owned(), name: "batch".to_owned() };
    let declared = Declared {
        id: id.clone(),
        uid: "uid".to_owned(),
        spec: serde_json::Value::Null,
        sink: Sink::Broker("b".to_owned()),
        overrides: Vec::new(),
        http: HttpOptions::default(),
    };
    let context = RunContext {
        declared: Arc::new(declared),
        emitter: Emitter::new(id, Sink::Broker("b".to_owned()), Vec::new(), outlets),
        state: MemoryLog::new().state(),
        stop: watch::channel(false).1,
        problem: Arc::default(),
    };
    let events: Vec<Event> = (0..100).map(|n| switchyard_log::testkit::sample_event(&n.to_string(), 4)).collect();
    context.deliver(events).await.unwrap();
    assert_eq!(*lock(&admission.taken), [40, 40, 20], "in the broker's own batch size, not one event at a time");
    assert_eq!(context.problem_reason(), None);
}
