//! What every backend reads and writes alike: rows as the database hands
//! them over, decoded into the store's types; pages; what a kept event
//! settles into; the outbox envelope of a change; sources, their tokens
//! and stats, API keys and the audit log. The backends
//! ([`super::sqlite`], [`super::postgres`]) differ in SQL and in how they
//! linearize writes, never in what a row means.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::compress;
use super::keys::{AuditEntry, StoredKey};
use super::sources::{Changed, Held, Stats, StoredSource, StoredToken};
use super::{Action, EventRedaction, EventStatus, HistoryEntry, IngestOutcome, Outcome, Page, StoreError, StoredEvent};
use crate::directory::{Change, EventMeta, Loaded, Record};
use crate::model::{Customer, CustomerEvent, OrderKey, Profile, UtcMillis, json};
use crate::outbound::{Attempt, Message, MessageStatus, Next, Subscription};
use crate::persons::subject::fold;
use crate::sources::{Mapped, Mention, Unmappable};

/// What a statement listing events of `status` adds after `status = ?`:
/// the index by status holds only the events not accepted (SQLite
/// migration 22, Postgres 20), and a planner takes a partial index only
/// for a statement that says as much; accepted events, nearly all of them,
/// are read in `seq` order.
pub(super) fn status_indexed(status: EventStatus) -> &'static str {
    match status {
        EventStatus::Accepted => "",
        EventStatus::Quarantined | EventStatus::Ignored => " AND status <> 'accepted'",
    }
}

/// The first `limit` items and, if there were more, the position to
/// continue from. Queries ask for `limit + 1` rows.
pub(super) fn page<T>(mut items: Vec<T>, limit: usize, position: impl Fn(&T) -> i64) -> Page<T> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(position) } else { None };
    Page { items, next }
}

/// Stored profile JSON one page of customers holds at most (past its first
/// customer): a page of records near `max_body_bytes` each would
/// otherwise take several times its answer in memory.
pub(super) const PAGE_BYTES: usize = 8 << 20;

/// A page of customers from their rows in feed order (`limit` + 1 read to
/// know whether more follow), cut short once the rows read hold
/// [`PAGE_BYTES`] of profile: then more follow from the last one.
pub(super) fn customer_page(
    rows: impl IntoIterator<Item = Result<RawRecord, StoreError>>,
    limit: usize,
) -> Result<Page<Customer>, StoreError> {
    let mut records = Vec::new();
    let mut bytes = 0;
    for row in rows {
        let row = row?;
        bytes += compress::unpacked_len(row.profile_codec, &row.profile);
        records.push(row.into_record()?);
        if bytes > PAGE_BYTES && records.len() < limit {
            let next = records.last().map(|(_, seq)| *seq);
            return Ok(Page {
                items: records.into_iter().map(|(r, _)| r.to_customer()).collect(),
                next,
            });
        }
    }
    let page = page(records, limit, |(_, seq)| *seq);
    Ok(Page {
        items: page.items.into_iter().map(|(r, _)| r.to_customer()).collect(),
        next: page.next,
    })
}

/// [`page`] of rows read with their position.
pub(super) fn positioned_page<T>(rows: Vec<(i64, T)>, limit: usize) -> Page<T> {
    let page = page(rows, limit, |(position, _)| *position);
    Page {
        items: page.items.into_iter().map(|(_, item)| item).collect(),
        next: page.next,
    }
}

/// Decodes a page of history entries, read as their position, their
/// bytes as kept and their codec.
pub(super) fn history_page(rows: Vec<(i64, Vec<u8>, i64)>, limit: usize) -> Result<Page<HistoryEntry>, StoreError> {
    let rows = rows
        .into_iter()
        .map(|(seq, entry, codec)| Ok((seq, unpack_history(codec, entry)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok(positioned_page(rows, limit))
}

/// A history entry from its bytes as kept and their codec.
pub(super) fn unpack_history(codec: i64, entry: Vec<u8>) -> Result<HistoryEntry, StoreError> {
    Ok(json::decode(&compress::unpack(codec, entry)?)?)
}

/// When a kept history entry's event was received (compaction's age of
/// the entry), as kept: its event row's `received_at` while the row is
/// kept (`event`), else read from the entry (as kept, with its codec),
/// which is then unpacked without the rest of it.
pub(super) fn entry_received_at(event: Option<String>, entry: Vec<u8>, codec: i64) -> Result<String, StoreError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Received {
        received_at: UtcMillis,
    }
    if let Some(received_at) = event {
        return Ok(received_at);
    }
    let received: Received = json::decode(&compress::unpack(codec, entry)?)?;
    Ok(received.received_at.to_string())
}

/// What a kept event became, for its row in `events`.
pub(super) struct Settled {
    pub status: EventStatus,
    pub reason: Option<String>,
    pub outcome: Option<Outcome>,
    pub customer_id: Option<String>,
    pub answer: IngestOutcome,
}

impl Settled {
    pub fn accepted(meta: EventMeta, customer_id: String, outcome: Outcome) -> Self {
        Settled {
            status: EventStatus::Accepted,
            reason: None,
            outcome: Some(outcome),
            customer_id: Some(customer_id.clone()),
            answer: IngestOutcome::Accepted {
                event_id: meta.event_id,
                customer_id,
                outcome,
            },
        }
    }
}

/// How a kept event settles: at once, or by applying it to the directory.
pub(super) enum Settling<'a> {
    Done(Settled),
    Apply(&'a CustomerEvent, EventMeta),
}

pub(super) fn settling<'a>(
    event_id: &str,
    dedupe_key: &str,
    received_at: UtcMillis,
    mapped: &'a Result<Mapped, Unmappable>,
) -> Settling<'a> {
    let event_id = event_id.to_owned();
    match mapped {
        Err(Unmappable { reason, customer }) => Settling::Done(Settled {
            status: EventStatus::Quarantined,
            reason: Some(reason.clone()),
            outcome: None,
            customer_id: customer.clone(),
            answer: IngestOutcome::Quarantined {
                event_id,
                reason: reason.clone(),
            },
        }),
        Ok(Mapped::Ignored { what }) => Settling::Done(Settled {
            status: EventStatus::Ignored,
            reason: Some(what.clone()),
            outcome: None,
            customer_id: None,
            answer: IngestOutcome::Ignored { event_id },
        }),
        Ok(Mapped::Customer(event)) => Settling::Apply(
            event,
            EventMeta {
                event_id,
                received_at,
                order_key: OrderKey {
                    at: event.order_at,
                    sent_at: event.sent_at,
                    dedupe_key: dedupe_key.to_owned(),
                },
            },
        ),
    }
}

/// Whether a customer event is for an erased customer, `loaded` being the
/// state of the customers it touches.
pub(super) fn is_suppressed_target(loaded: &Loaded, mapped: &Result<Mapped, Unmappable>) -> bool {
    match mapped {
        Ok(Mapped::Customer(event)) => loaded.suppressed.contains(&event.customer.id),
        Err(Unmappable { customer: Some(id), .. }) => loaded.suppressed.contains(id),
        _ => false,
    }
}

/// The customers whose state settling `mapped` needs: those a customer
/// event touches, the one an unmappable body names (to know whether it
/// was erased), none for other events.
pub(super) fn touched_ids(mapped: &Result<Mapped, Unmappable>) -> Vec<String> {
    match mapped {
        Ok(Mapped::Customer(event)) => crate::directory::touched_ids(event),
        Err(Unmappable { customer: Some(id), .. }) => vec![id.clone()],
        _ => Vec::new(),
    }
}

/// The statements that delete the directory's rows, in the tables of
/// `schema` (empty, or a schema's name and a dot), of the customers whose
/// ids `customers` selects: merge links, lookups (kept as `lookups` says),
/// and the records last, as `customers` may select through them. Their
/// history goes first, each backend its way (an index on Postgres, the
/// records' chains on SQLite).
pub(super) fn directory_deletes(schema: &str, customers: &str, lookups: Lookups) -> Vec<String> {
    let links = format!("DELETE FROM {schema}merge_links WHERE survivor IN ({customers}) OR absorbed IN ({customers})");
    let lookups = lookups
        .tables()
        .into_iter()
        .map(|table| format!("DELETE FROM {schema}{table} WHERE customer_id IN ({customers})"));
    let records = format!("DELETE FROM {schema}customers WHERE id IN ({customers})");
    std::iter::once(links).chain(lookups).chain([records]).collect()
}

/// Redacts raw events, followed by a `WHERE`: they stay listed, without
/// their body and headers.
pub(super) const REDACT_EVENTS: &str = "UPDATE events SET body = NULL, headers = '{}', redacted = TRUE";

/// The statements that redact the events not applied to a customer that
/// `mentioning` (event seqs from `event_mentions`) selects, and forget what
/// they named. An accepted event is its customer's, not the one it names.
pub(super) fn mention_erasures(mentioning: &str) -> [String; 2] {
    [
        format!("{REDACT_EVENTS} WHERE seq IN ({mentioning}) AND status <> 'accepted'"),
        format!("DELETE FROM event_mentions WHERE event_seq IN ({mentioning})"),
    ]
}

/// The `event_mentions` keys of what `record` says that a body may name:
/// its platform id, email and E.164 phones.
pub(super) fn mention_keys(record: &Record) -> Vec<String> {
    let mut mentions = vec![Mention::Id(record.external_id.clone())];
    mentions.extend(record.profile.email.clone().map(Mention::Email));
    mentions.extend(
        record
            .profile
            .phones
            .iter()
            .filter_map(|p| p.e164.clone())
            .map(Mention::Phone),
    );
    mentions.iter().map(|m| m.key(&record.source)).collect()
}

/// What deleting an event of `status` (`None`: no such event) does.
pub(super) fn redaction(status: Option<&str>) -> EventRedaction {
    match status {
        None => EventRedaction::NotFound,
        Some("accepted") => EventRedaction::Accepted,
        Some(_) => EventRedaction::Redacted,
    }
}

/// Redacts a customer's envelopes, followed by a `WHERE`: each keeps the
/// shape of every other (`id`, `createdDate`, `type`, `action`, `payload`
/// with `id` and `version`, `changes`), without the personal data, and
/// says `redacted`: a message being sent when it was redacted is sent again
/// so after a crash. `object` is the dialect's JSON object constructor,
/// `yes` its JSON `true`, `id` the envelope id's text as the store keeps it.
pub(super) fn redact_envelopes(object: &str, yes: &str, id: &str) -> String {
    format!(
        "UPDATE outbox SET codec = 0, body = {object}('id', {id}, 'createdDate', created_at, 'type', 'customer', 'action', action,
                                           'payload', {object}('id', customer_id, 'version', version),
                                           'changes', {object}(), 'redacted', {yes})"
    )
}

/// Whether the message of an outbox row `o` is withdrawn by an erasure
/// (while it was being sent, or before it was fanned out): its customer is
/// erased, and it is not the `deleted` message.
pub(super) const WITHDRAWN: &str = "(o.action <> 'deleted'
        AND EXISTS (SELECT 1 FROM suppressions s WHERE s.customer_id = o.customer_id))";

/// Pending messages per subscription, every subscription listed.
pub(super) const BACKLOG: &str = "SELECT s.id, COUNT(m.seq) FROM subscriptions s
     LEFT JOIN messages m ON m.subscription_id = s.id AND m.status = 'pending'
     GROUP BY s.id ORDER BY s.id";

/// Dead messages, counted up to [`Backlog::DEAD_COUNTED`] from their
/// partial index (`messages_dead`), however many there are.
///
/// [`Backlog::DEAD_COUNTED`]: crate::outbound::Backlog::DEAD_COUNTED
pub(super) const DEAD: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM messages WHERE status = 'dead' LIMIT 1001) AS dead";

/// Outbox rows one fan-out takes at most, as new rows and as rows a
/// subscription enabled again catches up on.
pub(super) const FAN_OUT_BATCH: usize = 200;

/// An outbox row as the fan-out reads it; `position` is its place in the
/// fan-out's order.
pub(super) type RawPublished = (i64, i64, String, String, String, String);

/// An outbox row to fan out.
pub(super) struct Published {
    pub position: i64,
    pub seq: i64,
    pub customer_id: String,
    pub source: String,
    pub action: Action,
    pub created_at: UtcMillis,
}

impl Published {
    pub fn decode((position, seq, customer_id, source, action, created_at): RawPublished) -> Result<Self, StoreError> {
        Ok(Published {
            position,
            seq,
            customer_id,
            source,
            action: parse_action(&action)?,
            created_at: parse_time(&created_at)?,
        })
    }
}

/// The messages a fan-out makes, in outbox order: for each row, one per
/// subscription that wants it and existed when the change was made (a
/// later one gets older changes by a replay only). Also the lines they
/// join, each once: (subscription, customer).
#[derive(Default)]
pub(super) struct Fanned {
    pub subscriptions: Vec<String>,
    pub seqs: Vec<i64>,
    pub lines: BTreeSet<(String, String)>,
}

impl Fanned {
    pub fn add<'a>(&mut self, rows: &[Published], subscriptions: impl IntoIterator<Item = &'a Subscription> + Clone) {
        for row in rows {
            for s in subscriptions.clone() {
                if s.wants(row.action, &row.source) && row.created_at >= s.created_at {
                    self.subscriptions.push(s.id.clone());
                    self.seqs.push(row.seq);
                    self.lines.insert((s.id.clone(), row.customer_id.clone()));
                }
            }
        }
    }

    /// The lines as two arrays, subscriptions and customers.
    pub fn lines(&self) -> (Vec<String>, Vec<String>) {
        self.lines.iter().cloned().unzip()
    }
}

/// Where each enabled subscription is: following the fan-out (`None`), or
/// behind it since this position (enabled again, catching up).
pub(super) type Following = Vec<(Subscription, Option<i64>)>;

/// The subscriptions that get a fan-out's new rows (after `position`):
/// those that follow it, and those that caught up with it.
pub(super) fn following(subscriptions: &Following, position: i64) -> impl Iterator<Item = &Subscription> + Clone {
    subscriptions
        .iter()
        .filter(move |(_, fanned_to)| fanned_to.is_none_or(|to| to == position))
        .map(|(s, _)| s)
}

/// The messages that the subscriptions behind the fan-out's `position`
/// missed, read by `read(from, to)` a batch at a time, and where each
/// subscription's cursor goes: `None` once it follows the fan-out.
pub(super) fn catch_up(
    subscriptions: &Following,
    position: i64,
    mut read: impl FnMut(i64, i64) -> Result<Vec<Published>, StoreError>,
) -> Result<(Fanned, Cursors), StoreError> {
    let mut fanned = Fanned::default();
    let mut cursors = Vec::new();
    for (subscription, fanned_to) in subscriptions {
        let Some(from) = *fanned_to else { continue };
        if from == position {
            cursors.push((subscription.id.clone(), None));
            continue;
        }
        let missed = read(from, position)?;
        fanned.add(&missed, [subscription]);
        let to = match missed.last() {
            Some(last) if missed.len() == FAN_OUT_BATCH => last.position,
            _ => position,
        };
        cursors.push((subscription.id.clone(), Some(to)));
    }
    Ok((fanned, cursors))
}

/// Where each subscription's cursor goes after a fan-out: `None` once it
/// follows the fan-out.
pub(super) type Cursors = Vec<(String, Option<i64>)>;

/// The subscriptions a fan-out serves, read with their `fanned_to`.
pub(super) const FAN_OUT_SUBSCRIPTIONS: &str =
    "SELECT id, url, secret, actions, sources, enabled, created_at, types, fanned_to FROM subscriptions WHERE enabled";

/// Disables a subscription, followed by its id's parameter: its cursor
/// stops where the fan-out is.
pub(super) const DISABLE_SUBSCRIPTION: &str = "UPDATE subscriptions
    SET enabled = FALSE, fanned_to = COALESCE(fanned_to, (SELECT position FROM fanout)) WHERE enabled AND id = ";

/// What an attempt makes of its message: its status, when it is due next
/// (Unix ms), and whether it counts as a failure. A message an erasure
/// withdrew while it was being sent ([`WITHDRAWN`]) is not sent again.
pub(super) fn attempt_outcome(next: Next, withdrawn: bool) -> (MessageStatus, Option<i64>, i32) {
    match next {
        Next::Delivered => (MessageStatus::Delivered, None, 0),
        _ if withdrawn => (MessageStatus::Cancelled, None, 1),
        Next::Retry { at } => (MessageStatus::Pending, Some(at.as_millisecond()), 1),
        Next::Dead { .. } => (MessageStatus::Dead, None, 1),
    }
}

/// A change as its outbox row: the envelope every subscriber gets.
pub(super) struct Envelope {
    pub id: String,
    pub created_at: UtcMillis,
    pub body: String,
}

/// An envelope's body as kept (see [`compress`]) and its codec.
pub(super) fn pack_envelope(body: &str) -> compress::Packed {
    compress::pack(compress::Kind::Document, body.as_bytes())
}

/// An envelope's body from its bytes as kept and their codec.
pub(super) fn unpack_envelope(bytes: Vec<u8>, codec: i64) -> Result<String, StoreError> {
    String::from_utf8(compress::unpack(codec, bytes)?)
        .map_err(|_| StoreError::Bug("a kept envelope is not UTF-8".into()))
}

impl Envelope {
    /// The envelope of `change`, made at `created_at`.
    pub fn new(change: &Change, created_at: UtcMillis) -> Self {
        let id = Self::new_id();
        let body = Self::body(&id, created_at, change.action, &change.customer, &change.changes);
        Envelope { id, created_at, body }
    }

    /// A new envelope's id (time-ordered).
    pub fn new_id() -> String {
        format!("evt_{}", uuid::Uuid::now_v7().simple())
    }

    /// The body of envelope `id`, made at `created_at`, of a change with
    /// `action` and `changes` that left `customer`: the same bytes
    /// whenever it is made again from the same parts.
    pub fn body(
        id: &str,
        created_at: UtcMillis,
        action: Action,
        customer: &Customer,
        changes: &serde_json::Map<String, serde_json::Value>,
    ) -> String {
        let payload = match action {
            Action::Deleted => Payload::Erased {
                id: &customer.id,
                source: &customer.source,
                external_id: &customer.external_id,
                version: customer.version,
            },
            _ => Payload::Customer(customer),
        };
        // Serialized straight from borrowed fields: building a JSON value
        // first cost the writer thread a tenth of its time.
        serde_json::to_string(&EnvelopeBody {
            id,
            created_date: created_at,
            kind: "customer",
            action,
            payload,
            changes,
        })
        .expect("an envelope serializes")
    }
}

/// The body of every message Clientele sends (SPEC §6), also its schema
/// under `webhooks` in the OpenAPI document.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnvelopeBody<'a> {
    id: &'a str,
    created_date: UtcMillis,
    #[serde(rename = "type")]
    kind: &'static str,
    action: Action,
    payload: Payload<'a>,
    changes: &'a serde_json::Map<String, serde_json::Value>,
}

/// A change's payload: the whole customer, except for a deletion, which
/// carries who was erased and nothing of what was known about them.
#[derive(Serialize, schemars::JsonSchema)]
#[serde(untagged)]
enum Payload<'a> {
    Customer(&'a Customer),
    #[serde(rename_all = "camelCase")]
    Erased {
        id: &'a str,
        source: &'a str,
        external_id: &'a str,
        version: u64,
    },
}

pub(super) fn parse_time(s: &str) -> Result<UtcMillis, StoreError> {
    s.parse()
        .map_err(|e| StoreError::Bug(format!("stored time {s:?} cannot be read: {e}")))
}

/// A `customers` row as read, before its JSON columns are decoded (which
/// can fail, and must not fail inside a driver's row callback).
pub(super) struct RawRecord {
    pub id: String,
    pub source: String,
    pub external_id: String,
    /// As kept: see `profile_codec`.
    pub profile: Vec<u8>,
    /// As kept: see [`pack_order_key`].
    pub order_key: Option<Vec<u8>>,
    pub merged_into: Option<String>,
    pub merged_from: String,
    pub version: i64,
    pub changed_at: String,
    pub change_seq: i64,
    /// How `profile` is kept (see [`compress`]).
    pub profile_codec: i64,
}

impl RawRecord {
    pub fn into_record(self) -> Result<(Record, i64), StoreError> {
        let record = Record {
            id: self.id,
            source: self.source,
            external_id: self.external_id,
            profile: unpack_profile(self.profile_codec, self.profile)?,
            order_key: self.order_key.as_deref().map(unpack_order_key).transpose()?,
            merged_into: self.merged_into,
            merged_from: json::decode(self.merged_from.as_bytes())?,
            version: self.version as u64,
            changed_at: parse_time(&self.changed_at)?,
        };
        Ok((record, self.change_seq))
    }
}

/// A profile as kept (its bytes and codec).
pub(super) fn unpack_profile(codec: i64, kept: Vec<u8>) -> Result<Profile, StoreError> {
    Ok(json::decode(&compress::unpack(codec, kept)?)?)
}

/// Customers a step of the `customer_names` backfill reads (see the
/// migration that made the table), in id order after the position it
/// keeps in `backfills`.
pub(super) const NAMES_BACKFILL_STEP: i64 = 1000;

/// What a step of the `customer_names` backfill writes: the position to
/// keep (its last customer id), then the rows, as words and customer ids.
pub(super) type NameRows = (String, Vec<String>, Vec<String>);

/// The `customer_names` backfill at a start (see the migration that made
/// the table), which each store drives a step a transaction.
pub(super) struct NamesBackfill {
    started: std::time::Instant,
    customers: usize,
}

impl NamesBackfill {
    pub(super) fn new() -> Self {
        NamesBackfill {
            started: std::time::Instant::now(),
            customers: 0,
        }
    }

    /// What a step of `customers` (id, profile as kept, codec) writes;
    /// none when no customer is left, and the backfill is done.
    pub(super) fn step(&mut self, customers: Vec<(String, Vec<u8>, i64)>) -> Result<Option<NameRows>, StoreError> {
        let Some(last) = customers.last().map(|(id, ..)| id.clone()) else {
            tracing::info!(
                customers = self.customers,
                seconds = self.started.elapsed().as_secs(),
                "found the names of the customers kept before this version"
            );
            return Ok(None);
        };
        if self.customers == 0 {
            tracing::info!("finding the names of the customers kept before this version (once)");
        }
        self.customers += customers.len();
        let (mut words, mut ids) = (Vec::new(), Vec::new());
        for (id, kept, codec) in customers {
            let profile = unpack_profile(codec, kept)?;
            for word in Lookup::Names.keys(&profile) {
                words.push(word);
                ids.push(id.clone());
            }
        }
        Ok(Some((last, words, ids)))
    }
}

/// A `customers` row's columns as [`RawRecord`] reads them, `profile`
/// being the dialect's expression of the profile's bytes as kept.
pub(super) fn record_columns(profile: &str) -> String {
    format!(
        "id, source, external_id, {profile}, order_key, merged_into, merged_from, version, changed_at, change_seq, \
         profile_codec"
    )
}

/// What stands for a missing time in a packed order key: no instant
/// Clientele keeps (the years 1 to 9999) is this far back.
const NO_TIME: i64 = i64::MIN;

/// The bytes of a packed order key's two times.
const ORDER_KEY_TIMES: usize = 16;

/// An order key as both stores keep it (`customers.order_key`,
/// `merge_links.order_key`): its time and its envelope time as 8 bytes
/// each (big-endian milliseconds since 1970, [`NO_TIME`] for none), then
/// the dedupe key as `events.dedupe_key` keeps it ([`pack_dedupe_key`]),
/// which a statement reads from byte 17 on ([`event_compaction`]). The
/// JSON it replaces took about twice the bytes.
pub(super) fn pack_order_key(key: &OrderKey) -> Vec<u8> {
    let mut packed = Vec::with_capacity(ORDER_KEY_TIMES + key.dedupe_key.len());
    for time in [key.at, key.sent_at] {
        packed.extend_from_slice(&time.map_or(NO_TIME, UtcMillis::as_millisecond).to_be_bytes());
    }
    packed.extend_from_slice(&pack_dedupe_key(&key.dedupe_key));
    packed
}

/// What a dedupe key kept as a digest starts with: a byte no UTF-8 text
/// holds, so that no other key kept as its text can read the same.
const DIGEST: u8 = 0xff;

/// How a content hash reads ([`crate::sources::delivery::content_hash`]):
/// this, then 64 lowercase hex digits.
const DIGEST_PREFIX: &str = "sha256:";

/// A dedupe key as both stores keep it (`events.dedupe_key`, and in order
/// keys): a content hash, the key of every body without an event id, as
/// [`DIGEST`] and its 32 bytes (33 bytes, not 71); any other key as its
/// UTF-8 bytes. Both stores compare kept keys byte for byte, in the
/// events' unique index and against the order keys.
pub(super) fn pack_dedupe_key(key: &str) -> Vec<u8> {
    let digest = key
        .strip_prefix(DIGEST_PREFIX)
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .and_then(|hex| hex::decode(hex).ok());
    match digest {
        Some(digest) => [&[DIGEST][..], &digest].concat(),
        None => key.as_bytes().to_vec(),
    }
}

/// The dedupe key that [`pack_dedupe_key`] packed.
pub(super) fn unpack_dedupe_key(packed: &[u8]) -> Result<String, StoreError> {
    match packed.split_first() {
        Some((&DIGEST, digest)) if digest.len() == 32 => Ok(format!("{DIGEST_PREFIX}{}", hex::encode(digest))),
        _ => String::from_utf8(packed.to_vec())
            .map_err(|_| StoreError::Bug(format!("a kept dedupe key cannot be read ({} bytes)", packed.len()))),
    }
}

/// The order key that [`pack_order_key`] packed.
pub(super) fn unpack_order_key(packed: &[u8]) -> Result<OrderKey, StoreError> {
    let corrupt = || StoreError::Bug(format!("a kept order key cannot be read ({} bytes)", packed.len()));
    let (times, key) = packed.split_at_checked(ORDER_KEY_TIMES).ok_or_else(corrupt)?;
    let time = |bytes: &[u8]| {
        let ms = i64::from_be_bytes(bytes.try_into().expect("8 bytes"));
        (ms != NO_TIME).then(|| UtcMillis::from_millisecond(ms))
    };
    Ok(OrderKey {
        at: time(&times[..8]),
        sent_at: time(&times[8..]),
        dedupe_key: unpack_dedupe_key(key)?,
    })
}

/// A raw body as kept (see [`compress`]).
pub(super) fn pack_body(body: &[u8]) -> compress::Packed {
    compress::pack(compress::Kind::Body, body)
}

/// A history entry as kept (see [`compress`]).
pub(super) fn pack_history(entry: &HistoryEntry) -> Result<compress::Packed, StoreError> {
    Ok(compress::pack(compress::Kind::Document, &serde_json::to_vec(entry)?))
}

/// A record's profile as kept (see [`compress`]).
pub(super) fn pack_profile(profile: &Profile) -> Result<compress::Packed, StoreError> {
    Ok(compress::pack(compress::Kind::Document, &serde_json::to_vec(profile)?))
}

pub(super) const EVENT_COLUMNS: &str = "seq, id, source, dedupe_key, received_at, headers, body, status, reason, outcome, customer_id, duplicates, redacted, codec";

pub(super) struct RawEvent {
    pub seq: i64,
    pub id: String,
    pub source: String,
    /// As kept: see [`pack_dedupe_key`].
    pub dedupe_key: Vec<u8>,
    pub received_at: String,
    pub headers: String,
    pub body: Option<Vec<u8>>,
    pub status: String,
    pub reason: Option<String>,
    pub outcome: Option<String>,
    pub customer_id: Option<String>,
    pub duplicates: i64,
    pub redacted: bool,
    /// How `body` is kept (see [`super::compress`]).
    pub codec: i64,
}

impl RawEvent {
    pub fn into_event(self) -> Result<StoredEvent, StoreError> {
        let status = EventStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Bug(format!("unknown event status {:?}", self.status)))?;
        let outcome = self
            .outcome
            .map(|o| serde_json::from_value::<Outcome>(serde_json::Value::String(o)))
            .transpose()?;
        let headers: BTreeMap<String, String> = json::decode(self.headers.as_bytes())?;
        Ok(StoredEvent {
            event_id: self.id,
            source: self.source,
            dedupe_key: unpack_dedupe_key(&self.dedupe_key)?,
            received_at: parse_time(&self.received_at)?,
            status,
            reason: self.reason,
            outcome,
            customer_id: self.customer_id,
            duplicates: self.duplicates as u64,
            redacted: self.redacted,
            headers,
            body: self.body.map(|b| compress::unpack(self.codec, b)).transpose()?,
            seq: self.seq,
        })
    }
}

/// A `subscriptions` row: id, url, secret, actions and sources (JSON),
/// enabled, created_at, types (JSON).
pub(super) type RawSubscription = (String, String, String, String, String, bool, String, String);

pub(super) fn decode_subscription(
    (id, url, secret, actions, sources, enabled, created_at, types): RawSubscription,
) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id,
        url,
        secret,
        actions: json::decode(actions.as_bytes())?,
        sources: json::decode(sources.as_bytes())?,
        types: json::decode(types.as_bytes())?,
        enabled,
        created_at: parse_time(&created_at)?,
    })
}

pub(super) fn parse_action(s: &str) -> Result<Action, StoreError> {
    Action::parse(s).ok_or_else(|| StoreError::Bug(format!("unknown action {s:?}")))
}

/// A `messages` row joined with its outbox row, before decoding.
pub(super) struct RawMessage {
    pub seq: i64,
    pub id: String,
    pub event_id: String,
    pub subscription_id: String,
    pub customer_id: String,
    pub version: i64,
    pub action: String,
    pub status: String,
    pub next_attempt_at: Option<i64>,
}

/// An `attempts` row: at, status code, error, duration in ms.
pub(super) type RawAttempt = (String, Option<i32>, Option<String>, i64);

impl RawMessage {
    pub fn into_message(self, attempts: Vec<RawAttempt>) -> Result<Message, StoreError> {
        let status = MessageStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Bug(format!("unknown message status {:?}", self.status)))?;
        let attempts = attempts
            .into_iter()
            .map(|(at, status_code, error, duration_ms)| {
                Ok(Attempt {
                    at: parse_time(&at)?,
                    status_code: status_code.and_then(|c| u16::try_from(c).ok()),
                    error,
                    duration_ms: duration_ms as u64,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let next_attempt_at = self
            .next_attempt_at
            .filter(|_| status == MessageStatus::Pending)
            .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map(UtcMillis::from_timestamp);
        Ok(Message {
            id: self.id,
            event_id: self.event_id,
            subscription_id: self.subscription_id,
            customer_id: self.customer_id,
            version: self.version as u64,
            action: parse_action(&self.action)?,
            status,
            next_attempt_at,
            attempts,
            seq: self.seq,
        })
    }
}

/// A table that finds customers by a key: an E.164 phone, a business id,
/// a word of their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Lookup {
    Phones,
    Businesses,
    Names,
}

impl Lookup {
    pub(super) const ALL: [Lookup; 3] = [Lookup::Phones, Lookup::Businesses, Lookup::Names];

    /// Its table and the column of its key, where it has one of its own
    /// ([`Lookups::Tables`]); the other column is `customer_id`.
    pub(super) fn table(self) -> (&'static str, &'static str) {
        match self {
            Lookup::Phones => ("customer_phones", "e164"),
            Lookup::Businesses => ("customer_businesses", "business_id"),
            Lookup::Names => ("customer_names", "word"),
        }
    }

    /// `value` as a key of a customer's row of keys ([`Lookups::Keys`]):
    /// after its lookup's prefix, which keeps the lookups apart.
    pub(super) fn key(self, value: &str) -> String {
        let prefix = match self {
            Lookup::Phones => "p:",
            Lookup::Businesses => "b:",
            Lookup::Names => "n:",
        };
        format!("{prefix}{value}")
    }

    fn keys(self, p: &Profile) -> BTreeSet<String> {
        match self {
            Lookup::Phones => p.phones.iter().filter_map(|p| p.e164.clone()).collect(),
            Lookup::Businesses => p.business_ids.iter().cloned().collect(),
            Lookup::Names => name_words([&p.first_name, &p.middle_name, &p.last_name].into_iter().flatten()),
        }
    }
}

/// A subquery of the customers whose row of keys ([`Lookups::Keys`])
/// holds every key of the array that follows it.
pub(super) const HOLDING_KEYS: &str = "SELECT customer_id FROM customer_keys WHERE keys @> ";

/// How a store keeps its lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookups {
    /// A table a lookup, a row a key and customer (SQLite).
    Tables,
    /// A row a customer in `customer_keys`, its keys in an array found by
    /// a GIN index, each after its lookup's prefix ([`Lookup::key`])
    /// (Postgres).
    Keys,
}

impl Lookups {
    /// The tables that hold them.
    pub(super) fn tables(self) -> Vec<&'static str> {
        match self {
            Lookups::Tables => Lookup::ALL.iter().map(|l| l.table().0).collect(),
            Lookups::Keys => vec!["customer_keys"],
        }
    }

    /// The ids of the customers that have `value` among their keys of
    /// `lookup`, as a subquery: `value` is pushed to `args` and bound
    /// where `param` puts it, given its place in `args` (from 1).
    pub(super) fn customers_with<A: From<String>>(
        self,
        lookup: Lookup,
        value: &str,
        args: &mut Vec<A>,
        param: impl Fn(usize) -> String,
    ) -> String {
        match self {
            Lookups::Tables => {
                args.push(A::from(value.to_owned()));
                let (table, key) = lookup.table();
                format!("SELECT customer_id FROM {table} WHERE {key} = {}", param(args.len()))
            }
            Lookups::Keys => {
                args.push(A::from(lookup.key(value)));
                format!("{HOLDING_KEYS}ARRAY[{}::text]", param(args.len()))
            }
        }
    }
}

/// The filter (` AND …`) of the rows whose customers' names hold every
/// word of `name` (see [`name_words`]), found as `lookups` keeps them:
/// `of(customers)` is the condition that a row has one of the customers a
/// subquery lists. Each word is pushed to `args` and bound where `param`
/// puts it, given its place in `args` (from 1). A name without a word
/// matches nothing.
pub(super) fn name_filter<A: From<String>>(
    name: &str,
    lookups: Lookups,
    args: &mut Vec<A>,
    param: impl Fn(usize) -> String,
    of: impl Fn(&str) -> String,
) -> String {
    let words = name_words([&name.to_owned()]);
    if words.is_empty() {
        return " AND FALSE".into();
    }
    let mut sql = String::new();
    for word in words {
        let customers = lookups.customers_with(Lookup::Names, &word, args, &param);
        sql.push_str(&format!(" AND {}", of(&customers)));
    }
    sql
}

/// The words a name search compares: each name's words folded (lower
/// case, accents and punctuation dropped, see [`fold`]). A customer is
/// found by a query whose every word is one of its own.
pub(crate) fn name_words<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    names
        .into_iter()
        .filter_map(|name| fold(name))
        .flat_map(|folded| folded.split(' ').map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

/// A profile's keys in a customer's row of keys ([`Lookups::Keys`]).
pub(super) fn lookup_keys(p: &Profile) -> BTreeSet<String> {
    Lookup::ALL
        .into_iter()
        .flat_map(|lookup| lookup.keys(p).into_iter().map(move |value| lookup.key(&value)))
        .collect()
}

/// The lookup rows a record's write removes (`false`) and adds (`true`),
/// from its `old` profile (none for a new record) to its `new` one: only
/// the keys that changed, as most updates change none, and each row
/// touched is a random page written.
pub(super) fn lookup_edits(old: Option<&Profile>, new: &Profile) -> Vec<(Lookup, bool, String)> {
    let mut edits = Vec::new();
    for lookup in Lookup::ALL {
        let before = old.map(|p| lookup.keys(p)).unwrap_or_default();
        let after = lookup.keys(new);
        edits.extend(before.difference(&after).map(|k| (lookup, false, k.clone())));
        edits.extend(after.difference(&before).map(|k| (lookup, true, k.clone())));
    }
    edits
}

/// The statements of one step of event compaction (see
/// [`crate::retention::Retention::compact_events`]), in order: forget what
/// the bodies about to go name; drop the rows past their age; drop the
/// bodies past theirs of the rows that stay as dedupe records. Each takes
/// the window's bounds (`?1` < seq <= `?2`), then a raw events and a
/// quarantine cutoff (`?3`, `?4`): the rows' (each the body's, or the
/// dedupe cutoff if earlier) for the first two, the bodies' for the last;
/// the first takes the bodies' too (`?5`, `?6`). `key(column)` reads, in
/// the dialect, the dedupe key of a packed order key ([`pack_order_key`]:
/// its bytes from the 17th on, as [`pack_dedupe_key`] keeps them).
pub(super) fn event_compaction(key: impl Fn(&str) -> String) -> [String; 3] {
    // What the directory is a function of: the records' snapshots and the
    // links' claims. A rebuild builds beside the live records and swaps
    // them in at once, so they stay a true guide throughout; floors left
    // by an older release's unfinished rebuild (cleared by the next swap)
    // still hold every accepted event back.
    let unkept = format!(
        "NOT EXISTS (SELECT 1 FROM version_floors)
         AND NOT EXISTS (SELECT 1 FROM customers c WHERE c.id = events.customer_id AND {c} = events.dedupe_key)
         AND NOT EXISTS (SELECT 1 FROM merge_links l WHERE l.survivor = events.customer_id AND {l} = events.dedupe_key)
         AND NOT EXISTS (SELECT 1 FROM merge_links l WHERE l.absorbed = events.customer_id AND {l} = events.dedupe_key)",
        c = key("c.order_key"),
        l = key("l.order_key"),
    );
    let past = |raw: &str, quarantine: &str| {
        format!(
            "seq > ?1 AND seq <= ?2 AND ((status = 'quarantined' AND received_at < {quarantine})
             OR (status <> 'quarantined' AND received_at < {raw} AND {unkept}))"
        )
    };
    let (rows, bodies) = (past("?3", "?4"), past("?5", "?6"));
    [
        format!(
            "DELETE FROM event_mentions WHERE event_seq IN
                 (SELECT seq FROM events WHERE {rows} UNION ALL SELECT seq FROM events WHERE body IS NOT NULL AND {bodies})"
        ),
        format!("DELETE FROM events WHERE {rows}"),
        format!(
            "UPDATE events SET body = NULL, headers = '{{}}', codec = 0 WHERE body IS NOT NULL AND {}",
            past("?3", "?4")
        ),
    ]
}

/// The statements that drop up to `?3` messages of subscription `?1` no
/// longer pending, of outbox rows up to `?2`: their attempts, then them.
pub(super) const MESSAGE_COMPACTION: [&str; 2] = [
    "DELETE FROM attempts WHERE message_seq IN
         (SELECT seq FROM messages WHERE subscription_id = ?1 AND outbox_seq <= ?2 AND status <> 'pending'
          ORDER BY outbox_seq LIMIT ?3)",
    "DELETE FROM messages WHERE seq IN
         (SELECT seq FROM messages WHERE subscription_id = ?1 AND outbox_seq <= ?2 AND status <> 'pending'
          ORDER BY outbox_seq LIMIT ?3)",
];

/// A `sources` row: name, spec (JSON), enabled, created at.
pub(super) type RawSource = (String, String, bool, String);

/// A `source_tokens` row: id, source, digest, secret, created at, expires
/// at, last used at.
pub(super) type RawToken = (
    String,
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

/// The sources changed since a version, from their rows and their tokens'
/// (in the order each was read); `deleted` names those gone since.
pub(super) fn changed_sources(
    version: i64,
    sources: Vec<RawSource>,
    tokens: Vec<RawToken>,
    deleted: Vec<String>,
) -> Result<Changed, StoreError> {
    let opt_time = |s: Option<String>| s.as_deref().map(parse_time).transpose();
    let mut by_source: HashMap<String, Vec<StoredToken>> = HashMap::new();
    for (id, source, digest, secret, created_at, expires_at, last_used_at) in tokens {
        by_source.entry(source.clone()).or_default().push(StoredToken {
            id,
            source,
            digest,
            secret,
            created_at: parse_time(&created_at)?,
            expires_at: opt_time(expires_at)?,
            last_used_at: opt_time(last_used_at)?,
        });
    }
    let sources = sources
        .into_iter()
        .map(|(name, spec, enabled, created_at)| {
            Ok(StoredSource {
                tokens: by_source.remove(&name).unwrap_or_default(),
                spec: serde_json::from_str(&spec)?,
                enabled,
                created_at: parse_time(&created_at)?,
                name,
            })
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Changed {
        version,
        sources,
        deleted,
    })
}

/// A `held` row: seq, source, dedupe key, received at, headers, body.
pub(super) type RawHeld = (i64, String, String, String, String, Vec<u8>);

pub(super) fn decode_held((seq, source, dedupe_key, received_at, headers, body): RawHeld) -> Result<Held, StoreError> {
    Ok(Held {
        seq,
        source,
        dedupe_key,
        received_at: parse_time(&received_at)?,
        headers,
        body,
    })
}

/// Each source's stats from its summed `source_stats` rows (source,
/// outcome, count) and its `source_last_delivery` row (source, at).
pub(super) fn source_stats(
    counts: Vec<(String, String, i64)>,
    last: Vec<(String, String)>,
) -> Result<HashMap<String, Stats>, StoreError> {
    let mut stats: HashMap<String, Stats> = HashMap::new();
    for (source, outcome, n) in counts {
        stats.entry(source).or_default().counts.push((outcome, n as u64));
    }
    for (source, at) in last {
        stats.entry(source).or_default().last_delivery_at = Some(parse_time(&at)?);
    }
    Ok(stats)
}

pub(super) const KEY_COLUMNS: &str = "id, name, scopes, created_at, digest";

/// An `api_keys` row, in [`KEY_COLUMNS`]' order.
pub(super) type RawKey = (String, String, String, String, String);

pub(super) fn decode_key((id, name, scopes, created_at, digest): RawKey) -> Result<StoredKey, StoreError> {
    Ok(StoredKey {
        id,
        name,
        scopes: serde_json::from_str(&scopes)?,
        created_at: parse_time(&created_at)?,
        digest,
    })
}

/// An `audit` row: seq, at, key id, action, target.
pub(super) type RawAudit = (i64, String, Option<String>, String, String);

/// A page of the audit log, newest first, from `limit` + 1 rows.
pub(super) fn audit_page(rows: Vec<RawAudit>, limit: usize) -> Result<Page<AuditEntry>, StoreError> {
    let entries = rows
        .into_iter()
        .map(|(seq, at, key_id, action, target)| {
            Ok((
                seq,
                AuditEntry {
                    at: parse_time(&at)?,
                    key_id,
                    action,
                    target,
                },
            ))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let page = page(entries, limit, |(seq, _)| *seq);
    Ok(Page {
        items: page.items.into_iter().map(|(_, e)| e).collect(),
        next: page.next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_content_hash_is_kept_as_its_digest_and_every_key_reads_back_as_it_came() {
        let hash = crate::sources::delivery::content_hash(&serde_json::json!({"id": 1}));
        let packed = pack_dedupe_key(&hash);
        assert_eq!((packed.len(), packed[0]), (33, DIGEST));
        // Keys that only look like hashes, and keys of any text, stay text.
        let upper = format!("sha256:{}", hash["sha256:".len()..].to_uppercase());
        for key in [hash.as_str(), &upper, &hash[..70], "evt-0-161194002", "évènement", ""] {
            let packed = pack_dedupe_key(key);
            assert_eq!(packed == key.as_bytes(), key != hash, "{key}");
            assert_eq!(unpack_dedupe_key(&packed).unwrap(), key);
        }
        assert!(unpack_dedupe_key(&[DIGEST, 1, 2]).is_err());
    }

    #[test]
    fn an_entry_s_age_is_its_event_s_while_the_event_is_kept_else_its_own() {
        let received_at = UtcMillis::from_millisecond(1_700_000_000_000);
        let entry = HistoryEntry {
            event_id: "evt_1".into(),
            received_at,
            order_key: OrderKey {
                at: None,
                sent_at: None,
                dedupe_key: "k".into(),
            },
            action: Action::Updated,
            outcome: Outcome::Applied,
            changes: Default::default(),
            warnings: Vec::new(),
        };
        let packed = pack_history(&entry).expect("packed");
        let own = entry_received_at(None, packed.bytes.clone(), packed.codec).expect("read from the entry");
        assert_eq!(own, received_at.to_string());
        let kept = entry_received_at(Some("the event's".into()), packed.bytes, packed.codec).expect("the event's");
        assert_eq!(kept, "the event's");
    }

    #[test]
    fn a_name_is_searched_by_its_folded_words_and_only_changed_words_are_written() {
        let names = [
            "Élodie Anne".to_owned(),
            "Lovelace-Byron".to_owned(),
            "O'Brien".to_owned(),
        ];
        assert_eq!(
            name_words(&names).into_iter().collect::<Vec<_>>(),
            ["anne", "brien", "byron", "elodie", "lovelace", "o"]
        );
        assert!(name_words(&["--".to_owned()]).is_empty());
        let person = |first: &str, last: &str| Profile {
            first_name: Some(first.into()),
            last_name: Some(last.into()),
            ..Profile::default()
        };
        let names = |old: Option<&Profile>, new: &Profile| -> Vec<(bool, String)> {
            lookup_edits(old, new)
                .into_iter()
                .filter(|(lookup, ..)| *lookup == Lookup::Names)
                .map(|(_, add, word)| (add, word))
                .collect()
        };
        let ada = person("Ada", "Lovelace");
        assert_eq!(names(None, &ada), [(true, "ada".into()), (true, "lovelace".into())]);
        assert_eq!(
            names(Some(&ada), &person("ADA", "King")),
            [(false, "lovelace".into()), (true, "king".into())]
        );
        assert_eq!(
            names(Some(&ada), &Profile::default()),
            [(false, "ada".into()), (false, "lovelace".into())]
        );
    }

    #[test]
    fn a_message_withdrawn_by_an_erasure_is_never_sent_again() {
        let at = UtcMillis::now();
        let retry = Next::Retry { at };
        let dead = Next::Dead {
            disable_subscription: true,
        };
        assert_eq!(
            attempt_outcome(retry, false),
            (MessageStatus::Pending, Some(at.as_millisecond()), 1)
        );
        assert_eq!(attempt_outcome(dead, false), (MessageStatus::Dead, None, 1));
        for next in [retry, dead] {
            assert_eq!(attempt_outcome(next, true), (MessageStatus::Cancelled, None, 1));
        }
        // Sent before the erasure committed: delivered is what happened.
        assert_eq!(
            attempt_outcome(Next::Delivered, true),
            (MessageStatus::Delivered, None, 0)
        );
    }
}
