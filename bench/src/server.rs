//! The server under test: the release `switchyard` binary, spawned on a data directory of its
//! own, with the log backend given as a [`Backend`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::{json, Value};

/// Which event log the server runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The embedded log in the data directory (the default).
    Embedded,
    /// A Kafka cluster, `kafka://host:port[,host:port]` (`serve --log`; issue 5).
    Kafka(String),
    /// A Kafka cluster with a fixed topic prefix: every server started on it joins the same
    /// Switchyard cluster (one set of topics, declarations and consumer groups).
    KafkaCluster { url: String, prefix: String },
}

impl Backend {
    /// What the table calls it.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Kafka(_) | Backend::KafkaCluster { .. } => "Kafka",
        }
    }

    /// A Kafka backend whose servers share one fresh topic prefix: nodes of one cluster.
    pub(crate) fn kafka_cluster(url: &str) -> Backend {
        Backend::KafkaCluster { url: url.to_owned(), prefix: fresh_prefix() }
    }

    /// The extra `serve` arguments that select this backend. On Kafka every server gets topics
    /// of its own (a fresh prefix), as it gets a fresh data directory on the embedded log.
    fn serve_args(&self) -> Vec<String> {
        match self {
            Backend::Embedded => Vec::new(),
            Backend::Kafka(url) => {
                vec!["--log".to_owned(), url.clone(), "--kafka-topic-prefix".to_owned(), fresh_prefix()]
            }
            Backend::KafkaCluster { url, prefix } => {
                vec!["--log".to_owned(), url.clone(), "--kafka-topic-prefix".to_owned(), prefix.clone()]
            }
        }
    }
}

/// A Kafka topic prefix no earlier server of any run used.
fn fresh_prefix() -> String {
    static STARTED: AtomicU64 = AtomicU64::new(0);
    let n = STARTED.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("switchyard-bench.{}-{nanos}-{n}.", std::process::id())
}

/// The SHA-256 of the bearer token of `--auth` runs (`sy_bench-token`), as `[auth]` configures it.
const BENCH_TOKEN_SHA256: &str = "d98c48ceac5132d1822de428d737db2471f732e3665ecbdff32f2b6cea91a834";

static AUTH: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

/// Makes every server of this run authenticate (`--auth`); call once, before any starts.
pub(crate) fn set_auth(on: bool) {
    let _ = AUTH.set(on);
}

/// The `Authorization` value every request to Switchyard carries in an `--auth` run.
pub(crate) fn authorization() -> Option<HeaderValue> {
    AUTH.get().copied().unwrap_or(false).then(|| HeaderValue::from_static("Bearer sy_bench-token"))
}

/// A running `switchyard serve`; killed (`kill -9`) when dropped.
pub(crate) struct Switchyard {
    binary: PathBuf,
    backend: Backend,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub(crate) url: String,
    http: reqwest::Client,
}

impl Switchyard {
    /// Starts the server on `data_dir` (created if missing; its log goes beside it) and waits
    /// until `/readyz` answers 200.
    pub(crate) async fn start(binary: &Path, backend: &Backend, data_dir: &Path) -> anyhow::Result<Switchyard> {
        let port = free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut server = Switchyard {
            binary: binary.to_owned(),
            backend: backend.clone(),
            data_dir: data_dir.to_owned(),
            log_path: data_dir.with_extension("log"),
            child: None,
            addr,
            url: format!("http://{addr}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .default_headers(
                    authorization().map(|value| [(AUTHORIZATION, value)].into_iter().collect()).unwrap_or_default(),
                )
                .build()?,
        };
        server.spawn().await?;
        Ok(server)
    }

    /// Spawns the process and waits for the first 200 from `/readyz`; returns the time from
    /// the spawn to that answer.
    pub(crate) async fn spawn(&mut self) -> anyhow::Result<Duration> {
        anyhow::ensure!(self.child.is_none(), "the server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("cannot open '{}'", self.log_path.display()))?;
        let started = Instant::now();
        let child = Command::new(&self.binary)
            .arg("serve")
            .arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(self.backend.serve_args())
            .envs(
                authorization()
                    .map(|_| {
                        [
                            ("SWITCHYARD_AUTH_TOKENS", format!("name=bench sha256={BENCH_TOKEN_SHA256} role=admin")),
                            // The subscribers run on loopback, which authentication refuses by default.
                            ("SWITCHYARD_OUTBOUND_REFUSE_PRIVATE", "false".to_owned()),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run '{}'", self.binary.display()))?;
        self.child = Some(child);
        let probe = reqwest::Client::builder().timeout(Duration::from_secs(1)).build()?;
        let ready_url = format!("{}/readyz", self.url);
        let deadline = started + Duration::from_secs(300);
        loop {
            if let Ok(response) = probe.get(&ready_url).send().await {
                if response.status().is_success() {
                    return Ok(started.elapsed());
                }
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                bail!("switchyard exited at start with {status}; log tail:\n{}", self.log_tail());
            }
            if Instant::now() > deadline {
                bail!("switchyard was not ready after 300 s; log tail:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM, then waits for the exit; returns how long the stop took.
    pub(crate) async fn stop(&mut self) -> anyhow::Result<Duration> {
        let mut child = self.child.take().context("the server is not running")?;
        let started = Instant::now();
        let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status()?;
        anyhow::ensure!(status.success(), "kill -TERM failed: {status}");
        let exit = tokio::task::spawn_blocking(move || child.wait()).await??;
        anyhow::ensure!(exit.success(), "switchyard exited with {exit} at SIGTERM; log tail:\n{}", self.log_tail());
        Ok(started.elapsed())
    }

    /// The process id, while running.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's resident memory (`VmRSS`) in MB.
    pub(crate) fn rss_mb(&self) -> anyhow::Result<f64> {
        rss_mb(self.pid().context("the server is not running")?)
    }

    /// How many file descriptors the server holds (sockets, log segments, …).
    pub(crate) fn open_fds(&self) -> usize {
        self.pid().and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).ok()).map_or(0, Iterator::count)
    }

    /// CPU time the server has used so far (user + system).
    pub(crate) fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid().context("the server is not running")?)
    }

    /// The sum of every sample of a Prometheus series on `/metrics` (all label sets); `None`
    /// when the server has no such series.
    pub(crate) async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.http.get(format!("{}/metrics", self.url)).send().await.ok()?.text().await.ok()?;
        let mut found = None;
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(name) else { continue };
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                continue;
            }
            let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
            *found.get_or_insert(0.0) += value;
        }
        found
    }

    /// Creates broker `default/{name}`.
    pub(crate) async fn broker(&self, name: &str) -> anyhow::Result<()> {
        self.put(&format!("/v1/namespaces/default/brokers/{name}"), json!({})).await
    }

    /// Creates trigger `default/{name}` with `spec`.
    pub(crate) async fn trigger(&self, name: &str, spec: Value) -> anyhow::Result<()> {
        self.put(&format!("/v1/namespaces/default/triggers/{name}"), json!({ "spec": spec })).await
    }

    /// Creates a source `default/{name}` of the kind whose REST path segment is `plural`.
    pub(crate) async fn source(&self, plural: &str, name: &str, spec: Value) -> anyhow::Result<()> {
        self.put(&format!("/v1/namespaces/default/{plural}/{name}"), json!({ "spec": spec })).await
    }

    async fn put(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("PUT {path}"))?;
        let status = response.status();
        if !status.is_success() {
            bail!("PUT {path} answered {status}: {}", response.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// The last lines of the server's log.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `VmRSS` of a process, in MB (10^6 bytes).
pub(crate) fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .context("no VmRSS line")?;
    Ok(kib as f64 * 1024.0 / 1e6)
}

/// CPU time (user + system) a process has used, from `/proc/PID/stat` (100 ticks a second).
pub(crate) fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').context("malformed stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> { Ok(fields.get(i - 3).context("short stat")?.parse()?) };
    Ok(Duration::from_millis((ticks(14)? + ticks(15)?) * 10))
}

/// A loopback port that was free a moment ago.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Total size of the files under `dir`, in bytes.
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}
