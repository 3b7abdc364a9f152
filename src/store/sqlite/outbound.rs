//! The embedded store's side of outbound webhooks: the outbox rows and
//! messages written with each change, subscriptions, claiming due
//! messages, and recording attempts. Writes run on the writer thread
//! (`super::Writer`), reads on the read pool.

use rusqlite::{Connection, OptionalExtension, params};

use crate::directory::Change;
use crate::model::UtcMillis;
use crate::outbound::{Attempt, Backlog, Claim, Due, Message, MessageStatus, Next, Subscription};
use crate::store::StoreError;
use crate::store::replay::requeued;
use crate::store::rows::{
    BACKLOG, DEAD, DISABLE_SUBSCRIPTION, Envelope, FAN_OUT_BATCH, FAN_OUT_SUBSCRIPTIONS, Fanned, Following, Published,
    RawMessage, RawSubscription, WITHDRAWN, attempt_outcome, catch_up, decode_subscription, following, pack_envelope,
    page, parse_time, unpack_envelope,
};
use crate::store::{Action, MessageQuery, Page, Retry};

use super::composed::{self, COMPOSED};
use super::ids::{KeptId, PackedId};
use super::{Heads, kept_bytes};

/// A claimed message, and the record its envelope is composed from if it
/// is kept composed ([`composed::Pending::compose`]).
pub(super) type Claimed = (Due, Option<composed::Pending>);

const SUBSCRIPTION_COLUMNS: &str = "id, url, secret, actions, sources, enabled, created_at, types";

pub(super) fn subscriptions(conn: &Connection) -> Result<Vec<Subscription>, StoreError> {
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], |r| RawSubscription::try_from(r))?;
    rows.map(|r| decode_subscription(r?)).collect()
}

pub(super) fn subscription(conn: &Connection, id: &str) -> Result<Option<Subscription>, StoreError> {
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?1");
    let row = conn
        .prepare_cached(&sql)?
        .query_row([id], |r| RawSubscription::try_from(r))
        .optional()?;
    row.map(decode_subscription).transpose()
}

pub(super) fn create_subscription(tx: &Connection, s: &Subscription) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO subscriptions (id, url, secret, actions, sources, enabled, created_at, types)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        s.id,
        s.url,
        s.secret,
        serde_json::to_string(&s.actions)?,
        serde_json::to_string(&s.sources)?,
        s.enabled,
        s.created_at.to_string(),
        serde_json::to_string(&s.types)?,
    ])?;
    Ok(())
}

pub(super) fn delete_subscription(tx: &Connection, id: &str) -> Result<bool, StoreError> {
    tx.prepare_cached(
        "DELETE FROM attempts WHERE message_seq IN (SELECT seq FROM messages WHERE subscription_id = ?1)",
    )?
    .execute([id])?;
    tx.prepare_cached("DELETE FROM messages WHERE subscription_id = ?1")?
        .execute([id])?;
    Ok(tx
        .prepare_cached("DELETE FROM subscriptions WHERE id = ?1")?
        .execute([id])?
        > 0)
}

/// Enables or disables a subscription. Disabled, its cursor stops;
/// enabled again, the fan-out catches it up from there.
pub(super) fn set_enabled(tx: &Connection, id: &str, enabled: bool) -> Result<Option<Subscription>, StoreError> {
    if enabled {
        tx.prepare_cached("UPDATE subscriptions SET enabled = TRUE WHERE id = ?1")?
            .execute([id])?;
    } else {
        tx.prepare_cached(&format!("{DISABLE_SUBSCRIPTION} ?1"))?
            .execute([id])?;
    }
    subscription(tx, id)
}

/// Writes each change's envelope to the outbox, chained to its customer's
/// previous one in `heads`: all the delivery's transaction writes for
/// subscribers. The dispatcher fans the rows out into messages afterwards
/// ([`fan_out`]). The changes were made `now`. A customer's last change
/// here, if it created the customer, is kept [`COMPOSED`]. Returns
/// whether it wrote any.
pub(super) fn queue(
    tx: &Connection,
    changes: &[Change],
    heads: &mut Heads,
    now: UtcMillis,
) -> Result<bool, StoreError> {
    for (n, change) in changes.iter().enumerate() {
        let envelope = Envelope::new(change, now);
        let customer = &change.customer;
        let composed =
            change.action == Action::Created && !changes[n + 1..].iter().any(|later| later.customer.id == customer.id);
        let body = if composed {
            composed::kept()
        } else {
            pack_envelope(&envelope.body)
        };
        let head = heads.of(&customer.id);
        let outbox_seq: i64 = tx
            .prepare_cached(
                "INSERT INTO outbox (id, customer_id, source, action, version, created_at, body, codec, prev)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) RETURNING seq",
            )?
            .query_row(
                params![
                    PackedId(&envelope.id),
                    customer.id,
                    customer.source,
                    change.action.as_str(),
                    customer.version as i64,
                    envelope.created_at.to_string(),
                    body.bytes,
                    body.codec,
                    head.outbox,
                ],
                |r| r.get(0),
            )?;
        head.outbox = Some(outbox_seq);
        head.outbox_composed = composed;
    }
    Ok(!changes.is_empty())
}

/// Fans out the outbox rows after the fan-out's position (here, the
/// outbox's `seq`: one writer commits them in order) to the subscriptions
/// that follow it, and rows a subscription enabled again missed; see
/// [`Store::fan_out`](crate::store::Store::fan_out). Returns whether more
/// rows wait.
pub(super) fn fan_out(tx: &Connection) -> Result<bool, StoreError> {
    const ROWS: &str = "SELECT seq, seq, customer_id, source, action, created_at FROM outbox
                        WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3";
    let position: i64 = tx
        .prepare_cached("SELECT position FROM fanout")?
        .query_row([], |r| r.get(0))?;
    let subscriptions = tx
        .prepare_cached(FAN_OUT_SUBSCRIPTIONS)?
        .query_map([], |r| Ok((RawSubscription::try_from(r)?, r.get::<_, Option<i64>>(8)?)))?
        .map(|row| {
            let (raw, fanned_to) = row?;
            Ok((decode_subscription(raw)?, fanned_to))
        })
        .collect::<Result<Following, StoreError>>()?;
    let mut rows = tx.prepare_cached(ROWS)?;
    let mut read = |from: i64, to: i64| -> Result<Vec<Published>, StoreError> {
        rows.query_map(params![from, to, FAN_OUT_BATCH as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?
        .map(|row| Published::decode(row?))
        .collect()
    };
    let (mut fanned, cursors) = catch_up(&subscriptions, position, &mut read)?;
    let new = read(position, i64::MAX)?;
    fanned.add(&new, following(&subscriptions, position));
    insert_messages(tx, &fanned)?;
    if let Some(last) = new.last() {
        tx.prepare_cached("UPDATE fanout SET position = ?1")?
            .execute([last.position])?;
    }
    let mut cursor = tx.prepare_cached("UPDATE subscriptions SET fanned_to = ?2 WHERE id = ?1")?;
    for (id, to) in &cursors {
        cursor.execute(params![id, to])?;
    }
    Ok(new.len() == FAN_OUT_BATCH || cursors.iter().any(|(_, to)| to.is_some()))
}

/// Writes the messages of a fan-out, pending or, for an erased customer,
/// cancelled, and makes the first of each line due.
fn insert_messages(tx: &Connection, fanned: &Fanned) -> Result<(), StoreError> {
    if fanned.seqs.is_empty() {
        return Ok(());
    }
    tx.prepare_cached(&format!(
        "INSERT INTO messages (id, subscription_id, outbox_seq, customer_id, status)
         SELECT 'msg_' || lower(hex(randomblob(16))), s.value, o.seq, o.customer_id,
                CASE WHEN {WITHDRAWN} THEN 'cancelled' ELSE 'pending' END
         FROM json_each(?1) s JOIN json_each(?2) q ON q.key = s.key JOIN outbox o ON o.seq = q.value
         WHERE TRUE ORDER BY s.key
         ON CONFLICT (subscription_id, outbox_seq) DO NOTHING"
    ))?
    .execute(params![
        serde_json::to_string(&fanned.subscriptions)?,
        serde_json::to_string(&fanned.seqs)?
    ])?;
    let (subscriptions, customers) = fanned.lines();
    promote_heads(tx, &subscriptions, &customers, UtcMillis::now())
}

/// Makes one outbox row pending for one subscription, due at `due`, with
/// a fresh schedule, whether it was sent before or not.
fn enqueue(
    tx: &Connection,
    subscription_id: &str,
    outbox_seq: i64,
    customer_id: &str,
    due: UtcMillis,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO messages (id, subscription_id, outbox_seq, customer_id, status, failures, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, ?5)
         ON CONFLICT (subscription_id, outbox_seq)
         DO UPDATE SET status = 'pending', failures = 0, generation = generation + 1,
                       next_attempt_at = excluded.next_attempt_at
         WHERE messages.status <> 'cancelled'",
    )?
    .execute(params![
        format!("msg_{}", uuid::Uuid::now_v7().simple()),
        subscription_id,
        outbox_seq,
        customer_id,
        due.as_millisecond(),
    ])?;
    settle_queue(tx, subscription_id, customer_id, due)
}

/// Keeps one customer's pending messages to one subscription in line: only
/// the first (in outbox order) has a due time; the others wait, with none,
/// until it is delivered or dead. Claims then never walk a long line of
/// waiting messages behind a subscriber that is down.
fn settle_queue(tx: &Connection, subscription_id: &str, customer_id: &str, now: UtcMillis) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE messages SET next_attempt_at = NULL
         WHERE subscription_id = ?1 AND customer_id = ?2 AND status = 'pending' AND next_attempt_at IS NOT NULL
           AND outbox_seq > (SELECT MIN(outbox_seq) FROM messages
                             WHERE subscription_id = ?1 AND customer_id = ?2 AND status = 'pending')",
    )?
    .execute(params![subscription_id, customer_id])?;
    promote_heads(tx, &[subscription_id.to_owned()], &[customer_id.to_owned()], now)
}

/// Makes the first pending message of each line (the subscriptions and
/// customers at the same places of the two arrays) due, if it waits.
fn promote_heads(
    tx: &Connection,
    subscriptions: &[String],
    customers: &[String],
    now: UtcMillis,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "UPDATE messages SET next_attempt_at = ?3
         WHERE seq IN (SELECT (SELECT p.seq FROM messages p
                               WHERE p.subscription_id = s.value AND p.customer_id = c.value AND p.status = 'pending'
                               ORDER BY p.outbox_seq LIMIT 1)
                       FROM json_each(?1) s JOIN json_each(?2) c ON c.key = s.key)
           AND next_attempt_at IS NULL",
    )?
    .execute(params![
        serde_json::to_string(subscriptions)?,
        serde_json::to_string(customers)?,
        now.as_millisecond()
    ])?;
    Ok(())
}

pub(super) fn retry_message(tx: &Connection, id: &str) -> Result<Retry, StoreError> {
    let now = UtcMillis::now();
    let changed = tx
        .prepare_cached(
            "UPDATE messages SET status = 'pending', failures = 0, generation = generation + 1, next_attempt_at = ?2
             WHERE id = ?1 AND status <> 'cancelled'
             RETURNING subscription_id, customer_id",
        )?
        .query_row(params![id, now.as_millisecond()], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
        })
        .optional()?;
    let Some((subscription_id, customer_id)) = changed else {
        let exists = tx
            .prepare_cached("SELECT 1 FROM messages WHERE id = ?1")?
            .exists([id])?;
        return Ok(if exists { Retry::Cancelled } else { Retry::NotFound });
    };
    settle_queue(tx, &subscription_id, &customer_id, now)?;
    Ok(Retry::Queued)
}

pub(super) fn replay(tx: &Connection, subscription_id: &str, since: UtcMillis) -> Result<Option<u64>, StoreError> {
    let Some(subscription) = subscription(tx, subscription_id)? else {
        return Ok(None);
    };
    let now = UtcMillis::now();
    let mut stmt = tx.prepare_cached(
        "SELECT seq, customer_id, source, action FROM outbox
             WHERE created_at >= ?1 AND CASE WHEN codec = 0 THEN json_extract(body, '$.redacted') END IS NULL
             ORDER BY seq",
    )?;
    let rows = stmt.query_map([since.to_string()], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    let mut queued = 0;
    for change in requeued(&subscription, rows) {
        let change = change?;
        enqueue(tx, subscription_id, change.outbox_seq, &change.customer_id, now)?;
        queued += 1;
    }
    Ok(Some(queued))
}

/// Claims due messages; `turn` picks the subscription to start with, in
/// rotation, so that each gets its share whatever their number.
pub(super) fn claim(tx: &Connection, claim: &Claim, turn: usize) -> Result<Vec<Claimed>, StoreError> {
    // The subscriptions with a line whose head has a due time, skipping
    // from one to the next in the heads' index (one probe each), then each
    // one's heads that are due, oldest first, to its share: the cost
    // follows what is claimed and the subscriptions with something
    // pending, never the backlog or the idle subscriptions.
    let subscriptions: Vec<String> = tx
        .prepare_cached(
            "WITH RECURSIVE due (id) AS (
                 SELECT (SELECT MIN(subscription_id) FROM messages
                         WHERE status = 'pending' AND next_attempt_at IS NOT NULL)
                 UNION ALL
                 SELECT (SELECT MIN(subscription_id) FROM messages
                         WHERE status = 'pending' AND next_attempt_at IS NOT NULL AND subscription_id > due.id)
                 FROM due WHERE due.id IS NOT NULL)
             SELECT due.id FROM due JOIN subscriptions s ON s.id = due.id WHERE s.enabled",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut heads = tx.prepare_cached(
        "SELECT seq FROM messages
         WHERE subscription_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2
         ORDER BY next_attempt_at, seq LIMIT ?3",
    )?;
    let mut due = Vec::new();
    for subscription in subscriptions {
        let share = claim.share(&subscription);
        if share == 0 {
            continue;
        }
        let seqs: Vec<i64> = heads
            .query_map(params![subscription, claim.now.as_millisecond(), share as i64], |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        due.push((subscription, seqs));
    }
    let seqs = claim.pick(due, turn);
    let mut lease = tx.prepare_cached(
        "UPDATE messages SET next_attempt_at = ?2, sending_until = ?2, claim = claim + 1 WHERE seq = ?1
         RETURNING subscription_id, failures, outbox_seq, generation, claim",
    )?;
    let mut details = tx.prepare_cached(
        "SELECT s.url, s.secret, o.id, o.body, o.codec, o.created_at, o.customer_id, o.version
         FROM subscriptions s, outbox o WHERE s.id = ?1 AND o.seq = ?2",
    )?;
    let mut claimed = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let (subscription_id, failures, outbox_seq, generation, token): (String, u32, i64, i64, i64) = lease
            .query_row(params![seq, claim.lease_until.as_millisecond()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
        let (url, secret, event_id, body, codec, created_at, customer_id, version): (
            _,
            _,
            String,
            _,
            _,
            String,
            String,
            _,
        ) = details.query_row(params![subscription_id, outbox_seq], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get::<_, KeptId>(2)?.0,
                kept_bytes(r.get_ref(3)?),
                r.get(4)?,
                r.get(5)?,
                r.get(6)?,
                r.get(7)?,
            ))
        })?;
        // A composed envelope's record is read here and composed by the
        // caller, off the writer's thread.
        let (body, pending) = if codec == COMPOSED {
            let record = composed::Pending::read(tx, &customer_id, version)?;
            (String::new(), Some(record))
        } else {
            (unpack_envelope(body, codec)?, None)
        };
        let due = Due {
            seq,
            subscription_id,
            url,
            secret,
            event_id,
            body,
            created_at: parse_time(&created_at)?,
            failures,
            generation,
            claim: token,
        };
        claimed.push((due, pending));
    }
    Ok(claimed)
}

/// Records an attempt, and what follows from it unless the message was
/// retried or replayed meanwhile (its generation moved on): that request
/// stands. An attempt whose claim another took since (its lease ran out)
/// is listed and moves nothing: the later claim's send decides. Returns
/// whether it disabled a subscription.
pub(super) fn record_attempt(
    tx: &Connection,
    message: &Due,
    attempt: &Attempt,
    next: Next,
) -> Result<bool, StoreError> {
    let Due {
        seq, generation, claim, ..
    } = *message;
    let queue = tx
        .prepare_cached("SELECT subscription_id, customer_id, claim FROM messages WHERE seq = ?1")?
        .query_row([seq], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })
        .optional()?;
    // Deleted with its subscription meanwhile: nothing to record.
    let Some((subscription_id, customer_id, holder)) = queue else {
        return Ok(false);
    };
    tx.prepare_cached(
        "INSERT INTO attempts (message_seq, at, status_code, error, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        seq,
        attempt.at.to_string(),
        attempt.status_code,
        attempt.error,
        attempt.duration_ms as i64
    ])?;
    if holder != claim {
        tracing::warn!(
            message = seq,
            "an attempt outlived its lease: another claim holds the message"
        );
        return Ok(false);
    }
    tx.prepare_cached("UPDATE messages SET sending_until = NULL WHERE seq = ?1")?
        .execute([seq])?;
    let withdrawn = tx
        .prepare_cached(&format!(
            "SELECT {WITHDRAWN} FROM messages m JOIN outbox o ON o.seq = m.outbox_seq WHERE m.seq = ?1"
        ))?
        .query_row([seq], |r| r.get(0))?;
    let (status, next_at, failed) = attempt_outcome(next, withdrawn);
    tx.prepare_cached(
        "UPDATE messages SET status = ?2, next_attempt_at = ?3, failures = failures + ?4
         WHERE seq = ?1 AND (generation = ?5 OR ?2 = 'cancelled') AND status = 'pending'",
    )?
    .execute(params![seq, status.as_str(), next_at, failed, generation])?;
    // Retried or replayed during this attempt: due now, not when the
    // lease this attempt held runs out.
    tx.prepare_cached(
        "UPDATE messages SET next_attempt_at = ?2 WHERE seq = ?1 AND generation <> ?3 AND status = 'pending'
         AND next_attempt_at IS NOT NULL",
    )?
    .execute(params![seq, attempt.at.as_millisecond(), generation])?;
    // Delivered, dead or cancelled: the customer's next message, if any,
    // is due. Pending: it stays the line's head unless a manual retry made
    // an older one pending meanwhile.
    settle_queue(tx, &subscription_id, &customer_id, attempt.at)?;
    if let Next::Dead {
        disable_subscription: true,
    } = next
    {
        tx.prepare_cached(&format!("{DISABLE_SUBSCRIPTION} ?1"))?
            .execute([&subscription_id])?;
        return Ok(true);
    }
    Ok(false)
}

pub(super) fn messages(conn: &Connection, q: &MessageQuery) -> Result<Page<Message>, StoreError> {
    let mut stmt =
        conn.prepare_cached(&format!(
        "SELECT m.seq, m.id, o.id, m.subscription_id, m.customer_id, o.version, o.action, m.status, m.next_attempt_at
         FROM messages m JOIN outbox o ON o.seq = m.outbox_seq
         WHERE m.subscription_id = ?1 AND (?2 IS NULL OR m.status = ?2) AND m.seq > ?3 {}
         ORDER BY m.seq LIMIT ?4",
        // Its own statement, so that a customer's messages are read through
        // their index rather than by filtering a subscription's.
        if q.customer_id.is_some() { "AND m.customer_id = ?5" } else { "AND ?5 IS NULL" }
    ))?;
    let rows = stmt.query_map(
        params![
            q.subscription_id,
            q.status.map(MessageStatus::as_str),
            q.after.unwrap_or(0),
            q.limit as i64 + 1,
            q.customer_id
        ],
        |r| {
            Ok(RawMessage {
                seq: r.get(0)?,
                id: r.get(1)?,
                event_id: r.get::<_, KeptId>(2)?.0,
                subscription_id: r.get(3)?,
                customer_id: r.get(4)?,
                version: r.get(5)?,
                action: r.get(6)?,
                status: r.get(7)?,
                next_attempt_at: r.get(8)?,
            })
        },
    )?;
    let mut attempts = conn.prepare_cached(
        "SELECT at, status_code, error, duration_ms FROM attempts WHERE message_seq = ?1 ORDER BY rowid",
    )?;
    let mut messages = Vec::new();
    for row in rows {
        let row = row?;
        let tried = attempts
            .query_map([row.seq], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        messages.push(row.into_message(tried)?);
    }
    Ok(page(messages, q.limit, |m| m.seq))
}

pub(super) fn backlog(conn: &Connection) -> Result<Backlog, StoreError> {
    let mut stmt = conn.prepare_cached(BACKLOG)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    let pending = rows.collect::<Result<_, _>>()?;
    let unfanned: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM outbox WHERE seq > (SELECT position FROM fanout)")?
        .query_row([], |r| r.get(0))?;
    let dead: i64 = conn.prepare_cached(DEAD)?.query_row([], |r| r.get(0))?;
    Ok(Backlog {
        pending,
        unfanned: unfanned as u64,
        dead: dead as u64,
    })
}
