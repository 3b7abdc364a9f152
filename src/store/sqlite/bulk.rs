//! Keeping an import's batch of deliveries (`Op::IngestBatch`) with a
//! few statements for the whole batch instead of about fifteen for each
//! delivery.
//!
//! What it keeps is exactly what [`super::ingest`] keeps for each delivery
//! in turn: the same answers, dedupe, directory fold, history, outbox rows
//! and change feed (`tests::a_bulk_batch_keeps_what_deliveries_one_by_one_keep`
//! compares the two on the same deliveries). Only how it reaches the
//! database differs:
//! - **reads, once for the batch**: the records, merge links,
//!   suppressions and version floors of every customer the batch touches,
//!   and which of its dedupe keys were kept before, each by one statement
//!   over the batch's keys (sorted, so that the B-tree pages are visited in
//!   order);
//! - **the fold, in memory**: each delivery is folded by
//!   [`directory::apply`] into that state as the deliveries before it left
//!   it, so that a customer twice in a batch sees its first change;
//! - **writes, a table at a time**: each record once, in its last state;
//!   history entries, outbox rows and events with multi-row statements, at
//!   the positions (`seq`) the one-by-one path gives them, so that the
//!   chains (migration 4) and the outbox's order come out the same;
//! - **the raw bodies compressed beside the fold**, on a thread of their
//!   own: they depend on nothing the fold decides;
//! - **an envelope serialized only if it is written**: one kept composed
//!   (`super::composed`, a creation the batch leaves as it made it) never
//!   is.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use rusqlite::{Connection, ToSql, params};

use super::composed;
use super::ids::{KeptId, PackedId};
use super::{Context, Head, Heads, RecordColumns, UPSERT_LINK, lookup_delete, lookup_insert, read_record, record_sql};
use crate::directory::{self, Effects, HistoryEntry, Loaded, MergeLink, Record};
use crate::model::{OrderKey, UtcMillis};
use crate::store::compress::Packed;
use crate::store::rows::{
    Envelope, Lookup, Settled, Settling, is_suppressed_target, lookup_edits, pack_body, pack_dedupe_key, pack_envelope,
    pack_history, pack_order_key, record_columns, settling, touched_ids, unpack_dedupe_key, unpack_order_key,
};
use crate::store::{Action, Delivery, IngestOutcome, Publish, StoreError};

/// Rows one multi-row `INSERT` writes at most: the widest (customers, 16
/// columns) stays far below SQLite's 32,766 parameters.
const ROWS_PER_INSERT: usize = 100;

/// Keeps `deliveries` in order, as [`super::ingest`] keeps each; their
/// changes go to the outbox if `publish`.
pub(super) fn ingest_batch(
    tx: &Connection,
    deliveries: &[Delivery],
    publish: Publish,
    ctx: &mut Context,
) -> Result<Vec<IngestOutcome>, StoreError> {
    let mut batch = Batch::load(tx, deliveries)?;
    // The raw bodies depend on nothing the fold decides: they are
    // compressed on a thread of their own meanwhile (a twelfth of the
    // writer's instructions, callgrind), all but those of events kept before.
    let kept_before: Vec<bool> = deliveries.iter().map(|d| batch.kept_before(d)).collect();
    let (bodies, outcomes) = std::thread::scope(|scope| {
        let bodies = scope.spawn(|| {
            deliveries
                .iter()
                .zip(&kept_before)
                .map(|(d, &kept)| (!kept).then(|| pack_body(&d.body)))
                .collect::<Vec<_>>()
        });
        let outcomes = deliveries
            .iter()
            .enumerate()
            .map(|(at, d)| batch.keep(at, d, publish, ctx))
            .collect::<Result<Vec<_>, _>>();
        (bodies.join(), outcomes)
    });
    let bodies = bodies.map_err(|_| StoreError::Bug("compressing an import's bodies panicked".into()))?;
    let outcomes = outcomes?;
    batch.write(tx, &bodies)?;
    Ok(outcomes)
}

/// The state a batch touches, as the deliveries folded so far left it, and
/// the rows they wrote.
struct Batch {
    /// Every touched customer's record, suppression and floor. Its links
    /// are set to those naming an event's customers before each fold
    /// (what [`super::load`] would read for it).
    state: Loaded,
    links: Links,
    heads: Heads,
    /// The records as their rows were before the batch.
    stored: HashMap<String, Record>,
    /// Of those, the ones whose last outbox row or history entry is kept
    /// composed from them ([`composed::COMPOSED`]), and those: written out if the
    /// record changes or the customer gets another entry.
    composed: HashMap<String, (Option<i64>, Option<i64>)>,
    /// The customers whose row the batch writes, in the order they were
    /// first written.
    written: Vec<String>,
    /// Of those, each one's last place in the change feed if the batch
    /// changed its record (`None`: only its order key or chains moved).
    changed: HashMap<String, Option<i64>>,
    /// Links to insert or raise, with their last key.
    raised: BTreeMap<(String, String), OrderKey>,
    /// Each source's dedupe keys seen: kept before (an event id) or in this
    /// batch (an index in `events`).
    seen: HashMap<String, HashMap<String, Seen>>,
    /// Duplicates of events kept before, by event id.
    bumps: BTreeMap<String, i64>,
    events: Vec<EventRow>,
    history: Vec<HistoryRow>,
    /// The customers created in the batch whose creation's entry (its
    /// place in `history`) is still without its changes
    /// ([`directory::apply_deferring_creations`]): most are kept composed,
    /// and never need them.
    bare_creations: HashMap<String, usize>,
    outbox: Vec<OutboxRow>,
    mentions: Vec<(String, i64)>,
    next: Seqs,
}

enum Seen {
    Stored(String),
    Kept(usize),
}

/// The next `seq` of each table the batch appends to.
struct Seqs {
    event: i64,
    history: i64,
    outbox: i64,
}

struct EventRow {
    seq: i64,
    id: PackedId<String>,
    source: String,
    /// As kept: see [`pack_dedupe_key`].
    dedupe_key: Vec<u8>,
    received_at: String,
    headers: String,
    /// Its delivery's place in the batch, where its packed body is.
    delivery: usize,
    status: &'static str,
    reason: Option<String>,
    outcome: Option<&'static str>,
    customer_id: Option<String>,
    duplicates: i64,
}

struct HistoryRow {
    seq: i64,
    customer_id: String,
    event_id: PackedId<String>,
    /// The entry, packed when written (or kept composed).
    entry: HistoryEntry,
    prev: Option<i64>,
    /// The batch's event that made it (its place in `events`).
    event: usize,
}

struct OutboxRow {
    seq: i64,
    id: PackedId<String>,
    /// What its envelope tells: serialized and packed when written, unless
    /// kept composed (then never serialized here).
    change: directory::Change,
    /// The batch's event that made it (its place in `events`).
    event: usize,
    created_at: UtcMillis,
    /// `change`'s action and version, as their columns hold them.
    action: &'static str,
    version: i64,
    prev: Option<i64>,
}

/// The merge links naming a touched customer, by pair and by the ids they
/// name.
#[derive(Default)]
struct Links {
    keys: HashMap<(String, String), OrderKey>,
    naming: HashMap<String, Vec<(String, String)>>,
}

impl Links {
    fn raise(&mut self, link: MergeLink) {
        let pair = (link.survivor, link.absorbed);
        if self.keys.insert(pair.clone(), link.order_key).is_none() {
            self.naming.entry(pair.0.clone()).or_default().push(pair.clone());
            if pair.0 != pair.1 {
                self.naming.entry(pair.1.clone()).or_default().push(pair);
            }
        }
    }

    /// The links naming any of `ids`, each once.
    fn naming(&self, ids: &[String]) -> Vec<MergeLink> {
        let mut seen = HashSet::new();
        ids.iter()
            .filter_map(|id| self.naming.get(id))
            .flatten()
            .filter(|pair| seen.insert(*pair))
            .map(|pair| MergeLink {
                survivor: pair.0.clone(),
                absorbed: pair.1.clone(),
                order_key: self.keys[pair].clone(),
            })
            .collect()
    }
}

impl Batch {
    /// Reads what the batch touches, a statement per table.
    fn load(tx: &Connection, deliveries: &[Delivery]) -> Result<Self, StoreError> {
        let ids: BTreeSet<String> = deliveries.iter().flat_map(|d| touched_ids(&d.mapped)).collect();
        let ids = serde_json::to_string(&ids)?;
        let mut state = Loaded::default();
        let mut heads = Heads::default();
        let sql = format!(
            "SELECT {}, last_history, last_outbox, {} FROM customers WHERE id IN (SELECT value FROM json_each(?1))",
            record_columns("profile"),
            composed::heads()
        );
        let mut rows = tx.prepare_cached(&sql)?;
        let rows = rows.query_map([&ids], |r| {
            let head = Head {
                history: r.get(11)?,
                outbox: r.get(12)?,
                outbox_composed: r.get(13)?,
                history_composed: r.get(14)?,
                adopted: None,
            };
            Ok((read_record(r)?, head))
        })?;
        for row in rows {
            let (raw, head) = row?;
            let record = raw.into_record()?.0;
            heads.0.insert(record.id.clone(), head);
            state.records.insert(record.id.clone(), record);
        }
        let stored = state.records.clone();
        let composed = heads
            .0
            .iter()
            .filter(|(_, head)| head.outbox_composed || head.history_composed)
            .map(|(id, head)| {
                let outbox = head.outbox.filter(|_| head.outbox_composed);
                (id.clone(), (outbox, head.history.filter(|_| head.history_composed)))
            })
            .collect();
        // A customer without a record takes back where its chain of
        // envelopes ended, if a rebuild left it (as `super::load` does).
        let mut adopt = tx.prepare_cached(
            "SELECT customer_id, MAX(seq) FROM outbox_heads
             WHERE customer_id IN (SELECT value FROM json_each(?1)) GROUP BY customer_id",
        )?;
        for row in adopt.query_map([&ids], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (id, seq) = row?;
            if !stored.contains_key(&id) {
                heads.0.insert(
                    id,
                    Head {
                        outbox: Some(seq),
                        adopted: Some(seq),
                        ..Head::default()
                    },
                );
            }
        }
        let mut suppressed = tx.prepare_cached(
            "SELECT customer_id FROM suppressions WHERE customer_id IN (SELECT value FROM json_each(?1))",
        )?;
        for id in suppressed.query_map([&ids], |r| r.get::<_, String>(0))? {
            state.suppressed.insert(id?);
        }
        let mut floors = tx.prepare_cached(
            "SELECT customer_id, version FROM version_floors WHERE customer_id IN (SELECT value FROM json_each(?1))",
        )?;
        for floor in floors.query_map([&ids], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (id, version) = floor?;
            state.floors.insert(id, version as u64);
        }
        let mut links = Links::default();
        let mut rows = tx.prepare_cached(
            "SELECT survivor, absorbed, order_key FROM merge_links WHERE survivor IN (SELECT value FROM json_each(?1))
             UNION SELECT survivor, absorbed, order_key FROM merge_links WHERE absorbed IN (SELECT value FROM json_each(?1))",
        )?;
        let rows = rows.query_map([&ids], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Vec<u8>>(2)?))
        })?;
        for row in rows {
            let (survivor, absorbed, key) = row?;
            links.raise(MergeLink {
                survivor,
                absorbed,
                order_key: unpack_order_key(&key)?,
            });
        }
        Ok(Batch {
            state,
            links,
            heads,
            stored,
            composed,
            written: Vec::new(),
            changed: HashMap::new(),
            raised: BTreeMap::new(),
            seen: kept_keys(tx, deliveries)?,
            bumps: BTreeMap::new(),
            events: Vec::with_capacity(deliveries.len()),
            history: Vec::new(),
            bare_creations: HashMap::new(),
            outbox: Vec::new(),
            mentions: Vec::new(),
            next: Seqs {
                event: next_seq(tx, "events")?,
                history: next_seq(tx, "history")?,
                outbox: next_seq(tx, "outbox")?,
            },
        })
    }

    /// Whether `d` is a duplicate of an event kept before the batch.
    fn kept_before(&self, d: &Delivery) -> bool {
        self.seen
            .get(&d.source)
            .is_some_and(|keys| matches!(keys.get(&d.dedupe_key), Some(Seen::Stored(_))))
    }

    /// Folds delivery `at` of the batch into it, as [`super::ingest`] keeps it.
    fn keep(
        &mut self,
        at: usize,
        d: &Delivery,
        publish: Publish,
        ctx: &mut Context,
    ) -> Result<IngestOutcome, StoreError> {
        if is_suppressed_target(&self.state, &d.mapped) {
            return Ok(IngestOutcome::Suppressed);
        }
        let keys = self.seen.entry(d.source.clone()).or_default();
        match keys.get(&d.dedupe_key) {
            Some(Seen::Stored(event_id)) => {
                *self.bumps.entry(event_id.clone()).or_default() += 1;
                return Ok(IngestOutcome::Duplicate {
                    event_id: event_id.clone(),
                });
            }
            Some(Seen::Kept(at)) => {
                let event = &mut self.events[*at];
                event.duplicates += 1;
                return Ok(IngestOutcome::Duplicate {
                    event_id: event.id.0.clone(),
                });
            }
            None => {}
        }
        keys.insert(d.dedupe_key.clone(), Seen::Kept(self.events.len()));
        let event_id = format!("evt_{}", uuid::Uuid::now_v7().simple());
        let settled = match settling(&event_id, &d.dedupe_key, d.received_at, &d.mapped) {
            Settling::Done(settled) => settled,
            Settling::Apply(event, meta) => {
                self.state.links = self.links.naming(&directory::touched_ids(event));
                let effects = directory::apply_deferring_creations(&self.state, event, &meta, ctx.clock.now());
                let outcome = effects
                    .outcome
                    .expect("applying an event always settles its own customer");
                self.persist(effects, publish, ctx)?;
                Settled::accepted(meta, event.customer.id.clone(), outcome)
            }
        };
        let seq = self.next.event;
        self.next.event += 1;
        self.mentions.extend(d.mentions.iter().map(|m| (m.key(&d.source), seq)));
        self.events.push(EventRow {
            seq,
            id: PackedId(event_id),
            source: d.source.clone(),
            dedupe_key: pack_dedupe_key(&d.dedupe_key),
            received_at: d.received_at.to_string(),
            headers: serde_json::to_string(&d.headers)?,
            delivery: at,
            status: settled.status.as_str(),
            reason: settled.reason,
            outcome: settled.outcome.map(|o| o.as_str()),
            customer_id: settled.customer_id,
            duplicates: 0,
        });
        Ok(settled.answer)
    }

    /// What [`super::persist`] writes for one event, kept in memory: the
    /// history entries and outbox rows as rows to insert, the records in
    /// the state.
    fn persist(&mut self, effects: Effects, publish: Publish, ctx: &mut Context) -> Result<(), StoreError> {
        let touched = effects.history.iter().map(|(id, _)| id);
        for id in touched.chain(effects.writes.iter().map(|w| &w.record.id)) {
            self.complete_creation(id)?;
        }
        for (customer_id, entry) in effects.history {
            if entry.action == Action::Created {
                self.bare_creations.insert(customer_id.clone(), self.history.len());
            }
            let seq = self.next.history;
            self.next.history += 1;
            let prev = self.heads.of(&customer_id).history.replace(seq);
            self.write_row(&customer_id, None);
            self.history.push(HistoryRow {
                seq,
                customer_id,
                event_id: PackedId(entry.event_id.clone()),
                prev,
                entry,
                event: self.events.len(),
            });
        }
        if publish == Publish::Yes {
            ctx.queued |= !effects.changes.is_empty();
            for change in effects.changes {
                let customer = &change.customer;
                let head = self.heads.of(&customer.id);
                let seq = self.next.outbox;
                self.next.outbox += 1;
                self.outbox.push(OutboxRow {
                    seq,
                    created_at: ctx.clock.now(),
                    id: PackedId(Envelope::new_id()),
                    event: self.events.len(),
                    action: change.action.as_str(),
                    version: customer.version as i64,
                    prev: head.outbox,
                    change,
                });
                head.outbox = Some(seq);
            }
        }
        for write in effects.writes {
            let change = write.changed.then(|| {
                ctx.last_change += 1;
                ctx.last_change
            });
            self.write_row(&write.record.id, change);
            self.state.records.insert(write.record.id.clone(), write.record);
        }
        for link in effects.links {
            self.raised
                .insert((link.survivor.clone(), link.absorbed.clone()), link.order_key.clone());
            self.links.raise(link);
        }
        Ok(())
    }

    /// Gives customer `id`'s creation in the batch, if its entry is still
    /// without its changes, those of the record it created: before the
    /// record changes or the customer gets another entry.
    fn complete_creation(&mut self, id: &str) -> Result<(), StoreError> {
        if let Some(at) = self.bare_creations.remove(id) {
            let record = self
                .state
                .records
                .get(id)
                .ok_or_else(|| StoreError::Bug("a created customer has no record".into()))?;
            self.history[at].entry.changes = directory::creation_changes(record);
        }
        Ok(())
    }

    /// Notes that customer `id`'s row is written, changed at `change` in
    /// the feed if its record changed.
    fn write_row(&mut self, id: &str, change: Option<i64>) {
        match self.changed.get_mut(id) {
            Some(last) => *last = change.or(*last),
            None => {
                self.written.push(id.to_owned());
                self.changed.insert(id.to_owned(), change);
            }
        }
    }

    /// Writes what the batch left, a table at a time; the events' bodies
    /// are in `bodies`, packed, at their deliveries' places. The records'
    /// rows are made ready (a ninth of the writer's instructions,
    /// callgrind) while the other tables are written.
    fn write(&self, tx: &Connection, bodies: &[Option<Packed>]) -> Result<(), StoreError> {
        std::thread::scope(|scope| {
            let records = scope.spawn(|| self.plan_records());
            self.write_entries(tx, bodies)?;
            records
                .join()
                .map_err(|_| StoreError::Bug("making an import's records ready panicked".into()))??
                .write(tx)
        })
    }

    /// Writes the rows the batch appends (history, outbox, events and
    /// their mentions), its links and its duplicates' counts.
    fn write_entries(&self, tx: &Connection, bodies: &[Option<Packed>]) -> Result<(), StoreError> {
        // A customer that gets another entry, or whose record changes,
        // first has what was composed from its stored record written out,
        // as `super::persist` does.
        let changed = self
            .changed
            .iter()
            .filter(|(_, change)| change.is_some())
            .map(|(id, _)| id);
        let touched: BTreeSet<&String> = self.history.iter().map(|h| &h.customer_id).chain(changed).collect();
        for id in touched {
            if let (Some(&(outbox, history)), Some(stored)) = (self.composed.get(id), self.stored.get(id)) {
                composed::write_out(tx, outbox, history, stored)?;
            }
        }
        // Each customer's last entry, if it is the creation of the record
        // the batch ends with, is kept composed.
        let last: HashMap<&str, i64> = self.history.iter().map(|h| (h.customer_id.as_str(), h.seq)).collect();
        let history = self
            .history
            .iter()
            .enumerate()
            .map(|(at, h)| {
                let record = self.state.records.get(&h.customer_id);
                let compose =
                    last[h.customer_id.as_str()] == h.seq && record.is_some_and(|r| composed::composes(&h.entry, r));
                let entry = match record {
                    _ if compose => composed::kept(),
                    // A creation the batch left as it made it.
                    Some(record) if self.bare_creations.get(&h.customer_id) == Some(&at) => {
                        pack_history(&HistoryEntry {
                            changes: directory::creation_changes(record),
                            ..h.entry.clone()
                        })?
                    }
                    _ => pack_history(&h.entry)?,
                };
                Ok((h, entry, compose.then(|| h.entry.received_at.as_millisecond())))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        insert_rows(
            tx,
            "INSERT INTO history (seq, customer_id, event_id, entry, codec, prev, received_at) VALUES",
            &history,
            |(h, entry, received_at)| {
                vec![
                    &h.seq,
                    &h.customer_id,
                    &h.event_id,
                    &entry.bytes,
                    &entry.codec,
                    &h.prev,
                    received_at,
                ]
            },
        )?;
        // Each customer's last envelope, if it created the customer at the
        // version its record ends the batch at and no later event gave the
        // customer another entry, is kept composed, as
        // `super::outbound::queue` keeps it and `super::persist` writes it
        // out.
        let last: HashMap<&str, i64> = self
            .outbox
            .iter()
            .map(|o| (o.change.customer.id.as_str(), o.seq))
            .collect();
        let last_entry: HashMap<&str, usize> = self.history.iter().map(|h| (h.customer_id.as_str(), h.event)).collect();
        let outbox: Vec<(&OutboxRow, String, Packed)> = self
            .outbox
            .iter()
            .map(|o| {
                let composed = o.action == Action::Created.as_str()
                    && last[o.change.customer.id.as_str()] == o.seq
                    && last_entry
                        .get(o.change.customer.id.as_str())
                        .is_none_or(|&event| event == o.event)
                    && self.state.records.get(&o.change.customer.id).map(|r| r.version as i64) == Some(o.version);
                let body = if composed {
                    composed::kept()
                } else {
                    let change = &o.change;
                    pack_envelope(&Envelope::body(
                        &o.id.0,
                        o.created_at,
                        change.action,
                        &change.customer,
                        &change.changes,
                    ))
                };
                (o, o.created_at.to_string(), body)
            })
            .collect();
        insert_rows(
            tx,
            "INSERT INTO outbox (seq, id, customer_id, source, action, version, created_at, body, codec, prev) VALUES",
            &outbox,
            |(o, created_at, body)| {
                vec![
                    &o.seq,
                    &o.id,
                    &o.change.customer.id,
                    &o.change.customer.source,
                    &o.action,
                    &o.version,
                    created_at,
                    &body.bytes,
                    &body.codec,
                    &o.prev,
                ]
            },
        )?;
        for ((survivor, absorbed), key) in &self.raised {
            tx.prepare_cached(UPSERT_LINK)?
                .execute(params![survivor, absorbed, pack_order_key(key)])?;
        }
        let events: Vec<(&EventRow, &Packed)> = self
            .events
            .iter()
            .map(|e| {
                let body = bodies[e.delivery].as_ref();
                (e, body.expect("a kept event's body is packed: it was not kept before"))
            })
            .collect();
        insert_rows(
            tx,
            "INSERT INTO events (seq, id, source, dedupe_key, received_at, headers, body, codec, status, reason,
                                 outcome, customer_id, duplicates) VALUES",
            &events,
            |(e, body)| {
                vec![
                    &e.seq,
                    &e.id,
                    &e.source,
                    &e.dedupe_key,
                    &e.received_at,
                    &e.headers,
                    &body.bytes,
                    &body.codec,
                    &e.status,
                    &e.reason,
                    &e.outcome,
                    &e.customer_id,
                    &e.duplicates,
                ]
            },
        )?;
        insert_rows(
            tx,
            "INSERT OR IGNORE INTO event_mentions (key, event_seq) VALUES",
            &self.mentions,
            |(key, seq)| vec![key as &dyn ToSql, seq],
        )?;
        let mut bump = tx.prepare_cached("UPDATE events SET duplicates = duplicates + ?2 WHERE id = ?1")?;
        for (event_id, duplicates) in &self.bumps {
            bump.execute(params![PackedId(event_id), duplicates])?;
        }
        Ok(())
    }

    /// What writing each written record once, in its last state, takes:
    /// its columns (the profile serialized and compressed) and its lookup
    /// rows' edits from the stored record's. No statement: made on a
    /// thread of its own while the other tables are written.
    fn plan_records(&self) -> Result<RecordWrites<'_>, StoreError> {
        let mut plan = RecordWrites::default();
        for id in &self.written {
            let record = self
                .state
                .records
                .get(id)
                .ok_or_else(|| StoreError::Bug("a history entry's record has no row".into()))?;
            let head = self.heads.0.get(id).copied().unwrap_or_default();
            let old = self.stored.get(id);
            let change = self.changed.get(id).copied().flatten();
            for (lookup, add, key) in lookup_edits(old.map(|o| &o.profile), &record.profile) {
                plan.lookups.entry((lookup, add)).or_default().push((key, id));
            }
            match (old, change) {
                (None, Some(change_seq)) => {
                    plan.inserted.push(RecordColumns::new(record, change_seq, head)?);
                    plan.adopted.extend(head.adopted.map(|seq| (id, seq)));
                }
                (Some(old), Some(change_seq)) => plan.updated.push((
                    record_sql(Some(old), record),
                    RecordColumns::new(record, change_seq, head)?,
                )),
                (Some(_), None) => plan.moved.push((record, head.history)),
                (None, None) => {}
            }
        }
        Ok(plan)
    }
}

/// The records a batch writes, as [`Batch::plan_records`] made them ready
/// for their statements.
#[derive(Default)]
struct RecordWrites<'a> {
    /// New records.
    inserted: Vec<RecordColumns<'a>>,
    /// Records whose fields changed, with the statement that updates them.
    updated: Vec<(&'static str, RecordColumns<'a>)>,
    /// Records of which only the order key and history's head moved.
    moved: Vec<(&'a Record, Option<i64>)>,
    /// Chains' ends taken from `outbox_heads` by new records, whose rows
    /// there go.
    adopted: Vec<(&'a String, i64)>,
    lookups: BTreeMap<(Lookup, bool), Vec<(String, &'a String)>>,
}

impl RecordWrites<'_> {
    fn write(&self, tx: &Connection) -> Result<(), StoreError> {
        for (sql, columns) in &self.updated {
            check_written(tx.prepare_cached(sql)?.execute(columns.values().as_slice())?)?;
        }
        for (record, history) in &self.moved {
            let written = tx
                .prepare_cached("UPDATE customers SET order_key = ?2, last_history = ?3 WHERE id = ?1")?
                .execute(params![
                    record.id,
                    record.order_key.as_ref().map(pack_order_key),
                    history
                ])?;
            check_written(written)?;
        }
        for (id, seq) in &self.adopted {
            tx.prepare_cached("DELETE FROM outbox_heads WHERE customer_id = ?1 AND seq = ?2")?
                .execute(params![id, seq])?;
        }
        insert_rows(tx, insert_records!(), &self.inserted, RecordColumns::values)?;
        for ((lookup, add), rows) in &self.lookups {
            if *add {
                insert_rows(tx, &lookup_insert(*lookup), rows, |(key, id)| {
                    vec![key as &dyn ToSql, id]
                })?;
            } else {
                let mut delete = tx.prepare_cached(&lookup_delete(*lookup))?;
                for (key, id) in rows {
                    delete.execute(params![key, id])?;
                }
            }
        }
        Ok(())
    }
}

/// A record's update found its row.
fn check_written(rows: usize) -> Result<(), StoreError> {
    if rows == 1 {
        Ok(())
    } else {
        Err(StoreError::Bug("a record to update has no row".into()))
    }
}

/// Each source's dedupe keys in `deliveries` that an event already has.
fn kept_keys(tx: &Connection, deliveries: &[Delivery]) -> Result<HashMap<String, HashMap<String, Seen>>, StoreError> {
    let mut keys: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for d in deliveries {
        keys.entry(&d.source).or_default().insert(&d.dedupe_key);
    }
    // The keys as kept, in hex: JSON holds no bytes.
    let mut kept = tx.prepare_cached(
        "SELECT dedupe_key, id FROM events WHERE source = ?1 AND dedupe_key IN (SELECT unhex(value) FROM json_each(?2))",
    )?;
    let mut seen = HashMap::new();
    for (source, keys) in keys {
        let packed: Vec<String> = keys.iter().map(|k| hex::encode(pack_dedupe_key(k))).collect();
        let rows = kept.query_map(params![source, serde_json::to_string(&packed)?], |r| {
            Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, KeptId>(1)?.0))
        })?;
        let mut found = HashMap::new();
        for row in rows {
            let (key, id) = row?;
            found.insert(unpack_dedupe_key(&key)?, Seen::Stored(id));
        }
        seen.insert(source.to_owned(), found);
    }
    Ok(seen)
}

/// The `seq` the next row of `table` (with `AUTOINCREMENT`) gets: past
/// every one it ever gave, as SQLite would.
fn next_seq(tx: &Connection, table: &str) -> Result<i64, StoreError> {
    let sql = format!(
        "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = '{table}'), 0),
                    COALESCE((SELECT MAX(seq) FROM {table}), 0)) + 1"
    );
    Ok(tx.prepare_cached(&sql)?.query_row([], |r| r.get(0))?)
}

/// Inserts `rows` with `insert` (`INSERT INTO t (columns) VALUES`) and the
/// values `columns` gives for each, [`ROWS_PER_INSERT`] rows a statement.
fn insert_rows<T>(
    tx: &Connection,
    insert: &str,
    rows: &[T],
    columns: impl for<'r> Fn(&'r T) -> Vec<&'r dyn ToSql>,
) -> Result<(), StoreError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let width = columns(first).len();
    let tuple = format!("({})", vec!["?"; width].join(", "));
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let sql = format!("{insert} {}", vec![tuple.as_str(); chunk.len()].join(", "));
        let values: Vec<&dyn ToSql> = chunk.iter().flat_map(&columns).collect();
        if chunk.len() == ROWS_PER_INSERT {
            tx.prepare_cached(&sql)?.execute(values.as_slice())?;
        } else {
            // A batch's last, shorter statement: not worth a place in the cache.
            tx.prepare(&sql)?.execute(values.as_slice())?;
        }
    }
    Ok(())
}
