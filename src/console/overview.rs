//! The overview (`/console`): how deliveries went per source over the
//! last 24 hours (a chart drawn here as SVG), which sources have gone
//! quiet, and what waits to be sent.
//!
//! Everything on it is read from counters kept as deliveries happen (the
//! sources' hourly stats) and from the outbox's backlog, never by
//! counting a large table: dead messages are counted up to
//! [`Backlog::DEAD_COUNTED`], and shown as "1,000+" past that.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::Response;
use maud::{Markup, html};

use super::layout::{self, ago};
use super::session::Session;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::http::sources::{self, SourceView};
use crate::model::UtcMillis;
use crate::outbound::Backlog;
use crate::store::sources::{HourlyCount, hour_of};

/// A source without a delivery for this long has gone quiet.
const QUIET_MS: i64 = 24 * 3600 * 1000;

/// The outcomes the chart shows, in its order, with their CSS class.
const OUTCOMES: [(&str, &str); 5] = [
    ("accepted", "ok"),
    ("duplicate", "dup"),
    ("ignored", "ign"),
    ("quarantined", "quar"),
    ("rejected", "rej"),
];

pub async fn page(State(app): State<Arc<AppState>>, Extension(session): Extension<Session>) -> Response {
    match read(&app).await {
        Ok(content) => layout::page(&session, "Overview", content),
        Err(error) => layout::failure(Some(&session), &error),
    }
}

async fn read(app: &AppState) -> Result<Markup, ApiError> {
    let sources = sources::all(app).await?;
    let backlog = app.store.backlog().await.map_err(|e| {
        tracing::error!(error = %e, "cannot read the outbound backlog");
        ApiError::from(crate::store::StoreError::Unavailable("the outbound backlog".into()))
    })?;
    let size = app.store.size_bytes().await?;
    let hourly = app.store.hourly_stats(last_24_hours().swap_remove(0)).await?;
    let total = |pick: fn(&SourceView) -> u64| sources.iter().map(pick).sum::<u64>();
    let accepted = total(|s| s.stats.last24h.accepted);
    let quarantined = total(|s| s.stats.last24h.quarantined);
    let rejected = total(|s| s.stats.last24h.rejected);
    let pending: u64 = backlog.pending.iter().map(|(_, n)| n).sum();
    let now = UtcMillis::now().as_millisecond();
    let quiet: Vec<&SourceView> = sources
        .iter()
        .filter(|s| {
            s.stats
                .last_delivery_at
                .is_none_or(|at| now - at.as_millisecond() > QUIET_MS)
        })
        .collect();
    Ok(html! {
        h1 { "Overview" }
        section.cards aria-label="Last 24 hours" {
            (card("Accepted, 24 h", accepted, "/console/deliveries?status=accepted", ""))
            (card("Quarantined, 24 h", quarantined, "/console/quarantine", if quarantined > 0 { "warn" } else { "" }))
            (card("Rejected, 24 h", rejected, "/console/sources", if rejected > 0 { "warn" } else { "" }))
            (card("Waiting to be sent", pending + backlog.unfanned, "/console/subscriptions", if pending > 0 { "warn" } else { "" }))
            (card("Dead messages", dead(backlog.dead), "/console/subscriptions", if backlog.dead > 0 { "warn" } else { "" }))
        }
        p.muted { "Store: " (megabytes(size)) }
        section {
            h2 { "Deliveries per source and hour, last 24 hours" }
            (chart(&sources, &hourly))
        }
        section {
            h2 { "Sources" }
            @if quiet.is_empty() {
                p.notice.good { "Every source delivered within the last 24 hours." }
            } @else {
                p.notice.warn {
                    "Quiet for 24 hours or more: "
                    @for (i, source) in quiet.iter().enumerate() {
                        @if i > 0 { ", " }
                        strong { (source.name) }
                    }
                }
            }
            div.scroll {
                table {
                    thead { tr { th { "Source" } th { "Kind" } th { "State" } th { "Last delivery" } th.num { "Accepted" } th.num { "Quarantined" } th.num { "Rejected" } } }
                    tbody {
                        @for source in &sources {
                            tr {
                                td { (source.name) }
                                td { (source.spec.kind) }
                                td { @if source.enabled { span.badge.good { "enabled" } } @else { span.badge.warn { "paused" } } }
                                td {
                                    @match source.stats.last_delivery_at {
                                        Some(at) => span title=(at.to_string()) { (ago(at)) },
                                        None => span.muted { "never" },
                                    }
                                }
                                td.num { (source.stats.last24h.accepted) }
                                td.num { (source.stats.last24h.quarantined) }
                                td.num { (source.stats.last24h.rejected) }
                            }
                        }
                    }
                }
            }
        }
        section {
            h2 { "Outbound" }
            @if backlog.unfanned > 0 {
                p { (backlog.unfanned) " changes not yet made into messages." }
            }
            @if backlog.pending.is_empty() {
                p.muted { "No subscriptions." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th { "Subscription" } th.num { "Pending messages" } th { } } }
                        tbody {
                            @for (subscription, pending) in &backlog.pending {
                                tr {
                                    td.mono { a href={ "/console/subscriptions/" (layout::encode(subscription)) } { (subscription) } }
                                    td.num { (pending) }
                                    td { a href={ "/console/subscriptions/" (layout::encode(subscription)) "?status=dead" } { "dead messages" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

/// A size in megabytes, one decimal.
fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// A count of dead messages as shown: "1,000+" past the most counted.
fn dead(count: u64) -> String {
    if count >= Backlog::DEAD_COUNTED {
        "1,000+".to_owned()
    } else {
        count.to_string()
    }
}

fn card(label: &str, value: impl maud::Render, href: &str, tone: &str) -> Markup {
    html! {
        a.card.(tone) href=(href) {
            span.value { (value) }
            span.label { (label) }
        }
    }
}

/// The last 24 hourly buckets, oldest first: `YYYY-MM-DDTHH`.
fn last_24_hours() -> Vec<String> {
    let now = jiff::Timestamp::now();
    (0..24)
        .rev()
        .map(|back| {
            let at = now
                .checked_sub(jiff::SignedDuration::from_hours(back))
                .unwrap_or(jiff::Timestamp::MIN);
            hour_of(UtcMillis::from_timestamp(at))
        })
        .collect()
}

/// Each source's deliveries per hour over the last 24, a row of stacked
/// columns per source, all on one scale; drawn on the server as SVG (no
/// script, no library). Each row's drawing stretches to the panel's width
/// (its columns widen; the names and times beside it are text, which does
/// not).
fn chart(sources: &[SourceView], hourly: &[HourlyCount]) -> Markup {
    const COLUMN: f64 = 10.0;
    const GAP: f64 = 2.5;
    const BAR: f64 = 34.0;
    let hours = last_24_hours();
    let mut counts: HashMap<(&str, &str), [u64; 5]> = HashMap::new();
    for (source, hour, outcome, n) in hourly {
        if let Some(i) = OUTCOMES.iter().position(|(o, _)| o == outcome) {
            counts.entry((source.as_str(), hour.as_str())).or_default()[i] += n;
        }
    }
    let busiest = counts.values().map(|c| c.iter().sum::<u64>()).max().unwrap_or(0).max(1);
    let width = COLUMN * hours.len() as f64;
    let bars = |source: &str| -> Vec<Bar> {
        let mut bars = Vec::new();
        for (column, hour) in hours.iter().enumerate() {
            let Some(count) = counts.get(&(source, hour.as_str())) else {
                continue;
            };
            let mut y = BAR;
            for (n, (outcome, class)) in count.iter().zip(OUTCOMES) {
                if *n > 0 {
                    let h = (*n as f64 / busiest as f64 * BAR).max(1.5);
                    y -= h;
                    bars.push(Bar {
                        x: column as f64 * COLUMN,
                        y,
                        height: h,
                        outcome,
                        class,
                        n: *n,
                        hour: hour.clone(),
                    });
                }
            }
        }
        bars
    };
    html! {
        figure.chart aria-label="Deliveries per source and hour, last 24 hours" {
            div.rows {
                @for source in sources {
                    span.source { (source.name) }
                    svg viewBox={ "0 0 " (width) " " (BAR) } preserveAspectRatio="none" role="img"
                        aria-label={ (source.name) ": deliveries per hour" } {
                        line.axis x1="0" x2=(width) y1=(BAR) y2=(BAR) vector-effect="non-scaling-stroke" {}
                        @for bar in bars(&source.name) {
                            rect class=(bar.class) x=(format!("{:.1}", bar.x)) y=(format!("{:.1}", bar.y)) width=(COLUMN - GAP) height=(format!("{:.1}", bar.height)) {
                                title { (bar.hour) ":00 UTC, " (bar.outcome) ": " (bar.n) }
                            }
                        }
                    }
                }
                span.hours { span { "24 h ago" } span { "now" } }
            }
            figcaption.legend {
                @for (outcome, class) in OUTCOMES {
                    span { i.swatch.(class) {} (outcome) }
                }
                span { "busiest hour: " (busiest) }
            }
        }
    }
}

struct Bar {
    x: f64,
    y: f64,
    height: f64,
    outcome: &'static str,
    class: &'static str,
    n: u64,
    hour: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_messages_past_a_thousand_show_as_1000_plus() {
        assert_eq!(dead(0), "0");
        assert_eq!(dead(1000), "1000");
        assert_eq!(dead(Backlog::DEAD_COUNTED), "1,000+");
    }
}
