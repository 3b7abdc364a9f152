//! Reprocessing a kept event (`POST /api/v1/events/{id}/reprocess`, and
//! each event of a rebuild), decided without I/O. A backend locks and
//! loads the customers the event's fresh mapping touches
//! ([`touched_ids`](super::rows::touched_ids)), reads the event's row,
//! asks [`reprocessing`] what follows, and executes it in its own dialect:
//! nothing, forgetting the event, or settling it anew as a delivery
//! settles and writing what it settled to on its row.

use super::StoreError;
use super::rows::{Settling, is_suppressed_target, parse_time, settling, unpack_dedupe_key};
use crate::directory::Loaded;
use crate::sources::{Mapped, Unmappable};

/// A kept event's row as reprocessing reads it: its dedupe key and when it
/// was received (both as kept), and whether an erasure redacted it.
pub(super) type KeptRow = (Vec<u8>, String, bool);

/// What reprocessing a kept event does.
pub(super) enum Reprocessing<'a> {
    /// No event has that id.
    Missing,
    /// Kept before its customer was known, now known to be erased: nothing
    /// of it stays, as for a delivery, and it answers `suppressed`.
    Forget,
    /// It settles anew, under its first dedupe key and arrival time.
    Settle(Settling<'a>),
}

/// Decides what reprocessing the event `event_id`, whose row is `kept`,
/// with its body mapped anew to `mapped`, does; `loaded` is the state of
/// the customers `mapped` touches. A redacted event cannot be reprocessed:
/// its body is gone.
pub(super) fn reprocessing<'a>(
    event_id: &str,
    kept: Option<KeptRow>,
    loaded: &Loaded,
    mapped: &'a Result<Mapped, Unmappable>,
) -> Result<Reprocessing<'a>, StoreError> {
    let Some((dedupe_key, received_at, redacted)) = kept else {
        return Ok(Reprocessing::Missing);
    };
    if redacted {
        return Err(StoreError::Redacted(event_id.to_owned()));
    }
    if is_suppressed_target(loaded, mapped) {
        return Ok(Reprocessing::Forget);
    }
    let received_at = parse_time(&received_at)?;
    Ok(Reprocessing::Settle(settling(
        event_id,
        &unpack_dedupe_key(&dedupe_key)?,
        received_at,
        mapped,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventStatus, IngestOutcome};

    const RECEIVED: &str = "2026-12-06T10:00:00.000Z";

    fn kept(redacted: bool) -> Option<KeptRow> {
        Some((b"dk-1".to_vec(), RECEIVED.to_owned(), redacted))
    }

    fn naming(customer: &str) -> Result<Mapped, Unmappable> {
        Err(Unmappable {
            reason: "no email or phone".to_owned(),
            customer: Some(customer.to_owned()),
        })
    }

    fn erased(customer: &str) -> Loaded {
        Loaded {
            suppressed: [customer.to_owned()].into(),
            ..Loaded::default()
        }
    }

    #[test]
    fn an_unknown_event_is_missing_whatever_its_mapping() {
        let mapped = naming("treez:1");
        let decided = reprocessing("evt_1", None, &erased("treez:1"), &mapped).unwrap();
        assert!(matches!(decided, Reprocessing::Missing));
    }

    #[test]
    fn a_redacted_event_cannot_be_reprocessed_even_when_its_customer_is_erased() {
        let mapped = naming("treez:1");
        let refused = reprocessing("evt_1", kept(true), &erased("treez:1"), &mapped);
        assert!(matches!(refused, Err(StoreError::Redacted(id)) if id == "evt_1"));
    }

    #[test]
    fn an_event_now_naming_an_erased_customer_is_forgotten() {
        let mapped = naming("treez:1");
        let decided = reprocessing("evt_1", kept(false), &erased("treez:1"), &mapped).unwrap();
        assert!(matches!(decided, Reprocessing::Forget));
        let ignored = Ok(Mapped::Ignored { what: "ping".into() });
        let decided = reprocessing("evt_1", kept(false), &erased("treez:1"), &ignored).unwrap();
        assert!(
            matches!(decided, Reprocessing::Settle(_)),
            "an event that names no customer is not the erased one's"
        );
    }

    #[test]
    fn an_event_settles_anew_under_its_own_id() {
        let mapped = naming("treez:2");
        let decided = reprocessing("evt_1", kept(false), &erased("treez:1"), &mapped).unwrap();
        let Reprocessing::Settle(Settling::Done(settled)) = decided else {
            panic!("an unmappable body settles at once");
        };
        assert_eq!(settled.status, EventStatus::Quarantined);
        assert_eq!(settled.customer_id.as_deref(), Some("treez:2"));
        assert!(matches!(settled.answer, IngestOutcome::Quarantined { event_id, .. } if event_id == "evt_1"));
    }

    #[test]
    fn a_stored_time_that_cannot_be_read_is_a_bug() {
        let kept = Some((b"dk-1".to_vec(), "yesterday".to_owned(), false));
        let mapped = naming("treez:1");
        let failed = reprocessing("evt_1", kept, &Loaded::default(), &mapped);
        assert!(matches!(failed, Err(StoreError::Bug(_))));
    }
}
