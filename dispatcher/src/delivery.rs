//! Delivering one event until its outcome is final: attempts under the retry policy, replies
//! written back to the broker, then the dead-letter sink, then the dead-letter store. Nothing
//! leaves this module without a final outcome, so the worker may count it done — not even a
//! panic ([`deliver_read`]), and not a record that is not an event ([`move_aside`]).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use http::HeaderMap;
use switchyard_event::limits::LimitExceeded;
use switchyard_event::{knative, AttrValue, Event};
use switchyard_log::backoff::ExponentialBackoff;
use switchyard_log::{Admit, Admitted, DeadLetter, DeadLetterStore, EventLog, LogEvent, Origin};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::ca_certs::CaCerts;
use crate::http_client::{trace_id, Answer, Attempt, DeliveryClient, Target};
use crate::identity::Identity;
use crate::retry::{Failure, Verdict};
use crate::supervise::catch_panic;
use crate::{metrics, this_node, DeliveryPolicy, Filter, TriggerPlan, TriggerRef};

/// The first and the longest pause between attempts to write a dead letter to a failing store.
const STORE_RETRY_FIRST: Duration = Duration::from_millis(100);
const STORE_RETRY_MAX: Duration = Duration::from_secs(30);

/// What one trigger's deliveries share.
pub(crate) struct Context {
    pub(crate) trigger: TriggerRef,
    /// The plan's filter, shared with the fanout.
    pub(crate) filter: Arc<Filter>,
    /// The plan's delivery policy; its URLs live in the targets below.
    pub(crate) delivery: DeliveryPolicy,
    /// `namespace/name`, for logs and the dead-letter store.
    scope: String,
    subscriber: Target,
    /// Boxed: most triggers have none, and inline it took 200 bytes of every one's context.
    dead_letter_sink: Option<Box<Target>>,
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
        // Taken apart, so that nothing is held twice for each of thousands of triggers.
        let TriggerPlan { filter, subscriber, audience, ca_certs, mut delivery, signer, .. } = plan;
        // The dead-letter sink's attempts are signed as the subscriber's are, and identify the
        // same trigger: it receives the same events, from the same sender.
        let sender: Arc<str> = Arc::from(this_node::trigger_subject(&trigger.namespace, &trigger.name));
        let target = |url: url::Url, audience: Option<String>, ca_certs: Option<CaCerts>| Target {
            url,
            format: delivery.format,
            header_encoding: delivery.header_encoding,
            namespace: trigger.namespace.clone(),
            timeout: delivery.timeout,
            signer: signer.clone(),
            identity: audience.map(|audience| Identity::of_trigger(&trigger.namespace, &trigger.name, &audience)),
            ca_certs,
            sender: sender.clone(),
        };
        let dead_letter_audience = delivery.dead_letter_audience.take();
        let dead_letter_ca_certs = delivery.dead_letter_ca_certs.take();
        Context {
            scope: trigger.key(),
            subscriber: target(subscriber, audience, ca_certs),
            dead_letter_sink: delivery
                .dead_letter_sink
                .take()
                .map(|url| Box::new(target(url, dead_letter_audience, dead_letter_ca_certs))),
            in_flight: Semaphore::new(delivery.max_in_flight.max(1) as usize),
            rate: delivery.rate_limit.map(RateLimiter::new),
            dead_letters: log.dead_letters(),
            filter: Arc::new(filter),
            delivery,
            trigger,
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

    /// The subscriber's URL.
    pub(crate) fn subscriber(&self) -> &url::Url {
        &self.subscriber.url
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

/// Delivers an event read from the log; returns once its outcome is final, even if delivering
/// it panics.
///
/// A panic (anywhere in [`deliver`]: an attempt, a reply's admission, the dead-letter sink) is
/// logged at error with the trigger and offset, counted, and counts as one failed attempt of
/// the retry policy: the event is delivered again after the policy's wait, and once the policy
/// gives up it goes straight to the dead-letter store (not the sink, which may be what
/// panics) with the reason `panic: <message> after <n> attempts`.
pub(crate) async fn deliver_read(ctx: &Context, log_event: &LogEvent) {
    let event = &log_event.event;
    let mut panics = 0;
    let exhausted = loop {
        let Err(message) = catch_panic(deliver(ctx, event)).await else { return };
        panics += 1;
        metrics::task_panicked("delivery");
        tracing::error!(
            trigger = %ctx.scope(), partition = log_event.position.partition, offset = log_event.position.offset,
            id = %event.id(), trace_id = trace_id(event), panic = %message, panics, "delivery panicked"
        );
        let failure = Failure {
            status: None,
            error: Some(format!("panic: {message}")),
            retry_after: None,
            body_prefix: Default::default(),
        };
        match ctx.delivery.retry.after_failure(panics, &failure) {
            Verdict::RetryAfter(wait) => tokio::time::sleep(wait).await,
            Verdict::GiveUp => break Exhausted { failure, attempts: panics },
        }
    };
    store(ctx, event, exhausted).await;
}

/// Moves a record that could not be decoded (`log_event` is its stand-in, see
/// [`LogEvent::undecodable`]) to the dead-letter store, unfiltered and undelivered, with
/// `attempts` 0 and a reason that says where it sits and why it is not an event. Retried until
/// written, like every dead letter; then its outcome is final and the watermark moves past it.
pub(crate) async fn move_aside(ctx: &Context, log_event: &LogEvent, why: &str) {
    let position = log_event.position;
    let topic = &ctx.trigger.topic;
    let entry = DeadLetter {
        id: String::new(),
        event: Event::clone(&log_event.event),
        reason: format!(
            "undecodable record at offset {} of partition {} of topic '{topic}': {why}",
            position.offset, position.partition
        ),
        attempts: 0,
        last_status: None,
        last_error: Some(why.to_owned()),
        dead_lettered_at: knative::now_rfc3339(),
    };
    let id = keep(ctx, &entry).await;
    metrics::undecodable();
    tracing::warn!(
        trigger = %ctx.scope(), %topic, partition = position.partition, offset = position.offset, dead_letter = %id,
        reason = %why, "undecodable record moved to the dead-letter store"
    );
}

/// Delivers an event (read from the log, or a dead letter's); returns once its outcome is final.
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
            let dead_letter = ctx.dead_letter_sink.as_deref().is_some_and(|sink| std::ptr::eq(sink, target));
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
        match ctx.delivery.retry.after_failure(attempt, &failure) {
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
    let trigger = ctx.scope().to_owned();
    let origin = if redrive { Origin::Redrive { trigger, ttl } } else { Origin::Reply { trigger, ttl } };
    if answer.truncated {
        // Read only up to the event limit: over it, refused as admission refuses any event.
        let limit = LimitExceeded::EventTooLarge { index: None, limit: ctx.client.max_reply_bytes() };
        let refusal = ctx.admission.refuse(&origin, limit.into());
        return Err(reply_failure(format!("reply refused: {refusal}")));
    }
    let mut events = switchyard_event::http::decode_request(&answer.headers, answer.body)
        .map_err(|e| reply_failure(format!("invalid reply event: {e}")))?;
    let (Some(reply), None) = (events.pop(), events.pop()) else {
        return Err(reply_failure("a reply must be exactly one event".to_owned()));
    };
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
    let _ = annotated
        .set_extension("knativeerrordest", AttrValue::String(switchyard_meta::secret::shown_url(target.url.as_str())));
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

/// Keeps the event in the dead-letter store.
///
/// Invariant: nothing is dropped on give-up. The store is the last resort: its writes are
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
    let id = keep(ctx, &entry).await;
    metrics::dead_lettered("store");
    tracing::warn!(trigger = %ctx.scope(), event = %event.id(), trace_id = trace_id(event), dead_letter = %id, reason = %entry.reason, "event kept in the dead-letter store");
}

/// Writes `entry` to the trigger's dead-letter store, trying again with doubling pauses until it
/// is written (a store that fails, or panics, only delays it); returns its id.
async fn keep(ctx: &Context, entry: &DeadLetter) -> String {
    let event = &entry.event;
    let mut pause = ExponentialBackoff::new(STORE_RETRY_FIRST, STORE_RETRY_MAX);
    loop {
        match catch_panic(ctx.dead_letters.put(ctx.scope(), entry.clone())).await {
            Ok(Ok(id)) => return id,
            Ok(Err(error)) => {
                tracing::error!(trigger = %ctx.scope(), event = %event.id(), trace_id = trace_id(event), %error, "cannot write to the dead-letter store; retrying");
            }
            Err(message) => {
                metrics::task_panicked("delivery");
                tracing::error!(trigger = %ctx.scope(), event = %event.id(), trace_id = trace_id(event), panic = %message, "the dead-letter store panicked; retrying");
            }
        }
        tokio::time::sleep(pause.next_delay()).await;
    }
}

/// `rateLimit`: attempts start at most `rate` times per second, evenly spaced.
pub(crate) struct RateLimiter {
    interval: Duration,
    next: tokio::sync::Mutex<Instant>,
}

/// The longest interval a rate limiter spaces attempts by, whatever rate it is given: the plan
/// validates rates, this only keeps an out-of-range one from panicking.
const RATE_INTERVAL_MAX: Duration = Duration::from_secs(3600);

impl RateLimiter {
    pub(crate) fn new(per_second: f64) -> RateLimiter {
        let interval =
            Duration::try_from_secs_f64(1.0 / per_second).map_or(RATE_INTERVAL_MAX, |i| i.min(RATE_INTERVAL_MAX));
        RateLimiter { interval, next: tokio::sync::Mutex::new(Instant::now()) }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use base64::Engine;
    use switchyard_event::{knative, AttrValue, Event};
    use switchyard_log::testkit::memory::{Fault, MemoryLog};
    use switchyard_log::{Admit, DeadLetter, EventLog, Origin};
    use tokio::time::Instant;

    use super::{deliver, redrive, Context};
    use crate::retry::Backoff;
    use crate::testing::{client, event, plan, trigger, Admissions, Received, Reply, Subscriber, SCOPE};
    use crate::TriggerPlan;

    const MS: Duration = Duration::from_millis(1);

    fn context(log: &Arc<MemoryLog>, admissions: &Arc<Admissions>, plan: TriggerPlan) -> Context {
        let log = log.clone() as Arc<dyn EventLog>;
        Context::new(trigger(), plan, client(), log, admissions.clone() as Arc<dyn Admit>)
    }

    /// A context with its own log and an admission that takes every reply.
    fn simple_context(plan: TriggerPlan) -> (Context, Arc<MemoryLog>, Arc<Admissions>) {
        let (log, admissions) = (MemoryLog::new(), Arc::new(Admissions::default()));
        (context(&log, &admissions, plan), log, admissions)
    }

    async fn stored(log: &MemoryLog) -> Vec<DeadLetter> {
        log.dead_letters().list(SCOPE, None, usize::MAX).await.unwrap()
    }

    fn gaps(received: &[Received]) -> Vec<Duration> {
        received.windows(2).map(|w| w[1].arrived - w[0].arrived).collect()
    }

    /// Asserts that each gap lies in [base, base × 1.1] (the jitter), give or take the timer
    /// wheel's millisecond, and that the jitter is there at all.
    fn assert_backoff(gaps: &[Duration], bases: &[Duration]) {
        assert_eq!(gaps.len(), bases.len(), "{gaps:?}");
        for (gap, base) in gaps.iter().zip(bases) {
            assert!(*gap >= *base && *gap <= base.mul_f64(1.1) + MS, "gap {gap:?} outside {base:?} + 10%: {gaps:?}");
        }
        assert!(gaps.iter().zip(bases).any(|(gap, base)| *gap > *base + MS), "no jitter at all: {gaps:?}");
    }

    fn attribute(event: &Event, name: &str) -> Option<String> {
        event.get(name).map(|v| v.to_canonical_string().into_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_spaced_by_linear_backoff_within_its_jitter() {
        let subscriber = Subscriber::start(|r| if r.attempt <= 4 { Reply::status(503) } else { Reply::ok() }).await;
        let (ctx, log, _) = simple_context(plan(subscriber.url("/"), |d| {
            d.retry.retries = 10;
            d.retry.backoff = Backoff::Linear;
            d.retry.delay = Duration::from_secs(1);
        }));
        deliver(&ctx, &event("e")).await;
        let received = subscriber.at("/");
        assert_eq!(received.len(), 5, "four failures then the success");
        let secs = Duration::from_secs;
        assert_backoff(&gaps(&received), &[secs(1), secs(2), secs(3), secs(4)]);
        assert!(stored(&log).await.is_empty(), "delivered in the end");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_spaced_by_exponential_backoff_within_its_jitter() {
        let subscriber = Subscriber::start(|r| if r.attempt <= 4 { Reply::status(500) } else { Reply::ok() }).await;
        let (ctx, _, _) = simple_context(plan(subscriber.url("/"), |d| {
            d.retry.backoff = Backoff::Exponential;
            d.retry.delay = Duration::from_millis(500);
        }));
        let started = Instant::now();
        deliver(&ctx, &event("e")).await;
        let received = subscriber.at("/");
        assert_eq!(received.len(), 5);
        assert_eq!(received[0].arrived, started, "the first attempt does not wait");
        let ms = Duration::from_millis;
        assert_backoff(&gaps(&received), &[ms(500), ms(1000), ms(2000), ms(4000)]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_lengthens_the_wait_up_to_retry_after_max() {
        let subscriber = Subscriber::start(|r| match r.attempt {
            1 => Reply::status(429).header("retry-after", "30"),
            // Over retryAfterMax: capped.
            2 => Reply::status(503).header("retry-after", "3600"),
            // Retry-After means nothing on a 500: the backoff alone.
            3 => Reply::status(500).header("retry-after", "30"),
            _ => Reply::ok(),
        })
        .await;
        let (ctx, _, _) = simple_context(plan(subscriber.url("/"), |d| {
            d.retry.backoff = Backoff::Linear;
            d.retry.delay = Duration::from_millis(100);
            d.retry.retry_after_max = Duration::from_secs(60);
        }));
        deliver(&ctx, &event("e")).await;
        let gaps = gaps(&subscriber.at("/"));
        assert_eq!(gaps.len(), 3, "{gaps:?}");
        assert!(gaps[0] >= Duration::from_secs(30) && gaps[0] <= Duration::from_secs(30) + MS, "{gaps:?}");
        assert!(gaps[1] >= Duration::from_secs(60) && gaps[1] <= Duration::from_secs(60) + MS, "{gaps:?}");
        assert!(gaps[2] >= Duration::from_millis(300) && gaps[2] <= Duration::from_millis(331), "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_ignored_when_retry_after_max_is_zero() {
        let subscriber = Subscriber::start(|r| {
            if r.attempt == 1 {
                Reply::status(429).header("retry-after", "30")
            } else {
                Reply::ok()
            }
        })
        .await;
        let (ctx, _, _) = simple_context(plan(subscriber.url("/"), |d| {
            d.retry.backoff = Backoff::Linear;
            d.retry.delay = Duration::from_millis(100);
            d.retry.retry_after_max = Duration::ZERO;
        }));
        deliver(&ctx, &event("e")).await;
        let gaps = gaps(&subscriber.at("/"));
        assert!(gaps.len() == 1 && gaps[0] <= Duration::from_millis(111), "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn when_retries_are_spent_the_event_goes_to_the_dead_letter_store() {
        let subscriber = Subscriber::start(|_| Reply::status(500).body("down")).await;
        let (ctx, log, _) = simple_context(plan(subscriber.url("/"), |d| {
            d.retry.retries = 2;
            d.retry.delay = Duration::from_millis(10);
        }));
        let sent = event("e");
        deliver(&ctx, &sent).await;
        assert_eq!(subscriber.at("/").len(), 3, "retry = 2 is three attempts");
        let stored = stored(&log).await;
        assert_eq!(stored.len(), 1);
        let entry = &stored[0];
        assert_eq!(entry.event, sent);
        assert_eq!((entry.attempts, entry.last_status, entry.last_error.as_deref()), (3, Some(500), None));
        assert!(entry.reason.contains("500") && entry.reason.contains("3 attempts"), "{}", entry.reason);
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_retryable_status_goes_straight_to_the_dead_letter_sink_with_knative_error_extensions() {
        // Longer than knativeerrordata keeps.
        let body: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        let answer = body.clone();
        let subscriber = Subscriber::start(move |r| match r.path.as_str() {
            "/dls" => Reply::ok(),
            _ => Reply::status(400).body(answer.clone()),
        })
        .await;
        let (ctx, log, admissions) = simple_context(plan(subscriber.url("/subscriber"), |d| {
            d.retry.retries = 5;
            d.dead_letter_sink = Some(subscriber.url("/dls"));
        }));
        let sent = event("e");
        deliver(&ctx, &sent).await;
        assert_eq!(subscriber.at("/subscriber").len(), 1, "a 400 is not retried");
        let sink = subscriber.at("/dls");
        assert_eq!(sink.len(), 1);
        let dead = sink[0].event.clone().expect("the sink receives the event");
        assert_eq!(attribute(&dead, "knativeerrordest").as_deref(), Some(subscriber.url("/subscriber").as_str()));
        assert_eq!(attribute(&dead, "knativeerrorcode").as_deref(), Some("400"));
        let data = base64::engine::general_purpose::STANDARD.encode(&body[..1024]);
        assert_eq!(attribute(&dead, "knativeerrordata"), Some(data));
        assert_eq!(attribute(&dead, "knativeerrorattempts").as_deref(), Some("1"));
        // Otherwise the event as the subscriber got it.
        for (name, value) in sent.attributes() {
            assert_eq!(dead.get(name).map(|v| v.to_canonical_string()), Some(value.to_canonical_string()), "{name}");
        }
        assert_eq!(dead.data().map(|d| &d.bytes), sent.data().map(|d| &d.bytes));
        assert!(stored(&log).await.is_empty(), "the sink took it: nothing in the store");
        assert!(admissions.calls().is_empty(), "the sink's answer is not a reply");
    }

    #[tokio::test(start_paused = true)]
    async fn a_transport_failure_leaves_no_error_code_on_the_dead_letter() {
        // A port nobody listens on (bound, then freed): connections are refused.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let sink = Subscriber::accepting().await;
        let (ctx, _, _) = simple_context(plan(format!("http://{closed}/").parse().unwrap(), |d| {
            d.retry.retries = 1;
            d.retry.delay = Duration::from_millis(10);
            d.dead_letter_sink = Some(sink.url("/dls"));
        }));
        deliver(&ctx, &event("e")).await;
        let dead = sink.at("/dls")[0].event.clone().unwrap();
        assert_eq!(attribute(&dead, "knativeerrorattempts").as_deref(), Some("2"));
        assert_eq!(attribute(&dead, "knativeerrordest").as_deref(), Some(format!("http://{closed}/").as_str()));
        assert_eq!((dead.get("knativeerrorcode"), dead.get("knativeerrordata")), (None, None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_dead_letter_sink_is_retried_then_the_event_is_stored() {
        let subscriber = Subscriber::start(|r| match r.path.as_str() {
            "/dls" => Reply::status(502),
            _ => Reply::status(403),
        })
        .await;
        let (ctx, log, _) = simple_context(plan(subscriber.url("/subscriber"), |d| {
            d.retry.retries = 2;
            d.retry.delay = Duration::from_millis(10);
            d.dead_letter_sink = Some(subscriber.url("/dls"));
        }));
        deliver(&ctx, &event("e")).await;
        assert_eq!(subscriber.at("/subscriber").len(), 1);
        assert_eq!(subscriber.at("/dls").len(), 3, "the sink under the same retry policy");
        let stored = stored(&log).await;
        assert_eq!(stored.len(), 1);
        let entry = &stored[0];
        assert_eq!((entry.attempts, entry.last_status), (1, Some(403)), "the subscriber's failure is kept");
        assert!(entry.reason.contains("dead-letter sink") && entry.reason.contains("/dls"), "{}", entry.reason);
        assert_eq!(entry.event.get("knativeerrordest"), None, "stored as read, without the sink's extensions");
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_dead_letter_store_is_written_until_it_takes_the_event() {
        let subscriber = Subscriber::start(|_| Reply::status(400)).await;
        let (ctx, log, _) = simple_context(plan(subscriber.url("/"), |d| d.retry.retries = 0));
        log.faults().fail_next(Fault::DeadLetterPut, 4);
        let started = Instant::now();
        deliver(&ctx, &event("e")).await;
        // deliver returns only once the store has it: the event's outcome is then final.
        assert_eq!(log.faults().remaining(Fault::DeadLetterPut), 0);
        assert_eq!(stored(&log).await.len(), 1);
        // Between tries: 100, 200, 400, 800 ms.
        assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());
        assert_eq!(subscriber.at("/").len(), 1, "the subscriber is not tried again meanwhile");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_is_admitted_with_the_hop_budget_of_the_delivered_event() {
        let reply = event("reply");
        let answer = reply.clone();
        let subscriber = Subscriber::start(move |_| Reply::event(&answer)).await;
        let (ctx, log, admissions) = simple_context(plan(subscriber.url("/"), |_| {}));
        let mut sent = event("e");
        sent.set_extension(knative::BROKER_TTL, AttrValue::Integer(7)).unwrap();
        deliver(&ctx, &sent).await;
        let received = subscriber.at("/");
        assert_eq!(received.len(), 1);
        assert_eq!(received[0].header("ce-knativebrokerttl"), None, "the hop counter is the broker's own");
        let calls = admissions.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!((calls[0].namespace.as_str(), calls[0].broker.as_str()), ("ns", "b"));
        // As sent in binary mode, where every extension is a string.
        let encoded = |e: &Event| switchyard_event::http::encode_binary(e, Default::default());
        assert_eq!(calls[0].events.iter().map(encoded).collect::<Vec<_>>(), [encoded(&reply)]);
        assert!(
            matches!(&calls[0].origin, Origin::Reply { trigger, ttl: 7 } if trigger == "ns/t"),
            "{:?}",
            calls[0].origin
        );
        assert!(stored(&log).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_reply_is_a_failed_attempt() {
        let subscriber = Subscriber::start(|r| Reply::event(&event(&format!("reply-{}", r.attempt)))).await;
        let (ctx, log, admissions) = simple_context(plan(subscriber.url("/"), |d| {
            d.retry.retries = 3;
            d.retry.delay = Duration::from_millis(10);
        }));
        admissions.refuse_next(2);
        deliver(&ctx, &event("e")).await;
        assert_eq!(subscriber.at("/").len(), 3, "two refusals retried, the third reply taken");
        let refused: Vec<bool> = admissions.calls().iter().map(|c| c.refused).collect();
        assert_eq!(refused, [true, true, false]);
        assert!(stored(&log).await.is_empty());

        // Refused every time: the retries run out, and the refusal is the dead letter's error.
        admissions.refuse_next(100);
        deliver(&ctx, &event("f")).await;
        let stored = stored(&log).await;
        assert_eq!(stored.len(), 1);
        assert_eq!((stored[0].attempts, stored[0].last_status), (4, None));
        let error = stored[0].last_error.as_deref().unwrap_or_default();
        assert!(error.contains("reply refused"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reply_out_of_hops_is_dropped_and_the_delivery_succeeds() {
        let subscriber = Subscriber::start(|_| Reply::event(&event("reply"))).await;
        let (ctx, log, admissions) = simple_context(plan(subscriber.url("/"), |_| {}));
        admissions.hops_spent();
        deliver(&ctx, &event("e")).await;
        assert_eq!((subscriber.at("/").len(), admissions.calls().len()), (1, 1));
        assert!(stored(&log).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn answers_that_are_not_replies_are_not_admitted() {
        let reply = event("reply");
        let subscriber = Subscriber::start(move |r| match r.id() {
            // 202 means "accepted", never "here is a reply".
            "accepted" => Reply { status: http::StatusCode::ACCEPTED, ..Reply::event(&reply) },
            _ => Reply::ok().header("content-type", "text/plain").body("thanks"),
        })
        .await;
        let (ctx, log, admissions) = simple_context(plan(subscriber.url("/"), |_| {}));
        deliver(&ctx, &event("accepted")).await;
        deliver(&ctx, &event("plain")).await;
        assert_eq!(subscriber.at("/").len(), 2);
        assert!(admissions.calls().is_empty());
        assert!(stored(&log).await.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_or_oversized_reply_is_a_failed_attempt() {
        let subscriber = Subscriber::start(|r| match r.id() {
            // Claims to be an event (ce-specversion) but has no id.
            "invalid" => Reply::ok().header("ce-specversion", "1.0").header("ce-type", "t").header("ce-source", "/s"),
            // A valid reply, larger than the reply limit.
            _ => Reply::event(&switchyard_log::testkit::sample_event("big", crate::testing::MAX_REPLY_BYTES + 1)),
        })
        .await;
        let (ctx, log, admissions) = simple_context(plan(subscriber.url("/"), |d| d.retry.retries = 0));
        deliver(&ctx, &event("invalid")).await;
        deliver(&ctx, &event("oversized")).await;
        assert!(admissions.calls().is_empty(), "neither reaches admission");
        let stored = stored(&log).await;
        let errors: Vec<(&str, String)> =
            stored.iter().map(|e| (e.event.id(), e.last_error.clone().unwrap_or_default())).collect();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].0 == "invalid" && errors[0].1.contains("invalid reply event"), "{errors:?}");
        assert!(errors[1].0 == "oversized" && errors[1].1.contains("reply refused"), "{errors:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn redrive_removes_a_delivered_dead_letter_and_its_reply_is_admitted_as_a_redrive() {
        let subscriber = Subscriber::start(|r| match r.id() {
            "fails" => Reply::status(400),
            _ => Reply::event(&event("reply")),
        })
        .await;
        let (ctx, log, admissions) = simple_context(plan(subscriber.url("/"), |d| d.retry.retries = 0));
        let store = log.dead_letters();
        let entry = |id: &str| DeadLetter {
            id: String::new(),
            event: event(id),
            reason: "test".to_owned(),
            attempts: 1,
            last_status: Some(500),
            last_error: None,
            dead_lettered_at: knative::now_rfc3339(),
        };
        let delivered = store.put(SCOPE, entry("works")).await.unwrap();
        let failed = store.put(SCOPE, entry("fails")).await.unwrap();
        for id in [&delivered, &failed] {
            let entry = store.get(SCOPE, id).await.unwrap().unwrap();
            ctx.redriving.lock().unwrap().insert(entry.id.clone());
            redrive(&ctx, entry).await;
        }
        assert_eq!(subscriber.ids("/"), ["works", "fails"]);
        let left: Vec<String> = stored(&log).await.into_iter().map(|e| e.id).collect();
        assert_eq!(left, [failed], "only the delivered one is removed");
        let calls = admissions.calls();
        assert_eq!(calls.len(), 1);
        assert!(matches!(&calls[0].origin, Origin::Redrive { trigger, ttl: 255 } if trigger == "ns/t"));
        assert!(ctx.redriving.lock().unwrap().is_empty(), "redrives release their entries");
    }
}
