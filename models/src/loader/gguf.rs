//! A GGUF v2/v3 reader written against the spec (ggml's `docs/gguf.md`), without llama.cpp.
//!
//! GGUF files come from anywhere, so every count, length, dimension and offset is checked
//! against the bytes that remain (with overflow-checked arithmetic) before anything is
//! allocated: a corrupt file yields an error naming it, never a panic or a huge allocation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::convert;
use super::error::{LoadError, Result};
use super::tensor::{HostTensor, SourceDType};

pub use super::gguf_value::{GgufArray, GgufValue};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions (`GGML_MAX_DIMS`).
const MAX_DIMS: u32 = 4;
/// Metadata keys are limited to 65535 bytes by the spec.
const MAX_KEY_LEN: u64 = 65_535;
/// Arrays of arrays are legal but never deep in practice; the cap keeps recursion bounded.
const MAX_ARRAY_DEPTH: usize = 8;
/// Largest alignment accepted (ggml uses 32; anything near this is surely corruption).
const MAX_ALIGNMENT: u64 = 1 << 20;

/// A ggml tensor element type, by its numeric id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GgmlType(pub u32);

impl GgmlType {
    /// ggml's name for the type (`"?"` for ids this reader does not know).
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 40] = [
            "F32", "F16", "Q4_0", "Q4_1", "?", "?", "Q5_0", "Q5_1", "Q8_0", "Q8_1", "Q2_K", "Q3_K",
            "Q4_K", "Q5_K", "Q6_K", "Q8_K", "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL",
            "IQ3_S", "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M", "BF16", "?",
            "?", "?", "TQ1_0", "TQ2_0", "?", "?", "?", "MXFP4",
        ];
        NAMES.get(self.0 as usize).copied().unwrap_or("?")
    }

    /// The loader's dtype for types it can widen to f32.
    pub fn source_dtype(self) -> Option<SourceDType> {
        match self.0 {
            0 => Some(SourceDType::F32),
            1 => Some(SourceDType::F16),
            2 => Some(SourceDType::Q4_0),
            3 => Some(SourceDType::Q4_1),
            6 => Some(SourceDType::Q5_0),
            7 => Some(SourceDType::Q5_1),
            8 => Some(SourceDType::Q8_0),
            12 => Some(SourceDType::Q4_K),
            13 => Some(SourceDType::Q5_K),
            14 => Some(SourceDType::Q6_K),
            30 => Some(SourceDType::BF16),
            _ => None,
        }
    }
}

/// The tensor count a file's GGUF header declares, read from its first 16 bytes (magic,
/// version, count) without reading the rest; `None` when the file is not GGUF.
pub fn peek_tensor_count(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .ok()?;
    (head[..4] == GGUF_MAGIC).then(|| u64::from_le_bytes(head[8..16].try_into().expect("8 bytes")))
}

/// One entry of the tensor-info table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// llama.cpp tensor name.
    pub name: String,
    /// Dimensions innermost first (`ne0` = row length), as GGUF stores them.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
    /// Element count (product of `dims`, checked at parse time).
    pub numel: usize,
    /// Bytes of data when the type is one this reader decodes, checked to lie inside the file.
    pub byte_len: Option<usize>,
}

impl GgufTensorInfo {
    /// Row-major shape, outermost first (the reverse of `dims`), as the model code uses.
    pub fn shape(&self) -> Vec<usize> {
        // Each dim is at most `numel`, which fits in usize.
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF header: metadata and tensor table; the data stays in the caller's bytes.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// File the header was read from (for messages).
    pub path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    /// Data alignment.
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl GgufFile {
    /// Parses the header of the GGUF file whose whole contents are `bytes`.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let mut r = Reader {
            buf: bytes,
            pos: 0,
            path,
        };
        let magic = r.take(4, "magic")?;
        if magic != GGUF_MAGIC {
            return Err(r.corrupt(format!("bad magic {magic:02x?}, expected `GGUF`")));
        }
        let version = r.u32("version")?;
        match version {
            2 | 3 => {}
            1 => return Err(r.corrupt("GGUF v1 (32-bit counts) is not supported")),
            v if v.swap_bytes() <= 3 => {
                return Err(r.corrupt("big-endian GGUF is not supported"));
            }
            v => return Err(r.corrupt(format!("unsupported GGUF version {v}"))),
        }
        // Minimal encoded sizes bound the counts: a tensor info is at least name length (8) +
        // n_dims (4) + type (4) + offset (8); a metadata entry at least key length (8) +
        // value type (4) + a one-byte value.
        let n_tensors = r.count("tensor count", 24)?;
        let n_kv = r.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(MAX_KEY_LEN, &format!("key of metadata entry {i}"))?;
            let ty = r.u32(&format!("type of `{key}`"))?;
            let value = r.value(ty, &key, 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(r.corrupt(format!("metadata key `{key}` appears twice")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a.is_power_of_two() && a <= MAX_ALIGNMENT => a,
                _ => {
                    return Err(r.corrupt(format!(
                        "general.alignment {v:?} is not a power of two <= {MAX_ALIGNMENT}"
                    )));
                }
            },
        };
        let mut infos = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            infos.push(r.tensor_info(i)?);
        }
        let header_end = r.pos as u64;
        let data_offset = header_end
            .checked_next_multiple_of(alignment)
            .ok_or_else(|| r.corrupt("data offset overflows"))?;
        let file_len = bytes.len() as u64;
        let mut names = std::collections::BTreeSet::new();
        for t in &infos {
            if !names.insert(t.name.clone()) {
                return Err(r.tensor_err(&t.name, "name appears twice in the tensor table"));
            }
            if t.offset % alignment != 0 {
                return Err(r.tensor_err(
                    &t.name,
                    format!(
                        "offset {} is not a multiple of the alignment {alignment}",
                        t.offset
                    ),
                ));
            }
            let start = data_offset.checked_add(t.offset);
            let len = t.byte_len.map_or(0, |b| b as u64);
            let end = start.and_then(|s| s.checked_add(len));
            if end.is_none_or(|e| e > file_len) {
                return Err(r.tensor_err(
                    &t.name,
                    format!(
                        "data at offset {} + {} ({len} bytes) runs past the end of the {file_len}-byte file (truncated?)",
                        data_offset, t.offset
                    ),
                ));
            }
        }
        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors: infos,
            alignment,
            data_offset,
        })
    }

    /// The metadata value under `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// The tensor info called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Decodes one tensor from the file's bytes (the same bytes given to `parse`) into f32.
    pub fn read_tensor(&self, bytes: &[u8], info: &GgufTensorInfo) -> Result<HostTensor> {
        let err = |msg: String| LoadError::bad_tensor(&self.path, &info.name, msg);
        let dtype = info.ggml_type.source_dtype().ok_or_else(|| {
            err(format!(
                "GGML type {} ({}) is not supported (supported: F32, F16, BF16, Q8_0)",
                info.ggml_type.name(),
                info.ggml_type.0
            ))
        })?;
        let len = info
            .byte_len
            .ok_or_else(|| err("byte length unknown".into()))?;
        // `parse` checked start + len <= bytes.len() for the same bytes; recheck for other bytes.
        let start = self
            .data_offset
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| err("offset exceeds the address space".into()))?;
        let data = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| err("data lies outside the given bytes".into()))?;
        let values = convert::decode(dtype, data, info.numel).map_err(err)?;
        Ok(HostTensor {
            shape: info.shape(),
            data: values,
            source_dtype: dtype,
        })
    }
}

/// A bounds-checked cursor over the file bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, msg: impl Into<String>) -> LoadError {
        LoadError::corrupt(self.path, msg)
    }

    fn tensor_err(&self, name: &str, msg: impl Into<String>) -> LoadError {
        LoadError::bad_tensor(self.path, name, msg)
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.corrupt(format!(
                "truncated: {what} needs {n} bytes at offset {}, only {} remain",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let b = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A u64 count of items that each take at least `min_size` bytes, bounded by what remains.
    fn count(&mut self, what: &str, min_size: u64) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let rem = self.remaining() as u64;
        match n.checked_mul(min_size) {
            Some(need) if need <= rem => Ok(n as usize),
            _ => Err(self.corrupt(format!(
                "{what} {n} at offset {at} cannot fit in the {rem} bytes that remain"
            ))),
        }
    }

    fn string(&mut self, max: u64, what: &str) -> Result<String> {
        let at = self.pos;
        let n = self.u64(&format!("length of {what}"))?;
        if n > max {
            return Err(self.corrupt(format!(
                "{what}: string length {n} at offset {at} exceeds the limit {max}"
            )));
        }
        if n > self.remaining() as u64 {
            return Err(self.corrupt(format!(
                "{what}: string length {n} at offset {at} runs past the end ({} bytes remain)",
                self.remaining()
            )));
        }
        let bytes = self.take(n as usize, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, ty: u32, key: &str, depth: usize) -> Result<GgufValue> {
        let what = &format!("value of `{key}`");
        Ok(match ty {
            0 => GgufValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => GgufValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => GgufValue::Bool(self.array::<1>(what)?[0] != 0),
            8 => GgufValue::String(self.string(u64::MAX, what)?),
            9 => GgufValue::Array(self.array_value(key, depth)?),
            10 => GgufValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            t => {
                return Err(self.corrupt(format!(
                    "`{key}`: unknown metadata value type {t} at offset {}",
                    self.pos - 4
                )));
            }
        })
    }

    fn array_value(&mut self, key: &str, depth: usize) -> Result<GgufArray> {
        if depth >= MAX_ARRAY_DEPTH {
            return Err(self.corrupt(format!(
                "`{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}"
            )));
        }
        let elem = self.u32(&format!("element type of `{key}`"))?;
        let min_size = match elem {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => 8,  // a string is at least its length field
            9 => 12, // an array is at least its element type and length
            t => {
                return Err(self.corrupt(format!("`{key}`: unknown array element type {t}")));
            }
        };
        let what = format!("array length of `{key}`");
        let n = self.count(&what, min_size)?;
        // `count` proved n * min_size bytes remain, so these capacities are bounded by the file.
        macro_rules! scalars {
            ($variant:ident, $t:ty) => {{
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(<$t>::from_le_bytes(self.array(&what)?));
                }
                GgufArray::$variant(v)
            }};
        }
        Ok(match elem {
            0 => scalars!(U8, u8),
            1 => scalars!(I8, i8),
            2 => scalars!(U16, u16),
            3 => scalars!(I16, i16),
            4 => scalars!(U32, u32),
            5 => scalars!(I32, i32),
            6 => scalars!(F32, f32),
            10 => scalars!(U64, u64),
            11 => scalars!(I64, i64),
            12 => scalars!(F64, f64),
            7 => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array::<1>(&what)?[0] != 0);
                }
                GgufArray::Bool(v)
            }
            8 => {
                let mut v = Vec::with_capacity(n);
                for i in 0..n {
                    v.push(self.string(u64::MAX, &format!("element {i} of `{key}`"))?);
                }
                GgufArray::String(v)
            }
            _ => {
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(self.array_value(key, depth + 1)?);
                }
                GgufArray::Array(v)
            }
        })
    }

    fn tensor_info(&mut self, index: usize) -> Result<GgufTensorInfo> {
        let name = self.string(MAX_KEY_LEN, &format!("name of tensor {index}"))?;
        let n_dims = self.u32(&format!("n_dims of `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(self.tensor_err(
                &name,
                format!("{n_dims} dimensions (ggml allows at most {MAX_DIMS})"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64(&format!("dims of `{name}`"))?);
        }
        let ggml_type = GgmlType(self.u32(&format!("type of `{name}`"))?);
        let offset = self.u64(&format!("offset of `{name}`"))?;
        // Element counts must fit i64 (ggml's int64_t ne) as well as usize.
        let numel = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                self.tensor_err(&name, format!("dims {dims:?} overflow the element count"))
            })?;
        let byte_len = match ggml_type.source_dtype() {
            None => None,
            Some(dt) => {
                // Blocks run along a row: each row must be whole blocks.
                if let Some((n, _)) = super::quant_blocks::block_shape(dt)
                    && dims.first().is_some_and(|&d| d % n as u64 != 0)
                {
                    return Err(self.tensor_err(
                        &name,
                        format!("{dt} rows of {} values are not a multiple of {n}", dims[0]),
                    ));
                }
                Some(convert::needed_bytes(dt, numel).map_err(|m| self.tensor_err(&name, m))?)
            }
        };
        Ok(GgufTensorInfo {
            name,
            dims,
            ggml_type,
            offset,
            numel,
            byte_len,
        })
    }
}
