//! A person's golden profile: for each field, one value from one of its
//! customers, with the customer it came from, so that the profile shows
//! its sources. A field comes from the most recently updated customer that
//! has it (the platform's `updatedAt`, then the directory's `changedAt`);
//! the birth date is the one most customers agree on, so that a single
//! mistyped record does not move it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::model::{Address, Customer, Identifier};

/// One field's value and the customer it came from.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Golden<T> {
    pub value: T,
    /// A customer id.
    pub from: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GoldenProfile {
    pub first_name: Option<Golden<String>>,
    pub last_name: Option<Golden<String>>,
    pub email: Option<Golden<String>>,
    /// E.164.
    pub phone: Option<Golden<String>>,
    pub birth_date: Option<Golden<String>>,
    pub address: Option<Golden<Address>>,
    /// One per kind.
    pub identifiers: Vec<Golden<Identifier>>,
}

/// The golden profile of a person's customers.
pub fn golden(members: &[&Customer]) -> GoldenProfile {
    let mut recent: Vec<&Customer> = members.to_vec();
    // Most recent first; the id breaks ties so the profile never depends
    // on the order customers were loaded in.
    recent.sort_by(|a, b| {
        (b.profile.updated_at, b.changed_at)
            .cmp(&(a.profile.updated_at, a.changed_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    let first = |get: &dyn Fn(&Customer) -> Option<String>| {
        recent.iter().find_map(|c| {
            get(c).map(|value| Golden {
                value,
                from: c.id.clone(),
            })
        })
    };
    let mut identifiers: BTreeMap<&str, Golden<Identifier>> = BTreeMap::new();
    for c in &recent {
        for i in &c.profile.identifiers {
            identifiers.entry(i.kind.as_str()).or_insert_with(|| Golden {
                value: i.clone(),
                from: c.id.clone(),
            });
        }
    }
    GoldenProfile {
        first_name: first(&|c| c.profile.first_name.clone()),
        last_name: first(&|c| c.profile.last_name.clone()),
        email: first(&|c| c.profile.email.clone()),
        phone: first(&|c| c.profile.phones.iter().find_map(|p| p.e164.clone())),
        birth_date: birth_date(&recent),
        address: recent.iter().find_map(|c| {
            let a = c
                .profile
                .addresses
                .iter()
                .find(|a| a.primary)
                .or(c.profile.addresses.first())?;
            Some(Golden {
                value: a.clone(),
                from: c.id.clone(),
            })
        }),
        identifiers: identifiers.into_values().collect(),
    }
}

/// The birth date most customers hold; among equals, the most recent.
fn birth_date(recent: &[&Customer]) -> Option<Golden<String>> {
    let mut votes: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (rank, c) in recent.iter().enumerate() {
        if let Some(d) = c.profile.birth_date.as_deref() {
            let entry = votes.entry(d).or_insert((0, rank));
            entry.0 += 1;
        }
    }
    let (date, (_, rank)) = votes
        .into_iter()
        .max_by(|(_, (na, ra)), (_, (nb, rb))| na.cmp(nb).then_with(|| rb.cmp(ra)))?;
    Some(Golden {
        value: date.to_owned(),
        from: recent[rank].id.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Profile, UtcMillis};

    fn customer(id: &str, updated: i64, first: Option<&str>, birth: Option<&str>) -> Customer {
        Customer {
            id: id.into(),
            source: "s".into(),
            external_id: id.into(),
            profile: Profile {
                first_name: first.map(str::to_owned),
                birth_date: birth.map(str::to_owned),
                updated_at: Some(UtcMillis::from_timestamp(
                    jiff::Timestamp::from_second(updated).unwrap(),
                )),
                ..Profile::default()
            },
            merged_into: None,
            merged_from: Vec::new(),
            version: 1,
            changed_at: UtcMillis::from_timestamp(jiff::Timestamp::from_second(0).unwrap()),
        }
    }

    #[test]
    fn each_field_comes_from_the_latest_customer_that_has_it() {
        let old = customer("s:old", 1, Some("Robert"), Some("1970-01-02"));
        let new = customer("s:new", 2, None, Some("1970-01-02"));
        let typo = customer("s:typo", 3, Some("Bob"), Some("1970-01-03"));
        let g = golden(&[&old, &new, &typo]);
        assert_eq!(
            g.first_name,
            Some(Golden {
                value: "Bob".into(),
                from: "s:typo".into()
            })
        );
        // Two customers agree on the birth date: the later of them gives it.
        assert_eq!(
            g.birth_date,
            Some(Golden {
                value: "1970-01-02".into(),
                from: "s:new".into()
            })
        );
        assert_eq!(g, golden(&[&typo, &old, &new]));
    }
}
