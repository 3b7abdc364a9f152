//! What a store must do to reach this build's schema, decided in pure code
//! that both dialects execute: apply the migrations it lacks, refuse a
//! store a newer Clientele wrote, and refuse one whose applied migrations
//! this build's files no longer match.
//!
//! Each dialect lists its migration files in order (`migrations/sqlite/`,
//! `migrations/postgres/`) and keeps, beside the schema version, the
//! SHA-256 of every file it applied. A file edited after a store applied it
//! would leave that store and a fresh one with different schemas; the check
//! catches it at start-up instead of in a query months later. A store
//! migrated before checksums were kept has its applied files' checksums
//! recorded on the first start of a build that knows them.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::StoreError;

/// A migration file's checksum.
pub fn checksum(sql: &str) -> Vec<u8> {
    Sha256::digest(sql.as_bytes()).to_vec()
}

/// What to run, in order.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'m> {
    /// Applied migrations with no checksum kept yet (a store migrated
    /// before checksums were): their version and checksum, to record.
    pub record: Vec<(i64, Vec<u8>)>,
    /// Migrations to apply: version, file, checksum.
    pub apply: Vec<(i64, &'m str, Vec<u8>)>,
}

/// Decides what a store at schema `version`, with `kept` checksums by
/// version, must do to reach `known` (this build's files, version 1
/// first).
pub fn plan<'m>(known: &[&'m str], version: i64, kept: &BTreeMap<i64, Vec<u8>>) -> Result<Plan<'m>, StoreError> {
    let applied = usize::try_from(version).unwrap_or(0);
    if applied > known.len() {
        return Err(StoreError::NewerSchema {
            found: version,
            known: known.len(),
        });
    }
    let mut record = Vec::new();
    for (version, sql) in (1i64..).zip(&known[..applied]) {
        let sum = checksum(sql);
        match kept.get(&version) {
            Some(stored) if *stored != sum => return Err(StoreError::EditedMigration { version }),
            Some(_) => {}
            None => record.push((version, sum)),
        }
    }
    let apply = (1i64..)
        .zip(known)
        .skip(applied)
        .map(|(version, sql)| (version, *sql, checksum(sql)))
        .collect();
    Ok(Plan { record, apply })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [&str; 3] = [
        "CREATE TABLE a (x INT);",
        "CREATE TABLE b (y INT);",
        "CREATE TABLE c (z INT);",
    ];

    fn kept(versions: &[i64]) -> BTreeMap<i64, Vec<u8>> {
        versions
            .iter()
            .map(|v| (*v, checksum(FILES[*v as usize - 1])))
            .collect()
    }

    #[test]
    fn a_new_store_applies_every_migration_in_order() {
        let plan = plan(&FILES, 0, &BTreeMap::new()).expect("a plan");
        assert!(plan.record.is_empty());
        let versions: Vec<i64> = plan.apply.iter().map(|(v, _, _)| *v).collect();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(plan.apply[2].1, FILES[2]);
    }

    #[test]
    fn a_store_behind_applies_only_what_it_lacks() {
        let plan = plan(&FILES, 2, &kept(&[1, 2])).expect("a plan");
        assert!(plan.record.is_empty());
        assert_eq!(plan.apply, [(3, FILES[2], checksum(FILES[2]))]);
    }

    #[test]
    fn a_store_migrated_before_checksums_has_them_recorded() {
        let plan = plan(&FILES, 2, &kept(&[1])).expect("a plan");
        assert_eq!(plan.record, [(2, checksum(FILES[1]))]);
        assert_eq!(plan.apply.len(), 1);
    }

    #[test]
    fn a_migration_edited_after_it_was_applied_is_refused() {
        let mut edited = kept(&[1, 2]);
        edited.insert(2, checksum("CREATE TABLE b (y BIGINT);"));
        match plan(&FILES, 2, &edited) {
            Err(StoreError::EditedMigration { version: 2 }) => {}
            other => panic!("not refused as edited: {other:?}"),
        }
    }

    #[test]
    fn a_store_of_a_newer_schema_is_refused() {
        match plan(&FILES, 4, &kept(&[1, 2, 3])) {
            Err(StoreError::NewerSchema { found: 4, known: 3 }) => {}
            other => panic!("not refused as newer: {other:?}"),
        }
    }
}
