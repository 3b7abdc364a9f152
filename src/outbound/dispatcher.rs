//! The dispatcher: one task that claims due messages from the store, sends
//! each as a signed `POST` in a task of its own, and records the attempt.
//!
//! It wakes when the store reports newly queued messages, when a send
//! finishes, and on a short tick for scheduled retries. At most
//! [`MAX_IN_FLIGHT`] sends run at once, and [`PER_SUBSCRIPTION`] per
//! subscription, so a slow or dead subscriber holds a few slots, never all.
//! Claims are leased for the timeout and a margin: a send lost in a crash
//! is retried after a restart (at least once), never forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::policy::{self, Answer};
use super::{Attempt, Due, Next, signing};
use crate::config::DeliverySettings;
use crate::model::UtcMillis;
use crate::store::{Claim, Store};

/// Sends in flight at once at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Sends of one subscription in flight at once at most.
pub const PER_SUBSCRIPTION: usize = 8;
/// How often scheduled retries are looked for.
const TICK: Duration = Duration::from_millis(250);
/// A claim outlives the send's timeout by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Runs until `stop` turns true, then lets the sends in flight finish.
pub async fn run(store: Arc<dyn Store>, settings: DeliverySettings, mut stop: watch::Receiver<bool>) {
    // The TLS crypto provider reqwest's rustls uses; installed once per
    // process (a second install is refused, harmlessly).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Clientele/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client: outbound webhooks are not sent");
            return;
        }
    };
    let sender = Arc::new(Sender {
        client,
        store: store.clone(),
        settings,
    });
    let queued = store.queued();
    let mut sends = JoinSet::new();
    let mut in_flight = InFlight::default();
    while !*stop.borrow() {
        let free = MAX_IN_FLIGHT.saturating_sub(sends.len());
        if free > 0 {
            let now = UtcMillis::now();
            let lease = sender.settings.timeout + LEASE_MARGIN;
            let claim = Claim {
                now,
                lease_until: UtcMillis::from_timestamp(now.as_timestamp() + lease),
                limit: free,
                per_subscription: PER_SUBSCRIPTION,
                in_flight: in_flight.per_subscription.clone(),
                sending: in_flight.messages.clone(),
            };
            match store.claim_due(claim).await {
                Ok(due) => {
                    for message in due {
                        let (seq, subscription) = (message.seq, message.subscription_id.clone());
                        let sender = sender.clone();
                        let task = sends.spawn(async move { sender.attempt(message).await });
                        in_flight.start(task.id(), seq, subscription);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot claim due messages"),
            }
        }
        tokio::select! {
            () = queued.notified() => {}
            Some(done) = sends.join_next_with_id(), if !sends.is_empty() => in_flight.finish(done),
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
        // Every send that finished meanwhile frees its slot before the next
        // claim, so that one claim serves many.
        while let Some(done) = sends.try_join_next_with_id() {
            in_flight.finish(done);
        }
    }
    while let Some(done) = sends.join_next_with_id().await {
        in_flight.finish(done);
    }
}

/// The sends running now: by task, by message and by subscription.
#[derive(Default)]
struct InFlight {
    tasks: HashMap<tokio::task::Id, (i64, String)>,
    messages: HashSet<i64>,
    per_subscription: HashMap<String, usize>,
}

impl InFlight {
    fn start(&mut self, task: tokio::task::Id, seq: i64, subscription: String) {
        self.messages.insert(seq);
        *self.per_subscription.entry(subscription.clone()).or_default() += 1;
        self.tasks.insert(task, (seq, subscription));
    }

    /// Frees a finished send's slots, whether it returned or panicked (its
    /// message is then sent again when its lease ends).
    fn finish(&mut self, done: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let task = match done {
            Ok((task, ())) => task,
            Err(e) => {
                tracing::error!("a send task failed; its message is sent again when its lease ends");
                e.id()
            }
        };
        let Some((seq, subscription)) = self.tasks.remove(&task) else {
            return;
        };
        self.messages.remove(&seq);
        if let Some(count) = self.per_subscription.get_mut(&subscription) {
            *count -= 1;
            if *count == 0 {
                self.per_subscription.remove(&subscription);
            }
        }
    }
}

struct Sender {
    client: reqwest::Client,
    store: Arc<dyn Store>,
    settings: DeliverySettings,
}

impl Sender {
    /// Sends one message and records the attempt.
    async fn attempt(&self, message: Due) {
        let at = UtcMillis::now();
        let started = Instant::now();
        let timestamp = at.as_timestamp().as_second();
        let key = signing::key(&message.secret).unwrap_or_else(|| message.secret.as_bytes().to_vec());
        let response = self
            .client
            .post(&message.url)
            .header("content-type", "application/json")
            .header("webhook-id", &message.event_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signing::sign(&key, &message.event_id, timestamp, &message.body),
            )
            .body(message.body.clone())
            .send()
            .await;
        let elapsed = started.elapsed();
        // Errors name what happened, never the URL (it may hold a token).
        let (answer, status_code, error) = match response {
            Ok(response) => {
                let status = response.status();
                let answer = if status.is_success() {
                    Answer::Success
                } else if status == StatusCode::GONE {
                    Answer::Gone
                } else {
                    let asked = [StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE]
                        .contains(&status)
                        .then(|| response.headers().get("retry-after")?.to_str().ok())
                        .flatten()
                        .and_then(|v| policy::retry_after(v, UtcMillis::now()));
                    Answer::Failed { retry_after: asked }
                };
                (answer, Some(status.as_u16()), None)
            }
            Err(e) => {
                let error = if e.is_timeout() {
                    format!("timed out after {:?}", self.settings.timeout)
                } else if e.is_connect() {
                    "cannot connect".to_owned()
                } else {
                    "the request failed".to_owned()
                };
                (Answer::Failed { retry_after: None }, None, Some(error))
            }
        };
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
        if let Err(e) = self.store.record_attempt(&message, attempt, next).await {
            // The lease ends and the message is sent again: at least once.
            tracing::error!(error = %e, message = message.seq, "cannot record a message attempt");
        }
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
