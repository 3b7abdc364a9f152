//! Group commit: concurrent deliveries share one transaction.
//!
//! A delivery alone is a dozen statements, each a round trip; what limits
//! an instance is the round trips, not the rows. So deliveries wait in a
//! channel, and a few committer tasks each take every delivery waiting
//! (up to [`MAX_GROUP`]; no timer: at low load a group is one delivery, at
//! once), keep them in one transaction of set-based statements, and answer
//! each only after the commit:
//!
//! 1. lock every customer the group touches, in one statement, in the one
//!    order every transaction takes locks ([`super::lock`]), so that
//!    groups on several instances never wait on each other crosswise;
//! 2. load them, and count the group's retries of kept deliveries as
//!    duplicates, a statement each;
//! 3. decide each delivery in arrival order on the loaded state, which
//!    each decision brings up to date ([`Writes::add`]), so that each sees
//!    the directory as it would after its predecessors' commits: the same
//!    answers and the same directory as one transaction each. A delivery
//!    whose dedupe key an earlier one of the group was kept with is its
//!    duplicate;
//! 4. write the events, then records, lookups, links, history and outbox
//!    rows, a statement each ([`Kept::write`], [`Writes::write`]).
//!
//! A group that loses a race (a deadlock, a delivery another instance kept
//! first) runs again from the start, as any transaction. A group that
//! fails otherwise (a delivery the database refuses, a bug) runs again a
//! delivery at a time, so that the failure stays with its delivery and its
//! neighbours are kept. (Savepoints cannot isolate one delivery inside a
//! set-based statement.)

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::Arc;

use sqlx::PgPool;
use tokio::sync::{Mutex, Notify, mpsc, oneshot};

use super::writes::Writes;
use super::{Plans, Work, load, lock, settle, transact};
use crate::clock::Clock;
use crate::store::rows::{
    Settled, is_suppressed_target, pack_body, pack_dedupe_key, settling, touched_ids, unpack_dedupe_key,
};
use crate::store::{Delivery, IngestOutcome, Outcome, Publish, StoreError};

/// Deliveries in one transaction, at most: their locks stay well inside
/// Postgres's lock table (64 per connection by default), two ids each.
pub(super) const MAX_GROUP: usize = 64;
/// Committer tasks per instance: while one group commits, the next
/// gathers and runs.
pub(super) const COMMITTERS: usize = 2;
/// Deliveries waiting for a committer; the HTTP layer bounds deliveries
/// in flight below this.
const QUEUE: usize = 1024;

/// A delivery and whether its changes go to subscribers.
pub(super) type Item = (Delivery, Publish);

/// Where deliveries wait for a committer.
pub(super) struct Committer {
    sender: mpsc::Sender<Waiting>,
}

struct Waiting {
    item: Item,
    reply: oneshot::Sender<Result<IngestOutcome, StoreError>>,
}

impl Committer {
    /// Starts the committer tasks, committing with `group`; they end when
    /// this is dropped.
    pub(super) fn start(group: Group) -> Self {
        let (sender, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..COMMITTERS {
            tokio::spawn(commit_waiting(group.clone(), receiver.clone()));
        }
        Self { sender }
    }

    /// Keeps a delivery in the next group to commit; answers after its
    /// commit.
    pub(super) async fn ingest(&self, delivery: Delivery) -> Result<IngestOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let waiting = Waiting {
            item: (delivery, Publish::Yes),
            reply,
        };
        self.sender.send(waiting).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// One committer: takes what waits, commits it, answers, again.
async fn commit_waiting(group: Group, receiver: Arc<Mutex<mpsc::Receiver<Waiting>>>) {
    loop {
        let mut waiting = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut waiting = vec![first];
            while waiting.len() < MAX_GROUP {
                match receiver.try_recv() {
                    Ok(next) => waiting.push(next),
                    Err(_) => break,
                }
            }
            waiting
        };
        let (items, replies): (Vec<Item>, Vec<_>) = waiting.drain(..).map(|w| (w.item, w.reply)).unzip();
        let answers = group.commit(items.into()).await;
        for (reply, answer) in replies.into_iter().zip(answers) {
            let _ = reply.send(answer);
        }
    }
}

/// What commits groups: the groups' connections, and whom to tell of
/// queued messages.
#[derive(Clone)]
pub(super) struct Group {
    /// Connections that plan as [`super::INDEXED`] says.
    pub(super) pool: PgPool,
    pub(super) queued: Arc<Notify>,
    pub(super) clock: Clock,
}

impl Group {
    /// Keeps `items` in one transaction, or, if that fails other than by
    /// losing a race, each in its own; answers each, in order.
    pub(super) async fn commit(&self, items: Arc<[Item]>) -> Vec<Result<IngestOutcome, StoreError>> {
        let size = items.len();
        metrics::histogram!("clientele_store_batch_size").record(size as f64);
        let error = match self.run(items.clone(), 0..size).await {
            Ok(outcomes) => return outcomes.into_iter().map(Ok).collect(),
            Err(e) if size == 1 => return vec![Err(e)],
            Err(e) => e,
        };
        if let StoreError::Unavailable(_) | StoreError::Closed = error {
            return (0..size).map(|_| Err(shared(&error))).collect();
        }
        tracing::warn!(size, error = %error, "a group of deliveries failed; each runs again alone");
        let mut answers = Vec::with_capacity(size);
        for at in 0..size {
            answers.push(self.run(items.clone(), at..at + 1).await.map(|mut one| one.remove(0)));
        }
        answers
    }

    /// Runs `items[range]` as one transaction, on a task of its own: a
    /// panic fails the group, not the committer.
    async fn run(&self, items: Arc<[Item]>, range: Range<usize>) -> Result<Vec<IngestOutcome>, StoreError> {
        let group = self.clone();
        tokio::spawn(async move {
            let items = &items[range];
            transact(
                &group.pool,
                Plans::Indexed,
                &group.queued,
                &group.clock,
                &items,
                |work, items| Box::pin(ingest(work, items)),
            )
            .await
        })
        .await
        .unwrap_or_else(|_| Err(StoreError::Bug("a group of deliveries panicked".into())))
    }
}

/// The same error again, for each delivery of a group that it failed.
fn shared(error: &StoreError) -> StoreError {
    match error {
        StoreError::Closed => StoreError::Closed,
        other => StoreError::Unavailable(other.to_string()),
    }
}

/// Keeps the deliveries, in order, in the transaction; see the module's
/// comment.
async fn ingest(work: &mut Work<'_>, items: &[Item]) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    for (d, _) in items {
        ids.extend(touched_ids(&d.mapped).into_iter().filter(|id| seen.insert(id.clone())));
    }
    let mut loaded = if ids.is_empty() {
        Default::default()
    } else {
        let plans = work.plans;
        lock(work.conn(), &ids).await?;
        load(work.conn(), &ids, Publish::Yes, plans).await?
    };
    let suppressed: Vec<bool> = items
        .iter()
        .map(|(d, _)| is_suppressed_target(&loaded, &d.mapped))
        .collect();
    let retried = count_duplicates(work, items, &suppressed).await?;
    let mut writes = Writes::default();
    let mut kept = Kept::default();
    // Where each dedupe key kept in this group is in `kept`.
    let mut keys: HashMap<(&str, &str), usize> = HashMap::new();
    let mut outcomes = Vec::with_capacity(items.len());
    for ((d, publish), suppressed) in items.iter().zip(suppressed) {
        if suppressed {
            outcomes.push(IngestOutcome::Suppressed);
            continue;
        }
        if let Some(event_id) = retried.get(&(d.source.clone(), d.dedupe_key.clone())) {
            outcomes.push(IngestOutcome::Duplicate {
                event_id: event_id.clone(),
            });
            continue;
        }
        let key = (d.source.as_str(), d.dedupe_key.as_str());
        if let Some(&at) = keys.get(&key) {
            kept.duplicates[at] += 1;
            outcomes.push(IngestOutcome::Duplicate {
                event_id: kept.ids[at].clone(),
            });
            continue;
        }
        let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let settling = settling(&event_id, &d.dedupe_key, d.received_at, &d.mapped);
        let settled = settle(settling, &mut loaded, &mut writes, *publish, work.now);
        keys.insert(key, kept.ids.len());
        outcomes.push(settled.answer.clone());
        kept.push(d, event_id, settled)?;
    }
    // Another instance may have kept one of these deliveries since the
    // count above: then this insert fails on the unique key, and the
    // group runs again and answers `duplicate` for it.
    kept.write(work).await?;
    // Last, as outbox rows are written (see `outbound::OutboxRows::write`).
    writes.write(work).await?;
    Ok(outcomes)
}

/// Counts, on each event already kept, the deliveries of a batch that
/// repeat it (`$1` their sources, `$2` their packed dedupe keys), and
/// returns the events' source, dedupe key and id. Prepared only where
/// plans read indexes (see [`super`]): a plan made while `events` was
/// small reads every event otherwise.
pub const DUPLICATES: &str = "UPDATE events e SET duplicates = e.duplicates + d.n
     FROM (SELECT source, dedupe_key, count(*) AS n FROM unnest($1::text[], $2::bytea[]) AS k(source, dedupe_key)
           GROUP BY source, dedupe_key) AS d
     WHERE e.source = d.source AND e.dedupe_key = d.dedupe_key
     RETURNING e.source, e.dedupe_key, e.id";

/// Counts, on each event already kept, the group's deliveries that repeat
/// it (none suppressed): returns their ids by source and dedupe key.
async fn count_duplicates(
    work: &mut Work<'_>,
    items: &[Item],
    suppressed: &[bool],
) -> Result<HashMap<(String, String), String>, StoreError> {
    let (sources, keys): (Vec<&str>, Vec<Vec<u8>>) = items
        .iter()
        .zip(suppressed)
        .filter(|(_, suppressed)| !**suppressed)
        .map(|((d, _), _)| (d.source.as_str(), pack_dedupe_key(&d.dedupe_key)))
        .unzip();
    if sources.is_empty() {
        return Ok(HashMap::new());
    }
    let prepared = work.plans.prepared();
    let rows: Vec<(String, Vec<u8>, String)> = sqlx::query_as(DUPLICATES)
        .persistent(prepared)
        .bind(sources)
        .bind(keys)
        .fetch_all(work.conn())
        .await?;
    rows.into_iter()
        .map(|(source, key, id)| Ok(((source, unpack_dedupe_key(&key)?), id)))
        .collect()
}

/// The group's new events' rows, a column each, and what their bodies
/// name.
#[derive(Default)]
struct Kept {
    ids: Vec<String>,
    sources: Vec<String>,
    /// As kept: see [`pack_dedupe_key`].
    keys: Vec<Vec<u8>>,
    received: Vec<String>,
    headers: Vec<String>,
    bodies: Vec<Vec<u8>>,
    codecs: Vec<i16>,
    statuses: Vec<&'static str>,
    reasons: Vec<Option<String>>,
    outcomes: Vec<Option<&'static str>>,
    customers: Vec<Option<String>>,
    /// The group's later deliveries that repeat it.
    duplicates: Vec<i64>,
    /// (key, event id) pairs.
    mentions: (Vec<String>, Vec<String>),
}

impl Kept {
    fn push(&mut self, d: &Delivery, event_id: String, settled: Settled) -> Result<(), StoreError> {
        let body = pack_body(&d.body);
        for mention in &d.mentions {
            self.mentions.0.push(mention.key(&d.source));
            self.mentions.1.push(event_id.clone());
        }
        self.ids.push(event_id);
        self.sources.push(d.source.clone());
        self.keys.push(pack_dedupe_key(&d.dedupe_key));
        self.received.push(d.received_at.to_string());
        self.headers.push(serde_json::to_string(&d.headers)?);
        self.bodies.push(body.bytes);
        self.codecs.push(body.codec as i16);
        self.statuses.push(settled.status.as_str());
        self.reasons.push(settled.reason);
        self.outcomes.push(settled.outcome.map(Outcome::as_str));
        self.customers.push(settled.customer_id);
        self.duplicates.push(0);
        Ok(())
    }

    /// Inserts the events, in order (their `seq` is arrival order), and
    /// what they name, in one statement.
    async fn write(self, work: &mut Work<'_>) -> Result<(), StoreError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "WITH kept AS (
                 INSERT INTO events (id, source, dedupe_key, received_at, headers, body, codec, status, reason,
                                     outcome, customer_id, duplicates)
                 SELECT id, source, dedupe_key, received_at, headers, body, codec, status, reason,
                        outcome, customer_id, duplicates
                 FROM unnest($1::text[], $2::text[], $3::bytea[], $4::text[], $5::text[], $6::bytea[],
                             $7::smallint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bigint[])
                      WITH ORDINALITY AS e(id, source, dedupe_key, received_at, headers, body, codec, status,
                                           reason, outcome, customer_id, duplicates, n)
                 ORDER BY n
                 RETURNING id, seq)
             INSERT INTO event_mentions (key, event_seq)
             SELECT m.key, kept.seq FROM unnest($13::text[], $14::text[]) AS m(key, event_id)
             JOIN kept ON kept.id = m.event_id
             ON CONFLICT DO NOTHING",
        )
        .bind(self.ids)
        .bind(self.sources)
        .bind(self.keys)
        .bind(self.received)
        .bind(self.headers)
        .bind(self.bodies)
        .bind(self.codecs)
        .bind(self.statuses)
        .bind(self.reasons)
        .bind(self.outcomes)
        .bind(self.customers)
        .bind(self.duplicates)
        .bind(self.mentions.0)
        .bind(self.mentions.1)
        .execute(work.conn())
        .await?;
        Ok(())
    }
}
