//! The dispatcher: one task that claims due messages from the store, sends
//! each in a task of its own ([`super::send`]), which records the attempt.
//!
//! It wakes when the store reports newly queued messages, when a send
//! finishes, and on a short tick for scheduled retries. At most
//! [`MAX_IN_FLIGHT`] sends run at once, and [`PER_SUBSCRIPTION`] per
//! subscription, so a slow or dead subscriber holds a few slots, never all.
//! Claims are leased for the timeout and a margin: a send lost in a crash
//! is retried after a restart (at least once), never forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::send::Sender;
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
    let lease = settings.timeout + LEASE_MARGIN;
    let sender = match Sender::new(store.clone(), settings) {
        Ok(sender) => Arc::new(sender),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client: outbound webhooks are not sent");
            return;
        }
    };
    let queued = store.queued();
    let mut sends = JoinSet::new();
    let mut in_flight = InFlight::default();
    while !*stop.borrow() {
        let free = MAX_IN_FLIGHT.saturating_sub(sends.len());
        if free > 0 {
            let now = UtcMillis::now();
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
