//! The wait between tries of something that failed and will work again later (a store that
//! refused a write, a sink that is down, a cluster that does not answer): doubling from a
//! first wait up to a longest one. Every retry loop outside the delivery policy uses this one.

use std::time::Duration;

/// Doubling waits: `first`, `2 × first`, `4 × first`, … at most `max`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExponentialBackoff {
    max: Duration,
    next: Duration,
}

impl ExponentialBackoff {
    /// Waits from `first` doubling to `max`.
    pub fn new(first: Duration, max: Duration) -> ExponentialBackoff {
        ExponentialBackoff { max, next: first.min(max) }
    }

    /// The wait before the next try; each call doubles the one after.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// The wait the next call would return, without advancing.
    pub fn peek(&self) -> Duration {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_longest_wait() {
        let ms = Duration::from_millis;
        let mut backoff = ExponentialBackoff::new(ms(100), ms(500));
        let waits: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(500), ms(500)]);
        assert_eq!(backoff.peek(), ms(500));
        assert_eq!(ExponentialBackoff::new(ms(10), ms(5)).next_delay(), ms(5));
        let mut huge = ExponentialBackoff::new(Duration::MAX, Duration::MAX);
        assert_eq!((huge.next_delay(), huge.next_delay()), (Duration::MAX, Duration::MAX));
    }
}
