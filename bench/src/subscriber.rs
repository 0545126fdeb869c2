//! The latency subscriber: a minimal hyper HTTP/1.1 server in the bench process that records,
//! for each delivered event, the time from its intended send (`ce-benchsent`, ns since the
//! process epoch) to its arrival. Answers 200 with no body.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::load::nanos_since_epoch;

/// Latencies by event sequence number, in nanoseconds (the first delivery of each).
type Samples = Arc<Mutex<HashMap<u64, u64>>>;

/// A running latency subscriber; stops accepting when dropped.
pub(crate) struct LatencySubscriber {
    /// `http://ADDR/`.
    pub(crate) url: String,
    samples: Samples,
    requests: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl LatencySubscriber {
    /// Listens on a loopback port.
    pub(crate) async fn start() -> anyhow::Result<LatencySubscriber> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let samples = Samples::default();
        let requests = Arc::new(AtomicU64::new(0));
        let (recorded, counted) = (samples.clone(), requests.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let (recorded, counted) = (recorded.clone(), counted.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (recorded, counted) = (recorded.clone(), counted.clone());
                    async move {
                        let header =
                            |name: &str| -> Option<u64> { request.headers().get(name)?.to_str().ok()?.parse().ok() };
                        let (seq, sent) = (header("ce-id"), header("ce-benchsent"));
                        let _ = request.into_body().collect().await;
                        let arrived = nanos_since_epoch(std::time::Instant::now());
                        if let (Some(seq), Some(sent)) = (seq, sent) {
                            recorded.lock().expect("samples").entry(seq).or_insert(arrived.saturating_sub(sent));
                        }
                        counted.fetch_add(1, Ordering::Relaxed);
                        let mut response = Response::new(Empty::<Bytes>::new());
                        *response.status_mut() = StatusCode::OK;
                        Ok::<_, Infallible>(response)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(LatencySubscriber { url: format!("http://{addr}/"), samples, requests, accept })
    }

    /// Every request received, timed or not.
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// How many distinct events arrived.
    pub(crate) fn count(&self) -> usize {
        self.samples.lock().expect("samples").len()
    }

    /// The latencies of events `from..to`, in nanoseconds, sorted; and how many are missing.
    pub(crate) fn latencies(&self, from: u64, to: u64) -> (Vec<u64>, u64) {
        let samples = self.samples.lock().expect("samples");
        let mut latencies: Vec<u64> = (from..to).filter_map(|seq| samples.get(&seq).copied()).collect();
        latencies.sort_unstable();
        let missing = (to - from) - latencies.len() as u64;
        (latencies, missing)
    }
}

impl Drop for LatencySubscriber {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
