//! `/api/v1/customers`: the customer directory and each customer's
//! history (SPEC §5), and erasure. Reads go straight to the store.

use std::sync::Arc;

use aide::axum::ApiRouter;
use aide::axum::routing::get_with;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use schemars::JsonSchema;
use serde::Deserialize;

use super::api::{IdPath, PageParams, PageView, admin, parse_bool, parse_time};
use super::auth::Principal;
use super::error::ApiError;
use super::extract::ApiQuery;
use super::{AppState, operations};
use crate::model::{Customer, UtcMillis};
use crate::store::{CustomerQuery, HistoryEntry, HistoryQuery};

pub fn router() -> ApiRouter<Arc<AppState>> {
    const NOT_FOUND: [StatusCode; 1] = [StatusCode::NOT_FOUND];
    ApiRouter::new()
        .api_route(
            "/customers",
            get_with(list_customers, |op| {
                admin(op, "listCustomers", "The directory, filtered, in pages", &[])
            }),
        )
        .api_route(
            "/customers/{id}",
            get_with(get_customer, |op| admin(op, "getCustomer", "One customer", &NOT_FOUND)).delete_with(
                erase_customer,
                |op| {
                    admin(
                        op,
                        "eraseCustomer",
                        "Erases a customer's personal data everywhere it is kept",
                        &NOT_FOUND,
                    )
                    .response::<204, ()>()
                },
            ),
        )
        .api_route(
            "/customers/{id}/events",
            get_with(customer_history, |op| {
                admin(
                    op,
                    "getCustomerHistory",
                    "A customer's history, oldest first",
                    &NOT_FOUND,
                )
            }),
        )
}

#[derive(Deserialize, JsonSchema)]
pub struct GetParams {
    /// Follows `mergedInto` to the surviving record (`true` or `false`).
    #[schemars(with = "Option<bool>")]
    resolve: Option<String>,
}

async fn get_customer(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
    ApiQuery(params): ApiQuery<GetParams>,
) -> Result<Json<Customer>, ApiError> {
    let resolve = parse_bool("resolve", params.resolve.as_deref())?.unwrap_or(false);
    Ok(Json(operations::customer(&app, &id, resolve).await?))
}

async fn erase_customer(
    State(app): State<Arc<AppState>>,
    Extension(principal): Extension<Principal>,
    Path(IdPath { id }): Path<IdPath>,
) -> Result<StatusCode, ApiError> {
    operations::erase(&app, &principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    /// A source's configured name.
    source: Option<String>,
    account: Option<String>,
    email: Option<String>,
    /// In any format, matched on E.164; read with the `default_country`
    /// of `source` when given, else of the first configured source.
    phone: Option<String>,
    business_id: Option<String>,
    /// Records whose first, middle and last names hold every word of this
    /// (`ada lovelace`, `Lovelace`): any case and order, accents and
    /// punctuation ignored.
    name: Option<String>,
    /// Records whose `changedAt` is at or after this time.
    #[schemars(with = "Option<UtcMillis>")]
    changed_since: Option<String>,
    /// Lists merged records too (`true` or `false`).
    #[schemars(with = "Option<bool>")]
    include_merged: Option<String>,
    #[serde(flatten)]
    page: PageParams,
}

async fn list_customers(
    State(app): State<Arc<AppState>>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<PageView<Customer>>, ApiError> {
    let phone = params
        .phone
        .as_deref()
        .map(|raw| operations::phone_filter(&app, params.source.as_deref(), raw))
        .transpose()?;
    let changed_since = parse_time("changedSince", params.changed_since.as_deref())?;
    let query = CustomerQuery {
        include_merged: parse_bool("includeMerged", params.include_merged.as_deref())?.unwrap_or(false),
        limit: params.page.limit()?,
        after: params.page.after()?,
        source: params.source,
        account: params.account,
        email: params.email,
        phone,
        business_id: params.business_id,
        name: params.name,
        changed_since,
    };
    Ok(Json(app.store.customers(query).await?.into()))
}

async fn customer_history(
    State(app): State<Arc<AppState>>,
    Path(IdPath { id }): Path<IdPath>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<PageView<HistoryEntry>>, ApiError> {
    let query = HistoryQuery {
        customer_id: id.clone(),
        limit: page.limit()?,
        after: page.after()?,
    };
    Ok(Json(operations::history(&app, query).await?.into()))
}
