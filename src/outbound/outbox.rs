//! The outbox as the dispatcher sees it: the role a store plays for
//! outbound delivery ([`Outbox`]), defined here, where it is used, and
//! implemented by each store backend. It fans committed changes out into
//! messages, hands out due messages under a lease ([`Claim`]), and records
//! what each attempt led to.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::{Due, Recorded};
use crate::BoxFuture;
use crate::model::UtcMillis;

/// Why the outbox could not be read or written; the dispatcher logs it and
/// tries again.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct OutboxError(Box<dyn std::error::Error + Send + Sync>);

impl OutboxError {
    pub fn new(cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        OutboxError(Box::new(cause))
    }
}

/// The store's role for outbound delivery.
pub trait Outbox: Send + Sync + 'static {
    /// Fans the next outbox rows out into messages, one per subscription
    /// that wants a row (enabled ones; a disabled one gets its rows once
    /// enabled again), and makes the first of each customer's line due.
    /// Returns whether more rows wait.
    fn fan_out(&self) -> BoxFuture<'_, Result<bool, OutboxError>>;

    /// Claims due messages (see [`Claim`]): the heads of the customers'
    /// lines, of enabled subscriptions, due now. Only a line's first
    /// pending message has a due time, so each customer's versions go out
    /// in order.
    fn claim_due(&self, claim: Claim) -> BoxFuture<'_, Result<Vec<Due>, OutboxError>>;

    /// Records attempts at claimed messages, each with what follows from
    /// it unless the message was retried or replayed since it was claimed,
    /// or another claim took it since (its lease ran out): then the
    /// attempt is listed and moves nothing. Many in one transaction: a
    /// failure records none of them, and their messages are sent again
    /// once their leases end.
    fn record_attempts(&self, attempts: Vec<Recorded>) -> BoxFuture<'_, Result<(), OutboxError>>;

    /// Pending messages per subscription, and the outbox rows not fanned
    /// out yet.
    fn backlog(&self) -> BoxFuture<'_, Result<Backlog, OutboxError>>;

    /// Notified after a commit that wrote outbox rows or queued messages.
    fn queued(&self) -> Arc<tokio::sync::Notify>;
}

/// Which due messages the dispatcher takes, and for how long.
#[derive(Debug, Clone)]
pub struct Claim {
    pub now: UtcMillis,
    /// Claimed messages are not due again before this: an attempt lost in a
    /// crash is retried once it passes.
    pub lease_until: UtcMillis,
    /// Messages the claim may take, besides the first of each
    /// subscription the dispatcher holds none of: that one it always may,
    /// so that no subscriber waits for the slots others hold.
    pub limit: usize,
    /// How many more messages of a subscription the claim may take, for
    /// those listed; `per_subscription` for the others.
    pub shares: HashMap<String, usize>,
    pub per_subscription: usize,
    /// The subscriptions the dispatcher holds claimed messages of now.
    pub busy: HashSet<String>,
    /// The messages the dispatcher holds now (by `seq`: claimed, being
    /// sent, or their attempts not recorded yet): never claimed again while
    /// it does, even when due again (retried, replayed, or their lease ran
    /// out), so that a message is not sent twice at once and no claim
    /// leases one it cannot send. Due, they are claimed once their
    /// attempts are recorded.
    pub sending: HashSet<i64>,
}

impl Claim {
    /// How many of a subscription's messages this claim may take at most.
    pub fn share(&self, subscription: &str) -> usize {
        self.shares.get(subscription).copied().unwrap_or(self.per_subscription)
    }

    /// What to take of each subscription's due messages (oldest first, at
    /// most its [`share`](Self::share)): one of each first, from the
    /// subscription at `turn` in rotation, the first of an idle one
    /// whatever the limit; then the others while the limit lasts.
    pub fn pick(&self, mut due: Vec<(String, Vec<i64>)>, turn: usize) -> Vec<i64> {
        let start = turn % due.len().max(1);
        due.rotate_left(start);
        let mut budget = self.limit;
        let mut picked = Vec::new();
        let mut more = Vec::new();
        for (subscription, mut seqs) in due {
            seqs.retain(|seq| !self.sending.contains(seq));
            seqs.truncate(self.share(&subscription));
            let Some(&first) = seqs.first() else {
                continue;
            };
            if budget == 0 && self.busy.contains(&subscription) {
                continue;
            }
            picked.push(first);
            budget = budget.saturating_sub(1);
            more.push(seqs);
        }
        for seqs in more {
            let take = budget.min(seqs.len() - 1);
            picked.extend_from_slice(&seqs[1..=take]);
            budget -= take;
        }
        picked
    }
}

#[cfg(test)]
mod claim_tests {
    use super::*;

    fn claim(limit: usize, busy: &[&str]) -> Claim {
        Claim {
            now: UtcMillis::now(),
            lease_until: UtcMillis::now(),
            limit,
            shares: HashMap::from([("slow".to_owned(), 1)]),
            per_subscription: 8,
            busy: busy.iter().map(|s| s.to_string()).collect(),
            sending: HashSet::from([3]),
        }
    }

    #[test]
    fn an_idle_subscription_gets_its_first_send_when_every_slot_is_taken() {
        let due = vec![("busy".to_owned(), vec![1, 2]), ("idle".to_owned(), vec![10, 11])];
        assert_eq!(claim(0, &["busy"]).pick(due, 0), [10]);
    }

    #[test]
    fn a_claim_takes_one_of_each_subscription_before_more_of_any_within_its_share() {
        let due = vec![
            ("a".to_owned(), vec![1, 2, 3, 4]),
            ("slow".to_owned(), vec![20, 21]),
            ("b".to_owned(), vec![30, 31]),
        ];
        // 3 is being sent; `slow` may start one; then the limit runs out.
        assert_eq!(claim(4, &["a"]).pick(due.clone(), 0), [1, 20, 30, 2]);
        assert_eq!(claim(4, &["a"]).pick(due, 1), [20, 30, 1, 31]);
    }
}

/// What is waiting to be sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Pending messages per subscription, every subscription listed.
    pub pending: Vec<(String, u64)>,
    /// Outbox rows (changes) not fanned out into messages yet.
    pub unfanned: u64,
    /// Dead messages, counted up to [`Self::DEAD_COUNTED`]: a count of
    /// that many means more than one fewer.
    pub dead: u64,
}

impl Backlog {
    /// The most dead messages counted: one more than a count shows.
    pub const DEAD_COUNTED: u64 = 1001;
}
