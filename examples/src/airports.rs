//! The airports count: which countries have the most working airports, over OurAirports'
//! `airports.csv`, as a flow. Used by the `airports` example and its benchmark.
//!
//! The file is read lazily, in chunks cut at *record* boundaries, exactly where the `csv`
//! reader ends records: a quoted field may hold a line end, so not every line end ends a
//! record, and a quote opens a quoted field only at the start of a field (elsewhere it is
//! data), so not every quote counts. `\n`, `\r\n` and `\r` all end lines, for the line
//! numbers of malformed rows too. The chunks are parsed in parallel by the first layer of the
//! flow, which counts each chunk's open airports by country; each country's count goes to the
//! stage that owns it (partition by country), which adds them up; `take_sort` gathers the top
//! countries.

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

/// How many `\r` directly followed by `\n` `bytes` holds, counted in lanes like
/// [`occurrences`].
fn crlf_pairs(bytes: &[u8]) -> usize {
    if bytes.len() < 2 {
        return 0;
    }
    let (cr, lf) = (&bytes[..bytes.len() - 1], &bytes[1..]);
    cr.chunks(255 * 64)
        .zip(lf.chunks(255 * 64))
        .map(|(cr, lf)| {
            let mut lanes = [0u8; 64];
            let (mut crs, mut lfs) = (cr.chunks_exact(64), lf.chunks_exact(64));
            for (cr, lf) in (&mut crs).zip(&mut lfs) {
                for ((lane, &a), &b) in lanes.iter_mut().zip(cr).zip(lf) {
                    *lane += u8::from(a == b'\r') & u8::from(b == b'\n');
                }
            }
            let rest = crs
                .remainder()
                .iter()
                .zip(lfs.remainder())
                .filter(|&(&a, &b)| a == b'\r' && b == b'\n')
                .count();
            lanes.iter().map(|&n| usize::from(n)).sum::<usize>() + rest
        })
        .sum()
}

/// How many lines `bytes` ends: `\n`, `\r\n` and a lone `\r` are one line end each, as
/// for the `csv` reader, which ends a record at any of them. (A chunk never ends between
/// the `\r` and the `\n` of a pair, so the counts of consecutive chunks add up.) Counts the
/// `\n` and the `\r` in one pass, in lanes like [`occurrences`].
fn line_ends(bytes: &[u8]) -> u64 {
    let (lf, cr) = bytes
        .chunks(255 * 64)
        .map(|part| {
            let (mut lfs, mut crs) = ([0u8; 64], [0u8; 64]);
            let mut blocks = part.chunks_exact(64);
            for block in &mut blocks {
                for ((lf, cr), &b) in lfs.iter_mut().zip(&mut crs).zip(block) {
                    *lf += u8::from(b == b'\n');
                    *cr += u8::from(b == b'\r');
                }
            }
            let sum = |lanes: [u8; 64]| lanes.iter().map(|&n| usize::from(n)).sum::<usize>();
            let rest = blocks.remainder();
            (
                sum(lfs) + rest.iter().filter(|&&b| b == b'\n').count(),
                sum(crs) + rest.iter().filter(|&&b| b == b'\r').count(),
            )
        })
        .fold((0, 0), |(lf, cr), (l, c)| (lf + l, cr + c));
    // Most files have no `\r` at all: no pairs to count then.
    let pairs = if cr == 0 { 0 } else { crlf_pairs(bytes) };
    (lf + cr - pairs) as u64
}

/// The UTF-8 byte order mark, which the `csv` reader skips at the very start of its input
/// (and only there).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the `csv` reader's grammar is after a byte: csv-core's state machine for its
/// default dialect (`,` between fields; `"` quotes, `""` is a quote inside quotes; `\r`,
/// `\n` or `\r\n` ends a record). The chunker must end chunks exactly where that reader
/// ends records, or records are cut in two and the counts depend on the block size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scan {
    /// Between records, where line ends are blank lines, skipped.
    Record,
    /// At the start of a field: only here does a quote open a quoted field.
    Field,
    /// In an unquoted field, where a quote is an ordinary byte (`Joe's "Best" Field`).
    Unquoted,
    /// In a quoted field, where `,` and line ends are data.
    Quoted,
    /// Just after a quote in a quoted field: another quote is an escaped one; a `,` or a
    /// line end ends the field; any other byte goes on as an unquoted field (`"ab"c`).
    QuoteInQuoted,
}

impl Scan {
    /// The state after `byte`.
    fn step(self, byte: u8) -> Scan {
        match (self, byte) {
            (Scan::Quoted, b'"') => Scan::QuoteInQuoted,
            (Scan::Quoted, _) => Scan::Quoted,
            (Scan::QuoteInQuoted, b'"') => Scan::Quoted,
            (_, b'\r' | b'\n') => Scan::Record,
            (_, b',') => Scan::Field,
            (Scan::Record | Scan::Field, b'"') => Scan::Quoted,
            _ => Scan::Unquoted,
        }
    }
}

/// The position just after the last record end in `buf`, which starts at a record
/// boundary, or 0 if there is none: where the `csv` reader would end a record (see
/// [`Scan`]), and never between the `\r` and `\n` of a pair, so that the next chunk does
/// not start with half a line end.
///
/// Mostly by the parity of the quotes, 64 bytes at a time ([`by_parity`]); where a quote
/// inside an unquoted field makes the parity wrong, byte by byte with [`Scan`] from the
/// 64 bytes holding it to the next record end, then by parity again from there.
fn last_boundary(buf: &[u8]) -> usize {
    // A final `\r` may be the first half of a `\r\n` whose `\n` is not read yet.
    let buf = buf.strip_suffix(b"\r").unwrap_or(buf);
    // A record boundary: the parity is right from here.
    let mut from = 0;
    loop {
        let part = &buf[from..];
        let (at, inside) = match by_parity(part) {
            Ok(cut) => return from + cut.unwrap_or(0),
            Err(irregular) => irregular,
        };
        // The state before `at` follows from the parity and the byte before, as every
        // quote before `at` was regular.
        let mut state = match at.checked_sub(1).map(|i| part[i]) {
            _ if inside => Scan::Quoted,
            None | Some(b'\r' | b'\n') => Scan::Record,
            Some(b'"') => Scan::QuoteInQuoted,
            Some(b',') => Scan::Field,
            Some(_) => Scan::Unquoted,
        };
        let next = part[at..].iter().position(|&b| {
            state = state.step(b);
            state == Scan::Record
        });
        match next {
            Some(i) => from += at + i + 1,
            // No record end after `at`: the last one is before it, if any.
            None => return from + last_outside(&part[..at], inside).unwrap_or(0),
        }
    }
}

/// [`last_boundary`] byte by byte: the reference it is tested against.
#[cfg(test)]
fn last_boundary_by_state(buf: &[u8]) -> usize {
    let mut state = Scan::Record;
    let mut last = 0;
    for (i, &b) in buf.iter().enumerate() {
        state = state.step(b);
        // Only a line end outside quotes leads back to `Record`.
        if state == Scan::Record {
            last = i + 1;
        }
    }
    last
}

/// The position just after the last line end of `buf` outside quotes, given whether the
/// quotes of all of `buf` leave it inside quotes: walking back from the end, as line ends
/// inside quoted fields are rare.
fn last_outside(buf: &[u8], inside: bool) -> Option<usize> {
    let mut odd = inside;
    let mut end = buf.len();
    while let Some(at) = buf[..end].iter().rposition(|&b| b == b'\n' || b == b'\r') {
        odd ^= occurrences(&buf[at..end], b'"') % 2 == 1;
        if !odd {
            return Some(at + 1);
        }
        end = at;
    }
    None
}

/// Gathers the low bits of the 8 bytes of `x` (each 0 or 1) into one byte, byte `i` to bit
/// `i`: one multiplication, with no carries between the partial products.
#[inline(always)]
fn pack8(x: u64) -> u64 {
    x.wrapping_mul(0x0102_0408_1020_4080) >> 56
}

/// Bit `i` set where byte `i` of `word` (64 bytes) is a quote, then where it is a quote, `,`,
/// `\r` or `\n` (a byte after which a quote may open a quoted field). A compare per byte into
/// byte lanes, which the compiler turns into vector compares, then [`pack8`] on 8 lanes at a
/// time: several times faster than setting the bits one by one.
#[inline(always)]
fn masks(word: &[u8; 64]) -> (u64, u64) {
    let mut lanes = [0u8; 64];
    for (lane, &b) in lanes.iter_mut().zip(word) {
        let quote = u8::from(b == b'"');
        let end = u8::from(b == b',') | u8::from(b == b'\n') | u8::from(b == b'\r');
        *lane = quote | (quote | end) << 4;
    }
    let (mut quotes, mut ends) = (0u64, 0u64);
    for (i, eight) in lanes.chunks_exact(8).enumerate() {
        let x = u64::from_le_bytes(eight.try_into().expect("8 bytes"));
        quotes |= pack8(x & 0x0101_0101_0101_0101) << (8 * i);
        ends |= pack8(x >> 4 & 0x0101_0101_0101_0101) << (8 * i);
    }
    (quotes, ends)
}

/// Bit `i` of the result is the parity of bits `0..=i` of `x`.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    for shift in [1, 2, 4, 8, 16, 32] {
        x ^= x << shift;
    }
    x
}

/// [`last_boundary`] by the parity of the quotes, for `buf` starting at a record boundary:
/// a line end is outside quotes when an even number of quotes precede it. That is csv-core's
/// grammar as long as every quote that the parity would have open a quoted field is at the
/// start of a field or right after another quote (the second of `""`). Returns the last
/// line end outside quotes (see [`last_outside`]); or, at the first quote that is not, one
/// inside an unquoted field (`Joe's "Best" Field`, `"ab"c"`), after which the parity no
/// longer tells, the start of the 64 bytes holding it and whether that start is inside
/// quotes.
///
/// The check runs 64 bytes at a time on bit masks, where the parity before every byte is a
/// prefix XOR.
fn by_parity(buf: &[u8]) -> Result<Option<usize>, (usize, bool)> {
    // All ones while inside quotes at the end of the previous word.
    let mut inside = 0u64;
    // Bit 0: the byte before this word is a quote or ends a field (true at the start).
    let mut after_end = 1u64;
    let mut irregular = |word: &[u8; 64]| {
        let (quotes, ends) = masks(word);
        // The parity of the quotes up to each byte, this one included; then before it.
        let parity = prefix_xor(quotes) ^ inside;
        let opening = quotes & !(parity ^ quotes);
        if opening & !(ends << 1 | after_end) != 0 {
            return Some(inside != 0);
        }
        inside = 0u64.wrapping_sub(parity >> 63);
        after_end = ends >> 63;
        None
    };
    let mut words = buf.chunks_exact(64);
    for (i, word) in words.by_ref().enumerate() {
        if let Some(inside) = irregular(word.try_into().expect("64 bytes")) {
            return Err((i * 64, inside));
        }
    }
    // The last bytes, padded with zeros (which are not quotes).
    let mut last = [0u8; 64];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    if let Some(inside) = irregular(&last) {
        return Err((buf.len() / 64 * 64, inside));
    }
    // `inside` is now the parity of all the quotes (the padding holds none).
    Ok(last_outside(buf, inside != 0))
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
            self.line += line_ends(&chunk.data);
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

/// A `csv` reader over `data` that keeps a BOM at its start as data. The `csv` reader skips
/// a BOM at the start of its input, which is right for a file but wrong for a chunk, whose
/// start is the middle of one: a row that starts with a BOM must parse as it would in the
/// whole file. csv-core only skips the BOM when its first read holds all three bytes, so the
/// first read here holds one.
fn chunk_reader(data: &[u8]) -> csv::Reader<std::io::Chain<&[u8], &[u8]>> {
    use std::io::Read;
    let (first, rest) = data.split_at(data.len().min(1));
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(first.chain(rest))
}

/// The lines records of a chunk start on, from their byte offsets: the `csv` reader's own
/// line numbers count only `\n`, so they are one short after a `\r\n` (it ends the record
/// at the `\r`) and stay at 1 in a file with `\r` line ends. Counts forward from the last
/// record asked about, so that a chunk full of bad rows is still read once.
#[derive(Debug)]
struct Lines<'a> {
    data: &'a [u8],
    first: u64,
    at: usize,
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(chunk: &'a Chunk) -> Self {
        Lines {
            data: &chunk.data,
            first: chunk.first_line,
            at: 0,
            line: chunk.first_line,
        }
    }

    /// The line of the record that the reader started reading at byte `offset`.
    fn of(&mut self, offset: u64) -> u64 {
        let len = self.data.len();
        let mut start = usize::try_from(offset).map_or(len, |o| o.min(len));
        // The reader's offset is where the previous record ended: the record itself starts
        // after the blank lines (and the `\n` of a `\r\n`) that it skips.
        while matches!(self.data.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        if start < self.at {
            (self.at, self.line) = (0, self.first);
        }
        self.line += line_ends(&self.data[self.at..start]);
        self.at = start;
        self.line
    }
}

/// Parses the records of one chunk: keeps `id`, `type`, `name` and `iso_country`, drops closed
/// airports. A row with the wrong number of fields, a non-numeric id, a name that is not UTF-8
/// or an invalid country is reported with its line and skipped.
pub fn parse_chunk(chunk: &Chunk, fields: usize) -> Parsed {
    let mut reader = chunk_reader(&chunk.data);
    let mut record = csv::ByteRecord::new();
    let mut parsed = Parsed::default();
    let mut lines = Lines::new(chunk);
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let offset = e.position().map_or(reader.position().byte(), |p| p.byte());
                parsed.malformed.push(Malformed {
                    line: lines.of(offset),
                    reason: e.to_string(),
                });
                continue;
            }
        }
        match check(&record, fields) {
            Ok(Row::Closed) => parsed.closed += 1,
            Ok(Row::Open(country)) => parsed.open.push(country),
            Err(reason) => {
                // The line is only worked out for the rare bad row.
                let offset = record.position().map_or(0, |p| p.byte());
                parsed.malformed.push(Malformed {
                    line: lines.of(offset),
                    reason,
                });
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

/// `reader.fill_buf()`, retried when interrupted.
fn fill(reader: &mut impl std::io::BufRead) -> std::io::Result<&[u8]> {
    loop {
        match reader.fill_buf() {
            Ok(_) => break,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    reader.fill_buf()
}

/// Reads the header record (consuming exactly its bytes, with the line end after it):
/// returns its field count and the line the records start on.
///
/// The header ends where the `csv` reader would end it: at a `\r`, `\n` or `\r\n` outside
/// quotes (a quoted field may span lines), after a UTF-8 BOM and blank lines, which are
/// skipped.
///
/// # Errors
///
/// When the input has no header record, it cannot be read, or the header lacks the columns
/// used.
pub fn header(reader: &mut impl std::io::BufRead) -> Result<(usize, u64), String> {
    let read_error = |e: std::io::Error| format!("cannot read the header: {e}");
    let mut head = Vec::new();
    // Like csv-core: a BOM is skipped when the first read holds all of it.
    let bom = fill(reader).map_err(read_error)?.starts_with(BOM);
    if bom {
        reader.consume(BOM.len());
        head.extend_from_slice(BOM);
    }
    let mut state = Scan::Record;
    loop {
        let buf = fill(reader).map_err(read_error)?;
        if buf.is_empty() {
            break;
        }
        let mut end = None;
        for (i, &b) in buf.iter().enumerate() {
            let next = state.step(b);
            // A line end in `Record` is a blank line; from any other state it ends the header.
            if next == Scan::Record && state != Scan::Record {
                end = Some(i + 1);
                break;
            }
            state = next;
        }
        let used = end.unwrap_or(buf.len());
        head.extend_from_slice(&buf[..used]);
        reader.consume(used);
        if end.is_some() {
            break;
        }
    }
    // The `\n` of a `\r\n` belongs to the header's line end, not to the first record.
    if head.last() == Some(&b'\r') && fill(reader).map_err(read_error)?.first() == Some(&b'\n') {
        reader.consume(1);
        head.push(b'\n');
    }
    let record = &head[if bom { BOM.len() } else { 0 }..];
    if record.iter().all(|&b| b == b'\r' || b == b'\n') {
        return Err("the input is empty".to_owned());
    }
    let record = chunk_reader(record)
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
    Ok((record.len(), 1 + line_ends(&head)))
}

/// Checks that `start`, the first bytes of a download, begin an `airports.csv`: a header
/// with the columns used (see [`header`]). For [`crate::download::Options::check_start`].
///
/// # Errors
///
/// What is wrong with the header.
pub fn check_start(start: &[u8]) -> Result<(), String> {
    header(&mut &start[..]).map(|_| ())
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

    /// What a single `csv` reader over the whole of `data` (header included) finds, with the
    /// same row check: the countries of the open airports in order, the closed count, and the
    /// reasons of the bad rows in order.
    fn whole_file(data: &[u8]) -> (Vec<Country>, u64, Vec<String>) {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(data);
        let fields = reader.byte_headers().unwrap().len();
        let (mut open, mut closed, mut bad) = (Vec::new(), 0, Vec::new());
        for record in reader.byte_records() {
            match check(&record.unwrap(), fields) {
                Ok(Row::Open(c)) => open.push(c),
                Ok(Row::Closed) => closed += 1,
                Err(reason) => bad.push(reason),
            }
        }
        (open, closed, bad)
    }

    /// What the chunker and `parse_chunk` find in `data` with blocks of `block` bytes.
    fn chunked(data: &[u8], block: usize) -> (Vec<Country>, u64, Vec<Malformed>) {
        let mut input = data;
        let (fields, line) = header(&mut input).unwrap();
        let (mut open, mut closed, mut bad) = (Vec::new(), 0, Vec::new());
        for chunk in Blocks::new(input, block, line) {
            let parsed = parse_chunk(&chunk, fields);
            open.extend(parsed.open);
            closed += parsed.closed;
            bad.extend(parsed.malformed);
        }
        (open, closed, bad)
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_is_data_whatever_the_block_size() {
        let body = "1,A,small_airport,Joe's \"Best\" Field,0,0,0,NA,US,US-1\n\
            2,B,heliport,\"Quoted, \"\"fine\"\"\",0,0,0,EU,FR,FR-1\n\
            3,C,small_airport,5\" runway,0,0,0,EU,DE,DE-1\n\
            4,D,heliport,\"Two\nlines\",0,0,0,SA,BR,BR-1\n\
            5,E,closed,\"Gone\"x\"y,0,0,0,EU,DE,DE-1\n";
        let data = format!("{HEADER}{body}");
        let (open, closed, bad) = whole_file(data.as_bytes());
        assert_eq!(
            (open.len(), closed, bad.len()),
            (4, 1, 0),
            "the csv reader's view"
        );
        for block in 1..=data.len() + 1 {
            let (o, c, b) = chunked(data.as_bytes(), block);
            assert_eq!((&o, c, &b), (&open, closed, &Vec::new()), "block {block}");
        }
    }

    #[test]
    fn a_quote_inside_an_unquoted_field_does_not_make_the_rest_one_chunk() {
        let mut data = String::from(HEADER);
        data.push_str("1,A,small_airport,Joe's \"Best Field,0,0,0,NA,US,US-1\n");
        for id in 2..2000 {
            data.push_str(&format!("{id},X,heliport,\"Pad {id}\",0,0,0,EU,FR,FR-1\n"));
        }
        let mut input = data.as_bytes();
        let (_, line) = header(&mut input).unwrap();
        let chunks: Vec<Chunk> = Blocks::new(input, 1024, line).collect();
        assert!(chunks.len() > 50, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.data.len() < 2048), "a chunk grew");
    }

    /// The malformed-rows input of `malformed_rows_are_reported_with_their_line`, with its line
    /// ends (also the one inside the quoted field) replaced by `end`.
    fn with_line_end(end: &str) -> String {
        let body = "1,A,small_airport,\"Two\nlines\",0,0,0,EU,FR,FR-1\nx,B,small_airport,Bad id,0,0,0,EU,DE,DE-1\n3,C,closed,Gone,0,0,0,EU,DE,DE-1\n4,D,heliport,Short\n5,E,heliport,Ok,0,0,0,EU,DE,DE-1\n";
        format!("{HEADER}{body}").replace('\n', end)
    }

    #[test]
    fn malformed_rows_have_their_line_with_lf_crlf_and_cr_line_ends() {
        for end in ["\n", "\r\n", "\r"] {
            let data = with_line_end(end);
            for block in [1, 2, 3, 5, 8, 13, 64, 1 << 20] {
                let (open, closed, bad) = chunked(data.as_bytes(), block);
                let lines: Vec<u64> = bad.iter().map(|m| m.line).collect();
                assert_eq!(lines, [4, 6], "{end:?}, block {block}: {bad:?}");
                assert_eq!((open.len(), closed), (2, 1), "{end:?}, block {block}");
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_with_cr_line_ends_is_counted() {
        let sample = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../data/airports-sample.csv"
        ))
        .unwrap();
        for end in ["\r\n", "\r"] {
            let data = sample.replace('\n', end).into_bytes();
            for block in [1, 100, 1 << 20] {
                let report = tokio::time::timeout(
                    std::time::Duration::from_secs(30),
                    count(std::io::Cursor::new(data.clone()), block, 3, 2),
                )
                .await
                .expect("no hang")
                .unwrap();
                assert_eq!(
                    (report.open, report.closed, report.countries),
                    (11, 3, 6),
                    "{end:?}, block {block}"
                );
            }
        }
    }

    #[test]
    fn a_bom_is_skipped_only_at_the_start_of_the_file() {
        let quoted =
            "\"id\",\"ident\",\"type\",\"name\",\"a\",\"b\",\"c\",\"d\",\"iso_country\",\"e\"\n";
        // A BOM in front of a row is data there (the csv reader strips one only at the very
        // start), so the id is not a number, wherever the row falls in the chunks.
        let data = format!(
            "\u{feff}{quoted}1,A,heliport,Ok,0,0,0,EU,DE,DE-1\n\u{feff}2,B,heliport,Bom,0,0,0,EU,DE,DE-1\n"
        );
        let (open, closed, bad) = whole_file(data.as_bytes());
        assert_eq!((open.len(), closed, bad.len()), (1, 0, 1));
        for block in 1..=data.len() + 1 {
            let (o, _, b) = chunked(data.as_bytes(), block);
            assert_eq!(o, open, "block {block}");
            let lines: Vec<u64> = b.iter().map(|m| m.line).collect();
            assert_eq!(lines, [3], "block {block}: {b:?}");
        }
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
    fn a_download_must_start_with_ourairports_header() {
        let real = "\"id\",\"ident\",\"type\",\"name\",\"latitude_deg\",\"longitude_deg\",\"elevation_ft\",\"continent\",\"iso_country\",\"iso_region\",\"municipality\",\"scheduled_service\",\"icao_code\",\"iata_code\",\"gps_code\",\"local_code\",\"home_link\",\"wikipedia_link\",\"keywords\"\n6523,\"00A\",\"heliport\"";
        assert_eq!(check_start(real.as_bytes()), Ok(()));
        let page = check_start(b"<!DOCTYPE html>\n<html>").unwrap_err();
        assert!(page.contains("`id`"), "{page}");
        assert!(check_start(b"").is_err());
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
    /// Random `airports.csv`-like files against one `csv` reader over the whole file.
    mod fuzz {
        use super::super::*;
        use proptest::prelude::*;

        /// One field, as written in the file.
        #[derive(Clone, Debug)]
        enum Field {
            /// Unquoted, no quotes.
            Plain(String),
            /// Quoted, with its quotes doubled; may hold `,`, `"`, `\r` and `\n`.
            Quoted(String),
            /// Unquoted, with quotes inside (not first): `Joe's "Best" Field`.
            Literal(String),
            /// A quoted part then more bytes: `"ab"c"d` (the reader keeps `abc"d`).
            QuotedThen(String, String),
            /// Bytes that are not UTF-8.
            Raw(Vec<u8>),
        }

        impl Field {
            fn write(&self, out: &mut Vec<u8>) {
                let quoted = |out: &mut Vec<u8>, text: &str| {
                    out.push(b'"');
                    out.extend_from_slice(text.replace('"', "\"\"").as_bytes());
                    out.push(b'"');
                };
                match self {
                    Field::Plain(t) | Field::Literal(t) => out.extend_from_slice(t.as_bytes()),
                    Field::Quoted(t) => quoted(out, t),
                    Field::QuotedThen(t, rest) => {
                        quoted(out, t);
                        out.extend_from_slice(rest.as_bytes());
                    }
                    Field::Raw(bytes) => out.extend_from_slice(bytes),
                }
            }
        }

        fn plain(re: &'static str) -> impl Strategy<Value = Field> {
            re.prop_map(Field::Plain)
        }

        fn quoted(re: &'static str) -> impl Strategy<Value = Field> {
            re.prop_map(Field::Quoted)
        }

        /// Any kind of field, for the columns that are not checked.
        fn any_field() -> impl Strategy<Value = Field> {
            prop_oneof![
                3 => plain("[a-z0-9 .-]{0,6}"),
                3 => quoted("[a-z ,\"\r\n]{0,8}"),
                2 => "[a-z0-9 ][a-z '\"]{0,6}".prop_map(Field::Literal),
                1 => ("[a-z ,\"\n]{0,4}", "[a-z][a-z\"]{0,3}")
                    .prop_map(|(t, rest)| Field::QuotedThen(t, rest)),
            ]
        }

        /// One row: 10 fields, sometimes another number, sometimes with a BOM in front.
        fn row() -> impl Strategy<Value = Vec<u8>> {
            let id = prop_oneof![
                6 => plain("[1-9][0-9]{0,4}"),
                2 => quoted("[1-9][0-9]{0,3}"),
                1 => plain("x[0-9]"),
                1 => plain(""),
                1 => "[1-9]\"[0-9]".prop_map(Field::Literal),
            ];
            let kind = prop_oneof![
                3 => plain("small_airport"),
                2 => quoted("heliport"),
                2 => plain("closed"),
                1 => quoted("closed"),
                1 => Just(Field::QuotedThen("clo".into(), "sed".into())),
            ];
            let name = prop_oneof![
                8 => any_field(),
                1 => Just(Field::Raw(b"N\xFF\xFEme".to_vec())),
            ];
            let country = prop_oneof![
                3 => plain("US"),
                2 => quoted("DE"),
                2 => plain("FR"),
                1 => quoted("JP"),
                1 => plain(""),
                1 => plain("USA1"),
                1 => quoted("U S"),
                1 => Just(Field::Literal("U\"S".into())),
            ];
            let shape = prop_oneof![
                10 => Just(None),
                1 => (1usize..10).prop_map(Some),
                1 => Just(Some(11)),
            ];
            (
                id,
                any_field(),
                kind,
                name,
                proptest::collection::vec(any_field(), 4),
                country,
                any_field(),
                shape,
                proptest::bool::weighted(0.03),
            )
                .prop_map(
                    |(id, ident, kind, name, middle, country, region, shape, bom)| {
                        let mut fields = vec![id, ident, kind, name];
                        fields.extend(middle);
                        fields.extend([country, region]);
                        match shape {
                            Some(n) if n < fields.len() => fields.truncate(n),
                            Some(n) => fields.resize(n, Field::Plain("extra".into())),
                            None => {}
                        }
                        let mut out = Vec::new();
                        if bom {
                            out.extend_from_slice(BOM);
                        }
                        for (i, field) in fields.iter().enumerate() {
                            if i > 0 {
                                out.push(b',');
                            }
                            field.write(&mut out);
                        }
                        if out.is_empty() {
                            // An empty line is no record at all: keep one record per row.
                            out.push(b'0');
                        }
                        out
                    },
                )
        }

        /// A whole file, and the line each row starts on.
        #[derive(Clone, Debug)]
        struct File {
            data: Vec<u8>,
            lines: Vec<u64>,
        }

        fn file() -> impl Strategy<Value = File> {
            let ends = prop_oneof![
                Just(vec!["\n"]),
                Just(vec!["\r\n"]),
                Just(vec!["\r"]),
                Just(vec!["\n", "\r\n", "\r"]),
            ];
            let blank = prop_oneof![8 => Just(0usize), 1 => 1usize..3];
            (
                ends,
                proptest::collection::vec((row(), 0usize..3, blank), 0..40),
                any::<bool>(),
                any::<bool>(),
                any::<bool>(),
            )
                .prop_map(|(ends, rows, bom, quoted_header, last_end)| {
                    let names = [
                        "id",
                        "ident",
                        "type",
                        "name",
                        "lat",
                        "lon",
                        "elev",
                        "cont",
                        "iso_country",
                        "region",
                    ];
                    let mut data = Vec::new();
                    if bom {
                        data.extend_from_slice(BOM);
                    }
                    let header: Vec<String> = names
                        .iter()
                        .map(|n| {
                            if quoted_header {
                                format!("\"{n}\"")
                            } else {
                                (*n).to_owned()
                            }
                        })
                        .collect();
                    data.extend_from_slice(header.join(",").as_bytes());
                    data.extend_from_slice(ends[0].as_bytes());
                    let mut starts = Vec::new();
                    let count = rows.len();
                    for (i, (row, end, blank)) in rows.into_iter().enumerate() {
                        let end = ends[end % ends.len()].as_bytes();
                        for _ in 0..blank {
                            data.extend_from_slice(end);
                        }
                        starts.push(data.len());
                        data.extend_from_slice(&row);
                        if i + 1 < count || last_end {
                            data.extend_from_slice(end);
                        }
                    }
                    // The line of a byte: one more than the line ends before it, where
                    // `\r\n` is one (written out here apart from `line_ends`).
                    let line = |at: usize| {
                        let before = &data[..at];
                        let mut n = 1;
                        for (i, &b) in before.iter().enumerate() {
                            if b == b'\n' || (b == b'\r' && before.get(i + 1) != Some(&b'\n')) {
                                n += 1;
                            }
                        }
                        n
                    };
                    let lines = starts.iter().map(|&s| line(s)).collect();
                    File { data, lines }
                })
        }

        /// What one `csv` reader over the whole file finds, with the rows' lines from the
        /// generator: the open airports' countries in order, the closed count, the bad rows.
        fn expected(file: &File) -> Result<(Vec<Country>, u64, Vec<Malformed>), TestCaseError> {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(&file.data[..]);
            let fields = reader.byte_headers().expect("a header").len();
            prop_assert_eq!(fields, 10);
            let (mut open, mut closed, mut bad) = (Vec::new(), 0, Vec::new());
            let mut records = 0;
            for (record, &line) in reader.byte_records().zip(&file.lines) {
                records += 1;
                match check(&record.expect("no I/O error"), fields) {
                    Ok(Row::Open(c)) => open.push(c),
                    Ok(Row::Closed) => closed += 1,
                    Err(reason) => bad.push(Malformed { line, reason }),
                }
            }
            // Every generated row is one record (so the lines line up).
            prop_assert_eq!(records, file.lines.len());
            Ok((open, closed, bad))
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn chunks_parse_like_one_reader_whatever_the_block_size(
                file in file(),
                small in 9usize..=64,
            ) {
                let want = expected(&file)?;
                // The smallest blocks cut at nearly every record (and grow); `small` is
                // another; the largest takes the file in one chunk.
                for block in (1..=8).chain([small, 1000, 1 << 20]) {
                    let got = super::chunked(&file.data, block);
                    prop_assert_eq!(&got, &want, "block {}", block);
                }
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn the_parity_shortcut_agrees_with_the_state_machine(
                bytes in prop_oneof![
                    // Anything: quotes mostly in the wrong places.
                    proptest::collection::vec(
                        prop_oneof![
                            Just(b'"'), Just(b','), Just(b'\n'), Just(b'\r'), Just(b'a'),
                        ],
                        0..300,
                    ),
                    // Mostly well-formed fields, some with line ends inside, and now and
                    // then a stray quote.
                    proptest::collection::vec(
                        prop_oneof![
                            8 => proptest::sample::select(vec![
                                &b","[..], b"\n", b"\r\n", b"\r", b"ab", b"\"x\"",
                                b"\"a\"\"b\"", b"\"\n,\r\"", b"\"\"",
                            ]),
                            1 => Just(&b"\""[..]),
                        ],
                        0..200,
                    )
                    .prop_map(|tokens| tokens.concat()),
                ],
            ) {
                let stripped = bytes.strip_suffix(b"\r").unwrap_or(&bytes);
                if let Ok(cut) = by_parity(stripped) {
                    prop_assert_eq!(cut.unwrap_or(0), last_boundary_by_state(stripped));
                }
                prop_assert_eq!(last_boundary(&bytes), last_boundary_by_state(stripped));
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(24))]

            #[test]
            fn the_flow_counts_like_one_reader(
                file in file(),
                block in prop_oneof![1usize..=64, Just(1 << 20)],
                workers in 1usize..=3,
            ) {
                let (open, closed, malformed) = expected(&file)?;
                let mut by_country = Counts::default();
                for &c in &open {
                    *by_country.entry(c).or_insert(0) += 1;
                }
                let mut top: Vec<(Country, u64)> = by_country.into_iter().collect();
                top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_time()
                    .build()
                    .expect("a runtime");
                let report = runtime
                    .block_on(async {
                        tokio::time::timeout(
                            std::time::Duration::from_secs(30),
                            count(std::io::Cursor::new(file.data.clone()), block, 1000, workers),
                        )
                        .await
                    })
                    .expect("the count ends");
                let report = report.map_err(TestCaseError::fail)?;
                prop_assert_eq!(report.open, open.len() as u64);
                prop_assert_eq!(report.closed, closed);
                prop_assert_eq!(report.countries, top.len() as u64);
                prop_assert_eq!(&report.top, &top);
                prop_assert_eq!(&report.malformed, &malformed);
            }
        }
    }
}
