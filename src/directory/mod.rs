//! The customer directory's rules, decided without I/O: what one customer
//! event does to the records it touches ([`apply`]), and what erasing a
//! customer does ([`erase`]). This is the product's domain: every store
//! backend loads what a decision needs, calls it, and persists the
//! [`Effects`] in its own dialect, so that the backends cannot disagree,
//! and property tests check convergence without a database.
//!
//! A backend loads the records and merge links an event touches
//! ([`touched_ids`]), calls [`apply`], and persists the [`Effects`] in the
//! same transaction as the raw delivery.
//!
//! Convergence: a record's fields are a function of its highest-keyed
//! snapshot and of the set of merge links naming it, each link keeping the
//! highest key that claimed it. Both are independent of arrival order and
//! of repetition, so the directory is too; only `version` and `changedAt`
//! (bookkeeping) record the order things happened in.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value, json};

use serde::{Deserialize, Serialize};

use crate::model::{Action, Customer, CustomerEvent, CustomerRef, OrderKey, Profile, Status, UtcMillis, Warning};

/// What an event did to its customer's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    /// Older than the record's current snapshot: kept, changed nothing.
    Stale,
    /// Newer, but the record already said all of it.
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Unchanged => "unchanged",
        }
    }
}

/// One entry of a customer's history (SPEC §5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub event_id: String,
    pub received_at: UtcMillis,
    pub order_key: OrderKey,
    pub action: Action,
    pub outcome: Outcome,
    pub changes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

/// A customer as kept: the applied snapshot plus derived merge state and
/// bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub id: String,
    pub source: String,
    pub external_id: String,
    /// The applied snapshot, with the platform's own status.
    pub profile: Profile,
    /// `None`: a merge stub that no snapshot has reached yet.
    pub order_key: Option<OrderKey>,
    pub merged_into: Option<String>,
    pub merged_from: Vec<String>,
    pub version: u64,
    pub changed_at: UtcMillis,
}

impl Record {
    /// The profile's own status, or `merged` while the record has a
    /// `mergedInto` link.
    pub fn status(&self) -> Status {
        if self.merged_into.is_some() {
            Status::Merged
        } else {
            self.profile.status
        }
    }

    pub fn to_customer(&self) -> Customer {
        let mut profile = self.profile.clone();
        profile.status = self.status();
        Customer {
            id: self.id.clone(),
            source: self.source.clone(),
            external_id: self.external_id.clone(),
            profile,
            merged_into: self.merged_into.clone(),
            merged_from: self.merged_from.clone(),
            version: self.version,
            changed_at: self.changed_at,
        }
    }
}

/// `absorbed` was merged into `survivor`, as claimed by the event with
/// `order_key` (the highest such claim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeLink {
    pub survivor: String,
    pub absorbed: String,
    pub order_key: OrderKey,
}

/// The state an event needs: every touched record that exists, every link
/// that names a touched id, which touched ids were erased, and the version
/// floors of touched ids that a rebuild left (see [`Loaded::floors`]).
#[derive(Debug, Default)]
pub struct Loaded {
    pub records: HashMap<String, Record>,
    pub links: Vec<MergeLink>,
    pub suppressed: HashSet<String>,
    /// The version each of these customers had before a rebuild that has
    /// not finished: its next change must come after every version
    /// subscribers may have received, whatever the rebuild replayed so far.
    pub floors: HashMap<String, u64>,
}

impl Loaded {
    /// The version a change of `id` comes after: its record's, or a rebuild's
    /// floor if higher.
    fn version_before(&self, id: &str) -> u64 {
        let floor = self.floors.get(id).copied().unwrap_or(0);
        self.records.get(id).map_or(0, |r| r.version).max(floor)
    }
}

/// Who the event was, for history entries.
#[derive(Debug, Clone)]
pub struct EventMeta {
    pub event_id: String,
    pub received_at: UtcMillis,
    pub order_key: OrderKey,
}

/// A record to insert or update.
#[derive(Debug, Clone)]
pub struct RecordWrite {
    pub record: Record,
    /// The record's fields changed (as opposed to only its order key): it
    /// gets a new place in the change feed.
    pub changed: bool,
}

/// A real change of a record, for subscribers.
#[derive(Debug, Clone)]
pub struct Change {
    pub action: Action,
    pub customer: Customer,
    /// What differs from the customer before, as [`diff`] tells it; none
    /// for a creation, whose payload is all there is to know (SPEC §6: its
    /// fields are not sent again as changes from nothing; the history
    /// keeps them).
    pub changes: Map<String, Value>,
}

#[derive(Debug, Default)]
pub struct Effects {
    /// The outcome for the event's own customer.
    pub outcome: Option<Outcome>,
    pub writes: Vec<RecordWrite>,
    /// Links to insert, or to raise to a higher key.
    pub links: Vec<MergeLink>,
    pub history: Vec<(String, HistoryEntry)>,
    pub changes: Vec<Change>,
}

/// The ids whose state [`apply`] needs: the event's customer and every
/// customer its merge fields name.
pub fn touched_ids(event: &CustomerEvent) -> Vec<String> {
    let mut seen = HashSet::new();
    std::iter::once(&event.customer)
        .chain(&event.merged_into)
        .chain(&event.merged_from)
        .filter(|who| seen.insert(who.id.as_str()))
        .map(|who| who.id.clone())
        .collect()
}

/// Folds `event` into the loaded state. `now` stamps changed records.
pub fn apply(loaded: &Loaded, event: &CustomerEvent, meta: &EventMeta, now: UtcMillis) -> Effects {
    fold(loaded, event, meta, now, true)
}

/// [`apply`], but a created record's history entry is left without its
/// changes: they are [`creation_changes`] of the record it created, for a
/// caller that keeps most creations composed from their records and
/// would never read them.
pub fn apply_deferring_creations(loaded: &Loaded, event: &CustomerEvent, meta: &EventMeta, now: UtcMillis) -> Effects {
    fold(loaded, event, meta, now, false)
}

/// A created record's changes: each of its fields, from nothing.
pub fn creation_changes(created: &Record) -> Map<String, Value> {
    diff(None, &created.to_customer())
}

fn fold(loaded: &Loaded, event: &CustomerEvent, meta: &EventMeta, now: UtcMillis, creations: bool) -> Effects {
    let me = &event.customer;
    let key = &meta.order_key;
    let mut effects = Effects::default();

    // Merge claims are facts: each raises its link to this event's key.
    // Claims on oneself or on an erased customer are dropped.
    let claims = event
        .merged_into
        .iter()
        .map(|survivor| (survivor, me))
        .chain(event.merged_from.iter().map(|absorbed| (me, absorbed)))
        .filter(|(s, a)| s.id != a.id && ![&s.id, &a.id].iter().any(|id| loaded.suppressed.contains(*id)));
    let mut links: BTreeMap<(String, String), OrderKey> = loaded
        .links
        .iter()
        .map(|l| ((l.survivor.clone(), l.absorbed.clone()), l.order_key.clone()))
        .collect();
    let mut refs: BTreeMap<&str, &CustomerRef> = BTreeMap::from([(me.id.as_str(), me)]);
    for (survivor, absorbed) in claims {
        refs.insert(&survivor.id, survivor);
        refs.insert(&absorbed.id, absorbed);
        let pair = (survivor.id.clone(), absorbed.id.clone());
        if links.get(&pair).is_none_or(|k| k < key) {
            links.insert(pair.clone(), key.clone());
            effects.links.push(MergeLink {
                survivor: pair.0,
                absorbed: pair.1,
                order_key: key.clone(),
            });
        }
    }

    let mine = loaded.records.get(&me.id);
    // An equal key is the record's own event again (a key holds its
    // delivery's dedupe key, unique per source): a reprocess, whose
    // mapping takes effect if a fixed adapter changed it.
    let snapshot_applies = mine.and_then(|r| r.order_key.as_ref()).is_none_or(|k| k <= key);

    let merges = MergeIndex::new(links.iter().map(|((s, a), k)| (s.as_str(), a.as_str(), k)));
    for (id, who) in refs {
        let old = loaded.records.get(id);
        let (profile, order_key) = if id == me.id && snapshot_applies {
            (event.profile.clone(), Some(key.clone()))
        } else if let Some(old) = old {
            (old.profile.clone(), old.order_key.clone())
        } else {
            let stub = Profile {
                account: who.account.clone(),
                ..Profile::default()
            };
            (stub, None)
        };
        let (merged_into, merged_from) = merges.of(id);
        let mut record = Record {
            id: id.to_owned(),
            source: old.map_or_else(|| who.source.clone(), |o| o.source.clone()),
            external_id: old.map_or_else(|| who.external_id.clone(), |o| o.external_id.clone()),
            profile,
            order_key,
            merged_into,
            merged_from,
            version: loaded.version_before(id),
            changed_at: old.map_or(now, |o| o.changed_at),
        };
        let before = old.map(Record::to_customer);
        // The change's own customer: what differs once it is applied
        // (version and changedAt are not changes) is set below.
        let mut customer = record.to_customer();
        let changes = match old {
            None if !creations => Map::new(),
            _ => diff(before.as_ref(), &customer),
        };
        let is_me = id == me.id;
        if old.is_some() && changes.is_empty() {
            if is_me {
                let outcome = if snapshot_applies {
                    Outcome::Unchanged
                } else {
                    Outcome::Stale
                };
                effects.outcome = Some(outcome);
                effects.history.push((
                    id.to_owned(),
                    entry(meta, Action::Updated, outcome, Map::new(), &event.warnings),
                ));
                if old.is_some_and(|o| o.order_key != record.order_key) {
                    effects.writes.push(RecordWrite { record, changed: false });
                }
            }
            continue;
        }
        let action = match old {
            None => Action::Created,
            Some(old) if old.merged_into.is_none() && record.merged_into.is_some() => Action::Merged,
            Some(_) => Action::Updated,
        };
        record.version += 1;
        record.changed_at = now;
        customer.version = record.version;
        customer.changed_at = now;
        if is_me {
            effects.outcome = Some(Outcome::Applied);
        }
        // A creation's change sends no changes: its history entry takes
        // them without a copy.
        let (entry_changes, changes) = match action {
            Action::Created => (changes, Map::new()),
            _ => (changes.clone(), changes),
        };
        effects.history.push((
            id.to_owned(),
            entry(meta, action, Outcome::Applied, entry_changes, &event.warnings),
        ));
        effects.changes.push(Change {
            action,
            customer,
            changes,
        });
        effects.writes.push(RecordWrite { record, changed: true });
    }
    effects
}

/// Every record's merge fields, from the links that name it: `mergedInto`
/// the survivor of the highest-keyed claim on it, `mergedFrom` every record
/// it absorbed, sorted. Built once per event: one survivor may absorb
/// thousands.
struct MergeIndex<'a> {
    into: HashMap<&'a str, (&'a OrderKey, &'a str)>,
    from: HashMap<&'a str, BTreeSet<&'a str>>,
}

impl<'a> MergeIndex<'a> {
    fn new(links: impl Iterator<Item = (&'a str, &'a str, &'a OrderKey)>) -> Self {
        let mut index = Self {
            into: HashMap::new(),
            from: HashMap::new(),
        };
        for (survivor, absorbed, key) in links.filter(|(s, a, _)| s != a) {
            let best = index.into.entry(absorbed).or_insert((key, survivor));
            if key > best.0 {
                *best = (key, survivor);
            }
            index.from.entry(survivor).or_default().insert(absorbed);
        }
        index
    }

    fn of(&self, id: &str) -> (Option<String>, Vec<String>) {
        let into = self.into.get(id).map(|(_, survivor)| (*survivor).to_owned());
        let from = self
            .from
            .get(id)
            .map(|set| set.iter().map(|a| (*a).to_owned()).collect())
            .unwrap_or_default();
        (into, from)
    }
}

/// What erasing a customer does to the directory (SPEC §5).
#[derive(Debug)]
pub struct Erasing {
    /// Its partners, unlinked (see [`unlink`]).
    pub effects: Effects,
    /// The last change subscribers get of it: `deleted`, one version above
    /// its record's, with what the record said (the envelope is redacted
    /// when it is written).
    pub deleted: Change,
}

/// Erases `record` (loaded with its merge partners in `loaded`): its links
/// go, each partner is derived again without them, and the record's own
/// last change is `deleted`. `erasure_id` names the erasure in the
/// partners' history.
pub fn erase(loaded: &Loaded, record: &Record, erasure_id: String, now: UtcMillis) -> Erasing {
    let meta = EventMeta {
        event_id: erasure_id,
        received_at: now,
        order_key: OrderKey {
            at: Some(now),
            sent_at: None,
            dedupe_key: "erasure".into(),
        },
    };
    let effects = unlink(loaded, &record.id, &meta, now);
    let mut gone = record.to_customer();
    gone.version += 1;
    gone.changed_at = now;
    Erasing {
        effects,
        deleted: Change {
            action: Action::Deleted,
            customer: gone,
            changes: Map::new(),
        },
    }
}

/// Erasing `erased` removes its merge links: every loaded record tied to it
/// by one is derived again from the links that remain, and each that
/// changes is an `updated` change. `loaded` holds those records and every
/// link naming them.
fn unlink(loaded: &Loaded, erased: &str, meta: &EventMeta, now: UtcMillis) -> Effects {
    let merges = MergeIndex::new(
        loaded
            .links
            .iter()
            .filter(|l| l.survivor != erased && l.absorbed != erased)
            .map(|l| (l.survivor.as_str(), l.absorbed.as_str(), &l.order_key)),
    );
    let mut effects = Effects::default();
    let mut records: Vec<&Record> = loaded.records.values().filter(|r| r.id != erased).collect();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    for old in records {
        let (merged_into, merged_from) = merges.of(&old.id);
        let mut record = Record {
            merged_into,
            merged_from,
            version: loaded.version_before(&old.id),
            ..old.clone()
        };
        let changes = diff(Some(&old.to_customer()), &record.to_customer());
        if changes.is_empty() {
            continue;
        }
        record.version += 1;
        record.changed_at = now;
        effects.history.push((
            record.id.clone(),
            entry(meta, Action::Updated, Outcome::Applied, changes.clone(), &[]),
        ));
        effects.changes.push(Change {
            action: Action::Updated,
            customer: record.to_customer(),
            changes,
        });
        effects.writes.push(RecordWrite { record, changed: true });
    }
    effects
}

fn entry(
    meta: &EventMeta,
    action: Action,
    outcome: Outcome,
    changes: Map<String, Value>,
    warnings: &[Warning],
) -> HistoryEntry {
    HistoryEntry {
        event_id: meta.event_id.clone(),
        received_at: meta.received_at,
        order_key: meta.order_key.clone(),
        action,
        outcome,
        changes,
        warnings: warnings.to_vec(),
    }
}

/// Fields shown as sets: their changes are what was added and removed.
const SET_FIELDS: [&str; 3] = ["businessIds", "groups", "mergedFrom"];
/// The record's identity and bookkeeping: never a change in themselves.
const NOT_CHANGES: [&str; 5] = ["id", "source", "externalId", "version", "changedAt"];

/// The changes from `before` (none: a new record) to `after`, as
/// `{"field": {"from", "to"}}`, and `{"added", "removed"}` for set fields.
pub fn diff(before: Option<&Customer>, after: &Customer) -> Map<String, Value> {
    let to_map = |c: &Customer| match serde_json::to_value(c) {
        Ok(Value::Object(map)) => map,
        _ => unreachable!("a customer serializes to a JSON object"),
    };
    let mut before = before.map(to_map).unwrap_or_default();
    let mut changes = Map::new();
    // Both maps are taken apart: each value moves into its change, none is
    // copied.
    for (field, new) in to_map(after) {
        if NOT_CHANGES.contains(&field.as_str()) {
            continue;
        }
        let old = before.remove(&field).unwrap_or(Value::Null);
        if old == new || (old.is_null() && is_empty(&new)) {
            continue;
        }
        let change = if SET_FIELDS.contains(&field.as_str()) {
            let set = |v: Value| -> BTreeSet<String> {
                match v {
                    Value::Array(items) => items
                        .into_iter()
                        .filter_map(|x| match x {
                            Value::String(s) => Some(s),
                            _ => None,
                        })
                        .collect(),
                    _ => BTreeSet::new(),
                }
            };
            let (old, new) = (set(old), set(new));
            json!({
                "added": new.difference(&old).collect::<Vec<_>>(),
                "removed": old.difference(&new).collect::<Vec<_>>(),
            })
        } else {
            let mut change = Map::new();
            change.insert("from".into(), old);
            change.insert("to".into(), new);
            Value::Object(change)
        };
        changes.insert(field, change);
    }
    changes
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
