//! The matcher end to end: persons from subjects, with constraints, and
//! properties that must hold whatever the input.

use proptest::prelude::*;

use super::*;
use crate::persons::subject::Place;

fn person(id: &str, given: &str, family: &str, birth: &str) -> Subject {
    Subject {
        id: id.into(),
        given: Some(given.into()),
        family: Some(family.into()),
        birth: Some(birth.into()),
        emails: vec![format!("{family}@mail.com")],
        addresses: vec![Place {
            street: Some("8 stanley st".into()),
            postcode: Some("2000".into()),
            city: None,
        }],
        ..Subject::default()
    }
}

fn members(c: &Clustering) -> Vec<Vec<&str>> {
    c.groups
        .iter()
        .map(|g| g.members.iter().map(String::as_str).collect())
        .collect()
}

fn separate(a: &str, b: &str) -> Constraint {
    Constraint {
        customers: [a.into(), b.into()],
        decision: Decision::Separate,
        by: Decider::Operator,
    }
}

#[test]
fn duplicates_join_and_a_household_stays_apart() {
    let subjects = vec![
        person("a1", "mary", "lee", "19700102"),
        person("a2", "mary", "lee", "19700102"),
        person("b", "susan", "lee", "19720304"),
        person("c", "tom", "lee", "19990101"),
    ];
    let c = resolve(&subjects, &[], &Settings::default());
    assert_eq!(members(&c), [vec!["a1", "a2"], vec!["b"], vec!["c"]]);
    let link = &c.groups[0].links[0];
    assert_eq!(link.decided_by, Decider::Model);
    assert!(
        link.evidence
            .iter()
            .any(|e| e.field == "email" && e.comparison == "exact")
    );
}

#[test]
fn a_chain_never_puts_disagreeing_birth_dates_into_one_person() {
    // b has no birth date: it links to a and to c, but a and c disagree.
    let mut b = person("b", "jules", "winnfield", "");
    b.birth = None;
    let subjects = vec![
        person("a", "jules", "winnfield", "19480212"),
        b,
        person("c", "jules", "winnfield", "19790523"),
    ];
    let c = resolve(&subjects, &[], &Settings::default());
    assert_eq!(c.groups.len(), 2, "{:?}", members(&c));
    assert!(
        !c.groups
            .iter()
            .any(|g| g.members.contains(&"a".to_owned()) && g.members.contains(&"c".to_owned()))
    );
}

#[test]
fn a_typo_between_twins_never_puts_the_twins_into_one_person() {
    // Michael and Michelle are twins of one house; "micheal" (Michael
    // entered again) is a typo to each of them, and only the
    // whole-person check keeps the twins apart.
    let subjects = vec![
        person("a1", "michael", "lee", "19900304"),
        person("a2", "micheal", "lee", "19900304"),
        person("b", "michelle", "lee", "19900304"),
    ];
    let c = resolve(&subjects, &[], &Settings::default());
    assert_eq!(members(&c), [vec!["a1", "a2"], vec!["b"]]);
}

#[test]
fn an_operator_separation_splits_and_a_link_joins_whatever_the_model_says() {
    let subjects = vec![
        person("a1", "mary", "lee", "19700102"),
        person("a2", "mary", "lee", "19700102"),
        person("z", "zoe", "young", "19551230"),
    ];
    let c = resolve(&subjects, &[separate("a1", "a2")], &Settings::default());
    assert_eq!(members(&c), [vec!["a1"], vec!["a2"], vec!["z"]]);
    assert_eq!(c.reviews, vec![], "a decided pair is no review");
    let link = Constraint {
        customers: ["a1".into(), "z".into()],
        decision: Decision::Link,
        by: Decider::Operator,
    };
    let c = resolve(&subjects, std::slice::from_ref(&link), &Settings::default());
    // z's birth date disagrees with a2's: the operator's link holds, and
    // the model cannot add a2 to that person.
    assert_eq!(members(&c), [vec!["a1", "z"], vec!["a2"]]);
    assert!(c.groups[0].links.iter().any(|l| l.decided_by == Decider::Operator));
    let mut subjects = subjects;
    subjects[2].birth = None;
    let c = resolve(&subjects, &[link], &Settings::default());
    assert_eq!(members(&c), [vec!["a1", "a2", "z"]]);
    assert!(c.groups[0].links.iter().any(|l| l.decided_by == Decider::Operator));
}

#[test]
fn a_shared_identifier_decides_the_link() {
    let mut a = person("a", "jo", "lee", "19700102");
    let mut b = person("b", "joanne", "lee-smith", "19700102");
    a.identifiers = vec![("drivers_license".into(), "D1234567".into())];
    b.identifiers = a.identifiers.clone();
    b.emails.clear();
    let c = resolve(&[a, b], &[], &Settings::default());
    assert_eq!(c.groups.len(), 1);
    assert_eq!(c.groups[0].links[0].decided_by, Decider::Identifier);
}

#[test]
fn a_pair_between_the_thresholds_is_a_review() {
    let a = person("a", "mary", "lee", "19700102");
    let mut b = person("b", "mary", "lee", "19700102");
    b.emails.clear();
    b.addresses.clear();
    b.birth = None;
    let settings = Settings {
        link: 100.0,
        ..Settings::default()
    };
    let c = resolve(&[a, b], &[], &settings);
    assert_eq!(c.groups.len(), 2);
    assert_eq!(c.reviews.len(), 1);
    assert_eq!(c.reviews[0].customers, ["a".to_owned(), "b".to_owned()]);
}

fn arb_subject(id: usize) -> impl Strategy<Value = Subject> {
    let names = prop::sample::select(vec!["mary", "marie", "susan", "tom", "thomas", "bob", "robert"]);
    let families = prop::sample::select(vec!["lee", "leigh", "young", "smith"]);
    let births = prop::option::of(prop::sample::select(vec![
        "19700102", "19700201", "19700103", "19880505",
    ]));
    let ids = prop::option::of(prop::sample::select(vec!["D1", "D2", "D1X"]));
    let emails = prop::option::of(prop::sample::select(vec!["a@m.com", "b@m.com"]));
    (names, families, births, ids, emails).prop_map(move |(g, f, b, i, e)| Subject {
        id: format!("c{id:02}"),
        given: Some(g.into()),
        family: Some(f.into()),
        birth: b.map(str::to_owned),
        emails: e.into_iter().map(str::to_owned).collect(),
        identifiers: i.into_iter().map(|v| ("dl".to_owned(), format!("{v}000"))).collect(),
        addresses: vec![Place {
            street: Some("8 stanley st".into()),
            postcode: Some("2000".into()),
            city: None,
        }],
        ..Subject::default()
    })
}

fn arb_subjects() -> impl Strategy<Value = Vec<Subject>> {
    (1..9usize).prop_flat_map(|n| (0..n).map(arb_subject).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, rng_algorithm: prop::test_runner::RngAlgorithm::XorShift, ..ProptestConfig::default() })]

    /// Every subject is in exactly one person, and no person holds two
    /// birth dates or two ids of one kind that disagree, nor two members
    /// of one household without an identifier between them.
    #[test]
    fn persons_partition_the_subjects_and_stay_plausible(subjects in arb_subjects()) {
        let c = resolve(&subjects, &[], &Settings::default());
        let mut all: Vec<&String> = c.groups.iter().flat_map(|g| &g.members).collect();
        all.sort();
        let mut ids: Vec<&String> = subjects.iter().map(|s| &s.id).collect();
        ids.sort();
        prop_assert_eq!(all, ids);
        for g in &c.groups {
            let of: Vec<&Subject> = subjects.iter().filter(|s| g.members.contains(&s.id)).collect();
            for a in &of {
                for b in &of {
                    if let (Some(x), Some(y)) = (&a.birth, &b.birth) {
                        prop_assert_ne!(compare::birth_level(x, y), compare::Birth::Different);
                    }
                    for (k, x) in &a.identifiers {
                        for (l, y) in &b.identifiers {
                            prop_assert!(k != l || x == y || compare::slip(x, y));
                        }
                    }
                }
            }
        }
    }

    /// The persons depend on the subjects, not on the order they come in:
    /// what makes an incremental resolver agree with a rebuild.
    #[test]
    fn persons_do_not_depend_on_the_order_of_the_subjects(subjects in arb_subjects(), seed in any::<u64>()) {
        let mut shuffled = subjects.clone();
        let n = shuffled.len();
        for i in (1..n).rev() {
            shuffled.swap(i, (seed.wrapping_mul(i as u64 + 7) % (i as u64 + 1)) as usize);
        }
        let settings = Settings::default();
        prop_assert_eq!(resolve(&subjects, &[], &settings), resolve(&shuffled, &[], &settings));
    }

    /// An operator's separation always holds.
    #[test]
    fn a_separation_always_holds(subjects in arb_subjects()) {
        prop_assume!(subjects.len() >= 2);
        let (a, b) = (subjects[0].id.clone(), subjects[1].id.clone());
        let c = resolve(&subjects, &[separate(&a, &b)], &Settings::default());
        prop_assert!(!c.groups.iter().any(|g| g.members.contains(&a) && g.members.contains(&b)));
    }
}
