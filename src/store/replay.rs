//! Replaying a subscription (`POST /api/v1/subscriptions/{id}/replay`),
//! decided without I/O. A backend reads the kept changes since the replay's
//! start that no erasure redacted, in outbox order; [`requeued`] picks
//! those the subscription wants, and the backend queues each again, due
//! now, in its own dialect. How many it picked is the answer.

use super::StoreError;
use super::rows::parse_action;
use crate::outbound::Subscription;

/// A kept change as a replay reads it: its outbox position, its customer,
/// the customer's source and the change's action (as stored).
pub(super) type ChangeRow = (i64, String, String, String);

/// A change to queue again for the subscription.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Requeue {
    pub outbox_seq: i64,
    pub customer_id: String,
}

/// The changes of `rows` that `subscription` wants (by action and source),
/// in their order; a backend may read its rows as it goes (`E`, its
/// driver's error).
pub(super) fn requeued<E>(
    subscription: &Subscription,
    rows: impl IntoIterator<Item = Result<ChangeRow, E>>,
) -> impl Iterator<Item = Result<Requeue, StoreError>>
where
    StoreError: From<E>,
{
    rows.into_iter().filter_map(|row| {
        let (outbox_seq, customer_id, source, action) = match row {
            Ok(row) => row,
            Err(e) => return Some(Err(e.into())),
        };
        match parse_action(&action) {
            Ok(action) => subscription.wants(action, &source).then_some(Ok(Requeue {
                outbox_seq,
                customer_id,
            })),
            Err(e) => Some(Err(e)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, UtcMillis};

    fn subscription(actions: Vec<Action>, sources: &[&str]) -> Subscription {
        Subscription {
            id: "sub_1".into(),
            url: "https://example.com/hook".into(),
            secret: "whsec_x".into(),
            actions,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            types: Vec::new(),
            enabled: true,
            created_at: UtcMillis::now(),
        }
    }

    fn change(seq: i64, customer: &str, source: &str, action: &str) -> Result<ChangeRow, StoreError> {
        Ok((seq, customer.into(), source.into(), action.into()))
    }

    fn picked(subscription: &Subscription, rows: Vec<Result<ChangeRow, StoreError>>) -> Vec<i64> {
        requeued(subscription, rows).map(|r| r.unwrap().outbox_seq).collect()
    }

    #[test]
    fn a_replay_queues_again_only_what_the_subscription_wants_in_outbox_order() {
        let rows = || {
            vec![
                change(3, "treez:1", "treez", "created"),
                change(5, "vagaro:2", "vagaro", "updated"),
                change(8, "treez:1", "treez", "deleted"),
                change(9, "treez:3", "treez", "updated"),
            ]
        };
        assert_eq!(picked(&subscription(vec![], &[]), rows()), [3, 5, 8, 9]);
        assert_eq!(picked(&subscription(vec![], &["treez"]), rows()), [3, 8, 9]);
        assert_eq!(picked(&subscription(vec![Action::Updated], &["treez"]), rows()), [9]);
        let first = requeued(&subscription(vec![], &[]), rows()).next().unwrap().unwrap();
        assert_eq!(
            first,
            Requeue {
                outbox_seq: 3,
                customer_id: "treez:1".into()
            }
        );
    }

    #[test]
    fn a_stored_action_that_cannot_be_read_or_a_failed_read_stops_the_replay() {
        let every = subscription(vec![], &[]);
        let rows = vec![change(1, "treez:1", "treez", "renamed")];
        assert!(matches!(requeued(&every, rows).next(), Some(Err(StoreError::Bug(_)))));
        let created = subscription(vec![Action::Created], &[]);
        let rows = vec![Err(StoreError::Bug("read failed".into()))];
        assert!(matches!(requeued(&created, rows).next(), Some(Err(StoreError::Bug(_)))));
    }
}
