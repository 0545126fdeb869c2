//! Prometheus `/metrics`: the exporter behind the `metrics` facade that the log, the engine,
//! the dispatcher and the sources record into, the HTTP-level series of ingest requests, and
//! the per-trigger backlog gauges, computed when scraped (so a deleted trigger's series
//! disappear with it).
//!
//! Names follow `switchyard_<thing>_<unit>[_total]`; every label is a closed set except the
//! backlog gauges' `namespace`/`trigger`, which are bounded by the declared triggers.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::Duration;

use axum::http::StatusCode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use switchyard_dispatcher::{metrics as dispatch, Backlog};

/// Ingest requests refused, by `reason` (the answer's status).
pub const INGEST_REJECTED: &str = "switchyard_ingest_rejected_requests_total";
/// Time to answer an ingest request (accepted or not), including the durable append.
pub const INGEST_DURATION: &str = "switchyard_ingest_duration_seconds";
/// Open HTTP connections.
pub const HTTP_CONNECTIONS_OPEN: &str = "switchyard_http_connections_open";
/// Connections closed as soon as accepted: over `http.max_connections`.
pub const HTTP_CONNECTIONS_REFUSED: &str = "switchyard_http_connections_refused_total";
/// Connections closed or requests answered 408 on a timeout, by `kind` ([`TimeoutKind`]).
pub const HTTP_TIMEOUTS: &str = "switchyard_http_timeouts_total";
/// Requests the HTTP server refused before their handler ran (or in place of its answer), by
/// `reason` ([`RequestRefusal`]).
pub const HTTP_REQUESTS_REFUSED: &str = "switchyard_http_requests_refused_total";

/// Latencies from 100 µs to 60 s: every histogram whose name ends in `_seconds`.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Counts from 1 to 1024 (e.g. appends per fsync): every other histogram counts things.
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// How often histogram samples are folded into the buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The process-wide exporter, installed on first use (the `metrics` facade has one global
/// recorder; a second server in the same process shares it). Series get their help text from
/// `switchyard_engine::metrics::describe` once the log is open.
pub fn exporter() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(COUNT_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS))
            .expect("bucket lists are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Only fails when another recorder is installed: then ours stays empty, which the
        // scrape makes visible, rather than failing the server.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics shows only the backlog");
        }
        metrics::describe_counter!(INGEST_REJECTED, "Ingest requests refused, by reason.");
        metrics::describe_histogram!(INGEST_DURATION, metrics::Unit::Seconds, "Time to answer an ingest request.");
        metrics::describe_gauge!(HTTP_CONNECTIONS_OPEN, "Open HTTP connections.");
        metrics::describe_counter!(
            crate::auth::AUTH_REFUSED,
            "Requests refused by authentication, authorization or the browser guards, by reason."
        );
        metrics::describe_counter!(
            crate::oidc::JWKS_FETCH_FAILURES,
            "Failed fetches of an OIDC issuer's keys (discovery or JWKS)."
        );
        metrics::describe_counter!(
            HTTP_CONNECTIONS_REFUSED,
            "HTTP connections closed as soon as accepted, over http.max_connections."
        );
        metrics::describe_counter!(
            HTTP_TIMEOUTS,
            "HTTP timeouts, by kind: header (connection closed), body (request answered 408), idle (connection closed)."
        );
        metrics::describe_counter!(
            HTTP_REQUESTS_REFUSED,
            "HTTP requests refused by the server's limits, by reason: overloaded (503, http.max_concurrent_requests), too_large (413, a route's body limit)."
        );
        let upkeep = handle.clone();
        std::thread::Builder::new()
            .name("metrics-upkeep".to_owned())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            })
            .expect("cannot start the metrics upkeep thread");
        handle
    })
}

/// Records an ingest request's answer time and, when refused, why (from its status: every
/// refusal of ingest has its own).
pub fn ingest_answered(status: StatusCode, elapsed: Duration) {
    metrics::histogram!(INGEST_DURATION).record(elapsed.as_secs_f64());
    let reason = match status.as_u16() {
        200..=299 => return,
        400 => "invalid_event",
        404 => "unknown_broker",
        405 => "method_not_allowed",
        413 => "too_large",
        415 => "unsupported_media_type",
        503 => "unavailable",
        _ => "internal_error",
    };
    metrics::counter!(INGEST_REJECTED, "reason" => reason).increment(1);
}

/// Which HTTP timeout expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// A request's headers did not arrive in time: the connection is closed.
    Header,
    /// A request's body did not arrive in time: 408.
    Body,
    /// No request on a connection for the idle timeout: it is closed.
    Idle,
}

/// Why the HTTP server refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestRefusal {
    /// Over the concurrency limit: 503.
    Overloaded,
    /// Over the route's body limit: 413.
    TooLarge,
}

/// Counts a connection closed at once over the connection limit.
pub fn connection_refused() {
    metrics::counter!(HTTP_CONNECTIONS_REFUSED).increment(1);
}

/// Counts an HTTP timeout.
pub fn timed_out(kind: TimeoutKind) {
    let kind = match kind {
        TimeoutKind::Header => "header",
        TimeoutKind::Body => "body",
        TimeoutKind::Idle => "idle",
    };
    metrics::counter!(HTTP_TIMEOUTS, "kind" => kind).increment(1);
}

/// Counts a request the server's limits refused.
pub fn request_refused(reason: RequestRefusal) {
    let reason = match reason {
        RequestRefusal::Overloaded => "overloaded",
        RequestRefusal::TooLarge => "too_large",
    };
    metrics::counter!(HTTP_REQUESTS_REFUSED, "reason" => reason).increment(1);
}

/// An open connection, counted in [`HTTP_CONNECTIONS_OPEN`] while it lives.
pub struct OpenConnection(());

impl OpenConnection {
    /// Counts one more open connection.
    pub fn open() -> OpenConnection {
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).increment(1.0);
        OpenConnection(())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// The exposition: everything recorded, then the backlog gauges.
pub fn render(backlogs: &[Backlog]) -> String {
    let mut text = exporter().render();
    trigger_gauge(
        &mut text,
        dispatch::TRIGGER_BACKLOG,
        "Events between a trigger's committed position and the end of its broker's log.",
        backlogs,
        |backlog| backlog.events as f64,
    );
    trigger_gauge(
        &mut text,
        dispatch::TRIGGER_BACKLOG_AGE,
        "Age of the oldest event a trigger has read and not yet delivered or dead-lettered.",
        backlogs,
        |backlog| backlog.oldest_age.as_secs_f64(),
    );
    text
}

fn trigger_gauge(text: &mut String, name: &str, help: &str, backlogs: &[Backlog], value: impl Fn(&Backlog) -> f64) {
    let _ = writeln!(text, "# HELP {name} {help}");
    let _ = writeln!(text, "# TYPE {name} gauge");
    for backlog in backlogs {
        let _ = writeln!(text, "{name}{{{}}} {}", labels(backlog), value(backlog));
    }
}

/// Namespaces and trigger names are DNS labels: nothing to escape.
fn labels(backlog: &Backlog) -> String {
    format!("namespace=\"{}\",trigger=\"{}\"", backlog.namespace, backlog.name)
}
