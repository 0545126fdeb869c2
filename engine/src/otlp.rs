//! OTLP/HTTP export of the broker's spans (ingest, delivery attempts) in the OTLP **JSON**
//! encoding: `POST {endpoint}/v1/traces` with `application/json`, about once a second.
//!
//! Written by hand over the HTTP client the binary already has, rather than with the
//! OpenTelemetry SDK: the broker only ever reports finished spans whose ids it chose itself,
//! which needs none of the SDK's context machinery, and the SDK's dependency tree would cost
//! minutes of compile time for that.
//!
//! Export never slows the data path: spans go through a bounded queue and are dropped (and
//! counted) when it is full or the collector is unreachable; a failed batch is not retried.
//!
//! Sampling follows the caller, like OpenTelemetry's default parent-based sampler: only spans of
//! traces whose `sampled` flag is set are exported. The broker makes no sampling decision of its
//! own, and the flag goes on downstream unchanged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use switchyard_event::tracecontext::{Span, SpanKind, SpanSink, SpanValue, FLAG_SAMPLED};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use url::Url;

/// Spans waiting for export; beyond this they are dropped.
const QUEUE: usize = 8192;
/// Spans per request.
const MAX_BATCH: usize = 512;
/// How often queued spans are sent.
const INTERVAL: Duration = Duration::from_secs(1);
/// The longest one export request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// OTLP `Span.SpanKind`.
const KIND_SERVER: u32 = 2;
const KIND_CLIENT: u32 = 3;
/// OTLP `Status.StatusCode` for an error (success leaves the status unset, as the
/// OpenTelemetry guidance for instrumentation says).
const STATUS_ERROR: u32 = 2;

/// The running exporter: a [`SpanSink`] for the data path, and a task that sends batches.
pub struct OtlpExporter {
    sink: Arc<QueueSink>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct QueueSink {
    queue: mpsc::Sender<Span>,
    dropped: AtomicU64,
}

impl SpanSink for QueueSink {
    fn record(&self, span: Span) {
        if span.flags & FLAG_SAMPLED == 0 {
            return;
        }
        if self.queue.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl OtlpExporter {
    /// Starts exporting to the collector at `endpoint` (the OTLP/HTTP base URL, e.g.
    /// `http://127.0.0.1:4318`; a URL already ending in `/v1/traces` is used as it is).
    pub fn start(endpoint: &Url) -> Result<OtlpExporter, reqwest::Error> {
        // Its name is resolved through the outbound guard, so it cannot be rebound to an
        // address the guard refuses; a literal address is the operator's own choice.
        let builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        let client =
            switchyard_dispatcher::outbound::guard(builder, switchyard_dispatcher::outbound::installed(), None)
                .build()?;
        let (queue, spans) = mpsc::channel(QUEUE);
        let sink = Arc::new(QueueSink { queue, dropped: AtomicU64::new(0) });
        let (stop, stopped) = oneshot::channel();
        let url = traces_url(endpoint);
        tracing::info!(url = %switchyard_meta::secret::shown_url(&url), "exporting spans over OTLP/HTTP");
        let task = tokio::spawn(run(client, url, spans, sink.clone(), stopped));
        Ok(OtlpExporter { sink, stop, task })
    }

    /// Where the data path reports finished spans.
    pub fn sink(&self) -> Arc<dyn SpanSink> {
        self.sink.clone()
    }

    /// Sends what is queued, then stops.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// `{endpoint}/v1/traces`, the OTLP/HTTP traces path below a base URL.
fn traces_url(endpoint: &Url) -> String {
    let base = endpoint.as_str().trim_end_matches('/');
    if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    }
}

async fn run(
    client: reqwest::Client,
    url: String,
    mut spans: mpsc::Receiver<Span>,
    sink: Arc<QueueSink>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut exporter = Exporter { client, url, failing: false, dropped_reported: 0 };
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => exporter.flush(&mut batch, &sink).await,
            span = spans.recv() => match span {
                Some(span) => {
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        exporter.flush(&mut batch, &sink).await;
                    }
                }
                None => break,
            },
            _ = &mut stopped => {
                while let Ok(span) = spans.try_recv() {
                    batch.push(span);
                    if batch.len() >= MAX_BATCH {
                        exporter.flush(&mut batch, &sink).await;
                    }
                }
                break;
            }
        }
    }
    exporter.flush(&mut batch, &sink).await;
}

struct Exporter {
    client: reqwest::Client,
    url: String,
    /// Whether the last export failed, so a down collector is logged once, not every second.
    failing: bool,
    dropped_reported: u64,
}

impl Exporter {
    async fn flush(&mut self, batch: &mut Vec<Span>, sink: &QueueSink) {
        let dropped = sink.dropped.load(Ordering::Relaxed);
        if dropped > self.dropped_reported {
            tracing::warn!(dropped = dropped - self.dropped_reported, "spans dropped: the OTLP export queue was full");
            self.dropped_reported = dropped;
        }
        if batch.is_empty() {
            return;
        }
        let body = encode(batch);
        let count = batch.len();
        batch.clear();
        let result = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match result {
            Ok(_) if self.failing => {
                self.failing = false;
                tracing::info!(url = %switchyard_meta::secret::shown_url(&self.url), "OTLP export works again");
            }
            Ok(_) => {}
            Err(error) => {
                if !self.failing {
                    tracing::warn!(url = %switchyard_meta::secret::shown_url(&self.url), %error, spans = count, "OTLP export failed; spans are dropped until it works");
                }
                self.failing = true;
            }
        }
    }
}

/// The OTLP/JSON `ExportTraceServiceRequest` for `spans` (OTLP specification, "JSON Protobuf
/// Encoding": trace and span ids are hex strings, not base64; enums are integers; 64-bit
/// integers are strings).
pub fn encode(spans: &[Span]) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    json!({
        "resourceSpans": [{
            "resource": {
                "attributes": [
                    attribute("service.name", &SpanValue::String("switchyard".to_owned())),
                    attribute("service.version", &SpanValue::String(version.to_owned())),
                ],
            },
            "scopeSpans": [{
                "scope": { "name": "switchyard", "version": version },
                "spans": spans.iter().map(span).collect::<Vec<_>>(),
            }],
        }],
    })
}

fn span(span: &Span) -> Value {
    let mut value = json!({
        "traceId": span.trace_id.to_string(),
        "spanId": span.span_id.to_string(),
        "parentSpanId": span.parent_span_id.to_string(),
        "name": span.name,
        "kind": match span.kind { SpanKind::Server => KIND_SERVER, SpanKind::Client => KIND_CLIENT },
        "startTimeUnixNano": unix_nanos(span.start).to_string(),
        "endTimeUnixNano": unix_nanos(span.end).to_string(),
        "attributes": span.attributes.iter().map(|(key, value)| attribute(key, value)).collect::<Vec<_>>(),
    });
    if let Some(tracestate) = &span.tracestate {
        value["traceState"] = json!(tracestate);
    }
    if let Some(error) = &span.error {
        value["status"] = json!({ "code": STATUS_ERROR, "message": error });
    }
    value
}

fn attribute(key: &str, value: &SpanValue) -> Value {
    let value = match value {
        SpanValue::String(text) => json!({ "stringValue": text }),
        SpanValue::Int(number) => json!({ "intValue": number.to_string() }),
    };
    json!({ "key": key, "value": value })
}

fn unix_nanos(time: SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use switchyard_event::tracecontext::{SpanId, TraceId};

    use super::*;

    #[test]
    fn spans_encode_as_otlp_json_with_hex_ids() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = Span {
            trace_id: TraceId::from_bytes([0x4b; 16]).unwrap(),
            span_id: SpanId::from_bytes([1, 2, 3, 4, 5, 6, 7, 8]).unwrap(),
            parent_span_id: SpanId::from_bytes([0xab; 8]).unwrap(),
            tracestate: Some("congo=t61rcWkgMzE".into()),
            flags: 1,
            name: "deliver",
            kind: SpanKind::Client,
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![
                ("url.full", SpanValue::String("http://127.0.0.1:9000/".into())),
                ("http.response.status_code", SpanValue::Int(503)),
            ],
            error: Some("503 Service Unavailable".into()),
        };
        let body = encode(&[span]);
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            resource["resource"]["attributes"][0],
            json!({"key": "service.name", "value": {"stringValue": "switchyard"}})
        );
        let span = &resource["scopeSpans"][0]["spans"][0];
        assert_eq!(span["traceId"], "4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b");
        assert_eq!(span["spanId"], "0102030405060708");
        assert_eq!(span["parentSpanId"], "abababababababab");
        assert_eq!(span["traceState"], "congo=t61rcWkgMzE");
        assert_eq!(span["kind"], 3);
        assert_eq!(span["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(span["endTimeUnixNano"], "1700000000128456789");
        assert_eq!(span["attributes"][1], json!({"key": "http.response.status_code", "value": {"intValue": "503"}}));
        assert_eq!(span["status"], json!({"code": 2, "message": "503 Service Unavailable"}));
    }

    #[tokio::test]
    async fn only_spans_of_sampled_traces_are_queued() {
        let (queue, mut spans) = mpsc::channel(4);
        let sink = QueueSink { queue, dropped: AtomicU64::new(0) };
        let span = |flags| Span {
            trace_id: TraceId::from_bytes([1; 16]).unwrap(),
            span_id: SpanId::from_bytes([2; 8]).unwrap(),
            parent_span_id: SpanId::from_bytes([3; 8]).unwrap(),
            tracestate: None,
            flags,
            name: "ingest",
            kind: SpanKind::Server,
            start: UNIX_EPOCH,
            end: UNIX_EPOCH,
            attributes: Vec::new(),
            error: None,
        };
        sink.record(span(0));
        sink.record(span(FLAG_SAMPLED));
        assert_eq!(spans.try_recv().map(|s| s.flags), Ok(FLAG_SAMPLED));
        assert!(spans.try_recv().is_err());
    }

    #[test]
    fn the_traces_path_goes_below_the_base_url_once() {
        let url = |s: &str| traces_url(&Url::parse(s).unwrap());
        assert_eq!(url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(url("http://collector:4318/otlp/"), "http://collector:4318/otlp/v1/traces");
        assert_eq!(url("https://collector/v1/traces"), "https://collector/v1/traces");
    }
}
