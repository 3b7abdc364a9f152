//! Reading an import's files into records, one format at a time: `jsonl`
//! (a platform body a line), `capture` (a captured request a line:
//! `headers`, and `bodyRaw` or `body`), `csv` (canonical columns) and
//! `customers` (a canonical customer a line, as `clientele export` writes
//! it). A line that cannot be read is a [`Item::Bad`] with its number,
//! and reading goes on; only a file that cannot be read at all (a CSV
//! without its required columns) stops the import.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ImportError;
use super::canonical::{self, Header};

/// How the import's files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One platform body a line, read by the source's adapter.
    Jsonl,
    /// One captured request a line: `headers`, and `bodyRaw` or `body`.
    Capture,
    /// A header row of canonical field names, read as the clientele kind.
    Csv,
    /// One canonical customer a line (`clientele export --format jsonl`),
    /// read as the clientele kind.
    Customers,
}

impl Format {
    /// Whether records of this format are Clientele envelopes, whatever
    /// the source's platform.
    pub fn is_canonical(self) -> bool {
        matches!(self, Format::Csv | Format::Customers)
    }
}

/// Where a record was: the file (by its index among the import's) and
/// the line, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Line {
    pub file: usize,
    pub number: u64,
}

/// One record to import.
#[derive(Debug)]
pub struct Record {
    pub at: Line,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

#[derive(Debug)]
pub enum Item {
    Record(Record),
    /// A line that could not be read, and why (never its content).
    Bad(Line, String),
}

/// One of the import's files, opened.
pub struct Input {
    pub name: String,
    /// Its size, when known (not for stdin).
    pub size: Option<u64>,
    reader: Box<dyn Read + Send>,
}

impl Input {
    /// Opens `path`, or stdin for `-`.
    pub fn open(path: &str) -> Result<Self, ImportError> {
        if path == "-" {
            return Ok(Input {
                name: "stdin".into(),
                size: None,
                reader: Box::new(io::stdin()),
            });
        }
        let cannot = |e: io::Error| ImportError::File {
            path: PathBuf::from(path),
            reason: e.to_string(),
        };
        let file = File::open(path).map_err(cannot)?;
        let meta = file.metadata().map_err(cannot)?;
        if meta.is_dir() {
            return Err(ImportError::File {
                path: PathBuf::from(path),
                reason: "it is a directory".into(),
            });
        }
        Ok(Input {
            name: path.to_owned(),
            size: Some(meta.len()).filter(|_| meta.is_file()),
            reader: Box::new(file),
        })
    }
}

/// Counts the bytes read, for the progress bar.
struct Counted<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads `input` (the import's file number `file`) in `format`, giving
/// each record or bad line to `emit`; a line longer than `max_line` bytes
/// is bad. `read` counts the bytes read. `source` is the source's name.
pub fn read(
    input: Input,
    file: usize,
    format: Format,
    source: &str,
    max_line: usize,
    read: Arc<AtomicU64>,
    emit: &mut dyn FnMut(Item),
) -> Result<(), ImportError> {
    let name = input.name.clone();
    let reader = BufReader::with_capacity(
        256 * 1024,
        Counted {
            inner: input.reader,
            read,
        },
    );
    let failed = |e: io::Error| ImportError::File {
        path: PathBuf::from(&name),
        reason: e.to_string(),
    };
    match format {
        Format::Csv => read_csv(reader, file, &name, emit),
        _ => {
            // A capture holds its body (perhaps twice, raw and parsed) and
            // its headers: its body alone is held to the limit.
            let line_limit = match format {
                Format::Capture => max_line.saturating_mul(3).saturating_add(64 * 1024),
                _ => max_line,
            };
            let mut lines = Lines {
                reader,
                number: 0,
                max: line_limit,
            };
            let mut buf = Vec::new();
            while let Some(fits) = lines.next(&mut buf).map_err(failed)? {
                let at = Line {
                    file,
                    number: lines.number,
                };
                if !fits {
                    emit(Item::Bad(at, format!("longer than the limit ({line_limit} bytes)")));
                    continue;
                }
                let line = trim_line(&buf);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                emit(match format {
                    Format::Capture => capture(at, line, max_line),
                    Format::Customers => customer(at, line, source),
                    _ => Item::Record(Record {
                        at,
                        headers: BTreeMap::new(),
                        body: line.to_vec(),
                    }),
                });
            }
            Ok(())
        }
    }
}

/// A line without its line ending.
fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Lines of at most `max` bytes: a longer one is read past, not kept.
struct Lines<R> {
    reader: R,
    number: u64,
    max: usize,
}

impl<R: BufRead> Lines<R> {
    /// The next line into `buf`: `Some(true)` if it fits, `Some(false)` if
    /// it was too long (and skipped), `None` at the end.
    fn next(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
        buf.clear();
        let limit = self.max as u64 + 2;
        let n = (&mut self.reader).take(limit).read_until(b'\n', buf)?;
        if n == 0 {
            return Ok(None);
        }
        self.number += 1;
        if trim_line(buf).len() <= self.max {
            return Ok(Some(true));
        }
        // Past the rest of the line, a buffer at a time.
        while !buf.ends_with(b"\n") {
            buf.clear();
            if (&mut self.reader).take(64 * 1024).read_until(b'\n', buf)? == 0 {
                break;
            }
        }
        buf.clear();
        Ok(Some(false))
    }
}

/// A captured request, as seed 004's sample shows one.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Capture {
    #[serde(default)]
    headers: Map<String, Value>,
    body_raw: Option<String>,
    body: Option<Value>,
}

fn capture(at: Line, line: &[u8], max_body: usize) -> Item {
    let capture: Capture = match serde_json::from_slice(line) {
        Ok(capture) => capture,
        Err(e) => return Item::Bad(at, format!("not a captured request: {}", without_position(&e))),
    };
    let body = match (capture.body_raw, capture.body) {
        (Some(raw), _) => raw.into_bytes(),
        (None, Some(body)) => serde_json::to_vec(&body).expect("a JSON value serializes"),
        (None, None) => return Item::Bad(at, "a captured request needs bodyRaw or body".into()),
    };
    if body.len() > max_body {
        return Item::Bad(at, format!("its body is larger than max_body_bytes ({max_body} bytes)"));
    }
    let headers = capture
        .headers
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::String(v) => Some((name.to_ascii_lowercase(), v)),
            _ => None,
        })
        .collect();
    Item::Record(Record { at, headers, body })
}

fn customer(at: Line, line: &[u8], source: &str) -> Item {
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(e) => return Item::Bad(at, format!("not JSON: {}", without_position(&e))),
    };
    match canonical::customer_envelope(value, source) {
        Some(body) => Item::Record(Record {
            at,
            headers: BTreeMap::new(),
            body,
        }),
        None => Item::Bad(at, "not a customer: a JSON object is expected".into()),
    }
}

/// serde_json's message without its "at line 1 column 5", which names the
/// position in the line, not in the file.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.rfind(" at line ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

fn read_csv(reader: impl Read, file: usize, name: &str, emit: &mut dyn FnMut(Item)) -> Result<(), ImportError> {
    let mut csv = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let header = csv.headers().map_err(|e| ImportError::File {
        path: PathBuf::from(name),
        reason: format!("cannot read its header row: {e}"),
    })?;
    let header = Header::parse(header.iter()).map_err(|e| ImportError::Csv {
        path: PathBuf::from(name),
        reason: e.to_string(),
    })?;
    let mut row = csv::StringRecord::new();
    loop {
        let at = |position: Option<&csv::Position>| Line {
            file,
            number: position.map_or(0, csv::Position::line),
        };
        match csv.read_record(&mut row) {
            Ok(false) => return Ok(()),
            Ok(true) => emit(Item::Record(Record {
                at: at(row.position()),
                headers: BTreeMap::new(),
                body: header.envelope(row.iter()),
            })),
            Err(e) => {
                let reason = match e.kind() {
                    csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                        format!("has {len} fields where the header row has {expected_len}")
                    }
                    csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".into(),
                    csv::ErrorKind::Io(_) => {
                        return Err(ImportError::File {
                            path: PathBuf::from(name),
                            reason: e.to_string(),
                        });
                    }
                    _ => e.to_string(),
                };
                emit(Item::Bad(at(e.position()), reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(format: Format, text: &str) -> Vec<Item> {
        let input = Input {
            name: "test".into(),
            size: None,
            reader: Box::new(io::Cursor::new(text.as_bytes().to_vec())),
        };
        let mut items = Vec::new();
        read(input, 0, format, "backfill", 40, Arc::default(), &mut |i| items.push(i)).unwrap();
        items
    }

    fn summary(items: &[Item]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i {
                Item::Record(r) => format!("{}: {}", r.at.number, String::from_utf8_lossy(&r.body)),
                Item::Bad(at, reason) => format!("{}: bad: {reason}", at.number),
            })
            .collect()
    }

    #[test]
    fn jsonl_lines_are_bodies_numbered_from_one_blank_and_long_ones_aside() {
        let text = "{\"a\":1}\r\n\n   \n{\"b\":2}\n".to_owned() + &"x".repeat(100) + "\n{\"c\":3}";
        assert_eq!(
            summary(&items(Format::Jsonl, &text)),
            [
                "1: {\"a\":1}",
                "4: {\"b\":2}",
                "5: bad: longer than the limit (40 bytes)",
                "6: {\"c\":3}"
            ]
        );
    }

    #[test]
    fn a_capture_gives_its_body_and_headers() {
        let text = r#"{"headers":{"Webhook-Id":"w-1","x":3},"bodyRaw":"{\"a\": 1}","body":{"b":2}}
{"headers":{},"body":{"b":2}}
{"headers":{}}
nonsense"#;
        let items = items(Format::Capture, text);
        assert_eq!(
            summary(&items),
            [
                "1: {\"a\": 1}",
                "2: {\"b\":2}",
                "3: bad: a captured request needs bodyRaw or body",
                "4: bad: not a captured request: expected ident"
            ]
        );
        let Item::Record(first) = &items[0] else { panic!() };
        assert_eq!(first.headers, BTreeMap::from([("webhook-id".into(), "w-1".into())]));
    }

    #[test]
    fn csv_rows_are_envelopes_and_a_short_row_is_a_bad_line() {
        let text = "customerId,updatedAt,firstName\nc-1,2024-01-01T00:00:00Z,Ana\nc-2,2024\n\"c-3\",,\"Bo, Jr\"\n";
        let items = items(Format::Csv, text);
        let lines = summary(&items);
        assert!(lines[0].starts_with("2: {\"action\":\"updated\",\"payload\":{\"customerId\":\"c-1\""));
        assert_eq!(lines[1], "3: bad: has 2 fields where the header row has 3");
        assert!(lines[2].contains("\"firstName\":\"Bo, Jr\""), "{}", lines[2]);
    }

    #[test]
    fn a_csv_without_its_required_columns_stops_with_what_to_do() {
        let input = Input {
            name: "people.csv".into(),
            size: None,
            reader: Box::new(io::Cursor::new(b"id,firstName\n1,Ana\n".to_vec())),
        };
        let error = read(input, 0, Format::Csv, "b", 40, Arc::default(), &mut |_| {}).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("people.csv: the header row has no customerId column")
        );
    }
}
