//! What every supervised task shares (a trigger's worker, a broker's fanout, a source's
//! activity, the application of a declaration): how a panic is caught and put into words, and
//! how soon a task that panicked starts again. One policy, so that every `Ready=False` after a
//! panic lasts as long, whatever panicked.

use std::any::Any;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::task::Poll;
use std::time::Duration;

use crate::backoff::ExponentialBackoff;

/// The first wait before restarting a task that panicked.
pub const RESTART_FIRST: Duration = Duration::from_secs(1);
/// The longest wait before restarting a task that keeps panicking.
pub const RESTART_MAX: Duration = Duration::from_secs(60);
/// How long a restarted task runs without panicking before it counts as healthy again (its
/// fault clears, and the waits start again from [`RESTART_FIRST`]).
pub const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// The longest panic message kept for a status or a log line, in characters.
const MESSAGE_CHARS: usize = 300;

/// The waits between restarts of a task that panicked.
pub fn restart_backoff() -> ExponentialBackoff {
    ExponentialBackoff::new(RESTART_FIRST, RESTART_MAX)
}

/// Polls `future` to completion; a panic while polling it ends it with the panic's message.
pub async fn catch_panic<F: Future>(future: F) -> Result<F::Output, String> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(move |cx| match catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
        Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
        Ok(Poll::Pending) => Poll::Pending,
        Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
    })
    .await
}

/// The message a panic was raised with, cut to a length a status can show.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    };
    let mut chars = text.chars();
    let short: String = chars.by_ref().take(MESSAGE_CHARS).collect();
    if chars.next().is_some() {
        format!("{short}…")
    } else {
        short
    }
}

/// The panic's message when a spawned task ended by panicking; `None` when it returned or was
/// cancelled.
pub fn join_panic(joined: Result<(), tokio::task::JoinError>) -> Option<String> {
    let error = joined.err().filter(tokio::task::JoinError::is_panic)?;
    Some(panic_message(error.into_panic().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_becomes_its_message_and_a_long_one_is_cut() {
        assert_eq!(catch_panic(async { 7 }).await, Ok(7));
        let caught = catch_panic(async { panic!("boom {}", 1) }).await;
        assert_eq!(caught, Err::<(), _>("boom 1".to_owned()));
        let caught = catch_panic(async { std::panic::panic_any(3_u8) }).await;
        assert_eq!(caught, Err::<(), _>("a panic without a message".to_owned()));
        let long = "x".repeat(1000);
        let joined = tokio::spawn(async move { panic!("{long}") }).await;
        let message = join_panic(joined).unwrap();
        assert_eq!(message.chars().count(), MESSAGE_CHARS + 1);
        assert_eq!(join_panic(Ok(())), None);
    }
}
