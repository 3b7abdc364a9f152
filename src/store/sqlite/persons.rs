//! The embedded store's [`Persons`]: the statements of
//! [`crate::store::persons::sql`], the feed read from the outbox by `seq`
//! (the single writer commits in that order).

use std::sync::{Arc, LazyLock};

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};

use super::SqliteStore;
use super::ids::{KeptId, PERSON, PackedId, REVIEW, id_text};
use crate::model::{Customer, UtcMillis};
use crate::outbound::PERSON_SOURCE;
use crate::store::persons::{
    Arg, Decided, Feed, FeedChange, Found, NewDecision, PersonQuery, Persons, RawPerson, RawReview, Resolution,
    Resolved, Review, ReviewStatus, StoredDecision, StoredPerson, decision_str, decode_decision, decode_person,
    decode_review, pack_evidence, pack_person, person_message, persons_sql, review_id, reviews_touching, sql,
    withdrawn,
};
use crate::store::rows::{Lookups, RawRecord, pack_envelope, page, parse_time, record_columns};
use crate::store::{BoxFuture, Page, StoreError};

/// `statement` with SQLite's `?n` for Postgres's `$n`.
fn numbered(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len());
    let mut chars = statement.chars().peekable();
    while let Some(c) = chars.next() {
        let parameter = c == '$' && chars.peek().is_some_and(char::is_ascii_digit);
        out.push(if parameter { '?' } else { c });
    }
    out
}

/// A person's document as kept, and its codec (see `sql::person_columns`):
/// JSON text before version 20, bytes since.
const DOC: &str = "CAST(doc AS BLOB), codec";

/// A review's evidence as kept and its codec (see `sql::review`): JSON
/// text before version 24, bytes since.
const EVIDENCE: &str = "CAST(evidence AS BLOB), codec";

/// The resolver's writes a row each (Postgres writes a step's rows in a
/// statement each, `store::postgres::persons`).
const UPSERT_PERSON: &str = "INSERT INTO persons (id, doc, codec, created_at, changed_at, seq)
     VALUES (?1, ?2, ?3, ?4, ?4, ?5)
     ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, codec = excluded.codec, changed_at = excluded.changed_at,
         seq = excluded.seq";
const UPSERT_MEMBER: &str = "INSERT INTO person_members (customer_id, person_id, version) VALUES (?1, ?2, ?3)
     ON CONFLICT (customer_id) DO UPDATE SET person_id = excluded.person_id, version = excluded.version";
const DELETE_REVIEW: &str = "DELETE FROM person_reviews WHERE id = ?1 AND status = 'open'";
/// Opens a review, or brings an open one's score and evidence up to date.
const UPSERT_REVIEW: &str = "INSERT INTO person_reviews (id, a, b, score, evidence, codec, status, created_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'open', ?7)
     ON CONFLICT (id) DO UPDATE SET score = excluded.score, evidence = excluded.evidence, codec = excluded.codec
     WHERE person_reviews.status = 'open'";
const DEQUEUE: &str = "DELETE FROM person_queue WHERE seq = ?1";

/// The text form of a person's id in `column` ([`id_text`]).
fn person_id(column: &str) -> String {
    id_text(column, PERSON)
}

/// The shared statements that take this dialect's expressions, each made
/// once: persons' and reviews' ids as text, evidence as kept.
static PERSON_BY_ID: LazyLock<String> = LazyLock::new(|| numbered(&sql::person(&person_id("id"), DOC)));
static PERSONS: LazyLock<String> = LazyLock::new(|| sql::persons(&person_id("id"), DOC));
static MEMBER: LazyLock<String> = LazyLock::new(|| sql::member(&person_id("person_id")));
static MEMBERS: LazyLock<String> = LazyLock::new(|| sql::members(&person_id("person_id")));
static ALIAS: LazyLock<String> = LazyLock::new(|| sql::alias(&person_id("person_id")));
static REVIEW_BY_ID: LazyLock<String> = LazyLock::new(|| numbered(&sql::review(&id_text("id", REVIEW), EVIDENCE)));
static REVIEWS: LazyLock<String> = LazyLock::new(|| numbered(&sql::reviews(&id_text("id", REVIEW), EVIDENCE)));

fn person_by_id(conn: &Connection, id: &str) -> Result<Option<StoredPerson>, StoreError> {
    conn.prepare_cached(&PERSON_BY_ID)?
        .query_row([PackedId(id)], |r| RawPerson::try_from(r))
        .optional()?
        .map(decode_person)
        .transpose()
}

fn one<T: rusqlite::types::FromSql>(
    conn: &Connection,
    statement: &str,
    id: impl rusqlite::ToSql,
) -> Result<Option<T>, StoreError> {
    Ok(conn
        .prepare_cached(&numbered(statement))?
        .query_row([id], |r| r.get::<_, T>(0))
        .optional()?)
}

/// The customer's person, following a merged record to its survivor.
fn person_of(conn: &Connection, customer_id: &str) -> Result<Option<StoredPerson>, StoreError> {
    let mut id = customer_id.to_owned();
    for _ in 0..16 {
        if let Some(Some(person)) = one::<Option<String>>(conn, &MEMBER, &id)? {
            return person_by_id(conn, &person);
        }
        match one::<Option<String>>(conn, sql::MERGED_INTO, &id)? {
            Some(Some(survivor)) => id = survivor,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

fn all<T>(
    conn: &Connection,
    statement: &str,
    read: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, StoreError> {
    Ok(conn
        .prepare_cached(&numbered(statement))?
        .query_map([], read)?
        .collect::<Result<_, _>>()?)
}

fn decide(tx: &Connection, d: &NewDecision) -> Result<Decided, StoreError> {
    let mut customers = d.customers.clone();
    if let Some(review) = &d.review {
        let Some(found) = tx
            .prepare_cached(&REVIEW_BY_ID)?
            .query_row([PackedId(review)], |r| RawReview::try_from(r))
            .optional()?
            .map(decode_review)
            .transpose()?
        else {
            return Ok(Decided::NoReview);
        };
        if found.status == ReviewStatus::Decided {
            return Ok(Decided::Already(found));
        }
        customers = found.customers;
    }
    let before: Option<String> = tx
        .prepare_cached(&numbered(sql::DECISION))?
        .query_row(params![customers[0], customers[1]], |r| r.get(0))
        .optional()?;
    if before.as_deref() == Some("separate") && d.decision == crate::persons::Decision::Link {
        return Ok(Decided::Separated);
    }
    let at = d.at.to_string();
    let decision = decision_str(d.decision);
    tx.prepare_cached(&numbered(sql::KEEP_DECISION))?
        .execute(params![customers[0], customers[1], decision, at])?;
    tx.prepare_cached(&numbered(sql::DECIDE_REVIEW))?
        .execute(params![customers[0], customers[1], decision, at])?;
    for c in &customers {
        tx.prepare_cached(&numbered(sql::QUEUE))?.execute(params![c, at])?;
    }
    Ok(Decided::Kept(StoredDecision {
        customers,
        decision: d.decision,
        decided_at: d.at,
    }))
}

fn commit(tx: &Connection, holder: &str, step: &Resolution) -> Result<bool, StoreError> {
    let (position, held, mut seq): (i64, Option<String>, i64) = tx
        .prepare_cached(&numbered(sql::RESOLVER))?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if position != step.from || held.as_deref() != Some(holder) {
        return Ok(false);
    }
    let at = step.at.to_string();
    let asked: bool = tx.prepare_cached(sql::PERSONS_ASKED)?.query_row([], |r| r.get(0))?;
    let mut messages = Vec::new();
    for p in &step.deleted {
        tx.prepare_cached(&numbered(sql::DELETE_PERSON))?
            .execute([PackedId(p)])?;
        tx.prepare_cached(&numbered(sql::DELETE_ALIASES_OF))?
            .execute([PackedId(p)])?;
        seq += 1;
        if asked {
            messages.push((p, seq, person_message(p, None, step.absorbed_by(p), seq, step.at)));
        }
    }
    for u in &step.upserts {
        seq += 1;
        let doc = pack_person(&u.doc)?;
        tx.prepare_cached(UPSERT_PERSON)?
            .execute(params![PackedId(&u.id), doc.bytes, doc.codec, at, seq])?;
        if asked {
            messages.push((&u.id, seq, person_message(&u.id, Some(u), None, seq, step.at)));
        }
    }
    for (person, version, m) in messages {
        let body = pack_envelope(&m.body);
        tx.prepare_cached(
            "INSERT INTO outbox (id, customer_id, source, action, version, created_at, body, codec)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            PackedId(&m.id),
            person,
            PERSON_SOURCE,
            m.action.as_str(),
            version,
            at,
            body.bytes,
            body.codec
        ])?;
    }
    for (alias, survivor) in &step.aliases {
        tx.prepare_cached(&numbered(sql::ALIAS_TO))?
            .execute(params![PackedId(alias), PackedId(survivor)])?;
        tx.prepare_cached(&numbered(sql::MOVE_ALIASES))?
            .execute(params![PackedId(alias), PackedId(survivor)])?;
    }
    for (customer, person, version) in &step.members {
        tx.prepare_cached(UPSERT_MEMBER)?.execute(params![
            customer,
            person.as_deref().map(PackedId),
            *version as i64
        ])?;
    }
    for c in &step.gone {
        for statement in [sql::FORGET_MEMBER, sql::FORGET_REVIEWS, sql::FORGET_DECISIONS] {
            tx.prepare_cached(&numbered(statement))?.execute([c])?;
        }
    }
    let customers: Vec<&String> = step.reviews_of.iter().chain(&step.reviews_among).collect();
    let touching = tx
        .prepare_cached(&reviews_touching(|column| {
            format!("{column} IN (SELECT value FROM json_each(?1))")
        }))?
        .query_map([serde_json::to_string(&customers)?], |r| {
            Ok((r.get::<_, KeptId>(0)?.0, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    for id in withdrawn(step, touching) {
        tx.prepare_cached(DELETE_REVIEW)?.execute([PackedId(id)])?;
    }
    for r in &step.reviews {
        let evidence = pack_evidence(&r.evidence)?;
        tx.prepare_cached(UPSERT_REVIEW)?.execute(params![
            PackedId(review_id(&r.customers)),
            r.customers[0],
            r.customers[1],
            r.score,
            evidence.bytes,
            evidence.codec,
            at
        ])?;
    }
    for queued in &step.applied {
        tx.prepare_cached(DEQUEUE)?.execute([queued])?;
    }
    let lease = UtcMillis::now()
        .saturating_add(std::time::Duration::from_secs(5))
        .as_millisecond();
    tx.prepare_cached(&numbered(sql::ADVANCE))?
        .execute(params![step.to, seq, lease])?;
    Ok(true)
}

fn bind(args: &[Arg]) -> Vec<rusqlite::types::Value> {
    args.iter()
        .map(|a| match a {
            Arg::Int(n) => rusqlite::types::Value::Integer(*n),
            Arg::Text(s) => rusqlite::types::Value::Text(s.clone()),
        })
        .collect()
}

impl Persons for SqliteStore {
    fn person(&self, id: String) -> BoxFuture<'_, Result<Option<Found>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            if let Some(p) = person_by_id(conn, &id)? {
                return Ok(Some((p, None)));
            }
            let Some(survivor) = one::<String>(conn, &ALIAS, PackedId(&id))? else {
                return Ok(None);
            };
            Ok(person_by_id(conn, &survivor)?.map(|p| (p, Some(id.clone()))))
        }))
    }

    fn person_of(&self, customer_id: String) -> BoxFuture<'_, Result<Option<StoredPerson>, StoreError>> {
        Box::pin(self.readers.run(move |conn| person_of(conn, &customer_id)))
    }

    fn persons(&self, query: PersonQuery) -> BoxFuture<'_, Result<Page<StoredPerson>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let (statement, args) = persons_sql(&query, &person_id("id"), DOC, Lookups::Tables);
            let rows: Vec<RawPerson> = conn
                .prepare(&numbered(&statement))?
                .query_map(params_from_iter(bind(&args)), |r| RawPerson::try_from(r))?
                .collect::<Result<_, _>>()?;
            let persons = rows.into_iter().map(decode_person).collect::<Result<Vec<_>, _>>()?;
            Ok(page(persons, query.limit, |p| p.seq))
        }))
    }

    fn reviews(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
        after: Option<i64>,
    ) -> BoxFuture<'_, Result<Page<Review>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let status = status.map_or("", ReviewStatus::as_str);
            let rows: Vec<RawReview> = conn
                .prepare_cached(&REVIEWS)?
                .query_map(params![after.unwrap_or(0), status, limit as i64 + 1], |r| {
                    RawReview::try_from(r)
                })?
                .collect::<Result<_, _>>()?;
            let reviews = rows.into_iter().map(decode_review).collect::<Result<Vec<_>, _>>()?;
            Ok(page(reviews, limit, |r| r.seq))
        }))
    }

    fn decide(&self, decision: NewDecision) -> BoxFuture<'_, Result<Decided, StoreError>> {
        Box::pin(self.write(move |tx| decide(tx, &decision)))
    }

    fn withdraw(&self, customers: [String; 2], at: UtcMillis) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(self.write(move |tx| {
            if tx
                .prepare_cached(&numbered(sql::WITHDRAW))?
                .execute(params![customers[0], customers[1]])?
                == 0
            {
                return Ok(false);
            }
            for c in &customers {
                tx.prepare_cached(&numbered(sql::QUEUE))?
                    .execute(params![c, at.to_string()])?;
            }
            Ok(true)
        }))
    }

    fn records(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Customer>, StoreError>> {
        Box::pin(self.readers.run(move |conn| {
            let statement = format!(
                "SELECT {} FROM customers WHERE id IN (SELECT value FROM json_each($1))",
                record_columns("profile")
            );
            let rows: Vec<RawRecord> = conn
                .prepare_cached(&numbered(&statement))?
                .query_map([serde_json::to_string(&ids)?], super::read_record)?
                .collect::<Result<_, _>>()?;
            rows.into_iter().map(|r| Ok(r.into_record()?.0.to_customer())).collect()
        }))
    }

    fn lease_resolver(&self, holder: String, until: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(self.write(move |tx| {
            let now = UtcMillis::now().as_millisecond();
            if tx
                .prepare_cached(&numbered(sql::LEASE))?
                .execute(params![holder, until, now])?
                == 0
            {
                return Ok(None);
            }
            Ok(Some(
                tx.prepare_cached(&numbered(sql::POSITION))?
                    .query_row([], |r| r.get(0))?,
            ))
        }))
    }

    fn take_resolver(&self, holder: String, until: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(self.write(move |tx| {
            tx.prepare_cached(&numbered(sql::TAKE))?
                .execute(params![holder, until])?;
            Ok(())
        }))
    }

    fn resolved(&self) -> BoxFuture<'_, Result<Resolved, StoreError>> {
        Box::pin(self.readers.run(|tx| {
            let position = tx
                .prepare_cached(&numbered(sql::POSITION))?
                .query_row([], |r| r.get(0))?;
            let members = all(tx, &MEMBERS, |r| Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64)))?;
            let persons = all(tx, &PERSONS, |r| RawPerson::try_from(r))?
                .into_iter()
                .map(decode_person)
                .collect::<Result<_, _>>()?;
            let decisions = all(tx, sql::DECISIONS, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .into_iter()
                .map(decode_decision)
                .collect::<Result<_, _>>()?;
            Ok(Resolved {
                position,
                members,
                persons,
                decisions,
            })
        }))
    }

    fn feed(&self, position: i64, limit: usize) -> BoxFuture<'_, Result<Feed, StoreError>> {
        Box::pin(self.readers.run(move |tx| {
            let rows: Vec<(i64, String, String)> = tx
                .prepare_cached("SELECT seq, customer_id, created_at FROM outbox WHERE seq > ?1 AND source <> '@person' ORDER BY seq LIMIT ?2")?
                .query_map(params![position, limit as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })?
                .collect::<Result<_, _>>()?;
            let changes = rows
                .into_iter()
                .map(|(position, customer_id, at)| {
                    Ok(FeedChange {
                        position,
                        customer_id,
                        at: parse_time(&at)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            let queued = tx
                .prepare_cached(&numbered(sql::QUEUED))?
                .query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(Feed { changes, queued })
        }))
    }

    fn commit_resolution(&self, holder: String, step: Resolution) -> BoxFuture<'_, Result<bool, StoreError>> {
        let step = Arc::new(step);
        Box::pin(self.write(move |tx| commit(tx, &holder, &step)))
    }

    fn unresolved(&self) -> BoxFuture<'_, Result<(u64, Option<UtcMillis>), StoreError>> {
        Box::pin(self.readers.run(|conn| {
            let (changes, oldest): (i64, Option<String>) = conn
                .prepare_cached(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox
                     WHERE seq > (SELECT position FROM person_resolver) AND source <> '@person'",
                )?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let (queued, first): (i64, Option<String>) = conn
                .prepare_cached("SELECT COUNT(*), MIN(queued_at) FROM person_queue")?
                .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            let oldest = [oldest, first]
                .into_iter()
                .flatten()
                .map(|t| parse_time(&t))
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .min();
            Ok(((changes + queued) as u64, oldest))
        }))
    }
}
