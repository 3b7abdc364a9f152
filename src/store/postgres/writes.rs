//! What a write transaction does to the directory, gathered from the
//! effects of one event, of many (a group commit, see [`super::group`]),
//! or of an erasure, and written in a few set-based statements: a round
//! trip each, however many rows.

use std::collections::{BTreeMap, HashMap};

use super::{Work, outbound};
use crate::directory::{Change, Effects, HistoryEntry, Loaded, MergeLink, Record};
use crate::model::{OrderKey, Profile};
use crate::store::rows::{lookup_keys, pack_history, pack_order_key, pack_profile};
use crate::store::{Publish, StoreError};

/// The directory's rows a transaction writes.
#[derive(Default)]
pub(super) struct Writes {
    /// Each record written, once, in the order first written.
    records: Vec<Written>,
    /// Where each record's id is in `records`.
    index: HashMap<String, usize>,
    /// Each link to insert or raise, with the last key it was given.
    links: BTreeMap<(String, String), OrderKey>,
    history: Vec<(String, HistoryEntry)>,
    /// The changes for subscribers, in the order they happened.
    changes: Vec<Change>,
}

/// A record as the transaction leaves it.
struct Written {
    /// Its profile as the transaction found it: the lookups change from
    /// its keys to the last profile's.
    found: Option<Profile>,
    record: Record,
    /// Whether a write changed it; otherwise only its order key moved.
    changed: bool,
}

impl Writes {
    /// Adds `effects`, decided on `loaded`, and brings `loaded` up to date
    /// with them: the next event decided on it finds what it would find
    /// read back after their commit. Queues the changes if `publish`.
    pub(super) fn add(&mut self, loaded: &mut Loaded, effects: Effects, publish: Publish) {
        for write in effects.writes {
            let record = write.record;
            let at = match self.index.get(&record.id) {
                Some(&at) => at,
                None => {
                    let found = loaded.records.get(&record.id);
                    self.index.insert(record.id.clone(), self.records.len());
                    self.records.push(Written {
                        found: found.map(|r| r.profile.clone()),
                        record: found.cloned().unwrap_or_else(|| record.clone()),
                        changed: false,
                    });
                    self.records.len() - 1
                }
            };
            let written = &mut self.records[at];
            if write.changed {
                written.record = record.clone();
                written.changed = true;
                loaded.records.insert(record.id.clone(), record);
            } else {
                // As the statement it becomes: the order key alone.
                written.record.order_key = record.order_key.clone();
                if let Some(kept) = loaded.records.get_mut(&record.id) {
                    kept.order_key = record.order_key;
                }
            }
        }
        let mut linked = false;
        for link in effects.links {
            let kept = loaded
                .links
                .iter_mut()
                .find(|l| l.survivor == link.survivor && l.absorbed == link.absorbed);
            match kept {
                Some(kept) => kept.order_key = link.order_key.clone(),
                None => {
                    loaded.links.push(link.clone());
                    linked = true;
                }
            }
            let MergeLink {
                survivor,
                absorbed,
                order_key,
            } = link;
            self.links.insert((survivor, absorbed), order_key);
        }
        if linked {
            // The order a load gives them.
            loaded
                .links
                .sort_by(|a, b| (&a.survivor, &a.absorbed).cmp(&(&b.survivor, &b.absorbed)));
        }
        self.history.extend(effects.history);
        if publish == Publish::Yes {
            self.changes.extend(effects.changes);
        }
    }

    /// Queues a change for subscribers after those added so far.
    pub(super) fn publish(&mut self, change: Change) {
        self.changes.push(change);
    }

    /// Writes it all in the transaction: records, lookups, links, history
    /// and outbox rows, a statement each (none for what is empty). The
    /// outbox rows come last, and so should this in a transaction (see
    /// `outbound::OutboxRows::write`).
    pub(super) async fn write(self, work: &mut Work<'_>) -> Result<(), StoreError> {
        write_records(work, &self.records).await?;
        write_lookups(work, &self.records).await?;
        write_links(work, self.links).await?;
        write_history(work, &self.history).await?;
        let now = work.now;
        work.queued |= outbound::queue(work.conn(), &self.changes, now).await?;
        Ok(())
    }
}

/// The changed records' rows, a column each.
#[derive(Default)]
struct RecordRows {
    ids: Vec<String>,
    sources: Vec<String>,
    external_ids: Vec<String>,
    accounts: Vec<Option<String>>,
    emails: Vec<Option<String>>,
    statuses: Vec<&'static str>,
    profiles: Vec<Vec<u8>>,
    order_keys: Vec<Option<Vec<u8>>>,
    merged_into: Vec<Option<String>>,
    merged_from: Vec<String>,
    versions: Vec<i64>,
    changed_at: Vec<String>,
    codecs: Vec<i16>,
}

async fn write_records(work: &mut Work<'_>, records: &[Written]) -> Result<(), StoreError> {
    let mut rows = RecordRows::default();
    let (mut moved, mut moved_keys) = (Vec::new(), Vec::new());
    for Written { record: r, changed, .. } in records {
        let order_key = r.order_key.as_ref().map(pack_order_key);
        if !changed {
            moved.push(r.id.clone());
            moved_keys.push(order_key);
            continue;
        }
        let profile = pack_profile(&r.profile)?;
        rows.ids.push(r.id.clone());
        rows.sources.push(r.source.clone());
        rows.external_ids.push(r.external_id.clone());
        rows.accounts.push(r.profile.account.clone());
        rows.emails.push(r.profile.email.clone());
        rows.statuses.push(r.status().as_str());
        rows.profiles.push(profile.bytes);
        rows.order_keys.push(order_key);
        rows.merged_into.push(r.merged_into.clone());
        rows.merged_from.push(serde_json::to_string(&r.merged_from)?);
        rows.versions.push(r.version as i64);
        rows.changed_at.push(r.changed_at.to_string());
        rows.codecs.push(profile.codec as i16);
    }
    if !moved.is_empty() {
        // A join of a batch (see the store's module doc).
        let prepared = work.plans.prepared();
        sqlx::query(
            "UPDATE customers c SET order_key = m.order_key
             FROM unnest($1::text[], $2::bytea[]) AS m(id, order_key) WHERE c.id = m.id",
        )
        .persistent(prepared)
        .bind(moved)
        .bind(moved_keys)
        .execute(work.conn())
        .await?;
    }
    if rows.ids.is_empty() {
        return Ok(());
    }
    // Each takes the next place in the change feed, in the order written.
    sqlx::query(
        "INSERT INTO customers (id, source, external_id, account, email, status, packed_profile, order_key,
                                merged_into, merged_from, version, changed_at, profile_codec, change_seq)
         SELECT id, source, external_id, account, email, status, packed_profile, order_key,
                merged_into, merged_from, version, changed_at, profile_codec, nextval('customers_change_seq')
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[],
                     $8::bytea[], $9::text[], $10::text[], $11::bigint[], $12::text[], $13::smallint[])
              WITH ORDINALITY AS r(id, source, external_id, account, email, status, packed_profile, order_key,
                                   merged_into, merged_from, version, changed_at, profile_codec, n)
         ORDER BY n
         ON CONFLICT (id) DO UPDATE SET account = excluded.account, email = excluded.email,
             status = excluded.status, profile = NULL, packed_profile = excluded.packed_profile,
             profile_codec = excluded.profile_codec, order_key = excluded.order_key,
             merged_into = excluded.merged_into, merged_from = excluded.merged_from,
             version = excluded.version, changed_at = excluded.changed_at, change_seq = excluded.change_seq",
    )
    .bind(rows.ids)
    .bind(rows.sources)
    .bind(rows.external_ids)
    .bind(rows.accounts)
    .bind(rows.emails)
    .bind(rows.statuses)
    .bind(rows.profiles)
    .bind(rows.order_keys)
    .bind(rows.merged_into)
    .bind(rows.merged_from)
    .bind(rows.versions)
    .bind(rows.changed_at)
    .bind(rows.codecs)
    .execute(work.conn())
    .await?;
    Ok(())
}

/// The changed records' lookup keys (phones, business ids, name words):
/// a record's row in `customer_keys` is written (or, without keys,
/// deleted) only when its keys differ from those of the profile found, as
/// most updates change none. One statement.
async fn write_lookups(work: &mut Work<'_>, records: &[Written]) -> Result<(), StoreError> {
    let (mut ids, mut keys, mut gone) = (Vec::new(), Vec::new(), Vec::new());
    for written in records.iter().filter(|w| w.changed) {
        let before = written.found.as_ref().map(lookup_keys).unwrap_or_default();
        let after = lookup_keys(&written.record.profile);
        if after == before {
            continue;
        }
        if after.is_empty() {
            gone.push(written.record.id.as_str());
        }
        for key in after {
            ids.push(written.record.id.as_str());
            keys.push(key);
        }
    }
    if ids.is_empty() && gone.is_empty() {
        return Ok(());
    }
    // Deleting joins a batch against the table (see the store's module doc).
    sqlx::query(
        "WITH gone AS (DELETE FROM customer_keys WHERE customer_id = ANY($3::text[]))
         INSERT INTO customer_keys (customer_id, keys)
         SELECT customer_id, array_agg(key) FROM unnest($1::text[], $2::text[]) AS k(customer_id, key)
         GROUP BY customer_id
         ON CONFLICT (customer_id) DO UPDATE SET keys = excluded.keys",
    )
    .persistent(work.plans.prepared())
    .bind(ids)
    .bind(keys)
    .bind(gone)
    .execute(work.conn())
    .await?;
    Ok(())
}

async fn write_links(work: &mut Work<'_>, links: BTreeMap<(String, String), OrderKey>) -> Result<(), StoreError> {
    if links.is_empty() {
        return Ok(());
    }
    let (mut survivors, mut absorbed, mut keys) = (Vec::new(), Vec::new(), Vec::new());
    for ((survivor, absorbed_id), order_key) in links {
        survivors.push(survivor);
        absorbed.push(absorbed_id);
        keys.push(pack_order_key(&order_key));
    }
    sqlx::query(
        "INSERT INTO merge_links (survivor, absorbed, order_key)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
         ON CONFLICT (survivor, absorbed) DO UPDATE SET order_key = excluded.order_key",
    )
    .bind(survivors)
    .bind(absorbed)
    .bind(keys)
    .execute(work.conn())
    .await?;
    Ok(())
}

/// History entries, in the order given: each customer's in arrival order.
async fn write_history(work: &mut Work<'_>, history: &[(String, HistoryEntry)]) -> Result<(), StoreError> {
    if history.is_empty() {
        return Ok(());
    }
    let (mut customers, mut events, mut entries, mut codecs) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (customer_id, entry) in history {
        let packed = pack_history(entry)?;
        customers.push(customer_id.as_str());
        events.push(entry.event_id.as_str());
        entries.push(packed.bytes);
        codecs.push(packed.codec as i16);
    }
    sqlx::query(
        "INSERT INTO history (customer_id, event_id, packed, codec)
         SELECT customer_id, event_id, packed, codec
         FROM unnest($1::text[], $2::text[], $3::bytea[], $4::smallint[])
              WITH ORDINALITY AS h(customer_id, event_id, packed, codec, n)
         ORDER BY n",
    )
    .bind(customers)
    .bind(events)
    .bind(entries)
    .bind(codecs)
    .execute(work.conn())
    .await?;
    Ok(())
}
