//! A small streaming CSV reader and writer with line numbers, for the Sudoku and Maze CSVs.
//!
//! Both use the Sudoku-Extreme / Maze-Hard layout `source,question,answer,rating`.
//!
//! Mirrors what sapientinc/HRM:dataset/build_{sudoku,maze}_dataset.py do with Python's
//! `csv.reader` (skip the header, unpack four fields per row) and what Python's `csv.writer`
//! (QUOTE_MINIMAL, `\r\n` line ends by default; we write `\n`) produces. Dialect handled:
//!
//! * comma separator; a UTF-8 byte-order mark before the header is ignored; `\n` or `\r\n`
//!   line ends; completely empty lines are skipped;
//! * fields may be quoted with `"` (a doubled `""` inside is a literal quote), so a maze row
//!   that a tool chose to quote still parses; a quoted field that spans several lines is
//!   rejected with the line number (none of these formats needs one);
//! * every error names the file and the 1-based line.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{open_file, DataError, Result};

/// One parsed row and the 1-based line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvRecord {
    /// 1-based line number in the file.
    pub line: usize,
    /// The unquoted fields.
    pub fields: Vec<String>,
}

/// Splits one CSV line into fields (see the module docs for the dialect).
pub fn parse_line(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut at_field_start = true;
    loop {
        if at_field_start && chars.peek() == Some(&'"') {
            // Quoted field: read up to the closing quote; "" is an escaped quote.
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        cur.push('"');
                    }
                    Some('"') => break,
                    Some(c) => cur.push(c),
                    None => {
                        return Err("unterminated quoted field (quoted fields may not span \
                                    lines)"
                            .to_string())
                    }
                }
            }
            match chars.next() {
                None => {
                    fields.push(std::mem::take(&mut cur));
                    return Ok(fields);
                }
                Some(',') => {
                    fields.push(std::mem::take(&mut cur));
                    at_field_start = true;
                    continue;
                }
                Some(c) => {
                    return Err(format!(
                        "unexpected character {c:?} after the closing quote of field {}",
                        fields.len() + 1
                    ))
                }
            }
        }
        at_field_start = false;
        match chars.next() {
            None => {
                fields.push(cur);
                return Ok(fields);
            }
            Some(',') => {
                fields.push(std::mem::take(&mut cur));
                at_field_start = true;
            }
            Some('"') => {
                return Err(format!(
                    "stray quote inside unquoted field {} (quote the whole field)",
                    fields.len() + 1
                ))
            }
            Some(c) => cur.push(c),
        }
    }
}

/// Streaming CSV reader over a file.
#[derive(Debug)]
pub struct CsvReader {
    path: PathBuf,
    reader: BufReader<File>,
    line: usize,
    bytes: u64,
    buf: Vec<u8>,
}

impl CsvReader {
    /// Opens `path`; a missing file gives [`DataError::NotFound`] with `hint`.
    pub fn open(path: &Path, hint: &str) -> Result<CsvReader> {
        let file = open_file(path, hint)?;
        Ok(CsvReader {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            bytes: 0,
            buf: Vec::new(),
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes consumed so far (for progress reporting).
    pub fn bytes_read(&self) -> u64 {
        self.bytes
    }

    /// Reads the next non-empty row, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<CsvRecord>> {
        loop {
            self.buf.clear();
            let n = self
                .reader
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| DataError::io(&self.path, e))?;
            if n == 0 {
                return Ok(None);
            }
            self.bytes += n as u64;
            self.line += 1;
            let mut bytes: &[u8] = &self.buf;
            if self.line == 1 && bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes = &bytes[3..];
            }
            while let Some((&last, rest)) = bytes.split_last() {
                if last == b'\n' || last == b'\r' {
                    bytes = rest;
                } else {
                    break;
                }
            }
            if bytes.is_empty() {
                continue;
            }
            let text = std::str::from_utf8(bytes)
                .map_err(|_| DataError::line(&self.path, self.line, "not valid UTF-8"))?;
            let fields = parse_line(text).map_err(|m| DataError::line(&self.path, self.line, m))?;
            return Ok(Some(CsvRecord {
                line: self.line,
                fields,
            }));
        }
    }

    /// Reads the header row and checks it is exactly `expected`.
    pub fn expect_header(&mut self, expected: &[&str]) -> Result<()> {
        match self.next_record()? {
            None => Err(DataError::line(
                &self.path,
                1,
                format!(
                    "file is empty; expected the header `{}`",
                    expected.join(",")
                ),
            )),
            Some(r)
                if r.fields
                    .iter()
                    .map(|s| s.trim())
                    .eq(expected.iter().copied()) =>
            {
                Ok(())
            }
            Some(r) => Err(DataError::line(
                &self.path,
                r.line,
                format!(
                    "expected the header `{}`, found `{}`",
                    expected.join(","),
                    r.fields.join(",")
                ),
            )),
        }
    }

    /// Checks that `record` has exactly `n` fields (error names the file and line).
    pub fn expect_fields(&self, record: &CsvRecord, n: usize) -> Result<()> {
        if record.fields.len() == n {
            Ok(())
        } else {
            Err(DataError::line(
                &self.path,
                record.line,
                format!(
                    "expected {n} comma-separated fields, found {}",
                    record.fields.len()
                ),
            ))
        }
    }
}

impl Iterator for CsvReader {
    type Item = Result<CsvRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Quotes a field only when needed (Python's QUOTE_MINIMAL).
pub fn quote_field(s: &str) -> Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        Cow::Owned(format!("\"{}\"", s.replace('"', "\"\"")))
    } else {
        Cow::Borrowed(s)
    }
}

/// Buffered CSV writer (`\n` line ends, minimal quoting).
#[derive(Debug)]
pub struct CsvWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl CsvWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path) -> Result<CsvWriter> {
        let file = File::create(path).map_err(|e| DataError::io(path, e))?;
        Ok(CsvWriter {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(1 << 20, file),
        })
    }

    /// Writes one row.
    pub fn write_record<S: AsRef<str>>(&mut self, fields: &[S]) -> Result<()> {
        for (i, f) in fields.iter().enumerate() {
            if i > 0 {
                self.out
                    .write_all(b",")
                    .map_err(|e| DataError::io(&self.path, e))?;
            }
            self.out
                .write_all(quote_field(f.as_ref()).as_bytes())
                .map_err(|e| DataError::io(&self.path, e))?;
        }
        self.out
            .write_all(b"\n")
            .map_err(|e| DataError::io(&self.path, e))
    }

    /// Flushes and closes the file.
    pub fn finish(mut self) -> Result<()> {
        self.out.flush().map_err(|e| DataError::io(&self.path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_quoted_fields() {
        assert_eq!(parse_line("a,b,,d").unwrap(), vec!["a", "b", "", "d"]);
        assert_eq!(
            parse_line("\"# S\",\"x,y\",\"say \"\"hi\"\"\",7").unwrap(),
            vec!["# S", "x,y", "say \"hi\"", "7"]
        );
        assert_eq!(parse_line("\"\"").unwrap(), vec![""]);
        assert_eq!(parse_line("a,").unwrap(), vec!["a", ""]);
        assert!(parse_line("a\"b,c").unwrap_err().contains("stray quote"));
        assert!(parse_line("\"abc").unwrap_err().contains("unterminated"));
        assert!(parse_line("\"ab\"c,d")
            .unwrap_err()
            .contains("after the closing quote"));
    }

    #[test]
    fn reader_tracks_lines_bom_crlf_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(
            &p,
            "\u{feff}source,question,answer,rating\r\nx,1,2,3\r\n\r\ny,\"4\",5,6\n",
        )
        .unwrap();
        let mut r = CsvReader::open(&p, "").unwrap();
        r.expect_header(&["source", "question", "answer", "rating"])
            .unwrap();
        let recs: Vec<CsvRecord> = r.by_ref().collect::<Result<_>>().unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].line, 2);
        assert_eq!(recs[1].line, 4);
        assert_eq!(recs[1].fields, vec!["y", "4", "5", "6"]);

        std::fs::write(&p, "source,question\nbad\"row,1\n").unwrap();
        let mut r = CsvReader::open(&p, "").unwrap();
        let e = r
            .expect_header(&["source", "question", "answer", "rating"])
            .unwrap_err();
        assert!(e.to_string().contains("line 1: expected the header"), "{e}");
        let e = r.next_record().unwrap_err().to_string();
        assert!(e.contains("t.csv: line 2: stray quote"), "{e}");
    }

    #[test]
    fn writer_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.csv");
        let mut w = CsvWriter::create(&p).unwrap();
        w.write_record(&["source", "question"]).unwrap();
        w.write_record(&["a,b", "# S\"G"]).unwrap();
        w.finish().unwrap();
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "source,question\n\"a,b\",\"# S\"\"G\"\n"
        );
        let mut r = CsvReader::open(&p, "").unwrap();
        r.next_record().unwrap();
        assert_eq!(
            r.next_record().unwrap().unwrap().fields,
            vec!["a,b", "# S\"G"]
        );
    }
}
