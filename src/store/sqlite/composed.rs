//! What the embedded store composes from a record instead of keeping it
//! twice. A customer's `created` envelope is its record at that version
//! and no changes (SPEC §6); its `created` history entry is the record's
//! fields as changes from nothing, with the event that made it (its id
//! and when it was received, kept in its row; its order key, the
//! record's). While each is the customer's last, its row keeps no body
//! ([`COMPOSED`]) and is made from the record when it is read, with the serialization that made it, so
//! the bytes sent and signed are the same on every try. Before the record
//! changes or the customer gets another entry, the writer writes both out
//! from the record it holds ([`write_out`]): an older envelope or entry
//! never shows a newer record. An erasure redacts or deletes them like
//! any other. The Postgres store keeps every row whole.

use rusqlite::{Connection, OptionalExtension, params};

use super::ids::KeptId;
use super::load_raw_record;
use crate::directory::{self, HistoryEntry, Record};
use crate::model::UtcMillis;
use crate::outbound::Due;
use crate::store::compress::Packed;
use crate::store::rows::{Envelope, RawRecord, pack_envelope, pack_history, parse_time};
use crate::store::{Action, Outcome, StoreError};

/// The codec of a row kept without its body, composed from its record.
/// Not a compression codec: [`crate::store::compress`] refuses it.
pub(super) const COMPOSED: i64 = -1;

/// What a row kept [`COMPOSED`] keeps of its body: nothing.
pub(super) fn kept() -> Packed {
    Packed {
        bytes: Vec::new(),
        codec: COMPOSED,
    }
}

/// Whether a `customers` row's last outbox row and last history entry
/// are kept [`COMPOSED`], as two columns of a statement on `customers`.
pub(super) fn heads() -> String {
    format!(
        "COALESCE((SELECT codec FROM outbox WHERE seq = last_outbox) = {COMPOSED}, FALSE),
         COALESCE((SELECT codec FROM history WHERE seq = last_history) = {COMPOSED}, FALSE)"
    )
}

/// The `created` envelope `id`, made at `created_at`, of `record`, at the
/// version it was made for: the bytes [`Envelope::new`] made then.
pub(super) fn envelope(id: &str, created_at: UtcMillis, version: i64, record: &Record) -> Result<String, StoreError> {
    if record.version != version as u64 {
        return Err(StoreError::Bug(format!(
            "an envelope composed from its record at version {version} found it at version {}",
            record.version
        )));
    }
    Ok(Envelope::body(
        id,
        created_at,
        Action::Created,
        &record.to_customer(),
        &serde_json::Map::new(),
    ))
}

/// The record a claimed message's envelope is composed from, as read by
/// the writer; composed by whoever awaited the claim, off the writer's
/// thread.
pub(super) struct Pending {
    record: RawRecord,
    version: i64,
}

impl Pending {
    /// Reads the record of `customer_id`, whose envelope at `version` is
    /// kept composed.
    pub(super) fn read(tx: &Connection, customer_id: &str, version: i64) -> Result<Self, StoreError> {
        let record = load_raw_record(tx, customer_id)?
            .ok_or_else(|| StoreError::Bug("an envelope composed from its record found none".into()))?;
        Ok(Pending { record, version })
    }

    /// The envelope of `due`, claimed.
    pub(super) fn compose(self, due: &Due) -> Result<String, StoreError> {
        envelope(
            &due.event_id,
            due.created_at,
            self.version,
            &self.record.into_record()?.0,
        )
    }
}

/// Whether `entry`, a customer's last, is the creation of `record` as
/// [`entry`] composes it: applied, without warnings, by the event whose
/// order key the record holds.
pub(super) fn composes(entry: &HistoryEntry, record: &Record) -> bool {
    entry.action == Action::Created
        && entry.outcome == Outcome::Applied
        && entry.warnings.is_empty()
        && record.order_key.as_ref() == Some(&entry.order_key)
}

/// The history entry of `record`'s creation by event `event_id`, received
/// at `received_at`.
pub(super) fn entry(event_id: String, received_at: UtcMillis, record: &Record) -> Result<HistoryEntry, StoreError> {
    let order_key = record
        .order_key
        .clone()
        .ok_or_else(|| StoreError::Bug("a history entry composed from a record without an order key".into()))?;
    Ok(HistoryEntry {
        event_id,
        received_at,
        order_key,
        action: Action::Created,
        outcome: Outcome::Applied,
        changes: directory::creation_changes(record),
        warnings: Vec::new(),
    })
}

/// The history entry at `seq` if it is kept [`COMPOSED`], from `record`:
/// its event's id and when it was received are in its row.
pub(super) fn kept_entry(conn: &Connection, seq: i64, record: &Record) -> Result<Option<HistoryEntry>, StoreError> {
    let row: Option<(KeptId, Option<i64>)> = conn
        .prepare_cached("SELECT event_id, received_at FROM history WHERE seq = ?1 AND codec = ?2")?
        .query_row(params![seq, COMPOSED], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((event_id, received_at)) = row else {
        return Ok(None);
    };
    let received_at = received_at
        .ok_or_else(|| StoreError::Bug("a history entry composed without when its event was received".into()))?;
    entry(event_id.0, UtcMillis::from_millisecond(received_at), record).map(Some)
}

/// Writes out, from `record`, whichever of outbox row `outbox` and history
/// entry `history` (a customer's last) is kept [`COMPOSED`], before the
/// record changes or the customer gets another entry.
pub(super) fn write_out(
    tx: &Connection,
    outbox: Option<i64>,
    history: Option<i64>,
    record: &Record,
) -> Result<(), StoreError> {
    if let Some(seq) = outbox {
        let row: Option<(KeptId, String, i64)> = tx
            .prepare_cached("SELECT id, created_at, version FROM outbox WHERE seq = ?1 AND codec = ?2")?
            .query_row(params![seq, COMPOSED], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        if let Some((id, created_at, version)) = row {
            let body = pack_envelope(&envelope(&id.0, parse_time(&created_at)?, version, record)?);
            tx.prepare_cached("UPDATE outbox SET body = ?2, codec = ?3 WHERE seq = ?1")?
                .execute(params![seq, body.bytes, body.codec])?;
        }
    }
    if let Some(seq) = history
        && let Some(entry) = kept_entry(tx, seq, record)?
    {
        let entry = pack_history(&entry)?;
        tx.prepare_cached("UPDATE history SET entry = ?2, codec = ?3, received_at = NULL WHERE seq = ?1")?
            .execute(params![seq, entry.bytes, entry.codec])?;
    }
    Ok(())
}
