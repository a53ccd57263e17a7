//! GPT-2 hyperparameters read from GGUF metadata and checked against each other.

use super::ModelError;
use crate::gguf::GgufFile;

/// Upper bounds on what a file may claim; they keep scratch and KV sizes sane on hostile input.
const MAX_LAYERS: u64 = 1024;
const MAX_EMBD: u64 = 1 << 16;
const MAX_CTX: u64 = 1 << 20;
const MAX_HEADS: u64 = 1024;

/// GPT-2 hyperparameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Gpt2Config {
    /// Vocabulary size (rows of `token_embd.weight`).
    pub n_vocab: usize,
    /// Trained context length (rows of `position_embd.weight`).
    pub n_ctx: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// MLP hidden width.
    pub n_ff: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// LayerNorm epsilon.
    pub eps: f32,
}

impl Gpt2Config {
    /// Reads and validates the `gpt2.*` keys of `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let arch = file.get_str("general.architecture")?;
        if arch != "gpt2" {
            return Err(ModelError::UnsupportedArchitecture {
                found: arch.to_owned(),
            });
        }
        let count = |key: &str, max: u64| -> Result<usize, ModelError> {
            let v = file.get_u64(key)?;
            if v == 0 || v > max {
                return Err(ModelError::Hyperparameter {
                    key: key.to_owned(),
                    reason: format!("{v} is outside 1..={max}"),
                });
            }
            Ok(v as usize)
        };
        let n_layer = count("gpt2.block_count", MAX_LAYERS)?;
        let n_ctx = count("gpt2.context_length", MAX_CTX)?;
        let n_embd = count("gpt2.embedding_length", MAX_EMBD)?;
        let n_ff = count("gpt2.feed_forward_length", 16 * MAX_EMBD)?;
        let n_head = count("gpt2.attention.head_count", MAX_HEADS)?;
        let eps_key = "gpt2.attention.layer_norm_epsilon";
        let eps = file.get_f64(eps_key)? as f32;
        if !(eps > 0.0 && eps < 1.0) {
            return Err(ModelError::Hyperparameter {
                key: eps_key.into(),
                reason: format!("{eps} is not in (0, 1)"),
            });
        }
        if n_embd % n_head != 0 {
            return Err(ModelError::Hyperparameter {
                key: "gpt2.attention.head_count".into(),
                reason: format!("{n_head} heads do not divide embedding length {n_embd}"),
            });
        }
        let n_vocab = match file.tensor("token_embd.weight") {
            Some(t) if t.info.dims.len() == 2 => t.info.dims[1] as usize,
            Some(t) => {
                return Err(ModelError::Shape {
                    name: "token_embd.weight".into(),
                    expected: format!("[{n_embd}, n_vocab]"),
                    found: t.info.shape_string(),
                })
            }
            None => {
                return Err(ModelError::MissingTensor {
                    name: "token_embd.weight".into(),
                })
            }
        };
        Ok(Self {
            n_vocab,
            n_ctx,
            n_embd,
            n_ff,
            n_head,
            n_layer,
            eps,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }
}
