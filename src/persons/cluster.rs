//! From scored pairs to persons. Constraints come first: a platform merge
//! or an operator's `link` joins two customers whatever the model says,
//! and an operator's `separate` keeps them apart whatever it says. Then
//! the model's links, strongest first, each joining two persons only if
//! the whole person stays plausible: no two birth dates that disagree
//! beyond a slip, no two different ids of one kind, no household (one
//! family name, different given names) unless an identifier says it is one
//! person. A link the checks refuse, and each pair between the thresholds,
//! is a review for an operator.
//!
//! The result depends only on the subjects, the edges and the
//! constraints, never on the order they came in: so an incremental
//! resolver that re-clusters the persons a change touches agrees with a
//! rebuild.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::compare::{Birth, Comparison, Conflict, Evidence, Level, Rules, Settings, birth_level, name_level, slip};
use super::subject::Subject;

/// Who decided that two customers are one person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decider {
    /// A shared government or platform id.
    Identifier,
    Model,
    Operator,
    /// A platform merge (Treez).
    Platform,
}

/// A scored pair of customers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    /// The two customer ids, the lower first.
    pub customers: [String; 2],
    pub score: f64,
    pub evidence: Vec<Evidence>,
    #[serde(rename = "decidedBy")]
    pub decided_by: Decider,
    #[serde(skip)]
    pub conflict: Option<Conflict>,
}

impl Edge {
    pub fn scored(a: &str, b: &str, c: Comparison) -> Edge {
        let (a, b) = if a <= b { (a, b) } else { (b, a) };
        Edge {
            customers: [a.to_owned(), b.to_owned()],
            score: c.score,
            evidence: c.evidence,
            decided_by: if c.identified {
                Decider::Identifier
            } else {
                Decider::Model
            },
            conflict: c.conflict,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Link,
    Separate,
}

/// An operator's decision or a platform merge about two customers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Constraint {
    pub customers: [String; 2],
    pub decision: Decision,
    pub by: Decider,
}

/// One person: its customers and the links that hold them together.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Sorted.
    pub members: Vec<String>,
    pub links: Vec<Edge>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Clustering {
    /// Sorted by their first member.
    pub groups: Vec<Group>,
    /// Possible matches for an operator, sorted by customers.
    pub reviews: Vec<Edge>,
}

/// Groups `subjects` into persons.
pub fn cluster(subjects: &[Subject], edges: Vec<Edge>, constraints: &[Constraint], settings: &Settings) -> Clustering {
    let index: HashMap<&str, usize> = subjects.iter().enumerate().map(|(i, s)| (s.id.as_str(), i)).collect();
    let mut sets = Sets::new(subjects.len());
    let mut links: Vec<Edge> = Vec::new();

    let separated: BTreeSet<(usize, usize)> = constraints
        .iter()
        .filter(|c| c.decision == Decision::Separate)
        .filter_map(|c| pair(&index, &c.customers))
        .collect();
    let forced: BTreeSet<&Constraint> = constraints.iter().filter(|c| c.decision == Decision::Link).collect();
    let by_pair: HashMap<(usize, usize), &Edge> = edges
        .iter()
        .filter_map(|e| Some((pair(&index, &e.customers)?, e)))
        .collect();
    for c in &forced {
        let Some((i, j)) = pair(&index, &c.customers) else {
            continue;
        };
        sets.union(i, j);
        let mut link = by_pair.get(&(i, j)).map(|e| (*e).clone()).unwrap_or_else(|| Edge {
            customers: c.customers.clone(),
            score: 0.0,
            evidence: Vec::new(),
            decided_by: c.by,
            conflict: None,
        });
        link.decided_by = c.by;
        links.push(link);
    }

    let mut model: Vec<&Edge> = edges
        .iter()
        .filter(|e| e.score >= settings.review)
        .filter(|e| pair(&index, &e.customers).is_some_and(|p| !forced_pair(&forced, p, &index)))
        .collect();
    model.sort_by(|x, y| y.score.total_cmp(&x.score).then_with(|| x.customers.cmp(&y.customers)));
    let mut reviews = Vec::new();
    for edge in model {
        let Some((i, j)) = pair(&index, &edge.customers) else {
            continue;
        };
        let (ri, rj) = (sets.find(i), sets.find(j));
        if ri == rj {
            continue;
        }
        if separated_across(&sets, &separated, ri, rj) {
            continue;
        }
        let allowed = edge.score >= settings.link
            && edge.conflict.is_none()
            && plausible(
                subjects,
                &sets,
                ri,
                rj,
                settings.rules,
                edge.decided_by == Decider::Identifier,
            );
        if allowed {
            sets.union(ri, rj);
            links.push(edge.clone());
        } else if edge.conflict.is_none() || (edge.score >= settings.link && edge.conflict != Some(Conflict::Household))
        {
            // A conflict keeps a pair apart; a birth date or an id that
            // disagrees asks an operator only when everything else says
            // they are one. Households never do.
            reviews.push(edge.clone());
        }
    }
    // A review whose customers ended up in one person is settled.
    reviews.retain(|e| pair(&index, &e.customers).is_some_and(|(i, j)| sets.find(i) != sets.find(j)));
    reviews.sort_by(|x, y| x.customers.cmp(&y.customers));

    let mut groups: BTreeMap<usize, Group> = BTreeMap::new();
    for (i, subject) in subjects.iter().enumerate() {
        let root = sets.find(i);
        groups
            .entry(root)
            .or_insert_with(|| Group {
                members: Vec::new(),
                links: Vec::new(),
            })
            .members
            .push(subject.id.clone());
    }
    for link in links {
        if let Some((i, _)) = pair(&index, &link.customers) {
            let root = sets.find(i);
            groups.get_mut(&root).expect("a link's group").links.push(link);
        }
    }
    let mut groups: Vec<Group> = groups
        .into_values()
        .map(|mut g| {
            g.members.sort_unstable();
            g.links.sort_by(|x, y| x.customers.cmp(&y.customers));
            g
        })
        .collect();
    groups.sort_by(|x, y| x.members.cmp(&y.members));
    Clustering { groups, reviews }
}

fn pair(index: &HashMap<&str, usize>, customers: &[String; 2]) -> Option<(usize, usize)> {
    let (i, j) = (*index.get(customers[0].as_str())?, *index.get(customers[1].as_str())?);
    (i != j).then(|| (i.min(j), i.max(j)))
}

fn forced_pair(forced: &BTreeSet<&Constraint>, p: (usize, usize), index: &HashMap<&str, usize>) -> bool {
    forced.iter().any(|c| pair(index, &c.customers) == Some(p))
}

fn separated_across(sets: &Sets, separated: &BTreeSet<(usize, usize)>, ri: usize, rj: usize) -> bool {
    separated.iter().any(|&(x, y)| {
        let (fx, fy) = (sets.find_const(x), sets.find_const(y));
        (fx == ri && fy == rj) || (fx == rj && fy == ri)
    })
}

/// Whether the persons rooted at `ri` and `rj` may be one: the checks of
/// [`Rules`] over every pair of their members.
fn plausible(subjects: &[Subject], sets: &Sets, ri: usize, rj: usize, rules: Rules, identified: bool) -> bool {
    let left = sets.members(ri);
    let right = sets.members(rj);
    for &i in &left {
        for &j in &right {
            let (a, b) = (&subjects[i], &subjects[j]);
            if rules.birth_dates
                && let (Some(x), Some(y)) = (&a.birth, &b.birth)
                && birth_level(x, y) == Birth::Different
            {
                return false;
            }
            if rules.identifiers
                && a.identifiers.iter().any(|(k, x)| {
                    let theirs: Vec<&String> = b.identifiers.iter().filter(|(l, _)| l == k).map(|(_, y)| y).collect();
                    !theirs.is_empty() && !theirs.iter().any(|y| *y == x || slip(x, y))
                })
            {
                return false;
            }
            if rules.households && !identified && household(a, b) {
                return false;
            }
        }
    }
    true
}

/// One family name, different given names (and not the two swapped).
pub fn household(a: &Subject, b: &Subject) -> bool {
    let given = name_level(a.given.as_deref(), b.given.as_deref(), true);
    let family = name_level(a.family.as_deref(), b.family.as_deref(), false);
    let swapped = name_level(a.given.as_deref(), b.family.as_deref(), false).is_some_and(Level::agrees)
        && name_level(a.family.as_deref(), b.given.as_deref(), false).is_some_and(Level::agrees);
    given == Some(Level::Different) && family.is_some_and(Level::agrees) && !swapped
}

/// Union–find over subject indexes, with each root's members listed.
struct Sets {
    parent: Vec<usize>,
    members: Vec<Vec<usize>>,
}

impl Sets {
    fn new(n: usize) -> Self {
        Sets {
            parent: (0..n).collect(),
            members: (0..n).map(|i| vec![i]).collect(),
        }
    }

    fn find(&mut self, mut i: usize) -> usize {
        while self.parent[i] != i {
            self.parent[i] = self.parent[self.parent[i]];
            i = self.parent[i];
        }
        i
    }

    fn find_const(&self, mut i: usize) -> usize {
        while self.parent[i] != i {
            i = self.parent[i];
        }
        i
    }

    fn members(&self, root: usize) -> Vec<usize> {
        self.members[root].clone()
    }

    fn union(&mut self, i: usize, j: usize) {
        let (ri, rj) = (self.find(i), self.find(j));
        if ri == rj {
            return;
        }
        // The smaller root survives, so that the result is independent of
        // which side an edge names first.
        let (keep, gone) = (ri.min(rj), ri.max(rj));
        self.parent[gone] = keep;
        let moved = std::mem::take(&mut self.members[gone]);
        self.members[keep].extend(moved);
    }
}
