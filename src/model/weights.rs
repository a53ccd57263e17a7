//! Typed GPT-2 weights. Matrices stay in the GGUF map (a name and a byte range); only the
//! one-dimensional norm and bias vectors, a few KiB per layer, are decoded to f32 at load.

use super::{Gpt2Config, ModelError};
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
    /// Bias, `w.n_out` values.
    pub b: Vec<f32>,
}

/// LayerNorm scale and shift.
#[derive(Debug, Clone)]
pub struct Norm {
    /// Scale.
    pub w: Vec<f32>,
    /// Shift.
    pub b: Vec<f32>,
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    /// LayerNorm before attention.
    pub attn_norm: Norm,
    /// Fused query/key/value projection, `n_embd → 3·n_embd`.
    pub attn_qkv: Linear,
    /// Attention output projection, `n_embd → n_embd`.
    pub attn_output: Linear,
    /// LayerNorm before the MLP.
    pub ffn_norm: Norm,
    /// MLP up projection, `n_embd → n_ff`.
    pub ffn_up: Linear,
    /// MLP down projection, `n_ff → n_embd`.
    pub ffn_down: Linear,
}

/// All GPT-2 weights.
#[derive(Debug, Clone)]
pub struct Gpt2Weights {
    /// Token embeddings, `n_vocab` rows of `n_embd`.
    pub token_embd: Matrix,
    /// Position embeddings, `n_ctx` rows of `n_embd`.
    pub position_embd: Matrix,
    /// Transformer blocks.
    pub blocks: Vec<Block>,
    /// Final LayerNorm.
    pub output_norm: Norm,
    /// Output head, `n_vocab` rows of `n_embd`: `output.weight`, or `token_embd.weight` when tied.
    pub output: Matrix,
    /// True when the head is tied to the token embeddings.
    pub tied_output: bool,
}

impl Gpt2Weights {
    /// Finds, type-checks and shape-checks every tensor GPT-2 needs.
    pub fn load(file: &GgufFile, cfg: &Gpt2Config) -> Result<Self, ModelError> {
        let (e, f, v) = (cfg.n_embd, cfg.n_ff, cfg.n_vocab);
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: norm(file, &format!("{p}.attn_norm"), e)?,
                attn_qkv: linear(file, &format!("{p}.attn_qkv"), e, 3 * e)?,
                attn_output: linear(file, &format!("{p}.attn_output"), e, e)?,
                ffn_norm: norm(file, &format!("{p}.ffn_norm"), e)?,
                ffn_up: linear(file, &format!("{p}.ffn_up"), e, f)?,
                ffn_down: linear(file, &format!("{p}.ffn_down"), f, e)?,
            });
        }
        let token_embd = matrix(file, "token_embd.weight", e, v)?;
        let position_embd = matrix(file, "position_embd.weight", e, cfg.n_ctx)?;
        let (output, tied_output) = match file.tensor("output.weight") {
            Some(_) => (matrix(file, "output.weight", e, v)?, false),
            None => (token_embd.clone(), true),
        };
        Ok(Self {
            token_embd,
            position_embd,
            blocks,
            output_norm: norm(file, "output_norm", e)?,
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
        b: vector(file, &format!("{prefix}.bias"), n_out)?,
    })
}

fn norm(file: &GgufFile, prefix: &str, n: usize) -> Result<Norm, ModelError> {
    Ok(Norm {
        w: vector(file, &format!("{prefix}.weight"), n)?,
        b: vector(file, &format!("{prefix}.bias"), n)?,
    })
}
