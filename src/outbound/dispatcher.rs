//! The dispatcher: one task that fans the outbox out into messages, claims
//! due messages from the store, sends each in a task of its own
//! ([`super::send`]), and records their attempts.
//!
//! The store's work and the sends do not wait for each other. One trip to
//! the store at a time records every attempt that ended since the last
//! (in one transaction), fans out and claims; meanwhile the sends go on,
//! and each that ends frees its slot for a message already claimed. A
//! healthy subscription is claimed ahead of its slots, as many as they
//! send in [`AHEAD_FOR`] at the pace of its last delivery (up to [`AHEAD`]
//! times them), so that its slots do not wait for the store's commits; a
//! claimed message is sent only while its lease covers the whole send,
//! else it is left to be claimed again once the lease ends. A message is
//! not claimed again while this instance holds it (claimed, being sent,
//! or its attempt not recorded yet), and a customer's next message is due
//! only once the attempt that ends its predecessor is recorded: one at a
//! time per customer, in order.
//!
//! It wakes when the store reports new outbox rows or messages, when a
//! send or a trip to the store ends, and on a short tick for scheduled
//! retries. No subscriber waits for slots others hold: a subscription with
//! nothing in flight may always start a send; beyond that, at most
//! [`MAX_IN_FLIGHT`] sends run at once, and [`PER_SUBSCRIPTION`] per
//! subscription. A subscription whose last send failed gets one slot, and
//! after [`OPEN_AFTER`] failures in a row its breaker opens: nothing is
//! sent to it for a pause that doubles with each failed probe, then one
//! probe at a time. The breakers are this instance's. Claims are leased for
//! the timeout and a margin: a send lost in a crash is retried after a
//! restart (at least once), never forgotten.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::send::Sender;
use super::{Claim, Due, Next, Outbox, Recorded};
use crate::config::DeliverySettings;
use crate::model::UtcMillis;

/// Sends in flight at once at most.
pub const MAX_IN_FLIGHT: usize = 64;
/// Sends of one healthy subscription in flight at once at most.
pub const PER_SUBSCRIPTION: usize = 8;
/// How far ahead of its slots a healthy subscription is claimed at most:
/// it holds up to this many times [`PER_SUBSCRIPTION`] messages.
const AHEAD: usize = 32;
/// A healthy subscription holds what its slots send in this long, at the
/// pace of its last delivery.
const AHEAD_FOR: Duration = Duration::from_secs(1);
/// A pace older than this is forgotten.
const PACE_FOR: Duration = Duration::from_secs(60);
/// Messages held at once at most (claimed, and not yet recorded), besides
/// the first of each subscription that holds none.
const MAX_HELD: usize = MAX_IN_FLIGHT * AHEAD;
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

/// A trip to the store under way.
type Visit = Pin<Box<dyn Future<Output = Trip> + Send>>;

/// Runs until `stop` turns true, then lets the sends in flight finish and
/// records them.
pub async fn run(outbox: Arc<dyn Outbox>, settings: DeliverySettings, mut stop: watch::Receiver<bool>) {
    let timeout = settings.timeout;
    let sender = match Sender::new(settings) {
        Ok(sender) => Arc::new(sender),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client: outbound webhooks are not sent");
            return;
        }
    };
    let queued = outbox.queued();
    let mut sends = JoinSet::new();
    let mut held = Held::default();
    let mut breakers = Breakers::default();
    let mut trip: Option<Visit> = None;
    // Whether to go to the store even with no attempt to record.
    let mut wake = true;
    loop {
        let stopping = *stop.borrow();
        if trip.is_none() {
            if stopping {
                held.give_back_ready();
            }
            let claim = (!stopping && (wake || !held.unrecorded.is_empty())).then(|| {
                let now = UtcMillis::now();
                let instant = Instant::now();
                breakers.forget_stale(instant);
                held.claim(now, lease_until(now, timeout), &breakers, instant)
            });
            if claim.is_some() || !held.unrecorded.is_empty() {
                wake = false;
                trip = Some(Box::pin(visit(
                    outbox.clone(),
                    std::mem::take(&mut held.unrecorded),
                    claim,
                )));
            } else if stopping && sends.is_empty() {
                return;
            }
        }
        tokio::select! {
            Some(done) = sends.join_next_with_id(), if !sends.is_empty() => held.finish(done, &mut breakers),
            back = async { trip.as_mut().expect("a trip under way").await }, if trip.is_some() => {
                trip = None;
                wake |= held.arrive(back);
            }
            () = queued.notified(), if !stopping => wake = true,
            () = tokio::time::sleep(TICK), if !stopping => wake = true,
            _ = stop.changed(), if !stopping => {}
        }
        // Every send that ended meanwhile frees its slot, and its attempt
        // goes with the next trip.
        while let Some(done) = sends.try_join_next_with_id() {
            held.finish(done, &mut breakers);
        }
        if !*stop.borrow() {
            held.start(&mut sends, &sender, &breakers, timeout);
        }
    }
}

/// What a trip to the store brought back.
struct Trip {
    /// The messages whose attempts it recorded (or failed to: then their
    /// leases end and they are sent again).
    recorded: Vec<i64>,
    /// Whether more of the outbox waits to be fanned out.
    more: bool,
    claimed: Vec<Due>,
    /// When the claim's lease ends.
    lease_until: UtcMillis,
}

/// Records the attempts, fans out and claims, all asked at once: the
/// embedded store's writer takes them in that order into one transaction.
async fn visit(outbox: Arc<dyn Outbox>, attempts: Vec<Recorded>, claim: Option<Claim>) -> Trip {
    let recorded = attempts.iter().map(|r| r.message.seq).collect();
    let lease_until = claim.as_ref().map_or_else(UtcMillis::now, |c| c.lease_until);
    let claiming = claim.is_some();
    let record = async {
        if attempts.is_empty() {
            return;
        }
        if let Err(e) = outbox.record_attempts(attempts).await {
            // The leases end and the messages are sent again: at least once.
            tracing::error!(error = %e, "cannot record message attempts");
        }
    };
    let fan_out = async {
        if !claiming {
            return false;
        }
        outbox.fan_out().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot fan out the outbox");
            false
        })
    };
    let claim_due = async {
        let Some(claim) = claim else {
            return Vec::new();
        };
        outbox.claim_due(claim).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot claim due messages");
            Vec::new()
        })
    };
    let ((), more, claimed) = tokio::join!(record, fan_out, claim_due);
    Trip {
        recorded,
        more,
        claimed,
        lease_until,
    }
}

/// What this instance holds of the outbox: claimed messages waiting for a
/// slot, sends running, and attempts not recorded yet.
#[derive(Default)]
struct Held {
    /// Claimed messages waiting for a slot, per subscription, oldest
    /// first, each with the end of its lease.
    ready: HashMap<String, VecDeque<(Due, UtcMillis)>>,
    /// The sends running, by task: message and subscription.
    tasks: HashMap<tokio::task::Id, (i64, String)>,
    running: HashMap<String, usize>,
    /// Every message held, whether ready, being sent or its attempt not
    /// recorded yet: none is claimed again before it is recorded.
    messages: HashSet<i64>,
    /// Attempts that ended, for the next trip to record.
    unrecorded: Vec<Recorded>,
    /// How long each subscription's last delivery took, and when it ended.
    pace: HashMap<String, (Duration, Instant)>,
}

impl Held {
    fn running(&self, subscription: &str) -> usize {
        self.running.get(subscription).copied().unwrap_or(0)
    }

    /// Messages of a subscription claimed and not sent or being sent.
    fn held(&self, subscription: &str) -> usize {
        self.running(subscription) + self.ready.get(subscription).map_or(0, VecDeque::len)
    }

    /// How many messages of a subscription it may hold now: its slots,
    /// and for a healthy one what they send in [`AHEAD_FOR`] at its pace.
    fn depth(&self, subscription: &str, breakers: &Breakers, now: Instant) -> usize {
        let cap = breakers.cap(subscription, now);
        match self.pace.get(subscription) {
            Some((took, _)) if cap == PER_SUBSCRIPTION => {
                let rounds = AHEAD_FOR.as_micros() / took.as_micros().max(1);
                cap * usize::try_from(rounds).unwrap_or(AHEAD).clamp(1, AHEAD)
            }
            _ => cap,
        }
    }

    /// The next claim: what each subscription may take to its depth.
    fn claim(&mut self, now: UtcMillis, lease_until: UtcMillis, breakers: &Breakers, instant: Instant) -> Claim {
        self.pace
            .retain(|_, (_, at)| instant.saturating_duration_since(*at) <= PACE_FOR);
        let listed: HashSet<&String> = self
            .running
            .keys()
            .chain(self.ready.keys())
            .chain(breakers.0.keys())
            .chain(self.pace.keys())
            .collect();
        let shares = listed
            .into_iter()
            .map(|s| {
                let share = self.depth(s, breakers, instant).saturating_sub(self.held(s));
                (s.clone(), share)
            })
            .collect();
        let holding = self.tasks.len() + self.ready.values().map(VecDeque::len).sum::<usize>();
        Claim {
            now,
            lease_until,
            limit: MAX_HELD.saturating_sub(holding),
            shares,
            per_subscription: PER_SUBSCRIPTION,
            busy: self.running.keys().chain(self.ready.keys()).cloned().collect(),
            sending: self.messages.clone(),
        }
    }

    /// Takes in what a trip brought back; returns whether to go again at
    /// once (more to fan out, or a claim that found messages).
    fn arrive(&mut self, trip: Trip) -> bool {
        for seq in &trip.recorded {
            self.messages.remove(seq);
        }
        let found = !trip.claimed.is_empty();
        for due in trip.claimed {
            self.messages.insert(due.seq);
            self.ready
                .entry(due.subscription_id.clone())
                .or_default()
                .push_back((due, trip.lease_until));
        }
        trip.more || found
    }

    /// Starts the sends the slots allow, one per subscription in turn.
    fn start(&mut self, sends: &mut JoinSet<Recorded>, sender: &Arc<Sender>, breakers: &Breakers, timeout: Duration) {
        let now = Instant::now();
        let mut waiting: Vec<String> = self.ready.keys().cloned().collect();
        while !waiting.is_empty() {
            waiting.retain(|subscription| self.start_one(subscription, sends, sender, breakers, now, timeout));
        }
        self.ready.retain(|_, queue| !queue.is_empty());
    }

    /// Starts one send of a subscription if its slots allow; returns
    /// whether it did. A message whose lease would end before its send
    /// does is left: claimed again once the lease ends.
    fn start_one(
        &mut self,
        subscription: &str,
        sends: &mut JoinSet<Recorded>,
        sender: &Arc<Sender>,
        breakers: &Breakers,
        now: Instant,
        timeout: Duration,
    ) -> bool {
        let running = self.running(subscription);
        if running >= breakers.cap(subscription, now) || (running > 0 && sends.len() >= MAX_IN_FLIGHT) {
            return false;
        }
        let Some(queue) = self.ready.get_mut(subscription) else {
            return false;
        };
        while let Some((message, lease_until)) = queue.pop_front() {
            if UtcMillis::now().saturating_add(timeout + LEASE_MARGIN / 2) > lease_until {
                tracing::debug!(
                    subscription,
                    message = message.seq,
                    "a claimed message waited past its lease's margin: claimed again when the lease ends"
                );
                self.messages.remove(&message.seq);
                continue;
            }
            let seq = message.seq;
            let sender = sender.clone();
            let task = sends.spawn(async move { sender.attempt(message).await });
            self.tasks.insert(task.id(), (seq, subscription.to_owned()));
            *self.running.entry(subscription.to_owned()).or_default() += 1;
            return true;
        }
        false
    }

    /// Gives back the messages waiting for a slot: claimed again once
    /// their leases end.
    fn give_back_ready(&mut self) {
        for (message, _) in self.ready.drain().flat_map(|(_, queue)| queue) {
            self.messages.remove(&message.seq);
        }
    }

    /// Frees an ended send's slot, whether it returned (its attempt is
    /// recorded at the next trip) or panicked (its message is sent again
    /// when its lease ends), and tells its subscription's breaker how it
    /// went.
    fn finish(&mut self, done: Result<(tokio::task::Id, Recorded), tokio::task::JoinError>, breakers: &mut Breakers) {
        let (task, recorded) = match done {
            Ok((task, recorded)) => (task, Some(recorded)),
            Err(e) => {
                tracing::error!("a send task failed; its message is sent again when its lease ends");
                (e.id(), None)
            }
        };
        let Some((seq, subscription)) = self.tasks.remove(&task) else {
            return;
        };
        if let Some(count) = self.running.get_mut(&subscription) {
            *count -= 1;
            if *count == 0 {
                self.running.remove(&subscription);
            }
        }
        let now = Instant::now();
        let delivered = recorded.as_ref().is_some_and(|r| r.next == Next::Delivered);
        breakers.record(&subscription, delivered, now);
        match recorded {
            Some(recorded) => {
                if delivered {
                    let took = Duration::from_millis(recorded.attempt.duration_ms);
                    self.pace.insert(subscription, (took, now));
                } else {
                    self.pace.remove(&subscription);
                }
                self.unrecorded.push(recorded);
            }
            None => {
                self.pace.remove(&subscription);
                self.messages.remove(&seq);
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
    fn a_healthy_subscription_is_claimed_ahead_by_its_pace_and_a_failing_one_is_not() {
        let mut held = Held::default();
        let mut breakers = Breakers::default();
        let now = Instant::now();
        assert_eq!(
            held.depth("new", &breakers, now),
            PER_SUBSCRIPTION,
            "no pace yet: its slots"
        );
        held.pace.insert("fast".into(), (Duration::from_millis(1), now));
        held.pace.insert("slow".into(), (Duration::from_millis(250), now));
        held.pace.insert("slower".into(), (Duration::from_secs(3), now));
        assert_eq!(held.depth("fast", &breakers, now), PER_SUBSCRIPTION * AHEAD);
        assert_eq!(
            held.depth("slow", &breakers, now),
            PER_SUBSCRIPTION * 4,
            "what it sends in a second"
        );
        assert_eq!(held.depth("slower", &breakers, now), PER_SUBSCRIPTION);
        breakers.record("fast", false, now);
        assert_eq!(held.depth("fast", &breakers, now), 1, "one probe after a failure");
    }

    #[test]
    fn a_claimed_message_is_held_until_its_attempt_is_recorded() {
        let due = |seq| Due {
            seq,
            subscription_id: "sub".into(),
            url: "http://127.0.0.1/".into(),
            secret: String::new(),
            event_id: format!("evt_{seq}"),
            body: "{}".into(),
            created_at: UtcMillis::now(),
            failures: 0,
            generation: 0,
            claim: 1,
        };
        let mut held = Held::default();
        let now = UtcMillis::now();
        let found = held.arrive(Trip {
            recorded: Vec::new(),
            more: false,
            claimed: vec![due(1), due(2)],
            lease_until: now,
        });
        assert!(found, "a claim that found messages goes again");
        let claim = held.claim(now, now, &Breakers::default(), Instant::now());
        assert_eq!(claim.sending, HashSet::from([1, 2]));
        assert_eq!(claim.share("sub"), PER_SUBSCRIPTION - 2);
        assert!(claim.busy.contains("sub"));
        held.give_back_ready();
        assert!(
            held.messages.is_empty(),
            "given back: claimed again once the lease ends"
        );
        held.messages.insert(3);
        let again = held.arrive(Trip {
            recorded: vec![3],
            more: false,
            claimed: Vec::new(),
            lease_until: now,
        });
        assert!(!again);
        assert!(held.messages.is_empty(), "recorded: claimable again");
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
