//! Blocking: which customers are worth comparing. Each subject gets a few
//! keys (a shared identifier, email or phone; a name with the other name's
//! initial; a birth date with an initial or the postcode; a postcode with
//! an initial), and only subjects sharing a key are compared, so the work
//! for one change grows with its candidates, not with the directory. A key
//! held by more than `max_block` subjects names no candidates: it is too
//! common to tell anyone apart, and the other keys still catch the real
//! duplicates.

use std::collections::{BTreeSet, HashMap};

use super::subject::Subject;

/// The blocking keys of a subject, sorted and each once.
pub fn keys(s: &Subject) -> Vec<String> {
    let mut keys = BTreeSet::new();
    for (kind, value) in &s.identifiers {
        keys.insert(format!("i:{kind}:{value}"));
    }
    for e in &s.emails {
        keys.insert(format!("e:{e}"));
    }
    for p in &s.phones {
        keys.insert(format!("p:{p}"));
    }
    let initial = |n: &Option<String>| n.as_deref().and_then(|n| n.chars().next());
    let initials: Vec<char> = [initial(&s.given), initial(&s.family)].into_iter().flatten().collect();
    // A name with the other's initial; the same namespace for both names,
    // so that a record with the names swapped shares its keys.
    if let (Some(g), Some(f)) = (&s.given, &s.family) {
        keys.insert(format!("n:{f}:{}", g.chars().next().unwrap_or('_')));
        keys.insert(format!("n:{g}:{}", f.chars().next().unwrap_or('_')));
    }
    let postcodes: BTreeSet<&str> = s.addresses.iter().filter_map(|a| a.postcode.as_deref()).collect();
    if let Some(birth) = &s.birth {
        for i in &initials {
            keys.insert(format!("b:{birth}:{i}"));
        }
        for p in &postcodes {
            keys.insert(format!("bz:{birth}:{p}"));
        }
    }
    for p in &postcodes {
        for i in &initials {
            keys.insert(format!("z:{p}:{i}"));
        }
    }
    keys.into_iter().collect()
}

/// Every pair of subjects (by index, the lower first, each once) that
/// shares a key held by at most `max_block` subjects.
pub fn candidate_pairs(subjects: &[Subject], max_block: usize) -> Vec<(usize, usize)> {
    let mut blocks: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, s) in subjects.iter().enumerate() {
        for key in keys(s) {
            blocks.entry(key).or_default().push(i);
        }
    }
    let mut pairs = BTreeSet::new();
    for members in blocks.values() {
        if members.len() < 2 || members.len() > max_block {
            continue;
        }
        for (n, &i) in members.iter().enumerate() {
            for &j in &members[n + 1..] {
                pairs.insert((i.min(j), i.max(j)));
            }
        }
    }
    pairs.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persons::subject::Place;

    fn subject(given: &str, family: &str, birth: &str, postcode: &str) -> Subject {
        Subject {
            id: format!("{given}-{family}"),
            given: Some(given.into()),
            family: Some(family.into()),
            birth: Some(birth.into()),
            addresses: vec![Place {
                postcode: Some(postcode.into()),
                ..Place::default()
            }],
            ..Subject::default()
        }
    }

    #[test]
    fn a_typo_in_either_name_still_shares_a_key() {
        let a = subject("ryan", "clarke", "19800102", "2000");
        let typo = subject("rian", "clarke", "19800102", "2000");
        let swapped = subject("clarke", "ryan", "19850101", "3000");
        let stranger = subject("zoe", "young", "19700101", "4000");
        let shares = |x: &Subject, y: &Subject| keys(x).iter().any(|k| keys(y).contains(k));
        assert!(shares(&a, &typo));
        assert!(shares(&a, &swapped));
        assert!(!shares(&a, &stranger));
    }

    #[test]
    fn a_key_held_by_too_many_names_no_candidates() {
        let many: Vec<Subject> = (0..5)
            .map(|i| subject(&format!("n{i}"), &format!("f{i}"), &format!("1980010{i}"), "2000"))
            .collect();
        // Only the postcode key `z:2000:…` is shared, and by initials n/f.
        assert_eq!(candidate_pairs(&many, 10).len(), 10);
        assert_eq!(candidate_pairs(&many, 4), vec![]);
    }
}
