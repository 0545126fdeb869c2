//! Panics in the dispatcher's tasks are caught where they happen, never discarded: each is
//! logged at error, counted in [`TASK_PANICS`](crate::metrics::TASK_PANICS), and survived.
//!
//! - A delivery that panics counts as a failed attempt and goes through the retry policy again
//!   (`delivery.rs`); once the policy gives up it is dead-lettered with the panic's message.
//! - A worker or a fanout that panics is restarted with the waits of
//!   [`switchyard_log::supervise`]; meanwhile its trigger reports a [`TriggerFault`] (a worker from its
//!   committed position, so nothing is skipped; a fanout from the position it published, its
//!   triggers reading alone meanwhile). The fault clears, and the waits start again from the
//!   first, once the restarted task has run for [`HEALTHY_AFTER`] without panicking.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_log::backoff::ExponentialBackoff;
use switchyard_log::supervise::restart_backoff;
pub(crate) use switchyard_log::supervise::{catch_panic, panic_message, HEALTHY_AFTER};

use crate::metrics;

/// Why a running trigger does not work as it should, for its `Ready` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerFault {
    /// The condition's reason: `WorkerPanicked` or `FanoutPanicked`.
    pub reason: &'static str,
    /// What happened, with the panic's message and when the task restarts.
    pub message: String,
}

/// A task's current fault, shared between the task's supervisor and status readers.
#[derive(Debug, Clone, Default)]
pub(crate) struct FaultSlot(Arc<Mutex<Option<TriggerFault>>>);

impl FaultSlot {
    pub(crate) fn get(&self) -> Option<TriggerFault> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, fault: Option<TriggerFault>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }
}

/// The restart policy of one long-running task (a trigger's worker, a topic's fanout).
pub(crate) struct Restarts {
    /// `worker` or `fanout`: the metric's `task` label and the logs' word.
    task: &'static str,
    /// The fault's reason.
    reason: &'static str,
    backoff: ExponentialBackoff,
    /// Panics since the task last counted as healthy.
    panics: u32,
    fault: FaultSlot,
}

impl Restarts {
    pub(crate) fn new(task: &'static str, reason: &'static str, fault: FaultSlot) -> Restarts {
        Restarts { task, reason, backoff: restart_backoff(), panics: 0, fault }
    }

    /// Runs one life of the task, catching a panic; once it has run [`HEALTHY_AFTER`], a
    /// previous fault clears and the restart waits start again from the first.
    pub(crate) async fn watch<F: Future>(&mut self, life: F) -> Result<F::Output, String> {
        let mut life = std::pin::pin!(catch_panic(life));
        let mut healthy = std::pin::pin!(tokio::time::sleep(HEALTHY_AFTER));
        // Without a panic behind it there is nothing to clear: no timer (one per trigger would
        // wake thousands of workers 30 s after they start, for nothing).
        let mut counted_healthy = self.panics == 0;
        loop {
            tokio::select! {
                ended = &mut life => return ended,
                () = &mut healthy, if !counted_healthy => {
                    counted_healthy = true;
                    self.healthy();
                }
            }
        }
    }

    /// Records a panic of the task serving `scope` (a trigger's `namespace/name`, or a topic);
    /// returns how long to wait before restarting it.
    pub(crate) fn panicked(&mut self, scope: &str, message: &str) -> Duration {
        self.panics = self.panics.saturating_add(1);
        let wait = self.backoff.next_delay();
        metrics::task_panicked(self.task);
        tracing::error!(
            task = self.task, scope, panic = %message, panics = self.panics, restart_in_ms = wait.as_millis() as u64,
            "task panicked; restarting"
        );
        let times = if self.panics == 1 { String::new() } else { format!(" ({} times in a row)", self.panics) };
        self.fault.set(Some(TriggerFault {
            reason: self.reason,
            message: format!("the {} panicked{times}: {message}; restarting in {wait:?}", self.task),
        }));
        wait
    }

    fn healthy(&mut self) {
        if self.panics > 0 {
            tracing::info!(task = self.task, "restarted task runs healthily again");
        }
        self.panics = 0;
        self.backoff = restart_backoff();
        self.fault.set(None);
    }
}

#[cfg(test)]
mod tests {
    use switchyard_log::supervise::RESTART_FIRST;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_fault_is_reported_until_the_restarted_task_has_run_healthily() {
        let slot = FaultSlot::default();
        let mut restarts = Restarts::new("worker", "WorkerPanicked", slot.clone());
        let waits: Vec<Duration> = (0..3).map(|_| restarts.panicked("ns/t", "boom")).collect();
        assert_eq!(waits, [RESTART_FIRST, 2 * RESTART_FIRST, 4 * RESTART_FIRST]);
        let fault = slot.get().expect("a fault");
        assert_eq!(fault.reason, "WorkerPanicked");
        assert_eq!(fault.message, "the worker panicked (3 times in a row): boom; restarting in 4s");
        // A life shorter than HEALTHY_AFTER leaves the fault.
        restarts.watch(tokio::time::sleep(HEALTHY_AFTER / 2)).await.unwrap();
        assert!(slot.get().is_some());
        restarts.watch(tokio::time::sleep(HEALTHY_AFTER + RESTART_FIRST)).await.unwrap();
        assert_eq!(slot.get(), None);
        assert_eq!(restarts.panicked("ns/t", "again"), RESTART_FIRST, "the waits start again");
    }
}
