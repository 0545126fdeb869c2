//! The no-op server: an axum handler that reads the body and answers 202. It is the baseline
//! for ingest (what the same client gets from a server that does nothing) and the fast
//! subscriber for delivery: it counts the requests it answered, and can hold every request
//! until told to let them go (a stalled subscriber, or a gate in front of a backlog).
//!
//! It runs as its own process (`switchyard-bench noop-server`), like the server under test.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use tokio::sync::Notify;

/// Counts and the hold gate.
#[derive(Default)]
struct Noop {
    answered: AtomicU64,
    holding: AtomicBool,
    released: Notify,
}

/// Runs the no-op server until killed; prints `listening on ADDR` once it accepts.
pub(crate) async fn run(listen: SocketAddr, status: StatusCode) -> anyhow::Result<()> {
    let state = Arc::new(Noop::default());
    let app = Router::new()
        .route(
            "/__stats",
            get(|State(s): State<Arc<Noop>>| async move { s.answered.load(Ordering::Relaxed).to_string() }),
        )
        .route(
            "/__hold",
            post(|State(s): State<Arc<Noop>>| async move {
                s.holding.store(true, Ordering::SeqCst);
                StatusCode::NO_CONTENT
            }),
        )
        .route(
            "/__release",
            post(|State(s): State<Arc<Noop>>| async move {
                s.holding.store(false, Ordering::SeqCst);
                s.released.notify_waiters();
                StatusCode::NO_CONTENT
            }),
        )
        .fallback(move |State(s): State<Arc<Noop>>, _body: Bytes| async move {
            if s.holding.load(Ordering::Relaxed) {
                loop {
                    let released = s.released.notified();
                    if !s.holding.load(Ordering::SeqCst) {
                        break;
                    }
                    released.await;
                }
            }
            s.answered.fetch_add(1, Ordering::Relaxed);
            status
        })
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", listener.local_addr()?)?;
    stdout.flush()?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// A no-op server child process; killed when dropped.
pub(crate) struct NoopProcess {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// `http://ADDR/`.
    pub(crate) url: String,
    http: reqwest::Client,
}

impl NoopProcess {
    /// Starts `bench_exe noop-server` and waits until it listens.
    pub(crate) fn start(bench_exe: &Path) -> anyhow::Result<NoopProcess> {
        let mut child = Command::new(bench_exe)
            .arg("noop-server")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run '{} noop-server'", bench_exe.display()))?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("the no-op server did not start (it said {line:?})");
        };
        let addr: SocketAddr = addr.parse()?;
        Ok(NoopProcess {
            child,
            addr,
            url: format!("http://{addr}/"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
        })
    }

    /// CPU time the process has used so far.
    pub(crate) fn cpu(&self) -> anyhow::Result<Duration> {
        crate::server::cpu_time(self.child.id())
    }

    /// Requests answered so far.
    pub(crate) async fn answered(&self) -> anyhow::Result<u64> {
        let text = self.http.get(format!("http://{}/__stats", self.addr)).send().await?.text().await?;
        Ok(text.trim().parse()?)
    }

    /// From now on, requests wait until [`NoopProcess::release`].
    pub(crate) async fn hold(&self) -> anyhow::Result<()> {
        self.http.post(format!("http://{}/__hold", self.addr)).send().await?.error_for_status()?;
        Ok(())
    }

    /// Answers every held request, and every later one at once.
    pub(crate) async fn release(&self) -> anyhow::Result<()> {
        self.http.post(format!("http://{}/__release", self.addr)).send().await?.error_for_status()?;
        Ok(())
    }
}

impl Drop for NoopProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
