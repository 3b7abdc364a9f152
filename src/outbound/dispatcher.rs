//! The dispatcher: one task that fans the outbox out into messages, claims
//! due messages from the store, and sends each in a task of its own
//! ([`super::send`]), which records the attempt.
//!
//! It wakes when the store reports new outbox rows or messages, when a
//! send finishes, and on a short tick for scheduled retries. No subscriber
//! waits for slots others hold: a subscription with nothing in flight may
//! always start a send; beyond that, at most [`MAX_IN_FLIGHT`] sends run
//! at once, and [`PER_SUBSCRIPTION`] per subscription. A subscription
//! whose last send failed gets one slot, and after [`OPEN_AFTER`] failures
//! in a row its breaker opens: nothing is sent to it for a pause that
//! doubles with each failed probe, then one probe at a time. The breakers
//! are this instance's. Claims are leased for the timeout and a margin: a
//! send lost in a crash is retried after a restart (at least once), never
//! forgotten.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::send::Sender;
use super::{Claim, Next, Outbox};
use crate::config::DeliverySettings;
use crate::model::UtcMillis;

/// Sends in flight at once at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Sends of one healthy subscription in flight at once at most.
pub const PER_SUBSCRIPTION: usize = 8;
/// Failed sends in a row that open a subscription's breaker.
pub const OPEN_AFTER: u32 = 5;
/// The first pause of an open breaker; each failed probe doubles it.
const FIRST_PAUSE: Duration = Duration::from_secs(1);
/// The longest pause of an open breaker.
const LONGEST_PAUSE: Duration = Duration::from_secs(300);
/// How often scheduled retries are looked for.
const TICK: Duration = Duration::from_millis(250);
/// How long a dispatcher that panicked waits before it starts again.
const RESTART_PAUSE: Duration = Duration::from_secs(1);
/// A claim outlives the send's timeout by this much.
const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// Keeps the dispatcher that `start` makes running until `stop` turns
/// true, and says in `running` whether one is. One that panics is counted
/// (`clientele_dispatcher_restarts_total`), logged and started again after
/// a second; one that gives up (it cannot build its HTTP client) stays
/// down, and `running` says so: `/readyz` then fails, so that the operator
/// or the orchestrator sees that nothing is sent.
pub async fn supervise<F, Fut>(mut start: F, stop: watch::Receiver<bool>, running: watch::Sender<bool>)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        running.send_replace(true);
        let ended = tokio::spawn(start()).await;
        if *stop.borrow() {
            return;
        }
        running.send_replace(false);
        if ended.is_ok() {
            tracing::error!("the outbound dispatcher stopped: outbound webhooks are not sent, /readyz fails");
            return;
        }
        metrics::counter!("clientele_dispatcher_restarts_total").increment(1);
        tracing::error!("the outbound dispatcher panicked; it starts again in a second");
        let mut stop = stop.clone();
        tokio::select! {
            () = tokio::time::sleep(RESTART_PAUSE) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// When a claim made at `now` for a send of `timeout` ends.
fn lease_until(now: UtcMillis, timeout: Duration) -> UtcMillis {
    now.saturating_add(timeout.saturating_add(LEASE_MARGIN))
}

/// Runs until `stop` turns true, then lets the sends in flight finish.
pub async fn run(outbox: Arc<dyn Outbox>, settings: DeliverySettings, mut stop: watch::Receiver<bool>) {
    let timeout = settings.timeout;
    let sender = match Sender::new(outbox.clone(), settings) {
        Ok(sender) => Arc::new(sender),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client: outbound webhooks are not sent");
            return;
        }
    };
    let queued = outbox.queued();
    let mut sends = JoinSet::new();
    let mut in_flight = InFlight::default();
    let mut breakers = Breakers::default();
    while !*stop.borrow() {
        let more = outbox.fan_out().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot fan out the outbox");
            false
        });
        let now = UtcMillis::now();
        let instant = Instant::now();
        breakers.forget_stale(instant);
        let claim = Claim {
            now,
            lease_until: lease_until(now, timeout),
            limit: MAX_IN_FLIGHT.saturating_sub(sends.len()),
            shares: in_flight.shares(&breakers, instant),
            per_subscription: PER_SUBSCRIPTION,
            busy: in_flight.per_subscription.keys().cloned().collect(),
            sending: in_flight.messages.clone(),
        };
        match outbox.claim_due(claim).await {
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
        tokio::select! {
            // More of the outbox to fan out: at once.
            () = std::future::ready(()), if more => {}
            () = queued.notified() => {}
            Some(done) = sends.join_next_with_id(), if !sends.is_empty() => in_flight.finish(done, &mut breakers),
            () = tokio::time::sleep(TICK) => {}
            _ = stop.changed() => {}
        }
        // Every send that finished meanwhile frees its slot before the next
        // claim, so that one claim serves many.
        while let Some(done) = sends.try_join_next_with_id() {
            in_flight.finish(done, &mut breakers);
        }
    }
    while let Some(done) = sends.join_next_with_id().await {
        in_flight.finish(done, &mut breakers);
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

    /// How many more sends of each subscription with sends in flight or a
    /// breaker may start now.
    fn shares(&self, breakers: &Breakers, now: Instant) -> HashMap<String, usize> {
        let running = |s: &String| self.per_subscription.get(s).copied().unwrap_or(0);
        self.per_subscription
            .keys()
            .chain(breakers.0.keys())
            .map(|s| (s.clone(), breakers.cap(s, now).saturating_sub(running(s))))
            .collect()
    }

    /// Frees a finished send's slots, whether it returned or panicked (its
    /// message is then sent again when its lease ends), and tells its
    /// subscription's breaker how it went.
    fn finish(&mut self, done: Result<(tokio::task::Id, Next), tokio::task::JoinError>, breakers: &mut Breakers) {
        let (task, delivered) = match done {
            Ok((task, next)) => (task, next == Next::Delivered),
            Err(e) => {
                tracing::error!("a send task failed; its message is sent again when its lease ends");
                (e.id(), false)
            }
        };
        let Some((seq, subscription)) = self.tasks.remove(&task) else {
            return;
        };
        breakers.record(&subscription, delivered, Instant::now());
        self.messages.remove(&seq);
        if let Some(count) = self.per_subscription.get_mut(&subscription) {
            *count -= 1;
            if *count == 0 {
                self.per_subscription.remove(&subscription);
            }
        }
    }
}

/// The subscriptions whose last send failed, on this instance: their
/// circuit breakers.
#[derive(Default)]
struct Breakers(HashMap<String, Breaker>);

struct Breaker {
    /// Failed sends in a row.
    failures: u32,
    /// When the last of them ended.
    failed_at: Instant,
    /// Open until then: nothing is sent.
    open_until: Option<Instant>,
}

impl Breakers {
    fn record(&mut self, subscription: &str, delivered: bool, now: Instant) {
        if delivered {
            self.0.remove(subscription);
            return;
        }
        let breaker = self.0.entry(subscription.to_owned()).or_insert(Breaker {
            failures: 0,
            failed_at: now,
            open_until: None,
        });
        breaker.failures += 1;
        breaker.failed_at = now;
        if let Some(probes) = breaker.failures.checked_sub(OPEN_AFTER) {
            let pause = FIRST_PAUSE.saturating_mul(1 << probes.min(16)).min(LONGEST_PAUSE);
            breaker.open_until = Some(now + pause);
            tracing::warn!(
                subscription,
                failures = breaker.failures,
                pause_s = pause.as_secs(),
                "a subscriber keeps failing: nothing is sent to it for a while, then one probe"
            );
        }
    }

    /// Forgets the breakers of subscriptions not tried for twice the longest
    /// pause: one still failing is probed within the longest pause, so
    /// these are deleted subscriptions, or ones with nothing left to send.
    fn forget_stale(&mut self, now: Instant) {
        self.0
            .retain(|_, b| now.saturating_duration_since(b.failed_at) <= 2 * LONGEST_PAUSE);
    }

    /// Sends of a subscription that may be in flight at once now: none
    /// while its breaker is open, one while its last send failed (a
    /// probe), else [`PER_SUBSCRIPTION`].
    fn cap(&self, subscription: &str, now: Instant) -> usize {
        match self.0.get(subscription) {
            None => PER_SUBSCRIPTION,
            Some(b) if b.open_until.is_some_and(|until| now < until) => 0,
            Some(_) => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_dispatcher_that_panics_is_started_again_and_one_that_gives_up_is_not_running() {
        let (stop, stopped) = watch::channel(false);
        let (running, watching) = watch::channel(false);
        let starts = Arc::new(AtomicUsize::new(0));
        let counted = starts.clone();
        let supervisor = tokio::spawn(supervise(
            move || {
                let start = counted.fetch_add(1, Ordering::SeqCst);
                // The first panics; the second gives up.
                async move { assert_ne!(start, 0, "the first dispatcher panics") }
            },
            stopped,
            running,
        ));
        supervisor
            .await
            .expect("the supervisor ends when a dispatcher gives up");
        assert_eq!(starts.load(Ordering::SeqCst), 2, "started again after the panic");
        assert!(!*watching.borrow(), "not running once it gave up");
        drop(stop);
    }

    #[test]
    fn a_lease_past_the_last_instant_saturates_instead_of_panicking() {
        let now = UtcMillis::now();
        assert_eq!(
            lease_until(now, Duration::from_secs(1)).as_millisecond(),
            now.as_millisecond() + 6_000
        );
        let last = UtcMillis::from_timestamp(jiff::Timestamp::MAX);
        assert_eq!(lease_until(now, Duration::from_secs(300_000_000_000)), last);
        assert_eq!(lease_until(last, Duration::from_secs(1)), last);
    }

    #[tokio::test]
    async fn a_dispatcher_stopped_on_purpose_is_not_started_again() {
        let (stop, stopped) = watch::channel(false);
        let (running, watching) = watch::channel(false);
        let told = stopped.clone();
        let supervisor = tokio::spawn(supervise(
            move || {
                let mut told = told.clone();
                async move {
                    let _ = told.wait_for(|stopped| *stopped).await;
                }
            },
            stopped,
            running,
        ));
        let mut seen = watching.clone();
        seen.wait_for(|running| *running).await.expect("running");
        stop.send(true).expect("the supervisor listens");
        supervisor.await.expect("the supervisor ends");
        assert!(*watching.borrow(), "a stop on purpose is not reported as a failure");
    }

    #[test]
    fn a_subscriber_that_keeps_failing_gets_one_slot_then_pauses_that_grow() {
        let mut breakers = Breakers::default();
        let start = Instant::now();
        assert_eq!(breakers.cap("sub", start), PER_SUBSCRIPTION);
        breakers.record("sub", false, start);
        assert_eq!(breakers.cap("sub", start), 1, "one send at a time after a failure");
        for _ in 1..OPEN_AFTER {
            breakers.record("sub", false, start);
        }
        assert_eq!(breakers.cap("sub", start), 0, "open after {OPEN_AFTER} failures");
        assert_eq!(breakers.cap("sub", start + FIRST_PAUSE), 1, "then one probe");
        breakers.record("sub", false, start);
        assert_eq!(
            breakers.cap("sub", start + FIRST_PAUSE),
            0,
            "a failed probe pauses longer"
        );
        assert_eq!(breakers.cap("sub", start + 2 * FIRST_PAUSE), 1);
        breakers.record("sub", true, start);
        assert_eq!(breakers.cap("sub", start), PER_SUBSCRIPTION, "closed by a delivery");
    }

    #[test]
    fn the_breaker_of_a_subscription_no_longer_tried_is_forgotten() {
        let mut breakers = Breakers::default();
        let start = Instant::now();
        for _ in 0..OPEN_AFTER {
            breakers.record("deleted", false, start);
        }
        breakers.record("failing", false, start + 2 * LONGEST_PAUSE);
        breakers.forget_stale(start + 2 * LONGEST_PAUSE + Duration::from_secs(1));
        assert_eq!(breakers.0.keys().collect::<Vec<_>>(), ["failing"]);
    }
}
