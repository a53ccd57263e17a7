//! Which type each tensor gets: llama.cpp's two sets of rules, written down for the types qgpt
//! produces.
//!
//! - [`convert_type`]: `convert_hf_to_gguf.py --outtype f32|f16|q8_0` — 1-D tensors, norms,
//!   biases and position embeddings stay F32; every other matrix takes the out type; a Q8_0
//!   matrix whose rows are not whole blocks falls back to F16.
//! - [`quantize_type`]: `llama-quantize`'s default recipe — only matrices named `*weight` other
//!   than norms and position embeddings are quantized; the output head (or the token embedding
//!   when it doubles as the head) gets Q6_K in Q4_0/Q4_1 files, or Q8_0 when its rows are not
//!   whole 256-value blocks; `--pure` turns that off; rows that are not whole blocks fall back
//!   (Q6_K → Q8_0, 32-value types → F16). Everything else keeps its type.

use crate::quant::GgmlType;

/// A file type qgpt writes (`general.file_type`, llama.cpp's `llama_ftype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutType {
    /// Everything in F32 (`ALL_F32`).
    F32,
    /// Matrices in F16 (`MOSTLY_F16`).
    F16,
    /// Matrices in Q8_0 (`MOSTLY_Q8_0`).
    #[value(name = "q8_0")]
    Q8_0,
    /// Matrices in Q4_0, the tied embedding/head in Q6_K (`MOSTLY_Q4_0`).
    #[value(name = "q4_0")]
    Q4_0,
    /// Matrices in Q4_1, the tied embedding/head in Q6_K (`MOSTLY_Q4_1`).
    #[value(name = "q4_1")]
    Q4_1,
}

impl OutType {
    /// `general.file_type`.
    pub fn file_type(self) -> u32 {
        match self {
            OutType::F32 => 0,
            OutType::F16 => 1,
            OutType::Q4_0 => 2,
            OutType::Q4_1 => 3,
            OutType::Q8_0 => 7,
        }
    }

    /// The type most matrices get.
    pub fn base(self) -> GgmlType {
        match self {
            OutType::F32 => GgmlType::F32,
            OutType::F16 => GgmlType::F16,
            OutType::Q8_0 => GgmlType::Q8_0,
            OutType::Q4_0 => GgmlType::Q4_0,
            OutType::Q4_1 => GgmlType::Q4_1,
        }
    }

    /// Parses llama-quantize's names (`Q8_0`, `q4_0`, `F16`...), case-insensitively.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "f32" => OutType::F32,
            "f16" => OutType::F16,
            "q8_0" => OutType::Q8_0,
            "q4_0" => OutType::Q4_0,
            "q4_1" => OutType::Q4_1,
            _ => return None,
        })
    }

    /// Upper-case name, as llama.cpp prints it.
    pub fn name(self) -> &'static str {
        match self {
            OutType::F32 => "F32",
            OutType::F16 => "F16",
            OutType::Q8_0 => "Q8_0",
            OutType::Q4_0 => "Q4_0",
            OutType::Q4_1 => "Q4_1",
        }
    }
}

impl std::fmt::Display for OutType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn is_norm(name: &str) -> bool {
    name.contains("_norm.weight")
}

/// The type `convert_hf_to_gguf.py` gives tensor `name` of ggml shape `dims` (F32, F16 and Q8_0
/// out types; Q4_0/Q4_1 use [`quantize_type`] on the F32 conversion, `tied` when the checkpoint
/// has no separate output head).
pub fn convert_type(name: &str, dims: &[u64], out: OutType, tied: bool) -> GgmlType {
    if dims.len() <= 1
        || is_norm(name)
        || name == "position_embd.weight"
        || !name.ends_with(".weight")
    {
        return GgmlType::F32;
    }
    match out {
        OutType::Q8_0 if !dims[0].is_multiple_of(32) => GgmlType::F16,
        OutType::Q4_0 | OutType::Q4_1 => quantize_type(name, dims, GgmlType::F32, out, false, tied),
        _ => out.base(),
    }
}

/// ggml's `ggml_n_dims`: dimensions up to the last one longer than 1 (at least 1).
fn n_dims(dims: &[u64]) -> usize {
    dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1)
}

/// True when llama-quantize may change the type of tensor `name`.
fn allows_quantization(name: &str, dims: &[u64]) -> bool {
    n_dims(dims) >= 2
        && name.ends_with("weight")
        && !is_norm(name)
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// The type llama-quantize's default recipe gives tensor `name` (currently of type `src`) in an
/// `out` file; `tied` is true when the file has no `output.weight` (the token embedding is the
/// head).
pub fn quantize_type(
    name: &str,
    dims: &[u64],
    src: GgmlType,
    out: OutType,
    pure: bool,
    tied: bool,
) -> GgmlType {
    if !allows_quantization(name, dims) {
        return src;
    }
    let base = out.base();
    if matches!(out, OutType::F32 | OutType::F16) {
        return base;
    }
    let mut ty = base;
    let is_head = name == "output.weight" || (tied && name == "token_embd.weight");
    if !pure && is_head {
        ty = if !dims[0].is_multiple_of(base.block_size() as u64) {
            GgmlType::Q8_0
        } else if base != GgmlType::Q8_0 {
            GgmlType::Q6_K
        } else {
            base
        };
    }
    fallback(dims[0], ty)
}

/// llama-quantize's answer to rows that are not whole blocks of `ty`.
fn fallback(ncols: u64, ty: GgmlType) -> GgmlType {
    if ncols.is_multiple_of(ty.block_size() as u64) {
        return ty;
    }
    let smaller = if ty == GgmlType::Q6_K {
        GgmlType::Q8_0
    } else {
        ty
    };
    if ncols.is_multiple_of(smaller.block_size() as u64) {
        smaller
    } else {
        GgmlType::F16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convert_keeps_small_tensors_f32() {
        let out = OutType::Q8_0;
        assert_eq!(
            convert_type("blk.0.attn_qkv.bias", &[768], out, true),
            GgmlType::F32
        );
        assert_eq!(
            convert_type("blk.0.attn_norm.weight", &[256], out, true),
            GgmlType::F32
        );
        assert_eq!(
            convert_type("position_embd.weight", &[256, 128], out, true),
            GgmlType::F32
        );
        assert_eq!(
            convert_type("token_embd.weight", &[256, 512], out, true),
            GgmlType::Q8_0
        );
        assert_eq!(
            convert_type("blk.0.ffn_up.weight", &[48, 64], out, true),
            GgmlType::F16
        );
        assert_eq!(
            convert_type("blk.0.ffn_up.weight", &[48, 64], OutType::F16, true),
            GgmlType::F16
        );
    }

    #[test]
    fn quantize_recipe() {
        let q = |name, dims: &[u64], out, pure, tied| {
            quantize_type(name, dims, GgmlType::F32, out, pure, tied)
        };
        assert_eq!(
            q("token_embd.weight", &[256, 512], OutType::Q4_0, false, true),
            GgmlType::Q6_K
        );
        assert_eq!(
            q("token_embd.weight", &[256, 512], OutType::Q4_0, true, true),
            GgmlType::Q4_0
        );
        assert_eq!(
            q(
                "token_embd.weight",
                &[256, 512],
                OutType::Q4_1,
                false,
                false
            ),
            GgmlType::Q4_1
        );
        assert_eq!(
            q("output.weight", &[768, 50257], OutType::Q4_1, false, false),
            GgmlType::Q6_K
        );
        assert_eq!(
            q("token_embd.weight", &[64, 512], OutType::Q4_0, false, true),
            GgmlType::Q8_0
        );
        assert_eq!(
            q("token_embd.weight", &[256, 512], OutType::Q8_0, false, true),
            GgmlType::Q8_0
        );
        assert_eq!(
            q("blk.0.ffn_up.weight", &[48, 64], OutType::Q4_0, false, true),
            GgmlType::F16
        );
        assert_eq!(
            q(
                "position_embd.weight",
                &[256, 128],
                OutType::Q4_0,
                false,
                true
            ),
            GgmlType::F32
        );
        assert_eq!(
            q("blk.1.ffn_norm.weight", &[256], OutType::Q4_0, false, true),
            GgmlType::F32
        );
        assert_eq!(
            q(
                "blk.1.ffn_up.weight",
                &[256, 1024],
                OutType::F16,
                false,
                true
            ),
            GgmlType::F16
        );
        assert_eq!(
            quantize_type(
                "blk.0.ffn_up.bias",
                &[1024],
                GgmlType::F16,
                OutType::Q4_0,
                false,
                true
            ),
            GgmlType::F16
        );
    }
}
