//! GGUF → GGUF requantization with llama-quantize's default recipe: the same tensor order
//! (non-layer tensors first, then layer by layer, names sorted within each), the same metadata
//! (copied, then `general.quantization_version` and `general.file_type` set last), the same
//! types per tensor ([`super::quantize_type`]).

use std::path::Path;

use indicatif::ProgressBar;

use super::emit::{Data, FillRows, Job};
use super::{check_output, quantize_type, write_file, ConvertError, OutType, Report};
use crate::gguf::{GgufFile, TensorEntry, Value, DEFAULT_ALIGNMENT};
use crate::quant::{dequantize_row, GgmlType};

/// Options of `qgpt quantize`.
#[derive(Debug, Clone, Copy)]
pub struct QuantizeOptions {
    pub out: OutType,
    /// Quantize every matrix to `out`'s type (no Q6_K head, llama-quantize's `--pure`).
    pub pure: bool,
    /// Allow re-quantizing tensors that are already quantized (loses accuracy twice).
    pub allow_requantize: bool,
}

/// The layer of `blk.N.*` names, −1 for the others (llama.cpp's `sscanf("blk.%d.")`).
fn layer(name: &str) -> i64 {
    name.strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(-1)
}

fn is_float(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
}

/// Requantizes `input` into `output`.
pub fn quantize_gguf(
    input: &Path,
    output: &Path,
    opts: QuantizeOptions,
    progress: &ProgressBar,
) -> Result<Report, ConvertError> {
    check_output(output, &[input])?;
    let file = GgufFile::open(input)?;
    let f = &file;
    let tied = f.tensor("output.weight").is_none();
    let mut order: Vec<usize> = (0..f.tensors().len()).collect();
    order.sort_by(|&a, &b| {
        let (a, b) = (&f.tensors()[a].name, &f.tensors()[b].name);
        (layer(a), a).cmp(&(layer(b), b))
    });
    let mut jobs = Vec::with_capacity(order.len());
    for i in order {
        let info = &f.tensors()[i];
        let ty = quantize_type(&info.name, &info.dims, info.ty, opts.out, opts.pure, tied);
        let entry = TensorEntry {
            name: info.name.clone(),
            dims: info.dims.clone(),
            ty,
        };
        let view = f.view(info);
        let data = if ty == info.ty {
            Data::Bytes(view.data)
        } else {
            if !is_float(info.ty) && !opts.allow_requantize {
                return Err(ConvertError::Refused(format!(
                    "tensor {} is already {}: re-quantizing it to {ty} loses accuracy twice; \
                     start from an F32/F16 file, or pass --allow-requantize",
                    info.name, info.ty
                )));
            }
            if !info.ty.is_supported() {
                return Err(ConvertError::Refused(format!(
                    "tensor {} is {}, which qgpt cannot read",
                    info.name, info.ty
                )));
            }
            let src_ty = info.ty;
            let row_len = info.row_len() as usize;
            let fill: FillRows<'_> = Box::new(move |first, vals: &mut [f32]| {
                for (k, row) in vals.chunks_exact_mut(row_len).enumerate() {
                    dequantize_row(src_ty, view.row(first + k), row)
                        .expect("row sizes were validated when the file was opened");
                }
            });
            Data::Rows(fill)
        };
        let row_bytes = info.n_bytes as usize / (info.n_rows() as usize).max(1);
        jobs.push(Job {
            entry,
            data,
            release: Box::new(move |rows| {
                f.release(info, rows.start * row_bytes..rows.end * row_bytes)
            }),
        });
    }
    let mut meta: Vec<(String, Value)> = f
        .metadata()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "general.quantization_version"
                    | "general.file_type"
                    | "split.no"
                    | "split.count"
                    | "split.tensors.count"
            )
        })
        .cloned()
        .collect();
    meta.push((
        "general.quantization_version".to_owned(),
        Value::U32(super::QUANTIZATION_VERSION),
    ));
    meta.push((
        "general.file_type".to_owned(),
        Value::U32(opts.out.file_type()),
    ));
    let alignment = if f.get("general.alignment").is_some() {
        f.alignment()
    } else {
        DEFAULT_ALIGNMENT
    };
    write_file(output, &meta, alignment, jobs, progress)
}

#[cfg(test)]
mod tests {
    use super::layer;

    #[test]
    fn layers_order_like_llama_cpp() {
        assert_eq!(layer("blk.10.ffn_up.weight"), 10);
        assert_eq!(layer("token_embd.weight"), -1);
        assert_eq!(layer("blk.x.y"), -1);
    }
}
