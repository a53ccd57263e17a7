//! `qgpt convert` (Hugging Face GPT-2 checkpoint → GGUF) and `qgpt quantize` (GGUF → GGUF), with
//! llama.cpp's layout, metadata and type recipes, so the files equal what its converter and
//! quantizer write. Inputs are memory-mapped, output is streamed and atomic.

mod emit;
mod gpt2;
mod hf;
pub mod output;
mod quantize;
mod recipe;
mod vocab;

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;

pub use emit::type_summary;
pub use gpt2::{params as gpt2_params, Gpt2Params};
pub use hf::{Checkpoint, SourceType};
pub use quantize::{quantize_gguf, QuantizeOptions};
pub use recipe::{convert_type, quantize_type, OutType};

use crate::gguf::{layout, GgufWriter, TensorEntry, Value, DEFAULT_ALIGNMENT};
use crate::quant::{GgmlType, QuantError};
use emit::{Data, Job};
use output::AtomicFile;

/// `general.quantization_version` (ggml's `GGML_QNT_VERSION`).
pub const QUANTIZATION_VERSION: u32 = 2;

/// Why a conversion failed. No output file is left behind in any case.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Input { path: PathBuf, reason: String },
    #[error("config.json: {0}")]
    Config(String),
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("unexpected tensor {0}")]
    UnknownTensor(String),
    #[error("missing tensors: {}", .0.join(", "))]
    MissingTensors(Vec<String>),
    #[error("tensor {name} has shape {found:?}, expected {expected:?} from config.json")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    #[error("tensor {name}: row {row} holds {value}, which {ty} cannot store")]
    NotFinite {
        name: String,
        ty: GgmlType,
        row: usize,
        value: f32,
    },
    #[error("tensor {name}: {source}")]
    Quant { name: String, source: QuantError },
    #[error("{0}")]
    Gguf(#[from] crate::gguf::GgufError),
    #[error("{0}")]
    Refused(String),
    #[error("writing the output: {0}")]
    Output(std::io::Error),
}

impl ConvertError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        ConvertError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Report {
    /// Tensors in the file, with their types.
    pub tensors: Vec<TensorEntry>,
    /// File size in bytes.
    pub file_size: u64,
    /// Parameters (elements of every tensor).
    pub params: u64,
}

/// llama.cpp's size label: parameters in K/M/B/T with at least two significant digits.
pub fn size_label(params: u64) -> String {
    let n = params as f64;
    let (scaled, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    let digits = format!("{}", scaled.round() as u64)
        .trim_start_matches('0')
        .len();
    let fix = 2usize.saturating_sub(digits);
    format!("{scaled:.fix$}{suffix}")
}

/// Options of `qgpt convert`.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub outtype: OutType,
    /// `general.name` (default: the checkpoint directory's name).
    pub name: Option<String>,
}

/// Refuses an output path that is one of the inputs, or whose directory does not exist.
fn check_output(out: &Path, inputs: &[&Path]) -> Result<(), ConvertError> {
    if out.is_dir() {
        return Err(ConvertError::Refused(format!(
            "{} is a directory",
            out.display()
        )));
    }
    if let Ok(o) = out.canonicalize() {
        for i in inputs {
            if i.canonicalize().is_ok_and(|i| i == o) {
                return Err(ConvertError::Refused(format!(
                    "the output {} is an input file",
                    out.display()
                )));
            }
        }
    }
    Ok(())
}

fn write_file<'a>(
    out: &Path,
    metadata: &[(String, Value)],
    alignment: u64,
    jobs: Vec<Job<'a>>,
    progress: &ProgressBar,
) -> Result<Report, ConvertError> {
    let entries: Vec<TensorEntry> = jobs.iter().map(|j| j.entry.clone()).collect();
    let layout = layout(metadata, &entries, alignment).map_err(ConvertError::Output)?;
    let file_size = layout.file_size;
    progress.set_length(file_size - layout.header.len() as u64);
    let mut file = AtomicFile::create(out).map_err(|e| ConvertError::io(out, e))?;
    let mut w = GgufWriter::begin(file.writer(), layout).map_err(ConvertError::Output)?;
    emit::write_tensors(&mut w, jobs, progress)?;
    w.finish().map_err(ConvertError::Output)?;
    file.commit().map_err(|e| ConvertError::io(out, e))?;
    let params = entries.iter().map(|e| e.dims.iter().product::<u64>()).sum();
    Ok(Report {
        tensors: entries,
        file_size,
        params,
    })
}

/// Converts the GPT-2 checkpoint in `dir` into the GGUF file `out`.
pub fn convert_hf(
    dir: &Path,
    out: &Path,
    opts: &ConvertOptions,
    progress: &ProgressBar,
) -> Result<Report, ConvertError> {
    let opened = Checkpoint::open(dir)?;
    let ck = &opened;
    let p = gpt2::params(&ck.config)?;
    let mapped = gpt2::map_tensors(ck, &p)?;
    let tied = !mapped.iter().any(|m| m.name == "output.weight");
    let tokenizer = vocab::tokenizer_metadata(dir, &ck.config, p.n_vocab)?;
    let inputs: Vec<&Path> = ck.tensors.iter().map(|t| ck.part_path(t)).collect();
    check_output(out, &inputs)?;

    let jobs: Vec<Job<'_>> = mapped
        .iter()
        .map(|m| {
            let t = &ck.tensors[m.src];
            let entry = TensorEntry {
                name: m.name.clone(),
                dims: m.dims.clone(),
                ty: convert_type(&m.name, &m.dims, opts.outtype, tied),
            };
            let bytes = ck.data(t);
            let ty = ck.source_type(t).expect("checked by map_tensors");
            let row_len = m.dims[0] as usize;
            let fill: emit::FillRows<'_> = if m.transpose {
                // Source [in][out]: output row r is column r.
                let n_out = m.dims[1] as usize;
                Box::new(move |first, vals: &mut [f32]| {
                    let n = vals.len() / row_len;
                    let mut col = vec![0f32; n];
                    for i in 0..row_len {
                        let at = (i * n_out + first) * ty.size();
                        ty.to_f32(&bytes[at..at + n * ty.size()], &mut col);
                        for (k, &v) in col.iter().enumerate() {
                            vals[k * row_len + i] = v;
                        }
                    }
                })
            } else {
                Box::new(move |first, vals: &mut [f32]| {
                    let at = first * row_len * ty.size();
                    ty.to_f32(&bytes[at..at + vals.len() * ty.size()], vals);
                })
            };
            let n_rows = (m.dims[1..].iter().product::<u64>() as usize).max(1);
            let release: emit::Release<'_> = if m.transpose {
                // Every output row reads the whole source: drop it once all rows are written.
                Box::new(move |rows| {
                    if rows.end == n_rows {
                        ck.release(t, 0..bytes.len())
                    }
                })
            } else {
                let row_bytes = bytes.len() / n_rows;
                Box::new(move |rows| ck.release(t, rows.start * row_bytes..rows.end * row_bytes))
            };
            Job {
                entry,
                data: Data::Rows(fill),
                release,
            }
        })
        .collect();

    let params: u64 = jobs
        .iter()
        .map(|j| j.entry.dims.iter().product::<u64>())
        .sum();
    let name = opts.name.clone().unwrap_or_else(|| {
        dir.canonicalize()
            .ok()
            .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "gpt2".to_owned())
    });
    let u32v = |n: usize| Value::U32(n as u32);
    let mut meta = vec![
        (
            "general.architecture".to_owned(),
            Value::String("gpt2".into()),
        ),
        ("general.type".to_owned(), Value::String("model".into())),
        ("general.name".to_owned(), Value::String(name)),
        (
            "general.size_label".to_owned(),
            Value::String(size_label(params)),
        ),
        ("gpt2.block_count".to_owned(), u32v(p.n_layer)),
        ("gpt2.context_length".to_owned(), u32v(p.n_ctx)),
        ("gpt2.embedding_length".to_owned(), u32v(p.n_embd)),
        ("gpt2.feed_forward_length".to_owned(), u32v(p.n_ff)),
        ("gpt2.attention.head_count".to_owned(), u32v(p.n_head)),
        (
            "gpt2.attention.layer_norm_epsilon".to_owned(),
            Value::F32(p.eps),
        ),
        (
            "general.file_type".to_owned(),
            Value::U32(opts.outtype.file_type()),
        ),
        (
            "general.quantization_version".to_owned(),
            Value::U32(QUANTIZATION_VERSION),
        ),
    ];
    meta.extend(tokenizer);
    write_file(out, &meta, DEFAULT_ALIGNMENT, jobs, progress)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_labels_like_llama_cpp() {
        assert_eq!(size_label(124_439_808), "124M");
        assert_eq!(size_label(1_741_568), "1.7M");
        assert_eq!(size_label(3_720_000), "3.7M");
        assert_eq!(size_label(7_241_732_096), "7.2B");
        assert_eq!(size_label(500_000), "500K");
    }
}
