//! Streaming tensor data into a GGUF file: rows are produced as f32 and quantized in parallel
//! (rayon), a bounded chunk at a time, so memory stays a few MiB whatever the model size.

use std::io::Write;
use std::ops::Range;

use indicatif::ProgressBar;
use rayon::prelude::*;

use super::ConvertError;
use crate::gguf::{GgufWriter, TensorEntry};
use crate::quant::{quantize_row, GgmlType};

/// Values (f32) per chunk handed to the thread pool: 4 MiB of f32, plus its output.
const CHUNK_VALUES: usize = 1 << 20;
/// Values one task fills and quantizes.
const PIECE_VALUES: usize = 1 << 15;

/// Fills `out` with whole rows starting at row `first`, as f32.
pub type FillRows<'a> = Box<dyn Fn(usize, &mut [f32]) + Sync + 'a>;

/// Where a tensor's data comes from.
pub enum Data<'a> {
    /// Bytes already in the output type, written as they are.
    Bytes(&'a [u8]),
    /// Rows produced as f32, then converted to the entry's type.
    Rows(FillRows<'a>),
}

/// Called with each range of rows written, so the source's pages can be dropped.
pub type Release<'a> = Box<dyn Fn(Range<usize>) + 'a>;

/// One tensor to write: its entry (as in the layout), its data, and what to do with rows once
/// written.
pub struct Job<'a> {
    pub entry: TensorEntry,
    pub data: Data<'a>,
    pub release: Release<'a>,
}

/// Writes every job's data, in order, then ends each tensor.
pub fn write_tensors<'a, W: Write>(
    w: &mut GgufWriter<W>,
    jobs: impl IntoIterator<Item = Job<'a>>,
    progress: &ProgressBar,
) -> Result<(), ConvertError> {
    let mut buf = Vec::new();
    for job in jobs {
        progress.set_message(job.entry.name.clone());
        match &job.data {
            Data::Bytes(bytes) => {
                let n_rows = (job.entry.n_rows() as usize).max(1);
                let row_bytes = bytes.len() / n_rows;
                let chunk_rows = (4 * CHUNK_VALUES / row_bytes.max(1)).max(1);
                for (i, piece) in bytes.chunks(chunk_rows * row_bytes.max(1)).enumerate() {
                    w.write(piece).map_err(ConvertError::Output)?;
                    progress.inc(piece.len() as u64);
                    let first = i * chunk_rows;
                    (job.release)(first..(first + chunk_rows).min(n_rows));
                }
            }
            Data::Rows(fill) => write_rows(w, &job, fill, &mut buf, progress)?,
        }
        w.end_tensor().map_err(ConvertError::Output)?;
    }
    Ok(())
}

fn write_rows<W: Write>(
    w: &mut GgufWriter<W>,
    job: &Job<'_>,
    fill: &FillRows<'_>,
    buf: &mut Vec<u8>,
    progress: &ProgressBar,
) -> Result<(), ConvertError> {
    let e = &job.entry;
    let row_len = e.row_len() as usize;
    let n_rows = e.n_rows() as usize;
    if row_len == 0 || n_rows == 0 {
        return Ok(()); // no data (both readers refuse zero dimensions anyway)
    }
    let row_bytes =
        e.ty.row_bytes(row_len as u64)
            .expect("the layout checked whole blocks") as usize;
    let chunk_rows = (CHUNK_VALUES / row_len).clamp(1, n_rows.max(1));
    let piece_rows = (PIECE_VALUES / row_len).max(1);
    let mut first = 0;
    while first < n_rows {
        let rows = chunk_rows.min(n_rows - first);
        buf.clear();
        buf.resize(rows * row_bytes, 0);
        buf.par_chunks_mut(piece_rows * row_bytes)
            .enumerate()
            .try_for_each_init(Vec::new, |vals: &mut Vec<f32>, (k, out)| {
                let n = out.len() / row_bytes;
                let row0 = first + k * piece_rows;
                vals.clear();
                vals.resize(n * row_len, 0.0);
                fill(row0, vals);
                let fits = |v: &f32| match e.ty {
                    GgmlType::F16 => half::f16::from_f32(*v).is_finite(),
                    _ => v.is_finite(),
                };
                if let Some(i) = vals.iter().position(|v| !fits(v)) {
                    return Err(ConvertError::NotFinite {
                        name: e.name.clone(),
                        ty: e.ty,
                        row: row0 + i / row_len,
                        value: vals[i],
                    });
                }
                for (src, dst) in vals
                    .chunks_exact(row_len)
                    .zip(out.chunks_exact_mut(row_bytes))
                {
                    quantize_row(e.ty, src, dst).map_err(|q| ConvertError::Quant {
                        name: e.name.clone(),
                        source: q,
                    })?;
                }
                Ok(())
            })?;
        w.write(buf).map_err(ConvertError::Output)?;
        progress.inc(buf.len() as u64);
        (job.release)(first..first + rows);
        first += rows;
    }
    Ok(())
}

/// A short `F32 ×5, Q8_0 ×24` summary of the types in `entries`.
pub fn type_summary(entries: &[TensorEntry]) -> String {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for e in entries {
        match counts.iter_mut().find(|c| c.0 == e.ty) {
            Some(c) => c.1 += 1,
            None => counts.push((e.ty, 1)),
        }
    }
    counts
        .iter()
        .map(|(t, n)| format!("{t} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ")
}
