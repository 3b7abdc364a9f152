//! Persons (SPEC §11): which customer records, across sources and
//! accounts, are one human. This module is the matcher, pure and free of
//! I/O: the resolver that follows the directory's change feed and the
//! store that keeps persons call it.
//!
//! The path of a decision: a customer becomes a [`Subject`] (its identity
//! fields folded, placeholders dropped, `subject`); its blocking keys name
//! the few customers worth comparing (`blocking`); each pair is scored
//! field by field, Fellegi–Sunter style, with weights that fall as values
//! grow common (`compare`); and the scored pairs, with operators'
//! decisions and platform merges as constraints, become persons whose
//! whole stays plausible (`cluster`). Each group keeps the id it had
//! (`identity`), and shows a golden profile whose every field names the
//! customer it came from (`profile`). [`resolve`] runs the whole path
//! over a set of customers, as a rebuild and the benchmark do; the
//! incremental resolver runs it over the candidates of what changed.

pub mod blocking;
pub mod cluster;
pub mod compare;
pub mod identity;
pub mod names;
pub mod profile;
pub mod subject;

pub use cluster::{Clustering, Constraint, Decider, Decision, Edge, Group, cluster};
pub use compare::{Comparison, Conflict, Evidence, Field, Frequencies, Rules, Settings, Tally, compare};
pub use subject::Subject;

/// Scores every candidate pair of `subjects`, with `freq` for how common
/// values are: the edges at or above the review threshold.
pub fn score(subjects: &[Subject], freq: &dyn Frequencies, settings: &Settings) -> Vec<Edge> {
    score_pairs(
        subjects,
        blocking::candidate_pairs(subjects, settings.max_block),
        freq,
        settings,
    )
}

/// Scores the given pairs of `subjects` (by index): the edges at or above
/// the review threshold.
pub fn score_pairs(
    subjects: &[Subject],
    pairs: Vec<(usize, usize)>,
    freq: &dyn Frequencies,
    settings: &Settings,
) -> Vec<Edge> {
    pairs
        .into_iter()
        .filter_map(|(i, j)| {
            let (a, b) = (&subjects[i], &subjects[j]);
            let c = compare(a, b, freq, settings);
            (c.score >= settings.review).then(|| Edge::scored(&a.id, &b.id, c))
        })
        .collect()
}

/// Persons of a whole set of subjects, counting frequencies among them.
pub fn resolve(subjects: &[Subject], constraints: &[Constraint], settings: &Settings) -> Clustering {
    let mut tally = Tally::new(settings.max_shared);
    for s in subjects {
        tally.add(s);
    }
    let edges = score(subjects, &tally, settings);
    cluster(subjects, edges, constraints, settings)
}

#[cfg(test)]
mod tests;
