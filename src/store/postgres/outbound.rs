//! The Postgres store's side of outbound webhooks: the outbox rows and
//! messages written with each change, subscriptions, claiming due messages
//! for one instance among several, and recording attempts. The SQL follows
//! the embedded store's (`sqlite/outbound.rs`, whose comments explain the
//! queue discipline); what differs is how instances keep out of each
//! other's way:
//! - claims lock the rows they take (`FOR UPDATE SKIP LOCKED`), so two
//!   instances never claim one message, and lease them, so a crashed
//!   instance's messages are claimed again once the lease ends;
//! - whatever moves a customer's line of messages (a new change, an
//!   attempt's end, a manual retry, a replay) holds that customer's lock, so that a
//!   message never waits behind one that another instance just finished.

use std::collections::HashMap;

use sqlx::PgConnection;

use super::{FAN_OUT_LOCK, LOCK_SPACE, PUBLISH_LOCK, lock};
use crate::directory::Change;
use crate::model::{Action, UtcMillis};
use crate::outbound::{Backlog, Claim, Due, Message, MessageStatus, Next, Recorded, Subscription};
use crate::store::replay::{ChangeRow, requeued};
use crate::store::rows::{
    BACKLOG, DEAD, DISABLE_SUBSCRIPTION, Envelope, FAN_OUT_BATCH, FAN_OUT_SUBSCRIPTIONS, Fanned, Following, Published,
    RawAttempt, RawMessage, RawPublished, RawSubscription, WITHDRAWN, attempt_outcome, catch_up, decode_subscription,
    following, pack_envelope, page, parse_time, unpack_envelope,
};
use crate::store::{MessageQuery, Page, Retry, StoreError};

/// A leased message: seq, subscription, failures, generation, claim, url,
/// secret, envelope id, body and the change's time.
type LeasedRow = (i64, String, i32, i64, i64, String, String, String, Vec<u8>, i16, String);
/// A [`RawSubscription`] and its `fanned_to`.
type RawSubscription8 = (
    String,
    String,
    String,
    String,
    String,
    bool,
    String,
    String,
    Option<i64>,
);

const SUBSCRIPTION_COLUMNS: &str = "id, url, secret, actions, sources, enabled, created_at, types";

pub(super) async fn subscriptions(conn: &mut PgConnection) -> Result<Vec<Subscription>, StoreError> {
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions ORDER BY created_at, id");
    let rows: Vec<RawSubscription> = sqlx::query_as(&sql).fetch_all(conn).await?;
    rows.into_iter().map(decode_subscription).collect()
}

pub(super) async fn subscription(conn: &mut PgConnection, id: &str) -> Result<Option<Subscription>, StoreError> {
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1");
    let row: Option<RawSubscription> = sqlx::query_as(&sql).bind(id).fetch_optional(conn).await?;
    row.map(decode_subscription).transpose()
}

pub(super) async fn create_subscription(conn: &mut PgConnection, s: &Subscription) -> Result<(), StoreError> {
    if s.types.iter().any(|t| t == "person") {
        // Waits for a step of the resolver that is being written: that
        // step wrote no person's change if it found no subscription asking
        // for persons, and this one gets every step that follows.
        sqlx::query("SELECT 1 FROM person_resolver FOR SHARE")
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query(
        "INSERT INTO subscriptions (id, url, secret, actions, sources, enabled, created_at, types)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&s.id)
    .bind(&s.url)
    .bind(&s.secret)
    .bind(serde_json::to_string(&s.actions)?)
    .bind(serde_json::to_string(&s.sources)?)
    .bind(s.enabled)
    .bind(s.created_at.to_string())
    .bind(serde_json::to_string(&s.types)?)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a subscription, its messages and their attempts, leaving none
/// behind whatever runs meanwhile: a fan-out (its lock), a replay (which
/// holds the subscription's row, `FOR SHARE`, while it queues), an
/// attempt being recorded (which holds its message's row: the messages
/// go first, then the attempts, read after those rows were ours).
pub(super) async fn delete_subscription(conn: &mut PgConnection, id: &str) -> Result<bool, StoreError> {
    lock_schema(conn, FAN_OUT_LOCK).await?;
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM subscriptions WHERE id = $1 FOR UPDATE")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    if found.is_none() {
        return Ok(false);
    }
    let seqs: Vec<i64> = sqlx::query_scalar("DELETE FROM messages WHERE subscription_id = $1 RETURNING seq")
        .bind(id)
        .fetch_all(&mut *conn)
        .await?;
    // Unprepared, as joins of a batch are (see the store's module doc).
    sqlx::query("DELETE FROM attempts WHERE message_seq = ANY($1)")
        .persistent(false)
        .bind(&seqs)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM subscriptions WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(true)
}

pub(super) async fn set_enabled(
    conn: &mut PgConnection,
    id: &str,
    enabled: bool,
) -> Result<Option<Subscription>, StoreError> {
    lock_schema(conn, FAN_OUT_LOCK).await?;
    let sql = if enabled {
        "UPDATE subscriptions SET enabled = TRUE WHERE id = $1".to_owned()
    } else {
        format!("{DISABLE_SUBSCRIPTION} $1")
    };
    sqlx::query(&sql).bind(id).execute(&mut *conn).await?;
    subscription(conn, id).await
}

/// Writes each change's envelope to the outbox, in one statement, in
/// the order given (each customer's changes in version order): all the
/// delivery's transaction writes for subscribers; the dispatcher fans the
/// rows out into messages afterwards ([`fan_out`]). The changes were
/// made `now`. Returns whether it wrote any.
pub(super) async fn queue(conn: &mut PgConnection, changes: &[Change], now: UtcMillis) -> Result<bool, StoreError> {
    if changes.is_empty() {
        return Ok(false);
    }
    let mut rows = OutboxRows::default();
    for change in changes {
        rows.push(
            Envelope::new(change, now),
            &change.customer.id,
            &change.customer.source,
            change.action,
            change.customer.version as i64,
        );
    }
    rows.write(conn).await?;
    Ok(true)
}

/// Outbox rows to insert, a column each, in order.
#[derive(Default)]
pub(super) struct OutboxRows {
    ids: Vec<String>,
    customers: Vec<String>,
    sources: Vec<String>,
    actions: Vec<&'static str>,
    versions: Vec<i64>,
    created: Vec<String>,
    bodies: Vec<Vec<u8>>,
    codecs: Vec<i16>,
}

impl OutboxRows {
    /// Adds `envelope`, of a change to `customer` (a customer's id, or a
    /// person's), its body kept compressed.
    pub(super) fn push(&mut self, envelope: Envelope, customer: &str, source: &str, action: Action, version: i64) {
        let body = pack_envelope(&envelope.body);
        self.ids.push(envelope.id);
        self.customers.push(customer.to_owned());
        self.sources.push(source.to_owned());
        self.actions.push(action.as_str());
        self.versions.push(version);
        self.created.push(envelope.created_at.to_string());
        self.bodies.push(body.bytes);
        self.codecs.push(body.codec as i16);
    }

    /// Inserts the rows in one statement, their `seq`s and places in the
    /// feed (`published`) in the order pushed. The places come from a
    /// sequence under the publish lock, which the transaction holds until
    /// it ends: a later number is taken after this transaction's commit,
    /// so the numbers follow the commits, with gaps where a transaction
    /// rolled back. Whatever else the transaction does after this waits
    /// in every other writer's way: it is written last.
    pub(super) async fn write(self, conn: &mut PgConnection) -> Result<(), StoreError> {
        if self.ids.is_empty() {
            return Ok(());
        }
        lock_schema(conn, PUBLISH_LOCK).await?;
        sqlx::query(
            "INSERT INTO outbox (id, customer_id, source, action, version, created_at, packed, codec, published)
             SELECT id, customer_id, source, action, version, created_at, packed, codec,
                    nextval('outbox_places')
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bytea[],
                         $8::smallint[]) WITH ORDINALITY
                  AS r(id, customer_id, source, action, version, created_at, packed, codec, n)
             ORDER BY n",
        )
        .bind(self.ids)
        .bind(self.customers)
        .bind(self.sources)
        .bind(self.actions)
        .bind(self.versions)
        .bind(self.created)
        .bind(self.bodies)
        .bind(self.codecs)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// Takes the store's lock `key` (of its schema: [`FAN_OUT_LOCK`],
/// [`PUBLISH_LOCK`]) until the transaction ends, waiting for it.
async fn lock_schema(conn: &mut PgConnection, key: i32) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()) # $2)")
        .bind(LOCK_SPACE)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Fans out the outbox rows not fanned out yet; see
/// [`Store::fan_out`](crate::store::Store::fan_out). One instance at a
/// time, under the fan-out's lock (another instance at it: nothing to do
/// here). It takes the rows past its position in the order of their
/// places in the feed (`published`), which follow their commits (see
/// [`OutboxRows::write`]) and so each customer's order; the cursors
/// follow that number. It holds the lines' customers' locks, as whatever
/// moves a line does. Returns whether more rows wait.
pub(super) async fn fan_out(conn: &mut PgConnection) -> Result<bool, StoreError> {
    const COLUMNS: &str = "published, seq, customer_id, source, action, created_at";
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, hashtext(current_schema()) # $2)")
        .bind(LOCK_SPACE)
        .bind(FAN_OUT_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        return Ok(false);
    }
    let position: i64 = sqlx::query_scalar("SELECT position FROM fanout")
        .fetch_one(&mut *conn)
        .await?;
    let rows: Vec<RawPublished> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM outbox WHERE published > $1 ORDER BY published LIMIT $2"
    ))
    .bind(position)
    .bind(FAN_OUT_BATCH as i64)
    .fetch_all(&mut *conn)
    .await?;
    let new = rows.into_iter().map(Published::decode).collect::<Result<Vec<_>, _>>()?;
    let raw: Vec<RawSubscription8> = sqlx::query_as(FAN_OUT_SUBSCRIPTIONS).fetch_all(&mut *conn).await?;
    let subscriptions = raw
        .into_iter()
        .map(
            |(id, url, secret, actions, sources, enabled, created_at, types, fanned_to)| {
                Ok((
                    decode_subscription((id, url, secret, actions, sources, enabled, created_at, types))?,
                    fanned_to,
                ))
            },
        )
        .collect::<Result<Following, StoreError>>()?;
    let mut missed = Vec::new();
    for (_, fanned_to) in &subscriptions {
        if let Some(from) = *fanned_to {
            let rows: Vec<RawPublished> = sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM outbox WHERE published > $1 AND published <= $2 ORDER BY published LIMIT $3"
            ))
            .bind(from)
            .bind(position)
            .bind(FAN_OUT_BATCH as i64)
            .fetch_all(&mut *conn)
            .await?;
            missed.push((
                from,
                rows.into_iter().map(Published::decode).collect::<Result<Vec<_>, _>>()?,
            ));
        }
    }
    let mut missed = missed.into_iter();
    let (mut fanned, cursors) = catch_up(&subscriptions, position, |from, _| {
        let (read_from, rows) = missed
            .next()
            .ok_or_else(|| StoreError::Bug("a catch-up read went missing".into()))?;
        debug_assert_eq!(read_from, from);
        Ok(rows)
    })?;
    fanned.add(&new, following(&subscriptions, position));
    // Only the lines' customers: a row no subscription wants moves no
    // line, and the fan-out writes no outbox row.
    let customers: Vec<String> = fanned.lines.iter().map(|(_, c)| c.clone()).collect();
    if !customers.is_empty() {
        lock(conn, &customers).await?;
    }
    insert_messages(conn, &fanned).await?;
    if let Some(last) = new.last() {
        sqlx::query("UPDATE fanout SET position = $1")
            .bind(last.position)
            .execute(&mut *conn)
            .await?;
    }
    for (id, to) in &cursors {
        sqlx::query("UPDATE subscriptions SET fanned_to = $2 WHERE id = $1")
            .bind(id)
            .bind(to)
            .execute(&mut *conn)
            .await?;
    }
    Ok(new.len() == FAN_OUT_BATCH || cursors.iter().any(|(_, to)| to.is_some()))
}

/// Writes the messages of a fan-out, pending or, for an erased customer,
/// cancelled, and makes the first of each line due.
async fn insert_messages(conn: &mut PgConnection, fanned: &Fanned) -> Result<(), StoreError> {
    if fanned.seqs.is_empty() {
        return Ok(());
    }
    // Unprepared, as joins of a batch are (see the store's module doc).
    sqlx::query(&format!(
        "INSERT INTO messages (id, subscription_id, outbox_seq, customer_id, status)
         SELECT 'msg_' || replace(gen_random_uuid()::text, '-', ''), f.subscription_id, o.seq, o.customer_id,
                CASE WHEN {WITHDRAWN} THEN 'cancelled' ELSE 'pending' END
         FROM unnest($1::text[], $2::bigint[]) WITH ORDINALITY AS f(subscription_id, seq, n)
         JOIN outbox o ON o.seq = f.seq
         ORDER BY f.n
         ON CONFLICT (subscription_id, outbox_seq) DO NOTHING"
    ))
    .persistent(false)
    .bind(&fanned.subscriptions)
    .bind(&fanned.seqs)
    .execute(&mut *conn)
    .await?;
    let (subscriptions, customers) = fanned.lines();
    promote_heads(conn, &subscriptions, &customers, UtcMillis::now()).await
}

/// Makes one outbox row pending for one subscription, due at `due`, with a
/// fresh schedule, whether it was sent before or not.
async fn enqueue(
    conn: &mut PgConnection,
    subscription_id: &str,
    outbox_seq: i64,
    customer_id: &str,
    due: UtcMillis,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO messages (id, subscription_id, outbox_seq, customer_id, status, failures, next_attempt_at)
         VALUES ($1, $2, $3, $4, 'pending', 0, $5)
         ON CONFLICT (subscription_id, outbox_seq)
         DO UPDATE SET status = 'pending', failures = 0, generation = messages.generation + 1,
                       next_attempt_at = excluded.next_attempt_at
         WHERE messages.status <> 'cancelled'",
    )
    .bind(format!("msg_{}", uuid::Uuid::now_v7().simple()))
    .bind(subscription_id)
    .bind(outbox_seq)
    .bind(customer_id)
    .bind(due.as_millisecond())
    .execute(&mut *conn)
    .await?;
    settle_queue(conn, subscription_id, customer_id, due).await
}

/// Keeps one customer's pending messages to one subscription in line: only
/// the first (in outbox order) has a due time.
async fn settle_queue(
    conn: &mut PgConnection,
    subscription_id: &str,
    customer_id: &str,
    now: UtcMillis,
) -> Result<(), StoreError> {
    settle_lines(
        conn,
        &[subscription_id.to_owned()],
        &[customer_id.to_owned()],
        &[now.as_millisecond()],
    )
    .await
}

/// Settles lines (the subscriptions, customers and times at the same
/// places of the three arrays, each line once), in one statement: each
/// line's first pending message (in outbox order) is due, at the line's
/// time if it waited, and the others wait, without a due time.
async fn settle_lines(
    conn: &mut PgConnection,
    subscriptions: &[String],
    customers: &[String],
    at: &[i64],
) -> Result<(), StoreError> {
    if subscriptions.is_empty() {
        return Ok(());
    }
    // Unprepared, as joins of a batch are (see the store's module doc).
    sqlx::query(
        "UPDATE messages m SET next_attempt_at = CASE WHEN m.seq = l.head THEN l.at END
         FROM (SELECT l.subscription_id, l.customer_id, l.at,
                      (SELECT p.seq FROM messages p
                       WHERE p.subscription_id = l.subscription_id AND p.customer_id = l.customer_id
                         AND p.status = 'pending'
                       ORDER BY p.outbox_seq LIMIT 1) AS head
               FROM unnest($1::text[], $2::text[], $3::bigint[]) AS l(subscription_id, customer_id, at)) l
         WHERE m.subscription_id = l.subscription_id AND m.customer_id = l.customer_id AND m.status = 'pending'
           AND CASE WHEN m.seq = l.head THEN m.next_attempt_at IS NULL ELSE m.next_attempt_at IS NOT NULL END",
    )
    .persistent(false)
    .bind(subscriptions)
    .bind(customers)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes the first pending message of each line (the subscriptions and
/// customers at the same places of the two arrays) due, if it waits.
async fn promote_heads(
    conn: &mut PgConnection,
    subscriptions: &[String],
    customers: &[String],
    now: UtcMillis,
) -> Result<(), StoreError> {
    // Unprepared, as joins of a batch are (see the store's module doc).
    sqlx::query(
        "UPDATE messages SET next_attempt_at = $3
         WHERE seq IN (SELECT (SELECT p.seq FROM messages p
                               WHERE p.subscription_id = l.subscription_id AND p.customer_id = l.customer_id
                                 AND p.status = 'pending'
                               ORDER BY p.outbox_seq LIMIT 1)
                       FROM unnest($1::text[], $2::text[]) AS l(subscription_id, customer_id))
           AND next_attempt_at IS NULL",
    )
    .persistent(false)
    .bind(subscriptions)
    .bind(customers)
    .bind(now.as_millisecond())
    .execute(conn)
    .await?;
    Ok(())
}

pub(super) async fn retry_message(conn: &mut PgConnection, id: &str) -> Result<Retry, StoreError> {
    let customer: Option<String> = sqlx::query_scalar("SELECT customer_id FROM messages WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(customer) = customer else {
        return Ok(Retry::NotFound);
    };
    lock(conn, &[customer]).await?;
    let now = UtcMillis::now();
    let changed: Option<(String, String)> = sqlx::query_as(
        "UPDATE messages SET status = 'pending', failures = 0, generation = generation + 1, next_attempt_at = $2
         WHERE id = $1 AND status <> 'cancelled'
         RETURNING subscription_id, customer_id",
    )
    .bind(id)
    .bind(now.as_millisecond())
    .fetch_optional(&mut *conn)
    .await?;
    let Some((subscription_id, customer_id)) = changed else {
        // Cancelled, or deleted with its subscription since it was read.
        let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM messages WHERE id = $1")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
        return Ok(if exists.is_some() {
            Retry::Cancelled
        } else {
            Retry::NotFound
        });
    };
    settle_queue(conn, &subscription_id, &customer_id, now).await?;
    Ok(Retry::Queued)
}

/// The customers with changes since `since` to replay; `None`: no such
/// subscription.
pub(super) async fn replayed_customers(
    conn: &mut PgConnection,
    subscription_id: &str,
    since: UtcMillis,
) -> Result<Option<Vec<String>>, StoreError> {
    if subscription(conn, subscription_id).await?.is_none() {
        return Ok(None);
    }
    let customers = sqlx::query_scalar(
        "SELECT DISTINCT customer_id FROM outbox WHERE created_at >= $1 AND NOT redacted ORDER BY customer_id",
    )
    .bind(since.to_string())
    .fetch_all(conn)
    .await?;
    Ok(Some(customers))
}

/// Queues again these customers' changes since `since` that the
/// subscription wants, holding the customers' locks: an erasure or an
/// attempt's end cannot interleave with it. Changes an erasure redacted
/// meanwhile are left out. Returns how many were queued.
pub(super) async fn replay(
    conn: &mut PgConnection,
    subscription_id: &str,
    since: UtcMillis,
    customers: &[String],
) -> Result<u64, StoreError> {
    // Deleted since the replay began: nothing to queue. Held until the
    // end, so that a deletion waits for the messages queued here.
    let sql = format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 FOR SHARE");
    let row: Option<RawSubscription> = sqlx::query_as(&sql)
        .bind(subscription_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(subscription) = row.map(decode_subscription).transpose()? else {
        return Ok(0);
    };
    lock(conn, customers).await?;
    let now = UtcMillis::now();
    // Unprepared, as joins of a batch are (see the store's module doc).
    let rows: Vec<ChangeRow> = sqlx::query_as(
        "SELECT seq, customer_id, source, action FROM outbox
         WHERE customer_id = ANY($1) AND created_at >= $2 AND NOT redacted ORDER BY seq",
    )
    .persistent(false)
    .bind(customers)
    .bind(since.to_string())
    .fetch_all(&mut *conn)
    .await?;
    let mut queued = 0;
    for change in requeued(&subscription, rows.into_iter().map(Ok::<_, StoreError>)) {
        let change = change?;
        enqueue(conn, subscription_id, change.outbox_seq, &change.customer_id, now).await?;
        queued += 1;
    }
    Ok(queued)
}

/// Claims due messages; `turn` picks the subscription to start with, in
/// rotation. Rows another instance is claiming are skipped, not waited for.
pub(super) async fn claim(conn: &mut PgConnection, claim: &Claim, turn: usize) -> Result<Vec<Due>, StoreError> {
    // Due times and leases on the database's clock, not this instance's:
    // a lease is read by every instance, and their clocks may disagree by
    // more than its margin. The lease keeps the length the caller asked.
    let now: i64 = sqlx::query_scalar("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        .fetch_one(&mut *conn)
        .await?;
    let lease_until = now + (claim.lease_until.as_millisecond() - claim.now.as_millisecond());
    let (listed, shares): (Vec<String>, Vec<i64>) = claim
        .shares
        .iter()
        .map(|(subscription, share)| (subscription.clone(), *share as i64))
        .unzip();
    let rows: Vec<(String, i64)> = sqlx::query_as(CLAIM)
        .bind(now)
        .bind(&listed)
        .bind(&shares)
        .bind(claim.per_subscription as i64)
        .fetch_all(&mut *conn)
        .await?;
    let mut due: Vec<(String, Vec<i64>)> = Vec::new();
    for (subscription, seq) in rows {
        match due.last_mut() {
            Some((last, seqs)) if *last == subscription => seqs.push(seq),
            _ => due.push((subscription, vec![seq])),
        }
    }
    let seqs = claim.pick(due, turn);
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    // Unprepared, as joins of a batch are (see the store's module doc).
    let rows: Vec<LeasedRow> = sqlx::query_as(
        "UPDATE messages m SET next_attempt_at = $2, sending_until = $2, claim = m.claim + 1
         FROM subscriptions s, outbox o
         WHERE m.seq = ANY($1) AND s.id = m.subscription_id AND o.seq = m.outbox_seq
         RETURNING m.seq, m.subscription_id, m.failures, m.generation, m.claim, s.url, s.secret, o.id,
                   COALESCE(o.packed, convert_to(o.body, 'UTF8')), o.codec, o.created_at",
    )
    .persistent(false)
    .bind(&seqs)
    .bind(lease_until)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(
            |(seq, subscription_id, failures, generation, claim, url, secret, event_id, body, codec, created_at)| {
                Ok(Due {
                    seq,
                    subscription_id,
                    url,
                    secret,
                    event_id,
                    body: unpack_envelope(body, codec.into())?,
                    created_at: parse_time(&created_at)?,
                    failures: failures as u32,
                    generation,
                    claim,
                })
            },
        )
        .collect()
}

/// The claim's one statement: the subscriptions with a line whose head has
/// a due time, skipping from one to the next in the heads' index (one
/// probe each), then each enabled one's due heads, oldest first, to its
/// share (`$2`/`$3`, else `$4`), locked. Whatever the statistics say, it
/// reads what it returns and one index entry per subscription with
/// something pending: never the backlog, never the idle subscriptions.
pub const CLAIM: &str = "WITH RECURSIVE due AS (
        (SELECT subscription_id AS id FROM messages
         WHERE status = 'pending' AND next_attempt_at IS NOT NULL ORDER BY subscription_id LIMIT 1)
        UNION ALL
        SELECT (SELECT m.subscription_id FROM messages m
                WHERE m.status = 'pending' AND m.next_attempt_at IS NOT NULL AND m.subscription_id > due.id
                ORDER BY m.subscription_id LIMIT 1)
        FROM due WHERE due.id IS NOT NULL)
    SELECT due.id, h.seq FROM due
    JOIN subscriptions s ON s.id = due.id AND s.enabled
    LEFT JOIN unnest($2::text[], $3::bigint[]) AS k(id, share) ON k.id = due.id
    CROSS JOIN LATERAL (
        SELECT m.seq, m.next_attempt_at FROM messages m
        WHERE m.subscription_id = due.id AND m.status = 'pending' AND m.next_attempt_at <= $1
        ORDER BY m.next_attempt_at, m.seq LIMIT COALESCE(k.share, $4)
        FOR UPDATE OF m SKIP LOCKED) h
    ORDER BY due.id, h.next_attempt_at, h.seq";

/// Records attempts, each with what follows from it unless the message
/// was retried or replayed meanwhile (its generation moved on). An attempt
/// whose claim another instance took since (its lease ran out) is listed
/// and moves nothing: the later claim's send decides. Takes the lines'
/// customers' locks first, all in one statement, in the order every
/// transaction takes them; then records the attempts a round at a time,
/// two set-based statements each ([`record_round`]), whatever their
/// number.
///
/// A round holds at most one attempt of each line (subscription and
/// customer): the first round each line's first attempt, the next its
/// second, and so on (two of a line when a manual retry made an older
/// message pending while its successor was out). Attempts of different
/// lines touch different rows, so a round's order among them is
/// immaterial and each line's attempts keep theirs: the same as recording
/// them one after the other.
pub(super) async fn record_attempts(conn: &mut PgConnection, attempts: &[Recorded]) -> Result<(), StoreError> {
    let seqs: Vec<i64> = attempts.iter().map(|r| r.message.seq).collect();
    // Unprepared, as joins of a batch are (see the store's module doc).
    let lines: HashMap<i64, (String, String)> =
        sqlx::query_as("SELECT seq, subscription_id, customer_id FROM messages WHERE seq = ANY($1)")
            .persistent(false)
            .bind(&seqs)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(seq, subscription_id, customer_id)| (seq, (subscription_id, customer_id)))
            .collect();
    let customers: Vec<String> = lines.values().map(|(_, customer_id)| customer_id.clone()).collect();
    lock(conn, &customers).await?;
    let mut rounds: Vec<Vec<(&Recorded, &(String, String))>> = Vec::new();
    let mut taken: HashMap<&(String, String), usize> = HashMap::new();
    // Deleted with its subscription meanwhile: nothing to record.
    for recorded in attempts {
        if let Some(line) = lines.get(&recorded.message.seq) {
            let round = taken.entry(line).or_default();
            if *round == rounds.len() {
                rounds.push(Vec::new());
            }
            rounds[*round].push((recorded, line));
            *round += 1;
        }
    }
    for round in rounds {
        record_round(conn, &round).await?;
    }
    Ok(())
}

/// Records attempts of different lines, their customers' locks held: the
/// attempts and their messages' outcomes in one statement, then the lines
/// settled in another ([`settle_lines`]).
///
/// The messages are read again under their rows' locks: a deletion of
/// their subscription that committed meanwhile leaves nothing to record,
/// and one that comes later waits for these attempts, then deletes them
/// with their messages. For each message whose claim is still the
/// attempt's, in one `UPDATE`: its lease ends; unless it was retried or
/// replayed since the claim (its generation moved on), or an erasure
/// withdrew it ([`WITHDRAWN`]: then it is cancelled whatever its
/// generation), it takes the attempt's outcome ([`attempt_outcome`]);
/// retried or replayed, it is due at the attempt's time, not when the
/// lease ran out. A subscription whose message died of a `410 Gone` is
/// disabled.
async fn record_round(conn: &mut PgConnection, round: &[(&Recorded, &(String, String))]) -> Result<(), StoreError> {
    let mut rows = AttemptRows::default();
    for (Recorded { message, attempt, next }, _) in round {
        let kept = attempt_outcome(*next, false);
        let withdrawn = attempt_outcome(*next, true);
        rows.seqs.push(message.seq);
        rows.generations.push(message.generation);
        rows.claims.push(message.claim);
        rows.at.push(attempt.at.to_string());
        rows.at_ms.push(attempt.at.as_millisecond());
        rows.status_codes.push(attempt.status_code.map(i32::from));
        rows.errors.push(attempt.error.clone());
        rows.durations.push(attempt.duration_ms as i64);
        rows.kept.0.push(kept.0.as_str());
        rows.kept.1.push(kept.1);
        rows.kept.2.push(kept.2);
        rows.withdrawn.0.push(withdrawn.0.as_str());
        rows.withdrawn.1.push(withdrawn.1);
        rows.withdrawn.2.push(withdrawn.2);
        rows.disable.push(matches!(
            next,
            Next::Dead {
                disable_subscription: true
            }
        ));
    }
    // The attempt's outcome applies: the claim's generation, or cancelled.
    const TAKES: &str = "(m.generation = x.generation OR x.status = 'cancelled') AND m.status = 'pending'";
    // Unprepared, as joins of a batch are (see the store's module doc).
    let listed: Vec<(i64, bool)> = sqlx::query_as(&format!(
        "WITH r AS (
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::int[],
                                  $7::text[], $8::bigint[], $9::text[], $10::bigint[], $11::int[], $12::text[],
                                  $13::bigint[], $14::int[], $15::bool[]) WITH ORDINALITY
                  AS r(seq, generation, claim, at, at_ms, status_code, error, duration_ms, status, next_at, failed,
                       withdrawn_status, withdrawn_next_at, withdrawn_failed, disable, n)),
         held AS (SELECT seq, claim, outbox_seq FROM messages WHERE seq = ANY($1) ORDER BY seq FOR UPDATE),
         listed AS (
             INSERT INTO attempts (message_seq, at, status_code, error, duration_ms)
             SELECT r.seq, r.at, r.status_code, r.error, r.duration_ms FROM r JOIN held h ON h.seq = r.seq
             ORDER BY r.n),
         done AS (
             UPDATE messages m
             SET sending_until = NULL,
                 status = CASE WHEN {TAKES} THEN x.status ELSE m.status END,
                 failures = m.failures + CASE WHEN {TAKES} THEN x.failed ELSE 0 END,
                 next_attempt_at = CASE WHEN {TAKES} THEN x.next_at
                                        WHEN m.generation <> x.generation AND m.status = 'pending'
                                             AND m.next_attempt_at IS NOT NULL THEN x.at_ms
                                        ELSE m.next_attempt_at END
             FROM r JOIN held h ON h.seq = r.seq AND h.claim = r.claim
                  JOIN outbox o ON o.seq = h.outbox_seq,
                  LATERAL (SELECT r.generation, r.at_ms, r.disable,
                                  CASE WHEN {WITHDRAWN} THEN r.withdrawn_status ELSE r.status END AS status,
                                  CASE WHEN {WITHDRAWN} THEN r.withdrawn_next_at ELSE r.next_at END AS next_at,
                                  CASE WHEN {WITHDRAWN} THEN r.withdrawn_failed ELSE r.failed END AS failed) x
             WHERE m.seq = r.seq
             RETURNING m.subscription_id, x.disable),
         disabled AS ({DISABLE_SUBSCRIPTION} ANY (SELECT subscription_id FROM done WHERE disable))
         SELECT h.seq, h.claim = r.claim FROM r JOIN held h ON h.seq = r.seq ORDER BY r.n"
    ))
    .persistent(false)
    .bind(&rows.seqs)
    .bind(&rows.generations)
    .bind(&rows.claims)
    .bind(&rows.at)
    .bind(&rows.at_ms)
    .bind(&rows.status_codes)
    .bind(&rows.errors)
    .bind(&rows.durations)
    .bind(&rows.kept.0)
    .bind(&rows.kept.1)
    .bind(&rows.kept.2)
    .bind(&rows.withdrawn.0)
    .bind(&rows.withdrawn.1)
    .bind(&rows.withdrawn.2)
    .bind(&rows.disable)
    .fetch_all(&mut *conn)
    .await?;
    let live: HashMap<i64, bool> = listed.into_iter().collect();
    let mut settled = (Vec::new(), Vec::new(), Vec::new());
    for ((recorded, (subscription_id, customer_id)), at) in round.iter().zip(rows.at_ms) {
        match live.get(&recorded.message.seq) {
            Some(true) => {
                settled.0.push(subscription_id.clone());
                settled.1.push(customer_id.clone());
                settled.2.push(at);
            }
            Some(false) => tracing::warn!(
                message = recorded.message.seq,
                "an attempt outlived its lease: another claim holds the message"
            ),
            None => {}
        }
    }
    // Delivered, dead or cancelled: the customer's next message, if any,
    // is due. Pending: it stays the line's head unless a manual retry made
    // an older one pending meanwhile.
    settle_lines(conn, &settled.0, &settled.1, &settled.2).await
}

/// A round's attempts, a column each, with each attempt's outcome (status,
/// due time, failure) both as it is and for a message an erasure withdrew.
#[derive(Default)]
struct AttemptRows {
    seqs: Vec<i64>,
    generations: Vec<i64>,
    claims: Vec<i64>,
    at: Vec<String>,
    at_ms: Vec<i64>,
    status_codes: Vec<Option<i32>>,
    errors: Vec<Option<String>>,
    durations: Vec<i64>,
    kept: (Vec<&'static str>, Vec<Option<i64>>, Vec<i32>),
    withdrawn: (Vec<&'static str>, Vec<Option<i64>>, Vec<i32>),
    disable: Vec<bool>,
}

/// A `messages` row joined with its outbox row, as [`RawMessage`] lists it.
type MessageRow = (i64, String, String, String, String, i64, String, String, Option<i64>);
/// An `attempts` row: the message's `seq`, then a [`RawAttempt`].
type AttemptRow = (i64, String, Option<i32>, Option<String>, i64);

pub(super) async fn messages(conn: &mut PgConnection, q: &MessageQuery) -> Result<Page<Message>, StoreError> {
    let sql =
        format!(
        "SELECT m.seq, m.id, o.id, m.subscription_id, m.customer_id, o.version, o.action, m.status, m.next_attempt_at
         FROM messages m JOIN outbox o ON o.seq = m.outbox_seq
         WHERE m.subscription_id = $1 AND ($2::text IS NULL OR m.status = $2) AND m.seq > $3 {}
         ORDER BY m.seq LIMIT $4",
        // Its own statement, so that a customer's messages are read through
        // their index rather than by filtering a subscription's.
        if q.customer_id.is_some() { "AND m.customer_id = $5" } else { "AND $5::text IS NULL" }
    );
    let rows: Vec<MessageRow> = sqlx::query_as(&sql)
        .bind(&q.subscription_id)
        .bind(q.status.map(MessageStatus::as_str))
        .bind(q.after.unwrap_or(0))
        .bind(q.limit as i64 + 1)
        .bind(&q.customer_id)
        .fetch_all(&mut *conn)
        .await?;
    let seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    // Unprepared, as joins of a batch are (see the store's module doc).
    let attempts: Vec<AttemptRow> = sqlx::query_as(
        "SELECT message_seq, at, status_code, error, duration_ms FROM attempts
         WHERE message_seq = ANY($1) ORDER BY seq",
    )
    .persistent(false)
    .bind(&seqs)
    .fetch_all(&mut *conn)
    .await?;
    let mut tried: HashMap<i64, Vec<RawAttempt>> = HashMap::new();
    for (seq, at, status_code, error, duration_ms) in attempts {
        tried
            .entry(seq)
            .or_default()
            .push((at, status_code, error, duration_ms));
    }
    let messages = rows
        .into_iter()
        .map(
            |(seq, id, event_id, subscription_id, customer_id, version, action, status, next_attempt_at)| {
                RawMessage {
                    seq,
                    id,
                    event_id,
                    subscription_id,
                    customer_id,
                    version,
                    action,
                    status,
                    next_attempt_at,
                }
                .into_message(tried.remove(&seq).unwrap_or_default())
            },
        )
        .collect::<Result<Vec<_>, _>>()?;
    Ok(page(messages, q.limit, |m| m.seq))
}

pub(super) async fn backlog(conn: &mut PgConnection) -> Result<Backlog, StoreError> {
    let rows: Vec<(String, i64)> = sqlx::query_as(BACKLOG).fetch_all(&mut *conn).await?;
    let position: i64 = sqlx::query_scalar("SELECT position FROM fanout")
        .fetch_one(&mut *conn)
        .await?;
    // Unprepared, planned with the position: the index on `published`
    // keeps this to the rows past it.
    let unfanned: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published > $1")
        .persistent(false)
        .bind(position)
        .fetch_one(&mut *conn)
        .await?;
    let dead: i64 = sqlx::query_scalar(DEAD).fetch_one(conn).await?;
    Ok(Backlog {
        pending: rows.into_iter().map(|(id, n)| (id, n as u64)).collect(),
        unfanned: unfanned as u64,
        dead: dead as u64,
    })
}
