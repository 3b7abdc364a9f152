//! Comparing two subjects, Fellegi–Sunter style: each field falls into a
//! comparison level (`exact`, `typo`, `nickname`, `different`, …), each
//! level adds a weight, log₂(m/u), to the pair's score, and the evidence
//! keeps every weight so that a link explains itself.
//!
//! Exact agreement is weighed by how common the value is
//! ([`Frequencies`]): two customers named Smith agree less than two named
//! Quillfeather, and a salon's front-desk phone shared by hundreds of
//! customers weighs next to nothing, or nothing at all once more than
//! `max_shared` differently named customers hold it.
//!
//! Besides the score, a comparison says whether the pair may be one
//! person at all ([`Conflict`]): disagreeing birth dates beyond a
//! plausible slip, two different ids of one kind, or a household (same
//! family name, different given names, two common names more than a
//! typo apart counting as different: [`name_level`]). The clusterer
//! (`super::cluster`) applies the same checks to whole persons.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::names::{nicknames, two_names};
use super::subject::{Place, Subject};

/// A field whose values' frequencies weigh agreement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Given,
    Family,
    Email,
    Phone,
    Identifier,
    Street,
    Postcode,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::Given,
        Field::Family,
        Field::Email,
        Field::Phone,
        Field::Identifier,
        Field::Street,
        Field::Postcode,
    ];

    /// How common an unseen value of the field is, before counting: the
    /// prior that keeps a small directory's counts from saying too much.
    fn prior(self) -> f64 {
        match self {
            Field::Given => 0.004,
            Field::Family => 0.002,
            Field::Email | Field::Phone | Field::Identifier => 1e-6,
            Field::Street => 1e-4,
            Field::Postcode => 2e-3,
        }
    }
}

/// How often values occur in the directory.
pub trait Frequencies {
    /// Subjects counted.
    fn total(&self) -> u64;
    /// Subjects holding `value` in `field`.
    fn count(&self, field: Field, value: &str) -> u64;
    /// Different names among the subjects holding `value` in `field`, up
    /// to `max_shared + 1` (an email or phone shared across a family or a
    /// front desk).
    fn names(&self, field: Field, value: &str) -> u64;
}

/// [`Frequencies`] counted in memory from a set of subjects (the bench, a
/// rebuild, tests); the store keeps the same counts in a table.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    total: u64,
    counts: ByField<Holders>,
    cap: usize,
}

/// Per field, each value's entry: looked up by `&str`, so that a
/// comparison counts without allocating.
pub type ByField<T> = [HashMap<String, T>; Field::ALL.len()];

impl Field {
    /// The field's place in a [`ByField`].
    pub fn at(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Default, Clone)]
struct Holders {
    count: u64,
    names: HashSet<String>,
}

impl Tally {
    pub fn new(max_shared: u32) -> Self {
        Tally {
            cap: max_shared as usize + 1,
            ..Tally::default()
        }
    }

    pub fn add(&mut self, s: &Subject) {
        self.total += 1;
        let who = holder(s);
        for (field, value) in values(s) {
            let holders = self.counts[field.at()].entry(value).or_default();
            holders.count += 1;
            if holders.names.len() < self.cap {
                holders.names.insert(who.clone());
            }
        }
    }
}

impl Frequencies for Tally {
    fn total(&self) -> u64 {
        self.total
    }
    fn count(&self, field: Field, value: &str) -> u64 {
        self.counts[field.at()].get(value).map_or(0, |h| h.count)
    }
    fn names(&self, field: Field, value: &str) -> u64 {
        self.counts[field.at()].get(value).map_or(0, |h| h.names.len() as u64)
    }
}

/// Who holds a value, for counting the different names that share it.
pub fn holder(s: &Subject) -> String {
    format!(
        "{}|{}",
        s.given.as_deref().unwrap_or(""),
        s.family.as_deref().unwrap_or("")
    )
}

/// Every counted value of a subject, each once.
pub fn values(s: &Subject) -> Vec<(Field, String)> {
    let mut out = Vec::new();
    out.extend(s.given.clone().map(|v| (Field::Given, v)));
    out.extend(s.family.clone().map(|v| (Field::Family, v)));
    out.extend(s.emails.iter().map(|v| (Field::Email, v.clone())));
    out.extend(s.phones.iter().map(|v| (Field::Phone, v.clone())));
    out.extend(
        s.identifiers
            .iter()
            .map(|(k, v)| (Field::Identifier, format!("{k}:{v}"))),
    );
    for a in &s.addresses {
        out.extend(a.street.clone().map(|v| (Field::Street, v)));
        out.extend(a.postcode.clone().map(|v| (Field::Postcode, v)));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// What the model may decide on its own.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Birth dates that disagree beyond a slip keep two customers apart.
    pub birth_dates: bool,
    /// Two different ids of one kind keep two customers apart.
    pub identifiers: bool,
    /// One family name with different given names is a household, not one
    /// person, unless an identifier says otherwise.
    pub households: bool,
}

impl Rules {
    /// SPEC §11.
    pub const STRICT: Rules = Rules {
        birth_dates: true,
        identifiers: true,
        households: true,
    };
    /// Conflicts weigh against a link instead of forbidding it (for data
    /// whose birth dates and ids are themselves corrupted: see
    /// `bench/persons`).
    pub const LENIENT: Rules = Rules {
        birth_dates: false,
        identifiers: false,
        households: false,
    };
}

/// The matcher's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// A score at or above links two customers.
    pub link: f64,
    /// A score at or above (below `link`) asks an operator.
    pub review: f64,
    /// An email, phone or id held by more than this many differently named
    /// customers stops counting.
    pub max_shared: u32,
    /// A blocking key shared by more customers than this names no
    /// candidates (it is a placeholder or a common value, and would make
    /// the work grow with the directory).
    pub max_block: usize,
    pub rules: Rules,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            link: 14.0,
            review: 7.0,
            max_shared: 5,
            max_block: 200,
            rules: Rules::STRICT,
        }
    }
}

/// One field's part in a score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub field: &'static str,
    pub comparison: &'static str,
    pub weight: f64,
}

/// Why two customers cannot be one person, whatever their score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Conflict {
    BirthDate,
    Identifier,
    Household,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub score: f64,
    pub evidence: Vec<Evidence>,
    /// A government or platform id agrees: the link is the identifier's.
    pub identified: bool,
    pub conflict: Option<Conflict>,
}

/// Compares two subjects.
pub fn compare<'a>(a: &'a Subject, b: &'a Subject, freq: &dyn Frequencies, settings: &Settings) -> Comparison {
    let mut c = Comparison {
        score: 0.0,
        evidence: Vec::new(),
        identified: false,
        conflict: None,
    };
    let mut add = |c: &mut Comparison, field: &'static str, comparison: &'static str, weight: f64| {
        let weight = (weight * 100.0).round() / 100.0;
        c.score += weight;
        c.evidence.push(Evidence {
            field,
            comparison,
            weight,
        });
    };
    let tf = |field: Field, value: &str, m: f64, cap: f64| -> f64 {
        // u: the value's share of the directory, smoothed towards the
        // field's prior with 1,000 pseudo-observations.
        let k = 1000.0;
        let u = (freq.count(field, value) as f64 + k * field.prior()) / (freq.total() as f64 + k);
        (m / u).log2().clamp(0.5, cap)
    };
    let shared = |field: Field, value: &str| freq.names(field, value) > u64::from(settings.max_shared);

    // Identifiers, per kind: a kind both hold agrees when they share a
    // value, and differs when no value of one is a value (or a slip of a
    // value) of the other.
    let (mut exact, mut different) = (false, false);
    let mut kinds: Vec<&str> = a.identifiers.iter().map(|(k, _)| k.as_str()).collect();
    kinds.dedup();
    for kind in kinds {
        let of = |s: &'a Subject| s.identifiers.iter().filter(move |(k, _)| k == kind).map(|(_, v)| v);
        let ours: Vec<&String> = of(a).collect();
        let theirs: Vec<&String> = of(b).collect();
        if theirs.is_empty() {
            continue;
        }
        if let Some(value) = ours.iter().find(|v| theirs.contains(v)) {
            let key = format!("{kind}:{value}");
            if shared(Field::Identifier, &key) {
                add(&mut c, "identifier", "over_shared", 0.0);
            } else {
                exact = true;
                add(&mut c, "identifier", "exact", tf(Field::Identifier, &key, 0.95, 16.0));
            }
        } else if ours.iter().any(|x| theirs.iter().any(|y| slip(x, y))) {
            add(&mut c, "identifier", "typo", 6.0);
        } else {
            different = true;
            add(&mut c, "identifier", "different", -6.0);
        }
    }
    c.identified = exact && !different;
    if different && settings.rules.identifiers {
        c.conflict = Some(Conflict::Identifier);
    }

    // Names: given and family, or the two swapped.
    let given = name_level(a.given.as_deref(), b.given.as_deref(), true);
    let family = name_level(a.family.as_deref(), b.family.as_deref(), false);
    let swapped = matches!((given, family), (Some(Level::Different), Some(Level::Different)))
        && name_level(a.given.as_deref(), b.family.as_deref(), false).is_some_and(Level::agrees)
        && name_level(a.family.as_deref(), b.given.as_deref(), false).is_some_and(Level::agrees);
    if swapped {
        add(&mut c, "name", "swapped", 8.0);
    } else {
        if let (Some(level), Some(value)) = (given, a.given.as_deref()) {
            let w = match level {
                Level::Exact => tf(Field::Given, value, 0.9, 10.0),
                Level::Nickname => 4.0,
                Level::Typo => 4.0,
                Level::Similar => 1.5,
                Level::Initial => 1.0,
                Level::Different => -3.0,
            };
            add(&mut c, "given_name", level.as_str(), w);
        }
        if let (Some(level), Some(value)) = (family, a.family.as_deref()) {
            let w = match level {
                Level::Exact => tf(Field::Family, value, 0.9, 12.0),
                Level::Nickname | Level::Typo => 4.5,
                Level::Similar => 1.5,
                Level::Initial => 0.5,
                Level::Different => -3.5,
            };
            add(&mut c, "family_name", level.as_str(), w);
        }
    }
    let household = !swapped && given == Some(Level::Different) && family.is_some_and(Level::agrees) && !c.identified;
    if household && settings.rules.households && c.conflict.is_none() {
        c.conflict = Some(Conflict::Household);
    }

    // Email and phones: any shared value agrees.
    contact(
        &mut c,
        &mut add,
        "email",
        Field::Email,
        &a.emails,
        &b.emails,
        &tf,
        &shared,
        -1.5,
    );
    contact(
        &mut c,
        &mut add,
        "phone",
        Field::Phone,
        &a.phones,
        &b.phones,
        &tf,
        &shared,
        -1.5,
    );

    // Address: the best agreeing pair of places.
    if !a.addresses.is_empty() && !b.addresses.is_empty() {
        let best = a
            .addresses
            .iter()
            .flat_map(|pa| b.addresses.iter().map(move |pb| place(pa, pb, &tf)))
            .max_by(|x, y| {
                x.iter()
                    .map(|e| e.2)
                    .sum::<f64>()
                    .total_cmp(&y.iter().map(|e| e.2).sum::<f64>())
            })
            .unwrap_or_default();
        for (field, comparison, weight) in best {
            add(&mut c, field, comparison, weight);
        }
    }

    // Birth date, last: a slip weighs as agreement only when a shared
    // id, email, phone or house (street and number) says the same, for
    // strangers of one common name and postcode are a slip apart often
    // enough in a large directory (the household trap, `bench/persons`).
    if let (Some(da), Some(db)) = (&a.birth, &b.birth) {
        match birth_level(da, db) {
            Birth::Exact => add(&mut c, "birth_date", "exact", 10.0),
            Birth::Slip if corroborated(&c) => add(&mut c, "birth_date", "slip", 3.5),
            Birth::Slip => add(&mut c, "birth_date", "slip_alone", 1.0),
            Birth::Different => {
                add(&mut c, "birth_date", "different", -8.0);
                if settings.rules.birth_dates {
                    c.conflict = Some(Conflict::BirthDate);
                }
            }
        }
    }
    c
}

/// Whether evidence that names one human besides the name agrees: an
/// identifier, an email, a phone, or the street with its house number.
fn corroborated(c: &Comparison) -> bool {
    c.evidence
        .iter()
        .any(|e| e.comparison == "exact" && matches!(e.field, "identifier" | "email" | "phone" | "street"))
}

#[allow(clippy::too_many_arguments)]
fn contact(
    c: &mut Comparison,
    add: &mut impl FnMut(&mut Comparison, &'static str, &'static str, f64),
    name: &'static str,
    field: Field,
    a: &[String],
    b: &[String],
    tf: &impl Fn(Field, &str, f64, f64) -> f64,
    shared: &impl Fn(Field, &str) -> bool,
    differ: f64,
) {
    if a.is_empty() || b.is_empty() {
        return;
    }
    let common: Vec<&String> = a.iter().filter(|v| b.contains(v)).collect();
    if common.is_empty() {
        add(c, name, "different", differ);
        return;
    }
    let counted: Vec<&&String> = common.iter().filter(|v| !shared(field, v)).collect();
    match counted.iter().map(|v| tf(field, v, 0.9, 14.0)).max_by(f64::total_cmp) {
        Some(w) => add(c, name, "exact", w),
        None => add(c, name, "over_shared", 0.0),
    }
}

type Part = (&'static str, &'static str, f64);

fn place(a: &Place, b: &Place, tf: &impl Fn(Field, &str, f64, f64) -> f64) -> Vec<Part> {
    let mut out = Vec::new();
    if let (Some(sa), Some(sb)) = (&a.street, &b.street) {
        let number = |s: &str| {
            s.split(' ')
                .next()
                .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
                .map(str::to_owned)
        };
        out.push(if sa == sb {
            ("street", "exact", tf(Field::Street, sa, 0.85, 9.0))
        } else if let (Some(na), Some(nb)) = (number(sa), number(sb))
            && na != nb
            && !slip(&na, &nb)
        {
            // Another house: neighbours are not one person.
            ("street", "other_number", -3.0)
        } else {
            match strsim::jaro_winkler(sa, sb) {
                sim if sim >= 0.9 => ("street", "typo", 3.0),
                sim if sim >= 0.8 => ("street", "similar", 1.0),
                _ => ("street", "different", -2.5),
            }
        });
    }
    if let (Some(pa), Some(pb)) = (&a.postcode, &b.postcode) {
        // A slip is one value mistyped: at two houses of two streets, two
        // postcodes a digit apart are two places (neighbouring postcodes
        // are often a digit apart), not a typo; on one street they are.
        let two_houses = out.iter().any(|&(_, comparison, _)| comparison == "other_number")
            && matches!((street_name(a), street_name(b)), (Some(x), Some(y)) if strsim::jaro_winkler(x, y) < 0.8);
        out.push(if pa == pb {
            ("postcode", "exact", tf(Field::Postcode, pa, 0.9, 7.0))
        } else if slip(pa, pb) && !two_houses {
            ("postcode", "typo", 1.0)
        } else {
            ("postcode", "different", -2.5)
        });
    }
    if let (Some(ca), Some(cb)) = (&a.city, &b.city) {
        out.push(if ca == cb {
            ("city", "exact", 2.0)
        } else if strsim::jaro_winkler(ca, cb) >= 0.9 {
            ("city", "typo", 1.0)
        } else {
            ("city", "different", -1.0)
        });
    }
    out
}

/// A street's name, past its house number.
fn street_name(p: &Place) -> Option<&str> {
    p.street.as_deref()?.split_once(' ').map(|(_, name)| name)
}

/// How two names compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Exact,
    Nickname,
    /// Jaro–Winkler ≥ 0.92, or one edit apart.
    Typo,
    /// Jaro–Winkler ≥ 0.85.
    Similar,
    /// One is the other's initial.
    Initial,
    Different,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Exact => "exact",
            Level::Nickname => "nickname",
            Level::Typo => "typo",
            Level::Similar => "similar",
            Level::Initial => "initial",
            Level::Different => "different",
        }
    }

    /// Says the names may be one person's.
    pub fn agrees(self) -> bool {
        !matches!(self, Level::Different)
    }
}

/// `None` when either name is unknown. Two given names more than one edit
/// apart that are each a common name of its own (Michael and Michelle:
/// [`two_names`]) are different names however alike they look: within a
/// household, two people. One edit apart (Carol and Carl) they stay a
/// typo, which a dropped letter makes more often than parents do twins.
pub fn name_level(a: Option<&str>, b: Option<&str>, given: bool) -> Option<Level> {
    let (a, b) = (a?, b?);
    Some(if a == b {
        Level::Exact
    } else if given && nicknames(a, b) {
        Level::Nickname
    } else if one_edit(a, b) {
        Level::Typo
    } else {
        match strsim::jaro_winkler(a, b) {
            jw if jw >= 0.85 && given && two_names(a, b) => Level::Different,
            jw if jw >= 0.92 => Level::Typo,
            jw if jw >= 0.85 => Level::Similar,
            _ if (a.len() == 1 && b.starts_with(a)) || (b.len() == 1 && a.starts_with(b)) => Level::Initial,
            _ => Level::Different,
        }
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Birth {
    Exact,
    /// Day and month swapped, one digit wrong, or two neighbours swapped.
    Slip,
    Different,
}

/// Compares two `YYYYMMDD` dates.
pub fn birth_level(a: &str, b: &str) -> Birth {
    if a == b {
        return Birth::Exact;
    }
    let swapped = a.len() == 8 && b.len() == 8 && a[..4] == b[..4] && a[4..6] == b[6..8] && a[6..8] == b[4..6];
    if swapped || slip(a, b) {
        Birth::Slip
    } else {
        Birth::Different
    }
}

/// One character wrong, or two neighbours swapped: a typing slip.
pub fn slip(a: &str, b: &str) -> bool {
    a.len() == b.len() && one_edit(a, b)
}

/// Whether `a` and `b` are at most one edit apart (a character added,
/// dropped or replaced, or two neighbours swapped): what
/// `strsim::damerau_levenshtein(a, b) <= 1` says, without its tables.
/// Past the common start and end, what is left of each must be at most
/// one character, or two that are the other's two swapped.
pub fn one_edit(a: &str, b: &str) -> bool {
    let start = a
        .chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum::<usize>();
    let (a, b) = (&a[start..], &b[start..]);
    let end = a
        .chars()
        .rev()
        .zip(b.chars().rev())
        .take_while(|(x, y)| x == y)
        .map(|(x, _)| x.len_utf8())
        .sum::<usize>();
    let (a, b) = (&a[..a.len() - end], &b[..b.len() - end]);
    let mut x = a.chars();
    let mut y = b.chars();
    match (x.next(), x.next(), x.next(), y.next(), y.next(), y.next()) {
        (_, None, _, _, None, _) => true,
        (Some(p), Some(q), None, Some(r), Some(s), None) => p == s && q == r,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
