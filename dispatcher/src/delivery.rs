//! Delivering one event until its outcome is final: attempts under the retry policy, replies
//! written back to the broker, then the dead-letter sink, then the dead-letter store. Nothing
//! leaves this module without a final outcome, so the worker may count it done.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use switchyard_event::{knative, AttrValue, Event};
use switchyard_log::backoff::ExponentialBackoff;
use switchyard_log::{Admit, Admitted, DeadLetter, DeadLetterStore, EventLog, Origin};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::http_client::{trace_id, Answer, Attempt, DeliveryClient, Target};
use crate::retry::{Failure, Verdict};
use crate::{metrics, TriggerPlan, TriggerRef};

/// The first and the longest pause between attempts to write a dead letter to a failing store.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// What one trigger's deliveries share.
pub(crate) struct Context {
    pub(crate) trigger: TriggerRef,
    pub(crate) plan: TriggerPlan,
    /// `namespace/name`, for logs and the dead-letter store.
    scope: String,
    subscriber: Target,
    dead_letter_sink: Option<Target>,
    client: DeliveryClient,
    pub(crate) log: Arc<dyn EventLog>,
    admission: Arc<dyn Admit>,
    pub(crate) dead_letters: Arc<dyn DeadLetterStore>,
    /// `maxInFlight`: held for the length of one attempt, released while waiting to retry, so
    /// a retrying event does not keep others from being sent.
    in_flight: Semaphore,
    rate: Option<RateLimiter>,
    /// Dead letters being redriven, so two redrive requests do not deliver one twice.
    pub(crate) redriving: Mutex<HashSet<String>>,
}

impl Context {
    pub(crate) fn new(
        trigger: TriggerRef,
        plan: TriggerPlan,
        client: DeliveryClient,
        log: Arc<dyn EventLog>,
        admission: Arc<dyn Admit>,
    ) -> Context {
        let delivery = &plan.delivery;
        let target = |url: &url::Url| Target {
            url: url.clone(),
            format: delivery.format,
            namespace: trigger.namespace.clone(),
            timeout: delivery.timeout,
        };
        Context {
            scope: trigger.key(),
            subscriber: target(&plan.subscriber),
            dead_letter_sink: delivery.dead_letter_sink.as_ref().map(target),
            in_flight: Semaphore::new(delivery.max_in_flight.max(1) as usize),
            rate: delivery.rate_limit.map(RateLimiter::new),
            dead_letters: log.dead_letters(),
            trigger,
            plan,
            client,
            log,
            admission,
            redriving: Mutex::default(),
        }
    }

    /// `namespace/name`.
    pub(crate) fn scope(&self) -> &str {
        &self.scope
    }
}

/// Why attempts stopped.
struct Exhausted {
    failure: Failure,
    attempts: u32,
}

impl Exhausted {
    fn reason(&self) -> String {
        let plural = if self.attempts == 1 { "" } else { "s" };
        format!("{} after {} attempt{plural}", self.failure, self.attempts)
    }
}

/// Where a successful attempt's reply goes, if it carries one.
#[derive(Clone, Copy)]
enum Replies {
    /// Into the broker, through admission, as a reply (or a redriven event's reply) to an
    /// event with this hop budget.
    Admit { ttl: i32, redrive: bool },
    /// Nowhere: the dead-letter sink's answers are not replies.
    Ignore,
}

/// Delivers an event read from the log; returns once its outcome is final.
pub(crate) async fn deliver(ctx: &Context, event: &Event) {
    let outgoing = knative::for_subscriber(event);
    let replies = Replies::Admit { ttl: knative::ttl(event), redrive: false };
    match attempt(ctx, &ctx.subscriber, &outgoing, replies).await {
        Ok(()) => {}
        Err(exhausted) => {
            if !dead_letter_to_sink(ctx, &outgoing, &exhausted).await {
                store(ctx, event, exhausted).await;
            }
        }
    }
}

/// Redelivers a dead letter through the trigger's current subscriber and policy; removes it
/// from the store once delivered (or taken by the dead-letter sink).
pub(crate) async fn redrive(ctx: &Context, entry: DeadLetter) {
    let outgoing = knative::for_subscriber(&entry.event);
    let replies = Replies::Admit { ttl: knative::ttl(&entry.event), redrive: true };
    let delivered = match attempt(ctx, &ctx.subscriber, &outgoing, replies).await {
        Ok(()) => true,
        Err(exhausted) => dead_letter_to_sink(ctx, &outgoing, &exhausted).await,
    };
    if delivered {
        match ctx.dead_letters.remove(ctx.scope(), &entry.id).await {
            Ok(_) => tracing::info!(trigger = %ctx.scope(), id = %entry.id, "dead letter redriven"),
            Err(error) => {
                tracing::error!(trigger = %ctx.scope(), id = %entry.id, %error, "redriven, but could not remove the dead letter")
            }
        }
    } else {
        tracing::warn!(trigger = %ctx.scope(), id = %entry.id, trace_id = trace_id(&entry.event), "redrive failed; the dead letter stays in the store");
    }
    ctx.redriving.lock().unwrap_or_else(|e| e.into_inner()).remove(&entry.id);
}

/// Attempts until the target accepts or the policy gives up. A reply event in the answer is
/// admitted into the broker (per `replies`) before the attempt counts as a success.
async fn attempt(ctx: &Context, target: &Target, event: &Event, replies: Replies) -> Result<(), Exhausted> {
    let mut attempt = 1;
    loop {
        if let Some(rate) = &ctx.rate {
            rate.acquire().await;
        }
        let result = {
            // The semaphore is never closed; without a permit there is nothing to send with.
            let _permit = ctx.in_flight.acquire().await.ok();
            let started = Instant::now();
            let dead_letter = ctx.dead_letter_sink.as_ref().is_some_and(|sink| std::ptr::eq(sink, target));
            let number = attempt;
            let result = ctx.client.send(target, event, Attempt { trigger: ctx.scope(), number, dead_letter }).await;
            metrics::attempt(&result, started.elapsed());
            result
        };
        let failure = match result {
            Ok(answer) => match replies {
                Replies::Admit { ttl, redrive } => match admit_reply(ctx, answer, ttl, redrive).await {
                    Ok(()) => return Ok(()),
                    Err(failure) => failure,
                },
                Replies::Ignore => return Ok(()),
            },
            Err(failure) => failure,
        };
        match ctx.plan.delivery.retry.after_failure(attempt, &failure) {
            Verdict::RetryAfter(wait) => {
                tracing::debug!(
                    trigger = %ctx.scope(), target = %target.url, attempt, %failure, trace_id = trace_id(event),
                    wait_ms = wait.as_millis() as u64, "attempt failed; will retry"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Verdict::GiveUp => {
                tracing::debug!(trigger = %ctx.scope(), target = %target.url, attempt, %failure, trace_id = trace_id(event), "giving up");
                return Err(Exhausted { failure, attempts: attempt });
            }
        }
    }
}

/// Knative data-plane contract: a 2xx answer carrying a CloudEvent is a reply, put into the
/// broker like any event (admission decrements the hop counter and drops a reply whose budget
/// is spent). A 202 is never a reply. An answer that claims to be a CloudEvent but is not a
/// valid one, or that admission refuses, is a failed attempt; other bodies are ignored.
async fn admit_reply(ctx: &Context, answer: Answer, ttl: i32, redrive: bool) -> Result<(), Failure> {
    if answer.status == http::StatusCode::ACCEPTED || !claims_cloudevent(&answer.headers) {
        return Ok(());
    }
    let limit = ctx.client.max_reply_bytes();
    if answer.truncated {
        let refused = switchyard_event::limits::LimitExceeded::EventTooLarge { index: None, limit };
        return Err(reply_failure(format!("reply refused: {refused}")));
    }
    let mut events = switchyard_event::http::decode_request(&answer.headers, answer.body)
        .map_err(|e| reply_failure(format!("invalid reply event: {e}")))?;
    let (Some(reply), None) = (events.pop(), events.pop()) else {
        return Err(reply_failure("a reply must be exactly one event".to_owned()));
    };
    let trigger = ctx.scope().to_owned();
    let origin = if redrive { Origin::Redrive { trigger, ttl } } else { Origin::Reply { trigger, ttl } };
    let id = reply.id().to_owned();
    match ctx.admission.admit(&ctx.trigger.namespace, &ctx.trigger.broker, vec![reply], origin).await {
        Ok(Admitted::Stored) => Ok(()),
        Ok(Admitted::HopsSpent) => {
            tracing::warn!(trigger = %ctx.scope(), reply = %id, "reply dropped: its knativebrokerttl hop budget is spent");
            Ok(())
        }
        Err(refusal) => Err(reply_failure(format!("reply refused: {refusal}"))),
    }
}

/// A binary-mode event announces itself with `ce-specversion`; any `application/cloudevents…`
/// content type (even an unsupported format) claims a structured or batched one.
fn claims_cloudevent(headers: &HeaderMap) -> bool {
    let mode = switchyard_event::http::content_mode(headers.get(http::header::CONTENT_TYPE));
    headers.contains_key("ce-specversion") || !matches!(mode, Ok(switchyard_event::http::ContentMode::Binary))
}

/// A reply problem is retried like a transport error: the subscriber answered, but the
/// delivery is not done.
fn reply_failure(error: String) -> Failure {
    Failure { status: None, error: Some(error), retry_after: None, body_prefix: Default::default() }
}

/// Sends the event to the dead-letter sink with Knative's error extensions; true when the sink
/// took it.
async fn dead_letter_to_sink(ctx: &Context, event: &Event, exhausted: &Exhausted) -> bool {
    let Some(sink) = &ctx.dead_letter_sink else { return false };
    let annotated = with_error_extensions(event, &ctx.subscriber, exhausted);
    match attempt(ctx, sink, &annotated, Replies::Ignore).await {
        Ok(()) => {
            metrics::dead_lettered("sink");
            tracing::warn!(trigger = %ctx.scope(), id = %event.id(), trace_id = trace_id(event), reason = %exhausted.reason(), "event sent to the dead-letter sink");
            true
        }
        Err(sink_exhausted) => {
            tracing::warn!(trigger = %ctx.scope(), id = %event.id(), trace_id = trace_id(event), reason = %sink_exhausted.reason(), "dead-letter sink failed too");
            false
        }
    }
}

/// Knative's dead-letter extensions: `knativeerrordest` (the subscriber), `knativeerrorcode`
/// (the last status, absent for transport errors), `knativeerrordata` (base64 of at most the
/// first 1024 bytes of the answer); ours: `knativeerrorattempts`.
fn with_error_extensions(event: &Event, target: &Target, exhausted: &Exhausted) -> Event {
    let mut annotated = event.clone();
    let failure = &exhausted.failure;
    let _ = annotated.set_extension("knativeerrordest", AttrValue::String(target.url.to_string()));
    if let Some(status) = failure.status {
        let _ = annotated.set_extension("knativeerrorcode", AttrValue::String(status.as_u16().to_string()));
    }
    if !failure.body_prefix.is_empty() {
        let data = base64::engine::general_purpose::STANDARD
            .encode(&failure.body_prefix[..failure.body_prefix.len().min(1024)]);
        let _ = annotated.set_extension("knativeerrordata", AttrValue::String(data));
    }
    let attempts = i32::try_from(exhausted.attempts).unwrap_or(i32::MAX);
    let _ = annotated.set_extension("knativeerrorattempts", AttrValue::Integer(attempts));
    annotated
}

/// Keeps the event in the dead-letter store. The store is the last resort: its writes are
/// retried until they succeed, and until then the event's outcome is not final (so its offset
/// is not committed and a restart tries again).
async fn store(ctx: &Context, event: &Event, exhausted: Exhausted) {
    let mut reason = exhausted.reason();
    if let Some(sink) = &ctx.dead_letter_sink {
        reason = format!("{reason}; dead-letter sink {} failed too", sink.url);
    }
    let entry = DeadLetter {
        id: String::new(),
        event: event.clone(),
        reason,
        attempts: exhausted.attempts,
        last_status: exhausted.failure.status.map(|s| s.as_u16()),
        last_error: exhausted.failure.error.clone(),
        dead_lettered_at: knative::now_rfc3339(),
    };
    let mut pause = ExponentialBackoff::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
    loop {
        match ctx.dead_letters.put(ctx.scope(), entry.clone()).await {
            Ok(id) => {
                metrics::dead_lettered("store");
                tracing::warn!(trigger = %ctx.scope(), event = %event.id(), trace_id = trace_id(event), dead_letter = %id, reason = %entry.reason, "event kept in the dead-letter store");
                return;
            }
            Err(error) => {
                tracing::error!(trigger = %ctx.scope(), event = %event.id(), trace_id = trace_id(event), %error, "cannot write to the dead-letter store; retrying");
                tokio::time::sleep(pause.next_delay()).await;
            }
        }
    }
}

/// `rateLimit`: attempts start at most `rate` times per second, evenly spaced.
pub(crate) struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

impl RateLimiter {
    pub(crate) fn new(per_second: f64) -> RateLimiter {
        RateLimiter {
            interval: Duration::from_secs_f64(1.0 / per_second),
            next: tokio::sync::Mutex::new(Instant::now()),
        }
    }

    async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().await;
            let at = (*next).max(Instant::now());
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}
