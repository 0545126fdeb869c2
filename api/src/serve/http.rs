//! The HTTP server under the router: an accept loop on hyper-util's auto builder (HTTP/1.1 and
//! HTTP/2 with prior knowledge, as `axum::serve` served), with the limits a client must not be
//! able to get around (`[http]` in the configuration, [`HttpLimits`]):
//!
//! - a connection limit: a connection over `max_connections` is closed as soon as it is
//!   accepted, so that clients cannot run the process out of file descriptors;
//! - a header-read timeout (hyper's own timer on HTTP/1, and a watch on every connection until
//!   its first request, which also covers the HTTP/2 preface): slowloris;
//! - an idle timeout: a connection with no request in flight is closed;
//! - a body-read timeout that slow but moving uploads extend: a request whose body stalls gets
//!   408;
//! - a concurrency limit: a request over `max_concurrent_requests` is answered 503 with
//!   `Retry-After` rather than queued (health, readiness and metrics are exempt, so that a busy
//!   node is not taken for a dead one);
//! - per-route body limits checked against `Content-Length` before the body is read, and
//!   counted while a chunked body streams in;
//! - a lingering close: a connection that closes with request bytes still unread is drained
//!   for a bounded time after the answer is written, so that a client still sending reads the
//!   answer (a 413) instead of a reset.
//!
//! Every limit hit is counted (`crate::metrics`).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::HttpLimits;
use crate::metrics::{self as http_metrics, RequestRefusal, TimeoutKind};
use crate::problem::ApiError;
use crate::routes::{content_length, RouteClass};
use crate::serve::tls::{Stream, Tls};

/// What the server needs besides the router: its limits and the body limits of the routes.
#[derive(Debug, Clone)]
pub(super) struct ServerLimits {
    /// `[http]`.
    pub(super) http: HttpLimits,
    /// The largest batch (and webhook) request body: the limit of ingest and webhook routes.
    pub(super) max_batch_bytes: usize,
}

/// How long the connections get to finish once the listener closed, before they are dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` (over TLS with `tls`) until `stop` turns true; then stops
/// accepting, asks every connection to finish (HTTP/1 closes once its request is answered,
/// HTTP/2 gets a GOAWAY), and returns once they did or after [`CLOSE_WAIT`].
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    tls: Option<Arc<Tls>>,
    mut stop: watch::Receiver<bool>,
) {
    let limits = Arc::new(limits);
    let builder = Arc::new(builder(&limits.http));
    let connections = Arc::new(Semaphore::new(limits.http.max_connections));
    let requests = Arc::new(Semaphore::new(limits.http.max_concurrent_requests));
    let (closing, _) = watch::channel(false);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error).await;
                    continue;
                }
            },
            () = turned_true(&mut stop) => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            // Closed at once: holding it open (even to answer) is what the limit prevents.
            http_metrics::connection_refused();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: builder.clone(),
            app: app.clone(),
            limits: limits.clone(),
            requests: requests.clone(),
            closing: closing.subscribe(),
            tls: tls.clone(),
        };
        tokio::spawn(connection.run(stream, permit));
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds one permit until it ends: all of them back means all ended.
    let all = u32::try_from(limits.http.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(CLOSE_WAIT, connections.acquire_many(all)).await.is_err() {
        tracing::info!(
            open = limits.http.max_connections.saturating_sub(connections.available_permits()),
            "closing the connections still open"
        );
    }
}

/// Resolves once the flag is true (or its sender is gone).
async fn turned_true(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|value| *value).await;
}

fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accept fails when the process is out of file descriptors (or the peer went away before it
/// was accepted): wait a little rather than spin, as `axum::serve` does.
async fn accept_failed(error: io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionRefused
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One accepted connection and what it shares with the server.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    limits: Arc<ServerLimits>,
    requests: Arc<Semaphore>,
    closing: watch::Receiver<bool>,
    tls: Option<Arc<Tls>>,
}

/// Why a connection task ends on its own clock.
enum Expired {
    /// Its first request's headers did not arrive in time.
    Header,
    /// No request in flight for the idle timeout.
    Idle,
    /// It was asked to finish and did not in time.
    Closing,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, _permit: OwnedSemaphorePermit) {
        let _open = http_metrics::OpenConnection::open();
        // The handshake has the header-read timeout of its own; the request's clock starts after.
        let stream = match &self.tls {
            None => Stream::Plain(stream),
            Some(tls) => match tls.handshake(stream, self.limits.http.header_read_timeout).await {
                Some(stream) => Stream::Tls(Box::new(stream)),
                None => return,
            },
        };
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(LingeringStream::new(stream, activity.clone(), self.limits.http.lingering_close));
        let service = RequestService {
            app: self.app.clone(),
            limits: self.limits.clone(),
            requests: self.requests.clone(),
            activity: activity.clone(),
        };
        let builder = self.builder.clone();
        let connection = builder.serve_connection(
            io,
            hyper::service::service_fn(move |request| {
                let service = service.clone();
                async move { Ok::<_, Infallible>(service.handle(request).await) }
            }),
        );
        tokio::pin!(connection);
        // Set once the connection was asked to finish: it then has until this instant.
        let mut finish_by: Option<Instant> = None;
        let http = self.limits.http.clone();
        loop {
            let expiry = async {
                match finish_by {
                    Some(deadline) => {
                        tokio::time::sleep_until(deadline).await;
                        Expired::Closing
                    }
                    None => activity.expired(&http).await,
                }
            };
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        connection_error(&*error, &activity);
                    }
                    return;
                }
                () = turned_true(&mut self.closing), if finish_by.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    finish_by = Some(Instant::now() + CLOSE_WAIT);
                }
                expired = expiry => match expired {
                    Expired::Header => {
                        // A client that never finished its headers gets no answer: it is
                        // disconnected.
                        http_metrics::timed_out(TimeoutKind::Header);
                        return;
                    }
                    Expired::Idle => {
                        http_metrics::timed_out(TimeoutKind::Idle);
                        connection.as_mut().graceful_shutdown();
                        finish_by = Some(Instant::now() + http.lingering_close + Duration::from_secs(1));
                    }
                    Expired::Closing => return,
                },
            }
        }
    }
}

/// A connection ended in an error: hyper's header-read timeout is counted (as `idle` when the
/// client had sent nothing since its last answer); the rest (resets, malformed requests hyper
/// answered itself) are the client's business.
fn connection_error(error: &(dyn std::error::Error + 'static), activity: &Activity) {
    if error.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_timeout) {
        let kind =
            if activity.read_since_idle.load(Ordering::Acquire) { TimeoutKind::Header } else { TimeoutKind::Idle };
        http_metrics::timed_out(kind);
    } else {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// What a connection's watch needs to know about its requests.
struct Activity {
    opened: Instant,
    /// Requests whose answer is not yet fully written.
    in_flight: AtomicUsize,
    /// Whether any request arrived on this connection.
    served: AtomicBool,
    /// Milliseconds from `opened` to when the last request finished.
    idle_since_ms: AtomicU64,
    /// Whether the client sent bytes since the connection went idle.
    read_since_idle: AtomicBool,
    /// Woken when a request finishes.
    finished: Notify,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
            read_since_idle: AtomicBool::new(false),
            finished: Notify::new(),
        }
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.served.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    /// Resolves when the connection has been idle too long: before its first request, for the
    /// header-read timeout (the idle timeout if shorter); after, for the idle timeout.
    async fn expired(&self, limits: &HttpLimits) -> Expired {
        loop {
            if self.in_flight.load(Ordering::Acquire) > 0 {
                self.finished.notified().await;
                continue;
            }
            let (deadline, expired) = if self.served.load(Ordering::Acquire) {
                let since = self.opened + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
                (since + limits.idle_timeout, Expired::Idle)
            } else if limits.header_read_timeout <= limits.idle_timeout {
                (self.opened + limits.header_read_timeout, Expired::Header)
            } else {
                (self.opened + limits.idle_timeout, Expired::Idle)
            };
            if Instant::now() >= deadline {
                return expired;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.finished.notified() => {}
            }
        }
    }
}

/// A request in flight on a connection, until its answer is written (or dropped).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let idle_since = u64::try_from(activity.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.idle_since_ms.store(idle_since, Ordering::Release);
        activity.read_since_idle.store(false, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        activity.finished.notify_one();
    }
}

/// Per request: the concurrency limit, the route's body limit, the body-read timeout.
#[derive(Clone)]
struct RequestService {
    app: Router,
    limits: Arc<ServerLimits>,
    requests: Arc<Semaphore>,
    activity: Arc<Activity>,
}

impl RequestService {
    async fn handle(&self, request: Request<Incoming>) -> Response<AnsweredBody> {
        let in_flight = self.activity.request_started();
        let class = RouteClass::of(request.method(), request.uri().path());
        let permit = match class {
            RouteClass::Operations => None,
            _ => match self.requests.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    http_metrics::request_refused(RequestRefusal::Overloaded);
                    let limit = self.limits.http.max_concurrent_requests;
                    let answer = ApiError::unavailable(
                        format!(
                            "the server is handling its limit of {limit} concurrent requests (http.max_concurrent_requests); retry later"
                        ),
                        1,
                    );
                    return AnsweredBody::wrap(answer.into_response(), None, in_flight);
                }
            },
        };
        let body_limit = self.body_limit(class);
        // Ingest and webhooks check `Content-Length` themselves, after what the headers alone
        // can refuse (an unknown broker or source), against the limit of the request's content
        // mode, with admission's words; the batch limit here is only their backstop.
        let handler_checks_length = matches!(class, RouteClass::Ingest | RouteClass::Webhook);
        if !handler_checks_length {
            if let Some(answer) = refuse_by_content_length(request.headers(), body_limit) {
                return AnsweredBody::wrap(answer, permit, in_flight);
            }
        }
        let watch = Arc::new(BodyWatch::default());
        let http = &self.limits.http;
        let request = request.map(|incoming| {
            AxumBody::new(WatchedBody {
                inner: incoming,
                received: 0,
                limit: body_limit.bytes,
                deadline: Box::pin(tokio::time::sleep(http.body_read_timeout)),
                min_bytes_per_sec: http.body_min_bytes_per_sec,
                watch: watch.clone(),
            })
        });
        let mut app = self.app.clone();
        let response = match app.call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
        let response = if watch.timed_out.load(Ordering::Acquire) {
            http_metrics::timed_out(TimeoutKind::Body);
            let timeout = http.body_read_timeout.as_secs();
            let rate = http.body_min_bytes_per_sec;
            let mut answer = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive in time: {timeout} s (http.body_read_timeout_secs), plus 1 s per {rate} bytes received (http.body_min_bytes_per_sec)"
                ),
            )
            .into_response();
            answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            answer
        } else if watch.too_large.load(Ordering::Acquire) && !handler_checks_length {
            // The handler saw its body cut off: the answer names the limit that cut it (ingest
            // and webhooks name their own limits, which are never above this one).
            body_limit.refusal()
        } else {
            response
        };
        AnsweredBody::wrap(response, permit, in_flight)
    }

    fn body_limit(&self, class: RouteClass) -> BodyLimit {
        match class {
            RouteClass::Operations | RouteClass::Api => {
                BodyLimit { bytes: self.limits.http.max_api_body_bytes, setting: "http.max_api_body_bytes" }
            }
            RouteClass::Ingest | RouteClass::Webhook => {
                BodyLimit { bytes: self.limits.max_batch_bytes, setting: "max_batch_bytes" }
            }
        }
    }
}

/// A route's largest request body and the setting that raises it.
#[derive(Debug, Clone, Copy)]
struct BodyLimit {
    bytes: usize,
    setting: &'static str,
}

impl BodyLimit {
    fn refusal(self) -> Response<AxumBody> {
        http_metrics::request_refused(RequestRefusal::TooLarge);
        let BodyLimit { bytes, setting } = self;
        ApiError::too_large(format!("the request body exceeds the limit of {bytes} bytes ({setting})")).into_response()
    }
}

/// A 413 before anything is read when the declared length is over the limit.
fn refuse_by_content_length(headers: &HeaderMap, limit: BodyLimit) -> Option<Response<AxumBody>> {
    let length = content_length(headers)?;
    (length > u64::try_from(limit.bytes).unwrap_or(u64::MAX)).then(|| limit.refusal())
}

/// What the request body ran into, for the answer.
#[derive(Default)]
struct BodyWatch {
    timed_out: AtomicBool,
    too_large: AtomicBool,
}

/// The request body as handlers read it: cut off at the route's limit, and failed once it has
/// not arrived by its deadline (the body-read timeout, moved on by each frame's bytes at the
/// minimum rate).
struct WatchedBody {
    inner: Incoming,
    received: usize,
    limit: usize,
    deadline: Pin<Box<Sleep>>,
    min_bytes_per_sec: u64,
    watch: Arc<BodyWatch>,
}

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body did not arrive in time")]
    TimedOut,
    #[error("the request body exceeds the limit of {0} bytes")]
    TooLarge(usize),
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
}

impl Body for WatchedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received = this.received.saturating_add(data.len());
                    if this.received > this.limit {
                        this.watch.too_large.store(true, Ordering::Release);
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
                    }
                    let bytes = u64::try_from(data.len()).unwrap_or(u64::MAX);
                    let allowance = Duration::from_micros(bytes.saturating_mul(1_000_000) / this.min_bytes_per_sec);
                    let deadline = this.deadline.deadline() + allowance;
                    this.deadline.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other.map(|result| result.map_err(BodyError::from))),
            Poll::Pending => {
                ready!(this.deadline.as_mut().poll(cx));
                this.watch.timed_out.store(true, Ordering::Release);
                Poll::Ready(Some(Err(BodyError::TimedOut)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer's body, holding the request's concurrency permit and its place among the
/// connection's requests in flight until it is written.
struct AnsweredBody {
    inner: AxumBody,
    _permit: Option<OwnedSemaphorePermit>,
    _in_flight: InFlight,
}

impl AnsweredBody {
    fn wrap(
        response: Response<AxumBody>,
        permit: Option<OwnedSemaphorePermit>,
        in_flight: InFlight,
    ) -> Response<AnsweredBody> {
        response.map(|inner| AnsweredBody { inner, _permit: permit, _in_flight: in_flight })
    }
}

impl Body for AnsweredBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The TCP stream, noting what the client sends, and closing with a lingering close: once
/// hyper is done with the connection, the write side is shut (the client reads the answer and
/// an end of stream), then what the client still sends is read and discarded until it closes
/// too or `linger` passes. Closing a socket with unread bytes would reset it, and a reset can
/// destroy the answer before the client reads it.
struct LingeringStream {
    stream: Stream,
    activity: Arc<Activity>,
    linger: Duration,
    closing: Closing,
}

enum Closing {
    Open,
    Draining(Pin<Box<Sleep>>),
    Closed,
}

impl LingeringStream {
    fn new(stream: Stream, activity: Arc<Activity>, linger: Duration) -> LingeringStream {
        LingeringStream { stream, activity, linger, closing: Closing::Open }
    }
}

impl AsyncRead for LingeringStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = ready!(Pin::new(&mut self.stream).poll_read(cx, buf));
        if buf.filled().len() > before {
            self.activity.read_since_idle.store(true, Ordering::Release);
        }
        Poll::Ready(result)
    }
}

impl AsyncWrite for LingeringStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.closing {
                Closing::Open => {
                    ready!(Pin::new(&mut this.stream).poll_shutdown(cx))?;
                    this.closing = Closing::Draining(Box::pin(tokio::time::sleep(this.linger)));
                }
                Closing::Draining(deadline) => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        this.closing = Closing::Closed;
                        continue;
                    }
                    let mut scratch = [0u8; 8192];
                    let mut discard = ReadBuf::new(&mut scratch);
                    match ready!(Pin::new(&mut this.stream).poll_read(cx, &mut discard)) {
                        // Read more: the next read registers the waker, or finds the end.
                        Ok(()) if !discard.filled().is_empty() => continue,
                        // The client closed too (or failed): nothing more to wait for.
                        Ok(()) | Err(_) => this.closing = Closing::Closed,
                    }
                }
                Closing::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_is_read_and_garbage_is_none() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_length(&headers), None);
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("2048"));
        assert_eq!(content_length(&headers), Some(2048));
        let limit = BodyLimit { bytes: 1024, setting: "http.max_api_body_bytes" };
        let refused = refuse_by_content_length(&headers, limit).expect("over the limit");
        assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(refuse_by_content_length(&headers, BodyLimit { bytes: 2048, ..limit }).is_none());
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("lots"));
        assert_eq!(content_length(&headers), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_sends_a_request_expires_at_the_header_timeout_then_idle_after_one() {
        let limits = HttpLimits {
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            ..HttpLimits::default()
        };
        let activity = Arc::new(Activity::new());
        let started = Instant::now();
        assert!(matches!(activity.expired(&limits).await, Expired::Header));
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        let request = activity.request_started();
        let waiting = tokio::spawn({
            let activity = activity.clone();
            let limits = limits.clone();
            async move { activity.expired(&limits).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!waiting.is_finished(), "a request in flight is never idle");
        drop(request);
        let finished = Instant::now();
        assert!(matches!(waiting.await.unwrap(), Expired::Idle));
        assert_eq!(finished.elapsed(), Duration::from_secs(10));
    }
}
