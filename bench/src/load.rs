//! The load generator: raw hyper HTTP/1.1 keep-alive connections, one task per connection.
//!
//! [`closed_loop`] keeps every connection busy (send, read the whole answer, send again): its
//! rate is what the server sustains at that concurrency. [`open_loop`] sends at a fixed rate
//! on a schedule kept by its own thread, whatever the answers do, so a slow answer delays no
//! later send (no coordinated omission).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::task::JoinSet;

/// Builds request number `seq`.
pub(crate) type MakeRequest = Arc<dyn Fn(u64) -> Request<Full<Bytes>> + Send + Sync>;

/// Builds request number `seq`, stamped with its intended send time (ns since [`epoch`]).
pub(crate) type MakeTimedRequest = Arc<dyn Fn(u64, u64) -> Request<Full<Bytes>> + Send + Sync>;

/// The instant every timestamp of this process counts from.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at`.
pub(crate) fn nanos_since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// How long a closed-loop run lasts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Length {
    /// Run `warmup`, then count the answers during `measure`.
    Timed { warmup: Duration, measure: Duration },
    /// Send exactly this many requests.
    Total(u64),
}

/// What a closed-loop run did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadReport {
    /// Requests answered with the expected status in the measured window.
    pub(crate) requests: u64,
    /// The measured window.
    pub(crate) elapsed: Duration,
}

impl LoadReport {
    /// Requests per second.
    pub(crate) fn per_sec(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// One keep-alive HTTP/1.1 connection.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Sends one request and reads its whole answer; fails unless the status is `expected`.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    mut request: Request<Full<Bytes>>,
    expected: StatusCode,
) -> anyhow::Result<()> {
    // Added here, so that every request of an `--auth` run carries it, the baselines' too.
    if let Some(authorization) = crate::server::authorization() {
        request.headers_mut().insert(hyper::header::AUTHORIZATION, authorization);
    }
    sender.ready().await.context("connection closed")?;
    let response = sender.send_request(request).await.context("request failed")?;
    let status = response.status();
    let body = response.into_body().collect().await.context("reading the answer")?.to_bytes();
    if status != expected {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        bail!("expected {expected}, got {status}: {text}");
    }
    Ok(())
}

/// Drives `connections` connections to `addr` in a closed loop; every answer must be
/// `expected`.
pub(crate) async fn closed_loop(
    addr: SocketAddr,
    connections: usize,
    expected: StatusCode,
    length: Length,
    make: MakeRequest,
) -> anyhow::Result<LoadReport> {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(0));
    let total = match length {
        Length::Total(total) => Some(total),
        Length::Timed { .. } => None,
    };
    let mut senders = Vec::with_capacity(connections);
    for _ in 0..connections {
        senders.push(connect(addr).await?);
    }
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for mut sender in senders {
        let (done, stop, next, make) = (done.clone(), stop.clone(), next.clone(), make.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let seq = next.fetch_add(1, Ordering::Relaxed);
                if total.is_some_and(|total| seq >= total) {
                    break;
                }
                if let Err(error) = exchange(&mut sender, make(seq), expected).await {
                    stop.store(true, Ordering::Relaxed);
                    return Err(error);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
    }
    let report = match length {
        Length::Timed { warmup, measure } => {
            tokio::time::sleep(warmup).await;
            let (before, from) = (done.load(Ordering::Relaxed), Instant::now());
            tokio::time::sleep(measure).await;
            let (after, elapsed) = (done.load(Ordering::Relaxed), from.elapsed());
            stop.store(true, Ordering::Relaxed);
            LoadReport { requests: after - before, elapsed }
        }
        Length::Total(total) => {
            while !tasks.is_empty() && !stop.load(Ordering::Relaxed) {
                if let Some(result) = tasks.join_next().await {
                    result??;
                }
            }
            LoadReport { requests: total, elapsed: started.elapsed() }
        }
    };
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(report)
}

/// Sends `total` requests at `rate` per second to `addr`, each stamped with its intended send
/// time; returns when every answer is in, with the time from each request's intended send to
/// its answer (ns, in sequence order). Connections are taken from a pool and opened when none
/// is free, so a slow answer never holds back the schedule.
pub(crate) async fn open_loop(
    addr: SocketAddr,
    rate: f64,
    total: u64,
    make: MakeTimedRequest,
) -> anyhow::Result<Vec<u64>> {
    open_loop_expecting(addr, rate, total, StatusCode::ACCEPTED, make).await
}

/// [`open_loop`] against a server whose accepted answer is `expected` (Dapr's publish: 204).
pub(crate) async fn open_loop_expecting(
    addr: SocketAddr,
    rate: f64,
    total: u64,
    expected: StatusCode,
    make: MakeTimedRequest,
) -> anyhow::Result<Vec<u64>> {
    let pool: Arc<Mutex<Vec<SendRequest<Full<Bytes>>>>> = Arc::default();
    for _ in 0..8 {
        let sender = connect(addr).await?;
        pool.lock().expect("pool").push(sender);
    }
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now() + Duration::from_millis(20);
    let (schedule, mut due) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    // A thread keeps the schedule: the runtime's timer has millisecond granularity, which
    // would add up to a millisecond to every measured latency.
    let clock = std::thread::spawn(move || {
        for seq in 0..total {
            let at = start + interval.mul_f64(seq as f64);
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
            if schedule.send((seq, at)).is_err() {
                return;
            }
        }
    });
    let failed = Arc::new(AtomicBool::new(false));
    let answered: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; total as usize]));
    let mut tasks = JoinSet::new();
    while let Some((seq, at)) = due.recv().await {
        let (pool, make, failed, answered) = (pool.clone(), make.clone(), failed.clone(), answered.clone());
        tasks.spawn(async move {
            if failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            // A pooled connection idle for long may have been closed by the server (its
            // keep-alive timeout), as any client's pool expects: skip it.
            let pooled = {
                let mut pool = pool.lock().expect("pool");
                std::iter::from_fn(|| pool.pop()).find(|sender| !sender.is_closed())
            };
            let mut sender = match pooled {
                Some(sender) => sender,
                None => connect(addr).await?,
            };
            let result = exchange(&mut sender, make(seq, nanos_since_epoch(at)), expected).await;
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
            } else {
                answered.lock().expect("answers")[seq as usize] = at.elapsed().as_nanos() as u64;
                pool.lock().expect("pool").push(sender);
            }
            result
        });
        while let Some(result) = tasks.try_join_next() {
            result??;
        }
    }
    clock.join().map_err(|_| anyhow::anyhow!("the schedule thread panicked"))?;
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let answered = std::mem::take(&mut *answered.lock().expect("answers"));
    Ok(answered)
}
