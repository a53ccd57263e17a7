//! Hyperparameters read from GGUF metadata and checked against each other, for the two
//! architectures qgpt runs: `gpt2` and `llama` (LLaMA, SmolLM, Mistral-style dense models).

use super::ModelError;
use crate::gguf::GgufFile;
use crate::kernels::attend::MAX_HEAD_DIM;

/// Upper bounds on what a file may claim; they keep scratch and KV sizes sane on hostile input.
const MAX_LAYERS: u64 = 1024;
const MAX_EMBD: u64 = 1 << 16;
const MAX_CTX: u64 = 1 << 20;
const MAX_HEADS: u64 = 1024;

/// The model family: which tensors exist and which operations join them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// GPT-2: learned positions, LayerNorm, fused QKV with biases, GELU MLP.
    Gpt2,
    /// LLaMA: rotary positions, RMSNorm, grouped-query attention, SwiGLU MLP.
    Llama,
}

impl Arch {
    /// The `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Gpt2 => "gpt2",
            Arch::Llama => "llama",
        }
    }
}

/// Rotary position embedding settings (llama.cpp's "normal" rotation: adjacent pairs).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Rope {
    /// θ base (`rope.freq_base`).
    pub base: f32,
    /// Leading dimensions of each head that rotate (`rope.dimension_count`); even.
    pub dims: usize,
    /// Position multiplier: 1 / linear scaling factor.
    pub pos_scale: f32,
}

/// Model hyperparameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Arch,
    /// Vocabulary size (rows of `token_embd.weight`).
    pub n_vocab: usize,
    /// Trained context length.
    pub n_ctx: usize,
    /// Embedding width.
    pub n_embd: usize,
    /// MLP hidden width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// Key/value heads (as many as query heads without grouped-query attention).
    pub n_head_kv: usize,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Norm epsilon (LayerNorm for gpt2, RMSNorm for llama).
    pub eps: f32,
    /// Rotary embeddings (llama only).
    pub rope: Option<Rope>,
}

impl ModelConfig {
    /// Reads and validates the `<arch>.*` keys of `file`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self, ModelError> {
        let arch = match file.get_str("general.architecture")? {
            "gpt2" => Arch::Gpt2,
            "llama" => Arch::Llama,
            other => {
                return Err(ModelError::UnsupportedArchitecture {
                    found: other.to_owned(),
                })
            }
        };
        let a = arch.name();
        let bad = |key: &str, reason: String| ModelError::Hyperparameter {
            key: key.to_owned(),
            reason,
        };
        let count = |key: &str, max: u64| -> Result<usize, ModelError> {
            let v = file.get_u64(key)?;
            if v == 0 || v > max {
                return Err(bad(key, format!("{v} is outside 1..={max}")));
            }
            Ok(v as usize)
        };
        let count_or = |key: &str, max: u64, default: usize| -> Result<usize, ModelError> {
            match file.get(key) {
                None => Ok(default),
                Some(_) => count(key, max),
            }
        };
        let n_layer = count(&format!("{a}.block_count"), MAX_LAYERS)?;
        let n_ctx = count(&format!("{a}.context_length"), MAX_CTX)?;
        let n_embd = count(&format!("{a}.embedding_length"), MAX_EMBD)?;
        let n_ff = count(&format!("{a}.feed_forward_length"), 16 * MAX_EMBD)?;
        let head_key = format!("{a}.attention.head_count");
        let n_head = count(&head_key, MAX_HEADS)?;
        if n_embd % n_head != 0 {
            return Err(bad(
                &head_key,
                format!("{n_head} heads do not divide embedding length {n_embd}"),
            ));
        }
        let head_dim = n_embd / n_head;
        if head_dim > MAX_HEAD_DIM {
            return Err(bad(
                &head_key,
                format!(
                    "heads of {head_dim} values ({n_embd} / {n_head}): the attention kernels \
                     take at most {MAX_HEAD_DIM}"
                ),
            ));
        }
        let eps_key = match arch {
            Arch::Gpt2 => format!("{a}.attention.layer_norm_epsilon"),
            Arch::Llama => format!("{a}.attention.layer_norm_rms_epsilon"),
        };
        let eps = file.get_f64(&eps_key)? as f32;
        if !(eps > 0.0 && eps < 1.0) {
            return Err(bad(&eps_key, format!("{eps} is not in (0, 1)")));
        }
        let (n_head_kv, rope) = match arch {
            Arch::Gpt2 => (n_head, None),
            Arch::Llama => {
                let kv_key = format!("{a}.attention.head_count_kv");
                let n_head_kv = count_or(&kv_key, MAX_HEADS, n_head)?;
                if n_head % n_head_kv != 0 {
                    return Err(bad(
                        &kv_key,
                        format!("{n_head_kv} key/value heads do not divide {n_head} query heads"),
                    ));
                }
                for key in ["key_length", "value_length"] {
                    let key = format!("{a}.attention.{key}");
                    let v = count_or(&key, MAX_EMBD, head_dim)?;
                    if v != head_dim {
                        return Err(bad(
                            &key,
                            format!("{v} differs from embedding length / heads = {head_dim}"),
                        ));
                    }
                }
                if let Some(n) = file.get(&format!("{a}.expert_count")) {
                    if n.as_u64() != Some(0) {
                        return Err(bad(
                            &format!("{a}.expert_count"),
                            format!("{n}: mixture-of-experts models are not supported"),
                        ));
                    }
                }
                (n_head_kv, Some(rope(file, a, head_dim)?))
            }
        };
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
            arch,
            n_vocab,
            n_ctx,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            n_layer,
            eps,
            rope,
        })
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// Width of the keys (and of the values) of one position: `n_head_kv · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim()
    }
}

/// The `<arch>.rope.*` keys: base 10000 and every dimension unless given; linear scaling only.
fn rope(file: &GgufFile, a: &str, head_dim: usize) -> Result<Rope, ModelError> {
    let bad = |key: String, reason: String| ModelError::Hyperparameter { key, reason };
    let base_key = format!("{a}.rope.freq_base");
    let base = match file.get(&base_key) {
        None => 10_000.0,
        Some(_) => file.get_f64(&base_key)? as f32,
    };
    if !(base.is_finite() && base > 1.0) {
        return Err(bad(
            base_key,
            format!("{base} is not a finite number above 1"),
        ));
    }
    let dims_key = format!("{a}.rope.dimension_count");
    let dims = match file.get(&dims_key) {
        None => head_dim,
        Some(_) => file.get_u64(&dims_key)? as usize,
    };
    if dims == 0 || dims % 2 != 0 || dims > head_dim {
        return Err(bad(
            dims_key,
            format!("{dims} is not an even count of at most the head width {head_dim}"),
        ));
    }
    // As llama.cpp: the type defaults to linear, the factor to 1 (`scaling.factor`, or the older
    // `scale_linear`); a factor with type none is ignored.
    let kind_key = format!("{a}.rope.scaling.type");
    let kind = match file.get(&kind_key) {
        None => "linear",
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad(kind_key.clone(), format!("{v} is not a string")))?,
    };
    let mut factor_key = format!("{a}.rope.scaling.factor");
    if file.get(&factor_key).is_none() {
        factor_key = format!("{a}.rope.scale_linear");
    }
    let factor = match file.get(&factor_key) {
        None => 0.0,
        Some(_) => file.get_f64(&factor_key)? as f32,
    };
    let pos_scale = match kind {
        "none" => 1.0,
        "linear" if factor == 0.0 => 1.0,
        "linear" if factor.is_finite() && factor > 0.0 => 1.0 / factor,
        "linear" => {
            return Err(bad(
                factor_key,
                format!("{factor} is not a positive factor"),
            ))
        }
        other => {
            return Err(bad(
                kind_key,
                format!("'{other}' rope scaling is not supported (none and linear are)"),
            ))
        }
    };
    Ok(Rope {
        base,
        dims,
        pos_scale,
    })
}
