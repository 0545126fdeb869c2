//! What to do after a failed delivery attempt. The delivery loop obeys a policy object and
//! knows nothing of backoff arithmetic (vector's `RetryLogic` shape), so retry limits,
//! Retry-After and dead-lettering plug in here without touching the loop.

use std::fmt::Debug;
use std::time::Duration;

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
}

/// Decides what follows a failed attempt.
pub trait RetryPolicy: Send + Sync + Debug + 'static {
    /// Called after attempt number `attempt` (1-based) failed.
    fn after_failure(&self, attempt: u32, failure: &Failure) -> Verdict;
}

/// Retries every failure, with exponential backoff up to a ceiling, until the subscriber
/// accepts the event. Nothing is ever given up: until dead-lettering exists, giving up would
/// lose the event.
#[derive(Debug, Clone)]
pub struct UntilDelivered {
    /// The wait before the first retry; doubled for each further retry.
    pub first_delay: Duration,
    /// The longest wait between attempts.
    pub max_delay: Duration,
}

impl Default for UntilDelivered {
    fn default() -> UntilDelivered {
        // Knative's default broker backoff delay is PT0.2S.
        UntilDelivered { first_delay: Duration::from_millis(200), max_delay: Duration::from_secs(30) }
    }
}

impl RetryPolicy for UntilDelivered {
    fn after_failure(&self, attempt: u32, _failure: &Failure) -> Verdict {
        let factor = 1u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
        Verdict::RetryAfter(self.first_delay.saturating_mul(factor).min(self.max_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let policy = UntilDelivered::default();
        let failure =
            Failure { status: None, error: Some("refused".into()), retry_after: None, body_prefix: Bytes::new() };
        let waits: Vec<_> = [1, 2, 3, 9, 40, 1000].iter().map(|&a| policy.after_failure(a, &failure)).collect();
        let ms = |m| Verdict::RetryAfter(Duration::from_millis(m));
        assert_eq!(waits, [ms(200), ms(400), ms(800), ms(30_000), ms(30_000), ms(30_000)]);
    }
}
