//! Why a delivery attempt failed ([`Failure`]), and what follows ([`KnativeRetry`]). The
//! delivery loop obeys the policy object and knows nothing of backoff arithmetic (vector's
//! `RetryLogic` shape), so retry limits and Retry-After live here, not in the loop.
//!
//! [`KnativeRetry`] is Knative's delivery policy (`retry`, `backoffPolicy`, `backoffDelay`,
//! `retryAfterMax` of a `DeliverySpec`); the worker dead-letters an event the policy gives up
//! on.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

/// Why an attempt failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The HTTP status, when the subscriber answered.
    pub status: Option<http::StatusCode>,
    /// The transport error (connect, timeout…), when it did not.
    pub error: Option<String>,
    /// The `Retry-After` header of the answer, if any.
    pub retry_after: Option<http::HeaderValue>,
    /// The first bytes of the answer's body.
    pub body_prefix: Bytes,
}

impl Failure {
    /// The transport error of an attempt that ran out of time.
    pub const TIMED_OUT: &'static str = "timed out";

    /// Whether the attempt ran out of time before an answer.
    pub fn is_timeout(&self) -> bool {
        self.status.is_none() && self.error.as_deref() == Some(Self::TIMED_OUT)
    }

    /// Whether the failure may be retried, as Knative's dispatcher decides: transport errors
    /// and timeouts (no status), 404 (the subscriber may not be up yet), 408, 409, 429, and
    /// every 5xx. Any other answer (other 4xx, and 1xx or 3xx, which are not deliveries
    /// since redirects are not followed) will not change on retry.
    pub fn is_retryable(&self) -> bool {
        match self.status {
            None => true,
            Some(status) => matches!(status.as_u16(), 404 | 408 | 409 | 429 | 500..=599),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.status, &self.error) {
            (Some(status), _) => write!(f, "subscriber answered {status}"),
            (None, Some(error)) => write!(f, "{error}"),
            (None, None) => write!(f, "unknown failure"),
        }
    }
}

/// The policy's answer after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after this wait.
    RetryAfter(Duration),
    /// Stop trying: the event goes to the dead-letter sink, if there is one.
    GiveUp,
}

/// How the wait between retries grows (Knative's `backoffPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backoff {
    /// `delay × k` before the retry that follows failed attempt `k`.
    Linear,
    /// `delay × 2^(k−1)` before the retry that follows failed attempt `k`.
    Exponential,
}

/// The longest computed backoff, jitter included. Long enough for any outage a retry can
/// usefully wait out; bounds exponential growth (2^20 × 0.2 s is already 58 hours).
pub const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Knative's retry semantics for one trigger's `delivery`:
///
/// - only retryable failures are retried ([`Failure::is_retryable`]);
/// - at most `retries` retries after the first attempt, then [`Verdict::GiveUp`];
/// - the wait grows by `backoff` from `delay`, plus up to 10% random jitter so that events
///   failing together do not retry in lockstep, at most [`MAX_BACKOFF`];
/// - a `Retry-After` on 429 or 503 (the statuses RFC 9110 gives it meaning on for a retry,
///   and the ones Knative honours) lengthens the wait, up to `retry_after_max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnativeRetry {
    /// Retries after the first attempt: at most `retries + 1` attempts.
    pub retries: u32,
    /// How the wait grows.
    pub backoff: Backoff,
    /// The backoff unit.
    pub delay: Duration,
    /// The longest `Retry-After` honoured. Zero ignores `Retry-After` (Knative: `PT0S` opts
    /// out of respecting it).
    pub retry_after_max: Duration,
}

impl KnativeRetry {
    /// The wait after failed attempt `attempt`, before jitter, at most [`MAX_BACKOFF`].
    fn base_backoff(&self, attempt: u32) -> Duration {
        let k = attempt.max(1);
        let wait = match self.backoff {
            Backoff::Linear => self.delay.saturating_mul(k),
            // 2^(k−1) overflows u32 from k = 33 on; long before that the cap applies.
            Backoff::Exponential => match 1u32.checked_shl(k - 1) {
                Some(factor) => self.delay.saturating_mul(factor),
                None if self.delay.is_zero() => Duration::ZERO,
                None => MAX_BACKOFF,
            },
        };
        wait.min(MAX_BACKOFF)
    }

    /// The backoff with jitter: `base × (1 + r/10)` for a uniform `r` in [0, 1), capped.
    fn jittered_backoff(&self, attempt: u32) -> Duration {
        let base = self.base_backoff(attempt);
        (base + base.mul_f64(fastrand::f64() * 0.1)).min(MAX_BACKOFF)
    }

    /// The wait a `Retry-After` asks for, capped at `retry_after_max`, if the failure carries
    /// one that counts.
    fn retry_after(&self, failure: &Failure, now: SystemTime) -> Option<Duration> {
        let status = failure.status?;
        if !matches!(status.as_u16(), 429 | 503) {
            return None;
        }
        let wait = parse_retry_after(failure.retry_after.as_ref()?, now)?;
        Some(wait.min(self.retry_after_max))
    }

    fn verdict(&self, attempt: u32, failure: &Failure, now: SystemTime) -> Verdict {
        if !failure.is_retryable() || attempt > self.retries {
            return Verdict::GiveUp;
        }
        let backoff = self.jittered_backoff(attempt);
        // As Knative's `generateBackoffFn` (kncloudevents): the larger of the two, so Retry-After
        // is a minimum, never a shortcut.
        Verdict::RetryAfter(self.retry_after(failure, now).map_or(backoff, |after| after.max(backoff)))
    }
}

impl KnativeRetry {
    /// What follows failed attempt number `attempt` (1-based).
    pub fn after_failure(&self, attempt: u32, failure: &Failure) -> Verdict {
        self.verdict(attempt, failure, SystemTime::now())
    }
}

/// A `Retry-After` value (RFC 9110 §10.2.3) as a wait from `now`: `delay-seconds` or an
/// HTTP-date (a date in the past is no wait). Anything else is `None`, and ignored: a
/// malformed header must not stop retries.
pub fn parse_retry_after(value: &http::HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // All digits, but perhaps more than u64 holds: still a (very long) valid wait.
        return Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport_error() -> Failure {
        Failure { status: None, error: Some("refused".into()), retry_after: None, body_prefix: Bytes::new() }
    }

    fn answered(status: u16) -> Failure {
        Failure {
            status: Some(http::StatusCode::from_u16(status).unwrap()),
            error: None,
            retry_after: None,
            body_prefix: Bytes::new(),
        }
    }

    fn with_retry_after(status: u16, value: &str) -> Failure {
        Failure { retry_after: Some(http::HeaderValue::from_str(value).unwrap()), ..answered(status) }
    }

    fn policy(retries: u32, backoff: Backoff, delay_ms: u64) -> KnativeRetry {
        KnativeRetry {
            retries,
            backoff,
            delay: Duration::from_millis(delay_ms),
            retry_after_max: Duration::from_secs(300),
        }
    }

    /// The wait, asserting a retry.
    fn wait(policy: &KnativeRetry, attempt: u32, failure: &Failure, now: SystemTime) -> Duration {
        match policy.verdict(attempt, failure, now) {
            Verdict::RetryAfter(wait) => wait,
            Verdict::GiveUp => panic!("gave up after attempt {attempt}: {failure}"),
        }
    }

    /// Asserts, over many draws, that the jittered wait lies in [base, base × 1.1].
    fn assert_jittered(policy: &KnativeRetry, attempt: u32, base: Duration) {
        let mut seen_above_base = false;
        for _ in 0..1000 {
            let wait = wait(policy, attempt, &transport_error(), SystemTime::now());
            assert!(wait >= base && wait <= base.mul_f64(1.1), "attempt {attempt}: {wait:?} outside {base:?} + 10%");
            seen_above_base |= wait > base;
        }
        assert!(base.is_zero() || seen_above_base, "attempt {attempt}: no jitter in 1000 draws");
    }

    #[test]
    fn retryable_statuses() {
        assert!(transport_error().is_retryable());
        let timed_out = Failure { error: Some("timed out".into()), ..transport_error() };
        assert!(timed_out.is_retryable());
        let retryable = [404, 408, 409, 429, 500, 501, 502, 503, 504, 507, 599];
        let final_ = [100, 101, 103, 199, 200, 204, 299, 300, 301, 302, 304, 307, 308, 399]
            .into_iter()
            .chain([400, 401, 402, 403, 405, 406, 407, 410, 411, 412, 413, 414, 415, 422, 425, 426, 428, 431, 451, 499])
            .chain([600, 999]);
        for status in retryable {
            assert!(answered(status).is_retryable(), "{status}");
        }
        let policy = policy(10, Backoff::Exponential, 200);
        for status in final_ {
            assert!(!answered(status).is_retryable(), "{status}");
            assert_eq!(policy.verdict(1, &answered(status), SystemTime::now()), Verdict::GiveUp, "{status}");
        }
    }

    #[test]
    fn gives_up_after_the_last_retry() {
        for retries in [0, 1, 2, 10] {
            let policy = policy(retries, Backoff::Exponential, 10);
            for attempt in 1..=retries {
                wait(&policy, attempt, &answered(503), SystemTime::now());
            }
            // With retry = N there are N + 1 attempts: the (N+1)th failing is final.
            assert_eq!(policy.verdict(retries + 1, &answered(503), SystemTime::now()), Verdict::GiveUp);
            assert_eq!(policy.verdict(u32::MAX, &answered(503), SystemTime::now()), Verdict::GiveUp);
        }
    }

    #[test]
    fn linear_backoff_spacing() {
        let policy = policy(100, Backoff::Linear, 200);
        for (attempt, base_ms) in [(1, 200), (2, 400), (3, 600), (10, 2_000), (50, 10_000)] {
            assert_eq!(policy.base_backoff(attempt), Duration::from_millis(base_ms));
            assert_jittered(&policy, attempt, Duration::from_millis(base_ms));
        }
    }

    #[test]
    fn exponential_backoff_spacing() {
        let policy = policy(100, Backoff::Exponential, 200);
        for (attempt, base_ms) in [(1, 200), (2, 400), (3, 800), (4, 1_600), (10, 102_400)] {
            assert_eq!(policy.base_backoff(attempt), Duration::from_millis(base_ms));
            assert_jittered(&policy, attempt, Duration::from_millis(base_ms));
        }
    }

    #[test]
    fn backoff_is_capped_at_an_hour() {
        let exponential = policy(u32::MAX, Backoff::Exponential, 200);
        // 0.2 s × 2^14 = 3277 s: jitter may cross the hour, the cap holds it there.
        assert_eq!(exponential.base_backoff(15), Duration::from_millis(3_276_800));
        for attempt in [15, 16, 32, 33, 34, 1000, u32::MAX] {
            for _ in 0..100 {
                let wait = wait(&exponential, attempt, &transport_error(), SystemTime::now());
                assert!(wait <= MAX_BACKOFF, "attempt {attempt}: {wait:?}");
            }
        }
        assert_eq!(exponential.base_backoff(16), MAX_BACKOFF);
        assert_eq!(exponential.base_backoff(u32::MAX), MAX_BACKOFF);
        let linear = KnativeRetry { delay: Duration::from_secs(3600), ..policy(u32::MAX, Backoff::Linear, 0) };
        assert_eq!(wait(&linear, u32::MAX, &transport_error(), SystemTime::now()), MAX_BACKOFF);
        let huge = KnativeRetry { delay: Duration::MAX, ..policy(5, Backoff::Exponential, 0) };
        assert_eq!(wait(&huge, 5, &transport_error(), SystemTime::now()), MAX_BACKOFF);
        let zero = policy(u32::MAX, Backoff::Exponential, 0);
        assert_eq!(wait(&zero, 1000, &transport_error(), SystemTime::now()), Duration::ZERO);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let policy = policy(10, Backoff::Linear, 100);
        let secs = Duration::from_secs;
        // Longer than the backoff (0.1 s + jitter): Retry-After wins.
        assert_eq!(wait(&policy, 1, &with_retry_after(429, "120"), now), secs(120));
        assert_eq!(wait(&policy, 1, &with_retry_after(503, " 7 "), now), secs(7));
        assert_eq!(wait(&policy, 1, &with_retry_after(503, "Sun, 06 Nov 1994 08:50:37 GMT"), now), secs(60));
        // Over the maximum: capped at it.
        assert_eq!(wait(&policy, 1, &with_retry_after(429, "3600"), now), secs(300));
        assert_eq!(wait(&policy, 1, &with_retry_after(429, "99999999999999999999999"), now), secs(300));
        assert_eq!(wait(&policy, 1, &with_retry_after(503, "Mon, 07 Nov 1994 08:49:37 GMT"), now), secs(300));
        // Shorter than the backoff (or in the past): the backoff wins.
        let long_backoff = KnativeRetry { delay: secs(10), ..policy.clone() };
        for value in ["1", "0", "Sun, 06 Nov 1994 08:49:38 GMT", "Sat, 05 Nov 1994 08:49:37 GMT"] {
            let wait = wait(&long_backoff, 1, &with_retry_after(429, value), now);
            assert!(wait >= secs(10) && wait <= secs(11), "{value}: {wait:?}");
        }
        // retryAfterMax PT0S opts out.
        let opted_out = KnativeRetry { retry_after_max: Duration::ZERO, ..policy.clone() };
        let wait_ = wait(&opted_out, 1, &with_retry_after(429, "120"), now);
        assert!(wait_ <= Duration::from_millis(110), "{wait_:?}");
        // Retry-After never revives a final failure or extends the retry count.
        assert_eq!(policy.verdict(11, &with_retry_after(503, "5"), now), Verdict::GiveUp);
        assert_eq!(policy.verdict(1, &with_retry_after(400, "5"), now), Verdict::GiveUp);
    }

    #[test]
    fn invalid_or_irrelevant_retry_after_is_ignored() {
        let now = SystemTime::now();
        let policy = policy(10, Backoff::Linear, 100);
        let ignored = |failure: Failure| {
            let wait = wait(&policy, 1, &failure, now);
            assert!(wait <= Duration::from_millis(110), "{failure:?}: {wait:?}");
        };
        for value in ["", "-5", "1.5", "120s", "soon", "Sun, 06 Nov 1994", "0x10", "+5"] {
            ignored(with_retry_after(429, value));
        }
        ignored(Failure { retry_after: Some(http::HeaderValue::from_bytes(b"\xff120").unwrap()), ..answered(503) });
        // Only 429 and 503 carry a Retry-After that means "retry later".
        for status in [404, 408, 409, 500, 502, 504] {
            ignored(with_retry_after(status, "120"));
        }
    }

    #[test]
    fn parse_retry_after_values() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let parse = |value: &str| parse_retry_after(&http::HeaderValue::from_str(value).unwrap(), now);
        assert_eq!(parse("0"), Some(Duration::ZERO));
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        // The three HTTP-date forms RFC 9110 requires recipients to accept.
        assert_eq!(parse("Sun, 06 Nov 1994 08:49:47 GMT"), Some(Duration::from_secs(10)));
        assert_eq!(parse("Sunday, 06-Nov-94 08:49:47 GMT"), Some(Duration::from_secs(10)));
        assert_eq!(parse("Sun Nov  6 08:49:47 1994"), Some(Duration::from_secs(10)));
        assert_eq!(parse("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(parse("tomorrow"), None);
    }
}
