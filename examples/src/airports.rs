//! The airports count: which countries have the most working airports, over OurAirports'
//! `airports.csv`, as a flow. Used by the `airports` example and its benchmark.
//!
//! The file is read lazily, in chunks cut at *record* boundaries (a quoted field may hold a
//! newline, so not every newline ends a record). The chunks are parsed in parallel by the first
//! layer of the flow, which counts each chunk's open airports by country; each country's count
//! goes to the stage that owns it (partition by country), which adds them up; `take_sort`
//! gathers the top countries.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flow::{Flow, Partition, Window};

/// Column indexes in OurAirports' `airports.csv`.
const ID: usize = 0;
const TYPE: usize = 2;
const NAME: usize = 3;
const ISO_COUNTRY: usize = 8;

/// An ISO 3166-1 country code (two letters in OurAirports' data; up to three accepted).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country {
    bytes: [u8; 3],
    len: u8,
}

impl Country {
    /// The code, if `code` is 1 to 3 ASCII letters or digits.
    pub fn new(code: &[u8]) -> Option<Self> {
        if code.is_empty() || code.len() > 3 || !code.iter().all(u8::is_ascii_alphanumeric) {
            return None;
        }
        let mut bytes = [0; 3];
        bytes[..code.len()].copy_from_slice(code);
        Some(Country {
            bytes,
            len: code.len() as u8,
        })
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).expect("checked ASCII")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

/// A row the parser could not use, with its line number in the file (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Malformed {
    /// The line the record starts on.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// A part of the input holding whole records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The bytes.
    pub data: Vec<u8>,
    /// The line (1-based) the chunk starts on.
    pub first_line: u64,
}

/// How many times `needle` occurs in `bytes`. Counts in 64 byte-wide lanes (flushed before
/// they can overflow), which the compiler turns into vector code: about 10x faster than
/// `iter().filter().count()`, and this runs over the whole input in the source.
pub fn occurrences(bytes: &[u8], needle: u8) -> usize {
    bytes
        .chunks(255 * 64)
        .map(|part| {
            let mut lanes = [0u8; 64];
            let mut blocks = part.chunks_exact(64);
            for block in &mut blocks {
                for (lane, &b) in lanes.iter_mut().zip(block) {
                    *lane += u8::from(b == needle);
                }
            }
            let rest = blocks.remainder().iter().filter(|&&b| b == needle).count();
            lanes.iter().map(|&n| usize::from(n)).sum::<usize>() + rest
        })
        .sum()
}

/// The position just after the last record boundary in `buf` (a newline outside quotes, where
/// `buf` starts at a record boundary), or 0 if there is none. RFC 4180 quoting: `""` inside a
/// quoted field keeps the parity even.
fn last_boundary(buf: &[u8]) -> usize {
    let mut end = buf.len();
    // The quotes before each candidate newline, counted once for the whole prefix and then
    // adjusted while walking back (newlines inside quoted fields are rare).
    let mut quotes = None;
    while let Some(nl) = buf[..end].iter().rposition(|&b| b == b'\n') {
        let before = match quotes {
            None => occurrences(&buf[..nl], b'"'),
            Some((count, at)) => count - occurrences(&buf[nl..at], b'"'),
        };
        if before % 2 == 0 {
            return nl + 1;
        }
        quotes = Some((before, nl));
        end = nl;
    }
    0
}

/// Reads records in chunks of about `block` bytes, each ending at a record boundary, lazily:
/// a flow pulls the next chunk only when a stage asks for it, so memory stays bounded
/// whatever the size of the input. A read error ends the chunks and is kept in `error`.
pub struct Blocks<R> {
    /// The input.
    reader: R,
    buf: Vec<u8>,
    block: usize,
    line: u64,
    eof: bool,
    error: Arc<Mutex<Option<String>>>,
}

impl<R> fmt::Debug for Blocks<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blocks")
            .field("block", &self.block)
            .field("line", &self.line)
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

impl<R: std::io::Read> Blocks<R> {
    /// Chunks of `reader`, which starts at a record boundary on line `line`.
    pub fn new(reader: R, block: usize, line: u64) -> Self {
        Blocks {
            reader,
            buf: Vec::new(),
            block: block.max(1),
            line,
            eof: false,
            error: Arc::new(Mutex::new(None)),
        }
    }

    /// Where a read error is kept.
    pub fn error(&self) -> Arc<Mutex<Option<String>>> {
        Arc::clone(&self.error)
    }

    fn fill(&mut self) {
        while !self.eof && self.buf.len() < self.block {
            let old = self.buf.len();
            self.buf.resize(old + self.block, 0);
            match self.reader.read(&mut self.buf[old..]) {
                Ok(0) => {
                    self.buf.truncate(old);
                    self.eof = true;
                }
                Ok(n) => self.buf.truncate(old + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => self.buf.truncate(old),
                Err(e) => {
                    self.buf.truncate(old);
                    *self.error.lock().expect("not poisoned") = Some(e.to_string());
                    self.eof = true;
                }
            }
        }
    }
}

impl<R: std::io::Read> Iterator for Blocks<R> {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        loop {
            self.fill();
            if self.buf.is_empty() {
                return None;
            }
            let cut = if self.eof {
                self.buf.len()
            } else {
                last_boundary(&self.buf)
            };
            if cut == 0 {
                // One record longer than a block: read more.
                self.block *= 2;
                continue;
            }
            let rest = self.buf.split_off(cut);
            let data = std::mem::replace(&mut self.buf, rest);
            let chunk = Chunk {
                first_line: self.line,
                data,
            };
            self.line += occurrences(&chunk.data, b'\n') as u64;
            return Some(chunk);
        }
    }
}

/// What parsing one chunk found.
#[derive(Debug, Default)]
pub struct Parsed {
    /// The country of every open (not closed) airport, in order.
    pub open: Vec<Country>,
    /// Closed airports seen.
    pub closed: u64,
    /// Rows that could not be used.
    pub malformed: Vec<Malformed>,
}

/// Parses the records of one chunk: keeps `id`, `type`, `name` and `iso_country`, drops closed
/// airports. A row with the wrong number of fields, a non-numeric id, a name that is not UTF-8
/// or an invalid country is reported with its line and skipped.
pub fn parse_chunk(chunk: &Chunk, fields: usize) -> Parsed {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(&chunk.data[..]);
    let mut record = csv::ByteRecord::new();
    let mut parsed = Parsed::default();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let line = e.position().map_or(reader.position().line(), |p| p.line());
                parsed.malformed.push(Malformed {
                    line: chunk.first_line + line - 1,
                    reason: e.to_string(),
                });
                continue;
            }
        }
        match check(&record, fields) {
            Ok(Row::Closed) => parsed.closed += 1,
            Ok(Row::Open(country)) => parsed.open.push(country),
            Err(reason) => {
                // The position is only read for the rare bad row.
                let line = chunk.first_line + record.position().map_or(1, |p| p.line()) - 1;
                parsed.malformed.push(Malformed { line, reason });
            }
        }
    }
    parsed
}

/// What one usable row of `airports.csv` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    /// An open airport (any type but `closed`), in this country.
    Open(Country),
    /// A closed airport.
    Closed,
}

/// Checks one record of a file whose header has `fields` fields: it must have that many, a
/// numeric `id`, a UTF-8 `name` and a valid `iso_country`; otherwise the reason is returned.
///
/// # Errors
///
/// The reason the row cannot be used.
pub fn check(record: &csv::ByteRecord, fields: usize) -> Result<Row, String> {
    if record.len() != fields {
        return Err(format!("expected {fields} fields, found {}", record.len()));
    }
    let id = &record[ID];
    if id.is_empty() || !id.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "id is not a number: {:?}",
            String::from_utf8_lossy(id)
        ));
    }
    if std::str::from_utf8(&record[NAME]).is_err() {
        return Err("name is not valid UTF-8".to_owned());
    }
    if &record[TYPE] == b"closed" {
        return Ok(Row::Closed);
    }
    let country = Country::new(&record[ISO_COUNTRY]).ok_or_else(|| {
        format!(
            "invalid iso_country: {:?}",
            String::from_utf8_lossy(&record[ISO_COUNTRY])
        )
    })?;
    Ok(Row::Open(country))
}

/// Reads the header line: returns its field count and the line the records start on.
///
/// # Errors
///
/// When the input has no header line, it cannot be read, or the header lacks the columns used.
pub fn header(reader: &mut impl std::io::BufRead) -> Result<(usize, u64), String> {
    let mut line = Vec::new();
    let mut lines = 0u64;
    // The header is one record; a quoted field could span lines.
    loop {
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("cannot read the header: {e}"))?;
        lines += 1;
        if n == 0 || occurrences(&line, b'"') % 2 == 0 {
            break;
        }
    }
    if line.is_empty() {
        return Err("the input is empty".to_owned());
    }
    let record = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(&line[..])
        .byte_records()
        .next()
        .ok_or("the input has no header")?
        .map_err(|e| format!("cannot read the header: {e}"))?;
    let wanted = [
        (ID, "id"),
        (TYPE, "type"),
        (NAME, "name"),
        (ISO_COUNTRY, "iso_country"),
    ];
    for (index, name) in wanted {
        if record.get(index) != Some(name.as_bytes()) {
            return Err(format!(
                "the header has no `{name}` column at position {index}"
            ));
        }
    }
    Ok((record.len(), lines + 1))
}

/// The answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The countries with the most open airports, most first (ties by code).
    pub top: Vec<(Country, u64)>,
    /// Open airports counted.
    pub open: u64,
    /// Closed airports skipped.
    pub closed: u64,
    /// Countries with at least one open airport.
    pub countries: u64,
    /// Rows that could not be used.
    pub malformed: Vec<Malformed>,
}

/// Open airports by country.
pub type Counts = HashMap<Country, u64, ahash::RandomState>;

/// The open airports of one chunk counted by country: what a parsing stage sends on, so that
/// the partition carries one event per country and chunk rather than one per airport (the
/// combiner of map-reduce).
pub fn tally(open: &[Country]) -> Vec<(Country, u64)> {
    let mut counts = Counts::default();
    for &country in open {
        *counts.entry(country).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Counts the open airports of each country in `input` (a whole `airports.csv`, read lazily
/// in blocks of about `block` bytes) with a flow of `workers` stages per layer, and returns the
/// `top` countries.
///
/// # Errors
///
/// A missing or wrong header, a read error, or a failed flow.
pub async fn count(
    input: impl std::io::Read + Send + 'static,
    block: usize,
    top: usize,
    workers: usize,
) -> Result<Report, String> {
    count_with(input, block, top, workers, None).await
}

/// A block size for an input of `len` bytes: enough chunks to keep `workers` stages busy,
/// small enough to bound memory.
pub fn block_size(len: u64, workers: usize) -> usize {
    let per = len / (workers.max(1) as u64 * 16);
    per.clamp(64 * 1024, 1024 * 1024) as usize
}

/// Like [`count`]; with `snapshots`, each counting stage also reports its running counts
/// every `snapshots.every` airports.
///
/// # Errors
///
/// As [`count`].
pub async fn count_with(
    input: impl std::io::Read + Send + 'static,
    block: usize,
    top: usize,
    workers: usize,
    snapshots: Option<Snapshots>,
) -> Result<Report, String> {
    let mut input = std::io::BufReader::with_capacity(64 * 1024, input);
    let (fields, line) = header(&mut input)?;
    let blocks = Blocks::new(input, block, line);
    let read_error = blocks.error();
    let open = Arc::new(AtomicU64::new(0));
    let closed = Arc::new(AtomicU64::new(0));
    let countries = Arc::new(AtomicU64::new(0));
    let malformed = Arc::new(Mutex::new(Vec::new()));
    // Snapshots count airports, so with them each airport travels alone.
    let per_airport = snapshots.is_some();
    let parsed = {
        let (open, closed, malformed) = (
            Arc::clone(&open),
            Arc::clone(&closed),
            Arc::clone(&malformed),
        );
        Flow::from_iter(blocks)
            .stages(workers)
            .max_demand(1)
            .min_demand(0)
            .flat_map(move |chunk| {
                let parsed = parse_chunk(&chunk, fields);
                open.fetch_add(parsed.open.len() as u64, Ordering::Relaxed);
                closed.fetch_add(parsed.closed, Ordering::Relaxed);
                if !parsed.malformed.is_empty() {
                    malformed
                        .lock()
                        .expect("not poisoned")
                        .extend(parsed.malformed);
                }
                if per_airport {
                    parsed.open.into_iter().map(|c| (c, 1)).collect()
                } else {
                    tally(&parsed.open)
                }
            })
            .partition(Partition::by_key(|&(c, _): &(Country, u64)| c).stages(workers))
    };
    let parsed = match &snapshots {
        Some(s) => parsed.window(Window::global().trigger_every(s.every)),
        None => parsed,
    };
    let counted = {
        let countries = Arc::clone(&countries);
        let reduced = parsed.reduce(Counts::default, |counts: &mut Counts, (c, n)| {
            *counts.entry(c).or_insert(0) += n
        });
        match snapshots {
            None => reduced.on_trigger(move |counts, _| {
                countries.fetch_add(counts.len() as u64, Ordering::Relaxed);
                counts.drain().collect()
            }),
            Some(s) => s.attach(reduced, countries),
        }
    };
    let lists = counted
        .take_sort(top, |a: &(Country, u64), b: &(Country, u64)| {
            b.1.cmp(&a.1).then(a.0.cmp(&b.0))
        })
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(e) = read_error.lock().expect("not poisoned").take() {
        return Err(format!("cannot read the input: {e}"));
    }
    let mut malformed = std::mem::take(&mut *malformed.lock().expect("not poisoned"));
    malformed.sort_by_key(|m| m.line);
    Ok(Report {
        top: lists.into_iter().next().unwrap_or_default(),
        open: open.load(Ordering::Relaxed),
        closed: closed.load(Ordering::Relaxed),
        countries: countries.load(Ordering::Relaxed),
        malformed,
    })
}

/// Receives a counting stage's partition index and its counts so far.
pub type OnSnapshot = Arc<dyn Fn(usize, &Counts) + Send + Sync>;

/// Progress snapshots of the counting stages (`--snapshots N`).
pub struct Snapshots {
    /// Every how many airports a stage reports.
    pub every: usize,
    /// Called with the partition index and its counts so far.
    pub on_snapshot: OnSnapshot,
}

impl fmt::Debug for Snapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshots")
            .field("every", &self.every)
            .finish()
    }
}

impl Snapshots {
    fn attach<F>(
        self,
        reduced: flow::Reduced<(Country, u64), Counts, F>,
        countries: Arc<AtomicU64>,
    ) -> Flow<(Country, u64)>
    where
        F: Fn(&mut Counts, (Country, u64)) + Send + Sync + 'static,
    {
        let on_snapshot = self.on_snapshot;
        reduced.on_trigger(move |counts, trigger| {
            if trigger.is_done() {
                countries.fetch_add(counts.len() as u64, Ordering::Relaxed);
                counts.drain().collect()
            } else {
                on_snapshot(trigger.partition, counts);
                Vec::new()
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "id,ident,type,name,latitude_deg,longitude_deg,elevation_ft,continent,iso_country,iso_region\n";

    #[test]
    fn chunks_end_only_at_newlines_outside_quotes() {
        let data: &[u8] = b"a,\"x\ny\",c\nd,e,f\n\"g\"\"\n\",h,i\nj,k,l\n";
        for block in 1..=data.len() + 1 {
            let chunks: Vec<Chunk> = Blocks::new(data, block, 1).collect();
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.clone()).collect();
            assert_eq!(joined, data, "chunks cover the input exactly");
            for c in &chunks {
                let rows = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(&c.data[..])
                    .byte_records()
                    .map(|r| r.unwrap().len())
                    .collect::<Vec<_>>();
                assert!(
                    rows.iter().all(|&n| n == 3),
                    "block {block}: {rows:?} in {c:?}"
                );
            }
        }
    }

    #[test]
    fn chunks_know_their_first_line() {
        let data: &[u8] = b"a,\"1\n2\",c\nd,e,f\ng,h,i\n";
        let lines: Vec<u64> = Blocks::new(data, 4, 10).map(|c| c.first_line).collect();
        assert_eq!(lines, vec![10, 12, 13]);
    }

    #[test]
    fn malformed_rows_are_reported_with_their_line() {
        let body = "1,A,small_airport,\"Two\nlines\",0,0,0,EU,FR,FR-1\nx,B,small_airport,Bad id,0,0,0,EU,DE,DE-1\n3,C,closed,Gone,0,0,0,EU,DE,DE-1\n4,D,heliport,Short\n5,E,heliport,Ok,0,0,0,EU,DE,DE-1\n";
        let data = format!("{HEADER}{body}");
        let mut input = data.as_bytes();
        let (fields, line) = header(&mut input).unwrap();
        let chunk = Blocks::new(input, 1 << 20, line).next().unwrap();
        let parsed = parse_chunk(&chunk, fields);
        assert_eq!(
            parsed.open,
            vec![Country::new(b"FR").unwrap(), Country::new(b"DE").unwrap()]
        );
        assert_eq!(parsed.closed, 1);
        let lines: Vec<u64> = parsed.malformed.iter().map(|m| m.line).collect();
        assert_eq!(lines, vec![4, 6], "{:?}", parsed.malformed);
    }

    #[test]
    fn occurrences_counts_across_lane_flushes() {
        let mut data = vec![b'x'; 255 * 64 * 3 + 17];
        for i in (0..data.len()).step_by(7) {
            data[i] = b'"';
        }
        let slow = data.iter().filter(|&&b| b == b'"').count();
        assert_eq!(occurrences(&data, b'"'), slow);
        assert_eq!(
            occurrences(&data[5..], b'"'),
            data[5..].iter().filter(|&&b| b == b'"').count()
        );
        assert_eq!(occurrences(b"", b'"'), 0);
    }

    #[test]
    fn a_chunk_is_tallied_once_per_country() {
        let [us, br] = [b"US", b"BR"].map(|c| Country::new(c).expect("valid"));
        let mut tallied = tally(&[us, br, us, us]);
        tallied.sort();
        assert_eq!(tallied, [(br, 1), (us, 3)]);
        assert!(tally(&[]).is_empty());
    }

    #[test]
    fn a_wrong_header_is_refused() {
        assert!(header(&mut &b""[..]).is_err());
        assert!(
            header(&mut &b"id,name\n1,x\n"[..])
                .unwrap_err()
                .contains("type")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_the_same_whatever_the_block_size_and_stages() {
        let sample = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/airports-sample.csv"
        ))
        .unwrap();
        for block in [1, 7, 100, 1 << 20] {
            for workers in 1..=3 {
                let report = count(std::io::Cursor::new(sample.clone()), block, 3, workers)
                    .await
                    .unwrap();
                assert_eq!((report.open, report.closed, report.countries), (11, 3, 6));
                let top: Vec<_> = report
                    .top
                    .iter()
                    .map(|(c, n)| (c.to_string(), *n))
                    .collect();
                assert_eq!(
                    top,
                    [
                        ("US".to_owned(), 4),
                        ("BR".to_owned(), 2),
                        ("CA".to_owned(), 2)
                    ]
                );
            }
        }
    }
}
