//! How fast the persons resolver (`clientele::resolver`) keeps up with
//! the directory on the embedded store (`bench/persons/resolver.sh`).
//!
//! Deliveries are Clientele envelopes of generated families (three
//! records a human, with typos and missing fields, sharing emails, names,
//! birth dates and postcodes with others), kept through the store's
//! `Import` role in batches as a running server keeps them, with the
//! resolver following the feed in the same process:
//!
//! 1. `--base N` records, then the resolver starts and resolves them;
//! 2. throughput: `--changes M` more (new records and updates of the base
//!    ones) as fast as the store takes them; changes resolved per second
//!    is M over the time from the first to the last one resolved;
//! 3. lag: `--rate R` deliveries/s for `--seconds S`, the resolver's lag
//!    (the age of the oldest change not resolved, as `/metrics` reports
//!    it) sampled every 50 ms: p50, p99, max.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clientele::clock::Clock;
use clientele::model::{Country, UtcMillis};
use clientele::persons::Settings;
use clientele::sources::{Kind, SourceSettings, delivery};
use clientele::store::persons::Persons;
use clientele::store::sqlite::SqliteStore;
use clientele::store::{Import, Publish, Store};
use serde_json::{Value, json};
use tokio::sync::watch;

const GIVEN: [&str; 12] = [
    "mary", "susan", "robert", "thomas", "ana", "li", "james", "olivia", "noah", "emma", "liam", "ava",
];
const FAMILY: [&str; 10] = [
    "lee", "smith", "nguyen", "garcia", "okafor", "brown", "quill", "patel", "kim", "jones",
];

/// Record `n` (of human `n / 3`), version `v`: names with a typo now and
/// then, an email on two of three records, a postcode shared by many.
fn envelope(n: usize, v: usize) -> Value {
    let human = n / 3;
    let given = GIVEN[human % GIVEN.len()];
    let family = format!("{}{}", FAMILY[(human / 12) % FAMILY.len()], human / 120);
    let given = if (n + v).is_multiple_of(7) {
        format!("{given}e")
    } else {
        given.to_owned()
    };
    let mut payload = json!({
        "customerId": format!("r{n}"),
        "updatedAt": jiff::Timestamp::from_second(1_704_067_200 + v as i64).expect("a time").to_string(),
        "firstName": given,
        "lastName": family,
        "birthDate": format!("19{:02}-{:02}-{:02}", 40 + human % 60, 1 + human % 12, 1 + human % 28),
        "addresses": [{"kind": "home", "street1": format!("{} Main Street", 1 + human % 500),
                       "postalCode": format!("{}", 2000 + human % 300)}],
    });
    if n % 3 != 2 {
        payload["email"] = json!(format!("human{human}@mail.org"));
    }
    json!({"id": format!("evt-{n}-{v}"), "type": "customer", "action": "updated", "payload": payload})
}

fn settings() -> SourceSettings {
    SourceSettings {
        name: "bench".into(),
        default_country: Country::parse("US"),
        timezone: jiff::tz::TimeZone::UTC,
        account: None,
    }
}

async fn keep(store: &SqliteStore, bodies: Vec<Value>) -> anyhow::Result<()> {
    let settings = settings();
    let deliveries = bodies
        .into_iter()
        .map(|b| {
            delivery::delivery(
                Kind::Clientele,
                &settings,
                |_| None,
                b.to_string().into_bytes(),
                UtcMillis::now(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    store.ingest_batch(deliveries, Publish::Yes).await?;
    Ok(())
}

/// Polls every 20 ms: counting what is unresolved reads the backlog's
/// outbox rows, and polling more often took a third of the CPU the
/// resolver is measured with.
async fn wait_resolved(store: &SqliteStore) -> anyhow::Result<()> {
    while store.unresolved().await?.0 > 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => args.get(i + 1).context("a value")?.parse().context("a number"),
        None => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (base, changes, rate, seconds) = (
        arg("--base", 30_000)?,
        arg("--changes", 20_000)?,
        arg("--rate", 1000)?,
        arg("--seconds", 20)?,
    );
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("clientele.db"), Clock::system())?);
    for chunk in (0..base).collect::<Vec<_>>().chunks(500) {
        keep(&store, chunk.iter().map(|&n| envelope(n, 0)).collect()).await?;
    }
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let resolver = tokio::spawn(clientele::resolver::run(
        store.clone() as Arc<dyn Store>,
        Settings::default(),
        Clock::system(),
        stopped,
    ));
    wait_resolved(&store).await?;
    let took = started.elapsed().as_secs_f64();
    println!(
        "backlog: {base} records resolved in {took:.2} s (index loaded, then resolved): {:.0} changes resolved/s",
        base as f64 / took
    );

    // Updates of base records and new records, alternating.
    let started = Instant::now();
    let bodies: Vec<Value> = (0..changes)
        .map(|i| {
            if i % 2 == 0 {
                envelope(i % base, 1)
            } else {
                envelope(base + i, 0)
            }
        })
        .collect();
    for chunk in bodies.chunks(500) {
        keep(&store, chunk.to_vec()).await?;
    }
    let kept = started.elapsed();
    wait_resolved(&store).await?;
    let resolved = started.elapsed();
    println!(
        "throughput: {changes} changes kept in {:.2} s, resolved by {:.2} s: {:.0} changes resolved/s",
        kept.as_secs_f64(),
        resolved.as_secs_f64(),
        changes as f64 / resolved.as_secs_f64()
    );

    // Paced deliveries, the lag sampled meanwhile.
    let per_tick = rate / 20;
    let mut lags = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut n = base + 2 * changes;
    let paced = Instant::now();
    for _ in 0..seconds * 20 {
        tick.tick().await;
        keep(
            &store,
            (n..n + per_tick).map(|i| envelope(i % (base + changes), i)).collect(),
        )
        .await?;
        n += per_tick;
        let (_, oldest) = store.unresolved().await?;
        lags.push(oldest.map_or(0, |at| UtcMillis::now().as_millisecond() - at.as_millisecond()));
    }
    let achieved = (seconds * 20 * per_tick) as f64 / paced.elapsed().as_secs_f64();
    lags.sort_unstable();
    let at = |q: f64| lags[((lags.len() - 1) as f64 * q) as usize];
    println!(
        "lag at {rate} deliveries/s asked ({achieved:.0} kept) for {seconds} s: p50 {} ms, p99 {} ms, max {} ms ({} samples)",
        at(0.5),
        at(0.99),
        lags.last().copied().unwrap_or(0),
        lags.len()
    );
    let _ = stop.send(true);
    resolver.await?;
    store.close().await;
    Ok(())
}
