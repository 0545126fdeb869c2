//! Harness for the end-to-end tests: the real `switchyard` binary in a temporary data
//! directory, and real HTTP subscribers that record what they receive.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use serde_json::{json, Value};

/// The binary under test: `$SWITCHYARD_BIN`, or `target/<profile>/switchyard` beside this test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SWITCHYARD_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let path = profile_dir.join("switchyard");
    assert!(path.exists(), "{} is missing: run `cargo build -p switchyard` first", path.display());
    path
}

/// A free loopback port, never one this process handed out before. The port is released
/// before the server binds it, so the kernel may offer it again: without the memory, two tests
/// starting servers at once could be given the same port, one server would fail to bind, and
/// both tests would talk to the other one (and lose it when its test ends).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().expect("ports");
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// The Kafka the tests use: `$SWITCHYARD_TEST_KAFKA` (what `deploy/kafka/local.sh up` prints),
/// default `127.0.0.1:19092`.
pub fn kafka_bootstrap() -> String {
    std::env::var("SWITCHYARD_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:19092".to_owned())
}

/// Whether this run's servers use the Kafka backend (`SWITCHYARD_TEST_BACKEND=kafka`) rather
/// than the embedded log: the same suites run against both.
pub fn on_kafka() -> bool {
    std::env::var("SWITCHYARD_TEST_BACKEND").is_ok_and(|backend| backend == "kafka")
}

/// The `kafka_tool` example of the Kafka backend (`target/<profile>/examples/kafka_tool`, built by
/// the test command): creates topics and produces records, so that tests reach Kafka without
/// linking a Kafka client themselves.
pub fn kafka_tool() -> PathBuf {
    let path = binary().parent().expect("target/<profile>").join("examples/kafka_tool");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p switchyard-log-kafka --example kafka_tool` first",
        path.display()
    );
    path
}

/// Creates `topic` with `partitions` on the test Kafka (idempotent).
pub fn create_topic(topic: &str, partitions: u32) {
    let status = Command::new(kafka_tool())
        .args([kafka_bootstrap().as_str(), "create-topic", topic, &partitions.to_string()])
        .status()
        .expect("run kafka_tool");
    assert!(status.success(), "kafka_tool create-topic {topic} failed");
}

/// Produces records to `topic` on the test Kafka, one JSON object each (`key`, `value`,
/// `value_base64`, `headers`, `partition`: see `broker/kafka/examples/kafka_tool.rs`); returns
/// each record's `(partition, offset)`.
pub fn produce(topic: &str, records: &[Value]) -> Vec<(i32, i64)> {
    use std::io::Write;
    let mut child = Command::new(kafka_tool())
        .args([kafka_bootstrap().as_str(), "produce", topic])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run kafka_tool");
    {
        let mut stdin = child.stdin.take().expect("stdin");
        for record in records {
            writeln!(stdin, "{record}").expect("write a record");
        }
    }
    let output = child.wait_with_output().expect("kafka_tool");
    assert!(output.status.success(), "kafka_tool produce {topic} failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let (partition, offset) = line.split_once(' ').expect("partition offset");
            (partition.parse().expect("partition"), offset.parse().expect("offset"))
        })
        .collect()
}

/// Reads the first `count` records of `topic` on the test Kafka (from its start, with a group
/// of its own): one JSON object each (`partition`, `offset`, `key`, `headers`, `value` or
/// `value_base64`: see `broker/kafka/examples/kafka_tool.rs`). Fails when fewer arrive in 30 s.
pub fn consume(topic: &str, count: usize) -> Vec<Value> {
    let output = Command::new(kafka_tool())
        .args([kafka_bootstrap().as_str(), "consume", topic, &count.to_string()])
        .output()
        .expect("run kafka_tool");
    assert!(
        output.status.success(),
        "kafka_tool consume {topic} {count} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a json line"))
        .collect()
}

/// A cluster name no other test uses: Kafka topics, groups and the shared declarations of
/// servers started with it are prefixed with it, so tests sharing one Kafka never meet.
pub fn fresh_cluster() -> String {
    format!("t{}", uuid::Uuid::new_v4().simple())
}

/// A running `switchyard serve`.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    port: u16,
    data_dir: PathBuf,
    extra_args: Vec<String>,
    /// Environment variables of the server process.
    env: Vec<(String, String)>,
    /// On Kafka, the bootstrap servers and the cluster this server belongs to.
    cluster: Option<(String, String)>,
    temp: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server on a fresh data directory.
    pub async fn start() -> Server {
        Server::start_with(&[]).await
    }

    /// Starts a server with extra `serve` arguments.
    pub async fn start_with(extra_args: &[&str]) -> Server {
        Server::start_in(None, extra_args).await
    }

    /// Starts a server on `data_dir` (a fresh temporary one when `None`), on this run's backend
    /// (a cluster of its own on Kafka).
    pub async fn start_in(data_dir: Option<PathBuf>, extra_args: &[&str]) -> Server {
        Server::launch(data_dir, extra_args, &[], on_kafka().then(|| (kafka_bootstrap(), fresh_cluster()))).await
    }

    /// Starts a server with these environment variables, on this run's backend.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Server {
        Server::launch(None, &[], env, on_kafka().then(|| (kafka_bootstrap(), fresh_cluster()))).await
    }

    /// Starts a server with extra `serve` arguments and these environment variables, on this
    /// run's backend.
    pub async fn start_with_args_and_env(extra_args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(None, extra_args, env, on_kafka().then(|| (kafka_bootstrap(), fresh_cluster()))).await
    }

    /// Starts one node of a Kafka-backed cluster: nodes started with the same `cluster` share
    /// their brokers, triggers and events.
    pub async fn start_node(cluster: &str) -> Server {
        Server::start_node_on(&kafka_bootstrap(), cluster).await
    }

    /// [`Server::start_node`] on the Kafka at `bootstrap`.
    pub async fn start_node_on(bootstrap: &str, cluster: &str) -> Server {
        Server::launch(None, &[], &[], Some((bootstrap.to_owned(), cluster.to_owned()))).await
    }

    /// [`Server::start_node_on`] with these environment variables (a listener's TLS or SASL).
    pub async fn start_node_on_with_env(bootstrap: &str, cluster: &str, env: &[(&str, &str)]) -> Server {
        Server::launch(None, &[], env, Some((bootstrap.to_owned(), cluster.to_owned()))).await
    }

    async fn launch(
        data_dir: Option<PathBuf>,
        extra_args: &[&str],
        env: &[(&str, &str)],
        cluster: Option<(String, String)>,
    ) -> Server {
        let temp = tempfile::tempdir().expect("tempdir");
        let data_dir = data_dir.unwrap_or_else(|| temp.path().join("data"));
        let port = free_port();
        let mut server = Server {
            child: None,
            url: format!("http://127.0.0.1:{port}"),
            port,
            data_dir,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cluster,
            temp: Some(temp),
        };
        // The port was free when picked, but the server binds it only once its log is open (on
        // Kafka, seconds later): a listener another test started meanwhile may have it. Then
        // the server stops at start saying so, and starts again on another port.
        for _ in 0..4 {
            match server.try_spawn().await {
                Err(log) if log.contains(&format!("cannot listen on '127.0.0.1:{}'", server.port)) => {
                    server.port = free_port();
                    server.url = format!("http://127.0.0.1:{}", server.port);
                }
                Err(log) => panic!("switchyard exited at start; log: {log}"),
                Ok(()) => return server,
            }
        }
        server.spawn().await;
        server
    }

    /// The server's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    async fn spawn(&mut self) {
        if let Err(log) = self.try_spawn().await {
            panic!("switchyard exited at start; log: {log}");
        }
    }

    /// Starts the process and waits until it is ready; `Err` with its log when it exited first.
    async fn try_spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .ok()
            .map(Stdio::from)
            .unwrap_or_else(Stdio::null);
        let child = Command::new(binary())
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.extra_args)
            .args(self.cluster.iter().flat_map(|(bootstrap, cluster)| {
                [
                    "--log".to_owned(),
                    format!("kafka://{bootstrap}"),
                    "--kafka-topic-prefix".to_owned(),
                    format!("{cluster}."),
                ]
            }))
            .env("SWITCHYARD_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn switchyard");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::Client::new();
        loop {
            // Exited first: a server that could not bind must not take another's answer for its own.
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                return Err(format!("exit status {status}; {}", self.log()));
            }
            // Only switchyard's own answer: another listener on the port (a test's subscriber
            // answers 200 to anything) must not pass for it.
            if let Ok(response) = client.get(format!("{}/readyz", self.url)).send().await {
                if response.status().is_success() && response.text().await.is_ok_and(|body| body == "ok") {
                    return Ok(());
                }
            }
            assert!(Instant::now() < deadline, "switchyard did not become ready; log: {}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.temp.as_ref().map_or_else(|| self.data_dir.with_extension("log"), |t| t.path().join("server.log"))
    }

    /// The server's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Asserts that the node is well after whatever a test did to it: it answers `/healthz`
    /// within 100 ms, and its log has no panic.
    pub async fn assert_healthy(&self) {
        let client = reqwest::Client::builder().timeout(Duration::from_millis(100)).build().expect("client");
        let response = client.get(format!("{}/healthz", self.url)).send().await;
        assert!(
            response.as_ref().is_ok_and(|r| r.status() == StatusCode::OK),
            "/healthz within 100 ms: {response:?}; log: {}",
            self.log()
        );
        let log = self.log();
        let panics: Vec<&str> = log.lines().filter(|line| line.contains("panicked")).collect();
        assert!(panics.is_empty(), "the server panicked:\n{}", panics.join("\n"));
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and the exit status. Waits without blocking the runtime, so subscribers in
    /// this process keep answering the deliveries the server finishes while it stops.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        tokio::task::spawn_blocking(move || child.wait().expect("wait")).await.expect("wait task")
    }

    /// Starts the server again on the same data directory and port (after `kill -9`, when it
    /// still runs).
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// A request that got no answer: the server's log says why (a panic, an exit).
    fn request_failed(&self, verb: &str, path: &str, error: reqwest::Error) -> ! {
        panic!("{verb} {path}: {error:?}; log: {}", self.log())
    }

    /// PUT a resource; returns (status, body).
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| self.request_failed("put", path, e));
        status_and_json(response).await
    }

    /// GET; returns (status, body).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| self.request_failed("get", path, e));
        status_and_json(response).await
    }

    /// DELETE; returns (status, body).
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        let response = reqwest::Client::new()
            .delete(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap_or_else(|e| self.request_failed("delete", path, e));
        status_and_json(response).await
    }

    /// Creates a broker in `namespace`.
    pub async fn broker(&self, namespace: &str, name: &str) {
        let (status, body) = self.put(&format!("/v1/namespaces/{namespace}/brokers/{name}"), json!({"spec": {}})).await;
        assert!(status.is_success(), "create broker: {status} {body}");
    }

    /// Creates a trigger with `spec`.
    pub async fn trigger(&self, namespace: &str, name: &str, spec: Value) {
        let (status, body) =
            self.put(&format!("/v1/namespaces/{namespace}/triggers/{name}"), json!({"spec": spec})).await;
        assert!(status.is_success(), "create trigger: {status} {body}");
    }

    /// POSTs events in batch mode; returns the status.
    pub async fn send_batch(&self, namespace: &str, broker: &str, events: &[Value]) -> StatusCode {
        let response = reqwest::Client::new()
            .post(format!("{}/{namespace}/{broker}", self.url))
            .header("content-type", "application/cloudevents-batch+json")
            .json(events)
            .send()
            .await
            .expect("send batch");
        StatusCode::from_u16(response.status().as_u16()).expect("status")
    }

    /// POSTs a binary-mode event; returns the status.
    pub async fn send_binary(
        &self,
        namespace: &str,
        broker: &str,
        id: &str,
        ty: &str,
        data: &'static [u8],
    ) -> StatusCode {
        reqwest::Client::new()
            .post(format!("{}/{namespace}/{broker}", self.url))
            .header("ce-specversion", "1.0")
            .header("ce-id", id)
            .header("ce-type", ty)
            .header("ce-source", "/e2e")
            .header("content-type", "application/json")
            .body(data)
            .send()
            .await
            .expect("send")
            .status()
    }

    /// One scrape of `/metrics`: the Prometheus text exposition.
    pub async fn metrics(&self) -> String {
        let response = reqwest::get(format!("{}/metrics", self.url)).await.expect("scrape /metrics");
        assert!(response.status().is_success(), "GET /metrics answered {}", response.status());
        response.text().await.expect("the /metrics body")
    }

    /// The value of the series `name` whose labels are exactly `labels` (in any order), in one
    /// scrape; `None` when there is none (a counter that never counted, a histogram with no
    /// sample yet, the gauge of a trigger that does not run).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics().await, name, labels)
    }

    /// Waits until `trigger` has a final outcome for every event of its broker's log:
    /// `switchyard_trigger_backlog{namespace,trigger}`, the log's end minus the trigger's
    /// committed position, is 0. Panics after `timeout`. See
    /// [`Server::wait_until_all_drained`] for why this proves that nothing more will arrive,
    /// and when it does not.
    pub async fn wait_until_drained(&self, namespace: &str, trigger: &str, timeout: Duration) {
        self.wait_until_all_drained(namespace, &[trigger], timeout).await;
    }

    /// Waits until each of `triggers` has a final outcome (delivered, filtered out,
    /// dead-lettered) for every event of its broker's log: each one's
    /// `switchyard_trigger_backlog` gauge is 0 in the same scrape. Panics after `timeout`.
    ///
    /// This is the wait before asserting that nothing more arrived. A worker commits an offset
    /// only once the outcome of every event below it is final, and the gauge is the log's end
    /// minus that committed position, read from the worker's progress in memory (commits are
    /// persisted lazily; the gauge does not wait for that). At 0, no event acknowledged before
    /// the scrape can still reach the trigger's subscriber: no retry, no duplicate, no event
    /// wrongly let through a filter, no reply still to be written (a reply is appended before
    /// its delivery is final, so it moves the log's end first). A sleep proves none of that,
    /// and neither does a sentinel event arriving last, unless order is guaranteed (an
    /// `ordered` trigger and the same `partitionkey`): deliveries are concurrent.
    ///
    /// What the gauge cannot see, and so what the caller must make sure of:
    /// - It counts only the partitions the worker has read from. A worker adds a partition to
    ///   its progress when it first reads from it, in the same step as it hands what it read
    ///   to delivery; until then the partition counts as 0 (as does everything for a worker
    ///   that has read nothing yet). So call this once the trigger has been seen to deliver an
    ///   event of the partition in question.
    /// - The embedded log has one partition: any delivery of the trigger will do. On Kafka a
    ///   broker has several, and an event's `partitionkey`, else its `source`, chooses one: an
    ///   event in a partition the trigger has not been seen to deliver from is covered only
    ///   once the worker has fetched it, which the gauge cannot tell. Have the events in
    ///   question share a `source` (or key) with one the trigger delivered, or prove them
    ///   absent another way (by counting what was appended, for instance).
    /// - A trigger that is not running has no gauge: this then waits, and fails at `timeout`.
    pub async fn wait_until_all_drained(&self, namespace: &str, triggers: &[&str], timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            // One pass over the scrape, however many triggers (there may be hundreds).
            let mut all: HashMap<String, f64> = HashMap::new();
            for (labels, value) in samples(&text, "switchyard_trigger_backlog") {
                let label = |key: &str| labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
                if let (2, Some(in_namespace), Some(trigger)) = (labels.len(), label("namespace"), label("trigger")) {
                    if in_namespace == namespace {
                        all.insert(trigger.to_owned(), value);
                    }
                }
            }
            let backlogs: Vec<(&str, Option<f64>)> =
                triggers.iter().map(|trigger| (*trigger, all.get(*trigger).copied())).collect();
            if backlogs.iter().all(|(_, backlog)| *backlog == Some(0.0)) {
                return;
            }
            if Instant::now() >= deadline {
                let behind: Vec<_> = backlogs.iter().filter(|(_, backlog)| *backlog != Some(0.0)).collect();
                panic!(
                    "triggers of namespace {namespace} not drained after {timeout:?} (trigger, backlog): {behind:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The value of the series `name{labels}` in a Prometheus text exposition: the sample whose
/// label set is exactly `labels` (in any order). `None` when there is none.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    wanted.sort();
    samples(text, name).find_map(|(mut sample_labels, value)| {
        sample_labels.sort();
        (sample_labels == wanted).then_some(value)
    })
}

/// The samples of the series `name`, whatever their labels: (labels, value).
fn samples<'a>(text: &'a str, name: &'a str) -> impl Iterator<Item = (Labels, f64)> + 'a {
    text.lines()
        // Only the lines of this series are parsed.
        .filter(move |line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(parse_sample)
}

/// A sample's labels: (name, value) pairs.
type Labels = Vec<(String, String)>;

/// The labels (unescaped) and value of a sample line, `name{label="value",…} value [timestamp]`.
fn parse_sample(line: &str) -> Option<(Labels, f64)> {
    let mut rest = &line[line.find(['{', ' '])?..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            inner = inner.trim_start_matches([',', ' ']);
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, quoted) = inner.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (at, '"') => break at,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        escaped => value.push(escaped),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_owned(), value));
            inner = &quoted[end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((labels, value))
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

async fn status_and_json(response: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(response.status().as_u16()).expect("status");
    let bytes = response.bytes().await.unwrap_or_default();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// One request a subscriber received.
#[derive(Debug, Clone)]
pub struct Received {
    /// When it arrived.
    pub at: Instant,
    /// The request path.
    pub path: String,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: Bytes,
}

impl Received {
    /// A header as text (raw UTF-8 included, as `compatible` header encoding writes it).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
    }

    /// A binary-mode attribute (`ce-<name>`), percent-decoded as the HTTP binding encodes
    /// values (§3.1.3.2).
    pub fn attribute(&self, name: &str) -> Option<String> {
        let value = self.header(&format!("ce-{name}"))?;
        Some(percent_encoding::percent_decode_str(value).decode_utf8_lossy().into_owned())
    }
}

/// A real HTTP subscriber on a loopback port that records every request and answers with the
/// statuses it is given (then 200 once they run out).
#[derive(Clone)]
pub struct Subscriber {
    /// Its URL.
    pub url: String,
    /// Where it listens.
    pub address: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<VecDeque<Answer>>>,
    default_answer: Arc<Mutex<Option<Answer>>>,
    down: Arc<AtomicBool>,
}

/// What a subscriber answers to one request.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    /// An answer with a status and nothing else.
    pub fn status(status: StatusCode) -> Answer {
        Answer { status, headers: Vec::new(), body: Vec::new(), delay: Duration::ZERO }
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Answer {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Answer {
        self.body = body.into();
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = delay;
        self
    }
}

impl From<StatusCode> for Answer {
    fn from(status: StatusCode) -> Answer {
        Answer::status(status)
    }
}

impl Subscriber {
    /// Starts a subscriber that accepts everything.
    pub async fn start() -> Subscriber {
        Subscriber::start_answering(Vec::new()).await
    }

    /// Starts a subscriber that answers the first requests with `answers`, then 200.
    pub async fn start_answering(answers: Vec<StatusCode>) -> Subscriber {
        Subscriber::start_with_answers(answers.into_iter().map(Answer::from).collect()).await
    }

    /// Starts a subscriber that answers the first requests with `answers`, then 200.
    pub async fn start_with_answers(answers: Vec<Answer>) -> Subscriber {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("addr");
        let subscriber = Subscriber {
            url: format!("http://{address}/"),
            address,
            received: Arc::default(),
            answers: Arc::new(Mutex::new(answers.into())),
            default_answer: Arc::default(),
            down: Arc::default(),
        };
        let state = subscriber.clone();
        let app = Router::new().fallback(move |uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let state = state.clone();
            async move {
                if state.down.load(Ordering::Relaxed) {
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                let path = uri.path().to_owned();
                state.received.lock().expect("lock").push(Received { at: Instant::now(), path, headers, body });
                let answer = state.answers.lock().expect("lock").pop_front();
                let answer = answer.or_else(|| state.default_answer.lock().expect("lock").clone());
                let answer = answer.unwrap_or(StatusCode::OK.into());
                tokio::time::sleep(answer.delay).await;
                let mut response = (answer.status, answer.body).into_response();
                for (name, value) in answer.headers {
                    response.headers_mut().insert(name, value.parse().expect("header value"));
                }
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        subscriber
    }

    /// While down, every request is answered 503 and not recorded.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::Relaxed);
    }

    /// Answers every request not covered by the queued answers with `answer` (instead of 200).
    pub fn always(&self, answer: impl Into<Answer>) {
        *self.default_answer.lock().expect("lock") = Some(answer.into());
    }

    /// Arrival times of the requests received so far.
    pub fn arrival_times(&self) -> Vec<Instant> {
        self.received().iter().map(|r| r.at).collect()
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    /// Waits until at least `count` requests arrived (or panics after `timeout`).
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(Instant::now() < deadline, "expected {count} requests, got {} after {timeout:?}", received.len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The distinct `ce-id`s received.
    pub fn ids(&self) -> std::collections::BTreeSet<String> {
        self.received().iter().filter_map(|r| r.header("ce-id").map(str::to_owned)).collect()
    }

    /// Waits until every id of `expected` has arrived (45 s at most); on failure says which are
    /// missing, with `server`'s log.
    pub async fn wait_for_ids(&self, expected: &std::collections::BTreeSet<String>, server: &Server) {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let missing: Vec<String> = expected.difference(&self.ids()).cloned().collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {} events never delivered, e.g. {:?}; log: {}",
                missing.len(),
                expected.len(),
                &missing[..missing.len().min(5)],
                server.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The request that carried event `id`.
pub fn by_id<'a>(received: &'a [Received], id: &str) -> &'a Received {
    received.iter().find(|r| r.header("ce-id") == Some(id)).unwrap_or_else(|| panic!("no event {id} in {received:?}"))
}

/// `name` made unique to this call, for topics, queues, streams and groups that tests share a
/// server with.
pub fn fresh(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// Runs `deploy/<server>/local.sh <command>` with `env` (a private instance's port and data
/// directory); returns what it printed on standard output (the address, for `up`).
pub fn local_sh(server: &str, command: &str, env: &[(&str, String)]) -> String {
    let output = run_local_sh(server, command, env).unwrap_or_else(|e| panic!("run deploy/{server}/local.sh: {e}"));
    assert!(
        output.status.success(),
        "deploy/{server}/local.sh {command} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Stops and deletes the instance of `deploy/<server>/local.sh` that `env` names, as `Drop`
/// may: whatever happens, it does not panic.
pub fn local_sh_down(server: &str, env: &[(&str, String)]) {
    let _ = run_local_sh(server, "down", env);
}

fn run_local_sh(server: &str, command: &str, env: &[(&str, String)]) -> std::io::Result<std::process::Output> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../deploy/{server}/local.sh"));
    Command::new("bash").arg(script).arg(command).envs(env.iter().map(|(name, value)| (*name, value.as_str()))).output()
}

/// The Kubernetes API server the tests use: `$SWITCHYARD_TEST_KUBECONFIG` (what
/// `deploy/kubernetes/local.sh up` prints, as the test command sets it), else the one that
/// script starts (idempotent; built from Go modules the first time). Knative's CRDs are
/// applied to it once per test process.
pub fn kubeconfig() -> PathBuf {
    static KUBECONFIG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KUBECONFIG
        .get_or_init(|| {
            let path = match std::env::var("SWITCHYARD_TEST_KUBECONFIG") {
                Ok(path) if !path.is_empty() => PathBuf::from(path),
                _ => PathBuf::from(local_sh("kubernetes", "up", &[])),
            };
            apply_knative_crds(&path);
            path
        })
        .clone()
}

/// Applies Knative Eventing's CRDs to the API server of `kubeconfig` and waits until they are
/// established (`deploy/kubernetes/knative-crds.sh`).
fn apply_knative_crds(kubeconfig: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/knative-crds.sh");
    let output = Command::new("bash").arg(script).arg("apply").arg(kubeconfig).output().expect("run knative-crds.sh");
    assert!(output.status.success(), "knative-crds.sh apply: {}", String::from_utf8_lossy(&output.stderr));
}

/// Runs `kubectl` against [`kubeconfig`]'s API server with `stdin` as its input; panics with
/// its output unless it succeeds. Returns its standard output.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> String {
    kubectl_on(&kubeconfig(), args, stdin)
}

/// [`kubectl`] against the API server of `config`.
pub fn kubectl_on(config: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let output = try_kubectl_on(config, args, stdin);
    assert!(
        output.status.success(),
        "kubectl {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `kubectl` (the one `deploy/kubernetes/local.sh` built) against the API server of
/// `config`, whatever it answers.
pub fn try_kubectl_on(config: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    static KUBECTL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let kubectl = KUBECTL.get_or_init(|| PathBuf::from(local_sh("kubernetes", "build", &[])).join("kubectl"));
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut input = child.stdin.take().expect("kubectl stdin");
    input.write_all(stdin.unwrap_or_default().as_bytes()).expect("write kubectl stdin");
    drop(input);
    child.wait_with_output().expect("wait for kubectl")
}

/// Creates a fresh namespace named after `prefix` on the tests' API server; returns its name.
pub fn kube_namespace(prefix: &str) -> String {
    let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    kubectl(&["create", "namespace", &name], None);
    name
}

/// A private API server (`deploy/kubernetes/local.sh` on its own ports and folder, Knative's
/// CRDs applied) for a test that stops it; stopped and deleted when dropped.
pub struct PrivateApiServer {
    env: Vec<(&'static str, String)>,
    dir: PathBuf,
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The kube-apiserver [`PrivateApiServer::restart_api_server`] started, if any.
    restarted: Mutex<Option<Child>>,
    _temp: tempfile::TempDir,
}

impl PrivateApiServer {
    /// Starts one.
    pub fn up() -> PrivateApiServer {
        let temp = tempfile::tempdir().expect("tempdir");
        let dir = temp.path().join("k8s");
        // etcd takes the two ports after the API server's.
        let port = loop {
            let port = free_port();
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if port < u16::MAX - 2 && free(port + 1) && free(port + 2) {
                break port;
            }
        };
        let env = vec![("K8S_PORT", port.to_string()), ("K8S_DIR", dir.display().to_string())];
        let kubeconfig = PathBuf::from(local_sh("kubernetes", "up", &env));
        apply_knative_crds(&kubeconfig);
        PrivateApiServer { env, dir, kubeconfig, restarted: Mutex::default(), _temp: temp }
    }

    /// [`kubectl`] against this API server.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        kubectl_on(&self.kubeconfig, args, stdin)
    }

    /// Kills kube-apiserver, as in a crash (a SIGTERM lets it drain its watches for a minute);
    /// etcd and its data stay. Returns its command line, for [`PrivateApiServer::restart_api_server`].
    pub fn kill_api_server(&self) -> Vec<String> {
        let pid = std::fs::read_to_string(self.dir.join("kube-apiserver.pid")).expect("kube-apiserver.pid");
        let pid = pid.trim().to_owned();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("kube-apiserver's command line");
        let args =
            cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into()).collect();
        assert!(Command::new("kill").args(["-KILL", &pid]).status().expect("kill").success());
        // Gone once /proc has no such process, or only its zombie (`Z`) until its parent reaps it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        };
        // A killed process's leader may be a zombie while its other threads still hold its
        // sockets: it is gone for good once its port can be bound again.
        let port: u16 = self.env[0].1.parse().expect("K8S_PORT");
        while alive() || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "kube-apiserver {pid} did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        args
    }

    /// Starts kube-apiserver again as it ran (`args` from [`PrivateApiServer::kill_api_server`]),
    /// on the same etcd and data, and records its pid for `local.sh down`.
    pub fn restart_api_server(&self, args: &[String]) {
        let log = std::fs::File::create(self.dir.join("kube-apiserver.restarted.log")).expect("log");
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start kube-apiserver");
        std::fs::write(self.dir.join("kube-apiserver.pid"), child.id().to_string()).expect("pid file");
        *self.restarted.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
    }

    /// Starts both again with `local.sh up`: an empty etcd (the same certificates, token and
    /// kubeconfig), so Knative's CRDs are applied again.
    pub fn up_again(&self) {
        assert_eq!(PathBuf::from(local_sh("kubernetes", "up", &self.env)), self.kubeconfig);
        apply_knative_crds(&self.kubeconfig);
    }
}

impl Drop for PrivateApiServer {
    fn drop(&mut self) {
        local_sh_down("kubernetes", &self.env);
        if let Some(mut child) = self.restarted.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    const TEXT: &str = r#"# HELP switchyard_trigger_backlog Events between a trigger's committed position and the end of its broker's log.
# TYPE switchyard_trigger_backlog gauge
switchyard_trigger_backlog{namespace="default",trigger="a"} 3
switchyard_trigger_backlog{namespace="default",trigger="ab"} 0
switchyard_delivery_attempts_total{outcome="success"} 4
switchyard_delivery_duration_seconds_bucket{le="+Inf"} 10
switchyard_log_append_duration_seconds_count 7
odd{path="a \"quoted\", \\ value}"} 1.5 1700000000000
"#;

    #[test]
    fn finds_the_series_with_exactly_these_labels_in_any_order() {
        assert_eq!(
            metric_value(TEXT, "switchyard_trigger_backlog", &[("namespace", "default"), ("trigger", "a")]),
            Some(3.0)
        );
        assert_eq!(
            metric_value(TEXT, "switchyard_trigger_backlog", &[("trigger", "ab"), ("namespace", "default")]),
            Some(0.0)
        );
        assert_eq!(
            metric_value(TEXT, "switchyard_trigger_backlog", &[("trigger", "a")]),
            None,
            "a subset is not the series"
        );
        assert_eq!(
            metric_value(TEXT, "switchyard_trigger_backlog", &[("namespace", "default"), ("trigger", "b")]),
            None
        );
        assert_eq!(metric_value(TEXT, "switchyard_delivery_attempts_total", &[("outcome", "success")]), Some(4.0));
        assert_eq!(metric_value(TEXT, "switchyard_delivery_duration_seconds_bucket", &[("le", "+Inf")]), Some(10.0));
        assert_eq!(metric_value(TEXT, "switchyard_log_append_duration_seconds_count", &[]), Some(7.0));
        assert_eq!(metric_value(TEXT, "switchyard_log_append_duration_seconds", &[]), None, "names match whole");
        assert_eq!(metric_value(TEXT, "odd", &[("path", "a \"quoted\", \\ value}")]), Some(1.5), "escapes, timestamp");
    }
}
