//! The resolver's memory: every customer's subject, its blocking keys and
//! the counts of its values, each customer's person, each person's
//! customers and links, and operators' decisions. A step takes the records
//! that changed and returns what to write: pure, so that a step can be
//! tested against a rebuild without a store.
//!
//! A step re-clusters the customers a change can reach (see
//! [`Index::step`] and `docs/decisions.md`, "an incremental step that
//! equals a rebuild"), scoring each pair it meets once: the work grows
//! with the candidates of what changed, not with their square.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{Customer, UtcMillis};
use crate::persons::compare::{ByField, Field, holder, values};
use crate::persons::{
    self, Clustering, Conflict, Constraint, Decider, Decision, Edge, Frequencies, Settings, Subject, blocking, identity,
};
use crate::store::persons::{Link, PersonDoc, PersonWrite, Resolution, Resolved, StoredDecision};

/// How common each value is, as [`persons::Tally`] counts it, with
/// removal: a changed record takes its old values back.
#[derive(Debug, Default)]
struct Counts {
    total: u64,
    cap: u64,
    values: ByField<Holders>,
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
        for (field, value) in values(s) {
            let h = self.values[field.at()].entry(value).or_default();
            h.count += 1;
            *h.names.entry(who.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, s: &Subject) {
        self.total -= 1;
        let who = holder(s);
        for (field, value) in values(s) {
            let values = &mut self.values[field.at()];
            let Some(h) = values.get_mut(&value) else { continue };
            h.count -= 1;
            if let Some(n) = h.names.get_mut(&who) {
                *n -= 1;
                if *n == 0 {
                    h.names.remove(&who);
                }
            }
            if h.count == 0 {
                values.remove(&value);
            }
        }
    }
}

impl Frequencies for Counts {
    fn total(&self) -> u64 {
        self.total
    }
    fn count(&self, field: Field, value: &str) -> u64 {
        self.values[field.at()].get(value).map_or(0, |h| h.count)
    }
    fn names(&self, field: Field, value: &str) -> u64 {
        self.values[field.at()]
            .get(value)
            .map_or(0, |h| (h.names.len() as u64).min(self.cap))
    }
}

/// What the index keeps of a record when it loads: its id, version and
/// subject (none for a merged record), not the record itself.
pub type Held = (String, u64, Option<Subject>);

/// A record as [`Index::load`] takes it.
pub fn held(c: Customer) -> Held {
    let subject = Subject::of(&c);
    (c.id, c.version, subject)
}

/// A customer's number in the index: where its id is in `Index::ids`.
type Num = u32;

/// A record's subject as the index holds it, with the blocks it is in.
#[derive(Debug)]
struct Kept {
    subject: Subject,
    blocks: Vec<Num>,
}

/// A blocking key and the customers that hold it, by number.
#[derive(Debug)]
struct Block {
    key: String,
    members: Vec<Num>,
}

/// See the module's documentation. Customers and blocking keys are
/// numbered as the index meets them, so that a step's walk over
/// candidates indexes vectors rather than hashing and comparing ids.
#[derive(Debug)]
pub struct Index {
    settings: Settings,
    /// Every customer id met (a gone one keeps its number), by number,
    /// and each one's number.
    ids: Vec<String>,
    numbers: HashMap<String, Num>,
    /// By number: the subject, none for a merged or gone record.
    subjects: Vec<Option<Kept>>,
    /// Each key held by a subject, its block's number; blocks by number
    /// (an emptied one is freed, and its number taken again).
    keys: HashMap<String, Num>,
    blocks: Vec<Block>,
    free: Vec<Num>,
    counts: Counts,
    person_of: HashMap<String, String>,
    /// The version of each record resolved, merged ones too.
    versions: HashMap<String, u64>,
    persons: HashMap<String, PersonDoc>,
    constraints: BTreeMap<[String; 2], Constraint>,
    /// Each customer's partners in operators' links, both ways.
    linked: HashMap<String, Vec<String>>,
}

impl Index {
    pub fn new(settings: Settings) -> Self {
        let cap = u64::from(settings.max_shared) + 1;
        Index {
            settings,
            ids: Vec::new(),
            numbers: HashMap::new(),
            subjects: Vec::new(),
            keys: HashMap::new(),
            blocks: Vec::new(),
            free: Vec::new(),
            counts: Counts {
                cap,
                ..Counts::default()
            },
            person_of: HashMap::new(),
            versions: HashMap::new(),
            persons: HashMap::new(),
            constraints: BTreeMap::new(),
            linked: HashMap::new(),
        }
    }

    /// The index of what was resolved, holding `records` (every record
    /// now, as [`held`] keeps it): returns it with the ids whose record
    /// differs from the one resolved (changed, new, or gone), which the
    /// next step resolves.
    pub fn load(settings: Settings, resolved: Resolved, records: Vec<Held>) -> (Self, Vec<String>) {
        let mut index = Index::new(settings);
        index.set_decisions(resolved.decisions);
        for p in resolved.persons {
            for c in &p.customer_ids {
                index.number(c);
            }
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
            index.number(&customer);
            if let Some(person) = person {
                index.person_of.insert(customer.clone(), person);
            }
            index.versions.insert(customer.clone(), version);
            // Gone unless a record says otherwise below.
            stale.insert(customer);
        }
        for (id, version, subject) in records {
            if index.versions.get(&id) == Some(&version) {
                stale.remove(&id);
            } else {
                stale.insert(id);
            }
            if let Some(s) = subject {
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
        self.linked.clear();
        let links: Vec<[String; 2]> = self
            .constraints
            .values()
            .filter(|c| c.decision == Decision::Link)
            .map(|c| c.customers.clone())
            .collect();
        for [a, b] in links {
            self.number(&a);
            self.number(&b);
            self.linked.entry(a.clone()).or_default().push(b.clone());
            self.linked.entry(b).or_default().push(a);
        }
    }

    /// Whether the record of `id` last resolved has `version` (none: it
    /// had no record, or the index never met it).
    pub fn holds(&self, id: &str, version: Option<u64>) -> bool {
        self.versions.get(id).copied() == version
    }

    pub fn person_count(&self) -> usize {
        self.persons.len()
    }

    /// The number of customer `id`, given now if it has none.
    fn number(&mut self, id: &str) -> Num {
        if let Some(&n) = self.numbers.get(id) {
            return n;
        }
        let n = Num::try_from(self.ids.len()).expect("fewer than 2³² customers");
        self.ids.push(id.to_owned());
        self.numbers.insert(id.to_owned(), n);
        self.subjects.push(None);
        n
    }

    fn subject(&self, id: &str) -> Option<&Subject> {
        let n = *self.numbers.get(id)?;
        self.subjects[n as usize].as_ref().map(|k| &k.subject)
    }

    /// How many customers hold `key`.
    fn block_size(&self, key: &str) -> usize {
        self.keys.get(key).map_or(0, |&b| self.blocks[b as usize].members.len())
    }

    fn insert(&mut self, s: Subject) {
        let n = self.number(&s.id);
        let mut blocks = Vec::new();
        for key in blocking::keys(&s) {
            let b = match self.keys.get(&key) {
                Some(&b) => b,
                None => {
                    let b = match self.free.pop() {
                        Some(b) => b,
                        None => {
                            self.blocks.push(Block {
                                key: String::new(),
                                members: Vec::new(),
                            });
                            Num::try_from(self.blocks.len() - 1).expect("fewer than 2³² keys")
                        }
                    };
                    self.blocks[b as usize].key.clone_from(&key);
                    self.keys.insert(key, b);
                    b
                }
            };
            self.blocks[b as usize].members.push(n);
            blocks.push(b);
        }
        self.counts.add(&s);
        self.subjects[n as usize] = Some(Kept { subject: s, blocks });
    }

    fn remove(&mut self, id: &str) {
        let Some(&n) = self.numbers.get(id) else { return };
        let Some(kept) = self.subjects[n as usize].take() else {
            return;
        };
        for b in kept.blocks {
            let block = &mut self.blocks[b as usize];
            if let Some(at) = block.members.iter().position(|m| *m == n) {
                block.members.swap_remove(at);
            }
            if block.members.is_empty() {
                self.keys.remove(&std::mem::take(&mut block.key));
                self.free.push(b);
            }
        }
        self.counts.remove(&kept.subject);
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
        for id in &changed {
            self.number(id);
        }
        // The customers whose record is not the one last resolved: a
        // record seen again (a step repeated after a restart, a stale
        // customer the feed also names) moves no person by itself.
        let renewed: BTreeSet<String> = records
            .iter()
            .filter(|(id, record)| !self.holds(id, record.as_ref().map(|c| c.version)))
            .map(|(id, _)| id.clone())
            .collect();
        let records: Vec<(String, Option<Customer>, Option<Subject>)> = records
            .into_iter()
            .map(|(id, record)| {
                let subject = record.as_ref().and_then(Subject::of);
                (id, record, subject)
            })
            .collect();
        // The size of each block a change leaves or joins, before.
        let sizes: HashMap<String, usize> = records
            .iter()
            .flat_map(|(id, _, new)| self.subject(id).into_iter().chain(new))
            .flat_map(blocking::keys)
            .map(|key| {
                let size = self.block_size(&key);
                (key, size)
            })
            .collect();
        let mut merged = BTreeSet::new();
        let mut gone = Vec::new();
        for (id, record, subject) in records {
            self.remove(&id);
            match record {
                Some(c) => {
                    self.versions.insert(id.clone(), c.version);
                    match subject {
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

        // Where a change can move anything: the changed customers and
        // every customer of a block that began or stopped naming
        // candidates (its pairs appear or go); then, until nothing new
        // comes, the customers of their persons (a person that loses one
        // may split) and whatever may join them now. No pair that may
        // join two customers leaves the scope, so its persons are the ones
        // a rebuild would make of these customers.
        let mut seeds = changed.clone();
        let max_block = self.settings.max_block;
        for (key, before) in sizes {
            if let Some(&b) = self.keys.get(&key) {
                let block = &self.blocks[b as usize].members;
                if (before <= max_block) != (block.len() <= max_block) {
                    seeds.extend(block.iter().map(|&m| self.ids[m as usize].clone()));
                }
            }
        }
        let (scope, edges) = self.reach(seeds);
        let (inside, across): (Vec<Edge>, Vec<Edge>) = edges
            .into_iter()
            .partition(|e| e.customers.iter().all(|c| scope.contains(c)));
        let mut clustering = self.cluster(&scope, inside);
        // A pair from a changed customer to a person outside the scope is
        // a review as the clusterer would make it: one that no conflict
        // rules out, or that only a birth date or an id refuses, unless an
        // operator separated the two persons. (An unchanged customer's
        // such reviews stand: neither its pair nor the other person moved.)
        for edge in across
            .into_iter()
            .filter(|e| e.customers.iter().any(|c| changed.contains(c)))
        {
            let reviewed = edge.conflict.is_none()
                || (edge.score >= self.settings.link && edge.conflict != Some(Conflict::Household));
            if reviewed && !self.separated(&clustering, &edge.customers, &scope) {
                clustering.reviews.push(edge);
            }
        }
        clustering.reviews.sort_by(|x, y| x.customers.cmp(&y.customers));
        let touched: BTreeSet<String> = scope.iter().filter_map(|c| self.person_of.get(c).cloned()).collect();
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
            let moved = doc.customer_ids.iter().any(|m| renewed.contains(m));
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

    /// The customers `seeds` reach: the customers of each one's person,
    /// its partners in operators' links, and its candidates it may join
    /// now (a score at or above the link threshold and no conflict: only
    /// such a pair ever joins two persons), until nothing new comes; with
    /// the edges (pairs at or above the review threshold) of each reached
    /// customer, to customers outside too. Each pair is scored once (when
    /// the first of the two is reached), so the work is the candidates of
    /// what the scope holds, not the pairs among it.
    fn reach(&self, seeds: BTreeSet<String>) -> (BTreeSet<String>, Vec<Edge>) {
        let max_block = self.settings.max_block;
        let mut reached = vec![false; self.ids.len()];
        // The customer whose candidates each one was last counted among.
        let mut met = vec![Num::MAX; self.ids.len()];
        let mut scope = BTreeSet::new();
        let mut edges = Vec::new();
        let number = |id: &String| self.numbers.get(id).copied();
        let mut queue: Vec<Num> = seeds.iter().filter_map(number).collect();
        while let Some(n) = queue.pop() {
            if std::mem::replace(&mut reached[n as usize], true) {
                continue;
            }
            let id = &self.ids[n as usize];
            let person = self.person_of.get(id).and_then(|p| self.persons.get(p));
            let companions = person.map(|doc| doc.customer_ids.iter()).into_iter().flatten();
            queue.extend(
                companions
                    .chain(self.linked.get(id).into_iter().flatten())
                    .filter_map(number)
                    .filter(|&c| !reached[c as usize]),
            );
            scope.insert(id.clone());
            let Some(kept) = &self.subjects[n as usize] else {
                continue;
            };
            let s = &kept.subject;
            // The customers sharing a key that few enough hold, each once.
            let blocks = kept.blocks.iter().map(|&b| &self.blocks[b as usize].members);
            for other in blocks.filter(|b| b.len() <= max_block).flatten().copied() {
                if reached[other as usize] || std::mem::replace(&mut met[other as usize], n) == n {
                    continue;
                }
                let Some(o) = self.subjects[other as usize].as_ref().map(|k| &k.subject) else {
                    continue;
                };
                let (a, b) = if s.id < o.id { (s, o) } else { (o, s) };
                let c = persons::compare(a, b, &self.counts, &self.settings);
                if c.score >= self.settings.link && c.conflict.is_none() {
                    queue.push(other);
                }
                if c.score >= self.settings.review {
                    edges.push(Edge::scored(&a.id, &b.id, c));
                }
            }
        }
        (scope, edges)
    }

    /// Whether an operator separated the person `customers[0]` or
    /// `customers[1]` (the one in `scope`) is in now from the person the
    /// other one is in (outside `scope`, and so unchanged).
    fn separated(&self, clustering: &Clustering, customers: &[String; 2], scope: &BTreeSet<String>) -> bool {
        let (mine, theirs) = if scope.contains(&customers[0]) {
            (&customers[0], &customers[1])
        } else {
            (&customers[1], &customers[0])
        };
        let Some(other) = self.person_of.get(theirs).and_then(|p| self.persons.get(p)) else {
            return false;
        };
        let holds = |members: &[String], c: &String| members.binary_search(c).is_ok();
        // The customers an operator separated from the other person…
        let apart: Vec<&String> = self
            .constraints
            .values()
            .filter(|c| c.decision == Decision::Separate)
            .filter_map(|c| {
                let [u, v] = &c.customers;
                if holds(&other.customer_ids, u) {
                    Some(v)
                } else {
                    holds(&other.customer_ids, v).then_some(u)
                }
            })
            .collect();
        // …and whether one of them is in this one's person.
        !apart.is_empty()
            && clustering
                .groups
                .iter()
                .find(|g| holds(&g.members, mine))
                .is_some_and(|g| apart.iter().any(|c| holds(&g.members, c)))
    }

    /// The persons of the customers of `scope`, from their `edges`.
    fn cluster(&self, scope: &BTreeSet<String>, edges: Vec<Edge>) -> Clustering {
        let subjects: Vec<Subject> = scope.iter().filter_map(|id| self.subject(id).cloned()).collect();
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
