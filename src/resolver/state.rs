//! The resolver's memory: every customer's subject, its blocking keys and
//! the counts of its values, each customer's person, each person's
//! customers and links, and operators' decisions. A step takes the records
//! that changed and returns what to write: pure, so that a step can be
//! tested against a rebuild without a store.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Customer, UtcMillis};
use crate::persons::compare::{Field, holder, values};
use crate::persons::{self, Clustering, Constraint, Decider, Frequencies, Settings, Subject, blocking, identity};
use crate::store::persons::{Link, PersonDoc, PersonWrite, Resolution, Resolved, StoredDecision};

/// How common each value is, as [`persons::Tally`] counts it, with
/// removal: a changed record takes its old values back.
#[derive(Debug, Default)]
struct Counts {
    total: u64,
    cap: u64,
    values: HashMap<(Field, String), Holders>,
}

#[derive(Debug, Default)]
struct Holders {
    count: u64,
    /// How many holders have each name.
    names: HashMap<String, u32>,
}

impl Counts {
    fn add(&mut self, s: &Subject) {
        self.total += 1;
        let who = holder(s);
        for value in values(s) {
            let h = self.values.entry(value).or_default();
            h.count += 1;
            *h.names.entry(who.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, s: &Subject) {
        self.total -= 1;
        let who = holder(s);
        for value in values(s) {
            let Some(h) = self.values.get_mut(&value) else { continue };
            h.count -= 1;
            if let Some(n) = h.names.get_mut(&who) {
                *n -= 1;
                if *n == 0 {
                    h.names.remove(&who);
                }
            }
            if h.count == 0 {
                self.values.remove(&value);
            }
        }
    }
}

impl Frequencies for Counts {
    fn total(&self) -> u64 {
        self.total
    }
    fn count(&self, field: Field, value: &str) -> u64 {
        self.values.get(&(field, value.to_owned())).map_or(0, |h| h.count)
    }
    fn names(&self, field: Field, value: &str) -> u64 {
        self.values
            .get(&(field, value.to_owned()))
            .map_or(0, |h| (h.names.len() as u64).min(self.cap))
    }
}

/// See the module's documentation.
#[derive(Debug)]
pub struct Index {
    settings: Settings,
    subjects: HashMap<String, Subject>,
    blocks: HashMap<String, BTreeSet<String>>,
    counts: Counts,
    person_of: HashMap<String, String>,
    /// The version of each record resolved, merged ones too.
    versions: HashMap<String, u64>,
    persons: HashMap<String, PersonDoc>,
    constraints: BTreeMap<[String; 2], Constraint>,
}

impl Index {
    pub fn new(settings: Settings) -> Self {
        let cap = u64::from(settings.max_shared) + 1;
        Index {
            settings,
            subjects: HashMap::new(),
            blocks: HashMap::new(),
            counts: Counts {
                cap,
                ..Counts::default()
            },
            person_of: HashMap::new(),
            versions: HashMap::new(),
            persons: HashMap::new(),
            constraints: BTreeMap::new(),
        }
    }

    /// The index of what was resolved, holding `customers` (every record
    /// now): returns it with the ids whose record differs from the one
    /// resolved (changed, new, or gone), which the next step resolves.
    pub fn load(settings: Settings, resolved: Resolved, customers: Vec<Customer>) -> (Self, Vec<String>) {
        let mut index = Index::new(settings);
        index.set_decisions(resolved.decisions);
        for p in resolved.persons {
            index.persons.insert(
                p.id,
                PersonDoc {
                    customer_ids: p.customer_ids,
                    links: p.links,
                },
            );
        }
        let mut stale: BTreeSet<String> = BTreeSet::new();
        for (customer, person, version) in resolved.members {
            if let Some(person) = person {
                index.person_of.insert(customer.clone(), person);
            }
            index.versions.insert(customer.clone(), version);
            // Gone unless a record says otherwise below.
            stale.insert(customer);
        }
        for c in customers {
            if index.versions.get(&c.id) == Some(&c.version) {
                stale.remove(&c.id);
            } else {
                stale.insert(c.id.clone());
            }
            if let Some(s) = Subject::of(&c) {
                index.insert(s);
            }
        }
        (index, stale.into_iter().collect())
    }

    /// Operators' decisions, all of them.
    pub fn set_decisions(&mut self, decisions: Vec<StoredDecision>) {
        self.constraints = decisions
            .into_iter()
            .map(|d| {
                let c = Constraint {
                    customers: d.customers.clone(),
                    decision: d.decision,
                    by: Decider::Operator,
                };
                (d.customers, c)
            })
            .collect();
    }

    pub fn person_count(&self) -> usize {
        self.persons.len()
    }

    fn insert(&mut self, s: Subject) {
        for key in blocking::keys(&s) {
            self.blocks.entry(key).or_default().insert(s.id.clone());
        }
        self.counts.add(&s);
        self.subjects.insert(s.id.clone(), s);
    }

    fn remove(&mut self, id: &str) {
        let Some(s) = self.subjects.remove(id) else { return };
        for key in blocking::keys(&s) {
            if let Some(block) = self.blocks.get_mut(&key) {
                block.remove(id);
                if block.is_empty() {
                    self.blocks.remove(&key);
                }
            }
        }
        self.counts.remove(&s);
    }

    /// Resolves the records that changed (`None`: gone), with `mint` for
    /// new person ids: updates the index and returns what to write (its
    /// position fields left for the caller).
    pub fn step(
        &mut self,
        records: Vec<(String, Option<Customer>)>,
        mint: &mut dyn FnMut() -> String,
        at: UtcMillis,
    ) -> Resolution {
        let changed: BTreeSet<String> = records.iter().map(|(id, _)| id.clone()).collect();
        let mut touched: BTreeSet<String> = changed.iter().filter_map(|c| self.person_of.get(c).cloned()).collect();
        let mut merged = BTreeSet::new();
        let mut gone = Vec::new();
        for (id, record) in records {
            self.remove(&id);
            match record {
                Some(c) => {
                    self.versions.insert(id.clone(), c.version);
                    match Subject::of(&c) {
                        Some(s) => self.insert(s),
                        None => {
                            merged.insert(id);
                        }
                    }
                }
                None => {
                    self.versions.remove(&id);
                    gone.push(id);
                }
            }
        }

        // The changed customers, their candidates, and every customer of
        // the persons either belongs to; then, until nothing moves, the
        // candidates of each customer that lost a companion (left free to
        // join someone else) and their persons.
        let mut scope: BTreeSet<String> = BTreeSet::new();
        let mut expanded: BTreeSet<String> = BTreeSet::new();
        let mut frontier: Vec<String> = changed.iter().cloned().collect();
        let clustering = loop {
            for id in frontier {
                scope.insert(id.clone());
                self.add_candidates(&id, &mut scope);
                expanded.insert(id);
            }
            touched.extend(scope.iter().filter_map(|c| self.person_of.get(c).cloned()));
            for p in &touched {
                if let Some(doc) = self.persons.get(p) {
                    scope.extend(doc.customer_ids.iter().cloned());
                }
            }
            let clustering = self.cluster(&scope);
            frontier = clustering
                .groups
                .iter()
                .flat_map(|g| {
                    g.members
                        .iter()
                        .filter(|m| !expanded.contains(*m) && self.lost(m, &g.members))
                })
                .cloned()
                .collect();
            if frontier.is_empty() {
                break clustering;
            }
        };
        let prior: HashMap<String, String> = scope
            .iter()
            .filter_map(|c| Some((c.clone(), self.person_of.get(c)?.clone())))
            .collect();
        let assignment = identity::assign(&clustering.groups, &prior, &mut *mint);

        let mut step = Resolution {
            from: 0,
            to: 0,
            applied: Vec::new(),
            upserts: Vec::new(),
            deleted: Vec::new(),
            aliases: assignment.aliases,
            members: Vec::new(),
            gone: gone.clone(),
            reviews_of: changed.iter().cloned().collect(),
            reviews_among: Vec::new(),
            reviews: clustering.reviews.iter().map(Link::from).collect(),
            at,
        };
        let mut kept = BTreeSet::new();
        for (group, id) in clustering.groups.into_iter().zip(assignment.ids) {
            let doc = PersonDoc {
                links: group.links.iter().map(Link::from).collect(),
                customer_ids: group.members,
            };
            let created = !self.persons.contains_key(&id);
            let moved = doc.customer_ids.iter().any(|m| changed.contains(m));
            if created || moved || self.persons.get(&id) != Some(&doc) {
                step.upserts.push(PersonWrite {
                    id: id.clone(),
                    doc: doc.clone(),
                    created,
                });
            }
            for m in &doc.customer_ids {
                if self.person_of.get(m) != Some(&id) || changed.contains(m) {
                    step.members
                        .push((m.clone(), Some(id.clone()), self.versions.get(m).copied().unwrap_or(0)));
                    self.person_of.insert(m.clone(), id.clone());
                }
            }
            self.persons.insert(id.clone(), doc);
            kept.insert(id);
        }
        for id in merged {
            self.person_of.remove(&id);
            step.members
                .push((id.clone(), None, self.versions.get(&id).copied().unwrap_or(0)));
        }
        for id in &gone {
            self.person_of.remove(id);
        }
        for p in touched.into_iter().chain(prior.into_values()) {
            if !kept.contains(&p) && self.persons.remove(&p).is_some() {
                step.deleted.push(p);
            }
        }
        step.deleted.sort_unstable();
        // Open reviews of the changed customers, and among those resolved
        // again, are replaced.
        step.reviews_among = scope.into_iter().collect();
        step
    }

    /// Adds the customers that share a key with `id` (one the directory
    /// holds few enough of) to `scope`.
    fn add_candidates(&self, id: &str, scope: &mut BTreeSet<String>) {
        let Some(s) = self.subjects.get(id) else { return };
        for key in blocking::keys(s) {
            if let Some(block) = self.blocks.get(&key).filter(|b| b.len() <= self.settings.max_block) {
                scope.extend(block.iter().cloned());
            }
        }
    }

    /// Whether a customer of the person it was in is not in `members`.
    fn lost(&self, id: &str, members: &[String]) -> bool {
        let Some(doc) = self.person_of.get(id).and_then(|p| self.persons.get(p)) else {
            return false;
        };
        doc.customer_ids.iter().any(|c| members.binary_search(c).is_err())
    }

    /// The persons of the customers of `scope`, scored among themselves.
    fn cluster(&self, scope: &BTreeSet<String>) -> Clustering {
        let subjects: Vec<Subject> = scope.iter().filter_map(|id| self.subjects.get(id).cloned()).collect();
        let max_block = self.settings.max_block;
        let pairs = blocking::pairs_by(&subjects, |key, _| {
            self.blocks.get(key).is_some_and(|b| b.len() <= max_block)
        });
        let edges = persons::score_pairs(&subjects, pairs, &self.counts, &self.settings);
        let constraints: Vec<Constraint> = self
            .constraints
            .values()
            .filter(|c| scope.contains(&c.customers[0]) && scope.contains(&c.customers[1]))
            .cloned()
            .collect();
        persons::cluster(&subjects, edges, &constraints, &self.settings)
    }

    /// Each person's customers, sorted: what a rebuild compares.
    pub fn groups(&self) -> BTreeSet<Vec<String>> {
        self.persons.values().map(|d| d.customer_ids.clone()).collect()
    }
}

#[cfg(test)]
mod tests;
