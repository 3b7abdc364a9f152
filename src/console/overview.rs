//! The overview (`/console`): how deliveries went per source over the
//! last 24 hours (a chart drawn here as SVG), which sources have gone
//! quiet, and what waits to be sent.
//!
//! Everything on it is read from counters kept as deliveries happen (the
//! sources' hourly stats) and from the outbox's backlog, never by
//! counting a large table.

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
        }
        p.muted { "Store: " (megabytes(size)) }
        section {
            h2 { "Deliveries per source, last 24 hours" }
            (chart(&sources))
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

fn card(label: &str, value: u64, href: &str, tone: &str) -> Markup {
    html! {
        a.card.(tone) href=(href) {
            span.value { (value) }
            span.label { (label) }
        }
    }
}

/// One bar per source, its outcomes stacked, scaled to the busiest
/// source; drawn on the server as SVG (no script, no library).
fn chart(sources: &[SourceView]) -> Markup {
    const ROW: usize = 28;
    const LABEL: f64 = 100.0;
    const WIDTH: f64 = 420.0;
    let counts = |s: &SourceView| {
        let l = &s.stats.last24h;
        [l.accepted, l.duplicate, l.ignored, l.quarantined, l.rejected]
    };
    let busiest = sources
        .iter()
        .map(|s| counts(s).iter().sum::<u64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let scale = (WIDTH - LABEL - 50.0) / busiest as f64;
    let rows: Vec<(&str, Vec<Bar>, f64, u64)> = sources
        .iter()
        .map(|source| {
            let mut x = LABEL;
            let mut bars = Vec::new();
            for (n, (outcome, class)) in counts(source).into_iter().zip(OUTCOMES) {
                if n > 0 {
                    let width = (n as f64 * scale).max(1.0);
                    bars.push(Bar {
                        x,
                        width,
                        outcome,
                        class,
                        n,
                    });
                    x += width;
                }
            }
            (source.name.as_str(), bars, x, counts(source).iter().sum())
        })
        .collect();
    let height = ROW * rows.len().max(1) + 8;
    html! {
        figure.chart {
            svg viewBox={ "0 0 " (WIDTH) " " (height) } role="img" aria-label="Deliveries per source and outcome, last 24 hours" {
                @for (row, (name, bars, end, total)) in rows.iter().enumerate() {
                    @let y = row * ROW + 4;
                    text.label x="0" y=(y + 17) { (name) }
                    @for bar in bars {
                        rect class=(bar.class) x=(format!("{:.1}", bar.x)) y=(y) width=(format!("{:.1}", bar.width)) height="20" {
                            title { (bar.outcome) ": " (bar.n) }
                        }
                    }
                    text.count x=(format!("{:.1}", end + 6.0)) y=(y + 17) { (total) }
                }
            }
            figcaption.legend {
                @for (outcome, class) in OUTCOMES {
                    span { i.swatch.(class) {} (outcome) }
                }
            }
        }
    }
}

struct Bar {
    x: f64,
    width: f64,
    outcome: &'static str,
    class: &'static str,
    n: u64,
}
