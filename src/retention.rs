//! Retention and compaction (SPEC §12): the store keeps what the directory
//! is a function of, and drops the rest once it is past its age.
//!
//! What stays: each customer's applied snapshot (the event whose order
//! key the record holds), the events behind merge links (each link's
//! highest claim), pending messages and what they need. What goes, in
//! small steps in the background ([`run`]): the bodies of every other
//! event past `raw_events` (superseded snapshots, stale, unchanged and
//! ignored events) and of quarantined ones past `quarantine`; their rows,
//! which are also their dedupe records, once `dedupe` has passed too;
//! delivered, dead and cancelled messages with their attempts past
//! `messages`. A rebuild replays the events that stay and so gets the same
//! directory; no accepted event goes while a rebuild is under way (its
//! version floors are kept), when the directory is half empty.
//!
//! The store plays the [`Retention`] role, defined here where it is used:
//! each step is one short write transaction, and the compactor pauses
//! between steps so that deliveries get the writer (SQLite) or the rows
//! (Postgres) in between. Freed space goes back to the file system through
//! [`Retention::reclaim`] (SQLite's incremental vacuum; on Postgres,
//! autovacuum keeps up with batched deletes: `docs/decisions.md`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::BoxFuture;
use crate::clock::Clock;
use crate::config::RetentionSettings;
use crate::model::UtcMillis;
use crate::store::StoreError;

/// Events looked at, or messages dropped per subscription, in one step.
const STEP_ROWS: usize = 256;
/// Pages given back to the file system in one step (1 MiB of 4 KiB pages).
const RECLAIM_PAGES: u32 = 256;
/// The pause between two steps: deliveries have the store in between.
const STEP_PAUSE: Duration = Duration::from_millis(20);
/// From the end of one pass to the next.
const PASS_EVERY: Duration = Duration::from_secs(60);
/// Per-table sizes are measured at most this often (on SQLite, measuring
/// reads every page).
const TABLE_SIZES_EVERY: Duration = Duration::from_secs(15 * 60);

/// The times before which each kind of data is past its age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Bodies of events the directory is not a function of, received
    /// before this, go.
    pub raw_events: UtcMillis,
    /// Quarantined bodies received before this go.
    pub quarantine: UtcMillis,
    /// Rows received before this (and past their body's age) go: a retry
    /// of them is a new delivery then.
    pub dedupe: UtcMillis,
    /// Delivered, dead and cancelled messages of changes made before this
    /// go, with their attempts; then the changes' envelopes.
    pub messages: UtcMillis,
    /// History entries of events received before this go, once their
    /// events' bodies have; `None`: history is kept.
    pub history: Option<UtcMillis>,
}

impl Cutoffs {
    /// The cutoffs of `settings` at `now`.
    pub fn at(now: UtcMillis, settings: &RetentionSettings) -> Self {
        let before = |age: Duration| {
            UtcMillis::from_timestamp(now.as_timestamp().checked_sub(age).unwrap_or(jiff::Timestamp::MIN))
        };
        Cutoffs {
            raw_events: before(settings.raw_events),
            quarantine: before(settings.quarantine),
            dedupe: before(settings.dedupe),
            messages: before(settings.messages),
            history: settings.history.map(before),
        }
    }

    /// The latest body cutoff: no event received since is touched.
    pub fn newest(&self) -> UtcMillis {
        self.raw_events.max(self.quarantine)
    }
}

/// What one step over the events, envelopes or history entries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Step {
    /// Bodies dropped from rows kept as dedupe records (events only).
    pub bodies: u64,
    /// Rows dropped.
    pub rows: u64,
    /// Where the next step starts; `None`: the rest is too young.
    pub next: Option<i64>,
}

/// What a pass dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub bodies: u64,
    pub events: u64,
    pub messages: u64,
    pub envelopes: u64,
    pub history: u64,
    /// Bytes given back to the file system.
    pub reclaimed: u64,
}

/// The store as compaction uses it.
pub trait Retention: Send + Sync + 'static {
    /// Among the events after position `after`, at most `limit` of them in
    /// arrival order: drops the rows `cutoffs` no longer keep, and the
    /// bodies of those past their age that stay as dedupe records.
    fn compact_events(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>>;

    /// Drops up to `limit` messages per subscription that are no longer
    /// pending, of changes made before `cutoffs.messages`, with their
    /// attempts. Returns how many.
    fn compact_messages(&self, cutoffs: Cutoffs, limit: usize) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Among the outbox rows after position `after`, at most `limit` in
    /// order: drops the envelopes of changes made before
    /// `cutoffs.messages` that the dispatcher has fanned out and the
    /// persons resolver has read, and that no message refers to. Where a
    /// backend finds a customer's envelopes through a chain from its
    /// latest, only the oldest of a chain go, so that an erasure still
    /// reaches every envelope kept.
    fn compact_outbox(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>>;

    /// Among the history entries after position `after`, at most `limit`
    /// in order: drops those of events received before `cutoffs.history`
    /// whose bodies are gone (so that an erasure still finds every body
    /// kept through the entries that stay), chains kept whole as for the
    /// outbox. Nothing when history is kept.
    fn compact_history(&self, cutoffs: Cutoffs, after: i64, limit: usize) -> BoxFuture<'_, Result<Step, StoreError>>;

    /// Gives up to `pages` free pages back to the file system. Returns the
    /// bytes given back (`0` when there is nothing to give, or the backend
    /// does it by itself).
    fn reclaim(&self, pages: u32) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// The store's size in bytes, cheap enough for every scrape.
    fn store_bytes(&self) -> BoxFuture<'_, Result<u64, StoreError>>;

    /// Each table's size in bytes, its indexes included, where the backend
    /// can tell.
    fn table_bytes(&self) -> BoxFuture<'_, Result<Vec<(String, u64)>, StoreError>>;
}

/// One pass: every step of compaction at `now`, pausing `pause` between
/// steps, then the freed space given back.
pub async fn compact(
    store: &dyn Retention,
    settings: &RetentionSettings,
    now: UtcMillis,
    pause: Duration,
) -> Result<Compacted, StoreError> {
    let cutoffs = Cutoffs::at(now, settings);
    let mut compacted = Compacted::default();
    let events = walk(|after| store.compact_events(cutoffs, after, STEP_ROWS), pause).await?;
    (compacted.events, compacted.bodies) = (events.rows, events.bodies);
    loop {
        let dropped = store.compact_messages(cutoffs, STEP_ROWS).await?;
        compacted.messages += dropped;
        if dropped == 0 {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    // After the messages and the bodies: their going lets envelopes and
    // entries go.
    compacted.envelopes = walk(|after| store.compact_outbox(cutoffs, after, STEP_ROWS), pause)
        .await?
        .rows;
    if cutoffs.history.is_some() {
        compacted.history = walk(|after| store.compact_history(cutoffs, after, STEP_ROWS), pause)
            .await?
            .rows;
    }
    loop {
        let reclaimed = store.reclaim(RECLAIM_PAGES).await?;
        compacted.reclaimed += reclaimed;
        if reclaimed == 0 {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    Ok(compacted)
}

/// Steps through a table from its start until a step says the rest is too
/// young, pausing `pause` between steps; what the steps dropped, summed.
async fn walk<'a>(
    mut step: impl FnMut(i64) -> BoxFuture<'a, Result<Step, StoreError>>,
    pause: Duration,
) -> Result<Step, StoreError> {
    let mut total = Step::default();
    let mut after = 0;
    loop {
        let done = step(after).await?;
        total.bodies += done.bodies;
        total.rows += done.rows;
        let Some(next) = done.next else { return Ok(total) };
        after = next;
        tokio::time::sleep(pause).await;
    }
}

/// Compacts the store a pass a minute at `clock`'s now, until `stop` is
/// told; records the per-table sizes in `/metrics`
/// (`clientele_store_table_bytes`).
pub async fn run(
    store: Arc<dyn Retention>,
    settings: RetentionSettings,
    clock: Clock,
    mut stop: watch::Receiver<bool>,
) {
    let mut sized: Option<tokio::time::Instant> = None;
    loop {
        // A pass over a large backlog takes minutes: a stop does not wait
        // for it. Each step is a transaction of its own, so a pass cut
        // short loses only its remaining steps, which the next start does.
        let pass = tokio::select! {
            pass = compact(store.as_ref(), &settings, clock.now(), STEP_PAUSE) => pass,
            _ = stop.wait_for(|stopped| *stopped) => return,
        };
        match pass {
            Ok(c) if c == Compacted::default() => tracing::debug!("compaction: nothing past its age"),
            Ok(c) => tracing::info!(
                bodies = c.bodies,
                events = c.events,
                messages = c.messages,
                envelopes = c.envelopes,
                history = c.history,
                reclaimed_bytes = c.reclaimed,
                "compaction dropped what was past its age"
            ),
            Err(e) => tracing::warn!(error = %e, "compaction failed; the next pass tries again"),
        }
        if sized.is_none_or(|at| at.elapsed() >= TABLE_SIZES_EVERY) {
            sized = Some(tokio::time::Instant::now());
            match store.table_bytes().await {
                Ok(tables) => {
                    for (table, bytes) in tables {
                        metrics::gauge!("clientele_store_table_bytes", "table" => table).set(bytes as f64);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot measure the store's tables"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(PASS_EVERY) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}
