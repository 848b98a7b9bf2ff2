//! Capped exponential backoff between reconnection attempts.

use super::ClientError;
use slog::{warn, Logger};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Capped exponential backoff between reconnection attempts.
pub struct Backoff {
    initial: Duration,
    max: Duration,
    delay: Duration,
    attempts_allowed: u32,
    failures: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, attempts_allowed: u32) -> Backoff {
        Backoff { initial, max, delay: initial, attempts_allowed, failures: 0 }
    }

    /// After progress (an ack), failures count from zero again.
    pub fn reset(&mut self) {
        self.failures = 0;
        self.delay = self.initial;
    }

    /// The delay before the next attempt, or `None` when out of attempts.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.failures >= self.attempts_allowed {
            return None;
        }
        self.failures += 1;
        let delay = self.delay;
        self.delay = (self.delay * 2).min(self.max);
        Some(delay)
    }

    /// Sleeps before a retry, or hands back `error` when it must not be retried.
    pub async fn retry_or_fail(
        &mut self,
        error: ClientError,
        log: &Logger,
        cancel: &CancellationToken,
    ) -> Result<(), ClientError> {
        if !error.is_retryable() {
            return Err(error);
        }
        let Some(delay) = self.next_delay() else {
            return Err(ClientError::GaveUp { attempts: self.failures, last: Box::new(error) });
        };
        warn!(log, "action: reconnect | result: in_progress"; "attempt" => self.failures,
            "retry_in_ms" => delay.as_millis() as u64, "error" => %error);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = cancel.cancelled() => Err(ClientError::Cancelled),
        }
    }
}
