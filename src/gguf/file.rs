//! A GGUF file: header, metadata and tensor infos parsed and validated; tensor data left in place.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use super::cursor::Cursor;
use super::tensor::{format_shape, TensorInfo, TensorView, MAX_DIMS};
use super::value::Value;
use super::GgufError;
use crate::quant::GgmlType;

const MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Smallest encoding of one metadata pair: key length, empty key, type tag, one byte of value.
const MIN_KV_BYTES: u64 = 8 + 4 + 1;
/// Smallest encoding of one tensor info: name length, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// Where the bytes of a GGUF file live.
enum Storage {
    /// A read-only memory map of a file: weights are paged in on demand, never copied.
    Mapped(Mmap),
    /// Bytes owned by the process (tests, or files made in memory).
    Owned(Vec<u8>),
    /// Bytes that live as long as the program (a model embedded in the binary).
    Static(&'static [u8]),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
            Storage::Static(s) => s,
        }
    }
}

/// A parsed, validated GGUF file whose tensor data stays in the map.
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("len", &self.len())
            .field("metadata", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only (a shared file mapping that qgpt never writes). Another process truncating or
        // rewriting the file while it is mapped could fault or change what we read; qgpt documents
        // that model files must not be modified while served (deploy them on read-only volumes).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        // Before the first access: where the page cache holds the file in 2 MiB folios (Linux
        // reads large files that way when readahead is large, or when a mapping with this advice
        // faults them in), the weights are then mapped with 2 MiB entries instead of 512 × 4 KiB.
        // Every decode step streams all the weights, and with small pages each 4 KiB of them
        // cost a page-table walk: measured on GPT-2 124M Q8_0, 2 threads, one decode step 2.97
        // against 3.48–3.87 ms. Still a map of the file: nothing is copied. A hint only; where
        // it does not apply (other kernels, small folios) nothing changes.
        #[cfg(target_os = "linux")]
        let _ = map.advise(memmap2::Advice::HugePage);
        Self::parse(Storage::Mapped(map))
    }

    /// Parses a GGUF image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, GgufError> {
        Self::parse(Storage::Owned(bytes))
    }

    /// Parses a GGUF image that lives for the whole program, without copying it.
    pub fn from_static(bytes: &'static [u8]) -> Result<Self, GgufError> {
        Self::parse(Storage::Static(bytes))
    }

    fn parse(storage: Storage) -> Result<Self, GgufError> {
        let header = parse_header(storage.bytes())?;
        Ok(Self {
            storage,
            version: header.version,
            alignment: header.alignment,
            data_offset: header.data_offset,
            metadata: header.metadata,
            tensor_index: header
                .tensors
                .iter()
                .enumerate()
                .map(|(i, t)| (t.name.clone(), i))
                .collect(),
            tensors: header.tensors,
        })
    }

    /// Bytes of the file's map that the kernel backs with 2 MiB pages (Linux's `FilePmdMapped`
    /// for the mapping, read from `/proc/self/smaps`); `None` for files not memory-mapped or
    /// where the figure cannot be read. Reading smaps costs a few milliseconds: call it once.
    pub fn huge_page_bytes(&self) -> Option<u64> {
        let Storage::Mapped(map) = &self.storage else {
            return None;
        };
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        pmd_mapped_bytes(&smaps, map.as_ptr() as usize)
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.bytes().len() as u64
    }

    /// True for an empty image (never the case for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.bytes().is_empty()
    }

    /// GGUF format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of tensor data.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Offset of the tensor data section.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    /// All metadata pairs in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A required unsigned integer.
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64()
            .ok_or_else(|| wrong_type(key, "an unsigned integer", v))
    }

    /// A required float.
    pub fn get_f64(&self, key: &str) -> Result<f64, GgufError> {
        let v = self.require(key)?;
        v.as_f64().ok_or_else(|| wrong_type(key, "a number", v))
    }

    /// A required string.
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| wrong_type(key, "a string", v))
    }

    /// A required array.
    pub fn get_array(&self, key: &str) -> Result<&super::Array, GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| wrong_type(key, "an array", v))
    }

    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey {
            key: key.to_owned(),
        })
    }

    /// All tensor infos in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, with its bytes.
    pub fn tensor(&self, name: &str) -> Option<TensorView<'_>> {
        let info = &self.tensors[*self.tensor_index.get(name)?];
        Some(self.view(info))
    }

    /// Drops the resident pages of bytes `range` of a tensor's data when the file is memory-mapped (see
    /// [`crate::memory::release_mapped`]); a no-op for bytes in memory.
    pub fn release(&self, info: &TensorInfo, range: std::ops::Range<usize>) {
        if let Storage::Mapped(m) = &self.storage {
            let len = range
                .len()
                .min((info.n_bytes as usize).saturating_sub(range.start));
            crate::memory::release_mapped(m, info.file_offset as usize + range.start, len);
        }
    }

    /// The bytes of a tensor of this file (bounds were checked at parse time).
    pub fn view<'a>(&'a self, info: &'a TensorInfo) -> TensorView<'a> {
        let start = info.file_offset as usize;
        TensorView {
            info,
            data: &self.bytes()[start..start + info.n_bytes as usize],
        }
    }
}

fn wrong_type(key: &str, expected: &'static str, v: &Value) -> GgufError {
    GgufError::WrongKeyType {
        key: key.to_owned(),
        expected,
        found: v.value_type(),
    }
}

struct Header {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
}

fn parse_header(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut cur = Cursor::new(bytes);
    let magic = cur.take(4, &|| "magic".into())?;
    if magic != MAGIC {
        let mut found = [0u8; 4];
        found.copy_from_slice(magic);
        return Err(GgufError::BadMagic { found });
    }
    let version = cur.u32(&|| "version".into())?;
    if !(2..=3).contains(&version) {
        if (2..=3).contains(&version.swap_bytes()) {
            return Err(GgufError::BigEndian {
                found: version.swap_bytes(),
            });
        }
        return Err(GgufError::UnsupportedVersion { found: version });
    }
    let n_tensors = cur.u64(&|| "tensor count".into())?;
    let n_kv = cur.u64(&|| "metadata count".into())?;
    bound_count(
        "metadata count",
        n_kv,
        cur.remaining() as u64 / MIN_KV_BYTES,
    )?;

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut seen = HashSet::new();
    for i in 0..n_kv {
        let key = cur.string(&|| format!("key of metadata pair #{i}"))?;
        let tag = cur.u32(&|| format!("type of metadata key '{key}'"))?;
        let value = Value::read(&mut cur, tag, &key)?;
        if !seen.insert(key.clone()) {
            return Err(GgufError::DuplicateKey { key });
        }
        metadata.push((key, value));
    }

    let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some((_, v)) => {
            let a = v
                .as_u64()
                .ok_or_else(|| wrong_type("general.alignment", "uint32", v))?;
            if a == 0 || !a.is_power_of_two() {
                return Err(GgufError::BadAlignment { found: a });
            }
            a
        }
    };

    bound_count(
        "tensor count",
        n_tensors,
        cur.remaining() as u64 / MIN_TENSOR_INFO_BYTES,
    )?;
    let mut raw = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        raw.push(read_tensor_info(&mut cur, i)?);
    }

    let data_offset = align_up(cur.position() as u64, alignment);
    let file_len = bytes.len() as u64;
    let mut names = HashSet::new();
    let mut tensors = Vec::with_capacity(raw.len());
    for t in raw {
        if !names.insert(t.name.clone()) {
            return Err(GgufError::DuplicateTensor { name: t.name });
        }
        tensors.push(validate_tensor(t, alignment, data_offset, file_len)?);
    }
    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        tensors,
    })
}

fn bound_count(what: &str, count: u64, max: u64) -> Result<(), GgufError> {
    if count > max {
        return Err(GgufError::CountTooLarge {
            what: what.into(),
            count,
            max,
        });
    }
    Ok(())
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

struct RawTensorInfo {
    name: String,
    dims: Vec<u64>,
    type_id: u32,
    offset: u64,
}

fn read_tensor_info(cur: &mut Cursor<'_>, i: u64) -> Result<RawTensorInfo, GgufError> {
    let name = cur.string(&|| format!("name of tensor #{i}"))?;
    let what = || format!("info of tensor '{name}'");
    let n_dims = cur.u32(&what)?;
    if n_dims == 0 || n_dims as usize > MAX_DIMS {
        return Err(GgufError::BadTensor {
            name,
            reason: format!("{n_dims} dimensions, expected 1 to {MAX_DIMS}"),
        });
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(&what)?);
    }
    let type_id = cur.u32(&what)?;
    let offset = cur.u64(&what)?;
    Ok(RawTensorInfo {
        name,
        dims,
        type_id,
        offset,
    })
}

fn validate_tensor(
    t: RawTensorInfo,
    alignment: u64,
    data_offset: u64,
    file_len: u64,
) -> Result<TensorInfo, GgufError> {
    let bad = |reason: String| GgufError::BadTensor {
        name: t.name.clone(),
        reason,
    };
    let ty = GgmlType::from_id(t.type_id).ok_or_else(|| GgufError::UnknownTensorType {
        name: t.name.clone(),
        id: t.type_id,
    })?;
    if t.dims.contains(&0) {
        return Err(bad(format!(
            "shape {} has a zero dimension",
            format_shape(&t.dims)
        )));
    }
    let n_rows = t.dims[1..]
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {} overflows", format_shape(&t.dims))))?;
    if !t.dims[0].is_multiple_of(ty.block_size() as u64) {
        return Err(bad(format!(
            "row length {} is not a multiple of the {ty} block size {}",
            t.dims[0],
            ty.block_size()
        )));
    }
    let row_bytes = ty
        .row_bytes(t.dims[0])
        .ok_or_else(|| bad(format!("shape {} overflows", format_shape(&t.dims))))?;
    let n_bytes = row_bytes
        .checked_mul(n_rows)
        .filter(|&n| n <= usize::MAX as u64)
        .ok_or_else(|| bad(format!("shape {} overflows", format_shape(&t.dims))))?;
    if !t.offset.is_multiple_of(alignment) {
        return Err(bad(format!(
            "data offset {} is not a multiple of the alignment {alignment}",
            t.offset
        )));
    }
    let start = data_offset.checked_add(t.offset);
    let end = start.and_then(|s| s.checked_add(n_bytes));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len => Ok(TensorInfo {
            name: t.name,
            dims: t.dims,
            ty,
            file_offset: start,
            n_bytes,
        }),
        _ => Err(GgufError::TensorOutOfBounds {
            name: t.name.clone(),
            start: data_offset.saturating_add(t.offset),
            end: data_offset.saturating_add(t.offset).saturating_add(n_bytes),
            file_len,
        }),
    }
}

/// `FilePmdMapped` of the mapping that starts at address `start`, in bytes, from the text of
/// `/proc/<pid>/smaps` (a header line `start-end perms offset dev inode path` per mapping, then
/// `Field: value kB` lines).
fn pmd_mapped_bytes(smaps: &str, start: usize) -> Option<u64> {
    let mut inside = false;
    for line in smaps.lines() {
        let head = line.split_whitespace().next().unwrap_or("");
        if let Some((from, _)) = head.split_once('-') {
            if let Ok(from) = usize::from_str_radix(from, 16) {
                if inside {
                    return None; // the mapping's section ended without the field
                }
                inside = from == start;
                continue;
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("FilePmdMapped:") {
                let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().ok()?;
                return Some(kib * 1024);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::pmd_mapped_bytes;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 fd:00 42    /usr/bin/qgpt
Size:                132 kB
FilePmdMapped:         0 kB
VmFlags: rd mr mw me
7feb6ae00000-7feb73000000 r--p 00000000 fd:00 1234  /models/model.gguf
Size:             133120 kB
AnonHugePages:         0 kB
FilePmdMapped:    102400 kB
VmFlags: rd mr mw me hg
7feb73000000-7feb73001000 rw-p 00000000 00:00 0
Size:                  4 kB
";

    #[test]
    fn reads_the_huge_page_bytes_of_one_mapping() {
        assert_eq!(pmd_mapped_bytes(SMAPS, 0x7feb_6ae0_0000), Some(100 << 20));
        assert_eq!(pmd_mapped_bytes(SMAPS, 0x55d0_c0a0_0000), Some(0));
        // A mapping without the field, and one that is not there.
        assert_eq!(pmd_mapped_bytes(SMAPS, 0x7feb_7300_0000), None);
        assert_eq!(pmd_mapped_bytes(SMAPS, 0x1000), None);
        assert_eq!(pmd_mapped_bytes("", 0x1000), None);
    }

    /// A GGUF v3 header with no metadata and no tensors.
    #[cfg(target_os = "linux")]
    fn empty_gguf() -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_mapped_file_reports_its_huge_pages() {
        let path = std::env::temp_dir().join(format!("qgpt-smaps-{}.gguf", std::process::id()));
        std::fs::write(&path, empty_gguf()).unwrap();
        let f = super::GgufFile::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        // A small file: the map exists and has no 2 MiB pages.
        assert_eq!(f.huge_page_bytes(), Some(0));
        assert_eq!(
            super::GgufFile::from_bytes(empty_gguf())
                .unwrap()
                .huge_page_bytes(),
            None
        );
    }
}
