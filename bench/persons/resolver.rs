//! How fast the persons resolver (`clientele::resolver`) keeps up with
//! the directory on the embedded store (`bench/persons/resolver.sh`).
//!
//! Deliveries are Clientele envelopes of a generated directory (three
//! records a human, two of them with slips: a typo, a short name, a
//! missing field; humans drawn from name tables with their skew, birth
//! dates over decades and thousands of postcodes, so that strangers stay
//! strangers; no households, which `bench/persons/main.rs` measures), kept
//! through the store's `Import` role in batches as a running server keeps
//! them, with the resolver following the feed in the same process:
//!
//! 1. `--base N` records, then the resolver starts and resolves them (how
//!    many records a person it made, and how many persons join strangers,
//!    printed after);
//! 2. throughput: `--changes M` more (new records and updates of the base
//!    ones) as fast as the store takes them; changes resolved per second
//!    is M over the time from the first to the last one resolved;
//! 3. lag: `--rate R` deliveries/s for `--seconds S`, the resolver's lag
//!    (the age of the oldest change not resolved, as `/metrics` reports
//!    it) sampled every 50 ms: p50, p99, max.

use std::collections::HashSet;
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

mod names;

use names::FAMILY;

/// Given names by sex, most common first (the order of US birth-name
/// tables); a name's weight falls with its rank.
const GIVEN: [&[&str]; 2] = [
    &[
        "mary",
        "patricia",
        "jennifer",
        "linda",
        "elizabeth",
        "barbara",
        "susan",
        "jessica",
        "sarah",
        "karen",
        "lisa",
        "nancy",
        "betty",
        "margaret",
        "sandra",
        "ashley",
        "kimberly",
        "emily",
        "donna",
        "michelle",
        "carol",
        "amanda",
        "dorothy",
        "melissa",
        "deborah",
        "stephanie",
        "rebecca",
        "sharon",
        "laura",
        "cynthia",
        "kathleen",
        "amy",
        "angela",
        "shirley",
        "anna",
        "brenda",
        "pamela",
        "emma",
        "nicole",
        "helen",
        "samantha",
        "katherine",
        "christine",
        "debra",
        "rachel",
        "carolyn",
        "janet",
        "catherine",
        "maria",
        "heather",
    ],
    &[
        "james",
        "robert",
        "john",
        "michael",
        "david",
        "william",
        "richard",
        "joseph",
        "thomas",
        "charles",
        "christopher",
        "daniel",
        "matthew",
        "anthony",
        "mark",
        "donald",
        "steven",
        "paul",
        "andrew",
        "joshua",
        "kenneth",
        "kevin",
        "brian",
        "george",
        "timothy",
        "ronald",
        "edward",
        "jason",
        "jeffrey",
        "ryan",
        "jacob",
        "gary",
        "nicholas",
        "eric",
        "jonathan",
        "stephen",
        "larry",
        "justin",
        "scott",
        "brandon",
        "benjamin",
        "samuel",
        "gregory",
        "alexander",
        "frank",
        "patrick",
        "raymond",
        "jack",
        "dennis",
        "jerry",
    ],
];

/// Short forms of given names that the matcher knows (`persons::names`).
const NICK: &[(&str, &str)] = &[
    ("robert", "bob"),
    ("william", "bill"),
    ("elizabeth", "liz"),
    ("michael", "mike"),
    ("james", "jim"),
    ("richard", "rick"),
    ("joseph", "joe"),
    ("thomas", "tom"),
    ("daniel", "dan"),
    ("christopher", "chris"),
    ("matthew", "matt"),
    ("anthony", "tony"),
    ("katherine", "kate"),
    ("andrew", "andy"),
    ("edward", "ed"),
    ("benjamin", "ben"),
    ("deborah", "debbie"),
    ("gregory", "greg"),
];

const STREETS: &[&str] = &["st", "ave", "rd", "lane", "drive", "court"];
const DOMAINS: &[&str] = &["gmail.com", "yahoo.com", "outlook.com", "mail.org", "icloud.com"];

/// A small deterministic generator (SplitMix64): a record is the same
/// whenever it is made.
struct Rng(u64);

impl Rng {
    fn seeded(parts: &[usize]) -> Self {
        let mut rng = Rng(0x5EED);
        for &p in parts {
            rng.0 ^= p as u64;
            rng.next();
        }
        rng
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    /// One of `from`, the one at rank r weighing 1 / (r + `flat`): the
    /// skew of name tables, where the first names are tens of times as
    /// common as those a few hundred ranks down.
    fn ranked<'a>(&mut self, from: &[&'a str], flat: usize) -> &'a str {
        let weight = |r: usize| 1.0 / (r + flat) as f64;
        let total: f64 = (0..from.len()).map(weight).sum();
        let mut at = (self.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        for (r, name) in from.iter().enumerate() {
            at -= weight(r);
            if at < 0.0 {
                return name;
            }
        }
        from[from.len() - 1]
    }
}

/// One letter of `name` doubled, dropped or swapped with its neighbour.
fn typo(rng: &mut Rng, name: &str) -> String {
    let mut chars: Vec<char> = name.chars().collect();
    if chars.len() < 3 {
        return name.to_owned();
    }
    let at = 1 + rng.below(chars.len() - 2);
    match rng.below(3) {
        0 => chars.insert(at, chars[at]),
        1 => {
            chars.remove(at);
        }
        _ => chars.swap(at, at + 1),
    }
    chars.into_iter().collect()
}

/// Record `n` (of human `n / 3`), version `v`. A human is a given name and
/// a family name drawn from the tables above, a birth date within 1940–2007,
/// one of 3,000 postcodes, an email and, for half, a phone: strangers stay
/// strangers. Its first record is clean (at version 0); the other two, and
/// any update, carry one or two slips each: a typo in a name, a short form
/// of the given name, day and month swapped, a missing email, phone, birth
/// date or address.
fn envelope(n: usize, v: usize) -> Value {
    let human = n / 3;
    let mut rng = Rng::seeded(&[human]);
    let sex = rng.below(2);
    let mut given = rng.ranked(GIVEN[sex], 5).to_owned();
    let mut family = rng.ranked(FAMILY, 8).to_owned();
    let (year, month, day) = (1940 + rng.below(68), 1 + rng.below(12), 1 + rng.below(28));
    let postcode = format!("{}", 10_000 + 29 * rng.below(3000));
    let street = format!(
        "{} {} {}",
        1 + rng.below(400),
        rng.ranked(FAMILY, 8),
        STREETS[rng.below(STREETS.len())]
    );
    let email = format!("{given}.{family}{human}@{}", DOMAINS[rng.below(DOMAINS.len())]);
    let phone = rng.chance(50).then(|| format!("+1202{:07}", rng.below(10_000_000)));

    let mut rng = Rng::seeded(&[human, n, v]);
    let slips = match (n % 3, v) {
        (0, 0) => 0,
        (0, _) => rng.below(2),
        _ => 1 + rng.below(2),
    };
    let (mut birth, mut email, mut phone, mut address) = (Some((year, month, day)), Some(email), phone, true);
    for _ in 0..slips {
        match rng.below(8) {
            0 => given = typo(&mut rng, &given),
            1 => family = typo(&mut rng, &family),
            2 => {
                if let Some((_, short)) = NICK.iter().find(|(formal, _)| *formal == given) {
                    given = (*short).to_owned();
                }
            }
            3 => birth = birth.map(|(y, m, d)| if d <= 12 { (y, d, m) } else { (y, m, d) }),
            4 => email = None,
            5 => phone = None,
            6 => birth = None,
            _ => address = false,
        }
    }
    let mut payload = json!({
        "customerId": format!("r{n}"),
        "updatedAt": jiff::Timestamp::from_second(1_704_067_200 + v as i64).expect("a time").to_string(),
        "firstName": given,
        "lastName": family,
    });
    if let Some((y, m, d)) = birth {
        payload["birthDate"] = json!(format!("{y}-{m:02}-{d:02}"));
    }
    if let Some(email) = email {
        payload["email"] = json!(email);
    }
    if let Some(phone) = phone {
        payload["phones"] = json!([{"kind": "mobile", "e164": phone}]);
    }
    if address {
        payload["addresses"] = json!([{"kind": "home", "street1": street, "postalCode": postcode}]);
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

/// Polls every 20 ms, every 200 ms while more than 1,000 changes wait:
/// counting what is unresolved reads the backlog's outbox rows, and
/// polling a large backlog every 20 ms took a quarter of the CPU the
/// resolver is measured with (the last thousand changes still take more
/// than 200 ms at 5,000/s, so the end is seen within 20 ms).
async fn wait_resolved(store: &SqliteStore) -> anyhow::Result<()> {
    loop {
        let pause = match store.unresolved().await?.0 {
            0 => return Ok(()),
            1..=1000 => 20,
            _ => 200,
        };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// How the persons resolved match the humans generated: records a
/// person, and how many persons join records of two humans or more.
async fn persons(store: &SqliteStore) -> anyhow::Result<()> {
    let persons = store.resolved().await?.persons;
    let records: usize = persons.iter().map(|p| p.customer_ids.len()).sum();
    let human = |id: &str| -> anyhow::Result<usize> {
        let n: usize = id
            .rsplit(':')
            .next()
            .and_then(|r| r.strip_prefix('r'))
            .context("a record id")?
            .parse()?;
        Ok(n / 3)
    };
    let mut strangers = 0;
    for p in &persons {
        let humans = p
            .customer_ids
            .iter()
            .map(|id| human(id))
            .collect::<anyhow::Result<HashSet<_>>>()?;
        strangers += usize::from(humans.len() > 1);
    }
    println!(
        "persons: {} holding {records} records ({:.2} a person, the largest {}); {strangers} join records of two humans or more",
        persons.len(),
        records as f64 / persons.len().max(1) as f64,
        persons.iter().map(|p| p.customer_ids.len()).max().unwrap_or(0)
    );
    Ok(())
}

/// The CPU time this process has used (every thread, user and system),
/// in seconds: what a step costs when other work shares the cores.
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command's closing parenthesis; utime and stime
    // are the 14th and 15th of the line, in ticks of 1/100 s.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("a stat line")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
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
    let (started, cpu) = (Instant::now(), cpu_seconds()?);
    let resolver = tokio::spawn(clientele::resolver::run(
        store.clone() as Arc<dyn Store>,
        Settings::default(),
        Clock::system(),
        stopped,
    ));
    wait_resolved(&store).await?;
    let (took, cpu) = (started.elapsed().as_secs_f64(), cpu_seconds()? - cpu);
    println!(
        "backlog: {base} records resolved in {took:.2} s (index loaded, then resolved): {:.0} changes resolved/s; {cpu:.2} s of CPU, {:.0} changes a CPU second",
        base as f64 / took,
        base as f64 / cpu
    );
    persons(&store).await?;

    // Updates of base records and new records, alternating.
    let (started, cpu) = (Instant::now(), cpu_seconds()?);
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
    let (resolved, cpu) = (started.elapsed(), cpu_seconds()? - cpu);
    println!(
        "throughput: {changes} changes kept in {:.2} s, resolved by {:.2} s: {:.0} changes resolved/s; {cpu:.2} s of CPU (keeping them too)",
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
