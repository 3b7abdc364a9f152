//! Sending one message: signed once ([`super::deliver::Signed`]), handed
//! to the [`super::deliver::Destination`] its URL names (HTTP or a broker,
//! kept per URL by [`Destinations`]), within `[delivery] timeout`, and the
//! attempt returned with what follows from it ([`super::policy`]), for the
//! dispatcher to record with others. The same for every kind: metrics,
//! logs, retries and dead messages do not know where the message went.

use std::time::Instant;

use super::deliver::{Destinations, Outcome, Signed};
use super::{Attempt, Due, Next, Recorded, policy};
use crate::config::DeliverySettings;
use crate::model::UtcMillis;

pub struct Sender {
    destinations: Destinations,
    settings: DeliverySettings,
}

impl Sender {
    pub fn new(settings: DeliverySettings) -> Result<Self, reqwest::Error> {
        Ok(Self {
            destinations: Destinations::new(&settings)?,
            settings,
        })
    }

    /// Sends one message; returns the attempt and what follows from it,
    /// to record.
    pub async fn attempt(&self, message: Due) -> Recorded {
        let at = UtcMillis::now();
        let started = Instant::now();
        let outcome = self.deliver(&message, at).await;
        let elapsed = started.elapsed();
        let Outcome {
            answer,
            status_code,
            error,
        } = outcome;
        let next = policy::next(
            answer,
            message.failures,
            &self.settings.retry_schedule,
            UtcMillis::now(),
            jitter(),
        );
        let outcome = match next {
            Next::Delivered => "delivered",
            Next::Retry { .. } => "retried",
            Next::Dead { .. } => "dead",
        };
        metrics::counter!("clientele_messages_total", "outcome" => outcome).increment(1);
        metrics::histogram!("clientele_delivery_attempt_seconds").record(elapsed.as_secs_f64());
        if next == Next::Delivered {
            let lag = UtcMillis::now().as_millisecond() - message.created_at.as_millisecond();
            metrics::histogram!("clientele_delivery_lag_seconds").record(lag.max(0) as f64 / 1000.0);
        }
        match next {
            Next::Dead {
                disable_subscription: true,
            } => tracing::warn!(
                subscription = %message.subscription_id,
                "the subscriber answered 410 Gone: subscription disabled"
            ),
            Next::Dead { .. } => tracing::warn!(
                subscription = %message.subscription_id,
                message = message.seq,
                "a message is dead after its last retry"
            ),
            _ => tracing::debug!(
                subscription = %message.subscription_id,
                message = message.seq,
                status = status_code,
                outcome,
                "message attempt"
            ),
        }
        let attempt = Attempt {
            at,
            status_code,
            error,
            duration_ms: elapsed.as_millis() as u64,
        };
        Recorded { message, attempt, next }
    }

    /// Signs the message and hands it to its destination, within the
    /// timeout whatever the destination does.
    async fn deliver(&self, message: &Due, at: UtcMillis) -> Outcome {
        let signed = match Signed::new(message, at) {
            Ok(signed) => signed,
            Err(reason) => return Outcome::failed(reason),
        };
        let destination = match self.destinations.get(&message.url) {
            Ok(destination) => destination,
            Err(reason) => return Outcome::failed(reason),
        };
        let timeout = self.settings.timeout;
        tokio::time::timeout(timeout, destination.deliver(&signed))
            .await
            .unwrap_or_else(|_| Outcome::failed(format!("timed out after {timeout:?}")))
    }
}

/// A number in `[0, 1)` for retry jitter.
fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}
