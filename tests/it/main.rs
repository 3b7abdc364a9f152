//! Clientele's integration suite: one test binary (`it`), a module per
//! area. Every test starts the real server (or the real `clientele`
//! binary) on `127.0.0.1:0` through [`util::TestApp`] and talks HTTP to it,
//! as a platform, a subscriber or an operator would.
//!
//! One binary rather than a file per area: the suite compiles and links once
//! (Svix's `tests/it/` and crates.io's layout). Run one area with
//! `cargo test --test it outbound::`, one test by a part of its name.
//!
//! The store is SQLite unless `CLIENTELE_TEST_STORE=postgres` (see
//! `util/postgres.rs`); every test runs on both.

mod util;

mod brokers;
mod connections;
mod console;
mod crash;
mod destinations;
mod directory;
mod disk;
mod erasure;
mod hostile;
mod import;
mod ingest;
mod instances;
mod keys;
mod operations;
mod outbound;
mod persons;
mod phones;
mod rebuild;
mod retention;
mod seeds;
mod shapes;
mod signatures;
mod sources;
