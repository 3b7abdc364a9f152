//! Pause without loss (SPEC §9): a paused source's deliveries are kept
//! as they arrive (`Sources::hold`, committed before the `202 held`), and
//! once it is enabled again they are applied in arrival order, each as the
//! delivery it was (same dedupe key, same receive time), through the same
//! adapter and store path as a live one.
//!
//! One releaser at a time per source, on any instance: it leases the
//! source (`Sources::lease_release`). A held delivery is forgotten only
//! after it is applied; a crash between the two applies it again, which
//! its dedupe key answers `duplicate`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Unmappable;
use super::registry::Registry;
use crate::config::Source;
use crate::model::UtcMillis;
use crate::store::sources::Held;
use crate::store::{Delivery, IngestOutcome, StoreError};

/// Held deliveries read at once.
const BATCH: usize = 100;
/// How long a releaser holds a source; ended when it is done.
const LEASE: Duration = Duration::from_secs(300);

/// The delivery a held one was: read and mapped as at its arrival
/// (`super::delivery`), under the dedupe key it was held with (from a
/// header the held delivery does not keep, maybe).
pub fn delivery(source: &Source, held: Held) -> Delivery {
    let headers: BTreeMap<String, String> = serde_json::from_str(&held.headers).unwrap_or_default();
    let header = |name: &str| headers.get(name).map(String::as_str);
    let read = super::delivery::delivery(
        source.kind,
        &source.settings,
        header,
        held.body.clone(),
        held.received_at,
    );
    match read {
        Ok(delivery) => Delivery {
            dedupe_key: held.dedupe_key,
            ..delivery
        },
        // Checked when it was held: not reachable unless the bytes changed.
        Err(e) => Delivery {
            source: source.name().to_owned(),
            dedupe_key: held.dedupe_key,
            received_at: held.received_at,
            headers,
            body: held.body,
            mapped: Err(Unmappable::new(format!("the body is not JSON: {e}"))),
            mentions: Vec::new(),
        },
    }
}

/// Refreshes which sources hold deliveries, then applies those of every
/// enabled one, oldest first.
pub async fn release(registry: &Registry) -> Result<(), StoreError> {
    let store = registry.store().clone();
    registry.set_holding(store.holding().await?);
    for name in registry.holding() {
        let Some(live) = registry.get(&name).filter(|live| live.enabled) else {
            continue;
        };
        let now = UtcMillis::now();
        if !store
            .lease_release(name.clone(), now, now.saturating_add(LEASE))
            .await?
        {
            continue;
        }
        let released = async {
            let mut applied = 0u64;
            loop {
                let batch = store.held(name.clone(), BATCH).await?;
                if batch.is_empty() {
                    return Ok::<_, StoreError>(applied);
                }
                for held in batch {
                    let seq = held.seq;
                    let outcome = store.ingest(delivery(&live.source, held)).await?;
                    registry.count(&name, stat_of(&outcome), None);
                    store.release(seq).await?;
                    applied += 1;
                }
            }
        }
        .await;
        store.end_release(name.clone()).await?;
        let applied = released?;
        registry.released(&name);
        tracing::info!(source = %name, deliveries = applied, "held deliveries applied");
    }
    Ok(())
}

/// The `stats` outcome a kept delivery counts under.
pub fn stat_of(outcome: &IngestOutcome) -> &'static str {
    match outcome {
        IngestOutcome::Accepted { .. } => "accepted",
        IngestOutcome::Duplicate { .. } => "duplicate",
        IngestOutcome::Ignored { .. } => "ignored",
        IngestOutcome::Quarantined { .. } => "quarantined",
        IngestOutcome::Suppressed => "suppressed",
    }
}
