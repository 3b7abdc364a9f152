//! The operations the admin API and the console share: each reads or
//! changes the store through its roles, records what an administrative
//! action did in the audit log, and says why it refused in an
//! [`ApiError`], whose message the API sends as JSON and the console shows
//! on the page. Neither edge does any of this itself, so that a button of
//! the console does exactly what its API operation does.

use std::collections::HashSet;

use schemars::JsonSchema;
use serde::Serialize;

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ErrorCode};
use super::extract::invalid;
use super::ingest::outcome_label;
use super::keys::{erased_target, random_secret, record};
use crate::model::{Action, Customer, UtcMillis, json, normalize};
use crate::outbound::destination::Refused;
use crate::outbound::{Message, MessageStatus, Subscription, signing};
use crate::persons::Decision;
use crate::persons::profile::{GoldenProfile, golden};
use crate::sources::registry::digest;
use crate::store::keys::StoredKey;
use crate::store::persons::{Decided, NewDecision, StoredPerson, ordered};
use crate::store::{
    Erasure, HistoryEntry, HistoryQuery, IngestOutcome, MessageQuery, Page, Publish, Retry, StoredEvent,
};

/// One customer; with `resolve`, the record its `mergedInto` links lead
/// to.
pub async fn customer(app: &AppState, id: &str, resolve: bool) -> Result<Customer, ApiError> {
    let mut customer = app
        .store
        .customer(id.to_owned())
        .await?
        .ok_or_else(|| no_customer(id))?;
    if resolve {
        // Follows mergedInto to the survivor, stopping before a cycle or a
        // record that is gone (erased).
        let mut seen = HashSet::from([customer.id.clone()]);
        while let Some(next) = customer.merged_into.clone().filter(|next| seen.insert(next.clone())) {
            match app.store.customer(next).await? {
                Some(survivor) => customer = survivor,
                None => break,
            }
        }
    }
    Ok(customer)
}

/// A page of a customer's history, oldest first.
pub async fn history(app: &AppState, query: HistoryQuery) -> Result<Page<HistoryEntry>, ApiError> {
    let id = query.customer_id.clone();
    app.store.history(query).await?.ok_or_else(|| no_customer(&id))
}

/// Erases a customer (SPEC §5); erasing one erased before does nothing.
pub async fn erase(app: &AppState, principal: &Principal, id: &str) -> Result<(), ApiError> {
    match app.store.erase(id.to_owned()).await? {
        Erasure::Erased => {
            record(app, principal, "customer.erase", &erased_target(id)).await;
            tracing::info!(customer = %id, "customer erased");
            Ok(())
        }
        Erasure::AlreadyErased => Ok(()),
        Erasure::NotFound => Err(no_customer(id)),
    }
}

/// Reads a phone filter in any format, with the country of the source
/// named `source` when given, else of the first configured source.
pub fn phone_filter(app: &AppState, source: Option<&str>, raw: &str) -> Result<String, ApiError> {
    let country = match source.and_then(|name| app.registry.get(name)) {
        Some(live) => live.source.settings.default_country,
        None => app.registry.first_config().and_then(|s| s.settings.default_country),
    };
    normalize::phone("query", &json::Json::String(raw.into()), country)
        .ok()
        .flatten()
        .and_then(|p| p.e164)
        .ok_or_else(|| ApiError::bad_parameter("phone cannot be read as a phone number"))
}

/// One kept delivery, with its raw body.
pub async fn event(app: &AppState, id: &str) -> Result<StoredEvent, ApiError> {
    app.store.event(id.to_owned()).await?.ok_or_else(|| no_event(id))
}

/// Runs a kept delivery through its source's adapter again, with the
/// source's current settings, and applies it.
pub async fn reprocess(app: &AppState, principal: &Principal, id: &str) -> Result<IngestOutcome, ApiError> {
    let event = event(app, id).await?;
    let conflict = |message: String| ApiError::conflict(ErrorCode::CannotReprocess, message);
    let live = app
        .registry
        .get(&event.source)
        .ok_or_else(|| conflict(format!("source {:?} is no longer configured", event.source)))?;
    let source = &live.source;
    let body = event
        .body
        .ok_or_else(|| conflict(format!("event {id} was redacted by an erasure")))?;
    let read = json::parse_delivery(&body).map_err(|_| conflict(format!("event {id} has no JSON body to map")))?;
    let mapped = source.kind.map(&read, &source.settings);
    let outcome = app
        .store
        .reprocess(id.to_owned(), mapped, Publish::Yes)
        .await?
        .ok_or_else(|| no_event(id))?;
    record(app, principal, "event.reprocess", id).await;
    tracing::info!(event_id = %id, status = outcome_label(&outcome), "event reprocessed");
    Ok(outcome)
}

/// A subscription to create, as the API and the console take it.
pub struct NewSubscription {
    pub url: String,
    /// Generated when not given.
    pub secret: Option<String>,
    /// Empty: every change.
    pub actions: Vec<String>,
    /// Empty: every source's.
    pub sources: Vec<String>,
    /// `customer`, `person` (SPEC §11); empty: `customer`.
    pub types: Vec<String>,
}

/// Creates a subscription; it and its secret, shown this once. A URL is
/// refused if it can be without DNS (SPEC §15, §16).
pub async fn create_subscription(app: &AppState, new: NewSubscription) -> Result<(Subscription, String), ApiError> {
    let url = reqwest::Url::parse(new.url.trim()).map_err(|_| invalid(Refused::Scheme.to_string()))?;
    app.destinations.check_url(&url).map_err(|refused| match refused {
        Refused::NotAllowed => invalid("url names a non-public address, which [delivery] allow_private does not list"),
        other => invalid(other.to_string()),
    })?;
    let secret = match new.secret {
        Some(secret) => {
            signing::check(&secret).map_err(|e| invalid(e.to_string()))?;
            secret
        }
        None => signing::generate_secret(),
    };
    let actions = new
        .actions
        .iter()
        .map(|a| Action::parse(a).ok_or_else(|| invalid("actions may hold created, updated, merged and deleted")))
        .collect::<Result<_, _>>()?;
    if let Some(unknown) = new.sources.iter().find(|s| app.registry.get(s).is_none()) {
        return Err(invalid(format!("sources: no source named {unknown:?} is configured")));
    }
    if new.types.iter().any(|t| t != "customer" && t != "person") {
        return Err(invalid("types may hold customer and person"));
    }
    let subscription = Subscription {
        id: format!("sub_{}", uuid::Uuid::now_v7().simple()),
        url: url.to_string(),
        secret: secret.clone(),
        actions,
        sources: new.sources,
        types: new.types,
        enabled: true,
        created_at: UtcMillis::now(),
    };
    app.store.create_subscription(subscription.clone()).await?;
    tracing::info!(subscription = %subscription.id, "subscription created");
    Ok((subscription, secret))
}

/// Enables a subscription (which also sends what waited) or disables it.
pub async fn set_subscription_enabled(app: &AppState, id: &str, enabled: bool) -> Result<Subscription, ApiError> {
    let subscription = app.store.set_subscription_enabled(id.to_owned(), enabled).await?;
    let subscription = subscription.ok_or_else(|| no_subscription(id))?;
    tracing::info!(subscription = %id, enabled, "subscription updated");
    Ok(subscription)
}

/// A message status filter: `None` for any.
pub fn message_status(status: Option<&str>) -> Result<Option<MessageStatus>, ApiError> {
    status
        .map(|s| {
            MessageStatus::parse(s)
                .ok_or_else(|| ApiError::bad_parameter("status must be pending, delivered, dead or cancelled"))
        })
        .transpose()
}

/// A page of a subscription's messages, with their attempts.
pub async fn messages(app: &AppState, query: MessageQuery) -> Result<Page<Message>, ApiError> {
    if app.store.subscription(query.subscription_id.clone()).await?.is_none() {
        return Err(no_subscription(&query.subscription_id));
    }
    Ok(app.store.messages(query).await?)
}

/// Makes a message pending again, due now.
pub async fn retry(app: &AppState, id: &str) -> Result<(), ApiError> {
    match app.store.retry_message(id.to_owned()).await? {
        Retry::Queued => Ok(()),
        Retry::NotFound => Err(ApiError::not_found(format!("no message {id:?}"))),
        Retry::Cancelled => Err(ApiError::conflict(
            ErrorCode::Cancelled,
            format!("message {id:?} was cancelled by an erasure and is never sent again"),
        )),
    }
}

/// Queues again every change since `since` that a subscription wants;
/// how many messages.
pub async fn replay(app: &AppState, principal: &Principal, id: &str, since: UtcMillis) -> Result<u64, ApiError> {
    let queued = app
        .store
        .replay(id.to_owned(), since)
        .await?
        .ok_or_else(|| no_subscription(id))?;
    record(app, principal, "subscription.replay", id).await;
    tracing::info!(subscription = %id, messages = queued, "replay queued");
    Ok(queued)
}

/// Creates an API key with `scopes`; the key, shown this once, and what
/// the store keeps (its digest).
pub async fn create_key(
    app: &AppState,
    principal: &Principal,
    name: &str,
    scopes: &[String],
) -> Result<(String, StoredKey), ApiError> {
    let name = name.trim().to_owned();
    if name.is_empty() || name.len() > 200 {
        return Err(invalid("name: must be 1 to 200 characters"));
    }
    let mut parsed = Vec::new();
    for scope in scopes {
        let scope = Scope::parse(scope).ok_or_else(|| invalid("scopes: each must be read, write, erase or admin"))?;
        if !parsed.contains(&scope) {
            parsed.push(scope);
        }
    }
    if parsed.is_empty() {
        return Err(invalid("scopes: give at least one of read, write, erase, admin"));
    }
    parsed.sort();
    let key = random_secret("ck_");
    let stored = StoredKey {
        id: format!("key_{}", uuid::Uuid::now_v7().simple()),
        name,
        scopes: parsed.iter().map(|s| s.as_str().to_owned()).collect(),
        created_at: UtcMillis::now(),
        digest: digest(&key),
    };
    app.store.create_key(stored.clone()).await?;
    record(app, principal, "key.create", &stored.id).await;
    tracing::info!(key = %stored.id, "API key created");
    Ok((key, stored))
}

/// Revokes an API key from the next request on (its console sessions
/// with it).
pub async fn revoke_key(app: &AppState, principal: &Principal, id: &str) -> Result<(), ApiError> {
    if !app.store.delete_key(id.to_owned()).await? {
        return Err(ApiError::not_found(format!("no key {id:?}")));
    }
    record(app, principal, "key.revoke", id).await;
    tracing::info!(key = %id, "API key revoked");
    Ok(())
}

fn no_subscription(id: &str) -> ApiError {
    ApiError::not_found(format!("no subscription {id:?}"))
}

fn no_customer(id: &str) -> ApiError {
    ApiError::not_found(format!("no customer {id:?}"))
}

fn no_event(id: &str) -> ApiError {
    ApiError::not_found(format!("no event {id:?}"))
}

/// A person (SPEC §11) by its id or an id a join absorbed, with the id
/// asked for when it was absorbed.
pub async fn person(app: &AppState, id: &str) -> Result<(StoredPerson, Option<String>), ApiError> {
    app.store
        .person(id.to_owned())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no person {id:?}")))
}

/// The person a customer belongs to; `None` until the resolver has seen it.
pub async fn person_of(app: &AppState, customer_id: &str) -> Result<Option<StoredPerson>, ApiError> {
    Ok(app.store.person_of(customer_id.to_owned()).await?)
}

/// A person's golden profile, read from its customers' records now.
pub async fn golden_profile(app: &AppState, person: &StoredPerson) -> Result<GoldenProfile, ApiError> {
    let records = app.store.records(person.customer_ids.clone()).await?;
    let members: Vec<&Customer> = records.iter().collect();
    Ok(golden(&members))
}

/// A decision as kept; the resolver applies it in its next step.
#[derive(Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    pub customers: [String; 2],
    /// `null` once withdrawn.
    pub decision: Option<Decision>,
    pub decided_at: UtcMillis,
    /// The review it answered, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<String>,
}

/// An operator's decision on a review; a review decided before answers
/// its first decision.
pub async fn decide_review(
    app: &AppState,
    principal: &Principal,
    id: &str,
    decision: Decision,
) -> Result<DecisionView, ApiError> {
    let decision = NewDecision {
        customers: [String::new(), String::new()],
        decision,
        at: UtcMillis::now(),
        review: Some(id.to_owned()),
    };
    keep_decision(app, principal, decision).await
}

/// An operator's decision about two customers without a review: `link`
/// or `separate` them, or (`None`) withdraw the decision taken about them.
pub async fn decide_pair(
    app: &AppState,
    principal: &Principal,
    a: String,
    b: String,
    decision: Option<Decision>,
) -> Result<DecisionView, ApiError> {
    if a == b {
        return Err(invalid("customers: give two different customer ids"));
    }
    let found = app.store.records(vec![a.clone(), b.clone()]).await?;
    for id in [&a, &b] {
        if !found.iter().any(|c| &c.id == id) {
            return Err(no_customer(id));
        }
    }
    let customers = ordered(a, b);
    let Some(decision) = decision else {
        return withdraw_decision(app, principal, customers).await;
    };
    let decision = NewDecision {
        customers,
        decision,
        at: UtcMillis::now(),
        review: None,
    };
    keep_decision(app, principal, decision).await
}

async fn withdraw_decision(
    app: &AppState,
    principal: &Principal,
    customers: [String; 2],
) -> Result<DecisionView, ApiError> {
    let at = UtcMillis::now();
    if !app.store.withdraw(customers.clone(), at).await? {
        return Err(ApiError::not_found("no decision about these customers to withdraw"));
    }
    record(app, principal, "person.withdraw", &pair_target(&customers)).await;
    Ok(DecisionView {
        customers,
        decision: None,
        decided_at: at,
        review: None,
    })
}

/// How the audit log names two customers: never their ids.
fn pair_target(customers: &[String; 2]) -> String {
    format!("{}+{}", erased_target(&customers[0]), erased_target(&customers[1]))
}

async fn keep_decision(app: &AppState, principal: &Principal, decision: NewDecision) -> Result<DecisionView, ApiError> {
    let review = decision.review.clone();
    match app.store.decide(decision).await? {
        Decided::Kept(kept) => {
            let action = match kept.decision {
                Decision::Link => "person.link",
                Decision::Separate => "person.separate",
            };
            record(app, principal, action, &pair_target(&kept.customers)).await;
            Ok(DecisionView {
                customers: kept.customers,
                decision: Some(kept.decision),
                decided_at: kept.decided_at,
                review,
            })
        }
        Decided::Already(first) => Ok(DecisionView {
            customers: first.customers,
            decision: first.decision,
            decided_at: first.decided_at.unwrap_or(first.created_at),
            review,
        }),
        Decided::Separated => Err(ApiError::conflict(
            ErrorCode::Separated,
            "an operator separated these customers: that decision stands",
        )),
        Decided::NoReview => Err(ApiError::not_found(format!(
            "no review {:?}",
            review.unwrap_or_default()
        ))),
    }
}
