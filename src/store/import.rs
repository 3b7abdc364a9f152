//! Keeping many deliveries at once, for a backfill (`crate::import`).
//!
//! Each delivery of a batch goes through exactly what a webhook's does
//! (`Store::ingest`: dedupe, the directory's order, history, outbox), one
//! after the other in the batch's order; a backend may commit a batch in
//! fewer transactions than deliveries, which is where an import's speed
//! comes from. On a store error the batch fails: the embedded store keeps
//! none of it, Postgres (a transaction per delivery) the deliveries before
//! the one that failed; importing again finds those duplicates.

use super::{BoxFuture, Delivery, IngestOutcome, Publish, StoreError};

/// A store that keeps batches of deliveries.
pub trait Import {
    /// Keeps `deliveries` in order, as [`Store::ingest`](super::Store::ingest)
    /// keeps each, and answers each one's outcome in the same order. With
    /// [`Publish::No`], no change is queued for subscribers (no outbox
    /// row), as in a rebuild; the directory, history and raw events are
    /// kept all the same.
    fn ingest_batch(
        &self,
        deliveries: Vec<Delivery>,
        publish: Publish,
    ) -> BoxFuture<'_, Result<Vec<IngestOutcome>, StoreError>>;
}
