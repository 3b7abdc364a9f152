//! The persons resolver (SPEC §11), off the ingest path: a task that
//! follows the directory's change feed after the commit (the store's
//! [`Persons::feed`]), runs the pure matcher ([`crate::persons`]) over
//! the candidates of what changed, and writes persons, links and reviews
//! with its position in one transaction, so that a crash neither loses
//! nor repeats a change.
//!
//! It keeps every customer's subject, blocking keys and value counts in
//! memory ([`state::Index`]), loaded when it starts: then a change costs
//! scoring its candidates and those of what it reaches (its persons, and
//! whatever scores a review or more with them), afresh each step, not a
//! read of the directory; `bench/README.md` ("Persons") measures it. One instance resolves at a time,
//! under a lease kept in the store (instances sharing a Postgres store
//! wait their turn); a step whose commit finds the lease or the position
//! moved is dropped, and the resolver loads again. A rebuild
//! ([`rebuild`]) resolves every record in one step, as the resolver does
//! when it starts.

pub mod state;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::clock::Clock;
use crate::model::{Customer, UtcMillis};
use crate::persons::{Settings, identity};
use crate::store::persons::{Feed, Resolution};
use crate::store::{CustomerQuery, Store, StoreError};
use state::Index;

/// Changes taken in one step at most.
const BATCH: usize = 1000;
/// How long the lease lasts without a renewal.
const LEASE: Duration = Duration::from_secs(5);
/// How often an idle resolver looks at the feed.
const POLL: Duration = Duration::from_millis(50);
/// The pause after a failed step.
const PAUSE: Duration = Duration::from_secs(1);
/// How often steps follow each other at most, unless a full batch waits:
/// under load a step takes what this long brought, scores the candidates
/// those changes share once, and writes them in a few statements: on
/// Postgres, 8% to 15% less CPU a delivery in both processes than a step
/// after each commit (bench/README.md, "Fewer plans, paced resolver steps").
const STEP_EVERY: Duration = Duration::from_millis(200);

/// Follows the feed until `stop` turns true; a failed step is logged and
/// the resolver starts again from what the store holds.
pub async fn run(store: Arc<dyn Store>, settings: Settings, clock: Clock, mut stop: watch::Receiver<bool>) {
    let holder = format!("res_{}", uuid::Uuid::now_v7().simple());
    loop {
        match follow(store.as_ref(), &settings, &clock, &holder, &mut stop).await {
            Ok(Followed::Stopped) => break,
            Ok(Followed::Displaced) => {
                tracing::info!(
                    "the persons resolver gave way (a rebuild resolves persons); it starts again from the store"
                )
            }
            Err(e) => tracing::error!(error = %e, "the persons resolver failed; it starts again from the store"),
        }
        if sleep_or_stop(PAUSE, &mut stop).await {
            break;
        }
    }
    // Lets another instance (or this one, started again) take over at once.
    if let Err(e) = store.lease_resolver(holder, 0).await {
        tracing::warn!(error = %e, "cannot release the persons resolver's lease");
    }
}

/// Whether `stop` turned true within `pause`.
async fn sleep_or_stop(pause: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        _ = stop.wait_for(|stopped| *stopped) => {}
    }
    *stop.borrow()
}

/// How [`follow`] ended without failing.
enum Followed {
    /// As asked.
    Stopped,
    /// Another holder took the lease ([`rebuild`]), or moved the position
    /// under this one: what this one holds in memory is stale.
    Displaced,
}

fn lease_end() -> i64 {
    UtcMillis::now().saturating_add(LEASE).as_millisecond()
}

async fn follow(
    store: &dyn Store,
    settings: &Settings,
    clock: &Clock,
    holder: &str,
    stop: &mut watch::Receiver<bool>,
) -> Result<Followed, StoreError> {
    while store.lease_resolver(holder.to_owned(), lease_end()).await?.is_none() {
        if sleep_or_stop(POLL * 20, stop).await {
            return Ok(Followed::Stopped);
        }
    }
    let (mut index, mut position, stale) = load(store, settings).await?;
    let mut pending: BTreeSet<String> = stale.into_iter().collect();
    let mut renewed = std::time::Instant::now();
    loop {
        if *stop.borrow() {
            return Ok(Followed::Stopped);
        }
        let started = std::time::Instant::now();
        // What the resolver found stale when it started goes a batch at a
        // time, before the feed moves on.
        let Feed { changes, queued } = if pending.len() >= BATCH {
            Feed::default()
        } else {
            store.feed(position, BATCH).await?
        };
        if !queued.is_empty() {
            index.set_decisions(store.resolved().await?.decisions);
        }
        pending.extend(changes.iter().map(|c| c.customer_id.clone()));
        pending.extend(queued.iter().map(|(_, c)| c.clone()));
        if pending.is_empty() {
            if renewed.elapsed() > LEASE / 3 {
                if store.lease_resolver(holder.to_owned(), lease_end()).await?.is_none() {
                    return Ok(Followed::Displaced);
                }
                renewed = std::time::Instant::now();
            }
            if sleep_or_stop(POLL, stop).await {
                return Ok(Followed::Stopped);
            }
            continue;
        }
        let to = changes.last().map_or(position, |c| c.position);
        let cut = pending
            .iter()
            .nth(BATCH)
            .cloned()
            .filter(|_| changes.is_empty() && queued.is_empty());
        let ids: Vec<String> = match cut {
            Some(cut) => {
                let rest = pending.split_off(&cut);
                std::mem::replace(&mut pending, rest).into_iter().collect()
            }
            None => std::mem::take(&mut pending).into_iter().collect(),
        };
        let asked: BTreeSet<String> = queued.iter().map(|(_, c)| c.clone()).collect();
        let mut step = resolve(store, &mut index, ids, &asked, clock.now()).await?;
        step.from = position;
        step.to = to;
        step.applied = queued.iter().map(|(seq, _)| *seq).collect();
        if !store.commit_resolution(holder.to_owned(), step).await? {
            return Ok(Followed::Displaced);
        }
        renewed = std::time::Instant::now();
        position = to;
        let full = changes.len() == BATCH || pending.len() >= BATCH;
        if !full && sleep_or_stop(STEP_EVERY.saturating_sub(started.elapsed()), stop).await {
            return Ok(Followed::Stopped);
        }
    }
}

/// The index of every record and what was resolved, the position, and
/// the ids to resolve first.
async fn load(store: &dyn Store, settings: &Settings) -> Result<(Index, i64, Vec<String>), StoreError> {
    let resolved = store.resolved().await?;
    let position = resolved.position;
    // A page at a time, each record kept as its subject only: the index,
    // not the directory's records, is what stays in memory.
    let records = every_customer(store, state::held).await?;
    let (index, stale) = Index::load(settings.clone(), resolved, records);
    tracing::info!(
        persons = index.person_count(),
        stale = stale.len(),
        "persons resolver started"
    );
    Ok((index, position, stale))
}

/// Every record, each as `keep` turns it into what the caller holds.
async fn every_customer<T>(store: &dyn Store, keep: impl Fn(Customer) -> T) -> Result<Vec<T>, StoreError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .customers(CustomerQuery {
                include_merged: true,
                limit: 1000,
                after,
                ..CustomerQuery::default()
            })
            .await?;
        all.extend(page.items.into_iter().map(&keep));
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
}

/// Reads the records of `ids` and runs a step over those the index has
/// not resolved yet, and over those an operator's decision `asked` for:
/// a record resolved already (the backlog the resolver found stale when it
/// started, met again in the feed; a step repeated after a restart) moves
/// no person by itself.
async fn resolve(
    store: &dyn Store,
    index: &mut Index,
    ids: Vec<String>,
    asked: &BTreeSet<String>,
    now: UtcMillis,
) -> Result<Resolution, StoreError> {
    let mut records: HashMap<String, Customer> = store
        .records(ids.clone())
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let found: Vec<(String, Option<Customer>)> = ids
        .into_iter()
        .map(|id| {
            let record = records.remove(&id);
            (id, record)
        })
        .filter(|(id, record)| asked.contains(id) || !index.holds(id, record.as_ref().map(|c| c.version)))
        .collect();
    Ok(index.step(found, &mut identity::new_id, now))
}

/// Resolves every record again in one step (after a rebuild of the
/// directory, [`crate::rebuild::run`]): the persons equal what the
/// incremental resolver built from the same records, with the ids they
/// had. A running resolver gives way: this takes its lease (keeping it
/// while it works) and frees it at the end, and the resolver then starts
/// again from what this wrote.
pub async fn rebuild(store: &dyn Store, settings: &Settings, clock: &Clock) -> Result<(), StoreError> {
    let holder = format!("rebuild_{}", uuid::Uuid::now_v7().simple());
    store.take_resolver(holder.clone(), lease_end()).await?;
    let result = holding(store, &holder, resolve_all(store, settings, &holder, clock.now())).await;
    store.lease_resolver(holder, 0).await?;
    result
}

/// Runs `work`, renewing `holder`'s lease until it ends.
async fn holding(
    store: &dyn Store,
    holder: &str,
    work: impl Future<Output = Result<(), StoreError>>,
) -> Result<(), StoreError> {
    let renewing = async {
        loop {
            tokio::time::sleep(LEASE / 3).await;
            if store.lease_resolver(holder.to_owned(), lease_end()).await?.is_none() {
                return Err(StoreError::Unavailable(
                    "another rebuild took the persons resolver's lease: run it again".into(),
                ));
            }
        }
    };
    tokio::select! {
        done = work => done,
        lost = renewing => lost,
    }
}

async fn resolve_all(store: &dyn Store, settings: &Settings, holder: &str, now: UtcMillis) -> Result<(), StoreError> {
    let resolved = store.resolved().await?;
    let position = resolved.position;
    let customers = every_customer(store, |c| c).await?;
    let mut ids: BTreeSet<String> = resolved.members.iter().map(|(c, _, _)| c.clone()).collect();
    ids.extend(customers.iter().map(|c| c.id.clone()));
    // The persons as they were, so that each keeps its id, and no
    // record: every record then resolves again from nothing.
    let (mut index, _) = Index::load(settings.clone(), resolved, Vec::new());
    let mut by_id: HashMap<String, Customer> = customers.into_iter().map(|c| (c.id.clone(), c)).collect();
    let records: Vec<(String, Option<Customer>)> = ids
        .into_iter()
        .map(|id| {
            let record = by_id.remove(&id);
            (id, record)
        })
        .collect();
    // Off the runtime's threads, so that the lease is renewed meanwhile.
    let mut step = tokio::task::spawn_blocking(move || index.step(records, &mut identity::new_id, now))
        .await
        .map_err(|e| StoreError::Bug(format!("resolving every record failed: {e}")))?;
    step.from = position;
    step.to = position;
    if store.commit_resolution(holder.to_owned(), step).await? {
        Ok(())
    } else {
        Err(StoreError::Unavailable(
            "another rebuild took the persons resolver's lease: run it again".into(),
        ))
    }
}
