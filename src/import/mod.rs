//! `clientele import`: a backfill of a source's customers from files
//! (SPEC §10), through the same path as a webhook.
//!
//! A thread reads the files ([`read`]) and, when this process writes the
//! store itself, turns each record into a [`Delivery`] with the source's
//! adapter (`crate::sources::delivery`, as ingest does). Batches go to
//! one of three places ([`Sink`]):
//! - the store, opened here ([`crate::store::Import`]): Postgres always,
//!   and the embedded store when no `serve` holds it;
//! - the running `serve` that holds the embedded store's lock, through
//!   `POST /api/v1/sources/{name}/import` ([`remote`]), which maps and
//!   keeps them the same way;
//! - nowhere, for `--dry-run`, which maps and counts.
//!
//! Either way each record is deduplicated, ordered and queued for
//! subscribers as a delivery is, so importing twice keeps nothing twice
//! and an old export never overwrites a newer webhook. [`progress`]
//! reports as it goes and counts each outcome.

pub mod canonical;
mod progress;
pub mod read;
pub mod remote;

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, Source, StoreUrl};
use crate::model::UtcMillis;
use crate::sources::{Kind, Mapped};
use crate::sources::{delivery, registry};
use crate::store::sqlite::{SqliteStore, Staging};
use crate::store::{Delivery, IngestOutcome, Outcome, Publish, Store, StoreError};

pub use progress::Tally;
pub use read::Format;
use read::{Input, Item, Line, Record};

/// Records per batch at most.
const BATCH_RECORDS: usize = 1000;
/// Bytes of bodies per batch at most (a batch handed to a server is one
/// request).
const BATCH_BYTES: usize = 4 << 20;
/// Batches read ahead of the store.
const READ_AHEAD: usize = 4;
/// Batches being kept at once. One: records are kept in the order they
/// are read (the first of two with one dedupe key is the one kept, as for
/// two deliveries one after the other), while the reader maps the next
/// batches meanwhile.
const IN_FLIGHT: usize = 1;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "no source named {name:?} is in the configuration file or was created through the API: \
         name one of {known} with --source (GET /api/v1/sources lists every source)"
    )]
    UnknownSource { name: String, known: String },
    #[error("source {name:?} cannot be imported into: {reason}")]
    UnusableSource { name: String, reason: String },
    #[error("{}: cannot read it: {reason}", path.display())]
    File { path: std::path::PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Csv { path: std::path::PathBuf, reason: String },
    #[error(
        "--format {format} reads canonical customers, as the clientele kind, but source {name:?} is of kind {kind}: \
         import them into a source of kind clientele (--format jsonl or capture read {kind} bodies)"
    )]
    NotCanonical {
        format: &'static str,
        name: String,
        kind: &'static str,
    },
    #[error(transparent)]
    Store(StoreError),
    /// A running `serve` holds the embedded store, and handing it the
    /// import failed.
    #[error("the store is in use by a running Clientele, which the import is handed to, but {0}")]
    Remote(String),
    #[error("the file reader stopped unexpectedly")]
    Reader,
}

impl From<StoreError> for ImportError {
    fn from(error: StoreError) -> Self {
        Self::Store(error)
    }
}

/// What to import.
#[derive(Debug, Clone)]
pub struct Options {
    pub source: String,
    pub format: Format,
    pub publish: Publish,
    pub dry_run: bool,
    /// Paths, `-` for stdin.
    pub files: Vec<String>,
    /// Show a progress bar (stderr is a terminal).
    pub progress: bool,
}

/// What became of one record: a delivery's outcome, or why it was not
/// kept. Also the answer of the import endpoint, record by record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum RecordOutcome {
    Applied,
    Unchanged,
    /// Older than what the directory holds: kept, changed nothing.
    Stale,
    /// Kept before (same dedupe key): nothing changed.
    Duplicate,
    /// Kept, but not a customer event.
    Ignored,
    /// Kept, but it could not be applied.
    Quarantined {
        reason: String,
    },
    /// For an erased customer: nothing kept.
    Suppressed,
    /// Not kept: the record is not JSON (or not a capture, or too long).
    Invalid {
        reason: String,
    },
    /// `--dry-run`: a customer event, neither kept nor compared.
    Mapped,
}

impl From<IngestOutcome> for RecordOutcome {
    fn from(outcome: IngestOutcome) -> Self {
        match outcome {
            IngestOutcome::Accepted { outcome, .. } => match outcome {
                Outcome::Applied => RecordOutcome::Applied,
                Outcome::Unchanged => RecordOutcome::Unchanged,
                Outcome::Stale => RecordOutcome::Stale,
            },
            IngestOutcome::Duplicate { .. } => RecordOutcome::Duplicate,
            IngestOutcome::Ignored { .. } => RecordOutcome::Ignored,
            IngestOutcome::Quarantined { reason, .. } => RecordOutcome::Quarantined { reason },
            IngestOutcome::Suppressed => RecordOutcome::Suppressed,
        }
    }
}

/// The source an import writes to, by name: the configuration file's, or
/// one created through the API, read from the store the import writes to
/// (or, when a running `serve` holds the embedded store, from that server).
async fn find_source(config: &Config, name: &str, sink: &Sink) -> Result<Source, ImportError> {
    if let Some(source) = config.sources.iter().find(|s| s.name() == name) {
        return Ok(source.clone());
    }
    let spec = match sink {
        Sink::Store(store, _) => store
            .stored_sources(None, Some(name.to_owned()))
            .await?
            .sources
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.spec),
        Sink::Remote(remote) => remote.source().await?,
        Sink::DryRun => None,
    };
    let Some(spec) = spec else {
        return Err(ImportError::UnknownSource {
            name: name.to_owned(),
            known: config
                .sources
                .iter()
                .map(|s| format!("{:?}", s.name()))
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    registry::build(name, &spec)
        .map(|(source, _)| source)
        .map_err(|invalid| ImportError::UnusableSource {
            name: name.to_owned(),
            reason: invalid.to_string(),
        })
}

/// Maps `record` of source `source`, received now, as ingest would.
pub fn prepare(kind: Kind, source: &crate::sources::SourceSettings, record: Record) -> Result<Delivery, String> {
    let Record { headers, body, .. } = record;
    let header = |name: &str| headers.get(name).map(String::as_str);
    delivery::delivery(kind, source, header, body, UtcMillis::now()).map_err(|e| e.to_string())
}

/// Where batches go.
enum Sink {
    /// With the copy a staged import loads ([`Staging`]), put in the
    /// store's place once every record is kept.
    Store(Arc<dyn Store>, Option<Staging>),
    Remote(remote::Remote),
    DryRun,
}

/// A batch on its way: each record's line, and what it became.
struct Batch {
    lines: Vec<Line>,
    work: Vec<Work>,
}

enum Work {
    Bad(String),
    Mapped(Delivery),
    Raw(Record),
}

/// Runs the import; the tally is printed by the caller.
pub async fn run(config: &Config, options: Options) -> Result<Tally, ImportError> {
    // Every file opens before anything is kept: a typo stops the import
    // before it starts.
    let inputs = options
        .files
        .iter()
        .map(|path| Input::open(path))
        .collect::<Result<Vec<_>, _>>()?;
    let (sink, source) = target(config, &options).await?;
    let names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
    let total = inputs.iter().map(|i| i.size).sum::<Option<u64>>();
    crate::model::normalize::warm_up();
    let map_here = !matches!(sink, Sink::Remote(_));
    let read_bytes = Arc::new(AtomicU64::new(0));
    let mut report = progress::Report::new(names, total, read_bytes.clone(), options.progress);
    let (batches, mut arriving) = mpsc::channel::<Batch>(READ_AHEAD);
    let reader = {
        let options = options.clone();
        let max_line = config.max_body_bytes;
        std::thread::Builder::new()
            .name("clientele-import-reader".into())
            .spawn(move || read_all(inputs, &options, &source, max_line, map_here, read_bytes, batches))
            .map_err(|_| ImportError::Reader)?
    };
    let mut in_flight: VecDeque<(Vec<Line>, Keeping)> = VecDeque::new();
    let result = async {
        // Said once there is something to keep: a file that cannot be read
        // stops the import with one line.
        let mut staged = matches!(sink, Sink::Store(_, Some(_)));
        while let Some(batch) = arriving.recv().await {
            if std::mem::take(&mut staged) {
                report.say(
                    "the store holds no customer yet: the import loads a copy of it, put in its place once \
                     every record is kept (if it stops before, nothing is kept: run it again)",
                );
            }
            if in_flight.len() >= IN_FLIGHT {
                let (lines, kept) = in_flight.pop_front().expect("in flight");
                report.outcomes(&lines, kept.await.map_err(|_| ImportError::Reader)??);
            }
            in_flight.push_back((batch.lines, keep(&sink, batch.work, options.publish)));
        }
        while let Some((lines, kept)) = in_flight.pop_front() {
            report.outcomes(&lines, kept.await.map_err(|_| ImportError::Reader)??);
        }
        Ok::<_, ImportError>(())
    }
    .await;
    drop(arriving);
    let read = reader.join().map_err(|_| ImportError::Reader)?;
    if let Sink::Store(store, _) = &sink {
        store.close().await;
    }
    result?;
    read?;
    if let Sink::Store(_, Some(staging)) = sink {
        tokio::task::spawn_blocking(move || staging.finish())
            .await
            .map_err(|e| StoreError::Bug(format!("putting the imported copy in place panicked: {e}")))??;
    }
    Ok(report.finish())
}

pub fn format_name(format: Format) -> &'static str {
    match format {
        Format::Jsonl => "jsonl",
        Format::Capture => "capture",
        Format::Csv => "csv",
        Format::Customers => "customers",
    }
}

/// Where the batches go, and the source they are for. The store (or the
/// server that holds it) is opened first, as it may be where the source
/// is; a dry run closes it once the source is found.
async fn target(config: &Config, options: &Options) -> Result<(Sink, Source), ImportError> {
    let configured = config.sources.iter().any(|s| s.name() == options.source);
    let sink = if options.dry_run && configured {
        Sink::DryRun
    } else {
        open_sink(config, &options.source, options.format, !options.dry_run).await?
    };
    let checked = async {
        let source = find_source(config, &options.source, &sink).await?;
        if options.format.is_canonical() && source.kind != Kind::Clientele {
            return Err(ImportError::NotCanonical {
                format: format_name(options.format),
                name: source.name().to_owned(),
                kind: source.kind.as_str(),
            });
        }
        Ok(source)
    }
    .await;
    match checked {
        Ok(source) if !options.dry_run => Ok((sink, source)),
        checked => {
            if let Sink::Store(store, _) = &sink {
                store.close().await;
            }
            checked.map(|source| (Sink::DryRun, source))
        }
    }
}

/// The store itself when this process may write it (an embedded one that
/// holds nothing yet `staged`, see [`Staging`]); the running server that
/// holds the embedded store's lock otherwise.
async fn open_sink(config: &Config, source: &str, format: Format, staged: bool) -> Result<Sink, ImportError> {
    let clock = config.clock.clone();
    let opened = match &config.store {
        StoreUrl::Sqlite(path) if staged => SqliteStore::open_for_import(path, clock)
            .map(|(store, staging)| (Arc::new(store) as Arc<dyn Store>, staging)),
        url => crate::app::open_store(url, clock).await.map(|store| (store, None)),
    };
    match opened {
        Ok((store, staging)) => Ok(Sink::Store(store, staging)),
        Err(StoreError::InUse { holder, .. }) if matches!(config.store, StoreUrl::Sqlite(_)) => {
            let remote = remote::Remote::new(config, source, format)?;
            eprintln!(
                "the store is in use by a running Clientele{holder}: the import goes through it, at {}",
                remote.url()
            );
            Ok(Sink::Remote(remote))
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads every input into batches for `batches`, mapping each record here
/// when `map_here`. Runs on a thread of its own.
fn read_all(
    inputs: Vec<Input>,
    options: &Options,
    source: &Source,
    max_line: usize,
    map_here: bool,
    read_bytes: Arc<AtomicU64>,
    batches: mpsc::Sender<Batch>,
) -> Result<(), ImportError> {
    let mut batch = Batch {
        lines: Vec::with_capacity(BATCH_RECORDS),
        work: Vec::with_capacity(BATCH_RECORDS),
    };
    let mut bytes = 0;
    let mut closed = false;
    for (file, input) in inputs.into_iter().enumerate() {
        let mut emit = |item: Item| {
            if closed {
                return;
            }
            let (line, work) = match item {
                Item::Bad(line, reason) => (line, Work::Bad(reason)),
                Item::Record(record) => {
                    bytes += record.body.len();
                    let line = record.at;
                    if !map_here {
                        match std::str::from_utf8(&record.body) {
                            Ok(_) => (line, Work::Raw(record)),
                            Err(_) => (line, Work::Bad("not valid UTF-8".into())),
                        }
                    } else {
                        match prepare(source.kind, &source.settings, record) {
                            Ok(delivery) => (line, Work::Mapped(delivery)),
                            Err(reason) => (line, Work::Bad(reason)),
                        }
                    }
                }
            };
            batch.lines.push(line);
            batch.work.push(work);
            if batch.lines.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
                bytes = 0;
                let full = std::mem::replace(
                    &mut batch,
                    Batch {
                        lines: Vec::with_capacity(BATCH_RECORDS),
                        work: Vec::with_capacity(BATCH_RECORDS),
                    },
                );
                closed = batches.blocking_send(full).is_err();
            }
        };
        read::read(
            input,
            file,
            options.format,
            &source.settings.name,
            max_line,
            read_bytes.clone(),
            &mut emit,
        )?;
    }
    if !batch.lines.is_empty() && !closed {
        let _ = batches.blocking_send(batch);
    }
    Ok(())
}

/// A batch being kept: its outcomes, in the batch's order.
type Keeping = JoinHandle<Result<Vec<RecordOutcome>, ImportError>>;

/// Starts keeping a batch.
fn keep(sink: &Sink, work: Vec<Work>, publish: Publish) -> Keeping {
    let mut outcomes: Vec<Option<RecordOutcome>> = Vec::with_capacity(work.len());
    let mut deliveries = Vec::new();
    let mut raw = Vec::new();
    for item in work {
        match item {
            Work::Bad(reason) => outcomes.push(Some(RecordOutcome::Invalid { reason })),
            Work::Mapped(delivery) => {
                outcomes.push(None);
                deliveries.push(delivery);
            }
            Work::Raw(record) => {
                outcomes.push(None);
                raw.push(record);
            }
        }
    }
    let fill = |mut outcomes: Vec<Option<RecordOutcome>>, kept: Vec<RecordOutcome>| {
        let mut kept = kept.into_iter();
        outcomes
            .iter_mut()
            .filter(|o| o.is_none())
            .for_each(|o| *o = kept.next());
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or(RecordOutcome::Invalid {
                    reason: "no answer for this record".into(),
                })
            })
            .collect()
    };
    match sink {
        Sink::DryRun => {
            let kept = deliveries.iter().map(dry_run).collect();
            tokio::spawn(async move { Ok(fill(outcomes, kept)) })
        }
        Sink::Store(store, _) => {
            let store = store.clone();
            tokio::spawn(async move {
                let kept = if deliveries.is_empty() {
                    Vec::new()
                } else {
                    store.ingest_batch(deliveries, publish).await?
                };
                Ok(fill(outcomes, kept.into_iter().map(RecordOutcome::from).collect()))
            })
        }
        Sink::Remote(remote) => {
            let remote = remote.clone();
            tokio::spawn(async move {
                let kept = if raw.is_empty() {
                    Vec::new()
                } else {
                    remote.send(raw, publish).await?
                };
                Ok(fill(outcomes, kept))
            })
        }
    }
}

/// What a dry run says of a mapped delivery.
fn dry_run(delivery: &Delivery) -> RecordOutcome {
    match &delivery.mapped {
        Ok(Mapped::Customer(_)) => RecordOutcome::Mapped,
        Ok(Mapped::Ignored { .. }) => RecordOutcome::Ignored,
        Err(unmappable) => RecordOutcome::Quarantined {
            reason: unmappable.reason.clone(),
        },
    }
}
