//! The NumPy `.npy` file format: header parsing, typed reading, memory mapping and writing.
//!
//! What we write is byte-identical to `numpy.save`.
//!
//! Mirrors what sapientinc/HRM relies on: the builders (`dataset/build_*_dataset.py`) call
//! `np.save`, and the loader (`puzzle_dataset.py`) calls `np.load(..., mmap_mode="r")` for
//! inputs/labels and a plain `np.load` for the index arrays. The format itself is NumPy's
//! (`numpy/lib/_format_impl.py`), re-implemented from its documentation and observed output:
//!
//! ```text
//! b"\x93NUMPY" major minor | header_len (u16 LE for v1, u32 LE for v2/v3) | header | data
//! header = "{'descr': '<i4', 'fortran_order': False, 'shape': (5,), }" + growth spaces
//!          + pad spaces + "\n"
//! ```
//!
//! * keys are written sorted, each as `'key': repr(value), `;
//! * "growth" spaces: `21 - len(repr(shape[0]))` spaces (none for 0-d arrays) so the header can
//!   be rewritten in place when the array grows (we use that for streaming writes: the header
//!   length does not depend on the row count);
//! * then spaces and a final `\n` so that magic + length field + header is a multiple of 64 bytes
//!   (between 1 and 64 pad spaces, NumPy never pads with 0);
//! * version 1.0 unless the header exceeds 65535 bytes (then 2.0).
//!
//! Reading accepts versions 1.0, 2.0 and 3.0, the descrs `|b1 |u1 |i1 <i2 <u2 <i4 <u4 <i8 <u8 <f4
//! <f8` (and their big-endian `>` forms, byte-swapped on read), C order only (a Fortran-ordered
//! file is rejected with a hint), and validates that the file holds exactly the bytes the shape
//! implies.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{open_file, DataError, Result};

/// The 6-byte magic string every `.npy` file starts with.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// NumPy aligns the start of the data to this many bytes.
pub const ARRAY_ALIGN: usize = 64;
/// Header room NumPy reserves for the digits of the growth axis (`GROWTH_AXIS_MAX_DIGITS`).
pub const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Element types this crate reads and writes (NumPy scalar kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// `|b1`
    Bool,
    /// `|u1`
    U8,
    /// `|i1`
    I8,
    /// `<i2`
    I16,
    /// `<u2`
    U16,
    /// `<i4`
    I32,
    /// `<u4`
    U32,
    /// `<i8`
    I64,
    /// `<u8`
    U64,
    /// `<f4`
    F32,
    /// `<f8`
    F64,
}

impl Dtype {
    /// The little-endian descr string NumPy writes for this type (`'<i4'`, `'|u1'`, ...).
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::Bool => "|b1",
            Dtype::U8 => "|u1",
            Dtype::I8 => "|i1",
            Dtype::I16 => "<i2",
            Dtype::U16 => "<u2",
            Dtype::I32 => "<i4",
            Dtype::U32 => "<u4",
            Dtype::I64 => "<i8",
            Dtype::U64 => "<u8",
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
        }
    }

    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::I64 | Dtype::U64 | Dtype::F64 => 8,
        }
    }

    /// Whether this is an integer type (bool excluded).
    pub fn is_integer(self) -> bool {
        !matches!(self, Dtype::Bool | Dtype::F32 | Dtype::F64)
    }

    /// Parses a descr string; returns the type and whether the data is big-endian.
    /// Accepts `<`, `>`, `|` and (for 1-byte types) `=` byte-order marks.
    pub fn parse_descr(descr: &str) -> std::result::Result<(Dtype, bool), String> {
        let (order, kind) = match descr.chars().next() {
            Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
            _ => ('|', descr),
        };
        let dtype = match kind {
            "b1" | "?" => Dtype::Bool,
            "u1" => Dtype::U8,
            "i1" => Dtype::I8,
            "i2" => Dtype::I16,
            "u2" => Dtype::U16,
            "i4" => Dtype::I32,
            "u4" => Dtype::U32,
            "i8" => Dtype::I64,
            "u8" => Dtype::U64,
            "f4" => Dtype::F32,
            "f8" => Dtype::F64,
            _ => {
                return Err(format!(
                    "unsupported dtype descr '{descr}' (supported: |b1 |u1 |i1 <i2 <u2 <i4 <u4 \
                     <i8 <u8 <f4 <f8)"
                ))
            }
        };
        if order == '=' && dtype.size() > 1 {
            return Err(format!(
                "dtype descr '{descr}' has native byte order; expected an explicit '<' or '>'"
            ));
        }
        Ok((dtype, order == '>' && dtype.size() > 1))
    }
}

/// A parsed `.npy` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    /// Format version (major, minor): (1,0), (2,0) or (3,0).
    pub version: (u8, u8),
    /// Element type.
    pub dtype: Dtype,
    /// Whether the stored elements are big-endian (always false for files we write).
    pub big_endian: bool,
    /// Whether the array is stored in Fortran (column-major) order.
    pub fortran_order: bool,
    /// The array shape (empty for a 0-d array).
    pub shape: Vec<usize>,
    /// Byte offset of the first data byte (= total header size including magic).
    pub data_offset: usize,
}

impl NpyHeader {
    /// Number of elements (product of the shape; 1 for a 0-d array).
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }

    /// Number of data bytes the shape implies.
    pub fn data_len(&self) -> usize {
        self.num_elements() * self.dtype.size()
    }
}

// ----------------------------------------------------------------------------------------------
// Header writing
// ----------------------------------------------------------------------------------------------

/// Python `repr` of a shape tuple: `()`, `(5,)`, `(3, 81)`.
fn shape_repr(shape: &[usize]) -> String {
    match shape.len() {
        0 => "()".to_string(),
        1 => format!("({},)", shape[0]),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// The complete header (magic, version, length field, dict, padding, newline) that
/// `numpy.save` writes for a C-ordered array with this descr and shape.
pub fn header_bytes(descr: &str, shape: &[usize]) -> Vec<u8> {
    // Keys in sorted order, each followed by ", ", as NumPy's `_write_array_header` does.
    let mut dict = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        shape_repr(shape)
    );
    if let Some(first) = shape.first() {
        let digits = first.to_string().len();
        dict.push_str(&" ".repeat(GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits)));
    }
    // `hlen` counts the final newline; pad so that prefix + header is a multiple of 64.
    let hlen = dict.len() + 1;
    // Version 1.0 (u16 length field) when the padded header fits, else 2.0 (u32), like NumPy.
    let pad_for = |prefix_len: usize| ARRAY_ALIGN - ((prefix_len + hlen) % ARRAY_ALIGN);
    let (prefix_len, major) = if hlen + pad_for(10) <= u16::MAX as usize {
        (10, 1u8)
    } else {
        (12, 2u8)
    };
    let padlen = pad_for(prefix_len);
    let total_header = hlen + padlen;
    let mut out = Vec::with_capacity(prefix_len + total_header);
    out.extend_from_slice(MAGIC);
    out.push(major);
    out.push(0);
    if major == 1 {
        out.extend_from_slice(&(total_header as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(total_header as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padlen));
    out.push(b'\n');
    out
}

// ----------------------------------------------------------------------------------------------
// Header parsing (a tiny Python-literal parser: dict, str, bool, int, tuple)
// ----------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum PyLit {
    Str(String),
    Bool(bool),
    Int(i128),
    Tuple(Vec<PyLit>),
    List(Vec<PyLit>),
    Dict(Vec<(PyLit, PyLit)>),
    None,
}

struct LitParser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl LitParser<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && (self.s[self.pos] as char).is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> std::result::Result<(), String> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            Some(x) => Err(format!(
                "expected '{}' at header offset {}, found '{}'",
                c as char, self.pos, x as char
            )),
            None => Err(format!("expected '{}', found end of header", c as char)),
        }
    }

    /// Parses comma-separated values up to `close`; returns them and whether a comma was seen.
    fn seq(&mut self, close: u8) -> std::result::Result<(Vec<PyLit>, bool), String> {
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok((items, comma));
            }
            items.push(self.value()?);
            match self.peek() {
                Some(b',') => {
                    self.pos += 1;
                    comma = true;
                }
                Some(c) if c == close => {}
                _ => return Err(format!("expected ',' or '{}' in header", close as char)),
            }
        }
    }

    fn value(&mut self) -> std::result::Result<PyLit, String> {
        match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                let mut entries = Vec::new();
                loop {
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(PyLit::Dict(entries));
                    }
                    let k = self.value()?;
                    self.expect(b':')?;
                    let v = self.value()?;
                    entries.push((k, v));
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {}
                        _ => return Err("expected ',' or '}' in header dict".to_string()),
                    }
                }
            }
            Some(b'(') => {
                self.pos += 1;
                let (items, comma) = self.seq(b')')?;
                // `(x)` without a comma is a parenthesised value, not a tuple.
                if items.len() == 1 && !comma {
                    Ok(items.into_iter().next().unwrap_or(PyLit::None))
                } else {
                    Ok(PyLit::Tuple(items))
                }
            }
            Some(b'[') => {
                self.pos += 1;
                Ok(PyLit::List(self.seq(b']')?.0))
            }
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos] != q {
                    if self.s[self.pos] == b'\\' {
                        return Err("escape sequences in header strings are not supported".into());
                    }
                    self.pos += 1;
                }
                if self.pos >= self.s.len() {
                    return Err("unterminated string in header".to_string());
                }
                let text = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
                self.pos += 1;
                Ok(PyLit::Str(text))
            }
            Some(c) if c.is_ascii_digit() || c == b'-' => {
                let start = self.pos;
                self.pos += 1;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                    self.pos += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
                let v: i128 = text
                    .parse()
                    .map_err(|_| format!("bad integer '{text}' in header"))?;
                // Python 2 long suffix.
                if self.pos < self.s.len() && (self.s[self.pos] == b'L' || self.s[self.pos] == b'l')
                {
                    self.pos += 1;
                }
                Ok(PyLit::Int(v))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self.pos < self.s.len() && self.s[self.pos].is_ascii_alphanumeric() {
                    self.pos += 1;
                }
                match &self.s[start..self.pos] {
                    b"True" => Ok(PyLit::Bool(true)),
                    b"False" => Ok(PyLit::Bool(false)),
                    b"None" => Ok(PyLit::None),
                    other => Err(format!(
                        "unexpected word '{}' in header",
                        String::from_utf8_lossy(other)
                    )),
                }
            }
            Some(c) => Err(format!("unexpected character '{}' in header", c as char)),
            None => Err("unexpected end of header".to_string()),
        }
    }
}

/// Parses the header at the start of `bytes` (which must hold at least the whole header).
/// The error is a plain message; callers attach the file name.
pub fn parse_header(bytes: &[u8]) -> std::result::Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("missing the \\x93NUMPY magic string (not a .npy file)".to_string());
    }
    let version = (bytes[6], bytes[7]);
    let (len_size, utf8) = match version {
        (1, 0) => (2usize, false),
        (2, 0) => (4, false),
        (3, 0) => (4, true),
        (a, b) => return Err(format!("unsupported format version {a}.{b}")),
    };
    if bytes.len() < 6 + 2 + len_size {
        return Err("file ends inside the header".to_string());
    }
    let header_len = if len_size == 2 {
        u16::from_le_bytes([bytes[8], bytes[9]]) as usize
    } else {
        u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize
    };
    let data_offset = 8 + len_size + header_len;
    if bytes.len() < data_offset {
        return Err(format!(
            "file ends inside the header (header length field says {header_len} bytes)"
        ));
    }
    let raw = &bytes[8 + len_size..data_offset];
    let text: String = if utf8 {
        std::str::from_utf8(raw)
            .map_err(|_| "header is not valid UTF-8".to_string())?
            .to_string()
    } else {
        // latin-1: every byte is one char.
        raw.iter().map(|&b| b as char).collect()
    };
    let mut p = LitParser {
        s: text.as_bytes(),
        pos: 0,
    };
    let lit = p.value()?;
    let PyLit::Dict(entries) = lit else {
        return Err("header is not a dictionary".to_string());
    };
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (k, v) in entries {
        let PyLit::Str(k) = k else {
            return Err("header dictionary has a non-string key".to_string());
        };
        match k.as_str() {
            "descr" => descr = Some(v),
            "fortran_order" => fortran = Some(v),
            "shape" => shape = Some(v),
            other => return Err(format!("header has an unexpected key '{other}'")),
        }
    }
    let descr = match descr {
        Some(PyLit::Str(s)) => s,
        Some(PyLit::List(_)) | Some(PyLit::Tuple(_)) => {
            return Err("structured or sub-array dtypes are not supported".to_string())
        }
        Some(_) => return Err("'descr' is not a string".to_string()),
        None => return Err("header has no 'descr' key".to_string()),
    };
    let fortran_order = match fortran {
        Some(PyLit::Bool(b)) => b,
        Some(_) => return Err("'fortran_order' is not a bool".to_string()),
        None => return Err("header has no 'fortran_order' key".to_string()),
    };
    let shape = match shape {
        Some(PyLit::Tuple(items)) => {
            let mut dims = Vec::with_capacity(items.len());
            for it in items {
                match it {
                    PyLit::Int(d) if d >= 0 && d <= usize::MAX as i128 => dims.push(d as usize),
                    other => return Err(format!("'shape' has an invalid dimension {other:?}")),
                }
            }
            dims
        }
        Some(_) => return Err("'shape' is not a tuple".to_string()),
        None => return Err("header has no 'shape' key".to_string()),
    };
    let (dtype, big_endian) = Dtype::parse_descr(&descr)?;
    Ok(NpyHeader {
        version,
        dtype,
        big_endian,
        fortran_order,
        shape,
        data_offset,
    })
}

// ----------------------------------------------------------------------------------------------
// Typed elements
// ----------------------------------------------------------------------------------------------

/// A Rust scalar that maps to one NumPy dtype.
pub trait NpyElement: Copy + Send + Sync + 'static {
    /// The matching NumPy type.
    const DTYPE: Dtype;
    /// Appends the little-endian bytes of every element of `data` to `out`.
    fn extend_le(data: &[Self], out: &mut Vec<u8>);
}

macro_rules! impl_element {
    ($t:ty, $d:expr) => {
        impl NpyElement for $t {
            const DTYPE: Dtype = $d;
            fn extend_le(data: &[Self], out: &mut Vec<u8>) {
                out.reserve(data.len() * std::mem::size_of::<$t>());
                for v in data {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        }
    };
}
impl_element!(u8, Dtype::U8);
impl_element!(i8, Dtype::I8);
impl_element!(i16, Dtype::I16);
impl_element!(u16, Dtype::U16);
impl_element!(i32, Dtype::I32);
impl_element!(u32, Dtype::U32);
impl_element!(i64, Dtype::I64);
impl_element!(u64, Dtype::U64);
impl_element!(f32, Dtype::F32);
impl_element!(f64, Dtype::F64);

impl NpyElement for bool {
    const DTYPE: Dtype = Dtype::Bool;
    fn extend_le(data: &[Self], out: &mut Vec<u8>) {
        out.extend(data.iter().map(|&b| b as u8));
    }
}

/// The typed elements of a loaded array.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `|b1`
    Bool(Vec<bool>),
    /// `|u1`
    U8(Vec<u8>),
    /// `|i1`
    I8(Vec<i8>),
    /// `<i2`
    I16(Vec<i16>),
    /// `<u2`
    U16(Vec<u16>),
    /// `<i4`
    I32(Vec<i32>),
    /// `<u4`
    U32(Vec<u32>),
    /// `<i8`
    I64(Vec<i64>),
    /// `<u8`
    U64(Vec<u64>),
    /// `<f4`
    F32(Vec<f32>),
    /// `<f8`
    F64(Vec<f64>),
}

/// A fully loaded array: shape plus typed elements in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Array shape.
    pub shape: Vec<usize>,
    /// Elements in C (row-major) order.
    pub data: NpyData,
}

fn decode<const N: usize, T>(bytes: &[u8], big: bool, f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            if big {
                a.reverse();
            }
            f(a)
        })
        .collect()
}

impl NpyArray {
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        match &self.data {
            NpyData::Bool(_) => Dtype::Bool,
            NpyData::U8(_) => Dtype::U8,
            NpyData::I8(_) => Dtype::I8,
            NpyData::I16(_) => Dtype::I16,
            NpyData::U16(_) => Dtype::U16,
            NpyData::I32(_) => Dtype::I32,
            NpyData::U32(_) => Dtype::U32,
            NpyData::I64(_) => Dtype::I64,
            NpyData::U64(_) => Dtype::U64,
            NpyData::F32(_) => Dtype::F32,
            NpyData::F64(_) => Dtype::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decodes the data bytes of an array described by `header`.
    pub fn from_bytes(header: &NpyHeader, data: &[u8]) -> NpyArray {
        let big = header.big_endian;
        let data = match header.dtype {
            Dtype::Bool => NpyData::Bool(data.iter().map(|&b| b != 0).collect()),
            Dtype::U8 => NpyData::U8(data.to_vec()),
            Dtype::I8 => NpyData::I8(data.iter().map(|&b| b as i8).collect()),
            Dtype::I16 => NpyData::I16(decode(data, big, i16::from_le_bytes)),
            Dtype::U16 => NpyData::U16(decode(data, big, u16::from_le_bytes)),
            Dtype::I32 => NpyData::I32(decode(data, big, i32::from_le_bytes)),
            Dtype::U32 => NpyData::U32(decode(data, big, u32::from_le_bytes)),
            Dtype::I64 => NpyData::I64(decode(data, big, i64::from_le_bytes)),
            Dtype::U64 => NpyData::U64(decode(data, big, u64::from_le_bytes)),
            Dtype::F32 => NpyData::F32(decode(data, big, f32::from_le_bytes)),
            Dtype::F64 => NpyData::F64(decode(data, big, f64::from_le_bytes)),
        };
        NpyArray {
            shape: header.shape.clone(),
            data,
        }
    }

    /// Integer elements widened to i128 (`None` for bool/float arrays).
    fn integers(&self) -> Option<Box<dyn Iterator<Item = i128> + '_>> {
        Some(match &self.data {
            NpyData::U8(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::I8(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::I16(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::U16(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::I32(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::U32(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::I64(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::U64(v) => Box::new(v.iter().map(|&x| x as i128)),
            NpyData::Bool(_) | NpyData::F32(_) | NpyData::F64(_) => return None,
        })
    }

    /// Converts an integer array to `i32`, checking every value fits. `path` and `field` name
    /// the source in errors.
    pub fn into_i32(self, path: &Path, field: &str) -> Result<Vec<i32>> {
        if let NpyData::I32(v) = self.data {
            return Ok(v);
        }
        self.narrow(path, field, "does not fit in int32", |x| {
            i32::try_from(x).ok()
        })
    }

    /// Converts an integer array to `u8`, checking every value is in `0..=255`.
    pub fn into_u8(self, path: &Path, field: &str) -> Result<Vec<u8>> {
        if let NpyData::U8(v) = self.data {
            return Ok(v);
        }
        self.narrow(path, field, "is not a token id in 0..=255", |x| {
            u8::try_from(x).ok()
        })
    }

    /// Every integer element through `fit`; the first one it rejects is reported as
    /// `element {i} = {x} {problem}`.
    fn narrow<T>(
        &self,
        path: &Path,
        field: &str,
        problem: &str,
        fit: impl Fn(i128) -> Option<T>,
    ) -> Result<Vec<T>> {
        let dtype = self.dtype();
        let it = self.integers().ok_or_else(|| {
            DataError::field(
                path,
                field,
                format!("expected an integer dtype, found {dtype:?}"),
            )
        })?;
        let mut out = Vec::with_capacity(self.len());
        for (i, x) in it.enumerate() {
            let Some(v) = fit(x) else {
                return Err(DataError::field(
                    path,
                    field,
                    format!("element {i} = {x} {problem}"),
                ));
            };
            out.push(v);
        }
        Ok(out)
    }
}

// ----------------------------------------------------------------------------------------------
// Reading
// ----------------------------------------------------------------------------------------------

fn check_layout(path: &Path, header: &NpyHeader, file_len: usize) -> Result<()> {
    if header.fortran_order && header.shape.len() > 1 {
        return Err(DataError::npy(
            path,
            "fortran_order=True is not supported; re-save it in C order \
             (np.save(path, np.ascontiguousarray(a)))",
        ));
    }
    let expected = header
        .shape
        .iter()
        .try_fold(header.dtype.size(), |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| DataError::npy(path, format!("shape {:?} is too large", header.shape)))?;
    let have = file_len.saturating_sub(header.data_offset);
    if have != expected {
        return Err(DataError::npy(
            path,
            format!(
                "shape {:?} of {} needs {expected} data bytes but the file holds {have} \
                 (truncated or corrupt file)",
                header.shape,
                header.dtype.descr()
            ),
        ));
    }
    Ok(())
}

/// Parses the header of in-memory file contents; `path` is only used in error messages.
pub fn parse_header_for(path: &Path, bytes: &[u8]) -> Result<NpyHeader> {
    let header = parse_header(bytes).map_err(|m| DataError::npy(path, m))?;
    check_layout(path, &header, bytes.len())?;
    Ok(header)
}

/// Reads a whole `.npy` file into memory.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let bytes = read_all(path)?;
    let header = parse_header_for(path, &bytes)?;
    Ok(NpyArray::from_bytes(&header, &bytes[header.data_offset..]))
}

/// Reads a `.npy` file whose dtype must be exactly `T` (no conversion).
pub fn read_npy_as<T: NpyElement>(path: &Path) -> Result<(Vec<usize>, Vec<T>)>
where
    NpyData: TryIntoVec<T>,
{
    let arr = read_npy(path)?;
    let shape = arr.shape.clone();
    let found = arr.dtype();
    match arr.data.try_into_vec() {
        Some(v) => Ok((shape, v)),
        None => Err(DataError::field(
            path,
            "descr",
            format!(
                "expected dtype {}, found {}",
                T::DTYPE.descr(),
                found.descr()
            ),
        )),
    }
}

/// Extraction of a typed vector from [`NpyData`] (used by [`read_npy_as`]).
pub trait TryIntoVec<T> {
    /// The vector if the variant holds `T`.
    fn try_into_vec(self) -> Option<Vec<T>>;
}

macro_rules! impl_try_into {
    ($t:ty, $v:ident) => {
        impl TryIntoVec<$t> for NpyData {
            fn try_into_vec(self) -> Option<Vec<$t>> {
                match self {
                    NpyData::$v(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}
impl_try_into!(bool, Bool);
impl_try_into!(u8, U8);
impl_try_into!(i8, I8);
impl_try_into!(i16, I16);
impl_try_into!(u16, U16);
impl_try_into!(i32, I32);
impl_try_into!(u32, U32);
impl_try_into!(i64, I64);
impl_try_into!(u64, U64);
impl_try_into!(f32, F32);
impl_try_into!(f64, F64);

fn read_all(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut f = open_file(
        path,
        "the dataset folder is incomplete; rebuild it with `hrm data`",
    )?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)
        .map_err(|e| DataError::io(path, e))?;
    Ok(bytes)
}

/// A memory-mapped `.npy` file (read-only).
#[derive(Debug)]
pub struct MappedNpy {
    /// The parsed header.
    pub header: NpyHeader,
    /// The file this maps.
    pub path: PathBuf,
    mmap: memmap2::Mmap,
}

impl MappedNpy {
    /// Maps `path` and validates its header and size.
    pub fn open(path: &Path) -> Result<MappedNpy> {
        let file = open_file(
            path,
            "the dataset folder is incomplete; rebuild it with `hrm data`",
        )?;
        // SAFETY: the map is read-only; like NumPy's mmap_mode="r" we assume nobody truncates or
        // rewrites a dataset file while it is being read (builders only ever write new folders
        // and rename them into place, they never modify files in place).
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::io(path, e))?;
        let header = parse_header_for(path, &mmap)?;
        Ok(MappedNpy {
            header,
            path: path.to_path_buf(),
            mmap,
        })
    }

    /// The raw data bytes (after the header).
    pub fn data(&self) -> &[u8] {
        &self.mmap[self.header.data_offset..]
    }

    /// Decodes the whole array into memory.
    pub fn to_array(&self) -> NpyArray {
        NpyArray::from_bytes(&self.header, self.data())
    }
}

// ----------------------------------------------------------------------------------------------
// Writing
// ----------------------------------------------------------------------------------------------

/// Writes `data` with `shape` exactly as `numpy.save` would (v1.0 header, C order).
/// Fails if the element count does not match the shape.
pub fn write_npy<T: NpyElement>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != data.len() {
        return Err(DataError::npy(
            path,
            format!(
                "internal: shape {shape:?} needs {n} elements, got {}",
                data.len()
            ),
        ));
    }
    let mut bytes = header_bytes(T::DTYPE.descr(), shape);
    T::extend_le(data, &mut bytes);
    std::fs::write(path, &bytes).map_err(|e| DataError::io(path, e))
}

/// Streams a C-ordered array of shape `[rows, row_shape...]` to disk when the row count is not
/// known in advance. The header is written first with 0 rows and patched in place by
/// [`NpyStreamWriter::finish`]; thanks to NumPy's growth padding the header length does not
/// depend on the row count, so the finished file is byte-identical to `numpy.save` of the same
/// array.
#[derive(Debug)]
pub struct NpyStreamWriter<T: NpyElement> {
    path: PathBuf,
    file: BufWriter<File>,
    row_shape: Vec<usize>,
    row_len: usize,
    rows: usize,
    header_len: usize,
    buf: Vec<u8>,
    _t: std::marker::PhantomData<T>,
}

impl<T: NpyElement> NpyStreamWriter<T> {
    /// Creates (truncates) `path`; every row has shape `row_shape` (may be empty for a 1-d
    /// array of scalars).
    pub fn create(path: &Path, row_shape: &[usize]) -> Result<Self> {
        let file = File::create(path).map_err(|e| DataError::io(path, e))?;
        let mut file = BufWriter::with_capacity(1 << 20, file);
        let mut shape = vec![0usize];
        shape.extend_from_slice(row_shape);
        let header = header_bytes(T::DTYPE.descr(), &shape);
        file.write_all(&header)
            .map_err(|e| DataError::io(path, e))?;
        Ok(NpyStreamWriter {
            path: path.to_path_buf(),
            file,
            row_shape: row_shape.to_vec(),
            row_len: row_shape.iter().product(),
            rows: 0,
            header_len: header.len(),
            buf: Vec::new(),
            _t: std::marker::PhantomData,
        })
    }

    /// Appends whole rows; `data.len()` must be a multiple of the row length.
    pub fn write_rows(&mut self, data: &[T]) -> Result<()> {
        if self.row_len == 0 || !data.len().is_multiple_of(self.row_len) {
            return Err(DataError::npy(
                &self.path,
                format!(
                    "internal: wrote {} elements, not a multiple of the row length {}",
                    data.len(),
                    self.row_len
                ),
            ));
        }
        self.buf.clear();
        T::extend_le(data, &mut self.buf);
        self.file
            .write_all(&self.buf)
            .map_err(|e| DataError::io(&self.path, e))?;
        self.rows += data.len() / self.row_len;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Flushes, rewrites the header with the final row count and closes the file.
    pub fn finish(self) -> Result<usize> {
        let NpyStreamWriter {
            path,
            file,
            row_shape,
            rows,
            header_len,
            ..
        } = self;
        let mut file = file
            .into_inner()
            .map_err(|e| DataError::io(&path, e.into_error()))?;
        let mut shape = vec![rows];
        shape.extend_from_slice(&row_shape);
        let header = header_bytes(T::DTYPE.descr(), &shape);
        if header.len() != header_len {
            return Err(DataError::npy(
                &path,
                "internal: header length changed while streaming (row count too large)",
            ));
        }
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(&header))
            .and_then(|_| file.sync_data())
            .map_err(|e| DataError::io(&path, e))?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Headers captured from `numpy.save` (NumPy 2.4.6); see the module docs for the rule.
    #[test]
    fn header_matches_numpy_bytes() {
        let h = header_bytes("|u1", &[3, 81]);
        let mut expected = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 81), }";
        expected.extend_from_slice(dict.as_bytes());
        expected.extend(std::iter::repeat_n(b' ', 128 - 10 - dict.len() - 1));
        expected.push(b'\n');
        assert_eq!(h, expected);
        assert_eq!(h.len(), 128);

        for (descr, shape) in [
            ("<i4", vec![5usize]),
            ("|u1", vec![1001000, 81]),
            ("<i4", vec![0]),
            ("<i8", vec![]),
            ("<f4", vec![2, 3, 4]),
        ] {
            let h = header_bytes(descr, &shape);
            // NumPy 2.4.6 writes a 128-byte header for every one of these.
            assert_eq!(h.len(), 128, "{descr} {shape:?}");
            assert_eq!(h[8], 0x76);
            assert_eq!(*h.last().unwrap(), b'\n');
            let parsed = parse_header(&h).unwrap();
            assert_eq!(parsed.shape, shape);
            assert_eq!(parsed.dtype.descr(), descr);
            assert_eq!(parsed.data_offset, 128);
        }
    }

    #[test]
    fn shape_repr_is_python_tuple() {
        assert_eq!(shape_repr(&[]), "()");
        assert_eq!(shape_repr(&[7]), "(7,)");
        assert_eq!(shape_repr(&[7, 81]), "(7, 81)");
    }

    #[test]
    fn header_length_is_independent_of_row_count() {
        let a = header_bytes("<i4", &[0, 900]).len();
        for n in [1usize, 12, 999_999, 4_000_000_000, usize::MAX] {
            assert_eq!(header_bytes("<i4", &[n, 900]).len(), a, "{n}");
        }
    }

    #[test]
    fn parse_variants() {
        // Python 2 style header with long suffixes and double quotes, version 2.0.
        let dict = "{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": (2L, 3L)}";
        let mut b = b"\x93NUMPY\x02\x00".to_vec();
        let len = dict.len() + 1;
        b.extend_from_slice(&(len as u32).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.push(b'\n');
        let h = parse_header(&b).unwrap();
        assert_eq!(h.version, (2, 0));
        assert_eq!(h.shape, vec![2, 3]);
        assert_eq!(h.dtype, Dtype::I64);

        let bad = |dict: &str| {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend_from_slice(&((dict.len() + 1) as u16).to_le_bytes());
            b.extend_from_slice(dict.as_bytes());
            b.push(b'\n');
            parse_header(&b).unwrap_err()
        };
        assert!(
            bad("{'descr': '<c16', 'fortran_order': False, 'shape': (2,), }")
                .contains("unsupported dtype")
        );
        assert!(
            bad("{'descr': [('a', '<i4')], 'fortran_order': False, 'shape': (2,), }")
                .contains("structured")
        );
        assert!(bad("{'descr': '<i4', 'shape': (2,), }").contains("fortran_order"));
        assert!(
            bad("{'descr': '<i4', 'fortran_order': False, 'shape': (-2,), }")
                .contains("invalid dimension")
        );
        assert!(parse_header(b"PK\x03\x04notnpy")
            .unwrap_err()
            .contains("magic"));
    }

    #[test]
    fn roundtrip_all_types_and_big_endian() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        write_npy(&p, &[2, 3], &[1i32, -2, 3, 4, 5, i32::MAX]).unwrap();
        let (shape, v) = read_npy_as::<i32>(&p).unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(v, vec![1, -2, 3, 4, 5, i32::MAX]);
        assert!(read_npy_as::<u8>(&p)
            .unwrap_err()
            .to_string()
            .contains("expected dtype |u1"));

        write_npy(&p, &[3], &[1.5f32, -2.0, 0.25]).unwrap();
        assert_eq!(
            read_npy(&p).unwrap().data,
            NpyData::F32(vec![1.5, -2.0, 0.25])
        );
        write_npy(&p, &[2], &[true, false]).unwrap();
        assert_eq!(read_npy(&p).unwrap().data, NpyData::Bool(vec![true, false]));
        write_npy(&p, &[2], &[7u16, 65535]).unwrap();
        assert_eq!(
            read_npy(&p)
                .unwrap()
                .into_u8(&p, "x")
                .unwrap_err()
                .to_string(),
            format!(
                "{}: field `x`: element 1 = 65535 is not a token id in 0..=255",
                p.display()
            )
        );

        // Big-endian int32 written by hand.
        let mut b = header_bytes(">i4", &[2]);
        b.extend_from_slice(&258i32.to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        std::fs::write(&p, &b).unwrap();
        let a = read_npy(&p).unwrap();
        assert_eq!(a.into_i32(&p, "x").unwrap(), vec![258, -1]);
    }

    #[test]
    fn rejects_fortran_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.npy");
        let dict = "{'descr': '<i4', 'fortran_order': True, 'shape': (2, 2), }";
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&((dict.len() + 1) as u16).to_le_bytes());
        b.extend_from_slice(dict.as_bytes());
        b.push(b'\n');
        b.extend_from_slice(&[0u8; 16]);
        std::fs::write(&p, &b).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(
            e.contains("fortran_order=True") && e.contains("f.npy"),
            "{e}"
        );

        let mut b = header_bytes("<i4", &[4]);
        b.extend_from_slice(&[0u8; 12]);
        std::fs::write(&p, &b).unwrap();
        let e = read_npy(&p).unwrap_err().to_string();
        assert!(
            e.contains("needs 16 data bytes but the file holds 12"),
            "{e}"
        );
        assert!(matches!(
            read_npy(&dir.path().join("missing.npy")),
            Err(DataError::NotFound { .. })
        ));
    }

    #[test]
    fn stream_writer_equals_write_npy() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.npy");
        let b = dir.path().join("b.npy");
        let data: Vec<u8> = (0..(5 * 81)).map(|i| (i % 11) as u8).collect();
        write_npy(&a, &[5, 81], &data).unwrap();
        let mut w = NpyStreamWriter::<u8>::create(&b, &[81]).unwrap();
        w.write_rows(&data[..2 * 81]).unwrap();
        w.write_rows(&data[2 * 81..]).unwrap();
        assert!(w.write_rows(&data[..80]).is_err());
        assert_eq!(w.finish().unwrap(), 5);
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let m = MappedNpy::open(&b).unwrap();
        assert_eq!(m.data(), &data[..]);
        assert_eq!(m.header.shape, vec![5, 81]);
    }
}
