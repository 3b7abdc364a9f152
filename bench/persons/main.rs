//! The persons benchmark (`bench/persons/run.sh`): how well, and how fast,
//! the matcher (`clientele::persons`) finds the customers that are one
//! person, on data no one here made.
//!
//! `--data FILE.jsonl --truth FILE.truth` reads `{"source", "body"}` lines
//! (Clientele envelopes, as `bench/persons/febrl.py` writes them), maps
//! each body through the Clientele envelope's adapter like a delivery,
//! resolves persons over the whole set and scores the pairs it joined
//! against the true pairs: precision, recall, F1. `--households N`
//! generates the household trap instead (N families sharing an address, a
//! surname, a family email and phone, with junk emails and a front-desk
//! phone, some members entered twice with a typo or a nickname), whose
//! truth is known; `--seed N` draws another trap of the same shape.
//!
//! Options: `--no-identifiers` drops the envelopes' identifiers before
//! mapping; `--rules strict|lenient` (SPEC §11's conflicts as vetoes, or
//! as weights); `--link X --review Y` the thresholds; `--explain N` prints
//! N missed and N wrong pairs with their evidence.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::{Context, bail};
use clientele::model::json::Json;
use clientele::model::{Country, Customer, UtcMillis};
use clientele::persons::{self, Rules, Settings, Subject, Tally};
use clientele::sources::{Kind, Mapped, SourceSettings};
use serde_json::{Value, json};

mod names;

struct Args {
    data: Option<String>,
    truth: Option<String>,
    households: Option<usize>,
    seed: u64,
    identifiers: bool,
    explain: usize,
    settings: Settings,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        data: None,
        truth: None,
        households: None,
        seed: 20261206,
        identifiers: true,
        explain: 0,
        settings: Settings::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--data" => a.data = Some(value()?),
            "--truth" => a.truth = Some(value()?),
            "--households" => a.households = Some(value()?.parse()?),
            "--seed" => a.seed = value()?.parse()?,
            "--no-identifiers" => a.identifiers = false,
            "--explain" => a.explain = value()?.parse()?,
            "--link" => a.settings.link = value()?.parse()?,
            "--review" => a.settings.review = value()?.parse()?,
            "--rules" => {
                a.settings.rules = match value()?.as_str() {
                    "strict" => Rules::STRICT,
                    "lenient" => Rules::LENIENT,
                    "households" => Rules {
                        households: true,
                        ..Rules::LENIENT
                    },
                    other => bail!("--rules {other}: strict or lenient"),
                }
            }
            other => bail!("unknown option {other}"),
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let (lines, truth) = match (&args.data, &args.truth, args.households) {
        (Some(data), Some(truth), None) => (read_lines(data)?, read_truth(truth)?),
        (None, None, Some(families)) => households(families, args.seed),
        _ => bail!("either --data FILE --truth FILE, or --households N"),
    };

    let started = Instant::now();
    let mut customers = Vec::with_capacity(lines.len());
    for mut line in lines {
        if !args.identifiers
            && let Some(payload) = line["body"]["payload"].as_object_mut()
        {
            payload.remove("identifiers");
        }
        customers.push(map(&line)?);
    }
    let mapped = started.elapsed();
    let subjects: Vec<Subject> = customers.iter().filter_map(Subject::of).collect();

    let started = Instant::now();
    let mut tally = Tally::new(args.settings.max_shared);
    for s in &subjects {
        tally.add(s);
    }
    let candidates = persons::blocking::candidate_pairs(&subjects, args.settings.max_block);
    let edges = persons::score(&subjects, &tally, &args.settings);
    let clustering = persons::cluster(&subjects, edges, &[], &args.settings);
    let resolved = started.elapsed();

    let mut joined: HashSet<(String, String)> = HashSet::new();
    for g in &clustering.groups {
        for (n, a) in g.members.iter().enumerate() {
            for b in &g.members[n + 1..] {
                joined.insert(ordered(a, b));
            }
        }
    }
    let tp = joined.intersection(&truth).count() as f64;
    let precision = if joined.is_empty() {
        1.0
    } else {
        tp / joined.len() as f64
    };
    let recall = tp / truth.len() as f64;
    let f1 = 2.0 * precision * recall / (precision + recall);
    let index: HashMap<&str, usize> = subjects.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let blocked: HashSet<(usize, usize)> = candidates.iter().copied().collect();
    let reachable = truth
        .iter()
        .filter(|(a, b)| {
            let (i, j) = (index[a.as_str()], index[b.as_str()]);
            blocked.contains(&(i.min(j), i.max(j)))
        })
        .count();
    // The true pairs that the rules let the model link at all: a ceiling
    // on recall that no weight can lift.
    let by_id: HashMap<&str, &Subject> = subjects.iter().map(|s| (s.id.as_str(), s)).collect();
    let allowed = truth
        .iter()
        .filter(|(a, b)| {
            persons::compare(by_id[a.as_str()], by_id[b.as_str()], &tally, &args.settings)
                .conflict
                .is_none()
        })
        .count();
    println!(
        "{}",
        json!({
            "records": subjects.len(),
            "truePairs": truth.len(),
            "candidatePairs": candidates.len(),
            "truePairsAmongCandidates": reachable,
            "truePairsTheRulesAllow": allowed,
            "joinedPairs": joined.len(),
            "wrongPairs": joined.len() - tp as usize,
            "persons": clustering.groups.len(),
            "reviews": clustering.reviews.len(),
            "precision": round(precision),
            "recall": round(recall),
            "f1": round(f1),
            "mapSeconds": round(mapped.as_secs_f64()),
            "resolveSeconds": round(resolved.as_secs_f64()),
            "customersResolvedPerSecond": (subjects.len() as f64 / resolved.as_secs_f64()).round(),
            "settings": {"link": args.settings.link, "review": args.settings.review,
                         "rules": format!("{:?}", args.settings.rules),
                         "identifiers": args.identifiers},
        })
    );
    if args.explain > 0 {
        let show = |what: &str, (a, b): &(String, String)| {
            let c = persons::compare(by_id[a.as_str()], by_id[b.as_str()], &tally, &args.settings);
            let evidence: Vec<String> = c
                .evidence
                .iter()
                .map(|e| format!("{}:{}={}", e.field, e.comparison, e.weight))
                .collect();
            eprintln!(
                "{what} {a} {b} score={:.1} conflict={:?} {}\n  {:?}\n  {:?}",
                c.score,
                c.conflict,
                evidence.join(" "),
                by_id[a.as_str()],
                by_id[b.as_str()]
            );
        };
        let mut missed: Vec<_> = truth.difference(&joined).collect();
        missed.sort();
        for pair in missed.into_iter().take(args.explain) {
            show("MISSED", pair);
        }
        let mut wrong: Vec<_> = joined.difference(&truth).collect();
        wrong.sort();
        for pair in wrong.into_iter().take(args.explain) {
            show("WRONG", pair);
        }
    }
    Ok(())
}

fn round(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_owned(), b.to_owned())
    } else {
        (b.to_owned(), a.to_owned())
    }
}

fn read_lines(path: &str) -> anyhow::Result<Vec<Value>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    text.lines()
        .map(|l| serde_json::from_str(l).context("a line of --data is not JSON"))
        .collect()
}

fn read_truth(path: &str) -> anyhow::Result<HashSet<(String, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| ordered(a, b))
        .collect())
}

/// One `{"source", "body"}` line through the Clientele envelope's adapter,
/// as a delivery to that source would go.
fn map(line: &Value) -> anyhow::Result<Customer> {
    let source = line["source"].as_str().context("a line without a source")?;
    let settings = SourceSettings {
        name: source.to_owned(),
        default_country: Country::parse("AU"),
        timezone: jiff::tz::TimeZone::UTC,
        account: None,
    };
    match Kind::Clientele.adapter().map(&Json::from(&line["body"]), &settings) {
        Ok(Mapped::Customer(e)) => Ok(Customer {
            id: e.customer.id,
            source: e.customer.source,
            external_id: e.customer.external_id,
            profile: e.profile,
            merged_into: None,
            merged_from: Vec::new(),
            version: 1,
            changed_at: UtcMillis::now(),
        }),
        Ok(Mapped::Ignored { what }) => bail!("ignored: {what}"),
        Err(e) => bail!("unmappable: {}", e.reason),
    }
}

/// A small deterministic generator (SplitMix64): the trap is the same on
/// every run.
struct Rng(u64);

impl Rng {
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
    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const GIVEN: &[&str] = &[
    "james",
    "mary",
    "robert",
    "patricia",
    "john",
    "jennifer",
    "michael",
    "linda",
    "william",
    "elizabeth",
    "david",
    "barbara",
    "richard",
    "susan",
    "joseph",
    "jessica",
    "thomas",
    "sarah",
    "charles",
    "karen",
    "daniel",
    "nancy",
    "matthew",
    "lisa",
    "anthony",
    "betty",
    "mark",
    "margaret",
    "donald",
    "sandra",
    "steven",
    "ashley",
    "paul",
    "kimberly",
    "andrew",
    "emily",
    "joshua",
    "donna",
    "kenneth",
    "michelle",
    "kevin",
    "carol",
    "brian",
    "amanda",
    "george",
    "melissa",
    "timothy",
    "deborah",
    "ronald",
    "stephanie",
];
/// The trap's family names: the thirty commonest, so that strangers share them.
const FAMILY: &[&str] = names::FAMILY.split_at(30).0;
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
    ("margaret", "maggie"),
];
const JUNK_EMAILS: &[&str] = &["noemail@shop.com", "none@none.com", "test@test.com", "na@gmail.com"];

/// The household trap: `families` families, each of 2 to 5 people
/// sharing an address and a surname, most a family email and phone; one
/// in ten families has twins (one birth date, two given names); a quarter
/// of the records carry a junk email and a tenth the salon's front-desk
/// phone; a third of the people are entered twice (a second store), the
/// copy with a typo or a nickname. Its truth: the pairs of records that are
/// one person.
fn households(families: usize, seed: u64) -> (Vec<Value>, HashSet<(String, String)>) {
    let mut rng = Rng(seed);
    let mut lines = Vec::new();
    let mut truth = HashSet::new();
    let front_desk = "+61290000000";
    for f in 0..families {
        let family = rng.pick(FAMILY).to_owned();
        let street = format!("{} {} st", 1 + rng.below(300), rng.pick(FAMILY));
        let postcode = format!("{}", 2000 + rng.below(40));
        let email = format!("the{family}{f}@mail.com");
        let phone = format!("+614{:08}", 10_000_000 + f);
        let size = 2 + rng.below(4);
        let twins = rng.chance(10);
        let mut used = HashSet::new();
        let mut birth_of_first = String::new();
        for m in 0..size {
            let mut given = rng.pick(GIVEN);
            while !used.insert(given) {
                given = rng.pick(GIVEN);
            }
            let birth = if twins && m == 1 {
                birth_of_first.clone()
            } else {
                format!(
                    "{}-{:02}-{:02}",
                    1940 + rng.below(70),
                    1 + rng.below(12),
                    1 + rng.below(28)
                )
            };
            if m == 0 {
                birth_of_first = birth.clone();
            }
            let copies = if rng.chance(33) { 2 } else { 1 };
            let mut ids = Vec::new();
            for copy in 0..copies {
                let id = format!("f{f}m{m}c{copy}");
                let source = if copy == 0 { "salon" } else { "spa" };
                let mut first = given.to_owned();
                if copy == 1 {
                    first = match NICK.iter().find(|(formal, _)| *formal == given) {
                        Some((_, nick)) if rng.chance(50) => (*nick).to_owned(),
                        _ => typo(&mut rng, given),
                    };
                }
                let own_email = if rng.chance(25) {
                    rng.pick(JUNK_EMAILS).to_owned()
                } else if rng.chance(60) {
                    email.clone()
                } else {
                    format!("{first}.{family}{f}@mail.com")
                };
                let own_phone = if rng.chance(10) {
                    front_desk.to_owned()
                } else {
                    phone.clone()
                };
                let payload = json!({
                    "customerId": id,
                    "firstName": first,
                    "lastName": family,
                    "birthDate": birth,
                    "email": own_email,
                    "phones": [{"kind": "mobile", "e164": own_phone}],
                    "addresses": [{"kind": "home", "street1": street, "postalCode": postcode, "countryCode": "AU"}],
                    "updatedAt": "2026-01-01T00:00:00Z",
                });
                lines.push(
                    json!({"source": source, "body": {"id": format!("evt_{id}"), "type": "customer",
                    "action": "updated", "createdDate": "2026-01-01T00:00:00Z", "payload": payload}}),
                );
                ids.push(format!("{source}:{id}"));
            }
            if let [a, b] = ids.as_slice() {
                truth.insert(ordered(a, b));
            }
        }
    }
    (lines, truth)
}

/// One letter of `name` doubled, dropped or swapped with its neighbour.
fn typo(rng: &mut Rng, name: &str) -> String {
    let mut chars: Vec<char> = name.chars().collect();
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
