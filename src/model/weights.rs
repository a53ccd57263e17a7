//! Typed weights of both architectures. Matrices stay in the GGUF map (a name and a byte range); only the
//! one-dimensional norm and bias vectors, a few KiB per layer, are decoded to f32 at load.

use super::{Arch, ModelConfig, ModelError};
use crate::gguf::{format_shape, GgufFile, TensorView};
use crate::quant::{dequantize_row, GgmlType};

/// A 2-D weight matrix in its on-disk block format: `n_out` rows of `n_in` values.
#[derive(Debug, Clone)]
pub struct Matrix {
    /// GGUF tensor name.
    pub name: String,
    /// Block format.
    pub ty: GgmlType,
    /// Row length (ggml `ne[0]`).
    pub n_in: usize,
    /// Number of rows (ggml `ne[1]`).
    pub n_out: usize,
    offset: usize,
    row_bytes: usize,
}

impl Matrix {
    /// A matrix of `n_out` rows of `n_in` values of type `ty` at byte `offset` of the file.
    /// Callers guarantee that the bytes exist (model loading checks this; tests build them).
    pub(crate) fn at(name: &str, ty: GgmlType, n_in: usize, n_out: usize, offset: usize) -> Self {
        let row_bytes = ty.row_bytes(n_in as u64).expect("whole blocks") as usize;
        Self {
            name: name.into(),
            ty,
            n_in,
            n_out,
            offset,
            row_bytes,
        }
    }

    /// The bytes of the whole matrix within `file`.
    pub fn bytes<'a>(&self, file: &'a [u8]) -> &'a [u8] {
        &file[self.offset..self.offset + self.row_bytes * self.n_out]
    }

    /// The bytes of row `r`.
    pub fn row<'a>(&self, file: &'a [u8], r: usize) -> &'a [u8] {
        let start = self.offset + r * self.row_bytes;
        &file[start..start + self.row_bytes]
    }

    /// The bytes of rows `r..r + n`, which follow each other.
    pub fn rows<'a>(&self, file: &'a [u8], r: usize, n: usize) -> &'a [u8] {
        let start = self.offset + r * self.row_bytes;
        &file[start..start + n * self.row_bytes]
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_bytes
    }

    /// Dequantizes row `r` into `out` (`out.len() == n_in`).
    pub fn dequantize_row(&self, file: &[u8], r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(file, r), out)
            .expect("matrix types and row lengths are checked at load");
    }
}

/// A linear layer: `y = W x + b`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight.
    pub w: Matrix,
    /// Bias, `w.n_out` values (GPT-2 always; LLaMA-family files rarely).
    pub b: Option<Vec<f32>>,
}

/// A norm's scale, and shift for LayerNorm (RMSNorm has none).
#[derive(Debug, Clone)]
pub struct Norm {
    /// Scale.
    pub w: Vec<f32>,
    /// Shift: `Some` for LayerNorm (GPT-2), `None` for RMSNorm (LLaMA).
    pub b: Option<Vec<f32>>,
}

/// The query/key/value projections.
#[derive(Debug, Clone)]
pub enum Qkv {
    /// One matrix `n_embd → 3·n_embd` whose output rows hold q, k, v side by side (GPT-2).
    Fused(Linear),
    /// Three matrices: `n_embd → n_embd` for q, `n_embd → kv_dim` for k and v (LLaMA).
    Split {
        /// Queries.
        q: Linear,
        /// Keys.
        k: Linear,
        /// Values.
        v: Linear,
    },
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Norm before attention.
    pub attn_norm: Norm,
    /// Query, key and value projections.
    pub attn_qkv: Qkv,
    /// Attention output projection, `n_embd → n_embd`.
    pub attn_output: Linear,
    /// Norm before the MLP.
    pub ffn_norm: Norm,
    /// MLP gate projection, `n_embd → n_ff` (SwiGLU: `silu(gate) · up`); GPT-2 has none.
    pub ffn_gate: Option<Linear>,
    /// MLP up projection, `n_embd → n_ff`.
    pub ffn_up: Linear,
    /// MLP down projection, `n_ff → n_embd`.
    pub ffn_down: Linear,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embeddings, `n_vocab` rows of `n_embd`.
    pub token_embd: Matrix,
    /// Learned position embeddings, `n_ctx` rows of `n_embd` (GPT-2; LLaMA rotates instead).
    pub position_embd: Option<Matrix>,
    /// Transformer blocks.
    pub blocks: Vec<Block>,
    /// Final norm.
    pub output_norm: Norm,
    /// Output head, `n_vocab` rows of `n_embd`: `output.weight`, or `token_embd.weight` when tied.
    pub output: Matrix,
    /// True when the head is tied to the token embeddings.
    pub tied_output: bool,
}

impl Weights {
    /// Finds, type-checks and shape-checks every tensor the architecture needs.
    pub fn load(file: &GgufFile, cfg: &ModelConfig) -> Result<Self, ModelError> {
        let (e, f, v, kv) = (cfg.n_embd, cfg.n_ff, cfg.n_vocab, cfg.kv_dim());
        let gpt2 = cfg.arch == Arch::Gpt2;
        if !gpt2 && file.tensor("rope_freqs.weight").is_some() {
            return Err(ModelError::Hyperparameter {
                key: "rope_freqs.weight".into(),
                reason: "per-dimension rope frequency factors (Llama 3.1 style) are not supported"
                    .into(),
            });
        }
        let lin = |name: &str, n_in: usize, n_out: usize| -> Result<Linear, ModelError> {
            if gpt2 {
                linear(file, name, n_in, n_out)
            } else {
                linear_opt_bias(file, name, n_in, n_out)
            }
        };
        let nrm = |name: &str| -> Result<Norm, ModelError> {
            if gpt2 {
                norm(file, name, e)
            } else {
                rms_norm(file, name, e)
            }
        };
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let attn_qkv = if gpt2 {
                Qkv::Fused(lin(&format!("{p}.attn_qkv"), e, 3 * e)?)
            } else {
                Qkv::Split {
                    q: lin(&format!("{p}.attn_q"), e, e)?,
                    k: lin(&format!("{p}.attn_k"), e, kv)?,
                    v: lin(&format!("{p}.attn_v"), e, kv)?,
                }
            };
            blocks.push(Block {
                attn_norm: nrm(&format!("{p}.attn_norm"))?,
                attn_qkv,
                attn_output: lin(&format!("{p}.attn_output"), e, e)?,
                ffn_norm: nrm(&format!("{p}.ffn_norm"))?,
                ffn_gate: if gpt2 {
                    None
                } else {
                    Some(lin(&format!("{p}.ffn_gate"), e, f)?)
                },
                ffn_up: lin(&format!("{p}.ffn_up"), e, f)?,
                ffn_down: lin(&format!("{p}.ffn_down"), f, e)?,
            });
        }
        let token_embd = matrix(file, "token_embd.weight", e, v)?;
        let position_embd = if gpt2 {
            Some(matrix(file, "position_embd.weight", e, cfg.n_ctx)?)
        } else {
            None
        };
        let (output, tied_output) = match file.tensor("output.weight") {
            Some(_) => (matrix(file, "output.weight", e, v)?, false),
            None => (token_embd.clone(), true),
        };
        Ok(Self {
            token_embd,
            position_embd,
            blocks,
            output_norm: nrm("output_norm")?,
            output,
            tied_output,
        })
    }
}

fn require<'a>(file: &'a GgufFile, name: &str) -> Result<TensorView<'a>, ModelError> {
    file.tensor(name)
        .ok_or_else(|| ModelError::MissingTensor { name: name.into() })
}

fn check_shape(t: &TensorView<'_>, expected: &[u64]) -> Result<(), ModelError> {
    if t.info.dims != expected {
        return Err(ModelError::Shape {
            name: t.info.name.clone(),
            expected: format_shape(expected),
            found: t.info.shape_string(),
        });
    }
    Ok(())
}

fn matrix(file: &GgufFile, name: &str, n_in: usize, n_out: usize) -> Result<Matrix, ModelError> {
    let t = require(file, name)?;
    check_shape(&t, &[n_in as u64, n_out as u64])?;
    if !t.info.ty.is_supported() {
        return Err(ModelError::UnsupportedType {
            name: name.into(),
            ty: t.info.ty,
        });
    }
    Ok(Matrix {
        name: name.into(),
        ty: t.info.ty,
        n_in,
        n_out,
        offset: t.info.file_offset as usize,
        row_bytes: t.info.n_bytes as usize / n_out,
    })
}

fn vector(file: &GgufFile, name: &str, n: usize) -> Result<Vec<f32>, ModelError> {
    let t = require(file, name)?;
    check_shape(&t, &[n as u64])?;
    if !matches!(t.info.ty, GgmlType::F32 | GgmlType::F16) {
        return Err(ModelError::WrongType {
            name: name.into(),
            ty: t.info.ty,
            expected: "F32 or F16",
        });
    }
    let mut out = vec![0f32; n];
    dequantize_row(t.info.ty, t.data, &mut out).expect("shape and type checked above");
    Ok(out)
}

fn linear(file: &GgufFile, prefix: &str, n_in: usize, n_out: usize) -> Result<Linear, ModelError> {
    Ok(Linear {
        w: matrix(file, &format!("{prefix}.weight"), n_in, n_out)?,
        b: Some(vector(file, &format!("{prefix}.bias"), n_out)?),
    })
}

/// A linear layer whose bias is used when the file has one.
fn linear_opt_bias(
    file: &GgufFile,
    prefix: &str,
    n_in: usize,
    n_out: usize,
) -> Result<Linear, ModelError> {
    let bias = format!("{prefix}.bias");
    Ok(Linear {
        w: matrix(file, &format!("{prefix}.weight"), n_in, n_out)?,
        b: match file.tensor(&bias) {
            Some(_) => Some(vector(file, &bias, n_out)?),
            None => None,
        },
    })
}

fn norm(file: &GgufFile, prefix: &str, n: usize) -> Result<Norm, ModelError> {
    Ok(Norm {
        w: vector(file, &format!("{prefix}.weight"), n)?,
        b: Some(vector(file, &format!("{prefix}.bias"), n)?),
    })
}

fn rms_norm(file: &GgufFile, prefix: &str, n: usize) -> Result<Norm, ModelError> {
    Ok(Norm {
        w: vector(file, &format!("{prefix}.weight"), n)?,
        b: None,
    })
}
