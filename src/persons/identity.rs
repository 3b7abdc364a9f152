//! Stable person ids (`per_…`): when the clusterer regroups customers, each
//! new group keeps an id it had before where it can. When two persons
//! join, the older id survives and the other becomes its alias (it still
//! resolves); when a person splits, the part holding most of its customers
//! keeps the id and the rest get new ones. Ids are time-ordered (UUID v7
//! text), so "older" is "smaller".

use std::collections::{BTreeMap, HashMap};

use super::cluster::Group;

/// What [`assign`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Assignment {
    /// One id per group, in the groups' order.
    pub ids: Vec<String>,
    /// `(absorbed, survivor)`: ids that stopped naming a group of their
    /// own, each with the id that now holds most of its customers.
    pub aliases: Vec<(String, String)>,
}

/// Ids for `groups`, given each customer's person before (`prior`), with
/// `mint` for a new id.
pub fn assign(groups: &[Group], prior: &HashMap<String, String>, mut mint: impl FnMut() -> String) -> Assignment {
    let group_of: HashMap<&str, usize> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, group)| group.members.iter().map(move |m| (m.as_str(), g)))
        .collect();
    // Each old id, oldest first, with how many of its customers each new
    // group holds.
    let mut old: BTreeMap<&str, BTreeMap<usize, usize>> = BTreeMap::new();
    for (customer, id) in prior {
        if let Some(&g) = group_of.get(customer.as_str()) {
            *old.entry(id.as_str()).or_default().entry(g).or_default() += 1;
        }
    }
    let mut ids: Vec<Option<String>> = vec![None; groups.len()];
    let mut absorbed: Vec<(&str, usize)> = Vec::new();
    for (id, counts) in &old {
        // The group holding most of its customers; ties go to the group
        // that sorts first.
        let (&g, _) = counts
            .iter()
            .max_by(|(ga, ca), (gb, cb)| ca.cmp(cb).then_with(|| gb.cmp(ga)))
            .expect("an old id counts at least one customer");
        match &ids[g] {
            None => ids[g] = Some((*id).to_owned()),
            Some(_) => absorbed.push((id, g)),
        }
    }
    let ids: Vec<String> = ids.into_iter().map(|id| id.unwrap_or_else(&mut mint)).collect();
    let aliases = absorbed
        .into_iter()
        .map(|(id, g)| (id.to_owned(), ids[g].clone()))
        .collect();
    Assignment { ids, aliases }
}

/// A new person id.
pub fn new_id() -> String {
    format!("per_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(of: &[&[&str]]) -> Vec<Group> {
        of.iter()
            .map(|members| Group {
                members: members.iter().map(|m| m.to_string()).collect(),
                links: Vec::new(),
            })
            .collect()
    }

    fn prior(of: &[(&str, &str)]) -> HashMap<String, String> {
        of.iter().map(|(c, p)| (c.to_string(), p.to_string())).collect()
    }

    fn minting() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("per_new{n}")
        }
    }

    #[test]
    fn a_join_keeps_the_older_id_and_the_other_resolves_to_it() {
        let a = assign(
            &groups(&[&["a", "b"]]),
            &prior(&[("a", "per_2"), ("b", "per_1")]),
            minting(),
        );
        assert_eq!(a.ids, ["per_1"]);
        assert_eq!(a.aliases, [("per_2".to_owned(), "per_1".to_owned())]);
    }

    #[test]
    fn a_split_keeps_the_id_where_most_customers_are() {
        let a = assign(
            &groups(&[&["a"], &["b", "c"]]),
            &prior(&[("a", "per_1"), ("b", "per_1"), ("c", "per_1")]),
            minting(),
        );
        assert_eq!(a.ids, ["per_new1", "per_1"]);
        assert_eq!(a.aliases, []);
    }

    #[test]
    fn new_customers_get_new_ids_and_ids_are_time_ordered() {
        let a = assign(&groups(&[&["a"], &["b"]]), &prior(&[("b", "per_1")]), minting());
        assert_eq!(a.ids, ["per_new1", "per_1"]);
        let (x, y) = (new_id(), new_id());
        assert!(x.starts_with("per_") && x < y);
    }
}
