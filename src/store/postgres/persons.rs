//! The Postgres store's [`Persons`]: the statements of
//! [`crate::store::persons::sql`], the feed read from the outbox by its
//! rows' places in the feed (`published`: rows commit out of `seq` order
//! here, and take their places in commit order, see
//! [`super::outbound::OutboxRows::write`]). The resolver's row is locked
//! by its commit, so two instances never both write a step.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::sync::Arc;

use sqlx::PgConnection;

use super::PgStore;
use super::outbound::OutboxRows;
use crate::model::{Customer, UtcMillis};
use crate::outbound::PERSON_SOURCE;
use crate::persons::Decision;
use crate::store::persons::{
    Arg, Decided, Feed, FeedChange, Found, NewDecision, PersonQuery, Persons, RawPerson, RawReview, Resolution,
    Resolved, Review, ReviewStatus, StoredDecision, StoredPerson, decision_str, decode_decision, decode_person,
    decode_review, pack_evidence, pack_person, person_message, persons_sql, review_id, reviews_touching, sql,
    withdrawn,
};
use crate::store::rows::{Envelope, Lookups, RawRecord, page, parse_time, record_columns};
use crate::store::{BoxFuture, Page, StoreError};

/// A person's document as kept, and its codec (see `sql::person_columns`):
/// `doc`, JSON text, before version 18; `packed` since.
const DOC: &str = "COALESCE(packed, convert_to(doc, 'UTF8')), codec::bigint";

/// A review's evidence as kept and its codec: in `packed` since version
/// 21, as JSON text in `evidence` before.
const EVIDENCE: &str = "COALESCE(packed, convert_to(evidence, 'UTF8')), codec::bigint";

/// A step's persons: ids, documents as kept, codecs, seqs; `$5` the time.
const UPSERT_PERSONS: &str = "INSERT INTO persons (id, packed, codec, created_at, changed_at, seq)
     SELECT id, packed, codec, $5, $5, seq FROM unnest($1::text[], $2::bytea[], $3::smallint[], $4::bigint[])
         AS p(id, packed, codec, seq)
     ON CONFLICT (id) DO UPDATE SET doc = NULL, packed = excluded.packed, codec = excluded.codec,
         changed_at = excluded.changed_at, seq = excluded.seq";

/// A step's customers' persons: customers, persons (or none), versions.
const UPSERT_MEMBERS: &str = "INSERT INTO person_members (customer_id, person_id, version)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
     ON CONFLICT (customer_id) DO UPDATE SET person_id = excluded.person_id, version = excluded.version";

/// A step's reviews to open or bring up to date, in order: ids, the two
/// customers, scores, evidence as kept, codecs; `$7` the time.
const UPSERT_REVIEWS: &str = "INSERT INTO person_reviews (id, a, b, score, packed, codec, status, created_at)
     SELECT id, a, b, score, packed, codec, 'open', $7
     FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bytea[], $6::smallint[])
         WITH ORDINALITY AS r(id, a, b, score, packed, codec, n)
     ORDER BY n
     ON CONFLICT (id) DO UPDATE SET score = excluded.score, packed = excluded.packed, codec = excluded.codec
     WHERE person_reviews.status = 'open'";

async fn person_by_id(conn: &mut PgConnection, id: &str) -> Result<Option<StoredPerson>, StoreError> {
    let row: Option<RawPerson> = sqlx::query_as(&sql::person("id", DOC))
        .bind(id)
        .fetch_optional(conn)
        .await?;
    row.map(decode_person).transpose()
}

async fn person_of(conn: &mut PgConnection, customer_id: &str) -> Result<Option<StoredPerson>, StoreError> {
    let mut id = customer_id.to_owned();
    for _ in 0..16 {
        let member: Option<Option<String>> = sqlx::query_scalar(&sql::member("person_id"))
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(Some(person)) = member {
            return person_by_id(conn, &person).await;
        }
        let survivor: Option<Option<String>> = sqlx::query_scalar(sql::MERGED_INTO)
            .bind(&id)
            .fetch_optional(&mut *conn)
            .await?;
        match survivor {
            Some(Some(survivor)) => id = survivor,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

async fn decide(conn: &mut PgConnection, d: &NewDecision) -> Result<Decided, StoreError> {
    let mut customers = d.customers.clone();
    if let Some(review) = &d.review {
        let found: Option<RawReview> = sqlx::query_as(&format!("{} FOR UPDATE", sql::review("id", EVIDENCE)))
            .bind(review)
            .fetch_optional(&mut *conn)
            .await?;
        let Some(found) = found.map(decode_review).transpose()? else {
            return Ok(Decided::NoReview);
        };
        if found.status == ReviewStatus::Decided {
            return Ok(Decided::Already(found));
        }
        customers = found.customers;
    }
    let before: Option<String> = sqlx::query_scalar(sql::DECISION)
        .bind(&customers[0])
        .bind(&customers[1])
        .fetch_optional(&mut *conn)
        .await?;
    if before.as_deref() == Some("separate") && d.decision == Decision::Link {
        return Ok(Decided::Separated);
    }
    let at = d.at.to_string();
    let decision = decision_str(d.decision);
    for statement in [sql::KEEP_DECISION, sql::DECIDE_REVIEW] {
        sqlx::query(statement)
            .bind(&customers[0])
            .bind(&customers[1])
            .bind(decision)
            .bind(&at)
            .execute(&mut *conn)
            .await?;
    }
    for c in &customers {
        sqlx::query(sql::QUEUE).bind(c).bind(&at).execute(&mut *conn).await?;
    }
    Ok(Decided::Kept(StoredDecision {
        customers,
        decision: d.decision,
        decided_at: d.at,
    }))
}

async fn commit(conn: &mut PgConnection, holder: &str, step: &Resolution) -> Result<bool, StoreError> {
    let (position, held, mut seq): (i64, Option<String>, i64) =
        sqlx::query_as(&format!("{} FOR UPDATE", sql::RESOLVER))
            .fetch_one(&mut *conn)
            .await?;
    if position != step.from || held.as_deref() != Some(holder) {
        return Ok(false);
    }
    let at = step.at.to_string();
    let asked: bool = sqlx::query_scalar(sql::PERSONS_ASKED).fetch_one(&mut *conn).await?;
    let mut messages = Vec::new();
    for p in &step.deleted {
        for statement in [sql::DELETE_PERSON, sql::DELETE_ALIASES_OF] {
            sqlx::query(statement).bind(p).execute(&mut *conn).await?;
        }
        seq += 1;
        if asked {
            messages.push((p, seq, person_message(p, None, step.absorbed_by(p), seq, step.at)));
        }
    }
    let mut persons = Vec::new();
    for u in &step.upserts {
        seq += 1;
        persons.push((u.id.as_str(), pack_person(&u.doc)?, seq));
        if asked {
            messages.push((&u.id, seq, person_message(&u.id, Some(u), None, seq, step.at)));
        }
    }
    let persons = upserted(persons, |(id, _, _)| *id);
    if !persons.is_empty() {
        sqlx::query(UPSERT_PERSONS)
            .bind(persons.iter().map(|(id, _, _)| *id).collect::<Vec<_>>())
            .bind(
                persons
                    .iter()
                    .map(|(_, doc, _)| doc.bytes.as_slice())
                    .collect::<Vec<_>>(),
            )
            .bind(persons.iter().map(|(_, doc, _)| doc.codec as i16).collect::<Vec<_>>())
            .bind(persons.iter().map(|(_, _, seq)| *seq).collect::<Vec<_>>())
            .bind(&at)
            .execute(&mut *conn)
            .await?;
    }
    let mut outbox = OutboxRows::default();
    for (person, version, m) in messages {
        let envelope = Envelope {
            id: m.id,
            created_at: step.at,
            body: m.body,
        };
        outbox.push(envelope, person, PERSON_SOURCE, m.action, version);
    }
    for (alias, survivor) in &step.aliases {
        for statement in [sql::ALIAS_TO, sql::MOVE_ALIASES] {
            sqlx::query(statement)
                .bind(alias)
                .bind(survivor)
                .execute(&mut *conn)
                .await?;
        }
    }
    let members = upserted(&step.members, |(customer, _, _)| customer.as_str());
    if !members.is_empty() {
        sqlx::query(UPSERT_MEMBERS)
            .bind(
                members
                    .iter()
                    .map(|(customer, _, _)| customer.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                members
                    .iter()
                    .map(|(_, person, _)| person.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(
                members
                    .iter()
                    .map(|(_, _, version)| *version as i64)
                    .collect::<Vec<_>>(),
            )
            .execute(&mut *conn)
            .await?;
    }
    for c in &step.gone {
        for statement in [sql::FORGET_MEMBER, sql::FORGET_REVIEWS, sql::FORGET_DECISIONS] {
            sqlx::query(statement).bind(c).execute(&mut *conn).await?;
        }
    }
    let customers: Vec<&str> = step
        .reviews_of
        .iter()
        .chain(&step.reviews_among)
        .map(String::as_str)
        .collect();
    // Unprepared, as joins of a batch are (see the store's module doc).
    let touching = sqlx::query_as(&reviews_touching(|column| format!("{column} = ANY($1)")))
        .persistent(false)
        .bind(customers)
        .fetch_all(&mut *conn)
        .await?;
    let withdrawn = withdrawn(step, touching);
    if !withdrawn.is_empty() {
        // Unprepared: planned once while the table was small, a prepared
        // plan read every open review by their status for each of these.
        sqlx::query("DELETE FROM person_reviews WHERE id = ANY($1) AND status = 'open'")
            .persistent(false)
            .bind(withdrawn)
            .execute(&mut *conn)
            .await?;
    }
    let reviews = step
        .reviews
        .iter()
        .map(|r| Ok((review_id(&r.customers), r, pack_evidence(&r.evidence)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let reviews = upserted(reviews, |(id, _, _)| id.clone());
    if !reviews.is_empty() {
        sqlx::query(UPSERT_REVIEWS)
            .bind(reviews.iter().map(|(id, _, _)| id.as_str()).collect::<Vec<_>>())
            .bind(
                reviews
                    .iter()
                    .map(|(_, r, _)| r.customers[0].as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                reviews
                    .iter()
                    .map(|(_, r, _)| r.customers[1].as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(reviews.iter().map(|(_, r, _)| r.score).collect::<Vec<_>>())
            .bind(reviews.iter().map(|(_, _, e)| e.bytes.as_slice()).collect::<Vec<_>>())
            .bind(reviews.iter().map(|(_, _, e)| e.codec as i16).collect::<Vec<_>>())
            .bind(&at)
            .execute(&mut *conn)
            .await?;
    }
    if !step.applied.is_empty() {
        // Unprepared, as joins of a batch are (see the store's module doc).
        sqlx::query("DELETE FROM person_queue WHERE seq = ANY($1)")
            .persistent(false)
            .bind(&step.applied)
            .execute(&mut *conn)
            .await?;
    }
    let lease = UtcMillis::now()
        .saturating_add(std::time::Duration::from_secs(5))
        .as_millisecond();
    sqlx::query(sql::ADVANCE)
        .bind(step.to)
        .bind(seq)
        .bind(lease)
        .execute(&mut *conn)
        .await?;
    // Last (see `outbound::OutboxRows::write`).
    outbox.write(conn).await?;
    Ok(true)
}

/// The rows of one set-based upsert, from rows meant to be upserted one
/// by one in order: a key met again replaces the values of the row where
/// it was first met, as one by one would leave them (one statement may not
/// change a row twice).
fn upserted<T, K: Eq + Hash>(rows: impl IntoIterator<Item = T>, key: impl Fn(&T) -> K) -> Vec<T> {
    let mut at = HashMap::new();
    let mut kept: Vec<T> = Vec::new();
    for row in rows {
        match at.entry(key(&row)) {
            Entry::Occupied(first) => kept[*first.get()] = row,
            Entry::Vacant(first) => {
                first.insert(kept.len());
                kept.push(row);
            }
        }
    }
    kept
}

impl PgStore {
    /// Runs `write` in a transaction of its own, committed if it succeeds.
    async fn in_transaction<T>(
        &self,
        write: impl for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut tx = self.pool.begin().await?;
        let value = write(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }
}

impl Persons for PgStore {
    fn person(&self, id: String) -> BoxFuture<'_, Result<Option<Found>, StoreError>> {
        Box::pin(self.read(move |conn| {
            Box::pin(async move {
                if let Some(p) = person_by_id(conn, &id).await? {
                    return Ok(Some((p, None)));
                }
                let survivor: Option<String> = sqlx::query_scalar(&sql::alias("person_id"))
                    .bind(&id)
                    .fetch_optional(&mut *conn)
                    .await?;
                let Some(survivor) = survivor else {
                    return Ok(None);
                };
                Ok(person_by_id(conn, &survivor).await?.map(|p| (p, Some(id.clone()))))
            })
        }))
    }

    fn person_of(&self, customer_id: String) -> BoxFuture<'_, Result<Option<StoredPerson>, StoreError>> {
        Box::pin(self.read(move |conn| Box::pin(async move { person_of(conn, &customer_id).await })))
    }

    fn persons(&self, query: PersonQuery) -> BoxFuture<'_, Result<Page<StoredPerson>, StoreError>> {
        Box::pin(self.read(move |conn| {
            Box::pin(async move {
                let (statement, args) = persons_sql(&query, "id", DOC, Lookups::Keys);
                let mut q = sqlx::query_as::<_, RawPerson>(&statement);
                for a in args {
                    q = match a {
                        Arg::Int(n) => q.bind(n),
                        Arg::Text(s) => q.bind(s),
                    };
                }
                let rows = q.fetch_all(&mut *conn).await?;
                let persons = rows.into_iter().map(decode_person).collect::<Result<Vec<_>, _>>()?;
                Ok(page(persons, query.limit, |p| p.seq))
            })
        }))
    }

    fn reviews(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
        after: Option<i64>,
    ) -> BoxFuture<'_, Result<Page<Review>, StoreError>> {
        Box::pin(async move {
            let rows: Vec<RawReview> = sqlx::query_as(&sql::reviews("id", EVIDENCE))
                .bind(after.unwrap_or(0))
                .bind(status.map_or("", ReviewStatus::as_str))
                .bind(limit as i64 + 1)
                .fetch_all(&self.pool)
                .await?;
            let reviews = rows.into_iter().map(decode_review).collect::<Result<Vec<_>, _>>()?;
            Ok(page(reviews, limit, |r| r.seq))
        })
    }

    fn decide(&self, decision: NewDecision) -> BoxFuture<'_, Result<Decided, StoreError>> {
        Box::pin(async move {
            self.in_transaction(move |conn| Box::pin(async move { decide(conn, &decision).await }))
                .await
        })
    }

    fn withdraw(&self, customers: [String; 2], at: UtcMillis) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.in_transaction(move |conn| {
                Box::pin(async move {
                    let withdrawn = sqlx::query(sql::WITHDRAW)
                        .bind(&customers[0])
                        .bind(&customers[1])
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    if withdrawn == 0 {
                        return Ok(false);
                    }
                    for c in &customers {
                        sqlx::query(sql::QUEUE)
                            .bind(c)
                            .bind(at.to_string())
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(true)
                })
            })
            .await
        })
    }

    fn records(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Customer>, StoreError>> {
        Box::pin(async move {
            // Unprepared, as joins of a batch are (see the store's module doc).
            let rows: Vec<RawRecord> = sqlx::query_as(&format!(
                "SELECT {} FROM customers WHERE id = ANY($1)",
                record_columns(super::PROFILE)
            ))
            .persistent(false)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter().map(|r| Ok(r.into_record()?.0.to_customer())).collect()
        })
    }

    fn lease_resolver(&self, holder: String, until: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>> {
        Box::pin(async move {
            let taken: Option<i64> = sqlx::query_scalar(&format!("{} RETURNING position", sql::LEASE))
                .bind(&holder)
                .bind(until)
                .bind(UtcMillis::now().as_millisecond())
                .fetch_optional(&self.pool)
                .await?;
            Ok(taken)
        })
    }

    fn take_resolver(&self, holder: String, until: i64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query(sql::TAKE)
                .bind(&holder)
                .bind(until)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn resolved(&self) -> BoxFuture<'_, Result<Resolved, StoreError>> {
        Box::pin(self.read(|conn| {
            Box::pin(async move {
                let position: i64 = sqlx::query_scalar(sql::POSITION).fetch_one(&mut *conn).await?;
                let members: Vec<(String, Option<String>, i64)> =
                    sqlx::query_as(&sql::members("person_id")).fetch_all(&mut *conn).await?;
                let persons: Vec<RawPerson> = sqlx::query_as(&sql::persons("id", DOC)).fetch_all(&mut *conn).await?;
                let decisions: Vec<(String, String, String, String)> =
                    sqlx::query_as(sql::DECISIONS).fetch_all(&mut *conn).await?;
                Ok(Resolved {
                    position,
                    members: members.into_iter().map(|(c, p, v)| (c, p, v as u64)).collect(),
                    persons: persons.into_iter().map(decode_person).collect::<Result<_, _>>()?,
                    decisions: decisions.into_iter().map(decode_decision).collect::<Result<_, _>>()?,
                })
            })
        }))
    }

    fn feed(&self, position: i64, limit: usize) -> BoxFuture<'_, Result<Feed, StoreError>> {
        Box::pin(self.read(move |conn| {
            Box::pin(async move {
                let rows: Vec<(i64, String, String)> = sqlx::query_as(
                    "SELECT published, customer_id, created_at FROM outbox
                     WHERE published > $1 AND source <> '@person' ORDER BY published LIMIT $2",
                )
                .bind(position)
                .bind(limit as i64)
                .fetch_all(&mut *conn)
                .await?;
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
                let queued: Vec<(i64, String)> = sqlx::query_as(sql::QUEUED)
                    .bind(limit as i64)
                    .fetch_all(&mut *conn)
                    .await?;
                Ok(Feed { changes, queued })
            })
        }))
    }

    fn commit_resolution(&self, holder: String, step: Resolution) -> BoxFuture<'_, Result<bool, StoreError>> {
        let step = Arc::new(step);
        Box::pin(async move {
            self.in_transaction(move |conn| Box::pin(async move { commit(conn, &holder, &step).await }))
                .await
        })
    }

    fn unresolved(&self) -> BoxFuture<'_, Result<(u64, Option<UtcMillis>), StoreError>> {
        Box::pin(self.read(|conn| {
            Box::pin(async move {
                let (changes, oldest): (i64, Option<String>) = sqlx::query_as(
                    "SELECT COUNT(*), MIN(created_at) FROM outbox
                     WHERE published > (SELECT position FROM person_resolver) AND source <> '@person'",
                )
                .fetch_one(&mut *conn)
                .await?;
                let (queued, first): (i64, Option<String>) =
                    sqlx::query_as("SELECT COUNT(*), MIN(queued_at) FROM person_queue")
                        .fetch_one(&mut *conn)
                        .await?;
                let oldest = [oldest, first]
                    .into_iter()
                    .flatten()
                    .map(|t| parse_time(&t))
                    .collect::<Result<Vec<_>, _>>()?
                    .into_iter()
                    .min();
                Ok(((changes + queued) as u64, oldest))
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::upserted;

    #[test]
    fn a_key_met_again_keeps_its_first_place_and_its_last_values() {
        let rows = vec![("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)];
        assert_eq!(upserted(rows, |(key, _)| *key), vec![("a", 3), ("b", 5), ("c", 4)]);
        assert!(upserted(Vec::<(&str, i32)>::new(), |(key, _)| *key).is_empty());
    }
}
