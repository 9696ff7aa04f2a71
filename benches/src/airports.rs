//! The airports count (`benches/airports.rs`): OurAirports' real `airports.csv`, open airports
//! by country, top 10, as `examples::airports::count` (a flow) and as two hand-written
//! baselines, a single-threaded `csv` loop and rayon over chunks, all returning a [`Tally`];
//! plus what the bench's scale step needs (copies of the file, peak RSS, free disk space).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use ahash::AHashMap;
use examples::airports::{Country, Report, Row, block_size, check, count, header, occurrences};
use rayon::prelude::*;

/// The stages per layer of the flow and the threads of the rayon pool: the machine's 2 cores.
pub const WORKERS: usize = 2;

/// How many countries the count lists.
pub const TOP: usize = 10;

/// The known answer for the real file: open airports (type not `closed`).
pub const OPEN: u64 = 71_964;

/// The known answer for the real file: closed airports.
pub const CLOSED: u64 = 13_045;

/// The known answer for the real file: countries with at least one open airport.
pub const COUNTRIES: u64 = 247;

/// The known answer for the real file: the top 3 countries.
pub const TOP_3: [(&str, u64); 3] = [("US", 25_116), ("BR", 7_540), ("JP", 3_328)];

/// Elixir Flow's reference time for the count on this machine, in milliseconds.
pub const ELIXIR_MS: f64 = 700.0;

/// Polars' reference time for the count on this machine, in milliseconds.
pub const POLARS_MS: f64 = 17.0;

/// The goal for the flow, in milliseconds (and: at or below the rayon baseline).
pub const GOAL_MS: f64 = 20.0;

/// Where the real `airports.csv` is (85,009 rows, 12.5 MB; kept outside the repository):
/// `$AIRPORTS_CSV` if set, else `shared/data/airports.csv` next to the workspace.
pub fn csv_path() -> PathBuf {
    std::env::var_os("AIRPORTS_CSV").map_or_else(
        || {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/data/airports.csv"
            ))
        },
        PathBuf::from,
    )
}

/// The result of a count, in one shape for the flow and the baselines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// The [`TOP`] countries, most airports first, ties by code.
    pub top: Vec<(String, u64)>,
    /// Open airports counted.
    pub open: u64,
    /// Closed airports skipped.
    pub closed: u64,
    /// Countries with at least one open airport.
    pub countries: u64,
    /// Rows that could not be used.
    pub malformed: u64,
}

impl From<&Report> for Tally {
    fn from(report: &Report) -> Self {
        Tally {
            top: report
                .top
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            open: report.open,
            closed: report.closed,
            countries: report.countries,
            malformed: report.malformed.len() as u64,
        }
    }
}

impl Tally {
    /// Checks the tally of `copies` concatenated copies of the real file's rows against the
    /// known answer.
    ///
    /// # Panics
    ///
    /// If it is wrong.
    pub fn check(&self, copies: u64) {
        assert_eq!(
            (self.open, self.closed, self.countries, self.malformed),
            (OPEN * copies, CLOSED * copies, COUNTRIES, 0),
            "open, closed, countries, malformed"
        );
        let top3: Vec<(String, u64)> = TOP_3
            .iter()
            .map(|&(c, n)| (c.to_owned(), n * copies))
            .collect();
        assert_eq!(self.top[..3], top3[..], "top 3");
        assert_eq!(self.top.len(), TOP);
    }
}

/// The flow: `examples::airports::count(file, block_size(len, 2), 10, 2)`, from opening the
/// file to the report. Runs on the current tokio runtime.
///
/// # Errors
///
/// When the file cannot be opened or the count fails.
pub async fn flow_count(path: &Path) -> Result<Tally, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = file.metadata().map_or(0, |m| m.len());
    let report = count(file, block_size(len, WORKERS), TOP, WORKERS).await?;
    Ok(Tally::from(&report))
}

/// Open airports by two-letter country code, with the closed and unusable rows: what both
/// baselines fill, one record at a time.
#[derive(Debug, Default)]
pub struct Counts {
    by_country: AHashMap<Country, u64>,
    closed: u64,
    malformed: u64,
}

impl Counts {
    /// Counts one record of a file with `fields` fields, checked exactly as the flow checks it
    /// (`examples::airports::check`: field count, numeric id, UTF-8 name, valid country): a
    /// closed airport is counted as such, an open one by its country, a bad row as malformed.
    pub fn add(&mut self, record: &csv::ByteRecord, fields: usize) {
        match check(record, fields) {
            Ok(Row::Open(country)) => *self.by_country.entry(country).or_insert(0) += 1,
            Ok(Row::Closed) => self.closed += 1,
            Err(_) => self.malformed += 1,
        }
    }

    /// Counts every record of `data` (whole records, no header), reusing one `ByteRecord`.
    pub fn add_all(&mut self, data: &[u8], fields: usize) {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(data);
        let mut record = csv::ByteRecord::new();
        loop {
            match reader.read_byte_record(&mut record) {
                Ok(true) => self.add(&record, fields),
                Ok(false) => break,
                Err(_) => self.malformed += 1,
            }
        }
    }

    /// Adds `other`'s counts into these.
    pub fn merge(mut self, other: Counts) -> Counts {
        let (mut into, from) = if self.by_country.len() >= other.by_country.len() {
            (self.by_country, other.by_country)
        } else {
            (other.by_country, self.by_country)
        };
        for (code, n) in from {
            *into.entry(code).or_insert(0) += n;
        }
        self.by_country = into;
        self.closed += other.closed;
        self.malformed += other.malformed;
        self
    }

    /// The tally: the [`TOP`] countries (most first, ties by code) and the totals.
    pub fn finish(self) -> Tally {
        let mut all: Vec<(Country, u64)> = self.by_country.into_iter().collect();
        let countries = all.len() as u64;
        let open = all.iter().map(|&(_, n)| n).sum();
        let by_count = |a: &(Country, u64), b: &(Country, u64)| b.1.cmp(&a.1).then(a.0.cmp(&b.0));
        if all.len() > TOP {
            all.select_nth_unstable_by(TOP - 1, by_count);
            all.truncate(TOP);
        }
        all.sort_unstable_by(by_count);
        Tally {
            top: all.into_iter().map(|(c, n)| (c.to_string(), n)).collect(),
            open,
            closed: self.closed,
            countries,
            malformed: self.malformed,
        }
    }
}

/// Baseline 1: one thread, one `csv` reader over the file (64 KB buffer), one reused
/// `ByteRecord`, an ahash map, then the top-10 sort.
///
/// # Errors
///
/// When the file cannot be read.
pub fn csv_loop(path: &Path) -> Result<Tally, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .buffer_capacity(64 * 1024)
        .from_path(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let fields = reader
        .byte_headers()
        .map_err(|e| format!("cannot read the header: {e}"))?
        .len();
    let mut record = csv::ByteRecord::new();
    let mut counts = Counts::default();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => counts.add(&record, fields),
            Ok(false) => break,
            Err(e) if e.is_io_error() => return Err(format!("cannot read: {e}")),
            Err(_) => counts.malformed += 1,
        }
    }
    Ok(counts.finish())
}

/// Baseline 2: reads the whole file, skips the header (`examples::airports::header`), cuts
/// the rest at record boundaries into slices of about `block_size(len, 2)` bytes (the flow's
/// chunks, without copying them), counts each slice into its own ahash map with rayon's
/// `par_iter` on `pool`, merges the maps and sorts the top 10.
///
/// # Errors
///
/// When the file cannot be read or has no valid header.
pub fn rayon_chunks(pool: &rayon::ThreadPool, path: &Path) -> Result<Tally, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut body = &data[..];
    let (fields, _) = header(&mut body)?;
    let chunks = record_chunks(body, block_size(data.len() as u64, WORKERS));
    let counts = pool.install(|| {
        chunks
            .par_iter()
            .map(|chunk| {
                let mut counts = Counts::default();
                counts.add_all(chunk, fields);
                counts
            })
            .reduce(Counts::default, Counts::merge)
    });
    Ok(counts.finish())
}

/// Cuts `data` (which starts at a record boundary) into slices of at least `target` bytes
/// (but the last), each ending at a record boundary: a newline outside quotes, found by the
/// parity of the quotes since the slice's start (RFC 4180: `""` keeps it even).
pub fn record_chunks(data: &[u8], target: usize) -> Vec<&[u8]> {
    let quotes = |bytes: &[u8]| occurrences(bytes, b'"');
    let mut chunks = Vec::with_capacity(data.len() / target.max(1) + 1);
    let mut start = 0;
    while start < data.len() {
        let mut end = data.len().min(start + target.max(1));
        let mut open = quotes(&data[start..end]) % 2 == 1;
        loop {
            match data[end..].iter().position(|&b| b == b'\n') {
                None => {
                    end = data.len();
                    break;
                }
                Some(i) => {
                    open ^= quotes(&data[end..end + i]) % 2 == 1;
                    end += i + 1;
                    if !open {
                        break;
                    }
                }
            }
        }
        chunks.push(&data[start..end]);
        start = end;
    }
    chunks
}

/// Writes the header of `csv` (a whole `airports.csv`) then its rows `copies` times to
/// `dest`; returns the bytes written.
///
/// # Errors
///
/// When `csv` has no valid header or `dest` cannot be written.
pub fn write_copies(csv: &[u8], copies: u64, dest: &Path) -> io::Result<u64> {
    let mut body = csv;
    header(&mut body).map_err(io::Error::other)?;
    let head = &csv[..csv.len() - body.len()];
    let mut out = BufWriter::with_capacity(1 << 20, File::create(dest)?);
    out.write_all(head)?;
    let mut written = head.len() as u64;
    for _ in 0..copies {
        out.write_all(body)?;
        written += body.len() as u64;
        if !body.ends_with(b"\n") {
            out.write_all(b"\n")?;
            written += 1;
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(written)
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), in KiB, if known.
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Free space for unprivileged users on the file system holding `dir`, in bytes, from
/// `df -Pk` (std has no `statvfs`), if known.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_chunks_cut_only_outside_quotes() {
        let data: &[u8] = b"a,\"x\ny\",c\nd,e,f\n\"g\"\"\n\",h,i\nj,k,l\n";
        for target in 0..=data.len() + 1 {
            let chunks = record_chunks(data, target);
            assert_eq!(chunks.concat(), data);
            for chunk in chunks {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(chunk);
                assert!(reader.byte_records().all(|r| r.unwrap().len() == 3));
            }
        }
    }
}
