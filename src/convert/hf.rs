//! A Hugging Face checkpoint directory: `config.json` and safetensors weights — one file, or the
//! shards that `model.safetensors.index.json` lists — memory-mapped, never read whole.
//!
//! Tensors come in llama.cpp's converter order: shards in name order, tensors of each shard in
//! name order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::ConvertError;

/// Element types of source tensors qgpt converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceType {
    F32,
    F16,
    BF16,
}

impl SourceType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            SourceType::F32 => 4,
            SourceType::F16 | SourceType::BF16 => 2,
        }
    }

    /// Converts little-endian elements to f32 (exact for every source type).
    pub fn to_f32(self, bytes: &[u8], out: &mut [f32]) {
        match self {
            SourceType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            SourceType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            SourceType::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16);
                }
            }
        }
    }
}

/// One tensor of the checkpoint.
#[derive(Debug, Clone)]
pub struct SourceTensor {
    /// Name in the checkpoint, e.g. `transformer.h.0.attn.c_attn.weight`.
    pub name: String,
    /// Element type, or the safetensors dtype qgpt does not convert (refused only if the tensor
    /// is used: old checkpoints store attention-mask buffers as U8 or BOOL).
    pub ty: Result<SourceType, String>,
    /// Shape, outermost first (PyTorch order).
    pub shape: Vec<usize>,
    part: usize,
    start: usize,
    end: usize,
}

struct Part {
    path: PathBuf,
    map: Mmap,
}

/// An opened checkpoint.
pub struct Checkpoint {
    /// The directory.
    pub dir: PathBuf,
    /// `config.json`, parsed.
    pub config: serde_json::Map<String, serde_json::Value>,
    parts: Vec<Part>,
    /// Every tensor, in converter order.
    pub tensors: Vec<SourceTensor>,
}

/// Reads and parses a JSON file of the checkpoint.
pub fn read_json(path: &Path) -> Result<serde_json::Value, ConvertError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConvertError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ConvertError::Input {
        path: path.to_owned(),
        reason: format!("invalid JSON: {e}"),
    })
}

fn input(path: &Path, reason: impl Into<String>) -> ConvertError {
    ConvertError::Input {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The shard files, in order, and the tensor names the index promises (empty without an index).
fn part_names(dir: &Path) -> Result<(Vec<String>, BTreeSet<String>), ConvertError> {
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json = read_json(&index)?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| input(&index, "no \"weight_map\" object"))?;
        let mut parts = BTreeSet::new();
        for (name, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| input(&index, format!("weight_map[{name:?}] is not a string")))?;
            if file.contains('/') || file.contains('\\') || file == ".." {
                return Err(input(&index, format!("shard {file:?} is not a file name")));
            }
            parts.insert(file.to_owned());
        }
        return Ok((parts.into_iter().collect(), map.keys().cloned().collect()));
    }
    let mut parts = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| ConvertError::io(dir, e))?;
    for entry in entries {
        let name = entry.map_err(|e| ConvertError::io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("model") && name.ends_with(".safetensors") {
            parts.push(name.into_owned());
        }
    }
    parts.sort();
    if parts.is_empty() {
        let reason = if dir.join("pytorch_model.bin").exists() {
            "only pytorch_model.bin found: qgpt reads safetensors checkpoints (pickled PyTorch files \
             can run code when loaded); save the model with safe_serialization=True"
        } else {
            "no model.safetensors (or model.safetensors.index.json) in the directory"
        };
        return Err(input(dir, reason));
    }
    Ok((parts, BTreeSet::new()))
}

fn source_type(dtype: Dtype) -> Result<SourceType, String> {
    match dtype {
        Dtype::F32 => Ok(SourceType::F32),
        Dtype::F16 => Ok(SourceType::F16),
        Dtype::BF16 => Ok(SourceType::BF16),
        other => Err(format!("{other:?}")),
    }
}

impl Checkpoint {
    /// Opens `dir`: parses config.json, maps every shard and validates its header.
    pub fn open(dir: &Path) -> Result<Self, ConvertError> {
        if !dir.is_dir() {
            return Err(input(dir, "not a directory"));
        }
        let config_path = dir.join("config.json");
        let config = match read_json(&config_path)? {
            serde_json::Value::Object(m) => m,
            _ => return Err(input(&config_path, "not a JSON object")),
        };
        let (names, promised) = part_names(dir)?;
        let mut parts = Vec::with_capacity(names.len());
        let mut tensors = Vec::new();
        let mut seen = BTreeMap::new();
        for (i, name) in names.iter().enumerate() {
            let path = dir.join(name);
            let file = File::open(&path).map_err(|e| ConvertError::io(&path, e))?;
            // SAFETY: the file is mapped read-only and only read through the map; like any tool
            // reading a file, a concurrent writer could change what it sees (not memory safety:
            // the bytes are plain data, parsed with bounds checks).
            let map = unsafe { Mmap::map(&file) }.map_err(|e| ConvertError::io(&path, e))?;
            let (header, meta) = SafeTensors::read_metadata(&map)
                .map_err(|e| input(&path, format!("invalid safetensors file: {e}")))?;
            let base = 8 + header;
            let mut here: Vec<(String, &safetensors::tensor::TensorInfo)> =
                meta.tensors().into_iter().collect();
            here.sort_by(|a, b| a.0.cmp(&b.0));
            for (tname, info) in here {
                if let Some(other) = seen.insert(tname.clone(), name.clone()) {
                    return Err(input(
                        dir,
                        format!("tensor {tname} is in both {other} and {name}"),
                    ));
                }
                tensors.push(SourceTensor {
                    ty: source_type(info.dtype),
                    name: tname,
                    shape: info.shape.clone(),
                    part: i,
                    start: base + info.data_offsets.0,
                    end: base + info.data_offsets.1,
                });
            }
            parts.push(Part { path, map });
        }
        if !promised.is_empty() {
            let found: BTreeSet<String> = seen.into_keys().collect();
            let missing: Vec<_> = promised.difference(&found).cloned().collect();
            let extra: Vec<_> = found.difference(&promised).cloned().collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(input(
                    &dir.join("model.safetensors.index.json"),
                    format!("the index and the shards disagree: missing {missing:?}, not indexed {extra:?}"),
                ));
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            config,
            parts,
            tensors,
        })
    }

    /// The raw little-endian bytes of `t`.
    pub fn data(&self, t: &SourceTensor) -> &[u8] {
        &self.parts[t.part].map[t.start..t.end]
    }

    /// Drops the resident pages of bytes `range` of `t` (they have been written out).
    pub fn release(&self, t: &SourceTensor, range: std::ops::Range<usize>) {
        let len = range
            .len()
            .min((t.end - t.start).saturating_sub(range.start));
        crate::memory::release_mapped(&self.parts[t.part].map, t.start + range.start, len);
    }

    /// The element type of `t`, or an error naming its dtype.
    pub fn source_type(&self, t: &SourceTensor) -> Result<SourceType, ConvertError> {
        t.ty.clone().map_err(|dtype| {
            input(
                self.part_path(t),
                format!(
                    "tensor {} has dtype {dtype}: qgpt converts F32, F16 and BF16 weights",
                    t.name
                ),
            )
        })
    }

    /// The shard holding `t`, for messages.
    pub fn part_path(&self, t: &SourceTensor) -> &Path {
        &self.parts[t.part].path
    }
}
