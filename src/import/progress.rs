//! What an import tells its operator: a progress bar on a terminal
//! (records, rate, ETA by the bytes read), each record not kept or
//! quarantined by file and line as it goes (on stderr), and the count of
//! each outcome at the end.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::RecordOutcome;
use super::read::Line;

/// How many records had each outcome.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub applied: u64,
    pub unchanged: u64,
    pub stale: u64,
    pub duplicate: u64,
    pub ignored: u64,
    pub quarantined: u64,
    pub suppressed: u64,
    pub bad_lines: u64,
    /// `--dry-run`: customer events mapped.
    pub mapped: u64,
    pub elapsed: Duration,
}

impl Tally {
    pub fn records(&self) -> u64 {
        self.applied
            + self.unchanged
            + self.stale
            + self.duplicate
            + self.ignored
            + self.quarantined
            + self.suppressed
            + self.bad_lines
            + self.mapped
    }

    fn count(&mut self, outcome: &RecordOutcome) {
        let counter = match outcome {
            RecordOutcome::Applied => &mut self.applied,
            RecordOutcome::Unchanged => &mut self.unchanged,
            RecordOutcome::Stale => &mut self.stale,
            RecordOutcome::Duplicate => &mut self.duplicate,
            RecordOutcome::Ignored => &mut self.ignored,
            RecordOutcome::Quarantined { .. } => &mut self.quarantined,
            RecordOutcome::Suppressed => &mut self.suppressed,
            RecordOutcome::Invalid { .. } => &mut self.bad_lines,
            RecordOutcome::Mapped => &mut self.mapped,
        };
        *counter += 1;
    }
}

/// The summary line: every outcome with its count, then the rate.
impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seconds = self.elapsed.as_secs_f64();
        write!(
            f,
            "{} records in {seconds:.1} s ({:.0}/s): applied {}, unchanged {}, stale {}, duplicate {}, ignored {}, \
             quarantined {}, suppressed {}, bad lines {}",
            self.records(),
            self.records() as f64 / seconds.max(1e-3),
            self.applied,
            self.unchanged,
            self.stale,
            self.duplicate,
            self.ignored,
            self.quarantined,
            self.suppressed,
            self.bad_lines,
        )?;
        if self.mapped > 0 {
            write!(f, ", mapped (dry run) {}", self.mapped)?;
        }
        Ok(())
    }
}

pub struct Report {
    names: Vec<String>,
    tally: Tally,
    started: Instant,
    bar: Option<ProgressBar>,
    read: Arc<AtomicU64>,
}

impl Report {
    /// `total`: the files' bytes, when known; `read` counts those read.
    pub fn new(names: Vec<String>, total: Option<u64>, read: Arc<AtomicU64>, show: bool) -> Self {
        let bar = show.then(|| {
            let bar = match total {
                Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
                None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            };
            let template = if total.is_some() {
                "{elapsed_precise} [{wide_bar}] {percent:>3}% {msg} ETA {eta}"
            } else {
                "{elapsed_precise} {spinner} {msg}"
            };
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Report {
            names,
            tally: Tally::default(),
            started: Instant::now(),
            bar,
            read,
        }
    }

    /// Counts a batch's outcomes, and says which lines were not kept or
    /// were quarantined.
    pub fn outcomes(&mut self, lines: &[Line], outcomes: Vec<RecordOutcome>) {
        for (line, outcome) in lines.iter().zip(&outcomes) {
            self.tally.count(outcome);
            let said = match outcome {
                RecordOutcome::Invalid { reason } => format!("bad line, skipped: {reason}"),
                RecordOutcome::Quarantined { reason } => format!("quarantined: {reason}"),
                _ => continue,
            };
            let at = format!("{}:{}", self.names[line.file], line.number);
            self.say(&format!("{at}: {said}"));
        }
        if let Some(bar) = &self.bar {
            bar.set_position(self.read.load(Ordering::Relaxed));
            let seconds = self.started.elapsed().as_secs_f64().max(1e-3);
            let records = self.tally.records();
            bar.set_message(format!("{records} records, {:.0}/s", records as f64 / seconds));
        }
    }

    /// Prints `line` on stderr, above the bar when one is drawn.
    pub fn say(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(mut self) -> Tally {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        self.tally.elapsed = self.started.elapsed();
        self.tally
    }
}
