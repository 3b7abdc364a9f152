use super::*;
use crate::persons::subject::Place;

fn person(given: &str, family: &str, birth: &str) -> Subject {
    Subject {
        id: format!("{given}-{family}-{birth}"),
        given: Some(given.into()),
        family: Some(family.into()),
        birth: Some(birth.into()),
        addresses: vec![Place {
            street: Some("8 stanley st".into()),
            postcode: Some("2000".into()),
            city: Some("sydney".into()),
        }],
        ..Subject::default()
    }
}

fn score(a: &Subject, b: &Subject) -> Comparison {
    let mut tally = Tally::new(5);
    for s in [a, b] {
        tally.add(s);
    }
    compare(a, b, &tally, &Settings::default())
}

fn levels(c: &Comparison) -> Vec<(&'static str, &'static str)> {
    c.evidence.iter().map(|e| (e.field, e.comparison)).collect()
}

/// How `field` compared, and its weight.
fn weighed(c: &Comparison, field: &str) -> Option<(&'static str, f64)> {
    c.evidence
        .iter()
        .find(|e| e.field == field)
        .map(|e| (e.comparison, e.weight))
}

#[test]
fn the_same_person_with_a_typo_and_a_nickname_links() {
    let a = person("robert", "quillfeather", "19700102");
    let b = person("bob", "quilfeather", "19700102");
    let c = score(&a, &b);
    assert!(c.score >= Settings::default().link, "{c:?}");
    assert_eq!(c.conflict, None);
    assert!(levels(&c).contains(&("given_name", "nickname")));
    assert!(levels(&c).contains(&("family_name", "typo")));
}

#[test]
fn a_father_and_son_of_one_name_and_address_conflict_on_birth_date() {
    let father = person("jules", "winnfield", "19480212");
    let son = person("jules", "winnfield", "19790523");
    let c = score(&father, &son);
    assert_eq!(c.conflict, Some(Conflict::BirthDate));
    assert!(levels(&c).contains(&("birth_date", "different")));
}

#[test]
fn a_day_and_month_swap_or_one_digit_is_a_slip_not_a_conflict() {
    assert_eq!(birth_level("19700102", "19700201"), Birth::Slip);
    assert_eq!(birth_level("19700102", "19700103"), Birth::Slip);
    assert_eq!(birth_level("19700102", "19071002"), Birth::Different);
    let c = score(&person("ann", "lee", "19700102"), &person("ann", "lee", "19700201"));
    assert_eq!(c.conflict, None);
}

#[test]
fn a_birth_date_slip_weighs_little_unless_a_contact_or_the_house_agrees() {
    // Strangers of one name and postcode, another house, a slip apart.
    let mut a = person("ann", "lee", "19700102");
    let mut b = person("ann", "lee", "19700103");
    b.addresses[0].street = Some("90 stanley st".into());
    assert_eq!(weighed(&score(&a, &b), "birth_date"), Some(("slip_alone", 1.0)));
    // The same house says the slip is one person's.
    b.addresses[0].street = a.addresses[0].street.clone();
    assert_eq!(weighed(&score(&a, &b), "birth_date"), Some(("slip", 3.5)));
    // So does a shared phone, even from another house.
    b.addresses[0].street = Some("90 stanley st".into());
    a.phones = vec!["+61412345678".into()];
    b.phones = a.phones.clone();
    assert_eq!(weighed(&score(&a, &b), "birth_date"), Some(("slip", 3.5)));
}

#[test]
fn household_members_conflict_unless_an_identifier_agrees() {
    let mut mother = person("mary", "lee", "19700102");
    let mut twin = person("susan", "lee", "19700102");
    assert_eq!(score(&mother, &twin).conflict, Some(Conflict::Household));
    mother.identifiers = vec![("drivers_license".into(), "D123".into())];
    twin.identifiers = mother.identifiers.clone();
    let c = score(&mother, &twin);
    assert_eq!((c.conflict, c.identified), (None, true));
}

#[test]
fn twins_whose_common_names_look_alike_are_a_household_and_a_typo_is_not() {
    let michael = person("michael", "lee", "19900304");
    let c = score(&michael, &person("michelle", "lee", "19900304"));
    assert_eq!(c.conflict, Some(Conflict::Household));
    assert!(levels(&c).contains(&("given_name", "different")));
    // One edit is a typo, even between two common names.
    for (a, b) in [("michael", "micheal"), ("carol", "carl")] {
        let c = score(&person(a, "lee", "19900304"), &person(b, "lee", "19900304"));
        assert_eq!(c.conflict, None, "{a} {b}");
        assert!(levels(&c).contains(&("given_name", "typo")), "{a} {b}");
    }
    // Two spellings of one name are no household.
    let c = score(
        &person("stephen", "lee", "19900304"),
        &person("steven", "lee", "19900304"),
    );
    assert_eq!(c.conflict, None);
    assert!(levels(&c).contains(&("given_name", "similar")));
}

#[test]
fn a_postcode_a_digit_off_is_a_typo_at_one_house_and_another_place_at_two() {
    let a = person("linda", "ramirez", "19560206");
    let mut b = a.clone();
    b.addresses[0].postcode = Some("2001".into());
    assert_eq!(weighed(&score(&a, &b), "postcode"), Some(("typo", 1.0)));
    b.addresses[0].street = Some("183 johnson st".into());
    let c = score(&a, &b);
    assert!(levels(&c).contains(&("street", "other_number")));
    assert_eq!(weighed(&c, "postcode"), Some(("different", -2.5)));
    // One street: its postcode is one, and the digit a typo.
    b.addresses[0].street = Some("183 stanley st".into());
    let c = score(&a, &b);
    assert!(levels(&c).contains(&("street", "other_number")));
    assert_eq!(weighed(&c, "postcode"), Some(("typo", 1.0)));
}

#[test]
fn two_different_ids_of_one_kind_conflict_and_a_slip_does_not() {
    let mut a = person("ann", "lee", "19700102");
    let mut b = a.clone();
    a.identifiers = vec![("drivers_license".into(), "D1234567".into())];
    b.identifiers = vec![("drivers_license".into(), "X9999999".into())];
    assert_eq!(score(&a, &b).conflict, Some(Conflict::Identifier));
    b.identifiers = vec![("drivers_license".into(), "D1234576".into())];
    let c = score(&a, &b);
    assert_eq!(c.conflict, None);
    assert!(levels(&c).contains(&("identifier", "typo")));
    // Different kinds say nothing about each other.
    b.identifiers = vec![("state_medical_id".into(), "X9999999".into())];
    assert_eq!(score(&a, &b).conflict, None);
}

#[test]
fn a_common_surname_weighs_less_than_a_rare_one() {
    let mut tally = Tally::new(5);
    for i in 0..500 {
        tally.add(&person(&format!("g{i}"), "smith", "19000101"));
    }
    let (a, b) = (person("ann", "smith", "19700102"), person("ann", "smith", "19700102"));
    let (c, d) = (
        person("ann", "quillfeather", "19700102"),
        person("ann", "quillfeather", "19700102"),
    );
    for s in [&a, &b, &c, &d] {
        tally.add(s);
    }
    let settings = Settings::default();
    let family = |x: &Subject, y: &Subject| {
        compare(x, y, &tally, &settings)
            .evidence
            .into_iter()
            .find(|e| e.field == "family_name")
            .unwrap()
            .weight
    };
    assert!(
        family(&a, &b) + 3.0 < family(&c, &d),
        "{} vs {}",
        family(&a, &b),
        family(&c, &d)
    );
}

#[test]
fn a_phone_shared_by_many_names_stops_counting() {
    let desk = "+61290000000".to_owned();
    let mut tally = Tally::new(5);
    let mut people: Vec<Subject> = (0..8)
        .map(|i| Subject {
            phones: vec![desk.clone()],
            ..person(&format!("g{i}"), &format!("f{i}"), "19000101")
        })
        .collect();
    for s in &people {
        tally.add(s);
    }
    let b = people.pop().unwrap();
    let c = compare(&people[0], &b, &tally, &Settings::default());
    assert!(levels(&c).contains(&("phone", "over_shared")), "{c:?}");
    assert_eq!(c.evidence.iter().find(|e| e.field == "phone").unwrap().weight, 0.0);
}

#[test]
fn swapped_names_agree() {
    let c = score(
        &person("ryan", "clarke", "19700102"),
        &person("clarke", "ryan", "19700102"),
    );
    assert!(levels(&c).contains(&("name", "swapped")));
    assert_eq!(c.conflict, None);
}

#[test]
fn strangers_score_below_review() {
    let a = person("ann", "lee", "19700102");
    let mut b = person("zoe", "young", "19551230");
    b.addresses[0].street = Some("1 other rd".into());
    assert!(score(&a, &b).score < Settings::default().review);
}

#[test]
fn lenient_rules_weigh_conflicts_instead_of_refusing_them() {
    let father = person("jules", "winnfield", "19480212");
    let son = person("jules", "winnfield", "19790523");
    let settings = Settings {
        rules: Rules::LENIENT,
        ..Settings::default()
    };
    let c = compare(&father, &son, &Tally::new(5), &settings);
    assert_eq!(c.conflict, None);
    assert!(c.evidence.iter().any(|e| e.field == "birth_date" && e.weight < 0.0));
}

proptest::proptest! {
    /// `one_edit` says what `strsim::damerau_levenshtein(a, b) <= 1` says
    /// (names, dates and ids of a few letters, accented ones among them).
    #[test]
    fn one_edit_agrees_with_the_damerau_distance(a in "[aé1]{0,5}", b in "[aé1]{0,5}") {
        proptest::prop_assert_eq!(one_edit(&a, &b), strsim::damerau_levenshtein(&a, &b) <= 1);
    }
}
