//! A small TensorBoard event-file writer and reader (scalars only), with no protobuf crate.
//!
//! Replaces the reference's Weights & Biases logging (sapientinc/HRM:pretrain.py `wandb.log`)
//! with files TensorBoard reads directly (and W&B can ingest with `sync_tensorboard`).
//!
//! Format, from TensorFlow's `event.proto`/`summary.proto` and its TFRecord framing:
//! - a file is a sequence of records; each record is
//!   `u64 LE length | u32 LE masked_crc32c(length bytes) | payload | u32 LE masked_crc32c(payload)`,
//!   with `mask(c) = ((c >> 15) | (c << 17)) + 0xa282ead8` (wrapping);
//! - each payload is a protobuf `Event`: `wall_time = 1` (double), `step = 2` (int64 varint),
//!   `file_version = 3` (string), `summary = 5` (message), `session_log = 7` (message), one of
//!   the last three per event (a protobuf `oneof`);
//! - `Summary { repeated Value value = 1 }`, `Value { string tag = 1; float simple_value = 2 }`;
//! - `SessionLog { status = 1 }` (enum, `START = 1`): TensorBoard discards earlier events with
//!   `step >=` the step of a START, which is how a resumed run hides the orphaned tail.
//!
//! The first record of every file is `file_version = "brain.Event:2"`. The file name is
//! `events.out.tfevents.<unix secs>.<hostname>.<pid>`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the event writer and reader; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum TfEventsError {
    /// The file could not be created, written or read.
    #[error("{path}: {source}")]
    Io {
        /// The event file (or the folder it was to be created in).
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record's framing or CRC is wrong, or its payload is not a valid `Event`.
    #[error("{path}: corrupt record at byte {offset}: {problem}")]
    Corrupt {
        /// The event file.
        path: PathBuf,
        /// Byte offset of the start of the bad record.
        offset: u64,
        /// What is wrong.
        problem: String,
    },
}

/// Result type of this module.
pub type Result<T> = std::result::Result<T, TfEventsError>;

// ---------------------------------------------------------------------------------------------
// CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table-driven (one byte per step).

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            // Reflected (LSB-first) CRC: shift right, xor the reversed polynomial on a set bit.
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// CRC-32C of `data` (initial value and final xor `0xFFFFFFFF`, as in iSCSI / TFRecord).
pub fn crc32c(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC32C_TABLE[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

/// TFRecord's masked CRC: rotate right by 15 and add a constant, so that a CRC of data that
/// itself contains CRCs does not degenerate.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let c = crc32c(data);
    // ((c >> 15) | (c << 17)) is a right rotation by 15.
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

// ---------------------------------------------------------------------------------------------
// Protobuf encoding of the few messages we need.

/// Wire types used below.
const WIRE_VARINT: u8 = 0;
const WIRE_I64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_I32: u8 = 5;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7F) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, ((field as u64) << 3) | wire as u64);
}

fn put_len_delimited(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, WIRE_LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// One scalar of a summary: TensorBoard's `Summary.Value { tag, simple_value }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    /// The series name, e.g. `train/lm_loss`.
    pub tag: String,
    /// The value (TensorBoard stores scalars as f32).
    pub value: f32,
}

/// A decoded `Event` (the subset this module writes).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Seconds since the Unix epoch when the event was written.
    pub wall_time: f64,
    /// Training step.
    pub step: i64,
    /// Set on the first record of a file: `brain.Event:2`.
    pub file_version: Option<String>,
    /// Scalars of a summary event (empty for other events).
    pub scalars: Vec<Scalar>,
    /// `Some(status)` for a `SessionLog` event (1 = START).
    pub session_status: Option<i32>,
}

impl Event {
    /// Protobuf encoding of this event.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 16 * self.scalars.len());
        put_key(&mut out, 1, WIRE_I64);
        out.extend_from_slice(&self.wall_time.to_le_bytes());
        if self.step != 0 {
            put_key(&mut out, 2, WIRE_VARINT);
            // int64 is encoded as its two's-complement u64 (10 bytes when negative).
            put_varint(&mut out, self.step as u64);
        }
        if let Some(v) = &self.file_version {
            put_len_delimited(&mut out, 3, v.as_bytes());
        }
        if !self.scalars.is_empty() {
            let mut summary = Vec::new();
            for s in &self.scalars {
                let mut value = Vec::with_capacity(s.tag.len() + 8);
                put_len_delimited(&mut value, 1, s.tag.as_bytes());
                put_key(&mut value, 2, WIRE_I32);
                value.extend_from_slice(&s.value.to_le_bytes());
                put_len_delimited(&mut summary, 1, &value);
            }
            put_len_delimited(&mut out, 5, &summary);
        }
        if let Some(status) = self.session_status {
            let mut log = Vec::new();
            put_key(&mut log, 1, WIRE_VARINT);
            put_varint(&mut log, status as i64 as u64);
            put_len_delimited(&mut out, 7, &log);
        }
        out
    }

    /// Decode a protobuf `Event`; unknown fields are skipped, as protobuf requires.
    pub fn decode(bytes: &[u8]) -> std::result::Result<Event, String> {
        let mut ev = Event::default();
        let mut r = ProtoReader { buf: bytes, pos: 0 };
        while let Some((field, wire)) = r.key()? {
            match (field, wire) {
                (1, WIRE_I64) => ev.wall_time = f64::from_le_bytes(r.fixed::<8>()?),
                (2, WIRE_VARINT) => ev.step = r.varint()? as i64,
                (3, WIRE_LEN) => {
                    let s = r.bytes()?;
                    let s = String::from_utf8(s.to_vec())
                        .map_err(|_| "file_version is not UTF-8".to_string())?;
                    ev.file_version = Some(s);
                }
                (5, WIRE_LEN) => ev.scalars.extend(decode_summary(r.bytes()?)?),
                (7, WIRE_LEN) => {
                    let mut log = ProtoReader {
                        buf: r.bytes()?,
                        pos: 0,
                    };
                    let mut status = 0;
                    while let Some((f, w)) = log.key()? {
                        match (f, w) {
                            (1, WIRE_VARINT) => status = log.varint()? as i32,
                            _ => log.skip(w)?,
                        }
                    }
                    ev.session_status = Some(status);
                }
                (_, w) => r.skip(w)?,
            }
        }
        Ok(ev)
    }
}

fn decode_summary(bytes: &[u8]) -> std::result::Result<Vec<Scalar>, String> {
    let mut out = Vec::new();
    let mut r = ProtoReader { buf: bytes, pos: 0 };
    while let Some((field, wire)) = r.key()? {
        if (field, wire) != (1, WIRE_LEN) {
            r.skip(wire)?;
            continue;
        }
        let mut v = ProtoReader {
            buf: r.bytes()?,
            pos: 0,
        };
        let mut scalar = Scalar {
            tag: String::new(),
            value: 0.0,
        };
        let mut has_value = false;
        while let Some((f, w)) = v.key()? {
            match (f, w) {
                (1, WIRE_LEN) => {
                    scalar.tag = String::from_utf8(v.bytes()?.to_vec())
                        .map_err(|_| "summary tag is not UTF-8".to_string())?;
                }
                (2, WIRE_I32) => {
                    scalar.value = f32::from_le_bytes(v.fixed::<4>()?);
                    has_value = true;
                }
                _ => v.skip(w)?,
            }
        }
        // Values without simple_value (images, histograms, tensors) are not scalars: skip them.
        if has_value {
            out.push(scalar);
        }
    }
    Ok(out)
}

/// Cursor over a protobuf message.
struct ProtoReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ProtoReader<'a> {
    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            v |= ((b & 0x7F) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    /// Next field key, or None at the end of the message.
    fn key(&mut self) -> std::result::Result<Option<(u32, u8)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let k = self.varint()?;
        Ok(Some(((k >> 3) as u32, (k & 7) as u8)))
    }

    fn fixed<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let end = self.pos + N;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or("truncated fixed-width field")?;
        self.pos = end;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.varint()? as usize;
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or("truncated length-delimited field")?;
        self.pos = end;
        Ok(s)
    }

    fn skip(&mut self, wire: u8) -> std::result::Result<(), String> {
        match wire {
            WIRE_VARINT => self.varint().map(|_| ()),
            WIRE_I64 => self.fixed::<8>().map(|_| ()),
            WIRE_LEN => self.bytes().map(|_| ()),
            WIRE_I32 => self.fixed::<4>().map(|_| ()),
            w => Err(format!("unsupported wire type {w}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TFRecord framing, writer and reader.

/// Frame one payload as a TFRecord.
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(payload.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&masked_crc32c(payload).to_le_bytes());
    out
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// This machine's host name for the event-file name (TensorFlow uses `socket.gethostname()`).
fn hostname() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_default();
    // Keep the name a single safe path component.
    let name: String = raw
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "localhost".into()
    } else {
        name
    }
}

/// Appends scalar summaries to a new `events.out.tfevents.*` file in a folder.
///
/// Records are buffered; call [`EventWriter::flush`] after each logging step so TensorBoard sees
/// them (the buffer is also flushed on drop).
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Create `dir/events.out.tfevents.<secs>.<host>.<pid>` (creating `dir` if needed) and write
    /// the `brain.Event:2` version record. If a file of that name already exists (two writers in
    /// the same second), a `.N` suffix is added instead of overwriting it.
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).map_err(|source| TfEventsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let wall_time = now_secs();
        let base = format!(
            "events.out.tfevents.{}.{}.{}",
            wall_time as u64,
            hostname(),
            std::process::id()
        );
        let mut path = dir.join(&base);
        let mut n = 1;
        let file = loop {
            match File::options().write(true).create_new(true).open(&path) {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    path = dir.join(format!("{base}.{n}"));
                    n += 1;
                }
                Err(source) => return Err(TfEventsError::Io { path, source }),
            }
        };
        let mut w = EventWriter {
            path,
            out: BufWriter::new(file),
        };
        w.write_event(&Event {
            wall_time,
            file_version: Some("brain.Event:2".into()),
            ..Event::default()
        })?;
        w.flush()?;
        Ok(w)
    }

    /// Path of the event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write one framed event.
    pub fn write_event(&mut self, event: &Event) -> Result<()> {
        let rec = frame(&event.encode());
        self.out
            .write_all(&rec)
            .map_err(|source| TfEventsError::Io {
                path: self.path.clone(),
                source,
            })
    }

    /// Log one scalar `value` of series `tag` at `step`.
    pub fn add_scalar(&mut self, tag: &str, step: u64, value: f64) -> Result<()> {
        self.add_scalars(step, [(tag, value)])
    }

    /// Log several scalars of the same step as one event (one record per logging step).
    pub fn add_scalars<'a, I>(&mut self, step: u64, scalars: I) -> Result<()>
    where
        I: IntoIterator<Item = (&'a str, f64)>,
    {
        let scalars: Vec<Scalar> = scalars
            .into_iter()
            .map(|(tag, v)| Scalar {
                tag: tag.to_string(),
                value: v as f32,
            })
            .collect();
        if scalars.is_empty() {
            return Ok(());
        }
        self.write_event(&Event {
            wall_time: now_secs(),
            step: step as i64,
            scalars,
            ..Event::default()
        })
    }

    /// Write a `SessionLog START` at `step`: TensorBoard then drops events of earlier files with
    /// a step `>= step` (its "purge orphaned data"), so a resumed run's curves have no overlap.
    pub fn add_session_start(&mut self, step: u64) -> Result<()> {
        self.write_event(&Event {
            wall_time: now_secs(),
            step: step as i64,
            session_status: Some(1),
            ..Event::default()
        })
    }

    /// Flush buffered records to the file.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|source| TfEventsError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        // Best effort: errors on drop cannot be reported; callers that care call flush().
        let _ = self.out.flush();
    }
}

/// Read every record of an event file, verifying both CRCs of each record, and decode it.
pub fn read_events(path: &Path) -> Result<Vec<Event>> {
    let data = std::fs::read(path).map_err(|source| TfEventsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let corrupt = |offset: usize, problem: String| TfEventsError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        problem,
    };
    let mut events = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let start = pos;
        let header = data
            .get(pos..pos + 12)
            .ok_or_else(|| corrupt(start, "truncated record header".into()))?;
        let len_bytes = &header[..8];
        let len_crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if masked_crc32c(len_bytes) != len_crc {
            return Err(corrupt(start, "length CRC mismatch".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("slice of 8 bytes")) as usize;
        pos += 12;
        let end = pos
            .checked_add(len)
            .and_then(|e| e.checked_add(4))
            .filter(|&e| e <= data.len())
            .ok_or_else(|| corrupt(start, format!("record of {len} bytes runs past the end")))?;
        let payload = &data[pos..pos + len];
        let crc = u32::from_le_bytes(data[pos + len..end].try_into().expect("slice of 4 bytes"));
        if masked_crc32c(payload) != crc {
            return Err(corrupt(start, "payload CRC mismatch".into()));
        }
        events.push(Event::decode(payload).map_err(|p| corrupt(start, p))?);
        pos = end;
    }
    Ok(events)
}

/// The event files (`events.out.tfevents.*`) in `dir`, sorted by name (= by creation time).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|source| TfEventsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|source| TfEventsError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents.")
        {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(&[0xFFu8; 32]), 0x62A8_AB43);
    }

    #[test]
    fn varint_encoding() {
        let mut v = Vec::new();
        put_varint(&mut v, 300);
        assert_eq!(v, [0xAC, 0x02]);
        let mut neg = Vec::new();
        put_varint(&mut neg, -1i64 as u64);
        assert_eq!(neg.len(), 10);
        let mut r = ProtoReader { buf: &neg, pos: 0 };
        assert_eq!(r.varint().unwrap() as i64, -1);
    }

    #[test]
    fn event_encoding_is_the_protobuf_layout() {
        // Hand-assembled: wall_time 1.5, step 3, one value {tag "a", simple_value 2.0}.
        let ev = Event {
            wall_time: 1.5,
            step: 3,
            scalars: vec![Scalar {
                tag: "a".into(),
                value: 2.0,
            }],
            ..Event::default()
        };
        let mut want = vec![0x09];
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 0x03]);
        // summary (field 5, len) { value (field 1, len) { tag (1) "a", simple_value (2, fixed32) } }
        want.extend_from_slice(&[0x2A, 10, 0x0A, 8, 0x0A, 1, b'a', 0x15]);
        want.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(ev.encode(), want);
        assert_eq!(Event::decode(&want).unwrap(), ev);

        // SessionLog START at step 5: field 7 (session_log) { field 1 (status) = 1 }.
        let start = Event {
            step: 5,
            session_status: Some(1),
            ..Event::default()
        };
        let mut want = vec![0x09];
        want.extend_from_slice(&0f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 5, 0x3A, 2, 0x08, 1]);
        assert_eq!(start.encode(), want);
        assert_eq!(Event::decode(&want).unwrap(), start);
    }

    #[test]
    fn write_read_round_trip_and_corruption_detected() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.add_scalar("train/lm_loss", 1, 2.5).unwrap();
        w.add_scalars(
            2,
            [("train/lm_loss", 1.25), ("eval/all/exact_accuracy", 0.5)],
        )
        .unwrap();
        w.add_session_start(2).unwrap();
        w.flush().unwrap();
        let path = w.path().to_path_buf();
        drop(w);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert!(
            name.ends_with(&format!(".{}", std::process::id())),
            "{name}"
        );
        assert_eq!(event_files(dir.path()).unwrap(), vec![path.clone()]);

        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
        assert!(events[0].wall_time > 1.6e9);
        assert_eq!(events[1].step, 1);
        assert_eq!(
            events[1].scalars,
            vec![Scalar {
                tag: "train/lm_loss".into(),
                value: 2.5
            }]
        );
        assert_eq!(events[2].step, 2);
        assert_eq!(events[2].scalars.len(), 2);
        assert_eq!(events[2].scalars[1].tag, "eval/all/exact_accuracy");
        assert_eq!(events[2].scalars[1].value, 0.5);
        assert_eq!(events[3].session_status, Some(1));

        // Flip one byte inside the payload of the second record: its payload CRC must fail.
        let mut bytes = std::fs::read(&path).unwrap();
        let first_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let second = 16 + first_len;
        bytes[second + 12 + 3] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("payload CRC mismatch"), "{err}");
        assert!(err.contains(&format!("byte {second}")), "{err}");

        // Restore it and corrupt the length field instead: the length CRC must fail.
        bytes[second + 12 + 3] ^= 0x01;
        bytes[second] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("length CRC mismatch"), "{err}");

        // A truncated tail (a crash mid-write) is reported, not silently ignored.
        bytes[second] ^= 0x40;
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        let err = read_events(&path).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
    }
}
