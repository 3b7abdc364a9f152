//! The incremental resolver against a rebuild: whatever order records
//! arrive, change and go in, and however the steps batch them, the persons
//! equal those of one step over the final records.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::{Address, Identifier, Profile};

const GIVEN: [&str; 6] = ["mary", "susan", "robert", "tom", "ana", "li"];
const FAMILY: [&str; 4] = ["lee", "quillfeather", "okafor", "smith"];

/// A family member: one human, whose records vary.
#[derive(Debug, Clone)]
struct Human {
    given: usize,
    family: usize,
    birth: String,
    home: usize,
}

/// One record of human `who`: which of its fields it carries.
#[derive(Debug, Clone)]
struct Variant {
    who: usize,
    email: bool,
    birth: bool,
    licence: bool,
    nickname: bool,
}

fn record(id: &str, version: u64, humans: &[Human], v: &Variant) -> Customer {
    let h = &humans[v.who % humans.len()];
    let given = if v.nickname && GIVEN[h.given] == "robert" {
        "bob"
    } else {
        GIVEN[h.given]
    };
    Customer {
        id: id.to_owned(),
        source: "s".into(),
        external_id: id.to_owned(),
        profile: Profile {
            first_name: Some(given.into()),
            last_name: Some(FAMILY[h.family].into()),
            email: v.email.then(|| format!("human{}@mail.org", v.who % humans.len())),
            birth_date: v.birth.then(|| h.birth.clone()),
            identifiers: if v.licence {
                vec![Identifier {
                    kind: "drivers_license".into(),
                    value: format!("D{:06}", 104_729 * (v.who % humans.len() + 1)),
                }]
            } else {
                Vec::new()
            },
            addresses: vec![Address {
                street1: Some(format!("{} Stanley Street", h.home + 1)),
                postal_code: Some("2000".into()),
                ..Address::default()
            }],
            ..Profile::default()
        },
        merged_into: None,
        merged_from: Vec::new(),
        version,
        changed_at: UtcMillis::from_timestamp(jiff::Timestamp::from_second(0).unwrap()),
    }
}

fn humans() -> impl Strategy<Value = Vec<Human>> {
    prop::collection::vec(
        (
            0..GIVEN.len(),
            0..FAMILY.len(),
            1950..2000u32,
            1..13u32,
            1..29u32,
            0..3usize,
        ),
        2..8,
    )
    .prop_map(|v| {
        v.into_iter()
            .map(|(given, family, y, m, d, home)| Human {
                given,
                family,
                birth: format!("{y}-{m:02}-{d:02}"),
                home,
            })
            .collect()
    })
}

fn variant() -> impl Strategy<Value = Variant> {
    (
        0..8usize,
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.2),
        any::<bool>(),
    )
        .prop_map(|(who, email, birth, licence, nickname)| Variant {
            who,
            email,
            birth,
            licence,
            nickname,
        })
}

/// A change: record `id` becomes a variant, or goes (`None`); `flush`
/// ends a step after it.
fn changes() -> impl Strategy<Value = Vec<(usize, Option<Variant>, bool)>> {
    prop::collection::vec(
        (0..12usize, prop::option::weighted(0.9, variant()), any::<bool>()),
        1..40,
    )
}

fn minting() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("per_{n:06}")
    }
}

fn settings() -> Settings {
    // Every key names candidates: a directory this small has no common key.
    Settings::default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn incremental_steps_equal_one_rebuild(humans in humans(), changes in changes()) {
        let mut index = Index::new(settings());
        let mut mint = minting();
        let mut now: BTreeMap<String, Customer> = BTreeMap::new();
        let mut batch: BTreeMap<String, Option<Customer>> = BTreeMap::new();
        for (n, (id, change, flush)) in changes.iter().enumerate() {
            let id = format!("c{id}");
            let record = change.as_ref().map(|v| record(&id, n as u64 + 1, &humans, v));
            match &record {
                Some(r) => now.insert(id.clone(), r.clone()),
                None => now.remove(&id),
            };
            batch.insert(id, record);
            if *flush {
                index.step(std::mem::take(&mut batch).into_iter().collect(), &mut mint, UtcMillis::now());
            }
        }
        index.step(batch.into_iter().collect(), &mut mint, UtcMillis::now());

        let mut rebuilt = Index::new(settings());
        rebuilt.step(
            now.iter().map(|(id, c)| (id.clone(), Some(c.clone()))).collect(),
            &mut minting(),
            UtcMillis::now(),
        );
        prop_assert_eq!(index.groups(), rebuilt.groups());
    }
}

#[test]
fn a_join_and_a_split_keep_ids_and_an_erased_customer_leaves() {
    let humans = vec![Human {
        given: 0,
        family: 1,
        birth: "1970-01-02".into(),
        home: 0,
    }];
    let full = Variant {
        who: 0,
        email: true,
        birth: true,
        licence: false,
        nickname: false,
    };
    let mut index = Index::new(settings());
    let mut mint = minting();
    let first = index.step(
        vec![("a".into(), Some(record("a", 1, &humans, &full)))],
        &mut mint,
        UtcMillis::now(),
    );
    assert_eq!(first.upserts.len(), 1);
    assert!(first.upserts[0].created);
    let id = first.upserts[0].id.clone();
    let second = index.step(
        vec![("b".into(), Some(record("b", 1, &humans, &full)))],
        &mut mint,
        UtcMillis::now(),
    );
    assert_eq!(second.upserts.len(), 1);
    assert_eq!(second.upserts[0].id, id);
    assert_eq!(second.upserts[0].doc.customer_ids, ["a", "b"]);
    assert_eq!(second.upserts[0].doc.links.len(), 1);
    let again = index.step(
        vec![("b".into(), Some(record("b", 1, &humans, &full)))],
        &mut mint,
        UtcMillis::now(),
    );
    assert!(again.upserts.is_empty(), "a record seen again moved its person");
    assert!(index.holds("b", Some(1)) && !index.holds("b", Some(2)) && !index.holds("b", None));
    assert!(index.holds("z", None), "a customer never met has no record to resolve");
    let erased = index.step(vec![("a".into(), None)], &mut mint, UtcMillis::now());
    assert_eq!(erased.gone, ["a"]);
    assert!(index.holds("a", None));
    assert_eq!(erased.upserts[0].id, id);
    assert_eq!(erased.upserts[0].doc.customer_ids, ["b"]);
    assert!(erased.deleted.is_empty());
    let last = index.step(vec![("b".into(), None)], &mut mint, UtcMillis::now());
    assert_eq!(last.deleted, [id]);
    assert_eq!(index.person_count(), 0);
}
