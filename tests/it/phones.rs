//! Phone normalization held against Google's libphonenumber: every case of
//! `tests/phones/cases.jsonl` (written by `tests/phones/generate.py` from the
//! Python port `phonenumbers`) is read by `normalize::phone` with its region
//! as the default country, and the E.164 it gives (or `null`) must agree
//! with libphonenumber's on at least 99.9% of the cases. The remaining
//! differences are explained in docs/guarantees.md ("Phone numbers").
//!
//! No server is started: this is the normalizer alone, a pure function.

use std::collections::BTreeMap;
use std::time::Instant;

use clientele::model::json::Json;
use clientele::model::normalize::{Country, phone};
use serde::Deserialize;

/// The least share of cases on which Clientele and libphonenumber must
/// give the same answer (the same E.164, or both none).
const AGREEMENT: f64 = 0.999;

#[derive(Deserialize)]
struct Case {
    /// libphonenumber's region, taken as the default country.
    r: String,
    /// The number's type (`mobile`, `toll_free`, …) or `invalid`.
    t: String,
    /// How it is written: `e164`, `international`, `national`, `digits`
    /// (the national form's digits) or `significant` (no trunk prefix).
    f: String,
    #[serde(rename = "in")]
    input: String,
    e164: Option<String>,
}

fn cases() -> Vec<Case> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/phones/cases.jsonl");
    let text = std::fs::read_to_string(path).expect("the fixture is committed");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each line is a case"))
        .collect()
}

fn normalized(case: &Case) -> Option<String> {
    let country = Country::parse(&case.r);
    phone("mobile", &Json::String(case.input.as_str().into()), country)
        .expect("a string is never a problem")
        .and_then(|p| p.e164)
}

#[test]
fn phones_agree_with_libphonenumber_on_at_least_999_in_1000_cases() {
    let cases = cases();
    assert!(cases.len() > 10_000, "the fixture has {} cases", cases.len());

    // Disagreements by what went wrong, then by type and form.
    let mut by_category: BTreeMap<(&str, &str, &str), Vec<String>> = BTreeMap::new();
    let mut agreed = 0usize;
    for case in &cases {
        let ours = normalized(case);
        if ours == case.e164 {
            agreed += 1;
            continue;
        }
        let what = match (&ours, &case.e164) {
            (None, Some(_)) => "valid, Clientele gives null",
            (Some(_), None) => "invalid, Clientele gives an E.164",
            _ => "both valid, different E.164",
        };
        by_category.entry((what, &case.t, &case.f)).or_default().push(format!(
            "{} {:?} → ours {:?}, libphonenumber {:?}",
            case.r, case.input, ours, case.e164
        ));
    }

    let share = agreed as f64 / cases.len() as f64;
    println!(
        "agreement: {agreed} of {} cases ({:.3}%), {} differ",
        cases.len(),
        share * 100.0,
        cases.len() - agreed
    );
    let mut by_region: BTreeMap<&str, usize> = BTreeMap::new();
    for examples in by_category.values() {
        for example in examples {
            *by_region.entry(&example[..2]).or_default() += 1;
        }
    }
    println!("by region: {by_region:?}");
    for ((what, kind, form), examples) in &by_category {
        println!("{:>5}  {what}: {kind}, {form}", examples.len());
        for example in examples.iter().take(8) {
            println!("         {example}");
        }
    }
    assert!(
        share >= AGREEMENT,
        "phones agree with libphonenumber on {:.3}% of cases, below {:.1}%",
        share * 100.0,
        AGREEMENT * 100.0
    );
}

/// Not an assertion: the time to normalize the whole fixture, for
/// bench/README.md ("Phone normalization"). Run with
/// `cargo test --release --test phones -- --nocapture --ignored`.
#[test]
#[ignore = "a measurement, not a check"]
fn time_to_normalize_the_fixture() {
    let cases = cases();
    for case in &cases {
        normalized(case); // metadata loaded, caches warm
    }
    // Whole rounds over the fixture, for at least two seconds.
    let start = Instant::now();
    let mut rounds = 0u32;
    while rounds == 0 || start.elapsed().as_secs() < 2 {
        for case in &cases {
            std::hint::black_box(normalized(std::hint::black_box(case)));
        }
        rounds += 1;
    }
    let per_case = start.elapsed() / (rounds * cases.len() as u32);
    println!("{} cases × {rounds} rounds: {per_case:?} per phone", cases.len());
}
