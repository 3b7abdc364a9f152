//! Persons as kept (SPEC §11): each person's customers and the links that
//! hold them together, the ids that joins absorbed (aliases), the possible
//! matches waiting for an operator (reviews), operators' decisions, and
//! the resolver's position in the directory's change feed, written with
//! the resolver's results in one transaction.
//!
//! The tables hold ids, scores and evidence (field names, comparison
//! levels, weights), never a customer's data: a person's golden profile
//! is read from its customers' records when it is asked for, so an
//! erasure needs nothing here beyond the resolver's next step.
//!
//! The change feed is the outbox (every published change of a record, an
//! erasure's `deleted` among them) in commit order: its `seq` on the
//! embedded store, its rows' `published` places on Postgres. What the
//! feed does not carry (a rebuild, an import without publishing) the
//! resolver finds when it starts, by the versions it last resolved.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::rows::{Lookup, Lookups, name_filter};
use super::{BoxFuture, Page, StoreError, compress};
use crate::model::{Action, Customer, UtcMillis};
use crate::persons::{Decider, Decision, Edge};

/// One link of a person: two customers, the score and its evidence, and
/// who decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Link {
    /// Two customer ids, the lower first.
    pub customers: [String; 2],
    pub score: f64,
    pub evidence: Vec<Evidence>,
    pub decided_by: Decider,
}

/// One field's part in a score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Evidence {
    /// `email`, `phone`, `identifier`, `givenName`, `familyName`,
    /// `birthDate`, `street`, `postcode`, …
    pub field: String,
    /// `exact`, `typo`, `nickname`, `different`, …
    pub comparison: String,
    /// log₂(m/u): how much the comparison says.
    pub weight: f64,
}

impl From<&Edge> for Link {
    fn from(edge: &Edge) -> Self {
        Link {
            customers: edge.customers.clone(),
            // Two decimals: enough to explain, and stable across platforms.
            score: (edge.score * 100.0).round() / 100.0,
            evidence: edge
                .evidence
                .iter()
                .map(|e| Evidence {
                    field: e.field.to_owned(),
                    comparison: e.comparison.to_owned(),
                    weight: (e.weight * 100.0).round() / 100.0,
                })
                .collect(),
            decided_by: edge.decided_by,
        }
    }
}

/// A person as kept: its customers and links, without a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPerson {
    pub id: String,
    /// Sorted.
    pub customer_ids: Vec<String>,
    pub links: Vec<Link>,
    pub created_at: UtcMillis,
    pub changed_at: UtcMillis,
    /// The order of its last change, for paging.
    #[serde(skip)]
    pub seq: i64,
}

/// What a person's row holds besides its id and times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PersonDoc {
    pub customer_ids: Vec<String>,
    pub links: Vec<Link>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewStatus {
    Open,
    Decided,
}

impl ReviewStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewStatus::Open => "open",
            ReviewStatus::Decided => "decided",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(ReviewStatus::Open),
            "decided" => Some(ReviewStatus::Decided),
            _ => None,
        }
    }
}

/// A possible match for an operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    /// `rev_…`.
    pub id: String,
    /// Two customer ids, the lower first.
    pub customers: [String; 2],
    pub score: f64,
    pub evidence: Vec<Evidence>,
    pub status: ReviewStatus,
    /// The operator's decision, once decided.
    pub decision: Option<Decision>,
    pub created_at: UtcMillis,
    pub decided_at: Option<UtcMillis>,
    #[serde(skip)]
    pub seq: i64,
}

/// An operator's decision about two customers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoredDecision {
    /// Two customer ids, the lower first.
    pub customers: [String; 2],
    pub decision: Decision,
    pub decided_at: UtcMillis,
}

/// A decision to keep, from a review or without one.
#[derive(Debug, Clone)]
pub struct NewDecision {
    pub customers: [String; 2],
    pub decision: Decision,
    pub at: UtcMillis,
    /// The review it answers.
    pub review: Option<String>,
}

/// What keeping a decision found.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// Kept; the resolver applies it.
    Kept(StoredDecision),
    /// The review was decided before: its first decision stands.
    Already(Review),
    /// `link` on two customers an operator separated.
    Separated,
    NoReview,
}

#[derive(Debug, Clone, Default)]
pub struct PersonQuery {
    /// Persons with a customer of this (normalized) email.
    pub email: Option<String>,
    /// E.164.
    pub phone: Option<String>,
    /// Persons whose customers' names hold every word of this (see
    /// `rows::name_words`).
    pub name: Option<String>,
    pub changed_since: Option<UtcMillis>,
    pub limit: usize,
    pub after: Option<i64>,
}

/// One change in the feed: a customer whose record changed (or went).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedChange {
    pub position: i64,
    pub customer_id: String,
    pub at: UtcMillis,
}

/// A person, and the id asked for when a join absorbed it.
pub type Found = (StoredPerson, Option<String>);

/// What the feed holds after a position.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    pub changes: Vec<FeedChange>,
    /// `(seq, customer)`: customers an operator's decision queued.
    pub queued: Vec<(i64, String)>,
}

/// What the resolver holds when it starts: the position it resolved up
/// to, each customer's person and the version resolved, and the decisions.
#[derive(Debug, Clone, Default)]
pub struct Resolved {
    pub position: i64,
    /// `(customer, person, version)`; no person for a merged record.
    pub members: Vec<(String, Option<String>, u64)>,
    pub persons: Vec<StoredPerson>,
    pub decisions: Vec<StoredDecision>,
}

/// One step of the resolver, written in one transaction with its position.
#[derive(Debug, Clone)]
pub struct Resolution {
    /// The position read from (the commit fails if it moved) and the one
    /// reached.
    pub from: i64,
    pub to: i64,
    /// Decisions taken up (their `dirty` rows), by seq.
    pub applied: Vec<i64>,
    pub upserts: Vec<PersonWrite>,
    /// Persons gone: no customer left, or absorbed by a join.
    pub deleted: Vec<String>,
    /// `(absorbed, survivor)`.
    pub aliases: Vec<(String, String)>,
    /// `(customer, person, version)`.
    pub members: Vec<(String, Option<String>, u64)>,
    /// Customers gone from the directory (erased).
    pub gone: Vec<String>,
    /// Open reviews that touch one of these customers, or join two of
    /// `reviews_among`, are withdrawn…
    pub reviews_of: Vec<String>,
    pub reviews_among: Vec<String>,
    /// …and then these are open.
    pub reviews: Vec<Link>,
    pub at: UtcMillis,
}

impl Resolution {
    /// The person that absorbed `person`, if a join did.
    pub fn absorbed_by(&self, person: &str) -> Option<&str> {
        self.aliases.iter().find(|(a, _)| a == person).map(|(_, s)| s.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PersonWrite {
    pub id: String,
    pub doc: PersonDoc,
    pub created: bool,
}

/// A person's message (SPEC §11): the customer envelope's shape with
/// `"type": "person"`; its payload the person's id, version, customers
/// and links (ids, scores, evidence: no customer's data, so an erasure
/// leaves nothing of its customer in it), or for a deleted person its id
/// and the person that absorbed it, if one did.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PersonEnvelope<'a> {
    id: &'a str,
    created_date: UtcMillis,
    #[serde(rename = "type")]
    kind: &'static str,
    action: Action,
    payload: PersonPayload<'a>,
    changes: serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PersonPayload<'a> {
    id: &'a str,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    customer_ids: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    links: Option<&'a [Link]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    absorbed_by: Option<&'a str>,
}

/// A person's outbox row: its envelope id, its action and its body.
pub(super) struct PersonMessage {
    pub id: String,
    pub action: Action,
    pub body: String,
}

/// The message of a person written (`doc`) or deleted (`None`, with the
/// person that absorbed it), at its `version`.
pub(super) fn person_message(
    person: &str,
    doc: Option<&PersonWrite>,
    absorbed_by: Option<&str>,
    version: i64,
    at: UtcMillis,
) -> PersonMessage {
    let id = format!("evt_{}", uuid::Uuid::now_v7().simple());
    let action = match doc {
        Some(w) if w.created => Action::Created,
        Some(_) => Action::Updated,
        None => Action::Deleted,
    };
    let body = serde_json::to_string(&PersonEnvelope {
        id: &id,
        created_date: at,
        kind: "person",
        action,
        payload: PersonPayload {
            id: person,
            version,
            customer_ids: doc.map(|w| w.doc.customer_ids.as_slice()),
            links: doc.map(|w| w.doc.links.as_slice()),
            absorbed_by,
        },
        changes: serde_json::Map::new(),
    })
    .expect("an envelope serializes");
    PersonMessage { id, action, body }
}

/// A person's document as kept (see [`compress`]).
pub(super) fn pack_person(doc: &PersonDoc) -> Result<compress::Packed, StoreError> {
    Ok(compress::pack(compress::Kind::Person, &serde_json::to_vec(doc)?))
}

/// A review's evidence as kept (see [`compress`]): JSON with many field
/// names, compressed with the persons' dictionary, which holds them.
pub(super) fn pack_evidence(evidence: &[Evidence]) -> Result<compress::Packed, StoreError> {
    Ok(compress::pack(compress::Kind::Person, &serde_json::to_vec(evidence)?))
}

/// A review's id: the same pair, the same id.
pub fn review_id(customers: &[String; 2]) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("{}\n{}", customers[0], customers[1]));
    format!("rev_{}", &hex::encode(digest)[..24])
}

/// Two customer ids, the lower first.
pub fn ordered(a: String, b: String) -> [String; 2] {
    if a <= b { [a, b] } else { [b, a] }
}

pub trait Persons: Send + Sync {
    /// A person by its id or an id a join absorbed: `(person, aliasOf)`.
    fn person(&self, id: String) -> BoxFuture<'_, Result<Option<Found>, StoreError>>;

    /// The person a customer belongs to (for a merged record, its survivor's).
    fn person_of(&self, customer_id: String) -> BoxFuture<'_, Result<Option<StoredPerson>, StoreError>>;

    /// Persons in the order of their last change.
    fn persons(&self, query: PersonQuery) -> BoxFuture<'_, Result<Page<StoredPerson>, StoreError>>;

    fn reviews(
        &self,
        status: Option<ReviewStatus>,
        limit: usize,
        after: Option<i64>,
    ) -> BoxFuture<'_, Result<Page<Review>, StoreError>>;

    /// Keeps an operator's decision and queues its customers for the resolver.
    fn decide(&self, decision: NewDecision) -> BoxFuture<'_, Result<Decided, StoreError>>;

    /// Withdraws the operator's decision about two customers (the lower id
    /// first), queuing them for the resolver; `false`: there was none.
    fn withdraw(&self, customers: [String; 2], at: UtcMillis) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Customer records by id (those that exist).
    fn records(&self, ids: Vec<String>) -> BoxFuture<'_, Result<Vec<Customer>, StoreError>>;

    /// Takes (or keeps) the resolver's lease for `holder` until `until`
    /// (Unix ms); `None` while another holder's lease runs.
    fn lease_resolver(&self, holder: String, until: i64) -> BoxFuture<'_, Result<Option<i64>, StoreError>>;

    /// Takes the resolver's lease for `holder` until `until` from whoever
    /// holds it (a rebuild of persons): the resolver that held it finds
    /// its next step refused, and starts again from the store once the
    /// lease is free.
    fn take_resolver(&self, holder: String, until: i64) -> BoxFuture<'_, Result<(), StoreError>>;

    /// What the resolver resolved so far.
    fn resolved(&self) -> BoxFuture<'_, Result<Resolved, StoreError>>;

    /// Changes after `position`, in commit order, and the customers that
    /// operators' decisions queued (`(seq, customer)`).
    fn feed(&self, position: i64, limit: usize) -> BoxFuture<'_, Result<Feed, StoreError>>;

    /// Writes a step of the resolver if the position is still `from` and
    /// `holder` holds the lease; `false` otherwise (nothing written).
    fn commit_resolution(&self, holder: String, step: Resolution) -> BoxFuture<'_, Result<bool, StoreError>>;

    /// Changes and queued customers the resolver has not resolved yet: how
    /// many, and when the oldest was made (for its lag).
    fn unresolved(&self) -> BoxFuture<'_, Result<(u64, Option<UtcMillis>), StoreError>>;
}

pub(super) fn decision_str(d: Decision) -> &'static str {
    match d {
        Decision::Link => "link",
        Decision::Separate => "separate",
    }
}

pub(super) fn parse_decision(s: &str) -> Result<Decision, StoreError> {
    match s {
        "link" => Ok(Decision::Link),
        "separate" => Ok(Decision::Separate),
        other => Err(StoreError::Bug(format!("a stored decision reads {other:?}"))),
    }
}

/// A bound value of a statement built at run time.
pub(super) enum Arg {
    Int(i64),
    Text(String),
}

impl From<String> for Arg {
    fn from(text: String) -> Self {
        Arg::Text(text)
    }
}

/// The statements both backends run alike, with Postgres's `$n`
/// parameters (the embedded store reads them as SQLite's `?n`).
pub(super) mod sql {
    /// A person's columns as [`super::RawPerson`] reads them: `id` the
    /// dialect's expression of its id as text, `doc` its expression of the
    /// document as kept, then its codec.
    pub fn person_columns(id: &str, doc: &str) -> String {
        format!("{id}, {doc}, created_at, changed_at, seq")
    }

    /// The person whose id, as kept, is bound as `$1`.
    pub fn person(id: &str, doc: &str) -> String {
        format!("SELECT {} FROM persons WHERE id = $1", person_columns(id, doc))
    }

    pub fn persons(id: &str, doc: &str) -> String {
        format!("SELECT {} FROM persons", person_columns(id, doc))
    }

    /// Whether a subscription, enabled or not, asks for persons: only
    /// then are persons' changes written to the outbox (a disabled one
    /// catches up with them when enabled again).
    pub const PERSONS_ASKED: &str = "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE types LIKE '%\"person\"%')";
    /// The person holding the customers of the alias bound as `$1` (as
    /// kept), `person_id` the dialect's expression of its id as text.
    pub fn alias(person_id: &str) -> String {
        format!("SELECT {person_id} FROM person_aliases WHERE alias = $1")
    }
    /// A customer's person, `person_id` as in [`alias`].
    pub fn member(person_id: &str) -> String {
        format!("SELECT {person_id} FROM person_members WHERE customer_id = $1")
    }
    pub const MERGED_INTO: &str = "SELECT merged_into FROM customers WHERE id = $1";
    /// A review's columns as [`super::RawReview`] reads them: `id` the
    /// dialect's expression of its id as text, `evidence` its expression
    /// of the evidence as kept, then its codec.
    fn review_columns(id: &str, evidence: &str) -> String {
        format!("seq, {id}, a, b, score, {evidence}, status, decision, created_at, decided_at")
    }

    pub fn reviews(id: &str, evidence: &str) -> String {
        format!(
            "SELECT {} FROM person_reviews WHERE seq > $1 AND ($2 = '' OR status = $2) ORDER BY seq LIMIT $3",
            review_columns(id, evidence)
        )
    }

    /// The review whose id, as kept, is bound as `$1`.
    pub fn review(id: &str, evidence: &str) -> String {
        format!(
            "SELECT {} FROM person_reviews WHERE id = $1",
            review_columns(id, evidence)
        )
    }
    pub const DECISION: &str = "SELECT decision FROM person_decisions WHERE a = $1 AND b = $2";
    pub const KEEP_DECISION: &str = "INSERT INTO person_decisions (a, b, decision, decided_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (a, b) DO UPDATE SET decision = excluded.decision, decided_at = excluded.decided_at";
    pub const DECIDE_REVIEW: &str = "UPDATE person_reviews SET status = 'decided', decision = $3, decided_at = $4
         WHERE a = $1 AND b = $2 AND status = 'open'";
    pub const WITHDRAW: &str = "DELETE FROM person_decisions WHERE a = $1 AND b = $2";
    pub const QUEUE: &str = "INSERT INTO person_queue (customer_id, queued_at) VALUES ($1, $2)";
    pub const QUEUED: &str = "SELECT seq, customer_id FROM person_queue ORDER BY seq LIMIT $1";
    pub const LEASE: &str = "UPDATE person_resolver SET holder = $1, lease_until = $2
         WHERE holder = $1 OR holder IS NULL OR lease_until < $3";
    pub const TAKE: &str = "UPDATE person_resolver SET holder = $1, lease_until = $2";
    pub const POSITION: &str = "SELECT position FROM person_resolver";
    pub const RESOLVER: &str = "SELECT position, holder, person_seq FROM person_resolver";
    /// Every customer's person, `person_id` as in [`alias`].
    pub fn members(person_id: &str) -> String {
        format!("SELECT customer_id, {person_id}, version FROM person_members")
    }
    pub const DECISIONS: &str = "SELECT a, b, decision, decided_at FROM person_decisions";
    pub const DELETE_PERSON: &str = "DELETE FROM persons WHERE id = $1";
    pub const DELETE_ALIASES_OF: &str = "DELETE FROM person_aliases WHERE person_id = $1";
    pub const ALIAS_TO: &str = "INSERT INTO person_aliases (alias, person_id) VALUES ($1, $2)
         ON CONFLICT (alias) DO UPDATE SET person_id = excluded.person_id";
    pub const MOVE_ALIASES: &str = "UPDATE person_aliases SET person_id = $2 WHERE person_id = $1";
    pub const FORGET_MEMBER: &str = "DELETE FROM person_members WHERE customer_id = $1";
    pub const FORGET_REVIEWS: &str = "DELETE FROM person_reviews WHERE a = $1 OR b = $1";
    pub const FORGET_DECISIONS: &str = "DELETE FROM person_decisions WHERE a = $1 OR b = $1";
    pub const ADVANCE: &str = "UPDATE person_resolver SET position = $1, person_seq = $2, lease_until = $3";
}

/// The statement listing persons for `q`, with its arguments; `id` and
/// `doc` as in [`sql::person_columns`], the customers found by their
/// lookups as `lookups` keeps them.
pub(super) fn persons_sql(q: &PersonQuery, id: &str, doc: &str, lookups: Lookups) -> (String, Vec<Arg>) {
    let mut sql = format!("SELECT {} FROM persons WHERE seq > $1", sql::person_columns(id, doc));
    let mut args = vec![Arg::Int(q.after.unwrap_or(0))];
    let persons_of =
        |customers: &str| format!("id IN (SELECT person_id FROM person_members WHERE customer_id IN ({customers}))");
    if let Some(email) = &q.email {
        args.push(Arg::Text(email.trim().to_lowercase()));
        let customers = format!("SELECT id FROM customers WHERE email = ${}", args.len());
        sql.push_str(&format!(" AND {}", persons_of(&customers)));
    }
    if let Some(phone) = &q.phone {
        let customers = lookups.customers_with(Lookup::Phones, phone, &mut args, |n| format!("${n}"));
        sql.push_str(&format!(" AND {}", persons_of(&customers)));
    }
    if let Some(name) = &q.name {
        sql.push_str(&name_filter(name, lookups, &mut args, |n| format!("${n}"), persons_of));
    }
    if let Some(since) = q.changed_since {
        args.push(Arg::Text(since.to_string()));
        sql.push_str(&format!(" AND changed_at >= ${}", args.len()));
    }
    args.push(Arg::Int(q.limit as i64 + 1));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", args.len()));
    (sql, args)
}

/// A person's row as read: its id, its document as kept and that
/// document's codec, its times and its `seq`.
pub(super) type RawPerson = (String, Vec<u8>, i64, String, String, i64);

pub(super) fn decode_person(
    (id, doc, codec, created_at, changed_at, seq): RawPerson,
) -> Result<StoredPerson, StoreError> {
    let doc: PersonDoc = serde_json::from_slice(&compress::unpack(codec, doc)?)?;
    Ok(StoredPerson {
        id,
        customer_ids: doc.customer_ids,
        links: doc.links,
        created_at: super::rows::parse_time(&created_at)?,
        changed_at: super::rows::parse_time(&changed_at)?,
        seq,
    })
}

/// A review's row as read: seq, id, its customers, score, its evidence as
/// kept and that evidence's codec, status, decision and times.
pub(super) type RawReview = (
    i64,
    String,
    String,
    String,
    f64,
    Vec<u8>,
    i64,
    String,
    Option<String>,
    String,
    Option<String>,
);

pub(super) fn decode_review(
    (seq, id, a, b, score, evidence, codec, status, decision, created_at, decided_at): RawReview,
) -> Result<Review, StoreError> {
    Ok(Review {
        id,
        customers: [a, b],
        score,
        evidence: serde_json::from_slice(&compress::unpack(codec, evidence)?)?,
        status: ReviewStatus::parse(&status)
            .ok_or_else(|| StoreError::Bug(format!("a review's status reads {status:?}")))?,
        decision: decision.as_deref().map(parse_decision).transpose()?,
        created_at: super::rows::parse_time(&created_at)?,
        decided_at: decided_at.as_deref().map(super::rows::parse_time).transpose()?,
        seq,
    })
}

pub(super) fn decode_decision(
    (a, b, decision, at): (String, String, String, String),
) -> Result<StoredDecision, StoreError> {
    Ok(StoredDecision {
        customers: [a, b],
        decision: parse_decision(&decision)?,
        decided_at: super::rows::parse_time(&at)?,
    })
}

/// The statement reading the reviews that touch the customers of a list
/// bound as `$1`, `(id, a, b, status)`; `member` is the dialect's test
/// that a column's value is in that list. It asks no status: with one,
/// a planner may read every open review by `person_reviews_status`
/// (Postgres keeps it; SQLite's went with migration 26) instead of the
/// few of these customers by `person_reviews_a` and `_b`, and a step's
/// work grew with the directory's reviews.
pub(super) fn reviews_touching(member: impl Fn(&str) -> String) -> String {
    format!(
        "SELECT id, a, b, status FROM person_reviews WHERE {} OR {}",
        member("a"),
        member("b")
    )
}

/// The open reviews of `step` to withdraw, given the reviews that touch
/// its customers (`(id, a, b, status)`, [`reviews_touching`]): those of a
/// changed customer, and those between two customers resolved again,
/// except the ones it keeps open.
pub(super) fn withdrawn(step: &Resolution, touching: Vec<(String, String, String, String)>) -> Vec<String> {
    use std::collections::BTreeSet;
    let changed: BTreeSet<&str> = step.reviews_of.iter().map(String::as_str).collect();
    let among: BTreeSet<&str> = step.reviews_among.iter().map(String::as_str).collect();
    let kept: BTreeSet<String> = step.reviews.iter().map(|r| review_id(&r.customers)).collect();
    let mut ids: Vec<String> = touching
        .into_iter()
        .filter(|(id, a, b, status)| {
            status == ReviewStatus::Open.as_str()
                && !kept.contains(id)
                && (changed.contains(a.as_str())
                    || changed.contains(b.as_str())
                    || (among.contains(a.as_str()) && among.contains(b.as_str())))
        })
        .map(|(id, _, _, _)| id)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}
